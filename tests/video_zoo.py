"""A zoo of tiny videos whose every frame shows its own index, for frame-exactness tests.

Each frame carries its source index as 16 black/white blocks (a binary number) that survive any
lossy codec here, above a moving texture that gives the encoders real motion to code. Clips are
written with PyAV where it can, and with the ffmpeg CLI for what PyAV's muxing cannot express
(MPEG-TS/PS defaults, edit lists from a stream copy, a display rotation).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

W, H = 64, 48
BITS = 16
_BLOCK_W, _BLOCK_H = 8, 12  # 8 columns x 2 rows of bits in the top 24 rows


def pattern(index: int, width: int = W, height: int = H) -> np.ndarray:
    """An RGB frame showing `index` in binary, on a texture that moves with the index."""
    frame = np.roll(_texture(width, height), 2 * index, axis=1)[:, :width].copy()
    for bit in range(BITS):
        row, col = divmod(bit, 8)
        value = 235 if (index >> bit) & 1 else 16
        frame[row * _BLOCK_H:(row + 1) * _BLOCK_H, col * _BLOCK_W:(col + 1) * _BLOCK_W] = value
    return frame


@functools.lru_cache(maxsize=4)
def _texture(width: int, height: int) -> np.ndarray:
    """`pattern`'s texture, drawn once a size (drawn for each frame, a 1920x1080 clip's 16 frames
    took 200 million draws); read-only, as it is shared."""
    texture = np.random.default_rng(7).integers(40, 216, size=(height, width * 2, 3), dtype=np.uint8)
    texture.flags.writeable = False
    return texture


def read_index(frame: np.ndarray) -> int:
    """The index a frame shows (the inverse of `pattern`, tolerant of coding noise)."""
    gray = frame.astype(np.float32).mean(axis=2)
    index = 0
    for bit in range(BITS):
        row, col = divmod(bit, 8)
        block = gray[row * _BLOCK_H + 3:(row + 1) * _BLOCK_H - 3, col * _BLOCK_W + 2:(col + 1) * _BLOCK_W - 2]
        if block.mean() > 128:
            index |= 1 << bit
    return index


def require_ffmpeg() -> None:
    """Skip without the ffmpeg CLI, or fail when the setup promised it (`make test` installs it)."""
    import os

    import pytest

    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        if os.environ.get("UVD_REQUIRE_FFMPEG"):
            pytest.fail("UVD_REQUIRE_FFMPEG is set but the ffmpeg CLI is not installed")
        pytest.skip("the ffmpeg CLI (Debian package `ffmpeg`) is not installed")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@contextmanager
def _scheduling_kept() -> Iterator[None]:
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        os.sched_setscheduler(0, policy, param)


def encode(path: Path, n: int, codec: str, rate: int = 25, pix_fmt: str = "yuv420p", options=None,
           size: tuple[int, int] = (W, H), pts: Callable[[int], int] | None = None,
           time_base: Fraction | None = None, rotation: int = 0, first: int = 0,
           matrix: Sequence[int] | None = None) -> Path:
    """Frames first..first+n-1 of the pattern, written by PyAV. The calling thread's scheduling
    is put back afterwards: SVT-AV1 (`libsvtav1`) makes it SCHED_FIFO 99 when run as root, and the
    test's later processes (`busy_machine`'s burners) inherited that real-time priority, starving
    every other process on the machine."""
    import av

    with _scheduling_kept(), av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, options={"threads": "1", **(options or {})})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], pix_fmt
        if time_base is not None:
            stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        if matrix is not None:  # the 2x2 part (a, b, c, d) of a display matrix, in units of 1.0
            a, b, c, d = (v << 16 for v in matrix)
            stream.set_display_matrix([a, b, 0, c, d, 0, 0, 0, 1 << 30])
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(pattern(first + i, *size), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts(i), time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


X264 = {"preset": "veryfast", "crf": "23"}
X264_CLI = ["-c:v", "libx264", "-preset", "veryfast", "-threads", "1"]


def truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def build_zoo(root: Path, names: Sequence[str] | None = None) -> dict[str, Path]:
    """Write the zoo (or the named part of it) under `root`; returns name -> path."""
    root.mkdir(parents=True, exist_ok=True)
    makers: dict[str, Callable[[Path], Path]] = {
        "h264_bframes.mp4": lambda p: encode(p, 90, "libx264", options={**X264, "g": "12", "bf": "3"}),
        "h264_longgop.mkv": lambda p: encode(p, 120, "libx264", options={**X264, "g": "250", "bf": "3"}),
        "h264_16f.mp4": lambda p: encode(p, 16, "libx264", options={**X264, "g": "250", "bf": "3"}),
        "h264_10bit.mov": lambda p: encode(p, 60, "libx264", pix_fmt="yuv420p10le", options={**X264, "g": "20"}),
        "h264_444_odd.m4v": lambda p: encode(p, 50, "libx264", pix_fmt="yuv444p", size=(65, 49),
                                            options={**X264, "g": "15"}),
        "h264_vfr.mkv": lambda p: encode(p, 70, "libx264", options={**X264, "g": "15"}, time_base=Fraction(1, 1000),
                                        pts=lambda i: i * 40 + (i * i) % 37 + (i // 10) * 25),
        "h264_rot90.mp4": lambda p: encode(p, 60, "libx264", options={**X264, "g": "20"}, rotation=90),
        "h264_rot270.mov": lambda p: encode(p, 40, "libx264", options={**X264, "g": "20"}, rotation=-90),
        "h264_mirror.mp4": lambda p: encode(p, 40, "libx264", options={**X264, "g": "20"}, matrix=(-1, 0, 0, 1)),
        "h264_transpose.mov": lambda p: encode(p, 40, "libx264", options={**X264, "g": "20"}, matrix=(0, 1, 1, 0)),
        "hevc.mp4": lambda p: encode(p, 100, "libx265", options={"preset": "ultrafast", "x265-params":
                                                                  "keyint=40:log-level=error"}),
        "vp9.webm": lambda p: encode(p, 60, "libvpx-vp9", options={"deadline": "good", "cpu-used": "8", "g": "20"}),
        "av1.mp4": lambda p: encode(p, 30, "libsvtav1", options={"preset": "11", "g": "10", "crf": "20",
                                                                 "svtav1-params": "log-level=0"}),
        "vp8.webm": lambda p: encode(p, 50, "libvpx", options={"deadline": "good", "cpu-used": "8", "g": "20"}),
        "mjpeg.avi": lambda p: encode(p, 40, "mjpeg", pix_fmt="yuvj420p"),
        "mpeg4.avi": lambda p: encode(p, 60, "mpeg4", options={"g": "12", "bf": "2"}),
        "prores.mov": lambda p: encode(p, 40, "prores_ks", pix_fmt="yuv422p10le"),
        "flv1.flv": lambda p: encode(p, 50, "flv", options={"g": "12"}),
        "truncated.mkv": lambda p: truncate(build_zoo(root, ["h264_longgop.mkv"])["h264_longgop.mkv"], p, 0.6),
    }
    cli: dict[str, Callable[[Path], Path]] = {
        "x264_default.ts": lambda p: _from_cli(root, p, ["-c:v", "libx264", "-preset", "veryfast"], n=300),
        "x264_gop25.ts": lambda p: _from_cli(root, p, ["-c:v", "libx264", "-preset", "veryfast", "-g", "25"], n=120),
        "mpeg2_gop15.mpg": lambda p: _from_cli(root, p, ["-c:v", "mpeg2video", "-g", "15", "-bf", "2", "-q:v", "4"],
                                               n=100),
        "mpeg2_gop15.mpeg": lambda p: _from_cli(root, p, ["-c:v", "mpeg2video", "-g", "15", "-bf", "2", "-q:v", "4",
                                                          "-f", "mpeg"], n=60),
        "editlist.mp4": lambda p: _edit_list(root, p),
        "mpeg2_elementary.mpg": lambda p: _from_cli(root, p, ["-c:v", "mpeg2video", "-g", "15", "-bf", "2",
                                                              "-q:v", "4", "-f", "mpeg2video"], n=60),
        "h264_elementary.ts": lambda p: _from_cli(root, p, ["-c:v", "libx264", "-preset", "veryfast", "-f", "h264"],
                                                  n=40),
        "x264_headcut.ts": lambda p: _head_cut(build_zoo(root, ["x264_gop25.ts"])["x264_gop25.ts"], p, 188),
        "mpeg2_headcut.mpg": lambda p: _head_cut(build_zoo(root, ["mpeg2_gop15.mpg"])["mpeg2_gop15.mpg"], p, 2048),
        "theora.ogv": lambda p: _from_cli(root, p, ["-c:v", "libtheora", "-g", "12", "-q:v", "7"], n=50),
        # AVI stores no presentation stamps: packets are stamped in decode order, B-frames or not
        "h264_bframes.avi": lambda p: _from_cli(root, p, [*X264_CLI, "-g", "30", "-bf", "3"], n=100),
        "h264_ipp.avi": lambda p: _from_cli(root, p, [*X264_CLI, "-g", "30", "-bf", "0"], n=60),
        "h264_bframes_cut.avi": lambda p: truncate(build_zoo(root, ["h264_bframes.avi"])["h264_bframes.avi"], p, 0.6),
        # B-frames only in the middle: an IPP stream copied together with one that has them; the
        # decoder learns of its reorder delay from the middle part's SPS, after the file was opened
        "h264_late_bframes.avi": lambda p: _segments(root, p, [*X264_CLI, "-g", "20"], ("0", "3", "0"), 40),
        # XviD's packed B-frames, as DivX/XviD wrote AVI (libxvid packs them in AVI): a P- and a
        # B-frame in one packet, then a 6-byte placeholder; the stamps guessed for them are wrong
        "xvid_packed.avi": lambda p: _from_cli(root, p, ["-c:v", "libxvid", "-bf", "2", "-g", "12", "-q:v", "3"],
                                               n=60),
        # open GOPs: frames after a key frame that are shown before it
        "h264_opengop.mp4": lambda p: _from_cli(root, p, [*X264_CLI, "-g", "30", "-bf", "3", "-sc_threshold", "0",
                                                          "-x264-params", "open-gop=1"], n=120),
        "mpeg4_bframes.mp4": lambda p: _from_cli(root, p, ["-c:v", "mpeg4", "-bf", "2", "-g", "12", "-q:v", "3"],
                                                 n=80),
        # what cameras, discs and older phones write: AVCHD's .MTS and Blu-ray's .m2ts (MPEG-TS in
        # 192-byte packets), a DVD's .VOB (MPEG-PS), 3GPP, Windows Media (ASF)
        "avchd.mts": lambda p: _from_cli(root, p, [*X264_CLI, "-g", "25", "-bf", "2", "-f", "mpegts",
                                                   "-mpegts_m2ts_mode", "1"], n=60),
        "bluray.m2ts": lambda p: _from_cli(root, p, [*X264_CLI, "-g", "25", "-bf", "2"], n=40),
        "dvd.vob": lambda p: _from_cli(root, p, ["-c:v", "mpeg2video", "-g", "15", "-bf", "2", "-q:v", "4"], n=50),
        "phone.3gp": lambda p: _from_cli(root, p, [*X264_CLI, "-g", "30", "-bf", "2"], n=40),
        "windows.wmv": lambda p: _from_cli(root, p, ["-c:v", "wmv2", "-g", "12", "-q:v", "4"], n=40),
        # broadcast MXF (MPEG-2 at 25 fps, its only rates), a Windows .asf, a raw .y4m, 3GPP2, Flash
        # F4V, stereo Matroska, an MPEG-2 elementary .m2v: listed since hunt53v found them skipped
        "broadcast.mxf": lambda p: _from_cli(root, p, ["-c:v", "mpeg2video", "-g", "12", "-q:v", "4", "-r", "25",
                                                       "-f", "mxf"], n=24),
        "windows.asf": lambda p: _from_cli(root, p, ["-c:v", "wmv2", "-g", "12", "-q:v", "4", "-f", "asf"], n=24),
        "raw.y4m": lambda p: _from_cli(root, p, ["-f", "yuv4mpegpipe"], n=24),
        "phone.3g2": lambda p: _from_cli(root, p, [*X264_CLI, "-g", "12", "-bf", "2", "-f", "3g2"], n=24),
        "flash.f4v": lambda p: _from_cli(root, p, [*X264_CLI, "-g", "12", "-f", "f4v"], n=24),
        "stereo.mk3d": lambda p: _from_cli(root, p, [*X264_CLI, "-g", "12", "-f", "matroska"], n=24),
        "mpeg2.m2v": lambda p: _from_cli(root, p, ["-c:v", "mpeg2video", "-g", "12", "-q:v", "4", "-f", "mpeg2video"],
                                         n=24),
        # an animated GIF (TGIF's clips): the CLI's palette, a frame every 4 centiseconds
        "anim.gif": lambda p: _gif(root, p, 30),
    }
    wanted = list(names) if names is not None else list(makers) + list(cli)
    paths = {}
    for name in wanted:
        path = root / name
        if not path.exists():
            (makers.get(name) or cli[name])(path)
        paths[name] = path
    return paths


def _segments(root: Path, out: Path, codec_args: list[str], bframes: Sequence[str], n: int) -> Path:
    """Consecutive runs of `n` frames, each encoded with its own B-frame count, joined into one
    raw H.264 stream and copied into `out` (as `cat` and a stream copy make them)."""
    source = _source(root, n * len(bframes))
    raw = b""
    for k, bf in enumerate(bframes):
        part = root / f"_{out.stem}_{k}.h264"
        ffmpeg("-i", str(source), "-vf", f"select=between(n\\,{k * n}\\,{(k + 1) * n - 1}),setpts=N/25/TB",
               *codec_args, "-bf", bf, "-pix_fmt", "yuv420p", "-f", "h264", str(part))
        raw += part.read_bytes()
    joined = root / f"_{out.stem}.h264"
    joined.write_bytes(raw)
    ffmpeg("-r", "25", "-i", str(joined), "-c", "copy", str(out))
    return out


def _head_cut(src: Path, dst: Path, unit: int) -> Path:
    """The file without its first 30% (whole 188-byte TS / 2048-byte PS packs): a capture that
    starts mid-GOP."""
    data = src.read_bytes()
    dst.write_bytes(data[(len(data) * 3 // 10) // unit * unit:])
    return dst


def _source(root: Path, n: int) -> Path:
    """A lossless-ish intermediate the CLI re-encodes (the pattern survives MJPEG at high quality)."""
    path = root / f"_src_{n}.avi"
    if not path.exists():
        encode(path, n, "mjpeg", pix_fmt="yuvj444p", options={"q:v": "2"})
    return path


def _from_cli(root: Path, out: Path, codec_args: list[str], n: int) -> Path:
    ffmpeg("-i", str(_source(root, n)), *codec_args, "-pix_fmt", "yuv420p", str(out))
    return out


def _gif(root: Path, out: Path, n: int) -> Path:
    ffmpeg("-i", str(_source(root, n)), "-f", "gif", str(out))
    return out


def _edit_list(root: Path, out: Path) -> Path:
    """A stream copy cut at a non-key time: the mp4 keeps the GOP's pre-roll behind an edit list."""
    src = root / "_editlist_src.mp4"
    if not src.exists():
        encode(src, 200, "libx264", options={**X264, "g": "50", "bf": "3"})
    ffmpeg("-ss", "2.6", "-i", str(src), "-t", "3", "-c", "copy", str(out))
    return out


