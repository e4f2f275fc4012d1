"""A chained Ogg with sound read as the chain of its video alone.

`cat a.ogv b.ogv` of the usual `.ogv` (Theora + Vorbis) is a chained Ogg: links one after
another, each opening with its streams' BOS pages. FFmpeg's Ogg demuxer (the CLI's too) stops
where the second link begins when a link holds several streams ("Changing stream parameters in
multistream ogg is not implemented"), so the later parts' frames were lost. It does read a chain
whose links each hold one stream (`video_index`: chained Ogg Theora). So the file is read through
`VideoPages`: its Ogg pages in order, only those of each link's Theora stream passed on (the
largest picture where a link holds several, the first of equals: the stream the CLI shows of that
part alone, `video_decode.video_stream`; the sound's pages, and any other stream's, dropped), every
page byte for byte as stored, so FFmpeg still checks each page's CRC and each part decodes as it
does alone. A link holding video other than Theora (VP8, Dirac, Daala, or any stream not known as
sound, skeleton or text) cannot be so read: its frames would be lost silently, so the view ends
there and says why (`refusal`).

Forward only (no seek: a chained file is read from its start, never seeked, `video_index`), one
page held at a time (at most `MAX_PAGE_BYTES`; a link's BOS pages are judged one by one, only the
best Theora one held). A page is trusted only when its CRC checks: a damaged one (its length
too) is skipped from its next byte on, to the next capture pattern, as are bytes that are no page.
That is this reader's rule, not FFmpeg's (its demuxer gives up on such bytes between the parts of
a chain of video alone): it keeps the later parts of a file damaged between them. No next page
before the file's end, or a header cut short, ends the view (a damaged or cut file: its tail is
judged as any cut file's); more than `MAX_JUNK_BYTES` skipped or checked in vain (junk, or capture
patterns forged close together, each a CRC to compute) ends it with a `refusal`.
"""

from __future__ import annotations

import io
import zlib
from typing import BinaryIO

CAPTURE = b"OggS"
PAGE_START = CAPTURE + b"\x00"  # the capture pattern and Ogg version 0, the only version there is
HEADER_BYTES = 27  # capture pattern .. page segment count
CRC_FIELD = slice(22, 26)  # the page's CRC, zeroed while it is computed
MAX_PAGE_BYTES = HEADER_BYTES + 255 + 255 * 255  # FFmpeg's MAX_PAGE_SIZE: 65307
MAX_JUNK_BYTES = 16 << 20  # bytes skipped, or checked as pages whose CRC fails, before the view gives up
BOS = 0x02  # header_type flag: the first page of a logical stream
THEORA_ID = b"\x80theora"  # the first packet of a Theora stream (its identification header)
# the first packets of the streams an Ogg link may hold beside its video that are no video (FFmpeg's
# oggparse*.c): sound (Vorbis, Opus, Speex, FLAC and its pre-1.1.1 mapping, CELT, PCM, OGM audio),
# the skeleton, text (Kate, CMML, OGM text); any other BOS page is taken for video
NOT_VIDEO_IDS = (b"\x01vorbis", b"OpusHead", b"Speex   ", b"\x7fFLAC", b"fLaC", b"CELT    ", b"PCM     ",
                 b"\x01audio", b"fishead\x00", b"\x80kate\x00\x00\x00", b"CMML\x00\x00\x00\x00", b"\x01text")
# other video FFmpeg's Ogg demuxer knows, named in the refusal
VIDEO_IDS = {b"OVP80": "VP8", b"BBCD\x00": "Dirac", b"KW-DIRAC": "Dirac", b"\x80daala": "Daala",
             b"\x01video": "OGM video"}
READ_CHUNK = 1 << 16
# what a page whose CRC fails counts to MAX_JUNK_BYTES at least: capture patterns forged close
# together, each a page to check, cost work in Python that their few bytes would not bound
FAILED_PAGE_COST = 4096
# each byte's bits in reverse order: the Ogg CRC (polynomial 0x04C11DB7 fed most significant bit first,
# initial value 0, no final xor) is zlib's reflected CRC-32 of the bit-reversed bytes, itself reversed
_REVERSED_BITS = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def ogg_crc(page: bytes) -> int:
    """The CRC of an Ogg page as its header's CRC field holds it (computed with that field zeroed)."""
    zeroed = bytearray(page)
    zeroed[CRC_FIELD] = bytes(4)
    register = zlib.crc32(zeroed.translate(_REVERSED_BITS), 0xFFFFFFFF) ^ 0xFFFFFFFF  # zlib: init and xor ~0
    return int(f"{register:032b}"[::-1], 2)


