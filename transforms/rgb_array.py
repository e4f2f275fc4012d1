"""A loaded Pillow image of any mode as (H, W, 3) uint8 RGB (`to_rgb_array`), strip by strip, its
alpha composited on white, a colour curve applied before that. Part of `transforms.decode`."""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image


STRIP_PIXELS = 1 << 20  # pixels converted at a time: the temporaries of a conversion are per strip
WHITE = 255


def _composite_on_white(rgba: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
    """RGBA uint8 shown on white; `table` (a `Curve`'s 8-bit one) takes the colour to sRGB first:
    the background is sRGB's white and the mix is made in sRGB values. A table of colours (a grey
    profile's) maps the grey that an "LA" image's RGBA repeats, its first band."""
    rgb = rgba[..., :3] if table is None else table[rgba[..., :3]] if table.ndim == 1 else table[rgba[..., 0]]
    return _on_white(rgb, rgba[..., 3:4])


def _on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(h, W, 3) uint8 sRGB colour composited on white by its (h, W, 1) uint8 alpha, rounded."""
    alpha = alpha.astype(np.uint16)
    return ((rgb.astype(np.uint16) * alpha + WHITE * (255 - alpha) + 127) // 255).astype(np.uint8)


_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


# modes of grey samples, which a grey ICC profile describes (`colour_profile.grey_table`)
_GREY_PROFILED_MODES = frozenset({"L", "LA", "La", *_WIDE_GREY})


# A curve to sRGB for samples of 8 or 16 bits (the argument): a table of the sRGB level (uint8,
# 2 ** bits) of each sample value, or of its sRGB colour ((2 ** bits, 3): a grey profile's), or
# None for nothing to do. A PNG's gAMA (`colour_profile.gamma_table`) or a grey ICC profile.
Curve = Callable[[int], "np.ndarray | None"]


def _grey_to_rgb(gray: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
    """(h, W) uint8 grey -> (h, W, 3) uint8, through `table` (a `Curve`'s) when there is one."""
    if table is not None and table.ndim == 2:
        return table[gray]
    return np.repeat((gray if table is None else table[gray])[:, :, None], 3, axis=2)


_PACKED_CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}  # 8-bit modes whose raw packing is their array layout


def pixels(image: Image.Image) -> np.ndarray:
    """`np.asarray(image)` for an 8-bit "L", "RGB" or "RGBA" image, packed in one piece: Pillow's
    `tobytes` packs 64 KiB chunks in a Python loop and joins them, a second full copy (the array of a
    1600-2600 px JPEG's draft decode: 1.05 -> 0.54 ms; `load_image` of the e2e bench's JPEGs 6.15-6.20
    -> 6.04-6.08 ms, ~0.1 CPU-s of a 900-image build). Same values, shape and read-only array; other
    modes go through `np.asarray`. `Image._getencoder` is Pillow's own (`tobytes` calls it); without
    it, `np.asarray`."""
    channels = _PACKED_CHANNELS.get(image.mode)
    w, h = image.size
    encoder = getattr(Image, "_getencoder", None)
    if channels is None or not w or not h or encoder is None:
        return np.asarray(image)
    image.load()
    packer = encoder(image.mode, "raw", image.mode)
    packer.setimage(image.im, (0, 0, w, h))
    size = w * h * channels
    chunks = []
    while True:
        _, status, chunk = packer.encode(size)
        chunks.append(chunk)
        if status:
            break
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if status < 0 or len(data) != size:
        return np.asarray(image)
    return np.frombuffer(data, np.uint8).reshape((h, w) if channels == 1 else (h, w, channels))


def _has_alpha(image: Image.Image) -> bool:
    mode = image.mode
    return mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB", *_WIDE_GREY) and "transparency" in image.info
    )


def _integer_depth(image: Image.Image) -> tuple[int, bool] | None:
    """(bits, signed) of the samples of a mode "I" image, as its file declares them: a PGM or PPM
    of a maxval over 255 (Pillow scales it to 16 bits), a TIFF by its BitsPerSample and
    SampleFormat; None when nothing declares them (an image made in memory): `to_rgb_array` then
    judges them by their values. Judged by the values, a dark 16-bit PGM (all samples under 256
    of 65535) was shown as 8-bit data, up to 175 levels too bright."""
    if image.format == "PPM":
        return 16, False
    tags = getattr(image, "tag_v2", None) if image.format == "TIFF" else None
    if tags is None:
        return None
    bits, kind = tags.get(258, (32,)), tags.get(339, (1,))
    bits, kind = (bits[0] if isinstance(bits, tuple) else bits), (kind[0] if isinstance(kind, tuple) else kind)
    return min(32, max(8, int(bits))), kind == 2


