"""Videos with an alpha channel, as editors export stickers and overlays (QuickTime RLE `argb`,
ProRes 4444 `yuva444p10le`, VP8/VP9 WebM with `alpha_mode` 1), are shown composited on white, as the project shows a transparent
image, GIF or animated WebP: their transparent half came out on whatever colour the encoder kept
under it (black here, a mean of 0.2 where the same clip as a GIF or WebP gave 254.8). Judged
against the ffmpeg CLI's own composite of each frame over white (`overlay` in RGB)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import video_zoo

from sources.video import probe_video
from sources.video_decode import decode_frames
from sources.video_open import open_stream
from sources.video_packet_order import read_index
from sources.video_display import has_alpha
from sources.video_memory import ALPHA_CONVERSION_BYTES, RGB_CONVERSION_BYTES, judge_memory, judge_stream

W, H, FRAMES = 96, 64, 10
_ffmpeg = video_zoo.ffmpeg


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """testsrc2 with its top half opaque and its bottom half transparent, in two codecs."""
    video_zoo.require_ffmpeg()
    folder = tmp_path_factory.mktemp("alpha")
    _ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate=10:duration=1", "-vf",
            "format=rgba,geq=r='r(X,Y)':g='g(X,Y)':b='b(X,Y)':a='if(lt(Y,32),255,0)'", "-c:v", "qtrle",
            str(folder / "qtrle.mov"))
    _ffmpeg("-i", str(folder / "qtrle.mov"), "-c:v", "prores_ks", "-profile:v", "4444", "-pix_fmt", "yuva444p10le",
            str(folder / "prores4444.mov"))
    for codec in ("libvpx", "libvpx-vp9"):  # as the ffmpeg CLI writes a transparent WebM (a video sticker)
        _ffmpeg("-i", str(folder / "qtrle.mov"), "-c:v", codec, "-pix_fmt", "yuva420p", "-auto-alt-ref", "0", "-b:v", "1M",
                str(folder / f"{codec}.webm"))
    return {**{name: folder / f"{name}.mov" for name in ("qtrle", "prores4444")},
            **{name: folder / f"{name}.webm" for name in ("libvpx", "libvpx-vp9")}}


def _on_white_by_the_cli(path: Path) -> np.ndarray:
    # the CLI keeps a WebM's alpha only when told libvpx's decoder (its own VP8/VP9 decoders drop it)
    decoder = ["-c:v", path.stem] if path.suffix == ".webm" else []
    done = subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"color=white:size={W}x{H}:rate=10",
                           *decoder, "-i", str(path), "-filter_complex",
                           "[0]format=rgba[bg];[1]format=rgba[fg];[bg][fg]overlay=shortest=1:format=rgb,format=rgb24",
                           "-f", "rawvideo", "-"], check=True, capture_output=True)
    return np.frombuffer(done.stdout, np.uint8).reshape(-1, H, W, 3)


@pytest.mark.parametrize("name, tolerance", [("qtrle", 0), ("prores4444", 2), ("libvpx", 0), ("libvpx-vp9", 0)])
def test_a_transparent_video_is_shown_on_white(clips, name, tolerance):
    reference = _on_white_by_the_cli(clips[name])
    frames = dict(decode_frames(str(clips[name]), range(FRAMES)))
    assert sorted(frames) == list(range(FRAMES)) and len(reference) == FRAMES
    for index, frame in frames.items():
        assert frame.shape == (H, W, 3)
        assert frame[H // 2 :].min() == 255  # the transparent half: white (was the black under it)
        assert np.abs(frame.astype(int) - reference[index]).max() <= tolerance, (name, index)


@pytest.mark.parametrize("name", ["libvpx", "libvpx-vp9"])
def test_a_transparent_webm_is_probed_judged_and_decoded_with_its_alpha(clips, name):
    """FFmpeg's own VP8/VP9 decoders drop a WebM's alpha (BlockAdditional): the transparent half
    came out as the colour the encoder kept under it. Its frames are libvpx's yuva420p now, judged
    as RGBA, and left to PyAV where decord (FFmpeg's decoders) would drop the alpha."""
    probe = probe_video(str(clips[name]), "decord")
    assert (probe.decoder, probe.info.pixel_format, probe.n_frames) == ("pyav", "yuva420p", FRAMES)
    assert probe.note == "decord is not frame-exact here (an alpha channel (yuva420p), shown on white by PyAV): PyAV decodes"
    index = read_index(str(clips[name]))
    assert index.alpha  # every packet carries its alpha picture
    container, stream = open_stream(str(clips[name]))
    try:
        judged = judge_stream(stream, 1 << 30, 4096, alpha=index.alpha)
    finally:
        container.close()
    assert judged.conversion_bytes == W * H * (ALPHA_CONVERSION_BYTES + 3)  # and the copy a turned frame needs


def test_a_webm_declaring_alpha_without_it_throughout_is_decoded_opaque_whole(clips, tmp_path):
    """libvpx's decoder refuses a packet without its alpha picture once it has seen one: a WebM of
    a transparent clip joined to an opaque one (`ffmpeg -f concat -c copy`) lost the second clip's
    frames without a word (20 of 40 decoded); a WebM tagged `alpha_mode` 1 with no alpha picture
    was judged as RGBA and kept from decord (rev54a). Both are decoded by FFmpeg's own decoder
    now, every frame, as before the alpha was read."""
    plain = tmp_path / "plain.webm"
    _ffmpeg("-i", str(clips["qtrle"]), "-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-b:v", "1M", str(plain))
    listing = tmp_path / "list.txt"
    listing.write_text(f"file '{clips['libvpx-vp9']}'\nfile '{plain}'\n")
    joined = tmp_path / "joined.webm"
    _ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(joined))
    tagged = tmp_path / "tagged.webm"
    _ffmpeg("-i", str(clips["qtrle"]), "-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-metadata:s:v:0", "alpha_mode=1",
            "-b:v", "1M", str(tagged))
    for path, frames in ((joined, 2 * FRAMES), (tagged, FRAMES)):
        assert not read_index(str(path)).alpha
        probe = probe_video(str(path), "pyav")
        assert (probe.info.pixel_format, probe.n_frames) == ("yuv420p", frames)
        assert sorted(dict(decode_frames(str(path), range(frames)))) == list(range(frames)), path


