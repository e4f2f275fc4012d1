"""A PNG's chunks read before Pillow opens it, as the build reads them (`transforms.png_chunks`:
`without_png_text`, `png_profile_past_pillow`, which `tokenizer` may not import:
tests/test_layering.py; tests/test_tokenizer_kinds.py holds them equal on Pillow's PNGs).

Unmirrored, a PNG whose iCCP profile inflates past Pillow's 1 MiB was `corrupt_header` here and
decoded (its profile converted) by the build, and one whose eXIf chunk after IDAT fails its CRC was
read here and refused `corrupt_header` by the build; a bad-CRC tEXt, a zTXt past 1 MiB, were
refused here and decoded by the build.
"""

from __future__ import annotations

import zlib

from PIL import PngImagePlugin

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")
# ancillary chunks the build reads into the pixels or their turn, and APNG's frame chunks
PNG_PIXEL_CHUNKS = (b"iCCP", b"gAMA", b"cHRM", b"sRGB", b"cICP", b"sBIT", b"tRNS", b"eXIf")
PNG_ANIMATION_CHUNKS = (b"acTL", b"fcTL", b"fdAT")
PLAIN_TEXT_KEPT = 1 << 20  # bytes of tEXt a PNG is opened with as it is
PILLOW_PROFILE = PngImagePlugin.MAX_TEXT_CHUNK
MAX_PNG_PROFILE = 255 * 65_519  # the most a JPEG can carry


class PngRefused(ValueError):
    """A PNG the build refuses from its chunks: `reason` (its reject code) and `detail`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _crc_right(view: memoryview, pos: int, end: int) -> bool:
    return zlib.crc32(view[pos + 4 : end - 4]) == int.from_bytes(view[end - 4 : end], "big")


def _kept_by_pillow(kind: bytes) -> bool:
    """A private chunk Pillow keeps whole without reading it (not APNG's own)."""
    return kind[1] & 0x20 != 0 and kind not in PNG_ANIMATION_CHUNKS


def _inflated_profile(body: bytes | memoryview, limit: int) -> bytes:
    """An iCCP chunk's profile inflated to at most `limit` + 1 bytes; b"" for a broken one."""
    name_end = bytes(body[:81]).find(b"\0")
    if name_end < 0 or len(body) < name_end + 2 or body[name_end + 1] != 0:
        return b""
    try:
        return zlib.decompressobj().decompress(body[name_end + 2 :], limit + 1)
    except zlib.error:
        return b""


def without_png_text(data: bytes) -> bytes:
    """The bytes Pillow is given for a PNG, as the build gives them: its text chunks, its bad-CRC
    ancillary chunks no pixel depends on, an iCCP inflating past Pillow's 1 MiB and the private
    chunks Pillow keeps whole taken out; `PngRefused` (`corrupt_header`) for a bad-CRC chunk the
    pixels or their turn depend on, wherever it lies. Any other file, or one whose chunks do not
    walk cleanly to IEND, as it is."""
    if not data.startswith(PNG_SIGNATURE):
        return data
    view = memoryview(data)
    kept, pos, start, plain_text, copied = [], 8, 8, 0, False
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if length > 0x7FFFFFFF or not kind.isalpha() or end > len(data):
            return data
        broken = (kind[0] & 0x20 and kind not in PNG_ANIMATION_CHUNKS and not _crc_right(view, pos, end))
        if broken and kind in PNG_PIXEL_CHUNKS:
            raise PngRefused("corrupt_header", f"PNG: its {kind.decode()} chunk fails its CRC (it changes the "
                                               "pixels: they cannot be shown as made)")
        past_pillow = (kind == b"iCCP" and not broken
                       and len(_inflated_profile(view[pos + 8 : end - 4], PILLOW_PROFILE)) > PILLOW_PROFILE)
        private = _kept_by_pillow(kind) and (kind[0] & 0x20 or _crc_right(view, pos, end))
        if kind in PNG_TEXT or broken or past_pillow or private:
            if pos > start:
                kept.append(data[start:pos])
            start = end
            copied |= kind != b"tEXt" or bool(broken)
            plain_text += length if kind == b"tEXt" else 0
        pos = end
        if kind == b"IEND":
            if not copied and plain_text <= PLAIN_TEXT_KEPT:
                return data
            return data[:8] + b"".join(kept) + data[start:]
    return data


def png_profile_past_pillow(data: bytes) -> bytes | None:
    """A PNG's profile (its first iCCP before IDAT) when it inflates past Pillow's limit, which
    `without_png_text` took out; None for none such. Past `MAX_PNG_PROFILE`: `PngRefused`
    (`image_too_large`), judged inflating no further."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if kind in (b"IDAT", b"IEND") or end > len(data):
            return None
        if kind == b"iCCP":
            profile = _inflated_profile(memoryview(data)[pos + 8 : end - 4], MAX_PNG_PROFILE)
            if len(profile) > MAX_PNG_PROFILE:
                raise PngRefused("image_too_large", f"PNG: its iCCP colour profile inflates past {MAX_PNG_PROFILE} "
                                                    "bytes (the most a JPEG can carry)")
            return profile if len(profile) > PILLOW_PROFILE else None
        pos = end
    return None
