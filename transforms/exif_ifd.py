"""An EXIF block's IFD0 read by a bounded walk of its entries, never by Pillow's `Exif.load`.

Pillow's `Exif.load` (and `getexif`) copies the data of every entry of IFD0, wherever it points:
a 1 MB PNG whose eXIf IFD0 held 1,000 entries all pointing at one 1 MB block took 1 GB in the
rendering process, a 1.5 MB one 2.4 GB, before any budget was judged (a still WebP's EXIF chunk
alike). The one tag the decode needs, Orientation, is a SHORT held in its entry: read here in a
walk of 12 bytes an entry, nothing copied (`exif_orientation`). Where Pillow loads an IFD0 itself
(a TIFF's, opening it and again loading it; a JPEG's EXIF, which its open reads for a resolution,
however many APP1 segments it is split over) what that load copies is counted from the entries
(`ifd0_copied_bytes`) and judged before Pillow opens the file, behind every TIFF header Pillow
takes (`TIFF_HEADS`); a BigTIFF file's IFD0 too (20-byte entries, 8-byte counts and offsets),
which went unwalked: 100 entries of one 200 KB block copied 40 MB. Part of `transforms.decode`."""

from __future__ import annotations

from typing import NamedTuple

from transforms.tiff_head import TIFF_HEADS, first_ifd, tiff_head

EXIF_ORIENTATION = 0x0112
_EXIF_PREFIX = b"Exif\x00\x00"  # a JPEG's APP1 (and some PNGs' eXIf, WebPs' EXIF) before the TIFF header
# the ones browsers, libexif and libavif read an EXIF from (libavif refuses an AVIF whose Exif item
# has another: "Invalid Exif payload", before Pillow loads anything)
_STRICT_HEADS = {b"II*\x00": "little", b"MM\x00*": "big"}
# the whole-number types Pillow reads a single value of as a number: SHORT, LONG, SSHORT, SLONG
_NUMBERS = {3: (2, False), 4: (4, False), 8: (2, True), 9: (4, True)}
# bytes a value of each TIFF field type takes (BYTE ... DOUBLE, IFD, LONG8), as Pillow's loader sizes them
_TYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8}


class IfdReader(NamedTuple):
    """Which TIFF structures a reader walks: what must be judged is what Pillow loads, what is
    shown turned is what viewers turn."""

    heads: dict[bytes, str]  # the first 4 bytes it takes, and their byte order
    bigtiff: bool  # whether it walks a BigTIFF (II+\0): Pillow's file open does, its `Exif.load` fails on one
    prefixes: bool  # whether it skips every leading `Exif\0\0` (Pillow's `Exif.load`) or one


PILLOW_TIFF_FILE = IfdReader(TIFF_HEADS, True, False)  # a TIFF file's own bytes, as Pillow opens them
PILLOW_EXIF = IfdReader(TIFF_HEADS, False, True)  # an EXIF block, as Pillow's `Exif.load` reads it
# an EXIF block as browsers read its orientation, and an AVIF's Exif item as libavif takes it
STRICT_EXIF = IfdReader(_STRICT_HEADS, False, False)


class _Ifd0(NamedTuple):
    """IFD0 of a TIFF structure: where its whole entries lie, and how they are laid out."""

    raw: bytes | bytearray  # the TIFF structure (an EXIF block without its `Exif\0\0` prefix)
    order: str  # byte order
    entries: range  # the offsets of IFD0's whole entries
    count_width: int  # bytes of an entry's value count: 4 (TIFF), 8 (BigTIFF)
    inline: int  # bytes of value an entry holds itself, and of the offset it holds otherwise: 4, 8


def _ifd0(raw: bytes | bytearray, reader: IfdReader) -> _Ifd0 | None:
    """IFD0 of an EXIF block or a TIFF file as `reader` reads it; a BigTIFF's (20-byte entries of
    8-byte counts and offsets, the IFD's offset at byte 8, whatever bytes 4-8 hold, as Pillow reads
    it: `BIGTIFF:` of ImageMagick, tifffile's `bigtiff=True`) where it reads one. None where there
    is none."""
    while raw[:6] == _EXIF_PREFIX:
        raw = raw[len(_EXIF_PREFIX):]
        if not reader.prefixes:
            break
    head = tiff_head(raw) if bytes(raw[:4]) in reader.heads else None
    if head is None or (head.big and not reader.bigtiff) or len(raw) < (16 if head.big else 10):
        return None
    order, big, ifd = head.order, head.big, first_ifd(raw, head)
    counted, entry = (8, 20) if big else (2, 12)
    if not 8 <= ifd <= len(raw) - counted:
        return None
    entries = int.from_bytes(raw[ifd : ifd + counted], order)
    first = ifd + counted
    # the range's own arithmetic: a count of 2**64 - 1 walks only the entries the file holds
    return _Ifd0(raw, order, range(first, min(first + entry * entries, len(raw) - entry + 1), entry),
                 8 if big else 4, 8 if big else 4)


def ifd0_copied_bytes(raw: bytes | bytearray, reader: IfdReader = PILLOW_EXIF) -> int:
    """The bytes Pillow's load of IFD0 copies (`ImageFileDirectory_v2.load`): each entry's data held
    outside the entry, read wherever it points, so entries sharing one block each copy it (as much
    of it as the block holds). 0 for no IFD0. `raw` is read as `reader` reads it: an EXIF block as
    `Exif.load` does (any TIFF header Pillow takes, every `Exif\0\0` before it skipped, a
    BigTIFF-shaped one failing unread), a TIFF file as Pillow opens it (`PILLOW_TIFF_FILE`: a
    BigTIFF's entries hold 8 bytes of value), an AVIF's Exif item as libavif takes it
    (`STRICT_EXIF`)."""
    found = _ifd0(raw, reader)
    if found is None:
        return 0
    raw, order, entries, count_width, inline = found
    total = 0
    for at in entries:
        kind = int.from_bytes(raw[at + 2 : at + 4], order)
        size = int.from_bytes(raw[at + 4 : at + 4 + count_width], order) * _TYPE_BYTES.get(kind, 0)
        if size > inline:
            pointed = at + 4 + count_width
            total += max(0, min(size, len(raw) - int.from_bytes(raw[pointed : pointed + inline], order)))
    return total


def exif_orientation(raw: bytes) -> int:
    """The Orientation (1-8) IFD0 of the EXIF block `raw` declares; 1 for none, one out of range,
    or a block that cannot be read. As Pillow's `Exif` reads it: the last entry of the tag wins,
    its one value a whole number held in the entry (a SHORT, as the standard has it; a count
    other than 1 is no orientation), entries cut short by the block's end not read; but only
    behind the TIFF headers browsers read (II*\0, MM\0*), as they show it: a BigTIFF-shaped block,
    which Pillow's `getexif` fails on too, or one of Pillow's "invalid" headers is no orientation."""
    found = _ifd0(raw, STRICT_EXIF)
    if found is None:
        return 1
    raw, order, entries, count_width, _ = found
    value = 1
    for at in entries:
        if int.from_bytes(raw[at : at + 2], order) != EXIF_ORIENTATION:
            continue
        kind = int.from_bytes(raw[at + 2 : at + 4], order)
        count = int.from_bytes(raw[at + 4 : at + 4 + count_width], order)
        if kind not in _NUMBERS:
            continue  # Pillow skips an entry of a type it does not know, keeping an earlier one
        width, signed = _NUMBERS[kind]
        held = at + 4 + count_width
        value = int.from_bytes(raw[held : held + width], order, signed=signed) if count == 1 else 0
    return value if 1 <= value <= 8 else 1
