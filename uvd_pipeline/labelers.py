"""Pseudo-labelers: a task's targets from a model or an algorithm instead of ground truth.

The paper labelled much of UVDv1 with MMPose (pose), DPT (depth), Mask2Former (segmentation)
and DexiNed (edges). A labeler here takes the canvas image (and, for stereo, the right view on
the same canvas) and returns the target image. Shipped: classical `canny` (edges) and `sgbm`
(depth as disparity from a rectified stereo pair), and `mmpose` (pose), which needs the optional
`mmpose` extra plus a config and checkpoint the user supplies; nothing is downloaded.

A spec is a mapping: {"name": "sgbm", "num_disparities": 64}; its parameters are those of the
labeler's model in `uvd_pipeline.config` (`LABELER_MODELS`), checked with the config before the build.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import cv2
import numpy as np

from transforms.annotations import COCO17, canny_edges, depth_to_colour, draw_skeletons

LABELER_TASKS = {"canny": "edges", "sgbm": "depth", "mmpose": "pose"}
SGBM_LEAST_DISPARITIES = 16  # OpenCV's StereoSGBM searches a multiple of 16, and needs views wider than it


class LabelerError(ValueError):
    """A labeler spec that cannot work; phrased for the config's author."""


class NoLabel(ValueError):
    """A labeler that found nothing in this image (semi-global matching matched no pixel): no
    target, as a ground-truth map that holds none is none (`empty_target`), never a black one."""


@dataclass(frozen=True)
class LabelContext:
    right: np.ndarray | None = None  # the right view of a rectified stereo pair, on the same canvas
    content: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 of the image's pixels on the canvas (pad: less)


def canny_within(canvas: np.ndarray, content: tuple[int, int, int, int] | None,
                 sigma: float = 0.33) -> np.ndarray:
    """Canny edges of the image's own pixels on the canvas, none in a letterbox's pad: on the
    whole canvas the pad's border with the image is drawn as an edge the canvas wide, and the pad's
    black lowers the median grey the thresholds come from."""
    if content is None:
        return canny_edges(canvas, sigma)
    x0, y0, x1, y1 = content
    return on_canvas(canny_edges(canvas[y0:y1, x0:x1], sigma), canvas.shape, content)


def on_canvas(part: np.ndarray, shape: tuple[int, ...], content: tuple[int, int, int, int]) -> np.ndarray:
    """A target made of the image's own pixels, placed where they lie on a black canvas."""
    x0, y0, x1, y1 = content
    target = np.zeros(shape[:2] + (3,), np.uint8)
    target[y0:y1, x0:x1] = part
    return target


def labeler_params(spec: dict[str, Any]) -> Any:
    """The spec's parameters checked (names, types, ranges) by the config's model of its labeler,
    defaults filled in: the one place they are read, so a value the config refuses never reaches a
    labeler (where it failed every pair of the source). Raises `LabelerError` naming the field."""
    from pydantic import ValidationError

    from uvd_pipeline.config import LABELER_MODELS

    model = LABELER_MODELS.get(spec.get("name"))  # type: ignore[arg-type]
    if model is None:
        raise LabelerError(f"unknown labeler {spec.get('name')!r}; allowed: {', '.join(FACTORIES)}")
    try:
        return model.model_validate(spec)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "name"
            if error["type"] == "extra_forbidden":
                problems.append(f"{field}: unknown parameter; {spec['name']} takes "
                                f"{', '.join(f for f in model.model_fields if f != 'name')}")
            else:
                message, shown = error["msg"].removeprefix("Value error, "), repr(error.get("input"))
                problems.append(f"{field}: {message}" + ("" if shown in message else f" (got {shown})"))
        raise LabelerError("; ".join(problems)) from None


def _canny(spec: dict[str, Any]) -> Callable[[np.ndarray, LabelContext], np.ndarray]:
    sigma = labeler_params(spec).sigma

    def label(image: np.ndarray, context: LabelContext) -> np.ndarray:
        edges = canny_within(image, context.content, sigma)
        if not edges.any():  # as sgbm's no match: an all-black map would say the image has no edge
            raise NoLabel("the canny labeler found no edge in the image (one colour, a blank or faded frame, or "
                          "a grey too flat for its thresholds)")
        return edges

    return label


