"""Annotation targets checked by value on the real COCO sample, under every crop policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

from conftest import FIXTURES
from sources.coco import CocoSource
from sources.records import PairRecord, Reject
from transforms.annotations import (
    COCO17,
    MPII16,
    colour_of,
    depth_to_colour,
    joint_colours,
    limb_colours,
    normals_to_rgb,
    rgb_to_normals,
)
from uvd_pipeline.config import ConfigError
from uvd_pipeline.render import RenderSettings, decode_png
from uvd_pipeline.render_annotated import render_pair

COCO = FIXTURES / "coco"
POLICIES = ("squash", "center_crop", "pad")


def settings(policy: str, size: int = 256) -> RenderSettings:
    return RenderSettings(size, policy, 0, 10**9, 1, 0, 0.0)


@pytest.fixture(scope="module")
def coco_pairs() -> dict[str, PairRecord]:
    source = CocoSource("coco", str(COCO), ("test_coco.json",), ".")
    items = [i for unit in source.units() for i in source.read(unit)]
    return {i.key: i for i in items if isinstance(i, PairRecord)}


def expected_point(policy: str, x: float, y: float, w: int, h: int, size: int) -> tuple[float, float]:
    """The canvas position of an input point, worked out here independently of ResizePlan."""
    if policy == "squash":
        return x * size / w, y * size / h
    if policy == "center_crop":
        side = min(w, h)
        return (x - (w - side) // 2) * size / side, (y - (h - side) // 2) * size / side
    scale = size / max(w, h)
    sw, sh = round(w * scale), round(h * scale)
    return x * sw / w + (size - sw) // 2, y * sh / h + (size - sh) // 2


def test_coco_source_reads_every_task(coco_pairs):
    tasks = sorted(k.rsplit("-", 1)[1] for k in coco_pairs)
    assert tasks.count("detection") == 4 and tasks.count("segmentation") == 4 and tasks.count("pose") == 4
    pose = coco_pairs["coco-40083-pose"]
    assert len(pose.annotation["people"]) == 2  # the third person has no labelled keypoints


@pytest.mark.parametrize("policy", POLICIES)
def test_box_colour_on_its_edges(coco_pairs, policy):
    record = coco_pairs["coco-785-detection"]
    unit = render_pair(record, settings(policy))
    source, target = (decode_png(p) for p in unit.images)
    x, y, bw, bh = record.annotation["boxes"][0]
    x0, y0 = expected_point(policy, x, y, 640, 425, 256)
    x1, y1 = expected_point(policy, x + bw, y + bh, 640, 425, 256)
    colour = colour_of(1)
    left, top = int(np.floor(x0)), int(np.floor(y0))
    right, bottom = min(int(np.ceil(x1)) - 1, 255), min(int(np.ceil(y1)) - 1, 255)
    columns = slice(max(left, 0), right + 1)
    if top >= 0:
        assert (target[top, columns] == colour).all()
    assert (target[bottom, columns] == colour).all()
    assert (target[max(top, 0) : bottom + 1, max(left, 0)] == colour).all()
    # away from the box the target is the image itself
    assert np.array_equal(target[:, :max(left - 3, 0)], source[:, :max(left - 3, 0)])


@pytest.mark.parametrize("policy", POLICIES)
def test_each_joint_lands_within_a_pixel(coco_pairs, policy):
    record = coco_pairs["coco-785-pose"]
    people = np.asarray(record.annotation["people"][0]).reshape(17, 3)
    checked = 0
    for joint in np.flatnonzero(people[:, 2] > 0):
        only = np.zeros_like(people)
        only[joint] = people[joint]
        single = PairRecord(record.key, record.source, record.group, "pose", record.image_uri,
                            annotation={"skeleton": "coco17", "people": [only.ravel().tolist()]})
        target = decode_png(render_pair(single, settings(policy)).images[1])
        ex, ey = expected_point(policy, people[joint, 0], people[joint, 1], 640, 425, 256)
        if not (2 <= ex < 254 and 2 <= ey < 254):
            assert target.max() == 0  # a joint cropped away is not drawn
            continue
        disc = np.all(target == joint_colours(COCO17)[joint], axis=2)
        ys, xs = np.nonzero(disc)
        assert len(xs) > 10
        assert abs(xs.mean() + 0.5 - ex) <= 1.0 and abs(ys.mean() + 0.5 - ey) <= 1.0
        checked += 1
    assert checked >= 10


def test_skeleton_draws_visible_joints_and_limbs_only(coco_pairs):
    record = coco_pairs["coco-40083-pose"]
    target = decode_png(render_pair(record, settings("center_crop")).images[1])
    colours = {tuple(c) for c in target.reshape(-1, 3)}
    assert (0, 0, 0) in colours and len(colours) > 10


@pytest.mark.parametrize("policy", POLICIES)
def test_image_and_label_map_share_geometry(tmp_path: Path, policy):
    """An image that *is* its colour-coded label map must come out equal to its target."""
    rng = np.random.default_rng(0)
    labels = np.zeros((300, 500), np.uint8)
    for class_id in range(1, 8):
        x, y = rng.integers(0, 440), rng.integers(0, 240)
        labels[y : y + 60, x : x + 60] = class_id
    from transforms.annotations import colourize_labels

    image = colourize_labels(labels)
    cv2.imwrite(str(tmp_path / "img.png"), image[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "lab.png"), labels)
    record = PairRecord("k", "s", "k", "segmentation", str(tmp_path / "img.png"),
                        annotation={"label_uri": str(tmp_path / "lab.png")})
    unit = render_pair(record, settings(policy, 128))
    source, target = (decode_png(p) for p in unit.images)
    agree = np.all(np.abs(source.astype(int) - target) <= 2, axis=2)
    assert agree.mean() > 0.95  # only interpolated borders differ


def test_too_many_open_files_reading_an_image_or_its_map_is_the_machines_error(tmp_path: Path):
    """A pair's image, or its label map, opened while this process had no descriptor to spare
    (EMFILE) was the pair's `unreadable_file` or `missing_annotation` reject, committed for good:
    it is this machine's `MachineError`, and with files to spare the same pair renders."""
    from budget_jobs import no_file_to_spare

    from sources.records import MachineError
    from uvd_pipeline.sentences import RenderedUnit

    cv2.imwrite(str(tmp_path / "img.png"), np.full((30, 40, 3), 90, np.uint8))
    cv2.imwrite(str(tmp_path / "lab.png"), np.ones((30, 40), np.uint8))
    by_uri = PairRecord("k", "s", "k", "segmentation", str(tmp_path / "img.png"),
                        annotation={"label_uri": str(tmp_path / "lab.png")})
    by_bytes = PairRecord("k", "s", "k", "segmentation", image_data=(tmp_path / "img.png").read_bytes(),
                          annotation={"label_uri": str(tmp_path / "lab.png")})
    for record, name in ((by_uri, "img.png"), (by_bytes, "lab.png")):
        with no_file_to_spare(), pytest.raises(MachineError, match=rf"reading {name}: \[Errno 24\]"):
            render_pair(record, settings("squash", 32))
        assert isinstance(render_pair(record, settings("squash", 32)), RenderedUnit)


def test_segmentation_from_coco_polygons(coco_pairs):
    record = coco_pairs["coco-785-segmentation"]
    target = decode_png(render_pair(record, settings("squash")).images[1])
    person = np.all(target == colour_of(1), axis=2)
    background = np.all(target == 0, axis=2)
    assert 0.05 < person.mean() < 0.6 and person.mean() + background.mean() > 0.999


def test_depth_order_and_invalid_black():
    depth = np.linspace(1.0, 10.0, 100, dtype=np.float32).reshape(10, 10)
    depth[0, 0] = 0
    depth[0, 1] = np.nan
    depth[0, 2] = np.inf
    rgb = depth_to_colour(depth).astype(np.float64)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    valid = np.isfinite(depth) & (depth > 0)
    order = np.argsort(depth[valid])
    assert np.all(np.diff(luma[valid][order]) <= 1e-9)  # farther is never brighter
    assert luma[valid].min() > 0 and (rgb[0, :3] == 0).all()
    with np.errstate(divide="ignore"):
        disparity = depth_to_colour(1 / depth, disparity=True) @ np.array([0.299, 0.587, 0.114])
    assert disparity[valid][order][0] > disparity[valid][order][-1]


def test_normals_round_trip_within_one_level():
    rng = np.random.default_rng(1)
    normals = rng.normal(size=(64, 64, 3))
    normals /= np.linalg.norm(normals, axis=2, keepdims=True)
    assert np.abs(rgb_to_normals(normals_to_rgb(normals)) - normals).max() <= 1 / 255 + 1e-9


