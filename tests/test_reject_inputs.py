"""Every reject names where its input lies (`input`: the path under the source's root, a tar's
member, a parquet row, a video's clip, an annotation entry), not only its cleaned key: a user
with thousands of rejects finds the files to mend or delete from the rejects file alone. Inputs
are made the way the world makes them (`head -c`, ImageMagick, GNU tar, ffmpeg)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from sources.records import MAX_INPUT_CHARS, Reject, input_name, input_text
from uvd_pipeline.render import RenderSettings
from uvd_pipeline.tagged import REJECTS
from uvd_pipeline.unit_render import UnitRenderer


def _rows(source, out: Path) -> list[dict[str, str]]:
    """The reject rows of every unit of `source`, as the build writes them."""
    settings = RenderSettings(32, "center_crop", 0, 1 << 24, 1, 0, 0.0)
    renderer = UnitRenderer(source, settings, web_images=True, fingerprint=False, output=str(out),
                            config_hash="h", root=str(source.path))
    rows = []
    for unit in source.units():
        outputs, _ = renderer.render(unit)
        rows += [item.as_row() for tag, item in outputs if tag == REJECTS]
    return rows


def _by_reason(rows: list[dict[str, str]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["reason"], []).append(row["input"])
    return {reason: sorted(inputs) for reason, inputs in found.items()}


def _magick(path: Path, spec: str = "gradient:red-blue", size: str = "40x30") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["convert", "-size", size, spec, str(path)], check=True)
    return path


def _cut(path: Path, keep: int) -> None:
    """`path` cut to its first `keep` bytes, as `head -c` cuts a copy short."""
    cut = subprocess.run(["head", "-c", str(keep), str(path)], check=True, capture_output=True).stdout
    path.write_bytes(cut)


def test_input_text_reads_back_to_the_name_and_is_bounded():
    latin1 = os.fsdecode(b"caf\xe9.jpg")
    for name in ["a/<script>.png", latin1, "back\\slash\\x41.jpg", "d\u2028e.jpg"]:
        text = input_text(name)
        text.encode("utf-8")  # what every JSON writer takes
        assert input_name(text) == name
    assert input_text(latin1) == "caf\\xe9.jpg"
    assert os.fsencode(input_name(input_text(latin1))) == b"caf\xe9.jpg"
    long = "d/" * 2000 + "last.jpg"
    assert len(input_text(long)) == MAX_INPUT_CHARS - 1 and input_text(long).endswith("/last.jpg")
    assert Reject("k", "s", "g", "read", "r", input="a\\b").as_row()["input"] == "a\\\\b"


def test_image_folder_rejects_name_the_files(tmp_path: Path):
    root = tmp_path / "web"
    jpeg = _magick(root / "sub" / "<script>.jpg")
    _cut(jpeg, 200)  # a copy cut short
    (root / "notes" / "x.png").parent.mkdir()
    (root / "notes" / "x.png").write_text("<html>not an image</html>")
    (root / os.fsdecode(b"caf\xe9.png")).write_bytes(b"")
    _magick(root / "ok.png")
    from sources.laion import LaionSource

    rows = _rows(LaionSource("web", str(root)), tmp_path / "out")
    assert _by_reason(rows) == {"truncated": ["sub/<script>.jpg"], "not_an_image": ["notes/x.png"],
                                "empty_file": ["caf\\xe9.png"]}
    line = json.dumps(rows[0], ensure_ascii=False)
    assert str(tmp_path) not in line  # named under the root, never the machine's folders
