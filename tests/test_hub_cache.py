"""A Hugging Face Hub cache snapshot as users have it after their own Hub client fetched a dataset
(nothing here downloads): every file a relative link to `../../blobs/<etag>`
(and, with huggingface_hub 2.x's shared store, that blob a link to `<cache>/blobs/<xx>/<hash>`).
The cache is written here by huggingface_hub's own cache-writing functions (offline: the download
itself is replaced by writing the bytes where it writes them) and read back by its `scan_cache_dir`."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import file_download, scan_cache_dir, try_to_load_from_cache
from huggingface_hub._tree_cache import TreeCacheEntry, read_tree_cache, write_tree_cache
from huggingface_hub.utils import _shared_blobs
from PIL import Image

from sources.hub_cache import hf_file, is_cached_blob, snapshot_of
from sources.laion import LaionSource
from sources.records import ImageRecord, Reject

COMMIT = "69dc4cef7a5c4b2cfe387727ec8ea73d4bff7302"
OLD_COMMIT = "0123456789abcdef0123456789abcdef01234567"
HF_METADATA = {b"huggingface": b'{"info": {"features": {"image": {"_type": "Image"}, '
                               b'"text": {"dtype": "string", "_type": "Value"}}}}'}


def _cache_file(cache: Path, repo_id: str, filename: str, data: bytes, commit: str = COMMIT, shared: bool = False,
                lfs: bool = True, revision: str = "main") -> Path:
    """`filename` of dataset `repo_id` at `commit` in the cache as huggingface_hub 2.4
    leaves it: the blob named by its etag (sha256 for an LFS file, the git blob sha1 for a small
    one), the ref of `revision`, the snapshot's relative link (`_create_symlink`), and the commit's
    tree listing `trees/<commit>.json` that huggingface_hub 2.4 writes beside
    them (`write_tree_cache`); `shared`: the blob then moved into the cache's shared store
    (`publish_blob_to_shared_store`, Xet files)."""
    storage = cache / file_download.repo_folder_name(repo_id=repo_id, repo_type="dataset")
    etag = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    blob = storage / "blobs" / etag
    pointer = Path(file_download._get_pointer_path(str(storage), commit, os.path.join(*filename.split("/"))))
    blob.parent.mkdir(parents=True, exist_ok=True)
    pointer.parent.mkdir(parents=True, exist_ok=True)
    file_download._cache_commit_hash_for_specific_revision(str(storage), revision, commit)
    if not blob.exists():
        blob.with_suffix(".incomplete").write_bytes(data)
        os.replace(blob.with_suffix(".incomplete"), blob)
        if shared:
            xet = hashlib.sha256(b"xet" + data).hexdigest()
            assert _shared_blobs.publish_blob_to_shared_store(blob_path=str(blob), xet_hash=xet, cache_dir=cache,
                                                              expected_size=len(data))
    file_download._create_symlink(str(blob), str(pointer), new_blob=True)
    tree = dict(read_tree_cache(str(storage), commit) or {})
    tree[filename] = TreeCacheEntry(size=len(data), blob_id=hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(),
                                    lfs_sha256=etag if lfs else None, lfs_size=len(data) if lfs else None)
    write_tree_cache(str(storage), commit, tree)
    return pointer


def _png(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 40 % 256, 90, 10)).save(out, "PNG")
    return out.getvalue()


def _parquet(cells: list[dict]) -> bytes:
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image), ("text", pa.string())], metadata=HF_METADATA)
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{"image": c, "text": f"t{i}"} for i, c in enumerate(cells)], schema), out)
    return out.getvalue()


def _read_all(source: LaionSource) -> list:
    return [item for unit in source.units() for item in source.read(unit)]


@pytest.mark.parametrize("shared", [False, True])
def test_a_hub_cache_snapshot_is_read_without_follow_links(tmp_path: Path, shared: bool):
    """A snapshot's parquet links to `../../../blobs/<sha256>`: it was `outside_root` (and the
    root taken for a plain folder) unless `follow_links: true`; the cache's own links are now
    inside, with the shared store's second hop too, and the rows read as with the links followed."""
    cache = tmp_path / "hub"
    rows = _parquet([{"bytes": _png(0), "path": "a.png"}, {"bytes": _png(1), "path": "b.png"}])
    _cache_file(cache, "org/cats", "data/train-00000-of-00001.parquet", rows, shared=shared)
    _cache_file(cache, "org/cats", "README.md", b"---\nlicense: mit\n---\n", lfs=False)
    (repo,) = scan_cache_dir(cache).repos  # huggingface_hub reads back the cache written
    assert repo.repo_id == "org/cats" and repo.repo_type == "dataset"
    snapshot = Path(try_to_load_from_cache("org/cats", "README.md", cache_dir=cache, repo_type="dataset")).parent
    assert snapshot.name == COMMIT and os.readlink(snapshot / "README.md").startswith("../../blobs/")
    if shared:  # the repo's blob is itself a link into the cache's store
        assert os.readlink(os.readlink(snapshot / "data" / "train-00000-of-00001.parquet").replace(
            "../../..", str(snapshot.parent.parent))).startswith("../../blobs/")

    source = LaionSource("hf", str(snapshot))
    assert source.resolved_format() == "huggingface"
    items = _read_all(source)
    records = [i for i in items if isinstance(i, ImageRecord)]
    assert [r.data for r in records] == [_png(0), _png(1)] and [r.lineage["caption"] for r in records] == ["t0", "t1"]
    assert [(r.reason, r.input) for r in items if isinstance(r, Reject)] == [("unexpected_file", "README.md")]
    followed = _read_all(LaionSource("hf", str(snapshot), follow_links=True))
    assert [(i.key, getattr(i, "data", None)) for i in followed] == [(i.key, getattr(i, "data", None)) for i in items]
    # pointed at a folder of the snapshot, or through a link to it, the same
    (tmp_path / "cats").symlink_to(snapshot)
    for root in (snapshot / "data", tmp_path / "cats"):
        assert [r.data for r in _read_all(LaionSource("hf", str(root))) if isinstance(r, ImageRecord)] == \
            [_png(0), _png(1)]


