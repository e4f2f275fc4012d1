"""The web-image source on img2dataset layouts (webdataset, parquet + files) and plain folders."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sources.laion import LaionSource, detect_format
from sources.records import ImageRecord, Reject
from transforms.decode import DecodeError, load_image
from uvd_pipeline.sample import web

# what each broken entry of the corpus generator decodes to
DECODE_REASONS = {"zero_byte": "empty_file", "not_an_image": "not_an_image", "truncated_jpeg": "truncated",
                  "corrupt_header": "corrupt_header", "decompression_bomb": "decompression_bomb"}


def _read_all(source: LaionSource):
    return [item for unit in source.units() for item in source.read(unit)]


def test_webdataset_layout_records_and_rejects(sample_corpus: Path):
    source = LaionSource("web", str(sample_corpus / "laion"))
    assert detect_format(source.path) == "webdataset"
    items = _read_all(source)
    records = [i for i in items if isinstance(i, ImageRecord)]
    rejects = [i for i in items if isinstance(i, Reject)]
    caption_only = sum(kind == "caption_only" for kind in web.BROKEN.values())
    assert len(records) == web.SHARDS * web.SAMPLES_PER_SHARD - caption_only  # entries with no image member
    assert Counter(r.reason for r in rejects) == {"failed_to_download": web.SHARDS * web.FAILED_DOWNLOADS_PER_SHARD,
                                                  "missing_image": caption_only}
    assert len({r.key for r in records}) == len(records)
    assert all("." not in r.key for r in records)
    first = next(r for r in records if r.lineage["sample_key"] == "000000000")
    assert first.lineage["caption"].startswith("a photo of astronaut")
    assert first.lineage["url"] == "http://sample.invalid/uvd-laion/000000000.jpg"
    # what the tar holds decodes or fails with the reasons the corpus planted
    reasons = Counter()
    for r in records:
        try:
            load_image(r.data, 32, "center_crop")
        except DecodeError as exc:
            reasons[exc.reason] += 1
    assert reasons == Counter(DECODE_REASONS[kind] for kind in web.BROKEN.values() if kind != "caption_only")


def test_truncated_tar_keeps_earlier_samples(sample_corpus: Path, tmp_path: Path):
    data = (sample_corpus / "laion" / "00000.tar").read_bytes()
    (tmp_path / "00000.tar").write_bytes(data[: len(data) // 3])
    items = _read_all(LaionSource("web", str(tmp_path), "webdataset"))
    records = [i for i in items if isinstance(i, ImageRecord)]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert 5 < len(records) < 72
    assert "corrupt_archive" in {r.reason for r in rejects}


def test_files_layout_matches_webdataset(sample_corpus: Path, tmp_path: Path):
    """img2dataset output_format=files: NNNNN/{key}.jpg|txt|json plus NNNNN.parquet."""
    shard = tmp_path / "00002"
    shard.mkdir()
    with tarfile.open(sample_corpus / "laion" / "00002.tar") as tar:
        tar.extractall(shard, filter="data")
    shutil.copy(sample_corpus / "laion" / "00002.parquet", tmp_path)
    files = LaionSource("web", str(tmp_path))
    assert detect_format(files.path) == "files"
    tars = LaionSource("web", str(sample_corpus / "laion"))
    from_tar = {i.key: i for u in tars.units() if u.uris[0].endswith("00002.tar") for i in tars.read(u)}
    from_files = {i.key: i for i in _read_all(files)}
    assert from_files.keys() == from_tar.keys()
    for key, item in from_files.items():
        if isinstance(item, ImageRecord):
            assert item.read_bytes() == from_tar[key].data
            assert item.lineage["caption"] == from_tar[key].lineage["caption"]


def test_plain_folder_with_captions(tmp_path: Path, sample_corpus: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    jpg = sample_corpus / "imagenet" / "train" / "n04266014"
    first, second = sorted(jpg.iterdir())[:2]
    shutil.copy(first, tmp_path / "a" / "one.jpg")
    shutil.copy(second, tmp_path / "a" / "b" / "two.v2.jpeg")
    (tmp_path / "a" / "one.txt").write_text("a rocket on its pad\n")
    items = _read_all(LaionSource("folder_src", str(tmp_path)))
    assert [i.lineage["path"] for i in items] == ["a/b/two.v2.jpeg", "a/one.jpg"]
    assert items[1].lineage["caption"] == "a rocket on its pad"
    assert all("." not in i.key for i in items)


def test_missing_folder_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no images"):
        LaionSource("web", str(tmp_path), "folder").units()


def test_parquet_failures_are_counted(sample_corpus: Path):
    import pyarrow.parquet as pq

    table = pq.read_table(sample_corpus / "laion" / "00000.parquet")
    assert table.column_names[:4] == ["url", "caption", "key", "status"]
    stats = json.loads((sample_corpus / "laion" / "00000_stats.json").read_text())
    assert stats["count"] == table.num_rows and stats["failed_to_download"] == 2


@pytest.mark.parametrize("cut, gzipped", [(None, False), (3, False), (2, False), (None, True), (2, True)])
def test_parts_of_a_big_tar_yield_exactly_what_the_whole_tar_does(sample_corpus: Path, tmp_path: Path, monkeypatch,
                                                                  cut, gzipped):
    """A local tar over `TAR_PART_BYTES` is read as parts (so a few big tars spread over the
    workers): together they yield the same items, rejects of a cut tar included, each once. A `.tar`
    that is gzip-compressed (streamed: each part would inflate all of it), whole or cut, is one unit."""
    import gzip

    import sources.laion as laion
    import sources.web_units as web_units

    for name in ("00000.tar", "00000.parquet", "00000_stats.json", "00002.tar", "00002.parquet"):
        data = (sample_corpus / "laion" / name).read_bytes()
        if gzipped and name == "00000.tar":
            data = gzip.compress(data, mtime=0)
        (tmp_path / name).write_bytes(data[: len(data) // cut] if cut and name == "00000.tar" else data)
    source = LaionSource("web", str(tmp_path), "webdataset")
    whole = _read_all(source)
    assert [u.parts for u in source.units()] == [1, 1]
    monkeypatch.setattr(web_units, "TAR_PART_BYTES", 1 << 18)
    units = source.units()
    assert len(units) > 4 and all(u.parts > 1 for u in units if not gzipped or u.uris[0].endswith("00002.tar"))
    first = [u.parts for u in units if u.uris[0].endswith("00000.tar")]
    assert first == [1] if gzipped else len(first) == first[0] > 1
    assert "part=" in repr(units[-1])
    assert "part=" not in repr(laion.Unit("tar", ("x.tar",), "r"))  # a whole unit keeps its store id
    extracted: list[str] = []  # members whose bytes a part read: only its own samples'
    real_extract = tarfile.TarFile.extractfile
    monkeypatch.setattr(tarfile.TarFile, "extractfile",
                        lambda tar, info: extracted.append(info.name) or real_extract(tar, info))
    per_part = []
    for unit in units:
        extracted.clear()
        per_part.append(list(source.read(unit)))
        shard = os.path.basename(unit.uris[0]).removesuffix(".tar")
        assert extracted and all(unit.owns(source._key(shard, name.partition(".")[0])) for name in extracted)
    assert all(per_part)  # every part has work
    assert sorted(map(repr, (item for part in per_part for item in part))) == sorted(map(repr, whole))
    if cut:
        assert "corrupt_archive" in {i.reason for i in whole if isinstance(i, Reject)}


def _write_named(folder: Path, name: str, data: bytes) -> Path:
    """`data` at `folder/name`, the name's bytes as given (ext4 keeps NFD apart from NFC)."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


WORLD_FOLDER = {"caf\u00e9.jpg": 1, "caf\u00e9.txt": b"un caf\xc3\xa9",
                "cr\u00e8me br\u00fbl\u00e9e/\u00c5ngstr\u00f6m.png": 2, "plain.jpg": 3}


def test_folder_copied_from_a_mac_keys_its_names_in_nfc(tmp_path: Path):
    """A Mac (HFS+, or a copy over SMB/NFS from one) hands `café.jpg` over in NFD (`e` + U+0301):
    the same folder copied from there had other keys and lineage, so other output bytes, and its
    files opened under their own (NFD) names still."""
    read = {}
    for form in ("NFC", "NFD"):
        for name, value in WORLD_FOLDER.items():
            data = value if isinstance(value, bytes) else _image_bytes(value)
            _write_named(tmp_path / form, unicodedata.normalize(form, name), data)
        read[form] = _read_all(LaionSource("web", str(tmp_path / form), format="folder"))
    assert "cafe\u0301.jpg" in os.listdir(tmp_path / "NFD")  # the disk holds NFD bytes
    assert all(isinstance(i, ImageRecord) for form in read for i in read[form])
    assert [(r.key, r.lineage) for r in read["NFD"]] == [(r.key, r.lineage) for r in read["NFC"]]
    assert {r.lineage["path"] for r in read["NFD"]} == {n for n in WORLD_FOLDER if not n.endswith(".txt")}
    assert next(r.lineage["caption"] for r in read["NFD"] if "caption" in r.lineage) == "un caf\u00e9"
    for record in read["NFD"]:  # opened by the name the file system gave
        assert unicodedata.is_normalized("NFD", os.path.relpath(record.uri, tmp_path / "NFD"))
        assert _shade(record.read_bytes()) == 60 * WORLD_FOLDER[record.lineage["path"]]  # its own file's pixels


def test_folder_twins_in_nfc_and_nfd_give_one_image_and_counted_duplicates(tmp_path: Path):
    """One folder holding `café.jpg` twice, in NFC and in NFD (a Linux copy merged with a Mac's),
    each with its caption, and a caption as `x.txt` and `x.TXT`: one key each, so the file named
    in NFC (and the first caption) is read and every other one is a `duplicate_key` reject: none
    vanishes (a second caption was dropped without a word), none makes a second record."""
    for form, shade, caption in (("NFC", 1, b"nfc caption"), ("NFD", 2, b"nfd caption")):
        _write_named(tmp_path, unicodedata.normalize(form, "caf\u00e9.jpg"), _image_bytes(shade))
        _write_named(tmp_path, unicodedata.normalize(form, "caf\u00e9.txt"), caption)
    _write_named(tmp_path, "x.jpg", _image_bytes(3))
    _write_named(tmp_path, "x.txt", b"lower")
    _write_named(tmp_path, "x.TXT", b"upper")
    items = _read_all(LaionSource("web", str(tmp_path), format="folder"))
    records = {i.lineage["path"]: i for i in items if isinstance(i, ImageRecord)}
    rejects = [i for i in items if isinstance(i, Reject)]
    assert sorted(records) == ["caf\u00e9.jpg", "x.jpg"]
    cafe = records["caf\u00e9.jpg"]
    assert os.path.basename(cafe.uri) == "caf\u00e9.jpg" and cafe.lineage["caption"] == "nfc caption"
    assert _shade(cafe.read_bytes()) == 60  # the NFC file's pixels
    assert records["x.jpg"].lineage["caption"] == "upper"  # `x.TXT` sorts first
    assert [r.reason for r in rejects] == ["duplicate_key"] * 3
    assert sum(r.key == cafe.key for r in rejects) == 1  # the NFD image: the key of the one read
    assert len(records) + 2 + len(rejects) == len(os.listdir(tmp_path))  # two captions read, all accounted
    assert sum("caf\u00e9.jpg (NFD)" in r.detail for r in rejects) == 1


def test_folder_twins_read_the_one_that_is_a_file_when_the_nfc_one_is_not(tmp_path: Path):
    """`café.jpg` in NFC is a dangling link and `café.txt` in NFC a fifo; in NFD both are real.
    The NFC names, first in `twin_order`, were read: the real image and caption became
    `duplicate_key` rejects of files rejected themselves. Now the first twin that is a file to
    read is read, and a twin that is none keeps its own reason, never opened: `not_a_file`, as
    docs/rejects.md has it for any source's twins (the dangling one was `duplicate_key` "that
    file is read", and with no twin to read `unreadable_file`)."""
    os.symlink("gone.jpg", tmp_path / unicodedata.normalize("NFC", "caf\u00e9.jpg"))
    os.mkfifo(tmp_path / unicodedata.normalize("NFC", "caf\u00e9.txt"))
    _write_named(tmp_path, unicodedata.normalize("NFD", "caf\u00e9.jpg"), _image_bytes(2))
    _write_named(tmp_path, unicodedata.normalize("NFD", "caf\u00e9.txt"), b"nfd caption")
    items = _read_all(LaionSource("web", str(tmp_path), format="folder"))
    (record,) = [i for i in items if isinstance(i, ImageRecord)]
    assert _shade(record.read_bytes()) == 120 and record.lineage["caption"] == "nfd caption"
    assert sorted((r.key == record.key, r.reason, r.detail) for r in items if isinstance(r, Reject)) == [
        (False, "not_a_file", "'caf\u00e9.txt' is a fifo (named pipe), not a file (never opened)"),
        (True, "not_a_file", "'caf\u00e9.jpg' is a link to nothing (dangling), not a file: not read")]
    nfd_caption = tmp_path / unicodedata.normalize("NFD", "caf\u00e9.txt")
    nfd_caption.unlink()
    nfd_caption.symlink_to("gone.txt")  # now no caption twin is a file: each its own reject, the image goes on
    items = _read_all(LaionSource("web", str(tmp_path), format="folder"))
    assert sorted(getattr(i, "reason", "record") for i in items) == ["not_a_file"] * 3 + ["record"]
    assert _shade(next(i for i in items if isinstance(i, ImageRecord)).read_bytes()) == 120


@pytest.mark.parametrize("follow_links", [False, True])
def test_folder_links_are_followed_with_follow_links_and_loops_are_counted(tmp_path: Path, follow_links: bool):
    """The folder layout listed folder links as files whatever `follow_links` said: followed, a
    linked folder of images became one image record of the folder itself. Now, as in the video
    source, a folder link is walked with `follow_links` (else `outside_root`), and a link back to a
    folder above (`sub/up -> ..`) or to itself is listed and rejected `link_loop` either way."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    _write_named(root / "sub", "a.png", _image_bytes(1))
    _write_named(outside, "b.png", _image_bytes(2))
    (root / "linked").symlink_to(outside)
    (root / "sub" / "up").symlink_to("..")
    (root / "sub" / "self").symlink_to("self")
    items = _read_all(LaionSource("web", str(root), format="folder", follow_links=follow_links))
    records = sorted((os.path.relpath(i.uri, root), _shade(i.read_bytes())) for i in items if isinstance(i, ImageRecord))
    assert records == ([("linked/b.png", 120), ("sub/a.png", 60)] if follow_links else [("sub/a.png", 60)])
    rejects = sorted((i.detail, i.reason) for i in items if isinstance(i, Reject))
    assert rejects == sorted([("'sub/up' is a link to a folder above it (a loop), not read", "link_loop"),
                              ("'sub/self' is a link to itself (a loop), not read", "link_loop")] + (
        [] if follow_links else [("'linked' is a link leading out of the source root (set follow_links: true to allow "
                                  "it)", "outside_root")]))


def _image_bytes(shade: int) -> bytes:
    """A small PNG of one grey `shade` (x 60), made by Pillow."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (60 * shade,) * 3).save(buf, "PNG")
    return buf.getvalue()


def _shade(data: bytes) -> int:
    """The grey of a PNG `_image_bytes` made, read back by Pillow."""
    return Image.open(io.BytesIO(data)).getpixel((0, 0))[0]


_READ_AS_A_USER = """
import json, sys
from sources.laion import LaionSource
items = [i for fmt, path in (("folder", sys.argv[1]), ("files", sys.argv[2])) for s in [LaionSource("web", path, fmt)]
         for u in s.units() for i in s.read(u)]
print(json.dumps([[type(i).__name__, i.key, getattr(i, "reason", None), getattr(i, "detail", None),
                   getattr(i, "lineage", None)] for i in items]))
"""


def test_a_caption_the_user_cannot_read_is_a_reject_and_its_image_goes_on(tmp_path: Path):
    """A caption or metadata file of mode 000 (copied from another user's backup): reading it raised
    out of the source, and the whole unit (up to 256 images of a folder, a files-layout shard) was
    one `unit_failed` reject naming the machine's folder. Now that file is an `unreadable_file`
    reject and every image is read, without it. Real modes, read by root without its power over
    them (CAP_DAC_*, dropped by setpriv) in a child process."""
    import subprocess
    import sys

    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop root's power over file modes")
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
              "--inh-caps=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    folder, shard = tmp_path / "folder", tmp_path / "files" / "00000"
    closed = []
    for where, stems in ((folder, ("a", "b", "c")), (shard, ("000000000", "000000001"))):
        for shade, stem in enumerate(stems, 1):
            _write_named(where, f"{stem}.png", _image_bytes(shade))
            closed.append(_write_named(where, f"{stem}.txt", f"caption {stem}".encode()))
    closed.append(_write_named(folder, "b.json", b'{"url": "u"}'))
    for path in closed[::2]:  # a.txt, c.txt, 000000001.txt (and b.json below)
        path.chmod(0)
    closed[-1].chmod(0)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run([*prefix, sys.executable, "-c", _READ_AS_A_USER, str(folder), str(tmp_path / "files")],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    items = json.loads(proc.stdout)
    records = {lineage.get("path", lineage.get("sample_key")): lineage for kind, _, _, _, lineage in items
               if kind == "ImageRecord"}
    assert sorted(records) == ["000000000", "000000001", "a.png", "b.png", "c.png"]
    assert [records[k].get("caption") for k in sorted(records)] == ["caption 000000000", None, None, "caption b", None]
    assert "metadata" not in records["b.png"]
    refused = sorted((reason, detail) for kind, _, reason, detail, _ in items if kind == "Reject")
    assert refused == [("unreadable_file", f"PermissionError: [Errno 13] Permission denied: '{name}'")
                       for name in ("000000001.txt", "a.txt", "b.json", "c.txt")]


@pytest.mark.parametrize("which", ["txt", "png"])
def test_too_many_open_files_reading_a_caption_or_a_hashed_image_is_the_machines_error(tmp_path: Path, monkeypatch,
                                                                                       which: str):
    """img2dataset's files layout (`--disable_all_reencoding True`: its json records the download's
    sha256). A caption that could not be opened for want of a file descriptor (EMFILE) was an
    `unreadable_file` reject and its image went on without it; the image itself, read to check its
    hash, was passed on unread and unchecked. Both committed for good: they are this machine's
    `MachineError`, and with files to spare the same sample is read, caption and hash."""
    import errno
    import hashlib

    from sources import fsio
    from sources.records import MachineError

    shard = tmp_path / "00000"
    png = _image_bytes(12)
    _write_named(shard, "000000000.png", png)
    _write_named(shard, "000000000.txt", b"a caption")
    _write_named(shard, "000000000.json", json.dumps({"url": "http://x/0.png", "key": "000000000", "status": "success",
                                                      "width": None, "height": None,
                                                      "sha256": hashlib.sha256(png).hexdigest()}, indent=4).encode())
    def full_at(real):  # the descriptor table full as that one file is opened (a caption's head read too)
        def read(uri, *args, **kwargs):
            if uri.endswith(f".{which}"):
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), uri)
            return real(uri, *args, **kwargs)
        return read

    source = LaionSource("web", str(tmp_path), "files")
    with monkeypatch.context() as full:
        full.setattr(fsio, "read_bytes", full_at(fsio.read_bytes))
        full.setattr(fsio, "read_head", full_at(fsio.read_head))
        with pytest.raises(MachineError, match=rf"reading 000000000\.{which}: \[Errno 24\]"):
            _read_all(source)
    (record,) = _read_all(source)
    assert record.data == png and record.lineage["caption"] == "a caption"


