"""A stored unit's rendered images as refs (`StoredRef`: a few dozen bytes in place of the PNG),
where each lies now (the unit's image file, or the tar of a committed shard it moved into), and
reading them back, each checked against its sha256."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterable, Iterator

from sources import fsio
from uvd_pipeline.state_files import read_state_json


def rendering_name(source: str, uid: str, render: str) -> str:
    """A stored image's unit (`StoredRef.unit`): "<source>/<unit id>/<render id>"."""
    return f"{source}/{uid}/{render}"


def unit_id_of(rendering: str) -> str:
    """The unit id inside a `rendering_name`."""
    return rendering.rsplit("/", 2)[-2]


@dataclass(frozen=True)
class StoredRef:
    """One rendered PNG of a unit: where its bytes lie now (the unit's image file, or the tar of
    the committed shard it was moved into: `uvd_pipeline.unit_relocation`), and which image it is
    (the rendering it belongs to and its offset in that rendering's image file). Every read checks
    the sha256, so a damaged store or shard is found before its bytes reach a shard.
    `shared`: set for this run only, never stored (`held_by_several`): more than one sentence holds
    the image, so another shard's writer may still read it from the store once a shard holding it
    commits (`unit_relocation.release` leaves it to the end of the run)."""

    path: str
    offset: int
    length: int
    sha256: str = ""
    unit: str = ""  # "<source>/<unit id>/<render id>"
    unit_offset: int = 0
    shared: bool = field(default=False, compare=False, repr=False)


class StoredImageError(IOError):
    """A stored image's bytes are gone or differ from its digest."""


Moved = dict[int, tuple[str, int, int, str]]  # offset in the unit's image file -> (tar, offset, length, sha256)


def read_moved(uri: str, render: str) -> Moved:
    """Where a unit's images moved (`unit_relocation`): only for the rendering `render`."""
    try:
        data = read_state_json(uri)
    except FileNotFoundError:
        return {}
    if not isinstance(data, dict) or data.get("render") != render:
        return {}
    images = data.get("images")
    if not isinstance(images, dict) or not all(isinstance(v, list) and len(v) == 4 for v in images.values()):
        raise ValueError(f"{uri}: damaged (its `images` is no object of 4-item lists)")
    return {int(offset): (tar, int(at), int(length), sha) for offset, (tar, at, length, sha) in images.items()}


def held_by_several(item: Any) -> Any:
    """The item with its refs marked `shared`: it is placed into more than one sentence (`remainder:
    wrap` reuses a group's first units), and those may land in different shards."""
    images = getattr(item, "images", None)
    if not images or not any(isinstance(i, StoredRef) for i in images):
        return item
    return dataclasses.replace(item, images=tuple(dataclasses.replace(i, shared=True) if isinstance(i, StoredRef)
                                                  else i for i in images))


def _refs(item: Any) -> list[StoredRef]:
    return [i for i in getattr(item, "images", None) or () if isinstance(i, StoredRef)]


def _placed(item: Any, images_uri: str, output: str, moved: Moved) -> Any:
    """An item whose refs point where each image lies: in a committed shard's tar when `moved`
    says so, else at its offset in `images_uri` ("" in a results file: the store may move)."""
    images = getattr(item, "images", None)
    if not images or not isinstance(images[0], StoredRef):
        return item

    def where(ref: StoredRef) -> StoredRef:
        if ref.unit_offset in moved:
            tar, at, _, _ = moved[ref.unit_offset]
            return dataclasses.replace(ref, path=fsio.join(output, tar), offset=at)
        return dataclasses.replace(ref, path=images_uri, offset=ref.unit_offset)

    return dataclasses.replace(item, images=tuple(where(r) for r in images))


class StoreReader:
    """Reads refs back, each checked against its sha256. Keeps up to `OPEN_FILES` files open: a
    shard's images, in sentence-id order, alternate between the units that rendered them, and
    opening the file again for each image (an fsspec open, a seek, a read) was a third of a shard
    write's reading; a local file is read with one `pread`. `previous`: where a shard's tar
    replaced during this run was kept (`unit_relocation.keep_previous`): a ref into a tar that
    changed is read from there. One per shard write, never shared between threads."""

    OPEN_FILES = 32

    def __init__(self, previous: Callable[[str], str | None] | None = None) -> None:
        self._open: dict[str, int | IO[bytes]] = {}  # path -> an OS file descriptor (local) or a handle
        self._previous = previous

    def read(self, ref: StoredRef) -> bytes:
        data = self._read_at(ref.path, ref.offset, ref.length)
        if data is not None and hashlib.sha256(data).hexdigest() == ref.sha256:
            return data
        kept = self._previous(ref.path) if self._previous else None
        if kept is not None:
            data = self._read_at(kept, ref.offset, ref.length)
            if data is not None and hashlib.sha256(data).hexdigest() == ref.sha256:
                return data
        why = "is short" if data is None else "does not match its sha256"
        raise StoredImageError(f"the stored image at {ref.path} (offset {ref.offset}, {ref.length} bytes) {why} "
                               f"(unit {ref.unit}); run the build again with --verify: the unit is rendered again")

    def _file(self, path: str) -> int | IO[bytes] | None:
        """The open file of `path` (opened now when it is not; the least recently used one closed
        when too many are), or None when there is no such file."""
        found = self._open.pop(path, None)
        if found is None:
            local = fsio.local_path(path)
            try:
                found = os.open(local, os.O_RDONLY) if local is not None else fsio.open_file(path, "rb")
            except FileNotFoundError:
                return None
            if len(self._open) >= self.OPEN_FILES:
                self._close(self._open.pop(next(iter(self._open))))
        self._open[path] = found  # most recently used last
        return found

    def _read_at(self, path: str, offset: int, length: int) -> bytes | None:
        handle = self._file(path)
        if handle is None:
            return None
        if isinstance(handle, int):
            data = os.pread(handle, length, offset)
        else:
            handle.seek(offset)
            data = handle.read(length)
        return data if len(data) == length else None

    @staticmethod
    def _close(handle: int | IO[bytes]) -> None:
        if isinstance(handle, int):
            os.close(handle)
        else:
            handle.close()

    def close(self) -> None:
        while self._open:
            self._close(self._open.popitem()[1])

    def resolve(self, item: Any) -> Any:
        """An item with every `StoredRef` image replaced by its bytes (others pass through)."""
        images = getattr(item, "images", None)
        if not images or not any(isinstance(i, StoredRef) for i in images):
            return item
        return dataclasses.replace(item, images=tuple(self.read(i) if isinstance(i, StoredRef) else i
                                                      for i in images))

    def resolve_all(self, items: Iterable[Any]) -> Iterator[Any]:
        for item in items:
            yield self.resolve(item)
