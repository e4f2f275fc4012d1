"""An FLV re-sending its AVC sequence header mid-stream: FFmpeg's demuxer hands each re-sent header
to the next packet as `new_extradata` side data, which the index keeps for a decode restarted after
it (`VideoIndex.new_extradata`). A stream may re-send the same header before every frame, or pad it
with megabytes: the index must hold only the headers that change, none larger than a real one, and
the index cache must count what they hold.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import pytest
import video_zoo

import numpy as np

from sources.video_decode import decode_frames
from sources.video_index import MAX_EXTRADATA_BYTES, MAX_HELD_EXTRADATA_BYTES
from sources.video_index_cache import IndexCache
from sources.video_open import VideoError
from sources.video_parameter_record import parameter_record
from sources.video_packet_order import read_index

FF = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[str, Path]:
    """Two tiny H.264 MP4s with different SPSs (20 and 30 frames, no B-frames)."""
    video_zoo.require_ffmpeg()
    root = tmp_path_factory.mktemp("new_extradata")
    out = {}
    for name, src, n, extra in (("a", "testsrc2", 20, ["-g", "10"]),
                                ("b", "testsrc", 30, ["-g", "15", "-profile:v", "baseline"])):
        out[name] = root / f"{name}.mp4"
        subprocess.run(FF + ["-f", "lavfi", "-i", f"{src}=size=64x48:rate=25", "-frames:v", str(n), "-c:v", "libx264",
                             "-preset", "veryfast", "-threads", "1", "-bf", "0", "-pix_fmt", "yuv420p", *extra,
                             str(out[name])], check=True)
    return out


def _avcc_and_packets(path: Path) -> tuple[bytes, list[bytes]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return bytes(stream.codec_context.extradata), [
            bytes([0x17 if p.is_keyframe else 0x27, 1, 0, 0, 0]) + bytes(p) for p in container.demux(stream) if p.size]


def _flv(path: Path, frames: list[tuple[bytes | None, bytes]]) -> Path:
    """An FLV of (sequence header to send before it or None, video tag body) pairs, 25 fps."""
    out = bytearray(b"FLV\x01\x01" + (9).to_bytes(4, "big") + bytes(4))
    for k, (header, body) in enumerate(frames):
        if header is not None:
            out += video_zoo._flv_tag(b"\x17\x00\x00\x00\x00" + header, 40 * k)
        out += video_zoo._flv_tag(body, 40 * k)
    path.write_bytes(out)
    return path


def test_a_header_resent_before_every_frame_is_kept_only_where_it_changes(parts, tmp_path):
    """Parts a, b, b, a, each its header before every frame (an RTMP stream re-sending it): the
    stream's extradata is a's, so only b's first header and a's return are kept (vid56 kept one per
    frame: 99 entries), and every frame still counts."""
    (a, pa), (b, pb) = _avcc_and_packets(parts["a"]), _avcc_and_packets(parts["b"])
    frames = [(a, p) for p in pa] + [(b, p) for p in pb] * 2 + [(a, p) for p in pa]
    index = read_index(str(_flv(tmp_path / "abba.flv", frames)))
    assert [(at, data) for at, data in index.new_extradata] == [(20, b), (80, a)]
    assert len(index.presented) == 100


def test_a_header_larger_than_any_real_one_is_cut_to_its_record(parts, tmp_path):
    """A sequence header of a's avcC padded to 2 MB before each of 20 frames: FFmpeg's decoder
    reads the record and ignores the rest, but vid56's index held 2 MB per frame (124 MB for 60 such
    frames). Each is cut to a's record, which is the stream's own: none is kept; each is counted."""
    a, pa = _avcc_and_packets(parts["a"])
    big = a + bytes(2 << 20)
    index = read_index(str(_flv(tmp_path / "big.flv", [(a, pa[0])] + [(big, p) for p in pa[1:]])))
    assert index.new_extradata == ()
    assert index.extradata_trimmed == 19
    assert len(index.presented) == 20


def test_a_padded_header_that_changes_the_parameter_sets_still_decodes_after_a_seek(parts, tmp_path):
    """Part a then part b, b's sequence header padded to 70 KiB (over the size kept whole): vid56's
    index dropped it, so frames 36 and 45, decoded after a seek past it, were lost. It is kept cut
    to b's record, and those frames are b's frames 16 and 25."""
    (a, pa), (b, pb) = _avcc_and_packets(parts["a"]), _avcc_and_packets(parts["b"])
    path = _flv(tmp_path / "big_switch.flv", [(a if k == 0 else None, p) for k, p in enumerate(pa)]
                + [(b + bytes(70 << 10) if k == 0 else None, p) for k, p in enumerate(pb)])
    index = read_index(str(path))
    assert [(at, data) for at, data in index.new_extradata] == [(20, b)]
    with av.open(str(parts["b"])) as container:
        want = [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]
    got = dict(decode_frames(str(path), [36, 45], seek_bytes=0))
    assert sorted(got) == [36, 45]
    for frame in (36, 45):
        assert np.abs(got[frame].astype(int) - want[frame - 20]).mean() < 1.0


def _annex_b(record: bytes) -> bytes:
    """An avcC record's SPSs and PPSs as start-code-prefixed NAL units (what some encoders send as
    their sequence header; FFmpeg's decoder reads either form)."""
    out, pos = b"", 5
    for count_at in (5, None):
        count = record[5] & 0x1F if count_at else record[pos]
        pos += 1
        for _ in range(count):
            n = int.from_bytes(record[pos:pos + 2], "big")
            out, pos = out + b"\0\0\0\1" + record[pos + 2:pos + 2 + n], pos + 2 + n
    return out


