"""Still images as ImageMagick writes them (16-bit PNG, PGM and PPM, TIFF of every layout, BMP v3/v5,
GIF, WebP, JPEG of every coding, icons), decoded to what ImageMagick itself shows.

The files are in tests/fixtures/magick/, made by ImageMagick 6.9.11 from real photos (skimage's
astronaut and camera, matplotlib's grace_hopper); its README lists the command of each. The
reference is ImageMagick's own decode of each file, frozen in `refs_*.npz` (8-bit RGB, alpha
composited on white: the project's policy, README "Images are decoded"), made by
`convert F[0] -background white -alpha remove -alpha off -colorspace sRGB -depth 8 rgb:-`, with
`-profile srgb.icc` for an embedded profile and `-auto-orient` for an oriented file. ImageMagick
scales 16 bits to 8 by rounding (x * 255 / 65535), Pillow and this decoder by truncation (x >> 8):
one level at most, two where a 16-bit alpha is truncated too. Measured on these files: the others
agree exactly or within that level (BMP 565 and bitfield alpha, CMYK, WebP alpha: ImageMagick's
rounding of the composite), but a CMYK JPEG through its profile (LittleCMS's 8-bit transform:
`transforms.colour_profile`). A PNG's gAMA is checked against the PNG specification's decoding
instead: ImageMagick reads any gamma but 1/2.2 as linear RGB; a 16-bit colour one's from its 16-bit
samples. A PNG's cHRM of other primaries than sRGB's is checked against colorimetry's conversion
(ImageMagick applies none; Chromium does). A signed 32-bit TIFF is checked
against ImageMagick's decode of the signed 16-bit one: ImageMagick reads 32-bit signed samples'
bits as unsigned, where the decoder offsets every signed sample as ImageMagick does 16-bit ones.
A multi-page TIFF, an animated GIF, APNG or WebP is its first page or frame, as `F[0]`, and its
sentence header's member says how many the file holds (`pages`). A GIF frame reaching past its
logical screen is cut at the screen's edge, as ImageMagick's `-coalesce` shows it. ImageMagick is
not needed to run these tests.
"""

from __future__ import annotations

import io
import struct
import subprocess
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageSequence

from sources.laion import LaionSource
from sources.records import ImageRecord, Reject
from transforms.decode import DecodeError, decode_cost, decode_rgb, load_image
from transforms.headers import Pages, gif_frames, png_frames, tiff_pages
from transforms.resize import plan_resize
from uvd_pipeline.render import RenderSettings, decode_png, render_image

MAGICK = Path(__file__).resolve().parent / "fixtures" / "magick"


def _references() -> dict[str, np.ndarray]:
    """ImageMagick's decodes, by file name with `.` as `_`, from the parts they are kept in."""
    refs: dict[str, np.ndarray] = {}
    for part in sorted(MAGICK.glob("refs_*.npz")):
        with np.load(part) as arrays:
            refs.update({key: arrays[key] for key in arrays.files})
    return refs


REFS = _references()
# 16-bit colour and 16-bit alpha, each truncated before compositing: two levels; a CMYK JPEG through
# its profile by LittleCMS's 8-bit transform, where ImageMagick's is unoptimised 16-bit (4.4 levels
# on average, `transforms.colour_profile`)
TOLERANCE = {"png16_rgba.png": 2, "png16_greya.png": 2, "jpeg_cmyk_icc.jpg": 20}
# real image formats this build cannot decode, by what the reject names them
UNSUPPORTED = {"exr.exr": "OpenEXR", "hdr.hdr": "Radiance HDR", "miff.miff": "MIFF (ImageMagick)",
               "pfm.pfm": "PFM (portable float map)", "dpx.dpx": "DPX", "tiff_float.tif": "TIFF",
               "tiff_half_grey.tif": "TIFF", "pam.pam": "PAM (portable arbitrary map)",
               "psd16.psd": "PSD (Photoshop, RGB, 16 bits a channel)",
               "fits16.fits": "FITS (BITPIX 16, BZERO 3.276800E+04, BSCALE 1.000000E+00: Pillow reads the stored "
                              "numbers without them)"}


# PNGs declaring their samples' gamma by a gAMA chunk and no sRGB or iCCP chunk; ImageMagick reads
# any gamma but 1/2.2 as linear RGB, so the reference is the PNG specification's, below
GAMMA = {"png_gama_chrm.png": 0.8, "png_gama1_grey.png": 1.0}
SRGB_GAMMA = "png_gama45455.png"  # the gAMA writers declare for sRGB: its samples are shown as stored
# 16-bit colour PNGs of gAMA 1.0 (RGB, RGBA), checked against the specification's decoding of their
# 16-bit samples (`_on_white_16`)
GAMMA_16 = ("png16_gama1.png", "png16a_gama1.png")
# PNGs whose cHRM declares other primaries than sRGB's (Adobe RGB's, no gAMA; ProPhoto's, gAMA 1.0):
# the chromaticities (PNG specification 11.3.2.3) and the gamma, checked against `_chromaticities_shown`
CHROMATICITIES = {"png_chrm_adobe.png": ((0.3127, 0.329, 0.64, 0.33, 0.21, 0.71, 0.15, 0.06), None),
                  "png_chrm_prophoto_gama1.png": ((0.3457, 0.3585, 0.7347, 0.2653, 0.1596, 0.8404, 0.0366, 0.0001),
                                                  1.0)}
# a gAMA 1.0 beside what takes precedence over it (PNG specification, 3rd edition, 11.3.2): an sRGB
# chunk (the samples are shown as stored), an iCCP profile (converted by it, as the file of the same
# samples without the gAMA: its reference)
SRGB_OVER_GAMMA = "png_srgb_gama1.png"
# files whose reference is ImageMagick's decode of another file of the same picture: the iCCP one
# above; ImageMagick's signed 32-bit TIFF, which ImageMagick reads as unsigned bits (see below)
SAME_PICTURE = {"png_iccp_gama1.png": "png_icc_a98.png", "tiff32_signed.tif": "tiff16_signed.tif"}


def _name(key: str) -> str:
    stem, ext = key.rsplit("_", 1)
    return f"{stem}.{ext}"


REFERENCED = sorted(_name(key) for key in REFS)


def _reference(name: str) -> np.ndarray:
    return REFS[name.replace(".", "_")]


