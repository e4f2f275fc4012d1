"""Video sentences: exactly 16 frames per stride, stride reduction, real frame counts, seeking."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from sources.records import Reject, VideoClipRecord
from sources.video import (
    DecordReader,
    PyAVReader,
    VideoSource,
    decord_available,
    plan_clips,
    probe_video,
    read_clip_frames,
)


def test_plan_exact_sixteen_frames_at_each_stride():
    plans = plan_clips(1000, (10, 20, 30))
    assert {(p.stride, p.start) for p in plans} == {
        (10, 0), (10, 151), (10, 302), (10, 453), (10, 604), (10, 755),
        (20, 0), (20, 301), (20, 602), (30, 0), (30, 451),
    }
    for p in plans:
        assert len(p.indices) == 16
        assert np.all(np.diff(p.indices) == p.stride)
        assert p.indices[-1] < 1000


def test_plan_reduces_stride_for_short_clips_and_merges_duplicates():
    plans = plan_clips(132, (10, 20, 30))
    assert [(p.stride, p.start, p.requested_stride) for p in plans] == [(8, 0, 10)]  # (132-1)//15 = 8
    assert plans[0].indices == tuple(range(0, 121, 8))
    assert [p.stride for p in plan_clips(16, (10,))] == [1]
    assert plan_clips(15, (1, 10)) == []  # fewer than 16 frames: rejected, never padded
    assert len(plan_clips(250, (10, 20, 30), max_windows_per_stride=1)) == 2


def _sequential(path: Path) -> list[np.ndarray]:
    """Every decodable frame in order, the slow way (a truncated file just ends early)."""
    frames = []
    with av.open(str(path)) as container:
        try:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
        except av.error.FFmpegError:
            pass
    return frames


DECODERS = ["pyav"] + (["decord"] if decord_available() else [])


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("name", ["carphone_gop4.mp4", "bikes_h264.mkv", "carphone_vp9.webm", "bunny_mjpeg.avi"])
def test_seeking_returns_the_same_frames_as_decoding_everything(sample_corpus: Path, name: str, decoder: str):
    path = sample_corpus / "video" / name
    everything = _sequential(path)
    reader = PyAVReader(str(path)) if decoder == "pyav" else DecordReader(str(path))
    wanted = [0, 7, 30, 31, 59, len(everything) - 1]
    frames = reader.get_frames(wanted)
    for got, index in zip(frames, wanted):
        assert np.array_equal(got, everything[index]), f"frame {index}"


def test_real_frame_count_beats_wrong_metadata(sample_corpus: Path):
    video = sample_corpus / "video"
    probe = probe_video(str(video / "truncated_faststart.mp4"))
    assert probe.metadata_frames == 120  # the index at the front still promises every frame
    assert probe.n_frames == len(_sequential(video / "truncated_faststart.mp4")) < 120
    assert probe.decoder == "pyav"  # decord cannot open it; PyAV is the fallback
    mkv = probe_video(str(video / "bikes_h264.mkv"), "pyav")
    assert mkv.metadata_frames == 0 and mkv.n_frames == 250  # Matroska stores no frame count
    cut = probe_video(str(video / "truncated_bikes.mkv"))
    assert cut.n_frames == len(_sequential(video / "truncated_bikes.mkv")) < 250


def test_source_plans_and_rejects(sample_corpus: Path):
    source = VideoSource("clips", str(sample_corpus / "video"))
    items = {item.key: item for uri in source.units() for item in source.read(uri)}
    rejects = {k: v.reason for k, v in items.items() if isinstance(v, Reject)}
    assert sorted(rejects.values()) == ["too_few_frames", "unreadable"]
    clips = [v for v in items.values() if isinstance(v, VideoClipRecord)]
    by_video = {}
    for clip in clips:
        by_video.setdefault(clip.group, []).append((clip.stride, clip.start))
        assert len(clip.frame_indices) == 16 and "." not in clip.key
    bikes = next(g for g in by_video if g.endswith("bikes_mp4_" + g.rsplit("_", 1)[-1]) and "h264" not in g)
    assert sorted(by_video[bikes]) == [(10, 0), (16, 0)]  # 250 frames: stride 10 fits; 20 and 30 -> 16
    short = next(g for g in by_video if "short_20f" in g)
    assert by_video[short] == [(1, 0)]
    assert sum(len(v) for v in by_video.values()) == 13


def test_clip_frames_decode_by_seeking(sample_corpus: Path):
    source = VideoSource("clips", str(sample_corpus / "video"), strides=(2,))
    uri = str(sample_corpus / "video" / "clip_40f.avi")
    (clip,) = [c for c in source.read(uri) if isinstance(c, VideoClipRecord)]
    frames = read_clip_frames(clip)
    everything = _sequential(sample_corpus / "video" / "clip_40f.avi")
    assert frames.shape == (16, 180, 320, 3)
    assert all(np.array_equal(frames[i], everything[2 * i]) for i in range(16))
