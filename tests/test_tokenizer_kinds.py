"""The tokenizer's reader (`tokenizer.data.decode_image`, what `tokenizer.fit`, `evaluate` and
`trainer.generate` read files with) gives the build's reasons and pixels on files Pillow will not
open as they are: ImageMagick's (tests/fixtures/magick) and Pillow's, each compared with the
build's `decode_rgb` of the same bytes. `tokenizer.image_kinds` is a mirror, held equal here."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import pytest

from tokenizer import image_kinds, png_chunks
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


A98 = Path("/usr/share/color/icc/ghostscript/a98.icc")


def _with_crc(data: bytes, kind: bytes, crc: int) -> bytes:
    """`data` with the CRC of its first `kind` chunk replaced by `crc` (a flipped bit in transit)."""
    start = data.index(kind) - 4
    end = start + 8 + int.from_bytes(data[start : start + 4], "big")
    return data[:end] + crc.to_bytes(4, "big") + data[end + 4 :]


def test_a_png_whose_profile_inflates_past_a_mib_is_converted_as_the_build_converts_it():
    """Pillow refuses an iCCP inflating past 1 MiB: it was `corrupt_header` here, decoded (its
    Adobe RGB converted) by the build."""
    from test_tokenizer_shown import _photo, _saved

    data = _saved(_photo(), "PNG", icc_profile=A98.read_bytes() + bytes(4 << 20))
    build, ours = _both(data)
    assert isinstance(build, np.ndarray) and np.array_equal(ours, build)
    assert np.abs(build.astype(int) - _photo()).max() > 10  # converted, not read as sRGB
    past = _saved(_photo(), "PNG", icc_profile=A98.read_bytes() + bytes(png_chunks.MAX_PNG_PROFILE))
    assert _both(past) == ("image_too_large", "image_too_large")


def test_a_bad_crc_exif_after_the_pixels_is_refused_and_a_bad_crc_text_dropped_as_the_build_does():
    from test_tokenizer_shown import _exif_of, _photo, _png_with_chunks, _saved

    turned = _saved(_photo(), "PNG", exif=_exif_of(6))  # Pillow's eXIf, moved whole after IDAT, its CRC flipped
    start = turned.index(b"eXIf") - 4
    chunk = turned[start : start + 12 + int.from_bytes(turned[start : start + 4], "big")]
    plain = turned[:start] + turned[start + len(chunk):]
    exif_after = _with_crc(plain[:-12] + chunk + plain[-12:], b"eXIf", 5)
    assert _both(exif_after) == ("corrupt_header", "corrupt_header")
    text_before = _with_crc(_png_with_chunks((b"tEXt", b"Comment\0made by a camera", False)), b"tEXt", 5)
    build, ours = _both(text_before)
    assert isinstance(build, np.ndarray) and np.array_equal(ours, build)


def test_the_mirrored_png_pieces_equal_the_builds():
    from test_tokenizer_shown import _exif_of, _photo, _png_with_chunks, _saved

    from transforms import png_chunks as build_png

    ours = png_chunks
    assert (ours.PNG_PIXEL_CHUNKS, ours.PNG_ANIMATION_CHUNKS, ours.PNG_TEXT) == (
        build_png._PNG_PIXEL_CHUNKS, build_png._PNG_ANIMATION_CHUNKS, build_png._PNG_TEXT)
    assert (ours.PILLOW_PROFILE, ours.MAX_PNG_PROFILE, ours.PLAIN_TEXT_KEPT) == (
        build_png._PILLOW_PROFILE, build_png.MAX_PNG_PROFILE, build_png._PLAIN_TEXT_KEPT)
    big = A98.read_bytes() + bytes(2 << 20)
    for data in (_saved(_photo(), "PNG"), _saved(_photo(), "PNG", icc_profile=big),
                 _png_with_chunks((b"zTXt", b"Comment\0\0" + zlib.compress(bytes(2 << 20)), False)),
                 _with_crc(_png_with_chunks((b"tEXt", b"Comment\0x", False)), b"tEXt", 5),
                 _png_with_chunks((b"prVt", b"private", False), (b"tEXt", b"Comment\0y", True)),
                 _saved(_photo(), "PNG", exif=_exif_of(6))[:200]):
        assert ours.without_png_text(data) == build_png.without_png_text(data)
        assert ours.png_profile_past_pillow(data) == build_png.png_profile_past_pillow(data)
