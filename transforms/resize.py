"""Resize policies as explicit geometry.

A policy turns an (h, w) input into a `ResizePlan`: a crop box in input pixels, the size the
crop is scaled to, and where that lands on the square output canvas. Images, label maps and
point annotations all go through the same plan, so an annotation can never drift from its
image whatever the policy.

Policies (named and few, as img2dataset does):
- ``squash``: the LVM scripts' plain resize to size x size; aspect ratio not kept.
- ``center_crop``: scale the short side to ``size``, keep the central square.
- ``pad``: scale the long side to ``size``, pad the rest with a constant value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

ResizePolicy = Literal["squash", "center_crop", "pad"]
RESIZE_POLICIES: tuple[str, ...] = ("squash", "center_crop", "pad")


@dataclass(frozen=True)
class ResizePlan:
    """Where the output pixels come from. Coordinates are in input pixels, edges inclusive-exclusive."""

    in_h: int
    in_w: int
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 in input pixels
    scaled: tuple[int, int]  # (w, h) the crop is resized to
    offset: tuple[int, int]  # (x, y) of the scaled crop on the canvas
    size: int  # the square canvas side

    @property
    def scale_xy(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.crop
        return self.scaled[0] / (x1 - x0), self.scaled[1] / (y1 - y0)

    def for_input_size(self, h: int, w: int) -> "ResizePlan":
        """The same plan for a uniformly rescaled copy of the input."""
        if (h, w) == (self.in_h, self.in_w):
            return self
        return self.for_scaled_input(h, w, (w / self.in_w, h / self.in_h))

    def for_scaled_input(self, h: int, w: int, factor: tuple[float, float],
                         shift: tuple[float, float] = (0.0, 0.0)) -> "ResizePlan":
        """The same plan for an (h, w) copy of the input whose pixel edge x, y lies at input pixel
        edge (x - shift_x) / factor_x, (y - shift_y) / factor_y (a JPEG decoded at a DCT scale:
        `transforms.decode`), the crop rounded to whole pixels of the copy."""
        (sx, sy), (dx, dy) = factor, shift
        x0, y0, x1, y1 = self.crop
        crop = (
            min(int(round(x0 * sx + dx)), w - 1),
            min(int(round(y0 * sy + dy)), h - 1),
            min(max(int(round(x1 * sx + dx)), 1), w),
            min(max(int(round(y1 * sy + dy)), 1), h),
        )
        crop = (crop[0], crop[1], max(crop[2], crop[0] + 1), max(crop[3], crop[1] + 1))
        return ResizePlan(h, w, crop, self.scaled, self.offset, self.size)

    def apply_image(self, image: np.ndarray, *, nearest: bool = False, pad_value: int = 0) -> np.ndarray:
        """Crop, scale and place `image` (HxW or HxWxC) on the canvas.

        Shrinking uses area interpolation (no aliasing); enlarging uses bicubic; label maps pass
        ``nearest=True`` so class ids are never blended. Nearest takes the input pixel under each
        output pixel's centre (OpenCV's NEAREST_EXACT, as PIL and scikit-image sample): plain
        INTER_NEAREST takes the one under its top-left corner, which moved a map up to half an
        output pixel right and down of its image (a KITTI disparity edge one column off).
        """
        if image.shape[0] != self.in_h or image.shape[1] != self.in_w:
            return self.for_input_size(image.shape[0], image.shape[1]).apply_image(
                image, nearest=nearest, pad_value=pad_value
            )
        x0, y0, x1, y1 = self.crop
        region = image[y0:y1, x0:x1]
        sw, sh = self.scaled
        if (region.shape[1], region.shape[0]) != (sw, sh):
            if nearest:
                interp = cv2.INTER_NEAREST_EXACT
            elif sw < region.shape[1] and sh < region.shape[0]:
                interp = cv2.INTER_AREA
            else:
                interp = cv2.INTER_CUBIC
            region = cv2.resize(np.ascontiguousarray(region), (sw, sh), interpolation=interp)
            if region.ndim == 2 and image.ndim == 3:
                region = region[:, :, None]
        if (sw, sh) == (self.size, self.size):
            return np.ascontiguousarray(region)
        canvas = np.full((self.size, self.size) + image.shape[2:], pad_value, dtype=image.dtype)
        ox, oy = self.offset
        canvas[oy : oy + sh, ox : ox + sw] = region
        return canvas

    def apply_points(self, xy: np.ndarray) -> np.ndarray:
        """Map (N, 2) points in input pixel coordinates (pixel-edge origin) to canvas coordinates."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        sx, sy = self.scale_xy
        out = np.empty_like(xy)
        out[:, 0] = (xy[:, 0] - self.crop[0]) * sx + self.offset[0]
        out[:, 1] = (xy[:, 1] - self.crop[1]) * sy + self.offset[1]
        return out


def plan_resize(h: int, w: int, size: int, policy: ResizePolicy) -> ResizePlan:
    """The geometry that maps an (h, w) input onto a size x size canvas under `policy`."""
    if h < 1 or w < 1:
        raise ValueError(f"image has no pixels: {w}x{h}")
    if policy == "squash":
        return ResizePlan(h, w, (0, 0, w, h), (size, size), (0, 0), size)
    if policy == "center_crop":
        side = min(h, w)
        x0, y0 = (w - side) // 2, (h - side) // 2
        return ResizePlan(h, w, (x0, y0, x0 + side, y0 + side), (size, size), (0, 0), size)
    if policy == "pad":
        scale = size / max(h, w)
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        sw, sh = min(sw, size), min(sh, size)
        return ResizePlan(h, w, (0, 0, w, h), (sw, sh), ((size - sw) // 2, (size - sh) // 2), size)
    raise ValueError(f"unknown resize policy {policy!r}; allowed: {', '.join(RESIZE_POLICIES)}")


def fit_image(image: np.ndarray, size: int, policy: ResizePolicy, pad_value: int = 0) -> np.ndarray:
    """Resize an already-decoded image (a video frame, say) onto the canvas."""
    plan = plan_resize(image.shape[0], image.shape[1], size, policy)
    return plan.apply_image(image, pad_value=pad_value)


@dataclass(frozen=True)
class Canvas:
    """`fit_image` as a picklable value (a decoding process's per-frame postprocess), which also
    says how small a frame may be decoded or converted without losing canvas resolution."""

    size: int
    policy: ResizePolicy
    pad_value: int = 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return fit_image(image, self.size, self.policy, self.pad_value)

    def working_size(self, h: int, w: int) -> tuple[int, int]:
        """(w, h) of the smallest uniform reduction of an (h, w) frame that still covers the canvas."""
        ww, wh = needed_input_size(plan_resize(h, w, self.size, self.policy))
        return min(w, max(ww, 1)), min(h, max(wh, 1))


def needed_input_size(plan: ResizePlan) -> tuple[int, int]:
    """The smallest (w, h) a uniformly reduced input may have without upsampling the crop."""
    x0, y0, x1, y1 = plan.crop
    fx = plan.scaled[0] / (x1 - x0)
    fy = plan.scaled[1] / (y1 - y0)
    f = max(fx, fy)
    return int(np.ceil(plan.in_w * f)), int(np.ceil(plan.in_h * f))
