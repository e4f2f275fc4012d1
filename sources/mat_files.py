"""MATLAB .mat files judged before scipy reads them: scipy inflates a compressed variable whole, so
a small file can ask for gigabytes; what they inflate to is counted here first."""

from __future__ import annotations

import struct
import zlib
from typing import Callable, TypeVar

T = TypeVar("T")

MAT_V5, MI_COMPRESSED = 0x0100, 15
INFLATE_CHUNK = 1 << 20


def mat_inflated_bytes(data: bytes, cap: int) -> int:
    """What a MAT v5 file's compressed top-level variables inflate to, counted a chunk at a time and
    no further than just past `cap`. Other files (MAT v4, v7.3, not MAT at all) hold no compressed
    variable scipy would inflate: 0. Raises ValueError where a compressed variable is not zlib data."""
    if len(data) < 128 or data[126:128] not in (b"IM", b"MI"):
        return 0
    order = "<" if data[126:128] == b"IM" else ">"
    if struct.unpack_from(order + "H", data, 124)[0] != MAT_V5:
        return 0
    position, total = 128, 0
    while position + 8 <= len(data) and total <= cap:
        mdtype, nbytes = struct.unpack_from(order + "II", data, position)
        position += 8
        if mdtype == MI_COMPRESSED:
            inflater, pending = zlib.decompressobj(), data[position:position + nbytes]
            try:
                while pending and total <= cap:
                    total += len(inflater.decompress(pending, INFLATE_CHUNK))
                    pending = inflater.unconsumed_tail
            except zlib.error:
                raise ValueError("a compressed variable is not zlib data") from None
        position += nbytes
    return total


class MatUnreadable(ValueError):
    """A MAT file scipy could not read, in words a user can act on (scipy's own messages can quote
    the file's header bytes: only the problem's kind is named)."""


def scipy_read(read: Callable[[], T]) -> T:
    """`read()`, a scipy.io call on a MAT file; its failures as `MatUnreadable`: v7.3 (HDF5), which
    scipy does not read, with the fix, and anything else by its exception's kind."""
    try:
        return read()
    except NotImplementedError:  # scipy reads MAT v4 to v7, not v7.3
        raise MatUnreadable("a MAT v7.3 (HDF5) file: save it in MATLAB's default -v7 format") from None
    except Exception as exc:
        raise MatUnreadable(f"not a readable MAT file ({type(exc).__name__})") from None
