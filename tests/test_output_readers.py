"""A build's outputs read back as its users' own code reads them, with tools that share none of the
project's code (GNU tar, `tarfile` in strict mode, webdataset, pyarrow alone, a ten-line LVM JSONL
reader), over inputs named as the world names files: several dots, spaces, unicode, a name that is
not UTF-8, upper-case extensions, names differing only in case, a leading dash, very long names."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.ipc as ipc
import pytest
import webdataset as wds
import yaml
from PIL import Image

NAME_MAX = 255  # bytes of one file name (Linux, macOS, Windows): what `tar -xf` can create
LATIN1 = b"caf\xe9 cr\xe8me.jpg"  # a name from an old archive or camera: not UTF-8
# names as people, cameras, browsers and tools write them
WORLD_NAMES = ["IMG_1234.final.v2.jpg", "my photo 1.jpg", "café ünïcode 日本.jpg", "Photo.jpg", "photo.jpg",
               "UPPER.JPG", "x.PNG", "y.JPEG", "-leading-dash.jpg", "photo (1).jpg", "scan[2].jpg", "50%.jpg",
               "a#b.jpg", "what?.jpg", "cafe\u0301 nfd.jpg", "line\u2028sep.jpg", "emoji😀.jpg", "dots...jpg",
               "a" * 251 + ".jpg", "a" * 250 + "b.jpg", "b" * 200 + " long.jpg", "album.2020/sub dir/IMG_0001.JPG",
               "c" * 120 + "/" + "d" * 120 + "/IMG_0002.jpg", "caf\u00e9 nfd.jpg"]  # the last: NFC twin of an NFD name
VIDEOS = [b"My Clip.final.v2.MP4", b"caf\xe9 clip.mp4", b"v" * 246 + b".mp4"]  # latin-1, 250 bytes
CLASSES = ["n04266014", "golden retriever", "crème brûlée", "日本" * 40]  # the last: 240 bytes of UTF-8
PER_CLASS = 5


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (20, 28, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG")
    return buf.getvalue()


def _write(path: bytes, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def _world(root: Path) -> tuple[bytes, bytes, bytes]:
    """An image folder, an ImageNet-style class folder and a video folder of world-named files
    (paths as bytes)."""
    from video_zoo import encode

    clips = os.fsencode(root / "clips")
    os.makedirs(clips)
    first = encode(root / "clips" / "first.mp4", 16, "mpeg4")
    for name in VIDEOS:
        shutil.copy(first, clips + b"/" + name)
    os.unlink(first)
    web, inet = os.fsencode(root / "web"), os.fsencode(root / "inet" / "train")
    names = [n.encode() for n in WORLD_NAMES] + [LATIN1]
    for i, name in enumerate(names):
        _write(web + b"/" + name, _jpeg(i))
    _write(web + b"/IMG_1234.final.v2.txt", "a caption\u2028with a line separator\n".encode())
    classes = [c.encode() for c in CLASSES] + [b"caf\xe9"]
    for c, label in enumerate(classes):
        for i, name in enumerate(names[:PER_CLASS - 1] + [LATIN1]):
            _write(inet + b"/" + label + b"/" + name, _jpeg(100 * c + i))
    _write(inet + "/n04266014/read\u2028me.txt".encode(), b"not an image: a reject naming it\n")
    return web, os.fsencode(root / "inet"), clips


@pytest.fixture(scope="module")
def world_build(tmp_path_factory):
    """One build of the world-named folders (16-px images, no tokens): (output, summary, inputs)."""
    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config

    root = tmp_path_factory.mktemp("world")
    web, inet, clips = _world(root)
    config = {"version": 1, "output": str(root / "out"), "seed": 0, "image": {"size": 16},
              "split": {"val_fraction": 0.2}, "dedup": {"enabled": False}, "tokenizer": {"enabled": False},
              "sources": [{"name": "web", "type": "laion", "path": os.fsdecode(web), "format": "folder",
                           "num_shards": 2},
                          {"name": "inet", "type": "imagenet", "path": os.fsdecode(inet), "splits": ["train"],
                           "sentence_length": PER_CLASS, "num_shards": 1},
                          {"name": "clips", "type": "video", "path": os.fsdecode(clips), "num_shards": 1}],
              "beam": {"runner": "DirectRunner", "direct_num_workers": 1, "direct_running_mode": "in_memory"}}
    (root / "c.yaml").write_text(yaml.safe_dump(config))
    summary = run_build(load_config(str(root / "c.yaml"))).summary
    # web: + the latin-1 name and a caption; inet: + the latin-1 class, a text file
    inputs = {"web": len(WORLD_NAMES) + 2, "inet": (len(CLASSES) + 1) * PER_CLASS + 1, "clips": len(VIDEOS) * 16}
    return root / "out", summary, inputs


def _tars(output: Path) -> list[str]:
    return sorted(str(p) for p in (output / "rendered").rglob("*.tar"))


def _strict_sentences(tar: str) -> list[tuple[str, dict, list[bytes]]]:
    """(key, header, images) per sentence, as a reader that trusts nothing groups a tar: regular
    members, safe names, each header followed by its images `key.00.png`, `key.01.png`, ..."""
    sentences: list[tuple[str, dict, list[bytes]]] = []
    with tarfile.open(tar, errorlevel=2, encoding="utf-8") as archive:
        for info in archive:
            assert info.isreg() and "/" not in info.name and not info.name.startswith("-"), info.name
            info.name.encode("utf-8")  # no byte that is not UTF-8 (tarfile holds one as a surrogate)
            data = archive.extractfile(info).read()
            key, _, ext = info.name.partition(".")
            if ext == "json":
                header = json.loads(data.decode("utf-8"))
                assert header["sentence_id"] == key
                sentences.append((key, header, []))
            else:
                assert sentences and key == sentences[-1][0] and ext == f"{len(sentences[-1][2]):02d}.png"
                sentences[-1][2].append(data)
    return sentences


def test_every_member_name_extracts_with_gnu_tar(world_build, tmp_path):
    output, _, _ = world_build
    for tar in _tars(output):
        names = subprocess.run(["tar", "-tf", tar], capture_output=True, check=True).stdout.decode().splitlines()
        assert all(len(n.encode()) <= NAME_MAX for n in names), max(names, key=len)
        target = tmp_path / Path(tar).stem
        target.mkdir()
        run = subprocess.run(["tar", "-xf", tar, "-C", str(target)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-400:]
        assert sorted(os.listdir(target)) == sorted(names)


def test_names_beyond_ascii_read_the_same_in_any_locale(world_build):
    """A member name beyond ASCII (a sentence of the class folder `日本日本...`) in a plain GNU
    header is bytes in no declared charset: a reader decodes them in its own locale, as Windows'
    `tar.exe` (bsdtar) does with the machine's code page, and named the files `æ—¥æœ¬...`. Such a
    name now goes in a pax header, whose `path` is UTF-8 for every reader; ASCII names keep their
    GNU headers (the same bytes as before)."""
    beyond = []
    for tar in _tars(world_build[0]):
        with tarfile.open(tar, errorlevel=2, encoding="utf-8", errors="strict") as archive:
            names = archive.getnames()
        with tarfile.open(tar, errorlevel=2, encoding="cp1252", errors="strict") as archive:
            assert archive.getnames() == names  # a reader whose locale is Windows' western code page
        beyond += [n for n in names if not n.isascii()]
        if shutil.which("bsdtar"):
            listed = subprocess.run(["bsdtar", "--options", "hdrcharset=CP1252", "-tf", tar], capture_output=True,
                                    check=True, env={**os.environ, "LC_ALL": "C.UTF-8"}).stdout.decode()
            assert listed.splitlines() == names
    assert any(len(n.encode()) > 100 for n in beyond) and any(len(n.encode()) <= 100 for n in beyond)


def test_headers_are_utf8_json_and_webdataset_groups_each_sentence_whole(world_build):
    output, _, _ = world_build
    paths = []
    for tar in _tars(output):
        strict = _strict_sentences(tar)
        samples = list(wds.WebDataset([tar], shardshuffle=False))
        assert [s["__key__"] for s in samples] == [key for key, _, _ in strict]
        for sample, (key, header, images) in zip(samples, strict):
            assert json.loads(sample["json"]) == header and len(images) == header["n_images"]
            assert [sample[k] for k in sorted(k for k in sample if k.endswith(".png"))] == images
        paths += [m.get("path") or m.get("file") for _, h, _ in strict for m in h["members"]]
        paths += [h["meta"]["file"] for _, h, _ in strict if h["kind"] == "video"]
    # the file whose name is not UTF-8 is named by its bytes, as `\xe9`, never dropped
    assert {"caf\\xe9 cr\\xe8me.jpg", "caf\\xe9 clip.mp4"} <= set(paths)
    # a class folder's image is named by its path under the split (`train/<class>/<file>`)
    assert any(p and p.startswith("train/") and p.endswith("/caf\\xe9 cr\\xe8me.jpg") for p in paths), paths


def test_every_world_named_input_is_a_member_or_a_reject(world_build):
    output, summary, inputs = world_build
    members: dict[str, int] = {}
    for tar in _tars(output):
        for _, header, _ in _strict_sentences(tar):
            members[header["source"]] = members.get(header["source"], 0) + len(header["members"])
    text = (output / "rejects.jsonl").read_bytes().decode("utf-8")
    rejects = [json.loads(line) for line in text.split("\n") if line]
    assert text.splitlines() == text.split("\n")[:-1]  # no U+2028 and kin inside a line
    for source, count in inputs.items():
        refused = [r for r in rejects if r["source"] == source]
        # the caption is no input of its own; a class of 5 makes one sentence of 5 (none left over)
        assert members.get(source, 0) + len(refused) == count - (source == "web"), (source, refused)
        assert summary["sources"][source]["rejects"] == len(refused)
        # long names cut apart stay apart; of `café nfd.jpg` in NFD and in NFC (one key) the NFC file is read
        twins = [r["detail"] for r in refused if r["reason"] == "duplicate_key"]
        assert twins == (["caf\u00e9 nfd.jpg (NFD) is the name of caf\u00e9 nfd.jpg (NFC) in another Unicode form "
                          "or case: that file is read"] if source == "web" else [])


def _lvm_jsonl(path: Path) -> list[np.ndarray]:
    """LVM_FACTS.md's released format read as EasyLM reads it: one JSON object per line, `tokens`
    the base64 of little-endian int32 ids."""
    rows = []
    with open(path, "rb") as handle:
        for line in handle:
            record = json.loads(line)
            rows.append(np.frombuffer(base64.b64decode(record["tokens"], validate=True), dtype="<i4"))
    return rows


def test_token_shards_and_their_jsonl_read_without_the_project(mini_build, tmp_path):
    """pyarrow alone reads what the schema documents; the tokens are the tars' sentences, whole
    images of codes the codebook holds; the JSONL export holds the same ids, shard by shard."""
    from uvd_pipeline.cli import main

    config, summary = mini_build
    output = Path(config.output)
    headers = {h["sentence_id"]: h for tar in _tars(output) for _, h, _ in _strict_sentences(tar)}
    shards = sorted((output / "tokens").rglob("*.arrow"))
    rows = []
    for shard in shards:
        with pa.memory_map(str(shard)) as source:
            table = ipc.open_file(source).read_all()
        assert pads.dataset(str(shard), format="arrow").to_table().equals(table)
        assert table.schema.names == ["sentence_id", "source", "kind", "task", "split", "n_images", "tokens", "lineage"]
        assert table.schema.field("tokens").type == pa.large_list(pa.uint16())
        meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
        codebook, per_image = int(meta["uvd.codebook_size"]), int(meta["uvd.tokens_per_image"])
        assert int(meta["uvd.image_size"]) == config.image.size and meta["uvd.config_hash"] == config.content_hash()
        for row in table.to_pylist():
            header = headers.pop(row["sentence_id"])
            assert [row[f] for f in ("source", "kind", "task", "split", "n_images")] == \
                [header[f] for f in ("source", "kind", "task", "split", "n_images")]
            assert len(row["tokens"]) == row["n_images"] * per_image and max(row["tokens"]) < codebook
            assert isinstance(json.loads(row["lineage"]), dict)
            rows.append(row["tokens"])
    assert not headers and len(rows) == summary["totals"]["sentences"]  # every sentence has its tokens
    assert main(["export-jsonl", *map(str, shards), "--out", str(tmp_path / "lvm.jsonl")]) == 0
    exported = _lvm_jsonl(tmp_path / "lvm.jsonl")
    assert len(exported) == len(rows) and all(np.array_equal(a, b) for a, b in zip(exported, rows))


def _folded(name: str) -> str:
    """A name as a case-insensitive file system compares it (macOS, Windows): Unicode's canonical
    caseless match (NFD, case folded, then NFC)."""
    import unicodedata

    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", name).casefold())


def test_names_differing_only_in_case_stay_apart_when_extracted_on_a_mac_or_windows(tmp_path):
    """A Linux folder holding `Cat.jpg`, `cat.jpg` and `CAT.jpg` (and class folders `Cat/`, `cat/`):
    their sentences were `web-Cat`, `web-cat`, `web-CAT` in one shard, members a Mac's or Windows'
    file system takes for one file, so `tar -xf` there kept one sentence of the three and no reader
    said so. Now no two members of a split's shards are equal but for case or Unicode form (twins
    go to one shard, where the writer tells them apart: a user extracts every shard of a split into
    one folder); every sentence is read back by strict `tarfile` and webdataset with its own bytes,
    and an ordinary name keeps its key (`Dog.jpg` is `web-Dog`)."""
    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config

    names = ["Cat.jpg", "cat.jpg", "CAT.jpg", "Dog.jpg"]
    for i, name in enumerate(names):
        _write(os.fsencode(tmp_path / "web" / name), _jpeg(i))
    for c, label in enumerate(["Cat", "cat"]):
        for i in range(2):
            _write(os.fsencode(tmp_path / "inet" / "train" / label / f"n{i}.jpg"), _jpeg(10 + 2 * c + i))
    config = {"version": 1, "output": str(tmp_path / "out"), "image": {"size": 16}, "split": {"val_fraction": 0.0},
              "dedup": {"enabled": False}, "tokenizer": {"enabled": False},
              "sources": [{"name": "web", "type": "laion", "path": str(tmp_path / "web"), "format": "folder",
                           "num_shards": 4},
                          {"name": "inet", "type": "imagenet", "path": str(tmp_path / "inet"), "splits": ["train"],
                           "sentence_length": 2, "num_shards": 3}],
              "beam": {"direct_num_workers": 1, "direct_running_mode": "in_memory"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run_build(load_config(str(tmp_path / "c.yaml")))
    files = set()
    split_members: dict[str, list[str]] = {}
    web_keys: set[str] = set()
    for tar in _tars(tmp_path / "out"):
        with tarfile.open(tar, errorlevel=2, encoding="utf-8", errors="strict") as archive:
            split_members.setdefault(os.path.dirname(tar), []).extend(archive.getnames())
        strict = _strict_sentences(tar)
        samples = list(wds.WebDataset([tar], shardshuffle=False))
        assert [s["__key__"] for s in samples] == [key for key, _, _ in strict]
        assert [[s[k] for k in sorted(k for k in s if k.endswith(".png"))] for s in samples] == [i for *_, i in strict]
        files |= {m.get("path") or m["file"] for _, h, _ in strict for m in h["members"]}
        web_keys |= {key for key, _, _ in strict if "web-train" in tar}
    assert files == {*names, "train/Cat/n0.jpg", "train/Cat/n1.jpg", "train/cat/n0.jpg", "train/cat/n1.jpg"}
    assert "web-Dog" in web_keys
    for members in split_members.values():
        assert len({_folded(n) for n in members}) == len(members), members
    assert not (tmp_path / "out" / "rejects.jsonl").read_text()
