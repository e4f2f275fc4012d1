"""The tokenizer reads a photo folder as the build renders it: EXIF orientation, a PNG's gAMA and
an RGB ICC profile applied (`tokenizer.image_shown`, a mirror of pieces of `transforms.decode`).
Files are made by Pillow, ImageMagick and exiftool (tests/fixtures/magick), and the tokenizer's
pixels are compared with the build's `decode_rgb` of the same bytes."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
from icc_forge import icc_profile, s15
from PIL import Image, PngImagePlugin
from test_icc_tables import _desc, _lut16_bomb, _wtpt

from tokenizer import image_shown
from tokenizer import pixels as tokenizer_pixels
from tokenizer.data import ImageRef, TrainBatches, UnreadableImage, decode_image, find_images, iter_images, random_crop
from transforms import coded_colour, colour_profile, hdr, rgb_array
from transforms.decode import DecodeError, decode_rgb
from transforms.exif_ifd import exif_orientation

MAGICK = Path(__file__).resolve().parent / "fixtures" / "magick"
GHOSTSCRIPT = Path("/usr/share/color/icc/ghostscript")
P3 = (0.3127, 0.3290, 0.680, 0.320, 0.265, 0.690, 0.150, 0.060)  # white, red, green, blue x, y (SMPTE EG 432-1)


def _photo(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth photo-like picture: gradients and saturated corners (what a profile moves most)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], -1).astype(np.uint8)


def _saved(pixels: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


def _display_p3() -> bytes:
    """Display P3 as Apple's profile lays it out: P3 colorants adapted to D50, sRGB's curve (para 3)."""
    columns = colour_profile.primaries_to_xyz_d50(P3)
    xyz = [b"XYZ \0\0\0\0" + b"".join(map(s15, columns[:, i])) for i in range(3)]
    curve = b"para\0\0\0\0" + bytes([0, 3, 0, 0]) + b"".join(map(s15, (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92,
                                                                          0.04045)))
    return icc_profile([(b"desc", _desc("Display P3")), (b"wtpt", _wtpt()), (b"rXYZ", xyz[0]), (b"gXYZ", xyz[1]),
                        (b"bXYZ", xyz[2]), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)])


def _plain_read(data: bytes) -> np.ndarray:
    """What the tokenizer read before: Pillow's pixels as stored, no turn, no colour."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _magick(tmp_path: Path, name: str, *args: str) -> bytes:
    source = tmp_path / "photo.png"
    Image.fromarray(_photo()).save(source)
    subprocess.run(["convert", str(source), *args, str(tmp_path / name)], check=True)
    return (tmp_path / name).read_bytes()


@pytest.mark.parametrize("turn", [3, 6, 8])
def test_a_phone_photo_taken_turned_is_turned_as_the_build_turns_it(turn: int):
    """A phone writes a portrait photo landscape with EXIF Orientation 6: the tokenizer read it
    lying on its side, 64x48 where the build renders 48x64."""
    exif = Image.Exif()
    exif[image_shown.EXIF_ORIENTATION] = turn
    data = _saved(_photo(), "JPEG", quality=92, exif=exif.tobytes())
    build = decode_rgb(data)
    assert np.array_equal(decode_image(data), build)
    assert build.shape == ((64, 48, 3) if turn in (6, 8) else (48, 64, 3))
    assert not np.array_equal(build, _plain_read(data)) and _plain_read(data).shape == (48, 64, 3)


def test_exiftool_and_imagemagick_files_decode_as_the_build_decodes_them():
    """exiftool's Orientation 6 JPEG, ImageMagick's TIFF of orientation RightTop, gAMA PNGs (with
    sRGB's cHRM, grey, 0.45455), an Adobe RGB iCCP PNG (and one with a gAMA the iCCP overrides)."""
    for name in ("jpeg_orient6.jpg", "tiff_orient6.tif", "png_gama_chrm.png", "png_gama1_grey.png",
                 "png_gama45455.png", "png_icc_a98.png", "png_iccp_gama1.png", "png_srgb_gama1.png",
                 "png16_grey.png", "webp_lossless_alpha.webp"):
        data = (MAGICK / name).read_bytes()
        assert np.array_equal(decode_image(data), decode_rgb(data)), name


