"""Annotated image datasets in their real layouts: COCO, MPII (MMPose JSON), ADE20K, KITTI
stereo and Taskonomy-style multi-task tuples.

Scenes are ray-cast (ground, textured balls and boxes, mannequins, rooms) so that masks,
boxes, keypoints, depth, normals and edges are exact; KITTI is cut from the real stereo pair
and disparity that ship with scikit-image. Each family leaves one or two entries broken on
purpose (a listed image missing, a map missing) so that the build's reject paths are exercised.
Label maps of every family use ADE20K's 150-class indices (`ADE_CLASSES`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import cv2
import numpy as np
from PIL import Image

from uvd_pipeline.sample import figure, media
from uvd_pipeline.sample import raycast as rc

FAMILY = {"coco": 12, "mpii": 13, "ade20k": 14, "kitti": 15, "taskonomy": 16}

# ADE20K (SceneParsing 150) class indices, used by every label-map family; 0 = other/unlabelled.
ADE_CLASSES = {"other": 0, "wall": 1, "sky": 3, "floor": 4, "ceiling": 6, "grass": 10, "person": 13,
               "earth": 14, "box": 42, "ball": 120}
COCO_CATEGORIES = (
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 33, "name": "suitcase", "supercategory": "accessory"},
    {"id": 37, "name": "sports ball", "supercategory": "sports"},
)
COCO_CLASSES = {"person": 1, "box": 33, "ball": 37}

# Ground photos (grayscale in scikit-image) with the tint that makes them read as a surface.
GROUNDS = {"grass": ((0.55, 0.80, 0.40), "grass"), "gravel": ((0.85, 0.80, 0.70), "earth"),
           "brick": ((0.95, 0.70, 0.60), "floor")}
OBJECT_PHOTOS = ("coffee", "chelsea", "astronaut", "rocket", "coins", "horse", "page", "camera", "ihc",
                 "retina", "grace_hopper", "moon", "motorcycle_left")
CLOTHES_PHOTOS = ("astronaut", "grace_hopper", "ihc", "retina", "chelsea", "coffee", "hubble")
TROUSER_PHOTOS = ("gravel", "camera", "brick", "moon", "coins")
SKIN = ((236, 188, 160), (224, 172, 140), (198, 134, 100), (160, 105, 75), (112, 72, 50))
JPEG_QUALITY = 90
PNG_LEVEL = 3  # zlib level: within 2% of level 6 in size, three times faster
GROUND_CONTRAST = 0.6
GROUND_TEXTURE_SIZE = 128


# -- I/O ------------------------------------------------------------------------------------------
def save_image(path: str, pixels: np.ndarray, fmt: str | None = None, **params: Any) -> None:
    """Encode with Pillow (same bytes every run); format from the extension unless given."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fmt = fmt or {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}[os.path.splitext(path)[1].lower()]
    if fmt == "JPEG":
        params.setdefault("quality", JPEG_QUALITY)
    else:
        params.setdefault("compress_level", PNG_LEVEL)
    Image.fromarray(pixels).save(path, fmt, **params)


def save_png16(path: str, values: np.ndarray) -> None:
    """A uint16 single-channel PNG (OpenCV writes 16-bit grayscale losslessly)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ok, data = cv2.imencode(".png", np.ascontiguousarray(values.astype(np.uint16)))
    assert ok
    with open(path, "wb") as handle:
        handle.write(data.tobytes())


def write_json(path: str, value: Any, indent: int | None = None) -> None:
    """JSON with sorted keys, so the bytes depend only on the content."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(value, handle, sort_keys=True, indent=indent)


def r2(values: np.ndarray) -> list:
    """Floats rounded to 2 decimals for JSON (exact enough, and stable text)."""
    return np.round(np.asarray(values, dtype=np.float64), 2).tolist()


