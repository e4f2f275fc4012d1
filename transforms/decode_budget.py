"""What decoding an opened image costs, judged from what it declares before any pixel is decoded:
its memory (`decode_cost`, `_held`: what each decoder holds besides Pillow's buffer, refused
`image_too_large` over the budget by `_check_budget`) and its time (`declared_decode_s`). Part of `transforms.decode`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from PIL import Image

from transforms import hdr
from transforms.errors import DecodeError
from transforms.exif_ifd import PILLOW_TIFF_FILE, STRICT_EXIF, ifd0_copied_bytes
from transforms.headers import (
    _BOX_LIMIT,
    avif_planes,
    AppSegments,
    JpegHeader,
    coefficient_bytes,
    embedded_images,
    heif_exif_extents,
    tiff_values,
    jpeg_header,
    marker_lossless,
    png_header,
    png_size,
    webp_still_size,
)
from transforms.icc_tables import held_bytes
from transforms.pillow_open import check_exif_segments
from transforms.image_colour import _wide_colour, hdr_colour
from transforms.rgb_array import STRIP_PIXELS
from transforms.tiff_head import tiff_head


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
_NO_JPEG = JpegHeader(None, AppSegments(0, 0, 0), b"")  # the walk of bytes that do not start as a JPEG


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


def length_over(data: bytes, over: float) -> bool:
    """Whether the file's length alone puts its decode over `over` CPU seconds (`declared_decode_s`)."""
    return DECODE_TIME_SAFETY * len(data) * DECODE_BYTE_NS * 1e-9 > over


def declared_decode_s(data: bytes, over: float = math.inf, header: JpegHeader | None = None) -> float | None:
    """At most how many CPU seconds `load_image` or `decode_through` spends on these bytes, from what
    they declare (`DECODE_*`): a Huffman-coded JPEG's frame size and scans, a PNG's or a still
    WebP's size, and the file's length. None for the other formats, whose headers do not bound
    their decoders' work (JPEG 2000's code blocks and layers, AV1 and HEVC, TIFF's codecs, GIF's
    frames, ...), and for a JPEG whose frame is not found. Counting a JPEG's scans walks its
    segments: a file whose length alone puts it over `over` seconds is not walked (inf); `header`,
    the walk the caller has made (`jpeg_header`), is not made again."""
    if length_over(data, over):
        return math.inf
    by_bytes = len(data) * DECODE_BYTE_NS
    scans = 1
    if data[:3] == b"\xff\xd8\xff":  # what Pillow opens as a JPEG
        layout = (header or jpeg_header(data) or _NO_JPEG).layout
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


# What Pillow's JPEG open keeps for each APPn or COM segment before the first scan besides its
# payload: a tuple, a name and a bytes object in its `applist` (in a fresh process over a million
# of them: 136 bytes an empty APP5, 72 an empty COM, 173 an APP5 of 8 bytes). A 37 MB JPEG of 64 x 48
# pixels made of 9.25 M empty APP5 segments took 1.2 GB opening it, judged on its pixels alone.
# Cameras and editors write a few dozen (EXIF, XMP, an ICC profile in up to 255 pieces).
JPEG_SEGMENT_BYTES = 176


def _segments_held(segments: int, payload: int) -> Held:
    """What Pillow keeps of a JPEG's APPn and COM segments; named where it comes to a MiB (a camera's
    few dozen come to tens of KiB: counted, not named)."""
    held = segments * JPEG_SEGMENT_BYTES + payload
    return Held(held, f"the {segments:,} APPn and COM segments before its first scan, each kept by Pillow"
                      if held >= 1 << 20 else "")


