"""Animated GIFs read as videos (TGIF): their decoding cost judged from the header and blocks before
FFmpeg decodes them (`sources.video_gif`), and their decoder's memory as measured."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from sources.budget import cpu_budget
from sources.records import Reject
from sources.video import VideoSource
from sources.video_decode import decode_frames, probe
from sources.video_gif import judge_gif
from sources.video_open import VideoError


def _read(path: Path, **limits) -> list:
    return list(VideoSource("gif", str(path.parent), strides=(1,), frames=2, **limits).read(str(path)))


def _screen(path: Path, width: int, height: int, frames: int = 2) -> Path:
    """ImageMagick's GIF of `frames` 2x2 pictures on a `width` x `height` logical screen."""
    colours = ["xc:red", "xc:blue", "xc:lime", "xc:yellow"][:frames]
    subprocess.run(["convert", "-size", "2x2", *colours, "-repage", f"{width}x{height}+0+0", "-set", "delay", "4",
                    str(path)], check=True)
    return path


def test_a_gif_whose_screen_times_frames_cannot_decode_in_its_budget_is_refused_before_decoding(tmp_path):
    """FFmpeg paints every frame of a GIF on a full copy of its screen, and the probe decodes them
    all (one key frame): a 230 KB GIF of a 4000x4000 screen and 10,000 1x1 frames held it 300 s,
    found only by decoding. The CLI's GIF of 250 unchanged 1000x1000 frames (a 1x1 rectangle each
    after the first, 12 KB) costs 2.5e8 screen pixels: over a budget of 0.02 CPU seconds it is
    refused, judged from its blocks, never started in the decoding process."""
    gif = tmp_path / "still_screen.gif"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=white:s=1000x1000:r=25", "-frames:v", "250",
                    "-pix_fmt", "rgb8", str(gif)], check=True)
    (reject,) = _read(gif, limits=cpu_budget(0.02, 1536, 3.0))
    assert isinstance(reject, Reject) and reject.reason == "decode_timeout", reject
    assert "250 frames of a 1000x1000 GIF screen" in reject.detail and "judged before decoding" in reject.detail
    (record,) = _read(gif)  # within the default budget: read
    assert not isinstance(record, Reject), record
    # each frame costs 10 us at least, however small the screen (FFmpeg's demuxing and decoding, the
    # view of a 256-colour GIF): 2,000 frames of a 2x2 screen were judged 2e-6 s, and took 0.13 CPU-s
    tiny = tmp_path / "tiny_screen.gif"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=white:s=2x2:r=100:d=20", "-pix_fmt", "rgb8",
                    str(tiny)], check=True)
    judge_gif(str(tiny), 10**9, 0.03)
    with pytest.raises(VideoError) as refused:
        judge_gif(str(tiny), 10**9, 0.01)
    assert refused.value.reason == "decode_timeout" and "2000 frames of a 2x2 GIF screen" in refused.value.detail


def test_a_gif_screen_over_max_pixels_is_too_large_not_a_stream_without_a_size(tmp_path):
    """A 30000x30000 screen (2 frames of 2x2 pixels, ImageMagick `-repage`): FFmpeg refuses its size
    (over 2^31 bytes) and the stream seemed to declare none (`unsupported_container`)."""
    (reject,) = _read(_screen(tmp_path / "huge.gif", 30000, 30000))
    assert isinstance(reject, Reject) and reject.reason == "video_too_large", reject
    assert "30000x30000" in reject.detail and "max_pixels=178956970" in reject.detail


def test_a_gif_screen_is_judged_by_the_frames_its_decoder_holds(tmp_path):
    """FFmpeg's GIF decoder holds its screen, the frame handed out and a disposal copy: a 4000x4000
    probe rose 139 MB, decoding 3 frames 231 MB with their RGB. Judged as 18 frames held, a
    5000x5000 screen (100 MB a frame) was refused `video_too_large` within 1536 MiB."""
    info = probe(str(_screen(tmp_path / "wide.gif", 5000, 5000)))
    assert (info.width, info.height, info.n_frames) == (5000, 5000, 2)


