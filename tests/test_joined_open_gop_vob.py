"""A VOB of x264 with open GOPs cut by a stream copy (`-ss 1.5 -c copy`, what users do to trim a
recording) and joined end to end (`cat part part`): its packets carry few stamps (x264 into MPEG-PS),
so the index asks the decoder the order it outputs them (`video_packet_order._decoder_order`), and the
later part opens with an open GOP. There the decoder must be drained and flushed first, as the
decoding session does at the join: carried over, the first part's frames fed its leading B-frames
and the file was refused ("the decoder gives 3 of them no frame").
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import video_zoo

from sources.video_decode import decode_frames, probe


def _cli_md5s(path) -> list[str]:
    listing = subprocess.run(["ffmpeg", "-v", "error", "-threads", "1", "-i", str(path), "-map", "0:v:0",
                              "-autoscale", "0", "-vsync", "passthrough", "-pix_fmt", "rgb24", "-f", "framemd5", "-"],
                             capture_output=True, text=True, check=True).stdout
    return [line.split(",")[5].strip() for line in listing.splitlines() if line and not line.startswith("#")]



def _cut_at_1_5_s(tmp_path: Path, gop: str, b_frames: str, x264_params: str) -> Path:
    """80 frames of x264 (`-g gop -bf b_frames`, its `x264_params`) into VOB, cut at 1.5 s by the
    CLI's stream copy (`-ss 1.5 -c copy`): the cut's path."""
    video_zoo.require_ffmpeg()
    whole, part = tmp_path / "whole.vob", tmp_path / "cut.vob"
    video_zoo.ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x120:r=25", "-frames:v", "80", "-c:v", "libx264",
                     "-threads", "1", "-pix_fmt", "yuv420p", "-g", gop, "-bf", b_frames,
                     "-x264-params", x264_params, "-f", "vob", str(whole))
    video_zoo.ffmpeg("-ss", "1.5", "-i", str(whole), "-c", "copy", "-f", "vob", str(part))
    return part


def test_a_vob_joined_to_its_open_gop_cut_gives_each_part_as_alone(tmp_path):
    """80 frames of x264 (`open-gop=1`, a key frame every 10, 2 B-frames, AUDs as DVD authoring
    writes) into VOB, cut at 1.5 s by a stream copy: the cut opens with an open GOP (a key frame that
    is no IDR, its leading B-frames hidden as at a file's start). The cut joined to itself gives each
    part's 40 frames as the CLI shows the cut alone, frames picked across the join too."""
    part = _cut_at_1_5_s(tmp_path, "10", "2", "aud=1:open-gop=1:keyint=10:min-keyint=10:scenecut=0")
    joined = tmp_path / "joined.vob"
    joined.write_bytes(part.read_bytes() * 2)
    expected = _cli_md5s(part) * 2
    assert len(expected) == 80
    info = probe(str(joined))
    assert (info.n_frames, info.restamped) == (80, "joined")
    got = {i: hashlib.md5(f.tobytes()).hexdigest() for i, f in decode_frames(str(joined), range(80))}
    assert got == dict(enumerate(expected))
    picked = [39, 40, 41, 79]
    got = {i: hashlib.md5(f.tobytes()).hexdigest() for i, f in decode_frames(str(joined), picked, seek_bytes=0)}
    assert got == {i: expected[i] for i in picked}


def test_an_open_gop_vob_cut_whose_stamped_leading_frame_is_dropped_gives_the_cli_frames(tmp_path):
    """x264 with open GOPs, 3 B-frames in a pyramid, a key frame every 20 (`-g 20 -bf 3`), into VOB,
    cut at 1.5 s by a stream copy: the cut's one leading B-frame that carries a stamp (most carry
    none) references the GOP cut away, and the decoder gives it no frame, as the CLI shows none.
    It was counted and named all the same (41 frames where the CLI shows 40, the 17th missing
    when decoded); it is hidden, and the cut joined to itself gives each part as the cut alone. The
    frames are timed a frame apart (the step taken from the decoder's output order)."""
    part = _cut_at_1_5_s(tmp_path, "20", "3", "open-gop=1:scenecut=0")
    expected = _cli_md5s(part)
    assert len(expected) == 40
    info = probe(str(part))
    assert (info.n_frames, info.restamped) == (40, "split")
    assert info.times == tuple(round(k * 0.04, 6) for k in range(40))  # 1 packet in 9 stamped: 0.36 s apart before
    got = {i: hashlib.md5(f.tobytes()).hexdigest() for i, f in decode_frames(str(part), range(40))}
    assert got == dict(enumerate(expected))
    joined = tmp_path / "joined.vob"
    joined.write_bytes(part.read_bytes() * 2)
    info = probe(str(joined))
    assert (info.n_frames, info.restamped) == (80, "joined")
    picked = [0, 16, 39, 40, 56, 79]
    got = {i: hashlib.md5(f.tobytes()).hexdigest() for i, f in decode_frames(str(joined), picked)}
    assert got == {i: (expected * 2)[i] for i in picked}


def test_an_open_gop_vob_cut_whose_unstamped_leading_frame_is_dropped_gives_the_cli_frames(tmp_path):
    """The same x264 recipe, 100 frames, cut by an output seek (`-i whole -ss 1.5 -c copy`): the
    leading B-frame the decoder gives no frame carries no stamp (the usual case), so the cut was
    refused ("27 packets carry no time stamp and the decoder gives 1 of them no frame"). It is
    hidden as the stamped one is: 40 frames equal to the CLI's, and the whole VOB joined to the cut
    gives each part as alone (100 + 40)."""
    video_zoo.require_ffmpeg()
    whole, part = tmp_path / "whole.vob", tmp_path / "cut.vob"
    video_zoo.ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x120:r=25", "-frames:v", "100", "-c:v", "libx264",
                     "-threads", "1", "-pix_fmt", "yuv420p", "-g", "20", "-bf", "3",
                     "-x264-params", "open-gop=1:scenecut=0", "-f", "vob", str(whole))
    video_zoo.ffmpeg("-i", str(whole), "-ss", "1.5", "-c", "copy", "-f", "vob", str(part))
    expected = _cli_md5s(part)
    assert len(expected) == 40
    info = probe(str(part))
    assert (info.n_frames, info.restamped) == (40, "split")
    assert info.times == tuple(round(k * 0.04, 6) for k in range(40))
    got = {i: hashlib.md5(f.tobytes()).hexdigest() for i, f in decode_frames(str(part), range(40))}
    assert got == dict(enumerate(expected))
    joined = tmp_path / "joined.vob"
    joined.write_bytes(whole.read_bytes() + part.read_bytes())
    expected = _cli_md5s(whole) + expected
    info = probe(str(joined))
    assert (info.n_frames, info.restamped) == (140, "joined")
    picked = [0, 99, 100, 101, 139]
    got = {i: hashlib.md5(f.tobytes()).hexdigest() for i, f in decode_frames(str(joined), picked)}
    assert got == {i: expected[i] for i in picked}