# -- scenes ---------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def photo_texture(name: str, tint: tuple[float, float, float] | None = None, contrast: float = 1.0,
                  size: int | None = None) -> np.ndarray:
    """A whole bundled photo as a float32 texture, optionally tinted, with its contrast lowered
    (busy ground photos would otherwise dominate the image sizes) and area-downsampled to
    `size` px (a prefiltered level: the ground is always seen minified, and a small texture
    stays in cache); cached and shared."""
    texture = media.photo(name).astype(np.float32)
    if size is not None:
        texture = cv2.resize(texture, (size, size), interpolation=cv2.INTER_AREA)
    if contrast != 1.0:
        mean = texture.mean(axis=(0, 1), keepdims=True)
        texture = mean + (texture - mean) * np.float32(contrast)
    if tint is not None:
        texture = texture * np.asarray(tint, np.float32)
    return texture


@dataclass(frozen=True, eq=False)
class Thing:
    """One annotated object of a scene: its kind, instance id, primitives and (people) skeleton."""

    kind: str  # "person" | "ball" | "box"
    instance_id: int
    primitives: tuple[rc.Primitive, ...]
    skeleton: figure.Skeleton | None = None


@dataclass(frozen=True, eq=False)
class Scene:
    """A ground plane (and its label-map class name), the things on it and the light."""

    ground: rc.Primitive
    ground_class: str
    things: tuple[Thing, ...]
    light: np.ndarray

    @property
    def primitives(self) -> list[rc.Primitive]:
        return [self.ground] + [p for thing in self.things for p in thing.primitives]


def ground_plane(rng: np.random.Generator, class_ids: dict[str, int],
                 contrast: float = GROUND_CONTRAST) -> tuple[rc.Plane, str]:
    """A tinted, tiled real photo as the ground; returns the plane and its class name."""
    name = sorted(GROUNDS)[int(rng.integers(len(GROUNDS)))]
    tint, class_name = GROUNDS[name]
    texture = photo_texture(name, tint, contrast, GROUND_TEXTURE_SIZE)
    plane = rc.Plane((0, 0, 0), (0, 0, 1), texture, class_ids.get(class_name, 0), 0, tile=float(rng.uniform(2.0, 3.5)))
    return plane, class_name


def make_ball(rng: np.random.Generator, x: float, y: float, instance_id: int, class_id: int) -> Thing:
    """A ball resting on the ground at (x, y), wrapped in a crop of a real photo."""
    radius = float(rng.uniform(0.15, 0.45))
    texture = rc.texture_crop(media.photo(OBJECT_PHOTOS[int(rng.integers(len(OBJECT_PHOTOS)))]), rng, 96)
    rotation = rc.rotation_xyz(*rng.uniform(0, 2 * np.pi, 3))
    sphere = rc.Sphere((x, y, radius), radius, texture, class_id, instance_id, rotation)
    return Thing("ball", instance_id, (sphere,))


def make_box(rng: np.random.Generator, x: float, y: float, instance_id: int, class_id: int) -> Thing:
    """A box standing on the ground at (x, y), turned about +z, a photo crop on each face."""
    half = rng.uniform(0.15, 0.45, 3)
    texture = rc.texture_crop(media.photo(OBJECT_PHOTOS[int(rng.integers(len(OBJECT_PHOTOS)))]), rng, 128)
    box = rc.Box((x, y, half[2]), half, rc.rotation_z(float(rng.uniform(0, np.pi))), texture, class_id, instance_id)
    return Thing("box", instance_id, (box,))


def random_look(rng: np.random.Generator) -> figure.Look:
    """Skin colour and clothes cut from real photos."""
    skin = rc.flat_texture(SKIN[int(rng.integers(len(SKIN)))])
    top = rc.texture_crop(media.photo(CLOTHES_PHOTOS[int(rng.integers(len(CLOTHES_PHOTOS)))]), rng, 48)
    trousers = rc.texture_crop(media.photo(TROUSER_PHOTOS[int(rng.integers(len(TROUSER_PHOTOS)))]), rng, 48)
    return figure.Look(skin, top, (trousers * rng.uniform(0.4, 0.8, 3)).astype(np.float32))


