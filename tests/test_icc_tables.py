"""An embedded ICC profile whose tables declare more than they hold costs no memory: LittleCMS
allocated and zeroed what a 400-byte profile's lut16 declared (~475 MB) before it refused it.

Profiles are written here byte by byte from the ICC specification (lut16, lutAtoB, mluc tag
layouts); the peak RSS of each decode is measured in a fresh Python process; conversions are
checked against LittleCMS applied directly through Pillow's ImageCms, and real profiles
(ghostscript's, Pillow's) against their pixels before this walk existed.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from icc_forge import D50, icc_profile, s15
from PIL import Image, ImageCms

from transforms.decode import decode_rgb, load_image
from transforms.icc_tables import table_problem

GHOSTSCRIPT = Path("/usr/share/color/icc/ghostscript")
ROOT = Path(__file__).resolve().parents[1]
# Adobe RGB (1998)'s colorants adapted to D50 (columns: red, green, blue), as its rXYZ/gXYZ/bXYZ
ADOBE_D50 = np.array([[0.6097559, 0.2052401, 0.1492240], [0.3111242, 0.6256560, 0.0632197],
                      [0.0194811, 0.0608902, 0.7448387]])


def _profile(tags: list[tuple[bytes, bytes]], space: bytes = b"RGB ", version: int = 0x04300000) -> bytes:
    return icc_profile(tags, space, version)


def _desc(text: str) -> bytes:
    name = text.encode("utf-16-be")
    return b"mluc\0\0\0\0" + struct.pack(">II", 1, 12) + b"enUS" + struct.pack(">II", len(name), 28) + name


def _wtpt() -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(map(s15, D50))


def _lut16_bomb() -> bytes:
    """The hunter's profile: an A2B0 lut16 declaring 255^3 grid points of 15 outputs, 64 bytes held."""
    lut = (b"mft2\0\0\0\0" + bytes([3, 15, 255, 0]) + b"".join(s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
           + struct.pack(">HH", 2, 2) + b"\0" * 64)
    return _profile([(b"desc", _desc("bomb")), (b"wtpt", _wtpt()), (b"A2B0", lut)])


def _para_gamma(gamma: float) -> bytes:
    return b"para\0\0\0\0" + struct.pack(">HH", 0, 0) + s15(gamma)


def _adobe_mab(grid: int, outputs: int = 3) -> bytes:
    """An Adobe RGB profile as a v4 lutAtoB: A curves gamma 563/256, a CLUT of `grid` points a side
    holding the D50 colorant matrix at its corners (exact for a linear map), identity B curves.
    With a big `grid` and no data it is the CLUT bomb in lutAtoB form."""
    curves = _para_gamma(563 / 256) * 3
    identity = _para_gamma(1.0) * 3
    if grid == 2:
        corners = np.stack(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij"), -1).reshape(-1, 3)
        xyz = corners @ ADOBE_D50.T  # PCS XYZ, 16-bit u1Fixed15 (1.0 = 0x8000)
        data = np.round(np.clip(xyz, 0, 65535 / 32768) * 32768).astype(">u2").tobytes()
    else:
        data = b"\0" * 64
    clut = bytes([grid] * 3 + [0] * 13) + bytes([2, 0, 0, 0]) + data
    clut += b"\0" * (-len(clut) % 4)
    b_at = 32
    clut_at = b_at + len(identity)
    a_at = clut_at + len(clut)
    tag = b"mAB \0\0\0\0" + bytes([3, outputs, 0, 0]) + struct.pack(">5I", b_at, 0, 0, clut_at, a_at)
    return _profile([(b"desc", _desc("Adobe RGB as lutAtoB")), (b"wtpt", _wtpt()),
                     (b"A2B0", tag + identity + clut + curves)])


def _mluc_bomb() -> bytes:
    """A grey profile whose description (mluc) declares 30 million names of 12 bytes in a tag of
    56 (a grey image's profile is judged by its description first)."""
    mluc = b"mluc\0\0\0\0" + struct.pack(">II", 30_000_000, 12) + b"\0" * 40
    return _profile([(b"desc", mluc), (b"wtpt", _wtpt()), (b"kTRC", _para_gamma(1.0))], space=b"GRAY")


def _mpet(elements: list[bytes], inputs: int = 3, outputs: int = 3, uses: int = 1) -> bytes:
    """A multiProcessElements tag of these elements, each listed `uses` times (positions may share)."""
    head = 16 + 8 * len(elements) * uses
    positions, body = b"", b""
    for element in elements:
        positions += struct.pack(">II", head + len(body), len(element)) * uses
        body += element
    return b"mpet\0\0\0\0" + struct.pack(">HHI", inputs, outputs, len(elements) * uses) + positions + body


def _clut_element(grid: int, outputs: int) -> bytes:
    """An mpet CLUT element declaring grid^3 points of `outputs` float32s, 64 bytes held."""
    return b"clut\0\0\0\0" + struct.pack(">HH", 3, outputs) + bytes([grid] * 3 + [0] * 13) + b"\0" * 64


def _curve_set(curves: int, segments: int) -> bytes:
    """An mpet curve set element whose `curves` positions all name one segmented curve of
    `segments` identity segments (parf type 0: y = x)."""
    segment = b"parf\0\0\0\0" + struct.pack(">HH", 0, 0) + struct.pack(">4f", 1.0, 1.0, 0.0, 0.0)
    curve = (b"curf\0\0\0\0" + struct.pack(">HH", segments, 0) + struct.pack(">f", 0.5) * (segments - 1)
             + segment * segments)
    at = 12 + 8 * curves
    return (b"cvst\0\0\0\0" + struct.pack(">HH", curves, curves) + struct.pack(">II", at, len(curve)) * curves
            + curve)


def _encoded(pixels: np.ndarray, fmt: str, icc: bytes | None) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt, **({"icc_profile": icc} if icc else {}))
    return out.getvalue()


def _pixels() -> np.ndarray:
    y, x = np.mgrid[0:64, 0:64]
    return np.stack([x * 4, y * 4, 255 - x * 2], -1).astype(np.uint8)


_MEASURE = """
import json, resource, sys
from transforms.decode import decode_rgb
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
decode_rgb(data)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) >> 10)
"""


def _peak_rise_mb(path: Path) -> int:
    """The rise of the peak RSS (MB) while one fresh process decodes the file."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True,
                          env=env, cwd=ROOT, check=True, timeout=120)
    return int(done.stdout.strip().splitlines()[-1])


def test_profiles_declaring_tables_they_do_not_hold_cost_no_memory_and_are_ignored(tmp_path):
    pixels = _pixels()
    files = {"plain": _encoded(pixels, "JPEG", None), "lut16": _encoded(pixels, "JPEG", _lut16_bomb()),
             "mAB": _encoded(pixels, "PNG", _adobe_mab(255, 15)), "mluc": _encoded(pixels[..., 0], "TIFF", _mluc_bomb()),
             "mpet": _encoded(pixels, "PNG", _profile([(b"desc", _desc("mpet")), (b"wtpt", _wtpt()),
                                                       (b"D2B0", _mpet([_clut_element(255, 7)]))]))}
    rises = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        rises[name] = _peak_rise_mb(tmp_path / name)
    assert all(rise < 40 for rise in rises.values()), rises  # before: lut16 453, mAB 453, mluc 323, mpet 442 MiB
    for name in ("lut16", "mAB", "mluc", "mpet"):
        canvas = load_image(files[name], 64, "center_crop")
        assert canvas.colour_profile == ""  # unreadable: ignored, as a browser ignores it
        shown = {"lut16": decode_rgb(files["plain"]), "mAB": pixels, "mluc": pixels[..., :1].repeat(3, -1),
                 "mpet": pixels}[name]
        assert np.array_equal(canvas.pixels, shown)
    assert "declares a table of 248,720,625 entries" in (table_problem(_lut16_bomb()) or "")


def test_a_lutatob_profile_that_holds_its_table_converts_as_littlecms_does():
    """The same lutAtoB, its 2-point CLUT present: converted, equal to LittleCMS's own transform."""
    icc = _adobe_mab(2)
    assert table_problem(icc) is None and table_problem(_adobe_mab(255, 15)) is not None
    pixels = _pixels()
    expected = np.asarray(ImageCms.applyTransform(Image.fromarray(pixels), ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"), "RGB", "RGB")))
    assert np.abs(expected.astype(int) - pixels).mean() > 4  # a real conversion
    canvas = load_image(_encoded(pixels, "PNG", icc), 64, "center_crop")
    assert canvas.colour_profile == "Adobe RGB as lutAtoB"
    assert np.abs(canvas.pixels.astype(int) - expected).max() <= 1
    real = [ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
            *(path.read_bytes() for path in sorted(GHOSTSCRIPT.glob("*.icc")))]  # lut8 and lut16 CMYK ones too
    assert len(real) > 10 and not any(map(table_problem, real))


def test_a_profile_of_many_curves_and_segments_is_judged_in_milliseconds():
    """The walk is bounded (`MAX_WALK` elements, curves and segments in all, 16 curves a set): an
    mpet of 1,000 elements naming one curve set of 16 curves of 1,024 segments each (16 million
    segments in 41 KB), or one set of 4,096 curves, took seconds of Python on the decode path."""
    many_uses = _profile([(b"desc", _desc("mpet")), (b"wtpt", _wtpt()),
                          (b"D2B0", _mpet([_curve_set(16, 1024)], 16, 16, uses=1000))])
    many_curves = _profile([(b"desc", _desc("mpet")), (b"wtpt", _wtpt()),
                            (b"D2B0", _mpet([_curve_set(4096, 1024)], 4096, 4096))])
    fine = _profile([(b"desc", _desc("mpet")), (b"wtpt", _wtpt()), (b"D2B0", _mpet([_curve_set(3, 4)]))])
    for icc in (many_uses, many_curves):
        started = time.process_time()
        assert table_problem(icc) is not None
        assert time.process_time() - started < 0.2
    assert table_problem(fine) is None


def _lut8_profile(grid: int) -> bytes:
    """A profile whose A2B0 is a lut8 holding (zeros) all of a `grid`^3 CLUT of 3 outputs."""
    identity = b"".join(s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    lut = b"mft1\0\0\0\0" + bytes([3, 3, grid, 0]) + identity + bytes(range(256)) * 3
    lut += bytes(grid ** 3 * 3) + bytes(range(256)) * 3
    small = b"mft1\0\0\0\0" + bytes([3, 3, 2, 0]) + identity + bytes(range(256)) * 3 + bytes(24) + bytes(range(256)) * 3
    return _profile([(b"desc", _desc(f"lut8 {grid}")), (b"wtpt", _wtpt()), (b"A2B0", lut), (b"B2A0", small)],
                    version=0x02100000)


# the peak as VmHWM, this process's own: ru_maxrss keeps the forking parent's across exec
_JUDGED = """
import sys
from transforms.decode import _held, _open, decode_rgb
def peak():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
data = open(sys.argv[1], "rb").read()
before = peak()
held = _held(_open(data, 1 << 30, 1 << 40), data).bytes
decode_rgb(data)
print(held >> 20, (peak() - before) >> 10)
"""


def test_a_profile_table_littlecms_holds_is_capped_and_counted_in_the_budget(tmp_path):
    """LittleCMS holds a CLUT about four times over (as 16 bits) and the profile three: a 64x64 PNG
    whose lut8 CLUT held 16.6 M entries, under the 16 MiB cap this was, took 159 MiB judged 24.
    Now a CLUT over 4 Mi entries is refused (the largest real kind, 33^4 x 3, is 3.6 M), and one
    under it is counted: the judged figure covers the measured peak RSS of a fresh process."""
    assert "over 4,194,304" in (table_problem(_lut8_profile(177)) or "")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    figures = {}
    for grid in (177, 110):
        path = tmp_path / f"lut8_{grid}.png"
        path.write_bytes(_encoded(_pixels(), "PNG", _lut8_profile(grid)))
        done = subprocess.run([sys.executable, "-c", _JUDGED, str(path)], capture_output=True, text=True,
                              env=env, cwd=ROOT, check=True, timeout=120)
        figures[grid] = tuple(map(int, done.stdout.split()[-2:]))
    assert figures[177][1] < 40, figures  # before: 159 MiB, judged 0 (now: Pillow's inflated 16.6 MB iCCP)
    held, peak = figures[110]
    assert table_problem(_lut8_profile(110)) is None
    assert 30 < peak <= held < 2 * peak, figures  # before: judged 0 of a 39 MiB rise


def _with_tag_past_end(icc: bytes, signature: bytes) -> bytes:
    """The profile with `signature`'s tag size running 4096 bytes past its end."""
    out = bytearray(icc)
    for i in range(struct.unpack(">I", icc[128:132])[0]):
        entry = 132 + 12 * i
        if out[entry : entry + 4] == signature:
            out[entry + 8 : entry + 12] = struct.pack(">I", struct.unpack(">I", out[entry + 8 : entry + 12])[0] + 4096)
    return bytes(out)


def test_a_tag_past_the_profiles_end_is_skipped_as_littlecms_skips_it():
    """LittleCMS skips a tag whose size runs past the profile (`_cmsReadHeader`); the walk refused
    the whole profile for it: an Adobe RGB PNG whose optional `cprt` so ran was shown as sRGB (13.3
    levels off on average). A tag the transform needs so written leaves LittleCMS none: ignored."""
    a98 = (GHOSTSCRIPT / "a98.icc").read_bytes()
    pixels = _pixels()
    srgb = ImageCms.createProfile("sRGB")
    for signature, converted in ((b"cprt", True), (b"rXYZ", False)):
        icc = _with_tag_past_end(a98, signature)
        assert table_problem(icc) is None
        shown = decode_rgb(_encoded(pixels, "PNG", icc)).astype(int)
        if converted:
            expected = np.asarray(ImageCms.applyTransform(Image.fromarray(pixels), ImageCms.buildTransform(
                ImageCms.ImageCmsProfile(io.BytesIO(icc)), srgb, "RGB", "RGB")))
            assert np.abs(expected.astype(int) - pixels).mean() > 10
            assert np.abs(shown - expected).max() <= 1
        else:
            with pytest.raises(ImageCms.PyCMSError):
                ImageCms.buildTransform(ImageCms.ImageCmsProfile(io.BytesIO(icc)), srgb, "RGB", "RGB")
            assert np.array_equal(shown, pixels)