def test_bad_annotations_reject_the_pair(coco_pairs, tmp_path: Path):
    record = coco_pairs["coco-785-segmentation"]
    missing_image = PairRecord("k1", "coco", "g", "detection", str(tmp_path / "gone.jpg"),
                               annotation=record.annotation)
    assert render_pair(missing_image, settings("pad")).reason == "missing_image"
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    for annotation, reason in [
        ({"label_uri": str(tmp_path / "nothing.png")}, "missing_annotation"),
        ({"label_uri": str(tmp_path / "bad.png")}, "corrupt_annotation"),
        ({"height": 425, "width": 640, "segments": [{"segmentation": {"counts": "??", "size": [1, 1]},
                                                      "category_id": 1}]}, "bad_segmentation"),
    ]:
        bad = PairRecord("k2", "coco", "g", "segmentation", record.image_uri, annotation=annotation)
        result = render_pair(bad, settings("pad"))
        assert isinstance(result, Reject) and result.reason == reason and result.stage == "annotation"
    wrong_size = tmp_path / "small.png"
    cv2.imwrite(str(wrong_size), np.zeros((100, 100), np.uint8))
    bad = PairRecord("k3", "coco", "g", "segmentation", record.image_uri, annotation={"label_uri": str(wrong_size)})
    assert render_pair(bad, settings("pad")).reason == "annotation_size_mismatch"


def test_fixture_licences_kept():
    data = json.loads((COCO / "test_coco.json").read_text())
    assert data["licenses"] and all("license" in image for image in data["images"])
    assert (FIXTURES / "README.md").read_text().count("CC BY 4.0") == 1


# -- COCO segments that pycocotools would misread: judged before it sees them ---------------------
SQUARE = RenderSettings(64, "squash", 0, 10**9, 1, 0, 0.0)  # a 64x64 image onto a 64 canvas: pixel for pixel


def coco_dataset(tmp_path: Path, images: list[dict], annotations: list[dict], tasks=("segmentation",),
                 size: tuple[int, int] = (64, 64)) -> dict[str, PairRecord | Reject]:
    """A COCO folder as the world writes one (PNGs by Pillow, the JSON by json), read back by
    CocoSource: its pairs and rejects by key. Its categories declare every positive id the
    annotations use, as an export does."""
    from PIL import Image

    from sources.coco import load_index

    w, h = size
    for image in images:
        Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(tmp_path / f"{image['id']}.png")
    used = {a.get("category_id") for a in annotations if type(a.get("category_id")) is int and a["category_id"] > 0}
    data = {"images": [{"file_name": f"{i['id']}.png", **i} for i in images], "annotations": annotations,
            "categories": [{"id": c, "name": f"thing{c}"} for c in sorted(used | {1})]}
    (tmp_path / "ann.json").write_text(json.dumps(data))
    load_index.cache_clear()
    source = CocoSource("coco", str(tmp_path), ("ann.json",), ".", tasks)
    return {i.key: i for unit in source.units() for i in source.read(unit)}


def segment(ann_id: int, image_id: int, segmentation, category_id: int = 1, **extra) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "segmentation": segmentation,
            "bbox": [0.0, 0.0, 10.0, 10.0], "area": 100.0, "iscrowd": int(isinstance(segmentation, dict)), **extra}


def painted(result, category_id: int) -> np.ndarray:
    """The target's pixels in the category's colour; every other pixel must be background black."""
    assert not isinstance(result, Reject), result
    target = decode_png(result.images[1])
    mine = np.all(target == colour_of(category_id), axis=2)
    assert (target[~mine] == 0).all()
    return mine


@pytest.mark.parametrize("far", [4e6, 1e9, 1e300])
def test_polygon_far_outside_the_image_is_rejected_before_pycocotools(tmp_path: Path, far: float):
    """pycocotools walks the outline in C ints: 4e6 cost half a gigabyte, 1e9 crashed the process."""
    pairs = coco_dataset(tmp_path, [{"id": 1, "width": 64, "height": 64}],
                         [segment(1, 1, [[0.0, 0.0, far, 0.0, far, far]])])
    result = render_pair(pairs["coco-1-segmentation"], SQUARE)
    assert isinstance(result, Reject) and (result.stage, result.reason) == ("annotation", "bad_segmentation")
    assert result.detail == "a polygon vertex lies more than 1024 pixels (16 image sizes) outside the 64x64 image"


def test_polygon_coordinates_that_are_not_finite_are_rejected(tmp_path: Path):
    pairs = coco_dataset(tmp_path, [{"id": 1, "width": 64, "height": 64}], [segment(1, 1, [[0, 0, 9, 0, 9, 9]])])
    record = pairs["coco-1-segmentation"]
    annotation = {**record.annotation, "segments": [{"segmentation": [[0, 0, float("nan"), 0, 9, 9]], "category_id": 1}]}
    result = render_pair(PairRecord(record.key, "coco", record.group, "segmentation", record.image_uri,
                                    annotation=annotation), SQUARE)
    assert isinstance(result, Reject) and result.reason == "bad_segmentation" and "not a finite number" in result.detail


def test_polygon_outline_over_the_memory_budget_is_rejected(tmp_path: Path):
    """Within reach, but 4000 edges across it: 37M outline points, ~900 MB inside pycocotools."""
    zigzag = [v for i in range(4000) for v in ((-900.0, -900.0) if i % 2 else (960.0, 960.0))]
    pairs = coco_dataset(tmp_path, [{"id": 1, "width": 64, "height": 64}], [segment(1, 1, [zigzag])])
    result = render_pair(pairs["coco-1-segmentation"], SQUARE)
    assert isinstance(result, Reject) and result.reason == "annotation_too_large"
    assert "polygon outlines of 37200000 points" in result.detail


def comb(teeth: int, length: float) -> list[float]:
    """A polygon of `teeth` one-pixel teeth a pixel apart: two runs a tooth in each column it spans."""
    outline = [0.0, 0.0]
    for k in range(teeth):
        outline += [length, 2.0 * k, length, 2.0 * k + 1, 1.0, 2.0 * k + 1, 1.0, 2.0 * k + 2]
    return outline + [0.0, 2.0 * teeth]


def test_segments_budgets_are_judged_for_the_whole_target_as_it_is_decoded(tmp_path: Path, monkeypatch):
    """Budgets that each polygon meets alone but a target's polygons pass together. The outline
    budget was judged per polygon, and the runs budget only once every mask was decoded: 50 combs
    of 8,000 vertices (6M runs each on a 4000 x 4000 image, 2.35 s apiece) cost ~2 minutes and 2.4 GB."""
    import uvd_pipeline.render_annotated as render_annotated
    from pycocotools import mask as mask_utils

    pairs = coco_dataset(tmp_path, [{"id": 1, "width": 64, "height": 64}],
                         [segment(n + 1, 1, [comb(30, 60.0)]) for n in range(20)])
    record = pairs["coco-1-segmentation"]
    assert not isinstance(render_pair(record, SQUARE), Reject)  # within the real budgets
    decoded: list[int] = []
    runs_of = render_annotated._segment_runs
    monkeypatch.setattr(render_annotated, "_segment_runs", lambda seg, h, w: decoded.append(1) or runs_of(seg, h, w))
    one = len(runs_of([comb(30, 60.0)], 64, 64))
    monkeypatch.setattr(render_annotated, "MAX_MASK_RUNS", one + one // 2)
    result = render_pair(record, SQUARE)
    assert isinstance(result, Reject) and result.reason == "annotation_too_large"
    assert len(decoded) == 2  # refused at the second mask, not after all 20
    monkeypatch.setattr(render_annotated, "MAX_MASK_RUNS", 4_000_000)
    rasterised: list[int] = []
    polygons = mask_utils.frPyObjects
    monkeypatch.setattr(mask_utils, "frPyObjects", lambda *a: rasterised.append(1) or polygons(*a))
    points = render_annotated._check_polygons([comb(30, 60.0)], 64, 64)
    monkeypatch.setattr(render_annotated, "MAX_OUTLINE_POINTS", 3 * points)
    result = render_pair(record, SQUARE)
    assert isinstance(result, Reject) and result.reason == "annotation_too_large"
    assert f"polygon outlines of {20 * points} points" in result.detail and not rasterised


def test_polygons_within_reach_rasterise_exactly_as_pycocotools_does(tmp_path: Path):
    """The checks only refuse: a polygon that crosses the border, even by hundreds of pixels, is
    pycocotools' own rasterisation, pixel for pixel."""
    from pycocotools import mask as mask_utils

    polygons = [[-500.0, -300.0, 100.5, 10.25, 20.0, 90.0], [50.0, 50.0, 63.5, 52.0, 55.0, 63.9]]
    pairs = coco_dataset(tmp_path, [{"id": 1, "width": 64, "height": 64}], [segment(1, 1, polygons, category_id=7)])
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, 64, 64))).astype(bool)
    assert 500 < expected.sum() < 4000
    assert np.array_equal(painted(render_pair(pairs["coco-1-segmentation"], SQUARE), 7), expected)


