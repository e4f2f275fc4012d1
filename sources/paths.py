"""Keep every read inside a source's root.

Names that come from the data (a COCO `file_name`, a CO3D frame path, a file or folder that is a
symbolic link) are not trusted: an absolute name, a `..` that climbs out, or a link that leads
elsewhere would make the build read, and publish, a file the dataset does not hold. Paths the
config names (the source path, an `images_dir`) are the config author's choice and are trusted,
links included: the root is resolved once, and what lies below it must stay below it.

`follow_links` is the per-source opt-in for datasets laid out as links to another disk; names
from annotation files must still stay inside the root lexically. Fifos, sockets and devices
are never read (`not_a_file`): opening a fifo blocks, and a device can stream forever.

What operating systems and tools leave in the folders a source lists (`set_aside`) is counted
under one policy in every source: `os_metadata` or `hidden_file`, one reject per file or folder,
never opened.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import posixpath
import stat
import unicodedata
from collections import OrderedDict
from typing import Any, Callable, Iterator, NamedTuple

from sources import fsio, hub_cache

OUTSIDE_ROOT = "outside_root"  # the reject reason for every path that leaves its root
NOT_A_FILE = "not_a_file"  # a fifo, socket or device: reading it could block or never end
LINK_LOOP = "link_loop"  # a link to itself or to a folder above it: never listed, never read
UNREADABLE_FOLDER = "unreadable_folder"  # a folder this user may not list: what it holds is unknown
OS_METADATA = "os_metadata"  # a file or folder an operating system writes beside the data (`os_metadata`)
# By lower-cased name: what Finder, Explorer and macOS's zip leave in the folders they touch
_OS_NAMES = {".ds_store": "macOS Finder's folder settings", "thumbs.db": "Windows Explorer's thumbnail cache",
             "ehthumbs.db": "Windows Media Center's thumbnail cache", "desktop.ini": "Windows Explorer's folder settings",
             "__macosx": "macOS archive metadata (a zip's AppleDouble files)",
             "@eadir": "a Synology NAS's thumbnails and metadata", "icon\r": "macOS Finder's custom folder icon"}


def os_metadata(name: str) -> str | None:
    """What an operating system's metadata file or folder of this base name is, or None. Such files
    hold no data, but copies and zips put them everywhere: a Mac copying to an exFAT disk or a zip
    writes an AppleDouble `._x.JPEG` beside every `x.JPEG`, with the image's extension. Judged by the
    name alone, never read: macOS gives AppleDouble files, and only them, the `._` prefix."""
    if name.startswith("._") and len(name) > 2:
        return f"macOS AppleDouble metadata of {name[2:]}"
    if name.startswith(".trashed-"):  # Android's MediaStore: `.trashed-{expiry}-{name}`
        return "Android's trash (a deleted file kept for 30 days)"
    if name.startswith(".pending-"):
        return "Android's file being written (not complete)"
    return _OS_NAMES.get(name.lower())


HIDDEN_FILE = "hidden_file"  # a hidden name that is no OS metadata: an editor's lock, a sync or NFS temporary, `.git/`
_HIDDEN_WHAT = "hidden (a tool's lock, temporary or repository file)"


def set_aside(name: str) -> PathProblem | None:
    """(reason, what it is) when a listed file or folder of this base name is no data of any
    layout: an operating system's metadata (`os_metadata`), or a hidden name (`hidden_file`: a
    leading '.', or Office's `~$` owner files, which Windows hides). Such entries are counted,
    never opened, never paired as a frame, view or label, and a folder is never descended into:
    a tool's state (`.~lock.x#`, `.nfs000...`, `.git/`) is not an unexpected file the user put
    there by mistake, and a hidden file read as an image would only fail to decode."""
    what = os_metadata(name)
    if what:
        return PathProblem(OS_METADATA, what)
    if name.startswith((".", "~$")) and name not in (".", ".."):
        return PathProblem(HIDDEN_FILE, _HIDDEN_WHAT)
    return None


def names_below(walk_root: str, uri: str) -> list[str]:
    """The names on the way from `walk_root` (not included: a config's path may itself be hidden)
    down to `uri`."""
    return [n for n in uri[len(walk_root.rstrip("/")):].split("/") if n]


def set_aside_problem(walk_root: str, uri: str, folder: bool | None = None) -> PathProblem | None:
    """The reject's (reason, detail) when `uri`, a file or folder listed below `walk_root`, or
    a folder on its way there, is set aside (`set_aside`); None for data. `folder` says whether
    `uri` is a folder when the caller knows (a tar member is none); else the filesystem is asked."""
    names = names_below(walk_root, uri)
    for depth, name in enumerate(names):
        problem = set_aside(name)
        if problem:
            below = depth < len(names) - 1 or (fsio.isdir(uri) if folder is None else folder)
            shown = "/".join(names[: depth + 1]) + ("/" if below else "")
            return PathProblem(problem.reason, f"{shown_name(shown)[1:-1]}: {problem.detail}, not read")
    return None


def collapse_set_aside(walk_root: str, uris: list[str]) -> list[str]:
    """A recursive listing with the files below a set-aside folder (`__MACOSX/`, `@eaDir/`,
    `.git/`) replaced by that folder, once, where the first of them stood: one item to count."""
    kept: list[str] = []
    folders: set[str] = set()
    for uri in uris:
        names = names_below(walk_root, uri)
        depth = next((d for d, n in enumerate(names[:-1]) if set_aside(n)), None)
        if depth is None:
            kept.append(uri)
            continue
        folder = fsio.join(walk_root, *names[: depth + 1])
        if folder not in folders:
            folders.add(folder)
            kept.append(folder)
    return kept


class OutsideRoot(Exception):
    """A name that would leave the source root; `detail` never names the target."""

    reason = OUTSIDE_ROOT

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotAFile(OutsideRoot):
    """Inside the root, but a fifo, socket or device rather than a file or folder."""

    reason = NOT_A_FILE


class Unreadable(OutsideRoot):
    """Inside the root, but the operating system will not even say what it is (a path longer than
    it takes, a failing disk): never opened."""

    reason = "unreadable_file"


class LinkLoop(OutsideRoot):
    """Inside the root, but a link that leads back to itself or to a folder above it: read as a
    folder it shows its parent's folders again as its own (Omnidata's `rgb/replica -> .` was read
    as buildings `replica/replica`, `replica/taskonomy` holding no file, without a word)."""

    reason = LINK_LOOP


class UnreadableFolder(OutsideRoot):
    """Inside the root, but a folder the operating system will not list for this user (mode 000,
    another user's): its files cannot be counted, so the folder itself is the reject."""

    reason = UNREADABLE_FOLDER


class ConfiguredPathMissing(FileNotFoundError):
    """A folder or file that a config field other than `path` names (a disparity folder, a
    category, an annotation file) is not there. `field` lets `check` blame that field instead of
    the source path, which is fine; the message says what is there instead."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ConfiguredValueMismatch(ValueError):
    """A config value that the dataset shows no item can meet (`views: 24` where the objects hold
    12 views each): every item would be a reject, so `check` blames `field` and the message says
    what the data holds and the fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def names_found(entries: list[str], limit: int = 20) -> str:
    """The base names of listed files or folders (a trailing / kept), for a message saying what
    is there instead."""
    names = sorted((posixpath.basename(e.rstrip("/")) or e) + "/" * e.endswith("/") for e in entries)
    if not names:
        return "nothing"
    shown = ", ".join(shown_name(n, 60)[1:-1] for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def missing_under(field: str, root: str, name: str, what: str = "", hint: str = "") -> FileNotFoundError:
    """The error for `root`/`name` (named by config `field`) not being there. When `root` itself
    is missing the source path is to blame; otherwise `field` is, and the message lists what the
    nearest existing folder on the way holds. The climb stops at `root`; a name that leads out of
    it (an absolute `images_dir` elsewhere, a `..`) climbs to its first existing folder, but a
    filesystem's top (`/`, a bucket) is never listed: the message names the first folder on the
    way that is not there instead. A URL name (`s3://bucket/x`) is itself, as readers take it,
    never a folder under a local `root`."""
    if not fsio.isdir(root):
        return FileNotFoundError(f"{root} does not exist or is not a folder")
    top, target = _normal(root), _normal(name if "://" in name else fsio.join(root, name))
    where = "" if os.path.isabs(name) or "://" in name else f" under {root}"  # else: relative to root
    if _is_url(target) == _is_url(top) and _within(top, target, "/" if _is_url(top) else os.sep):
        folder = target
        while folder != top and not fsio.isdir(folder):
            folder = _parent(folder)
    else:
        gone, folder = target, target
        while not _is_top(folder) and not fsio.isdir(folder):
            gone, folder = folder, _parent(folder)
        if _is_top(folder):  # never listed: `/` would print the machine's top folders
            return ConfiguredPathMissing(field, f"{what}no {name}{where} ({gone} does not exist){hint}")
    entries = [d + "/" for d in fsio.list_dirs(folder)] + fsio.list_files(folder)
    return ConfiguredPathMissing(field, f"{what}no {name}{where} ({folder} holds: {names_found(entries)}){hint}")


def _normal(path: str) -> str:
    """`path` with `.`, `..` and doubled separators resolved (a local one made absolute)."""
    if _is_url(path):
        scheme, rest = path.split("://", 1)
        return f"{scheme}://{posixpath.normpath(rest)}".rstrip("/")
    return _local(path)


def _parent(path: str) -> str:
    return posixpath.dirname(path) if _is_url(path) else os.path.dirname(path)


def _is_top(path: str) -> bool:
    """A filesystem's top folder: `/` (a drive's root), or a URL's bucket."""
    if _is_url(path):
        return "/" not in path.split("://", 1)[1].strip("/")
    return os.path.dirname(path) == path


class PathProblem(NamedTuple):
    reason: str
    detail: str


# local paths spelled as URLs (fsspec's LocalFileSystem takes both): `local://` was taken for a remote
# URL, judged by its name alone, so a root `local:///x/ds` followed a link out of it (read the outside
# file) where `/x/ds` and `file:///x/ds` refused it `outside_root`
LOCAL_SCHEMES = ("file://", "local://")


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith(LOCAL_SCHEMES)


def _unscheme(path: str) -> str:
    """`path` without its `file://` or `local://` (normpath would make `file:///x` `file:/x`)."""
    for scheme in LOCAL_SCHEMES:
        if path.startswith(scheme):
            return path[len(scheme):]
    return path


def _local(path: str) -> str:
    return os.path.abspath(_unscheme(path))


def _within(root: str, path: str, sep: str) -> bool:
    root = root.rstrip(sep) or sep
    return path == root or path.startswith(root if root.endswith(sep) else root + sep)


_RESOLVED_KEY = ("sources.paths.resolved",)  # the run memo's entry holding the run's resolved folders
# entries (two a folder: its real path, its spelling under the root) kept per run or listing, the
# least recently used dropped first: a bound (~20 MB at most), never a growing heap. All dropped at
# 4,096, names in shuffled order over 4,000 folders resolved them 72,745 times (5.2 CPU-s, not 1.2)
_RESOLVED_MAX = 1 << 16
_NO_RUN: dict = {}  # `fsio.active_run_memo`'s answer outside a run
_SCOPE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("uvd_paths_resolved", default=None)


def _resolved() -> dict | None:
    """The resolved folders of the open `resolving` block or run (`fsio.run_memo`), else None (a
    folder is then resolved anew each time). Kept for one run or listing, never for the process:
    kept for the process (lru_cache), a folder relinked between two builds in one process (a Dask
    worker, a test session) was judged by the first build's links, so a name leading out now was
    read and one leading in was refused."""
    scope = _SCOPE.get()
    if scope is not None:
        return scope
    memo = fsio.active_run_memo(_NO_RUN)
    return None if memo is _NO_RUN else memo.setdefault(_RESOLVED_KEY, OrderedDict())


@contextlib.contextmanager
def resolving() -> Iterator[None]:
    """Inside the block each folder's links are resolved once (in the open run's memo where one is
    open): for a listing outside a run that joins many absolute names (`coco.load_index`, every
    source's `units` in `list_units`)."""
    if _resolved() is not None:
        yield
        return
    token = _SCOPE.set(OrderedDict())
    try:
        yield
    finally:
        _SCOPE.reset(token)


def _kept(key: tuple, compute: Callable[[], Any]) -> Any:
    """`compute()`, kept under `key` in the open run's or listing's resolved folders (`_resolved`),
    the least recently used dropped once `_RESOLVED_MAX` are kept."""
    kept = _resolved()
    if kept is None:
        return compute()
    value = kept.get(key, _NO_RUN)
    if value is _NO_RUN:
        value = kept[key] = compute()
        while len(kept) > _RESOLVED_MAX:
            try:
                kept.popitem(last=False)
            except KeyError:  # another thread of the run emptied it meanwhile
                break
    else:
        try:
            kept.move_to_end(key)
        except KeyError:  # dropped by another thread of the run meanwhile
            pass
    return value


_LINKS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("uvd_paths_links", default=None)


@contextlib.contextmanager
def recording_links() -> Iterator[dict[str, str]]:
    """Inside the block, each folder whose links a name was judged by is recorded with its real
    path (folder -> real path): a parse kept for the process (`fsio.cached_input`) that judged
    names so is still right only while they resolve the same (`links_unchanged`)."""
    token = _LINKS.set({})
    try:
        yield _LINKS.get()  # type: ignore[misc]
    finally:
        _LINKS.reset(token)


def links_unchanged(links: dict[str, str]) -> bool:
    """Whether every folder recorded by `recording_links` still resolves to the real path it had
    (once a run, in the open run's memo: a unit's check costs no filesystem call after the first)."""
    with resolving():
        return all(_real(folder) == real for folder, real in links.items())


def _record(links: dict[str, str] | tuple[tuple[str, str], ...]) -> None:
    recorded = _LINKS.get()
    if recorded is not None:
        recorded.update(links)


def _real(folder: str) -> str:
    """`os.path.realpath(folder)`, kept for the run (`_kept`): an export names few folders, and
    each resolve is a round trip per component on NFS."""
    real = _kept(("real", folder), lambda: os.path.realpath(folder))
    _record(((folder, real),))
    return real


def _respelled_inside(root: str, path: str) -> str | None:
    """An absolute local `path` written through another spelling of `root` (a linked parent:
    `/data -> /mnt/nfs/data`, macOS's `/tmp -> /private/tmp`, an exporter's `Path.resolve()`),
    spelled under `root`; None where its folder really lies outside `root`. Its folder is judged
    by where its links lead, its own name is kept (a link there is `check_inside`'s to judge)."""
    folder = _respelled_folder(root, os.path.dirname(path))
    return None if folder is None else os.path.join(folder, os.path.basename(path))


def _respelled_folder(root: str, folder: str) -> str | None:
    """`folder` spelled under `root`, or None; kept per folder for the run (`_kept`): every absolute
    name not written under the root asks (100,000 Label Studio `/data/upload/3/...` names took 8.7 s
    resolving both anew each time). A folder that leads out through a link below an alias of the root
    (`/alias/root/shared`, `shared` linked in, read with `follow_links`) is spelled resolving
    only up to the root, so `check_inside` judges that link as in the root's own spelling."""
    spelled, links = _kept(("respelled", root, folder), lambda: _respelling(root, folder))
    _record(links)  # also when kept: what judged it
    return spelled


def _respelling(root: str, folder: str) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """`_respelled_folder`'s answer, with the folders it resolved (`recording_links`)."""
    with recording_links() as links:
        spelled = _respelled(root, folder)
    return spelled, tuple(links.items())


def _respelled(root: str, folder: str) -> str | None:
    real_root, real_folder = _real(root), _real(folder)
    if _within(real_root, real_folder, os.sep):
        return os.path.normpath(os.path.join(root, os.path.relpath(real_folder, real_root)))
    above = folder
    while not _is_top(above):
        above = os.path.dirname(above)
        if _real(above) == real_root:
            return os.path.normpath(os.path.join(root, os.path.relpath(folder, above)))
    return None


def join_inside(root: str, name: str) -> str:
    """`root`/`name` for a name read from an annotation or index file; raises `OutsideRoot`
    when the name is a URL, climbs out with `..`, or is absolute and not inside `root` (an
    absolute name inside a local root, as Detectron2-style exports write them on the machine
    holding the data, is that file, also where written through another spelling of the root:
    `_respelled_inside`)."""
    if not isinstance(name, str) or not name:
        raise OutsideRoot("empty or non-text file name")
    if "\0" in name:
        raise OutsideRoot("file name holds a NUL byte")
    if name.startswith("/") and not _is_url(root):
        path = os.path.normpath(name)
        if _within(_local(root), path, os.sep):
            return path
        respelled = _respelled_inside(_local(root), path)
        if respelled is None:
            raise OutsideRoot(f"{shown_name(name)} is an absolute name outside the source root")
        return respelled
    # a `file://` or `local://` URL too (`_is_url` takes it for a local path): joined, it named `<root>/file:/x`
    if _is_url(name) or name.startswith(("/", "\\", *LOCAL_SCHEMES)) or (len(name) > 1 and name[1] == ":"):
        raise OutsideRoot(f"{shown_name(name)} is an absolute name")
    if _is_url(root):
        joined = posixpath.normpath(posixpath.join(root.split("://", 1)[1], name))
        base = posixpath.normpath(root.split("://", 1)[1])
        if not _within(base, joined, "/"):
            raise OutsideRoot(f"{shown_name(name)} climbs out of the source root")
        return f"{root.split('://', 1)[0]}://{joined}"
    local_root = _unscheme(root)
    joined = os.path.normpath(os.path.join(local_root, name))
    if not _within(_local(root), _local(joined), os.sep):
        raise OutsideRoot(f"{shown_name(name)} climbs out of the source root")
    return joined


def check_inside(root: str, path: str, follow_links: bool = False) -> None:
    """Raise `OutsideRoot` unless `path` stays inside `root` once every link is resolved.

    Remote filesystems have no links, so there the check is on the normalised name alone.
    With `follow_links` only the lexical check applies.
    """
    if _is_url(root) or _is_url(path):
        if not _is_url(path) or not _is_url(root):
            raise OutsideRoot(f"{shown_name(path)} is on another filesystem than the source root")
        # as listed names spell them: `memory://x` lists `memory:///x/...`, all outside_root before
        base, inside = (posixpath.normpath(fsio.listed_root(uri).split("://", 1)[1]) for uri in (root, path))
        if not _within(base, inside, "/"):
            raise OutsideRoot(f"{shown_name(relative_to_root(root, path))} lies outside the source root")
        return
    root, path = _local(root), _local(path)
    if not _within(root, path, os.sep):
        raise OutsideRoot(f"{shown_name(relative_to_root(root, path))} lies outside the source root")
    if not follow_links and not _within(os.path.realpath(root), os.path.realpath(path), os.sep) \
            and not hub_cache.is_cached_blob(root, path):
        raise OutsideRoot(f"{shown_name(relative_to_root(root, path))} is a link leading out of the source root "
                          f"(set follow_links: true to allow it)")
    try:
        mode = os.stat(path).st_mode  # follows links; never opens, so a fifo cannot block here
    except (FileNotFoundError, NotADirectoryError):
        return  # missing or dangling: the reader's own "missing" reject says so
    except OSError as exc:  # a path too long for the operating system, a failing disk
        if exc.errno == errno.ELOOP:  # `x -> x`, or a ring of links
            raise LinkLoop(f"{shown_name(relative_to_root(root, path))} is a link to itself (a loop), not read") from None
        raise Unreadable(f"{shown_name(relative_to_root(root, path))} cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode) and loops_back(path):
        raise LinkLoop(f"{shown_name(relative_to_root(root, path))} is a link to a folder above it (a loop), not read")
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = fsio.special_kind(mode) or "a fifo, socket or device"
        raise NotAFile(f"{shown_name(relative_to_root(root, path))} is {kind}, not a file (never opened)")
    if stat.S_ISDIR(mode) and (refused := fsio.unlistable(path)):
        raise UnreadableFolder(f"{shown_name(relative_to_root(root, path))} is a folder this user cannot list ({refused}): "
                               "give read and search access to it (chmod a+rX), or move it out of the source")


def loops_back(folder: str) -> bool:
    """Whether a local `folder` is a link that leads to one of the folders it lies in (`.`, `..`),
    by its name or, once the links on the way are resolved, by where it lies (`a/l/l` in a ring
    `a/l -> ../b`, `b/l -> ../a`): listed, it is its parent again, and a walk down it never ends."""
    if not os.path.islink(folder):
        return False
    real = os.path.realpath(folder)
    return _within(real, os.path.realpath(os.path.dirname(folder)), os.sep) or _within(real, _local(folder), os.sep)


def path_problem(root: str, path: str, follow_links: bool = False) -> PathProblem | None:
    """None when `path` is safe to read, else the reject's (reason, detail) (for loops that
    yield rejects)."""
    try:
        check_inside(root, path, follow_links)
    except OutsideRoot as exc:
        return PathProblem(exc.reason, exc.detail)
    return None


def folder_link_problem(root: str, path: str, follow_links: bool = False) -> PathProblem | None:
    """The reject of a local link to a folder listed as an entry (`fsio.list_files` lists a folder
    link unfollowed without `follow_links`): no file to read, its own `unexpected_file` saying
    so. Read as a file, it was an `unreadable_file` of Python's raw `IsADirectoryError`."""
    if follow_links or "://" in path or not os.path.islink(path) or not os.path.isdir(path):
        return None
    relative = unicodedata.normalize("NFC", relative_to_root(root, path))
    return PathProblem("unexpected_file", f"{shown_name(relative)} is a link to a folder, not followed: no file to "
                       "read (set follow_links: true to read the folder it leads to)")


def twin_to_read(root: str, twins: tuple[str, ...] | list[str], follow_links: bool = False) -> str | None:
    """Of files whose names one key takes, in `records.twin_order`, the one to read: the first that
    is a file to read (`twin_problem` None), else None (each then keeps its own reject). Taking the
    first by name alone read a dangling link or a fifo named in NFC and made the real file beside
    it, named in NFD, a `duplicate_key` reject of it."""
    return next((uri for uri in twins if twin_problem(root, uri, follow_links) is None), None)


def twin_problem(root: str, uri: str, follow_links: bool = False) -> PathProblem | None:
    """Why `uri`, one of a key's twins, is no file to read (its own reject, never `duplicate_key`),
    else None: set aside, a `path_problem`, a link to nothing, a folder, or, on a local disk, a
    file this user may not open (mode 000, another user's). Judged by its mode alone, a mode-000
    `x.png` was read, its frame `unreadable_file`, and the readable `x.PNG` beside it the
    `duplicate_key`."""
    problem = set_aside_problem(root, uri) or path_problem(root, uri, follow_links)
    if problem is not None:
        return problem
    shown = shown_name(unicodedata.normalize("NFC", relative_to_root(root, uri)))
    if not fsio.exists(uri):
        return PathProblem("not_a_file", f"{shown} is a link to nothing (dangling), not a file: not read")
    if fsio.isdir(uri):
        return PathProblem("not_a_file", f"{shown} is a folder, not a file: not read")
    refused = None if _is_url(uri) else _unopenable(_local(uri))
    return None if refused is None else PathProblem(
        "unreadable_file", f"{shown} cannot be opened by this user ({refused}): give read access to it (chmod a+r)")


def _unopenable(path: str) -> str | None:
    """Why this user cannot open a local file, else None. Opened and closed, never read (a fifo is
    never opened: `path_problem` refuses it first); `os.access` is no test, as it answers yes to
    root for a mode-000 file whatever the capabilities root runs without."""
    try:
        os.close(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def relative_to_root(root: str, path: str) -> str:
    """`path` as the source's root sees it (unchanged when it lies elsewhere): what a reject names,
    so that rejects never publish the machine's folders and stay the same when the data moves."""
    root = root.rstrip("/\\")
    if path.startswith(root + "/") or path.startswith(root + os.sep):
        return path[len(root) + 1:]
    if "://" in root and "://" in path:  # as listed: `memory://r` lists `memory:///r/x`
        listed = fsio.listed_root(root)
        if path.startswith(listed + "/"):
            return path[len(listed) + 1:]
    if root and "://" not in root and "://" not in path:
        # a root given relative (fsspec lists absolute names, `..` left in: /cwd/../data/...) or with `..`,
        # `./`, `//`: both compared normalised
        whole = os.path.normpath(os.path.abspath(os.path.expanduser(root)))
        plain = os.path.normpath(os.path.abspath(os.path.expanduser(path)))
        if plain.startswith(whole.rstrip(os.sep) + os.sep):
            return plain[len(whole.rstrip(os.sep)) + 1:]
    return path


def shown_name(name: str, limit: int = 120) -> str:
    """A name for a reject detail: printable, bounded, never the bytes of any file."""
    text = "".join(ch if ch.isprintable() else "?" for ch in name)
    return repr(text if len(text) <= limit else text[:limit] + "...")
