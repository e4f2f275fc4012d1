"""A folder of videos: the real bundled clips, re-encodings into other containers and codecs,
clips too short for a stride (or for any sentence), truncated files and a non-video.

Encoders run single-threaded with bit-exact flags so the corpus has the same bytes on every run.
x264 runs its portable C code (`no-asm`): its AVX-512 assembly reads uninitialised memory on frames
whose height is not a multiple of 16 (`bikes` at half size is 320x136), so its output changed with
whatever the heap held before; and its assembly rounds some floats (macroblock-tree costs)
differently from the C code, so bytes would also depend on the CPU's instruction sets.
VP8 gets a negative `cpu-used`: in realtime mode a positive one lets libvpx pick its speed from how
long the last frames took to encode (`vp8_auto_select_speed`), so a busy machine wrote other bytes.
"""

from __future__ import annotations

import os
import shutil
from typing import Sequence

import cv2
import numpy as np

from uvd_pipeline.sample import media

BITEXACT = {"fflags": "+bitexact"}


def encode(path: str, frames: Sequence[np.ndarray], codec: str, rate: int = 25, container_options=None,
           codec_options=None, pix_fmt: str = "yuv420p") -> None:
    """Write `frames` (RGB uint8) with PyAV, deterministically."""
    import av

    options = dict(BITEXACT)
    options.update(container_options or {})
    with av.open(path, "w", options=options) as out:
        stream = out.add_stream(codec, rate=rate, options={"threads": "1", **(codec_options or {})})
        h, w = frames[0].shape[:2]
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.thread_type = "NONE"
        for arr in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _all_frames(name: str, scale: float = 1.0, limit: int | None = None) -> list[np.ndarray]:
    frames = list(media.clip_frames(name, limit or 10_000))
    if scale != 1.0:
        h, w = frames[0].shape[:2]
        size = (int(w * scale) // 2 * 2, int(h * scale) // 2 * 2)
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
    return frames


X264 = {"preset": "veryfast", "crf": "26", "flags": "+bitexact", "x264-params": "no-asm=1"}
VPX = {"deadline": "realtime", "cpu-used": "8", "crf": "36", "b": "0", "flags": "+bitexact"}
# VP8 realtime: a negative cpu-used is a fixed speed; a positive one is re-chosen from frame timings
VP8 = {**VPX, "cpu-used": "-8"}
MJPEG = {"q:v": "5", "flags": "+bitexact"}


def _truncate(src: str, dst: str, fraction: float) -> None:
    with open(src, "rb") as handle:
        data = handle.read()
    with open(dst, "wb") as handle:
        handle.write(data[: int(len(data) * fraction)])


def write(root: str, seed: int = 0) -> dict:
    os.makedirs(root, exist_ok=True)
    notes: dict[str, str] = {}
    for name in ("bigbuckbunny", "bikes", "carphone"):
        shutil.copyfile(media.clip_path(name), os.path.join(root, f"{name}.mp4"))
        notes[f"{name}.mp4"] = "real clip as shipped (mp4/H.264)"
    bikes = _all_frames("bikes", 0.5)
    encode(os.path.join(root, "bikes_h264.mkv"), bikes, "libx264", codec_options=X264)
    notes["bikes_h264.mkv"] = "bikes re-encoded: Matroska/H.264, no frame count in the container"
    carphone = _all_frames("carphone")
    encode(os.path.join(root, "carphone_vp9.webm"), carphone, "libvpx-vp9", rate=30, codec_options=VPX)
    notes["carphone_vp9.webm"] = "carphone re-encoded: WebM/VP9"
    bunny = _all_frames("bigbuckbunny", 0.25)
    encode(os.path.join(root, "bunny_mjpeg.avi"), bunny, "mjpeg", codec_options=MJPEG, pix_fmt="yuvj420p")
    notes["bunny_mjpeg.avi"] = "bigbuckbunny re-encoded: AVI/MJPEG"
    encode(os.path.join(root, "carphone_gop4.mp4"), carphone, "libx264", rate=30,
           container_options={"movflags": "+faststart"}, codec_options={**X264, "g": "4", "bf": "2"})
    notes["carphone_gop4.mp4"] = "mp4/H.264, key frame every 4 frames, B-frames"
    encode(os.path.join(root, "short_10f.mp4"), carphone[:10], "libx264", rate=30, codec_options=X264)
    notes["short_10f.mp4"] = "10 frames: fewer than 16, rejected"
    encode(os.path.join(root, "short_20f.webm"), bikes[:20], "libvpx", codec_options=VP8)
    notes["short_20f.webm"] = "20 frames, WebM/VP8: every stride reduces to 1"
    encode(os.path.join(root, "clip_40f.avi"), bunny[:40], "mjpeg", codec_options=MJPEG, pix_fmt="yuvj420p")
    notes["clip_40f.avi"] = "40 frames, AVI/MJPEG: every stride reduces to 2"
    _truncate(os.path.join(root, "bikes_h264.mkv"), os.path.join(root, "truncated_bikes.mkv"), 0.55)
    notes["truncated_bikes.mkv"] = "bikes_h264.mkv cut at 55%: fewer real frames than the stream had"
    _truncate(os.path.join(root, "carphone_gop4.mp4"), os.path.join(root, "truncated_faststart.mp4"), 0.6)
    notes["truncated_faststart.mp4"] = "mp4 with its index first, cut at 60%: the index claims frames that are gone"
    with open(os.path.join(root, "not_a_video.mp4"), "wb") as handle:
        handle.write(b"this is a text file named like a video\n" * 10)
    notes["not_a_video.mp4"] = "text, rejected as unreadable"
    return {"files": len(notes), "notes": notes}