@pytest.mark.parametrize("name", REFERENCED)
def test_decodes_to_what_imagemagick_shows(name: str):
    got = decode_rgb((MAGICK / name).read_bytes())
    want = _reference(name)
    assert got.shape == want.shape
    assert np.abs(got.astype(np.int16) - want).max() <= TOLERANCE.get(name, 1)


def test_dark_16_bit_greymaps_stay_dark():
    """A 16-bit PGM (maxval 65535) and a 32-bit TIFF whose samples are all small were taken for
    8-bit data (mode "I" judged by its values): the PGM, at most 189 of 65535, came out up to 189
    of 255 (175 levels over ImageMagick's), the TIFF's unsigned 32-bit samples read as signed."""
    for name in ("pgm16_dark.pgm", "tiff32_grey.tif"):
        got = decode_rgb((MAGICK / name).read_bytes())
        assert np.abs(got.astype(np.int16) - _reference(name)).max() <= 1, name


def test_cmyk_jpeg_is_converted_by_its_profile():
    """A CMYK JPEG with its CMYK profile (ImageMagick's `-profile ps_cmyk.icc`) was converted as if
    it had none: 48 levels from ImageMagick's `-profile srgb.icc` on average, up to 89; the member
    names the profile, as for RGB ones."""
    data = (MAGICK / "jpeg_cmyk_icc.jpg").read_bytes()
    want = _reference("jpeg_cmyk_icc.jpg")
    diff = np.abs(decode_rgb(data).astype(np.int16) - want)
    assert diff.mean() < 5 and diff.max() <= 20
    # the intent: ImageMagick's relative colorimetric leaves 93% of the midtones (its grey 100 to
    # 199) within a level of its own decode, perceptual 57% (the mean above is 4.35 and 4.77)
    mid = (want.mean(axis=2) >= 100) & (want.mean(axis=2) < 200)
    assert (diff.max(axis=2)[mid] <= 1).mean() > 0.85
    assert load_image(data, 32, "squash").colour_profile == "Artifex PS CMYK Profile"


def _stored(name: str) -> np.ndarray:
    """A PNG's samples as stored, by OpenCV (which ignores gAMA), as (H, W, 3) RGB."""
    stored = cv2.imread(str(MAGICK / name), cv2.IMREAD_UNCHANGED)
    return stored[..., ::-1] if stored.ndim == 3 else np.repeat(stored[..., None], 3, axis=2)


def _shown_in_srgb(name: str) -> np.ndarray:
    """A gAMA PNG as the PNG specification (3rd edition, 13.13) decodes it: the stored samples
    (OpenCV reads them, ignoring gAMA) to light by light = sample ** (1 / gamma), then to sRGB
    by its encoding (IEC 61966-2-1), rounded."""
    light = (_stored(name) / 255.0) ** (1 / GAMMA[name])
    encoded = np.where(light <= 0.0031308, 12.92 * light, 1.055 * light ** (1 / 2.4) - 0.055)
    return np.round(encoded * 255).astype(np.uint8)


@pytest.mark.parametrize("name", ["png_gama_chrm.png", "png_gama1_grey.png"])
def test_png_gamma_is_shown_in_srgb(name: str):
    """A PNG whose gAMA says its samples are not sRGB's (0.8; 1.0, linear light) was read as sRGB,
    as browsers do not show it: up to 53 levels too dark for 0.8 (38 on average), 73 for 1.0 (47)."""
    got = decode_rgb((MAGICK / name).read_bytes())
    assert np.abs(got.astype(np.int16) - _shown_in_srgb(name)).max() <= 1


def test_png_gamma_of_srgb_keeps_its_samples():
    """gAMA 0.45455 is what writers declare for sRGB (libpng corrects nothing within 5% of it):
    the stored samples are kept, not bent by a pure 2.2 curve."""
    assert np.array_equal(decode_rgb((MAGICK / SRGB_GAMMA).read_bytes()), _stored(SRGB_GAMMA))


def _srgb_of_light(light: np.ndarray) -> np.ndarray:
    """Linear light 0..1 -> sRGB's 8-bit encoding (IEC 61966-2-1), rounded, as float."""
    return np.round(np.where(light <= 0.0031308, 12.92 * light, 1.055 * light ** (1 / 2.4) - 0.055) * 255)


def _with_chunk(raw: bytes, kind: bytes, body: bytes) -> bytes:
    """PNG bytes with a chunk put after the IHDR, its CRC computed (PNG specification 5.3)."""
    chunk = kind + body
    return raw[:33] + struct.pack(">I", len(body)) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:]


def _png_with_gama(image: Image.Image, gama: int) -> bytes:
    """`image` saved by Pillow as PNG with a gAMA chunk of `gama` (100000 x gamma) after its IHDR."""
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return _with_chunk(buf.getvalue(), b"gAMA", struct.pack(">I", gama))


def _linear_on_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """8-bit gAMA 1.0 samples as the PNG specification shows them: the colour decoded (light =
    sample / 255, to sRGB's encoding) first, then composited on white in sRGB values, rounded."""
    shown = _srgb_of_light(colour / 255.0)
    return np.floor((shown * alpha + 255 * (255 - alpha)) / 255 + 0.5).astype(np.uint8)


def test_png_gamma_applies_to_the_colour_before_compositing():
    """A gAMA 1.0 PNG with alpha (grey+alpha, RGBA, a palette with tRNS) was composited on white
    first and the gamma table bent the mix: black at alpha 128 came out 187, not 127."""
    grey, alpha = np.meshgrid(np.arange(0, 256, 17), np.arange(0, 256, 15))  # 16 x 18, opaque and clear rows
    grey, alpha = grey.astype(np.uint8), alpha.astype(np.uint8)
    want = _linear_on_white(grey.astype(np.float64), alpha.astype(np.float64))
    la = decode_rgb(_png_with_gama(Image.fromarray(np.dstack([grey, alpha]), "LA"), 100000))
    assert la[..., 0].tolist() == want.tolist() and (la == la[..., :1]).all()
    colour = np.dstack([grey, grey[::-1], np.roll(grey, 3, axis=1)])
    rgba = decode_rgb(_png_with_gama(Image.fromarray(np.dstack([colour, alpha]), "RGBA"), 100000))
    assert np.array_equal(rgba, _linear_on_white(colour.astype(np.float64), alpha[..., None].astype(np.float64)))
    palette = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4), "P")
    palette.putpalette(np.repeat(np.arange(0, 256, 17, dtype=np.uint8), 3).tolist())
    palette.info["transparency"] = bytes(range(0, 256, 17))
    shown = decode_rgb(_png_with_gama(palette, 100000))
    level = np.arange(0, 256, 17, dtype=np.float64).reshape(4, 4)
    assert np.array_equal(shown[..., 1], _linear_on_white(level, level))


