"""An MP4/MOV whose sample tables declare far more samples than it holds is refused before FFmpeg
indexes each of them on every open (`sources.video_sample_tables`); files the ffmpeg CLI writes,
fragmented ones and ones with PCM sound too, are judged on what they hold."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import av
import pytest
import video_zoo

from sources.records import Reject, VideoRecord
from sources.video import VideoSource
from sources import video_sample_tables
from sources.video_decode import probe
from sources.video_memory import DECODER_BASE_MB
from sources.video_open import VideoError
from sources.video_sample_tables import INDEX_BYTES_PER_SAMPLE, declared_samples

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}


def _rebuilt(data: bytes, start: int, end: int, samples: int, first_chunk: int, stsz_before: bool = False) -> bytes:
    """The boxes of data[start:end] again, their sample tables declaring `samples` samples of one
    chunk at `first_chunk` (one stts, stsc and constant stsz entry; no stss: each a key frame);
    with `stsz_before`, an stsz of one sample before that one (FFmpeg keeps the last)."""
    out = b""
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + size]
        if kind in _CONTAINERS:
            body = _rebuilt(data, at + 8, at + size, samples, first_chunk, stsz_before)
        body = {b"stts": body[:4] + struct.pack(">III", 1, samples, 512),
                b"stsz": body[:4] + struct.pack(">II", 1500, samples),
                b"stsc": body[:4] + struct.pack(">IIII", 1, 1, samples, 1),
                b"stco": body[:4] + struct.pack(">II", 1, first_chunk)}.get(kind, body)
        if kind == b"stsz" and stsz_before:
            out += _box(b"stsz", body[:4] + struct.pack(">II", 1500, 1))
        if kind != b"stss":
            out += struct.pack(">I4s", 8 + len(body), kind) + body
        at += size
    return out


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _declaring(tmp_path: Path, samples: int, prefix: bytes = b"", stsz_before: bool = False,
               moov_last: bool = False) -> Path:
    """A 1 s MJPEG .mov of the ffmpeg CLI (moov first) whose tables declare `samples` samples;
    after boxes `prefix`, or its moov last with a size running 100,000 bytes past the file's end."""
    made = tmp_path / "made.mov"
    video_zoo.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:d=1", "-c:v", "mjpeg", "-q:v", "5",
                     "-movflags", "+faststart", str(made))
    data = made.read_bytes()
    tops, at = {}, 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        tops[kind] = (at, at + size)
        at += size
    ftyp, mdat = data[slice(*tops[b"ftyp"])], data[slice(*tops[b"mdat"])]
    moov_size = len(_rebuilt(data, *tops[b"moov"], samples, 0, stsz_before))
    path = tmp_path / "many.mov"
    if moov_last:
        moov = _rebuilt(data, *tops[b"moov"], samples, len(prefix + ftyp) + 8, stsz_before)
        path.write_bytes(prefix + ftyp + mdat + struct.pack(">I", len(moov) + 100_000) + moov[4:])
    else:
        moov = _rebuilt(data, *tops[b"moov"], samples, len(prefix + ftyp) + moov_size + 8, stsz_before)
        path.write_bytes(prefix + ftyp + moov + mdat)
    made.unlink()
    return path


def test_more_samples_than_the_file_holds_is_too_large_unopened(tmp_path, monkeypatch):
    path = _declaring(tmp_path, 2_000_000)  # 37 KB: FFmpeg indexed each on its 5 opens, and it was planned
    (reject,) = list(VideoSource("v", str(tmp_path), strides=(10,)).read(str(path)))
    assert isinstance(reject, Reject) and reject.reason == "video_too_large", reject
    assert "2,000,000 samples" in reject.detail and f"{path.stat().st_size:,} bytes" in reject.detail
    opened = []
    monkeypatch.setattr(av, "open", lambda *a, **k: opened.append(a))
    with pytest.raises(VideoError, match="more than its"):
        probe(str(path))
    assert opened == []


def test_an_index_past_the_memory_budget_is_too_large(tmp_path):
    path = _declaring(tmp_path, 2_000_000)
    budget = DECODER_BASE_MB + (2_000_000 * INDEX_BYTES_PER_SAMPLE >> 20) - 1
    with pytest.raises(VideoError) as refused:
        probe(str(path), memory_mb=budget)
    assert refused.value.reason == "video_too_large" and f"memory budget of {budget} MiB" in refused.value.detail