def theora_pixels(packet: bytes) -> int:
    """The picture size (width x height) a Theora identification header declares (its 24-bit PICW
    and PICH, as FFmpeg's demuxer reads them); 0 for a header cut short."""
    if len(packet) < 20:
        return 0
    return int.from_bytes(packet[14:17], "big") * int.from_bytes(packet[17:20], "big")


def foreign_video(packet: bytes) -> str | None:
    """The name of the video a BOS page's packet opens when it is no Theora (None: Theora, sound,
    the skeleton or text)."""
    if packet.startswith(THEORA_ID) or packet.startswith(NOT_VIDEO_IDS):
        return None
    return next((name for magic, name in VIDEO_IDS.items() if packet.startswith(magic)),
                f"a stream of unknown kind (first bytes {packet[:8].hex()})")


class VideoPages(io.RawIOBase):
    """The pages of each link's Theora stream of the Ogg file `raw`, read forward. `refusal`: why the
    file cannot be read so (set where that is found; the view ends there), else None."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._pending = bytearray()  # read from `raw`; parsed up to `_at`
        self._at = 0
        self._out = bytearray()  # kept pages, not yet read
        self._serial: int | None = None  # the current link's Theora stream
        self._best: tuple[int, int, bytes] | None = None  # this link's largest Theora so far: pixels, serial, BOS page
        self._in_data = False  # a page other than BOS was seen in this link: a BOS begins the next
        self._junk = 0  # bytes skipped or checked in vain so far
        self._ended = False
        self.refusal: str | None = None

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
        if self._pending[at:at + len(PAGE_START)] != PAGE_START:  # no page here
            self._resync(1)
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
        if whole and ogg_crc(page) != int.from_bytes(page[CRC_FIELD], "little"):
            self._resync(max(length, FAILED_PAGE_COST))  # a damaged page, its length too maybe: resynced
            return
        self._at = at + len(page)
        if not whole:  # the file is cut inside this page: a video page passed on as far as it goes
            self._ended = True
            if page[5] & BOS:
                return  # its stream is unknown: the cut tail of a file, no part
        kept = self._kept(page)
        if kept:
            self._out += kept

    def _resync(self, cost: int) -> None:
        """Move past the byte at `_at` to the next page start, however far: the bytes skipped count
        to `MAX_JUNK_BYTES` with `cost` (the work spent in vain at `_at`); past it the file is refused,
        at the end of the file the view ends."""
        self._junk += cost
        self._at += 1
        at_end = False
        while True:
            found = self._pending.find(PAGE_START, self._at)
            stop = found if found >= 0 else max(self._at, len(self._pending) - len(PAGE_START) + 1)
            self._junk += stop - self._at
            self._at = stop
            if self._junk > MAX_JUNK_BYTES:
                self._refuse(f"more than {MAX_JUNK_BYTES >> 20} MiB of bytes that are no Ogg page, or of pages "
                             "whose CRC fails, in it (a damaged file)")
                return
            if found >= 0:
                return
            if at_end:
                self._ended = True  # no page after these bytes: the file's damaged or cut tail
                return
            at_end = not self._fill(READ_CHUNK)

    def _refuse(self, why: str) -> None:
        self.refusal, self._ended = why, True
        self._out.clear()

    def _kept(self, page: bytes) -> bytes:
        """What of `page` (with a held BOS page) is passed on: a link's Theora pages, its BOS page
        once the link's BOS pages are all seen."""
        flags, serial = page[5], int.from_bytes(page[14:18], "little")
        if flags & BOS:
            if self._in_data:  # a BOS page after the link's data: the next link begins
                self._serial, self._best, self._in_data = None, None, False
            packet = page[HEADER_BYTES + page[26]:]
            other = foreign_video(packet)
            if other is not None:
                self._refuse(f"a part holds {other}, and only Theora is read part by part through the video's "
                             "pages alone")
            elif packet.startswith(THEORA_ID) and (self._best is None or theora_pixels(packet) > self._best[0]):
                self._best = (theora_pixels(packet), serial, page)
            return b""
        held = b""
        if not self._in_data:  # the link's BOS pages are all seen: its video is known
            self._in_data = True
            if self._best is not None:
                _, self._serial, held = self._best
        return held + page if serial == self._serial else held
