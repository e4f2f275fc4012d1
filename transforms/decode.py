"""Decode any image file to RGB uint8, and onto the square canvas in one step.

Whatever the input (EXIF-rotated JPEG, grayscale, CMYK, palette, alpha, 16-bit), the output is
RGB uint8, in sRGB (an embedded RGB colour profile is converted: `transforms.colour_profile`;
colour declared by code points, an AVIF/HEIF's nclx box or a PNG's cICP: `transforms.coded_colour`).
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
`av1C` boxes declare) and OpenCV's 16-bit samples of a gAMA, cHRM, grey or RGB ICC-profiled PNG, or an ICC-profiled TIFF, that Pillow cuts to 8 bits (`_wide`);
and an icon container is judged on the images it embeds, which Pillow
decodes at their own declared size (an ICO's inside `Image.open`). A JPEG's decode time grows with
its scans (each walks every block of its components): over `MAX_JPEG_SCANS` it is rejected
`too_many_scans` before decoding; one of more than `MAX_EXIF_SEGMENTS` APP1 Exif segments, which
Pillow's open joins in time growing with their number squared, `too_many_exif_segments`.

Time is judged from the declaration too where the format allows (`declared_decode_s`): a JPEG
(Huffman-coded), PNG or still WebP decodes in at most so many CPU seconds for its pixels, scans and
bytes. The build decodes in its own process only what that bounds within its limit, and the rest
in a process it kills at the limit (`uvd_pipeline.image_decode`).

A JPEG damaged inside its scan decodes without an error, garbled past the damage: libjpeg's own
count of its warnings, read from Pillow's decoder (`jpeg_warnings`), makes it a `decode_error`,
unless each warning is one that loses no pixel (a camera's zero padding before a marker). A Deflate
TIFF damaged inside a strip decodes the same way (libtiff stops inflating once the rows are full,
never checking the stream's end or adler32): each strip of the decoded IFD is inflated again,
bounded (`deflate_strips`); a JPEG TIFF's strips as whole JPEGs, libjpeg's warnings counted, which
libtiff keeps to itself (`tiff_jpeg`). A whole PNG or GIF (its IEND, its trailer) whose data fails to decode
is damaged, not cut short. A file cut, then padded with zeros to its length (a failed or
preallocated download) meets its container's length: an AVIF or HEIC whose coded data ends in
zeros, an RLE BMP with no end-of-bitmap escape before them, is `truncated` before it is opened
(`image_format.raise_if_zeros_after_cut`); other formats' whole files may end in zeros (a
lossless WebP's black band, a JPEG missing only its EOI), so theirs are not judged.

This module opens and decodes (`load_image`, `decode_rgb`, `decode_through`) and offers every
name it did before; its parts, one job each: `decode_budget` (memory and time judged from the
header), `png_chunks` (a PNG's chunks read before Pillow), `image_format` (what an unopened file
is, a cut file), `image_orientation` (the EXIF turn, crop boxes, the DCT-scaled plan),
`image_colour` (to sRGB), `coded_colour` (what nclx and cICP declare), `container_icc` (a JP2's,
GIF's or BMP's profile, which Pillow drops), `rgb_array` (any mode to RGB, alpha on white), `image_pages` (pages
and frames counted), `deflate_strips` (a Deflate TIFF's strips whole).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image, JpegImagePlugin, UnidentifiedImageError

from transforms.decode_budget import (
    _STRIP_COST,
    DECODE_BYTE_NS,
    DECODE_PIXEL_NS,
    DECODE_SCAN_NS,
    DECODE_TIME_SAFETY,
    MAX_JPEG_SCANS,
    TIFF_VALUE_BYTES,
    Held,
    _check_budget,
    _check_embedded,
    check_header_held,
    _dct_scalable,
    _held,
    decode_cost,
    declared_decode_s,
)
from transforms import jpeg2000, jpeg_warnings, tiff_jpeg
from transforms.container_icc import container_profile
from transforms.errors import DecodeError, exception_detail
from transforms.deflate_strips import DEFLATE, deflate_damage
from transforms.headers import (JpegHeader, Pages, camera_raw, gif_ends_whole, heif_size, jpeg_ends_whole, jpeg_header,
                                png_ends_whole, png_size, tiff_samples)
from transforms.image_colour import WideColour, _srgb_array, _wide, hdr_colour
from transforms.image_format import (_cut_short, _raise_if_cut_short, fits_misread, pillow_reads_psd, psd_header_cut,
                                     raise_if_zeros_after_cut, sniff_format, sniff_video)
from transforms.pillow_open import open_input
from transforms.xpm_colours import xpm_for_pillow
from transforms.image_orientation import (
    EXIF_ORIENTATION,
    _aperture,
    _cropped,
    _orientation,
    _oriented,
    _plan_at_scale,
    _turned_on_load,
    pillow_turns_tiffs,
)
from transforms.image_pages import pages_of
from transforms.png_chunks import (
    _PNG_SIGNATURE,
    MAX_PNG_PROFILE,
    _png_exif,
    _png_refusal,
    png_profile_past_pillow,
    without_png_text,
)
from transforms.resize import ResizePlan, ResizePolicy, needed_input_size, plan_resize
from transforms.rgb_array import STRIP_PIXELS, WHITE, Curve, pixels, to_rgb_array

# the names this module has always offered (the build, `transforms.maps`, the trainer, tests)
__all__ = [
    "DECODE_BYTE_NS", "DECODE_PIXEL_NS", "DECODE_SCAN_NS", "DECODE_TIME_SAFETY", "DEFAULT_MAX_DECODE_BYTES",
    "DEFAULT_MAX_PIXELS", "EXIF_ORIENTATION", "MAX_JPEG_SCANS", "MAX_PNG_PROFILE", "STRIP_PIXELS", "TIFF_VALUE_BYTES",
    "WHITE", "Curve", "DecodeError", "DecodedImage", "Held", "WideColour", "_STRIP_COST", "_png_exif",
    "decode_cost", "decode_rgb", "decode_through", "declared_decode_s", "hdr_colour", "load_image", "pages_of",
    "pillow_turns_tiffs", "pixels", "pixels_judged_here", "png_profile_past_pillow", "sniff_format", "to_rgb_array",
    "without_png_text",
]

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


def _open(data: bytes, max_pixels: int, max_bytes: int, header: JpegHeader | None = None) -> Image.Image:
    if not data:
        raise DecodeError("empty_file")
    _check_embedded(data, max_pixels, max_bytes)  # before Image.open: an ICO is decoded inside it
    raise_if_zeros_after_cut(data, max_pixels, max_bytes)  # libavif, libde265, libpng decode a cut one's zeros silently
    declared = heif_size(data)  # before Image.open: libavif's refusal read as "cannot decode AVIF"
    if declared and declared[0] * declared[1] > max_pixels:
        raise DecodeError("decompression_bomb", f"{declared[0]}x{declared[1]} exceeds max_pixels={max_pixels}")
    check_header_held(data, max_bytes, header)  # before Image.open: a TIFF's numbers, a JPEG's APPn and COM segments
    opened = xpm_for_pillow(without_png_text(data))  # outside the try: its own `corrupt_header` stands as it is
    try:
        image = _opened(opened)
    except UnidentifiedImageError:
        _raise_if_video(data)
        _raise_if_cut_short(data)
        known = sniff_format(data)
        if known and psd_header_cut(data):
            raise DecodeError("corrupt_header", f"{known}: {len(data)} bytes") from None
        if known and pillow_reads_psd(data):
            raise DecodeError("corrupt_header", f"{known}: damaged or cut short (Pillow reads this layout, not this "
                                                "file)") from None
        if known:
            raise DecodeError("unsupported_format", f"{known}: a real image format this build cannot decode") from None
        declared = png_size(data)
        if declared and min(declared) == 0:  # Pillow's PNG reader refuses it ("not identified by this driver")
            raise DecodeError("no_pixels", f"{declared[0]}x{declared[1]}") from None
        if data.startswith(_PNG_SIGNATURE):  # Pillow's PNG reader refused it (a critical chunk's bad CRC)
            raise DecodeError("corrupt_header", _png_refusal(data)) from None
        # the detail never quotes the bytes: a text file read by mistake must not be published
        raise DecodeError("not_an_image", f"no image format recognises these {len(data)} bytes") from None
    except Exception as exc:  # Pillow raises many types on broken headers
        _raise_if_video(data)
        _raise_if_cut_short(data)
        known = sniff_format(data)
        if known and (known.startswith("TIFF") or "camera raw" in known):  # a layout Pillow has no raw mode for
            raise DecodeError("unsupported_format", exception_detail(exc, f"{known}: ")) from None
        raise DecodeError("corrupt_header", exception_detail(exc)) from None
    if image.format == "MPEG":  # Pillow names an MPEG video stream's frame size, then has no decoder for it
        _raise_if_video(data)
    misread = fits_misread(data) if image.format == "FITS" else None
    if misread:
        raise DecodeError("unsupported_format", f"{misread}: a real image format this build cannot decode")
    raw = camera_raw(data) if image.format == "TIFF" else None
    if raw:  # Pillow opened the camera's preview in IFD0: never the photo, whatever its size
        raise DecodeError("unsupported_format", f"{raw}: a camera raw this build cannot develop "
                                                f"(its embedded preview is not the photo)")
    if image.format == "PNG" and "icc_profile" not in image.info:
        profile = png_profile_past_pillow(data)  # taken out for Pillow by `without_png_text`
        if profile:
            image.info["icc_profile"] = profile
    if "icc_profile" not in image.info:
        profile = container_profile(image.format, data)  # a JP2's, GIF's or BMP's, which Pillow drops
        if profile:
            image.info["icc_profile"] = profile
    w, h = image.size
    if w < 1 or h < 1:
        raise DecodeError("no_pixels", f"{w}x{h}")
    if w * h > max_pixels:
        raise DecodeError("decompression_bomb", f"{w}x{h} exceeds max_pixels={max_pixels}")
    return image


def _raise_if_video(data: bytes) -> None:
    """A video container in an image source (a Kinetics tree read as `type: laion`, a clip in a
    photo folder) was "a real image format this build cannot decode" (MP4) or `not_an_image` (WebM,
    MKV, AVI): its reject names the container and the source type that reads it."""
    video = sniff_video(data)
    if video:
        raise DecodeError("unsupported_format", f"{video}: a video file, not an image; a type: video source "
                                                "reads it") from None


def _opened(data: bytes) -> Image.Image:
    """Pillow's image of `data`, through the readers that run no other program (`open_input`:
    never Ghostscript). A JPEG whose MPF index (APP2) Pillow cannot read is opened as the plain
    JPEG it is: Pillow's JPEG opener reads the index to make an MPO of it, and one listing fewer
    entries than its NumberOfImages says (50 for 2) failed inside it, so no reader took the file
    (`not_an_image`), where ffmpeg, ImageMagick and browsers show its first picture. Only where
    that index is what failed: any other refusal stands as Pillow's."""
    try:
        return open_input(io.BytesIO(data), segments_counted=True)  # _open ran check_header_held
    except UnidentifiedImageError:
        if data[:3] != b"\xff\xd8\xff":
            raise
        try:
            image = JpegImagePlugin.JpegImageFile(io.BytesIO(data))
        except Exception:
            raise UnidentifiedImageError("no reader takes these bytes") from None
        if "mp" not in image.info:
            raise UnidentifiedImageError("no reader takes these bytes") from None
        return image


