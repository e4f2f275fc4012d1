"""MPEG-4 Part 2 packets that give no frame by design: not-coded VOPs (N-VOPs, `vop_coded` 0), as
XviD and DivX write for a frame they drop or find unchanged. FFmpeg's decoder gives no frame for one
and the ffmpeg CLI shows none, so the build counts none either, and every stored frame is the one
the CLI shows at its place. A packed bitstream's placeholder (an N-VOP too) gives the B-frame stored
before it, and counts.

The N-VOPs here are those of XviD and FFmpeg streams whose held frames (a frame shown three times
over, coded as a P or B VOP with every macroblock skipped) are rewritten as not coded, their stamps
kept; the CLI showing as many fewer frames as VOPs were rewritten says the rewrite is read as XviD's.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import video_zoo

from sources.records import Reject, VideoRecord
from sources.video import VideoSource
from uvd_pipeline.render import RenderSettings, decode_png, render_video

W, H = 64, 48
HELD = [i for i in range(16) for _ in range(3 if i % 4 == 2 else 1)]  # frames 2, 6, 10, 14 held three times
SETTINGS = RenderSettings(size=64, resize="squash", pad_value=0, max_pixels=10**8, png_compression=1, seed=0,
                          val_fraction=0.0)
HELD_BYTES = 40  # a VOP repeating the picture before it, every macroblock skipped, is smaller than this


def _source(path: Path) -> Path:
    """The held frames, lossless (FFV1), as a camera or a screen capture repeats an unchanged picture."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p"
        for i in HELD:
            for packet in stream.encode(av.VideoFrame.from_ndarray(video_zoo.pattern(i, W, H), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _not_coded(data: bytes, time_bits: int) -> bytes:
    """A VOP rewritten as not coded: its header up to `vop_coded`, that bit 0, then stuffing."""
    at = data.index(b"\x00\x00\x01\xb6") + 4
    bits = "".join(format(byte, "08b") for byte in data[at:])
    end = bits.index("0", 2) + 1  # coding type, modulo_time_base ones and their 0
    end += 1 + time_bits + 1  # marker, vop_time_increment, marker
    kept = bits[:end] + "0"
    kept += "0" + "1" * ((-len(kept) - 1) % 8)
    return data[:at] + int(kept, 2).to_bytes(len(kept) // 8, "big")


def _with_held_not_coded(path: Path, out: Path) -> int:
    """`path` remuxed (PyAV, stamps kept) with each held frame's VOP not coded; returns how many."""
    rewritten = 0
    with av.open(str(path)) as container, av.open(str(out), "w", format=out.suffix[1:].replace("mkv", "matroska")) \
            as written:
        stream = container.streams.video[0]
        # vop_time_increment_resolution: the frame rate, as FFmpeg's encoder and XviD write it
        time_bits = (stream.average_rate.numerator - 1).bit_length()
        copy = written.add_stream_from_template(stream)
        for packet in container.demux(stream):
            if not packet.size:
                continue
            data = bytes(packet)
            if not packet.is_keyframe and len(data) < HELD_BYTES:
                data, rewritten = _not_coded(data, time_bits), rewritten + 1
            new = av.Packet(data)
            new.pts, new.dts, new.time_base, new.is_keyframe = packet.pts, packet.dts, packet.time_base, \
                packet.is_keyframe
            new.stream = copy
            written.mux(new)
    return rewritten


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    """(file, VOPs rewritten as not coded): XviD without B-frames in AVI and in Matroska, FFmpeg's
    encoder with 2 B-frames in AVI (its held B VOPs rewritten), and XviD with 2 B-frames untouched
    (packed: a placeholder N-VOP after each packet carrying a P and a B VOP)."""
    video_zoo.require_ffmpeg()
    root = tmp_path_factory.mktemp("not_coded")
    source = _source(root / "held.mkv")
    made = {}
    for name, encoder in (("xvid.avi", ["-c:v", "libxvid", "-bf", "0"]), ("mpeg4_bf2.avi", ["-c:v", "mpeg4", "-bf", "2"]),
                          ("xvid_packed_bf2.avi", ["-c:v", "libxvid", "-bf", "2"])):
        video_zoo.ffmpeg("-i", str(source), *encoder, "-q:v", "4", str(root / name))
    for name, base in (("xvid_nvop.avi", "xvid.avi"), ("xvid_nvop.mkv", "xvid.avi"),
                       ("mpeg4_bf2_nvop.avi", "mpeg4_bf2.avi")):
        made[name] = (root / name, _with_held_not_coded(root / base, root / name))
    made["xvid_packed_bf2.avi"] = (root / "xvid_packed_bf2.avi", 0)
    return made


@pytest.mark.parametrize("name", ["xvid_nvop.avi", "xvid_nvop.mkv", "mpeg4_bf2_nvop.avi", "xvid_packed_bf2.avi"])
def test_a_vop_not_coded_is_no_frame_and_every_stored_frame_is_the_clis(clips, name):
    """AVI names frames by the decoder's output order: each N-VOP counted as a frame (24 counted,
    the CLI shows 16; 17 with B-frames) made the outputs fall behind the packets for good, so every
    clip from the first one on was a `decode_failed` reject (8 of 8 clips, in both). In Matroska,
    named by stamps, each N-VOP was a frame that never decoded: 24 counted, 8 of 8 clips rejected."""
    path, rewritten = clips[name]
    with av.open(str(path)) as container:
        packets = sum(1 for packet in container.demux(video=0) if packet.size)
    cli = video_zoo.sequential(path)
    assert len(cli) == packets - rewritten  # the CLI shows no frame for a VOP not coded
    if name.startswith("xvid_packed"):
        assert len(cli) == packets  # each placeholder gives the B-frame stored before it
    else:
        assert rewritten >= 6
    source = VideoSource("nvop", str(path.parent), strides=(1, 3), frames=4, decoder="pyav")
    (record,) = list(source.read(str(path)))
    assert isinstance(record, VideoRecord), record
    assert record.n_frames == len(cli)
    stored = []
    for sentence in render_video(record, SETTINGS):
        assert not isinstance(sentence, Reject), sentence
        for image, member in zip(sentence.images, sentence.members):
            stored.append((member["frame"], cv2.resize(decode_png(image), (W, H), interpolation=cv2.INTER_AREA)))
    assert len({frame for frame, _ in stored}) > len(cli) // 2 and max(frame for frame, _ in stored) > len(cli) - 5
    for frame, image in stored:
        assert video_zoo.read_index(image) == video_zoo.read_index(cli[frame]), frame
        assert np.abs(image.astype(int) - cli[frame].astype(int)).mean() < 8, frame


def test_a_join_of_xvid_files_at_two_frame_rates_reads_each_vol_header(tmp_path):
    """`ffmpeg -f concat -c copy` of XviD AVIs at 25 and 29.97 fps: the second part's VOL header
    gives `vop_time_increment` 15 bits, not 5. Read only once, the second part's N-VOPs were taken
    for frames (n 70 where the CLI shows 62; 2 of 4 clips decode_failed)."""
    video_zoo.require_ffmpeg()
    source = _source(tmp_path / "held.mkv")
    parts = []
    for name, rate in (("r25", "25"), ("r2997", "30000/1001")):
        video_zoo.ffmpeg("-r", rate, "-i", str(source), "-c:v", "libxvid", "-bf", "0", "-q:v", "4",
                         str(tmp_path / f"_{name}.avi"))
        parts.append(tmp_path / f"{name}.avi")
        assert _with_held_not_coded(tmp_path / f"_{name}.avi", parts[-1]) >= 6
    (tmp_path / "list.txt").write_text("".join(f"file '{p}'\n" for p in parts))
    videos = tmp_path / "videos"
    videos.mkdir()
    path = videos / "join.avi"
    video_zoo.ffmpeg("-f", "concat", "-safe", "0", "-i", str(tmp_path / "list.txt"), "-c", "copy", str(path))
    cli = video_zoo.sequential(path)
    (record,) = list(VideoSource("join", str(videos), strides=(1,), decoder="pyav").read(str(path)))
    assert isinstance(record, VideoRecord), record
    assert record.n_frames == len(cli) == 32
    stored = []
    for sentence in render_video(record, SETTINGS):
        assert not isinstance(sentence, Reject), sentence
        for image, member in zip(sentence.images, sentence.members):
            stored.append((member["frame"], cv2.resize(decode_png(image), (W, H), interpolation=cv2.INTER_AREA)))
    assert max(frame for frame, _ in stored) > len(cli) - 5
    for frame, image in stored:
        assert video_zoo.read_index(image) == video_zoo.read_index(cli[frame]), frame
