"""Two files Pillow opens otherwise than the build shows them, mended as the build mends them
(`transforms.xpm_colours.xpm_for_pillow`, `transforms.image_orientation._gif_screen_box`, which
`tokenizer` may not import: tests/test_layering.py; tests/test_tokenizer_kinds.py holds them equal
on ImageMagick's files). Unmended, ImageMagick's 16-bit XPM (`#RRRRGGGGBBBB` colours, which Pillow
takes apart at the wrong digits) was up to 249 levels off the build's pixels, and a GIF whose
first frame reaches past its logical screen came out 42x30 where the build shows the 32x24 screen.

Not mirrored: an XPM colour given by its X11 name, which the build rewrites from its X11 table
(Pillow refuses the file here: `corrupt_header`).
"""

from __future__ import annotations

import re
from typing import Iterator

XPM_MAGIC = b"/* XPM */"
_HEAD = re.compile(rb'"([0-9]*) ([0-9]*) ([0-9]*) ([0-9]*)')  # the values line, as Pillow matches it
_HEAD_LINE = re.compile(b"^" + _HEAD.pattern, re.MULTILINE)
# `c #<hex>` in a colour line, at X11's widths other than Pillow's 8 bits a channel
XPM_COLOUR = re.compile(rb"(\sc\s+#)([0-9A-Fa-f]{3}|[0-9A-Fa-f]{9}|[0-9A-Fa-f]{12})(?=[\s\"])")


def _eight_bits(digits: bytes) -> bytes:
    """3 channels of 1, 3 or 4 hex digits as `RRGGBB`: each channel's top 8 bits (`#f00`: 255)."""
    width = len(digits) // 3
    channels = [digits[i * width:(i + 1) * width] for i in range(3)]
    return b"".join(channel[:2] if width > 1 else channel * 2 for channel in channels)


def _lines(data: bytes, start: int, count: int) -> Iterator[tuple[int, int]]:
    for _ in range(count):
        if start > len(data):
            return
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        yield start, end
        start = end + 1


def xpm_for_pillow(data: bytes) -> bytes:
    """`data` with its XPM colour table's `#` colours in 8 bits a channel, the colour lines found as
    Pillow finds them (after its values line, as many as it says); any other file as it is."""
    if not data.startswith(XPM_MAGIC):
        return data
    found = _HEAD.match(data, len(XPM_MAGIC)) or _HEAD_LINE.search(data, len(XPM_MAGIC))
    if found is None:
        return data
    end = data.find(b"\n", found.start())
    parts, at, changed = [], 0, False
    for start, end in _lines(data, (len(data) if end < 0 else end) + 1, int(found.group(3) or 0)):
        line = data[start:end]
        mended = XPM_COLOUR.sub(lambda match: match.group(1) + _eight_bits(match.group(2)), line)
        changed = changed or mended != line
        parts += [data[at:start], mended]
        at = end
    return b"".join(parts + [data[at:]]) if changed else data


GIF_SIGNATURES = (b"GIF87a", b"GIF89a")
GIF_SCREEN = 13  # signature, logical screen width and height, flags, background, aspect


def gif_screen_box(size: tuple[int, int], data: bytes) -> tuple[int, int, int, int] | None:
    """The box of an opened GIF of `size` that is its logical screen, when its first frame reaches
    past it (Pillow grows its canvas to hold the frame; ImageMagick's `-coalesce` and browsers cut
    it at the screen's edge); None for the whole image, or a screen declared 0 x 0."""
    if data[:6] not in GIF_SIGNATURES or len(data) < GIF_SCREEN:
        return None
    screen = int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if min(screen) < 1 or (screen[0] >= size[0] and screen[1] >= size[1]):
        return None
    return 0, 0, min(screen[0], size[0]), min(screen[1], size[1])
