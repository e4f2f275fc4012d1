"""Video sentences on the sample corpus: exactly 16 frames per stride, stride reduction, real
frame counts, one record per video. Frame exactness on every container: test_video_zoo.py."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import video_zoo

from sources.records import Reject, VideoRecord
from sources.video import VideoSource, clip_frames, decord_available, plan_clips, probe_video, read_clip_frames


def test_plan_exact_sixteen_frames_at_each_stride():
    plans = plan_clips(1000, (10, 20, 30))
    assert {(p.stride, p.start) for p in plans} == {
        (10, 0), (10, 160), (10, 320), (10, 480), (10, 640), (10, 800),
        (20, 0), (20, 320), (20, 640), (30, 0), (30, 480),
    }
    # every window's frames lie on the stride-10 grid: the strides share frames
    assert set().union(*(p.indices for p in plans)) <= set(range(0, 1000, 10))
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


DECODERS = ["pyav"] + (["decord"] if decord_available() else [])


def test_real_frame_count_beats_wrong_metadata(sample_corpus: Path):
    video_zoo.require_ffmpeg()
    video = sample_corpus / "video"
    probe = probe_video(str(video / "truncated_faststart.mp4"))
    assert probe.metadata_frames == 120  # the index at the front still promises every frame
    # what a player shows (the ffmpeg CLI): more than PyAV's decode loop gives before the cut's
    # error stops it, since frames still held in the decoder come out on the final flush
    assert probe.n_frames == len(video_zoo.sequential(video / "truncated_faststart.mp4")) == 68
    assert len(video_zoo.coded(video / "truncated_faststart.mp4")) == 66
    mkv = probe_video(str(video / "bikes_h264.mkv"), "pyav")
    assert mkv.metadata_frames == 0 and mkv.n_frames == 250  # Matroska stores no frame count
    cut = probe_video(str(video / "truncated_bikes.mkv"))
    assert cut.n_frames == len(video_zoo.sequential(video / "truncated_bikes.mkv")) < 250


@pytest.mark.parametrize("decoder", DECODERS)
def test_source_plans_one_record_per_video_and_rejects(sample_corpus: Path, decoder: str):
    source = VideoSource("clips", str(sample_corpus / "video"), decoder=decoder)
    items = [item for uri in source.units() for item in source.read(uri)]
    rejects = sorted(i.reason for i in items if isinstance(i, Reject))
    assert rejects == ["too_few_frames", "unreadable"]
    videos = {v.group: v for v in items if isinstance(v, VideoRecord)}
    by_video = {g: sorted((c.stride, c.start) for c in v.clips) for g, v in videos.items()}
    for video in videos.values():
        for clip in video.clips:
            assert len(clip.frame_indices) == 16 == len(clip.frame_times) and "." not in clip.key
            assert clip.frame_times[0] <= clip.frame_times[-1]
            assert clip.decoder == video.decoder
    bikes = next(g for g in by_video if g.endswith("bikes_mp4_" + g.rsplit("_", 1)[-1]) and "h264" not in g)
    assert by_video[bikes] == [(10, 0), (16, 0)]  # 250 frames: stride 10 fits; 20 and 30 -> 16
    short = next(g for g in by_video if "short_20f" in g)
    assert by_video[short] == [(1, 0)]
    assert sum(len(v) for v in by_video.values()) == 13
    truncated = next(v for g, v in videos.items() if "truncated_faststart" in g)
    assert truncated.decoder == "pyav"  # a cut file: decord would count the lost frames
    if decoder == "decord":
        assert "cut file" in truncated.clips[0].lineage["decoder_note"]
        assert videos[bikes].decoder == "decord"


@pytest.mark.parametrize("decoder", DECODERS)
def test_clip_frames_match_a_sequential_decode(sample_corpus: Path, decoder: str):
    source = VideoSource("clips", str(sample_corpus / "video"), strides=(2,), decoder=decoder)
    uri = str(sample_corpus / "video" / "clip_40f.avi")
    (video,) = [c for c in source.read(uri) if isinstance(c, VideoRecord)]
    (clip,) = video.clips
    frames = read_clip_frames(clip)
    everything = video_zoo.coded(sample_corpus / "video" / "clip_40f.avi")
    assert frames.shape == (16, 180, 320, 3)
    assert all(np.array_equal(frames[i], everything[2 * i]) for i in range(16))


def _links_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A video root holding a real clip, links in and out of it, a link to /dev/zero, a fifo and
    a folder link leading out; the linked videos outside are real clips too."""
    import os

    root, outside = tmp_path / "root", tmp_path / "outside"
    (outside / "more").mkdir(parents=True)
    root.mkdir()
    video_zoo.encode(root / "inside.mp4", 20, "libx264", options={**video_zoo.X264, "g": "10"})
    video_zoo.encode(outside / "secret.mp4", 24, "libx264", options={**video_zoo.X264, "g": "10"}, first=100)
    video_zoo.encode(outside / "more" / "other.mp4", 18, "libx264", options={**video_zoo.X264, "g": "10"}, first=200)
    (root / "link_in.mp4").symlink_to(root / "inside.mp4")
    (root / "link_out.mp4").symlink_to(outside / "secret.mp4")
    (root / "zero_dev.mp4").symlink_to("/dev/zero")
    (root / "linkdir").symlink_to(outside / "more")
    os.mkfifo(root / "fifo.mp4")
    return root, outside


def _names(items, kind) -> dict[str, object]:
    """Items of `kind` by key, without the key's hash suffix."""
    import re

    return {re.sub(r"_[0-9a-f]{8}$", "", i.key): i for i in items if isinstance(i, kind)}


def _shown_indices(record: VideoRecord, path: Path) -> list[list[int]]:
    """Per clip, the index each frame shows, after checking its pixels are the ffmpeg CLI's frame."""
    reference = video_zoo.sequential(path)
    shown = []
    for clip in record.clips:
        frames = read_clip_frames(clip)
        for i, frame in zip(clip.frame_indices, frames):
            assert np.abs(frame.astype(int) - reference[i]).mean() < 3, (clip.key, i)
        shown.append([video_zoo.read_index(f) for f in frames])
    return shown


def test_links_out_of_the_root_fifos_and_devices_are_rejects_never_opened(tmp_path: Path):
    """A file link leading out (even to /dev/zero) and a folder link leading out are `outside_root`,
    a fifo `not_a_file`: listed, rejected, never opened (opened, a fifo blocks the probe until its
    time budget ends: 600 s by default, 20 here). A link that stays inside is read like the file it
    names."""
    from sources.budget import Budget

    video_zoo.require_ffmpeg()
    root, _ = _links_tree(tmp_path)
    source = VideoSource("vid", str(root), strides=(1,), limits=Budget(time_s=20))
    items = [item for uri in source.units() for item in source.read(uri)]
    rejects = {key: r.reason for key, r in _names(items, Reject).items()}
    assert rejects == {"vid-link_out_mp4": "outside_root", "vid-zero_dev_mp4": "outside_root",
                       "vid-linkdir": "outside_root", "vid-fifo_mp4": "not_a_file"}
    assert all(r.stage == "read" and "secret" not in r.detail for r in items if isinstance(r, Reject))
    records = _names(items, VideoRecord)
    assert sorted(records) == ["vid-inside_mp4", "vid-link_in_mp4"]
    for record in records.values():
        assert _shown_indices(record, root / "inside.mp4") == [list(range(16))]


def test_follow_links_reads_linked_videos_and_folders(tmp_path: Path):
    """With `follow_links` the linked file and folder outside are read (their real frames); a link
    to a device is still `not_a_file`, and the fifo too."""
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.source_factory import make_source

    video_zoo.require_ffmpeg()
    root, outside = _links_tree(tmp_path)
    config = parse_config({"version": 1, "output": str(tmp_path / "out"), "sources": [
        {"name": "vid", "type": "video", "path": str(root), "strides": [1], "follow_links": True}]})
    source = make_source(config.sources[0])
    assert source.follow_links is True
    items = [item for uri in source.units() for item in source.read(uri)]
    rejects = {key: r.reason for key, r in _names(items, Reject).items()}
    assert rejects == {"vid-zero_dev_mp4": "not_a_file", "vid-fifo_mp4": "not_a_file"}
    records = _names(items, VideoRecord)
    assert sorted(records) == ["vid-inside_mp4", "vid-link_in_mp4", "vid-link_out_mp4", "vid-linkdir-other_mp4"]
    assert _shown_indices(records["vid-link_out_mp4"], outside / "secret.mp4") == [list(range(100, 116))]
    assert _shown_indices(records["vid-linkdir-other_mp4"], outside / "more" / "other.mp4") == \
        [list(range(200, 216))]


def test_a_decode_paused_past_its_time_budget_still_renders_the_same_clips(sample_corpus: Path, tmp_path: Path):
    """`time_budget_s` counts the CPU seconds of the video's decoding process, not the seconds
    waited: a decode held still for twice its budget (as a busy machine holds it: SIGSTOP, then
    SIGCONT) gives the same sentences as an undisturbed one, where a budget of waited seconds
    made it a `decode_timeout` on a busy machine only."""
    import contextlib
    import os
    import signal
    import threading

    from sources import budget
    from sources.budget import Budget
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.render import RenderSettings, render_video
    from uvd_pipeline.source_factory import make_source

    config = parse_config({"version": 1, "output": str(tmp_path / "out"), "sources": [
        {"name": "vid", "type": "video", "path": str(sample_corpus / "video"), "strides": [2],
         "time_budget_s": 1.5}]})
    source = make_source(config.sources[0])
    assert source.limits == Budget(time_s=60.0, memory_mb=1536, cpu_s=1.5)
    (record,) = [r for r in source.read(str(sample_corpus / "video" / "clip_40f.avi")) if isinstance(r, VideoRecord)]
    settings = RenderSettings(64, "center_crop", 0, 10**8, 1, 0, 0.0)
    undisturbed = render_video(record, settings)
    assert undisturbed and not any(isinstance(s, Reject) for s in undisturbed)
    worker = budget._worker(record.decoder).process.pid  # this thread's decoding process, warm
    os.kill(worker, signal.SIGSTOP)
    resume = threading.Timer(3.0, os.kill, (worker, signal.SIGCONT))
    resume.start()
    try:
        paused = render_video(record, settings)
    finally:
        resume.cancel()
        with contextlib.suppress(ProcessLookupError):  # killed: the assertions below say so
            os.kill(worker, signal.SIGCONT)
    assert budget._worker(record.decoder).process.pid == worker  # not killed
    assert [s.images for s in paused] == [s.images for s in undisturbed]


