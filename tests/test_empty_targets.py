"""Targets that would draw nothing are `empty_target` rejects, whatever the task.

A detection target with no box is the input itself, a segmentation target with no label is black:
written as pairs, they teach that the image holds no object. Datasets here are written as the tools
write them: images and label maps by Pillow, COCO JSON as CVAT and Roboflow export it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from sources.coco import CocoSource, load_index
from sources.records import PairRecord, Reject
from sources.segmentation import SegmentationSource
from transforms.annotations import colour_of
from uvd_pipeline.render import RenderSettings, decode_png
from uvd_pipeline.render_annotated import render_pair

W, H = 200, 40  # wide: center_crop keeps x 80..120 only


def settings(policy: str, size: int = 64) -> RenderSettings:
    return RenderSettings(size, policy, 0, 10**9, 1, 0, 0.0)


def _items(source) -> dict[str, PairRecord | Reject]:
    return {item.key: item for unit in source.units() for item in source.read(unit)}


def _coco_at_left(root: Path) -> dict[str, PairRecord | Reject]:
    """A COCO export (CVAT's instances JSON) of one person at x 2..18 of a 200x40 photo."""
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.full((H, W, 3), 60, np.uint8)).save(root / "images" / "a.png")
    data = {"images": [{"id": 1, "file_name": "images/a.png", "width": W, "height": H}],
            "categories": [{"id": 1, "name": "person", "supercategory": ""}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2.0, 5.0, 16.0, 30.0], "area": 480.0,
                             "iscrowd": 0, "segmentation": [[2.0, 5.0, 18.0, 5.0, 18.0, 35.0, 2.0, 35.0]],
                             "attributes": {"occluded": False}}]}
    (root / "ann.json").write_text(json.dumps(data))
    load_index.cache_clear()
    return _items(CocoSource("coco", str(root), ("ann.json",), ".", ("detection", "segmentation")))


def test_a_crop_that_cuts_off_every_coco_object_is_an_empty_target(tmp_path: Path):
    """center_crop keeps x 80..120 of the image; the only object lies at x 2..18. The detection
    target was written as the input itself (no box pixel) and the segmentation target all black,
    both as good pairs; squash keeps the object and draws it."""
    pairs = _coco_at_left(tmp_path)
    for task in ("detection", "segmentation"):
        reject = render_pair(pairs[f"coco-1-{task}"], settings("center_crop"))
        assert isinstance(reject, Reject), task
        assert (reject.stage, reject.reason) == ("annotation", "empty_target") and "crop" in reject.detail
    source, boxed = (decode_png(p) for p in render_pair(pairs["coco-1-detection"], settings("squash")).images)
    assert (boxed[:, :6] == colour_of(1)).all(axis=2).sum() > 20 and (boxed[:, 8:] == source[:, 8:]).all()
    mask = decode_png(render_pair(pairs["coco-1-segmentation"], settings("squash")).images[1])
    assert (mask[8:54, 1:5] == colour_of(1)).all() and not mask[:, 8:].any()


def _ade20k(root: Path, labels: np.ndarray) -> PairRecord:
    """ADEChallengeData2016 as released: a JPEG image and its grey label PNG."""
    ade = root / "ADEChallengeData2016"
    for folder in ("images/training", "annotations/training"):
        (ade / folder).mkdir(parents=True)
    Image.fromarray(np.full((*labels.shape, 3), 60, np.uint8)).save(ade / "images/training/ADE_train_00000001.jpg")
    Image.fromarray(labels).save(ade / "annotations/training/ADE_train_00000001.png")
    (pair,) = _items(SegmentationSource("ade", str(root), "ade20k")).values()
    assert isinstance(pair, PairRecord)
    return pair


def test_an_ade20k_map_the_crop_cuts_off_or_without_a_label_is_an_empty_target(tmp_path: Path):
    """A wall (12) at x 2..18 alone: center_crop drew an all-black target, written as a pair; so did
    a map of 0 (ADE20K's 'other') everywhere under any policy."""
    labels = np.zeros((H, W), np.uint8)
    labels[5:35, 2:18] = 12
    pair = _ade20k(tmp_path / "left", labels)
    reject = render_pair(pair, settings("center_crop"))
    assert isinstance(reject, Reject) and (reject.stage, reject.reason) == ("annotation", "empty_target")
    assert "crop" in reject.detail
    target = decode_png(render_pair(pair, settings("squash")).images[1])
    assert (target[8:54, 1:5] == colour_of(12)).all() and not target[:, 8:].any()
    blank = render_pair(_ade20k(tmp_path / "blank", np.zeros((H, W), np.uint8)), settings("squash"))
    assert isinstance(blank, Reject) and (blank.stage, blank.reason) == ("annotation", "empty_target")
    assert "no pixel" in blank.detail


