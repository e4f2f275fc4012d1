"""Video clips as 16-frame sentences at fixed strides.

Planning (here, at read time) opens each file once, finds its *real* frame count and which
decoder can read it, and yields one `VideoClipRecord` per (clip, stride, start). Decoding the
chosen frames happens later in the render stage, by seeking, never by decoding the whole clip.

The paper's rule: 16 frames at stride s span 15*s + 1 frames. A clip too short for s samples at
the reduced stride (T - 1) // 15 instead; a clip with fewer than 16 decodable frames is rejected,
never padded. Strides that reduce to the same value give one sentence, not duplicates.

Real frame counts: container metadata is often wrong (webm and mkv carry none, truncated files
claim frames they lost). We count demuxed packets (cheap: no decoding) and then confirm that
the last frame actually decodes, searching back by bisection when it does not.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from typing import Iterator, Literal, Sequence

import numpy as np

from sources import fsio
from sources.records import Reject, SourceItem, VideoClipRecord, safe_key

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".ogv")
DecoderChoice = Literal["auto", "decord", "pyav"]
PAPER_STRIDES = (10, 20, 30)


class VideoError(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# -- planning (pure) -----------------------------------------------------------------------
@dataclass(frozen=True)
class ClipPlan:
    stride: int  # the stride actually used
    requested_stride: int
    start: int
    indices: tuple[int, ...]


def plan_clips(
    n_frames: int,
    strides: Sequence[int],
    frames: int = 16,
    max_windows_per_stride: int | None = None,
) -> list[ClipPlan]:
    """Every (stride, start) sentence of a clip with `n_frames` frames; [] if it is too short.

    Windows at one stride do not overlap: starts are 0, span, 2*span, ... where
    span = (frames - 1) * stride + 1.
    """
    if n_frames < frames:
        return []
    plans: dict[tuple[int, int], ClipPlan] = {}
    for requested in strides:
        stride = requested
        if (frames - 1) * stride + 1 > n_frames:
            stride = (n_frames - 1) // (frames - 1)
        span = (frames - 1) * stride + 1
        starts = range(0, n_frames - span + 1, span)
        if max_windows_per_stride is not None:
            starts = starts[:max_windows_per_stride]
        for start in starts:
            if (stride, start) not in plans:
                indices = tuple(range(start, start + span, stride))
                plans[(stride, start)] = ClipPlan(stride, requested, start, indices)
    return sorted(plans.values(), key=lambda p: (p.stride, p.start))


# -- decoders ------------------------------------------------------------------------------
def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except Exception:
        return False
    return True


def _quiet_ffmpeg() -> None:
    """FFmpeg prints every demux error of a broken file; we turn those into reject reasons."""
    import av.logging

    av.logging.set_level(av.logging.FATAL)
    if decord_available():
        import decord

        decord.logging.set_level(decord.logging.QUIET)


def _open_target(uri: str):
    """A local path when possible (fast seeks), else an open fsspec file object."""
    return fsio.local_path(uri) or fsio.open_file(uri)


class PyAVReader:
    """Frame-accurate random access with PyAV: seek to the key frame before a target, decode forward."""

    def __init__(self, uri: str) -> None:
        import av

        _quiet_ffmpeg()
        try:
            self._container = av.open(_open_target(uri))
        except Exception as exc:
            raise VideoError("unreadable", f"{type(exc).__name__}: {exc}"[:200]) from None
        if not self._container.streams.video:
            self._container.close()
            raise VideoError("no_video_stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "NONE"
        self.metadata_frames = int(self._stream.frames or 0)
        self._pts, self._keyframes = self._index()

    def _index(self) -> tuple[list[int], list[int]]:
        """Presentation timestamps of every packet (sorted) and of key frames, by demuxing only."""
        pts: list[int] = []
        keys: list[int] = []
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
        except Exception as exc:  # truncated files end the index early, which is what we want
            log.debug("demux stopped early: %s", exc)
        pts.sort()
        keys.sort()
        return pts, keys

    def __len__(self) -> int:
        return len(self._pts)

    @property
    def fps(self) -> float:
        rate = self._stream.average_rate or self._stream.guessed_rate
        return float(rate) if rate else 0.0

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        targets = [self._pts[i] for i in indices]
        wanted = set(targets)
        found: dict[int, np.ndarray] = {}
        position: int | None = None
        for target in sorted(wanted):
            if target in found:
                continue
            k = bisect.bisect_right(self._keyframes, target) - 1
            keyframe = self._keyframes[k] if k >= 0 else (self._pts[0] if self._pts else 0)
            if position is None or not (keyframe <= position < target):
                self._container.seek(keyframe, stream=self._stream, backward=True, any_frame=False)
            position = self._decode_until(target, wanted, found)
        missing = [i for i, t in zip(indices, targets) if t not in found]
        if missing:
            raise VideoError("decode_failed", f"frames {missing[:4]} did not decode")
        return np.stack([found[t] for t in targets])

    def _decode_until(self, target: int, wanted: set[int], found: dict[int, np.ndarray]) -> int | None:
        last: int | None = None
        try:
            for packet in self._container.demux(self._stream):
                for frame in packet.decode():
                    if frame.pts is None:
                        continue
                    last = frame.pts
                    if frame.pts in wanted and frame.pts not in found:
                        found[frame.pts] = frame.to_ndarray(format="rgb24")
                    if frame.pts >= target:
                        return last
        except Exception as exc:
            log.debug("decode stopped: %s", exc)
        return last

    def close(self) -> None:
        self._container.close()


class DecordReader:
    def __init__(self, uri: str) -> None:
        import decord

        _quiet_ffmpeg()
        try:
            self._reader = decord.VideoReader(_open_target(uri), ctx=decord.cpu(0), num_threads=1)
        except Exception as exc:
            raise VideoError("unreadable", f"{type(exc).__name__}: {exc}"[:200]) from None
        self.metadata_frames = len(self._reader)

    def __len__(self) -> int:
        return len(self._reader)

    @property
    def fps(self) -> float:
        return float(self._reader.get_avg_fps())

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        try:
            frames = self._reader.get_batch(list(indices)).asnumpy()
        except Exception as exc:
            raise VideoError("decode_failed", f"{type(exc).__name__}: {exc}"[:200]) from None
        if frames.shape[0] != len(indices):
            raise VideoError("decode_failed", f"got {frames.shape[0]} of {len(indices)} frames")
        return frames

    def close(self) -> None:
        del self._reader


def open_reader(uri: str, decoder: str) -> PyAVReader | DecordReader:
    if decoder == "decord":
        return DecordReader(uri)
    if decoder == "pyav":
        return PyAVReader(uri)
    raise ValueError(f"unknown decoder {decoder!r}; allowed: decord, pyav")


def _decodes(reader: PyAVReader | DecordReader, index: int) -> bool:
    try:
        reader.get_frames([index])
    except VideoError:
        return False
    return True


def decodable_frame_count(reader: PyAVReader | DecordReader, upper: int) -> int:
    """The real number of decodable frames, given an upper bound from the demuxer.

    Checks the last frame; when it fails, bisects for the last decodable one (O(log n) seeks).
    """
    if upper <= 0:
        return 0
    if _decodes(reader, upper - 1):
        return upper
    lo, hi = 0, upper - 1  # frame lo-1 known good (or none), frame hi known bad
    if not _decodes(reader, 0):
        return 0
    lo = 1
    while lo < hi:
        mid = (lo + hi) // 2
        if _decodes(reader, mid):
            lo = mid + 1
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class VideoProbe:
    decoder: str
    n_frames: int  # decodable frames, what plans are made against
    metadata_frames: int  # what the container claimed
    fps: float


def probe_video(uri: str, decoder: DecoderChoice = "auto") -> VideoProbe:
    """Choose a decoder that reads `uri` and count its real frames."""
    choices = [decoder] if decoder != "auto" else (["decord", "pyav"] if decord_available() else ["pyav"])
    last_error = VideoError("unreadable")
    for choice in choices:
        try:
            reader = open_reader(uri, choice)
        except VideoError as exc:
            last_error = exc
            continue
        try:
            pyav_count = None
            if choice == "decord":
                # decord's length can come from container metadata; confirm it by demuxing.
                counter = PyAVReader(uri)
                pyav_count = len(counter)
                counter.close()
            upper = len(reader) if pyav_count is None else min(len(reader), pyav_count)
            n = decodable_frame_count(reader, upper)
            if n == 0 and choice != choices[-1]:
                continue
            return VideoProbe(choice, n, reader.metadata_frames, reader.fps)
        except VideoError as exc:
            last_error = exc
        finally:
            reader.close()
    raise last_error


@dataclass(frozen=True)
class VideoSource:
    name: str
    path: str
    strides: tuple[int, ...] = PAPER_STRIDES
    frames: int = 16
    max_windows_per_stride: int | None = None
    decoder: DecoderChoice = "auto"
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS

    def units(self) -> list[str]:
        if not fsio.exists(self.path):
            raise FileNotFoundError(f"{self.path} does not exist")
        if not fsio.isdir(self.path):
            return [self.path]
        files = fsio.list_files(self.path, self.extensions, recursive=True)
        if not files:
            raise FileNotFoundError(f"{self.name}: no videos ({', '.join(self.extensions)}) under {self.path}")
        return files

    def video_key(self, uri: str) -> str:
        root = self.path.rstrip("/")
        relative = uri[len(root) :].lstrip("/") if uri.startswith(root) else fsio.basename(uri)
        return safe_key(self.name, *(relative or fsio.basename(uri)).split("/"))

    def read(self, uri: str) -> Iterator[SourceItem]:
        video = self.video_key(uri)
        try:
            probe = probe_video(uri, self.decoder)
        except VideoError as exc:
            yield Reject(video, self.name, video, "plan", exc.reason, exc.detail)
            return
        plans = plan_clips(probe.n_frames, self.strides, self.frames, self.max_windows_per_stride)
        if not plans:
            yield Reject(video, self.name, video, "plan", "too_few_frames",
                         f"{probe.n_frames} decodable frames < {self.frames}")
            return
        lineage = {
            "file": fsio.basename(uri),
            "frames_total": probe.n_frames,
            "frames_metadata": probe.metadata_frames,
            "fps": round(probe.fps, 3),
        }
        for plan in plans:
            yield VideoClipRecord(
                key=f"{video}-s{plan.stride}-f{plan.start:06d}",
                source=self.name,
                group=video,
                uri=uri,
                frame_indices=plan.indices,
                stride=plan.stride,
                requested_stride=plan.requested_stride,
                start=plan.start,
                decoder=probe.decoder,
                lineage=dict(lineage),
            )


def read_clip_frames(record: VideoClipRecord) -> np.ndarray:
    """The record's frames as (N, H, W, 3) uint8 RGB, decoded by seeking."""
    reader = open_reader(record.uri, record.decoder)
    try:
        return reader.get_frames(record.frame_indices)
    finally:
        reader.close()