def _snapshot_with_image(tmp_path: Path) -> tuple[Path, Path]:
    cache = tmp_path / "hub"
    image = _cache_file(cache, "org/cats", "images/1.png", _png(1), lfs=False)
    return cache, image.parent.parent


@pytest.mark.parametrize("made", ["elsewhere", "other_repo_blob", "blob_links_out", "unmarked_store", "incomplete",
                                  "refs_file", "folder_link", "not_a_commit", "blobs_folder_link",
                                  "store_subfolder_link"])
def test_only_the_caches_own_links_to_its_repos_blobs_count_as_inside(tmp_path: Path, made: str):
    """Nothing else a snapshot may hold leads out of it: a link to a file elsewhere, to another
    repo's blob, to a blob that itself links out, through an unmarked `<cache>/blobs/`, to a
    download in progress (`<etag>.incomplete`), to the repo's `refs/main`, a folder link; nor
    does a folder named `snapshots/<rev>` whose rev is no commit hash; nor a blob whose link text
    names its repo's `blobs/` (or the shared store's `xx/`) where that folder is itself a link out:
    the text alone is the cache's, where it leads is not."""
    cache, snapshot = _snapshot_with_image(tmp_path)
    repo = snapshot.parent.parent
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png(7))
    link = snapshot / "images" / "x.png"
    if made == "elsewhere":
        link.symlink_to(os.path.relpath(secret, link.parent))
    elif made == "other_repo_blob":
        other = _cache_file(cache, "org/dogs", "images/2.png", _png(2))
        link.symlink_to(os.path.relpath(os.path.realpath(other), link.parent))
    elif made == "blob_links_out":
        blob = repo / "blobs" / hashlib.sha256(b"x").hexdigest()
        blob.symlink_to(secret)
        link.symlink_to(os.path.relpath(blob, link.parent))
    elif made == "unmarked_store":  # a blob linking to `<cache>/blobs/xx/<hash>` with no marker there
        name = hashlib.sha256(b"y").hexdigest()
        (cache / "blobs" / name[:2]).mkdir(parents=True)
        (cache / "blobs" / name[:2] / name).write_bytes(_png(7))
        blob = repo / "blobs" / hashlib.sha256(b"z").hexdigest()
        blob.symlink_to(os.path.relpath(cache / "blobs" / name[:2] / name, blob.parent))
        link.symlink_to(os.path.relpath(blob, link.parent))
    elif made == "incomplete":
        blob = repo / "blobs" / (hashlib.sha256(b"w").hexdigest() + ".incomplete")
        blob.write_bytes(_png(7)[:20])
        link.symlink_to(os.path.relpath(blob, link.parent))
    elif made == "refs_file":
        link.symlink_to(os.path.relpath(repo / "refs" / "main", link.parent))
    elif made == "folder_link":
        (tmp_path / "more").mkdir()
        (tmp_path / "more" / "x.png").write_bytes(_png(7))
        (snapshot / "more").symlink_to(tmp_path / "more")
        link = snapshot / "more" / "x.png"
    elif made == "blobs_folder_link":  # the repo's `blobs/` moved out, a link left in its place
        (repo / "blobs").rename(tmp_path / "moved-blobs")
        (repo / "blobs").symlink_to(tmp_path / "moved-blobs")
        name = hashlib.sha256(b"v").hexdigest()
        (tmp_path / "moved-blobs" / name).write_bytes(_png(7))
        link.symlink_to(f"../../../blobs/{name}")
    elif made == "store_subfolder_link":  # a marked store whose `xx/` folder is a link out
        _cache_file(cache, "org/cats", "images/2.png", _png(2), shared=True)  # huggingface_hub marks the store
        store, name = cache / "blobs", hashlib.sha256(b"u").hexdigest()
        assert (store / _shared_blobs.SHARED_BLOBS_MARKER_NAME).is_file() and not (store / name[:2]).exists()
        (tmp_path / "xx").mkdir()
        (tmp_path / "xx" / name).write_bytes(_png(7))
        (store / name[:2]).symlink_to(tmp_path / "xx")
        blob = repo / "blobs" / hashlib.sha256(b"t").hexdigest()
        blob.symlink_to(f"../../blobs/{name[:2]}/{name}")
        link.symlink_to(os.path.relpath(blob, link.parent))
    else:
        renamed = snapshot.with_name("v1.0")
        snapshot.rename(renamed)
        snapshot, link = renamed, renamed / "images" / "1.png"
    assert not is_cached_blob(str(snapshot), str(link))
    items = _read_all(LaionSource("hf", str(snapshot)))
    shown = {"folder_link": "more", "not_a_commit": "images/1.png"}.get(made, "images/x.png")
    assert ("outside_root", shown) in {(i.reason, i.input) for i in items if isinstance(i, Reject)}
    assert all(getattr(i, "data", None) != _png(7) and "secret" not in str(getattr(i, "uri", "")) for i in items)
    if made not in ("not_a_commit", "blobs_folder_link"):  # the cache's own link beside it is read
        assert is_cached_blob(str(snapshot), str(snapshot / "images" / "1.png"))


