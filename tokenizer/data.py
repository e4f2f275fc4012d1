"""Images for training and evaluating a tokenizer: rendered-sentence tars and image folders.

Rendered shards are webdataset tars whose samples are `{id}.json` plus `{id}.NN.png` (one PNG
per image of the sentence); we read their members straight with `tarfile`, so this package needs
neither Beam nor the pipeline. Plain image files and folders of images work too.

Training order and augmentation are pure functions of (seed, step): a resumed run sees exactly
the batches an uninterrupted one would, without storing any data-loader state.
"""

from __future__ import annotations

import glob as globlib
import io
import os
import re
import sys
import tarfile
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import EpsImagePlugin, Image, PngImagePlugin
from PIL.JpegImagePlugin import MARKER as PILLOW_JPEG_MARKERS

from tokenizer.config import UsageError
from tokenizer.heif_exif import heif_exif_refusal
from tokenizer.image_shown import Colour, colour, orientation, oriented
from tokenizer.image_kinds import broken_tiff, fits_misread, unopened_kind
from tokenizer.image_files import FileRefused, linked_member, member_refusal, read_image_file, read_member, refusal
from tokenizer.pixels import to_rgb
from tokenizer.png_chunks import PngRefused, png_profile_past_pillow, without_png_text
from tokenizer.xpm_gif import gif_screen_box, xpm_for_pillow

# What the build takes for a picture by its name (`sources.web_samples.IMAGE_EXTENSIONS`, which
# `tokenizer` may not import; a test keeps them equal), in any case: a TIFF, GIF, HEIC, AVIF or
# JPEG 2000 was passed over without a word. The decoder sniffs the bytes; the name only picks.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif", ".heic", ".heif",
                  ".svg", ".jxl", ".jp2", ".ico")
try:  # HEIC/HEIF (phone photos), which the build reads through pillow-heif (`transforms.decode`) and
    from pillow_heif import register_heif_opener  # this loader called `not_an_image`

    register_heif_opener()
except ImportError:  # pragma: no cover - a declared dependency
    pass

# a caption or metadata beside an image (img2dataset's, a rendered sentence's `{id}.json`): part of
# the sample, never counted as left out
SIDECAR_SUFFIXES = (".txt", ".json", ".cls", ".cls2", ".class")
UNEXPECTED_FILE = "unexpected_file"


@dataclass(frozen=True)
class ImageRef:
    """One image: a file, or a member of a tar."""

    path: str
    member: str | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.member}" if self.member else self.path


# (image, the build's reason, detail) of an image or file that is not used
Skipped = tuple[ImageRef, str, str]


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _is_tar(name: str) -> bool:
    return name.lower().endswith(".tar")


def _tar_images(path: str, left_out: list[Skipped]) -> list[ImageRef]:
    """The image members of a tar; one no regular file or declaring more than the cap (judged on
    its header, never read), or named as no image, is appended to `left_out` with its reason."""
    refs = []
    try:
        with tarfile.open(path) as tar:
            members = tar.getmembers()
    except (OSError, tarfile.TarError) as exc:
        left_out.append((ImageRef(path), "unreadable_file", _detail(exc)))
        return []
    earlier: dict[str, tarfile.TarInfo] = {}  # the regular members so far: what a hard link may name
    for member in members:
        if member.isfile():
            earlier[member.name] = member
        if member.isdir() or member.name.lower().endswith(SIDECAR_SUFFIXES):
            continue
        ref = ImageRef(path, member.name)
        refused = member_refusal(linked_member(member, earlier))
        if not _is_image(member.name):
            left_out.append((ref, UNEXPECTED_FILE, f"not an image by its name (one of {', '.join(IMAGE_SUFFIXES)})"))
        elif refused:
            left_out.append((ref, refused.reason, refused.detail))
        else:
            refs.append(ref)
    return refs


