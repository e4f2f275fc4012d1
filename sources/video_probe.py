"""What planning needs to know about one file (`probe`): the frames a player shows, that the
first and last decode (a cut file's count stops at its first frame that does not), its shape,
rate, orientation and what makes decord read it differently. Part of `sources.video_decode`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Sequence

from sources.video_gif import gif_times
from sources.video_index import RAW, Stretch, VideoIndex, decode_plan, key_of
from sources.video_memory import (DECODER_BASE_MB, DEFAULT_MAX_PIXELS, DEFAULT_MEMORY_MB, RGB_CONVERSION_BYTES,
                                  stream_hdr)
from sources.video_alpha import decoded_format
from sources.video_open import VideoError
from sources.video_index_cache import KeptIndex
from sources.video_packet_order import keep_counted, kept_index, read_index
from sources.video_session import DecodeSession


INTERLACED_FIELD_ORDERS = (2, 3, 4, 5)  # AVFieldOrder: TT, BB, TB, BT (0 unknown, 1 progressive)


@dataclass(frozen=True)
class Probe:
    """What planning needs to know about one file."""

    n_frames: int  # presented frames that decode
    packets: int  # what the demuxer holds (more than n_frames with an edit list or a cut tail)
    claimed: int  # the container's frame count (0: none stored), often wrong for cut files
    times: tuple[float, ...]  # presentation time of each frame, seconds from the first
    width: int  # display orientation
    height: int
    fps: float
    container: str
    codec: str
    keyframes: int
    hidden: int  # packets decoded, never shown (edit list; before the first key frame; an MPEG-4 VOP not
    # coded, `VideoIndex.not_coded`), a cut's partial one not
    rotation: int  # degrees counterclockwise applied to show the frame
    mirrored: bool  # mirrored left-right before the rotation
    pixel_format: str
    full_size_fits: bool = True  # full-size RGB frames fit the memory budget (decord needs them)
    sample_aspect_ratio: str = ""  # "num:den" when not 1:1 ("" for square pixels)
    sar_applied: bool = False  # False for a ratio outside SAR_LIMITS (frames keep their coded shape)
    reordered: bool = False  # frames are shown in another order than decoded (by their stamps)
    open_gop: bool = False  # a frame after a key frame (decode order) is shown before it
    decode_order_stamps: bool = False  # stamps count packets in decode order; frames named by output order
    hdr: str = ""  # "pq" or "hlg": an HDR transfer declared, frames tone-mapped to SDR ("": SDR)
    video_streams: int = 1  # video streams in the file, cover art included (decord picks its own)
    interlaced: bool = False  # frames coded as two fields (declared, or a probed frame flagged so)
    size_changes: bool = False  # the probed frames are not all one size (clips joined by a stream copy)
    cropped_left: bool = False  # a left crop off alignment (decord shows the columns it hides)
    matrix_guessed: str = ""  # "bt709": untagged HD, converted as players show it (`guessed_matrix`)
    restamped: str = ""  # "joined" (MPEG-TS/PS parts joined end to end), "jumped" (an MPEG-TS/PS clock
    # jumping forward over 10 s, closed), "negative" (Matroska before zero), "split" (MPEG-TS/PS
    # packets the parser left unstamped), "chained" (chained Ogg Theora)
    # the index, where building it decoded frames (`restamped: split`), for the clips' decoding
    # process to keep instead of decoding the file for it again (`video_packet_order.keep_index`)
    kept_index: KeptIndex | None = field(default=None, compare=False, repr=False)
    # H.264 key frames that are recovery points decoding whole only pictures later (x264's periodic
    # intra refresh: `VideoIndex.recovery`); decord, seeking to one, names later frames as its own
    gradual_refresh: int = 0


def probe(uri: str, max_pixels: int = DEFAULT_MAX_PIXELS, memory_mb: int = DEFAULT_MEMORY_MB) -> Probe:
    """Count the frames a player shows and check the first and last of them decode.

    When the last does not (a cut file), the key frame stretches are tried from the end until
    one decodes, and the count stops at its first frame that does not. The stream's declared
    size is judged first (`judge_memory`, without conversion: no frame is converted here).
    """
    index = read_index(uri, max_pixels, memory_mb)
    shown = index.presented
    if not shown:
        raise VideoError("too_few_frames", "no frames")
    n = len(shown)
    declared: list[_Declared] = []  # read at the first decoding session's open, not by opening again

    def read_declared(container, stream) -> None:
        declared.append(_declared(container, stream, index))

    if index.decode_order_stamps:  # named by output order: count what a whole decode gives
        session = DecodeSession(uri, index, {p: i for i, p in enumerate(shown)}, None, False, 1 << 62, max_pixels,
                           memory_mb, convert=False, on_open=read_declared)
        ends = _shapes(session, decode_plan(index, list(range(n))))
        # every frame counts, those after outputs the decoder dropped without a word too (their clips
        # are rejects where the clips are decoded, `DecodeSession.outputs_named`): counted as what
        # the decoder gives, every later frame took the name of one shown after it
        keep_counted(uri, max_pixels, memory_mb, replace(index, outputs_named=session.outputs_named()))
        n = session.frames_given()  # fewer where pictures went only before the first output or at the end
        if 0 not in ends:
            raise session.too_large or VideoError("decode_failed", "the first frame does not decode")
    else:
        starts = key_of(index)
        session = DecodeSession(uri, index, {shown[0]: 0, shown[n - 1]: n - 1}, None, True, 1 << 62, max_pixels,
                           memory_mb, convert=False, on_open=read_declared)
        ends = _shapes(session, decode_plan(index, [0, n - 1], starts))
        if 0 not in ends:
            raise session.too_large or VideoError("decode_failed", "the first frame does not decode")
        if n - 1 not in ends and session.too_large is None:  # grown past max_pixels: its clips are rejects
            n = _decodable_count(uri, index, starts, max_pixels, memory_mb)
    height, width = ends[0]
    # first and last (or every) frame: not one size; or a size past max_pixels the decoder refused
    size_changes = len(set(ends.values())) > 1 or session.too_large is not None
    judged = session.judgement
    full_size_fits = judged is not None and (judged.decoder_bytes + judged.width * judged.height * (
        RGB_CONVERSION_BYTES + 3)) <= (memory_mb - DECODER_BASE_MB) << 20
    (stated,) = declared  # the session opened the file before it raised or gave a frame
    rate = _declared_rate(stated, index, shown[:n])
    fps = float(rate) if rate else 0.0
    interlaced = session.interlaced or stated.field_order in INTERLACED_FIELD_ORDERS
    turns, mirrored = session.orientation or (0, False)
    base, num, den = shown[0], index.time_base.numerator, index.time_base.denominator
    times = tuple(round((p - base) * num / den, 6) for p in shown[:n])  # = float(Fraction): exactly rounded
    if index.codec == "gif":  # delays of 0 and 1 centiseconds shown for 10, as browsers do
        times = gif_times(shown[:n], index.time_base)
        fps = (n - 1) / times[-1] if n > 1 and times[-1] > 0 else fps
    return Probe(n, len(index.pts), stated.claimed, times, width, height, fps, index.container, index.codec,
                 sum(index.keyframe), sum(index.discard) - index.partial, 90 * turns, mirrored, stated.pixel_format,
                 full_size_fits, stated.sar_text,
                 session.sar is not None, index.reordered, index.open_gop, index.decode_order_stamps, stated.transfer,
                 stated.video_streams, interlaced, size_changes, session.cropped_left,
                 session.matrix_guessed, index.restamped, kept_index(uri, max_pixels, memory_mb),
                 gradual_refresh=len(index.recovery))


@dataclass(frozen=True)
class _Declared:
    """What the video stream declares, as the probe reports it."""

    claimed: int  # its frame count (0: none stored)
    sar_text: str  # "num:den" when not 1:1
    pixel_format: str
    transfer: str  # "pq", "hlg" or ""
    average_rate: Fraction | None
    time_base: Fraction | None
    guessed_rate: Fraction | None
    video_streams: int
    field_order: int


def _declared(container, stream, index: VideoIndex) -> _Declared:
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    return _Declared(int(stream.frames or 0), f"{sar.numerator}:{sar.denominator}" if sar and sar != 1 else "",
                     decoded_format(stream, index.alpha) or "", stream_hdr(stream) or "", stream.average_rate,
                     stream.time_base, stream.guessed_rate, len(container.streams.video),
                     stream.codec_context.field_order)


def _declared_rate(stream: _Declared, index: VideoIndex, shown: Sequence[int]) -> Fraction | None:
    """The stream's frame rate: its declared average, else the mean over the frames shown. A raw
    elementary stream's is the rate its index stamps by (`video_index.raw_stream_rate`: the
    demuxer's average is its assumed 25 whatever the stream declares); an average that is the time
    base's own rate with frames two ticks apart or more (raw DV: 60000 fps at a 1/60000 time base,
    frames 2400 ticks apart) is no frame rate, so the mean is taken."""
    if index.restamped == RAW:
        return 1 / index.time_base
    rate = stream.average_rate
    mean = _mean_rate(shown, index.time_base)
    if rate and stream.time_base and rate == 1 / stream.time_base and mean is not None and mean * 2 <= rate:
        rate = None
    return rate or mean or stream.guessed_rate


def _mean_rate(stamps: Sequence[int], time_base: Fraction) -> Fraction | None:
    """Frames a second over the frames shown (their stamps, in order): the rate of a stream that
    declares no average (a WebM recorded live, as browsers' MediaRecorder writes it: no duration),
    whose guessed rate is its time base's where frames come 31-35 ms apart (1000 fps, a "1k tbr"
    in the CLI's words). None for fewer than two frames."""
    span = (stamps[-1] - stamps[0]) * time_base if len(stamps) > 1 else 0
    return (len(stamps) - 1) / span if span > 0 else None


def _shapes(session: DecodeSession, plan: list[Stretch]) -> dict[int, tuple[int, int]]:
    """Each delivered frame's display (height, width); a stream grown past `max_pixels` whose
    frames are named by output order ends there (`session.too_large`), the frames before kept."""
    ends = {}
    try:
        for i, shape in session.run(plan):
            ends[i] = shape
    except VideoError as exc:
        if exc is not session.too_large:
            raise
    return ends


def decode_frames_indexed(uri: str, index: VideoIndex, wanted: Sequence[int], starts: list[int],
                          max_pixels: int = DEFAULT_MAX_PIXELS, memory_mb: int = DEFAULT_MEMORY_MB):
    """(presented index, display (height, width)) of each wanted frame that decodes; no conversion."""
    shown = index.presented
    session = DecodeSession(uri, index, {shown[w]: w for w in wanted}, None, True, 1 << 62, max_pixels, memory_mb,
                       convert=False)
    yield from session.run(decode_plan(index, list(wanted), starts))


def _decodable_count(uri: str, index: VideoIndex, starts: list[int], max_pixels: int = DEFAULT_MAX_PIXELS,
                     memory_mb: int = DEFAULT_MEMORY_MB) -> int:
    """How many presented frames decode, searching key frame stretches from the end."""
    by_start: dict[int, list[int]] = {}
    for i, s in enumerate(starts):
        by_start.setdefault(s, []).append(i)
    for start in sorted(by_start, reverse=True):
        frames = by_start[start]
        got = {i for i, _ in decode_frames_indexed(uri, index, frames, starts, max_pixels, memory_mb)}
        if got:
            first_missing = next((i for i in frames if i not in got), frames[-1] + 1)
            return first_missing
    return 0
