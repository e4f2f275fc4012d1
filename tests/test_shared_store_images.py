"""The store's copy of an image goes only when no shard of the run can still read it: an image two
sentences share (`remainder: wrap` reuses a class's first images) and a shard killed between its
commit and its placement record (`uvd_pipeline.unit_relocation`)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from interrupt_harness import class_folder
from uvd_pipeline.rendered_shards import iter_shard
from uvd_pipeline.unit_relocation import BackgroundRelease

CLASSES = {"n01440764": 9, "n01443537": 7, "n01484850": 6}  # 9 = 2 x 4 + 1: wrap reuses 3 images


def _config(tmp_path: Path, corpus: Path):
    from uvd_pipeline.config import load_config

    config = {
        "version": 1, "output": str(tmp_path / "out"), "seed": 0,
        "image": {"size": 32, "resize": "center_crop"},
        "split": {"val_fraction": 0.0},
        "sources": [{"name": "cls", "type": "imagenet", "path": str(corpus), "splits": ["train"],
                     "num_shards": 2, "sentence_length": 4, "remainder": "wrap"}],
        "tokenizer": {"enabled": False},
        "beam": {"runner": "DirectRunner", "direct_num_workers": 1, "direct_running_mode": "in_memory"},
    }
    path = tmp_path / "build.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return load_config(str(path))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "classes"
    class_folder(root, CLASSES)
    return root


def _sentence_images(out: Path) -> dict[str, list[bytes]]:
    """Each shard's images, one entry per sentence that holds one."""
    return {tar.name: [png for s in iter_shard(str(tar)) for png in s.images]
            for tar in sorted((out / "rendered").rglob("*.tar"))}


def _left_in_store(out: Path) -> int:
    """Bytes the units' image files still hold on disk (punched ranges hold none)."""
    return sum(p.stat().st_blocks * 512 for p in (out / "_units").rglob("*.png.bin"))


def _release_at_once(monkeypatch) -> None:
    """The release a shard's commit hands over is done before the writer goes on to its next shard
    (the order the background thread took now and then: 2 of 6 fresh builds failed)."""
    submit = BackgroundRelease.submit

    def submit_and_wait(self, placed):
        handed = submit(self, placed)
        self.wait()
        return handed

    monkeypatch.setattr(BackgroundRelease, "submit", submit_and_wait)


def test_an_image_two_shards_hold_is_read_by_the_second_after_the_first_commits(tmp_path, corpus, monkeypatch):
    from uvd_pipeline.build import run_build

    _release_at_once(monkeypatch)
    config = _config(tmp_path, corpus)
    summary = run_build(config).summary  # raised StoredImageError ("does not match its sha256")
    out = Path(config.output)
    per_shard = _sentence_images(out)
    assert len(per_shard) == 2
    both = set.intersection(*(set(images) for images in per_shard.values()))
    assert both, "the wrapped sentences share images across the two shards (the case under test)"
    held = Counter(png for images in per_shard.values() for png in images)
    # the writers released exactly the images one sentence holds; the rest went at the end
    released = summary["run"]["counters"]["cls.store_bytes_released"]
    assert released == sum(len(png) for png, n in held.items() if n == 1) < sum(map(len, held))
    assert sum(s["sentences"] for s in summary["shards"]) == 3 + 2 + 2
    assert sum(s["images"] for s in summary["shards"]) == (3 + 2 + 2) * 4
    assert _left_in_store(out) == 0, "every image is in a shard: the store keeps no copy at the end"


def test_a_kill_between_commit_and_placement_record_leaves_no_second_copy(tmp_path, corpus, monkeypatch):
    """Killed right after the first shard's stats file is written: the rerun keeps that shard, and
    its images' store copies still go (the placement record was lost with the kill, and with it
    every later release: the units' image files stayed, each image on disk twice)."""
    from uvd_pipeline import rendered_shards
    from uvd_pipeline.build import run_build

    config = _config(tmp_path, corpus)
    out = Path(config.output)
    real_write = rendered_shards.write_bytes

    class Killed(Exception):
        pass

    def write_then_die(uri, data, *args, **kwargs):
        real_write(uri, data, *args, **kwargs)
        if str(uri).endswith(rendered_shards.STATS_SUFFIX):
            raise Killed(f"killed after committing {uri}")

    with monkeypatch.context() as patch:
        patch.setattr(rendered_shards, "write_bytes", write_then_die)
        with pytest.raises(Exception, match="killed after committing"):
            run_build(config)
    committed = sorted(p.name[: -len(".stats.json")] for p in out.rglob("*.stats.json"))
    assert len(committed) == 1
    run_build(config)
    placed = sorted(p.name[: -len(".placed.json")] for p in (out / "_inputs").rglob("*.placed.json"))
    stems = sorted(p.name[: -len(".stats.json")] for p in out.rglob("*.stats.json"))
    assert placed == stems and len(stems) == 2, "every committed shard has its placement record"
    records = [json.loads(p.read_text()) for p in (out / "_inputs").rglob("*.placed.json")]
    assert sum(len(r["images"]) for r in records) == (3 + 2 + 2) * 4
    assert _left_in_store(out) == 0, "no image is kept twice"
