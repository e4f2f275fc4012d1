"""TIFFs behind the headers Pillow's open takes besides II*\\0 and MM\\0* (TiffImagePlugin.PREFIXES:
MM*\\0 and II\\0* "invalid, assume ...", and MM\\0+, which Pillow reads as a classic TIFF because its
third byte is not 0x2B). Each file is a real writer's (ImageMagick's, tifffile's, Pillow's) with only
its first four bytes patched, and each is checked against what Pillow does with it: the header
reads (`transforms.headers`) judge it as they judge the plain file."""

from __future__ import annotations

import io
import subprocess

import numpy as np
import pytest
import tifffile
from PIL import Image

from transforms import decode
from transforms.decode import DecodeError, load_image
from transforms.headers import declared_length, tiff_pages, tiff_values

_ODD = {"<": [b"II\x00*"], ">": [b"MM*\x00", b"MM\x00+"]}


def _magick(endian: str) -> bytes:
    """ImageMagick's uncompressed 40 x 30 RGB TIFF (libtiff's layout: the IFD after the pixels)."""
    return subprocess.run(["convert", "-size", "40x30", "gradient:red-blue", "-depth", "8", "-define",
                           f"tiff:endian={'lsb' if endian == '<' else 'msb'}", "-compress", "none", "tiff:-"],
                          capture_output=True, check=True).stdout


def _tifffile(endian: str, pages: int = 1) -> bytes:
    """tifffile's uncompressed 40 x 30 RGB TIFF of `pages` pages (its layout: each IFD before its pixels)."""
    out = io.BytesIO()
    pixels = np.arange(pages * 30 * 40 * 3, dtype=np.uint32).astype(np.uint8).reshape(pages, 30, 40, 3)
    tifffile.imwrite(out, pixels if pages > 1 else pixels[0], byteorder=endian, photometric="rgb")
    return out.getvalue()