def make_person(rng: np.random.Generator, x: float, y: float, instance_id: int, class_id: int,
                pose: figure.Pose | None = None, heading: float | None = None) -> Thing:
    """A mannequin at (x, y): a random pose and heading unless given."""
    pose = pose or figure.random_pose(rng)
    heading = float(rng.uniform(0, 2 * np.pi)) if heading is None else heading
    placement = figure.Placement(x, y, heading, float(rng.uniform(1.55, 1.9)))
    skel = figure.skeleton(pose, placement)
    return Thing("person", instance_id, tuple(figure.body(skel, random_look(rng), class_id, instance_id)), skel)


FOOTPRINT = {"person": 0.45, "ball": 0.5, "box": 0.65}  # metres: keeps things from interpenetrating


def scatter(rng: np.random.Generator, kinds: Sequence[str], spread: float = 1.8) -> list[tuple[float, float]]:
    """Ground positions in a disc, far enough apart (rejection sampling, deterministic)."""
    placed: list[tuple[float, float, float]] = []
    for kind in kinds:
        for _ in range(200):
            x, y = rng.uniform(-spread, spread, 2)
            if x * x + y * y <= spread * spread and all(
                    np.hypot(x - px, y - py) > FOOTPRINT[kind] + pr for px, py, pr in placed):
                break
        placed.append((float(x), float(y), FOOTPRINT[kind]))
    return [(x, y) for x, y, _ in placed]


def random_scene(rng: np.random.Generator, kinds: Sequence[str], class_ids: dict[str, int],
                 spread: float = 1.8, contrast: float = GROUND_CONTRAST) -> Scene:
    """Ground plus one thing per kind, instance ids 1.. in order."""
    ground, ground_class = ground_plane(rng, class_ids, contrast)
    makers = {"person": make_person, "ball": make_ball, "box": make_box}
    things = tuple(makers[kind](rng, x, y, i + 1, class_ids[kind])
                   for i, (kind, (x, y)) in enumerate(zip(kinds, scatter(rng, kinds, spread))))
    angle = rng.uniform(0, 2 * np.pi)
    light = np.array([0.5 * np.cos(angle), 0.5 * np.sin(angle), 0.85])
    return Scene(ground, ground_class, things, light)


def outdoor_camera(rng: np.random.Generator, width: int, height: int, distance: tuple[float, float] = (4.5, 7.0),
                   fov_deg: float = 55.0) -> rc.Camera:
    """A person-height camera some metres away, looking at the middle of the scene."""
    azimuth = rng.uniform(0, 2 * np.pi)
    d = rng.uniform(*distance)
    position = (d * np.cos(azimuth), d * np.sin(azimuth), rng.uniform(1.1, 2.4))
    target = (rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), rng.uniform(0.6, 0.9))
    return rc.look_at(position, target, fov_deg=fov_deg, width=width, height=height)


def render_scene(scene: Scene, camera: rc.Camera) -> rc.Frame:
    """The outdoor look shared by the families: sky gradient behind, soft ambient light."""
    return rc.render(scene.primitives, camera, scene.light, ambient=0.4, background=rc.sky(camera.height, camera.width))


# -- COCO -----------------------------------------------------------------------------------------
def grow_polygon(points: np.ndarray, amount: float = 0.5) -> np.ndarray:
    """Move every vertex `amount` outwards (mitred): a contour through the centres of the
    boundary pixels becomes (close to) the outline of their pixel edges."""
    prev, nxt = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    x, y = points[:, 0], points[:, 1]
    orientation = np.sign(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)) or 1.0

    def outward(edge: np.ndarray) -> np.ndarray:
        length = np.maximum(np.linalg.norm(edge, axis=1, keepdims=True), 1e-12)
        return orientation * np.stack([edge[:, 1], -edge[:, 0]], axis=1) / length

    n1, n2 = outward(points - prev), outward(nxt - points)
    denominator = np.maximum(1.0 + np.sum(n1 * n2, axis=1, keepdims=True), 0.5)
    return points + amount * (n1 + n2) / denominator


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours as COCO polygons in pixel-edge coordinates: OpenCV's contour runs through
    boundary pixel centres (+ 0.5), grown by half a pixel to their outer edges, so that
    pycocotools rasterises them back to the same pixels. Fewer than 3 points: dropped."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        if len(contour) >= 3:
            grown = grow_polygon(contour.reshape(-1, 2).astype(np.float64) + 0.5)
            grown = np.clip(grown, 0, [mask.shape[1], mask.shape[0]])
            polygons.append([float(v) for v in np.round(grown.ravel(), 2)])
    return polygons


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major mask, starting with zeros."""
    flat = mask.astype(np.uint8).ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def mask_bbox(mask: np.ndarray) -> list[float]:
    """[x, y, w, h] of the visible pixels, pixel-edge coordinates."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


