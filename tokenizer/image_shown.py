"""How the build shows a decoded image, in the small pieces a user's photo folder needs: its EXIF
orientation, a PNG's gAMA and an embedded RGB ICC profile (Display P3, Adobe RGB: what phones and
cameras write). The build's decode (`transforms.decode`: `image_orientation._orientation`,
`image_colour._srgb_array`, `colour_profile`, `icc_tables`, `exif_ifd`) applies them and
`tokenizer` may not import it (tests/test_layering.py), so these are mirrors, held equal to the
build by tests/test_tokenizer_shown.py on files made by Pillow, ImageMagick and exiftool.

Ignored here, they gave the tokenizer other pixels than the build renders: a phone's portrait
photo (Orientation 6) lay on its side (64x48 where the build renders 48x64), a Display P3 JPEG was
up to 116 levels off (mean 9.3), an Adobe RGB one from ImageMagick 141 (mean 10.8), a gAMA 1.0 PNG
73 (mean 49.9), each against the build's `decode_rgb` of the same bytes.

Not mirrored (the tokenizer reads these as before, stated, not hidden): a PNG's non-sRGB cHRM,
the conversion a PNG's cICP chunk asks for (but a PNG with one the build understands gets no gAMA
or ICC conversion here either, as the build lets the cICP win: `cicp_declared`; but for BT.709
primaries with a power curve, applied here), an AVIF/HEIF's nclx box, a CMYK or grey ICC profile, a profile of LUT tables (its tables are
not walked here, so LittleCMS is never given one), a matrix profile with a black point, and the
16-bit samples of a gAMA or profiled RGB PNG that Pillow cuts to 8 bits (the build reads those
through OpenCV).
"""

from __future__ import annotations

import functools
import hashlib
import io
import zlib
from collections import OrderedDict
from typing import Callable

import numpy as np
from PIL import Image, ImageCms

from tokenizer.heif_exif import strict_ifd0

EXIF_ORIENTATION = 0x0112
_NUMBERS = {3: (2, False), 4: (4, False), 8: (2, True), 9: (4, True)}  # SHORT, LONG, SSHORT, SLONG
_TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_90}


def exif_orientation(raw: bytes) -> int:
    """The Orientation (1-8) IFD0 of an EXIF block declares, 1 for none or one unreadable: a walk
    of 12-byte entries, nothing copied (Pillow's `getexif` copies every entry's data, 1 GB for a
    1 MB hostile block). The last entry of the tag wins, as Pillow reads it (`exif_ifd`)."""
    raw, order, entries = strict_ifd0(raw)
    value = 1
    for at in entries:
        kind = int.from_bytes(raw[at + 2 : at + 4], order)
        if int.from_bytes(raw[at : at + 2], order) != EXIF_ORIENTATION or kind not in _NUMBERS:
            continue
        width, signed = _NUMBERS[kind]
        count = int.from_bytes(raw[at + 4 : at + 8], order)
        value = int.from_bytes(raw[at + 8 : at + 8 + width], order, signed=signed) if count == 1 else 0
    return value if 1 <= value <= 8 else 1


def png_exif(data: bytes) -> bytes | None:
    """A PNG's first eXIf chunk, by a walk of chunk headers to IEND; None for one whose CRC fails
    (the build's `png_chunks._png_exif`)."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        if kind == b"eXIf":
            end = pos + 12 + length
            whole = zlib.crc32(data[pos + 4 : end - 4]) == int.from_bytes(data[end - 4 : end], "big")
            return data[pos + 8 : end - 4] if whole and end <= len(data) else None
        if kind == b"IEND":
            return None
        pos += 12 + length
    return None


def orientation(image: Image.Image, data: bytes = b"") -> int:
    """The EXIF orientation to apply to an image opened, not yet loaded, from `data`: its EXIF
    block's (a JPEG's, WebP's; an AVIF's irot/imir, which Pillow writes there; a PNG's eXIf before
    IDAT, else its first after it), 1 for a HEIF (libheif turns it and resets the tag) and a TIFF
    (Pillow turns it by its tag as it loads it). Read before the load as the build reads it
    (`image_orientation._orientation`): after it, Pillow's info held a PNG's last eXIf after
    IDAT (one of Orientation 6 and then 3: the build turned it 90 degrees, this 180)."""
    if image.format in ("HEIF", "TIFF"):
        return 1
    raw = image.info.get("exif") or (png_exif(data) if image.format == "PNG" else None)
    return exif_orientation(raw) if isinstance(raw, (bytes, bytearray)) else 1


def oriented(image: Image.Image, turn: int) -> Image.Image:
    """The loaded image turned as its EXIF `turn` says (as `ImageOps.exif_transpose` turns it)."""
    return image.transpose(_TURNS[turn]) if turn in _TURNS else image


# --- a PNG's gAMA (`colour_profile.gamma_table`, `image_colour._png_gamma`) ---
SRGB_DECLARED_GAMMA = 1 / 2.2
GAMMA_THRESHOLD = 0.05  # libpng's: no correction within 5% of sRGB's declared gamma
SRGB_CHROMATICITIES = (0.3127, 0.3290, 0.64, 0.33, 0.30, 0.60, 0.15, 0.06)
CHROMATICITY_TOLERANCE = 0.0015


def _srgb_encode(light: np.ndarray) -> np.ndarray:
    return np.where(light <= 0.0031308, 12.92 * light, 1.055 * np.power(light, 1 / 2.4) - 0.055)


@functools.lru_cache(maxsize=32)
def gamma_table(gamma: float, bits: int = 8) -> np.ndarray | None:
    """The sRGB level (uint8) of each `bits`-bit sample of a PNG of gAMA `gamma`; None within
    `GAMMA_THRESHOLD` of sRGB's declared gamma, or for no gamma a file can mean."""
    if not 0.01 <= gamma <= 100 or abs(gamma / SRGB_DECLARED_GAMMA - 1) <= GAMMA_THRESHOLD:
        return None
    top = (1 << bits) - 1
    table = np.round(_srgb_encode(np.power(np.arange(top + 1) / top, 1 / gamma)) * 255).astype(np.uint8)
    table.flags.writeable = False
    return table