def test_rle_counts_must_cover_the_image_exactly(tmp_path: Path):
    """Crowd RLE as pycocotools writes it renders exactly; run lengths that describe fewer pixels
    than the image (pycocotools left the rest of its mask uninitialised) or more, or a compressed
    string its C decoder would misread, reject the pair."""
    from pycocotools import mask as mask_utils

    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 20:50] = 1
    mask[40:44, 5:9] = 1
    whole = mask_utils.encode(np.asfortranarray(mask))["counts"].decode()
    top_half = mask_utils.encode(np.asfortranarray(mask[:32]))["counts"].decode()  # 2048 of the 4096 pixels
    uncompressed = [5, 10]
    rles = {1: whole, 2: uncompressed, 3: top_half, 4: [100, 4000], 5: whole + "a", 6: whole[:-1] + "~"}
    pairs = coco_dataset(tmp_path, [{"id": n, "width": 64, "height": 64} for n in rles],
                         [segment(n, n, {"size": [64, 64], "counts": counts}, category_id=3)
                          for n, counts in rles.items()])
    assert np.array_equal(painted(render_pair(pairs["coco-1-segmentation"], SQUARE), 3), mask.astype(bool))
    details = {}
    for n in (2, 3, 4, 5, 6):
        result = render_pair(pairs[f"coco-{n}-segmentation"], SQUARE)
        assert isinstance(result, Reject) and result.reason == "bad_segmentation", (n, result)
        details[n] = result.detail
    assert details[2] == "RLE run lengths sum to 15, the 64x64 image has 4096 pixels"
    assert details[3] == "RLE run lengths sum to 2048, the 64x64 image has 4096 pixels"
    assert details[4] == "RLE run lengths sum to 4100, the 64x64 image has 4096 pixels"
    assert details[5] == "RLE counts end inside a count"
    assert details[6] == "RLE counts hold a character outside '0'..'o'"


def test_declared_image_size_never_replaces_the_decoded_one(tmp_path: Path):
    """The JSON's width/height name the frame the boxes, polygons and points were drawn in: every
    task compares them with the decoded image (a declaration that differs means another frame),
    a value that is no size rejects the pair, and 0 or nothing (CVAT writes 0 for a size it did
    not know) is no declaration. Every rendered pair records the decoded 64x48."""
    declared = {1: {"width": 64, "height": 48}, 2: {"width": 64, "height": "abc"}, 3: {"width": 64, "height": 0.5},
                4: {"width": 64, "height": 9999}, 5: {"width": 0, "height": 48}, 6: {}, 7: {"height": 48},
                8: {"width": -64, "height": 48}}
    polygon = [[5.0, 5.0, 30.0, 5.0, 30.0, 25.0]]
    pairs = coco_dataset(tmp_path, [{"id": n, **size} for n, size in declared.items()],
                         [segment(n, n, polygon) for n in declared], ("detection", "segmentation"), size=(64, 48))
    for task in ("detection", "segmentation"):
        outcome = {n: pairs[f"coco-{n}-{task}"] for n in declared}
        outcome = {n: r if isinstance(r, Reject) else render_pair(r, SQUARE) for n, r in outcome.items()}
        reasons = {n: (r.stage, r.reason) if isinstance(r, Reject) else "rendered" for n, r in outcome.items()}
        assert reasons == {1: "rendered", 2: ("read", "bad_annotation"), 3: ("read", "bad_annotation"),
                           4: ("annotation", "annotation_size_mismatch"), 5: "rendered", 6: "rendered",
                           7: "rendered", 8: ("read", "bad_annotation")}, task
        assert outcome[2].detail == "image 2: height is not a positive integer"
        assert outcome[8].detail == "image 8: width is not a positive integer"
        assert outcome[4].detail == "annotation declares 64x9999, image is 64x48"
        assert all((r.members[0]["width"], r.members[0]["height"]) == (64, 48) for r in outcome.values()
                   if not isinstance(r, Reject))


def test_category_ids_beyond_the_palette_are_rejected_not_wrapped(tmp_path: Path):
    """65536 wrapped onto the background's black (the object vanished), 2**40 overflowed int32;
    65535, the last id with its own colour, is painted in it."""
    ids = {1: 65535, 2: 65536, 3: 2**40, 4: 0, 5: -3}
    polygon = [[5.0, 5.0, 30.0, 5.0, 30.0, 25.0]]
    pairs = coco_dataset(tmp_path, [{"id": n, "width": 64, "height": 64} for n in ids],
                         [segment(n, n, polygon, category_id=c) for n, c in ids.items()], ("detection", "segmentation"))
    from pycocotools import mask as mask_utils

    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, 64, 64))).astype(bool)
    assert np.array_equal(painted(render_pair(pairs["coco-1-segmentation"], SQUARE), 65535), expected)
    for n in (2, 3, 4, 5):
        for task in ("detection", "segmentation"):
            reject = pairs[f"coco-{n}-{task}"]
            assert isinstance(reject, Reject) and reject.reason == "bad_annotation"
            assert reject.detail == (f"ann.json annotations[{n - 1}] (id {n}): category_id is outside 1..65535 "
                                     "(the ids the target palette colours)")


# -- MPII in MMPose's JSON, drawn to the pixel -------------------------------------------------------
UNANNOTATED = [-1.0, -1.0]  # MMPose's mpii_train.json: a joint MPII did not annotate, joints_vis 0


def mpii_dataset(tmp_path: Path, images: dict[str, tuple[int, int]], people: list[dict]) -> dict:
    """MPII as MMPose ships it (images/ as JPEGs, annotations/mpii_train.json: one entry per person,
    joints in MATLAB's 1-based pixel coordinates), read back by MpiiSource: pairs/rejects by key."""
    from PIL import Image

    from sources.mpii import MpiiSource

    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    for name, (w, h) in images.items():
        Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(tmp_path / "images" / name, quality=90)
    (tmp_path / "annotations" / "mpii_train.json").write_text(json.dumps(people, indent=4))
    source = MpiiSource("mpii", str(tmp_path))
    return {i.key: i for unit in source.units() for i in source.read(unit)}


def mpii_person(image: str, joints: dict[int, tuple[float, float, int]]) -> dict:
    """One person entry: the given joints (x, y, joints_vis), the others unannotated."""
    coordinates = [list(joints[j][:2]) if j in joints else UNANNOTATED for j in range(16)]
    visible = [joints[j][2] if j in joints else 0 for j in range(16)]
    return {"image": image, "joints": coordinates, "joints_vis": visible, "center": [50.0, 50.0], "scale": 1.0}


def test_an_mpii_image_its_json_lists_but_the_disk_lacks_is_a_missing_image(tmp_path: Path):
    """An entry naming an image that is not in images/ was `unreadable_file`, sending the user to
    look at permissions or the disk: it is `missing_image` (docs/rejects.md), the others draw."""
    joints = {j: (20.0 + 3 * j, 30.0 + 2 * j, 1) for j in range(16)}
    pairs = mpii_dataset(tmp_path, {"a.jpg": (96, 96)}, [mpii_person("a.jpg", joints), mpii_person("gone.jpg", joints)])
    results = [render_pair(item, settings("squash", 64)) if isinstance(item, PairRecord) else item
               for item in pairs.values()]
    outcomes = sorted(r.reason if isinstance(r, Reject) else "rendered" for r in results)
    assert outcomes == ["missing_image", "rendered"], outcomes


def matlab_for_pixel(policy: str, kx: int, ky: int, w: int, h: int) -> tuple[float, float]:
    """The MATLAB coordinate (1-based pixel centres: 0-based centre + 1) whose joint lands on the
    centre of canvas pixel (kx, ky): the policy's map is affine in the pixel-edge coordinate
    (0-based centre + 0.5), so it is inverted from two points of `expected_point`."""
    (bx, by), (ax, ay) = expected_point(policy, 0, 0, w, h, 256), expected_point(policy, 1, 1, w, h, 256)
    return (kx + 0.5 - bx) / (ax - bx) + 0.5, (ky + 0.5 - by) / (ay - by) + 0.5


def disc_box(target: np.ndarray, colour) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(np.all(target == colour, axis=2))
    return (int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())) if len(xs) else None


