"""Rendered input units, committed one by one before any global step (`OUT/_units/`).

Dedup, sentence assembly and shard routing need every image of a build, so no output shard can be
written before all input is rendered. What can be kept is each input unit's rendering (a web
shard, a class-folder chunk, a video, an object): Render commits a unit as soon as it is done,

    OUT/_units/<source>/<unit id>.png.bin   every rendered PNG of the unit, back to back
    OUT/_units/<source>/<unit id>.results   what Render emitted (sentences, units, rejects), images as refs
    OUT/_units/<source>/<unit id>.json      the commit mark, written last: the unit, its input
                                            manifest, sizes and sha256 of the two files above

and passes on results whose images are `StoredRef`s of a few dozen bytes (the runner's groupings
never hold pixels; WriteShard reads the bytes back when it writes a tar). A rerun of the same
config takes a committed unit's results instead of reading and rendering it again when the files
its reading touched (recorded through `sources.fsio.recording_inputs`: every file opened, every
path probed and found absent, every folder listed) still have the same size and modification stamp
(`fsio.file_state`), the values it derived from files many units share (`fsio.derived_input`: the
split a list gives one video) are still the same, and the stored files match their digests; a
grown, changed or damaged unit is rendered again, a vanished one is dropped. An input moved
since (a config that differs only in sources' paths: `build.moved_inputs`) keeps its units: ids,
marks and manifests name paths under the root the output was first built from (`rebase`), and
each file is checked where it lies now.

Disk: once a shard holding an image commits, the store gives its copy up
(`uvd_pipeline.unit_relocation`), so a build needs the output's size plus what is in flight,
not twice the output; the store stays after the build so that a grown or changed input renders
only what changed.

This module writes, loads, checks and prunes the store; its parts live in their own modules, their
names importable from here: `unit_images` (images as `StoredRef`s, `StoreReader`),
`unit_manifest` (a unit's input manifest, the marks' shape checks), `unit_roots` (a moved input's
paths) and `shard_inputs` (what each committed shard was built from).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import pickle
import uuid
from typing import Any, Callable, Iterable

from sources import fsio
from tokenizer.atomic import AtomicFile, is_temporary, write_bytes
from uvd_pipeline.shard_inputs import (SHARD_INPUTS_DIR, SHARD_INPUTS_MAX_BYTES, group_digest,  # noqa: F401
                                       read_shard_inputs, shard_inputs_uri)
from uvd_pipeline.state_files import read_state, read_state_json
from uvd_pipeline.unit_images import (Moved, StoredImageError, StoredRef, StoreReader, _placed,  # noqa: F401
                                      _refs, read_moved, rendering_name, unit_id_of)
from uvd_pipeline.unit_manifest import (_same, changed_input, digest_of, input_manifest,  # noqa: F401
                                        manifest_problem, mark_problem, unit_paths)
from uvd_pipeline.unit_roots import rebase, rebased, root_pairs  # noqa: F401

log = logging.getLogger(__name__)
UNITS_DIR = "_units"
BIN_SUFFIX = ".png.bin"
RESULTS_SUFFIX = ".results"
MARK_SUFFIX = ".json"
STORE_VERSION = 2
# a mark whose manifest records derived values (`fsio.derived_input`): a version before them would
# read its manifest without them and keep a unit whose value changed, so it is refused there
DERIVED_STORE_VERSION = 3
READ_VERSIONS = (STORE_VERSION, DERIVED_STORE_VERSION)
MOVED_SUFFIX = ".moved"
UNIT_SUFFIXES = (MARK_SUFFIX, RESULTS_SUFFIX, BIN_SUFFIX, MOVED_SUFFIX)
UNIT_ID_LENGTH = 24  # `unit_id`'s hex digits


class UnitStoreError(OSError):
    """Writing the store failed (a full disk, say): the build stops, the unit stays uncommitted."""


def unit_id(source: str, unit: Any) -> str:
    """A stable name for one input unit of a source (its repr names every file or id it covers)."""
    return hashlib.sha256(f"{source}\n{unit!r}".encode("utf-8", "surrogateescape")).hexdigest()[:UNIT_ID_LENGTH]


def committed_digests(output: str, source: str, uids: Iterable[str]) -> list[tuple[str, str]] | None:
    """(unit id, input digest) of the given units from their commit marks; None if one is missing."""
    found = []
    for uid in uids:
        uri = fsio.join(output, UNITS_DIR, source, uid + MARK_SUFFIX)
        try:
            mark = read_state_json(uri)
        except (FileNotFoundError, ValueError):
            return None
        if not isinstance(mark, dict) or not isinstance(mark.get("inputs_digest"), str):
            return None
        found.append((uid, mark["inputs_digest"]))
    return found


class _Unpickler(pickle.Unpickler):
    """Loads only the project's record classes and plain values: a results file cannot run code."""

    PLAIN = {("builtins", n) for n in ("set", "frozenset", "tuple", "list", "dict", "bytes", "bytearray",
                                        "int", "float", "complex", "str", "bool", "slice", "range")}
    PLAIN |= {("copyreg", "_reconstructor"), ("collections", "OrderedDict"), ("collections", "Counter")}
    NUMPY = {"_reconstruct", "scalar", "dtype", "ndarray", "_frombuffer"}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.PLAIN:
            return super().find_class(module, name)
        if module.split(".")[0] == "numpy" and name in self.NUMPY:
            return super().find_class(module, name)
        if module.split(".")[0] in ("sources", "uvd_pipeline", "transforms"):
            found = super().find_class(module, name)
            if isinstance(found, type):
                return found
        raise pickle.UnpicklingError(f"a unit results file names {module}.{name}, which is not a record type")


