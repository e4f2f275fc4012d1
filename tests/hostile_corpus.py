"""Hostile inputs written at test time, small on disk and huge by what they declare.

The PNG writer streams rows through zlib, so a 13000 x 13000 16-bit image costs the test
process nothing: its decoder is what the tests measure.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path: Path, width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> Path:
    """A valid PNG of zero-valued pixels (grey 0, RGB 2, grey+alpha 4, RGBA 6), written row block by row block."""
    with open(path, "wb") as out:
        _write_png(out, width, height, bit_depth, colour_type)
    return path


def png_bytes(width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    """`write_png`'s file as bytes (under 1 MB for 14000 x 14000 RGBA: zeros deflate about 1000:1)."""
    out = io.BytesIO()
    _write_png(out, width, height, bit_depth, colour_type)
    return out.getvalue()


def _write_png(out: BinaryIO, width: int, height: int, bit_depth: int, colour_type: int) -> None:
    row = b"\0" + bytes(width * PNG_CHANNELS[colour_type] * bit_depth // 8)  # filter byte + samples
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    deflate = zlib.compressobj(1)
    block = row * 64
    out.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header))
    for top in range(0, height, 64):
        data = deflate.compress(block if top + 64 <= height else row * (height - top))
        if data:
            out.write(_chunk(b"IDAT", data))
    out.write(_chunk(b"IDAT", deflate.flush()) + _chunk(b"IEND", b""))


def ico_with_png(png: bytes, declared: tuple[int, int] = (16, 16)) -> bytes:
    """An ICO whose directory declares one small icon and points at `png` (the PNG-in-ICO layout
    Windows Vista introduced, which Pillow writes for every size): what the directory says is
    not what the PNG holds."""
    entry = struct.pack("<BBBBHHII", declared[0] % 256, declared[1] % 256, 0, 0, 1, 32, len(png), 6 + 16)
    return struct.pack("<HHH", 0, 1, 1) + entry + png


