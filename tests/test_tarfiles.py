"""The shard writer's tar (`TarWriter`): the bytes `tarfile` writes for the same members, the digest
of those bytes, data offsets that point at the data, and archives GNU tar itself lists."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile

import numpy as np
import pytest

from uvd_pipeline.tarfiles import (NAME_ENCODING, TarWriter, add_member, fixed_info, member_format, member_header,
                                   open_writer)


def _members() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    sizes = [0, 1, 511, 512, 513, 1024, 10_239, 10_240, 100_003]
    members = [(f"s{index:04d}.{index % 3:02d}.png", rng.bytes(size)) for index, size in enumerate(sizes)]
    members.append(("x" * 150 + ".json", b'{"long": "name"}'))  # past 100 bytes: a GNU long-name record
    members.append(("caf\u00e9/\u56fe\u50cf.png", b"\x89PNG not really"))  # names beyond ASCII
    members.append(("d" * 99 + "/" + "e" * 120 + ".png", rng.bytes(700)))
    return members


def _with_tarfile(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with open_writer(out) as tar:
        for name, data in members:
            add_member(tar, name, data)
    return out.getvalue()


def _with_writer(members: list[tuple[str, bytes]]) -> tuple[bytes, list[int], TarWriter]:
    out = io.BytesIO()
    with TarWriter(out) as tar:
        offsets = [tar.add(name, data) for name, data in members]
    return out.getvalue(), offsets, tar


@pytest.mark.parametrize("count", [0, 1, 3, 12])
def test_the_writer_writes_what_tarfile_writes(count):
    members = _members()[:count]
    written, offsets, tar = _with_writer(members)
    assert written == _with_tarfile(members)
    assert len(written) % tarfile.RECORDSIZE == 0
    assert tar.size == len(written)
    assert tar.sha256() == hashlib.sha256(written).hexdigest()
    for (name, data), offset in zip(members, offsets):  # where the relocated store copies will point
        assert written[offset:offset + len(data)] == data
    with tarfile.open(fileobj=io.BytesIO(written)) as read_back:
        assert [(m.name, read_back.extractfile(m).read()) for m in read_back] == members


@pytest.mark.parametrize("name", ["a", "s0001.00.png", "n" * 99, "n" * 100, "n" * 101, "\u00e9" * 50, "x" * 99 + "\u00e9"])
@pytest.mark.parametrize("size", [0, 7, 512, 123_456_789, 8**11 - 1, 8**11])
def test_member_headers_are_tarfiles_headers(name, size):
    """The template-made header of every name length around tar's 100-byte field (a two-byte
    character across it included) and sizes up to the field's last octal digit and past it."""
    expected = fixed_info(name, size).tobuf(member_format(name), NAME_ENCODING, "surrogateescape")
    assert member_header(name, size) == expected


def test_closing_twice_adds_nothing_and_a_closed_writer_refuses_members():
    out = io.BytesIO()
    tar = TarWriter(out)
    tar.add("a.json", b"{}")
    tar.close()
    size = len(out.getvalue())
    tar.close()
    assert len(out.getvalue()) == size == tar.size
    with pytest.raises(ValueError, match="closed"):
        tar.add("b.json", b"{}")


def require_archivers(*tools: str) -> None:
    """Skip without these archivers, or fail when the setup promised them (`make test` installs
    GNU tar and bsdtar: UVD_REQUIRE_ARCHIVERS)."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing and os.environ.get("UVD_REQUIRE_ARCHIVERS"):
        pytest.fail(f"UVD_REQUIRE_ARCHIVERS is set but {', '.join(missing)} is not installed")
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian packages tar, libarchive-tools)")


def test_gnu_tar_lists_and_extracts_what_the_writer_wrote(tmp_path):
    require_archivers("tar")
    members = _members()
    written, _, _ = _with_writer(members)
    path = tmp_path / "shard.tar"
    path.write_bytes(written)
    listed = subprocess.run(["tar", "-tf", str(path)], capture_output=True, text=True, check=True).stdout
    assert listed.splitlines() == [name for name, _ in members]
    target = tmp_path / "out"
    target.mkdir()
    subprocess.run(["tar", "-xf", str(path), "-C", str(target)], check=True)
    for name, data in members:
        assert (target / name).read_bytes() == data


@pytest.mark.parametrize("name", ["caf\u00e9-0000.json", "\u65e5\u672c" * 25 + "-0000.json", "x" * 99 + "\u00e9.png"])
def test_a_name_beyond_ascii_reads_back_exactly_in_strict_mode_and_in_any_locale(name):
    """A GNU header holds its name as bytes of no declared charset, and past 100 bytes cuts them
    (a long-name record before it holds the whole): `tarfile` in strict mode
    (`errors="strict"`) refused the cut UTF-8 character (UnicodeDecodeError), and a reader in a
    Windows code page named the file `cafÃ©`. Such a name goes in a pax header, UTF-8 by definition."""
    written, _, _ = _with_writer([(name, b"{}"), ("s0001.00.png", b"png")])
    for encoding in ("utf-8", "cp1252"):
        with tarfile.open(fileobj=io.BytesIO(written), errorlevel=2, encoding=encoding, errors="strict") as tar:
            assert [(m.name, tar.extractfile(m).read()) for m in tar] == [(name, b"{}"), ("s0001.00.png", b"png")]
    # an ASCII name keeps its GNU header, byte for byte
    assert fixed_info("s0001.00.png", 3).tobuf(tarfile.GNU_FORMAT, NAME_ENCODING) + b"png" in written


def test_what_gnu_tar_and_bsdtar_write_passes_the_extended_header_caps(tmp_path):
    """Long names and link names (GNU 'L'/'K' blocks, pax `path`/`linkpath`), xattrs and a sparse
    file's map ('S' member, pax 1.0), as GNU tar (gnu and posix formats) and bsdtar (pax) write
    them, read through the capped walk (`tar_members.open_tar`) exactly as through plain `tarfile`."""
    require_archivers("tar", "bsdtar")
    import os

    from sources.tar_members import open_tar

    folder = tmp_path / "src" / ("d" * 120)
    folder.mkdir(parents=True)
    (folder / ("f" * 150 + ".jpg")).write_bytes(b"x" * 1000)
    os.symlink(f"{'d' * 120}/{'f' * 150}.jpg", tmp_path / "src" / ("l" * 130 + ".jpg"))
    with open(tmp_path / "src" / "sparse.bin", "wb") as sparse:
        sparse.seek(1 << 20)
        sparse.write(b"end")
    os.setxattr(tmp_path / "src" / "sparse.bin", "user.comment", b"v" * 4000)
    for command in (["tar", "--format=gnu", "-S"], ["tar", "--format=posix", "--xattrs", "-S"],
                    ["bsdtar", "--format=pax"]):
        path = tmp_path / f"{command[0]}{command[1]}.tar"
        subprocess.run([*command, "-cf", str(path), "-C", str(tmp_path / "src"), "."], check=True)
        listed = []
        for opener in (lambda handle, mode: tarfile.open(fileobj=handle, mode=mode), open_tar):
            with path.open("rb") as handle, opener(handle, "r|") as tar:
                listed.append([(m.name, m.size, m.type, m.linkname, m.pax_headers) for m in tar])
        assert listed[0] == listed[1] and len(listed[0]) == 5, command
    assert any("SCHILY.xattr.user.comment" in m[4] for m in listed[0])  # bsdtar's: the xattr was written


def _web_shard(folder, count: int):
    """An img2dataset shard as img2dataset writes it (webdataset's TarWriter: `.jpg`, `.txt` and
    `.json` a sample), with its parquet and _stats.json."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    import webdataset as wds

    folder.mkdir(parents=True, exist_ok=True)
    rng, rows = np.random.default_rng(1), []
    with wds.TarWriter(str(folder / "00000.tar")) as sink:
        for index in range(count):
            key, data = f"{index:09d}", b"\xff\xd8\xff" + rng.bytes(300 + 97 * index)
            rows.append({"key": key, "status": "success", "caption": f"image {index}",
                         "sha256": hashlib.sha256(data).hexdigest()})
            sink.write({"__key__": key, "jpg": data, "txt": rows[-1]["caption"].encode(),
                        "json": json.dumps(rows[-1]).encode()})
    pq.write_table(pa.Table.from_pylist(rows), folder / "00000.parquet")
    (folder / "00000_stats.json").write_text(json.dumps({"count": count, "successes": count}))
    return folder / "00000.tar"


