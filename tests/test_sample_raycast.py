"""The ray-cast ground truth of the sample corpus: depth, normals, projections, camera
conventions, mannequin keypoints, COCO masks, and byte-identical rewrites."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from uvd_pipeline.sample import annotated, annotated_video, figure, multiview
from uvd_pipeline.sample import raycast as rc

GREY = rc.flat_texture((128, 128, 128))
STRIPES = np.repeat(np.array([[[200, 40, 40]], [[40, 40, 200]]], np.uint8), 4, axis=0)


def _pixel_rays_camera_frame(camera: rc.Camera) -> np.ndarray:
    """Unit ray directions through the pixel centres, in the OpenCV camera frame."""
    j, i = np.meshgrid(np.arange(camera.width) + 0.5, np.arange(camera.height) + 0.5)
    K = camera.intrinsics()
    rays = np.stack([(j - K[0, 2]) / K[0, 0], (i - K[1, 2]) / K[1, 1], np.ones_like(j)], axis=-1)
    return rays / np.linalg.norm(rays, axis=-1, keepdims=True)


def test_sphere_depth_is_the_analytic_distance():
    centre, radius = np.array([0.3, 0.2, 1.1]), 0.6
    camera = rc.look_at((0.5, -4.0, 1.5), centre, fov_deg=40, width=96, height=72)
    frame = rc.render([rc.Sphere(centre, radius, STRIPES, 1, 1)], camera)
    u = _pixel_rays_camera_frame(camera)
    c = camera.R @ centre + camera.t  # the centre in the camera frame
    along = u @ c
    disc = along**2 - (c @ c - radius**2)
    hit = disc > 1e-9
    distance = along - np.sqrt(np.where(hit, disc, 0.0))
    z = distance * u[..., 2]
    assert frame.alpha.any()
    # Masks agree except where a ray grazes the silhouette.
    assert np.array_equal(frame.alpha > 0, hit) or np.mean((frame.alpha > 0) != hit) < 1e-3
    both = hit & (frame.alpha > 0)
    np.testing.assert_allclose(frame.depth[both], z[both], rtol=1e-5)
    assert np.all(frame.depth[~(frame.alpha > 0)] == 0)


def test_normals_are_unit_and_face_the_camera():
    prims = [
        rc.Plane((0, 0, 0), (0, 0, 1), GREY, 2, 1),
        rc.Sphere((0, 0, 0.5), 0.5, STRIPES, 1, 2),
        rc.Box((1.2, 0.4, 0.3), (0.3, 0.2, 0.3), rc.rotation_z(0.7), STRIPES, 3, 3),
    ]
    camera = rc.look_at((3.5, -2.5, 1.6), (0.3, 0.0, 0.4), fov_deg=55, width=80, height=64)
    frame = rc.render(prims, camera)
    hit = frame.alpha > 0
    n = frame.normals[hit]
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    view = _pixel_rays_camera_frame(camera)[hit]
    assert np.all(np.einsum("ij,ij->i", n, view) < 0)
    assert np.all(frame.normals[~hit] == 0)
    # On the sphere the normal is (P - C) / r, P recovered from depth in the camera frame.
    on_sphere = frame.instance == 2
    K = camera.intrinsics()
    j, i = np.nonzero(on_sphere)[1] + 0.5, np.nonzero(on_sphere)[0] + 0.5
    z = frame.depth[on_sphere]
    points = np.stack([(j - K[0, 2]) / K[0, 0] * z, (i - K[1, 2]) / K[1, 1] * z, z], axis=1)
    centre = camera.R @ np.array([0, 0, 0.5]) + camera.t
    np.testing.assert_allclose(frame.normals[on_sphere], (points - centre) / 0.5, atol=1e-4)


def test_projected_centre_is_the_mask_centroid():
    centre = np.array([0.15, 0.1, 0.05])
    camera = rc.look_at((0.0, -5.0, 0.0), (0.0, 0.0, 0.0), fov_deg=40, width=128, height=96)
    frame = rc.render([rc.Sphere(centre, 0.25, STRIPES, 1, 1)], camera)
    rows, cols = np.nonzero(frame.alpha)
    xy, z = rc.project(camera, centre[None])
    assert z[0] > 0
    centroid = np.array([cols.mean() + 0.5, rows.mean() + 0.5])  # pixel-edge coordinates
    assert np.all(np.abs(xy[0] - centroid) < 0.5), (xy[0], centroid)


@pytest.mark.parametrize("position", [(1.8, 0.3, 0.9), (-1.2, -1.5, -0.8), (0.2, 2.0, 0.1)])
def test_camera_conventions_give_the_same_centre(position):
    camera = rc.look_at(position, (0.05, -0.02, 0.1), fov_deg=50, width=160, height=120)
    rt = camera.blender_rt()
    R, t = rt[:, :3], rt[:, 3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(-R.T @ t, position, atol=1e-9)
    # Blender cameras look down their -Z axis, +Y up.
    towards = R @ np.array([0.05, -0.02, 0.1]) + t
    np.testing.assert_allclose(towards / np.linalg.norm(towards), [0, 0, -1], atol=1e-9)
    view = camera.pytorch3d()
    R3, T3 = np.array(view["R"]), np.array(view["T"])
    np.testing.assert_allclose(-T3 @ R3.T, position, atol=1e-9)
    # PyTorch3D NDC (+X left, +Y up, isotropic) lands on the same pixels as project().
    points = np.random.default_rng(0).uniform(-0.3, 0.3, (10, 3))
    xv = points @ R3 + T3
    f, p = np.array(view["focal_length"]), np.array(view["principal_point"])
    ndc = f * xv[:, :2] / xv[:, 2:] + p
    half = np.array([camera.width, camera.height]) / 2
    pixels = half - ndc * half.min()
    xy, _ = rc.project(camera, points)
    np.testing.assert_allclose(pixels, xy, atol=1e-6)


def test_visible_keypoints_land_on_their_body():
    rng = np.random.default_rng(7)
    checked = hidden = 0
    for trial in range(6):
        skel = figure.skeleton(figure.random_pose(rng), figure.Placement(0.0, 0.0, float(rng.uniform(0, 6.3))))
        look = figure.Look(GREY, STRIPES, GREY)
        body = figure.body(skel, look, class_id=1, instance_id=5)
        occluder = rc.Box((1.2, 0.0, 0.5), (0.1, 0.4, 0.5), np.eye(3), GREY, 2, 6)
        prims = [rc.Plane((0, 0, 0), (0, 0, 1), GREY, 3, 0)] + body + [occluder]
        camera = rc.look_at((4.0, 0.4 * trial - 1.0, 1.3), (0.0, 0.0, 0.9), fov_deg=50, width=160, height=120)
        frame = rc.render(prims, camera)
        v = figure.coco_visibility(camera, skel, prims)
        xy, _ = rc.project(camera, skel.keypoints)
        mask = np.pad(frame.instance == 5, 1)
        for (x, y), vis in zip(xy, v):
            if vis == 2:
                col, row = int(np.floor(x)) + 1, int(np.floor(y)) + 1
                assert mask[row - 1 : row + 2, col - 1 : col + 2].any(), (trial, x, y)
                checked += 1
        hidden += int((v == 1).sum())
    assert checked > 40 and hidden > 0
    assert figure.mpii_points(skel).shape == (16, 3) and figure.jhmdb_points(skel).shape == (15, 3)


def test_coco_json_loads_and_masks_match(tmp_path, monkeypatch):
    from pycocotools.coco import COCO

    monkeypatch.setattr(annotated, "COCO_SCENES", 6)
    annotated.write_coco(str(tmp_path), 0)
    coco = COCO(str(tmp_path / "annotations" / "instances_val.json"))
    keypoints = COCO(str(tmp_path / "annotations" / "person_keypoints_val.json"))
    assert keypoints.loadCats(1)[0]["skeleton"][0] == [16, 14]
    image_ids = sorted(coco.getImgIds())
    polygons = crowds = 0
    for index, image_id in enumerate(image_ids):
        _, scene, _, frame = annotated.coco_view(0, index)
        by_kind = {thing.instance_id: thing.kind for thing in scene.things}
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            truth = None
            for instance_id, kind in by_kind.items():
                candidate = frame.instance == instance_id
                if annotated.COCO_CLASSES[kind] == ann["category_id"] and candidate.sum() == ann["area"]:
                    truth = candidate
            assert truth is not None
            mask = coco.annToMask(ann).astype(bool)
            iou = (mask & truth).sum() / (mask | truth).sum()
            assert iou > (0.999 if ann["iscrowd"] else 0.9), iou
            polygons += int(not ann["iscrowd"])
            crowds += int(ann["iscrowd"])
            x, y, w, h = ann["bbox"]
            rows, cols = np.nonzero(truth)
            assert (x, y, w, h) == (cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)
    assert polygons > 5 and crowds >= 1
    for ann in keypoints.loadAnns(keypoints.getAnnIds()):
        assert len(ann["keypoints"]) == 51 and ann["num_keypoints"] == sum(v > 0 for v in ann["keypoints"][2::3])


def _digests(root: Path) -> dict[str, str]:
    out = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


SMALL = {  # module constants that shrink each family so that two writes stay fast (raycast views
    # at a quarter of their side: the same code, 1/16 of the rays)
    "objaverse": (multiview.write_objaverse, multiview, {"OBJAVERSE_OBJECTS": 1, "OBJAVERSE_SIZE": 64}),
    "co3d": (multiview.write_co3d, multiview, {"CO3D_FRAMES": 3, "CO3D_SIZE": (80, 60)}),
    "coco": (annotated.write_coco, annotated, {"COCO_SCENES": 2}),
    "mpii": (annotated.write_mpii, annotated, {"MPII_IMAGES": 2, "MPII_VAL": 1}),
    "ade20k": (annotated.write_ade20k, annotated, {"ADE_SPLITS": (("training", "train", 2), ("validation", "val", 1))}),
    "kitti": (annotated.write_kitti, annotated, {"KITTI_CROPS": 1, "KITTI_SCALES": (0.5,)}),
    "taskonomy": (annotated.write_taskonomy, annotated, {"TASKONOMY_POINTS": 1, "TASKONOMY_VIEWS": 1}),
    "vipseg": (annotated_video.write_vipseg, annotated_video, {"VIPSEG_VIDEOS": 1, "VIPSEG_FRAMES": 2}),
    "jhmdb": (annotated_video.write_jhmdb, annotated_video, {"JHMDB_VIDEOS": annotated_video.JHMDB_VIDEOS[-1:]}),
}


@pytest.mark.parametrize("family", sorted(SMALL))
def test_writers_give_the_same_bytes_twice(family, tmp_path, monkeypatch):
    writer, module, constants = SMALL[family]
    for name, value in constants.items():
        monkeypatch.setattr(module, name, value)
    first, second = tmp_path / "a", tmp_path / "b"
    writer(str(first), 3)
    writer(str(second), 3)
    digests = _digests(first)
    assert digests and digests == _digests(second)


def test_objaverse_views_are_shuffled_orbits(tmp_path, monkeypatch):
    monkeypatch.setattr(multiview, "OBJAVERSE_OBJECTS", 1)
    multiview.write_objaverse(str(tmp_path), 0)
    views = {d.name: sorted(d.glob("*.npy")) for d in tmp_path.iterdir()}
    assert sorted(len(v) for v in views.values()) == [12, 23, 24]
    full = next(v for v in views.values() if len(v) == 24)
    azimuths, elevations = [], []
    for path in full:
        rt = np.load(path)
        assert rt.dtype == np.float32 and rt.shape == (3, 4)
        centre = -rt[:, :3].T @ rt[:, 3]
        azimuths.append(np.degrees(np.arctan2(centre[1], centre[0])) % 360)
        elevations.append(np.degrees(np.arcsin(centre[2] / np.linalg.norm(centre))))
    steps = np.diff(np.sort(azimuths))
    np.testing.assert_allclose(steps, 15.0, atol=1e-3)  # 24 views 15 degrees apart: a full circle
    assert np.ptp(elevations) < 1e-3 and abs(elevations[0]) <= 45
    assert list(np.argsort(azimuths)) != list(range(24))  # file order is not azimuth order


def test_container_headers_are_fixed(tmp_path, monkeypatch):
    """gzip and MAT headers carry timestamps unless the writers pin them."""
    path = tmp_path / "x.jgz"
    multiview.write_gzip_json(str(path), [{"a": 1}])
    assert path.read_bytes()[4:8] == b"\0\0\0\0"
    data = annotated_video.deterministic_mat({"pos_img": np.zeros((2, 15, 3))})
    assert data[:116] == annotated_video.MAT_HEADER.ljust(116, b" ")
    assert scipy.io.loadmat(io.BytesIO(data))["pos_img"].shape == (2, 15, 3)
