"""Decode exactly the presented frames a plan wants, once per file, touching as little as possible.

Runs inside the budget worker (`sources.budget`), so these are plain functions of picklable
arguments. The PyAV engine demuxes the file in order and sends the decoder only the packet
stretches that `video_index.decode_plan` says the wanted frames need; within a stretch, frames
nobody wants are skipped by the decoder when nothing references them (`skip_frame=NONREF`).
Long gaps between stretches are jumped with a container seek, checked against the index
(MPEG-TS/PS seeks land late or early) and retried earlier, or replaced by reading on.

Frames are named by time stamp through the index, so a frame is never taken for another; a
frame is returned in display orientation (the stream's rotation applied, as players do).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from sources import fsio
from sources.video_index import Stretch, UnsupportedVideo, VideoIndex, build_index, decode_plan, key_of
from transforms.errors import Rejected, exception_detail

log = logging.getLogger(__name__)

SEEK_BYTES = 8 << 20  # a gap holding more packet bytes than this is seeked over rather than read


class VideoError(Rejected):
    """A video that cannot be opened or decoded."""


def _quiet() -> None:
    import av.logging

    av.logging.set_level(av.logging.FATAL)


def open_stream(uri: str):
    import av

    _quiet()
    try:
        container = av.open(fsio.local_path(uri) or fsio.open_file(uri))
    except Exception as exc:
        raise VideoError("unreadable", exception_detail(exc)) from None
    if not container.streams.video:
        container.close()
        raise VideoError("no_video_stream")
    stream = container.streams.video[0]
    stream.thread_type = "NONE"  # skip_frame is switched per packet: it must apply to that packet
    return container, stream


def read_index(uri: str) -> VideoIndex:
    container, stream = open_stream(uri)
    try:
        return build_index(container, stream)
    except UnsupportedVideo as exc:
        raise VideoError(exc.reason, exc.detail) from None
    finally:
        container.close()


_REFORMATTER = None
# the display matrix's 2x2 part (signs of a, b, c, d) -> (quarter turns counterclockwise, mirror
# first), as the ffmpeg CLI shows such frames (checked by tests/test_video_zoo.py)
_ORIENTATIONS = {
    (1, 0, 0, 1): (0, False), (0, 1, -1, 0): (3, False), (-1, 0, 0, -1): (2, False), (0, -1, 1, 0): (1, False),
    (-1, 0, 0, 1): (0, True), (1, 0, 0, -1): (2, True), (0, 1, 1, 0): (1, True), (0, -1, -1, 0): (3, True),
}


def orientation(frame) -> tuple[int, bool]:
    """(quarter turns, mirrored) that take a decoded frame to what a player shows."""
    matrix = frame.side_data.get("DISPLAYMATRIX")
    if matrix is None:
        return 0, False
    m = np.frombuffer(bytes(matrix), dtype="<i4")
    key = tuple(int(np.sign(v)) for v in (m[0], m[1], m[3], m[4]))
    if key not in _ORIENTATIONS:
        raise VideoError("unsupported_container", f"display matrix {m[:2].tolist() + m[3:5].tolist()} is not a "
                         "quarter turn or mirror")
    return _ORIENTATIONS[key]


def display(frame) -> np.ndarray:
    """RGB pixels as a player shows them: the display matrix's rotation and mirroring applied.

    One reformatter serves every frame: it keeps its scaler context between frames of the same
    shape, where `frame.to_ndarray(format=...)` sets one up per frame (most of its cost)."""
    global _REFORMATTER
    if _REFORMATTER is None:
        from av.video.reformatter import VideoReformatter

        _REFORMATTER = VideoReformatter()
    rgb = _REFORMATTER.reformat(frame, format="rgb24").to_ndarray()
    turns, mirrored = orientation(frame)
    if mirrored:
        rgb = rgb[:, ::-1]
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns or mirrored else rgb


@dataclass
class _Session:
    """One decoding pass over one file."""

    uri: str
    index: VideoIndex
    wanted: dict[int, int]  # pts -> presented index, still to deliver
    postprocess: Callable[[np.ndarray], np.ndarray] | None
    skip_nonref: bool
    seek_bytes: int
    _container: object = None
    orientation: tuple[int, bool] = (0, False)  # of the last frame delivered

    def run(self, plan: list[Stretch]) -> Iterator[tuple[int, np.ndarray]]:
        self._container, stream = open_stream(self.uri)
        try:
            yield from self._run(stream, plan)
        finally:
            self._container.close()

    def _deliver(self, frames, trust: dict[int, int | None]) -> Iterator[tuple[int, np.ndarray]]:
        for frame in frames:
            pts = frame.pts
            w = self.wanted.get(pts)
            if w is None:
                continue
            floor = trust.get(pts)
            if floor is not None and pts < floor:
                continue  # a leading frame whose references were skipped: not trusted
            del self.wanted[pts]
            self.orientation = orientation(frame)
            pixels = display(frame)
            yield w, self.postprocess(pixels) if self.postprocess else pixels

    def _run(self, stream, plan: list[Stretch]) -> Iterator[tuple[int, np.ndarray]]:
        index, codec = self.index, stream.codec_context
        packets = self._container.demux(stream)
        position = -1
        trust: dict[int, int | None] = {}
        seeked = False  # after a seek, packets are matched to the index by time stamp
        position_of = {p: i for i, p in enumerate(index.pts)}
        for stretch in plan:
            if not self.wanted:
                break
            if position + 1 < stretch.first and sum(index.size[position + 1:stretch.first]) > self.seek_bytes:
                yield from self._deliver(codec.decode(None), trust)  # drain before the decoder is reset
                codec.flush_buffers()
                landed = self._seek(stream, stretch.first)
                if landed is None:
                    packets, position, stream, codec = self._reopen()
                else:
                    packets, position = landed
                    seeked = True
            while position < stretch.last:
                packet = next(packets, None)
                if packet is None:
                    break
                if packet.size == 0 or packet.pts is None:
                    continue
                at = position_of.get(packet.pts)
                if at is not None and index.size[at] != packet.size:
                    at = None  # same time stamp, other bytes: after a seek, MPEG-PS can misplace stamps
                if at != position + 1:
                    if not seeked:
                        raise VideoError("decode_failed",
                                         f"packet {position + 1} differs from the index (pts {packet.pts})")
                    if at is not None and at < stretch.first:
                        position = at  # still before the stretch: follow the demuxer
                        continue
                    if position + 1 < stretch.first and at is None:
                        continue
                    # the demuxer resumed in a way the index cannot follow: read from the start
                    yield from self._deliver(codec.decode(None), trust)
                    packets, position, stream, codec = self._reopen()
                    seeked = False
                    continue
                position = at
                if position < stretch.first:
                    continue
                trust[packet.pts] = stretch.trusted_from
                if self.skip_nonref:
                    codec.skip_frame = "DEFAULT" if packet.pts in self.wanted else "NONREF"
                try:
                    frames = codec.decode(packet)
                except Exception as exc:  # a damaged packet: its frame (and dependants) will be missing
                    log.debug("decode error at packet %d: %s", position, exc)
                    continue
                yield from self._deliver(frames, trust)
        if self.wanted:
            codec.skip_frame = "DEFAULT"
            try:
                yield from self._deliver(codec.decode(None), trust)
            except Exception as exc:
                log.debug("flush error: %s", exc)

    def _reopen(self):
        """Start over from the beginning of the file, without seeking from here on."""
        self._container.close()
        self._container, stream = open_stream(self.uri)
        self.seek_bytes = 1 << 62
        return self._container.demux(stream), -1, stream, stream.codec_context

    def _seek(self, stream, target: int):
        """Seek so that reading resumes at or before packet `target`, checked against the index
        (MPEG-TS/PS seeks can land after it: then retry from earlier key frames). Returns the packet
        iterator and the position before its first packet, or None when no attempt lands."""
        index = self.index
        position_of = {p: i for i, p in enumerate(index.pts)}
        keys = [i for i, k in enumerate(index.keyframe) if k and i <= target]
        for attempt in range(3):
            key = keys[max(0, len(keys) - 1 - 2 * attempt)]
            try:
                self._container.seek(index.pts[key], stream=stream, backward=True, any_frame=False)
            except Exception as exc:
                log.debug("seek failed: %s", exc)
                return None
            packets = self._container.demux(stream)
            for packet in packets:
                if packet.size and packet.pts in position_of and index.size[position_of[packet.pts]] == packet.size:
                    at = position_of[packet.pts]
                    if at <= target:
                        return _prepend(packet, packets), at - 1
                    break
        return None


def _prepend(first, rest):
    yield first
    yield from rest


def decode_frames(uri: str, wanted: Sequence[int], expected_frames: int | None = None,
                  postprocess: Callable[[np.ndarray], np.ndarray] | None = None, skip_nonref: bool = True,
                  seek_bytes: int = SEEK_BYTES) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (presented index, RGB frame) for every index in `wanted`, in decoding order.

    `expected_frames`: the count the file was planned with; a file that changed since is refused.
    Frames that do not decode are simply not yielded: the caller names what is missing.
    """
    index = read_index(uri)
    shown = index.presented
    if expected_frames is not None and len(shown) < expected_frames:
        raise VideoError("changed_file", f"{len(shown)} frames now, {expected_frames} when planned")
    wanted = sorted(set(wanted))
    if wanted and (wanted[0] < 0 or wanted[-1] >= len(shown)):
        raise VideoError("decode_failed", f"frame {wanted[-1]} is past the last of {len(shown)}")
    session = _Session(uri, index, {shown[w]: w for w in wanted}, postprocess, skip_nonref, seek_bytes)
    yield from session.run(decode_plan(index, wanted))


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
    hidden: int  # packets decoded but never shown (edit list; before the first key frame)
    rotation: int  # degrees counterclockwise applied to show the frame
    mirrored: bool  # mirrored left-right before the rotation
    pixel_format: str


