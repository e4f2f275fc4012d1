"""Decode any image file to RGB uint8, and onto the square canvas in one step.

Whatever the input (EXIF-rotated JPEG, grayscale, CMYK, palette, alpha, 16-bit), the output is
RGB uint8, in sRGB (an embedded RGB colour profile is converted: `transforms.colour_profile`).
Failures raise `DecodeError` with a short machine-readable reason, so callers can
count rejects by reason instead of crashing.

The fast path: a JPEG can decode at 1/2, 1/4 or 1/8 scale inside libjpeg (DCT scaling). We
ask for the smallest scale that still covers the output at full resolution, which is most of
the speed-up on large web images; area interpolation then finishes the resize.

Memory is judged before decoding, from what the header declares: Pillow's buffer for the mode
(16-bit grey 2 bytes a pixel, RGB and alpha modes 4), the RGB array (3) and a transposed copy
when EXIF rotates. Conversions to RGB run in strips of rows, so a mode's extra work (alpha
compositing, 16-bit scaling) costs a strip, not a second full-size image. An input whose cost
is over the budget is decoded at reduced scale where the format allows (a JPEG's DCT scaling,
on the paths that accept a reduced decode) or rejected `image_too_large`.

What a decoder holds besides its output counts too (`transforms.headers` reads it from the bytes):
a multi-scan JPEG's DCT coefficients at full size whatever the scale, the canvases of libwebp, the
32-bit samples of OpenJPEG, the YUV planes of libavif (by the bit depth and subsampling its
`av1C` boxes declare) and OpenCV's 16-bit samples of a gAMA, cHRM or grey-profiled PNG that Pillow cuts to 8 bits (`_wide`);
and an icon container is judged on the images it embeds, which Pillow
decodes at their own declared size (an ICO's inside `Image.open`). A JPEG's decode time grows with
its scans (each walks every block of its components): over `MAX_JPEG_SCANS` it is rejected
`too_many_scans` before decoding.

Time is judged from the declaration too where the format allows (`declared_decode_s`): a JPEG
(Huffman-coded), PNG or still WebP decodes in at most so many CPU seconds for its pixels, scans and
bytes. The build decodes in its own process only what that bounds within its limit, and the rest
in a process it kills at the limit (`uvd_pipeline.image_decode`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import warnings
import zlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

import cv2
import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from transforms import hdr
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
from transforms.errors import Rejected, exception_detail
from transforms.headers import (
    JPEG_LS_SOF,
    avif_planes,
    camera_raw,
    clean_aperture,
    coefficient_bytes,
    declared_length,
    Pages,
    embedded_images,
    gif_frames,
    gif_screen,
    heif_size,
    icon_entries,
    jpeg_layout,
    marker_lossless,
    nclx_colour,
    png_frames,
    png_header,
    png_size,
    tiff_pages,
    tiff_samples,
    tiff_values,
    webp_still_size,
)
from transforms.resize import ResizePlan, ResizePolicy, needed_input_size, plan_resize

# Pillow warns about what this module handles itself (images over the pixel budget are refused
# before decoding, truncated files become rejects with a reason, EXIF is read defensively,
# transparency is composited on white). Ignored by one filter set at import: a
# `warnings.catch_warnings()` around each call is not thread-safe, and the local runner's workers
# may be threads of one process (`beam.direct_running_mode: auto`), whose interleaved restores
# could leave every warning of the process ignored, or let Pillow's through.
warnings.filterwarnings("ignore", module=r"PIL\.")

try:  # HEIC/HEIF (phone photos): decodable when pillow-heif is installed, else `unsupported_format`
    from pillow_heif import options as heif_options
    from pillow_heif import register_heif_opener

    register_heif_opener()
    heif_options.DECODE_THREADS = 1  # libde265 would take 4 threads: see AVIF's below
except ImportError:  # pragma: no cover - it is a declared dependency
    pass
try:  # dav1d would start a thread per core for every AVIF: a build decodes one image per worker
    from PIL import AvifImagePlugin  # thread, its workers keep every core busy (and a decode's CPU

    AvifImagePlugin.DEFAULT_MAX_THREADS = 1  # limit counts the CPU of all its threads)
except ImportError:  # pragma: no cover - Pillow before 11.2
    pass

# Our own guard (`max_pixels`, checked on the header before any pixel is decoded) stands in for
# Pillow's, so the limit is the build config's (up to 2**30 pixels) and not Pillow's constant. Pillow's
# check (`Image.MAX_IMAGE_PIXELS`, read by `Image._decompression_bomb_check` at `Image.open`, GIF
# frames, TIFF tiles, ICO and ICNS frames, crops) stays as it is for every other caller in the
# process (tokenizer.evaluate, a user's code): that function is wrapped to skip it only inside
# `pixels_judged_here()`, in the thread that entered it (a ContextVar), and to call Pillow's own
# everywhere else. Setting the global for the length of a decode would not do: the local runner's
# workers may be threads of one process, and another thread would decode unguarded meanwhile.
_PIXELS_JUDGED_HERE: ContextVar[bool] = ContextVar("transforms_decode_pixels_judged_here", default=False)


def _pillow_bomb_check_unless_judged_here(size: tuple[int, int]) -> None:
    if not _PIXELS_JUDGED_HERE.get():
        _pillow_bomb_check(size)


# Pillow's own check, wrapped once (a reload of this module finds the wrapper and wraps the original)
_pillow_bomb_check = getattr(Image._decompression_bomb_check, "__wrapped__", Image._decompression_bomb_check)
_pillow_bomb_check_unless_judged_here.__wrapped__ = _pillow_bomb_check  # type: ignore[attr-defined]
Image._decompression_bomb_check = _pillow_bomb_check_unless_judged_here


@contextlib.contextmanager
def pixels_judged_here() -> Iterator[None]:
    """Pillow's decompression-bomb check lifted for this thread's Pillow calls inside the block, for
    a caller that judges the image's pixels and memory itself from its header (`load_image`,
    `decode_rgb`, `transforms.maps`). Also a decorator."""
    token = _PIXELS_JUDGED_HERE.set(True)
    try:
        yield
    finally:
        _PIXELS_JUDGED_HERE.reset(token)


DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own error threshold (2 x 89.5 MP).
# one input's decode: with a worker's own few hundred MB (Beam, the tokenizer) it stays under 1.5 GB
DEFAULT_MAX_DECODE_BYTES = 768 << 20
STRIP_PIXELS = 1 << 20  # pixels converted at a time: the temporaries of a conversion are per strip
# modes whose pixels an RGB ICC profile describes (CMYK ones: `_srgb_array`; grey ones: `_GREY_PROFILED_MODES`)
_RGB_PROFILED_MODES = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "P", "PA"})  # grey: `_GREY_PROFILED_MODES`
# bytes a pixel takes in Pillow's buffer, by mode (Pillow pads 3-channel and 2-channel modes to 4)
_STORAGE = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
_STRIP_COST = STRIP_PIXELS * 24  # the largest per-strip temporaries (int64 / uint16 working copies)
# Decoder working memory beyond Pillow's buffer, bytes a pixel, measured as the rise of Pillow's
# load in a fresh process (3000 x 2000 and 6000 x 6000 RGB): libwebp's animation decoder, which
# Pillow uses for every WebP, keeps two RGBA canvases and hands a third copy over (16 in all, 4 of
# them Pillow's); OpenJPEG decodes into 32-bit samples, one per component, plus its tile buffers
# (19.4 for RGB). Before, 6000 x 6000 was judged 264 MB and took 554 and 669.
_WORKING = {"WEBP": lambda bands: 12, "JPEG2000": lambda bands: 4 * bands + 4}
# libavif (dav1d, one thread) holds each AV1 bitstream's YUV planes (`Av1Planes.bytes_per_pixel`),
# dav1d about a byte a pixel more per bitstream, and the 8-bit RGB(A) copy handed to Pillow, plus
# a few MiB whatever the size: measured as the rise of Pillow's load in a fresh process at 1000 x
# 750, 3000 x 2000 and 6000 x 4000 (RGB 4:2:0 8-bit: 5.0 bytes a pixel over Pillow's buffer at
# 6000 x 4000; 4:4:4: 6.5; 10-bit 4:2:0: 6.2; with alpha: 7.3; 12-bit 4:4:4 at 3000 x 2000: 9.9).
# An AVIF whose av1C boxes cannot be read is judged as 12-bit 4:4:4 with a 12-bit alpha.
_AV1_DECODER_BYTES = 1
_AVIF_FIXED = 8 << 20
_AVIF_UNREAD = (6 + 1) + (2 + 1)
# An icon's embedded image: Pillow holds it in 4 bytes a pixel; a bitmap icon also gets an RGBA
# copy and a one-byte mask (IcoFile.frame), a JPEG 2000 one OpenJPEG's buffers for 4 components.
_EMBEDDED_EXTRA = {"BMP": 5, "JPEG 2000": 20}
# Scans a JPEG may have. Each scan walks every block of its components, so decode time grows with
# the scan count, and a scan of EOB runs costs a few bytes (12 ms a scan at 8000 x 8000, measured):
# a 435 KB file of 3200 scans held a worker 49 s. libjpeg's standard progressive scripts write at
# most 6 scans a component (10 for colour, 6 for grey, 18 for CMYK); "hard to imagine any
# real-world application needing more than 100" (https://bugzilla.redhat.com/1344214, the report
# behind libjpeg-turbo's `-maxscans` and TJPARAM_SCANLIMIT). At 100, a max_pixels image of
# hostile scans decodes in seconds.
MAX_JPEG_SCANS = 100
# CPU seconds a decode takes at most, judged from what the file declares (`declared_decode_s`), for
# the formats whose decoders' work that bounds: per pixel (the decoder's output, our conversion and
# resize), per pixel and scan of a multi-scan JPEG, and per byte of the file (entropy-coded data,
# and the chunk or segment loops Pillow and this module run in Python). The worst cases measured
# (`load_image` on 3000 x 3000 noise, CPU time, 2026-12-05, fast and full-size decodes alike): a
# lossy WebP with alpha 140 ns a pixel, a progressive q100 4:4:4 JPEG 63, a 16-bit RGBA PNG 48;
# a PNG of a million empty chunks 400 ns a byte, a JPEG of a million empty COM segments 390; a
# progressive JPEG's scans of content about 3.3 ns a pixel each (a 99-scan EOB-run bomb 0.1).
# Then the safety factor: another machine's slower or busier cores.
DECODE_PIXEL_NS, DECODE_SCAN_NS, DECODE_BYTE_NS = 150, 5, 400
DECODE_TIME_SAFETY = 4
# what libjpeg decodes at 1/2, 1/4 or 1/8 scale: Pillow opens a JPEG that carries an MPF index (a
# camera's MPO, a phone's Ultra HDR photo and its gain map) as MPO, and decodes its first image
_DCT_SCALED = ("JPEG", "MPO")
_HUFFMAN_SOF = (0xC0, 0xC1, 0xC2)  # baseline, extended and progressive Huffman-coded frames
EXIF_ORIENTATION = 0x0112
WHITE = 255


class DecodeError(Rejected):
    """An input that cannot become an image; `reason` is a short stable code for reports."""


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image on the canvas, with the facts about the original that reports want."""

    pixels: np.ndarray  # (size, size, 3) uint8
    width: int  # original width after EXIF orientation
    height: int
    format: str
    reduced_decode: int  # 1, 2, 4 or 8: the JPEG DCT scale used (1 = full decode)
    plan: ResizePlan  # the geometry from the original (oriented) image to the canvas
    colour_profile: str = ""  # the embedded ICC profile converted to sRGB from ("" = none, or sRGB)
    pages: Pages = Pages()  # the pages or frames the file holds: the image is the first (`pages_of`)


