"""Animated WebP read as video (`sources.video_webp`): GIPHY-style and web-crawled video datasets
ship it, and the FFmpeg PyAV bundles cannot decode it. Files made as the world makes them
(libwebp's img2webp and gif2webp, or ImageMagick where those are missing; Pillow's writer), read
back against ImageMagick's own compositing (`convert x.webp -coalesce`) and `webpmux -info`.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sources import video_webp
from sources.budget import Budget
from sources.records import Reject, VideoRecord
from sources.video import VideoSource, clip_frames, read_clip_frames, video_budget
from sources.video_open import VideoError
from uvd_pipeline.render import RenderSettings, decode_png, render_clip

N = 18  # frames of each animation: one 16-frame clip at stride 1


def _pngs(folder: Path) -> list[Path]:
    """Opaque frames of a square moving over a background, a dot jumping about."""
    paths = []
    for i in range(N):
        image = Image.new("RGB", (40, 30), (10, 20, 120))
        draw = ImageDraw.Draw(image)
        draw.rectangle([i, 5, i + 8, 15], fill=(250, 220, 0))
        draw.point((i % 7, 20 + i % 5), fill=(255, 0, 0))
        paths.append(folder / f"f{i:02d}.png")
        image.save(paths[-1])
    return paths


def _img2webp(pngs: list[Path], out: Path) -> None:
    """Two delays (40 ms, then 100 ms): libwebp's img2webp, else ImageMagick (both WebPAnimEncoder)."""
    if shutil.which("img2webp"):
        subprocess.run(["img2webp", "-lossless", "-d", "40", *map(str, pngs[:10]), "-d", "100",
                        *map(str, pngs[10:]), "-o", str(out)], check=True, capture_output=True)
    else:
        subprocess.run(["convert", "-delay", "4", *map(str, pngs[:10]), "-delay", "10", *map(str, pngs[10:]),
                        "-define", "webp:lossless=true", str(out)], check=True)


def _gif2webp(pngs: list[Path], out: Path) -> None:
    """An ImageMagick-optimised GIF (`-layers Optimize`: frames cropped to what changed, painting
    only that) made WebP."""
    gif = out.parent.parent / "optimised.gif"  # kept, outside the folder: a GIF named .webp below
    subprocess.run(["convert", "-delay", "4", *map(str, pngs), "-layers", "Optimize", str(gif)], check=True)
    if shutil.which("gif2webp"):
        subprocess.run(["gif2webp", "-quiet", str(gif), "-o", str(out)], check=True)
    else:
        subprocess.run(["convert", str(gif), "-define", "webp:lossless=true", str(out)], check=True)


def _pillow(out: Path) -> list[np.ndarray]:
    """Pillow's writer, transparent canvas: frames disposed to the background (`webpmux -info`);
    the frames given to it, laid on white."""
    frames = []
    for i in range(N):
        image = Image.new("RGBA", (32, 24), (0, 0, 0, 0))
        draw = ImageDraw.Draw(image)
        draw.rectangle([i, 4 + i % 3, i + 6, 12 + i % 3], fill=(250, 40, 30, 255))
        draw.point((31 - i, 20), fill=(0, 200, 0, 255))
        frames.append(image)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=[30 + 10 * (i % 2) for i in range(N)],
                   lossless=True)
    return [np.asarray(frame.convert("RGB")) ^ 255 * (np.asarray(frame)[..., 3:] == 0) for frame in frames]


def _half_transparent(folder: Path) -> list[np.ndarray]:
    """A red square at alpha 128 moving over a transparent ground with blue stored under it (kept
    by Pillow's writer with `exact`; this img2webp has no -exact), an opaque green square; the
    frames given, laid on white by Pillow's own compositing."""
    frames = []
    for i in range(N):
        image = Image.new("RGBA", (24, 16), (0, 0, 255, 0))
        draw = ImageDraw.Draw(image)
        draw.rectangle([i, 3, i + 5, 9], fill=(255, 0, 0, 128))
        draw.rectangle([18, 11, 21, 14], fill=(0, 200, 0, 255))
        frames.append(image)
    frames[0].save(folder / "alpha.webp", save_all=True, append_images=frames[1:], duration=40, lossless=True,
                   exact=True)
    white = Image.new("RGBA", (24, 16), (255, 255, 255, 255))
    return [np.asarray(Image.alpha_composite(white, frame).convert("RGB")) for frame in frames]


