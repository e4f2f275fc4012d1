"""An EXIF block's IFD0 read by a bounded walk of its entries, never by Pillow's `Exif.load`.

Pillow's `Exif.load` (and `getexif`) copies the data of every entry of IFD0, wherever it points:
a 1 MB PNG whose eXIf IFD0 held 1,000 entries all pointing at one 1 MB block took 1 GB in the
rendering process, a 1.5 MB one 2.4 GB, before any budget was judged (a still WebP's EXIF chunk
alike). The one tag the decode needs, Orientation, is a SHORT held in its entry: read here in a
walk of 12 bytes an entry, nothing copied (`exif_orientation`). Part of `transforms.decode`."""

from __future__ import annotations

EXIF_ORIENTATION = 0x0112
_EXIF_PREFIX = b"Exif\x00\x00"  # a JPEG's APP1 (and some PNGs' eXIf, WebPs' EXIF) before the TIFF header
_ORDERS = {b"II*\x00": "little", b"MM\x00*": "big"}
# the whole-number types Pillow reads a single value of as a number: SHORT, LONG, SSHORT, SLONG
_NUMBERS = {3: (2, False), 4: (4, False), 8: (2, True), 9: (4, True)}


def exif_orientation(raw: bytes) -> int:
    """The Orientation (1-8) IFD0 of the EXIF block `raw` declares; 1 for none, one out of range,
    or a block that cannot be read. As Pillow's `Exif` reads it: the last entry of the tag wins,
    its one value a whole number held in the entry (a SHORT, as the standard has it; a count
    other than 1 is no orientation), entries cut short by the block's end not read."""
    if raw.startswith(_EXIF_PREFIX):
        raw = raw[len(_EXIF_PREFIX):]
    order = _ORDERS.get(bytes(raw[:4]))
    if order is None or len(raw) < 10:
        return 1
    ifd = int.from_bytes(raw[4:8], order)
    if not 8 <= ifd <= len(raw) - 2:
        return 1
    entries = int.from_bytes(raw[ifd : ifd + 2], order)
    value = 1
    for at in range(ifd + 2, min(ifd + 2 + 12 * entries, len(raw) - 11), 12):
        if int.from_bytes(raw[at : at + 2], order) != EXIF_ORIENTATION:
            continue
        kind, count = int.from_bytes(raw[at + 2 : at + 4], order), int.from_bytes(raw[at + 4 : at + 8], order)
        if kind not in _NUMBERS:
            continue  # Pillow skips an entry of a type it does not know, keeping an earlier one
        width, signed = _NUMBERS[kind]
        value = int.from_bytes(raw[at + 8 : at + 8 + width], order, signed=signed) if count == 1 else 0
    return value if 1 <= value <= 8 else 1
