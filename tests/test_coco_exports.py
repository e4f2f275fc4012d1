"""COCO files as the world writes them, rendered and checked against pycocotools.

Each dataset here is a folder written the way a tool writes one: PNG/JPEG images by Pillow, the
JSON by `json`, masks encoded by pycocotools itself (compressed RLE strings), or as COCO's own
crowd annotations and CVAT's (Datumaro's) exporter write them (uncompressed `counts` lists).
Masks are compared pixel for pixel with `COCO.annToMask`, put through the same resize plan as the
image (nearest neighbour) under every resize policy, on a non-square image so that a swapped
height and width would show. What cannot be rendered is a counted reject naming why, never an
exception and never a pair quietly missing.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sources.annotation_files import AnnotationFileError
from sources.coco import CocoSource, load_index
from sources.paths import OutsideRoot, check_inside, join_inside, resolving
from sources.records import PairRecord, Reject
from transforms.annotations import COCO17, colour_of, colourize_labels, joint_colours, limb_colours
from transforms.resize import plan_resize
from uvd_pipeline.render import RenderSettings, decode_png
from uvd_pipeline.render_annotated import render_pair

POLICIES = ("squash", "center_crop", "pad")
W, H = 80, 60  # not square: a height/width swap shows
TASKS = ("detection", "segmentation", "pose")
COCO_SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9], [8, 10],
                 [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]


def settings(policy: str = "squash", size: int = 64) -> RenderSettings:
    return RenderSettings(size, policy, 0, 10**9, 1, 0, 0.0)


def write_dataset(root: Path, data: dict, sizes: dict | None = None, skip: tuple = ()) -> Path:
    """The images each `images` entry names (noise, W x H unless `sizes` says otherwise) and
    `ann.json`; entries whose file is in `skip` get no file."""
    root.mkdir(parents=True, exist_ok=True)
    for image in data.get("images", []):
        name = image.get("file_name")
        if not isinstance(name, str) or name in skip or name.startswith("/"):
            continue
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        w, h = (sizes or {}).get(name, (W, H))
        rng = np.random.default_rng(len(name))
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    (root / "ann.json").write_text(json.dumps(data))
    return root


def read(root: Path, tasks=TASKS, files=("ann.json",)) -> dict[str, PairRecord | Reject]:
    load_index.cache_clear()
    source = CocoSource("coco", str(root), files, ".", tasks)
    items = [item for unit in source.units() for item in source.read(unit)]
    keys = [item.key for item in items]
    assert len(keys) == len(set(keys))
    return {item.key: item for item in items}


def rendered(item, policy: str = "squash", size: int = 64):
    assert isinstance(item, PairRecord), item
    result = render_pair(item, settings(policy, size))
    assert not isinstance(result, Reject), result
    return decode_png(result.images[0]), decode_png(result.images[1])


def outcome(item, policy: str = "squash") -> tuple[str, str] | str:
    """(stage, reason) of a reject, at reading or rendering; 'rendered' otherwise."""
    if isinstance(item, PairRecord):
        item = render_pair(item, settings(policy))
    return (item.stage, item.reason) if isinstance(item, Reject) else "rendered"


def reference_labels(root: Path, image_id: int, h: int, w: int, shift: int = 0) -> np.ndarray:
    """pycocotools' own masks (`COCO.annToMask`), painted larger first (by mask pixels) so that
    smaller objects stay on top, as class ids (`shift` added, as for 0-based category ids)."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(root / "ann.json"))
    masks = []
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
        if ann.get("segmentation"):
            mask = coco.annToMask(ann).astype(bool)
            assert mask.shape == (h, w)
            masks.append((mask, ann["category_id"] + shift))
    labels = np.zeros((h, w), np.int32)
    for mask, category in sorted(masks, key=lambda m: -int(m[0].sum())):
        labels[mask] = category
    return labels


def assert_matches_pycocotools(item, root: Path, image_id: int, h: int = H, w: int = W, shift: int = 0) -> None:
    labels = reference_labels(root, image_id, h, w, shift)
    assert labels.any()
    for policy in POLICIES:
        _, target = rendered(item, policy)
        expected = colourize_labels(plan_resize(h, w, 64, policy).apply_image(labels, nearest=True))
        assert np.array_equal(target, expected), (policy, int(np.any(target != expected, axis=2).sum()))


def fortran_rle(mask: np.ndarray, compressed: bool) -> dict:
    """A mask as COCO writes it: pycocotools' compressed string, or the uncompressed column-major
    run lengths (starting with a run of zeros) of COCO's crowd annotations and CVAT's exports."""
    from pycocotools import mask as mask_utils

    if compressed:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}
    flat = mask.flatten(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    runs = np.diff(np.concatenate([[0], edges]))
    return {"size": list(mask.shape), "counts": [int(r) for r in runs]}


def obj(ann_id: int, image_id: int, category_id: int = 1, **fields) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": 0, "area": 100.0,
            "bbox": [10.0, 10.0, 20.0, 20.0], "segmentation": [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0]], **fields}


def images(*ids: int, **fields) -> list[dict]:
    return [{"id": i, "file_name": f"{i}.png", "width": W, "height": H, **fields} for i in ids]


def categories(*ids: int) -> list[dict]:
    return [{"id": i, "name": f"c{i}", "supercategory": ""} for i in ids]


# -- masks against pycocotools -------------------------------------------------------------------
@pytest.mark.parametrize("compressed", [True, False], ids=["compressed", "uncompressed"])
@pytest.mark.parametrize("iscrowd", [1, 0])
def test_rle_masks_match_pycocotools(tmp_path: Path, compressed: bool, iscrowd: int):
    """COCO's crowd RLE (`counts` a list, iscrowd 1), pycocotools' compressed strings, and CVAT's
    masks (RLE with iscrowd 0 or 1): pixel for pixel what `annToMask` gives, under every policy."""
    mask = np.zeros((H, W), bool)
    mask[10:40, 20:70] = True
    mask[45:58, 3:9] = True
    mask[0, 79] = mask[59, 0] = True  # the corners: a transposed reading would lose them
    rle = fortran_rle(mask, compressed)
    assert rle["size"] == [H, W]
    root = write_dataset(tmp_path, {"images": images(1), "categories": categories(3),
                                    "annotations": [obj(1, 1, 3, segmentation=rle, iscrowd=iscrowd)]})
    pairs = read(root, ("segmentation",))
    assert_matches_pycocotools(pairs["coco-1-segmentation"], root, 1)


def test_rle_size_written_as_floats_is_read(tmp_path: Path):
    """`size: [60.0, 80.0]` (a JSON writer that keeps every number a float) is the same size."""
    mask = np.zeros((H, W), bool)
    mask[5:25, 30:60] = True
    rle = fortran_rle(mask, True)
    rle["size"] = [float(v) for v in rle["size"]]
    root = write_dataset(tmp_path, {"images": images(1), "categories": categories(1),
                                    "annotations": [obj(1, 1, segmentation=rle, iscrowd=1)]})
    _, target = rendered(read(root, ("segmentation",))["coco-1-segmentation"])
    expected = plan_resize(H, W, 64, "squash").apply_image(mask.astype(np.uint8), nearest=True).astype(bool)
    assert np.array_equal(np.all(target == colour_of(1), axis=2), expected)


def test_polygons_match_pycocotools(tmp_path: Path):
    """Several polygons per object, float coordinates, vertices outside the image on every side."""
    polygons = [[-10.5, -5.25, 40.7, 3.3, 30.1, 50.9], [50.2, 20.2, 95.0, 25.5, 70.3, 70.7, 55.5, 40.0],
                [2.5, 40.5, 12.25, 44.0, 6.0, 58.75]]
    root = write_dataset(tmp_path, {"images": images(1), "categories": categories(5),
                                    "annotations": [obj(1, 1, 5, segmentation=polygons)]})
    assert_matches_pycocotools(read(root, ("segmentation",))["coco-1-segmentation"], root, 1)


def test_degenerate_polygons_beside_good_ones_draw_nothing(tmp_path: Path):
    """A polygon of 1 or 2 points encloses nothing: the object is its other polygons (pycocotools
    itself takes a first polygon of 4 numbers for a box, and raises on the mix)."""
    from pycocotools import mask as mask_utils

    good = [30.5, 5.5, 60.5, 5.5, 45.5, 40.5]
    root = write_dataset(tmp_path, {"images": images(1), "categories": categories(6),
                                    "annotations": [obj(1, 1, 6, segmentation=[[10, 10, 20, 20], good, [1, 1]])]})
    _, target = rendered(read(root, ("segmentation",))["coco-1-segmentation"])
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([good], H, W))).astype(bool)
    plan = plan_resize(H, W, 64, "squash")
    assert np.array_equal(np.all(target == colour_of(6), axis=2), plan.apply_image(expected.astype(np.uint8),
                                                                                   nearest=True).astype(bool))


def test_malformed_polygons_reject_their_pair(tmp_path: Path):
    """Each says what is wrong with it: an odd count of coordinates or a flat list of numbers (one
    polygon not wrapped in a list, on which pycocotools' annToMask raises) was called 'not lists of
    x, y numbers', which sent a user looking for a text among the numbers."""
    annotations = [obj(1, 1, segmentation=[[30.5, 5.5, 60.5, 5.5, 45.5]]),  # odd count
                   obj(2, 2, segmentation=[[30.5, 5.5, 60.5, 5.5]]),  # no polygon of 3 points
                   obj(3, 3, segmentation=[[100.0, 100.0, 120.0, 100.0, 120.0, 120.0]]),  # wholly outside
                   obj(4, 4, segmentation=[30.5, 5.5, 60.5, 5.5, 45.5, 40.5]),  # flat
                   obj(5, 5, segmentation=[[30.5, 5.5, 60.5, 5.5, 45.5, "40.5"]])]  # a text
    root = write_dataset(tmp_path, {"images": images(1, 2, 3, 4, 5), "categories": categories(1),
                                    "annotations": annotations})
    pairs = read(root, ("segmentation",))
    assert outcome(pairs["coco-3-segmentation"]) == ("annotation", "empty_target")
    assert (pairs["coco-2-segmentation"].reason, pairs["coco-2-segmentation"].detail) == (
        "no_segmentation_annotations", "image 2: its 1 segment has no polygon of 3 or more points")
    for image_id, problem in ((1, "a segmentation polygon holds an odd count of coordinates"),
                              (4, "segmentation is one flat list of numbers, not a list of polygons "
                                  "([[x1, y1, x2, y2, ...]])"),
                              (5, "segmentation polygons are not lists of x, y numbers")):
        reject = pairs[f"coco-{image_id}-segmentation"]
        assert (reject.stage, reject.reason, reject.detail) == (
            "read", "bad_annotation", f"ann.json annotations[{image_id - 1}] (id {image_id}): {problem}")


def test_a_point_or_line_shape_drops_its_object_not_the_image(tmp_path: Path):
    """labelme2coco writes a point, line or linestrip shape as a polygon of 1-2 points (2-4
    coordinates), which draws nothing: it rejected the segmentation pair of the whole image. The
    object is dropped, as detectron2 drops it, and counted in the pair's lineage
    (`segments_without_polygon`); the others draw as pycocotools paints them (its annToMask fails
    on the point: a 4-number list is a box to its frPyObjects)."""
    annotations = [obj(1, 1), obj(2, 1, 2, segmentation=[[50.5, 40.5, 70.5, 50.5]]),  # a line
                   obj(3, 1, 2, segmentation=[[60.0, 10.0]])]  # a point
    root = write_dataset(tmp_path / "shapes", {"images": images(1), "categories": categories(1, 2),
                                               "annotations": annotations})
    pair = read(root, ("segmentation", "detection"))["coco-1-segmentation"]
    assert isinstance(pair, PairRecord), pair
    assert pair.lineage == {"image_id": 1, "file": "1.png", "segments_without_polygon": 2}
    assert [s["category_id"] for s in pair.annotation["segments"]] == [1]
    bare = write_dataset(tmp_path / "bare", {"images": images(1), "categories": categories(1, 2),
                                             "annotations": annotations[:1]})
    assert_matches_pycocotools(pair, bare, 1)


def test_overlapping_objects_paint_larger_masks_first_whatever_area_says(tmp_path: Path):
    """Exporters write `area: 0` or leave it out: a whole-image object declared with area 0 used to
    be painted last and hid the small object on it. The order is the masks' own pixel counts."""
    whole = [[0.0, 0.0, 80.0, 0.0, 80.0, 60.0, 0.0, 60.0]]
    small = [[10.0, 10.0, 20.0, 10.0, 20.0, 20.0, 10.0, 20.0]]
    annotations = [obj(1, 1, 7, segmentation=whole, area=0), obj(2, 1, 8, segmentation=small, area=100.0),
                   obj(3, 2, 7, segmentation=small), obj(4, 2, 8, segmentation=whole)]
    del annotations[2]["area"], annotations[3]["area"]
    root = write_dataset(tmp_path, {"images": images(1, 2), "categories": categories(7, 8), "annotations": annotations})
    pairs = read(root, ("segmentation",))
    for image_id, small_id in ((1, 8), (2, 7)):
        _, target = rendered(pairs[f"coco-{image_id}-segmentation"])
        assert np.all(target == colour_of(small_id), axis=2).sum() > 50
        assert_matches_pycocotools(pairs[f"coco-{image_id}-segmentation"], root, image_id)


# -- boxes -----------------------------------------------------------------------------------------
def drawn(item, policy: str = "squash") -> np.ndarray:
    source, target = rendered(item, policy)
    return np.any(source != target, axis=2)


def test_boxes_are_clipped_to_the_image(tmp_path: Path):
    """A box wholly outside the image drew a stray pixel in the canvas corner; one reaching past
    the image drew its edge into the padding. Boxes are clipped to the image before drawing."""
    annotations = [obj(1, 1, bbox=[10.0, 10.0, 20.0, 20.0]), obj(2, 1, 2, bbox=[200.0, 100.0, 20.0, 20.0]),
                   obj(3, 2, bbox=[60.0, 40.0, 50.0, 50.0]), obj(4, 3, bbox=[200.0, 100.0, 20.0, 20.0]),
                   obj(5, 4, bbox=[2.0, 2.0, 5.0, 5.0])]
    root = write_dataset(tmp_path, {"images": images(1, 2, 3, 4), "categories": categories(1, 2),
                                    "annotations": annotations})
    pairs = read(root, ("detection",))
    for policy in POLICIES:
        only_inside = drawn(pairs["coco-1-detection"], policy)
        ys, xs = np.nonzero(only_inside)
        assert xs.max() < 40 and ys.max() < 40, policy  # nothing from the box at (200, 100)
    # pad: the 80x60 image fills rows 8..55 of the 64 canvas; the box ends at the image's corner
    ys, xs = np.nonzero(drawn(pairs["coco-2-detection"], "pad"))
    assert (ys.min(), ys.max(), xs.max()) == (8 + 32, 55, 63)
    ys, xs = np.nonzero(drawn(pairs["coco-2-detection"], "squash"))
    assert (ys.max(), xs.max()) == (63, 63)
    reject = render_pair(pairs["coco-3-detection"], settings())
    assert (reject.stage, reject.reason) == ("annotation", "empty_target")
    assert reject.detail == "no box overlaps the 80x60 image"
    # center_crop keeps x 10..70: a box at x 2..7 is cropped away, not drawn on the border, and
    # a target without a box is no target
    cropped = render_pair(pairs["coco-4-detection"], settings("center_crop"))
    assert (cropped.stage, cropped.reason) == ("annotation", "empty_target") and "crop" in cropped.detail
    assert drawn(pairs["coco-4-detection"], "squash").any()


def test_a_category_id_that_categories_does_not_declare_is_a_bad_annotation(tmp_path: Path):
    """A stale or badly merged export: person (1) and car (3) declared, an object of 55. It was drawn
    in 55's colour as if it were a class (detectron2 and MMDetection raise KeyError on it; the
    panoptic reader rejects it); now both its pairs are `bad_annotation` naming the entry, and an
    image of declared classes beside it still draws."""
    root = write_dataset(tmp_path, {"images": images(1, 2), "categories": categories(1, 3),
                                    "annotations": [obj(1, 1, 55), obj(2, 2, 3)]})
    pairs = read(root, ("detection", "segmentation"))
    for task in ("detection", "segmentation"):
        reject = pairs[f"coco-1-{task}"]
        assert isinstance(reject, Reject) and reject.reason == "bad_annotation", task
        assert reject.detail == "ann.json annotations[0] (id 1): category_id 55 is not one that categories declares"
    _, target = rendered(pairs["coco-2-segmentation"])
    assert (target == colour_of(3)).all(axis=2).sum() > 50