def _img2dataset_shard(folder: Path) -> bytes:
    """img2dataset's webdataset shard `00000.tar` of one sample (image, caption, json); its image."""
    png = _image_bytes(3)
    with tarfile.open(folder / "00000.tar", "w") as tar:
        for name, data in (("000000000.png", png), ("000000000.txt", b"a caption"),
                           ("000000000.json", json.dumps({"key": "000000000", "status": "success"}).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return png


@pytest.mark.parametrize("stats", ["huge", "folder"])
def test_a_stats_json_too_large_or_a_folder_is_a_reject_and_the_shard_is_read(tmp_path: Path, stats: str):
    """A 300 MiB (sparse) `00000_stats.json`, or a folder of that name, raised FileTooLarge or
    IsADirectoryError out of `read`: the whole shard's unit failed. The shard's successes are
    unknown (one counted reject naming the file) and its sample is still read."""
    png = _img2dataset_shard(tmp_path)
    if stats == "folder":
        (tmp_path / "00000_stats.json").mkdir()
    else:
        with open(tmp_path / "00000_stats.json", "wb") as handle:
            handle.truncate(300 << 20)
    source = LaionSource("web", str(tmp_path), "webdataset")
    (unit,) = source.units()
    records = list(source.read(unit))
    (reject,) = [r for r in records if isinstance(r, Reject)]
    assert reject.reason == ("file_too_large" if stats == "huge" else "unreadable_file")
    assert "00000_stats.json" in reject.detail and "successes are unknown" in reject.detail
    assert reject.input == "00000_stats.json"  # its own file, not the shard's parquet
    (record,) = [r for r in records if isinstance(r, ImageRecord)]
    assert record.data == png and record.lineage["caption"] == "a caption"


def test_too_many_open_files_reading_a_shards_stats_json_is_the_machines_error(tmp_path: Path):
    """img2dataset's `00000_stats.json` beside its webdataset shard, read while this process had no
    descriptor to spare (a real EMFILE: RLIMIT_NOFILE lowered to what it holds), raised the OSError
    out of `read`: the shard's unit a `unit_failed` reject, every image of it lost for good. It is
    this machine's `MachineError`; with files to spare the shard's sample is read."""
    from budget_jobs import no_file_to_spare

    from sources.records import MachineError

    png = _img2dataset_shard(tmp_path)
    (tmp_path / "00000_stats.json").write_text(json.dumps({"count": 1, "successes": 1, "failed_to_download": 0},
                                                          indent=4))
    source = LaionSource("web", str(tmp_path), "webdataset")
    (unit,) = source.units()
    with no_file_to_spare(), pytest.raises(MachineError, match=r"reading 00000_stats\.json: \[Errno 24\]"):
        list(source.read(unit))
    (record,) = source.read(unit)
    assert record.data == png and record.lineage["caption"] == "a caption"


def test_a_failed_units_label_holds_no_folder_of_the_machine(tmp_path: Path):
    """A `unit_failed` reject names its unit's files (`unit_label`) as the source root sees them.
    Each path is quoted by its repr, which escapes a root named in latin-1 (`caf\\xe9`) or holding
    quotes or a newline: cut after quoting, such a root stayed in the reject whole. Real folders
    listed by the web source."""
    from uvd_pipeline.unit_render import unit_label

    for name in (b"caf\xe9", b"o'brien \"x\"", b"new\nline"):
        root = os.fsdecode(os.fsencode(tmp_path) + b"/" + name + b"/web")
        os.makedirs(os.fsencode(root) + b"/sub")
        for relative in ("a.jpg", "sub/b.jpg"):
            Image.new("RGB", (8, 8)).save(os.path.join(root, relative))
        source = LaionSource("web", root)
        labels = [unit_label(source, unit) for unit in source.units()]
        assert labels == ["('a.jpg', 'sub/b.jpg')"], (name, labels)


@pytest.mark.parametrize("code", ["EMFILE", "ENFILE", "ENOMEM"])
def test_too_many_open_files_opening_a_tar_fails_the_unit_and_blames_no_shard(tmp_path: Path, monkeypatch, code: str):
    """Too many open files (or no memory) opening an img2dataset tar was its `corrupt_archive`
    reject, committed for good: the machine's error, the unit fails (`MachineError`) and a rerun
    reads the shard; any other error opening it stays the shard's reject."""
    import errno

    from sources import fsio
    from sources.records import MachineError

    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        for name, data in (("000.jpg", _image_bytes(10)), ("000.txt", b"a caption")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    real_open, number = fsio.open_file, getattr(errno, code)

    def open_file(uri, *args, **kwargs):
        raise OSError(number, os.strerror(number), uri)

    monkeypatch.setattr(fsio, "open_file", open_file)
    source = LaionSource("web", str(tmp_path), "webdataset")
    with pytest.raises(MachineError, match=rf"00000\.tar.*\[Errno {number}\]"):
        _read_all(source)
    monkeypatch.setattr(fsio, "open_file", lambda uri, *a, **k: (_ for _ in ()).throw(
        OSError(errno.EIO, os.strerror(errno.EIO), uri)))
    assert [i.reason for i in _read_all(source)] == ["corrupt_archive"]
    monkeypatch.setattr(fsio, "open_file", real_open)
    assert [type(i).__name__ for i in _read_all(source)] == ["ImageRecord"]


@pytest.mark.parametrize("layout", ["webdataset", "files"])
def test_a_member_img2dataset_never_writes_beside_an_image_is_an_unexpected_file(tmp_path: Path, layout: str):
    """img2dataset writes per sample one image (`--encode_format`: jpg, png or webp), a `.txt` and a
    `.json` (extra columns go in it): a `000.npy` beside them vanished without a word, where a
    video2dataset sample's is `unexpected_file`. It is that reject, and the image is built."""
    from sources.records import data_key

    fields = {"jpg": _image_bytes(10), "txt": b"a caption", "json": b'{"url": "http://x/y"}', "npy": b"x" * 10}
    other = {"png": _image_bytes(20), "txt": b"another", "json": b"{}"}
    if layout == "webdataset":
        with tarfile.open(tmp_path / "00000.tar", "w") as tar:
            for key, sample in (("000", fields), ("001", other)):
                for ext, data in sample.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    else:
        (tmp_path / "00000").mkdir()
        (tmp_path / "00000.parquet").write_bytes(b"")  # no listing to read: its bad_parquet reject
        for key, sample in (("000", fields), ("001", other)):
            for ext, data in sample.items():
                (tmp_path / "00000" / f"{key}.{ext}").write_bytes(data)
    items = [i for i in _read_all(LaionSource("web", str(tmp_path), layout))
             if getattr(i, "reason", "") != "bad_parquet"]
    assert sorted((type(i).__name__, i.key, getattr(i, "reason", "")) for i in items) == [
        ("ImageRecord", data_key("web", "00000", "000"), ""), ("ImageRecord", data_key("web", "00000", "001"), ""),
        ("Reject", data_key("web", "00000", "000"), "unexpected_file")]
    (reject,) = [i for i in items if isinstance(i, Reject)]
    assert reject.detail.startswith("000.npy: not read") and reject.stage == "read"


def test_too_many_open_files_reading_a_shards_parquet_fails_the_unit_and_is_no_bad_parquet(
        tmp_path: Path, monkeypatch):
    """Too many open files reading a shard's parquet was its `bad_parquet` reject (and every
    failed download it lists lost), committed for good: the machine's `MachineError`."""
    import errno

    import sources.img2dataset_listing as img2dataset_listing
    from sources.records import MachineError

    (tmp_path / "00000").mkdir()
    (tmp_path / "00000" / "000.jpg").write_bytes(_image_bytes(10))
    (tmp_path / "00000.parquet").write_bytes(b"PAR1")

    def rows(uri):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), uri)

    monkeypatch.setattr(img2dataset_listing, "_parquet_rows", rows)
    with pytest.raises(MachineError, match=r"00000\.parquet.*\[Errno 24\]"):
        _read_all(LaionSource("web", str(tmp_path), "files"))


# -- Hugging Face `datasets` parquet ---------------------------------------------------------------
# The schema and its `huggingface` metadata are those of a file `datasets` 5.2.0 (pyarrow 26) wrote:
# Dataset.from_dict({"image": [{"bytes": ..., "path": "a.png"}, None, {"bytes": None, "path": ...}],
# "text": [...], "label": [...]}, features=Features({"image": Image(), "text": Value("string"),
# "label": ClassLabel(names=["cat", "dog"])})).to_parquet(...) (and push_to_hub's data/ names),
# read back with pyarrow.parquet.read_schema; datasets itself is not installed for the tests.
HF_METADATA = {b"huggingface": b'{"info": {"features": {"image": {"_type": "Image"}, "text": {"dtype": "string", '
                               b'"_type": "Value"}, "label": {"names": ["cat", "dog"], "_type": "ClassLabel"}}}}'}


def _hf_parquet(path: Path, rows: list[dict], row_group_size: int = 100, metadata: dict = HF_METADATA) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image), ("text", pa.string()), ("label", pa.int64())], metadata=metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=row_group_size)


def _encoded(fmt: str, seed: int, mode: str = "RGB", size: int = 32) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def _hub_dataset(root: Path) -> dict[str, bytes]:
    """A Hub repo as `push_to_hub` lays it out: two train shards, one validation shard, the card;
    a PNG, a JPEG, a CMYK JPEG, a null image, path-only rows (a file inside the root, one that is
    not there, one outside), bytes that are no image."""
    images = {"png": _encoded("PNG", 1), "jpeg": _encoded("JPEG", 2), "cmyk": _encoded("JPEG", 3, "CMYK"),
              "val": _encoded("PNG", 4), "onfile": _encoded("PNG", 5)}
    (root / "images").mkdir(parents=True)
    (root / "images" / "onfile.png").write_bytes(images["onfile"])
    row = lambda name, text, label, path=None: {"image": {"bytes": images[name], "path": path or f"{name}.x"},
                                                "text": text, "label": label}
    _hf_parquet(root / "data" / "train-00000-of-00002.parquet",
                [row("png", "a png", 0), row("jpeg", "a jpeg", 1), row("cmyk", "a cmyk jpeg", 0)], row_group_size=2)
    _hf_parquet(root / "data" / "train-00001-of-00002.parquet",
                [{"image": None, "text": "no image", "label": 1},
                 {"image": {"bytes": None, "path": "images/onfile.png"}, "text": "on file", "label": 0},
                 {"image": {"bytes": None, "path": "images/gone.png"}, "text": "gone", "label": 0},
                 {"image": {"bytes": None, "path": "../outside.png"}, "text": "outside", "label": 0},
                 {"image": {"bytes": b"not an image", "path": "e.jpg"}, "text": "broken", "label": 1}])
    _hf_parquet(root / "data" / "validation-00000-of-00001.parquet", [row("val", "held out", 1)])
    (root / "README.md").write_text("---\nlicense: mit\n---\n# a dataset card\n")
    (root / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n")
    (root.parent / "outside.png").write_bytes(images["png"])
    return images


def test_hugging_face_hub_parquet_rows_are_records_and_counted_rejects(tmp_path: Path):
    """A `datasets` repo was a folder of 3 parquet files, each an image the decoder refused
    (`not_an_image`), its 9 rows lost; forced as img2dataset's `parquet`, every row a
    `missing_image` keyed `None`."""
    root = tmp_path / "repo"
    images = _hub_dataset(root)
    source = LaionSource("hf", str(root))
    assert detect_format(source.path) == "huggingface"
    items = _read_all(source)
    records = {r.lineage["caption"]: r for r in items if isinstance(r, ImageRecord)}
    rejects = sorted((r.reason, r.detail) for r in items if isinstance(r, Reject))
    assert sorted(records) == ["a cmyk jpeg", "a jpeg", "a png", "broken", "held out", "on file"]
    for caption, name in (("a png", "png"), ("a jpeg", "jpeg"), ("a cmyk jpeg", "cmyk"), ("held out", "val")):
        assert records[caption].data == images[name], caption
    assert records["on file"].data is None and records["on file"].read_bytes() == images["onfile"]
    assert records["held out"].split_hint == "val"  # validation: never trained on
    assert {r.split_hint for c, r in records.items() if c != "held out"} == {None}  # train: val_fraction decides
    assert records["a jpeg"].lineage == {"caption": "a jpeg", "file": "data/train-00000-of-00002.parquet", "row": 1,
                                         "hf_split": "train", "image_path": "jpeg.x", "class_names": {"label": "dog"},
                                         "huggingface": {"label": 1}}
    assert len({i.key for i in items}) == len(items) and all("." not in i.key for i in items)
    assert rejects == [
        ("hidden_file", ".gitattributes: hidden (a tool's lock, temporary or repository file), not read"),
        ("missing_image", "row 0 of data/train-00001-of-00002.parquet: its image is null (no bytes, no path)"),
        ("missing_image", "row 2 of data/train-00001-of-00002.parquet: no image bytes, and its path "
                          "'images/gone.png' is not there"),
        ("outside_root", "row 3 of data/train-00001-of-00002.parquet: '../outside.png' climbs out of the source root"),
        ("unexpected_file", "'README.md' is no parquet file of the Hugging Face dataset: not read")]


@pytest.mark.slow  # a whole build: ~3 s on an idle machine
def test_hugging_face_hub_parquet_builds_the_images_pillow_decodes(tmp_path: Path):
    """A real build (no tokenizer) of the Hub layout: each rendered image is Pillow's decode of
    the row's bytes (32 px images at image.size 32: nothing resized), the validation row in val,
    every other row a counted reject."""
    import webdataset as wds

    from conftest import build_web_source

    root = tmp_path / "repo"
    images = _hub_dataset(root)
    summary = build_web_source(tmp_path, "hf", root)
    by_path = {"png.x": "png", "jpeg.x": "jpeg", "cmyk.x": "cmyk", "val.x": "val", "images/onfile.png": "onfile"}
    splits = {}
    for tar in sorted((tmp_path / "out" / "rendered").rglob("*.tar")):
        for sample in wds.WebDataset([str(tar)], shardshuffle=False):
            (member,) = json.loads(sample["json"])["members"]
            name = by_path[member["image_path"]]
            splits[name] = tar.parent.name
            rendered = np.asarray(Image.open(io.BytesIO(sample["00.png"])).convert("RGB"), dtype=np.int16)
            expected = np.asarray(Image.open(io.BytesIO(images[name])).convert("RGB"), dtype=np.int16)
            assert np.abs(rendered - expected).max() <= 1, name
    assert splits == {"png": "train", "jpeg": "train", "cmyk": "train", "onfile": "train", "val": "val"}
    assert summary["sources"]["hf"]["rejects_by_reason"] == {"hidden_file": 1, "missing_image": 2, "not_an_image": 1,
                                                             "outside_root": 1, "unexpected_file": 1}


@pytest.mark.parametrize("layout", ["huggingface", "img2dataset"])
def test_a_row_over_the_budget_is_its_own_reject_the_rest_of_its_group_built(tmp_path: Path, monkeypatch,
                                                                                     layout: str):
    """A row group is judged by the size its footer declares before it is read: one over the
    budget was read whole (a 2 GB row group of 4K photos, all at once), then its rows were all
    `row_group_too_large` rejects, keyed as their records would be, and the others built. Now its
    image column is read a value at a time from its pages (`parquet_paged`, never by pyarrow):
    the big image's row alone is the reject, the small one beside it in its group built."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sources import hf_parquet

    small, big = _encoded("PNG", 1, size=8), _encoded("PNG", 2, size=64)
    pictures = [small, small, big, small, small]
    if layout == "huggingface":
        _hf_parquet(tmp_path / "train.parquet", [{"image": {"bytes": b, "path": None}, "text": f"c{i}", "label": 0}
                                                 for i, b in enumerate(pictures)], row_group_size=2)
    else:
        rows = [{"key": f"{i:09d}", "status": "success", "error_message": None, "txt": f"c{i}", "jpg": b}
                for i, b in enumerate(pictures)]
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "00000.parquet", row_group_size=2)
    groups = [pq.ParquetFile(next(tmp_path.glob("*.parquet"))).metadata.row_group(g) for g in range(3)]
    # what reading a group costs: each column chunk's uncompressed bytes, or its stored bytes if more
    sizes = [sum(max(g.column(c).total_uncompressed_size, g.column(c).total_compressed_size)
                 for c in range(g.num_columns)) for g in groups]
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", (max(sizes[0], sizes[2]) + sizes[1]) // 2)
    assert sizes[1] > hf_parquet.ROW_GROUP_BYTES >= max(sizes[0], sizes[2])
    asked = []
    iter_batches = pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", lambda self, *a, **k: asked.append(
        (k.get("row_groups"), any(c.split(".")[0] in ("image", "jpg") for c in k.get("columns") or ["image"])
         and not any(c.endswith(".path") for c in k.get("columns") or []))) or iter_batches(self, *a, **k))
    read_row_group = pq.ParquetFile.read_row_group  # a group judged on its dictionaries: read once, whole
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", lambda self, i, columns=None, **k:
                        (columns != ["key"] and asked.append(([i], True))) or read_row_group(self, i, columns=columns, **k))
    source = LaionSource("web", str(tmp_path))
    assert source.resolved_format() == ("huggingface" if layout == "huggingface" else "parquet")
    items = _read_all(source)
    assert asked == [([0], True), ([1], False), ([2], True)]  # group 1's images never read by pyarrow
    assert [type(i).__name__ for i in items] == ["ImageRecord", "ImageRecord", "Reject", "ImageRecord", "ImageRecord"]
    assert [i.data for i in items if isinstance(i, ImageRecord)] == [small] * 4
    assert [i.lineage["caption"] for i in items if isinstance(i, ImageRecord)] == ["c0", "c1", "c3", "c4"]
    (tagged,) = [i for i in items if isinstance(i, Reject)]
    assert tagged.reason == "row_group_too_large"
    column = "image" if layout == "huggingface" else "jpg"
    assert f"row 2: its {column!r} holds {len(big)} bytes" in tagged.detail, tagged.detail
    assert f"within the {hf_parquet.ROW_GROUP_BYTES} byte budget" in tagged.detail
    if layout == "img2dataset":
        assert tagged.key == "web-00000-000000002"  # keyed by its `key`, as its record would be


# Each file alone in a folder, written by `Dataset.to_parquet` and loaded with
# `datasets.load_dataset(folder)`: the splits datasets 5.2.0 gave it (held out: our `val`).
@pytest.mark.parametrize("relative, datasets_gave, ours", [
    ("data/train-00000-of-00004.parquet", ["train"], None),  # push_to_hub
    ("data/validation-00003-of-00004.parquet", ["validation"], "val"),
    ("data/unlabeled-00000-of-00001.parquet", ["unlabeled"], None),
    ("data/test_2017-00000-of-00001.parquet", ["test_2017"], "val"),
    ("en/test-00000-of-00001.parquet", ["test"], "val"),  # push_to_hub of a named config
    ("sub/data/test-00000-of-00001.parquet", ["test"], "val"),
    ("default/partial-train/0000.parquet", ["train"], None),  # the Hub's parquet conversion, cut
    ("default/test/0000.parquet", ["test"], "val"),
    ("default/partial-validation/0000.parquet", ["validation"], "val"),
    ("plain_text/validation_matched/0001.parquet", ["validation"], "val"),
    ("test/data-00000-of-00001.parquet", ["test"], "val"),  # a split's folder
    ("validation/data-00000-of-00001.parquet", ["validation"], "val"),
    ("evaluation/x.parquet", ["test"], "val"),
    ("x/val-2017/a.parquet", ["validation"], "val"),
    ("train/test.parquet", ["train"], None),  # a folder's keyword before the name's
    ("test.parquet", ["test"], "val"),  # to_parquet under a split's name
    ("cifar10-test.parquet", ["test"], "val"),
    ("coco_2017-val.parquet", ["validation"], "val"),
    ("dev_0.parquet", ["validation"], "val"),
    ("testing_set.parquet", ["test"], "val"),
    ("my-valid.parquet", ["validation"], "val"),
    ("train-test.parquet", ["test", "train"], "val"),  # in both there: held out here
    ("images.parquet", ["train"], None),  # no split named: hashed like every web image
    ("contest.parquet", ["train"], None),
    ("latest.parquet", ["train"], None),
    ("Test.parquet", ["train"], None),  # keywords are matched case-sensitively
    ("VAL.parquet", ["train"], None),
])
def test_the_split_a_datasets_file_name_gives(relative: str, datasets_gave: list[str], ours: str | None):
    """Test rows were trained on: only a split word at the start of a name was seen
    (`cifar10-test.parquet`, `coco_2017-val.parquet`: train), and `test/data-00000-of-00001.parquet`
    had split `data`. Now the split is the one `datasets` resolves (a file in two: the held-out one)."""
    from sources.hf_parquet import hf_split, split_hint

    split = hf_split(relative)
    assert split == ([s for s in datasets_gave if s in ("validation", "test")] or datasets_gave)[0]
    assert split_hint(split) == ours


def test_a_datasets_parquet_with_two_image_columns_needs_image_column(tmp_path: Path):
    """InstructPix2Pix-like files hold two Image columns: the build stops before it starts, naming
    the field; with `image_column` (and `caption_column`) set, that column and caption are read.
    A `save_to_disk` folder is refused by name (it was a folder of not_an_image files)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    metadata = {b"huggingface": json.dumps({"info": {"features": {
        "input_image": {"_type": "Image"}, "edited_image": {"_type": "Image"},
        "edit_prompt": {"dtype": "string", "_type": "Value"}}}}).encode()}
    schema = pa.schema([("input_image", image), ("edit_prompt", pa.string()), ("edited_image", image)], metadata=metadata)
    before, after = _encoded("PNG", 1, size=8), _encoded("PNG", 2, size=8)
    rows = [{"input_image": {"bytes": before, "path": None}, "edit_prompt": "make it red",
             "edited_image": {"bytes": after, "path": None}}]
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "data" / "train-00000-of-00001.parquet")
    with pytest.raises(ValueError, match="2 Image columns .input_image, edited_image.: set image_column"):
        LaionSource("p2p", str(tmp_path)).units()
    with pytest.raises(ValueError, match="no caption column 'caption'"):
        LaionSource("p2p", str(tmp_path), image_column="edited_image", caption_column="caption").units()
    (record,) = _read_all(LaionSource("p2p", str(tmp_path), image_column="edited_image", caption_column="edit_prompt"))
    assert record.data == after and record.lineage["caption"] == "make it red"
    assert "input_image" not in record.lineage["huggingface"]  # another image's bytes never ride along

    saved = tmp_path / "saved"  # Dataset.save_to_disk: an Arrow stream beside state.json
    saved.mkdir()
    with pa.ipc.new_stream(saved / "data-00000-of-00001.arrow", schema) as writer:
        writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    (saved / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (saved / "dataset_info.json").write_text("{}")
    for fmt in ("auto", "huggingface"):  # set, it only said "no .parquet files"
        with pytest.raises(FileNotFoundError, match="save_to_disk folder .Arrow files.*to_parquet"):
            LaionSource("saved", str(saved), fmt).units()


def test_a_hub_cache_snapshot_links_its_parquet_out_of_the_root(tmp_path: Path):
    """A folder shaped like a Hub cache snapshot but none (`snapshots/abc123`: no commit hash, no
    `datasets--ORG--NAME` above) linking its parquet to `blobs/`: never opened (not even to detect
    the format) unless `follow_links: true`. A real cache snapshot: tests/test_hub_cache.py."""
    blob = tmp_path / "blobs" / "0b1f"
    _hf_parquet(blob, [{"image": {"bytes": _encoded("PNG", 1, size=8), "path": "a.png"}, "text": "a", "label": 0}])
    snapshot = tmp_path / "snapshots" / "abc123" / "data"
    snapshot.mkdir(parents=True)
    (snapshot / "train-00000-of-00001.parquet").symlink_to(os.path.relpath(blob, snapshot))
    (reject,) = _read_all(LaionSource("hf", str(snapshot.parent)))
    assert reject.reason == "outside_root" and "set follow_links: true" in reject.detail
    followed = LaionSource("hf", str(snapshot.parent), follow_links=True)
    assert followed.resolved_format() == "huggingface"
    (record,) = _read_all(followed)
    assert record.lineage["caption"] == "a" and record.lineage["hf_split"] == "train"


def test_a_cut_or_empty_datasets_parquet_is_one_bad_parquet_reject_and_the_others_are_read(tmp_path: Path):
    """A download cut short (the first file by name) or left empty: its schema once raised out of
    `units()` (format detection and the column check read the first file's footer), stopping the
    build; now it is its unit's `bad_parquet` reject and the other files are read."""
    rows = [{"image": {"bytes": _encoded("PNG", i, size=8), "path": f"{i}.png"}, "text": f"c{i}", "label": 0}
            for i in range(3)]
    _hf_parquet(tmp_path / "data" / "train-00001-of-00003.parquet", rows)
    whole = (tmp_path / "data" / "train-00001-of-00003.parquet").read_bytes()
    (tmp_path / "data" / "train-00000-of-00003.parquet").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "data" / "train-00002-of-00003.parquet").write_bytes(b"")
    source = LaionSource("hf", str(tmp_path))
    assert source.resolved_format() == "huggingface"
    items = _read_all(source)
    assert [i.lineage["caption"] for i in items if isinstance(i, ImageRecord)] == ["c0", "c1", "c2"]
    bad = [i for i in items if isinstance(i, Reject)]
    assert [(r.reason, r.detail.split(" ")[0]) for r in bad] == [("bad_parquet", "train-00000-of-00003.parquet"),
                                                                 ("bad_parquet", "train-00002-of-00003.parquet")]


