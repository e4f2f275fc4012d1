"""Raw H.264/HEVC elementary streams cut the way the world cuts them: starting mid-GOP (a DVR/CCTV
export, a stream grabbed mid-way: parameter sets in front of a P/B picture; also copied into AVI) and
ending short (a partial download). Frames there are named by the decoder's output order; each kept
frame must be the ffmpeg CLI's frame at that index."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import video_zoo

from sources.video import VideoSource, clip_frames


def _cli(path: Path) -> np.ndarray:
    run = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vsync", "passthrough",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True)
    return np.frombuffer(run.stdout, np.uint8).reshape(-1, video_zoo.H, video_zoo.W, 3)


def _kept_equal_cli(path: Path) -> tuple[int, dict]:
    cli = _cli(path)
    (record,) = list(VideoSource("cut", str(path.parent), strides=(1,)).read(str(path)))
    results = {clip.start: frames for clip, frames in clip_frames(record)}
    for start, frames in results.items():
        assert not isinstance(frames, Exception), (start, frames)
        for i, frame in enumerate(frames):
            assert np.abs(frame.astype(int) - cli[start + i]).mean() < 1.0, (start + i)
    assert record.n_frames == len(cli)
    return record.n_frames, results


def _nal_units(data: bytes) -> list[tuple[int, int]]:
    starts = [m.start() for m in re.finditer(b"\x00\x00\x01", data)]
    starts = [s - 1 if s > 0 and data[s - 1] == 0 else s for s in starts]
    return list(zip(starts, starts[1:] + [len(data)]))


def _cut_mid_gop(src: Path, dst: Path, picture: int) -> Path:
    """The H.264 stream from its `picture`-th picture (decode order) on, SPS and PPS kept in front."""
    data = src.read_bytes()
    units = _nal_units(data)

    def header(a: int) -> int:
        return data[a + (3 if data[a + 2] == 1 else 4)]

    params = b"".join(data[a:e] for a, e in units[:8] if header(a) & 31 in (7, 8))
    pictures = [k for k, (a, e) in enumerate(units) if header(a) & 31 in (1, 5)
                and data[a + (4 if data[a + 2] == 1 else 5)] & 0x80]  # first_mb_in_slice 0
    dst.write_bytes(params + b"".join(data[a:e] for a, e in units[pictures[picture]:]))
    return dst


@pytest.mark.parametrize("ext", ["h264", "avi"])
def test_an_open_gop_stream_cut_mid_gop_keeps_every_clip_as_the_cli_shows_it(tmp_path, ext):
    """x264 open GOP starting at its 4th picture: the decoder drops a picture before its first
    output (37 packets, 36 outputs). That shifts no later name; a97f9ee counted 37 and, finding
    no output fell behind once begun, held back every frame: all clips decode_failed."""
    video_zoo.require_ffmpeg()
    src = video_zoo.encode(tmp_path / "_src.h264", 40, "libx264",
                           options={"g": "24", "bf": "3", "x264-params": "open-gop=1"})
    videos = tmp_path / "videos"
    videos.mkdir()
    path = _cut_mid_gop(src, videos / "cut.h264" if ext == "h264" else tmp_path / "_cut.h264", 3)
    if ext == "avi":
        path = videos / "cut.avi"
        video_zoo.ffmpeg("-r", "25", "-i", str(tmp_path / "_cut.h264"), "-c", "copy", str(path))
    n, results = _kept_equal_cli(path)
    assert results, n


def test_a_raw_hevc_stream_cut_short_keeps_its_clips_as_the_cli_shows_them(tmp_path):
    """A partial download: the last packet a partial access unit giving no output (raw demuxers
    never flag it short). That is a cut end, not damage: the frames are what came out."""
    video_zoo.require_ffmpeg()
    src = video_zoo.encode(tmp_path / "_src.hevc", 40, "libx265",
                           options={"x265-params": "keyint=24:open-gop=1:log-level=error"})
    videos = tmp_path / "videos"
    videos.mkdir()
    path = video_zoo.truncate(src, videos / "cut.hevc", 0.7)
    n, results = _kept_equal_cli(path)
    assert results and 16 <= n < 40, n


def _pictures(data: bytes) -> list[int]:
    """Where each picture's first slice NAL unit (first_mb_in_slice 0) starts, start code included."""
    units = _nal_units(data)

    def at(a: int, k: int) -> int:
        return data[a + (3 if data[a + 2] == 1 else 4) + k]

    return [a for a, e in units if at(a, 0) & 31 in (1, 5) and at(a, 1) & 0x80]


@pytest.mark.parametrize("bframes,picture", [("0", 17), ("3", 17), ("3", 22)])
def test_a_raw_h264_stream_cut_in_its_last_slice_header_counts_the_frames_the_cli_shows(tmp_path, bframes, picture):
    """`head -c` through the last picture's slice header (6 bytes of it: start code, NAL header,
    a bit of the header): the decoder refuses that packet ("decode_slice_header error", "Invalid
    data found"), and the CLI shows the frames before it alone. A sweep of such cuts of a 30-frame
    x264 stream (with B-frames: 1532, 1606, 2383, 2605 and 2642 bytes of 3325) counted one frame
    more than the CLI shows (9 for 8): the refused last packet was taken for damage, which counts
    every packet. A raw stream's last packet may be cut (a partial download): refused, it gives no
    frame, as in the CLI, and every frame decoded before it is whole (none references it)."""
    video_zoo.require_ffmpeg()
    src = tmp_path / "_src.h264"
    video_zoo.ffmpeg("-f", "lavfi", "-i", f"testsrc=size={video_zoo.W}x{video_zoo.H}:rate=25", "-frames:v", "30",
                     *video_zoo.X264_CLI, "-bf", bframes, "-g", "12", "-pix_fmt", "yuv420p", str(src))
    data = src.read_bytes()
    videos = tmp_path / "videos"
    videos.mkdir()
    path = videos / "cut.h264"
    path.write_bytes(data[:_pictures(data)[picture] + 6])
    refused = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, text=True)
    assert "Invalid data found" in refused.stderr  # the cut packet is refused, not concealed
    n, results = _kept_equal_cli(path)
    assert n == picture and results