def test_box_sizes_zero_negative_and_crowds(tmp_path: Path):
    """A negative width or height is no COCO box (a reject naming the entry); a zero-size box
    encloses nothing and crowd regions (iscrowd 1) are not objects to draw: an image with nothing
    else says so in its reject instead of 'has none'."""
    annotations = [obj(1, 1), obj(2, 1, 2, bbox=[30.0, 30.0, -10.0, 10.0]),
                   obj(3, 2, bbox=[10.0, 5.0, 0.0, 20.0]), obj(4, 3, iscrowd=1),
                   obj(5, 4), obj(6, 4, 2, bbox=[40.0, 40.0, 0.0, 0.0]),
                   obj(7, 4, 2, iscrowd=1, bbox=[50.0, 5.0, 9.0, 9.0])]
    root = write_dataset(tmp_path, {"images": images(1, 2, 3, 4), "categories": categories(1, 2),
                                    "annotations": annotations})
    pairs = read(root, ("detection",))
    assert (pairs["coco-1-detection"].reason, pairs["coco-1-detection"].detail) == (
        "bad_annotation", "ann.json annotations[1] (id 2): bbox has a negative width or height")
    assert (pairs["coco-2-detection"].reason, pairs["coco-2-detection"].detail) == (
        "no_detection_annotations", "image 2: its 1 box has no area")
    assert (pairs["coco-3-detection"].reason, pairs["coco-3-detection"].detail) == (
        "no_detection_annotations", "image 3: its 1 box is a crowd region (iscrowd 1)")
    assert pairs["coco-4-detection"].annotation["boxes"] == [[10.0, 10.0, 20.0, 20.0]]


def test_crowd_regions_left_out_of_a_drawn_detection_pair_are_counted_in_its_lineage(tmp_path: Path):
    """A crowd region beside objects was left out of the drawn boxes without a word: the pair's
    lineage (and so its shard row) now says how many. Its mask still paints the segmentation
    pair, as pycocotools' annToMask draws it, whether its RLE is compressed or not."""
    crowd = np.zeros((H, W), bool)
    crowd[35:58, 45:78] = True
    annotations = [obj(1, 1), obj(2, 1, 2, bbox=[40.0, 5.0, 20.0, 20.0], segmentation=[[40.0, 5.0, 60.0, 5.0, 60.0, 25.0]]),
                   obj(3, 1, 3, iscrowd=1, bbox=[45.0, 35.0, 33.0, 23.0], segmentation=fortran_rle(crowd, False)),
                   obj(4, 1, 3, iscrowd=1, bbox=[0.0, 40.0, 20.0, 15.0],
                       segmentation=fortran_rle(np.pad(np.ones((15, 20), bool), ((40, 5), (0, 60))), True))]
    root = write_dataset(tmp_path, {"images": images(1), "categories": categories(1, 2, 3), "annotations": annotations})
    pairs = read(root, ("detection", "segmentation"))
    detection = pairs["coco-1-detection"]
    assert detection.lineage == {"image_id": 1, "file": "1.png", "crowd_regions_left_out": 2}
    result = render_pair(detection, settings())
    assert result.members[0]["crowd_regions_left_out"] == 2
    ys, xs = np.nonzero(drawn(detection))  # squash 80x60 -> 64: the crowds' boxes stay undrawn
    assert not ((ys >= 40 * 64 / H) & (xs >= 46 * 64 / W)).any() and not ((ys >= 43 * 64 / H) & (xs < 20 * 64 / W)).any()
    assert "crowd_regions_left_out" not in pairs["coco-1-segmentation"].lineage
    assert_matches_pycocotools(pairs["coco-1-segmentation"], root, 1)


def brush(ann_id: int, image_id: int, segmentation, bbox="left out", iscrowd: int = 0) -> dict:
    """A brush mask as annotation tools export it with no box of its own: `bbox` left out, null or
    `[]`, `area` 0."""
    ann = {"id": ann_id, "image_id": image_id, "category_id": 2, "segmentation": segmentation, "area": 0,
           "iscrowd": iscrowd}
    return ann if bbox == "left out" else {**ann, "bbox": bbox}


def coco_box(segmentation, h: int = H, w: int = W) -> list[float]:
    """pycocotools' own box of a segmentation (polygons, or RLE compressed or not), as its
    `COCO.annToRLE` reads one: `toBbox`."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, h, w)
    else:
        rle = {**segmentation, "counts": segmentation["counts"].encode()}
    return [float(v) for v in mask_utils.toBbox(rle)]


def test_a_mask_box_is_measured_as_pycocotools_measures_it():
    """Random masks (and one whose run crosses from the bottom of a column to the top of the next,
    and an empty one): the box from a mask's runs is pycocotools' `toBbox` of it."""
    from uvd_pipeline.render_annotated import runs_box

    rng = np.random.default_rng(7)
    masks = [rng.random((H, W)) < rng.uniform(0.0005, 0.05) for _ in range(40)]
    crossing = np.zeros((H, W), bool)
    crossing[H - 3 :, 30] = crossing[:2, 31] = True
    masks += [crossing, np.zeros((H, W), bool)]
    for mask in masks:
        runs = np.asarray(fortran_rle(mask, False)["counts"])
        assert runs_box(runs, H) == coco_box(fortran_rle(mask, True)), np.argwhere(mask)


@pytest.mark.parametrize("bbox", ["left out", None, []], ids=["no-bbox", "null", "empty"])
def test_brush_masks_without_a_box_are_boxed_by_their_masks(tmp_path: Path, bbox):
    """A brush mask exported without a box (`bbox` left out, null or `[]`), as RLE compressed or
    not, or polygons: the detection pair said the image 'has none', dropped the object beside
    boxed ones without a word, or rejected the pair ('bbox is not 4 numbers'). Each is now drawn
    as the box pycocotools' `toBbox` gives its mask, pixel for pixel as the same object written
    with that box; a crowd mask is counted as left out."""
    blob = np.zeros((H, W), bool)
    blob[12:40, 22:31] = True
    blob[30:52, 45:71] = True  # two parts: the box is neither's alone
    polygon = [[5.5, 44.0, 18.25, 41.5, 12.0, 57.75]]
    crowd = np.zeros((H, W), bool)
    crowd[2:9, 60:78] = True
    masks = [fortran_rle(blob, True), fortran_rle(blob, False), polygon]
    annotations = [obj(1, 1, bbox=[2.0, 2.0, 10.0, 8.0]), *(brush(2 + i, 1, m, bbox) for i, m in enumerate(masks)),
                   brush(5, 1, fortran_rle(crowd, True), bbox, iscrowd=1), brush(6, 2, fortran_rle(blob, False), bbox)]
    boxed = [obj(1, 1, bbox=[2.0, 2.0, 10.0, 8.0]),
             *(brush(2 + i, 1, m, coco_box(m)) for i, m in enumerate(masks)),
             obj(6, 2, 2, bbox=coco_box(fortran_rle(blob, False)))]
    root = write_dataset(tmp_path / "brush", {"images": images(1, 2), "categories": categories(1, 2),
                                              "annotations": annotations})
    twin = write_dataset(tmp_path / "boxed", {"images": images(1, 2), "categories": categories(1, 2),
                                              "annotations": boxed})
    pairs, expected = read(root, ("detection",)), read(twin, ("detection",))
    assert coco_box(masks[0]) == coco_box(masks[1]) == [22.0, 12.0, 49.0, 40.0]  # columns 22..70, rows 12..51
    assert pairs["coco-1-detection"].lineage["crowd_regions_left_out"] == 1
    for image_id in (1, 2):
        for policy in POLICIES:
            assert np.array_equal(rendered(pairs[f"coco-{image_id}-detection"], policy)[1],
                                  rendered(expected[f"coco-{image_id}-detection"], policy)[1]), (image_id, policy)
    ys, xs = np.nonzero(drawn(pairs["coco-2-detection"], "squash"))  # 80x60 -> 64: the box 22..71 x 12..52
    edges = np.array([xs.min(), xs.max() + 1, ys.min(), ys.max() + 1])
    assert np.abs(edges - np.array([22, 71, 12, 52]) * [64 / W, 64 / W, 64 / H, 64 / H]).max() <= 1, edges


def test_a_brush_mask_without_a_box_that_cannot_be_read_is_counted(tmp_path: Path):
    """A mask with no box whose RLE is not the image's size, or whose mask is malformed, is a
    counted reject of its detection pair, naming why; one with no pixel draws nothing, nor one
    that is a line (a pair of nothing else has no detection annotations)."""
    wrong = fortran_rle(np.ones((H, W + 1), bool), True)
    annotations = [brush(1, 1, wrong), brush(2, 2, {"size": [H, W], "counts": "not rle?"}),
                   brush(3, 3, [[1.0, 2.0, 3.0, 4.0]]), brush(4, 4, fortran_rle(np.zeros((H, W), bool), False))]
    root = write_dataset(tmp_path, {"images": images(1, 2, 3, 4), "categories": categories(2),
                                    "annotations": annotations})
    pairs = read(root, ("detection",))
    reject = render_pair(pairs["coco-1-detection"], settings())
    assert (reject.stage, reject.reason, reject.detail) == ("annotation", "bad_segmentation",
                                                            f"RLE size [{H}, {W + 1}] vs image [{H}, {W}]")
    assert outcome(pairs["coco-2-detection"]) == ("annotation", "bad_segmentation")
    assert pairs["coco-3-detection"].reason == "no_detection_annotations"  # a line: no area (it was bad_annotation)
    assert pairs["coco-3-detection"].detail.endswith("its 1 box has no area"), pairs["coco-3-detection"].detail
    assert outcome(pairs["coco-4-detection"]) == ("annotation", "empty_target")



def test_brush_masks_that_draw_nothing_beside_boxes_are_counted_as_what_they_are(tmp_path: Path):
    """Beside a drawn box, an object given only as a mask whose polygon is a line (labelme's line
    shape) rejected the whole detection pair (`bad_annotation`), and one whose RLE paints no pixel
    was counted `boxes_outside_image` though it lies nowhere. The line is now left out and counted
    `boxes_without_area` (as a box of no width is), the empty mask `segments_without_pixels`; the
    target is the one drawn with the box alone."""
    line, empty = [[30.0, 30.0, 40.0, 40.0]], fortran_rle(np.zeros((H, W), bool), True)
    annotations = [obj(1, 1, bbox=[10.0, 10.0, 30.0, 30.0]), brush(2, 1, line),
                   obj(3, 2, bbox=[10.0, 10.0, 30.0, 30.0]), brush(4, 2, empty)]
    root = write_dataset(tmp_path / "full", {"images": images(1, 2), "categories": categories(1, 2),
                                             "annotations": annotations})
    bare = write_dataset(tmp_path / "bare", {"images": images(1, 2), "categories": categories(1, 2),
                                             "annotations": [annotations[0], annotations[2]]})
    pairs, expected = read(root, ("detection",)), read(bare, ("detection",))
    for image_id, counts in ((1, {"boxes_without_area": 1}), (2, {"segments_without_pixels": 1})):
        result = render_pair(pairs[f"coco-{image_id}-detection"], settings())
        member = result.members[0]
        assert {k: v for k, v in member.items() if k.endswith(("_image", "_pixels", "_area"))} == counts, member
        assert result.images == render_pair(expected[f"coco-{image_id}-detection"], settings()).images

# -- keypoints -----------------------------------------------------------------------------------
def test_objects_that_draw_nothing_beside_drawn_ones_are_counted_in_the_lineage(tmp_path: Path):
    """A box of no width, a box and a polygon wholly outside the image, a person whose points all
    lie outside it: beside objects that draw, each was dropped without a word. Each pair's lineage
    (and so its member and shard row) now counts them: `boxes_without_area` (seen in the JSON),
    `boxes_outside_image`, `segments_without_pixels`, `people_outside_image` (seen when drawn).
    The targets are the ones drawn without those objects, and a pair that leaves nothing out says
    nothing of them."""
    outside = {"bbox": [100.0, 70.0, 20.0, 20.0], "segmentation": [[100.0, 70.0, 120.0, 70.0, 120.0, 90.0]]}
    people = [obj(10, 1, keypoints=keypoints(), num_keypoints=17),
              obj(11, 1, keypoints=[v + 100 * (i % 3 < 2) for i, v in enumerate(keypoints())], num_keypoints=17)]
    annotations = [obj(1, 1), obj(2, 1, 2, **outside), obj(3, 1, 2, bbox=[40.0, 30.0, 0.0, 10.0],
                                                         segmentation=[[40.0, 30.0, 50.0, 30.0, 50.0, 40.0]]), *people]
    full = write_dataset(tmp_path / "full", {"images": images(1), "categories": person_categories(categories(2)[0]),
                                             "annotations": annotations})
    bare = write_dataset(tmp_path / "bare", {"images": images(1), "categories": person_categories(categories(2)[0]),
                                             "annotations": [obj(1, 1), obj(3, 1, 2, bbox=[0.0, 0.0, 0.0, 0.0],
                                                             segmentation=annotations[2]["segmentation"]), people[0]]})
    left_out = {"detection": {"boxes_without_area": 1, "boxes_outside_image": 1},
                "segmentation": {"segments_without_pixels": 1}, "pose": {"people_outside_image": 1}}
    full_pairs, bare_pairs = read(full), read(bare)
    for task, counts in left_out.items():
        pair, alone = full_pairs[f"coco-1-{task}"], bare_pairs[f"coco-1-{task}"]
        result, expected = render_pair(pair, settings()), render_pair(alone, settings())
        assert {k: v for k, v in result.members[0].items() if k in counts or k.endswith(("_image", "_pixels",
                                                                                         "_area"))} == counts, task
        assert result.images == expected.images, task  # drawn as without them
    bare_member = render_pair(bare_pairs["coco-1-pose"], settings()).members[0]
    assert not any(k.endswith(("_outside_image", "_without_pixels")) for k in bare_member)


def keypoints(n: int = 17, visibility: int = 2, step: float = 4.0) -> list[float]:
    return [float(v) for j in range(n) for v in (4 + step * j % 72, 6 + 3 * j, visibility)]


def person_categories(*extra: dict) -> list[dict]:
    return [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO17.joints),
             "skeleton": COCO_SKELETON}, *extra]



def test_a_keypoints_category_skeleton_is_checked_once_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The limbs memo was made anew for every image's pose pair, so a category's skeleton was
    checked (and its limbs copied) once per image: a 20,000-pair skeleton over 256 images took
    16 s and 504 MiB for one unit's read. It is kept with the file's index: three images of one
    custom-skeleton category check it once, and draw as before."""
    import sources.coco as coco

    calls = []
    person_limbs = coco.person_limbs
    monkeypatch.setattr(coco, "person_limbs", lambda ann, cats: calls.append(ann["id"]) or person_limbs(ann, cats))
    category = {**person_categories()[0], "skeleton": [[1, 2], [2, 3], [3, 4]]}
    root = write_dataset(tmp_path, {"images": images(1, 2, 3), "categories": [category],
                                    "annotations": [obj(n, n, keypoints=keypoints(), num_keypoints=17) for n in (1, 2, 3)]})
    pairs = read(root, ("pose",))
    assert len(calls) == 1, calls
    assert all(outcome(pairs[f"coco-{n}-pose"]) == "rendered" for n in (1, 2, 3))

def test_invisible_keypoints_are_never_drawn(tmp_path: Path):
    """v = 0 points that keep an x, y (some tools leave the last position there) draw no disc and
    no limb: the target is the one of the same person with those points at 0, 0. v = 1 (labelled,
    not visible) is drawn, as pycocotools' showAnns draws every v > 0."""
    hidden = range(0, 17, 2)
    placed, zeroed = keypoints(), keypoints()
    for j in hidden:
        placed[3 * j + 2] = zeroed[3 * j + 2] = 0
        zeroed[3 * j : 3 * j + 2] = [0.0, 0.0]
    placed[3 * 1 + 2] = zeroed[3 * 1 + 2] = 1
    root = write_dataset(tmp_path, {"images": images(1, 2), "categories": person_categories(),
                                    "annotations": [obj(1, 1, keypoints=placed, num_keypoints=8),
                                                    obj(2, 2, keypoints=zeroed, num_keypoints=8)]})
    pairs = read(root, ("pose",))
    _, target = rendered(pairs["coco-1-pose"], "squash", 160)
    assert np.array_equal(target, rendered(pairs["coco-2-pose"], "squash", 160)[1])
    for j in range(17):
        x, y = placed[3 * j] * 160 / W, placed[3 * j + 1] * 160 / H
        centre = tuple(int(c) for c in target[int(y), int(x)])
        assert (centre == joint_colours(COCO17)[j]) == (j not in hidden), j
    drawn_limbs = {tuple(c) for c in target.reshape(-1, 3)} & set(limb_colours(COCO17))
    assert drawn_limbs and all(a not in hidden and b not in hidden
                               for (a, b), colour in zip(COCO17.limbs, limb_colours(COCO17)) if colour in drawn_limbs)


