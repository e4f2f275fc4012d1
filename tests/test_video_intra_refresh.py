"""H.264 with x264's periodic intra refresh (`-x264-params intra-refresh=1`, as OBS and other
low-latency streamers, broadcast and IP cameras write it): every key frame but the first is a
recovery point on a P picture that decodes whole only some pictures later. Every stored frame must
be the frame the ffmpeg CLI shows at its place, with either decoder, and a byte-cut MPEG-TS of it
must count the frames the CLI shows.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
import video_zoo

from sources.records import Reject, VideoRecord
from sources.video import VideoSource, decord_available
from sources.video_decode import probe
from uvd_pipeline.render import RenderSettings, decode_png, render_video

DECODERS = ["pyav"] + (["decord"] if decord_available() else [])
W, H = 128, 96  # 8 macroblocks wide: x264 completes each refresh 7 reference pictures after its key frame
FRAMES = 90
SETTINGS = RenderSettings(size=128, resize="squash", pad_value=0, max_pixels=10**8, png_compression=1, seed=0,
                          val_fraction=0.0)


@pytest.fixture(scope="module")
def refresh(tmp_path_factory) -> dict[str, Path]:
    """The clip in MP4, Matroska and MPEG-TS as the ffmpeg CLI writes it (GOP 30, B-frames in the
    MP4 too), and the TS cut 40% into its bytes."""
    video_zoo.require_ffmpeg()
    root = tmp_path_factory.mktemp("refresh")
    source = root / "source.avi"
    video_zoo.encode(source, FRAMES, "mjpeg", pix_fmt="yuvj444p", options={"q:v": "2"}, size=(W, H))
    files = {}
    for name, bframes in (("ir.mp4", "0"), ("ir.mkv", "0"), ("ir.ts", "0"), ("ir_bframes.mp4", "2")):
        files[name] = root / name
        video_zoo.ffmpeg("-i", str(source), "-c:v", "libx264", "-preset", "veryfast", "-x264-params",
                         "intra-refresh=1:keyint=30", "-bf", bframes, "-pix_fmt", "yuv420p", str(files[name]))
    data = files["ir.ts"].read_bytes()
    files["ir_cut.ts"] = root / "ir_cut.ts"
    files["ir_cut.ts"].write_bytes(data[len(data) * 40 // 100 // 188 * 188:])
    return files


def _rendered(path: Path, decoder: str, strides=(3, 10)) -> tuple[VideoRecord, list[tuple[int, int]]]:
    """The record and (frame index, index the stored image shows) for every sentence member."""
    source = VideoSource("ir", str(path.parent), strides=strides, frames=4, decoder=decoder)
    (record,) = list(source.read(str(path)))
    assert isinstance(record, VideoRecord), record
    shown = []
    for sentence in render_video(record, SETTINGS):
        assert not isinstance(sentence, Reject), sentence
        for image, member in zip(sentence.images, sentence.members):
            stored = cv2.resize(decode_png(image), (W, H), interpolation=cv2.INTER_AREA)
            shown.append((member["frame"], video_zoo.read_index(stored)))
    return record, shown


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("name", ["ir.mp4", "ir.mkv", "ir.ts", "ir_bframes.mp4"])
def test_every_stored_frame_of_an_intra_refresh_stream_is_the_frame_the_cli_shows(refresh, name, decoder):
    """PyAV started at a recovery point outputs nothing before its refresh completes: every clip
    was `decode_failed` ("frames [30] did not decode"); decord, seeking to one, named the picture
    completing it as its target (frame 30 showed 37, silently)."""
    cli = [video_zoo.read_index(frame) for frame in video_zoo.sequential(refresh[name])]
    assert cli == list(range(FRAMES))  # the CLI shows every frame
    record, shown = _rendered(refresh[name], decoder)
    assert record.n_frames == len(cli)
    frames = [frame for frame, _ in shown]
    assert len(set(frames)) > 30 and max(frames) > 60  # clips well past the first recovery points
    assert [got for _, got in shown] == [cli[frame] for frame in frames]


def test_decord_is_refused_for_recovery_points_that_decode_whole_later(refresh):
    from sources.video_decord import decord_exact

    info = probe(str(refresh["ir.mp4"]))
    assert info.keyframes == 3 and info.gradual_refresh == 2
    assert "recovery points" in decord_exact(info)


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_byte_cut_intra_refresh_ts_counts_and_shows_the_frames_the_cli_shows(refresh, decoder):
    """Cut where a refresh is under way, the file starts at a recovery point: it was refused whole
    ("the first frame does not decode"). The CLI shows the frames from the picture completing the
    refresh on; so does the build, frame for frame."""
    cli = [video_zoo.read_index(frame) for frame in video_zoo.sequential(refresh["ir_cut.ts"])]
    assert 20 < len(cli) < FRAMES and cli == list(range(cli[0], cli[0] + len(cli)))
    record, shown = _rendered(refresh["ir_cut.ts"], decoder, strides=(1, 3))
    assert record.n_frames == len(cli)
    assert shown and [got for _, got in shown] == [cli[frame] for frame, _ in shown]


def _first_output(path: Path, key: int) -> int:
    """The time stamp of the first frame FFmpeg's decoder outputs fed from packet `key` on."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [packet for packet in container.demux(stream) if packet.size][key:]
        codec = av.CodecContext.create("h264", "r")
        codec.extradata = stream.codec_context.extradata
        for packet in packets:
            for frame in codec.decode(packet):
                return frame.pts
    raise AssertionError("no frame")


def test_clips_start_at_the_nearest_recovery_point_whose_refresh_is_complete(refresh):
    """Not from the file's start: a frame after a completed refresh is decoded from its recovery
    point, so an intra-refresh stream costs what a stream with key frames costs; the picture
    completing it is the first the decoder outputs from there."""
    from sources.video_index import decode_plan
    from sources.video_packet_order import read_index

    index = read_index(str(refresh["ir.mp4"]))
    whole = dict(index.recovery)
    assert sorted(whole) == [30, 60] and all(key < whole[key] < key + 30 for key in whole)
    assert [index.pts[whole[key]] for key in (30, 60)] == [_first_output(refresh["ir.mp4"], key) for key in (30, 60)]
    (late,) = decode_plan(index, [70])
    assert (late.first, late.last, late.trusted_from) == (60, 70, index.pts[whole[60]])
    (early,) = decode_plan(index, [whole[60] - 1])  # within the refresh begun at 60: from the key frame before
    assert early.first == 30