def test_a_mac_copy_of_a_video_folder_starts_no_decoder_job_for_what_it_leaves(tmp_path: Path, monkeypatch):
    """A video folder copied and zipped on a Mac holds `._clip.mp4` beside `clip.mp4` and
    `__MACOSX/._clip.mp4`: each was probed in a decoder job (a `plan` reject of the decoder's making,
    and a wasted process), `__MACOSX/` once per file in it. Now `._clip.mp4` and the `__MACOSX/`
    folder are one `os_metadata` reject each, an Office owner file `~$clip.mp4` a `hidden_file`
    one, and only `clip.mp4` reaches a decoder job."""
    import os_junk

    from sources import budget
    from sources.budget import Budget

    video_zoo.require_ffmpeg()
    root = tmp_path / "videos"
    root.mkdir()
    video_zoo.encode(root / "clip.mp4", 20, "libx264", options={**video_zoo.X264, "g": "10"})
    os_junk.mac_copy(root), os_junk.mac_zip(root, "clip.mp4"), os_junk.editors(root, "clip.mp4")
    jobs: list[str] = []
    real_call = budget.call
    monkeypatch.setattr(budget, "call", lambda function, *args, **kw: jobs.append(args[0]) or real_call(function, *args, **kw))
    source = VideoSource("vid", str(root), strides=(1,), limits=Budget(time_s=20))
    items = [item for uri in source.units() for item in source.read(uri)]
    assert sorted(_names(items, VideoRecord)) == ["vid-clip_mp4"]
    # every file of the folder is counted (the lock files, `.git/` and `.DS_Store` were left out unlisted)
    assert sorted((r.reason, r.detail) for r in items if isinstance(r, Reject)) == [
        ("hidden_file", ".git/: hidden (a tool's lock, temporary or repository file), not read"),
        ("hidden_file", ".nfs000000000012345600000001: hidden (a tool's lock, temporary or repository file), not read"),
        ("hidden_file", ".~lock.clip.mp4#: hidden (a tool's lock, temporary or repository file), not read"),
        ("hidden_file", "~$clip.mp4: hidden (a tool's lock, temporary or repository file), not read"),
        ("os_metadata", ".DS_Store: macOS Finder's folder settings, not read"),
        ("os_metadata", "._clip.mp4: macOS AppleDouble metadata of clip.mp4, not read"),
        ("os_metadata", "__MACOSX/: macOS archive metadata (a zip's AppleDouble files), not read")]
    assert {os.path.basename(uri) for uri in jobs} == {"clip.mp4"}


def test_names_from_a_mac_key_in_nfc_and_twins_are_counted(tmp_path: Path):
    """A Mac (HFS+, or a copy over SMB/NFS from one) hands `vidéo.mp4` and its folder over in NFD:
    the same videos copied from there had other keys, so other sentences. Now keys and lineage are
    taken in NFC (the file is still opened by its own name); a folder holding one name in both
    forms (a Linux copy merged with a Mac's) reads the file named in NFC, and the other is a
    `duplicate_key` reject of that key, never a second record of it."""
    import unicodedata

    video_zoo.require_ffmpeg()
    name = "\u00e9t\u00e9/vid\u00e9o.mp4"
    read = {}
    for folder, forms in (("NFC", ("NFC",)), ("NFD", ("NFD",)), ("twins", ("NFC", "NFD"))):
        for first, form in enumerate(forms):
            path = tmp_path / folder / unicodedata.normalize(form, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            video_zoo.encode(path, 16, "mpeg4", first=100 * first)
        source = VideoSource("vid", str(tmp_path / folder), strides=(1,))
        read[folder] = [item for uri in source.units() for item in source.read(uri)]
    assert os.listdir(tmp_path / "NFD") == [unicodedata.normalize("NFD", "\u00e9t\u00e9")]  # the disk keeps NFD
    (nfc,), (nfd,) = read["NFC"], read["NFD"]
    assert isinstance(nfd, VideoRecord) and os.path.exists(nfd.uri)
    assert [(c.key, c.lineage) for c in nfd.clips] == [(c.key, c.lineage) for c in nfc.clips]
    assert nfd.clips[0].lineage["file"] == "vid\u00e9o.mp4"
    records = [i for i in read["twins"] if isinstance(i, VideoRecord)]
    rejects = [i for i in read["twins"] if isinstance(i, Reject)]
    assert [r.key for r in records] == [nfc.key] and records[0].uri.endswith(name)
    assert _shown_indices(records[0], Path(records[0].uri)) == [list(range(16))]  # the NFC file's frames
    assert [(r.key, r.reason) for r in rejects] == [(nfc.key, "duplicate_key")]
    assert rejects[0].detail == f"{name} (NFD) is the name of {name} (NFC) in another Unicode form: that file is read"


def test_twins_named_in_nfd_and_in_a_mixed_form_are_told_apart_when_listed(tmp_path: Path, monkeypatch):
    """`été.mp4` twice, neither in NFC: one in NFD (a Mac's copy), one mixed (the first `é`
    composed, the second not, as a tool that edits names piecemeal leaves them). Only a twin in
    NFC was looked for, so both were read as two records of one key that met at assembly as a
    late duplicate. Now the listing groups the names one key takes (NFC first, then by name):
    the first is read, each other is a `duplicate_key` reject naming it, never probed."""
    import unicodedata

    import sources.video as video

    nfd, mixed = unicodedata.normalize("NFD", "\u00e9t\u00e9.mp4"), "\u00e9te\u0301.mp4"
    assert not unicodedata.is_normalized("NFC", nfd) and not unicodedata.is_normalized("NFC", mixed)
    for name in (nfd, mixed, "plain.mp4"):
        (tmp_path / name).write_bytes(b"")  # never decoded: the probe below stands in
    probed: list[str] = []

    def probe(uri: str, *args):
        probed.append(os.path.basename(uri))
        raise video.VideoError("unreadable", "not a video")

    monkeypatch.setattr(video, "probe_video", probe)
    source = VideoSource("vid", str(tmp_path), strides=(1,))
    units = source.units()
    items = [item for unit in units for item in source.read(unit)]
    key = source.video_key(str(tmp_path / nfd))
    assert key == source.video_key(str(tmp_path / mixed)) and len(units) == 2  # the twins: one unit
    assert sorted((i.key, i.reason) for i in items) == sorted([
        (key, "duplicate_key"), (key, "unreadable"), (source.video_key(str(tmp_path / "plain.mp4")), "unreadable")])
    assert sorted(probed) == sorted([nfd, "plain.mp4"])  # by name, NFD's `e` + U+0301 sorts before U+00E9
    (twin,) = [i for i in items if i.reason == "duplicate_key"]
    assert twin.detail == ("\u00e9t\u00e9.mp4 (mixed) is the name of \u00e9t\u00e9.mp4 (NFD) in another Unicode "
                           "form: that file is read")


def test_an_unreadable_video_in_a_latin1_folder_names_the_file_only(tmp_path: Path):
    """PyAV's error quotes the path escaped (`caf\\udce9`): a folder named in latin-1 (an old
    archive's) did not match it, and the reject published the machine's whole folder. Now the
    detail names `bad.mp4` alone, as for any other folder."""
    folder = os.fsencode(tmp_path) + b"/secret caf\xe9"
    os.makedirs(folder)
    with open(folder + b"/bad.mp4", "wb") as handle:
        handle.write(b"not a video " * 100)
    source = VideoSource("vid", str(tmp_path))
    (reject,) = [item for uri in source.units() for item in source.read(uri)]
    detail = reject.as_row()["detail"]
    assert reject.reason == "unreadable" and "'bad.mp4'" in detail
    assert "secret" not in detail and str(tmp_path) not in detail


def test_a_failure_no_reason_foresaw_in_a_latin1_named_video_is_its_units_reject(tmp_path: Path, monkeypatch):
    """A decoder bug (any exception no reason code foresaw) costs its unit a `unit_failed` reject.
    For a video named in latin-1 (`caf\\xe9.mp4`, a lone surrogate in Python) making that reject's
    key raised UnicodeEncodeError inside the handler (stable_hash encoded strictly): the build
    crashed. Real files through the build's unit renderer; the bug is played by a probe that raises."""
    import sources.video as video
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.tagged import REJECTS
    from uvd_pipeline.unit_render import list_units, unit_renderers

    os.makedirs(os.fsencode(tmp_path / "clips"))
    video_zoo.encode(Path(os.fsdecode(os.fsencode(tmp_path / "clips") + b"/caf\xe9.mp4")), 16, "mpeg4")

    def probe(uri: str, *args):
        raise RuntimeError("a decoder bug")

    monkeypatch.setattr(video, "probe_video", probe)
    config = parse_config({"version": 1, "output": str(tmp_path / "out"), "image": {"size": 16},
                           "tokenizer": {"enabled": False},
                           "sources": [{"name": "clips", "type": "video", "path": str(tmp_path / "clips"),
                                        "strides": [1]}]})
    renderer = unit_renderers(config)["clips"]
    outputs = [item for unit in list_units(config)["clips"] for item in renderer.render(unit)[0]]
    rejects = [item.as_row() for tag, item in outputs if tag == REJECTS]
    assert [r["reason"] for r in rejects] == ["unit_failed"] and "RuntimeError: a decoder bug" in rejects[0]["detail"]
    assert rejects[0]["key"].isascii() and len(outputs) == 1


def test_a_failed_units_reject_names_its_files_inside_the_dataset_wherever_it_lies(tmp_path: Path, monkeypatch):
    """A `unit_failed` reject named the unit by its absolute paths: its detail published the
    machine's folders and its key changed when the same dataset lay elsewhere (another machine,
    a moved disk). Now the files as the source root sees them: the same key and detail."""
    import shutil

    import sources.video as video
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.tagged import REJECTS
    from uvd_pipeline.unit_render import list_units, unit_renderers

    first = tmp_path / "secret-a" / "clips"
    first.mkdir(parents=True)
    video_zoo.encode(first / "one.mp4", 16, "mpeg4")
    shutil.copytree(first, tmp_path / "secret-b" / "clips")

    def probe(uri: str, *args):
        raise RuntimeError("a decoder bug")

    monkeypatch.setattr(video, "probe_video", probe)
    rows = []
    for root in (first, tmp_path / "secret-b" / "clips"):
        config = parse_config({"version": 1, "output": str(tmp_path / "out"), "image": {"size": 16},
                               "tokenizer": {"enabled": False},
                               "sources": [{"name": "clips", "type": "video", "path": str(root), "strides": [1]}]})
        renderer = unit_renderers(config)["clips"]
        outputs = [item for unit in list_units(config)["clips"] for item in renderer.render(unit)[0]]
        rows += [item.as_row() for tag, item in outputs if tag == REJECTS]
    assert [r["reason"] for r in rows] == ["unit_failed"] * 2
    assert rows[0]["key"] == rows[1]["key"] and rows[0]["detail"] == rows[1]["detail"], rows
    assert "secret" not in rows[0]["detail"] and "one.mp4" in rows[0]["detail"], rows[0]


# -- video2dataset's output (sources.video_shards) ------------------------------------------
V2D_FRAMES = {"000000000": 20, "000000001": 18, "000000003": 17}  # sample key -> frames; 000000002 failed


def _v2d_clips(tmp_path: Path, count: int) -> tuple[Path, Path, list[Path]]:
    """`count` ffmpeg-made H.264 clips (`work/N.mp4`, each 16 frames of its own start) to download,
    and the folder a video2dataset run writes into: (work, out, clips)."""
    video_zoo.require_ffmpeg()
    work, out = tmp_path / "work", tmp_path / "v2d"
    work.mkdir()
    clips = [work / f"{n}.mp4" for n in range(count)]
    for n, clip in enumerate(clips):
        _v2d_video(clip, 16, 60 * n, ["-c:v", "libx264", "-preset", "veryfast"])
    return work, out, clips


def _v2d_video(path: Path, frames: int, hue: int, codec: list[str]) -> bytes:
    """A tiny clip as a download gives it: ffmpeg's testsrc2, 64x48, a key frame every 8 frames."""
    video_zoo.ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=64x48:rate=25,hue=h={hue}", "-frames:v", str(frames),
                     *codec, "-pix_fmt", "yuv420p", "-g", "8", str(path))
    return path.read_bytes()


