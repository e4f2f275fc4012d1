"""Colour declared by ITU-T H.273 code points without an ICC profile: an AVIF's or HEIC's nclx box
naming wide primaries (Display P3, BT.2020) or a non-sRGB SDR transfer (linear, gamma 2.2, 2.8).

The AVIFs are written by ffmpeg (libaom-av1, its `-color_primaries` and `-color_trc` become the
nclx box), the HEICs by libheif (pillow-heif's `nclx_profile`), as phones and CDNs write them. The
reference is colorimetry done here from the published chromaticities (H.273 table 2, SMPTE RP
177's matrix) and transfer curves, on the R'G'B' the decoder gives (Pillow's pixels, which
ignore the box): within a level of it. Read as sRGB, as before, they were 7-40 levels off."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
import video_zoo
from PIL import Image, features

from transforms.decode import decode_rgb, load_image
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