def test_16_bit_grey_png_gamma_keeps_its_shadows():
    """A 16-bit grey gAMA 1.0 PNG was cut to 8 bits before its gamma: a ramp of 0 to 4092 of
    65535 came out in 16 levels (the specification's decoding of the 16-bit samples has 72), up to
    12 levels off. (Colour ones: `test_16_bit_colour_png_gamma_keeps_its_shadows`.)"""
    ramp = np.tile(np.arange(0, 4096, 4, dtype=np.uint16), (4, 1))
    got = decode_rgb(_png_with_gama(Image.fromarray(ramp), 100000))
    want = _srgb_of_light(ramp / 65535.0).astype(np.uint8)
    assert np.array_equal(got[..., 0], want) and len(np.unique(got)) == 72


def test_png_profile_or_srgb_chunk_takes_precedence_over_gamma():
    """A gAMA 1.0 beside an iCCP profile or an sRGB chunk, which the PNG specification puts before
    it: the profile converts the samples (as those of the same file without its gAMA), the sRGB
    chunk keeps them; the gAMA is not applied."""
    for name, other in [("png_iccp_gama1.png", SAME_PICTURE["png_iccp_gama1.png"])]:
        decoded = load_image((MAGICK / name).read_bytes(), 32, "squash")
        assert decoded.colour_profile == load_image((MAGICK / other).read_bytes(), 32, "squash").colour_profile != ""
        assert np.abs(decode_rgb((MAGICK / name).read_bytes()).astype(np.int16) - _reference(other)).max() <= 1
    assert np.array_equal(decode_rgb((MAGICK / SRGB_OVER_GAMMA).read_bytes()), _stored(SRGB_OVER_GAMMA))
    assert load_image((MAGICK / SRGB_OVER_GAMMA).read_bytes(), 32, "squash").colour_profile == ""


def test_signed_tiff_samples_are_offset_to_unsigned():
    """Signed TIFF samples (SampleFormat 2) were clipped at 0: ImageMagick's signed 16-bit and 32-bit
    TIFFs of a photo came out 56% black, up to 124 and 226 levels off. A signed sample is offset by
    2 ** (bits - 1), the most negative black and 0 mid-grey, as ImageMagick shows a signed 16-bit
    TIFF; ImageMagick 6.9.11 reads signed 8-bit and 32-bit samples' bits as unsigned (-1 its
    brightest, 0 black), which is not followed: the 32-bit file, written as the 16-bit one (its
    unsigned samples' bits, labelled signed), shows what ImageMagick shows of the 16-bit one."""
    for name in ("tiff16_signed.tif", "tiff32_signed.tif"):
        got = decode_rgb((MAGICK / name).read_bytes())
        assert np.abs(got.astype(np.int16) - _reference("tiff16_signed.tif")).max() <= 1, name
    extremes = np.array([[-(2**31), -(2**24), -1, 0, 2**24, 2**31 - 1]], np.int32)
    buf = io.BytesIO()
    Image.fromarray(extremes, "I").save(buf, "TIFF")  # 32-bit signed samples
    assert decode_rgb(buf.getvalue())[0, :, 0].tolist() == [0, 127, 127, 128, 129, 255]


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_formats_pillow_cannot_read_are_named(name: str):
    with pytest.raises(DecodeError) as caught:
        load_image((MAGICK / name).read_bytes(), 32, "squash")
    assert caught.value.reason == "unsupported_format"
    assert caught.value.detail.startswith(UNSUPPORTED[name])


def test_a_fits_header_is_read_to_its_end_or_refused():
    """A FITS header runs to its END card, however many COMMENT or HISTORY cards come first (an
    observatory's pipeline writes hundreds): ImageMagick's 16-bit FITS with 612 COMMENT cards
    (17 blocks) before its BZERO is named with that BZERO (read only 576 cards, BZERO 0 was
    assumed), and a header with no END within the cards looked at is refused, not judged."""
    from transforms.image_format import _FITS_HEADER_CARDS

    data = (MAGICK / "fits16.fits").read_bytes()
    comment = b"COMMENT".ljust(80)
    longer = data[:6 * 80] + comment * 612 + data[6 * 80:]
    with pytest.raises(DecodeError) as caught:
        load_image(longer, 32, "squash")
    assert caught.value.reason == "unsupported_format"
    assert caught.value.detail == f"{UNSUPPORTED['fits16.fits']}: a real image format this build cannot decode"
    endless = data[:6 * 80] + comment * _FITS_HEADER_CARDS + data[6 * 80:]
    with pytest.raises(DecodeError) as caught:
        load_image(endless, 32, "squash")
    assert caught.value.reason == "unsupported_format"
    assert f"no END card within its first {_FITS_HEADER_CARDS} header cards" in caught.value.detail


def test_folder_of_magick_files_renders_each_or_counts_its_reject():
    """Through the web folder source and the build's render path (its decoding process for the
    formats whose decode time no header bounds): every file is one sentence member, matching
    ImageMagick's decode put on the canvas, or one `decode` reject naming its format."""
    source = LaionSource("magick", str(MAGICK))
    items = [item for unit in source.units() for item in source.read(unit)]
    settings = RenderSettings(32, "squash", 0, 10**8, 1, 0, 0.0)
    rendered, rejected = {}, {}
    for item in items:
        if isinstance(item, ImageRecord) and item.lineage["path"].endswith((".npz", ".md")):
            continue  # the references and the README: no images
        assert isinstance(item, ImageRecord), item
        out = render_image(item, settings)
        if isinstance(out, Reject):
            rejected[item.lineage["path"]] = (out.stage, out.reason)
        else:
            rendered[item.lineage["path"]] = decode_png(out.images[0])
    assert rejected == {name: ("decode", "unsupported_format") for name in UNSUPPORTED}
    assert sorted(rendered) == sorted([*REFERENCED, *GAMMA, *GAMMA_16, *CHROMATICITIES, SRGB_GAMMA, SRGB_OVER_GAMMA,
                                       *SAME_PICTURE])
    for name, canvas in rendered.items():
        want = (_shown_in_srgb(name) if name in GAMMA
                else _chromaticities_shown(_stored(name), *CHROMATICITIES[name]) if name in CHROMATICITIES
                else _on_white_16(cv2.imread(str(MAGICK / name), cv2.IMREAD_UNCHANGED)) if name in GAMMA_16
                else _stored(name) if name in (SRGB_GAMMA, SRGB_OVER_GAMMA)
                else _reference(SAME_PICTURE.get(name, name)))
        expected = plan_resize(*want.shape[:2], 32, "squash").apply_image(want)
        assert np.abs(canvas.astype(np.int16) - expected).max() <= TOLERANCE.get(name, 1) + 1, name