def _v2d_samples(work: Path) -> list[tuple[str, dict, bytes | None, str]]:
    """(key, meta, video bytes or None for a failed download, extension) in the order video2dataset's
    thread pool finished them (`imap_unordered`: not key order), one clip in WebM."""
    codecs = {"mp4": ["-c:v", "libx264", "-preset", "veryfast"],
              "webm": ["-c:v", "libvpx-vp9", "-deadline", "realtime"]}
    samples = []
    for n, key in enumerate(["000000001", "000000000", "000000002", "000000003"]):
        url = f"http://127.0.0.1:8000/{key}.mp4"
        meta = {"url": url, "caption": f"clip {key}", "key": key, "status": "success", "error_message": None,
                "yt_meta_dict": None}
        ext = "webm" if key == "000000003" else "mp4"
        data = None
        if key in V2D_FRAMES:
            data = _v2d_video(work / f"{key}.{ext}", V2D_FRAMES[key], 60 * n, codecs[ext])
        else:
            meta.update(status="failed_to_download", error_message="HTTP Error 404: Not Found")
        samples.append((key, meta, data, ext))
    return samples


def _write_v2d_listing(folder: Path, shard: str, samples) -> None:
    """`NNNNN.parquet` as video2dataset's BufferedParquetWriter writes it (the input's columns, then
    key, status, error_message) and `NNNNN_stats.json` as its logger's write_stats does."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("url", pa.string()), ("caption", pa.string()), ("key", pa.string()),
                        ("status", pa.string()), ("error_message", pa.string())])
    rows = {name: [meta[name] for _, meta, _, _ in samples] for name in schema.names}
    pq.write_table(pa.Table.from_pydict(rows, schema), folder / f"{shard}.parquet")
    successes = sum(meta["status"] == "success" for _, meta, _, _ in samples)
    stats = {"count": len(samples), "successes": successes, "failed_to_download": len(samples) - successes,
             "failed_to_subsample": 0, "duration": 1.0, "bytes_downloaded": 0, "start_time": 0.0, "end_time": 1.0,
             "status_dict": {"success": successes}}
    (folder / f"{shard}_stats.json").write_text(json.dumps(stats, indent=4))


def _tar_writer_write(tar, key: str, sample: dict[str, bytes]) -> None:
    """What webdataset 1.0.2's `TarWriter.write` does with one sample (its `writer.py`), without
    importing webdataset (2 CPU-s): a member `{key}.{ext}` per field in sorted field order, mode
    0o444, user and group `bigdata`, in a `w|` stream."""
    import io
    import tarfile
    import time

    for ext in sorted(sample):
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size, info.mtime, info.mode = len(sample[ext]), time.time(), 0o444
        info.uname = info.gname = "bigdata"
        tar.addfile(info, io.BytesIO(sample[ext]))


@pytest.fixture(scope="session")
def v2d_output(tmp_path_factory) -> dict[str, Path]:
    """video2dataset's two layouts of one shard, written as its data_writer writes them:
    `webdataset` (`_tar_writer_write`: `{key}.json`, `.mp4`/`.webm`, `.txt`; a failed download
    only `.json` and `.txt`) and `files` (`00000/` holding the same files), each with its
    `00000.parquet` and `00000_stats.json`. The parquet also lists a success the shard lacks."""
    import json
    import tarfile

    video_zoo.require_ffmpeg()
    top = tmp_path_factory.mktemp("v2d")
    work, tars, files = top / "work", top / "webdataset", top / "files"
    for folder in (work, tars, files / "00000"):
        folder.mkdir(parents=True)
    samples = _v2d_samples(work)
    with tarfile.open(tars / "00000.tar", "w|") as tar:
        for key, meta, data, ext in samples:
            sample = {"txt": meta["caption"].encode(), "json": json.dumps(meta, indent=4).encode()}
            _tar_writer_write(tar, key, {**sample, ext: data} if data is not None else sample)
    for key, meta, data, ext in samples:
        if data is not None:
            (files / "00000" / f"{key}.{ext}").write_bytes(data)
        (files / "00000" / f"{key}.txt").write_text(meta["caption"])
        (files / "00000" / f"{key}.json").write_text(json.dumps(meta, indent=4))
    lost = ("000000004", {"url": "http://127.0.0.1:8000/4.mp4", "caption": "lost", "key": "000000004",
                          "status": "success", "error_message": None}, None, "mp4")
    for folder in (tars, files):
        _write_v2d_listing(folder, "00000", samples + [lost])
    return {"webdataset": tars, "files": files, "work": work}


def _ffmpeg_frames(path: Path, picks: tuple[int, ...]) -> np.ndarray:
    """Frames `picks` of `path` as the ffmpeg CLI decodes them (`select=eq(n,K)+...`), RGB 64x48."""
    import subprocess

    select = "+".join(f"eq(n\\,{k})" for k in picks)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-vf", f"select={select}", "-vsync", "0",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(len(picks), 48, 64, 3)


def _copies(spill: Path) -> list[str]:
    """The member copies in the temporary folder `spill` (in each process's `uvd-video-<pid>/`)."""
    return sorted(p.name for p in spill.rglob("*") if not p.is_dir())


def _read_all(source: VideoSource) -> list:
    return [item for unit in source.units() for item in source.read(unit)]


def test_video2dataset_webdataset_shards_are_videos_with_ffmpegs_frames(v2d_output: dict[str, Path], tmp_path: Path):
    """A video2dataset download (`output_format=webdataset`) made nothing: `.tar` shards were not
    listed (a folder of them alone: "no videos"; beside plain videos: left out without a word).
    Now each video member is a video keyed by shard and sample key, decoded to ffmpeg's frames from
    the member's bytes; the parquet's failed download and lost success are counted rejects, and the
    `.txt`/`.json` members are no rejects of their own."""
    import tarfile

    from sources.records import data_key

    source = VideoSource("web", str(v2d_output["webdataset"]), strides=(1,))
    (unit,) = source.units()  # its parquet is the tar's to read
    assert unit.uris == (str(v2d_output["webdataset"] / "00000.tar"),) and unit.parts == 1
    items = _read_all(source)
    rejects = sorted((r.key, r.stage, r.reason, r.detail) for r in items if isinstance(r, Reject))
    assert rejects == sorted([
        (data_key("web", "00000", "000000002"), "download", "failed_to_download", "HTTP Error 404: Not Found"),
        (data_key("web", "00000", "000000004"), "read", "missing_from_archive",
         "00000.parquet lists 000000004 as downloaded; 00000.tar lacks it")])
    videos = {v.key: v for v in items if isinstance(v, VideoRecord)}
    assert sorted(videos) == sorted(data_key("web", "00000", k) for k in V2D_FRAMES)
    with tarfile.open(v2d_output["webdataset"] / "00000.tar") as tar:
        tar.extractall(tmp_path, filter="data")
    for sample_key, frames in V2D_FRAMES.items():
        video = videos[data_key("web", "00000", sample_key)]
        (clip,) = video.clips
        assert video.n_frames == frames and clip.frame_indices == tuple(range(16))
        assert clip.lineage["caption"] == f"clip {sample_key}" and clip.lineage["shard"] == "00000"
        extracted = next(p for p in tmp_path.glob(f"{sample_key}.*") if p.suffix in (".mp4", ".webm"))
        assert clip.lineage["file"] == extracted.name
        picks = (0, 7, 15)
        assert np.array_equal(read_clip_frames(clip)[list(picks)], _ffmpeg_frames(extracted, picks)), sample_key


def test_a_cut_video2dataset_tar_is_counted_and_member_copies_never_outlive_their_job(
        v2d_output: dict[str, Path], tmp_path: Path, monkeypatch):
    """A tar cut inside its second video (a killed download, a partial copy): the whole videos
    before the cut are read, the cut one is `truncated_sample`, the shard one `corrupt_archive`,
    what the parquet lists after it `missing_from_archive`; nothing raises. Each job decodes a
    private copy of the member's bytes, removed after the job whether it succeeded, failed on bytes
    that are no video (what video2dataset stores for a URL that answered an HTML 404 page) or was
    stopped for its budget; a member over the input-file cap is `member_too_large`, never copied."""
    import tarfile
    import tempfile

    import sources.video as video
    import sources.video_shards as shards
    from sources.budget import BudgetExceeded
    from sources.records import data_key

    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    root = tmp_path / "cut"
    root.mkdir()
    data = (v2d_output["webdataset"] / "00000.tar").read_bytes()
    with tarfile.open(v2d_output["webdataset"] / "00000.tar") as tar:
        second = tar.getmember("000000000.mp4")
    (root / "00000.tar").write_bytes(data[: second.offset_data + second.size // 2])
    for name in ("00000.parquet", "00000_stats.json"):
        (root / name).write_bytes((v2d_output["webdataset"] / name).read_bytes())
    page = b"<!DOCTYPE HTML>\n<html><head><title>Error response</title></head><body>404</body></html>\n"
    with tarfile.open(root / "00001.tar", "w|") as tar:  # no listing beside it: nothing more is known
        _tar_writer_write(tar, "000010000", {"mp4": page, "txt": b"a dead link", "json": b"{}"})
    seen_during_jobs = []
    call = video.budget.call

    def watched(*args, **kwargs):
        seen_during_jobs.append(_copies(spill))
        return call(*args, **kwargs)

    monkeypatch.setattr(video.budget, "call", watched)
    source = VideoSource("web", str(root), strides=(1,))
    items = _read_all(source)
    got = sorted((i.key, i.reason) if isinstance(i, Reject) else (i.key, "video") for i in items)
    k = lambda *parts: data_key("web", *parts)  # noqa: E731
    assert got == sorted([(k("00000", "000000001"), "video"), (k("00000", "000000000"), "truncated_sample"),
                          (k("00000"), "corrupt_archive"), (k("00000", "000000002"), "failed_to_download"),
                          (k("00000", "000000003"), "missing_from_archive"),
                          (k("00000", "000000004"), "missing_from_archive"),
                          (k("00001", "000010000"), "unreadable")])
    assert [len(names) for names in seen_during_jobs] == [1, 1] and seen_during_jobs[0][0].endswith(".mp4")
    (page_reject,) = [i for i in items if isinstance(i, Reject) and i.reason == "unreadable"]
    assert "000010000.mp4" in page_reject.detail and "uvd-video" not in page_reject.detail  # never the copy's name
    (record,) = [i for i in items if isinstance(i, VideoRecord)]
    assert read_clip_frames(record.clips[0]).shape == (16, 48, 64, 3)

    def stopped(*args, **kwargs):  # the job as the parent sees a worker killed for its budget
        seen_during_jobs.append(_copies(spill))
        raise BudgetExceeded("decode_timeout", "killed after 0.1 CPU seconds")
        yield

    monkeypatch.setattr(video.budget, "run", stopped)
    ((_, failure),) = list(video.clip_frames(record))
    assert failure.reason == "decode_timeout" and len(seen_during_jobs[-1]) == 1 and "uvd-video" not in failure.detail
    assert _copies(spill) == []
    monkeypatch.setattr(shards, "MAX_INPUT_FILE_BYTES", 1000)
    monkeypatch.setattr(video, "probe_video", lambda *args: pytest.fail("a member over the cap was probed"))
    too_large = [i for i in source.read(str(root / "00000.tar")) if isinstance(i, Reject) and "1000 byte" in i.detail]
    assert [(i.key, i.reason) for i in too_large] == [(k("00000", "000000001"), "member_too_large")]


def test_video2dataset_shards_render_the_bytes_their_files_layout_renders(v2d_output: dict[str, Path], tmp_path: Path,
                                                                          monkeypatch):
    """The same download as `webdataset` tars and as `files` through the build's unit renderer:
    the same sentences, image for image and byte for byte (only the video keys differ, as
    documented). In the files layout the parquet's failed downloads and lost success vanished
    without a word (only video files were listed) and the `.txt`/`.json` beside the videos must
    not be rejects: both layouts now count the same two rejects under the same keys."""
    import tempfile

    from sources.records import data_key
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.tagged import MAIN, REJECTS
    from uvd_pipeline.unit_render import list_units, unit_renderers
    from uvd_pipeline.unit_store import StoreReader

    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    config = parse_config({"version": 1, "output": str(tmp_path / "out"), "image": {"size": 32},
                           "tokenizer": {"enabled": False},
                           "sources": [{"name": layout, "type": "video", "path": str(v2d_output[layout]),
                                        "strides": [1]} for layout in ("webdataset", "files")]})
    renderers, units = unit_renderers(config), list_units(config)
    assert sorted(Path(u).name for u in units["files"]) == ["00000.parquet", "000000000.mp4", "000000001.mp4",
                                                            "000000003.webm"]
    reader = StoreReader()
    rendered, rejects = {}, {}
    for layout in ("webdataset", "files"):
        outputs = [item for unit in units[layout] for item in renderers[layout].render(unit)[0]]
        rejects[layout] = sorted((r.key, r.stage, r.reason) for tag, r in outputs if tag == REJECTS)
        sentences = [reader.resolve(s) for tag, s in outputs if tag == MAIN]
        rendered[layout] = {s.meta["file"]: (s.images, s.members) for s in sentences}
    reader.close()
    assert sorted(rendered["files"]) == ["000000000.mp4", "000000001.mp4", "000000003.webm"]
    assert rendered["webdataset"] == rendered["files"]
    assert all(len(images) == 16 for images, _ in rendered["files"].values())
    for layout in ("webdataset", "files"):
        assert rejects[layout] == [(data_key(layout, "00000", "000000002"), "download", "failed_to_download"),
                                   (data_key(layout, "00000", "000000004"), "read", "missing_from_archive")]
    assert _copies(spill) == []


def _killed_then_resumed(out: Path, first: list[list[str]], killed_after: int, again: list[list[str]]) -> None:
    """Shard 00000 of `first` written by `video2dataset_writer` (video2dataset's files writer), the
    process SIGKILLed once `killed_after` samples are written, then `again` written over the same
    folder to its end, as video2dataset's rerun (`--incremental_mode incremental`) redoes a shard
    without its `_stats.json`."""
    import json
    import signal
    import subprocess
    import sys

    script = str(Path(__file__).parent / "video2dataset_writer.py")
    for n, urls in enumerate((first, again)):
        listed = out.parent / f"urls{n}.json"
        listed.write_text(json.dumps(urls))
        writer = subprocess.Popen([sys.executable, script, str(out), "0", str(listed), str(killed_after) if n == 0 else "0"],
                                  stdout=subprocess.PIPE, text=True)
        if n == 0:
            written = [writer.stdout.readline().strip() for _ in range(killed_after)]
            writer.send_signal(signal.SIGKILL)  # while it waits before its next sample
            assert writer.wait(timeout=10) == -signal.SIGKILL and len(written) == killed_after
            assert not (out / "00000_stats.json").exists()
        else:
            assert writer.wait(timeout=60) == 0
        writer.stdout.close()


def test_a_resumed_video2dataset_files_download_builds_no_video_its_killed_run_left(tmp_path: Path):
    """video2dataset (`output_format=files`) killed in shard 00000 after its 4 samples, before its end, then run
    again (its rerun redoes a shard without `_stats.json`, rewriting its parquet, never clearing
    its folder) over a list whose URL of key 1 now fails and that ends at key 2. Key 1's old
    `.mp4` stays beside the `.txt`/`.json` the rerun wrote for its failure, key 3's files stay with
    no row. Both were built (4 videos for the listing's 2 successes): key 1 a sentence and a
    `failed_to_download` reject at once. Now each is one `stale_download` reject naming its files,
    never built; keys 0 and 2 are built, each to its own ffmpeg frames."""
    work, out, clips = _v2d_clips(tmp_path, 4)
    first = [[str(c), f"clip {n}"] for n, c in enumerate(clips)]
    again = [first[0], [str(work / "gone.mp4"), "clip 1"], first[2]]
    _killed_then_resumed(out, first, 4, again)
    assert sorted(p.name for p in (out / "00000").iterdir()) == sorted(
        f"00000000{k}.{e}" for k in range(4) for e in ("mp4", "txt", "json"))
    import pyarrow.parquet as pq
    assert [(r["key"], r["status"]) for r in pq.read_table(out / "00000.parquet").to_pylist()] == [
        ("000000000", "success"), ("000000001", "failed_to_download"), ("000000002", "success")]

    source = VideoSource("v2d", str(out), strides=(1,))
    items = _read_all(source)
    records = {os.path.basename(i.uri): i for i in items if isinstance(i, VideoRecord)}
    assert sorted(records) == ["000000000.mp4", "000000002.mp4"]
    for name, record in records.items():
        (clip,) = record.clips
        expected = _ffmpeg_frames(clips[int(name[-5])], tuple(range(16)))
        assert np.abs(read_clip_frames(clip).astype(int) - expected).mean() < 3
    rejects = sorted((r.reason, r.input) for r in items if isinstance(r, Reject))
    assert rejects == [("failed_to_download", f"00000.parquet key 000000001: {work / 'gone.mp4'}"),
                       ("stale_download", "00000/000000001.mp4"), ("stale_download", "00000/000000003.mp4")]
    stale = {r.input: r for r in items if isinstance(r, Reject) and r.reason == "stale_download"}
    one, three = stale["00000/000000001.mp4"], stale["00000/000000003.mp4"]
    assert one.detail.startswith("000000001.json, 000000001.mp4, 000000001.txt: left by an earlier, killed run")
    assert one.detail.endswith("00000.parquet records key 000000001 as failed_to_download: not built")
    assert three.detail.endswith("00000.parquet lists no key 000000003 though its .json says video2dataset "
                                 "saved it: not built")
    assert one.key == source.video_key(str(out / "00000" / "000000001.mp4"))


def test_a_files_layout_video_records_its_listing_verdict_not_the_listing(tmp_path: Path):
    """Each video of a video2dataset files-layout shard consults its `00000.parquet`: its state (and
    `_stats.json`'s, for whichever video parsed the listing first) stood in every video's manifest, so
    a chmod of the parquet, or a column a user added to it, rendered all the shard's videos again (6
    videos: 7 units of 7; 10,000 a shard by default). Each now records its verdict alone
    (`video_shards.listed_state`): those edits keep every verdict, a row turned failed moves its own."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from video2dataset_writer import write_shard

    from sources import fsio

    work, out, clips = _v2d_clips(tmp_path, 3)
    write_shard(str(out), 0, [[str(c), f"clip {n}"] for n, c in enumerate(clips)], 0)
    source = VideoSource("v2d", str(out), strides=(1,))
    videos = sorted(str(p) for p in (out / "00000").glob("*.mp4"))
    assert len(videos) == 3
    recorded = {}
    for uri in reversed(videos):  # the first parses the listing, the others hit its cache: all record alike
        with fsio.recording_inputs() as record:
            items = list(source.read(uri))
        assert [type(i).__name__ for i in items] == ["VideoRecord"], items
        assert [f for f in record.files if f.endswith((".parquet", "_stats.json"))] == []
        (key,) = [k for k in record.derived if k[0].endswith("video_shards.listed_state")]
        recorded[uri] = (key, record.derived[key])
    assert [value for _, value in recorded.values()] == [None] * 3
    parquet = out / "00000.parquet"
    os.chmod(parquet, 0o600)
    table = pq.read_table(parquet)
    pq.write_table(table.append_column("aesthetic", pa.array([5.0] * table.num_rows)), parquet)
    assert all(fsio.rederive(key) == value for key, value in recorded.values())
    failed = pc.if_else(pc.equal(table["key"], "000000001"), "failed_to_download", table["status"])
    pq.write_table(table.set_column(table.schema.get_field_index("status"), "status", failed), parquet)
    moved = {os.path.basename(uri): fsio.rederive(key) for uri, (key, value) in recorded.items()
             if fsio.rederive(key) != value}
    assert list(moved) == ["000000001.mp4"]
    assert moved["000000001.mp4"].endswith("00000.parquet records key 000000001 as failed_to_download: not built")


@pytest.mark.parametrize("folder", ["clips", "00000"])
def test_videos_beside_a_users_own_parquet_are_built(tmp_path: Path, folder: str):
    """Not a video2dataset output: yt-dlp downloads named by title, each with its metadata `.json`,
    and the user's index `clips.parquet` (key = YouTube id, no `status` column) beside the folder.
    Both videos were `stale_download` (no row for their names, a `.json` beside each), none built.
    Only video2dataset's listing is judged (a digit-named shard, a `status` column): both are built."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    video_zoo.require_ffmpeg()
    (tmp_path / folder).mkdir()
    for n, (title, youtube_id) in enumerate([("cat_video", "dQw4w9WgXcQ"), ("dog_video", "9bZkp7q19f0")]):
        _v2d_video(tmp_path / folder / f"{title}.mp4", 16, 90 * n, ["-c:v", "libx264", "-preset", "veryfast"])
        (tmp_path / folder / f"{title}.json").write_text(json.dumps({"id": youtube_id, "title": title}))
    pq.write_table(pa.Table.from_pylist([{"key": "dQw4w9WgXcQ", "caption": "a cat"},
                                         {"key": "9bZkp7q19f0", "caption": "a dog"}]), tmp_path / f"{folder}.parquet")
    items = _read_all(VideoSource("v", str(tmp_path), strides=(1,)))
    assert sorted(os.path.basename(i.uri) for i in items if isinstance(i, VideoRecord)) == ["cat_video.mp4",
                                                                                             "dog_video.mp4"]
    assert [r for r in items if isinstance(r, Reject) and r.reason == "stale_download"] == []


def test_a_video_added_to_a_video2dataset_tar_for_a_failed_key_is_never_built(v2d_output: dict[str, Path],
                                                                              tmp_path: Path):
    """video2dataset writes a tar whole beside its listing, so a video in it for the key whose row
    failed (`000000002`, a 404), or with a `.json` and no row, came from elsewhere (`tar -rf`, GNU
    tar). The failed key's video was built beside its `failed_to_download` reject, the unlisted one
    as a sample of its own. Each is now one `stale_download` reject, never built."""
    import json
    import shutil
    import subprocess

    from sources.records import data_key

    shard = tmp_path / "shard"
    shutil.copytree(v2d_output["webdataset"], shard)
    before = [repr(i) for i in _read_all(VideoSource("web", str(shard), strides=(1,)))]
    added = tmp_path / "added"
    added.mkdir()
    for key in ("000000002", "000000009"):  # the failed key's .txt/.json are in the tar already
        shutil.copy(v2d_output["work"] / "000000000.mp4", added / f"{key}.mp4")
    (added / "000000009.txt").write_text("another download")
    (added / "000000009.json").write_text(json.dumps({"key": "000000009", "status": "success"}, indent=4))
    subprocess.run(["tar", "-rf", str(shard / "00000.tar"), "-C", str(added), "000000002.mp4",
                    *(f"000000009.{e}" for e in ("json", "mp4", "txt"))], check=True)
    items = _read_all(VideoSource("web", str(shard), strides=(1,)))
    new = [i for i in items if repr(i) not in before]
    assert [(i.reason, i.key, i.input) for i in new] == [
        ("stale_download", data_key("web", "00000", k), f"00000.tar:{k}.mp4") for k in ("000000002", "000000009")]
    assert "records key 000000002 as failed_to_download" in new[0].detail
    assert "lists no key 000000009 though its .json says video2dataset saved it" in new[1].detail
    assert len(items) == len(before) + 2


def test_a_big_video2dataset_tar_is_read_in_parts_that_together_read_it_once(v2d_output: dict[str, Path],
                                                                             monkeypatch):
    """A video2dataset shard holds 10000 videos by default: as one unit, a build killed near its
    end redid all of them and one worker decoded them all. A big local tar is now several units;
    each probes only the videos it owns, and together they yield exactly what one reading yields,
    every video probed once."""
    import sources.video as video
    import sources.video_shards as shards

    tar = v2d_output["webdataset"] / "00000.tar"
    whole = VideoSource("web", str(v2d_output["webdataset"]), strides=(1,))
    expected = sorted((i.key, type(i).__name__, getattr(i, "reason", "")) for i in _read_all(whole))
    monkeypatch.setattr(shards, "VIDEO_PART_BYTES", tar.stat().st_size // 3)
    probed = []
    probe = video.probe_video
    monkeypatch.setattr(video, "probe_video", lambda uri, *args: probed.append(args[-1].name) or probe(uri, *args))
    units = whole.units()
    assert [(u.part, u.parts) for u in units] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    items = [item for unit in units for item in whole.read(unit)]
    assert sorted((i.key, type(i).__name__, getattr(i, "reason", "")) for i in items) == expected
    assert sorted(probed) == ["000000000.mp4", "000000001.mp4", "000000003.webm"]


def _junk_tar(root: Path, samples: dict[str, dict[str, bytes]], shard: str = "00000") -> Path:
    """A video2dataset-like tar of `samples` (key -> {ext: bytes}) in `root`, without ffmpeg."""
    import tarfile

    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / f"{shard}.tar", "w|") as tar:
        for key, fields in samples.items():
            _tar_writer_write(tar, key, fields)
    return root / f"{shard}.tar"


def test_a_full_temporary_folder_fails_the_unit_and_blames_no_video(tmp_path: Path, monkeypatch):
    """A member's copy that cannot be written (ENOSPC, a quota, EMFILE) or has no room was an
    `unreadable` reject of the video, committed for good; starting the decoder (EMFILE) too. They
    are the machine's errors: the unit fails (`MachineError`, naming the member and the folder,
    never the copy's random name); an error reading the tar stays the video's reject."""
    import errno
    import tempfile

    import sources.video as video
    from sources.records import TarMember

    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    tar = _junk_tar(tmp_path / "root", {"000000000": {"mp4": b"v" * 5000, "txt": b"a caption", "json": b"{}"}})
    source = VideoSource("web", str(tmp_path / "root"), strides=(1,))
    monkeypatch.setattr(video.budget, "call", lambda *a, **k: pytest.fail("a copy that failed was probed"))
    real_fdopen = os.fdopen

    class Full:  # the copy's side of a full disk
        def __init__(self, handle, mode):
            self.file = real_fdopen(handle, mode)

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    monkeypatch.setattr(os, "fdopen", Full)
    with pytest.raises(video.MachineError) as raised:
        _read_all(source)
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    assert isinstance(raised.value.__cause__, OSError) and raised.value.__cause__.errno == errno.ENOSPC
    text = str(raised.value)
    assert "000000000.mp4" in text and str(spill) in text and "TMPDIR" in text, text
    assert not any(name.startswith("tmp") for name in text.replace(str(spill), "").split()), text  # no copy's name
    assert _copies(spill) == []

    class Statvfs:  # 4 KiB free: judged before copying
        f_bavail, f_frsize = 1, 4096

    monkeypatch.setattr(os, "statvfs", lambda path: Statvfs())
    with pytest.raises(video.MachineError, match=r"\[Errno 28\].*5000 bytes.*4096 bytes free.*TMPDIR"):
        _read_all(source)
    monkeypatch.undo()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))

    def no_worker(*args, **kwargs):  # starting the decoder's process
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(video.budget, "call", no_worker)
    with pytest.raises(video.MachineError, match=r"\[Errno 24\]"):
        _read_all(source)
    (tmp_path / "plain.mp4").write_bytes(b"v" * 100)
    with pytest.raises(video.MachineError, match=r"plain.mp4: \[Errno 24\]"):
        _read_all(VideoSource("web", str(tmp_path / "plain.mp4"), strides=(1,)))
    tar.unlink()  # the input gone: the video's reject, as before
    with pytest.raises(video.VideoError) as gone:
        video.probe_video(str(tar), member=TarMember("000000000.mp4", 512, 5000))
    assert gone.value.reason == "unreadable" and "uvd-video" not in gone.value.detail


def test_too_many_open_files_starting_the_decoder_fails_the_unit_when_decoding_too(tmp_path: Path, monkeypatch):
    """EMFILE starting the decoder for a video's frames escaped `clip_frames` as an OSError, which
    the unit committed as the video's `internal_error`, served from the unit store on every rerun:
    it is this machine's `MachineError`, as at planning."""
    import errno

    import sources.video as video

    video_zoo.require_ffmpeg()
    uri = tmp_path / "videos" / "clip.mp4"
    uri.parent.mkdir()
    video_zoo.encode(uri, 20, "mpeg4")
    (record,) = [c for c in VideoSource("clips", str(uri.parent), strides=(2,)).read(str(uri))
                 if isinstance(c, VideoRecord)]
    real = video.budget._started

    def started(function, *args):
        if function.endswith("_frames"):  # the decode's job, not the probe's
            raise OSError(errno.EMFILE, "Too many open files")
        return real(function, *args)

    monkeypatch.setattr(video.budget, "_started", started)
    with pytest.raises(video.MachineError, match=r"decoding clip.mp4: \[Errno 24\]"):
        list(video.clip_frames(record))
    # the unit's render lets it through uncommitted: the rerun, files to spare, decodes the video
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.unit_render import list_units, unit_renderers

    config = parse_config({"version": 1, "output": str(tmp_path / "out"), "image": {"size": 32},
                           "tokenizer": {"enabled": False},
                           "sources": [{"name": "vid", "type": "video", "path": str(uri.parent), "strides": [1]}]})
    renderer, (unit,) = unit_renderers(config)["vid"], list_units(config)["vid"]
    with pytest.raises(video.MachineError, match=r"decoding clip.mp4: \[Errno 24\]"):
        renderer.render(unit)  # planned, then decoding: not the video's internal_error
    monkeypatch.setattr(video.budget, "_started", real)
    outputs, _ = renderer.render(unit)
    assert outputs and not [r for _, r in outputs if isinstance(r, Reject)], outputs


@contextmanager
def _files_exhausted(pool: str) -> Iterator[None]:
    """The budget worker of `pool` with no descriptor left to open (its RLIMIT_NOFILE lowered to
    what it holds, as a low `ulimit -n` leaves it): the kernel's own EMFILE, then its limit back."""
    from sources import budget

    soft = budget.call("budget_jobs:exhaust_files", pool=pool)
    try:
        yield
    finally:
        budget.call("budget_jobs:restore_files", soft, pool=pool)


@pytest.mark.parametrize("decoder", DECODERS)
def test_too_many_open_files_in_the_decoder_is_the_machines_error(tmp_path: Path, decoder: str):
    """The decoder's process opening a plain video file (not a tar member's copy) with no file
    descriptor left (EMFILE, a real `ulimit -n` in the worker) made the video an `unreadable`
    reject, at planning and when decoding, committed for good: PyAV's `av.error.OSError` and
    decord's RuntimeError were taken for the file's fault. It is this machine's `MachineError`:
    the unit fails uncommitted, and once files are to spare the same video plans and decodes."""
    import sources.video as video

    video_zoo.require_ffmpeg()
    uri = tmp_path / "videos" / "clip.mp4"
    uri.parent.mkdir()
    video_zoo.encode(uri, 20, "mpeg4")
    source = VideoSource("clips", str(uri.parent), strides=(2,), decoder=decoder)
    (record,) = [r for r in source.read(str(uri)) if isinstance(r, VideoRecord)]  # the workers' imports done
    assert record.decoder == decoder
    assert all(isinstance(frames, np.ndarray) for _, frames in video.clip_frames(record))
    with _files_exhausted("default"), pytest.raises(video.MachineError, match=r"planning clip.mp4: .*\[Errno 24\]"):
        list(source.read(str(uri)))
    with _files_exhausted(decoder), pytest.raises(video.MachineError, match=r"decoding clip.mp4: .*\[Errno 24\]"):
        list(video.clip_frames(record))
    (again,) = [r for r in source.read(str(uri)) if isinstance(r, VideoRecord)]
    assert again == record and all(isinstance(frames, np.ndarray) for _, frames in video.clip_frames(again))


@pytest.fixture
def fresh_copies(tmp_path: Path, monkeypatch) -> Path:
    """A temporary folder `spill` where this process has not copied yet (its copies folder's lock
    let go afterwards)."""
    import tempfile

    import sources.video as video

    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    made: dict = {}
    monkeypatch.setattr(video, "_COPIES", made)
    yield spill
    for _, _, handle in made.values():
        os.close(handle)


def test_a_live_process_keeps_its_copies_whatever_its_pid_and_a_dead_ones_are_swept(fresh_copies: Path):
    """A reader killed mid-job (kill -9, the OOM killer) left its copy in /tmp for good: the first
    copy of a process removes the copies folders of processes that are gone. A live process's
    folder is kept even when its pid means nothing here (another pid namespace, a container
    sharing /tmp, was swept as dead): it holds a lock on its folder while it lives."""
    import subprocess
    import sys

    import sources.video as video

    spill = fresh_copies
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    # the child sees itself as a pid no process here has, as one in a container does
    code = (f"import os, sys, tempfile; tempfile.tempdir = {str(spill)!r}; os.getpid = lambda: {gone.stdout.strip()}\n"
            "import sources.video as v; folder = v.copies_folder()\n"
            "open(os.path.join(folder, 'tmpLIVE.mp4'), 'wb').write(b'a copy'); print(folder, flush=True)\n"
            "sys.stdin.read()\n")
    env = dict(os.environ, PYTHONPATH=str(Path(video.__file__).resolve().parents[1]))
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=env)
    try:
        theirs = Path(child.stdout.readline().strip())
        (spill / "uvd-video-notapid").mkdir()
        ours = Path(video.copies_folder())  # our first copy sweeps
        assert theirs.parent == spill and (theirs / "tmpLIVE.mp4").exists()  # a live process's, kept
        assert ours != theirs and ours.name.startswith(f"uvd-video-{os.getpid()}-")
    finally:
        child.stdin.close()
        child.wait()
    os.close(video._COPIES.pop(os.getpid())[2])  # as if this process had ended too
    assert Path(video.copies_folder()) != ours  # the next process's first copy sweeps both
    assert not theirs.exists() and not ours.exists()
    assert (spill / "uvd-video-notapid").exists()  # not a copies folder's name


