"""16-bit RGB PNGs and TIFFs with an RGB matrix/TRC ICC profile, taken to sRGB from their 16-bit
samples (`transforms.icc_matrix`): LittleCMS through Pillow takes 8-bit samples, so they were cut
to 8 bits first and a linear profile's shadows crushed. The files are ImageMagick's (6.9.11 Q16,
`tests/fixtures/magick/README.md`: a photo darkened in Q16 and assigned ghostscript's linear
`scrgb.icc`, or assigned `rommrgb.icc` or `a98.icc`); their ImageMagick references are checked in
`test_magick_files`. Here the linear ones are checked against exact colorimetry (scRGB is sRGB's
primaries in linear light: the sample over 65535 is the light), 8-bit-representable samples
against LittleCMS's own 8-bit transform, and the memory judgement."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from transforms.decode import DecodeError, decode_cost, decode_rgb, load_image

MAGICK = Path(__file__).resolve().parent / "fixtures" / "magick"
LINEAR = ("png16_icc_scrgb.png", "tiff16_icc_scrgb.tif", "png16a_icc_scrgb.png")


def _srgb_of_light(light: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1's encoding of linear light 0..1, as 0..255 floats."""
    light = np.clip(light, 0, 1)
    return np.where(light <= 0.0031308, 12.92 * light, 1.055 * light ** (1 / 2.4) - 0.055) * 255


def _exact_scrgb(stored: np.ndarray) -> np.ndarray:
    """OpenCV's 16-bit BGR(A) samples of a linear scRGB file in sRGB, alpha on white, rounded."""
    colour = _srgb_of_light(stored[..., 2::-1] / 65535.0)
    if stored.shape[2] == 4:
        alpha = stored[..., 3:4] / 65535.0
        colour = colour * alpha + 255 * (1 - alpha)
    return np.floor(colour + 0.5).astype(np.uint8)


