"""Web images in the wild, at the source and the writer: injective keys, every file counted,
cut img2dataset tars accounted sample by sample, img2dataset metadata carried."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import os_junk
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from sources import fsio
from sources.laion import LaionSource
from sources.records import ImageRecord, Reject, data_key, path_key, safe_key
from transforms.decode import DecodeError, load_image
from uvd_pipeline.rendered_shards import REJECTS_SUFFIX, TAR_SUFFIX, ShardAddress, write_shard
from uvd_pipeline.sentences import Sentence


def _read_all(source: LaionSource):
    return [item for unit in source.units() for item in source.read(unit)]


def _image(fmt: str = "JPEG", size=(24, 16), seed: int = 0, **save) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **save)
    return buf.getvalue()


# -- 1. keys unique by construction ------------------------------------------------------------
COLLIDING = ["x.jpg", "x.png", "x.jpeg", "x.JPG", "sub/x.jpg", "sub-x.jpg", "sub_x.jpg", "x_png.jpg",
             "x--png.jpg", "a.b.jpg", "a_b.jpg", "a b.jpg", "x", "x.tar.jpg", "sub/x.png", "_x.jpg",
             "sub/y/x.jpg", "sub-y/x.jpg", "sub/y-x.jpg", "é.jpg", "e.jpg"]


def test_path_keys_are_injective_dot_free_and_stable():
    keys = [path_key("web", p) for p in COLLIDING]
    assert len(set(keys)) == len(keys)
    assert all("." not in k and k.startswith("web-") for k in keys)
    assert all(set(k) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") for k in keys)
    # plain jpg paths keep the key they always had (no sample build changes for them)
    for plain in ("x.jpg", "sub/x.jpg", "sub_x.jpg", "x_png.jpg", "a_b.jpg", "sub/y/x.jpg"):
        assert path_key("web", plain) == safe_key("web", *plain[: -len(".jpg")].split("/"))
    assert path_key("web", "x.png") == "web-x--png"
    assert path_key("web", "sub/x.png") == "web-sub-x--png"
    assert (path_key("web", "x.JPG"), path_key("web", "x.JPEG")) == ("web-x--JPG", "web-x--JPEG")
    # the rest carries a digest of the whole path: fixed values, so keys never drift
    assert path_key("web", "sub-x.jpg") == path_key("web", "sub-x.jpg")
    assert path_key("web", "sub-x.jpg").startswith("web-sub-x-jpg--")
    assert len(path_key("web", "sub-x.jpg").rsplit("--", 1)[1]) == 16


def test_folder_collisions_become_distinct_sentences_and_captions_pair(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    for i, name in enumerate(["x.jpg", "sub/x.jpg", "sub-x.jpg"]):
        (tmp_path / name).write_bytes(_image(seed=i))
    (tmp_path / "x.png").write_bytes(_image("PNG", seed=9))
    (tmp_path / "x.txt").write_text("shared caption\n")
    items = _read_all(LaionSource("web", str(tmp_path)))
    assert all(isinstance(i, ImageRecord) for i in items)
    assert sorted(i.lineage["path"] for i in items) == ["sub-x.jpg", "sub/x.jpg", "x.jpg", "x.png"]
    assert len({i.key for i in items}) == 4
    by_path = {i.lineage["path"]: i for i in items}
    assert by_path["x.jpg"].lineage["caption"] == by_path["x.png"].lineage["caption"] == "shared caption"
    assert "caption" not in by_path["sub/x.jpg"].lineage


def test_tar_sample_keys_are_one_to_one_over_shard_and_key(tmp_path: Path):
    """`cc3m.tar` holding `train-0001.jpg` and `cc3m-train.tar` holding `0001.png` are two images:
    two records with two keys (safe_key alone joins both to `web-cc3m-train-0001`). Keys whose
    parts hold no '-', or that safe_key already marked with its digest, are as they were."""
    _tar(tmp_path / "cc3m.tar", [("train-0001.jpg", _image(seed=1)), ("0002.jpg", _image(seed=2))])
    _tar(tmp_path / "cc3m-train.tar", [("0001.png", _image("PNG", seed=3))])
    _tar(tmp_path / "00000.tar", [("000000001.jpg", _image(seed=4)), ("a.b-c.jpg", _image(seed=5))])
    with tarfile.open(tmp_path / "latin.tar", "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        info = tarfile.TarInfo("caf\xe9.jpg")  # a member name that is not UTF-8
        info.size = len(_image(seed=6))
        tar.addfile(info, io.BytesIO(_image(seed=6)))
    items = _read_all(LaionSource("web", str(tmp_path)))
    assert all(isinstance(i, ImageRecord) for i in items)
    keys = {(i.lineage["shard"], i.lineage["sample_key"]): i.key for i in items}
    assert len(set(keys.values())) == len(keys) == 6
    assert keys["cc3m", "0002"] == "web-cc3m-0002" == safe_key("web", "cc3m", "0002")
    assert keys["00000", "000000001"] == "web-00000-000000001"
    assert keys["00000", "a"] == safe_key("web", "00000", "a")  # the key is cut at the first dot
    assert keys["latin", "caf\udce9"].startswith("web-latin-caf_")
    for dashed in (("cc3m", "train-0001"), ("cc3m-train", "0001")):
        assert keys[dashed].startswith("web-cc3m-train-0001--") and len(keys[dashed].rsplit("--", 1)[1]) == 16
    assert data_key("web", "a-b", "c") != data_key("web", "a", "b-c") != data_key("web", "a-b-c")
    assert data_key("web", "x.y-z", "1") == safe_key("web", "x.y-z", "1")  # already digest-marked


def _sentence(sid: str, origin: str, seed: int) -> Sentence:
    return Sentence(sid, "web", "image", "none", "train", (_image("PNG", seed=seed),),
                    ({"key": sid, "path": origin, "width": 24, "height": 16},))


def test_writer_refuses_a_repeated_id_per_shard_and_keeps_a_readable_tar(tmp_path: Path):
    address = ShardAddress("web", "train", 0)
    items = [_sentence("web-a", "a.jpg", 0), _sentence("web-b", "b.jpg", 1), _sentence("web-a", "a2.jpg", 2)]
    kept = set()
    for order in (items, items[::-1]):  # whichever arrives first, the same one is kept
        out = tmp_path / f"o{len(kept)}"
        result = write_shard(str(out), address, order, config_hash="h", num_shards=1, image_size=16,
                             format_version=1, expected_items=3)
        assert result.stats["sentences"] == 2 and result.stats["rejects_by_reason"] == {"duplicate_key": 1}
        tar = address.path(str(out), TAR_SUFFIX)
        samples = list(wds.WebDataset([tar], shardshuffle=False))  # would raise on a repeated name
        assert [s["__key__"] for s in samples] == ["web-a", "web-b"]
        kept.add(json.loads(samples[0]["json"])["members"][0]["path"])
        (reject,) = [json.loads(l) for l in Path(address.path(str(out), REJECTS_SUFFIX)).read_text().splitlines()]
        assert reject["reason"] == "duplicate_key" and reject["key"] == "web-a"
    assert len(kept) == 1


def _tar(path: Path, members: list[tuple[str, bytes | tarfile.TarInfo]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            if isinstance(data, tarfile.TarInfo):
                data.name = name
                tar.addfile(data)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_repeated_tar_member_is_replaced_by_its_last_copy_and_a_second_image_is_a_duplicate_key(tmp_path: Path):
    """A name given again further on replaces the first copy, as extracting the tar does
    (`duplicate_member` for the first); a second image of a key is a `duplicate_key`."""
    _tar(tmp_path / "00000.tar", [("a.jpg", _image(seed=1)), ("a.txt", b"first"), ("b.jpg", _image(seed=2)),
                                  ("a.jpg", _image(seed=3)), ("a.txt", b"again"), ("c.jpg", _image(seed=4)),
                                  ("c.png", _image("PNG", seed=5))])
    items = _read_all(LaionSource("web", str(tmp_path), "webdataset"))
    records = [i for i in items if isinstance(i, ImageRecord)]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [r.lineage["sample_key"] for r in records] == ["b", "a", "c"]
    assert records[1].lineage["caption"] == "again" and records[1].data == _image(seed=3)
    assert Counter(r.reason for r in rejects) == {"duplicate_member": 2, "duplicate_key": 1}  # a.jpg, a.txt; c.png
    assert {r.key for r in rejects} == {"web-00000-a", "web-00000-c"}




def test_a_sample_whose_members_lie_apart_is_gathered_within_the_budget_for_held_samples(tmp_path: Path,
                                                                                        monkeypatch):
    """`a.jpg b.jpg a.txt`: extracted, sample a has its caption; the walk holds a open until its
    caption (it was a `duplicate_key`). Past `MAX_HELD_BYTES` for the samples held open, a is a
    `scattered_sample` reject, never more memory, and b is built all the same."""
    from sources import tar_members

    _tar(tmp_path / "00000.tar", [("a.jpg", _image(seed=1)), ("b.jpg", _image(seed=2)), ("a.txt", b"late caption")])
    records = [i for i in _read_all(LaionSource("web", str(tmp_path), "webdataset")) if isinstance(i, ImageRecord)]
    assert [(r.lineage["sample_key"], r.lineage.get("caption")) for r in records] == [("b", None),
                                                                                      ("a", "late caption")]
    monkeypatch.setattr(tar_members, "MAX_HELD_BYTES", len(_image(seed=1)) - 1)
    items = _read_all(LaionSource("web", str(tmp_path), "webdataset"))
    assert [(i.key, getattr(i, "reason", "record")) for i in items] == [
        ("web-00000-a", "scattered_sample"), ("web-00000-b", "record")]

def test_the_budget_for_held_samples_counts_each_sample_not_only_its_bytes(tmp_path: Path, monkeypatch):
    """A hostile shard: 1,500 keys, every key's `.jpg` first, then every key's `.txt`, members of 1
    byte, so every sample is held open until the second half. The budget counted only the
    members' bytes (1,500 B), while each held sample took ~450 B of memory itself (80,000 such
    keys: 35 MB held, counted as 80 KB): the budget bounded nothing. A held sample now counts
    itself too, and one dropped keeps only its key: past a 64 KiB budget the rest are
    `scattered_sample`, and every key is still handed over once, gathered whole or dropped."""
    from sources import tar_members

    keys = [f"{i:09d}" for i in range(1500)]
    _tar(tmp_path / "00000.tar", [(f"{k}.{ext}", b"x") for ext in ("jpg", "txt") for k in keys])

    def keep(tar, info, sample, ext):
        sample.members[ext] = tar_members.member_bytes(tar, info)

    monkeypatch.setattr(tar_members, "MAX_HELD_BYTES", 64 << 10)
    items = list(tar_members.samples(str(tmp_path / "00000.tar"), "web", "00000", keep, lambda h: "r|*"))
    handed = [i for i in items if isinstance(i, tar_members.Sample)]
    scattered = [i for i in items if not isinstance(i, tar_members.Sample)]
    assert sorted(s.key for s in handed) == keys
    assert {r.reason for r in scattered} == {"scattered_sample"}
    assert {s.key for s in handed if s.dropped} == {r.key.removeprefix("web-00000-") for r in scattered}
    assert all(s.members == {"jpg": b"x", "txt": b"x"} for s in handed if not s.dropped)
    assert 100 < len(handed) - len(scattered) <= (64 << 10) // tar_members._SAMPLE_BYTES


def test_tar_made_on_a_mac_reads_as_the_one_made_elsewhere(tmp_path: Path):
    """GNU tar stores member names as the disk gives them: a folder copied off a Mac names
    `café.jpg` in NFD, so its tar gave other sample keys in the lineage, so other output bytes;
    now a key is taken in NFC (`café` and `cafe` + U+0301 are one). A tar holding both forms is
    one sample, the second form a `duplicate_key` reject of each member (before: two samples of
    one key)."""
    import shutil
    import subprocess
    import unicodedata

    if shutil.which("tar") is None:
        pytest.skip("needs GNU tar")
    folders = {"NFC": ("NFC",), "NFD": ("NFD",), "twins": ("NFC", "NFD")}
    read = {}
    for folder, forms in folders.items():
        files = tmp_path / folder / "files"
        files.mkdir(parents=True)
        for seed, form in enumerate(forms):
            (files / unicodedata.normalize(form, "caf\u00e9.jpg")).write_bytes(_image(seed=seed))
            (files / unicodedata.normalize(form, "caf\u00e9.txt")).write_bytes(f"caption {seed}".encode())
        subprocess.run(["tar", "--sort=name", "-cf", str(tmp_path / folder / "00000.tar"), "-C", str(files), "."],
                       check=True)
        shutil.rmtree(files)
        read[folder] = _read_all(LaionSource("web", str(tmp_path / folder), "webdataset"))
    with tarfile.open(tmp_path / "NFD" / "00000.tar", encoding="utf-8", errors="strict") as tar:
        assert "./cafe\u0301.jpg" in tar.getnames()  # the Mac's names, as GNU tar stored them
    assert [(i.key, i.lineage) for i in read["NFD"]] == [(i.key, i.lineage) for i in read["NFC"]]
    (record,) = [i for i in read["twins"] if isinstance(i, ImageRecord)]
    assert record.key == read["NFC"][0].key and record.data == _image(seed=1)  # NFD sorts first in the tar
    assert record.lineage["caption"] == "caption 1"
    rejects = [i for i in read["twins"] if isinstance(i, Reject)]
    assert [(r.key, r.reason) for r in rejects] == [(record.key, "duplicate_key")] * 2  # its .jpg and .txt

# -- 2. every file counted -----------------------------------------------------------------------
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"></svg>\n'


def _planar_tiff() -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.ones((4, 8, 8), np.uint16), planarconfig="separate", photometric="rgb",
                     extrasamples=[0])
    return buf.getvalue()


def _outcomes(root: Path) -> dict[str, str]:
    """What each folder file becomes: the format it decodes as, or its reject's reason and named
    format (or, for a read reject, its reason)."""
    outcome = {}
    for item in _read_all(LaionSource("web", str(root))):
        if isinstance(item, Reject):
            assert item.key not in outcome
            outcome[item.key] = item.reason
            continue
        assert item.lineage["path"] not in outcome
        try:
            outcome[item.lineage["path"]] = load_image(item.read_bytes(), 16, "center_crop").format
        except DecodeError as exc:
            outcome[item.lineage["path"]] = f"{exc.reason}: {exc.detail.split(':')[0]}"
    return outcome


def test_every_folder_file_is_decoded_or_rejected_with_its_format(tmp_path: Path):
    (tmp_path / "a.avif").write_bytes(_image("AVIF", seed=1))
    (tmp_path / "b.heic").write_bytes(_image("HEIF", seed=2))
    (tmp_path / "c.svg").write_bytes(SVG)
    (tmp_path / "d.tif").write_bytes(_planar_tiff())
    (tmp_path / "e.html").write_bytes(b"<html>403</html>")
    (tmp_path / "f.txt").write_text("a caption without its image")
    (tmp_path / "g.jpg").write_bytes(_image(seed=3))
    os.mkfifo(tmp_path / "h.jpg")  # would block a reader forever
    assert _outcomes(tmp_path) == {
        "a.avif": "AVIF", "b.heic": "HEIF", "g.jpg": "JPEG",
        "c.svg": "unsupported_format: SVG (vector graphics)",
        "d.tif": "unsupported_format: TIFF (16-bit unsigned integer RGB, 4 samples a pixel, a sample layout Pillow "
                 "cannot read)",
        "e.html": "not_an_image: no image format recognises these 16 bytes",
        path_key("web", "f.txt"): "missing_image",
        path_key("web", "h.jpg"): "not_a_file",
    }


def test_folder_links_out_of_the_source_are_rejects_that_never_read_the_target(tmp_path: Path):
    """A plain folder with links to a private photo and to a text file outside it: two
    `outside_root` rejects whose details hold neither the target's name nor its bytes; a link
    that stays inside the folder is read like the file it names."""
    root, private = tmp_path / "web", tmp_path / "private"
    root.mkdir()
    private.mkdir()
    (private / "photo.jpg").write_bytes(_image(seed=5))
    (private / "secret.txt").write_text("root:x:0:0:canary\n")
    (root / "a.jpg").write_bytes(_image(seed=6))
    (root / "photo.jpg").symlink_to(private / "photo.jpg")
    (root / "passwd.jpg").symlink_to(private / "secret.txt")
    (root / "same.jpg").symlink_to(root / "a.jpg")
    items = _read_all(LaionSource("web", str(root)))
    rejects = {i.key: i for i in items if isinstance(i, Reject)}
    assert {k: r.reason for k, r in rejects.items()} == {path_key("web", "photo.jpg"): "outside_root",
                                                         path_key("web", "passwd.jpg"): "outside_root"}
    assert all("private" not in r.detail and "canary" not in r.detail for r in rejects.values())
    assert sorted(i.lineage["path"] for i in items if isinstance(i, ImageRecord)) == ["a.jpg", "same.jpg"]


def test_non_regular_tar_members_are_rejects(tmp_path: Path):
    link = tarfile.TarInfo()
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    fifo = tarfile.TarInfo()
    fifo.type = tarfile.FIFOTYPE
    hard = tarfile.TarInfo()
    hard.type, hard.linkname = tarfile.LNKTYPE, "/etc/passwd"
    _tar(tmp_path / "00000.tar", [("a.jpg", _image()), ("l.jpg", link), ("f.jpg", fifo), ("h.jpg", hard),
                                  ("b.jpg", _image(seed=1))])
    items = _read_all(LaionSource("web", str(tmp_path), "webdataset"))
    assert [i.lineage["sample_key"] for i in items if isinstance(i, ImageRecord)] == ["a", "b"]
    rejects = {i.key: i.detail for i in items if isinstance(i, Reject)}
    assert {r.reason for r in items if isinstance(r, Reject)} == {"not_a_file"}
    assert rejects == {"web-00000-l": "l.jpg: tar member of type symlink",
                       "web-00000-f": "f.jpg: tar member of type fifo",
                       "web-00000-h": "h.jpg: tar member of type hard link to /etc/passwd (no earlier member is a "
                                      "file of that name: GNU tar cannot extract it either)"}


def test_a_hard_link_to_a_symlink_member_names_its_targets_type(tmp_path: Path):
    """GNU `ln` links a symlink itself (`ln -s 0.jpg 1.jpg; ln 1.jpg 2.jpg`) and GNU tar stores
    `2.jpg` as a hard link to the symlink member `1.jpg`, which it extracts (a second symlink):
    both are `not_a_file` rejects, the link's detail naming its target's type, not claiming that
    GNU tar could not extract it."""
    import subprocess

    files, web = tmp_path / "files", tmp_path / "web"
    files.mkdir()
    web.mkdir()
    (files / "1.jpg").symlink_to("0.jpg")
    os.link(files / "1.jpg", files / "2.jpg", follow_symlinks=False)
    subprocess.run(["tar", "-cf", str(web / "00000.tar"), "-C", str(files), "1.jpg", "2.jpg"], check=True)
    items = _read_all(LaionSource("web", str(web), "webdataset"))
    assert [(i.key, i.reason, i.detail) for i in items] == [
        ("web-00000-1", "not_a_file", "1.jpg: tar member of type symlink"),
        ("web-00000-2", "not_a_file", "2.jpg: tar member of type hard link to 1.jpg (its target is a symlink, no "
                                      "file)")]


def test_hard_linked_members_are_read_as_gnu_tar_extracts_them(tmp_path: Path):
    """A deduplicated folder (`ln 0.jpg 1.jpg`) tarred by GNU tar stores `1.jpg` as a hard link
    member of size 0: it is the image `tar -x` extracts (its target's bytes), and so is a second
    link to the same file; the same shard with its target `tar --delete`d holds a link to nothing,
    each a `not_a_file` reject; gzipped and cut in its trailer it is streamed, and its links are
    read all the same (their target's bytes held as they passed), as from the whole .tar.gz."""
    import shutil
    import subprocess

    files, web = tmp_path / "files", tmp_path / "web"
    files.mkdir()
    web.mkdir()
    (files / "0.jpg").write_bytes(_image(seed=3))
    (files / "0.txt").write_text("a cat")
    os.link(files / "0.jpg", files / "1.jpg")
    (files / "1.txt").write_text("the same cat")
    os.link(files / "0.jpg", files / "2.jpg")
    subprocess.run(["tar", "-cf", str(web / "00000.tar"), "-C", str(files), "0.jpg", "0.txt", "1.jpg", "1.txt",
                    "2.jpg"], check=True)
    listed = subprocess.run(["tar", "-tvf", str(web / "00000.tar")], capture_output=True, text=True, check=True)
    assert "1.jpg link to 0.jpg" in listed.stdout and "2.jpg link to 0.jpg" in listed.stdout
    shutil.copy(web / "00000.tar", web / "00001.tar")
    subprocess.run(["tar", "--delete", "-f", str(web / "00001.tar"), "0.jpg"], check=True)
    packed = subprocess.run(["gzip", "-c", str(web / "00000.tar")], capture_output=True, check=True).stdout
    (web / "00002.tar.gz").write_bytes(packed[:-8])  # its CRC and length cut off: streamed, not spooled
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(web / "00000.tar"), "-C", str(out)], check=True)
    items = _read_all(LaionSource("web", str(web), "webdataset"))
    records = {i.key: i.data for i in items if isinstance(i, ImageRecord)}
    extracted = {f"web-00000-{n}": (out / f"{n}.jpg").read_bytes() for n in "012"}
    assert {k: v for k, v in records.items() if k.startswith("web-00000-")} == extracted
    assert {k.replace("00002", "00000"): v for k, v in records.items() if k.startswith("web-00002-")} == extracted
    rejects = sorted((i.key, i.reason, i.detail.split(" (")[-1]) for i in items if isinstance(i, Reject)
                     if i.reason == "not_a_file")
    lost = "no earlier member is a file of that name: GNU tar cannot extract it either)"
    assert rejects == [("web-00001-1", "not_a_file", lost), ("web-00001-2", "not_a_file", lost)]