COCO_SCENES = 40
COCO_MISSING_IMAGE = 13  # listed in both JSON files, never written
COCO_MIN_AREA = 40  # pixels: smaller visible parts are not annotated (as COCO annotators skip them)


def _coco_scene(rng: np.random.Generator) -> Scene:
    people = ["person"] * int(rng.integers(1, 3))
    objects = [("ball", "box")[int(rng.integers(2))] for _ in range(int(rng.integers(1, 4)))]
    kinds = people + objects
    order = rng.permutation(len(kinds))
    return random_scene(rng, [kinds[i] for i in order], COCO_CLASSES)


def coco_view(seed: int, index: int) -> tuple[np.random.Generator, Scene, rc.Camera, rc.Frame]:
    """COCO scene `index`: its generator (to draw the rest from), scene, camera and render."""
    rng = np.random.default_rng([seed, FAMILY["coco"], index])
    scene = _coco_scene(rng)
    camera = outdoor_camera(rng, 320, 240)
    return rng, scene, camera, render_scene(scene, camera)


def write_coco(root: str, seed: int = 0) -> dict:
    """COCO 2017-style val split: images/val/<12 digits>.jpg, instances and person keypoints."""
    images, instances, keypoint_anns = [], [], []
    counts = {"images": 0, "instances": 0, "crowd": 0, "people": 0, "missing_images": 0}
    annotation_id = 1
    for s in range(COCO_SCENES):
        rng, scene, camera, frame = coco_view(seed, s)
        image_id = 139 + 1000 * s + int(rng.integers(0, 1000))
        file_name = f"{image_id:012d}.jpg"
        images.append({"id": image_id, "file_name": file_name, "width": 320, "height": 240, "license": 1,
                       "date_captured": "2013-11-14 17:02:52"})
        if s == COCO_MISSING_IMAGE:
            counts["missing_images"] += 1
        else:
            save_image(os.path.join(root, "images", "val", file_name), frame.rgb)
            counts["images"] += 1
        crowd_pick = s % 6 == 2  # a few scenes: their first non-person object is an iscrowd RLE
        for thing in scene.things:
            mask = frame.instance == thing.instance_id
            area = int(mask.sum())
            if area < COCO_MIN_AREA:
                continue
            crowd = crowd_pick and thing.kind != "person"
            crowd_pick = crowd_pick and not crowd
            polygons = [] if crowd else mask_polygons(mask)
            if not crowd and not polygons:
                continue
            ann = {"id": annotation_id, "image_id": image_id, "category_id": COCO_CLASSES[thing.kind],
                   "bbox": mask_bbox(mask), "area": area, "iscrowd": int(crowd),
                   "segmentation": uncompressed_rle(mask) if crowd else polygons}
            annotation_id += 1
            instances.append(ann)
            counts["instances"] += 1
            counts["crowd"] += int(crowd)
            if thing.kind == "person":
                v = figure.coco_visibility(camera, thing.skeleton, scene.primitives)
                xy, _ = rc.project(camera, thing.skeleton.keypoints)
                kps = np.concatenate([np.round(xy, 2), v[:, None]], axis=1)
                kps[v == 0] = 0
                keypoint_anns.append({**ann, "keypoints": [float(x) if i % 3 < 2 else int(x)
                                                           for i, x in enumerate(kps.ravel())],
                                      "num_keypoints": int((v > 0).sum())})
                counts["people"] += 1
    info = {"description": "UVD sample corpus: ray-cast scenes in the COCO 2017 layout", "version": "1.0",
            "year": 2017, "contributor": "uvd_pipeline.sample", "date_created": "2017/09/01", "url": ""}
    licenses = [{"id": 1, "name": "see the README of the sample corpus", "url": ""}]
    write_json(os.path.join(root, "annotations", "instances_val.json"),
               {"info": info, "licenses": licenses, "images": images, "annotations": instances,
                "categories": list(COCO_CATEGORIES)})
    person = {**COCO_CATEGORIES[0], "keypoints": list(figure.COCO_KEYPOINTS),
              "skeleton": [list(pair) for pair in figure.COCO_SKELETON]}
    write_json(os.path.join(root, "annotations", "person_keypoints_val.json"),
               {"info": info, "licenses": licenses, "images": images, "annotations": keypoint_anns,
                "categories": [person]})
    counts["notes"] = {f"images/val/{image['file_name']}": "listed in the JSON, missing on disk"
                       for index, image in enumerate(images) if index == COCO_MISSING_IMAGE}
    return counts


