"""An animated GIF's decoding cost judged from its header and blocks, before FFmpeg decodes it
(`judge_gif`). Part of `sources.video`.

FFmpeg's GIF decoder paints every frame onto a full copy of the logical screen, and a GIF has one
key frame: the probe, and each clip, decode every frame up to the last they need, each costing the
screen's pixels whatever the frame's own size. A 230 KB GIF of a 4000 x 4000 screen and 10,000
frames of 1 x 1 pixels held its probe 300 s, found only by decoding it. So the screen's pixels
times the frames (counted by a walk of the blocks, `transforms.headers.gif_frames`) are judged
against the time budget at `GIF_SCREEN_PIXELS_PER_CPU_S` first (each frame `GIF_FRAME_CPU_S` at
least, however small its screen), and a screen over `max_pixels`
is `video_too_large` (FFmpeg refuses a screen over 2^31 bytes as a stream "without a frame size").
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

from sources import fsio
from sources.video_open import VideoError
from transforms.headers import GIF_SIGNATURES, gif_frames, gif_screen


# Screen pixels FFmpeg's GIF decoder paints a CPU-second, at the fastest of the frame sizes measured
# (probe of 1x1-pixel frames, one core, ffmpeg 7 in PyAV): 500x500 screen 3.9e9, 1000x1000 3.1e9,
# 2000x2000 2.6e9, 4000x4000 1.6e9. The fastest, so a GIF judged over its budget surely is.
GIF_SCREEN_PIXELS_PER_CPU_S = 4_000_000_000
# CPU seconds each frame costs at least, however small its screen: FFmpeg's demuxing and decoding
# of it, and the view of a 256-colour GIF (`gif_screen.LocalTables`), for each of the probe's reads
# of the file. Measured (probe of 100k 1x1 frames on a 2x2 screen, load ~11 on 2 cores): 15-22 us a
# frame (fewer than 256 colours), 33-37 us (256); taken at about 0.7 of the least. A 2.5 MB GIF of
# 100k such frames was judged 1e-4 s, and took 4.6 CPU-s.
GIF_FRAME_CPU_S = 10e-6
GIF_WALK_BYTES = 64 << 20  # the frames walked: a longer GIF counts at least those within these bytes


def judge_gif(uri: str, max_pixels: int, cpu_s: float, head: bytes | None = None) -> None:
    """Raise `video_too_large` for a GIF whose logical screen is over `max_pixels`, and
    `decode_timeout` for one whose screen pixels times frames cannot decode within `cpu_s`
    CPU seconds; a file that is no GIF is left to the decoder. `head`: the file's first bytes
    where the caller has read them (`sources.video_webp.probe`, in the probe's budgeted worker)."""
    try:  # a ranged read of the signature (unless given), then of the walk (a GIF's only)
        if (head if head is not None else fsio.head_bytes(uri, 6))[:6] not in GIF_SIGNATURES:
            return
        data = fsio.head_bytes(uri, GIF_WALK_BYTES)
    except OSError:  # gone, forbidden, a fifo: the decoding process meets it and says why, as for any video
        return
    screen = gif_screen(data)
    if screen is None:
        return
    width, height = screen
    pixels = width * height
    if pixels > max_pixels:
        raise VideoError("video_too_large", f"the GIF's logical screen of {width}x{height} ({pixels} pixels) exceeds "
                                            f"max_pixels={max_pixels}")
    frames = gif_frames(data).count
    seconds = max(pixels * frames / GIF_SCREEN_PIXELS_PER_CPU_S, frames * GIF_FRAME_CPU_S)
    if seconds > cpu_s:
        raise VideoError("decode_timeout", f"{frames} frames of a {width}x{height} GIF screen take at least "
                                           f"{seconds:.3g} CPU seconds to decode (judged before decoding, at "
                                           f"{GIF_SCREEN_PIXELS_PER_CPU_S:.3g} pixels a second and "
                                           f"{GIF_FRAME_CPU_S:g} s a frame at least), over the budget of {cpu_s:g}")


BROWSER_MIN_MS, BROWSER_DEFAULT_MS = 10, 100  # a frame shown for 10 ms or less is shown 100 ms


def shown_ms(duration_ms: int) -> int:
    """How long browsers show a frame of this stored duration: 10 ms or less (0: "as fast as you
    can", which ads and Pillow's default writers store) is 100 ms, Chromium's and Firefox's rule for
    GIF and WebP alike (`gif_times`, `sources.video_webp`)."""
    return BROWSER_DEFAULT_MS if duration_ms <= BROWSER_MIN_MS else duration_ms


def gif_times(stamps: Sequence[int], time_base: Fraction) -> tuple[float, ...]:
    """Each frame's time in seconds from the first, its stamps (the demuxer's sums of delays) with
    each delay shown as browsers show it (`shown_ms`: 0 or 1 centisecond is 10; the
    ffmpeg 5.1 CLI's demuxer too, `min_delay` 2; FFmpeg 8's, in PyAV, makes only a 0 delay 10)."""
    times, at = [0.0], Fraction(0)
    for before, after in zip(stamps, stamps[1:]):
        at += Fraction(shown_ms((after - before) * time_base * 1000), 1000)
        times.append(round(float(at), 6))
    return tuple(times[:len(stamps)])
