"""The samples an MP4/MOV declares (`declared_samples`), read from its box headers before FFmpeg
opens it, and the file judged on them (`judge_sample_tables`). FFmpeg's mov demuxer builds an
index entry for every sample its tables declare on every open: a 34 KB MOV whose stts/stsc/stsz
declared 40,000,000 samples took 1.4 GiB and a CPU-s each time it was opened (five times a probe),
60,000,000 the decoding process past its memory budget. The walk reads boxes as FFmpeg does: any
file whose first box parses (its probe takes junk, udta, pict... first too), a box running past
its parent cut to what is left, the last of a track's tables kept, the first moov read and any later
one skipped (two files joined byte for byte hold two). FFmpeg also reads a `hoov` box whose first child
is mvhd or cmov as a moov, and where a whole pass finds no moov reads the file again taking a `free`
box so too (its moov_retry): so does the walk (a 34,708-byte file of a hoov declaring 30,000,000
samples passed, and each PyAV open took 1,125 MiB). Part of `sources.video_decode`."""

from __future__ import annotations

from dataclasses import dataclass
import struct
from typing import IO, Iterator

from sources import fsio
from sources.video_memory import DECODER_BASE_MB
from sources.video_open import VideoError
from sources.video_y4m import SNIFFED_BYTES, Y4M_MAGIC

# what FFmpeg (libavformat 62) holds a declared sample in: its AVIndexEntry (24 bytes) and the
# time-to-sample entry it expands per sample; 40,000,000 declared took 1,404 MiB measured (36.8)
INDEX_BYTES_PER_SAMPLE = 36
# samples whose index is cheap to build (2.25 MiB): a file declaring fewer is not judged on its
# size, so a cut file whose tables declare the frames it lost keeps its count of those it holds
# (only samples of one constant size count, a cut file refused holds fewer bytes than samples: of
# 65,536 64x48 RGB frames, under 8). At 1,048,576 a 37 KB file cost FFmpeg 36 MiB an open. Tiny
# frames are refused so sooner: an honest 16x16 gray rawvideo MOV of 70,000 (256 bytes each) cut to
# 50,000 bytes is refused, though FFmpeg plays the 193 it holds (a rule of a constant stsz's own size
# a sample would keep them; no writer but a raw one makes frames that small).
CHEAP_SAMPLES = 1 << 16
# boxes walked before the file is refused: a fragmented MP4 of a fragment a frame (7 boxes each) for
# 2 hours at 25 fps holds 1,260,000; 1,048,576 empty `free` boxes passed unjudged once this ran out.
# The walk skips a box it does not read at a header's cost: at the limit 0.4-0.9 CPU-s (free, trun,
# stsz boxes repeated), FFmpeg's own open of 2,097,142 free or stsz boxes 0.5 CPU-s
BOX_LIMIT = 1 << 21
# tracks FFmpeg opens (AVFormatContext.max_streams): it fails the open at the next `trak`, the
# index of those before built; 2,097,142 empty traks cost this walk 4 CPU-s, FFmpeg 0.01
MAX_STREAMS = 1000
DEPTH_LIMIT = 10  # FFmpeg's mov reader refuses boxes nested deeper ("Atoms too deeply nested")
_PROBED_BINARY_BOX = b"\x82\x82\x7f\x7d"  # a first box type FFmpeg's probe takes, not printable
_DESCENDED = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf"})
_TABLES = frozenset((b"stsz", b"stz2", b"stts", b"hdlr", b"stco", b"co64", b"stsc"))
_WALKED = _DESCENDED | {b"trak", b"cmov", b"trun", b"hoov"}  # the boxes `walk` reads; the rest are skipped
_RETRY_WALKED = _WALKED | {b"free"}  # and on its second pass, where the first found no moov
_MOVIE_FIRST = (b"mvhd", b"cmov")  # the first child that makes FFmpeg read a hoov (or free) as a moov
_LEAVES = _DESCENDED | _TABLES  # those `_leaves` reads in a track
_MOVIES = {_WALKED: _LEAVES | {b"hoov"}, _RETRY_WALKED: _LEAVES | {b"hoov", b"free"}}  # and a moov there
_TRUN_SIZES = 0x200  # a trun's flag: each sample's size is listed
_unpack_head, _unpack_large = struct.Struct(">I4s").unpack_from, struct.Struct(">Q").unpack_from
_unpack_count = struct.Struct(">I").unpack_from
_unpack_trun = struct.Struct(">II").unpack_from  # its version and flags, its sample count
_WINDOW = 1 << 16  # bytes read at once: a moof and its children, or 8,192 empty boxes, in one read
_STSC_ENTRY = 12
_STSC_BLOCK = 1 << 16  # stsc entries read at once
PCM_SAMPLES_PER_ENTRY = 1024  # FFmpeg's index of a chunk-demuxed PCM track: an entry per 1024 samples