def _hf_rows_snapshot(tmp_path: Path) -> tuple[Path, list[str]]:
    """A snapshot whose parquet names its images as `datasets` names a Hub file (`hf://datasets/
    ORG/NAME@REV/path`, path only): by commit, by branch, by a ref percent-encoded (as `datasets`
    quotes a revision; never the path), of another repo, a path percent-encoded (no such file), of
    another revision, not downloaded, climbing out."""
    cache = tmp_path / "hub"
    _cache_file(cache, "org/cats", "images/1.png", _png(1))
    _cache_file(cache, "org/cats", "images/my cat.png", _png(2), shared=True)
    _cache_file(cache, "org/dogs", "images/1.png", _png(3))
    _cache_file(cache, "org/cats", "images/1.png", _png(1), revision="refs/convert/parquet")
    paths = [f"hf://datasets/org/cats@{COMMIT}/images/1.png", "hf://datasets/org/cats@main/images/my cat.png",
             "hf://datasets/org/cats/images/1.png", "hf://datasets/org/cats@refs%2Fconvert%2Fparquet/images/1.png",
             "hf://datasets/org/dogs@main/images/1.png", "hf://datasets/org/cats/images/my%20cat.png",
             f"hf://datasets/org/cats@{OLD_COMMIT}/images/1.png", f"hf://datasets/org/cats@{COMMIT}/images/9.png",
             f"hf://datasets/org/cats@{COMMIT}/../../../secret.png"]
    parquet = _cache_file(cache, "org/cats", "data/train-00000-of-00001.parquet",
                          _parquet([{"bytes": None, "path": p} for p in paths]))
    (tmp_path / "secret.png").write_bytes(_png(7))
    return parquet.parent.parent, paths


