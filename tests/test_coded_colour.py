"""Colour declared by ITU-T H.273 code points: an AVIF's or HEIC's nclx box (without an ICC
profile) naming wide primaries (Display P3, BT.2020) or a non-sRGB SDR transfer (linear, gamma
2.2, 2.8), and a PNG's cICP chunk (written here chunk by chunk as the PNG 3rd edition specifies).

The AVIFs are written by ffmpeg (libaom-av1, its `-color_primaries` and `-color_trc` become the
nclx box), the HEICs by libheif (pillow-heif's `nclx_profile`), as phones and CDNs write them. The
reference is colorimetry done here from the published chromaticities (H.273 table 2, SMPTE RP
177's matrix) and transfer curves, on the R'G'B' the decoder gives (Pillow's pixels, which
ignore the box): within a level of it. Read as sRGB, as before, they were 7-40 levels off."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import video_zoo
from PIL import Image, features

from test_hdr_video import REFERENCE
from transforms.decode import decode_rgb, load_image
from transforms.errors import DecodeError
from transforms.headers import nclx_colour

D65 = (0.3127, 0.3290)
# (red, green, blue) x, y as published: BT.709, SMPTE EG 432-1 (Display P3), BT.2020
BT709 = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
P3 = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
BT2020 = ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046))


def _to_xyz(primaries) -> np.ndarray:
    """SMPTE RP 177: linear RGB -> XYZ, each primary scaled so that RGB 1, 1, 1 is D65."""
    columns = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in primaries]).T
    wx, wy = D65
    return columns * np.linalg.solve(columns, np.array([wx / wy, 1.0, (1 - wx - wy) / wy]))


def _srgb_decode(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _srgb_encode(light: np.ndarray) -> np.ndarray:
    light = np.clip(light, 0, 1)
    return np.where(light <= 0.0031308, 12.92 * light, 1.055 * light ** (1 / 2.4) - 0.055)


CURVES = {"srgb": _srgb_decode, "linear": lambda v: v, "gamma22": lambda v: v ** 2.2, "gamma28": lambda v: v ** 2.8}


def expected(samples: np.ndarray, primaries, curve: str, top: int = 255) -> np.ndarray:
    """The sRGB an exact colour-managed decode shows for R'G'B' `samples` in `primaries` (D65)
    and transfer `curve` (BT.709's is shown by sRGB's curve, as Chrome does)."""
    light = CURVES[curve](samples / top) @ (np.linalg.inv(_to_xyz(BT709)) @ _to_xyz(primaries)).T
    return np.round(_srgb_encode(light) * 255).astype(np.uint8)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


# ffmpeg's names: primaries, transfer; and what the test expects of them
AVIFS = {
    "p3_srgb": ("smpte432", "iec61966-2-1", P3, "srgb"),
    "bt2020_bt709": ("bt2020", "bt709", BT2020, "srgb"),
    "bt709_linear": ("bt709", "linear", BT709, "linear"),
    "bt709_gamma22": ("bt709", "gamma22", BT709, "gamma22"),
    "bt709_gamma28": ("bt709", "gamma28", BT709, "gamma28"),
}
SRGB_LIKE = {"bt709_bt709": ("bt709", "bt709"), "bt709_srgb": ("bt709", "iec61966-2-1")}


@pytest.fixture(scope="module")
def avifs(tmp_path_factory) -> dict[str, Path]:
    video_zoo.require_ffmpeg()
    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF plugin")
    if b"libaom-av1" not in subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], stdout=subprocess.PIPE).stdout:
        pytest.skip("this ffmpeg cannot write AVIF with libaom-av1")
    folder = tmp_path_factory.mktemp("nclx_avif")
    files = {}
    for name, (primaries, transfer) in {**{k: v[:2] for k, v in AVIFS.items()}, **SRGB_LIKE}.items():
        files[name] = folder / f"{name}.avif"
        _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=128x96", "-frames:v", "1", "-pix_fmt", "yuv444p",
                "-c:v", "libaom-av1", "-still-picture", "1", "-crf", "10", "-cpu-used", "8", "-threads", "1",
                "-color_primaries", primaries, "-color_trc", transfer, "-colorspace", "bt709", "-color_range", "pc",
                str(files[name]))
    return files


@pytest.mark.parametrize("name", sorted(AVIFS))
def test_nclx_avif_is_shown_in_its_declared_colour(avifs: dict[str, Path], name: str):
    data = avifs[name].read_bytes()
    assert nclx_colour(data) is not None and not Image.open(io.BytesIO(data)).info.get("icc_profile")
    plain = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    reference = expected(plain, *AVIFS[name][2:])
    got = decode_rgb(data).astype(int)
    assert np.abs(got - reference).max() <= 1
    assert np.abs(plain.astype(int) - reference).max() > 4  # shown before, mean (max): P3 7.7 (78), BT.2020
    # 11.6 (119), linear 37.4 (73), gamma 2.2 2.8 (9), gamma 2.8 11.8 (25)
    assert load_image(data, 64, "squash").colour_profile.startswith("nclx ")


def test_only_a_declaration_other_than_srgb_changes_the_pixels(avifs: dict[str, Path]):
    """BT.709 primaries with an sRGB-like transfer (BT.709's, sRGB's): nothing to convert, the
    bytes are Pillow's, as before; the same picture declared Display P3 is converted."""
    for name in ("bt709_bt709", "bt709_srgb"):
        data = avifs[name].read_bytes()
        assert np.array_equal(decode_rgb(data), np.asarray(Image.open(avifs[name]).convert("RGB")))
        assert load_image(data, 64, "squash").colour_profile == ""
    p3 = avifs["p3_srgb"].read_bytes()
    assert not np.array_equal(decode_rgb(p3), np.asarray(Image.open(avifs["p3_srgb"]).convert("RGB")))


