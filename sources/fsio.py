"""Filesystem access through fsspec, so every source reads local paths, gs://, s3:// alike."""

from __future__ import annotations

import contextlib
import contextvars
import errno
import functools
import hashlib
import importlib
import io
import json
import os
import posixpath
import re
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterator, TypeVar

import fsspec
import fsspec.caching
from fsspec.core import url_to_fs
from fsspec.implementations.local import make_path_posix


# `scheme://` (two letters or more: `C://x` is a Windows drive, a relative name here), or a chain
# spelled from its start (`simplecache::s3://`); and a chain's next link after a path (`zip://m::s3://`)
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+(?:::[A-Za-z][A-Za-z0-9+.-]*)*://")
_CHAIN_LINK = re.compile(r"::[A-Za-z][A-Za-z0-9+.-]+://")
_CHAIN_START = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*::)+")  # `simplecache::`, `blockcache::filecache::`
_LOCAL_SCHEMES = ("file://", "local://")


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and the path inside it for a URL or local path.

    A name is never split at `::` (fsspec's URL chaining: `a::b` opens `a` through `b`) unless a
    URL scheme follows it: `::` is a legal character of a file or object name, and `cam::1.png`
    was read as `cam`, a link out of the root that no check had judged (they judge the full name).
    A local path (no `scheme://`, or `file://`) is that exact name, absolute as fsspec makes it."""
    local = _local_name(uri)
    if local is not None:
        return fsspec.filesystem("file"), local
    if _CHAIN_LINK.search(uri) or "::" in uri.split("://", 1)[0]:
        _refuse_stray_colons(uri)
        return url_to_fs(uri)
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


def _open(uri: str, mode: str, **text: str) -> IO[Any]:
    """`uri` opened by its exact name (`filesystem`), never through `fsspec.open`'s URL parsing."""
    fs, path = filesystem(uri)
    return fs.open(path, mode, **text)


def _unstrip(fs: fsspec.AbstractFileSystem, path: str, like: str) -> str:
    """Turn a path inside `fs` back into a URL of the same kind as `like`."""
    if "://" in like:
        protocol = like.split("://", 1)[0]
        return f"{protocol}://{path}"
    return path


def listed_root(uri: str) -> str:
    """A folder's URL in the form `list_files` gives the names under it (`memory://a/b` lists
    `memory:///a/b/x`), no trailing separator: a root compared with listed names, or with another
    root, by its text (`uvd_pipeline.unit_store.rebase`). As written where no filesystem of its
    protocol can be made here (its package not installed)."""
    try:
        fs, path = filesystem(uri)
    except (ImportError, ValueError):
        return uri.rstrip("/")
    return _unstrip(fs, path.rstrip("/") or path, uri)


@dataclass
class InputsRead:
    """What one stretch of reading touched: files opened, paths found absent, and folder listings
    with their result.

    A build records this around each input unit, so a rerun can tell whether the unit's input is
    still what it rendered (see `uvd_pipeline.unit_store`) without knowing each reader's layout.
    An absent path counts too: a reader that looked for a file (img2dataset's parquet beside its
    tar) reads it once it appears, so its appearance changes the unit's input. A value derived from
    files many units share (`derived_input`: the split a list gives one video) stands for those
    files: a rerun compares the value, so an edit that leaves it alone changes no unit."""

    files: set[str] = field(default_factory=set)
    # each file's state (`file_state`) when it was first opened: the manifest records it, not the
    # state at the unit's commit, so that a file rewritten while its unit was read or rendered (a
    # download still writing it, an editor saving it) reads as changed on the rerun; taken at
    # commit, the new state was recorded beside what the old bytes rendered, and kept for good
    states: dict[str, list] = field(default_factory=dict)
    listings: dict[tuple, str] = field(default_factory=dict)  # (uri, options...) -> digest of names
    absent: set[str] = field(default_factory=set)  # probed with `exists` and not there
    derived: dict[tuple, Any] = field(default_factory=dict)  # (name, *args) -> its value, as JSON has it
    # each listed name as the digest takes it: under the root the input was first read from, when
    # it has moved since (`uvd_pipeline.unit_store.rebase`), so a moved folder lists the same
    rename: Callable[[str], str] | None = None


_RECORDING: contextvars.ContextVar[InputsRead | None] = contextvars.ContextVar("uvd_inputs_read", default=None)


@contextlib.contextmanager
def recording_inputs(rename: Callable[[str], str] | None = None) -> Iterator[InputsRead]:
    """Record every file opened and every folder listed through this module inside the block
    (`rename`: see `InputsRead.rename`)."""
    record = InputsRead(rename=rename)
    token = _RECORDING.set(record)
    try:
        yield record
    finally:
        _RECORDING.reset(token)


def opening(uri: str) -> None:
    """A reader is about to open `uri` outside this module (a decoder given the path: PyAV, decord):
    it is recorded as a file opened here is, its state taken now, before it is read."""
    _opened(uri)


def _opened(uri: str, state: list | None = None) -> None:
    """Records `uri` as read by the current unit, with its state before it is read
    (`InputsRead.states`): `state` where the caller has just taken it, else one stat."""
    record = _RECORDING.get()
    if record is not None and uri not in record.files:
        record.states[uri] = list(state) if state is not None else file_state(uri)
        record.files.add(uri)


def _listed(key: tuple, names: list[str]) -> list[str]:
    record = _RECORDING.get()
    if record is not None:
        record.listings[key] = listing_digest(names, record.rename)
    return names


_RUN_MEMO: contextvars.ContextVar[dict | None] = contextvars.ContextVar("uvd_run_memo", default=None)


@contextlib.contextmanager
def run_memo(memo: dict) -> Iterator[dict]:
    """Inside the block `once_per_run` keeps its values in `memo`: one run's (a renderer's, whose
    reads and rerun checks all look at the input as it is during the run)."""
    token = _RUN_MEMO.set(memo)
    try:
        yield memo
    finally:
        _RUN_MEMO.reset(token)


def active_run_memo(fallback: dict) -> dict:
    """The memo of the open `run_memo` block, else `fallback`: for a reader that opens a block of
    its own around one call's lookups when no run has (a test, a script), never shadowing the run's."""
    memo = _RUN_MEMO.get()
    return fallback if memo is None else memo


def once_per_run(key: tuple, compute: Callable[[], Derived]) -> Derived:
    """`compute()`, taken once per `run_memo` block under `key` (each time outside one). For a value
    every unit of a run derives from the whole input (the pattern set of a Hub repo, from a listing
    of it): each unit's reading and rerun check listed the whole repo again, quadratic in its files.
    A value that goes stale during the run is recorded as the run saw it; the next run, with a memo
    of its own, takes it again and renders the units whose value moved."""
    memo = _RUN_MEMO.get()
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]


