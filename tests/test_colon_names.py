"""`::` is a legal character of a file name, and fsspec reads it as URL chaining (`a::b`: file `a`
opened through `b`): a local `cam::1.png` was read as `cam`, a link out of the root the checks never
judged (they judge the full name). Every file is read under its exact name; remote URLs keep fsspec."""

from __future__ import annotations

import json
import os
from pathlib import Path

import fsspec
import pytest
from PIL import Image

from sources import fsio
from sources.coco import CocoSource, load_index
from sources.records import PairRecord, Reject
from test_hostile_sources import _items, _rejects
from test_rerun_changed_input import _build, _config
from tokenizer.atomic import write_bytes
from uvd_pipeline.render import RenderSettings, decode_png
from uvd_pipeline.render_annotated import render_pair
from uvd_pipeline.rendered_shards import iter_shard

RED, BLUE, LIME = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _secret(tmp_path: Path) -> Path:
    """An image outside every root (a size of its own: its file state differs from any inside)."""
    secret = tmp_path / "secret" / "s.png"
    _png(secret, RED, (24, 18))
    return secret


def test_coco_names_with_colons_render_their_own_file_never_the_link_before_the_colons(tmp_path: Path):
    secret = _secret(tmp_path)
    root = tmp_path / "ds"
    _png(root / "imgs" / "cam::1.png", BLUE)
    _png(root / "imgs" / "only::2.png", LIME)  # nothing named `only`: was missing_image 'only'
    (root / "imgs" / "cam").symlink_to(secret)  # a link out of the root: was read for cam::1.png
    names = ["cam::1.png", "only::2.png", "cam", "cam::9.png", "file://" + str(secret)]
    images = [{"id": i, "file_name": n, "width": 40, "height": 30} for i, n in enumerate(names, 1)]
    anns = [{"id": i, "image_id": i, "category_id": 1, "iscrowd": 0, "bbox": [1, 1, 10, 10], "area": 100}
            for i in range(1, len(names) + 1)]
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns,
                                               "categories": [{"id": 1, "name": "a"}]}))
    load_index.cache_clear()
    with fsio.recording_inputs() as opened:
        items = _items(CocoSource("coco", str(root), ("ann.json",), "imgs", ("detection",)))
        rendered = {i.key: render_pair(i, RenderSettings(64, "squash", 0, 10**9, 1, 0, 0.0))
                    for i in items if isinstance(i, PairRecord)}
    pixels = {k: decode_png(r.images[0])[40, 50].tolist() for k, r in rendered.items() if not isinstance(r, Reject)}
    assert pixels == {"coco-1-detection": list(BLUE), "coco-2-detection": list(LIME)}
    reasons = {**_rejects(items), **{k: r.reason for k, r in rendered.items() if isinstance(r, Reject)}}
    # the link itself and a file URL are outside the root; a `::` name not on disk is missing
    assert reasons == {"coco-3-detection": "outside_root", "coco-4-detection": "missing_image",
                       "coco-5-detection": "outside_root"}
    assert not [f for f in opened.files if os.path.realpath(f).startswith(str(secret.parent))]
    exact = str(root / "imgs" / "cam::1.png")
    st = os.stat(exact)
    assert opened.states[exact] == [st.st_size, st.st_mtime_ns, st.st_ctime_ns]  # the file read, not `cam`


