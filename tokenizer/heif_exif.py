"""What an AVIF's or HEIF's `Exif` items cost opening it, read from its boxes before it is opened.

libavif (Pillow's AVIF open) and libheif (pillow-heif's) read an Exif item inside `Image.open`, and
the reader, Pillow's bytes of it and the file each hold a copy: about 4 times the item. Pillow's
AVIF open then loads the item's IFD0, each entry's data wherever it points, and writes it again:
about 3 times what that load copies (3,000 entries of one 1 MB block: +2,865 MiB). A mirror of the
build's `transforms.headers.heif_exif_extents` and `decode_budget._heif_exif_held` (with
`exif_ifd.ifd0_copied_bytes` as libavif takes an item), which this package may not import
(DESIGN.md); tests/test_exif_bomb.py feeds the same files to both.
"""

from __future__ import annotations

from typing import Iterator

EXIF_ITEM_COPIES = 4  # the build's `decode_budget.EXIF_ITEM_COPIES`
AVIF_IFD0_COPIES = 3  # the build's `decode_budget.AVIF_IFD0_COPIES`
_AVIF_BRANDS = (b"avif", b"avis", b"mif1", b"msf1")  # the major brands Pillow's AVIF plugin opens
_MAX_BOXES = 4096  # boxes, items and extents read in all before giving up (a real file has a few dozen)
_STRICT_HEADS = {b"II*\x00": "little", b"MM\x00*": "big"}  # the TIFF headers libavif takes an Exif item behind
# bytes a value of each TIFF field type takes, as Pillow's loader sizes them (the build's `exif_ifd._TYPE_BYTES`)
_TYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8}


