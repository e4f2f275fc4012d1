"""The ImageNet source on the ILSVRC CLS-LOC layout."""

from __future__ import annotations

import csv
import functools
import gzip
import io
import json
import os
import struct
import shutil
import subprocess
import sys
import tarfile
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from budget_jobs import no_file_to_spare
from PIL import Image

from sources.annotation_files import AnnotationFileError
from sources.imagenet import ImageNetSource
from sources.records import ImageRecord, Reject, safe_key
from uvd_pipeline.sample import imagenet as sample_imagenet


def test_reads_train_folders_and_val_csv(sample_corpus: Path):
    source = ImageNetSource("inet", str(sample_corpus / "imagenet"))
    items = [i for u in source.units() for i in source.read(u)]
    records = [i for i in items if isinstance(i, ImageRecord)]
    rejects = [i for i in items if isinstance(i, Reject)]
    per_class = Counter((r.split_hint, r.label) for r in records)
    for index, (wnid, name, _) in enumerate(sample_imagenet.CLASSES):
        assert per_class[("train", wnid)] == sample_imagenet.train_count(index)
    assert sum(n for (split, _), n in per_class.items() if split == "val") == 134
    assert [r.reason for r in rejects] == ["missing_label"]
    tabby = next(r for r in records if r.label == "n02123045")
    assert tabby.lineage["class_name"] == "tabby, tabby cat"
    assert len({r.key for r in records}) == len(records)


def test_a_train_image_outside_class_folders_says_so_not_that_the_val_index_lacks_it(sample_corpus: Path, tmp_path: Path):
    """An image dropped directly in `train/` was a `missing_label` whose detail named the val
    index ("stray not in LOC_val_solution.csv"), which labels no train image: the detail says
    where it lies and why its class is unknown."""
    root = tmp_path / "inet"
    shutil.copytree(sample_corpus / "imagenet", root)
    shutil.copy(next((root / "train" / "n04266014").iterdir()), root / "train" / "stray.JPEG")
    source = ImageNetSource("inet", str(root))
    (stray,) = [i for u in source.units() for i in source.read(u) if isinstance(i, Reject) and i.input == "train/stray.JPEG"]
    assert (stray.reason, stray.detail) == ("missing_label", "stray lies directly in train/, in no class folder "
                                                             "(train/<wnid>/): its class is unknown")


@pytest.mark.parametrize("with_csv", [False, True])
def test_a_train_folder_of_flat_images_alone_is_refused_with_the_way_to_sort_it(tmp_path: Path, with_csv: bool):
    """A train/ of flat images and no class folder or archive (a download never sorted) built
    nothing and passed `check`: every image a `missing_label` reject, exit 0. It is refused up front
    again, saying to sort it; a stray beside real class folders stays a reject (test above)."""
    root = tmp_path / "inet"
    for i in range(3):
        _jpeg(root / "train" / f"IMG_{i:04d}.jpg", 40 * i)
    _jpeg(root / "train" / "__MACOSX" / "._IMG_0000.jpg", 9)  # an OS folder is no class folder
    if with_csv:
        _val_solution(root / "LOC_val_solution.csv", [("IMG_0000", "n01440764")])
    with pytest.raises(FileNotFoundError, match=r"train/ holds images but no class folder.*"
                                                r"sort train/ into train/<wnid>/ folders"):
        ImageNetSource("inet", str(root), ("train",)).units()


def test_val_folders_per_class_and_unknown_labels(sample_corpus: Path, tmp_path: Path):
    root = tmp_path / "inet"
    (root / "train").mkdir(parents=True)
    shutil.copytree(sample_corpus / "imagenet" / "train" / "n04266014", root / "val" / "n04266014")
    shutil.copytree(sample_corpus / "imagenet" / "train" / "n03063599", root / "train" / "n99999999")
    shutil.copy(sample_corpus / "imagenet" / "LOC_synset_mapping.txt", root)
    source = ImageNetSource("inet", str(root))
    items = [i for u in source.units() for i in source.read(u)]
    assert {i.reason for i in items if isinstance(i, Reject)} == {"unknown_label"}
    assert {(i.split_hint, i.label) for i in items if isinstance(i, ImageRecord)} == {("val", "n04266014")}


def test_flat_val_without_labels_file_fails_early(sample_corpus: Path, tmp_path: Path):
    root = tmp_path / "inet"
    shutil.copytree(sample_corpus / "imagenet" / "val", root / "val")
    # the official ILSVRC2012_img_val.tar, flat, beside the devkit's ground truth: the message names the fixes
    with pytest.raises(FileNotFoundError, match=r"LOC_val_solution.csv is missing from .*: put Kaggle's "
                       r"LOC_val_solution.csv there, sort val/ into val/<wnid>/ folders \(as the devkit's "
                       r"valprep.sh does\), or leave val out of `splits`"):
        ImageNetSource("inet", str(root), ("val",)).units()
    with pytest.raises(FileNotFoundError, match="no train/ folder"):
        ImageNetSource("inet", str(root)).units()


def _jpeg(path: Path, shade: int, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 16, 3), shade, np.uint8)).save(path, fmt)


def _val_solution(path: Path, rows: list[tuple[str, str]], encoding: str = "utf-8",
                  header: tuple[str, str] = ("ImageId", "PredictionString")) -> None:
    """LOC_val_solution.csv as Kaggle ships it (`encoding="utf-8-sig"`: as Excel saves it)."""
    with open(path, "w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows((image_id, f"{wnid} 10 12 40 44 {wnid} 3 4 20 30") for image_id, wnid in rows)


def test_too_many_open_files_reading_an_image_is_the_machines_error(tmp_path: Path):
    """An image file opened while this process had no descriptor to spare (EMFILE) was the image's
    `unreadable_file` reject, committed to the unit store and kept by every rerun: it is this
    machine's `MachineError` (the unit fails uncommitted, the build stops with one `error:` line),
    and with files to spare the same record renders."""
    from sources.records import MachineError
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.render import render_image
    from uvd_pipeline.sentences import RenderedUnit
    from uvd_pipeline.unit_render import unit_renderers

    root = tmp_path / "inet"
    _jpeg(root / "train" / "n01440764" / "n01440764_10026.JPEG", 90)
    source = ImageNetSource("inet", str(root), ("train",))
    (record,) = [i for u in source.units() for i in source.read(u)]
    config = parse_config({"version": 1, "output": str(tmp_path / "out"), "image": {"size": 16},
                           "tokenizer": {"enabled": False},
                           "sources": [{"name": "inet", "type": "imagenet", "path": str(root), "splits": ["train"]}]})
    settings = unit_renderers(config)["inet"].settings
    with no_file_to_spare(), pytest.raises(MachineError, match=r"reading n01440764_10026.JPEG: \[Errno 24\]"):
        render_image(record, settings)
    assert isinstance(render_image(record, settings), RenderedUnit)


def test_a_stem_taken_twice_is_one_duplicate_key_reject(tmp_path: Path):
    """`x.JPEG` beside `x.png` share a key: the first by name is read, the other is a reject of
    its own; in a flat val folder the pair stays in one unit even across the 256-file cut."""
    root = tmp_path / "inet"
    for i in range(17):
        _jpeg(root / "train" / "n01440764" / f"n01440764_{i}.JPEG", i)
    _jpeg(root / "train" / "n01440764" / "n01440764_0.png", 200, "PNG")
    ids = [f"ILSVRC2012_val_{i:08d}" for i in range(1, 257)]
    for i, image_id in enumerate(ids):
        _jpeg(root / "val" / f"{image_id}.JPEG", i % 255)
    _jpeg(root / "val" / f"{ids[-1]}.png", 7, "PNG")  # sorts right after the 256th file
    _val_solution(root / "LOC_val_solution.csv", [(image_id, "n01440764") for image_id in ids])
    source = ImageNetSource("inet", str(root))
    units = source.units()
    assert [len(u.uris) for u in units] == [18, 257, 1]  # the last: LOC_val_solution.csv's listed images
    items = [i for u in units for i in source.read(u)]
    records = [i for i in items if isinstance(i, ImageRecord)]
    assert len(records) == 17 + 256 and len({r.key for r in records}) == len(records)
    assert {r.uri.rsplit(".", 1)[1] for r in records} == {"JPEG"}
    rejects = sorted((r.reason, r.detail) for r in items if isinstance(r, Reject))
    assert rejects == [
        ("duplicate_key", "train/n01440764/n01440764_0.png: key inet-train-n01440764-n01440764_0 already taken by "
                          "train/n01440764/n01440764_0.JPEG"),
        ("duplicate_key", "val/ILSVRC2012_val_00000256.png: key inet-val-n01440764-ILSVRC2012_val_00000256 "
                          "already taken by val/ILSVRC2012_val_00000256.JPEG")]


def test_a_key_taken_in_a_class_folder_is_a_duplicate_key_of_an_archive_member_and_a_flat_val_image(tmp_path: Path):
    """Two units gave one key to two pictures: `train/n0.tar`'s `n0_1.JPEG` beside `train/n0/n0_1.png`,
    and a CSV-labelled flat `val/X.JPEG` beside `val/<wnid>/X.JPEG`, both read, one key each pair
    (dedup then had to decide the key as two). The class folder's file is read; the other is a
    `duplicate_key` reject naming it."""
    root = tmp_path / "inet"
    wnid = "n01440764"
    _jpeg(tmp_path / "member" / f"{wnid}_1.JPEG", 30)
    (root / "train").mkdir(parents=True)
    with tarfile.open(root / "train" / f"{wnid}.tar", "w") as tar:
        tar.add(tmp_path / "member" / f"{wnid}_1.JPEG", arcname=f"{wnid}_1.JPEG")
        tar.add(tmp_path / "member" / f"{wnid}_1.JPEG", arcname=f"{wnid}_2.JPEG")
    _jpeg(root / "train" / wnid / f"{wnid}_1.png", 60, "PNG")
    _jpeg(root / "val" / "ILSVRC2012_val_00000001.JPEG", 90)
    _jpeg(root / "val" / "ILSVRC2012_val_00000002.JPEG", 100)
    _jpeg(root / "val" / wnid / "ILSVRC2012_val_00000001.JPEG", 120)
    _val_solution(root / "LOC_val_solution.csv", [("ILSVRC2012_val_00000001", wnid), ("ILSVRC2012_val_00000002", wnid)])
    items = _items(root)
    records = sorted((i.key, i.uri.rsplit("inet/", 1)[1] if i.uri else i.input) for i in items if isinstance(i, ImageRecord))
    assert records == [("inet-train-n01440764-n01440764_1", "train/n01440764/n01440764_1.png"),
                       ("inet-train-n01440764-n01440764_2", "train/n01440764.tar:n01440764_2.JPEG"),
                       ("inet-val-n01440764-ILSVRC2012_val_00000001", "val/n01440764/ILSVRC2012_val_00000001.JPEG"),
                       ("inet-val-n01440764-ILSVRC2012_val_00000002", "val/ILSVRC2012_val_00000002.JPEG")]
    rejects = sorted((r.reason, r.input, r.detail) for r in items if isinstance(r, Reject))
    assert rejects == [
        ("duplicate_key", "train/n01440764.tar:n01440764_1.JPEG",
         "train/n01440764.tar: n01440764_1.JPEG: key inet-train-n01440764-n01440764_1 already taken by "
         "train/n01440764/n01440764_1.png, which is read"),
        ("duplicate_key", "val/ILSVRC2012_val_00000001.JPEG",
         "val/ILSVRC2012_val_00000001.JPEG: key inet-val-n01440764-ILSVRC2012_val_00000001 already taken by "
         "val/n01440764/ILSVRC2012_val_00000001.JPEG, which is read")]


def test_folders_inside_a_class_folder_are_rejects_not_skips(tmp_path: Path):
    root, elsewhere = tmp_path / "inet", tmp_path / "elsewhere"
    _jpeg(root / "train" / "n0" / "n0_1.JPEG", 1)
    _jpeg(root / "train" / "n0" / "extra" / "n0_99.JPEG", 2)
    _jpeg(elsewhere / "n0_7.JPEG", 3)
    (root / "train" / "n0" / "linked_out").symlink_to(elsewhere)
    (root / "train" / "n0" / "linked_in").symlink_to(root / "train" / "n0" / "extra")
    items = [i for u in ImageNetSource("inet", str(root), ("train",)).units()
             for i in ImageNetSource("inet", str(root), ("train",)).read(u)]
    assert [i.key for i in items if isinstance(i, ImageRecord)] == ["inet-train-n0-n0_1"]
    rejects = {r.detail.split(" ")[0].strip("'"): r.reason for r in items if isinstance(r, Reject)}
    assert rejects == {"train/n0/extra/": "unexpected_file", "train/n0/linked_in/": "unexpected_file",
                       "train/n0/linked_out": "outside_root"}
    (nested,) = [r for r in items if isinstance(r, Reject) and "extra" in r.detail]
    assert nested.detail == "train/n0/extra/ is a folder: class folders are read flat"
    followed = ImageNetSource("inet", str(root), ("train",), follow_links=True)
    reasons = Counter(i.reason for u in followed.units() for i in followed.read(u) if isinstance(i, Reject))
    assert reasons == {"unexpected_file": 3}  # a followed link is still a folder, never descended into


@pytest.mark.parametrize("index", ["LOC_synset_mapping.txt", "LOC_val_solution.csv"])
def test_too_many_open_files_reading_an_index_file_is_the_machines_error(tmp_path: Path, index: str):
    """Kaggle's index files read in a unit while this process had no descriptor to spare (a real
    EMFILE: RLIMIT_NOFILE lowered to what it holds; another worker's process, the files not parsed
    there yet) raised the OSError out of `read`: the unit's `unit_failed` reject, its every image
    lost for good. It is this machine's `MachineError`; with files to spare the images are read."""
    from sources import imagenet
    from sources.records import MachineError

    root = tmp_path / "inet"
    image_id = "ILSVRC2012_val_00000001"
    _jpeg(root / "val" / f"{image_id}.JPEG", 40)
    _val_solution(root / "LOC_val_solution.csv", [(image_id, "n01440764")])
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\n")
    source = ImageNetSource("inet", str(root), ("val",))
    flat = source.units()[0]
    imagenet.read_synsets.cache_clear()
    if index == "LOC_val_solution.csv":  # the synset map parsed already: the CSV is the file opened
        imagenet.read_synsets(str(root / "LOC_synset_mapping.txt"))
    imagenet.read_val_labels.cache_clear()
    with no_file_to_spare(), pytest.raises(MachineError, match=rf"reading {index}: \[Errno 24\]"):
        list(source.read(flat))
    assert [(i.label, i.lineage["class_name"]) for i in source.read(flat)] == [("n01440764", "tench, Tinca tinca")]


def test_index_files_with_a_byte_order_mark(tmp_path: Path):
    root = tmp_path / "inet"
    ids = ["ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002"]
    for i, image_id in enumerate(ids):
        _jpeg(root / "val" / f"{image_id}.JPEG", 40 * i)
    _val_solution(root / "LOC_val_solution.csv", [(ids[0], "n01440764"), (ids[1], "n01443537")], "utf-8-sig")
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish\n",
                                                 encoding="utf-8-sig")
    source = ImageNetSource("inet", str(root), ("val",))
    items = [i for u in source.units() for i in source.read(u)]
    assert [(i.key, i.label, i.lineage["class_name"]) for i in items] == [
        ("inet-val-n01440764-ILSVRC2012_val_00000001", "n01440764", "tench, Tinca tinca"),
        ("inet-val-n01443537-ILSVRC2012_val_00000002", "n01443537", "goldfish")]