def sequential(path: Path) -> list[np.ndarray]:
    """Every frame a player shows, in order, by the ffmpeg CLI (edit lists and rotation applied,
    no frame dropped or repeated): the independent reference."""
    import re

    raw = subprocess.run(["ffmpeg", "-nostats", "-v", "info", "-i", str(path), "-map", "0:v:0", "-vsync",
                          "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True)
    log = raw.stderr.decode(errors="replace")  # the same run's log: no second ffmpeg to read the size
    # the size of the frames it writes: the output stream line, after rotation
    w, h = map(int, re.findall(r"Stream #0:0.*?: Video: .*?, (\d+)x(\d+)", log.split("Output #0")[1])[0])
    data = np.frombuffer(raw.stdout, np.uint8)
    n = len(data) // (w * h * 3)
    return list(data[: n * w * h * 3].reshape(n, h, w, 3))


def coded(path: Path) -> list[np.ndarray]:
    """Every decodable frame in coded order by PyAV, no edit list or rotation applied (a truncated
    file just ends early): the pixels as the stream holds them (a frame deeper than 8 bits reduced
    to 8 first, as `sources.video_display.display` converts it)."""
    import av

    from sources.video_display import eight_bit_copy, eight_bit_format

    frames = []
    with av.open(str(path)) as container:
        try:
            for frame in container.decode(video=0):
                eight_bit = eight_bit_format(frame.format.name)
                frame = eight_bit_copy(frame, eight_bit) if eight_bit else frame
                frames.append(frame.to_ndarray(format="rgb24"))
        except av.error.FFmpegError:
            pass
    return frames


def _flv_tag(data: bytes, ms: int) -> bytes:
    """An FLV video tag (FLV spec 10, E.4.1) holding `data` at `ms`, with its back pointer."""
    stamp = (ms & 0xFFFFFF).to_bytes(3, "big") + bytes([ms >> 24])
    return b"\x09" + len(data).to_bytes(3, "big") + stamp + bytes(3) + data + (11 + len(data)).to_bytes(4, "big")


def flv_resending_sequence_headers(parts: list[Path], path: Path) -> Path:
    """The H.264 of MP4 `parts` (no B-frames) in one FLV, an AVC sequence header (the part's avcC)
    before each: what an RTMP stream sends when the encoder changes resolution."""
    import av

    out, ms = bytearray(b"FLV\x01\x01" + (9).to_bytes(4, "big") + bytes(4)), 0
    for part in parts:
        with av.open(str(part)) as container:
            stream = container.streams.video[0]
            out += _flv_tag(b"\x17\x00\x00\x00\x00" + bytes(stream.codec_context.extradata), ms)
            for packet in container.demux(stream):
                if packet.size:
                    out += _flv_tag(bytes([0x17 if packet.is_keyframe else 0x27, 1, 0, 0, 0]) + bytes(packet), ms)
                    ms += 40
    path.write_bytes(out)
    return path