def test_a_datasets_caption_from_txt_or_a_list_of_captions(tmp_path: Path):
    """A webdataset converted to the Hub keeps its caption in `txt` (read by default); COCO
    captions come as a list per image (`caption_column: sentences`: its first)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("jpg", image), ("txt", pa.string()), ("sentences", pa.list_(pa.string()))])
    data = _encoded("JPEG", 1, size=8)
    rows = [{"jpg": {"bytes": data, "path": "0.jpg"}, "txt": "from txt", "sentences": ["", "first", "second"]}]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "train.parquet")
    (record,) = _read_all(LaionSource("hf", str(tmp_path)))
    assert record.lineage["caption"] == "from txt" and record.data == data
    (record,) = _read_all(LaionSource("hf", str(tmp_path), caption_column="sentences"))
    assert record.lineage["caption"] == "first" and record.lineage["huggingface"]["txt"] == "from txt"


# -- Hugging Face ImageFolder (images with metadata.jsonl / metadata.csv) ---------------------------
IMAGEFOLDER_CAPTIONS = {"train/astronaut.jpg": "Eileen Collins, astronaute — première pilote",
                        "train/coffee.png": "una taza de café ☕",
                        "train/cats/chelsea.jpg": "猫のチェルシー, \"Chelsea\"\nsecond line",
                        "test/hopper.jpg": "Grace Hopper, 1984"}


def _photo(path: Path, source: Path) -> None:
    """A real photo (scikit-image's, matplotlib's) re-encoded small by Pillow as its extension says."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        image.convert("RGB").resize((40, 32)).save(path, quality=90) if path.suffix == ".jpg" else \
            image.convert("RGB").resize((40, 32)).save(path)


