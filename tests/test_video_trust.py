"""Frame-exactness on files the ffmpeg CLI writes the way users' tools do: all-intra HEVC, AV1 and
VP9 at odd sizes and with a display size the container declares (`-aspect`: Matroska/WebM's
DisplayWidth/DisplayHeight), and an MP4 cut short. Each frame is checked against the ffmpeg CLI's
own decode (what a player shows) and against PyAV decoding every frame in order.
"""

from __future__ import annotations

import hashlib
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import pytest
import video_zoo

from sources import budget
from sources.records import Reject, VideoRecord
from sources.video import VideoSource, clip_frames, decord_available
from sources.ogg_video_pages import VideoPages
from sources.video_decode import decode_frames, probe, read_index

DECODERS = ["pyav"] + (["decord"] if decord_available() else [])


def _source(tmp_path: Path, n: int) -> str:
    return str(video_zoo._source(tmp_path, n))


def _read(path: Path, decoder: str = "pyav", strides=(1, 2)) -> VideoRecord:
    (record,) = list(VideoSource("trust", str(path.parent), strides=strides, decoder=decoder).read(str(path)))
    assert isinstance(record, VideoRecord), record
    return record


def _cli_frames(path: Path, width: int, height: int, vf: str | None = None) -> np.ndarray:
    """Every frame the ffmpeg CLI shows, as rgb24 (after `vf` where given)."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", *(["-vf", vf] if vf else []),
                          "-vsync", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def _assert_frames_as_shown(record: VideoRecord, reference, everything=None, tolerance: float = 3.0) -> int:
    """Every clip decodes, each frame shows the index of the player's frame at its place and is
    within `tolerance` of it (exactly PyAV's sequential decode where `everything` is given)."""
    checked = 0
    for clip, frames in clip_frames(record):
        assert not isinstance(frames, Exception), (clip.key, frames)
        for i, frame in zip(clip.frame_indices, frames):
            assert frame.shape == reference[i].shape, (clip.key, i)
            assert video_zoo.read_index(frame) == video_zoo.read_index(reference[i]), (clip.key, i)
            assert np.abs(frame.astype(int) - reference[i]).mean() < tolerance, (clip.key, i)
            if everything is not None:
                assert np.array_equal(frame, everything[i]), (clip.key, i)
            checked += 1
    assert checked
    return checked


# -- (a) HEVC all-intra ---------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
@pytest.mark.parametrize("decoder", DECODERS)
def test_all_intra_hevc_gives_every_frame_a_full_decode_gives(tmp_path, suffix: str, decoder: str):
    """x265 with `keyint=1` (every frame an IDR: what editing intermediates and some cameras
    write): each wanted frame is its own key frame, decoded alone. decord reads no HEVC (its
    exactness is checked per key frame only where it may decode: `decord_exact` refuses HEVC
    first), so PyAV decodes it and the lineage says why; the frames are those of a decode of
    every frame, and the ffmpeg CLI's."""
    video_zoo.require_ffmpeg()
    path = tmp_path / f"allintra{suffix}"
    video_zoo.ffmpeg("-i", _source(tmp_path, 40), "-c:v", "libx265", "-preset", "ultrafast", "-x265-params",
                     "keyint=1:log-level=error", "-pix_fmt", "yuv420p", str(path))
    info = probe(str(path))
    assert (info.codec, info.keyframes, info.n_frames) == ("hevc", 40, 40)
    record = _read(path, decoder, strides=(1, 2))
    assert record.decoder == "pyav"
    if decoder == "decord":
        assert "codec hevc" in record.clips[0].lineage["decoder_note"]
    _assert_frames_as_shown(record, video_zoo.sequential(path), video_zoo.coded(path))


# -- (b) AV1 and VP9 sizes ------------------------------------------------------------------
AV1_VP9_ODD = {
    "aom.mkv": ["-c:v", "libaom-av1", "-cpu-used", "8", "-crf", "30", "-g", "10"],
    "rav1e.mp4": ["-c:v", "librav1e", "-speed", "10", "-g", "10"],
    "vp9.webm": ["-c:v", "libvpx-vp9", "-deadline", "good", "-cpu-used", "8", "-g", "10"],
}


@pytest.mark.parametrize("name", sorted(AV1_VP9_ODD))
def test_av1_and_vp9_at_an_odd_size_give_the_frames_ffmpeg_shows(tmp_path, name: str):
    """65x49: AV1 codes in 8x8 blocks and VP9 in 8x8 too, the decoders crop to the declared
    size; the frames keep it (not the coded, padded size) with either decoder requested."""
    video_zoo.require_ffmpeg()
    path = tmp_path / name
    video_zoo.ffmpeg("-i", _source(tmp_path, 30), "-vf", "scale=65:49", *AV1_VP9_ODD[name], "-pix_fmt", "yuv420p",
                     str(path))
    reference = _cli_frames(path, 65, 49)
    everything = video_zoo.coded(path)
    assert len(reference) == len(everything) == 30
    for decoder in DECODERS:
        record = _read(path, decoder)
        assert record.n_frames == 30 and record.decoder == "pyav"  # odd height or AV1: PyAV decodes
        assert (record.clips[0].lineage["width"], record.clips[0].lineage["height"]) == (65, 49)
        _assert_frames_as_shown(record, reference, everything)


@pytest.mark.parametrize("name,encode", [
    ("vp9.webm", ["-c:v", "libvpx-vp9", "-deadline", "good", "-cpu-used", "8", "-g", "10"]),
    ("av1.mkv", ["-c:v", "libaom-av1", "-cpu-used", "8", "-crf", "30", "-g", "10"]),
])
def test_a_display_size_the_container_declares_is_shown(tmp_path, name: str, encode: list[str]):
    """`ffmpeg -i x -c copy -aspect 2:1 y.webm` writes Matroska's DisplayWidth/DisplayHeight
    (VP9 and AV1 bitstreams carry no pixel aspect ratio of their own): FFmpeg reads them as the
    stream's sample aspect ratio, 98:65 here, and a player shows 98x49. The frames come out at
    that size, as `-vf scale=iw*sar:ih:flags=area` shows them."""
    video_zoo.require_ffmpeg()
    coded = tmp_path / f"coded{Path(name).suffix}"
    video_zoo.ffmpeg("-i", _source(tmp_path, 24), "-vf", "scale=65:49", *encode, "-pix_fmt", "yuv420p", str(coded))
    path = tmp_path / name
    video_zoo.ffmpeg("-i", str(coded), "-c", "copy", "-aspect", "2:1", str(path))
    shown = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "stream=sample_aspect_ratio,display_aspect_ratio", "-of", "csv=p=0", str(path)],
                           capture_output=True, text=True, check=True).stdout.split()
    assert shown == ["98:65,2:1"]
    reference = _cli_frames(path, 98, 49, "scale=iw*sar:ih:flags=area")
    for decoder in DECODERS:
        record = _read(path, decoder)
        lineage = record.clips[0].lineage
        assert (lineage["width"], lineage["height"], lineage["sample_aspect_ratio"]) == (98, 49, "98:65")
        _assert_frames_as_shown(record, reference)


# -- cut files ------------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.55, 0.62, 0.7, 0.78, 0.86, 0.93])
def test_an_mp4_cut_short_counts_and_names_the_frames_ffmpeg_shows(tmp_path, fraction: float):
    """A faststart MP4 (index first) cut at `fraction` of its bytes (an interrupted download):
    the last packet the demuxer returns may be a partial one (FFmpeg flags it corrupt, "partial
    file"). Counted as a frame, it left a hole (the frame did not decode, so a clip holding it was
    lost) and every later index named the next frame ffmpeg shows; a partial frame that did
    decode would be concealment garbage. The count is now ffmpeg's, and frame i is its frame i."""
    video_zoo.require_ffmpeg()
    whole = tmp_path / "whole.mp4"
    video_zoo.ffmpeg("-i", _source(tmp_path, 60), *video_zoo.X264_CLI, "-g", "12", "-pix_fmt", "yuv420p",
                     "-movflags", "+faststart", str(whole))
    path = video_zoo.truncate(whole, tmp_path / "cut.mp4", fraction)
    reference = video_zoo.sequential(path)
    info = probe(str(path))
    assert info.n_frames == len(reference)
    record = _read(path, "pyav", strides=(1,))
    _assert_frames_as_shown(record, reference)


def test_an_mp4_cut_before_its_index_is_a_counted_reject(tmp_path):
    """moov at the end (ffmpeg's default) cut off: nothing says where the frames are; the
    video is `unreadable` with FFmpeg's words, never a crash."""
    video_zoo.require_ffmpeg()
    whole = tmp_path / "whole.mp4"
    video_zoo.ffmpeg("-i", _source(tmp_path, 30), *video_zoo.X264_CLI, "-pix_fmt", "yuv420p", str(whole))
    path = video_zoo.truncate(whole, tmp_path / "cut.mp4", 0.7)
    (item,) = list(VideoSource("trust", str(tmp_path), strides=(1,)).read(str(path)))
    assert isinstance(item, Reject) and item.reason == "unreadable" and "moov atom not found" in item.detail


# -- files with no frames to read -----------------------------------------------------------
@pytest.mark.parametrize("name,made", [
    ("song.m4a", ["-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac"]),
    ("speech.mkv", ["-f", "lavfi", "-i", "sine=duration=1", "-c:a", "libvorbis"]),
    ("empty.mp4", ["-f", "lavfi", "-i", "color=size=64x48", "-c:v", "libx264", "-frames:v", "0"]),
])
def test_a_file_without_video_is_a_reject_that_says_what_it_holds(tmp_path, name: str, made: list[str]):
    """An audio-only file among the videos (a `.m4a` renamed, a podcast `.mkv`) or one the
    ffmpeg CLI wrote with `-frames:v 0` (no video track at all): `no_video_stream`, whose detail
    said only "VideoError: no_video_stream"; it now says what the file holds."""
    video_zoo.require_ffmpeg()
    path = tmp_path / name
    video_zoo.ffmpeg(*made, str(path))
    suffix = ".mp4" if name.endswith(".m4a") else path.suffix
    shown = path.rename(path.with_suffix(suffix))
    (item,) = list(VideoSource("trust", str(tmp_path), strides=(1,)).read(str(shown)))
    assert isinstance(item, Reject) and item.reason == "no_video_stream", item
    expected = "no streams" if name == "empty.mp4" else "1 audio stream"
    assert item.detail == f"the file holds {expected}, no video", item.detail


def test_an_mp4_cut_inside_its_index_says_it_may_be_cut(tmp_path):
    """moov at the end, cut inside it (94% of the bytes): FFmpeg still reads a track from what is
    left, but not as video (a data stream). "the file holds 1 data stream, no video" sent a user
    looking for a data file; the detail now says the file may be cut inside its index."""
    video_zoo.require_ffmpeg()
    whole = tmp_path / "whole.mp4"
    video_zoo.ffmpeg("-i", _source(tmp_path, 80), *video_zoo.X264_CLI, "-bf", "3", "-g", "25", "-pix_fmt",
                     "yuv420p", str(whole))
    path = video_zoo.truncate(whole, tmp_path / "cut.mp4", 0.94)
    (item,) = list(VideoSource("trust", str(tmp_path), strides=(1,)).read(str(path)))
    assert isinstance(item, Reject) and item.reason == "no_video_stream", item
    assert item.detail == "the file holds 1 data stream, no video (the file may be cut inside its index)", item