def test_hf_paths_in_a_snapshot_are_its_files_when_it_holds_them(tmp_path: Path):
    """A path-only row `hf://datasets/org/cats@<commit>/images/1.png` was `outside_root` ("an
    absolute name") even in the cache snapshot of that very commit holding the file: now it is
    that file (by commit, by a branch the cache's `refs/` gives that commit, or with no revision:
    `main`), and no `unexpected_file` of its own; another repo's, another revision's, a file not
    downloaded, a climb out stay `outside_root`."""
    snapshot, paths = _hf_rows_snapshot(tmp_path)
    items = _read_all(LaionSource("hf", str(snapshot)))
    by_row = {i.key.rsplit("-", 1)[-1].split("_")[0]: i for i in items if "train-00000" in i.key}
    read = {row: i for row, i in by_row.items() if isinstance(i, ImageRecord)}
    assert sorted(read) == ["0", "1", "2", "3"]
    assert [Path(read[r].uri).read_bytes() for r in "0123"] == [_png(1), _png(2), _png(1), _png(1)]
    assert [read[r].lineage["image_path"] for r in "0123"] == ["images/1.png", "images/my cat.png", "images/1.png",
                                                               "images/1.png"]
    assert all(read[r].uri.startswith(str(snapshot)) for r in "0123")
    assert {row: i.reason for row, i in by_row.items() if isinstance(i, Reject)} == \
        {row: "outside_root" for row in "45678"}
    assert all("does not hold" in by_row[row].detail for row in "45678")
    assert not [i for i in items if isinstance(i, Reject) and i.reason == "unexpected_file" and "images/" in i.input]
    # not a snapshot: a hf:// path stays an absolute name, never looked up
    assert hf_file(str(tmp_path), paths[0]) is None and snapshot_of(str(tmp_path)) is None


def test_a_nul_in_a_rows_revision_is_that_rows_outside_root(tmp_path: Path):
    """`hf://datasets/org/cats@ma%00in/...` (a NUL, percent-encoded as `datasets` quotes a revision)
    made `os.lstat` raise ValueError looking up `refs/ma\\0in`: the rest of the parquet was lost
    as one `bad_parquet`. It is now that row's `outside_root`; the rows after it are read."""
    cache = tmp_path / "hub"
    _cache_file(cache, "org/cats", "images/1.png", _png(1))
    paths = ["hf://datasets/org/cats@main/images/1.png", "hf://datasets/org/cats@ma%00in/images/1.png",
             "hf://datasets/org/cats@main/images/1.png\0", "hf://datasets/org/cats@main/images/1.png"]
    parquet = _cache_file(cache, "org/cats", "data/train-00000-of-00001.parquet",
                          _parquet([{"bytes": None, "path": p} for p in paths]))
    snapshot = parquet.parent.parent
    assert hf_file(str(snapshot), paths[1]) is None and hf_file(str(snapshot), paths[2]) is None
    items = _read_all(LaionSource("hf", str(snapshot)))
    by_row = {i.key.rsplit("-", 1)[-1].split("_")[0]: i for i in items if "train-00000" in i.key}
    assert sorted(by_row) == ["0", "1", "2", "3"]
    assert [Path(by_row[r].uri).read_bytes() for r in "03"] == [_png(1), _png(1)]
    assert [(by_row[r].reason, by_row[r].input) for r in "12"] == \
        [("outside_root", "data/train-00000-of-00001.parquet row 1"),
         ("outside_root", "data/train-00000-of-00001.parquet row 2")]