def _image_folder(root: Path, fmt: str = "jsonl", broken: bool = True) -> None:
    """An ImageFolder repo as the Hub has it: `train/` and `test/` each with their images and a
    metadata file (`file_name` relative to it, one in a class subfolder), the card, .gitattributes;
    with `broken`, rows naming a file not there, one out of the folder, a repeated row, a line that
    is no JSON (CSV: a record of too many fields), and an image no row names."""
    import csv
    import matplotlib.cbook
    import skimage

    photos = Path(skimage.__file__).parent / "data"
    _photo(root / "train" / "astronaut.jpg", photos / "astronaut.png")
    _photo(root / "train" / "coffee.png", photos / "coffee.png")
    _photo(root / "train" / "cats" / "chelsea.jpg", photos / "chelsea.png")
    _photo(root / "test" / "hopper.jpg", Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    rows = {"train": [{"file_name": "astronaut.jpg", "text": IMAGEFOLDER_CAPTIONS["train/astronaut.jpg"], "likes": 3},
                      {"file_name": "coffee.png", "text": IMAGEFOLDER_CAPTIONS["train/coffee.png"], "likes": 1},
                      {"file_name": "cats/chelsea.jpg", "text": IMAGEFOLDER_CAPTIONS["train/cats/chelsea.jpg"],
                       "likes": 7}],
            "test": [{"file_name": "hopper.jpg", "text": IMAGEFOLDER_CAPTIONS["test/hopper.jpg"], "likes": 0}]}
    if broken:
        _photo(root / "train" / "unlisted.jpg", photos / "rocket.jpg")
        rows["train"] += [{"file_name": "gone.jpg", "text": "not there", "likes": 0},
                          {"file_name": "../test/hopper.jpg", "text": "out of train/", "likes": 0},
                          {"file_name": "coffee.png", "text": "again", "likes": 0}]
        rows["test"] += [{"file_name": "gone too.jpg", "text": "not there either", "likes": 0}]
    for split, split_rows in rows.items():
        if fmt == "jsonl":
            lines = [json.dumps(r, ensure_ascii=False) for r in split_rows]
            if broken and split == "train":
                lines.insert(2, '{"file_name": "cats/x.jpg", "text": "cut sh')
            (root / split / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        else:
            with open(root / split / "metadata.csv", "w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["file_name", "text", "likes"])
                for i, r in enumerate(split_rows):
                    if broken and split == "train" and i == 2:
                        writer.writerow(["cats/x.jpg", "a", "b", "too many"])
                    writer.writerow([r["file_name"], r["text"], r["likes"]])
    (root / "README.md").write_text("---\nlicense: cc0-1.0\n---\n# an image folder\n")
    (root / ".gitattributes").write_text("*.jpg filter=lfs diff=lfs merge=lfs -text\n")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_imagefolder_rows_large_values_are_left_out_of_its_lineage_marked(tmp_path: Path, fmt: str):
    """An ImageFolder's metadata row rode whole in its image's lineage (a 768-float CLIP embedding,
    a 20,000-character OCR text), where a `datasets` parquet row's values past `LINEAGE_VALUE_BYTES`
    are left out, marked `truncated`: now capped the same way (`lineage_text.lineage_value`).
    Written as users write them: a `json.dumps` a line, the csv module."""
    import csv

    from sources.lineage_text import LINEAGE_VALUE_BYTES

    for index in range(2):
        (tmp_path / f"{index}.png").write_bytes(_image_bytes(index + 1))
    embedding = [round(float(v), 6) for v in np.random.default_rng(0).random(768)]
    rows = [{"file_name": "0.png", "text": "a cat", "ocr": "x" * 20_000, "emb": embedding, "likes": 3},
            {"file_name": "1.png", "text": "a dog", "ocr": "short", "emb": embedding[:4], "likes": 1}]
    if fmt == "jsonl":
        (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    else:  # a CSV cell is text: the embedding as its JSON
        with open(tmp_path / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({**row, "emb": json.dumps(row["emb"])} for row in rows)
    records = sorted((i for i in _read_all(LaionSource("imgs", str(tmp_path))) if isinstance(i, ImageRecord)),
                     key=lambda r: r.lineage["path"])
    lineage = [r.lineage["huggingface"] for r in records]
    assert [r.lineage["caption"] for r in records] == ["a cat", "a dog"]
    assert lineage[0]["ocr"] == {"truncated": f"a text of 20000 characters, over the {LINEAGE_VALUE_BYTES} byte "
                                              "budget of a lineage value: left out"}
    assert lineage[0]["emb"]["truncated"].startswith("a list of 768 items" if fmt == "jsonl" else "a text of ")
    assert (lineage[1]["ocr"], lineage[1]["emb"]) == ("short", embedding[:4] if fmt == "jsonl" else
                                                      json.dumps(embedding[:4]))
    assert lineage[1]["likes"] == (1 if fmt == "jsonl" else "1")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_image_folder_with_metadata_takes_each_images_row(tmp_path: Path, fmt: str):
    """A Hub ImageFolder: its metadata file was one `not_an_image` reject and every caption lost.
    Each image now takes the row naming it (caption from `text`, other columns under
    `huggingface`), `test/` goes to val, every bad row is one counted reject, the metadata file
    none. Checked against `datasets` 5.2 (`load_dataset("imagefolder", data_dir=...)` on the folder
    without `broken` rows, jsonl and csv): the same four images, captions (the CSV's quoted comma
    and newline kept) and splits; with the broken rows it raises for `../` and for the bad line,
    and leaves out `unlisted.jpg` (so `unlisted_image` here) and `README.md` (no metadata file in its
    folder: a plain folder's file, the decoder's `not_an_image`, as before)."""
    _image_folder(tmp_path, fmt)
    source = LaionSource("imgs", str(tmp_path))
    assert source.resolved_format() == "folder"
    items = _read_all(source)
    records = {r.lineage["path"]: r for r in items if isinstance(r, ImageRecord)}
    assert records.pop("README.md").lineage == {"path": "README.md"}
    assert {p: r.lineage.get("caption") for p, r in records.items()} == IMAGEFOLDER_CAPTIONS
    assert {p: r.split_hint for p, r in records.items()} == {p: "val" if p.startswith("test/") else None
                                                              for p in IMAGEFOLDER_CAPTIONS}
    likes = {"train/astronaut.jpg": 3, "train/coffee.png": 1, "train/cats/chelsea.jpg": 7, "test/hopper.jpg": 0}
    assert {p: r.lineage["huggingface"]["likes"] for p, r in records.items()} == (
        likes if fmt == "jsonl" else {p: str(v) for p, v in likes.items()})
    assert records["train/cats/chelsea.jpg"].lineage["file"] == f"train/metadata.{fmt}"
    assert records["train/cats/chelsea.jpg"].lineage["hf_split"] == "train"
    meta = f"train/metadata.{fmt}"
    bad_line = ("bad_metadata", f"{meta} line 3: not JSON (Unterminated string starting at: line 1 column 37 "
                                "(char 36))") if fmt == "jsonl" else \
        ("bad_metadata", f"{meta} line 4: 4 fields, the header has 3")
    row_lines = (5, 6, 7) if fmt == "jsonl" else (7, 8, 9)  # the CSV: its header, a caption of two lines
    assert sorted((r.reason, r.detail) for r in items if isinstance(r, Reject)) == sorted([
        bad_line,
        ("duplicate_key", f"{meta} line {row_lines[2]}: 'coffee.png' is named again (line "
                          f"{2 if fmt == 'jsonl' else 3} is read)"),
        ("hidden_file", ".gitattributes: hidden (a tool's lock, temporary or repository file), not read"),
        ("missing_image", f"{meta} line {row_lines[0]}: 'train/gone.jpg' is not a file there"),
        ("missing_image", f"test/metadata.{fmt} line {2 if fmt == 'jsonl' else 3}: 'test/gone too.jpg' is not a "
                          "file there"),
        ("outside_root", f"{meta} line {row_lines[1]}: '../test/hopper.jpg' leaves train/, the metadata file's "
                         "folder (absolute, a URL or climbing out with ..)"),
        ("unlisted_image", "'train/unlisted.jpg': no row of a metadata file (metadata.jsonl, .csv, .parquet) in its "
                           "folder or above names it; datasets' ImageFolder leaves it out too")])
    assert len({i.key for i in items}) == len(items) and all("." not in i.key for i in items)
    assert {r.detail.split(" ")[0] for r in items if isinstance(r, Reject) and r.split_hint == "val"} == {
        f"test/metadata.{fmt}"}  # a held-out split's bad rows are counted in val


def test_an_image_folder_metadata_file_is_parsed_once_and_one_over_the_budget_is_never_read(tmp_path: Path,
                                                                                           monkeypatch):
    """The metadata file is read once for all its images (not once per image); one whose declared
    size is over the budget is never opened: one `file_too_large` reject, and each image it would
    have captioned an `unlisted_image` saying why."""
    from sources import fsio, imagefolder

    _image_folder(tmp_path, "jsonl", broken=False)
    imagefolder.read_metadata.cache_clear()
    opened = Counter()
    read_bytes = fsio.read_bytes
    monkeypatch.setattr(fsio, "read_bytes",
                        lambda uri, *a: (opened.update([fsio.basename(uri)]), read_bytes(uri, *a))[1])
    items = _read_all(LaionSource("imgs", str(tmp_path)))
    assert sum(isinstance(i, ImageRecord) for i in items) == 5 and opened["metadata.jsonl"] == 2  # and README.md
    size = (tmp_path / "train" / "metadata.jsonl").stat().st_size
    monkeypatch.setattr(imagefolder, "MAX_METADATA_BYTES", size - 1)
    opened.clear()
    imagefolder.read_metadata.cache_clear()
    items = _read_all(LaionSource("imgs", str(tmp_path)))
    assert opened["metadata.jsonl"] == 1  # test/'s alone
    rejects = Counter((r.reason, r.detail.split(";")[0]) for r in items if isinstance(r, Reject))
    assert rejects[("file_too_large", f"train/metadata.jsonl: {size} bytes, over the {size - 1} byte budget of a "
                                      "metadata file: not read")] == 1
    for image in ("astronaut.jpg", "coffee.png", "cats/chelsea.jpg"):
        assert rejects[("unlisted_image", f"'train/{image}': train/metadata.jsonl names the images here but is not "
                                          f"read ({size} bytes, over the {size - 1} byte budget of a metadata file: "
                                          "not read): its row, if any, is unknown")] == 1
    assert [i.lineage["path"] for i in items if isinstance(i, ImageRecord)] == ["README.md", "test/hopper.jpg"]


def test_an_image_folder_row_naming_a_link_out_or_an_absolute_path_is_outside_root(tmp_path: Path):
    """A row may name a file only inside its metadata file's folder: an absolute name is an
    `outside_root` reject of its row (`datasets` raises); a link there leading out of the root is
    the link's own `outside_root` reject (never opened), the row adding none."""
    root = tmp_path / "repo"
    (root / "train").mkdir(parents=True)
    Image.new("RGB", (16, 16), (200, 10, 10)).save(root / "train" / "in.jpg")
    Image.new("RGB", (16, 16), (10, 10, 200)).save(tmp_path / "out.jpg")
    (root / "train" / "link.jpg").symlink_to(tmp_path / "out.jpg")
    rows = [{"file_name": "in.jpg", "caption": "inside"}, {"file_name": "link.jpg", "caption": "a link out"},
            {"file_name": str(root / "train" / "in.jpg"), "caption": "absolute"}]
    (root / "train" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = _read_all(LaionSource("imgs", str(root)))
    assert [(i.lineage["path"], i.lineage["caption"]) for i in items if isinstance(i, ImageRecord)] == [
        ("train/in.jpg", "inside")]
    rejects = sorted((r.reason, r.detail) for r in items if isinstance(r, Reject))
    assert [reason for reason, _ in rejects] == ["outside_root", "outside_root"]
    assert rejects[0][1] == ("'train/link.jpg' is a link leading out of the source root (set follow_links: true to "
                             "allow it)")
    assert rejects[1][1].startswith("train/metadata.jsonl line 3: ") and "leaves train/" in rejects[1][1]


def test_an_image_folder_caption_column_is_read_and_a_missing_one_stops_the_build(tmp_path: Path):
    _image_folder(tmp_path, "csv", broken=False)
    items = _read_all(LaionSource("imgs", str(tmp_path), caption_column="likes"))
    assert {i.lineage["path"]: i.lineage.get("caption") for i in items if isinstance(i, ImageRecord)} == {
        "README.md": None, "train/astronaut.jpg": "3", "train/coffee.png": "1", "train/cats/chelsea.jpg": "7", "test/hopper.jpg": "0"}
    assert all("likes" not in i.lineage.get("huggingface", {}) for i in items if isinstance(i, ImageRecord))
    with pytest.raises(ValueError, match=r"has no caption column .title. \(its columns: .*\) \(format: folder\)$"):
        LaionSource("imgs", str(tmp_path), caption_column="title").units()


@pytest.mark.parametrize("code", ["EACCES", "EMFILE"])
def test_an_image_folder_metadata_file_the_system_refuses(tmp_path: Path, monkeypatch, code: str):
    """No permission to read `train/metadata.jsonl`: one `unreadable_file` reject, its images
    `unlisted_image` (the folder slice goes on, `test/` is built); too many open files is the
    machine's `MachineError`, never a reject committed for good."""
    import errno

    from sources import fsio, imagefolder
    from sources.records import MachineError

    _image_folder(tmp_path, "jsonl", broken=False)
    imagefolder.read_metadata.cache_clear()
    read = fsio.read_bytes

    def refuse(uri: str, *args):
        if "train" in uri:
            raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), uri)
        return read(uri, *args)

    monkeypatch.setattr(fsio, "read_bytes", refuse)
    source = LaionSource("imgs", str(tmp_path))
    if code == "EMFILE":
        with pytest.raises(MachineError, match="metadata.jsonl"):
            _read_all(source)
        return
    items = _read_all(source)
    rejects = Counter(r.reason for r in items if isinstance(r, Reject))
    assert rejects == {"unreadable_file": 1, "unlisted_image": 3, "hidden_file": 1}  # train/'s 3 images
    assert [i.lineage["path"] for i in items if isinstance(i, ImageRecord)] == ["README.md", "test/hopper.jpg"]
    unreadable = next(r for r in items if isinstance(r, Reject) and r.reason == "unreadable_file")
    assert unreadable.detail == "train/metadata.jsonl: unreadable (PermissionError: [Errno 13] Permission denied: " \
                                "'metadata.jsonl')"


def test_an_image_folder_copied_from_a_mac_matches_rows_in_nfc(tmp_path: Path):
    """A Mac's copy names `café.jpg` in NFD; the row (typed on Windows, saved by Excel) in NFC: one
    image, with its caption, and no `missing_image` for its row (the row was checked by its NFC
    name on disk)."""
    nfd = unicodedata.normalize("NFD", "café.jpg")
    (tmp_path / "train").mkdir()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(tmp_path / "train" / nfd, "JPEG")
    # as Excel's "CSV UTF-8" writes it: a byte order mark first, CRLF line ends
    (tmp_path / "train" / "metadata.csv").write_bytes("\ufefffile_name,text\r\ncafé.jpg,un café\r\n".encode())
    items = _read_all(LaionSource("imgs", str(tmp_path)))
    assert [(type(i).__name__, i.lineage.get("caption")) for i in items] == [("ImageRecord", "un café")]


def test_an_image_named_by_two_metadata_files_takes_the_nearest_row(tmp_path: Path):
    """`metadata.jsonl` at the top names `train/a.jpg`, `train/metadata.csv` names `a.jpg`: the
    image takes the row of its own folder's file; the other row is a `duplicate_key` naming it
    (`datasets` would yield the image twice, or refuse the mixed extensions)."""
    (tmp_path / "train").mkdir()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(tmp_path / "train" / "a.jpg")
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "train/a.jpg", "text": "from the top"}\n')
    (tmp_path / "train" / "metadata.csv").write_text("file_name,text\na.jpg,from train\n")
    items = _read_all(LaionSource("imgs", str(tmp_path)))
    assert [(i.lineage["caption"], i.lineage["file"], i.split_hint) for i in items if isinstance(i, ImageRecord)] == [
        ("from train", "train/metadata.csv", None)]
    assert [(r.reason, r.detail) for r in items if isinstance(r, Reject)] == [
        ("duplicate_key", "metadata.jsonl line 1: 'train/a.jpg' is named also by train/metadata.csv line 2, which "
                          "is read (the nearest metadata file)")]


def _controlnet_folder(root: Path) -> dict[str, bytes]:
    """A ControlNet-style ImageFolder as the Hub holds it: `train/metadata.parquet` (written with
    pyarrow, as `datasets` reads it) naming each photo (`file_name`), its conditioning image
    (`conditioning_image_file_name`) and a caption; one photo no row names. `load_dataset` (datasets
    5.2) gave one train split of 3 rows: `image` the photo, `conditioning_image` the edge map,
    `text` the caption; the unnamed photo left out."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pictures = {}
    for i in range(3):
        for folder, seed in (("images", i), ("conditioning", 10 + i)):
            pictures[f"{folder}/{i}.png"] = _encoded("PNG", seed, size=8)
            _write_named(root / "train" / folder, f"{i}.png", pictures[f"{folder}/{i}.png"])
    _write_named(root / "train" / "images", "unnamed.png", _encoded("PNG", 20, size=8))
    pq.write_table(pa.table({"file_name": [f"images/{i}.png" for i in range(3)],
                             "conditioning_image_file_name": [f"conditioning/{i}.png" for i in range(3)],
                             "text": [f"a photo {i}" for i in range(3)]}), root / "train" / "metadata.parquet")
    return pictures


def test_an_image_folder_with_metadata_parquet_and_conditioning_images(tmp_path: Path):
    """`metadata.parquet` (read by `datasets` as the `.jsonl`) was an image the decoder refused,
    its captions lost, every image plain: the conditioning images were built as web images of
    their own. Now each photo takes its row (caption, the conditioning image's name in the
    lineage), each conditioning image is the `extra_image` reject of its row, the unnamed photo
    `unlisted_image`."""
    pictures = _controlnet_folder(tmp_path)
    assert detect_format(str(tmp_path)) == "folder"
    items = _read_all(LaionSource("cn", str(tmp_path)))
    records = sorted((i.lineage["path"], i.lineage["caption"], i.lineage["huggingface"]["conditioning_image_file_name"],
                      i.read_bytes() == pictures[i.lineage["path"].removeprefix("train/")])
                     for i in items if isinstance(i, ImageRecord))
    assert records == [(f"train/images/{i}.png", f"a photo {i}", f"conditioning/{i}.png", True) for i in range(3)]
    assert sorted((r.reason, r.detail) for r in items if isinstance(r, Reject)) == [
        *[("extra_image", f"'train/conditioning/{i}.png' is the conditioning_image_file_name of train/metadata.parquet "
                          f"line {i + 1}: it rides in the lineage of that row's file_name image, never built as an "
                          "image of its own (one image per row)") for i in range(3)],
        ("unlisted_image", "'train/images/unnamed.png': no row of a metadata file (metadata.jsonl, .csv, .parquet) in "
                           "its folder or above names it; datasets' ImageFolder leaves it out too")]


def test_an_image_folder_with_metadata_parquet_at_its_top_is_no_img2dataset_files_layout(tmp_path: Path):
    """`metadata.parquet` at the root with its images in a folder below (`images/0.png`), which
    `datasets` 5.2 loads as an ImageFolder of 3 rows with their captions, was taken for
    img2dataset's `files` layout (a parquet beside a folder): captions lost, the metadata file an
    `unexpected_file` reject. It is a folder of images now, each photo with its row."""
    pictures = _controlnet_folder(tmp_path)
    train = tmp_path / "train"
    for child in train.iterdir():
        child.rename(tmp_path / child.name)
    train.rmdir()
    assert detect_format(str(tmp_path)) == "folder"
    items = _read_all(LaionSource("cn", str(tmp_path)))
    records = sorted((i.lineage["path"], i.lineage["caption"], i.read_bytes() == pictures[i.lineage["path"]])
                     for i in items if isinstance(i, ImageRecord))
    assert records == [(f"images/{i}.png", f"a photo {i}", True) for i in range(3)]
    assert sorted(r.reason for r in items if isinstance(r, Reject)) == ["extra_image"] * 3 + ["unlisted_image"]


def test_a_metadata_parquet_that_is_damaged_or_declares_too_much_is_never_read(tmp_path: Path, monkeypatch):
    """A cut `metadata.parquet` is one `bad_metadata` reject, its images `unlisted_image`; one
    whose footer declares more than the budget uncompressed is judged before its rows are read."""
    from sources import imagefolder

    _controlnet_folder(tmp_path)
    meta = tmp_path / "train" / "metadata.parquet"
    whole = meta.read_bytes()
    monkeypatch.setattr(imagefolder, "MAX_METADATA_PARQUET_BYTES", 64)
    assert imagefolder.read_metadata(str(meta)).reason == "file_too_large"
    meta.write_bytes(whole[: len(whole) // 2])
    items = _read_all(LaionSource("cn", str(tmp_path)))
    assert Counter(r.reason for r in items if isinstance(r, Reject)) == {"bad_metadata": 1, "unlisted_image": 7}
    assert not [i for i in items if isinstance(i, ImageRecord)]


def _class_folders(root: Path) -> None:
    """An ImageFolder without metadata as the Hub holds one (`train/<label>/`, `test/<label>/`, PNGs
    Pillow wrote). `load_dataset` (datasets 5.2) gave train 3 rows and test 2, a `label`
    ClassLabel(names=['cat', 'dog']) from the folder names: train [cat, dog, dog], test [cat, dog]."""
    for split, label, shade in (("train", "cat", 1), ("train", "dog", 2), ("train", "dog", 3), ("test", "cat", 4),
                                ("test", "dog", 5)):
        (root / split / label).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (shade, 0, 0)).save(root / split / label / f"{shade}.png")


def test_an_image_folder_without_metadata_keeps_its_test_folder_out_of_training(tmp_path: Path):
    """Without metadata, `test/cat/4.png` was a plain image split by hash: trained on, where
    `datasets` gives it the test split. A folder naming a held-out split puts it in val now; an
    image's own name is no split (`test-shot.png` at the top stays a photo)."""
    _class_folders(tmp_path)
    Image.new("RGB", (8, 8), (9, 0, 0)).save(tmp_path / "test-shot.png")
    items = _read_all(LaionSource("web", str(tmp_path)))
    assert sorted((i.lineage["path"], i.split_hint, i.lineage.get("hf_split")) for i in items) == [
        ("test-shot.png", None, None), ("test/cat/4.png", "val", "test"), ("test/dog/5.png", "val", "test"),
        ("train/cat/1.png", None, None), ("train/dog/2.png", None, None), ("train/dog/3.png", None, None)]


@pytest.mark.parametrize("metadata", [False, True])
def test_an_image_folder_repos_card_gives_its_splits(tmp_path: Path, metadata: bool, monkeypatch):
    """An image repo whose card names its splits (`split: test, path: images/holdout/**`): the
    held-out images were trained on (their folder names no split) and `images/other/`, which no
    config names, was built. As `load_dataset` (datasets 5.2) gave it, with or without a
    `metadata.jsonl` in each folder: train 1.png, 2.png; test 3.png, 4.png; other/ not loaded (here
    `other_hf_config`), the card no image."""
    shade = 0
    for folder in ("train", "holdout", "other"):
        rows = []
        for _ in range(2):
            shade += 1
            (tmp_path / "images" / folder).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (shade, 0, 0)).save(tmp_path / "images" / folder / f"{shade}.png")
            rows.append(json.dumps({"file_name": f"{shade}.png", "text": f"{folder} {shade}"}) + "\n")
        if metadata:
            (tmp_path / "images" / folder / "metadata.jsonl").write_text("".join(rows))
    (tmp_path / "README.md").write_text('---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n'
                                        '    path: "images/train/**"\n  - split: test\n    path: "images/holdout/**"\n'
                                        '---\n')
    from sources import fsio, hf_card

    asked, stats = Counter(), Counter()  # card_config's askings; stats of README.md (a request on a remote fs)
    read_card, file_state, exists = hf_card.read_card, fsio.file_state, fsio.exists
    card = lambda uri: uri.endswith("README.md")
    monkeypatch.setattr(hf_card, "read_card", lambda uri: (asked.update([uri]), read_card(uri))[1])
    monkeypatch.setattr(fsio, "file_state", lambda uri: (stats.update([uri] if card(uri) else []), file_state(uri))[1])
    monkeypatch.setattr(fsio, "exists", lambda uri: (stats.update([uri] if card(uri) else []), exists(uri))[1])
    items = _read_all(LaionSource("w", str(tmp_path)))
    # the card asked once by units(), once per metadata file's unit, and in the folder's one unit once
    # per metadata file (its images share the answer) and once per image of other/ (no data file of
    # the config: its metadata file unused, then the image itself, the config's name in the same
    # answer); without metadata once per image. Each asking is one stat of the card (the cache's
    # state), the first four (the state before and after its one read, of the configs' cache and of
    # the parse's, `hf_card.card_yaml`, which the labels share). It was 14 askings of 2 stats
    # each and more (the card stat'ed before it was read; an image of other/ asked 3 times).
    assert sum(asked.values()) == (1 + 3 + 3 + 2 if metadata else 1 + 6)
    assert sum(stats.values()) == sum(asked.values()) + 3
    assert sorted((i.lineage["path"], i.lineage["hf_split"], i.split_hint, i.lineage.get("caption"))
                  for i in items if isinstance(i, ImageRecord)) == [
        (f"images/{folder}/{n}.png", split, hint, f"{folder} {n}" if metadata else None)
        for folder, split, hint, n in (("holdout", "test", "val", 3), ("holdout", "test", "val", 4),
                                       ("train", "train", None, 1), ("train", "train", None, 2))]
    assert sorted((i.key, i.reason) for i in items if isinstance(i, Reject)) == [
        ("w-README--md", "unexpected_file"), ("w-images-other-5--png", "other_hf_config"),
        ("w-images-other-6--png", "other_hf_config"),
        *([("w-images-other-metadata--jsonl", "other_hf_config")] if metadata else [])]


def test_a_card_naming_its_images_by_extension_leaves_the_metadata_unused_as_datasets_does(tmp_path: Path):
    """A card whose configs name the images alone (`path: "train/*.png"`) beside a `metadata.jsonl`
    in each split folder: `load_dataset` (datasets 5.2) gave train 3, test 3, columns `image` only
    (the metadata, no data file of the config, unused). Every image was `other_hf_config` (its
    row's metadata file matched no pattern). Now each image takes its own split from the card, no
    caption, and each metadata file is one `other_hf_config` reject saying its rows are unused."""
    shade = 0
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        rows = []
        for _ in range(3):
            shade += 1
            Image.new("RGB", (8, 8), (shade, 0, 0)).save(tmp_path / split / f"{shade}.png")
            rows.append(json.dumps({"file_name": f"{shade}.png", "text": f"photo {shade}"}))
        (tmp_path / split / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "README.md").write_text('---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n'
                                        '    path: "train/*.png"\n  - split: test\n    path: "test/*.png"\n---\n')
    items = _read_all(LaionSource("w", str(tmp_path)))
    assert sorted((i.lineage["path"], i.lineage["hf_split"], i.split_hint, i.lineage.get("caption"))
                  for i in items if isinstance(i, ImageRecord)) == [
        *[(f"test/{n}.png", "test", "val", None) for n in (4, 5, 6)],
        *[(f"train/{n}.png", "train", None, None) for n in (1, 2, 3)]]
    rejects = sorted((i.key, i.reason, i.detail) for i in items if isinstance(i, Reject))
    assert [(key, reason) for key, reason, _ in rejects] == [
        ("w-README--md", "unexpected_file"), ("w-test-metadata--jsonl", "other_hf_config"),
        ("w-train-metadata--jsonl", "other_hf_config")]
    assert rejects[2][2].endswith("its rows are unused, the images it names take their split from the card")


def test_held_out_files_of_a_datasets_layout_are_read_into_val(tmp_path: Path):
    """`test/data-00000-of-00001.parquet` and `cifar10-test.parquet` (names `datasets` gives the
    test split) were read as split `data` and none: their rows were trained on."""
    row = lambda caption: [{"image": {"bytes": _encoded("PNG", 1, size=8), "path": None}, "text": caption, "label": 0}]
    _hf_parquet(tmp_path / "test" / "data-00000-of-00001.parquet", row("in test/"))
    _hf_parquet(tmp_path / "train" / "data-00000-of-00001.parquet", row("in train/"))
    _hf_parquet(tmp_path / "cifar10-test.parquet", row("cifar10-test"))
    items = _read_all(LaionSource("hf", str(tmp_path), "huggingface"))
    records = {r.lineage["caption"]: r for r in items if isinstance(r, ImageRecord)}
    assert {c: (r.split_hint, r.lineage["hf_split"]) for c, r in records.items()} == {
        "in test/": ("val", "test"), "in train/": (None, "train")}
    # beside split folders a split-named file is loaded by no pattern there (datasets 5.2: train/, test/ only)
    assert [(i.detail[:22], i.reason) for i in items if isinstance(i, Reject)] == [
        ("'cifar10-test.parquet'", "other_hf_config")]
    (tmp_path / "alone").mkdir()
    (tmp_path / "cifar10-test.parquet").rename(tmp_path / "alone" / "cifar10-test.parquet")
    (record,) = _read_all(LaionSource("hf", str(tmp_path / "alone"), "huggingface"))
    assert (record.lineage["caption"], record.split_hint, record.lineage["hf_split"]) == ("cifar10-test", "val", "test")


# -- a Hub repo's dataset card: `configs:` in README.md's YAML front matter -----------------------
# Each layout below was written with datasets 5.2 (`Dataset.from_dict(..., features=Features({"image":
# Image(), "text": Value("string")})).to_parquet(...)` per file, the card by hand as the Hub holds
# it) and loaded with `load_dataset(<folder>)` / `load_dataset(<folder>, <config>)`: the splits and
# files asserted here are those it gave (a file two splits name, `a/deep/val-1.parquet`, it loads in
# both: here once, held out).
HUB_CARD = """---
license: mit
configs:
- config_name: default
  data_files:
  - split: train
    path: "data/train-*"
  - split: test
    path: "holdout/*.parquet"
- config_name: extra
  data_files: "extra/*.parquet"
---
# A dataset card
"""


def _card_repo(root: Path, card: str, files: list[str]) -> None:
    """A Hub repo: one row per parquet file (captioned with the file's path) and its card."""
    for name in files:
        _hf_parquet(root / name, [{"image": {"bytes": _encoded("PNG", len(name), size=8), "path": None},
                                   "text": name, "label": 0}])
    (root / "README.md").write_text(card)


def _splits_built(source: LaionSource) -> tuple[dict[str, list[tuple[str, str | None]]], dict[str, str]]:
    """({hf_split: [(file, split_hint)]} of the records, {file: reason} of the parquets' rejects)."""
    splits: dict[str, list] = {}
    rejected = {}
    for item in _read_all(source):
        if isinstance(item, ImageRecord):
            splits.setdefault(item.lineage["hf_split"], []).append((item.lineage["caption"], item.split_hint))
        elif "parquet" in item.key:
            rejected[item.detail.split("'")[1]] = item.reason
    return {k: sorted(v) for k, v in splits.items()}, rejected


def test_a_cards_configs_give_the_splits_and_the_files_of_the_config_built(tmp_path: Path):
    """A held-out split named only in the card (`split: test, path: holdout/*.parquet`) was trained
    on (its file's name says no split), and the files of another config were built too: now the
    card's default config is built, its test split in val, the other config's file one
    `other_hf_config` reject; `hf_config: extra` builds that one alone."""
    _card_repo(tmp_path, HUB_CARD, ["data/train-00000-of-00001.parquet", "holdout/part-0.parquet",
                                    "extra/other.parquet"])
    assert detect_format(str(tmp_path)) == "huggingface"
    assert _splits_built(LaionSource("hf", str(tmp_path))) == (
        {"train": [("data/train-00000-of-00001.parquet", None)], "test": [("holdout/part-0.parquet", "val")]},
        {"extra/other.parquet": "other_hf_config"})
    assert _splits_built(LaionSource("hf", str(tmp_path), hf_config="extra")) == (
        {"train": [("extra/other.parquet", None)]},
        {"data/train-00000-of-00001.parquet": "other_hf_config", "holdout/part-0.parquet": "other_hf_config"})


@pytest.mark.parametrize("card", ["---\n{body}--- \n# card\n", "\n---\n{body}---\n# card\n",
                                  "---\r\n{crlf}---\t\r\n# card\r\n"])
def test_a_cards_front_matter_is_found_as_huggingface_hub_finds_it(tmp_path: Path, card: str):
    """huggingface_hub's `DatasetCard` (what datasets 5.2 reads a card with) takes a closing `--- `
    with trailing spaces and blank lines before the opening `---`: `load_dataset` gave train
    data/part-0, test holdout/part-0. Such a card's configs were ignored here and the held-out
    file trained on."""
    body = ('configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: "data/*"\n'
            '  - split: test\n    path: "holdout/*"\n')
    _card_repo(tmp_path, card.format(body=body, crlf=body.replace("\n", "\r\n")),
               ["data/part-0.parquet", "holdout/part-0.parquet"])
    assert _splits_built(LaionSource("hf", str(tmp_path), "huggingface")) == (
        {"train": [("data/part-0.parquet", None)], "test": [("holdout/part-0.parquet", "val")]}, {})


@pytest.mark.parametrize("config, files, expected", [
    ("main", ["a/deep/er/t.parquet", "a/deep/val-1.parquet", "b/x.parquet", "b/y.parquet", "c/test.parquet",
              "test.parquet"],
     {"a/deep/er/t.parquet": "train", "a/deep/val-1.parquet": "validation", "b/x.parquet": "train",
      "c/test.parquet": "holdout", "b/y.parquet": None, "test.parquet": None}),
    ("en", ["en/train.parquet", "en/test.parquet", "fr/train.parquet"],
     {"en/train.parquet": "train", "en/test.parquet": "test", "fr/train.parquet": None}),
    ("default", ["data/test-0.parquet", "more/test1.parquet", "more/other.parquet"],
     {"data/test-0.parquet": "train", "more/test1.parquet": "train", "more/other.parquet": None}),
])
def test_card_patterns_resolve_as_datasets_resolves_them(tmp_path: Path, config: str, files: list[str],
                                                         expected: dict[str, str | None]):
    """Lists of patterns, `**` across folders, a `data_dir` without `data_files` (its files split
    by their names), a list of patterns without splits (all train, whatever the names say)."""
    from sources import hf_card

    cards = {"main": "configs:\n- config_name: main\n  data_files:\n  - split: train\n    path: [\"a/**/*.parquet\", "
                     "\"b/x.parquet\"]\n  - split: validation\n    path: a/deep/val-*.parquet\n  - split: holdout\n"
                     "    path: c/*.parquet\n",
             "en": "configs:\n- config_name: en\n  data_dir: en\n  default: true\n- config_name: fr\n  data_dir: fr\n",
             "default": "configs:\n- config_name: default\n  data_files:\n  - \"data/*.parquet\"\n  - "
                        "\"more/test*.parquet\"\n- config_name: other\n  data_files: \"data/*.parquet\"\n"}
    _card_repo(tmp_path, f"---\n{cards[config]}---\n", files)
    assert {f: hf_card.file_split(str(tmp_path), f, None) for f in files} == expected


# Repos without a card's configs, each file holding one row captioned with its path, loaded with
# `datasets.load_dataset(folder)` (5.2.0): the first default pattern set naming any file names all
# it loads (`_get_data_files_patterns`); `<config>/<split>/` folders are no configs there (`name="en"`
# raises "BuilderConfig 'en' not found", `data_dir="en"` loads en/ alone).
@pytest.mark.parametrize("files, datasets_gave", [
    (["en/train/0000.parquet", "en/test/0000.parquet", "fr/train/0000.parquet", "fr/misc/0000.parquet"],
     {"train": ["en/train/0000.parquet", "fr/train/0000.parquet"], "test": ["en/test/0000.parquet"]}),
    (["data/train-00000-of-00001.parquet", "data/extra.parquet", "test/x.parquet"],
     {"train": ["data/train-00000-of-00001.parquet"]}),
    (["train/0.parquet", "test/0.parquet", "other/0.parquet"], {"train": ["train/0.parquet"], "test": ["test/0.parquet"]}),
    (["train.parquet", "test.parquet", "extra.parquet"], {"train": ["train.parquet"], "test": ["test.parquet"]}),
    (["a.parquet", "b/c.parquet"], {"train": ["a.parquet", "b/c.parquet"]}),
    (["train/0.parquet", "test/0.parquet", "__old__/train/1.parquet"],  # a `__x/` folder: never a default pattern's
     {"train": ["train/0.parquet"], "test": ["test/0.parquet"]}),
    (["a.parquet", "__x/b.parquet"], {"train": ["a.parquet"]}),
])
def test_a_repo_without_card_configs_loads_what_datasets_loads(tmp_path: Path, files: list[str],
                                                               datasets_gave: dict[str, list[str]]):
    """Each file took the split its own path gives, as if alone: `fr/misc/0000.parquet`,
    `data/extra.parquet` beside push_to_hub's shards and `extra.parquet` beside `train.parquet`
    were trained on, `test/x.parquet` beside the shards built; `datasets` loads none of them. Now
    they are `other_hf_config` rejects, never read, and the others take the splits datasets gives."""
    _card_repo(tmp_path, "---\nlicense: mit\n---\n", files)
    splits, rejected = _splits_built(LaionSource("hf", str(tmp_path)))
    assert {split: [name for name, _ in built] for split, built in splits.items()} == datasets_gave
    loaded = {name for names in datasets_gave.values() for name in names}
    assert rejected == {name: "other_hf_config" for name in files if name not in loaded}


def test_a_card_config_with_data_dir_alone_loads_what_datasets_loads_there(tmp_path: Path):
    """`config_name: en, data_dir: en`: `load_dataset(repo, name="en")` (datasets 5.2.0) gave train
    en/train/0, test en/test/0: the default patterns are resolved under `data_dir`, and
    `en/extra/0.parquet` (beside split folders) is in no split. It was trained on."""
    from sources import hf_card

    files = ["en/train/0.parquet", "en/test/0.parquet", "en/extra/0.parquet", "fr/train/0.parquet"]
    _card_repo(tmp_path, "---\nconfigs:\n- config_name: en\n  data_dir: ./en\n- config_name: fr\n  data_dir: fr\n---\n",
               files)
    assert hf_card.file_splits(str(tmp_path), files, "en") == ["train", "test", None, None]
    splits, rejected = _splits_built(LaionSource("hf", str(tmp_path), hf_config="en"))
    assert splits == {"train": [("en/train/0.parquet", None)], "test": [("en/test/0.parquet", "val")]}
    assert rejected == {"en/extra/0.parquet": "other_hf_config", "fr/train/0.parquet": "other_hf_config"}


def test_hf_config_naming_a_folder_of_a_repo_without_a_card_says_to_set_path(tmp_path: Path):
    """`datasets` takes `<config>/<split>/` folders for no config (`name=` raises, `data_dir=` builds
    one): `hf_config: en` stops the build saying path is the way to build en/ alone."""
    _card_repo(tmp_path, "---\nlicense: mit\n---\n", ["en/train/0.parquet", "fr/train/0.parquet"])
    with pytest.raises(ValueError, match="hf_config") as raised:
        LaionSource("hf", str(tmp_path), "huggingface", hf_config="en").units()
    assert f"set path to {tmp_path / 'en'}, as datasets' data_dir" in str(raised.value)
    splits, rejected = _splits_built(LaionSource("hf", str(tmp_path / "en")))
    assert (splits, rejected) == ({"train": [("en/train/0.parquet", None)]}, {})  # the caption: its path at the top


@pytest.mark.parametrize("card, hf_config, says", [
    ("configs:\n- config_name: a\n  data_files: a/*\n- config_name: b\n  data_files: b/*\n", None,
     "several configs and none is the default (a, b): set hf_config"),
    (HUB_CARD.split("---\n")[1], "nope", "has no config 'nope' (its configs: default, extra)"),
    ("license: mit\n", "extra", "hf_config is 'extra' but there is no README.md with configs"),
    ("configs: [\n", None, "its YAML front matter does not parse"),
    ("configs:\n- config_name: a\n  data_files: {train: a/*}\n", None, "data_files is a dict"),
    # datasets 5.2: "Expected data_files in YAML to be ... a list of dicts with two keys: 'split' and 'path'"
    ("configs:\n- config_name: a\n  data_files:\n  - split: test-set\n    path: a/*\n", None,
     "split 'test-set' is no split name datasets takes"),
])
def test_a_card_whose_configs_cannot_be_taken_stops_the_build_naming_hf_config(tmp_path: Path, card: str,
                                                                               hf_config: str | None, says: str):
    _card_repo(tmp_path, f"---\n{card}\n---\n", ["a/x.parquet", "b/x.parquet"])
    with pytest.raises(ValueError, match="hf_config") as raised:
        LaionSource("hf", str(tmp_path), "huggingface", hf_config=hf_config).units()
    assert says in str(raised.value)


def test_a_huge_card_or_an_alias_bomb_is_judged_before_it_is_read(tmp_path: Path):
    """The card is a user file: one over `MAX_CARD_BYTES` is not read; a billion-laughs card
    parses in linear time (an alias is a reference) and only the configs' shapes are walked."""
    import time

    from sources import hf_card

    bomb = "lol0: &a0 [lol]\n" + "".join(f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 30))
    _card_repo(tmp_path, f"---\n{bomb}configs:\n- config_name: x\n  data_files: a/*\n  features: *a29\n---\n",
               ["a/x.parquet"])
    started = time.monotonic()
    assert _splits_built(LaionSource("hf", str(tmp_path)))[0] == {"train": [("a/x.parquet", None)]}
    assert time.monotonic() - started < 5
    (tmp_path / "README.md").write_text(f"---\n{bomb}configs: *a29\n---\n")  # each config a list of copies
    with pytest.raises(ValueError, match=r"a config without a config_name \(a list\)"):
        LaionSource("hf", str(tmp_path)).units()
    assert time.monotonic() - started < 5
    (tmp_path / "README.md").write_text("---\nconfigs: []\n---\n" + "x" * hf_card.MAX_CARD_BYTES)
    with pytest.raises(ValueError, match="over the 1048576 byte budget of a dataset card"):
        LaionSource("hf", str(tmp_path)).units()


def test_a_card_edited_moves_its_files_split_at_a_rerun(tmp_path: Path):
    """A unit records the split the card gave its file (`hf_card.file_split`, a derived input), so a
    rerun after the card moved a file to another split renders that unit again."""
    from sources import fsio

    _card_repo(tmp_path, HUB_CARD, ["data/train-00000-of-00001.parquet", "holdout/part-0.parquet"])
    source = LaionSource("hf", str(tmp_path))
    unit = next(u for u in source.units() if "holdout" in u.uris[0])
    with fsio.recording_inputs() as record:
        list(source.read(unit))
    (key, value), = [(k, v) for k, v in record.derived.items() if k[0] == "sources.hf_card.file_split"]
    assert value == "test"
    (tmp_path / "README.md").write_text(HUB_CARD.replace("split: test", "split: train2"))
    assert fsio.rederive(key) == "train2"


@pytest.mark.parametrize("follow_links", [False, True])
def test_a_path_only_row_naming_a_link_out_of_the_root(tmp_path: Path, follow_links: bool):
    """A path-only row (bytes null) naming a file link or a file under a folder link that leads out
    of the root: never opened (`outside_root`, naming `follow_links`) unless `follow_links: true`,
    then read from where the link leads. No test failed with the check removed."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    pictures = {"file": _encoded("PNG", 1, size=8), "folder": _encoded("PNG", 2, size=8)}
    (outside / "a.png").write_bytes(pictures["file"])
    (outside / "b.png").write_bytes(pictures["folder"])
    root = tmp_path / "repo"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.png").symlink_to(outside / "a.png")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    _hf_parquet(root / "train.parquet", [{"image": {"bytes": None, "path": "images/a.png"}, "text": "file", "label": 0},
                                         {"image": {"bytes": None, "path": "linked/b.png"}, "text": "folder",
                                          "label": 0}])
    source = LaionSource("hf", str(root), "huggingface", follow_links=follow_links)
    rows = [i for unit in source.units() if unit.kind == "hf_parquet" for i in source.read(unit)]
    if follow_links:
        assert {r.lineage["caption"]: r.read_bytes() for r in rows} == pictures
    else:
        assert [(r.reason, r.detail.split(":")[0]) for r in rows] == [("outside_root", "row 0 of train.parquet"),
                                                                      ("outside_root", "row 1 of train.parquet")]
        assert all("follow_links" in r.detail for r in rows)


def test_a_path_only_row_written_by_datasets_keeps_its_path_under_the_root(tmp_path: Path):
    """`Dataset.from_dict({"image": [absolute paths]}).cast_column("image", Image()).to_parquet()`
    keeps each row's absolute path, bytes null: the lineage carried the machine's path
    (`/home/...`); it now holds the file's path under the source root."""
    picture = _encoded("PNG", 1, size=8)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "0.png").write_bytes(picture)
    _hf_parquet(tmp_path / "train.parquet", [{"image": {"bytes": None, "path": str(tmp_path / "imgs" / "0.png")},
                                              "text": "a", "label": 0}])
    source = LaionSource("hf", str(tmp_path), "huggingface")
    (record,) = [i for unit in source.units() if unit.kind == "hf_parquet" for i in source.read(unit)]
    assert record.read_bytes() == picture and record.lineage["image_path"] == "imgs/0.png"