@pytest.fixture(scope="module")
def webps(tmp_path_factory) -> tuple[Path, dict[str, list[np.ndarray]]]:
    """The folder of animations, and the frames each was made of (lossless: what must come back)."""
    root = tmp_path_factory.mktemp("webp")
    pngs = _pngs(root)
    folder = root / "giphy"
    folder.mkdir()
    _img2webp(pngs, folder / "img2webp.webp")
    _gif2webp(pngs, folder / "gif2webp.webp")
    made = [np.asarray(Image.open(p).convert("RGB")) for p in pngs]
    return folder, {"img2webp.webp": made, "gif2webp.webp": made, "pillow.webp": _pillow(folder / "pillow.webp"),
                    "alpha.webp": _half_transparent(folder)}


def _coalesced(path: Path, tmp: Path) -> list[np.ndarray]:
    """ImageMagick's composite of every frame, laid on white."""
    subprocess.run(["convert", str(path), "-coalesce", "-background", "white", "-alpha", "remove",
                    str(tmp / f"{path.stem}_%02d.png")], check=True)
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(tmp.glob(f"{path.stem}_*.png"))]


def _durations(path: Path) -> list[int]:
    """Each frame's duration (ms) as `webpmux -info` lists it, else as Pillow gives it."""
    if shutil.which("webpmux"):
        text = subprocess.run(["webpmux", "-info", str(path)], check=True, capture_output=True, text=True).stdout
        return [int(m.group(1)) for m in re.finditer(r"^\s*\d+:\s+\d+\s+\d+\s+\w+\s+\d+\s+\d+\s+(\d+)", text, re.M)]
    return _pillow_durations(path)


def _pillow_durations(path: Path) -> list[int]:
    """Each frame's duration (ms) as Pillow (libwebp's demuxer) gives it."""
    with Image.open(path) as image:
        durations = []
        for i in range(image.n_frames):
            image.seek(i)
            image.load()
            durations.append(image.info["duration"])
        return durations


def test_a_folder_of_animated_webp_is_read_as_videos_as_libwebp_composites_them(webps, tmp_path):
    """Each frame equal to the frame the lossless file was made of (blended, disposed to the
    background; transparency on white, as stills, GIFs and browsers show it) and, for the opaque ones, to ImageMagick's composite; each
    frame's time the sum of the durations `webpmux -info` lists before it. On the old code the
    folder held "no videos". (ImageMagick 6's `-coalesce` of Pillow's file leaves a disposed
    frame's red on frames 11-15: it is not the reference there.)"""
    webps, made = webps
    source = VideoSource("giphy", str(webps), strides=(1,))
    units = source.units()
    assert sorted(Path(u).name for u in units) == ["alpha.webp", "gif2webp.webp", "img2webp.webp", "pillow.webp"]
    assert _durations(webps / "img2webp.webp") == [40] * 10 + [100] * (N - 10)
    if shutil.which("webpmux"):  # Pillow's file disposes frames to the (transparent) background
        info = subprocess.run(["webpmux", "-info", str(webps / "pillow.webp")], capture_output=True, text=True)
        assert " background " in info.stdout
    for uri in units:
        path = Path(uri)
        (record,) = list(source.read(uri))
        assert isinstance(record, VideoRecord), record
        (clip,) = record.clips
        expected = made[path.name]
        durations = _durations(path)
        assert len(expected) == len(durations) == record.n_frames == N
        assert clip.frame_times == pytest.approx([sum(durations[:i]) / 1000 for i in range(16)])
        assert clip.decoder == "pillow" and clip.lineage["container"] == "webp"
        frames = read_clip_frames(clip)
        assert all(np.array_equal(frames[k], expected[k]) for k in range(16)), path.name
        if path.name not in ("pillow.webp", "alpha.webp"):
            coalesced = _coalesced(path, tmp_path)
            assert all(np.array_equal(frames[k], coalesced[k]) for k in range(16)), path.name
    settings = RenderSettings(size=32, resize="squash", pad_value=0, max_pixels=10**8, png_compression=1, seed=0,
                              val_fraction=0.0)
    sentence = render_clip(clip, settings)
    assert len(sentence.images) == 16 and sentence.meta["decoder"] == "pillow"
    assert decode_png(sentence.images[3]).shape == (32, 32, 3)


