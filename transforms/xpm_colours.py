"""An X11 pixmap's (XPM) colour table as Pillow reads it. Pillow reads a `#` colour as 8 bits a
channel (`#RRGGBB`) whatever its length: ImageMagick writes a 16-bit image's XPM with 16 bits a
channel (`#RRRRGGGGBBBB`), whose colours Pillow took apart at the wrong digits (a red-to-blue
plasma decoded with its mean off by 65 of 255, a photo up to 249 levels off, without a word); X11
also allows 4 and 12 bits a channel. Each such colour is rewritten to 8 bits a channel (its most
significant bits, as ImageMagick reads them) before Pillow opens the file. Part of `transforms.decode`."""

from __future__ import annotations

import re
from typing import Iterator

XPM_MAGIC = b"/* XPM */"
_HEAD = re.compile(rb'"([0-9]*) ([0-9]*) ([0-9]*) ([0-9]*)')  # the values line, as Pillow matches it
# `c #<hex>` in a colour line: the digits of one colour (3 channels), at X11's other widths
_COLOUR = re.compile(rb"(\sc\s+#)([0-9A-Fa-f]{3}|[0-9A-Fa-f]{9}|[0-9A-Fa-f]{12})(?=[\s\"])")
MAX_HEAD_LINES = 1 << 12  # lines before the values line that are looked through (comments; ImageMagick writes 3)


def _eight_bits(digits: bytes) -> bytes:
    """`digits` (3 channels of 1, 3 or 4 hex digits each) as `RRGGBB`: each channel's top 8 bits,
    a digit alone repeated (`#f00` red at 255, as ImageMagick and CSS read it)."""
    width = len(digits) // 3
    channels = [digits[i * width:(i + 1) * width] for i in range(3)]
    return b"".join(channel[:2] if width > 1 else channel * 2 for channel in channels)


def _lines(data: bytes, start: int, count: int) -> Iterator[tuple[int, int]]:
    """The (start, end) of up to `count` lines of `data` from `start`, each without its newline."""
    for _ in range(count):
        if start > len(data):
            return
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        yield start, end
        start = end + 1


def xpm_for_pillow(data: bytes) -> bytes:
    """`data` with its XPM colour table's `#` colours in 8 bits a channel (see the module); any
    other file, and an XPM whose colours are all `#RRGGBB` already, as it is. Only the colour
    lines are looked at, found as Pillow finds them (the lines after the values line, as many as
    it says): a pixel row may hold ` c #abc` too. The pixel rows are copied once, never split."""
    if not data.startswith(XPM_MAGIC):
        return data
    head = next(((start, end) for start, end in _lines(data, 0, MAX_HEAD_LINES)
                 if _HEAD.match(data, start, end)), None)
    if head is None:
        return data  # Pillow refuses it: its own verdict stands
    colours = int(_HEAD.match(data, *head).group(3) or 0)  # type: ignore[union-attr]
    parts, at, changed = [], 0, False
    for start, end in _lines(data, head[1] + 1, colours):
        line = data[start:end]
        mended = _COLOUR.sub(lambda match: match.group(1) + _eight_bits(match.group(2)), line)
        changed = changed or mended != line
        parts += [data[at:start], mended]
        at = end
    return b"".join(parts + [data[at:]]) if changed else data
