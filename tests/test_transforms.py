"""Decoding every kind of image file to RGB, and the resize policies as geometry."""

from __future__ import annotations

import io
import time
from collections import Counter

import cv2
import numpy as np
import pytest
from PIL import Image

from transforms.decode import DecodeError, decode_cost, decode_rgb, load_image
from transforms.resize import fit_image, plan_resize
from uvd_pipeline.sample import media
from uvd_pipeline.sample.web import decompression_bomb_png


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return media.photo("chelsea")  # 300 x 451 real photo


def test_rgb_png_is_exact(photo):
    assert np.array_equal(decode_rgb(_encode(Image.fromarray(photo), "PNG")), photo)


def test_grayscale_becomes_three_equal_channels(photo):
    gray = np.asarray(Image.fromarray(photo).convert("L"))
    out = decode_rgb(_encode(Image.fromarray(gray), "PNG"))
    assert out.shape == photo.shape and np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)


def test_sixteen_bit_png_keeps_the_high_byte():
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 65536, (40, 50, 3), dtype=np.uint16)
    ok, rgb16 = cv2.imencode(".png", wide[:, :, ::-1])
    assert np.array_equal(decode_rgb(rgb16.tobytes()), (wide >> 8).astype(np.uint8))
    ok, gray16 = cv2.imencode(".png", wide[:, :, 0])
    out = decode_rgb(gray16.tobytes())
    assert np.array_equal(out[..., 1], (wide[:, :, 0] >> 8).astype(np.uint8))


def test_alpha_is_composited_on_white():
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200  # red channel
    rgba[:, :5, 3] = 255  # left half opaque, right half transparent
    rgba[:, 5:, 3] = 0
    out = decode_rgb(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out[0, 0].tolist() == [200, 0, 0]
    assert out[0, 9].tolist() == [255, 255, 255]
    half = rgba.copy()
    half[..., 3] = 128
    mixed = decode_rgb(_encode(Image.fromarray(half, "RGBA"), "PNG"))[0, 0]
    assert mixed.tolist() == [(200 * 128 + 255 * 127 + 127) // 255, 127, 127]


def test_sixteen_bit_grey_with_a_transparent_key_is_composited_on_white():
    """A 16-bit grey PNG with a tRNS key (Pillow, libpng and PNG optimisers write one for a grey
    render whose alpha is all or nothing): the key's pixels were shown in the key's grey, not
    white, because the 16-bit branch never looked at the transparency."""
    rng = np.random.default_rng(4)
    grey = rng.integers(0, 65536, (12, 20), dtype=np.uint16)
    key = 100 * 257
    grey[:, :7] = key  # the background, transparent
    grey[:, 7:][grey[:, 7:] == key] += 1
    image = Image.frombytes("I;16", (20, 12), grey.astype("<u2").tobytes())
    out = decode_rgb(_encode(image, "PNG", transparency=key))
    expected = np.where(grey == key, 255, grey >> 8).astype(np.uint8)
    assert np.array_equal(out, np.repeat(expected[..., None], 3, axis=2))


def test_palette_with_transparency_and_cmyk(photo):
    pal = Image.fromarray(photo).quantize(16)
    pal.info["transparency"] = 0
    out = decode_rgb(_encode(pal, "PNG", transparency=0))
    assert out.shape == photo.shape and out.dtype == np.uint8
    cmyk = decode_rgb(_encode(Image.fromarray(photo).convert("CMYK"), "JPEG", quality=95))
    assert np.abs(cmyk.astype(int) - photo).mean() < 6  # CMYK round trip through JPEG



def _exif_with_a_mistyped_tag(orientation: int) -> bytes:
    """EXIF as a camera or editor writes it, big-endian: Orientation (SHORT) and ResolutionUnit
    0x0128 stored as a FLOAT (type 11) where the standard says SHORT; Pillow reads it, but cannot
    write the value back under that tag's standard type."""
    entries = [(0x0112, 3, orientation.to_bytes(2, "big") + b"\0\0"), (0x0128, 11, b"\x40\x00\x00\x00")]
    ifd = len(entries).to_bytes(2, "big") + b"".join(
        tag.to_bytes(2, "big") + kind.to_bytes(2, "big") + (1).to_bytes(4, "big") + value for tag, kind, value in entries)
    return b"Exif\0\0MM\0*" + (8).to_bytes(4, "big") + ifd + b"\0\0\0\0"


@pytest.mark.parametrize("orientation, turn", [(6, lambda a: np.rot90(a, -1)), (3, lambda a: a[::-1, ::-1]),
                                               (2, lambda a: a[:, ::-1])])
def test_exif_orientation_with_a_mistyped_tag_is_applied(photo, orientation, turn):
    """A JPEG whose EXIF has a tag of a non-standard type beside its Orientation (a bit flipped in a
    type field, found by fuzzing) is turned as its Orientation says. `ImageOps.exif_transpose`
    raised struct.error re-writing the EXIF after the turn, an exception no reject names."""
    data = _encode(Image.fromarray(photo), "JPEG", quality=95, exif=_exif_with_a_mistyped_tag(orientation))
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # Pillow's decode, the EXIF not applied
    assert np.array_equal(decode_rgb(data), turn(stored))
    assert load_image(data, 64, "squash", fast=False).width == (photo.shape[0] if orientation == 6 else photo.shape[1])

def test_exif_orientation_is_applied(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: "rotate 90 clockwise to display"
    stored = np.ascontiguousarray(np.rot90(photo, 1))
    data = _encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())
    out = decode_rgb(data)
    assert out.shape == photo.shape
    assert np.abs(out.astype(int) - photo).mean() < 4
    # the fast path must respect orientation too
    fast = load_image(data, 64, "squash").pixels
    full = fit_image(photo, 64, "squash")
    assert np.abs(fast.astype(int) - full).mean() < 6


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty_file"),
        (b"<html>403</html>", "not_an_image"),
        (decompression_bomb_png(), "decompression_bomb"),
    ],
)
def test_bad_inputs_raise_with_reason(data, reason):
    with pytest.raises(DecodeError) as info:
        load_image(data, 64, "center_crop")
    assert info.value.reason == reason


