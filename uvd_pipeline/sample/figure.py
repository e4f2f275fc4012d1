"""An articulated mannequin: exact 3D keypoints for the pose datasets, and a body to render.

The skeleton carries the 17 COCO keypoints; MPII's 16 and JHMDB's 15 joints are derived from
them and the head sphere. The body is chains of spheres along the bones, so the ray-caster
renders it and the visibility of every keypoint is decided by an exact ray test. Pure numpy.

Body frame: +x is where the person faces, +y their left, +z up; feet rest on z = 0.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from uvd_pipeline.sample.raycast import Camera, Primitive, Sphere, cast, project, rotation_z, unit

COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)
COCO_SKELETON = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)  # 1-based, as COCO stores it
MPII_JOINTS = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax", "upper_neck",
    "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
)
JHMDB_JOINTS = (
    "neck", "belly", "face", "r_shoulder", "l_shoulder", "r_hip", "l_hip", "r_elbow", "l_elbow",
    "r_knee", "l_knee", "r_wrist", "l_wrist", "r_ankle", "l_ankle",
)
K = {name: i for i, name in enumerate(COCO_KEYPOINTS)}

# Proportions for a 1.75 m adult (metres); scaled by height / 1.75.
HIP_HALF_WIDTH = 0.10
SHOULDER_HALF_WIDTH = 0.19
THIGH, SHIN, UPPER_ARM, FOREARM = 0.45, 0.42, 0.30, 0.27
SPINE = 0.50  # pelvis to thorax
NECK = 0.10  # thorax to the bottom of the head sphere
HEAD_RADIUS = 0.11
HIP_HEIGHT = 0.95
# Body radius around each COCO keypoint: the sphere that keypoint sits in.
KEYPOINT_RADII = np.array([HEAD_RADIUS] * 5 + [0.065] * 2 + [0.05] * 2 + [0.045] * 2 + [0.085] * 2
                          + [0.06] * 2 + [0.05] * 2)
HIDDEN_TOLERANCE = 1.5  # v = 2 if the first hit towards a joint is within this many body radii


@dataclass(frozen=True)
class Pose:
    """Joint angles in degrees. Flexion swings a limb forward, abduction out to the side; the
    elbow and knee angles bend the lower limb (forward for elbows, backward for knees)."""

    lean: float = 0.0
    head_yaw: float = 0.0
    head_pitch: float = 0.0
    l_shoulder_flex: float = 0.0
    l_shoulder_abd: float = 8.0
    l_elbow: float = 10.0
    r_shoulder_flex: float = 0.0
    r_shoulder_abd: float = 8.0
    r_elbow: float = 10.0
    l_hip_flex: float = 0.0
    l_hip_abd: float = 3.0
    l_knee: float = 3.0
    r_hip_flex: float = 0.0
    r_hip_abd: float = 3.0
    r_knee: float = 3.0


@dataclass(frozen=True)
class Placement:
    """Where a mannequin stands: ground position, facing angle (radians about +z), height."""

    x: float = 0.0
    y: float = 0.0
    heading: float = 0.0
    height: float = 1.75


@dataclass(frozen=True, eq=False)
class Skeleton:
    """World-space joints of one posed mannequin."""

    keypoints: np.ndarray  # (17, 3) COCO keypoints
    radii: np.ndarray  # (17,) body radius around each keypoint
    head_center: np.ndarray
    head_radius: float
    head_up: np.ndarray  # unit vector from the head centre to the head top
    forward: np.ndarray  # unit vector the face looks along
    scale: float  # height / 1.75


POSE_KINDS = ("standing", "walking", "arms_raised", "waving", "t_pose", "reaching", "squatting")


def walk_pose(phase: float, amplitude: float = 1.0) -> Pose:
    """One instant of a walking cycle; `phase` in radians (2 pi = one full stride)."""
    s = np.sin(phase)
    return Pose(
        lean=3.0,
        l_hip_flex=28.0 * amplitude * s,
        r_hip_flex=-28.0 * amplitude * s,
        l_knee=5.0 + 45.0 * amplitude * max(0.0, np.sin(phase - 1.3)),
        r_knee=5.0 + 45.0 * amplitude * max(0.0, np.sin(phase + np.pi - 1.3)),
        l_shoulder_flex=-22.0 * amplitude * s,
        r_shoulder_flex=22.0 * amplitude * s,
        l_elbow=15.0 + 15.0 * amplitude * max(0.0, -s),
        r_elbow=15.0 + 15.0 * amplitude * max(0.0, s),
    )


def wave_pose(phase: float) -> Pose:
    """The right arm raised to the side, the forearm swinging: JHMDB's `wave`."""
    return Pose(r_shoulder_abd=100.0, r_shoulder_flex=15.0, r_elbow=55.0 + 35.0 * np.sin(phase),
                head_yaw=-10.0, l_shoulder_abd=10.0)


