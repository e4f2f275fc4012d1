"""One copy of each rendered image: the unit store hands its images over to the committed shards.

The unit store (`uvd_pipeline.unit_store`) keeps every rendered PNG so that a rerun renders only
what changed; the output shards hold the same PNGs. Two full copies would double the disk a build
needs, so the store gives up its copy as soon as a shard that holds the image is committed:

    OUT/_inputs/<source>/<shard>.placed.json   written by the shard's writer right before the shard
                                               commits: for each image it took from the store, the
                                               rendering and offset it came from, its length and
                                               sha256, and its offset in the shard's tar
    OUT/_units/<source>/<unit id>.moved        the same facts per unit (written by `relocate` on the
                                               driver, at the start and end of a build)

Once the shard commits the writer hands the images' byte ranges to a thread that punches them
out of the units' image files (`fallocate(PUNCH_HOLE)` on a local Linux disk: the file keeps its
size and its offsets, the blocks are freed), one shard at a time (`BackgroundRelease`); an image
several sentences hold (`remainder: wrap`: `StoredRef.shared`) stays until the run's last
`relocate`, since another shard's writer may still read it. A unit whose images all moved loses
its image file at the next `relocate`. A later run's refs to moved images point into the tars;
every read checks the image's sha256. So the disk a build needs is the output, plus the images
dedup dropped (kept for a rerun that may decide otherwise), plus the store's small files, plus
what is in flight: the units being rendered and, during the write phase, the shards being written,
the store copies of one committed shard being punched and those of the images several sentences
hold (on an object store, where nothing can be punched, the store's copy goes at the end of the
build instead: peak twice the output).

When a shard is rewritten (its source's input changed), other shards of the run may still need
images from its old tar: the old tar is kept (a hard link, no copy on a local disk) under
`OUT/_tmp/previous/` until the run ends, and readers fall back to it when the tar's bytes changed.
If a kill loses that copy, `relocate` finds the images nowhere (their record names a tar that no
longer holds them and the unit's file no longer holds them either) and forgets the unit: it is
rendered again. Nothing is lost silently: every image a unit's results name is either at its
recorded offset with its recorded sha256, or the unit is rendered again.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import hashlib
import json
import logging
import os
import threading
import zlib
from concurrent.futures import wait
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from sources import fsio
from tokenizer.atomic import write_bytes
from uvd_pipeline.daemon_pool import DaemonPool, PerProcess
from uvd_pipeline.integrity import file_sizes
from uvd_pipeline.rendered_shards import RENDERED_DIR, STATS_SUFFIX, TAR_SUFFIX, ShardAddress, read_json
from uvd_pipeline.unit_store import (BIN_SUFFIX, MARK_SUFFIX, MOVED_SUFFIX, RESULTS_SUFFIX, SHARD_INPUTS_DIR, Moved,
                                     StoredRef, read_moved, rendering_name, unit_id_of, unit_marks)

log = logging.getLogger(__name__)
PLACED_SUFFIX = ".placed.json"
PREVIOUS_DIR = ("_tmp", "previous")
_FALLOC_PUNCH_HOLE_KEEP_SIZE = 0x02 | 0x01


def placement_uri(output: str, source: str, stem: str) -> str:
    return fsio.join(output, SHARD_INPUTS_DIR, source, stem + PLACED_SUFFIX)


def tar_relative(address: ShardAddress) -> str:
    return "/".join((RENDERED_DIR, address.source, address.split, address.stem + TAR_SUFFIX))


def record_placement(output: str, address: ShardAddress, tar_sha256: str, placed: list[tuple[Any, int]]) -> None:
    """Where the store's images landed in a shard about to commit: written once its tar is in
    place, before its stats file (`write_shard`'s `before_commit`), so a committed shard always has
    its record. A record names its tar's sha256: `relocate` trusts it only when the shard's stats
    name the same (a kill before the stats leaves a record of no committed tar: not trusted, and
    nothing of it was released)."""
    images = sorted([ref.unit, ref.unit_offset, ref.length, ref.sha256, at]
                    for ref, at in placed if isinstance(ref, StoredRef) and ref.unit)
    uri = placement_uri(output, address.source, address.stem)
    if not images:
        if fsio.exists(uri):  # an earlier version of this shard's record
            fs, target = fsio.filesystem(uri)
            fs.rm(target)
        return
    record = {"source": address.source, "split": address.split, "shard": address.index,
              "tar": tar_relative(address), "tar_sha256": tar_sha256, "images": images}
    write_bytes(uri, json.dumps(record).encode())


def _ranges_by_file(placed: list[tuple[Any, int]]) -> dict[str, list[tuple[int, int]]]:
    """The store's byte ranges of the placed images, per unit image file, in file order. An image
    several sentences hold (`StoredRef.shared`) is left out: another shard's writer of this run may
    still read it from the store (it read zeros: 2 of 6 fresh `remainder: wrap` builds failed), and
    the driver's `relocate` frees it once the run's shards are written."""
    by_file: dict[str, list[tuple[int, int]]] = {}
    for ref, _ in placed:
        if isinstance(ref, StoredRef) and ref.path.endswith(BIN_SUFFIX) and not ref.shared:
            by_file.setdefault(ref.path, []).append((ref.offset, ref.length))
    return {path: sorted(ranges) for path, ranges in by_file.items()}


def release(placed: list[tuple[Any, int]]) -> int:
    """Punch the placed images out of the units' image files they were read from; returns the bytes
    released (0 where the disk cannot punch holes)."""
    return sum(punch(path, ranges) for path, ranges in _ranges_by_file(placed).items())


# Threads for the store's per-file metadata calls (punches, unlinks): each such call on ext4 may
# wait for a journal commit (with the `discard` mount option, a punch or the unlink of a punched
# file took 3-600 ms here), and calls issued together share one commit: 6 unit files' punches
# took 1.8-2.3 s one after another and 0.27 s on 6 threads; their unlinks 3.9 s against 0.2 s.
FILE_THREADS = 8
_FILE_POOL = PerProcess(lambda: DaemonPool(FILE_THREADS, "uvd-store-files"))


def each_file(function: Callable[..., Any], calls: list[tuple]) -> list[Any]:
    """`function(*args)` for each of `calls` on the store's file threads (inline when there is one),
    results in order; every call has ended before the first error is raised."""
    if len(calls) <= 1:
        return [function(*args) for args in calls]
    pool = _FILE_POOL.get()
    futures = [pool.submit(function, *args) for args in calls]
    wait(futures)
    return [future.result() for future in futures]


class BackgroundRelease:
    """Punches committed shards' images out of the store on a thread of its own, one shard at a
    time, so a writer goes on to its next shard: on a local ext4 disk each punch of a synced file
    took ~250 us (3 ms on an ext4 mounted with `discard`: a shard's unit files are punched
    together, `each_file`), and a 900-image build's writers spent 0.3 s of its tail on them. A
    writer hands its shard over once the previous shard's punches are done (`submit` waits), so the
    disk holds at most one committed shard's store copies more than with punching in the writer.
    What is still queued when the build ends is not waited for: the driver's `relocate` then
    removes each unit file whose images all moved and punches the rest (punching is idempotent)."""

    def __init__(self) -> None:
        self._idle = threading.Semaphore(1)
        self._pool = DaemonPool(1, "uvd-store-release")
        self.released = 0  # bytes punched so far

    def submit(self, placed: list[tuple[Any, int]]) -> int:
        """Queue the punching of `placed`'s store copies; returns the bytes handed over (those on a
        local disk: elsewhere nothing can be punched and `relocate` removes the files at the end)."""
        jobs = {path: ranges for path, ranges in _ranges_by_file(placed).items() if fsio.local_path(path) is not None}
        if not jobs or _fallocate() is None:
            return 0
        self._idle.acquire()  # the previous shard's punches are done
        self._pool.submit(self._punch, jobs)
        return sum(length for ranges in jobs.values() for _, length in ranges)

    def wait(self) -> None:
        """Until the punching handed over so far is done (tests; a writer never needs to)."""
        self._idle.acquire()
        self._idle.release()

    def _punch(self, jobs: dict[str, list[tuple[int, int]]]) -> None:
        try:
            self.released += sum(each_file(punch, list(jobs.items())))
        except OSError as exc:  # a store file gone or unwritable: relocate sees to it at the end
            log.debug("background release: %s", exc)
        finally:
            self._idle.release()


_BACKGROUND = PerProcess(BackgroundRelease)


def background_release() -> BackgroundRelease:
    """This process's `BackgroundRelease` (the writer threads of a process share it)."""
    return _BACKGROUND.get()