def test_image_files_path_only_rows_name_are_theirs_and_the_other_files_share_units(tmp_path: Path, monkeypatch):
    """`Dataset.from_dict({"image": paths}).cast_column("image", Image()).to_parquet()` beside its
    images: each image was a unit of its own and an `unexpected_file` reject though a row built it
    (400 PNGs: 401 units, 400 rejects). Now a named image is its row's alone, and the files no row
    names (an image, the card) are rejects in units of `FOLDER_FILES_PER_UNIT`."""
    import sources.web_unit_plan as web_unit_plan

    monkeypatch.setattr(web_unit_plan, "FOLDER_FILES_PER_UNIT", 2)
    pictures = [_encoded("PNG", i, size=8) for i in range(5)]
    (tmp_path / "imgs").mkdir()
    for i, picture in enumerate(pictures):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(picture)
    (tmp_path / "README.md").write_text("# card\n")
    named = [{"image": {"bytes": None, "path": str(tmp_path / "imgs" / f"{i}.png")}, "text": f"c{i}", "label": 0}
             for i in range(4)]  # as datasets writes them: absolute paths; imgs/4.png named by none
    _hf_parquet(tmp_path / "train.parquet", named, row_group_size=2)
    source = LaionSource("hf", str(tmp_path))
    units = source.units()
    assert [(u.kind, len(u.uris)) for u in units] == [("hf_parquet", 1), ("hf_other", 2)]
    items = [i for unit in units for i in source.read(unit)]
    assert {r.lineage["caption"]: r.read_bytes() for r in items if isinstance(r, ImageRecord)} == {
        f"c{i}": pictures[i] for i in range(4)}
    assert sorted((r.reason, r.detail.split(" ")[0]) for r in items if isinstance(r, Reject)) == [
        ("unexpected_file", "'README.md'"), ("unexpected_file", "'imgs/4.png'")]


def test_a_list_of_images_column_is_refused_by_name(tmp_path: Path):
    """`Features({"image": Image(), "frames": List(Image())})` as datasets 5.2 writes it (schema and
    metadata below are its own): the frames rode in the lineage as nulls, no reject; a file with
    only such a column was taken for a plain folder, its parquet an image the decoder failed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    metadata = {b"huggingface": b'{"info": {"features": {"image": {"_type": "Image"}, "frames": {"feature": '
                                b'{"_type": "Image"}, "_type": "List"}, "text": {"dtype": "string", "_type": "Value"}}}}'}
    schema = pa.schema([("image", image), ("frames", pa.list_(image)), ("text", pa.string())], metadata=metadata)
    picture, frame = _encoded("PNG", 1, size=8), _encoded("PNG", 2, size=8)
    rows = [{"image": {"bytes": picture, "path": None}, "frames": [{"bytes": frame, "path": None}] * 2, "text": "x"}]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "train.parquet")
    record, reject = sorted(_read_all(LaionSource("hf", str(tmp_path))), key=lambda i: type(i).__name__)
    assert record.data == picture and "frames" not in record.lineage["huggingface"]
    assert (reject.reason, reject.detail.split(" not ")[0]) == (
        "image_list_column", "train.parquet: column 'frames' holds a list of images per row (Sequence(Image())),")

    only = tmp_path / "only"
    only.mkdir()
    bare = pa.schema([("frames", pa.list_(image)), ("text", pa.string())], metadata={b"huggingface": (
        b'{"info": {"features": {"frames": {"feature": {"_type": "Image"}, "_type": "List"}, '
        b'"text": {"dtype": "string", "_type": "Value"}}}}')})
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in rows[0].items() if k != "image"}], schema=bare),
                   only / "train.parquet")
    assert detect_format(str(only)) == "huggingface"
    with pytest.raises(ValueError, match="no Image columns; frames holds a list of images per row"):
        LaionSource("hf", str(only)).units()


def test_a_top_metadata_file_naming_a_test_image_puts_it_in_val(tmp_path: Path):
    """`metadata.jsonl` at the top names `train/a.jpg` and `test/b.jpg`: the split was the top
    file's (`train`), so `test/b.jpg` was trained on; `datasets` 5.2 puts it in its test split (its
    split folders decide). Each image's split is now the held-out one of its folders or its file's."""
    for name in ("train/a.jpg", "test/b.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (200, 10, 10)).save(tmp_path / name)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "train/a.jpg", "text": "A"}\n'
                                             '{"file_name": "test/b.jpg", "text": "B"}\n')
    items = _read_all(LaionSource("imgs", str(tmp_path)))
    assert {i.lineage["path"]: (i.lineage["caption"], i.lineage["hf_split"], i.split_hint) for i in items} == {
        "train/a.jpg": ("A", "train", None), "test/b.jpg": ("B", "test", "val")}


def test_an_image_folder_whose_folder_a_mac_named_in_nfd_is_read(tmp_path: Path):
    """A Mac's copy keeps the folder `Café/` in NFD: its metadata unit failed (`unit_failed`: its
    folder was listed by the NFC name, not there, its `missing_image` lost) and the metadata file
    was looked for under the NFC name (the image an `unlisted_image`). The disk's names are used."""
    folder = tmp_path / unicodedata.normalize("NFD", "Café")
    folder.mkdir()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(folder / "a.jpg")
    (folder / "metadata.jsonl").write_text('{"file_name": "a.jpg", "text": "a cup"}\n'
                                           '{"file_name": "gone.jpg", "text": "not there"}\n')
    items = _read_all(LaionSource("imgs", str(tmp_path)))
    assert [(type(i).__name__, i.lineage.get("caption") if isinstance(i, ImageRecord) else i.detail)
            for i in items] == [("Reject", "Café/metadata.jsonl line 2: 'Café/gone.jpg' is not a file there"),
                                ("ImageRecord", "a cup")]


def test_a_metadata_file_that_is_no_imagefolder_metadata_leaves_the_folder_plain(tmp_path: Path):
    """Kaggle's ISIC layout (`train/*.jpg`, a top `metadata.csv` keyed by `isic_id`, no
    `file_name`) gave 0 images, every one an `unlisted_image`; `test/metadata.jsonl` beside plain
    `train/cat/*.jpg` made those `unlisted_image` too, where `datasets` 5.2 yields them. An image
    with no ImageFolder metadata file in its folder or above is a plain image, as it was before."""
    for i in range(3):
        (tmp_path / "isic" / "train").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(tmp_path / "isic" / "train" / f"ISIC_000000{i}.jpg")
    (tmp_path / "isic" / "metadata.csv").write_text("isic_id,diagnosis,age_approx\n" + "".join(
        f"ISIC_000000{i},nevus,45\n" for i in range(3)))
    items = _read_all(LaionSource("isic", str(tmp_path / "isic")))
    assert sorted(i.lineage["path"] for i in items if isinstance(i, ImageRecord)) == [
        f"train/ISIC_000000{i}.jpg" for i in range(3)]
    assert [(r.reason, r.detail) for r in items if isinstance(r, Reject)] == [
        ("bad_metadata", "metadata.csv: no file_name nor <name>_file_name column (its columns: isic_id, diagnosis, "
                         "age_approx): not Hugging Face ImageFolder metadata, not read; the images beside it are read "
                         "as a plain folder's")]
    part = tmp_path / "partial"
    for name in ("train/cat/1.jpg", "train/dog/2.jpg", "test/x.jpg"):
        (part / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (200, 10, 10)).save(part / name)
    (part / "test" / "metadata.jsonl").write_text('{"file_name": "x.jpg", "text": "x"}\n')
    items = _read_all(LaionSource("imgs", str(part)))
    assert {i.lineage["path"]: (i.lineage.get("caption"), i.split_hint) for i in items} == {
        "train/cat/1.jpg": (None, None), "train/dog/2.jpg": (None, None), "test/x.jpg": ("x", "val")}


def test_an_image_folder_metadata_parse_is_kept_small_and_the_cache_by_bytes(tmp_path: Path):
    """Four parsed 64 MiB `metadata.jsonl` (521k rows of a caption and a few numbers, as a
    LAION-style export writes them) grew a worker by 2 GiB: each row was kept as a dict (8 times the
    file's size) and four were kept whatever their size. A row now keeps its line (its values taken
    apart for the image asking), and the cache stands for at most `max_bytes` of files."""
    import tracemalloc

    from sources import fsio, imagefolder

    paths = []
    for name in "abc":
        (tmp_path / name).mkdir()
        paths.append(str(tmp_path / name / "metadata.jsonl"))
        with open(paths[-1], "w", encoding="utf-8") as handle:
            for i in range(6000):
                handle.write(json.dumps({"file_name": f"img_{i:07d}.jpg", "text": f"a photo of item {i}, short "
                                         "caption", "width": 512, "height": 384, "aesthetic": 5.5}) + "\n")
    size = os.path.getsize(paths[0])
    tracemalloc.start()
    parsed = imagefolder.read_metadata.__wrapped__(paths[0])
    kept = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(parsed.rows) == 6000 and kept < 4 * size  # 3.2 times; as dicts: 7.4
    index, line, raw = parsed.rows["img_0000042.jpg"]
    assert (index, line) == (42, 43) and parsed.values(raw) == json.loads(open(paths[0]).readlines()[42])
    parses = Counter()
    cached = fsio.cached_input(maxsize=4, max_bytes=2 * size + 10)(
        lambda uri: (parses.update([uri]), imagefolder.read_metadata.__wrapped__(uri))[1])
    for uri in (paths[0], paths[1], paths[0], paths[2], paths[0], paths[1]):
        cached(uri)
    assert [parses[p] for p in paths] == [1, 2, 1]  # c's parse made room by dropping b, the oldest


def test_an_image_folder_asks_the_disk_once_per_folder_and_sees_a_new_metadata_file(tmp_path: Path, monkeypatch):
    """Each image asked the disk for four metadata files (its folder's and the root's csv and
    jsonl), and the metadata unit did again for each row (20k images: 20 s against 2.7 s without
    metadata). What a folder holds is now remembered while the folder is unchanged: a metadata
    file written there later (the same process reading again) is seen."""
    from sources import fsio

    (tmp_path / "train" / "sub").mkdir(parents=True)
    for i in range(40):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / "train" / f"{i:03d}.jpg")
    Image.new("RGB", (8, 8), (0, 0, 200)).save(tmp_path / "train" / "sub" / "x.jpg")
    (tmp_path / "train" / "metadata.jsonl").write_text("".join(
        json.dumps({"file_name": f"{i:03d}.jpg", "text": f"photo {i}"}) + "\n" for i in range(40)))
    asked = Counter()
    exists = fsio.exists
    monkeypatch.setattr(fsio, "exists", lambda uri: (asked.update([uri]), exists(uri))[1])
    items = _read_all(LaionSource("imgs", str(tmp_path)))
    assert sum(isinstance(i, ImageRecord) for i in items) == 40
    # train/, train/sub/, the root: csv, jsonl, parquet each, once (README.md, a card's configs: its
    # cache's state of it, no exists beside)
    assert max(asked.values()) == 1 and len(asked) == 9
    (tmp_path / "train" / "sub" / "metadata.csv").write_text("file_name,text\nx.jpg,a blue square\n")
    items = _read_all(LaionSource("imgs", str(tmp_path)))
    assert {i.lineage["path"]: i.lineage.get("caption") for i in items}["train/sub/x.jpg"] == "a blue square"