def test_hard_links_past_the_tars_link_budget_are_rejects_naming_it(tmp_path: Path, monkeypatch):
    """Links are cheap to write and each reads its target again (1000 GNU tar links to one 64 MiB
    member read 62.56 GiB): a tar's links hand over bytes within `LINK_READ_FLOOR` plus
    `LINK_READ_RATIO` times the tar's bytes, set here to two targets' worth; the links past it are
    each a `not_a_file` reject naming the budget, the build going on."""
    import subprocess

    from sources import tar_members

    files, web = tmp_path / "files", tmp_path / "web"
    files.mkdir()
    web.mkdir()
    photo = _image(seed=5)
    (files / "0.jpg").write_bytes(photo)
    for n in range(1, 5):
        os.link(files / "0.jpg", files / f"{n}.jpg")
    subprocess.run(["tar", "-cf", str(web / "00000.tar"), "-C", str(files)] + [f"{n}.jpg" for n in range(5)],
                   check=True)
    monkeypatch.setattr(tar_members, "LINK_READ_FLOOR", 2 * len(photo))
    monkeypatch.setattr(tar_members, "LINK_READ_RATIO", 0)
    items = _read_all(LaionSource("web", str(web), "webdataset"))
    assert {i.key: i.data for i in items if isinstance(i, ImageRecord)} == {
        f"web-00000-{n}": photo for n in range(3)}
    budget = 2 * len(photo)
    assert [(i.key, i.reason, i.detail) for i in items if isinstance(i, Reject)] == [
        (f"web-00000-{n}", "not_a_file",
         f"{n}.jpg: tar member of type hard link to 0.jpg (links have handed over {budget} B; its {len(photo)} B "
         f"would pass the {budget} B budget for bytes read through links by its byte {512 * (n + 2)} ({budget} + "
         "0x the tar's bytes before it): extract the tar)")
        for n in (3, 4)]


@pytest.mark.parametrize("streamed", [False, True])
def test_a_gzipped_tars_links_are_read_within_what_its_read_holds_wherever_it_is_read(
        tmp_path: Path, monkeypatch, streamed: bool):
    """A .tar.gz is read forward only, streamed or from its inflated copy (which one the machine's
    TMPDIR and free disk decided, and a streamed link was refused): a link's target is held as it
    passes, within `MAX_LINK_HELD_BYTES`, so the verdict is the file's. Set here between the two
    photos' sizes: the small one's link is read, the large one's a `not_a_file` reject naming the
    budget, streamed (GNU tar's gzip cut in its trailer) or not."""
    import subprocess

    from sources import tar_members

    files, web = tmp_path / "files", tmp_path / "web"
    files.mkdir()
    web.mkdir()
    small, large = _image(seed=6), _image(seed=7, size=(96, 64))
    (files / "0.jpg").write_bytes(small)
    (files / "1.jpg").write_bytes(large)
    os.link(files / "0.jpg", files / "2.jpg")
    os.link(files / "1.jpg", files / "3.jpg")
    subprocess.run(["tar", "-czf", str(web / "00000.tar.gz"), "-C", str(files), "0.jpg", "1.jpg", "2.jpg", "3.jpg"],
                   check=True)
    if streamed:
        (web / "00000.tar.gz").write_bytes((web / "00000.tar.gz").read_bytes()[:-8])  # its CRC and length cut off
    assert len(small) < len(large)
    monkeypatch.setattr(tar_members, "MAX_LINK_HELD_BYTES", len(small) + len(large) - 1)
    items = _read_all(LaionSource("web", str(web), "webdataset"))
    assert {i.key: i.data for i in items if isinstance(i, ImageRecord)} == {
        "web-00000-0": small, "web-00000-1": large, "web-00000-2": small}
    assert [(i.key, i.reason, i.detail) for i in items if isinstance(i, Reject) and i.reason == "not_a_file"] == [
        ("web-00000-3", "not_a_file", f"3.jpg: tar member of type hard link to 1.jpg (its target's bytes would pass "
         f"the {len(small) + len(large) - 1} B a compressed tar's read holds for links: extract the tar, or repack "
         "it plain)")]


def test_a_gzipped_tars_held_link_target_is_let_go_once_its_last_link_is_read(tmp_path: Path, monkeypatch):
    """A target's bytes are held only while a later link still names it: three photos, each linked
    right after it (GNU tar -czf), with `MAX_LINK_HELD_BYTES` at two photos' size: every link is
    read (before, each target was held to the tar's end, and the third link was refused)."""
    import subprocess

    from sources import tar_members

    files, web = tmp_path / "files", tmp_path / "web"
    files.mkdir()
    web.mkdir()
    photos = [_image(seed=20 + n) for n in range(3)]
    for n, photo in enumerate(photos):
        (files / f"{n}.jpg").write_bytes(photo)
        os.link(files / f"{n}.jpg", files / f"{n + 3}.jpg")
    subprocess.run(["tar", "-czf", str(web / "00000.tar.gz"), "-C", str(files),
                    "0.jpg", "3.jpg", "1.jpg", "4.jpg", "2.jpg", "5.jpg"], check=True)
    cap = sum(sorted(map(len, photos))[:2])
    assert max(map(len, photos)) <= cap < sum(map(len, photos))
    monkeypatch.setattr(tar_members, "MAX_LINK_HELD_BYTES", cap)
    items = _read_all(LaionSource("web", str(web), "webdataset"))
    assert not [i for i in items if isinstance(i, Reject)]
    assert {i.key: i.data for i in items if isinstance(i, ImageRecord)} == {
        f"web-00000-{n}": photos[n % 3] for n in range(6)}