@dataclass(frozen=True)
class Held:
    """Bytes a decoder holds besides Pillow's buffer, whatever the output scale, and what they are."""

    bytes: int = 0
    what: str = ""


# What each number a TIFF's first IFD holds (`tiff_values`) costs Pillow opening it: about 400
# bytes a strip (its offset and byte count as ints of tuples, an uncompressed strip's own tile). A
# TIFF whose numbers cost more than the decoder's memory budget is refused before `Image.open`
# (the default budget: 4 Mi numbers; a 2 x 4,000,000 TIFF of a row a strip took 1.59 GB opening).
# Writers make far fewer: libtiff's 8 KiB strips give a 13,000 x 13,000 RGB photo 13,000 strips;
# 256 x 256 tiles a few thousand; tifffile's 16 x 16 tiles of a 12,000 x 12,000 scan 1.1 Mi numbers
# (refused by the flat 2**20 this was).
TIFF_VALUE_BYTES = 200


def _open(data: bytes, max_pixels: int, max_bytes: int) -> Image.Image:
    if not data:
        raise DecodeError("empty_file")
    _check_embedded(data, max_pixels, max_bytes)  # before Image.open: an ICO is decoded inside it
    declared = heif_size(data)  # before Image.open: libavif's refusal read as "cannot decode AVIF"
    if declared and declared[0] * declared[1] > max_pixels:
        raise DecodeError("decompression_bomb", f"{declared[0]}x{declared[1]} exceeds max_pixels={max_pixels}")
    numbers = tiff_values(data)  # before Image.open: Pillow parses each into an object there
    if numbers * TIFF_VALUE_BYTES > max_bytes:
        raise DecodeError("image_too_large", f"a TIFF whose first IFD holds {numbers} numbers (strip or tile "
                                             f"offsets and byte counts), about {numbers * TIFF_VALUE_BYTES >> 20} MiB "
                                             f"opening it, over the budget of {max_bytes >> 20} MiB: Pillow holds each "
                                             "as an object and an uncompressed strip as a tile of its own")
    opened = without_png_text(data)  # outside the try: its own `corrupt_header` stands as it is
    try:
        image = Image.open(io.BytesIO(opened))
    except UnidentifiedImageError:
        _raise_if_cut_short(data)
        known = sniff_format(data)
        if known:
            raise DecodeError("unsupported_format", f"{known}: a real image format this build cannot decode") from None
        if data.startswith(_PNG_SIGNATURE):  # Pillow's PNG reader refused it (a critical chunk's bad CRC)
            raise DecodeError("corrupt_header", _png_refusal(data)) from None
        # the detail never quotes the bytes: a text file read by mistake must not be published
        raise DecodeError("not_an_image", f"no image format recognises these {len(data)} bytes") from None
    except Exception as exc:  # Pillow raises many types on broken headers
        _raise_if_cut_short(data)
        known = sniff_format(data)
        if known and (known.startswith("TIFF") or "camera raw" in known):  # a layout Pillow has no raw mode for
            raise DecodeError("unsupported_format", exception_detail(exc, f"{known}: ")) from None
        raise DecodeError("corrupt_header", exception_detail(exc)) from None
    raw = camera_raw(data) if image.format == "TIFF" else None
    if raw:  # Pillow opened the camera's preview in IFD0: never the photo, whatever its size
        raise DecodeError("unsupported_format", f"{raw}: a camera raw this build cannot develop "
                                                f"(its embedded preview is not the photo)")
    if image.format == "PNG" and "icc_profile" not in image.info:
        profile = png_profile_past_pillow(data)  # taken out for Pillow by `without_png_text`
        if profile:
            image.info["icc_profile"] = profile
    w, h = image.size
    if w < 1 or h < 1:
        raise DecodeError("no_pixels", f"{w}x{h}")
    if w * h > max_pixels:
        raise DecodeError("decompression_bomb", f"{w}x{h} exceeds max_pixels={max_pixels}")
    return image


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")
# ancillary chunks the decode reads into the pixels or their orientation (colour profile, gamma,
# primaries, significant bits, transparency, EXIF turn), and APNG's frame chunks
_PNG_PIXEL_CHUNKS = (b"iCCP", b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"tRNS", b"eXIf")
_PNG_ANIMATION_CHUNKS = (b"acTL", b"fcTL", b"fdAT")