def test_an_mp4_cut_before_its_first_frame_is_too_few_frames(tmp_path):
    """A faststart MP4 whose download stopped right after its index: the index lists every frame,
    none is in the file. `too_few_frames` ("no frames"), never a crash or a guessed frame."""
    video_zoo.require_ffmpeg()
    whole = tmp_path / "whole.mp4"
    video_zoo.ffmpeg("-i", _source(tmp_path, 30), *video_zoo.X264_CLI, "-pix_fmt", "yuv420p", "-movflags",
                     "+faststart", str(whole))
    data = whole.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[:data.index(b"mdat") + 4])
    (item,) = list(VideoSource("trust", str(tmp_path), strides=(1,)).read(str(path)))
    assert isinstance(item, Reject) and (item.reason, item.detail) == ("too_few_frames", "no frames"), item


# -- the ffmpeg CLI's other ways of writing frames a player shows ---------------------------
def _ts_wrap(tmp_path: Path, path: Path) -> None:
    """MPEG-TS stamps are 33 bits of 90 kHz: starting 1.2 s before 2^33 ticks, they wrap mid-file."""
    video_zoo.ffmpeg("-i", _source(tmp_path, 90), *video_zoo.X264_CLI, "-g", "25", "-pix_fmt", "yuv420p",
                     "-output_ts_offset", "95442.5", str(path))


def _vfr_concat(tmp_path: Path, path: Path) -> None:
    """Two parts at 25 and 30 fps joined by the concat demuxer with a stream copy."""
    parts = []
    for k, (rate, first) in enumerate(((25, 0), (30, 30))):
        part = tmp_path / f"_part{k}.mp4"
        video_zoo.ffmpeg("-i", _source(tmp_path, 60), "-vf", f"select=between(n\\,{first}\\,{first + 29}),"
                         "setpts=N/FRAME_RATE/TB", "-r", str(rate), *video_zoo.X264_CLI, "-g", "10", "-pix_fmt",
                         "yuv420p", "-video_track_timescale", "90000", str(part))
        parts.append(f"file '{part}'\n")
    listing = tmp_path / "_parts.txt"
    listing.write_text("".join(parts))
    video_zoo.ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(path))


def _copy_cut(tmp_path: Path, path: Path) -> None:
    """`-ss` before a stream copy of a B-frame stream, between key frames (MOV: an edit list;
    Matroska: the pre-roll packets before zero)."""
    whole = tmp_path / "_whole.mp4"
    video_zoo.ffmpeg("-i", _source(tmp_path, 90), *video_zoo.X264_CLI, "-g", "12", "-bf", "3", "-pix_fmt",
                     "yuv420p", str(whole))
    video_zoo.ffmpeg("-ss", "1.3", "-i", str(whole), "-c", "copy", str(path))


SHOWN = {
    "wrap.ts": _ts_wrap,
    "vfr.mp4": _vfr_concat,
    "cut.mov": _copy_cut,
    "cut.mkv": _copy_cut,
    "hevc10.mp4": lambda tmp, path: video_zoo.ffmpeg(
        "-i", _source(tmp, 40), "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=12:log-level=error",
        "-pix_fmt", "yuv420p10le", str(path)),
}


@pytest.mark.parametrize("name", sorted(SHOWN))
def test_frames_of_files_the_cli_writes_are_the_frames_it_shows(tmp_path, name: str):
    """Time stamps wrapping at 2^33 in MPEG-TS, variable frame rate from a concat copy, copy cuts
    with B-frames in MOV and Matroska, 10-bit HEVC: the count is the CLI's and frame i shows
    what the CLI's frame i shows, with either decoder requested."""
    video_zoo.require_ffmpeg()
    path = tmp_path / name
    SHOWN[name](tmp_path, path)
    reference = video_zoo.sequential(path)
    for decoder in DECODERS:
        record = _read(path, decoder, strides=(1, 2))
        assert record.n_frames == len(reference), decoder
        _assert_frames_as_shown(record, reference)


# -- files joined end to end, stamps before zero: restamped (`sources.video_index`) -----------
JOINED = {  # name: the codec options of each part (x264 with B-frames; MPEG-2 with open GOPs)
    "h264.ts": [*video_zoo.X264_CLI, "-g", "10", "-bf", "2"],
    "mpeg2.ts": ["-c:v", "mpeg2video", "-q:v", "2", "-g", "12", "-bf", "2"],
    "mpeg2.mpg": ["-c:v", "mpeg2video", "-q:v", "2", "-g", "12", "-bf", "2"],
}


def _parts(tmp_path: Path, name: str, sizes=((64, 48), (64, 48)), n: int = 30) -> list[Path]:
    """Parts of `n` frames each, written apart by the CLI (so each starts its clock again): part k
    shows the pattern's frames k*n.. (every part scaled to its size)."""
    parts = []
    for k, (w, h) in enumerate(sizes):
        part = tmp_path / f"_part{k}{Path(name).suffix}"
        video_zoo.ffmpeg("-i", _source(tmp_path, n * len(sizes)), "-vf", f"select=between(n\\,{n * k}\\,{n * k + n - 1}),"
                         f"setpts=N/25/TB,scale={w}:{h}", *JOINED[name], "-pix_fmt", "yuv420p", str(part))
        parts.append(part)
    return parts


def _joined(tmp_path: Path, name: str, parts: list[Path]) -> Path:
    """`cat part0 part1 > joined`: what a camera's or a recorder's split files joined by hand give."""
    path = tmp_path / f"joined_{name}"
    path.write_bytes(b"".join(part.read_bytes() for part in parts))
    return path


@pytest.mark.parametrize("name", sorted(JOINED))
def test_mpeg_files_joined_end_to_end_give_every_frame_the_cli_shows(tmp_path, name: str):
    """`cat a.ts b.ts > c.ts` (and MPEG-PS `.mpg` alike): ffmpeg and VLC play both parts, but the
    second part's clock starts again, so its stamps repeat the first's, and the file was refused
    (`unsupported_container`: "packets share time stamps"). Now each part is placed after the one
    before, as the CLI shows them: the count is the CLI's and every frame equals the CLI's frame
    at its place, pixel for pixel, however the clips pick them (the file is read from its start,
    never seeked: the demuxer's stamps repeat)."""
    video_zoo.require_ffmpeg()
    path = _joined(tmp_path, name, _parts(tmp_path, name))
    reference = video_zoo.sequential(path)
    assert len(reference) == 60 and [video_zoo.read_index(f) for f in reference] == list(range(60))
    for decoder in DECODERS:
        record = _read(path, decoder, strides=(1, 3))
        assert record.n_frames == 60, decoder
        assert record.clips[0].lineage["restamped"] == "joined"
        assert _assert_frames_as_shown(record, reference, everything=reference, tolerance=0.5) > 60


def test_joined_mpeg_ts_parts_of_two_sizes_keep_each_frame_its_size(tmp_path):
    """Two recordings of different sizes joined by `cat` (a mid-stream resolution change): each
    frame keeps its own size, equal byte for byte to what the CLI decodes without scaling it to
    the first size (`-autoscale 0`, framemd5 of rgb24)."""
    import hashlib

    video_zoo.require_ffmpeg()
    path = _joined(tmp_path, "h264.ts", _parts(tmp_path, "h264.ts", sizes=((64, 48), (96, 64), (64, 48)), n=12))
    listing = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-autoscale", "0",
                              "-vsync", "passthrough", "-pix_fmt", "rgb24", "-f", "framemd5", "-"],
                             capture_output=True, text=True, check=True).stdout
    expected = [(int(line.split(",")[4]), line.split(",")[5].strip()) for line in listing.splitlines()
                if line and not line.startswith("#")]
    assert len(expected) == 36 and {size for size, _ in expected} == {64 * 48 * 3, 96 * 64 * 3}
    assert probe(str(path)).n_frames == 36
    for wanted in (range(36), range(2, 36, 5)):
        got = dict(decode_frames(str(path), wanted))
        assert sorted(got) == list(wanted)
        assert all((frame.size, hashlib.md5(frame.tobytes()).hexdigest()) == expected[i] for i, frame in got.items())


def test_mpeg_ts_joined_to_a_part_cut_mid_gop_is_a_counted_reject(tmp_path):
    """`cat a.ts b.ts` where b.ts is a capture that starts mid-GOP: the CLI decodes b's first
    frames against a's pictures (frames that show neither). Refused, naming why, never guessed."""
    video_zoo.require_ffmpeg()
    first, second = _parts(tmp_path, "h264.ts")
    cut = video_zoo._head_cut(second, tmp_path / "_cut.ts", 188)
    path = _joined(tmp_path, "cut.ts", [first, cut])
    (item,) = list(VideoSource("trust", str(tmp_path), strides=(1,)).read(str(path)))
    assert isinstance(item, Reject) and item.reason == "unsupported_container", item
    assert "start again at packet 30, which is not a key frame" in item.detail


def _part_of(tmp_path: Path, name: str, encoder: list[str], first: int, n: int, *muxing: str) -> Path:
    """`n` frames of the pattern from frame `first`, encoded apart by the CLI (its clock from zero)."""
    path = tmp_path / name
    video_zoo.ffmpeg("-i", _source(tmp_path, first + n), "-vf", f"select=gte(n\\,{first}),setpts=N/25/TB,scale=64:48",
                     *encoder, "-pix_fmt", "yuv420p", *muxing, str(path))
    return path


def _video_pes_heads(out: bytearray) -> Iterator[int]:
    """Where each video PES header of the MPEG-TS bytes `out` starts (stream ids 0xE0-0xEF), in order."""
    for at in range(0, len(out) - 187, 188):
        if out[at] != 0x47 or not out[at + 1] & 0x40:  # a packet that starts a PES
            continue
        head = at + 4 + (1 + out[at + 4] if out[at + 3] & 0x20 else 0)
        if out[head:head + 3] == b"\x00\x00\x01" and 0xE0 <= out[head + 3] <= 0xEF:
            yield head


def _moved_stamp(field: bytes, ticks: int) -> bytes:
    """A PES header's 5-byte PTS or DTS field with its stamp moved by `ticks` (90 kHz, modulo 2^33),
    its 4-bit prefix kept."""
    f = field
    stamp = ((f[0] >> 1) & 7) << 30 | (f[1] << 8 | f[2]) >> 1 << 15 | (f[3] << 8 | f[4]) >> 1
    stamp = (stamp + ticks) % (1 << 33)
    return bytes([(f[0] & 0xF0) | (stamp >> 30 & 7) << 1 | 1, stamp >> 22 & 0xFF, (stamp >> 15 & 0x7F) << 1 | 1,
                  stamp >> 7 & 0xFF, (stamp & 0x7F) << 1 | 1])