class UnitStore:
    """One source's committed units under OUT/_units/<source>/."""

    def __init__(self, output: str, source: str, config_hash: str, root: str = "", named_root: str = "",
                 run_id: str | None = None) -> None:
        self.output = output
        self.run_id = run_id  # the run whose lock a commit checks (`output_lock.check_held`; None: none)
        self.folder = fsio.join(output, UNITS_DIR, source)
        self.source = source
        self.config_hash = config_hash
        # the source's root now, and the one its units are named under (the output's first: the
        # input may have moved since, `BuildConfig.output_root`)
        self.root, self.named_root = root, named_root or root
        to_named = root_pairs(self.root, self.named_root)
        # `named`: a unit or path as the store names it (under the output's first root of the
        # source); `here`: a path the store names, where it lies now. Both `_same` when the input
        # has not moved, so that `changed_input` and a listing's digest rename nothing then.
        self.named: Callable[[Any], Any] = functools.partial(rebased, to_named) if to_named else _same
        self.here: Callable[[Any], Any] = (functools.partial(rebased, [(new, old) for old, new in to_named])
                                           if to_named else _same)

    @property
    def moved(self) -> bool:
        """Whether the source's input lies elsewhere than where the store names it."""
        return self.named is not _same

    def uid(self, unit: Any) -> str:
        return unit_id(self.source, self.named(unit))

    def _path(self, uid: str, suffix: str) -> str:
        return fsio.join(self.folder, uid + suffix)

    def load(self, unit: Any, verify_images: bool = False) -> tuple[list[tuple[str, Any]], str] | None:
        """(the unit's stored outputs, its input digest) when it is committed, of this config, its
        input unchanged and its files intact; None means: render it. The results file is small and
        always checked by sha256; the image file by size, and each image still in it by sha256 with
        `verify_images` (every read checks it anyway, before its bytes go into a shard). Images
        moved into committed shards come back as refs into their tars."""
        uid = self.uid(unit)
        mark_uri = self._path(uid, MARK_SUFFIX)
        try:
            mark = read_state_json(mark_uri)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("unit %s of %s: unreadable commit mark (%s): rendering it again", uid, self.source, exc)
            return None
        if (not isinstance(mark, dict) or mark.get("version") not in READ_VERSIONS
                or mark.get("config_hash") != self.config_hash or mark.get("unit") != repr(self.named(unit))):
            return None
        problem = mark_problem(mark)
        if problem:  # edited or damaged on disk; a bug of ours past this check shows its traceback
            log.warning("unit %s of %s: damaged commit mark (%s): rendering it again", uid, self.source, problem)
            return None
        change = changed_input(mark["inputs"], self.here, self.named)
        digest = mark["inputs_digest"]
        if change:
            log.info("%s: input of unit %s: %s: rendering it again", self.source, uid, change)
            return None
        try:
            outputs = self.stored_outputs(uid, mark, verify_images)
        except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:  # what a damaged file raises
            log.warning("%s: unit %s is damaged (%s): rendering it again", self.source, uid, exc)
            return None
        return outputs, digest

    def stored_outputs(self, uid: str, mark: dict[str, Any], verify_images: bool = False,
                       pending: Moved | None = None) -> list[tuple[str, Any]]:
        """A committed unit's outputs with every image a ref to where it lies now; raises
        ValueError/OSError naming the file when the results, the image file or (with
        `verify_images`) an image in it differs from what the mark records. `pending`: images that
        committed shards took which the unit's `.moved` record does not name yet
        (`unit_relocation.pending_placements`)."""
        results = self._read_checked(uid, RESULTS_SUFFIX, mark["results"])
        outputs = _Unpickler(io.BytesIO(results)).load()
        moved = read_moved(self._path(uid, MOVED_SUFFIX), mark["render"]) | (pending or {})
        images_uri = self._path(uid, BIN_SUFFIX)
        placed = [(tag, _placed(item, images_uri, self.output, moved)) for tag, item in outputs]
        in_file = [r for _, item in placed for r in _refs(item) if r.path == images_uri]
        if in_file:
            fs, target = fsio.filesystem(images_uri)
            size = fs.size(target) if fs.exists(target) else None
            if size != mark["images"]["bytes"]:
                raise ValueError(f"{images_uri} holds {size} bytes, its commit mark says {mark['images']['bytes']}")
            if verify_images:
                reader = StoreReader()
                try:
                    for ref in in_file:
                        reader.read(ref)
                finally:
                    reader.close()
        return placed

    def _read_checked(self, uid: str, suffix: str, recorded: dict[str, Any]) -> bytes:
        uri = self._path(uid, suffix)
        data = read_state(uri, recorded["bytes"])  # its mark's size is its cap
        if len(data) != recorded["bytes"]:
            raise ValueError(f"{uri} holds {len(data)} bytes, its commit mark says {recorded['bytes']}")
        if hashlib.sha256(data).hexdigest() != recorded["sha256"]:
            raise ValueError(f"{uri} does not match the sha256 its commit mark records")
        return data

    def writer(self, unit: Any) -> "UnitWriter":
        return UnitWriter(self, unit)


