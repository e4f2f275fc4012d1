"""What a parquet column chunk's page headers say, read before its data is: the counts pyarrow
decodes by. Its footer (`ColumnChunkMetaData`: `num_values`, `total_uncompressed_size`) is a
summary anyone may write anything in; pyarrow allocates each page by its own header (its
`uncompressed_page_size`, its `num_values`). A footer patched to say 16 values of a chunk whose one
page holds 64 million read as 1.2 GB. Each page header (Thrift compact protocol, `PageHeader` of
`parquet.thrift`) is read here for just those fields, its page's data skipped, a bounded number of
pages a chunk.
"""

from __future__ import annotations

import hashlib
import io
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Iterator

# pages walked in one column chunk: pyarrow writes a page per 1 MiB or 20,000 rows, so a 2 GiB chunk
# (the most a row group may declare) has ~2,000; a chunk of more is refused, never walked to its end
MAX_PAGES = 100_000
# pages walked in one opened file, all its chunks together: a footer's 1,000 row groups may all point
# at one chunk of 100,000 empty pages (0.7 s a walk); a wide honest file has some 100,000 in all
MAX_FILE_PAGES = 1_000_000
_walked: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()  # opened file -> pages
# the most bytes one page header may take (pyarrow's own limit: `kDefaultMaxPageHeaderSize`)
MAX_HEADER_BYTES = 16 << 20
MAX_DEPTH = 16  # structs within structs in a header (a page's `Statistics` is the deepest, 2)
_READ_AHEAD = 256  # bytes read at a time for a header (a binary field past them is skipped by seeking)

DATA_PAGE, INDEX_PAGE, DICTIONARY_PAGE, DATA_PAGE_V2 = 0, 1, 2, 3
# compact protocol field types (`_UUID`: Thrift 0.19's, 16 bytes, which pyarrow's Thrift passes over)
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT, _UUID = range(14)
_UUID_BYTES = 16


@dataclass(frozen=True)
class PageHeader:
    """The fields of one `PageHeader` the reading is judged by; `size`: the header's own bytes."""

    type: int
    uncompressed_page_size: int
    compressed_page_size: int
    num_values: int  # of its data page (v1 or v2) or its dictionary page's entries
    size: int


@dataclass(frozen=True)
class ChunkPages:
    """A column chunk's pages summed: `values` of its data pages (what the footer's `num_values`
    counts), `dictionary_values`, and headers and pages together `uncompressed` and `compressed`
    (what the footer's `total_uncompressed_size` and `total_compressed_size` count); the largest
    data page (`largest_uncompressed`, `largest_compressed`, its header counted) and the dictionary
    page (`dictionary_uncompressed`): what a read a few rows at a time holds of the chunk at once
    (`hf_parquet.streamed_bytes`); `largest_values`, the values of that largest data page (more than
    one: a smaller page would have held fewer rows, what a refusal's advice says); `fewest_values`,
    the fewest values of a data page holding any, its last such page aside (0: one page holds them
    all): a run of rows lies in at most `2 + (rows - 2) // fewest_values` pages."""

    values: int
    dictionary_values: int
    uncompressed: int
    compressed: int
    pages: int
    largest_uncompressed: int = 0
    largest_compressed: int = 0
    dictionary_uncompressed: int = 0
    largest_values: int = 0
    fewest_values: int = 0


class PageHeaderError(ValueError):
    """A page header that cannot be read as pyarrow reads one (cut, not Thrift, too large), or a
    chunk of more than `MAX_PAGES` pages."""