def _load(image: Image.Image, data: bytes) -> None:
    with jpeg_warnings.collecting() as decoders:
        _load_reported(image, data)
    problem = _tiff_problem(image, data)
    if problem:  # it decoded, garbled past the damage: libtiff stopped inflating once its rows were full
        raise DecodeError(problem[0], f"{problem[1]}: libtiff decoded its pixels garbled past it, without a word")
    damage = jpeg_warnings.scan_warnings(decoders[-1], data) if decoders else None
    verdict = jpeg_warnings.judge(data) if damage else "padding"
    if verdict == "unused":  # all its rows decoded without a word, then bytes libjpeg skipped to its end of image
        raise DecodeError("decode_error", "bytes before its end of image the decoder did not use (libjpeg's \"extraneous "
                                          "bytes before marker 0xd9\"): the picture may be whole, or its data ended early")
    if verdict == "damaged":  # the picture decoded, garbled or grey past the damage: libjpeg warned, Pillow did not say
        raise DecodeError("decode_error", f"damaged: libjpeg met {damage} warning{'s' if damage > 1 else ''} in its "
                                          "entropy-coded data (djpeg's \"Corrupt JPEG data\"): its pixels decode "
                                          "garbled or grey past the damage")
    cut = jpeg_warnings.cut_into_zeros(data) if decoders else None
    if cut:  # libjpeg decoded the zeros after the cut as coefficients, without a word
        raise DecodeError("truncated", f"the file is cut short, zeros after the cut (a failed or preallocated download): "
                                       f"it ends in {cut[1]} zero bytes from {cut[0]}, with no end of image, and its rows "
                                       "do not all decode from the bytes before them")