def _class_archive(folder, count: int):
    """An ImageNet class archive as GNU tar writes one from its class folder (`tar -C n01440764 .`)."""
    require_archivers("tar")
    images = folder / "images"
    images.mkdir(parents=True)
    for index in range(count):
        (images / f"n01440764_{index}.JPEG").write_bytes(b"\xff\xd8\xff" + bytes(200 + 61 * index))
    archive = folder / "inet" / "train" / "n01440764.tar"
    archive.parent.mkdir(parents=True)
    subprocess.run(["tar", "--sort=name", "-cf", str(archive), "-C", str(images), "."], check=True)
    return archive


def _header_reads(monkeypatch) -> list[int]:
    """The offset of each header block `tarfile` parses from here on (`CappedTarInfo.fromtarfile`)."""
    from sources.tar_members import CappedTarInfo

    calls: list[int] = []
    parse = CappedTarInfo.fromtarfile.__func__

    def counted(cls, tar):
        calls.append(tar.fileobj.tell())
        return parse(cls, tar)

    monkeypatch.setattr(CappedTarInfo, "fromtarfile", classmethod(counted))
    return calls


def test_a_plain_tars_headers_are_read_once(tmp_path, monkeypatch):
    """`scan` reads a plain tar's headers and keeps what the read needs (`KeptHeaders`): the read
    walks them, parsing no header block again but the first member's (`tarfile.open`'s); read
    twice, they cost 0.1-0.25 CPU-s a 900-image shard set (webdataset's TarWriter writes a pax
    header before each member: two blocks a member). Past the budget they are read twice, as before."""
    from sources import tar_members
    from sources.imagenet import ImageNetSource
    from sources.laion import LaionSource
    from sources.records import Reject

    readers = {"web": (LaionSource("web", str(tmp_path / "web"), "webdataset"), _web_shard(tmp_path / "web", 40), 40),
               "imagenet": (ImageNetSource("inet", str(tmp_path / "inet"), ("train",)), _class_archive(tmp_path, 30),
                            30)}
    for label, (source, archive, records) in readers.items():
        calls = _header_reads(monkeypatch)
        with archive.open("rb") as handle, tar_members.open_tar(handle, "r:"):
            opened = len(calls)  # the first member's blocks
        assert tar_members.scan(str(archive)).headers is not None
        one_pass = len(calls) - opened
        for budget in (tar_members.MAX_KEPT_HEADER_BYTES, 0):
            monkeypatch.setattr(tar_members, "MAX_KEPT_HEADER_BYTES", budget)
            calls.clear()
            items = [i for u in source.units() for i in source.read(u)]
            assert sum(not isinstance(i, Reject) for i in items) == records, (label, items[:3])
            assert len(calls) == (one_pass + opened if budget else 2 * one_pass), (label, budget, len(calls), one_pass)
        monkeypatch.undo()


def _cuts(data: bytes) -> dict[str, int]:
    """Where to cut a tar: nowhere, at its third member's header, inside that header, inside its
    data, and at the end of its last member (no end-of-archive block)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    third, last = members[2], members[-1]
    return {"whole": len(data), "header": third.offset, "in header": third.offset + 300,
            "in data": third.offset_data + 2, "no end block": last.offset_data + -(-last.size // 512) * 512}


def _items(source) -> list[str]:
    return [repr(item) for unit in source.units() for item in source.read(unit)]


def test_past_the_kept_header_budget_a_tar_reads_the_same(tmp_path, monkeypatch):
    """Read over its kept headers or, past `MAX_KEPT_HEADER_BYTES` (none kept, or one and then let
    go), with its headers read again, a tar gives the same items, details and all: an img2dataset
    shard (local and through fsspec's memory://), one with a copy `tar -r` appended, one in GNU
    tar's posix format (a pax header a member), an ImageNet class archive; whole and cut everywhere."""
    import fsspec

    from sources import tar_members
    from sources.imagenet import ImageNetSource
    from sources.laion import LaionSource

    require_archivers("tar")
    web, appended, posix = (_web_shard(tmp_path / label, 6) for label in ("web", "appended", "posix"))
    (tmp_path / "000000001.jpg").write_bytes(b"\xff\xd8\xff a later copy")
    subprocess.run(["tar", "-rf", str(appended), "-C", str(tmp_path), "000000001.jpg"], check=True)
    files = tmp_path / "files"
    files.mkdir()
    subprocess.run(["tar", "-xf", str(posix), "-C", str(files)], check=True)
    subprocess.run(["tar", "--format=posix", "-cf", str(posix), "-C", str(files), *sorted(os.listdir(files))],
                   check=True)
    remote, memory = "memory:///tarhdr/web", fsspec.filesystem("memory")
    for name in ("00000.parquet", "00000_stats.json"):
        memory.pipe(f"{remote}/{name}", (web.parent / name).read_bytes())
    cases = {"web": (web, str(web), LaionSource("web", str(web.parent), "webdataset")),
             "appended": (appended, str(appended), LaionSource("web", str(appended.parent), "webdataset")),
             "posix": (posix, str(posix), LaionSource("web", str(posix.parent), "webdataset")),
             "remote": (web, f"{remote}/00000.tar", LaionSource("web", remote, "webdataset"))}
    classes = _class_archive(tmp_path, 5)
    cases["imagenet"] = (classes, str(classes), ImageNetSource("inet", str(tmp_path / "inet"), ("train",)))
    wholes = {archive: archive.read_bytes() for archive, _, _ in cases.values()}
    for label, (archive, uri, source) in cases.items():
        for where, cut in _cuts(wholes[archive]).items():
            if uri.startswith("memory:"):
                memory.pipe(uri, wholes[archive][:cut])
            else:
                archive.write_bytes(wholes[archive][:cut])
            assert tar_members.scan(uri).headers is not None, (label, where)
            kept = _items(source)
            assert ("corrupt_archive" in "".join(kept)) == (where != "whole"), (label, where, kept)
            assert where != "whole" or "ImageRecord" in "".join(kept), (label, kept)
            for budget in (0, 150):  # none kept; one, then let go
                monkeypatch.setattr(tar_members, "MAX_KEPT_HEADER_BYTES", budget)
                assert tar_members.scan(uri).headers is None, (label, where)
                again = _items(source)
                monkeypatch.undo()
                assert kept == again, (label, where, budget)


def _tar_ending_badly(path, ending: str) -> None:
    """Three members in pax format, the last with a 2 MiB pax `comment` record, then `ending`: "no
    end block" (cut at the member boundary, as a killed download is) or "bad pax" (a 2 MiB pax
    block whose last record is malformed, refused from inside tarfile's frames)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for index in range(3):
            info = tarfile.TarInfo(f"{index:09d}.jpg")
            info.size, info.pax_headers = 3, {"comment": "c" * (2 << 20)} if index == 2 else {}
            tar.addfile(info, io.BytesIO(b"\xff\xd8\xff"))
    data = buf.getvalue().rstrip(b"\0")
    data += b"\0" * (-len(data) % 512)
    if ending == "bad pax":
        record = b"%d comment=%s\n" % (len("comment=") + 9 + (2 << 20), b"x" * (2 << 20))
        header = tarfile.TarInfo("././@PaxHeader")
        header.type, header.size = tarfile.XHDTYPE, len(record) + 9
        data += header.tobuf(tarfile.USTAR_FORMAT) + record + b"99 broken" + b"\0" * (-(len(record) + 9) % 512 + 1024)
    path.write_bytes(data)


@pytest.mark.parametrize("ending", ["no end block", "bad pax"])
def test_the_error_ending_a_scan_is_kept_without_its_frames(tmp_path, ending):
    """`scan` keeps the error that ended it for the read (`KeptHeaders.error`); kept with its
    traceback, it held every frame it passed through for the whole read: scan's (its dict of names,
    the last header with a 2 MiB pax record) and tarfile's (a pax block read whole, up to 4 MiB)."""
    import gc
    import tracemalloc

    from sources.tar_members import read_members, scan

    path = tmp_path / "00000.tar"
    _tar_ending_badly(path, ending)
    held, cuts = [], []

    def visit(tar, info):
        gc.collect()
        held.append(tracemalloc.get_traced_memory()[0])
        return ()

    gc.collect()
    tracemalloc.start()
    try:
        layout = scan(str(path))
        assert layout.headers is not None and layout.headers.error is not None
        list(read_members(str(path), lambda handle: "r:", visit, lambda exc: cuts.append(str(exc)) or (),
                          lambda info, detail: (), layout))
    finally:
        tracemalloc.stop()
    assert len(held) == 3 and ("end-of-archive" in cuts[0] if ending == "no end block" else "malformed" in cuts[0])
    assert max(held) < 1 << 20, held  # 2.1-4.2 MB with the traceback