def test_first_page_or_frame_is_the_image():
    """A multi-page TIFF and an animated GIF are their first page or frame, as `convert F[0]` shows."""
    first = decode_rgb((MAGICK / "tiff_multipage.tif").read_bytes())
    assert np.abs(first.astype(np.int16) - _reference("tiff_multipage.tif")).max() == 0
    assert first.std(axis=2).mean() > 5  # the colour photo, not the grey second page


# files of several pages or frames, each made by a real writer (README): the image is the first
MANY_PAGES = ("tiff_multipage.tif", "gif_anim.gif", "png_anim.png", "webp_anim.webp")


def _render_member(data: bytes) -> dict:
    """The sentence header's member of one image rendered by the build's render path."""
    record = ImageRecord("k", "magick", "k", data=data)
    out = render_image(record, RenderSettings(32, "squash", 0, 10**8, 1, 0, 0.0))
    assert not isinstance(out, Reject), out
    return out.members[0]


@pytest.mark.parametrize("name", MANY_PAGES)
def test_pages_after_the_first_are_counted_in_the_header(name: str):
    """A multi-page TIFF (ImageMagick), an animated GIF (ImageMagick), APNG (ffmpeg) or WebP
    (ImageMagick) is its first page or frame, as `convert F[0]` shows it; nothing recorded that
    there were more. The member says how many the file holds, counted as Pillow finds them by
    decoding every one; a still image's member has no such field."""
    data = (MAGICK / name).read_bytes()
    with Image.open(io.BytesIO(data)) as opened:
        frames = sum(1 for _ in ImageSequence.Iterator(opened))
    assert frames > 1
    member = _render_member(data)
    assert member["pages"] == frames and "pages_at_least" not in member
    assert np.abs(decode_rgb(data).astype(np.int16) - _reference(name)).max() == 0
    assert "pages" not in _render_member((MAGICK / "tiff_lzw.tif").read_bytes())


def _gif(frames: int, sub_block: int = 255, blocks: int = 1) -> bytes:
    """A GIF89a (spec sections 17-27) of a 1 x 1 screen with a 2-colour global table and `frames`
    1 x 1 images, each of `blocks` data sub-blocks of `sub_block` bytes (LZW: clear, 0, end of
    information, then padding a decoder reads past)."""
    screen = b"GIF89a" + struct.pack("<HH", 1, 1) + bytes([0x80, 0, 0]) + b"\0\0\0\xff\xff\xff"
    image = b"\x2c" + struct.pack("<HHHH", 0, 0, 1, 1) + b"\0" + b"\x02"
    data = (bytes([sub_block]) + b"\x44\x01" + b"\0" * (sub_block - 2)) if sub_block >= 2 else b"\x01\x44"
    data += (bytes([sub_block]) + b"\0" * sub_block) * (blocks - 1)
    return screen + (image + data + b"\0") * frames + b"\x3b"


def test_page_count_is_bounded_and_never_loops():
    """A 10,000-frame GIF is counted exactly by a walk of its blocks (Pillow's own count seeks
    through every frame); a walk that would pass its step limit stops there and says its count is
    only a lower bound; a TIFF whose next IFD is itself counts one page."""
    many = _gif(10_000)
    with Image.open(io.BytesIO(many)) as opened:
        assert opened.n_frames == 10_000
    assert gif_frames(many) == Pages(10_000, True)
    assert _render_member(many)["pages"] == 10_000
    stopped = gif_frames(_gif(3, sub_block=1, blocks=1000), steps=1000)
    assert not stopped.exact and 1 <= stopped.count < 3
    tiff = bytearray((MAGICK / "tiff_lzw.tif").read_bytes())
    ifd = int.from_bytes(tiff[4:8], "little")
    end = ifd + 2 + 12 * int.from_bytes(tiff[ifd : ifd + 2], "little")
    tiff[end : end + 4] = tiff[4:8]  # the next IFD: the same one
    assert tiff_pages(bytes(tiff)) == Pages(1, True)


@pytest.mark.parametrize("name", ["tiff_float.tif", "tiff_half_grey.tif"])
def test_float_tiff_reject_names_its_samples(name: str):
    """ImageMagick's 32-bit floating-point RGB and 16-bit floating-point grey TIFFs, which Pillow
    cannot read, were rejected as "a sample layout Pillow cannot read", never saying float: the
    detail names the samples as the file's tags declare them (read here by tifffile). A 32-bit
    float grey TIFF is Pillow's mode "F": decoded, within a level of ImageMagick's decode."""
    import tifffile  # scikit-image's dependency

    page = tifffile.TiffFile(MAGICK / name).pages[0]
    with pytest.raises(DecodeError) as caught:
        decode_rgb((MAGICK / name).read_bytes())
    space = {tifffile.PHOTOMETRIC.RGB: "RGB", tifffile.PHOTOMETRIC.MINISBLACK: "grey"}[page.photometric]
    assert page.sampleformat == tifffile.SAMPLEFORMAT.IEEEFP
    assert caught.value.detail.startswith(f"TIFF ({page.bitspersample}-bit floating-point {space}")
    grey = decode_rgb((MAGICK / "tiff_float_grey.tif").read_bytes())
    assert np.abs(grey.astype(np.int16) - _reference("tiff_float_grey.tif")).max() <= 1


GREY_PROFILED = {"png_icc_grey.png": "Artifex PS Gray Profile", "jpeg_icc_grey.jpg": "Artifex PS Gray Profile",
                 "tiff_icc_grey.tif": "Artifex PS Gray Profile", "png_icc_greya.png": "Artifex PS Gray Profile",
                 "png16_icc_grey.png": "Artifex Software sGray ICC Profile"}