def test_a_planted_copies_folder_is_never_used(fresh_copies: Path, tmp_path: Path):
    """Another user of a shared /tmp may plant `uvd-video-<pid>` (pids are guessable) as a link to
    a folder of theirs, or as a folder open to all: copies are made in a private folder of a name
    never seen before, and the sweep never follows a link."""
    import sources.video as video

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chmod(theirs, 0o777)
    spill = fresh_copies
    (spill / f"uvd-video-{os.getpid()}").symlink_to(theirs)
    (spill / f"uvd-video-{os.getpid()}-planted").symlink_to(theirs)
    (theirs / "keep").write_bytes(b"theirs")
    folder = Path(video.copies_folder())
    assert folder.parent == spill and not folder.is_symlink() and folder.stat().st_mode & 0o777 == 0o700
    assert list(theirs.iterdir()) == [theirs / "keep"]
    assert (spill / f"uvd-video-{os.getpid()}-planted").is_symlink()


def test_a_member_changed_after_planning_loses_its_clips_under_its_own_name(v2d_output: dict[str, Path],
                                                                           tmp_path: Path):
    """A tar whose member's bytes changed after its clips were planned: the decode failure names
    the member, never the temporary copy's random name (reject files would differ run to run)."""
    import shutil

    import sources.video as video

    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(v2d_output["webdataset"] / "00000.tar", root / "00000.tar")
    source = VideoSource("web", str(root), strides=(1,))
    record = next(i for i in _read_all(source) if isinstance(i, VideoRecord) and i.member.name == "000000001.mp4")
    with open(root / "00000.tar", "r+b") as tar:  # all but its first 2 KiB overwritten
        tar.seek(record.member.offset + 2048)
        tar.write(b"\0" * (record.member.size - 2048))
    failures = [result for _, result in video.clip_frames(record)]
    assert failures and all(isinstance(f, video.VideoError) for f in failures)
    assert all("000000001.mp4" in f.detail and "tmp" not in f.detail for f in failures), failures[0].detail


