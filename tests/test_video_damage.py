"""One damaged packet in a video the ffmpeg CLI wrote (a bad sector, a partial download): the clips
not touching it are kept, frame for frame what the CLI shows, whichever decoder was asked for; the
clips holding the damaged frame, or a frame decoded from it (up to the next key frame; in an
intra-only stream that frame alone), are `decode_failed` rejects naming those frames.

decord used to lose every clip of such a video (its error names no frame), those wholly before the
damage too; PyAV kept the frames a VP8 decoder gave from the broken reference (frames 32-39 shown
in the places of 40-47) while rejecting the clip of the damaged frame itself.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
import video_zoo

from sources.records import VideoRecord
from sources.video import VideoSource, clip_frames, decord_available

DECODERS = ["pyav"] + (["decord"] if decord_available() else [])
N, SIZE, RATE = 48, (96, 64), 25
# (name, encoder, damaged packet, how: (offset, bytes, value)), and whether every packet is a key frame
DAMAGED = {
    # one key frame (-g 240): frames 20-47 are decoded from the damaged one
    "vp8.webm": (["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-g", "240", "-pix_fmt", "yuv420p"],
                 20, (0, 6, 0xFF), False),
    # intra-only: its start marker gone ("No JPEG data found in image"), the frames after it are whole
    "mjpeg.avi": (["-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"], 5, (0, 600, 0), True),
}


def _damage_packet(path: Path, packet: int, start: int, stop: int | None, value: int) -> None:
    """Overwrite bytes `start:stop` of video packet `packet` of the file at `path` with `value`, in
    place, as a bad sector or a broken download leaves it (the packet found by its bytes, once)."""
    with av.open(str(path)) as container:
        data = [bytes(p) for p in container.demux(video=0) if p.size][packet]
    body = bytearray(path.read_bytes())
    at = body.find(data)
    assert at >= 0 and body.find(data, at + 1) < 0
    stop = len(data) if stop is None else stop
    body[at + start:at + stop] = bytes([value]) * (stop - start)
    path.write_bytes(bytes(body))


def _damaged(tmp_path: Path, name: str) -> Path:
    video_zoo.require_ffmpeg()
    encoder, packet, (offset, count, value), _ = DAMAGED[name]
    source = video_zoo.encode(tmp_path / "_src.avi", N, "mjpeg", rate=RATE, pix_fmt="yuvj444p",
                              options={"q:v": "2"}, size=SIZE)
    path = tmp_path / name
    video_zoo.ffmpeg("-i", str(source), *encoder, str(path))
    _damage_packet(path, packet, offset, offset + count, value)
    return path


def _cli_by_frame(path: Path) -> dict[int, np.ndarray]:
    """The frames the ffmpeg CLI shows, by the index their time stamp gives (it drops the frame
    that does not decode, so its output's order is no index)."""
    run = subprocess.run(["ffmpeg", "-hide_banner", "-i", str(path), "-map", "0:v:0", "-vf", "showinfo",
                          "-vsync", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True)
    times = [float(t) for t in re.findall(r"pts_time:\s*([0-9.]+)", run.stderr.decode(errors="replace"))]
    frames = np.frombuffer(run.stdout, np.uint8).reshape(-1, SIZE[1], SIZE[0], 3)
    assert len(times) == len(frames) == N - 1  # the damaged frame is the CLI's only loss
    return {round(t * RATE): frame for t, frame in zip(times, frames)}


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_a_damaged_packet_costs_only_the_clips_of_frames_decoded_from_it(tmp_path, name: str, decoder: str):
    path = _damaged(tmp_path, name)
    _, packet, _, intra_only = DAMAGED[name]
    (record,) = list(VideoSource("dmg", str(tmp_path), strides=(1, 3), decoder=decoder).read(str(path)))
    assert isinstance(record, VideoRecord), record
    assert record.n_frames == N and record.decoder == decoder  # the probe counts every frame: no cut file
    damaged = {packet} if intra_only else set(range(packet, N))
    cli = _cli_by_frame(path)
    kept, rejected = {}, {}
    for clip, frames in clip_frames(record):
        if isinstance(frames, Exception):
            rejected[clip.start, clip.stride] = frames
            continue
        kept[clip.start, clip.stride] = clip
        for i, frame in zip(clip.frame_indices, frames):
            assert video_zoo.read_index(frame) == i, (clip.key, i)
            assert np.abs(frame.astype(int) - cli[i]).mean() < 1.0, (clip.key, i)
    expected_kept = {(c.start, c.stride) for c in record.clips if not damaged & set(c.frame_indices)}
    assert set(kept) == expected_kept and expected_kept, rejected  # clips before the damage (and after it, intra-only)
    assert len(rejected) == len(record.clips) - len(expected_kept) > 0
    for clip in record.clips:
        if (clip.start, clip.stride) in rejected:
            error = rejected[clip.start, clip.stride]
            lost = sorted(damaged & set(clip.frame_indices))
            assert error.reason == "decode_failed"
            assert error.detail.startswith(f"frame {lost[0]} " if len(lost) == 1 else f"frames {lost[0]}"), error.detail
            assert f"({len(lost)} of the clip's 16)" in error.detail, error.detail
    if decoder == "decord":  # decord failed mid-way: PyAV finished the clips, said so
        assert all(c.decoder == "pyav" and "PyAV decodes" in c.lineage["decoder_note"] for c in kept.values())


def test_a_damaged_packet_where_frames_are_named_by_output_order_costs_every_clip_from_it_on(tmp_path):
    """AVI stamps MPEG-4 packets in decode order, so with B-frames its frames are named by the
    decoder's output order (`decode_order_stamps`): a frame the damage costs shifts every later name
    (the stride-1 clip 32-47, two key frames past it, was kept showing other frames than its names), so every frame from the
    damaged one on is lost, named; the clip before is kept, as the CLI shows it."""
    video_zoo.require_ffmpeg()
    source = video_zoo.encode(tmp_path / "_src.avi", 64, "mjpeg", rate=RATE, pix_fmt="yuvj444p",
                              options={"q:v": "2"}, size=SIZE)
    path = tmp_path / "videos" / "bframes.avi"
    path.parent.mkdir()
    video_zoo.ffmpeg("-i", str(source), "-c:v", "mpeg4", "-g", "12", "-bf", "2", "-q:v", "3", str(path))
    cli = np.frombuffer(subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt",
                                        "rgb24", "-"], capture_output=True).stdout, np.uint8).reshape(-1, 64, 96, 3)
    _damage_packet(path, 20, 4, 10, 0xFF)  # the decoder refuses the packet
    (record,) = list(VideoSource("dmg", str(path.parent), strides=(1,)).read(str(path)))
    results = {clip.start: frames for clip, frames in clip_frames(record)}
    # the probe counts every frame, not what the decoder gives (63): the clip after is a reject too
    assert record.n_frames == 64 and sorted(results) == [0, 16, 32, 48]
    assert [video_zoo.read_index(f) for f in results[0]] == list(range(16))
    assert all(np.abs(f.astype(int) - cli[i]).mean() < 1.0 for i, f in enumerate(results[0]))
    assert isinstance(results[16], Exception) and results[16].reason == "decode_failed", results[16]
    assert results[16].detail.startswith("frames 19-31 (13 of the clip's 16)"), results[16].detail
    # past the next key frames too: it was kept, each frame named one it is not
    assert isinstance(results[32], Exception) and results[32].detail.startswith("frames 32-47 (16 of the clip's 16)")
    assert isinstance(results[48], Exception) and results[48].detail.startswith("frames 48-63 (16 of the clip's 16)")