# What an AVIF's or HEIF's Exif item costs opening the file, measured as the rise of `load_image` in a
# fresh process (64 x 48 pictures): libavif (libheif) reads the item, Pillow (pillow-heif) makes bytes of
# it, and the reader holds a copy of the whole file it lies in: about 4 times the item (a 30 MB item: 115
# MiB by Pillow's AVIF open, 117 by pillow-heif's). Pillow's AVIF open then loads its IFD0
# (`exif_ifd.ifd0_copied_bytes`) and, where the container's irot/imir orientation differs, writes it
# again (`Exif.tobytes`, each entry's data its own) and keeps those bytes: about 3 times what IFD0's
# load copies (heif-enc's AVIF of a 64 KB EXIF of 300 entries of one 60 KB block: 53 MiB). pillow-heif
# does not load IFD0. A camera's Exif item is a few dozen KB.
EXIF_ITEM_COPIES = 4
AVIF_IFD0_COPIES = 3
_AVIF_BRANDS = (b"avif", b"avis", b"mif1", b"msf1")  # the major brands Pillow's AVIF plugin opens (its `_accept`)


def _heif_exif_held(data: bytes, budget: int) -> tuple[str, Held]:
    """The format ("AVIF" where Pillow's AVIF plugin takes the file, else "HEIF") and what opening
    it costs for its Exif items (`EXIF_ITEM_COPIES`, `AVIF_IFD0_COPIES`). Their IFD0 is walked only
    where the items themselves fit `budget`: their extents may all point at one large block. One
    whose boxes outrun the walk (`heif_exif_extents`: None) is `image_too_large` unopened: 5,000
    empty `free` boxes before its `meta` hid a 200 MB Exif item (+602 MiB opening it)."""
    kind = "AVIF" if data[8:12] in _AVIF_BRANDS else "HEIF"
    extents = heif_exif_extents(data)
    if extents is None:
        raise DecodeError("image_too_large", f"an {kind} whose header holds more than {_BOX_LIMIT:,} boxes, items or "
                                             "extents before its Exif items are all found (a real one holds a few "
                                             "dozen): what opening it costs cannot be judged")
    size = sum(length for _, length in extents)
    held = Held(EXIF_ITEM_COPIES * size, f"its Exif item ({size:,} bytes), copied by the reader"
                                         if size >= 1 << 20 else "")
    if not extents or kind != "AVIF" or held.bytes > budget:
        return kind, held
    view = memoryview(data)
    item = view[extents[0][0] : sum(extents[0])] if len(extents) == 1 else b"".join(
        view[at : at + length] for at, length in extents)
    tiff = 4 + int.from_bytes(item[:4], "big")  # the item's own offset to its TIFF header (ISO/IEC 23008-12 A.2.1)
    copied = AVIF_IFD0_COPIES * ifd0_copied_bytes(item[tiff:] if tiff < len(item) else item[4:], STRICT_EXIF)
    if not copied:
        return kind, held
    what = f"the data of its Exif item's IFD, {copied >> 20} MiB as Pillow loads and rewrites it"
    return kind, Held(held.bytes + copied, " and ".join(w for w in (held.what, what) if w))


def _check_tiff_values(data: bytes, budget: int) -> None:
    """Refuse a TIFF whose first IFD holds more numbers (`tiff_values`) than `budget` pays Pillow's
    open for (`TIFF_VALUE_BYTES` each), before it parses each into an object."""
    numbers = tiff_values(data)
    if numbers * TIFF_VALUE_BYTES > budget:
        raise DecodeError("image_too_large", f"a TIFF whose first IFD holds {numbers} numbers (strip or tile "
                                             f"offsets and byte counts), about {numbers * TIFF_VALUE_BYTES >> 20} MiB "
                                             f"opening it, over the budget of {budget >> 20} MiB: Pillow holds each "
                                             "as an object and an uncompressed strip as a tile of its own")


