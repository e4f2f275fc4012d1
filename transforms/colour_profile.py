"""Embedded ICC colour profiles: pixels of an RGB image tagged with another colour space (Display
P3 from phones, Adobe RGB from cameras, ProPhoto from raw converters) converted to sRGB.

Without it such a photo is read as if it were sRGB: its colours come out dull (Adobe RGB, P3) or
badly shifted (ProPhoto), where every browser shows them right. A profile that is sRGB in all but
name (the many sRGB variants, Facebook's compact `c2`) is recognised by what it does, not by its
name: its transform moves no colour of a 17^3 grid by more than one level, and such images keep
their bytes. A profile that cannot be parsed is ignored, as browsers ignore it; so is one whose
tags declare more table than they hold, or a table over 4 Mi entries (`icc_tables.table_problem`, judged
before LittleCMS sees it: it allocated a 400-byte profile's declared 475 MB CLUT, then refused it). Transforms are
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

A grey image (a scanner's, a microscope's, a photo editor's black and white) may carry a grey
(GRAY) profile: a linear grey was shown as stored, up to 73 levels too dark (ghostscript's
`ps_gray.icc`, assigned by ImageMagick). Its samples go through a table of the sRGB colour of
each level (`grey_table`, 256 or 65,536 entries, built once per profile by LittleCMS unoptimised),
before alpha is composited, 16-bit ones from their 16 bits: within a level of ImageMagick's
`-profile srgb.icc` (its Q16 rounding) on ImageMagick's grey PNG, JPEG, TIFF, 16-bit and
grey+alpha PNGs. An sGray-like profile (every level within one of identity) keeps the samples.

A PNG without an ICC profile or an sRGB chunk may declare its samples' gamma by a gAMA chunk
(sample = light ** gamma): one of 1.0 (linear light, from scientific and rendering tools) or 0.8
was read as sRGB, up to 73 levels darker than browsers show it. Its samples go to light and back
to sRGB's encoding (`gamma_table`, the PNG specification's decoding); a gAMA within libpng's 5%
threshold of the 1/2.2 that writers declare for sRGB keeps its samples. A cHRM declaring other
primaries than sRGB's (Adobe RGB's, ProPhoto's) is converted as Chromium converts it (Skia's PNG
decoder: a matrix profile of those primaries, the gAMA's power its curve whatever the gAMA (no 5%
rule there), sRGB's without one; `chromaticity_conversion`, computed here in floating point from 8
or 16-bit samples), where ImageMagick 6.9.11 and libpng apply none: an Adobe RGB cHRM was read as
sRGB, up to 31 levels from colorimetry's conversion, now within 1.
The colour is decoded before its alpha is composited on white (`transforms.rgb_array.to_rgb_array`,
`_converted_on_white`; an RGB ICC profile's too, as ImageMagick's `-profile` then `-alpha remove`),
and 16-bit samples from their 16 bits: grey ones as Pillow holds them, colour and grey+alpha ones,
which Pillow cuts to 8 bits on load, from OpenCV's decode (`transforms.image_colour._wide`); a
16-bit RGB PNG's or TIFF's RGB profile there by its matrix and curves (`transforms.icc_matrix`),
a profile of tables (A2B0) still by LittleCMS's 8-bit transform.
"""

from __future__ import annotations

import functools
import hashlib
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageCms

from transforms.icc_tables import table_problem

# rows converted at a time: a strip's temporaries, never a second full-size image
STRIP_PIXELS = 1 << 20
_CACHE_SIZE = 32
_IDENTITY_TOLERANCE = 1  # levels; an sRGB profile's transform is within rounding of identity


@dataclass(frozen=True)
class SrgbConversion:
    """How to bring one profile's pixels to sRGB: `transform` is None when nothing needs doing."""

    transform: ImageCms.ImageCmsTransform | None
    description: str  # the profile's own description, for the record of what was converted


_NOTHING = SrgbConversion(None, "")
# what is built from a profile, by its sha256 and what was built (never by the profile's bytes: a
# cache keyed by them kept up to `_CACHE_SIZE` whole profiles, each up to the file's size, for good)
_built: OrderedDict[str, Any] = OrderedDict()
_built_lock = threading.Lock()  # a build's worker threads decode side by side


