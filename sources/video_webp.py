"""Animated WebP (GIPHY-style and web-crawled clips) read as video through Pillow's WebP plugin.

The FFmpeg PyAV bundles has no animated WebP decoder ("Invalid data found" at avcodec_send_packet),
so WebP files take this path instead of `sources.video_decode`: the same jobs (`probe`,
`decode_frames`), run in the same budgeted worker, giving the same `Probe` and frames. What a file
is comes from its first bytes, whatever its name (`probe` is every video's): crawls save a GIF as
`.webp`, a WebP as `.gif` or `.mp4`.

Before any frame is decoded, the file's RIFF chunks are walked (`read_layout`): the canvas (VP8X),
each ANMF frame's rectangle and duration, or the one frame of a still file. An animation cut short
(a download stopped) keeps its whole frames before the cut, as FFmpeg keeps a cut MP4's or GIF's:
libwebp, which refuses the file whole, is given those chunks alone (`_whole_part`), and the frame
the cut ends inside is counted as the file's (`Probe.claimed`, the lineage's `frames_metadata`) but
not shown, as a cut MP4's partial packet. A still cut short, a chunk running past the RIFF's
declared end, or a frame lying outside the canvas, is `unreadable` (libwebp's demuxer would refuse
the file); a canvas over `max_pixels`, or one whose decoding would not fit the memory budget, is
`video_too_large`; frames up to the last wanted that cannot be decoded within the CPU budget, each
costing at least the whole canvas (`judge_time`), are `decode_timeout`. Only then does Pillow
decode, frame after frame: libwebp's WebPAnimDecoder composites each frame onto the canvas (blend,
dispose to transparent), as browsers show it. Frames are RGB laid on white by their alpha, by the
still-image rule (`transforms.decode.to_rgb_array`, strip by strip), as browsers and the GIF path
show them: a pixel left transparent is white, whatever colour a lossless encoder stored under it.
Frame i's time is the sum of the ANMF durations before it as browsers show them (`shown_ms`: what
Pillow gives as info['duration'] and `webpmux -info` lists, but 10 ms or less is 100 ms, as for a
GIF). The probe decodes the first frame only: a frame damaged inside its bitstream ends the decode
there, and the clips needing it or a later frame are `decode_failed` (the clips before it are kept).
A still WebP is one frame, as a one-frame GIF.
"""

from __future__ import annotations

import io
import itertools
import struct
import warnings
from dataclasses import dataclass
from typing import IO, Callable, Iterator, Sequence

import numpy as np

from sources import fsio
from sources.video_gif import judge_gif, shown_ms
from sources.video_memory import DECODER_BASE_MB, DEFAULT_MAX_PIXELS, DEFAULT_MEMORY_MB
from sources.video_open import UNREADABLE_FILE, VideoError
from sources.video_probe import Probe
from sources.video_probe import probe as ffmpeg_probe
from transforms.errors import exception_detail
from transforms.headers import GIF_SCREEN

WEBP_SUFFIX = ".webp"
# per canvas pixel while decoding: libwebp's canvas and its disposed copy (RGBA, 4 + 4), the canvas
# Pillow is handed as bytes and its image of it (4 + 4), the RGB frame laid on white (3; its temporaries
# are a strip's, `to_rgb_array`), a postprocessed copy (3). Measured (peak RSS rise decoding 2 frames
# of a 6800 x 6800 canvas): 19.3 bytes a pixel with alpha 128 everywhere, 19.1 opaque; laid on black
# in one piece it was 31.2 with alpha.
CANVAS_BYTES_PER_PIXEL = 28
FILE_COPIES = 3  # the file's bytes: read, Pillow's copy, libwebp's demuxer's copy
# per frame: its duration and time here, libwebp's demuxer's record of it, the probe's times pickled
# and read back (measured: 180 bytes a frame at most, a 300,000-frame file of 1x1 frames)
FRAME_BYTES = 256
ANIMATION_FLAG = 0x02  # VP8X flags: an animation (ANIM + ANMF chunks)
ALPHA_FLAG = 0x10  # VP8X flags: transparency (Pillow then gives RGBA, laid on white here)
# CPU nanoseconds each decoded frame costs at least per canvas pixel, whatever its size: libwebp
# composites every frame onto the whole canvas and hands the whole canvas over, laid on white
# (`decode_frames`' floor). Measured: 160 frames of 1x1 on a 6800 x 6800 canvas, 6 decoded, 26-27
# ns with transparency, 9-14 without (RGB), load 6-7 on 2 cores; taken at about 0.7 of the least,
# so a faster machine is not refused what it could decode.
FRAME_PIXEL_NS, FRAME_PIXEL_NS_ALPHA = 6, 18


