"""The rendered images' PNG encoding, read back by independent readers (Pillow, zlib)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from skimage import data

from uvd_pipeline.render import encode_png


def row_filters(png: bytes) -> list[int]:
    """The filter type byte of every row, from the PNG's own chunks (8-bit RGB, not interlaced)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(png):
        length, tag = struct.unpack(">I4s", png[pos : pos + 8])
        body = png[pos + 8 : pos + 8 + length]
        if tag == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, colour, interlace) == (8, 2, 0)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = 1 + 3 * width
    assert len(raw) == stride * height
    return [raw[row * stride] for row in range(height)]


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
