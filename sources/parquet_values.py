"""The values of one flat column chunk of byte strings, read page by page by its page headers and
handed out one at a time, never a page decoded whole beyond what a row may hold.

pyarrow decodes a page whole, and a dictionary page whole, whichever rows are asked for: pyarrow's
and pandas' writers put up to 1,024 values in a page (their page limit is checked a write batch at
a time), so a group of 80 photos of 3 MB is one 240 MB dictionary page, read whole at 5 to 6 times
its size. Here a page within a row's room (`VALUE_COPIES` times what one value may hold), with its
stored bytes and each value beside it, is decompressed whole by pyarrow's C codecs
(`parquet_codecs`: snappy, lz4); a larger one is read from the file as its values are asked
for: stored plainly straight from the file, snappy (pyarrow's, pandas' and img2dataset's default)
through a streaming decoder holding the 64 KiB a snappy copy may reach back, an lz4 one not at
all (its rows `Refused`: it has no streaming decoder here). Gzip, zstd and brotli pages are always
decompressed as read (pyarrow's C streaming decoders, `parquet_codecs.StreamedPage`), every byte
decompressed in C and not handed on as a value charged to the file (`FileCost.c_bytes`). A value is judged by its length (its 4-byte prefix) before it is read: one over what a row
may hold is passed over, unread (`Refused`), the values around it read. A dictionary's values are
read forward as they are asked for (writers number them in the order they first meet them), the
last few kept, and where they lie noted (one value a 64 KiB of page): a row pointing back (a photo
repeated far later) reads from the nearest note, never the page again from its start. The Python
snappy decoder's work is bounded (`Cost`): a run of one element repeated (zeros, flat colour) is
decoded at once, and past one element a `STEP_BYTES` bytes decoded (read or passed over) the
chunk's values not yet read are `Refused` (`TooCostly`), and past `FILE_STEPS` elements in one
file, its chunks together (`FileCost`), every later value it decodes; a row null by its
definition levels is None still.
"""

from __future__ import annotations

import bisect
import collections
import io
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from sources import parquet_codecs, parquet_pages as pp

PLAIN, PLAIN_DICTIONARY, RLE, RLE_DICTIONARY = 0, 2, 3, 8
_DICTIONARY_ENCODINGS = (PLAIN_DICTIONARY, RLE_DICTIONARY)
# the chunk encodings (footer's names) and codecs read here; another (DELTA_*, BYTE_STREAM_SPLIT,
# the deprecated BIT_PACKED levels, LZO, Hadoop's LZ4) is left to pyarrow. Snappy pages are
# decoded as read where too large to decompress whole; the other codecs' only whole, a page at a time
ENCODINGS = frozenset({"PLAIN", "PLAIN_DICTIONARY", "RLE", "RLE_DICTIONARY"})
CODECS = frozenset({"UNCOMPRESSED", *parquet_codecs.PYARROW_CODECS})
# what a snappy copy may reach back: every snappy writer (C++, Java, Go, Rust) compresses 64 KiB
# blocks on their own, so no copy of theirs reaches further
SNAPPY_WINDOW = 1 << 16
_INPUT_BYTES = 1 << 20  # compressed bytes read from the file at a time
# a dictionary's values kept once handed out (a value repeated in many rows is read once), at most
# this many bytes (or a chunk's `kept` bytes, where its caller gives less)
DICTIONARY_CACHE_BYTES = 16 << 20
# a dictionary value asked for again (and no longer kept) is read from the nearest place noted on
# the first pass (within 64 KiB before it; a snappy page restarted at the 64 KiB block it lies in,
# as every snappy writer compresses them on their own): past this many times its page's size
# decoded again so in one chunk (a snappy page whose copies reach across its blocks is decoded
# again from its start), the rows asking are `Refused`
MAX_DICTIONARY_REREADS = 4


# what the Python snappy decoder may spend on a chunk: elements (a literal or a copy; a run of one
# repeated, as flat colour and zeros compress, counted once) at most one a STEP_BYTES bytes decoded,
# of values read or passed over alike (`Refused`, too large: passing over one decodes it as reading
# it would), and STEP_SLACK more (~0.2 CPU-s at 0.76 us an element): at most ~0.25 CPU-s a MB.
# Honest snappy (pyarrow's): a photo's (JPEG) one element a 64 KiB literal, a flat-colour bitmap's
# (runs counted once) one a 296 bytes, ImageMagick's `rose:` as a 800x600 BMP one a 11.6 bytes, but
# raw images of noisy detail one a 4 to 8 bytes (a dithered palette BMP 4.8 to 8, a 16-bit TIFF 4.2
# to 5.9, a PNG of compress_level=0 7.1, an SVG 6.0: a bound of one a 8 bytes refused 286 of 300
# dithered BMPs); a hostile page of 1-byte literals, or 4-byte copies and 1-byte literals in turn,
# takes an element a byte or 2.5 (a 56 MB value of 1-byte literals 15.9 CPU-s): still refused
STEP_BYTES = 3
STEP_SLACK = 1 << 18
_RUN_BYTES = 1 << 20  # a run of one repeated element decoded at once: at most this many bytes


