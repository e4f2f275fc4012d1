"""Multi-view object datasets in their real layouts: Objaverse renders (Zero123) and CO3D v2.

Objects are ray-cast from real photo textures, so every pose is exact: Objaverse's Blender
[R | t] and CO3D's PyTorch3D viewpoints are the cameras the images were rendered with. Broken
entries on purpose: an Objaverse object with too few views, one with a missing pose file, and a
CO3D frame annotation whose image does not exist.
"""

from __future__ import annotations

import gzip
import io
import json
import os

import numpy as np

from uvd_pipeline.sample import media
from uvd_pipeline.sample import raycast as rc
from uvd_pipeline.sample.annotated import (ADE_CLASSES, GROUND_TEXTURE_SIZE, OBJECT_PHOTOS, photo_texture, save_image,
                                          save_png16)

FAMILY = {"objaverse": 10, "co3d": 11}

# -- Objaverse (Zero123 renders) --------------------------------------------------------------------
OBJAVERSE_OBJECTS = 6
OBJAVERSE_VIEWS = 24
OBJAVERSE_FEW_VIEWS = 12  # the extra object the reader must reject
OBJAVERSE_SIZE = 256
OBJAVERSE_FOV = 50.0


def _uid(rng: np.random.Generator) -> str:
    """32 hex characters, as Objaverse uids are."""
    return "".join(f"{int(b):02x}" for b in rng.integers(0, 256, 16))


def _texture(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    return rc.texture_crop(media.photo(OBJECT_PHOTOS[int(rng.integers(len(OBJECT_PHOTOS)))]), rng, size)


def random_object(rng: np.random.Generator) -> list[rc.Primitive]:
    """1 to 3 textured spheres and boxes near the origin, within about 0.65 of it (Zero123
    normalises objects to a unit cube, so they fill a good part of the view)."""
    parts: list[rc.Primitive] = []
    for k in range(int(rng.integers(1, 4))):
        centre = rng.uniform(-0.12, 0.12, 3) if k else np.zeros(3)
        if rng.random() < 0.5:
            parts.append(rc.Sphere(centre, rng.uniform(0.2, 0.38), _texture(rng), 1, k + 1,
                                   rc.rotation_xyz(*rng.uniform(0, 2 * np.pi, 3))))
        else:
            parts.append(rc.Box(centre, rng.uniform(0.12, 0.3, 3), rc.rotation_xyz(*rng.uniform(0, 2 * np.pi, 3)),
                                _texture(rng), 2, k + 1))
    return parts


def orbit_camera(azimuth: float, elevation: float, radius: float, size: int, fov: float) -> rc.Camera:
    """A camera on a sphere around the origin (world +Z up), looking at the origin."""
    position = radius * np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                                  np.sin(elevation)])
    return rc.look_at(position, (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), fov, size, size)


def _write_object(directory: str, rng: np.random.Generator, views: int, missing_pose: int | None = None) -> list[float]:
    """Render `views` views 15 degrees apart, written in a shuffled order; returns the azimuths
    (degrees) in file order."""
    parts = random_object(rng)
    offset = rng.uniform(0, 2 * np.pi)
    elevation = np.radians(rng.uniform(-45, 45))
    radius = rng.uniform(1.5, 2.2)
    order = rng.permutation(views)
    while np.all(np.diff(order) > 0) or np.all(np.diff((order - order[0]) % views) > 0):
        order = rng.permutation(views)  # never azimuth order, not even rotated
    azimuths = []
    os.makedirs(directory, exist_ok=True)
    for number, step in enumerate(order):
        azimuth = offset + np.radians(15.0) * step
        camera = orbit_camera(azimuth, elevation, radius, OBJAVERSE_SIZE, OBJAVERSE_FOV)
        light = camera.position / np.linalg.norm(camera.position) + np.array([0.0, 0.0, 1.0])
        frame = rc.render(parts, camera, light, ambient=0.45, background=None)
        rgba = np.dstack([frame.rgb, frame.alpha])
        save_image(os.path.join(directory, f"{number:03d}.png"), rgba)
        if number != missing_pose:
            np.save(os.path.join(directory, f"{number:03d}.npy"), camera.blender_rt().astype(np.float32))
        azimuths.append(float(np.degrees(azimuth) % 360.0))
    return azimuths


