"""A YUV4MPEG2 (.y4m) file's frame size judged from its header line before FFmpeg opens it
(`judge_y4m_header`): FFmpeg refuses a size past its own image limit with EBUSY ("Device or
resource busy", "Picture size 60000x60000 is invalid"), which read as an `unreadable` file.
Part of `sources.video_decode`."""

from __future__ import annotations

from sources import fsio
from sources.video_open import VideoError
from transforms.headers import GIF_SCREEN as SNIFFED_BYTES

Y4M_MAGIC = b"YUV4MPEG2 "
HEADER_BYTES = 256  # the header line: magic, W, H, F, I, A, C and X tokens (ffmpeg writes ~50 bytes)


def y4m_size(uri: str) -> tuple[int, int] | None:
    """(width, height) a Y4M file's header line declares; None for another file, or a header
    without both numbers (FFmpeg's open says what is wrong with it)."""
    try:  # the bytes every open of a video sniffs (`GIF_SCREEN`, read once a task), then the line
        if not fsio.head_bytes(uri, SNIFFED_BYTES).startswith(Y4M_MAGIC):
            return None
        head = fsio.head_bytes(uri, HEADER_BYTES)
    except OSError:
        return None
    tokens = head[len(Y4M_MAGIC):].split(b"\n", 1)[0].split(b" ")
    size = {t[:1]: t[1:] for t in tokens if t[:1] in (b"W", b"H") and t[1:].isdigit()}
    return (int(size[b"W"]), int(size[b"H"])) if len(size) == 2 else None


def judge_y4m_header(uri: str, max_pixels: int) -> None:
    """Raise `video_too_large` where a Y4M's declared frames exceed `max_pixels`."""
    size = y4m_size(uri)
    if size is not None and size[0] * size[1] > max_pixels:
        width, height = size
        raise VideoError("video_too_large", f"its Y4M header declares frames of {width}x{height} "
                                            f"({width * height} pixels), over max_pixels={max_pixels}")