def test_a_folder_build_reads_colon_names_and_a_colon_root_as_named(tmp_path: Path):
    """Type laion, format folder, through a whole build: `shot::1.png` beside a link `shot` leading
    out, `pipe::2.png` beside a fifo `pipe`, and a second source whose root `ds::v1` sits beside `ds`."""
    secret = _secret(tmp_path)
    ds, v1 = tmp_path / "ds", tmp_path / "ds::v1"
    _png(ds / "shot::1.png", BLUE, (64, 64))
    _png(ds / "pipe::2.png", LIME, (64, 64))
    (ds / "shot").symlink_to(secret)
    os.mkfifo(ds / "pipe")
    _png(v1 / "own.png", (255, 255, 0), (64, 64))
    path = _config(tmp_path / "c.yaml", tmp_path / "out", [
        {"name": name, "type": "laion", "path": str(root), "format": "folder", "num_shards": 1, "num_val_shards": 1}
        for name, root in (("web", ds), ("v1", v1))], direct_num_workers=1, direct_running_mode="in_memory")
    _build(path)
    built = {}
    for tar in sorted((tmp_path / "out" / "rendered").rglob("*.tar")):
        for s in iter_shard(str(tar)):
            for m, png in zip(s.header["members"], s.images):
                built[m["path"]] = decode_png(png)[16, 16].tolist()
    assert built == {"shot::1.png": list(BLUE), "pipe::2.png": list(LIME), "own.png": [255, 255, 0]}
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert sorted((r["input"], r["reason"]) for r in rejects) == [("pipe", "not_a_file"), ("shot", "outside_root")]
    manifests = [json.loads(p.read_text())["inputs"]["files"] for p in (tmp_path / "out" / "_units").rglob("*.json")]
    recorded = {uri: state for files in manifests for uri, state in files.items()}
    st = os.stat(ds / "shot::1.png")
    assert recorded[str(ds / "shot::1.png")] == [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def test_remote_names_with_colons_and_local_writes_are_exact(tmp_path: Path):
    memory = fsspec.filesystem("memory")
    memory.pipe("/colons/cam::1.png", b"own")
    memory.pipe("/colons/cam", b"other")
    try:
        # as a listing names them (`memory:///x`): fsspec's memory store reads `memory://x::y` as a chain itself
        assert fsio.read_bytes("memory:///colons/cam::1.png") == b"own"
        assert fsio.read_head("memory:///colons/cam::1.png", 2) == (b"ow", 3)
    finally:
        memory.rm("/colons", recursive=True)
    (tmp_path / "out").mkdir()
    write_bytes(str(tmp_path / "out::1"), b"written")  # an output name with `::`: was written to `out`
    assert (tmp_path / "out::1").read_bytes() == b"written" and not list((tmp_path / "out").iterdir())
    assert fsio.read_text(f"file://{tmp_path}/out::1") == "written"
    assert list(fsio.iter_lines(str(tmp_path / "out::1"))) == ["written"]


def _shard_pixels(output: str) -> dict[str, list[int]]:
    """member path -> pixel [16, 16] of every image in the rendered tars under `output`."""
    built = {}
    for tar in fsio.list_files(fsio.join(output, "rendered"), (".tar",), recursive=True):
        for s in iter_shard(tar):
            for m, png in zip(s.header["members"], s.images):
                built[m["path"]] = decode_png(png)[16, 16].tolist()
    return built


def test_a_build_whose_output_name_holds_colons_never_writes_over_the_file_beside_it(tmp_path: Path):
    """The writer (`tokenizer.atomic`) split `local:///x/exp::2` and `memory://mo/out::1` (any
    remote URL: gs://, s3://) at `::`, as fsspec does, while the reader took the exact name: every
    file of the build was written over `exp` / `mo/out` beside the output (a neighbour's bytes
    lost, 64 bytes of a digest left there) and the build failed with a StoredImageError."""
    ds = tmp_path / "ds"
    _png(ds / "a.png", BLUE, (64, 64))
    _png(ds / "b.png", LIME, (64, 64))
    (tmp_path / "exp").write_bytes(b"precious local file")
    memory = fsspec.filesystem("memory")
    memory.pipe("/mo/out", b"precious object")
    source = [{"name": "web", "type": "laion", "path": str(ds), "format": "folder", "num_shards": 1,
               "num_val_shards": 1}]
    try:
        for output in (f"local://{tmp_path}/exp::2", "memory://mo/out::1"):
            _build(_config(tmp_path / "c.yaml", output, source, direct_num_workers=1,
                           direct_running_mode="in_memory"))
            assert _shard_pixels(output) == {"a.png": list(BLUE), "b.png": list(LIME)}, output
        assert (tmp_path / "exp").read_bytes() == b"precious local file"
        assert (tmp_path / "exp::2" / "summary.json").is_file()
        assert memory.cat("/mo/out") == b"precious object"
    finally:
        memory.rm("/mo", recursive=True)
        for key in [k for k in memory.store if k.startswith("mo/out::1")]:
            memory.store.pop(key)


def test_writes_and_reads_resolve_every_name_alike(tmp_path: Path):
    """`tokenizer.atomic.url_to_fs` (writes) keeps its own copy of `sources.fsio.filesystem`'s rule
    (reads): the rooms forbid either importing the other. Both must name one file for every kind of
    name, and that file is the exact name unless a `scheme://` follows the `::`."""
    import zipfile

    from tokenizer.atomic import url_to_fs

    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        z.writestr("m.txt", "member")
    cwd = os.getcwd()
    expected = {  # name -> (protocol, path) both give
        f"local://{tmp_path}/x::1": ("file", f"{tmp_path}/x::1"),
        f"file://{tmp_path}/x::1": ("file", f"{tmp_path}/x::1"),
        f"{tmp_path}/x::1": ("file", f"{tmp_path}/x::1"),
        "x::1": ("file", f"{cwd}/x::1"),
        f"local://{tmp_path}/d/": ("file", f"{tmp_path}/d"),
        "memory://x/a::b": ("memory", "x/a::b"),
        "memory:///x/a::b": ("memory", "/x/a::b"),
        "simplecache::memory://mo/a.png": ("simplecache", "/mo/a.png"),
        f"zip://m.txt::file://{tmp_path}/a.zip": ("zip", "m.txt"),
        # fsspec cannot open these by their exact names (it splits every `::` of a chain): refused,
        # never the name before the `::` (`mo/a`, a write over the object beside) nor a folder
        "simplecache::memory://mo/a::b.png": "refused",
        f"zip://m.txt::{tmp_path}/a.zip": "refused",
    }
    got = {}
    for name in expected:
        pair = []
        for resolve in (fsio.filesystem, url_to_fs):
            try:
                fs, path = resolve(name)
            except OSError:
                pair.append("refused")
                continue
            protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
            pair.append((protocol, path))
        assert pair[0] == pair[1], name
        got[name] = pair[0]
    assert got == expected
    fs, path = url_to_fs(f"zip://m.txt::file://{tmp_path}/a.zip")
    assert fs.cat(path) == b"member"
    with pytest.raises(OSError, match="chained URL"):
        write_bytes("simplecache::memory://mo/a::b.png", b"x")
    assert not [k for k in fsspec.filesystem("memory").store if k.strip("/").startswith("mo/a")]


def test_a_root_spelled_local_url_refuses_a_link_out_of_it_as_file_and_plain_roots_do(tmp_path: Path):
    """`sources.paths` took `local:///x/ds` (fsspec's other name for the local disk) for a remote
    URL, judged by its name alone: the link `imgs/link.png` out of the root rendered the outside
    image (pixel [255, 0, 0]) where `/x/ds` and `file:///x/ds` reject it `outside_root`."""
    secret = _secret(tmp_path)
    root = tmp_path / "ds"
    _png(root / "imgs" / "ok.png", BLUE)
    (root / "imgs" / "link.png").symlink_to(secret)
    names = ["ok.png", "link.png", "/etc/hostname", f"local://{secret}"]
    images = [{"id": i, "file_name": n, "width": 40, "height": 30} for i, n in enumerate(names, 1)]
    anns = [{"id": i, "image_id": i, "category_id": 1, "iscrowd": 0, "bbox": [1, 1, 10, 10], "area": 100}
            for i in range(1, len(names) + 1)]
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns,
                                               "categories": [{"id": 1, "name": "a"}]}))
    seen = {}
    for spelled in (str(root), f"file://{root}", f"local://{root}"):
        load_index.cache_clear()
        items = _items(CocoSource("coco", spelled, ("ann.json",), "imgs", ("detection",)))
        rendered = {i.key: render_pair(i, RenderSettings(64, "squash", 0, 10**9, 1, 0, 0.0))
                    for i in items if isinstance(i, PairRecord)}
        seen[spelled.split("/")[0]] = {
            **_rejects(items), **{k: r.reason if isinstance(r, Reject) else decode_png(r.images[0])[40, 50].tolist()
                                  for k, r in rendered.items()}}
    expected = {"coco-1-detection": list(BLUE), "coco-2-detection": "outside_root",
                "coco-3-detection": "outside_root", "coco-4-detection": "outside_root"}
    assert seen == {"": expected, "file:": expected, "local:": expected}