def test_alpha_frames_are_judged_with_their_rgba_conversion():
    assert has_alpha("argb") and has_alpha("yuva444p12le") and not has_alpha("yuv420p") and not has_alpha("nonsense")
    plain = judge_memory(1920, 1080, "yuv420p", "h264", 40, False)
    alpha = judge_memory(1920, 1080, "yuva420p", "h264", 40, False)
    assert alpha.conversion_bytes - plain.conversion_bytes == 1920 * 1080 * (ALPHA_CONVERSION_BYTES - RGB_CONVERSION_BYTES)


def test_an_alpha_of_zero_throughout_is_a_32_bit_avis_unused_byte(tmp_path):
    """An uncompressed 32-bit AVI (`bgra`) whose fourth byte is 0 everywhere: a DIB's unused byte,
    which FFmpeg's BMP decoder and Pillow take as opaque; it came out as a white frame."""
    video_zoo.require_ffmpeg()
    path = tmp_path / "bgra.avi"
    _ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate=10:duration=1", "-vf",
            "format=rgba,geq=r='r(X,Y)':g='g(X,Y)':b='b(X,Y)':a='0'", "-c:v", "rawvideo", "-pix_fmt", "bgra", str(path))
    opaque = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                            check=True, capture_output=True).stdout
    reference = np.frombuffer(opaque, np.uint8).reshape(-1, H, W, 3)
    frames = dict(decode_frames(str(path), range(FRAMES)))
    assert all(np.array_equal(frames[i], reference[i]) for i in range(FRAMES))
    assert reference[0].std() > 20  # a picture, not one colour