class _Reader:
    """A file's bytes from `start`, read ahead a little at a time; long binaries skipped by seeking."""

    def __init__(self, source: Any, start: int):
        self.source, self.position, self.buffer, self.offset = source, start, b"", 0
        self.limit = start + MAX_HEADER_BYTES  # a header runs no further (pyarrow's limit)

    def left(self) -> int:
        """Bytes the header may still take: what bounds any count it declares."""
        return self.limit - self.position

    def byte(self) -> int:
        if self.position >= self.limit:
            raise PageHeaderError(f"a page header runs past {MAX_HEADER_BYTES} bytes, pyarrow's limit")
        if self.offset >= len(self.buffer):
            self.source.seek(self.position)
            self.buffer, self.offset = self.source.read(_READ_AHEAD), 0
            if not self.buffer:
                raise PageHeaderError(f"a page header is cut at byte {self.position} (the file ends)")
        value = self.buffer[self.offset]
        self.offset += 1
        self.position += 1
        return value

    def skip(self, count: int) -> None:
        if count < 0:
            raise PageHeaderError(f"a page header holds a negative length ({count})")
        if count > self.left():
            raise PageHeaderError(f"a page header runs past {MAX_HEADER_BYTES} bytes, pyarrow's limit")
        left = len(self.buffer) - self.offset
        if count <= left:
            self.offset += count
        else:
            self.buffer, self.offset = b"", 0
        self.position += count

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise PageHeaderError(f"a page header's varint at byte {self.position} runs past 64 bits")

    def integer(self) -> int:
        unsigned = self.varint()
        return (unsigned >> 1) ^ -(unsigned & 1)  # zigzag


def _field(reader: _Reader, last: int) -> tuple[int, int]:
    """(field id, type) of a struct's next field (type `_STOP` at its end)."""
    head = reader.byte()
    kind = head & 0x0F
    if kind == _STOP:
        return 0, _STOP
    delta = head >> 4
    return (last + delta if delta else reader.integer()), kind


def _skip(reader: _Reader, kind: int, depth: int) -> None:
    """Pass over one value of compact type `kind`."""
    if depth > MAX_DEPTH:
        raise PageHeaderError(f"a page header nests past {MAX_DEPTH} levels")
    if kind in (_TRUE, _FALSE):
        return
    if kind == _BYTE:
        reader.skip(1)
    elif kind in (_I16, _I32, _I64):
        reader.varint()
    elif kind == _DOUBLE:
        reader.skip(8)
    elif kind == _UUID:
        reader.skip(_UUID_BYTES)
    elif kind == _BINARY:
        reader.skip(reader.varint())
    elif kind in (_LIST, _SET):
        head = reader.byte()
        size = _elements(reader, head >> 4 if head >> 4 != 15 else reader.varint())
        element = head & 0x0F
        for _ in range(size):
            if element in (_TRUE, _FALSE):  # a list's bools take a byte each
                reader.skip(1)
            else:
                _skip(reader, element, depth + 1)
    elif kind == _MAP:
        size = _elements(reader, reader.varint())
        kinds = reader.byte() if size else 0
        for _ in range(size):
            _skip(reader, kinds >> 4, depth + 1)
            _skip(reader, kinds & 0x0F, depth + 1)
    elif kind == _STRUCT:
        _struct(reader, {}, depth + 1)
    else:
        raise PageHeaderError(f"a page header holds a field of unknown type {kind}")


def _elements(reader: _Reader, size: int) -> int:
    """A container's declared size, refused where its elements (a byte each at least) could not fit
    in what the header may still take: a 26-byte header declaring 2**40 bytes was walked for days."""
    if size > reader.left():
        raise PageHeaderError(f"a page header declares a container of {size} elements, more than its "
                              f"{MAX_HEADER_BYTES}-byte limit could hold")
    return size


def _struct(reader: _Reader, wanted: dict[int, Any], depth: int) -> dict[int, Any]:
    """A struct's fields: those `wanted` names read (an int's value, or for a struct a dict of its
    wanted fields, by the nested `wanted` dict given), every other passed over."""
    found: dict[int, Any] = {}
    last = 0
    while True:
        number, kind = _field(reader, last)
        if kind == _STOP:
            return found
        last = number
        if number in wanted and wanted[number] is int and kind in (_I32, _I64):
            found[number] = reader.integer()
        elif number in wanted and wanted[number] is bool and kind in (_TRUE, _FALSE):
            found[number] = kind == _TRUE  # a compact bool field holds its value in its type
        elif number in wanted and kind == _STRUCT and isinstance(wanted[number], dict):
            if depth > MAX_DEPTH:
                raise PageHeaderError(f"a page header nests past {MAX_DEPTH} levels")
            found[number] = _struct(reader, wanted[number], depth + 1)
        else:
            _skip(reader, kind, depth)


# `PageHeader`: 1 type, 2 uncompressed_page_size, 3 compressed_page_size, 5 data_page_header,
# 7 dictionary_page_header, 8 data_page_header_v2; each of those three's field 1 is its num_values
_PAGE_HEADER = {1: int, 2: int, 3: int, 5: {1: int}, 7: {1: int}, 8: {1: int}}