def _png_refusal(data: bytes) -> str:
    """Why Pillow's PNG reader refuses a PNG (`Image.open` says only that no format recognised it)."""
    try:
        PngImagePlugin.PngImageFile(io.BytesIO(without_png_text(data))).close()
    except Exception as exc:
        return exception_detail(exc, "PNG: ")
    return "PNG: Pillow cannot open it"


def without_png_text(data: bytes, refuse_pixel_chunks: bool = True) -> bytes:
    """A PNG's bytes without its text chunks (comments, captions, XMP: no pixel depends on them),
    for Pillow to open, where one may inflate past Pillow's 1 MiB `MAX_TEXT_CHUNK` (a zTXt or iTXt)
    or they hold over 1 MiB (Pillow's limit is 64 MiB together): Pillow refused the whole picture
    (`corrupt_header`), where libpng, ImageMagick and browsers show it. An ancillary chunk (its
    kind's first letter lower case) whose CRC is wrong and that no pixel depends on (text, pHYs,
    tIME, bKGD: Pillow composites nothing on it) is dropped too, as libpng drops one with a
    warning (Pillow refused a bad-CRC tEXt before the pixels, and read the PNG as no image at
    all). One that changes the pixels or their turn (`_PNG_PIXEL_CHUNKS`: dropping a bad-CRC iCCP
    read an Adobe RGB photo as sRGB, a gAMA 1.0 grey 133 as 60) is `corrupt_header`, naming it;
    APNG's acTL, fcTL and fdAT are left for Pillow (dropping a frame's fcTL broke the next fdAT's
    sequence: a whole first frame was refused), or dropped where `refuse_pixel_chunks` is False (a
    label or depth map, read by index or by OpenCV); a critical one is left for Pillow to refuse.
    An iCCP profile inflating past Pillow's 1 MiB is taken out too (`png_profile_past_pillow`).
    Any other file, one with small plain text only (ImageMagick's dates: no copy made), or one
    whose chunks do not walk cleanly to IEND
    (damaged or cut: Pillow judges it as before) is returned as it is."""
    if not data.startswith(_PNG_SIGNATURE):
        return data
    view = memoryview(data)
    kept, pos, start, plain_text, copied = [], 8, 8, 0, False
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if length > 0x7FFFFFFF or not kind.isalpha() or end > len(data):
            return data
        broken = (kind[0] & 0x20 and kind not in _PNG_ANIMATION_CHUNKS
                  and zlib.crc32(view[pos + 4 : end - 4]) != int.from_bytes(data[end - 4 : end], "big"))
        if broken and kind in _PNG_PIXEL_CHUNKS and refuse_pixel_chunks:
            raise DecodeError("corrupt_header", f"PNG: its {kind.decode()} chunk fails its CRC (it changes the "
                                                "pixels: they cannot be shown as made)")
        past_pillow = (kind == b"iCCP" and not broken  # read by `png_profile_past_pillow`
                       and len(_inflated_profile(view[pos + 8 : end - 4], _PILLOW_PROFILE)) > _PILLOW_PROFILE)
        if kind in _PNG_TEXT or broken or past_pillow:
            kept.append(data[start:pos])
            start = end
            copied |= kind != b"tEXt" or bool(broken)
            plain_text += length if kind == b"tEXt" else 0
        pos = end
        if kind == b"IEND":
            if not copied and plain_text <= _PLAIN_TEXT_KEPT:
                return data
            return data[:8] + b"".join(kept) + data[start:]
    return data


_PLAIN_TEXT_KEPT = 1 << 20  # bytes of tEXt a PNG is opened with as it is
# Pillow refuses a PNG whose iCCP profile inflates past `MAX_TEXT_CHUNK` (1 MiB), where ImageMagick,
# libpng and browsers show it (a printer's or camera's LUT profile: a few MiB). One is read here up
# to the most a JPEG can carry (255 APP2 segments of 65,519 bytes: a PNG made from such a JPEG keeps
# its profile); past that the colours cannot be known within a bounded read (`image_too_large`).
_PILLOW_PROFILE = PngImagePlugin.MAX_TEXT_CHUNK
MAX_PNG_PROFILE = 255 * 65_519