def _shift_pes_dts(data: bytes, nth: int, ticks: int) -> bytes:
    """The MPEG-TS bytes with the decode stamp of the `nth` video PES moved by `ticks` (90 kHz):
    one stamp astray, as a faulty muxer or a broadcast glitch leaves it."""
    out = bytearray(data)
    for seen, head in enumerate(_video_pes_heads(out)):
        if seen == nth:
            assert out[head + 7] >> 6 == 3, "that PES carries no decode stamp"
            out[head + 14:head + 19] = _moved_stamp(out[head + 14:head + 19], ticks)
            return bytes(out)
    raise ValueError(f"no video PES {nth}")


def _cli_md5s(path: Path) -> list[str]:
    """The md5 of each frame the ffmpeg CLI shows (rgb24, each at its own size)."""
    listing = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-autoscale", "0",
                              "-vsync", "passthrough", "-pix_fmt", "rgb24", "-f", "framemd5", "-"],
                             capture_output=True, text=True, check=True).stdout
    return [line.split(",")[5].strip() for line in listing.splitlines() if line and not line.startswith("#")]


def _md5s(path: Path, wanted, **options) -> dict[int, str]:
    import hashlib

    return {i: hashlib.md5(f.tobytes()).hexdigest() for i, f in decode_frames(str(path), wanted, **options)}


@pytest.mark.parametrize("ticks", [90000, -90000])
def test_one_mpeg_ts_decode_stamp_astray_is_no_join(tmp_path, ticks: int):
    """One PES whose decode stamp jumps up 1 s (or falls 1 s), its presentation stamp right: no
    join, the CLI shows the 60 frames in order. Compared with the highest stamps so far, the jump
    up made the next B-frames look like a new part starting mid-GOP and the file was refused (a
    regression); without the presentation stamp's test, the fall did."""
    video_zoo.require_ffmpeg()
    part = _part_of(tmp_path, "_whole.ts", [*video_zoo.X264_CLI, "-g", "25", "-bf", "3"], 0, 60)
    path = tmp_path / "astray.ts"
    path.write_bytes(_shift_pes_dts(part.read_bytes(), 22, ticks))
    with av.open(str(path)) as container:  # what makes the file: packet 22's decode stamp, alone astray
        stamps = [(p.pts, p.dts, p.is_keyframe) for p in container.demux(video=0) if p.size]
    assert stamps[22][1] - stamps[21][1] == ticks + 3600 and stamps[23][1] - stamps[21][1] == 7200
    assert not stamps[23][2] and stamps[23][0] < stamps[22][0]  # a B-frame follows
    expected = _cli_md5s(path)
    assert len(expected) == 60
    assert probe(str(path)).n_frames == 60
    assert _md5s(path, range(60)) == dict(enumerate(expected))


@pytest.mark.parametrize("before_wrap", [0.5, 0.62, 0.86])
def test_mpeg_ts_joined_to_a_part_whose_clock_wraps_gives_every_frame(tmp_path, before_wrap: float):
    """`cat a.ts b.ts` where b's 33-bit clock wraps `before_wrap` seconds in (a recorder running
    26.5 hours): the fall of about 2^33 ticks is the clock wrapping, not a third part starting
    mid-GOP (refused 9 times in 10). Each frame equals the CLI's."""
    video_zoo.require_ffmpeg()
    encoder = [*video_zoo.X264_CLI, "-g", "10", "-bf", "2"]
    first = _part_of(tmp_path, "_a.ts", encoder, 0, 30)
    wrap = (1 << 33) / 90000 - 1.4 - before_wrap  # the muxer starts its clock at 1.4 s
    second = _part_of(tmp_path, "_b.ts", encoder, 30, 30, "-output_ts_offset", f"{wrap:.4f}")
    path = _joined(tmp_path, "wrap.ts", [first, second])
    with av.open(str(path)) as container:
        stamps = [p.dts for p in container.demux(video=0) if p.size]
    assert any(a - b > 1 << 32 for a, b in zip(stamps, stamps[1:]))  # the clock wraps in the file
    expected = _cli_md5s(path)
    assert len(expected) == 60 and [video_zoo.read_index(f) for f in video_zoo.sequential(path)] == list(range(60))
    assert probe(str(path)).n_frames == 60
    assert _md5s(path, range(60)) == dict(enumerate(expected))
    assert _md5s(path, [3, 44, 58]) == {i: expected[i] for i in (3, 44, 58)}


OPEN_GOP = {  # name: the encoder of a clip whose cut starts with an open GOP
    "mpeg2.ts": ["-c:v", "mpeg2video", "-q:v", "2", "-g", "12", "-bf", "2"],
    "hevc.ts": ["-c:v", "libx265", "-preset", "ultrafast",
                "-x265-params", "keyint=12:min-keyint=12:scenecut=0:bframes=2:log-level=error"],
}


@pytest.mark.parametrize("name", sorted(OPEN_GOP))
def test_a_part_cut_at_an_open_gop_gives_what_it_gives_alone(tmp_path, name: str):
    """`cat a.ts cut.ts` where cut.ts (`-ss 1.7 -c copy`) starts with an open GOP (MPEG-2; HEVC's
    RASL frames): its leading frames reference the part before, so the CLI shows 2 garbage frames
    there. They are hidden, as at a file's start: the first part's frames, then exactly the
    frames the CLI shows of the cut part alone (before, those garbage frames were counted)."""
    video_zoo.require_ffmpeg()
    encoder = OPEN_GOP[name]
    first = _part_of(tmp_path, "_a.ts", encoder, 0, 30)
    whole = _part_of(tmp_path, "_whole.ts", encoder, 0, 90)
    cut = tmp_path / "_cut.ts"
    video_zoo.ffmpeg("-ss", "1.7", "-i", str(whole), "-c", "copy", str(cut))
    alone = _cli_md5s(cut)
    path = _joined(tmp_path, name, [first, cut])
    expected = _cli_md5s(first) + alone
    assert len(_cli_md5s(path)) == len(expected) + 2  # what makes the file: the CLI shows 2 leading frames more
    assert probe(str(path)).n_frames == len(expected) == 30 + len(alone)
    assert _md5s(path, range(len(expected))) == dict(enumerate(expected))
    assert _md5s(path, [31, 50]) == {31: expected[31], 50: expected[50]}


def _reads_as_each_part_alone(path: Path, parts: list[Path]) -> list[str]:
    """What makes a join whose later part starts with an open GOP: the CLI's one decoder carries
    the part before's frame order over the join, so what it shows of the joined file is not what
    it shows of the parts, one after the other. Each part is decoded here by a decoder started
    afresh, so the reference is the CLI on each part alone: every frame, and frames picked across
    the join, equal to it byte for byte (rgb24 framemd5, `-vsync passthrough`)."""
    expected = [md5 for part in parts for md5 in _cli_md5s(part)]
    assert _cli_md5s(path) != expected  # the CLI mixes the parts' frames at the join
    info = probe(str(path))
    assert (info.n_frames, info.restamped) == (len(expected), "joined")
    assert _md5s(path, range(len(expected))) == dict(enumerate(expected))
    first = len(_cli_md5s(parts[0]))
    picked = [1, first - 1, first, first + 3, len(expected) - 1]
    assert _md5s(path, picked) == {i: expected[i] for i in picked}
    return expected


def _joined_to_a_cut(tmp_path: Path, name: str, encoder: list[str], frames: int, seek: str) -> tuple[Path, Path, Path]:
    """30 frames encoded apart, joined to a recording of `frames` cut at `seek` seconds by
    `-ss SEEK -c copy` (at its first key frame from there): the joined file and its two parts."""
    first = _part_of(tmp_path, "_a.ts", encoder, 0, 30)
    whole = _part_of(tmp_path, "_whole.ts", encoder, 0, frames)
    cut = tmp_path / "_cut.ts"
    video_zoo.ffmpeg("-ss", seek, "-i", str(whole), "-c", "copy", str(cut))
    return _joined(tmp_path, name, [first, cut]), first, cut


def test_mpeg_ts_joined_to_an_h264_open_gop_gives_each_part_as_alone(tmp_path):
    """A later part starting at an x264 `open-gop` key frame (a recovery point, no IDR; `-ss 1.7
    -c copy` of such a stream): the CLI's one decoder shows 60 frames where the parts alone show
    30 + 42, some of them out of order. Refused before (`unsupported_container`: "an H.264 key
    frame that is no IDR"); now each part is decoded as it is alone, its leading B-frames hidden
    as at a file's start."""
    video_zoo.require_ffmpeg()
    encoder = [*video_zoo.X264_CLI, "-g", "12", "-bf", "2",
               "-x264-params", "open-gop=1:keyint=12:min-keyint=12:scenecut=0"]
    path, first, cut = _joined_to_a_cut(tmp_path, "opengop.ts", encoder, 90, "1.7")
    assert len(_cli_md5s(path)) == 60
    assert len(_reads_as_each_part_alone(path, [first, cut])) == 72
    (record,) = list(VideoSource("trust", str(tmp_path), strides=(1,)).read(str(path)))
    assert isinstance(record, VideoRecord) and record.n_frames == 72, record


def test_mpeg_ts_joined_to_an_hevc_cra_gives_each_part_as_alone(tmp_path):
    """x265 with its defaults (open GOPs: a CRA every 250 frames, 4 B-frames) cut at its CRA by
    `-ss 9.9 -c copy`, joined after another x265 recording: the CLI's one decoder gives the cut
    part's key frame before the first part's last frames (41 frames, out of order; the parts
    alone show 30 + 10), and the file was refused ("the decoder gives the frame stamped 234000
    after the one stamped 241200"). Each part is now decoded as it is alone, its RASL frame
    hidden."""
    video_zoo.require_ffmpeg()
    x265 = ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error"]
    path, first, cut = _joined_to_a_cut(tmp_path, "cra.ts", x265, 260, "9.9")
    assert len(_cli_md5s(path)) == 41
    assert len(_reads_as_each_part_alone(path, [first, cut])) == 40