def test_a_few_hundred_thousand_samples_more_than_the_file_holds_are_too_large(tmp_path):
    """Under 1,048,576 samples (the floor was, 36 MiB an open) a 37 KB file declaring 200,000 was
    probed, FFmpeg indexing each (7 MiB) on each of its opens; the floor is now 65,536 (2.25 MiB)."""
    path = _declaring(tmp_path, 200_000)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 200_000
    (reject,) = list(VideoSource("v", str(tmp_path), strides=(10,)).read(str(path)))
    assert isinstance(reject, Reject) and reject.reason == "video_too_large", reject
    assert "200,000 samples" in reject.detail and f"{path.stat().st_size:,} bytes" in reject.detail


def test_a_file_declaring_a_cheap_index_is_still_probed(tmp_path):
    """Under `CHEAP_SAMPLES` a file is not judged on its size: its frames are what FFmpeg reads."""
    path = _declaring(tmp_path, 1000)
    assert probe(str(path)).n_frames > 0


@pytest.mark.parametrize("made", [
    ["-c:v", "libx264", "-c:a", "aac"],
    ["-c:v", "mjpeg", "-c:a", "pcm_s16le", "-f", "mov"],
    ["-c:v", "libx264", "-c:a", "aac", "-movflags", "frag_keyframe+empty_moov", "-g", "10"],
    ["-c:v", "rawvideo", "-pix_fmt", "rgb24", "-f", "mov"],
    ["-c:v", "mpeg4", "-c:a", "aac", "-f", "3gp"],
    ["-c:v", "mjpeg", "-c:a", "pcm_s16le", "-f", "mov", "-movflags", "frag_keyframe+empty_moov"],
])
def test_files_the_cli_writes_declare_what_ffmpeg_indexes(tmp_path, made):
    path = tmp_path / "made.mp4"
    video_zoo.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:d=2", "-f", "lavfi", "-i",
                     "sine=d=2:sample_rate=48000", *made, str(path))
    declared = declared_samples(str(path))
    with av.open(str(path)) as container:
        packets = sum(1 for packet in container.demux() if packet.size)
    assert packets <= declared.entries <= packets + 100 and declared.unlisted <= declared.size
    (record,) = list(VideoSource("v", str(tmp_path), strides=(10,)).read(str(path)))
    assert isinstance(record, VideoRecord) and record.n_frames == 50, record


@pytest.mark.parametrize("layout", [
    {"prefix": _box(b"junk", b"")},  # FFmpeg's probe takes junk, udta, pict... before ftyp
    {"prefix": _box(b"udta", b"")},
    {"prefix": _box(b"\x82\x82\x7f\x7d", b"")},
    {"stsz_before": True},  # two stsz boxes: FFmpeg keeps the last
    {"moov_last": True},  # FFmpeg cuts a moov running past the end to what is left
])
def test_layouts_ffmpeg_reads_are_judged_too(tmp_path, layout):
    path = _declaring(tmp_path, 2_000_000, **layout)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 2_000_000  # what FFmpeg indexes
    (reject,) = list(VideoSource("v", str(tmp_path), strides=(10,)).read(str(path)))
    assert isinstance(reject, Reject) and reject.reason == "video_too_large", reject
    assert "2,000,000 samples" in reject.detail


def test_a_compressed_movie_header_is_refused(tmp_path):
    path = _declaring(tmp_path, 1000, moov_last=True)
    data = path.read_bytes()
    moov_at = data.rindex(b"moov") - 4
    inner = _box(b"moov", data[moov_at + 8:])
    packed = _box(b"moov", _box(b"cmov", _box(b"dcom", b"zlib") + _box(b"cmvd", struct.pack(">I", len(inner))
                                                                        + zlib.compress(inner))))
    path.write_bytes(data[:moov_at] + packed)
    (reject,) = list(VideoSource("v", str(tmp_path), strides=(10,)).read(str(path)))
    assert isinstance(reject, Reject) and reject.reason == "unsupported_container" and "cmov" in reject.detail


