"""Embedded ICC profiles: a photo stored in Adobe RGB (1998) decodes to the sRGB a browser shows.

The profile is written here byte by byte from the ICC v2 specification (a matrix/TRC display
profile: D50-adapted colorants, gamma 563/256), and the Adobe RGB pixels are computed from a real
sRGB photo with the published colour-space formulas in NumPy: the reference is independent of
LittleCMS, which does the decoder's conversion.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from icc_forge import icc_profile, s15
from PIL import Image, ImageCms
from skimage import data

from sources.records import ImageRecord
from transforms.colour_profile import srgb_conversion
from transforms.decode import decode_rgb, load_image

ADOBE_GAMMA = 563 / 256  # 2.19921875, as the profile's curv tag stores it (u8Fixed8)
# Adobe RGB (1998) and sRGB, linear RGB -> XYZ (D65)
ADOBE_TO_XYZ = np.array([[0.5766690, 0.1855582, 0.1882286],
                         [0.2973450, 0.6273636, 0.0752915],
                         [0.0270314, 0.0706889, 0.9913375]])
SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
# Adobe RGB's colorants adapted to the PCS white D50 (Bradford), the columns of its rXYZ/gXYZ/bXYZ
ADOBE_D50_COLORANTS = ((0.6097559, 0.3111242, 0.0194811), (0.2052401, 0.6256560, 0.0608902),
                       (0.1492240, 0.0632197, 0.7448387))


def _xyz_tag(xyz) -> bytes:
    return b"XYZ " + b"\0" * 4 + b"".join(s15(v) for v in xyz)


def _desc_tag(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    return (b"desc" + b"\0" * 4 + struct.pack(">I", len(ascii_text)) + ascii_text
            + struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0) + b"\0" * 67)


def adobe_rgb_profile() -> bytes:
    """An ICC v2 display profile for Adobe RGB (1998), as the specification lays one out."""
    curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(ADOBE_GAMMA * 256)) + b"\0\0"
    tags = [(b"desc", _desc_tag("Adobe RGB (1998) compatible, written by the test")),
            (b"cprt", b"text" + b"\0" * 4 + b"public domain\0"),
            (b"wtpt", _xyz_tag((0.95045, 1.0, 1.08905))),
            (b"rXYZ", _xyz_tag(ADOBE_D50_COLORANTS[0])), (b"gXYZ", _xyz_tag(ADOBE_D50_COLORANTS[1])),
            (b"bXYZ", _xyz_tag(ADOBE_D50_COLORANTS[2])),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    return icc_profile(tags, version=0x02100000)


def _srgb_to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def srgb_to_adobe(pixels: np.ndarray) -> np.ndarray:
    """sRGB uint8 -> Adobe RGB (1998) uint8 (sRGB's gamut lies inside Adobe RGB's: no clipping)."""
    linear = _srgb_to_linear(pixels / 255.0) @ (np.linalg.inv(ADOBE_TO_XYZ) @ SRGB_TO_XYZ).T
    return np.round(np.clip(linear, 0, 1) ** (1 / ADOBE_GAMMA) * 255).astype(np.uint8)


def _encoded(pixels: np.ndarray, fmt: str, icc: bytes | None, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt, **({"icc_profile": icc} if icc else {}), **options)
    return out.getvalue()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return data.astronaut()[::2, ::2].copy()  # 256 x 256, a real sRGB photo


def test_an_adobe_rgb_png_decodes_to_the_srgb_it_was_made_from(photo):
    adobe = srgb_to_adobe(photo)
    assert np.abs(adobe.astype(int) - photo).mean() > 4  # read as sRGB it would be visibly off
    png = _encoded(adobe, "PNG", adobe_rgb_profile())
    decoded = decode_rgb(png)
    error = np.abs(decoded.astype(int) - photo)
    assert error.mean() < 0.6 and error.max() <= 3, (error.mean(), error.max())
    canvas = load_image(png, 256, "center_crop")
    assert canvas.colour_profile.startswith("Adobe RGB (1998) compatible")
    assert np.array_equal(canvas.pixels, decoded)  # the same size: the canvas is the decode


def test_an_adobe_rgb_jpeg_on_the_fast_path_matches_its_srgb_twin(photo):
    """A 512-px JPEG decoded at half scale by the DCT fast path: within JPEG noise of the same
    photo saved as sRGB (and far from it without the conversion)."""
    big = data.astronaut()
    twin = load_image(_encoded(big, "JPEG", None, quality=95), 256, "center_crop")
    tagged = load_image(_encoded(srgb_to_adobe(big), "JPEG", adobe_rgb_profile(), quality=95), 256, "center_crop")
    untagged = load_image(_encoded(srgb_to_adobe(big), "JPEG", None, quality=95), 256, "center_crop")
    assert tagged.reduced_decode == 2 and tagged.colour_profile and not twin.colour_profile
    assert np.abs(tagged.pixels.astype(int) - twin.pixels).mean() < 1.5
    assert np.abs(untagged.pixels.astype(int) - twin.pixels).mean() > 4


def test_srgb_and_unreadable_profiles_keep_the_pixels(photo):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    plain = decode_rgb(_encoded(photo, "PNG", None))
    assert np.array_equal(plain, photo)
    assert srgb_conversion(srgb).transform is None  # recognised by what it does
    assert np.array_equal(decode_rgb(_encoded(photo, "PNG", srgb)), plain)
    broken = adobe_rgb_profile()[:200]  # cut inside its tag data: LittleCMS refuses it
    assert np.array_equal(decode_rgb(_encoded(photo, "PNG", broken)), plain)
    grey = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    assert srgb_conversion(grey).transform is None  # not an RGB profile: nothing to do


def test_the_rendered_member_names_the_profile_it_was_converted_from(photo, tmp_path):
    from uvd_pipeline.render import render_image
    from uvd_pipeline.render import RenderSettings

    (tmp_path / "a.png").write_bytes(_encoded(srgb_to_adobe(photo), "PNG", adobe_rgb_profile()))
    (tmp_path / "b.png").write_bytes(_encoded(photo, "PNG", None))
    settings = RenderSettings(size=256, resize="center_crop", pad_value=0, max_pixels=1 << 26, png_compression=1,
                              seed=0, val_fraction=0.0)
    members = {}
    for name in ("a", "b"):
        record = ImageRecord(key=name, source="web", group=name, uri=str(tmp_path / f"{name}.png"))
        members[name] = render_image(record, settings).members[0]
    assert members["a"]["colour_profile"].startswith("Adobe RGB (1998) compatible")
    assert "colour_profile" not in members["b"]


def test_the_profile_cache_holds_under_a_builds_threads():
    """A build's worker threads decode side by side: another thread's eviction between a cache
    lookup and its use raised KeyError (2 of 3 runs of this hammer on the unlocked cache)."""
    import sys
    import threading

    from transforms import colour_profile

    errors: list[str] = []

    def hammer(seed: int) -> None:
        try:
            for i in range(20_000):
                colour_profile.by_digest(bytes([(seed * 7 + i) % 251]) * 10, "test", lambda: i)
        except Exception as exc:  # noqa: BLE001 - any is the failure
            errors.append(repr(exc))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        for _ in range(3):
            threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[:3]
    assert len(colour_profile._built) <= colour_profile._CACHE_SIZE