# damaged packets the decoder takes without a word (bytes 4-9 set to 0xff, the scan of the reviewer's
# clips found them): (name, encoder, packet), the frames named by the decoder's output order
SILENT = {
    # x265 with 7 B-frames: the decoder drops 8 frames silently (39 of 47), every later name shifted
    "clip.hevc": (["-c:v", "libx265", "-pix_fmt", "yuv420p", "-x265-params",
                   "keyint=24:bframes=7:b-pyramid=1:log-level=error", "-f", "hevc"], 15),
    # MPEG-4 with 3 B-frames in AVI: 3 frames dropped silently (45 of 48)
    "bframes.avi": (["-c:v", "mpeg4", "-bf", "3", "-g", "12", "-q:v", "3"], 22),
    # the same, concealed: every frame given, two flagged corrupt (showing earlier pictures)
    "concealed.avi": (["-c:v", "mpeg4", "-bf", "3", "-g", "12", "-q:v", "3"], 27),
}


def _encoded(tmp_path: Path, name: str) -> Path:
    video_zoo.require_ffmpeg()
    source = video_zoo.encode(tmp_path / "_src.avi", N, "mjpeg", rate=RATE, pix_fmt="yuvj444p",
                              options={"q:v": "2"}, size=SIZE)
    path = tmp_path / "videos" / name
    path.parent.mkdir()
    video_zoo.ffmpeg("-i", str(source), *SILENT[name][0], str(path))
    return path