def test_truncated_jpeg_is_rejected(photo):
    data = _encode(Image.fromarray(photo), "JPEG", quality=90)
    with pytest.raises(DecodeError) as info:
        load_image(data[: len(data) // 2], 64, "center_crop")
    assert info.value.reason == "truncated"


def test_bomb_guard_uses_configured_limit(photo):
    data = _encode(Image.fromarray(photo), "PNG")
    with pytest.raises(DecodeError, match="decompression_bomb"):
        load_image(data, 64, "pad", max_pixels=100 * 100)
    assert load_image(data, 64, "pad", max_pixels=451 * 300).pixels.shape == (64, 64, 3)


PILLOW_MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # Pillow's default (PIL/Image.py): it refuses over twice that


def _plain_pillow_reason(data: bytes) -> str | None:
    """Why the tokenizer's reader (plain Pillow: no pixel budget of its own) refuses `data`; None
    when it reads it."""
    from tokenizer.data import UnreadableImage, decode_image

    try:
        decode_image(data)
    except UnreadableImage as exc:
        return exc.reason
    return None


def test_importing_the_decoder_leaves_pillows_bomb_check_on():
    """transforms.decode set `Image.MAX_IMAGE_PIXELS = None` at import, which turned Pillow's
    decompression-bomb check off for every other reader in the process: tokenizer.evaluate run in
    the same process read a 3.6-gigapixel header as an image to decode."""
    import transforms.decode  # noqa: F401 - imported by this module already: what counts is after it

    assert Image.MAX_IMAGE_PIXELS == PILLOW_MAX_IMAGE_PIXELS
    assert _plain_pillow_reason(decompression_bomb_png()) == "decompression_bomb"


def _square(fmt: str) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    return _encode(Image.fromarray(pixels), fmt, **({"sizes": [(64, 64)]} if fmt == "ICO" else {}))


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "TIFF", "ICO"])
def test_the_build_judges_pixels_by_its_own_max_pixels_not_pillows(monkeypatch, fmt):
    """With Pillow's limit at 1,000 pixels (refused over 2,000) a 64 x 64 image is a bomb to plain
    Pillow, but the build decodes it within its own `max_pixels`, whichever of Pillow's places
    would check it (`Image.open`, a GIF frame, a TIFF tile, an ICO frame), and refuses it over that."""
    from transforms.maps import _declared

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = _square(fmt)
    assert _plain_pillow_reason(data) == "decompression_bomb"
    assert load_image(data, 32, "squash", max_pixels=64 * 64).width == 64
    assert decode_rgb(data, max_pixels=64 * 64).shape == (64, 64, 3)
    assert _declared(data)[:2] == (64, 64)  # the size a map's memory budget is judged on
    for decode in (lambda: load_image(data, 32, "squash", max_pixels=64 * 64 - 1),
                   lambda: decode_rgb(data, max_pixels=64 * 64 - 1)):
        with pytest.raises(DecodeError) as caught:
            decode()
        assert caught.value.reason == "decompression_bomb" and "64x64 exceeds max_pixels=4095" in caught.value.detail


def test_pillows_check_is_lifted_only_in_the_thread_that_decodes(monkeypatch):
    """The build lifts Pillow's check for its own decode only, in its own thread: while it decodes,
    a plain Pillow reader on another thread (another Beam worker thread, tokenizer.evaluate) still
    refuses a bomb, and so does the build's own thread once the decode has returned."""
    import threading

    from transforms import decode

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    bomb = _square("PNG")
    elsewhere: list[str | None] = []
    real_orientation = decode._orientation

    def orientation(image, data):  # runs inside load_image, after Image.open
        reader = threading.Thread(target=lambda: elsewhere.append(_plain_pillow_reason(bomb)))
        reader.start()
        reader.join()
        return real_orientation(image, data)

    monkeypatch.setattr(decode, "_orientation", orientation)
    assert load_image(bomb, 32, "squash", max_pixels=64 * 64).width == 64
    assert elsewhere == ["decompression_bomb"]
    assert _plain_pillow_reason(bomb) == "decompression_bomb"


def test_fast_jpeg_path_matches_full_decode():
    big = cv2.resize(media.photo("coffee"), (2400, 1600), interpolation=cv2.INTER_CUBIC)
    data = _encode(Image.fromarray(big), "JPEG", quality=92)
    fast = load_image(data, 256, "center_crop")
    full = load_image(data, 256, "center_crop", fast=False)
    assert fast.reduced_decode == 4 and full.reduced_decode == 1  # 1600 short side / 4 = 400 >= 256
    assert (fast.width, fast.height) == (2400, 1600)
    mse = np.mean((fast.pixels.astype(float) - full.pixels) ** 2)
    assert 10 * np.log10(255**2 / mse) > 32


def test_policies_shapes_and_content():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 50:150] = 255  # a white central square 100x100 in a black 100x200 image
    crop = fit_image(image, 50, "center_crop")
    assert crop.shape == (50, 50, 3) and crop.min() == 255  # only the central square remains
    pad = fit_image(image, 50, "pad", pad_value=7)
    assert pad.shape == (50, 50, 3)
    assert (pad[:12] == 7).all() and (pad[-12:] == 7).all()  # 25 rows of content, centred
    assert pad[25, 25].tolist() == [255, 255, 255] and pad[25, 2].tolist() == [0, 0, 0]
    squash = fit_image(image, 50, "squash")
    assert squash.shape == (50, 50, 3) and squash[:, :10].max() == 0 and squash[:, 15:35].min() == 255