@dataclass(frozen=True)
class Layout:
    """What the RIFF chunks declare, read before decoding."""

    width: int  # canvas
    height: int
    durations: tuple[int, ...]  # each frame's, in milliseconds (a still: one frame, 0)
    animated: bool
    file_bytes: int
    alpha: bool = False  # VP8X's transparency flag
    whole_bytes: int = 0  # a cut file: where the chunk the cut ends inside starts (0: not cut)
    cut_frames: int = 0  # a cut file: the ANMF frame the cut ends inside (1), or none (0)


WEBP_CONTAINER = "webp"  # `Probe.container` of a file this module reads (FFmpeg's still WebP demuxer: "webp_pipe")


def _first_bytes(uri: str) -> bytes:
    """The file's first `GIF_SCREEN` bytes (enough to tell WebP and a GIF's screen), in one ranged
    read; b"" where it cannot be read (gone, a folder, a fifo: FFmpeg's probe meets it and says so)."""
    try:
        return fsio.head_bytes(uri, GIF_SCREEN)  # never a remote read-ahead block
    except PermissionError as exc:  # mode 000, another user's: the file's reject, as for other videos
        raise VideoError(UNREADABLE_FILE, f"{exception_detail(exc)}: give this user read access to it "
                                          "(chmod a+r)") from None
    except OSError:
        return b""


def _is_riff_webp(head: bytes) -> bool:
    """Whether a file's first bytes are WebP's (RIFF, size, WEBP)."""
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def _u24(data: bytes, at: int) -> int:
    return data[at] | data[at + 1] << 8 | data[at + 2] << 16


def read_layout(handle: IO[bytes], file_bytes: int) -> Layout:
    """Walk the RIFF chunks of a WebP file (`handle`, `file_bytes` long) without decoding; raises
    VideoError `unreadable` for a still cut short, a chunk past the declared end, a frame outside
    the canvas, or no frame; `too_few_frames` for an animation cut before its first whole frame."""
    head = handle.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        raise VideoError("unreadable", "not a WebP file (no RIFF/WEBP header)")
    declared = struct.unpack("<I", head[4:8])[0] + 8
    cut = declared > file_bytes
    width = height = 0
    animated = alpha = False
    durations: list[int] = []
    cut_frames = 0
    at = 12
    while at + 8 <= min(declared, file_bytes):
        handle.seek(at)
        fourcc, size = struct.unpack("<4sI", handle.read(8))
        end = at + 8 + size
        if cut and end > file_bytes:  # the chunk the cut ends inside: the file's whole part ends before it
            cut_frames = int(fourcc == b"ANMF")
            break
        if end > declared:
            raise VideoError("unreadable", f"chunk {fourcc.decode('latin-1')!r} at byte {at} declares {size} "
                                           f"bytes, {declared - at - 8} are left of the {declared} the RIFF "
                                           "header declares")
        body = handle.read(min(size, 30))
        if fourcc == b"VP8X" and size >= 10:
            animated, alpha = bool(body[0] & ANIMATION_FLAG), bool(body[0] & ALPHA_FLAG)
            width, height = _u24(body, 4) + 1, _u24(body, 7) + 1
        elif fourcc == b"ANMF" and size >= 16:
            x, y = 2 * _u24(body, 0), 2 * _u24(body, 3)
            w, h = _u24(body, 6) + 1, _u24(body, 9) + 1
            if not animated:
                raise VideoError("unreadable", "an ANMF frame in a file whose VP8X chunk declares no animation")
            if not _holds_image(handle, at + 8 + 16, end):  # libwebp's demuxer drops it: no frame, no duration
                at = end + (size & 1)
                continue
            if x + w > width or y + h > height:
                raise VideoError("unreadable", f"frame {len(durations)} ({w}x{h} at {x},{y}) lies outside the "
                                               f"{width}x{height} canvas")
            durations.append(_u24(body, 12))
        elif fourcc in (b"VP8 ", b"VP8L") and not animated:
            if not width:  # a simple file: the size is the bitstream's
                width, height = _bitstream_size(fourcc, body)
            durations = [0]
            break
        at = end + (size & 1)
    if cut and at + 8 > file_bytes:  # cut inside a chunk's 8-byte header: an ANMF's is a frame begun
        handle.seek(at)
        cut_frames = int(handle.read(4) == b"ANMF")
    if cut and not animated:
        raise VideoError("unreadable", f"cut: the RIFF header declares {declared} bytes, the file holds {file_bytes}")
    if cut and not durations:  # as an MP4 cut before its first frame
        raise VideoError("too_few_frames", "no frames")
    if not durations:
        raise VideoError("unreadable", "no frame: no ANMF, VP8 or VP8L chunk")
    return Layout(width, height, tuple(durations), animated, file_bytes, alpha, at if cut else 0, cut_frames)