def test_boxes_past_the_limit_are_refused_and_deep_nesting_is_left_to_ffmpeg(tmp_path, monkeypatch):
    monkeypatch.setattr(video_sample_tables, "BOX_LIMIT", 1000)
    path = _declaring(tmp_path, 2_000_000, prefix=_box(b"free", b"") * 1000)
    with pytest.raises(VideoError, match="over 1,000 boxes") as refused:
        probe(str(path))
    assert refused.value.reason == "video_too_large"
    nested = b""
    for _ in range(5000):  # RecursionError, read as decode_failed, before the depth limit
        nested = _box(b"moov", nested)
    path.write_bytes(_box(b"ftyp", b"qt  \0\0\2\0qt  ") + nested)
    assert declared_samples(str(path)).entries == 0


def test_a_pcm_tracks_index_counts_the_samples_of_each_chunk(tmp_path):
    """FFmpeg indexes a chunk-demuxed PCM track an entry per 1024 samples of each chunk (its stsc)."""
    path = tmp_path / "made.mov"
    video_zoo.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:d=2", "-f", "lavfi", "-i",
                     "sine=d=2:sample_rate=48000", "-c:v", "mjpeg", "-c:a", "pcm_s16le", str(path))
    data = bytearray(path.read_bytes())
    stsc = data.rindex(b"stsc")  # the sound track's (the second): each chunk said to hold 4e8 samples
    for entry in range(int.from_bytes(data[stsc + 8:stsc + 12], "big")):
        struct.pack_into(">I", data, stsc + 12 + 12 * entry + 4, 400_000_000)
    path.write_bytes(bytes(data))
    chunks = int.from_bytes(data[data.rindex(b"stco") + 8:data.rindex(b"stco") + 12], "big")
    assert declared_samples(str(path)).entries == 50 + chunks * 390_625
    with pytest.raises(VideoError, match="passes the memory budget"):
        probe(str(path), memory_mb=DECODER_BASE_MB + 10)


def _two_moovs(tmp_path: Path, first: str, second: str) -> Path:
    """Two files run together byte for byte (`cat a.mp4 b.mp4 > joined.mp4`, a common way to join
    clips that does not): two ftyp, moov and mdat boxes, of which FFmpeg reads the first moov and
    skips the second ("Found duplicated MOOV Atom"). `honest` is a 2 s H.264/AAC MP4 of the ffmpeg
    CLI, `declaring` one whose tables declare 2,000,000 samples (`_declaring`)."""
    honest = tmp_path / "honest.mp4"
    video_zoo.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:d=2", "-f", "lavfi", "-i",
                     "sine=d=2:sample_rate=48000", "-c:v", "libx264", "-c:a", "aac", str(honest))
    parts = {"honest": honest.read_bytes()}
    if "declaring" in (first, second):
        parts["declaring"] = _declaring(tmp_path, 2_000_000).read_bytes()
    joined = tmp_path / "joined.mp4"
    joined.write_bytes(parts[first] + parts[second])
    return joined


@pytest.mark.parametrize("second", ["honest", "declaring"])
def test_a_second_moov_is_skipped_as_ffmpeg_skips_it(tmp_path, second):
    path = _two_moovs(tmp_path, "honest", second)
    with av.open(str(path)) as container:
        assert [stream.frames for stream in container.streams] == [50, 95]  # the first moov's
        packets = sum(1 for packet in container.demux() if packet.size)
    assert declared_samples(str(path)).entries == packets == 145  # was 290 and 2,000,145
    (record,) = list(VideoSource("v", str(tmp_path), strides=(10,)).read(str(path)))
    assert isinstance(record, VideoRecord) and record.n_frames == 50, record


def _renamed_moov(path: Path, kind: bytes) -> bytes:
    """The file's bytes, its (one, top-level) moov box renamed `kind`."""
    data = path.read_bytes()
    moov = data.index(b"moov") - 4
    return data[:moov + 4] + kind + data[moov + 8:]


