"""A reject's detail names a tar member or file as it is spelt (`000.JPG`), as its `input` does,
never as the lower-cased extension a key is matched by (`000.jpg`: no such member)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sources.laion import LaionSource
from sources.records import Reject
from sources.video import VideoSource


def _picture(path: Path, colour: str) -> None:
    subprocess.run(["convert", "-size", "16x16", f"xc:{colour}", str(path)], check=True)


def _details(items) -> list[tuple[str, str, str]]:
    return sorted((r.reason, r.detail, r.input) for r in items if isinstance(r, Reject) and r.reason != "bad_parquet")


def _img2dataset_sample(folder: Path) -> None:
    folder.mkdir(parents=True)
    _picture(folder / "000.JPG", "red")
    _picture(folder / "000.PNG", "blue")
    (folder / "000.NPY").write_bytes(b"\x93NUMPY")


def test_img2dataset_tar_rejects_spell_members_as_the_tar_does(tmp_path: Path):
    """GNU tar of `000.JPG`, `000.PNG`, `000.NPY`: the second image's `duplicate_key` and the
    `.NPY`'s `unexpected_file` said `000.png`, `000.npy`."""
    files, shards = tmp_path / "files", tmp_path / "shards"
    _img2dataset_sample(files)
    shards.mkdir()
    subprocess.run(["tar", "-cf", str(shards / "00000.tar"), "-C", str(files), "000.JPG", "000.NPY", "000.PNG"],
                   check=True)
    details = _details(_read(LaionSource("web", str(shards), "webdataset")))
    assert details == [
        ("duplicate_key", "000.PNG: key 000 already has an image (000.JPG)", "00000.tar:000.PNG"),
        ("unexpected_file", "000.NPY: not read (a sample's image, .txt and .json are)", "00000.tar:000.NPY")]


def test_img2dataset_files_rejects_spell_files_as_the_folder_does(tmp_path: Path):
    """img2dataset's `output_format=files` layout, the same sample as files on disk."""
    _img2dataset_sample(tmp_path / "00000")
    (tmp_path / "00000.parquet").write_bytes(b"")  # no listing to read: its bad_parquet reject
    details = _details(_read(LaionSource("web", str(tmp_path), "files")))
    assert details == [
        ("duplicate_key", "000.PNG: key 000 already has an image (000.JPG)", "00000/000.PNG"),
        ("unexpected_file", "000.NPY: not read (a sample's image, .txt and .json are)", "00000/000.NPY")]


def test_video2dataset_tar_rejects_spell_members_as_the_tar_does(tmp_path: Path):
    """A video2dataset-style tar of `x.MP4`, `x.WEBM`, `x.NPY` (ffmpeg's videos, GNU tar)."""
    files, shards = tmp_path / "files", tmp_path / "shards"
    files.mkdir()
    shards.mkdir()
    for name, codec in (("x.MP4", ["-c:v", "libx264", "-f", "mp4"]), ("x.WEBM", ["-c:v", "libvpx", "-f", "webm"])):
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=8:duration=3",
                        *codec, str(files / name)], check=True)
    (files / "x.NPY").write_bytes(b"\x93NUMPY")
    subprocess.run(["tar", "-cf", str(shards / "00000.tar"), "-C", str(files), "x.MP4", "x.NPY", "x.WEBM"], check=True)
    details = _details(_read(VideoSource("web", str(shards), strides=(1,))))
    assert details == [
        ("duplicate_key", "x.WEBM: key x already has a video (x.MP4)", "00000.tar:x.WEBM"),
        ("unexpected_file", "x.NPY: not read (a sample's video, .txt, .json and audio are)", "00000.tar:x.NPY")]


def _read(source):
    for unit in source.units():
        yield from source.read(unit)