# What the Python snappy decoder may spend on one file, its chunks together, judged before any of
# its pages is read: each chunk's own bound (above) grows with the bytes it decodes, so a file of
# many chunks of 4- and 5-byte copies in turn (an element a 4.5 bytes, within it) was decoded at
# ~0.25 CPU-s a MB whatever its size. FILE_STEPS elements, and one more a STORED_BYTES_PER_STEP
# bytes the file stores (`FileCost`): an absolute 2**26 refused 107 of 360 honest 16-bit TIFFs of a
# 372 MB file (one element a 3.9 stored bytes). A snappy element takes 2 stored bytes at least (a
# run of one repeated counted once), so a hostile file is bounded by its size: ~0.64 CPU-s a stored
# MB at 1.28 us an element, past the floor. Pages a row's room holds whole are decompressed in C,
# never counted; photos' (JPEG) are one element a 64 KiB.
FILE_STEPS = 1 << 25
STORED_BYTES_PER_STEP = 2
ELEMENT_US = 1.28  # CPU-us the Python decoder takes an element (measured, a file's pages): what the detail says
# What one value read so is held at its peak: the bytes read (snappy: decoded into its window,
# then taken out), the batch's Arrow array built from them, the Python bytes handed on, and the
# record holding them. Measured (pyarrow 25, pandas' `to_parquet` of 4 photos of 100 KB around one
# of 58 MiB, one dictionary page, peak RSS over the process's before the read): 197 MiB, 3.4 times.
# A row's room is this many times what one value may hold (`allowance`): a page decompressed whole
# is held within it beside its values.
VALUE_COPIES = 4
# a snappy page whose stored bytes are at least 7/8 of its size (photos: 1.00005) hardly compresses
HARDLY_COMPRESSED = (7, 8)


# What pyarrow's C decoders may decompress of one file's paged chunks and not hand on as values, its
# pages decompressed whole or streamed together (values passed over, a page's bytes no value is read
# from): C_BYTES_FLOOR, and C_BYTES_PER_STORED a byte the file stores. Brotli decompresses ~165 MB a
# CPU-s: a 38 KB file of pages of zeros declaring 4.8 GB took 29 CPU-s decompressed whole; photos
# (JPEG) compress to about their size, raw images 2 to 10 times, but flat-colour bitmaps 10,000 times
# under zstd: a value handed on is not counted (a group within the budget read whole by pyarrow
# decompresses it alike), else an honest file of 200 such 2048x2048 BMPs (2.5 GB from 250 KB) lost 114 rows.
C_BYTES_FLOOR = 1 << 30
C_BYTES_PER_STORED = 64


def file_size(source: Any) -> int:
    """The bytes the file `source` stores (its position kept)."""
    here = source.tell()
    try:
        source.seek(0, 2)
        return source.tell()
    finally:
        source.seek(here)


class FileCost:
    """What the Python snappy decoder has spent on one file's chunks (`steps`), and the most it may
    (`most`: `FILE_STEPS` and one a `STORED_BYTES_PER_STEP` of its `stored` bytes, when made,
    before any page is read); the bytes pyarrow's C decoders have
    decompressed of them and not handed on as values (`c_bytes`), and the most they may (`c_most`:
    by the file's `stored` bytes)."""

    def __init__(self, most: int | None = None, stored: int = 0) -> None:
        self.steps = 0
        self.most = FILE_STEPS + stored // STORED_BYTES_PER_STEP if most is None else most
        self.c_bytes = 0
        self.c_most = C_BYTES_FLOOR + C_BYTES_PER_STORED * stored


