"""The first bytes of a TIFF as Pillow's TIFF open reads them: one table for every reader here of a
TIFF's header (`exif_ifd`, `headers`, `image_format`). What is judged before Pillow opens a file is
the file as Pillow reads it (`tiff_head`); what is said of a file (is it cut, what it declares) is
said of the file as its writer laid it out (`tiff_layout`: a big-endian BigTIFF, which Pillow reads
as a classic TIFF). `headers` knew only II*\\0 and MM\\0* (and read MM\\0+ as a BigTIFF): a TIFF
behind another header Pillow takes went unjudged, its cut not called `truncated`, its strips'
numbers not weighed before `Image.open`. Part of `transforms.decode`."""

from __future__ import annotations

from typing import NamedTuple

# TiffImagePlugin.PREFIXES (Pillow 12.3) and their byte order: MM*\0 and II\0* it takes as "invalid
# TIFF header, assume ..."; it reads a BigTIFF only where the third byte is 0x2B
# (`ImageFileDirectory_v2`: `ifh[2] == 43`), so MM\0+ is read as a classic big-endian TIFF
TIFF_HEADS = {b"II*\x00": "little", b"MM\x00*": "big", b"MM*\x00": "big", b"II\x00*": "little",
              b"MM\x00+": "big", b"II+\x00": "little"}


class TiffHead(NamedTuple):
    """A TIFF header as Pillow reads it."""

    order: str  # byte order: "little", "big"
    big: bool  # a BigTIFF: 8-byte offsets and counts, the first IFD's offset at byte 8 (bytes 4-8 unread)


def tiff_head(data: bytes | bytearray) -> TiffHead | None:
    """The byte order and kind of the TIFF whose first bytes are `data`'s, as Pillow's open reads
    them; None where Pillow's TIFF open refuses the header."""
    order = TIFF_HEADS.get(bytes(data[:4]))
    return None if order is None else TiffHead(order, data[2:3] == b"+")


def tiff_layout(data: bytes | bytearray) -> TiffHead | None:
    """The TIFF's header as its writer laid the file out: as Pillow reads it (`tiff_head`), but a
    BigTIFF where MM\\0+ is followed by BigTIFF's offset size 8 and reserved 0 (a big-endian BigTIFF
    of tifffile's `bigtiff=True` or ImageMagick's `TIFF64:`), which Pillow reads as a classic TIFF
    and cannot open. For what the file holds (is it cut, what does it declare), not what Pillow loads."""
    head = tiff_head(data)
    if bytes(data[:4]) == b"MM\x00+" and b"\x00\x08\x00\x00".startswith(bytes(data[4:8])):  # or a cut one's start
        return TiffHead("big", True)
    return head


def first_ifd(data: bytes | bytearray, head: TiffHead) -> int:
    """The offset of the first IFD the header declares (bytes 4-8, a BigTIFF's 8-16)."""
    return int.from_bytes(data[8:16] if head.big else data[4:8], head.order)
