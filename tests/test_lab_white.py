"""A CIELab TIFF's WhitePoint tag honoured (`transforms.lab_white`). The files are ImageMagick's
(6.9.11 Q16, `tests/fixtures/lab/README.md`): `convert hald:3 -depth 8 -colorspace Lab` (a
Hald identity image: 729 colours of every 0..255 step of 32, its primaries at full strength) and
the astronaut crop, both D65 Lab, as ImageMagick writes it and says in the tag. Pillow reads
every Lab as D50. The reference is exact colorimetry: CIE 1976 L*a*b* of a D65 white to XYZ, to
linear sRGB by IEC 61966-2-1's matrix, clipped, encoded."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from transforms.decode import decode_rgb, load_image

LAB = Path(__file__).resolve().parent / "fixtures" / "lab"
_D65 = np.array([0.95047, 1.0, 1.08883])
_XYZ_TO_SRGB = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])


def _exact_d65(path: Path) -> np.ndarray:
    """The file's 8-bit CIELab (L* 0..100 as 0..255, a* b* signed) of a D65 white in sRGB."""
    stored = tifffile.imread(path)
    light = stored[..., 0].astype(float) * 100 / 255
    a, b = (stored[..., i].astype(np.uint8).view(np.int8).astype(float) for i in (1, 2))
    fy = (light + 16) / 116
    f = np.stack([fy + a / 500, fy, fy - b / 200], axis=-1)
    xyz = np.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _D65
    linear = np.clip(xyz @ _XYZ_TO_SRGB.T, 0, 1)
    encoded = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.floor(encoded * 255 + 0.5).astype(np.int16)


@pytest.mark.parametrize("name", ["tiff_lab_hald.tif", "tiff_lab.tif"])
def test_d65_lab_tiff_is_read_from_its_white(name: str):
    """Read as D50 the Hald colours were 6.0 levels from colorimetry on average, 89 at most (pure
    blue came out (85, 0, 254)), the photo 0.8 and 5; now within a level, and the record names
    the white it was adapted from."""
    data = (LAB / name).read_bytes()
    assert Image.open(io.BytesIO(data)).tag_v2.get(318) == pytest.approx((0.3127, 0.3290), abs=1e-6)
    got = decode_rgb(data)
    assert np.abs(got.astype(np.int16) - _exact_d65(LAB / name)).max() <= 1
    if name == "tiff_lab_hald.tif":  # its last row's first colour is the source's pure blue (0, 0, 255)
        assert np.abs(got[24, 0].astype(np.int16) - (0, 0, 255)).max() <= 3
    assert load_image(data, 16, "squash").colour_profile == "TIFF CIELab, white 0.3127,0.3290"


def test_d50_or_no_white_point_keeps_pillows_reading():
    """The same samples written by tifffile without a WhitePoint tag, or with D50's (Photoshop's
    Lab), decode byte for byte as Pillow's LittleCMS D50 conversion, as before."""
    stored = tifffile.imread(LAB / "tiff_lab_hald.tif")
    for extratags in ([], [(318, 5, 2, (3457, 10000, 3585, 10000), True)]):
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, stored, photometric=8, extratags=extratags)
        data = buffer.getvalue()
        image = Image.open(io.BytesIO(data))
        assert image.mode == "LAB"
        assert np.array_equal(decode_rgb(data), np.asarray(image.convert("RGB")))
    # the D65 file read as D50 is another picture: what the fix changes
    d65 = (LAB / "tiff_lab_hald.tif").read_bytes()
    assert not np.array_equal(decode_rgb(d65), np.asarray(Image.open(io.BytesIO(d65)).convert("RGB")))
