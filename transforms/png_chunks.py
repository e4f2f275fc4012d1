"""A PNG's chunks read before Pillow opens it: the text chunks (and bad-CRC ancillary ones no pixel
depends on) taken out so Pillow opens the picture (`without_png_text`), a colour profile past
Pillow's limit (`png_profile_past_pillow`), the eXIf chunk found without decoding (`_png_exif`),
the cICP chunk Pillow does not read (`png_cicp`). Part of `transforms.decode`."""

from __future__ import annotations

import io
import zlib

from PIL import PngImagePlugin

from transforms.errors import DecodeError, exception_detail


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")


# ancillary chunks the decode reads into the pixels or their orientation (colour profile, gamma,
# primaries, coded colour, significant bits, transparency, EXIF turn), and APNG's frame chunks
_PNG_PIXEL_CHUNKS = (b"iCCP", b"gAMA", b"cHRM", b"sRGB", b"cICP", b"sBIT", b"tRNS", b"eXIf")
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
    An iCCP profile inflating past Pillow's 1 MiB is taken out too (`png_profile_past_pillow`), and
    the private chunks Pillow keeps whole without reading them (`_kept_by_pillow`).
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
        private = _kept_by_pillow(kind) and (kind[0] & 0x20 or _crc_right(view, pos, end))  # a bad critical one: Pillow's
        if kind in _PNG_TEXT or broken or past_pillow or private:
            if pos > start:
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


def _crc_right(view: memoryview, pos: int, end: int) -> bool:
    return zlib.crc32(view[pos + 4 : end - 4]) == int.from_bytes(view[end - 4 : end], "big")


def _kept_by_pillow(kind: bytes) -> bool:
    """A private chunk (its kind's second letter lower case) Pillow reads nothing from and keeps
    whole, in its `private_chunks` list: a 36 MB PNG of 3 M empty `prVt` chunks took 345 MB
    opening and 13 CPU-s (a tuple and a bytes object each, in Pillow's Python loop). No pixel
    depends on one (Pillow ignores even a critical one), so it is taken out like a text chunk.
    APNG's acTL, fcTL and fdAT, private by their letters, are Pillow's own. A critical one whose CRC
    fails is left for Pillow to refuse, as before."""
    return kind[1] & 0x20 != 0 and kind not in _PNG_ANIMATION_CHUNKS


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


# a cICP chunk's four bytes: ColourPrimaries, TransferCharacteristics, MatrixCoefficients, full range
_CICP_LENGTH = 4


def png_cicp(data: bytes) -> tuple[int, int] | None:
    """(primaries, transfer) of a PNG's cICP chunk (PNG 3rd edition; ffmpeg 6.1+ writes one on
    frames of HDR video), found among the chunks before PLTE and IDAT, where the specification
    places it (the walk goes no further). None for none, or one not as the specification allows
    for PNG: a length other than 4, a MatrixCoefficients other than 0 (PNG holds RGB only), or
    narrow range (the specification allows it; Chromium, like this, ignores such a chunk). A
    bad-CRC one is refused before this (`without_png_text`). A PNG without the bytes "cICP" is
    not walked (a search: a walk of a million empty chunks costs 0.4 s, asked several times)."""
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
            if length != _CICP_LENGTH or body[2] != 0 or body[3] != 1:
                return None
            return body[0], body[1]
        pos = end
    return None