def test_a_disk_filling_up_while_a_member_is_copied_for_decoding_fails_the_unit(v2d_output: dict[str, Path],
                                                                               tmp_path: Path, monkeypatch):
    """A video2dataset member planned with room to spare, then copied again for its frames into the
    private `uvd-video-<pid>-*` folder as the disk fills up (another writer took the room after
    the free-space check: ENOSPC after the first megabyte-step written) is this machine's error:
    the decode is never started on the short copy, no clip is lost to a reject of the video (a copy
    error swallowed, or made the video's `unreadable`, would commit that for good), the short copy
    is removed, and the same record decodes once there is room."""
    import errno
    import shutil
    import tempfile

    import sources.video as video

    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(v2d_output["webdataset"] / "00000.tar", root / "00000.tar")
    source = VideoSource("web", str(root), strides=(1,))
    record = next(i for i in _read_all(source) if isinstance(i, VideoRecord) and i.member.name == "000000001.mp4")
    monkeypatch.setattr(video, "SPILL_STEP", 1024)  # the member in several steps, as a big one is
    assert record.member.size > 3 * video.SPILL_STEP
    real_fdopen, written = os.fdopen, []

    class FillsUp:  # the copy's file on a disk that another writer fills after its first step
        def __init__(self, handle, mode):
            self.file = real_fdopen(handle, mode)

        def write(self, data):
            if written:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written.append(len(data))
            return self.file.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    real_run = video.budget.run
    with monkeypatch.context() as full:
        full.setattr(os, "fdopen", FillsUp)
        full.setattr(video.budget, "run", lambda *a, **k: pytest.fail("a short copy was decoded"))
        with pytest.raises(video.MachineError) as raised:
            for clip, result in video.clip_frames(record):
                pytest.fail(f"{clip.key}: {result!r}")
    assert written == [1024]  # failed mid-copy, not before it
    cause = raised.value.__cause__
    assert isinstance(cause, OSError) and cause.errno == errno.ENOSPC, raised.value
    text = str(raised.value)
    assert text.startswith("decoding 000000001.mp4: [Errno 28]") and str(spill) in text and "TMPDIR" in text, text
    assert _copies(spill) == []
    assert video.budget.run is real_run
    results = [result for _, result in video.clip_frames(record)]
    assert results and all(isinstance(r, np.ndarray) for r in results)