# -- MPII (MMPose JSON) ---------------------------------------------------------------------------
MPII_IMAGES = 24
MPII_VAL = 6  # the last six go to mpii_val.json
MPII_MISSING_IMAGE = 5


def _mpii_entry(camera: rc.Camera, thing: Thing, mask: np.ndarray, name: str) -> dict:
    """One MMPose MPII entry; coordinates are MATLAB 1-based (pixel-edge + 0.5), as in MPII,
    and joints outside the image are [-1, -1] with joints_vis 0."""
    xy, inside = figure.in_image(camera, figure.mpii_points(thing.skeleton))
    joints = np.where(inside[:, None], xy + 0.5, -1.0)
    x, y, w, h = mask_bbox(mask)
    return {"image": name, "center": r2([x + w / 2 + 0.5, y + h / 2 + 0.5]), "scale": round(h / 200.0, 4),
            "joints": r2(joints), "joints_vis": inside.astype(int).tolist()}


def write_mpii(root: str, seed: int = 0) -> dict:
    """Single-person renders, MMPose's mpii_train.json / mpii_val.json and images/."""
    splits: dict[str, list] = {"train": [], "val": []}
    counts = {"images": 0, "missing_images": 0}
    notes = {}
    for i in range(MPII_IMAGES):
        rng = np.random.default_rng([seed, FAMILY["mpii"], i])
        kinds = ["person"] + [("ball", "box")[int(rng.integers(2))] for _ in range(int(rng.integers(0, 2)))]
        scene = random_scene(rng, kinds, ADE_CLASSES, spread=1.2)
        person = scene.things[0]
        camera = outdoor_camera(rng, 320, 240, distance=(3.0, 4.0))
        camera = rc.look_at(camera.position, person.skeleton.keypoints.mean(axis=0), fov_deg=50, width=320, height=240)
        frame = render_scene(scene, camera)
        name = f"{int(rng.integers(10**8, 10**9)):09d}.jpg"
        mask = frame.instance == person.instance_id
        splits["val" if i >= MPII_IMAGES - MPII_VAL else "train"].append(_mpii_entry(camera, person, mask, name))
        if i == MPII_MISSING_IMAGE:
            counts["missing_images"] += 1
            notes[f"images/{name}"] = "listed in mpii_train.json, missing on disk"
            continue
        save_image(os.path.join(root, "images", name), frame.rgb)
        counts["images"] += 1
    for split, entries in splits.items():
        write_json(os.path.join(root, "annotations", f"mpii_{split}.json"), entries)
    counts["train"], counts["val"] = len(splits["train"]), len(splits["val"])
    counts["notes"] = notes
    return counts