@pytest.mark.parametrize("num_keypoints", [None, 0], ids=["missing", "stale"])
def test_visible_keypoints_count_whatever_num_keypoints_says(tmp_path: Path, num_keypoints):
    """num_keypoints left out, or 0 while points are labelled: the points' own v decides."""
    ann = obj(1, 1, keypoints=keypoints())
    if num_keypoints is not None:
        ann["num_keypoints"] = num_keypoints
    root = write_dataset(tmp_path, {"images": images(1, 2), "categories": person_categories(),
                                    "annotations": [ann, obj(2, 2, keypoints=[0.0] * 51, num_keypoints=0)]})
    pairs = read(root, ("pose",))
    assert len(pairs["coco-1-pose"].annotation["people"]) == 1
    assert (pairs["coco-2-pose"].reason, pairs["coco-2-pose"].detail) == (
        "no_pose_annotations", "image 2: no labelled keypoint (v > 0)")


def test_skeleton_comes_from_the_category_one_based(tmp_path: Path):
    """A hand of 5 points with its own skeleton, and a 17-point category whose skeleton is not
    COCO's: limbs join the points the category's 1-based pairs name, and no others."""
    hand = {"id": 2, "name": "hand", "keypoints": ["a", "b", "c", "d", "e"], "skeleton": [[1, 2], [2, 3], [4, 5]]}
    robot = {"id": 3, "name": "robot", "keypoints": [f"j{i}" for i in range(17)], "skeleton": [[1, 17]]}
    hand_points = [5.0, 5.0, 2, 70.0, 5.0, 2, 70.0, 55.0, 2, 5.0, 55.0, 2, 40.0, 30.0, 2]
    robot_points = [0.0] * 51
    robot_points[0:3] = [5.0, 30.0, 2]
    robot_points[48:51] = [75.0, 30.0, 2]
    root = write_dataset(tmp_path, {"images": images(1, 2, 3), "categories": person_categories(hand, robot),
                                    "annotations": [obj(1, 1, 2, keypoints=hand_points, num_keypoints=5),
                                                    obj(2, 2, 3, keypoints=robot_points, num_keypoints=2),
                                                    obj(3, 3, 1, keypoints=keypoints(), num_keypoints=17)]})
    pairs = read(root, ("pose",))

    def at(target: np.ndarray, x: float, y: float) -> tuple:
        return tuple(int(c) for c in target[int(y * 160 / H), int(x * 160 / W)])

    _, target = rendered(pairs["coco-1-pose"], "squash", 160)
    limb = _rainbow3()
    assert at(target, 37.5, 5.0) == limb[0]  # points 1-2
    assert at(target, 70.0, 30.0) == limb[1]  # points 2-3
    assert at(target, 22.5, 42.5) == limb[2]  # points 4-5
    assert at(target, 5.0, 30.0) == (0, 0, 0)  # points 1-4: no limb
    _, target = rendered(pairs["coco-2-pose"], "squash", 160)
    assert at(target, 40.0, 30.0) != (0, 0, 0)  # points 1-17
    # COCO's own skeleton draws as the built-in COCO-17 one
    assert pairs["coco-3-pose"].annotation["skeleton"] == "coco17"


def label_studio_keypoints(names: list[str], placed: dict[str, tuple[float, float]]) -> dict:
    """Label Studio's COCO export of KeyPointLabels (label_studio_sdk.converter.keypoints): the
    points of an image in one annotation, in the order of the labels' `model_index`, rounded to
    integers, v 2 or 0, a bbox around them, in one category "default" naming them with
    `skeleton: []`; ids from 0, `info.contributor` "Label Studio"."""
    points = [0] * (3 * len(names))
    for name, (x, y) in placed.items():
        points[3 * names.index(name) : 3 * names.index(name) + 3] = [int(round(x)), int(round(y)), 2]
    xs, ys = [x for x, _ in placed.values()], [y for _, y in placed.values()]
    return {"images": [{"width": W, "height": H, "id": 0, "file_name": "images/0.png"}],
            "categories": [{"id": 0, "name": "default", "supercategory": "default", "keypoints": names,
                            "skeleton": []}],
            "annotations": [{"id": 0, "image_id": 0, "category_id": 0, "keypoints": points,
                             "num_keypoints": len(placed), "iscrowd": 0,
                             "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]}],
            "info": {"year": 2025, "version": "1.0", "description": "", "contributor": "Label Studio", "url": "",
                     "date_created": "2025-01-01 00:00:00"}}


def test_seventeen_points_without_a_skeleton_are_a_person_only_when_named_as_cocos(tmp_path: Path):
    """A category without a skeleton (Label Studio and CVAT write `skeleton: []`) whose 17 points
    are not COCO's (a car's) was drawn with COCO's human limbs between them. Its points are now
    drawn alone; 17 points named as COCO's, written in another order or case ('Left Eye'), are
    COCO's person: the same target as the person written in COCO's order."""
    car = [f"car_{i}" for i in range(17)]
    where = {name: (4.0 + 4 * i, 6.0 + 3 * i) for i, name in enumerate(COCO17.joints)}
    shuffled = [COCO17.joints[i] for i in np.random.default_rng(5).permutation(17)]
    spelled = [name.replace("_", " ").title() for name in shuffled]
    write_dataset(tmp_path / "car", label_studio_keypoints(car, dict(zip(car, where.values()))))
    write_dataset(tmp_path / "coco", label_studio_keypoints(list(COCO17.joints), where))
    write_dataset(tmp_path / "shuffled", label_studio_keypoints(spelled, {
        spelled[shuffled.index(name)]: xy for name, xy in where.items()}))
    targets = {name: rendered(read(tmp_path / name, ("pose",))["coco-0-pose"], "squash", 160)[1]
               for name in ("car", "coco", "shuffled")}
    colours = {name: {tuple(int(c) for c in pixel) for pixel in target.reshape(-1, 3)} for name, target in targets.items()}
    assert not colours["car"] & set(limb_colours(COCO17)) and len(colours["car"] - {(0, 0, 0)}) >= 17
    assert colours["coco"] & set(limb_colours(COCO17))
    assert np.array_equal(targets["shuffled"], targets["coco"])


@pytest.mark.parametrize("limbs", [len(COCO17.limbs), 5], ids=["cocos-skeleton", "part-of-it"])
def test_cocos_points_in_another_order_draw_alike_with_or_without_a_skeleton(tmp_path: Path, limbs: int):
    """COCO's 17 named points written in another order (a CVAT template's) were put in COCO's order
    only where the category had no skeleton: with its skeleton written in the file's order the same
    person drew 672 of 40,000 pixels otherwise (hunt58 pose_order.py), its joints in other joints'
    colours. The points now follow COCO's order whenever the names are COCO's, and the skeleton is
    renumbered with them: the target is the one of the person written in COCO's order."""
    where = {name: (4.0 + 4 * i, 6.0 + 3 * i) for i, name in enumerate(COCO17.joints)}
    order = list(COCO17.joints)[::-1]
    skeleton = [list(limb) for limb in COCO17.limbs[:limbs]]
    for name, names, skeleton_of in (("coco", list(COCO17.joints), skeleton),
                                     ("file", order, [[order.index(COCO17.joints[a]), order.index(COCO17.joints[b])]
                                                      for a, b in skeleton])):
        data = label_studio_keypoints(names, where)
        data["categories"][0]["skeleton"] = [[a + 1, b + 1] for a, b in skeleton_of]
        write_dataset(tmp_path / name, data)
    targets = {name: rendered(read(tmp_path / name, ("pose",))["coco-0-pose"], "squash", 160)[1] for name in ("coco", "file")}
    assert np.array_equal(targets["file"], targets["coco"])
    assert len({tuple(int(c) for c in pixel) for pixel in targets["coco"].reshape(-1, 3)}) > 5


def _rainbow3() -> list[tuple[int, int, int]]:
    from transforms.annotations import Skeleton

    return limb_colours(Skeleton("three", ("a",) * 5, ((0, 1), (1, 2), (3, 4))))


@pytest.mark.parametrize("skeleton, points, detail", [
    ([[0, 1]], 5, "category 2 skeleton names point 0 (its pairs are 1-based, 1..5)"),
    ([[1, 6]], 5, "category 2 skeleton names point 6 (its pairs are 1-based, 1..5)"),
    ([[1, 2]], 4, "keypoints hold 4 points, category 2 names 5"),
])
def test_skeletons_and_keypoints_that_disagree_reject_the_pair(tmp_path: Path, skeleton, points, detail):
    hand = {"id": 2, "name": "hand", "keypoints": ["a", "b", "c", "d", "e"], "skeleton": skeleton}
    root = write_dataset(tmp_path, {"images": images(1), "categories": [hand],
                                    "annotations": [obj(1, 1, 2, keypoints=keypoints(points), num_keypoints=points)]})
    reject = read(root, ("pose",))["coco-1-pose"]
    assert (reject.reason, reject.detail) == ("bad_annotation", f"ann.json annotations[0] (id 1): {detail}")


# -- exports of real tools -------------------------------------------------------------------------
def test_cvat_coco_export(tmp_path: Path):
    """CVAT's "COCO 1.0" (Datumaro): ids from 1, licenses and info with empty strings, images with
    license 0 and date_captured 0, masks as uncompressed RLE with iscrowd 1, polygons with iscrowd
    0, `attributes` on every annotation, boxes with `segmentation: []`; width/height 0 where the
    exporter did not know the image's size."""
    mask = np.zeros((H, W), bool)
    mask[20:50, 10:40] = True
    cvat = {
        "licenses": [{"name": "", "id": 0, "url": ""}],
        "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""},
        "categories": [{"id": 1, "name": "car", "supercategory": ""}, {"id": 2, "name": "person", "supercategory": ""}],
        "images": [{"id": 1, "width": W, "height": H, "file_name": "task_1/frame_000000.png", "license": 0,
                    "flickr_url": "", "coco_url": "", "date_captured": 0},
                   {"id": 2, "width": 0, "height": 0, "file_name": "task_1/frame_000001.png", "license": 0,
                    "flickr_url": "", "coco_url": "", "date_captured": 0}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": fortran_rle(mask, False), "area": 900.0,
             "bbox": [10.0, 20.0, 30.0, 30.0], "iscrowd": 1, "attributes": {"occluded": False}},
            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [[50.0, 10.0, 75.0, 12.0, 70.0, 55.0]],
             "area": 520.0, "bbox": [50.0, 10.0, 25.0, 45.0], "iscrowd": 0,
             "attributes": {"occluded": True, "rotation": 0.0}},
            {"id": 3, "image_id": 2, "category_id": 2, "segmentation": [], "area": 300.0,
             "bbox": [5.0, 5.0, 20.0, 15.0], "iscrowd": 0, "attributes": {"occluded": False, "rotation": 0.0}},
        ]}
    root = write_dataset(tmp_path, cvat)
    pairs = read(root)
    assert_matches_pycocotools(pairs["coco-1-segmentation"], root, 1)
    assert pairs["coco-1-detection"].annotation["boxes"] == [[50.0, 10.0, 25.0, 45.0]]  # the crowd mask's is not
    assert outcome(pairs["coco-2-detection"]) == "rendered"  # width/height 0: unknown, not wrong
    assert pairs["coco-2-segmentation"].reason == "no_segmentation_annotations"


def test_label_studio_zero_based_category_ids_are_shifted(tmp_path: Path):
    """Label Studio numbers categories from 0 and uses 0: colour 0 is the background's black, so
    such a file's ids are read one up (0 -> 1), every pair of it alike."""
    ls = {"images": [{"width": W, "height": H, "id": 0, "file_name": "images/a1b2c3-photo.png"}],
          "categories": [{"id": 0, "name": "Airplane"}, {"id": 1, "name": "Car"}],
          "annotations": [
              {"id": 0, "image_id": 0, "category_id": 0, "segmentation": [], "bbox": [5, 5, 20, 20], "ignore": 0,
               "iscrowd": 0, "area": 400},
              {"id": 1, "image_id": 0, "category_id": 1, "ignore": 0, "iscrowd": 0, "area": 520.0,
               "segmentation": [[50.0, 10.0, 75.0, 12.0, 70.0, 55.0]], "bbox": [50.0, 10.0, 25.0, 45.0]},
              {"id": 2, "image_id": 0, "category_id": 0, "ignore": 0, "iscrowd": 0, "area": 300.0,
               "segmentation": [[10.0, 30.0, 40.0, 30.0, 25.0, 58.0]], "bbox": [10.0, 30.0, 30.0, 28.0]}],
          "info": {"year": 2024, "version": "1.0", "description": "", "contributor": "Label Studio", "url": "",
                   "date_created": "2024-05-01 10:00:00.000000"}}
    root = write_dataset(tmp_path, ls)
    pairs = read(root, ("detection", "segmentation"))
    assert pairs["coco-0-detection"].annotation["categories"] == [1, 2, 1]
    assert_matches_pycocotools(pairs["coco-0-segmentation"], root, 0, shift=1)


def test_label_studio_classes_keep_their_colour_whether_class_0_is_used_or_not(tmp_path: Path):
    """Label Studio's COCO export declares every label of the project (its `_get_labels`: ids from
    0, names sorted, no supercategory) whether any annotation uses it or not. An export with no
    object of class 0 (a val split without airplanes) read its ids as they stand while one with
    airplanes read them one up: Car took Airplane's colour. Both exports draw Car alike now."""
    def ls_box(ann_id: int, category_id: int, bbox: list[int]) -> dict:
        x, y, w, h = bbox
        return {"id": ann_id, "image_id": 0, "category_id": category_id, "segmentation": [], "bbox": bbox,
                "ignore": 0, "iscrowd": 0, "area": w * h}

    def export(annotations: list[dict]) -> dict:
        return {"images": [{"width": W, "height": H, "id": 0, "file_name": "images/a1b2c3-photo.png"}],
                "categories": [{"id": 0, "name": "Airplane"}, {"id": 1, "name": "Car"}], "annotations": annotations,
                "info": {"year": 2024, "version": "1.0", "description": "", "contributor": "Label Studio"}}

    car = [40, 20, 30, 30]
    train = read(write_dataset(tmp_path / "train", export([ls_box(0, 0, [5, 5, 20, 20]), ls_box(1, 1, car)])),
                 ("detection",))["coco-0-detection"]
    val = read(write_dataset(tmp_path / "val", export([ls_box(0, 1, car)])), ("detection",))["coco-0-detection"]
    assert train.annotation["categories"] == [1, 2] and val.annotation["categories"] == [2]
    unnamed = export([ls_box(0, 1, car)])
    unnamed["categories"] = [{"id": 0}, {"id": 1, "name": "Car"}]  # no names to match a supercategory
    assert read(write_dataset(tmp_path / "unnamed", unnamed), ("detection",))["coco-0-detection"].annotation[
        "categories"] == [2]
    ys, xs = np.nonzero(np.all(rendered(val)[1] == colour_of(2), axis=2))  # the box's outline, in Car's colour
    # squash 80x60 -> 64: x 40..70 -> 32..56, y 20..50 -> 21.3..53.3: the pixels 32..55, 21..53
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (32, 55, 21, 53)


def test_a_label_studio_class_named_background_keeps_every_class_colour(tmp_path: Path):
    """Label Studio numbers its project's labels from 0, sorted: "Background" is 0 beside Car and
    Person, a class like any. Read by the background-name rule, an export without a Background
    object was read as it stands and one with it one up (Car 1 in val, 2 in train). An export
    signed `info.contributor: "Label Studio"` is read one up whatever its names; another file's
    unused 0 named `Background` (any case) still names no class."""
    def export(annotations: list[dict], contributor: str = "Label Studio") -> dict:
        return {"images": [{"width": W, "height": H, "id": 0, "file_name": "images/a1-photo.png"}],
                "categories": [{"id": 0, "name": "Background"}, {"id": 1, "name": "Car"}, {"id": 2, "name": "Person"}],
                "annotations": annotations,
                "info": {"year": 2024, "version": "1.0", "description": "", "contributor": contributor}}

    def drawn_classes(folder: str, data: dict) -> list[int]:
        return read(write_dataset(tmp_path / folder, data), ("detection",))["coco-0-detection"].annotation["categories"]

    road, car = obj(0, 0, 0, bbox=[0, 40, 80, 20]), obj(1, 0, 1, bbox=[40, 20, 30, 30])
    assert drawn_classes("train", export([road, car])) == [1, 2]
    assert drawn_classes("val", export([car])) == [2]
    assert drawn_classes("other", export([car], contributor="")) == [1]  # another tool's unused Background 0