# -- 3. a cut img2dataset tar: every success accounted ------------------------------------------
def _img2dataset_shard(root: Path, n: int = 12, failed: int = 2, resized: bool = False) -> list[bytes]:
    """One shard as img2dataset 1.47 writes it (webdataset format): tar, parquet, _stats.json."""
    rows, members, images = [], [], []
    for i in range(n + failed):
        key = f"0000{i:04d}"
        ok = i < n
        data = _image(seed=i, size=(40 + i, 30)) if ok else None
        stored = (32, 32) if resized else (40 + i, 30)
        meta = {"url": f"http://127.0.0.1/{i}.jpg", "caption": f"image {i}", "key": key,
                "status": "success" if ok else "failed_to_download",
                "error_message": None if ok else "HTTP Error 404: Not Found",
                "width": stored[0] if ok else None, "height": stored[1] if ok else None,
                "original_width": 40 + i if ok else None, "original_height": 30 if ok else None,
                "exif": json.dumps({"Image Orientation": "Horizontal (normal)"}) if ok else None,
                "sha256": __import__("hashlib").sha256(data).hexdigest() if ok else None,
                "license": "cc-by" if i % 2 else None}
        rows.append(meta)
        if ok:
            images.append(data)
            members += [(f"{key}.jpg", data), (f"{key}.txt", meta["caption"].encode()),
                        (f"{key}.json", json.dumps(meta).encode())]
    _tar(root / "00000.tar", members)
    pq.write_table(pa.Table.from_pylist(rows), root / "00000.parquet")
    (root / "00000_stats.json").write_text(json.dumps({"count": n + failed, "successes": n,
                                                       "failed_to_download": failed}))
    return images


def test_cut_tar_accounts_for_every_listed_success(tmp_path: Path):
    _img2dataset_shard(tmp_path)
    tar = tmp_path / "00000.tar"
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) * 2 // 5])
    items = _read_all(LaionSource("web", str(tmp_path)))
    records = [i for i in items if isinstance(i, ImageRecord)]
    reasons = Counter(i.reason for i in items if isinstance(i, Reject))
    assert 2 <= len(records) < 12
    assert reasons["failed_to_download"] == 2 and reasons["corrupt_archive"] == 1
    # every success is a record, the sample cut in half, or missing_from_archive: each its own
    assert len(records) + reasons["truncated_sample"] + reasons["missing_from_archive"] == 12
    assert reasons["missing_from_archive"] >= 6
    keys = {i.key for i in items if not (isinstance(i, Reject) and i.reason == "corrupt_archive")}
    assert len(keys) == 14  # 12 successes and 2 failures, one item each
    missing = [i for i in items if isinstance(i, Reject) and i.reason == "missing_from_archive"]
    assert missing[-1].key == "web-00000-00000011"
    assert missing[-1].detail == "00000.parquet lists 00000011 as downloaded; 00000.tar lacks it"