@pytest.mark.parametrize("primaries,transfer,chromaticities,curve",
                         [(12, 13, P3, "srgb"), (9, 1, BT2020, "srgb"), (12, 8, P3, "linear")])
def test_nclx_heic_is_shown_in_its_declared_colour(tmp_path: Path, primaries: int, transfer: int,
                                                    chromaticities, curve: str):
    """A HEIC as libheif writes a phone's: 8-bit, BT.601 matrix, full range, an nclx box."""
    pillow_heif = pytest.importorskip("pillow_heif")
    if not pillow_heif.libheif_info().get("encoders", {}).get("x265"):
        pytest.skip("this libheif cannot encode HEIC")
    y, x = np.mgrid[0:64, 0:96]
    source = np.stack([x * 255 // 95, y * 255 // 63, 255 - (x * y * 255) // (95 * 63)], -1).astype(np.uint8)
    heic = pillow_heif.from_bytes(mode="RGB", size=(96, 64), data=source.tobytes())
    heic.info["nclx_profile"] = {"color_primaries": primaries, "transfer_characteristics": transfer,
                                 "matrix_coefficients": 6, "full_range_flag": 1}
    heic.save(str(tmp_path / "photo.heic"), quality=95)
    data = (tmp_path / "photo.heic").read_bytes()
    nclx = nclx_colour(data)
    assert (nclx.primaries, nclx.transfer) == (primaries, transfer)
    pillow_heif.register_heif_opener()
    plain = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    reference = expected(plain, chromaticities, curve)
    assert np.abs(decode_rgb(data).astype(int) - reference).max() <= 1
    assert np.abs(plain.astype(int) - reference).mean() > 3  # shown before: P3 11.0 (max 114), BT.2020
    # 19.6 (158), linear P3 39.4 (87)


def _chunk(kind: bytes, body: bytes) -> bytes:
    """A PNG chunk: length, type, data, CRC of type and data."""
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def _cicp(primaries: int, transfer: int, matrix: int = 0, full_range: int = 1) -> bytes:
    """A cICP chunk as the PNG 3rd edition specifies it (four bytes: H.273's ColourPrimaries,
    TransferCharacteristics, MatrixCoefficients, VideoFullRangeFlag)."""
    return _chunk(b"cICP", bytes([primaries, transfer, matrix, full_range]))


def _png(samples: np.ndarray, *chunks: bytes) -> bytes:
    """An RGB PNG of (H, W, 3) uint8 or uint16 samples (big-endian, filter 0 each row), `chunks`
    between IHDR and IDAT, where the specification places cICP."""
    h, w = samples.shape[:2]
    depth = 16 if samples.dtype == np.uint16 else 8
    stored = samples.astype(">u2") if depth == 16 else samples
    raw = b"".join(b"\0" + row.tobytes() for row in stored)
    header = _chunk(b"IHDR", w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([depth, 2, 0, 0, 0]))
    return b"\x89PNG\r\n\x1a\n" + header + b"".join(chunks) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def _picture(bits: int = 8) -> np.ndarray:
    y, x = np.mgrid[0:48, 0:64]
    top = (1 << bits) - 1
    rgb = np.stack([x * top // 63, y * top // 47, top - (x * y * top) // (63 * 47)], -1)
    rgb[:12, :16] = (top, 0, 0)
    rgb[:12, 16:32] = (0, top, 0)
    return rgb.astype(np.uint8 if bits == 8 else np.uint16)


@pytest.mark.parametrize("primaries,transfer,chromaticities,curve",
                         [(12, 13, P3, "srgb"), (9, 1, BT2020, "srgb"), (12, 8, P3, "linear")])
def test_cicp_png_is_shown_in_its_declared_colour(primaries: int, transfer: int, chromaticities, curve: str):
    """An 8-bit PNG with a cICP chunk, and an sRGB chunk and a gAMA of 1.0 beside it, which the
    specification (and Chromium) say a reader of cICP ignores."""
    samples = _picture()
    srgb_and_linear = _chunk(b"sRGB", b"\0") + _chunk(b"gAMA", (100000).to_bytes(4, "big"))
    data = _png(samples, _cicp(primaries, transfer), srgb_and_linear)
    reference = expected(samples, chromaticities, curve)
    assert np.abs(decode_rgb(data).astype(int) - reference).max() <= 1
    assert np.abs(samples.astype(int) - reference).mean() > 3  # shown before: P3 10.4 (max 117), BT.2020
    # 17.8 (161), linear P3 33.8 (77)
    assert load_image(data, 64, "squash").colour_profile == f"cICP primaries {primaries} transfer {transfer}"


def test_cicp_png_the_specification_does_not_allow_is_ignored():
    """A cICP naming a YCbCr matrix (PNG holds RGB) or narrow range is ignored, as Chromium ignores
    it: the PNG's other chunks say its colour (here none: sRGB). One as allowed is converted."""
    samples = _picture()
    for chunk in (_cicp(12, 13, matrix=1), _cicp(12, 13, full_range=0), _chunk(b"cICP", bytes([12, 13, 0, 1, 0]))):
        assert np.array_equal(decode_rgb(_png(samples, chunk)), samples)
    assert not np.array_equal(decode_rgb(_png(samples, _cicp(12, 13))), samples)


def test_cicp_png_whose_crc_fails_is_refused():
    """A cICP changes every pixel: one failing its CRC is refused naming it, as an iCCP is."""
    broken = bytearray(_cicp(12, 13))
    broken[-1] ^= 0xFF
    with pytest.raises(DecodeError) as caught:
        decode_rgb(_png(_picture(), bytes(broken)))
    assert caught.value.reason == "corrupt_header" and "cICP" in str(caught.value)


@pytest.mark.parametrize("name", ["pq", "hlg"])
def test_hdr_cicp_png_is_tone_mapped_like_ffmpeg(name: str):
    """A 16-bit PNG of BT.2020 PQ or HLG R'G'B' with its cICP, as ffmpeg 6.1+ writes frames of HDR
    video; the reference is ffmpeg's tone-mapping recipe (`test_hdr_video.REFERENCE`) on the same
    16-bit signal. Measured: PQ 0.0004 level off on average, at most 1; HLG 0.006, at most 2 (from
    its 16 bits); read as SDR before, 56.6 (max 136) and 53.9 (210)."""
    video_zoo.require_ffmpeg()
    if b"zscale" not in subprocess.run(["ffmpeg", "-hide_banner", "-filters"], stdout=subprocess.PIPE).stdout:
        pytest.skip("this ffmpeg has no zscale")
    transfer, white = {"pq": ("smpte2084", 400), "hlg": ("arib-std-b67", 1000)}[name]
    w, h = 128, 96
    signal = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc2=size={w}x{h}", "-frames:v",
         "1", "-vf", f"format=yuv444p,zscale=tin=bt709:min=bt709:pin=bt709:rin=tv:t={transfer}:p=bt2020:npl={white},"
         f"format=gbrp16le", "-pix_fmt", "rgb48le", "-f", "rawvideo", "-"], stdout=subprocess.PIPE, check=True).stdout
    samples = np.frombuffer(signal, "<u2").reshape(h, w, 3)
    data = _png(samples, _cicp(9, {"pq": 16, "hlg": 18}[name]))
    reference = np.frombuffer(subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb48le", "-s", f"{w}x{h}",
         "-i", "-", "-vf", f"setparams=color_trc={transfer}:color_primaries=bt2020:colorspace=gbr:range=pc,{REFERENCE}",
         "-pix_fmt", "rgb24", "-f", "rawvideo", "-"], input=signal, stdout=subprocess.PIPE, check=True).stdout,
        np.uint8).reshape(h, w, 3).astype(int)
    got = np.abs(decode_rgb(data).astype(int) - reference)
    before = np.abs(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int) - reference)
    assert got.mean() < 0.2 and got.max() <= 2
    assert before.mean() > 10
    assert load_image(data, 64, "squash").colour_profile == f"HDR {name.upper()} (cICP), tone-mapped"


_PEAK = """
import struct, sys, zlib
import cv2, numpy as np
from transforms.decode import _held, _open, decode_cost, decode_rgb

def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

noise = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
png = cv2.imencode(".png", noise, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()
data = png[:33] + chunk(b"cICP", bytes([12, 13, 0, 1])) + png[33:]
del noise
image = _open(data, 1 << 30, 1 << 40)
judged = decode_cost(*image.size, image.mode, False, _held(image, data).bytes)
del image
open("/proc/self/clear_refs", "w").write("5")  # the peak RSS (VmHWM) from here
def peak():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]) << 10
def now():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1]) << 10
before = now()
decode_rgb(data)
print(judged >> 20, (peak() - before) >> 20)
"""


def test_an_sdr_cicp_png_decodes_within_its_judged_memory():
    """An SDR conversion was made of a whole RGB copy into a second (`_as_declared`), which the
    budget does not count: a 4000x3000 P3 PNG peaked 124 MiB over its bytes, judged 104 (without
    the cICP: 88). It converts strip by strip into the one array now (fresh process, VmHWM)."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _PEAK], capture_output=True, text=True, cwd=root, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}, check=True)
    judged, peak = map(int, done.stdout.split()[-2:])
    assert 80 < peak <= judged, done.stdout
