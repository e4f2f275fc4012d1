"""MATLAB .mat files judged before scipy reads them: scipy inflates a compressed variable whole, so
a small file can ask for gigabytes; what they inflate to is counted here first."""

from __future__ import annotations

import functools
import io
import math
import struct
import zlib
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")

MI_COMPRESSED = 15
INFLATE_CHUNK = 1 << 20


def mat_v5_order(data: bytes) -> str | None:
    """The byte order of a file scipy reads as MAT v5, decided as scipy's loadmat decides it: no
    zero in its first 4 bytes (else MAT v4), major version 1 at bytes 124-125 (the byte after 'I'
    is the major one), and big-endian unless bytes 126-128 are `IM`; None for any other file."""
    if len(data) < 128 or 0 in data[:4]:
        return None
    major = data[125] if data[126] == ord("I") else data[124]
    if major != 1:
        return None
    return "<" if data[126:128] == b"IM" else ">"


def mat_inflated_bytes(data: bytes, cap: int) -> int:
    """What a MAT v5 file's compressed top-level variables inflate to, counted a chunk at a time and
    no further than just past `cap`. Other files (MAT v4, v7.3, not MAT at all) hold no compressed
    variable scipy would inflate: 0. Raises ValueError where a compressed variable is not zlib data."""
    order = mat_v5_order(data)
    if order is None:
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


MI_INT8, MI_INT32, MI_UINT32, MI_MATRIX, MI_UTF8 = 1, 5, 6, 14, 16
# the data types scipy reads numbers of, by their size; scipy looks a type up in a table without a
# bounds check, so a number element of any other type can kill its reader (a segfault)
NUMBER_SIZES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 9: 8, 12: 8, 13: 8}
CHARACTER_TYPES = frozenset({1, 2, 3, 4, 16, 17, 18})  # as scipy decodes characters: ascii, uint16, utf-8/16/32
INT_TYPES = frozenset({MI_INT32, MI_UINT32})  # dimensions and a struct's field name length
STRING_TYPES = frozenset({MI_INT8, MI_UTF8})  # names
MX_CELL, MX_STRUCT, MX_OBJECT, MX_CHAR, MX_SPARSE = 1, 2, 3, 4, 5
MX_NUMBERS = range(6, 16)  # double, single, int8 ... uint64
MX_FUNCTION, MX_OPAQUE = 16, 17  # MATLAB's function handles and objects: not read here
MAX_NESTING = 64  # cells and structs inside each other; scipy's reader recurses in C
# what scipy builds for one element of a cell or struct array, or one field of a struct element:
# an ndarray (or mat_struct) object and its headers. Measured: a cell of 8M empty matrices (93 KB
# compressed, 64 MB inflated) took 1.3 GB (163 B each); a struct array of 4M elements of 2 empty
# fields 2.1 GB (175 B per field, the mat_struct beside them)
MAT_OBJECT_BYTES = 176
# a sparse matrix costs more: scipy's csc_matrix and its 3 arrays, ~939 B measured (1.2M sparse cells
# of an MPII-like release: +909 MB), so it counts as this many objects more than its slot
SPARSE_EXTRA_OBJECTS = 5


class MatTooLarge(ValueError):
    """A MAT file whose variables would take more memory than its reader's budget, judged before
    scipy reads it."""


class _OverCap(Exception):
    """The object count went past its cap while walking: stop there."""


def _element(data: bytes, order: str, position: int) -> tuple[int, int, int, int]:
    """A data element at `position`, read as scipy reads it: (type, where its data starts, its byte
    count, where the next element starts). Small data elements (count and type in one word, data in
    the next 4 bytes) as MATLAB writes names and short arrays. Raises ValueError where it runs past
    the data."""
    if position + 8 > len(data):
        raise ValueError("a variable's headers are cut short")
    word = struct.unpack_from(order + "I", data, position)[0]
    if word >> 16:
        if word >> 16 > 4:
            raise ValueError("a variable's small data element is malformed")
        return word & 0xFFFF, position + 4, word >> 16, position + 8
    nbytes = struct.unpack_from(order + "I", data, position + 4)[0]
    following = position + 8 + nbytes + (-nbytes) % 8
    if following > len(data):
        raise ValueError("a variable's data runs past its bounds")
    return word, position + 8, nbytes, following


