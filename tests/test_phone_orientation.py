"""Phone photos' orientation in AVIF and HEIC: the container's `irot` (rotation) and `imir` (mirror)
properties turn the picture, and an EXIF or XMP orientation beside them is ignored, as the HEIF
spec says and libheif (`heif-convert`) does; a `clap` (clean aperture) crops it first. A JPEG's or
WebP's XMP orientation is ignored too: only its EXIF one turns it.

The files are written by Pillow's AVIF plugin (libavif: it turns an EXIF orientation given to `save`
into irot/imir) and by pillow-heif (libheif, x265: irot/imir, and it keeps the EXIF tag too, as an
iPhone does) from a real photo, a 320 x 240 crop so that a wrong turn shows in the shape. The
expectation is the spec's own reading of the boxes (irot: 90 degrees anti-clockwise times its
angle, then imir: axis 0 exchanges top and bottom, 1 left and right) on the unturned decode,
and, where installed (`make system-tools`), libheif's `heif-convert` on the same file.
Measured: against the photo turned by the EXIF value written, PSNR 39-41 dB (the encode's loss);
against heif-convert, 46 dB (AVIF, 4:2:0: its chroma upsampling is not libavif's) and 71 dB
(HEIC, a grid of tiles too); a wrong turn is a shape mismatch or 7-9 dB. The clap is added by hand (Pillow writes
none): 49 dB against heif-convert.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from transforms.decode import decode_rgb, load_image
from transforms.headers import clean_aperture
from uvd_pipeline.sample import media

XMP_ORIENTATION_6 = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-'
                     b'syntax-ns#"><rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
                     b'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(media.photo("astronaut")[40:280, 100:420])  # 320 x 240


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Apple"
    return exif.tobytes()


def _avif(image: Image.Image, **options) -> bytes:
    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF plugin")
    buf = io.BytesIO()
    image.save(buf, "AVIF", quality=90, speed=8, **options)
    return buf.getvalue()


def _property(data: bytes, kind: bytes) -> int | None:
    """The one-byte payload of a `kind` item property (irot, imir), None when the file has none."""
    at = data.find(kind)
    return data[at + 4] & 0x03 if at >= 4 and int.from_bytes(data[at - 4 : at], "big") == 9 else None


def _by_spec(coded: np.ndarray, data: bytes) -> np.ndarray:
    """The coded pixels turned as ISO/IEC 23008-12 says: irot first, then imir."""
    out = np.rot90(coded, _property(data, b"irot") or 0)
    axis = _property(data, b"imir")
    return out if axis is None else out[::-1] if axis == 0 else out[:, ::-1]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def _heif_convert(data: bytes, folder: Path, suffix: str) -> np.ndarray | None:
    """libheif's decode of the file (irot, imir and clap applied), None without the tool unless
    `UVD_REQUIRE_HEIF_CONVERT` is set (`make test`, whose `system-tools` installs it)."""
    if shutil.which("heif-convert") is None:
        if os.environ.get("UVD_REQUIRE_HEIF_CONVERT"):
            pytest.fail("UVD_REQUIRE_HEIF_CONVERT is set but heif-convert (libheif-examples) is not installed")
        return None
    source, out = folder / f"in.{suffix}", folder / "out.png"
    source.write_bytes(data)
    subprocess.run(["heif-convert", str(source), str(out)], check=True, capture_output=True, timeout=60)
    return np.asarray(Image.open(out).convert("RGB"))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_avif_irot_imir_are_applied(photo: Image.Image, orientation: int, tmp_path: Path):
    data = _avif(photo, exif=_exif(orientation))
    boxes = _property(data, b"irot") is not None or _property(data, b"imir") is not None
    assert boxes == (orientation != 1)
    coded = np.asarray(Image.open(io.BytesIO(_avif(photo))).convert("RGB"))  # same encoder, same pixels
    ours = decode_rgb(data)
    assert np.array_equal(ours, _by_spec(coded, data))
    turned = np.asarray(photo if orientation == 1 else photo.transpose(_TRANSPOSE[orientation]))
    assert _psnr(ours, turned) > 35  # the encode's loss only (measured 39-41 dB)
    decoded = load_image(data, 64, "squash")
    assert (decoded.width, decoded.height) == turned.shape[1::-1]
    reference = _heif_convert(data, tmp_path, "avif")
    if reference is not None:
        assert _psnr(ours, reference) > 40  # measured 46 dB (4:2:0 chroma upsampled differently)


_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def test_avif_xmp_orientation_is_ignored(photo: Image.Image, tmp_path: Path):
    """No irot, an XMP tiff:Orientation 6 (an editor's export): shown as coded. It was turned
    (Pillow's `getexif` reads XMP when there is no EXIF)."""
    data = _avif(photo, xmp=XMP_ORIENTATION_6)
    assert _property(data, b"irot") is None and b"tiff:Orientation" in data
    ours = decode_rgb(data)
    assert np.array_equal(ours, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    assert load_image(data, 64, "squash").width == 320
    reference = _heif_convert(data, tmp_path, "avif")
    if reference is not None:
        assert _psnr(ours, reference) > 40  # measured 46 dB (4:2:0 chroma upsampled differently)


@pytest.mark.parametrize("kind", ["JPEG", "WEBP"])
def test_an_xmp_orientation_alone_does_not_turn_a_jpeg_or_webp(photo: Image.Image, kind: str):
    """A JPEG or WebP whose only orientation is an XMP `tiff:Orientation` (an editor's export) is
    shown as stored, as browsers, libvips and ImageMagick show it (`convert -auto-orient` keeps
    320 x 240); it was turned 90 degrees. Beside an EXIF orientation, the EXIF one turns it once."""
    buf = io.BytesIO()
    photo.save(buf, kind, quality=90, xmp=XMP_ORIENTATION_6)
    data = buf.getvalue()
    assert b"tiff:Orientation" in data and Image.open(io.BytesIO(data)).getexif().get(0x0112) == 6  # Pillow's reading
    assert np.array_equal(decode_rgb(data), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    assert load_image(data, 64, "squash").width == 320
    both = io.BytesIO()
    photo.save(both, kind, quality=90, xmp=XMP_ORIENTATION_6, exif=_exif(6))
    assert decode_rgb(both.getvalue()).shape == (320, 240, 3)


@pytest.mark.parametrize("orientation, tile", [(5, 0), (6, 0), (8, 0), (6, 128)])
def test_heic_irot_and_its_exif_turn_once(photo: Image.Image, orientation: int, tile: int, tmp_path: Path):
    """pillow-heif writes irot/imir and keeps the EXIF tag (as iPhones do): turned once, not twice.
    With `tile`, a grid of tiles (an iPhone's: 512) assembled by libheif."""
    pillow_heif = pytest.importorskip("pillow_heif")
    if not pillow_heif.libheif_info().get("HEIF"):
        pytest.skip("this libheif cannot encode HEIC")
    buf = io.BytesIO()
    photo.save(buf, "HEIF", quality=95, exif=_exif(orientation), **({"tile_size": tile} if tile else {}))
    data = buf.getvalue()
    assert (b"grid" in data) == bool(tile)
    assert _property(data, b"irot") is not None
    kept = Image.Exif()
    kept.load(data[max(data.find(b"II*\x00"), data.find(b"MM\x00*")) :])
    assert kept[0x0112] == orientation
    ours = decode_rgb(data)
    turned = np.asarray(photo.transpose(_TRANSPOSE[orientation]))
    assert _psnr(ours, turned) > 35  # measured 41 dB
    decoded = load_image(data, 64, "squash")
    assert (decoded.width, decoded.height) == (240, 320)
    reference = _heif_convert(data, tmp_path, "heic")
    if reference is not None:
        assert _psnr(ours, reference) > 60  # measured 71 dB


def _as_pq(data: bytes) -> bytes:
    """The file with its nclx colour box declaring BT.2020 PQ (same size: only the numbers change)."""
    at = data.index(b"colrnclx") + 8
    return data[:at] + (9).to_bytes(2, "big") + (16).to_bytes(2, "big") + data[at + 4 :]


def test_rotated_hdr_avif_is_tone_mapped(photo: Image.Image):
    """irot/imir reach Pillow as EXIF orientation, and the turned copy lost the AVIF format:
    a rotated PQ photo was shown untone-mapped (16.8 dB against its unrotated decode turned)."""
    plain, rotated = _as_pq(_avif(photo)), _as_pq(_avif(photo, exif=_exif(6)))
    assert _property(rotated, b"irot") == 3
    assert np.array_equal(decode_rgb(rotated), np.rot90(decode_rgb(plain), 3))
    assert load_image(rotated, 64, "squash").colour_profile == "HDR PQ (nclx), tone-mapped"


def _grow(data: bytes, at: int, by: int) -> bytes:
    """The box starting at `at` with its 32-bit size grown by `by`."""
    return data[:at] + (int.from_bytes(data[at : at + 4], "big") + by).to_bytes(4, "big") + data[at + 4 :]


def _with_clap(data: bytes, image_size: tuple[int, int], box: tuple[int, int, int, int]) -> bytes:
    """Pillow's AVIF (ftyp, meta, mdat) with a `clap` property added to its one item, written by hand
    as ISO/IEC 23008-12 has it: the crop's size and its centre's offset from the image's centre."""
    (width, height), (x, y, w, h) = image_size, box
    clap = (40).to_bytes(4, "big") + b"clap" + b"".join(
        v.to_bytes(4, "big", signed=True) for v in (w, 1, h, 1, 2 * x + w - width, 2, 2 * y + h - height, 2))
    meta, iloc, iprp = data.index(b"meta") - 4, data.index(b"iloc") - 4, data.index(b"iprp") - 4
    ipco, ipma = data.index(b"ipco") - 4, data.index(b"ipma") - 4
    assert data[iloc + 8 : iloc + 16].hex() == "0000000044000001", "an iloc layout this helper does not know"
    kinds = list(_box_types(data, ipco + 8, ipma))
    count_at = ipma + 12 + 4 + 2  # header, version/flags, entry_count, item_ID (version 0: 16 bits)
    assert int.from_bytes(data[ipma + 12 : ipma + 16], "big") == 1 and not data[ipma + 11] & 1
    links = list(data[count_at + 1 : count_at + 1 + data[count_at]])
    # MIAF's order of the transformative properties: clap, then irot, then imir
    at = next((i for i, link in enumerate(links) if kinds[(link & 0x7F) - 1] in (b"irot", b"imir")), len(links))
    links.insert(at, 0x80 | (len(kinds) + 1))
    added, end = len(clap) + 1, count_at + 1 + data[count_at]
    out = data[:ipma] + clap + data[ipma:count_at] + bytes([len(links), *links]) + data[end:]
    out = _grow(_grow(_grow(_grow(out, meta, added), iprp, added), ipco, len(clap)), ipma + len(clap), 1)
    offset_at = iloc + 8 + 4 + 2 + 2 + 2 + 2 + 2  # version/flags, sizes, count, item_ID, data_reference, extents
    return out[:offset_at] + (int.from_bytes(out[offset_at : offset_at + 4], "big") + added).to_bytes(4, "big") + out[
        offset_at + 4 :]


def _size(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "big")


def _box_types(data: bytes, start: int, end: int):
    while start + 8 <= end:
        yield data[start + 4 : start + 8]
        start += _size(data, start)


@pytest.mark.parametrize("orientation", [1, 6])
def test_avif_clean_aperture_is_cropped(photo: Image.Image, orientation: int, tmp_path: Path):
    """A `clap` keeping 200 x 160 at (40, 20) of the 320 x 240 frame: cropped (before irot, as
    the spec orders them), as heif-convert does; it was decoded whole."""
    turn = Image.Exif()
    turn[0x0112] = orientation
    plain = _avif(photo, exif=turn.tobytes())  # no other tag: one item, no Exif one
    data = _with_clap(plain, (320, 240), (40, 20, 200, 160))
    coded = np.asarray(Image.open(io.BytesIO(plain)).convert("RGB"))
    assert coded.shape == (240, 320, 3) and np.array_equal(np.asarray(Image.open(io.BytesIO(data))), coded)
    ours = decode_rgb(data)
    assert np.array_equal(ours, _by_spec(coded[20:180, 40:240], data))
    decoded = load_image(data, 64, "squash")
    assert (decoded.width, decoded.height) == ours.shape[1::-1]
    reference = _heif_convert(data, tmp_path, "avif")
    if reference is not None:
        assert _psnr(ours, reference) > 40  # measured 49 dB


@pytest.mark.parametrize("clap", [
    (200, 1, 160, 1, -39, 2, -40, 2),  # a left edge at 40.5: not a whole pixel
    (200, 1, 160, 1, 200, 1, 0, 1),  # past the right edge
    (200, 1, 160, 0, 0, 1, 0, 1),  # a zero denominator
])
def test_clean_aperture_that_is_no_whole_pixel_crop_is_ignored(photo: Image.Image, clap: tuple[int, ...]):
    data = _with_clap(_avif(photo), (320, 240), (40, 20, 200, 160))
    at = data.index(b"clap") + 4
    data = data[:at] + b"".join(v.to_bytes(4, "big", signed=True) for v in clap) + data[at + 32 :]
    assert clean_aperture(data, 320, 240) is None
    assert decode_rgb(data).shape == (240, 320, 3)


def test_clean_aperture_of_broken_headers_is_none():
    assert clean_aperture(b"", 1, 1) is None
    assert clean_aperture(b"\x00\x00\x00\x10meta\x00\x00\x00\x00\xff\xff\xff\xff", 1, 1) is None