def _decoded_silently(path: Path) -> tuple[int, int, int]:
    """(packets, frames PyAV gives, frames flagged corrupt), asserting no packet raises."""
    packets = frames = corrupt = 0
    with av.open(str(path)) as container:
        codec = container.streams.video[0].codec_context
        for packet in container.demux(video=0):
            packets += packet.size > 0
            for frame in codec.decode(packet):  # raises nothing: no error tells of the damage
                frames, corrupt = frames + 1, corrupt + frame.is_corrupt
    return packets, frames, corrupt


def _kept_and_rejected(record: VideoRecord) -> tuple[list[int], list[int]]:
    """The starts of the record's clips kept and of those rejected, each kept frame checked to
    show its own index and each reject to be `decode_failed` naming frames that did not decode."""
    kept, rejected = [], []
    for clip, frames in clip_frames(record):
        if isinstance(frames, Exception):
            assert frames.reason == "decode_failed" and "did not decode" in frames.detail, frames
            rejected.append(clip.start)
            continue
        kept.append(clip.start)
        assert [video_zoo.read_index(f) for f in frames] == list(clip.frame_indices), clip.key
    return kept, rejected


@pytest.mark.parametrize("name", sorted(SILENT))
def test_a_damaged_packet_the_decoder_takes_silently_never_leaves_a_frame_misnamed(tmp_path, name: str):
    """A damaged packet the decoder does not refuse: it drops frames (x265's, MPEG-4's) or conceals
    one (flagged corrupt) and raises nothing. Where frames are named by the decoder's output order
    (raw HEVC; AVI with B-frames), each frame it dropped shifted every later name: x265 clips 14-35
    were kept showing frames 24-45, MPEG-4 clips 21-43 showing 24, 24, 25, 26-45, and the probe
    counted the 45 frames given. Now every frame counts, and the frames from where the outputs
    fell behind the packets (or a frame came out corrupt) are held back: their clips are
    `decode_failed` naming them, every kept frame is its own, as the undamaged file's are."""
    path = _encoded(tmp_path, name)
    clean = VideoSource("dmg", str(path.parent), strides=(1,), frames=4)
    (whole,) = list(clean.read(str(path)))
    assert isinstance(whole, VideoRecord) and whole.n_frames == N
    for clip, frames in clip_frames(whole):  # the undamaged file: every clip, every frame its own
        assert [video_zoo.read_index(f) for f in frames] == list(clip.frame_indices)
    _damage_packet(path, SILENT[name][1], 4, 10, 0xFF)
    packets, given, corrupt = _decoded_silently(path)
    assert given < packets or corrupt  # frames dropped or concealed, without a word
    (record,) = list(VideoSource("dmg", str(path.parent), strides=(1,), frames=4).read(str(path)))
    assert isinstance(record, VideoRecord), record
    assert record.n_frames == packets  # not the frames the decoder gave
    kept, rejected = _kept_and_rejected(record)
    assert kept and rejected and min(rejected) <= SILENT[name][1]
    assert max(rejected) == max(clip.start for clip in record.clips)  # every clip after: no name is sure


