"""An animated GIF shown as browsers show it, where FFmpeg's GIF decoder paints otherwise: an area a
frame disposes to the background (disposal 2), and the screen before the first frame, are cleared to
transparent by browsers (the first also by ImageMagick's `-coalesce`; the screen before the first
frame it paints the background colour), shown white here as the still images' alpha is; FFmpeg
paints them the screen's background colour, opaque, wherever the frame declares no transparent
colour (the black boxes of review video48r). Part of `sources.video_decode`.

`ClearedBackground` reads the file with its background colour index pointing past its global colour
table, an entry FFmpeg's decoder leaves transparent (zeroed). A global table of all 256 colours has
no index past it (a dithered photo's): `LocalTables` reads such a file with that table moved into
each image that has none, as its local table, and the screen left without one, so FFmpeg has no
background colour but its zeroed, transparent one (`browser_view` picks the view). `on_white`
flattens a decoded frame's transparent pixels to white."""

from __future__ import annotations

import io
from array import array
from bisect import bisect_right
from typing import BinaryIO, Callable, Iterator

from transforms.headers import GIF_SCREEN, GIF_SIGNATURES

_FLAGS_AT, BACKGROUND_AT = 10, 11  # the logical screen descriptor's packed flags and background index
PAST_THE_TABLE = 255  # an index past every global table of fewer than 256 colours
_TABLE, _TABLE_SIZE = 0x80, 7  # packed flags (screen's and image's): a colour table, its size 2^(n+1)
_IMAGE, _EXTENSION = 0x2C, 0x21  # block introducers (GIF89a sections 20, 23-26)
_DESCRIPTOR = 10  # an image descriptor: introducer, left, top, width, height, packed flags
_FULL_TABLE = _TABLE | _TABLE_SIZE  # packed flags: a table of 256 colours


def _table_bytes(flags: int) -> int:
    return 3 << ((flags & _TABLE_SIZE) + 1)


def browser_view(head: bytes, open_file: Callable[[], BinaryIO]) -> io.RawIOBase | None:
    """The view FFmpeg reads a GIF starting with `head` (13 bytes at least) through to paint no
    opaque background (`ClearedBackground`, `LocalTables`), the file opened by `open_file`; None
    for any other file, and a GIF without a global table (FFmpeg's background is transparent)."""
    if clears_background(head):
        return ClearedBackground(open_file())
    if len(head) <= _FLAGS_AT or head[:6] not in GIF_SIGNATURES or head[_FLAGS_AT] & _FULL_TABLE != _FULL_TABLE:
        return None
    handle = open_file()
    try:
        return LocalTables(handle)
    except BaseException:
        handle.close()
        raise


def clears_background(head: bytes) -> bool:
    """Whether a file starting with `head` (13 bytes at least) is a GIF whose background index can
    be moved past its global colour table (one of fewer than 256 colours)."""
    if len(head) <= BACKGROUND_AT or head[:6] not in GIF_SIGNATURES:
        return False
    flags = head[_FLAGS_AT]
    return bool(flags & _TABLE) and (flags & _TABLE_SIZE) < _TABLE_SIZE


