"""Annotated video datasets in their real layouts: VIPSeg (panoptic masks per frame) and JHMDB
(a walking or waving puppet with per-frame joints).

Animated ray-cast scenes: balls roll (their texture turns with them), boxes spin, mannequins walk
with a matching root motion, and the camera pans; every frame's mask and joints are exact.
Broken on purpose: a VIPSeg frame without its mask and a JHMDB video too short for a sentence.
"""

from __future__ import annotations

import io
import os

import numpy as np
import scipy.io

from uvd_pipeline.sample import figure
from uvd_pipeline.sample import raycast as rc
from uvd_pipeline.sample.annotated import (ADE_CLASSES, Scene, Thing, outdoor_camera, random_look, random_scene,
                                          render_scene, save_image, save_png16)

FAMILY = {"vipseg": 17, "jhmdb": 18}
FRAME_TIME = 0.1  # seconds between annotated frames


def rotation_axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation about a unit `axis` by `angle` radians."""
    x, y, z = rc.unit(axis)
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


# -- VIPSeg -----------------------------------------------------------------------------------------
VIPSEG_VIDEOS = 3
VIPSEG_FRAMES = 20
VIPSEG_MISSING_MASK = (1, 12)  # (video index, frame index) written without its panomask


def _motion(rng: np.random.Generator, thing: Thing) -> dict:
    """How one thing moves: a rolling velocity, a spin rate, or a walking heading and gait phase."""
    angle = rng.uniform(0, 2 * np.pi)
    return {"velocity": rng.uniform(0.3, 0.9) * np.array([np.cos(angle), np.sin(angle), 0.0]),
            "spin": rng.uniform(-1.5, 1.5), "heading": angle, "phase": rng.uniform(0, 1.1)}


def _moved(thing: Thing, motion: dict, t: float, look: figure.Look | None) -> Thing:
    """The thing `t` seconds later."""
    if thing.kind == "ball":
        (ball,) = thing.primitives
        velocity = motion["velocity"]
        speed = float(np.linalg.norm(velocity))
        turn = rotation_axis_angle(np.cross([0.0, 0.0, 1.0], velocity), speed * t / ball.radius)
        moved = rc.Sphere(ball.center + velocity * t, ball.radius, ball.texture, ball.class_id, ball.instance_id,
                          turn @ ball.rotation)
        return Thing("ball", thing.instance_id, (moved,))
    if thing.kind == "box":
        (box,) = thing.primitives
        moved = rc.Box(box.center, box.half_extents, rc.rotation_z(motion["spin"] * t) @ box.rotation, box.texture,
                       box.class_id, box.instance_id)
        return Thing("box", thing.instance_id, (moved,))
    start = thing.skeleton.keypoints[[figure.K["left_hip"], figure.K["right_hip"]]].mean(axis=0)  # = placement x, y
    heading = motion["heading"]
    walked = figure.walk_offset(t) * np.array([np.cos(heading), np.sin(heading)])
    placement = figure.Placement(start[0] + walked[0], start[1] + walked[1], heading, 1.75 * thing.skeleton.scale)
    skel = figure.skeleton(figure.pose_at(motion["phase"] + t, "walk"), placement)
    class_id = thing.primitives[0].class_id
    return Thing("person", thing.instance_id, tuple(figure.body(skel, look, class_id, thing.instance_id)), skel)


def panoptic(frame: rc.Frame, scene: Scene) -> np.ndarray:
    """VIPSeg's panomask: class * 100 + instance for things, the class id itself for stuff
    (ground, sky; ids up to 124), 0 = void; uint16."""
    stuff = ADE_CLASSES[scene.ground_class]
    out = np.where(frame.alpha > 0, stuff, ADE_CLASSES["sky"]).astype(np.int64)
    things = frame.instance > 0
    out[things] = frame.semantic[things] * 100 + frame.instance[things]
    return out.astype(np.uint16)


def _youtube_id(rng: np.random.Generator) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[int(i)] for i in rng.integers(0, len(alphabet), 11))


def write_vipseg(root: str, seed: int = 0) -> dict:
    """VIPSeg: imgs/<video>/<frame>.jpg and panomasks/<video>/<frame>.png."""
    counts = {"videos": 0, "frames": 0, "missing_masks": 0}
    notes = {}
    for v in range(VIPSEG_VIDEOS):
        rng = np.random.default_rng([seed, FAMILY["vipseg"], v])
        kinds = ["person", "ball", "box"] + [("ball", "box", "person")[int(rng.integers(3))]]
        scene = random_scene(rng, kinds, ADE_CLASSES, spread=1.6)
        motions = [_motion(rng, thing) for thing in scene.things]
        looks = [random_look(rng) if thing.kind == "person" else None for thing in scene.things]
        camera = outdoor_camera(rng, 320, 240, distance=(5.5, 7.5))
        forward = camera.R[2]
        target = camera.position + forward * 6.0
        pan = rc.unit(np.cross(forward, [0.0, 0.0, 1.0])) * rng.choice([-1.0, 1.0]) * 0.35  # m/s sideways
        video = f"{int(rng.integers(1, 3000))}_{_youtube_id(rng)}"
        for k in range(VIPSEG_FRAMES):
            t = k * FRAME_TIME
            things = tuple(_moved(thing, motion, t, look) for thing, motion, look in zip(scene.things, motions, looks))
            now = Scene(scene.ground, scene.ground_class, things, scene.light)
            view = rc.look_at(camera.position, target + pan * t, fov_deg=55.0, width=320, height=240)
            frame = render_scene(now, view)
            name = f"{k:08d}"
            save_image(os.path.join(root, "imgs", video, name + ".jpg"), frame.rgb)
            counts["frames"] += 1
            if (v, k) == VIPSEG_MISSING_MASK:
                counts["missing_masks"] += 1
                notes[f"imgs/{video}/{name}.jpg"] = "no panomask for this frame"
                continue
            save_png16(os.path.join(root, "panomasks", video, name + ".png"), panoptic(frame, now))
        counts["videos"] += 1
    counts["notes"] = notes
    return counts


# -- JHMDB --------------------------------------------------------------------------------------------
# (action, video name, frames); the last is too short for any sentence.
JHMDB_VIDEOS = (
    ("walk", "Sample_walk_f_cm_np1_fr_med_0", 32),
    ("walk", "Sample_walk_f_cm_np1_le_med_1", 24),
    ("wave", "Sample_wave_u_cm_np1_fr_goo_0", 28),
    ("walk", "Sample_walk_f_cm_np1_ri_bad_2", 5),
)
MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: uvd_pipeline.sample (fixed header)"
COMPASS = ("E", "NE", "N", "NW", "W", "SW", "S", "SE")


def deterministic_mat(variables: dict) -> bytes:
    """scipy.io.savemat bytes with the 116-byte header text (which holds a timestamp) fixed."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables, format="5", do_compression=False)
    data = buffer.getvalue()
    return MAT_HEADER.ljust(116, b" ") + data[116:]


