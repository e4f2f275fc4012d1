"""The indexes a decoding process built by decoding, kept for the next read of the same file.

Most indexes come from demuxing alone (cheap), but some need a decode of the whole stream: an
MPEG-TS whose packets the parser left unstamped (`restamped: split`) is decoded once to learn
where each unstamped frame comes out (1.2 s for 40 s of 720p). A process that reads such a file
again (each clip of `sources.video.read_clip_frames`, a probe and a decode sharing a worker) paid
that decode every time. Kept here, keyed by the file's identity, so a file changed since (written
anew: another size, modification or change time, or inode) is indexed afresh. Bounded in entries
and in packets held (an index keeping the demuxer's stamps too costs about 136 bytes a packet,
tracemalloc of a 100,000-packet one), least recently used dropped first. The new extradata an
index keeps (`VideoIndex.new_extradata`: each whole up to 64 KiB, a larger one cut to its
avcC/hvcC record or, parsing as none, kept whole up to 4 MiB in all) counts as packets of that
size too: an FLV re-sending a different header before each frame holds more in those than in its packets.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable

from sources.video_index import VideoIndex

MAX_ENTRIES = 8
MAX_PACKETS = 100_000  # of all indexes kept: about 14 MB
PACKET_BYTES = 136  # what a packet of an index holds, the unit extradata bytes are counted in


def weight(index: VideoIndex) -> int:
    """What `index` holds, in packets: its packets and its new extradata's bytes."""
    return len(index.pts) + sum(len(data) for _, data in index.new_extradata) // PACKET_BYTES


def file_identity(path: str) -> tuple[int, ...] | None:
    """What tells this file from any other version of it: device, inode, size, modification and
    change times (ns); None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


@dataclass(frozen=True)
class KeptIndex:
    """An index one process built by decoding, with the key it keeps it under (the file's path and
    identity, the budgets it was judged with): handed to another process that reads the same file
    (a build probes a video in one decoding process and decodes its clips in another), which keeps
    it as its own while the file is still that version (`video_packet_order.keep_index`)."""

    key: tuple
    index: VideoIndex


class IndexCache:
    """A bounded least-recently-used map of keys to indexes."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_packets: int = MAX_PACKETS) -> None:
        self.max_entries = max_entries
        self.max_packets = max_packets
        self._entries: OrderedDict[Hashable, VideoIndex] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> VideoIndex | None:
        with self._lock:
            index = self._entries.get(key)
            if index is not None:
                self._entries.move_to_end(key)
            return index

    def put(self, key: Hashable, index: VideoIndex) -> None:
        """Keep `index` (one larger than the whole bound is not kept)."""
        if weight(index) > self.max_packets:
            return
        with self._lock:
            self._entries[key] = index
            self._entries.move_to_end(key)
            held = sum(weight(i) for i in self._entries.values())
            while len(self._entries) > self.max_entries or held > self.max_packets:
                _, dropped = self._entries.popitem(last=False)
                held -= weight(dropped)

    def __len__(self) -> int:
        return len(self._entries)