def test_a_member_shorter_than_its_header_is_a_changed_file_never_decoded(tmp_path: Path, monkeypatch):
    """A tar cut or rewritten since it was listed holds fewer bytes of a member than its header
    declared: `changed_file`, and the short copy is never handed to a decoder."""
    import sources.video as video
    from sources.records import TarMember

    tar = _junk_tar(tmp_path, {"000000000": {"mp4": b"v" * 3000}})
    monkeypatch.setattr(video.budget, "call", lambda *a, **k: pytest.fail("a short copy was probed"))
    with pytest.raises(video.VideoError) as raised:
        video.probe_video(str(tar), member=TarMember("000000000.mp4", 512, tar.stat().st_size))
    assert raised.value.reason == "changed_file" and "000000000.mp4" in raised.value.detail


def test_sidecars_over_the_cap_are_not_read_and_a_video_less_samples_json_status_is_its_reject(
        tmp_path: Path, monkeypatch):
    """A `.txt`/`.json` member over `MAX_INPUT_FILE_BYTES` is not read: its `member_too_large`
    reject (it vanished without one), and the video goes on without its caption; a sample without a video that no parquet lists is counted from its `.json`'s
    status (a failed download), or `missing_video` when that says success."""
    import json

    import sources.video_shards as shards
    from sources.records import data_key

    monkeypatch.setattr(shards, "MAX_INPUT_FILE_BYTES", 1000)
    failed = {"status": "failed_to_download", "error_message": "HTTP Error 404: Not Found"}
    _junk_tar(tmp_path / "root", {
        "000000000": {"mp4": b"v" * 100, "txt": b"a short caption"},
        "000000001": {"mp4": b"v" * 100, "txt": b"c" * 1001},
        "000000002": {"txt": b"x", "json": json.dumps(failed).encode()},
        "000000003": {"txt": b"x", "json": json.dumps({"status": "success"}).encode()}})
    named = {}

    def planned(self, video, uri, lineage, member=None):  # what the probe would be given
        named[lineage["sample_key"]] = lineage
        return iter(())

    monkeypatch.setattr(VideoSource, "planned", planned)
    items = _read_all(VideoSource("web", str(tmp_path / "root"), strides=(1,)))
    assert named["000000000"]["caption"] == "a short caption" and "caption" not in named["000000001"]
    assert sorted((i.key, i.stage, i.reason, i.detail) for i in items)[1] == (
        data_key("web", "00000", "000000002"), "download", "failed_to_download", "HTTP Error 404: Not Found")
    assert [(i.key, i.reason) for i in items] == [(data_key("web", "00000", "000000001"), "member_too_large"),
                                                  (data_key("web", "00000", "000000002"), "failed_to_download"),
                                                  (data_key("web", "00000", "000000003"), "missing_video")]
    assert items[0].stage == "read" and items[0].detail.startswith("000000001.txt: 1001 bytes, over the 1000 byte cap")


