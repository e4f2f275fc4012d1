"""HDR still photos: an AVIF or HEIC declaring PQ or HLG BT.2020 by its nclx colour box (no ICC profile)
is tone-mapped like HDR video, where Pillow's pixels alone are the HDR signal shown as SDR.

The files are made by ffmpeg (libaom-av1, 10-bit) from a real SDR frame; the reference is ffmpeg's
tone-mapping recipe (`test_hdr_video.REFERENCE`) on the same file. Measured: 1-4.3 mean abs error
per channel, PSNR 36-37 dB (libavif hands Pillow 8-bit R'G'B', clipped to 0..1: the HDR signal
loses precision before the curve); Pillow's pixels as they were: 6-29, PSNR 19-20 dB.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
import video_zoo
from PIL import Image, features
from test_hdr_video import REFERENCE, _errors, _run, _sdr_input

from transforms.decode import decode_rgb, load_image
from transforms.headers import nclx_colour

W, H = 256, 144
TRANSFERS = {"pq": ("smpte2084", 400), "hlg": ("arib-std-b67", 1000), "sdr": ("bt709", 100)}


@pytest.fixture(scope="module")
def avifs(tmp_path_factory) -> dict[str, Path]:
    video_zoo.require_ffmpeg()
    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF plugin")
    if "libaom-av1" not in _run("-encoders").decode() or " avif " not in _run("-muxers").decode():
        pytest.skip("this ffmpeg cannot write AVIF with libaom-av1")
    folder = tmp_path_factory.mktemp("hdr_avif")
    files = {}
    for name, (transfer, white) in TRANSFERS.items():
        primaries, matrix = ("bt709", "bt709") if name == "sdr" else ("bt2020", "bt2020nc")
        files[name] = folder / f"{name}.avif"
        _run(*_sdr_input(), "-frames:v", "1", "-vf",
             f"scale={W}:{H},format=yuv420p,zscale=tin=bt709:min=bt709:pin=bt709:rin=tv:t={transfer}:p={primaries}:"
             f"m={matrix}:r=tv:npl={white},format=yuv420p10le", "-c:v", "libaom-av1", "-still-picture", "1",
             "-crf", "10", "-cpu-used", "8", "-threads", "1", "-color_primaries", primaries, "-color_trc", transfer,
             "-colorspace", matrix, "-color_range", "tv", str(files[name]))
    return files


def _reference(path: Path) -> np.ndarray:
    raw = _run("-i", str(path), "-vf", REFERENCE, "-pix_fmt", "rgb24", "-f", "rawvideo", "-")
    return np.frombuffer(raw, np.uint8).reshape(H, W, 3)


@pytest.mark.parametrize("name", ["pq", "hlg"])
def test_hdr_avif_is_tone_mapped_like_ffmpeg(avifs: dict[str, Path], name: str):
    data = avifs[name].read_bytes()
    nclx = nclx_colour(data)
    assert (nclx.primaries, nclx.transfer, nclx.matrix, nclx.full_range) == (9, {"pq": 16, "hlg": 18}[name], 9, False)
    reference = _reference(avifs[name])
    mae, _, psnr = _errors(decode_rgb(data), reference)
    assert mae.max() < 6 and psnr > 33, (mae, psnr)  # measured: 1-4.3, 36-37 dB
    naive_mae, _, naive_psnr = _errors(np.asarray(Image.open(avifs[name]).convert("RGB")), reference)
    assert naive_mae.max() > 10 and naive_psnr < 25, (naive_mae, naive_psnr)  # measured: 6-29, 19-20 dB
    decoded = load_image(data, 64, "squash")
    assert decoded.colour_profile == f"HDR {name.upper()} (nclx), tone-mapped"


def test_sdr_avif_pixels_are_pillows(avifs: dict[str, Path]):
    data = avifs["sdr"].read_bytes()
    assert nclx_colour(data).transfer == 1
    assert np.array_equal(decode_rgb(data), np.asarray(Image.open(avifs["sdr"]).convert("RGB")))


def test_nclx_is_none_without_a_colour_box():
    assert nclx_colour(b"\x00\x00\x00\x10ftypavif\x00\x00\x00\x00") is None
    assert nclx_colour(b"") is None


@pytest.mark.parametrize("name", ["pq", "hlg"])
def test_hdr_heic_is_tone_mapped_like_ffmpeg(tmp_path: Path, name: str):
    """A 10-bit HEIC written by libheif (pillow-heif) with a PQ or HLG nclx box; the reference is
    ffmpeg's recipe on the RGB signal it was made from (so libheif's 4:2:0 encoding is in the
    error too). Measured: 0.8-5.1 mean abs error per channel, PSNR 34-38 dB; Pillow's pixels as
    they were: 21-27 (PQ), PSNR 19 dB."""
    video_zoo.require_ffmpeg()
    pillow_heif = pytest.importorskip("pillow_heif")
    if not pillow_heif.libheif_info().get("encoders", {}).get("x265"):
        pytest.skip("this libheif cannot encode HEIC")
    transfer, white = TRANSFERS[name]
    signal = _run(*_sdr_input(), "-frames:v", "1", "-vf",
                  f"scale={W}:{H},format=yuv420p,zscale=tin=bt709:min=bt709:pin=bt709:rin=tv:t={transfer}:p=bt2020:"
                  f"npl={white},format=gbrp16le", "-pix_fmt", "rgb48le", "-f", "rawvideo", "-")
    heic = pillow_heif.from_bytes(mode="RGB;16", size=(W, H), data=signal)
    heic.info["nclx_profile"] = {"color_primaries": 9, "transfer_characteristics": {"pq": 16, "hlg": 18}[name],
                                 "matrix_coefficients": 9, "full_range_flag": 0}
    heic.save(str(tmp_path / "photo.heic"), quality=-1)
    data = (tmp_path / "photo.heic").read_bytes()
    reference = np.frombuffer(subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb48le", "-s", f"{W}x{H}",
         "-i", "-", "-vf", f"setparams=color_trc={transfer}:color_primaries=bt2020:colorspace=gbr:range=pc,{REFERENCE}",
         "-pix_fmt", "rgb24", "-f", "rawvideo", "-"], input=signal, stdout=subprocess.PIPE, check=True).stdout,
        np.uint8).reshape(H, W, 3)
    mae, _, psnr = _errors(decode_rgb(data), reference)
    naive_mae, _, naive_psnr = _errors(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), reference)
    assert mae.max() < 7 and psnr > 32, (mae, psnr)
    assert naive_mae.max() > 10 and naive_psnr < 25, (naive_mae, naive_psnr)