def _tiff_problem(image: Image.Image, data: bytes, decoded: bool = True) -> tuple[str, str] | None:
    """For a Deflate or JPEG-compressed TIFF, the reject (reason, detail) for the first strip or
    tile of the decoded IFD that is damaged, else None: libtiff does not say when it decodes one
    garbled. A Deflate one's that holds no whole zlib stream (`deflate_strips`), a JPEG one's that
    libjpeg warned of (`tiff_jpeg`), that one only where libtiff `decoded` the file: a JPEG TIFF
    libtiff refuses is refused for its layout (a JPEGTables tag it calls bogus), not a strip."""
    if image.format != "TIFF":
        return None
    tags = image.tag_v2
    compression = tags.get(259)
    if compression not in DEFLATE and (compression != tiff_jpeg.JPEG_COMPRESSION or not decoded):
        return None
    tiled = 324 in tags and 325 in tags
    offsets, counts = (tags.get(324), tags.get(325)) if tiled else (tags.get(273), tags.get(279))
    if offsets is None or counts is None:
        return None
    offsets = offsets if isinstance(offsets, tuple) else (offsets,)
    counts = counts if isinstance(counts, tuple) else (counts,)
    used = _pieces_read(tags, tiled)  # entries past those libtiff reads are never decoded: not judged
    if used is not None:
        offsets, counts = offsets[:used], counts[:used]
    if compression == tiff_jpeg.JPEG_COMPRESSION:
        detail = tiff_jpeg.damaged_piece(data, tags, offsets, counts, tiled)
        return ("decode_error", detail) if detail else None
    return deflate_damage(data, offsets, counts, tiled, _piece_holds(tags, tiled))


