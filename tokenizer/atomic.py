"""Atomic writes: the project's one writer of files a reader may see while they are written.

A file is written under a temporary name beside its target (`NAME.tmp-XXXXXXXX`: `TMP_MARK` is
what a build's sweep of a killed run's leftovers looks for), flushed to the disk where the target
is local, and renamed into place, so a reader finds the old file or the new one, never half of
one. Any fsspec URL works (`gs://`, `s3://`, `memory://`): there the temporary is uploaded and
moved, which the object stores make a single visible step. A folder (a checkpoint, the sample
corpus) is built under a temporary sibling and renamed as a whole.

Why it lives in `tokenizer/`: the rooms of DESIGN.md let `tokenizer/` import none of our other
packages, and let `uvd_pipeline/` and `trainer/` import `tokenizer/` (tests/test_layering.py), so
this is the one place all three writing rooms may share. It imports only the standard library and
fsspec (no torch, nothing of ours): a leaf, so it can never take part in an import cycle.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO, Iterator

import fsspec
from fsspec.core import url_to_fs as _url_to_fs
from fsspec.implementations.local import make_path_posix

TMP_MARK = ".tmp-"


def is_temporary(uri: str) -> bool:
    """Whether `uri` names an unfinished write (by its own name only: a folder above it may carry
    the mark, as a job's `/scratch/run.tmp-3/`, and holds finished files all the same)."""
    return TMP_MARK in posixpath.basename(uri.rstrip("/"))


def temporary_name(target: str) -> str:
    """A fresh temporary name beside `target`; two writers of one target never share it."""
    return f"{target}{TMP_MARK}{uuid.uuid4().hex[:8]}"


# The names this module gives its temporaries, read back: `temporary_name` (a file) and
# `atomic_folder` (a folder being written, `.NAME.tmp-X`, or an old one moved aside, `.NAME.old-X`)
# and `remove_folder` (one being removed, `.NAME.del-X`).
_FILE_TEMPORARY = re.compile(r"(?P<target>.+)\.tmp-[0-9a-f]{8}")
_FOLDER_TEMPORARY = re.compile(r"\.(?P<target>.+)\.(?P<kind>tmp|old|del)-[0-9a-f]{8}")


def file_temporary_target(name: str) -> str | None:
    """The target file name whose `temporary_name` `name` is (`log.jsonl` for `log.jsonl.tmp-1a2b3c4d`),
    else None: a sweep of a killed writer's leftovers removes only names this module made."""
    match = _FILE_TEMPORARY.fullmatch(name)
    return match["target"] if match else None


def folder_temporary_target(name: str) -> tuple[str, str] | None:
    """(target folder name, 'tmp', 'old' or 'del') when `name` is one `atomic_folder` or
    `remove_folder` made beside its target (`.step-00000010.tmp-1a2b3c4d`: being written; `.old-`:
    the previous one moved aside just before the new one took its name; `.del-`: being removed),
    else None."""
    match = _FOLDER_TEMPORARY.fullmatch(name)
    return (match["target"], match["kind"]) if match else None


# The rule `sources.fsio.filesystem` reads names by, kept here too (the rooms of DESIGN.md let
# neither package import the other): a name is split at `::` only before another `scheme://`.
# tests/test_colon_names.py holds the two to the same answer for every kind of name.
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+(?:::[A-Za-z][A-Za-z0-9+.-]*)*://")
_CHAIN_LINK = re.compile(r"::[A-Za-z][A-Za-z0-9+.-]+://")
_CHAIN_START = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*::)+")  # `simplecache::`, `blockcache::filecache::`
_LOCAL_SCHEMES = ("file://", "local://")


def url_to_fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path a write of `uri` goes to: the exact name a build reads back
    (`sources.fsio.filesystem`). fsspec's `url_to_fs` reads every `::` as URL chaining, so an
    output `local:///x/out::1` or `gs://b/out::1` wrote each of its files over `/x/out` (a file or
    object beside it, lost); a local path (none, `file://` or `local://`) is its exact name, and a
    URL is split at `::` only where another `scheme://` follows (`zip://m::s3://b/a.zip`)."""
    local = _local_name(uri)
    if local is not None:
        return fsspec.filesystem("file"), local
    if _CHAIN_LINK.search(uri) or "::" in uri.split("://", 1)[0]:
        _refuse_stray_colons(uri)
        return _url_to_fs(uri)
    protocol = uri.split("://", 1)[0]
    cls = fsspec.get_filesystem_class(protocol)
    return fsspec.filesystem(protocol, **cls._get_kwargs_from_urls(uri)), cls._strip_protocol(uri)


def _refuse_stray_colons(uri: str) -> None:
    """Refuse a chained URL with a `::` that starts no link (neither a leading `word::` nor one
    before a `scheme://`): fsspec splits every `::`, so `simplecache::gs://b/out::1` named `b/out`
    (a write there lost the object beside the one named) and `zip://m::/abs/a.zip` a folder."""
    start = _CHAIN_START.match(uri)
    if "::" in _CHAIN_LINK.sub("", uri[start.end():] if start else uri):
        raise OSError(errno.EINVAL, "a chained URL whose name holds '::' (fsspec would open the name "
                      "before it), or a link without its own scheme:// (write file:///abs/a.zip)", uri)


def _local_name(uri: str) -> str | None:
    """The exact local path `uri` names (absolute, no trailing separator), or None for a URL."""
    for scheme in _LOCAL_SCHEMES:
        if uri.startswith(scheme):
            uri = uri[len(scheme):]
            break
    else:
        if _URL_START.match(uri):
            return None
    return make_path_posix(uri).rstrip("/") or "/"


def _local(uri: str) -> str | None:
    """The OS path when `uri` is on the local disk (there a rename is atomic and fsync means something)."""
    fs, path = url_to_fs(uri)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return path if "file" in protocols or "local" in protocols else None


def _sync_folder(folder: str) -> None:
    """Make a rename in `folder` durable (the entry itself is data of the folder)."""
    with contextlib.suppress(OSError):  # a filesystem that cannot fsync a folder
        handle = os.open(folder or ".", os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def _replace_local(temporary: str, target: str) -> None:
    """fsync `temporary`, rename it over `target`, fsync the folder: after a crash the target is
    the old file or the whole new one, and a later file's commit mark never outlives this one."""
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    _sync_folder(os.path.dirname(target))