def _shard_or_file_refusal(path: str, info: os.stat_result) -> FileRefused | None:
    """Why the file at `path` is never opened: a pipe, socket or device; over the cap when it is an
    image file. A tar is judged by its kind alone: the cap is on each member it holds (an
    img2dataset shard of 10,000 photos runs to a gigabyte)."""
    return refusal(info, sys.maxsize) if _is_tar(path) else refusal(info)


def _file_images(path: str, left_out: list[Skipped]) -> list[ImageRef]:
    """The image (or the images of the tar) at `path`, a file found by a pattern or in a folder. A
    pipe, socket or device is judged by `stat` and never opened, a file over the cap by its size;
    each is appended to `left_out` with its reason, as is a file named as no image."""
    try:
        refused = _shard_or_file_refusal(path, os.stat(path))
    except OSError:  # a dangling link: its read says why
        refused = None
    if refused:
        left_out.append((ImageRef(path), refused.reason, refused.detail))
        return []
    if _is_tar(path):
        return _tar_images(path, left_out)
    if _is_image(path):
        return [ImageRef(path)]
    if not path.lower().endswith(SIDECAR_SUFFIXES):
        left_out.append((ImageRef(path), UNEXPECTED_FILE,
                         f"not an image or a tar by its name (one of {', '.join(IMAGE_SUFFIXES)}, .tar)"))
    return []


def find_images(patterns: str | Sequence[str], left_out: list[Skipped] | None = None) -> list[ImageRef]:
    """Every image behind the given globs (tars, image files, folders searched recursively), in a
    stable sorted order. With `left_out`, each file or tar member found but not offered (a pipe or
    device, one over the cap, one named as no image; not a `.txt`/`.json` beside them) is appended
    to it as (ref, reason, detail), the reason the build's."""
    if isinstance(patterns, str):
        patterns = [patterns]
    left_out = [] if left_out is None else left_out
    refs: list[ImageRef] = []
    for pattern in patterns:
        matches = sorted(globlib.glob(pattern, recursive=True)) or ([pattern] if os.path.lexists(pattern) else [])
        for path in matches:
            if os.path.isdir(path):
                for root, _, files in sorted(os.walk(path)):
                    refs += [r for f in sorted(files) for r in _file_images(os.path.join(root, f), left_out)]
            else:
                refs += _file_images(path, left_out)
    left_out[:] = merge_skipped(left_out)
    return merge_refs([refs])


def merge_refs(groups: Iterable[Sequence[ImageRef]]) -> list[ImageRef]:
    """The images of several `find_images` results, each once, in `find_images`'s order."""
    return sorted({r for group in groups for r in group}, key=lambda r: (r.path, r.member or ""))


def merge_skipped(skipped: Iterable[Skipped]) -> list[Skipped]:
    """Files left out by several `find_images` calls, each once (the first reason), in its order."""
    seen: dict[ImageRef, Skipped] = {}
    for entry in skipped:
        seen.setdefault(entry[0], entry)
    return sorted(seen.values(), key=lambda e: (e[0].path, e[0].member or ""))


# Why an image cannot be read, in the build's reject reasons (transforms/decode.py `_open`, `_load`;
# uvd_pipeline/render.py's `unreadable_file`), so an evaluation's `skipped` counts compare with a
# build's rejects. A mirror, not an import: tokenizer/ may not import transforms/ (DESIGN.md);
# tests/test_tokenizer_fit.py feeds the same broken files to both and checks they agree. Not
# mirrored: the build's own budgets (`image_too_large`, `too_many_scans`, `max_pixels`), but for
# an AVIF's or HEIF's Exif item, which `Image.open` itself copies (`tokenizer.heif_exif`), and its
# sniffing of other formats Pillow cannot open (`unsupported_format`) but for SVG, JPEG XL and PDF
# (`_undecodable`: they were `not_an_image` here, a folder's logo.svg counted as junk) and
# ImageMagick's EXR, HDR, PFM, PAM, DPX, MIFF, 16-bit PSD, float TIFF and 16-bit FITS
# (`tokenizer.image_kinds`); the
# readers this loader never offers an input (EPS, IPTC: `_never_offered`) are mirrored, as the
# build names them `unsupported_format` (an EPS was `not_an_image` here).