@pytest.mark.parametrize("name", LINEAR)
def test_linear_profile_keeps_its_shadows(name: str):
    """A dark photo (at most 3,886 of 65535) in linear scRGB was converted from Pillow's 8-bit cut:
    13 levels from colorimetry at most, 1.9 on average, 815 of 2,304 channels more than a
    level off, the darkest shadows black; now within a level everywhere, and the record names
    the profile."""
    data = (MAGICK / name).read_bytes()
    stored = cv2.imread(str(MAGICK / name), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint16 and stored[..., :3].max() < 4096
    got = decode_rgb(data)
    assert np.abs(got.astype(np.int16) - _exact_scrgb(stored)).max() <= 1
    if stored.shape[2] == 3:  # samples below one 8-bit level (black when cut) keep their levels
        dark = (stored[..., 2::-1] >= 40) & (stored[..., 2::-1] < 256)  # 2 to 12 levels
        assert dark.sum() > 50 and (got[dark] > 0).all()
    assert load_image(data, 16, "squash").colour_profile == "Artifex Software scRGB ICCProfile"


def _with_iccp(png: bytes, icc: bytes) -> bytes:
    """A PNG with an iCCP chunk of `icc` put after its IHDR (CRC computed)."""
    chunk = b"iCCP" + b"icc\0\0" + zlib.compress(icc)
    return png[:33] + struct.pack(">I", len(chunk) - 4) + chunk + struct.pack(">I", zlib.crc32(chunk)) + png[33:]


def test_8_bit_representable_samples_match_littlecms():
    """ImageMagick's 8-bit Adobe RGB PNG, its samples times 257 in a 16-bit PNG with the same
    iCCP: within a level of the 8-bit file's decode (LittleCMS's transform), which keeps its
    bytes; a profile of tables (A2B0: ghostscript's CMYK one is no RGB, so an sRGB-curve LUT
    profile is not built here) is not this path's."""
    source = MAGICK / "png_icc_a98.png"
    icc = Image.open(source).info["icc_profile"]
    eight = decode_rgb(source.read_bytes())
    samples = cv2.imread(str(source), cv2.IMREAD_UNCHANGED).astype(np.uint16) * 257
    ok, encoded = cv2.imencode(".png", samples)
    assert ok
    wide = decode_rgb(_with_iccp(encoded.tobytes(), icc))
    assert np.abs(wide.astype(np.int16) - eight).max() <= 1
    # and the 16-bit linear file through Pillow's 8-bit cut of it would be a different picture
    stored = cv2.imread(str(MAGICK / "png16_icc_scrgb.png"), cv2.IMREAD_UNCHANGED)
    cut = (stored >> 8).astype(np.uint8)
    ok, eight_bit = cv2.imencode(".png", cut)
    icc_linear = Image.open(MAGICK / "png16_icc_scrgb.png").info["icc_profile"]
    assert not np.array_equal(decode_rgb(_with_iccp(eight_bit.tobytes(), icc_linear)),
                              decode_rgb((MAGICK / "png16_icc_scrgb.png").read_bytes()))


@pytest.mark.parametrize("name", ["png16_icc_scrgb.png", "tiff16_icc_scrgb.tif"])
def test_16_bit_samples_are_judged_with_the_budget(name: str):
    """OpenCV's 16-bit samples (6 bytes a pixel) and their sRGB are counted before decoding: a
    budget that holds Pillow's 8-bit buffer and the result but not them refuses the file and says
    why (they were not counted: the TIFF's are decoded beside Pillow's load)."""
    data = (MAGICK / name).read_bytes()
    budget = decode_cost(32, 24, "RGB") + 32 * 24 * 4
    with pytest.raises(DecodeError, match="16-bit samples of an? .*ICC-profiled") as caught:
        decode_rgb(data, max_bytes=budget)
    assert caught.value.reason == "image_too_large"
    assert decode_rgb(data, max_bytes=budget + 32 * 24 * 9).shape == (24, 32, 3)


def _with_curves(icc: bytes, curve: bytes) -> bytes:
    """The profile with its rTRC, gTRC and bTRC entries all pointed at `curve`, put at its end."""
    curve += b"\0" * (-len(curve) % 4)
    out = bytearray(icc + curve)
    for i in range(struct.unpack(">I", icc[128:132])[0]):
        entry = 132 + 12 * i
        if icc[entry : entry + 4] in (b"rTRC", b"gTRC", b"bTRC"):
            out[entry + 4 : entry + 12] = struct.pack(">II", len(icc), len(curve))
    out[0:4] = struct.pack(">I", len(out))
    return bytes(out)


def test_a_curve_whose_parameters_overflow_is_clipped_without_a_warning():
    """A `para` curve (a * X) ** g of a = 30,000 and g = 100 overflows float64 to infinity: its
    light is clipped to 1 (as LittleCMS clips its curves), so every channel is black or white,
    with no RuntimeWarning from NumPy on the decode path (the errstate covered only the clip)."""
    icc = Image.open(MAGICK / "png16_icc_scrgb.png").info["icc_profile"]
    stored = cv2.imread(str(MAGICK / "png16_icc_scrgb.png"), cv2.IMREAD_UNCHANGED)
    para = b"para\0\0\0\0" + struct.pack(">HH", 1, 0) + struct.pack(">iii", 100 << 16, 30000 << 16, 0)
    ok, encoded = cv2.imencode(".png", stored)
    assert ok
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = decode_rgb(_with_iccp(encoded.tobytes(), _with_curves(icc, para)))
    assert set(np.unique(got)) <= {0, 1, 255} and (got == 255).mean() > 0.5  # light 0 or 1, crosstalk aside


_RETAINED = """
import gc, struct, sys, zlib
import cv2, numpy as np
from transforms.decode import decode_rgb

def rss():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1]) >> 10

def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

a98 = open("/usr/share/color/icc/ghostscript/a98.icc", "rb").read()
tags = struct.unpack(">I", a98[128:132])[0]
body = a98[132 + 12 * tags:] + b"\\0" * (-len(a98) % 4)
table = b"".join(a98[132 + 12 * k : 136 + 12 * k]
                 + struct.pack(">II", struct.unpack(">I", a98[136 + 12 * k : 140 + 12 * k])[0] + 12,
                               struct.unpack(">I", a98[140 + 12 * k : 144 + 12 * k])[0]) for k in range(tags))
end = 132 + 12 * (tags + 1) + len(body)
png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 65536, (64, 64, 3), dtype=np.uint16))[1].tobytes()
after = []
for i in range(10):  # a98 with a private tag of 16 MB, distinct in each file
    icc = bytearray(a98[:128] + struct.pack(">I", tags + 1) + table + b"zzzz" + struct.pack(">II", end, 16_000_000)
                    + body + bytes([i]) * 16_000_000)
    icc[:4] = struct.pack(">I", len(icc))
    decode_rgb(png[:33] + chunk(b"iCCP", b"p\\0\\0" + zlib.compress(bytes(icc), 1)) + png[33:])
    del icc
    gc.collect()
    after.append(rss())
print(after[-1] - after[0])
"""


def test_profiles_of_16_bit_files_are_not_kept_after_their_decode():
    """The matrix conversions were cached on, and held, the profile's bytes (8 kept): ten 16-bit
    PNGs of distinct 16 MB profiles (ghostscript's a98 and a private tag) kept 155 MiB more after
    the tenth decode than after the first, in a fresh process. Now only the derived curve tables
    (768 KiB a profile) are kept, by the profile's sha256."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", _RETAINED], capture_output=True, text=True, env=env, cwd=root,
                          check=True, timeout=300)
    assert int(done.stdout.split()[-1]) < 24, done.stdout


def _black_offset_profile(version: int) -> bytes:
    """An Adobe RGB matrix profile (D50 colorants) whose curves start at 3% light: a `curv` of 256
    entries, 0.03 + 0.97 x^2.2, in an ICC profile of `version` (0x02100000 or 0x04200000)."""
    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(struct.pack(">i", round(v * 65536)) for v in (x, y, z))

    name = "black offset".encode("utf-16-be")
    curve = b"curv\0\0\0\0" + struct.pack(">I", 256) + b"".join(
        struct.pack(">H", round(65535 * (0.03 + 0.97 * (i / 255) ** 2.2))) for i in range(256))
    tags = [(b"desc", b"mluc\0\0\0\0" + struct.pack(">II", 1, 12) + b"enUS" + struct.pack(">II", len(name), 28) + name),
            (b"wtpt", xyz(0.9642, 1, 0.8249)), (b"rXYZ", xyz(0.6097, 0.3111, 0.0195)),
            (b"gXYZ", xyz(0.2053, 0.6257, 0.0609)), (b"bXYZ", xyz(0.1492, 0.0632, 0.7446)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset, table, body = 132 + 12 * len(tags), b"", b""
    for signature, payload in tags:
        payload += b"\0" * (-len(payload) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(payload))
        body += payload
    header = (struct.pack(">I", offset + len(body)) + b"lcms" + struct.pack(">I", version) + b"mntrRGB XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 28 + struct.pack(">iii", 63190, 65536, 54061) + b"\0" * 48)
    return header + struct.pack(">I", len(tags)) + table + body


@pytest.mark.parametrize("version", [0x02100000, 0x04200000])
def test_a_profile_with_a_black_point_renders_alike_at_8_and_16_bits(version: int):
    """LittleCMS's perceptual transform to its v4 sRGB compensates the source's black point; the
    16-bit path did not: a profile whose curves start at 3% light showed black as 48 at 16 bits, 0
    at 8. Both depths now take LittleCMS's unoptimised transform (its optimised 8-bit one resamples
    the compensation into a CLUT, up to 15 levels off on saturated colours), within a level."""
    icc = _black_offset_profile(version)
    y, x = np.mgrid[0:32, 0:256]
    samples = np.stack([x, (x + 7 * y) % 256, 255 - x], -1).astype(np.uint8)
    samples[0, :8] = 0
    expected = np.asarray(ImageCms.applyTransform(Image.fromarray(samples), ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"), "RGB", "RGB",
        renderingIntent=ImageCms.Intent.PERCEPTUAL, flags=ImageCms.Flags.NOOPTIMIZE))).astype(int)
    eight_bit = _with_iccp(cv2.imencode(".png", samples[..., ::-1])[1].tobytes(), icc)
    sixteen_bit = _with_iccp(cv2.imencode(".png", samples[..., ::-1].astype(np.uint16) * 257)[1].tobytes(), icc)
    eight, wide = (decode_rgb(data).astype(int) for data in (eight_bit, sixteen_bit))
    assert expected[0, 0].tolist() == [0, 0, 0] and wide[0, 0].tolist() == [0, 0, 0]  # before: 48 at 16 bits
    assert np.abs(eight - expected).max() <= 1 and np.abs(wide - expected).max() <= 1
    assert np.abs(wide - eight).max() <= 1
    assert np.abs(expected - samples).mean() > 5  # a real conversion
    assert load_image(eight_bit, 16, "squash").colour_profile == "black offset"
