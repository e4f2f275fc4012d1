"""The class palette keeps the ids datasets use far apart, read back from rendered targets."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.color import rgb2lab

from sources.records import PairRecord
from sources.segmentation import SegmentationSource
from transforms.annotations import PALETTE_SEED, PALETTE_SIZE, palette
from uvd_pipeline.render import RenderSettings, decode_png
from uvd_pipeline.render_annotated import render_pair


def _closest(colours: np.ndarray, lab: bool = False) -> float:
    """The smallest distance between two of `colours` (RGB 0..255), in RGB or in CIELAB (skimage's)."""
    points = rgb2lab(colours[None].astype(np.float64) / 255)[0] if lab else colours.astype(np.float64)
    distances = np.sqrt(((points[:, None] - points[None]) ** 2).sum(axis=-1))
    return float(distances[np.triu_indices(len(points), 1)].min())


def test_the_ids_datasets_use_have_colours_far_apart():
    """Seeded random colours gave ADE20K's 150 classes 32 pairs closer than 20 in RGB (57 and 149:
    7.9 apart, 2.8 Delta E among 1..150) and COCO's 90 11 (46 and 65: 14.1), near twins the
    tokenizer merges. Each first n ids (VOC's 20, COCO's 90, ADE20K's 150, 255) are now spread apart,
    black (0, background) stays black, the ids past 255 keep their seeded colours, and the palette
    is the same on every machine (its first 256 colours' digest)."""
    colours = palette()
    assert tuple(colours[0]) == (0, 0, 0)
    for n, rgb, delta_e in ((20, 74, 42.5), (90, 30, 21.5), (150, 24, 17.5), (255, 17.5, 14)):
        with_black = colours[: n + 1]
        assert _closest(with_black) >= rgb and _closest(with_black, lab=True) >= delta_e, n
    seeded = np.random.default_rng(PALETTE_SEED).integers(40, 256, size=(PALETTE_SIZE, 3), dtype=np.uint8)
    assert np.array_equal(colours[256:], seeded[256:])
    assert hashlib.sha256(colours[:256].tobytes()).hexdigest() == \
        "cb0c7a0c25227995e3388aaec4b867753e54287678aa7f085de6aab6888dc3c4"


def test_ade20k_classes_once_near_twins_render_far_apart(tmp_path: Path):
    """An ADE20K map of classes 57 and 149 side by side, as released (grey PNG by Pillow): their
    rendered colours were 7.9 apart in RGB; now over 20, and over 17 Delta E."""
    ade = tmp_path / "ADEChallengeData2016"
    for folder in ("images/training", "annotations/training"):
        (ade / folder).mkdir(parents=True)
    labels = np.full((32, 64), 57, np.uint8)
    labels[:, 32:] = 149
    Image.fromarray(np.full((32, 64, 3), 90, np.uint8)).save(ade / "images/training/ADE_train_00000001.jpg")
    Image.fromarray(labels).save(ade / "annotations/training/ADE_train_00000001.png")
    source = SegmentationSource("ade", str(tmp_path), "ade20k")
    (pair,) = [i for u in source.units() for i in source.read(u)]
    assert isinstance(pair, PairRecord)
    target = decode_png(render_pair(pair, RenderSettings(64, "squash", 0, 10**9, 1, 0, 0.0)).images[1])
    left, right = target[:, :32].reshape(-1, 3), target[:, 32:].reshape(-1, 3)
    assert (left == left[0]).all() and (right == right[0]).all()
    two = np.stack([left[0], right[0]])
    assert _closest(two) > 20 and _closest(two, lab=True) > 17
