"""A CIELab TIFF's white point (its WhitePoint tag, 318) honoured on the way to sRGB.

Pillow converts "LAB" pixels to RGB as LittleCMS's D50 Lab (the ICC's PCS white), whatever white
the file names. Photoshop writes D50 Lab, read right that way; ImageMagick writes D65 Lab and says
so in the tag: read as D50 its colours were 7.4 levels off ImageMagick's own reading on average,
85 at most (pure blue came out (79, 0, 255)). Here such a file's Lab goes to XYZ relative to its
own white, that white adapted to D50 by Bradford (as the ICC adapts any white), then to sRGB by
sRGB's D50 matrix (`colour_profile._SRGB_TO_D50`), in float, strip by strip. A file without the
tag, or naming D50, keeps Pillow's conversion byte for byte.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from transforms.colour_profile import _BRADFORD, _D50, _SRGB_TO_D50, STRIP_PIXELS, _encoding

WHITE_POINT = 318  # TIFF's WhitePoint: the white's chromaticity x, y (two rationals)
_D50_XY = (0.3457, 0.3585)
_TOLERANCE = 0.0015  # a writer's rounding of D50's chromaticity: read as D50


def lab_white(image: Image.Image) -> tuple[float, float] | None:
    """The chromaticity a "LAB" TIFF's WhitePoint tag names when it is not D50's (None for none,
    D50, or one that is no chromaticity: two numbers 0 < x, y < 1, x + y < 1)."""
    if image.format != "TIFF" or image.mode != "LAB":
        return None
    value = getattr(image, "tag_v2", {}).get(WHITE_POINT)
    if not isinstance(value, tuple) or len(value) != 2:
        return None
    try:
        x, y = (float(v) for v in value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not (math.isfinite(x) and math.isfinite(y) and 0 < x < 1 and 0 < y < 1 and x + y < 1):
        return None
    return None if abs(x - _D50_XY[0]) <= _TOLERANCE and abs(y - _D50_XY[1]) <= _TOLERANCE else (x, y)


def _to_srgb_matrix(white: tuple[float, float]) -> np.ndarray:
    """XYZ relative to `white` (its Y 1) -> linear sRGB: Bradford to D50, then sRGB's from D50."""
    x, y = white
    source = np.array([x / y, 1.0, (1 - x - y) / y])
    adapt = np.linalg.inv(_BRADFORD) @ np.diag((_BRADFORD @ _D50) / (_BRADFORD @ source)) @ _BRADFORD
    return np.linalg.inv(_SRGB_TO_D50) @ adapt @ np.diag(source)  # type: ignore[arg-type]


def _f_inverse(t: np.ndarray) -> np.ndarray:
    """CIE 1976's inverse of f: XYZ over the white's from f(X / Xn)."""
    return np.where(t > 6 / 29, t ** 3, 3 * (6 / 29) ** 2 * (t - 4 / 29))


def lab_to_srgb(image: Image.Image, white: tuple[float, float]) -> np.ndarray:
    """A loaded "LAB" image (L* 0..100 as 0..255; a* and b* signed bytes, as Pillow's array of
    a TIFF's CIELab gives them) whose white is `white` -> (H, W, 3) uint8 sRGB, a quarter strip
    at a time."""
    w, h = image.size
    matrix = _to_srgb_matrix(white).T.astype(np.float32)
    encoded = _encoding()
    out = np.empty((h, w, 3), np.uint8)
    rows = max(1, (STRIP_PIXELS >> 2) // max(1, w))
    for y in range(0, h, rows):
        stored = np.ascontiguousarray(np.asarray(image.crop((0, y, w, min(h, y + rows))), np.uint8))
        signed = stored.view(np.int8).astype(np.float32)
        fy = (stored[..., 0].astype(np.float32) * np.float32(100 / 255) + 16) / 116
        xyz = np.stack([_f_inverse(fy + signed[..., 1] / 500), _f_inverse(fy),
                        _f_inverse(fy - signed[..., 2] / 200)], axis=-1).astype(np.float32)
        linear = xyz @ matrix
        np.clip(linear, 0, 1, out=linear)
        out[y : y + rows] = encoded[(linear * (len(encoded) - 1) + 0.5).astype(np.uint16)]
    return out