def test_a_one_bit_label_png_draws_class_one_and_an_all_void_map_is_an_empty_target(tmp_path: Path):
    """A bool mask saved by Pillow is a 1-bit PNG: Pillow and mmseg read it as 0 and 1; OpenCV read
    it as 0 and 255, ADE20K's void, so its target was all black (0 of ~1,000 pixels), written as a
    pair. A map that is void (255) everywhere draws nothing either: `empty_target`."""
    mask = np.zeros((H, W), bool)
    mask[5:35, 40:160] = True
    pair = _ade20k(tmp_path / "bilevel", np.zeros((H, W), np.uint8))
    Image.fromarray(mask).save(pair.annotation["label_uri"])
    with Image.open(pair.annotation["label_uri"]) as written:
        assert written.mode == "1" and np.asarray(written).sum() == mask.sum()
    target = decode_png(render_pair(pair, settings("squash")).images[1])
    drawn = (target == colour_of(1)).all(axis=2)
    assert drawn.sum() == 48 * 38 and drawn[8:56, 13:51].all() and not target[:, :12].any()
    void = render_pair(_ade20k(tmp_path / "void", np.full((H, W), 255, np.uint8)), settings("squash"))
    assert isinstance(void, Reject) and (void.stage, void.reason) == ("annotation", "empty_target")


def _co3d_masks(root: Path, colour: tuple[int, int, int]) -> list[PairRecord | Reject]:
    """A CO3D category as downloaded, two 40x40 frames whose `masks/frameNNNNNN.png` mark a 20x20
    square in `colour` on black (an RGB PNG by Pillow), named by `frame_annotations.jgz`'s
    `mask.path`; its segmentation pairs as the source reads them."""
    import gzip

    from sources.multiview import Co3dSource

    seq = root / "apple" / "110_13051_23361"
    frames = []
    for folder in ("images", "masks"):
        (seq / folder).mkdir(parents=True)
    for number in (1, 2):
        stem = f"frame{number:06d}"
        Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(seq / "images" / f"{stem}.jpg", quality=95)
        mask = np.zeros((40, 40, 3), np.uint8)
        mask[10:30, 10:30] = colour
        Image.fromarray(mask).save(seq / "masks" / f"{stem}.png")
        frames.append({"sequence_name": "110_13051_23361", "frame_number": number,
                       "image": {"path": f"apple/110_13051_23361/images/{stem}.jpg", "size": [40, 40]},
                       "mask": {"path": f"apple/110_13051_23361/masks/{stem}.png", "mass": 400.0},
                       "viewpoint": {"R": np.eye(3).tolist(), "T": [0.0, 0.0, 3.0 + number]}})
    with gzip.open(root / "apple" / "frame_annotations.jgz", "wt") as out:
        json.dump(frames, out)
    source = Co3dSource("co3d", str(root), views=2, pair_tasks=("segmentation",))
    return [i for u in source.units() for i in source.read(u) if isinstance(i, PairRecord)]


def test_a_coloured_co3d_mask_is_read_by_its_luma_as_co3ds_loader_reads_it(tmp_path: Path):
    """CO3D's loader reads a mask as Pillow's `convert("L") > 127`. Its blue channel alone was read
    (OpenCV's BGR): a green mask's 400 pixels drew 0, written as an all-black pair. Now green (luma
    150) draws its square; red (luma 76) is under the threshold for Pillow too: `empty_target`."""
    green = _co3d_masks(tmp_path / "green", (0, 255, 0))
    assert green and all("mask_uri" in pair.annotation for pair in green)
    with Image.open(green[0].annotation["mask_uri"]) as written:
        assert (np.asarray(written.convert("L")) > 127).sum() == 400
    target = decode_png(render_pair(green[0], settings("squash", 40)).images[1])
    drawn = (target == colour_of(1)).all(axis=2)
    assert drawn.sum() == 400 and drawn[10:30, 10:30].all()
    red = render_pair(_co3d_masks(tmp_path / "red", (255, 0, 0))[0], settings("squash", 40))
    assert isinstance(red, Reject) and (red.stage, red.reason) == ("annotation", "empty_target")


def test_a_taskonomy_view_with_no_object_keeps_its_tuple(tmp_path: Path):
    """A view of a bare wall: Taskonomy's segment_semantic is 0 everywhere, its other four domains
    whole. The empty-target rule of pairs rejected the whole tuple (its depth, normals and edges
    lost with it); a tuple's label map draws black, as an annotated clip's frame does."""
    from sources.multitask import MultiTaskSource
    from uvd_pipeline.render_annotated import render_tuple

    stem, size = "point_0_view_0", 32
    yy, xx = np.mgrid[0:size, 0:size]
    domains = {"rgb": (np.dstack([xx * 8, yy * 8, xx * 4]), np.uint8),
               "normal": (np.dstack([np.full((size, size), v) for v in (128, 255, 128)]), np.uint8),
               "edge_occlusion": (np.where(xx == 16, 3000, 10), np.uint16),
               "depth_zbuffer": (np.round(512 * (1 + yy / size)), np.uint16),
               "segmentsemantic": (np.zeros((size, size)), np.uint8)}
    for domain, (array, dtype) in domains.items():
        folder = tmp_path / "allensville" / ("segment_semantic" if domain == "segmentsemantic" else domain)
        folder.mkdir(parents=True)
        Image.fromarray(array.astype(dtype)).save(folder / f"{stem}_domain_{domain}.png")
    (record,) = list(MultiTaskSource("tk", str(tmp_path)).read(str(tmp_path / "allensville")))
    unit = render_tuple(record, settings("squash", size))
    assert not isinstance(unit, Reject), unit
    images = [decode_png(png) for png in unit.images]
    assert [m["task"] for m in unit.members][-1] == "segmentation" and not images[-1].any()
    assert images[3].astype(int).sum(axis=2).min() > 0  # the depth drawn everywhere