def _pieces_read(tags, tiled: bool) -> int | None:
    """How many strips (tiles) libtiff reads of the image its tags declare: rows over rows-per-strip
    (tiles across times down), times the samples of a planar one; None where the tags do not say.
    A file may list more entries (all pointing at one stream that inflates far: each was inflated
    again, 33 CPU-s for 1,000 entries of a 23 KiB file libtiff decodes in 0.1): they are never read."""
    width, height = tags.get(256), tags.get(257)
    if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0:
        return None
    planes = (tags.get(277, 1) or 1) if tags.get(284, 1) == 2 else 1
    if tiled:
        across, down = tags.get(322), tags.get(323)
        if not isinstance(across, int) or not isinstance(down, int) or across <= 0 or down <= 0:
            return None
        return -(-width // across) * -(-height // down) * planes
    rows = tags.get(278, height)
    rows = min(rows, height) if isinstance(rows, int) and rows > 0 else height
    return -(-height // rows) * planes


def _piece_holds(tags, tiled: bool) -> int | None:
    """The bytes a TIFF strip's (tile's) rows hold uncompressed, all its samples (a planar one's
    strips hold one each: an upper bound), from its tags; None where they do not say."""
    width, height = tags.get(322 if tiled else 256), tags.get(323) if tiled else tags.get(257)
    bits = tags.get(258, 1)
    bits = sum(bits) if isinstance(bits, tuple) else bits * (tags.get(277, 1) or 1)
    if not isinstance(width, int) or not isinstance(height, int) or not isinstance(bits, int):
        return None
    rows = height if tiled else min(tags.get(278, height) or height, height)
    return -(-width * bits // 8) * rows


def _load_reported(image: Image.Image, data: bytes) -> None:
    try:
        image.load()
    except OSError as exc:
        text = str(exc)
        if image.format == "TIFF" and "truncated" in text and not _cut_short(data):
            raise DecodeError("decode_error", f"damaged: the file holds every byte its IFD declares, yet its "
                                              f"pixels do not decode: {text}"[:200]) from None
        if image.format in ("JPEG", "MPO") and "broken data stream" in text and jpeg_ends_whole(data):
            raise DecodeError("decode_error", f"damaged: the file ends with its end of image, yet libjpeg "
                                              f"refuses its data: {text}"[:200]) from None
        whole = (image.format == "PNG" and png_ends_whole(data)) or (image.format == "GIF" and gif_ends_whole(data))
        if whole and any(said in text for said in ("truncated", "broken data stream", "unrecognized data stream")):
            ending = "its IEND chunk" if image.format == "PNG" else "its trailer"
            raise DecodeError("decode_error", f"damaged: the file ends with {ending}, yet its compressed data does "
                                              f"not decode: {text}"[:200]) from None
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
    samples its tags declare (`tiff_samples`), Pillow's mode when they cannot be read. A Deflate
    TIFF one of whose strips holds no whole zlib stream is damaged (`decode_error`), not that."""
    if image.format == "TIFF":
        problem = _tiff_problem(image, data, decoded=False)  # zlib refused a strip: damaged, no layout Pillow lacks
        if problem:
            return DecodeError(problem[0], f"{problem[1]}: {text}"[:300])
        samples = tiff_samples(data) or image.mode
        return DecodeError("unsupported_format", f"TIFF ({samples}, a sample layout Pillow cannot read): {text}"[:200])
    return DecodeError("decode_error", text[:200])


def _decoded_srgb(image: Image.Image, data: bytes, orientation: int,
                  box: tuple[int, int, int, int] | None) -> tuple[np.ndarray, str]:
    """The opened image decoded, cut to `box`, turned by `orientation`, in sRGB (`_srgb_array`),
    and the profile it was converted from. A 16-bit PNG converted from its 16-bit samples
    (`_wide`) is decoded by OpenCV alone: Pillow's load of its 8-bit cut was a second full decode,
    thrown away (0.28 s became 0.56 s at 2000 x 1500). A file OpenCV cannot decode goes to Pillow,
    whose reject says why. A 16-bit TIFF's are decoded after Pillow's load, which judges its
    strips whole (`_tiff_problem`): OpenCV's libtiff says nothing of a damaged one."""
    wide = _wide(image, data, orientation) if image.format == "PNG" else None
    if wide is not None:
        return wide
    reduced = jpeg2000.precise(image, data)  # Pillow's own reduction wraps its full scale to 0
    if reduced is None:
        _load(image, data)
    wide = _wide(image, data, orientation) if image.format == "TIFF" and box is None else None
    if wide is not None:
        return wide
    image = _cropped(image if reduced is None else reduced, box)
    image = _oriented(image, orientation)
    return _srgb_array(image, data)


@pixels_judged_here()
def decode_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_bytes: int = DEFAULT_MAX_DECODE_BYTES, *, header: JpegHeader | None = None) -> np.ndarray:
    """Full-resolution decode to (H, W, 3) uint8 with EXIF orientation applied. `header`: the walk of
    a JPEG's segments the caller has made (`headers.jpeg_header`), else made here, once."""
    header = header or jpeg_header(data)
    image = _open(data, max_pixels, max_bytes, header)
    held = _held(image, data, header)
    orientation = _orientation(image, data)
    box = _aperture(image, data)
    _check_budget(image, orientation, max_bytes, held, box is not None or _turned_on_load(image))
    return _decoded_srgb(image, data, orientation, box)[0]


def decode_through(data: bytes, plan: ResizePlan, max_pixels: int = DEFAULT_MAX_PIXELS, pad_value: int = 0,
                   max_bytes: int = DEFAULT_MAX_DECODE_BYTES, *, header: JpegHeader | None = None) -> np.ndarray:
    """Another image of the same scene (a stereo pair's right view) at full resolution, through the
    plan made on its image: the canvas; `size_mismatch` when its size is not the plan's input size."""
    rgb = decode_rgb(data, max_pixels, max_bytes, header=header)
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
    header: JpegHeader | None = None,
) -> DecodedImage:
    """Decode `data` straight onto a size x size canvas (the ingest hot path).

    With `fast` a DCT-coded JPEG (`_dct_scalable`) decodes at the smallest DCT scale that still
    covers the canvas. Without it the decode is at full resolution (ground-truth geometry is exact
    on it), unless the image is over the memory budget: such a JPEG then decodes at the mildest scale that fits (the
    plan stays in original coordinates, so annotations still land within a reduced pixel),
    any other format is rejected `image_too_large`. `header`: the walk of a JPEG's segments the
    caller has made (`headers.jpeg_header`), else made here: once a decode, where each judgement
    (the header's cost, the decoder's, the DCT scaling) walked the file again."""
    header = header or jpeg_header(data)
    image = _open(data, max_pixels, max_bytes, header)
    held = _held(image, data, header)
    fmt = image.format or "unknown"
    pages = pages_of(image, data)
    orientation = _orientation(image, data)
    box = _aperture(image, data)
    raw_w, raw_h = (box[2] - box[0], box[3] - box[1]) if box else image.size
    swapped = orientation in (5, 6, 7, 8)
    width, height = (raw_h, raw_w) if swapped else (raw_w, raw_h)
    plan: ResizePlan = plan_resize(height, width, size, policy)
    request = None
    scalable = _dct_scalable(image, data, header)
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
