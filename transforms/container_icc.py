"""The ICC profile a JPEG 2000 embeds where Pillow does not read it (`container_profile`).

Pillow hands over the profile of a JPEG, PNG, WebP, TIFF, AVIF or HEIC, but drops a JP2's `colr`
box of method 2 (a restricted ICC profile, ISO 15444-1 I.5.3.3: Photoshop's and Kakadu's JP2s).
Read as sRGB, an Adobe RGB image was 10.4 levels off on average (up to 142), a ProPhoto one 21.7
(up to 150). It is read by walking the container's own structure, bounded: at most
`MAX_PNG_PROFILE` bytes (the most a JPEG can carry), the first `colr` box only; what LittleCMS
may then read is judged by `icc_tables`.
"""

from __future__ import annotations

from transforms.headers import _boxes
from transforms.png_chunks import MAX_PNG_PROFILE

_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \x0d\x0a\x87\x0a"
_BOXES = 64  # boxes walked (a real JP2 has a handful at the top and in its header)
_RESTRICTED_ICC = 2  # a `colr` box's METH: an ICC profile follows METH, PREC and APPROX


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


_READERS = {"JPEG2000": jp2_profile}


def container_profile(image_format: str | None, data: bytes) -> bytes | None:
    """The ICC profile a JPEG 2000 file embeds, which Pillow does not read; None for other
    formats or none."""
    reader = _READERS.get(image_format or "")
    return reader(data) if reader else None