def page_header(source: Any, start: int) -> PageHeader:
    """The page header at byte `start` of the file `source` (seekable, binary)."""
    reader = _Reader(source, start)
    fields = _struct(reader, _PAGE_HEADER, 0)
    size = reader.position - start
    if size > MAX_HEADER_BYTES:
        raise PageHeaderError(f"a page header of {size} bytes at byte {start}, over pyarrow's {MAX_HEADER_BYTES}")
    if not all(k in fields for k in (1, 2, 3)):
        raise PageHeaderError(f"the page header at byte {start} lacks its type or sizes")
    kind = fields[1]
    inner = fields.get({DATA_PAGE: 5, DICTIONARY_PAGE: 7, DATA_PAGE_V2: 8}.get(kind, 0), {})
    if not isinstance(inner, dict) or not all(isinstance(fields[k], int) for k in (1, 2, 3)):
        raise PageHeaderError(f"the page header at byte {start} types its fields otherwise than parquet.thrift")
    if fields[2] < 0 or fields[3] < 0 or inner.get(1, 0) < 0:
        raise PageHeaderError(f"the page header at byte {start} declares a negative size or count")
    return PageHeader(kind, fields[2], fields[3], inner.get(1, 0), size)


# the fields a page's own reading needs (`parquet_values`): `DataPageHeader` 1 num_values, 2 encoding,
# 3 definition_level_encoding; `DictionaryPageHeader` 1 num_values, 2 encoding; `DataPageHeaderV2`
# 1 num_values, 4 encoding, 5 definition_levels_byte_length, 6 repetition_levels_byte_length, 7 is_compressed
_PAGE_LAYOUT = {1: int, 2: int, 3: int, 5: {1: int, 2: int, 3: int}, 7: {1: int, 2: int},
                8: {1: int, 4: int, 5: int, 6: int, 7: bool}}


@dataclass(frozen=True)
class PageLayout:
    """A page header with what reading its data takes: its values' `encoding`, and of a v2 data
    page its levels' byte lengths (stored before its values, never compressed) and whether its
    values are compressed (parquet.thrift's default: they are)."""

    header: PageHeader
    encoding: int
    definition_bytes: int = 0
    repetition_bytes: int = 0
    compressed: bool = True


def page_layout(source: Any, start: int) -> PageLayout:
    """The page header at byte `start` of the file `source` with its reading's fields (`PageLayout`)."""
    header = page_header(source, start)
    fields = _struct(_Reader(source, start), _PAGE_LAYOUT, 0)
    inner = fields.get({DATA_PAGE: 5, DICTIONARY_PAGE: 7, DATA_PAGE_V2: 8}.get(header.type, 0), {})
    encoding = inner.get(4 if header.type == DATA_PAGE_V2 else 2, 0)
    if header.type != DATA_PAGE_V2:
        return PageLayout(header, encoding)
    definition, repetition = inner.get(5, 0), inner.get(6, 0)
    if definition < 0 or repetition < 0 or definition + repetition > header.uncompressed_page_size:
        raise PageHeaderError(f"the page header at byte {start} declares levels of {definition + repetition} "
                              f"bytes in a page of {header.uncompressed_page_size}")
    return PageLayout(header, encoding, definition, repetition, inner.get(7, True))


def chunk_start(chunk) -> int:
    """Where a column chunk's first page lies, as pyarrow finds it: its dictionary page if it has
    one before its first data page."""
    start = chunk.data_page_offset
    if chunk.has_dictionary_page and 0 < (chunk.dictionary_page_offset or 0) < start:
        start = chunk.dictionary_page_offset
    return start


def _count_page(source: Any) -> None:
    """One more page walked in the file `source`; past `MAX_FILE_PAGES`, PageHeaderError."""
    try:
        walked = _walked.get(source, 0) + 1
        _walked[source] = walked
    except TypeError:  # a file object that takes no weak reference: its chunks' own bound holds
        return
    if walked > MAX_FILE_PAGES:
        raise PageHeaderError(f"over {MAX_FILE_PAGES} pages in one file, its row groups all told")