@dataclass(frozen=True)
class DeclaredSamples:
    """What an MP4/MOV's sample tables declare, over all its tracks."""

    size: int  # the file's bytes
    entries: int  # index entries FFmpeg builds (a chunk-demuxed PCM track's: one per 1024 samples)
    unlisted: int  # samples whose sizes no table lists (a constant stsz, a trun without sizes): each
    # takes one byte at least, so a whole file holds at most its size of them


def _is_box(head: bytes) -> bool:
    """Whether a file starts as a box: a size of 0, 1 or 8 on and a type of four printable
    characters (FFmpeg's probe takes a file of any such boxes as a MOV once one it knows follows)."""
    if len(head) < 8 or head.startswith(Y4M_MAGIC):
        return False
    size = int.from_bytes(head[:4], "big")
    return (size in (0, 1) or size >= 8) and (all(0x20 <= byte < 0x7F for byte in head[4:8]) or
                                              head[4:8] == _PROBED_BINARY_BOX)


def declared_samples(uri: str) -> DeclaredSamples | None:
    """The samples the file's moov and moof boxes declare, from their headers (a few reads: only a
    PCM track's stsc is read whole); None for a file that is no MP4/MOV. Raises `video_too_large`
    where the boxes pass `BOX_LIMIT`, `unsupported_container` for a compressed movie header."""
    try:
        # the bytes every open of a video sniffs (one ranged read a task): no other file is opened here
        if not _is_box(fsio.head_bytes(uri, SNIFFED_BYTES)):
            return None
        with fsio.open_file(uri, read_ahead=False) as handle:
            size = handle.seek(0, 2)
            walker = _Walker(handle)
            try:
                walker.walk(0, size, 0)
                if not walker.moov_read:  # FFmpeg reads the file again, a free box that holds one a moov
                    walker.wanted = _RETRY_WALKED
                    walker.walk(0, size, 0)
            except _Unopened:
                pass  # FFmpeg's open fails there, after indexing what was counted before
            return DeclaredSamples(size, walker.entries, walker.unlisted)
    except OSError:
        return None  # the open that follows says why


def judge_sample_tables(uri: str, memory_mb: int) -> None:
    """Raise `video_too_large` where the index FFmpeg would build of the declared samples passes
    the decoding process's memory budget, or where more samples are declared (at least a byte
    each, their sizes listed in no table) than the file has bytes, and their index is not cheap."""
    declared = declared_samples(uri)
    if declared is None:
        return
    cost = declared.entries * INDEX_BYTES_PER_SAMPLE
    mib = f"{cost / (1 << 20):,.0f} MiB"
    if cost > (memory_mb - DECODER_BASE_MB) << 20:
        raise VideoError("video_too_large", f"its sample tables declare {declared.entries:,} samples: the index "
                                            f"FFmpeg builds of them on each open ({mib}) passes the memory "
                                            f"budget of {memory_mb} MiB")
    if declared.entries > CHEAP_SAMPLES and declared.unlisted > declared.size:
        raise VideoError("video_too_large", f"its sample tables declare {declared.unlisted:,} samples of a byte "
                                            f"or more, more than its {declared.size:,} bytes hold: FFmpeg would "
                                            f"build an index of them ({mib}) on each open")


class _Unopened(Exception):
    """FFmpeg fails the open where the walk stands: what follows is never indexed."""