@pytest.mark.parametrize("member", ["jpg", "txt"])
def test_sample_cut_in_any_member_is_truncated_sample(tmp_path: Path, monkeypatch, member: str):
    """A tar cut inside the data of a sample's first member (its image) or of a later one: that
    sample is a `truncated_sample` either way, every listed success is accounted once, and the
    parts of the tar read as several units say the same."""
    import sources.web_units as web_units

    _img2dataset_shard(tmp_path, n=6, failed=0)
    tar = tmp_path / "00000.tar"
    data = tar.read_bytes()
    tar.write_bytes(data[: data.find(f"00000003.{member}".encode()) + tarfile.BLOCKSIZE + 100])
    whole = _read_all(LaionSource("web", str(tmp_path)))
    reasons = {i.key: i.reason for i in whole if isinstance(i, Reject)}
    assert [i.lineage["sample_key"] for i in whole if isinstance(i, ImageRecord)] == ["00000000", "00000001",
                                                                                      "00000002"]
    assert reasons == {"web-00000": "corrupt_archive", "web-00000-00000003": "truncated_sample",
                       "web-00000-00000004": "missing_from_archive", "web-00000-00000005": "missing_from_archive"}
    monkeypatch.setattr(web_units, "TAR_PART_BYTES", max(1, tar.stat().st_size // 3))
    source = LaionSource("web", str(tmp_path))
    assert len(source.units()) >= 3 and all(u.parts > 1 for u in source.units())
    parts = [repr(i) for u in source.units() for i in source.read(u)]
    assert sorted(parts) == sorted(repr(i) for i in whole)


def test_cut_tar_without_parquet_counts_from_stats(tmp_path: Path):
    _img2dataset_shard(tmp_path)
    (tmp_path / "00000.parquet").unlink()
    tar = tmp_path / "00000.tar"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    items = _read_all(LaionSource("web", str(tmp_path), "webdataset"))
    missing = [i for i in items if isinstance(i, Reject) and i.reason == "missing_from_archive"]
    found = sum(isinstance(i, ImageRecord) for i in items) + sum(
        isinstance(i, Reject) and i.reason == "truncated_sample" for i in items)
    # one reject per sample lost, so that sentences and rejects add up to what img2dataset counted
    assert len(missing) == 12 - found and len({m.key for m in missing}) == len(missing)
    assert all(m.detail.startswith(f"00000_stats.json counts 12 successes, 00000.tar holds {found};") for m in missing)


def test_a_stats_file_claiming_absurdly_many_successes_is_counted_within_a_bound(tmp_path: Path, monkeypatch):
    """A `_stats.json` (hand-edited, or of another download) claiming 10**12 successes the shard
    does not hold: each lost sample is a reject, up to `MAX_UNLISTED_REJECTS`; the last of them
    says how many more were claimed. Never 10**12 rejects (a build that never ends)."""
    import sources.img2dataset_listing as listing

    monkeypatch.setattr(listing, "MAX_UNLISTED_REJECTS", 5)
    _img2dataset_shard(tmp_path)
    (tmp_path / "00000_stats.json").write_text(json.dumps({"count": 10**12, "successes": 10**12}))
    items = _read_all(LaionSource("web", str(tmp_path), "webdataset"))
    missing = [i for i in items if isinstance(i, Reject) and i.reason == "missing_from_archive"]
    assert len(missing) == 5 and sum(isinstance(i, ImageRecord) for i in items) == 12
    assert "999999999983 more" in missing[-1].detail


@pytest.mark.parametrize("layout", ["webdataset", "files"])
def test_folders_beside_img2dataset_shards_are_counted_never_skipped_or_read_as_shards(tmp_path: Path, layout: str):
    """img2dataset keeps its work folder `_tmp/` (the URL list cut into `N.feather` shards) in the
    output folder until the download ends: a running or killed download leaves it there. Beside
    webdataset tars it (and any other folder: `extra/` holding a photo) was skipped silently; in
    the files layout it was read as a shard folder, each feather a `not_an_image` record to decode.
    Each such folder is now one `unexpected_file` reject, never read (the build of a killed
    download says what is there; the rerun after img2dataset finished has no `_tmp/`)."""
    import pyarrow.feather as feather

    _img2dataset_shard(tmp_path)
    if layout == "files":
        with tarfile.open(tmp_path / "00000.tar") as tar:
            tar.extractall(tmp_path / "00000", filter="data")
        (tmp_path / "00000.tar").unlink()
    (tmp_path / "_tmp").mkdir()
    feather.write_feather(pa.table({"url": ["http://127.0.0.1/0.jpg"], "caption": ["c"]}), tmp_path / "_tmp" / "0.feather")
    if layout == "webdataset":  # (in the files layout a folder of images is a shard folder: read)
        (tmp_path / "extra").mkdir()
        (tmp_path / "extra" / "photo.jpg").write_bytes(_image(seed=99, size=(20, 20)))
    source = LaionSource("web", str(tmp_path))
    assert source.resolved_format() == layout
    items = _read_all(source)
    assert sum(isinstance(i, ImageRecord) for i in items) == 12
    others = sorted((i.input, i.reason) for i in items if isinstance(i, Reject) and i.reason != "failed_to_download")
    assert others == [("_tmp", "unexpected_file")] + ([("extra", "unexpected_file")] if layout == "webdataset" else [])


def _work_folder(root: Path, shards: list[int]) -> None:
    """img2dataset 1.47's `_tmp/`: its reader cuts the URL list into `{shard_id}.feather` (an Arrow
    IPC file of the URL columns, `pa.ipc.new_file`), one per shard to download, each removed once
    its shard is written."""
    (root / "_tmp").mkdir(parents=True, exist_ok=True)
    for shard in shards:
        table = pa.table({"url": [f"http://127.0.0.1/{shard}-{i}.jpg" for i in range(3)],
                          "caption": [f"c{i}" for i in range(3)]})
        with open(root / "_tmp" / f"{shard}.feather", "wb") as handle, pa.ipc.new_file(handle, table.schema) as writer:
            writer.write_table(table)


def test_a_download_killed_before_any_shard_ended_is_one_unfinished_download_reject(tmp_path: Path):
    """An img2dataset download killed before its first shard ended leaves only `_tmp/` with the
    URL shards it planned: taken for a plain image folder, each feather was an image record the
    decoder failed (`not_an_image`), nothing said the download was unfinished. Now the folder is
    one `unfinished_download` reject naming the shards and what to do; a format set by hand says
    so in its error; a folder of images holding such a `_tmp/` keeps its images."""
    _work_folder(tmp_path, [0, 1, 2, 3, 4])
    source = LaionSource("web", str(tmp_path))
    (reject,) = _read_all(source)
    assert (reject.reason, reject.input, reject.key) == ("unfinished_download", "_tmp", data_key("web", "_tmp"))
    assert "5 shards it planned (00000, 00001, 00002... 00004) not finished" in reject.detail
    assert "rerun the same img2dataset command" in reject.detail and len(reject.detail) <= 300
    for fmt in ("webdataset", "parquet"):
        with pytest.raises(FileNotFoundError, match="no .* shards in .*img2dataset's work folder: its download"):
            LaionSource("web", str(tmp_path), fmt).units()

    (tmp_path / "photos").mkdir()  # a folder of images that holds such a folder too
    (tmp_path / "photos" / "a.jpg").write_bytes(_image(seed=1))
    items = _read_all(LaionSource("web", str(tmp_path)))
    assert [i.key for i in items if isinstance(i, ImageRecord)] == [path_key("web", "photos/a.jpg")]
    assert [(i.reason, i.input) for i in items if isinstance(i, Reject)] == [("unfinished_download", "_tmp")]


def test_a_download_killed_after_a_shard_ended_names_the_shards_to_come(tmp_path: Path):
    """Killed once shard 0 ended: its tar, parquet and `_stats.json` are there, `_tmp/` holds the
    feathers of shards 1 and 2 (img2dataset removed shard 0's): the shard is read, and `_tmp/`,
    an `unexpected_file` before, is the `unfinished_download` naming shards 00001 and 00002. A
    `_tmp/` whose shards all ended (img2dataset leaves it on S3) stays `unexpected_file`."""
    _img2dataset_shard(tmp_path)
    _work_folder(tmp_path, [1, 2])
    items = _read_all(LaionSource("web", str(tmp_path)))
    assert sum(isinstance(i, ImageRecord) for i in items) == 12
    (reject,) = [i for i in items if isinstance(i, Reject) and i.input == "_tmp"]
    assert reject.reason == "unfinished_download" and "2 shards it planned (00001, 00002) not finished" in reject.detail
    for name in ("1.feather", "2.feather"):
        (tmp_path / "_tmp" / name).unlink()
    _work_folder(tmp_path, [0])
    items = _read_all(LaionSource("web", str(tmp_path)))
    assert [i.reason for i in items if isinstance(i, Reject) and i.input == "_tmp"] == ["unexpected_file"]


@pytest.mark.parametrize("layout", ["webdataset", "files", "parquet"])
def test_the_shard_a_killed_download_was_writing_is_left_out_and_named(tmp_path: Path, layout: str):
    """Killed in shard 1 (shard 0 ended: its `_stats.json` is there; `_tmp/` holds 1 and 2): the
    half-written `00001.tar` (cut at a member), `00001/` or 0-byte `00001.parquet` was built (its
    samples sentences, then `corrupt_archive`, `bad_parquet`) while the reject said "not built".
    Now they are left out: shard 0's samples and one `unfinished_download` naming them."""
    _img2dataset_shard(tmp_path)
    with tarfile.open(tmp_path / "00000.tar") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    if layout == "files":
        with tarfile.open(tmp_path / "00000.tar") as tar:
            tar.extractall(tmp_path / "00000", filter="data")
        (tmp_path / "00000.tar").unlink()
        (tmp_path / "00001").mkdir()
        for name, data in members[:7]:
            (tmp_path / "00001" / name).write_bytes(data)
        partial = ["00001/", "00001.parquet"]
    elif layout == "webdataset":
        _tar(tmp_path / "00001.tar", members[:7])
        (tmp_path / "00001.tar").write_bytes((tmp_path / "00001.tar").read_bytes()[:-2000])
        partial = ["00001.tar", "00001.parquet"]
    else:
        rows = pq.read_table(tmp_path / "00000.parquet").to_pylist()
        for row, data in zip(rows, [d for n, d in members if n.endswith(".jpg")]):
            row["jpg"] = data
        (tmp_path / "00000.tar").unlink()
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "00000.parquet")
        partial = ["00001.parquet"]
    (tmp_path / "00001.parquet").write_bytes(b"")  # img2dataset writes it when the shard closes
    _work_folder(tmp_path, [1, 2])
    source = LaionSource("web", str(tmp_path))
    assert source.resolved_format() == layout
    items = _read_all(source)
    records = [i for i in items if isinstance(i, ImageRecord)]
    assert len(records) == 12 and {r.lineage["shard"] for r in records} == {"00000"}
    rejects = [i for i in items if isinstance(i, Reject) and i.reason != "failed_to_download"]
    assert [(r.reason, r.input) for r in rejects] == [("unfinished_download", "_tmp")]
    assert f"2 shards it planned (00001, 00002) not finished (no _stats.json), not built, partly written: " \
           f"{', '.join(partial)}:" in rejects[0].detail and len(rejects[0].detail) <= 300


@pytest.mark.parametrize("layout", ["webdataset", "files", "parquet"])
def test_a_download_killed_in_its_first_shard_is_one_unfinished_download(tmp_path: Path, layout: str):
    """Killed in shard 0 with `--output_format parquet`, img2dataset leaves a 0-byte `00000.parquet`
    beside `_tmp/`: the format's detection read its schema and the build crashed (ArrowInvalid
    "Parquet file size is 0 bytes"). Every layout now gives the one `unfinished_download` reject."""
    if layout == "webdataset":
        _tar(tmp_path / "00000.tar", [])
    elif layout == "files":
        (tmp_path / "00000").mkdir()
    (tmp_path / "00000.parquet").write_bytes(b"")
    _work_folder(tmp_path, [0, 1])
    source = LaionSource("web", str(tmp_path))
    assert source.resolved_format() == layout
    (reject,) = _read_all(source)
    assert (reject.reason, reject.input) == ("unfinished_download", "_tmp")
    assert "2 shards it planned (00000, 00001)" in reject.detail and "00000.parquet" in reject.detail


def test_an_unreadable_img2dataset_parquet_is_its_bad_parquet_never_a_crash(tmp_path: Path):
    """A 0-byte or cut `00000.parquet` with no `_tmp/` (a copy that failed): the format's detection
    raised ArrowInvalid. It is now the parquet layout, each unreadable shard its `bad_parquet`, the
    readable ones read, whichever sorts first."""
    (tmp_path / "00000.parquet").write_bytes(b"")
    (tmp_path / "00001.parquet").write_bytes(b"PAR1 not a parquet PAR1")
    source = LaionSource("web", str(tmp_path))
    assert source.resolved_format() == "parquet"
    assert sorted((i.reason, i.input) for i in _read_all(source)) == [("bad_parquet", "00000.parquet"),
                                                                       ("bad_parquet", "00001.parquet")]
    pq.write_table(pa.table({"key": ["0"], "status": ["success"], "jpg": [_image(seed=3)]}), tmp_path / "00002.parquet")
    items = _read_all(LaionSource("web", str(tmp_path)))
    assert sum(isinstance(i, ImageRecord) for i in items) == 1
    assert sorted(i.input for i in items if isinstance(i, Reject)) == ["00000.parquet", "00001.parquet"]


def test_only_img2dataset_named_folders_are_files_shards(tmp_path: Path):
    """In img2dataset's `files` layout (`00000/` beside `00000.parquet`) a user's `notes/` holding a
    photo and a text was read as a shard (the photo a sample, the text a `missing_image`). Only a
    folder named as img2dataset's writer names a shard (digits) is one; `notes/` and `00000_old/`
    are each one `unexpected_file` reject, `.ipynb_checkpoints/` one `hidden_file`, never read."""
    _img2dataset_shard(tmp_path)
    with tarfile.open(tmp_path / "00000.tar") as tar:
        tar.extractall(tmp_path / "00000", filter="data")
    (tmp_path / "00000.tar").unlink()
    for folder in ("notes", "00000_old", ".ipynb_checkpoints"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "look.jpg").write_bytes(_image(seed=7))
    (tmp_path / "notes" / "todo.txt").write_text("check shard 3")
    (tmp_path / ".ipynb_checkpoints" / "explore-checkpoint.ipynb").write_text("{}")
    source = LaionSource("web", str(tmp_path))
    assert source.resolved_format() == "files"
    items = _read_all(source)
    records = [i for i in items if isinstance(i, ImageRecord)]
    assert len(records) == 12 and all(r.key.startswith("web-00000-") for r in records)
    others = sorted((i.input, i.reason) for i in items if isinstance(i, Reject) and i.reason != "failed_to_download")
    assert others == [(".ipynb_checkpoints", "hidden_file"), ("00000_old", "unexpected_file"),
                      ("notes", "unexpected_file")]


def test_folders_and_feathers_named_in_other_digits_are_no_shards(tmp_path: Path):
    """img2dataset names a shard in ASCII digits (`{shard_id:05d}`): a folder `٠١` (Arabic-Indic)
    or `１２` (fullwidth) beside `00000/` was read as a files shard (`\\d` takes any Unicode digit,
    and `int()` reads them), a `_tmp/٣.feather` planned shard 3. Each folder is now one
    `unexpected_file` reject, never read, and that feather plans nothing."""
    from sources.img2dataset_listing import data_dirs, unfinished_shards

    _img2dataset_shard(tmp_path)
    with tarfile.open(tmp_path / "00000.tar") as tar:
        tar.extractall(tmp_path / "00000", filter="data")
    (tmp_path / "00000.tar").unlink()
    for folder in ("\u0660\u0661", "\uff11\uff12"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "look.jpg").write_bytes(_image(seed=7))
    assert [os.path.basename(d) for d in data_dirs(str(tmp_path))] == ["00000"]
    items = _read_all(LaionSource("web", str(tmp_path)))
    assert sum(isinstance(i, ImageRecord) for i in items) == 12
    others = sorted((i.input, i.reason) for i in items if isinstance(i, Reject) and i.reason != "failed_to_download")
    assert others == [("\u0660\u0661", "unexpected_file"), ("\uff11\uff12", "unexpected_file")]
    (tmp_path / "_tmp").mkdir()
    (tmp_path / "_tmp" / "\u0663.feather").write_bytes(b"")
    assert unfinished_shards(str(tmp_path)) is None


def test_killed_img2dataset_shard_keeps_the_tar_samples(tmp_path: Path):
    """What a killed img2dataset leaves: the tar cut at a member boundary and a 0-byte parquet (it
    writes the parquet, and _stats.json, when the shard closes). The tar's samples are built, the
    last one read is `truncated_sample` (its later members may be lost), and the parquet is one
    `bad_parquet` reject: its failed downloads are unknown, not a reason to drop the tar."""
    _img2dataset_shard(tmp_path, n=6, failed=2)
    (tmp_path / "00000.parquet").write_bytes(b"")
    (tmp_path / "00000_stats.json").unlink()
    tar = tmp_path / "00000.tar"
    data = tar.read_bytes()
    tar.write_bytes(data[: data.find(b"00000004.jpg")])  # samples 0-3 whole, the end block missing
    items = _read_all(LaionSource("web", str(tmp_path)))
    assert [i.lineage["sample_key"] for i in items if isinstance(i, ImageRecord)] == ["00000000", "00000001",
                                                                                      "00000002"]
    rejects = {i.reason: i for i in items if isinstance(i, Reject)}
    assert sorted(rejects) == ["bad_parquet", "corrupt_archive", "truncated_sample"]
    assert rejects["truncated_sample"].key == "web-00000-00000003"
    assert rejects["bad_parquet"].key == "web-00000" and rejects["bad_parquet"].detail.startswith(
        "00000.parquet cannot be read (ArrowInvalid: ")
    assert rejects["bad_parquet"].detail.endswith("; the shard's failed downloads are unknown")
    assert str(tmp_path) not in rejects["bad_parquet"].detail
    assert LaionSource("web", str(tmp_path)).notices() == []  # the build's resize check passes it by


def _shard_in_three_layouts(root: Path, n: int, failed: int) -> tuple[Path, Path, Path, list[bytes]]:
    """One img2dataset shard as webdataset (`wds/`), `output_format=files` (`files/`) and
    `output_format=parquet` (`pq/`, the images in a `jpg` column) outputs, and its images."""
    wds_dir, files_dir, pq_dir = root / "wds", root / "files", root / "pq"
    for folder in (wds_dir, files_dir, pq_dir):
        folder.mkdir()
    images = _img2dataset_shard(wds_dir, n=n, failed=failed)
    with tarfile.open(wds_dir / "00000.tar") as tar:
        tar.extractall(files_dir / "00000", filter="data")
    for name in ("00000.parquet", "00000_stats.json"):
        (files_dir / name).write_bytes((wds_dir / name).read_bytes())
    rows = pq.read_table(wds_dir / "00000.parquet").to_pylist()
    for row, image in zip(rows, images + [None] * failed):
        row["jpg"] = image
    pq.write_table(pa.Table.from_pylist(rows), pq_dir / "00000.parquet")
    return wds_dir, files_dir, pq_dir, images


def test_damaged_parquet_beside_whole_shards_is_one_reject(tmp_path: Path):
    """A damaged listing next to a whole tar, or a whole `files` folder: every image is built and
    the parquet is one `bad_parquet`; _stats.json still vouches for the count. A damaged
    `output_format=parquet` shard (its images inside) is a `bad_parquet` too, not a failed unit."""
    wds_dir, files_dir, pq_dir, _ = _shard_in_three_layouts(tmp_path, n=5, failed=1)
    for folder in (wds_dir, files_dir):
        listing = folder / "00000.parquet"
        listing.write_bytes(listing.read_bytes()[:-40])  # the footer cut off
    (pq_dir / "00000.parquet").write_bytes(b"PAR1" + bytes(100))
    for folder, fmt, records in ((wds_dir, "webdataset", 5), (files_dir, "files", 5), (pq_dir, "parquet", 0)):
        source = LaionSource("web", str(folder), fmt)
        items = _read_all(source)
        assert sum(isinstance(i, ImageRecord) for i in items) == records, fmt
        assert [(i.key, i.reason) for i in items if isinstance(i, Reject)] == [("web-00000", "bad_parquet")], fmt


def test_gzipped_tar_shards_are_read_beside_plain_ones(tmp_path: Path, monkeypatch, capsys):
    """webdataset reads `.tar.gz` and `.tgz` shards; so does the build, with their parquet
    listings, instead of leaving them out unsaid: `check` counts them, a cut one is a
    `corrupt_archive` with its samples accounted, and a big one is one unit (never split)."""
    import gzip

    import yaml

    import sources.web_units as web_units
    from uvd_pipeline.cli import main

    plain, zipped = tmp_path / "plain", tmp_path / "web"
    plain.mkdir()
    zipped.mkdir()
    _img2dataset_shard(plain, n=4, failed=1)
    (zipped / "00000.tar").write_bytes((plain / "00000.tar").read_bytes())
    for shard, suffix in (("00001", ".tar.gz"), ("00002", ".tgz")):
        (zipped / f"{shard}{suffix}").write_bytes(gzip.compress((plain / "00000.tar").read_bytes()))
        (zipped / f"{shard}.parquet").write_bytes((plain / "00000.parquet").read_bytes())
    cut = zipped / "00002.tgz"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    monkeypatch.setattr(web_units, "TAR_PART_BYTES", 1024)
    source = LaionSource("web", str(zipped))
    assert [(fsio.basename(u.uris[0]), u.parts) for u in source.units() if u.part == 0] == [
        ("00000.tar", 8), ("00001.tar.gz", 1), ("00002.tgz", 1)]
    items = _read_all(source)
    records = Counter(i.lineage["shard"] for i in items if isinstance(i, ImageRecord))
    assert records["00000"] == records["00001"] == 4 and 1 <= records["00002"] < 4
    first = next(i for i in items if isinstance(i, ImageRecord) and i.lineage["shard"] == "00001")
    assert first.key == "web-00001-00000000" and first.lineage["url"] == "http://127.0.0.1/0.jpg"
    assert first.data == next(i.data for i in items if isinstance(i, ImageRecord) and i.key == "web-00000-00000000")
    reasons = Counter((i.key.split("-")[1], i.reason) for i in items if isinstance(i, Reject))
    assert reasons["00001", "failed_to_download"] == reasons["00002", "failed_to_download"] == 1
    assert reasons["00002", "corrupt_archive"] == 1
    assert records["00002"] + reasons["00002", "truncated_sample"] + reasons["00002", "missing_from_archive"] == 4
    config = {"version": 1, "output": str(tmp_path / "out"), "tokenizer": {"enabled": False},
              "sources": [{"name": "web", "type": "laion", "path": str(zipped), "num_shards": 1}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(web_units, "TAR_PART_BYTES", 64 << 20)
    assert main(["check", str(tmp_path / "c.yaml")]) == 0
    assert "source web: 3 input units" in capsys.readouterr().out


def test_files_beside_the_shards_that_are_no_shard_are_rejects(tmp_path: Path):
    """A `.tar.xz` (webdataset and this build read only plain and gzipped tars), a `.zip` and a
    loose JPEG beside img2dataset's shards, and a parquet whose tar is gone, are each an
    `unexpected_file` reject, never a silent skip; a shard's listings (parquet, _stats.json) are
    no inputs of their own, and a Mac's `.DS_Store` is an `os_metadata` reject (it used to vanish)."""
    import zipfile

    images = _img2dataset_shard(tmp_path, n=3, failed=0)
    with tarfile.open(tmp_path / "00001.tar.xz", "w:xz") as archive:  # a real xz tar: not read
        info = tarfile.TarInfo("00010000.jpg")
        info.size = len(images[0])
        archive.addfile(info, io.BytesIO(images[0]))
    with zipfile.ZipFile(tmp_path / "extra.zip", "w") as archive:
        archive.writestr("a.jpg", images[1])
    (tmp_path / "loose.jpg").write_bytes(images[2])
    (tmp_path / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "00005.parquet").write_bytes((tmp_path / "00000.parquet").read_bytes())  # its tar is gone
    items = _read_all(LaionSource("web", str(tmp_path)))
    assert sorted(i.key for i in items if isinstance(i, ImageRecord)) == [f"web-00000-0000{i:04d}" for i in range(3)]
    rejects = {i.key: i for i in items if isinstance(i, Reject)}
    assert {k: r.reason for k, r in rejects.items()} == {
        **{data_key("web", name): "unexpected_file" for name in ("00001.tar.xz", "extra.zip", "loose.jpg", "00005.parquet")},
        data_key("web", ".DS_Store"): "os_metadata"}
    assert all(r.detail.endswith("not read") and r.stage == "read" for r in rejects.values())


def test_parquet_appearing_after_a_build_changes_the_rerun(tmp_path: Path):
    """img2dataset writes a shard's parquet and _stats.json when the shard closes: a build run
    before they are there (or before they are copied) read only the tar. Once they appear, a rerun
    into the same output renders the unit again (the reading looked for them: their absence was
    part of its input) and gives what a fresh build gives: the failed download as a reject, the
    URL in each header."""
    import yaml
    from conftest import shard_digests

    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config

    web = tmp_path / "web"
    web.mkdir()
    _img2dataset_shard(web, n=3, failed=1)
    listing = {name: (web / name).read_bytes() for name in ("00000.parquet", "00000_stats.json")}
    for name in listing:
        (web / name).unlink()

    def build(output: str):
        config = {"version": 1, "output": str(tmp_path / output), "seed": 0, "image": {"size": 32},
                  "split": {"val_fraction": 0.0}, "dedup": {"enabled": False}, "tokenizer": {"enabled": False},
                  "sources": [{"name": "web", "type": "laion", "path": str(web), "num_shards": 1}],
                  "beam": {"runner": "DirectRunner", "direct_num_workers": 1, "direct_running_mode": "in_memory"}}
        (tmp_path / f"{output}.yaml").write_text(yaml.safe_dump(config))
        return run_build(load_config(str(tmp_path / f"{output}.yaml"))).summary

    first = build("out")
    assert first["sources"]["web"]["rejects"] == 0
    for name, data in listing.items():
        (web / name).write_bytes(data)
    rerun = build("out")
    assert rerun["run"]["counters"].get("web.units_rendered") == 1
    assert rerun["sources"]["web"]["rejects_by_reason"] == {"failed_to_download": 1}
    fresh = build("fresh")
    assert rerun["totals"] == fresh["totals"]
    assert shard_digests(tmp_path / "out") == shard_digests(tmp_path / "fresh")
    headers = [json.loads(s["json"]) for s in wds.WebDataset(
        sorted(str(p) for p in (tmp_path / "out" / "rendered").rglob("*.tar")), shardshuffle=False)]
    assert sorted(h["members"][0]["url"] for h in headers) == [f"http://127.0.0.1/{i}.jpg" for i in range(3)]


def test_parquet_without_status_column_lists_successes(tmp_path: Path):
    """A listing without `status` (older img2dataset outputs): each row is a success, once: two
    records and one `missing_from_archive`, never a `failed` reject beside a record."""
    _tar(tmp_path / "00000.tar", [("000000000.jpg", _image(seed=1)), ("000000001.jpg", _image(seed=2))])
    rows = [{"key": f"00000000{i}", "url": f"http://127.0.0.1/{i}.jpg", "caption": f"c{i}"} for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "00000.parquet")
    items = _read_all(LaionSource("web", str(tmp_path)))
    records = [i for i in items if isinstance(i, ImageRecord)]
    assert [r.lineage["url"] for r in records] == ["http://127.0.0.1/0.jpg", "http://127.0.0.1/1.jpg"]
    assert [(i.key, i.reason) for i in items if isinstance(i, Reject)] == [
        ("web-00000-000000002", "missing_from_archive")]


# -- 4. img2dataset metadata, output_format=parquet, resized input -------------------------------
def test_img2dataset_metadata_rides_in_the_lineage(tmp_path: Path):
    images = _img2dataset_shard(tmp_path)
    items = _read_all(LaionSource("web", str(tmp_path)))
    first = next(i for i in items if isinstance(i, ImageRecord))
    meta = first.lineage["img2dataset"]
    assert meta["sha256"] == __import__("hashlib").sha256(images[0]).hexdigest()
    assert json.loads(meta["exif"]) == {"Image Orientation": "Horizontal (normal)"}
    assert (meta["original_width"], meta["original_height"], meta["width"]) == (40, 30, 40)
    assert meta["status"] == "success" and meta["url"] == "http://127.0.0.1/0.jpg"
    assert "license" in meta  # an extra parquet column (--save_additional_columns)
    assert next(i for i in items if isinstance(i, ImageRecord) and i.lineage["sample_key"] == "00000001"
                ).lineage["img2dataset"]["license"] == "cc-by"
    assert "resized_from" not in first.lineage
    assert LaionSource("web", str(tmp_path)).notices() == []


def test_output_format_parquet_is_read(tmp_path: Path):
    webdataset_dir = tmp_path / "wds"
    webdataset_dir.mkdir()
    images = _img2dataset_shard(webdataset_dir)
    table = pq.read_table(webdataset_dir / "00000.parquet")
    rows = table.to_pylist()
    for row, i in zip(rows, range(len(rows))):
        row["jpg"] = images[i] if i < len(images) else None
        row["txt"] = row["caption"] if i < len(images) else None
    parquet_dir = tmp_path / "pq"
    parquet_dir.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), parquet_dir / "00000.parquet", row_group_size=5)
    source = LaionSource("web", str(parquet_dir))
    assert source.resolved_format() == "parquet"
    from_parquet = _read_all(source)
    from_tar = _read_all(LaionSource("web", str(webdataset_dir)))
    records = [i for i in from_parquet if isinstance(i, ImageRecord)]
    assert [r.data for r in records] == images
    assert {i.key: type(i).__name__ for i in from_parquet} == {i.key: type(i).__name__ for i in from_tar}
    assert records[3].lineage["img2dataset"] == next(
        i for i in from_tar if i.key == records[3].key).lineage["img2dataset"]
    assert Counter(i.reason for i in from_parquet if isinstance(i, Reject)) == {"failed_to_download": 2}
    # a whole build opens the shard 3 times: its planning (the layout's detection, its units, its
    # notices: one footer read, `schemas_read_once`), the notices' rows (taken once, the summary is
    # given the build's) and its unit; 11 times before, each a footer fetch from a remote store
    summary, opened = _build_counting_opens(tmp_path, parquet_dir, parquet_dir / "00000.parquet")
    assert summary["sources"]["web"]["rejects_by_reason"] == {"failed_to_download": 2}
    assert summary["sources"]["web"]["sentences"] == len(images) and opened == 3


_OPENS: list[str] | None = None  # the paths opened (Python's `open` audit event) while counting
_HOOKED: list = []  # the audit hook, once added (it stays for the process)


def _count_opens(event: str, args: tuple) -> None:
    if _OPENS is not None and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENS.append(os.fsdecode(args[0]))


def _build_counting_opens(tmp_path: Path, web: Path, counted: Path) -> tuple[dict, int]:
    """(summary, opens of `counted`) of a build of the laion source `web` (no tokens, in process)."""
    import sys

    import yaml

    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config

    global _OPENS
    config = {"version": 1, "output": str(tmp_path / "out"), "seed": 0, "image": {"size": 16},
              "split": {"val_fraction": 0.0}, "dedup": {"enabled": False}, "tokenizer": {"enabled": False},
              "sources": [{"name": "web", "type": "laion", "path": str(web), "num_shards": 1}],
              "beam": {"runner": "DirectRunner", "direct_num_workers": 1, "direct_running_mode": "in_memory"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    loaded = load_config(str(tmp_path / "c.yaml"))
    if _count_opens not in _HOOKED:  # an audit hook stays for the process: added once
        sys.addaudithook(_count_opens)
        _HOOKED.append(_count_opens)
    _OPENS = []
    try:
        summary = run_build(loaded).summary
        return summary, _OPENS.count(str(counted))
    finally:
        _OPENS = None


def test_resized_input_is_detected_and_sized_by_its_original(tmp_path: Path):
    from uvd_pipeline.quality import SIDE_EDGES, ShardQuality, bin_index, input_sizes

    _img2dataset_shard(tmp_path, resized=True)
    source = LaionSource("web", str(tmp_path))
    (notice,) = source.notices()
    assert "img2dataset resized 12 of 12 images in 00000.parquet (e.g. stored 32x32 of 40x30)" in notice
    assert "--resize_mode no --disable_all_reencoding True" in notice
    record = next(i for i in _read_all(source) if isinstance(i, ImageRecord))
    assert record.lineage["resized_from"] == [40, 30]
    member = {"width": 32, "height": 32, **record.lineage}
    assert input_sizes("image", [member], {}) == [(40, 30)]
    # enlarged is judged by the least detail in the chain: on a 31 px canvas the original's 30 px
    # short side is below it, though the renderer scales img2dataset's 32 px copy down; on a 40 px
    # canvas the 32 px copy itself is enlarged (hunt56d: judged by the original alone, it was not)
    for canvas, original in ((31, (40, 30)), (40, (400, 300))):
        quality = ShardQuality(canvas=canvas)
        quality.add("image", "image/caption", [{**member, "resized_from": list(original)}], {}, 1)
        inputs = quality.stats()["inputs"]
        assert (inputs["count"], inputs["below_canvas"], inputs["pixels"]) == (1, 1, original[0] * original[1])
        assert inputs["short_side"][bin_index(original[1], SIDE_EDGES)] == 1
    quality = ShardQuality(canvas=30)
    quality.add("image", "image/caption", [member], {}, 1)
    assert quality.stats()["inputs"]["below_canvas"] == 0


@pytest.mark.parametrize("resized, full_at", [(True, "00000.parquet"), (False, "00000.tar")])
def test_too_many_open_files_judging_a_shard_for_the_warning_is_the_machines_error(tmp_path: Path, monkeypatch,
                                                                                  resized: bool, full_at: str):
    """The build's warning about img2dataset's resized or re-encoded images (in the log and the
    summary) read the shard's parquet, and its tar to tell images kept as downloaded: too many open
    files (EMFILE) there left the resize warning out unsaid, or warned of re-encoding that never
    happened (a kept image taken for unreadable). It is this machine's `MachineError`; with files
    to spare the warning is what the shard says."""
    import errno

    from sources import fsio
    from sources.records import MachineError

    _img2dataset_shard(tmp_path, resized=resized)
    real_open = fsio.open_file

    def open_file(uri, *args, **kwargs):  # the descriptor table full as that file is opened
        if uri.endswith(full_at):
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), uri)
        return real_open(uri, *args, **kwargs)

    with monkeypatch.context() as full:
        full.setattr(fsio, "open_file", open_file)
        with pytest.raises(MachineError, match=rf"reading {full_at}: \[Errno 24\]"):
            LaionSource("web", str(tmp_path)).notices()
    notices = LaionSource("web", str(tmp_path)).notices()
    assert [("img2dataset resized 12 of 12 images" in n) for n in notices] == ([True] if resized else [])


def test_duplicate_rate_leaves_failed_downloads_out():
    from uvd_pipeline.dedup import duplicate_counts

    counts = duplicate_counts({"duplicate_exact": 2, "duplicate_near": 1, "failed_to_download": 10}, 17, 13, 10)
    assert counts == {"exact": 2, "near": 1, "inputs": 20, "rate": 0.15}


# -- a plain folder end to end: every file a sentence or a reject, shards webdataset reads ---------
def test_colliding_folder_builds_into_readable_shards(tmp_path: Path):
    from conftest import build_web_source

    web = tmp_path / "web"
    (web / "sub").mkdir(parents=True)
    for i, name in enumerate(["x.jpg", "sub/x.jpg", "sub-x.jpg"]):
        (web / name).write_bytes(_image(seed=10 + i, size=(48, 40)))
    (web / "x.png").write_bytes(_image("PNG", seed=20, size=(40, 48)))
    (web / "x.avif").write_bytes(_image("AVIF", seed=21, size=(44, 44)))
    (web / "x.heic").write_bytes(_image("HEIF", seed=22, size=(40, 40)))
    (web / "x.svg").write_bytes(SVG)
    os.mkfifo(web / "pipe.jpg")
    summary = build_web_source(tmp_path, "web", web)
    tars = sorted(str(p) for p in (tmp_path / "out" / "rendered").rglob("*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False))
    paths = sorted(json.loads(s["json"])["members"][0]["path"] for s in samples)
    assert paths == ["sub-x.jpg", "sub/x.jpg", "x.avif", "x.heic", "x.jpg", "x.png"]
    assert len({s["__key__"] for s in samples}) == 6
    assert summary["sources"]["web"]["rejects_by_reason"] == {"not_a_file": 1, "unsupported_format": 1}


# -- 5. what operating systems, copies, archives and tools leave -------------------------------
def _junk_rejects(root: Path, entries: list[Path], key) -> dict[str, str]:
    """The reject each left-behind entry must be, by its maker: a tool's hidden file `hidden_file`,
    the rest an operating system's `os_metadata`; `key` names an entry's key from its path."""
    hidden = {".git", ".nfs000000000012345600000001"} | {p.name for p in root.rglob(".~lock.*")} | {
        p.name for p in root.rglob("~$*")}
    return {key(p): "hidden_file" if p.name in hidden else "os_metadata" for p in entries}


def _mess_up(root: Path, name: str) -> list[Path]:
    """Everything a Mac copy and zip, Windows, a Synology NAS and editors leave in `root`."""
    return (os_junk.mac_copy(root) + os_junk.windows(root) + [os_junk.synology(root, name), os_junk.mac_zip(root, name)]
            + os_junk.editors(root, name))


def test_image_folder_counts_what_systems_and_tools_leave_once_and_never_opens_it(tmp_path: Path):
    """A photo folder copied by a Mac (`._x` beside every file, `.DS_Store` in each folder), zipped on
    one (`__MACOSX/`), browsed by Windows (`Thumbs.db`, `desktop.ini`), kept on a Synology NAS
    (`@eaDir/` with real JPEG thumbnails) and edited (`.~lock.x#`, `.nfs...`, `~$x`, `.git/`): the
    two photos and the caption are its data; every other entry is one `os_metadata` or
    `hidden_file` reject (a folder once, never descended), opened by no one. They were image
    records the decoder then called `not_an_image` (the thumbnails and `.git/HEAD` included), and
    `._a.txt` a caption without its image."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    (root / "a.jpg").write_bytes(_image(seed=1))
    (root / "a.txt").write_text("a caption")
    (root / "sub" / "b.png").write_bytes(_image("PNG", seed=2))
    junk = _mess_up(root, "a.jpg")
    with fsio.recording_inputs() as read:
        items = _read_all(LaionSource("web", str(root)))
    records = [i for i in items if isinstance(i, ImageRecord)]
    assert sorted(r.lineage["path"] for r in records) == ["a.jpg", "sub/b.png"]
    assert records[0].lineage["caption"] == "a caption"
    rejects = [i for i in items if isinstance(i, Reject)]
    assert len(items) == 2 + len(junk)  # once each: files in == records + rejects (a.txt rides along)
    assert {r.key: r.reason for r in rejects} == _junk_rejects(
        root, junk, lambda p: path_key("web", p.relative_to(root).as_posix()))
    # a.txt rides along; the listing asks for a Hub card (README.md), absent here: nothing else is opened
    assert read.files == {str(root / "a.txt"), str(root / "README.md")}
    assert next(r.detail for r in rejects if r.key == path_key("web", "sub/._b.png")) == (
        "sub/._b.png: macOS AppleDouble metadata of b.png, not read")


def test_img2dataset_shards_copied_and_tarred_on_a_mac(tmp_path: Path):
    """A webdataset shard re-tarred by macOS's tar (which writes each member's AppleDouble
    `._x.jpg` before it unless COPYFILE_DISABLE is set), copied by a Mac (`._00000.tar` beside the
    shard: once read as a shard of its own, a `corrupt_archive`) with Windows' and editors' files
    and a zip's `__MACOSX/` beside it: the three samples read as before, each AppleDouble member
    is one `os_metadata` reject (they made a sample of key '' and `duplicate_key` rejects), each
    file or folder beside the shard one `os_metadata` or `hidden_file` reject."""
    images = _img2dataset_shard(tmp_path, n=3, failed=0)
    with tarfile.open(tmp_path / "00000.tar") as tar:
        members = [(info.name, tar.extractfile(info).read()) for info in tar]
    _tar(tmp_path / "00000.tar", [m for name, data in members for m in ((f"._{name}", os_junk.APPLEDOUBLE),
                                                                         (name, data))])
    junk = _mess_up(tmp_path, "00000.tar")
    items = _read_all(LaionSource("web", str(tmp_path)))
    records = [i for i in items if isinstance(i, ImageRecord)]
    assert [r.data for r in records] == images
    expected = _junk_rejects(tmp_path, junk, lambda p: data_key("web", p.name))
    expected.update({data_key("web", "00000", f"._{name}"): "os_metadata" for name, _ in members})
    assert {i.key: i.reason for i in items if isinstance(i, Reject)} == expected
    assert len(items) == len(records) + len(expected)


def test_img2dataset_files_and_parquet_layouts_copied_on_a_mac(tmp_path: Path):
    """`output_format=files` and `output_format=parquet` folders after a Mac copy and zip: the
    shard folder's `._00000000.jpg` files are `os_metadata` rejects, not a sample of key '' whose
    image is an AppleDouble file; `__MACOSX/` and `@eaDir/` are no shard folders (a parquet
    download with `__MACOSX/` beside it was taken for the files layout); `._00000.parquet` is no
    parquet shard (a `bad_parquet` before)."""
    _, files_dir, pq_dir, images = _shard_in_three_layouts(tmp_path, n=3, failed=0)
    for folder, fmt in ((files_dir, "files"), (pq_dir, "parquet")):
        junk = os_junk.mac_copy(folder) + [os_junk.mac_zip(folder, "00000"), os_junk.synology(folder, "00000")]
        source = LaionSource("web", str(folder))
        assert source.resolved_format() == fmt
        items = _read_all(source)
        assert [i.read_bytes() for i in items if isinstance(i, ImageRecord)] == images, fmt
        in_shard = lambda p: p.parent.name == "00000" and p.parent.parent == folder  # noqa: E731
        expected = {data_key("web", "00000", p.name) if in_shard(p) else data_key("web", p.name): "os_metadata"
                    for p in junk}
        assert {i.key: i.reason for i in items if isinstance(i, Reject)} == expected, fmt


def test_img2dataset_tfrecord_output_is_refused_by_name(tmp_path: Path):
    """`output_format=tfrecord` writes `NNNNN.tfrecord` beside the listings (img2dataset needs
    TensorFlow for it, so the shard here is hand-made): the source refuses it before the build,
    naming the format and the one to download instead. It was read as a plain image folder: each
    `.tfrecord` and `.parquet` an image the decoder failed, each `_stats.json` a caption without one."""
    _img2dataset_shard(tmp_path)
    (tmp_path / "00000.tar").rename(tmp_path / "00000.tfrecord")
    with pytest.raises(FileNotFoundError, match=r"00000\.tfrecord.*output_format=tfrecord.*--output_format webdataset"):
        LaionSource("web", str(tmp_path)).units()


# -- 3. what cameras and phones put in a folder ---------------------------------------------------
def _camera_tiff(raw_in_ifd0: bool = False, make: str | None = None, byteorder: str = "<") -> bytes:
    """A TIFF-based camera raw as DNG 1.x lays it out (Pentax's, Nikon's, Sony's): IFD0 a small RGB
    preview (NewSubFileType 1, reduced resolution) whose SubIFD holds the sensor's CFA samples
    (PhotometricInterpretation 32803, CFARepeatPatternDim 33421, CFAPattern 33422); or, as some
    DNGs do, the raw in IFD0 itself. `make` None writes DNGVersion (50706), else a Make and no
    DNGVersion (a NEF or an ARW)."""
    import tifffile

    preview = np.zeros((12, 16, 3), np.uint8)
    preview[..., 0] = 200  # a red thumbnail: what Pillow would hand back as the photo
    raw = ((np.arange(48 * 64, dtype=np.uint16) * 7) & 0xFFF).reshape(48, 64)
    ifd0_tags = [(50706, "B", 4, bytes([1, 4, 0, 0]), True)] if make is None else [(271, "s", 0, make, True)]
    cfa = [(33421, "H", 2, (2, 2), True), (33422, "B", 4, bytes([0, 1, 1, 2]), True)]
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf, byteorder=byteorder) as tiff:
        if raw_in_ifd0:
            tiff.write(raw, photometric=32803, extratags=ifd0_tags + cfa)
        else:
            tiff.write(preview, photometric="rgb", subfiletype=1, subifds=1, extratags=ifd0_tags)
            tiff.write(raw, photometric=32803, subfiletype=0, extratags=cfa)
    return buf.getvalue()


def _cr2() -> bytes:
    """A Canon CR2 as its header lays it out: a little-endian TIFF header, then "CR", major version 2,
    minor 0 and IFD3's offset (the raw); IFD0 at 16 is an RGB picture of the camera's (here 16x12
    uncompressed: a readable TIFF to Pillow)."""
    import struct

    width, height = 16, 12
    entries = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 3, 0), (259, 3, 1, 1), (262, 3, 1, 2),
               (271, 2, 4, int.from_bytes(b"Cam\x00", "little")), (273, 4, 1, 0), (277, 3, 1, 3),
               (278, 3, 1, height), (279, 4, 1, width * height * 3)]
    ifd_end = 16 + 2 + 12 * len(entries) + 4
    bits_at, pixels_at = ifd_end, ifd_end + 6
    fixed = {258: bits_at, 273: pixels_at}
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, kind, count) + (struct.pack("<HH", value, 0) if kind == 3 and count == 1 else
                                                 struct.pack("<I", fixed.get(tag, value)))
        for tag, kind, count, value in entries) + struct.pack("<I", 0)
    header = b"II*\x00" + struct.pack("<I", 16) + b"CR\x02\x00" + struct.pack("<I", 0)
    return header + ifd + struct.pack("<HHH", 8, 8, 8) + bytes([200, 0, 0]) * (width * height)


def test_camera_raws_are_rejected_by_name_never_rendered_from_their_preview(tmp_path: Path):
    """Pillow opens a DNG, NEF, ARW or CR2 as a TIFF and hands back IFD0: the camera's small preview
    (the raw sits in a SubIFD or IFD3), which rendered as the photo (a 16x12 red thumbnail scaled up
    into a sentence). A raw is `unsupported_format` naming it, as are the raws whose first bytes
    are their own (CR3's ISO brand, RAF, ORF, RW2)."""
    (tmp_path / "IMG_1.DNG").write_bytes(_camera_tiff())
    (tmp_path / "IMG_2.dng").write_bytes(_camera_tiff(raw_in_ifd0=True, byteorder=">"))
    (tmp_path / "DSC_3.NEF").write_bytes(_camera_tiff(make="NIKON CORPORATION", byteorder=">"))
    (tmp_path / "DSC_4.ARW").write_bytes(_camera_tiff(make="SONY"))
    (tmp_path / "IMG_5.CR2").write_bytes(_cr2())
    (tmp_path / "IMG_6.CR3").write_bytes(b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01crx isom" + bytes(64))
    (tmp_path / "DSCF7.RAF").write_bytes(b"FUJIFILMCCD-RAW 0201FF393101X-T3\x00" + bytes(64))
    (tmp_path / "P8.ORF").write_bytes(b"IIRO\x08\x00\x00\x00" + bytes(64))
    (tmp_path / "P9.RW2").write_bytes(b"IIU\x00\x18\x00\x00\x00" + bytes(64))
    # and one a real DNG writer made (pidng, as picamera2 writes them: tests/fixtures/camera/README.md)
    (tmp_path / "pi.dng").write_bytes((Path(__file__).parent / "fixtures" / "camera" / "pidng_bggr12.dng").read_bytes())
    plain = io.BytesIO()  # an ordinary RGB TIFF still decodes
    Image.new("RGB", (16, 12), (0, 0, 200)).save(plain, "TIFF")
    (tmp_path / "scan.tif").write_bytes(plain.getvalue())
    assert _outcomes(tmp_path) == {
        "IMG_1.DNG": "unsupported_format: DNG (camera raw)",
        "IMG_2.dng": "unsupported_format: DNG (camera raw)",
        "DSC_3.NEF": "unsupported_format: NEF (Nikon camera raw)",
        "DSC_4.ARW": "unsupported_format: ARW (Sony camera raw)",
        "IMG_5.CR2": "unsupported_format: CR2 (Canon camera raw)",
        "IMG_6.CR3": "unsupported_format: CR3 (Canon camera raw)",
        "DSCF7.RAF": "unsupported_format: RAF (Fujifilm camera raw)",
        "P8.ORF": "unsupported_format: ORF (Olympus camera raw)",
        "P9.RW2": "unsupported_format: RW2 (Panasonic camera raw)",
        "pi.dng": "unsupported_format: DNG (camera raw)",
        "scan.tif": "TIFF",
    }


def _pillow_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_phone_and_photo_tool_exports_become_photos_and_counted_sidecars(tmp_path: Path):
    """An Apple Photos export (`IMG_1.HEIC`, its Live Photo `IMG_1.MOV` and edit sidecar `IMG_1.AAE`),
    a Google Takeout (`IMG_2.jpg` with `IMG_2.jpg.json`, `IMG_2.jpg.supplemental-metadata.json` or
    `IMG_2.jpg(1).json` beside it, and `IMG_2-edited.jpg`), Lightroom's and darktable's `.xmp`, an
    Android trash entry, a Samsung motion photo (a JPEG with its MP4 after the end-of-image marker)
    and a camera's MPO: each photo is its primary picture, and each other file one reject saying
    what it is. Takeout's JSON (places, people's names) is never read, never a caption nor
    metadata; it was a `missing_image` reject saying "no image file with this stem" beside its
    image, and an `.xmp` or `.AAE` was opened and decoded as `not_an_image`."""
    (tmp_path / "IMG_1.HEIC").write_bytes(_image("HEIF", seed=1))
    (tmp_path / "IMG_1.MOV").write_bytes(b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  \x00\x00\x00\x08wide"
                                         + bytes(64))
    (tmp_path / "IMG_1.AAE").write_bytes(b'<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict>'
                                         b"<key>adjustmentFormatIdentifier</key><string>com.apple.photo</string>"
                                         b"</dict></plist>\n")
    photo = _image(size=(16, 16), seed=2)
    (tmp_path / "IMG_2.jpg").write_bytes(photo)
    (tmp_path / "IMG_2-edited.jpg").write_bytes(_image(seed=3))
    takeout = json.dumps({"title": "IMG_2.jpg", "description": "at home",
                          "geoData": {"latitude": 48.85, "longitude": 2.35}, "people": [{"name": "Alice"}]})
    for name in ("IMG_2.jpg.json", "IMG_2.jpg.supplemental-metadata.json", "IMG_2.jpg(1).json"):
        (tmp_path / name).write_text(takeout)
    (tmp_path / "IMG_3.xmp").write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"></x:xmpmeta>')
    (tmp_path / "IMG_3.jpg.xmp").write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"></x:xmpmeta>')
    (tmp_path / ".trashed-1767225600-IMG_4.jpg").write_bytes(_image(seed=4))
    motion = _image(size=(16, 16), seed=5)
    (tmp_path / "MVIMG_5.jpg").write_bytes(motion + b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(256))
    frames = [Image.fromarray(np.random.default_rng(s).integers(0, 255, (16, 16, 3), dtype=np.uint8)) for s in (6, 7)]
    mpo = io.BytesIO()
    frames[0].save(mpo, "MPO", save_all=True, append_images=frames[1:])
    (tmp_path / "DSCF6.MPO").write_bytes(mpo.getvalue())
    items = _read_all(LaionSource("web", str(tmp_path)))
    records = {item.lineage["path"]: item for item in items if isinstance(item, ImageRecord)}
    rejects = {item.key: (item.reason, item.detail) for item in items if isinstance(item, Reject)}
    assert sorted(records) == ["DSCF6.MPO", "IMG_1.HEIC", "IMG_1.MOV", "IMG_2-edited.jpg", "IMG_2.jpg", "MVIMG_5.jpg"]
    assert records["IMG_2.jpg"].lineage == {"path": "IMG_2.jpg"}  # no caption, no metadata from Takeout
    with pytest.raises(DecodeError, match="QuickTime"):
        load_image(records["IMG_1.MOV"].read_bytes(), 16, "center_crop")
    for path, primary in (("IMG_2.jpg", photo), ("MVIMG_5.jpg", motion), ("DSCF6.MPO", mpo.getvalue())):
        canvas = load_image(records[path].read_bytes(), 16, "center_crop").pixels.astype(np.int16)
        assert np.abs(canvas - _pillow_rgb(primary)).max() <= 1, path  # Pillow opens an MPO at its first image
    assert np.abs(_pillow_rgb(mpo.getvalue()) - np.asarray(frames[1], dtype=np.int16)).mean() > 20  # not the second
    reasons = {detail.split(":")[0]: (reason, detail) for reason, detail in rejects.values()}
    assert len(rejects) == len(reasons) == 7
    for name in ("IMG_1.AAE", "IMG_2.jpg.json", "IMG_2.jpg.supplemental-metadata.json", "IMG_2.jpg(1).json",
                 "IMG_3.xmp", "IMG_3.jpg.xmp"):
        assert reasons[name][0] == "metadata_sidecar", name
    assert "Google Takeout" in reasons["IMG_2.jpg.json"][1] and "IMG_2.jpg" in reasons["IMG_2.jpg(1).json"][1]
    assert reasons[".trashed-1767225600-IMG_4.jpg"] == (
        "os_metadata", ".trashed-1767225600-IMG_4.jpg: Android's trash (a deleted file kept for 30 days), not read")


def test_a_webdataset_shard_writer_dataset_reads_as_webdataset_itself_reads_it(tmp_path: Path):
    """Shards written by `webdataset.ShardWriter` (no img2dataset listing beside them), with a
    class label per sample (`.cls`), keys in subfolders (`./a/b/c`, `sub/dir/s3`) and a key with a
    dot (`x.0001`: webdataset's key `x`, its members `0001.jpg`, `0001.cls`). Each `.cls` was an
    `unexpected_file` reject beside every built image (and its label lost); the dotted key's
    `.0001.cls` was decoded as its picture (`not_an_image`) and its `.0001.jpg` rejected unread."""
    out = tmp_path / "shards"
    out.mkdir()
    keys = ["s0", "s1", "./a/b/c", "sub/dir/s3", "s4", "x.0001"]
    with wds.ShardWriter(str(out / "train-%06d.tar"), maxcount=4, verbose=0) as sink:
        for i, key in enumerate(keys):
            sink.write({"__key__": key, "jpg": _image(seed=i), "cls": i % 3, "json": {"i": i}, "txt": f"caption {i}"})
    tars = sorted(str(p) for p in out.glob("*.tar"))
    assert [Path(t).name for t in tars] == ["train-000000.tar", "train-000001.tar"]
    # webdataset keeps a leading `./` in `__key__`; the key is the name as extracting gives it (`a/b/c`)
    theirs = {(Path(s["__url__"]).stem, s["__key__"].removeprefix("./")): s
              for s in wds.WebDataset(tars, shardshuffle=False)}
    items = _read_all(LaionSource("web", str(out)))
    records = {(r.lineage["shard"], r.lineage["sample_key"]): r for r in items if isinstance(r, ImageRecord)}
    rejects = [(r.reason, r.detail) for r in items if isinstance(r, Reject)]
    assert sorted(records) == sorted(theirs) == sorted(
        [("train-000000", k) for k in ("s0", "s1", "a/b/c", "sub/dir/s3")] + [("train-000001", k) for k in ("s4", "x")])
    for at, sample in theirs.items():
        fields = {name.rsplit(".", 1)[-1]: value for name, value in sample.items() if not name.startswith("__")}
        assert records[at].data == fields["jpg"], at
        if at[1] != "x":  # a dotted key's caption and label are webdataset's `0001.txt`, `0001.cls`
            assert records[at].lineage["caption"] == fields["txt"].decode()
            assert records[at].lineage["classes"] == {"cls": int(fields["cls"])}
    assert rejects == [("unexpected_file", f"x.0001.{ext}: not read (a sample's image, .txt and .json are)")
                       for ext in ("cls", "json", "txt")]


def test_a_gnu_tar_of_nested_folders_and_dotted_names_keys_as_webdataset_does(tmp_path: Path):
    """A shard packed by GNU tar from a folder tree: folder entries (`a/`, `a/b/`), a key in
    nested folders (`a/b/c`), a folder with a dot in its name (`e.f/g.jpg`: webdataset's key
    `e.f/g`, cut at the first dot of the file's name only), a name with several dots
    (`photo.v2.final.jpg`: key `photo`). Each image is built under webdataset 1.0.2's own
    `__key__`, with the caption and label webdataset gives that sample; nothing else is read."""
    import subprocess

    tree = tmp_path / "tree"
    members = {"a/b/c.jpg": _image(seed=1), "a/b/c.cls": b"3", "a/b/c.json": b'{"x": 1}', "a/d.jpg": _image(seed=2),
               "a/d.txt": b"cap d", "photo.v2.final.jpg": _image(seed=3), "e.f/g.jpg": _image(seed=4),
               "e.f/g.txt": b"cap g"}
    for name, data in members.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    (tmp_path / "shards").mkdir()
    tar = tmp_path / "shards" / "00000.tar"
    subprocess.run(["tar", "-cf", str(tar), "-C", str(tree), "a", "photo.v2.final.jpg", "e.f"], check=True)
    assert "a/b/\n" in subprocess.run(["tar", "-tf", str(tar)], capture_output=True, text=True, check=True).stdout
    theirs = {s["__key__"]: s for s in wds.WebDataset([str(tar)], shardshuffle=False)}
    assert sorted(theirs) == ["a/b/c", "a/d", "e.f/g", "photo"]
    items = _read_all(LaionSource("web", str(tmp_path / "shards")))
    assert [i for i in items if isinstance(i, Reject)] == []
    records = {r.lineage["sample_key"]: r for r in items}
    assert sorted(records) == sorted(theirs)
    for key, sample in theirs.items():
        image = next(v for k, v in sample.items() if k.endswith("jpg"))
        assert records[key].data == image, key
        assert records[key].lineage.get("caption") == (sample["txt"].decode() if "txt" in sample else None), key
    assert records["a/b/c"].lineage["classes"] == {"cls": int(theirs["a/b/c"]["cls"])}


def test_every_image_of_a_multi_image_sample_is_read_under_a_key_of_its_own(tmp_path: Path, monkeypatch):
    """Samples of several images as webdataset's users write them: an interleaved document (MMC4- or
    OBELICS-style: `doc.0.jpg`, `doc.1.png`, `doc.2.jpg` and its `doc.json`), a stereo pair
    (`pair.left.png`, `pair.right.png`). Each image but the first was a `duplicate_key` reject: a
    document's pictures were lost. Each is now an image of its own, keyed by its member's name,
    its sample's group (one split), its sample's caption and json; as webdataset reads them, in a
    whole tar, in parts and extracted by GNU tar as a files-layout folder. Twins without a second
    extension (`x.jpg` beside `x.png`) stay one image and a `duplicate_key`."""
    import subprocess

    from sources import web_units

    shards = tmp_path / "shards"
    shards.mkdir()
    samples = [{"__key__": "doc", "0.jpg": _image(seed=1), "1.png": _image("PNG", seed=2), "2.jpg": _image(seed=3),
                "json": {"texts": ["intro", None, "middle", None]}, "txt": "a page"},
               {"__key__": "pair", "left.png": _image("PNG", seed=4), "right.png": _image("PNG", seed=5)},
               {"__key__": "x", "jpg": _image(seed=6), "png": _image("PNG", seed=7), "txt": "twins"}]
    samples += [{"__key__": f"pad{i}", "jpg": _image(size=(64, 64), seed=10 + i)} for i in range(6)]
    with wds.TarWriter(str(shards / "00000.tar")) as sink:
        for sample in samples:
            sink.write(sample)
    theirs = {(s["__key__"], name): value for s in wds.WebDataset(str(shards / "00000.tar"), shardshuffle=False)
              for name, value in s.items() if name.rsplit(".", 1)[-1] in ("jpg", "png")}
    assert len(theirs) == 3 + 2 + 2 + 6

    def read(layout: str = "webdataset") -> tuple[dict, list]:
        items = _read_all(LaionSource("web", str(shards), layout))
        records = {(r.lineage["sample_key"], r.lineage["file_ext"]): r for r in items if isinstance(r, ImageRecord)}
        return records, sorted((r.key, r.reason, r.input) for r in items if isinstance(r, Reject))

    records, rejects = read()
    assert len(records) == 12 and sorted(records) == sorted(k for k in theirs if k != ("x", "png"))
    assert all(records[k].data == theirs[k] for k in records)
    assert rejects == [("web-00000-x", "duplicate_key", "00000.tar:x.png")]
    doc = [records["doc", ext] for ext in ("0.jpg", "1.png", "2.jpg")]
    assert len({r.key for r in doc}) == 3 and {r.group for r in doc} == {data_key("web", "00000", "doc")}
    assert {records["pair", "left.png"].group} == {records["pair", "right.png"].group} != {doc[0].group}
    assert all(r.lineage["caption"] == "a page" and r.lineage["img2dataset"]["texts"][2] == "middle" for r in doc)
    assert records["x", "jpg"].key == data_key("web", "00000", "x")  # one image: its sample's key, as before
    again, _ = read()
    assert {k: r.key for k, r in again.items()} == {k: r.key for k, r in records.items()}

    monkeypatch.setattr(web_units, "TAR_PART_BYTES", (shards / "00000.tar").stat().st_size // 4)
    source = LaionSource("web", str(shards), "webdataset")
    assert len(source.units()) >= 3
    parts = [i for unit in source.units() for i in source.read(unit)]
    assert sorted(r.key for r in parts if isinstance(r, ImageRecord)) == sorted(r.key for r in records.values())
    assert sorted((r.key, r.reason, r.input) for r in parts if isinstance(r, Reject)) == rejects

    (shards / "00000.tar").rename(tmp_path / "00000.tar")
    (shards / "00000").mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "00000.tar"), "-C", str(shards / "00000")], check=True)
    files, rejected = read("files")
    assert {k: (r.key, r.group) for k, r in files.items()} == {k: (r.key, r.group) for k, r in records.items()}
    assert [(key, reason) for key, reason, _ in rejected] == [("web-00000-x", "duplicate_key")]


class _RemoteTar:
    """The local disk read as a remote store (fsspec's buffered file, as HTTP's and S3's: a 5 MiB
    read-ahead cache), its fetched bytes counted."""

    fetched: list[int] = []

    @classmethod
    def register(cls) -> None:
        import fsspec
        from fsspec.implementations.local import LocalFileSystem
        from fsspec.spec import AbstractBufferedFile

        class File(AbstractBufferedFile):
            def _fetch_range(self, start: int, end: int) -> bytes:
                with open(self.path, "rb") as handle:
                    handle.seek(start)
                    data = handle.read(end - start)
                cls.fetched.append(len(data))
                return data

        class FileSystem(LocalFileSystem):
            protocol = "uvdremotetar"

            def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
                path = self._strip_protocol(path)
                return File(self, path, mode, block_size=block_size or "default", cache_options=cache_options,
                            size=os.path.getsize(path), **kwargs)

        fsspec.register_implementation("uvdremotetar", FileSystem, clobber=True)


def test_a_remote_tar_is_fetched_once_and_read_as_the_local_one(tmp_path: Path):
    """A webdataset shard on a remote store was fetched whole twice (2.00x of an img2dataset
    shard): its scan's header reads went through fsspec's read-ahead, then its read fetched it
    again. It is copied once into a temporary file now (`tar_members.spooled_copy`) and its items
    are those of the local file, a cut one's rejects too."""
    _RemoteTar.register()
    shards = tmp_path / "shards"
    shards.mkdir()
    with wds.TarWriter(str(shards / "00000.tar")) as sink:
        for i in range(40):
            sink.write({"__key__": f"{i:05d}", "jpg": _image(size=(200, 150), seed=i), "txt": f"caption {i}"})
    tar = shards / "00000.tar"

    def both() -> tuple[list[str], list[str]]:
        _RemoteTar.fetched = []
        remote = [repr(i) for i in _read_all(LaionSource("web", f"uvdremotetar://{shards}", "webdataset"))]
        return remote, [repr(i) for i in _read_all(LaionSource("web", str(shards), "webdataset"))]

    remote, local = both()
    assert remote == local and sum("ImageRecord" in r for r in remote) == 40
    assert sum(_RemoteTar.fetched) <= 1.05 * tar.stat().st_size, (sum(_RemoteTar.fetched), tar.stat().st_size)
    data = tar.read_bytes()
    tar.write_bytes(data[: data.find(b"00031.jpg") + tarfile.BLOCKSIZE + 300])  # cut inside a member
    remote, local = both()
    assert remote == local and "truncated_sample" in " ".join(remote) and "corrupt_archive" in " ".join(remote)


def test_a_multi_image_samples_hash_mismatches_are_kept_when_its_tar_is_read_in_parts(tmp_path: Path, monkeypatch):
    """A document's images each checked against the sha256 its `.json` records (img2dataset with
    --disable_all_reencoding): each other image is a `hash_mismatch`, keyed by its own key. Read
    in parts (a big tar), those rejects were lost: a part keeps what its sample's group owns, and
    they carried their own key as their group. Now each carries its sample's group, as its images
    do: the parts yield what the whole tar yields, rejects too."""
    import hashlib

    from sources import web_units

    shards = tmp_path / "shards"
    shards.mkdir()
    with wds.TarWriter(str(shards / "00000.tar")) as sink:
        for d in range(24):
            images = {f"{i}.jpg": _image(size=(64, 48), seed=d * 10 + i) for i in range(3)}
            sink.write({"__key__": f"doc{d:03d}", **images,
                        "json": {"width": None, "sha256": hashlib.sha256(images["0.jpg"]).hexdigest()}})

    def read() -> tuple[list, list]:
        items = _read_all(LaionSource("web", str(shards), "webdataset"))
        return (sorted((r.key, r.group) for r in items if isinstance(r, ImageRecord)),
                sorted((r.key, r.group, r.reason, r.input) for r in items if isinstance(r, Reject)))

    records, rejects = read()
    assert len(records) == 24 and len(rejects) == 48 and {r[2] for r in rejects} == {"hash_mismatch"}
    assert {group for _, group, _, _ in rejects} == {group for _, group in records}  # each its sample's group
    monkeypatch.setattr(web_units, "TAR_PART_BYTES", (shards / "00000.tar").stat().st_size // 4)
    assert len(LaionSource("web", str(shards), "webdataset").units()) >= 3
    assert read() == (records, rejects)


def test_a_documents_large_json_is_capped_in_each_of_its_images_lineage(tmp_path: Path):
    """An interleaved document's `.json` (MMC4- or OBELICS-style: its whole text, its similarity
    matrix) rode whole in the lineage of each of its images: 500 images of a 550 KiB json held
    269 MiB of lineage. Each value past `LINEAGE_VALUE_BYTES` is now left out, marked `truncated`,
    as a parquet row's and an ImageFolder row's are; small values stay."""
    from sources.lineage_text import LINEAGE_VALUE_BYTES

    shards = tmp_path / "shards"
    shards.mkdir()
    texts = [("lorem ipsum dolor sit amet " * 40) if i % 2 else None for i in range(200)]
    doc = {"__key__": "doc", **{f"{i}.jpg": _image(seed=i) for i in range(20)},
           "json": {"texts": texts, "url": "http://x/doc", "similarity_matrix": [[0.1] * 8] * 20}, "txt": "a page"}
    with wds.TarWriter(str(shards / "00000.tar")) as sink:
        sink.write(doc)
    records = [i for i in _read_all(LaionSource("web", str(shards), "webdataset")) if isinstance(i, ImageRecord)]
    assert len(records) == 20
    for record in records:
        recorded = record.lineage["img2dataset"]
        assert recorded["texts"] == {"truncated": f"a list of 200 items, over the {LINEAGE_VALUE_BYTES} byte "
                                                  "budget of a lineage value: left out"}
        assert recorded["similarity_matrix"] == [[0.1] * 8] * 20 and recorded["url"] == "http://x/doc"
        assert (record.lineage["url"], record.lineage["caption"]) == ("http://x/doc", "a page")
        assert len(json.dumps(record.lineage)) < 2 * LINEAGE_VALUE_BYTES


def test_a_files_shard_extracted_with_subfolders_reads_every_image_as_its_tar_does(tmp_path: Path):
    """A webdataset tar whose keys hold a folder (`sub/b`, `v1.2/pair`), extracted by GNU tar into
    an `output_format=files` shard folder: the images in its subfolders were dropped without a
    reject (the folder was listed one level deep). It is walked below now, each file keyed by its
    path in the folder as the tar's member is, so the folder reads as the tar does; a set-aside
    subfolder (a Mac's `__MACOSX/`) is one counted reject."""
    import subprocess

    shards = tmp_path / "shards"
    shards.mkdir()
    with wds.TarWriter(str(shards / "00000.tar")) as sink:
        for index, key in enumerate(("a", "sub/b", "sub/c", "v1.2/pair", "sub/deep/d")):
            sink.write({"__key__": key, "jpg": _image(seed=index), "txt": f"caption {key}"})

    def read(layout: str) -> tuple[dict, list]:
        items = _read_all(LaionSource("web", str(shards), layout))
        records = {r.key: (r.lineage["sample_key"], r.lineage.get("caption"), r.data or Path(r.uri).read_bytes())
                   for r in items if isinstance(r, ImageRecord)}
        return records, sorted((r.reason, r.input) for r in items if isinstance(r, Reject))

    whole, none = read("webdataset")
    assert len(whole) == 5 and none == []
    (shards / "00000.tar").rename(tmp_path / "00000.tar")
    (shards / "00000").mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "00000.tar"), "-C", str(shards / "00000")], check=True)
    (shards / "00000" / "__MACOSX" / "sub").mkdir(parents=True)
    (shards / "00000" / "__MACOSX" / "sub" / "._b.jpg").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    files, rejects = read("files")
    assert files == whole
    assert [reason for reason, _ in rejects] == ["os_metadata"] and rejects[0][1].startswith("00000/__MACOSX")


def test_a_remote_plain_tar_padded_with_zeros_reads_as_the_local_one(tmp_path: Path):
    """A plain tar followed by 70 MB of zeros (padded to a fixed size, as `tar -b` with a big
    record does) is read from its local copy (`spooled_copy`) when remote: that copy is the file's
    bytes, judged as a plain tar, never as a gzipped tar's inflated copy, whose tail past the
    end is judged within a budget (`Layout.copied`): the same items as the local file."""
    import fsspec

    shards = tmp_path / "shards"
    shards.mkdir()
    with wds.TarWriter(str(shards / "00000.tar")) as sink:
        for i in range(5):
            sink.write({"__key__": f"{i:05d}", "jpg": _image(seed=i)})
    with open(shards / "00000.tar", "ab") as handle:
        handle.write(bytes(70 << 20))
    memory = fsspec.filesystem("memory")
    memory.pipe("/padded47/shards/00000.tar", (shards / "00000.tar").read_bytes())

    def items(root: str) -> list[tuple]:  # a local tar this big is read in parts: in another order
        return sorted((type(i).__name__, i.key, getattr(i, "reason", ""), getattr(i, "data", b""))
                      for i in _read_all(LaionSource("web", root, "webdataset")))

    try:
        remote = items("memory://padded47/shards")
    finally:
        memory.rm("/padded47", recursive=True)
    local = items(str(shards))
    assert [i[:2] for i in local] == [("ImageRecord", f"web-00000-{i:05d}") for i in range(5)]
    assert remote == local


def test_a_sample_whose_members_pass_the_sample_budget_is_one_reject_its_bytes_let_go(tmp_path: Path, monkeypatch):
    """A sample is held whole until its last member (its `.json` may come last, and each image's
    lineage and hash check take it): an interleaved document of 2,000 images of 250 KB peaked at
    544 MiB, no budget judged. Each member's size is now judged on its header, before it is read,
    against `MAX_SAMPLE_BYTES` for its sample: past it, the sample is one `sample_too_large` reject
    naming the fix, what it held let go, its later members unread; the samples around it are read,
    whole or in parts."""
    from sources import img2dataset_reader, web_units

    monkeypatch.setattr(img2dataset_reader, "MAX_SAMPLE_BYTES", 40_000, raising=False)
    shards = tmp_path / "shards"
    shards.mkdir()
    with wds.TarWriter(str(shards / "00000.tar")) as sink:
        sink.write({"__key__": "before", "0.jpg": _image(seed=1), "1.jpg": _image(seed=2)})
        sink.write({"__key__": "book", **{f"{i:03d}.jpg": _image(size=(96, 96), seed=10 + i) + bytes(4000)
                                          for i in range(12)}, "json": {"url": "http://x/book"}})
        sink.write({"__key__": "after", "jpg": _image(seed=3), "txt": "after"})

    def read() -> tuple[list, list]:
        items = _read_all(LaionSource("web", str(shards), "webdataset"))
        return (sorted(r.lineage["sample_key"] + "." + r.lineage["file_ext"] for r in items
                       if isinstance(r, ImageRecord)),
                sorted((r.key, r.reason, r.input, r.detail) for r in items if isinstance(r, Reject)))

    records, rejects = read()
    assert records == ["after.jpg", "before.0.jpg", "before.1.jpg"]
    [(key, reason, where, detail)] = rejects
    assert (key, reason) == (data_key("web", "00000", "book"), "sample_too_large")
    assert where.startswith("00000.tar:book.") and "40000 byte budget" in detail and "samples of their own" in detail
    monkeypatch.setattr(web_units, "TAR_PART_BYTES", (shards / "00000.tar").stat().st_size // 3)
    assert len(LaionSource("web", str(shards), "webdataset").units()) >= 2
    assert read() == (records, rejects)


def test_a_cover_beside_its_pages_is_read_with_them_as_webdataset_reads_them(tmp_path: Path):
    """A sample of a cover and its pages (`mix.jpg`, `mix.0.jpg`, `mix.1.jpg`): webdataset reads all
    three (fields `jpg`, `0.jpg`, `1.jpg`), where the pages were `duplicate_key` rejects. The cover
    keeps its sample's key (as a sample's one image does), each page is keyed by its member's name,
    all in the sample's group; a twin of the cover (`mix2.png` beside `mix2.jpg`) stays a
    `duplicate_key`. In a tar and extracted by GNU tar alike."""
    import subprocess

    shards = tmp_path / "shards"
    shards.mkdir()
    samples = [{"__key__": "mix", "jpg": _image(seed=1), "0.jpg": _image(seed=2), "1.jpg": _image(seed=3),
                "txt": "a cover"},
               {"__key__": "mix2", "jpg": _image(seed=4), "png": _image("PNG", seed=5), "0.jpg": _image(seed=6)}]
    with wds.TarWriter(str(shards / "00000.tar")) as sink:
        for sample in samples:
            sink.write(sample)
    theirs = {(s["__key__"], name) for s in wds.WebDataset(str(shards / "00000.tar"), shardshuffle=False)
              for name in s if name.rsplit(".", 1)[-1] in ("jpg", "png")}

    def read(layout: str) -> tuple[dict, list]:
        items = _read_all(LaionSource("web", str(shards), layout))
        return ({(r.lineage["sample_key"], r.lineage["file_ext"]): (r.key, r.group) for r in items
                 if isinstance(r, ImageRecord)}, sorted((r.key, r.reason) for r in items if isinstance(r, Reject)))

    records, rejects = read("webdataset")
    assert sorted(records) == sorted(theirs - {("mix2", "png")})
    assert records["mix", "jpg"] == (data_key("web", "00000", "mix"),) * 2
    assert records["mix", "0.jpg"][1] == records["mix", "1.jpg"][1] == data_key("web", "00000", "mix")
    assert len({key for key, _ in records.values()}) == 5
    assert rejects == [(data_key("web", "00000", "mix2"), "duplicate_key")]
    (shards / "00000.tar").rename(tmp_path / "00000.tar")
    (shards / "00000").mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "00000.tar"), "-C", str(shards / "00000")], check=True)
    assert read("files") == (records, rejects)