def _coalesced(path: Path, width: int, height: int) -> np.ndarray:
    """Every frame as ImageMagick composites it (GIF disposal as browsers apply it), on white."""
    raw = subprocess.run(["convert", str(path), "-coalesce", "-background", "white", "-alpha", "remove", "rgb:-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3).copy()


# the first frame: a grey screen (a global table of a few colours), or a photo dithered to 256
# colours (ImageMagick's own `rose:`: a global table of 256) leaving a 4-pixel border of the screen
GREY_SCREEN = ("-size", "64x48", "xc:gray")
PHOTO_256 = ("rose:", "-resize", "56x40!", "-colors", "256", "-repage", "64x48+4+4")


@pytest.mark.parametrize(("dispose", "first"), [("Background", GREY_SCREEN), ("Previous", GREY_SCREEN),
                                                ("None", GREY_SCREEN), ("Background", PHOTO_256)])
def test_gif_frames_are_composited_as_browsers_and_imagemagick_show_them(tmp_path, dispose: str, first: tuple):
    """A sprite moving over a 64x48 screen, each frame opaque, disposed to the background
    (`-dispose Background`), to the previous frame, or kept. FFmpeg painted a disposed area the
    screen's background colour (the grey), opaque, where browsers and ImageMagick clear it to
    transparent (shown white). Every frame equals ImageMagick's `-coalesce` on white. Over a
    photo whose global table holds all 256 colours no index is left past the table to clear the
    background with (`gif_screen.ClearedBackground`): its disposed areas, and the screen's border
    that no frame covers, were the table's background colour (45,44,43), opaque. The border is
    white, as browsers show the screen before the first frame and as for any smaller table
    (ImageMagick's `-coalesce` alone paints it the background colour)."""
    gif = tmp_path / f"sprite_{dispose}.gif"
    subprocess.run(["convert", "-dispose", "None", *first, "-dispose", dispose,
                    "(", "-size", "16x16", "xc:red", "-repage", "64x48+0+0", ")",
                    "(", "-size", "16x16", "xc:blue", "-repage", "64x48+20+10", ")",
                    "(", "-size", "16x16", "xc:lime", "-repage", "64x48+40+30", ")",
                    "(", "-size", "8x8", "xc:yellow", "-repage", "64x48+2+2", ")",
                    "-set", "delay", "10", str(gif)], check=True)
    expected = _coalesced(gif, 64, 48)
    if first == PHOTO_256:
        assert gif.read_bytes()[10] & 0x87 == 0x87  # a global table of 256 colours
        border = np.ones((5, 48, 64), bool)
        border[:, 4:44, 4:60] = False
        border &= (expected == (45, 44, 43)).all(-1)  # ImageMagick: the background colour
        assert border[0].sum() == 64 * 48 - 56 * 40
        expected[border] = 255
    got = dict(decode_frames(str(gif), range(len(expected))))
    assert len(got) == len(expected) == 5
    for i, frame in got.items():
        assert np.array_equal(frame, expected[i]), (dispose, i, np.argwhere((frame != expected[i]).any(-1))[:3])


@pytest.mark.parametrize(("delay", "step"), [(0, 0.1), (1, 0.1), (2, 0.02), (4, 0.04)])
def test_gif_delays_under_two_centiseconds_are_shown_for_ten_as_browsers_do(tmp_path, delay: int, step: float):
    """ImageMagick's `-delay 1` GIF: browsers and the ffmpeg 5.1 CLI (ffprobe) show each frame
    10 cs; FFmpeg 8's demuxer (PyAV's) makes only a 0 delay 10, so its frames were timed 0.01 s
    apart (fps 100 in the lineage). A delay of 2 cs and more is kept."""
    gif = tmp_path / f"delay{delay}.gif"
    subprocess.run(["convert", "-delay", str(delay), "-size", "8x8", "xc:red", "xc:blue", "xc:lime", str(gif)],
                   check=True)
    info = probe(str(gif))
    assert info.times == pytest.approx((0.0, step, 2 * step)) and info.fps == pytest.approx(1 / step)


def _counted_store(protocol: str, data: bytes) -> list[int]:
    """An fsspec store under `protocol` whose every file holds `data`; returns the list each
    fetch's size is appended to (a remote store's ranged GETs)."""
    from fsspec.registry import register_implementation
    from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

    fetched: list[int] = []

    class CountedFile(AbstractBufferedFile):
        def _fetch_range(self, start, end):
            fetched.append(min(end, len(data)) - start)
            return data[start:end]

    class CountedStore(AbstractFileSystem):
        def info(self, path, **kw):
            return {"name": path, "size": len(data), "type": "file", "mtime": 0}

        def _open(self, path, mode="rb", block_size=None, **kw):
            return CountedFile(self, path, mode, block_size=block_size or "default", size=len(data), **kw)

    CountedStore.protocol = protocol
    register_implementation(protocol, CountedStore, clobber=True)
    return fetched


def test_the_first_bytes_sniffs_of_a_remote_video_fetch_only_those_bytes(tmp_path):
    """Each sniff of what a video is (WebP's or a GIF's in the probe, a GIF to clear on each open)
    read a remote video through fsspec's 5 MiB read-ahead: 3 blocks, about
    15 MiB, for an ordinary mp4's probe. Each fetches only the bytes it reads."""
    from sources.video_open import _gif_cleared
    from sources.video_webp import _first_bytes

    data = b"\x00\x00\x00\x20ftypisom" + bytes(6 << 20)  # an mp4's head, 6 MiB long
    fetched = _counted_store("uvdcounted", data)
    uri = "uvdcounted://bucket/clip.mp4"
    judge_gif(uri, 10**9, 600)
    assert _first_bytes(uri) == data[:13] and _gif_cleared(uri) is None
    assert sum(fetched) <= 64, fetched
    # one task of a decode worker (`budget._serve`: `heads_read_once`) sniffs a file once: a probe
    # read the 13 bytes, then again at each of its 3 opens (`open_stream`), a fetch each
    from sources import fsio

    fetched.clear()
    with fsio.heads_read_once():
        assert _first_bytes(uri) == data[:13]
        assert [_gif_cleared(uri) for _ in range(3)] == [None] * 3
        judge_gif(uri, 10**9, 600)
    assert fetched == [13], fetched
    short = tmp_path / "short.gif"  # shorter than a sniff: the whole file held, never read again
    short.write_bytes(b"GIF89a")
    with fsio.heads_read_once():
        assert fsio.head_bytes(str(short), 13) == b"GIF89a"
        short.write_bytes(b"changed")
        assert fsio.head_bytes(str(short), 6) == fsio.head_bytes(str(short), 13) == b"GIF89a"
    assert fsio.head_bytes(str(short), 13) == b"changed"


def test_a_remote_gif_of_256_colours_is_fetched_once(tmp_path):
    """The view giving a 256-colour GIF's table to each image (`gif_screen.LocalTables`) walked the
    blocks a step ahead of its reads on the same handle, moving fsspec's 5 MiB read-ahead back and
    forth: ffmpeg's GIF of 64 noise frames (5.76 MB, read whole in FFmpeg's 32 KiB reads) was
    fetched 6.42 MB in 4 fetches (an 18.2 MB one 31.5 MB); now once, as a GIF of fewer colours is."""
    from sources.video_open import _gif_cleared

    noise = np.random.default_rng(0).integers(0, 256, (64, 256, 256), np.uint8).tobytes()
    data = subprocess.run(["ffmpeg", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb8", "-s", "256x256", "-i", "-",
                           "-pix_fmt", "rgb8", "-f", "gif", "-"], input=noise, capture_output=True, check=True).stdout
    assert data[10] & 0x87 == 0x87 and len(data) > 5 << 20  # a global table of 256 colours, past a read-ahead
    fetched = _counted_store("uvdcountedgif", data)
    view = _gif_cleared("uvdcountedgif://bucket/noise.gif")
    read = sum(iter(lambda: len(view.read(32768)), 0))
    assert read == len(data) + 63 * 768  # a table given to each frame but the first, which has its own
    assert sum(fetched) == len(data) + 13, fetched  # the sniff's 13 bytes, then the file once