class UnitWriter:
    """Writes one unit: images as they are rendered, then results, then the commit mark."""

    def __init__(self, store: UnitStore, unit: Any) -> None:
        self.store = store
        self.unit = unit
        self.uid = store.uid(unit)
        self.render = uuid.uuid4().hex[:16]  # tells this rendering's images from an earlier one's
        self.images_uri = store._path(self.uid, BIN_SUFFIX)
        self._images = AtomicFile(self.images_uri)
        self._offset = 0

    def stored(self, item: Any) -> Any:
        """The same sentence or rendered unit with its images replaced by refs into this unit."""
        images = getattr(item, "images", None)
        if not images:
            return item
        return dataclasses.replace(item, images=tuple(self._put(png) for png in images))

    def _put(self, payload: bytes) -> StoredRef:
        try:
            self._images.write(payload)
        except OSError as exc:
            raise UnitStoreError(f"cannot write the unit store file {self._images.temporary}: {exc}") from exc
        ref = StoredRef(self.images_uri, self._offset, len(payload), hashlib.sha256(payload).hexdigest(),
                        rendering_name(self.store.source, self.uid, self.render), self._offset)
        self._offset += len(payload)
        return ref

    def commit(self, outputs: list[tuple[str, Any]], record: fsio.InputsRead) -> str:
        """Images, results, then the mark; returns the unit's input digest. Nothing of it lands in
        the output once its run no longer holds the output's lock (`LockLost`)."""
        from uvd_pipeline.output_lock import check_held

        check_held(self.store.output, self.store.run_id)
        self._images.commit()  # a unit of rejects only still commits an (empty) image file
        portable = [(tag, _placed(item, "", "", {})) for tag, item in outputs]
        results = pickle.dumps(portable, protocol=pickle.HIGHEST_PROTOCOL)
        write_bytes(self.store._path(self.uid, RESULTS_SUFFIX), results)
        manifest = input_manifest(record, self.unit, self.store.named)
        mark = {
            "version": DERIVED_STORE_VERSION if "derived" in manifest else STORE_VERSION,
            "source": self.store.source,
            "config_hash": self.store.config_hash,
            "unit": repr(self.store.named(self.unit)),
            "render": self.render,
            "inputs": manifest,
            "inputs_digest": digest_of(manifest),
            "outputs": len(outputs),
            "results": {"bytes": len(results), "sha256": hashlib.sha256(results).hexdigest()},
            "images": {"bytes": self._offset},  # each image's sha256 is in its ref
        }
        write_bytes(self.store._path(self.uid, MARK_SUFFIX), json.dumps(mark, sort_keys=True).encode())
        return mark["inputs_digest"]

    def abandon(self) -> None:
        self._images.abandon()