def test_a_remote_roots_items_name_their_input_as_a_local_roots_do(tmp_path: Path):
    """Records and rejects name their input below the source's root (`paths.relative_to_root`), so
    that they never publish where the data lies: on `memory://r/shards` (fsspec lists
    `memory:///r/...`, one more slash than the root was given with) they named the whole URL,
    `memory:///r/shards/00000.tar:00001.jpg`, where a local root gives `00000.tar:00001.jpg`."""
    import fsspec

    shards = tmp_path / "shards"
    shards.mkdir()
    with wds.TarWriter(str(shards / "00000.tar")) as sink:
        sink.write({"__key__": "00000", "jpg": _image(seed=1)})
        sink.write({"__key__": "00001", "jpg": _image(seed=2), "png": _image("PNG", seed=3)})  # duplicate_key
    memory = fsspec.filesystem("memory")
    memory.pipe("/inputs47/shards/00000.tar", (shards / "00000.tar").read_bytes())

    def inputs(root: str) -> list[tuple[str, str, str]]:
        return sorted((type(i).__name__, i.key, i.input) for i in _read_all(LaionSource("web", root, "webdataset")))

    try:
        remote = inputs("memory://inputs47/shards")
    finally:
        memory.rm("/inputs47", recursive=True)
    local = inputs(str(shards))
    assert {kind for kind, _, _ in local} == {"ImageRecord", "Reject"}
    assert all(where.startswith("00000.tar:") for _, _, where in local), local
    assert remote == local