def check_header_held(data: bytes, budget: int, header: JpegHeader | None = None) -> None:
    """Refuse, before Pillow opens it, a JPEG or TIFF whose header alone costs Pillow's open more than
    `budget`: a JPEG's APPn and COM segments (`JPEG_SEGMENT_BYTES`: the open keeps every one before
    it reads a pixel or finds the frame missing) and the IFD0 of its EXIF, which the open loads for
    a resolution (`exif_ifd.ifd0_copied_bytes`: 1,000 entries pointing at one 1 MB block, split over
    16 APP1 segments, took 960 MB); a TIFF's IFD0 the same way, loaded opening it and again
    loading it (300 entries of a 1 MB block: 575 MB), a BigTIFF's alike (its 20-byte entries). A JPEG of more than `pillow_open.MAX_EXIF_SEGMENTS`
    APP1 `Exif` segments too (`too_many_exif_segments`), whose joining is time no budget bounds.
    An AVIF's or HEIF's Exif item too, which its reader copies and Pillow's AVIF open loads
    (`_heif_exif_held`). `header`: a JPEG's walk the caller has made (`jpeg_header`). And first a
    TIFF's numbers (`_check_tiff_values`), for a map as for an image: a 1 x 2,000,000 map of a row a
    strip took 659 MiB opening where only the image path counted them."""
    _check_tiff_values(data, budget)
    if data[:3] == b"\xff\xd8\xff":
        header = header or jpeg_header(data) or _NO_JPEG
        segments = header.segments
        check_exif_segments(segments.exif)
        held = _segments_held(segments.segments, segments.payload)
        copied = ifd0_copied_bytes(header.exif)
        kind = "JPEG"
    elif tiff_head(data):  # a TIFF or BigTIFF, by any header Pillow's open takes
        held, copied, kind = Held(), 2 * ifd0_copied_bytes(data, PILLOW_TIFF_FILE), "TIFF"
    elif data[4:8] == b"ftyp":
        kind, held = _heif_exif_held(data, budget)
        copied = 0
    else:
        return
    if copied:
        what = f"the data of its {'EXIF' if kind == 'JPEG' else 'first'} IFD, {copied >> 20} MiB as Pillow loads it"
        held = Held(held.bytes + copied, " and ".join(w for w in (held.what, what) if w))
    if held.bytes > budget:
        article = "an" if kind in ("AVIF", "HEIF") else "a"
        raise DecodeError("image_too_large", f"{article} {kind} needing about {held.bytes >> 20} MiB to open, over the budget "
                                             f"of {budget >> 20} MiB: {held.what}")


def _jpeg_held(header: JpegHeader | None) -> Held:
    """A JPEG's coefficient buffer (`coefficient_bytes`) and what Pillow keeps of its segments
    (`JPEG_SEGMENT_BYTES`); a JPEG of more than `MAX_JPEG_SCANS` scans is refused here, before its
    decode time is spent."""
    layout = header.layout if header else None
    if layout is None:
        return Held()
    if layout.scans > MAX_JPEG_SCANS:
        raise DecodeError("too_many_scans", f"a {layout.width}x{layout.height} JPEG of more than {MAX_JPEG_SCANS} "
                                            f"scans (real encoders write at most a few dozen)")
    kind = "progressive" if layout.progressive else "multi-scan"
    coefficients = coefficient_bytes(layout)
    segments = _segments_held(layout.app_segments, layout.app_bytes)
    what = (f"the DCT coefficients of a {layout.width}x{layout.height} {kind} JPEG, held at any decode scale"
            if coefficients else "")
    return Held(coefficients + segments.bytes, " and ".join(w for w in (what, segments.what) if w))


def _dct_scalable(image: Image.Image, data: bytes, header: JpegHeader | None = None) -> bool:
    """Whether libjpeg can decode this image at 1/2, 1/4 or 1/8 scale: a JPEG (or MPO) whose frame is
    DCT-coded. A lossless JPEG has no DCT: asked for a reduced decode, libjpeg-turbo wrote its
    full-size rows into Pillow's reduced buffer (the decoding process died, or read garbage)."""
    if image.format not in _DCT_SCALED:
        return False
    layout = (header or jpeg_header(data) or _NO_JPEG).layout
    return layout is not None and not marker_lossless(layout.sof)