def test_a_long_caption_and_url_ride_in_each_clip_capped(tmp_path: Path, monkeypatch):
    """A video's lineage rides in each of its clips' sentences: a 100 KB `.txt` is read to its
    head and cut to `MAX_CAPTION_BYTES` (`caption_truncated` giving the member's size), a URL over
    the 4 KiB value cap is marked (`lineage_text`); both went whole into every clip before."""
    import json

    from sources.lineage_text import MAX_CAPTION_BYTES

    caption = b"frame " * 20_000
    _junk_tar(tmp_path / "root", {"000000000": {"mp4": b"v" * 100, "txt": caption,
                                                "json": json.dumps({"url": "http://x/" + "u" * 10_000}).encode()}})
    named = {}

    def planned(self, video, uri, lineage, member=None):  # what the probe would be given
        named[lineage["sample_key"]] = lineage
        return iter(())

    monkeypatch.setattr(VideoSource, "planned", planned)
    _read_all(VideoSource("web", str(tmp_path / "root"), strides=(1,)))
    lineage = named["000000000"]
    assert lineage["caption"] == caption[:MAX_CAPTION_BYTES].decode()  # "frame frame ... fram"
    assert lineage["caption_truncated"] == {"bytes": len(caption), "kept_bytes": MAX_CAPTION_BYTES,
                                            "budget": MAX_CAPTION_BYTES}
    assert lineage["url"] == {"truncated": "a text of 10009 characters, over the 4096 byte budget of a lineage value: "
                                           "left out"}


def test_a_thumbnail_beside_a_video_is_counted_and_a_dotted_keys_detail_is_true(tmp_path: Path, monkeypatch):
    """A `.jpg` beside a video vanished without a word (audio, `.txt` and `.json` are the sample's);
    a key with a dot (`clip.v2`: webdataset's key `clip`, fields `v2.mp4`...) said "no .mp4" while
    listing `v2.mp4`: the detail names the members whole and says why none is a video."""
    from sources.records import data_key

    _junk_tar(tmp_path / "root", {"000000000": {"mp4": b"v", "jpg": b"a thumbnail", "m4a": b"audio", "txt": b"x"},
                                  "clip.v2": {"mp4": b"v", "json": b"{}"}})
    monkeypatch.setattr(VideoSource, "planned", lambda *args: iter(()))
    items = _read_all(VideoSource("web", str(tmp_path / "root"), strides=(1,)))
    assert [(i.key, i.reason) for i in items] == [(data_key("web", "00000", "000000000"), "unexpected_file"),
                                                  (data_key("web", "00000", "clip"), "missing_video")]
    assert items[0].detail.startswith("000000000.jpg: not read")
    assert items[1].detail.startswith("members: clip.v2.json, clip.v2.mp4 (none is clip with a video extension")
    assert "clip.v2.mp4 is field v2.mp4 of key clip" in items[1].detail


@pytest.mark.parametrize("kind", ["dangling", "fifo"])
def test_a_twin_in_nfc_that_is_no_file_leaves_its_nfd_twin_read(tmp_path: Path, kind: str):
    """`café.mp4` in NFC is a dangling link or a fifo, in NFD a real video. The NFC name, first in
    `twin_order`, was always the one read: the real video became a `duplicate_key` reject saying
    "that file is read" of a file then rejected itself, and the video was lost. Now the first twin
    that is a file to read is read, and the other keeps its own reason (`not_a_file`, as an image
    twin's: it was `duplicate_key` "is the name of ... that file is read" of a fifo); when none
    is, each keeps its own reject (a link to nothing `not_a_file` too, not `unreadable`). The fifo
    is never opened (the read would block)."""
    import unicodedata

    video_zoo.require_ffmpeg()
    name = "caf\u00e9.mp4"
    nfc, nfd = (unicodedata.normalize(form, name) for form in ("NFC", "NFD"))
    video_zoo.encode(tmp_path / nfd, 16, "mpeg4")
    os.symlink("gone.mp4", tmp_path / nfc) if kind == "dangling" else os.mkfifo(tmp_path / nfc)
    source = VideoSource("vid", str(tmp_path), strides=(1,))
    items = [item for unit in source.units() for item in source.read(unit)]
    (record,) = [i for i in items if isinstance(i, VideoRecord)]
    assert os.path.basename(record.uri) == nfd and _shown_indices(record, tmp_path / nfd) == [list(range(16))]
    what = "a link to nothing (dangling), not a file: not read" if kind == "dangling" else \
        "a fifo (named pipe), not a file (never opened)"
    assert [(r.key, r.reason, r.detail, r.input) for r in items if isinstance(r, Reject)] == [
        (record.key, "not_a_file", f"'{name}' is {what}", nfc)]
    (tmp_path / nfd).unlink()
    os.symlink("gone.mp4", tmp_path / nfd)  # now neither can be read: each its own reject
    items = [item for unit in source.units() for item in source.read(unit)]
    assert [r.reason for r in items] == ["not_a_file", "not_a_file"]