# -- ADE20K ---------------------------------------------------------------------------------------
ADE_SIZES = ((320, 240), (240, 320), (288, 288))  # (width, height): ADE images vary in shape
ADE_SPLITS = (("training", "train", 24), ("validation", "val", 8))
ADE_MISSING_LABEL = ("training", 7)


def _ade_scene(rng: np.random.Generator) -> Scene:
    kinds = [("person", "ball", "box")[int(rng.integers(3))] for _ in range(int(rng.integers(2, 6)))]
    return random_scene(rng, kinds, ADE_CLASSES, spread=2.2)


def write_ade20k(root: str, seed: int = 0) -> dict:
    """ADEChallengeData2016: images/<split>/ADE_*.jpg and annotations/<split>/ADE_*.png (uint8)."""
    base = os.path.join(root, "ADEChallengeData2016")
    counts = {"training": 0, "validation": 0, "missing_labels": 0}
    notes = {}
    for split_index, (split, short, count) in enumerate(ADE_SPLITS):
        for i in range(count):
            rng = np.random.default_rng([seed, FAMILY["ade20k"], split_index, i])
            width, height = ADE_SIZES[int(rng.integers(len(ADE_SIZES)))]
            scene = _ade_scene(rng)
            frame = render_scene(scene, outdoor_camera(rng, width, height, distance=(4.0, 7.5)))
            labels = np.where(frame.alpha > 0, frame.semantic, ADE_CLASSES["sky"]).astype(np.uint8)
            stem = f"ADE_{short}_{i + 1:08d}"
            save_image(os.path.join(base, "images", split, stem + ".jpg"), frame.rgb)
            counts[split] += 1
            if (split, i) == ADE_MISSING_LABEL:
                counts["missing_labels"] += 1
                notes[f"ADEChallengeData2016/images/{split}/{stem}.jpg"] = "no annotation PNG"
                continue
            save_image(os.path.join(base, "annotations", split, stem + ".png"), labels)
    counts["notes"] = notes
    return counts


# -- KITTI stereo ---------------------------------------------------------------------------------
KITTI_CROPS = 16
KITTI_SCALES = (0.6, 0.5)
KITTI_NO_DISPARITY = (4, 11)  # these crops ship without disp_noc_0: the SGBM labeler fills in