def chunk_pages(source: Any, chunk) -> ChunkPages:
    """The page headers of column chunk `chunk` (a `ColumnChunkMetaData`) of the file `source`,
    summed, walked as pyarrow reads them: from `chunk_start` while within the footer's stored size
    and until the footer's `num_values` are seen. Never more than `MAX_PAGES` (`PageHeaderError`);
    the file's position is kept."""
    if chunk.num_values == 0 and chunk.data_page_offset == 0:
        return ChunkPages(0, 0, 0, 0, 0)  # pyarrow's chunk of a 0-row group: no page, never read
    kept = source.tell()
    try:
        position = start = chunk_start(chunk)
        end = start + chunk.total_compressed_size
        values = dictionary = uncompressed = compressed = pages = 0
        largest_uncompressed = largest_compressed = dictionary_uncompressed = largest_values = 0
        fewest = last = 0  # of the data pages holding values: the fewest before the last, the last's
        while position < end and (pages == 0 or values < chunk.num_values):
            if pages >= MAX_PAGES:
                raise PageHeaderError(f"column {chunk.path_in_schema} has over {MAX_PAGES} pages in one row group")
            _count_page(source)
            header = page_header(source, position)
            pages += 1
            if header.type in (DATA_PAGE, DATA_PAGE_V2):
                values += header.num_values
                if header.num_values > 0:
                    if last:  # the page before it, no longer the last
                        fewest = min(fewest, last) if fewest else last
                    last = header.num_values
                if header.size + header.uncompressed_page_size > largest_uncompressed:
                    largest_values = header.num_values
                largest_uncompressed = max(largest_uncompressed, header.size + header.uncompressed_page_size)
                largest_compressed = max(largest_compressed, header.size + header.compressed_page_size)
            elif header.type == DICTIONARY_PAGE:
                dictionary += header.num_values
                dictionary_uncompressed += header.size + header.uncompressed_page_size
            uncompressed += header.size + header.uncompressed_page_size
            compressed += header.size + header.compressed_page_size
            position += header.size + header.compressed_page_size
        return ChunkPages(values, dictionary, uncompressed, compressed, pages, largest_uncompressed,
                          largest_compressed, dictionary_uncompressed, largest_values, fewest)
    finally:
        source.seek(kept)


# Parquet Modular Encryption: a file whose footer is encrypted ends in "PARE"; one with a plaintext
# footer ends in "PAR1" and its `FileMetaData` says so (field 8, `encryption_algorithm`), each of its
# encrypted columns in its `ColumnChunk` (field 8, `crypto_metadata`). pyarrow, given no key,
# answers the first with an OSError but aborts the whole process (C++ `terminate`) on the second as
# soon as a column chunk's metadata is asked for: the footer is walked here before pyarrow reads it.
ENCRYPTED_FOOTER_MAGIC, PLAIN_MAGIC = b"PARE", b"PAR1"
_TAIL_BYTES = 8  # the footer's length and the magic: pyarrow parses any footer of `length <= size - 8`
_FILE_ENCRYPTION, _FILE_ROW_GROUPS, _GROUP_COLUMNS, _CHUNK_CRYPTO = 8, 4, 1, 8
# footers already walked, by digest: a file is opened a few times a build (its format, its claimed
# paths, its rows) and a footer of 40,000 column chunks (4 MB) takes ~1 s to walk in Python
_FOOTERS_KEPT = 256
# the most bytes a footer may take: it is read whole (by pyarrow too) and walked here at ~0.2 s a MB;
# pyarrow's footer of 40,000 column chunks (200 row groups of 200 columns) is 4.3 MB
MAX_FOOTER_BYTES = 64 << 20
_NO_KEY = "the build holds no key, never reads it; decrypt it first (pyarrow: decryption_properties), write it plain"
_walked_footers: dict[bytes, str | None] = {}
_walked_lock = threading.Lock()  # a runner's threads share the cache


def _list_size(reader: _Reader) -> tuple[int, int]:
    """(element count, element type) of a compact-protocol list or set."""
    head = reader.byte()
    return _elements(reader, head >> 4 if head >> 4 != 15 else reader.varint()), head & 0x0F


def _fields(reader: _Reader) -> Iterator[tuple[int, int]]:
    """A struct's (field id, compact type) in order, up to its stop: the caller reads or skips each
    field's value before it asks for the next."""
    last = 0
    while True:
        number, kind = _field(reader, last)
        if kind == _STOP:
            return
        last = number
        yield number, kind