def test_a_files_shards_link_to_a_folder_above_it_is_a_link_loop_when_links_are_followed(tmp_path: Path):
    """A files shard is walked below (`output_format=files` extracted with its subfolders); with
    `follow_links: true` a link in it to a folder above the shard (`up -> ..`, the source root) was
    followed, since the walk knew only the folders it had walked from the shard: the other shards
    were read again under new keys and a folder became an image record (the final reader's proof).
    Such a link is now one `link_loop` reject, as its path check names it; the rest reads as
    without it, links followed or not."""
    shards = tmp_path / "shards"
    for index in range(2):
        shard = shards / f"{index:05d}"
        shard.mkdir(parents=True)
        for k in range(2):
            (shard / f"{index:05d}{k:04d}.jpg").write_bytes(_image(seed=10 * index + k))
    plain = {follow: _read_all(LaionSource("web", str(shards), "files", follow_links=follow)) for follow in (False, True)}
    (shards / "00000" / "up").symlink_to("..")
    for follow in (False, True):
        items = _read_all(LaionSource("web", str(shards), "files", follow_links=follow))
        records = sorted((r.key, r.uri) for r in items if isinstance(r, ImageRecord))
        assert records == sorted((r.key, r.uri) for r in plain[follow] if isinstance(r, ImageRecord))
        assert len(records) == 4, records
        assert [(r.reason, r.input) for r in items if isinstance(r, Reject)] == [("link_loop", "00000/up")], follow