Parsed = TypeVar("Parsed")
Derived = TypeVar("Derived")
_DERIVERS: dict[str, Callable[..., Any]] = {}
CHANGED = object()  # `rederive`'s answer when the value cannot be taken again: never equal to a value


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def derived_input(fn: Callable[..., Derived]) -> Callable[..., Derived]:
    """Record a function's value instead of the files it reads: `fn(*args)` with JSON-able args and
    value, registered under its module's dotted path and its name (what `rederive` imports to find
    it again: derived, never spelt by hand, so it cannot drift from where the function lives).
    Inside a recording, what `fn` opens, probes and lists is left out and `(name, *args) -> value`
    is recorded; `rederive` takes it again at a rerun. For a value of a shared index file (one line
    of a split list) that one unit depends on: a unit records what it used, not the whole file."""
    name = f"{fn.__module__}.{fn.__qualname__}"

    @functools.wraps(fn)
    def recorded(*args: Any) -> Derived:
        record = _RECORDING.get()
        with recording_inputs():  # what the value came from: stood for by the value
            value = fn(*args)
        if record is not None:
            record.derived[(name, *args)] = _as_json(value)
        return value

    _DERIVERS[name] = fn
    return recorded


def rederive(key: tuple) -> Any:
    """The value recorded under `key` (`derived_input`) taken again now, as JSON has it; `CHANGED`
    when no function of its name is known (a module of `sources` is imported to find it) or it fails,
    and for a name that is no string (a damaged commit mark: a list there was a TypeError)."""
    name, *args = key
    if not isinstance(name, str):
        return CHANGED
    if name not in _DERIVERS and name.startswith("sources."):
        with contextlib.suppress(ImportError):
            importlib.import_module(name.rsplit(".", 1)[0])
    fn = _DERIVERS.get(name)
    if fn is None:
        return CHANGED
    try:
        with recording_inputs():
            return _as_json(fn(*args))
    except Exception:  # noqa: BLE001 - a value that cannot be taken again: the unit renders again
        return CHANGED