@pytest.mark.parametrize("follow_links", [False, True])
def test_links_that_loop_are_counted_whether_links_are_followed_or_not(tmp_path: Path, follow_links: bool):
    """`sub/up -> ..` and `sub/self -> self` are loops. Followed, the walk met `sub/up` again as the
    root and dropped it without a word (only `sub/a.mp4` was listed), and `sub/self`, no folder and
    not named `.mp4`, was never listed at all; a ring of two links (`a/l -> ../b`, `b/l -> ../a`)
    went the same way. Each is now listed and rejected `link_loop`, as `docs/rejects.md` promises."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.mp4").write_bytes(b"")
    (tmp_path / "sub" / "up").symlink_to("..")
    (tmp_path / "sub" / "self").symlink_to("self")
    for ring, other in (("a", "b"), ("b", "a")):
        (tmp_path / ring).mkdir()
        (tmp_path / ring / "l").symlink_to(f"../{other}")
    source = VideoSource("vid", str(tmp_path), strides=(1,), follow_links=follow_links)
    rejects = {(r.key.removeprefix("vid-"), r.reason) for unit in source.units() for r in source.read(unit)}
    loops = {"sub-up", "sub-self"} | ({"a-l-l", "b-l-l"} if follow_links else set())
    assert {key for key, reason in rejects if reason == "link_loop"} == loops


def test_a_video_key_is_made_of_the_path_below_the_root_and_only_below_it(tmp_path: Path):
    """The key took what followed the root's text in the path, with no separator check: below
    `/data/vid`, `/data/videos/x.mp4` was `eos/x.mp4`. Now the path below the root
    (`paths.relative_to_root`), on a disk or a bucket; a path elsewhere, or the source's own file,
    is keyed by its name."""
    from sources.records import safe_key

    root = str(tmp_path / "vid")
    source = VideoSource("v", root)
    assert source.video_key(f"{root}/sub/a.mp4") == safe_key("v", "sub", "a.mp4")
    assert source.video_key(f"{root}eos/x.mp4") == safe_key("v", "x.mp4")
    assert VideoSource("v", f"{root}/a.mp4").video_key(f"{root}/a.mp4") == safe_key("v", "a.mp4")
    bucket = VideoSource("v", "gs://bucket/vid/")
    assert bucket.video_key("gs://bucket/vid/sub/a.mp4") == safe_key("v", "sub", "a.mp4")
    assert bucket.video_key("gs://bucket/videos/a.mp4") == safe_key("v", "a.mp4")

def test_a_full_temporary_folder_commits_nothing_and_the_rerun_reads_the_videos(tmp_path: Path, monkeypatch):
    """Through the build's unit renderer: the video2dataset tar's unit, met with a full temporary
    folder, raises (as a full output disk does: the build stops with its one-line error) and
    commits nothing, where every video was an `unreadable` reject (later `unit_failed`) taken from
    the unit store by every rerun. Once there is room the same renderer reads the video."""
    import tempfile

    import sources.video as video
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.tagged import REJECTS
    from uvd_pipeline.unit_render import list_units, unit_renderers

    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    _junk_tar(tmp_path / "root", {"000000000": {"mp4": b"<html>404</html>" * 40, "txt": b"x"}})
    config = parse_config({"version": 1, "output": str(tmp_path / "out"), "image": {"size": 32},
                           "tokenizer": {"enabled": False},
                           "sources": [{"name": "web", "type": "video", "path": str(tmp_path / "root"),
                                        "strides": [1]}]})
    renderer, (unit,) = unit_renderers(config)["web"], list_units(config)["web"]

    class Statvfs:  # full
        f_bavail, f_frsize = 0, 4096

    with monkeypatch.context() as full:
        full.setattr(os, "statvfs", lambda path: Statvfs())
        with pytest.raises(video.MachineError, match=r"\[Errno 28\].*TMPDIR"):
            renderer.render(unit)
    assert not list((tmp_path / "out").rglob("*.json")), "a unit was committed"
    outputs, _ = renderer.render(unit)
    assert [(tag, r.reason) for tag, r in outputs] == [(REJECTS, "unreadable")]  # HTML, read this time


@pytest.mark.parametrize("code", ["EMFILE", "ENFILE", "ENOMEM"])
@pytest.mark.parametrize("which", [1, 2, 3], ids=["the shard's scan", "the shard", "a member's copy"])
def test_too_many_open_files_opening_a_video2dataset_tar_fails_the_unit_and_blames_nothing(
        tmp_path: Path, monkeypatch, code: str, which: int):
    """Too many open files (or no memory) opening the tar to read it was one `corrupt_archive`
    reject of the shard, opening it to copy a member an `unreadable` reject of the video, both
    committed for good: they are the machine's errors, the unit fails (`MachineError`)."""
    import errno
    import tempfile

    import sources.video as video
    from sources import fsio

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _junk_tar(tmp_path / "root", {"000000000": {"mp4": b"v" * 100, "txt": b"a caption"}})
    monkeypatch.setattr(video.budget, "call", lambda *a, **k: pytest.fail("probed after the machine's error"))
    real_open, calls = fsio.open_file, []

    def open_file(uri, *args, **kwargs):
        calls.append(uri)
        if len(calls) == which:
            number = getattr(errno, code)
            raise OSError(number, os.strerror(number), uri)
        return real_open(uri, *args, **kwargs)

    monkeypatch.setattr(fsio, "open_file", open_file)
    with pytest.raises(video.MachineError, match=rf"\[Errno {getattr(errno, code)}\]") as raised:
        for item in _read_all(VideoSource("web", str(tmp_path / "root"), strides=(1,))):
            pytest.fail(f"yielded {item}")
    assert "00000.tar" in str(raised.value) and (which < 3 or "000000000.mp4" in str(raised.value))


def test_a_video_rewritten_while_its_unit_reads_is_a_changed_input_on_the_rerun(tmp_path: Path):
    """PyAV opens a video by its path, not through `fsio`: its state is recorded at its first open
    (`fsio.opening`), so a video a download or an editor rewrites while its unit renders reads as
    changed on the rerun; taken at the unit's commit, the new file's state stood beside frames of
    the old one, and the stale output was kept for good."""
    import subprocess

    from sources import fsio
    from uvd_pipeline.unit_manifest import changed_input, input_manifest

    def make(path: Path, seconds: str) -> None:
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=8",
                        "-t", seconds, "-pix_fmt", "yuv420p", "-f", "mp4", str(path)], check=True)

    (tmp_path / "web").mkdir()
    video = tmp_path / "web" / "a.mp4"
    make(video, "2")
    source = VideoSource("v", str(tmp_path / "web"), frames=4)
    (unit,) = source.units()
    with fsio.recording_inputs() as record:  # as `unit_render` reads and renders a unit
        items = list(source.read(unit))
        frames = [result for item in items for _, result in clip_frames(item)]  # the render decodes it
    first = fsio.file_state(str(video))
    make(tmp_path / "new.mp4", "3")
    os.replace(tmp_path / "new.mp4", video)  # rewritten after it was read, before the unit's commit
    assert [type(i).__name__ for i in items] == ["VideoRecord"]
    assert frames and all(isinstance(f, np.ndarray) and f.shape[1:] == (48, 64, 3) for f in frames)
    assert record.states == {str(video): first}
    assert changed_input(input_manifest(record, unit)) == f"{video} changed"



def test_hls_and_dash_pieces_are_counted_with_the_command_that_joins_them(tmp_path: Path):
    """An HLS folder as `ffmpeg -f hls -hls_segment_type fmp4` writes it (`out.m3u8`, `init.mp4`,
    `outN.m4s`) built as its `init.mp4`'s `too_few_frames` alone: the fragments, 12 s of video, were
    skipped without a word, as were a DASH `manifest.mpd` and its `.m4s`. Each is a counted reject
    now, whose detail's command gives the whole video (read back: all 300 frames)."""
    import subprocess

    video_zoo.require_ffmpeg()
    hls, dash = tmp_path / "hls", tmp_path / "dash"
    hls.mkdir()
    dash.mkdir()
    source = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=12", "-c:v", "libx264", "-g", "50"]
    video_zoo.ffmpeg(*source, "-f", "hls", "-hls_time", "4", "-hls_segment_type", "fmp4", "-hls_playlist_type", "vod",
                     str(hls / "out.m3u8"))
    video_zoo.ffmpeg(*source, "-f", "dash", "-seg_duration", "4", str(dash / "manifest.mpd"))
    items = {}
    for folder in (hls, dash):
        videos = VideoSource("v", str(folder), strides=(10,))
        items.update({item.input: item for unit in videos.units() for item in videos.read(unit)})
    pieces = {name: item for name, item in items.items() if name.endswith((".m4s", ".m3u8", ".mpd"))}
    assert {"out.m3u8", "out0.m4s", "out1.m4s", "out2.m4s", "manifest.mpd"} <= set(pieces)
    assert len(pieces) >= 8  # and DASH's init and chunk fragments
    assert all(isinstance(item, Reject) and item.reason == "unexpected_file" for item in pieces.values())
    assert pieces["out.m3u8"].detail == ("an HLS playlist, of pieces of one video (its .ts segments, if any, are read "
                                         "each as a video of its own): join the stream into one file (ffmpeg -i "
                                         "out.m3u8 -c copy joined.mp4), keep the pieces out of the source's folder, "
                                         "and build from that")
    assert "fragment of an HLS or DASH stream" in pieces["out1.m4s"].detail
    subprocess.run(["ffmpeg", "-v", "error", "-i", "out.m3u8", "-c", "copy", str(tmp_path / "joined.mp4")], cwd=hls,
                   check=True)  # the detail's command, as given
    (record,) = VideoSource("v", str(tmp_path), strides=(10,), extensions=(".mp4",)).read(str(tmp_path / "joined.mp4"))
    assert isinstance(record, VideoRecord) and record.n_frames == 300