def probe(uri: str) -> Probe:
    """Count the frames a player shows and check the first and last of them decode.

    When the last does not (a cut file), the key frame stretches are tried from the end until
    one decodes, and the count stops at its first frame that does not.
    """
    index = read_index(uri)
    shown = index.presented
    if not shown:
        raise VideoError("too_few_frames", "no frames")
    starts = key_of(index)
    n = len(shown)
    session = _Session(uri, index, {shown[0]: 0, shown[n - 1]: n - 1}, None, True, 1 << 62)
    ends = dict(session.run(decode_plan(index, [0, n - 1], starts)))
    if 0 not in ends:
        raise VideoError("decode_failed", "the first frame does not decode")
    if n - 1 not in ends:
        n = _decodable_count(uri, index, starts)
    first = ends[0]
    container, stream = open_stream(uri)
    claimed = int(stream.frames or 0)
    pixel_format = stream.codec_context.format.name if stream.codec_context.format else ""
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    container.close()
    turns, mirrored = session.orientation
    base = shown[0]
    times = tuple(round(float((p - base) * index.time_base), 6) for p in shown[:n])
    return Probe(n, len(index.pts), claimed, times, first.shape[1], first.shape[0], fps, index.container, index.codec,
                 sum(index.keyframe), sum(index.discard), 90 * turns, mirrored, pixel_format)