def _cut(data: bytes, writer: str) -> bytes:
    """ImageMagick's cut in its IFD (a download's last bytes lost), tifffile's in its pixels."""
    ifd = int.from_bytes(data[4:8], "little" if data[:2] == b"II" else "big")
    return data[: ifd + 30] if writer == "magick" else data[: len(data) // 2]


def _pillow_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


_CASES = [(writer, endian, head) for writer in ("magick", "tifffile") for endian, heads in _ODD.items() for head in heads]


@pytest.fixture(scope="module")
def plain() -> dict[tuple[str, str], bytes]:
    return {(writer, endian): (_magick if writer == "magick" else _tifffile)(endian)
            for writer in ("magick", "tifffile") for endian in _ODD}


@pytest.mark.parametrize("writer, endian, head", _CASES)
def test_a_cut_tiff_behind_any_header_pillow_takes_is_truncated(plain, writer, endian, head):
    """The whole file behind the odd header is the plain one to Pillow (same pixels) and to the
    header reads (its declared length, its numbers, its page). Cut, it was `not_an_image` (ImageMagick's,
    cut in its IFD) or `decode_error` "the file holds every byte its IFD declares" (tifffile's, cut in
    its pixels): `declared_length` knew only II*\\0 and MM\\0* and read MM\\0+ as a BigTIFF. Now
    `truncated`, as the plain file cut alike is."""
    data = plain[writer, endian]
    patched = head + data[4:]
    assert np.array_equal(_pillow_pixels(patched), _pillow_pixels(data))
    assert (declared_length(patched), tiff_values(patched)) == (declared_length(data), tiff_values(data)) == (
        len(data), tiff_values(data)) and tiff_values(data) > 0
    whole = load_image(patched, 32, "center_crop")
    assert np.array_equal(whole.pixels, load_image(data, 32, "center_crop").pixels)
    cut = _cut(patched, writer)
    assert declared_length(cut) == declared_length(_cut(data, writer)) > len(cut)
    for file in (cut, _cut(data, writer)):
        with pytest.raises(DecodeError) as refused:
            load_image(file, 32, "center_crop")
        assert refused.value.reason == "truncated", refused.value


@pytest.mark.parametrize("head", [b"MM*\x00", b"MM\x00+"])
def test_the_pages_of_a_tiff_behind_any_header_pillow_takes_are_counted(head):
    """tifffile's 3-page TIFF behind MM*\\0 or MM\\0+: Pillow opens its 3 frames; the page walk said 1
    (it read MM\\0+ as a BigTIFF, MM*\\0 not at all)."""
    data = _tifffile(">", pages=3)
    patched = head + data[4:]
    with Image.open(io.BytesIO(patched)) as image:
        assert image.n_frames == 3
    assert tiff_pages(patched) == tiff_pages(data) and tiff_pages(data).count == 3


def _many_strips(endian: str) -> bytes:
    """A 2 x 60,000 greyscale TIFF a row a strip: Pillow's writer (little-endian, `tiffinfo={278: 1}`),
    tifffile's for big-endian (`rowsperstrip=1`); 120,000 numbers in its IFD."""
    out = io.BytesIO()
    if endian == "<":
        Image.new("L", (2, 60_000), 128).save(out, "TIFF", tiffinfo={278: 1})
    else:
        tifffile.imwrite(out, np.full((60_000, 2), 128, np.uint8), byteorder=">", photometric="minisblack",
                         rowsperstrip=1)
    return out.getvalue()


@pytest.mark.parametrize("endian, head", [(endian, head) for endian, heads in _ODD.items() for head in heads])
def test_a_tiff_of_many_strips_behind_any_header_pillow_takes_is_refused_before_open(monkeypatch, endian, head):
    """A TIFF a row a strip holds a number a row that Pillow's open makes an object of (`tiff_values`),
    weighed before `Image.open`. Behind an odd header it counted 0 numbers, and Pillow opened it
    (the same 2 x 60,000 file's pixels); now `image_too_large` unopened, as the plain file is."""
    data = _many_strips(endian)
    patched = head + data[4:]
    with Image.open(io.BytesIO(patched)) as image:
        assert image.size == (2, 60_000) and len(image.tile) == 60_000  # Pillow reads every strip's numbers
    budget = 16 << 20  # scaled down to this small file: 120,000 numbers at TIFF_VALUE_BYTES each
    assert tiff_values(patched) == tiff_values(data) >= 120_000
    assert tiff_values(data) * decode.TIFF_VALUE_BYTES > budget
    opened, image_open = [], Image.open
    monkeypatch.setattr(decode.Image, "open", lambda *a, **k: opened.append(a) or image_open(*a, **k))
    for file in (patched, data):
        with pytest.raises(DecodeError) as refused:
            load_image(file, 32, "center_crop", max_bytes=budget)
        assert refused.value.reason == "image_too_large", refused.value
    assert not opened


def test_a_big_endian_bigtiff_is_judged_as_its_writer_laid_it_out():
    """tifffile's big-endian BigTIFF begins MM\\0+ too (then offset size 8): Pillow reads it as a classic
    TIFF and cannot open it; it is whole, and its 3 pages and 8 strips a page are read as a BigTIFF's, not
    called cut (read as Pillow reads it, its IFD lay at 524,288 of 12 KB: "truncated"). It passes on
    main: it holds the first reading of this change to the old judgement."""
    out = io.BytesIO()
    tifffile.imwrite(out, np.zeros((3, 32, 40, 3), np.uint8), byteorder=">", bigtiff=True, photometric="rgb",
                     rowsperstrip=4)
    data = out.getvalue()
    assert data[:8] == b"MM\x00+\x00\x08\x00\x00"
    with pytest.raises(Exception):
        Image.open(io.BytesIO(data))
    assert declared_length(data) <= len(data) and tiff_pages(data).count == 3 and tiff_values(data) >= 16
    with pytest.raises(DecodeError) as refused:
        load_image(data, 32, "center_crop")
    assert refused.value.reason != "truncated", refused.value


def test_a_big_endian_bigtiff_past_512_kib_is_not_weighed_by_the_pixels_a_classic_reading_lands_in():
    """rev56k: read as Pillow reads it (a classic TIFF), a big-endian BigTIFF's first IFD lies at
    524,288, inside the pixels of any file that long; their garbage entry counts said 12,143,742,926
    numbers, and a whole 1000 x 1000 file tifffile wrote was `image_too_large` ("about 2316235 MiB
    opening it"), where Pillow gives up on it in 0.08 s. A value the file cannot hold is not counted,
    as Pillow skips it, so only what the file declares as the writer laid it out is weighed."""
    out = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (1000, 1000, 3), dtype=np.uint8)
    tifffile.imwrite(out, noise, byteorder=">", bigtiff=True, photometric="rgb")
    data = out.getvalue()
    assert data[:8] == b"MM\x00+\x00\x08\x00\x00" and len(data) > 600_000
    assert tiff_values(data) < 1000
    with pytest.raises(DecodeError) as refused:
        load_image(data, 32, "center_crop")
    assert refused.value.reason not in ("image_too_large", "truncated"), refused.value


@pytest.mark.parametrize("writer", ["tifffile", "imagemagick"])
def test_a_whole_big_endian_bigtiff_is_named_as_the_layout_pillow_cannot_read(tmp_path, writer):
    """A whole big-endian BigTIFF (tifffile's bigtiff=True byteorder='>', ImageMagick's TIFF64: with
    tiff:endian=msb) is a real picture Pillow cannot open (it reads MM\\0+ as a classic TIFF): it was
    `not_an_image`, "no image format recognises these bytes" (rev56k #3); it is `unsupported_format`
    naming the layout, as other TIFF layouts Pillow cannot read are."""
    import shutil
    import subprocess

    if writer == "tifffile":
        out = io.BytesIO()
        tifffile.imwrite(out, np.zeros((32, 40, 3), np.uint8), byteorder=">", bigtiff=True, photometric="rgb")
        data = out.getvalue()
    else:
        if shutil.which("convert") is None:
            pytest.skip("ImageMagick's convert is not installed (make imagemagick)")
        path = tmp_path / "msb.tif"
        subprocess.run(["convert", "-size", "40x32", "gradient:red-blue", "-define", "tiff:endian=msb",
                        f"TIFF64:{path}"], check=True)
        data = path.read_bytes()
    assert data[:8] == b"MM\x00+\x00\x08\x00\x00"
    with pytest.raises(DecodeError) as refused:
        load_image(data, 32, "center_crop")
    assert refused.value.reason == "unsupported_format", refused.value
    assert "BigTIFF, big-endian: a layout Pillow cannot read" in refused.value.detail, refused.value.detail
