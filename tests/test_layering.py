"""The rooms of DESIGN.md: which of our packages may import which, and Beam only in uvd_pipeline/.

One departure, on purpose: `trainer.generate` imports `transforms` to bring prompt images to the
sentence size exactly as the build does (decode + resize policy), rather than a second copy.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("transforms", "sources", "tokenizer", "uvd_pipeline", "trainer")
ALLOWED = {
    "transforms": set(),
    "sources": {"transforms"},
    "tokenizer": set(),
    "uvd_pipeline": {"sources", "transforms", "tokenizer"},
    "trainer": {"tokenizer", "uvd_pipeline.shards", "transforms"},
}


def imported_modules(package: str) -> dict[str, set[str]]:
    """Absolute imports of our other packages, module -> files that import it."""
    found: dict[str, set[str]] = {}
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


def _allowed(name: str, rules: set[str]) -> bool:
    return any(name == rule or name.startswith(rule + ".") for rule in rules)


@pytest.mark.parametrize("package", OURS)
def test_packages_import_only_what_the_design_allows(package: str):
    wrong = {name: sorted(files) for name, files in imported_modules(package).items()
             if name.split(".")[0] in OURS and name.split(".")[0] != package
             and not _allowed(name, ALLOWED[package])}
    assert not wrong, f"{package}/ imports outside its room: {wrong}"


@pytest.mark.parametrize("package", [p for p in OURS if p != "uvd_pipeline"])
def test_beam_is_imported_only_in_uvd_pipeline(package: str):
    beam = {name: sorted(files) for name, files in imported_modules(package).items()
            if name.split(".")[0] == "apache_beam"}
    assert not beam, f"{package}/ imports Beam: {beam}"


def test_machine_error_has_its_home_below_every_source():
    """`MachineError` lived in `sources.video`, so the generic renderer and the CLI loaded the video
    source (and fcntl) for it, and no other source (laion's tars) could raise it without importing
    the video source: it lives in `sources.records`, `sources.video` re-exports it."""
    import sources.records
    import sources.video

    assert sources.video.MachineError is sources.records.MachineError
    wrong = []
    for path in [*(REPO / "uvd_pipeline").rglob("*.py"), *(REPO / "sources").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.ImportFrom) and node.module == "sources.video"
                    and any(alias.name == "MachineError" for alias in node.names)):
                wrong.append(str(path.relative_to(REPO)))
    assert not wrong, f"import MachineError from sources.records: {wrong}"


def test_bitstream_headers_are_read_apart_from_decoding():
    """The H.264/VP9/MJPEG/ProRes header readers lived inside `sources.video_decode` (1,292 lines:
    seeking, colour, memory judgement, decord) though they read only bytes: they have a module of
    their own, which decodes nothing and so loads no decoder, no numpy and not `video_decode`."""
    code = ("import sys, sources.video_bitstream as b; "
            "print(sorted(m for m in ('av', 'decord', 'numpy', 'cv2', 'sources.video_decode') if m in sys.modules)); "
            "print(all(callable(getattr(b, n)) for n in ('ParameterSets', 'VP9Sizes', 'header_size')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.stdout.split("\n")[:2] == ["[]", "True"], done.stderr[-2000:]


def test_the_web_unit_and_listing_helpers_load_no_web_source():
    """`sources.laion` (1,508 lines) held the `Unit` and tar parts the ImageNet and video sources
    share and img2dataset's listing the video2dataset reader shares, so each loaded the whole web
    source (its Hugging Face and ImageFolder readers) for them: they have modules of their own
    (`sources.web_units`, `sources.img2dataset_listing`), and `sources.laion` still exports them."""
    code = ("import sys, sources.imagenet, sources.video, sources.video_shards; "
            "print(sorted(m for m in ('sources.laion', 'sources.hf_card', 'sources.imagefolder') if m in sys.modules)); "
            "import sources.laion as l, sources.web_units as u, sources.img2dataset_listing as i; "
            "print(l.Unit is u.Unit and l.tar_units is u.tar_units and l.ShardListing is i.ShardListing)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.stdout.split("\n")[:2] == ["[]", "True"], done.stdout + done.stderr[-2000:]