class ClearedBackground(io.RawIOBase):
    """A GIF read as it is, its background colour index excepted (`PAST_THE_TABLE`)."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readinto(self, buffer) -> int:
        at = self._raw.tell()
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        if at <= BACKGROUND_AT < at + n:
            buffer[BACKGROUND_AT - at] = PAST_THE_TABLE
        return n

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class LocalTables(io.RawIOBase):
    """A GIF with a global table of 256 colours read with that table given as the local table of
    each image without one (its descriptor's flags saying so), and the screen's flags saying no
    global table. The blocks are walked as far as the reads reach (`_walk`: sub-block sizes only,
    as FFmpeg's demuxer walks them): where the walk meets the trailer, the end of the file, or a
    byte that starts no block (where FFmpeg's decoding ends too), the rest is read as it is. Held
    per image given the table: its place (8 bytes) and its flags (1)."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        raw.seek(0)
        head = raw.read(GIF_SCREEN)
        self._table = raw.read(_table_bytes(head[_FLAGS_AT])) if len(head) == GIF_SCREEN else b""
        self._moved = len(self._table) == _table_bytes(_FULL_TABLE)  # else cut inside it: read as it is
        self._flags = head[_FLAGS_AT] & ~_TABLE if self._moved else 0  # the screen's, without the table
        self._at = array("q")  # where each image given the table has its flags, in the view's bytes
        self._image_flags = array("B")  # those flags, saying a table of 256 colours
        self._walked = GIF_SCREEN + len(self._table) if self._moved else 0  # source bytes walked
        self._walk_done = not self._moved
        self._walker = self._walk() if self._moved else iter(())
        self._chunk_at, self._chunk = -1, b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            while not self._walk_done:
                next(self._walker, None)
            offset += self._view_of(self._raw.seek(0, io.SEEK_END))
        elif whence == io.SEEK_CUR:
            offset += self._pos
        self._pos = max(offset, 0)
        return self._pos

    def _view_of(self, source: int) -> int:
        """Where source byte `source` (past the global table, within the walk) is in the view."""
        return source - len(self._table) + len(self._table) * len(self._at) if self._moved else source

    def readinto(self, buffer) -> int:
        end = self._pos + len(buffer)
        while not self._walk_done and self._view_of(self._walked) < end:
            next(self._walker, None)
        n = 0
        while self._pos < end:
            piece = self._piece(self._pos, end - self._pos)
            if not piece:
                break
            buffer[n:n + len(piece)] = piece
            n += len(piece)
            self._pos += len(piece)
        return n

    def _piece(self, at: int, most: int) -> bytes:
        """Up to `most` of the view's bytes from `at`: of the source, or an image's flags and table."""
        if not self._moved:
            return self._source(at, most)
        if at < GIF_SCREEN:
            data = self._source(at, min(most, GIF_SCREEN - at))
            if at <= _FLAGS_AT < at + len(data):
                data = data[:_FLAGS_AT - at] + bytes((self._flags,)) + data[_FLAGS_AT - at + 1:]
            return data
        k = bisect_right(self._at, at) - 1
        if k >= 0 and at == self._at[k]:
            return bytes((self._image_flags[k],))
        if k >= 0 and at <= self._at[k] + len(self._table):
            start = at - self._at[k] - 1
            return self._table[start:start + most]
        if k + 1 < len(self._at):
            most = min(most, self._at[k + 1] - at)
        return self._source(at - len(self._table) * k, most)  # past k + 1 tables, less the global one

    def _source(self, at: int, most: int) -> bytes:
        self._raw.seek(at)
        return self._raw.read(most)

    def _byte(self, at: int) -> int | None:
        """The source's byte at `at` (None past its end), read a chunk at a time for the walk."""
        if not 0 <= at - self._chunk_at < len(self._chunk):
            self._chunk_at, self._chunk = at, self._source(at, 1 << 16)
            if not self._chunk:
                return None
        return self._chunk[at - self._chunk_at]

    def _past_sub_blocks(self, at: int) -> int | None:
        """Where the data sub-blocks from `at` end, past their terminator; None where the source
        ends first. A loop over the chunk's bytes: a hostile GIF of 1-byte sub-blocks has 2^25 in
        64 MiB."""
        while True:
            if not 0 <= at - self._chunk_at < len(self._chunk):
                self._chunk_at, self._chunk = at, self._source(at, 1 << 16)
                if not self._chunk:
                    return None
            chunk, i = self._chunk, at - self._chunk_at
            while i < len(chunk):
                size = chunk[i]
                if not size:
                    return self._chunk_at + i + 1
                i += size + 1
            at = self._chunk_at + i

    def _walk(self) -> Iterator[None]:
        """Walk the source's blocks from past the global table, one block a step, recording the
        images without a table; `_walked` is where the next block starts."""
        try:
            while True:
                at = self._walked
                introducer = self._byte(at)
                if introducer == _IMAGE:
                    flags = self._byte(at + _DESCRIPTOR - 1)
                    if flags is None:
                        return
                    if flags & _TABLE:
                        at += _DESCRIPTOR + _table_bytes(flags)
                    else:
                        self._at.append(self._view_of(at + _DESCRIPTOR - 1))
                        self._image_flags.append(flags | _FULL_TABLE)
                        at += _DESCRIPTOR
                    at += 1  # the LZW code size
                elif introducer == _EXTENSION:
                    at += 2  # its label
                else:  # the trailer, the end, a byte that starts no block: the rest as it is
                    return
                past = self._past_sub_blocks(at)
                if past is None:
                    return
                self._walked = past
                yield
        finally:
            self._walk_done = True
            self._chunk = b""

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


def on_white(frame):
    """A decoded GIF frame (bgra) with its transparent pixels white and opaque; a frame
    without any transparent pixel (or of another format) as it is. A GIF's alpha is 0 or 255."""
    import av

    if frame.format.name != "bgra":
        return frame
    bgra = frame.to_ndarray()  # a copy
    clear = bgra[..., 3] < 128
    if not clear.any():
        return frame
    bgra[clear] = 255  # white, opaque
    return av.VideoFrame.from_ndarray(bgra, format="bgra")
