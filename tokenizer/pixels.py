"""A loaded Pillow image of any mode as (H, W, 3) uint8 RGB, as the build makes it
(`transforms.rgb_array.to_rgb_array`, which `tokenizer` may not import; tests/test_tokenizer_inputs.py
feeds real files to both and checks the pixels agree), its colour taken to sRGB (`colour`, from
`tokenizer.image_shown`: a gAMA, an RGB ICC profile) before alpha is composited, as the build does.

`image.convert("RGB")` clips a 16-bit grey image ("I;16", "I") at 255 rather than scaling it: an
ImageMagick 16-bit grey PNG came out 99.2% white (mean 253.6 of an image of mean 127). Wide
samples keep their top 8 bits here, float ones are scaled from [0, 1] (or [0, 255]), and alpha,
a tRNS key included, is composited on white with the build's rounding.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image

from tokenizer.image_shown import STRIP_PIXELS

WHITE = 255
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or (image.mode in ("P", "L", "RGB", *_WIDE_GREY)
                                          and "transparency" in image.info)


def _integer_depth(image: Image.Image) -> tuple[int, bool]:
    """(bits, signed) of a mode "I" image's samples: as its file declares them (a 16-bit PGM or
    PPM; a TIFF's BitsPerSample and SampleFormat), else judged by their values (none over 255:
    8 bits)."""
    if image.format == "PPM":
        return 16, False
    tags = getattr(image, "tag_v2", None) if image.format == "TIFF" else None
    if tags is None:
        return (8, False) if int(np.asarray(image).max(initial=0)) <= 255 else (16, False)
    bits, kind = tags.get(258, (32,)), tags.get(339, (1,))
    bits, kind = (bits[0] if isinstance(bits, tuple) else bits), (kind[0] if isinstance(kind, tuple) else kind)
    return min(32, max(8, int(bits))), kind == 2


def _top_8_bits(values: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Samples of `bits` bits in Pillow's int32 buffer -> their top 8 bits; a signed one offset by
    2 ** (bits - 1) first (the most negative black), as ImageMagick shows it."""
    if bits == 32:
        unsigned = np.ascontiguousarray(values, np.int32).view(np.uint32)
        return ((unsigned ^ np.uint32(1 << 31) if signed else unsigned) >> 24).astype(np.uint8)
    if signed:
        half = 1 << (bits - 1)
        values = values.clip(-half, half - 1) + half
    return (values.clip(0, (1 << bits) - 1) >> (bits - 8)).astype(np.uint8)


def _grey(image: Image.Image) -> np.ndarray:
    """(H, W) uint8 of a wide grey ("I;16*", "I") or float ("F") image."""
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
        return np.round(np.nan_to_num(values / top).clip(0, 1) * 255).astype(np.uint8)
    values = np.asarray(image)
    if image.mode != "I":
        return (values.astype(np.uint16) >> 8).astype(np.uint8)
    return _top_8_bits(values, *_integer_depth(image))


def to_rgb(image: Image.Image, colour: Callable[[np.ndarray], np.ndarray] | None = None,
           wide: Callable[[int], np.ndarray | None] | None = None) -> np.ndarray:
    """A loaded Pillow image of any mode as an (H, W, 3) uint8 array (see the module). `colour`
    takes 8-bit samples to sRGB before alpha is composited on white; `wide` (a gAMA's table by
    sample bits) maps 16-bit grey samples from their 16 bits, as the build's `to_rgb_array` does."""
    if image.mode in (*_WIDE_GREY, "F"):
        table = wide(16) if wide is not None and image.mode != "F" else None
        if table is not None and (image.mode != "I" or _integer_depth(image) == (16, False)):
            values = np.asarray(image)
            rgb = np.repeat(table[values if image.mode != "I" else values.clip(0, 0xFFFF)][:, :, None], 3, axis=2)
        else:
            rgb = np.repeat(_grey(image)[:, :, None], 3, axis=2)
            rgb = rgb if colour is None else colour(rgb)
        if _has_alpha(image):  # a tRNS key (16-bit grey PNG): its pixels are the background, white
            rgb[np.asarray(image) == image.info["transparency"]] = WHITE
        return rgb
    if not _has_alpha(image):
        rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
        return rgb if colour is None else colour(rgb)
    rgba = np.asarray(image if image.mode == "RGBA" else image.convert("RGBA"))
    out = np.empty(rgba.shape[:2] + (3,), np.uint8)
    rows = max(1, STRIP_PIXELS // max(1, rgba.shape[1]))
    for y in range(0, rgba.shape[0], rows):  # a strip at a time: whole, the uint16 temporaries were 4x the image
        strip = rgba[y : y + rows]
        rgb = strip[..., :3] if colour is None else colour(np.ascontiguousarray(strip[..., :3]))
        alpha = strip[..., 3:4].astype(np.uint16)
        out[y : y + rows] = (rgb.astype(np.uint16) * alpha + WHITE * (255 - alpha) + 127) // 255
    return out
