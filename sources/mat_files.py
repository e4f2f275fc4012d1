"""MATLAB .mat files judged before scipy reads them: scipy inflates a compressed variable whole, so
a small file can ask for gigabytes; what they inflate to is counted here first."""

from __future__ import annotations

import io
import math
import struct
import zlib
from typing import Any, Callable, Iterator, TypeVar

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


MI_INT8, MI_INT32, MI_UINT32, MI_MATRIX = 1, 5, 6, 14
MX_CELL, MX_STRUCT, MX_OBJECT = 1, 2, 3
# what scipy builds for one element of a cell or struct array, or one field of a struct element:
# an ndarray (or mat_struct) object and its headers. Measured: a cell of 8M empty matrices (93 KB
# compressed, 64 MB inflated) took 1.3 GB (163 B each); a struct array of 4M elements of 2 empty
# fields 2.1 GB (175 B per field, the mat_struct beside them)
MAT_OBJECT_BYTES = 176


class MatTooLarge(ValueError):
    """A MAT file whose variables would take more memory than its reader's budget, judged before
    scipy reads it."""


def _element(data: bytes, order: str, position: int) -> tuple[int, int, int, int]:
    """A data element at `position`: (type, where its data starts, its byte count, where the next
    element starts). Small data elements (count and type in one word, data in the next 4 bytes)
    as MATLAB writes names and short arrays."""
    word = struct.unpack_from(order + "I", data, position)[0]
    if word >> 16:
        return word & 0xFFFF, position + 4, word >> 16, position + 8
    nbytes = struct.unpack_from(order + "I", data, position + 4)[0]
    return word, position + 8, nbytes, position + 8 + nbytes + (-nbytes) % 8


def _objects(data: bytes, order: str, start: int, end: int, cap: int) -> int:
    """The Python objects scipy makes of the miMATRIX element at `start` (a variable) and what it
    holds, counted from the headers alone, no further than just past `cap`: 1 for the variable, and
    for each cell or struct array its declared elements (times its fields and one more for a
    struct's: its mat_struct), so that a cell which declares 10^9 elements and holds none is counted
    by what scipy allocates for it. Raises ValueError where a header runs past its bounds."""
    tag = struct.Struct(order + "II")
    total, containers, position = 1, [], start  # each container: (where its first element is, where it ends)
    while total <= cap:
        if position is None:
            if not containers:
                return total
            position, end = containers.pop()
            continue
        mdtype, nbytes = tag.unpack_from(data, position)
        following = position + 8 + nbytes
        if mdtype != MI_MATRIX or following > end:
            raise ValueError("a variable's headers run past its bounds")
        if nbytes:
            # a matrix's array flags: always a full miUINT32 element of 8 bytes (too long for a small one)
            flags_type, flags_bytes = tag.unpack_from(data, position + 8)
            if flags_type != MI_UINT32 or flags_bytes != 8:
                raise ValueError("a variable's array header is malformed")
            if data[position + 16 + (0 if order == "<" else 3)] in (MX_CELL, MX_STRUCT, MX_OBJECT):
                total += _declared(data, order, position + 24, following, containers)
        position = following if following < end else None
    return total


