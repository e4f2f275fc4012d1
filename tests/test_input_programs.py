"""Input never reaches a program a decoder would run: Pillow's EPS reader runs Ghostscript, a
PostScript interpreter, on the file (an EPS saved as `.jpg` from the web: a `{ } loop` ran on after
the build, its CPU counted by no budget)."""

from __future__ import annotations

import os
import subprocess
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


def test_an_eps_named_jpg_is_refused_and_ghostscript_never_runs(tmp_path, monkeypatch):
    """An EPS as ImageMagick writes it, named `.jpg` beside a real JPEG, through the web folder source
    and the build's render path (EPS goes to the decoding process): the EPS is a counted
    `unsupported_format` reject naming EPS, the JPEG its picture, and no `gs` ever started."""
    web = tmp_path / "web"
    web.mkdir()
    subprocess.run(["convert", "-size", "32x24", "gradient:red-blue", "eps2:" + str(web / "a.jpg")], check=True)
    subprocess.run(["convert", "-size", "32x24", "xc:#20c040", str(web / "b.jpg")], check=True)
    marker = _ghostscript_that_tells(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    budget._stop_all()  # the next decoding process starts with this PATH
    source = LaionSource("web", str(web))
    settings = RenderSettings(32, "squash", 0, 10**8, 1, 0, 0.0)
    out = {item.lineage["path"]: render_image(item, settings) for unit in source.units() for item in source.read(unit)}
    assert sorted(out) == ["a.jpg", "b.jpg"]
    assert isinstance(out["a.jpg"], Reject)
    assert (out["a.jpg"].stage, out["a.jpg"].reason) == ("decode", "unsupported_format")
    assert "EPS (PostScript" in out["a.jpg"].detail
    assert not isinstance(out["b.jpg"], Reject)
    assert np.abs(decode_png(out["b.jpg"].images[0]).astype(int) - (0x20, 0xC0, 0x40)).max() <= 2
    assert not marker.exists(), marker.read_text()
