"""Decode any image file to RGB uint8, and onto the square canvas in one step.

Whatever the input (EXIF-rotated JPEG, grayscale, CMYK, palette, alpha, 16-bit), the output is
RGB uint8. Failures raise `DecodeError` with a short machine-readable reason, so callers can
count rejects by reason instead of crashing.

The fast path: a JPEG can decode at 1/2, 1/4 or 1/8 scale inside libjpeg (DCT scaling). We
ask for the smallest scale that still covers the output at full resolution, which is most of
the speed-up on large web images; area interpolation then finishes the resize.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from transforms.resize import ResizePlan, ResizePolicy, needed_input_size, plan_resize

# Our own guard (`max_pixels`, checked on the header before any pixel is decoded) replaces
# Pillow's global one, so the limit is the build config's and not a process-wide constant.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own error threshold (2 x 89.5 MP).
EXIF_ORIENTATION = 0x0112
WHITE = 255


class DecodeError(Exception):
    """An input that cannot become an image; `reason` is a short stable code for reports."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image on the canvas, with the facts about the original that reports want."""

    pixels: np.ndarray  # (size, size, 3) uint8
    width: int  # original width after EXIF orientation
    height: int
    format: str
    reduced_decode: int  # 1, 2, 4 or 8: the JPEG DCT scale used (1 = full decode)
    plan: ResizePlan  # the geometry from the original (oriented) image to the canvas


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise DecodeError("empty_file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        # the detail never quotes the bytes: a text file read by mistake must not be published
        raise DecodeError("not_an_image", f"no image format recognises these {len(data)} bytes") from None
    except Exception as exc:  # Pillow raises many types on broken headers
        raise DecodeError("corrupt_header", f"{type(exc).__name__}: {exc}"[:200]) from None
    w, h = image.size
    if w < 1 or h < 1:
        raise DecodeError("no_pixels", f"{w}x{h}")
    if w * h > max_pixels:
        raise DecodeError("decompression_bomb", f"{w}x{h} exceeds max_pixels={max_pixels}")
    return image


def _orientation(image: Image.Image) -> int:
    try:
        value = int(image.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def _load(image: Image.Image) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
    except OSError as exc:
        text = str(exc)
        reason = "truncated" if "truncated" in text or "broken data stream" in text else "decode_error"
        raise DecodeError(reason, text[:200]) from None
    except Exception as exc:
        raise DecodeError("decode_error", f"{type(exc).__name__}: {exc}"[:200]) from None


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    rgb = rgba[..., :3].astype(np.uint16)
    alpha = rgba[..., 3:4].astype(np.uint16)
    out = (rgb * alpha + WHITE * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """A loaded Pillow image of any mode as an (H, W, 3) uint8 array."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image)
    if mode == "L":
        gray = np.asarray(image)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image).astype(np.int64)
        if mode == "I" and values.max(initial=0) <= 255:
            gray = values.clip(0, 255).astype(np.uint8)
        else:
            gray = (values.clip(0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
        gray = np.round(np.nan_to_num(values / top).clip(0, 1) * 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in image.info
    ) or (mode in ("L", "RGB") and "transparency" in image.info)
    if has_alpha:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rgba = np.asarray(image.convert("RGBA"))
        return _composite_on_white(rgba)
    return np.asarray(image.convert("RGB"))


def decode_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Full-resolution decode to (H, W, 3) uint8 with EXIF orientation applied."""
    image = _open(data, max_pixels)
    orientation = _orientation(image)
    _load(image)
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    return to_rgb_array(image)


def load_image(
    data: bytes,
    size: int,
    policy: ResizePolicy,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    pad_value: int = 0,
    fast: bool = True,
) -> DecodedImage:
    """Decode `data` straight onto a size x size canvas (the ingest hot path)."""
    image = _open(data, max_pixels)
    fmt = image.format or "unknown"
    orientation = _orientation(image)
    raw_w, raw_h = image.size
    swapped = orientation in (5, 6, 7, 8)
    width, height = (raw_h, raw_w) if swapped else (raw_w, raw_h)
    plan: ResizePlan = plan_resize(height, width, size, policy)
    reduced = 1
    if fast and fmt == "JPEG":
        need_w, need_h = needed_input_size(plan)
        request = (need_h, need_w) if swapped else (need_w, need_h)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.draft(image.mode, request)
        reduced = max(1, raw_w // max(1, image.size[0]))
    _load(image)
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    pixels = plan.apply_image(to_rgb_array(image), pad_value=pad_value)
    return DecodedImage(pixels, width, height, fmt, reduced, plan)