def test_padded_headers_that_parse_as_no_record_past_the_bound_refuse_the_file(parts, tmp_path):
    """After a's avcC, Annex B headers (b's and a's in turn) padded to 1 MiB before frames 1..5:
    no avcC record to cut them to, so the index keeps them whole up to `MAX_HELD_EXTRADATA_BYTES`
    and past it refuses the file, a counted reject; vid56 dropped them, so a decode restarted after
    one used the parameter sets before it."""
    (a, pa), (b, _) = _avcc_and_packets(parts["a"]), _avcc_and_packets(parts["b"])
    headers = [a] + [_annex_b(b if k % 2 else a) + bytes(1 << 20) for k in range(1, 6)]
    frames = list(zip(headers, pa)) + [(None, p) for p in pa[6:]]
    with pytest.raises(VideoError, match="parse as no avcC/hvcC record") as refused:
        read_index(str(_flv(tmp_path / "unparsed.flv", frames)))
    assert refused.value.reason == "unsupported_container"
    assert 4 << 20 < MAX_HELD_EXTRADATA_BYTES + (1 << 20) <= 5 << 20


def test_the_index_cache_counts_the_extradata_an_index_holds(parts, tmp_path):
    """Headers a and b alternating before each frame, each padded to just under the size kept (a
    stream whose every header differs from the last): 19 entries of near 64 KiB, 1.2 MB for 20
    packets. The cache's bound, in packets, counts those bytes too: an index holding more than
    the bound is not kept, where vid56 counted its 20 packets alone."""
    (a, pa), (b, _) = _avcc_and_packets(parts["a"]), _avcc_and_packets(parts["b"])
    pad = MAX_EXTRADATA_BYTES - max(len(a), len(b))
    headers = [(a if k % 2 == 0 else b) + bytes(pad) for k in range(len(pa))]
    index = read_index(str(_flv(tmp_path / "alternating.flv", list(zip(headers, pa)))))
    assert len(index.new_extradata) == 19
    cache = IndexCache(max_packets=5_000)  # about 680 KB at 136 bytes a packet
    cache.put("alternating", index)
    assert len(cache) == 0
    roomy = IndexCache(max_packets=20_000)
    roomy.put("alternating", index)
    assert roomy.get("alternating") is index


@pytest.mark.parametrize("encoder, codec", [("libx264", "h264"), ("libx265", "hevc")])
def test_a_padded_record_is_cut_back_to_the_record_the_encoder_wrote(tmp_path, encoder, codec):
    """The avcC/hvcC record FFmpeg's MP4 muxer writes (x264 high profile with its chroma/bit depth
    extension; x265's VPS/SPS/PPS arrays), padded with 70 KiB, is cut back to that record byte for
    byte; one cut inside its first parameter set parses as none."""
    video_zoo.require_ffmpeg()
    path = tmp_path / f"{codec}.mp4"
    subprocess.run(FF + ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25", "-frames:v", "2", "-c:v", encoder,
                         "-pix_fmt", "yuv420p", str(path)], check=True, capture_output=True)
    with av.open(str(path)) as container:
        record = bytes(container.streams.video[0].codec_context.extradata)
    assert parameter_record(record + bytes(70 << 10), codec) == record
    assert parameter_record(record[:30], codec) is None