def pose_at(t: float, action: str = "walk", period: float = 1.1) -> Pose:
    """The pose `t` seconds into an action (`walk` or `wave`), cycling every `period` seconds."""
    phase = 2 * np.pi * t / period
    if action == "walk":
        return walk_pose(phase)
    if action == "wave":
        return wave_pose(phase)
    raise KeyError(action)


def walk_offset(t: float, speed: float = 1.2) -> float:
    """Metres walked forward after `t` seconds (root motion that matches `pose_at(t, 'walk')`)."""
    return speed * t


def random_pose(rng: np.random.Generator) -> Pose:
    """A plausible random pose: one of POSE_KINDS with jittered angles."""
    kind = POSE_KINDS[int(rng.integers(len(POSE_KINDS)))]
    j = lambda spread: float(rng.uniform(-spread, spread))  # noqa: E731
    if kind == "walking":
        pose = walk_pose(float(rng.uniform(0, 2 * np.pi)), amplitude=float(rng.uniform(0.6, 1.1)))
    elif kind == "arms_raised":
        pose = Pose(l_shoulder_flex=160 + j(15), r_shoulder_flex=160 + j(15), l_shoulder_abd=20 + j(10),
                    r_shoulder_abd=20 + j(10), l_elbow=15 + j(10), r_elbow=15 + j(10), head_pitch=-15 + j(5))
    elif kind == "waving":
        pose = wave_pose(float(rng.uniform(0, 2 * np.pi)))
    elif kind == "t_pose":
        pose = Pose(l_shoulder_abd=90 + j(10), r_shoulder_abd=90 + j(10), l_elbow=j(10) + 10, r_elbow=j(10) + 10,
                    l_hip_abd=8 + j(4), r_hip_abd=8 + j(4))
    elif kind == "reaching":
        pose = Pose(r_shoulder_flex=80 + j(20), r_elbow=10 + j(10), l_shoulder_flex=j(20), lean=10 + j(8),
                    l_hip_flex=15 + j(10), l_knee=20 + j(10))
    elif kind == "squatting":
        bend = float(rng.uniform(50, 85))
        pose = Pose(lean=25 + j(10), l_hip_flex=bend, r_hip_flex=bend, l_knee=1.6 * bend, r_knee=1.6 * bend,
                    l_shoulder_flex=60 + j(20), r_shoulder_flex=60 + j(20), l_elbow=30 + j(10), r_elbow=30 + j(10),
                    l_hip_abd=12, r_hip_abd=12)
    else:
        pose = Pose(l_shoulder_flex=j(15), r_shoulder_flex=j(15), l_elbow=10 + j(20), r_elbow=10 + j(20))
    return replace(pose, head_yaw=pose.head_yaw + j(35), head_pitch=pose.head_pitch + j(10))


# -- forward kinematics ---------------------------------------------------------------------------
def _limb_direction(flex: float, abd: float, side: float) -> np.ndarray:
    """Direction of an upper limb hanging down, swung forward by `flex` and out by `abd` (deg)."""
    f, a = np.radians(flex), np.radians(abd) * side
    return np.array([np.sin(f), np.cos(f) * np.sin(a), -np.cos(f) * np.cos(a)])


def _bend(upper: np.ndarray, angle: float, towards: np.ndarray) -> np.ndarray:
    """Rotate `upper` by `angle` degrees in the plane it spans with `towards`."""
    w = towards - (towards @ upper) * upper
    if np.linalg.norm(w) < 1e-6:
        w = np.array([0.0, 0.0, 1.0]) - upper[2] * upper
    w = unit(w)
    a = np.radians(angle)
    return np.cos(a) * upper + np.sin(a) * w