def _inflated_profile(body: bytes | memoryview, limit: int) -> bytes:
    """An iCCP chunk's profile, inflated to at most `limit` + 1 bytes (a zlib bomb costs no more);
    b"" for one whose name, method or zlib stream is broken (Pillow ignores its zlib failure)."""
    name_end = bytes(body[:81]).find(b"\0")
    if name_end < 0 or len(body) < name_end + 2 or body[name_end + 1] != 0:
        return b""
    try:
        return zlib.decompressobj().decompress(body[name_end + 2 :], limit + 1)
    except zlib.error:
        return b""


def png_profile_past_pillow(data: bytes) -> bytes | None:
    """A PNG's colour profile (its first iCCP chunk before IDAT) when it inflates past Pillow's
    limit, which `without_png_text` took out for Pillow to open the PNG; None for none such. One
    inflating past `MAX_PNG_PROFILE` is `image_too_large`, judged inflating no further."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if kind in (b"IDAT", b"IEND") or end > len(data):
            return None
        if kind == b"iCCP":
            profile = _inflated_profile(memoryview(data)[pos + 8 : end - 4], MAX_PNG_PROFILE)
            if len(profile) > MAX_PNG_PROFILE:
                raise DecodeError("image_too_large", f"PNG: its iCCP colour profile inflates past "
                                                     f"{MAX_PNG_PROFILE} bytes (the most a JPEG can carry)")
            return profile if len(profile) > _PILLOW_PROFILE else None
        pos = end
    return None


_FTYP_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"heim": "HEIC", b"heis": "HEIC",
                b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF",
                b"crx ": "CR3 (Canon camera raw)", b"qt  ": "QuickTime video (an iPhone Live Photo's, or a clip)",
                b"mp41": "MP4 video", b"mp42": "MP4 video", b"isom": "MP4 video", b"M4V ": "MP4 video"}


# what ImageMagick, image editors and HDR tools write that Pillow does not read, by their first
# bytes: such a file was `not_an_image` ("no image format recognises these bytes")
_OTHER_MAGICS = ((b"v/1\x01", "OpenEXR"), (b"#?RADIANCE", "Radiance HDR"), (b"#?RGBE", "Radiance HDR"),
                 (b"id=ImageMagick", "MIFF (ImageMagick)"), (b"SDPX", "DPX"), (b"XPDS", "DPX"),
                 (b"gimp xcf", "XCF (GIMP)"))


def sniff_format(data: bytes) -> str | None:
    """The name of a real image format recognised by its first bytes, for formats that Pillow may
    not open (vector, HEIF family, JPEG XL, PDF, TIFF variants): such a file is a picture we
    cannot use, not junk, and its reject says which format it is."""
    head = data[:512]
    if head[:3] == b"\xff\xd8\xff":
        return _undecodable_jpeg(data)
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12], f"ISO media ({head[8:12].decode('latin-1')!r} brand)")
    raw = camera_raw(data)
    if raw:
        return raw
    if head[:4] in (b"II*\x00", b"MM\x00*"):  # the samples named: a float RGB TIFF's said nothing of float
        samples = tiff_samples(data)
        return f"TIFF ({samples + ', ' if samples else ''}a sample layout Pillow cannot read)"
    if head[:2] == b"\xff\x0a" or head[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return "JPEG XL"
    if head[:5] == b"%PDF-":
        return "PDF"
    for magic, name in _OTHER_MAGICS:
        if head.startswith(magic):
            return name
    if head[:2] in (b"PF", b"Pf") and head[2:3].isspace():
        return "PFM (portable float map)"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in head.lower()):
        return "SVG (vector graphics)"
    if text.startswith(b"<!doctype svg") or text.startswith(b"<!-- ") and b"<svg" in head.lower():
        return "SVG (vector graphics)"
    return None


def _undecodable_jpeg(data: bytes) -> str | None:
    """What a JPEG Pillow does not open is, when its frame says it is a real one it cannot decode:
    a JPEG-LS, or samples of other than 8 bits (12-bit, 16-bit lossless); None for one broken or
    cut before its frame."""
    layout = jpeg_layout(data)
    if layout is None:
        return None
    if layout.sof == JPEG_LS_SOF:
        return "JPEG-LS"
    return f"JPEG ({layout.precision}-bit samples)" if layout.precision != 8 else None


def declared_decode_s(data: bytes, over: float = math.inf) -> float | None:
    """At most how many CPU seconds `load_image` or `decode_through` spends on these bytes, from what
    they declare (`DECODE_*`): a Huffman-coded JPEG's frame size and scans, a PNG's or a still
    WebP's size, and the file's length. None for the other formats, whose headers do not bound
    their decoders' work (JPEG 2000's code blocks and layers, AV1 and HEVC, TIFF's codecs, GIF's
    frames, ...), and for a JPEG whose frame is not found. Counting a JPEG's scans walks its
    segments: a file whose length alone puts it over `over` seconds is not walked (inf)."""
    by_bytes = len(data) * DECODE_BYTE_NS
    if DECODE_TIME_SAFETY * by_bytes * 1e-9 > over:
        return math.inf
    scans = 1
    if data[:3] == b"\xff\xd8\xff":  # what Pillow opens as a JPEG
        layout = jpeg_layout(data)
        if layout is None or layout.sof not in _HUFFMAN_SOF:
            return None
        size: tuple[int, int] | None = (layout.width, layout.height)
        scans = max(1, layout.scans)
    else:
        size = png_size(data) or webp_still_size(data)
    if size is None:
        return None
    pixels = size[0] * size[1]
    return DECODE_TIME_SAFETY * (pixels * (DECODE_PIXEL_NS + DECODE_SCAN_NS * scans) + by_bytes) * 1e-9


def decode_cost(width: int, height: int, mode: str, transposed: bool = False, held: int = 0) -> int:
    """Bytes a decode of this size and mode holds at its peak: Pillow's buffer, the RGB array,
    when EXIF orientation applies the transposed copy of the buffer, and `held`: what the decoder
    itself keeps whatever the output size (`Held`)."""
    storage = _STORAGE.get(mode, 4)
    return width * height * (storage + 3 + (storage if transposed else 0)) + _STRIP_COST + held


def _check_budget(image: Image.Image, orientation: int, budget: int, held: Held = Held(),
                  copied: bool = False) -> None:
    w, h = image.size  # a clean-aperture crop, or Pillow's own turn, copies the buffer like ours
    cost = decode_cost(w, h, image.mode, orientation != 1 or copied, held.bytes)
    if cost > budget:
        of_which = f": {held.bytes >> 20} MiB are {held.what}" if held.bytes else ""
        raise DecodeError("image_too_large", f"{w}x{h} {image.mode} needs about {cost >> 20} MiB to decode, "
                                             f"over the budget of {budget >> 20} MiB{of_which}")


def _check_embedded(data: bytes, max_pixels: int, budget: int) -> None:
    """An icon container judged on the images it embeds, as their own headers declare them: Pillow
    sizes an ICO or ICNS from its directory, then decodes the embedded PNG or bitmap whatever its
    size (inside `pixels_judged_here`, its own bomb check in IcoFile.frame is lifted)."""
    for image in embedded_images(data):
        w, h = image.width, image.height
        if w * h > max_pixels:
            raise DecodeError("decompression_bomb", f"an embedded {image.kind} of {w}x{h} exceeds max_pixels={max_pixels}")
        cost = decode_cost(w, h, "RGBA", held=w * h * _EMBEDDED_EXTRA.get(image.kind, 0))
        if cost > budget:
            raise DecodeError("image_too_large", f"an embedded {image.kind} of {w}x{h} needs about {cost >> 20} MiB "
                                                 f"to decode, over the budget of {budget >> 20} MiB")


def _jpeg_held(data: bytes) -> Held:
    """A JPEG's coefficient buffer (`coefficient_bytes`); a JPEG of more than `MAX_JPEG_SCANS`
    scans is refused here, before its decode time is spent."""
    layout = jpeg_layout(data)
    if layout is None:
        return Held()
    if layout.scans > MAX_JPEG_SCANS:
        raise DecodeError("too_many_scans", f"a {layout.width}x{layout.height} JPEG of more than {MAX_JPEG_SCANS} "
                                            f"scans (real encoders write at most a few dozen)")
    kind = "progressive" if layout.progressive else "multi-scan"
    return Held(coefficient_bytes(layout), f"the DCT coefficients of a {layout.width}x{layout.height} {kind} JPEG, "
                                           f"held at any decode scale")


def _dct_scalable(image: Image.Image, data: bytes) -> bool:
    """Whether libjpeg can decode this image at 1/2, 1/4 or 1/8 scale: a JPEG (or MPO) whose frame is
    DCT-coded. A lossless JPEG has no DCT: asked for a reduced decode, libjpeg-turbo wrote its
    full-size rows into Pillow's reduced buffer (the decoding process died, or read garbage)."""
    if image.format not in _DCT_SCALED:
        return False
    layout = jpeg_layout(data)
    return layout is not None and not marker_lossless(layout.sof)


