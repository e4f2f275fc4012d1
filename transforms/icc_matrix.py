"""An RGB matrix/TRC ICC profile (rXYZ, gXYZ, bXYZ colorants and rTRC, gTRC, bTRC curves: the
profiles of cameras, phones, raw converters, ghostscript's linear scRGB) read in pure Python, so
that 16-bit samples go to sRGB from their 16 bits (`matrix_conversion`).

LittleCMS through Pillow transforms 8-bit samples only: a 16-bit PNG's or TIFF's samples were cut
to 8 bits first, and a linear-light profile's shadows were crushed (a linear P3 ramp came out
(0, 0, 0) where ImageMagick's 16-bit conversion gives (13, 10, 5): 3.3 levels on average, 13 at
most; a 16-bit ProPhoto TIFF 14 levels on 0.65% of its pixels). Here each channel's curve is
evaluated at every 16-bit level, the colorants (already relative to the PCS's D50, as LittleCMS
reads them for every intent of a matrix profile) take the light to XYZ, and sRGB's own D50 matrix
(`colour_profile._SRGB_TO_D50`, as LittleCMS builds its sRGB) back to linear sRGB: the arithmetic
of `colour_profile.PrimariesConversion`. A profile with an A2B0 or D2B0 table (LittleCMS reads the
table first for the perceptual intent), one whose tags `icc_tables.table_problem` refuses, or one
whose curves are of another type is not read here: its samples keep LittleCMS's 8-bit transform.

LittleCMS's perceptual transform to its (v4) sRGB compensates the profile's black point, as its
8-bit path here does: the colour of RGB 0 made neutral, its L* clipped to 50, is taken to sRGB's
black and D50 kept (`_black_compensation`, cmscnvrt.c's ComputeBlackPointCompensation). Without
it, a matrix profile whose curves start at 3% light showed black as 48 at 16 bits and 0 at 8.
"""

from __future__ import annotations


import numpy as np

from transforms.colour_profile import _D50, _SRGB_TO_D50, PrimariesConversion, by_digest, srgb_conversion
from transforms.icc_tables import tag_positions

_COLORANTS = (b"rXYZ", b"gXYZ", b"bXYZ")
_CURVES = (b"rTRC", b"gTRC", b"bTRC")
# tags LittleCMS reads before the colorants and curves for some intent: such a profile is a table's
_TABLES = (b"A2B0", b"A2B1", b"A2B2", b"D2B0", b"D2B1", b"D2B2")
_PARAMETERS = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}  # a `para` curve's parameters by its function type
# conversions are kept by the sha256 of their profile (`colour_profile.by_digest`): each holds its
# 16-bit curve tables (768 KiB), never the profile (up to 16 MiB: ten 16-bit PNGs of distinct
# profiles kept 187 MiB when the cache was keyed on, and held, the profile's bytes)
_BITS = 16


def _s15(icc: bytes, at: int) -> float:
    return int.from_bytes(icc[at : at + 4], "big", signed=True) / 65536


def _colorant(icc: bytes, start: int, end: int) -> np.ndarray | None:
    """An `XYZ ` tag's first XYZ number."""
    if icc[start : start + 4] != b"XYZ " or end - start < 20:
        return None
    return np.array([_s15(icc, start + 8 + 4 * i) for i in range(3)])


def _curve(icc: bytes, start: int, end: int, level: np.ndarray) -> np.ndarray | None:
    """A `curv` or `para` curve (ICC.1:2010 10.6, 10.18) at `level` (0..1), clipped to 0..1 as
    LittleCMS clips it; None for another type or one that does not fit its tag."""
    with np.errstate(all="ignore"):  # a hostile profile's parameters overflow: clipped below
        return _evaluated(icc, start, end, level)