def test_val_solution_header_and_rows_checked_up_front(tmp_path: Path):
    root = tmp_path / "inet"
    _jpeg(root / "val" / "ILSVRC2012_val_00000001.JPEG", 1)
    csv_path = root / "LOC_val_solution.csv"
    _val_solution(csv_path, [("ILSVRC2012_val_00000001", "n01440764")], header=("ImageID", "Prediction"))
    with pytest.raises(AnnotationFileError, match=r"LOC_val_solution\.csv: header is 'ImageID,Prediction', "
                                                  r"expected ImageId,PredictionString"):
        ImageNetSource("inet", str(root), ("val",)).units()
    csv_path.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,\n")
    with pytest.raises(AnnotationFileError, match="none of its 1 rows has an ImageId and a PredictionString"):
        ImageNetSource("inet", str(root), ("val",)).units()
    _val_solution(csv_path, [("ILSVRC2012_val_00000001", "n01440764")], header=("ImageID", "Prediction"))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"version": 1, "output": str(tmp_path / "out"), "tokenizer": {"enabled": False},
                                      "sources": [{"name": "inet", "type": "imagenet", "path": str(root),
                                                   "splits": ["val"]}]}))
    check = subprocess.run([sys.executable, "-m", "uvd_pipeline", "check", str(config)], capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 2 and f"{csv_path}: header is 'ImageID,Prediction'" in check.stderr, check.stderr


def _appledouble(path: Path, companion_size: int = 4146) -> None:
    """A macOS AppleDouble file (`._name`), as Finder, `cp` and `zip` write beside every file they
    copy to a disk or archive without extended attributes: magic 0x00051607, version 2, filler,
    and its entries (Finder info, resource fork); not an image whatever its name ends with."""
    header = struct.pack(">II16sH", 0x00051607, 0x00020000, b"Mac OS X        ", 2)
    header += struct.pack(">III", 9, 50, 3810) + struct.pack(">III", 2, 3860, 286)
    path.write_bytes(header + b"\0" * (companion_size - len(header)))


def _items(root: Path, splits: tuple[str, ...] = ("train", "val")) -> list:
    source = ImageNetSource("inet", str(root), splits)
    return [i for u in source.units() for i in source.read(u)]


def test_os_files_beside_class_folders_need_no_val_csv(tmp_path: Path):
    """The torchvision layout (`val/<wnid>/`, no LOC_val_solution.csv) browsed once in Finder or
    Explorer: the `.DS_Store` and `Thumbs.db` beside the class folders are no val images needing
    labels (the source failed with the CSV's FileNotFoundError); each is one `os_metadata` reject."""
    root = tmp_path / "inet"
    for split in ("train", "val"):
        _jpeg(root / split / "n01440764" / f"n01440764_{split}.JPEG", 10)
    (root / "train" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + b"\0" * 60)
    (root / "val" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 60)
    items = _items(root)
    assert [(i.split_hint, i.label) for i in items if isinstance(i, ImageRecord)] == [("train", "n01440764"),
                                                                                     ("val", "n01440764")]
    assert sorted((r.reason, r.detail) for r in items if isinstance(r, Reject)) == [
        ("os_metadata", "train/.DS_Store: macOS Finder's folder settings, not an image"),
        ("os_metadata", "val/Thumbs.db: Windows Explorer's thumbnail cache, not an image")]


def test_editors_and_version_control_leave_hidden_file_rejects(tmp_path: Path):
    """Files an editor, NFS or git leaves in a class folder or beside the class folders are
    `hidden_file` rejects, never read: `.~lock.x.JPEG#` and `.nfs...` were `unexpected_file` (as if
    someone had misplaced data), a `.x.JPEG` hidden copy an image of the class, and `.git/` a
    class folder whose every object was an `unexpected_file` reject."""
    root = tmp_path / "inet"
    wnid = "n01440764"
    _jpeg(root / "train" / wnid / f"{wnid}_1.JPEG", 10)
    _jpeg(root / "train" / wnid / f".{wnid}_1.JPEG", 10)  # a hidden copy, as rsync and editors leave
    (root / "train" / wnid / f".~lock.{wnid}_1.JPEG#").write_text(",me,host,01.01.2026 10:00,file:///;")
    (root / "train" / wnid / ".nfs000000000012345600000001").write_bytes(b"\0" * 16)
    (root / "train" / ".git" / "objects" / "ab").mkdir(parents=True)
    (root / "train" / ".git" / "objects" / "ab" / "cdef").write_bytes(b"x\x9c")
    (root / "train" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    items = _items(root, ("train",))
    assert [i.key for i in items if isinstance(i, ImageRecord)] == [f"inet-train-{wnid}-{wnid}_1"]
    assert sorted((r.reason, r.detail) for r in items if isinstance(r, Reject)) == sorted([
        ("hidden_file", "train/.git/: hidden (a tool's lock, temporary or repository file), not read"),
        ("hidden_file", f"train/{wnid}/.nfs000000000012345600000001: hidden (a tool's lock, temporary or "
                        "repository file), not an image"),
        ("hidden_file", f"train/{wnid}/.{wnid}_1.JPEG: hidden (a tool's lock, temporary or repository file), "
                        "not an image"),
        ("hidden_file", f"train/{wnid}/.~lock.{wnid}_1.JPEG#: hidden (a tool's lock, temporary or repository "
                        "file), not an image")])


def test_macos_and_windows_metadata_are_os_metadata_rejects_not_bad_images(tmp_path: Path):
    """A folder copied from a Mac to an exFAT disk or a zip holds a `._x.JPEG` AppleDouble file
    beside every image: it has an image's extension, so it was read and decoded (a `not_an_image`
    decode reject per image, or in a flat val folder a `missing_label` naming `._ILSVRC..._1` as if
    a val image lacked its label). Each such file, `.DS_Store`, `Thumbs.db`, `desktop.ini`, a
    `__MACOSX/` or a Synology `@eaDir/` folder is now one `os_metadata` reject of stage `read`,
    never read or decoded."""
    root = tmp_path / "inet"
    wnid, image_id = "n01440764", "ILSVRC2012_val_00000001"
    _jpeg(root / "train" / wnid / f"{wnid}_10026.JPEG", 10)
    _appledouble(root / "train" / wnid / f"._{wnid}_10026.JPEG")
    (root / "train" / wnid / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "train" / wnid / "desktop.ini").write_text("[.ShellClassInfo]\r\n", encoding="utf-8")
    (root / "train" / wnid / "@eaDir" / f"{wnid}_10026.JPEG").mkdir(parents=True)  # as a Synology NAS keeps
    _jpeg(root / "train" / wnid / "@eaDir" / f"{wnid}_10026.JPEG" / "SYNOPHOTO_THUMB_S.jpg", 10)  # thumbnails
    (root / "train" / wnid / "__MACOSX").mkdir()
    _appledouble(root / "train" / wnid / "__MACOSX" / f"._{wnid}_10026.JPEG")
    (root / "train" / "__MACOSX" / wnid).mkdir(parents=True)
    _appledouble(root / "train" / "__MACOSX" / wnid / f"._{wnid}_10026.JPEG")
    _jpeg(root / "val" / f"{image_id}.JPEG", 20)
    _appledouble(root / "val" / f"._{image_id}.JPEG")
    _val_solution(root / "LOC_val_solution.csv", [(image_id, wnid)])
    items = _items(root)
    assert [i.key for i in items if isinstance(i, ImageRecord)] == [f"inet-train-{wnid}-{wnid}_10026",
                                                                    f"inet-val-{wnid}-{image_id}"]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert {(r.stage, r.reason) for r in rejects} == {("read", "os_metadata")}
    assert sorted(r.detail for r in rejects) == [
        "train/__MACOSX/: macOS archive metadata (a zip's AppleDouble files), not read",
        f"train/{wnid}/.DS_Store: macOS Finder's folder settings, not an image",
        f"train/{wnid}/._{wnid}_10026.JPEG: macOS AppleDouble metadata of {wnid}_10026.JPEG, not an image",
        f"train/{wnid}/@eaDir/: a Synology NAS's thumbnails and metadata, not read",
        f"train/{wnid}/__MACOSX/: macOS archive metadata (a zip's AppleDouble files), not read",
        f"train/{wnid}/desktop.ini: Windows Explorer's folder settings, not an image",
        f"val/._{image_id}.JPEG: macOS AppleDouble metadata of {image_id}.JPEG, not an image"]
    assert len({r.key for r in rejects} | {i.key for i in items if isinstance(i, ImageRecord)}) == len(items)


def test_names_in_nfd_as_macos_writes_them_match_nfc_index_files(tmp_path: Path):
    """A class-grouped set in the ILSVRC layout with non-ASCII names, copied off a Mac (its folder
    and file names in NFD) while the synset map and val CSV were written elsewhere (NFC): the class
    was all `unknown_label` and the val image a `missing_label`, and the same set stored in NFC got
    other keys (so other sentences). Names are compared and keyed in NFC."""
    wnid, image_id = "n0_caf\u00e9", "val_\u00e91"
    keys = []
    for form in ("NFD", "NFC"):
        root = tmp_path / form
        folder = root / "train" / unicodedata.normalize(form, wnid)
        for i in range(2):
            _jpeg(folder / unicodedata.normalize(form, f"{wnid}_\u00e9{i}.JPEG"), 10 * i)
        _jpeg(root / "val" / unicodedata.normalize(form, f"{image_id}.JPEG"), 5)
        _val_solution(root / "LOC_val_solution.csv", [(image_id, wnid)])
        (root / "LOC_synset_mapping.txt").write_text(f"{wnid} caf\u00e9 au lait\n", encoding="utf-8")
        items = _items(root)
        assert all(isinstance(i, ImageRecord) for i in items), [i.detail for i in items if isinstance(i, Reject)]
        assert {(i.label, i.lineage["class_name"]) for i in items} == {(wnid, "caf\u00e9 au lait")}
        keys.append([i.key for i in items])
    assert keys[0] == keys[1]


def _photo(seed: int, size: int = 64) -> np.ndarray:
    """A smooth random picture (8 x 8 noise, scaled up): JPEG-friendly, and no near twin of another seed."""
    coarse = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC))


