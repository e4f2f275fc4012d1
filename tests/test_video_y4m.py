"""A Y4M whose header declares frames past `max_pixels` is `video_too_large`, judged from its
header line before FFmpeg opens it (`sources.video_y4m`): FFmpeg refused a size past its own limit
with EBUSY, which read as an `unreadable` file."""

from __future__ import annotations

import pytest
import video_zoo

from sources.records import Reject, VideoRecord
from sources.video import VideoSource


def _y4m(tmp_path, width: int, height: int):
    """The ffmpeg CLI's Y4M of 64x48 frames, its header line then declaring `width`x`height`."""
    path = tmp_path / "clip.y4m"
    video_zoo.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:d=1", "-pix_fmt", "yuv420p", str(path))
    data = path.read_bytes()
    assert data.startswith(b"YUV4MPEG2 W64 H48 ")
    path.write_bytes(data.replace(b"W64 H48 ", f"W{width} H{height} ".encode(), 1))
    return path


def _read(path, **options):
    return list(VideoSource("v", str(path.parent), strides=(1,), **options).read(str(path)))


def test_a_y4m_declaring_frames_past_ffmpegs_limit_is_too_large(tmp_path):
    (reject,) = _read(_y4m(tmp_path, 60000, 60000))
    assert isinstance(reject, Reject) and reject.reason == "video_too_large", reject
    assert "60000x60000 (3600000000 pixels), over max_pixels=178956970" in reject.detail


def test_a_y4m_within_max_pixels_is_read(tmp_path):
    (record,) = _read(_y4m(tmp_path, 64, 48))
    assert isinstance(record, VideoRecord) and record.n_frames == 25
    (reject,) = _read(tmp_path / "clip.y4m", max_pixels=3071)
    assert isinstance(reject, Reject) and reject.reason == "video_too_large" and "64x48" in reject.detail


@pytest.mark.parametrize("declared", [b"W+60000 H+60000 ", b"W60000x H60000x ", b"W 60000  H60000 "])
def test_sizes_ffmpeg_reads_with_strtol_are_judged_too(tmp_path, declared):
    """FFmpeg reads W and H with strtol (a sign, white space, trailing junk): these slipped past
    the judge to FFmpeg's EBUSY, an `unreadable` file."""
    path = _y4m(tmp_path, 64, 48)
    path.write_bytes(path.read_bytes().replace(b"W64 H48 ", declared, 1))
    (reject,) = _read(path)
    assert isinstance(reject, Reject) and reject.reason == "video_too_large", reject
    assert "60000x60000" in reject.detail


def test_a_size_last_on_a_crlf_line_is_judged(tmp_path):
    path = _y4m(tmp_path, 64, 48)
    head, rest = path.read_bytes().split(b"\n", 1)
    path.write_bytes(head.replace(b"W64 H48 ", b"") + b" W60000 H60000\r\n" + rest)
    (reject,) = _read(path)
    assert isinstance(reject, Reject) and reject.reason == "video_too_large" and "60000x60000" in reject.detail