def _local_joints(pose: Pose) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Joints in the body frame at unit scale: (named points, head centre, head up, face forward)."""
    fwd = np.array([1.0, 0.0, 0.0])
    pelvis = np.array([0.0, 0.0, HIP_HEIGHT])
    lean = np.radians(pose.lean)
    spine = np.array([np.sin(lean), 0.0, np.cos(lean)])
    thorax = pelvis + SPINE * spine
    left = np.array([0.0, 1.0, 0.0])
    p: dict[str, np.ndarray] = {}
    for side, sign in (("left", 1.0), ("right", -1.0)):
        tag = side[0]
        hip = pelvis + sign * HIP_HALF_WIDTH * left
        thigh = _limb_direction(getattr(pose, f"{tag}_hip_flex"), getattr(pose, f"{tag}_hip_abd"), sign)
        knee = hip + THIGH * thigh
        shin = _bend(thigh, getattr(pose, f"{tag}_knee"), -fwd)
        shoulder = thorax + sign * SHOULDER_HALF_WIDTH * left - 0.03 * spine
        arm = _limb_direction(getattr(pose, f"{tag}_shoulder_flex"), getattr(pose, f"{tag}_shoulder_abd"), sign)
        elbow = shoulder + UPPER_ARM * arm
        forearm = _bend(arm, getattr(pose, f"{tag}_elbow"), fwd + 0.3 * np.array([0, 0, 1.0]))
        p[f"{side}_hip"], p[f"{side}_knee"], p[f"{side}_ankle"] = hip, knee, knee + SHIN * shin
        p[f"{side}_shoulder"], p[f"{side}_elbow"], p[f"{side}_wrist"] = shoulder, elbow, elbow + FOREARM * forearm
    yaw, pitch = np.radians(pose.head_yaw), np.radians(pose.head_pitch) - lean
    face = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), -np.sin(pitch)])
    head_side = unit(np.cross(np.array([0.0, 0.0, 1.0]), face))
    head_up = unit(np.cross(face, head_side))
    head = thorax + NECK * spine + HEAD_RADIUS * head_up
    r = HEAD_RADIUS
    p["nose"] = head + 0.92 * r * face - 0.1 * r * head_up
    for side, sign in (("left", 1.0), ("right", -1.0)):
        p[f"{side}_eye"] = head + 0.75 * r * face + 0.32 * r * sign * head_side + 0.25 * r * head_up
        p[f"{side}_ear"] = head + 0.80 * r * sign * head_side - 0.05 * r * face
    return p, head, head_up, face


def skeleton(pose: Pose, placement: Placement) -> Skeleton:
    """Pose the mannequin and place it in the world, the lowest ankle resting on the ground."""
    points, head, head_up, face = _local_joints(pose)
    keypoints = np.stack([points[name] for name in COCO_KEYPOINTS])
    ankle_radius = KEYPOINT_RADII[K["left_ankle"]]
    lift = ankle_radius - min(keypoints[K["left_ankle"], 2], keypoints[K["right_ankle"], 2])
    scale = placement.height / 1.75
    turn = rotation_z(placement.heading)
    offset = np.array([placement.x, placement.y, 0.0])
    to_world = lambda q: (scale * (q + np.array([0.0, 0.0, lift]))) @ turn.T + offset  # noqa: E731
    return Skeleton(
        keypoints=to_world(keypoints),
        radii=KEYPOINT_RADII * scale,
        head_center=to_world(head),
        head_radius=HEAD_RADIUS * scale,
        head_up=head_up @ turn.T,
        forward=face @ turn.T,
        scale=scale,
    )


# -- the body -------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Look:
    """Textures of one mannequin: skin, top and trousers (crops of real photos, or plain colours)."""

    skin: np.ndarray
    top: np.ndarray
    trousers: np.ndarray

    def __post_init__(self) -> None:
        for name in ("skin", "top", "trousers"):  # float32 once, shared by every sphere
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float32))


def _chain(a: np.ndarray, b: np.ndarray, ra: float, rb: float,
           spacing: float = 0.85) -> list[tuple[np.ndarray, float]]:
    """Overlapping spheres from a to b, radius varying linearly, `spacing` radii apart."""
    length = float(np.linalg.norm(b - a))
    count = max(2, int(np.ceil(length / (spacing * min(ra, rb)))) + 1)
    return [(a + (b - a) * s, ra + (rb - ra) * s) for s in np.linspace(0.0, 1.0, count)]


def body(skel: Skeleton, look: Look, class_id: int, instance_id: int) -> list[Primitive]:
    """Spheres along every bone, a head sphere and hands and feet, ready for the ray-caster."""
    kp, s = skel.keypoints, skel.scale
    at = lambda name: kp[K[name]]  # noqa: E731
    pelvis = (at("left_hip") + at("right_hip")) / 2
    thorax = (at("left_shoulder") + at("right_shoulder")) / 2
    head_bottom = skel.head_center - skel.head_up * skel.head_radius
    parts: list[tuple[list[tuple[np.ndarray, float]], np.ndarray]] = [
        ([(skel.head_center, skel.head_radius)], look.skin),
        (_chain(thorax, head_bottom + 0.02 * s * skel.head_up, 0.05 * s, 0.045 * s), look.skin),
        (_chain(thorax, pelvis + 0.3 * (thorax - pelvis), 0.12 * s, 0.11 * s, 0.9), look.top),
        (_chain(pelvis + 0.3 * (thorax - pelvis), pelvis, 0.11 * s, 0.11 * s, 0.9), look.trousers),
    ]
    for side in ("left", "right"):
        shoulder, elbow, wrist = at(f"{side}_shoulder"), at(f"{side}_elbow"), at(f"{side}_wrist")
        hip, knee, ankle = at(f"{side}_hip"), at(f"{side}_knee"), at(f"{side}_ankle")
        waist = hip + (shoulder - hip) * 0.45
        foot = ankle + 0.09 * s * unit(np.array([*(skel.forward[:2]), 0.0])) - np.array([0, 0, 0.015 * s])
        parts += [
            (_chain(shoulder, waist, 0.075 * s, 0.08 * s, 0.9), look.top),
            (_chain(shoulder, elbow, 0.065 * s, 0.05 * s), look.top),
            (_chain(elbow, wrist, 0.05 * s, 0.04 * s), look.skin),
            ([(wrist + 0.035 * s * unit(wrist - elbow), 0.045 * s)], look.skin),
            (_chain(hip, knee, 0.085 * s, 0.06 * s), look.trousers),
            (_chain(knee, ankle, 0.06 * s, 0.05 * s), look.trousers),
            (_chain(ankle, foot, 0.05 * s, 0.045 * s), look.trousers),
        ]
    return [Sphere(center, radius, texture, class_id, instance_id)
            for spheres, texture in parts for center, radius in spheres]


# -- keypoints in an image ---------------------------------------------------------------------
def coco_visibility(camera: Camera, skel: Skeleton, primitives: Sequence[Primitive]) -> np.ndarray:
    """COCO v per keypoint: 0 outside the image, 2 if the first surface on the ray to the joint
    is within HIDDEN_TOLERANCE body radii of the joint's depth, 1 if something nearer hides it."""
    xy, z = project(camera, skel.keypoints)
    inside = (z > 0) & (xy[:, 0] >= 0) & (xy[:, 0] < camera.width) & (xy[:, 1] >= 0) & (xy[:, 1] < camera.height)
    dirs = (skel.keypoints - camera.position) / np.where(z > 0, z, 1.0)[:, None]  # camera-z = 1: t is depth
    t, _ = cast(primitives, camera.position, dirs)
    seen = t >= z - HIDDEN_TOLERANCE * skel.radii
    return np.where(inside, np.where(seen, 2, 1), 0).astype(np.int64)