@pytest.mark.parametrize("sizes", [((64, 48), (64, 48)), ((64, 48), (96, 64))])
def test_chained_ogg_theora_gives_each_part_in_turn(tmp_path, sizes):
    """Two Theora files joined end to end (a chained Ogg, `cat a.ogv b.ogv`; the second may be
    another size): VLC plays both. The ffmpeg CLI shows only the first's 30 frames by default (its
    Theora decoder cannot reconfigure at the second part's headers on several threads: "try
    -threads 1"), and on one thread shows all 60, equal to each part alone: that is the reference.
    Refused before ("packets share time stamps"); now every frame, and frames picked in the second
    part (its headers sent to the decoder though the frames before are skipped), equal the CLI's,
    and the file is never seeked."""
    video_zoo.require_ffmpeg()
    encoder = ["-c:v", "libtheora", "-q:v", "7", "-g", "10"]
    parts = []
    for k, (w, h) in enumerate(sizes):
        part = _part_of(tmp_path, f"_{k}.ogv", encoder, 30 * k, 30)
        if (w, h) != (64, 48):
            video_zoo.ffmpeg("-i", str(part), "-vf", f"scale={w}:{h}", *encoder, str(tmp_path / f"_{k}b.ogv"))
            part = tmp_path / f"_{k}b.ogv"
        parts.append(part)
    path = _joined(tmp_path, "chained.ogv", parts)
    expected = _cli_md5s(parts[0]) + _cli_md5s(parts[1])
    assert len(_cli_md5s(path)) == 30  # what makes the file: the CLI's default threads show one part
    listing = subprocess.run(["ffmpeg", "-v", "error", "-threads", "1", "-i", str(path), "-map", "0:v:0",
                              "-autoscale", "0", "-vsync", "passthrough", "-pix_fmt", "rgb24", "-f", "framemd5", "-"],
                             capture_output=True, text=True, check=True).stdout
    assert [line.split(",")[5].strip() for line in listing.splitlines() if line and not line.startswith("#")] \
        == expected
    _assert_two_parts_chained(path, expected)


def _assert_two_parts_chained(path: Path, expected: list[str]) -> None:
    """A chain of two 30-frame parts at 25 fps gives `expected` (the CLI's framemd5 of each part
    alone): probed, decoded whole, picked after seeks, and read as one video by its source."""
    info = probe(str(path))
    assert (info.n_frames, info.restamped) == (60, "chained")
    assert info.times[29:31] == (1.16, 1.2)  # the second part one frame after the first
    assert _md5s(path, range(60)) == dict(enumerate(expected))
    for wanted in ([31], [45, 59], [2, 40]):
        assert _md5s(path, wanted, seek_bytes=0) == {i: expected[i] for i in wanted}
    (record,) = list(VideoSource("trust", str(path.parent), strides=(1,)).read(str(path)))
    assert isinstance(record, VideoRecord) and record.n_frames == 60, record
    assert record.clips[0].lineage["restamped"] == "chained"


def _ogv_with_sound(tmp_path: Path, k: int, size: str = "64:48") -> Path:
    """Part `k` of a chain: the pattern's frames 30k.. (30 of them) in Theora, 1.2 s of Vorbis beside
    them, as the CLI writes the usual `.ogv`."""
    part = tmp_path / f"_{k}.ogv"
    video_zoo.ffmpeg("-i", _source(tmp_path, 30 * k + 30), "-f", "lavfi", "-i", "sine=f=440:d=1.2",
                     "-map", "0:v", "-map", "1:a", "-vf", f"select=gte(n\\,{30 * k}),setpts=N/25/TB,scale={size}",
                     "-frames:v", "30", "-c:v", "libtheora", "-q:v", "7", "-g", "10", "-c:a", "libvorbis",
                     str(part))
    with av.open(str(part)) as container:
        assert len(container.streams.audio) == 1
    return part


@pytest.mark.parametrize("sizes", [("64:48", "64:48"), ("64:48", "96:64")])
def test_a_chained_ogg_with_sound_gives_each_part_as_alone(tmp_path, sizes):
    """Two Theora+Vorbis files joined end to end (the usual `.ogv`, `cat a.ogv b.ogv`): FFmpeg's Ogg
    demuxer cannot go past the first part when a chain holds several streams ("Changing stream
    parameters in multistream ogg is not implemented"; the CLI shows the first part's 30 frames even
    on one thread, then stops). That was a counted `unsupported_container`. Now the file is read
    through its video's pages alone (`sources.ogg_video_pages`): 60 frames, each equal byte for byte
    to the CLI's decode of its part alone (rgb24 framemd5), frames picked in the second part too."""
    video_zoo.require_ffmpeg()
    parts = [_ogv_with_sound(tmp_path, k, size) for k, size in enumerate(sizes)]
    path = _joined(tmp_path, "chained_sound.ogv", parts)
    cli = subprocess.run(["ffmpeg", "-v", "error", "-threads", "1", "-i", str(path), "-map", "0:v:0",
                          "-f", "framemd5", "-"], capture_output=True, text=True)
    assert "patches welcome" in cli.stderr  # what makes the file: the CLI stops there too (exit status 0)
    expected = _cli_md5s(parts[0]) + _cli_md5s(parts[1])
    assert len(expected) == 60 and len(_cli_md5s(path)) == 30
    _assert_two_parts_chained(path, expected)


def test_a_chained_ogg_with_sound_resyncs_over_stray_bytes_and_ends_in_a_forged_page(tmp_path):
    """The video's pages are found by the pages' own headers: 1,000 bytes that are no page between
    the parts are skipped to the next page (as FFmpeg's demuxer resyncs), giving all 60 frames; a
    page header forged to claim the longest body (65,025 bytes) with the file ending inside it
    (after both parts, as a new link) ends the read there, never a hang. Of a chain of video
    alone, the reader passes on every byte as stored."""
    video_zoo.require_ffmpeg()
    parts = [_ogv_with_sound(tmp_path, k) for k in range(2)]
    expected = _cli_md5s(parts[0]) + _cli_md5s(parts[1])
    stray = tmp_path / "stray.ogv"
    stray.write_bytes(parts[0].read_bytes() + bytes(1000) + parts[1].read_bytes())
    assert probe(str(stray)).n_frames == 60 and _md5s(stray, range(60)) == dict(enumerate(expected))
    forged = tmp_path / "forged.ogv"
    page = b"OggS\x00\x02" + bytes(8) + (7).to_bytes(4, "little") + bytes(8) + bytes([255]) + bytes([255]) * 255
    forged.write_bytes(parts[0].read_bytes() + parts[1].read_bytes() + page + bytes(1000))
    info = probe(str(forged))
    assert (info.n_frames, info.restamped) == (60, "chained") and _md5s(forged, [5, 59]) == {5: expected[5],
                                                                                              59: expected[59]}
    video_only = tmp_path / "video_only.ogv"
    for k, part in enumerate(parts):
        video_zoo.ffmpeg("-i", str(part), "-map", "0:v", "-c", "copy", str(tmp_path / f"_v{k}.ogv"))
    video_only.write_bytes((tmp_path / "_v0.ogv").read_bytes() + (tmp_path / "_v1.ogv").read_bytes())
    with VideoPages(open(video_only, "rb")) as pages:
        assert pages.read() == video_only.read_bytes()


def _cli_listing(path: Path) -> tuple[list[float], list[str]]:
    """The time (seconds from the first) and rgb24 md5 of each frame the CLI shows (`-vsync passthrough`)."""
    listing = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vsync", "passthrough",
                              "-pix_fmt", "rgb24", "-f", "framemd5", "-"], capture_output=True, text=True,
                             check=True).stdout
    rows = [line.split(",") for line in listing.splitlines() if line and not line.startswith("#")]
    base = Fraction(listing.split("#tb 0: ")[1].split()[0])
    return [round(float((int(r[2]) - int(rows[0][2])) * base), 6) for r in rows], [r[5].strip() for r in rows]


@pytest.mark.parametrize(("offset", "gap"), [(5, 3.76), (30, 0.04), (11.28, 10.04), (11.32, 0.04)])
def test_a_later_part_starting_after_a_jump_is_timed_as_the_cli_shows(tmp_path, offset: float, gap: float):
    """`cat a.ts b.ts` where b's clock starts `offset` s in (recordings split on one running clock,
    the second started later): its stamps jump forward. The CLI closes a jump over 10 s
    (`dts_delta_threshold`: b follows a at once) and keeps a shorter one (with `-vsync passthrough`;
    its constant-rate default fills it with copies of a's last frame). The frame times were the
    demuxer's, keeping a 28.8 s jump. Now the times are the CLI's; the frames are its frames, 60
    of them either way: clips step by frames shown, never by time, so no frame is repeated. The
    CLI measures the jump past where it expects the next decode stamp (one frame after the last):
    a 10.04 s step is 10 s past that, kept; 10.08 s is closed (the threshold was one frame off,
    closing the 10.04 s step)."""
    video_zoo.require_ffmpeg()
    encoder = [*video_zoo.X264_CLI, "-g", "10", "-bf", "2"]
    first = _part_of(tmp_path, "_a.ts", encoder, 0, 30)
    second = _part_of(tmp_path, "_b.ts", encoder, 30, 30, "-output_ts_offset", str(offset))
    path = _joined(tmp_path, "jump.ts", [first, second])
    times, expected = _cli_listing(path)
    assert len(expected) == 60 and round(times[30] - times[29], 6) == gap
    info = probe(str(path))
    assert info.times == tuple(times)
    assert info.restamped == ("jumped" if gap < 1 else "")  # one part whose clock jumps: no join
    assert _md5s(path, range(60)) == dict(enumerate(expected))
    record = _read(path, strides=(2,))
    assert record.clips[0].frame_times == tuple(times[i] for i in record.clips[0].frame_indices)


def _shift_pes_stamps_from(data: bytes, first: int, ticks: int) -> bytes:
    """The MPEG-TS bytes with the stamps (PTS and DTS) of every video PES from the `first`th on
    moved by `ticks` (90 kHz): one recording whose clock jumps mid-stream, as a DVD's between cells
    or a broadcast's at a splice."""
    out = bytearray(data)
    for seen, head in enumerate(_video_pes_heads(out)):
        if seen >= first:
            for o in range(head + 9, head + 9 + 5 * (2 if out[head + 7] >> 6 == 3 else 1), 5):
                out[o:o + 5] = _moved_stamp(out[o:o + 5], ticks)
    return bytes(out)


JUMPING = {  # the encoder of one recording whose clock jumps
    "mpeg2": ["-c:v", "mpeg2video", "-q:v", "2", "-g", "12", "-bf", "2"],
    "x264": [*video_zoo.X264_CLI, "-g", "25", "-bf", "2"],
}


@pytest.mark.parametrize(("name", "first"), [("mpeg2", 34), ("mpeg2", 37), ("x264", 25), ("x264", 26)])
def test_a_clock_jumping_forward_mid_stream_is_closed_and_decoded_on(tmp_path, name: str, first: int):
    """One recording whose clock jumps 20 s forward: MPEG-2 (open GOPs) at a key frame (packet 34:
    its leading B-frames reference the P-frame before the jump) or mid-GOP (37); x264 with B-frames
    at a B-frame (25: shown before the packet decoded before it) or at the P-frame after one (26).
    The CLI closes the jump and feeds its decoder on: 60 frames in order, the leading ones whole. So
    do we now (the times kept the 20 s before; a part started afresh there would have hidden two
    good frames). The packets after the jump are moved back as the CLI moves them, by how far their
    decode stamp lies past one frame after the one before: moved to one frame after the highest
    stamp before, a B-frame landed after the frames it is shown before and x264's file was refused."""
    video_zoo.require_ffmpeg()
    whole = _part_of(tmp_path, "_whole.ts", JUMPING[name], 0, 60)
    path = tmp_path / "jumping.ts"
    path.write_bytes(_shift_pes_stamps_from(whole.read_bytes(), first, 20 * 90000))
    with av.open(str(path)) as container:  # what makes the file: the decode stamps jump 20 s at `first`
        stamps = [(p.pts, p.dts) for p in container.demux(video=0) if p.size]
    assert stamps[first][1] - stamps[first - 1][1] == 20 * 90000 + 3600
    if (name, first) == ("x264", 25):  # a B-frame: shown before the packet decoded before it
        assert stamps[first][0] - 20 * 90000 < stamps[first - 1][0]
    times, expected = _cli_listing(path)
    assert [video_zoo.read_index(f) for f in video_zoo.sequential(path)] == list(range(60))
    assert times == [round(i * 0.04, 6) for i in range(60)]
    info = probe(str(path))
    assert (info.times, info.restamped) == (tuple(times), "jumped")
    assert _md5s(path, range(60)) == dict(enumerate(expected))
    assert _md5s(path, [35, 36, 50]) == {i: expected[i] for i in (35, 36, 50)}


