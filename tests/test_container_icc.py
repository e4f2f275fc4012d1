"""A JPEG 2000, GIF or BMP's embedded ICC profile is applied, as in every other format: Pillow
drops these, and an Adobe RGB image read as sRGB was 10.4 levels off on average (up to 142), a
ProPhoto one 21.7 (up to 150).

The reference is ImageMagick's `-profile srgb.icc` (its own reader of each container's profile,
LittleCMS at 16 bits): the pipeline's decode must come within a level of it. Profiles are
ghostscript's Adobe RGB (`a98.icc`) and ROMM RGB, which is ProPhoto (`rommrgb.icc`).
"""

from __future__ import annotations

import io
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from transforms.container_icc import gif_profile
from transforms.decode import decode_rgb, load_image

GHOSTSCRIPT = Path("/usr/share/color/icc/ghostscript")
PROFILES = ("a98.icc", "rommrgb.icc")


def _magick_srgb(path: Path) -> np.ndarray:
    """ImageMagick's reading of the file converted to sRGB by its embedded profile."""
    out = subprocess.run(["convert", str(path), "-profile", str(GHOSTSCRIPT / "srgb.icc"), "-depth", "8", "ppm:-"],
                         capture_output=True, check=True, timeout=60).stdout
    return np.asarray(Image.open(io.BytesIO(out)).convert("RGB"))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return data.astronaut()[::4, ::4].copy()  # 128 x 128, a real photo, its values read as the profile's


def _with_icc_colour(jp2: bytes, icc: bytes) -> bytes:
    """The JP2 with its header's `colr` box replaced by one of method 2 (a restricted ICC profile,
    ISO 15444-1 I.5.3.3: METH 2, PREC 0, APPROX 0, then the profile), as Photoshop and Kakadu
    write a tagged JP2 (OpenJPEG and ImageMagick write method 1, an enumerated sRGB)."""
    at = jp2.index(b"jp2h") - 4
    header_end = at + struct.unpack(">I", jp2[at : at + 4])[0]
    colr = jp2.index(b"colr", at) - 4
    colr_end = colr + struct.unpack(">I", jp2[colr : colr + 4])[0]
    box = b"\x02\x00\x00" + icc
    body = jp2[at + 8 : colr] + struct.pack(">I", 8 + len(box)) + b"colr" + box + jp2[colr_end:header_end]
    return jp2[:at] + struct.pack(">I", 8 + len(body)) + b"jp2h" + body + jp2[header_end:]


@pytest.mark.parametrize("name", PROFILES)
def test_a_jp2_with_an_icc_profile_is_converted_as_imagemagick_converts_it(photo, tmp_path, name):
    out = io.BytesIO()
    Image.fromarray(photo).save(out, "JPEG2000", irreversible=False)  # lossless: the pixels as stored
    path = tmp_path / "tagged.jp2"
    path.write_bytes(_with_icc_colour(out.getvalue(), (GHOSTSCRIPT / name).read_bytes()))
    expected = _magick_srgb(path)
    assert np.abs(expected.astype(int) - photo).mean() > 4  # read as sRGB it is off (Adobe RGB 4.7, ProPhoto 16.1)
    canvas = load_image(path.read_bytes(), 128, "center_crop")
    error = np.abs(canvas.pixels.astype(int) - expected)
    assert error.max() <= 1 and error.mean() < 0.5, (error.mean(), error.max())
    assert canvas.colour_profile  # the member names the profile
    assert np.array_equal(decode_rgb(out.getvalue()), photo)  # its untagged twin keeps its pixels


@pytest.mark.parametrize("fmt", ("gif", "bmp"))
@pytest.mark.parametrize("name", PROFILES)
def test_an_imagemagick_gif_or_bmp_with_a_profile_is_converted_as_imagemagick_converts_it(photo, tmp_path, fmt,
                                                                                          name):
    """ImageMagick carries a tagged PNG's profile into a GIF (an ICCRGBG1 application extension,
    which Chrome applies) and a BMP (a V5 header's embedded profile): both were read as sRGB."""
    tagged = tmp_path / "tagged.png"
    Image.fromarray(photo).save(tagged, icc_profile=(GHOSTSCRIPT / name).read_bytes())
    path = tmp_path / f"tagged.{fmt}"
    subprocess.run(["convert", str(tagged), str(path)], check=True, timeout=60)
    expected = _magick_srgb(path)
    as_stored = np.asarray(Image.open(path).convert("RGB"))
    assert np.abs(expected.astype(int) - as_stored).mean() > 4  # read as sRGB it is off
    canvas = load_image(path.read_bytes(), 128, "center_crop")
    error = np.abs(canvas.pixels.astype(int) - expected)
    assert error.max() <= 1 and error.mean() < 0.5, (error.mean(), error.max())
    assert canvas.colour_profile


def test_profiles_that_run_past_their_container_are_ignored(photo, tmp_path):
    """A BMP whose profile offset or size points past the file, a GIF cut inside its profile's
    sub-blocks: no profile is read past the bytes, the pixels are shown as stored."""
    tagged = tmp_path / "tagged.png"
    Image.fromarray(photo).save(tagged, icc_profile=(GHOSTSCRIPT / "a98.icc").read_bytes())
    subprocess.run(["convert", str(tagged), str(tmp_path / "t.bmp")], check=True, timeout=60)
    bmp = bytearray((tmp_path / "t.bmp").read_bytes())
    bmp[130:134] = (len(bmp)).to_bytes(4, "little")  # bV5ProfileSize: the whole file, from past the header
    plain = np.asarray(Image.open(io.BytesIO(bytes(bmp))).convert("RGB"))
    canvas = load_image(bytes(bmp), 128, "center_crop")
    assert canvas.colour_profile == "" and np.array_equal(canvas.pixels, plain)
    subprocess.run(["convert", str(tagged), str(tmp_path / "t.gif")], check=True, timeout=60)
    gif = (tmp_path / "t.gif").read_bytes()
    at = gif.index(b"ICCRGBG1")
    assert gif_profile(gif) and gif_profile(gif[: at + 300]) is None
