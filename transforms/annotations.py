"""Annotations rendered as images: the targets of the annotated visual sentences.

Geometry (boxes, keypoints) is mapped onto the output canvas first and drawn there, so lines
keep one width whatever the input resolution; dense maps (labels, depth, normals) are resized
with nearest-neighbour by the same `ResizePlan` as their image and coloured afterwards, so no
class id or invalid depth is ever blended with its neighbour.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np

from transforms.class_colours import SEPARATED_IDS, separated_colours

PALETTE_SEED = 20231201  # one fixed palette for every build: a class keeps its colour everywhere
PALETTE_SIZE = 1 << 16
MAX_CLASS_ID = PALETTE_SIZE - 1  # class ids 1..MAX_CLASS_ID have their own colour; 0 is background
BOX_THICKNESS = 2
JOINT_RADIUS = 3
LIMB_WIDTH = 2


@lru_cache(maxsize=1)
def palette() -> np.ndarray:
    """(65536, 3) uint8: id 0 is black; ids 1..255, the ones datasets use (ADE20K's 150, COCO's 90,
    VOC's 20), colours spread far apart (`class_colours`: near twins merge once tokenised); every
    other id a fixed random bright-enough colour."""
    rng = np.random.default_rng(PALETTE_SEED)
    colours = rng.integers(40, 256, size=(PALETTE_SIZE, 3), dtype=np.uint8)
    colours[0] = 0
    colours[1 : SEPARATED_IDS + 1] = separated_colours(SEPARATED_IDS)
    return colours


def colour_of(class_id: int) -> tuple[int, int, int]:
    r, g, b = palette()[int(class_id) % PALETTE_SIZE]
    return int(r), int(g), int(b)


def colourize_labels(labels: np.ndarray) -> np.ndarray:
    """Class-id map (H, W) of any integer type -> RGB through the fixed palette (0 stays black)."""
    return palette()[labels.astype(np.int64) % PALETTE_SIZE]


# -- boxes --------------------------------------------------------------------------------
def draw_boxes(canvas: np.ndarray, boxes_xyxy: np.ndarray, class_ids: Sequence[int],
               thickness: int = BOX_THICKNESS) -> np.ndarray:
    """Outline each box (canvas coordinates, x0 y0 x1 y1) in its class colour over the image."""
    out = np.ascontiguousarray(canvas.copy())
    size_y, size_x = out.shape[:2]
    for (x0, y0, x1, y1), class_id in zip(np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4), class_ids):
        # pixel-edge coordinates -> the pixels the edges pass through
        if x1 <= 0 or y1 <= 0 or x0 >= size_x or y0 >= size_y:
            continue  # wholly off the canvas (cropped away): clamping would draw it on the border
        left, top = int(np.clip(np.floor(x0), 0, size_x - 1)), int(np.clip(np.floor(y0), 0, size_y - 1))
        right, bottom = int(np.clip(np.ceil(x1) - 1, 0, size_x - 1)), int(np.clip(np.ceil(y1) - 1, 0, size_y - 1))
        if right < left or bottom < top:
            continue
        colour = colour_of(class_id)
        t = thickness
        out[top : min(top + t, bottom + 1), left : right + 1] = colour
        out[max(bottom - t + 1, top) : bottom + 1, left : right + 1] = colour
        out[top : bottom + 1, left : min(left + t, right + 1)] = colour
        out[top : bottom + 1, max(right - t + 1, left) : right + 1] = colour
    return out


def turned_box_corners(box_xyxy: Sequence[float], degrees: float) -> np.ndarray:
    """(4, 2) corners of a box turned about its centre by `degrees`, clockwise on the screen
    (y points down): CVAT's rotated rectangle, exported as the unrotated box and its rotation."""
    x0, y0, x1, y1 = box_xyxy
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    t = np.radians(degrees)
    turn = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return (np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) - centre) @ turn.T + centre