def _real_world_imagenet(tmp_path: Path) -> tuple[Path, dict[str, str | None]]:
    """An ILSVRC folder with the release's oddities (Adobe CMYK and grey JPEGs, a PNG named .JPEG,
    upper/lower-case extensions, CRLF+BOM index files, val ids missing from either side, a wnid the
    map lacks) and a copy's (AppleDouble, .DS_Store, links in and out, an empty class, a class too
    small); returns the root and each input file's true class (None: it must be a reject)."""
    root, wnids = tmp_path / "inet", ("n01739381", "n02105855", "n01440764")
    truth: dict[str, str | None] = {}
    grouse, collie, tench = (root / "train" / w for w in wnids)
    grouse.mkdir(parents=True)
    for name, seed, mode in (("n01739381_1309.JPEG", 1, "CMYK"), ("n01739381_2.JPEG", 2, "CMYK"),
                             ("n01739381_3.JPEG", 3, "L"), ("n01739381_4.Jpeg", 4, "RGB")):
        Image.fromarray(_photo(seed)).convert(mode).save(grouse / name, "JPEG", quality=95)
    _appledouble(grouse / "._n01739381_1309.JPEG")
    (grouse / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    collie.mkdir()
    Image.fromarray(_photo(5)).save(collie / "n02105855_2933.JPEG", "PNG")  # the release's PNG named .JPEG
    for name, seed in (("n02105855_5.jpeg", 6), ("n02105855_6.JPG", 7)):
        Image.fromarray(_photo(seed)).save(collie / name, "JPEG", quality=90)
    (root / "extra").mkdir()
    Image.fromarray(_photo(8)).save(root / "extra" / "kept.JPEG", "JPEG", quality=90)
    (collie / "n02105855_7.JPEG").symlink_to(root / "extra" / "kept.JPEG")  # inside the root: read
    Image.fromarray(_photo(9)).save(tmp_path / "private.JPEG")
    _jpeg(tench / "n01440764_1.JPEG", 40)
    (tench / "n01440764_2.JPEG").symlink_to(tmp_path / "private.JPEG")  # outside the root: refused
    (root / "train" / "n09999999").mkdir()
    ids = [f"ILSVRC2012_val_{i:08d}" for i in range(1, 8)]
    (root / "val").mkdir()
    for i, image_id in enumerate(ids[:6]):  # ids[6] is listed but not on disk
        Image.fromarray(_photo(20 + i)).save(root / "val" / f"{image_id}.JPEG", "JPEG", quality=90)
    listed = ids[:4] + ids[5:]  # ids[4] is on disk, not listed
    _val_solution(root / "LOC_val_solution.csv", [(i, "n07777777" if i == ids[5] else wnids[0]) for i in listed],
                  "utf-8-sig")
    with open(root / "LOC_synset_mapping.txt", "w", encoding="utf-8-sig", newline="\r\n") as handle:
        handle.write("".join(f"{w} class {w}\n" for w in wnids))
    for path in grouse.iterdir():
        truth[f"train/{path.name}"] = wnids[0] if path.name[0] != "." else None
    for path in collie.iterdir():
        truth[f"train/{path.name}"] = wnids[1]
    truth |= {"train/n01440764_1.JPEG": None, "train/n01440764_2.JPEG": None}  # too small; outside
    truth |= {f"val/{i}.JPEG": wnids[0] for i in ids[:4]} | {f"val/{ids[4]}.JPEG": None, f"val/{ids[5]}.JPEG": None}
    return root, truth


def test_a_real_world_imagenet_folder_builds_every_file_accounted(tmp_path: Path):
    """Through a real build: every file under train/ and val/ is a sentence member of its own class
    or one reject, and so is a val image the CSV lists but the disk lacks (files in + listed only
    == rendered + rejected); no sentence mixes classes; a link out of the root is `outside_root`;
    the CMYK (Adobe-inverted, as Pillow and Photoshop write them), grey and PNG-named-.JPEG images
    render the pixels OpenCV's decoder gives for the same file."""
    import cv2

    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config
    from uvd_pipeline.render import decode_png
    from uvd_pipeline.rendered_shards import iter_shard
    from uvd_pipeline.summary import REJECTS_FILE

    root, truth = _real_world_imagenet(tmp_path)
    on_disk = {f"{split.name}/{f}" for split in (root / "train", root / "val") for _, _, files in os.walk(split)
               for f in files}
    assert on_disk == set(truth)
    config = {"version": 1, "output": str(tmp_path / "out"), "image": {"size": 64}, "split": {"val_fraction": 0.0},
              "tokenizer": {"enabled": False}, "beam": {"direct_num_workers": 1, "direct_running_mode": "in_memory"},
              "sources": [{"name": "inet", "type": "imagenet", "path": str(root), "num_shards": 1,
                           "sentence_length": 3, "remainder": "wrap"}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run_build(load_config(str(tmp_path / "c.yaml")))
    rendered: dict[str, str] = {}
    for tar in sorted((tmp_path / "out" / "rendered").rglob("*.tar")):
        for sentence in iter_shard(str(tar)):
            label = sentence.header["meta"]["label"]
            for member, png in zip(sentence.header["members"], sentence.images):
                place, *_, name = member["file"].split("/")  # the file's path: train/<wnid>/<name>, val/<name>
                path = f"{place}/{name}"
                assert truth[path] == member["wnid"] == label  # its own class, never another's
                rendered[path] = label
                original = root / member["file"]
                expected = cv2.cvtColor(cv2.imread(str(original), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                assert np.abs(decode_png(png).astype(int) - expected).max() <= 2, path
    rejects = [json.loads(line) for line in (tmp_path / "out" / REJECTS_FILE).read_text().splitlines()]
    assert set(rendered) == {p for p, w in truth.items() if w}
    assert len(rendered) + len(rejects) == len(on_disk) + 1
    assert Counter(r["reason"] for r in rejects) == {"os_metadata": 2, "missing_label": 1, "unknown_label": 1,
                                                     "outside_root": 1, "group_too_small": 1, "missing_image": 1}


def test_val_images_listed_but_not_on_disk_are_rejects(tmp_path: Path):
    """LOC_val_solution.csv is the val set's index, like a parquet beside a shard: an image it lists
    that val/ lacks (a cut download or extraction) vanished without a word; it is now a
    `missing_image` reject. Images moved into `val/<wnid>/` by hand count as there."""
    root, wnid = tmp_path / "inet", "n01440764"
    ids = [f"ILSVRC2012_val_{i:08d}" for i in range(1, 6)]
    _jpeg(root / "train" / wnid / f"{wnid}_1.JPEG", 1)
    _jpeg(root / "val" / f"{ids[0]}.JPEG", 2)
    _jpeg(root / "val" / wnid / f"{ids[1]}.JPEG", 3)
    _val_solution(root / "LOC_val_solution.csv", [(image_id, wnid) for image_id in ids])
    rejects = [i for i in _items(root) if isinstance(i, Reject)]
    assert [(r.key, r.stage, r.reason, r.detail) for r in rejects] == [
        (f"inet-val-{wnid}-{image_id}", "read", "missing_image",
         f"{image_id} is listed in LOC_val_solution.csv, but val/ holds no image of that name") for image_id in ids[2:]]
    assert not [i for i in _items(root, ("train",)) if isinstance(i, Reject)]
    (root / "val" / f"{ids[0]}.JPEG").rename(root / "val" / wnid / f"{ids[0]}.JPEG")  # the torchvision layout
    assert not [i for i in _items(root) if isinstance(i, Reject)]  # the CSV is not its index


def test_synset_map_separated_by_tabs_as_imagenet_words_txt(tmp_path: Path):
    """image-net.org's words.txt (and Tiny ImageNet's) separate wnid and name by a tab: read as
    space-separated, the wnid took the name along ("n01443537\\tgoldfish") and every image of the
    class was an `unknown_label` reject."""
    root = tmp_path / "inet"
    _jpeg(root / "train" / "n01443537" / "n01443537_1.JPEG", 1)
    (root / "LOC_synset_mapping.txt").write_text("n01440764\ttench, Tinca tinca\nn01443537\tgoldfish, Carassius auratus\n")
    (record,) = _items(root, ("train",))
    assert (record.label, record.lineage["class_name"]) == ("n01443537", "goldfish, Carassius auratus")


def test_a_class_folder_in_nfc_and_in_nfd_is_one_class_whose_shared_names_are_rejects(tmp_path: Path):
    """A class folder present twice, its name once in NFC and once in NFD (a Linux copy merged with
    files copied off a Mac), through a real build: the two are one class (names are keyed in NFC),
    so `img0.jpg` in both has one key. The build crashed (TypeError: StoredRef < StoredRef, ranking
    the two units, whose lineage is the same); now the one whose image sorts first is kept, the
    other is a `duplicate_key` reject."""
    from uvd_pipeline.rendered_shards import iter_shard

    root, label = tmp_path / "inet", "caf\u00e9"
    for form, names, shade in (("NFC", ("img0", "img1"), 40), ("NFD", ("img0", "img2"), 200)):
        for i, name in enumerate(names):
            _jpeg(root / "train" / unicodedata.normalize(form, label) / f"{name}.jpg", shade + 30 * i)
    _build_train(tmp_path, root, size=16, dedup=False, sentence_length=3)
    [sentence] = [s for tar in (tmp_path / "out" / "rendered").rglob("*.tar") for s in iter_shard(str(tar))]
    assert sorted(m["file"] for m in sentence.header["members"]) == [f"train/{label}/img{i}.jpg" for i in range(3)]
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejects] == ["duplicate_key"]


def test_the_kaggle_download_as_it_lies(tmp_path: Path):
    """Kaggle's imagenet-object-localization-challenge download keeps the index files at its top and
    the images three folders down: `LOC_val_solution.csv`, `LOC_synset_mapping.txt`,
    `ILSVRC/Data/CLS-LOC/{train,val,test}/`, `ILSVRC/Annotations/...`. Pointed at the download the
    source refused it (`no train/ folder`); pointed at CLS-LOC/ the flat val/ refused for want of
    the CSV, and train/ read without the synset map (no class names, no `unknown_label` check).
    The download's top is read as it lies: images from ILSVRC/Data/CLS-LOC/, index files from the top."""
    root, wnids = tmp_path / "imagenet-object-localization-challenge", ("n01440764", "n01443537")
    data = root / "ILSVRC" / "Data" / "CLS-LOC"
    _jpeg(data / "train" / wnids[0] / f"{wnids[0]}_1.JPEG", 10)
    _jpeg(data / "train" / "n09999999" / "n09999999_1.JPEG", 20)  # not in the map
    ids = ["ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002", "ILSVRC2012_val_00000003"]
    for i, image_id in enumerate(ids[:2]):
        _jpeg(data / "val" / f"{image_id}.JPEG", 30 + i)
    _jpeg(data / "test" / "ILSVRC2012_test_00000001.JPEG", 40)  # no labels: not a split we read
    (root / "ILSVRC" / "Annotations" / "CLS-LOC" / "val").mkdir(parents=True)
    _val_solution(root / "LOC_val_solution.csv", list(zip(ids, (wnids[1], wnids[0], wnids[1]))))
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} class {w}\n" for w in wnids))
    items = _items(root)
    assert sorted((i.key, i.lineage["class_name"]) for i in items if isinstance(i, ImageRecord)) == [
        (f"inet-train-{wnids[0]}-{wnids[0]}_1", f"class {wnids[0]}"),
        (f"inet-val-{wnids[0]}-{ids[1]}", f"class {wnids[0]}"),
        (f"inet-val-{wnids[1]}-{ids[0]}", f"class {wnids[1]}")]
    assert sorted((r.reason, r.key) for r in items if isinstance(r, Reject)) == [
        ("missing_image", f"inet-val-{wnids[1]}-{ids[2]}"), ("unknown_label", "inet-train-n09999999-n09999999_1")]
    assert all(str(data) in i.uri for i in items if isinstance(i, ImageRecord))
    with pytest.raises(FileNotFoundError, match=r"no train/ folder under .* \(nor under .*ILSVRC/Data/CLS-LOC, as Kaggle"):
        _items(tmp_path)


# -- class archives read in place (ILSVRC2012_img_train.tar's inner tars, ImageNet-21k) -----------

WNIDS = ("n01440764", "n01443537", "n02123045")


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[bytes, ...]:
    """Small JPEGs Pillow re-encodes from real photos (matplotlib's grace_hopper.jpg, scikit-image's
    chelsea, coffee and astronaut), as an ImageNet class's files are: baseline JPEGs of photos."""
    from uvd_pipeline.sample import media

    sources = [media.package_file("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")]
    sources += [media.package_file("skimage", f"data/{name}.png") for name in ("chelsea", "coffee", "astronaut")]
    photos = []
    for index, path in enumerate(sources):
        with Image.open(path) as photo:
            small = photo.convert("RGB").resize((48 + 8 * index, 40), Image.BICUBIC)
        for turn in range(3):  # 12 photos, none a near twin of another
            out = io.BytesIO()
            small.rotate(90 * turn, expand=True).save(out, "JPEG", quality=88)
            photos.append(out.getvalue())
    return tuple(photos)


def _class_folder(folder: Path, wnid: str, first: int, count: int) -> list[str]:
    """`count` photos as `<wnid>_<n>.JPEG` in a class folder, as ILSVRC names them; their names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{wnid}_{1000 + 7 * i}.JPEG" for i in range(first, first + count)]
    for i, name in zip(range(first, first + count), names):
        (folder / name).write_bytes(_photos()[i % len(_photos())])
    return names


def _archive(path: Path, folder: Path, how: str) -> None:
    """A class folder's files as `<wnid>.tar`, made as the world makes them: Python's `tarfile` in
    GNU or PAX format (`tar.add`, each file's own metadata), or GNU tar from a shell, `tar -cf
    n0.tar -C n0 .`, whose members start `./` after a `./` folder member."""
    if how == "shell":
        subprocess.run(["tar", "-cf", str(path), "-C", str(folder), "."], check=True)
        return
    with tarfile.open(path, "w", format={"gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}[how]) as tar:
        for file in sorted(folder.iterdir()):
            tar.add(file, file.name)


def _archived_copy(extracted: Path, target: Path, at_top: bool = False) -> Path:
    """The class folders of `extracted/train/` as class archives: in `target/train/`, or at the
    top of `target` as ImageNet-21k's download lies; the synset map beside them."""
    archives = target if at_top else target / "train"
    archives.mkdir(parents=True)
    for folder, how in zip(sorted((extracted / "train").iterdir()), ("gnu", "pax", "shell")):
        _archive(archives / f"{folder.name}.tar", folder, how)
    shutil.copy(extracted / "LOC_synset_mapping.txt", target)
    return archives


def _extracted(root: Path, counts: tuple[int, ...] = (5, 4, 6)) -> Path:
    for index, (wnid, count) in enumerate(zip(WNIDS, counts)):
        _class_folder(root / "train" / wnid, wnid, 3 * index, count)
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius "
                                                 "auratus\nn02123045 tabby, tabby cat\n")
    return root


def _records(root: Path, splits: tuple[str, ...] = ("train",)) -> list[tuple]:
    """(key, label, split, lineage, image bytes) of every record, and (key, reason) of every reject."""
    source = ImageNetSource("inet", str(root), splits)
    return sorted((i.key, i.label, i.split_hint, json.dumps(i.lineage, sort_keys=True), i.read_bytes())
                  if isinstance(i, ImageRecord) else (i.key, i.reason) for u in source.units() for i in source.read(u))


def test_class_archives_read_in_place_give_the_records_of_their_extracted_folders(tmp_path: Path):
    """ImageNet-21k's `<wnid>.tar` class archives (or ILSVRC2012_img_train.tar's, its outer tar
    extracted into train/) were refused: extract each (1.1-1.3 TB more disk). Read in place, in
    train/ or at the top of the root, each archive, whether `tarfile` wrote it in GNU or PAX
    format or GNU tar from a shell (`./` first), gives the records its extracted folder gives:
    same keys, labels, lineage and image bytes, so the same sentences."""
    extracted = _extracted(tmp_path / "extracted")
    folders = _records(extracted)
    assert len(folders) == 15 and all(len(r) == 5 for r in folders)
    _archived_copy(extracted, tmp_path / "archived")
    _archived_copy(extracted, tmp_path / "winter21_whole", at_top=True)
    assert _records(tmp_path / "archived") == folders
    assert _records(tmp_path / "winter21_whole") == folders
    assert {r[1] for r in folders} == set(WNIDS)
    for where in (tmp_path / "archived" / "train", tmp_path / "winter21_whole"):  # copied off a Mac to exFAT
        _appledouble(where / f"._{WNIDS[0]}.tar")
    aside = (safe_key("inet", "train", "unlabelled", f"._{WNIDS[0]}.tar"), "os_metadata")
    assert _records(tmp_path / "archived") == _records(tmp_path / "winter21_whole") == sorted(folders + [aside])
    units = ImageNetSource("inet", str(tmp_path / "winter21_whole"), ("train",)).units()
    assert [(u.split, u.wnid, u.archive) for u in units] == [("train", w, True) for w in WNIDS] + [("train", None, False)]
    with pytest.raises(FileNotFoundError, match=r"holds <wnid>\.tar class archives at its top, as ImageNet-21k's "
                                                r"download lies, read as the train split, and no val/ folder: set "
                                                r"`splits: \[train\]`"):
        ImageNetSource("inet", str(tmp_path / "winter21_whole")).units()


def _rendered_tars(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "rendered").rglob("*.tar"))}


@pytest.mark.slow  # six small builds: about 7 s
def test_a_build_of_class_archives_equals_the_build_of_the_extracted_folders_and_reruns(tmp_path: Path, monkeypatch):
    """Through real builds: the archives' rendered shards are byte for byte the extracted folders'
    (each sentence of one class, labelled so); a second build over the same archives renders no
    unit again, and an archive grown by one image (`tar -rf`, as a later download adds to it)
    renders again that class's unit alone, the result again the bytes of its grown folder's build.
    Read as parts (as a tar of 64 MiB or more is), the archives build the same bytes too."""
    from sources import web_units
    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config
    from uvd_pipeline.rendered_shards import iter_shard

    def build(root: Path, out: str) -> dict:
        config = {"version": 1, "output": str(tmp_path / out), "image": {"size": 16}, "split": {"val_fraction": 0.0},
                  "tokenizer": {"enabled": False}, "dedup": {"enabled": False},
                  "beam": {"direct_num_workers": 1, "direct_running_mode": "in_memory"},
                  "sources": [{"name": "inet", "type": "imagenet", "path": str(root), "num_shards": 1,
                               "splits": ["train"], "sentence_length": 2, "remainder": "wrap"}]}
        (tmp_path / f"{out}.yaml").write_text(yaml.safe_dump(config))
        return {k.rsplit(".", 1)[1]: v for k, v in run_build(load_config(str(tmp_path / f"{out}.yaml")))
                .summary["run"]["counters"].items() if k.startswith("inet.units_")}

    extracted = _extracted(tmp_path / "extracted")
    archives = _archived_copy(extracted, tmp_path / "archived")
    assert build(extracted, "out-folders") == build(tmp_path / "archived", "out") == {"units_rendered": 3}
    rendered = _rendered_tars(tmp_path / "out")
    assert rendered and rendered == _rendered_tars(tmp_path / "out-folders")
    sentences = [s for tar in (tmp_path / "out" / "rendered").rglob("*.tar") for s in iter_shard(str(tar))]
    members = [m for s in sentences for m in s.header["members"]]
    assert {m["file"] for m in members} == {f"train/{p.parent.name}/{p.name}"
                                               for p in (extracted / "train").rglob("*.JPEG")}
    assert Counter(m["wnid"] for m in members) == dict(zip(WNIDS, (6, 4, 6)))  # 5 and 6: wrapped to pairs
    assert all({m["wnid"] for m in s.header["members"]} == {s.header["meta"]["label"]} for s in sentences)
    with monkeypatch.context() as patch:  # each archive read as parts, as a big one is: the same bytes
        patch.setattr(web_units, "TAR_PART_BYTES", 4096)
        assert build(tmp_path / "archived", "out-parts")["units_rendered"] > 3
    assert _rendered_tars(tmp_path / "out-parts") == rendered

    assert build(tmp_path / "archived", "out") == {"units_reused": 3}
    assert _rendered_tars(tmp_path / "out") == rendered
    (name,) = _class_folder(tmp_path / "grown", WNIDS[1], 11, 1)
    shutil.copy(tmp_path / "grown" / name, extracted / "train" / WNIDS[1])
    subprocess.run(["tar", "-rf", str(archives / f"{WNIDS[1]}.tar"), "-C", str(tmp_path / "grown"), name], check=True)
    assert build(tmp_path / "archived", "out") == {"units_rendered": 1, "units_reused": 2}
    assert build(extracted, "out-grown") == {"units_rendered": 3}
    assert _rendered_tars(tmp_path / "out") == _rendered_tars(tmp_path / "out-grown") != rendered


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", **fields) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
    for field, value in fields.items():
        setattr(info, field, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


def _items_of(root: Path) -> tuple[list[ImageRecord], list[Reject]]:
    items = _items(root, ("train",))
    return [i for i in items if isinstance(i, ImageRecord)], [i for i in items if isinstance(i, Reject)]


def test_each_member_of_a_class_archive_is_an_image_of_its_class_or_a_reject(tmp_path: Path):
    """A class archive holding what archives made by hand and on Macs hold (macOS tar's AppleDouble
    `._x` members, a `.DS_Store`, a caption, a folder, a symlink, a hard link (its target's image), a
    fifo, a member named for another class, two members of one stem, a name in NFD) and, last, a
    member whose header declares 300 MiB
    in a tar cut right after it: every member is an image of the class or one reject with its
    reason; the large one is judged on its header, never read (no `truncated_sample`)."""
    wnid, photos = WNIDS[0], _photos()
    root = tmp_path / "inet"
    (root / "train").mkdir(parents=True)
    path = root / "train" / f"{wnid}.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, f"._{wnid}_1.JPEG", b"\0\5\26\7\0\2\0\0Mac OS X        " + b"\0" * 60)
        _add(tar, f"{wnid}_1.JPEG", photos[0])
        _add(tar, ".DS_Store", b"\0\0\0\1Bud1" + b"\0" * 30)
        _add(tar, f"{wnid}_2.JPEG", photos[1])
        _add(tar, f"{wnid}_2.png", photos[2])
        _add(tar, f"{wnid}_3.txt", b"a tench")
        _add(tar, "n02123045_9.JPEG", photos[3])
        _add(tar, f"{wnid}_4.JPEG", type=tarfile.SYMTYPE, linkname=f"{wnid}_1.JPEG")
        _add(tar, f"{wnid}_5.JPEG", type=tarfile.LNKTYPE, linkname=f"{wnid}_1.JPEG")
        _add(tar, f"{wnid}_6.JPEG", type=tarfile.FIFOTYPE)
        _add(tar, "extra", type=tarfile.DIRTYPE, mode=0o755)
        _add(tar, f"extra/{wnid}_7.JPEG", photos[4])
        _add(tar, unicodedata.normalize("NFD", f"{wnid}_caf\u00e9.JPEG"), photos[5])
    whole = path.read_bytes()
    end = len(whole.rstrip(b"\0"))
    end += -end % 512
    huge = tarfile.TarInfo(f"{wnid}_8.JPEG")
    huge.size = 300 << 20
    path.write_bytes(whole[:end] + huge.tobuf(tarfile.PAX_FORMAT) + photos[6])  # cut: its bytes stop short
    records, rejects = _items_of(root)
    assert [(r.key, r.label, r.lineage["file"], r.data) for r in records] == [
        (f"inet-train-{wnid}-{wnid}_1", wnid, f"train/{wnid}/{wnid}_1.JPEG", photos[0]),
        (f"inet-train-{wnid}-{wnid}_2", wnid, f"train/{wnid}/{wnid}_2.JPEG", photos[1]),
        (f"inet-train-{wnid}-{wnid}_5", wnid, f"train/{wnid}/{wnid}_5.JPEG", photos[0]),  # a hard link: its target's
        (safe_key("inet", "train", wnid, f"{wnid}_caf\u00e9"), wnid, f"train/{wnid}/{wnid}_caf\u00e9.JPEG",
         photos[5])]  # NFC
    shown = f"train/{wnid}.tar: "
    assert [(r.reason, r.detail.removeprefix(shown)) for r in rejects] == [
        ("os_metadata", f"._{wnid}_1.JPEG: macOS AppleDouble metadata of {wnid}_1.JPEG, not read"),
        ("os_metadata", ".DS_Store: macOS Finder's folder settings, not read"),
        ("duplicate_key", f"{wnid}_2.png: key inet-train-{wnid}-{wnid}_2 already taken by {wnid}_2.JPEG"),
        ("unexpected_file", f"{wnid}_3.txt is not one of .jpeg, .jpg, .png"),
        ("wrong_class", f"n02123045_9.JPEG is named for class n02123045, not {wnid}"),
        ("not_a_file", f"{wnid}_4.JPEG: tar member of type symlink"),
        ("not_a_file", f"{wnid}_6.JPEG: tar member of type fifo"),
        ("unexpected_file", "extra/ is a folder: class archives are read flat"),
        ("unexpected_file", f"extra/{wnid}_7.JPEG is in a folder: class archives are read flat"),
        ("member_too_large", f"{wnid}_8.JPEG: {300 << 20} bytes, over the {256 << 20} byte cap for one member"),
        ("corrupt_archive", "ReadError: unexpected end of data")]
    assert all(r.detail.startswith(shown) and r.split_hint == "train" for r in rejects)
    assert len(records) + len(rejects) == 14 + 1  # every member, and the cut archive
    assert len({i.key for i in records + rejects}) == len(records) + len(rejects)


@pytest.mark.parametrize("headers_kept", [True, False])
def test_a_hard_linked_photo_in_a_class_archive_is_its_targets_image(tmp_path: Path, monkeypatch, headers_kept: bool):
    """GNU tar of a class folder where one photo is a hard link to another (`ln`): the link is the
    image `tar -x` gives, whether the read walks the scan's kept headers (seekably) or, past their
    budget, streams the archive (`r|`): the target is read from the file under the stream, which
    then reads on from where it was: the photo after the link is larger than the stream's
    10,240-byte record, so a stream left where the target's bytes ended reads it wrong."""
    import subprocess

    from sources import tar_members
    from uvd_pipeline.sample import media

    if not headers_kept:
        monkeypatch.setattr(tar_members, "MAX_KEPT_HEADER_BYTES", 0)
    wnid, photos = WNIDS[0], list(_photos())
    with Image.open(media.package_file("skimage", "data/chelsea.png")) as photo:
        out = io.BytesIO()
        photo.convert("RGB").resize((240, 180), Image.BICUBIC).save(out, "JPEG", quality=95)
    photos[1] = out.getvalue()
    assert len(photos[1]) > 10240
    folder = tmp_path / "made"
    folder.mkdir()
    (folder / f"{wnid}_1.JPEG").write_bytes(photos[0])
    os.link(folder / f"{wnid}_1.JPEG", folder / f"{wnid}_2.JPEG")
    (folder / f"{wnid}_3.JPEG").write_bytes(photos[1])
    (tmp_path / "inet" / "train").mkdir(parents=True)
    subprocess.run(["tar", "-cf", str(tmp_path / "inet" / "train" / f"{wnid}.tar"), "-C", str(folder),
                    f"{wnid}_1.JPEG", f"{wnid}_2.JPEG", f"{wnid}_3.JPEG"], check=True)
    records, rejects = _items_of(tmp_path / "inet")
    assert rejects == []
    assert [(r.lineage["file"], r.data) for r in records] == [
        (f"train/{wnid}/{wnid}_1.JPEG", photos[0]), (f"train/{wnid}/{wnid}_2.JPEG", photos[0]),
        (f"train/{wnid}/{wnid}_3.JPEG", photos[1])]


def _three_photo_tar(path: Path) -> bytes:
    """A class archive of three photos, as GNU tar writes it; its bytes."""
    folder = path.parent / "made" / path.stem
    _class_folder(folder, path.stem, 0, 3)
    _archive(path, folder, "shell")
    shutil.rmtree(path.parent / "made")
    return path.read_bytes()


@pytest.mark.parametrize("part_bytes", [None, 2048])
def test_a_cut_or_false_class_archive_keeps_what_it_holds_and_is_one_reject(tmp_path: Path, monkeypatch,
                                                                            part_bytes: int | None):
    """A class archive cut inside a photo (a killed download or copy) keeps the photos before the
    cut, the cut one a `truncated_sample` reject; one cut at a member's end without tar's end
    blocks is a `corrupt_archive` too; a `.tar` holding a JPEG, or gzipped under the plain name, is
    one `corrupt_archive`: no crash, nothing silent. Read whole, and read as parts of a big tar
    (each part yielding the items whose key it owns), the items are the same."""
    from sources import web_units

    if part_bytes:
        monkeypatch.setattr(web_units, "TAR_PART_BYTES", part_bytes)
    train = tmp_path / "inet" / "train"
    train.mkdir(parents=True)
    cut: dict[str, list[tarfile.TarInfo]] = {}  # GNU tar's photos, in its (directory) order
    for wnid, keep in ((WNIDS[0], lambda m: m[2].offset_data + 100), (WNIDS[1], lambda m: m[3].offset)):
        whole = _three_photo_tar(train / f"{wnid}.tar")
        cut[wnid] = tarfile.open(train / f"{wnid}.tar").getmembers()  # `./` first, then the photos
        (train / f"{wnid}.tar").write_bytes(whole[: keep(cut[wnid])])  # inside the 2nd photo; after it
    (train / f"{WNIDS[2]}.tar").write_bytes(_photos()[0])
    (train / "n01530575.tar").write_bytes(gzip.compress(_three_photo_tar(train / "n01530575.tar"), mtime=0))
    source = ImageNetSource("inet", str(tmp_path / "inet"), ("train",))
    units = source.units()
    assert [u.wnid for u in units if u.part == 0] == ["n01440764", "n01443537", "n01530575", "n02123045"]
    assert (len(units) > 4) == bool(part_bytes)
    items = [i for u in units for i in source.read(u)]

    def key(wnid: str, name: str) -> str:
        return safe_key("inet", "train", wnid, name.removeprefix("./").removesuffix(".JPEG"))

    assert sorted(i.key for i in items if isinstance(i, ImageRecord)) == sorted(
        [key(WNIDS[0], cut[WNIDS[0]][1].name), key(WNIDS[1], cut[WNIDS[1]][1].name),
         key(WNIDS[1], cut[WNIDS[1]][2].name)])
    rejects = sorted((r.key, r.reason, r.detail) for r in items if isinstance(r, Reject))
    # what Python's tarfile says of gzip bytes as a tar header depends on the bytes (the photos'
    # times): "invalid header", or "bad checksum" where the checksum field happens to parse
    with pytest.raises(tarfile.ReadError) as gzipped:
        tarfile.open(train / "n01530575.tar", "r:")
    gzipped_as_tar = str(gzipped.value)
    assert gzipped_as_tar in ("invalid header", "bad checksum")
    assert rejects == sorted([
        (key(WNIDS[0], cut[WNIDS[0]][2].name), "truncated_sample",
         f"train/{WNIDS[0]}.tar: {cut[WNIDS[0]][2].name.removeprefix('./')}: ReadError: unexpected end of data"),
        (safe_key("inet", "train", WNIDS[0], f"{WNIDS[0]}.tar"), "corrupt_archive",
         f"train/{WNIDS[0]}.tar: ReadError: unexpected end of data"),
        (safe_key("inet", "train", WNIDS[1], f"{WNIDS[1]}.tar"), "corrupt_archive",
         f"train/{WNIDS[1]}.tar: ReadError: the archive ends after {cut[WNIDS[1]][3].offset} bytes without its "
         "end-of-archive block (cut short)"),
        (safe_key("inet", "train", "n01530575", "n01530575.tar"), "corrupt_archive",
         f"train/n01530575.tar: ReadError: {gzipped_as_tar}"),
        (safe_key("inet", "train", WNIDS[2], f"{WNIDS[2]}.tar"), "corrupt_archive",
         f"train/{WNIDS[2]}.tar: ReadError: invalid header")])


def test_what_is_still_not_read_says_how_to_extract_it(tmp_path: Path):
    """ILSVRC's outer archives and a tar of class archives (fall11_whole.tar) are not read in place:
    a root holding only ILSVRC2012_img_train.tar is refused, naming the one extraction needed (the
    outer tar only); the outer tar in train/ and each class archive inside fall11_whole.tar are an
    `unexpected_file` reject saying so, the class archives beside them read; a class archive in
    val/ says to extract it into its class folder (val images are read from folders only)."""
    root = tmp_path / "ilsvrc"
    root.mkdir()
    made = tmp_path / "made"
    made.mkdir()
    _three_photo_tar(made / f"{WNIDS[0]}.tar")
    with tarfile.open(root / "ILSVRC2012_img_train.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(made / f"{WNIDS[0]}.tar", f"{WNIDS[0]}.tar")
    outer = ("an archive of class archives: extract the outer tar only, mkdir -p train && tar -xf {} -C train "
             "(the <wnid>.tar class archives it holds are read in place)")
    with pytest.raises(FileNotFoundError) as refused:
        _items(root)
    assert str(refused.value).endswith(f"; it holds ILSVRC2012_img_train.tar, {outer.format('ILSVRC2012_img_train.tar')}")
    (root / "train").mkdir()
    (root / "val").mkdir()
    (root / "ILSVRC2012_img_train.tar").rename(root / "train" / "ILSVRC2012_img_train.tar")
    shutil.copy(made / f"{WNIDS[0]}.tar", root / "train")
    shutil.copy(made / f"{WNIDS[0]}.tar", root / "val")
    records, rejects = [i for i in _items(root) if isinstance(i, ImageRecord)], [i for i in _items(root)
                                                                                  if isinstance(i, Reject)]
    assert [(r.split_hint, r.label) for r in records] == [("train", WNIDS[0])] * 3
    assert [(r.reason, r.detail) for r in rejects] == [
        ("unexpected_file", "train/ILSVRC2012_img_train.tar is not one of .jpeg, .jpg, .png; "
                            + outer.format("ILSVRC2012_img_train.tar")),
        ("unexpected_file", f"val/{WNIDS[0]}.tar is not one of .jpeg, .jpg, .png; class archives are read in "
                            f"place in train/ only: extract it into its class folder, mkdir -p val/{WNIDS[0]} && "
                            f"tar -xf val/{WNIDS[0]}.tar -C val/{WNIDS[0]}")]
    fall11 = tmp_path / "fall11"
    fall11.mkdir()
    with tarfile.open(fall11 / "fall11_whole.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        for wnid in WNIDS[:2]:
            tar.add(made / f"{WNIDS[0]}.tar", f"{wnid}.tar")
    records, rejects = _items_of(fall11)
    assert not records and [(r.reason, r.detail) for r in rejects] == [
        ("unexpected_file", f"fall11_whole.tar: {wnid}.tar is not one of .jpeg, .jpg, .png; fall11_whole.tar is "
                            + outer.format("fall11_whole.tar")) for wnid in WNIDS[:2]]


def test_a_hugging_face_image_folder_of_class_folders_gives_class_sentences_its_test_folder_val(tmp_path: Path):
    """A Hub ImageFolder without metadata (`train/<label>/`, `test/<label>/`, JPEGs Pillow wrote):
    `load_dataset` (datasets 5.2) gave train 12 rows, labels bird, cat, dog 4 each, and test 6, 2
    each. Read as `type: imagenet`, its default splits stopped the build (no `val/`): the test
    folder is now the val split, each image with its folder's class; ILSVRC's own flat `test/`
    (no class folders) is never taken for val."""
    shade = 0
    for split, count in (("train", 4), ("test", 2)):
        for label in ("bird", "cat", "dog"):
            (tmp_path / split / label).mkdir(parents=True)
            for _ in range(count):
                shade += 1
                Image.new("RGB", (8, 8), (shade, 0, 0)).save(tmp_path / split / label / f"{label}{shade}.jpg")
    source = ImageNetSource("hf", str(tmp_path))
    items = [item for unit in source.units() for item in source.read(unit)]
    assert all(isinstance(i, ImageRecord) for i in items)
    assert Counter((i.split_hint, i.label) for i in items) == {
        ("train", "bird"): 4, ("train", "cat"): 4, ("train", "dog"): 4, ("val", "bird"): 2, ("val", "cat"): 2,
        ("val", "dog"): 2}
    flat = tmp_path / "flat"
    (flat / "train" / "n01").mkdir(parents=True)
    (flat / "test").mkdir()
    Image.new("RGB", (8, 8)).save(flat / "test" / "ILSVRC2012_test_00000001.JPEG")
    with pytest.raises(FileNotFoundError, match="no val/ folder"):
        ImageNetSource("flat", str(flat)).units()


@pytest.mark.parametrize("appender", ["tar", "bsdtar"])
def test_a_copy_appended_by_tar_r_is_built_as_extracting_the_archive_builds_it(tmp_path: Path, appender: str):
    """`tar -rf` (or `-uf`) appends a newer copy of a photo to a class archive; GNU tar and bsdtar
    extract the last copy over the first. The read was a stream and built the first copy (the
    later one a `duplicate_key`): the archive and its extracted folder built other bytes. The last
    copy is now built and the first is a `duplicate_member` reject (the archive made by GNU tar
    from a shell, `./n0_1.JPEG`, the copy appended by name, `n0_1.JPEG`: one file on extraction)."""
    if shutil.which(appender) is None:
        pytest.skip(f"needs {appender}")
    extracted = _extracted(tmp_path / "extracted", (3, 2, 2))
    archives = _archived_copy(extracted, tmp_path / "archived")
    wnid = WNIDS[2]  # the archive GNU tar made from a shell
    name = sorted(p.name for p in (extracted / "train" / wnid).iterdir())[0]
    (extracted / "train" / wnid / name).write_bytes(_photos()[0])  # the newer copy, another photo
    subprocess.run([appender, "-rf", str(archives / f"{wnid}.tar"), "-C", str(extracted / "train" / wnid), name],
                   check=True)
    for tool in ("tar", "bsdtar"):
        out = tmp_path / tool
        out.mkdir()
        if shutil.which(tool):
            subprocess.run([tool, "-xf", str(archives / f"{wnid}.tar"), "-C", str(out)], check=True)
            assert (out / name).read_bytes() == _photos()[0]  # extraction keeps the appended copy
    key = safe_key("inet", "train", wnid, name)
    assert _records(tmp_path / "archived") == sorted(_records(extracted) + [(key, "duplicate_member")])
    source = ImageNetSource("inet", str(tmp_path / "archived"), ("train",))
    (reject,) = [i for u in source.units() for i in source.read(u) if isinstance(i, Reject)]
    assert reject.detail.startswith(f"train/{wnid}.tar: ./{name}: a later copy at byte ")


def test_every_held_out_folder_of_class_folders_is_read_as_val_none_left_unread(tmp_path: Path):
    """Roboflow's classification export (`train/ valid/ test/`, class folders in each): `load_dataset`
    (datasets 5.2) gave train 4, validation 4, test 4. Only `valid/` was read as val and `test/`
    was never listed (8 of 12 files, no reject). Every held-out folder of class folders is now val,
    a further one keyed by its own name, so a name repeated across them keeps two keys; so is a
    class-folder `test/` beside ILSVRC's `val/`."""
    for split in ("train", "valid", "test"):
        for label in ("cat", "dog"):
            (tmp_path / split / label).mkdir(parents=True)
            for k in range(2):
                Image.new("RGB", (8, 8), (k, 0, 0)).save(tmp_path / split / label / f"{label}_{k}.jpg")
    source = ImageNetSource("rf", str(tmp_path))
    items = [item for unit in source.units() for item in source.read(unit)]
    assert all(isinstance(i, ImageRecord) for i in items)
    assert Counter(i.split_hint for i in items) == {"train": 4, "val": 8}
    assert len({i.key for i in items}) == 12
    assert {i.uri for i in items if i.split_hint == "val"} == {
        str(p) for folder in ("valid", "test") for p in (tmp_path / folder).rglob("*.jpg")}
    (tmp_path / "valid").rename(tmp_path / "val")
    items = [item for unit in source.units() for item in source.read(unit)]
    assert Counter(i.split_hint for i in items) == {"train": 4, "val": 8}


def test_one_image_added_to_the_flat_val_folder_changes_only_its_unit():
    """The flat val folder's units ended by count: one image added shifted every later unit's
    files (all rendered again); now only the unit it falls in differs. Files sharing a stem stay
    in one unit."""
    from sources.imagenet import _flat_chunks
    from sources.records import FOLDER_FILES_PER_UNIT, FOLDER_UNIT_MOST

    files = sorted(f"/d/val/ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 1201))
    before = _flat_chunks(files)
    after = _flat_chunks(sorted(files + ["/d/val/ILSVRC2012_val_00000001a.JPEG"]))
    assert len(before) > 2 and len(set(after) - set(before)) == 1 and len(set(before) - set(after)) == 1
    assert max(map(len, after)) <= FOLDER_UNIT_MOST * FOLDER_FILES_PER_UNIT
    twins = _flat_chunks(sorted(files + [f.replace(".JPEG", ".png") for f in files]))
    assert all(len({u.rsplit(".", 1)[0] for u in chunk}) * 2 == len(chunk) for chunk in twins)


def _devkit_meta(path: Path, synsets: list[tuple[int, str, str, int]]) -> None:
    """ILSVRC2012_devkit_t12/data/meta.mat: the `synsets` struct array with the devkit's fields, in
    its order (ILSVRC2012_ID, WNID, words, gloss, num_children, children, wordnet_height,
    num_train_images), written by scipy's savemat as MATLAB -v5 does."""
    from scipy.io import savemat

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    table = np.empty(len(synsets), dtype=[(f, object) for f in fields])
    for n, (ilsvrc_id, wnid, words, children) in enumerate(synsets):
        table[n] = (ilsvrc_id, wnid, words, f"gloss of {words}", children,
                    np.arange(1, children + 1, dtype=np.uint16), 0 if not children else 2, 1300 if not children else 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"synsets": table.reshape(-1, 1)})


def test_flat_val_with_the_ilsvrc2012_devkit_reads_its_ground_truth(tmp_path: Path):
    """The official download: ILSVRC2012_img_val.tar's flat val/ and ILSVRC2012_devkit_t12.tar.gz
    unpacked beside it, whose data/ILSVRC2012_validation_ground_truth.txt gives each val image (line
    n: ILSVRC2012_val_<n, 8 digits>) an ILSVRC2012_ID that data/meta.mat's synsets map to a wnid.
    Old code refused it ("LOC_val_solution.csv is missing"); now each image takes the wnid
    torchvision's parse_meta_mat / parse_val_groundtruth_txt give it (their steps, with scipy's
    loadmat, read back here), a listed image not on disk is `missing_image` naming the ground truth
    file, and a ground truth line that is no id of meta.mat stops `check` naming the file."""
    from scipy.io import loadmat

    from sources.annotation_files import AnnotationFileError

    root = tmp_path / "inet"
    data = root / "ILSVRC2012_devkit_t12" / "data"
    _devkit_meta(data / "meta.mat", [(1, "n01440764", "tench", 0), (361, "n01693334", "green lizard", 0),
                                     (490, "n01751748", "sea snake", 0), (1001, "n00001740", "entity", 3)])
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("490\n361\n1\n490\n")
    for n, shade in ((1, 40), (2, 120), (3, 200)):
        _jpeg(root / "val" / f"ILSVRC2012_val_{n:08d}.JPEG", shade)
    # torchvision's steps: the leaves of meta.mat (num_children == 0), then line n's id
    meta = loadmat(str(data / "meta.mat"), squeeze_me=True)["synsets"]
    leaves = [meta[i] for i, children in enumerate(list(zip(*meta))[4]) if children == 0]
    wnid_of = dict(zip(*list(zip(*leaves))[:2]))
    truth = [wnid_of[int(line)] for line in (data / "ILSVRC2012_validation_ground_truth.txt").read_text().split()]
    source = ImageNetSource("inet", str(root), ("val",))
    items = [i for u in source.units() for i in source.read(u)]
    records = {i.lineage["file"].removeprefix("val/").removesuffix(".JPEG"): i.label
               for i in items if isinstance(i, ImageRecord)}
    assert records == {f"ILSVRC2012_val_{n:08d}": truth[n - 1] for n in (1, 2, 3)}
    assert records["ILSVRC2012_val_00000001"] == "n01751748"
    rejects = [(r.reason, r.detail) for r in items if isinstance(r, Reject)]
    assert rejects == [("missing_image", "ILSVRC2012_val_00000004 is listed in ILSVRC2012_validation_ground_truth.txt, "
                                         "but val/ holds no image of that name")]
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("490\n361\n7\n")
    with pytest.raises(AnnotationFileError, match=r"ILSVRC2012_validation_ground_truth.txt.*line 3: '7' is no "
                                                  r"ILSVRC2012_ID of meta.mat"):
        ImageNetSource("inet2", str(root), ("val",)).units()


def _devkit_tree(root: Path, ground_truth: str) -> Path:
    """The devkit's data/ beside a flat val/ of three images: meta.mat's synsets with a non-leaf
    (1001, entity, as the devkit's 860 inner nodes of WordNet are) and the ground truth's lines."""
    data = root / "ILSVRC2012_devkit_t12" / "data"
    _devkit_meta(data / "meta.mat", [(1, "n01440764", "tench", 0), (361, "n01693334", "green lizard", 0),
                                     (490, "n01751748", "sea snake", 0), (1001, "n00001740", "entity", 3)])
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text(ground_truth)
    for n, shade in ((1, 40), (2, 120), (3, 200)):
        _jpeg(root / "val" / f"ILSVRC2012_val_{n:08d}.JPEG", shade)
    return data


def test_devkit_meta_of_millions_of_synsets_is_refused_before_scipy_builds_them(tmp_path: Path):
    """meta.mat whose synsets is a 400,000 x 1 struct of empty fields: 4 KB on disk, 6 MB inflated
    (under the 64 MiB budget), but scipy built a mat_struct and arrays for each (old code; at 4M,
    `check` took 100 s and 2.1 GB before its error). The devkit's is 1,860 x 1: counted from the
    headers first, `check` names the file and what to do."""
    from mat_forge import EMPTY, MX_STRUCT, mat_file, matrix, struct_body

    from sources.annotation_files import AnnotationFileError

    data = _devkit_tree(tmp_path / "inet", "490\n361\n1\n")
    count = 400_000
    synsets = matrix(MX_STRUCT, [count, 1], b"synsets",
                     struct_body([b"ILSVRC2012_ID", b"WNID", b"num_children"], EMPTY * (3 * count)))
    (data / "meta.mat").write_bytes(mat_file(synsets))
    assert (data / "meta.mat").stat().st_size < 16384
    with pytest.raises(AnnotationFileError, match=r"meta.mat.*too large: synsets holds more than 200000 cells"):
        ImageNetSource("inet", str(tmp_path / "inet"), ("val",)).units()


def test_devkit_ground_truth_naming_a_non_leaf_synset_or_a_cut_meta_mat_stops_check(tmp_path: Path):
    """The devkit's meta.mat holds WordNet's 860 inner synsets beside the 1,000 classes (ids 1001..1860,
    num_children > 0); torchvision keeps the leaves alone. Old code took an inner id as a label; now
    a ground truth line naming one is no ILSVRC2012_ID. A meta.mat cut short names the fix."""
    from sources.annotation_files import AnnotationFileError

    root = tmp_path / "inet"
    data = _devkit_tree(root, "490\n361\n1001\n")
    with pytest.raises(AnnotationFileError, match=r"line 3: '1001' is no ILSVRC2012_ID of meta.mat"):
        ImageNetSource("inet", str(root), ("val",)).units()
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("490\n361\n1\n")
    whole = (data / "meta.mat").read_bytes()
    (data / "meta.mat").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(AnnotationFileError, match=r"meta.mat.*re-extract data/meta.mat from ILSVRC2012_devkit_t12.tar.gz"):
        ImageNetSource("inet2", str(root), ("val",)).units()


# -- keys of names holding '-' (a Hugging Face ImageFolder's `t-shirt/`) ---------------------------

DASHED = {"t": ("shirt-1", "shirt-2"), "t-shirt": ("1", "2")}  # each pair of t/shirt-N and t-shirt/N joined alike


def _dashed_classes(root: Path, photos: tuple[bytes, ...]) -> dict[str, bytes]:
    """`train/t/shirt-N.jpg` and `train/t-shirt/N.jpg` (and ILSVRC's own `n01440764_1000.JPEG`), a
    photo each, as class folders; their bytes by path."""
    files: dict[str, bytes] = {}
    for index, (label, stems) in enumerate(list(DASHED.items()) + [(WNIDS[0], (f"{WNIDS[0]}_1000",))]):
        for turn, stem in enumerate(stems):
            path = f"train/{label}/{stem}" + (".JPEG" if label == WNIDS[0] else ".jpg")
            files[path] = photos[2 * index + turn]
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(files[path])
    return files


def test_class_and_file_names_holding_a_dash_keep_one_key_each_in_folders_and_archives(tmp_path: Path):
    """`t/shirt-1.jpg` and `t-shirt/1.jpg` both had key `inet-train-t-shirt-1` (parts joined by '-',
    which a part keeps, without a digest): the build's later steps, joining on the key, merged two
    pictures. Parts holding '-' take a digest now (`records.data_key`); ILSVRC's own names, which
    hold none, keep the keys they had. As class archives (`t.tar`, `t-shirt.tar`, GNU tar from a
    shell) the images keep the keys and lineage of their folders; the lineage names the file."""
    files = _dashed_classes(tmp_path / "folders", _photos())
    folders = _records(tmp_path / "folders")
    assert len(folders) == 5 and len({r[0] for r in folders}) == 5
    by_file = {json.loads(r[3])["file"]: r for r in folders}
    assert set(by_file) == set(files) and all(by_file[f][4] == data for f, data in files.items())
    assert by_file[f"train/{WNIDS[0]}/{WNIDS[0]}_1000.JPEG"][0] == f"inet-train-{WNIDS[0]}-{WNIDS[0]}_1000"
    assert by_file["train/t/shirt-1.jpg"][0] != by_file["train/t-shirt/1.jpg"][0]
    (tmp_path / "archived" / "train").mkdir(parents=True)
    for folder in sorted((tmp_path / "folders" / "train").iterdir()):
        _archive(tmp_path / "archived" / "train" / f"{folder.name}.tar", folder, "shell")
    assert _records(tmp_path / "archived") == folders


def test_a_copy_of_one_of_two_dashed_names_drops_that_picture_alone(tmp_path: Path):
    """Through a real build with dedup on: byte copies of `t/shirt-1.jpg` in another class dropped
    the key `t-shirt/1.jpg` shared with it, so the unique picture `t-shirt/1.jpg` was lost as a
    `duplicate_exact` (and, its class left one image, `t-shirt/2.jpg` as `group_too_small`). Now
    `t/shirt-1.jpg` and the copies after the first are the duplicates, every other picture built."""
    from uvd_pipeline.rendered_shards import iter_shard

    root = tmp_path / "inet"
    files = _dashed_classes(root, _photos())
    (root / "train" / "copies").mkdir()
    for i in range(3):
        shutil.copy(root / "train" / "t" / "shirt-1.jpg", root / "train" / "copies" / f"c{i}.jpg")
    (root / "train" / "copies" / "c3.jpg").write_bytes(_photos()[9])
    _build_train(tmp_path, root, size=32, dedup=True, sentence_length=1)
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert sorted((r["reason"], r["input"]) for r in rejects) == [
        ("duplicate_exact", "train/copies/c1.jpg"), ("duplicate_exact", "train/copies/c2.jpg"),
        ("duplicate_exact", "train/t/shirt-1.jpg")]
    built = [m["file"] for tar in (tmp_path / "out" / "rendered").rglob("*.tar") for s in iter_shard(str(tar))
             for m in s.header["members"]]
    assert sorted(built) == sorted(set(files) - {"train/t/shirt-1.jpg"} | {"train/copies/c0.jpg", "train/copies/c3.jpg"})


def test_a_stray_train_image_is_a_missing_label_without_any_val_index(tmp_path: Path):
    """A photo dropped directly in `train/` beside its class folders, no LOC_val_solution.csv (a
    Hugging Face ImageFolder): the build stopped (exit 2) asking for the val CSV, val-only advice.
    It is the image's `missing_label` now; and where the CSV is there, a train image named like a
    val image it lists is not given that val image's class (the CSV labels val images only)."""
    root = tmp_path / "inet"
    for label in ("cat", "dog"):
        _jpeg(root / "train" / label / "0.jpg", 40 if label == "cat" else 90)
    _jpeg(root / "train" / "IMG_0001.jpg", 150)
    items = _items(root, ("train",))
    assert sorted((i.label, i.lineage["file"]) for i in items if isinstance(i, ImageRecord)) == [
        ("cat", "train/cat/0.jpg"), ("dog", "train/dog/0.jpg")]
    assert [(r.reason, r.input) for r in items if isinstance(r, Reject)] == [("missing_label", "train/IMG_0001.jpg")]
    (root / "train" / "IMG_0001.jpg").rename(root / "train" / "ILSVRC2012_val_00000001.JPEG")
    _val_solution(root / "LOC_val_solution.csv", [("ILSVRC2012_val_00000001", "n01751748")])
    assert [(r.reason, r.input) for r in _items(root, ("train",)) if isinstance(r, Reject)] == [
        ("missing_label", "train/ILSVRC2012_val_00000001.JPEG")]
    with pytest.raises(FileNotFoundError, match="val/ holds images without class folders"):  # val: the CSV is needed
        (root / "LOC_val_solution.csv").unlink()
        _jpeg(root / "val" / "ILSVRC2012_val_00000001.JPEG", 30)
        _items(root, ("val",))


def _build_train(tmp_path: Path, root: Path, size: int, dedup: bool, sentence_length: int) -> None:
    """One in-process build of `root`'s train split into tmp_path/out (no tokens, one shard)."""
    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config

    config = {"version": 1, "output": str(tmp_path / "out"), "image": {"size": size}, "split": {"val_fraction": 0.0},
              "tokenizer": {"enabled": False}, "dedup": {"enabled": dedup},
              "beam": {"direct_num_workers": 1, "direct_running_mode": "in_memory"},
              "sources": [{"name": "inet", "type": "imagenet", "path": str(root), "num_shards": 1,
                           "splits": ["train"], "sentence_length": sentence_length}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run_build(load_config(str(tmp_path / "c.yaml")))


def test_a_name_spelling_another_names_digest_shares_its_key_and_loses_no_picture(tmp_path: Path):
    """`train/a b/1.jpg` and `train/a_b/1_<digest>.jpg` (a clean name spelling `safe_key`'s digest of
    the first) share one key (`records.data_key`: made injective, every clean name ending in `_` and
    8 hex digits, as `IMG_20230101.jpg`, would change its key). Through a real build with dedup on,
    each picture is still a sentence of its own class, and a byte copy of one is one
    `duplicate_exact` reject naming its own file: nothing is merged or lost without a reject."""
    from uvd_pipeline.rendered_shards import iter_shard

    root, photos = tmp_path / "inet", _photos()
    twin = safe_key("inet", "train", "a b", "1").rsplit("_", 1)[1]
    files = {"train/a b/1.jpg": photos[0], f"train/a_b/1_{twin}.jpg": photos[1], "train/copies/c.jpg": photos[0]}
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    keys = sorted(r.key for r in _items(root, ("train",)) if isinstance(r, ImageRecord))
    assert keys[0] == keys[1] == "inet-train-a_b-1_" + twin, keys  # the clash is real
    _build_train(tmp_path, root, size=32, dedup=True, sentence_length=1)
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    built = {m["file"]: s.header["meta"]["label"] for tar in (tmp_path / "out" / "rendered").rglob("*.tar")
             for s in iter_shard(str(tar)) for m in s.header["members"]}
    assert len(built) + len(rejects) == len(files), (built, rejects)
    assert [(r["reason"], r["input"]) for r in rejects] in (
        [("duplicate_exact", "train/copies/c.jpg")], [("duplicate_exact", "train/a b/1.jpg")])
    assert {f"train/a_b/1_{twin}.jpg": "a_b"}.items() <= built.items()
