"""An animated GIF shown as browsers show it, where FFmpeg's GIF decoder paints otherwise: an area a
frame disposes to the background (disposal 2), and the screen before the first frame, are cleared to
transparent by browsers (and ImageMagick's `-coalesce`), shown white here as the still images'
alpha is; FFmpeg paints them the screen's background colour, opaque, wherever the frame declares no
transparent colour (the black boxes of review video48r). Part of `sources.video_decode`.

`ClearedBackground` reads the file with its background colour index pointing past its global colour
table, an entry FFmpeg's decoder leaves transparent (zeroed); `on_white` flattens a decoded frame's
transparent pixels to white. A GIF whose global table holds all 256 colours has no index past it:
its background stays FFmpeg's (said in docs/layouts.md)."""

from __future__ import annotations

import io
from typing import BinaryIO

from transforms.headers import GIF_SIGNATURES

_FLAGS_AT, BACKGROUND_AT = 10, 11  # the logical screen descriptor's packed flags and background index
PAST_THE_TABLE = 255  # an index past every global table of fewer than 256 colours


def clears_background(head: bytes) -> bool:
    """Whether a file starting with `head` (13 bytes at least) is a GIF whose background index can
    be moved past its global colour table (one of fewer than 256 colours)."""
    if len(head) <= BACKGROUND_AT or head[:6] not in GIF_SIGNATURES:
        return False
    flags = head[_FLAGS_AT]
    return bool(flags & 0x80) and (flags & 7) < 7


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
