"""A chained Ogg with sound read as the chain of its video alone.

`cat a.ogv b.ogv` of the usual `.ogv` (Theora + Vorbis) is a chained Ogg: links one after
another, each opening with its streams' BOS pages. FFmpeg's Ogg demuxer (the CLI's too) stops
where the second link begins when a link holds several streams ("Changing stream parameters in
multistream ogg is not implemented"), so the later parts' frames were lost. It does read a chain
whose links each hold one stream (`video_index`: chained Ogg Theora). So the file is read through
`VideoPages`: its Ogg pages in order, only those of each link's first Theora stream passed on
(the sound's pages, and any other stream's, dropped), every page byte for byte as stored, so
FFmpeg still checks each page's CRC and each part decodes as it does alone.

Forward only (no seek: a chained file is read from its start, never seeked, `video_index`), one
page held at a time (at most `MAX_PAGE_BYTES`). Bytes that are no page are skipped up to the next
capture pattern within `MAX_PAGE_BYTES`, as FFmpeg's demuxer resyncs; past that, or at a header
cut short, the view ends (a damaged or cut file: its tail is judged as any cut file's).
"""

from __future__ import annotations

import io
from typing import BinaryIO

CAPTURE = b"OggS"
HEADER_BYTES = 27  # capture pattern .. page segment count
MAX_PAGE_BYTES = HEADER_BYTES + 255 + 255 * 255  # FFmpeg's MAX_PAGE_SIZE: 65307
BOS = 0x02  # header_type flag: the first page of a logical stream
THEORA_ID = b"\x80theora"  # the first packet of a Theora stream (its identification header)
READ_CHUNK = 1 << 16


class VideoPages(io.RawIOBase):
    """The pages of each link's first Theora stream of the Ogg file `raw`, read forward."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._pending = bytearray()  # read from `raw`; parsed up to `_at`
        self._at = 0
        self._out = bytearray()  # kept pages, not yet read
        self._serial: int | None = None  # the current link's Theora stream
        self._in_data = False  # a page other than BOS was seen in this link: a BOS begins the next
        self._ended = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer) -> int:
        while not self._out and not self._ended:
            self._next_page()
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        del self._out[:n]
        return n

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()

    def _fill(self, size: int) -> bool:
        """At least `size` bytes pending from `_at`; False at the end of `raw` short of that."""
        if self._at > READ_CHUNK:  # drop what was parsed (amortised: each byte moved about once)
            del self._pending[:self._at]
            self._at = 0
        while len(self._pending) - self._at < size:
            chunk = self._raw.read(max(READ_CHUNK, size - len(self._pending) + self._at))
            if not chunk:
                return False
            self._pending += chunk
        return True

    def _next_page(self) -> None:
        """Parse one page (or resync to one) and keep it when it is the link's video."""
        if not self._fill(HEADER_BYTES):
            self._ended = True  # the end, or a header cut short
            return
        at = self._at
        if self._pending[at:at + 4] != CAPTURE or self._pending[at + 4] != 0:  # no Ogg version 0 page here
            self._fill(MAX_PAGE_BYTES)
            at = self._at  # `_fill` may have dropped parsed bytes
            found = self._pending.find(CAPTURE, at + 1, at + MAX_PAGE_BYTES)
            if found < 0:
                self._ended = True  # no page within a page's length (FFmpeg gives up there too)
            else:
                self._at = found
            return
        segments = self._pending[at + 26]
        if not self._fill(HEADER_BYTES + segments):
            self._ended = True
            return
        at = self._at  # `_fill` may have dropped parsed bytes
        body = sum(self._pending[at + HEADER_BYTES:at + HEADER_BYTES + segments])
        length = HEADER_BYTES + segments + body
        whole = self._fill(length)
        at = self._at
        page = bytes(self._pending[at:at + length])
        self._at = at + len(page)
        if self._keep(page):
            self._out += page
        if not whole:
            self._ended = True  # the file is cut inside this page: passed on as far as it goes

    def _keep(self, page: bytes) -> bool:
        flags, serial = page[5], int.from_bytes(page[14:18], "little")
        if flags & BOS:
            if self._in_data:  # a BOS page after the link's data: the next link begins
                self._serial, self._in_data = None, False
            if self._serial is None and page[HEADER_BYTES + page[26]:].startswith(THEORA_ID):
                self._serial = serial
        else:
            self._in_data = True
        return serial == self._serial