def cached_input(maxsize: int, max_bytes: int | None = None, weigh: Callable[[Any], int] | None = None,
                 fresh: Callable[[Any], bool] | None = None,
                 weigh_files: Callable[[tuple[str, ...], tuple], tuple[int, int]] | None = None,
                 ) -> Callable[[Callable[..., Parsed]], Callable[..., Parsed]]:
    """A parse cache for index files a source reads whole (a class map, an annotation JSON) and
    every unit consults: `parse(uris, *args)`, `uris` one URL or a tuple of them.

    Each call, hit or miss, records the files in the current recording (`recording_inputs`), so
    the manifest of every unit whose items came from the parse lists them, whichever thread,
    process or earlier call parsed them. A hit also needs the files' state (`file_state`) to be
    the one they had when parsed: a file rewritten since is parsed again, never served stale.
    Only what `parse` returns is kept, never what it raises: a parse meets this machine's error
    (too many open files) as a raised `records.MachineError` (`records.read_input_bytes`), never as a
    returned failure, which would stand for the unchanged file until the process ends.

    With `max_bytes`, the parses kept stand for at most that many bytes of their files (the last
    one whatever its size): a parse takes several times its file's size, and `maxsize` large files
    kept would hold gigabytes. Room is made before a file is parsed, so its parse never adds to a
    full cache. `weigh(parse)`, where given, is what a kept parse counts once made, when more than
    its files' bytes (a parquet's rows kept as text outgrow its dictionary-encoded file).
    `fresh(parse)`, where given, must also hold for a kept parse to be served: for one that
    depends on more than its files (where the links of the folders it named lead).
    `weigh_files(uris, states)`, where given, is (peak, held): what a parse of those files will
    take while it is made and what it holds once made, judged before it is made (not their bytes):
    room is made for the peak, and a kept parse counts what it holds. Kept at its peak (a COCO
    file's text beside its objects), two 50.8 MiB files of alternating units were parsed again at
    every switch, 6 of 6 times (22.9 s against 6.6 s)."""

    def wrap(parse: Callable[..., Parsed]) -> Callable[..., Parsed]:
        entries: OrderedDict[tuple, tuple[tuple, Parsed, int]] = OrderedDict()  # key -> (states, parse, weight)
        lock = threading.Lock()

        def evict(room: int, slots: int, keep: int) -> None:
            """Drop the oldest parses until `slots` more and `room` more bytes fit (keeping `keep`)."""
            while len(entries) > keep and (len(entries) + slots > maxsize or max_bytes is not None and sum(
                    e[2] for e in entries.values()) + room > max_bytes):
                entries.popitem(last=False)

        @functools.wraps(parse)
        def cached(uris: str | tuple[str, ...], *args: Any) -> Parsed:
            names = (uris,) if isinstance(uris, str) else tuple(uris)
            key, states = (uris, *args), _states(names)
            for uri, state in zip(names, states):
                _opened(uri, state)  # the state the cache judges by: one stat a file, not two
            with lock:
                entry = entries.get(key)
                if entry is not None and entry[0] == states and fresh is None:
                    entries.move_to_end(key)
                    return entry[1]
            if entry is not None and entry[0] == states and fresh(entry[1]):  # type: ignore[misc]
                with lock:  # judged outside the lock: it may ask the filesystem
                    if key in entries:
                        entries.move_to_end(key)
                return entry[1]
            room = held = _weight(states)
            if weigh_files is not None:
                room, held = weigh_files(names, states)  # may read the files
            with lock:
                entries.pop(key, None)
                evict(room, 1, 0)
            value = parse(uris, *args)
            if _states(names) == states:  # not rewritten while it was parsed
                weight = max(held, weigh(value) if weigh is not None else 0)
                with lock:
                    entries[key] = (states, value, weight)
                    entries.move_to_end(key)
                    evict(0, 0, 1)
            return value

        def weight(uris: str | tuple[str, ...], *args: Any) -> int | None:
            """What the kept parse of `(uris, *args)` counts against `max_bytes` (None: not kept):
            so a test holds a source's `weigh` to its real cache, not to one of its own."""
            with lock:
                entry = entries.get((uris, *args))
            return None if entry is None else entry[2]

        cached.cache_clear = entries.clear  # type: ignore[attr-defined]
        cached.weight = weight  # type: ignore[attr-defined]
        return cached

    return wrap


