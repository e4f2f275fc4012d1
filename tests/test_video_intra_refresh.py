"""H.264 with x264's periodic intra refresh (`-x264-params intra-refresh=1`, as OBS and other
low-latency streamers, broadcast and IP cameras write it): every key frame but the first is a
recovery point on a P picture that decodes whole only some pictures later. Every stored frame must
be the frame the ffmpeg CLI shows at its place, with either decoder, and a byte-cut MPEG-TS of it
must count the frames the CLI shows.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
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


# --- recovery point messages as other encoders (or a damaged stream) write them: the same x264
# stream with every recovery point's count rewritten in its SEI, remuxed by the ffmpeg CLI

def _recovery_sei(count: int) -> bytes:
    """An SEI NAL unit holding one recovery point message (H.264 D.1.8) with `count`, emulation
    prevention bytes inserted."""
    value = count + 1
    bits = "0" * (value.bit_length() - 1) + format(value, "b") + "0000"  # ue(count), exact_match, broken_link, 2 bits
    bits += "1" + "0" * (-(len(bits) + 1) % 8)  # payload alignment
    payload = int(bits, 2).to_bytes(len(bits) // 8, "big")
    rbsp = bytes([6, len(payload)]) + payload + b"\x80"
    out, zeros = bytearray(b"\x06"), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _with_recovery_count(stream: bytes, count: int) -> bytes:
    """An Annex B H.264 stream with each SEI NAL unit whose first message is a recovery point
    replaced by one giving `count`."""
    units = stream.split(b"\x00\x00\x01")
    replaced = [_recovery_sei(count) if unit[:2] == b"\x06\x06" else unit for unit in units[1:]]
    assert sum(unit[:2] == b"\x06\x06" for unit in units[1:]) >= 2
    return b"\x00\x00\x01".join([units[0], *replaced])


@pytest.fixture(scope="module")
def rewritten(tmp_path_factory) -> dict[str, Path]:
    """x264 intra refresh with recovery counts rewritten: 65535 (past MaxFrameNum, which FFmpeg
    takes modulo it) on a stream with a key frame every 3 pictures, in MPEG-TS and cut 40% into
    its bytes; 0 on the P pictures of a stream with a key frame every 30."""
    video_zoo.require_ffmpeg()
    root = tmp_path_factory.mktemp("rewritten")
    source = root / "source.avi"
    video_zoo.encode(source, FRAMES, "mjpeg", pix_fmt="yuvj444p", options={"q:v": "2"}, size=(W, H))
    files = {}
    for name, keyint, count, container in (("cnt65535", 3, 65535, "ts"), ("p_cnt0", 30, 0, "mp4")):
        raw = root / f"{name}.h264"
        video_zoo.ffmpeg("-i", str(source), "-c:v", "libx264", "-preset", "veryfast", "-x264-params",
                         f"intra-refresh=1:keyint={keyint}", "-bf", "0", "-pix_fmt", "yuv420p", str(raw))
        raw.write_bytes(_with_recovery_count(raw.read_bytes(), count))
        files[name] = root / f"{name}.{container}"
        video_zoo.ffmpeg("-r", "25", "-i", str(raw), "-c", "copy", str(files[name]))
    data = files["cnt65535"].read_bytes()
    files["cnt65535_cut"] = root / "cnt65535_cut.ts"
    files["cnt65535_cut"].write_bytes(data[len(data) * 40 // 100 // 188 * 188:])
    return files


def _stored(path: Path, strides=(3, 10)) -> tuple[VideoRecord, list[tuple[int, np.ndarray]]]:
    """The record and (frame index, stored image at the frame's own size) for every sentence member."""
    source = VideoSource("ir", str(path.parent), strides=strides, frames=4, decoder="pyav")
    (record,) = list(source.read(str(path)))
    assert isinstance(record, VideoRecord), record
    stored = []
    for sentence in render_video(record, SETTINGS):
        assert not isinstance(sentence, Reject), sentence
        for image, member in zip(sentence.images, sentence.members):
            stored.append((member["frame"], cv2.resize(decode_png(image), (W, H), interpolation=cv2.INTER_AREA)))
    return record, stored


def _assert_as_the_cli_shows(path: Path, strides=(3, 10)) -> None:
    """Every frame counted as the CLI shows them, each stored frame the CLI's at its place, its
    pixels too (a frame decoded from missing references may still show the right number)."""
    cli = video_zoo.sequential(path)
    record, stored = _stored(path, strides)
    assert record.n_frames == len(cli)
    assert stored and len({frame for frame, _ in stored}) > 10
    for frame, image in stored:
        assert video_zoo.read_index(image) == video_zoo.read_index(cli[frame]), frame
        assert np.abs(image.astype(int) - cli[frame].astype(int)).mean() < 8, frame


@pytest.mark.parametrize("name", ["cnt65535", "cnt65535_cut"])
def test_a_recovery_count_past_max_frame_num_is_taken_modulo_it(rewritten, name):
    """A count of 65535 on a stream whose frame_num wraps at 16 completes 15 reference pictures
    later, as FFmpeg's decoder takes it: taken literally, no refresh ever completed and the cut
    file showed no frame at all (the CLI shows its frames from the first refresh completed)."""
    _assert_as_the_cli_shows(rewritten[name])


def test_a_recovery_count_of_0_on_a_p_picture_is_not_taken_as_whole(rewritten):
    """A P picture's references lie before it: decoded from there, FFmpeg outputs it at once,
    concealing what is missing (mean difference 20-30 from the CLI's frames). Frames are decoded
    from the key frame before instead."""
    _assert_as_the_cli_shows(rewritten["p_cnt0"])


class _CountedTuple(tuple):
    """A tuple counting its item reads and iterations: the work done on an index's fields."""

    reads = 0

    def __getitem__(self, item):
        _CountedTuple.reads += 1
        return super().__getitem__(item)

    def __iter__(self):
        _CountedTuple.reads += 1
        return super().__iter__()


def test_key_of_takes_work_linear_in_the_frames_of_an_intra_refresh_stream(rewritten):
    """key_of walked back through every key frame whose refresh had not completed, for every
    frame: quadratic (7.3 s for a 20-minute file whose counts were 65535)."""
    from dataclasses import replace

    from sources.video_index import key_of
    from sources.video_packet_order import read_index

    index = read_index(str(rewritten["cnt65535"]))
    assert len(index.recovery) > 20
    counted = replace(index, pts=_CountedTuple(index.pts))
    _CountedTuple.reads = 0
    starts = key_of(counted)
    assert _CountedTuple.reads <= 4 * len(index.presented)
    assert starts == key_of(index) and len(set(starts)) > 10  # clips start near their frames


def test_decode_plan_reads_the_recovery_points_once(rewritten):
    """decode_plan made a dict of the recovery points for every frame it planned (1.8 s for
    36,000 frames)."""
    from dataclasses import replace

    from sources.video_index import decode_plan
    from sources.video_packet_order import read_index

    index = read_index(str(rewritten["cnt65535"]))
    wanted = list(range(0, len(index.presented), 2))
    counted = replace(index, recovery=_CountedTuple(index.recovery))
    _CountedTuple.reads = 0
    assert decode_plan(counted, wanted) == decode_plan(index, wanted)
    assert _CountedTuple.reads <= 2  # key_of's and its own


def test_a_ts_part_joined_at_a_recovery_point_hides_the_frames_before_its_refresh_completes(refresh, tmp_path):
    """Files joined end to end (`cat a.ts b.ts`), b a stream copy cut (`-ss`) starting at a
    recovery point: its part decodes as it does alone, from the picture completing the refresh
    on. The frames before it were planned all the same and failed loudly (`decode_failed`,
    "frames [300..307] did not decode")."""
    cut = tmp_path / "cut.ts"
    video_zoo.ffmpeg("-ss", "1.5", "-i", str(refresh["ir.ts"]), "-c", "copy", str(cut))
    joined = tmp_path / "joined.ts"
    joined.write_bytes(refresh["ir.ts"].read_bytes() + cut.read_bytes())
    alone = video_zoo.sequential(cut)
    assert video_zoo.read_index(alone[0]) > 30  # the cut starts at the recovery point at 30, shown from later
    cli = video_zoo.sequential(refresh["ir.ts"]) + alone  # each part as it shows alone
    record, stored = _stored(joined)
    assert record.n_frames == len(cli)
    assert max(frame for frame, _ in stored) > FRAMES + 10
    for frame, image in stored:
        assert video_zoo.read_index(image) == video_zoo.read_index(cli[frame]), frame
        assert np.abs(image.astype(int) - cli[frame].astype(int)).mean() < 8, frame


def test_a_part_whose_sps_came_before_another_with_its_id_counts_by_its_own_max_frame_num(rewritten, tmp_path):
    """Parts joined A, B, A (`cat`): A's SPS (id 0, MaxFrameNum 16) came back after B's (id 0,
    x264 with 16 references: MaxFrameNum 32), but its bytes were known already and so skipped:
    B's MaxFrameNum stayed, the recovery counts of 65535 in part 3 were taken modulo 32, not 16,
    and its first 16 frames the CLI shows were hidden silently (and its recovery points taken
    16 pictures late). Each part now shows the frames it shows alone."""
    import av

    from sources.video_recovery import nal_units, sps_frame_num_bits

    other = tmp_path / "other.ts"
    video_zoo.encode(tmp_path / "source.avi", 12, "mjpeg", pix_fmt="yuvj444p", options={"q:v": "2"}, size=(W, H),
                     first=500)
    video_zoo.ffmpeg("-i", str(tmp_path / "source.avi"), "-c:v", "libx264", "-preset", "veryfast", "-refs", "16",
                     "-bf", "0", "-pix_fmt", "yuv420p", str(other))
    again = tmp_path / "again.ts"
    video_zoo.ffmpeg("-ss", "1.5", "-i", str(rewritten["cnt65535"]), "-c", "copy", str(again))
    parts = [rewritten["cnt65535"], other, again]

    def first_sps(path: Path) -> tuple[int, int] | None:
        with av.open(str(path)) as container:
            packet = next(container.demux(video=0))
            units = nal_units(bytes(packet), None)
        return next(sps_frame_num_bits(unit) for unit in units if unit and unit[0] & 0x1F == 7)

    assert [first_sps(part) for part in parts] == [(0, 4), (0, 5), (0, 4)]
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(part.read_bytes() for part in parts))
    alone = [video_zoo.sequential(part) for part in parts]
    assert 0 < len(alone[2]) < FRAMES - 37 and video_zoo.read_index(alone[2][0]) > 37  # shown from a refresh on
    cli = [frame for frames in alone for frame in frames]
    record, stored = _stored(joined, strides=(1, 3))
    assert record.n_frames == len(cli)
    assert max(frame for frame, _ in stored) > len(cli) - 10
    for frame, image in stored:
        assert video_zoo.read_index(image) == video_zoo.read_index(cli[frame]), frame
        assert np.abs(image.astype(int) - cli[frame].astype(int)).mean() < 8, frame


