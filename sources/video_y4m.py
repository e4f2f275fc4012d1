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
    line = head[len(Y4M_MAGIC):].split(b"\n", 1)[0] + b"\n "  # FFmpeg's line keeps its newline, a space added
    size = {}
    at = 0
    while at < len(line):  # FFmpeg's tokenizer: W and H read by strtol, the last of each kept
        key, at = line[at:at + 1], at + 1
        if key in (b"W", b"H"):
            size[key], at = _strtol(line, at)
        elif key != b" ":
            at = line.find(b" ", at)
        at += 1 if key != b" " else 0
    return (size[b"W"], size[b"H"]) if len(size) == 2 else None


def _strtol(line: bytes, at: int) -> tuple[int, int]:
    """C's strtol at `at`: leading white space, a sign, digits; (value, where it stopped), (0, at)
    without digits. "W+60000", "W60000x" and "H60000\\r" declare 60000."""
    start = at
    while at < len(line) and line[at:at + 1] in b" \t\n\v\f\r":
        at += 1
    sign = -1 if line[at:at + 1] == b"-" else 1
    at += line[at:at + 1] in (b"+", b"-")
    digits = at
    while at < len(line) and line[at:at + 1].isdigit():
        at += 1
    return (sign * int(line[digits:at]), at) if at > digits else (0, start)


def judge_y4m_header(uri: str, max_pixels: int) -> None:
    """Raise `video_too_large` where a Y4M's declared frames exceed `max_pixels`."""
    size = y4m_size(uri)
    if size is not None and size[0] * size[1] > max_pixels:
        width, height = size
        raise VideoError("video_too_large", f"its Y4M header declares frames of {width}x{height} "
                                            f"({width * height} pixels), over max_pixels={max_pixels}")
