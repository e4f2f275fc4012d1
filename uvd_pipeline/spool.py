"""Spooled image bytes: rendered PNGs wait on disk, not in the runner's memory, until their shard is
written.

Between Render and WriteShard every rendered image goes through one or two groupings (dedup,
sentence assembly, routing to shards). Remote runners spill shuffles to disk, but Beam's local
runner keeps a grouped PCollection in memory, so a build's peak memory would grow with its input.
With the spool on, Render appends each PNG to a file of its bundle under `OUT/_spool/` and passes
on a `SpoolRef` of a few dozen bytes; WriteShard reads the bytes back when it writes the tar. The
shard bytes do not change. The spool is deleted when the build finishes, and a rerun removes what
an interrupted run left (a retried bundle writes a new file, so a reference never points into a
half-written one).
"""

from __future__ import annotations

import dataclasses
import posixpath
import uuid
from dataclasses import dataclass
from typing import IO, Any, Iterable, Iterator

from sources import fsio

SPOOL_DIR = "_spool"


@dataclass(frozen=True)
class SpoolRef:
    """Where one payload lies: a spool file, its offset and length."""

    path: str
    offset: int
    length: int


class SpoolWriter:
    """Appends payloads to one file per bundle; `close()` must run before the refs are read."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._handle: IO[bytes] | None = None
        self._path = ""
        self._offset = 0

    def put(self, payload: bytes) -> SpoolRef:
        if self._handle is None:
            self._path = fsio.join(self.folder, f"{uuid.uuid4().hex}.bin")
            fs, target = fsio.filesystem(self._path)
            fs.makedirs(posixpath.dirname(target), exist_ok=True)
            self._handle = fs.open(target, "wb")
            self._offset = 0
        self._handle.write(payload)
        ref = SpoolRef(self._path, self._offset, len(payload))
        self._offset += len(payload)
        return ref

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def spool(self, item: Any) -> Any:
        """The same sentence or rendered unit with its images replaced by refs."""
        return dataclasses.replace(item, images=tuple(self.put(png) for png in item.images))


class SpoolReader:
    """Reads refs back; keeps the last spool file open (a shard's images mostly come from a few).
    One per shard write, never shared between threads."""

    def __init__(self) -> None:
        self._path = ""
        self._handle: IO[bytes] | None = None

    def read(self, ref: SpoolRef) -> bytes:
        if ref.path != self._path:
            self.close()
            self._handle = fsio.open_file(ref.path, "rb")
            self._path = ref.path
        assert self._handle is not None
        self._handle.seek(ref.offset)
        data = self._handle.read(ref.length)
        if len(data) != ref.length:
            raise IOError(f"spool file {ref.path} is short at {ref.offset} (+{ref.length}): was it removed mid-build?")
        return data

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            self._path = ""

    def resolve(self, item: Any) -> Any:
        """An item with every `SpoolRef` image replaced by its bytes (others pass through)."""
        images = getattr(item, "images", None)
        if not images or not any(isinstance(i, SpoolRef) for i in images):
            return item
        return dataclasses.replace(item, images=tuple(self.read(i) if isinstance(i, SpoolRef) else i
                                                      for i in images))

    def resolve_all(self, items: Iterable[Any]) -> Iterator[Any]:
        for item in items:
            yield self.resolve(item)


def spool_folder(output: str) -> str:
    return fsio.join(output, SPOOL_DIR)


def remove_spool(output: str) -> bool:
    """Delete the build's spool (after a finished build, or what an interrupted one left)."""
    folder = spool_folder(output)
    if not fsio.exists(folder):
        return False
    fs, target = fsio.filesystem(folder)
    fs.rm(target, recursive=True)
    return True
