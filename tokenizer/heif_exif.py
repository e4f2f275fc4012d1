"""How many bytes of `Exif` items an AVIF or HEIF holds, read from its boxes before it is opened.

libavif (Pillow's AVIF open) and libheif (pillow-heif's) read an Exif item inside `Image.open`, and
the reader, Pillow's bytes of it and the file each hold a copy: about 4 times the item. A mirror of
the build's `transforms.headers.heif_exif_extents` and `decode_budget.EXIF_ITEM_COPIES`, which this
package may not import (DESIGN.md); tests/test_exif_bomb.py feeds the same files to both.
"""

from __future__ import annotations

from typing import Iterator

EXIF_ITEM_COPIES = 4  # the build's `decode_budget.EXIF_ITEM_COPIES`
_MAX_BOXES = 4096  # boxes, items and extents read in all before giving up (a real file has a few dozen)


class _Walk:
    """A bounded reader of one file's ISO boxes (ISO/IEC 14496-12 4.2): `steps` caps the boxes a
    forged header can ask to be walked (an `iloc`'s extents are capped apart, as the build caps them)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.steps = _MAX_BOXES

    def number(self, at: int, size: int) -> int:
        return int.from_bytes(self.data[at : at + size], "big")

    def boxes(self, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
        """(type, payload start, payload end) of the boxes in data[start:end]; stops at one that
        runs past `end`."""
        while start + 8 <= end and self.steps > 0:
            self.steps -= 1
            size, head = self.number(start, 4), 8
            if size == 1 and start + 16 <= end:
                size, head = self.number(start + 8, 8), 16
            elif size == 0:
                size = end - start
            if size < head or start + size > end:
                return
            yield self.data[start + 4 : start + 8], start + head, start + size
            start += size


def _exif_items(walk: _Walk, begin: int, end: int) -> set[int]:
    """The item IDs an `iinf` payload types `Exif` (its `infe` boxes of version 2 or 3)."""
    first = begin + 4 + (2 if walk.data[begin] == 0 else 4)  # version and flags, then the entry count
    found = set()
    for kind, b, e in walk.boxes(first, end):
        version = walk.data[b] if e - b >= 12 else 0
        if kind == b"infe" and version >= 2:
            wide = 2 if version == 2 else 4
            if walk.data[b + 6 + wide : b + 10 + wide] == b"Exif":
                found.add(walk.number(b + 4, wide))
    return found


def _extents(walk: _Walk, begin: int, end: int, idat: tuple[int, int]) -> Iterator[tuple[int, int, int]]:
    """(item ID, file offset, length) of each extent an `iloc` payload places in the file
    (construction method 0) or its `idat` (1); a length of 0 runs to the end of either."""
    data, version = walk.data, walk.data[begin]
    sizes = (data[begin + 4] >> 4, data[begin + 4] & 15, data[begin + 5] >> 4,
             data[begin + 5] & 15 if version in (1, 2) else 0)  # offset, length, base offset, index
    wide = 4 if version >= 2 else 2
    pos, steps = begin + 6, _MAX_BOXES  # the item count is read first

    def take(size: int) -> int:
        nonlocal pos
        pos += size
        return walk.number(pos - size, size)

    for _ in range(take(wide)):
        item = take(wide)
        method = take(2) & 15 if version in (1, 2) else 0
        pos += 2  # data reference index
        base = take(sizes[2])
        for _ in range(take(2)):
            pos += sizes[3]
            offset, length = take(sizes[0]), take(sizes[1])
            steps -= 1
            if pos > end or steps < 0:
                return
            if method in (0, 1):
                start = base + offset + (idat[0] if method else 0)
                yield item, start, length or max(0, (idat[1] if method else len(data)) - start)
        steps -= 1
        if pos > end or steps < 0:
            return


def heif_exif_bytes(data: bytes) -> int:
    """The bytes of an AVIF's or HEIF's `Exif` items held in the file (its `meta` box's `iinf`,
    `iloc` and `idat`), each extent cut to the bytes there; 0 for any other file."""
    if data[4:8] != b"ftyp":
        return 0
    walk = _Walk(data)
    meta = next(((b + 4, e) for kind, b, e in walk.boxes(0, len(data)) if kind == b"meta"), None)
    if meta is None:
        return 0
    exif: set[int] = set()
    iloc, idat = None, (0, 0)
    for kind, b, e in walk.boxes(*meta):
        if kind == b"iinf" and e - b >= 6:
            exif |= _exif_items(walk, b, e)
        elif kind == b"iloc" and e - b >= 8:
            iloc = (b, e)
        elif kind == b"idat" and idat == (0, 0):
            idat = (b, e)
    if iloc is None or not exif:
        return 0
    return sum(min(length, len(data) - start) for item, start, length in _extents(walk, *iloc, idat)
               if item in exif and start < len(data))