def test_path_only_rows_of_a_row_group_over_budget_claim_no_image(tmp_path: Path, monkeypatch):
    """A row group over `ROW_GROUP_BYTES` is never read, not even its `image.path` leaf to learn which
    image files its rows name: its rows are `row_group_too_large` rejects, and the files they would
    have named are counted as files no row claims (nothing built, nothing lost)."""
    import sources.hf_parquet as hf_parquet
    import sources.web_unit_plan as web_unit_plan

    monkeypatch.setattr(web_unit_plan, "FOLDER_FILES_PER_UNIT", 8)
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 1)  # every group is over it
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(_encoded("PNG", i, size=8))
    named = [{"image": {"bytes": None, "path": str(tmp_path / "imgs" / f"{i}.png")}, "text": f"c{i}", "label": 0}
             for i in range(3)]
    _hf_parquet(tmp_path / "train.parquet", named, row_group_size=2)
    source = LaionSource("hf", str(tmp_path))
    items = [i for unit in source.units() for i in source.read(unit)]
    assert not [r for r in items if isinstance(r, ImageRecord)]
    assert sorted(r.reason for r in items if isinstance(r, Reject)) == ["row_group_too_large"] * 3 + [
        "unexpected_file"] * 3


def _appended_shard(made: Path, shards: Path, appender: str) -> dict[str, bytes]:
    """An img2dataset shard `00000.tar` made by GNU tar from its sample files, named as img2dataset
    names them, then fixed up by `appender -rf`: a new image of sample 1 and a new caption of
    sample 0 appended at its end, as a resumed download or a user's fix-up does, then two newer
    images of sample 1 (three copies: the middle one is no last copy either). The files as they
    are now."""
    made.mkdir()
    for index in range(3):
        key = f"00000000{index}"
        (made / f"{key}.jpg").write_bytes(_image_bytes(index))
        (made / f"{key}.txt").write_text(f"caption {index}")
        (made / f"{key}.json").write_text(json.dumps({"key": key, "status": "success", "caption": f"caption {index}"}))
    subprocess.run(["tar", "-cf", str(shards / "00000.tar"), "-C", str(made), *sorted(p.name for p in made.iterdir())],
                   check=True)
    (made / "000000001.jpg").write_bytes(_image_bytes(2))  # shades over 4 are all white
    (made / "000000000.txt").write_text("a mended caption")
    subprocess.run([appender, "-rf", str(shards / "00000.tar"), "-C", str(made), "000000001.jpg", "000000000.txt"],
                   check=True)
    for shade in (3, 4):
        (made / "000000001.jpg").write_bytes(_image_bytes(shade))
        subprocess.run([appender, "-rf", str(shards / "00000.tar"), "-C", str(made), "000000001.jpg"], check=True)
    return {p.name: p.read_bytes() for p in made.iterdir()}


def _built(items) -> tuple[list, list]:
    """(key, image bytes, lineage) of each record, sorted, and (key, reason) of each reject."""
    records = sorted((i.key, i.read_bytes(), json.dumps(i.lineage, sort_keys=True))
                     for i in items if isinstance(i, ImageRecord))
    return records, sorted((i.key, i.reason) for i in items if isinstance(i, Reject))


@pytest.mark.parametrize("appender", ["tar", "bsdtar"])
def test_a_shard_with_members_appended_by_tar_r_builds_what_its_extracted_folder_builds(tmp_path: Path,
                                                                                       appender: str, monkeypatch):
    """`tar -rf 00000.tar x.jpg` appends a second copy of a member; GNU tar and bsdtar extract the
    last one. The shard was read as a stream: the first copy was built and the appended one was a
    `duplicate_key` (its key's run had ended), so the tar and its extracted folder (read as
    img2dataset's `output_format=files`) built other images and captions. Now a sample gathers
    its members' last copies wherever they lie, each shadowed copy a `duplicate_member` reject:
    whole, in parts, or gzipped, the shard builds what its extracted folder builds."""
    import gzip

    from sources import web_units

    if shutil.which(appender) is None or shutil.which("tar") is None:
        pytest.skip(f"needs GNU tar and {appender}")
    shards = tmp_path / "shards"
    shards.mkdir()
    files = _appended_shard(tmp_path / "made", shards, appender)
    for tool in ("tar", "bsdtar"):  # both extract the appended copies
        out = tmp_path / tool / "00000"
        out.mkdir(parents=True)
        if shutil.which(tool):
            subprocess.run([tool, "-xf", str(shards / "00000.tar"), "-C", str(out)], check=True)
            assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    extracted, rejects = _built(_read_all(LaionSource("web", str(tmp_path / "tar"), "files")))
    assert not rejects and len(extracted) == 3
    shadowed = [("web-00000-000000000", "duplicate_member")] + [("web-00000-000000001", "duplicate_member")] * 3
    assert _built(_read_all(LaionSource("web", str(shards), "webdataset"))) == (extracted, shadowed)
    monkeypatch.setattr(web_units, "TAR_PART_BYTES", 4096)  # read in parts, each seeking over the others' samples
    assert len(LaionSource("web", str(shards), "webdataset").units()) > 1
    assert _built(_read_all(LaionSource("web", str(shards), "webdataset"))) == (extracted, shadowed)
    (shards / "00000.tar.gz").write_bytes(gzip.compress((shards / "00000.tar").read_bytes(), mtime=0))
    (shards / "00000.tar").unlink()
    assert _built(_read_all(LaionSource("web", str(shards), "webdataset"))) == (extracted, shadowed)


def test_a_metadata_parquet_of_one_repeated_prompt_is_judged_by_its_rows_text(tmp_path: Path, monkeypatch):
    """A `metadata.parquet` (pyarrow's defaults, as `datasets` writes one) whose rows share one long
    prompt stores it once (dictionary encoding): 100k rows of a 4 KB prompt were a 0.6 MiB file
    declaring 1.4 MiB, kept as 404 MiB of row text, the cache weighing the parse by the file's
    size. The rows' text is now counted as it is kept, the file refused past the budget a
    `.jsonl` has (`file_too_large`), and a kept parse weighs its rows' text in the cache."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sources import fsio, imagefolder

    prompt = "a highly detailed photograph of a mountain lake at dawn, " * 35  # ~2 KB, the same in each row
    monkeypatch.setattr(imagefolder, "MAX_METADATA_BYTES", 1 << 20)
    meta = tmp_path / "train" / "metadata.parquet"
    meta.parent.mkdir()
    pq.write_table(pa.table({"file_name": [f"{i}.png" for i in range(3000)], "text": [prompt] * 3000}), meta)
    declared = pq.ParquetFile(meta).metadata.row_group(0).total_byte_size
    assert meta.stat().st_size < (1 << 20) and declared < imagefolder.MAX_METADATA_PARQUET_BYTES
    parsed = imagefolder.read_metadata.__wrapped__(str(meta))
    assert (parsed.reason, parsed.rows) == ("file_too_large", {})
    assert "byte budget of a metadata file at row" in parsed.unread
    small = []
    for name in "ab":  # 400 rows: about 0.8 MB of text each, from files of a few KB
        small.append(tmp_path / name / "metadata.parquet")
        small[-1].parent.mkdir()
        pq.write_table(pa.table({"file_name": [f"{i}.png" for i in range(400)], "text": [prompt] * 400}), small[-1])
    parses = Counter()
    cached = fsio.cached_input(maxsize=4, max_bytes=1 << 20, weigh=imagefolder._kept_weight)(
        lambda uri: (parses.update([uri]), imagefolder.read_metadata.__wrapped__(uri))[1])
    for uri in map(str, (small[0], small[1], small[0])):
        assert len(cached(uri).rows) == 400
    assert parses == {str(small[0]): 2, str(small[1]): 1}  # b's parse, with a's, passed the budget: a dropped
    parsed = imagefolder.read_metadata(str(small[1]))  # the real cache weighs its parse by the rows' text
    assert imagefolder.read_metadata.weight(str(small[1])) >= parsed.kept > 10 * small[1].stat().st_size


def test_an_image_pair_folder_without_file_name_takes_its_first_file_name_column(tmp_path: Path):
    """An image-pair ImageFolder (`train/metadata.jsonl` rows `{"input_file_name", "output_file_name",
    "text"}`, no `file_name`): `load_dataset` (datasets 5.2) gave 3 rows, columns input, output,
    text. The file was refused as no Hugging Face metadata (`bad_metadata`) and the six images
    built alone, captions lost. Now the first `*_file_name` column in the file's order is the
    row's image (its caption the row's), the other the row's `extra_image`."""
    (tmp_path / "train").mkdir()
    rows = []
    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / "train" / f"in{i}.png")
        Image.new("RGB", (8, 8), (0, i, 0)).save(tmp_path / "train" / f"out{i}.png")
        rows.append(json.dumps({"input_file_name": f"in{i}.png", "output_file_name": f"out{i}.png",
                                "text": f"edit {i}"}))
    (tmp_path / "train" / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    items = _read_all(LaionSource("w", str(tmp_path)))
    assert sorted((i.lineage["path"], i.lineage["caption"], i.lineage["huggingface"])
                  for i in items if isinstance(i, ImageRecord)) == [
        (f"train/in{i}.png", f"edit {i}", {"output_file_name": f"out{i}.png"}) for i in range(3)]
    assert sorted((r.key, r.reason, r.detail) for r in items if isinstance(r, Reject)) == [
        (f"w-train-out{i}--png", "extra_image", f"'train/out{i}.png' is the output_file_name of train/metadata.jsonl "
         f"line {i + 1}: it rides in the lineage of that row's input_file_name image, never built as an image of its "
         "own (one image per row)") for i in range(3)]


def test_a_jsonl_whose_later_row_names_another_lead_column_keeps_the_first_rows_lead(tmp_path: Path):
    """A `metadata.jsonl` whose first row names its image in `input_file_name` and the second in
    `file_name`: the lead column was taken again at each row from the columns seen so far (a JSONL's
    grow row by row), so row 2 moved it to `file_name`: the metadata unit crashed (KeyError
    'file_name') and a.png kept `input_file_name` in its lineage. Now the lead is chosen once, at the
    first row with one; a later row without it is that row's `bad_metadata` reject."""
    for name in "ab":
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    (tmp_path / "metadata.jsonl").write_text('{"input_file_name": "a.png", "text": "x"}\n'
                                             '{"file_name": "b.png", "text": "y"}\n')
    from sources.records import data_key

    items = _read_all(LaionSource("w", str(tmp_path)))
    assert [(i.lineage["path"], i.lineage["caption"], i.lineage["huggingface"])
            for i in items if isinstance(i, ImageRecord)] == [("a.png", "x", {})]
    assert sorted((r.key, r.reason, r.detail) for r in items if isinstance(r, Reject)) == [
        ("w-b--png", "unlisted_image", "'b.png': no row of a metadata file (metadata.jsonl, .csv, .parquet) in its "
                                       "folder or above names it; datasets' ImageFolder leaves it out too"),
        (data_key("w", "metadata.jsonl", "2"), "bad_metadata", "metadata.jsonl line 2: input_file_name is null, not a path")]


def test_a_photo_collections_folder_names_are_no_split_layout(tmp_path: Path):
    """A personal photo folder (no metadata, no card): `holidays/test shots/`, `projects/dev/` and
    `cameras/eval 2023/` went to val whole, as if a split layout named them (datasets 5.2, asked
    for it as an ImageFolder, made validation 1, test 2 of it and dropped the other 3 images).
    Such names split a folder only where it is a split layout: a train folder beside them, or
    every image in a split's folder."""
    photos = ["holidays/test shots/1.jpg", "holidays/beach/2.jpg", "projects/dev/4.jpg", "cameras/eval 2023/5.jpg",
              "misc/6.jpg"]
    held_out = ["validation/cat/1.jpg", "test/dog/2.jpg"]
    for shade, name in enumerate(photos + [f"layout/{n}" for n in held_out]):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (shade, 0, 0)).save(tmp_path / name)
    layout = tmp_path / "layout"
    shutil.move(str(layout), str(tmp_path.parent / f"{tmp_path.name}-layout"))
    items = _read_all(LaionSource("photos", str(tmp_path)))
    assert sorted((i.lineage["path"], i.split_hint, i.lineage.get("hf_split")) for i in items) == sorted(
        (name, None, None) for name in photos)
    items = _read_all(LaionSource("hub", str(tmp_path.parent / f"{tmp_path.name}-layout")))
    assert sorted((i.lineage["path"], i.split_hint, i.lineage.get("hf_split")) for i in items) == [
        ("test/dog/2.jpg", "val", "test"), ("validation/cat/1.jpg", "val", "validation")]


def test_a_card_config_naming_no_parquet_file_stops_the_build_naming_hf_config(tmp_path: Path):
    """A card whose built config's data_files name no parquet file there (`data/train-*` beside
    `shards/part-0.parquet`; datasets raises too) stopped the build naming no field: it now names
    `hf_config` and the fix."""
    _card_repo(tmp_path, '---\nconfigs:\n- config_name: default\n  data_files: "data/train-*"\n---\n',
               ["shards/part-0.parquet"])
    with pytest.raises(FileNotFoundError, match=r"config 'default' of its README\.md \(format: huggingface; field "
                                                r"hf_config\): set hf_config to a config of the card whose data_files"):
        LaionSource("hf", str(tmp_path), "huggingface").units()


def test_one_image_added_to_a_folder_changes_only_its_unit(tmp_path):
    """A folder of images cut into units by count: one image added near the front shifted every
    later unit's files, so a rerun rendered them all again (520 images: 3 of 3 units). Units now
    end where the names say (`records.unit_ends_after`): only the unit the new image falls in
    differs, and no unit holds more than `FOLDER_UNIT_MOST` times the average."""
    import sources.web_unit_plan as web_unit_plan

    picture = _encoded("PNG", 0, size=8)
    for i in range(1200):
        (tmp_path / f"img{i:05d}.png").write_bytes(picture)
    before = LaionSource("web", str(tmp_path)).units()
    (tmp_path / "img00000a.png").write_bytes(picture)
    after = LaionSource("web", str(tmp_path)).units()
    assert len(before) > 2 and sum(map(len, (u.uris for u in after))) == 1201
    assert len(set(after) - set(before)) == 1 and len(set(before) - set(after)) == 1
    assert max(len(u.uris) for u in after) <= web_unit_plan.FOLDER_UNIT_MOST * web_unit_plan.FOLDER_FILES_PER_UNIT


@pytest.mark.parametrize("layout", ["huggingface", "img2dataset"])
def test_a_dictionary_encoded_row_group_is_judged_on_the_values_its_rows_hold(tmp_path: Path, monkeypatch,
                                                                              layout: str):
    """pyarrow dictionary-encodes byte strings: a file of one image in 200 rows (a placeholder
    repeated, or `dictionary_pagesize_limit` raised) declares one image's bytes in its footer and
    reads as 200 copies (an 8 MiB image: an 8 MB file declaring 8 MiB read at 2.1 GB peak RSS).
    The row group is judged on what its rows hold, as its plainly written twin is: over the budget
    it is never read whole, but a few rows at a time, each row's image its dictionary's one value
    (`streamed_bytes`): all are built, the next group's distinct images too."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sources import hf_parquet

    picture = _encoded("PNG", 5, size=128)  # ~49 KB, 200 rows: ~9.8 MB held, under 1 MB declared
    others = [_encoded("PNG", seed, size=8) for seed in range(3)]
    pictures = [picture] * 200 + others
    if layout == "huggingface":
        rows = [{"image": {"bytes": b, "path": None}, "text": f"c{i}", "label": 0} for i, b in enumerate(pictures)]
        image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        schema = pa.schema([("image", image), ("text", pa.string()), ("label", pa.int64())], metadata=HF_METADATA)
        table, path = pa.Table.from_pylist(rows, schema=schema), tmp_path / "train.parquet"
    else:
        rows = [{"key": f"{i:09d}", "status": "success", "error_message": None, "txt": f"c{i}", "jpg": b}
                for i, b in enumerate(pictures)]
        table, path = pa.Table.from_pylist(rows), tmp_path / "00000.parquet"
    pq.write_table(table, path, row_group_size=200)
    group = pq.ParquetFile(path).metadata.row_group(0)
    declared = hf_parquet.declared_bytes(group)
    assert declared < 1 << 20 < 200 * len(picture)
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 4 << 20)
    with open(path, "rb") as handle:  # read whole, over the budget
        assert hf_parquet.value_bytes(handle, pq.ParquetFile(path), 0) > 4 << 20
    items = _read_all(LaionSource("web", str(tmp_path)))
    assert [i.data for i in items] == pictures, [getattr(i, "detail", None) for i in items[:1]]
    if layout == "img2dataset":
        assert items[0].key == "web-00000-000000000"


def test_json_nested_past_the_recursion_limit_fails_no_shard_and_no_metadata_file(tmp_path: Path):
    """A web sample's `.json` of 200,000 nested brackets (GNU tar of the files) raised json's
    RecursionError out of the shard's read: its unit failed, the samples after it lost. It reads
    as a `.json` that is no JSON object (the sample built without it); an ImageFolder
    `metadata.jsonl` line like it is that line's `bad_metadata`, the other rows read."""
    deep = "[" * 200_000 + "]" * 200_000
    files, web = tmp_path / "files", tmp_path / "web"
    files.mkdir()
    web.mkdir()
    for index in range(3):
        (files / f"{index:09d}.jpg").write_bytes(_encoded("JPEG", index))
    (files / "000000000.json").write_text(deep)
    subprocess.run(["tar", "-cf", str(web / "00000.tar"), "-C", str(files), *sorted(os.listdir(files))], check=True)
    items = _read_all(LaionSource("web", str(web), "webdataset"))
    assert [type(i).__name__ for i in items] == ["ImageRecord"] * 3, items

    folder = tmp_path / "imagefolder"
    folder.mkdir()
    for index in range(2):
        (folder / f"{index}.jpg").write_bytes(_encoded("JPEG", index))
    (folder / "metadata.jsonl").write_text(f'{{"file_name": "0.jpg", "text": "a"}}\n{{"file_name": "1.jpg", "x": {deep}}}\n')
    items = _read_all(LaionSource("imgs", str(folder)))
    records = [i for i in items if isinstance(i, ImageRecord)]
    assert [r.lineage.get("caption") for r in records] == ["a"], items
    problems = [i for i in items if isinstance(i, Reject) and i.reason == "bad_metadata"]
    assert len(problems) == 1 and "line 2: not JSON (nested too deeply)" in problems[0].detail, items