def _holds_image(handle: IO[bytes], at: int, end: int) -> bool:
    """Whether an ANMF chunk's frame data (from `at` to `end`) holds an image bitstream as libwebp's
    demuxer reads it: VP8 or VP8L first, or VP8 after one ALPH chunk. Otherwise libwebp counts no
    frame for it (an ANMF of its header alone), or refuses the file (`_composited` then says so)."""
    for _ in range(2):
        if at + 8 > end:
            return False
        handle.seek(at)
        fourcc, size = struct.unpack("<4sI", handle.read(8))
        if fourcc in (b"VP8 ", b"VP8L"):
            return True
        if fourcc != b"ALPH":
            return False
        at += 8 + size + (size & 1)
    return False


def _bitstream_size(fourcc: bytes, body: bytes) -> tuple[int, int]:
    """A still's size from its VP8 key frame header or VP8L header."""
    if fourcc == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", body[6:10])
        return w & 0x3FFF, h & 0x3FFF
    if fourcc == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        bits = struct.unpack("<I", body[1:5])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    raise VideoError("unreadable", f"a {fourcc.decode('latin-1').strip()} chunk without its frame header")


def judge(layout: Layout, max_pixels: int, memory_mb: int) -> None:
    """Raise `video_too_large` when the canvas exceeds `max_pixels` or its decoding (the canvas's
    buffers, the file's copies, each frame's record) would not fit `memory_mb`: judged before any
    frame is decoded."""
    pixels = layout.width * layout.height
    if pixels > max_pixels:
        raise VideoError("video_too_large", f"{layout.width}x{layout.height} canvas: {pixels} pixels > max_pixels "
                                            f"{max_pixels}")
    frames = len(layout.durations)
    cost = ((DECODER_BASE_MB << 20) + pixels * CANVAS_BYTES_PER_PIXEL + layout.file_bytes * FILE_COPIES
            + frames * FRAME_BYTES)
    if cost > memory_mb << 20:
        raise VideoError("video_too_large", f"{layout.width}x{layout.height} canvas, {frames} frames, "
                                            f"{layout.file_bytes} bytes: decoding needs {cost >> 20} MiB > "
                                            f"memory_budget_mb {memory_mb}")


def judge_time(layout: Layout, frames: int, time_budget_s: float) -> None:
    """Raise `decode_timeout` when decoding `frames` frames cannot fit `time_budget_s` CPU seconds:
    each costs at least the whole canvas (`FRAME_PIXEL_NS`), so a few KB of tiny frames on a
    large canvas is refused before decoding, not after spending the budget."""
    ns = FRAME_PIXEL_NS_ALPHA if layout.alpha else FRAME_PIXEL_NS
    least_s = frames * layout.width * layout.height * ns * 1e-9
    if least_s > time_budget_s:
        raise VideoError("decode_timeout", f"judged before decoding: {frames} frames of a {layout.width}x"
                                           f"{layout.height} canvas take at least {least_s:.0f} CPU seconds > "
                                           f"time_budget_s {time_budget_s:g}")


def _layout_and_bytes(uri: str, max_pixels: int, memory_mb: int) -> tuple[Layout, bytes]:
    """The file's layout, judged (`judge`), then its bytes: nothing is decoded before the judgement."""
    try:
        path = fsio.local_path(uri)
        with (open(path, "rb") if path else fsio.open_file(uri)) as handle:
            file_bytes = handle.seek(0, io.SEEK_END)
            handle.seek(0)
            layout = read_layout(handle, file_bytes)
            judge(layout, max_pixels, memory_mb)
            handle.seek(0)
            return layout, _whole_part(layout, handle.read(layout.whole_bytes or file_bytes))
    except PermissionError as exc:  # mode 000, another user's: the file's reject, as for other videos
        raise VideoError(UNREADABLE_FILE, f"{exception_detail(exc)}: give this user read access to it "
                                          "(chmod a+r)") from None
    except FileNotFoundError as exc:
        raise VideoError("unreadable", exception_detail(exc)) from None


def _whole_part(layout: Layout, data: bytes) -> bytes:
    """A cut file's whole chunks (`data`, read up to `layout.whole_bytes`) as a file of its own:
    the RIFF header declaring their bytes, a padding byte the cut took restored. A whole file as
    it is."""
    if not layout.whole_bytes:
        return data
    return b"".join((data[:4], struct.pack("<I", layout.whole_bytes - 8), data[8:],
                     bytes(layout.whole_bytes - len(data))))


