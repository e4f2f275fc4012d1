"""The tokenizer's reader (`tokenizer.data.decode_image`, what `tokenizer.fit`, `evaluate` and
`trainer.generate` read files with) gives the build's reasons and pixels on files Pillow will not
open as they are: ImageMagick's (tests/fixtures/magick) and Pillow's, each compared with the
build's `decode_rgb` of the same bytes. `tokenizer.image_kinds` is a mirror, held equal here."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from tokenizer import image_kinds
from tokenizer.data import UnreadableImage, decode_image
from transforms import image_format, tiff_head
from transforms.decode import DecodeError, decode_rgb

MAGICK = Path(__file__).resolve().parent / "fixtures" / "magick"


def _both(data: bytes) -> tuple[object, object]:
    """(the build's pixels or reason, the tokenizer's pixels or reason) of the same bytes."""
    try:
        build: object = decode_rgb(data)
    except DecodeError as exc:
        build = exc.reason
    try:
        ours: object = decode_image(data)
    except UnreadableImage as exc:
        ours = exc.reason
    return build, ours


@pytest.mark.parametrize("name", ["exr.exr", "hdr.hdr", "pfm.pfm", "pam.pam", "dpx.dpx", "miff.miff", "psd16.psd",
                                  "tiff_float.tif", "tiff_half_grey.tif", "fits16.fits"])
def test_imagemagick_formats_the_build_cannot_decode_are_refused_with_its_reason(name):
    """Each was `not_an_image` to the tokenizer (junk), the 16-bit FITS decoded wrapped."""
    build, ours = _both((MAGICK / name).read_bytes())
    assert build == ours == "unsupported_format"


def test_a_photoshop_file_cut_or_damaged_is_corrupt_header_as_the_build_says():
    data = (MAGICK / "psd8.psd").read_bytes()
    for broken in (data[:20], data[:26] + b"\xff" * 40):
        build, ours = _both(broken)
        assert build == ours == "corrupt_header"


def test_the_mirrored_pieces_equal_the_builds():
    assert image_kinds.OTHER_MAGICS == image_format._OTHER_MAGICS
    assert image_kinds.PILLOW_PSD == image_format._PILLOW_PSD
    assert (image_kinds.FITS_CARD, image_kinds.FITS_HEADER_CARDS) == (image_format._FITS_CARD,
                                                                      image_format._FITS_HEADER_CARDS)
    assert set(image_kinds.TIFF_CLASSIC_HEADS) == set(tiff_head.TIFF_HEADS) - {b"II+\x00"}
    fits = (MAGICK / "fits16.fits").read_bytes()
    eight = fits.replace(b"BITPIX  =                   16", b"BITPIX  =                    8", 1)
    for data in (fits, eight, fits[:2880].replace(b"END ", b"ENX ")):
        assert (image_kinds.fits_misread(data) is None) == (image_format.fits_misread(data) is None)


def test_the_fixtures_the_build_decodes_are_not_refused_here():
    for name in ("psd8.psd", "tiff_lzw.tif", "pgm16.pgm"):
        build, ours = _both((MAGICK / name).read_bytes())
        assert isinstance(build, np.ndarray) and np.array_equal(build, ours), name


@pytest.mark.parametrize("name", ["xpm16.xpm", "gif_outside.gif"])
def test_a_16_bit_xpm_and_a_gif_frame_past_its_screen_read_as_the_build_shows_them(name):
    """ImageMagick's 16-bit XPM was up to 249 levels off the build's pixels; the GIF whose first
    frame lies at +10+6 of its 32x24 screen was 42x30 here, 32x24 to the build."""
    build, ours = _both((MAGICK / name).read_bytes())
    assert isinstance(build, np.ndarray) and isinstance(ours, np.ndarray)
    assert ours.shape == build.shape and np.array_equal(ours, build)


def test_the_mirrored_xpm_and_gif_pieces_equal_the_builds():
    from PIL import Image

    from tokenizer import xpm_gif
    from transforms import headers, image_orientation, xpm_colours

    assert xpm_gif.XPM_COLOUR.pattern == xpm_colours._COLOUR.pattern
    assert (xpm_gif.GIF_SIGNATURES, xpm_gif.GIF_SCREEN) == (headers.GIF_SIGNATURES, headers.GIF_SCREEN)
    xpm = (MAGICK / "xpm16.xpm").read_bytes()
    twelve = xpm_colours._COLOUR.sub(lambda m: m.group(1) + b"".join(m.group(2)[i:i + 3] for i in (0, 4, 8)), xpm)
    for data in (xpm, twelve, xpm_colours.xpm_for_pillow(xpm)):
        assert xpm_gif.xpm_for_pillow(data) == xpm_colours.xpm_for_pillow(data)
    gif = (MAGICK / "gif_outside.gif").read_bytes()
    for screen in (b"\x20\x00\x18\x00", b"\x00\x00\x00\x00", b"\x40\x00\x40\x00", b"\x08\x00\x40\x00"):
        data = gif[:6] + screen + gif[10:]
        with Image.open(io.BytesIO(data)) as image:
            assert xpm_gif.gif_screen_box(image.size, data) == image_orientation._gif_screen_box(image, data)