@pytest.mark.parametrize("name,packet", [("h264.mkv", 12), ("mpeg4.mp4", 20)])
def test_a_frame_the_decoder_conceals_is_held_back_with_those_decoded_from_it(tmp_path, name: str, packet: int):
    """A packet whose last two thirds are lost (a partial copy, a bad sector): H.264's and MPEG-4's
    decoders conceal the frame without an error, flagged corrupt. It was kept showing an earlier
    picture (an H.264 AVI's frame 19 showing 18, MPEG-4's frames 5-11 showing 4, 4, 4, 4, 5, 6, 7);
    now it is held back with the frames decoded from it, as a frame that does not decode is."""
    video_zoo.require_ffmpeg()
    encoder = {"h264.mkv": ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-bf", "3", "-g", "24"],
               "mpeg4.mp4": ["-c:v", "mpeg4", "-bf", "3", "-g", "12", "-q:v", "3"]}[name]
    source = video_zoo.encode(tmp_path / "_src.avi", N, "mjpeg", rate=RATE, pix_fmt="yuvj444p",
                              options={"q:v": "2"}, size=SIZE)
    path = tmp_path / "videos" / name
    path.parent.mkdir()
    video_zoo.ffmpeg("-i", str(source), *encoder, str(path))
    with av.open(str(path)) as container:
        size = [p.size for p in container.demux(video=0) if p.size][packet]
    _damage_packet(path, packet, size // 3, None, 0xAA)  # its last two thirds: a cut packet's
    packets, given, corrupt = _decoded_silently(path)
    assert corrupt  # concealed, without a word
    (record,) = list(VideoSource("dmg", str(path.parent), strides=(1,), frames=4).read(str(path)))
    assert isinstance(record, VideoRecord) and record.n_frames == N
    kept, rejected = _kept_and_rejected(record)
    assert kept and rejected


@pytest.mark.skipif(not decord_available(), reason="decord is not installed")
def test_pyav_finishing_what_decord_could_not_has_what_decord_left_of_the_budget(tmp_path, monkeypatch):
    """Where decord fails mid-way on a damaged packet, PyAV decodes what the clips still need: it
    began with a whole budget of its own, so one video's decode could take `time_budget_s` twice
    over (docs/config.md: the CPU seconds one video's decode may take). Now it has what is left."""
    from sources import budget
    from sources.video import video_budget

    path = _damaged(tmp_path, "vp8.webm")
    limits = video_budget(60.0, 1536)
    (record,) = list(VideoSource("dmg", str(tmp_path), strides=(1,), decoder="decord", limits=limits)
                     .read(str(path)))
    jobs = []
    real = budget.run

    def spied(function, *args, **kwargs):
        if not function.endswith(":_import"):  # a fresh worker's start-up, not a job
            jobs.append((function, kwargs["budget"], kwargs.get("use")))
        return real(function, *args, **kwargs)

    monkeypatch.setattr(budget, "run", spied)
    results = list(clip_frames(record))
    assert [job[0].rpartition(":")[2] for job in jobs] == ["decord_frames", "decode_frames"]
    (_, first, decord_use), (_, second, _) = jobs
    assert first == limits and second.cpu_s < limits.cpu_s  # not a whole budget afresh
    assert second.cpu_s == pytest.approx(limits.cpu_s - decord_use.cpu_s)
    assert second.memory_mb == limits.memory_mb
    assert any(not isinstance(frames, Exception) for _, frames in results)


@pytest.mark.skipif(not decord_available(), reason="decord is not installed")
def test_a_fallback_with_too_little_budget_left_is_a_timeout_not_a_doomed_retry(tmp_path, monkeypatch):
    """decord fails mid-way on the damaged packet having used all but less than `RETRY_FLOOR_S`
    of the video's budget (here the floor is raised above the whole budget, so whatever decord
    used leaves too little): PyAV is not started on a retry killed at its first answer ("over the
    budget of 0 CPU-seconds"); each clip decord did not finish is a `decode_timeout` naming what
    decord used of the budget, and what decord could not decode (vid56 dropped decord's words)."""
    from sources import budget
    from sources.video import video_budget

    path = _damaged(tmp_path, "vp8.webm")
    limits = video_budget(60.0, 1536)
    (record,) = list(VideoSource("dmg", str(tmp_path), strides=(1,), decoder="decord", limits=limits)
                     .read(str(path)))
    monkeypatch.setattr(budget, "RETRY_FLOOR_S", limits.cpu_s + 1)
    jobs = []
    real = budget.run

    def spied(function, *args, **kwargs):
        if not function.endswith(":_import"):
            jobs.append(function.rpartition(":")[2])
        return real(function, *args, **kwargs)

    monkeypatch.setattr(budget, "run", spied)
    results = list(clip_frames(record))
    assert jobs == ["decord_frames"] and len(results) == len(record.clips)
    for _, frames in results:
        assert isinstance(frames, Exception) and frames.reason == "decode_timeout", frames
        assert re.match(r"decord used [0-9.]+ of the 60 CPU-second budget", frames.detail), frames.detail
        assert re.search(r"; decord could not decode .*frames? \d+", frames.detail), frames.detail


@pytest.mark.skipif(not decord_available(), reason="decord is not installed")
@pytest.mark.parametrize("left_s", [0.002, 0.02])
def test_a_retry_that_runs_out_of_what_decord_left_names_decords_use_and_failure(tmp_path, monkeypatch, left_s):
    """decord fails on the damaged packet having used all but 2 or 20 ms of the video's budget,
    above `RETRY_FLOOR_S`: PyAV's retry starts with that little and runs out. vid56's reject read
    only `over the budget of 0.002 CPU-seconds`, naming neither the video's budget nor what decord
    used or could not decode; each clip that times out now names both, as below the floor."""
    from sources.budget import JobUse
    from sources.video import video_budget

    path = _damaged(tmp_path, "vp8.webm")
    limits = video_budget(60.0, 1536)
    (record,) = list(VideoSource("dmg", str(tmp_path), strides=(1,), decoder="decord", limits=limits)
                     .read(str(path)))
    real_left = JobUse.left

    def left(self, whole, spent_by):  # as if decord had spent all but `left_s` before it failed
        self.cpu_s = whole.cpu_s - left_s
        return real_left(self, whole, spent_by)

    monkeypatch.setattr(JobUse, "left", left)
    results = list(clip_frames(record))
    _, packet, _, _ = DAMAGED["vp8.webm"]
    for clip, frames in results:  # a retry that decodes in time (20 ms, a warm worker) loses the damage's clips
        if isinstance(frames, Exception) and frames.reason == "decode_failed":
            assert set(clip.frame_indices) & set(range(packet, N)), (clip.key, frames)
    timeouts = [frames for _, frames in results if isinstance(frames, Exception) and frames.reason != "decode_failed"]
    assert timeouts or left_s > 0.01  # 2 ms cannot decode 48 frames; 20 ms might, in a warm worker
    for frames in timeouts:
        assert frames.reason == "decode_timeout", frames
        assert re.fullmatch(rf"over the budget of {left_s:g} CPU-seconds \(PyAV's retry, after decord used 60 of the "
                            r"60 CPU-second budget and could not decode .*frames? \d+.*\)", frames.detail), frames.detail