@pytest.mark.parametrize("form", ["gnu", "posix"])
def test_a_sparse_member_reads_back_its_bytes_as_does_the_member_after_it(tmp_path, form):
    """A sparse file in a shard (`tar -S`: GNU's 'S' member or pax's GNU sparse 1.0) is stored as its
    data fragments and a map; `KeptHeaders` keeps no map, so `scan` keeps no header of such a tar
    (the read reads them again, map and all): kept as a plain member's, its bytes were read as one
    run, the sample cut short and the shard a `corrupt_archive`."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from sources.laion import LaionSource
    from sources.records import Reject

    require_archivers("tar")
    files, folder = tmp_path / "files", tmp_path / form
    files.mkdir()
    folder.mkdir()
    with open(files / "000000000.jpg", "wb") as sparse:
        sparse.write(b"\xff\xd8\xff" + b"A" * 5000)
        sparse.seek(1 << 20)
        sparse.write(b"B" * 5000)
    (files / "000000001.jpg").write_bytes(b"\xff\xd8\xff after the sparse one")
    names, rows = [], []
    for index in range(2):
        key = f"{index:09d}"
        (files / f"{key}.txt").write_text(f"image {index}")
        names += [f"{key}.jpg", f"{key}.txt"]
        rows.append({"key": key, "status": "success", "caption": f"image {index}",
                     "sha256": hashlib.sha256((files / f"{key}.jpg").read_bytes()).hexdigest()})
    subprocess.run(["tar", f"--format={form}", "-S", "-cf", str(folder / "00000.tar"), "-C", str(files), *names],
                   check=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "00000.parquet")
    (folder / "00000_stats.json").write_text(json.dumps({"count": 2, "successes": 2}))
    with tarfile.open(folder / "00000.tar") as tar:
        assert tar.getmember("000000000.jpg").sparse, "tar wrote no sparse member: the file system keeps no holes"
    source = LaionSource("web", str(folder), "webdataset")
    items = [item for unit in source.units() for item in source.read(unit)]
    assert not [item for item in items if isinstance(item, Reject)], items
    assert [item.data for item in items] == [(files / name).read_bytes() for name in names if name.endswith(".jpg")]


def _gzipped_shards(tmp_path) -> dict[str, "Path"]:
    """The same img2dataset shard gzipped the ways the world gzips one: webdataset's TarWriter
    writing `.tar.gz` itself, GNU tar -czf and bsdtar -czf of its files (`.tgz`, `.tar.gz`), and
    GNU tar after `tar -rf` appended a second copy of a member, then gzip."""
    import webdataset as wds

    require_archivers("tar", "bsdtar", "gzip")
    plain = _web_shard(tmp_path / "plain", 8)
    files = tmp_path / "files"
    files.mkdir()
    subprocess.run(["tar", "-xf", str(plain), "-C", str(files)], check=True)
    names = sorted(os.listdir(files))
    shards = {}
    for label, stem in (("webdataset", "00000.tar.gz"), ("gnu", "00000.tgz"), ("bsdtar", "00000.tar.gz"),
                        ("appended", "00000.tar.gz")):
        folder = tmp_path / label
        folder.mkdir()
        for name in ("00000.parquet", "00000_stats.json"):
            shutil.copy(plain.parent / name, folder / name)
        shards[label] = folder / stem
    with tarfile.open(plain) as tar, wds.TarWriter(str(shards["webdataset"]), compress=True) as sink:
        samples: dict[str, dict] = {}
        for info in tar.getmembers():
            key, ext = info.name.split(".", 1)
            samples.setdefault(key, {"__key__": key})[ext] = tar.extractfile(info).read()
        for sample in samples.values():
            sink.write(sample)
    subprocess.run(["tar", "-czf", str(shards["gnu"]), "-C", str(files), *names], check=True)
    subprocess.run(["bsdtar", "-czf", str(shards["bsdtar"]), "-C", str(files), *names], check=True)
    appended = tmp_path / "appended.tar"
    subprocess.run(["tar", "-cf", str(appended), "-C", str(files), *names], check=True)
    (files / names[0]).write_bytes(b"\xff\xd8\xff a later copy")
    subprocess.run(["tar", "-rf", str(appended), "-C", str(files), names[0]], check=True)
    shards["appended"].write_bytes(subprocess.run(["gzip", "-c", str(appended)], check=True,
                                                  capture_output=True).stdout)
    return shards


def test_a_small_gzipped_shard_is_inflated_once_and_reads_as_before(tmp_path, monkeypatch):
    """A gzipped shard within `MAX_KEPT_HEADER_BYTES` inflated is inflated once, by `scan`, whose
    copy the read reads (its file's bytes read once, not twice); its items, their order and its
    rejects are what reading it twice gives (`small_gzip` off), for shards of webdataset, GNU tar,
    bsdtar and an appended copy; cut anywhere in its gzip stream or its tar, or past the budget,
    it is read twice as before, with the same items."""
    from sources import fsio, tar_members
    from sources.laion import LaionSource

    read_bytes = []

    def counted_open(uri, mode="rb", read_ahead=True):
        handle = opened(uri, mode, read_ahead)
        if uri.endswith((".tgz", ".tar.gz")):  # the shard's bytes, not its parquet's
            original = handle.read
            handle.read = lambda *a: read_bytes.append(len(data := original(*a))) or data
        return handle

    opened = fsio.open_file
    for label, shard in _gzipped_shards(tmp_path).items():
        source = LaionSource("web", str(shard.parent), "webdataset")
        whole = shard.read_bytes()
        plain = gzip.decompress(whole)
        cuts = {"whole": whole, "gzip cut": whole[: len(whole) * 2 // 3], "no gzip trailer": whole[:-8],
                "tar cut": gzip.compress(plain[: len(plain) // 2]), "junk after": whole + b"junk"}
        for where, data in cuts.items():
            shard.write_bytes(data)
            monkeypatch.setattr(fsio, "open_file", counted_open)
            read_bytes.clear()
            once = _items(source)
            read_once = sum(read_bytes)
            monkeypatch.setattr(tar_members, "small_gzip", lambda handle: None)
            monkeypatch.setattr(tar_members, "spooled_gzip", lambda handle: None)  # nor spooled: streamed
            read_bytes.clear()
            twice = _items(source)
            read_twice = sum(read_bytes)
            monkeypatch.undo()
            assert once == twice, (label, where)
            assert where != "whole" or "corrupt_archive" not in "".join(once), (label, once)
            inflated = tar_members.scan(str(shard)).inflated
            if where == "whole":
                assert inflated == plain and "ImageRecord" in "".join(once), label
                assert read_once < 1.2 * len(data) < read_twice, (label, read_once, read_twice, len(data))
            else:
                assert inflated is None, (label, where)
        shard.write_bytes(whole)
        monkeypatch.setattr(tar_members, "MAX_KEPT_HEADER_BYTES", len(plain) - 1)
        assert tar_members.scan(str(shard)).inflated is None
        past = _items(source)
        monkeypatch.undo()
        assert past == _items(source), label


@pytest.mark.parametrize("name", ["00000.tar", "00000.tar.gz"])
def test_too_many_open_files_scanning_a_tar_is_the_machines_error_and_a_plain_tar_is_opened_once(
        tmp_path, monkeypatch, name):
    """`scan` opens a gzipped tar first to inflate it once; too many open files there was taken
    for a tar that is no small gzip (the scan went on, the error lost), and every plain tar was
    opened twice (a second request on a remote filesystem). Now only gzip names are tried, and the
    machine's error is raised."""
    import errno

    from sources import fsio, tar_members
    from sources.records import MachineError

    shard = tmp_path / name
    with tarfile.open(shard, "w:gz" if name.endswith(".gz") else "w") as tar:
        info = tarfile.TarInfo("000000000.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    real_open, opened = fsio.open_file, []

    def counting(uri, *args, **kwargs):
        opened.append(uri)
        return real_open(uri, *args, **kwargs)

    monkeypatch.setattr(fsio, "open_file", counting)
    tar_members.scan(str(shard))
    assert len(opened) == 1  # a plain tar: scanned from the file; a small gzip: inflated once, scanned in memory

    def exhausted(uri, *args, **kwargs):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), uri)

    monkeypatch.setattr(fsio, "open_file", exhausted)
    with pytest.raises(MachineError, match=r"\[Errno %d\]" % errno.EMFILE):
        tar_members.scan(str(shard))