def _weight(states: tuple) -> int:
    """The bytes of the files a parse was made of (`file_state`'s sizes; none known: 0)."""
    return sum(state[0] for state in states if isinstance(state[0], int))


def _states(uris: tuple[str, ...]) -> tuple:
    return tuple(tuple(file_state(uri)) for uri in uris)


def listing_digest(names: list[str], rename: Callable[[str], str] | None = None) -> str:
    """The digest of a listing, its names `rename`d first (`InputsRead.rename`): one spelling for
    the recording (`_listed`) and the rerun's check (`relist`), whose digests must compare."""
    if rename:
        names = [rename(n) for n in names]
    return hashlib.sha256("\n".join(names).encode("utf-8", "surrogateescape")).hexdigest()


def file_state(uri: str) -> list:
    """[size, modification stamp] of a file or folder as the filesystem reports them, or
    ["missing"]: two states differ when the content was replaced, grown or removed.

    On a local disk the stamp is the modification time and the change time (`st_ctime_ns`): a
    program can set the first back (`touch -r`, `cp -p`, rsync, tar) after rewriting a file with
    other bytes of the same size, but not the second, which any write, rename, chmod or link
    moves on. So a chmod, a copy or a move of the input also counts as a change (its units are
    rendered again, with the same bytes): the safe direction."""
    path = local_path(uri)
    if path is not None:
        try:
            st = os.stat(path)
        except OSError:  # gone, forbidden, a path too long for the operating system: none to compare
            return ["missing"]
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    fs, target = filesystem(uri)
    try:
        info = fs.info(target)
    except (FileNotFoundError, NotADirectoryError, PermissionError):  # a network failure is raised, not "missing"
        return ["missing"]
    stamp = next((str(info[k]) for k in ("mtime", "LastModified", "updated", "generation", "ETag", "etag")
                  if info.get(k) is not None), "")
    return [info.get("size"), stamp]


def join(base: str, *parts: str) -> str:
    if "://" in base:
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    found = fs.exists(path)
    record = _RECORDING.get()
    if not found and record is not None:
        record.absent.add(uri)
    return found


