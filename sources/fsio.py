"""Filesystem access through fsspec, so every source reads local paths, gs://, s3:// alike."""

from __future__ import annotations

import posixpath
from typing import IO, Iterator

import fsspec
from fsspec.core import url_to_fs


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and the path inside it for a URL or local path."""
    return url_to_fs(uri)


def _unstrip(fs: fsspec.AbstractFileSystem, path: str, like: str) -> str:
    """Turn a path inside `fs` back into a URL of the same kind as `like`."""
    if "://" in like:
        protocol = like.split("://", 1)[0]
        return f"{protocol}://{path}"
    return path


def join(base: str, *parts: str) -> str:
    if "://" in base:
        return posixpath.join(base, *parts)
    import os

    return os.path.join(base, *parts)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def isdir(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.isdir(path)


def list_files(uri: str, suffixes: tuple[str, ...] | None = None, recursive: bool = False) -> list[str]:
    """Sorted files directly under (or, with `recursive`, anywhere below) a directory URL."""
    fs, path = filesystem(uri)
    if not fs.isdir(path):
        raise FileNotFoundError(f"not a directory: {uri}")
    if recursive:
        names = fs.find(path)
    else:
        names = [entry["name"] for entry in fs.ls(path, detail=True) if entry["type"] == "file"]
    if suffixes:
        lowered = tuple(s.lower() for s in suffixes)
        names = [n for n in names if n.lower().endswith(lowered)]
    return sorted(_unstrip(fs, n, uri) for n in names)


def list_dirs(uri: str) -> list[str]:
    """Sorted immediate subdirectories of a directory URL."""
    fs, path = filesystem(uri)
    if not fs.isdir(path):
        raise FileNotFoundError(f"not a directory: {uri}")
    names = [entry["name"] for entry in fs.ls(path, detail=True) if entry["type"] == "directory"]
    return sorted(_unstrip(fs, n.rstrip("/"), uri) for n in names)


def open_file(uri: str, mode: str = "rb") -> IO[bytes]:
    return fsspec.open(uri, mode).open()


def read_bytes(uri: str) -> bytes:
    with fsspec.open(uri, "rb") as handle:
        return handle.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def iter_lines(uri: str) -> Iterator[str]:
    with fsspec.open(uri, "rt", encoding="utf-8") as handle:
        for line in handle:
            yield line.rstrip("\n")


def basename(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/"))


def local_path(uri: str) -> str | None:
    """The OS path when `uri` lives on the local disk (decoders seek faster on real files)."""
    fs, path = filesystem(uri)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return path if "file" in protocols or "local" in protocols else None
