"""The samples an MP4/MOV declares (`declared_samples`), read from its box headers before FFmpeg
opens it, and the file judged on them (`judge_sample_tables`). FFmpeg's mov demuxer builds an
index entry for every sample its tables declare on every open: a 34 KB MOV whose stts/stsc/stsz
declared 40,000,000 samples took 1.4 GiB and a CPU-s each time it was opened (five times a probe),
60,000,000 the decoding process past its memory budget. Part of `sources.video_decode`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Iterator

from sources import fsio
from sources.video_memory import DECODER_BASE_MB
from sources.video_open import VideoError
from sources.video_y4m import SNIFFED_BYTES

# what FFmpeg (libavformat 62) holds a declared sample in: its AVIndexEntry (24 bytes) and the
# time-to-sample entry it expands per sample; 40,000,000 declared took 1,404 MiB measured (36.8)
INDEX_BYTES_PER_SAMPLE = 36
# samples whose index is cheap to build (36 MiB): a file declaring fewer is not judged on its size,
# so a cut file whose tables declare the frames it lost keeps its count of those it holds
CHEAP_SAMPLES = 1 << 20
BOX_LIMIT = 1 << 20  # boxes walked (a fragmented MP4 of one fragment a second for 10 hours: 72,000)
# the first box of an ISO media file or a QuickTime movie (an old .mov starts with moov, mdat or wide)
_FIRST_BOXES = {b"ftyp", b"styp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot", b"sidx", b"moof", b"uuid"}
_DESCENDED = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf"}
_TRUN_SIZES = 0x200  # a trun's flag: each sample's size is listed


@dataclass(frozen=True)
class DeclaredSamples:
    """What an MP4/MOV's sample tables declare, over all its tracks."""

    size: int  # the file's bytes
    entries: int  # index entries FFmpeg builds (a chunk-demuxed PCM track's: one per 1024 samples)
    unlisted: int  # samples whose sizes no table lists (a constant stsz, a trun without sizes): each
    # takes one byte at least, so a whole file holds at most its size of them


def declared_samples(uri: str) -> DeclaredSamples | None:
    """The samples the file's moov and moof boxes declare, from their headers (a few reads: no
    table is read whole); None for a file that is no MP4/MOV."""
    try:
        # the bytes every open of a video sniffs (one ranged read a task): no other file is opened here
        if fsio.head_bytes(uri, SNIFFED_BYTES)[4:8] not in _FIRST_BOXES:
            return None
        with fsio.open_file(uri, read_ahead=False) as handle:
            size = handle.seek(0, 2)
            walker = _Walker(handle)
            walker.walk(0, size)
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


class _Walker:
    """Walks box headers through seeks, counting the samples of each track (`trak`) and fragment
    run (`trun`) it passes; a box running past its parent ends the walk of that parent."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.budget = BOX_LIMIT
        self.entries = 0
        self.unlisted = 0

    def read(self, at: int, count: int) -> bytes:
        self.handle.seek(at)
        return self.handle.read(count)

    def header(self, at: int, end: int) -> tuple[bytes, int, int] | None:
        """(type, payload start, box end) of the box at `at`; None where none fits before `end`."""
        head = self.read(at, 16) if at + 8 <= end else b""
        if len(head) < 8:
            return None
        size, kind, payload = int.from_bytes(head[:4], "big"), head[4:8], at + 8
        if size == 1:
            if len(head) < 16:
                return None
            size, payload = int.from_bytes(head[8:16], "big"), at + 16
        elif size == 0:
            size = end - at
        if size < payload - at or at + size > end:
            return None
        return kind, payload, at + size

    def children(self, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
        """(type, payload start, box end) of each box in [start, end), within the walk's budget."""
        at = start
        while self.budget > 0:
            self.budget -= 1
            box = self.header(at, end)
            if box is None:
                return
            yield box
            at = box[2]

    def walk(self, start: int, end: int) -> None:
        for kind, payload, stop in self.children(start, end):
            if kind == b"trak":
                self._track(payload, stop)
            elif kind in _DESCENDED:
                self.walk(payload, stop)
            elif kind == b"trun" and stop - payload >= 8:
                body = self.read(payload, 8)
                count = int.from_bytes(body[4:8], "big")
                self.entries += count
                if not int.from_bytes(body[1:4], "big") & _TRUN_SIZES:
                    self.unlisted += count

    def _track(self, start: int, end: int) -> None:
        """Counts one track's samples: its stsz/stz2 count, a PCM track FFmpeg demuxes by chunks
        (a sound track of one stts entry of duration 1) an entry per 1024 samples and chunk."""
        boxes: dict[bytes, bytes] = {}
        self._leaves(start, end, boxes)
        stsz, stz2 = boxes.get(b"stsz", b""), boxes.get(b"stz2", b"")
        listed = len(stsz) < 8 or int.from_bytes(stsz[4:8], "big") == 0
        count = int.from_bytes(stsz[8:12], "big") if len(stsz) >= 12 else \
            int.from_bytes(stz2[8:12], "big") if len(stz2) >= 12 else 0
        stts, hdlr = boxes.get(b"stts", b""), boxes.get(b"hdlr", b"")
        by_chunks = hdlr[8:12] == b"soun" and len(stts) >= 16 and int.from_bytes(stts[4:8], "big") == 1 and \
            int.from_bytes(stts[12:16], "big") == 1
        if by_chunks:
            chunks = boxes.get(b"stco") or boxes.get(b"co64") or b""
            self.entries += count // 1024 + (int.from_bytes(chunks[4:8], "big") if len(chunks) >= 8 else 0)
            return
        self.entries += count
        if not listed:
            self.unlisted += count

    def _leaves(self, start: int, end: int, boxes: dict[bytes, bytes]) -> None:
        """The first 16 bytes of each leaf box of a track that `_track` reads, by type."""
        for kind, payload, stop in self.children(start, end):
            if kind in _DESCENDED:
                self._leaves(payload, stop, boxes)
            elif kind in (b"stsz", b"stz2", b"stts", b"hdlr", b"stco", b"co64") and kind not in boxes:
                boxes[kind] = self.read(payload, min(16, stop - payload))
