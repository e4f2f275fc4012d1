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
from typing import BinaryIO, Callable

from transforms.headers import GIF_SCREEN, GIF_SIGNATURES, gif_colour_table, gif_sub_blocks

_FLAGS_AT, BACKGROUND_AT = 10, 11  # the logical screen descriptor's packed flags and background index
PAST_THE_TABLE = 255  # an index past every global table of fewer than 256 colours
_TABLE, _TABLE_SIZE = 0x80, 7  # packed flags (screen's and image's): a colour table, its size 2^(n+1)
_IMAGE, _EXTENSION = 0x2C, 0x21  # block introducers (GIF89a sections 20, 23-26)
_DESCRIPTOR = 10  # an image descriptor: introducer, left, top, width, height, packed flags
_FULL_TABLE = _TABLE | _TABLE_SIZE  # packed flags: a table of 256 colours
_CHUNK = 1 << 16  # the source's bytes fetched on at least, for the walk and the reads
_HELD_BEHIND = 4 << 20  # the window's bytes kept behind its end at most (a long read's, or a walk's run)


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
    global table. The blocks are walked as far as the reads reach (`_walk_to`: sub-block sizes
    only, as FFmpeg's demuxer walks them): where the walk meets the trailer, the end of the file,
    or a byte that starts no block (where FFmpeg's decoding ends too), the rest is read as it is.
    Held per image given the table: its place (8 bytes) and its flags (1).

    The walk and the reads take the source's bytes from one window (`_hold`), fetched forward:
    reading the one handle at two places (the walk ahead of the reads) moved a remote file's 5 MiB
    read-ahead back and forth, an 18.2 MB GIF fetched 31.5 MB in 8 fetches (18.2 MB in 5 now)."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        raw.seek(0)
        head = raw.read(GIF_SCREEN)
        self._table = raw.read(gif_colour_table(head[_FLAGS_AT])) if len(head) == GIF_SCREEN else b""
        self._moved = len(self._table) == gif_colour_table(_FULL_TABLE)  # else cut inside it: read as it is
        self._flags = head[_FLAGS_AT] & ~_TABLE if self._moved else 0  # the screen's, without the table
        self._at = array("q")  # where each image given the table has its flags, in the view's bytes
        self._image_flags = array("B")  # those flags, saying a table of 256 colours
        self._walked = GIF_SCREEN + len(self._table)  # source bytes walked: no image before unrecorded
        self._in_data = False  # whether `_walked` is inside a block's data sub-blocks (at a size byte)
        self._walk_done = not self._moved
        self._held_at, self._held = 0, b""  # the window: the source's bytes from `_held_at`
        self._reading = 0  # where in the source the reads last were (the window keeps it)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            self._walk_to(None)
            offset += self._view_of(self._raw.seek(0, io.SEEK_END))
        elif whence == io.SEEK_CUR:
            offset += self._pos
        self._pos = max(offset, 0)
        return self._pos

    def _view_of(self, source: int) -> int:
        """Where source byte `source` (past the global table, within the walk) is in the view."""
        return source - len(self._table) + len(self._table) * len(self._at) if self._moved else source

    def readinto(self, buffer) -> int:
        """The view's bytes from the position: the source's run up to the next image's flags, then
        its flags and table, image after image (one bisection a read, not one a piece: a read of
        1x1 frames was 3 seeks and reads of the source, and a bisection, a frame)."""
        at = self._pos
        end = at + len(buffer)
        out = memoryview(buffer).cast("B")
        if not self._moved:
            n = self._copy(out, 0, at, len(out))
            self._pos += n
            return n
        self._walk_to(end)
        n = 0
        if at < GIF_SCREEN:
            n = self._copy(out, 0, at, min(end, GIF_SCREEN) - at)
            if at <= _FLAGS_AT < at + n:
                out[_FLAGS_AT - at] = self._flags
            if at + n < min(end, GIF_SCREEN):  # the source's end
                self._pos += n
                return n
        places, image_flags, table = self._at, self._image_flags, memoryview(self._table)
        size, count = len(table), len(places)
        here = at + n
        k = bisect_right(places, here) - 1  # the last image whose flags are at or before `here`
        if k >= 0 and here <= places[k] + size:  # the read starts inside image k's flags or table
            if here == places[k]:
                out[n] = image_flags[k]
                n, here = n + 1, here + 1
            start = here - places[k] - 1
            piece = min(size - start, end - here)
            out[n:n + piece] = table[start:start + piece]
            n += piece
        while at + n < end:  # `here`: in the source's run after image k's table
            here = at + n
            stop = min(end, places[k + 1]) if k + 1 < count else end
            run = stop - here
            if run:
                source = here - size * k  # past k + 1 tables, less the global one
                i = source - self._held_at
                if 0 <= i and i + run <= len(self._held):
                    out[n:n + run] = memoryview(self._held)[i:i + run]
                    self._reading = source
                else:
                    got = self._copy(out, n, source, run)
                    if got < run:  # the source's end
                        n += got
                        break
                n += run
            if stop == end:
                break
            k += 1
            out[n] = image_flags[k]
            piece = min(size, end - stop - 1)
            out[n + 1:n + 1 + piece] = table[:piece]
            n += 1 + piece
        self._pos = at + n
        return n

    def _copy(self, out: memoryview, n: int, source: int, most: int) -> int:
        """Copy up to `most` of the source's bytes from `source` into `out` at `n`: how many."""
        self._reading = source
        self._hold(source, most)
        i = source - self._held_at
        data = memoryview(self._held)[i:i + most]
        out[n:n + len(data)] = data
        return len(data)

    def _hold(self, at: int, most: int) -> None:
        """Make the window hold the source's bytes from `at`, `most` of them (fewer where the source
        ends): fetched on from the window's end where `at` is at most a chunk past it, the bytes
        before the reads' place let go (a read's whole, a chunk of the walk's); elsewhere (a seek
        back) the window starts again at `at`."""
        start, stop = self._held_at, self._held_at + len(self._held)
        if start <= at and at + most <= stop:
            return
        if start <= at <= stop + _CHUNK:
            keep = min(max(start, min(at, self._reading), stop - _HELD_BEHIND), at, stop)
            self._raw.seek(stop)
            more = self._raw.read(max(at + most - stop, _CHUNK))
            self._held_at, self._held = keep, self._held[keep - start:] + more
        else:
            self._raw.seek(at)
            self._held_at, self._held = at, self._raw.read(max(most, _CHUNK))

    def _walk_to(self, end: int | None) -> None:
        """Walk the source's blocks on until the view's byte `end` is walked (None: all), recording
        the images without a table; a block at a time, or a window's chunk of a block's data
        sub-blocks (so the walk is never far ahead of the reads)."""
        if self._walk_done:
            return
        places, image_flags = self._at, self._image_flags
        size = len(self._table)
        shift = size * (len(places) - 1)  # the view's byte of source byte s: s + shift
        at, in_data = self._walked, self._in_data
        held, held_at = self._held, self._held_at
        held_bytes = len(held)
        image, extension, descriptor = _IMAGE, _EXTENSION, _DESCRIPTOR  # locals: one block's step is the cost
        while end is None or at + shift < end:
            if not in_data:
                i = at - held_at
                if i < 0 or i + descriptor > held_bytes:
                    self._hold(at, descriptor)
                    held, held_at = self._held, self._held_at
                    held_bytes, i = len(held), at - held_at
                introducer = held[i] if i < held_bytes else None
                if introducer == image:
                    if i + descriptor > held_bytes:  # cut inside its descriptor
                        break
                    flags = held[i + descriptor - 1]
                    if flags & _TABLE:
                        at += descriptor + gif_colour_table(flags) + 1  # its table, the LZW code size
                    else:
                        places.append(at + descriptor - 1 + shift)
                        image_flags.append(flags | _FULL_TABLE)
                        shift += size
                        at += descriptor + 1  # the LZW code size
                elif introducer == extension:
                    at += 2  # its label
                else:  # the trailer, the end, a byte that starts no block: the rest as it is
                    break
            i = at - held_at
            if i < 0 or i >= held_bytes:
                self._hold(at, 1)
                held, held_at = self._held, self._held_at
                held_bytes, i = len(held), at - held_at
                if i >= held_bytes:  # the source ends inside the data
                    break
            stop, _ = gif_sub_blocks(held, i, held_bytes)
            in_data = stop >= held_bytes
            at = held_at + stop + (not in_data)  # past the terminator, or at the next size byte
        else:
            self._walked, self._in_data = at, in_data
            return
        self._walked, self._walk_done = at, True

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