def _declared(data: bytes, order: str, after: int, end: int, containers: list[tuple[int, int]]) -> int:
    """A cell's or struct's declared elements (`_objects`), read from its header after the array
    flags; where its elements start is put on `containers`."""
    kind = data[after - 8 + (0 if order == "<" else 3)]
    dims_type, dims_at, dims_bytes, after = _element(data, order, after)
    if dims_type != MI_INT32 or after > end:
        raise ValueError("a variable's array header is malformed")
    dims = struct.unpack_from(f"{order}{dims_bytes // 4}i", data, dims_at)
    if min(dims, default=0) < 0:
        raise ValueError("a variable declares a negative dimension")
    declared = math.prod(dims)
    after = _element(data, order, after)[3]  # its name
    if kind == MX_OBJECT:
        after = _element(data, order, after)[3]  # its class name
    if kind != MX_CELL:
        _, length_at, _, after = _element(data, order, after)
        _, _, names_bytes, after = _element(data, order, after)
        field_length = struct.unpack_from(order + "i", data, length_at)[0]
        declared *= (names_bytes // field_length if field_length > 0 else 0) + 1
    if after > end:
        raise ValueError("a variable's array header is malformed")
    if after < end:
        containers.append((after, end))
    return declared


def _variables(data: bytes, max_inflated: int) -> Iterator[tuple[bytes, str, str]]:
    """Each top-level variable of a MAT v5 file: (its miMATRIX bytes, inflated where compressed,
    no further than just past `max_inflated`; byte order; name). Nothing for other files (MAT v4,
    v7.3, not MAT at all)."""
    if len(data) < 128 or data[126:128] not in (b"IM", b"MI"):
        return
    order = "<" if data[126:128] == b"IM" else ">"
    if struct.unpack_from(order + "H", data, 124)[0] != MAT_V5:
        return
    position = 128
    while position + 8 <= len(data):
        mdtype, nbytes = struct.unpack_from(order + "II", data, position)
        payload = data[position + 8: position + 8 + nbytes]
        position += 8 + nbytes
        if mdtype == MI_COMPRESSED:
            try:
                inflater = zlib.decompressobj()
                payload = inflater.decompress(payload, max_inflated + 1)
            except zlib.error:
                raise ValueError("a compressed variable is not zlib data") from None
        elif mdtype == MI_MATRIX:
            payload = data[position - 8 - nbytes: position]
        else:
            continue
        try:
            _, body, _, _ = _element(payload, order, 0)
            after = _element(payload, order, _element(payload, order, body)[3])[3]
            _, name_at, name_bytes, _ = _element(payload, order, after)
            name = payload[name_at: name_at + name_bytes].decode("latin-1")
        except struct.error:
            raise ValueError("a variable's header is cut short") from None
        yield payload, order, name


def mat_objects(data: bytes, name: str, cap: int, max_inflated: int) -> int:
    """The objects scipy would make reading variable `name` of a MAT v5 file (`_objects`), no further
    than just past `cap`; 0 where the file is no MAT v5 file or has no such variable. A variable
    inflating past `max_inflated` is read that far (judge `mat_inflated_bytes` first)."""
    for payload, order, found in _variables(data, max_inflated):
        if found == name:
            try:
                return _objects(payload, order, 0, len(payload), cap)
            except struct.error:
                raise ValueError("a variable's headers are cut short") from None
    return 0


def read_mat_variable(data: bytes, name: str, max_inflated: int, max_objects: int, squeeze_me: bool = True) -> Any:
    """Variable `name` of a MAT file as scipy's loadmat reads it (structs as `mat_struct`), or None
    where the file has none; judged first, so that memory stays bounded: what its compressed
    variables inflate to (`MatTooLarge` past `max_inflated`) and the Python objects scipy would make
    of `name`'s cells and structs (`MatTooLarge` past `max_objects`, `MAT_OBJECT_BYTES` each: a 93 KB
    file of 8M empty cells took 1.3 GB). A file scipy cannot read, or whose headers are malformed,
    is `MatUnreadable`."""
    from scipy.io import loadmat

    try:
        inflated = mat_inflated_bytes(data, max_inflated)
        if inflated > max_inflated:
            raise MatTooLarge(f"its variables inflate past {max_inflated >> 20} MiB")
        objects = mat_objects(data, name, max_objects, max_inflated)
    except MatTooLarge:
        raise
    except ValueError as exc:
        raise MatUnreadable(f"not a readable MAT file: {exc}") from None
    if objects > max_objects:
        raise MatTooLarge(f"{name} holds more than {max_objects} cells and fields (about "
                          f"{max_objects * MAT_OBJECT_BYTES >> 20} MiB as scipy reads them)")
    found = scipy_read(lambda: loadmat(io.BytesIO(data), struct_as_record=False, squeeze_me=squeeze_me,
                                       variable_names=[name]))
    return found.get(name)