@pytest.mark.parametrize("policy", ["squash", "center_crop", "pad"])
@pytest.mark.parametrize("shape", [(120, 300), (300, 120), (97, 97)])
def test_points_follow_the_image(policy, shape):
    """A point drawn in the input lands where apply_points says, within a pixel."""
    h, w = shape
    plan = plan_resize(h, w, 64, policy)
    for x, y in [(w * 0.5, h * 0.5), (w * 0.4, h * 0.6), (w * 0.55, h * 0.35)]:
        image = np.zeros((h, w), np.float32)
        cv2.circle(image, (int(x), int(y)), 4, 1.0, -1)
        out = plan.apply_image(image)
        ys, xs = np.nonzero(out > 0.5 * out.max())
        mapped = plan.apply_points(np.array([[int(x) + 0.5, int(y) + 0.5]]))[0]
        assert abs(xs.mean() + 0.5 - mapped[0]) <= 1.0 and abs(ys.mean() + 0.5 - mapped[1]) <= 1.0


def test_typed_failures_share_one_shape():
    """Every expected failure on one input is a `Rejected` (reason, detail), and the detail of an
    unexpected exception is cut the same way everywhere."""
    from sources.video_decode import VideoError
    from transforms.decode import DecodeError
    from transforms.errors import DETAIL_CHARS, Rejected, exception_detail
    from transforms.maps import MapError
    from uvd_pipeline.render_annotated import AnnotationError

    for kind in (DecodeError, MapError, VideoError, AnnotationError):
        error = kind("truncated", "at byte 12")
        assert isinstance(error, Rejected) and (error.reason, error.detail) == ("truncated", "at byte 12")
        assert str(error) == "truncated: at byte 12" and str(kind("empty_file")) == "empty_file"
    long = ValueError("x" * 500)
    assert exception_detail(long) == ("ValueError: " + "x" * 500)[:DETAIL_CHARS]
    assert exception_detail(long, "TIFF: ", limit=None) == "TIFF: ValueError: " + "x" * 500


@pytest.mark.parametrize("folder", [b"secret caf\xe9", b"back\\slash", b"new\nline", "sp\u2028ace".encode()])
def test_an_os_error_names_the_file_not_its_folder_whatever_the_folder_is_called(tmp_path, folder: bytes):
    """The operating system's refusal of a path in a folder named in latin-1 (an old archive's),
    or holding a backslash, a newline or U+2028, as str or as bytes: the detail names the file
    alone (the folder's whole path was published: OSError quotes the path escaped, so it never
    matched), a latin-1 byte as `\\xe9` once cleaned for the rejects file."""
    import os

    from sources.records import clean_detail
    from transforms.errors import exception_detail

    path = os.fsencode(tmp_path) + b"/" + folder + b"/caf\xe9.jpg"
    for given in (path, os.fsdecode(path)):
        with pytest.raises(OSError) as refused:
            open(given, "rb")
        assert clean_detail(exception_detail(refused.value)) == \
            "FileNotFoundError: [Errno 2] No such file or directory: 'caf\\xe9.jpg'"


def _decoder_input(monkeypatch, limit: int) -> list[int]:
    """The bytes Pillow hands its decoders, one entry a `decode` call: the work of a decode,
    counted instead of timed (a file refused before decoding feeds none). Past `limit` bytes the
    decode stops with an error, so a test whose protection is gone fails at once instead of
    decoding for a minute."""
    from PIL import Image as PILImage

    fed: list[int] = []
    real = PILImage._getdecoder

    class Counted:
        def __init__(self, decoder) -> None:
            self._decoder = decoder

        def __getattr__(self, name: str):
            return getattr(self._decoder, name)

        def decode(self, data: bytes):
            fed.append(len(data))
            if sum(fed) > limit:
                raise AssertionError(f"the decoder was fed {sum(fed)} bytes, over {limit}")
            return self._decoder.decode(data)

    monkeypatch.setattr(PILImage, "_getdecoder", lambda *args, **kwargs: Counted(real(*args, **kwargs)))
    return fed


def test_jpeg_of_too_many_scans_is_refused_before_decoding(monkeypatch):
    """Each scan of a progressive JPEG walks every block of its components: 3200 scans of EOB runs
    (435 KB) held a worker 49 s at 8000 x 8000. Counted from the markers, they are refused before
    the decoder sees a byte; 100 scans, more than real encoders write, still decode."""
    from hostile_corpus import jpeg_scan_bomb
    from transforms.decode import MAX_JPEG_SCANS

    bomb = jpeg_scan_bomb(8000, 8000, 3200)
    with monkeypatch.context() as patched:
        fed = _decoder_input(patched, limit=0)
        with pytest.raises(DecodeError) as caught:
            load_image(bomb, 64, "center_crop")
    assert fed == []  # refused from the markers: no decoder was fed
    assert (caught.value.reason, caught.value.detail) == (
        "too_many_scans", "a 8000x8000 JPEG of more than 100 scans (real encoders write at most a few dozen)")
    with pytest.raises(DecodeError, match="too_many_scans"):
        load_image(jpeg_scan_bomb(2000, 2000, MAX_JPEG_SCANS), 64, "center_crop")  # 101 scans: quick to decode
    flat = load_image(jpeg_scan_bomb(2000, 2000, MAX_JPEG_SCANS - 1), 64, "center_crop")  # 100 scans
    assert (flat.width, flat.pixels.min(), flat.pixels.max()) == (2000, 128, 128)  # DC 0: mid grey