def _top_8_bits(values: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Samples of `bits` bits in Pillow's int32 buffer -> uint8, their top 8 bits (as 16-bit ones
    are: x >> 8). Pillow holds an unsigned 32-bit sample as the int32 of the same bits (ImageMagick's
    32-bit TIFF came out as negative numbers, black). A signed sample is offset by 2 ** (bits - 1)
    first (offset binary: the most negative black, 0 mid-grey, the most positive white), as
    ImageMagick shows a signed 16-bit TIFF; shown clipped at 0, ImageMagick's signed TIFFs of a photo
    were 56% black. ImageMagick 6.9.11 reads signed 32-bit (and 8-bit) samples' bits as unsigned
    (-1 its brightest, 0 black: not monotone), which is not followed here. (A signed 8-bit TIFF
    is Pillow's mode "L", its bits as unsigned, as ImageMagick shows it.)"""
    if bits == 32:
        unsigned = np.ascontiguousarray(values, np.int32).view(np.uint32)
        return ((unsigned ^ np.uint32(1 << 31) if signed else unsigned) >> 24).astype(np.uint8)
    if signed:  # clipped to the declared range first, so the offset stays within int32
        half = 1 << (bits - 1)
        values = values.clip(-half, half - 1) + half
    return (values.clip(0, (1 << bits) - 1) >> (bits - 8)).astype(np.uint8)


def _strip_to_rgb(strip: Image.Image, mode: str, has_alpha: bool, depth: tuple[int, bool], top: float,
                  curve: Curve | None = None) -> np.ndarray:
    """One strip of rows as (h, W, 3) uint8: the per-pixel part of `to_rgb_array`; `depth`: the
    (bits, signed) of a mode "I" image's samples; `curve`: see `to_rgb_array`."""
    table = curve(8) if curve else None
    if mode in _WIDE_GREY:
        values = np.asarray(strip)
        wide = table is not None and (mode != "I" or depth == (16, False))
        if wide:  # the curve at the samples' 16 bits: cut to 8 first, a linear file's shadows were lost
            rgb = _grey_to_rgb(values if mode != "I" else values.clip(0, 0xFFFF), curve(16))  # type: ignore[misc]
        else:
            rgb = _grey_to_rgb(_top_8_bits(values, *depth) if mode == "I"
                               else (values.astype(np.uint16) >> 8).astype(np.uint8), table)
        if has_alpha:  # a tRNS key (16-bit grey PNG): its pixels are the background, white
            rgb[values == strip.info["transparency"]] = WHITE
        return rgb
    if mode == "F":
        values = np.asarray(strip, dtype=np.float64)
        return _grey_to_rgb(np.round(np.nan_to_num(values / top).clip(0, 1) * 255).astype(np.uint8), table)
    if mode == "L" and not has_alpha:
        return _grey_to_rgb(pixels(strip), table)
    if has_alpha:
        rgba = pixels(strip.convert("RGBA"))
        return _composite_on_white(rgba, table)
    rgb = pixels(strip if mode == "RGB" else strip.convert("RGB"))
    return rgb if table is None else table[rgb]


def to_rgb_array(image: Image.Image, curve: Curve | None = None) -> np.ndarray:
    """A loaded Pillow image of any mode as an (H, W, 3) uint8 array.

    `curve`: the samples taken to sRGB by a table (`Curve`): a PNG's gAMA by the PNG
    specification's decoding (`colour_profile.gamma_table`), grey samples by their grey ICC
    profile (`colour_profile.grey_table`). Applied before alpha is composited on white, so a
    half-transparent pixel mixes its corrected colour with white, not the table bending the mix;
    16-bit grey samples (modes "I;16*" and "I") are mapped from their 16 bits, not cut to 8
    first. Pillow cuts 16-bit RGB, RGBA and grey+alpha PNGs to 8 bits on load: those are mapped
    from 8 bits here (a gAMA, cHRM or grey-profiled PNG's are mapped from the file's 16 bits instead: `_wide`).

    Converted strip by strip into one output array: only the RGB result and one strip's
    temporaries exist besides Pillow's own buffer (even for RGB: `np.asarray` of a whole image
    goes through `tobytes`, which holds two full copies at once).
    """
    mode = image.mode
    has_alpha = _has_alpha(image)
    w, h = image.size
    rows = max(1, STRIP_PIXELS // max(1, w))
    declared = _integer_depth(image) if mode == "I" else (16, False)
    depth, top = declared or (16, False), 255.0
    if mode == "F" or declared is None:  # a whole-image decision first, so that every strip agrees
        high = np.max([np.asarray(image.crop((0, y, w, min(h, y + rows)))).max(initial=0)
                       for y in range(0, h, rows)] or [0])
        depth = (8, False) if mode == "I" and high <= 255 else depth
        top = 1.0 if mode == "F" and high <= 1.0 else 255.0
    if h <= rows:  # one strip: the common case of web-sized images, no copies to stitch
        return _strip_to_rgb(image, mode, has_alpha, depth, top, curve)
    out = np.empty((h, w, 3), np.uint8)
    for y in range(0, h, rows):
        strip = image.crop((0, y, w, min(h, y + rows)))
        if has_alpha and "transparency" in image.info:
            strip.info["transparency"] = image.info["transparency"]
        out[y : y + strip.height] = _strip_to_rgb(strip, mode, has_alpha, depth, top, curve)
    return out
