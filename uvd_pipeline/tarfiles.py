"""Byte-reproducible tar writing: fixed metadata so the same members give the same bytes."""

from __future__ import annotations

import io
import tarfile


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add `data` as `name` with zeroed times and owners (tar headers would otherwise leak them)."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def open_writer(fileobj) -> tarfile.TarFile:
    return tarfile.open(fileobj=fileobj, mode="w", format=tarfile.GNU_FORMAT)
