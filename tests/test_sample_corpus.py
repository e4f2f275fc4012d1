"""The embedded sample corpus: real layouts, enough variety, the same bytes every time."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from uvd_pipeline.sample import MANIFEST, write_sample_corpus


def test_layouts_and_sizes(sample_corpus: Path):
    laion = sample_corpus / "laion"
    assert sorted(p.name for p in laion.iterdir()) == [
        f"{i:05d}{suffix}" for i in range(3) for suffix in (".parquet", ".tar", "_stats.json")]
    sizes = []
    for tar_path in sorted(laion.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            names = tar.getnames()
            assert {n.split(".", 1)[1] for n in names} >= {"jpg", "txt", "json", "png"}
            for member in tar.getmembers():
                if member.name.endswith((".jpg", ".png", ".webp")) and member.size > 1000:
                    try:
                        with Image.open(tar.extractfile(member)) as image:
                            sizes.append(image.size)
                    except Exception:
                        pass
    assert len(sizes) >= 200
    assert sum(max(s) >= 2000 for s in sizes) >= 5
    aspects = [w / h for w, h in sizes]
    assert min(aspects) < 0.5 and max(aspects) > 2.0
    train = sample_corpus / "imagenet" / "train"
    classes = sorted(p.name for p in train.iterdir())
    assert len(classes) >= 8 and all(len(list((train / c).glob(f"{c}_*.JPEG"))) >= 20 for c in classes)
    assert (sample_corpus / "imagenet" / "LOC_val_solution.csv").read_text().startswith("ImageId,PredictionString")
    videos = {p.suffix for p in (sample_corpus / "video").iterdir()}
    assert videos == {".mp4", ".mkv", ".webm", ".avi"}


def test_reused_when_complete(sample_corpus: Path):
    before = (sample_corpus / MANIFEST).stat().st_mtime_ns
    write_sample_corpus(str(sample_corpus))
    assert (sample_corpus / MANIFEST).stat().st_mtime_ns == before


@pytest.mark.slow
def test_same_bytes_on_every_run(sample_corpus: Path, tmp_path: Path):
    again = Path(write_sample_corpus(str(tmp_path / "again")))
    first = json.loads((sample_corpus / MANIFEST).read_text())["files"]
    second = json.loads((again / MANIFEST).read_text())["files"]
    assert first == second and len(first) > 300