@pytest.mark.parametrize("first", [40, 45])
def test_a_clock_jumping_forward_is_still_seeked(tmp_path, monkeypatch, first: int):
    """One x264 recording (B-frames) whose clock jumps 20 s forward at a key frame (40) or a B-frame
    (45): a jump closed within one part is no join, and its demuxer's stamps are unique, so the
    file is seeked as any other (by the demuxer's stamps, each packet then given the index's). It
    was read from its start as a joined file (3 picks in a 2-minute 720p capture: 0.65 s became
    1.1 s). Frames picked with every gap seeked (`seek_bytes=0`) and with none equal the CLI's."""
    video_zoo.require_ffmpeg()
    whole = _part_of(tmp_path, "_whole.ts", [*video_zoo.X264_CLI, "-g", "10", "-bf", "2"], 0, 90)
    path = tmp_path / "jumping.ts"
    path.write_bytes(_shift_pes_stamps_from(whole.read_bytes(), first, 20 * 90000))
    times, expected = _cli_listing(path)
    assert len(expected) == 90 and times == [round(i * 0.04, 6) for i in range(90)]
    assert probe(str(path)).restamped == "jumped"
    from sources.video_session import DecodeSession

    seeks = []
    real_seek = DecodeSession._seek
    monkeypatch.setattr(DecodeSession, "_seek", lambda self, stream, target: seeks.append(target) or
                        real_seek(self, stream, target))
    for wanted in ([5, 70], [85], [30, 44, 46, 60, 89]):
        assert _md5s(path, wanted, seek_bytes=0) == {i: expected[i] for i in wanted}
        assert _md5s(path, wanted) == {i: expected[i] for i in wanted}
    assert seeks


def _shift_ps_stamps_from(data: bytes, first: int, ticks: int) -> bytes:
    """The MPEG-PS bytes with the stamps (PTS and DTS) of every video PES from the `first`th on
    moved by `ticks` (90 kHz): a DVD's clock jumping between cells. A VOB's PES packets do not
    align with frames, so a frame's stamp may sit in a PES before its own."""
    out = bytearray(data)
    seen, at = -1, 0
    while (at := out.find(b"\x00\x00\x01", at)) >= 0 and at + 6 <= len(out):
        sid = out[at + 3]
        if sid == 0xBA:  # an MPEG-2 pack header: 14 bytes and its stuffing
            at += 14 + (out[at + 13] & 7)
            continue
        if sid < 0xBB:
            at += 3
            continue
        if 0xE0 <= sid <= 0xEF and out[at + 6] >> 6 == 2 and out[at + 7] >> 7:
            seen += 1
            for o in range(at + 9, at + 9 + 5 * (2 if out[at + 7] >> 6 == 3 else 1), 5) if seen >= first else ():
                f = out[o:o + 5]
                stamp = ((f[0] >> 1) & 7) << 30 | (f[1] << 8 | f[2]) >> 1 << 15 | (f[3] << 8 | f[4]) >> 1
                stamp = (stamp + ticks) % (1 << 33)
                out[o:o + 5] = bytes([(f[0] & 0xF0) | (stamp >> 30 & 7) << 1 | 1, stamp >> 22 & 0xFF,
                                      (stamp >> 15 & 0x7F) << 1 | 1, stamp >> 7 & 0xFF, (stamp & 0x7F) << 1 | 1])
        at += 6 + (out[at + 4] << 8 | out[at + 5])
    return bytes(out)


def test_a_vob_whose_clock_jumps_mid_gop_gives_every_frame_the_cli_shows(tmp_path):
    """An MPEG-2 VOB (`-f vob`) whose video PES stamps move 20 s from the 40th PES on. Its PES
    packets do not align with frames, so the presentation stamp jumps at packet 61 (a P-frame)
    while the decode stamp jumps only at 64: two B-frames between keep the old clock. Closing the
    jump from 64 alone left packet 61 20 s above every frame after it, and the decoder's output
    was refused (`unsupported_container`) or misnamed. Now the P-frame shown past the jump is moved
    back with the rest: the 90 frames equal the CLI's, read through and picked with gaps seeked."""
    video_zoo.require_ffmpeg()
    whole = _part_of(tmp_path, "_whole.vob", [*JUMPING["mpeg2"], "-f", "vob"], 0, 90)
    path = tmp_path / "jumping.vob"
    path.write_bytes(_shift_ps_stamps_from(whole.read_bytes(), 40, 20 * 90000))
    with av.open(str(path)) as container:  # what makes the file: the presentation stamp jumps first
        stamps = [(p.pts, p.dts) for p in container.demux(video=0) if p.size]
    assert stamps[61][0] - stamps[60][0] > 20 * 90000 > stamps[61][1] - stamps[60][1]
    assert stamps[64][1] - stamps[63][1] > 20 * 90000 > stamps[63][0] - stamps[62][0]
    times, expected = _cli_listing(path)
    assert len(expected) == 90
    assert _md5s(path, range(90)) == dict(enumerate(expected))
    for wanted in ([63], [70], [89], [30, 62, 64, 65]):
        assert _md5s(path, wanted, seek_bytes=0) == {i: expected[i] for i in wanted}
    record = _read(path, strides=(1,))
    assert [c.frame_indices[0] for c in record.clips] == [0, 16, 32, 48, 64]
    assert all(not isinstance(frames, Exception) for _, frames in clip_frames(record))


def test_a_joined_file_is_never_seeked(tmp_path):
    """`cat a.ts a.ts` with every gap worth a seek (`seek_bytes=0`): the demuxer's stamps in the
    second part repeat the first's, so a seek there lands where the index places the first part
    and frames went missing. A restamped file is read from its start: each wanted frame comes,
    equal to the CLI's."""
    video_zoo.require_ffmpeg()
    part = _part_of(tmp_path, "_a.ts", [*video_zoo.X264_CLI, "-g", "10", "-bf", "2"], 0, 30)
    path = _joined(tmp_path, "twice.ts", [part, part])
    expected = _cli_md5s(path)
    assert len(expected) == 60 and probe(str(path)).restamped == "joined"
    for wanted in ([5, 55], [59], [45, 49, 53, 57]):
        assert _md5s(path, wanted, seek_bytes=0) == {i: expected[i] for i in wanted}


NEGATIVE = {  # name: (the encoder of the whole clip, the cut's muxing options)
    "h264_disabled.mkv": ([*video_zoo.X264_CLI, "-g", "12", "-bf", "3"], ["-avoid_negative_ts", "disabled"]),
    "hevc_default.mkv": (["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=12:log-level=error"], []),
    "hevc_disabled.mkv": (["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=12:log-level=error"],
                          ["-avoid_negative_ts", "disabled"]),
}


@pytest.mark.parametrize("name", sorted(NEGATIVE))
def test_an_mkv_cut_with_negative_stamps_gives_the_frames_the_cli_shows(tmp_path, name: str):
    """`ffmpeg -ss 1.3 -i in.mp4 -c copy out.mkv` of B-frames (or HEVC's open GOPs, even with the
    default muxing): the frames from the key frame before the cut are kept, stamped before zero.
    FFmpeg's Matroska demuxer gives those blocks no stamp at all, and the file was refused
    ("packets carry no time stamp"); the CLI shows them first (HEVC's leading RASL frames of that
    key frame not at all: its decoder drops them). Their order is the decoder's: count and pixels
    equal the CLI's."""
    video_zoo.require_ffmpeg()
    encoder, muxing = NEGATIVE[name]
    whole = tmp_path / "_whole.mp4"
    video_zoo.ffmpeg("-i", _source(tmp_path, 90), *encoder, "-pix_fmt", "yuv420p", str(whole))
    path = tmp_path / name
    video_zoo.ffmpeg("-ss", "1.3", "-i", str(whole), "-c", "copy", *muxing, str(path))
    with av.open(str(path)) as container:  # what makes the file: blocks the demuxer gives no stamp
        assert sum(p.pts is None for p in container.demux(video=0) if p.size) > 0
    reference = video_zoo.sequential(path)
    first = video_zoo.read_index(reference[0])  # the key frame before 1.3 s
    assert first < 32 and [video_zoo.read_index(f) for f in reference] == list(range(first, 90))
    for decoder in DECODERS:
        record = _read(path, decoder, strides=(1, 5))
        assert record.n_frames == len(reference), decoder
        assert record.clips[0].lineage["restamped"] == "negative"
        assert record.clips[0].frame_times[:2] == (0.0, 0.04)
        assert _assert_frames_as_shown(record, reference, everything=reference, tolerance=0.5) > len(reference)


def test_an_mpeg_ts_whose_sei_follows_the_slice_gives_the_frames_the_cli_shows(tmp_path):
    """x264 remuxed with an SEI added by a bitstream filter (`-bsf:v h264_metadata=sei_user_data=`,
    x264's `aud=0`): at each IDR but the first the SEI lands after the slice, so FFmpeg's H.264
    parser ends the access unit there and glues the SEI to the next PES's picture. That packet
    starts in a PES whose stamp was spent: it gets none (the next PES's own stamp is lost), and the
    file was refused ("5 of 60 packets carry no time stamp") while the CLI shows all 60 frames. The
    decoder's output order places each unstamped frame between its stamped neighbours: count and
    pixels equal the CLI's."""
    video_zoo.require_ffmpeg()
    path = tmp_path / "sei_after_slice.ts"
    video_zoo.ffmpeg("-i", _source(tmp_path, 60), *video_zoo.X264_CLI, "-g", "12", "-bf", "3", "-x264-params",
                     "aud=0", "-pix_fmt", "yuv420p", "-bsf:v",
                     "h264_metadata=sei_user_data=086f3693-b7b3-4f2c-9653-21492feee5b8+hello", str(path))
    with av.open(str(path)) as container:  # what makes the file: packets the demuxer gives no stamp
        assert sum(p.pts is None for p in container.demux(video=0) if p.size) == 5
    reference = video_zoo.sequential(path)
    assert [video_zoo.read_index(f) for f in reference] == list(range(60))
    for decoder in DECODERS:
        record = _read(path, decoder, strides=(1, 5))
        assert record.n_frames == 60, decoder
        assert record.clips[0].lineage["restamped"] == "split"
        assert record.clips[0].frame_times[:2] == (0.0, 0.04)
        assert _assert_frames_as_shown(record, reference, everything=reference, tolerance=0.5) > 60
    # the stamps given are the ones the parser lost: each PES's own PTS, read from the TS packets
    assert list(read_index(str(path)).pts) == _pes_stamps(path)