def _avif_held(image: Image.Image, data: bytes) -> Held:
    planes = avif_planes(data)
    per_pixel = sum(p.bytes_per_pixel + _AV1_DECODER_BYTES for p in planes) if planes else _AVIF_UNREAD
    w, h = image.size
    return Held(int(w * h * (per_pixel + len(image.getbands()))) + _AVIF_FIXED + _tone_map_bytes(image, data),
                "the AVIF decoder's working buffers (YUV planes, the RGB copy)")


def _tone_map_bytes(image: Image.Image, data: bytes) -> int:
    """What tone-mapping an HDR AVIF/HEIF adds (`_in_srgb`): its output and one float32 band."""
    w, h = image.size
    return w * h * 3 + hdr.BAND_BYTES if hdr_colour(image, data) else 0


_TILE_WIDTH, _TILE_LENGTH, _BITS_PER_SAMPLE, _SAMPLES_PER_PIXEL = 322, 323, 258, 277


def _tag_numbers(value: object) -> tuple[int, ...]:
    """A TIFF tag's value as Pillow parsed it (a number, or a tuple of them) as whole numbers."""
    values = value if isinstance(value, tuple) else (value,)
    try:
        return tuple(max(0, int(v)) for v in values)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return ()


def _tiff_pixel_bytes(tags: Mapping[int, object]) -> int:
    """The bytes of one pixel of a TIFF's tile as libtiff sizes it (TIFFTileSize): the widest
    BitsPerSample times SamplesPerPixel (by default, one sample a BitsPerSample value), or the 4 of
    libtiff's RGBA reading, whichever is more. BitsPerSample may be written once for all samples
    (count 1): a 16-bit RGBA tile so written was judged at 4 bytes a pixel, where libtiff holds 8."""
    bits = _tag_numbers(tags.get(_BITS_PER_SAMPLE, 8)) or (8,)
    samples = (_tag_numbers(tags.get(_SAMPLES_PER_PIXEL, len(bits))) or (len(bits),))[0]
    return max(4, -(-max(bits) * samples // 8))


def _tiff_held(image: Image.Image) -> Held:
    """The tile Pillow's libtiff decoder (every compressed TIFF) decodes a tiled TIFF into: one whole
    tile of the declared TileWidth x TileLength whatever the image's size, at `_tiff_pixel_bytes`.
    libtiff fills a tile its data falls short of, so a 120 x 90 TIFF declaring 16384 x 16384 tiles
    (a mutation fuzz) took 800 MB to decode, judged 25. Uncompressed tiles Pillow reads itself,
    clipped to the image; a strip libtiff sizes to the image's rows."""
    tags = getattr(image, "tag_v2", None)
    if tags is None or _TILE_WIDTH not in tags or not image.tile or image.tile[0][0] != "libtiff":
        return Held()
    width, length = (sum(_tag_numbers(tags.get(tag))) for tag in (_TILE_WIDTH, _TILE_LENGTH))
    return Held(width * length * _tiff_pixel_bytes(tags), f"the {width}x{length} tile libtiff decodes this TIFF into")


def _held(image: Image.Image, data: bytes) -> Held:
    """What the decoder of this opened image holds besides Pillow's buffer (`Held`)."""
    if image.format in _DCT_SCALED:
        return _jpeg_held(data)
    if image.format == "TIFF":
        return _tiff_held(image)
    if image.format == "AVIF":
        return _avif_held(image, data)
    if image.format == "HEIF":  # libheif's own buffers are not judged; an HDR photo's tone-mapping is
        tone_map = _tone_map_bytes(image, data)
        return Held(tone_map, "the HDR tone-mapping (output, float32 band)") if tone_map else Held()
    if image.format == "PNG":
        return _wide_held(image, data)
    working = _WORKING.get(image.format or "")
    if working is None:
        return Held()
    w, h = image.size
    return Held(w * h * working(len(image.getbands())), f"the {image.format} decoder's working buffers")


# formats whose opened image knows its frame count from what it read to open it: libwebp's
# demuxer, libavif's and libheif's image lists (GIF's and TIFF's Pillow counts by seeking through
# every frame or IFD, an APNG's it takes from the acTL, which may be anything: those are walked in
# the bytes, `headers.gif_frames`, `tiff_pages`, `png_frames`)
# Pillow counts these at open: WebP's, AVIF's and HEIF's frames, an MPO's pictures (a phone's JPEG
# with a second one, its MP index: the first is the photo, as Pillow's default frame)
_FRAMES_KNOWN_AT_OPEN = ("WEBP", "AVIF", "HEIF", "MPO")


def pages_of(image: Image.Image, data: bytes) -> Pages:
    """How many pages (a TIFF's) or frames (an animated GIF's, APNG's, WebP's, an AVIF's image
    sequence) or pictures (an MPO's, an icon's) the opened file holds, judged without decoding any:
    the image is its first, as `convert F[0]` shows (an icon's largest, as Pillow decodes it), and
    the sentence header says how many there were (`uvd_pipeline.render`)."""
    if image.format == "GIF":
        return gif_frames(data)
    if image.format == "TIFF":
        return tiff_pages(data)
    if image.format == "PNG":
        return png_frames(data)
    if image.format == "ICO":  # its directory's images: the largest is decoded, as Pillow's default
        return Pages(max(icon_entries(data), 1))
    if image.format in _FRAMES_KNOWN_AT_OPEN:
        count = getattr(image, "n_frames", 1)
        return Pages(count) if isinstance(count, int) and count > 1 else Pages()
    return Pages()


def _png_exif(data: bytes) -> bytes | None:
    """The eXIf chunk of a PNG, found by walking chunk headers (Pillow's `getexif` would decode
    every pixel to reach a chunk stored after them, before any budget check). One whose CRC fails
    is None, as the decode reads it (`without_png_text` refuses such a PNG)."""
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"eXIf":
            end = pos + 12 + length
            whole = zlib.crc32(data[pos + 4 : end - 4]) == int.from_bytes(data[end - 4 : end], "big")
            return data[pos + 8 : end - 4] if whole and end <= len(data) else None
        if kind == b"IEND":
            return None
        pos += 12 + length
    return None


@functools.cache
def pillow_turns_tiffs() -> bool:
    """Whether this Pillow turns a TIFF by its Orientation tag itself: Pillow 12's TiffImagePlugin
    reports the turned size from the open and turns the pixels as it loads them (`load_end`)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    buf = io.BytesIO()
    Image.new("L", (2, 1)).save(buf, "TIFF", exif=exif.tobytes())
    with Image.open(buf) as probe:
        opened = probe.size
        probe.load()
        return opened == probe.size == (1, 2)


def _turned_on_load(image: Image.Image) -> bool:
    """Whether Pillow turns this opened image by its EXIF orientation as it loads it: the turn is
    then not ours to make (a TIFF of orientation 6 was planned on its size turned twice), though it
    still copies Pillow's buffer (`decode_cost`)."""
    if image.format != "TIFF" or not pillow_turns_tiffs():  # asked once, at the first TIFF
        return False
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1)) in range(2, 9)
    except Exception:
        return False


