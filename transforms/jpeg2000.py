"""A JPEG 2000 of 9 to 16 bits a sample, reduced to 8 bits from its full precision.

Pillow (12.3, OpenJPEG 2.5) reduces such samples to 8 bits by rounding, `(v + 2^(s-1)) >> s`, into
a byte: full scale rounds up to 256, which wraps to 0. A 16-bit RGB photo's white highlight came
out [248, 254, 0], a 12-bit one's alike (ImageMagick's `-depth 16` and `-depth 12` files: 297 of
65,536 canvas pixels more than 100 levels off; a 16-bit grey one, which Pillow keeps at 16 bits,
was right). So an RGB or RGBA one of unsigned 9-16 bit samples is decoded by OpenCV, which hands
OpenJPEG's samples over as they are, and each is scaled to 8 bits here, `round(v * 255 / max)`.

OpenCV's decode holds what Pillow's does (OpenJPEG's 32-bit samples, then its 16-bit copy in place
of Pillow's buffer: 20.1 against 22.8 bytes a pixel for RGB, 26.7 against 28.9 for RGBA, measured
as the rise of a fresh process at 4000 x 3000), so the decode budget judged for Pillow holds. A
codestream that does not end with its end-of-codestream marker (a cut file) is left to Pillow,
whose reject says `truncated`; so is anything OpenCV does not decode to the declared size, and an
sYCC one (OpenCV's conversion of its samples is not OpenJPEG's: `precise`), which keeps Pillow's wrap
at full scale. OpenCV's log is silenced while it decodes (`opencv_quiet`).
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from transforms.headers import _boxes
from transforms.opencv_quiet import opencv_quiet
from transforms.rgb_array import STRIP_PIXELS

_CODESTREAM = b"\xff\x4f\xff\x51"  # SOC, then SIZ: a raw codestream, or a JP2's `jp2c` box's payload
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \x0d\x0a\x87\x0a"
_EOC = b"\xff\xd9"
_BOXES = 64  # top-level boxes walked to find the codestream (a real JP2 has a handful)
_BGR_TO_RGB = {3: [2, 1, 0], 4: [2, 1, 0, 3]}


def _codestream(data: bytes) -> tuple[int, int] | None:
    """Where the codestream lies (start, end): the whole of a raw `.j2k`, a JP2's `jp2c` box (None
    for one that runs past the file's end: a cut file)."""
    if data.startswith(_CODESTREAM):
        return 0, len(data)
    if not data.startswith(_JP2_SIGNATURE):
        return None
    return next(((start, end) for kind, start, end in _boxes(data, 0, len(data), [_BOXES]) if kind == b"jp2c"), None)


_SRGB = 16  # a `colr` box's enumerated colour space: sRGB (18 is sYCC, 12 CMYK, 17 grey)


def _enumerated_colour(data: bytes) -> int | None:
    """The enumerated colour space of a JP2's `colr` box (method 1: METH, PREC, APPROX, EnumCS),
    None where it names none (a raw codestream, an ICC profile): inside the `jp2h` box."""
    for kind, start, end in _boxes(data, 0, len(data), [_BOXES]):
        if kind == b"jp2h":
            for inner, at, stop in _boxes(data, start, end, [_BOXES]):
                if inner == b"colr" and stop - at >= 7 and data[at] == 1:
                    return int.from_bytes(data[at + 3 : at + 7], "big")
            return None
    return None


def sample_layout(data: bytes) -> tuple[tuple[int, bool, int, int], ...] | None:
    """Each component's (bits, signed, x and y subsampling) from the codestream's SIZ marker, for a
    codestream that ends with its end-of-codestream marker; None otherwise."""
    span = _codestream(data)
    if span is None:
        return None
    start, end = span
    siz = start + 2
    if data[siz : siz + 2] != b"\xff\x51" or data[end - 2 : end] != _EOC:
        return None
    count = int.from_bytes(data[siz + 38 : siz + 40], "big")
    table = data[siz + 40 : siz + 40 + 3 * count]
    if count == 0 or len(table) != 3 * count:
        return None
    return tuple(((table[i] & 0x7F) + 1, bool(table[i] & 0x80), table[i + 1], table[i + 2])
                 for i in range(0, len(table), 3))


def precise(image: Image.Image, data: bytes) -> Image.Image | None:
    """The opened JPEG 2000 as an 8-bit RGB or RGBA image reduced from its full precision, where
    Pillow's reduction would wrap (unsigned 9-16 bit samples, every component alike, none
    subsampled, in sRGB or naming no colour space); None for any other image, or where OpenCV
    does not decode it: Pillow loads those. Not an sYCC one: OpenCV converts its samples with
    analog YUV coefficients and, at 12 bits, the wrong chroma offset (every pixel off, a review
    found), where OpenJPEG's own conversion through Pillow matches ImageMagick."""
    if image.format != "JPEG2000" or image.mode not in ("RGB", "RGBA"):
        return None
    layout = sample_layout(data)
    if not layout or len(layout) != len(image.mode) or len(set(layout)) != 1:
        return None
    bits, signed, across, down = layout[0]
    if not 8 < bits <= 16 or signed or (across, down) != (1, 1) or _enumerated_colour(data) not in (None, _SRGB):
        return None
    with opencv_quiet():
        wide = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if wide is None or wide.dtype != np.uint16 or wide.shape != (image.height, image.width, len(image.mode)):
        return None
    top = (1 << bits) - 1
    out = np.empty(wide.shape, np.uint8)
    rows = max(1, STRIP_PIXELS // max(1, image.width))
    order = _BGR_TO_RGB[len(image.mode)]
    for y in range(0, image.height, rows):
        strip = np.minimum(wide[y : y + rows, :, order], top).astype(np.uint32)
        out[y : y + rows] = (strip * 255 + top // 2) // top
    del wide
    reduced = Image.fromarray(out)  # RGB or RGBA, by its bands
    reduced.info = dict(image.info)
    return reduced
