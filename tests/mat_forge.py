"""MAT v5 files built element by element, as the format's spec lays them out: what MATLAB or scipy
would write for arrays of any size, without a test holding them (a cell of millions of empty
matrices is a few KB compressed)."""

from __future__ import annotations

import struct
import zlib

MI_INT8, MI_UINT8, MI_INT32, MI_UINT32, MI_DOUBLE, MI_MATRIX, MI_COMPRESSED = 1, 2, 5, 6, 9, 14, 15
MX_CELL, MX_STRUCT, MX_CHAR, MX_DOUBLE, MX_UINT8 = 1, 2, 4, 6, 9
EMPTY = struct.pack("<II", MI_MATRIX, 0)  # an empty matrix, [] in MATLAB


def element(mdtype: int, payload: bytes) -> bytes:
    """A data element: its tag, then its data padded to 8 bytes."""
    return struct.pack("<II", mdtype, len(payload)) + payload + bytes(-len(payload) % 8)


def matrix(kind: int, dims: list[int], name: bytes, body: bytes) -> bytes:
    """A miMATRIX of array class `kind`: flags, dimensions, name, then `body`."""
    inner = (element(MI_UINT32, struct.pack("<II", kind, 0)) + element(MI_INT32, struct.pack(f"<{len(dims)}i", *dims))
             + element(MI_INT8, name) + body)
    return struct.pack("<II", MI_MATRIX, len(inner)) + inner


def struct_body(fields: list[bytes], values: bytes) -> bytes:
    """A struct's field names (32 bytes each) and then its fields' miMATRIX elements."""
    return element(MI_INT32, struct.pack("<i", 32)) + element(MI_INT8, b"".join(f.ljust(32, b"\0") for f in fields)) + values


def double(value: float) -> bytes:
    return matrix(MX_DOUBLE, [1, 1], b"", element(MI_DOUBLE, struct.pack("<d", value)))


def text(value: str) -> bytes:
    return matrix(MX_CHAR, [1, len(value)], b"", element(4, value.encode("utf-16-le")))  # miUINT16 characters


def mat_file(*variables: bytes) -> bytes:
    """A MAT v5 file of compressed variables, as MATLAB's default -v7 saves them."""
    header = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, forged".ljust(116) + bytes(8) + struct.pack("<H", 0x0100) + b"IM"
    return header + b"".join(element(MI_COMPRESSED, zlib.compress(v, 9)) for v in variables)
