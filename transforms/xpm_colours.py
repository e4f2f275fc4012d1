"""An X11 pixmap's (XPM) colour table as Pillow reads it. Pillow reads a `#` colour as 8 bits a
channel (`#RRGGBB`) whatever its length: ImageMagick writes a 16-bit image's XPM with 16 bits a
channel (`#RRRRGGGGBBBB`), whose colours Pillow took apart at the wrong digits (a red-to-blue
plasma decoded with its mean off by 65 of 255, a photo up to 249 levels off, without a word); X11
also allows 4 and 12 bits a channel. Each such colour is rewritten to 8 bits a channel (its most
significant bits) before Pillow opens the file: to within a level of ImageMagick, which rounds
(`convert x.xpm -depth 8`: an ImageMagick 16-bit XPM of a rose, 2,238 of its 3,220 pixels one level
off, none more). Part of `transforms.decode`."""

from __future__ import annotations

import re
from typing import Iterator

XPM_MAGIC = b"/* XPM */"
_HEAD = re.compile(rb'"([0-9]*) ([0-9]*) ([0-9]*) ([0-9]*)')  # the values line, as Pillow matches it
_HEAD_LINE = re.compile(b"^" + _HEAD.pattern, re.MULTILINE)  # the first line that starts so, after any others
# `c #<hex>` in a colour line: the digits of one colour (3 channels), at X11's other widths
_COLOUR = re.compile(rb"(\sc\s+#)([0-9A-Fa-f]{3}|[0-9A-Fa-f]{9}|[0-9A-Fa-f]{12})(?=[\s\"])")


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
    # Pillow reads lines after the magic until one starts as the values line, however many come
    # first (a line cap let a 16-bit table after 4,096 comment lines through to Pillow unmended)
    found = _HEAD.match(data, len(XPM_MAGIC)) or _HEAD_LINE.search(data, len(XPM_MAGIC))
    if found is None:
        return data  # Pillow refuses it: its own verdict stands
    end = data.find(b"\n", found.start())
    head = (found.start(), len(data) if end < 0 else end)
    colours = int(found.group(3) or 0)
    parts, at, changed = [], 0, False
    for start, end in _lines(data, head[1] + 1, colours):
        line = data[start:end]
        mended = _COLOUR.sub(lambda match: match.group(1) + _eight_bits(match.group(2)), line)
        changed = changed or mended != line
        parts += [data[at:start], mended]
        at = end
    return b"".join(parts + [data[at:]]) if changed else data