class _Walker:
    """Walks one variable's miMATRIX by its content, as scipy's reader does (a nested matrix's byte
    count is not what scipy follows), counting the objects scipy would build and checking each
    element scipy would read. Every matrix's byte count must be what it holds, so the walked bytes
    are the variable's bytes exactly: scipy, handed those alone, can read nothing that was not
    counted and checked (the array flags' tag, which scipy skips unread, is the one thing not checked)."""

    def __init__(self, data: bytes, order: str, cap: int):
        self.data, self.order, self.cap, self.size = data, order, cap, len(data)
        self.objects = 1  # the variable
        self.word = struct.Struct(order + "I").unpack_from
        self.words = struct.Struct(order + "II").unpack_from
        self.two_ints = struct.Struct(order + "ii").unpack_from
        # a matrix's tag, flags' tag, flags, dimensions' tag and two dimensions (`leaf`)
        self.head = struct.Struct(order + "8I2i").unpack_from

    def count(self, objects: int) -> None:
        self.objects += objects
        if self.objects > self.cap:
            raise _OverCap

    def checked(self, position: int, mdtypes: frozenset[int] | dict[int, int], what: str) -> tuple[int, int, int, int]:
        """The element at `position` (`_element`, inlined: it is most of the walk), whose type must
        be one of `mdtypes`."""
        if position + 8 > self.size:
            raise ValueError("a variable's headers are cut short")
        word = self.word(self.data, position)[0]
        if word >> 16:
            if word >> 16 > 4:
                raise ValueError("a variable's small data element is malformed")
            element = word & 0xFFFF, position + 4, word >> 16, position + 8
        else:
            nbytes = self.words(self.data, position)[1]
            element = word, position + 8, nbytes, position + 8 + nbytes + (-nbytes) % 8
            if element[3] > self.size:
                raise ValueError("a variable's data runs past its bounds")
        if element[0] not in mdtypes:
            raise ValueError(f"a variable's {what}: a wrong data type")
        return element

    def ints(self, position: int, what: str) -> tuple[tuple[int, ...], int]:
        mdtype, at, nbytes, following = self.checked(position, INT_TYPES, what)
        if nbytes % 4:
            raise ValueError(f"a variable's {what} is malformed")
        if nbytes == 8:  # most: two dimensions
            return self.two_ints(self.data, at), following
        return struct.unpack_from(f"{self.order}{nbytes // 4}i", self.data, at), following

    def numbers(self, position: int, count: int | None) -> int:
        """A number element (a numeric or sparse array's part): a type scipy reads, `count` values."""
        mdtype, _, nbytes, following = self.checked(position, NUMBER_SIZES, "numbers")
        size = NUMBER_SIZES[mdtype]
        if nbytes % size or (count is not None and nbytes // size != count):
            raise ValueError("a variable's numbers do not match its dimensions")
        return following

    def matrix(self, position: int, depth: int) -> int:
        """The miMATRIX at `position`, walked; where the next element starts."""
        if depth > MAX_NESTING:
            raise ValueError(f"a variable nests cells or structs more than {MAX_NESTING} deep")
        following = self.leaf(position)
        return following if following else self.walked_matrix(position, depth)

    def leaf(self, position: int) -> int:
        """Where the next element starts after a real number or text matrix of two dimensions whose
        elements all have full tags, read inline; 0 for any other matrix (or one malformed),
        walked then by `walked_matrix`, whose checks this path makes too (it only accepts what
        that one does). Most of a release's 2M matrices are such leaves: the calls each element
        took in `checked` were 4.0 CPU-s of a 9.2 CPU-s read (1.8 so)."""
        data, size, words = self.data, self.size, self.words
        if position + 48 > size:
            return 0
        mdtype, nbytes, _, _, flags, _, dims_type, dims_bytes, rows, columns = self.head(data, position)
        kind = flags & 0xFF
        if mdtype != MI_MATRIX or nbytes < 32 or dims_type not in INT_TYPES or dims_bytes != 8 or rows < 0 \
                or columns < 0 or flags >> 11 & 1 or not (kind in MX_NUMBERS or kind == MX_CHAR):
            return 0
        name_type, name_bytes = words(data, position + 40)  # inside: nbytes >= 32 and the walk ends in bounds
        at = position + 48 + name_bytes + (-name_bytes) % 8
        if name_type not in STRING_TYPES or at + 8 > size:
            return 0
        value_type, value_bytes = words(data, at)
        following = at + 8 + value_bytes + (-value_bytes) % 8
        if kind == MX_CHAR:
            if value_type not in CHARACTER_TYPES:
                return 0
        elif value_type not in NUMBER_SIZES or value_bytes != rows * columns * NUMBER_SIZES[value_type]:
            return 0
        return following if following <= size and following - position - 8 == nbytes else 0

    def walked_matrix(self, position: int, depth: int) -> int:
        """The miMATRIX at `position`, walked element by element (`checked`)."""
        if position + 8 > self.size:
            raise ValueError("a variable's headers are cut short")
        mdtype, nbytes = self.words(self.data, position)
        if mdtype != MI_MATRIX:
            raise ValueError("a variable's element is not a matrix")
        if nbytes == 0:  # an empty matrix: scipy reads nothing more
            return position + 8
        if nbytes < 16 or position + 24 > self.size:
            raise ValueError("a variable's array header is cut short")
        # the array flags: scipy reads 8 bytes of tag (ignored) and 8 of flags, whatever the tag says
        word = self.word(self.data, position + 16)[0]
        kind, is_complex = word & 0xFF, bool(word >> 11 & 1)  # scipy reads 2 parts where set, logical or not
        following = self.body(position + 24, kind, is_complex, depth)
        if following - position - 8 != nbytes:
            raise ValueError("a matrix's byte count is not what it holds")
        return following

    def body(self, position: int, kind: int, is_complex: bool, depth: int) -> int:
        """A matrix's dimensions, name and content after its flags, by its class."""
        if kind in (MX_FUNCTION, MX_OPAQUE):
            raise ValueError("a variable holds a MATLAB function handle or object, not read here")
        if not MX_CELL <= kind <= MX_NUMBERS[-1]:
            raise ValueError("a variable's array class is unknown")
        dims, position = self.ints(position, "dimensions")
        if not 2 <= len(dims) <= 32 or min(dims) < 0:
            raise ValueError("a variable's dimensions are malformed (negative, or fewer than 2)")
        position = self.checked(position, STRING_TYPES, "name")[3]
        declared = math.prod(dims)
        if kind in MX_NUMBERS:
            position = self.numbers(position, declared)
            return self.numbers(position, declared) if is_complex else position
        if kind == MX_CHAR:
            return self.checked(position, CHARACTER_TYPES, "characters")[3]
        if kind == MX_SPARSE:
            self.count(SPARSE_EXTRA_OBJECTS)
            for _ in range(4 if is_complex else 3):  # row indices, column starts, values (real, imaginary)
                position = self.numbers(position, None)
            return position
        if kind == MX_OBJECT:
            position = self.checked(position, STRING_TYPES, "class name")[3]
        if kind != MX_CELL:
            (length, *more), position = self.ints(position, "field name length")
            _, _, names_bytes, position = self.checked(position, STRING_TYPES, "field names")
            if more or length <= 0:
                raise ValueError("a struct's field name length is malformed")
            fields = names_bytes // length
            self.count(declared * (fields + 1))
            declared *= fields
        else:
            self.count(declared)
        for _ in range(declared):
            position = self.matrix(position, depth + 1)
        return position


NAME_PREFIX_BYTES = 4096  # inflated of a compressed variable to read its name: headers and a name of MATLAB's 63 characters


def _inflated_head(inflater: Any, compressed: bytes, order: str, max_inflated: int) -> bytes:
    """A compressed variable's first inflated bytes, enough for its headers up to its name (more
    where a long name or many dimensions need it), never past `max_inflated` + 1. Inflated on until a
    chunk comes back shorter than asked: zlib can have taken all the input and still hold output
    (a cut stream's last match), so an empty `unconsumed_tail` is not the end."""
    head, pending, want = b"", compressed, NAME_PREFIX_BYTES
    while True:
        asked = max(1, min(want, max_inflated + 1) - len(head))
        chunk = inflater.decompress(pending, asked)
        head, pending = head + chunk, inflater.unconsumed_tail
        if len(chunk) < asked or len(head) > max_inflated or _name_fits(head, order):
            return head
        want *= 2


def _name_fits(head: bytes, order: str) -> bool:
    """Whether `head` holds a variable's miMATRIX headers through its name (else more is inflated)."""
    try:
        _variable_name(head, order)
    except (ValueError, struct.error):
        return False
    return True


def _variable_name(payload: bytes, order: str) -> str:
    """The name of the miMATRIX at the start of `payload` (scipy reads it from these headers)."""
    if len(payload) < 24 or struct.unpack_from(order + "I", payload)[0] != MI_MATRIX:
        raise ValueError("a variable's header is cut short")
    after = 24  # past the flags: 8 + 8 bytes, as scipy reads them; an opaque class's name is next
    if payload[16 + (0 if order == "<" else 3)] != MX_OPAQUE:
        after = _element(payload, order, after)[3]  # past the dimensions
    _, name_at, name_bytes, _ = _element(payload, order, after)
    return payload[name_at: name_at + name_bytes].decode("latin-1")


def _variables(data: bytes, max_inflated: int) -> Iterator[tuple[bytes, str, str, slice, Callable[[], bytes]]]:
    """Each top-level variable of a file scipy reads as MAT v5 (`mat_v5_order`): (its miMATRIX
    headers through its name, inflated where compressed; byte order; name; where its element lies
    in `data`; a call giving its whole miMATRIX, inflated no further than just past `max_inflated`).
    A compressed variable not wanted is passed by its name alone: it was inflated whole (up to the
    budget, held) only to be skipped; an uncompressed one is one copy of its element (it was two).
    Nothing for other files (MAT v4, v7.3, not MAT at all)."""
    order = mat_v5_order(data)
    if order is None:
        return
    view = memoryview(data)  # the compressed bytes handed to zlib uncopied
    position = 128
    while position + 8 <= len(data):
        mdtype, nbytes = struct.unpack_from(order + "II", data, position)
        where = slice(position, position + 8 + nbytes)
        position += 8 + nbytes
        if mdtype == MI_COMPRESSED:
            inflater = zlib.decompressobj()
            try:
                head = _inflated_head(inflater, view[where.start + 8: where.stop], order, max_inflated)
            except zlib.error:
                raise ValueError("a compressed variable is not zlib data") from None
            whole = functools.partial(_inflated_rest, inflater, head, max_inflated)
        elif mdtype == MI_MATRIX:
            head = data[where]
            whole = functools.partial(_same, head)
        else:
            raise ValueError("a top-level element is not a variable")  # scipy stops there too
        yield head, order, _variable_name(head, order), where, whole


def _same(value: bytes) -> bytes:
    return value


def _inflated_rest(inflater: Any, head: bytes, max_inflated: int) -> bytes:
    """A compressed variable inflated on from its `head`, no further than just past `max_inflated`."""
    try:
        rest = inflater.decompress(inflater.unconsumed_tail, max(1, max_inflated + 1 - len(head)))
    except zlib.error:
        raise ValueError("a compressed variable is not zlib data") from None
    return head + rest if len(head) <= max_inflated else head


def _walked(data: bytes, name: str, cap: int, max_inflated: int) -> tuple[int, bytes | None]:
    """Variable `name`'s objects (`_Walker`, no further than just past `cap`) and its top-level
    element as the file holds it (None past the cap, or where the file has no such variable: 0).
    What that element holds (inflated, where compressed) is exactly what was walked: every
    matrix's byte count is what it holds, the variable's too."""
    for _, order, found, where, whole in _variables(data, max_inflated):
        if found == name:
            walker = _Walker(whole(), order, cap)
            try:
                walker.matrix(0, 0)
            except _OverCap:
                return walker.objects, None
            except (struct.error, IndexError):
                raise ValueError("a variable's headers are cut short") from None
            return walker.objects, data[where]
    return 0, None


def mat_objects(data: bytes, name: str, cap: int, max_inflated: int) -> int:
    """The objects scipy would make reading variable `name` of a MAT v5 file, counted from its
    headers walked as scipy reads them, no further than just past `cap`: 1 for the variable, and
    for each cell or struct array its declared elements (times its fields and one more for a
    struct's: its mat_struct), so that a cell which declares 10^9 elements and holds none is counted
    by what scipy allocates for it, and `SPARSE_EXTRA_OBJECTS` more for each sparse matrix. 0 where
    the file is no MAT v5 file or has no such variable. A variable inflating past `max_inflated` is
    read that far (judge `mat_inflated_bytes` first). Raises ValueError where its headers are
    malformed or cut short."""
    return _walked(data, name, cap, max_inflated)[0]


def _mat_file(matrix: bytes, order: str) -> bytes:
    """A MAT v5 file of one variable's element (compressed or not): scipy reads no other."""
    version = b"\x00\x01IM" if order == "<" else b"\x01\x00MI"
    return b"MATLAB 5.0 MAT-file, rebuilt of what was judged".ljust(116) + bytes(8) + version + matrix


def _size(nbytes: int) -> str:
    return f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KiB"


def read_mat_variable(data: bytes, name: str, max_inflated: int, max_objects: int, squeeze_me: bool = True) -> Any:
    """Variable `name` of a MAT file as scipy's loadmat reads it (structs as `mat_struct`), or None
    where the file has none; judged first, so that memory stays bounded: what its compressed
    variables inflate to (`MatTooLarge` past `max_inflated`) and the Python objects scipy would make
    of `name`'s cells and structs (`MatTooLarge` past `max_objects`, `MAT_OBJECT_BYTES` each: a 93 KB
    file of 8M empty cells took 1.3 GB). scipy reads a MAT v5 file of that variable's element alone,
    whose content was walked as scipy reads it (`_Walker`), never the file itself; the variables
    before it are judged by their inflated size and name only (a header of theirs scipy would
    refuse is not refused here). A file scipy cannot read, or whose walked headers are malformed,
    is `MatUnreadable`."""
    from scipy.io import loadmat

    try:
        inflated = mat_inflated_bytes(data, max_inflated)
        if inflated > max_inflated:
            raise MatTooLarge(f"its variables inflate past {_size(max_inflated)}")
        objects, matrix = _walked(data, name, max_objects, max_inflated)
    except MatTooLarge:
        raise
    except ValueError as exc:
        raise MatUnreadable(f"not a readable MAT file: {exc}") from None
    if objects > max_objects:
        raise MatTooLarge(f"{name} holds more than {max_objects} cells and fields (about "
                          f"{_size(max_objects * MAT_OBJECT_BYTES)} as scipy reads them)")
    order = mat_v5_order(data)
    if order is not None and matrix is None:
        return None
    rebuilt = data if order is None else _mat_file(matrix, order)
    del matrix
    found = scipy_read(lambda: loadmat(io.BytesIO(rebuilt), struct_as_record=False, squeeze_me=squeeze_me,
                                       variable_names=[name]))
    return found.get(name)
