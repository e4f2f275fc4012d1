"""Frame i is the i-th frame a player shows, in every container we accept, with both decoders.

The zoo (tests/video_zoo.py) is written at test time; every frame shows its own index. Each
file goes through the source and the renderer as a build runs them, every stored image is
decoded back to the index it shows, and that is compared with the ffmpeg CLI's sequential
decode (the player's view: edit lists and rotation applied); the pixels are compared with
PyAV decoding everything in order.
"""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import tarfile
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import video_zoo
from PIL import Image

from sources import budget
from sources.budget import Budget
from sources.records import Reject, VideoRecord
from sources.video import VIDEO_EXTENSIONS, VideoSource, clip_frames, decord_available
from sources.video_decode import decode_frames, probe
from uvd_pipeline.render import RenderSettings, decode_png, render_video

ZOO = ["h264_bframes.mp4", "h264_longgop.mkv", "h264_16f.mp4", "h264_10bit.mov", "h264_444_odd.m4v",
       "h264_vfr.mkv", "h264_rot90.mp4", "h264_rot270.mov", "h264_mirror.mp4",
       "h264_transpose.mov", "hevc.mp4", "vp9.webm", "av1.mp4", "vp8.webm", "mjpeg.avi", "mpeg4.avi",
       "prores.mov", "flv1.flv", "theora.ogv", "truncated.mkv", "x264_default.ts", "x264_gop25.ts",
       "mpeg2_gop15.mpg", "mpeg2_gop15.mpeg", "editlist.mp4", "x264_headcut.ts", "mpeg2_headcut.mpg",
       "mpeg2_elementary.mpg", "h264_bframes.avi", "h264_ipp.avi", "h264_bframes_cut.avi", "h264_opengop.mp4",
       "mpeg4_bframes.mp4", "h264_late_bframes.avi", "xvid_packed.avi", "avchd.mts", "bluray.m2ts", "dvd.vob",
       "phone.3gp", "windows.wmv", "broadcast.mxf", "windows.asf", "raw.y4m", "phone.3g2", "flash.f4v",
       "stereo.mk3d", "mpeg2.m2v", "anim.gif"]
DECODERS = ["pyav"] + (["decord"] if decord_available() else [])
STRIDES = (1, 3, 10, 20, 30)
SETTINGS = RenderSettings(size=64, resize="squash", pad_value=0, max_pixels=10**8, png_compression=1, seed=0,
                          val_fraction=0.0)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    video_zoo.require_ffmpeg()
    policy = os.sched_getscheduler(0)
    zoo = video_zoo.build_zoo(tmp_path_factory.mktemp("zoo"), ZOO)
    # SVT-AV1 leaves its caller SCHED_FIFO 99 (as root): `busy_machine`'s burners inherited it
    assert os.sched_getscheduler(0) == policy
    return zoo


@pytest.fixture(scope="module")
def shown(zoo) -> dict[str, list[np.ndarray]]:
    """What a player shows, per file: the ffmpeg CLI's frames."""
    return {name: video_zoo.sequential(path) for name, path in zoo.items()}