def test_an_sps_in_new_extradata_sets_the_recovery_count_modulo(tmp_path):
    """An RTMP stream whose encoder restarts with intra refresh: an FLV whose second part's SPS
    (log2_max_frame_num 5, 320 pixels wide: x264 counts 18 pictures to complete a refresh) comes
    as the next packet's `new_extradata` side data, the first part's (4: MaxFrameNum 16) being
    the stream's extradata. The recovery count was taken modulo the first part's 16 (whole 2
    pictures after each recovery point, not 18): the last frames, decoded from the last recovery
    point, never came, and the count stopped at 46 of the CLI's 94 frames. Read from the side
    data as from in-band NAL units, the refreshes complete where the decoder's do. A decode that
    seeks past the side data (or to its own packet: FLV's demuxer then skips the sequence header)
    decoded with the first part's SPS: nothing came (a frame of the second part asked alone, none
    of 10, 46, 61); the first packet sent is now given the latest new extradata before it, and
    every frame is the CLI's."""
    import av

    from sources.video_decode import decode_frames
    from sources.video_packet_order import read_index

    video_zoo.require_ffmpeg()
    parts = [tmp_path / "before.mp4", tmp_path / "refresh.mp4"]
    video_zoo.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "4",
                     *video_zoo.X264_CLI, "-g", "2", "-bf", "0", str(parts[0]))
    video_zoo.ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-frames:v", "90", *video_zoo.X264_CLI,
                     "-x264-params", "intra-refresh=1:keyint=40", "-bf", "0", str(parts[1]))
    path = video_zoo.flv_resending_sequence_headers(parts, tmp_path / "rtmp.flv")
    with av.open(str(path)) as container:
        side = [k for k, packet in enumerate(container.demux(video=0)) if packet.has_sidedata("new_extradata")]
    assert side == [4]
    run = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True)
    cli = np.frombuffer(run.stdout, np.uint8).reshape(-1, 240, 320, 3)
    assert len(cli) == 94
    assert read_index(str(path)).recovery == ((44, 62), (84, 94))  # 84 + 18 lies past the end
    assert probe(str(path)).n_frames == len(cli)
    for i in [10, 46, 61, 62, 90, 93]:  # each alone: a seek to its start (4, 4, 4, 44, 44, 44)
        ((at, frame),) = list(decode_frames(str(path), [i], seek_bytes=0))
        assert at == i and np.abs(frame.astype(int) - cli[i]).mean() < 0.5, i