def unit_marks(output: str, refused: Callable[[str, OSError], None] | None = None) -> list[str]:
    """The commit marks of every unit in the store, all sources. `refused(folder, error)`: told of
    each source's folder the system refuses to list (skipped then; raised without it), so that
    `verify` checks the other sources' units."""
    return store_listing(output, refused)[0]


def store_listing(output: str, refused: Callable[[str, OSError], None] | None = None
                  ) -> tuple[list[str], dict[str, list[str]]]:
    """(`unit_marks`, the mark each unit with files but no mark lacks -> those files), from one
    listing of each source's folder. A unit's files without its mark (written last) are a commit
    under way or killed before its mark, or a mark deleted since: the unit is not committed, and a
    rerun renders it again."""
    root = fsio.join(output, UNITS_DIR)
    if not fsio.exists(root):
        return [], {}
    marks: list[str] = []
    unmarked: dict[str, list[str]] = {}
    for folder in fsio.list_dirs(root):
        try:
            # `links`: a link or fifo in a mark's place is listed too, and its check names it
            files = [f for f in fsio.list_files(folder, links=True) if not is_temporary(f)]
        except OSError as exc:
            if refused is None:
                raise
            refused(folder, exc)
            continue
        files = [f for f in files if _is_unit_file(fsio.basename(f))]
        found = [f for f in files if f.lower().endswith(MARK_SUFFIX)]
        marks += found
        named = {f[: -len(MARK_SUFFIX)] for f in found}
        for uri in files:
            stem = uri.rsplit("/", 1)[0] + "/" + fsio.basename(uri).split(".", 1)[0]
            if uri not in found and stem not in named:
                unmarked.setdefault(stem + MARK_SUFFIX, []).append(uri)
    return marks, unmarked


def _is_unit_file(name: str) -> bool:
    """Whether `name` is one the store writes (a unit id, then a suffix of its): a file another
    program leaves in a source's folder (Finder's `.DS_Store`, NFS's `.nfsXXXX`) was counted as a
    unit's file whose mark is gone, and `verify` called the output damaged naming a unit `.json`
    with an empty id (rev58d L1)."""
    uid, _, suffix = name.partition(".")
    return len(uid) == UNIT_ID_LENGTH and all(c in "0123456789abcdef" for c in uid) and \
        "." + suffix.lower() in UNIT_SUFFIXES


def check_unit(output: str, mark_uri: str, full: bool,
               placed: Callable[[], dict[str, Moved]] | None = None,
               digests: dict[str, list[tuple[str, str]]] | None = None) -> str | None:
    """What is wrong with one committed unit (None: intact): its mark, its results file (size and
    sha256), its image file (size; with `full`, each image still in it by sha256). Images already
    moved into committed shards are checked with those shards. `placed`: rendering -> images
    committed shards took (`unit_relocation.pending_placements`), asked for only when the unit
    fails without them (a build killed in its write phase freed their store copies, and its
    `.moved` records come with the rerun). `digests`: source -> (unit id, input digest) of each
    readable mark, gathered for the shards' input records (`record_checks`) from this one read."""
    try:
        mark = read_state_json(mark_uri)
        store = UnitStore(output, mark["source"], mark["config_hash"])
        uid = fsio.basename(mark_uri)[: -len(MARK_SUFFIX)]
        if digests is not None and isinstance(mark.get("inputs_digest"), str):
            digests.setdefault(str(mark["source"]), []).append((uid, mark["inputs_digest"]))
        try:
            store.stored_outputs(uid, mark, verify_images=full)
        except (OSError, ValueError) as exc:
            pending = placed().get(rendering_name(mark["source"], uid, mark["render"])) if placed else None
            if not pending:
                raise
            store.stored_outputs(uid, mark, verify_images=full, pending=pending)
    except (OSError, ValueError, KeyError, TypeError, pickle.UnpicklingError, EOFError) as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


def prune(output: str, keep: dict[str, set[str]]) -> int:
    """Remove the store's files of units no longer in the input (`keep`: source -> unit ids) and of
    sources no longer built; returns how many units went."""
    root = fsio.join(output, UNITS_DIR)
    if not fsio.exists(root):
        return 0
    fs, _ = fsio.filesystem(root)
    removed = 0
    for folder in fsio.list_dirs(root):
        source = fsio.basename(folder)
        wanted = keep.get(source, set())
        gone = set()
        for uri in fsio.list_files(folder):
            uid = fsio.basename(uri).split(".", 1)[0]
            if uid not in wanted:
                fs.rm(fsio.filesystem(uri)[1])
                gone.add(uid)
        removed += len(gone)
    return removed