def _orientation(image: Image.Image, data: bytes) -> int:
    """The EXIF orientation (1-8) to apply after decoding; 1 for an image Pillow turns itself as it
    loads it (`_turned_on_load`: a TIFF, whose size it reports turned). An AVIF's or HEIF's is its container's
    `irot`/`imir` only: the HEIF spec has readers ignore EXIF and XMP orientation there. libheif
    (pillow-heif) applies irot/imir itself and resets the EXIF tag to 1; Pillow's AVIF plugin
    writes irot/imir as the EXIF tag of `info["exif"]` (over a contradicting one) and leaves the
    pixels as coded. `getexif` would also read an XMP `tiff:Orientation` when `info["exif"]` has
    none: an AVIF with no irot but such an XMP packet was turned, where libheif (heif-convert)
    shows it as coded."""
    if image.format == "HEIF" or _turned_on_load(image):
        return 1
    try:
        if image.format in ("PNG", "AVIF"):
            raw = image.info.get("exif") or (_png_exif(data) if image.format == "PNG" else None)
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = image.getexif()
        value = int(exif.get(EXIF_ORIENTATION, 1))
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def _aperture(image: Image.Image, data: bytes) -> tuple[int, int, int, int] | None:
    """The box of the opened image that is the picture, None for the whole: an AVIF's clean
    aperture (`clap`): libheif crops a HEIF itself, but Pillow's AVIF plugin hands over the whole
    coded frame (an AVIF whose clap keeps 200 x 160 of 320 x 240 was decoded 320 x 240, where
    heif-convert gives the crop); a GIF's logical screen (`_gif_screen_box`)."""
    if image.format == "AVIF":
        return clean_aperture(data, *image.size)
    return _gif_screen_box(image, data) if image.format == "GIF" else None


def _gif_screen_box(image: Image.Image, data: bytes) -> tuple[int, int, int, int] | None:
    """A GIF's logical screen, when its first frame reaches past it: Pillow grows its canvas to
    hold the frame (a 32 x 24 frame at +10+6 of a 32 x 24 screen was decoded 42 x 30), where
    ImageMagick's `-coalesce` and browsers show the screen, the frame cut at its edge. A screen
    declared 0 x 0 (some writers') is no box: the frame is then the picture."""
    screen = gif_screen(data)
    if screen is None or min(screen) < 1 or (screen[0] >= image.width and screen[1] >= image.height):
        return None
    return 0, 0, min(screen[0], image.width), min(screen[1], image.height)


def _cropped(image: Image.Image, box: tuple[int, int, int, int] | None) -> Image.Image:
    """The loaded image cut to `box`, keeping its `format` (`hdr_colour` reads it). The HEIF
    spec applies clap before irot/imir, so this comes before `_oriented`."""
    if box is None:
        return image
    cut = image.crop(box)
    cut.format = image.format
    return cut


# the turn that shows an image of each EXIF orientation (as `ImageOps.exif_transpose` makes it)
_TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_90}


def _oriented(image: Image.Image, orientation: int) -> Image.Image:
    """The loaded image turned by its EXIF `orientation` (the one the plan was made with), keeping
    the opened image's `format`: `hdr_colour` reads it, and Pillow's transposed copy has none (a
    rotated HDR AVIF, whose irot/imir reach Pillow as EXIF, was shown untone-mapped). Turned by
    `transpose`, not `ImageOps.exif_transpose`, which also writes the EXIF back without its
    Orientation: a tag of a non-standard type (a FLOAT ResolutionUnit) raised struct.error
    there. The caller drops the opened image, so one Pillow buffer stays beside the RGB array
    (`decode_cost`)."""
    if orientation not in _TURNS:
        return image
    turned = image.transpose(_TURNS[orientation])
    turned.format = image.format
    return turned


# the axes of the shown image that an EXIF orientation reverses from the coded one's, (x, y)
_REVERSED_AXES = {2: (True, False), 3: (True, True), 4: (False, True), 6: (True, False), 7: (True, True),
                  8: (False, True)}


