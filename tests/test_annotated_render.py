"""Annotation targets checked by value on the real COCO sample, under every crop policy."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import FIXTURES
from sources.coco import CocoSource
from sources.records import PairRecord, Reject
from transforms.annotations import (
    COCO17,
    colour_of,
    depth_to_colour,
    joint_colours,
    normals_to_rgb,
    rgb_to_normals,
)
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
    assert render_pair(missing_image, settings("pad")).reason == "unreadable_file"
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