def punch(uri: str, ranges: Iterable[tuple[int, int]]) -> int:
    """Free the blocks of `ranges` in a local file, keeping its size and every other byte."""
    path = fsio.local_path(uri)
    fallocate = _fallocate()
    if path is None or fallocate is None:
        return 0
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return 0
    freed = 0
    try:
        for offset, length in ranges:
            if length and fallocate(fd, _FALLOC_PUNCH_HOLE_KEEP_SIZE, offset, length) == 0:
                freed += length
            elif length:
                return freed  # this filesystem cannot punch holes: the copy goes when the unit is done
    finally:
        os.close(fd)
    return freed


@functools.cache
def _fallocate():
    """libc's fallocate, or None where there is none (not Linux, no libc found)."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.fallocate
        function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
        function.restype = ctypes.c_int
        return function
    return None


def previous_uri(output: str, relative: str) -> str:
    return fsio.join(output, *PREVIOUS_DIR, *relative.split("/"))


def keep_previous(output: str, address: ShardAddress) -> None:
    """Before a committed shard's tar is replaced: keep the old one for the rest of the run (refs
    of other shards' images may point into it). A hard link on a local disk, a copy elsewhere."""
    relative = tar_relative(address)
    current, kept = fsio.join(output, relative), previous_uri(output, relative)
    if not fsio.exists(current) or fsio.exists(kept):
        return
    local, local_kept = fsio.local_path(current), fsio.local_path(kept)
    if local is not None and local_kept is not None:
        os.makedirs(os.path.dirname(local_kept), exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.link(local, local_kept)
        return
    fs, target = fsio.filesystem(current)
    fs.copy(target, fsio.filesystem(kept)[1])


def previous_lookup(output: str):
    """For `StoreReader`: the kept old copy of a tar (None when there is none)."""
    prefix = fsio.join(output, RENDERED_DIR)

    def lookup(uri: str) -> str | None:
        if not uri.startswith(prefix):
            return None
        relative = uri[len(fsio.join(output, "")):].replace(os.sep, "/")
        kept = previous_uri(output, relative)
        return kept if fsio.exists(kept) else None

    return lookup


def drop_previous(output: str) -> None:
    """Remove the old tars kept during a run (at its end, or at the next start after a kill)."""
    folder = fsio.join(output, *PREVIOUS_DIR)
    if fsio.exists(folder):
        fs, target = fsio.filesystem(folder)
        fs.rm(target, recursive=True)


@dataclass
class Relocation:
    units: int = 0  # units with images in shards
    moved_images: int = 0
    files_removed: int = 0  # units' image files whose every image is in a shard
    forgotten: int = 0  # units whose images are nowhere intact any more: rendered again

    def add(self, other: "Relocation") -> None:
        self.units += other.units
        self.moved_images += other.moved_images
        self.files_removed += other.files_removed
        self.forgotten += other.forgotten


# Placement records read per pass of `relocate`: their entries (about 150 bytes of JSON, 400 bytes
# as Python objects, per image) are held for one pass, so the driver's memory stays bounded
# however many images the build has; a build with more records takes more passes.
RELOCATE_PASS_BYTES = 16 << 20


def relocate(output: str, committed: Iterable[ShardAddress], pass_bytes: int | None = None,
             tar_sha256: Mapping[ShardAddress, str | None] | None = None) -> Relocation:
    """Bring every unit's `.moved` record up to date with the placement records of the committed
    shards (`committed`: intact shards of this config), punch what moved, remove image files that
    hold nothing any more, and forget units whose images are lost. Runs on the driver while no
    shard is being written (at the start and at the end of a build). `tar_sha256`: the sha256 of
    each committed shard's tar as its stats file records it, from a caller that has just read
    them (`committed_shards`); each shard's stats file is read otherwise (a request per shard on
    an object store).

    The units are taken in passes, each a share of them by their id's hash, with the placement
    entries of that share only: one pass per `pass_bytes` of placement records (default
    `RELOCATE_PASS_BYTES`), so memory does not grow with the build (a small build takes one)."""
    known = tar_sha256 if tar_sha256 is not None else {}
    trusted = {tar_relative(a): known[a] if a in known else _tar_sha(output, a) for a in committed}
    root = fsio.join(output, SHARD_INPUTS_DIR)
    records = fsio.list_files(root, (PLACED_SUFFIX,), recursive=True) if fsio.exists(root) else []
    total = sum(size for path, size in file_sizes(root).items() if path.endswith(PLACED_SUFFIX)) if records else 0
    passes = max(1, -(-total // (pass_bytes or RELOCATE_PASS_BYTES)))
    marks = unit_marks(output)
    result = Relocation()
    for part in range(passes):
        located, doubtful = _placements(records, trusted, passes, part)
        mine = [m for m in marks  # by its unit id
                if passes == 1 or _share(fsio.basename(m)[: -len(MARK_SUFFIX)], passes) == part]
        for done in each_file(_relocate_unit, [(m, located, doubtful) for m in mine]):
            result.add(done)
    if result.forgotten:
        log.warning("%d stored units lost images (a shard holding them changed): they are rendered again",
                    result.forgotten)
    return result


def pending_placements(output: str, trusted: Mapping[str, str | None]) -> dict[str, Moved]:
    """Rendering -> where its images lie in committed shards by the shards' placement records
    (`trusted`: each intact committed tar, as `tar_relative` names it, with its sha256), whether or
    not `relocate` has brought the units' `.moved` records up to date: a build killed in its write
    phase has freed the store's copies already, and only its rerun writes the records. For checks
    that must not change the output (`verify`); all placements at once, so only on a unit that
    failed its check without them."""
    root = fsio.join(output, SHARD_INPUTS_DIR)
    records = fsio.list_files(root, (PLACED_SUFFIX,), recursive=True) if fsio.exists(root) else []
    return _placements(records, dict(trusted), 1, 0)[0]


def _share(uid: str, passes: int) -> int:
    """Which pass of `relocate` takes a unit (by its id, the same for its mark and its placements)."""
    return zlib.crc32(uid.encode()) % passes





def _placements(records: list[str], trusted: dict[str, str | None], passes: int,
                part: int) -> tuple[dict[str, Moved], dict[str, dict[int, tuple[int, str]]]]:
    """The placement entries of pass `part`'s units: (located: rendering -> its images in intact
    committed shards, doubtful: rendering -> its images placed into a shard no longer intact)."""
    located: dict[str, Moved] = {}
    doubtful: dict[str, dict[int, tuple[int, str]]] = {}
    for uri in records:
        try:
            record = read_json(uri)
            intact = record["tar_sha256"] is not None and trusted.get(record["tar"]) == record["tar_sha256"]
            for unit, offset, length, sha, at in record["images"]:
                if passes > 1 and _share(unit_id_of(unit), passes) != part:
                    continue
                if intact:
                    located.setdefault(unit, {}).setdefault(offset, (record["tar"], at, length, sha))
                else:
                    doubtful.setdefault(unit, {})[offset] = (length, sha)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            if part == 0:
                log.warning("unreadable placement record %s (%s): ignored", uri, exc)
    return located, doubtful


def _tar_sha(output: str, address: ShardAddress) -> str | None:
    try:
        return read_json(address.path(output, STATS_SUFFIX)).get("tar_sha256")
    except (FileNotFoundError, ValueError):
        return None


def _relocate_unit(mark_uri: str, located: dict[str, Moved],
                   doubtful: dict[str, dict[int, tuple[int, str]]]) -> Relocation:
    """One unit's share of `relocate` (units are independent: they run on the store's file threads)."""
    result = Relocation()
    stem = mark_uri[: -len(MARK_SUFFIX)]
    try:
        mark = read_json(mark_uri)
        rendering = rendering_name(mark['source'], fsio.basename(stem), mark['render'])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return result  # not a unit of this store version: the next load renders it again
    moved_uri, images_uri = stem + MOVED_SUFFIX, stem + BIN_SUFFIX
    try:
        earlier = read_moved(moved_uri, mark["render"])
    except ValueError as exc:  # damaged or refused (`state_files`): where its images went is unknown
        log.warning("unit %s: unreadable %s record (%s): removed from the store, the next build renders it again",
                    fsio.basename(stem), MOVED_SUFFIX, exc)
        _forget(stem)
        result.forgotten += 1
        return result
    now = located.get(rendering, {})
    suspects = {o: (v[2], v[3]) for o, v in earlier.items()} | doubtful.get(rendering, {})
    lost = [(o, length, sha) for o, (length, sha) in suspects.items() if o not in now]
    if lost and not _still_in_file(images_uri, lost):
        _forget(stem)
        result.forgotten += 1
        return result
    if not now:
        _write_moved(moved_uri, mark["render"], now, earlier)
        return result
    result.units += 1
    result.moved_images += len(now)
    # the store's copies go before the record says they went: a kill in between leaves nothing unfreed
    if fsio.exists(images_uri):
        if 0 < mark["images"]["bytes"] == sum(length for _, _, length, _ in now.values()):
            fs, target = fsio.filesystem(images_uri)
            fs.rm(target)
            result.files_removed += 1
        else:  # ranges recorded earlier were freed then: only the new ones
            punch(images_uri, [(o, v[2]) for o, v in now.items() if o not in earlier])
    _write_moved(moved_uri, mark["render"], now, earlier)
    return result


def _write_moved(uri: str, render: str, now: Moved, earlier: Moved) -> None:
    """A unit's `.moved` record, rewritten only when it changes (removed when nothing moved)."""
    if now == earlier:
        return
    if now:
        record = {"render": render, "images": {str(o): list(v) for o, v in sorted(now.items())}}
        write_bytes(uri, json.dumps(record).encode())
    elif fsio.exists(uri):
        fs, target = fsio.filesystem(uri)
        fs.rm(target)


def _still_in_file(images_uri: str, images: list[tuple[int, int, str]]) -> bool:
    """Whether each (offset, length, sha256) is intact in the unit's image file (not punched out)."""
    try:
        with fsio.open_file(images_uri, "rb") as handle:
            for offset, length, sha in images:
                handle.seek(offset)
                if hashlib.sha256(handle.read(length)).hexdigest() != sha:
                    return False
    except FileNotFoundError:
        return False
    return True


def _forget(stem: str) -> None:
    """Remove a unit from the store, its commit mark first."""
    for suffix in (MARK_SUFFIX, RESULTS_SUFFIX, BIN_SUFFIX, MOVED_SUFFIX):
        uri = stem + suffix
        if fsio.exists(uri):
            fs, target = fsio.filesystem(uri)
            fs.rm(target)