def by_digest(icc: bytes, what: str, build: Callable[[], Any]) -> Any:
    """`build()`'s result for the profile `icc`, kept for the last `_CACHE_SIZE` (profile, what).
    Built outside the lock (two threads may build one twice, alike); the cache changes under it:
    another thread's eviction between a lookup and its use raised KeyError."""
    key = f"{what}:{hashlib.sha256(icc).hexdigest()}"
    with _built_lock:
        if key in _built:
            _built.move_to_end(key)
            return _built[key]
    found = build()
    with _built_lock:
        _built[key] = found
        _built.move_to_end(key)
        while len(_built) > _CACHE_SIZE:
            _built.popitem(last=False)
    return found


def _grid() -> Image.Image:
    levels = np.linspace(0, 255, 17).round().astype(np.uint8)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(1, -1, 3)
    return Image.fromarray(np.ascontiguousarray(cube), "RGB")


# the rendering intent by the pixels' colour space (RGB: for the matrix profiles of cameras and
# phones every intent is the same transform)
_INTENT = {"RGB": ImageCms.Intent.PERCEPTUAL, "CMYK": ImageCms.Intent.RELATIVE_COLORIMETRIC}


def _conversion(icc: bytes, space: str) -> SrgbConversion:
    if table_problem(icc):
        return _NOTHING  # LittleCMS would allocate what its tables declare before refusing it
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
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return _NOTHING  # unreadable: read the pixels as sRGB (or CMYK as Pillow converts it), as a browser does
    return _NOTHING if moved <= _IDENTITY_TOLERANCE else SrgbConversion(transform, profile_name(profile))


def profile_name(profile: ImageCms.ImageCmsProfile) -> str:
    """A profile's description, "unnamed" for none or one Pillow cannot decode: a v2 `desc` name
    with a byte over 127 (a localised 'Écran') raises ValueError, and read inside the conversion's
    `try` it dropped the whole conversion (an Adobe RGB photo shown 130+ levels off its colours)."""
    try:
        return (profile.profile.profile_description or "").strip() or "unnamed"
    except (ImageCms.PyCMSError, ValueError, TypeError):
        return "unnamed"


def srgb_conversion(icc: bytes | None, space: str = "RGB") -> SrgbConversion:
    """The conversion for an embedded profile of pixels in `space` ("RGB" or "CMYK") to sRGB
    (cached by the profile's bytes); nothing to do when the profile is of another space."""
    if not icc:
        return _NOTHING
    return by_digest(icc, space, lambda: _conversion(icc, space))


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


def _grey_description(icc: bytes) -> str | None:
    """The description of an embedded profile of grey samples (colour space GRAY), "unnamed" for
    none; None when the profile is of another space or cannot be read (`table_problem` too)."""
    if table_problem(icc):
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if profile.profile.xcolor_space.strip() != "GRAY":
            return None
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None
    return profile_name(profile)


# A table is built once per profile: LittleCMS's unoptimised transform costs nothing there, where its
# optimised 8-bit one interpolates a linear grey's steep shadows between coarse nodes (level 1 came
# out 6, not 13: 9 levels from ImageMagick's Q16 conversion, which is within 1 of the exact curve)
_TABLE_FLAGS = ImageCms.Flags.NOCACHE | ImageCms.Flags.NOOPTIMIZE


def _grey_levels(icc: bytes, bits: int) -> np.ndarray | None:
    """LittleCMS's sRGB colour of every `bits`-bit level (8: an "L" ramp, 16: an "I;16" one) of
    grey samples in the profile `icc`: uint8 (2 ** bits, 3). None for a profile not grey or not
    readable."""
    return by_digest(icc, f"grey{bits}", lambda: _build_grey_levels(icc, bits))


def _build_grey_levels(icc: bytes, bits: int) -> np.ndarray | None:
    if _grey_description(icc) is None:
        return None
    ramp = np.arange(1 << bits, dtype=np.uint8 if bits == 8 else np.uint16).reshape(1, -1)
    try:
        transform = ImageCms.buildTransform(ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"),
                                            "L" if bits == 8 else "I;16", "RGB",
                                            renderingIntent=_INTENT["RGB"], flags=_TABLE_FLAGS)
        table = np.ascontiguousarray(np.asarray(transform.apply(Image.fromarray(ramp)))[0])
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None
    table.flags.writeable = False  # shared by the cache
    return table


