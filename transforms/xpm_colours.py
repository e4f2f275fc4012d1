"""An X11 pixmap's (XPM) colour table as Pillow reads it. Pillow reads a `#` colour as 8 bits a
channel (`#RRGGBB`) whatever its length: ImageMagick writes a 16-bit image's XPM with 16 bits a
channel (`#RRRRGGGGBBBB`), whose colours Pillow took apart at the wrong digits (a red-to-blue
plasma decoded with its mean off by 65 of 255, a photo up to 249 levels off, without a word); X11
also allows 4 and 12 bits a channel. Each such colour is rewritten to 8 bits a channel (its most
significant bits) before Pillow opens the file: to within a level of ImageMagick, which rounds
(`convert x.xpm -depth 8`: an ImageMagick 16-bit XPM of a rose, 2,238 of its 3,220 pixels one level
off, none more). A colour given by its X11 name (ImageMagick writes `"  c red"` for a colour that
is exactly a named one; Pillow reads only `#` colours and refused the whole file as
`corrupt_header`) is rewritten to its `#RRGGBB` (`x11_colours`); a name no X11 table holds is
`unsupported_format`. Part of `transforms.decode`."""

from __future__ import annotations

import re
from typing import Iterator

from transforms.errors import DecodeError
from transforms.x11_colours import X11_COLOURS

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


_TOKEN = re.compile(rb"[^\s\"]+")  # a word of a colour line, as Pillow splits it


def _named(line: bytes, chars: int) -> bytes:
    """A colour line whose colour (its first `c` key's value, as Pillow reads it: the words after the
    pixel's `chars` characters, in key-value pairs) is an X11 name, with that name as `#RRGGBB`
    (`None` spelled otherwise as `None`); any other line as it is. A name no table holds is
    `unsupported_format` (never quoted: a reject carries no input bytes)."""
    start = 1 + chars
    end = line.rfind(b'"')
    words = list(_TOKEN.finditer(line, start, end if end > start else len(line)))
    for key, value in zip(words[::2], words[1::2]):
        if key.group() != b"c":
            continue
        name = value.group()
        if name.startswith(b"#") or name == b"None":
            return line
        folded = name.lower()
        if folded == b"none":
            return line[: value.start()] + b"None" + line[value.end():]
        rgb = X11_COLOURS.get(folded)
        if rgb is None:
            raise DecodeError("unsupported_format", "XPM: a colour given by a name that is no X11 colour name")
        return line[: value.start()] + b"#%02X%02X%02X" % rgb + line[value.end():]
    return line


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
    colours, chars = int(found.group(3) or 0), int(found.group(4) or 1)
    parts, at, changed = [], 0, False
    for start, end in _lines(data, head[1] + 1, colours):
        line = data[start:end]
        mended = _named(_COLOUR.sub(lambda match: match.group(1) + _eight_bits(match.group(2)), line), chars)
        changed = changed or mended != line
        parts += [data[at:start], mended]
        at = end
    return b"".join(parts + [data[at:]]) if changed else data