class UnreadableImage(Exception):
    """An image that cannot be used: `reason`, the build's reject code for the same failure
    (`open_reason`, `load_reason`), and `detail` for people."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _detail(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]


def open_reason(exc: BaseException) -> str:
    """The build's reason (transforms/decode.py `_open`) for an exception of `Image.open`."""
    if isinstance(exc, Image.DecompressionBombError):
        return "decompression_bomb"
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not_an_image"
    return "corrupt_header"  # Pillow raises many types on a broken header


def _ends_whole(data: bytes, image_format: str | None) -> bool:
    """Whether a PNG or GIF ends as a whole one does (the build's `headers.png_ends_whole`,
    `gif_ends_whole`, at their simplest): with its IEND chunk (zeros after it allowed), with a data
    terminator and the trailer."""
    if image_format == "PNG":
        return data.rstrip(b"\x00").endswith(b"\x00\x00\x00\x00IEND\xaeB`\x82")
    return image_format == "GIF" and data.endswith(b"\x00;")


def load_reason(exc: BaseException, image_format: str | None = None, data: bytes = b"") -> str:
    """The build's reason (transforms/decode.py `_load`) for an exception of `Image.load` after a
    good header: Pillow's "image file is truncated" and "broken data stream" (a damaged compressed
    stream) are both `truncated`, unless the PNG or GIF ends whole (`decode_error`: damaged, not
    cut); any other failure of a PNG cut short (`_png_cut_short`: Pillow's "Truncated File Read" of
    a cut tEXt after the pixels) is `truncated`, as the build's `_raise_if_cut_short` finds it; a
    TIFF that opens but will not load is `unsupported_format`."""
    text = str(exc)
    if isinstance(exc, OSError) and ("truncated" in text or "broken data stream" in text):
        return "decode_error" if _ends_whole(data, image_format) else "truncated"
    if _png_cut_short(data):  # the build's `_raise_if_cut_short` after any other failure
        return "truncated"
    return "unsupported_format" if image_format == "TIFF" else "decode_error"


# Pillow readers never offered an input (the build's `transforms.pillow_open`, which this package may
# not import): EPS runs another program on the file (Ghostscript, a PostScript interpreter); IPTC, tried
# on every input (it tests no first bytes), opens the image data it wraps with every reader (an EPS in
# one ran Ghostscript here, in this process's own child, with no process group to end it)
_NEVER_OFFERED = ("EPS", "IPTC")

EpsImagePlugin.gs_binary = False  # Ghostscript off for the whole process: no nested open can run it


# their first bytes as the build's `image_format.sniff_format` tells them (and Pillow's readers accept
# them): an EPS's PostScript text or DOS binary header; a bare IPTC/NAA record's first field (the 0x1C
# tag marker, a record number Pillow's reader knows, a length it takes)
_POSTSCRIPT = (b"%!PS", b"\xc5\xd0\xd3\xc6")
_IPTC_RECORDS = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9, 240})


def _never_offered(data: bytes) -> str | None:
    """The name of a reader of `_NEVER_OFFERED` these bytes are for, None for any other file: a real
    image format this loader refuses (`unsupported_format`, as the build says), not junk."""
    if data[:4] in _POSTSCRIPT:
        return "EPS"
    if len(data) >= 5 and data[0] == 0x1C and data[1] in _IPTC_RECORDS and data[3] <= 132:
        return "IPTC/NAA record"
    return None