def write_objaverse(root: str, seed: int = 0) -> dict:
    """Zero123's layout: <uid>/NNN.png (RGBA) and <uid>/NNN.npy (Blender 3x4 world-to-camera)."""
    counts = {"objects": 0, "views": 0, "broken_objects": 0}
    notes = {}
    for index in range(OBJAVERSE_OBJECTS + 2):
        rng = np.random.default_rng([seed, FAMILY["objaverse"], index])
        uid = _uid(rng)
        if index == OBJAVERSE_OBJECTS:
            views, missing = OBJAVERSE_FEW_VIEWS, None
            notes[uid] = f"only {views} views: too few, rejected"
        elif index == OBJAVERSE_OBJECTS + 1:
            views, missing = OBJAVERSE_VIEWS, 9
            notes[uid] = "009.npy missing: the view has no pose"
        else:
            views, missing = OBJAVERSE_VIEWS, None
        _write_object(os.path.join(root, uid), rng, views, missing)
        counts["objects"] += 1
        counts["views"] += views
        counts["broken_objects"] += int(index >= OBJAVERSE_OBJECTS)
    counts["notes"] = notes
    return counts


# -- CO3D v2 ------------------------------------------------------------------------------------------
CO3D_CATEGORIES = ("ball", "suitcase")
CO3D_SEQUENCES = 2
CO3D_FRAMES = 40
CO3D_SIZE = (320, 240)  # width, height
CO3D_MISSING_IMAGE = ("suitcase", 1, 17)  # (category, sequence index, frame number)
CO3D_FPS = 30.0
CO3D_DEPTH_RADIUS = 1.3  # metres around the object: where the (simulated) MVS depth is known


def _co3d_object(rng: np.random.Generator, category: str) -> tuple[rc.Primitive, float]:
    """The object (a textured sphere or box standing on the ground) and its centre height."""
    texture = _texture(rng, 160)
    if category == "ball":
        radius = float(rng.uniform(0.25, 0.4))
        return rc.Sphere((0, 0, radius), radius, texture, ADE_CLASSES["ball"], 1,
                         rc.rotation_xyz(*rng.uniform(0, 2 * np.pi, 3))), radius
    half = np.array([rng.uniform(0.3, 0.4), rng.uniform(0.12, 0.18), rng.uniform(0.25, 0.35)])
    return rc.Box((0, 0, half[2]), half, rc.rotation_z(float(rng.uniform(0, np.pi))), texture,
                  ADE_CLASSES["box"], 1), float(half[2])


def _co3d_cameras(rng: np.random.Generator, height: float) -> list[rc.Camera]:
    """A hand-held walk once around the object: azimuth increasing with jitter; elevation,
    radius and aim jittered a little."""
    start = rng.uniform(0, 2 * np.pi)
    steps = 2 * np.pi / CO3D_FRAMES * (1 + rng.uniform(-0.25, 0.25, CO3D_FRAMES))
    steps *= (2 * np.pi * 0.97) / steps.sum()  # once around, not quite closing the loop
    azimuths = start + np.concatenate([[0.0], np.cumsum(steps[:-1])])
    elevation = np.radians(rng.uniform(20, 35)) + np.radians(rng.normal(0, 1.5, CO3D_FRAMES))
    radius = rng.uniform(1.8, 2.4) * (1 + rng.normal(0, 0.02, CO3D_FRAMES))
    cameras = []
    for a, e, r in zip(azimuths, elevation, radius):
        position = np.array([r * np.cos(e) * np.cos(a), r * np.cos(e) * np.sin(a), height + r * np.sin(e)])
        target = np.array([0.0, 0.0, height]) + rng.normal(0, 0.02, 3)
        cameras.append(rc.look_at(position, target, fov_deg=55.0, width=CO3D_SIZE[0], height=CO3D_SIZE[1]))
    return cameras


def known_depth(frame: rc.Frame, camera: rc.Camera) -> np.ndarray:
    """Where CO3D would have depth: the object and the ground near it (its MVS reconstruction
    covers the turntable region, not the horizon)."""
    points = camera.position + frame.depth[..., None] * camera.rays()
    near = np.hypot(points[..., 0], points[..., 1]) < CO3D_DEPTH_RADIUS
    return (frame.alpha > 0) & (near | (frame.instance == 1))


