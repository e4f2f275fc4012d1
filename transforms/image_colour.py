"""A loaded image's colour taken to sRGB (`_srgb_array`): its ICC profile, a PNG's gAMA and cHRM
(from its 16-bit samples where Pillow cuts them to 8: `_wide`, a PNG's or TIFF's RGB matrix/TRC
profile too: `icc_matrix`), a CIELab TIFF's white (`lab_white`), the primaries and transfer an
AVIF/HEIF's nclx box or a PNG's cICP chunk declares (`declared_colour`: an HDR one tone-mapped),
before its alpha is composited on white. Part of `transforms.decode`."""

from __future__ import annotations

import functools
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from transforms import hdr
from transforms.coded_colour import CodedColour, coded_colour
from transforms.colour_profile import (
    PrimariesConversion,
    chromaticity_conversion,
    cmyk_to_srgb,
    convert_to_srgb,
    gamma_table,
    grey_profile,
    grey_table,
    srgb_conversion,
)
from transforms.headers import nclx_colour, png_header
from transforms.icc_matrix import matrix_conversion
from transforms.lab_white import lab_to_srgb, lab_white
from transforms.image_orientation import _TURNS
from transforms.png_chunks import png_cicp
from transforms.rgb_array import STRIP_PIXELS, WHITE, _GREY_PROFILED_MODES, _has_alpha, _on_white, pixels, to_rgb_array


# modes whose pixels an RGB ICC profile describes (CMYK ones: `_srgb_array`; grey ones: `_GREY_PROFILED_MODES`)
_RGB_PROFILED_MODES = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "P", "PA"})  # grey: `_GREY_PROFILED_MODES`


def hdr_colour(image: Image.Image, data: bytes) -> tuple[str, np.ndarray | None] | None:
    """("pq" or "hlg", its primaries' matrix to BT.709) for an AVIF, HEIF or PNG that declares an
    HDR transfer (`declared_colour`), else None."""
    colour = declared_colour(image, data)
    return (colour.hdr_transfer, colour.to_bt709) if colour is not None and colour.hdr_transfer else None


def declared_colour(image: Image.Image, data: bytes) -> CodedColour | None:
    """What code points declare of a colour image's samples (`coded_colour`): the nclx box of an
    AVIF or HEIF photo with no ICC profile (which would say how to show it instead), a PNG's cICP
    chunk (`png_cicp`), which the PNG specification and Chromium put before its iCCP, sRGB, cHRM
    and gAMA; None for none, or code points not understood (the file is read as before). Both were
    ignored (the nclx's primaries and transfer unless HDR): a Display P3 one was shown 10 levels
    dull on average, a linear one 37 levels dark, a PQ PNG 46."""
    if image.mode not in _RGB_PROFILED_MODES:
        return None
    if image.format == "PNG":
        cicp = png_cicp(data)
        return coded_colour(*cicp, "cICP") if cicp is not None else None
    if image.format not in ("AVIF", "HEIF") or image.info.get("icc_profile"):
        return None
    nclx = nclx_colour(data)
    return coded_colour(nclx.primaries, nclx.transfer, "nclx") if nclx is not None else None


def _as_declared(image: Image.Image, colour: CodedColour) -> tuple[np.ndarray, str]:
    """The loaded image's pixels shown as `colour` declares: an SDR conversion strip by strip,
    before its alpha is composited (`_converted_on_white`: into the one array the budget counts;
    converting a whole RGB copy made a second, a 4000x3000 P3 PNG peaked 124 MiB judged 104), an
    HDR tone-mapping after it (as it always was; its output is counted by the budget)."""
    if colour.sdr is not None:
        return _converted_on_white(image, functools.partial(colour.apply, bits=8)), colour.description
    return colour.apply(to_rgb_array(image), 8), colour.description


def _png_gamma(image: Image.Image) -> float | None:
    """The gamma a PNG's gAMA declares, when no iCCP or sRGB chunk (which take precedence) does."""
    if image.format != "PNG" or image.info.get("icc_profile") or "srgb" in image.info:
        return None
    gamma = image.info.get("gamma")
    return float(gamma) if isinstance(gamma, (int, float)) else None