def _undecodable(data: bytes) -> str | None:
    """A real image format Pillow does not open, by its first bytes as the build's
    `image_format.sniff_format` tells them (the ones a photo folder holds: SVG, JPEG XL, PDF): the
    build rejects them `unsupported_format`, this loader said `not_an_image` (junk)."""
    head = data[:512]
    if head[:2] == b"\xff\x0a" or head[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return "JPEG XL"
    if head[:5] == b"%PDF-":
        return "PDF"
    text, lowered = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower(), head.lower()
    if text.startswith((b"<svg", b"<!doctype svg")) or (text.startswith((b"<?xml", b"<!-- ")) and b"<svg" in lowered):
        return "SVG (vector graphics)"
    return None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


_HEADER_CHUNKS = 4096  # the build's `headers._HEADER_STEPS`: chunks walked before the pixels
_PIXEL_CHUNKS = 1 << 16  # the build's `headers._CHUNK_STEPS`: chunks walked from the first IDAT on


def _png_cut_short(data: bytes) -> bool:
    """Whether these bytes are a PNG cut short (a partial download): a part of the signature, or a
    chunk (IHDR, an iCCP before the pixels, an IDAT, ImageMagick's tEXt dates after them) running
    past the end, as the build's `headers.declared_length` (`_png_header_end`) finds it
    `truncated`; no cut at IEND or at a chunk no writer makes (damaged). Before the pixels such a
    cut was `corrupt_header` or `not_an_image` here; after them, where Pillow says "Truncated File
    Read" (a capital T), `decode_error`."""
    if len(data) < len(_PNG_SIGNATURE):
        return len(data) >= 2 and _PNG_SIGNATURE.startswith(data)
    if not data.startswith(_PNG_SIGNATURE) or b"IEND" in data[-12:]:
        return False
    pos, steps, pixels = len(_PNG_SIGNATURE), _HEADER_CHUNKS, False
    while steps:
        steps -= 1
        if pos + 8 > len(data):
            return True
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        if length > 0x7FFFFFFF or not kind.isalpha() or kind == b"IEND":
            return False
        if kind == b"IDAT" and not pixels:
            steps, pixels = _PIXEL_CHUNKS, True
        if pos + 12 + length > len(data):
            return True
        pos += 12 + length
    return False


def _png_refusal(data: bytes) -> tuple[str, str]:
    """(reason, detail) of a PNG Pillow's reader refuses, as the build gives them: an IHDR of 0
    pixels is `no_pixels`; anything else (a critical chunk's bad CRC: a flipped bit) is
    `corrupt_header`, where it was `not_an_image` here, junk."""
    if data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        if min(width, height) == 0:
            return "no_pixels", f"{width}x{height}"
    try:
        PngImagePlugin.PngImageFile(io.BytesIO(data)).close()
    except Exception as exc:
        return "corrupt_header", "PNG: " + _detail(exc)
    return "corrupt_header", "PNG: Pillow cannot open it"


def _formats() -> list[str]:
    Image.init()
    return [name for name in Image.ID if name not in _NEVER_OFFERED]


# The build's `pillow_open.MAX_EXIF_SEGMENTS` (this package may not import it): Pillow's JPEG open
# joins each APP1 `Exif` segment to all those before it, so their time grows with their number
# squared (200,000 tiny ones: about 5 CPU-s; 900,000: 187). A camera writes one.
MAX_EXIF_SEGMENTS = 255
_APP1, _SOS = 0xE1, 0xDA
# where Pillow's open finds its next marker: it skips bytes that are not 0xFF, a 0xFF 0x00 pair and
# fill bytes one by one, so the first 0xFF followed by anything else
_PILLOW_NEXT_MARKER = re.compile(rb"\xff[^\x00\xff]")


def exif_segments(data: bytes, stop_past: int = MAX_EXIF_SEGMENTS) -> int:
    """How many APP1 `Exif` segments a JPEG has before its first scan (0 for any other file),
    counted no further than `stop_past` + 1: the count that Pillow's open would join. The walk is
    Pillow's own (`JpegImageFile._open`, its `MARKER` table): junk between segments is skipped, a
    marker it gives no handler (SOI, EOI, RSTn, JPGn) has no length and does not end it, and it
    ends at the first scan or at a marker Pillow does not know."""
    if data[:3] != b"\xff\xd8\xff":
        return 0
    count, pos = 0, 2
    while pos + 2 <= len(data) and count <= stop_past:
        if data[pos] != 0xFF or data[pos + 1] in (0x00, 0xFF):
            found = _PILLOW_NEXT_MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
            continue
        marker = 0xFF00 | data[pos + 1]
        if marker not in PILLOW_JPEG_MARKERS or marker == 0xFF00 | _SOS:
            break  # Pillow's open fails here, or stops to decode
        if PILLOW_JPEG_MARKERS[marker][2] is None:
            pos += 2
            continue
        if (marker & 0xFF) == _APP1 and data[pos + 4 : pos + 10] == b"Exif\x00\x00":
            count += 1
        pos += 2 + max(2, int.from_bytes(data[pos + 2 : pos + 4], "big"))  # Pillow reads on past a length under 2
    return count


# The build's default decode budget (`transforms.decode.DEFAULT_MAX_DECODE_BYTES`), which an AVIF's
# or HEIF's Exif items are judged on before `Image.open` (`heif_exif`): a 200 MB one in a HEIC took
# the build 1,050 MiB opening it where it was not judged.
DEFAULT_MAX_DECODE_BYTES = 768 << 20


class Shown:
    """A loaded image turned as the build shows it, its colour (`image_shown.colour`) not yet
    applied: all its pixels, or a box of them converted alone. Why: fit converted a whole 24 MP
    Display P3 photo with LittleCMS to keep a 256 crop of it (5.04 s a draw against 0.91 for a
    plain one). Every conversion is of each pixel alone (a LittleCMS transform, a table, alpha on
    white), so a box of the converted image is the converted box; not so a wide grey or float
    image's (`_WHOLE_ONLY`: its depth may be judged on all its samples), which is converted whole."""

    _WHOLE_ONLY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")

    def __init__(self, image: Image.Image, to_srgb: Colour | None, wide: Callable[[int], np.ndarray | None] | None):
        self.image, self._colour, self._wide = image, to_srgb, wide

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) as shown."""
        return self.image.height, self.image.width

    def pixels(self, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """(H, W, 3) uint8 sRGB of the whole image, or of `box` (left, top, right, bottom)."""
        if box is None:
            return to_rgb(self.image, self._colour, self._wide)
        if self.image.mode in self._WHOLE_ONLY:
            left, top, right, bottom = box
            return np.ascontiguousarray(self.pixels()[top:bottom, left:right])
        return to_rgb(self.image.crop(box), self._colour, self._wide)


def decode_image(data: bytes, max_bytes: int = DEFAULT_MAX_DECODE_BYTES) -> np.ndarray:
    """RGB uint8 pixels of an image file's bytes; `UnreadableImage` with the build's reason when
    they are not a usable image. An AVIF or HEIF whose Exif items cost `Image.open` more than
    `max_bytes` (`heif_exif_refusal`: the items, an AVIF's IFD0), or whose boxes cannot be walked
    to judge that, is `image_too_large`, judged before the open."""
    return decode_shown(data, max_bytes).pixels()


def decode_shown(data: bytes, max_bytes: int = DEFAULT_MAX_DECODE_BYTES) -> Shown:
    """`decode_image`'s image, loaded and turned, its colour applied when its pixels are taken."""
    if not data:
        raise UnreadableImage("empty_file", "0 bytes")
    too_large = heif_exif_refusal(data, max_bytes)
    if too_large:
        raise UnreadableImage("image_too_large", too_large)
    if exif_segments(data) > MAX_EXIF_SEGMENTS:
        raise UnreadableImage("too_many_exif_segments", f"a JPEG of more than {MAX_EXIF_SEGMENTS} APP1 Exif segments "
                                                        "before its first scan (a camera writes one): Pillow's open "
                                                        "joins each to all those before it")
    try:  # a PNG's chunks as the build gives them to Pillow: text and a profile past 1 MiB out, a bad-CRC eXIf refused
        opened, big_profile = without_png_text(data), data.startswith(_PNG_SIGNATURE) and png_profile_past_pillow(data)
    except PngRefused as exc:
        raise UnreadableImage(exc.reason, exc.detail) from exc
    try:
        image = Image.open(io.BytesIO(xpm_for_pillow(opened)), formats=_formats())  # a 16-bit XPM's colours mended
    except Exception as exc:
        if _png_cut_short(data):
            raise UnreadableImage("truncated", f"a PNG cut short: {len(data)} bytes") from exc
        raise _open_refusal(exc, data) from exc
    misread = fits_misread(data) if image.format == "FITS" else None
    if misread:
        image.close()
        raise UnreadableImage("unsupported_format", f"{misread}: a real image format this loader cannot decode")
    if image.format == "PNG" and big_profile and "icc_profile" not in image.info:
        image.info["icc_profile"] = big_profile
    turn = orientation(image, data)  # before the load, as the build reads it: a PNG's first eXIf, not its last
    try:
        image.load()
    except Exception as exc:
        image.close()
        raise UnreadableImage(load_reason(exc, image.format, data), _detail(exc)) from exc
    to_srgb, wide = colour(image, data)  # judged on the opened image: a turned copy has no `format`
    box = gif_screen_box(image.size, data) if image.format == "GIF" else None
    return Shown(oriented(image if box is None else image.crop(box), turn), to_srgb, wide)


def _open_refusal(exc: Exception, data: bytes) -> UnreadableImage:
    """Why `Image.open` refused these bytes, in the build's reasons."""
    if not isinstance(exc, Image.UnidentifiedImageError):  # Pillow raises many types on a broken header
        if broken_tiff(data) and open_reason(exc) == "corrupt_header":  # the build's: a layout Pillow lacks
            return UnreadableImage("unsupported_format", "TIFF: " + _detail(exc))
        return UnreadableImage(open_reason(exc), _detail(exc))
    known = _never_offered(data)  # an unidentified image's message names a BytesIO object; never quote the bytes
    if known:
        return UnreadableImage("unsupported_format", f"{known}: a real image format that is never opened here "
                                                     "(its reader runs Ghostscript, or opens what it wraps with every reader)")
    known = _undecodable(data)
    if known:
        return UnreadableImage("unsupported_format", f"{known}: a real image format this loader cannot decode")
    kind = unopened_kind(data)  # EXR, HDR, PFM, PAM, DPX, MIFF, a 16-bit PSD, a float TIFF: the build's names
    if kind:
        return UnreadableImage(*kind)
    if data.startswith(_PNG_SIGNATURE):  # Pillow's PNG reader refused it: the build's reasons
        return UnreadableImage(*_png_refusal(data))
    return UnreadableImage(open_reason(exc), f"{type(exc).__name__}: no image format recognises these {len(data)} bytes")


class ImageReader:
    """Reads `ImageRef`s, keeping the tars it has opened open (random access into shards).

    `read` raises `UnreadableImage` with the build's reasons: `unreadable_file` when the bytes
    cannot be read (a missing file or tar member, a broken tar), `not_a_file`, `file_too_large`
    or `member_too_large` when they are never read (`tokenizer.image_files`), the decode reasons
    otherwise."""

    def __init__(self) -> None:
        self._tars: dict[str, tarfile.TarFile] = {}

    def read_bytes(self, ref: ImageRef) -> bytes:
        if ref.member is None:
            return read_image_file(ref.path)
        tar = self._tars.get(ref.path)
        if tar is None:
            refused = _shard_or_file_refusal(ref.path, os.stat(ref.path))  # a pipe named .tar: never opened
            if refused:
                raise refused
            tar = self._tars[ref.path] = tarfile.open(ref.path)
        return read_member(tar, ref.member)

    def read(self, ref: ImageRef) -> np.ndarray:
        return self.read_shown(ref).pixels()

    def read_shown(self, ref: ImageRef) -> Shown:
        """`read`'s image, its colour applied when its pixels (or a box of them) are taken."""
        try:
            data = self.read_bytes(ref)
        except FileRefused as exc:
            raise UnreadableImage(exc.reason, exc.detail) from exc
        except (OSError, KeyError, tarfile.TarError) as exc:  # KeyError: no such tar member
            raise UnreadableImage("unreadable_file", _detail(exc)) from exc
        return decode_shown(data)

    def close(self) -> None:
        for tar in self._tars.values():
            tar.close()
        self._tars.clear()


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop, then resize to `size` (evaluation input; a no-op for rendered images)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = image[top:top + side, left:left + side]
    if side != size:
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
    return image


def random_crop(image: np.ndarray | Shown, size: int, rng: np.random.Generator, flip: bool = True) -> np.ndarray:
    """A random `size` x `size` crop (upscaling first when the image is smaller), maybe mirrored.
    Of a `Shown` image big enough, only the crop's pixels are converted (the same pixels)."""
    h, w = image.shape[:2]
    if min(h, w) < size:
        pixels = image.pixels() if isinstance(image, Shown) else image
        scale = size / min(h, w)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        image = np.asarray(Image.fromarray(pixels).resize((nw, nh), Image.BICUBIC))
        h, w = nh, nw
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    if isinstance(image, Shown):
        crop = image.pixels((left, top, left + size, top + size))
    else:
        crop = image[top:top + size, left:left + size]
    if flip and rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


class _Shuffled:
    """Position -> item of an endless stream of `items` whose epoch e is a permutation seeded by
    (*seed, e)."""

    def __init__(self, items: Sequence, seed: Sequence[int]) -> None:
        self.items = list(items)
        self.seed = list(seed)
        self._perm: tuple[int, np.ndarray] | None = None

    def __getitem__(self, position: int):
        epoch, offset = divmod(position, len(self.items))
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([*self.seed, epoch]).permutation(len(self.items)))
        return self.items[int(self._perm[1][offset])]