def _plan_at_scale(plan: ResizePlan, shape: tuple[int, ...], scale: int, orientation: int) -> ResizePlan:
    """`plan` for a JPEG decoded at 1/`scale` (DCT scaling) and turned by `orientation`: a coded
    pixel j of the reduced image shows input pixels [j * scale, (j + 1) * scale), its last column
    and row partly the encoder's padding (1207 = 150 x 8 + 7), and that column or row comes first
    on an axis the turn reverses. Stretched uniformly over the input, the canvas was moved by up
    to 7/8 of a reduced pixel (27 dB from the full decode)."""
    if scale == 1:
        return plan
    h, w = shape[:2]
    flip_x, flip_y = _REVERSED_AXES.get(orientation, (False, False))
    shift = (w - plan.in_w / scale if flip_x else 0.0, h - plan.in_h / scale if flip_y else 0.0)
    return plan.for_scaled_input(h, w, (1 / scale, 1 / scale), shift)


def _cut_short(data: bytes) -> bool:
    """Whether the file is shorter than its container says (`declared_length`)."""
    declared = declared_length(data)
    return declared is not None and declared > len(data)


def _raise_if_cut_short(data: bytes) -> None:
    """`truncated` for a file shorter than its container says (`declared_length`): what Pillow
    says of a cut WebP, AVIF, TIFF or icon names no truncation ("could not create decoder object",
    or no format at all)."""
    declared = declared_length(data)
    if declared is not None and declared > len(data):
        raise DecodeError("truncated", f"the file is cut short: it holds {len(data)} of the {declared} or more "
                                       f"bytes it declares")


def _load(image: Image.Image, data: bytes) -> None:
    try:
        image.load()
    except OSError as exc:
        text = str(exc)
        if image.format == "TIFF" and "truncated" in text and not _cut_short(data):
            raise DecodeError("decode_error", f"damaged: the file holds every byte its IFD declares, yet its "
                                              f"pixels do not decode: {text}"[:200]) from None
        if "truncated" in text or "broken data stream" in text:
            raise DecodeError("truncated", text[:200]) from None
        _raise_if_cut_short(data)
        raise _load_failure(image, text, data) from None
    except Exception as exc:
        _raise_if_cut_short(data)
        raise _load_failure(image, exception_detail(exc, limit=None), data) from None


def _load_failure(image: Image.Image, text: str, data: bytes) -> DecodeError:
    """A TIFF that opens but will not load uses a sample layout Pillow lacks (planar 16-bit RGBA,
    say): a real image we cannot decode (`unsupported_format`), not a broken file; named by the
    samples its tags declare (`tiff_samples`), Pillow's mode when they cannot be read."""
    if image.format == "TIFF":
        samples = tiff_samples(data) or image.mode
        return DecodeError("unsupported_format", f"TIFF ({samples}, a sample layout Pillow cannot read): {text}"[:200])
    return DecodeError("decode_error", text[:200])


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