def test_a_single_scan_jpegs_later_scans_cost_no_time(monkeypatch):
    """A sequential JPEG whose first scan holds every component is decoded in that one scan:
    libjpeg refuses a second one (JERR_EOI_EXPECTED) instead of walking it, so its scans are not
    counted (no pass over the file's bytes), and 2,000 repeated scans (710 MB) are a quick reject:
    the decoder is fed the first scan and a read block, the marker walk never passes the first scan."""
    from transforms import headers
    from transforms.headers import jpeg_layout

    grey = np.random.default_rng(0).integers(0, 255, (800, 800), dtype=np.uint8)
    data = _encode(Image.fromarray(grey), "JPEG")
    sos, eoi = data.index(b"\xff\xda"), data.rindex(b"\xff\xd9")
    repeated = data[:sos] + data[sos:eoi] * 2000 + b"\xff\xd9"
    assert jpeg_layout(repeated).scans == 1 and not jpeg_layout(repeated).multi_scan
    searched: list[int] = []  # where the marker walk searched entropy-coded data for the next marker
    real_marker = headers._NEXT_MARKER

    class Spy:
        def search(self, text: bytes, pos: int):
            searched.append(pos)
            return real_marker.search(text, pos)

    monkeypatch.setattr(headers, "_NEXT_MARKER", Spy())
    fed = _decoder_input(monkeypatch, limit=4 * len(data))
    with pytest.raises(DecodeError):
        load_image(repeated, 64, "center_crop")
    assert max(searched, default=0) < eoi
    assert 0 < sum(fed) < 2 * len(data)  # the first scan and a read block of the next, not 2,000 scans


def test_scans_after_the_first_image_are_not_counted():
    """Only the first image's scans are decoded: an 11-frame progressive MPO (Pillow's) and a
    progressive JPEG with 8 MB of trailing bytes (a Motion Photo carries its video there) hold
    stray scan markers past the end-of-image marker, and decode like their first image."""
    from transforms.headers import jpeg_layout

    frames = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (300, 400, 3), dtype=np.uint8))
              for i in range(11)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "MPO", save_all=True, append_images=frames[1:], progressive=True)
    mpo = buffer.getvalue()
    single = _encode(frames[0], "JPEG", progressive=True)
    trailer = single + np.random.default_rng(0).integers(0, 256, 8 << 20, dtype=np.uint8).tobytes()
    for data in (mpo, trailer):
        assert jpeg_layout(data).scans == jpeg_layout(single).scans == 10
        decoded = load_image(data, 64, "center_crop")
        assert (decoded.width, decoded.height) == (400, 300)


@pytest.mark.parametrize("mode, scans", [("RGB", 10), ("L", 6), ("CMYK", 18)])
def test_scans_counted_as_libjpeg_writes_them(photo, mode, scans):
    """libjpeg's standard progressive scripts: 10 scans for colour, 6 for grey, 18 for CMYK, far
    under the limit; markers inside an EXIF thumbnail (a JPEG of its own) are not counted."""
    from transforms.headers import jpeg_layout

    thumbnail = _encode(Image.fromarray(photo).resize((64, 40)), "JPEG")
    exif = Image.Exif()
    exif[0x0112] = 1
    data = _encode(Image.fromarray(photo).convert(mode), "JPEG", progressive=True, exif=exif.tobytes() + thumbnail)
    layout = jpeg_layout(data)
    assert (layout.width, layout.height, layout.progressive, layout.scans) == (451, 300, True, scans)
    assert jpeg_layout(_encode(Image.fromarray(photo), "JPEG")).scans == 1


# EXIF orientation o, as the EXIF spec defines it: the stored pixels are the displayed ones put
# through the inverse of the turn a viewer applies (2: mirrored, 6: displayed turned 90 clockwise, ...)
STORED_FOR = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, 1),
    7: lambda a: np.rot90(a[::-1], 1),
    8: lambda a: np.rot90(a, -1),
}


