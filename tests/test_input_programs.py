"""Input never reaches a program a decoder would run: Pillow's EPS reader runs Ghostscript, a
PostScript interpreter, on the file (an EPS saved as `.jpg` from the web: a `{ } loop` ran on after
the build, its CPU counted by no budget)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from sources import budget
from sources.laion import LaionSource
from sources.records import Reject
from uvd_pipeline.render import RenderSettings, decode_png, render_image


def _ghostscript_that_tells(folder: Path) -> Path:
    """A `gs` first on PATH that writes down each time it is run; the marker file it writes."""
    (folder / "bin").mkdir()
    marker = folder / "gs-ran"
    gs = folder / "bin" / "gs"
    gs.write_text(f'#!/bin/sh\necho "$@" >> {marker}\nexit 0\n')
    gs.chmod(0o755)
    return marker


def _rendered_with_a_ghostscript_that_tells(web: Path, tmp_path: Path, monkeypatch) -> tuple[dict, Path]:
    """`web`'s `a.jpg` beside a real JPEG `b.jpg`, rendered through the web folder source and the
    build's render path with a `gs` first on PATH that leaves a marker file if it ever runs: the
    renders by path, and the marker's path."""
    subprocess.run(["convert", "-size", "32x24", "xc:#20c040", str(web / "b.jpg")], check=True)
    marker = _ghostscript_that_tells(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    budget._stop_all()  # the next decoding process starts with this PATH
    source = LaionSource("web", str(web))
    settings = RenderSettings(32, "squash", 0, 10**8, 1, 0, 0.0)
    out = {item.lineage["path"]: render_image(item, settings) for unit in source.units() for item in source.read(unit)}
    assert sorted(out) == ["a.jpg", "b.jpg"]
    return out, marker


def test_an_eps_named_jpg_is_refused_and_ghostscript_never_runs(tmp_path, monkeypatch):
    """An EPS as ImageMagick writes it, named `.jpg` beside a real JPEG, through the web folder source
    and the build's render path (EPS goes to the decoding process): the EPS is a counted
    `unsupported_format` reject naming EPS, the JPEG its picture, and no `gs` ever started."""
    web = tmp_path / "web"
    web.mkdir()
    subprocess.run(["convert", "-size", "32x24", "gradient:red-blue", "eps2:" + str(web / "a.jpg")], check=True)
    out, marker = _rendered_with_a_ghostscript_that_tells(web, tmp_path, monkeypatch)
    assert isinstance(out["a.jpg"], Reject)
    assert (out["a.jpg"].stage, out["a.jpg"].reason) == ("decode", "unsupported_format")
    assert "EPS (PostScript" in out["a.jpg"].detail
    assert not isinstance(out["b.jpg"], Reject)
    assert np.abs(decode_png(out["b.jpg"].images[0]).astype(int) - (0x20, 0xC0, 0x40)).max() <= 2
    assert not marker.exists(), marker.read_text()


def _iptc_wrapped(image: bytes) -> bytes:
    """A bare IPTC/NAA record (Pillow's IptcImagePlugin reads one: it has no test of a file's first
    bytes, so it is tried on every input) whose image data, compression 5, is `image`: Pillow's
    IPTC load opens those bytes with `Image.open` and no formats, every reader it has."""
    def field(record: int, dataset: int, value: bytes) -> bytes:
        return bytes([0x1C, record, dataset]) + len(value).to_bytes(2, "big") + value
    return (field(1, 90, b"\x1b%G") + field(3, 60, b"\x03\x01") + field(3, 20, b"\x00\x20")
            + field(3, 30, b"\x00\x18") + field(3, 120, b"\x05") + field(8, 10, image))


def _imagemagick_eps(folder: Path) -> bytes:
    path = folder / "drawing.eps"
    subprocess.run(["convert", "-size", "32x24", "xc:#c02040", "eps2:" + str(path)], check=True)
    return path.read_bytes()


def test_an_eps_inside_an_iptc_record_is_refused_and_ghostscript_never_runs(tmp_path, monkeypatch):
    """An EPS (ImageMagick's) as the image data of an IPTC/NAA record, named `.jpg`, through the web
    folder source and the build's render path (it goes to the decoding process): Pillow's IPTC
    reader opened the EPS with every reader, so Ghostscript ran on it (a `{ } loop` ran 80 s, to the
    decode limit). It is a counted `unsupported_format` reject naming IPTC, and no `gs` ever started."""
    web = tmp_path / "web"
    web.mkdir()
    (web / "a.jpg").write_bytes(_iptc_wrapped(_imagemagick_eps(tmp_path)))
    out, marker = _rendered_with_a_ghostscript_that_tells(web, tmp_path, monkeypatch)
    assert isinstance(out["a.jpg"], Reject)
    assert (out["a.jpg"].stage, out["a.jpg"].reason) == ("decode", "unsupported_format")
    assert "IPTC/NAA" in out["a.jpg"].detail
    assert not isinstance(out["b.jpg"], Reject)
    assert not marker.exists(), marker.read_text()


# In a fresh process (Pillow's state its own: `EpsImagePlugin.has_ghostscript` remembers what it found):
# import the module under test only, decode the IPTC-wrapped EPS through its own path, then open the
# bare EPS with Pillow's `Image.open` and no formats, as any nested open would.
_NESTED_OPEN = """
import io, sys
from PIL import Image
iptc, eps = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
if sys.argv[3] == "tokenizer":
    from tokenizer.data import UnreadableImage, decode_image
    try:
        decode_image(iptc)
        print("decoded")
    except UnreadableImage as exc:
        print("refused", exc.reason)
else:
    from transforms.decode import DecodeError, decode_rgb
    try:
        decode_rgb(iptc)
        print("decoded")
    except DecodeError as exc:
        print("refused", exc.reason)
try:
    Image.open(io.BytesIO(eps)).load()
    print("eps drawn")
except OSError as exc:
    print("eps:", exc)
"""


def test_no_nested_open_runs_ghostscript_where_the_decoders_are_imported(tmp_path):
    """The tokenizer's `decode_image` (which ran Ghostscript in its own process, no process group
    to end it) and the build's `decode_rgb` refuse the IPTC-wrapped EPS; and once either module is
    imported, Ghostscript is off for the whole process: an EPS opened by Pillow with every reader
    (what IPTC's reader did, what any other nested open would do) fails to draw, `gs` never run."""
    iptc, eps = tmp_path / "record.iim", tmp_path / "drawing.eps"
    eps.write_bytes(_imagemagick_eps(tmp_path))
    iptc.write_bytes(_iptc_wrapped(eps.read_bytes()))
    marker = _ghostscript_that_tells(tmp_path)
    repo = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": repo}
    for module, refused in (("tokenizer", "refused unsupported_format"), ("transforms", "refused unsupported_format")):
        out = subprocess.run([sys.executable, "-c", _NESTED_OPEN, str(iptc), str(eps), module], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == [refused, "eps: Unable to locate Ghostscript on paths"], (module, out.stdout)
        assert not marker.exists(), (module, marker.read_text())


def test_the_tokenizer_names_an_eps_as_the_build_does(tmp_path):
    """ImageMagick's EPS, bare and as the image data of an IPTC/NAA record (the two readers never offered):
    the tokenizer's loader, which never offers them to Pillow, called them `not_an_image` where the
    build says `unsupported_format`; an evaluation's `skipped` and a build's rejects now agree."""
    from tokenizer.data import UnreadableImage, decode_image
    from transforms.decode import DecodeError, decode_rgb

    eps = _imagemagick_eps(tmp_path)
    assert eps[:4] == b"%!PS"
    for data in (eps, _iptc_wrapped(eps)):
        reasons = []
        for decode, error in ((decode_image, UnreadableImage), (decode_rgb, DecodeError)):
            try:
                decode(data)
                reasons.append("decoded")
            except error as exc:
                reasons.append(exc.reason)
        assert reasons == ["unsupported_format", "unsupported_format"], data[:8]
