"""A decode that starts past frame 0 gives the frames a player shows, where FFmpeg hands state over
with the stream's first packet alone (`DecodeSession._prime`): a pal8 AVI's palette, an H.264
display-orientation SEI sent with the first key frame. Such a start is the decord-to-PyAV hand-off's
(`sources.video`), whose retry decodes only the frames decord did not give."""

from __future__ import annotations

import av
import numpy as np
import pytest
import video_zoo

from sources import video_session
from sources.video_decode import decode_frames
from sources.video_first_state import needs_prime

_SOURCE = ("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:d=2")


def test_a_pal8_avi_decoded_from_frame_30_keeps_its_palette(tmp_path):
    path = tmp_path / "pal8.avi"
    video_zoo.ffmpeg(*_SOURCE, "-vf", "format=pal8", "-c:v", "rawvideo", "-pix_fmt", "pal8", str(path))
    shown = video_zoo.sequential(path)  # what the ffmpeg CLI shows
    alone = dict(decode_frames(str(path), [30]))[30]
    assert np.array_equal(alone, dict(decode_frames(str(path), [0, 30]))[30])
    assert np.array_equal(alone, shown[30])  # it was a palette of zeros: 63 off in mean


def test_an_h264_display_orientation_sei_turns_frames_decoded_from_a_later_key_frame(tmp_path):
    made, path = tmp_path / "made.mp4", tmp_path / "turned.mp4"
    video_zoo.ffmpeg(*_SOURCE, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "10", str(made))
    video_zoo.ffmpeg("-i", str(made), "-c", "copy", "-bsf:v", "h264_metadata=display_orientation=insert:rotate=90",
                     str(path))
    turned = dict(decode_frames(str(path), [0, 25]))
    assert turned[0].shape == turned[25].shape == (64, 48, 3)  # the stream's turn: its first frame's
    alone = dict(decode_frames(str(path), [25]))[25]
    assert alone.shape == (64, 48, 3)  # it was 48x64, unturned
    assert np.array_equal(alone, turned[25])


def test_frames_of_the_first_gop_are_turned_by_its_key_frames_sei(tmp_path):
    """No prime there (the decode starts at frame 0): the turn is the decoder's first output's, not
    that of the first frame delivered (frame 1 or 5 alone came out 48x64, unturned)."""
    made, path = tmp_path / "made.mp4", tmp_path / "turned.mp4"
    video_zoo.ffmpeg(*_SOURCE, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "10", str(made))
    video_zoo.ffmpeg("-i", str(made), "-c", "copy", "-bsf:v", "h264_metadata=display_orientation=insert:rotate=90",
                     str(path))
    turned = dict(decode_frames(str(path), [0, 1, 5]))
    for k in (1, 5):
        alone = dict(decode_frames(str(path), [k]))[k]
        assert alone.shape == (64, 48, 3) and np.array_equal(alone, turned[k])


@pytest.mark.parametrize(("encoder", "name"), [("libx264", "plain.mp4"), ("libx264", "plain.ts"),
                                               ("libx265", "plain.mp4")])
def test_a_first_packet_handing_nothing_over_is_not_decoded(tmp_path, monkeypatch, encoder, name):
    """Decoding the first key frame for every session cost ~140 ms on a 1080p HEVC file: only a
    palette or an orientation SEI (`needs_prime`) is worth it. The frames are the CLI's still."""
    path = tmp_path / name
    video_zoo.ffmpeg(*_SOURCE, "-c:v", encoder, "-pix_fmt", "yuv420p", "-g", "10", str(path))
    judged = []

    def spy(*args):
        judged.append(needs_prime(*args))
        return judged[-1]

    monkeypatch.setattr(video_session, "needs_prime", spy)
    alone = dict(decode_frames(str(path), [25]))[25]
    assert judged == [False]
    assert np.array_equal(alone, video_zoo.sequential(path)[25])


def test_the_first_packet_is_decoded_where_it_holds_an_orientation_sei(tmp_path):
    made, path = tmp_path / "made.mp4", tmp_path / "turned.mp4"
    video_zoo.ffmpeg(*_SOURCE, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "10", str(made))
    video_zoo.ffmpeg("-i", str(made), "-c", "copy", "-bsf:v", "h264_metadata=display_orientation=insert:rotate=90",
                     str(path))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        first, second = [bytes(p) for p, _ in zip(container.demux(stream), range(2))]
        context = stream.codec_context
        assert needs_prime("h264", context.pix_fmt, context.extradata, first)
        assert not needs_prime("h264", context.pix_fmt, context.extradata, second)
    with av.open(str(made)) as container:  # x264's first packet: its settings' SEI, no orientation
        assert not needs_prime("h264", context.pix_fmt, context.extradata, bytes(next(container.demux(video=0))))
