"""What an image file declares, read from its bytes without decoding anything.

The decode budgets are judged on these facts, before Pillow or libjpeg touch a pixel:

- a JPEG's frame (size, components and their sampling) and its scans: libjpeg holds every DCT
  coefficient of a multi-scan (progressive, or non-interleaved) JPEG at full size whatever the
  output scale, and walks every block of a scan's components once per scan;
- the images inside an ICO or ICNS container: Pillow sizes an icon from its directory but decodes
  the embedded PNG or bitmap at whatever size that one declares (an ICO's, inside `Image.open`);
- the AV1 bitstreams of an AVIF (its `av1C` boxes: bit depth, chroma subsampling, monochrome
  alpha), whose YUV planes libavif holds beside Pillow's buffer;
- the colour an AVIF or HEIF declares by its `colr` box of type nclx (primaries, transfer,
  matrix, range: PQ or HLG for HDR photos), which Pillow does not report;
- the size a PNG or a still WebP declares, from the fixed place its first chunk keeps it: with the
  file's length and a JPEG's scans, what its decode time is judged on (`transforms.decode_budget`);
- how many pages a TIFF or frames a GIF or APNG holds (its IFD chain, its image descriptors, its
  fcTL chunks), for the record of what the first page left out: walked in bounded steps, never
  by decoding a frame.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

from transforms.deflate_strips import BoundedInflate
from transforms.tiff_head import TiffHead, first_ifd, tiff_head, tiff_layout

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ICO_MAGIC = b"\x00\x00\x01\x00"
ICNS_MAGIC = b"icns"
_J2K_MAGICS = (b"\xff\x4f\xff\x51", b"\x0d\x0a\x87\x0a", b"\x00\x00\x00\x0cjP  \x0d\x0a\x87\x0a")
# the DIB header sizes Pillow's BMP reader accepts (core, info, v2-v5)
_DIB_HEADERS = (12, 40, 52, 56, 64, 108, 124)
_HEAD = 64  # bytes of an embedded image that hold its header

# frame markers (SOF0-SOF15 less DHT C4, JPG C8, DAC CC); progressive ones are C2 C6 CA CE
JPEG_LS_SOF = 0xF7  # ITU-T T.87: a frame Pillow and libjpeg cannot decode
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, JPEG_LS_SOF}
_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
_LOSSLESS = {0xC3, 0xC7, 0xCB, 0xCF}  # predictive coding: no DCT, so no DCT scaling either
_SOS, _EOI, _COM = 0xDA, 0xD9, 0xFE
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RST0-7 carry no length
# markers Pillow's open gives no handler, so reads as carrying no length and walks past (its `MARKER`
# table): SOI, and EOI too before the first scan. (JPG0-13 too, but JPEG-LS's LSE, 0xF8, has a length.)
_PILLOW_LENGTHLESS = {0xD8, _EOI}
# the next marker after entropy-coded data: 0xFF not followed by a stuffed 0, a restart or a fill byte
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
BLOCK_BYTES = 64 * 2  # one 8x8 block of 16-bit DCT coefficients (JCOEF)


@dataclass(frozen=True)
class JpegLayout:
    """A JPEG's first frame and how many scans follow it (counted up to a cap)."""

    width: int
    height: int
    sof: int  # the frame marker's second byte (0xC0 baseline, 0xC2 progressive, ...)
    sampling: tuple[tuple[int, int], ...]  # (h, v) sampling factors per component
    first_scan_components: int
    scans: int
    precision: int = 8  # bits a sample (libjpeg-turbo through Pillow decodes 8 only)
    # the APPn and COM segments before the first scan, and their payload bytes: Pillow's open keeps each
    # in its `applist` (`decode_budget.header_held`)
    app_segments: int = 0
    app_bytes: int = 0

    @property
    def progressive(self) -> bool:
        return marker_progressive(self.sof)

    @property
    def multi_scan(self) -> bool:
        """What makes libjpeg buffer the whole image's coefficients (jdinput.c `has_multiple_scans`):
        a progressive frame, or a first scan that does not carry every component."""
        return self.progressive or 0 < self.first_scan_components < len(self.sampling)


def marker_progressive(sof: int) -> bool:
    return sof in _PROGRESSIVE


def marker_lossless(sof: int) -> bool:
    return sof in _LOSSLESS


def _u16be(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 2], "big")


def _frame(data: bytes, pos: int, length: int) -> tuple[int, int, tuple[tuple[int, int], ...]] | None:
    """(width, height, sampling per component) of a SOF segment whose payload starts at `pos`; None
    when the segment, or the file, ends before its component count."""
    if length < 6 or len(data) < pos + 6:
        return None
    height, width, count = _u16be(data, pos + 1), _u16be(data, pos + 3), data[pos + 5]
    table = data[pos + 6 : pos + 6 + 3 * count]
    if len(table) < 3 * count:
        return None
    sampling = tuple((max(1, b >> 4), max(1, b & 15)) for b in table[1::3])
    return width, height, sampling


def jpeg_layout(data: bytes) -> JpegLayout | None:
    """The frame and scan count of a JPEG's first image, walking its marker segments (entropy-coded
    data skipped by searching for the next marker, in C) up to its end-of-image marker: what
    follows (an MPO's next frames, a Motion Photo's video) is not decoded, so not counted. A
    single-scan sequential JPEG stops at its first scan: libjpeg refuses a second one there
    (JERR_EOI_EXPECTED), so it costs no time and the common web JPEG pays only for its header.
    None when there is no frame before a scan."""
    return _jpeg_walk(data)[0]


class AppSegments(NamedTuple):
    """A JPEG's APPn and COM segments before its first scan (`jpeg_app_segments`)."""

    segments: int  # APPn and COM segments, each kept in Pillow's `applist`
    payload: int  # their payload bytes
    exif: int  # of them, APP1 `Exif` segments: Pillow's open joins each to those before it


def jpeg_app_segments(data: bytes, exif: bytearray | None = None) -> AppSegments:
    """The APPn and COM segments before a JPEG's first scan (or its end), their payload bytes and
    how many are APP1 `Exif` ones, frame or none: what Pillow's open reads into its `applist`
    before it finds a frame missing. `exif`, when given, is extended by the EXIF Pillow's open
    reads (`info["exif"]`): every APP1 `Exif` segment's payload, joined, without their
    `Exif\\0\\0` prefixes."""
    _, segments, payload, exif_segments, jpg_marker = _jpeg_walk(data, exif)
    if jpg_marker:  # Pillow's open reads JPG0-13 as carrying no length, so may join Exif segments the walk skipped
        exif_segments = max(exif_segments, _pillow_exif_segments(data))
    return AppSegments(segments, payload, exif_segments)


class JpegHeader(NamedTuple):
    """All one walk of a JPEG's segments tells (`jpeg_header`), made once per decode and handed to
    each judgement that needs it: the walk ran 2-4 times a decode (a 12 MP progressive JPEG: 4 walks,
    10.5 ms, of an 85 ms decode)."""

    layout: JpegLayout | None  # `jpeg_layout`
    segments: AppSegments  # `jpeg_app_segments`
    exif: bytes | bytearray  # the EXIF Pillow's open reads (`jpeg_app_segments`' `exif`)