def grey_profile(icc: bytes | None) -> str:
    """The description of an embedded grey profile that moves some grey level by more than
    `_IDENTITY_TOLERANCE` on its way to sRGB (a linear or gamma 1.8 grey), "" for none (no
    profile, not grey, unreadable, or an sGray one: such images keep their samples)."""
    if not icc:
        return ""
    return by_digest(icc, "grey", lambda: _grey_profile(icc))


def _grey_profile(icc: bytes) -> str:
    table = _grey_levels(icc, 8)
    if table is None:
        return ""
    moved = np.abs(table.astype(np.int16) - np.arange(256, dtype=np.int16)[:, None]).max()
    return (_grey_description(icc) or "") if moved > _IDENTITY_TOLERANCE else ""


def grey_table(icc: bytes, bits: int = 8) -> np.ndarray | None:
    """The sRGB colour, uint8 (2 ** bits, 3), of each level of grey samples of `bits` bits (8 or
    16) that the grey profile `icc` describes, by LittleCMS (perceptual, as for RGB profiles),
    built once per profile and depth; None when `grey_profile` finds nothing to convert. The
    16-bit table maps 16-bit samples before they are cut to 8, as a PNG's gAMA is applied."""
    return _grey_levels(icc, bits) if grey_profile(icc) else None


# A PNG's cHRM (the chromaticities of its white and primaries) with no iCCP or sRGB chunk, read
# as Chromium does (Skia's SkPngCodec `read_color_profile`): an RGB matrix profile of those
# primaries, adapted to the ICC's D50 by Bradford (`skcms_PrimariesToXYZD50`), whose curve is the
# gAMA's power (whatever its value: Skia has no threshold), sRGB's when there is no gAMA.
# ImageMagick 6.9.11 and libpng apply no cHRM.
SRGB_CHROMATICITIES = (0.3127, 0.3290, 0.64, 0.33, 0.30, 0.60, 0.15, 0.06)
CHROMATICITY_TOLERANCE = 0.0015  # a writer's rounding of sRGB's values (libpng's own are to 1e-5)
_D50 = np.array([0.9642, 1.0, 0.8249])
_BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])


def _xyz(x: float, y: float) -> np.ndarray:
    return np.array([x / y, 1.0, (1 - x - y) / y])


def primaries_to_xyz_d50(chromaticities: tuple[float, ...]) -> np.ndarray | None:
    """The 3 x 3 matrix from linear RGB of these primaries (white x, y, red, green, blue x, y) to
    XYZ under D50: each primary scaled so that RGB 1, 1, 1 is the white, then the white adapted
    to D50 by Bradford. None for chromaticities that make no such matrix (a y of 0, collinear
    primaries)."""
    wx, wy, rx, ry, gx, gy, bx, by = chromaticities
    if min(wy, ry, gy, by) <= 0:
        return None
    primaries = np.stack([_xyz(rx, ry), _xyz(gx, gy), _xyz(bx, by)], axis=1)
    if abs(np.linalg.det(primaries)) < 1e-9:
        return None
    white = _xyz(wx, wy)
    matrix = primaries * np.linalg.solve(primaries, white)
    cone_white, cone_d50 = _BRADFORD @ white, _BRADFORD @ _D50
    if np.any(np.abs(cone_white) < 1e-9):
        return None
    adapt = np.linalg.inv(_BRADFORD) @ np.diag(cone_d50 / cone_white) @ _BRADFORD
    return adapt @ matrix


# sRGB's own matrix to XYZ under D50, as `primaries_to_xyz_d50` makes it (skcms's sRGB profile)
_SRGB_TO_D50 = primaries_to_xyz_d50(SRGB_CHROMATICITIES)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _light(gamma: float | None, bits: int) -> np.ndarray:
    """The linear light (float32, 2 ** bits entries) of each `bits`-bit sample: the power
    light = sample ** (1 / gamma), sRGB's curve for None."""
    level = np.arange(1 << bits) / ((1 << bits) - 1)
    srgb = np.where(level <= 0.04045, level / 12.92, ((level + 0.055) / 1.055) ** 2.4)
    table = (level ** (1 / gamma) if gamma else srgb).astype(np.float32)
    table.flags.writeable = False  # shared by the cache
    return table


