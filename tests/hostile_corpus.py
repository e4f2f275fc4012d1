"""Hostile inputs written at test time, small on disk and huge by what they declare.

The PNG writer streams rows through zlib, so a 13000 x 13000 16-bit image costs the test
process nothing: its decoder is what the tests measure.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path: Path, width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> Path:
    """A valid PNG of zero-valued pixels (grey 0, RGB 2, grey+alpha 4, RGBA 6), written row block by row block."""
    row = b"\0" + bytes(width * PNG_CHANNELS[colour_type] * bit_depth // 8)  # filter byte + samples
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    deflate = zlib.compressobj(1)
    block = row * 64
    with open(path, "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header))
        for top in range(0, height, 64):
            data = deflate.compress(block if top + 64 <= height else row * (height - top))
            if data:
                out.write(_chunk(b"IDAT", data))
        out.write(_chunk(b"IDAT", deflate.flush()) + _chunk(b"IEND", b""))
    return path


def write_gzip_of_blanks(path: Path, expanded: int) -> Path:
    """A gzip file that expands to `expanded` bytes of JSON whitespace around `[]` (a gzip bomb)."""
    import gzip

    block = b" " * (1 << 20)
    with gzip.open(path, "wb", compresslevel=1) as out:
        for _ in range(expanded >> 20):
            out.write(block)
        out.write(b"[]")
    return path