def test_a_gamma_png_from_imagemagick_is_shown_as_the_build_shows_it(tmp_path):
    """A linear PNG (gAMA 1.0, ImageMagick): read as stored it was up to 73 levels dark (mean 49.9)."""
    for gamma in ("1.0", "0.8"):
        data = _magick(tmp_path, f"g{gamma}.png", "-set", "gamma", gamma, "-define",
                       "png:exclude-chunk=sRGB,iCCP,cHRM")
        build = decode_rgb(data)
        assert np.array_equal(decode_image(data), build)
        assert np.abs(build.astype(int) - _plain_read(data)).max() > 20


@pytest.mark.parametrize("made", ["adobe_jpeg_magick", "p3_jpeg_pillow", "p3_png_alpha_pillow"])
def test_a_wide_gamut_photo_is_converted_to_srgb_as_the_build_converts_it(made: str, tmp_path):
    """A JPEG given Adobe RGB by ImageMagick (`-profile a98.icc`), a Pillow JPEG and an RGBA PNG
    carrying Display P3: the profile was ignored (the JPEGs up to 116 and 141 levels off the build's)."""
    if made == "adobe_jpeg_magick":
        data = _magick(tmp_path, "adobe.jpg", "-profile", str(GHOSTSCRIPT / "srgb.icc"), "-profile",
                       str(GHOSTSCRIPT / "a98.icc"), "-quality", "92")
    elif made == "p3_jpeg_pillow":
        data = _saved(_photo(), "JPEG", quality=92, icc_profile=_display_p3())
    else:
        rgba = np.concatenate([_photo(), np.full((48, 64, 1), 128, np.uint8)], -1)
        data = _saved(rgba, "PNG", icc_profile=_display_p3())
    build = decode_rgb(data)
    assert np.array_equal(decode_image(data), build)
    plain = _plain_read(data)
    if plain.shape == build.shape and made != "p3_png_alpha_pillow":
        assert np.abs(build.astype(int) - plain).max() > 10  # the profile moved the colours


def test_a_profile_declaring_tables_it_does_not_hold_is_never_given_to_littlecms():
    """The build ignores a profile whose LUT declares 255^3 points it does not hold (LittleCMS
    would allocate ~475 MB first): the tokenizer does not convert it either, and the pixels agree."""
    data = _saved(_photo(), "JPEG", quality=92, icc_profile=_lut16_bomb())
    assert not image_shown.plain_profile(_lut16_bomb()) and image_shown.plain_profile(_display_p3())
    assert np.array_equal(decode_image(data), decode_rgb(data))
    short_curve = icc_profile([(b"wtpt", _wtpt()), (b"rTRC", b"curv\0\0\0\0" + (1 << 30).to_bytes(4, "big"))])
    assert not image_shown.plain_profile(short_curve)


def test_the_mirrored_pieces_equal_the_builds():
    assert image_shown.SRGB_CHROMATICITIES == colour_profile.SRGB_CHROMATICITIES
    assert image_shown.CHROMATICITY_TOLERANCE == colour_profile.CHROMATICITY_TOLERANCE
    assert image_shown.GAMMA_THRESHOLD == colour_profile.GAMMA_THRESHOLD
    for gamma in (1.0, 0.8, 0.45455, 0.4, 2.2):
        for bits in (8, 16):
            ours, build = image_shown.gamma_table(gamma, bits), colour_profile.gamma_table(gamma, bits)
            assert (ours is None and build is None) or np.array_equal(ours, build), (gamma, bits)
    for turn in range(0, 10):
        exif = Image.Exif()
        exif[image_shown.EXIF_ORIENTATION] = turn
        raw = b"Exif\0\0" + exif.tobytes()
        assert image_shown.exif_orientation(raw) == exif_orientation(raw), turn
    assert image_shown.exif_orientation(b"Exif\0\0MM\0*" + b"\xff" * 20) == exif_orientation(b"Exif\0\0MM\0*" + b"\xff" * 20)
    assert image_shown.CICP_PRIMARIES == set(coded_colour.PRIMARIES)
    assert image_shown.STRIP_PIXELS == rgb_array.STRIP_PIXELS
    assert image_shown.CICP_SDR_TRANSFERS == set(coded_colour.SDR_TRANSFERS)
    assert image_shown.CICP_HDR_TRANSFERS == set(hdr.TRANSFER_NAMES)