@pytest.mark.parametrize("params", ["aud=1", "tff=1"])
def test_h264_in_a_vob_whose_parser_gives_one_pes_stamp_twice_gives_the_frames_the_cli_shows(tmp_path, params):
    """x264 into `-f vob` (a DVD rip, a camcorder writing H.264 in MPEG-PS): access units straddle
    the 2 KB packs, and FFmpeg's parser gives one PES's stamp to two packets (same stamp, same
    position), so one of them carries another frame's stamp. The decoder then gave stamped frames
    out of their stamps' order and the file was refused (`unsupported_container`), where the CLI
    shows every frame. Both packets are now placed by the decoder's output order: every frame
    equals the CLI's (rgb24 framemd5; interlaced `tff=1` converted field by field, `scale=interl=1`),
    and the frames are timed a frame apart, where the CLI repeats the misplaced stamp."""
    from collections import Counter

    video_zoo.require_ffmpeg()
    path, n = tmp_path / f"{params[:3]}.vob", 150
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=320x240:r=25", "-frames:v", str(n),
                    "-c:v", "libx264", "-threads", "1", "-x264-params", params, "-pix_fmt", "yuv420p", "-f", "vob", str(path)],
                   check=True)
    with av.open(str(path)) as container:  # what makes the file: one PES's stamp on two packets
        stamps = Counter((p.pts, p.pos) for p in container.demux(video=0) if p.size and p.pts is not None)
    assert max(stamps.values()) == 2  # (x264 on one thread: on several, its output varies between runs)
    vf = ["-vf", "scale=interl=1"] if params == "tff=1" else []
    listing = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", *vf, "-vsync", "passthrough",
                              "-pix_fmt", "rgb24", "-f", "framemd5", "-"], capture_output=True, text=True,
                             check=True).stdout
    expected = [line.split(",")[5].strip() for line in listing.splitlines() if line and not line.startswith("#")]
    info = probe(str(path))
    assert (info.n_frames, info.restamped, len(expected)) == (n, "split", n)
    assert info.times == tuple(round(k * 0.04, 6) for k in range(n))
    assert _md5s(path, range(n)) == dict(enumerate(expected))
    assert _md5s(path, [7, n - 40, n - 1]) == {i: expected[i] for i in (7, n - 40, n - 1)}


@pytest.mark.parametrize("suffix", [".vob", ".mpg"])
def test_h264_mpeg_ps_files_joined_end_to_end_give_each_part_as_alone(tmp_path, suffix: str):
    """A camcorder's or a DVD recorder's H.264 MPEG-PS files joined by `cat` (the second's clock
    starts again), x264 written so its parser leaves packets unstamped: refused before
    (`unsupported_container`: "stamped frames out of their stamps' order", the second part's stamps
    below the first's). Each part's unstamped packets are now placed by the decoder's output order of
    that part alone, and the parts one after another: every frame, and frames picked across the
    join, equal to the CLI's of each part alone (rgb24 framemd5), timed a frame apart at the join."""
    video_zoo.require_ffmpeg()
    encoder = ["-c:v", "libx264", "-threads", "1", "-preset", "ultrafast", "-g", "10", "-bf", "2",
               "-x264-params", "aud=1"]
    parts = [_part_of(tmp_path, f"_{k}{suffix}", encoder, 30 * k, 30, "-f", "vob" if suffix == ".vob" else "mpeg")
             for k in range(2)]
    path = _joined(tmp_path, suffix[1:] + suffix, parts)
    with av.open(str(path)) as container:  # what makes the file: unstamped packets, a clock starting again
        stamps = [p.pts for p in container.demux(video=0) if p.size]
    assert None in stamps and min(p for p in stamps[30:] if p is not None) < max(p for p in stamps[:25] if p is not None)
    _assert_each_part_as_alone(path, parts, [3, 29, 30, 44])


def _assert_each_part_as_alone(path: Path, parts: list[Path], picked: list[int]) -> None:
    """Two joined parts of 30 frames at 25 fps read as the CLI shows each alone, timed a frame
    apart, whole and by the frames `picked` (across the join)."""
    expected = _cli_md5s(parts[0]) + _cli_md5s(parts[1])
    assert len(expected) == 60
    info = probe(str(path))
    assert (info.n_frames, info.restamped) == (60, "joined")
    assert info.times == tuple(round(k * 0.04, 6) for k in range(60))
    assert _md5s(path, range(60)) == dict(enumerate(expected))
    assert _md5s(path, picked) == {i: expected[i] for i in picked}


def test_h264_vob_joined_to_a_part_whose_clock_wraps_inside_gives_each_part_as_alone(tmp_path):
    """A broadcast or camcorder recording's 33-bit clock wraps every 26.5 hours: a VOB part written
    just before it (`-output_ts_offset`, 0.7 s before 2^33 ticks) wraps inside, and joined after
    another part (`cat`), x264 written so its parser leaves packets unstamped. Refused before
    ("the decoder outputs stamped frames out of their stamps' order": that part's stamps placed
    without undoing the wrap); now every frame, and frames picked across the join and the wrap,
    equal to the CLI's of each part alone, timed a frame apart."""
    video_zoo.require_ffmpeg()
    encoder = ["-c:v", "libx264", "-threads", "1", "-preset", "ultrafast", "-g", "10", "-bf", "2",
               "-x264-params", "aud=1"]
    parts = [_part_of(tmp_path, "_0.vob", encoder, 0, 30, "-f", "vob"),
             _part_of(tmp_path, "_1.vob", encoder, 30, 30, "-output_ts_offset", "95443.0", "-f", "vob")]
    path = _joined(tmp_path, "wrapped.vob", parts)
    with av.open(str(path)) as container:  # what makes the file: unstamped packets, a wrap inside the later part
        stamps = [p.pts for p in container.demux(video=0) if p.size]
    known = [p for p in stamps if p is not None]
    assert None in stamps and max(known) > (1 << 33) - 90000 > known[-1] > 0
    _assert_each_part_as_alone(path, parts, [29, 30, 49, 59])


def _sei_after_slice_ts(tmp_path: Path) -> Path:
    """60 frames of H.264 in MPEG-TS with user data SEI written after each slice (the CLI's
    `h264_metadata` filter): the parser leaves packets unstamped (`restamped: split`), so the index
    is built by decoding the whole stream."""
    video_zoo.require_ffmpeg()
    path = tmp_path / "sei_after_slice.ts"
    video_zoo.ffmpeg("-i", _source(tmp_path, 60), *video_zoo.X264_CLI, "-g", "12", "-bf", "3", "-x264-params",
                     "aud=0", "-pix_fmt", "yuv420p", "-bsf:v",
                     "h264_metadata=sei_user_data=086f3693-b7b3-4f2c-9653-21492feee5b8+hello", str(path))
    return path


def test_an_index_built_by_decoding_is_read_once_per_file_version(tmp_path, monkeypatch):
    """An MPEG-TS whose unstamped packets are placed by the decoder (`restamped: split`) was
    decoded whole at every read of its index (each clip read by `read_clip_frames`, 1.2 s for 40 s
    of 720p). The index is kept per file version: a second read decodes nothing and gives the same
    index; the file written anew (other bytes, same size) is indexed afresh."""
    import os

    from sources import video_packet_order

    path = _sei_after_slice_ts(tmp_path)
    decodes = []
    order = video_packet_order._decoder_order
    monkeypatch.setattr(video_packet_order, "_decoder_order", lambda *args: decodes.append(args) or order(*args))
    first = read_index(str(path))
    assert first.restamped == "split" and len(decodes) == 1
    assert read_index(str(path)) == first and len(decodes) == 1
    assert read_index(str(path), memory_mb=1024) == first and len(decodes) == 2  # other budgets: judged again
    data, before = path.read_bytes(), path.stat()
    half = len(data) // 376 * 188
    path.write_bytes(data[:half] + bytes(len(data) - half))  # the same size, its second half zeroed
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # even the same modification time as before
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert read_index(str(path)) != first and len(decodes) == 3



def test_an_index_built_by_decoding_is_handed_from_the_probe_to_the_clips_decode(tmp_path, monkeypatch):
    """A build probes a video in one decoding process and decodes its clips in another (each its
    own index cache), so a file whose index needs a decode (`restamped: split`) was decoded whole
    twice per build. The probe's index now rides with the record to the clips' decode, which uses
    it and decodes nothing for the index: the same frames. A file written anew since is indexed
    afresh."""
    import hashlib
    import os
    import pickle

    from sources import video_packet_order
    from sources.video_index_cache import IndexCache

    path = _sei_after_slice_ts(tmp_path)
    record = _read(path, strides=(20,))  # the probe in its decoding process
    assert record.kept_index is not None and record.kept_index.index == read_index(str(path))
    assert read_index(str(path)).restamped == "split"
    expected = _md5s(path, [0, 30, 59])
    decodes = []
    order = video_packet_order._decoder_order
    monkeypatch.setattr(video_packet_order, "_decoder_order", lambda *args: decodes.append(args) or order(*args))
    monkeypatch.setattr(video_packet_order, "_INDEXES", IndexCache())  # another process: nothing kept
    kept = pickle.loads(pickle.dumps(record.kept_index))  # as it travels between processes
    got = {i: hashlib.md5(f.tobytes()).hexdigest() for i, f in decode_frames(str(path), [0, 30, 59], 60, kept=kept)}
    assert got == expected and decodes == []
    monkeypatch.setattr(video_packet_order, "_INDEXES", IndexCache())
    data, before = path.read_bytes(), path.stat()
    path.write_bytes(data[:-188] + bytes(188))  # written anew (its last packet zeroed), the same size and time
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    list(decode_frames(str(path), [0], kept=kept))
    assert len(decodes) == 1


# Loaded by a decoding process at its start (`sitecustomize`): counts each whole-stream decode an
# index needs into the file $DECODE_LOG names
DECODE_SPY = """
import os
from sources import video_packet_order
order = video_packet_order._decoder_order
def counted(uri, *args, **kwargs):
    with open(os.environ["DECODE_LOG"], "a") as log:
        log.write(os.path.basename(uri) + "\\n")
    return order(uri, *args, **kwargs)
video_packet_order._decoder_order = counted
"""