class NoReadableImages(UsageError):
    """Every image a training stream could draw is unreadable: `--data` names no usable image."""


class TrainBatches:
    """Batch `step` (0-based) of an endless shuffled stream: epoch e is a permutation seeded by
    (seed, e); sample i of step s is cropped with a generator seeded by (seed, s, i).

    An image that cannot be read (a truncated JPEG, a PNG with a bad CRC, an empty file) is met
    when first drawn: it is counted in `unreadable` with the build's reason, `on_skip` is told,
    and the next readable image of the same stream is drawn in its place, so a batch stays a pure
    function of (seed, step) and the files (such a file stopped `tokenizer.fit` with a traceback).

    With `groups` (one list of refs per --data pattern, say), every group is drawn equally often
    however many images it has: positions come in rounds of one draw per group (the order within
    a round shuffled), each group walking its own shuffled stream. Why: a corpus where one source
    has half the images (multi-view renders of a few objects) otherwise tunes the model, colour
    included, to that source, at the cost of the natural photos it is judged on."""

    def __init__(self, refs: Sequence[ImageRef], batch_size: int, crop: int, seed: int,
                 groups: Sequence[Sequence[ImageRef]] | None = None,
                 on_skip: Callable[[ImageRef, str, str], None] | None = None,
                 names: Sequence[str] = ()) -> None:
        if not refs:
            raise ValueError("no training images found")
        self.refs = list(refs)
        self.batch_size = batch_size
        self.crop = crop
        self.seed = seed
        self.reader = ImageReader()
        self.unreadable: dict[ImageRef, tuple[str, str]] = {}  # met so far: (reason, detail)
        self.on_skip = on_skip
        self.names = list(names)  # the --data patterns (one per group with `groups`): named when none can be read
        self._stream = _Shuffled(self.refs, [seed])
        self._groups = None
        if groups is not None:
            empty = [i for i, group in enumerate(groups) if not group]
            if empty:
                raise ValueError(f"data group(s) {empty} hold no images: nothing to balance")
            self._groups = [_Shuffled(group, [seed, 1, g]) for g, group in enumerate(groups)]
            self._group_order = _Shuffled(range(len(groups)), [seed, 2])  # round r: permutation (seed, 2, r)

    def _where(self, position: int) -> tuple[_Shuffled, int]:
        """The stream `position` draws from, and its place in it."""
        if self._groups is None:
            return self._stream, position
        return self._groups[self._group_order[position]], position // len(self._groups)

    def ref_at(self, position: int) -> ImageRef:
        """The image drawn at `position` of the stream (sample i of step s is at s * batch_size + i)."""
        stream, index = self._where(position)
        return stream[index]

    def image_at(self, position: int) -> np.ndarray:
        """The pixels drawn at `position` (`shown_at`'s, all of them)."""
        return self.shown_at(position).pixels()

    def shown_at(self, position: int) -> Shown:
        """The pixels drawn at `position`: of `ref_at`, or of the next readable image of its stream
        when that one cannot be read (counted in `unreadable`); `NoReadableImages` when none can.

        The walk runs over the rest of this epoch and the whole next one, so it meets every image
        of the stream: it looked `len(items)` positions on, which across an epoch's end are the
        tail of one permutation and the head of the next, and with 3 images of which 1 readable
        it stopped fit with a false "none can be read" in 100 of 100 seeds."""
        stream, index = self._where(position)
        for later in range(2 * len(stream.items)):
            ref = stream[index + later]
            if ref in self.unreadable:
                continue
            try:
                return self.reader.read_shown(ref)
            except UnreadableImage as exc:
                self.unreadable[ref] = (exc.reason, exc.detail)
                if self.on_skip is not None:
                    self.on_skip(ref, exc.reason, exc.detail)
        raise NoReadableImages(self._none_readable(stream))

    def _none_readable(self, stream: _Shuffled) -> str:
        """Why `stream` gives nothing: its --data pattern, its image count and their reasons (of
        its own images, so they add up to the count)."""
        counts: dict[str, int] = {}
        for ref in set(stream.items):
            reason = self.unreadable[ref][0]
            counts[reason] = counts.get(reason, 0) + 1
        names = self.names[self._groups.index(stream):][:1] if self._groups is not None else self.names
        how = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
        return (f"--data{''.join(' ' + name for name in names)}: none of the {len(stream.items)} images it draws "
                f"from can be read ({how})")

    def unreadable_counts(self) -> dict[str, int]:
        """The unreadable images met so far, by the build's reason."""
        counts: dict[str, int] = {}
        for reason, _ in self.unreadable.values():
            counts[reason] = counts.get(reason, 0) + 1
        return dict(sorted(counts.items()))

    def batch(self, step: int) -> np.ndarray:
        """(batch_size, crop, crop, 3) uint8."""
        out = []
        for i in range(self.batch_size):
            rng = np.random.default_rng([self.seed, step, i])
            out.append(random_crop(self.shown_at(step * self.batch_size + i), self.crop, rng))
        return np.stack(out)


def iter_images(refs: Iterable[ImageRef], size: int,
                skipped: list[tuple[ImageRef, str, str]] | None = None) -> Iterator[tuple[ImageRef, np.ndarray]]:
    """Each image, centre-cropped and resized to `size` (evaluation order = `refs` order).

    With `skipped`, an image that cannot be read is appended to it as (ref, reason, detail), the
    reason the build gives the same failure, and the rest go on; without, `UnreadableImage`
    propagates."""
    reader = ImageReader()
    try:
        for ref in refs:
            try:
                image = reader.read(ref)
            except UnreadableImage as exc:
                if skipped is None:
                    raise
                skipped.append((ref, exc.reason, exc.detail))
                continue
            yield ref, resize_square(image, size)
    finally:
        reader.close()