def _viewpoint(camera: rc.Camera, forward: np.ndarray) -> str:
    """Where the puppet faces, as seen in the image: S = towards the camera, N = away, E = right."""
    cam = camera.R @ forward
    angle = np.degrees(np.arctan2(cam[2], cam[0]))  # right = 0 deg, away = 90 deg
    return COMPASS[int(np.round(angle / 45.0)) % 8]


def _jhmdb_video(rng: np.random.Generator, action: str, frames: int) -> tuple[list[np.ndarray], dict]:
    """Render one clip; returns the frames and the joint_positions.mat variables."""
    # Low ground contrast: JHMDB frames are PNG, and a busy lossless ground would dominate the corpus size.
    scene = random_scene(rng, ["ball"] if rng.random() < 0.5 else ["box"], ADE_CLASSES, spread=1.5, contrast=0.35)
    look = random_look(rng)
    heading = rng.uniform(0, 2 * np.pi)
    start = np.array([-0.6 * np.cos(heading), -0.6 * np.sin(heading)]) if action == "walk" else np.zeros(2)
    camera_angle = heading + np.pi / 2 + rng.uniform(-0.6, 0.6)  # mostly side-on, as in JHMDB
    distance = rng.uniform(3.5, 4.5)
    position = (distance * np.cos(camera_angle), distance * np.sin(camera_angle), rng.uniform(1.2, 1.7))
    camera = rc.look_at(position, (0.0, 0.0, 0.9), fov_deg=60.0, width=320, height=240)
    height, phase = rng.uniform(1.6, 1.85), rng.uniform(0, 1.1)
    images, pos_img, scales, views = [], [], [], []
    for k in range(frames):
        t = phase + k / 30.0  # JHMDB frames are consecutive at 30 fps
        walked = figure.walk_offset(k / 30.0) if action == "walk" else 0.0
        placement = figure.Placement(start[0] + walked * np.cos(heading), start[1] + walked * np.sin(heading),
                                     heading, height)
        skel = figure.skeleton(figure.pose_at(t, action), placement)
        puppet = Thing("person", 9, tuple(figure.body(skel, look, ADE_CLASSES["person"], 9)), skel)
        frame = render_scene(Scene(scene.ground, scene.ground_class, scene.things + (puppet,), scene.light), camera)
        images.append(frame.rgb)
        xy, _ = rc.project(camera, figure.jhmdb_points(skel))
        pos_img.append(xy + 0.5)  # MATLAB 1-based pixel coordinates
        scales.append(np.linalg.norm(xy[figure.JHMDB_JOINTS.index("neck")] - xy[figure.JHMDB_JOINTS.index("belly")]))
        views.append(_viewpoint(camera, skel.forward))
    pos = np.transpose(np.stack(pos_img, axis=2), (1, 0, 2))  # (15, 2, T) -> (2, 15, T)
    scale = np.asarray(scales)[None, :]
    belly = pos[:, figure.JHMDB_JOINTS.index("belly"):figure.JHMDB_JOINTS.index("belly") + 1, :]
    variables = {
        "pos_img": pos.astype(np.float64),
        "pos_world": ((pos - belly) / scale[None]).astype(np.float64),
        "scale": scale.astype(np.float64),
        "viewpoint": np.array(views, dtype=object).reshape(1, -1),
    }
    return images, variables


def write_jhmdb(root: str, seed: int = 0) -> dict:
    """JHMDB: Rename_Images/<action>/<video>/NNNNN.png and joint_positions/<action>/<video>/joint_positions.mat."""
    counts = {"videos": 0, "frames": 0, "short_videos": 0}
    notes = {}
    for index, (action, video, frames) in enumerate(JHMDB_VIDEOS):
        rng = np.random.default_rng([seed, FAMILY["jhmdb"], index])
        images, variables = _jhmdb_video(rng, action, frames)
        for k, image in enumerate(images):
            save_image(os.path.join(root, "Rename_Images", action, video, f"{k + 1:05d}.png"), image)
        mat = os.path.join(root, "joint_positions", action, video, "joint_positions.mat")
        os.makedirs(os.path.dirname(mat), exist_ok=True)
        with open(mat, "wb") as handle:
            handle.write(deterministic_mat(variables))
        counts["videos"] += 1
        counts["frames"] += frames
        if frames < 8:
            counts["short_videos"] += 1
            notes[f"Rename_Images/{action}/{video}"] = f"only {frames} frames: too short for a sentence"
    counts["notes"] = notes
    return counts