@pytest.mark.parametrize("name", sorted(GREY_PROFILED))
def test_grey_icc_profile_is_converted_to_srgb(name: str):
    """A grey PNG, JPEG, TIFF, 16-bit PNG or grey+alpha PNG carrying a grey (GRAY) ICC profile
    (ghostscript's linear `ps_gray.icc`, its `sgray.icc`) was shown as stored: up to 73 levels
    from ImageMagick's `-profile srgb.icc` for the linear grey, 20 for sGray. It is converted as
    an RGB profile is, within a level of ImageMagick's (its Q16 rounding), alpha composited
    after, and the member names the profile."""
    data = (MAGICK / name).read_bytes()
    assert np.abs(decode_rgb(data).astype(np.int16) - _reference(name)).max() <= 1
    assert load_image(data, 32, "squash").colour_profile == GREY_PROFILED[name]


def test_grey_profile_follows_its_curve_at_16_bits():
    """Samples tagged with the linear `ps_gray.icc` land where sRGB's encoding of that light is
    (IEC 61966-2-1), 8-bit ones exactly (LittleCMS's optimised transform put level 1 at 6, not
    13), and 16-bit ones from their 16 bits: a ramp of 0 to 4092 of 65535 keeps its 72 levels."""
    with Image.open(MAGICK / "png_icc_grey.png") as opened:
        icc = opened.info["icc_profile"]
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    buf = io.BytesIO()
    Image.fromarray(levels).save(buf, "PNG", icc_profile=icc)
    assert np.array_equal(decode_rgb(buf.getvalue())[..., 1], _srgb_of_light(levels / 255.0))
    ramp = np.tile(np.arange(0, 4096, 4, dtype=np.uint16), (4, 1))
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, "PNG", icc_profile=icc)
    got = decode_rgb(buf.getvalue())
    assert np.abs(got[..., 0].astype(np.int16) - _srgb_of_light(ramp / 65535.0)).max() <= 1
    assert len(np.unique(got)) == 72


def test_16_bit_colour_png_gamma_keeps_its_shadows():
    """ImageMagick's 16-bit RGB and RGBA PNGs of gAMA 1.0, and OpenCV's 16-bit RGB, RGBA and
    grey+alpha ramps of 0 to 4092 of 65535 with a gAMA 1.0 put in: Pillow cuts such samples to 8
    bits as it loads them, and the gamma mapped the cut ones: up to 12 levels from the PNG
    specification's decoding of the 16-bit samples (the ramps: 16 levels of the 72 it has), and an
    EXIF turn (eXIf orientation 6) is applied as for any PNG. The reference: the stored samples
    (OpenCV's decode) to light, to sRGB, the 16-bit alpha composited on white after."""
    for name in GAMMA_16:
        stored = cv2.imread(str(MAGICK / name), cv2.IMREAD_UNCHANGED)
        assert stored.dtype == np.uint16
        assert np.array_equal(decode_rgb((MAGICK / name).read_bytes()), _on_white_16(stored)), name
    ramp = np.tile(np.arange(0, 4096, 4, dtype=np.uint16), (4, 1))
    for stored in (np.dstack([ramp, ramp, ramp, np.full_like(ramp, 40000)]), np.dstack([ramp, ramp[:, ::-1], ramp]),
                   np.dstack([ramp, ramp[:, ::-1], ramp, ramp[::-1] * 16])):
        ok, encoded = cv2.imencode(".png", stored)
        png = _with_chunk(encoded.tobytes(), b"gAMA", struct.pack(">I", 100000))
        got = decode_rgb(png)
        assert np.array_equal(got, _on_white_16(stored))
        exif = Image.Exif()
        exif[0x0112] = 6
        turned = decode_rgb(_with_chunk(png, b"eXIf", exif.tobytes()[6:]))
        assert np.array_equal(turned, np.rot90(got, -1))
        assert len(np.unique(got[..., 0])) == 72 or stored.shape[2] == 4  # the opaque ramp: all its levels
    # OpenCV's 16-bit samples are judged with the budget before decoding: a budget that holds
    # Pillow's 8-bit buffer and the result, but not them, refuses the file and says why
    budget = decode_cost(*ramp.shape[::-1], "RGBA") + ramp.size * 8
    with pytest.raises(DecodeError, match="16-bit samples of a cICP, gAMA, cHRM or grey-profiled PNG") as caught:
        decode_rgb(png, max_bytes=budget)
    assert caught.value.reason == "image_too_large"
    assert decode_rgb(encoded.tobytes(), max_bytes=budget).shape == (4, 1024, 3)  # without its gAMA: fits


def _on_white_16(stored: np.ndarray) -> np.ndarray:
    """OpenCV's 16-bit BGR(A) samples of a gAMA 1.0 PNG as the specification shows them: the colour
    to light (sample / 65535) to sRGB, then composited on white by its 16-bit alpha, rounded."""
    colour = _srgb_of_light(stored[..., 2::-1] / 65535.0)
    if stored.shape[2] == 3:
        return colour.astype(np.uint8)
    alpha = stored[..., 3:4] / 65535.0
    return np.floor(colour * alpha + 255 * (1 - alpha) + 0.5).astype(np.uint8)


def _chromaticities_shown(stored: np.ndarray, chromaticities: tuple[float, ...], gamma: float | None,
                          top: float = 255.0) -> np.ndarray:
    """RGB samples (of 8 bits, or whose maximum is `top`) of these primaries (white x, y, then
    red, green, blue) as colorimetry shows them in sRGB: to light (by the gamma, or sRGB's curve
    without one), to XYZ by the primaries' matrix (RGB 1, 1, 1 the white), the white adapted to
    sRGB's D65 by Bradford, to linear sRGB (IEC 61966-2-1's matrix), clipped, encoded, rounded."""
    def xyz(x: float, y: float) -> np.ndarray:
        return np.array([x / y, 1.0, (1 - x - y) / y])

    level = stored / top
    srgb = np.where(level <= 0.04045, level / 12.92, ((level + 0.055) / 1.055) ** 2.4)
    light = level ** (1 / gamma) if gamma else srgb
    wx, wy, rx, ry, gx, gy, bx, by = chromaticities
    primaries = np.stack([xyz(rx, ry), xyz(gx, gy), xyz(bx, by)], axis=1)
    to_xyz = primaries * np.linalg.solve(primaries, xyz(wx, wy))
    bradford = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
    adapt = np.linalg.inv(bradford) @ np.diag(bradford @ xyz(0.3127, 0.329) / (bradford @ xyz(wx, wy))) @ bradford
    to_srgb = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])
    return _srgb_of_light(np.clip(light @ (to_srgb @ adapt @ to_xyz).T, 0, 1)).astype(np.uint8)