def hdr_colour(image: Image.Image, data: bytes) -> tuple[str, np.ndarray | None] | None:
    """("pq" or "hlg", its primaries' matrix to BT.709) for an AVIF or HEIF photo that declares an
    HDR transfer by its nclx colour box and carries no ICC profile (which would say how to show it
    instead), else None. One walk of the file's boxes."""
    if image.format not in ("AVIF", "HEIF") or image.info.get("icc_profile"):
        return None
    nclx = nclx_colour(data)
    transfer = hdr.transfer_name(nclx.transfer) if nclx is not None else None
    return (transfer, hdr.primaries_matrix(nclx.primaries)) if transfer and nclx else None



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
    description ("" when there was nothing to convert). A PQ or HLG AVIF/HEIF (`hdr_colour`) is
    tone-mapped to SDR as HDR video is (`transforms.hdr`): its decoder gives the non-linear HDR
    signal, shown as is it looks washed out and dim. (A PNG's gAMA and cHRM: `_srgb_array`.)"""
    if image.mode not in _RGB_PROFILED_MODES:
        return to_rgb_array(image), ""
    colour = hdr_colour(image, data)
    if colour is not None:
        transfer, primaries = colour
        return (hdr.tone_map_pixels(to_rgb_array(image), transfer, primaries),
                f"HDR {transfer.upper()} (nclx), tone-mapped")
    conversion = srgb_conversion(image.info.get("icc_profile"))
    if conversion.transform is not None and _has_alpha(image):
        return _converted_on_white(image, functools.partial(convert_to_srgb, conversion=conversion)), \
            conversion.description
    return convert_to_srgb(to_rgb_array(image), conversion), conversion.description


# PNG colour types whose 16-bit samples Pillow cuts to 8 bits as it loads them: RGB, grey+alpha, RGBA
_CUT_TO_8 = (2, 4, 6)
_GREY_ALPHA = 4  # the PNG colour type Pillow opens as "RGBA" at 16 bits (its grey profile: `_wide_colour`)
# 16-bit (h, W, 3) RGB samples (grey ones repeated) -> uint8 sRGB, and what it converts from
WideColour = tuple[Callable[[np.ndarray], np.ndarray], str]


def _through(table: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Samples mapped by a `Curve`'s table: of levels (1-D), or of a grey's colours (2-D)."""
    return (lambda samples: table[samples]) if table.ndim == 1 else (lambda samples: table[samples[..., 0]])


def _wide_colour(image: Image.Image, data: bytes) -> WideColour | None:
    """How a 16-bit RGB, RGBA or grey+alpha PNG that Pillow cuts to 8 bits (`_CUT_TO_8`, no tRNS
    colour key) is taken to sRGB from its 16 bits: by its cHRM (`_png_chromaticities`), its gAMA
    (`_png_gamma`), or a grey+alpha one's grey ICC profile; None for none of them."""
    header = png_header(data) if image.format == "PNG" else None
    if header is None or header[0] != 16 or header[1] not in _CUT_TO_8 or "transparency" in image.info:
        return None
    primaries = _png_chromaticities(image)
    if primaries is not None:
        return functools.partial(primaries.apply, bits=16), primaries.description
    gamma = _png_gamma(image)
    table = gamma_table(gamma, 16) if gamma is not None else None
    if table is not None:
        return _through(table), f"PNG gAMA {gamma:g}"
    icc = image.info.get("icc_profile")
    grey = grey_profile(icc) if header[1] == _GREY_ALPHA and isinstance(icc, bytes) else ""
    table = grey_table(icc, 16) if grey else None  # type: ignore[arg-type]
    return (_through(table), grey) if table is not None else None


def _wide_held(image: Image.Image, data: bytes) -> Held:
    """What `_wide` holds: OpenCV's 16-bit samples (2 bytes each, alpha included) and, for an
    image EXIF turns, the turned copy of its result."""
    if _wide_colour(image, data) is None:
        return Held()
    w, h = image.size
    return Held(w * h * (2 * (3 if png_header(data) == (16, 2) else 4) + 3),
                "the 16-bit samples of a gAMA, cHRM or grey-profiled PNG (OpenCV's decode)")


def _wide(image: Image.Image, data: bytes, orientation: int) -> tuple[np.ndarray, str] | None:
    """A 16-bit RGB, RGBA or grey+alpha PNG's colour taken to sRGB from its 16-bit samples
    (`_wide_colour`; OpenCV decodes them as stored: no gamma, no EXIF turn), then its 16-bit alpha
    composited on white, then turned by `orientation`, and what it was converted from: Pillow
    hands over 8-bit samples, whose linear shadows (gAMA 1.0) came out up to 12 levels from the
    specification's decoding (a ProPhoto cHRM's 9, a linear grey profile's 29). None when none
    applies or OpenCV does not give 16-bit samples (the 8-bit path then converts)."""
    found = _wide_colour(image, data)
    if found is None:
        return None
    colour, description = found
    wide = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if wide is None or wide.dtype != np.uint16 or wide.ndim != 3 or wide.shape[2] not in (3, 4):
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


def _decoded_srgb(image: Image.Image, data: bytes, orientation: int,
                  box: tuple[int, int, int, int] | None) -> tuple[np.ndarray, str]:
    """The opened image decoded, cut to `box`, turned by `orientation`, in sRGB (`_srgb_array`),
    and the profile it was converted from. A 16-bit PNG converted from its 16-bit samples
    (`_wide`) is decoded by OpenCV alone: Pillow's load of its 8-bit cut was a second full decode,
    thrown away (0.28 s became 0.56 s at 2000 x 1500). A file OpenCV cannot decode goes to Pillow,
    whose reject says why."""
    wide = _wide(image, data, orientation)
    if wide is not None:
        return wide
    _load(image, data)
    image = _cropped(image, box)
    image = _oriented(image, orientation)
    return _srgb_array(image, data)


def _srgb_array(image: Image.Image, data: bytes) -> tuple[np.ndarray, str]:
    """The loaded image as (H, W, 3) uint8 sRGB (`to_rgb_array`, `_in_srgb`) and the profile it
    was converted from; a CMYK image with a CMYK profile converted by it
    (`transforms.colour_profile`): Pillow's conversion ignores the profile. A PNG's cHRM, or its
    gAMA, when it has no profile and no sRGB chunk, is applied to its colour (grey ones too)
    before its alpha is composited (`to_rgb_array`, `_converted_on_white`), as is a grey image's
    grey ICC profile (`colour_profile.grey_table`: it was ignored, a linear grey shown up to 70
    levels too dark). (A 16-bit PNG's samples that Pillow cuts to 8 bits are converted from their
    16 bits before this, by `_wide`: here only when OpenCV could not decode them.)"""
    if image.mode == "CMYK":
        conversion = srgb_conversion(image.info.get("icc_profile"), "CMYK")
        if conversion.transform is not None:
            return cmyk_to_srgb(image, conversion), conversion.description
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


@pixels_judged_here()
def decode_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_bytes: int = DEFAULT_MAX_DECODE_BYTES) -> np.ndarray:
    """Full-resolution decode to (H, W, 3) uint8 with EXIF orientation applied."""
    image = _open(data, max_pixels, max_bytes)
    held = _held(image, data)
    orientation = _orientation(image, data)
    box = _aperture(image, data)
    _check_budget(image, orientation, max_bytes, held, box is not None or _turned_on_load(image))
    return _decoded_srgb(image, data, orientation, box)[0]


def decode_through(data: bytes, plan: ResizePlan, max_pixels: int = DEFAULT_MAX_PIXELS, pad_value: int = 0,
                   max_bytes: int = DEFAULT_MAX_DECODE_BYTES) -> np.ndarray:
    """Another image of the same scene (a stereo pair's right view) at full resolution, through the
    plan made on its image: the canvas; `size_mismatch` when its size is not the plan's input size."""
    rgb = decode_rgb(data, max_pixels, max_bytes)
    if rgb.shape[:2] != (plan.in_h, plan.in_w):
        raise DecodeError("size_mismatch", f"{rgb.shape[1]}x{rgb.shape[0]} vs {plan.in_w}x{plan.in_h}")
    return plan.apply_image(rgb, pad_value=pad_value)


@pixels_judged_here()
def load_image(
    data: bytes,
    size: int,
    policy: ResizePolicy,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    pad_value: int = 0,
    fast: bool = True,
    max_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> DecodedImage:
    """Decode `data` straight onto a size x size canvas (the ingest hot path).

    With `fast` a DCT-coded JPEG (`_dct_scalable`) decodes at the smallest DCT scale that still
    covers the canvas. Without it the decode is at full resolution (ground-truth geometry is exact
    on it), unless the image is over the memory budget: such a JPEG then decodes at the mildest scale that fits (the
    plan stays in original coordinates, so annotations still land within a reduced pixel),
    any other format is rejected `image_too_large`."""
    image = _open(data, max_pixels, max_bytes)
    held = _held(image, data)
    fmt = image.format or "unknown"
    pages = pages_of(image, data)
    orientation = _orientation(image, data)
    box = _aperture(image, data)
    raw_w, raw_h = (box[2] - box[0], box[3] - box[1]) if box else image.size
    swapped = orientation in (5, 6, 7, 8)
    width, height = (raw_h, raw_w) if swapped else (raw_w, raw_h)
    plan: ResizePlan = plan_resize(height, width, size, policy)
    request = None
    scalable = _dct_scalable(image, data)
    if scalable and fast:
        need_w, need_h = needed_input_size(plan)
        request = (need_h, need_w) if swapped else (need_w, need_h)
    elif scalable and decode_cost(raw_w, raw_h, image.mode, orientation != 1, held.bytes) > max_bytes:
        for scale in (2, 4, 8):
            w, h = -(-raw_w // scale), -(-raw_h // scale)
            if decode_cost(w, h, image.mode, orientation != 1, held.bytes) <= max_bytes:
                request = (w, h)
                break
    reduced = 1
    if request is not None:
        drafted = image.draft(image.mode, request)
        reduced = round(raw_w / drafted[1][2]) if drafted else 1  # its box: the input's extent at that scale
    _check_budget(image, orientation, max_bytes, held, box is not None or _turned_on_load(image))
    rgb, profile = _decoded_srgb(image, data, orientation, box)  # before the resize: it blends sRGB values
    pixels = _plan_at_scale(plan, rgb.shape, reduced, orientation).apply_image(rgb, pad_value=pad_value)
    return DecodedImage(pixels, width, height, fmt, reduced, plan, profile, pages)