@pytest.mark.parametrize("given", ["{rel}", "../{rel}", "./../{rel}", "..//{rel}"],
                         ids=["below", "up", "dot-up", "up-doubled-slash"])
def test_a_relative_root_names_a_snapshots_hf_files_as_given(tmp_path: Path, monkeypatch, given: str):
    """With the snapshot given as a relative path, a row's `hf://` file came back absolute (its
    `image_path` and `uri` the machine's folders, unlike the path-only row beside it naming the
    same file): it is joined onto the root as given. The files the root lists (fsspec names them
    absolute) are taken relative to it too: a reject's `input` never shows the machine's folders.
    A root climbing out of the working folder (`../data`, a config beside the data) is listed
    unnormalised (`/cwd/../data/...`): compared as given, the parquet was taken for a file in a
    folder named `__x` or `.x` and the source refused ("no .parquet file ... loaded by default")."""
    cache = tmp_path / "hub"
    _cache_file(cache, "org/cats", "images/1.png", _png(1))
    parquet = _cache_file(cache, "org/cats", "data/train-00000-of-00001.parquet",
                          _parquet([{"bytes": None, "path": f"hf://datasets/org/cats@{COMMIT}/images/1.png"},
                                    {"bytes": None, "path": "images/1.png"}]))
    work = tmp_path / "work" if given.startswith(("../", "./../", "..//")) else tmp_path
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)
    root = given.format(rel=os.path.relpath(parquet.parent.parent, tmp_path))
    assert hf_file(root, f"hf://datasets/org/cats@{COMMIT}/images/1.png") == os.path.join(root, "images", "1.png")
    items = _read_all(LaionSource("hf", root))
    records = [i for i in items if isinstance(i, ImageRecord)]
    assert [(r.lineage["image_path"], os.path.normpath(r.uri)) for r in records] == \
        [("images/1.png", os.path.normpath(os.path.join(root, "images/1.png")))] * 2
    if given == "{rel}":
        assert [r.uri for r in records] == [os.path.join(root, "images/1.png")] * 2
    # the file both rows name is theirs (listed absolute, it was also an `unexpected_file` of its own), and
    # rejects and inputs name files as the root sees them
    assert not [i for i in items if isinstance(i, Reject)]
    assert [r.input for r in records] == [f"data/train-00000-of-00001.parquet row {n}: images/1.png" for n in (0, 1)]