@dataclass(frozen=True, eq=False)
class PrimariesConversion:
    """A PNG's cHRM (and gAMA) as Skia converts it: its samples to light by the curve, to linear
    sRGB by `matrix` (the primaries' to D50, then sRGB's from it), clipped, sRGB-encoded. Exact
    arithmetic on 8-bit or 16-bit samples alike (a LittleCMS transform takes 8 bits here)."""

    matrix: np.ndarray  # 3 x 3, linear RGB of the primaries -> linear sRGB
    gamma: float | None  # the power of the curve; None: sRGB's
    description: str
    # each channel's own curve (an ICC profile's TRCs): `bits` -> float32 (3, 2 ** bits) light; None: `gamma`'s
    curves: Callable[[int], np.ndarray] | None = None
    offset: np.ndarray | None = None  # linear sRGB added after `matrix` (LittleCMS's black-point compensation)

    def apply(self, samples: np.ndarray, bits: int) -> np.ndarray:
        """(H, W, 3) samples of `bits` bits (uint8 or uint16) -> uint8 sRGB, a quarter strip of
        float32 rows at a time (their temporaries stay within a strip's budget)."""
        light = _light(self.gamma, bits) if self.curves is None else self.curves(bits)
        matrix, encoded = self.matrix.T.astype(np.float32), _encoding()
        offset = None if self.offset is None else self.offset.astype(np.float32)
        out = np.empty(samples.shape, np.uint8)
        rows = max(1, (STRIP_PIXELS >> 2) // max(1, samples.shape[1]))
        for y in range(0, samples.shape[0], rows):
            strip = samples[y : y + rows]
            if light.ndim == 1:
                linear = light[strip] @ matrix
            else:
                linear = np.stack([light[c][strip[..., c]] for c in range(3)], axis=-1) @ matrix
            if offset is not None:
                linear += offset
            np.clip(linear, 0, 1, out=linear)
            linear *= len(encoded) - 1
            linear += 0.5
            out[y : y + rows] = encoded[linear.astype(np.uint16)]
        return out


@functools.cache
def _encoding() -> np.ndarray:
    """sRGB's 8-bit level of linear light at 65,536 steps (a table: 70 ns a pixel for the whole
    conversion, against 180 computing the power; a level at most from the exact encoding)."""
    table = np.round(srgb_encode(np.arange(1 << 16) / 0xFFFF) * 255).astype(np.uint8)
    table.flags.writeable = False
    return table


def chromaticity_conversion(chromaticities: tuple[float, ...] | None,
                            gamma: float | None) -> PrimariesConversion | None:
    """The conversion to sRGB of a PNG's samples that its cHRM (and gAMA) describe, as Chromium
    shows them (see above); None for sRGB's chromaticities (what ImageMagick writes by default) or
    ones that make no matrix (the gAMA alone then applies: `gamma_table`). Any usable gAMA is the
    power curve, 1/2.2 too: Skia's `read_color_profile` has no threshold (a libpng Adobe RGB
    writer's gAMA 45455 read as sRGB's curve was 11 levels off in the shadows)."""
    if chromaticities is None or all(abs(a - b) <= CHROMATICITY_TOLERANCE
                                     for a, b in zip(chromaticities, SRGB_CHROMATICITIES)):
        return None
    to_d50 = primaries_to_xyz_d50(chromaticities)
    if to_d50 is None or not np.all(np.isfinite(to_d50)) or _SRGB_TO_D50 is None:
        return None
    if gamma is not None and not 0.01 <= gamma <= 100:
        gamma = None  # no power a file means: sRGB's curve, as without a gAMA
    wx, wy, rx, ry, gx, gy, bx, by = chromaticities
    name = f"PNG cHRM red {rx:g},{ry:g} green {gx:g},{gy:g} blue {bx:g},{by:g} white {wx:g},{wy:g}"
    return PrimariesConversion(np.linalg.inv(_SRGB_TO_D50) @ to_d50, gamma,
                               name + (f" gAMA {gamma:g}" if gamma else ""))