def mpii_points(skel: Skeleton) -> np.ndarray:
    """(16, 3) MPII joints; pelvis, thorax, upper neck and head top come from the hips,
    shoulders and head sphere."""
    kp = skel.keypoints
    at = lambda name: kp[K[name]]  # noqa: E731
    pelvis = (at("left_hip") + at("right_hip")) / 2
    thorax = (at("left_shoulder") + at("right_shoulder")) / 2
    upper_neck = skel.head_center - skel.head_up * skel.head_radius
    head_top = skel.head_center + skel.head_up * skel.head_radius
    named = {"pelvis": pelvis, "thorax": thorax, "upper_neck": upper_neck, "head_top": head_top}
    for side, tag in (("left", "l"), ("right", "r")):
        for joint in ("ankle", "knee", "hip", "wrist", "elbow", "shoulder"):
            named[f"{tag}_{joint}"] = at(f"{side}_{joint}")
    return np.stack([named[name] for name in MPII_JOINTS])


def jhmdb_points(skel: Skeleton) -> np.ndarray:
    """(15, 3) JHMDB puppet joints: neck between thorax and head, belly mid-torso, face at the
    front of the head sphere."""
    kp = skel.keypoints
    at = lambda name: kp[K[name]]  # noqa: E731
    pelvis = (at("left_hip") + at("right_hip")) / 2
    thorax = (at("left_shoulder") + at("right_shoulder")) / 2
    head_bottom = skel.head_center - skel.head_up * skel.head_radius
    named = {
        "neck": (thorax + head_bottom) / 2,
        "belly": pelvis + 0.45 * (thorax - pelvis),
        "face": skel.head_center + 0.5 * skel.head_radius * skel.forward,
    }
    for side, tag in (("left", "l"), ("right", "r")):
        for joint in ("shoulder", "hip", "elbow", "knee", "wrist", "ankle"):
            named[f"{tag}_{joint}"] = at(f"{side}_{joint}")
    return np.stack([named[name] for name in JHMDB_JOINTS])


def in_image(camera: Camera, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates of world points and whether each lands inside the image in front."""
    xy, z = project(camera, points)
    inside = (z > 0) & (xy[:, 0] >= 0) & (xy[:, 0] < camera.width) & (xy[:, 1] >= 0) & (xy[:, 1] < camera.height)
    return xy, inside
