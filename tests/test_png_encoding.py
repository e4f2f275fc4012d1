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


def test_decode_png_without_opencvs_rgb_flag(photo, monkeypatch):
    """OpenCV before 4.10 has no IMREAD_COLOR_RGB: decode to BGR and swap, the same pixels."""
    from uvd_pipeline import render

    png = encode_png(photo, 1)
    monkeypatch.setattr(render, "_IMREAD_RGB", None)
    back = render.decode_png(png)
    assert np.array_equal(back, photo) and back.flags["C_CONTIGUOUS"]
    with pytest.raises(ValueError, match="not a PNG"):
        render.decode_png(b"not a png at all")


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (37, 53), (256, 256)])
def test_default_level_is_exact_on_any_shape_and_values(shape):
    """Level 1's own writer (`png_fast`): noise with every byte value, at shapes with one row or one
    column (the Avg filter's edges), read back by Pillow and by OpenCV, both independent of it."""
    import cv2

    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    pixels.reshape(-1)[:2] = (0, 255)
    png = encode_png(pixels, 1)
    assert set(row_filters(png)) == {3}
    image = Image.open(io.BytesIO(png))
    assert (image.mode, image.size) == ("RGB", (shape[1], shape[0]))
    assert np.array_equal(np.asarray(image), pixels)
    assert np.array_equal(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)[:, :, ::-1], pixels)


def test_default_level_is_as_small_as_libpngs_and_checks_its_chunks(photo):
    """The same filter through libpng and zlib's level 1 gives about the same size; each chunk's
    CRC is right (Pillow verifies them)."""
    import cv2

    from uvd_pipeline.render import png_params

    ours = encode_png(photo, 1)
    ok, theirs = cv2.imencode(".png", photo[:, :, ::-1], png_params(1))
    assert ok and 0.9 < len(ours) / len(theirs) < 1.05
    Image.open(io.BytesIO(ours)).verify()


def test_default_level_refuses_what_is_not_rgb():
    from uvd_pipeline.png_fast import encode_rgb_png

    with pytest.raises(ValueError, match="uint8"):
        encode_rgb_png(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        encode_rgb_png(np.zeros((4, 4, 3), np.float32))