@pytest.mark.parametrize("given", ["repo", "snapshots"])
def test_a_hub_cache_repo_folder_given_as_path_is_refused_naming_its_snapshot(tmp_path: Path, capsys, given: str):
    """`path` at the cache's repo folder (`datasets--org--zoo`: blobs/, refs/, snapshots/, as
    `huggingface-cli scan-cache` lists it), or its snapshots/, instead of one snapshot: `check`
    passed and the build read it as a folder (path-only rows `missing_image`, each blob a reject of
    its own, two revisions both built). `check` now stops in one line naming the snapshot refs/main
    holds."""
    import yaml

    from uvd_pipeline.cli import main

    cache = tmp_path / "hub"
    for commit in (OLD_COMMIT, COMMIT):  # an update downloaded after the first: refs/main the new one
        _cache_file(cache, "org/zoo", "images/a.png", _png(1), commit=commit)
        _cache_file(cache, "org/zoo", "data/train-00000-of-00001.parquet",
                    _parquet([{"bytes": None, "path": "images/a.png"}]), commit=commit)
    repo = cache / "datasets--org--zoo"
    assert sorted(p.name for p in repo.iterdir()) == ["blobs", "refs", "snapshots", "trees"]
    root = repo if given == "repo" else repo / "snapshots"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"output": str(tmp_path / "out"), "tokenizer": {"enabled": False},
                                      "sources": [{"name": "zoo", "type": "laion", "path": str(root)}]}))
    assert main(["check", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: sources[0].path (zoo): {root} is a Hugging Face Hub cache "
                                                   "repo folder"), err
    assert err.rstrip().endswith(f"set path to {root / 'snapshots' if given == 'repo' else root}/{COMMIT} "
                                 "(the commit its refs/main names)"), err
    # the snapshot itself is read: its path-only row is the image beside it
    (record,) = _read_all(LaionSource("zoo", str(repo / "snapshots" / COMMIT)))
    assert record.data is None and Path(record.uri).read_bytes() == _png(1)


def test_a_hub_cache_root_of_several_repos_given_as_path_is_refused_naming_their_snapshots(tmp_path: Path, capsys):
    """`path` at the Hub cache itself (`~/.cache/huggingface/hub`: a `datasets--ORG--NAME` folder
    per repo, a model's beside them) was not seen as one: `check` passed and the build read every
    repo's blobs and snapshots as one folder. `check` now stops in one line naming each dataset
    repo's snapshot to give instead (the commit its refs/main holds)."""
    import yaml

    from uvd_pipeline.cli import main

    cache = tmp_path / "hub"
    for repo_id in ("org/zoo", "org/cats"):
        _cache_file(cache, repo_id, "images/a.png", _png(1))
        _cache_file(cache, repo_id, "data/train-00000-of-00001.parquet",
                    _parquet([{"bytes": None, "path": "images/a.png"}]))
    (cache / "models--org--net" / "snapshots").mkdir(parents=True)  # a model's repo: no dataset
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"output": str(tmp_path / "out"), "tokenizer": {"enabled": False},
                                      "sources": [{"name": "zoo", "type": "laion", "path": str(cache)}]}))
    assert main(["check", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: sources[0].path (zoo): {cache} is a Hugging Face Hub "
                                                   "cache"), err
    for name in ("datasets--org--cats", "datasets--org--zoo"):
        assert str(cache / name / "snapshots" / COMMIT) in err, err
    assert "models--org--net" not in err and "download" not in err


def test_a_dataset_folder_holding_a_stray_cache_repo_is_read_and_hf_home_is_refused(tmp_path: Path):
    """The cache check matched a folder by shape alone: a dataset folder of real files with one
    stray `datasets--org--old/snapshots/<commit>` (a copy left over) was refused as a Hub cache,
    and HF_HOME (`~/.cache/huggingface`, the parent of `hub/`) was not seen as one. A folder is a
    cache only when every entry is a cache's (repo folders, `version.txt`, `.locks`, ...); HF_HOME
    is named with its `hub/`'s snapshots."""
    from sources.hub_cache import repo_folder_problem

    home = tmp_path / "huggingface"
    for repo_id in ("org/zoo", "org/cats"):
        _cache_file(home / "hub", repo_id, "data/train-00000-of-00001.parquet",
                    _parquet([{"bytes": _png(1), "path": None}]))
    (home / "hub" / "version.txt").write_text("1")
    (home / "hub" / ".locks").mkdir()
    (home / "hub" / "models--org--net" / "snapshots").mkdir(parents=True)
    (home / "token").write_text("")
    assert repo_folder_problem(str(home / "hub")).startswith(f"{home / 'hub'} is a Hugging Face Hub cache")
    problem = repo_folder_problem(str(home))
    assert problem is not None and problem.startswith(f"{home} is"), problem
    for name in ("datasets--org--cats", "datasets--org--zoo"):
        assert str(home / "hub" / name / "snapshots" / COMMIT) in problem, problem
    assert "download" not in problem
    mine = tmp_path / "mydata"
    _cache_file(mine, "org/old", "data/x.parquet", _parquet([{"bytes": _png(2), "path": None}]))
    (mine / "train.parquet").write_bytes(_parquet([{"bytes": _png(3), "path": None}]))
    assert repo_folder_problem(str(mine)) is None
    records = _read_all(LaionSource("zoo", str(mine)))
    assert _png(3) in [r.data for r in records if isinstance(r, ImageRecord)]


@pytest.mark.parametrize("junk", [".DS_Store", "Thumbs.db", "desktop.ini", "._version.txt", ".gitignore"])
def test_a_hub_cache_holding_an_os_junk_file_is_still_a_cache(tmp_path: Path, junk: str):
    """A Finder `.DS_Store` (or Windows `Thumbs.db`/`desktop.ini`, a dotfile) beside a cache's
    repos made it read as a plain folder: each revision's rows read as one dataset's. Such names
    are passed over in judging what a cache (or HF_HOME) holds; a dataset's own files are not."""
    from sources.hub_cache import repo_folder_problem

    home = tmp_path / "huggingface"
    _cache_file(home / "hub", "org/zoo", "data/train-00000-of-00001.parquet", _parquet([{"bytes": _png(1), "path": None}]))
    (home / "hub" / "version.txt").write_text("1")
    (home / "hub" / junk).write_bytes(b"\0\0\0\1Bud1")
    (home / junk).write_bytes(b"")
    for extra in ("lerobot", "transformers", "evaluate", "diffusers"):
        (home / extra).mkdir()
    (home / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    snapshot = str(home / "hub" / "datasets--org--zoo" / "snapshots" / COMMIT)
    problem = repo_folder_problem(str(home / "hub"))
    assert problem is not None and snapshot in problem, problem
    problem = repo_folder_problem(str(home))
    assert problem is not None and problem.startswith(f"{home} is") and snapshot in problem, problem
    (home / "hub" / "train.parquet").write_bytes(_parquet([{"bytes": _png(3), "path": None}]))
    assert repo_folder_problem(str(home / "hub")) is None


@pytest.mark.parametrize("made", ["huggingface_hub", "own v1", "own commit", "own empty snapshots"])
def test_a_project_folder_of_hub_and_datasets_is_refused_only_when_huggingface_hub_wrote_it(
        tmp_path: Path, capsys, made: str):
    """A user's own project folder holding `hub/` and `datasets/` was refused at `check` as HF_HOME
    when `hub/` held a folder named like a repo's (`datasets--me--cats/snapshots/v1/`), though no
    Hub client wrote it: its files are the user's, no link into a `blobs/`. Only what
    huggingface_hub writes is a cache: a repo folder holding `blobs/` beside `snapshots/` of commit
    hashes (`refs/`, `.no_exist/`, `trees/` or what a later version adds beside them); a project
    folder of the user's own is read."""
    import yaml

    from sources.hub_cache import repo_folder_problem
    from uvd_pipeline.cli import main

    home = tmp_path / "project"
    if made == "huggingface_hub":
        _cache_file(home / "hub", "me/cats", "images/cat.png", _png(1))
    elif made == "own empty snapshots":  # blobs/ and an empty snapshots/ of one's own: no refs/, no commit
        repo = home / "hub" / "datasets--me--cats"
        for folder in ("blobs", "snapshots", "images"):
            (repo / folder).mkdir(parents=True)
        (repo / "images" / "cat.png").write_bytes(_png(1))
    else:
        snapshot = home / "hub" / "datasets--me--cats" / "snapshots" / ("v1" if made == "own v1" else COMMIT)
        (snapshot / "images").mkdir(parents=True)
        (snapshot / "images" / "cat.png").write_bytes(_png(1))
    (home / "datasets" / "dogs").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(home / "datasets" / "dogs" / "dog.png")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"output": str(tmp_path / "out"), "tokenizer": {"enabled": False},
                                      "sources": [{"name": "p", "type": "laion", "path": str(home)}]}))
    problem = repo_folder_problem(str(home))
    if made == "huggingface_hub":
        assert problem is not None and problem.startswith(f"{home} is Hugging Face's home folder (HF_HOME)"), problem
        assert str(home / "hub" / "datasets--me--cats" / "snapshots" / COMMIT) in problem, problem
        assert main(["check", str(config)]) == 2
        return
    assert problem is None, problem
    assert main(["check", str(config)]) == 0, capsys.readouterr().err
    read = sorted(Path(r.uri).name for r in _read_all(LaionSource("p", str(home))) if isinstance(r, ImageRecord))
    assert read == ["cat.png", "dog.png"], read