def test_a_gzipped_shard_of_several_gzip_members_or_with_fextra_reads_whole(tmp_path, monkeypatch):
    """A `.tgz` made of several gzip members (`cat a.gz b.gz`, as bgzip, pigz --independent or
    concatenated dumps write it) or whose gzip header carries FEXTRA (dictzip, bgzip) reads every
    sample, inflated once (`small_gzip`) or streamed (past the budget): tarfile's own `r|gz`
    stopped at the end of the first member (3 of 8 samples lost as `missing_from_archive`) and
    refused FEXTRA as invalid compressed data. GNU tar lists every member of both."""
    import zlib

    from sources import tar_members
    from sources.laion import LaionSource

    shard = _gzipped_shards(tmp_path)["gnu"]
    whole = _items(LaionSource("web", str(shard.parent), "webdataset"))
    assert sum("ImageRecord" in item for item in whole) == 8 and "Reject" not in "".join(whole)
    plain = gzip.decompress(shard.read_bytes())
    half = tmp_path / "half"
    half.mkdir()
    (half / "a").write_bytes(plain[: len(plain) // 1024 * 512])
    (half / "b").write_bytes(plain[len(plain) // 1024 * 512:])
    subprocess.run(["gzip", "-n", str(half / "a"), str(half / "b")], check=True)
    members = subprocess.run(f"cat {half}/a.gz {half}/b.gz", shell=True, check=True, capture_output=True).stdout
    deflated = zlib.compressobj(9, zlib.DEFLATED, -15)
    extra = b"BC\x02\x00\x00\x00"  # bgzip's subfield
    fextra = (b"\x1f\x8b\x08\x04\0\0\0\0\0\xff" + len(extra).to_bytes(2, "little") + extra
              + deflated.compress(plain) + deflated.flush()
              + zlib.crc32(plain).to_bytes(4, "little") + len(plain).to_bytes(4, "little"))
    for label, data in (("cat of two members", members), ("FEXTRA", fextra)):
        shard.write_bytes(data)
        assert len(subprocess.run(["tar", "-tzf", str(shard)], check=True, capture_output=True,
                                  text=True).stdout.split()) == 24, label
        assert tar_members.small_gzip(open(shard, "rb")) == plain, label
        assert _items(LaionSource("web", str(shard.parent), "webdataset")) == whole, label
        monkeypatch.setattr(tar_members, "small_gzip", lambda handle: None)  # a shard past the budget
        monkeypatch.setattr(tar_members, "spooled_gzip", lambda handle: None)  # nor spooled: streamed
        assert _items(LaionSource("web", str(shard.parent), "webdataset")) == whole, label
        monkeypatch.undo()
    shard.write_bytes(members[:-200])  # the second member cut short: a counted reject still
    cut = _items(LaionSource("web", str(shard.parent), "webdataset"))
    assert "corrupt_archive" in "".join(cut) and sum("ImageRecord" in item for item in cut) < 8


def test_a_lying_gzip_length_never_inflates_a_shard_past_the_budget(tmp_path):
    """A gzipped tar past `MAX_KEPT_HEADER_BYTES` whose trailer's ISIZE is patched to 100 bytes
    passes the trailer check, but `small_gzip` stops inflating at the budget and returns None:
    its peak memory stays within the budget's parts plus zlib's one output of at most the budget
    (blocks, then joined: 16.1 MiB measured), under 2.5 times it; without the in-loop cap the
    whole 24 MiB tar is inflated (30.8 MB peak measured; 87 MiB for a 64 MiB one)."""
    import tracemalloc

    from sources import tar_members

    files = tmp_path / "files"
    files.mkdir()
    (files / "000000000.jpg").write_bytes(b"\xff\xd8\xff" + bytes(3 * tar_members.MAX_KEPT_HEADER_BYTES))
    shard = tmp_path / "00000.tar.gz"
    subprocess.run(["tar", "-czf", str(shard), "-C", str(files), "000000000.jpg"], check=True)
    lying = bytearray(shard.read_bytes())
    assert int.from_bytes(lying[-4:], "little") > 3 * tar_members.MAX_KEPT_HEADER_BYTES
    lying[-4:] = (100).to_bytes(4, "little")
    shard.write_bytes(bytes(lying))
    with open(shard, "rb") as handle:
        tracemalloc.start()
        try:
            inflated = tar_members.small_gzip(handle)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert inflated is None
    assert peak < 2.5 * tar_members.MAX_KEPT_HEADER_BYTES, peak


@pytest.mark.parametrize("damage", ["last byte cut", "trailer cut", "crc flipped"])
def test_a_gzipped_shard_whose_tar_is_whole_but_gzip_trailer_damaged_is_a_counted_corrupt_archive(
        tmp_path, monkeypatch, damage):
    """A GNU `tar -czf` shard whose tar ends whole but whose gzip trailer is cut or whose CRC is
    wrong: `tar -tzf` exits with an error. The damage shows only at the end of the stream, so the
    samples before it are kept, the one then held is `truncated_sample` and the shard one
    `corrupt_archive` naming the gzip stream, inflated once or streamed (before, tarfile's own
    reader passed over a bad trailer: the shard read as whole)."""
    from sources import tar_members
    from sources.laion import LaionSource

    shard = _gzipped_shards(tmp_path)["gnu"]
    data = bytearray(shard.read_bytes())
    if damage == "last byte cut":
        data = data[:-1]
    elif damage == "trailer cut":
        data = data[:-9]
    else:
        data[-8] ^= 1
    shard.write_bytes(bytes(data))
    assert subprocess.run(["tar", "-tzf", str(shard)], capture_output=True).returncode != 0
    for streamed in (False, True):
        if streamed:
            monkeypatch.setattr(tar_members, "small_gzip", lambda handle: None)  # a shard past the budget
            monkeypatch.setattr(tar_members, "spooled_gzip", lambda handle: None)  # nor spooled: streamed
        items = "".join(_items(LaionSource("web", str(shard.parent), "webdataset")))
        said = "gzip CRC check fails" if damage == "crc flipped" else "gzip stream is damaged"
        assert "corrupt_archive" in items and said in items, (streamed, items)


def _regzipped_with_a_tail(tmp_path, tail_command: str):
    """The GNU test shard written again by `tar | gzip` with what `tail_command` prints after the
    tar's end inside the gzip stream; returns it and the items the shard gave before."""
    from sources.laion import LaionSource

    shard = _gzipped_shards(tmp_path)["gnu"]
    whole = _items(LaionSource("web", str(shard.parent), "webdataset"))
    files = tmp_path / "own"
    files.mkdir()
    subprocess.run(["tar", "-xzf", str(shard), "-C", str(files)], check=True)
    subprocess.run(f"(tar -cf - -C {files} $(ls {files}); {tail_command}) | gzip -n > {shard}",
                   shell=True, check=True)
    return shard, whole


@pytest.mark.parametrize("tail", [64 << 10, (64 << 20) + (1 << 20)])
def test_a_gzipped_shard_whose_stream_goes_on_after_its_tar_is_checked_within_a_bound(tmp_path, monkeypatch, tail):
    """A GNU tar shard followed inside its gzip stream by `tail` zeros (`(tar -cf - ...; head -c N
    /dev/zero) | gzip`: a record-padded writer, or a 1 MB .tgz hiding 1 GB of zeros). GNU tar
    lists it whole. Its CRC lies past the zeros: a short tail is inflated and checked (reads as the
    shard without it); one past `max(the tar's bytes, GZIP_TAIL_FLOOR)` is not inflated on, and
    the shard is a counted `corrupt_archive` saying its CRC went unchecked, every sample built (all
    lay before the end-of-archive block; before, the last was `truncated_sample`)."""
    from sources import tar_members
    from sources.laion import LaionSource

    shard, whole = _regzipped_with_a_tail(tmp_path, f"head -c {tail} /dev/zero")
    assert len(subprocess.run(["tar", "-tzf", str(shard)], check=True, capture_output=True,
                              text=True).stdout.split()) == 24
    items = _items(LaionSource("web", str(shard.parent), "webdataset"))
    if tail <= tar_members.GZIP_TAIL_FLOOR:
        assert items == whole
        return
    joined = "".join(items)
    assert "corrupt_archive" in joined and "its CRC is not checked" in joined, joined[-3000:]
    assert "truncated_sample" not in joined
    assert [item for item in items if "corrupt_archive" not in item] == whole
    drained = []
    real_read = tar_members.GzipStream.read
    monkeypatch.setattr(tar_members.GzipStream, "read", lambda self, size=-1: drained.append(
        len(out := real_read(self, size))) or out)
    _items(LaionSource("web", str(shard.parent), "webdataset"))
    assert sum(drained) < 4 * tar_members.GZIP_TAIL_FLOOR, sum(drained)  # not all of a longer tail


def _three_ways(monkeypatch, source) -> list[list[str]]:
    """A gzipped shard's items inflated in memory (`small_gzip`), spooled (`spooled_gzip`) and streamed."""
    from sources import tar_members

    ways = []
    with monkeypatch.context() as patched:
        ways.append(_items(source))
        patched.setattr(tar_members, "MAX_KEPT_HEADER_BYTES", 1000)
        ways.append(_items(source))
        patched.setattr(tar_members, "spooled_gzip", lambda handle: None)
        patched.setattr(tar_members, "small_gzip", lambda handle: None)
        ways.append(_items(source))
    return ways


def test_a_gzipped_tar_with_junk_past_the_tail_bound_has_one_verdict_inflated_spooled_or_streamed(
        tmp_path, monkeypatch):
    """A tar followed inside its gzip stream by random bytes past the tail bound (made small here):
    inflated in memory or spooled, its CRC was checked and it passed whole; streamed, it was a
    `corrupt_archive` and its last sample `truncated_sample`. Which it was hung on TMPDIR and the
    disk's free room; now each way says the same: every sample, and one `corrupt_archive`."""
    from sources import tar_members
    from sources.laion import LaionSource

    shard, whole = _regzipped_with_a_tail(tmp_path, f"head -c {2 << 20} /dev/urandom")
    monkeypatch.setattr(tar_members, "GZIP_TAIL_FLOOR", 1 << 20)
    ways = _three_ways(monkeypatch, LaionSource("web", str(shard.parent), "webdataset"))
    assert ways[0] == ways[1] == ways[2], ways
    joined = "".join(ways[0])
    assert "its CRC is not checked" in joined and "truncated_sample" not in joined
    assert [item for item in ways[0] if "corrupt_archive" not in item] == whole


def test_a_gzipped_shard_with_a_byte_flipped_inside_a_member_says_its_crc_fails_not_damage_after_the_end(
        tmp_path, monkeypatch):
    """A shard gzipped without compression (stored blocks: `gzip.compress(..., compresslevel=0)`,
    as of incompressible JPEGs) with one byte flipped inside its first JPEG, as a bad copy flips
    one: `gzip -t` says "crc error". It was a `corrupt_archive` "AfterTheEnd: ... damaged or cut
    short", as if every member was read whole, though the first sample was built from the wrong
    byte. Now the detail says the CRC fails, that which member holds the wrong byte cannot be told
    and that the samples were built from the bytes as read; the same inflated, spooled or streamed."""
    import gzip

    from sources.laion import LaionSource

    shard = _gzipped_shards(tmp_path)["gnu"]
    stored = bytearray(gzip.compress(gzip.decompress(shard.read_bytes()), compresslevel=0, mtime=0))
    stored[stored.index(b"\xff\xd8\xff") + 100] ^= 0x55
    shard.write_bytes(bytes(stored))
    assert "crc error" in subprocess.run(["gzip", "-t", str(shard)], capture_output=True, text=True).stderr
    ways = _three_ways(monkeypatch, LaionSource("web", str(shard.parent), "webdataset"))
    assert ways[0] == ways[1] == ways[2], ways
    refused = [item for item in ways[0] if "corrupt_archive" in item]
    assert len(refused) == 1 and "truncated_sample" not in "".join(ways[0]), ways[0]
    assert "gzip CRC check fails" in refused[0] and "in which member cannot be told" in refused[0], refused
    assert "AfterTheEnd" not in refused[0] and "built as read (download it again)" in refused[0], refused
    assert sum("ImageRecord" in item for item in ways[0]) == 8


def _jpeg_like_samples(files: Path, count: int, size: int, seed: int) -> Path:
    """`count` samples of a JPEG signature and `size` random bytes, each with a caption, in `files`."""
    files.mkdir()
    rng = np.random.default_rng(seed)
    for index in range(count):
        (files / f"{index:09d}.jpg").write_bytes(b"\xff\xd8\xff" + rng.bytes(size))
        (files / f"{index:09d}.txt").write_text(f"image {index}")
    return files


def test_a_gnu_tar_written_with_a_big_blocking_factor_reads_whole_wherever_tmpdir_lies(tmp_path, monkeypatch):
    """`tar -b 20000 -czf` (GNU tar pads to a 10 MB record; `tar -tzf` lists it whole) of 3 MiB of
    JPEG-like data: spooled to a TMPDIR on disk it read whole; streamed (TMPDIR on /dev/shm, a
    full disk) its 7 MB of padding passed the old tail bound, max(tar bytes, 1 MiB): a
    `corrupt_archive` and its last sample `truncated_sample`. Now both build every sample."""
    from sources import tar_members
    from sources.laion import LaionSource

    require_archivers("tar")
    shard = _gzipped_shards(tmp_path)["gnu"]
    files = _jpeg_like_samples(tmp_path / "big", 3, 1 << 20, seed=7)
    subprocess.run(f"tar -b 20000 -czf {shard} -C {files} $(ls {files})", shell=True, check=True)
    assert len(gzip.decompress(shard.read_bytes())) == 20000 * 512
    assert len(subprocess.run(["tar", "-tzf", str(shard)], check=True, capture_output=True,
                              text=True).stdout.split()) == 6
    source = LaionSource("web", str(shard.parent), "webdataset")
    seen = {}
    for folder in (tmp_path, "/dev/shm"):
        if not os.path.isdir(folder):
            continue
        monkeypatch.setattr(tempfile, "tempdir", str(folder))
        seen[str(folder)] = (tar_members.in_memory(str(folder)), _items(source))
    kinds = {in_memory for in_memory, _ in seen.values()}
    items = [found for _, found in seen.values()]
    assert all(found == items[0] for found in items)
    assert sum("ImageRecord" in item for item in items[0]) == 3, items[0]
    assert "corrupt_archive" not in "".join(items[0]) and "truncated_sample" not in "".join(items[0])
    monkeypatch.setattr(tar_members, "spooled_gzip", lambda handle: None)  # streamed wherever TMPDIR lies
    assert _items(source) == items[0] and kinds


def test_a_gzipped_shard_past_the_kept_budget_is_inflated_once_into_a_spool(tmp_path, monkeypatch):
    """A GNU `tar -czf` shard of JPEG-like members inflating past `MAX_KEPT_HEADER_BYTES` (8 MiB)
    was inflated twice, its file read twice (scan, then read: 0.54 of 0.73 CPU-s for a 40 MB
    shard); now once, into an unnamed temporary file that the read reads, closed after it. Its
    items are what the streamed read gives; past `MAX_SPOOL_RATIO` times its size (or the disk's
    room) it is streamed as before."""
    from sources import fsio, tar_members
    from sources.laion import LaionSource

    shard = _gzipped_shards(tmp_path)["gnu"]
    files = _jpeg_like_samples(tmp_path / "big", 5, 2 << 20, seed=5)
    subprocess.run(f"tar -czf {shard} -C {files} $(ls {files})", shell=True, check=True)
    assert len(gzip.decompress(shard.read_bytes())) > tar_members.MAX_KEPT_HEADER_BYTES
    read_bytes, spools = [], []
    opened, spooled = fsio.open_file, tar_members.spooled_gzip

    def counted_open(uri, mode="rb", read_ahead=True):
        handle = opened(uri, mode, read_ahead)
        if uri.endswith(".tgz"):
            original = handle.read
            handle.read = lambda *a: read_bytes.append(len(data := original(*a))) or data
        return handle

    monkeypatch.setattr(fsio, "open_file", counted_open)
    monkeypatch.setattr(tar_members, "spooled_gzip", lambda handle: spools.append(spooled(handle)) or spools[-1])
    source = LaionSource("web", str(shard.parent), "webdataset")
    once = _items(source)
    assert sum(read_bytes) < 1.2 * shard.stat().st_size, (sum(read_bytes), shard.stat().st_size)
    assert len(spools) == 1 and spools[0] is not None and spools[0].closed
    monkeypatch.setattr(tar_members, "spooled_gzip", lambda handle: None)
    read_bytes.clear()
    streamed = _items(source)
    assert sum(read_bytes) > 1.9 * shard.stat().st_size
    assert once == streamed and sum("ImageRecord" in item for item in once) == 5
    monkeypatch.setattr(tar_members, "spooled_gzip", spooled)
    monkeypatch.setattr(tar_members, "MAX_KEPT_HEADER_BYTES", 1000)  # headers past the kept budget (a tar
    read_bytes.clear()  # of ~75,000 members): read again from the spool, the file still inflated once
    assert _items(source) == streamed and sum(read_bytes) < 1.2 * shard.stat().st_size, sum(read_bytes)
    monkeypatch.undo()
    monkeypatch.setattr(tar_members, "MAX_SPOOL_RATIO", 0.5)  # a shard deflating past the ratio: streamed
    assert tar_members.scan(str(shard)).spool is None and _items(source) == streamed


def test_a_tar_of_more_members_than_the_cap_is_indexed_and_read_only_up_to_it(tmp_path, monkeypatch):
    """`scan` indexed every member's name and sample key (~120 bytes a member: 250 MB for a tar of 2
    million empty members, which Python's tarfile or GNU tar write in seconds). Past
    `MAX_TAR_MEMBERS` the index stops growing and the read stops there too, as on a cut tar: the
    samples before are built, the one then held is `truncated_sample`, the shard `corrupt_archive`
    saying why, plain or gzipped, kept headers or read again."""
    from sources import tar_members
    from sources.laion import LaionSource

    gnu = _gzipped_shards(tmp_path)["gnu"]
    gnu.unlink()
    shard = gnu.with_suffix(".tar")
    files = tmp_path / "many"
    files.mkdir()
    for index in range(20):  # 40 members: 20 samples of a .jpg and a .txt
        (files / f"{index:09d}.jpg").write_bytes(b"\xff\xd8\xff" + bytes(index))
        (files / f"{index:09d}.txt").write_text(f"image {index}")
    subprocess.run(f"tar -cf {shard} -C {files} $(ls {files})", shell=True, check=True)
    whole = _items(LaionSource("web", str(shard.parent), "webdataset"))
    assert "corrupt_archive" not in "".join(whole)
    monkeypatch.setattr(tar_members, "MAX_TAR_MEMBERS", 31)
    layout = tar_members.scan(str(shard), lambda member: tar_members.split_member(member)[0])
    assert layout.keys == 16  # members 0-30: samples 0-15, no further
    capped = _items(LaionSource("web", str(shard.parent), "webdataset"))
    joined = "".join(capped)
    assert "corrupt_archive" in joined and "holds more than 31 members" in joined
    assert sum("ImageRecord" in item for item in capped) == 15 and "truncated_sample" in joined
    assert capped[:15] == [item for item in whole if "ImageRecord" in item][:15]
    monkeypatch.setattr(tar_members, "MAX_KEPT_HEADER_BYTES", 0)  # headers read again: the same
    assert _items(LaionSource("web", str(shard.parent), "webdataset")) == capped
    subprocess.run(["gzip", "-n", str(shard)], check=True)
    gzipped = _items(LaionSource("web", str(shard.parent), "webdataset"))
    assert "holds more than 31 members" in "".join(gzipped) and sum("ImageRecord" in i for i in gzipped) == 15


def test_no_spool_is_written_to_a_temporary_folder_held_in_memory(tmp_path, monkeypatch):
    """A tmpfs TMPDIR (Fedora's and Arch's /tmp, /dev/shm) holds a spool in memory: the shard past
    the kept budget is streamed there instead, as before. The filesystem kinds are GNU stat's."""
    import tempfile

    from sources import tar_members

    kinds = {folder: subprocess.run(["stat", "-f", "-c", "%T", folder], check=True, capture_output=True,
                                    text=True).stdout.strip() for folder in ("/dev/shm", str(tmp_path))}
    for folder, kind in kinds.items():
        assert tar_members.in_memory(folder) == (kind in ("tmpfs", "ramfs")), (folder, kind)
    shard = tmp_path / "00000.tgz"
    rng = np.random.default_rng(6)
    (tmp_path / "000000000.jpg").write_bytes(rng.bytes(tar_members.MAX_KEPT_HEADER_BYTES + (1 << 20)))
    subprocess.run(["tar", "-czf", str(shard), "-C", str(tmp_path), "000000000.jpg"], check=True)
    for folder, kind in kinds.items():
        monkeypatch.setattr(tempfile, "tempdir", folder)
        with open(shard, "rb") as handle:
            spool = tar_members.spooled_gzip(handle)
        assert (spool is None) == (kind in ("tmpfs", "ramfs")), (folder, kind)
        if spool is not None:
            spool.close()


def test_the_spool_budget_keeps_a_gib_free_and_takes_at_most_4_gib_or_8_times_the_shard(tmp_path, monkeypatch):
    """`spool_budget` as the disk's free room (os.statvfs, faked here: the free room of a real disk
    is no fixed figure) makes it: at most 4 GiB, at most 8 times the gzipped shard, and never
    leaving less than 1 GiB free (other workers' spools, the build's own output); none at all
    when less than that is free, and then the shard is not spooled."""
    from sources import tar_members

    gib, mib = 1 << 30, 1 << 20
    free = [0]

    class Room:
        f_frsize = 4096

        @property
        def f_bavail(self):
            return free[0] // 4096

    monkeypatch.setattr(os, "statvfs", lambda path: Room())
    folder = str(tmp_path)
    assert not tar_members.in_memory(folder)
    free[0] = 100 * gib
    assert tar_members.spool_budget(folder, gib) == 4 * gib  # the cap, not 8 GiB
    assert tar_members.spool_budget(folder, 10 * mib) == 80 * mib  # 8 times the shard
    free[0] = gib + 100 * mib
    assert tar_members.spool_budget(folder, gib) == 100 * mib  # a GiB left free
    free[0] = gib - 4096
    assert tar_members.spool_budget(folder, gib) == 0
    shard = _gzipped_shards(tmp_path)["gnu"]
    monkeypatch.setattr(tempfile, "tempdir", folder)
    monkeypatch.setattr(tar_members, "MAX_KEPT_HEADER_BYTES", 1000)  # past the in-memory budget
    free[0] = 100 * gib
    with open(shard, "rb") as handle:
        spool = tar_members.spooled_gzip(handle)
    assert spool is not None
    spool.close()
    free[0] = gib + 2000  # 2000 bytes over the reserve: too little for this shard
    with open(shard, "rb") as handle:
        assert tar_members.spooled_gzip(handle) is None


@pytest.mark.slow
def test_a_webdataset_shard_of_its_default_maxcount_with_many_fields_is_read_whole(tmp_path):
    """webdataset's ShardWriter closes a shard at 100,000 samples by default; 84,000 samples of 6
    fields (504,000 members) passed the old 500,000-member cap: the shard's `corrupt_archive` and
    ~667 samples lost. Its index (`scan`, which the read follows) now holds every sample. The shard
    is written by bsdtar from an mtree list (the members ShardWriter writes, in its order, with a
    fixed whole-second mtime as for reproducible shards): ShardWriter's Python tarfile took 22 CPU-s
    for the same 504,000 plain ustar headers, bsdtar 3."""
    from sources import tar_members

    require_archivers("bsdtar")
    fields = {"jpg": b"\xff\xd8\xff", "txt": b"c", "json": b"{}", "cls": b"1", "npy": b"x", "seg.png": b"p"}
    (tmp_path / "field").mkdir()
    for field, data in fields.items():
        (tmp_path / "field" / field).write_bytes(data)
    listing = ["#mtree", "/set type=file mode=0444 uid=0 gid=0 time=1700000000.0"]
    listing += [f"{index:09d}.{field} contents=field/{field}" for index in range(84_000) for field in fields]
    (tmp_path / "members.mtree").write_text("\n".join(listing) + "\n")
    subprocess.run(["bsdtar", "-cf", "shard-000000.tar", "@members.mtree"], cwd=tmp_path, check=True)
    shard = tmp_path / "shard-000000.tar"

    layout = tar_members.scan(str(shard), lambda member: tar_members.split_member(member)[0])
    assert not layout.damaged and layout.keys == 84_000  # the old cap stopped the index at 500,000


def test_a_gzipped_tar_without_its_end_of_archive_block_is_cut_inflated_spooled_or_streamed(tmp_path, monkeypatch):
    """A GNU tar shard cut at a member boundary before its end-of-archive block, then gzipped
    whole (`tar -cf - ... | head -c N | gzip`: a tar killed between members whose pipe's gzip
    ended cleanly). Spooled, it was a `corrupt_archive` and its last sample `truncated_sample`;
    inflated in memory or streamed, it read as whole, nothing said. Each way now says it is cut."""
    from sources.laion import LaionSource

    shard = _gzipped_shards(tmp_path)["gnu"]
    raw = subprocess.run(["gzip", "-dc", str(shard)], check=True, capture_output=True).stdout
    cut = _cuts(raw)["no end block"]
    shard.write_bytes(subprocess.run(f"gzip -dc {shard} | head -c {cut} | gzip -n", shell=True, check=True,
                                     capture_output=True).stdout)
    assert subprocess.run(["tar", "-tzf", str(shard)], capture_output=True).returncode == 0  # GNU tar: only a warning
    ways = _three_ways(monkeypatch, LaionSource("web", str(shard.parent), "webdataset"))
    assert ways[0] == ways[1] == ways[2], ways
    rejects = [item for item in ways[0] if item.startswith("Reject")]
    assert len(rejects) == 2, rejects
    assert "truncated_sample" in rejects[0] and "corrupt_archive" in rejects[1]
    assert f"ends after {cut} bytes without its end-of-archive block" in rejects[1]


def test_a_shards_members_are_named_in_rejects_and_records_as_the_tar_spells_them(tmp_path):
    """A shard GNU tar made of a camera's upper-case files (`000000000.JPG`, `000000001.NPY`
    beside its `.jpg`, a `.PNG` twin of a `.jpg`): a reject's (and a record's) `input` named
    `00000.tar:000000000.jpg`, a member the tar does not hold, so `tar -xf 00000.tar
    000000000.jpg` found nothing. Each names the member as it is in the tar."""
    from sources.laion import LaionSource
    from sources.records import ImageRecord, Reject

    require_archivers("tar")
    files = tmp_path / "files"
    files.mkdir()
    jpeg = subprocess.run(["convert", "-size", "16x16", "xc:red", "jpg:-"], check=True, capture_output=True).stdout
    names = {"000000000.JPG": jpeg, "000000000.txt": b"caption", "000000001.jpg": jpeg, "000000001.NPY": b"x",
             "000000002.jpg": jpeg, "000000002.PNG": b"\x89PNG not one"}
    for name, data in names.items():
        (files / name).write_bytes(data)
    (tmp_path / "web").mkdir()
    subprocess.run(["tar", "-cf", str(tmp_path / "web" / "00000.tar"), "-C", str(files), *names], check=True)
    source = LaionSource("web", str(tmp_path / "web"), "webdataset")
    items = [item for unit in source.units() for item in source.read(unit)]
    inputs = sorted(item.input for item in items if isinstance(item, (ImageRecord, Reject)))
    held = subprocess.run(["tar", "-tf", str(tmp_path / "web" / "00000.tar")], check=True, capture_output=True,
                          text=True).stdout.split()
    assert {name.split(":", 1)[1] for name in inputs} <= set(held), inputs
    assert "00000.tar:000000000.JPG" in inputs and "00000.tar:000000001.NPY" in inputs, inputs
    assert sum(isinstance(item, Reject) and item.reason == "duplicate_key" for item in items) == 1


def test_the_scans_index_of_names_and_keys_takes_its_few_bytes_a_member(tmp_path, monkeypatch):
    """`scan`'s index of member names and sample keys held ~240 bytes a member in dicts (+242 MiB
    at the 2**20-member cap, a tar of one-file samples, counted by no budget). Its arrays take
    `INDEX_BYTES_PER_MEMBER` (48) a member; with the sort at the end the scan's peak stays under
    100 bytes a member (traced, its kept headers set aside), and what it tells the read is the
    same: the copy `tar -r` appended shadows the first, a scattered key's last member is known."""
    import tracemalloc

    from sources import tar_members

    require_archivers("tar")
    shard = tmp_path / "00000.tar"
    count = 40_000
    with tarfile.open(shard, "w", format=tarfile.GNU_FORMAT) as tar:  # one empty member a sample
        for index in range(count):
            tar.addfile(tarfile.TarInfo(f"{index:09d}.jpg"))
    (tmp_path / "000000007.jpg").write_bytes(b"again")
    (tmp_path / "000000003.txt").write_bytes(b"apart")
    subprocess.run(["tar", "-rf", str(shard), "-C", str(tmp_path), "000000007.jpg", "000000003.txt"], check=True)
    monkeypatch.setattr(tar_members, "MAX_KEPT_HEADER_BYTES", 0)
    tracemalloc.start()
    try:
        layout = tar_members.scan(str(shard), lambda member: tar_members.split_member(member)[0])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * count, peak / count
    assert not layout.damaged and layout.keys == count
    assert list(layout.copies.values()) == [[1, count * 512]]  # the appended copy's header offset
    assert sorted(layout.key_ends.values()) == [count, count + 1]  # keys 7 and 3: their members lie apart


def _shard_hiding(tmp_path, name: str, compress: str, hidden: int, fill: str) -> tuple[Path, dict[str, bytes]]:
    """An img2dataset-like shard `name` compressed by `compress` (a GNU tar flag, or a command the
    plain tar is piped through) of three samples, the middle one's `.jpg` `hidden` bytes of zeros
    (`truncate -s`: a sparse file, as a bomb is made) or of random bytes; and the other members'
    bytes as GNU tar extracts them."""
    require_archivers("tar")
    files = tmp_path / f"files-{fill}"
    files.mkdir()
    rng = np.random.default_rng(3)
    for index in range(3):
        (files / f"{index:09d}.jpg").write_bytes(b"\xff\xd8\xff" + rng.bytes(5000))
        (files / f"{index:09d}.txt").write_text(f"image {index}")
    bomb = files / "000000001.jpg"
    if fill == "zeros":
        bomb.unlink()
        subprocess.run(["truncate", "-s", str(hidden), str(bomb)], check=True)
    else:
        bomb.write_bytes(rng.bytes(hidden))
    shard = tmp_path / fill / name
    shard.parent.mkdir()
    names = sorted(p.name for p in files.iterdir())
    if compress.startswith("-"):
        subprocess.run(["tar", compress, "-cf", str(shard), "-C", str(files), *names], check=True)
    else:
        subprocess.run(f"tar -cf - -C {files} {' '.join(names)} | {compress} > {shard}", shell=True, check=True)
    extracted = {n: subprocess.run(["tar", "-xOf", str(shard), n], check=True, capture_output=True).stdout
                 for n in names if n != bomb.name}
    return shard, extracted


BOMBS = [("00000.tar.gz", "-z"), ("00000.tgz", "gzip -9"), ("00000.tar", "-j"), ("00000.tar", "-J")]


@pytest.mark.parametrize("name,compress", BOMBS)
def test_a_member_over_the_cap_hiding_zeros_is_inflated_only_within_the_skip_budget(tmp_path, monkeypatch, name,
                                                                                     compress):
    """A compressed shard (GNU tar -czf, gzip -9, and a `.tar` GNU tar wrote with -j or -J, which
    the reader streams too) hiding a member of zeros over the member cap (64 MiB at a 1 MiB cap here,
    as an 8 MB .tar.gz hides 8 GiB) was inflated in full twice to skip it (8 GiB: 17.5 CPU-s; 1 GB
    of gzip would cost ~35 CPU-minutes), and the sample after it built. Now passing over data no
    source reads inflates at most `SKIP_FLOOR` plus `SKIP_RATIO` times the compressed bytes read:
    the member's own `member_too_large`, then one `inflation_budget` reject naming it and the bytes
    inflated stands for the rest of the archive; the sample before it is built as GNU tar extracts it."""
    from sources import img2dataset_reader, tar_members
    from sources.laion import LaionSource

    cap = 1 << 20
    monkeypatch.setattr(img2dataset_reader, "MAX_INPUT_FILE_BYTES", cap)
    monkeypatch.setattr(tar_members, "MAX_INPUT_FILE_BYTES", cap, raising=False)
    monkeypatch.setattr(tar_members, "SKIP_FLOOR", 4 << 20, raising=False)
    shard, extracted = _shard_hiding(tmp_path, name, compress, 64 << 20, "zeros")
    assert shard.stat().st_size < 1 << 20  # a bomb: 64 MiB of zeros in less than 1 MiB
    streamed = []  # bytes the scan and the read inflated streaming it
    for kind in {tar_members.GzipStream, getattr(tar_members, "UnpackedStream", tar_members.GzipStream)}:
        monkeypatch.setattr(kind, "read", lambda self, size=-1, read=kind.read: streamed.append(len(
            chunk := read(self, size))) or chunk)
    source = LaionSource("web", str(shard.parent), "webdataset")
    items = [item for unit in source.units() for item in source.read(unit)]
    built = {item.key: item.data for item in items if type(item).__name__ == "ImageRecord"}
    reasons = {item.key: (item.reason, item.detail) for item in items if type(item).__name__ == "Reject"}
    assert built == {"web-00000-000000000": extracted["000000000.jpg"]}, built.keys()
    assert reasons["web-00000-000000001"][0] == "member_too_large"
    reason, detail = reasons["web-00000"]
    assert reason == "inflation_budget" and detail.startswith("InflationRefused: 000000001.jpg: "), detail
    inflated, compressed = (int(n) for n in re.search(r"inflated (\d+) B from (\d+) compressed", detail).groups())
    assert 4 << 20 < inflated <= (4 << 20) + 64 * compressed + (1 << 20) < 64 << 20, detail
    # streamed by the scan to the budget, then the read stops at the scan's verdict: not inflated twice
    assert inflated <= sum(streamed) < inflated + (1 << 20), (sum(streamed), inflated)
    assert len(reasons) == 2 and detail.endswith("repack without the member"), reasons


@pytest.mark.parametrize("name,compress", BOMBS)
def test_a_member_over_the_cap_of_real_data_is_skipped_whole_and_the_rest_built(tmp_path, monkeypatch, name,
                                                                                 compress):
    """The same shards with the member over the cap random bytes (as a video or a JPEG is, ~1:1)
    skip it within the budget and build every sample after it, as GNU tar extracts them."""
    from sources import img2dataset_reader, tar_members
    from sources.laion import LaionSource

    cap = 1 << 20
    monkeypatch.setattr(img2dataset_reader, "MAX_INPUT_FILE_BYTES", cap)
    monkeypatch.setattr(tar_members, "MAX_INPUT_FILE_BYTES", cap, raising=False)
    monkeypatch.setattr(tar_members, "SKIP_FLOOR", 4 << 20, raising=False)
    monkeypatch.setattr(tar_members, "spooled_gzip", lambda handle: None)  # streamed, as past the spool budget
    shard, extracted = _shard_hiding(tmp_path, name, compress, 3 << 20, "random")
    source = LaionSource("web", str(shard.parent), "webdataset")
    items = [item for unit in source.units() for item in source.read(unit)]
    built = {item.key: item.data for item in items if type(item).__name__ == "ImageRecord"}
    assert built == {"web-00000-000000000": extracted["000000000.jpg"],
                     "web-00000-000000002": extracted["000000002.jpg"]}, items
    assert [item.reason for item in items if type(item).__name__ == "Reject"] == ["member_too_large"]


def test_a_compressed_tar_its_reader_reads_plain_is_not_inflated_by_the_scan(tmp_path, monkeypatch):
    """An ImageNet class archive made by GNU `tar -czf` under the plain `n01440764.tar` name, of
    members of zeros under the cap (no `SkipBudget` holds them): its read opens it plain (`r|`) and
    finds no header (one `corrupt_archive`), but its scan inflated it whole first (48 MiB here; an
    8 MB one hides 8 GiB). Now the scan opens it as its read does: nothing is inflated, the same items."""
    from sources import tar_members
    from sources.imagenet import ImageNetSource

    require_archivers("tar", "truncate")
    images = tmp_path / "images"
    images.mkdir()
    for index in range(3):
        subprocess.run(["truncate", "-s", str(16 << 20), str(images / f"n01440764_{index}.JPEG")], check=True)
    archive = tmp_path / "inet" / "train" / "n01440764.tar"
    archive.parent.mkdir(parents=True)
    subprocess.run(["tar", "-czf", str(archive), "-C", str(images), "."], check=True)
    inflated = []
    read = tar_members.GzipStream.read
    monkeypatch.setattr(tar_members.GzipStream, "read", lambda self, size=-1: inflated.append(len(
        chunk := read(self, size))) or chunk)
    source = ImageNetSource("inet", str(tmp_path / "inet"), ("train",))
    items = [item for unit in source.units() for item in source.read(unit)]
    assert [item.reason for item in items] == ["corrupt_archive"], items
    assert "invalid header" in items[0].detail or "ReadError" in items[0].detail, items[0].detail
    assert sum(inflated) == 0, sum(inflated)


@pytest.mark.parametrize("flag", ["-cJf", "-cjf"])
def test_a_compressed_tar_of_flat_frames_read_in_parts_reads_as_whole(tmp_path, monkeypatch, flag):
    """A `.tar` GNU tar compressed (-J, -j) of flat-colour BMP frames (~1,000:1) is read in parts
    once it passes the part size; each part passes over the samples other parts own. The read
    counted those against the skip budget, so each part stopped at its own place and every part but
    one lost the samples after it with no reject (3 parts: 10 of 40 built, one `inflation_budget`).
    Only the scan's verdict stops a read now: the parts build what the whole read builds. (Scaled:
    a 1 MiB floor for the real 1 GiB, parts of 1,000 bytes for the real 64 MiB.) `tar_units` now
    keeps a compressed `.tar` whole (each part inflated all of it): its parts are made here."""
    from PIL import Image

    from sources import tar_members, web_units
    from sources.laion import LaionSource

    files, shards = tmp_path / "files", tmp_path / "web"
    files.mkdir()
    shards.mkdir()
    for i in range(40):
        Image.fromarray(np.full((256, 256, 3), (i * 6, 100, 200 - i * 4), np.uint8)).save(files / f"{i:09d}.bmp")
        (files / f"{i:09d}.txt").write_text(f"caption {i}")
    subprocess.run(["tar", flag, str(shards / "00000.tar"), "-C", str(files), *sorted(os.listdir(files))], check=True)
    monkeypatch.setattr(tar_members, "SKIP_FLOOR", 1 << 20)

    def items(part_bytes: int) -> tuple[int, list, list]:
        monkeypatch.setattr(web_units, "TAR_PART_BYTES", part_bytes)
        source = LaionSource("web", str(shards), "webdataset")
        units = list(source.units())
        assert len(units) == 1  # compressed: never split, whatever the part size
        if part_bytes < (shards / "00000.tar").stat().st_size:
            units = [dataclasses.replace(units[0], part=part, parts=3) for part in range(3)]
        read = [item for unit in units for item in source.read(unit)]
        return (len(units), sorted((i.key, i.data) for i in read if type(i).__name__ == "ImageRecord"),
                sorted((i.key, i.reason) for i in read if type(i).__name__ == "Reject"))

    (whole_units, whole, whole_rejects), (part_units, parts, part_rejects) = items(64 << 20), items(1000)
    assert (whole_units, len(whole), whole_rejects) == (1, 40, [])
    assert part_units > 1 and parts == whole and part_rejects == whole_rejects


def test_an_xz_tar_with_stream_padding_reads_as_without(tmp_path):
    """xz allows Stream Padding, zeros (a multiple of 4) after a stream, as concatenating to a block
    size leaves them: `xz -t` passes such a file and `tar -tJf` lists every member. Python's
    `LZMAFile` takes them for a cut stream, so the streamed read gave a `corrupt_archive` reject
    beside its samples. Now the padding is passed over: the same items as the file without it;
    zeros that are no multiple of 4 are still damage, as `xz -t` says."""
    from sources.laion import LaionSource

    files = tmp_path / "files"
    files.mkdir()
    for i in range(6):
        (files / f"{i:09d}.jpg").write_bytes(os.urandom(900))  # what a reader keeps: its bytes
        (files / f"{i:09d}.txt").write_text(f"caption {i}")
    folders = {}
    for name, padding in (("plain", b""), ("padded", bytes(4096)), ("odd", bytes(4097))):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        shard = folders[name] / "00000.tar"
        subprocess.run(["tar", "-cJf", str(shard), "-C", str(files), *sorted(os.listdir(files))], check=True)
        with open(shard, "ab") as handle:
            handle.write(padding)
    assert subprocess.run(["xz", "-t", str(folders["padded"] / "00000.tar")]).returncode == 0
    assert subprocess.run(["xz", "-t", str(folders["odd"] / "00000.tar")], capture_output=True).returncode != 0

    def items(folder) -> list[tuple]:
        source = LaionSource("web", str(folder), "webdataset")
        return sorted((type(i).__name__, i.key, getattr(i, "reason", "")) for u in source.units() for i in source.read(u))

    plain = items(folders["plain"])
    assert [kind for kind, _, _ in plain] == ["ImageRecord"] * 6
    assert items(folders["padded"]) == plain
    assert ("Reject", "web-00000", "corrupt_archive") in items(folders["odd"])