def _composited(data: bytes, count: int, frames: int) -> Iterator[np.ndarray]:
    """Frames 0..count-1 as libwebp's WebPAnimDecoder composites them (through Pillow), RGB; stops
    with VideoError at a frame that does not decode (the frames before it delivered). A file whose
    frames libwebp counts otherwise than its layout's `frames` is `unreadable`: each frame's time
    would be another's."""
    from PIL import Image

    from transforms.decode import to_rgb_array  # here: a probe of any video runs in this module (`sources.video.probe_video`)

    try:
        with warnings.catch_warnings():  # the canvas is judged already (`judge`): not Pillow's to warn of
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=["WEBP"])
    except Image.DecompressionBombError as exc:  # max_pixels set past Pillow's own limit
        raise VideoError("video_too_large", exception_detail(exc)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise VideoError("unreadable", f"libwebp refuses it: {exception_detail(exc)}") from None
    with image:
        counted = getattr(image, "n_frames", 1)
        if counted != frames:
            raise VideoError("unreadable", f"libwebp's demuxer counts {counted} frames, the RIFF chunks {frames}")
        for i in range(min(count, counted)):
            try:
                image.seek(i)
                image.load()
            except (OSError, EOFError, ValueError) as exc:
                raise VideoError("decode_failed", f"frame {i} does not decode: {exception_detail(exc)}") from None
            yield to_rgb_array(image)  # alpha on white, strip by strip, as a still image


def probe(uri: str, max_pixels: int = DEFAULT_MAX_PIXELS, memory_mb: int = DEFAULT_MEMORY_MB,
          cpu_s: float | None = None) -> Probe:
    """What planning needs (`sources.video_probe.Probe`) of a WebP file: its frames and their times
    from the chunks, the canvas judged, and the first frame decoded. A file that is no WebP (a GIF
    named `.webp`, any video) is FFmpeg's to probe (`sources.video_probe.probe`), a GIF's cost first
    judged against `cpu_s` (`judge_gif`) from the same first bytes: one read of them a probe."""
    head = _first_bytes(uri)
    if not _is_riff_webp(head):
        if cpu_s is not None and head:
            judge_gif(uri, max_pixels, cpu_s, head)
        return ffmpeg_probe(uri, max_pixels, memory_mb)
    layout, data = _layout_and_bytes(uri, max_pixels, memory_mb)
    n = len(layout.durations)
    next(_composited(data, 1, n))
    shown = [shown_ms(ms) for ms in layout.durations[:-1]]
    times = tuple(round(ms / 1000, 6) for ms in itertools.accumulate(shown, initial=0))
    fps = (n - 1) / times[-1] if n > 1 and times[-1] > 0 else 0.0
    held = n + layout.cut_frames  # a cut file's frames, the one the cut ends inside too (as a cut MP4's packets)
    return Probe(n, held, held, times, layout.width, layout.height, fps, WEBP_CONTAINER, "webp", 1, 0, 0, False, "rgba")


def decode_frames(uri: str, wanted: Sequence[int], expected_frames: int | None = None,
                  postprocess: Callable[[np.ndarray], np.ndarray] | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS, memory_mb: int = DEFAULT_MEMORY_MB,
                  time_budget_s: float | None = None, **_: object) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index, RGB frame) for every index in `wanted`, decoding the frames in order up to
    the last wanted (each composited onto the ones before it). A file holding fewer frames than
    `expected_frames` is `changed_file`; frames that do not decode are not yielded; frames that
    cannot be decoded within `time_budget_s` CPU seconds are refused before any is (`judge_time`)."""
    layout, data = _layout_and_bytes(uri, max_pixels, memory_mb)
    n = len(layout.durations)
    if expected_frames is not None and n < expected_frames:
        raise VideoError("changed_file", f"{n} frames now, {expected_frames} when planned")
    wanted_set = set(wanted)
    if not wanted_set:
        return
    if min(wanted_set) < 0 or max(wanted_set) >= n:
        raise VideoError("decode_failed", f"frame {max(wanted_set)} is past the last of {n}")
    if time_budget_s is not None:
        judge_time(layout, max(wanted_set) + 1, time_budget_s)
    try:
        for i, frame in enumerate(_composited(data, max(wanted_set) + 1, n)):
            if i in wanted_set:
                yield i, postprocess(frame) if postprocess is not None else frame
    except VideoError as exc:
        if exc.reason != "decode_failed":
            raise