class _Walker:
    """Walks box headers, counting the samples of each track (`trak`) and fragment run (`trun`) it
    passes; reads a window of bytes at a time, so a fragment's boxes cost one read."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.budget = BOX_LIMIT
        self.entries = 0
        self.unlisted = 0
        self.window, self.window_at = b"", 0
        self.tracks = 0
        self.moov_read = False  # FFmpeg reads the first moov and skips any later ("duplicated MOOV")
        self.wanted = _WALKED  # the boxes `walk` reads on this pass
        self.box_at = 0  # where the box `children` last yielded starts (its header's size field)

    def read(self, at: int, count: int) -> bytes:
        offset = at - self.window_at
        if offset < 0 or offset + count > len(self.window):
            self.handle.seek(at)
            self.window, self.window_at, offset = self.handle.read(max(count, _WINDOW)), at, 0
        return self.window[offset:offset + count]

    def children(self, start: int, end: int, wanted: frozenset[bytes]) -> Iterator[tuple[bytes, int, int]]:
        """(type, payload start, box end) of each box in [start, end) of a type in `wanted` (the
        rest are only counted: a hostile file's millions of empty boxes cost a header each; a
        wanted trun's samples are counted here, not yielded: it is as cheap to repeat), a box
        running past `end` cut to it as FFmpeg cuts one running past its parent; past `BOX_LIMIT`
        boxes the file is refused (FFmpeg reads them all: its index would be judged on part)."""
        at, budget = start, self.budget
        window, window_at = self.window, self.window_at
        while at + 8 <= end:
            head = at
            offset = at - window_at
            if offset < 0 or offset + 16 > len(window):
                self.read(at, 16)
                window, window_at, offset = self.window, self.window_at, 0
                if len(window) < 8:
                    break
            size, kind = _unpack_head(window, offset)
            payload = at + 8
            if size == 1:
                if offset + 16 > len(window):
                    break
                size, payload = _unpack_large(window, offset + 8)[0], at + 16
            elif size == 0:
                size = end - at
            if size < payload - at:
                break
            budget -= 1
            if budget < 0:
                raise VideoError("video_too_large", f"it holds over {BOX_LIMIT:,} boxes: its sample tables "
                                                    f"are not judged on part of them")
            at += size
            if at > end:
                at = end
            if kind == b"trun" and kind in wanted:  # counted here: a box a hostile file repeats millions of times
                if at - payload >= 8:
                    if payload - window_at + 8 > len(window):
                        self.read(payload, 8)
                        window, window_at = self.window, self.window_at
                    flags, count = _unpack_trun(window, payload - window_at)
                    self.entries += count
                    if not flags & _TRUN_SIZES:
                        self.unlisted += count
            elif kind in wanted:
                self.budget, self.box_at = budget, head
                yield kind, payload, at
                budget, window, window_at = self.budget, self.window, self.window_at  # what it read
        self.budget = budget

    def walk(self, start: int, end: int, depth: int) -> None:
        if depth > DEPTH_LIMIT:
            return
        for kind, payload, stop in self.children(start, end, self.wanted):
            if (kind == b"hoov" or kind == b"free") and self._holds_movie(payload):
                kind = b"moov"
            if kind == b"trak":
                self.tracks += 1
                if self.tracks > MAX_STREAMS:
                    raise _Unopened
                self._track(payload, stop, depth + 1)
            elif kind == b"cmov":
                raise VideoError("unsupported_container", "its movie header is compressed (cmov): its sample "
                                                          "tables cannot be judged before FFmpeg indexes them")
            elif kind == b"moov":
                if not self.moov_read:
                    self.walk(payload, stop, depth + 1)
                    self.moov_read = True
            elif kind != b"hoov" and kind != b"free":
                self.walk(payload, stop, depth + 1)

    def _holds_movie(self, payload: int) -> bool:
        """Whether FFmpeg reads the hoov or free box at `payload` as a moov: its size field 8 or more
        (not 0 or 1) and the type of the 8 bytes after its header mvhd or cmov, read even where the
        box is shorter (FFmpeg peeks there; a moov of nothing is then read, and later ones skipped)."""
        size = self.read(self.box_at, 4)
        return len(size) == 4 and _unpack_count(size)[0] >= 8 and self.read(payload + 4, 4) in _MOVIE_FIRST

    def _track(self, start: int, end: int, depth: int) -> None:
        """Counts one track's samples: its stsz/stz2 count (the largest of several: FFmpeg keeps the
        last), a PCM track FFmpeg demuxes by chunks (a sound track of one stts entry of duration 1)
        an entry per 1024 samples of each chunk, from its stsc and chunk count."""
        extents: dict[bytes, tuple[int, int]] = {}
        counts = [0]  # the largest stsz/stz2 count
        self._leaves(start, end, depth, extents, counts)
        boxes = {kind: (self.read(payload, min(16, stop - payload)), payload, stop)
                 for kind, (payload, stop) in extents.items()}
        stsz = boxes.get(b"stsz", (b"", 0, 0))[0]
        listed = len(stsz) < 8 or int.from_bytes(stsz[4:8], "big") == 0
        count = counts[0]
        stts, hdlr = boxes.get(b"stts", (b"",))[0], boxes.get(b"hdlr", (b"",))[0]
        by_chunks = hdlr[8:12] == b"soun" and len(stts) >= 16 and int.from_bytes(stts[4:8], "big") == 1 and \
            int.from_bytes(stts[12:16], "big") == 1
        if by_chunks:
            self.entries += self._pcm_entries(boxes)
            return
        self.entries += count
        if not listed:
            self.unlisted += count

    def _pcm_entries(self, boxes: dict[bytes, tuple[bytes, int, int]]) -> int:
        """FFmpeg's index of a chunk-demuxed PCM track: ceil(samples / 1024) entries a chunk, the
        chunk's samples those of the stsc entry it falls in (the table read in blocks)."""
        chunks = 0
        for kind, width in ((b"stco", 4), (b"co64", 8)):
            head, payload, stop = boxes.get(kind, (b"", 0, 0))
            if len(head) >= 8:
                chunks = min(int.from_bytes(head[4:8], "big"), max(0, stop - payload - 8) // width)
        head, payload, stop = boxes.get(b"stsc", (b"", 0, 0))
        if len(head) < 8:
            return chunks
        # an entry past the chunk count covers none of them (FFmpeg makes their first chunks rise)
        runs = min(int.from_bytes(head[4:8], "big"), max(0, stop - payload - 8) // _STSC_ENTRY, chunks)
        total, first, per_chunk, started = 0, 1, 1, False
        for index in range(0, runs, _STSC_BLOCK):
            self.handle.seek(payload + 8 + index * _STSC_ENTRY)
            block = self.handle.read(min(_STSC_BLOCK, runs - index) * _STSC_ENTRY)
            for next_first, samples, _ in struct.iter_unpack(">III", block[:len(block) // 12 * 12]):
                if started:  # the chunks before this entry's first are the previous entry's
                    upto = max(first, min(next_first, chunks + 1))
                    total += (upto - first) * -(-per_chunk // PCM_SAMPLES_PER_ENTRY)
                    first = upto
                per_chunk, started = max(samples, 1), True
        self.window = b""  # the handle moved
        return total + (chunks + 1 - first) * -(-per_chunk // PCM_SAMPLES_PER_ENTRY)

    def _leaves(self, start: int, end: int, depth: int, extents: dict[bytes, tuple[int, int]],
                counts: list[int]) -> None:
        """The extent of each leaf box of a track that `_track` reads, by type (the last of a type,
        as FFmpeg keeps), and the largest sample count of its stsz/stz2 boxes."""
        if depth > DEPTH_LIMIT:
            return
        for kind, payload, stop in self.children(start, end, _MOVIES[self.wanted]):
            if kind == b"hoov" or kind == b"free":  # FFmpeg reads a moov here too, its traks streams
                if self._holds_movie(payload) and not self.moov_read:
                    self.walk(payload, stop, depth + 1)
                    self.moov_read = True
                continue
            if kind in _DESCENDED:
                self._leaves(payload, stop, depth + 1, extents, counts)
                continue
            if kind != b"hdlr" or kind not in extents:  # the media's handler, not its data's (minf)
                extents[kind] = (payload, stop)
            if (kind == b"stsz" or kind == b"stz2") and stop - payload >= 12:
                window, at = self.window, payload + 8 - self.window_at  # in the window but at its end
                if at < 0 or at + 4 > len(window):
                    window, at = self.read(payload + 8, 4), 0
                count = _unpack_count(window, at)[0]
                if count > counts[0]:
                    counts[0] = count
