"""JPEG 2000 files of more than 8 bits a sample, as ImageMagick writes them (`-depth 16`, `-depth 12`:
lossless, OpenJPEG underneath), decode to the picture they hold: Pillow's reduction to 8 bits wrapped
full-scale samples to 0 (a white highlight came out [248, 254, 0])."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import skimage
from PIL import Image

from transforms import decode, jpeg2000
from transforms.errors import DecodeError

ASTRONAUT = Path(os.path.dirname(skimage.__file__)) / "data" / "astronaut.png"


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A real photo whose suit and lights reach full scale (255 in some channel at 405 of its pixels)."""
    folder = tmp_path_factory.mktemp("jp2")
    pixels = np.asarray(Image.open(ASTRONAUT).convert("RGB"))[256:, 128:448]
    assert (pixels == 255).any(-1).sum() == 405
    Image.fromarray(pixels).save(folder / "base.png")
    return folder, pixels


def _magick(folder: Path, *args: str) -> bytes:
    subprocess.run(["convert", str(folder / "base.png"), *args], check=True, cwd=folder)
    return (folder / args[-1]).read_bytes()


@pytest.mark.parametrize("depth", [16, 12])
def test_deep_rgb_jpeg2000_decodes_to_its_picture(photo, depth):
    folder, pixels = photo
    data = _magick(folder, "-depth", str(depth), f"rgb{depth}.jp2")
    assert jpeg2000.sample_layout(data) == ((depth, False, 1, 1),) * 3
    assert np.array_equal(decode.decode_rgb(data), pixels)  # lossless: every level back, highlights too
    canvas = decode.load_image(data, 128, "center_crop").pixels
    png = decode.load_image((folder / "base.png").read_bytes(), 128, "center_crop").pixels
    assert np.array_equal(canvas, png)


def test_deep_rgba_jpeg2000_is_composited_from_its_full_precision(photo):
    folder, pixels = photo
    data = _magick(folder, "-alpha", "set", "-channel", "A", "-fx", "0.3+0.7*(i/w)", "+channel", "-depth", "16",
                   "rgba16.jp2")
    flat = _magick(folder, "-alpha", "set", "-channel", "A", "-fx", "0.3+0.7*(i/w)", "+channel", "-depth", "16",
                   "-background", "white", "-flatten", "-depth", "8", "flat.png")
    ours = decode.decode_rgb(data).astype(int)
    theirs = np.asarray(Image.open(folder / "flat.png").convert("RGB")).astype(int)
    assert flat and np.abs(ours - theirs).max() <= 1  # ImageMagick's own composite on white


def test_a_cut_deep_jpeg2000_is_still_truncated_and_a_grey_one_unchanged(photo):
    folder, pixels = photo
    data = _magick(folder, "-depth", "16", "cut.jp2")
    assert jpeg2000.sample_layout(data[: len(data) // 2]) is None  # no end of codestream: Pillow judges it
    with pytest.raises(DecodeError) as raised:
        decode.decode_rgb(data[: len(data) // 2])
    assert raised.value.reason == "truncated"
    grey = _magick(folder, "-colorspace", "gray", "-depth", "16", "grey16.jp2")
    _magick(folder, "-colorspace", "gray", "-depth", "8", "grey8.png")
    expected = np.asarray(Image.open(folder / "grey8.png").convert("L")).astype(int)
    with Image.open(folder / "grey16.jp2") as opened:
        assert opened.mode == "I;16" and jpeg2000.precise(opened, grey) is None  # Pillow keeps its 16 bits
    assert np.abs(decode.decode_rgb(grey)[..., 0] - expected).max() <= 1


def test_a_raw_deep_codestream_decodes_in_silence_and_an_sycc_one_is_left_to_openjpeg(photo, capfd):
    """A raw `.j2k` codestream names no colour space: OpenCV warned on stderr for each one ("SRGB
    is assumed"), between the build's log lines; it is read as sRGB, as Pillow reads it, quietly.
    A JP2 whose `colr` box says sYCC (18) is not OpenCV's: it converts such samples with analog
    YUV coefficients (every pixel of a 12-bit one off, a review found), OpenJPEG's own conversion
    through Pillow does it as ImageMagick does."""
    folder, pixels = photo
    raw = _magick(folder, "-depth", "16", "raw16.j2k")
    assert raw.startswith(b"\xff\x4f\xff\x51")
    capfd.readouterr()
    assert np.array_equal(decode.decode_rgb(raw), pixels)
    assert capfd.readouterr().err == ""
    data = bytearray(_magick(folder, "-depth", "16", "srgb16.jp2"))
    at = data.find(b"colr")
    assert data[at + 4] == 1 and int.from_bytes(data[at + 7 : at + 11], "big") == 16  # enumerated sRGB
    data[at + 7 : at + 11] = (18).to_bytes(4, "big")
    with Image.open(io.BytesIO(bytes(data))) as opened:
        assert jpeg2000.precise(opened, bytes(data)) is None