def test_a_folder_of_such_photos_reads_as_the_build_renders_it(tmp_path):
    """Through the loader `tokenizer.evaluate` and `fit` use: the turned photo is 48 wide."""
    exif = Image.Exif()
    exif[image_shown.EXIF_ORIENTATION] = 6
    (tmp_path / "portrait.jpg").write_bytes(_saved(_photo(), "JPEG", quality=92, exif=exif.tobytes()))
    (tmp_path / "p3.jpg").write_bytes(_saved(_photo(), "JPEG", quality=92, icc_profile=_display_p3()))
    images = dict(iter_images(find_images(str(tmp_path)), 48))
    for ref, image in images.items():
        build = decode_rgb(Path(ref.path).read_bytes())
        side = min(build.shape[:2])
        top, left = (build.shape[0] - side) // 2, (build.shape[1] - side) // 2
        assert np.array_equal(image, build[top : top + side, left : left + side]), ref


def test_svg_and_jpeg_xl_are_skipped_with_the_builds_reason(tmp_path):
    """An SVG (as Inkscape and a web page write it, text) and a JPEG XL (ffmpeg's libjxl) were
    `not_an_image` to the tokenizer, junk, where the build says `unsupported_format`."""
    Image.fromarray(_photo()).save(tmp_path / "photo.png")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(tmp_path / "photo.png"), "-c:v", "libjxl",
                    str(tmp_path / "photo.jxl")], check=True)
    (tmp_path / "drawing.svg").write_text('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
                                          '<!-- Created with Inkscape (http://www.inkscape.org/) -->\n'
                                          '<svg width="64" height="48" xmlns="http://www.w3.org/2000/svg">'
                                          '<rect width="64" height="48" fill="#c00"/></svg>\n')
    (tmp_path / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8"/>\n')
    (tmp_path / "photo.png").unlink()
    skipped: list = []
    assert list(iter_images(find_images(str(tmp_path)), 48, skipped)) == []
    reasons = {Path(ref.path).name: reason for ref, reason, _ in skipped}
    build = {}
    for name in reasons:
        with pytest.raises(DecodeError) as rejected:
            decode_rgb((tmp_path / name).read_bytes())
        build[name] = rejected.value.reason
    assert reasons == build == dict.fromkeys(("drawing.svg", "logo.svg", "photo.jxl"), "unsupported_format")


def _png_with_chunks(*chunks: tuple[bytes, bytes, bool], **options) -> bytes:
    """A Pillow PNG of `_photo` carrying the chunks (type, body, after IDAT): Pillow writes a public
    chunk before IDAT, so one meant after it is moved there, whole, to just before IEND."""
    info = PngImagePlugin.PngInfo()
    for kind, body, _ in chunks:
        info.add(kind, body)
    data = _saved(_photo(), "PNG", pnginfo=info, **options)
    for kind, body, after_idat in chunks:
        if after_idat:
            start = data.index(kind) - 4
            whole = data[start : start + 12 + len(body)]
            data = data[:start] + data[start + len(whole):]
            data = data[:-12] + whole + data[-12:]
    return data


def test_a_png_whose_cicp_chunk_the_build_shows_gets_no_gamma_or_icc_conversion():
    """The build lets an understood cICP chunk win over the iCCP and gAMA (ffmpeg 6.1+ writes cICP
    beside cHRM and gAMA); the tokenizer applied the Adobe RGB iCCP or the gAMA 1.0 (up to 132
    levels off the build's pixels). A cICP after IDAT, or one of code points not understood, is not
    read by the build: the gAMA applies in both."""
    a98 = (GHOSTSCRIPT / "a98.icc").read_bytes()
    srgb_cicp, linear_gamma = (b"cICP", bytes([1, 13, 0, 1]), False), (b"gAMA", (100000).to_bytes(4, "big"), False)
    for data in (_png_with_chunks(srgb_cicp, icc_profile=a98), _png_with_chunks(srgb_cicp, linear_gamma)):
        build = decode_rgb(data)
        assert np.array_equal(build, _plain_read(data))  # sRGB declared: the samples as stored
        assert np.array_equal(decode_image(data), build)
    p3 = _png_with_chunks((b"cICP", bytes([12, 13, 0, 1]), False), linear_gamma)  # converted by the build alone
    assert np.array_equal(decode_image(p3), _plain_read(p3))
    for transfer in (4, 5, 8):  # BT.709 primaries, a power curve (ffmpeg's linear frame: 8), the gAMA unread
        data = _png_with_chunks((b"cICP", bytes([1, transfer, 0, 1]), False), (b"gAMA", (80000).to_bytes(4, "big"), False))
        assert np.abs(decode_image(data).astype(int) - decode_rgb(data)).max() <= (transfer != 8), transfer
    for ignored in ((b"cICP", bytes([1, 13, 0, 1]), True), (b"cICP", bytes([3, 13, 0, 1]), False)):
        data = _png_with_chunks(ignored, linear_gamma)
        build = decode_rgb(data)
        assert np.array_equal(decode_image(data), build)
        assert np.abs(build.astype(int) - _plain_read(data)).max() > 20  # the gAMA applied


def test_a_profiled_image_is_converted_strip_by_strip_as_the_build_converts_it(monkeypatch):
    """Converted whole (a Pillow copy, LittleCMS's output and its array, each the image's size), a
    24 MP Adobe RGB JPEG peaked 433 MiB where a plain one took 268: now a strip at a time into one
    array (287 MiB), its alpha composited a strip at a time too; the pixels are the build's."""
    monkeypatch.setattr(image_shown, "STRIP_PIXELS", 64 * 7)  # 7 rows of 64: 7 strips of a 48-row image
    monkeypatch.setattr(tokenizer_pixels, "STRIP_PIXELS", 64 * 7)
    rgba = np.concatenate([_photo(), np.full((48, 64, 1), 128, np.uint8)], -1)
    for data in (_saved(_photo(), "JPEG", quality=92, icc_profile=_display_p3()),
                 _saved(rgba, "PNG", icc_profile=(GHOSTSCRIPT / "a98.icc").read_bytes())):
        assert np.array_equal(decode_image(data), decode_rgb(data))


def test_a_training_crop_converts_only_the_pixels_it_keeps(tmp_path, monkeypatch):
    """fit converted a whole Display P3 photo with LittleCMS to keep a 256 crop (24 MP: 5.04 s a
    draw against 0.91 for a plain JPEG): only the crop is converted now, the same pixels as a crop
    of the whole image converted (turned, with alpha, wide grey, smaller than the crop alike)."""
    exif = Image.Exif()
    exif[image_shown.EXIF_ORIENTATION] = 6
    big = _photo(240, 320)
    files = {"p3.jpg": _saved(big, "JPEG", quality=92, icc_profile=_display_p3(), exif=exif.tobytes()),
             "alpha.png": _saved(np.concatenate([big, big[..., :1]], -1), "PNG", icc_profile=_display_p3()),
             "grey16.png": _saved((big[..., 0].astype(np.uint16) * 257), "PNG"),
             "small.jpg": _saved(_photo(24, 32), "JPEG", quality=92, icc_profile=_display_p3())}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    converted: list[int] = []
    apply = image_shown.ImageCms.ImageCmsTransform.apply
    monkeypatch.setattr(image_shown.ImageCms.ImageCmsTransform, "apply",
                        lambda self, im, *rest: converted.append(im.width * im.height) or apply(self, im, *rest))
    for name, data in files.items():
        refs = [ImageRef(str(tmp_path / name))]
        for step in range(3):
            whole = decode_image(data)  # first: the profile's transform built (and kept) before counting
            converted.clear()
            drawn = TrainBatches(refs, 2, 64, seed=step).batch(step)
            assert sum(converted) <= (2 * 64 * 64 if name != "small.jpg" else 2 * 24 * 32), (name, converted)
            expected = [random_crop(whole, 64, np.random.default_rng([step, step, i])) for i in range(2)]
            assert np.array_equal(drawn, np.stack(expected)), (name, step)


def _latin1_named(path: Path) -> bytes:
    """A Ghostscript profile whose v2 `desc` name starts with a Latin-1 byte ('\xc9', a localised
    'Écran'): Pillow's `profile_description` raises ValueError on it."""
    icc = bytearray(path.read_bytes())
    tags = {bytes(icc[132 + 12 * i : 136 + 12 * i]): int.from_bytes(icc[136 + 12 * i : 140 + 12 * i], "big")
            for i in range(int.from_bytes(icc[128:132], "big"))}
    assert icc[tags[b"desc"] : tags[b"desc"] + 4] == b"desc"
    icc[tags[b"desc"] + 12] = 0xC9
    return bytes(icc)


def test_a_profile_whose_name_pillow_cannot_decode_is_still_converted():
    """The build read the profile's name inside the conversion's `try`: a name Pillow cannot decode
    dropped the whole conversion (an Adobe RGB JPEG read as sRGB, 130+ levels off, where the
    tokenizer converted it). Both readers convert it now, as the same profile named in ASCII."""
    for name in ("a98.icc", "rommrgb.icc"):
        icc = _latin1_named(GHOSTSCRIPT / name)
        with pytest.raises(ValueError):
            image_shown.ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.profile_description
        data = _saved(_photo(), "JPEG", quality=95, icc_profile=icc)
        named = _saved(_photo(), "JPEG", quality=95, icc_profile=(GHOSTSCRIPT / name).read_bytes())
        build = decode_rgb(data)
        assert np.array_equal(build, decode_rgb(named)), name
        assert np.array_equal(decode_image(data), build), name
        assert np.abs(build.astype(int) - _plain_read(data)).max() > 20, name
    grey = _latin1_named(GHOSTSCRIPT / "sgray.icc")
    assert colour_profile._grey_description(grey) == "unnamed"


def _exif_of(turn: int) -> bytes:
    exif = Image.Exif()
    exif[image_shown.EXIF_ORIENTATION] = turn
    return exif.tobytes()


def test_a_png_with_exif_chunks_after_its_pixels_is_turned_by_the_first_as_the_build_turns_it():
    """The build reads a PNG's orientation before the load (its first eXIf, `_png_exif`); the
    tokenizer read it after, when Pillow's info holds the last one after IDAT: eXIf 6 then 3 after
    the pixels was turned 180 degrees (48x64) where the build turns it 90 (64x48)."""
    def pillows_exif(turn: int) -> bytes:  # the whole eXIf chunk Pillow writes (once, before IDAT)
        data = _saved(_photo(), "PNG", exif=_exif_of(turn))
        start = data.index(b"eXIf") - 4
        return data[start : start + 12 + int.from_bytes(data[start : start + 4], "big")]

    plain, turned = _saved(_photo(), "PNG"), _saved(_photo(), "PNG", exif=_exif_of(6))
    for data in (plain[:-12] + pillows_exif(6) + pillows_exif(3) + plain[-12:],
                 turned[:-12] + pillows_exif(3) + turned[-12:]):
        build = decode_rgb(data)
        assert build.shape == (64, 48, 3)
        assert np.array_equal(decode_image(data), build)


def test_a_png_cut_before_its_pixels_is_truncated_as_the_build_says():
    """A Pillow PNG cut in its signature or IHDR (a partial download) was `not_an_image` (2-7
    bytes) or `corrupt_header` (8-40) to the tokenizer, `truncated` to the build."""
    data = _saved(_photo(), "PNG", icc_profile=_display_p3())
    for cut in (*range(2, 61), len(data) // 2):
        with pytest.raises(DecodeError) as build:
            decode_rgb(data[:cut])
        with pytest.raises(UnreadableImage) as ours:
            decode_image(data[:cut])
        assert ours.value.reason == build.value.reason == "truncated", cut


@pytest.mark.parametrize("made", [("-interlace", "PNG"), ("-depth", "16", "-define", "png:bit-depth=16"),
                                  ("-depth", "16", "-define", "png:bit-depth=16", "-interlace", "PNG")],
                         ids=["8_bit_interlaced", "16_bit", "16_bit_interlaced"])
def test_an_imagemagick_png_cut_in_its_chunks_after_the_pixels_is_truncated_as_the_build_says(made, tmp_path):
    """ImageMagick writes its tEXt dates after IDAT; cut there (a partial download), Pillow's load
    says "Truncated File Read" (a capital T) and the build, walking the chunks, `truncated`: the
    tokenizer said `decode_error` (74 of each file's cuts, those in its last 17-102 bytes)."""
    data = _magick(tmp_path, "photo_magick.png", *made)
    after = data.index(b"tEXt", data.rindex(b"IDAT")) - 4  # the first chunk after the pixels
    texts = [at - 4 for at in range(after, len(data)) if data[at : at + 4] == b"tEXt"]
    assert len(texts) >= 2 and data.endswith(b"IEND\xaeB`\x82")  # the layout this test is about
    in_text = {cut for at in texts for cut in range(at + 8, at + 8 + int.from_bytes(data[at : at + 4], "big"))}
    for cut in (60, len(data) // 2, *range(after, len(data))):
        build, ours = _outcome(decode_rgb, data[:cut]), _outcome(decode_image, data[:cut])
        assert ours == build, cut
        if cut >= after:  # Pillow keeps the pixels of a cut in a chunk's length, type or CRC: the build too
            assert (build == "truncated") == (cut in in_text), cut


def _outcome(decode, data: bytes) -> str:
    """A decoder's reject reason for these bytes, "ok" when it decodes them."""
    try:
        decode(data)
    except (DecodeError, UnreadableImage) as exc:
        return exc.reason
    return "ok"