def _centre_crop_reference(shown: np.ndarray, size: int) -> np.ndarray:
    """img2dataset's center_crop done independently: the central square, shrunk with area interpolation."""
    h, w = shown.shape[:2]
    side = min(h, w)
    x0, y0 = (w - side) // 2, (h - side) // 2
    return cv2.resize(np.ascontiguousarray(shown[y0 : y0 + side, x0 : x0 + side]), (size, size),
                      interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_is_applied_once_and_cropped_from_the_turned_image(photo, orientation):
    """A TIFF's Orientation tag (cameras and scanners write it): Pillow turns a TIFF itself as it
    loads it and reports the turned size from the open, so a 5-8 file was planned on the size
    turned twice (120 x 80 as 80 x 120): its centre crop squeezed a 120 x 80 strip into the square
    and its width and height were swapped."""
    shown = cv2.resize(photo, (120, 80), interpolation=cv2.INTER_AREA)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = np.ascontiguousarray(STORED_FOR[orientation](shown))
    for compression in ("raw", "tiff_lzw"):  # Pillow's own decoder and libtiff's
        data = _encode(Image.fromarray(stored), "TIFF", exif=exif.tobytes(), compression=compression)
        decoded = load_image(data, 32, "center_crop")
        assert (decoded.width, decoded.height) == (120, 80)
        assert np.array_equal(decoded.pixels, _centre_crop_reference(shown, 32))  # lossless, the same filter
        assert np.array_equal(decode_rgb(data), shown)


def test_mpo_jpeg_takes_the_fast_path_like_a_jpeg():
    """A JPEG carrying an MPF index (a camera's MPO, a phone's Ultra HDR photo with its gain map) is
    opened by Pillow as MPO: it was decoded at full size where the same JPEG without the index
    decodes at 1/4 scale, and over the memory budget it was refused instead of decoded reduced."""
    big = cv2.resize(media.photo("coffee"), (1600, 1200), interpolation=cv2.INTER_CUBIC)
    gain_map = Image.fromarray(cv2.resize(big, (400, 300), interpolation=cv2.INTER_AREA)[..., 0])
    mpo = _encode(Image.fromarray(big), "MPO", quality=92, save_all=True, append_images=[gain_map])
    plain = _encode(Image.fromarray(big), "JPEG", quality=92)
    fast, full = load_image(mpo, 256, "center_crop"), load_image(mpo, 256, "center_crop", fast=False)
    assert fast.format == "MPO" and (fast.width, fast.height) == (1600, 1200)
    assert fast.reduced_decode == load_image(plain, 256, "center_crop").reduced_decode == 4
    mse = np.mean((fast.pixels.astype(float) - full.pixels) ** 2)
    assert 10 * np.log10(255**2 / mse) > 32
    budget = decode_cost(1600, 1200, "RGB") - 1  # the full decode is just over it
    reduced = load_image(mpo, 256, "center_crop", fast=False, max_bytes=budget)
    assert reduced.reduced_decode == 2


def test_lossless_jpeg_is_never_decoded_at_a_dct_scale(photo, tmp_path):
    """A lossless JPEG (SOF3: DICOM, DNG previews; ffmpeg's `ljpeg`) has no DCT to scale: asked for
    a reduced decode, libjpeg-turbo wrote the full-size rows into Pillow's reduced buffer, and the
    decoding process died (SIGABRT, `decoder_crashed`) or read a `truncated` stream, where the
    full decode renders. Both paths now decode it whole, to OpenCV's own decode of the file."""
    from uvd_pipeline import image_decode
    from video_zoo import ffmpeg, require_ffmpeg

    require_ffmpeg()
    shown = cv2.resize(photo, (240, 160), interpolation=cv2.INTER_AREA)
    Image.fromarray(shown).save(tmp_path / "in.png")
    for pix_fmt in ("yuvj444p", "yuvj420p"):
        ffmpeg("-i", str(tmp_path / "in.png"), "-c:v", "ljpeg", "-pix_fmt", pix_fmt, str(tmp_path / "out.jpg"))
        data = (tmp_path / "out.jpg").read_bytes()
        assert b"\xff\xc3" in data[: data.index(b"\xff\xda")]  # a lossless frame
        opencv = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        for fast in (True, False):
            decoded = image_decode.load_image(data, 32, "center_crop", max_pixels=10**6, fast=fast)
            assert decoded.reduced_decode == 1
            assert np.array_equal(decoded.pixels, _centre_crop_reference(opencv, 32))


@pytest.mark.parametrize("codec,pix_fmt,named", [("ljpeg", "bgr24", "JPEG (9-bit samples)"),
                                                  ("jpegls", "gray16le", "JPEG-LS"), ("jpegls", "rgb24", "JPEG-LS")])
def test_jpegs_pillow_cannot_decode_are_unsupported_not_junk(photo, tmp_path, codec, pix_fmt, named):
    """A JPEG of other than 8-bit samples (ffmpeg's lossless RGB writes 9, medical and camera files
    12 or 16) or a JPEG-LS: Pillow does not open them, and they were `not_an_image` ("no image
    format recognises these bytes"), as if a web page had been saved as a .jpg."""
    from video_zoo import ffmpeg, require_ffmpeg

    require_ffmpeg()
    Image.fromarray(photo).save(tmp_path / "in.png")
    ffmpeg("-i", str(tmp_path / "in.png"), "-c:v", codec, "-pix_fmt", pix_fmt, str(tmp_path / "out.jpg"))
    with pytest.raises(DecodeError) as info:
        load_image((tmp_path / "out.jpg").read_bytes(), 32, "center_crop")
    assert (info.value.reason, info.value.detail.split(":")[0]) == ("unsupported_format", named)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * np.log10(255**2 / np.mean((a.astype(float) - b) ** 2))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_fast_path_of_a_jpeg_of_partial_blocks_lands_where_the_full_decode_does(orientation):
    """1001 x 1501 (most cameras' and web sizes are no multiple of 8): decoded at 1/8, the last block
    column and row are mostly the encoder's padding, so reduced pixel j shows input pixels 8j to
    8j + 8, and after a turn that reverses an axis that block comes first. Stretching the reduced
    image uniformly over the input moved the canvas by up to 7/8 of a reduced pixel: 29-31 dB from
    Pillow's full decode (turned by `ImageOps.exif_transpose`, cropped and area-resized with
    OpenCV), now 36-40 (the crop is still rounded to whole reduced pixels). The scale was also
    reported as 7."""
    from PIL import ImageOps

    shown = cv2.resize(media.photo("coffee"), (1001, 1501), interpolation=cv2.INTER_CUBIC)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(Image.fromarray(np.ascontiguousarray(STORED_FOR[orientation](shown))), "JPEG", quality=95,
                   exif=exif.tobytes())
    reference = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert reference.shape == shown.shape
    fast = load_image(data, 64, "center_crop")
    assert fast.reduced_decode == 8 and (fast.width, fast.height) == (1001, 1501)
    assert _psnr(fast.pixels, _centre_crop_reference(reference, 64)) > 34
    squashed = cv2.resize(reference, (64, 64), interpolation=cv2.INTER_AREA)
    assert _psnr(load_image(data, 64, "squash").pixels, squashed) > 36


@pytest.mark.parametrize("fmt,options", [("WEBP", {"quality": 90}), ("WEBP", {"lossless": True}), ("AVIF", {}),
                                         ("TIFF", {"compression": "tiff_lzw"}), ("ICO", {}), ("PNG", {}),
                                         ("JPEG", {"progressive": True})])
@pytest.mark.parametrize("kept", [0.5, 0.99])
def test_a_file_cut_short_is_truncated_whatever_its_format(photo, fmt, options, kept):
    """A download cut short: a JPEG or PNG was `truncated`, but a WebP `corrupt_header`, an AVIF
    `unsupported_format` ("a real image format this build cannot decode") or `decode_error`, an LZW
    TIFF (its IFD written after the pixels) `unsupported_format`, an ICO `not_an_image`. Each
    container says how long it is (RIFF size, ISO boxes, TIFF IFD offset, ICO directory)."""
    image = Image.fromarray(photo)
    data = _encode(image.resize((64, 64)) if fmt == "ICO" else image, fmt, **options)
    for fast in (True, False):
        with pytest.raises(DecodeError) as info:
            load_image(data[: int(len(data) * kept)], 32, "center_crop", fast=fast)
        assert info.value.reason == "truncated", info.value.detail


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # Pillow's, on each cut IFD
def test_a_tiff_cut_inside_its_ifd_is_truncated(photo):
    """A TIFF cut anywhere in its first IFD (entries, next-IFD offset, the values they point at) was
    `unsupported_format` ("a sample layout Pillow cannot read"): 130-690 cut places a file, found
    by a mutation fuzz. ImageMagick's LZW TIFF keeps its IFD at the end (a download cut in its last
    bytes), Pillow's uncompressed one before the pixels."""
    from pathlib import Path

    magick = (Path(__file__).parent / "fixtures" / "magick" / "tiff_lzw.tif").read_bytes()
    pillow = _encode(Image.fromarray(photo[:16, :16]), "TIFF")
    pixels_at = Image.open(io.BytesIO(pillow)).tile[0][2]  # (decoder, box, offset, args)
    for data, cuts in ((magick, range(int.from_bytes(magick[4:8], "little"), len(magick))), (pillow, range(8, pixels_at))):
        assert len(cuts) > 100
        reasons = set()
        for cut in cuts:
            with pytest.raises(DecodeError) as info:
                decode_rgb(data[:cut])
            reasons.add(info.value.reason)
        assert reasons == {"truncated"}

def _tiffs_written_ifd_first(photo: np.ndarray) -> dict[str, bytes]:
    """Compressed TIFFs: tifffile's, whose first IFD comes before the pixels, and Pillow's (libtiff's)."""
    import tifffile

    tiled, strips, rows = io.BytesIO(), io.BytesIO(), io.BytesIO()
    tifffile.imwrite(tiled, photo[:128, :128], tile=(64, 64), photometric="rgb", compression="zlib")
    tifffile.imwrite(strips, photo[:128, :128], photometric="rgb", compression="zlib", rowsperstrip=8)
    # 128 strips, more than the first and last read: a cut in the middle is found by bisecting
    tifffile.imwrite(rows, photo[:128, :128], photometric="rgb", compression="zlib", rowsperstrip=1)
    pillow = _encode(Image.fromarray(photo[:128, :128]), "TIFF", compression="tiff_adobe_deflate")
    return {"tifffile tiled": tiled.getvalue(), "tifffile strips": strips.getvalue(),
            "tifffile 1-row strips": rows.getvalue(), "Pillow deflate": pillow}


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
def test_a_tiff_written_ifd_first_cut_inside_its_pixels_is_truncated(photo):
    """A deflate TIFF whose IFD comes first (tifffile's tiles or strips) cut inside its compressed
    data was `unsupported_format` ("decoder error -2"): its strips' or tiles' offsets and byte counts
    (read here by tifffile) say how long it is. The file as written decodes, and is not called cut."""
    import tifffile

    from transforms.headers import declared_length

    for name, data in _tiffs_written_ifd_first(photo).items():
        assert declared_length(data) <= len(data), name
        assert decode_rgb(data).shape == (128, 128, 3)
        page = tifffile.TiffFile(io.BytesIO(data)).pages[0]
        first, end = min(page.dataoffsets), max(o + n for o, n in zip(page.dataoffsets, page.databytecounts))
        for cut in (first + 10, (first + end) // 2, end - 10):
            with pytest.raises(DecodeError) as info:
                decode_rgb(data[:cut])
            assert info.value.reason == "truncated", (name, cut, info.value.detail)


def test_whole_tiffs_are_not_said_to_be_cut(photo):
    """Whole TIFFs as ImageMagick (the fixtures), OpenCV, Pillow and tifffile write them declare no
    more bytes than they hold: strips, tiles, IFD values and all; a BigTIFF (`TIFF64:`) too."""
    from pathlib import Path

    from transforms.headers import declared_length

    whole = {path.name: path.read_bytes() for path in (Path(__file__).parent / "fixtures" / "magick").glob("*.tif")}
    whole.update(_tiffs_written_ifd_first(photo))
    whole["OpenCV"] = cv2.imencode(".tif", photo[:128, :128])[1].tobytes()
    assert len(whole) > 15
    for name, data in whole.items():
        declared = declared_length(data)
        assert declared is not None and len(data) - 1000 < declared <= len(data), (name, declared, len(data))


def _with_comments(pnm: bytes) -> bytes:
    """The PGM with comment lines after its magic number (GIMP and scientific cameras write some),
    its header past 256 bytes."""
    return pnm[:3] + b"".join(b"# CREATOR: camera %d, exposure %s\n" % (i, b"1" * 30) for i in range(8)) + pnm[3:]


def _without_file_size(bmp: bytes) -> bytes:
    """The BMP with the bfSize of its file header 0, as some writers leave it (Pillow never reads it)."""
    return bmp[:2] + bytes(4) + bmp[6:]


@pytest.mark.parametrize("name, variant", [("bmp_rle8.bmp", None), ("pgm10.pgm", None),
                                           ("bmp_rle8.bmp", _without_file_size), ("pgm10.pgm", _with_comments)])
def test_a_file_pillow_decodes_in_python_cut_short_is_truncated(name, variant):
    """ImageMagick's RLE8 BMP and 10-bit PGM (maxval 1023), which Pillow decodes in Python, cut
    anywhere in their samples were `decode_error` ("ValueError: not enough image data"): the BMP's
    file header and the PGM's width, height and maxval say how long each is. An RLE BMP whose
    bfSize is 0 is as long as its bfOffBits and biSizeImage say; a PGM's header is read past its
    comments, however long (one of over 256 bytes was `decode_error` still)."""
    from pathlib import Path

    data = (Path(__file__).parent / "fixtures" / "magick" / name).read_bytes()
    data = variant(data) if variant else data
    decode_rgb(data)
    for cut in range(len(data) // 2, len(data), 37):
        with pytest.raises(DecodeError) as info:
            decode_rgb(data[:cut])
        assert info.value.reason == "truncated", (cut, info.value.detail)

@pytest.mark.timeout(20)
@pytest.mark.parametrize("gap", [b" ", b"\n", b"\r\n", b"\t \n"])
def test_a_pnm_header_of_long_blank_runs_is_refused_at_once(gap):
    """A 200-byte "P5" file of blanks then a letter (Pillow refuses it: `corrupt_header`): the PGM
    header's pattern, blanks nested in a repeat, backtracked through every split of the blanks
    before it failed (26 blanks took 6.5 s, each one more twice as long: a build hung on it)."""
    started = time.monotonic()
    for data in (b"P5" + gap * 64 + b"x", b"P6 32" + gap * 64 + b"24" + gap * 64 + b"x"):
        with pytest.raises(DecodeError) as info:
            decode_rgb(data)
        assert info.value.reason == "corrupt_header", info.value.detail
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("marker", [b"\xff\xc0", b"\xff\xda"])  # cut inside the frame header / the scan header
def test_a_jpeg_cut_inside_a_segment_header_is_a_reject_not_a_crash(marker):
    """Pillow's JPEG cut anywhere in its frame or scan header: the header walk read past the end
    (IndexError: 4 bytes into either, and 5 to 9 into the frame, where it reads the component
    count; found by a mutation fuzz) where the decoders' own refusal is a counted reject."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    for into in range(1, 20):
        cut = data[: data.index(marker) + into]
        for decode in (lambda: decode_rgb(cut), lambda: load_image(cut, 32, "center_crop")):
            with pytest.raises(DecodeError):
                decode()


def _pixels_start(data: bytes) -> int:
    """Where a JPEG's first scan header or a PNG's first IDAT chunk header ends, found by Pillow's
    own reader (where it stopped reading a JPEG's segments; a PNG's first tile's offset),
    independent of the header walk."""
    with Image.open(io.BytesIO(data)) as image:
        return image.tile[0][2] if data[:4] == b"\x89PNG" else image.fp.tell()


def _headers_before_pixels(photo: np.ndarray) -> dict[str, bytes]:
    """JPEGs and PNGs with long headers, as the world writes them: ImageMagick's (the fixtures: EXIF
    with a thumbnail, ICC profiles, progressive, restart markers, iCCP, gAMA, cHRM, Adam7), a phone
    photo's baseline and progressive JPEG with EXIF and an ICC profile (Pillow), a PNG with an
    iCCP, zTXt and tEXt before its IDAT (Pillow), and OpenCV's."""
    from pathlib import Path

    from PIL import ImageCms, PngImagePlugin

    magick = Path(__file__).parent / "fixtures" / "magick"
    files = {p.name: p.read_bytes() for p in sorted(magick.glob("jpeg_*.jpg")) + sorted(magick.glob("png*.png"))}
    files = {name: data for name, data in files.items() if "arith" not in name and "anim" not in name}
    image = Image.fromarray(photo[:64, :96])
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif.update({0x0112: 6, 0x010F: "Phone maker", 0x0110: "Phone model"})
    for progressive in (False, True):
        files[f"Pillow progressive={progressive}"] = _encode(image, "JPEG", progressive=progressive,
                                                             exif=exif.tobytes(), icc_profile=icc)
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "a long comment " * 40, zip=True)
    text.add_text("Title", "a title")
    files["Pillow iCCP zTXt"] = _encode(image, "PNG", icc_profile=icc, pnginfo=text)
    files["Pillow 4:2:2"] = _encode(image, "JPEG", subsampling=1, exif=exif.tobytes())
    files["Pillow optimized 4:4:4"] = _encode(image, "JPEG", optimize=True, subsampling=0, quality=50)
    for name, ext, flags in (("jpg", ".jpg", []), ("progressive jpg", ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
                             ("png", ".png", []), ("png level 9", ".png", [cv2.IMWRITE_PNG_COMPRESSION, 9])):
        files[f"OpenCV {name}"] = cv2.imencode(ext, photo[:64, :96], flags)[1].tobytes()
    return files


def test_a_jpeg_or_png_cut_before_its_pixels_is_truncated(photo):
    """A download cut inside a JPEG's header segments (EXIF, ICC profile, tables, frame, scan
    header) or a PNG's chunks before its first IDAT (iCCP, zTXt) was `corrupt_header` (Pillow's
    "broken PNG file", a SyntaxError), or `not_an_image` a few bytes in, where a cut in the
    pixels is `truncated`. Every cut from the second byte to the end of the first scan's or
    IDAT's header is now `truncated`, as the file's segments and chunks declare it longer."""
    files = _headers_before_pixels(photo)
    assert len(files) > 30
    for name, data in files.items():
        start = _pixels_start(data)
        cuts = sorted({2, 3, 9, start - 9, start - 1, start, *range(2, start, max(1, start // 12))})
        for cut in cuts:
            with pytest.raises(DecodeError) as info:
                decode_rgb(data[:cut])
            assert info.value.reason == "truncated", (name, cut, start, info.value.detail)


def test_whole_jpegs_and_pngs_even_damaged_are_not_said_to_be_cut(photo):
    """Whole JPEGs and PNGs declare no more bytes than they hold, and one damaged but whole (its
    first segment's or chunk's length made too large: a bit flip, the file full length) is no
    `truncated` one: it ends as a whole file does, with its EOI or IEND; nor is a JPEG's first
    marker followed by noise, whose 'segment' starts as no writer starts one."""
    from transforms.headers import declared_length

    files = _headers_before_pixels(photo)
    for mode in ("L", "LA", "RGBA", "P", "CMYK", "I;16"):
        files[f"Pillow {mode}"] = _encode(Image.fromarray(photo[:40, :40]).convert(mode),
                                          "JPEG" if mode in ("L", "CMYK") else "PNG")
    assert len(files) > 40
    for name, data in files.items():
        declared = declared_length(data)
        assert declared is None or declared <= len(data), (name, declared, len(data))
        damaged = bytearray(data)
        if data[:2] == b"\xff\xd8":
            damaged[4:6] = b"\xff\xf0"  # the APP0/APP1 length
        else:
            damaged[33:37] = (0x7FF0).to_bytes(4, "big")  # the chunk after IHDR
        try:
            decode_rgb(bytes(damaged))
        except DecodeError as exc:
            assert exc.reason != "truncated", (name, exc.detail)
    for seed in range(20):  # a JPEG's markers, then noise (the sample corpus's broken header): no segment is cut
        noise = np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes()
        with pytest.raises(DecodeError) as info:
            decode_rgb(b"\xff\xd8\xff\xe0" + noise)
        assert info.value.reason in ("corrupt_header", "not_an_image"), (seed, info.value.detail)


def _damaged_copies(data: bytes, count: int = 120) -> list[bytes]:
    """Copies of a whole TIFF damaged in its first IFD, the file full length: a flipped bit, four
    zeroed bytes or one random byte at a random place of its entries (seeded)."""
    rng = np.random.default_rng(7)
    order = "little" if data[:2] == b"II" else "big"
    ifd = int.from_bytes(data[4:8], order)
    end = ifd + 2 + 12 * int.from_bytes(data[ifd : ifd + 2], order) + 4
    copies = []
    for trial in range(count):
        damaged, at = bytearray(data), int(rng.integers(ifd, end))
        if trial % 3 == 0:
            damaged[at] ^= 1 << int(rng.integers(8))
        elif trial % 3 == 1:
            damaged[at : at + 4] = bytes(len(damaged[at : at + 4]))
        else:
            damaged[at] = int(rng.integers(256))
        copies.append(bytes(damaged))
    return copies


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's "Corrupt EXIF data", "Possibly corrupt"
def test_a_damaged_whole_tiff_is_not_called_cut(photo):
    """A TIFF damaged but whole (a bit flip or zeroed bytes in its IFD: an offset or byte count then
    points past the end) was `truncated`, what a cut download is, for 1 in 6 damaged copies (1090
    of 6600 over ImageMagick's, Pillow's and tifffile's); Pillow's own "image file is truncated"
    for a strip's byte count damaged was taken at its word. A cut TIFF leaves what it declares
    past the end as a tail (`headers._cut_at_end`); a damaged one is now another reject, each
    counted, no crash, no allocation over the budget (`decode_rgb`'s own). tifffile reads the
    undamaged files as the decoder does."""
    import tifffile

    from pathlib import Path

    whole = _tiffs_written_ifd_first(photo)
    whole["Pillow raw"] = _encode(Image.fromarray(photo[:64, :64]), "TIFF")
    for name in ("tiff_tiled.tif", "tiff_planar.tif"):  # ImageMagick's deflate tiles, planar strips
        whole[name] = (Path(__file__).parent / "fixtures" / "magick" / name).read_bytes()
    reasons: Counter[str] = Counter()
    for name, data in whole.items():
        independent = tifffile.imread(io.BytesIO(data))
        independent = np.moveaxis(independent, 0, -1) if independent.shape[0] == 3 else independent
        assert np.array_equal(decode_rgb(data), independent[..., :3]), name
        for damaged in _damaged_copies(data):
            try:
                decode_rgb(damaged)
            except DecodeError as exc:
                reasons[exc.reason] += 1
    # a count or offset damaged to point just past the end, as a cut leaves it, is no evidence either
    # way: 5 of these 434 (131 before), 10 of 6600 over all the fixtures' TIFFs, Pillow's and tifffile's
    assert sum(reasons.values()) > 300 and reasons["truncated"] <= sum(reasons.values()) // 50, reasons
    assert set(reasons) <= {"unsupported_format", "decode_error", "corrupt_header", "decompression_bomb",
                            "image_too_large", "no_pixels", "truncated"}, reasons


def test_a_png_cut_in_a_text_chunk_after_its_pixels_is_truncated():
    """ImageMagick writes its `date:create`/`date:modify` tEXt chunks after the IDATs. A download cut
    inside one was `decode_error` ("Truncated File Read": Pillow's capital T, and the header walk
    stopped at the first IDAT), where a cut anywhere else is `truncated`. The walk now goes on
    past the IDATs of a file that does not end with IEND; a whole one with bytes after its IEND
    (a server's trailer) still declares no more than it holds."""
    from pathlib import Path

    from transforms.headers import declared_length

    magick = Path(__file__).parent / "fixtures" / "magick"
    cuts = 0
    for path in sorted(magick.glob("png*.png"))[:6]:
        data = path.read_bytes()
        last_idat = data.rindex(b"IDAT") - 4
        text = data.index(b"tEXt", last_idat) - 4  # the first chunk after the pixels
        length = int.from_bytes(data[text : text + 4], "big")
        assert declared_length(data + b"<html>trailer</html>" * 20) is None
        for cut in (text + 9, text + 8 + length // 2, text + 8 + length - 1):
            with pytest.raises(DecodeError) as info:
                decode_rgb(data[:cut])
            assert info.value.reason == "truncated", (path.name, cut, info.value.detail)
            cuts += 1
    assert cuts == 18


def test_pixels_packs_as_numpy_reads_the_image():
    """`decode.pixels` (one-piece packing) gives what `np.asarray` gives: values, shape, dtype and a
    read-only array, for the packed modes (rows wider than Pillow's 64 KiB chunks and one-pixel
    images included) and through `np.asarray` for the others."""
    from transforms.decode import pixels

    rng = np.random.default_rng(3)
    for mode, channels in (("RGB", 3), ("RGBA", 4), ("L", 1)):
        for w, h in ((1, 1), (7, 3), (30_000, 2), (640, 480)):
            shape = (h, w) if channels == 1 else (h, w, channels)
            image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
            got, want = pixels(image), np.asarray(image)
            assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)
            assert not got.flags.writeable
    for mode in ("I;16", "F", "P", "1", "CMYK"):
        image = Image.new(mode, (5, 4))
        assert np.array_equal(pixels(image), np.asarray(image)) and pixels(image).shape == np.asarray(image).shape
    assert pixels(Image.new("RGB", (0, 3))).shape == np.asarray(Image.new("RGB", (0, 3))).shape