@pytest.mark.parametrize("name", sorted(CHROMATICITIES))
def test_png_chromaticities_are_shown_in_srgb(name: str):
    """A PNG whose cHRM declares Adobe RGB's primaries (ImageMagick's `-green-primary 0.21,0.71`,
    no gAMA, no sRGB or iCCP chunk) or ProPhoto's with a gAMA 1.0 was read with sRGB's primaries:
    up to 31 levels off for Adobe RGB (3.3 on average), where Chromium (Skia's PNG decoder) makes
    a matrix profile of them. Within a level of colorimetry's conversion (LittleCMS's 8-bit
    transform); the member names the chromaticities."""
    data = (MAGICK / name).read_bytes()
    want = _chromaticities_shown(_stored(name), *CHROMATICITIES[name])
    assert np.abs(decode_rgb(data).astype(np.int16) - want).max() <= 1
    assert load_image(data, 32, "squash").colour_profile.startswith("PNG cHRM red ")


def test_png_chromaticities_that_make_no_matrix_are_ignored():
    """A cHRM of sRGB's values (ImageMagick writes them by default: `png_gama_chrm.png`), of zeros
    or of collinear primaries changes nothing beside its gAMA, and never fails the decode."""
    plain = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    buf = io.BytesIO()
    plain.save(buf, "PNG")
    srgb, collinear = (31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000), (31270, 32900) + (30000, 60000) * 3
    for values in ((0,) * 8, collinear, srgb):
        png = _with_chunk(buf.getvalue(), b"cHRM", struct.pack(">8I", *values))
        assert np.array_equal(decode_rgb(png), np.asarray(plain)) and load_image(png, 4, "squash").colour_profile == ""


ADOBE_RGB = (0.3127, 0.329, 0.64, 0.33, 0.21, 0.71, 0.15, 0.06)
PROPHOTO = CHROMATICITIES["png_chrm_prophoto_gama1.png"][0]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png16(samples: np.ndarray, colour_type: int, *chunks: tuple[bytes, bytes]) -> bytes:
    """A 16-bit PNG written from the specification (sections 5, 11.2.2, 12.8): (H, W, channels)
    samples big-endian, every row of filter type 0, one IDAT, `chunks` (type, body) before it."""
    h, w = samples.shape[:2]
    rows = np.ascontiguousarray(samples.astype(">u2")).reshape(h, -1).view(np.uint8)
    body = zlib.compress(b"".join(b"\0" + row.tobytes() for row in rows))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
            + b"".join(_chunk(kind, data) for kind, data in chunks) + _chunk(b"IDAT", body) + _chunk(b"IEND", b""))


def _chrm(chromaticities: tuple[float, ...]) -> tuple[bytes, bytes]:
    return b"cHRM", struct.pack(">8I", *(round(v * 100000) for v in chromaticities))