def test_a_parquet_whose_huggingface_metadata_nests_past_the_recursion_limit_declares_no_features(tmp_path: Path):
    """A parquet whose `huggingface` schema metadata is 200,000 nested brackets (pyarrow writes
    any bytes there) raised RecursionError reading its features; it declares none, as metadata
    that is no JSON does."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sources import hf_parquet

    deep = b"[" * 200_000 + b"]" * 200_000
    schema = pa.schema([("text", pa.string())], metadata={hf_parquet.HF_METADATA_KEY: deep})
    pq.write_table(pa.Table.from_pylist([{"text": "a"}], schema=schema), tmp_path / "train.parquet")
    assert hf_parquet.features(pq.ParquetFile(tmp_path / "train.parquet").schema_arrow) == {}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def test_a_footer_declaring_a_million_rows_gives_a_bounded_count_of_rejects_naming_them(tmp_path: Path,
                                                                                          monkeypatch):
    """A `datasets` parquet (pyarrow-written, 12,345 rows in one row group) whose footer was
    damaged to declare 1,000,000 rows and values (10**12 took every byte of memory): a group over
    the budget gave a list of one empty row a declared row, and a reject each, never reading a
    byte that backs them; then more rows than bytes was a `bad_parquet`, which an honest file of
    10**7 null rows (36 KB) is too. Now its first `MAX_LISTED_ROWS` rows are a reject each and
    one more stands for the rest, naming how many."""
    import struct

    import pyarrow as pa
    import pyarrow.parquet as pq

    from sources import hf_parquet

    count = 12_345
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image), ("text", pa.string()), ("label", pa.int64())], metadata=HF_METADATA)
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([{"image": {"bytes": b"\xff\xd8\xff", "path": None}, "text": "c", "label": 0}]
                                        * count, schema=schema), path, row_group_size=count)
    data = path.read_bytes()
    length = struct.unpack("<I", data[-8:-4])[0]
    footer = data[-8 - length : -8].replace(_varint(count << 1), _varint(1_000_000 << 1))  # zigzag i64s
    path.write_bytes(data[: -8 - length] + footer + struct.pack("<I", len(footer)) + b"PAR1")
    group = pq.ParquetFile(path).metadata.row_group(0)
    declared = hf_parquet.declared_bytes(group)
    assert group.num_rows == 1_000_000 and declared < 1_000_000
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", declared - 1)  # over the budget by its footer alone
    monkeypatch.setattr(hf_parquet, "MAX_LISTED_ROWS", 3)
    items = _read_all(LaionSource("hf", str(tmp_path)))
    assert [i.reason for i in items] == ["row_group_too_large"] * 4, len(items)
    assert [i.input.rpartition(" ")[2] for i in items] == ["0", "1", "2", "3"]
    assert items[-1].detail.startswith("rows 3 to 999999 (999997 rows, this one reject for them all) of train.parquet: "
                                       "row group 0"), items[-1].detail
    assert "over the budget" not in items[-1].detail and f"over the {declared - 1} byte budget" in items[-1].detail


def test_an_imagefolder_metadata_parquet_is_judged_on_the_values_its_rows_hold(tmp_path: Path, monkeypatch):
    """A `metadata.parquet` (pyarrow-written) whose caption is one long text in every row is stored
    once, dictionary-encoded: 395 KB declaring 8 MiB held 200 copies of an 8 MiB caption, read
    1,024 rows a batch before the kept-text budget could say no (4.9 GB peak RSS). Its row group is
    judged on the values its rows hold before any is read: over the budget, the file is its
    `file_too_large` reject (its images then `unlisted_image`), saying so."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sources import hf_parquet, imagefolder

    for index in range(3):
        (tmp_path / f"{index}.jpg").write_bytes(_encoded("JPEG", index))
    caption = "a long caption " * 4096  # 60 KiB, in 200 rows: 12 MB held, ~60 KiB declared
    pq.write_table(pa.table({"file_name": [f"{i}.jpg" for i in range(3)] + [f"gone{i}.jpg" for i in range(197)],
                             "text": [caption] * 200}), tmp_path / "metadata.parquet")
    declared = pq.ParquetFile(tmp_path / "metadata.parquet").metadata.row_group(0).total_byte_size
    assert declared < 1 << 20
    monkeypatch.setattr(imagefolder, "MAX_METADATA_PARQUET_BYTES", 4 << 20)
    items = _read_all(LaionSource("imgs", str(tmp_path)))
    reasons = sorted(i.reason for i in items if isinstance(i, Reject))
    assert reasons == ["file_too_large"] + ["unlisted_image"] * 3, items
    refused = next(i for i in items if i.reason == "file_too_large")
    held = re.search(rf"holds (\d+) bytes once read \(its values, each its width; its footer declares {declared}\)",
                     refused.detail)
    each = 200 * 2 * (hf_parquet.VALUE_SLOT_BYTES + hf_parquet.VALUE_BYTES["BYTE_ARRAY"])  # 2 columns' values
    assert held and 200 * len(caption) + each < int(held.group(1)) < 200 * len(caption) + each + 8192, refused.detail


def test_a_shards_listing_is_judged_on_the_values_its_rows_hold_before_it_is_read(tmp_path: Path, monkeypatch):
    """The parquet beside a webdataset shard (img2dataset's listing) was read whole, binary
    columns and all, whatever it held: a caption repeated in every row is stored once,
    dictionary-encoded, so a small file can hold any number of copies. It is judged before any
    row is read (its binary columns never are): past the budget it is the shard's `bad_parquet`
    saying what its rows hold, and the tar's samples are built without it."""
    import subprocess

    import pyarrow as pa
    import pyarrow.parquet as pq

    from sources import img2dataset_listing

    files, web = tmp_path / "files", tmp_path / "web"
    files.mkdir()
    web.mkdir()
    for index in range(2):
        (files / f"{index:09d}.jpg").write_bytes(_encoded("JPEG", index))
    subprocess.run(["tar", "-cf", str(web / "00000.tar"), "-C", str(files), *sorted(os.listdir(files))], check=True)
    caption = "a long caption " * 4096
    count = 200
    pq.write_table(pa.table({"key": [f"{i:09d}" for i in range(count)], "status": ["success"] * count,
                             "caption": [caption] * count, "jpg": [b"\xff\xd8\xff"] * count}), web / "00000.parquet")
    assert (web / "00000.parquet").stat().st_size < 1 << 20
    monkeypatch.setattr(img2dataset_listing, "MAX_LISTING_BYTES", 4 << 20, raising=False)  # (none before)
    items = _read_all(LaionSource("web", str(web), "webdataset"))
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [r.reason for r in rejects] == ["bad_parquet"], rejects
    assert "bytes of values, over the 4194304 byte budget of a listing" in rejects[0].detail
    assert sum(isinstance(i, ImageRecord) for i in items) == 2


def test_the_resize_notice_never_reads_a_listing_past_its_budget(tmp_path: Path, monkeypatch):
    """The build's img2dataset notice read the listing's `exif` and size columns whole, whatever
    they held (an EXIF text repeated in every row is stored once, dictionary-encoded). A listing
    whose notice columns hold more than the listing budget gives no notice (its shard is its
    `bad_parquet`); within it the notice is said as before."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sources import img2dataset_listing

    (tmp_path / "00000").mkdir()
    count, exif = 200, '{"Image Orientation": "Rotated 90 CW"}' + " " * 60_000
    pq.write_table(pa.table({"key": [f"{i:09d}" for i in range(count)], "status": ["success"] * count,
                             "width": [256] * count, "height": [256] * count, "original_width": [640] * count,
                             "original_height": [480] * count, "exif": [exif] * count}), tmp_path / "00000.parquet")
    source = LaionSource("web", str(tmp_path), "files")
    assert any("img2dataset resized 200 of 200 images" in n for n in source.notices())
    monkeypatch.setattr(img2dataset_listing, "MAX_LISTING_BYTES", 4 << 20, raising=False)  # (none before)
    monkeypatch.setattr("sources.img2dataset_notices.MAX_LISTING_BYTES", 4 << 20, raising=False)
    assert source.notices() == []


def _shard_to_pack_again(sample_corpus: Path, tmp_path: Path, name: str) -> tuple[Path, Path]:
    """The sample's shard 00000 (tar, parquet, stats) in `original/`, its tar extracted by GNU tar
    into `x/`, and `name/` holding the same shard but its tar, for the test to pack again."""
    original, again = tmp_path / "original", tmp_path / name
    original.mkdir()
    for file in ("00000.tar", "00000.parquet", "00000_stats.json"):
        shutil.copy(sample_corpus / "laion" / file, original / file)
    shutil.copytree(original, again)
    (tmp_path / "x").mkdir()
    subprocess.run(["tar", "-xf", str(original / "00000.tar"), "-C", str(tmp_path / "x")], check=True)
    (again / "00000.tar").unlink()
    return original, again


def test_a_shard_retarred_with_dot_slash_names_reads_as_the_shard_img2dataset_wrote(sample_corpus: Path,
                                                                                  tmp_path: Path):
    """A shard extracted and packed again with GNU tar (`tar -C dir -cf 00000.tar .`) names its
    members `./000000001.jpg`: the keys were `./000000001`, so each sample was built under another
    key and also counted `missing_from_archive` against the parquet. The leading `./` is no part
    of the key: the same records and rejects as the shard img2dataset wrote."""
    original, retarred = _shard_to_pack_again(sample_corpus, tmp_path, "retarred")
    subprocess.run(["tar", "-C", str(tmp_path / "x"), "-cf", str(retarred / "00000.tar"), "."], check=True)
    assert subprocess.run(["tar", "-tf", str(retarred / "00000.tar")], capture_output=True, text=True,
                          check=True).stdout.splitlines()[1].startswith("./0000")

    def read(folder: Path) -> tuple[list, Counter]:
        items = _read_all(LaionSource("web", str(folder), "webdataset"))
        records = sorted((r.key, r.lineage["sample_key"], r.data) for r in items if isinstance(r, ImageRecord))
        return records, Counter((r.key, r.reason) for r in items if isinstance(r, Reject))

    want, got = read(original), read(retarred)
    assert want[0] and got == want


def test_a_folder_named_as_a_shard_beside_its_tar_is_an_unexpected_file(sample_corpus: Path, tmp_path: Path):
    """`00000/` (the shard extracted with GNU tar) beside `00000.tar` in a webdataset layout: its
    files are never read, and the folder was skipped without a word (only the files layout reads a
    shard's folder). It is one `unexpected_file` reject now, as a folder of any other name."""
    for name in ("00000.tar", "00000.parquet", "00000_stats.json"):
        shutil.copy(sample_corpus / "laion" / name, tmp_path / name)
    (tmp_path / "00000").mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "00000.tar"), "-C", str(tmp_path / "00000")], check=True)
    items = _read_all(LaionSource("web", str(tmp_path), "webdataset"))
    assert [(r.reason, r.input) for r in items if isinstance(r, Reject) and r.input == "00000"] == [
        ("unexpected_file", "00000")]


def test_a_shard_packed_with_absolute_names_reads_as_the_shard_img2dataset_wrote(sample_corpus: Path, tmp_path: Path):
    """GNU `tar -P` (here renaming each member to `/000000001.jpg`) or Python's `tarfile` given an
    absolute name writes a leading `/`, which GNU tar and bsdtar strip extracting: the keys were
    `/000000001` (records keyed `web-00000-000000001_<hash>`, each also `missing_from_archive`
    against the parquet). The leading `/` is no part of the key: the same records and rejects as
    the shard img2dataset wrote."""
    original, packed = _shard_to_pack_again(sample_corpus, tmp_path, "packed")
    members = sorted(str(p) for p in (tmp_path / "x").iterdir())
    subprocess.run(["tar", "-P", "--transform", r"s,^/.*/,/,", "-cf", str(packed / "00000.tar"), *members], check=True)
    names = [m.name for m in tarfile.open(packed / "00000.tar")]
    assert names and all(n.startswith("/0000") for n in names), names

    def read(folder: Path) -> tuple[list, Counter]:
        items = _read_all(LaionSource("web", str(folder), "webdataset"))
        records = sorted((r.key, r.lineage["sample_key"], r.data, r.lineage.get("caption")) for r in items
                         if isinstance(r, ImageRecord))
        return records, Counter((r.key, r.reason) for r in items if isinstance(r, Reject))

    want, got = read(original), read(packed)
    assert want[0] and got == want


# img2dataset 1.47's listing schema (`--compute_hash sha256`, EXIF kept: its default), as its
# ParquetSampleWriter writes it with pyarrow, 100 rows a row group; a camera's EXIF as exifread's tags
I2D_CAMERA_EXIF = ('{{"Image Make": "Canon", "Image Model": "Canon EOS 5D Mark IV", "Image Software": "Adobe '
                   'Photoshop Lightroom Classic 12.1 (Windows)", "Image DateTime": "2023:05:14 18:{m:02d}:{s:02d}", '
                   '"Image Artist": "Jane Photographer", "Image Copyright": "Copyright 2023 Jane Photographer, all '
                   'rights reserved", "Image ExifOffset": "268", "EXIF ExposureTime": "[1, 250]", "EXIF FNumber": '
                   '"[28, 10]", "EXIF ISOSpeedRatings": "400", "EXIF DateTimeOriginal": "2023:05:14 18:{m:02d}:{s:02d}",'
                   ' "EXIF FocalLength": "[50, 1]", "EXIF BodySerialNumber": "{n:012d}", "EXIF LensModel": '
                   '"EF50mm f/1.8 STM"}}')


def test_a_listing_of_100k_camera_photos_is_read_its_unused_columns_never(tmp_path: Path):
    """A real img2dataset shard of 100,000 photos keeps each one's camera EXIF in its listing
    (~600 bytes a row): judged with every column, its rows held 76 MB, over the 64 MiB budget
    (checked here, so the listing cannot drift under it unseen), and the shard's honest listing was
    its `bad_parquet` (each failed download it lists lost).
    Only the columns the build reads are read and judged: all its rows are listed, and a
    sample's lineage still has its EXIF from its `.json`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sources import hf_parquet
    from sources.img2dataset_listing import MAX_LISTING_BYTES, ShardListing, listing_rejects

    count = 100_000
    keys = [f"{i:09d}" for i in range(count)]
    ok = [i < 2 for i in range(count)]
    meta = [{"caption": f"a red barn at sunset number {i}", "url": f"https://example.com/photos/{i}.jpg",
             "key": keys[i], "status": "success" if ok[i] else "failed_to_download",
             "error_message": None if ok[i] else "<urlopen error timed out>", "width": None, "height": None,
             "original_width": None, "original_height": None,
             "exif": I2D_CAMERA_EXIF.format(m=i // 60 % 60, s=i % 60, n=i), "sha256": None} for i in range(count)]
    schema = pa.schema([("caption", pa.string()), ("url", pa.string()), ("key", pa.string()),
                        ("status", pa.string()), ("error_message", pa.string()), ("width", pa.int32()),
                        ("height", pa.int32()), ("original_width", pa.int32()), ("original_height", pa.int32()),
                        ("exif", pa.string()), ("sha256", pa.string())])
    files = tmp_path / "files"
    files.mkdir()
    for i in range(2):
        data = _encoded("JPEG", i)
        meta[i]["sha256"] = __import__("hashlib").sha256(data).hexdigest()
        (files / f"{keys[i]}.jpg").write_bytes(data)
        (files / f"{keys[i]}.json").write_text(json.dumps(meta[i]))
    # as img2dataset's ParquetSampleWriter writes it: the shard's rows in one `write_table`, one row
    # group (100-row groups judged each footer 1,000 times a read, most of this test's CPU)
    pq.write_table(pa.Table.from_pylist(meta, schema), tmp_path / "00000.parquet")
    assert pq.ParquetFile(tmp_path / "00000.parquet").num_row_groups == 1
    with open(tmp_path / "00000.parquet", "rb") as handle:  # every column judged: over the budget
        whole = hf_parquet.open_parquet(handle, pre_buffer=False)
        assert hf_parquet.value_bytes(handle, whole, 0, whole.schema_arrow.names) > MAX_LISTING_BYTES
    subprocess.run(["tar", "-cf", str(tmp_path / "00000.tar"), "-C", str(files), *sorted(os.listdir(files))],
                   check=True)
    shutil.rmtree(files)
    listing = ShardListing.read(str(tmp_path / "00000.parquet"), str(tmp_path / "00000_stats.json"), str(tmp_path))
    assert listing.problems == ()
    assert len(listing.rows) == count and listing.successes() == keys[:2]
    assert "exif" not in listing.rows[keys[5]] and listing.rows[keys[5]]["url"].endswith("/5.jpg")
    rejects = list(listing_rejects("web", listing, "00000", "00000.parquet"))
    assert len(rejects) == count - 2 and {r.reason for r in rejects} == {"failed_to_download"}
    assert rejects[0].input == "00000.parquet key 000000002: https://example.com/photos/2.jpg"
    web_source = LaionSource("web", str(tmp_path), "webdataset")
    records = [i for u in web_source.units() for i in web_source.read(u) if isinstance(i, ImageRecord)]
    assert [r.lineage["img2dataset"]["exif"] for r in records] == [meta[0]["exif"], meta[1]["exif"]]


def test_a_listing_caption_that_is_not_utf8_is_read_as_a_binary_one_not_the_listing_lost(tmp_path: Path):
    """A listing whose `caption` (a string column) holds Latin-1 bytes in one row (a URL list read
    from a Latin-1 CSV, its bytes handed to pyarrow unchecked, as a C++ or Rust writer does: pyarrow
    writes and reads them, Python cannot decode them) was one `bad_parquet`: the shard's failed
    download and the hash it recorded for each sample were lost. Then that cell was lost (None);
    now it is read as a `binary` caption is (UTF-8, U+FFFD for the rest) and a notice says so; a
    row whose key is not UTF-8 (no sample can be matched to it) is one `text_not_utf8` reject."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [_encoded("JPEG", 40), _encoded("JPEG", 41)]
    keys = [b"000000000", b"000000001", b"000000002", b"00000\xff003"]
    captions = [b"plain", b"caf\xe9 au lait", b"gone", b"odd"]
    status = ["success", "success", "failed_to_download", "failed_to_download"]
    digests = [hashlib.sha256(images[0]).hexdigest(), hashlib.sha256(images[1]).hexdigest(), None, None]
    table = pa.table({"caption": pa.array(captions, pa.binary()).view(pa.string()),
                      "url": [f"http://x.invalid/{i}.jpg" for i in range(4)],
                      "key": pa.array(keys, pa.binary()).view(pa.string()), "status": status,
                      "error_message": [None, None, "<urlopen error timed out>", "HTTP Error 404"],
                      "width": pa.array([None] * 4, pa.int32()), "sha256": digests})
    pq.write_table(table, tmp_path / "00000.parquet")
    with pytest.raises(UnicodeDecodeError):
        pq.read_table(tmp_path / "00000.parquet").to_pylist()
    members = tmp_path / "members"
    members.mkdir()
    (members / "000000000.jpg").write_bytes(images[0])
    (members / "000000000.txt").write_bytes(b"plain")
    (members / "000000001.jpg").write_bytes(images[1][:-2] + b"\x00\xd9")  # changed since img2dataset hashed it
    (members / "000000001.txt").write_bytes(b"caf\xe9 au lait")
    subprocess.run(["tar", "-cf", str(tmp_path / "00000.tar"), "-C", str(members), *sorted(os.listdir(members))],
                   check=True)
    shutil.rmtree(members)
    items = _read_all(LaionSource("web", str(tmp_path), "webdataset"))
    rejects = sorted((r.reason, r.key, r.input) for r in items if isinstance(r, Reject))
    assert rejects == [("failed_to_download", "web-00000-000000002",
                        "00000.parquet key 000000002: http://x.invalid/2.jpg"),
                       ("hash_mismatch", "web-00000-000000001", "00000.tar:000000001.jpg"),
                       ("text_not_utf8", "web-00000", "00000.parquet")]
    unread = next(r for r in items if isinstance(r, Reject) and r.reason == "text_not_utf8")
    assert "row 3" in unread.detail and "'key'" in unread.detail and "\\xff" not in unread.detail
    records = [r for r in items if isinstance(r, ImageRecord)]
    assert [(r.key, r.lineage["caption"], r.lineage["img2dataset"]["sha256"]) for r in records] == [
        ("web-00000-000000000", "plain", digests[0])]
    # the Latin-1 caption is read as a `binary` caption is (it was None); no notice: the caption
    # built is the tar's `.txt` (one was a false alarm), the listing's rides in the lineage alone
    from sources.img2dataset_listing import ShardListing

    listing = ShardListing.read(str(tmp_path / "00000.parquet"), str(tmp_path / "00000_stats.json"), str(tmp_path))
    assert listing.rows["000000001"]["caption"] == "caf\ufffd au lait" == captions[1].decode("utf-8", "replace")
    assert LaionSource("web", str(tmp_path), "webdataset").notices() == []