def new_file_mode() -> int:
    """The mode a newly created file gets here (0666 less the umask, read without changing it)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o644


def write_bytes(uri: str, data: bytes) -> None:
    """`data` to `uri` atomically (its folder is created when missing)."""
    with open_atomic(uri) as handle:
        handle.write(data)


class AtomicFile:
    """A file written piece by piece under a temporary name, then committed (renamed into place)
    or abandoned (removed). Opened on the first write, so an unused one leaves nothing behind."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._fs, self._target = url_to_fs(uri)
        self._local = _local(uri)
        self.temporary = temporary_name(self._target)
        self._handle: IO[bytes] | None = None

    def write(self, data: bytes) -> int:
        if self._handle is None:
            self._fs.makedirs(posixpath.dirname(self._target), exist_ok=True)
            self._handle = self._fs.open(self.temporary, "wb")
        return self._handle.write(data)

    def commit(self) -> None:
        """Rename the written bytes (none: an empty file) into place. A close that fails (the last
        buffered bytes refused by a full disk) removes the temporary and raises."""
        if self._handle is None:
            self.write(b"")
        assert self._handle is not None
        handle, self._handle = self._handle, None
        try:
            handle.close()
        except BaseException:
            with contextlib.suppress(OSError):
                self._fs.rm(self.temporary)
            raise
        _move_into_place(self._fs, self.temporary, self._target, self._local is not None)

    def abandon(self) -> None:
        """Remove what was written; the target is left as it was."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            with contextlib.suppress(OSError):  # its buffered bytes, refused again by a full disk
                handle.close()
            with contextlib.suppress(FileNotFoundError):
                self._fs.rm(self.temporary)


@contextlib.contextmanager
def open_atomic(uri: str) -> Iterator[AtomicFile]:
    """An `AtomicFile` committed when the block ends, abandoned when it raises."""
    file = AtomicFile(uri)
    try:
        yield file
    except BaseException:
        file.abandon()
        raise
    file.commit()


def commit_file(local_file: str, uri: str) -> None:
    """Move the finished local file `local_file` to `uri` atomically. On the local disk it is
    renamed (no copy) when it lies on the same filesystem, and given a new file's mode (a
    temporary file is private, 0600; a copy would not be); elsewhere it is uploaded under a
    temporary name and moved. `local_file` is gone afterwards only when it was renamed."""
    fs, target = url_to_fs(uri)
    fs.makedirs(posixpath.dirname(target), exist_ok=True)
    if _local(uri) is not None:
        try:
            os.chmod(local_file, new_file_mode())
            _replace_local(local_file, target)
            return
        except OSError:
            pass  # another filesystem ($TMPDIR): copy under a temporary name, as below
    temporary = temporary_name(target)
    fs.put_file(local_file, temporary)
    _move_into_place(fs, temporary, target, _local(uri) is not None)


def _move_into_place(fs, temporary: str, target: str, local: bool) -> None:
    """Rename a finished temporary onto its target; when that fails (the target is a folder, say)
    the temporary is removed, never left beside the target."""
    try:
        if local:
            _replace_local(temporary, target)
        else:
            fs.mv(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.rm(temporary)
        raise


@contextlib.contextmanager
def atomic_path(uri: str, scratch: str | None = None) -> Iterator[str]:
    """A local path to write (for writers that want a file name: `torch.save`, a JSON dump);
    when the block ends it becomes `uri`. For a local `uri` the path lies beside it; otherwise
    in `scratch` (None: the system's temporary folder) and is uploaded. Removed if the block raises."""
    local = _local(uri)
    if local is not None:
        os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
        path = temporary_name(local)
    else:
        handle, path = tempfile.mkstemp(prefix="atomic-", suffix=".tmp", dir=scratch)
        os.close(handle)
    try:
        yield path
        if local is not None:
            _replace_local(path, local)
        else:
            commit_file(path, uri)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def remove_folder(folder: str | os.PathLike[str]) -> None:
    """Remove a folder so that a process killed midway leaves a name a sweep knows (`.NAME.del-X`,
    `folder_temporary_target`), never a part of the folder under its own name: `rmtree` cut short
    left `step-N/` holding some of its files, no longer a checkpoint nor ever removed."""
    path = Path(folder)
    doomed = path.parent / f".{path.name}.del-{uuid.uuid4().hex[:8]}"
    try:
        os.replace(path, doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary sibling folder to fill (local disk); on success it replaces `folder` as a
    whole (an old `folder` is moved aside first, since a rename cannot replace a non-empty
    folder, and removed after). Removed if the block raises."""
    final = Path(folder)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.parent / f".{final.name}{TMP_MARK}{uuid.uuid4().hex[:8]}"
    temporary.mkdir()
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(temporary, final)
    _sync_folder(str(final.parent))
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