def _evaluated(icc: bytes, start: int, end: int, level: np.ndarray) -> np.ndarray | None:
    kind = icc[start : start + 4]
    if kind == b"curv" and end - start >= 12:
        count = int.from_bytes(icc[start + 8 : start + 12], "big")
        if end - start < 12 + 2 * count:
            return None
        if count == 0:
            return level.copy()
        if count == 1:
            return np.power(level, int.from_bytes(icc[start + 12 : start + 14], "big") / 256)
        table = np.frombuffer(icc, ">u2", count, start + 12).astype(np.float64) / 0xFFFF
        return np.interp(level * (count - 1), np.arange(count), table)
    if kind != b"para" or end - start < 12:
        return None
    function = int.from_bytes(icc[start + 8 : start + 10], "big")
    if function not in _PARAMETERS or end - start < 12 + 4 * _PARAMETERS[function]:
        return None
    g, a, b, c, d, e, f = ([_s15(icc, start + 12 + 4 * i) for i in range(_PARAMETERS[function])] + [0.0] * 7)[:7]
    if function == 0:
        light = np.power(level, g)
    elif function in (1, 2):  # (aX + b) ** g (+ c) above -b / a, 0 (c) below
        light = np.power(np.maximum(a * level + b, 0), g) + (c if function == 2 else 0)
    else:  # (aX + b) ** g (+ e) from d, cX (+ f) below
        above = np.power(np.maximum(a * level + b, 0), g) + (e if function == 4 else 0)
        light = np.where(level >= d, above, c * level + (f if function == 4 else 0))
    return np.clip(np.nan_to_num(light, nan=0.0), 0, 1)


def _curve_tables(icc: bytes, positions: tuple[tuple[int, int], ...]) -> np.ndarray:
    """The three curves' light at every 16-bit level: float32 (3, 65536), read-only."""
    level = np.arange(1 << _BITS) / ((1 << _BITS) - 1)
    curves = [_curve(icc, start, end, level) for start, end in positions]
    table = np.ascontiguousarray(np.stack(curves).astype(np.float32))  # each checked by `_conversion`
    table.flags.writeable = False
    return table


def _at_depth(table: np.ndarray, bits: int) -> np.ndarray:
    """The 16-bit curve tables at `bits` bits (8: every 257th level, exactly the same light)."""
    step, rest = divmod((1 << _BITS) - 1, (1 << bits) - 1)
    if rest:
        raise ValueError(f"no {bits}-bit levels among the 16-bit ones")
    return table[:, ::step]


def matrix_conversion(icc: bytes | None) -> PrimariesConversion | None:
    """The float conversion to sRGB of samples an RGB matrix/TRC profile describes (8 or 16 bits;
    the 16-bit paths use it), None for a profile not of that kind (see above) or one that
    `srgb_conversion` finds sRGB in all but name (such images keep their samples). Cached by the
    profile's sha256, as `srgb_conversion` is."""
    if not icc:
        return None
    return by_digest(icc, "matrix", lambda: _conversion(icc))


def _conversion(icc: bytes) -> PrimariesConversion | None:
    if len(icc) < 128 or icc[16:20] != b"RGB " or icc[20:24] != b"XYZ ":
        return None
    tags = tag_positions(icc)
    if tags is None or any(tag in tags for tag in _TABLES) or not all(t in tags for t in _COLORANTS + _CURVES):
        return None
    colorants = [_colorant(icc, *tags[tag]) for tag in _COLORANTS]
    probe = np.array([0.0, 1.0])
    if any(c is None for c in colorants) or any(_curve(icc, *tags[tag], probe) is None for tag in _CURVES):
        return None
    to_d50 = np.stack(colorants, axis=1)  # type: ignore[arg-type]
    conversion = srgb_conversion(icc)
    if conversion.transform is None or _SRGB_TO_D50 is None or not np.all(np.isfinite(to_d50)):
        return None
    table = _curve_tables(icc, tuple(tags[tag] for tag in _CURVES))
    scale, shift = _black_compensation(float(to_d50[1] @ table[:, 0]))
    from_d50 = np.linalg.inv(_SRGB_TO_D50)
    return PrimariesConversion(from_d50 @ to_d50 * scale, None, conversion.description,
                               lambda bits: _at_depth(table, bits), from_d50 @ (_D50 * shift) if shift else None)


# the most L* LittleCMS takes a source black point to have (cmssamp.c, BlackPointAsDarkerColorant)
_BLACK_L_MAX = 50


def _black_compensation(black_y: float) -> tuple[float, float]:
    """LittleCMS's black-point compensation to sRGB's black (0) of a profile whose RGB 0 has
    luminance `black_y` (D50 white 1), as XYZ' = scale * XYZ + shift * D50: the black point is
    that colour made neutral, its L* at most 50, so the neutral of its Y clipped to L* 50's."""
    y = min(black_y, ((_BLACK_L_MAX + 16) / 116) ** 3)
    if y == 0 or not np.isfinite(y):
        return 1.0, 0.0
    return 1 / (1 - y), -y / (1 - y)