def test_the_clips_decode_in_a_fresh_process_takes_the_probes_index(tmp_path, monkeypatch):
    """Through the source's own calls: `VideoSource.read` probes a video whose index needs a whole
    decode, and `clip_frames` decodes its clips in a fresh decoding process (the probe's ended, as
    the build's clips go to another process): handed the probe's index, it decodes nothing to index
    the file again, and its frames are those of a decode from scratch."""
    path = _sei_after_slice_ts(tmp_path)
    record = _read(path, strides=(20,))
    wanted = sorted({i for clip in record.clips for i in clip.frame_indices})
    expected = _md5s(path, wanted)
    spy = tmp_path / "spy"
    spy.mkdir()
    (spy / "sitecustomize.py").write_text(DECODE_SPY)
    monkeypatch.syspath_prepend(str(spy))  # the decoding process's PYTHONPATH is this one's sys.path
    log = tmp_path / "decodes.log"
    monkeypatch.setenv("DECODE_LOG", str(log))
    budget._stop_all()
    try:
        got = {}
        for clip, frames in clip_frames(record):
            assert not isinstance(frames, Exception), frames
            got.update({i: hashlib.md5(f.tobytes()).hexdigest() for i, f in zip(clip.frame_indices, frames)})
    finally:
        budget._stop_all()  # the counting process serves no later test
    assert got == {i: expected[i] for i in wanted} and len(wanted) >= 3
    assert not log.exists() or log.read_text() == ""


def _pes_stamps(path: Path) -> list[int]:
    """The PTS of each video PES packet (PID 0x100, where FFmpeg's muxer puts the video), in file order."""
    data, stamps = path.read_bytes(), []
    for at in range(0, len(data) - 187, 188):
        ts = data[at:at + 188]
        if ((ts[1] & 0x1F) << 8 | ts[2]) != 0x100 or not ts[1] & 0x40:
            continue  # another PID, or no PES starts here
        pes = ts[4 + (1 + ts[4] if ts[3] & 0x20 else 0):]
        assert pes[:3] == b"\0\0\1" and pes[7] & 0x80, "a video PES without a PTS"
        b = pes[9:14]
        stamps.append((b[0] >> 1 & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1)
    return stamps


def test_a_webm_recorded_live_at_a_varying_rate_is_timed_at_its_mean_rate(tmp_path):
    """A WebM recorded live the way a browser's MediaRecorder writes it (Chromium's, checked by
    hand: no duration, no frame rate, VP8 frames 31-35 ms apart as a canvas was painted). Made
    here by the CLI (`-live 1`, frames stamped 33 ms apart give or take 4 ms, no rate declared:
    Chromium's own recording times vary from run to run). FFmpeg's guessed rate is then the stamps'
    common step: the lineage said `fps: 200.0` here, and 1000.0 for Chromium's recording of a
    30 fps canvas (the CLI says "1k tbr"). The rate is now the frames' mean (frames - 1 over the
    span of their stamps); frames and times are the CLI's."""
    video_zoo.require_ffmpeg()
    path = tmp_path / "live.webm"
    video_zoo.ffmpeg("-i", _source(tmp_path, 40), "-vf", "settb=1/1000,setpts=N*33+mod(N*7\\,5),scale=64:48",
                     "-vsync", "passthrough", "-r", "1000", "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8",
                     "-g", "15", "-pix_fmt", "yuv420p", "-live", "1", "-f", "webm", str(path))
    with av.open(str(path)) as container:  # what makes the file: no average rate, a guess of the stamps' step
        stream = container.streams.video[0]
        assert not stream.average_rate and stream.guessed_rate == 200
    times, expected = _cli_listing(path)
    assert len(expected) == 40 and times[-1] == 1.29
    info = probe(str(path))
    assert info.times == tuple(times)
    assert info.fps == pytest.approx(39 / 1.29)
    assert _md5s(path, range(40)) == dict(enumerate(expected))
    record = _read(path, strides=(1,))
    assert record.clips[0].lineage["fps"] == 30.233


@pytest.mark.parametrize(("name", "rotate"), [("phone.mp4", 90), ("phone.mov", 270)])
def test_a_phone_style_cut_with_a_rotation_and_an_edit_list_gives_the_frames_the_cli_shows(tmp_path, name, rotate):
    """What a phone's clip trimmed by a stream copy holds: a display matrix (`-metadata:s:v
    rotate=`, as phones tag portrait video) and an edit list hiding the GOP's pre-roll (`-ss 1.3
    -c copy` of x264 with B-frames). Both were checked apart (the zoo); together, every frame is the
    CLI's (rotated, the pre-roll hidden), whichever decoder is asked for (decord refuses the
    rotation: PyAV decodes)."""
    video_zoo.require_ffmpeg()
    whole = tmp_path / "_whole.mp4"
    video_zoo.ffmpeg("-i", _source(tmp_path, 90), "-vf", "scale=64:48", *video_zoo.X264_CLI, "-g", "25", "-bf", "3",
                     "-pix_fmt", "yuv420p", str(whole))
    path = tmp_path / name
    video_zoo.ffmpeg("-ss", "1.3", "-i", str(whole), "-c", "copy", "-metadata:s:v", f"rotate={rotate}", str(path))
    reference = video_zoo.sequential(path)
    info = probe(str(path))
    assert (info.rotation, info.n_frames, reference[0].shape) == (rotate, len(reference), (64, 48, 3))
    assert info.hidden > 0  # what makes the file: an edit list hides the pre-roll
    for decoder in DECODERS:
        record = _read(path, decoder, strides=(1, 2))
        assert record.decoder == "pyav" and record.clips[0].lineage["rotation"] == rotate
        checked = 0
        for clip, frames in clip_frames(record):
            for i, frame in zip(clip.frame_indices, frames):
                assert np.array_equal(frame, reference[i]), (decoder, i)
                checked += 1
        assert checked > len(reference)


@pytest.mark.skipif(not decord_available(), reason="decord is not installed")
def test_a_webm_recorded_live_is_left_to_pyav_where_decord_cannot_open_it(tmp_path):
    """A WebM written as it is recorded (`ffmpeg -live 1`, as browsers' MediaRecorder and
    streaming tools write it: no duration, no frame count, no cues). decord refuses to open it
    ("Failed to measure duration/frame-count due to broken metadata"), yet `decoder: decord` chose
    it, and every clip of the video was lost as `unreadable`. decord is now asked to open the file
    and count its frames at planning; where it cannot, or counts other than PyAV, PyAV decodes and
    the lineage says why."""
    video_zoo.require_ffmpeg()
    path = tmp_path / "live.webm"
    video_zoo.ffmpeg("-i", _source(tmp_path, 40), "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                     "-g", "15", "-pix_fmt", "yuv420p", "-live", "1", "-f", "webm", str(path))
    record = _read(path, "decord", strides=(1, 2))
    assert record.decoder == "pyav", record.clips[0].lineage
    assert "decord cannot open it" in record.clips[0].lineage["decoder_note"]
    _assert_frames_as_shown(record, video_zoo.sequential(path), video_zoo.coded(path))
    # a WebM with its duration written (the same frames, muxed by a seeking writer) stays decord's
    whole = tmp_path / "whole.webm"
    video_zoo.ffmpeg("-i", str(path), "-c", "copy", str(whole))
    record = _read(whole, "decord", strides=(1, 2))
    assert record.decoder == "decord", record.clips[0].lineage
    _assert_frames_as_shown(record, video_zoo.sequential(whole), video_zoo.coded(whole))


def test_a_cut_mjpeg_avi_keeps_the_last_frame_the_cli_shows(tmp_path):
    """A camera's MJPEG AVI cut inside its last frame: the JPEG missing its last bytes still
    decodes (the CLI shows it), and, shown last, it stays counted (only a partial frame shown
    before whole ones is hidden)."""
    video_zoo.require_ffmpeg()
    whole = video_zoo.build_zoo(tmp_path, ["mjpeg.avi"])["mjpeg.avi"]
    path = video_zoo.truncate(whole, tmp_path / "cut.avi", 0.77)
    reference = video_zoo.sequential(path)
    assert probe(str(path)).n_frames == len(reference) == 27
    _assert_frames_as_shown(_read(path, "pyav", strides=(1,)), reference)


def test_a_fragmented_mp4_cut_short_counts_the_frames_ffmpeg_shows(tmp_path):
    """A fragmented MP4 (`-movflags frag_keyframe+empty_moov`: screen and stream recorders, so a
    crash leaves a playable file) cut at 63%: it ended on a partial P-frame shown before the
    B-frames that came whole, counted 55 frames where the CLI shows 54."""
    video_zoo.require_ffmpeg()
    whole = tmp_path / "whole.mp4"
    video_zoo.ffmpeg("-i", _source(tmp_path, 90), *video_zoo.X264_CLI, "-g", "12", "-pix_fmt", "yuv420p",
                     "-movflags", "frag_keyframe+empty_moov", str(whole))
    path = video_zoo.truncate(whole, tmp_path / "cut.mp4", 0.63)
    reference = video_zoo.sequential(path)
    assert probe(str(path)).n_frames == len(reference) == 54
    _assert_frames_as_shown(_read(path, "pyav", strides=(1,)), reference)


@pytest.mark.parametrize("fraction", [0.67, 0.74])
def test_a_cut_mpeg4_part2_mp4_keeps_the_partial_frame_the_cli_shows(tmp_path, fraction: float):
    """MPEG-4 Part 2 with B-frames (`-c:v mpeg4 -bf 3`, DivX/XviD-style) in a faststart MP4 cut
    at `fraction`: the partial P-frame shown before the whole B-frames is concealed by FFmpeg's
    mpeg4 decoder and shown by the CLI (H.264's decoder outputs nothing for one). Hidden by its
    place alone, a frame went missing (52 where the CLI shows 53) and the next index named the
    frame after it. Whether such a frame shows is now decided by decoding it."""
    video_zoo.require_ffmpeg()
    whole = tmp_path / "whole.mp4"
    video_zoo.ffmpeg("-i", _source(tmp_path, 80), "-c:v", "mpeg4", "-q:v", "3", "-bf", "3", "-g", "25",
                     "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(whole))
    path = video_zoo.truncate(whole, tmp_path / "cut.mp4", fraction)
    reference = _cli_frames(path, 64, 48)
    assert probe(str(path)).n_frames == len(reference)
    _assert_frames_as_shown(_read(path, "pyav", strides=(1,)), reference)


@pytest.mark.skipif(not decord_available(), reason="decord is not installed")
def test_the_note_on_a_live_webm_names_no_path_nor_time(tmp_path):
    """The lineage (written into each clip's shard member) said why decord was passed over in
    decord's own words: "[05:42:02] /github/workspace/src/video/video_reader.cc:270:
    [/tmp/.../live.webm] Failed to measure ...": the time of day and the input's absolute path,
    so two builds differed and the output told where the input lay. The note is now fixed text
    per reason: the same file read from two folders gives one lineage."""
    video_zoo.require_ffmpeg()
    lineages = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / "live.webm"
        video_zoo.ffmpeg("-i", _source(tmp_path, 20), "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used",
                         "8", "-g", "15", "-pix_fmt", "yuv420p", "-live", "1", "-f", "webm", str(path))
        record = _read(path, "decord", strides=(1,))
        assert record.decoder == "pyav"
        lineages.append(record.clips[0].lineage)
    note = lineages[0]["decoder_note"]
    assert note == "decord is not frame-exact here (decord cannot open it (unreadable)): PyAV decodes", note
    assert lineages[0] == lineages[1]


@pytest.mark.skipif(not decord_available(), reason="decord is not installed")
def test_a_file_decord_counts_otherwise_is_left_to_pyav(tmp_path, monkeypatch):
    """Where decord opens a file but counts other frames than the probe, its decoding job would
    refuse every clip as `changed_file`: planning compares the counts and leaves the file to
    PyAV. No file made here has decord miscount (VFR Matroska/WebM/MP4 at 25 then 5 fps: 80 and
    80), so decord's real count of a real file is shifted by one on its way back from its job:
    the seam is the job's result, not the decode."""
    video_zoo.require_ffmpeg()
    path = tmp_path / "clip.mkv"
    video_zoo.ffmpeg("-i", _source(tmp_path, 40), "-c:v", "libx264", "-bf", "0", "-pix_fmt", "yuv420p", str(path))
    assert _read(path, "decord", strides=(1,)).decoder == "decord"  # counted alike: decord's
    real_call = budget.call

    def call(function: str, *args, **kwargs):
        result = real_call(function, *args, **kwargs)
        return result + 1 if function == "sources.video_decode:decord_frame_count" else result

    monkeypatch.setattr(budget, "call", call)
    record = _read(path, "decord", strides=(1,))
    assert record.decoder == "pyav", record.clips[0].lineage
    assert record.clips[0].lineage["decoder_note"] == \
        "decord is not frame-exact here (decord counts 41 frames where 40 are shown): PyAV decodes"
    _assert_frames_as_shown(record, video_zoo.sequential(path))


# -- an audit of what cameras, phones and tools write, frame for frame against the CLI ------
AUDITED = {  # name: the CLI's arguments after its input (testsrc2, or its frames shrunk by -vf)
    "audio_first.mp4": ["-map", "1:a", "-map", "0:v", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac"],
    "audio_first.mkv": ["-map", "1:a", "-map", "0:v", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "libopus"],
    "one_frame.mp4": ["-frames:v", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p"],
    "two_frames.ts": ["-frames:v", "2", "-c:v", "libx264", "-bf", "2", "-pix_fmt", "yuv420p"],
    "two_frames.webm": ["-frames:v", "2", "-c:v", "libvpx-vp9"],
    "one_pixel.mkv": ["-vf", "scale=1:1", "-c:v", "ffv1"],
    "one_pixel.webm": ["-vf", "scale=1:1", "-c:v", "libvpx-vp9"],
    "one_pixel.mp4": ["-vf", "scale=1:1", "-c:v", "libx264", "-pix_fmt", "yuv444p"],
    "full_range.mp4": ["-c:v", "libx264", "-pix_fmt", "yuvj420p"],
    "bt601_tagged.mp4": ["-vf", "scale=out_color_matrix=bt601,format=yuv420p", "-c:v", "libx264", "-colorspace",
                         "smpte170m", "-color_primaries", "smpte170m", "-color_trc", "smpte170m"],
}


@pytest.mark.parametrize("name", sorted(AUDITED))
def test_files_phones_and_tools_write_give_the_cli_frames_pixel_for_pixel(tmp_path, name: str):
    """An audio track listed before the video, clips of one or two frames (B-frames asked for),
    1x1 frames, full-range `yuvj420p` and BT.601-tagged H.264: every frame equals the CLI's
    (`-vsync passthrough`, rgb24), read whole and sparsely. (Rotation, edit lists, two video
    tracks, interlaced and changing sizes: tests/test_video_zoo.py and the tests above.)"""
    video_zoo.require_ffmpeg()
    path = tmp_path / name
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:d=0.4", "-f", "lavfi",
                    "-i", "sine=d=0.5", *AUDITED[name], str(path)], check=True)
    reference = video_zoo.sequential(path)
    info = probe(str(path))
    assert info.n_frames == len(reference) and (info.height, info.width) == reference[0].shape[:2]
    for wanted in (range(info.n_frames), range(info.n_frames - 1, -1, -3)):
        got = dict(decode_frames(str(path), wanted))
        assert sorted(got) == sorted(wanted) and all(np.array_equal(got[i], reference[i]) for i in got)


@pytest.mark.parametrize("suffix", [".mpg", ".ts"])
def test_interlaced_mpeg2_is_woven_as_the_cli_converts_its_fields(tmp_path, suffix: str):
    """MPEG-2 coded as fields (DVD, broadcast: `-flags +ildct+ilme`, B-frames, PS and TS): every
    frame equals the CLI's conversion of each field's chroma on its own (`scale=interl=1`),
    byte for byte, and is far from the progressive one (the file tells them apart)."""
    video_zoo.require_ffmpeg()
    path = tmp_path / f"interlaced{suffix}"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=128x96:rate=25:d=0.8",
                    "-c:v", "mpeg2video", "-q:v", "2", "-bf", "2", "-g", "12", "-flags", "+ildct+ilme", "-top", "1",
                    str(path)], check=True)
    fields = _cli_frames(path, 128, 96, "scale=interl=1")
    progressive = _cli_frames(path, 128, 96, "scale=interl=0")
    assert len(fields) == 20 and np.abs(fields.astype(int) - progressive).mean() > 2
    info = probe(str(path))
    assert info.n_frames == 20 and info.interlaced
    got = dict(decode_frames(str(path), range(0, 20, 3)))
    assert sorted(got) == list(range(0, 20, 3)) and all(np.array_equal(got[i], fields[i]) for i in got)


def _rgb_from_planes(frame: av.VideoFrame) -> np.ndarray:
    """A decoded 10-bit YCbCr frame as RGB by its tagged matrix (BT.709 or BT.601) and range, in
    NumPy: each chroma sample held over the luma samples it covers (co-sited, as swscale's 8-bit
    conversion and the CLI's keep an edge)."""
    planes = [np.frombuffer(p, np.uint16).reshape(p.height, p.line_size // 2)[:, :p.width].astype(float)
              for p in frame.planes]
    y, cb, cr = (plane.repeat(frame.height // plane.shape[0], 0).repeat(frame.width // plane.shape[1], 1)
                 for plane in planes)
    if frame.color_range == 2:  # full
        y, cb, cr = y / 1023, (cb - 512) / 1023, (cr - 512) / 1023
    else:
        y, cb, cr = (y - 64) / 876, (cb - 512) / 896, (cr - 512) / 896
    kr, kb = (0.2126, 0.0722) if frame.colorspace == 1 else (0.299, 0.114)
    r, b = y + 2 * (1 - kr) * cr, y + 2 * (1 - kb) * cb
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.round(np.stack([r, g, b], axis=-1) * 255), 0, 255)


TEN_BIT = {
    "main10_bt709.mp4": ["-c:v", "libx265", "-x265-params", "log-level=error", "-pix_fmt", "yuv420p10le",
                         "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"],
    "main10_full_range.mp4": ["-c:v", "libx265", "-x265-params", "log-level=error", "-pix_fmt", "yuv420p10le",
                              "-colorspace", "bt709", "-color_range", "pc"],
    "prores_422.mov": ["-c:v", "prores_ks", "-profile:v", "2", "-pix_fmt", "yuv422p10le", "-colorspace", "smpte170m"],
}


@pytest.mark.parametrize("name", sorted(TEN_BIT))
def test_ten_bit_frames_keep_their_colour_edges(tmp_path, name: str):
    """HEVC Main10 (phones, cameras; limited and full range) and ProRes 422 (4:2:2): each frame is
    its decoded planes converted by the tagged matrix and range (`_rgb_from_planes`) within 4
    levels, sharp colour edges included. The swscale PyAV bundles, given 10-bit frames, smeared
    each edge's chroma over the columns before it (155 levels off there; mean 5.7 where the CLI
    is 2.7); 8-bit frames it converts as the CLI does (`AUDITED` above)."""
    video_zoo.require_ffmpeg()
    path = tmp_path / name
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:d=0.12",
                    *TEN_BIT[name], str(path)], check=True)
    with av.open(str(path)) as container:
        references = [_rgb_from_planes(frame) for frame in container.decode(video=0)]
    got = dict(decode_frames(str(path), range(len(references))))
    assert len(references) == 3 and sorted(got) == [0, 1, 2]
    for i, reference in enumerate(references):
        off = np.abs(got[i].astype(int) - reference)
        assert off.max() <= 4 and off.mean() < 1.5, (i, off.max(), off.mean())


