"""A parquet page decompressed whole by pyarrow's C codecs, and what may be read from it while it
is held.

Gzip, zstd and brotli pages are decompressed as they are read by pyarrow's C streaming decoders
(`StreamedPage`), never held whole. Snappy pages have a streaming decoder of their own
(`parquet_values._Snappy`, in Python: ~0.13 s a MB of a raw bitmap's bytes); lz4 pages have none
here, and each page is compressed alone, so a snappy or lz4 page is decompressed whole where it fits a row's room (`VALUE_COPIES`
times what one value may hold), never its row group whole. A page so held beside the values read
from it bounds each: a value read while its page is held is held beside it `VALUE_COPIES` times
over, the page's last value only once before the page is let go (`held_limits`). Its stream's
length is read before a byte is made (snappy's head; an lz4 stream compressed over
`LZ4_WALKED_RATIO` times, its sequences walked: `_declared`), and each of its bytes read is handed
back to its file's budget (`credit`: what is charged is what no value is read from).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterator

# the codecs pyarrow decodes a stream of as it is read (`StreamedPage`): never held whole
STREAMED = frozenset({"GZIP", "ZSTD", "BROTLI"})
_PIECE = 1 << 20  # decompressed bytes passed over at a time
# an lz4 page declaring over this many times its stored bytes has its sequences walked (in Python,
# nothing made) for its true length before it is decompressed, not decompressed twice (`_check_whole`):
# the walk takes ~35 ms a MB of a dithered BMP's (one sequence a ~4 bytes) against pyarrow's 1 ms
# decompressing it twice, but a sequence of a page so compressed makes 48 bytes or more (100 MB of
# zeros: 1.5 ms walked, 270 ms decompressed)
LZ4_WALKED_RATIO = 16
_NOT_FF = re.compile(rb"[^\xff]")

# the footer's codec names pyarrow's `decompress` reads a page of, by its own codec names: pyarrow
# names a file's LZ4_RAW chunk `LZ4` (the deprecated Hadoop-framed LZ4 it names `UNKNOWN`)
PYARROW_CODECS = {"SNAPPY": "snappy", "GZIP": "gzip", "ZSTD": "zstd", "BROTLI": "brotli", "LZ4": "lz4_raw"}


class PageError(ValueError):
    """A page its codec cannot decompress to the size its header declares."""


class WholePage:
    """A page's `size` bytes decompressed whole from its `stored` bytes (pyarrow, in C), read
    forward; `releasing`: let go once read to its end (a data page: its last value read, nothing
    seeks back into it)."""

    def __init__(self, stored: bytes, size: int, codec: str, releasing: bool = False,
                 credit: Callable[[int], None] = lambda count: None):
        import pyarrow as pa

        walked = _declared(stored, size, codec)
        try:
            data = pa.decompress(stored, size, codec=PYARROW_CODECS[codec], asbytes=False)
        except (OSError, ValueError) as exc:  # pyarrow's errors of a corrupt stream are both
            raise PageError(f"a {codec} page cannot be decompressed to its declared {size} bytes: {exc}") from exc
        if data.size != size:
            raise PageError(f"a {codec} page decompresses to {data.size} bytes, its header says {size}")
        if not walked:
            _check_whole(stored, size, codec)
        self.data = memoryview(data)
        self.at, self.left, self.size, self.releasing = 0, size, size, releasing
        self.credit, self.owed = credit, size  # its bytes read handed back to its file's budget, once each

    def tell(self) -> int:
        return self.at

    def seek(self, offset: int) -> int:
        self.at, self.left = offset, self.size - offset
        return 0

    def read(self, count: int) -> bytes:
        if count > self.left:
            raise PageError(f"a page's value runs {count - self.left} bytes past its page")
        self.at, self.left = self.at + count, self.left - count
        value = bytes(self.data[self.at - count: self.at])
        given = min(count, self.owed)
        if given:
            self.owed -= given
            self.credit(given)
        if self.releasing and not self.left:
            self.data = memoryview(b"")
        return value

    def skip(self, count: int, refused: bool = False) -> None:
        if count > self.left:
            raise PageError(f"a page's value runs {count - self.left} bytes past its page")
        self.at, self.left = self.at + count, self.left - count

    def lengths(self, count: int) -> list[int]:
        """The lengths of the next `count` PLAIN values (4-byte prefixes), read ahead, the page's
        position kept; fewer where the page ends first (its reading then says where)."""
        found, at = [], self.at
        while len(found) < count and at + 4 <= self.size:
            length = int.from_bytes(self.data[at: at + 4], "little")
            found.append(length)
            at += 4 + length
        return found


class _Window:
    """`count` bytes of the file `source` from `start`, as a raw file pyarrow reads (each read
    seeks first: the file is shared with pyarrow's reads of the other columns)."""

    closed = False

    def __init__(self, source: Any, start: int, count: int):
        self.source, self.start, self.count, self.at = source, start, count, 0

    def readable(self) -> bool:
        return True

    def read(self, count: int = -1) -> bytes:
        count = self.count - self.at if count is None or count < 0 else min(count, self.count - self.at)
        self.source.seek(self.start + self.at)
        data = self.source.read(count)
        self.at += len(data)
        return data

    def close(self) -> None:
        self.closed = True


class StreamedPage:
    """A gzip, zstd or brotli page's `size` bytes, decompressed (by pyarrow's C streaming
    decoders) as they are read from its `stored` bytes at `start` of `source`, never held whole: a
    dictionary page of 126 MB is read at ~71 MiB. Each byte decompressed and passed over (not a
    value read) is `charge`d (its file's budget of bytes decompressed in C); one read back is
    decompressed again from the page's start.
    Its stream must end at its header's `size`, neither before nor after."""

    def __init__(self, source: Any, start: int, stored: int, size: int, codec: str,
                 charge: Callable[[int], None] = lambda count: None):
        self.source, self.start, self.stored, self.size, self.codec = source, start, stored, size, codec
        self.charge = charge
        self._open()

    def _open(self) -> None:
        import pyarrow as pa

        raw = pa.PythonFile(_Window(self.source, self.start, self.stored), mode="r")
        self.stream = pa.CompressedInputStream(raw, PYARROW_CODECS[self.codec])
        self.at, self.left = 0, self.size

    def tell(self) -> int:
        return self.at

    def seek(self, offset: int) -> int:
        """Go to byte `offset` (back: from the page's start again); the bytes so decompressed."""
        if offset < self.at:
            self._open()
        passed = offset - self.at
        self.skip(passed)
        return passed

    def _take(self, count: int, charged: bool) -> bytes:
        if count > self.left:
            raise PageError(f"a page's value runs {count - self.left} bytes past its page")
        if charged:
            self.charge(count)
        try:
            data = self.stream.read(count)
            extra = self.stream.read(1) if count == self.left else b""
        except (OSError, ValueError) as exc:
            raise PageError(f"a {self.codec} page cannot be decompressed: {exc}") from exc
        if len(data) != count:
            raise PageError(f"a {self.codec} page decompresses to {self.at + len(data)} bytes, its header says "
                            f"{self.size}")
        if extra:
            raise PageError(f"a {self.codec} page decompresses past the {self.size} bytes its header says")
        self.at, self.left = self.at + count, self.left - count
        return data

    def read(self, count: int) -> bytes:
        return bytes(self._take(count, False))

    def skip(self, count: int, refused: bool = False) -> None:
        while count:
            piece = min(count, _PIECE)
            self._take(piece, True)
            count -= piece


def _declared(stored: bytes, size: int, codec: str) -> bool:
    """`PageError` where a page's stream says another length than its header's `size`, read before
    a byte is decompressed: snappy's head; an lz4 stream declaring over `LZ4_WALKED_RATIO` times its
    stored bytes, by walking its sequences (nothing made). Whether its length is so checked."""
    if codec == "SNAPPY":
        length = 0
        for at, byte in enumerate(stored[:5]):
            length |= (byte & 0x7F) << (7 * at)
            if byte < 0x80:
                break
        if length != size:
            raise PageError(f"a SNAPPY page says {length} bytes decompressed, its header {size}")
        return True
    if codec == "LZ4" and size > LZ4_WALKED_RATIO * len(stored):
        length = lz4_length(stored)
        if length != size:
            raise PageError(f"an LZ4 page's sequences make {length} bytes, its header says {size}")
        return True
    return codec == "ZSTD"


def whole_cost(stored: int, size: int, codec: str) -> int:
    """The bytes pyarrow decompresses of a page decompressed whole (`WholePage`): an lz4 page's
    length not walked is checked by decompressing it again a byte short."""
    return 2 * size if codec == "LZ4" and size <= LZ4_WALKED_RATIO * stored else size


def _lz4_count(data: bytes, at: int, nibble: int) -> tuple[int, int]:
    """A length of an lz4 sequence, its token's `nibble` and, where 15, the bytes from `at` that
    add to it (each 255 but the last); where the bytes after it start."""
    if nibble != 15:
        return nibble, at
    found = _NOT_FF.search(data, at)  # (a bomb's run of 255s passed over in C)
    if found is None:
        raise PageError("an LZ4 page is cut in a sequence's length")
    end = found.start()
    return nibble + 255 * (end - at) + data[end], end + 1


def _lz4_sequences(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """Each sequence of an lz4 block (`data`): where its literals start, their length, its match's
    offset back and length (the last sequence's 0, 0), nothing decompressed."""
    at, end = 0, len(data)
    while True:
        if at >= end:
            raise PageError("an LZ4 page is cut")
        token = data[at]
        literals, start = _lz4_count(data, at + 1, token >> 4)
        at = start + literals
        if at >= end:
            if at > end:
                raise PageError("an LZ4 page's literals run past its stored bytes")
            yield start, literals, 0, 0
            return
        if at + 2 > end:
            raise PageError("an LZ4 page is cut in a match's offset")
        match, next_at = _lz4_count(data, at + 2, token & 15)
        yield start, literals, data[at] | data[at + 1] << 8, match + 4
        at = next_at


def lz4_length(data: bytes) -> int:
    """The bytes an lz4 block (`data`) decompresses to, its sequences walked (`PageError` where a
    match reaches back before its start)."""
    made = 0
    for _, literals, offset, match in _lz4_sequences(data):
        made += literals
        if match and not 0 < offset <= made:
            raise PageError(f"an LZ4 match reaches {offset} bytes back, {made} made")
        made += match
    return made


def lz4_head(data: bytes, count: int) -> bytes:
    """The first `count` bytes an lz4 block (`data`) decompresses to (fewer where it ends first),
    only the sequences making them decoded."""
    out = bytearray()
    for start, literals, offset, match in _lz4_sequences(data):
        out += data[start: start + min(literals, count - len(out))]
        if len(out) >= count:
            break
        if match and not 0 < offset <= len(out):
            raise PageError(f"an LZ4 match reaches {offset} bytes back, {len(out)} made")
        want = min(match, count - len(out))
        piece = bytes(out[len(out) - offset: len(out) - offset + want])
        while len(piece) < want:  # an overlapping match repeats its last `offset` bytes: doubled, not
            piece *= 2  # copied `offset` a turn (a MiB of zeros, offset 1, took 0.44 CPU-s)
        out += piece[:want]
        if len(out) >= count:
            break
    return bytes(out)


def _check_whole(stored: bytes, size: int, codec: str) -> None:
    """`PageError` where a page decompresses to fewer bytes than its header's `size`: pyarrow's
    `decompress` hands back a buffer of the size asked for, its tail never written (gzip, brotli,
    lz4, snappy: only zstd refuses), so a value reaching into it would carry freed heap memory.
    A stream whose length `_declared` did not read must not fit one byte less."""
    import pyarrow as pa

    if not size:
        return
    try:
        pa.decompress(stored, size - 1, codec=PYARROW_CODECS[codec], asbytes=False)
    except (OSError, ValueError):
        return  # it needs all `size` bytes
    raise PageError(f"a {codec} page decompresses to fewer bytes than the {size} its header says")


def held_limits(lengths: list[int], size: int, allowance: int, room: int, copies: int) -> list[int]:
    """The most each value of a page of `size` bytes held whole may hold: `allowance`, and within
    the row's `room` beside the page (`copies` times over while it is held; the page's last once,
    the page let go as it is read)."""
    beside = max(room - size, 0)
    return [min(allowance, beside // copies if k < len(lengths) - 1 else beside) for k in range(len(lengths))]


def fits_whole(stored: int, size: int, room: int) -> bool:
    """Whether a page of `stored` bytes decompressing to `size` may be decompressed whole: both held
    at once within the row's room."""
    return stored + size <= room


def stored_bytes(source: Any, start: int, count: int) -> bytes:
    """`count` bytes of the file `source` from `start` (a page's, read whole)."""
    source.seek(start)
    data = source.read(count)
    if len(data) != count:
        raise PageError(f"a page is cut at byte {start + len(data)} (the file ends)")
    return data