def decode_frames_indexed(uri: str, index: VideoIndex, wanted: Sequence[int], starts: list[int]):
    shown = index.presented
    session = _Session(uri, index, {shown[w]: w for w in wanted}, None, True, 1 << 62)
    yield from session.run(decode_plan(index, list(wanted), starts))


def _decodable_count(uri: str, index: VideoIndex, starts: list[int]) -> int:
    """How many presented frames decode, searching key frame stretches from the end."""
    by_start: dict[int, list[int]] = {}
    for i, s in enumerate(starts):
        by_start.setdefault(s, []).append(i)
    for start in sorted(by_start, reverse=True):
        frames = by_start[start]
        got = {i for i, _ in decode_frames_indexed(uri, index, frames, starts)}
        if got:
            first_missing = next((i for i in frames if i not in got), frames[-1] + 1)
            return first_missing
    return 0


# -- decord --------------------------------------------------------------------------------
def decord_frames(uri: str, wanted: Sequence[int], expected_frames: int,
                  postprocess: Callable[[np.ndarray], np.ndarray] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """The same frames through decord, for files `decord_exact` admits."""
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    try:
        reader = decord.VideoReader(fsio.local_path(uri) or fsio.open_file(uri), ctx=decord.cpu(0), num_threads=1)
    except Exception as exc:
        raise VideoError("unreadable", exception_detail(exc)) from None
    if len(reader) != expected_frames:
        raise VideoError("changed_file", f"decord counts {len(reader)} frames, planned with {expected_frames}")
    order = sorted(set(wanted))
    for start in range(0, len(order), 32):  # bounded memory: a batch at a time
        chunk = order[start:start + 32]
        try:
            batch = reader.get_batch(chunk).asnumpy()
        except Exception as exc:
            raise VideoError("decode_failed", exception_detail(exc)) from None
        for i, pixels in zip(chunk, batch):
            yield i, postprocess(pixels) if postprocess else pixels


# containers and codecs where decord's frame i is the presented frame i (checked by the zoo tests);
# elsewhere (MPEG-TS/PS, HEVC, edit lists, rotation, cut files) PyAV decodes instead
DECORD_CONTAINERS = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi")
DECORD_CODECS = ("h264", "vp8", "vp9", "mjpeg", "mpeg4", "prores")
DECORD_PIXEL_FORMATS = ("yuv420p", "yuvj420p")  # decord converts others (10-bit, 4:4:4) differently


def decord_exact(probe: Probe) -> str | None:
    """None when decord reads this file exactly, else why not."""
    if probe.container not in DECORD_CONTAINERS:
        return f"container {probe.container}"
    if probe.codec not in DECORD_CODECS:
        return f"codec {probe.codec}"
    if probe.pixel_format not in DECORD_PIXEL_FORMATS:
        return f"pixel format {probe.pixel_format}"
    if probe.hidden:
        return "edit list or a stream cut mid-GOP"
    if probe.rotation or probe.mirrored:
        return "display rotation"
    if probe.packets != probe.n_frames or probe.claimed not in (0, probe.n_frames):
        return "cut file"
    return None
