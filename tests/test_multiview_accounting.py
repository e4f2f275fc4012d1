"""Multi-view and multi-annotation readers account for every input: a category, a twin, a view."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import cv2
import numpy as np
from test_sources_annotated import TASKONOMY_DOMAIN_IDS, _co3d_orbit, _write_jgz

from sources.multitask import MultiTaskSource
from sources.multiview import Co3dSource
from sources.records import MultiViewRecord, Reject, TupleRecord


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


def _taskonomy_view(building: Path, stem: str, value: int) -> None:
    """One Taskonomy view: a PNG of each of the five domains (depth 16-bit), as its tars hold them."""
    for folder, domain in TASKONOMY_DOMAIN_IDS.items():
        (building / folder).mkdir(parents=True, exist_ok=True)
        array = np.full((8, 8), value * 100, np.uint16) if folder == "depth_zbuffer" else np.full((8, 8, 3), value, np.uint8)
        assert cv2.imwrite(str(building / folder / f"{stem}_domain_{domain}.png"), array)


def test_multitask_twins_of_one_stem_are_duplicate_key_rejects(tmp_path: Path):
    """`x_domain_rgb.png` beside `x_domain_rgb.PNG` (a Windows round trip), or a view named in NFC
    beside its Mac's NFD copy, are one stem: the second overwrote the first without a word (NFD:
    two tuples of one key, met only by the writer). The one read is the first in `twin_order`
    (NFC, then by name: `.PNG`), as a web folder reads twins; each other is a `duplicate_key` reject."""
    building = tmp_path / "allensville"
    _taskonomy_view(building, "point_0_view_0", 10)
    assert cv2.imwrite(str(building / "rgb" / "point_0_view_0_domain_rgb.PNG"), np.full((8, 8, 3), 200, np.uint8))
    cafe = unicodedata.normalize("NFC", "café_view_1")
    _taskonomy_view(building, cafe, 20)
    assert cv2.imwrite(str(building / "rgb" / f"{unicodedata.normalize('NFD', cafe)}_domain_rgb.png"),
                       np.full((8, 8, 3), 90, np.uint8))
    items = _read_all(MultiTaskSource("tk", str(tmp_path)))
    tuples = {i.key: Path(dict(i.uris)["image"]).name for i in items if isinstance(i, TupleRecord)}
    assert tuples == {"tk-allensville-point_0_view_0": "point_0_view_0_domain_rgb.PNG",
                      "tk-allensville-caf__view_1_b49e18ed": f"{cafe}_domain_rgb.png"}
    rejects = [(i.reason, i.detail, i.input) for i in items if isinstance(i, Reject)]
    assert rejects == [
        ("duplicate_key", f"{cafe}_domain_rgb.png (NFD) is the name of {cafe}_domain_rgb.png (NFC) in another Unicode "
         "form: that file is read", f"allensville/rgb/{unicodedata.normalize('NFD', cafe)}_domain_rgb.png"),
        ("duplicate_key", "point_0_view_0_domain_rgb.png (NFC) is the name of point_0_view_0_domain_rgb.PNG (NFC) "
         "with its extension in another case: that file is read", "allensville/rgb/point_0_view_0_domain_rgb.png")]