def icns_with_png(png: bytes, kind: bytes = b"ic07") -> bytes:
    """An ICNS of one block: `kind` names a 128 x 128 icon (ic07), the PNG inside may be any size."""
    block = kind + struct.pack(">I", 8 + len(png)) + png
    return b"icns" + struct.pack(">I", 8 + len(block)) + block


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _jpeg_head(width: int, height: int, components: int) -> bytes:
    """SOI, JFIF, one quantisation table, a progressive frame (SOF2, 1x1 sampling) and a DC table
    whose one code (a single 0 bit) means 'difference 0'."""
    frame = struct.pack(">BHHB", 8, height, width, components)
    frame += b"".join(bytes([i + 1, 0x11, 0]) for i in range(components))
    return (b"\xff\xd8" + _segment(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0")
            + _segment(0xDB, b"\x00" + bytes([1] * 64)) + _segment(0xC2, frame)
            + _segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00"))


def progressive_jpeg(width: int, height: int, components: int = 3) -> bytes:
    """A valid progressive JPEG of flat grey, one interleaved DC scan of 1 bit a block: about
    width x height x components / 512 bytes, while libjpeg holds width x height x components x 2
    bytes of coefficients to decode it."""
    scan = _segment(0xDA, bytes([components]) + b"".join(bytes([i + 1, 0]) for i in range(components)) + bytes(3))
    blocks = -(-width // 8) * -(-height // 8) * components
    return _jpeg_head(width, height, components) + scan + bytes(-(-blocks // 8)) + b"\xff\xd9"


class _Bits:
    """Huffman-coded bits, MSB first, with JPEG's byte stuffing (0xFF is followed by 0x00)."""

    def __init__(self) -> None:
        self.out, self.value, self.count = bytearray(), 0, 0

    def put(self, value: int, length: int) -> None:
        for i in range(length - 1, -1, -1):
            self.value, self.count = (self.value << 1) | ((value >> i) & 1), self.count + 1
            if self.count == 8:
                self.out += b"\xff\x00" if self.value == 0xFF else bytes([self.value])
                self.value = self.count = 0

    def flush(self) -> bytes:
        while self.count:
            self.put(1, 1)  # pad with 1 bits, as the standard says
        return bytes(self.out)


def jpeg_scan_bomb(width: int, height: int, ac_scans: int) -> bytes:
    """A valid greyscale progressive JPEG: one DC scan, then `ac_scans` identical AC scans, each a
    few EOB runs (EOB14: 32767 blocks a code) of about 30 bytes; libjpeg walks every block once a scan."""
    blocks = -(-width // 8) * -(-height // 8)
    head = _jpeg_head(width, height, 1) + _segment(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\xe0")  # AC: EOB14
    dc = _Bits()
    for _ in range(blocks):
        dc.put(0, 1)
    runs = _Bits()
    for _ in range(-(-blocks // 32767)):
        runs.put(0, 1)  # the one AC code, EOB14, then its 14 extra bits: a run of 16384 + 16383 blocks
        runs.put(0x3FFF, 14)
    ac = _segment(0xDA, bytes([1, 1, 0x00, 1, 63, 0])) + runs.flush()
    return head + _segment(0xDA, bytes([1, 1, 0, 0, 0, 0])) + dc.flush() + ac * ac_scans + b"\xff\xd9"


def write_gzip_of_blanks(path: Path, expanded: int) -> Path:
    """A gzip file that expands to `expanded` bytes of JSON whitespace around `[]` (a gzip bomb)."""
    import gzip

    block = b" " * (1 << 20)
    with gzip.open(path, "wb", compresslevel=1) as out:
        for _ in range(expanded >> 20):
            out.write(block)
        out.write(b"[]")
    return path


def write_tar_with_a_large_header(path: Path, kind: bytes, declared: int, name: str, data: bytes) -> Path:
    """A tar whose first header is a GNU long-name (`tarfile.GNUTYPE_LONGNAME`, 'L') or pax extended
    (`tarfile.XHDTYPE`, 'x') block declaring `declared` bytes: the member's long name (or its `path`
    record) at its start, then zeros up to the declared size (a sparse hole: nothing on disk), then
    the member it names, whole, and the end-of-archive blocks. A valid tar that every tool lists."""
    import tarfile

    header = tarfile.TarInfo("././@LongLink" if kind == tarfile.GNUTYPE_LONGNAME else "././@PaxHeader")
    header.type, header.size = kind, declared
    if kind == tarfile.GNUTYPE_LONGNAME:
        text = name.encode() + b"\0"
    else:  # a pax record counts its own length: "<length> path=<name>\n"
        record = f" path={name}\n".encode()
        length = len(record)
        while length != len(record) + len(str(length)):
            length = len(record) + len(str(length))
        text = str(length).encode() + record
    member = tarfile.TarInfo(name[:99])  # what follows a long-name block: the name cut to its field
    member.size = len(data)
    with path.open("wb") as out:
        out.write(header.tobuf(tarfile.USTAR_FORMAT) + text)
        out.seek(-(-declared // 512) * 512 - len(text), 1)
        out.write(member.tobuf(tarfile.USTAR_FORMAT) + data + bytes(-len(data) % 512) + bytes(1024))
        out.write(bytes(-out.tell() % tarfile.RECORDSIZE))
    return path


def write_tar_of_large_pax_headers(path: Path, names: list[str], data: bytes, value_size: int) -> Path:
    """A tar of `names` (each holding `data`), each after a pax extended header ('x') of one
    `comment` record of `value_size` bytes, its value zeros (a sparse hole: nothing on disk): under
    any cap on one header, as large in all as the members are many. Every tool lists it."""
    import tarfile

    with path.open("wb") as out:
        for name in names:
            record_size = len(f" comment=\n") + value_size
            length = record_size
            while length != record_size + len(str(length)):
                length = record_size + len(str(length))
            header = tarfile.TarInfo("././@PaxHeader")
            header.type, header.size = tarfile.XHDTYPE, length
            out.write(header.tobuf(tarfile.USTAR_FORMAT) + f"{length} comment=".encode())
            out.seek(value_size, 1)
            out.write(b"\n" + bytes(-length % 512))
            member = tarfile.TarInfo(name)
            member.size = len(data)
            out.write(member.tobuf(tarfile.USTAR_FORMAT) + data + bytes(-len(data) % 512))
        out.write(bytes(1024) + bytes(-(out.tell() + 1024) % tarfile.RECORDSIZE))
    return path
