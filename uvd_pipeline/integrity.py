"""Checking committed files against what their stats recorded (size, sha256).

Every committed file of a build output is recorded in a stats file written after it (the commit
mark): a rendered shard's stats record its tar (`tar_bytes`, `tar_sha256`) and its side files
(`files`: rejects, fingerprints), a token shard's stats its `.arrow` (`bytes`, `sha256`). Readers
check the size always (a `stat`, cheap everywhere) and the sha256 where they read the bytes anyway
or where asked (`build --verify`, `verify`). A mismatch is a `ShardDamaged` naming the file.
"""

from __future__ import annotations

import hashlib
import io
from typing import IO, Any, NamedTuple

from sources import fsio
from uvd_pipeline.shards import REBUILD_HINT, ShardDamaged

__all__ = ["REBUILD_HINT", "ShardDamaged", "Recorded", "check_file", "rendered_files", "token_file",
           "HashingReader", "confirm", "sha256_of", "SHA_DIFFERS", "EMPTY_SHA256"]

SHA_DIFFERS = "sha256 differs from its stats: the bytes changed after it was committed"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()  # an empty file's: checked without opening it


class Recorded(NamedTuple):
    """A committed file and what its stats say about it (None: not recorded, by an older build)."""

    uri: str
    bytes: int | None
    sha256: str | None


def sha256_of(uri: str) -> str:
    digest = hashlib.sha256()
    with fsio.open_file(uri) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sizes(uri: str) -> dict[str, int]:
    """Path inside its filesystem -> size of every file below `uri`, in one listing (an object
    store answers it in a few requests, not one per file)."""
    fs, root = fsio.filesystem(uri)
    if not fs.exists(root):
        return {}
    return {path: int(info.get("size") or 0) for path, info in fs.find(root, detail=True).items()
            if info.get("type") == "file"}


def check_file(recorded: Recorded, full: bool = False, sizes: dict[str, int] | None = None) -> str | None:
    """What is wrong with a committed file (None: nothing): missing, another size, or (with
    `full`) another sha256 than its stats recorded. `sizes`: a `file_sizes` listing to look the
    size up in, instead of asking the filesystem."""
    fs, path = fsio.filesystem(recorded.uri)
    try:
        size = sizes.get(path) if sizes is not None else fs.size(path)
    except FileNotFoundError:
        return "missing (its stats file records it)"
    if size is None:  # a listing holds files only: a fifo or device in its place is none
        return _not_a_file(recorded.uri) or "missing (its stats file records it)"
    if recorded.bytes is not None and size != recorded.bytes:
        return _not_a_file(recorded.uri) or f"{size} bytes, its stats record {recorded.bytes} (truncated or rewritten)"
    try:
        if full and recorded.sha256 and sha256_of(recorded.uri) != recorded.sha256:
            return SHA_DIFFERS
    except fsio.NotAFile as exc:  # its size (0) matched: a fifo says 0, /dev/zero too
        return f"{exc.kind}, not the file its stats record"
    return None


def _not_a_file(uri: str) -> str | None:
    """What a fifo, socket or device in place of a committed file is, judged unopened."""
    kind = fsio.special_at(uri)
    return f"{kind}, not the file its stats record" if kind else None


def rendered_files(stats_uri: str, stats: dict[str, Any]) -> list[Recorded]:
    """The files a rendered shard's stats record: the tar, then its side files."""
    folder = stats_uri.rsplit("/", 1)[0] if "/" in stats_uri else "."
    files = [Recorded(fsio.join(folder, stats["tar"]), stats.get("tar_bytes"), stats.get("tar_sha256"))]
    for name, entry in sorted((stats.get("files") or {}).items()):
        files.append(Recorded(fsio.join(folder, name), entry.get("bytes"), entry.get("sha256")))
    return files


def token_file(stats_uri: str, stats: dict[str, Any]) -> Recorded:
    folder = stats_uri.rsplit("/", 1)[0] if "/" in stats_uri else "."
    return Recorded(fsio.join(folder, stats["file"]), stats.get("bytes"), stats.get("sha256"))


def named_files(stats_uri: str, stats: Any, kind: str) -> list[str]:
    """The files a stats file names (`kind`: "rendered" or "token"), the stats file first: what it
    claims of the shard folders (`uvd_pipeline.verify.unclaimed_files`). A stats file that is not
    one names itself only."""
    try:
        files = rendered_files(stats_uri, stats) if kind == "rendered" else [token_file(stats_uri, stats)]
    except (ValueError, KeyError, TypeError, AttributeError):
        return [stats_uri]
    return [stats_uri] + [f.uri for f in files]


class HashingReader(io.RawIOBase):
    """A read-only raw stream that hashes what passes through. Readers wrap it in `buffered()`:
    tarfile's stream mode reads 10 KB at a time, and each raw read and digest update lets go of
    Python's lock and takes it back; in a GPU build's eight Tokenize threads those hand-overs, not
    the bytes, were the cost (9.6 ms of a worker's time per 85 KB image on a 16-core machine)."""

    def __init__(self, handle: IO[bytes]) -> None:
        super().__init__()
        self._handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer) -> int:  # what `io.BufferedReader` calls
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def buffered(self, size: int = 1 << 20) -> io.BufferedReader:
        """This stream behind a buffer of `size` bytes: one raw read and digest update per `size`."""
        return io.BufferedReader(self, buffer_size=size)

    def finish(self) -> str:
        """Read what is left (tar padding) and return the sha256 of the whole file."""
        for _ in iter(lambda: self.read(1 << 20), b""):
            pass
        return self.digest.hexdigest()


def confirm(recorded: Recorded, reader: HashingReader) -> None:
    """After a full read: the bytes read must be the ones recorded."""
    digest = reader.finish()
    if recorded.bytes is not None and reader.size != recorded.bytes:
        raise ShardDamaged(recorded.uri, f"{reader.size} bytes read, its stats record {recorded.bytes}; {REBUILD_HINT}")
    if recorded.sha256 and digest != recorded.sha256:
        raise ShardDamaged(recorded.uri, f"sha256 differs from its stats: the bytes changed after it was committed; "
                                         f"{REBUILD_HINT}")