def _avif_held(image: Image.Image, data: bytes) -> Held:
    planes = avif_planes(data)
    per_pixel = sum(p.bytes_per_pixel + _AV1_DECODER_BYTES for p in planes) if planes else _AVIF_UNREAD
    w, h = image.size
    return Held(int(w * h * (per_pixel + len(image.getbands()))) + _AVIF_FIXED + _tone_map_bytes(image, data),
                "the AVIF decoder's working buffers (YUV planes, the RGB copy)")


def _tone_map_bytes(image: Image.Image, data: bytes) -> int:
    """What tone-mapping an HDR AVIF/HEIF or PNG adds (`image_colour._as_declared`): its output and
    one float32 band."""
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


def _held(image: Image.Image, data: bytes, header: JpegHeader | None = None) -> Held:
    """What the decoder of this opened image holds besides Pillow's buffer, and LittleCMS for its
    ICC profile whatever the image's size (`icc_tables.held_bytes`: a 64x64 PNG whose profile held
    a 16.6 M-entry CLUT took 159 MiB, judged 24)."""
    decoder, profile = _decoder_held(image, data, header), held_bytes(image.info.get("icc_profile"))
    if not profile:
        return decoder
    what = f"LittleCMS's copies of the ICC profile ({len(image.info['icc_profile']):,} bytes) and its tables"
    return Held(decoder.bytes + profile, " and ".join(w for w in (decoder.what, what) if w))


def _decoder_held(image: Image.Image, data: bytes, header: JpegHeader | None = None) -> Held:
    """What the decoder of this opened image holds besides Pillow's buffer (`Held`); `header`, a
    JPEG's walk the caller has made (`jpeg_header`)."""
    if image.format in _DCT_SCALED:
        return _jpeg_held(header or jpeg_header(data))
    if image.format == "TIFF":
        tile, wide = _tiff_held(image), _wide_held(image, data)
        return Held(tile.bytes + wide.bytes, " and ".join(held.what for held in (tile, wide) if held.bytes))
    if image.format == "AVIF":
        return _avif_held(image, data)
    if image.format == "HEIF":  # libheif's own buffers are not judged; an HDR photo's tone-mapping is
        tone_map = _tone_map_bytes(image, data)
        return Held(tone_map, "the HDR tone-mapping (output, float32 band)") if tone_map else Held()
    if image.format == "PNG":
        wide = _wide_held(image, data)
        if not hdr_colour(image, data):  # a cICP declaring PQ or HLG: tone-mapped, as an AVIF is
            return wide
        if wide.bytes:  # from its 16 bits: the output is counted there
            return Held(wide.bytes + hdr.BAND_BYTES, f"{wide.what} and a float32 band of its HDR tone-mapping")
        return Held(_tone_map_bytes(image, data), "the HDR tone-mapping (output, float32 band)")
    working = _WORKING.get(image.format or "")
    if working is None:
        return Held()
    w, h = image.size
    return Held(w * h * working(len(image.getbands())), f"the {image.format} decoder's working buffers")


def _wide_held(image: Image.Image, data: bytes) -> Held:
    """What `_wide` holds: OpenCV's 16-bit samples (2 bytes each, alpha included) and, for an
    image EXIF turns, the turned copy of its result. A TIFF's are held beside Pillow's 8-bit load
    (decoded after it: `decode._decoded_srgb`), which `decode_cost` counts."""
    if _wide_colour(image, data) is None:
        return Held()
    w, h = image.size
    if image.format == "TIFF":
        return Held(w * h * (2 * len(image.getbands()) + 3),
                    "the 16-bit samples of an ICC-profiled TIFF (OpenCV's decode) and their sRGB")
    return Held(w * h * (2 * (3 if png_header(data) == (16, 2) else 4) + 3),
                "the 16-bit samples of a cICP, gAMA, cHRM or grey-profiled PNG, or an RGB ICC-profiled one (OpenCV's decode)")