class Cost:
    """What the Python snappy decoder has spent on one chunk's pages: `steps` (elements decoded,
    counted on from its file's `FileCost` before it: `start`) and the bytes decoded, of values read
    (`decoded`) or passed over (`passed`)."""

    def __init__(self, file: FileCost | None = None) -> None:
        self.file = FileCost() if file is None else file
        self.start = self.steps = self.file.steps
        self.decoded = self.passed = 0
        self.limit = self._limit()  # the steps allowed, as last worked out
        self.held = False  # the check held off (a page's levels: bounded, and needed to tell nulls)

    def _limit(self) -> int:
        return min(self.start + STEP_SLACK + (self.decoded + self.passed) // STEP_BYTES, self.file.most)

    @contextmanager
    def unchecked(self) -> Iterator[None]:
        """Decode without the check (still counted): a v1 page's levels, at most `levels_bound`
        bytes, so that its null rows are None, not too costly, once decoding is stopped."""
        self.held, self.limit = True, 1 << 62  # (`_Snappy._step` calls `check` only past `limit`)
        try:
            yield
        finally:
            self.held = False
            self.limit = self._limit()

    def check(self) -> None:
        """`TooCostly` where the steps pass what the bytes decoded allow, or what the file may spend."""
        self.limit = self._limit()
        if self.steps <= self.limit or self.held:
            return
        if self.steps > self.file.most:
            raise TooCostly(f"its file's snappy pages take over {self.file.most} elements to decode, its chunks "
                            f"together (~{self.file.most * ELEMENT_US / 1e6:.0f} CPU-s), past what decoding one "
                            "file may cost")
        raise TooCostly(f"its column's snappy pages take over {self.steps - self.start} elements to decode "
                        f"{self.decoded} bytes read and {self.passed} passed over (one a {STEP_BYTES} bytes decoded, "
                        f"and {STEP_SLACK} more), past what decoding them may cost")

    def charge(self, count: int) -> None:
        """`count` bytes more decompressed in C (a page whole, or a streamed page's passed over):
        `TooCostly` past what its file may (`FileCost.c_most`)."""
        file = self.file
        file.c_bytes += count
        if file.c_bytes > file.c_most and not self.held:
            raise TooCostly(f"its file's pages decompress to over {file.c_most} bytes, its chunks together (read or "
                            "passed over), past what decompressing one file may cost")

    def credit(self, count: int) -> None:
        """`count` bytes decompressed in C handed on as values: no longer charged to the file (a
        whole read of a group within the budget decompresses them alike)."""
        self.file.c_bytes -= count

    def passed_over(self, count: int) -> None:
        """`count` of the bytes decoded were a refused value's, passed over."""
        self.decoded -= count
        self.passed += count
        self.check()

    def done(self) -> None:
        """The chunk read (or left): its steps counted to its file."""
        self.file.steps = max(self.file.steps, self.steps)


class TooCostly(Exception):
    """A chunk's snappy pages took more elements than `Cost` allows: the values not yet read are
    `Refused` (nothing in them too large), the next page's too."""


class PagedValuesError(parquet_codecs.PageError):
    """A page that cannot be read as parquet lays it out (cut, a count past its bytes, an
    encoding not read here)."""


@dataclass(frozen=True)
class Refused:
    """A value not read: its `length` passes what one row may hold (`allowance`), or `why`:
    reading it would cost past a bound (nothing is too large), or, `too_large`, it would hold past
    the row's room beside the page it lies in (a page of another codec than snappy decompressed
    whole: `length` is the value's, or the page's where the page is over the room)."""

    length: int
    why: str = ""
    too_large: bool = False


@dataclass(frozen=True)
class _Reading:
    """What a chunk's pages are read by: the file `source`, their `codec` (the footer's name), what
    one value may hold (`allowance`, within a row's `room`, `VALUE_COPIES` times it), of the
    dictionary's values kept (`kept`), a snappy page's most bytes stored and decompressed to be
    decompressed whole (`whole`: None, judged by the room), and the Python decoder's `cost`."""

    source: Any
    codec: str
    allowance: int
    kept: int
    whole: int | None
    cost: Cost

    @property
    def room(self) -> int:
        return VALUE_COPIES * self.allowance

    def whole_page(self, codec: str, stored: int, size: int, held: int = 0) -> bool:
        """Whether a page of `codec` is decompressed whole: a compressed page held with its stored
        bytes within the room less what is `held` beside it (its chunk's dictionary page held whole;
        a snappy one within `whole`, where given). A snappy page over a MiB that hardly compresses
        (photos: one element a 64 KiB, cheap to decode as read) gains nothing held whole: decoded
        as read (img2dataset's shape, 100 photos of 1.15 MB: 300 MiB peak held whole, 144 so)."""
        if codec == "UNCOMPRESSED" or codec in parquet_codecs.STREAMED:
            return False
        if codec == "SNAPPY" and self.whole is not None:
            return stored + size <= self.whole
        hardly = stored * HARDLY_COMPRESSED[1] >= size * HARDLY_COMPRESSED[0]
        if codec == "SNAPPY" and size > _INPUT_BYTES and hardly:
            return False
        return parquet_codecs.fits_whole(stored, size, self.room - held)

    def beside(self, size: int) -> int:
        """The most a value read from a page of `size` bytes held whole may hold: within the room
        beside it, held `VALUE_COPIES` times over."""
        return min(self.allowance, max(self.room - size, 0) // VALUE_COPIES)

    def too_large(self, codec: str, stored: int, size: int) -> str:
        """Why a page of LZ4 (decompressed only whole) is not read."""
        return (f"its value lies in a {codec} page of {size} bytes ({stored} stored), over the {self.room} bytes a row "
                f"may hold with it: a page of that codec is only ever decompressed whole, so {PAGE_REFUSED}; write it "
                "with smaller row groups (pyarrow.parquet.write_table(..., row_group_size=100)) or another codec")


# what a page refused whole says of its rows (`parquet_paged.refused_detail`: not "the group's other rows are")
PAGE_REFUSED = "none of the rows in its page is read"


class _Crossed(PagedValuesError):
    """A snappy copy reaching back past the block its decoding was restarted at."""


class _Region:
    """`size` bytes of the file `source` from `start`, read forward (each read seeks first: the
    file is shared with pyarrow's reads of the other columns)."""

    def __init__(self, source: Any, start: int, size: int):
        self.source, self.position, self.left = source, start, size
        self.start, self.size = start, size

    def tell(self) -> int:
        return self.position - self.start

    def seek(self, offset: int) -> int:
        """Go to byte `offset` of the region; what it cost decoded (nothing)."""
        self.position, self.left = self.start + offset, self.size - offset
        return 0

    def read(self, count: int) -> bytes:
        if count > self.left:
            raise PagedValuesError(f"a page's value runs {count - self.left} bytes past its page")
        self.source.seek(self.position)
        data = self.source.read(count)
        if len(data) != count:
            raise PagedValuesError(f"a page is cut at byte {self.position + len(data)} (the file ends)")
        self.position, self.left = self.position + count, self.left - count
        return data

    def skip(self, count: int, refused: bool = False) -> None:
        if count > self.left:
            raise PagedValuesError(f"a page's value runs {count - self.left} bytes past its page")
        self.position, self.left = self.position + count, self.left - count

    def some(self, most: int) -> bytes:
        """Up to `most` more bytes (b"" at the region's end)."""
        return self.read(min(most, self.left))


class _Snappy:
    """The decompressed bytes of a snappy block (raw snappy, as parquet stores a page) read forward
    from `raw` (a `_Region`): decoded as they are asked for, the last `SNAPPY_WINDOW` bytes kept
    for the copies that reach back."""

    def __init__(self, raw: _Region, size: int, cost: Cost | None = None):
        self.raw, self.input, self.at = raw, bytearray(), 0
        self.cost = Cost() if cost is None else cost
        self.chunk = _INPUT_BYTES  # compressed bytes read next (64 KiB after a restart: the value asked for is near)
        self.out, self.taken = bytearray(), 0
        declared = self._varint()
        if declared != size:
            raise PagedValuesError(f"a snappy page says {declared} bytes decompressed, its header {size}")
        self.size = self.left = size  # bytes still to come out
        self.end = self.floor = 0  # the page's bytes decoded so far; where decoding last (re)started
        # (decompressed offset, file position) of the page's start and (`blockwise`) each element
        # starting a 64 KiB block: where decoding may start again
        self.blocks = [(0, raw.position - (len(self.input) - self.at))]
        self.blockwise = True

    def tell(self) -> int:
        return self.end - (len(self.out) - self.taken)

    def seek(self, offset: int) -> int:
        """Go to decompressed byte `offset`: forward from here, else from the last block start
        before it; what it cost decoded."""
        here = self.tell()
        at = bisect.bisect_right(self.blocks, (offset, 1 << 62)) - 1
        if not (here <= offset and self.blocks[at][0] <= here):
            start, position = self.blocks[at]
            self.raw = _Region(self.raw.source, position, self.raw.position + self.raw.left - position)
            self.input, self.at, self.out, self.taken = bytearray(), 0, bytearray(), 0
            self.chunk = SNAPPY_WINDOW
            self.end = self.floor = start
            self.left = self.size - start
            here = start
        self.skip(offset - here)
        return offset - here

    def _fill(self, count: int) -> None:
        """At least `count` bytes of input at `self.at` (fewer only at the page's end)."""
        if len(self.input) - self.at >= count:
            return
        del self.input[:self.at]
        self.at = 0
        while len(self.input) < count:
            more = self.raw.some(max(self.chunk, count - len(self.input)))
            if not more:
                return
            self.input += more

    def _byte(self) -> int:
        self._fill(1)
        if self.at >= len(self.input):
            raise PagedValuesError("a snappy page is cut")
        self.at += 1
        return self.input[self.at - 1]

    def _varint(self) -> int:
        value = shift = 0
        while shift < 35:
            byte = self._byte()
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
        raise PagedValuesError("a snappy page's length runs past 32 bits")

    def _number(self, count: int) -> int:
        self._fill(count)
        if len(self.input) - self.at < count:
            raise PagedValuesError("a snappy page is cut")
        self.at += count
        return int.from_bytes(self.input[self.at - count: self.at], "little")

    def _step(self) -> None:
        """Decode one element (a literal or a copy) onto `self.out`, and the run of it repeated
        after it (written out here, not in calls: ~0.6 us an element)."""
        cost = self.cost
        cost.steps += 1
        if cost.steps > cost.limit:
            cost.check()
        end = self.end
        if not end & (SNAPPY_WINDOW - 1) and self.blockwise and self.blocks[-1][0] < end:
            self.blocks.append((end, self._position()))
        if len(self.input) - self.at < 9:
            self._fill(9)  # a copy, or a literal's tag and length (a small literal whole)
        data, first = self.input, self.at
        if first >= len(data):
            raise PagedValuesError("a snappy page is cut")
        tag = data[first]
        kind = tag & 3
        if kind == 0:
            length, at = tag >> 2, first + 1
            if length >= 60:
                at += length - 59
                if at > len(data):
                    raise PagedValuesError("a snappy page is cut")
                length = int.from_bytes(data[first + 1: at], "little")
            length += 1
            if length > self.left:
                raise PagedValuesError("a snappy literal runs past the page's declared size")
            self.at, produced = at, length
            held = len(data) - at >= length  # (its bytes all read in: `first` still where it starts)
            while length:
                self._fill(1)
                piece = self.input[self.at: self.at + length]
                if not piece:
                    raise PagedValuesError("a snappy page is cut")
                self.out += piece
                self.at += len(piece)
                length -= len(piece)
        else:
            size = 2 if kind == 1 else 3 if kind == 2 else 5
            if first + size > len(data):
                raise PagedValuesError("a snappy page is cut")
            if kind == 1:
                produced, offset = ((tag >> 2) & 7) + 4, ((tag >> 5) << 8) | data[first + 1]
            else:
                produced, offset = (tag >> 2) + 1, int.from_bytes(data[first + 1: first + size], "little")
            out = self.out
            if self.floor and end - offset < self.floor:
                raise _Crossed("a snappy copy reaches back past the block its decoding restarted at")
            if not 0 < offset <= len(out):
                raise PagedValuesError(f"a snappy copy reaches {offset} bytes back, past the {SNAPPY_WINDOW} "
                                       "bytes a snappy writer's copy reaches (or the page's start)")
            if produced > self.left:
                raise PagedValuesError("a snappy copy runs past the page's declared size")
            start = len(out) - offset
            if offset >= produced:
                out += out[start: start + produced]
            else:  # overlapping: the last `offset` bytes repeated
                out += (bytes(out[start:]) * (produced // offset + 1))[:produced]
            self.at = first + size
            self._offset = offset  # a run of this copy repeats its bytes as far back
            held = True
        self.left -= produced
        self.end = end + produced
        cost.decoded += produced
        at = self.at
        if held and at < len(data) and data[at] == tag and at - first <= 8 and self.left \
                and data[at: 2 * at - first] == data[first: at]:
            self._run(bytes(data[first: at]), produced)

    def _position(self) -> int:
        """The file position of the next input byte."""
        return self.raw.position - (len(self.input) - self.at)

    def _run(self, element: bytes, length: int) -> None:
        """The repeats of `element` (`length` bytes out) that follow it, decoded at once: the same
        literal again, or the same copy again (its bytes repeat the same `offset` back)."""
        size = len(element)
        most = min(self.left // length, _RUN_BYTES // length, (len(self.input) - self.at) // size)
        count, step = 0, 1
        while count < most:
            take = min(step, most - count)
            if self.input[self.at + count * size: self.at + (count + take) * size] == element * take:
                count += take
                step *= 2
            elif take == 1:
                break
            else:
                step = 1
        if not count:
            return
        total = count * length
        if element[0] & 3 == 0:  # a literal
            self.out += element[-length:] * count
        else:
            offset = self._offset
            self.out += (bytes(self.out[-offset:]) * (total // offset + 1))[:total]
        self.at += count * size
        self.left -= total
        self.end += total
        self.cost.decoded += total

    def read(self, count: int) -> bytes:
        while len(self.out) - self.taken < count:
            if not self.left:
                raise PagedValuesError("a page's value runs past its page")
            self._step()
        data = bytes(self.out[self.taken: self.taken + count])
        self.taken += count
        if self.taken > 2 * SNAPPY_WINDOW:  # let go of all but the window
            del self.out[:self.taken - SNAPPY_WINDOW]
            self.taken = SNAPPY_WINDOW
        return data

    def skip(self, count: int, refused: bool = False) -> None:
        """Pass over `count` bytes (a `refused` value's: charged as such, a MiB at a time)."""
        while count:
            piece = min(count, _INPUT_BYTES)
            end = self.end
            self.read(piece)
            count -= piece
            if refused:
                self.cost.passed_over(self.end - end)


def _stream(source: Any, start: int, stored: int, size: int, codec: str, whole: bool, cost: Cost | None = None,
            releasing: bool = False):
    """A page's (or a v2 page's values') `size` bytes, stored as `stored` bytes from `start` with
    `codec`: stored plainly, read from the file; `whole`, decompressed whole (in C: `releasing`,
    let go once read to its end); else snappy decoded as read, charged to `cost`."""
    cost = Cost() if cost is None else cost
    if codec == "UNCOMPRESSED":
        if stored != size:
            raise PagedValuesError(f"an uncompressed page stores {stored} bytes, its header says {size}")
        return _Region(source, start, stored)
    if codec in parquet_codecs.STREAMED:
        return parquet_codecs.StreamedPage(source, start, stored, size, codec, cost.charge)
    if whole:
        cost.charge(parquet_codecs.whole_cost(stored, size, codec))  # (its values read handed back: `credit`)
        return parquet_codecs.WholePage(parquet_codecs.stored_bytes(source, start, stored), size, codec, releasing,
                                        cost.credit)
    if codec != "SNAPPY":
        raise PagedValuesError(f"a {codec} page can only be decompressed whole")
    return _Snappy(_Region(source, start, stored), size, cost)


def _hybrid(data: bytes, width: int, count: int) -> np.ndarray:
    """`count` values of parquet's RLE / bit-packed hybrid encoding of `width` bits each."""
    out = np.zeros(count, np.int64)
    filled = position = 0
    while filled < count:
        header = shift = 0
        while True:
            if position >= len(data) or shift > 35:
                raise PagedValuesError(f"a page's levels or indices end after {filled} of {count} values")
            byte = data[position]
            position += 1
            header |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if header & 1:  # bit-packed: groups of 8 values (only those still wanted decoded: a header may say 2**34)
            values = (header >> 1) * 8
            if not values:
                raise PagedValuesError("a page's levels hold an empty bit-packed run")
            wanted = min(values, count - filled)
            used = (wanted * width + 7) // 8
            bits = np.unpackbits(np.frombuffer(data[position: position + used], np.uint8), bitorder="little")
            if len(bits) < wanted * width:  # the last group cut short: its missing bits read as zeros
                bits = np.concatenate([bits, np.zeros(wanted * width - len(bits), np.uint8)])
            decoded = bits[: wanted * width].reshape(wanted, width) @ (1 << np.arange(width, dtype=np.int64)) \
                if width else np.zeros(wanted, np.int64)
            position += (header >> 1) * width
        else:
            values = header >> 1
            if not values:
                raise PagedValuesError("a page's levels hold an empty run")
            size = (width + 7) // 8
            decoded = np.full(min(values, count - filled), int.from_bytes(data[position: position + size], "little"))
            position += size
        take = min(values, count - filled)
        out[filled: filled + take] = decoded[:take]
        filled += take
    return out


class _Dictionary:
    """A dictionary page's values, read forward as they are asked for, the last few kept, where
    they lie noted (`marks`: a value's index and the offset of its length, one a 64 KiB at most)
    for the rows asking again."""

    def __init__(self, reading: _Reading, start: int, layout: pp.PageLayout):
        self.reading, self.source, self.start, self.layout = reading, reading.source, start, layout
        self.most, self.cost = reading.kept, reading.cost
        header = layout.header
        stored, size = header.compressed_page_size, header.uncompressed_page_size
        # held whole while the chunk is read, within the room a row's values are held in beside it
        # (`beside`); another codec's page over it: each row pointing into it refused (`too_large`)
        self.whole = reading.whole_page(reading.codec, stored, size)
        self.too_large = "" if self.whole or reading.codec != "LZ4" else \
            reading.too_large(reading.codec, stored, size)
        self.beside = reading.beside(size) if self.whole else reading.allowance
        self.count, self.decoded_again = layout.header.num_values, 0
        self.kept: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self.held = 0
        self.marks: list[tuple[int, int]] = []
        self.seen = 0  # values whose place the first pass has passed
        self.blockwise = True  # a snappy page's decoding restarted at its blocks (till a copy reaches across)
        self.costly = ""  # why its decoding stopped (`TooCostly`)
        if not self.too_large:
            try:
                self._open()
            except TooCostly as exc:
                self.costly = str(exc)
                return
        if self.whole and reading.codec == "SNAPPY" and reading.whole is None:
            lengths = self.stream.lengths(self.count)
            if any(self.beside < n <= reading.allowance for n in lengths):  # one would not fit beside it held
                self.whole, self.beside = False, reading.allowance  # decoded as read, as it always was
                self._open()

    def held_whole(self) -> int:
        """The bytes this page holds while its chunk is read: decompressed whole, its size."""
        return self.layout.header.uncompressed_page_size if self.whole and not self.too_large else 0

    def _open(self) -> None:
        header = self.layout.header
        self.stream = _stream(self.source, self.start + header.size, header.compressed_page_size,
                              header.uncompressed_page_size, self.reading.codec, self.whole, self.cost)
        if isinstance(self.stream, _Snappy):
            self.stream.blockwise = self.blockwise
        self.next = 0

    def _again(self, cost: int) -> str:
        """Count `cost` bytes decoded again; why the value is refused where past the bound."""
        self.decoded_again += cost
        bound = MAX_DICTIONARY_REREADS * self.layout.header.uncompressed_page_size
        if self.decoded_again > bound:
            return (f"its rows ask for the dictionary's values out of order, reading them again past {bound} bytes "
                    f"({MAX_DICTIONARY_REREADS} times its page)")
        return ""

    def _reach(self, index: int) -> str:
        """Go to value `index` (its length next); why not, where past the bound."""
        at = bisect.bisect_right(self.marks, (index, 1 << 62)) - 1
        if index < self.next or (at >= 0 and self.marks[at][0] > self.next):
            mark, offset = self.marks[at]
            try:
                why = self._again(self.stream.seek(offset))
            except _Crossed:  # its copies reach across blocks: read again from its start only
                self.blockwise = False
                self._open()
                why = self._again(self.stream.seek(offset))
            if why:
                return why
            self.next = mark
        while self.next < index:
            self._note()
            self.stream.skip(int.from_bytes(self.stream.read(4), "little"))
            self.next += 1
        self._note()
        return ""

    def _note(self) -> None:
        """Note where value `next` lies, the first time past it, a 64 KiB of page from the last note."""
        if self.next == self.seen:
            offset = self.stream.tell()
            if not self.marks or offset >= self.marks[-1][1] + SNAPPY_WINDOW:
                self.marks.append((self.next, offset))
            self.seen += 1

    def value(self, index: int, allowance: int) -> bytes | Refused:
        if not 0 <= index < self.count:
            raise PagedValuesError(f"a row points at value {index} of a dictionary of {self.count}")
        if index in self.kept:
            self.kept.move_to_end(index)
            return self.kept[index]
        if self.costly:  # its decoding stopped part way: nothing more read from it
            raise TooCostly(self.costly)
        if self.too_large:
            return Refused(self.layout.header.uncompressed_page_size, self.too_large, too_large=True)
        try:
            why = self._reach(index)
            if why:
                return Refused(0, why)
            length = int.from_bytes(self.stream.read(4), "little")
            self.next += 1
            if length > min(allowance, self.beside):
                try:
                    if self.next < self.count:  # (the page's last value: nothing after it to reach, never decoded)
                        self.stream.skip(length, refused=True)
                except TooCostly as exc:  # its length known: too large still, the values after it too costly
                    self.costly = str(exc)
                return Refused(length) if length > allowance else \
                    Refused(length, _held_why(length, self.beside, self.layout.header.uncompressed_page_size,
                                              self.reading.codec), too_large=True)
            value = self.stream.read(length)
        except _Crossed:  # restarted at a block one of its copies reaches past: from its start only
            self.blockwise = False
            self._open()
            return self.value(index, allowance)
        except TooCostly as exc:
            self.costly = str(exc)
            raise
        if length <= self.most:
            self.kept[index] = value
            self.held += length
            while self.held > self.most:
                self.held -= len(self.kept.popitem(last=False)[1])
        return value


def levels_bound(width: int, count: int) -> int:
    """The most bytes the hybrid encoding of `count` levels of `width` bits may take: a run for
    each value, its header (a varint, 6 bytes at most as `_hybrid` reads it) and either its value
    (an RLE run) or a bit-packed group of 8 (`width` bytes)."""
    return count * (6 + width) + 8


def _checked_levels(length: int, width: int, count: int) -> int:
    """`length`, where levels of `count` values may take it (a length set to a page's size was
    read at once: 600 MB of "levels" for 11 rows)."""
    if length > levels_bound(width, count):
        raise PagedValuesError(f"a page's levels say {length} bytes, past the {levels_bound(width, count)} "
                               f"that {count} levels of {width} bits may take")
    return length


def _levels(stream, size: int, width: int, count: int) -> np.ndarray:
    """A v1 page's definition levels (its 4-byte length, then the hybrid), or all at most."""
    if not width:
        return np.zeros(count, np.int64)
    length = int.from_bytes(stream.read(4), "little")
    if length > size:
        raise PagedValuesError(f"a page's levels say {length} bytes in a page of {size}")
    return _hybrid(stream.read(_checked_levels(length, width, count)), width, count)


def codec_of(compressed: bool | str) -> str:
    """A chunk's codec by its footer's name (`ColumnChunkMetaData.compression`), or True for snappy
    and False for none."""
    if isinstance(compressed, str):
        return compressed.upper()
    return "SNAPPY" if compressed else "UNCOMPRESSED"


def chunk_values(source: Any, chunk, rows: int, max_definition: int, compressed: bool | str,
                 allowance: int, kept: int = DICTIONARY_CACHE_BYTES, whole: int | None = None,
                 spent: FileCost | None = None) -> Iterator[bytes | None | Refused]:
    """Each of the `rows` values of column chunk `chunk` (a flat byte-string leaf, its footer's
    `ColumnChunkMetaData`) of the file `source`: its bytes, None where it (or a struct above it)
    is null, or `Refused` where it is longer than `allowance` (passed over unread). `compressed`:
    the chunk's codec (`codec_of`). `kept`: the most bytes of its dictionary's values kept for rows
    that ask for them again. A page is decompressed whole (in C) where it and its stored bytes fit
    a row's room (`VALUE_COPIES` times the allowance) and each value read from it fits beside it
    (`parquet_codecs.held_limits`), a snappy dictionary page within half the allowance; a snappy
    page otherwise is decoded as its values are read, another codec's page refused. `whole`: the
    most a snappy page may hold stored and decompressed together to be decompressed whole, in place
    of that judgement. `spent`: what the Python decoder has spent on the chunk's file before it."""
    width = int(max_definition).bit_length()
    position = pp.chunk_start(chunk)
    end = position + chunk.total_compressed_size
    dictionary: _Dictionary | None = None
    seen = pages = 0
    cost = Cost(spent)
    reading = _Reading(source, codec_of(compressed), allowance, kept, whole, cost)
    try:
        while seen < rows:
            if position >= end or pages >= pp.MAX_PAGES:
                raise PagedValuesError(f"column {chunk.path_in_schema}: its pages end after {seen} of {rows} values")
            layout = pp.page_layout(source, position)
            header = layout.header
            body = position + header.size
            position, pages = body + header.compressed_page_size, pages + 1
            if header.type == pp.DICTIONARY_PAGE:
                if layout.encoding not in (PLAIN, PLAIN_DICTIONARY):
                    raise PagedValuesError(f"a dictionary page of encoding {layout.encoding}")
                dictionary = _Dictionary(reading, body - header.size, layout)
                continue
            if header.type not in (pp.DATA_PAGE, pp.DATA_PAGE_V2):
                continue
            count = header.num_values
            if count > rows - seen:
                raise PagedValuesError(f"column {chunk.path_in_schema}: a page of {count} values past the group's "
                                       f"{rows} rows")
            given = 0
            try:
                for value in _page_values(reading, chunk, layout, body, count, width, max_definition, dictionary):
                    yield value
                    given += 1
            except TooCostly as exc:  # the rest of the page not decoded: each row's reject
                for _ in range(count - given):
                    yield Refused(0, str(exc))
            seen += count
    finally:
        cost.done()


def _held_why(length: int, most: int, size: int, codec: str) -> str:
    """Why a value is not read from a page held whole: beside it, it would pass the row's room."""
    return (f"its value of {length} bytes lies in a {codec} page of {size} bytes decompressed whole, beside which a "
            f"row's value may hold {most} bytes")


def _page_values(reading: _Reading, chunk, layout: pp.PageLayout, body: int, count: int, width: int,
                 max_definition: int, dictionary: _Dictionary | None) -> Iterator[bytes | None | Refused]:
    """The `count` values of one data page (its body at `body`), as `chunk_values` gives them."""
    header = layout.header
    v1 = header.type == pp.DATA_PAGE
    if v1:
        start, stored, size, codec = body, header.compressed_page_size, header.uncompressed_page_size, reading.codec
        levels = None
    else:
        if layout.repetition_bytes:
            raise PagedValuesError("a flat column's page holds repetition levels")
        levels_bytes = layout.definition_bytes + layout.repetition_bytes
        region = _Region(reading.source, body, header.compressed_page_size)
        levels = _hybrid(region.read(_checked_levels(layout.definition_bytes, width, count)), width, count) \
            if width else np.zeros(count, np.int64)
        start, size = body + levels_bytes, header.uncompressed_page_size - levels_bytes
        stored = header.compressed_page_size - levels_bytes
        codec = reading.codec if layout.compressed else "UNCOMPRESSED"
    held = dictionary.held_whole() if dictionary is not None else 0  # held beside this page all the while
    whole = reading.whole_page(codec, stored, size, held)
    unmade = _refused_unmade(reading, layout, start, stored, size, codec, levels, width, count, max_definition,
                             held) if whole else None
    if unmade is not None:
        yield from unmade
        return
    if not whole and codec == "LZ4":  # decompressed only whole: each row's reject
        why = reading.too_large(codec, stored, size)
        for here in (levels >= max_definition if levels is not None else np.ones(count, bool)):
            yield Refused(size, why, too_large=True) if here else None
        return
    stream = _stream(reading.source, start, stored, size, codec, whole, reading.cost, releasing=True)
    if v1:
        with reading.cost.unchecked():  # levels inside the snappy stream: read even past a stop, to tell nulls
            levels = _levels(stream, size, width, count)
    present = levels >= max_definition
    limits = None
    if isinstance(stream, parquet_codecs.WholePage) and layout.encoding == PLAIN and reading.whole is None:
        lengths = stream.lengths(int(present.sum()))
        limits = parquet_codecs.held_limits(lengths, size, reading.allowance, reading.room - held, VALUE_COPIES)
        if codec == "SNAPPY" and any(most < n <= reading.allowance for n, most in zip(lengths, limits)):
            # held whole a value would pass the row's room beside it: decoded as read, as it always was
            stream, limits = _stream(reading.source, start, stored, size, codec, False, reading.cost), None
            if v1:
                with reading.cost.unchecked():
                    _levels(stream, size, width, count)
    given = 0
    try:
        for value in _present_values(stream, chunk, layout, present, reading, dictionary, limits):
            yield value
            given += 1
    except TooCostly as exc:  # the rest of the page not decoded: None where null, else each row's reject
        for here in present[given:]:
            yield Refused(0, str(exc)) if here else None


def _refused_unmade(reading: _Reading, layout: pp.PageLayout, start: int, stored: int, size: int, codec: str,
                    levels: np.ndarray | None, width: int, count: int, max_definition: int,
                    held: int) -> list[None | Refused] | None:
    """The rows of a PLAIN snappy or lz4 page to be decompressed whole whose one value is refused
    (over what it may hold beside the page; snappy: over the allowance, else decoded as read), read
    from the page's head alone (its levels and the value's length, decoded in Python): its page is
    never decompressed (a bomb's, one value of zeros a page, was, ~150 MB a page). None where the
    page is read (its head says more than one value, or one that fits)."""
    if layout.encoding != PLAIN or codec not in ("SNAPPY", "LZ4") or reading.whole is not None:
        return None
    inside = levels is None and width > 0  # a v1 page's levels: inside its stream, before its values
    if (levels is None and not width and count != 1) or (levels is not None and (levels >= max_definition).sum() != 1):
        return None
    if codec == "SNAPPY":
        snappy = _Snappy(_Region(reading.source, start, stored), size)
        read, made = (lambda more: snappy.read(more)), b""
    else:
        block = parquet_codecs.stored_bytes(reading.source, start, stored)
        read, made = (lambda more: parquet_codecs.lz4_head(block, len(made) + more)[len(made):]), b""
    want = min(size, 4)
    if inside:  # its levels' length first, then those bytes alone (a page of a million rows' bound: 0.4 MB)
        made = read(want)
        want = min(size, 4 + min(levels_bound(width, count), int.from_bytes(made, "little")) + 4)
    head = made + read(want - len(made))
    stream = _Region(io.BytesIO(head), 0, len(head))
    if inside:
        levels = _levels(stream, size, width, count)
    present = levels >= max_definition if levels is not None else np.ones(count, bool)
    if present.sum() != 1 or stream.left < 4:
        return None
    length = int.from_bytes(stream.read(4), "little")
    most = parquet_codecs.held_limits([length], size, reading.allowance, reading.room - held, VALUE_COPIES)[0]
    if length <= most or (codec == "SNAPPY" and length <= reading.allowance):
        return None
    refused = Refused(length) if length > reading.allowance else \
        Refused(length, _held_why(length, most, size, codec), too_large=True)
    return [refused if here else None for here in present]


def _present_values(stream, chunk, layout: pp.PageLayout, present: np.ndarray, reading: _Reading,
                    dictionary: _Dictionary | None, limits: list[int] | None) -> Iterator[bytes | None | Refused]:
    """A data page's values from its `stream`, None where `present` says null; each at most
    `allowance`, or its `limits` (a page held whole: what each may hold beside it)."""
    header, allowance = layout.header, reading.allowance
    if layout.encoding == PLAIN:
        index, last, unread = 0, int(present.sum()), False
        for here in present:
            if not here:
                yield None
                continue
            length = int.from_bytes(stream.read(4), "little")
            most = limits[index] if limits is not None and index < len(limits) else allowance
            index += 1
            if length > most:
                refused = Refused(length) if length > allowance else \
                    Refused(length, _held_why(length, most, stream.size, reading.codec), too_large=True)
                try:
                    if index < last:  # (the page's last value: nothing after it read, never decoded: a bomb's)
                        stream.skip(length, refused=True)
                    unread = index == last
                except TooCostly:  # its length known: too large still, the rows after it too costly
                    yield refused
                    raise
                yield refused
            else:
                yield stream.read(length)
        if not unread and isinstance(stream, parquet_codecs.StreamedPage) and stream.left:
            stream.skip(stream.left)  # its stream ends where its header says (else `PageError`), as pyarrow's read checks
    elif layout.encoding in _DICTIONARY_ENCODINGS:
        if dictionary is None:
            raise PagedValuesError(f"column {chunk.path_in_schema}: a dictionary-encoded page without a dictionary page")
        if header.uncompressed_page_size > allowance:  # indices, 4 bytes a row at most: no writer's is so large
            raise PagedValuesError(f"column {chunk.path_in_schema}: a page of dictionary indices of "
                                   f"{header.uncompressed_page_size} bytes, over the {allowance} a row may hold")
        width_byte = stream.read(1)[0]
        if width_byte > 32:
            raise PagedValuesError(f"a page's dictionary indices of {width_byte} bits")
        indices = iter(_hybrid(_rest(stream), width_byte, int(present.sum())))
        for here in present:
            yield dictionary.value(int(next(indices)), allowance) if here else None
    else:
        raise PagedValuesError(f"column {chunk.path_in_schema}: a page of encoding {layout.encoding}")


def _rest(stream) -> bytes:
    """What is left of a (small: dictionary indices) page's stream."""
    if not isinstance(stream, _Snappy):
        return stream.read(stream.left)
    parts = []
    while stream.left or len(stream.out) > stream.taken:
        parts.append(stream.read(min(len(stream.out) - stream.taken, _INPUT_BYTES) or 1))
    return b"".join(parts)