def clip_to_rect(polygon: np.ndarray, rect: Sequence[float]) -> np.ndarray:
    """The part of a convex polygon inside `rect` (x0, y0, x1, y1, pixel-edge coordinates: the
    image, or the part a crop keeps), (k, 2), by Sutherland-Hodgman in float64: a turned box is
    clipped as a flat one is, its cut edges drawn on the border, and no vertex far outside
    reaches OpenCV's int coordinates."""
    points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    x0, y0, x1, y1 = map(float, rect)
    for axis, bound, sign in ((0, x0, 1), (0, x1, -1), (1, y0, 1), (1, y1, -1)):
        if len(points) == 0:
            break
        inside = sign * (points[:, axis] - bound) >= 0
        kept = []
        for i in range(len(points)):
            previous, current = points[i - 1], points[i]
            if inside[i] != inside[i - 1]:  # the edge crosses the bound: keep the crossing
                t = (bound - previous[axis]) / (current[axis] - previous[axis])
                kept.append(previous + t * (current - previous))
            if inside[i]:
                kept.append(current)
        points = np.array(kept, dtype=np.float64).reshape(-1, 2)
    return points


def polygon_area(polygon: np.ndarray) -> float:
    """Shoelace area; 0 for fewer than 3 points (a polygon that merely touches the image)."""
    x, y = np.asarray(polygon, dtype=np.float64).reshape(-1, 2).T
    return 0.0 if len(x) < 3 else abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2