def jpeg_header(data: bytes) -> JpegHeader | None:
    """`jpeg_layout`, `jpeg_app_segments` and the EXIF it joins, by one walk; None for bytes that
    Pillow does not open as a JPEG (not starting FF D8 FF)."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    exif = bytearray()
    layout, segments, payload, exif_segments, jpg_marker = _jpeg_walk(data, exif)
    if jpg_marker:  # as `jpeg_app_segments`
        exif_segments = max(exif_segments, _pillow_exif_segments(data))
    return JpegHeader(layout, AppSegments(segments, payload, exif_segments), exif)


_PILLOW_NEXT_MARKER = re.compile(rb"\xff[^\x00\xff]")  # Pillow skips junk, 0xFF 0x00 and fill bytes


def _pillow_exif_segments(data: bytes, stop_past: int = 255) -> int:
    """The APP1 `Exif` segments Pillow's open walks before its first scan, counted no further than
    `stop_past` + 1, walking as it does: a JPG0-13 marker (0xF0-0xFD), SOI or EOI two bytes, no
    length, where `_jpeg_walk` reads a length for JPG0-13 (JPEG-LS's LSE, 0xF8, has one)."""
    count, pos = 0, 2
    while pos + 2 <= len(data) and count <= stop_past:
        if data[pos] != 0xFF or data[pos + 1] in (0x00, 0xFF):
            found = _PILLOW_NEXT_MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
            continue
        marker = data[pos + 1]
        if marker == _SOS:
            break
        if 0xD0 <= marker <= 0xD9 or 0xF0 <= marker <= 0xFD:
            pos += 2
            continue
        if marker == 0xE1 and data[pos + 4 : pos + 10] == _EXIF_APP1:
            count += 1
        pos += 2 + max(2, _u16be(data, pos + 2) if pos + 4 <= len(data) else 2)
    return count


_EXIF_APP1 = b"Exif\x00\x00"


def _jpeg_walk(data: bytes, exif: bytearray | None = None) -> tuple[JpegLayout | None, int, int, int, bool]:
    """`jpeg_layout`, and the APPn and COM segments before the first scan, their payload bytes and
    how many are APP1 `Exif` ones (`jpeg_app_segments`), and whether a JPG0-13 marker came before it."""
    if data[:2] != b"\xff\xd8":
        return None, 0, 0, 0, False
    frame, sof, precision, first, scans, pos, end = None, 0, 8, 0, 0, 2, len(data)
    jpg_marker = False
    app_segments = app_bytes = exif_segments = 0
    while pos + 4 <= end:
        if data[pos] != 0xFF or data[pos + 1] in (0xFF, 0x00) or data[pos + 1] in _STANDALONE:
            found = _NEXT_MARKER.search(data, pos + 1 if data[pos] == 0xFF else pos)
            if found is None:
                break
            pos = found.start()
            continue
        marker = data[pos + 1]
        if marker in _PILLOW_LENGTHLESS:
            if marker == _EOI and scans:
                break  # what follows is not this image's
            pos += 2  # before its first scan Pillow's open walks on, joining the Exif segments beyond
            continue
        jpg_marker = jpg_marker or (0xF0 <= marker <= 0xFD and not scans)
        length = _u16be(data, pos + 2)
        if length < 2 and not scans:
            pos += 4  # Pillow's open reads nothing for it and walks on
            continue
        if length < 2 or pos + 4 >= end:  # a segment cut before its first byte
            break
        if marker in _SOF and frame is None:
            frame, sof, precision = _frame(data, pos + 4, length - 2), marker, data[pos + 4]
        elif (0xE0 <= marker <= 0xEF or marker == _COM) and not scans:
            app_segments += 1
            app_bytes += length - 2
            if marker == 0xE1 and data[pos + 4 : pos + 10] == _EXIF_APP1:
                exif_segments += 1
                if exif is not None:
                    exif += data[pos + 10 : pos + 2 + length]
        elif marker == _SOS:
            if frame is None:
                return None, app_segments, app_bytes, exif_segments, jpg_marker
            scans += 1
            if scans == 1:
                first = data[pos + 4]
                if not (marker_progressive(sof) or first < len(frame[2])):
                    break  # single-scan sequential
        pos += 2 + length
    if frame is None:
        return None, app_segments, app_bytes, exif_segments, jpg_marker
    width, height, sampling = frame
    layout = JpegLayout(width, height, sof, sampling, first, scans, precision, app_segments, app_bytes)
    return layout, app_segments, app_bytes, exif_segments, jpg_marker


def coefficient_bytes(layout: JpegLayout) -> int:
    """Bytes libjpeg's coefficient buffer takes for a multi-scan JPEG (0 for a single-scan one,
    which libjpeg decodes one row of blocks at a time): per component, its blocks at full size,
    rounded up to whole MCUs (jdcoefct.c), 64 16-bit coefficients each. The DCT scaling of a
    reduced decode happens after this buffer, so it does not shrink it. A lossless frame's
    sample buffer (1-2 bytes a sample) is counted the same way, an upper bound."""
    if not layout.multi_scan or not layout.sampling:
        return 0
    h_max = max(h for h, _ in layout.sampling)
    v_max = max(v for _, v in layout.sampling)
    total = 0
    for h, v in layout.sampling:
        wide = -(-(-(-layout.width * h // h_max)) // 8)  # blocks across this component
        tall = -(-(-(-layout.height * v // v_max)) // 8)
        total += -(-wide // h) * h * (-(-tall // v) * v) * BLOCK_BYTES
    return total


@dataclass(frozen=True)
class Av1Planes:
    """What one AV1 bitstream of an AVIF (its colour image, or its alpha) decodes into: libavif
    holds its YUV planes (or one plane when monochrome) at 1 byte a sample for 8 bits, 2 above."""

    bit_depth: int  # 8, 10 or 12
    monochrome: bool
    subsampling: tuple[int, int]  # chroma subsampling (x, y): 1 halves that axis

    @property
    def bytes_per_pixel(self) -> float:
        sample = 1 if self.bit_depth == 8 else 2
        if self.monochrome:
            return sample
        return sample * (1 + 2 / ((1 + self.subsampling[0]) * (1 + self.subsampling[1])))


_BOX_LIMIT = 4096  # boxes walked in an AVIF's header before giving up (a real one has a few dozen)
_CONTAINERS = {b"meta": 4, b"iprp": 0, b"ipco": 0}  # boxes holding the av1C properties, and their header extra


def _boxes(data: bytes, start: int, end: int, budget: list[int]):
    """(type, payload start, payload end) of the ISO boxes in data[start:end]; `budget[0]` boxes at
    most, left at -1 where it ran out before the boxes did (what lay past it was not walked)."""
    pos = start
    while pos + 8 <= end and budget[0] >= 0:
        if budget[0] == 0:
            budget[0] = -1
            return
        budget[0] -= 1
        size, kind, head = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8], 8
        if size == 1 and pos + 16 <= end:
            size, head = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            return
        yield kind, pos + head, pos + size
        pos += size


def avif_planes(data: bytes) -> list[Av1Planes]:
    """The AV1 bitstreams an AVIF declares (its `av1C` item properties: the image's, an alpha
    plane's), read from the box structure without decoding; [] when none is found."""
    found: list[Av1Planes] = []
    budget = [_BOX_LIMIT]

    def walk(start: int, end: int) -> None:
        for kind, begin, stop in _boxes(data, start, end, budget):
            if kind in _CONTAINERS:
                walk(begin + _CONTAINERS[kind], stop)
            elif kind == b"av1C" and stop - begin >= 4 and data[begin] & 0x80:
                flags = data[begin + 2]
                high, twelve = bool(flags & 0x40), bool(flags & 0x20)
                found.append(Av1Planes(12 if high and twelve else 10 if high else 8, bool(flags & 0x10),
                                       ((flags >> 3) & 1, (flags >> 2) & 1)))

    walk(0, len(data))
    return found


def _primary_properties(data: bytes) -> list[tuple[bytes, int, int]]:
    """The item properties (type, payload start, end) the primary item (`pitm`) of an AVIF or HEIF
    is associated with (`ipma`), in their order; [] when the boxes are missing or malformed."""
    budget = [_BOX_LIMIT]
    meta = next(((b + 4, e) for k, b, e in _boxes(data, 0, len(data), budget) if k == b"meta"), None)
    if meta is None:
        return []
    primary, properties, links = None, [], {}
    for kind, begin, stop in _boxes(data, meta[0], meta[1], budget):
        if kind == b"pitm" and stop - begin >= 6:
            primary = int.from_bytes(data[begin + 4 : begin + (6 if data[begin] == 0 else 8)], "big")
        elif kind == b"iprp":
            for inner, b, e in _boxes(data, begin, stop, budget):
                if inner == b"ipco":
                    properties = list(_boxes(data, b, e, budget))
                elif inner == b"ipma" and e - b >= 8:
                    links.update(_associations(data, b, e))
    return [properties[i - 1] for i in links.get(primary, []) if 0 < i <= len(properties)]


def _associations(data: bytes, begin: int, end: int) -> dict[int, list[int]]:
    """An `ipma` box's item ID -> 1-based property indices (ISO/IEC 23008-12 9.3.2)."""
    version, wide = data[begin], data[begin + 3] & 1
    pos, out = begin + 8, {}
    for _ in range(int.from_bytes(data[begin + 4 : begin + 8], "big")):
        id_size = 2 if version < 1 else 4
        if pos + id_size + 1 > end:
            break
        item = int.from_bytes(data[pos : pos + id_size], "big")
        count, pos = data[pos + id_size], pos + id_size + 1
        step = 2 if wide else 1
        if pos + count * step > end:
            break
        mask = 0x7FFF if wide else 0x7F
        out[item] = [int.from_bytes(data[pos + i * step : pos + (i + 1) * step], "big") & mask for i in range(count)]
        pos += count * step
    return out


def heif_size(data: bytes) -> tuple[int, int] | None:
    """The width and height an AVIF's or HEIF's primary item declares (its `ispe` property), None
    for another file or one without it: judged before libavif or libheif reads the file (past
    their own size limits they refuse it in words of their own: Pillow then names no format)."""
    if data[4:8] != b"ftyp":
        return None
    ispe = next(((b, e) for k, b, e in _primary_properties(data) if k == b"ispe" and e - b >= 12), None)
    if ispe is None:
        return None
    return int.from_bytes(data[ispe[0] + 4 : ispe[0] + 8], "big"), int.from_bytes(data[ispe[0] + 8 : ispe[0] + 12], "big")


def clean_aperture(data: bytes, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The (left, top, right, bottom) crop that the primary item's `clap` (clean aperture) property
    of an AVIF or HEIF makes of its width x height image, None without one or when it is not a
    whole-pixel rectangle inside the image (as libavif's `avifCropRectFromCleanApertureBox` reads it)."""
    clap = next(((b, e) for k, b, e in _primary_properties(data) if k == b"clap" and e - b >= 32), None)
    if clap is None:
        return None
    n = [int.from_bytes(data[clap[0] + 4 * i : clap[0] + 4 * i + 4], "big", signed=i in (4, 6)) for i in range(8)]
    if 0 in (n[1], n[3], n[5], n[7]):
        return None
    w, h = Fraction(n[0], n[1]), Fraction(n[2], n[3])
    left = Fraction(n[4], n[5]) + Fraction(width - 1, 2) - (w - 1) / 2
    top = Fraction(n[6], n[7]) + Fraction(height - 1, 2) - (h - 1) / 2
    if any(v.denominator != 1 for v in (w, h, left, top)) or w < 1 or h < 1:
        return None
    box = (int(left), int(top), int(left + w), int(top + h))
    return box if box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height else None


@dataclass(frozen=True)
class Nclx:
    """An ISOBMFF `colr` box of type nclx (ISO/IEC 23091-2 code points, as AVColor* in FFmpeg)."""

    primaries: int  # 1 BT.709, 9 BT.2020, 12 Display P3
    transfer: int  # 16 PQ (SMPTE ST 2084), 18 HLG (ARIB STD-B67)
    matrix: int
    full_range: bool


def nclx_colour(data: bytes) -> Nclx | None:
    """The first nclx `colr` item property of an AVIF or HEIF (meta/iprp/ipco), None when it has none."""
    budget = [_BOX_LIMIT]

    def walk(start: int, end: int) -> Nclx | None:
        for kind, begin, stop in _boxes(data, start, end, budget):
            if kind in _CONTAINERS:
                found = walk(begin + _CONTAINERS[kind], stop)
                if found is not None:
                    return found
            elif kind == b"colr" and stop - begin >= 11 and data[begin:begin + 4] == b"nclx":
                p, t, m = (int.from_bytes(data[begin + 4 + 2 * i:begin + 6 + 2 * i], "big") for i in range(3))
                return Nclx(p, t, m, bool(data[begin + 10] & 0x80))
        return None

    return walk(0, len(data))


@dataclass(frozen=True)
class Embedded:
    """One image inside an icon container, as its own header declares it."""

    kind: str  # "PNG", "BMP" or "JPEG 2000"
    width: int
    height: int


WEBP_ANIMATION = 0x02  # the VP8X flag of an animated WebP


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR (the first chunk, at a fixed place); None if it is not one."""
    return _png_size(data[:24])


def webp_still_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a still WebP, from its first chunk: a lossy (VP8) or lossless (VP8L)
    bitstream's frame header, or the extended format's (VP8X) canvas. None for anything else,
    an animated WebP included."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return None
    kind = data[12:16]
    if kind == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    if kind == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X" and not data[20] & WEBP_ANIMATION:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def png_header(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR; None if it is not one."""
    if _png_size(data[:24]) is None or len(data) < 26:
        return None
    return data[24], data[25]


def _png_size(head: bytes) -> tuple[int, int] | None:
    if head[:8] != PNG_MAGIC or head[12:16] != b"IHDR" or len(head) < 24:
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _dib_size(head: bytes) -> tuple[int, int] | None:
    """An icon bitmap's size: its DIB header's height covers the image and its AND mask, which
    Pillow's icon reader halves."""
    size = int.from_bytes(head[:4], "little")
    if size not in _DIB_HEADERS or len(head) < 16:
        return None
    if size == 12:
        width, height = int.from_bytes(head[4:6], "little"), int.from_bytes(head[6:8], "little")
    else:
        width = abs(int.from_bytes(head[4:8], "little", signed=True))
        height = abs(int.from_bytes(head[8:12], "little", signed=True))
    return width, height // 2


def _j2k_size(payload: bytes) -> tuple[int, int] | None:
    from PIL import Jpeg2KImagePlugin

    try:
        return Jpeg2KImagePlugin.Jpeg2KImageFile(io.BytesIO(payload)).size
    except Exception:  # Pillow's own reader fails on it too, before decoding anything
        return None


def _embedded(payload: bytes, bitmaps: bool) -> Embedded | None:
    head = payload[:_HEAD]
    size = _png_size(head)
    if size:
        return Embedded("PNG", *size)
    if head.startswith(_J2K_MAGICS):
        size = _j2k_size(payload)
        return Embedded("JPEG 2000", *size) if size else None
    size = _dib_size(head) if bitmaps else None
    return Embedded("BMP", *size) if size else None


def icon_entries(data: bytes) -> int:
    """How many images an ICO's directory lists (its idCount), of those whose 16-byte entry the data
    holds; 0 for no ICO."""
    if data[:4] != ICO_MAGIC:
        return 0
    return min(int.from_bytes(data[4:6], "little"), max(0, (len(data) - 6) // 16))


def _ico_images(data: bytes) -> list[Embedded]:
    """Every image an ICO directory points at (Pillow decodes the largest-declared one inside
    `Image.open`, at the size its own header says)."""
    found = []
    count = int.from_bytes(data[4:6], "little")
    for i in range(count):
        entry = data[6 + 16 * i : 22 + 16 * i]
        if len(entry) < 16:
            break
        offset = int.from_bytes(entry[12:16], "little")
        image = _embedded(data[offset : offset + _HEAD], bitmaps=True)
        if image:
            found.append(image)
    return found


def _icns_images(data: bytes) -> list[Embedded]:
    """The PNG and JPEG 2000 images of an ICNS file's blocks (the fixed-size RLE icon types are
    at most 1024 x 1024 by their type code)."""
    found, pos = [], 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos + 4 : pos + 8], "big")
        if length < 8:
            break
        image = _embedded(data[pos + 8 : pos + length], bitmaps=False)
        if image:
            found.append(image)
        pos += length
    return found


_CUR_MAGIC = b"\x00\x00\x02\x00"
# a field of a binary PGM's or PPM's header (Netpbm): a number after whitespace or comments, each
# blank matched once (blanks nested in a repeat, `(?:\s+|#...)+`, backtracked through every split of
# a run of them before failing: 26 blanks took 6.5 s, 40 hung a build)
_PNM_FIELD = re.compile(rb"(?:\s|#[^\n]*\n)+(\d{1,9})")
_PNM_HEAD = 4096  # bytes of a PGM's or PPM's header read, its comments included
_PNM_MAXVAL = 65535
_BMP_RLE = (1, 2)  # a BMP's biCompression: RLE8, RLE4


def declared_length(data: bytes) -> int | None:
    """At least how many bytes the file's container says it holds, for the containers whose
    decoders do not say so of a file cut short: a RIFF's (WebP) size, the end of the ISO boxes
    (AVIF, HEIC) up to the first one that runs past the data, a TIFF's first IFD (libtiff and
    Pillow write it after the pixels, tifffile before) with the values and the strips or tiles its
    entries point at, an icon directory's furthest image, a BMP's file size (`_bmp_length`), a
    binary PGM's or PPM's samples after its header (a cut RLE BMP or PGM of a maxval other than
    255 or 65535, which Pillow decodes in Python, was `decode_error`, "not enough image data"),
    a JPEG's segments or a PNG's chunks before its pixels (`_jpeg_header_end`, `_png_header_end`;
    not of a file that ends as a whole one does, with its EOI or IEND: a damaged length there is
    no cut). None for other files."""
    if data[:4] == b"RIFF" and len(data) >= 8:
        return 8 + int.from_bytes(data[4:8], "little")
    if data[4:8] == b"ftyp":
        return _boxes_end(data)
    tiff = tiff_layout(data)  # by every header Pillow's open takes, as the writer laid the file out
    if tiff and tiff.big and len(data) >= 8:
        return _tiff_ifd_end(data, tiff.order, big=True) if len(data) >= 16 else 16
    if tiff and len(data) >= 8:
        return _tiff_ifd_end(data, tiff.order)
    if data[:2] == b"BM" and int.from_bytes(data[14:18], "little") in _DIB_HEADERS:  # not a text "BM...":
        return _bmp_length(data)
    if data[:2] in (b"P5", b"P6"):
        return _pnm_length(data)
    if data[:4] in (ICO_MAGIC, _CUR_MAGIC):
        entries = [data[6 + 16 * i : 22 + 16 * i] for i in range(int.from_bytes(data[4:6], "little"))]
        return max((6 + 16 * len(entries), *(int.from_bytes(e[8:12], "little") + int.from_bytes(e[12:16], "little")
                                             for e in entries if len(e) == 16)))
    if data[:2] == b"\xff\xd8" and not jpeg_ends_whole(data):
        return _jpeg_header_end(data)
    if len(data) >= 2 and PNG_MAGIC.startswith(data[:8]) and b"IEND" not in data[-12:]:
        return _png_header_end(data)
    return None


_HEADER_STEPS = 4096  # segments or chunks walked before the pixels: a real file has tens


def jpeg_ends_whole(data: bytes) -> bool:
    """Whether a JPEG ends as a whole one does, with its EOI (zeros after it allowed: a padded
    copy): one that does and still fails to decode is damaged, not cut (a cut one padded with
    zeros, as a failed download leaves it, ends in its entropy-coded data)."""
    return data.rstrip(b"\x00").endswith(b"\xff\xd9")


_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # a PNG's last chunk: no data, its fixed CRC


def png_ends_whole(data: bytes) -> bool:
    """Whether a PNG is whole: it ends with its IEND chunk (zeros after it allowed), or its chunks
    walk to an IEND (bytes after it allowed); a damaged chunk length stops the walk. A cut one,
    padded with zeros or not, ends inside a chunk. One that fails to decode is damaged, not cut."""
    if data[:8] != PNG_MAGIC:
        return False
    if data.rstrip(b"\x00").endswith(_IEND):
        return True
    pos = 8
    for _ in range(_HEADER_STEPS + _CHUNK_STEPS):
        if pos + 8 > len(data):
            return False
        if data[pos + 4 : pos + 8] == b"IEND":
            return True
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
    return False


def gif_ends_whole(data: bytes) -> bool:
    """Whether a GIF is whole: its blocks walk to its trailer (0x3B; bytes after it allowed), or it
    ends with an image's data terminator and the trailer (damage that zeroes a sub-block's size
    stops the walk). A cut one, zeros after it or not, ends inside its data. One that fails to
    decode is damaged, not cut."""
    if gif_screen(data) is None:
        return False
    if data.endswith(b"\x00;"):
        return True
    pos, steps = GIF_SCREEN + gif_colour_table(data[10]), PAGE_WALK_STEPS
    while pos < len(data) and steps > 0:
        introducer = data[pos]
        if introducer == 0x3B:
            return True
        if introducer == 0x2C and pos + 10 <= len(data):
            pos += 10 + gif_colour_table(data[pos + 9]) + 1
        elif introducer == 0x21:
            pos += 2
        else:
            return False
        pos, steps = gif_sub_blocks(data, pos, steps)
        pos += 1
        steps -= 1
    return False


def _jpeg_header_end(data: bytes) -> int | None:
    """Where a JPEG's marker segments before its first scan end, when the data stops short of them
    (a download cut in its EXIF, ICC profile, tables or frame: Pillow said `corrupt_header`, or
    `not_an_image`); None when the first scan's header is whole (a cut in its entropy-coded data
    is libjpeg's to say), or the walk meets what is no marker or no segment's start
    (`_segment_starts`: a damaged file, not a cut one)."""
    pos, end = 2, len(data)
    for _ in range(_HEADER_STEPS):
        if pos + 2 > end:
            return pos + 2
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF or marker in _STANDALONE:  # a fill byte, TEM or RST: no length
            pos += 1 if marker == 0xFF else 2
            continue
        if marker in (0x00, 0xD8, _EOI):
            return None
        if pos + 4 > end:
            return pos + 4
        length = _u16be(data, pos + 2)
        if length < 2:
            return None
        if pos + 2 + length > end:
            return pos + 2 + length if _segment_starts(marker, data[pos + 4 : pos + 8]) else None
        if marker == _SOS:
            return None
        pos += 2 + length
    return None


def _segment_starts(marker: int, head: bytes) -> bool:
    """Whether the first bytes of a segment's payload (up to 4 the data holds) are as a writer
    starts one: an APPn's identifier (`JFIF`, `Exif`, `ICC_PROFILE`, `MPF`, `http://ns.adobe.com`,
    `Adobe`, `Photoshop`), a table's class and index (DQT, DHT), a frame's sample precision. A run
    of noise after a marker (a damaged header) is no segment a download was cut in."""
    if not head:
        return True
    if 0xE0 <= marker <= 0xEF:  # printable ASCII: 1 in 50 runs of noise
        return all(0x20 < byte < 0x7F for byte in head[:4])
    if marker in (0xDB, 0xC4):
        return head[0] >> 4 <= 1 and head[0] & 15 <= 3
    if marker in _SOF:
        return head[0] in (8, 12, 16) or marker == JPEG_LS_SOF
    return True


def _png_header_end(data: bytes) -> int | None:
    """Where a PNG's signature and chunks end, when the data stops short of them (a download cut in
    its iCCP, zTXt or eXIf before the pixels: Pillow said `corrupt_header`, or `not_an_image` in
    the signature; or in a tEXt after them, ImageMagick's dates: Pillow's "Truncated File Read"
    was `decode_error`); None at IEND (bytes after it are no cut), or at a chunk no writer makes
    (a damaged file, not a cut one). Past the first IDAT, `_CHUNK_STEPS` chunks at most."""
    pos, end = 8, len(data)
    if end < pos:
        return pos
    steps, pixels = _HEADER_STEPS, False
    while steps:
        steps -= 1
        if pos + 8 > end:
            return pos + 12
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        if length > 0x7FFFFFFF or not kind.isalpha() or kind == b"IEND":
            return None
        if kind == b"IDAT" and not pixels:  # the pixels' chunks, 8 KiB each as libpng writes them
            steps, pixels = _CHUNK_STEPS, True
        if pos + 12 + length > end:
            return pos + 12 + length
        pos += 12 + length
    return None


_CHUNK_STEPS = 1 << 16  # chunks walked from the first IDAT on, only after a failed decode (libpng's 8 KiB: 512 MiB)


def _bmp_length(data: bytes) -> int:
    """A BMP's length: its file header's bfSize, which Pillow never reads; for an RLE one whose
    bfSize is 0 (some writers leave it so) the offset of its pixels and their biSizeImage."""
    size = int.from_bytes(data[2:6], "little")
    if size == 0 and int.from_bytes(data[14:18], "little") >= 40 and int.from_bytes(data[30:34], "little") in _BMP_RLE:
        return int.from_bytes(data[10:14], "little") + int.from_bytes(data[34:38], "little")
    return size


def _pnm_length(data: bytes) -> int | None:
    """A binary PGM's or PPM's length: its header (width, height, maxval, after whitespace or comments
    however long, in its first `_PNM_HEAD` bytes; then one whitespace byte), and its samples."""
    head, pos, fields = data[:_PNM_HEAD], 2, []
    for _ in range(3):
        field = _PNM_FIELD.match(head, pos)
        if field is None:
            return None
        fields.append(int(field.group(1)))
        pos = field.end()
    width, height, maxval = fields
    if not head[pos : pos + 1].isspace() or maxval > _PNM_MAXVAL:
        return None
    return pos + 1 + width * height * (3 if data[1:2] == b"6" else 1) * (2 if maxval > 255 else 1)


# bytes a value of each TIFF field type takes (TIFF 6.0 section 2; 16-18: BigTIFF's 8-byte ones)
_TIFF_TYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8,
                    18: 8}


def _tiff_ifd_end(data: bytes, order: str, big: bool = False) -> int:
    """Where a TIFF's first IFD and what it points at end: its entry count, its entries and the next
    IFD's offset, the values of more than 4 bytes its entries keep outside it (at most
    `_TIFF_ENTRIES` entries read), and its strips or tiles (`_tiff_spans`). A TIFF cut in its
    IFD (a download cut in its last few hundred bytes, where libtiff, Pillow and ImageMagick write
    it) was `unsupported_format`, "a sample layout Pillow cannot read"; one cut in its compressed
    pixels after an IFD written first (tifffile's) the same, "decoder error -2".

    What lies past the end is believed only as a cut leaves it (`_cut_at_end`): a damaged but whole
    TIFF (a bit flip or zeroed bytes in its IFD, an offset or byte count pointing past the end) was
    `truncated` too; its end is then that of what lies inside the file. A BigTIFF (`big`: 8-byte
    offsets and counts, 20-byte entries) is judged alike: one cut before its IFD was `not_an_image`."""
    ifd = int.from_bytes(data[8:16] if big else data[4:8], order)
    if ifd + _ifd_widths(big)[0] > len(data):  # cut before its IFD (libtiff's layout: the IFD after the pixels)
        return ifd + _ifd_widths(big)[0]
    spans = _tiff_spans(data, ifd, order, big)
    if _cut_at_end(data, spans, _later_ifds(data, ifd, order, big)) and _entries_in_order(data, ifd, order, big):
        return max(span_end for _, span_end, _ in spans)
    return max((span_end for _, span_end, _ in spans if span_end <= len(data)), default=len(data))


def tiff_ifd_in_zeros(data: bytes) -> int | None:
    """The offset of a TIFF's first IFD when it lies in zeros that go on to the end of the file
    (libtiff, Pillow, ImageMagick and GDAL write the IFD after the pixels: a download cut before
    it and padded with zeros to its length, as a failed one leaves it), else None; not one in a
    writer's last few zero bytes (an IFD offset damaged to point there)."""
    head = tiff_layout(data)
    if head is None or len(data) < 16:
        return None
    ifd = first_ifd(data, head)
    return ifd if 8 <= ifd <= len(data) - 16 and not data[ifd:].strip(b"\x00") else None  # an IFD holds 18 or more


_TIFF_GAP = 64  # bytes writers leave between an IFD's values (alignment, a value not listed here)


def _cut_at_end(data: bytes, spans: list[tuple[int, int, bool]], later: Later | None = None) -> bool:
    """Whether the (start, end, is text) byte spans a TIFF declares (its IFD first) are as a cut at
    the end of `data` leaves them: the IFD runs over the end, or another span does, starting where
    those read whole end (writers pack them, `_TIFF_GAP` bytes apart at most: a cut may lie
    between two), the later IFDs of its chain and their SubIFDs among them, with their own values,
    strips and tiles (`later`: `_later_ifds`), and, a text value, holding no NUL before the end
    (TIFF 6.0: a text's last byte is NUL). Or a text runs past the end starting after the chain's
    first IFD past the end, the layout of tifffile's OME-TIFF (the first page's pixels, the other
    pages', their IFDs, then the OME-XML the first IFD's ImageDescription points at; a tiled one or
    a pyramid has each page's IFD before its tiles, its SubIFDs after the pages): cut after its
    first page it was `unsupported_format` or `not_an_image`. A span of a damaged file points past
    the end alone, overlaps the whole ones or leaves a gap before it, or holds its whole text (its
    count or offset damaged)."""
    length = len(data)
    if spans[0][1] > length:  # cut in the IFD (the first span): what it points at is not all known
        return True
    later = later or Later(0, 0, [])
    inside = max(max((end for _, end, _ in spans if end <= length), default=0), later.held)
    spans = spans + later.spans
    # where all the spans read whole end, later pages' own included: judged only for a span the data
    # holds a part of (a whole file's damaged offset a few bytes past its last page's data is no
    # cut; nor, alike, a cut in a writer's few bytes of padding before a span)
    held = max(inside, max((end for _, end, _ in later.spans if end <= length), default=0))
    return any(length < end and not (text and 0 in data[start:length])
               and (_near(start, held if start < length else inside)
                    or (text and 0 < later.past and inside <= later.past <= start))
               for start, end, text in spans)


def _near(start: int, held: int) -> bool:
    """Whether a span starting at `start` follows those ending at `held` as a writer packs them."""
    return held <= start <= held + _TIFF_GAP


class Later(NamedTuple):
    """What a TIFF's IFD chain after its first IFD declares (`_later_ifds`)."""

    held: int  # where the last later IFD of the chain the data holds whole ends (0: none)
    past: int  # the offset of the chain's first IFD past the end of the data, or a SubIFD's (0: none)
    spans: list[tuple[int, int, bool]]  # the spans (`_tiff_spans`) of the later IFDs and SubIFDs nearest the end


def _later_ifds(data: bytes, ifd: int, order: str, big: bool = False) -> Later:
    """The IFDs after the one at `ifd` in its chain (within `_HEADER_STEPS`, one a plane of an
    OME-TIFF; the chain ending or looping within them past none): where those the data holds whole
    end, the first past the end (or the nearest SubIFD past it), and the spans (`_tiff_spans`) of the `_TIFF_IFDS` nearest its end
    and of the SubIFDs of those and of the first (a pyramid's levels), `2 * _TIFF_IFDS` at most,
    those nearest the end: where a cut in a later page or level lies."""
    counted, entry, width = _ifd_widths(big)
    first, held, past, seen, chain = ifd, 0, 0, {ifd}, []
    for _ in range(_HEADER_STEPS):
        at = ifd + counted + entry * int.from_bytes(data[ifd : ifd + counted], order)
        ifd = int.from_bytes(data[at : at + width], order) if at + width <= len(data) else 0
        if ifd < 8 or ifd in seen:
            break
        if ifd < len(data):
            chain.append(ifd)
        end = ifd + counted + entry * int.from_bytes(data[ifd : ifd + counted], order) + width
        if ifd + counted > len(data) or end > len(data):
            past = ifd
            break
        held, seen = end, seen | {ifd}
    near = chain[-_TIFF_IFDS:]
    subs = {sub for at in (first, *near) for sub in _sub_ifds(data, at, order, big)}
    beyond = [sub for sub in subs if sub >= len(data)]  # a pyramid's levels: their IFDs follow their tiles
    past = min((at for at in (past, *beyond) if at), default=0)
    chosen = sorted({at for at in (*near, *subs) if 8 <= at < len(data)} - {first}, reverse=True)[: 2 * _TIFF_IFDS]
    return Later(held, past, [span for at in chosen for span in _tiff_spans(data, at, order, big)])


def _sub_ifds(data: bytes, ifd: int, order: str, big: bool = False) -> list[int]:
    """The SubIFD offsets (tag 330) of the IFD at `ifd`, `_TIFF_IFDS` at most."""
    entries, _ = _tiff_ifd(data, ifd, order, big)
    return _tiff_values(data, entries[_SUB_IFDS], order, big) if _SUB_IFDS in entries else []


def _entries_in_order(data: bytes, ifd: int, order: str, big: bool = False) -> bool:
    """Whether the entries of the IFD at `ifd` that the data holds are as TIFF 6.0 requires: ascending
    tags of known field types (a damaged entry count reads what follows as entries), a
    BitsPerSample for each sample, as many byte counts as strip or tile offsets, and byte counts
    a strip or tile could hold (a damaged one points past the end as a cut one does)."""
    counted, size, _ = _ifd_widths(big)
    count = min(int.from_bytes(data[ifd : ifd + counted], order), _TIFF_ENTRIES)
    tags, kinds = [], []
    for at in range(ifd + counted, min(ifd + counted + size * count, len(data) - size + 1), size):
        tags.append(int.from_bytes(data[at : at + 2], order))
        kinds.append(int.from_bytes(data[at + 2 : at + 4], order))
    if not (all(a < b for a, b in zip(tags, tags[1:])) and all(kind in _TIFF_TYPE_BYTES for kind in kinds)):
        return False
    entries, _ = _tiff_ifd(data, ifd, order, big)  # a tag the data does not hold (a cut IFD) is not judged
    if 258 in entries and 277 in entries and entries[258][1] != _tiff_value(data, entries[277], order, 0, big):
        return False
    return all(_pieces_plausible(data, entries, order, offsets, counts, big) for offsets, counts in _TIFF_PIXEL_TAGS)


def _pieces_plausible(data: bytes, entries: dict[int, tuple[int, int, int]], order: str, offsets: int,
                      counts: int, big: bool = False) -> bool:
    """Whether a TIFF's strips (or tiles) have one byte count per offset, each of at most twice what
    its pixels hold uncompressed (compressed noise grows a little; 4 KiB to spare); true when the
    data holds only one of the two tags (an IFD cut between them)."""
    if offsets not in entries or counts not in entries:
        return True
    if entries[offsets][1] != entries[counts][1]:
        return False

    def value(tag: int) -> int | None:
        return _tiff_value(data, entries[tag], order, 0, big) if tag in entries else None

    height = value(257)
    width, rows = (value(256), min(height or 0, value(278) or height or 0)) if offsets == 273 else (value(322),
                                                                                                    value(323))
    bits = _tiff_values(data, entries[258], order, big) if 258 in entries else [1]
    if width is None or height is None or rows is None or len(bits) < min(entries.get(258, (0, 1))[1], _TIFF_IFDS):
        return True  # a size the data does not hold (a cut IFD) is not judged
    most = 2 * width * rows * max(sum(bits), 1) // 8 + 4096
    pieces = entries[counts][1]
    return all((_tiff_value(data, entries[counts], order, index, big) or 0) <= most
               for index in {0, pieces - 1, _piece_at(data, entries[offsets], order, pieces, len(data), big)})


def _tiff_spans(data: bytes, ifd: int, order: str, big: bool = False) -> list[tuple[int, int, bool]]:
    """The (start, end, is text) byte spans the IFD at `ifd` declares: itself, its values kept
    outside it, and its strips or tiles (`_tiff_pixel_spans`)."""
    entries, _ = _tiff_ifd(data, ifd, order, big)
    counted, entry, width = _ifd_widths(big)
    spans = [(ifd, ifd + counted + entry * int.from_bytes(data[ifd : ifd + counted], order) + width, False)]
    for kind, count, field in entries.values():
        size = _TIFF_TYPE_BYTES.get(kind, 0) * count
        if size > width:
            offset = int.from_bytes(data[field : field + width], order)
            spans.append((offset, offset + size, kind == _TIFF_ASCII))
    return spans + _tiff_pixel_spans(data, entries, order, big)


_TIFF_ASCII = 2  # the field type of a text value
# (offsets, byte counts) of a TIFF's pixels: StripOffsets/StripByteCounts, TileOffsets/TileByteCounts
_TIFF_PIXEL_TAGS = ((273, 279), (324, 325))


def _tiff_pixel_spans(data: bytes, entries: dict[int, tuple[int, int, int]],
                      order: str, big: bool = False) -> list[tuple[int, int, bool]]:
    """The spans of an IFD's strips or tiles: the first and last `_TIFF_IFDS` of them (writers lay
    them out in order; any of them is a lower bound) and the one where the data ends, found by
    bisecting their offsets (the strip a download is cut in)."""
    spans = []
    for offsets, counts in _TIFF_PIXEL_TAGS:
        if offsets not in entries or counts not in entries:
            continue
        pieces = min(entries[offsets][1], entries[counts][1])
        chosen = {*range(min(pieces, _TIFF_IFDS)), *range(max(0, pieces - _TIFF_IFDS), pieces)}
        at_end = _piece_at(data, entries[offsets], order, pieces, len(data), big)
        chosen.update((at_end, max(0, at_end - 1)))  # and the one before it: where it starts
        for index in sorted(chosen):
            offset = _tiff_value(data, entries[offsets], order, index, big)
            count = _tiff_value(data, entries[counts], order, index, big)
            if offset is not None and count is not None:
                spans.append((offset, offset + count, False))
    return spans


def _piece_at(data: bytes, entry: tuple[int, int, int], order: str, pieces: int, position: int,
              big: bool = False) -> int:
    """The last strip or tile whose offset is at most `position`, were the offsets ascending."""
    low, high = 0, pieces - 1
    while low < high:
        middle = (low + high + 1) // 2
        offset = _tiff_value(data, entry, order, middle, big)
        if offset is not None and offset <= position:
            low = middle
        else:
            high = middle - 1
    return low


def _boxes_end(data: bytes) -> int:
    """Where the top-level ISO boxes end, or the end of the first one that runs past the data."""
    pos = 0
    for _ in range(_BOX_LIMIT):
        if pos + 8 > len(data):
            break
        size, head = int.from_bytes(data[pos : pos + 4], "big"), 8
        if size == 1:
            size, head = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        elif size == 0:  # to the end of the file
            return len(data)
        if size < head:
            break
        pos += size
    return pos


# Zeros after a cut. A download cut short and then padded with zeros (aria2c's preallocation, a
# BitTorrent client's file, `curl -C` over a preallocated one, ddrescue's unread sectors) satisfies
# the length its container declares (`declared_length`); libavif and libde265 decode its zeros to
# garbage without a word. The coded data of a whole AVIF or HEIC does not end in a run of zeros: an
# HEVC NAL unit never ends in a zero byte (H.265 7.4.2: cabac_zero_words end in 0x03), an AV1 OBU
# ends in its trailing one bit (AV1 5.3.4). Measured on 844 whole WebP/AVIF/HEIC files of cwebp,
# Pillow, ImageMagick, heif-enc and pillow-heif (flat, noise, letterboxed, 1x1 to 1920x1080): at
# most 1 zero byte ends one. Left out, each for whole files that do end so: a lossless WebP (VP8L)
# of the fastest setting (`cwebp -z 0`, Pillow's `method=0`: a black or transparent band's codes
# are all zero bits, a letterboxed photo's stream ends in 14,193 zero bytes), a lossy one (VP8: 792
# for a letterboxed photo), a JPEG whose EOI alone is missing and a PNG whose IEND alone is (both
# decode whole, zero padding after them), an icon's PNG the same.
ZEROS_AFTER_CUT = 16  # zero bytes ending an HEVC or AV1 item's coded data: a cut


_CODED_ITEMS = (b"hvc1", b"av01")  # HEVC and AV1 coded image items (a grid's tiles, an alpha plane)


def _items(data: bytes, idat: bool = False) -> list[tuple[bytes, int, int]] | None:
    """(item type, file offset, length) of each extent of an AVIF's or HEIF's items, by its `iinf`
    (item types) and `iloc` (where their data lies) boxes; with `idat`, also those held in its
    `idat` box and those of length 0 (to the end of their file or idat: `_iloc_extents`). [] when
    the boxes are missing or malformed; None when the walk's budget (`_BOX_LIMIT` boxes, items
    and extents) ran out before them: 5,000 empty `free` boxes before `meta` hid a 200 MB Exif
    item, read as none."""
    budget = [_BOX_LIMIT]
    meta = next(((b + 4, e) for k, b, e in _boxes(data, 0, len(data), budget) if k == b"meta"), None)
    if meta is None:
        return None if budget[0] < 0 else []
    types: dict[int, bytes] = {}
    iloc: tuple[int, int] | None = None
    held: tuple[int, int] | None = None
    for kind, begin, stop in _boxes(data, meta[0], meta[1], budget):
        if kind == b"iinf" and stop - begin >= 6:
            count_size = 2 if data[begin] == 0 else 4
            for inner, b, e in _boxes(data, begin + 4 + count_size, stop, budget):
                if inner == b"infe" and e - b >= 12 and data[b] >= 2:  # version 2 or 3: an item type
                    id_size = 2 if data[b] == 2 else 4
                    item = int.from_bytes(data[b + 4 : b + 4 + id_size], "big")
                    types[item] = data[b + 6 + id_size : b + 10 + id_size]
        elif kind == b"iloc" and stop - begin >= 8:
            iloc = (begin, stop)
        elif kind == b"idat" and held is None:
            held = (begin, stop)
    extents = _iloc_extents(data, *iloc, (held or (0, 0)) if idat else None) if iloc else []
    if budget[0] < 0 or extents is None:
        return None
    return [(types[item], start, length) for item, start, length in extents if item in types]


def _coded_items(data: bytes) -> list[tuple[bytes, int, int]]:
    """(item type, file offset, length) of each extent of an AVIF's or HEIF's coded image items
    (`_items`): not its Exif or XMP items, whose data may end in zeros."""
    return [item for item in _items(data) or [] if item[0] in _CODED_ITEMS]


def heif_exif_extents(data: bytes) -> list[tuple[int, int]] | None:
    """(file offset, length) of each extent of an AVIF's or HEIF's `Exif` items, wherever they lie
    (the file, its `idat`), cut to the bytes there: what libavif and libheif read of them, and
    Pillow's AVIF open then loads (`decode_budget.check_header_held`). [] for another file; None
    for one whose boxes run past the walk's budget (`_items`): they cannot be judged."""
    if data[4:8] != b"ftyp":
        return []
    items = _items(data, idat=True)
    if items is None:
        return None
    return [(start, min(length, len(data) - start)) for kind, start, length in items
            if kind == b"Exif" and start < len(data)]


def _iloc_extents(data: bytes, begin: int, end: int,
                  idat: tuple[int, int] | None = None) -> list[tuple[int, int, int]] | None:
    """(item ID, file offset, length) of an `iloc` box's extents held in the file (construction
    method 0, a length given) (ISO/IEC 14496-12 8.11.3), in bounded steps. With `idat` (the `idat`
    box's payload start and end), also those held there (method 1), and those of length 0, which
    run to the end of the file (the idat). None where the steps ran out inside the box."""
    version, out = data[begin], []
    offset_size, length_size = data[begin + 4] >> 4, data[begin + 4] & 15
    base_size, index_size = data[begin + 5] >> 4, (data[begin + 5] & 15) if version in (1, 2) else 0
    id_size = 2 if version < 2 else 4
    count = int.from_bytes(data[begin + 6 : begin + 6 + id_size], "big")
    pos = begin + 6 + id_size

    def field(size: int) -> int:
        nonlocal pos
        pos += size
        return int.from_bytes(data[pos - size : pos], "big")

    steps = _BOX_LIMIT  # items and extents read in all (of 0-byte fields, a walk that never ends)
    for _ in range(count):
        if steps <= 0:
            return None
        steps -= 1
        item = field(id_size)
        method = field(2) & 15 if version in (1, 2) else 0
        field(2)  # data_reference_index
        base = field(base_size)
        for _ in range(field(2)):
            if steps <= 0:
                return None
            steps -= 1
            field(index_size)
            offset, length = field(offset_size), field(length_size)
            if pos > end:
                return out
            if method == 0 and length:
                out.append((item, base + offset, length))
            elif idat is not None and method in (0, 1):
                start = base + offset + (idat[0] if method else 0)
                out.append((item, start, length or max(0, (idat[1] if method else len(data)) - start)))
        if pos > end:
            return out
    return out


def coded_data_in_zeros(data: bytes, max_pixels: int | None = None,
                        max_bytes: int | None = None) -> tuple[str, int, int] | None:
    """For an AVIF or HEIC whose data (the bytes its boxes declare) end in a run of zeros that takes
    the last `ZEROS_AFTER_CUT` or more bytes of an HEVC or AV1 image item's extent, or an RLE BMP
    whose pixels so end with no end-of-bitmap escape (`_rle_bmp_in_zeros`): (what the zeros took,
    where they begin, how many of its bytes they take), as a cut padded with zeros leaves it; else
    None. Zeros after the declared data (a whole file padded) are not looked at. A PNG that walks
    to no IEND and ends in zeros is one whose image stream does not end (`_png_stream_unended`)."""
    if data[:8] == PNG_MAGIC:
        return _png_stream_unended(data, max_pixels, max_bytes)
    if (data[:2] == b"BM" and int.from_bytes(data[14:18], "little") >= 40
            and int.from_bytes(data[30:34], "little") in _BMP_RLE):
        return _rle_bmp_in_zeros(data)
    if data[4:8] != b"ftyp":
        return None
    end = min(len(data), _boxes_end(data))
    if data[max(0, end - ZEROS_AFTER_CUT) : end].strip(b"\x00"):  # its last bytes hold data: no copy of the file
        return None
    zeros_from = len(data[:end].rstrip(b"\x00"))
    for kind, start, length in _coded_items(data):
        stop = start + length
        if stop <= end and zeros_from <= stop - ZEROS_AFTER_CUT:
            return kind.decode(), max(zeros_from, start), stop - max(zeros_from, start)
    return None


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples a pixel, by IHDR's colour type


def _png_stream_unended(data: bytes, max_pixels: int | None = None,
                        max_bytes: int | None = None) -> tuple[str, int, int] | None:
    """("PNG", where the zeros begin, how many) for a PNG whose chunks walk to no IEND, that ends in
    `ZEROS_AFTER_CUT` or more zeros, and whose IDAT data (read up to the zeros, inflated into a
    discarded buffer, no further than its rows hold) holds no whole zlib stream: cut, then padded
    (a cut at 99% padded decoded, its last rows wrong, and a 16-bit one through OpenCV at 90%;
    others were `decode_error` "broken PNG file"). A whole one missing only its IEND, then zeros,
    ends its stream (and decodes whole); a file of more chunks than the walk's bound is left to
    the decoder. One declaring more pixels than `max_pixels`, or rows past `max_bytes`, is left to
    the budgets judged after (it is not inflated here: a hostile stream of zeros that never ends cost
    2.2 CPU-s a MiB before its `decompression_bomb`). Data zlib refuses before the zeros is damage,
    the decoder's to name; refused in an IDAT that runs into them, a cut."""
    zeros_from = len(data.rstrip(b"\x00"))
    if len(data) - zeros_from < ZEROS_AFTER_CUT or png_ends_whole(data) or len(data) < 33:
        return None
    (width, height), (depth, colour) = png_size(data) or (0, 0), png_header(data) or (8, 6)
    rows = height * (1 + -(-width * _PNG_CHANNELS.get(colour, 4) * depth // 8))
    if (max_pixels is not None and width * height > max_pixels) or (max_bytes is not None and rows > max_bytes):
        return None
    inflate, pos = BoundedInflate(2 * rows + 4096), 8  # an interlaced one's passes: under twice its rows
    for _ in range(_HEADER_STEPS + _CHUNK_STEPS):
        if pos + 8 > zeros_from:
            break
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            inflate.feed(memoryview(data)[pos + 8 : min(pos + 8 + length, len(data))])
            if inflate.refused:
                if pos + 8 + length <= zeros_from:  # refused before the zeros: damage, not a cut
                    return None
                break
            if inflate.ended or inflate.past:
                return None  # its stream ended whole (or is the decoder's to judge)
        pos += 12 + length
    else:
        return None  # more chunks than the walk takes
    return None if inflate.ended else ("PNG", zeros_from, len(data) - zeros_from)


def _rle_bmp_in_zeros(data: bytes) -> tuple[str, int, int] | None:
    """("RLE BMP", where the zeros begin, how many) for an RLE8 or RLE4 BMP whose pixels (to its
    declared length) end in `ZEROS_AFTER_CUT` or more zeros: a whole one ends with its end-of-bitmap
    escape (0x00 0x01), and zeros read as end-of-line escapes (Pillow said `decode_error` "not
    enough image data" of a cut one padded); else None."""
    end = min(len(data), _bmp_length(data) or len(data))
    if data[max(0, end - ZEROS_AFTER_CUT) : end].strip(b"\x00"):
        return None
    zeros_from = len(data[:end].rstrip(b"\x00"))
    if end - zeros_from < ZEROS_AFTER_CUT or zeros_from < int.from_bytes(data[10:14], "little"):
        return None
    return "RLE BMP", zeros_from, end - zeros_from


def embedded_images(data: bytes) -> list[Embedded]:
    """The images inside an ICO or ICNS file ([] for any other file)."""
    if data[:4] == ICO_MAGIC:
        return _ico_images(data)
    if data[:4] == ICNS_MAGIC:
        return _icns_images(data)
    return []


# Camera raws. Those that begin as a TIFF (DNG, Canon's CR2, Nikon's NEF, Sony's ARW, Pentax's
# PEF, ...) keep a small preview or thumbnail in IFD0 (DNG: NewSubFileType 1, reduced resolution)
# and the sensor's samples in a SubIFD (tag 330) or a later IFD, which Pillow opens as a TIFF of
# the preview; the others begin with bytes of their own. Tags as DNG 1.x and TIFF/EP name them.
_RAW_MAGICS = ((b"FUJIFILMCCD-RAW", "RAF (Fujifilm camera raw)"), (b"IIRO", "ORF (Olympus camera raw)"),
               (b"IIRS", "ORF (Olympus camera raw)"), (b"MMOR", "ORF (Olympus camera raw)"),
               (b"IIU\x00", "RW2 (Panasonic camera raw)"), (b"FOVb", "X3F (Sigma camera raw)"),
               (b"\x00MRM", "MRW (Minolta camera raw)"))
_DNG_VERSION, _MAKE, _PHOTOMETRIC, _SUB_IFDS = 50706, 271, 262, 330
_RAW_PHOTOMETRIC = (32803, 34892)  # CFA (TIFF/EP), LinearRaw (DNG)
_RAW_MAKES = (("NIKON", "NEF (Nikon camera raw)"), ("SONY", "ARW (Sony camera raw)"),
              ("PENTAX", "PEF (Pentax camera raw)"), ("RICOH", "PEF (Pentax camera raw)"),
              ("SAMSUNG", "SRW (Samsung camera raw)"), ("CANON", "CR2 (Canon camera raw)"))
_TIFF_IFDS = 32  # IFDs walked, in IFD0's chain and their SubIFDs (a raw has a handful)
_TIFF_ENTRIES = 1024  # entries read of one IFD


def _ifd_widths(big: bool) -> tuple[int, int, int]:
    """The bytes of an IFD's entry count, of one entry, and of an offset or value field: a TIFF's
    2, 12 and 4, a BigTIFF's 8, 20 and 8."""
    return (8, 20, 8) if big else (2, 12, 4)


def _tiff_ifd(data: bytes, pos: int, order: str, big: bool = False) -> tuple[dict[int, tuple[int, int, int]], int]:
    """An IFD's entries (tag -> type, count, value or offset field) and the next IFD's offset."""
    counted, size, width = _ifd_widths(big)
    if pos < 8 or pos + counted > len(data):
        return {}, 0
    count = min(int.from_bytes(data[pos : pos + counted], order), _TIFF_ENTRIES)
    entries = {}
    for at in range(pos + counted, min(pos + counted + size * count, len(data) - size + 1), size):
        tag, kind = int.from_bytes(data[at : at + 2], order), int.from_bytes(data[at + 2 : at + 4], order)
        entries[tag] = (kind, int.from_bytes(data[at + 4 : at + 4 + width], order), at + 4 + width)
    end = pos + counted + size * count
    return entries, int.from_bytes(data[end : end + width], order) if end + width <= len(data) else 0


def _tiff_values(data: bytes, entry: tuple[int, int, int], order: str, big: bool = False) -> list[int]:
    """A SHORT, LONG or IFD entry's values (at most `_TIFF_IFDS`)."""
    values = (_tiff_value(data, entry, order, index, big) for index in range(min(entry[1], _TIFF_IFDS)))
    return [value for value in values if value is not None]


def _tiff_value(data: bytes, entry: tuple[int, int, int], order: str, index: int, big: bool = False) -> int | None:
    """The `index`th value of a SHORT, LONG or IFD entry (and a BigTIFF's LONG8 or IFD8); None for
    another type, or one not in the data."""
    kind, count, field = entry
    size = {3: 2, 4: 4, 13: 4, 16: 8, 18: 8}.get(kind)
    width = _ifd_widths(big)[2]
    if size is None or not 0 <= index < count:
        return None
    at = (field if size * count <= width else int.from_bytes(data[field : field + width], order)) + size * index
    return int.from_bytes(data[at : at + size], order) if at + size <= len(data) else None


def _tiff_text(data: bytes, entry: tuple[int, int, int], order: str) -> str:
    kind, count, field = entry
    if kind != 2:
        return ""
    count = min(count, 64)
    at = field if count <= 4 else int.from_bytes(data[field : field + 4], order)
    text = data[at : at + count].split(b"\x00")[0].decode("latin-1")
    return "".join(c for c in text if c.isascii() and (c.isalnum() or c in " -_.")).strip()[:32]


def camera_raw(data: bytes) -> str | None:
    """The camera raw format of these bytes, named ("DNG (camera raw)"), or None: by their first
    bytes (CR2's "CR" after the TIFF header, RAF, ORF, RW2, ...), or for a TIFF by its tags: a
    DNGVersion in IFD0, or an IFD (in IFD0's chain or a SubIFD of one) of CFA or LinearRaw samples,
    named by its Make. The walk is bounded (`_TIFF_IFDS` IFDs) and never loops."""
    for magic, name in _RAW_MAGICS:
        if data.startswith(magic):
            return name
    head = tiff_layout(data)
    if head is None or head.big or len(data) < 8:
        return None
    order = head.order
    if data[8:10] == b"CR" and data[10:11] == b"\x02":
        return "CR2 (Canon camera raw)"
    pending, seen, raw, make = [int.from_bytes(data[4:8], order)], set(), False, ""
    while pending and len(seen) < _TIFF_IFDS:
        pos = pending.pop(0)
        if pos in seen:
            continue
        seen.add(pos)
        entries, following = _tiff_ifd(data, pos, order)
        if len(seen) == 1 and _DNG_VERSION in entries:
            return "DNG (camera raw)"
        if _MAKE in entries and not make:
            make = _tiff_text(data, entries[_MAKE], order)
        if _PHOTOMETRIC in entries and any(v in _RAW_PHOTOMETRIC
                                           for v in _tiff_values(data, entries[_PHOTOMETRIC], order)[:1]):
            raw = True
        if _SUB_IFDS in entries:
            pending.extend(_tiff_values(data, entries[_SUB_IFDS], order))
        if following:
            pending.append(following)
    if not raw:
        return None
    return next((name for prefix, name in _RAW_MAKES if make.upper().startswith(prefix)),
                f"camera raw ({make})" if make else "camera raw (TIFF/EP CFA samples)")


@dataclass(frozen=True)
class Pages:
    """How many pages (a TIFF's IFDs) or frames (a GIF's images) a file holds: `exact` is False
    when the walk stopped at its step limit, so `count` is only a lower bound."""

    count: int = 1
    exact: bool = True


# blocks or IFDs a page walk reads at most: a 10,000-frame GIF of 255-byte data sub-blocks walks
# in well under a second in this loop; a file of 1-byte sub-blocks stops here, its count a lower bound
PAGE_WALK_STEPS = 1 << 20
GIF_SCREEN = 13  # "GIF89a", the logical screen's width and height, flags, background, aspect
GIF_SIGNATURES = (b"GIF87a", b"GIF89a")


def gif_screen(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a GIF's logical screen (GIF89a section 18), None if it is not a GIF."""
    if data[:6] not in GIF_SIGNATURES or len(data) < GIF_SCREEN:
        return None
    return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")


def gif_colour_table(flags: int) -> int:
    """Bytes of the colour table a GIF screen or image descriptor's packed flags announce."""
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def gif_frames(data: bytes, steps: int = PAGE_WALK_STEPS) -> Pages:
    """The image descriptors of a GIF, counted by walking its blocks (GIF89a sections 17-27):
    extensions and image data are skipped sub-block by sub-block, nothing is decoded. The count
    ends at the trailer, at the end of the bytes, or at a byte that starts no block."""
    if gif_screen(data) is None:
        return Pages()
    pos, count = GIF_SCREEN + gif_colour_table(data[10]), 0
    while pos < len(data) and steps > 0:
        introducer = data[pos]
        if introducer == 0x2C:  # image descriptor: position, size, flags, its colour table, LZW code size
            count += 1
            if pos + 10 > len(data):
                break
            pos += 10 + gif_colour_table(data[pos + 9]) + 1
        elif introducer == 0x21:  # extension: its label, then sub-blocks
            pos += 2
        else:  # the trailer (0x3B), or bytes that are no block
            break
        pos, steps = gif_sub_blocks(data, pos, steps)
        pos += 1
        steps -= 1
    return Pages(max(count, 1), steps > 0)


def gif_sub_blocks(data: bytes, pos: int, steps: int) -> tuple[int, int]:
    """Walk a GIF's data sub-blocks (GIF89a section 15) from `pos`, `steps` of them at most: where
    the walk stops and the steps left. It stops at their terminator (a 0 size: `pos` below
    `len(data)`), at the size byte of the next sub-block past the end of `data` (`pos` at or past
    `len(data)`, where a walk of a longer file goes on), or where the steps run out. One loop over
    the bytes (`gif_frames`, `sources.gif_screen`): a hostile GIF of 1-byte sub-blocks has 2^25 in
    64 MiB."""
    end = len(data)
    while pos < end and steps:
        size = data[pos]
        if not size:
            break
        pos += size + 1
        steps -= 1
    return pos, steps


def png_frames(data: bytes, steps: int = PAGE_WALK_STEPS) -> Pages:
    """The frames of an APNG (a PNG with an acTL chunk), counted by walking its chunk headers:
    one per fcTL, and the default image (IDAT) besides when no fcTL comes before it (APNG
    specification, "Structure"). The acTL's num_frames is never trusted: ffmpeg writing to a pipe
    leaves it 0xFFFFFFFF (Pillow then reports one frame), and a hostile one declares 1e9 frames.
    A still PNG's walk ends at its first IDAT; one cut or broken before its IEND counts what was
    walked; `exact` is False when the walk stopped at its step limit."""
    if png_size(data) is None:
        return Pages()
    pos, animated, frames, default_image = 8, False, 0, False
    while pos + 8 <= len(data) and steps > 0:
        steps -= 1
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        if kind == b"acTL":
            animated = True
        elif kind == b"fcTL":
            frames += 1
        elif kind == b"IDAT" and not animated:
            return Pages()  # a still PNG: its acTL would have come before its first IDAT
        elif kind == b"IDAT" and frames == 0:
            default_image = True  # shown, but not the animation's first frame
        elif kind == b"IEND":
            break
        pos += 12 + length
    return Pages(max(frames + (1 if default_image and frames else 0), 1), steps > 0)


def _next_ifd(data: bytes, pos: int, order: str, big: bool) -> int:
    """The offset of the IFD after the one at `pos` in a TIFF's (or BigTIFF's) chain, by its entry
    count and next offset; 0 when the chain ends there (an offset of 0, or of no place an IFD's
    entry count fits)."""
    counted, entry, offset = (8, 20, 8) if big else (2, 12, 4)
    end = pos + counted + entry * int.from_bytes(data[pos : pos + counted], order)
    following = int.from_bytes(data[end : end + offset], order) if end + offset <= len(data) else 0
    return following if 8 <= following <= len(data) - counted else 0


# the bytes of each number type's value: SHORT ... DOUBLE, IFD, BigTIFF's LONG8s
_TIFF_NUMBERS = {3: 2, 4: 4, 5: 8, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}


def tiff_values(data: bytes) -> int:
    """How many numbers the entries of a TIFF's (or BigTIFF's) first IFD hold, all of them (0: none
    found; over 2**20 entries: their count). Pillow's `Image.open` parses each into a Python int of a tuple, and, for an
    uncompressed one, makes a tile of each strip: a 40 MB TIFF Pillow wrote of 2 x 4,000,000 pixels
    a row a strip (`tiffinfo={278: 1}`) took 1.59 GB and 14 CPU-s to open, no pixel budget
    passed (8 Mpx). Read from the header alone, a few bytes an entry: as Pillow reads it (`tiff_head`:
    behind any header it takes), or as the writer laid it out where that holds more (`tiff_layout`:
    a big-endian BigTIFF's strips, weighed as before). A value the file's bytes cannot hold is not
    counted, as Pillow skips it ("Possibly corrupt EXIF data ... Skipping tag"): read as a classic
    TIFF, a big-endian BigTIFF's first IFD lies in its pixels, whose garbage counts said 12 G numbers."""
    heads = {tiff_head(data), tiff_layout(data)} - {None}
    return max((_ifd_numbers(data, head) for head in heads), default=0) if len(data) >= 16 else 0


def _ifd_numbers(data: bytes, head: TiffHead) -> int:
    """How many numbers the entries of the first IFD hold, the header read as `head` (`tiff_values`)."""
    order, big, ifd = head.order, head.big, first_ifd(data, head)
    width, size = (8, 20) if big else (2, 12)
    if not 8 <= ifd <= len(data) - width:
        return 0
    entries = int.from_bytes(data[ifd : ifd + width], order)
    if entries > 1 << 20:  # each entry a tag Pillow keeps (BigTIFF's count may say 2**64): never walked
        return entries
    start = ifd + width
    total = 0
    inline = 8 if big else 4
    for at in range(start, min(start + size * entries, len(data) - size + 1), size):
        each = _TIFF_NUMBERS.get(int.from_bytes(data[at + 2 : at + 4], order))
        if each is None:
            continue
        count = int.from_bytes(data[at + 4 : at + 4 + inline], order)
        if count * each > inline:  # held at an offset: Pillow skips a value the file cannot hold
            offset = int.from_bytes(data[at + 4 + inline : at + 4 + 2 * inline], order)
            if offset + count * each > len(data):
                continue
        total += count
    return total


def tiff_pages(data: bytes, steps: int = PAGE_WALK_STEPS) -> Pages:
    """The IFDs in a TIFF's (or BigTIFF's) main chain, its pages, by following each IFD's next
    offset: a loop back to an IFD seen before counts its distinct IFDs. Loops are found by Brent's
    algorithm, in constant memory (a set of the offsets seen took about 64 MiB for a 6 MiB chain
    of a million empty IFDs), at most `steps` IFDs read before the count is a lower bound."""
    head = tiff_layout(data)
    if head is None or len(data) < 16:
        return Pages()
    order, big, first = head.order, head.big, first_ifd(data, head)
    if not 8 <= first <= len(data) - (8 if big else 2):
        return Pages()
    tortoise, hare, walked, power, cycle = first, _next_ifd(data, first, order, big), 1, 1, 1
    while hare and hare != tortoise and walked < steps:
        if power == cycle:  # the tortoise jumps to the hare, the hare's next stretch twice as long
            tortoise, power, cycle = hare, power * 2, 0
        hare, walked, cycle = _next_ifd(data, hare, order, big), walked + 1, cycle + 1
    if hare and hare == tortoise:  # a loop of `cycle` IFDs, entered after `lead` others
        return Pages(_loop_lead(data, first, cycle, order, big) + cycle, True)
    return Pages(walked, walked < steps or not hare)


def _loop_lead(data: bytes, first: int, cycle: int, order: str, big: bool) -> int:
    """How many IFDs of a chain come before its loop of `cycle` IFDs (Brent's second phase)."""
    tortoise = hare = first
    for _ in range(cycle):
        hare = _next_ifd(data, hare, order, big)
    lead = 0
    while tortoise != hare:
        tortoise, hare, lead = _next_ifd(data, tortoise, order, big), _next_ifd(data, hare, order, big), lead + 1
    return lead


_BITS_PER_SAMPLE, _SAMPLES_PER_PIXEL, _SAMPLE_FORMAT = 258, 277, 339
_SAMPLE_KINDS = {1: "unsigned integer", 2: "signed integer", 3: "floating-point", 4: "undefined"}
_PHOTOMETRIC_NAMES = {0: "grey", 1: "grey", 2: "RGB", 3: "palette", 4: "mask", 5: "CMYK", 6: "YCbCr",
                      8: "CIELab", 9: "ICCLab", 10: "ITULab", 32844: "LogL", 32845: "LogLuv"}


def tiff_samples(data: bytes) -> str | None:
    """What a TIFF's first page declares of its samples, in words ("32-bit floating-point RGB"):
    its BitsPerSample, SampleFormat (TIFF 6.0 section 19) and PhotometricInterpretation, for the
    reject of a layout Pillow cannot read. None when it is no TIFF or declares no bits."""
    head = tiff_layout(data)
    if head is None or head.big or len(data) < 8:
        return None
    order = head.order
    entries, _ = _tiff_ifd(data, first_ifd(data, head), order)
    bits = _tiff_values(data, entries[_BITS_PER_SAMPLE], order)[:1] if _BITS_PER_SAMPLE in entries else []
    if not bits:
        return None
    kind = _tiff_values(data, entries[_SAMPLE_FORMAT], order)[:1] if _SAMPLE_FORMAT in entries else [1]
    photometric = _tiff_values(data, entries[_PHOTOMETRIC], order)[:1] if _PHOTOMETRIC in entries else []
    samples = _tiff_values(data, entries[_SAMPLES_PER_PIXEL], order)[:1] if _SAMPLES_PER_PIXEL in entries else [1]
    space = _PHOTOMETRIC_NAMES.get(photometric[0], f"photometric {photometric[0]}") if photometric else "colour"
    kind_name = _SAMPLE_KINDS.get(kind[0] if kind else 1, f"sample format {kind[0] if kind else 1}")
    count = samples[0] if samples else 1
    return f"{bits[0]}-bit {kind_name} {space}" + (f", {count} samples a pixel" if count > 1 else "")