def test_a_ten_bit_frame_is_judged_with_its_eight_bit_copy():
    """The 8-bit copy a 10-bit SDR frame is reduced to before its RGB conversion is counted at full
    size, even where the conversion itself is reduced; an HDR frame (tone-mapped from 16 bits) has none."""
    from sources.video_decode import HDR_BAND_BYTES, judge_memory

    ten, eight = (judge_memory(1920, 1080, fmt, "hevc", 153, True) for fmt in ("yuv422p10le", "yuv422p"))
    assert ten.conversion_bytes - eight.conversion_bytes == 1920 * 1080 * (2 + 2)  # the copy, its rounding
    reduced = judge_memory(1920, 1080, "yuv420p10le", "hevc", 153, True, working=(455, 256), memory_mb=390)
    copy = 1920 * 1080 * 3 // 2 + 1920 * 1080 * 2
    assert reduced.reduce and reduced.conversion_bytes == 455 * 256 * (6 + 3) + copy
    hdr = judge_memory(1920, 1080, "yuv420p10le", "hevc", 153, True, hdr=True)
    assert hdr.conversion_bytes == 1920 * 1080 * 12 + HDR_BAND_BYTES


@pytest.mark.parametrize("yuv", ["502:515:509", "383:383:639"])
def test_a_ten_bit_flat_colour_is_rounded_half_up_to_eight_bits(tmp_path, yuv: str):
    """`eight_bit_copy` rounds each 10-bit sample to 8 bits half up (no dither): a flat 10-bit
    colour (FFV1, BT.709 limited, samples whose low bits are 1 to 3, written by ffmpeg's geq) is
    within a level on average of the RGB the tagged matrix gives its samples in floating point.
    Truncated instead it was 1.33 and 1.57 levels off (all channels low)."""
    path = tmp_path / "flat.mkv"
    y, cb, cr = (int(v) for v in yuv.split(":"))
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=s=32x16:r=25", "-frames:v", "1",
                    "-vf", f"format=yuv444p10le,geq=lum={y}:cb={cb}:cr={cr}", "-colorspace", "bt709",
                    "-c:v", "ffv1", str(path)], check=True)
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        assert [int(np.frombuffer(p, "<u2")[0]) for p in frame.planes] == [y, cb, cr]
    luma, blue, red = (y - 64) / 876, (cb - 512) / 896, (cr - 512) / 896
    r, b = luma + 2 * (1 - 0.2126) * red, luma + 2 * (1 - 0.0722) * blue
    g = (luma - 0.2126 * r - 0.0722 * b) / (1 - 0.2126 - 0.0722)
    exact = np.clip(np.array([r, g, b]) * 255, 0, 255)
    (got,) = (pixels for _, pixels in decode_frames(str(path), [0]))
    assert np.abs(got.astype(float) - exact).mean() < 1.0, (got[0, 0], exact)