@pytest.mark.parametrize("policy", POLICIES)
def test_mpii_joints_land_on_their_pixels_and_only_annotated_inside_ones_are_drawn(tmp_path: Path, policy):
    """Joints placed (from MPII's 1-based convention, independently of ResizePlan) on canvas
    pixel centres are discs centred on those pixels, for two people in one image, under each
    resize policy and image shape. Not drawn: joints_vis 0 (even at a real position), MPII's
    unannotated -1/-1, and an annotated joint outside the image (in `pad`, where the canvas
    shows padding, not the image: drawn there it would be a target of what the input lacks)."""
    shapes = {"square.jpg": (256, 256), "wide.jpg": (320, 256), "flat.jpg": (256, 128)}
    people, expected = [], {}
    for name, (w, h) in shapes.items():
        (x0, y0), (x1, y1) = expected_point(policy, 0, 0, w, h, 256), expected_point(policy, w, h, w, h, 256)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, 256), min(y1, 256)
        at = {j: (int(x0 + f * (x1 - x0)), int(y0 + g * (y1 - y0)))  # canvas pixels inside the image
              for j, f, g in ((0, 0.2, 0.8), (9, 0.5, 0.15), (10, 0.8, 0.5), (5, 0.3, 0.3), (12, 0.7, 0.75))}
        first = {j: (*matlab_for_pixel(policy, *at[j], w, h), 1) for j in (0, 9, 10)}
        first[7] = (w / 2, h / 2, 0)  # annotated position, joints_vis 0
        first[15] = (w / 2, -20.0, 1)  # annotated 20 pixels above the image
        second = {j: (*matlab_for_pixel(policy, *at[j], w, h), 1) for j in (5, 12)}
        people += [mpii_person(name, first), mpii_person(name, second)]
        expected[name] = {j: (kx - 3, kx + 3, ky - 3, ky + 3) for j, (kx, ky) in at.items()}
    items = mpii_dataset(tmp_path, shapes, people)
    colours = joint_colours(MPII16)
    for name in shapes:
        record = items[f"mpii-{name[:-4]}-pose"]
        assert record.lineage["people"] == 2
        target = decode_png(render_pair(record, settings(policy)).images[1])
        drawn = {j: disc_box(target, colours[j]) for j in range(16)}
        assert {j: box for j, box in drawn.items() if box} == expected[name], name


def test_mpii_joints_on_the_image_edges(tmp_path: Path):
    """Pixel edges are half-open: a joint on the image's left or top edge (MATLAB 0.5, the outer
    edge of pixel 1) is inside and drawn, clipped by the border; one on its right or bottom edge
    (MATLAB w + 0.5) is outside and not drawn, whether that edge is the canvas's (squash of a
    square) or the padding's (pad of a 256 x 128 image: rows 64 to 191)."""
    items = mpii_dataset(tmp_path, {"square.jpg": (256, 256), "flat.jpg": (256, 128)}, [
        mpii_person("square.jpg", {0: (0.5, 100.0, 1), 5: (256.5, 150.0, 1), 9: (100.0, 0.5, 1), 10: (150.0, 256.5, 1)}),
        mpii_person("flat.jpg", {0: (100.0, 0.5, 1), 5: (150.0, 128.5, 1)}),
    ])
    colours = joint_colours(MPII16)
    square = decode_png(render_pair(items["mpii-square-pose"], settings("squash")).images[1])
    boxes = {j: disc_box(square, colours[j]) for j in (0, 5, 9, 10)}
    assert boxes[5] is None and boxes[10] is None
    assert boxes[0][0] == 0 and boxes[0][1] <= 3 and boxes[0][2:] == (96, 102)  # centred on x = -0.5
    assert boxes[9][2] == 0 and boxes[9][3] <= 3 and boxes[9][:2] == (96, 102)
    flat = decode_png(render_pair(items["mpii-flat-pose"], settings("pad")).images[1])
    assert disc_box(flat, colours[5]) is None
    assert disc_box(flat, colours[0])[2:] == (61, 67)  # centred on the padding's edge, row 63.5


def test_a_pose_pair_with_no_joint_inside_its_image_is_an_empty_target(tmp_path: Path):
    """People whose joints are all joints_vis 0, or all outside the image (or cropped away), draw
    a black target: such a pair is an `empty_target` reject, as COCO's boxes and masks that cover
    nothing are, while one labelled joint inside keeps the pair."""
    items = mpii_dataset(tmp_path, {"hidden.jpg": (200, 100), "outside.jpg": (200, 100), "one.jpg": (200, 100)}, [
        mpii_person("hidden.jpg", {0: (50.0, 50.0, 0), 9: (80.0, 20.0, 0)}),
        mpii_person("outside.jpg", {0: (250.0, 50.0, 1), 9: (80.0, -30.0, 1)}),
        mpii_person("one.jpg", {0: (250.0, 50.0, 1), 9: (100.0, 50.0, 1)}),
    ])
    for name in ("hidden", "outside"):
        reject = render_pair(items[f"mpii-{name}-pose"], settings("pad"))
        assert isinstance(reject, Reject), name
        assert (reject.stage, reject.reason) == ("annotation", "empty_target")
    kept = render_pair(items["mpii-one-pose"], settings("pad"))
    assert not isinstance(kept, Reject) and decode_png(kept.images[1]).any()


# MMPose's MPII skeleton (configs/_base_/datasets/mpii.py, `skeleton_info`), by joint name
MMPOSE_MPII_LINKS = (
    ("right_ankle", "right_knee"), ("right_knee", "right_hip"), ("right_hip", "pelvis"), ("pelvis", "left_hip"),
    ("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("pelvis", "thorax"), ("thorax", "upper_neck"),
    ("upper_neck", "head_top"), ("upper_neck", "right_shoulder"), ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"), ("upper_neck", "left_shoulder"), ("left_shoulder", "left_elbow"),
    ("left_elbow", "left_wrist"))
MPII_ORDER = ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
              "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
              "left_wrist")  # MPII's joint ids 0..15