def isdir(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.isdir(path)


def list_files(uri: str, suffixes: tuple[str, ...] | None = None, recursive: bool = False,
               follow_links: bool = False, links: bool = False) -> list[str]:
    """Sorted files directly under (or, with `recursive`, anywhere below) a directory URL.

    With `links` (readers that check every path with `sources.paths`), symbolic links on a local
    disk are listed too, so none is skipped silently, and a recursive listing descends into
    linked folders only with `follow_links`; otherwise the folder link itself is listed, whatever
    its name, so that its reader accounts for it. A listing that is not recursive holds files and
    file links only: folders, linked or not, are `list_dirs`'s (a reader that must account for
    them lists both, as ImageNet's class folders do).
    """
    fs, path = filesystem(uri)
    if not fs.isdir(path):
        raise FileNotFoundError(f"not a directory: {uri}")
    lowered = tuple(s.lower() for s in suffixes) if suffixes else None
    if local_path(uri) is not None and (links or recursive):
        # fsspec's `find` left out, without a word, every sub-folder it could not list (its
        # `on_error` reaches the top folder only): `_local_files` lists such a folder as an entry
        names = _local_files(path, recursive, follow_links and links, lowered, links)
    else:
        if recursive:
            names = fs.find(path)
        else:
            names = [entry["name"] for entry in fs.ls(path, detail=True) if entry["type"] == "file"]
        if lowered:
            names = [n for n in names if n.lower().endswith(lowered)]
    return _listed(("files", uri, suffixes, recursive, follow_links, links), sorted(_unstrip(fs, n, uri) for n in names))


def unlistable(folder: str) -> str | None:
    """The operating system's reason when a local `folder` cannot be listed (no permission, a path
    too long for it, a failing disk), else None."""
    try:
        os.scandir(folder).close()
    except (FileNotFoundError, NotADirectoryError):
        return None  # gone, or not a folder: others say so
    except OSError as exc:
        _raise_machine_error(exc, folder)
        return exc.strerror or str(exc)
    return None


def _raise_machine_error(exc: OSError, folder: str) -> None:
    """Listing `folder` met this machine's error (too many open files: a listing opens the folder;
    `records.MACHINE_ERRNOS`): a `MachineError`, never a folder this user may not list, whose
    reject (`unreadable_folder`) would be committed for good and its files left out."""
    from sources.records import raise_machine_error

    raise_machine_error(exc, folder, "listing")


def _local_files(path: str, recursive: bool, follow_links: bool, suffixes: tuple[str, ...] | None,
                 links: bool = True) -> list[str]:
    """Files and links below a local folder; folder links are entries unless followed, and so is a
    sub-folder this user may not list (its reader rejects it: `paths.UnreadableFolder`). With
    `links`, so are a followed link back to a folder above it, and a link to itself (`x -> x`),
    whatever their names: their reader rejects them (`paths.LinkLoop`), never walked, never dropped."""
    found: list[str] = []
    stack: list[tuple[str, frozenset[str]]] = [(path, frozenset())]
    start = os.path.realpath(path)
    while stack:
        folder, above = stack.pop()
        real = os.path.realpath(folder)
        if real in above or (folder != path and _holds(real, start)):
            # a followed link back to a folder above, walked from here or above where the walk
            # began (`up -> ..` in a shard folder walked alone): a cycle, never walked
            found.append(folder)
            continue
        above = above | {real}
        try:
            listing = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError):
            if folder == path:
                raise
            continue  # gone since its parent was listed
        except OSError as exc:
            _raise_machine_error(exc, folder)
            if folder == path:
                raise
            found.append(folder)  # a sub-folder this user may not list: an entry its reader rejects
            continue
        with listing as entries:
            for entry in entries:
                name = os.path.join(folder, entry.name)
                if entry.is_dir(follow_symlinks=False):
                    if recursive:
                        stack.append((name, above))
                    continue
                if entry.is_symlink() and os.path.isdir(name):
                    if recursive and follow_links:
                        stack.append((name, above))
                    elif recursive and (links or not suffixes or entry.name.lower().endswith(suffixes)):
                        found.append(name)  # with `links`, whatever its name: its reader rejects it
                    continue
                # files, links, and fifos/sockets/devices too: their reader rejects them unread
                if not suffixes or entry.name.lower().endswith(suffixes) or (
                        links and recursive and entry.is_symlink() and _loops(name)):
                    found.append(name)
        if not recursive:
            break
    return found


def list_dirs(uri: str, links: bool = False, loops: bool = False) -> list[str]:
    """Sorted immediate subdirectories of a directory URL; with `links`, local links to folders
    too (for readers that check where they lead with `sources.paths`); with `loops` too, local
    links that lead back to themselves (`x -> x`, a ring of links), which are no folder to the
    operating system, so that their reader rejects each (`sources.paths.LinkLoop`) rather than
    never seeing them."""
    fs, path = filesystem(uri)
    if not fs.isdir(path):
        raise FileNotFoundError(f"not a directory: {uri}")
    if links and local_path(uri) is not None:
        with os.scandir(path) as entries:
            names = [os.path.join(path, e.name) for e in entries
                     if e.is_dir(follow_symlinks=False) or (e.is_symlink() and (
                         os.path.isdir(os.path.join(path, e.name)) or loops and _loops(os.path.join(path, e.name))))]
    else:
        names = [entry["name"] for entry in fs.ls(path, detail=True) if entry["type"] == "directory"]
    # `loops` is in the key only when set: `relist` lists again as recorded, and a listing without
    # it (every one a unit's `read` records: loops are listed by `units()` alone) keeps its key
    key = ("dirs", uri, links, True) if loops else ("dirs", uri, links)
    return _listed(key, sorted(_unstrip(fs, n.rstrip("/"), uri) for n in names))