def _depth_inside(polygon: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """Each pixel centre's distance inside a convex polygon's nearest edge line (negative outside),
    over the window of `height` x `width` pixels at (`top`, `left`): for a convex polygon, the
    distance to its outline."""
    polygon = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    centre = polygon.mean(axis=0)
    ys, xs = np.mgrid[top : top + height, left : left + width] + 0.5
    depth = np.full((height, width), np.inf)
    for a, b in zip(polygon, np.roll(polygon, -1, axis=0)):
        length = float(np.hypot(*(b - a)))
        if length == 0:
            continue  # a vertex the clipping repeated
        normal = np.array([a[1] - b[1], b[0] - a[0]]) / length
        normal = normal if (centre - a) @ normal >= 0 else -normal  # pointing inside
        depth = np.minimum(depth, (xs - a[0]) * normal[0] + (ys - a[1]) * normal[1])
    return depth


def draw_outlines(canvas: np.ndarray, polygons: Sequence[np.ndarray], class_ids: Sequence[int],
                  region: tuple[int, int, int, int], thickness: int = BOX_THICKNESS) -> np.ndarray:
    """Outline each convex polygon (canvas coordinates: a turned box clipped to the image) in its
    class colour, as `draw_boxes` outlines a box: the pixels it touches (centre less than half a
    pixel outside) that lie within `thickness` pixels of its edges, within `region` (x0, y0, x1,
    y1: the image's part of the canvas) only."""
    out = np.ascontiguousarray(canvas.copy())
    x0, y0, x1, y1 = region
    for polygon, class_id in zip(polygons, class_ids):
        polygon = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        (left, top), (right, bottom) = np.floor(polygon.min(axis=0)), np.ceil(polygon.max(axis=0))
        left, top = int(max(left, x0)), int(max(top, y0))  # only the pixels it can touch
        right, bottom = int(min(right, x1)), int(min(bottom, y1))
        if right <= left or bottom <= top:
            continue
        depth = _depth_inside(polygon, top, left, bottom - top, right - left)
        band = (depth > -0.5) & (depth <= thickness - 0.5)
        out[top:bottom, left:right][band] = colour_of(class_id)
    return out


def xywh_to_xyxy(box: Sequence[float]) -> np.ndarray:
    x, y, w, h = box
    return np.array([x, y, x + w, y + h], dtype=np.float64)


def transform_boxes(plan, boxes_xyxy: np.ndarray) -> np.ndarray:
    """Map boxes through a ResizePlan (all four corners, so any axis-aligned plan is exact)."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    corners = np.stack([boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [0, 3]], boxes[:, [2, 3]]], axis=1)
    mapped = plan.apply_points(corners.reshape(-1, 2)).reshape(-1, 4, 2)
    return np.concatenate([mapped.min(axis=1), mapped.max(axis=1)], axis=1)


# -- skeletons ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Skeleton:
    """A keypoint layout: joint names and the limbs (0-based pairs) drawn between them."""

    name: str
    joints: tuple[str, ...]
    limbs: tuple[tuple[int, int], ...]


COCO17 = Skeleton(
    "coco17",
    ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
     "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
     "right_knee", "left_ankle", "right_ankle"),
    tuple((a - 1, b - 1) for a, b in (
        (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
        (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7))),
)
MPII16 = Skeleton(
    "mpii16",
    ("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax", "upper_neck",
     "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist"),
    # MMPose's MPII links: the shoulders hang from the upper neck, not the thorax
    ((0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9), (8, 12), (12, 11),
     (11, 10), (8, 13), (13, 14), (14, 15)),
)
JHMDB15 = Skeleton(
    "jhmdb15",
    ("neck", "belly", "face", "r_shoulder", "l_shoulder", "r_hip", "l_hip", "r_elbow", "l_elbow",
     "r_knee", "l_knee", "r_wrist", "l_wrist", "r_ankle", "l_ankle"),
    ((0, 2), (0, 1), (0, 3), (0, 4), (3, 7), (7, 11), (4, 8), (8, 12), (1, 5), (1, 6), (5, 9),
     (9, 13), (6, 10), (10, 14)),
)
SKELETONS = {s.name: s for s in (COCO17, MPII16, JHMDB15)}
# a target's drawing work, judged before any is drawn (by the renderer, and by a source before it
# builds a payload that large): each box is a Python step (~0.1 ms flat, ~0.05 ms more to turn and
# clip), each joint and limb an OpenCV call; a file of 5M boxes or people for one image (which the
# annotation size cap allows) drew for hours
MAX_BOXES = 20_000  # boxes, or people, of one target
MAX_POSE_STEPS = 400_000  # joints and limbs of one pose target, all its people


def _rainbow(n: int, offset: float = 0.0) -> list[tuple[int, int, int]]:
    """OpenPose-style: one saturated hue per limb, evenly around the colour wheel."""
    return [tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb((offset + i / n) % 1.0, 1.0, 1.0))
            for i in range(n)]


def limb_colours(skeleton: Skeleton) -> list[tuple[int, int, int]]:
    return _rainbow(len(skeleton.limbs))


def joint_colours(skeleton: Skeleton) -> list[tuple[int, int, int]]:
    return _rainbow(len(skeleton.joints), offset=0.5 / len(skeleton.joints))


def draw_skeletons(size: int, people: Sequence[np.ndarray], skeleton: Skeleton,
                   background: np.ndarray | None = None) -> np.ndarray:
    """Skeletons on black (or over `background`): each person is (J, 3) of canvas x, y, visible.

    Limbs are filled ellipses in one colour per limb, drawn only between two visible joints;
    joints are discs drawn on top, visible joints only (as MMPose and OpenPose draw them).
    """
    canvas = np.zeros((size, size, 3), np.uint8) if background is None else np.ascontiguousarray(background.copy())
    shift = 4  # sub-pixel precision for OpenCV drawing
    scale = 1 << shift
    limb_rgb = limb_colours(skeleton)
    joint_rgb = joint_colours(skeleton)
    for person in people:
        person = np.asarray(person, dtype=np.float64)
        # canvas coordinates are pixel-edge based; OpenCV draws at pixel centres
        xy = person[:, :2] - 0.5
        visible = person[:, 2] > 0
        for (a, b), colour in zip(skeleton.limbs, limb_rgb):
            if not (visible[a] and visible[b]):
                continue
            centre = (xy[a] + xy[b]) / 2
            length = float(np.hypot(*(xy[a] - xy[b])))
            angle = float(np.degrees(np.arctan2(xy[b][1] - xy[a][1], xy[b][0] - xy[a][0])))
            polygon = cv2.ellipse2Poly((int(round(centre[0])), int(round(centre[1]))),
                                       (max(1, int(round(length / 2))), LIMB_WIDTH), int(round(angle)), 0, 360, 5)
            cv2.fillConvexPoly(canvas, polygon, colour, lineType=cv2.LINE_AA)
        for joint, colour in enumerate(joint_rgb):
            if visible[joint]:
                centre = (int(round(xy[joint][0] * scale)), int(round(xy[joint][1] * scale)))
                cv2.circle(canvas, centre, JOINT_RADIUS * scale, colour, -1, lineType=cv2.LINE_8, shift=shift)
    return canvas


def image_region(plan, size: int) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of the canvas that shows the image (not `pad`'s padding)."""
    (ox, oy), (sw, sh) = plan.offset, plan.scaled
    return max(ox, 0), max(oy, 0), min(ox + sw, size), min(oy + sh, size)


def transform_keypoints(plan, keypoints: np.ndarray, size: int) -> np.ndarray:
    """(J, 3) x, y, v in input pixels -> canvas coordinates; joints that leave the image's part of
    the canvas turn invisible: cropped away, or (`pad`) on the padding, where the input shows no
    image (an annotated joint outside the image, as MPII has, is no more drawn there than MMPose
    draws it off its image)."""
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
    out = keypoints.copy()
    out[:, :2] = plan.apply_points(keypoints[:, :2])
    x0, y0, x1, y1 = image_region(plan, size)
    inside = (out[:, 0] >= x0) & (out[:, 0] < x1) & (out[:, 1] >= y0) & (out[:, 1] < y1)
    out[:, 2] = np.where(inside & (keypoints[:, 2] > 0), keypoints[:, 2], 0)
    return out


# -- depth, normals, edges --------------------------------------------------------------------
NEAR_FLOOR = 0.15  # the farthest valid depth still shows, so it is never confused with invalid black


def depth_to_colour(values: np.ndarray, *, disparity: bool = False) -> np.ndarray:
    """Per-image normalised colour map: near is bright, invalid (<= 0, nan, inf) is black.

    `disparity=True` reads the map as inverse depth (larger is nearer), as stereo gives it.
    """
    values = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(values) & (values > 0)
    out = np.zeros(values.shape + (3,), np.uint8)
    if not valid.any():
        return out
    nearness = values if disparity else -values
    lo, hi = nearness[valid].min(), nearness[valid].max()
    t = np.zeros_like(values)
    t[valid] = 1.0 if hi == lo else (nearness[valid] - lo) / (hi - lo)
    level = np.round((NEAR_FLOOR + (1 - NEAR_FLOOR) * t) * 255).astype(np.uint8)
    coloured = cv2.applyColorMap(level, cv2.COLORMAP_INFERNO)[..., ::-1]
    out[valid] = coloured[valid]
    return out


def normals_to_rgb(normals: np.ndarray) -> np.ndarray:
    """Unit normals (H, W, 3) in [-1, 1] -> RGB = (n + 1) / 2; round-trips within 1/255."""
    return np.round((np.clip(normals, -1, 1) + 1) * 127.5).astype(np.uint8)


def rgb_to_normals(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) / 127.5 - 1


def canny_edges(rgb: np.ndarray, sigma: float = 0.33) -> np.ndarray:
    """Edges as white on black, thresholds from the image's median grey (the usual auto-Canny)."""
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    gray = cv2.GaussianBlur(gray, (3, 3), 0)
    median = float(np.median(gray))
    lower = int(max(0, (1.0 - sigma) * median))
    upper = int(min(255, (1.0 + sigma) * median))
    edges = cv2.Canny(gray, lower, max(upper, lower + 1))
    return np.repeat(edges[:, :, None], 3, axis=2)


def edge_map_to_rgb(edges: np.ndarray) -> np.ndarray:
    """A dataset's edge labels (any dtype, > 0 on an edge) as white on black."""
    on = np.asarray(edges) > 0
    return np.repeat(np.where(on, 255, 0).astype(np.uint8)[:, :, None], 3, axis=2)
