"""The ICC profile a JPEG 2000, GIF or BMP embeds where Pillow does not read it (`container_profile`).

Pillow hands over the profile of a JPEG, PNG, WebP, TIFF, AVIF or HEIC, but drops these three:
a JP2's `colr` box of method 2 (a restricted ICC profile, ISO 15444-1 I.5.3.3: Photoshop's and
Kakadu's JP2s), a GIF's ICCRGBG1 application extension (ImageMagick writes one for a tagged
image; Chrome applies it), a BMP V5 header's embedded profile (bV5CSType 'MBED', ImageMagick's
and Windows' writers). Read as sRGB, an Adobe RGB image was 10.4 levels off on average (up to
142), a ProPhoto one 21.7. Each is read by walking the container's own structure, bounded: offsets
checked against the file, at most `MAX_PNG_PROFILE` bytes (the most a JPEG can carry), the first
such profile only; what LittleCMS may then read is judged by `icc_tables`.
"""

from __future__ import annotations

from transforms.headers import GIF_SCREEN, _boxes, gif_colour_table, gif_screen
from transforms.png_chunks import MAX_PNG_PROFILE

_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \x0d\x0a\x87\x0a"
_BOXES = 64  # boxes walked (a real JP2 has a handful at the top and in its header)
_RESTRICTED_ICC = 2  # a `colr` box's METH: an ICC profile follows METH, PREC and APPROX
_GIF_ICC = b"\x21\xff\x0bICCRGBG1012"  # an application extension: identifier and authentication code
_GIF_STEPS = 1 << 16  # blocks and sub-blocks walked before the first image (a real GIF has a few)
_BMP_V5 = 124  # a BITMAPV5HEADER's size
_BMP_EMBEDDED = b"DEBM"  # bV5CSType PROFILE_EMBEDDED ('MBED'), little-endian


def jp2_profile(data: bytes) -> bytes | None:
    """The ICC profile of a JP2's first `colr` box (inside `jp2h`) when its method is 2; None for
    an enumerated colour space, a raw codestream, or no profile within bounds."""
    if not data.startswith(_JP2_SIGNATURE):
        return None
    budget = [_BOXES]
    for kind, start, end in _boxes(data, 0, len(data), budget):
        if kind != b"jp2h":
            continue
        for inner, at, stop in _boxes(data, start, end, budget):
            if inner == b"colr":  # only the first one counts (ISO 15444-1 I.5.3.3)
                profile = data[at + 3 : stop] if stop - at > 3 and data[at] == _RESTRICTED_ICC else b""
                return profile if 0 < len(profile) <= MAX_PNG_PROFILE else None
        return None
    return None


def gif_profile(data: bytes) -> bytes | None:
    """The profile of a GIF's ICCRGBG1 application extension before its first image, its data
    sub-blocks joined; None for none, one cut short, or one over `MAX_PNG_PROFILE`."""
    if gif_screen(data) is None:
        return None
    pos, steps = GIF_SCREEN + gif_colour_table(data[10]), _GIF_STEPS
    while pos + 1 < len(data) and steps > 0 and data[pos] == 0x21:  # extensions, up to the first image
        icc = data.startswith(_GIF_ICC, pos)
        pos += 2 + (12 if icc else 0)  # introducer and label; an ICC one's identifier sub-block
        pieces, held = [], 0
        while pos < len(data) and data[pos] and steps > 0:  # data sub-blocks, to their terminator
            steps -= 1
            if icc:
                pieces.append(data[pos + 1 : pos + 1 + data[pos]])
                held += data[pos]
                if held > MAX_PNG_PROFILE:
                    return None
            pos += data[pos] + 1
        if pos >= len(data) or steps <= 0:
            return None  # cut short, or past the walk's bound
        if icc:
            return b"".join(pieces) or None
        pos += 1
    return None


def bmp_profile(data: bytes) -> bytes | None:
    """The profile a BMP V5 header embeds (bV5CSType 'MBED': bV5ProfileData bytes from the
    header's start, bV5ProfileSize long); None for another header or one outside the file."""
    if not data.startswith(b"BM") or len(data) < 14 + _BMP_V5:
        return None
    if int.from_bytes(data[14:18], "little") != _BMP_V5 or data[70:74] != _BMP_EMBEDDED:
        return None
    start = 14 + int.from_bytes(data[126:130], "little")
    size = int.from_bytes(data[130:134], "little")
    if not 0 < size <= MAX_PNG_PROFILE or start < 14 + _BMP_V5 or start + size > len(data):
        return None
    return data[start : start + size]


_READERS = {"JPEG2000": jp2_profile, "GIF": gif_profile, "BMP": bmp_profile}


def container_profile(image_format: str | None, data: bytes) -> bytes | None:
    """The ICC profile a JPEG 2000, GIF or BMP file embeds, which Pillow does not read; None for
    other formats or none."""
    reader = _READERS.get(image_format or "")
    return reader(data) if reader else None
