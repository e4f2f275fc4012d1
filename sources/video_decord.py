"""Frames through decord, for the files whose frame i decord reads exactly as the presented frame
i (`decord_exact`, judged from the probe). Part of `sources.video_decode`."""

from __future__ import annotations

import logging
import os
from typing import Callable, Iterator, Sequence

import numpy as np

from sources import fsio
from sources.video_display import has_alpha
from sources.video_memory import DEFAULT_MAX_PIXELS, DEFAULT_MEMORY_MB
from sources.video_open import VideoError, _machine_error
from sources.video_probe import Probe
from transforms.errors import exception_detail


log = logging.getLogger(__name__)


class DecordFailed(VideoError):
    """decord could not decode a batch of frames (a damaged packet: "avcodec_send_packet" failed,
    in words naming no frame, with the time of day). Its detail names the batch's frames alone;
    the caller (`video.clip_frames`) has PyAV decode what the clips not yet finished need, which
    names the frames lost."""


def _frames_named(chunk: Sequence[int]) -> str:
    return f"frame {chunk[0]}" if len(chunk) == 1 else f"one of frames {chunk[0]}-{chunk[-1]}"


# -- decord --------------------------------------------------------------------------------
def decord_frames(uri: str, wanted: Sequence[int], expected_frames: int,
                  postprocess: Callable[[np.ndarray], np.ndarray] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                  memory_mb: int = DEFAULT_MEMORY_MB) -> Iterator[tuple[int, np.ndarray]]:
    """The same frames through decord, for files `decord_exact` admits (full-size frames within
    the memory budget, judged at the probe), in batches of at most `DECORD_BATCH_BYTES`; a batch
    decord cannot decode raises `DecordFailed`."""
    reader = _decord_reader(uri)
    if len(reader) != expected_frames:
        raise VideoError("changed_file", f"decord counts {len(reader)} frames, planned with {expected_frames}")
    order = sorted(set(wanted))
    start, batch_size = 0, 1  # the first frame alone: its size sets the batch
    while start < len(order):  # bounded memory: a batch at a time
        chunk = order[start:start + batch_size]
        start += len(chunk)
        try:
            batch = reader.get_batch(chunk).asnumpy()
        except Exception as exc:
            log.debug("decord could not decode frames %d-%d: %s", chunk[0], chunk[-1], exception_detail(exc))
            raise DecordFailed("decode_failed", _frames_named(chunk)) from None
        pixels_per_frame = batch.shape[1] * batch.shape[2]
        if pixels_per_frame > max_pixels:
            raise VideoError("video_too_large", f"{batch.shape[2]}x{batch.shape[1]}: frames of {pixels_per_frame} "
                                                f"pixels exceed max_pixels={max_pixels}")
        batch_size = max(1, min(32, DECORD_BATCH_BYTES // (pixels_per_frame * 3)))
        for i, pixels in zip(chunk, batch):
            yield i, postprocess(pixels) if postprocess else pixels


def _decord_reader(uri: str):
    """decord's reader of `uri` on one thread; VideoError("unreadable") where decord cannot open it
    (this machine's own errors, such as too many open files, raised as they are)."""
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    fsio.opening(uri)  # decord reads the path itself: its state as first read (`fsio.InputsRead.states`)
    try:
        return decord.VideoReader(fsio.local_path(uri) or fsio.open_file(uri), ctx=decord.cpu(0), num_threads=1)
    except Exception as exc:
        if _machine_error(exc):
            raise
        _raise_if_cannot_open(uri)
        raise VideoError("unreadable", exception_detail(exc)) from None


def decord_frame_count(uri: str) -> int:
    """How many frames decord counts in `uri`, opened as `decord_frames` opens it (run in decord's
    own process). VideoError("unreadable") where decord cannot open it: a WebM written live
    (browsers' MediaRecorder, `ffmpeg -live 1`) declares no duration nor frame count, and decord
    refuses it ("Failed to measure duration/frame-count due to broken metadata") where PyAV
    reads every frame."""
    reader = _decord_reader(uri)
    return len(reader)


def _raise_if_cannot_open(uri: str) -> None:
    """Raise the OSError of this machine (`DECODER_MACHINE_ERRNOS`) that opening `uri` meets now:
    decord's error names no errno ("Error reading x.mp4...", its log says "Too many open files"),
    and the file, probed by PyAV already, is read by PyAV's rules, so a process that cannot open
    it again has run out of descriptors, not the file of frames."""
    path = fsio.local_path(uri)
    if path is None:
        return
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as exc:
        if _machine_error(exc):
            raise


# containers and codecs where decord's frame i is the presented frame i (checked by the zoo tests);
# elsewhere (MPEG-TS/PS, HEVC, edit lists, rotation, cut files, open GOPs, H.264 intra refresh, AVI with H.264 or
# B-frames, interlaced frames, frame sizes that change, cover art beside the video, a left crop off
# alignment, an odd frame height) PyAV decodes instead
DECORD_CONTAINERS = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi")
DECORD_CODECS = ("h264", "vp8", "vp9", "mjpeg", "mpeg4", "prores")
DECORD_PIXEL_FORMATS = ("yuv420p", "yuvj420p")  # decord converts others (10-bit, 4:4:4) differently
DECORD_BATCH_BYTES = 64 << 20  # full-size RGB frames decord returns at once
FRAME_SIZE_CHANGES = "frame size changes mid-stream"


def decord_exact(probe: Probe) -> str | None:
    """None when decord reads this file exactly, else why not."""
    if probe.container not in DECORD_CONTAINERS:
        return f"container {probe.container}"
    if probe.codec not in DECORD_CODECS:
        return f"codec {probe.codec}"
    if has_alpha(probe.pixel_format):  # decord decodes with FFmpeg's own decoders, which drop a WebM's alpha
        return f"an alpha channel ({probe.pixel_format}), shown on white by PyAV"
    if probe.pixel_format not in DECORD_PIXEL_FORMATS:
        return f"pixel format {probe.pixel_format}"
    if probe.hdr:  # decord converts every frame as SDR
        return f"HDR transfer ({probe.hdr}), tone-mapped by PyAV"
    if probe.size_changes:  # decord stretches later frames to the first one's size (see `key_frame_sizes` too)
        return FRAME_SIZE_CHANGES
    if probe.interlaced:  # decord upsamples the chroma of both fields as one progressive frame
        return "interlaced frames (PyAV upsamples each field's chroma on its own)"
    if probe.matrix_guessed:  # decord's FFmpeg converts untagged frames as BT.601 whatever their size
        return "no colour matrix declared: HD converted as BT.709, as players show it (decord takes BT.601)"
    if probe.cropped_left:  # decord's FFmpeg keeps the columns and squashes them into the declared width
        return "cropped from the left off alignment (decord shows the columns the stream hides)"
    if probe.video_streams > 1:  # decord reads FFmpeg's best stream: it may be the cover
        return f"{probe.video_streams} video streams (cover art beside the video, say)"
    if probe.restamped:  # decord names frames by the demuxer's stamps: repeated, or missing
        return f"time stamps restamped ({probe.restamped})"
    if probe.hidden:
        return "edit list, a stream cut mid-GOP or MPEG-4 VOPs not coded"
    if probe.decode_order_stamps:
        return "time stamps in decode order from a decoder that reorders frames"
    if probe.gradual_refresh:  # decord's seek to one yields the picture completing it, named as the target
        return (f"{probe.gradual_refresh} key frames are recovery points decoding whole only pictures later "
                "(periodic intra refresh)")
    if probe.open_gop:  # decord's seeks then give frames of a neighbouring place (x264 open-gop, MPEG-4 ASP)
        return "open GOP (frames after a key frame shown before it)"
    if probe.container == "avi" and (probe.codec == "h264" or probe.reordered):
        return "H.264 or B-frames in AVI (decord's seeks there land on other frames)"
    if probe.rotation or probe.mirrored:
        return "display rotation"
    if probe.packets != probe.n_frames or probe.claimed not in (0, probe.n_frames):
        return "cut file"
    if not probe.full_size_fits:
        return "frames too large to convert at full size within the memory budget"
    if probe.sample_aspect_ratio:
        return "non-square pixels"
    if probe.height % 2:  # coded height here (no turn): swscale's scaling path, another FFmpeg's in decord
        return "odd frame height (decord's FFmpeg converts its 4:2:0 chroma differently)"
    return None