def _png_chromaticities(image: Image.Image) -> PrimariesConversion | None:
    """The conversion a colour PNG's cHRM (with its gAMA) asks for when no iCCP or sRGB chunk
    (which take precedence) is there (`colour_profile.chromaticity_conversion`): its primaries
    were read as sRGB's, an Adobe RGB cHRM's colours dull, where Chromium converts them."""
    if image.format != "PNG" or image.mode not in _RGB_PROFILED_MODES or image.info.get("icc_profile") \
            or "srgb" in image.info:
        return None
    chromaticities = image.info.get("chromaticity")  # Pillow's read of the cHRM chunk at open
    if not isinstance(chromaticities, tuple) or len(chromaticities) != 8:
        chromaticities = None  # none, or a chunk of another length
    return chromaticity_conversion(chromaticities, _png_gamma(image))


def _converted_on_white(image: Image.Image, convert: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """A loaded image's colour taken to sRGB by `convert` ((h, W, 3) uint8 -> uint8), then its
    alpha composited on white, strip by strip: as ImageMagick's `-profile` then `-alpha remove`
    and browsers show it. Composited first, the conversion bent the mix with white: a 50%-alpha
    Adobe RGB green came out 127 levels from ImageMagick's, a ProPhoto cHRM one 60."""
    w, h = image.size
    alpha = _has_alpha(image)
    rows = max(1, STRIP_PIXELS // max(1, w))
    out = np.empty((h, w, 3), np.uint8)
    for y in range(0, h, rows):
        strip = image.crop((0, y, w, min(h, y + rows)))
        if "transparency" in image.info:
            strip.info["transparency"] = image.info["transparency"]
        if alpha:
            rgba = pixels(strip.convert("RGBA"))
            out[y : y + strip.height] = _on_white(convert(np.ascontiguousarray(rgba[..., :3])), rgba[..., 3:4])
        else:
            out[y : y + strip.height] = convert(pixels(strip if strip.mode == "RGB" else strip.convert("RGB")))
    return out


def _in_srgb(image: Image.Image, data: bytes = b"") -> tuple[np.ndarray, str]:
    """The loaded image's pixels (`to_rgb_array`) converted from its embedded RGB profile to sRGB,
    the colour before its alpha is composited (`_converted_on_white`), and the profile's
    description ("" when there was nothing to convert). (A PNG's gAMA and cHRM, an AVIF/HEIF's
    nclx: `_srgb_array`.)"""
    if image.mode not in _RGB_PROFILED_MODES:
        return to_rgb_array(image), ""
    icc = image.info.get("icc_profile")
    matrix = matrix_conversion(icc) if isinstance(icc, bytes) else None
    if matrix is not None and matrix.offset is not None:  # a black point LittleCMS compensates
        # as the 16-bit path does: LittleCMS's 8-bit transform then resamples it into a CLUT, up to
        # 15 levels from its own unoptimised transform on saturated colours (this, within 1)
        return _converted_on_white(image, functools.partial(matrix.apply, bits=8)), matrix.description
    conversion = srgb_conversion(icc)
    if conversion.transform is not None and _has_alpha(image):
        return _converted_on_white(image, functools.partial(convert_to_srgb, conversion=conversion)), \
            conversion.description
    return convert_to_srgb(to_rgb_array(image), conversion), conversion.description


# PNG colour types whose 16-bit samples Pillow cuts to 8 bits as it loads them: RGB, grey+alpha, RGBA
_CUT_TO_8 = (2, 4, 6)
_GREY_ALPHA = 4  # the PNG colour type Pillow opens as "RGBA" at 16 bits (its grey profile: `_wide_colour`)


# a 16-bit TIFF's tags as OpenCV (libtiff) decodes it as stored: RGB, unsigned, interleaved, not turned
_TIFF_WIDE = {262: (2,), 339: (1,), 284: (1,), 274: (1,)}
_UNASSOCIATED = (2,)  # ExtraSamples: an alpha not premultiplied (OpenCV hands over what is stored)


def _tiff_numbers(image: Image.Image, tag: int, default: int | None = None) -> tuple[int, ...]:
    value = getattr(image, "tag_v2", {}).get(tag, default)
    value = value if isinstance(value, tuple) else (value,)
    return tuple(v for v in value if isinstance(v, int))


def _tiff_16_bit(image: Image.Image) -> bool:
    """A TIFF of 16-bit RGB samples, or RGBA with an unassociated alpha, that OpenCV decodes as
    stored and Pillow cuts to 8 bits: interleaved, unsigned, not turned by an Orientation tag."""
    if image.format != "TIFF" or image.mode not in ("RGB", "RGBA"):
        return False
    samples = _tiff_numbers(image, 277)
    if samples not in ((3,), (4,)) or set(_tiff_numbers(image, 258)) != {16}:
        return False
    if samples == (4,) and _tiff_numbers(image, 338) != _UNASSOCIATED:
        return False
    return all(set(_tiff_numbers(image, tag, want[0])) == set(want) for tag, want in _TIFF_WIDE.items())


# 16-bit (h, W, 3) RGB samples (grey ones repeated) -> uint8 sRGB, and what it converts from
WideColour = tuple[Callable[[np.ndarray], np.ndarray], str]


def _through(table: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Samples mapped by a `Curve`'s table: of levels (1-D), or of a grey's colours (2-D)."""
    return (lambda samples: table[samples]) if table.ndim == 1 else (lambda samples: table[samples[..., 0]])


def _wide_colour(image: Image.Image, data: bytes) -> WideColour | None:
    """How a 16-bit RGB, RGBA or grey+alpha PNG that Pillow cuts to 8 bits (`_CUT_TO_8`, no tRNS
    colour key) is taken to sRGB from its 16 bits: by its cICP (`declared_colour`: ffmpeg writes
    an HDR video's frames as such PNGs), its cHRM (`_png_chromaticities`), its gAMA (`_png_gamma`),
    a grey+alpha one's grey ICC profile, an RGB one's matrix/TRC ICC profile (`matrix_conversion`);
    so is a 16-bit RGB(A) TIFF's (`_tiff_16_bit`) profile. None for none of them (or a cICP
    declaring sRGB, an sRGB profile, a profile of tables: those keep LittleCMS's 8-bit path)."""
    if _tiff_16_bit(image):
        matrix = matrix_conversion(image.info.get("icc_profile"))
        return (functools.partial(matrix.apply, bits=16), matrix.description) if matrix is not None else None
    header = png_header(data) if image.format == "PNG" else None
    if header is None or header[0] != 16 or header[1] not in _CUT_TO_8 or "transparency" in image.info:
        return None
    declared = declared_colour(image, data)  # a cICP chunk: its chromaticities, gamma, profile are not read
    if declared is not None:
        return (functools.partial(declared.apply, bits=16), declared.description) if declared.converts else None
    primaries = _png_chromaticities(image)
    if primaries is not None:
        return functools.partial(primaries.apply, bits=16), primaries.description
    gamma = _png_gamma(image)
    table = gamma_table(gamma, 16) if gamma is not None else None
    if table is not None:
        return _through(table), f"PNG gAMA {gamma:g}"
    icc = image.info.get("icc_profile")
    if header[1] != _GREY_ALPHA:
        matrix = matrix_conversion(icc) if isinstance(icc, bytes) else None
        return (functools.partial(matrix.apply, bits=16), matrix.description) if matrix is not None else None
    grey = grey_profile(icc) if isinstance(icc, bytes) else ""
    table = grey_table(icc, 16) if grey else None  # type: ignore[arg-type]
    return (_through(table), grey) if table is not None else None


def _wide(image: Image.Image, data: bytes, orientation: int) -> tuple[np.ndarray, str] | None:
    """A 16-bit RGB, RGBA or grey+alpha PNG's (or RGB(A) TIFF's) colour taken to sRGB from its
    16-bit samples (`_wide_colour`; OpenCV decodes them as stored: no gamma, no EXIF turn), then
    its 16-bit alpha composited on white, then turned by `orientation`, and what it was converted
    from: Pillow hands over 8-bit samples, whose linear shadows (gAMA 1.0) came out up to 12
    levels from the specification's decoding (a ProPhoto cHRM's 9, a linear grey profile's 29, a
    linear scRGB ICC profile's 13). None when none applies or OpenCV does not give 16-bit samples
    of the image's size (the 8-bit path then converts)."""
    found = _wide_colour(image, data)
    if found is None:
        return None
    colour, description = found
    wide = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if wide is None or wide.dtype != np.uint16 or wide.ndim != 3 or wide.shape[2] not in (3, 4) \
            or wide.shape[1::-1] != image.size:
        return None
    h, w = wide.shape[:2]
    out = np.empty((h, w, 3), np.uint8)
    rows = max(1, STRIP_PIXELS // max(1, w))
    for y in range(0, h, rows):
        strip = wide[y : y + rows]
        shown = colour(strip[..., 2::-1])  # OpenCV's BGR(A)
        if strip.shape[2] == 4:
            alpha = strip[..., 3:4].astype(np.uint32)
            shown = ((shown * alpha + WHITE * (0xFFFF - alpha) + 0x7FFF) // 0xFFFF).astype(np.uint8)
        out[y : y + rows] = shown
    del wide
    turned = out if orientation == 1 else np.asarray(Image.fromarray(out).transpose(_TURNS[orientation]))
    return turned, description


def _srgb_array(image: Image.Image, data: bytes) -> tuple[np.ndarray, str]:
    """The loaded image as (H, W, 3) uint8 sRGB (`to_rgb_array`, `_in_srgb`) and the profile it
    was converted from; a CMYK image with a CMYK profile converted by it
    (`transforms.colour_profile`): Pillow's conversion ignores the profile. A PNG's cHRM, or its
    gAMA, when it has no profile and no sRGB chunk, is applied to its colour (grey ones too)
    before its alpha is composited (`to_rgb_array`, `_converted_on_white`), as is a grey image's
    grey ICC profile (`colour_profile.grey_table`: it was ignored, a linear grey shown up to 70
    levels too dark). (A 16-bit PNG's samples that Pillow cuts to 8 bits are converted from their
    16 bits before this, by `_wide`: here only when OpenCV could not decode them.) An AVIF/HEIF
    without an ICC profile is shown as its nclx box declares, a PNG as its cICP chunk declares
    whatever other colour chunks it has (`declared_colour`): a PQ or HLG one
    tone-mapped to SDR as HDR video is (`transforms.hdr`; its decoder gives the non-linear HDR
    signal, shown as is it looks washed out and dim), a wide-gamut or non-sRGB-curve one converted.
    A CIELab TIFF whose WhitePoint tag names another white than D50 is adapted from it
    (`lab_white`: Pillow reads every Lab as D50)."""
    white = lab_white(image)
    if white is not None:
        return lab_to_srgb(image, white), f"TIFF CIELab, white {white[0]:.4f},{white[1]:.4f}"
    if image.mode == "CMYK":
        conversion = srgb_conversion(image.info.get("icc_profile"), "CMYK")
        if conversion.transform is not None:
            return cmyk_to_srgb(image, conversion), conversion.description
    declared = declared_colour(image, data)
    if declared is not None:
        return _as_declared(image, declared)
    primaries = _png_chromaticities(image)
    if primaries is not None:  # the gAMA is its curve
        return _converted_on_white(image, functools.partial(primaries.apply, bits=8)), primaries.description
    gamma = _png_gamma(image)
    if gamma and gamma_table(gamma) is not None:
        return to_rgb_array(image, functools.partial(gamma_table, gamma)), f"PNG gAMA {gamma:g}"
    icc = image.info.get("icc_profile")
    grey_samples = image.mode in _GREY_PROFILED_MODES or (image.format == "PNG" and png_header(data) == (16, _GREY_ALPHA))
    grey = grey_profile(icc) if grey_samples and isinstance(icc, bytes) else ""
    if grey:
        return to_rgb_array(image, functools.partial(grey_table, icc)), grey
    return _in_srgb(image, data)