def float16_depth_png(depth: np.ndarray) -> np.ndarray:
    """CO3D's depth PNG: uint16 pixels whose bits are the float16 depth."""
    return depth.astype(np.float16).view(np.uint16)


def write_gzip_json(path: str, value) -> None:
    """A .jgz: gzipped JSON with mtime 0 and no file name, so the bytes are reproducible."""
    data = json.dumps(value, sort_keys=True).encode()
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as handle:
        handle.write(data)
    with open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def _co3d_frame(category: str, sequence: str, number: int, camera: rc.Camera, mask_mass: float) -> dict:
    """One FrameAnnotation as CO3D v2 stores it; paths relative to the dataset root."""
    stem = f"frame{number + 1:06d}"
    base = f"{category}/{sequence}"
    viewpoint = camera.pytorch3d()
    return {
        "sequence_name": sequence,
        "frame_number": number,
        "frame_timestamp": round(number / CO3D_FPS, 6),
        "image": {"path": f"{base}/images/{stem}.jpg", "size": [camera.height, camera.width]},
        "depth": {"path": f"{base}/depths/{stem}.jpg.geometric.png", "scale_adjustment": 1.0,
                  "mask_path": f"{base}/depth_masks/{stem}.png"},
        "mask": {"path": f"{base}/masks/{stem}.png", "mass": mask_mass},
        "viewpoint": {**viewpoint, "intrinsics_format": "ndc_isotropic"},
        "meta": {},
    }


def write_co3d(root: str, seed: int = 0) -> dict:
    """CO3D v2: per category frame_annotations.jgz, sequence_annotations.jgz and per sequence
    images/, masks/, depths/ (float16 bits in uint16 PNG) and depth_masks/."""
    counts = {"categories": len(CO3D_CATEGORIES), "sequences": 0, "frames": 0, "missing_images": 0}
    notes = {}
    for c, category in enumerate(CO3D_CATEGORIES):
        frames, sequences = [], []
        for s in range(CO3D_SEQUENCES):
            rng = np.random.default_rng([seed, FAMILY["co3d"], c, s])
            numbers = (int(rng.integers(100, 700)), int(rng.integers(10000, 99999)), int(rng.integers(10000, 99999)))
            sequence = "_".join(str(n) for n in numbers)  # CO3D's <n>_<n>_<n> sequence names
            obj, height = _co3d_object(rng, category)
            ground_name = ("gravel", "brick", "grass")[int(rng.integers(3))]
            texture = photo_texture(ground_name, (0.9, 0.85, 0.75), 0.45, GROUND_TEXTURE_SIZE)
            ground = rc.Plane((0, 0, 0), (0, 0, 1), texture, 0, 0, tile=float(rng.uniform(1.0, 2.0)))
            light = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 0.9])
            base = os.path.join(root, category, sequence)
            for number, camera in enumerate(_co3d_cameras(rng, height)):
                frame = rc.render([ground, obj], camera, light, ambient=0.4,
                                  background=rc.sky(camera.height, camera.width))
                mask = np.where(frame.instance == 1, 255, 0).astype(np.uint8)
                stem = f"frame{number + 1:06d}"
                if (category, s, number) == CO3D_MISSING_IMAGE:
                    counts["missing_images"] += 1
                    notes[f"{category}/{sequence}/images/{stem}.jpg"] = "annotated, but the image does not exist"
                else:
                    save_image(os.path.join(base, "images", stem + ".jpg"), frame.rgb)
                save_image(os.path.join(base, "masks", stem + ".png"), mask)
                known = known_depth(frame, camera)
                depth = np.where(known, frame.depth, 0.0)
                save_png16(os.path.join(base, "depths", stem + ".jpg.geometric.png"), float16_depth_png(depth))
                save_image(os.path.join(base, "depth_masks", stem + ".png"), known)
                frames.append(_co3d_frame(category, sequence, number, camera, float((mask > 0).sum())))
                counts["frames"] += 1
            sequences.append({"sequence_name": sequence, "category": category,
                              "video_length": round(CO3D_FRAMES / CO3D_FPS, 6),
                              "point_cloud": None, "viewpoint_quality_score": 1.0})
            counts["sequences"] += 1
        write_gzip_json(os.path.join(root, category, "frame_annotations.jgz"), frames)
        write_gzip_json(os.path.join(root, category, "sequence_annotations.jgz"), sequences)
    counts["notes"] = notes
    return counts