def _holds(folder: str, inner: str) -> bool:
    """Whether the real folder `folder` is `inner` or lies above it."""
    return inner == folder or inner.startswith(folder.rstrip(os.sep) + os.sep)


def _loops(link: str) -> bool:
    try:
        os.stat(link)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def relist(key: tuple, rename: Callable[[str], str] | None = None) -> str:
    """The digest of a listing recorded under `key`, taken again now ("missing" if it fails), its
    names `rename`d as they were recorded (`InputsRead.rename`)."""
    try:
        if key[0] == "files":
            _, uri, suffixes, recursive, follow_links, links = key
            names = list_files(uri, suffixes, recursive, follow_links, links)
        else:
            names = list_dirs(*key[1:])
        return listing_digest(names, rename)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return "missing"


_SPECIAL_KINDS = ((stat.S_ISFIFO, "a fifo (named pipe)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def special_kind(mode: int) -> str | None:
    """What a path of `st_mode` `mode` is when it is a fifo, socket or device ("a fifo (named
    pipe)", ...), else None (a regular file, a folder)."""
    return next((name for test, name in _SPECIAL_KINDS if test(mode)), None)


class NotAFile(OSError):
    """A local path that is a fifo, socket or device, refused before it is opened: opening a fifo
    blocks until a writer comes, and a device (`/dev/zero`, a link to it) reads without end.
    `kind` says which ("a fifo (named pipe)", ...)."""

    def __init__(self, uri: str, kind: str) -> None:
        self.kind = kind
        super().__init__(f"{uri} is {kind}, not a file")


def special_at(uri: str) -> str | None:
    """What a local fifo, socket or device at `uri` is ("a fifo (named pipe)", ...; links
    followed; judged by `stat`, which never opens it), else None: a regular file, a folder, a
    missing path (the open that follows raises its own error), or a remote filesystem's file
    (they hold no such files)."""
    path = local_path(uri)
    if path is None:
        return None
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return special_kind(mode)


def refuse_special(uri: str) -> None:
    """Raise `NotAFile` when `uri` is a local fifo, socket or device (`special_at`)."""
    kind = special_at(uri)
    if kind:
        raise NotAFile(uri, kind)


# inside `heads_read_once`: each file's first bytes read (up to `MAX_HEAD_HELD`), and whether they are
# the whole file
_HEADS: contextvars.ContextVar[dict[str, tuple[bytes, bool]] | None] = contextvars.ContextVar("uvd_heads",
                                                                                             default=None)
MAX_HEAD_HELD = 4096


@contextlib.contextmanager
def heads_read_once() -> Iterator[None]:
    """Inside the block (one task of a decode worker: one file's probe, or its decoding) a file's
    first bytes are read once (`head_bytes`): each open of a video sniffed its 13 GIF bytes again
    (4 ranged reads in a probe, 2 in a decoding, each a round trip to a remote store)."""
    token = _HEADS.set({})
    try:
        yield
    finally:
        _HEADS.reset(token)


def head_bytes(uri: str, size: int) -> bytes:
    """The first `size` bytes of a file (fewer when it is shorter), in one ranged read: a sniff of
    what a file is, where `open_file` would fetch a whole 5 MiB read-ahead block of a remote one. A
    local fifo, socket or device raises `NotAFile` unopened. Not recorded as an input: the reader
    that opens the file records it. Inside `heads_read_once`, read once (up to `MAX_HEAD_HELD`)."""
    memo = _HEADS.get()
    held = memo.get(uri) if memo is not None else None
    if held is not None and (len(held[0]) >= size or held[1]):
        return held[0][:size]
    data = _head_bytes(uri, size)
    if memo is not None and size <= MAX_HEAD_HELD:
        memo[uri] = (data, len(data) < size)
    return data


def _head_bytes(uri: str, size: int) -> bytes:
    refuse_special(uri)
    path = local_path(uri)
    if path is not None:
        with open(path, "rb") as handle:
            return handle.read(size)
    fs, remote = filesystem(uri)
    # no cache: the read fetches its range alone (a store's `cat_file` may open with read-ahead)
    with fs.open(remote, "rb", block_size=max(size, 1), cache_type="none") as handle:
        return handle.read(size)


# a remote file read by seeking (`open_file(read_ahead=False)`) is fetched in blocks of this size,
# at most `SEEKING_BLOCKS` kept (least recently used let go): 64 MiB held at most per open file
SEEKING_BLOCK_BYTES = 1 << 20
SEEKING_BLOCKS = 64


# and its last bytes fetched once per open file (`TailFirstCache`): pyarrow's first read of a
# parquet's footer (its `footer_read_size`), and at most this much more where the footer declares more
TAIL_BYTES = 64 << 10
MAX_TAIL_BYTES = 16 << 20


class TailFirstCache(fsspec.caching.BlockCache):
    """fsspec's `blockcache` that holds a file's tail apart: its last `TAIL_BYTES` fetched once, on
    the first read that reaches them, and where they end a parquet (`PAR1`) whose footer is longer,
    the rest of the footer with them (up to `MAX_TAIL_BYTES`; a longer one, up to what
    `parquet_pages.MAX_FOOTER_BYTES` lets be opened, is fetched as one range each time it is read,
    never kept: in 1 MiB blocks it took 41 fetches for a 40 MB footer, and held 64 MiB of them). Each
    open of a remote parquet reads its footer several times (the encryption check's trailer and
    walk, pyarrow's footer read, then its schema): through a read-ahead window, which a read before
    it misses, that was up to 4 fetches of the file's end per open."""

    name = "uvd_tail_first"

    def __init__(self, blocksize: int, fetcher: Callable[[int, int], bytes], size: int, maxblocks: int = 32) -> None:
        super().__init__(blocksize, fetcher, size, maxblocks)
        self.tail_start = size  # where the held tail begins (`size`: none held yet)
        self.tail = b""
        self.footer_start = size  # where a parquet footer too long to hold begins (`size`: none)

    def _fetch(self, start: int | None, end: int | None) -> bytes:
        start = 0 if start is None else start
        end = self.size if end is None or end > self.size else end
        if start >= end:
            return b""
        if not self.tail and end > self.size - TAIL_BYTES:
            self._fetch_tail()
        if end <= self.tail_start:
            return super()._fetch(start, end)
        held = self.tail[max(0, start - self.tail_start): end - self.tail_start]
        if start >= self.tail_start:
            return held
        if start >= self.footer_start:  # a read of the long footer: one range, not kept
            self.total_requested_bytes += self.tail_start - start
            return self.fetcher(start, self.tail_start) + held
        return super()._fetch(start, self.tail_start) + held

    def _fetch_tail(self) -> None:
        start = max(0, self.size - TAIL_BYTES)
        tail = self.fetcher(start, self.size)
        if len(tail) >= 8 and tail[-4:] == b"PAR1":
            footer = int.from_bytes(tail[-8:-4], "little") + 8
            if len(tail) < footer <= min(self.size, MAX_TAIL_BYTES):
                tail = self.fetcher(self.size - footer, start) + tail
                start = self.size - footer
            elif MAX_TAIL_BYTES < footer <= self.size:
                self.footer_start = self.size - footer
        self.total_requested_bytes += len(tail)
        self.tail_start, self.tail = start, tail


fsspec.caching.register_cache(TailFirstCache, clobber=True)


def open_file(uri: str, mode: str = "rb", read_ahead: bool = True) -> IO[bytes]:
    """An open file; a local fifo, socket or device raises `NotAFile` unopened (`refuse_special`).
    Without `read_ahead`, a remote file is fetched in aligned blocks of `SEEKING_BLOCK_BYTES`, the
    last `SEEKING_BLOCKS` kept (fsspec's `blockcache`), not through a 5 MiB read-ahead from each
    read: a reader that seeks to what it needs (a parquet's page headers, then its column chunks)
    fetched most of the file twice that way, and one fetch per read without any cache (3,604
    fetches of a 33 MB img2dataset parquet of 100 row groups: 77 s at 20 ms a fetch); in blocks,
    1.01x its bytes in 34 fetches. Its tail (a parquet's footer) is held apart, fetched once
    (`TailFirstCache`): open every parquet so."""
    _opened(uri)
    if "r" in mode:
        refuse_special(uri)
    if read_ahead:
        return _open(uri, mode)
    fs, path = filesystem(uri)
    # an open's keywords, not the filesystem's (`fsspec.open`); a local file takes none of them
    return fs.open(path, mode, block_size=SEEKING_BLOCK_BYTES, cache_type=TailFirstCache.name,
                   cache_options={"maxblocks": SEEKING_BLOCKS})


class FileTooLarge(ValueError):
    """A file longer than its reader's cap (nothing beyond the cap was read)."""


def read_bytes(uri: str, limit: int | None = None) -> bytes:
    """The whole file; with `limit`, raises `FileTooLarge` instead of reading past that many bytes
    (before reading any where the open file says its size). A local fifo, socket or device raises
    `NotAFile` unopened."""
    _opened(uri)
    refuse_special(uri)
    with _open(uri, "rb") as handle:
        if limit is None:
            return handle.read()
        size = _known_size(handle)
        data = read_at_most(handle, limit + 1) if size is None or size <= limit else b""
    if len(data) > limit or size is not None and size > limit:
        raise FileTooLarge(f"{basename(uri)} is larger than {limit} bytes")
    return data


def read_head(uri: str, count: int, limit: int | None = None) -> tuple[bytes, int]:
    """The first `count` bytes of a file and its size (`read_bytes`'s rules: `FileTooLarge` past
    `limit`, judged before reading where the open file says its size): a caption whose rest is
    never held. A file whose size is not said is read one byte past `count` to tell it is longer
    (its size then `count` + 1, at least what it holds)."""
    _opened(uri)
    refuse_special(uri)
    with _open(uri, "rb") as handle:
        size = _known_size(handle)
        if limit is not None and size is not None and size > limit:
            raise FileTooLarge(f"{basename(uri)} is larger than {limit} bytes")
        data = read_at_most(handle, count if size is not None else count + 1)
    return data[:count], len(data) if size is None else size


READ_STEP = 16 << 20


def read_at_most(handle: Any, count: int) -> bytes:
    """Up to `count` bytes of an open file. One `read(count)` takes a buffer of `count` bytes
    first, whatever the file holds, and an address-space limit (`ulimit -v`) refused the 512 MB
    of an annotation file's cap for a file of a few bytes: a file whose size is known is read
    in one buffer of its size (one more byte: a file grown past the cap still shows it), others
    in steps."""
    size = _known_size(handle)
    if count <= READ_STEP or size is not None:
        return handle.read(count if size is None else min(count, size + 1))
    parts, total = [], 0
    while total < count and (part := handle.read(min(READ_STEP, count - total))):
        parts.append(part)
        total += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _known_size(handle: Any) -> int | None:
    """The bytes left to read in an open file, where the file says (a local regular file's fstat,
    an fsspec file's `size`); None elsewhere (a device such as /dev/zero, which a followed link can
    lead to, says 0 and never ends)."""
    with contextlib.suppress(AttributeError, OSError, TypeError, ValueError, io.UnsupportedOperation):
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            return None
        return max(0, info.st_size - handle.tell())
    size = getattr(handle, "size", None)
    with contextlib.suppress(AttributeError, OSError, TypeError, ValueError):
        return max(0, int(size) - handle.tell()) if isinstance(size, int) else None
    return None


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def iter_lines(uri: str) -> Iterator[str]:
    _opened(uri)
    refuse_special(uri)
    with _open(uri, "rt", encoding="utf-8") as handle:
        for line in handle:
            yield line.rstrip("\n")


def basename(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/"))


def local_path(uri: str) -> str | None:
    """The OS path when `uri` lives on the local disk (decoders seek faster on real files)."""
    fs, path = filesystem(uri)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return path if "file" in protocols or "local" in protocols else None
