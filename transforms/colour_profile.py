"""Embedded ICC colour profiles: pixels of an RGB image tagged with another colour space (Display
P3 from phones, Adobe RGB from cameras, ProPhoto from raw converters) converted to sRGB.

Without it such a photo is read as if it were sRGB: its colours come out dull (Adobe RGB, P3) or
badly shifted (ProPhoto), where every browser shows them right. A profile that is sRGB in all but
name (the many sRGB variants, Facebook's compact `c2`) is recognised by what it does, not by its
name: its transform moves no colour of a 17^3 grid by more than one level, and such images keep
their bytes. A profile that cannot be parsed is ignored, as browsers ignore it. Transforms are
built once per distinct profile (a few milliseconds each) and kept in a small cache.

A CMYK image (a print-workflow JPEG or TIFF) with its CMYK profile is converted by that profile
(`srgb_conversion(icc, "CMYK")`), relative colorimetric, the intent ImageMagick's `-profile` and
Photoshop's defaults use: Pillow's own CMYK -> RGB ignores the profile (R = 255 - C - K, as it
were ink on a perfect press), 48 levels from ImageMagick's conversion on average and up to 89, for a CMYK
JPEG ImageMagick made through ghostscript's `ps_cmyk.icc`. LittleCMS's 8-bit transform, which
precalculates a 17-point device link, is still 4.4 levels from ImageMagick's unoptimised 16-bit
one on that file on average, up to 20 at saturated inks (unoptimised it is within 1, but takes 860
ns a pixel against 160: more than the decode time judged from a JPEG's header allows).
A CMYK image without a profile keeps Pillow's conversion, as browsers show it.

A PNG without an ICC profile or an sRGB chunk may declare its samples' gamma by a gAMA chunk
(sample = light ** gamma): one of 1.0 (linear light, from scientific and rendering tools) or 0.8
was read as sRGB, up to 73 levels darker than browsers show it. Its samples go to light and back
to sRGB's encoding (`gamma_table`, the PNG specification's decoding); a gAMA within libpng's 5%
threshold of the 1/2.2 that writers declare for sRGB keeps its samples. Its cHRM is not applied.
The colour is decoded before its alpha is composited on white (`transforms.decode.to_rgb_array`),
and a 16-bit grey PNG's samples from their 16 bits (Pillow cuts 16-bit colour PNGs to 8 on load).
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageCms

# rows converted at a time: a strip's temporaries, never a second full-size image
STRIP_PIXELS = 1 << 20
_CACHE_SIZE = 32
_IDENTITY_TOLERANCE = 1  # levels; an sRGB profile's transform is within rounding of identity


@dataclass(frozen=True)
class SrgbConversion:
    """How to bring one profile's pixels to sRGB: `transform` is None when nothing needs doing."""

    transform: ImageCms.ImageCmsTransform | None
    description: str  # the profile's own description, for the record of what was converted


_conversions: OrderedDict[str, SrgbConversion] = OrderedDict()
_NOTHING = SrgbConversion(None, "")


def _grid() -> Image.Image:
    levels = np.linspace(0, 255, 17).round().astype(np.uint8)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(1, -1, 3)
    return Image.fromarray(np.ascontiguousarray(cube), "RGB")


# the rendering intent by the pixels' colour space (RGB: for the matrix profiles of cameras and
# phones every intent is the same transform)
_INTENT = {"RGB": ImageCms.Intent.PERCEPTUAL, "CMYK": ImageCms.Intent.RELATIVE_COLORIMETRIC}


def _conversion(icc: bytes, space: str) -> SrgbConversion:
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if profile.profile.xcolor_space.strip() != space:
            return _NOTHING  # e.g. a grey profile: not what the pixels we hold are in
        transform = ImageCms.buildTransform(profile, ImageCms.createProfile("sRGB"), space, "RGB",
                                            renderingIntent=_INTENT[space],
                                            flags=ImageCms.Flags.NOCACHE)  # lcms's one-pixel cache is shared state: threads
        moved = _IDENTITY_TOLERANCE + 1
        if space == "RGB":
            grid = _grid()
            moved = np.abs(np.asarray(transform.apply(grid), np.int16) - np.asarray(grid, np.int16)).max()
        description = (profile.profile.profile_description or "").strip()
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return _NOTHING  # unreadable: read the pixels as sRGB (or CMYK as Pillow converts it), as a browser does
    return _NOTHING if moved <= _IDENTITY_TOLERANCE else SrgbConversion(transform, description or "unnamed")