def png_gamma(image: Image.Image) -> float | None:
    """The gamma a PNG's gAMA declares with no iCCP or sRGB chunk (they take precedence) and no
    cHRM but sRGB's (another's is a primaries conversion, not mirrored here)."""
    if image.format != "PNG" or image.info.get("icc_profile") or "srgb" in image.info:
        return None
    chromaticities = image.info.get("chromaticity")
    if isinstance(chromaticities, tuple) and len(chromaticities) == 8 and any(
            abs(a - b) > CHROMATICITY_TOLERANCE for a, b in zip(chromaticities, SRGB_CHROMATICITIES)):
        return None
    gamma = image.info.get("gamma")
    return float(gamma) if isinstance(gamma, (int, float)) and gamma_table(float(gamma)) is not None else None


# --- an RGB ICC profile (`colour_profile.srgb_conversion`, guarded as `icc_tables.table_problem`) ---
_RGB_PROFILED_MODES = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "P", "PA"})
_HEADER, MAX_TAGS = 128, 100
_COUNTED = {b"mluc": (16, 12), b"curv": (12, 2), b"desc": (12, 1)}  # (header, bytes per declared entry)
_TABLES = (b"mft1", b"mft2", b"mAB ", b"mBA ", b"mpet")  # LUT tags: not walked here, so never converted
_IDENTITY_TOLERANCE = 1


def _u32(icc: bytes, at: int) -> int:
    return int.from_bytes(icc[at : at + 4], "big")


def plain_profile(icc: bytes) -> bool:
    """Whether LittleCMS may be given this profile here: its tag table within it, no tag in its
    header, every counted tag (mluc, curv, desc) holding what it declares, and no LUT table (the
    build walks those; LittleCMS allocates what a table declares before finding it short)."""
    if len(icc) < _HEADER + 4:
        return False
    length, count = min(len(icc), _u32(icc, 0)), _u32(icc, _HEADER)
    if count > MAX_TAGS or _HEADER + 4 + 12 * count > length:
        return False
    for i in range(count):
        entry = _HEADER + 4 + 12 * i
        start, size = _u32(icc, entry + 4), _u32(icc, entry + 8)
        if start + size > length:
            continue  # LittleCMS skips it
        kind = icc[start : start + 4]
        if start < _HEADER + 4 or kind in _TABLES:
            return False
        if kind in _COUNTED:
            head, width = _COUNTED[kind]
            if size < head or head + width * _u32(icc, start + 8) > size:
                return False
    return True


def _grid() -> Image.Image:
    levels = np.linspace(0, 255, 17).round().astype(np.uint8)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(1, -1, 3)
    return Image.fromarray(np.ascontiguousarray(cube), "RGB")


_built: OrderedDict[str, ImageCms.ImageCmsTransform | None] = OrderedDict()  # by the profile's sha256
_CACHE_SIZE = 32


def _transform(icc: bytes) -> ImageCms.ImageCmsTransform | None:
    """`_build`'s transform for `icc`, kept for the last `_CACHE_SIZE` profiles by their digest
    (never by their bytes: a profile may be megabytes; the build's `colour_profile.by_digest`)."""
    key = hashlib.sha256(icc).hexdigest()
    if key not in _built:
        _built[key] = _build(icc)
        while len(_built) > _CACHE_SIZE:
            _built.popitem(last=False)
    _built.move_to_end(key)
    return _built[key]


def _build(icc: bytes) -> ImageCms.ImageCmsTransform | None:
    if not plain_profile(icc):
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if profile.profile.xcolor_space.strip() != "RGB":
            return None
        transform = ImageCms.buildTransform(profile, ImageCms.createProfile("sRGB"), "RGB", "RGB",
                                            renderingIntent=ImageCms.Intent.PERCEPTUAL, flags=ImageCms.Flags.NOCACHE)
        grid = _grid()
        moved = np.abs(np.asarray(transform.apply(grid), np.int16) - np.asarray(grid, np.int16)).max()
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None  # unreadable: the pixels are read as sRGB, as a browser reads them
    return None if moved <= _IDENTITY_TOLERANCE else transform