def _coded(image: np.ndarray, lineage: dict) -> np.ndarray:
    """A stored frame turned back to the coded orientation, undoing what the lineage says was applied."""
    upright = np.rot90(image, -(lineage.get("rotation", 0) // 90))
    return upright[:, ::-1] if lineage.get("mirrored") else upright


def _index_of(image: np.ndarray, lineage: dict) -> int:
    return video_zoo.read_index(_coded(image, lineage))


def test_the_zoo_covers_every_accepted_extension():
    """Animated WebP is Pillow's, not FFmpeg's: checked in tests/test_video_webp.py; the names
    tools give videos (raw DV, DivX, Ogg Media, NUT, IVF, APNG, raw H.264/HEVC) in
    tests/test_video_extensions.py."""
    from test_video_extensions import WRITTEN

    covered = {Path(name).suffix for name in ZOO} | {".webp"} | {Path(name).suffix for name in WRITTEN} | {".dv"}
    assert covered == set(VIDEO_EXTENSIONS)


def test_camcorder_disc_phone_and_windows_videos_are_listed(zoo, tmp_path):
    """AVCHD camcorders write `.MTS` (MPEG-TS in 192-byte packets; `.m2ts` on Blu-ray), DVDs `.VOB`,
    older phones `.3gp`, Windows `.wmv`: none was listed, so a folder of them built without them
    and nothing said so (alone, they were "no videos"). Their frames: the zoo tests above."""
    import shutil

    names = {"avchd.mts": "00000.MTS", "bluray.m2ts": "00001.m2ts", "dvd.vob": "VTS_01_1.VOB",
             "phone.3gp": "VID_0001.3gp", "windows.wmv": "clip.wmv"}
    folder = tmp_path / "card"
    folder.mkdir()
    for name, shown_as in names.items():
        shutil.copyfile(zoo[name], folder / shown_as)
    source = VideoSource("zoo", str(folder), strides=(10,))
    assert sorted(Path(uri).name for uri in source.units()) == sorted(names.values())


def _rendered_as_shown(path: Path, reference: list[np.ndarray], strides, decoder: str) -> VideoRecord:
    """Read and render `path` as a build does; every stored frame shows the index of the frame
    the player (`reference`, the ffmpeg CLI) shows at its place. Returns the record."""
    source = VideoSource("zoo", str(path.parent), strides=strides, decoder=decoder)
    (record,) = list(source.read(str(path)))
    assert isinstance(record, VideoRecord), record
    assert record.n_frames == len(reference)  # the count is the count of presented frames
    lineage = record.clips[0].lineage
    expected = [_index_of(f, lineage) for f in reference]  # what the player's frame i shows
    height, width = reference[0].shape[:2]
    results = render_video(record, SETTINGS)
    assert len(results) == len(record.clips)
    for sentence in results:
        assert not isinstance(sentence, Reject), sentence
        assert sentence.meta["width"] == width and sentence.meta["height"] == height
        for image, member in zip(sentence.images, sentence.members):
            stored = cv2.resize(decode_png(image), (width, height), interpolation=cv2.INTER_AREA)
            assert _index_of(stored, lineage) == expected[member["frame"]], (sentence.sentence_id, member)
            assert member["time_s"] >= 0
    return record


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("name", ZOO)
def test_every_stored_frame_is_the_frame_a_player_shows(zoo, shown, name: str, decoder: str):
    path, reference = zoo[name], shown[name]
    record = _rendered_as_shown(path, reference, STRIDES, decoder)
    lineage = record.clips[0].lineage
    # before the resize: oriented as the player shows them (the CLI's pixels, up to its colour
    # conversion), and pixel for pixel the frames a sequential PyAV decode gives, once turned back
    everything = video_zoo.coded(path)
    for clip, frames in clip_frames(record):
        assert not isinstance(frames, Exception), frames
        for i, frame in zip(clip.frame_indices, frames):
            assert frame.shape == reference[i].shape
            assert np.abs(frame.astype(int) - reference[i]).mean() < 3, (clip.key, i)
            assert np.array_equal(_coded(frame, lineage), everything[i]), (clip.key, i)


@pytest.mark.parametrize("name", ["av1.mp4", "hevc.mp4", "vp9.webm", "mpeg2_gop15.mpg", "anim.gif"])
def test_lineage_names_the_codec_as_ffprobe_does_not_the_decoder(zoo, name: str):
    """AV1 is decoded by libdav1d: the lineage said `libdav1d` where every other clip names its
    codec (`h264`, `hevc`), so a filter on `av1` missed them."""
    (record,) = list(VideoSource("zoo", str(zoo[name].parent)).read(str(zoo[name])))
    named = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "stream=codec_name", "-of", "default=nw=1:nk=1", str(zoo[name])],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert record.clips[0].lineage["codec"] == named


@pytest.mark.parametrize("name", ZOO)
def test_seeking_over_every_gap_gives_the_same_frames(zoo, shown, name: str):
    """Force a container seek between all stretches (TS/PS seeks land late: they are checked)."""
    info = probe(str(zoo[name]))
    wanted = list(range(1, info.n_frames, 9)) + [info.n_frames - 1]
    got = dict(decode_frames(str(zoo[name]), wanted, seek_bytes=0))
    assert sorted(got) == sorted(set(wanted))
    lineage = {"rotation": info.rotation, "mirrored": info.mirrored}
    for i in wanted:
        assert _index_of(got[i], lineage) == _index_of(shown[name][i], lineage)


def test_edit_list_count_and_lineage(zoo, shown):
    source = VideoSource("zoo", str(zoo["editlist.mp4"].parent))
    (record,) = list(source.read(str(zoo["editlist.mp4"])))
    lineage = record.clips[0].lineage
    assert record.n_frames == len(shown["editlist.mp4"]) == 77  # 3 s at 25 fps shown (+ the cut's edge)
    assert lineage["packets"] == 92 and lineage["frames_hidden"] == 15
    assert video_zoo.read_index(shown["editlist.mp4"][0]) == 65  # the cut starts at 2.6 s
    for clip in record.clips:  # 25 fps: frame i is shown at i / 25 s after the first
        assert clip.frame_times == tuple(round(i / 25, 6) for i in clip.frame_indices)


@pytest.mark.parametrize("name,first", [("x264_headcut.ts", 45), ("mpeg2_headcut.mpg", 45)])
def test_a_stream_cut_mid_gop_starts_at_its_first_key_frame(zoo, shown, name: str, first: int):
    (record,) = list(VideoSource("zoo", str(zoo[name].parent), strides=(1,)).read(str(zoo[name])))
    assert record.n_frames == len(shown[name])
    assert record.clips[0].lineage["frames_hidden"] > 0
    (clip, frames), *_ = list(clip_frames(record))
    assert video_zoo.read_index(frames[0]) == first == video_zoo.read_index(shown[name][0])


def test_the_last_frames_of_a_short_clip_come_out_of_the_final_flush(zoo):
    got = dict(decode_frames(str(zoo["h264_16f.mp4"]), [14, 15]))
    assert sorted(got) == [14, 15]
    assert [video_zoo.read_index(got[i]) for i in (14, 15)] == [14, 15]


@pytest.mark.parametrize("name,turns,mirrored", [("h264_rot90.mp4", 1, False), ("h264_rot270.mov", 3, False),
                                                 ("h264_mirror.mp4", 0, True), ("h264_transpose.mov", 1, True)])
def test_display_matrix_is_applied_by_both_decoders(zoo, name: str, turns: int, mirrored: bool):
    for decoder in DECODERS:
        (record,) = list(VideoSource("zoo", str(zoo[name].parent), strides=(2,), decoder=decoder)
                         .read(str(zoo[name])))
        assert record.decoder == "pyav"  # decord is not trusted with display matrices
        lineage = record.clips[0].lineage
        assert (lineage["rotation"], lineage["mirrored"]) == (90 * turns, mirrored)
        (clip, frames), = list(clip_frames(record))
        assert frames.shape == ((16, 64, 48, 3) if turns % 2 else (16, 48, 64, 3))
        # turning the picture back (mirror last) shows the coded frame's index
        back = [np.rot90(f, -turns)[:, ::-1] if mirrored else np.rot90(f, -turns) for f in frames]
        assert [video_zoo.read_index(f) for f in back] == list(clip.frame_indices)


def test_rotation_tags_written_by_the_ffmpeg_cli_show_frames_as_the_cli_shows_them(tmp_path):
    """A phone's rotation as older files and ffmpeg 5.1 write it (`-metadata:s:v rotate=R` on a
    stream copy: MP4 and MOV display matrices), 180 degrees included (the zoo's are PyAV-made: 90,
    270 and mirrors): the stored frames are the ffmpeg CLI's autorotated frames, pixel for pixel."""
    video_zoo.require_ffmpeg()
    source = video_zoo.encode(tmp_path / "src.mp4", 16, "libx264", options=video_zoo.X264)
    folder = tmp_path / "videos"
    folder.mkdir()
    for rotate, ext in ((90, "mp4"), (180, "mov")):
        path = folder / f"rotate{rotate}.{ext}"
        video_zoo.ffmpeg("-i", str(source), "-c", "copy", "-metadata:s:v", f"rotate={rotate}", str(path))
        shown = np.stack(video_zoo.sequential(path))
        assert shown.shape == ((16, 48, 64, 3) if rotate == 180 else (16, 64, 48, 3)), rotate
        (record,) = list(VideoSource("zoo", str(folder), strides=(1,)).read(str(path)))
        ((clip, frames),) = list(clip_frames(record))
        assert record.clips[0].lineage["rotation"] == rotate
        assert frames.shape == shown.shape and np.abs(frames.astype(int) - shown).max() <= 1, rotate


def test_all_strides_of_a_video_come_from_one_decoding_job(zoo, monkeypatch):
    jobs = []
    real_run = budget.run

    def counting(function, *args, **kwargs):
        jobs.append(function)
        return real_run(function, *args, **kwargs)

    monkeypatch.setattr(budget, "run", counting)
    (record,) = list(VideoSource("zoo", str(zoo["h264_longgop.mkv"].parent), strides=(2, 3, 5, 7))
                     .read(str(zoo["h264_longgop.mkv"])))
    jobs.clear()
    results = render_video(record, SETTINGS)
    assert len(results) == len(record.clips) > 4 and {r.meta["stride"] for r in results} == {2, 3, 5, 7}
    assert jobs == ["sources.video_decode:decode_frames"]


def test_the_plan_decodes_only_the_stretches_wanted_frames_need(zoo):
    """Key frames every 12 frames: frame 45 needs the stretch from the key frame at 36; frames
    nobody wants after it and the GOPs in between are never sent to the decoder."""
    from sources.video_decode import read_index
    from sources.video_index import Stretch, decode_plan

    index = read_index(str(zoo["h264_bframes.mp4"]))
    keys = [i for i, k in enumerate(index.keyframe) if k]
    assert keys == list(range(0, 90, 12))
    plan = decode_plan(index, [0, 45])
    assert [(s.first, s.trusted_from is None) for s in plan] == [(0, True), (36, False)]
    assert plan[1].last < 48 and plan[0].last < 12
    assert sum(s.last - s.first + 1 for s in plan) < 20
    dense = decode_plan(index, list(range(0, 90, 5)))  # wanted frames in every GOP
    assert all(s.first in keys for s in dense) and dense[0].first == 0
    assert 60 < sum(s.last - s.first + 1 for s in dense) < 90  # only each GOP's tail is left out
    assert decode_plan(index, list(range(90))) == [Stretch(0, 89, None)]  # everything: one pass


def test_decord_never_loads_in_the_build_process(zoo):
    """decord's bundled libraries break OpenCV's PNG decoding in a process that loads them (the
    tokenize stage decodes the rendered PNGs): decord runs in its own worker process only."""
    import sys

    if not decord_available():
        pytest.skip("decord is not installed")
    (record,) = list(VideoSource("zoo", str(zoo["h264_bframes.mp4"].parent), strides=(5,), decoder="decord")
                     .read(str(zoo["h264_bframes.mp4"])))
    assert record.decoder == "decord"
    sentences = render_video(record, SETTINGS)
    assert "decord" not in sys.modules
    assert all(decode_png(image).shape == (64, 64, 3) for s in sentences for image in s.images)


def test_decord_is_refused_where_it_is_not_exact(zoo):
    if not decord_available():
        pytest.skip("decord is not installed")
    for name, why in (("x264_gop25.ts", "container mpegts"), ("mpeg2_gop15.mpg", "container mpeg"),
                      ("hevc.mp4", "codec hevc"), ("editlist.mp4", "edit list"), ("h264_10bit.mov", "pixel format"),
                      ("h264_rot90.mp4", "display rotation"), ("h264_opengop.mp4", "open GOP"),
                      ("mpeg4_bframes.mp4", "open GOP"), ("mpeg4.avi", "time stamps in decode order"),
                      ("h264_bframes.avi", "time stamps in decode order"),
                      ("h264_ipp.avi", "time stamps in decode order")):
        (record,) = list(VideoSource("zoo", str(zoo[name].parent), decoder="decord").read(str(zoo[name])))
        assert record.decoder == "pyav"
        assert why in record.clips[0].lineage["decoder_note"], name


@pytest.mark.parametrize("name,decoder", [
    ("h264_opengop.mp4", "pyav"), ("mpeg4_bframes.mp4", "pyav"), ("h264_bframes.avi", "pyav"),
    ("h264_ipp.avi", "pyav"), ("h264_bframes.mp4", "decord"), ("vp8.webm", "decord"), ("mjpeg.avi", "decord")])
def test_decord_is_chosen_only_where_its_sparse_picks_are_exact(zoo, shown, name: str, decoder: str):
    """A single stride (frames apart, so decord seeks): on open GOPs, MPEG-4 ASP B-frames and H.264
    in AVI decord gives neighbouring frames, so the source has PyAV decode those; where it is
    exact it keeps decord. Either way every stored frame is the one the ffmpeg CLI shows."""
    if not decord_available():
        pytest.skip("decord is not installed")
    record = _rendered_as_shown(zoo[name], shown[name], (10,), "decord")
    assert record.decoder == decoder and record.clips[0].stride > 1


def test_a_video_that_never_answers_costs_that_video_not_the_build(zoo, tmp_path):
    """A named pipe nobody writes to (a stalled mount, say): opening it blocks inside FFmpeg's C
    code. The source never opens a fifo (`not_a_file`, tests/test_source_video.py); a probe that
    blocks anyway is killed at the budget, a `decode_timeout`, and the next video is read as usual."""
    import os

    from sources.video import VideoError, probe_video

    folder = tmp_path / "videos"
    folder.mkdir()
    os.mkfifo(folder / "stalled.mp4")
    (folder / "fine.mp4").write_bytes(zoo["h264_bframes.mp4"].read_bytes())
    with pytest.raises(VideoError) as caught:
        probe_video(str(folder / "stalled.mp4"), limits=Budget(time_s=2))
    assert caught.value.reason == "decode_timeout" and "2 s" in caught.value.detail
    source = VideoSource("zoo", str(folder), strides=(10,), limits=Budget(time_s=2))
    (record,) = list(source.read(str(folder / "fine.mp4")))
    assert all(not isinstance(r, Reject) for r in render_video(record, SETTINGS))


def test_decord_on_mpeg_ts_gives_rejects_never_wrong_frames(zoo):
    """decord on an MPEG-TS file with x264's default GOP: seeking to the last frame hangs (seen
    under load) or fails; forced to decode such a file anyway, each clip is a reject with the
    reason (a hang) or, where decord fails, PyAV's frames (`video_decord.DecordFailed`), and the
    same video through the decoder the source chose renders exactly."""
    if not decord_available():
        pytest.skip("decord is not installed")
    path = str(zoo["x264_default.ts"])
    source = VideoSource("zoo", str(zoo["x264_default.ts"].parent), strides=(1,), limits=Budget(time_s=5))
    (record,) = list(source.read(path))
    assert record.decoder == "pyav"
    last = (dataclasses.replace(record.clips[-1], key="zoo-last", frame_indices=tuple(range(284, 300))),)
    forced = VideoRecord(record.key, record.source, record.group, path, last, "decord", record.n_frames,
                         Budget(time_s=5))
    (result,) = render_video(forced, SETTINGS)
    after = render_video(record, SETTINGS)
    assert all(not isinstance(r, Reject) for r in after) and len(after) == len(record.clips) == 18
    if isinstance(result, Reject):
        assert result.reason == "decode_timeout", result
    else:  # decord failed: PyAV decoded, frame for frame what the chosen decoder gives
        assert result.meta["decoder"] == "pyav" and "PyAV decodes" in result.meta["decoder_note"]
        (exact,) = render_video(dataclasses.replace(forced, decoder="pyav"), SETTINGS)
        assert result.images == exact.images
def test_avi_h264_b_frames_are_named_by_the_decoders_output_order(zoo, shown):
    """AVI stamps H.264 packets in decode order (pts = dts + 1): the stamps name no shown frame.
    Frame k is the decoder's k-th output, the k-th frame the ffmpeg CLI shows, at every stride and
    for sparse picks (nothing skipped, no seek); a cut copy counts the frames that still decode."""
    from sources.video_decode import read_index

    index = read_index(str(zoo["h264_bframes.avi"]))
    assert index.decode_order_stamps and not index.reordered
    # no B-frames declared, but H.264 may reorder: AVI's stamps are trusted only for codecs that never do
    assert read_index(str(zoo["h264_ipp.avi"])).decode_order_stamps
    assert not read_index(str(zoo["mjpeg.avi"])).decode_order_stamps
    for name in ("h264_bframes.avi", "h264_bframes_cut.avi"):
        info = probe(str(zoo[name]))
        assert info.n_frames == len(shown[name]) and info.decode_order_stamps
        wanted = [3, 17, 41, info.n_frames - 1]
        got = dict(decode_frames(str(zoo[name]), wanted, seek_bytes=0))
        for i in wanted:
            assert video_zoo.read_index(got[i]) == video_zoo.read_index(shown[name][i])
            assert np.abs(got[i].astype(int) - shown[name][i]).mean() < 3
        assert name.endswith("_cut.avi") or [video_zoo.read_index(got[i]) for i in wanted] == wanted
    assert probe(str(zoo["h264_bframes_cut.avi"])).n_frames < probe(str(zoo["h264_bframes.avi"])).n_frames


@pytest.mark.parametrize("name", ["h264_late_bframes.avi", "xvid_packed.avi"])
def test_avi_frames_are_named_by_output_order_whatever_the_stream_declares(zoo, shown, name: str):
    """Two real AVI kinds whose stamps the index used to take for presentation times: an H.264
    stream whose B-frames start mid-file (the decoder learns of its reorder delay only there) and
    XviD's packed B-frames (the MPEG-4 parser's stamps for them are wrong). Named by stamp, frame 42
    came out showing frame 41 before the stamps fell, or with unwanted B-frames skipped, never
    fell at all. By output order every pick is the frame the ffmpeg CLI shows."""
    from sources.video_decode import VideoError, read_index

    n = len(shown[name])
    shows = [video_zoo.read_index(frame) for frame in shown[name]]
    assert shows == list(range(n))
    for wanted in ([42, 45], list(range(1, n, 3)), list(range(40, 56)), list(range(n))):
        delivered, error = [], None
        try:
            for i, pixels in decode_frames(str(zoo[name]), wanted):
                delivered.append((i, video_zoo.read_index(pixels)))
        except VideoError as exc:
            error = exc
        assert [(i, s) for i, s in delivered if s != shows[i]] == []  # never a frame misnamed
        assert error is None and sorted(i for i, _ in delivered) == wanted
    assert read_index(str(zoo[name])).decode_order_stamps and probe(str(zoo[name])).n_frames == n


def test_decoded_frames_whose_stamps_do_not_rise_are_refused_never_delivered(zoo, monkeypatch):
    """If the index ever took decode-order stamps for presentation times (its check switched off
    here, on the real AVI), the decoder's outputs come with falling stamps: the decode is refused
    `unsupported_container` rather than naming frames wrongly."""
    import dataclasses as dc

    from sources import video_decode

    real = video_decode.read_index
    monkeypatch.setattr(video_decode, "read_index",
                        lambda uri, *budgets: dc.replace(real(uri, *budgets), decode_order_stamps=False))
    with pytest.raises(video_decode.VideoError) as caught:
        list(decode_frames(str(zoo["h264_bframes.avi"]), range(100)))
    assert caught.value.reason == "unsupported_container" and "not presentation times" in caught.value.detail


def test_a_raw_h264_stream_named_ts_is_read_in_the_decoders_order(tmp_path):
    """A raw H.264 stream named .ts (FFmpeg reads it as what its bytes are): no packet carries a
    time stamp, so frame k is the decoder's k-th output, as the CLI shows it, timed at the rate the
    stream declares (`video_index.raw_stream_rate`; it was refused `unsupported_container`, and so
    is a stream with stamps missing in any other way)."""
    video_zoo.require_ffmpeg()
    (path,) = video_zoo.build_zoo(tmp_path, ["h264_elementary.ts"]).values()
    (record,) = list(VideoSource("zoo", str(tmp_path), strides=(2,)).read(str(path)))
    assert isinstance(record, VideoRecord) and record.n_frames == 40, record
    assert record.clips[0].lineage["restamped"] == "raw" and record.clips[0].lineage["fps"] == 25.0
    shown = _ffmpeg_rgb(path, "null", video_zoo.W, video_zoo.H)
    for clip, frames in clip_frames(record):
        for i, frame in zip(clip.frame_indices, frames):
            assert video_zoo.read_index(frame) == i and np.abs(frame.astype(int) - shown[i]).mean() < 0.5


def test_a_stream_whose_codec_ffmpeg_cannot_decode_is_a_reject_with_its_reason(tmp_path):
    """An MP4 whose moov comes after its frames (as PyAV and ffmpeg write it) cut inside its track's
    sample description, and a Matroska file whose CodecID names a codec FFmpeg lacks: FFmpeg opens
    each with a video stream of no codec, which PyAV gives no codec context. The probe raised
    AttributeError (found by a mutation fuzz), counted by the build's catch-all as decode_failed
    with a Python error for its detail."""
    video_zoo.require_ffmpeg()
    mp4 = video_zoo.encode(tmp_path / "cut.mp4", 16, "libx264", options=video_zoo.X264)
    data = mp4.read_bytes()
    assert data.index(b"moov") > data.index(b"mdat")
    mp4.write_bytes(data[: data.index(b"stsd") - 4])
    mkv = video_zoo.encode(tmp_path / "odd.mkv", 16, "libx264", options=video_zoo.X264)
    mkv.write_bytes(mkv.read_bytes().replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/XYZ", 1))
    for path in (mp4, mkv):
        (reject,) = list(VideoSource("zoo", str(tmp_path)).read(str(path)))
        assert isinstance(reject, Reject) and (reject.stage, reject.reason) == ("plan", "unsupported_codec"), reject

def test_a_video_track_ffmpeg_cannot_decode_beside_one_it_can_leaves_the_file_readable(tmp_path):
    """Two video tracks muxed by ffmpeg (`-map 0:v -map 1:v`), the first one's codec then named one
    FFmpeg lacks (Matroska's CodecID, MP4's sample entry): FFmpeg's best stream is the first, of no
    decoder, and the whole file was `unsupported_codec`. The track it can decode is read: its 16
    frames, from 0 (the other track has 24, from 100)."""
    video_zoo.require_ffmpeg()
    lacking = video_zoo.encode(tmp_path / "lacking.mp4", 24, "libx264", options=video_zoo.X264, first=100)
    decodable = video_zoo.encode(tmp_path / "decodable.mp4", 16, "libx264", options=video_zoo.X264)
    folder = tmp_path / "videos"
    folder.mkdir()
    for name, old, new in (("two.mkv", b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/XYZ"), ("two.mp4", b"avc1", b"xyz1")):
        video_zoo.ffmpeg("-i", str(lacking), "-i", str(decodable), "-map", "0:v", "-map", "1:v", "-c", "copy",
                         str(folder / name))
        data = (folder / name).read_bytes()
        at = data.index(old, data.index(b"moov") if name.endswith(".mp4") else 0)
        (folder / name).write_bytes(data[:at] + new + data[at + len(old):])
        for decoder in DECODERS:
            (record,) = list(VideoSource("zoo", str(folder), strides=(1,), decoder=decoder).read(str(folder / name)))
            assert isinstance(record, VideoRecord), (name, decoder, record)
            assert record.n_frames == 16, (name, decoder)
            ((clip, frames),) = list(clip_frames(record))
            assert [video_zoo.read_index(f) for f in frames] == list(range(16)), (name, decoder)
    mkv = (folder / "two.mkv").read_bytes()
    (folder / "none.mkv").write_bytes(mkv.replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/XYZ"))
    (reject,) = list(VideoSource("zoo", str(folder)).read(str(folder / "none.mkv")))
    assert isinstance(reject, Reject) and (reject.stage, reject.reason) == ("plan", "unsupported_codec"), reject


def test_probe_timeout_is_a_plan_reject(zoo):
    """A budget's `time_s` counts the seconds spent waiting on the decoding process: 1 ms was
    missed whenever the probe (20-50 ms) ended while this process was off the CPU (3 pytest workers
    on 2 cores: 2 of 4 full runs), as no wait was left to count. No wait is shorter than 1 ns."""
    source = VideoSource("zoo", str(zoo["x264_default.ts"].parent), limits=Budget(time_s=1e-9))
    (reject,) = list(source.read(str(zoo["x264_default.ts"])))
    assert isinstance(reject, Reject) and reject.reason == "decode_timeout" and reject.stage == "plan"


# -- memory judged from the declaration (issue 14) -------------------------------------------
def test_a_normal_clip_renders_exactly_as_a_full_size_decode_then_resize(zoo):
    """Within the budget nothing changes: each canvas frame is the full-size frame resized."""
    from transforms.resize import Canvas, fit_image

    path = zoo["h264_bframes.mp4"]
    (record,) = list(VideoSource("zoo", str(path.parent), strides=(3,)).read(str(path)))
    canvas = Canvas(32, "center_crop")
    full = dict(decode_frames(str(path), sorted({i for c in record.clips for i in c.frame_indices})))
    for clip, frames in clip_frames(record, canvas):
        assert not isinstance(frames, Exception), frames
        expected = np.stack([fit_image(full[i], 32, "center_crop") for i in clip.frame_indices])
        assert np.array_equal(frames, expected)


def test_frames_too_large_for_the_budget_at_full_size_are_converted_at_working_size(tmp_path):
    """A 1920x1080 clip under a budget that holds its decoder but not a full-size RGB conversion:
    each frame goes straight from the decoder to the canvas's working size (455x256)."""
    from sources.video_decode import DECODER_BASE_MB, judge_memory
    from transforms.resize import Canvas

    path = video_zoo.encode(tmp_path / "hd.mp4", 16, "libx264", size=(1920, 1080),
                            options={**video_zoo.X264, "g": "8"})
    canvas = Canvas(256, "center_crop")
    with av.open(str(path)) as container:
        codec = container.streams.video[0].codec_context
        judged = judge_memory(1920, 1080, codec.pix_fmt, codec.name, codec.level, True, working=(455, 256))
    full_mb = DECODER_BASE_MB + (judged.decoder_bytes + 1920 * 1080 * 9 >> 20)
    tight = full_mb - 1  # the full-size conversion no longer fits; the working size does
    full = dict(decode_frames(str(path), range(16), 16, canvas))
    reduced = dict(decode_frames(str(path), range(16), 16, canvas, memory_mb=tight))
    assert sorted(reduced) == list(range(16))
    for i in range(16):
        assert reduced[i].shape == full[i].shape == (256, 256, 3)
        small = [cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA).astype(int) for f in (reduced[i], full[i])]
        assert np.abs(small[0] - small[1]).mean() < 2  # the same picture (its texture is per-pixel noise)
    assert any(not np.array_equal(reduced[i], full[i]) for i in range(16))  # scaled by the scaler, not cv2
    with pytest.raises(Exception, match="video_too_large"):  # without a canvas it cannot fit
        list(decode_frames(str(path), range(16), 16, None, memory_mb=tight))


def test_memory_is_judged_from_the_declaration():
    from sources.video_decode import VideoError, frames_held, judge_memory

    assert frames_held("h264", 51, 3840, 2160) == 5 + 2  # level 5.1: 184320 DPB macroblocks / 32400
    assert frames_held("h264", 62, 8192, 8192) == 16 + 2  # larger than level 6.2 allows: the worst case
    assert frames_held("hevc", 153, 3840, 2160) == 6 + 2
    assert frames_held("mjpeg", 0, 8192, 8192) == 2
    with pytest.raises(VideoError) as caught:
        judge_memory(20000, 10000, "yuv420p", "h264", 62, False, max_pixels=10**8)
    assert caught.value.reason == "video_too_large" and "max_pixels=100000000" in caught.value.detail
    with pytest.raises(VideoError) as caught:
        judge_memory(8192, 8192, "yuv420p", "h264", 62, False, working=(256, 256))
    assert caught.value.reason == "video_too_large"
    assert "8192x8192 yuv420p h264" in caught.value.detail and "memory budget of 1536 MiB" in caught.value.detail
    assert not judge_memory(1920, 1080, "yuv420p", "h264", 40, False).reduce
    assert judge_memory(8192, 4320, "yuv420p", "h264", 62, True, memory_mb=768, working=(486, 256)).reduce
    ten_bit = judge_memory(1920, 1080, "yuv420p10le", "vp9", 0, False)
    assert ten_bit.decoder_bytes == 1920 * 1080 * 3 * (8 + 2)  # 2 bytes a sample, 4:2:0, 8 references


def test_non_square_pixels_are_shown_at_their_display_aspect_ratio(tmp_path):
    """A 64x48 clip flagged 2:1 pixels is shown 128x48 (as `ffmpeg -vf scale=iw*sar:ih`); squeezed
    back, each frame still shows its own index."""
    video_zoo.require_ffmpeg()
    coded = video_zoo.encode(tmp_path / "square.mp4", 40, "libx264", options={**video_zoo.X264, "g": "10"})
    video_zoo.ffmpeg("-i", str(coded), "-vf", "setsar=2", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
                     str(tmp_path / "sar.mp4"))
    path = tmp_path / "sar.mp4"
    (record,) = list(VideoSource("zoo", str(tmp_path), strides=(2,), decoder="decord").read(str(path)))
    lineage = record.clips[0].lineage
    assert record.decoder == "pyav" and (lineage["width"], lineage["height"]) == (128, 48)
    assert lineage["sample_aspect_ratio"] == "2:1" and lineage["sample_aspect_ratio_applied"] is True
    (clip, frames), = list(clip_frames(record))
    assert frames.shape == (16, 48, 128, 3)
    squeezed = [cv2.resize(f, (64, 48), interpolation=cv2.INTER_AREA) for f in frames]
    assert [video_zoo.read_index(f) for f in squeezed] == list(clip.frame_indices)


def _shown_rgb(path: Path, width: int, height: int, *options: str) -> np.ndarray:
    """Every frame the ffmpeg CLI decodes (input `options` first), as rgb24 (W x H)."""
    import subprocess

    raw = subprocess.run(["ffmpeg", "-v", "error", *options, "-i", str(path), "-map", "0:v:0", "-vsync",
                          "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


@pytest.mark.parametrize("left,decord_exact", [(8, False), (64, True)])
def test_a_cropping_rectangle_off_the_left_edge_shows_the_declared_picture(tmp_path, left: int, decord_exact: bool):
    """H.264 declares its picture as a cropping rectangle of the coded macroblocks (SPS
    frame_crop_*; `-bsf:v h264_metadata=crop_left=...` writes one, as some encoders do). FFmpeg
    applies a left crop only where the picture then stays 32-byte aligned, unless told
    `-flags unaligned`: an 8-column left crop came out 8 columns wider than the stream declares,
    and the video was refused as `video_too_large` (the frame larger than declared); decord squashed
    those columns into the declared width (24 levels mean off). The frames are now the coded
    ones cropped exactly (the same bitstream without the crop, cut in numpy), by PyAV wherever
    the crop is unaligned; an aligned one (64 columns) decord shows exactly too."""
    video_zoo.require_ffmpeg()
    full = video_zoo.encode(tmp_path / "full.mp4", 20, "libx264", size=(64 + left, 48),
                            options={**video_zoo.X264, "g": "10"})
    folder = tmp_path / "videos"
    folder.mkdir()
    path = folder / "cropped.mp4"
    video_zoo.ffmpeg("-i", str(full), "-c", "copy", "-bsf:v", f"h264_metadata=crop_left={left}:crop_top=4", str(path))
    expected = _shown_rgb(full, 64 + left, 48)[:, 4:, left:]  # the declared 64x44 picture
    assert np.array_equal(_shown_rgb(path, 64, 44, "-flags", "unaligned"), expected)  # ffmpeg agrees, told so
    for decoder in DECODERS:
        (record,) = list(VideoSource("zoo", str(folder), strides=(1,), decoder=decoder).read(str(path)))
        assert isinstance(record, VideoRecord), record
        lineage = record.clips[0].lineage
        assert (lineage["width"], lineage["height"]) == (64, 44)
        assert record.decoder == ("decord" if decoder == "decord" and decord_exact else "pyav")
        if decoder == "decord" and not decord_exact:
            assert "cropped from the left" in lineage["decoder_note"]
        ((clip, frames),) = list(clip_frames(record))
        assert np.array_equal(frames, expected[:16]), decoder


def test_an_odd_frame_height_gives_the_same_frames_with_either_decoder(tmp_path):
    """4:2:0 video of an odd height (VP8/VP9 from browsers' screen and WebRTC recordings, MJPEG):
    swscale converts it on its scaling path, where decord's bundled FFmpeg and PyAV's differ (0.8
    levels mean, up to 37, on Big Buck Bunny at 320x181; identical at 321x180 or 320x180). decord
    was chosen as exact, so `decoder: decord` rendered other bytes than PyAV: PyAV decodes now."""
    if not decord_available():
        pytest.skip("decord is not installed")
    frames = {}
    for height in (47, 48):
        folder = tmp_path / str(height)
        folder.mkdir()
        path = video_zoo.encode(folder / "screen.webm", 16, "libvpx-vp9", size=(64, height),
                                options={"deadline": "good", "cpu-used": "8", "g": "8"})
        for decoder in DECODERS:
            (record,) = list(VideoSource("zoo", str(folder), strides=(1,), decoder=decoder).read(str(path)))
            ((clip, frames[height, decoder]),) = list(clip_frames(record))
            if decoder == "decord":
                assert record.decoder == ("pyav" if height % 2 else "decord"), height
        assert np.array_equal(frames[height, "decord"], frames[height, "pyav"]), height


def _cover_art_files(tmp_path: Path) -> Path:
    """A 20-frame clip with a JPEG cover (larger than the video) added as ffmpeg's manual says
    (`-disposition:v:0 attached_pic`): Matroska keeps it as a 1-frame MJPEG track *before* the
    video, MP4 as an attached picture after it; and a song with cover art and no video."""
    clip = video_zoo.encode(tmp_path / "clip.mp4", 20, "libx264", options={**video_zoo.X264, "g": "10"})
    cover = tmp_path / "cover.jpg"
    Image.fromarray(video_zoo.pattern(999, 96, 96)).save(cover, quality=90)
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("cover_first.mkv", "cover.mp4"):
        video_zoo.ffmpeg("-i", str(cover), "-i", str(clip), "-map", "0", "-map", "1:v", "-c", "copy",
                         "-disposition:v:0", "attached_pic", str(folder / name))
    video_zoo.ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", "-i", str(cover), "-map", "0:a", "-map", "1",
                     "-c:a", "aac", "-c:v", "copy", "-disposition:v:0", "attached_pic", str(folder / "song.mp4"))
    return folder


def test_cover_art_is_never_taken_for_the_video(tmp_path):
    """The video is the moving stream a player picks, whatever the container puts first: a cover
    as a 1-frame track before it (Matroska) was read instead, and the whole file lost to a
    `too_few_frames` reject. A song with cover art but no video is `no_video_stream`."""
    video_zoo.require_ffmpeg()
    folder = _cover_art_files(tmp_path)
    for decoder in DECODERS:
        source = VideoSource("zoo", str(folder), strides=(1,), decoder=decoder)
        for name in ("cover_first.mkv", "cover.mp4"):
            (record,) = list(source.read(str(folder / name)))
            assert isinstance(record, VideoRecord), (name, record)
            assert record.n_frames == 20 and record.clips[0].lineage["codec"] == "h264"
            ((clip, frames),) = list(clip_frames(record))
            assert [video_zoo.read_index(f) for f in frames] == list(clip.frame_indices) == list(range(16))
        (reject,) = list(source.read(str(folder / "song.mp4")))
        assert isinstance(reject, Reject) and reject.reason == "no_video_stream", reject
        assert "cover art" in reject.detail


def _cli_default(path: Path, width: int, height: int, mapped: tuple[str, ...] = ()) -> np.ndarray:
    """Every frame of the video stream the ffmpeg CLI picks itself (no `-map`), or `mapped`, as rgb24."""
    import subprocess

    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), *mapped, "-vsync", "passthrough", "-f",
                          "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def test_of_two_video_tracks_the_one_the_ffmpeg_cli_picks_is_read(tmp_path):
    """A main track (128x96, frames 0..) and a smaller second angle (64x48, frames 500..) muxed by
    `-map 0:v -map 1:v`, in either order, as MP4 and Matroska; and the main track with a cover
    after it (`-disposition:v:1 attached_pic`). The ffmpeg CLI picks the highest resolution: in
    Matroska with the angle first, `av_find_best_stream` (followed before) gave the angle. A
    2560x2560 cover before the video in Matroska (`-disposition:v:0 attached_pic`: a still MJPEG
    track, not flagged) outscores it in the CLI: it is never taken for the video, also when written
    to a pipe (its tracks declare no frame count or duration: `STILL_CODECS` tells the cover)."""
    import subprocess

    video_zoo.require_ffmpeg()
    main = video_zoo.encode(tmp_path / "main.mp4", 20, "libx264", size=(128, 96), options=video_zoo.X264)
    angle = video_zoo.encode(tmp_path / "angle.mp4", 20, "libx264", options=video_zoo.X264, first=500)
    cover = tmp_path / "cover.jpg"
    Image.fromarray(video_zoo.pattern(999, 320, 320)).save(cover, quality=90)
    folder = tmp_path / "videos"
    folder.mkdir()
    for ext in ("mp4", "mkv"):
        for name, inputs in ((f"main_first.{ext}", (main, angle)), (f"angle_first.{ext}", (angle, main))):
            video_zoo.ffmpeg("-i", str(inputs[0]), "-i", str(inputs[1]), "-map", "0:v", "-map", "1:v", "-c", "copy",
                             str(folder / name))
        video_zoo.ffmpeg("-i", str(main), "-i", str(cover), "-map", "0:v", "-map", "1", "-c", "copy",
                         "-disposition:v:1", "attached_pic", str(folder / f"cover_after.{ext}"))
    big = tmp_path / "big.jpg"
    Image.fromarray(video_zoo.pattern(999, 2560, 2560)).save(big, quality=50)
    video_zoo.ffmpeg("-i", str(big), "-i", str(main), "-map", "0", "-map", "1:v", "-c", "copy",
                     "-disposition:v:0", "attached_pic", str(folder / "big_cover_first.mkv"))
    with open(folder / "big_cover_first_piped.mkv", "wb") as piped:  # no frame count, duration or tags
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(big), "-i", str(main), "-map", "0", "-map", "1:v", "-c",
                        "copy", "-disposition:v:0", "attached_pic", "-f", "matroska", "-"], stdout=piped, check=True)
    assert len(_cli_default(folder / "big_cover_first.mkv", 2560, 2560)) == 1  # the CLI shows the cover
    for path in sorted(folder.iterdir()):
        mapped = ("-map", "0:1") if path.name.startswith("big_cover_first") else ()
        reference = _cli_default(path, 128, 96, mapped)  # the CLI's own pick: the main track
        assert [video_zoo.read_index(f) for f in reference] == list(range(20)), path.name
        (record,) = list(VideoSource("zoo", str(folder), strides=(1,)).read(str(path)))
        assert isinstance(record, VideoRecord) and record.n_frames == 20, (path.name, record)
        ((clip, frames),) = list(clip_frames(record))
        assert [video_zoo.read_index(f) for f in frames] == list(range(16)), path.name
        assert np.abs(frames.astype(int) - reference[:16]).mean() < 1, path.name


def _cli_pick(path: Path) -> int:
    """The index of the video stream the ffmpeg CLI picks itself (its `Stream #0:N -> #0:0` line)."""
    import re
    import subprocess

    err = subprocess.run(["ffmpeg", "-hide_banner", "-i", str(path), "-frames:v", "1", "-f", "null", "-"],
                         capture_output=True, text=True).stderr
    return int(re.search(r"Stream #0:(\d+) -> #0:0", err).group(1))


def test_a_camera_mjpeg_track_competes_by_size_and_the_default_flag_counts(tmp_path):
    """An MJPEG camera track (128x96, 20 frames 0..) beside a smaller H.264 track (64x48, frames
    500..) in Matroska, both flagged default (as mkvmerge writes them) or neither: the ffmpeg CLI
    shows the MJPEG track, the larger; it was passed over for its codec's name (a cover's). And a
    default 64x48 track (frames 0..) before a 128x96 one not flagged: the CLI's 5,000,000 bonus
    for the default flag picks the small one."""
    video_zoo.require_ffmpeg()
    small = video_zoo.encode(tmp_path / "small.mkv", 20, "libx264", options=video_zoo.X264, first=500)
    camera = video_zoo.encode(tmp_path / "camera.avi", 20, "mjpeg", size=(128, 96), pix_fmt="yuvj420p")
    main = video_zoo.encode(tmp_path / "main.mkv", 20, "libx264", options=video_zoo.X264)
    large = video_zoo.encode(tmp_path / "large.mkv", 20, "libx264", size=(128, 96), options=video_zoo.X264,
                             first=500)
    folder = tmp_path / "videos"
    folder.mkdir()
    cases = {"both_default.mkv": (small, camera, "default", "default", 1, (128, 96)),
             "no_default.mkv": (small, camera, "0", "0", 1, (128, 96)),
             "small_default.mkv": (main, large, "default", "0", 0, (64, 48))}
    for name, (first, second, flag0, flag1, picked, size) in cases.items():
        path = folder / name
        video_zoo.ffmpeg("-i", str(first), "-i", str(second), "-map", "0:v", "-map", "1:v", "-c", "copy",
                         "-disposition:v:0", flag0, "-disposition:v:1", flag1, str(path))
        assert _cli_pick(path) == picked, name
        (record,) = list(VideoSource("zoo", str(folder), strides=(1,)).read(str(path)))
        assert isinstance(record, VideoRecord) and record.n_frames == 20, (name, record)
        assert (record.clips[0].lineage["width"], record.clips[0].lineage["height"]) == size, name
        ((clip, frames),) = list(clip_frames(record))
        assert [video_zoo.read_index(f) for f in frames] == list(range(16)), name


def _ffmpeg_rgb(path: Path, vf: str, width: int, height: int) -> np.ndarray:
    """Every frame the ffmpeg CLI shows, converted by `vf` (then rgb24): the independent reference."""
    import subprocess

    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vf", f"{vf},format=rgb24",
                          "-vsync", "passthrough", "-f", "rawvideo", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def test_interlaced_frames_are_woven_with_each_fields_chroma_by_either_decoder(tmp_path):
    """H.264 coded interlaced (`-flags +ildct+ilme`: broadcast and camcorder video) is not
    deinterlaced: a frame is its two fields woven, as ffmpeg shows it without a deinterlacer, each
    field's chroma upsampled on its own (swscale on a frame flagged interlaced, ffmpeg's
    `scale=interl=1`). decord upsampled it as a progressive frame (chroma of one field bled into
    the other's lines: 5 levels mean, up to 255 at colour edges, against PyAV's frames), yet was
    chosen as exact: now PyAV decodes such streams."""
    video_zoo.require_ffmpeg()
    path = tmp_path / "interlaced.mp4"
    video_zoo.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=128x96:rate=25", "-frames:v", "20", "-pix_fmt", "yuv420p",
                     *video_zoo.X264_CLI, "-flags", "+ildct+ilme", "-x264-params", "tff=1", str(path))
    fields = _ffmpeg_rgb(path, "scale=in_color_matrix=bt601:in_range=tv:flags=bilinear:interl=1", 128, 96)
    progressive = _ffmpeg_rgb(path, "scale=in_color_matrix=bt601:in_range=tv:flags=bilinear:interl=0", 128, 96)
    assert np.abs(fields.astype(int) - progressive).mean() > 2  # the file tells the two conversions apart
    for decoder in DECODERS:
        (record,) = list(VideoSource("zoo", str(tmp_path), strides=(1,), decoder=decoder).read(str(path)))
        assert record.decoder == "pyav" and record.clips[0].lineage["interlaced"] is True
        ((clip, frames),) = list(clip_frames(record))
        assert np.abs(frames.astype(int) - fields[:16]).mean() < 0.5, decoder


def test_ten_bit_frames_match_the_cli_in_flat_colour_and_differ_only_at_chroma_edges(tmp_path):
    """x264 10-bit 4:2:0: the CLI's swscale upsamples its chroma (default bicubic, or bilinear),
    where ours, reduced to 8 bits first (`sources.video_display.eight_bit_copy`), takes each chroma
    sample whole, as 8-bit frames are converted by both (tests/test_video_trust.py checks it against
    the tagged matrix's RGB): a difference of scalers, not of matrix, range or bit depth. Where the
    chroma is flat the frames equal the CLI's to 2 levels on these bars (8-bit rounding; up to 3 on
    testsrc2's colours); the difference is
    confined to the pixel pairs beside a chroma edge."""
    from scipy import ndimage

    video_zoo.require_ffmpeg()
    path = tmp_path / "ten_bit.ts"
    video_zoo.ffmpeg("-f", "lavfi", "-i", "smptebars=size=128x96:rate=25", "-frames:v", "8",
                     "-pix_fmt", "yuv420p10le", *video_zoo.X264_CLI, "-crf", "10", str(path))
    (record,) = list(VideoSource("zoo", str(tmp_path), strides=(1,), frames=8).read(str(path)))
    ((clip, frames),) = list(clip_frames(record))
    with av.open(str(path)) as container:
        first = next(container.decode(video=0))
        assert first.format.name == "yuv420p10le"
        u, v = (np.frombuffer(first.planes[k], "<u2").reshape(48, -1)[:, :64].astype(int) for k in (1, 2))
    # chroma samples with one within two samples (a bicubic filter's reach) more than 8 10-bit levels off
    near_edge = np.zeros((48, 64), bool)
    for c in (u, v):
        near_edge |= ndimage.maximum_filter(c, 5) - ndimage.minimum_filter(c, 5) > 8
    flat = ~np.repeat(np.repeat(near_edge, 2, 0), 2, 1)
    for flags in ("bilinear", "bicubic"):
        cli = _ffmpeg_rgb(path, f"scale=in_color_matrix=bt601:in_range=tv:flags={flags}", 128, 96)
        error = np.abs(frames[0].astype(int) - cli[0]).max(axis=-1)
        assert flat.mean() > 0.5 and error[flat].max() <= 2, (flags, error[flat].max())
        assert error[~flat].max() > 8  # the file tells the scalers apart, beside its chroma edges


# (file, ffmpeg's encoding options, the matrix and range it declares): HD-style BT.709, a phone's
# full-range H.264, a camera's full-range MJPEG (JFIF: BT.601)
TAGGED = [("bt709_tv.mp4", ["-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p", *video_zoo.X264_CLI,
                            "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"], "bt709", "tv"),
          ("bt709_pc.mp4", ["-vf", "scale=out_color_matrix=bt709:out_range=pc,format=yuv420p", *video_zoo.X264_CLI,
                            "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
                            "-color_range", "pc"], "bt709", "pc"),
          ("bt601_pc.avi", ["-vf", "scale=out_color_matrix=bt601:out_range=pc,format=yuvj420p", "-c:v", "mjpeg",
                            "-q:v", "2"], "bt601", "pc")]


@pytest.mark.parametrize("name,options,matrix,colour_range", TAGGED)
def test_frames_are_converted_with_the_matrix_and_range_the_stream_declares(tmp_path, name, options, matrix,
                                                                            colour_range):
    """Colour bars through both decoders match ffmpeg told the file's matrix and range
    (`scale=in_color_matrix=...:in_range=...`): the same swscale conversion, bit for bit here. The
    zoo's index checks (mean < 3 on a grey-ish texture) cannot see a wrong matrix (BT.601 for
    BT.709: 5.6 levels mean, 20 at the 95th percentile on these bars) or range (11 levels mean)."""
    video_zoo.require_ffmpeg()
    path = tmp_path / name
    video_zoo.ffmpeg("-f", "lavfi", "-i", "smptebars=size=128x96:rate=25", "-frames:v", "16", *options, str(path))
    other = {"bt709": "bt601", "bt601": "bt709"}[matrix]
    reference = {(m, r): _ffmpeg_rgb(path, f"scale=in_color_matrix={m}:in_range={r}:flags=bilinear", 128, 96)
                 for m, r in ((matrix, colour_range), (other, colour_range), (matrix, {"tv": "pc", "pc": "tv"}[colour_range]))}
    for decoder in DECODERS:
        (record,) = list(VideoSource("zoo", str(tmp_path), strides=(1,), decoder=decoder).read(str(path)))
        ((clip, frames),) = list(clip_frames(record))
        errors = {key: np.abs(frames.astype(int) - ref[:16]) for key, ref in reference.items()}
        right = errors.pop((matrix, colour_range))
        assert right.mean() < 0.5 and np.percentile(right, 99) <= 2, (decoder, right.mean())
        assert all(wrong.mean() > 4 for wrong in errors.values())  # the bars tell them apart


# (lavfi pattern, size, the matrix players take it in: mpv/libplacebo's guess by size): ffmpeg
# leaves all of them untagged; its HD bars are BT.709 values, the others BT.601
UNTAGGED = [("smptehdbars", (1280, 720), "bt709"), ("testsrc2", (1280, 544), "bt709"),
            ("smptebars", (720, 576), "bt601"), ("testsrc2", (640, 480), "bt601")]


@pytest.mark.parametrize("pattern,size,matrix", UNTAGGED)
def test_untagged_frames_are_converted_with_the_matrix_players_guess_from_their_size(tmp_path, pattern, size,
                                                                                     matrix):
    """A stream that declares no matrix (`ffmpeg -f lavfi -i smptehdbars ... out.mp4` writes
    none) is shown by mpv, Kodi, Chromium and Firefox as BT.709 when HD, BT.601 when SD; it was
    converted as BT.601 whatever its size (swscale's default): HD bars came out 3.6 levels mean
    off (testsrc2: 8.8), their 75% yellow (191, 191, 0) as (184, 190, 0). Now ffmpeg told the
    guessed matrix is matched by both decoders (decord, which takes BT.601, leaves HD to PyAV)."""
    video_zoo.require_ffmpeg()
    width, height = size
    path = tmp_path / f"{pattern}.mp4"
    video_zoo.ffmpeg("-f", "lavfi", "-i", f"{pattern}=size={width}x{height}:rate=25", "-frames:v", "4",
                     "-pix_fmt", "yuv420p", *video_zoo.X264_CLI, "-crf", "10", str(path))
    other = {"bt709": "bt601", "bt601": "bt709"}[matrix]
    right, wrong = (_ffmpeg_rgb(path, f"scale=in_color_matrix={m}:in_range=tv:flags=bilinear", width, height)[:4]
                    for m in (matrix, other))
    assert np.abs(right.astype(int) - wrong).mean() > 2  # the bars tell the two matrices apart
    if pattern == "smptehdbars":  # SMPTE RP 219's 75% yellow, second of the seven top bars
        yellow = right[0, height // 4, width // 8 + 9 * width // 56]
        assert np.abs(yellow.astype(int) - (191, 191, 0)).max() <= 3, yellow
    for decoder in DECODERS:
        (record,) = list(VideoSource("zoo", str(tmp_path), strides=(1,), frames=4, decoder=decoder).read(str(path)))
        ((clip, frames),) = list(clip_frames(record))
        assert record.decoder == ("pyav" if matrix == "bt709" else decoder)
        assert clip.lineage.get("matrix_guessed", "bt601") == matrix
        error = np.abs(frames.astype(int) - right)
        assert error.mean() < 0.5 and np.percentile(error, 99) <= 2, (decoder, error.mean())


def test_a_stream_whose_frame_size_changes_gives_the_same_sentences_with_either_decoder(tmp_path):
    """Clips joined by ffmpeg's concat demuxer (`-f concat -c copy`; broadcast captures and WebRTC
    recordings change size too): 128x96 frames, then 64x48. A clip within one size is its frames;
    one spanning the change is a `decode_failed` reject naming both sizes. decord was chosen as
    exact here and stretched the later frames to the first size, so that clip became a sentence
    with decord and a reject with PyAV: the probe sees the first and last sizes differ, and PyAV
    decodes."""
    video_zoo.require_ffmpeg()
    parts = [video_zoo.encode(tmp_path / "a.mkv", 20, "libx264", size=(128, 96), options=video_zoo.X264),
             video_zoo.encode(tmp_path / "b.mkv", 20, "libx264", size=(64, 48), options=video_zoo.X264, first=20)]
    (tmp_path / "list.txt").write_text("".join(f"file '{p}'\n" for p in parts))
    folder = tmp_path / "videos"
    folder.mkdir()
    video_zoo.ffmpeg("-f", "concat", "-safe", "0", "-i", str(tmp_path / "list.txt"), "-c", "copy",
                     str(folder / "joined.mkv"))
    for decoder in DECODERS:
        (record,) = list(VideoSource("zoo", str(folder), strides=(1,), decoder=decoder).read(str(folder / "joined.mkv")))
        assert record.decoder == "pyav" and record.n_frames == 40
        (first, frames), (second, error) = list(clip_frames(record))
        assert [video_zoo.read_index(f) for f in frames] == list(first.frame_indices) == list(range(16))
        assert isinstance(error, Exception) and error.reason == "decode_failed"
        assert "(48, 64, 3)" in error.detail and "(96, 128, 3)" in error.detail


def _joined(tmp_path: Path, runs: list[tuple[int, tuple[int, int]]], path: Path,
            options: dict[str, str] = video_zoo.X264) -> Path:
    """Runs of (frames, size) of the pattern, counting on from one run to the next, each a clip
    of its own (its SPS), joined by ffmpeg's concat demuxer with a stream copy (`-f concat -c
    copy`) into `path`: an HLS-like recording switching quality. `options`: libx264's, for each run."""
    parts, first = [], 0
    for k, (n, size) in enumerate(runs):
        parts.append(video_zoo.encode(tmp_path / f"run{k}.mkv", n, "libx264", size=size, options=options,
                                      first=first))
        first += n
    (tmp_path / "list.txt").write_text("".join(f"file '{p}'\n" for p in parts))
    path.parent.mkdir(exist_ok=True)
    video_zoo.ffmpeg("-f", "concat", "-safe", "0", "-i", str(tmp_path / "list.txt"), "-c", "copy", str(path))
    return path


@pytest.mark.parametrize("name", ["grown.ts", "grown.mkv"])
def test_a_stream_that_grows_keeps_its_frames_and_past_max_pixels_counts_the_rest(tmp_path, name: str):
    """A stream whose frames grow mid-way was refused whole (`video_too_large` at planning: its
    last frame was larger than the size the stream declares), even at 128x96. Now each new size is
    judged as it comes: within the budget every clip is the frames PyAV decodes one by one (at
    their own size; the clip spanning the change is `decode_failed` without a canvas, as for a
    shrinking stream); with `max_pixels` between the two sizes the decoder never allocates the
    larger frames, the clip before them is kept and the two needing them are `video_too_large`."""
    video_zoo.require_ffmpeg()
    path = _joined(tmp_path, [(20, (64, 48)), (28, (128, 96))], tmp_path / "videos" / name)
    reference = video_zoo.coded(path)
    assert [f.shape for f in reference] == [(48, 64, 3)] * 20 + [(96, 128, 3)] * 28
    for max_pixels, reasons in ((10**8, [None, "decode_failed", None]),
                                (64 * 48 * 2, [None, "video_too_large", "video_too_large"])):
        source = VideoSource("zoo", str(path.parent), strides=(1,), max_pixels=max_pixels)
        (record,) = list(source.read(str(path)))
        assert isinstance(record, VideoRecord) and record.decoder == "pyav" and record.n_frames == 48, record
        got = list(clip_frames(record, max_pixels=max_pixels))
        assert [getattr(result, "reason", None) for _, result in got] == reasons, max_pixels
        for clip, frames in got:
            if isinstance(frames, Exception):
                continue
            expected = np.stack([reference[i] for i in clip.frame_indices])
            assert frames.shape == expected.shape and np.abs(frames.astype(int) - expected).max() <= 1
            assert [video_zoo.read_index(f) for f in frames] == list(clip.frame_indices)
        if max_pixels < 10**8:
            assert "128x96" in got[2][1].detail and f"max_pixels={max_pixels}" in got[2][1].detail


def test_a_stream_growing_past_the_memory_budget_keeps_the_frames_before_it(tmp_path):
    """64x48 then 640x480 (`-f concat -c copy`) under a budget that holds the first size's decoder
    but not the second's: planned with all 40 frames, the decode gives frames 0..19 and then ends
    `video_too_large` naming the size and the budget (the probe refused the whole file before)."""
    from sources.video_decode import VideoError

    video_zoo.require_ffmpeg()
    path = _joined(tmp_path, [(20, (64, 48)), (20, (640, 480))], tmp_path / "grown.mkv")
    tight = 273  # MiB: 1 over the decoding process's base, room for 64x48 frames only
    info = probe(str(path), memory_mb=tight)
    assert (info.n_frames, info.size_changes, info.width) == (40, True, 64)
    got = []
    with pytest.raises(VideoError) as caught:
        for i, frame in decode_frames(str(path), range(40), 40, memory_mb=tight):
            got.append(video_zoo.read_index(frame))
    assert got == list(range(20))
    assert caught.value.reason == "video_too_large" and "640x480" in caught.value.detail
    assert f"memory budget of {tight} MiB" in caught.value.detail


def test_a_stream_growing_to_a_size_that_fits_only_reduced_converts_it_at_the_working_size(tmp_path,
                                                                                           monkeypatch):
    """64x48 then 640x480 (`-f concat -c copy`) to a 32-pixel canvas, under a budget that holds
    640x480 frames converted at the canvas's working size but not at full size: the grown size is
    judged again, so every frame decodes and those after the growth are converted reduced (judged
    only by the declared 64x48 they were converted at full size, over the budget)."""
    from sources import video_session
    from transforms.resize import Canvas

    video_zoo.require_ffmpeg()
    # both runs at level 3.0: the decoder holds as many frames of each size as the first SPS declares
    path = _joined(tmp_path, [(20, (64, 48)), (20, (640, 480))], tmp_path / "grown.mkv",
                   {**video_zoo.X264, "level": "3.0"})
    sizes: dict[tuple[int, int], tuple[int, int] | None] = {}
    convert = video_session.display

    def spying(frame, turns_mirrored=None, size=None, *args, **kwargs):
        sizes[frame.width, frame.height] = size
        return convert(frame, turns_mirrored, size, *args, **kwargs)

    monkeypatch.setattr(video_session, "display", spying)
    canvas = Canvas(32, "squash")
    fits_reduced = 277  # MiB: 640x480 fits converted at 32x32 (276..278), not at full size (279 on)
    got = list(decode_frames(str(path), range(40), 40, canvas, memory_mb=fits_reduced))
    assert [i for i, _ in got] == list(range(40))
    assert all(frame.shape == (32, 32, 3) for _, frame in got)
    assert sizes[640, 480] is not None and sizes[640, 480][0] * sizes[640, 480][1] < 640 * 480 // 16, sizes


def test_frames_growing_past_max_pixels_or_the_memory_budget_are_never_allocated(tmp_path):
    """20 frames of 64x48 then 2 of 4096x4096 (`-f concat -c copy`), probed and decoded in a child
    process whose peak memory is measured: with `max_pixels` between the sizes, or a memory budget
    that holds only the small frames' decoder, FFmpeg's decoder is told the limit (`max_pixels`:
    the largest frame the budget's judgement admits) and never allocates a 25 MiB frame. The
    budget's case decoded them at full size before judging them (the probe 70 MiB over, the whole
    video lost to `decode_memory` in a budgeted worker). Frames 0..19 are delivered, the two larger
    ones are `video_too_large`; the probe counts all 22."""
    import json
    import os
    import subprocess
    import sys

    video_zoo.require_ffmpeg()
    small = video_zoo.encode(tmp_path / "small.mkv", 20, "libx264", options=video_zoo.X264)
    large = tmp_path / "large.mkv"  # flat grey: a few kB to store, 25 MiB a frame to decode
    video_zoo.ffmpeg("-f", "lavfi", "-i", "color=gray:size=4096x4096:rate=25", "-frames:v", "2",
                     *video_zoo.X264_CLI, "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(large))
    (tmp_path / "list.txt").write_text(f"file '{small}'\nfile '{large}'\n")
    path = tmp_path / "grown.mkv"
    video_zoo.ffmpeg("-f", "concat", "-safe", "0", "-i", str(tmp_path / "list.txt"), "-c", "copy", str(path))
    runs = [{"max_pixels": 64 * 48 * 2}, {"memory_mb": 273}]  # 273 MiB: room for 64x48 frames only
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run([sys.executable, str(root / "tests" / "video_peak_rss.py"), str(path), "22",
                           json.dumps(runs)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout)
    for k, (job, added_mib, got, reason) in enumerate(measured):
        expected = ([22], None) if job == "probe" else (list(range(20)), "video_too_large")
        assert (got, reason) == expected, (runs[k // 2], job)
        assert added_mib < 16, (runs[k // 2], job, added_mib)  # one 4096x4096 frame is 24 MiB


def test_mpeg4_frames_within_a_small_max_pixels_decode(tmp_path):
    """FFmpeg's MPEG-4 Part 2 decoder asks for room beyond the frame (53,760 pixels at 64x48,
    125,440 at 320x240): told `max_pixels` plus 1/16 only, a 64x48 MPEG-4 AVI with B-frames under
    `max_pixels=6144` (twice its frames) was refused whole, `decode_failed`. It decodes."""
    path = video_zoo.encode(tmp_path / "bframes.avi", 20, "mpeg4", options={"bf": "2", "g": "10"})
    max_pixels = 64 * 48 * 2
    (record,) = list(VideoSource("zoo", str(tmp_path), strides=(1,), max_pixels=max_pixels).read(str(path)))
    assert isinstance(record, VideoRecord) and record.n_frames == 20, record
    ((clip, frames),) = list(clip_frames(record, max_pixels=max_pixels))
    assert [video_zoo.read_index(f) for f in frames] == list(range(16))


def test_a_stream_that_switches_up_and_back_down_is_never_squashed_by_decord(tmp_path):
    """An HLS-like recording switching quality up and back down (64x48, 128x96, 64x48; 20 frames
    each, `-f concat -c copy` into Matroska and MP4): its first and last frames agree, so decord
    was chosen and squashed the 128x96 frames into 64x48. Its key frames show two sizes: PyAV
    decodes, each frame at its own size, fitted to the canvas as PyAV's frame-by-frame decode is."""
    from transforms.resize import Canvas, fit_image

    video_zoo.require_ffmpeg()
    if "decord" not in DECODERS:
        pytest.skip("decord is not installed")
    folder = tmp_path / "videos"
    for name in ("updown.mkv", "updown.mp4"):
        path = _joined(tmp_path, [(20, (64, 48)), (20, (128, 96)), (20, (64, 48))], folder / name)
        reference = video_zoo.coded(path)
        assert [f.shape[:2] for f in reference] == [(48, 64)] * 20 + [(96, 128)] * 20 + [(48, 64)] * 20
        (record,) = list(VideoSource("zoo", str(folder), strides=(1,), decoder="decord").read(str(path)))
        assert record.decoder == "pyav" and "frame size changes" in record.clips[0].lineage["decoder_note"], name
        for clip, frames in clip_frames(record, Canvas(32, "squash")):
            expected = np.stack([fit_image(reference[i], 32, "squash") for i in clip.frame_indices])
            assert np.abs(frames.astype(int) - expected).max() <= 1, (name, clip.start)


def test_intra_only_frame_sizes_are_read_from_their_headers_not_decoded(tmp_path):
    """The decord key-frame check decoded every frame of an intra-only stream (an MJPEG camera's
    3000 frames at 720p: 4.6 CPU-s, its probe 0.08 s). MJPEG and ProRes frames are sized from
    their headers: an up-and-back-down stream of each (`-f concat -c copy`) still shows two sizes,
    each header states the decoded size, and the check on a 300-frame MJPEG camera file costs a
    fraction of decoding it."""
    from sources.video_bitstream import header_size
    from sources.video_decode import key_frame_sizes

    video_zoo.require_ffmpeg()
    for codec, ext, pix_fmt in (("mjpeg", "avi", "yuvj422p"), ("prores_ks", "mov", "yuv422p10le")):
        parts = [video_zoo.encode(tmp_path / f"{k}.{ext}", 2, codec, pix_fmt=pix_fmt, size=size)
                 for k, size in enumerate(((64, 48), (128, 96), (64, 48)))]
        (tmp_path / "list.txt").write_text("".join(f"file '{p}'\n" for p in parts))
        path = tmp_path / f"updown.{ext}"
        video_zoo.ffmpeg("-f", "concat", "-safe", "0", "-i", str(tmp_path / "list.txt"), "-c", "copy", str(path))
        assert key_frame_sizes(str(path)) == 2, ext
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.size:
                    (frame,) = stream.codec_context.decode(packet)
                    assert header_size(stream.codec_context.name, packet) == (frame.width, frame.height), ext
    camera = tmp_path / "camera.avi"
    video_zoo.ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-frames:v", "300", "-c:v", "mjpeg",
                     str(camera))
    _assert_one_size_found_cheaply(camera, 300)


def _assert_one_size_found_cheaply(path: Path, frames: int) -> None:
    """The key-frame size check finds one size in `path` for under a quarter of the CPU time that
    decoding its `frames` frames takes."""
    import time

    from sources.video_decode import key_frame_sizes

    start = time.process_time()
    assert key_frame_sizes(str(path)) == 1
    checked = time.process_time() - start
    start = time.process_time()
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == frames
    assert checked < (time.process_time() - start) / 4, path.name


def test_all_intra_h264_key_frames_are_decoded_once_per_sps(tmp_path):
    """The decord key-frame check decoded every key frame of all-intra H.264 (`-g 1`: 3000 frames
    at 320x240 took 1.7 CPU-s, as long as decoding the whole video; the probe 0.06 s). A size
    change needs a new SPS: a key frame is decoded only when it brings one not decoded before.
    An up-and-back-down all-intra stream (`-f concat -c copy`: an SPS before every key frame) still
    shows two sizes, with the SPS in the extradata only (`-g 1`) or repeated in every key frame
    (`repeat-headers=1`), in MP4 and Matroska; the check on a 300-frame one costs a fraction of
    decoding it."""
    from sources.video_decode import key_frame_sizes

    video_zoo.require_ffmpeg()
    for headers in ("repeat-headers=0", "repeat-headers=1"):
        intra = [*video_zoo.X264_CLI, "-g", "1", "-x264-params", headers]
        parts = []
        for k, size in enumerate(("64x48", "128x96", "64x48")):
            parts.append(tmp_path / f"{k}.mkv")
            video_zoo.ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25", "-frames:v", "5", *intra,
                             str(parts[-1]))
        (tmp_path / "list.txt").write_text("".join(f"file '{p}'\n" for p in parts))
        for ext in ("mkv", "mp4"):
            path = tmp_path / f"updown.{ext}"
            video_zoo.ffmpeg("-f", "concat", "-safe", "0", "-i", str(tmp_path / "list.txt"), "-c", "copy", str(path))
            assert key_frame_sizes(str(path)) == 2, (headers, ext)
        path = tmp_path / "intra.mp4"
        video_zoo.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "300", *intra,
                         str(path))
        _assert_one_size_found_cheaply(path, 300)


def test_an_sps_in_new_extradata_is_decoded_for_its_size(tmp_path):
    """FFmpeg's FLV demuxer hands a sequence header re-sent mid-stream as the next packet's
    `new_extradata` side data: the key frame's SPS is there, not in the packet (x264 in MP4 keeps
    it out of band), so that key frame must be decoded. ffmpeg's concat puts SPSs in-band; the FLV
    is written here as an RTMP stream that changes resolution sends it."""
    from sources.video_decode import key_frame_sizes

    video_zoo.require_ffmpeg()
    parts = []
    for k, size in enumerate(("64x48", "128x96")):
        parts.append(tmp_path / f"{k}.mp4")
        video_zoo.ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25", "-frames:v", "4",
                         *video_zoo.X264_CLI, "-g", "2", "-bf", "0", str(parts[-1]))
    path = video_zoo.flv_resending_sequence_headers(parts, tmp_path / "rtmp.flv")
    with av.open(str(path)) as container:
        side = [k for k, packet in enumerate(container.demux(video=0)) if packet.has_sidedata("new_extradata")]
    assert side == [4]  # the second part's first key frame
    assert key_frame_sizes(str(path)) == 2


def test_vp9_sizes_read_each_frame_of_a_superframe():
    """A VP9 packet may carry several frames (a superframe): `vpxenc`'s hidden alt-ref frame and
    the next shown frame (tests/fixtures/video; FFmpeg's libvpx-vp9 wrapper wrote none when asked).
    Read as one frame, the packet's shown frame is missed (46 of 48 sizes): each one counts."""
    import subprocess

    from sources.video_bitstream import VP9Sizes
    from sources.video_decode import key_frame_sizes

    video_zoo.require_ffmpeg()
    path = Path(__file__).parent / "fixtures" / "video" / "vp9_alt_ref.webm"
    shown = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "frame=width,height",
                            "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout.split()
    sizes, superframes, reader = [], 0, VP9Sizes()
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            if packet.size:
                data = bytes(packet)
                superframes += (data[-1] & 0xE0) == 0xC0  # the superframe index's marker (VP9 spec, annex B)
                sizes += reader.shown(data)
    assert superframes == 2 and len(shown) == 48
    assert sizes == [tuple(int(v) for v in line.split(",")) for line in shown]
    assert key_frame_sizes(str(path)) == 1


def test_vp9_that_changes_size_on_an_inter_frame_keeps_each_frames_size_with_either_decoder(tmp_path):
    """VP9 may change size on any frame (reference scaling: libvpx's dynamic resize in real-time
    encodes, WebRTC's): `vpxenc` made 480x360, then 360x270 from inter frame 60, back to 480x360 at
    90, one key frame (tests/fixtures/video). Its first and last frames and its key frames agree,
    so decord was chosen and stretched frames 60-89 to 480x360. The check reads every VP9 frame's
    size from its header: PyAV decodes, each frame at the size ffprobe shows, the clips spanning a
    change `decode_failed` naming both sizes, as with any stream that changes size."""
    import shutil
    import subprocess

    from sources.video_bitstream import VP9Sizes
    from sources.video_decode import key_frame_sizes

    video_zoo.require_ffmpeg()
    with pytest.raises(ValueError):  # a key frame cut inside its header: the check ends, PyAV decodes
        VP9Sizes().shown(b"\x82\x49")
    path = tmp_path / "webrtc.webm"
    shutil.copyfile(Path(__file__).parent / "fixtures" / "video" / "vp9_dynamic_resize.webm", path)
    shown = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
                            "frame=key_frame,width,height", "-of", "csv=p=0", str(path)],
                           capture_output=True, text=True, check=True).stdout.split()
    sizes = [tuple(int(v) for v in line.split(",")[1:]) for line in shown]
    assert sizes == [(480, 360)] * 60 + [(360, 270)] * 30 + [(480, 360)] * 10
    assert [line.split(",")[0] for line in shown].count("1") == 1  # frame 0 alone is a key frame
    assert key_frame_sizes(str(path)) == 2
    reference = video_zoo.coded(path)
    for decoder in DECODERS:
        (record,) = list(VideoSource("zoo", str(tmp_path), strides=(1,), decoder=decoder).read(str(path)))
        assert record.decoder == "pyav" and record.n_frames == 100, decoder
        for clip, frames in clip_frames(record):
            indices = list(clip.frame_indices)
            if len({sizes[i] for i in indices}) > 1:
                assert isinstance(frames, Exception) and frames.reason == "decode_failed", (decoder, clip.start)
                assert "(270, 360, 3)" in frames.detail and "(360, 480, 3)" in frames.detail
                continue
            assert frames.shape[1:3] == reference[indices[0]].shape[:2], (decoder, clip.start)
            assert np.abs(frames.astype(int) - np.stack([reference[i] for i in indices])).mean() < 0.5


def test_a_key_frame_check_that_fails_leaves_the_video_to_pyav(tmp_path, monkeypatch):
    """The decord key-frame check over its budget (an all-intra stream of many frames) lost the
    whole video to `decode_timeout`, though it was probed fine and PyAV renders it: PyAV decodes it
    now, the reason in the lineage."""
    from sources.budget import BudgetExceeded

    if not decord_available():
        pytest.skip("decord is not installed")
    path = video_zoo.encode(tmp_path / "clip.mp4", 16, "libx264", options=video_zoo.X264)
    real = budget.call

    def over_budget(job: str, *args, **kwargs):
        if job.endswith(":key_frame_sizes"):
            raise BudgetExceeded("decode_timeout", "over the budget of 3 CPU-seconds")
        return real(job, *args, **kwargs)

    monkeypatch.setattr(budget, "call", over_budget)
    (record,) = list(VideoSource("zoo", str(tmp_path), strides=(1,), decoder="decord").read(str(path)))
    assert isinstance(record, VideoRecord) and record.decoder == "pyav", record
    assert "decode_timeout" in record.clips[0].lineage["decoder_note"]
    ((clip, frames),) = list(clip_frames(record))
    assert [video_zoo.read_index(f) for f in frames] == list(range(16))


@pytest.mark.slow
def test_a_build_of_the_zoo_gives_the_same_bytes_as_threads(zoo, tmp_path, caplog):
    """The ffmpeg-made zoo (every codec, rotations, VFR, cut streams, a truncated file) built by one
    in-process worker, and by the default 2 workers as threads (each with its own decoder process;
    every video rendered by the early render pool) while every core is kept busy: the same shards,
    rejects and counts."""
    import logging

    from conftest import busy_machine, early_rendered, png_row_filters, shard_digests
    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import parse_config

    folder = next(iter(zoo.values())).parent

    def build(name: str, workers: int) -> dict:
        config = parse_config({
            "version": 1, "output": str(tmp_path / name), "seed": 0,
            "image": {"size": 64, "resize": "center_crop"}, "split": {"val_fraction": 0.0},
            "sources": [{"name": "zoo", "type": "video", "path": str(folder), "num_shards": 2,
                         "strides": [10, 20, 30]}],
            "tokenizer": {"enabled": False}, "beam": {"direct_num_workers": workers}})
        return run_build(config).summary

    caplog.set_level(logging.INFO, logger="uvd_pipeline.build")
    one = build("one", 1)
    assert early_rendered(caplog) is None  # one worker: no pool
    caplog.clear()
    with busy_machine():
        two = build("two", 2)
    rendered, listed = early_rendered(caplog)
    assert rendered == listed > 0
    assert (one["run"]["worker_mode"], two["run"]["worker_mode"]) == ("in_memory", "multi_threading")
    assert shard_digests(tmp_path / "two") == shard_digests(tmp_path / "one")
    assert (tmp_path / "two" / "rejects.jsonl").read_bytes() == (tmp_path / "one" / "rejects.jsonl").read_bytes()
    counters = one["run"]["counters"]
    assert counters == two["run"]["counters"]
    assert counters.get("zoo.rendered_sentences", 0) > 0
    # the frames' PNGs (default level 1: one Avg row filter) read back in Pillow as in OpenCV
    frames = 0
    for shard in sorted((tmp_path / "two" / "rendered").rglob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in (m for m in tar if m.name.endswith(".png")):
                png = tar.extractfile(member).read()
                pillow = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
                assert np.array_equal(pillow, decode_png(png)) and set(png_row_filters(png)) == {3}
                frames += 1
    assert frames == 16 * counters["zoo.rendered_sentences"]


def test_a_folder_of_animated_gifs_is_read_as_videos_with_their_delays(tmp_path):
    """TGIF and other GIF datasets are folders of animated GIFs: none was listed ("no videos"). The
    CLI's GIF and ImageMagick's transparency-optimised copy of it with two delays (frames that only
    paint what changed over the frame before): each frame is what Pillow composites, and each
    frame's time the sum of the delays before it. (Read and rendered: the zoo's `anim.gif` above.)"""
    import subprocess

    from PIL import Image, ImageSequence

    video_zoo.require_ffmpeg()
    folder = tmp_path / "tgif"
    folder.mkdir()
    cli, optimised = folder / "tumblr_a.gif", folder / "tumblr_b.gif"
    video_zoo.ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=25", "-frames:v", "20", "-f", "gif", str(cli))
    subprocess.run(["convert", str(cli), "-coalesce", "-layers", "OptimizeTransparency", "-set", "delay",
                    "%[fx:t<12?4:10]", str(optimised)], check=True)
    assert sorted(Path(uri).name for uri in VideoSource("tgif", str(folder)).units()) == [cli.name, optimised.name]
    for path, delays in ((cli, [0.04] * 20), (optimised, [0.04] * 12 + [0.1] * 8)):
        with Image.open(path) as image:
            expected = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]
        info = probe(str(path))
        assert info.n_frames == len(expected) == 20
        assert info.times == pytest.approx([sum(delays[:i]) for i in range(20)])
        got = dict(decode_frames(str(path), range(20)))
        assert all(np.array_equal(got[i], expected[i]) for i in range(20)), path.name