def _on_white_8(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """sRGB colour (0..255, float) composited on white by an 8-bit alpha, rounded."""
    return np.floor(colour * (alpha / 255.0) + 255 * (1 - alpha / 255.0) + 0.5).astype(np.uint8)


def test_16_bit_grey_alpha_png_grey_profile_keeps_its_shadows():
    """A 16-bit grey+alpha PNG (colour type 4) with ghostscript's linear `ps_gray.icc`: Pillow opens
    it as "RGBA", not "LA", and cuts it to 8 bits, so its grey profile was never applied (29 levels
    from ImageMagick's `-profile srgb.icc` on ImageMagick's file, 57 on this ramp). Converted from
    its 16 bits by the profile, then its 16-bit alpha composited: within a level of sRGB's encoding
    of the linear light (IEC 61966-2-1), and the member names the profile."""
    with Image.open(MAGICK / "png_icc_grey.png") as opened:
        icc = opened.info["icc_profile"]
    ramp = np.tile(np.arange(0, 4096, 4, dtype=np.uint16), (4, 1))
    alpha = np.stack([np.full(1024, 65535), np.full(1024, 40000), np.linspace(0, 65535, 1024), np.zeros(1024)])
    png = _png16(np.dstack([ramp, alpha.astype(np.uint16)]), 4, (b"iCCP", b"ps_gray\0\0" + zlib.compress(icc)))
    want = _on_white_16(np.dstack([ramp, ramp, ramp, alpha.astype(np.uint16)]))
    got = decode_rgb(png)
    assert np.abs(got.astype(np.int16) - want).max() <= 1
    assert (got == got[..., :1]).all() and len(np.unique(got[0])) >= 70
    assert load_image(png, 32, "squash").colour_profile == "Artifex PS Gray Profile"


def test_colour_is_converted_before_its_alpha_is_composited():
    """A half-transparent PNG whose cHRM is ProPhoto's with gAMA 1.0, or whose iCCP is Adobe RGB
    (1998) (ImageMagick's `png_icc_a98.png`'s profile): composited on white first, the conversion
    bent the mix (73 levels off here for the cHRM, 127 for the profile: Adobe RGB's green is out of
    sRGB's gamut, and the mix of it with white too). The colour is converted first, then mixed with
    white, as ImageMagick's `-profile srgb.icc -alpha remove` and browsers show it: the reference
    is colorimetry's conversion (Adobe RGB: its power 563/256) composited after."""
    grey = np.arange(0, 256, 17, dtype=np.uint8)
    colour = np.dstack([*np.meshgrid(grey, grey[::-1]), np.full((16, 16), 40, np.uint8)])
    alpha = np.tile(np.array([255, 192, 128, 64], np.uint8), (16, 4))
    rgba = Image.fromarray(np.dstack([colour, alpha]), "RGBA")
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    chrm = _with_chunk(_with_chunk(buf.getvalue(), b"gAMA", struct.pack(">I", 100000)), *_chrm(PROPHOTO))
    want = _on_white_8(_chromaticities_shown(colour, PROPHOTO, 1.0).astype(np.float64), alpha[..., None])
    assert np.abs(decode_rgb(chrm).astype(np.int16) - want).max() <= 1
    with Image.open(MAGICK / "png_icc_a98.png") as opened:
        icc = opened.info["icc_profile"]
    buf = io.BytesIO()
    rgba.save(buf, "PNG", icc_profile=icc)
    want = _on_white_8(_chromaticities_shown(colour, ADOBE_RGB, 256 / 563).astype(np.float64), alpha[..., None])
    assert np.abs(decode_rgb(buf.getvalue()).astype(np.int16) - want).max() <= 1


def test_16_bit_chromaticities_keep_their_shadows():
    """A 16-bit RGB PNG of ProPhoto's cHRM and gAMA 1.0 (as ImageMagick writes `PNG48:` with
    `-set gamma 1.0`), dark samples: cut to 8 bits before its curve, 9 levels off in the shadows.
    Converted from its 16-bit samples: within a level of colorimetry's conversion of them."""
    ramp = np.tile(np.arange(0, 4096, 4, dtype=np.uint16), (4, 1))
    stored = np.dstack([ramp, ramp[:, ::-1], ramp // 2])
    png = _png16(stored, 2, (b"gAMA", struct.pack(">I", 100000)), _chrm(PROPHOTO))
    want = _chromaticities_shown(stored, PROPHOTO, 1.0, top=65535.0)
    got = decode_rgb(png)
    assert np.abs(got.astype(np.int16) - want).max() <= 1
    assert len(np.unique(got[..., 0])) >= 60
    turned = _with_chunk(png, b"eXIf", _exif_orientation(6))
    assert np.array_equal(decode_rgb(turned), np.rot90(got, -1))


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()[6:]


def test_chromaticities_take_the_gamma_as_a_power_whatever_it_is():
    """An Adobe RGB cHRM with the gAMA 45455 a libpng writer puts beside it: the gAMA was read as
    sRGB's curve (libpng's 5% rule, for a gAMA alone), 11 levels off in the shadows, where Skia's
    SkPngCodec (Chromium) takes any gAMA beside a cHRM as the power 1 / gamma."""
    ramp = np.arange(256, dtype=np.uint8)
    stored = np.stack([np.repeat(ramp[:, None], 3, axis=1), np.stack([ramp, ramp // 3, ramp[::-1]], axis=1)])
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, "PNG")
    png = _with_chunk(_with_chunk(buf.getvalue(), b"gAMA", struct.pack(">I", 45455)), *_chrm(ADOBE_RGB))
    want = _chromaticities_shown(stored, ADOBE_RGB, 0.45455)
    assert np.abs(decode_rgb(png).astype(np.int16) - want).max() <= 1
    assert load_image(png, 32, "squash").colour_profile.endswith(" gAMA 0.45455")


def _actl(data: bytes, frames: int) -> bytes:
    """APNG bytes with its acTL's num_frames set to `frames` (its CRC recomputed)."""
    at = data.index(b"acTL") - 4
    body = struct.pack(">II", frames, int.from_bytes(data[at + 12 : at + 16], "big"))
    return data[:at] + _chunk(b"acTL", body) + data[at + 20 :]


def test_apng_frames_are_counted_not_taken_from_its_actl():
    """ffmpeg writing an APNG to a pipe (`-f apng -`) cannot seek back to its acTL and leaves
    num_frames 0xFFFFFFFF (Pillow then reports one frame); a hostile acTL declares 1e9 frames of
    a 3-frame file (taken as exact). The frames are the fcTL chunks, walked: as Pillow counts them
    by decoding every frame of the file as ffmpeg wrote it to a seekable output."""
    data = (MAGICK / "png_anim.png").read_bytes()
    with Image.open(io.BytesIO(data)) as opened:
        frames = sum(1 for _ in ImageSequence.Iterator(opened))
    for declared in (0xFFFFFFFF, 10**9, 1):
        assert _render_member(_actl(data, declared))["pages"] == frames, declared
    stopped = png_frames(data, steps=4)  # the walk is bounded: its count then a lower bound
    assert not stopped.exact and stopped.count < frames
    assert png_frames((MAGICK / "png16_rgb.png").read_bytes()) == Pages()  # a still PNG: ends at its IDAT


def test_16_bit_png_converted_from_its_samples_is_decoded_once(monkeypatch):
    """A 16-bit gAMA PNG was decoded twice: Pillow's full load (its 8-bit cut, then unused), and
    OpenCV's 16-bit samples (0.28 s became 0.56 s at 2000 x 1500). Pillow's load is skipped where
    OpenCV's decode is used (a load made to fail changes nothing); a file OpenCV cannot decode,
    cut short, still goes to Pillow, and its reject says why."""
    from PIL import PngImagePlugin

    ramp = np.tile(np.arange(0, 4096, 4, dtype=np.uint16), (4, 1))
    stored = np.dstack([ramp, ramp[:, ::-1], ramp // 2, ramp[::-1] * 16])
    png = _png16(stored, 6, (b"gAMA", struct.pack(">I", 100000)))
    want = _on_white_16(stored[..., [2, 1, 0, 3]])  # OpenCV's order: BGRA

    def no_load(self):
        raise AssertionError("Pillow decoded the pixels")

    with monkeypatch.context() as patched:
        patched.setattr(PngImagePlugin.PngImageFile, "load", no_load)
        assert np.array_equal(decode_rgb(png), want)
        turned = load_image(_with_chunk(png, b"eXIf", _exif_orientation(6)), 64, "squash")
        assert (turned.width, turned.height) == (4, 1024) and turned.colour_profile == "PNG gAMA 1"
    with pytest.raises(DecodeError) as caught:
        decode_rgb(png[: len(png) // 2])
    assert caught.value.reason == "truncated"


def _empty_ifds(count: int, back_to: int | None = None) -> bytes:
    """A little-endian TIFF header and a chain of `count` IFDs of no entries (TIFF 6.0 section 2),
    the last one's next offset 0, or that of IFD `back_to` (a loop)."""
    at = [8 + 6 * i for i in range(count)]
    after = [*at[1:], 0 if back_to is None else at[back_to]]
    return b"II*\x00" + struct.pack("<I", 8) + b"".join(struct.pack("<HI", 0, n) for n in after)


def test_tiff_page_walk_holds_constant_memory():
    """`tiff_pages` kept every IFD offset it had seen to find loops: about 64 MiB for a 6 MiB chain
    of a million empty IFDs. Loops are found in constant memory (Brent's algorithm): a chain
    counts its IFDs, a loop back to any IFD counts the distinct ones, a walk past its step limit
    says its count is a lower bound."""
    import tracemalloc

    assert tiff_pages(_empty_ifds(5)) == Pages(5, True)
    assert [tiff_pages(_empty_ifds(5, back)) for back in range(5)] == [Pages(5, True)] * 5
    assert tiff_pages(_empty_ifds(5), steps=3) == Pages(3, False)
    chain = _empty_ifds(5_000)
    tracemalloc.start()
    try:
        assert tiff_pages(chain) == Pages(5_000, True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 10  # a set of 5,000 offsets alone takes over 256 KiB


def _mpo(photo: np.ndarray) -> bytes:
    """A phone's MPO as Pillow writes one (`save(..., save_all=True)`): the photo, then a second,
    smaller picture (a depth map's or the other eye's), each a JPEG, listed in the first's MP index."""
    out = io.BytesIO()
    second = Image.fromarray(photo[::4, ::4, ::-1].copy())
    Image.fromarray(photo).save(out, "MPO", save_all=True, append_images=[second], quality=90)
    return out.getvalue()


def test_an_mpo_and_an_icon_count_their_pictures_in_the_header():
    """A phone's MPO (two pictures) and an icon (ImageMagick's of 32 and 16 pixels; Pillow's of
    three sizes) said nothing of the pictures left out (`pages`, as a TIFF's or GIF's are counted).
    The member now says how many the file holds: the MPO's as Pillow iterates them, the icon's
    as its directory's idCount (Microsoft's ICONDIR: reserved 0, type 1, count, little-endian).
    The MPO's image is its first picture, as Pillow's default frame shows it."""
    from uvd_pipeline.sample import media

    photo = media.photo("chelsea")  # a real 300 x 451 photo
    mpo = _mpo(photo)
    with Image.open(io.BytesIO(mpo)) as opened:
        assert opened.format == "MPO"
        pictures = sum(1 for _ in ImageSequence.Iterator(opened))
        opened.seek(0)
        default = np.asarray(opened.convert("RGB"))
    assert pictures == 2 and _render_member(mpo)["pages"] == 2
    assert np.array_equal(decode_rgb(mpo), default) and default.shape == photo.shape
    pillow_icon = io.BytesIO()
    Image.fromarray(photo[:64, :64]).save(pillow_icon, "ICO", sizes=[(16, 16), (32, 32), (64, 64)])
    for icon in ((MAGICK / "ico_sizes.ico").read_bytes(), pillow_icon.getvalue()):
        reserved, kind, count = struct.unpack("<HHH", icon[:6])
        assert (reserved, kind) == (0, 1) and count > 1
        assert _render_member(icon)["pages"] == count


def test_xpm_colours_of_every_x11_width_decode_as_imagemagick_reads_them():
    """An XPM's `#` colours in 4, 8, 12 and 16 bits a channel (X11 allows each; ImageMagick writes
    a 16-bit image's in 16) were read by Pillow as 8 bits whatever their length. The reference
    is `convert t.xpm -depth 8 rgb:-` (ImageMagick 6.9.11), frozen below; the pixel row ` c #a`
    (keys that look like a colour) is left as it is: only the colour table is read as colours."""
    xpm = (b'/* XPM */\nstatic char *t[] = {\n"5 2 5 1",\n"  c #f00",\n"c c #0000FFFF0000",\n"# c #00F",\n'
           b'"a c #808080",\n"b c #123456789",\n" c #a",\n"ab#cc"\n};\n')
    imagemagick = bytes.fromhex("ff0000 00ff00 ff0000 0000ff 808080 808080 124578 0000ff 00ff00 00ff00")
    assert decode_rgb(xpm).tobytes() == imagemagick
    # the values line after 5,000 comment lines: Pillow finds it, and so must the colours' rewrite
    commented = xpm.replace(b"{\n", b"{\n" + b"/* a comment line */\n" * 5000, 1)
    assert decode_rgb(commented).tobytes() == imagemagick


def test_a_cut_psd_of_a_layout_pillow_reads_is_a_corrupt_header_not_a_missing_format():
    """An 8-bit PSD cut short (a partial download) was `not_an_image` on main ("no image format
    recognises these bytes"); the same file whole decodes (checked against ImageMagick above), so
    cut it is damaged: `corrupt_header` naming it. A 16-bit one is a format this build lacks."""
    data = (MAGICK / "psd8.psd").read_bytes()
    with pytest.raises(DecodeError) as caught:
        load_image(data[:len(data) // 2], 32, "squash")
    assert (caught.value.reason, caught.value.detail) == (
        "corrupt_header", "PSD (Photoshop, RGB, 8 bits a channel): damaged or cut short (Pillow reads this layout, "
                          "not this file)")
    for cut in (4, 20, 25):  # inside its 26-byte header: damaged too, its layout unknown (was unsupported_format)
        with pytest.raises(DecodeError) as caught:
            load_image(data[:cut], 32, "squash")
        assert (caught.value.reason, caught.value.detail) == (
            "corrupt_header", f"PSD (Photoshop, cut inside its 26-byte header): {cut} bytes")


def test_imagemagicks_xpm_of_named_colours_decodes_as_it_reads_it(tmp_path: Path):
    """ImageMagick writes an XPM colour by its X11 name where one is exactly that colour (`"  c red"`,
    `gray50`, `green` at X11's 0,255,0 where CSS has 0,128,0); Pillow reads only `#` colours and
    refused the whole file (`corrupt_header`). Each decodes as `convert x.xpm -depth 8 rgb:-` shows
    it; a name no X11 table holds is `unsupported_format`."""
    png, xpm = tmp_path / "named.png", tmp_path / "named.xpm"
    subprocess.run(["convert", "xc:red", "xc:gray50", "xc:#00FF00", "xc:MediumForestGreen", "xc:#123456",
                    "+append", "-scale", "500%", str(png)], check=True)
    subprocess.run(["convert", str(png), str(xpm)], check=True)
    data = xpm.read_bytes()
    assert b" c red" in data and b" c green" in data and b" c MediumForestGreen" in data  # written by name
    shown = subprocess.run(["convert", str(xpm), "-depth", "8", "rgb:-"], capture_output=True, check=True).stdout
    decoded = decode_rgb(data)
    assert decoded.shape == (5, 25, 3)
    assert decoded.tobytes() == shown
    assert tuple(decoded[0, 10]) == (0, 255, 0)
    with pytest.raises(DecodeError) as caught:
        decode_rgb(data.replace(b" c red", b" c reddish"))
    assert (caught.value.reason, caught.value.detail) == (
        "unsupported_format", "XPM: a colour given by a name that is no X11 colour name")
