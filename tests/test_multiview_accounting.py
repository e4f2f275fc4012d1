"""Multi-view and multi-annotation readers account for every input: a category, a twin, a view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from test_sources_annotated import _co3d_orbit, _write_jgz

from sources.multiview import Co3dSource
from sources.records import MultiViewRecord, Reject


def _co3d_category(root: Path, category: str, sequence: str, annotations: str | None = "frame_annotations.jgz") -> None:
    """A CO3D v2 category folder with one sequence of 6 frames, its frame annotations saved
    under `annotations` (None: not saved, as a zip extracted in part leaves it)."""
    frames = _co3d_orbit(root, np.arange(6) * 60.0, sequence)  # written under toy/
    (root / "toy").rename(root / category)
    for frame in frames:
        frame["image"]["path"] = frame["image"]["path"].replace("toy/", f"{category}/", 1)
    _write_jgz(root / category / "sequence_annotations.jgz", [{"sequence_name": sequence, "category": category}])
    if annotations:
        _write_jgz(root / category / annotations, frames)


def _read_all(source) -> list:
    return [item for unit in source.units() for item in source.read(unit)]


def test_co3d_category_without_frame_annotations_is_a_reject(tmp_path: Path):
    """A category whose frame_annotations.jgz never arrived (a zip extracted in part) vanished
    without a word, and one saved as `frame_annotations.JGZ` with it. The first is now one
    `missing_annotation` reject naming the file; the second is read. A folder that is no
    category (no annotations, no sequence folder) is no input and no reject."""
    _co3d_category(tmp_path, "apple", "s1")
    _co3d_category(tmp_path, "banana", "s2", annotations=None)
    _co3d_category(tmp_path, "cherry", "s3", annotations="frame_annotations.JGZ")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("downloaded 2026-12-01")
    items = _read_all(Co3dSource("co3d", str(tmp_path), views=4))
    assert sorted(i.key for i in items if isinstance(i, MultiViewRecord)) == ["co3d-apple-s1", "co3d-cherry-s3"]
    assert [(i.key, i.reason, i.detail, i.input) for i in items if isinstance(i, Reject)] == [
        ("co3d-banana", "missing_annotation",
         "banana/ has no frame_annotations.jgz: its sequences cannot be placed, none is read", "banana/")]