def sgbm_disparity(left: np.ndarray, right: np.ndarray, num_disparities: int = 64, block_size: int = 5) -> np.ndarray:
    """Semi-global block matching on a rectified pair: disparity in pixels, <= 0 where unknown.

    The search range is capped at half the image width (OpenCV needs it below the width). A view
    no wider than the least range, 16 px (a portrait image padded onto a small canvas), is
    `NoLabel`: OpenCV asked for 2^64 bytes there, or crashed the process.
    """
    if left.shape[1] <= SGBM_LEAST_DISPARITIES:
        raise NoLabel(f"the sgbm labeler needs views wider than {SGBM_LEAST_DISPARITIES} px; the image is "
                      f"{left.shape[1]} px wide on the canvas (a larger image.size, or resize: crop, draws it wider)")
    cap = max(SGBM_LEAST_DISPARITIES, (left.shape[1] // 2) // 16 * 16)
    num_disparities = min(max(SGBM_LEAST_DISPARITIES, int(np.ceil(num_disparities / 16)) * 16), cap)
    matcher = cv2.StereoSGBM_create(
        minDisparity=0, numDisparities=num_disparities, blockSize=block_size,
        P1=8 * 3 * block_size**2, P2=32 * 3 * block_size**2, disp12MaxDiff=1,
        uniquenessRatio=10, speckleWindowSize=100, speckleRange=2, mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY,
    )
    gray_left = cv2.cvtColor(np.ascontiguousarray(left), cv2.COLOR_RGB2GRAY)
    gray_right = cv2.cvtColor(np.ascontiguousarray(right), cv2.COLOR_RGB2GRAY)
    return matcher.compute(gray_left, gray_right).astype(np.float32) / 16.0


def _sgbm(spec: dict[str, Any]) -> Callable[[np.ndarray, LabelContext], np.ndarray]:
    params = labeler_params(spec)
    num_disparities, block_size = params.num_disparities, params.block_size

    def label(image: np.ndarray, context: LabelContext) -> np.ndarray:
        if context.right is None:
            raise LabelerError("the sgbm labeler needs the right view of a stereo pair")
        x0, y0, x1, y1 = context.content or (0, 0, image.shape[1], image.shape[0])
        # the views' own pixels: matched on the padded canvas, the disparity bled into the pad
        disparity = sgbm_disparity(image[y0:y1, x0:x1], context.right[y0:y1, x0:x1], num_disparities, block_size)
        if not (disparity > 0).any():  # depth_to_colour's valid pixels: none would draw all black
            raise NoLabel("the sgbm labeler matched no pixel of the pair (a view without texture, or views "
                          "that are not a rectified pair)")
        colour = depth_to_colour(disparity, disparity=True)
        return colour if context.content is None else on_canvas(colour, image.shape, context.content)

    return label


def _mmpose(spec: dict[str, Any]) -> Callable[[np.ndarray, LabelContext], np.ndarray]:
    try:
        from mmpose.apis import inference_topdown, init_model
    except Exception as exc:  # not installed, or its mmcv ops do not load
        raise LabelerError(
            "the mmpose labeler needs the optional extra: pip install -e '.[mmpose]' "
            f"(import failed: {type(exc).__name__}: {exc})"
        ) from None
    params = labeler_params(spec)
    model = init_model(params.config, params.checkpoint, device=params.device)
    threshold = params.score_threshold

    def label(image: np.ndarray, context: LabelContext) -> np.ndarray:
        results = inference_topdown(model, np.ascontiguousarray(image[:, :, ::-1]))
        people = []
        for result in results:
            points = np.asarray(result.pred_instances.keypoints)[0]
            scores = np.asarray(result.pred_instances.keypoint_scores)[0]
            people.append(np.column_stack([points + 0.5, np.where(scores > threshold, 2.0, 0.0)]))
        return draw_skeletons(image.shape[0], people, COCO17)

    return label


FACTORIES: dict[str, Callable[[dict[str, Any]], Callable[[np.ndarray, LabelContext], np.ndarray]]] = {
    "canny": _canny, "sgbm": _sgbm, "mmpose": _mmpose,
}


def check_spec(spec: dict[str, Any], task: str | None = None) -> None:
    """Fail before the build when a labeler spec cannot work (unknown name, a parameter that is
    unknown or of the wrong type or range, missing files)."""
    labeler_params(spec)
    name = spec["name"]
    if task is not None and LABELER_TASKS[name] != task:
        raise LabelerError(f"labeler {name!r} makes {LABELER_TASKS[name]} targets, not {task}")
    if name == "mmpose":
        for field in ("config", "checkpoint"):
            path = spec.get(field)
            if not path or not os.path.exists(path):
                raise LabelerError(f"the mmpose labeler needs `{field}`: a local file path (got {path!r})")
        _mmpose(spec)  # import check: fail now, not in a worker


@lru_cache(maxsize=8)
def _cached(spec_json: str) -> Callable[[np.ndarray, LabelContext], np.ndarray]:
    spec = json.loads(spec_json)
    return FACTORIES[spec["name"]](spec)


def get_labeler(spec: dict[str, Any]) -> Callable[[np.ndarray, LabelContext], np.ndarray]:
    """The labeler for `spec`, built once per worker process (a model loads once)."""
    return _cached(json.dumps(spec, sort_keys=True))