def test_roboflow_placeholder_category_zero_is_not_a_shift(tmp_path: Path):
    """Roboflow declares category 0 as the supercategory of the rest and never uses it; its ids
    are not contiguous after deletions. They are read as they stand, as are those beside a
    `__background__` 0 that no annotation uses."""
    rf = {"info": {"year": "2024", "version": "3", "description": "Exported from roboflow.com"},
          "licenses": [{"id": 1, "url": "https://creativecommons.org/licenses/by/4.0/", "name": "CC BY 4.0"}],
          "categories": [{"id": 0, "name": "vehicles", "supercategory": "none"},
                         {"id": 1, "name": "car", "supercategory": "vehicles"},
                         {"id": 4, "name": "bus", "supercategory": "vehicles"}],
          "images": [{"id": 0, "license": 1, "file_name": "img_jpg.rf.0123abcd.png", "height": H, "width": W,
                      "date_captured": "2024-05-01T10:00:00+00:00"}],
          "annotations": [obj(0, 0, 1), obj(1, 0, 4, segmentation=[[50.0, 10.0, 75.0, 12.0, 70.0, 55.0]])]}
    root = write_dataset(tmp_path, rf)
    pairs = read(root, ("detection", "segmentation"))
    assert pairs["coco-0-detection"].annotation["categories"] == [1, 4]
    assert_matches_pycocotools(pairs["coco-0-segmentation"], root, 0)
    rf["categories"][0] = {"id": 0, "name": "__background__"}  # a converter's background: no class either
    rf["categories"][1:] = categories(1, 4)
    assert read(write_dataset(tmp_path / "bg", rf), ("detection",))["coco-0-detection"].annotation["categories"] == [1, 4]


def test_text_image_ids_of_voc_to_coco_converters(tmp_path: Path):
    """Converters from Pascal VOC (voc2coco) and VisDrone name each image by its file stem
    (`"id": "2008_000008"`), and some number annotations so too; pycocotools, torchvision and
    MMDetection read such files, and the whole file was refused ('has no integer id'). The ids
    are read as pycocotools keys them, integers beside texts, and the masks match annToMask."""
    voc = {"images": [{"id": "2008_000008", "file_name": "2008_000008.png", "width": W, "height": H},
                      {"id": "0000001_02999_d_0000005", "file_name": "0000001_02999_d_0000005.png",
                       "width": W, "height": H},
                      {"id": 7, "file_name": "7.png", "width": W, "height": H}],
           "categories": categories(1, 2),
           "annotations": [obj(1, "2008_000008"), obj(2, "2008_000008", 2, bbox=[50.0, 10.0, 25.0, 45.0],
                                                    segmentation=[[50.0, 10.0, 75.0, 12.0, 70.0, 55.0]]),
                           obj("a-1", "0000001_02999_d_0000005"), obj(3, 7), obj(4, "missing")]}
    root = write_dataset(tmp_path, voc)
    pairs = read(root, ("detection", "segmentation"))
    assert pairs["coco-2008_000008-detection"].annotation["boxes"] == [[10.0, 10.0, 20.0, 20.0],
                                                                      [50.0, 10.0, 25.0, 45.0]]
    assert pairs["coco-2008_000008-detection"].lineage["image_id"] == "2008_000008"
    assert_matches_pycocotools(pairs["coco-2008_000008-segmentation"], root, "2008_000008")
    assert_matches_pycocotools(pairs["coco-0000001_02999_d_0000005-segmentation"], root, "0000001_02999_d_0000005")
    assert outcome(pairs["coco-7-detection"]) == "rendered"
    assert (pairs["coco-missing-detection"].reason, pairs["coco-missing-detection"].detail) == (
        "bad_annotation", "image missing: no images entry has this id; ann.json annotations[4] (id 4) name it")


def test_file_names_with_folders_absolute_and_non_ascii(tmp_path: Path):
    """Detectron2-style `train2017/000000000139.jpg` under the images folder; an absolute name
    inside it (as written on the machine that holds the data); non-ASCII names. An absolute name
    elsewhere, or climbing out, is `outside_root`."""
    root = tmp_path / "data"
    entries = [{"id": 139, "file_name": "train2017/000000000139.png"},
               {"id": 2, "file_name": str(root / "abs" / "2.png")},
               {"id": 3, "file_name": "café/ünï 猫.png"},
               {"id": 4, "file_name": str(tmp_path / "elsewhere.png")},
               {"id": 5, "file_name": "../elsewhere.png"}]
    write_dataset(root, {"images": entries, "annotations": [obj(n, e["id"]) for n, e in enumerate(entries, 1)],
                         "categories": categories(1)})
    write_dataset(root / "abs", {"images": [{"id": 2, "file_name": "2.png"}]})
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "elsewhere.png")
    pairs = read(root, ("detection",))
    for n in (139, 2, 3):
        assert outcome(pairs[f"coco-{n}-detection"]) == "rendered", n
    assert pairs["coco-4-detection"].reason == pairs["coco-5-detection"].reason == "outside_root"


@pytest.mark.parametrize("given", ["real", "alias"])
def test_absolute_names_spelled_through_a_linked_folder_are_judged_by_where_they_lead(tmp_path: Path, given: str):
    """An absolute `file_name` inside the images folder, written through another spelling of it (a
    linked parent: `/data -> /mnt/nfs/data`, macOS's `/tmp -> /private/tmp`, an exporter's
    `Path.resolve()`), was `outside_root`: the names were compared as spelled. They are judged by
    the folder they really lead to, whichever spelling `path` uses; a name that really leads out
    (through a linked folder pointing elsewhere) is still `outside_root`."""
    real, alias, elsewhere = tmp_path / "real", tmp_path / "alias", tmp_path / "elsewhere"
    alias.symlink_to(real, target_is_directory=True)
    entries = [{"id": 1, "file_name": str(real / "1.png")}, {"id": 2, "file_name": str(alias / "sub" / "2.png")},
               {"id": 3, "file_name": str(real / "out" / "3.png")}, {"id": 4, "file_name": str(alias / "4.png")}]
    write_dataset(real, {"images": entries, "annotations": [obj(n, n) for n in range(1, 5)], "categories": categories(1)})
    for path in (real / "1.png", real / "sub" / "2.png", real / "4.png", elsewhere / "3.png"):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(path)
    (real / "out").symlink_to(elsewhere, target_is_directory=True)
    load_index.cache_clear()
    source = CocoSource("coco", str(tmp_path / given), ("ann.json",), ".", ("detection",))
    pairs = {item.key: item for unit in source.units() for item in source.read(unit)}
    for n in (1, 2, 4):
        assert outcome(pairs[f"coco-{n}-detection"]) == "rendered", (n, pairs[f"coco-{n}-detection"])
    assert pairs["coco-3-detection"].reason == "outside_root"


def test_declared_size_of_a_turned_phone_photo(tmp_path: Path):
    """A phone photo stored 80x60 with EXIF orientation 6 is shown 60x80. CVAT annotates what it
    shows and declares 60x80: every task renders, and the mask is pycocotools' own. A file
    declaring the stored 80x60 drew its boxes and points in the other frame: now every task of it
    is `annotation_size_mismatch`."""
    root = tmp_path
    stored = np.zeros((H, W, 3), np.uint8)
    stored[:, : W // 2] = 200
    exif = Image.Exif()
    exif[0x0112] = 6
    for name in ("phone.jpg", "phone2.jpg"):  # one file to each id (`test_a_file_named_by_two_image_ids...`)
        Image.fromarray(stored).save(root / name, exif=exif.tobytes(), quality=95)
    polygon = [[5.0, 50.0, 55.0, 50.0, 55.0, 75.0, 5.0, 75.0]]
    person = keypoints()
    annotations = [obj(n, n, segmentation=polygon, bbox=[5.0, 50.0, 50.0, 25.0], keypoints=person, num_keypoints=17)
                   for n in (1, 2)]
    data = {"images": [{"id": 1, "file_name": "phone.jpg", "width": H, "height": W},
                       {"id": 2, "file_name": "phone2.jpg", "width": W, "height": H}],
            "annotations": annotations, "categories": person_categories()}
    (root / "ann.json").write_text(json.dumps(data))
    pairs = read(root)
    assert all(outcome(pairs[f"coco-1-{task}"]) == "rendered" for task in TASKS)
    assert_matches_pycocotools(pairs["coco-1-segmentation"], root, 1, h=W, w=H)
    for task in TASKS:
        reject = render_pair(pairs[f"coco-2-{task}"], settings())
        assert (reject.stage, reject.reason, reject.detail) == (
            "annotation", "annotation_size_mismatch", "annotation declares 80x60, image is 60x80"), task


def test_annotations_of_an_image_not_listed_are_counted(tmp_path: Path):
    """Annotations whose image_id no `images` entry has were dropped without a word; then each
    was a reject under every configured task, a box three times over. They are a reject under
    each task they serve (boxes and polygons: detection and segmentation), and one that serves
    no configured task (keypoints alone, tasks without pose) is one reject under the first."""
    person = {"id": 4, "image_id": 8, "category_id": 1, "keypoints": keypoints(), "num_keypoints": 17}
    root = write_dataset(tmp_path, {"images": images(1), "categories": categories(1),
                                    "annotations": [obj(1, 1), obj(2, 7), obj(3, 7), person]})
    pairs = read(root)
    assert outcome(pairs["coco-1-detection"]) == "rendered"
    assert sorted(k for k in pairs if not k.startswith("coco-1-")) == [
        "coco-7-detection", "coco-7-segmentation", "coco-8-pose"]
    for task in ("detection", "segmentation"):
        reject = pairs[f"coco-7-{task}"]
        assert (reject.stage, reject.reason, reject.detail) == (
            "read", "bad_annotation",
            "image 7: no images entry has this id; ann.json annotations[1] (id 2) and 1 more name it")
    assert [k for k in read(root, ("detection", "segmentation")) if k.startswith("coco-8-")] == ["coco-8-detection"]


def test_image_ids_twice_and_files_that_disagree(tmp_path: Path):
    """One id twice in a file rejects that image's pairs; the same id in two files merges, unless
    the files name different images for it (which one was annotated?)."""
    root = write_dataset(tmp_path, {"images": images(1, 1, 2, 3), "categories": person_categories(),
                                    "annotations": [obj(1, 1), obj(2, 2), obj(3, 3)]})
    other = {"images": [{"id": 2, "file_name": "2b.png", "width": W, "height": H}, *images(3)],
             "categories": person_categories(),
             "annotations": [obj(10, 2, keypoints=keypoints()), obj(11, 3, keypoints=keypoints())]}
    (root / "keypoints.json").write_text(json.dumps(other))
    pairs = read(root, files=("ann.json", "keypoints.json"))
    assert pairs["coco-1-detection"].detail == "image 1: ann.json images[0] and images[1] both have id 1"
    assert pairs["coco-2-pose"].detail == ("image 2: ann.json images[2] and keypoints.json images[0] give id 2 "
                                           "different file_names")
    assert {outcome(pairs[f"coco-3-{task}"]) for task in TASKS} == {"rendered"}


def test_a_file_named_by_two_image_ids_rejects_both(tmp_path: Path):
    """Two exports merged by a script (or one picture uploaded twice to a tool) list one file under
    two ids, each with part of its objects: each id's pair drew its own objects only, and the two
    pairs, hashed apart, put one picture in train and in val. Every pair of both ids is now a
    `bad_annotation` naming the two entries (`./1.png` is `1.png`); the same id naming its file in
    instances and person_keypoints stays one image."""
    data = {"images": [*images(1, 2), {"id": 3, "file_name": "./1.png", "width": W, "height": H}, *images(4)],
            "categories": person_categories(),
            "annotations": [obj(1, 1), obj(2, 2), obj(3, 3, bbox=[40.0, 30.0, 10.0, 10.0]), obj(4, 4)]}
    root = write_dataset(tmp_path, data)
    (root / "keypoints.json").write_text(json.dumps({"images": images(4), "categories": person_categories(),
                                                     "annotations": [obj(10, 4, keypoints=keypoints())]}))
    pairs = read(root, files=("ann.json", "keypoints.json"))
    why = "ann.json images[0] (id 1) and ann.json images[2] (id 3) both name '1.png': give a file one id"
    for image_id in (1, 3):
        for task in TASKS:
            reject = pairs[f"coco-{image_id}-{task}"]
            assert (reject.stage, reject.reason, reject.detail) == ("read", "bad_annotation",
                                                                    f"image {image_id}: {why}"), (image_id, task)
    assert outcome(pairs["coco-2-detection"]) == "rendered"
    assert {outcome(pairs[f"coco-4-{task}"]) for task in TASKS} == {"rendered"}


@pytest.mark.parametrize("spelling", ["sub\\1.png", "absolute"])
def test_two_spellings_of_one_file_under_two_ids_reject_both(tmp_path: Path, spelling: str):
    """`sub\\1.png` (as Windows writes it) and an absolute name inside the images folder (as
    Detectron2 writes them) open the same file as `sub/1.png`: compared as written, the two ids
    escaped the one-file rule and one picture could land in train and in val."""
    root = tmp_path / "data"
    second = str(root / "sub" / "1.png") if spelling == "absolute" else spelling
    data = {"images": [{"id": 1, "file_name": "sub/1.png", "width": W, "height": H},
                       {"id": 2, "file_name": second, "width": W, "height": H}],
            "categories": person_categories(), "annotations": [obj(1, 1), obj(2, 2)]}
    write_dataset(root, {"images": data["images"][:1]})  # the one file (no `sub\\1.png` beside it)
    (root / "ann.json").write_text(json.dumps(data))
    pairs = read(root, ("detection",))
    why = "ann.json images[0] (id 1) and ann.json images[1] (id 2) both name 'sub/1.png': give a file one id"
    assert [(pairs[f"coco-{n}-detection"].reason, pairs[f"coco-{n}-detection"].detail) for n in (1, 2)] == [
        ("bad_annotation", f"image {n}: {why}") for n in (1, 2)]


def test_the_index_keys_backslash_names_without_asking_the_filesystem(tmp_path: Path, monkeypatch):
    """Each `sub\\N.jpg` name cost an `fsio.exists` call in every worker's `load_index` (on gs://
    a request each: 2000 names, 2000 requests) to learn whether a file of that very name exists.
    The files are keyed with Windows' separators read as folders; only where two ids meet on one
    key is the filesystem asked. Ids 1 and 3 spell one file two ways and are still refused."""
    import sources.fsio as fsio

    names = [*(f"sub\\{n}.jpg" for n in range(1, 201)), "sub/1.jpg"]
    data = {"images": [{"id": n, "file_name": name, "width": W, "height": H} for n, name in enumerate(names, 1)],
            "categories": categories(1), "annotations": []}
    (tmp_path / "ann.json").write_text(json.dumps(data))
    calls = []
    monkeypatch.setattr(fsio, "exists", lambda *a, **k: calls.append(a) or False)
    load_index.cache_clear()
    index = load_index((str(tmp_path / "ann.json"),), str(tmp_path))
    assert len(calls) == 1 and sorted(index.problems) == [1, 201]  # the one meeting


def test_a_file_named_with_a_backslash_beside_the_folder_is_another_file(tmp_path: Path):
    """On Linux `sub\\1.png` may be a file of that very name beside `sub/1.png`: two files, so
    two ids naming one each are two images, though their keys, read as Windows names, meet."""
    data = {"images": [{"id": 1, "file_name": "sub/1.png", "width": W, "height": H},
                       {"id": 2, "file_name": "sub\\1.png", "width": W, "height": H}],
            "categories": person_categories(), "annotations": [obj(1, 1), obj(2, 2)]}
    pairs = read(write_dataset(tmp_path, data), ("detection",))
    assert {outcome(pairs[f"coco-{n}-detection"]) for n in (1, 2)} == {"rendered"}


def test_one_id_naming_one_file_in_two_spellings_is_one_image(tmp_path: Path):
    """instances names `1.png`, person_keypoints `./1.png`: one file, so one image whose pairs draw
    both files' objects (it was rejected as 'give id 1 different file_names')."""
    root = write_dataset(tmp_path, {"images": images(1), "categories": person_categories(),
                                    "annotations": [obj(1, 1)]})
    (root / "keypoints.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "./1.png", "width": W, "height": H}], "categories": person_categories(),
        "annotations": [obj(10, 1, keypoints=keypoints())]}))
    pairs = read(root, files=("ann.json", "keypoints.json"))
    assert {outcome(pairs[f"coco-1-{task}"]) for task in TASKS} == {"rendered"}


def test_a_number_and_a_text_id_naming_one_file_are_refused_for_the_file(tmp_path: Path):
    """`1` and `"1"` are two images to pycocotools; naming one file, the first problem found, the
    shared file, is what both of their rejects say."""
    data = {"images": [*images(1), {"id": "1", "file_name": "1.png", "width": W, "height": H}],
            "categories": categories(1), "annotations": [obj(1, 1), obj(2, "1")]}
    pairs = read(write_dataset(tmp_path, data), ("detection",))
    why = "ann.json images[0] (id 1) and ann.json images[1] (id 1) both name '1.png': give a file one id"
    assert sorted((r.reason, r.detail) for r in pairs.values()) == [
        ("bad_annotation", f"image '1': {why}"), ("bad_annotation", f"image 1: {why}")]


