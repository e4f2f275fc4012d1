"""A decode that starts past frame 0 gives the frames a player shows, where FFmpeg hands state over
with the stream's first packet alone (`DecodeSession._prime`): a pal8 AVI's palette, an H.264
display-orientation SEI sent with the first key frame. Such a start is the decord-to-PyAV hand-off's
(`sources.video`), whose retry decodes only the frames decord did not give."""

from __future__ import annotations

import numpy as np
import video_zoo

from sources.video_decode import decode_frames

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