@pytest.mark.parametrize("layout", ["hoov, then a moov", "free, no moov", "hoov in a track"])
def test_a_hoov_or_free_box_ffmpeg_reads_as_the_moov_is_judged(tmp_path, layout):
    """FFmpeg reads a hoov box whose first child is mvhd as a moov (the later honest moov skipped as
    a second), a free one so on the pass it makes again where none was found, and a hoov nested
    in a track too: the 2,000,000 samples it indexes on every open were never counted."""
    joined = _two_moovs(tmp_path, "declaring", "honest")
    declaring = (tmp_path / "many.mov").read_bytes()
    path = tmp_path / "hoov.mp4"
    if layout == "hoov, then a moov":
        path.write_bytes(_renamed_moov(joined, b"hoov"))
    elif layout == "free, no moov":
        path.write_bytes(_renamed_moov(tmp_path / "many.mov", b"free"))
    else:  # the honest file's first track holding the declaring moov, renamed hoov
        honest = (tmp_path / "honest.mp4").read_bytes()
        trak = honest.index(b"trak") - 4
        trak_end = trak + int.from_bytes(honest[trak:trak + 4], "big")
        moov = declaring.index(b"moov") - 4
        hoov = b"hoov" + declaring[moov + 8:moov + int.from_bytes(declaring[moov:moov + 4], "big")]
        grown = _box(b"trak", honest[trak + 8:trak_end] + struct.pack(">I", len(hoov) + 4) + hoov)
        moov = honest.index(b"moov") - 4
        moov_end = moov + int.from_bytes(honest[moov:moov + 4], "big")
        path.write_bytes(honest[:moov] + _box(b"moov", honest[moov + 8:trak] + grown + honest[trak_end:moov_end])
                         + honest[moov_end:])
    with av.open(str(path)) as container:
        assert 2_000_000 in [stream.frames for stream in container.streams]
    assert declared_samples(str(path)).entries >= 2_000_000  # was 145 (hoov), 0 (free), 145 (in a track)
    (reject,) = list(VideoSource("v", str(tmp_path), strides=(10,)).read(str(path)))
    assert isinstance(reject, Reject) and reject.reason == "video_too_large" and "2,000,000" in reject.detail


def test_a_hoov_of_no_movie_header_is_skipped_as_ffmpeg_skips_it(tmp_path):
    """A hoov whose first child is no mvhd is a box FFmpeg skips: the honest moov after it is read."""
    joined = _two_moovs(tmp_path, "honest", "honest")
    data = joined.read_bytes()
    moov = data.index(b"moov") - 4
    mvhd = moov + 8 + int.from_bytes(data[moov + 8:moov + 12], "big")  # the moov's second child first
    first = data[moov + 8:mvhd]
    body = data[mvhd:moov + int.from_bytes(data[moov:moov + 4], "big")]
    joined.write_bytes(data[:moov] + _box(b"hoov", body + first) + data[moov + 8 + len(first) + len(body):])
    with av.open(str(joined)) as container:
        assert [stream.frames for stream in container.streams] == [50, 95]  # the second file's
    assert declared_samples(str(joined)).entries == 145


def test_a_first_moov_declaring_too_many_is_judged_before_a_second(tmp_path):
    path = _two_moovs(tmp_path, "declaring", "honest")
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 2_000_000
    (reject,) = list(VideoSource("v", str(tmp_path), strides=(10,)).read(str(path)))
    assert isinstance(reject, Reject) and reject.reason == "video_too_large" and "2,000,000 samples" in reject.detail


@pytest.mark.parametrize("tracks", [1000, 1001, 3000])
def test_tracks_past_ffmpegs_stream_limit_are_not_walked(tmp_path, tracks):
    """FFmpeg opens 1,000 streams (max_streams) and fails the open at the next trak, having indexed
    those before: the walk stops there too (2,097,142 empty traks cost it 4 CPU-s, FFmpeg 0.01)."""
    made = tmp_path / "made.mov"
    video_zoo.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:d=1", "-c:v", "mjpeg", "-q:v", "5",
                     "-movflags", "+faststart", str(made))
    data = made.read_bytes()
    moov, trak = data.index(b"moov") - 4, data.index(b"trak") - 4
    moov_end, trak_end = (at + int.from_bytes(data[at:at + 4], "big") for at in (moov, trak))
    path = tmp_path / "tracks.mov"  # its one track repeated (their chunk offsets now short of the mdat)
    path.write_bytes(data[:moov] + _box(b"moov", data[moov + 8:trak] + data[trak:trak_end] * tracks
                                        + data[trak_end:moov_end]) + data[moov_end:])
    if tracks <= 1000:
        with av.open(str(path)) as container:
            assert len(container.streams) == tracks
    else:
        with pytest.raises(MemoryError):
            av.open(str(path))
    assert declared_samples(str(path)).entries == 25 * min(tracks, 1000)