def test_missing_and_unreadable_image_files_are_counted(tmp_path: Path):
    root = write_dataset(tmp_path, {"images": images(1, 2, 3, 4), "categories": categories(1),
                                    "annotations": [obj(n, n) for n in (1, 2, 3, 4)]}, skip=("2.png",))
    (root / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (root / "4.png").unlink()
    (root / "4.png").mkdir()
    pairs = read(root, ("detection",))
    assert outcome(pairs["coco-1-detection"]) == "rendered"
    assert outcome(pairs["coco-2-detection"]) == ("read", "missing_image")  # listed, not on disk
    assert outcome(pairs["coco-3-detection"])[0] == "decode"
    assert outcome(pairs["coco-4-detection"]) == ("read", "unreadable_file")


def test_huge_fields_and_numbers(tmp_path: Path):
    """A 30 MB description or URL is carried nowhere; a number of 5000 digits (Python's int
    parser refuses more than 4300) refuses the file with one line naming it, not a traceback."""
    root = write_dataset(tmp_path, {"images": images(1, flickr_url="x" * 30_000_000), "categories": categories(1),
                                    "annotations": [obj(1, 1, note="y" * 10_000_000)],
                                    "info": {"description": "z" * 10_000_000}})
    item = read(root, ("detection",))["coco-1-detection"]
    assert outcome(item) == "rendered" and len(repr(item)) < 2000
    (root / "ann.json").write_text('{"images": [{"id": ' + "9" * 5000 + ', "file_name": "1.png"}]}')
    load_index.cache_clear()
    with pytest.raises(AnnotationFileError, match=r"ann\.json: holds a number too long to read"):
        CocoSource("coco", str(root), ("ann.json",), ".").units()


def test_keypoints_cropped_away_or_outside_the_image_are_not_drawn_nor_their_limbs(tmp_path: Path):
    """Points of a person where center_crop and pad put them: each labelled point (v 1 or 2) inside
    what the policy shows is its joint's colour at its pixel centre mapped as the policy maps it
    (center_crop: the central 60x60 of the 80x60 image, x 10..70, scaled 160/60; pad: scaled
    160/80, 20 rows of padding above), one outside the image (x -5, x 82) or cropped away is not
    drawn and neither is a limb to it; v 0 is never drawn."""
    points = [0.0] * 51
    placed = {5: (40, 30, 2), 6: (64, 20, 1), 7: (4, 45, 2), 8: (-5, 30, 2), 9: (82, 40, 2), 11: (30, 50, 0),
              12: (50, 50, 2)}  # shoulders, elbows (left one cropped by center_crop), wrists off the image
    for joint, values in placed.items():
        points[3 * joint : 3 * joint + 3] = [float(v) for v in values]
    root = write_dataset(tmp_path, {"images": images(1), "categories": person_categories(),
                                    "annotations": [obj(1, 1, keypoints=points, num_keypoints=6)]})
    pair = read(root, ("pose",))["coco-1-pose"]
    maps = {"center_crop": lambda x, y: ((x + 0.5 - 10) * 160 / H, (y + 0.5) * 160 / H),
            "pad": lambda x, y: ((x + 0.5) * 2, (y + 0.5) * 2 + 20)}
    limbs = dict(zip(COCO17.limbs, limb_colours(COCO17)))
    for policy, to_canvas in maps.items():
        _, target = rendered(pair, policy, 160)
        colours = {tuple(int(c) for c in pixel) for pixel in target.reshape(-1, 3)}
        shown = {j for j, (x, y, v) in placed.items() if v and 0 <= x < W and (policy == "pad" or 10 <= x < 70)}
        assert shown == ({5, 6, 7, 12} if policy == "pad" else {5, 6, 12}), policy
        for joint, (x, y, _) in placed.items():
            assert (joint_colours(COCO17)[joint] in colours) == (joint in shown), (policy, joint)
            if joint in shown:
                cx, cy = to_canvas(x, y)
                assert tuple(int(c) for c in target[int(cy), int(cx)]) == joint_colours(COCO17)[joint], (policy, joint)
        for (a, b), colour in limbs.items():
            assert (colour in colours) == (a in shown and b in shown), (policy, a, b)


def test_keypoints_are_pixel_indices_drawn_on_their_pixels_centres(tmp_path: Path):
    """COCO keypoints name pixels (integers 0..W-1; detectron2 adds 0.5 to reach the pixel's
    centre), unlike its boxes and polygons (edges 0..W). Enlarged 4x, the pixel (x, y) covers
    canvas pixels 4x..4x+3, so the joint's disc is centred on the edge between 4x+1 and 4x+2: its
    drawn pixels' bounding box is symmetric about it (a disc at the index itself would sit 2
    canvas pixels up and left)."""
    x, y = 13, 7
    points = [0.0] * 51
    points[0:3] = [float(x), float(y), 2]  # the nose alone: a disc and no limb
    root = write_dataset(tmp_path, {"images": images(1), "categories": person_categories(),
                                    "annotations": [obj(1, 1, keypoints=points, num_keypoints=1)]},
                         sizes={"1.png": (40, 40)})
    data = json.loads((root / "ann.json").read_text())
    data["images"][0].update(width=40, height=40)
    (root / "ann.json").write_text(json.dumps(data))
    _, target = rendered(read(root, ("pose",))["coco-1-pose"], "squash", 160)
    rows, cols = np.nonzero(np.all(target == joint_colours(COCO17)[0], axis=2))
    assert rows.size
    centre = ((cols.min() + cols.max() + 1) / 2, (rows.min() + rows.max() + 1) / 2)  # pixel-edge coordinates
    assert abs(centre[0] - 4 * (x + 0.5)) <= 0.5 and abs(centre[1] - 4 * (y + 0.5)) <= 0.5, centre


# -- CVAT's rotated rectangles -------------------------------------------------------------------
def cvat_box(ann_id: int, image_id: int, bbox: list[float], rotation) -> dict:
    """A rectangle as CVAT's "COCO 1.0" export writes it: the box before it was turned, and the
    turn (degrees) in `attributes.rotation`; `segmentation: []`."""
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "segmentation": [], "area": bbox[2] * bbox[3],
            "bbox": bbox, "iscrowd": 0, "attributes": {"occluded": False, "rotation": rotation}}


def cvat_corners(bbox: list[float], degrees: float) -> np.ndarray:
    """The corners CVAT shows: the box turned about its centre by `degrees`, clockwise on the
    screen (y points down), as its `RotatedBoxesToPolygons` export turns them."""
    x, y, w, h = bbox
    centre = np.array([x + w / 2, y + h / 2])
    t = np.radians(degrees)
    turn = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return (np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]]) - centre) @ turn.T + centre