def _chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(fourcc, offset, size) of each top-level RIFF chunk."""
    out, at = [], 12
    while at + 8 <= len(data):
        fourcc, size = struct.unpack("<4sI", data[at:at + 8])
        out.append((fourcc, at, size))
        at += 8 + size + (size & 1)
    return out


def _head(path: Path, n: int, out: Path) -> Path:
    """The first `n` bytes of `path` (`head -c`: a download stopped there)."""
    with out.open("wb") as cut:
        subprocess.run(["head", "-c", str(n), str(path)], stdout=cut, check=True)
    return out


def test_damaged_or_oversized_webp_are_counted_rejects_and_a_still_is_one_frame(webps, tmp_path):
    """A download cut short keeps the frames before the cut, as a cut MP4 or GIF does (FFmpeg's):
    img2webp's and gif2webp's files cut inside their last frame were refused whole (`unreadable`);
    they give their first 17 frames, as made, the cut counted as a cut MP4's is (`frames_total`
    17 of `frames_metadata` 18 in the lineage). A frame placed outside the canvas, a canvas past
    `max_pixels` or the memory budget (judged from the VP8X chunk before a frame is decoded), ANMF
    frames after a VP8X declaring no animation: each its own reject, the good file beside them
    still read; with max_pixels raised past Pillow's own limit, Pillow's refusal is
    `video_too_large` too. A still WebP is one frame, as a one-frame GIF."""
    webps, made = webps
    data = (webps / "img2webp.webp").read_bytes()
    folder = tmp_path / "crawl"
    folder.mkdir()
    (folder / "good.webp").write_bytes(data)
    cuts = tmp_path / "cuts"
    cuts.mkdir()
    for made_by in ("img2webp", "gif2webp"):  # the first through a whole VideoSource, the second its probe and decoding
        whole = webps / f"{made_by}.webp"
        last = [offset for fourcc, offset, _ in _chunks(whole.read_bytes()) if fourcc == b"ANMF"][-1]
        cut = _head(whole, last + 40, cuts / f"{made_by}.webp")
        times = pytest.approx([sum(_durations(whole)[:i]) / 1000 for i in range(16)])
        if made_by == "img2webp":
            (record,) = list(VideoSource("cuts", str(cuts), strides=(1,)).read(str(cut)))
            assert isinstance(record, VideoRecord) and record.n_frames == N - 1, record
            (clip,) = record.clips
            assert (clip.lineage["frames_total"], clip.lineage["frames_metadata"]) == (N - 1, N)
            assert clip.frame_times == times
            frames = read_clip_frames(clip)
        else:
            info = video_webp.probe(str(cut))
            assert (info.n_frames, info.claimed) == (N - 1, N) and list(info.times[:16]) == times
            frames = [frame for _, frame in video_webp.decode_frames(str(cut), range(16), N - 1)]
        assert len(frames) == 16 and all(np.array_equal(frames[k], made[whole.name][k]) for k in range(16)), made_by
        # cut inside the last ANMF's 8-byte header: that frame was begun, counted as the cut one
        inside = video_webp.probe(str(_head(whole, last + 6, tmp_path / f"{made_by}_header.webp")))
        assert (inside.n_frames, inside.claimed) == (N - 1, N), made_by
    (folder / "cut.webp").write_bytes(data[:len(data) // 2])  # fewer frames kept than a clip's 16
    kept = sum(fourcc == b"ANMF" and offset + 8 + size <= len(data) // 2 for fourcc, offset, size in _chunks(data))
    anmf = [offset for fourcc, offset, _ in _chunks(data) if fourcc == b"ANMF"]
    outside = bytearray(data)
    outside[anmf[3] + 8:anmf[3] + 11] = (20).to_bytes(3, "little")  # x offset 40 on a 40-wide canvas
    (folder / "outside.webp").write_bytes(bytes(outside))
    (vp8x,) = [offset for fourcc, offset, _ in _chunks(data) if fourcc == b"VP8X"]
    huge = bytearray(data)
    huge[vp8x + 12:vp8x + 18] = (16383).to_bytes(3, "little") * 2  # a 16384 x 16384 canvas: 268M pixels
    (folder / "huge.webp").write_bytes(bytes(huge))
    flagless = bytearray(data)
    flagless[vp8x + 8] &= ~0x02  # VP8X without its animation flag, its ANMF chunks after it
    (folder / "flagless.webp").write_bytes(bytes(flagless))
    wide = bytearray(data)
    wide[vp8x + 12:vp8x + 18] = (8191).to_bytes(3, "little") * 2  # 67M pixels: under max_pixels, not the budget
    (folder / "wide.webp").write_bytes(bytes(wide))
    Image.open(webps.parent / "f00.png").save(folder / "still.webp", lossless=True)
    source = VideoSource("crawl", str(folder), strides=(1,), limits=Budget(60, 1024))
    got = {Path(u).name: list(source.read(u)) for u in source.units()}
    assert isinstance(got.pop("good.webp")[0], VideoRecord)
    reasons = {name: (items[0].reason, items[0].detail) for name, items in got.items() if isinstance(items[0], Reject)}
    assert reasons.keys() == got.keys()
    assert reasons["cut.webp"] == ("too_few_frames", f"{kept} decodable frames < 16") and 0 < kept < 16
    assert reasons["outside.webp"][0] == "unreadable" and "outside the 40x30 canvas" in reasons["outside.webp"][1]
    assert reasons["huge.webp"][0] == "video_too_large" and "max_pixels" in reasons["huge.webp"][1]
    assert reasons["wide.webp"][0] == "video_too_large" and "memory_budget_mb 1024" in reasons["wide.webp"][1]
    assert reasons["flagless.webp"] == ("unreadable", "an ANMF frame in a file whose VP8X chunk declares no animation")
    with pytest.raises(VideoError) as past_pillow:  # max_pixels raised past Pillow's own limit: its refusal counted
        video_webp.probe(str(folder / "huge.webp"), max_pixels=10**9, memory_mb=10**5)
    assert past_pillow.value.reason == "video_too_large" and "DecompressionBombError" in past_pillow.value.detail
    assert reasons["still.webp"] == ("too_few_frames", "1 decodable frames < 16")


def test_what_a_webp_or_gif_is_comes_from_its_bytes_not_its_name(webps, tmp_path):
    """Crawls save a GIF as `.webp`, and a WebP as `.gif` (GIF CDNs answer a browser's
    Accept: image/webp with WebP) or `.mp4` (a clip site's URL): each read by its content, where
    one was `unreadable` (and the `.mp4` FFmpeg's `unsupported_container`: no frame size)."""
    webps, made = webps
    folder = tmp_path / "crawl"
    folder.mkdir()
    shutil.copy(webps.parent / "optimised.gif", folder / "gif_named.webp")
    shutil.copy(webps / "img2webp.webp", folder / "webp_named.gif")
    shutil.copy(webps / "img2webp.webp", folder / "webp_named.mp4")
    source = VideoSource("crawl", str(folder), strides=(1,))
    for name, decoder in (("gif_named.webp", "pyav"), ("webp_named.gif", "pillow"), ("webp_named.mp4", "pillow")):
        (record,) = list(source.read(str(folder / name)))
        assert isinstance(record, VideoRecord), record
        assert record.decoder == decoder and record.n_frames == N
        assert np.array_equal(read_clip_frames(record.clips[0])[5], made["img2webp.webp"][5])


def test_a_frame_count_past_the_memory_budget_is_judged_before_decoding():
    """Each frame costs a record (its duration, its time; libwebp's demuxer's own): a file of many
    tiny frames is judged by their count too, not by its canvas alone (1x1 here)."""
    from sources.video_memory import DECODER_BASE_MB
    from sources.video_webp import FRAME_BYTES, Layout, judge

    budget_mb = DECODER_BASE_MB + 16
    fits = (16 << 20) // FRAME_BYTES - 1000
    judge(Layout(1, 1, (40,) * fits, True, 1000), 10**8, budget_mb)
    with pytest.raises(VideoError) as refused:
        judge(Layout(1, 1, (40,) * (fits + 2000), True, 1000), 10**8, budget_mb)
    assert refused.value.reason == "video_too_large" and f"{fits + 2000} frames" in refused.value.detail


def test_decode_time_of_small_frames_on_a_large_canvas_is_judged_before_decoding(webps, tmp_path):
    """Each frame costs the whole canvas (libwebp composites onto it and hands it over), however
    small its rectangle: a clip of 16 frames of a 2000x2000 canvas needs at least 16 x 4M pixels x
    `FRAME_PIXEL_NS` CPU seconds, refused `decode_timeout` before any frame is decoded (the budget
    not spent first), where the worker's own measure gave `over the budget` after spending it."""
    webps, _ = webps
    data = bytearray((webps / "img2webp.webp").read_bytes())
    (vp8x,) = [offset for fourcc, offset, _ in _chunks(bytes(data)) if fourcc == b"VP8X"]
    data[vp8x + 12:vp8x + 18] = (1999).to_bytes(3, "little") * 2  # the 40x30 frames on a 2000x2000 canvas
    folder = tmp_path / "crawl"
    folder.mkdir()
    (folder / "large_canvas.webp").write_bytes(bytes(data))
    source = VideoSource("crawl", str(folder), strides=(1,))
    (record,) = list(source.read(str(folder / "large_canvas.webp")))
    assert isinstance(record, VideoRecord), record
    ((clip, error),) = list(clip_frames(dataclasses.replace(record, limits=video_budget(0.2, 1536))))
    assert isinstance(error, VideoError) and error.reason == "decode_timeout", error
    assert error.detail.startswith("judged before decoding: 16 frames of a 2000x2000 canvas"), error.detail


def test_an_anmf_chunk_without_an_image_is_no_frame_as_libwebp_reads_it(webps, tmp_path):
    """An ANMF chunk of its header alone (a muxer's slip): libwebp's demuxer drops it, and its
    duration with it, so the frames and their times are the other 18, as Pillow (libwebp) counts
    and times them; a layout libwebp counts otherwise is `unreadable`, not frames given wrong times."""
    from sources.video_webp import _composited

    webps, made = webps
    data = (webps / "img2webp.webp").read_bytes()
    fifth = [offset for fourcc, offset, _ in _chunks(data) if fourcc == b"ANMF"][5]
    empty = b"ANMF" + struct.pack("<I", 16) + bytes(12) + (999).to_bytes(3, "little") + b"\x00"  # 1x1 at 0,0; 999 ms
    forged = bytearray(data[:fifth] + empty + data[fifth:])
    forged[4:8] = struct.pack("<I", len(forged) - 8)
    path = tmp_path / "empty_anmf.webp"
    path.write_bytes(bytes(forged))
    durations = _pillow_durations(path)
    assert durations == [40] * 10 + [100] * (N - 10)
    (record,) = list(VideoSource("crawl", str(tmp_path), strides=(1,)).read(str(path)))
    assert isinstance(record, VideoRecord) and record.n_frames == N, record
    (clip,) = record.clips
    assert clip.frame_times == pytest.approx([sum(durations[:i]) / 1000 for i in range(16)])
    frames = read_clip_frames(clip)
    assert all(np.array_equal(frames[k], made["img2webp.webp"][k]) for k in range(16))
    with pytest.raises(VideoError) as miscounted:
        next(_composited(bytes(forged), 1, N + 1))
    assert miscounted.value.reason == "unreadable" and f"counts {N} frames, the RIFF chunks {N + 1}" in miscounted.value.detail


def test_frames_stored_for_10_ms_or_less_are_shown_100_ms_as_browsers_and_the_gif_path_do(webps, tmp_path):
    """Pillow's writer and ad-makers store 0 ms ("as fast as you can"); browsers show a frame of
    10 ms or less for 100 ms, GIF and WebP alike, and the GIF path (FFmpeg's demuxer) does the
    same for a GIF of delay 0 (Pillow's GIF writer; `identify -format %T` reads 0): the times
    match. 20 ms stays 20 ms."""
    webps, _ = webps
    pngs = sorted(webps.parent.glob("f*.png"))
    frames = [Image.open(p) for p in pngs]
    folder = tmp_path / "crawl"
    folder.mkdir()
    frames[0].save(folder / "fast.webp", save_all=True, append_images=frames[1:], lossless=True,
                   duration=[0] * 6 + [10] * 6 + [20] * 6)
    frames[0].save(folder / "zero.gif", save_all=True, append_images=frames[1:], duration=0)
    source = VideoSource("crawl", str(folder), strides=(1,))
    times = {}
    for name in ("fast.webp", "zero.gif"):
        (record,) = list(source.read(str(folder / name)))
        assert isinstance(record, VideoRecord), record
        times[name] = record.clips[0].frame_times
    assert _durations(folder / "fast.webp") == [0] * 6 + [10] * 6 + [20] * 6
    assert times["fast.webp"] == pytest.approx([0.1 * i for i in range(13)] + [1.2 + 0.02 * i for i in range(1, 4)])
    assert times["zero.gif"][:13] == pytest.approx(times["fast.webp"][:13])