def srgb_conversion(icc: bytes | None, space: str = "RGB") -> SrgbConversion:
    """The conversion for an embedded profile of pixels in `space` ("RGB" or "CMYK") to sRGB
    (cached by the profile's bytes); nothing to do when the profile is of another space."""
    if not icc:
        return _NOTHING
    key = f"{space}:{hashlib.sha256(icc).hexdigest()}"
    found = _conversions.get(key)
    if found is None:
        found = _conversions[key] = _conversion(icc, space)
        if len(_conversions) > _CACHE_SIZE:
            _conversions.popitem(last=False)
    else:
        _conversions.move_to_end(key)
    return found


SRGB_DECLARED_GAMMA = 1 / 2.2  # the gAMA PNG writers give sRGB images (45455)
GAMMA_THRESHOLD = 0.05  # libpng's PNG_GAMMA_THRESHOLD: no correction within 5% of none


def srgb_encode(light: np.ndarray) -> np.ndarray:
    """Linear light 0..1 -> sRGB's non-linear 0..1 (IEC 61966-2-1)."""
    return np.where(light <= 0.0031308, 12.92 * light, 1.055 * np.power(light, 1 / 2.4) - 0.055)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def gamma_table(gamma: float, bits: int = 8) -> np.ndarray | None:
    """The sRGB levels (uint8) of the `bits`-bit samples (8 or 16: a 65,536-entry table) of a PNG
    whose gAMA is `gamma` (light = sample ** (1 / gamma)); None when it is within
    `GAMMA_THRESHOLD` of sRGB's declared gamma, or no gamma."""
    if not 0.01 <= gamma <= 100 or abs(gamma / SRGB_DECLARED_GAMMA - 1) <= GAMMA_THRESHOLD:
        return None
    top = (1 << bits) - 1
    light = np.power(np.arange(top + 1) / top, 1 / gamma)
    table = np.round(srgb_encode(light) * 255).astype(np.uint8)
    table.flags.writeable = False  # shared by the cache
    return table


def _by_strips(transform: ImageCms.ImageCmsTransform, out: np.ndarray,
               strip: Callable[[int, int], Image.Image]) -> np.ndarray:
    """`out` (H, W, 3) filled with `transform` applied to `strip(top, bottom)`, the image's rows
    top..bottom, a strip of `STRIP_PIXELS` at a time: the temporaries are a strip's."""
    h, w = out.shape[:2]
    rows = max(1, STRIP_PIXELS // max(1, w))
    for y in range(0, h, rows):
        out[y : y + rows] = np.asarray(transform.apply(strip(y, min(h, y + rows))))
    return out


def convert_to_srgb(pixels: np.ndarray, conversion: SrgbConversion) -> np.ndarray:
    """(H, W, 3) uint8 pixels in the profile's space -> sRGB, strip by strip (in place when the
    array is writable; one that views Pillow's buffer is not)."""
    if conversion.transform is None:
        return pixels
    out = pixels if pixels.flags.writeable else np.empty_like(pixels)
    return _by_strips(conversion.transform, out,
                      lambda top, bottom: Image.fromarray(np.ascontiguousarray(pixels[top:bottom]), "RGB"))


def cmyk_to_srgb(image: Image.Image, conversion: SrgbConversion) -> np.ndarray:
    """A loaded CMYK Pillow image -> (H, W, 3) uint8 sRGB through its profile's `conversion`,
    strip by strip into one output array (the temporaries are a strip's)."""
    w, h = image.size
    return _by_strips(conversion.transform, np.empty((h, w, 3), np.uint8),
                      lambda top, bottom: image.crop((0, top, w, bottom)))
