"""Video files under the names tools give them, written by the ffmpeg CLI: raw DV, DivX AVI, Ogg
Media, NUT, IVF, animated PNG and raw H.264/HEVC elementary streams are read, every frame the one
the CLI shows; any other file in a video folder is an `unexpected_file` reject, save what
video2dataset writes beside a video. They were neither read nor counted: gone without a word.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import video_zoo

from sources.records import Reject, VideoRecord
from sources.video import VideoSource, clip_frames

N = 16
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-threads", "1", "-pix_fmt", "yuv420p"]
X265 = ["-c:v", "libx265", "-x265-params", "log-level=none:bframes=3", "-pix_fmt", "yuv420p"]
# name -> (the CLI's arguments, rate the source is read at)
WRITTEN = {
    "clip.divx": (["-c:v", "mpeg4", "-q:v", "3", "-vtag", "DIVX", "-pix_fmt", "yuv420p", "-f", "avi"], 25),
    "clip.ogm": (["-c:v", "libtheora", "-q:v", "8", "-pix_fmt", "yuv420p", "-f", "ogg"], 25),
    "clip.nut": ([*X264, "-f", "nut"], 25),
    "clip.ivf": (["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-pix_fmt", "yuv420p"], 25),
    "clip.apng": (["-f", "apng"], 25),
    # no time stamps: timed at the rate the stream declares (x264 writes the input's), B-frames reordered
    "clip.h264": ([*X264, "-f", "h264"], 30),
    "clip.264": ([*X264, "-f", "h264"], 25),
    "clip.hevc": ([*X265, "-f", "hevc"], Fraction(24000, 1001)),
    "clip.h265": ([*X265, "-f", "hevc"], 25),
}


def _written(tmp_path: Path, name: str) -> tuple[Path, Fraction]:
    video_zoo.require_ffmpeg()
    arguments, rate = WRITTEN[name]
    source = video_zoo.encode(tmp_path / "_src.avi", N, "mjpeg", pix_fmt="yuvj444p", options={"q:v": "2"})
    folder = tmp_path / "videos"
    folder.mkdir()
    path = folder / name
    video_zoo.ffmpeg("-r", str(rate), "-i", str(source), *arguments, str(path))
    return path, Fraction(rate)


def _cli(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vsync", "passthrough", "-f",
                          "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, *shape)


def _record(path: Path) -> VideoRecord:
    source = VideoSource("ext", str(path.parent), strides=(1,))
    (unit,) = source.units()
    (record,) = list(source.read(unit))
    assert isinstance(record, VideoRecord), record
    return record


@pytest.mark.parametrize("name", sorted(WRITTEN))
def test_videos_under_the_names_tools_give_them_are_read_as_the_cli_shows_them(tmp_path, name: str):
    path, rate = _written(tmp_path, name)
    record = _record(path)
    assert record.n_frames == N
    ((clip, frames),) = list(clip_frames(record))
    assert not isinstance(frames, Exception), frames
    cli = _cli(path, frames.shape[1:])
    assert len(cli) == N
    for i, frame in zip(clip.frame_indices, frames):
        assert video_zoo.read_index(frame) == i, (name, i)
        assert np.abs(frame.astype(int) - cli[i]).mean() < 0.5, (name, i)
    assert clip.lineage["fps"] == round(float(rate), 3)
    assert clip.frame_times == tuple(round(float(k / rate), 6) for k in range(N))


def test_raw_dv_is_read_as_the_same_stream_in_an_avi(tmp_path):
    """Raw DV (`.dv`, a camcorder's capture) gives the frames its stream gives in an AVI (already
    read: interlaced PAL, 16:15 pixels stretched), at 25 frames a second, not the 60000 the
    demuxer averages at its time base."""
    video_zoo.require_ffmpeg()
    source = video_zoo.encode(tmp_path / "_src.avi", N, "mjpeg", pix_fmt="yuvj444p", options={"q:v": "2"},
                              size=(720, 576))
    folder = tmp_path / "videos"
    folder.mkdir()
    video_zoo.ffmpeg("-i", str(source), "-c:v", "dvvideo", "-pix_fmt", "yuv420p", str(folder / "tape.dv"))
    (tmp_path / "copy").mkdir()
    video_zoo.ffmpeg("-i", str(folder / "tape.dv"), "-c", "copy", str(tmp_path / "copy" / "tape.avi"))
    dv, avi = _record(folder / "tape.dv"), _record(tmp_path / "copy" / "tape.avi")
    ((clip, frames),) = list(clip_frames(dv))
    ((_, same),) = list(clip_frames(avi))
    assert np.array_equal(frames, same)
    assert [video_zoo.read_index(f) for f in frames] == list(range(N))
    assert clip.lineage["fps"] == 25.0 and clip.lineage["container"] == "dv"


def test_a_file_in_a_video_folder_that_is_not_read_is_a_counted_reject(tmp_path):
    """`notes.txt`, `audio.ogg`, a subtitle are rejects naming themselves; the `.txt` and `.json` a
    video2dataset sample holds beside its video (the files layout) are part of it, no reject."""
    path, _ = _written(tmp_path, "clip.nut")
    folder = path.parent
    for name in ("notes.txt", "clip.srt", "music.ogg"):
        (folder / name).write_text("not a video")
    (folder / "clip.txt").write_text("a caption")
    (folder / "clip.json").write_text("{}")
    source = VideoSource("ext", str(folder), strides=(1,))
    items = {Path(u).name: list(source.read(u)) for u in source.units()}
    assert sorted(items) == ["clip.nut", "clip.srt", "music.ogg", "notes.txt"]
    assert isinstance(items["clip.nut"][0], VideoRecord)
    for name in ("clip.srt", "music.ogg", "notes.txt"):
        (reject,) = items[name]
        assert isinstance(reject, Reject) and reject.reason == "unexpected_file", reject
        assert reject.detail.startswith(f"{name} is not a video this source reads") and reject.input == name