def test_mpii_limbs_are_mmposes(tmp_path: Path):
    """A standing figure in MMPose's MPII JSON, drawn: the midpoint of each of MMPose's 15 links
    (by joint name, in MPII's joint order) holds that limb's colour, and nothing joins the thorax to
    the shoulders, a link MMPose does not draw (the shoulders hung from the thorax, not the neck)."""
    at = {"head_top": (128, 20), "upper_neck": (128, 60), "thorax": (128, 84), "pelvis": (128, 150),
          "right_shoulder": (80, 70), "left_shoulder": (176, 70), "right_elbow": (50, 110), "left_elbow": (206, 110),
          "right_wrist": (30, 150), "left_wrist": (226, 150), "right_hip": (105, 155), "left_hip": (151, 155),
          "right_knee": (100, 200), "left_knee": (156, 200), "right_ankle": (95, 245), "left_ankle": (161, 245)}
    joints = {MPII_ORDER.index(name): (x + 1.0, y + 1.0, 1) for name, (x, y) in at.items()}  # MATLAB: pixel + 1
    items = mpii_dataset(tmp_path, {"figure.jpg": (256, 256)}, [mpii_person("figure.jpg", joints)])
    target = decode_png(render_pair(items["mpii-figure-pose"], settings("squash")).images[1])
    colour_of_link = {frozenset(link): colour for link, colour in zip(MPII16.limbs, limb_colours(MPII16))}
    for a, b in MMPOSE_MPII_LINKS:
        colour = colour_of_link.get(frozenset((MPII_ORDER.index(a), MPII_ORDER.index(b))))
        (xa, ya), (xb, yb) = at[a], at[b]
        assert colour is not None and tuple(target[(ya + yb) // 2, (xa + xb) // 2]) == colour, (a, b)
    for shoulder in ("right_shoulder", "left_shoulder"):
        (xa, ya), (xb, yb) = at["thorax"], at[shoulder]
        assert not target[(ya + yb) // 2, (xa + xb) // 2].any(), shoulder
    assert len(MPII16.limbs) == len(MMPOSE_MPII_LINKS)


def test_mpii_val_file_is_the_val_split(tmp_path: Path):
    """MMPose's `mpii_val.json` is the split MPII results are reported on: a build pointed at it
    puts every pair in `val`. Its pairs were hashed like a split-less source's, most into `train`,
    so the benchmark's images were trained on when a build read both files."""
    import yaml
    from PIL import Image

    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config

    root = tmp_path / "mpii"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    people = []
    for i in range(8):
        Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(root / "images" / f"{i:09d}.jpg", quality=90)
        people.append(mpii_person(f"{i:09d}.jpg", {j: (40.0 + 5 * j, 30.0 + 4 * j, 1) for j in range(16)}))
    (root / "annotations" / "mpii_val.json").write_text(json.dumps(people))
    config = {"output": str(tmp_path / "out"), "image": {"size": 64}, "split": {"val_fraction": 0.5},
              "sources": [{"name": "mpii", "type": "mpii", "path": str(root), "num_shards": 1,
                           "annotation_file": "annotations/mpii_val.json", "pairs_per_sentence": 4}],
              "tokenizer": {"enabled": False}, "beam": {"direct_num_workers": 1, "direct_running_mode": "in_memory"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    summary = run_build(load_config(str(tmp_path / "c.yaml"))).summary["sources"]["mpii"]
    assert summary["by_split"] == {"val": {"images": 16, "sentences": 2}}
    assert [p.name for p in (tmp_path / "out" / "rendered" / "mpii").iterdir()] == ["val"]


def test_mpii_split_of_hrnets_files_and_mpiis_own_release(tmp_path: Path):
    """HRNet's `annot/valid.json` (MMPose's form, the same Tompson split) is `val` too, its
    `train.json` hashed. MPII's own `mpii_human_pose_v1_u12_1.mat` (a MATLAB v5 struct RELEASE,
    here written by scipy as MATLAB writes it) was refused as "not UTF-8 text (at byte 132)",
    blamed on `path`; it is read now, and its pairs hashed (it holds no validation split)."""
    from scipy.io import savemat

    from sources.mpii import MpiiSource
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.unit_render import list_units

    (tmp_path / "images").mkdir()
    (tmp_path / "annot").mkdir()
    person = mpii_person("a.jpg", {j: (10.0 + j, 20.0 + j, 1) for j in range(16)})
    for name in ("valid.json", "train.json"):
        (tmp_path / "annot" / name).write_text(json.dumps([person, {"image": ""}]))
        source = MpiiSource("mpii", str(tmp_path), annotation_file=f"annot/{name}")
        hints = {type(i).__name__: i.split_hint for unit in source.units() for i in source.read(unit)}
        assert hints == {"PairRecord": "val", "Reject": "val"} if name == "valid.json" else \
            {"PairRecord": None, "Reject": None}, name
    point = {"id": 0, "x": 10.0, "y": 20.0, "is_visible": 1}
    release = {"annolist": np.array([{"image": {"name": "a.jpg"}, "annorect": {"x1": 1, "y1": 1, "x2": 9, "y2": 9,
                                                                                 "annopoints": {"point": [point]}}}]),
               "img_train": np.array([[1]]), "single_person": np.array([[1]]), "act": {"cat_name": "sports"}}
    savemat(tmp_path / "mpii_human_pose_v1_u12_1.mat", {"RELEASE": release})
    config = parse_config({"output": str(tmp_path.parent / "out"), "sources": [
        {"name": "mpii", "type": "mpii", "path": str(tmp_path), "annotation_file": "mpii_human_pose_v1_u12_1.mat"}]})
    assert len(list_units(config)) == 1
    release_source = MpiiSource("mpii", str(tmp_path), annotation_file="mpii_human_pose_v1_u12_1.mat")
    items = [i for unit in release_source.units() for i in release_source.read(unit)]
    assert [(i.key, type(i).__name__, i.split_hint) for i in items] == [("mpii-a-pose", "PairRecord", None)]


def test_mpii_release_checked_with_no_file_to_spare_is_the_machines_error(tmp_path: Path, monkeypatch):
    """MPII's own .mat release (scipy writes it as MATLAB does) is opened to see whether it is a .mat:
    an opening that meets too many open files (EMFILE) must not make it read as JSON ('not UTF-8
    text (at byte 132)'). It is this machine's `MachineError`; with files to spare the file is read
    (this one lacks `annolist`: named so)."""
    import errno
    import os

    from scipy.io import savemat

    from sources import fsio
    from sources.mpii import MpiiSource
    from sources.paths import ConfiguredValueMismatch
    from sources.records import MachineError

    (tmp_path / "images").mkdir()
    savemat(tmp_path / "mpii_human_pose_v1_u12_1.mat", {"RELEASE": {"img_train": np.array([[1]])}})
    source = MpiiSource("mpii", str(tmp_path), annotation_file="mpii_human_pose_v1_u12_1.mat")
    real_open, opened = fsio.open_file, []

    def open_file(uri, *args, **kwargs):  # the descriptor table full at the file's first opening
        opened.append(uri)
        if len(opened) == 1:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), uri)
        return real_open(uri, *args, **kwargs)

    with monkeypatch.context() as full:
        full.setattr(fsio, "open_file", open_file)
        with pytest.raises(MachineError, match=r"reading mpii_human_pose_v1_u12_1\.mat: \[Errno 24\]"):
            source.units()
    with pytest.raises(ConfiguredValueMismatch, match="RELEASE has no annolist or img_train"):
        source.units()


def test_mpii_annotation_file_that_is_a_folder_is_a_config_error(tmp_path: Path):
    """An `annotation_file` naming a folder (or a file this user cannot read): the check for MPII's
    own .mat release opened it again and raised IsADirectoryError out of `list_units` (a crash where
    the last landing said which field names what)."""
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.unit_render import list_units

    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    config = parse_config({"output": str(tmp_path.parent / "out"), "sources": [
        {"name": "mpii", "type": "mpii", "path": str(tmp_path), "annotation_file": "annotations"}]})
    with pytest.raises(ConfigError) as caught:
        list_units(config)
    assert "annotations" in str(caught.value) and "cannot be read" in str(caught.value)


def _middlebury_pfm(disparity: np.ndarray, little_endian: bool) -> bytes:
    """A PFM as Middlebury's SDK writes disp0.pfm: `Pf`, `<width> <height>`, the scale (negative:
    little-endian floats), then the rows from the bottom one up; inf where the disparity is unknown."""
    height, width = disparity.shape
    rows = np.flipud(disparity).astype("<f4" if little_endian else ">f4")
    return f"Pf\n{width} {height}\n{-1.0 if little_endian else 1.0}\n".encode() + rows.tobytes()


@pytest.mark.parametrize("little_endian", [True, False])
def test_pfm_read_as_middleburys_reader_and_cut_short_is_a_map_error(little_endian: bool):
    """Middlebury's readPFM: the scale's sign gives the byte order, the rows run bottom-up. A file
    cut short by a byte count that is no whole float raised NumPy's ValueError ("buffer size must
    be a multiple of element size") out of `decode_depth`, which promises a `MapError`: its pair
    crashed its render instead of being a counted reject."""
    from transforms.maps import MapError, decode_depth

    disparity = np.arange(12, dtype=np.float32).reshape(3, 4) * 1.5
    disparity[0, 0] = np.inf  # unknown, as Middlebury writes it
    data = _middlebury_pfm(disparity, little_endian)
    read = decode_depth(data, "pfm")
    assert read.dtype == np.float32 and np.array_equal(read, disparity)  # row 0 is the top row
    for cut in range(1, 9):
        with pytest.raises(MapError) as caught:
            decode_depth(data[:-cut], "pfm")
        assert caught.value.reason == "truncated_annotation"


def test_co3d_depth_is_measured_only_where_its_depth_mask_says(tmp_path: Path):
    """A CO3D category as the download lays it out: `<category>/<sequence>/images/frameNNNNNN.jpg`,
    `depths/frameNNNNNN.jpg.geometric.png` (float16 bits in uint16), `depth_masks/frameNNNNNN.png`
    (1-bit), named by `frame_annotations.jgz`'s `depth.path` and `depth.mask_path`. CO3D's loader
    keeps depth only where the depth mask is set (its MVS depth elsewhere is not trusted); this
    reader drew the whole map, so the untrusted right half came out coloured as measured depth.
    Now it is black (no depth), the left half as before."""
    from PIL import Image

    trusted = np.zeros((16, 16), bool)
    trusted[:, :8] = True
    pairs, depth, seq = _co3d_category(tmp_path, 16, 1.5, lambda path: Image.fromarray(trusted).convert("1").save(path))
    assert Image.open(seq / "depth_masks/frame000001.png").mode == "1"  # 1-bit, as CO3D's
    assert [p.key for p in pairs] == ["co3d-teddybear-34_1403_4393-f000001-depth",
                                      "co3d-teddybear-34_1403_4393-f000002-depth"]
    assert pairs[0].annotation["valid_mask_uri"].endswith("teddybear/34_1403_4393/depth_masks/frame000001.png")
    result = render_pair(pairs[0], settings("squash", 16))
    assert not isinstance(result, Reject), result
    _, target = (decode_png(png) for png in result.images)
    assert (target[:, 8:] == 0).all()  # untrusted: no depth
    expected = depth_to_colour(np.where(trusted, depth.astype(np.float32) * 1.5, 0))
    assert np.array_equal(target, expected) and (target[:, :8].sum(axis=2) > 0).all()
    # a depth mask of another aspect ratio than its depth map cannot say which pixels it means
    Image.fromarray(np.ones((8, 16), bool)).convert("1").save(seq / "depth_masks" / "frame000002.png")
    assert render_pair(pairs[1], settings("squash", 16)).reason == "annotation_size_mismatch"
    (seq / "depth_masks" / "frame000002.png").unlink()  # named, and not there: never drawn unmasked
    assert render_pair(pairs[1], settings("squash", 16)).reason == "missing_annotation"


def _co3d_category(tmp_path: Path, size: int, scale: float,
                   write_mask: Callable[[Path], None]) -> tuple[list[PairRecord], np.ndarray, Path]:
    """A CO3D category as the download lays it out: `<category>/<sequence>/images/frameNNNNNN.jpg`,
    `depths/frameNNNNNN.jpg.geometric.png` (float16 bits in uint16), `depth_masks/frameNNNNNN.png`
    (written by `write_mask`), named by `frame_annotations.jgz`'s `depth.path`, `scale_adjustment`
    and `depth.mask_path`: two frames of size x size, depth 1..4 m (farther to the right). Its
    depth pairs as the source reads them, the depth map, the sequence's folder."""
    import gzip

    from PIL import Image

    from sources.multiview import Co3dSource

    seq = tmp_path / "teddybear" / "34_1403_4393"
    for folder in ("images", "depths", "depth_masks"):
        (seq / folder).mkdir(parents=True, exist_ok=True)
    depth = np.tile(np.linspace(1.0, 4.0, size, dtype=np.float16), (size, 1))
    base, frames = "teddybear/34_1403_4393", []
    for number in (1, 2):
        stem = f"frame{number:06d}"
        Image.fromarray(np.full((size, size, 3), 120, np.uint8)).save(seq / "images" / f"{stem}.jpg", quality=95)
        Image.fromarray(depth.view(np.uint16)).save(seq / "depths" / f"{stem}.jpg.geometric.png")
        write_mask(seq / "depth_masks" / f"{stem}.png")
        frames.append({"sequence_name": "34_1403_4393", "frame_number": number,
                       "image": {"path": f"{base}/images/{stem}.jpg", "size": [size, size]},
                       "depth": {"path": f"{base}/depths/{stem}.jpg.geometric.png", "scale_adjustment": scale,
                                 "mask_path": f"{base}/depth_masks/{stem}.png"},
                       "viewpoint": {"R": np.eye(3).tolist(), "T": [0.0, 0.0, 3.0 + number]}})
    with gzip.open(tmp_path / "teddybear" / "frame_annotations.jgz", "wt") as out:
        json.dump(frames, out)
    source = Co3dSource("co3d", str(tmp_path), views=2, pair_tasks=("depth",))
    return [i for u in source.units() for i in source.read(u) if isinstance(i, PairRecord)], depth, seq


def _co3d_frame(tmp_path: Path, make_mask: list[str]) -> tuple[PairRecord, np.ndarray, Path]:
    """One CO3D pair of a 32x32 frame whose depth mask ImageMagick draws (`convert` with
    `make_mask`); also its depth and its mask's path."""
    import subprocess

    pairs, depth, seq = _co3d_category(
        tmp_path, 32, 1.0, lambda path: subprocess.run(["convert", *make_mask, str(path)], check=True))
    return pairs[0], depth.astype(np.float32), seq / "depth_masks" / "frame000001.png"


def _co3d_kept(mask_path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Where CO3D's loader keeps depth: `_load_1bit_png_mask` (Pillow's convert("L") > 0),
    resized nearest to the depth map's size as torch's `interpolate(mode="nearest")` does."""
    import torch
    from PIL import Image

    with Image.open(mask_path) as image:
        mask = torch.from_numpy((np.array(image.convert("L")) > 0).astype(np.float32))
    return torch.nn.functional.interpolate(mask[None, None], size=shape, mode="nearest")[0, 0].numpy() > 0


@pytest.mark.parametrize("make_mask", [
    ["-size", "32x32", "xc:black", "-fill", "white", "-draw", "rectangle 0,0 15,31", "-type", "bilevel"],
    ["-size", "32x32", "xc:black", "-fill", "red", "-draw", "rectangle 0,0 15,31", "-define", "png:color-type=2"],
    ["-size", "32x32", "xc:black", "-fill", "rgb(0,0,1)", "-draw", "rectangle 0,0 15,31",
     "-fill", "rgb(0,1,0)", "-draw", "rectangle 0,0 7,31", "-define", "png:color-type=2"],
    ["-size", "32x32", "xc:black", "-fill", "red", "-draw", "rectangle 0,0 15,31", "-type", "palette"],
    ["-size", "16x16", "xc:black", "-fill", "white", "-draw", "rectangle 0,0 7,15", "-type", "bilevel"],
    ["-size", "64x64", "xc:black", "-fill", "white", "-draw", "rectangle 0,0 20,63", "-type", "bilevel"],
], ids=["1bit", "red_rgb", "dim_rgb", "red_palette", "half_size", "double_size"])
def test_co3d_depth_mask_is_read_as_co3ds_loader_reads_it(tmp_path: Path, make_mask: list[str]):
    """Depth masks ImageMagick writes in the forms a PNG can take: kept where CO3D's loader keeps
    them (Pillow's convert("L") > 0, resized nearest), read back with Pillow and torch. A coloured
    mask was read from its blue channel (red on black kept nothing: an all-black target), and one of
    half or double the depth's size at its aspect ratio was `annotation_size_mismatch`."""
    pair, depth, mask_path = _co3d_frame(tmp_path, make_mask)
    kept = _co3d_kept(mask_path, depth.shape)
    assert 0 < kept.sum() < kept.size
    result = render_pair(pair, settings("squash", 32))
    assert not isinstance(result, Reject), result
    _, target = (decode_png(png) for png in result.images)
    assert np.array_equal(target, depth_to_colour(np.where(kept, depth, 0)))
    assert (target[~kept] == 0).all() and (target[kept].sum(axis=1) > 0).all()


@pytest.mark.parametrize("make_mask", [
    ["-size", "32x32", "xc:black", "-type", "bilevel"],
    ["-size", "32x32", "xc:black", "-fill", "white", "-draw", "rectangle 0,0 15,31", "-type", "bilevel"],
], ids=["all_black_mask", "mask_on_no_depth"])
def test_co3d_depth_with_no_valid_pixel_left_is_an_empty_target(tmp_path: Path, make_mask: list[str]):
    """An all-black depth mask (nothing trusted), or a mask set only where the depth map has no
    depth, left no valid pixel: the pair came out as an all-black target counted as good. Now it is
    an `empty_target` reject."""
    pair, depth, _ = _co3d_frame(tmp_path, make_mask)
    if "rectangle 0,0 15,31" in make_mask:  # depth only where the mask is not set
        from PIL import Image

        depth[:, :16] = 0
        Image.fromarray(depth.astype(np.float16).view(np.uint16)).save(pair.annotation["depth_uri"])
    result = render_pair(pair, settings("squash", 32))
    assert isinstance(result, Reject) and result.reason == "empty_target", result


def _mpii_images(root: Path, names: list[str]) -> None:
    from PIL import Image

    (root / "images").mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(np.full((60, 80, 3), 90, np.uint8)).save(root / "images" / name, quality=90)


def test_mpii_own_release_reads_as_hrnets_json_encodes_its_people(tmp_path: Path):
    """MPII's `mpii_human_pose_v1_u12_1.mat` (scipy writes it in the release's layout,
    `tests/mpii_release.py`) was refused ("a MATLAB .mat file ... this reader takes MMPose's JSON").
    It reads now as HRNet's JSON (the one MMPose ships) encodes people, each train image's pair in
    this test the very one that JSON of the same people (`mmpose_entries`) gives:
    joints by `id` (listed out of order), `is_visible` 1, 0, '1' or [] all annotated, a joint MPII
    left out unlabelled, a person without annopoints left out, one person (a 1 x 1 annorect) and one
    point (a 1 x 1 point array) read as MATLAB keeps them. A test image (img_train 0) is
    `unlabeled_split`, a train image with no annotated person `no_pose_annotations`, a point whose id
    is no joint `bad_annotation` naming MATLAB's own place of it."""
    from scipy.io import loadmat

    from mpii_release import Image, Person, mmpose_entries, write_release
    from sources.mpii import MpiiSource

    full = [(j, 10.0 + 3 * j, 50.0 - 2 * j, [1.0, 0.0, "1", None][j % 4]) for j in range(16)]
    images = [
        Image("000001163.jpg", True, [Person(full[::-1]), Person(None), Person([(9, 40.0, 5.0, None)])]),
        Image("000003072.jpg", True, [Person([(j, 20.0 + j, 30.0, 1.0) for j in (0, 1, 2, 6, 7, 8, 9, 12, 13)])]),
        Image("000004812.jpg", False, [Person(None, (40.0, 30.0)), Person(None, (60.0, 20.0))]),
        Image("000015774.jpg", True, [Person(None)]),
        Image("000017855.jpg", True, [Person([(16, 20.0, 20.0, 1.0)])]),
        Image("000019043.jpg", True, [Person(None)], person_fields=("scale", "objpos")),  # no annopoints field
        Image("000022704.jpg", True),  # annorect []
    ]
    _mpii_images(tmp_path / "mat", [i.name for i in images])
    _mpii_images(tmp_path / "json", [i.name for i in images])
    write_release(tmp_path / "mat" / "mpii_human_pose_v1_u12_1.mat", images)
    (tmp_path / "json" / "annotations").mkdir()
    (tmp_path / "json" / "annotations" / "mpii_train.json").write_text(json.dumps(mmpose_entries(images[:2])))
    # the file as MATLAB lays it out, read back by scipy's default (record arrays, nothing squeezed)
    release = loadmat(tmp_path / "mat" / "mpii_human_pose_v1_u12_1.mat")["RELEASE"][0, 0]
    assert release["annolist"].shape == (1, 7) and release["img_train"].tolist() == [[1, 1, 0, 1, 1, 1, 1]]
    assert release["annolist"][0, 1]["annorect"].shape == (1, 1)
    assert release["annolist"][0, 0]["annorect"][0, 2]["annopoints"][0, 0]["point"].shape == (1, 1)
    assert "annopoints" not in release["annolist"][0, 2]["annorect"].dtype.names

    mat = MpiiSource("mpii", str(tmp_path / "mat"), annotation_file="mpii_human_pose_v1_u12_1.mat")
    from_mat = {i.key: i for u in mat.units() for i in mat.read(u)}
    mmpose = MpiiSource("mpii", str(tmp_path / "json"))
    from_json = {i.key: i for u in mmpose.units() for i in mmpose.read(u)}
    pairs = ["mpii-000001163-pose", "mpii-000003072-pose"]
    assert sorted(from_json) == pairs
    for key in pairs:
        assert isinstance(from_mat[key], PairRecord)
        assert (from_mat[key].annotation, from_mat[key].lineage, from_mat[key].split_hint) == \
            (from_json[key].annotation, from_json[key].lineage, from_json[key].split_hint)
    first, single = (from_mat[k].annotation["people"] for k in pairs)
    assert len(first) == 2 and np.array(first[0]).reshape(16, 3).tolist() == \
        [[9.5 + 3 * j, 49.5 - 2 * j, 2.0] for j in range(16)]
    assert np.array(first[1]).reshape(16, 3)[9].tolist() == [39.5, 4.5, 2.0] and \
        np.array(first[1]).reshape(16, 3)[:, 2].sum() == 2.0
    assert [v for j, v in enumerate(np.array(single[0]).reshape(16, 3)[:, 2])] == \
        [2.0 if j in (0, 1, 2, 6, 7, 8, 9, 12, 13) else 0.0 for j in range(16)]
    rejects = {k: (r.reason, r.input) for k, r in from_mat.items() if isinstance(r, Reject)}
    assert rejects == {
        "mpii-000004812-pose": ("unlabeled_split", "mpii_human_pose_v1_u12_1.mat annolist(3): 000004812.jpg"),
        "mpii-000015774-pose": ("no_pose_annotations", "mpii_human_pose_v1_u12_1.mat annolist(4): 000015774.jpg"),
        "mpii-000017855-pose": ("bad_annotation",
                                "mpii_human_pose_v1_u12_1.mat annolist(5).annorect(1): 000017855.jpg"),
        "mpii-000019043-pose": ("no_pose_annotations", "mpii_human_pose_v1_u12_1.mat annolist(6): 000019043.jpg"),
        "mpii-000022704-pose": ("no_pose_annotations", "mpii_human_pose_v1_u12_1.mat annolist(7): 000022704.jpg")}
    assert "annopoints.point(1).id is not a joint 0..15" in from_mat["mpii-000017855-pose"].detail
    assert [from_mat[k].split_hint for k in sorted(rejects)] == ["val", None, None, None, None]  # counted in val, as Cityscapes' test
    # drawn as the JSON's pair is: the same target, pixel for pixel
    drawn = [render_pair(pairs_of[pairs[0]], settings("pad", 64)) for pairs_of in (from_mat, from_json)]
    assert drawn[0].images == drawn[1].images


def test_mpii_release_is_judged_before_scipy_reads_it(tmp_path: Path, monkeypatch):
    """What the release's compressed variables inflate to is counted before scipy reads them (scipy
    holds up to 4 times that at its peak): past the budget the file stops `check`, naming the field."""
    from mpii_release import Image, Person, write_release
    from sources import mpii_release
    from sources.mat_files import mat_inflated_bytes
    from sources.mpii import MpiiSource
    from sources.paths import ConfiguredValueMismatch

    _mpii_images(tmp_path, ["a.jpg"])
    write_release(tmp_path / "mpii_human_pose_v1_u12_1.mat", [Image("a.jpg", True, [Person([(0, 5.0, 5.0, 1.0)])])])
    inflated = mat_inflated_bytes((tmp_path / "mpii_human_pose_v1_u12_1.mat").read_bytes(), 1 << 30)
    assert inflated > (tmp_path / "mpii_human_pose_v1_u12_1.mat").stat().st_size
    monkeypatch.setattr(mpii_release, "MAX_RELEASE_INFLATED_BYTES", inflated - 1)
    with pytest.raises(ConfiguredValueMismatch) as caught:
        MpiiSource("mpii", str(tmp_path), annotation_file="mpii_human_pose_v1_u12_1.mat").units()
    assert caught.value.field == "annotation_file" and "inflate past" in str(caught.value)


def _inflating_release(path: Path, inflated: int) -> None:
    """A .mat whose one compressed variable, `RELEASE` (uint8 zeros), inflates to `inflated` bytes:
    the MAT v5 layout (header, miCOMPRESSED holding a miMATRIX) written a chunk at a time, so a file
    of a few hundred KB asks scipy for hundreds of MB without the test holding them."""
    import struct
    import zlib

    name = b"RELEASE"
    matrix = (struct.pack("<IIII", 6, 8, 9, 0) + struct.pack("<IIii", 5, 8, 1, inflated)
              + struct.pack("<II", 1, len(name)) + name.ljust(8, b"\0") + struct.pack("<II", 2, inflated))
    pad = -inflated % 8
    compress = zlib.compressobj(9)
    parts = [compress.compress(struct.pack("<II", 14, len(matrix) + inflated + pad) + matrix)]
    left, zeros = inflated + pad, bytes(1 << 24)
    while left:
        parts.append(compress.compress(zeros[:min(left, len(zeros))]))
        left -= min(left, len(zeros))
    body = b"".join(parts) + compress.flush()
    header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + bytes(8) + struct.pack("<H", 0x0100) + b"IM"
    path.write_bytes(header + struct.pack("<II", 15, len(body)) + body)


def test_mpii_release_budget_holds_its_worst_shape(tmp_path: Path):
    """The budget was 512 MiB inflated, and scipy builds nested 1 x 1 structs at 4 times their
    inflated bytes (the entries made of them as much again): a 1.2 MB file of 400k one-point people
    grew a worker by 1.6 GiB, one at the budget would by 3.7 GiB. A file inflating to 200 MiB (over
    the release's 135 MB by half) is refused now, before scipy reads it."""
    from sources.mat_files import mat_inflated_bytes
    from sources.mpii import MpiiSource
    from sources.paths import ConfiguredValueMismatch

    _mpii_images(tmp_path, ["a.jpg"])
    _inflating_release(tmp_path / "release.mat", 200 << 20)
    assert (tmp_path / "release.mat").stat().st_size < 1 << 20
    assert mat_inflated_bytes((tmp_path / "release.mat").read_bytes(), 1 << 30) >= 200 << 20
    with pytest.raises(ConfiguredValueMismatch) as caught:
        MpiiSource("mpii", str(tmp_path), annotation_file="release.mat").units()
    assert caught.value.field == "annotation_file" and "inflate past 192 MiB" in str(caught.value)


def test_mpii_release_of_many_empty_cells_is_refused_before_scipy_builds_them(tmp_path: Path, monkeypatch):
    """A RELEASE that is a cell of empty matrices inflates to 8 bytes a cell, but scipy built an
    ndarray of each (a 93 KB file of 8M: 1.3 GB, 19 s, within the inflated budget). Its cells are
    counted from the headers before scipy reads it: past `MAX_RELEASE_OBJECTS`, `check` names the file."""
    from mat_forge import EMPTY, MX_CELL, mat_file, matrix

    from sources import mpii_release
    from sources.mpii import MpiiSource
    from sources.paths import ConfiguredValueMismatch

    _mpii_images(tmp_path, ["a.jpg"])
    monkeypatch.setattr(mpii_release, "MAX_RELEASE_OBJECTS", 5000)
    (tmp_path / "release.mat").write_bytes(mat_file(matrix(MX_CELL, [1, 6000], b"RELEASE", EMPTY * 6000)))
    with pytest.raises(ConfiguredValueMismatch) as caught:
        MpiiSource("mpii", str(tmp_path), annotation_file="release.mat").units()
    assert caught.value.field == "annotation_file" and "RELEASE holds more than 5000 cells and fields" in str(caught.value)


@pytest.mark.parametrize("cap, outcome", [("MAX_RELEASE_IMAGES", "lists 3 images, over the 2"),
                                          ("MAX_RELEASE_PEOPLE", "holds 4 people, over the 2")])
def test_mpii_release_images_and_people_are_counted_before_entries_are_made(tmp_path: Path, monkeypatch,
                                                                           cap, outcome):
    """Within the inflated budget, a release of more images or people than a worker holds as entries
    (each about 2 KiB, as many as the structs scipy made of them) was read whole: they are counted
    first now, and past twice the release's counts the file stops `check`, naming the field."""
    from mpii_release import Image, Person, write_release
    from sources import mpii_release
    from sources.mpii import MpiiSource
    from sources.paths import ConfiguredValueMismatch

    _mpii_images(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    person = Person([(0, 5.0, 5.0, 1.0)])
    write_release(tmp_path / "release.mat", [Image("a.jpg", True, [person, person]), Image("b.jpg", True, [person]),
                                             Image("c.jpg", False, [person])])
    monkeypatch.setattr(mpii_release, cap, 2)
    with pytest.raises(ConfiguredValueMismatch) as caught:
        MpiiSource("mpii", str(tmp_path), annotation_file="release.mat").units()
    assert caught.value.field == "annotation_file" and outcome in str(caught.value)


@pytest.mark.parametrize("kind", ["mat", "json"])
def test_mpii_entries_kept_parsed_count_what_they_hold(tmp_path: Path, kind):
    """The parsed entries of two annotation files were kept with no byte limit, each counted as its
    file's bytes: a release's entries take about 2 KiB each, 40 times its compressed bytes. What a
    kept parse counts is at least what its entries hold now (tracemalloc), so `CACHED_ENTRIES_BYTES`
    bounds them."""
    import tracemalloc

    from mpii_release import Image, Person, mmpose_entries, write_release
    from sources import mpii
    from sources.mpii_release import read_release

    names = [f"{i:09d}.jpg" for i in range(100)]
    images = [Image(n, True, [Person([(j, 5.0 + j, 9.0, 1.0) for j in range(16)])] * 2) for n in names]
    uri = tmp_path / ("release.mat" if kind == "mat" else "mpii_train.json")
    if kind == "mat":
        write_release(uri, images)
    else:
        uri.write_text(json.dumps(mmpose_entries(images)))
    read_release(str(tmp_path / "release.mat")) if kind == "mat" else None  # scipy's imports, untraced
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        entries = read_release(str(uri)) if kind == "mat" else json.loads(uri.read_text())
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(entries) == 200 and held > 20 * uri.stat().st_size // (10 if kind == "json" else 1)
    mpii._load_entries.cache_clear()
    assert len(mpii._load_entries(str(uri))) == 200
    assert mpii._load_entries.weight(str(uri)) >= held


@pytest.mark.parametrize("release, outcome", [
    (5.0, "RELEASE has no annolist or img_train"),
    ({"annolist": "text", "img_train": np.array([[1.0]])}, "bad_annotation"),
    ({"annolist": {"image": {"name": 3.0}, "annorect": np.zeros((0, 0))}, "img_train": np.array([[1.0]])}, "bad_annotation"),
    ({"annolist": {"image": {"name": "a.jpg"}, "annorect": {"annopoints": {"point": {"x": "a", "y": 1.0, "id": 0.0}}}},
      "img_train": np.array([[1.0]])}, "bad_annotation"),
    ({"annolist": {"image": {"name": "a.jpg"}, "annorect": {"annopoints": {"point": 7.0}}},
      "img_train": np.array([[1.0]])}, "bad_annotation"),
    ({"annolist": {"image": {"name": "a.jpg"}, "annorect": np.array([[1.0, 2.0]])}, "img_train": np.array([[1.0]])},
     "no_pose_annotations"),
    ({"annolist": {"image": {"name": "a.jpg"}}, "img_train": np.array([[1.0, 0.0]])}, "lists 1 images, img_train 2"),
    ({"annolist": {"image": {"name": "a.jpg"}}, "img_train": np.array([[2.0]])}, "bad_annotation"),
])
def test_mpii_release_of_another_shape_is_a_reject_or_names_the_file(tmp_path: Path, release, outcome):
    """A .mat that is not the release's shape (scipy writes it) never raises out of the reader: an
    image that cannot be read is its reject, a file without the release's struct stops `check`."""
    from scipy.io import savemat

    from sources.mpii import MpiiSource
    from sources.paths import ConfiguredValueMismatch

    _mpii_images(tmp_path, ["a.jpg"])
    savemat(tmp_path / "release.mat", {"RELEASE": release})
    source = MpiiSource("mpii", str(tmp_path), annotation_file="release.mat")
    if outcome not in ("bad_annotation", "no_pose_annotations"):  # a message of the whole file
        with pytest.raises(ConfiguredValueMismatch, match=outcome):
            source.units()
        return
    assert [i.reason for u in source.units() for i in source.read(u)] == [outcome]


def _kitti_depth_pair(tmp_path: Path, disparity: np.ndarray) -> PairRecord:
    """One KITTI 2015 depth pair: `image_2/000000_10.png` and its `disp_noc_0` map (uint16,
    disparity * 256, 0 = no measurement) as OpenCV writes it (KITTI's devkit users do)."""
    from sources.stereo import StereoSource

    h, w = disparity.shape
    for folder in ("image_2", "disp_noc_0"):
        (tmp_path / "training" / folder).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(tmp_path / "training/image_2/000000_10.png"), np.full((h, w, 3), 90, np.uint8))
    cv2.imwrite(str(tmp_path / "training/disp_noc_0/000000_10.png"), disparity.astype(np.uint16))
    source = StereoSource("kitti", str(tmp_path), tasks=("depth",))
    (pair,) = [i for u in source.units() for i in source.read(u)]
    assert isinstance(pair, PairRecord) and "disparity_uri" in pair.annotation
    return pair


@pytest.mark.parametrize("case", ["kitti_all_zero", "kitti_measured_only_where_cropped", "co3d_no_mask_all_zero"])
def test_depth_without_a_mask_and_no_valid_pixel_is_an_empty_target(tmp_path: Path, case: str):
    """A disparity map with no measurement (all 0), one whose only measurements the centre crop
    cuts off, and a CO3D depth map of zeros whose frame has no depth mask: each drew an all-black
    target counted as good (only a depth mask that left nothing was `empty_target`). Now each is
    an `empty_target` reject, as the masked case is; a map with depth inside the crop still draws."""
    import gzip

    from PIL import Image

    if case.startswith("kitti"):
        disparity = np.zeros((32, 64), np.uint16)
        if case == "kitti_measured_only_where_cropped":
            disparity[:, :8] = 40 * 256  # the left 8 columns: center_crop to 32x32 keeps 16..47
        pair = _kitti_depth_pair(tmp_path, disparity)
        with Image.open(pair.annotation["disparity_uri"]) as written:  # read back by Pillow: 16-bit
            assert written.mode.startswith("I") and np.array_equal(np.asarray(written), disparity)
        policy = "center_crop"
    else:
        pairs, _, seq = _co3d_category(tmp_path, 32, 1.0, lambda path: None)
        with gzip.open(tmp_path / "teddybear" / "frame_annotations.jgz", "rt") as f:
            frames = json.load(f)
        for frame in frames:
            frame["depth"]["mask_path"] = None  # CO3D frames without a depth mask
        with gzip.open(tmp_path / "teddybear" / "frame_annotations.jgz", "wt") as out:
            json.dump(frames, out)
        Image.fromarray(np.zeros((32, 32), np.float16).view(np.uint16)).save(
            seq / "depths" / "frame000001.jpg.geometric.png")
        from sources.multiview import Co3dSource

        source = Co3dSource("co3d", str(tmp_path), views=2, pair_tasks=("depth",))
        pair = next(i for u in source.units() for i in source.read(u)
                    if isinstance(i, PairRecord) and "-f000001-" in i.key)
        assert "valid_mask_uri" not in pair.annotation
        policy = "squash"
    result = render_pair(pair, settings(policy, 32))
    assert isinstance(result, Reject) and (result.stage, result.reason) == ("annotation", "empty_target"), result
    if case == "kitti_measured_only_where_cropped":
        assert "crop" in result.detail
        kept = render_pair(pair, settings("squash", 32))  # squash keeps the measured columns
        assert not isinstance(kept, Reject) and decode_png(kept.images[1])[:, :4].sum() > 0