def _encrypted_columns(reader: _Reader) -> int:
    """How many `ColumnChunk`s of a `FileMetaData`'s row groups carry `crypto_metadata`; the
    footer's own `encryption_algorithm` counts as one more. Other fields are passed over."""
    found = 0
    for number, kind in _fields(reader):
        if number == _FILE_ENCRYPTION:
            found += 1
            _skip(reader, kind, 0)
        elif number == _FILE_ROW_GROUPS and kind == _LIST:
            groups, _ = _list_size(reader)  # each read as a `RowGroup`, whatever type the list names,
            for _ in range(groups):          # as Thrift's generated reader does
                found += _group_encrypted_columns(reader)
        else:
            _skip(reader, kind, 0)
    return found


def _group_encrypted_columns(reader: _Reader) -> int:
    """A `RowGroup`'s `ColumnChunk`s (its field 1) that carry `crypto_metadata`."""
    found = 0
    for number, kind in _fields(reader):
        if number == _GROUP_COLUMNS and kind == _LIST:
            chunks, _ = _list_size(reader)  # each read as a `ColumnChunk`, as pyarrow reads them
            for _ in range(chunks):
                for field, field_kind in _fields(reader):
                    found += field == _CHUNK_CRYPTO
                    _skip(reader, field_kind, 3)
        else:
            _skip(reader, kind, 1)
    return found


def _footer_problem(data: bytes) -> str | None:
    """Why a plaintext `FileMetaData` (its bytes) must not reach pyarrow: it names an encryption
    algorithm or encrypted column chunks, or nests deeper than this walk goes (pyarrow's Thrift
    goes to 64 levels: what it holds there is unknown; no writer nests past 6), or this walk cannot
    read it to its end (cut, no Thrift, a type it does not know): what pyarrow would read past that
    point is unknown, and it aborts on an encrypted column it finds there (pyarrow refuses a cut
    or garbage footer itself: the file is its `bad_parquet` either way)."""
    reader = _Reader(io.BytesIO(data), 0)
    reader.limit, reader.buffer = len(data), data  # all of it in hand: never read again
    try:
        if _encrypted_columns(reader):
            return f"is encrypted (Parquet Modular Encryption, plaintext footer): {_NO_KEY}"
    except PageHeaderError as exc:
        if "nests past" in str(exc):
            return f"has a footer whose structs nest past {MAX_DEPTH} levels (no writer's do): not opened"
        return (f"has a footer that cannot be read to its end as parquet's FileMetaData (it stops at byte "
                f"{reader.position} of {len(data)}: cut, not Thrift, or a type Thrift does not know): not opened")
    return None


def encryption_problem(source: Any) -> str | None:
    """Why pyarrow must not open the parquet file `source` (seekable, binary): it is encrypted
    (an encrypted footer, or a plaintext footer naming an encryption algorithm or encrypted column
    chunks, `_footer_problem`; one it cannot read too), else None. A file pyarrow refuses before it
    parses a footer (shorter than its 8-byte tail, no `PAR1`, a length past the file's start) is
    left to pyarrow, which says why; the file's position is kept."""
    kept = source.tell()
    try:
        size = source.seek(0, 2)
        if size < _TAIL_BYTES:
            return None
        source.seek(size - 8)
        tail = source.read(8)
        if tail[4:] == ENCRYPTED_FOOTER_MAGIC:
            return f"is encrypted (Parquet Modular Encryption, its footer too: PARE): {_NO_KEY}"
        length = int.from_bytes(tail[:4], "little")
        if tail[4:] != PLAIN_MAGIC or length > size - _TAIL_BYTES:  # pyarrow's bound: no leading PAR1 needed
            return None
        if length > MAX_FOOTER_BYTES:
            return f"has a footer of {length} bytes, over the {MAX_FOOTER_BYTES}-byte budget of one: not opened"
        source.seek(size - 8 - length)
        data = source.read(length)
        digest = hashlib.blake2b(data, digest_size=16).digest()
        with _walked_lock:
            if digest in _walked_footers:
                return _walked_footers[digest]
        problem = _footer_problem(data)
        with _walked_lock:
            while len(_walked_footers) >= _FOOTERS_KEPT:
                _walked_footers.pop(next(iter(_walked_footers)))
            _walked_footers[digest] = problem
        return problem
    finally:
        source.seek(kept)

