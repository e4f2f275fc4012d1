"""The rendered images' PNG encoding, read back by independent readers (Pillow, zlib)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data

from conftest import png_row_filters as row_filters

from uvd_pipeline.render import encode_png


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[::2, ::2])  # 256 x 256 RGB, a real photo


@pytest.mark.parametrize("level, filters", [(0, {0}), (1, {3})])
def test_speed_levels_use_one_filter_and_stay_lossless(photo, level, filters):
    png = encode_png(photo, level)
    assert set(row_filters(png)) == filters  # 0: None, 3: Avg
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), photo)


def test_size_levels_keep_the_adaptive_filter_choice(photo):
    level1, level6 = encode_png(photo, 1), encode_png(photo, 6)
    assert len(set(row_filters(level6))) > 1  # libpng chose per row
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(level6)).convert("RGB")), photo)
    assert len(level6) < len(level1)


@pytest.mark.parametrize("view", ["crop", "channels reversed", "flipped", "every other column"])
def test_any_view_of_an_image_encodes_and_decodes_to_its_pixels(photo, view):
    """The channel swap is OpenCV's, which takes numpy views of any strides; Pillow (its own PNG
    reader) sees the RGB order, and `decode_png` gives a contiguous RGB array back."""
    from uvd_pipeline.render import decode_png

    pixels = {"crop": photo[16:200, 8:240], "channels reversed": photo[:, :, ::-1], "flipped": photo[::-1, ::-1],
              "every other column": photo[:, ::2]}[view]
    png = encode_png(pixels, 1)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), pixels)
    back = decode_png(png)
    assert np.array_equal(back, pixels) and back.flags["C_CONTIGUOUS"]