def outline_distance(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Each point's distance to the closed outline of `polygon`."""
    distances = []
    for a, b in zip(polygon, np.roll(polygon, -1, axis=0)):
        t = np.clip((points - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
        distances.append(np.hypot(*(points - (a + t[:, None] * (b - a))).T))
    return np.min(distances, axis=0)


@pytest.mark.parametrize("degrees", [90.0, 30.0, 315.5])
def test_cvat_rotated_box_is_drawn_turned_about_its_centre(tmp_path: Path, degrees: float):
    """CVAT exports a rotated rectangle as its unrotated `bbox` plus `attributes.rotation`: it was
    drawn unrotated, a box where the object is not. Drawn pixels now lie on the turned outline
    (on the canvas: squash scales x and y apart, so the rectangle becomes a parallelogram), and
    its corners and sides are drawn."""
    bbox = [20.0, 15.0, 40.0, 20.0]
    root = write_dataset(tmp_path, {"images": images(1), "categories": categories(1),
                                    "annotations": [cvat_box(1, 1, bbox, degrees)]})
    assert_outline_drawn(read(root, ("detection",))["coco-1-detection"], cvat_corners(bbox, degrees))


def assert_outline_drawn(pair: PairRecord, corners: np.ndarray) -> None:
    """Drawn pixels lie on the outline of `corners` (image pixels) as each policy maps it onto the
    canvas (squash scales x and y apart: a rectangle becomes a parallelogram), and its corners
    and the middles of its sides are drawn."""
    for policy, (sx, sy, oy) in {"squash": (64 / W, 64 / H, 0), "pad": (64 / W, 64 / W, 8)}.items():
        on_canvas = corners * [sx, sy] + [0, oy]
        ys, xs = np.nonzero(drawn(pair, policy))
        centres = np.stack([xs + 0.5, ys + 0.5], axis=1)
        assert outline_distance(centres, on_canvas).max() <= 2.0, policy
        for point in np.vstack([on_canvas, (on_canvas + np.roll(on_canvas, -1, axis=0)) / 2]):
            assert np.hypot(*(centres - point).T).min() <= 1.5, (policy, point)


def detectron2_corners(box: list[float]) -> np.ndarray:
    """The corners of detectron2's rotated box (`BoxMode.XYWHA_ABS`: centre, size, angle in degrees
    counter-clockwise), written out as its `Visualizer.draw_rotated_box_with_label` computes them
    (image coordinates: x right, y down)."""
    cx, cy, w, h, angle = box
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    rect = [(-w / 2, h / 2), (-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2)]
    return np.array([(s * yy + c * xx + cx, c * yy - s * xx + cy) for xx, yy in rect])


@pytest.mark.parametrize("angle", [30.0, -75.0, 90.0])
def test_detectron2_rotated_box_is_drawn_at_its_corners(tmp_path: Path, angle: float):
    """A COCO-like file of detectron2's rotated boxes (`bbox` [cx, cy, w, h, angle], XYWHA_ABS,
    with or without `bbox_mode: 4`) was refused as 'bbox is not 4 numbers'. It is now drawn at
    the corners detectron2 draws it (counter-clockwise on the screen, unlike CVAT's turn)."""
    box = [40.0, 30.0, 36.0, 14.0, angle]
    root = write_dataset(tmp_path, {"images": images(1, 2), "categories": categories(1),
                                    "annotations": [obj(1, 1, bbox=box), obj(2, 2, bbox=box, bbox_mode=4)]})
    pairs = read(root, ("detection",))
    assert_outline_drawn(pairs["coco-1-detection"], detectron2_corners(box))
    assert np.array_equal(rendered(pairs["coco-1-detection"])[1], rendered(pairs["coco-2-detection"])[1])


def test_boxes_whose_bbox_mode_says_other_numbers_are_counted(tmp_path: Path):
    """detectron2's dicts dumped to JSON carry `bbox_mode`: a box of XYXY_ABS (1) read as
    [x, y, w, h] drew elsewhere without a word; 4 numbers called rotated, 5 called plain, or a
    rotated box turned again by CVAT's `attributes.rotation` are refused, naming the mode."""
    annotations = [obj(1, 1, bbox=[10.0, 10.0, 30.0, 40.0], bbox_mode=1),
                   obj(2, 2, bbox=[10.0, 10.0, 30.0, 40.0], bbox_mode=4),
                   obj(3, 3, bbox=[40.0, 30.0, 20.0, 10.0, 15.0], bbox_mode=0),
                   obj(4, 4, bbox=[40.0, 30.0, 20.0, 10.0, 15.0], attributes={"rotation": 10.0}),
                   obj(5, 5, bbox=[10.0, 10.0, 30.0, 40.0], bbox_mode="XYWH"),
                   obj(6, 6, bbox=[10.0, 10.0, 30.0], bbox_mode=0),
                   obj(7, 7, bbox=[10.0, 10.0, 30.0, 40.0], bbox_mode=0)]
    root = write_dataset(tmp_path, {"images": images(*range(1, 8)), "categories": categories(1),
                                    "annotations": annotations})
    pairs = read(root, ("detection",))
    both = "read are [x, y, width, height] (XYWH_ABS, 0) and detectron2's rotated [cx, cy, width, height, degrees] " \
           "(XYWHA_ABS, 4)"
    expected = {1: f"bbox of 4 numbers with bbox_mode 1 (XYXY_ABS): {both}",
                2: f"bbox of 4 numbers with bbox_mode 4 (XYWHA_ABS): {both}",
                3: f"bbox of 5 numbers with bbox_mode 0 (XYWH_ABS): {both}",
                4: "bbox is a rotated box (5 numbers) and attributes.rotation turns it again",
                5: f"bbox of 4 numbers with bbox_mode 'XYWH': {both}",
                6: "bbox is not 4 numbers (nor 5: detectron2's rotated box)"}
    for image_id, detail in expected.items():
        reject = pairs[f"coco-{image_id}-detection"]
        assert (reject.reason, reject.detail) == (
            "bad_annotation", f"ann.json annotations[{image_id - 1}] (id {image_id}): {detail}"), image_id
    assert outcome(pairs["coco-7-detection"]) == "rendered"


def test_cvat_rotated_boxes_past_the_image_and_rotations_that_are_no_number(tmp_path: Path):
    """A turned box reaching past the image is clipped to it as a flat box is (its cut edge drawn
    on the image's border, nothing in `pad`'s padding), however far it reaches (1e12: no vertex
    overflows OpenCV's ints); one whose unrotated box overlaps the image but whose turned box
    does not draws nothing (empty_target); a rotation that is no number rejects the pair."""
    annotations = [cvat_box(1, 1, [30.0, 50.0, 40.0, 10.0], 45.0), cvat_box(2, 2, [-30.0, 1.0, 40.0, 2.0], 90.0),
                   cvat_box(3, 3, [10.0, 10.0, 20.0, 20.0], "45"), cvat_box(4, 4, [10.0, 10.0, 20.0, 20.0], None),
                   cvat_box(5, 5, [-1e12, -1e12, 2e12, 2e12], 30.0)]
    root = write_dataset(tmp_path, {"images": images(1, 2, 3, 4, 5), "categories": categories(1),
                                    "annotations": annotations})
    pairs = read(root, ("detection",))
    ys, xs = np.nonzero(drawn(pairs["coco-1-detection"], "pad"))  # the image: rows 8..55
    assert ys.min() >= 8 + 20 and ys.max() == 55
    clipped = cvat_corners([30.0, 50.0, 40.0, 10.0], 45.0) * 64 / W + [0, 8]
    assert ((ys == 55) & (xs > clipped[:, 0].min() + 2) & (xs < clipped[:, 0].max() - 2)).any()  # the cut edge
    whole = drawn(pairs["coco-5-detection"], "pad")  # covers the image: its outline is the image's border
    assert whole[8:10, :].all() and whole[54:56, :].all() and whole[8:56, :2].all() and whole[8:56, 62:].all()
    assert not whole[10:54, 2:62].any() and not whole[:8].any() and not whole[56:].any()
    reject = render_pair(pairs["coco-2-detection"], settings())
    assert (reject.stage, reject.reason, reject.detail) == ("annotation", "empty_target",
                                                            "no box overlaps the 80x60 image")
    for image_id in (3, 4):
        reject = pairs[f"coco-{image_id}-detection"]
        assert (reject.reason, reject.detail) == (
            "bad_annotation", f"ann.json annotations[{image_id - 1}] (id {image_id}): "
                              "attributes.rotation is not a number of degrees")


def test_cvat_box_turned_onto_itself_draws_as_the_unturned_box(tmp_path: Path):
    """A rectangle turned 180 degrees about its centre (or a square 90) is the same rectangle: it
    draws pixel for pixel as the unrotated box does, under every policy, edges on the image's
    border included."""
    rectangle, square = [10.3, 12.7, 30.4, 20.1], [50.0, 20.0, 40.0, 40.0]  # the square reaches past the image
    annotations = [cvat_box(1, 1, rectangle, 0.0), cvat_box(2, 1, square, 0.0),
                   cvat_box(3, 2, rectangle, 180.0), cvat_box(4, 2, square, 90.0)]
    root = write_dataset(tmp_path, {"images": images(1, 2), "categories": categories(1), "annotations": annotations},
                         sizes={"2.png": (W, H)})
    (tmp_path / "2.png").write_bytes((tmp_path / "1.png").read_bytes())
    pairs = read(root, ("detection",))
    for policy in POLICIES:
        assert np.array_equal(rendered(pairs["coco-1-detection"], policy)[1],
                              rendered(pairs["coco-2-detection"], policy)[1]), policy


def test_file_names_written_with_windows_separators(tmp_path: Path):
    """A COCO file written on Windows (LabelMe/X-AnyLabeling converters, hand-made scripts with
    `os.path.join`) names `train2017\\139.png`: that file is in the folder `train2017`. A name
    climbing out that way is `outside_root`; a file whose own name holds a backslash (possible
    on Linux) is still taken as named."""
    root = tmp_path / "data"
    entries = [{"id": 1, "file_name": "train2017\\139.png"},
               {"id": 2, "file_name": "..\\elsewhere.png"},
               {"id": 3, "file_name": "odd\\name.png"}]
    write_dataset(root, {"images": [], "annotations": [], "categories": categories(1)})
    write_dataset(root, {"images": [{"id": 1, "file_name": "train2017/139.png"},
                                    {"id": 3, "file_name": "odd\\name.png"}]})
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "elsewhere.png")
    (root / "ann.json").write_text(json.dumps({"images": entries, "categories": categories(1),
                                               "annotations": [obj(n, n) for n in (1, 2, 3)]}))
    pairs = read(root, ("detection",))
    assert outcome(pairs["coco-1-detection"]) == "rendered"
    assert pairs["coco-1-detection"].image_uri == str(root / "train2017" / "139.png")
    assert pairs["coco-2-detection"].reason == "outside_root"
    assert pairs["coco-3-detection"].image_uri == str(root / "odd\\name.png")
    assert outcome(pairs["coco-3-detection"]) == "rendered"


def test_boxes_past_the_drawing_budget_reject_their_pair(tmp_path: Path):
    """A COCO file may hold millions of boxes for one image (the annotation size cap allows ~5M):
    each is a Python step to draw, a turned one a pass over its window of the canvas (2,000 turned
    boxes over a 256 canvas drew for 11 s), so a hostile file drew for hours. Over `MAX_BOXES`
    boxes, or turned outlines covering more than `OUTLINE_BUDGET_CANVASES` canvases, the pair is
    an `annotation_too_large` reject; at the budget it is drawn."""
    from uvd_pipeline.render_annotated import MAX_BOXES, OUTLINE_BUDGET_CANVASES

    def pair(n: int, **fields):
        anns = [obj(i + 1, 1, bbox=[5.0, 5.0, 70.0, 50.0], **fields) for i in range(n)]
        write_dataset(tmp_path / str(n), {"images": images(1), "annotations": anns, "categories": categories(1)})
        return read(tmp_path / str(n), ("detection",))["coco-1-detection"]

    turned = {"attributes": {"rotation": 30.0}}  # each outline's window is the whole 64 canvas
    assert outcome(pair(OUTLINE_BUDGET_CANVASES, **turned)) == "rendered"
    assert outcome(pair(OUTLINE_BUDGET_CANVASES + 1, **turned)) == ("annotation", "annotation_too_large")
    assert outcome(pair(MAX_BOXES + 1)) == ("annotation", "annotation_too_large")


def test_people_past_the_drawing_budget_reject_their_pose_pair(tmp_path: Path):
    """The pose target has the same budget: its joints and limbs, all its people
    (`MAX_POSE_STEPS`): past it an `annotation_too_large` reject, refused by the source before its
    payload is built."""
    from uvd_pipeline.render_annotated import MAX_POSE_STEPS

    steps = len(COCO17.joints) + len(COCO17.limbs)
    for n, expected in ((100, "rendered"), (MAX_POSE_STEPS // steps + 1, ("read", "annotation_too_large"))):
        anns = [obj(i + 1, 1, keypoints=keypoints(), num_keypoints=17) for i in range(n)]
        root = write_dataset(tmp_path / str(n), {"images": images(1), "categories": person_categories(),
                                                 "annotations": anns})
        assert outcome(read(root, ("pose",))["coco-1-pose"]) == expected, n


def test_a_long_category_skeleton_over_many_people_is_refused_before_its_limbs_are_built(tmp_path: Path,
                                                                                          monkeypatch):
    """A 217 KB person_keypoints file (one category with a 20,000-pair skeleton, 300 people on one
    image) took 31 s and 565 MiB in the source, which checked and copied the skeleton for every
    person, before the renderer refused it as `annotation_too_large`. The category's limbs are
    worked out once and people x limbs judged against `MAX_POSE_STEPS` in the source; a short
    custom skeleton's people still share their category's one limb list and draw (the work is
    counted, not timed: one `person_limbs` a category, where it ran once a person)."""
    from sources import coco

    worked_out = []
    person_limbs = coco.person_limbs
    monkeypatch.setattr(coco, "person_limbs", lambda ann, categories: worked_out.append(ann["category_id"])
                        or person_limbs(ann, categories))
    pairs = [[1 + i % 17, 1 + (i * 7 + 3) % 17] for i in range(20_000)]
    long_skeleton = [{"id": 1, "name": "person", "keypoints": [f"p{i}" for i in range(17)], "skeleton": pairs},
                     {"id": 2, "name": "robot", "keypoints": [f"p{i}" for i in range(17)], "skeleton": pairs[:5]}]
    anns = [obj(k + 1, 1, keypoints=keypoints(), num_keypoints=17) for k in range(300)]
    anns += [obj(1000 + k, 2, 2, keypoints=keypoints(), num_keypoints=17) for k in range(3)]
    root = write_dataset(tmp_path, {"images": images(1, 2), "categories": long_skeleton, "annotations": anns})
    pairs_read = read(root, ("pose",))
    refused = pairs_read["coco-1-pose"]
    assert isinstance(refused, Reject) and refused.reason == "annotation_too_large", refused
    assert "300 people" in refused.detail and "6000000 limbs" in refused.detail
    assert sorted(worked_out) == [1, 2], worked_out  # once a category, not 303 times
    kept = pairs_read["coco-2-pose"]
    assert kept.annotation["limbs"] == [[[a - 1, b - 1] for a, b in pairs[:5]]] * 3
    assert kept.annotation["limbs"][0] is kept.annotation["limbs"][2]  # one list per category
    assert outcome(kept) == "rendered"


def test_many_masks_of_one_image_are_painted_from_their_runs(tmp_path: Path, monkeypatch):
    """Segment Anything's layout (COCO RLE, ~100 and up to ~400 masks of a 1500 x 2250 photo per
    image): every mask was decoded before any was painted, 1.4 GB for such a photo, while the
    memory budget judged only the label map. Now each mask is painted from its runs straight into
    the map; the target is still pycocotools' masks painted largest first. Past the budgets (made
    small here) the pair is an `annotation_too_large` reject: the pixels painted
    (`MAX_MASK_AREA`), the RLE text read (`MAX_MASK_TEXT`)."""
    import tracemalloc

    import uvd_pipeline.render_annotated as render_annotated

    h, w = 300, 400
    rng = np.random.default_rng(5)
    anns, masks = [], []
    for n in range(120):
        mask = np.zeros((h, w), bool)
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        mask[y : y + rng.integers(2, 150), x : x + rng.integers(2, 200)] = True
        anns.append(obj(n + 1, 1, 1 + n % 5, segmentation=fortran_rle(mask, bool(n % 2))))
        masks.append(mask)
    root = write_dataset(tmp_path, {"images": images(1, width=w, height=h), "categories": categories(*range(1, 6)),
                                    "annotations": anns},
                         sizes={"1.png": (w, h)})
    item = read(root, ("segmentation",))["coco-1-segmentation"]
    assert_matches_pycocotools(item, root, 1, h, w)
    tracemalloc.start()
    try:
        rendered(item)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 30 * h * w, peak  # 120 masks held at once: 120 * h * w bytes, and the image, map, canvas
    area = sum(int(mask.sum()) for mask in masks)
    monkeypatch.setattr(render_annotated, "MAX_MASK_AREA", area)
    assert outcome(item) == "rendered"
    monkeypatch.setattr(render_annotated, "MAX_MASK_AREA", area - 1)
    assert outcome(item) == ("annotation", "annotation_too_large")
    monkeypatch.setattr(render_annotated, "MAX_MASK_AREA", area)
    text = sum(len(a["segmentation"]["counts"]) for a in anns)
    monkeypatch.setattr(render_annotated, "MAX_MASK_TEXT", text - 1)
    assert outcome(item) == ("annotation", "annotation_too_large")


def test_an_annotation_file_damaged_after_listing_names_no_folder_of_the_machine(tmp_path: Path):
    """instances_val2017.json rewritten while a build runs (a sync or a copy cut short) fails the
    units read after it: their `unit_failed` reject quoted the AnnotationFileError, which named
    the file by its absolute path, publishing the machine's folders. Now by its base name."""
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.tagged import REJECTS
    from uvd_pipeline.unit_render import list_units, unit_renderers

    root = tmp_path / "secret" / "coco"
    write_dataset(root / "val2017", {"images": images(1), "categories": person_categories(), "annotations": [obj(1, 1)]})
    (root / "annotations").mkdir()
    (root / "val2017" / "ann.json").rename(root / "annotations" / "instances_val2017.json")
    config = parse_config({"version": 1, "output": str(tmp_path / "out"), "image": {"size": 16},
                           "tokenizer": {"enabled": False},
                           "sources": [{"name": "coco", "type": "coco", "path": str(root), "tasks": ["detection"]}]})
    (unit,) = list_units(config)["coco"]
    (root / "annotations" / "instances_val2017.json").write_text('{"images": [{"id": 1, "file_na')
    outputs, _ = unit_renderers(config)["coco"].render(unit)
    (reject,) = [item.as_row() for tag, item in outputs if tag == REJECTS]
    assert reject["reason"] == "unit_failed" and "is not valid JSON" in reject["detail"], reject
    assert "secret" not in reject["detail"] and "instances_val2017.json" in reject["detail"], reject


def test_an_image_id_written_as_a_text_and_as_a_number_is_refused_naming_the_clash(tmp_path: Path):
    """`"id": "1"` beside `"id": 1` in one file: pycocotools keys its dicts by the raw value, so
    these are two images to it, but both made the key `coco-1`: they met only at assembly as a
    late `duplicate_key`. torchvision's CocoDetection and Detectron2 sort the ids (a TypeError on
    such a file), so which image an id means is the file's mistake: every pair of both ids is
    rejected when the file is indexed, naming the two entries; the other images go on. An
    annotation's `image_id: "3"` beside image 3 clashes the same way. Each id is a reject of its
    own (two images refused, two in the counts): the second under its key with a part made of its
    raw value (`str '1'`), never one another id's key can make."""
    from pycocotools.coco import COCO

    data = {"images": [*images(1), {"id": "1", "file_name": "one.png", "width": W, "height": H}, *images(2, 3)],
            "categories": categories(1),
            "annotations": [obj(1, 1), obj(2, "1"), obj(3, 2), obj(4, 3), obj(5, "3")]}
    root = write_dataset(tmp_path, data)
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCO(str(root / "ann.json"))
    assert set(reference.imgs) == {1, "1", 2, 3} and reference.getAnnIds(imgIds=["1"]) == [2]  # two images there
    pairs = read(root, ("detection",))  # also asserts that no key is made twice
    assert sorted(pairs) == ["coco-1-detection", "coco-1-str_1_98274063-detection", "coco-2-detection",
                             "coco-3-detection", "coco-3-str_3_a53a511c-detection"]
    assert outcome(pairs["coco-2-detection"]) == "rendered"
    assert (pairs["coco-1-str_1_98274063-detection"].reason, pairs["coco-1-str_1_98274063-detection"].detail) == (
        "bad_annotation", "image '1': ann.json images[0] has id 1 (a number) and ann.json images[1] has id '1' "
                          "(a text): pycocotools keeps them apart, torchvision and Detectron2 cannot sort them; "
                          "write every id as one type")
    assert (pairs["coco-1-detection"].reason, pairs["coco-1-detection"].detail) == (
        "bad_annotation", "image 1: ann.json images[0] has id 1 (a number) and ann.json images[1] has id '1' (a text): "
                          "pycocotools keeps them apart, torchvision and Detectron2 cannot sort them; write every id "
                          "as one type")
    assert (pairs["coco-3-detection"].reason, pairs["coco-3-detection"].detail) == (
        "bad_annotation", "image 3: ann.json images[3] has id 3 (a number) and ann.json annotations[4] has image_id '3' "
                          "(a text): pycocotools keeps them apart, torchvision and Detectron2 cannot sort them; "
                          "write every id as one type")
    nfd = {"images": [{"id": "caf\u00e9", "file_name": "a.png", "width": W, "height": H},
                      {"id": "cafe\u0301", "file_name": "b.png", "width": W, "height": H}],
           "categories": categories(1), "annotations": [obj(1, "caf\u00e9"), obj(2, "cafe\u0301")]}
    twins = read(write_dataset(tmp_path / "nfd", nfd), ("detection",)).values()  # one text, two Unicode forms
    assert [(r.reason, r.detail.endswith("one text in two Unicode forms (NFC and NFD); write it in one"))
            for r in twins] == [("bad_annotation", True)] * 2


def test_too_many_open_files_reading_the_annotation_file_is_the_machines_error(tmp_path: Path):
    """A COCO annotation file that could not be opened for want of a file descriptor (a real EMFILE:
    RLIMIT_NOFILE lowered to what the process holds) was `AnnotationFileError` ('cannot be read
    (OSError)'), and the unit's `unit_failed` reject, committed for good: it is this machine's
    `MachineError`; with files to spare the unit's pairs are read."""
    from budget_jobs import no_file_to_spare

    from sources.records import MachineError

    root = write_dataset(tmp_path, {"images": images(1), "categories": categories(3), "annotations": [obj(1, 1, 3)]})
    source = CocoSource("coco", str(root), ("ann.json",), ".", ("segmentation",))
    (unit,) = source.units()
    load_index.cache_clear()  # another worker's process: the index not parsed there yet
    with no_file_to_spare(), pytest.raises(MachineError, match=r"reading ann\.json: \[Errno 24\]"):
        list(source.read(unit))
    assert [type(item).__name__ for item in source.read(unit)] == ["PairRecord"]


def test_annotation_files_past_the_index_memory_budget_stop_the_build_before_any_parse(tmp_path: Path, monkeypatch):
    """A COCO file's parse takes ~9 times its size, in every worker process: within the 512 MB
    cap of one file a worker could need ~4 GB, and no file list was judged at all. `list_units`
    (before any worker) now weighs the files' sizes against `index_memory_mb`, naming the files,
    the estimate and the fix, before anything is parsed; under the budget the units are listed.
    The field says how the build runs, not what it outputs: no value of it changes the config
    hash, so a build resumed with a higher limit on a bigger machine is the same configuration."""
    import sources.coco as coco
    from uvd_pipeline.config import ConfigError, parse_config
    from uvd_pipeline.unit_render import list_units

    root = write_dataset(tmp_path / "data", {"images": images(1), "categories": categories(1),
                                              "annotations": [obj(1, 1)]})
    text = (root / "ann.json").read_text()
    (root / "ann.json").write_text(text[:-1] + ',"extra":[' + "0," * (2 << 20) + "0]}")  # 4 MiB of 2M+1 numbers

    def config(**fields):
        return parse_config({"output": str(tmp_path / "out"), "sources": [
            {"name": "s", "type": "coco", "path": str(root), "annotation_files": ["ann.json"], "images_dir": ".",
             **fields}]})

    def never_parsed(uri, **_):
        raise AssertionError(f"{uri} parsed before its size was judged")

    load_index.cache_clear()
    with monkeypatch.context() as patch:
        patch.setattr(coco, "load_json", never_parsed)
        with pytest.raises(ConfigError) as info:
            list_units(config(index_memory_mb=64))
    assert str(info.value) == (
        "sources[0].index_memory_mb (s): COCO: ann.json (4 MiB) would take about 89 MiB parsed (22.2x their size: "
        "the objects, strings and numbers they hold) in every worker process, over index_memory_mb: 64; raise it "
        "where each worker has that memory, or split the images over sources with smaller annotation files")
    assert len(list_units(config(index_memory_mb=89))["s"]) == 1
    assert config().sources[0].index_memory_mb == coco.INDEX_MEMORY_MB
    assert config().content_hash() == config(index_memory_mb=coco.INDEX_MEMORY_MB).content_hash() == config(
        index_memory_mb=89).content_hash()


def judged(folder: Path) -> float:
    """What `check_index_memory` judges `folder`'s ann.json will take parsed, per byte of the file
    (kept for the parse cache's weight: `coco_memory.judged`)."""
    from sources.annotation_files import MAX_ANNOTATION_BYTES
    from sources.coco_memory import judged as judged_counts

    return judged_counts(str(folder / "ann.json"), MAX_ANNOTATION_BYTES).parsed_bytes() / (folder / "ann.json").stat().st_size


@pytest.mark.parametrize("filler", ["[]", "{}"])
def test_a_file_of_empty_containers_is_judged_by_what_it_holds(tmp_path: Path, filler: str):
    """The index was judged as 9 times its files' size: an image with a field of empty lists or
    objects (`[],`: 3 bytes of JSON, a 56-byte list and its slot parsed) peaked at 25.1x (a 40 MiB
    file judged 360 MiB took 1003 MiB more), and at the default budget a 512 MiB file could take
    ~12.5 GB in every worker. The files are judged now by what they hold (`coco_memory`): their
    parse peaks within the judgment, and a 3 MiB file of them, judged 27 MiB before (under the
    least budget, 64 MiB), stops the build before any parse, naming `index_memory_mb`."""
    from uvd_pipeline.config import ConfigError, parse_config
    from uvd_pipeline.unit_render import list_units

    def with_extra(count: int) -> dict:
        return {"images": [{"id": 1, "file_name": "1.jpg", "width": 640, "height": 480,
                            "extra": [json.loads(filler)] * count}],
                "categories": categories(1), "annotations": [obj(1, 1)]}

    small, root = tmp_path / "small", tmp_path / "data"
    small.mkdir()
    root.mkdir()
    peak = parse_peak(small, with_extra(1 << 16), 1)  # writes ann.json compact, as json.dump(separators=(",", ":"))
    assert 9 * 1.1 < peak <= judged(small)  # tracemalloc reads 6-10% below the peak RSS
    (root / "ann.json").write_text(json.dumps(with_extra(1 << 20), separators=(",", ":")))
    size = (root / "ann.json").stat().st_size
    assert 9 * size < 64 << 20 < peak * size <= judged(root) * size
    config = parse_config({"output": str(tmp_path / "out"), "sources": [
        {"name": "s", "type": "coco", "path": str(root), "annotation_files": ["ann.json"], "images_dir": ".",
         "index_memory_mb": 64}]})
    with pytest.raises(ConfigError, match=r"^sources\[0\]\.index_memory_mb \(s\): COCO: ann\.json \(3 MiB\) would take "
                                          r"about \d+ MiB parsed"):
        list_units(config)


def parse_peak(folder: Path, data: dict, count: int) -> float:
    """`data` written as compact JSON (as `json.dump(..., separators=(",", ":"))` and Datumaro write
    it), indexed: the peak of Python's allocations (`tracemalloc`) per byte of the file. Judged
    first, as `check_index_memory` judges it before any parse: the parse's peak, not the scan's
    (a step's buffer, `coco_memory.SCAN_STEP`, freed before the parse)."""
    import tracemalloc

    (folder / "ann.json").write_text(json.dumps(data, separators=(",", ":")))
    load_index.cache_clear()
    judged(folder)
    tracemalloc.start()
    try:
        index = load_index((str(folder / "ann.json"),), str(folder))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sum(map(len, index.annotations.values())) == count
    return peak / (folder / "ann.json").stat().st_size


def test_a_file_of_many_small_boxes_parses_within_the_judged_memory(tmp_path: Path):
    """A file of many small boxes written without spaces (as `json.dump(..., separators=(",", ":"))`
    writes one) peaked at 11.5x its size, past the judgment of 9x: each annotation was copied while
    the parsed file stood, the file's bytes kept beside its text. Its parse now peaks within what
    the file is judged to hold (`coco_memory`) by 10% (Python's allocations, `tracemalloc`, read
    6-10% below the peak RSS; 8.2x while the first index and image id of each annotation id were
    held as a tuple), a judgment of about 11x (7.6x peak RSS for 36 MiB of them)."""
    rng = np.random.default_rng(3)
    count = 4000
    boxes = rng.integers(0, 600, (count, 2)).tolist()
    data = {"images": [{"id": i + 1, "file_name": f"{i + 1}.jpg", "width": 640, "height": 480} for i in range(count // 20)],
            "annotations": [{"id": i + 1, "image_id": i // 20 + 1, "category_id": 1 + i % 80, "bbox": [x, y, 12, 10],
                             "area": 120, "iscrowd": 0} for i, (x, y) in enumerate(boxes)],
            "categories": categories(*range(1, 81))}
    assert parse_peak(tmp_path, data, count) <= judged(tmp_path) / 1.1
    assert judged(tmp_path) < 12


def tall_mask_counts(rng: np.random.Generator, h: int = 1080, w: int = 1920) -> list[int]:
    """Uncompressed RLE runs (column by column, as pycocotools counts them) of an ellipse 300-800
    pixels tall in a full-HD frame: nearly every run a number of 3 digits."""
    cx, cy, rx, ry = (int(v) for v in (rng.integers(300, 1600), rng.integers(420, 660), rng.integers(40, 300),
                                       rng.integers(150, 400)))
    xs = np.arange(cx - rx + 1, cx + rx)
    half = np.floor(ry * np.sqrt(1 - ((xs - cx) / rx) ** 2)).astype(np.int64)
    starts, ends = xs * h + np.clip(cy - half, 0, h), xs * h + np.clip(cy + half + 1, 0, h)
    return np.diff(np.concatenate([[0], np.stack([starts, ends], 1).ravel(), [h * w]])).tolist()


def test_a_cvat_export_of_tall_brush_masks_parses_well_within_the_judged_memory(tmp_path: Path):
    """CVAT's "COCO 1.0" export (Datumaro: compact JSON) writes a brush mask as uncompressed RLE
    `counts`: runs of 3 digits, each a 32-byte int and an 8-byte list slot for 4 characters,
    peaked at 10.2x the file's size (RSS), past the judgment of 9x: a 680 MB export passed the
    default `index_memory_mb` and took ~7 GB in every worker. The counts are kept as arrays, and
    judged as arrays (`coco_memory`: about 4.5x; 2.5x peak RSS for 19 MiB of them). `tracemalloc`
    reads 6-10% below the process's peak RSS, hence the margin."""
    rng = np.random.default_rng(5)
    masks = [tall_mask_counts(rng) for _ in range(8)]
    count = 200
    data = {"images": [{"id": i + 1, "file_name": f"frame_{i:06d}.jpg", "width": 1920, "height": 1080}
                       for i in range(count // 10)],
            "annotations": [{"id": i + 1, "image_id": i // 10 + 1, "category_id": 1 + i % 3, "iscrowd": 1,
                             "segmentation": {"counts": masks[i % len(masks)], "size": [1080, 1920]},
                             "area": 1.0, "bbox": [1.0, 2.0, 3.0, 4.0], "attributes": {"occluded": False}}
                            for i in range(count)],
            "categories": categories(1, 2, 3)}
    assert parse_peak(tmp_path, data, count) <= judged(tmp_path) / 1.5
    assert judged(tmp_path) < 5


def roboflow_data(count: int, seed: int = 2) -> dict:
    """A Roboflow COCO export's shape: whole-pixel coordinates written as ints beside half-pixel
    floats in one list (`"bbox": [197, 199, 112.5, 87]`), which `compact_lists` leaves a list."""
    rnd = random.Random(seed)

    def v() -> float:
        x = rnd.randint(0, 4000)
        return x + 0.5 if rnd.random() < 0.05 else x

    return {"images": [{"id": i, "file_name": f"IMG_{i:04d}_jpg.rf.{rnd.getrandbits(128):032x}.jpg",
                        "width": 1280, "height": 720} for i in range(count // 4)],
            "annotations": [{"id": i, "image_id": i // 4, "category_id": 1, "bbox": [v(), v(), v(), v()], "area": 10.5,
                             "segmentation": [[v() for _ in range(2 * rnd.randint(8, 60))]], "iscrowd": 0}
                            for i in range(count)],
            "categories": categories(1)}


def test_number_lists_of_ints_beside_floats_are_judged_as_the_lists_they_stay(tmp_path: Path):
    """A Roboflow export writes whole pixels as ints beside half pixels as floats in one polygon or
    box: `compact_lists` keeps such a list a list (an int and its slot: ~40 bytes a number), but the
    scan charged each of its numbers as an 8-byte array item: judged 0.74-0.78 of the parse's peak
    RSS (a 136 MiB file judged 695 MiB peaked 896). Such a span is charged as the list it stays."""
    data = roboflow_data(2000)
    assert parse_peak(tmp_path, data, 2000) <= judged(tmp_path)
    plain = tmp_path / "ints"
    plain.mkdir()
    for ann in data["annotations"]:  # the same file, every number an int: arrays, judged so
        ann["bbox"], ann["segmentation"] = [int(x) for x in ann["bbox"]], [[int(x) for x in ann["segmentation"][0]]]
    assert parse_peak(plain, data, 2000) <= judged(plain) < judged(tmp_path) / 1.5


@pytest.mark.parametrize("extra, more", [("\ufeff", 0.0), ("\U0001F600", 3.0)], ids=["bom", "astral"])
def test_text_takes_what_its_characters_take_beside_the_files_bytes(tmp_path: Path, extra: str, more: float):
    """The text term was twice the file's size at the widest character's bytes: a UTF-8 BOM (as
    Windows tools write one, `utf-8-sig`), which the decoder skips, set 2 bytes a character (7.28x
    against 5.28x), and one emoji 4 bytes a character for the file's bytes too (11.28x against a
    peak of 6.32x: COCO train2017's instances and keypoints with one emoji refused at the default
    budget). The file's bytes are charged once beside its text: one emoji adds 3 bytes a byte."""
    plain, marked = tmp_path / "plain", tmp_path / "marked"
    data = {"images": images(*range(1, 201)), "categories": categories(1),
            "annotations": [obj(i, i, caption="a person on a bike") for i in range(1, 201)]}
    for folder in (plain, marked):
        folder.mkdir()
    parse_peak(plain, data, 200)
    if extra == "\ufeff":
        (marked / "ann.json").write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8-sig")
    else:
        data["annotations"][0]["caption"] = "a person on a bike " + extra
        (marked / "ann.json").write_text(json.dumps(data, separators=(",", ":"), ensure_ascii=False))
    load_index.cache_clear()
    assert sum(map(len, load_index((str(marked / "ann.json"),), str(marked)).annotations.values())) == 200
    assert judged(marked) == pytest.approx(judged(plain) + more, abs=0.05)


@pytest.mark.parametrize("values, compact", [
    ([0, 612, 468, 3], True), ([1.5, 2.0, -0.0, float("inf")], True), ([2**31, 1], True), ([], False),
    ([1, 2.5], False), ([True, 0], False), ([1, "2"], False), ([2**64, 1], False), ([None, 1], False)],
    ids=["ints", "floats", "int64", "empty", "int-beside-float", "bool", "text", "past-int64", "null"])
def test_compacted_lists_come_back_as_the_values_parsed(values: list, compact: bool):
    """The index keeps segmentation and keypoint lists as arrays (`compact_lists`); what the checks
    and payloads read (`expanded`) is the list parsed, each value of its type: a bool is no number
    (`as_int`), and `12` beside `12.0` would be another text in a record."""
    from array import array

    from sources.coco import compact_lists, expanded

    for entry in ({"id": 1, "segmentation": [values, [1.0] * 6], "keypoints": values, "bbox": [1, 2, 3, 4]},
                  {"id": 2, "segmentation": {"size": [4, 5], "counts": values}, "iscrowd": 1}):
        text = json.dumps(entry)
        indexed = json.loads(text, object_hook=compact_lists)
        held = indexed["segmentation"]["counts"] if "iscrowd" in indexed else indexed["segmentation"][0]
        assert isinstance(held, array) == compact
        assert repr(expanded(indexed)) == repr(json.loads(text))
        assert repr(indexed) == repr(json.loads(text, object_hook=compact_lists))  # left compact


def test_the_index_memory_limit_leaves_only_coco_sources_of_a_mixed_list_in_the_hash_unchanged(tmp_path: Path):
    """The hash leaves `index_memory_mb` out of every source of the list that has it, and only it:
    another source's fields beside it still change the hash."""
    from uvd_pipeline.config import parse_config

    def config(memory: int, folder: str = "b"):
        return parse_config({"output": str(tmp_path / "out"), "sources": [
            {"name": "a", "type": "coco", "path": str(tmp_path / "a"), "index_memory_mb": memory},
            {"name": "b", "type": "laion", "path": str(tmp_path / folder)}]})

    assert config(64).content_hash() == config(99_999).content_hash() != config(64, "c").content_hash()


def test_the_parse_cache_keeps_large_indexes_of_two_sources_one_at_a_time(tmp_path: Path, monkeypatch):
    """Four parses were kept whatever their size: two sources of 102 MB files held 1.2 GB in one
    worker. Parses are weighed by what their files hold (`coco_memory`, as `check_index_memory`
    judges them) against `CACHED_INDEX_BYTES`: two that together pass it are not kept side by
    side, two small ones are."""
    import sources.coco as coco
    from sources import coco_memory

    roots = [write_dataset(tmp_path / name, {"images": images(1, extra=[{}] * 512), "categories": categories(1),
                                             "annotations": [obj(1, 1)]}) for name in ("a", "b")]
    uris = [((str(root / "ann.json"),), str(root)) for root in roots]
    load_index.cache_clear()
    first = load_index(*uris[0])
    load_index(*uris[1])
    assert load_index(*uris[0]) is first  # small files: both kept
    # each `{}` judged to take so much that each file is judged past half the bound
    monkeypatch.setattr(coco_memory, "EMPTY_DICT_BYTES", coco.CACHED_INDEX_BYTES // 2 // 512 + 1)
    load_index.cache_clear()
    first = load_index(*uris[0])
    load_index(*uris[1])
    assert load_index(*uris[0]) is not first  # parsed again: the other source's index took its room


def test_a_kept_index_of_empty_containers_counts_what_it_holds(tmp_path: Path):
    """The parse cache weighed a kept index as 9 times its files' size (`CACHED_INDEX_FILE_BYTES`,
    113 MiB of files for ~1 GiB parsed): an image with a field of empty objects holds ~24x its
    file, so four sources of 16 MiB such files held 1541 MiB in one worker. A kept index now
    counts what `check_index_memory` judges its files hold once parsed (its objects, not the text
    parsed), at least what it holds (`tracemalloc`)."""
    import tracemalloc

    from sources.annotation_files import MAX_ANNOTATION_BYTES
    from sources.coco_memory import scan

    root = tmp_path / "data"
    root.mkdir()
    data = {"images": [{"id": 1, "file_name": "1.jpg", "width": 640, "height": 480, "extra": [{}] * (1 << 16)}],
            "categories": categories(1), "annotations": [obj(1, 1)]}
    (root / "ann.json").write_text(json.dumps(data, separators=(",", ":")))
    uris = (str(root / "ann.json"),)
    load_index.cache_clear()
    tracemalloc.start()
    try:
        index = load_index(uris, str(root))
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(index.images[1]["extra"]) == 1 << 16
    size = (root / "ann.json").stat().st_size
    assert held > 20 * size
    assert held <= load_index.weight(uris, str(root)) == scan(uris[0], MAX_ANNOTATION_BYTES).held_bytes()


def test_kept_indexes_count_what_they_hold_not_their_parses_peak(tmp_path: Path):
    """The parse cache kept each index at its parse's peak (the file's text beside its objects,
    the text freed once parsed): two 50.8 MiB instances files of alternating units were parsed
    again at every switch, 6 of 6 (22.9 s against 6.6 s). Room is made for the peak before a
    parse, and a kept index counts what it holds: under a bound (here scaled to the files) of one
    index's peak beside the other's held index, each is parsed once."""
    from collections import Counter

    import sources.coco as coco
    from sources import fsio

    roots = [write_dataset(tmp_path / name, {"images": images(*range(1, 301)), "categories": categories(1),
                                             "annotations": [obj(i, i) for i in range(1, 301)]}) for name in "ab"]
    uris = [(str(root / "ann.json"),) for root in roots]
    (peak, held), weights = (coco._judged_bytes(u, fsio._states(u)) for u in uris)
    assert weights == (peak, held) and held < peak
    parses: Counter = Counter()
    cached = fsio.cached_input(maxsize=4, max_bytes=held + peak, weigh_files=coco._judged_bytes)(
        lambda names, folder: (parses.update(names), load_index.__wrapped__(names, folder))[1])
    for step in range(6):
        assert len(cached(uris[step % 2], str(roots[step % 2])).images) == 300
    assert sorted(parses.values()) == [1, 1]
    assert cached.weight(uris[0], str(roots[0])) == held < peak


def test_each_annotation_file_is_scanned_once_a_build_not_once_a_unit(tmp_path: Path, monkeypatch):
    """The parse cache weighs an index by a scan of its files (`coco_memory`): that scan is the one
    `check_index_memory` made, kept by the files' state, so a build opens each annotation file
    twice (its scan, its parse) whatever its units; a parse made again (another worker's) scans
    nothing more, and a file rewritten since is scanned again."""
    import sources.coco as coco
    from sources import fsio

    root = write_dataset(tmp_path / "data", {"images": images(1, 2, 3), "categories": categories(1),
                                              "annotations": [obj(1, 1), obj(2, 2), obj(3, 3)]})
    ann = str(root / "ann.json")
    opened: list[str] = []
    real = fsio.open_file
    monkeypatch.setattr(fsio, "open_file", lambda uri, *a, **k: (opened.append(uri), real(uri, *a, **k))[1])
    monkeypatch.setattr(coco, "IMAGES_PER_UNIT", 1)
    load_index.cache_clear()
    source = CocoSource("coco", str(root), ("ann.json",), ".", ("detection",))
    units = source.units()
    items = [item for unit in units for item in source.read(unit)]
    assert len(units) == 3 and sorted(item.lineage["image_id"] for item in items) == [1, 2, 3]
    assert opened.count(ann) == 2
    load_index.cache_clear()
    assert [item.lineage["image_id"] for item in source.read(units[0])] == [1]
    assert opened.count(ann) == 3  # parsed again, not scanned again
    (root / "ann.json").write_text((root / "ann.json").read_text() + " ")
    assert [item.lineage["image_id"] for item in source.read(units[1])] == [2]
    assert opened.count(ann) == 5  # rewritten: scanned and parsed again


def test_boxes_are_held_compact_and_read_back_as_pycocotools_reads_them(tmp_path: Path):
    """A detection file of many small boxes (COCO train2017's instances, an Objects365 export: floats
    of two decimals) keeps each `bbox` as an array while it is parsed (`compact_lists`): 96 bytes
    for 4 floats, not a list's 184. What the checks and payloads read (`expanded`) is what
    pycocotools reads, value for value and type for type (int boxes, float boxes, a box of ints
    beside floats); the parse peaks at 6.8x the file's size (`tracemalloc`), 7.5x with boxes as lists."""
    from array import array

    from pycocotools.coco import COCO

    from sources.coco import expanded

    rng = np.random.default_rng(3)
    count = 4000
    xy = rng.uniform(0, 600, (count, 2)).round(2).tolist()
    data = {"images": [{"id": i + 1, "file_name": f"{i + 1}.jpg", "width": 640, "height": 480}
                       for i in range(count // 20)],
            "annotations": [{"id": i + 1, "image_id": i // 20 + 1, "category_id": 1 + i % 80,
                             "bbox": [x, y, 12.5, 10.25], "area": 128.13, "iscrowd": 0} for i, (x, y) in enumerate(xy)],
            "categories": categories(*range(1, 81))}
    data["annotations"][0]["bbox"] = [10, 20, 30, 40]
    data["annotations"][1]["bbox"] = [10, 20.5, 30, 40]
    assert parse_peak(tmp_path, data, count) <= 7.1
    index = load_index((str(tmp_path / "ann.json"),), str(tmp_path))
    reference = COCO(str(tmp_path / "ann.json"))
    held = {a["id"]: a for anns in index.annotations.values() for a in anns}
    assert isinstance(held[1]["bbox"], array) and isinstance(held[3]["bbox"], array)
    assert isinstance(held[2]["bbox"], list)  # ints beside floats: kept as parsed
    for ann_id, ann in held.items():
        assert repr(expanded(ann)["bbox"]) == repr(reference.anns[ann_id]["bbox"]), ann_id


# -- LVIS ------------------------------------------------------------------------------------------
def lvis_image(image_id: int, folder: str, **fields) -> dict:
    """An `images` entry as LVIS v1 writes it: no `file_name`, the picture named by its `coco_url`."""
    return {"date_captured": "2013-11-14 11:18:45", "neg_category_ids": [12, 1200], "id": image_id, "license": 3,
            "height": H, "width": W, "flickr_url": f"http://farm4.staticflickr.com/1/{image_id}_x_z.jpg",
            "coco_url": f"http://images.cocodataset.org/{folder}/{image_id:012d}.jpg",
            "not_exhaustive_category_ids": [1203], **fields}


def test_lvis_v1_images_named_by_their_coco_url_are_read_from_cocos_folders(tmp_path: Path):
    """LVIS v1's `lvis_v1_val.json` names no `file_name`: each image is its `coco_url`'s
    `<train2017|val2017>/<name>` under COCO's folder (as detectron2's and MMDetection's LVIS readers
    take it; its val images come from both). Every pair was a `bad_annotation` ('file_name is not a
    text'). Its 1,203 categories keep their ids; its objects carry no `iscrowd`; the image's
    not-exhaustive and negative category ids ride in the lineage. A `file_name` of "" defers to the
    coco_url too, whose query and fragment are no part of the file's name."""
    lvis = {"info": {}, "licenses": [],
            "images": [lvis_image(391895, "train2017"), lvis_image(397133, "val2017"),
                       lvis_image(5, "val2017", coco_url="000000000005.jpg"), {"id": 6, "height": H, "width": W},
                       lvis_image(7, "val2017", neg_category_ids=list(range(1, 1204))),
                       lvis_image(8, "val2017", file_name="", not_exhaustive_category_ids=[1203, "3"],
                                  coco_url="https://images.cocodataset.org/val2017/000000000008.jpg?raw=1&x=/y#frag")],
            "categories": [{"frequency": "f", "synset": f"s{i}.n.01", "synonyms": [f"s{i}"], "def": "", "id": i,
                            "name": f"s{i}", "image_count": 1, "instance_count": 1} for i in range(1, 1204)],
            "annotations": [{"area": 400.0, "id": n, "image_id": image_id, "category_id": category,
                             "bbox": [10.0, 10.0, 20.0, 30.0],
                             "segmentation": [[10.0, 10.0, 30.0, 10.0, 30.0, 40.0, 10.0, 40.0]]}
                            for n, (image_id, category) in enumerate(((391895, 1203), (397133, 3), (5, 3), (6, 3), (7, 3),
                                                                      (8, 3)), 1)]}
    for folder, name in (("train2017", "000000391895.jpg"), ("val2017", "000000397133.jpg"), ("val2017", "000000000008.jpg")):
        write_dataset(tmp_path / folder, {"images": [{"file_name": name}]})
    root = write_dataset(tmp_path, lvis, skip=("",))
    pairs = read(root, ("detection", "segmentation"))
    train = pairs["coco-391895-segmentation"]
    assert train.image_uri == str(root / "train2017" / "000000391895.jpg")
    assert train.lineage == {"image_id": 391895, "file": "train2017/000000391895.jpg",
                             "not_exhaustive_category_ids": [1203], "neg_category_ids": [12, 1200]}
    assert_matches_pycocotools(train, root, 391895)
    assert pairs["coco-397133-detection"].image_uri == str(root / "val2017" / "000000397133.jpg")
    assert pairs["coco-397133-detection"].annotation["boxes"] == [[10.0, 10.0, 20.0, 30.0]]
    assert outcome(pairs["coco-397133-detection"]) == "rendered"
    assert pairs["coco-7-detection"].lineage["neg_category_ids"] == {  # past a lineage value's budget
        "truncated": "not a list of at most 512 category ids (4096 bytes as JSON): left out"}
    # file_name "" (as some converters write): the coco_url's path names the file, its query and fragment not
    queried = pairs["coco-8-detection"]
    assert queried.image_uri == str(root / "val2017" / "000000000008.jpg") and outcome(queried) == "rendered", queried
    assert queried.lineage == {"image_id": 8, "file": "val2017/000000000008.jpg", "neg_category_ids": [12, 1200],
                               "not_exhaustive_category_ids": {  # a text among the ids
                                   "truncated": "not a list of at most 512 category ids (4096 bytes as JSON): left out"}}
    for image_id in (5, 6):  # a coco_url without its folder, no name at all: counted, saying why
        reject = pairs[f"coco-{image_id}-detection"]
        assert (reject.reason, "coco_url" in reject.detail) == ("bad_annotation", True), reject


@pytest.mark.parametrize("coco_url, refusal", [
    ("data:image/jpeg;base64," + "/9j/4AAQSkZJRgABAQ" * 200, "its coco_url is a 'data' URL"),
    ("file:///srv/coco/val2017/000000000001.jpg", "its coco_url is a 'file' URL"),
    ("ftp://images.cocodataset.org/val2017/000000000001.jpg", "its coco_url is a 'ftp' URL"),
    ("http://[::1/val2017/000000000001.jpg", "its coco_url is no URL"),  # an IPv6 host left open
    ("s3://coco/val2017/000000000001.jpg", None), ("gs://coco/val2017/000000000001.jpg", None),
], ids=["data", "file", "ftp", "open-ipv6", "s3", "gs"])
def test_lvis_coco_urls_of_other_schemes_name_no_file(tmp_path: Path, coco_url: str, refusal: str | None):
    """An LVIS-style entry's coco_url names its file by its last folder and file where it is an http,
    https, s3 or gs URL (or a path): a `data:` URI's base64 became the file's name (in its lineage
    and reject detail, whatever its size), a `file:` or `ftp:` URL a file under the images folder,
    and an IPv6 host left open stopped the build (urlsplit's ValueError). Each is `bad_annotation`,
    naming only the scheme."""
    write_dataset(tmp_path / "val2017", {"images": [{"file_name": "000000000001.jpg"}]})
    root = write_dataset(tmp_path, {"images": [lvis_image(1, "val2017", coco_url=coco_url)], "categories": categories(1),
                                    "annotations": [obj(0, 1, 1)]})
    item = read(root, ("detection",))["coco-1-detection"]
    if refusal is None:
        assert item.image_uri == str(root / "val2017" / "000000000001.jpg"), item
        return
    assert isinstance(item, Reject) and item.reason == "bad_annotation", item
    assert refusal in item.detail and "base64" not in item.detail + item.input and len(item.detail) < 200, item.detail


def test_lvis_category_lists_are_kept_within_a_lineage_values_bytes():
    """The lineage keeps up to 512 ids a list, which was meant as ~4 KiB of JSON; ids of 4,299 digits
    (as many as json.loads parses) made it 2.2 MB an image, held until its unit ends. A list over
    4,096 bytes as JSON is left out, marked; LVIS's own (a few dozen ids under 1,204) are kept."""
    from sources.coco import lvis_lineage

    lvis = lvis_image(1, "val2017", neg_category_ids=[int("9" * 4299)] * 512, not_exhaustive_category_ids=[1203] * 512)
    kept = lvis_lineage(lvis)
    assert kept["neg_category_ids"] == {"truncated": "not a list of at most 512 category ids (4096 bytes as JSON): "
                                                     "left out"}
    assert kept["not_exhaustive_category_ids"] == [1203] * 512 and len(json.dumps(kept)) < 4200
    at_most = [100000] * 512  # 4,096 bytes as JSON, kept; one digit more is past it
    assert len(json.dumps(at_most)) == 4096 and lvis_lineage({"neg_category_ids": at_most}) == {"neg_category_ids": at_most}
    assert "truncated" in lvis_lineage({"neg_category_ids": [1000000] + at_most[1:]})["neg_category_ids"]


@pytest.mark.parametrize("name", ["/data/upload/3/5e0c7a8f-cat.jpg", "/data/local-files/?d=photos/cat.jpg"])
def test_label_studio_server_paths_are_counted_naming_the_export_that_holds_the_images(tmp_path: Path, name: str):
    """Label Studio's COCO export without its images names each by the server's path (an upload, or
    a local-storage file): each pair was `outside_root` saying only that the name is absolute,
    which sent users looking for the folder on their own disk; it now names the export to make."""
    root = write_dataset(tmp_path, {"info": {"contributor": "Label Studio"}, "categories": categories(0),
                                    "images": [{"id": 0, "file_name": name, "width": W, "height": H}],
                                    "annotations": [obj(0, 0, 0)]})
    reject = read(root, ("detection",))["coco-0-detection"]
    assert reject.reason == "outside_root" and "export it with its images" in reject.detail, reject.detail


def test_absolute_names_outside_the_folder_resolve_each_folder_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Each absolute name not written under the images folder (Label Studio's `/data/upload/...`,
    a linked parent's spelling) resolved the root's and its folder's links anew, twice per entry:
    100,000 Label Studio names took 8.7 s in `join_inside` (0.6 s before), a round trip per
    folder per name on NFS. The real paths are kept per folder for one run or listing
    (`resolving`): 2,000 names in 2 folders resolve a handful of folders, not 4,000, and are
    judged as before."""
    real, alias = tmp_path / "real", tmp_path / "alias"
    (real / "sub").mkdir(parents=True)
    alias.symlink_to(real, target_is_directory=True)
    calls = []
    realpath = os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda p, *a, **k: calls.append(p) or realpath(p, *a, **k))
    with resolving():
        for n in range(1000):
            assert join_inside(str(real), f"{alias}/sub/{n}.png") == f"{real}/sub/{n}.png"
            with pytest.raises(OutsideRoot):
                join_inside(str(real), f"{tmp_path}/upload/3/{n}.png")
    assert len(calls) < 20, len(calls)


def test_names_through_an_alias_over_thousands_of_folders_resolve_each_folder_once(tmp_path: Path,
                                                                                     monkeypatch: pytest.MonkeyPatch):
    """The folders kept for a listing were all dropped when 4,096 entries (two a folder) were
    kept: names in shuffled order over more than ~2,048 folders resolved their folders again and
    again (4,000 folders, 100,000 names: 72,745 realpath calls, 5.2 CPU-s against 1.2 s). The
    least recently used is dropped, one at a time, from a bound that holds tens of thousands of
    folders: 2,500 folders, two names each in shuffled order, resolve each folder about once."""
    real, alias = tmp_path / "real", tmp_path / "alias"
    folders = 2500
    for n in range(folders):
        (real / f"d{n}").mkdir(parents=True)
    alias.symlink_to(real, target_is_directory=True)
    names = [f"d{n % folders}/{n}.png" for n in range(2 * folders)]
    random.Random(0).shuffle(names)
    calls = []
    realpath = os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda p, *a, **k: calls.append(p) or realpath(p, *a, **k))
    with resolving():
        assert [join_inside(str(real), f"{alias}/{name}") for name in names] == [f"{real}/{name}" for name in names]
    assert len(calls) < folders + 10, len(calls)


def test_follow_links_name_through_an_alias_of_the_root_and_a_followed_link(tmp_path: Path):
    """With `follow_links: true` a folder linked into the images folder is read, written as
    `<root>/shared/s.jpg`; written through an alias of the root (`/data -> /mnt/nfs/data`) it was
    `outside_root` with no word of the link, as its folder was resolved past the root. The name is
    spelled under the root resolving only up to the root, so the link is judged as in the root's
    own spelling: read with `follow_links`, and without it a reject naming the link."""
    root, nfs, alias = tmp_path / "data" / "root", tmp_path / "nfs" / "shared", tmp_path / "alias"
    root.mkdir(parents=True)
    nfs.mkdir(parents=True)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(nfs / "s.png")
    (root / "shared").symlink_to(nfs, target_is_directory=True)
    alias.symlink_to(tmp_path / "data", target_is_directory=True)
    for name in (f"{root}/shared/s.png", f"{alias}/root/shared/s.png", "shared/s.png"):
        path = join_inside(str(root), name)
        assert path == f"{root}/shared/s.png", name
        check_inside(str(root), path, follow_links=True)
        with pytest.raises(OutsideRoot, match="link"):
            check_inside(str(root), path)


@pytest.mark.parametrize("first, then", [("data", "other"), ("other", "data")])
def test_an_absolute_name_through_a_parent_relinked_between_two_builds_in_one_process(tmp_path: Path, first: str,
                                                                                       then: str):
    """A Detectron2-style export names its images absolutely through a linked parent (`/alias/coco/
    val2017/1.png`, `/alias -> /data`). The links' real paths were kept for the process's life:
    relinked between two builds in one process (a Dask worker, a test session), the second build
    judged the name by the first's links: leading out now, it rendered the root's image; leading in
    now, it stayed `outside_root`. They are kept for one run or listing, so each build sees its own.
    The parsed index was still kept for the process by the JSON's state alone, and with it the
    merge of names: the alias's name and a relative `1.png` stayed one file (both `bad_annotation`)
    after the alias led out, or two images after it led in. A kept index is served only while the
    folders its names were judged by resolve the same."""
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.tagged import REJECTS
    from uvd_pipeline.unit_render import list_units, unit_renderers

    for folder, colour in (("data", (255, 0, 0)), ("other", (0, 0, 255))):
        (tmp_path / folder / "coco" / "val2017").mkdir(parents=True)
        Image.new("RGB", (W, H), colour).save(tmp_path / folder / "coco" / "val2017" / "1.png")
    root, alias = tmp_path / "data" / "coco", tmp_path / "alias"
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(
        {"images": [{"id": 1, "file_name": f"{alias}/coco/val2017/1.png", "width": W, "height": H},
                    {"id": 2, "file_name": "1.png", "width": W, "height": H}],
         "categories": categories(1), "annotations": [obj(1, 1, 1), obj(2, 2, 1)]}))

    def build(output: str) -> tuple[list[str], list[tuple[int, ...]]]:
        """The rejects' reasons and each rendered photo's mean colour of one build."""
        config = parse_config({"version": 1, "output": str(tmp_path / output), "image": {"size": 16},
                               "tokenizer": {"enabled": False},
                               "sources": [{"name": "coco", "type": "coco", "path": str(root), "tasks": ["detection"]}]})
        (unit,) = list_units(config)["coco"]
        outputs, _ = unit_renderers(config)["coco"].render(unit)
        reasons = [item.reason for tag, item in outputs if tag == REJECTS]
        colours = []
        for tag, item in outputs:
            if tag != REJECTS:
                ref = item.images[0]
                with open(ref.path, "rb") as stored:
                    stored.seek(ref.offset)
                    photo = decode_png(stored.read(ref.length))
                colours.append(tuple(int(c) for c in photo.reshape(-1, 3).mean(axis=0).round()))
        return reasons, colours

    # through `data` both name the root's one file (which id is it?); through `other` the first leads out
    expected = {"data": (["bad_annotation"] * 2, []), "other": (["outside_root"], [(255, 0, 0)])}
    alias.symlink_to(tmp_path / first, target_is_directory=True)
    assert build("out1") == expected[first]
    alias.unlink()
    alias.symlink_to(tmp_path / then, target_is_directory=True)
    assert build("out2") == expected[then]
