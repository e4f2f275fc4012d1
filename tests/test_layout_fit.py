"""`check` refuses a source whose `type` does not fit what its path holds, naming the type that does.

Every reader takes what it finds, so a wrong type passed `check`: a `type: video` on an img2dataset
download read its `00000.tar` as video2dataset shards, `type: laion` on a COCO tree or a folder of
videos built its images or rejected every file, `type: objaverse` on CO3D took each category for an
object. Inputs are made as the world makes them (ImageMagick, ffmpeg, GNU tar, numpy, gzip); the
glance that judges them reads a bounded number of names (`sources.layout_fit`)."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import fsspec
import numpy as np
import pytest
import yaml

from sources import layout_fit
from uvd_pipeline.cli import main


def _jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["convert", "-size", "16x16", "plasma:red-blue", str(path)], check=True)


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layouts")
    photos = root / "photos"
    _jpeg(photos / "a.jpg")
    _jpeg(photos / "b.jpg")

    videos = root / "videos"
    videos.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=32x32:rate=5", "-frames:v", "3",
                    "-pix_fmt", "yuv420p", str(videos / "clip.mp4")], check=True)

    mixed = root / "mixed"  # a phone's camera folder: photos beside clips
    mixed.mkdir()
    (mixed / "a.jpg").write_bytes((photos / "a.jpg").read_bytes())
    (mixed / "clip.mp4").write_bytes((videos / "clip.mp4").read_bytes())

    web = root / "web"  # one img2dataset webdataset shard: key.jpg/.txt/.json, its stats beside it
    members = web / "members"
    members.mkdir(parents=True)
    (members / "000000000.jpg").write_bytes((photos / "a.jpg").read_bytes())
    (members / "000000000.txt").write_text("a caption")
    (members / "000000000.json").write_text(json.dumps({"key": "000000000", "status": "success"}))
    subprocess.run(["tar", "-cf", str(web / "00000.tar"), "-C", str(members), "000000000.jpg", "000000000.txt",
                    "000000000.json"], check=True)
    (web / "00000_stats.json").write_text(json.dumps({"count": 1, "successes": 1}))
    subprocess.run(["rm", "-r", str(members)], check=True)

    failed = root / "failed_first"  # video2dataset: a failed download's sample is its .txt and .json alone
    members = failed / "members"
    members.mkdir(parents=True)
    names = []
    for n in range(5):
        (members / f"{n:09d}.txt").write_text("a caption")
        (members / f"{n:09d}.json").write_text(json.dumps({"status": "failed_to_download"}))
        names += [f"{n:09d}.txt", f"{n:09d}.json"]
    (members / "000000005.mp4").write_bytes((videos / "clip.mp4").read_bytes())
    subprocess.run(["tar", "-cf", str(failed / "00000.tar"), "-C", str(members), *names, "000000005.mp4"], check=True)
    (failed / "00000_stats.json").write_text(json.dumps({"count": 6, "successes": 1}))
    subprocess.run(["rm", "-r", str(members)], check=True)

    coco = root / "coco"
    _jpeg(coco / "images" / "val2017" / "000000000001.jpg")
    (coco / "annotations").mkdir()
    (coco / "annotations" / "instances_val2017.json").write_text(json.dumps(
        {"images": [{"id": 1, "file_name": "000000000001.jpg", "width": 16, "height": 16}],
         "annotations": [], "categories": [{"id": 1, "name": "person"}]}))

    objaverse = root / "objaverse"
    for view in range(2):
        _jpeg(objaverse / "0a1b" / f"{view:03d}.png")
        np.save(objaverse / "0a1b" / f"{view:03d}.npy", np.eye(3, 4, dtype=np.float32))

    co3d = root / "co3d"
    _jpeg(co3d / "ball" / "1_2_3" / "images" / "frame000001.jpg")
    with gzip.open(co3d / "ball" / "frame_annotations.jgz", "wt") as handle:
        json.dump([], handle)
    return {p.name: p for p in (photos, videos, mixed, web, failed, coco, objaverse, co3d)}


def _check(tmp_path: Path, source: dict) -> int:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"version": 1, "output": str(tmp_path / "out"), "tokenizer": {"enabled": False},
                                      "sources": [{"name": "s", **source}]}))
    return main(["check", str(config)])


@pytest.mark.parametrize("source_type, tree, fits, mark", [
    ("video", "photos", "laion", "a.jpg"),
    ("video", "web", "laion", "00000.tar holding 000000000.jpg beside 00000_stats.json"),
    ("objaverse", "web", "laion", "00000.tar"),
    ("laion", "videos", "video", "clip.mp4"),
    ("laion", "coco", "coco", "annotations/instances_val2017.json"),
    ("pseudo_labeled", "co3d", "co3d", "ball/frame_annotations.jgz"),
    ("laion", "objaverse", "objaverse", "0a1b/000.npy"),
    ("co3d", "objaverse", "objaverse", "0a1b/000.npy"),
    ("objaverse", "co3d", "co3d", "ball/frame_annotations.jgz"),
    ("objaverse", "coco", "coco", "annotations/instances_val2017.json"),
])
def test_a_type_that_does_not_fit_its_path_fails_check_naming_the_one_that_does(
        trees, tmp_path, capsys, source_type, tree, fits, mark):
    extra = {"task": "edges", "labeler": {"name": "canny"}} if source_type == "pseudo_labeled" else {}
    assert _check(tmp_path, {"type": source_type, "path": str(trees[tree]), **extra}) == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert error.startswith(f"error: sources[0].type (s): type: {source_type}, but {trees[tree]} holds {mark}")
    assert error.count("did you mean type: ") == 1 and f"did you mean type: {fits}?" in error, error


@pytest.mark.parametrize("source_type, tree, extra", [
    ("laion", "mixed", {}), ("video", "mixed", {}), ("laion", "photos", {}), ("video", "videos", {}),
    ("laion", "web", {}), ("objaverse", "objaverse", {"views": 2}), ("video", "failed_first", {}),
])
def test_a_type_that_fits_or_a_mixed_folder_passes(trees, tmp_path, capsys, source_type, tree, extra):
    assert _check(tmp_path, {"type": source_type, "path": str(trees[tree]), **extra}) == 0, capsys.readouterr().err
    assert "config OK" in capsys.readouterr().out


def test_the_glance_is_bounded_on_a_crowded_folder(tmp_path, monkeypatch):
    """A folder of many files is judged on its first `TOP_ENTRIES` names, never walked whole (a
    1M-file folder: 2-3 ms where a full listing took 280 ms; here the bound is lowered to 40)."""
    monkeypatch.setattr(layout_fit, "TOP_ENTRIES", 40)
    crowded = tmp_path / "crowded"
    crowded.mkdir()
    for n in range(60):
        (crowded / f"{n:06d}.mp4").touch()
    glance = layout_fit.glance(str(crowded))
    assert len(glance.top) == 40
    assert "did you mean type: video?" in layout_fit.misfit("laion", str(crowded))


def test_a_remote_tree_is_judged_too():
    """An fsspec URL (here the in-memory store) is listed, a level at a time, as a local folder is."""
    fs = fsspec.filesystem("memory")
    fs.pipe({"/fit48/coco/annotations/person_keypoints_train2017.json": b"{}",
             "/fit48/coco/train2017/000000000009.jpg": b"\xff\xd8"})
    try:
        problem = layout_fit.misfit("laion", "memory://fit48/coco")
        assert problem and "annotations/person_keypoints_train2017.json" in problem
        assert "did you mean type: coco?" in problem
        assert layout_fit.misfit("coco", "memory://fit48/coco") is None
    finally:
        fs.rm("/fit48", recursive=True)