def test_an_img2dataset_parquet_of_a_latin1_url_list_keeps_each_utf8_caption(tmp_path: Path):
    """img2dataset 1.47 reads a URL list from a Latin-1 CSV (`caf\\xe9` in one caption) with
    pyarrow's CSV reader, which makes the whole caption column `binary`; its `output_format=parquet`
    shard keeps that column as it is (what `img2dataset --url_list l.csv --input_format csv
    --caption_col caption --output_format parquet` writes, schema and all). Each caption was
    dropped (bytes are no lineage value). Now each caption that is UTF-8 is its row's text; the
    Latin-1 one alone is lost, and every image is built."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [_encoded("JPEG", 42 + i) for i in range(3)]
    rows = {"caption": [b"plain one", b"caf\xe9 au lait", "third \u2603".encode()],
            "url": [f"http://127.0.0.1:8000/{i}.jpg" for i in range(3)], "key": [f"00000000{i}" for i in range(3)],
            "status": ["success"] * 3, "error_message": [None] * 3, "width": [None] * 3, "height": [None] * 3,
            "original_width": [None] * 3, "original_height": [None] * 3, "exif": ["{}"] * 3, "sha256": [None] * 3,
            "jpg": images}
    schema = pa.schema([("caption", pa.binary()), ("url", pa.string()), ("key", pa.string()), ("status", pa.string()),
                        ("error_message", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                        ("original_width", pa.int32()), ("original_height", pa.int32()), ("exif", pa.string()),
                        ("sha256", pa.string()), ("jpg", pa.binary())])
    pq.write_table(pa.table(rows, schema), tmp_path / "00000.parquet")
    (tmp_path / "00000_stats.json").write_text(json.dumps({"count": 3, "successes": 3}))
    items = _read_all(LaionSource("web", str(tmp_path)))
    assert all(isinstance(i, ImageRecord) for i in items), items
    assert [(i.data == images[n], i.lineage.get("caption"), i.lineage["img2dataset"]["caption"])
            for n, i in enumerate(items)] == [(True, "plain one", "plain one"),
                                              (True, "caf\ufffd au lait", "caf\ufffd au lait"),
                                              (True, "third \u2603", "third \u2603")]


def test_an_img2dataset_files_download_of_a_latin1_url_list_reads_its_bytes_captions(tmp_path: Path):
    """The same mixed URL list (one Latin-1 line) downloaded by img2dataset 1.47 in
    `output_format=files`, laid out as it writes it: each `.txt` is `str(bytes)` (`b'caf\\xe9 au
    lait'`), no `.json` (its writer failed on the bytes), a listing holding only the failed row. Each
    caption was its Python repr (`b'plain one'`), each image unhashed without a word. Now each caption
    is the text the literal spells (a Latin-1 byte as U+FFFD, as a `.txt` member's), and the source
    says its captions were bytes and its images are not hash-checked."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("caption", pa.binary()), ("url", pa.string()), ("key", pa.string()), ("status", pa.string()),
                        ("error_message", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                        ("original_width", pa.int32()), ("original_height", pa.int32()), ("exif", pa.string()),
                        ("sha256", pa.string())])
    pq.write_table(pa.Table.from_pylist([{"caption": b"gone", "url": "http://127.0.0.1:8000/missing.jpg",
                                          "key": "000000003", "status": "failed_to_download",
                                          "error_message": "HTTP Error 404: File not found"}], schema),
                   tmp_path / "00000.parquet")
    (tmp_path / "00000_stats.json").write_text(json.dumps({"count": 4, "successes": 3, "failed_to_download": 1}))
    shard = tmp_path / "00000"
    shard.mkdir()
    captions = [b"plain one", b"caf\xe9 au lait", "third \u2603".encode()]
    for i, caption in enumerate(captions):
        (shard / f"00000000{i}.jpg").write_bytes(_encoded("JPEG", 60 + i))
        (shard / f"00000000{i}.txt").write_text(str(caption))  # as img2dataset 1.47 writes it
    source = LaionSource("web", str(tmp_path))
    items = _read_all(source)
    assert [(type(i).__name__, i.lineage.get("caption") if isinstance(i, ImageRecord) else i.reason)
            for i in items] == [("Reject", "failed_to_download"), ("ImageRecord", "plain one"),
                                ("ImageRecord", "caf\ufffd au lait"), ("ImageRecord", "third \u2603")]
    notices = source.notices()
    assert "captions of 00000.parquet as bytes" in notices[0] and "U+FFFD" in notices[0], notices
    assert "3 of the 3 images in 00000/ are not hash-checked: 00000.parquet lists no row for them" in notices[1], notices


def test_a_webdataset_download_of_a_latin1_url_list_says_its_listing_lists_none(tmp_path: Path):
    """The same Latin-1 URL list downloaded in webdataset format: img2dataset's writer fails each
    sample on its `binary` caption (`json.dumps` of bytes), so its tar is empty and its listing a
    parquet of no rows, while `_stats.json` counts every success. Each is a `missing_from_archive`
    reject; the detail said `without 00000.parquet` of a parquet that is there, and now says it
    lists none, naming the cause."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("caption", pa.binary()), ("url", pa.string()), ("key", pa.string()), ("status", pa.string()),
                        ("error_message", pa.string()), ("width", pa.int32()), ("sha256", pa.string())])
    pq.write_table(schema.empty_table(), tmp_path / "00000.parquet")
    (tmp_path / "00000_stats.json").write_text(json.dumps({"count": 2, "successes": 2, "failed_to_download": 0}))
    subprocess.run(["tar", "-cf", str(tmp_path / "00000.tar"), "-T", "/dev/null"], check=True)
    items = _read_all(LaionSource("web", str(tmp_path), "webdataset"))
    assert [(r.reason, r.key) for r in items] == [("missing_from_archive", "web-00000-missing-1"),
                                                  ("missing_from_archive", "web-00000-missing-2")]
    assert items[0].detail.startswith("00000_stats.json counts 2 successes, 00000.parquet lists 0 and 00000.tar "
                                      "holds 0: 2 downloaded samples were written nowhere"), items[0].detail
    assert "captions are not all UTF-8" in items[0].detail


def test_a_shard_parquet_without_a_key_column_is_not_said_to_list_none(tmp_path: Path):
    """A parquet without a `key` column beside a tar (another tool's table, the URL list itself)
    is no img2dataset listing: the successes `_stats.json` counts that the tar lacks were said
    "written nowhere" by img2dataset's writer, as if the parquet listed none; now the detail says it
    has no key column and the missing keys are unknown."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"url": ["http://x.invalid/0.jpg", "http://x.invalid/1.jpg"], "caption": ["a", "b"]}),
                   tmp_path / "00000.parquet")
    (tmp_path / "00000_stats.json").write_text(json.dumps({"count": 2, "successes": 2}))
    subprocess.run(["tar", "-cf", str(tmp_path / "00000.tar"), "-T", "/dev/null"], check=True)
    items = _read_all(LaionSource("web", str(tmp_path), "webdataset"))
    assert [(r.reason, r.detail) for r in items] == [
        ("missing_from_archive", "00000_stats.json counts 2 successes, 00000.tar holds 0; 00000.parquet has no key "
                                 "column (no img2dataset listing): the missing keys are unknown")] * 2


def test_parquet_rows_without_a_key_are_keyed_by_their_file_and_row(tmp_path: Path):
    """Images in a parquet's `jpg` column whose rows list no key: a pyarrow export of a folder (no
    `key` column at all), and img2dataset's layout with null cells in its `key` column. Every such
    row was key `None` (`str(None)`): one sentence, the others `duplicate_key` rejects though their
    images differ. Now each is keyed by its file and row index (as a `datasets` row is), stable
    from the input; a listed key is kept, and one listed twice still meets itself (the writer's
    `duplicate_key`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [_encoded("JPEG", 70 + i) for i in range(6)]
    export, listed = tmp_path / "export", tmp_path / "listed"
    export.mkdir()
    listed.mkdir()
    pq.write_table(pa.table({"jpg": images, "caption": [f"photo {i}" for i in range(6)]}), export / "train.parquet")
    keys = [None, None, "000000002", "000000002", "", "000000005"]
    pq.write_table(pa.table({"jpg": images, "caption": [f"photo {i}" for i in range(6)], "key": keys,
                             "status": ["success"] * 6}), listed / "00000.parquet")
    made = {}
    for root in (export, listed):
        source = LaionSource("web", str(root))
        assert source.resolved_format() == "parquet"
        items = _read_all(source)
        assert all(isinstance(i, ImageRecord) for i in items), items
        assert [i.data for i in items] == images  # every row's own image, none dropped
        made[root.name] = [(i.key, i.lineage.get("sample_key"), i.lineage.get("row")) for i in items]
    assert made["export"] == [(f"web-train-row-{i}", None, i) for i in range(6)]
    assert made["listed"] == [("web-00000-row-0", None, 0), ("web-00000-row-1", None, 1),
                              ("web-00000-000000002", "000000002", None), ("web-00000-000000002", "000000002", None),
                              ("web-00000-row-4", None, 4), ("web-00000-000000005", "000000005", None)]
    pandas = tmp_path / "pandas"  # a key column with gaps as pandas writes it: floats, NaN for a missing key
    pandas.mkdir()
    pq.write_table(pa.table({"jpg": images[:4], "key": [float("nan"), float("nan"), 3.0, 4.5]}), pandas / "p.parquet")
    keys = [i.key for i in _read_all(LaionSource("web", str(pandas)))]
    assert keys[:2] == ["web-p-row-0", "web-p-row-1"]  # were both `web-p-nan`: the second a duplicate_key
    assert keys[2] == "web-p-3" and keys[3].startswith("web-p-4_5"), keys  # a whole number its digits (was `3_0`)


def test_a_parquet_of_image_bytes_is_read_as_images_or_counted_never_decoded_as_one(tmp_path: Path):
    """A pyarrow table of image bytes in a binary column `image` (what a pandas or pyarrow export
    of a folder writes: no `datasets` Image struct, no key) was taken for a plain folder, the
    parquet decoded as one picture (`not_an_image`), its rows never read. Now its rows are the
    images, each keyed by its row, its caption read. A parquet whose bytes lie under a name no
    layout reads (`content`) is one `unexpected_file` reject among a folder's images saying to
    rename it, and alone stops the build saying so; one below the path's top says to set `path` to
    its folder; a table without image bytes (a URL list) names its columns. None is ever decoded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [_encoded("PNG", 80 + i) for i in range(3)]
    table = pa.table({"image": images, "caption": [f"photo {i}" for i in range(3)],
                      "url": [f"http://x.invalid/{i}.png" for i in range(3)]})
    export = tmp_path / "export"
    export.mkdir()
    pq.write_table(table, export / "train.parquet")
    source = LaionSource("web", str(export))
    assert source.resolved_format() == "parquet"
    items = _read_all(source)
    assert [(type(i).__name__, i.key, i.data == images[n], i.lineage.get("caption"), i.lineage["file_ext"])
            for n, i in enumerate(items)] == [("ImageRecord", f"web-train-row-{n}", True, f"photo {n}", "image")
                                              for n in range(3)]

    nested = tmp_path / "nested"
    (nested / "data").mkdir(parents=True)
    pq.write_table(table, nested / "data" / "train.parquet")  # read at the path's top only: said so
    with pytest.raises(FileNotFoundError, match=r"data/train\.parquet: a parquet of 3 rows, not read: its column "
                                                r"image holds images, .* set path to its folder, data/"):
        LaionSource("web", str(nested)).units()

    renamed = tmp_path / "renamed"
    renamed.mkdir()
    pq.write_table(table.rename_columns(["content", "caption", "url"]), renamed / "train.parquet")
    with pytest.raises(FileNotFoundError, match=r"no images under .*train\.parquet: a parquet of 3 rows, not read: "
                                                r"its binary column content .* rename it image to build its rows"):
        LaionSource("web", str(renamed)).units()
    (renamed / "beside.png").write_bytes(images[0])
    pq.write_table(pa.table({"url": ["http://x.invalid/0.png"], "caption": ["c"]}), renamed / "urls.parquet")
    source = LaionSource("web", str(renamed))
    assert source.resolved_format() == "folder"
    items = _read_all(source)
    assert [type(i).__name__ for i in items] == ["ImageRecord", "Reject", "Reject"]
    assert items[0].key == "web-beside--png"
    assert [(r.reason, r.input, r.detail.split(", not read: ")[1][:40]) for r in items[1:]] == [
        ("unexpected_file", "train.parquet", "its binary column content has no name an"),
        ("unexpected_file", "urls.parquet", "no column of image bytes (its columns: u")]


@pytest.mark.parametrize("algorithm", ["md5", "sha512"])
def test_a_download_hashed_with_another_compute_hash_is_checked_with_it(tmp_path: Path, algorithm: str):
    """`img2dataset --compute_hash md5` (or sha512) with `--disable_all_reencoding True` records
    that hash instead of sha256, in its listing and in each sample's `.json` (`output_format=files`,
    laid out as img2dataset 1.47 writes it): a stored image changed since is a `hash_mismatch`
    naming that algorithm, the unchanged one is built."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [_encoded("JPEG", 50), _encoded("JPEG", 51)]
    meta = [{"caption": f"c{i}", "url": f"http://127.0.0.1:8000/{i}.jpg", "key": f"00000000{i}", "status": "success",
             "error_message": None, "width": None, "height": None, "original_width": None, "original_height": None,
             "exif": "{}", algorithm: hashlib.new(algorithm, images[i]).hexdigest()} for i in range(2)]
    pq.write_table(pa.Table.from_pylist(meta), tmp_path / "00000.parquet")
    shard = tmp_path / "00000"
    shard.mkdir()
    for i, row in enumerate(meta):
        (shard / f"{row['key']}.jpg").write_bytes(images[i] + b"\x00" * i)  # the second changed since
        (shard / f"{row['key']}.txt").write_text(row["caption"])
        (shard / f"{row['key']}.json").write_text(json.dumps(row, indent=4))
    items = _read_all(LaionSource("web", str(tmp_path)))
    assert [(type(i).__name__, i.key) for i in items] == [("ImageRecord", "web-00000-000000000"),
                                                          ("Reject", "web-00000-000000001")]
    assert items[0].data == images[0] and items[1].reason == "hash_mismatch"
    assert items[1].detail.startswith(f"000000001.jpg: {algorithm} of its {len(images[1]) + 1} bytes is ")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_imagefolder_metadata_line_that_is_not_utf8_is_that_rows_problem_alone(tmp_path: Path, fmt: str):
    """A `metadata.csv` saved by Excel on Windows is Windows-1252 (`café`: byte 0xe9), as is a
    JSONL written in a Latin-1 locale: one accented caption made the whole file unread, and every
    image beside it an `unlisted_image` (none built). Now that line alone is a `bad_metadata`
    naming it (its image `unlisted_image`); the other rows are read with their captions. A header
    that is not UTF-8 still leaves the whole file unread (its column names are unknown)."""
    import csv

    rows = [("0.png", "plain"), ("1.png", "caf\u00e9 cr\u00e8me"), ("2.png", "third")]
    for i, (name, _) in enumerate(rows):
        (tmp_path / name).write_bytes(_encoded("PNG", 60 + i, size=8))
    path = tmp_path / f"metadata.{fmt}"
    with open(path, "w", encoding="cp1252", newline="") as handle:  # Excel's CSV: the system code page, CRLF
        if fmt == "csv":
            csv.writer(handle).writerows([("file_name", "text"), *rows])
        else:
            handle.writelines(json.dumps({"file_name": n, "text": t}, ensure_ascii=False) + "\n" for n, t in rows)
    items = _read_all(LaionSource("imgs", str(tmp_path)))
    assert sorted((r.reason, r.detail) for r in items if isinstance(r, Reject)) == [
        ("bad_metadata", f"metadata.{fmt} line {2 if fmt == 'jsonl' else 3}: not UTF-8 text (save the file as "
                         "UTF-8): not read"),
        ("unlisted_image", "'1.png': no row of a metadata file (metadata.jsonl, .csv, .parquet) in its folder or "
                           "above names it; datasets' ImageFolder leaves it out too")]
    assert sorted((r.lineage["path"], r.lineage["caption"]) for r in items if isinstance(r, ImageRecord)) == [
        ("0.png", "plain"), ("2.png", "third")]
    if fmt == "csv":
        path.write_bytes("file_name,l\u00e9gende\r\n0.png,plain\r\n".encode("cp1252"))
        items = _read_all(LaionSource("imgs", str(tmp_path)))
        assert ("bad_metadata", "metadata.csv: not UTF-8 text (byte 11): not read") in {
            (r.reason, r.detail) for r in items if isinstance(r, Reject)}


def test_an_imagefolder_jsonl_caption_holding_a_unicode_line_separator_is_one_row(tmp_path: Path):
    """`json.dumps(ensure_ascii=False)` writes U+2028, U+2029 and U+0085 raw inside a string, and
    pyarrow and `datasets` read such a JSONL line as one row; `str.splitlines` cut it there, each
    half a `bad_metadata` and its image an `unlisted_image`. Now lines end at "\\n" alone."""
    import pyarrow.json as pj

    captions = ["plain", "line\u2028sep", "para\u2029sep", "nel\u0085x"]
    for i in range(len(captions)):
        (tmp_path / f"{i}.png").write_bytes(_encoded("PNG", 70 + i, size=8))
    lines = [json.dumps({"file_name": f"{i}.png", "text": t}, ensure_ascii=False) for i, t in enumerate(captions)]
    (tmp_path / "metadata.jsonl").write_bytes(("\r\n".join(lines) + "\r\n\n").encode())
    assert pj.read_json(tmp_path / "metadata.jsonl").column("text").to_pylist() == captions  # the world reads 4 rows
    items = _read_all(LaionSource("imgs", str(tmp_path)))
    assert sorted((type(i).__name__, i.lineage.get("caption") if isinstance(i, ImageRecord) else i.detail)
                  for i in items) == sorted(("ImageRecord", t) for t in captions)


def test_an_imagefolder_csv_saved_by_excel_for_mac_keeps_its_utf8_rows(tmp_path: Path):
    """Excel for Mac's "CSV (Macintosh)" ends lines with "\\r" alone and writes Mac Roman
    (`café`: byte 0x8e). The header was judged as the file's first "\\n" line, here the whole
    file: one accented row left every row unread. Now the header is the first CSV record: that row
    alone is a `bad_metadata` and the others keep their captions."""
    import csv

    rows = [("file_name", "text"), ("0.png", "plain"), ("1.png", "caf\u00e9"), ("2.png", "third")]
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(_encoded("PNG", 80 + i, size=8))
    (tmp_path / "metadata.csv").write_bytes("\r".join(",".join(r) for r in rows).encode("mac_roman") + b"\r")
    assert len(list(csv.reader(io.StringIO((tmp_path / "metadata.csv").read_text("mac_roman"), newline="")))) == 4
    items = _read_all(LaionSource("imgs", str(tmp_path)))
    assert sorted((r.reason, r.detail.split(":")[0]) for r in items if isinstance(r, Reject)) == [
        ("bad_metadata", "metadata.csv line 3"), ("unlisted_image", "'1.png'")]
    assert sorted((r.lineage["path"], r.lineage["caption"]) for r in items if isinstance(r, ImageRecord)) == [
        ("0.png", "plain"), ("2.png", "third")]


def test_a_datasets_parquet_caption_column_of_bytes_is_read_as_text(tmp_path: Path):
    """A `datasets` parquet whose caption column is `binary` (`Value("binary")`, or a webdataset's
    `txt` members kept as bytes by a converter): each caption was its Python repr (`b'plain'`). Now
    one that is UTF-8 is its text; one that is not keeps each UTF-8 letter, a byte that is not as
    U+FFFD (as a webdataset `.txt` member's: one rule; it was None, all its text lost)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    png = _encoded("PNG", 70, size=8)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows = [{"image": {"bytes": png, "path": None}, "text": text} for text in (b"plain", b"caf\xe9", "\u2603".encode())]
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([("image", image), ("text", pa.binary())])),
                   tmp_path / "data" / "train-00000-of-00001.parquet")
    items = _read_all(LaionSource("hf", str(tmp_path)))
    assert [(type(i).__name__, i.lineage.get("caption")) for i in items] == [
        ("ImageRecord", "plain"), ("ImageRecord", "caf\ufffd"), ("ImageRecord", "\u2603")]


@pytest.mark.parametrize("layout", ["files", "folder"])
def test_a_folder_link_inside_a_shard_folder_is_one_truthful_reject(tmp_path: Path, layout: str):
    """`00001/sib -> ../00000` in img2dataset's `output_format=files` shards (or `sib -> 00000` in a
    plain folder of images), without follow_links: it was taken for a sample's image and read,
    its reject `unreadable_file` of Python's raw "IsADirectoryError: [Errno 21] Is a directory:
    'sib'". Now it is `unexpected_file` saying it is a folder link, not followed; the images are built."""
    from sources.records import Reject

    pictures = {}
    for shard in ("00000", "00001"):
        key = f"{shard}0000"
        pictures[key] = _image_bytes(int(shard) + 1)
        _write_named(tmp_path / shard, f"{key}.png", pictures[key])
        _write_named(tmp_path / shard, f"{key}.json", json.dumps({"key": key, "status": "success"}).encode())
    link = tmp_path / "00001" / "sib" if layout == "files" else tmp_path / "sib"
    link.symlink_to("../00000" if layout == "files" else "00000")
    items = _read_all(LaionSource("web", str(tmp_path), layout))
    assert sorted(i.data or Path(i.uri).read_bytes() for i in items if isinstance(i, ImageRecord)) == \
        sorted(pictures.values())
    rejects = [(r.reason, r.input, r.detail) for r in items if isinstance(r, Reject)]
    shown = "00001/sib" if layout == "files" else "sib"
    assert rejects == [("unexpected_file", shown, f"{shown!r} is a link to a folder, not followed: "
                        "no file to read (set follow_links: true to read the folder it leads to)")], rejects