def test_hard_links_past_the_names_a_tar_may_link_to_are_rejects_not_held(tmp_path: Path, monkeypatch):
    """The names hard links link to are held for the whole read (`tar_members.MAX_LINK_TARGETS`):
    past the cap (here 1) a link is a `not_a_file` reject saying so, and the links within it read."""
    from sources import tar_members

    monkeypatch.setattr(tar_members, "MAX_LINK_TARGETS", 1)
    links = []
    for target in ("a.jpg", "b.jpg"):
        link = tarfile.TarInfo()
        link.type, link.linkname = tarfile.LNKTYPE, target
        links.append(link)
    _tar(tmp_path / "00000.tar", [("a.jpg", _image(seed=1)), ("b.jpg", _image(seed=2)), ("la.jpg", links[0]),
                                  ("lb.jpg", links[1])])
    items = _read_all(LaionSource("web", str(tmp_path), "webdataset"))
    assert {i.key: i.data for i in items if isinstance(i, ImageRecord)} == {
        "web-00000-a": _image(seed=1), "web-00000-b": _image(seed=2), "web-00000-la": _image(seed=1)}
    assert [(i.key, i.reason, i.detail) for i in items if isinstance(i, Reject)] == [
        ("web-00000-lb", "not_a_file", "lb.jpg: tar member of type hard link to b.jpg (over the 1 names links of one "
                                       "archive may link to)")]