@lru_cache(maxsize=1)
def _motorcycle() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The real Middlebury pair in scikit-image and its left disparity (inf = unknown)."""
    disparity = np.load(media.package_file("skimage", "data/motorcycle_disp.npz"))["arr_0"].astype(np.float32)
    return media.photo("motorcycle_left"), media.photo("motorcycle_right"), disparity


def noc_disparity(disparity: np.ndarray) -> np.ndarray:
    """Disparity with unknowns and points whose match leaves the right image set to 0
    (KITTI's noc: measured in both views)."""
    valid = np.isfinite(disparity) & (disparity > 0)
    cols = np.arange(disparity.shape[1])[None, :]
    valid &= (cols + 0.5 - np.where(valid, disparity, 0)) >= 0
    return np.where(valid, disparity, 0.0)


def kitti_disparity_png(disparity: np.ndarray) -> np.ndarray:
    """KITTI's uint16 encoding: round(d * 256), 0 = no measurement."""
    d = noc_disparity(disparity)
    return np.clip(np.round(d * 256.0), 0, 65535).astype(np.uint16)


def _crop_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One window cut from left, right and disparity alike: disparity is unchanged by it."""
    left, right, disparity = _motorcycle()
    h, w = disparity.shape
    cw, ch = int(rng.integers(400, 481)), int(rng.integers(150, 231))  # KITTI-like wide frames
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    window = (slice(y0, y0 + ch), slice(x0, x0 + cw))
    return left[window], right[window], disparity[window]


def _scaled_pair(scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole pair resized by `scale`: disparities scale by it too (nearest keeps unknowns)."""
    left, right, disparity = _motorcycle()
    h, w = disparity.shape
    size = (int(round(w * scale)), int(round(h * scale)))
    resize = lambda image: cv2.resize(image, size, interpolation=cv2.INTER_AREA)  # noqa: E731
    d = cv2.resize(disparity, size, interpolation=cv2.INTER_NEAREST) * np.float32(scale)
    return resize(left), resize(right), d


def write_kitti(root: str, seed: int = 0) -> dict:
    """KITTI 2015 stereo: training/image_2, image_3 and disp_noc_0 (NNNNNN_10.png)."""
    counts = {"pairs": 0, "with_disparity": 0}
    notes = {}
    for i in range(KITTI_CROPS + len(KITTI_SCALES)):
        rng = np.random.default_rng([seed, FAMILY["kitti"], i])
        if i < KITTI_CROPS:
            left, right, disparity = _crop_pair(rng)
        else:
            left, right, disparity = _scaled_pair(KITTI_SCALES[i - KITTI_CROPS])
        name = f"{i:06d}_10.png"
        save_image(os.path.join(root, "training", "image_2", name), left)
        save_image(os.path.join(root, "training", "image_3", name), right)
        counts["pairs"] += 1
        if i in KITTI_NO_DISPARITY:
            notes[f"training/image_2/{name}"] = "no disp_noc_0 file: depth comes from the SGBM labeler"
            continue
        save_png16(os.path.join(root, "training", "disp_noc_0", name), kitti_disparity_png(disparity))
        counts["with_disparity"] += 1
    counts["notes"] = notes
    return counts


# -- Taskonomy-style multi-task tuples -------------------------------------------------------------
TASKONOMY_BUILDINGS = ("allensville", "beechwood")
TASKONOMY_POINTS, TASKONOMY_VIEWS = 4, 3  # 12 views per building
TASKONOMY_MISSING_DEPTH = ("beechwood", "point_2_view_1")
WALL_HEIGHT = 2.7
STRUCTURE_INSTANCE = 1  # floor and walls: one instance, so wall corners are not occlusion edges


def room(rng: np.random.Generator) -> tuple[list[rc.Primitive], tuple[float, float], list[tuple[float, float]]]:
    """A walled room (no ceiling: the sky shows as 'no depth') with furniture, balls, a person;
    returns the primitives, the room's half sizes and where things stand."""
    half_w, half_d = rng.uniform(2.5, 3.5), rng.uniform(2.0, 3.0)
    floor = rc.Plane((0, 0, 0), (0, 0, 1), photo_texture("brick", (0.85, 0.7, 0.55), 1.0, 256), ADE_CLASSES["floor"],
                     STRUCTURE_INSTANCE, tile=float(rng.uniform(1.5, 2.5)))
    walls = []
    wall_photos = ("page", "moon", "grace_hopper", "horse")
    for axis, sign in ((0, 1), (0, -1), (1, 1), (1, -1)):
        centre = [0.0, 0.0, WALL_HEIGHT / 2]
        centre[axis] = sign * ((half_w, half_d)[axis] + 0.05)
        half = [half_w + 0.1, half_d + 0.1, WALL_HEIGHT / 2]
        half[axis] = 0.05
        texture = rc.texture_crop(media.photo(wall_photos[int(rng.integers(len(wall_photos)))]), rng, 160)
        walls.append(rc.Box(centre, half, np.eye(3), texture, ADE_CLASSES["wall"], STRUCTURE_INSTANCE))
    kinds = ["box", "box", "ball", ("person", "box", "ball")[int(rng.integers(3))]]
    spots = scatter(rng, kinds, 1.4)
    things = [({"box": make_box, "ball": make_ball, "person": make_person}[kind])(
        rng, x, y, i + 2, ADE_CLASSES[kind]) for i, (kind, (x, y)) in enumerate(zip(kinds, spots))]
    return [floor] + walls + [p for thing in things for p in thing.primitives], (half_w, half_d), spots


def _free_spot(rng: np.random.Generator, half: tuple[float, float],
               taken: list[tuple[float, float]]) -> tuple[float, float]:
    """A camera position in the room, clear of every object (rejection sampling)."""
    for _ in range(500):
        x, y = rng.uniform(-0.8, 0.8) * half[0], rng.uniform(-0.8, 0.8) * half[1]
        if all(np.hypot(x - tx, y - ty) > 0.9 for tx, ty in taken):
            break
    return float(x), float(y)


def occlusion_edges(depth: np.ndarray, instance: np.ndarray, relative_jump: float = 0.04) -> np.ndarray:
    """uint16 65535 on both sides of a depth discontinuity (relative jump, or hit next to no
    hit) or an instance boundary, else 0."""
    z = np.where(depth > 0, depth, np.inf).astype(np.float64)
    edges = np.zeros(depth.shape, bool)
    for axis in (0, 1):
        a = np.moveaxis(z, axis, 0)
        ia = np.moveaxis(instance, axis, 0)
        near, far = np.minimum(a[:-1], a[1:]), np.maximum(a[:-1], a[1:])
        with np.errstate(invalid="ignore"):
            jump = (far - near > relative_jump * near) | (np.isinf(far) & np.isfinite(near))
        jump |= ia[:-1] != ia[1:]
        e = np.moveaxis(edges, axis, 0)
        e[:-1] |= jump
        e[1:] |= jump
    return np.where(edges, 65535, 0).astype(np.uint16)


def encode_normals(normals: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """RGB = round((n + 1) / 2 * 255) in the camera frame; 128 where nothing is hit."""
    rgb = np.round((np.clip(normals, -1, 1) + 1) / 2 * 255).astype(np.uint8)
    rgb[~hit] = 128
    return rgb


def encode_depth(depth: np.ndarray) -> np.ndarray:
    """uint16 in 1/512 m; 65535 = no depth."""
    return np.where(depth > 0, np.clip(np.round(depth * 512.0), 1, 65534), 65535).astype(np.uint16)


def write_taskonomy(root: str, seed: int = 0) -> dict:
    """Per building: rgb, normal, edge_occlusion, depth_zbuffer, segment_semantic, by stem."""
    counts = {"views": 0, "missing_depth": 0}
    notes = {}
    for b, building in enumerate(TASKONOMY_BUILDINGS):
        rng = np.random.default_rng([seed, FAMILY["taskonomy"], b])
        primitives, half, spots = room(rng)
        for point in range(TASKONOMY_POINTS):
            position = (*_free_spot(rng, half, spots), rng.uniform(1.2, 1.7))
            for view in range(TASKONOMY_VIEWS):
                inward = np.arctan2(-position[1], -position[0])  # look across the room, not at a wall
                yaw, pitch = inward + rng.uniform(-1.2, 1.2), np.radians(rng.uniform(-30, 18))
                look = [np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)]
                target = np.asarray(position) + look
                camera = rc.look_at(position, target, fov_deg=65, width=256, height=256)
                frame = rc.render(primitives, camera, (0.2, 0.3, 0.9), ambient=0.45, background=rc.sky(256, 256))
                hit = frame.alpha > 0
                stem = f"point_{point}_view_{view}"
                # Taskonomy's names: <folder>/<stem>_domain_<folder>.png, semantic labels `segmentsemantic`
                out = lambda folder, domain=None: os.path.join(  # noqa: E731
                    root, building, folder, f"{stem}_domain_{domain or folder}.png")
                save_image(out("rgb"), frame.rgb)
                save_image(out("normal"), encode_normals(frame.normals, hit))
                save_png16(out("edge_occlusion"), occlusion_edges(frame.depth, frame.instance))
                save_image(out("segment_semantic", "segmentsemantic"), frame.semantic.astype(np.uint8))
                counts["views"] += 1
                if (building, stem) == TASKONOMY_MISSING_DEPTH:
                    counts["missing_depth"] += 1
                    notes[f"{building}/depth_zbuffer/{stem}_domain_depth_zbuffer.png"] = "missing on purpose"
                    continue
                save_png16(out("depth_zbuffer"), encode_depth(frame.depth))
    counts["notes"] = notes
    return counts