# --- a PNG's cICP chunk, which the build lets win over its iCCP, sRGB, cHRM and gAMA
# (`image_colour.declared_colour`, `png_chunks.png_cicp`, `coded_colour.coded_colour`) ---
CICP_UNSPECIFIED = 2
CICP_PRIMARIES = frozenset({1, 4, 5, 6, 7, 8, 9, 11, 12, 22})  # `coded_colour.PRIMARIES`
CICP_SDR_TRANSFERS = frozenset({1, 4, 5, 6, 8, 13, 14, 15})  # `coded_colour.SDR_TRANSFERS`
CICP_HDR_TRANSFERS = frozenset({16, 18})  # PQ, HLG (`hdr.TRANSFER_NAMES`)


def png_cicp(data: bytes) -> tuple[int, int] | None:
    """(primaries, transfer) of a PNG's cICP chunk among those before PLTE and IDAT, None for none
    or one PNG does not allow (not 4 bytes, a matrix, narrow range): the build's `png_cicp`."""
    if data.find(b"cICP") < 0:
        return None
    pos = 8
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if kind in (b"PLTE", b"IDAT", b"IEND") or end > len(data):
            return None
        if kind == b"cICP":
            body = data[pos + 8 : end - 4]
            return (body[0], body[1]) if length == 4 and body[2] == 0 and body[3] == 1 else None
        pos = end
    return None


_CICP_POWERS = {4: 1 / 2.2, 5: 1 / 2.8, 8: 1.0}  # the power curves of `coded_colour.SDR_TRANSFERS`


@functools.lru_cache(maxsize=8)
def power_table(gamma: float) -> np.ndarray:
    """The sRGB level of each 8-bit sample of a power curve (light = sample ** (1 / gamma)) with
    BT.709 primaries: the build's conversion of such a cICP, within a level of it."""
    table = np.round(_srgb_encode(np.power(np.arange(256) / 255, 1 / gamma)) * 255).astype(np.uint8)
    table.flags.writeable = False
    return table


def cicp_declared(image: Image.Image, data: bytes) -> tuple[bool, float | None]:
    """(whether the build shows this colour PNG as its cICP chunk declares, code points it
    understands, its gAMA and ICC profile unread; the power of the curve when that is all its
    conversion is: BT.709 primaries, a power transfer). The tokenizer then applies neither gAMA
    nor ICC (it applied them, up to 132 levels from the build, where before both read the samples
    as stored) and converts only such a power curve (ffmpeg's linear frames)."""
    if image.format != "PNG" or image.mode not in _RGB_PROFILED_MODES:
        return False, None
    cicp = png_cicp(data)
    if cicp is None:
        return False, None
    primaries, transfer = cicp
    if transfer in CICP_HDR_TRANSFERS:
        return True, None
    primaries = 1 if primaries == CICP_UNSPECIFIED else primaries
    transfer = 13 if transfer == CICP_UNSPECIFIED else transfer
    if primaries not in CICP_PRIMARIES or transfer not in CICP_SDR_TRANSFERS:
        return False, None
    return True, _CICP_POWERS.get(transfer) if primaries == 1 else None


Colour = Callable[[np.ndarray], np.ndarray]  # (H, W, 3) uint8 samples -> sRGB, before alpha is composited


def colour(image: Image.Image, data: bytes = b"") -> tuple[Colour | None, Callable[[int], np.ndarray | None] | None]:
    """How an opened image (of the file's bytes `data`) has its samples taken to sRGB: (a
    conversion of 8-bit RGB samples, the gAMA table by sample bits for wide grey ones), (None,
    None) for nothing to do (none declared, or a cICP chunk the build shows instead)."""
    declared, power = cicp_declared(image, data)
    if declared:
        return (None, None) if power is None else ((lambda rgb: power_table(power)[rgb]), None)
    gamma = png_gamma(image)
    if gamma is not None:
        return (lambda rgb: gamma_table(gamma)[rgb]), functools.partial(gamma_table, gamma)
    icc = image.info.get("icc_profile")
    transform = _transform(icc) if isinstance(icc, bytes) and image.mode in _RGB_PROFILED_MODES else None
    if transform is None:
        return None, None
    return functools.partial(_by_strips, transform), None


STRIP_PIXELS = 1 << 20  # the build's (`rgb_array.STRIP_PIXELS`)


def _by_strips(transform: ImageCms.ImageCmsTransform, rgb: np.ndarray) -> np.ndarray:
    """`rgb` converted by `transform` a strip of `STRIP_PIXELS` at a time into one array, as the
    build converts: converted whole, a Pillow copy, LittleCMS's output and its array copy were
    each the image's size (a 24 MP Adobe RGB JPEG peaked 433 MiB, a plain one 268)."""
    h, w = rgb.shape[:2]
    out = np.empty((h, w, 3), np.uint8)
    rows = max(1, STRIP_PIXELS // max(1, w))
    for y in range(0, h, rows):
        strip = Image.fromarray(np.ascontiguousarray(rgb[y : y + rows]), "RGB")
        out[y : y + rows] = np.asarray(transform.apply(strip))
    return out