class _Walk:
    """A bounded reader of one file's ISO boxes (ISO/IEC 14496-12 4.2): `steps` caps the boxes a
    forged header can ask to be walked, left at -1 where boxes were left unread (an `iloc`'s
    extents are capped apart, as the build caps them)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.steps = _MAX_BOXES

    def number(self, at: int, size: int) -> int:
        return int.from_bytes(self.data[at : at + size], "big")

    def boxes(self, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
        """(type, payload start, payload end) of the boxes in data[start:end]; stops at one that
        runs past `end`."""
        while start + 8 <= end and self.steps >= 0:
            if self.steps == 0:
                self.steps = -1
                return
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


def _extents(walk: _Walk, begin: int, end: int, idat: tuple[int, int]) -> list[tuple[int, int, int]] | None:
    """(item ID, file offset, length) of each extent an `iloc` payload places in the file
    (construction method 0) or its `idat` (1); a length of 0 runs to the end of either. None where
    its items and extents outrun `_MAX_BOXES`."""
    data, version = walk.data, walk.data[begin]
    sizes = (data[begin + 4] >> 4, data[begin + 4] & 15, data[begin + 5] >> 4,
             data[begin + 5] & 15 if version in (1, 2) else 0)  # offset, length, base offset, index
    wide = 4 if version >= 2 else 2
    pos, steps, found = begin + 6, _MAX_BOXES, []  # the item count is read first

    def take(size: int) -> int:
        nonlocal pos
        pos += size
        return walk.number(pos - size, size)

    for _ in range(take(wide)):
        if steps <= 0:
            return None
        steps -= 1
        item = take(wide)
        method = take(2) & 15 if version in (1, 2) else 0
        pos += 2  # data reference index
        base = take(sizes[2])
        for _ in range(take(2)):
            if steps <= 0:
                return None
            steps -= 1
            pos += sizes[3]
            offset, length = take(sizes[0]), take(sizes[1])
            if pos > end:
                return found
            if method in (0, 1):
                start = base + offset + (idat[0] if method else 0)
                found.append((item, start, length or max(0, (idat[1] if method else len(data)) - start)))
        if pos > end:
            return found
    return found


def _exif_extents(data: bytes) -> list[tuple[int, int]] | None:
    """(file offset, length) of each extent of an AVIF's or HEIF's `Exif` items (its `meta` box's
    `iinf`, `iloc` and `idat`), cut to the bytes there; [] for any other file, None where its
    boxes outrun the walk (`_MAX_BOXES`): 5,000 empty `free` boxes before `meta` hid a 200 MB item."""
    if data[4:8] != b"ftyp":
        return []
    walk = _Walk(data)
    meta = next(((b + 4, e) for kind, b, e in walk.boxes(0, len(data)) if kind == b"meta"), None)
    if meta is None:
        return None if walk.steps < 0 else []
    exif: set[int] = set()
    iloc, idat = None, (0, 0)
    for kind, b, e in walk.boxes(*meta):
        if kind == b"iinf" and e - b >= 6:
            exif |= _exif_items(walk, b, e)
        elif kind == b"iloc" and e - b >= 8:
            iloc = (b, e)
        elif kind == b"idat" and idat == (0, 0):
            idat = (b, e)
    extents = _extents(walk, *iloc, idat) if iloc is not None else []
    if walk.steps < 0 or extents is None:
        return None
    return [(start, min(length, len(data) - start)) for item, start, length in extents
            if item in exif and start < len(data)]


def heif_exif_bytes(data: bytes) -> int | None:
    """The bytes of an AVIF's or HEIF's `Exif` items held in the file (`_exif_extents`); 0 for any
    other file, None for one whose boxes cannot be judged."""
    extents = _exif_extents(data)
    return None if extents is None else sum(length for _, length in extents)


def strict_ifd0(raw: bytes | memoryview) -> tuple[bytes | memoryview, str, range]:
    """IFD0 of an EXIF block as browsers and libavif take it (one `Exif\0\0` skipped, II*\0 or
    MM\0* only): (the TIFF structure, its byte order, the offsets of its whole 12-byte entries),
    no entries where there is none (the build's `exif_ifd._ifd0` with `STRICT_EXIF`)."""
    if bytes(raw[:6]) == b"Exif\x00\x00":
        raw = raw[6:]
    order = _STRICT_HEADS.get(bytes(raw[:4]))
    ifd = int.from_bytes(raw[4:8], order) if order is not None and len(raw) >= 10 else 0
    if not 8 <= ifd <= len(raw) - 2:
        return raw, "big", range(0)
    order, first = order or "big", ifd + 2
    return raw, order, range(first, min(first + 12 * int.from_bytes(raw[ifd:first], order), len(raw) - 11), 12)


def _ifd0_copied_bytes(raw: bytes | memoryview) -> int:
    """What Pillow's load of an Exif item's IFD0 copies, the item taken as libavif takes it (one
    `Exif\0\0` skipped, II*\0 or MM\0* only): each entry's data held outside the entry, read wherever it
    points (the build's `exif_ifd.ifd0_copied_bytes` with `STRICT_EXIF`)."""
    raw, order, entries = strict_ifd0(raw)
    total = 0
    for at in entries:
        size = int.from_bytes(raw[at + 4 : at + 8], order) * _TYPE_BYTES.get(int.from_bytes(raw[at + 2 : at + 4], order), 0)
        if size > 4:
            total += max(0, min(size, len(raw) - int.from_bytes(raw[at + 8 : at + 12], order)))
    return total


def heif_exif_refusal(data: bytes, max_bytes: int) -> str | None:
    """Why opening an AVIF or HEIF would cost more than `max_bytes` for its Exif items (the items,
    `EXIF_ITEM_COPIES`; an AVIF's IFD0 as Pillow loads and rewrites it, `AVIF_IFD0_COPIES`,
    weighed only where the items fit), or why that cannot be judged; None where it fits, and for
    any other file."""
    extents = _exif_extents(data)
    if extents is None:
        return (f"an AVIF or HEIF whose header holds more than {_MAX_BOXES:,} boxes, items or extents before its "
                "Exif items are all found (a real one holds a few dozen): what opening it costs cannot be judged")
    size = sum(length for _, length in extents)
    held, what = EXIF_ITEM_COPIES * size, f"its Exif item ({size:,} bytes), copied by the reader"
    if extents and data[8:12] in _AVIF_BRANDS and held <= max_bytes:
        view = memoryview(data)
        item = view[extents[0][0] : sum(extents[0])] if len(extents) == 1 else memoryview(b"".join(
            view[at : at + length] for at, length in extents))
        tiff = 4 + int.from_bytes(item[:4], "big")  # the item's own offset to its TIFF header
        copied = AVIF_IFD0_COPIES * _ifd0_copied_bytes(item[tiff:] if tiff < len(item) else item[4:])
        if copied:
            held += copied
            what += f" and the data of its IFD, {copied >> 20} MiB as Pillow loads and rewrites it"
    if held <= max_bytes:
        return None
    return f"an AVIF or HEIF needing about {held >> 20} MiB to open, over the budget of {max_bytes >> 20} MiB: {what}"
