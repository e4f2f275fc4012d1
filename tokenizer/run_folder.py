"""One writer per training run folder, and the sweep of what a killed writer left half-written.

`trainer.fit` and `tokenizer.fit` resume when run again on the same `--out`. A process killed while
it saved (SIGKILL, a preempted node, OOM) leaves its temporaries behind (`tokenizer.atomic` names
them `NAME.tmp-XXXXXXXX`, and a folder `.NAME.tmp-XXXXXXXX`): a whole model and optimizer each,
never read and never removed, so a run requeued often fills its disk. Only a process that knows no
other writer is alive may remove them (a second fit on the same folder is mid-save in exactly such
a name), so the run first takes an exclusive `flock` on `OUT/.writer.lock`: the kernel drops it
when its holder dies, however it dies, so a stale lock never needs clearing by hand. A second fit
on a held folder is refused at once, naming the holder's pid (where the holder could open the lock
file only read-only, as a group member resuming a run another member started, it records none).

A filesystem that cannot lock files at all (Lustre mounted without `-o flock`, some FUSE and CIFS
mounts) runs the fit unlocked, with a warning, and sweeps nothing: a temporary there may be a live
writer's. On NFS or Lustre a lock is not seen by other hosts unless the mount shares it, so there
one host at a time must write an `--out`.

Standard library and `tokenizer.atomic` only: `trainer/` imports this, `tokenizer/` imports
nothing of ours (tests/test_layering.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from .atomic import file_temporary_target, folder_temporary_target

LOCK_NAME = ".writer.lock"


class RunFolderError(RuntimeError):
    """The run folder cannot be written by this fit; the message names `--out` and why."""


class FolderInUse(RunFolderError):
    """Another live process holds the run folder's writer lock."""


class FolderUnwritable(RunFolderError):
    """The run folder (or its lock file) cannot be created or written: read-only, or not ours."""


# flock() refused by the filesystem itself, for good (Lustre without -o flock: ENOSYS; some
# FUSE/CIFS: EOPNOTSUPP), not by another holder. Not NFS's ENOLCK (its lock daemon unreachable, often
# for a moment): a fit run unlocked then had its live temporaries swept by the next one that locked
_NO_FLOCK = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP)


@dataclass(frozen=True)
class Hold:
    """What `sole_writer` got: `locked` is False where the filesystem cannot lock files, and then
    `warning` says so (two fits are not kept apart, and killed saves' temporaries must stay: one
    could be a live writer's)."""

    locked: bool
    warning: str = ""


@contextlib.contextmanager
def sole_writer(folder: str, command: str) -> Iterator[Hold]:
    """Hold `folder`'s writer lock for the block (the folder is created when missing); raises
    `FolderInUse` naming the holder when another process has it, `FolderUnwritable` where the
    folder or its lock file cannot be made. The lock file stays after a block that ends well. A
    block that fails takes back what this call made: the lock file, and the folder and its parents
    where they did not exist and it left them empty (a fit refused before its first step left an
    `--out` holding only `.writer.lock`). A process that opened a lock file removed so before it
    locked it sees that and starts over: otherwise it would hold a lock no later process sees; so
    does one whose folder was taken back before it opened the lock file (ENOENT there), and a
    folder made again on such a retry is this call's to take back too."""
    made: list[str] = []
    lock_path = os.path.join(folder, LOCK_NAME)
    for _ in range(_LOCK_TRIES):
        made = _deepest_first(made + _missing_folders(folder))
        new_lock = made or not os.path.lexists(lock_path)
        _make_folder(folder)
        try:
            handle, writable = _open_lock(folder)
        except FileNotFoundError:  # a writer that failed took the folder back after we made it
            continue
        try:
            hold = _lock(handle, writable, folder, command)
            if hold.locked and not _still_linked(handle, lock_path):
                continue  # a writer that failed removed it while we waited: lock the folder anew
            if not os.access(folder, os.W_OK | os.X_OK):  # a lock file there already let it this far
                raise _unwritable(folder, PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
            if hold.locked and writable:  # where it is read-only the holder stays unnamed
                try:
                    os.ftruncate(handle, 0)
                    os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
                except OSError as exc:  # a full disk: one reason on every rank, not a traceback on one
                    raise _unwritable(folder, exc) from None
            try:
                yield hold
            except BaseException:
                if hold.locked and new_lock:  # held: no other writer can be using what we remove
                    _take_back(folder, made)
                raise
            finally:
                if hold.locked and writable:  # no stale pid to name after a clean exit
                    with contextlib.suppress(OSError):
                        os.ftruncate(handle, 0)
            return
        finally:
            os.close(handle)  # drops the lock
    raise FolderInUse(f"--out {folder}: its writer lock was removed {_LOCK_TRIES} times while this {command} "
                      "waited for it (other fits refused on it?); try again, or give another --out")


_LOCK_TRIES = 5


@contextlib.contextmanager
def made_folder(folder: str) -> Iterator[None]:
    """`folder` made, with its missing parents, for the block; a block that fails removes those this
    call made that it left empty (`FolderUnwritable` where they cannot be made). For a process that
    writes a run folder another holds the lock of (a torchrun rank other than 0): on another host,
    its own disk, it made `--out` anew, and a refusal there left that folder behind empty."""
    made = _missing_folders(folder)
    _make_folder(folder)
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            for path in made:
                os.rmdir(path)  # one holding anything stops it here (OSError)
        raise


def _missing_folders(folder: str) -> list[str]:
    """`folder` and those of its parents that do not exist yet, deepest first."""
    missing = []
    path = os.path.abspath(folder)
    while not os.path.lexists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def _deepest_first(paths: list[str]) -> list[str]:
    """`paths` without repeats, deepest first (the order `_take_back` can remove them in)."""
    return sorted(set(paths), key=lambda path: path.count(os.sep), reverse=True)


def _still_linked(handle: int, lock_path: str) -> bool:
    """Whether the lock file we hold is still the one at `lock_path` (not removed by `_take_back`)."""
    try:
        here, held = os.stat(lock_path), os.fstat(handle)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)


def _take_back(folder: str, made: list[str]) -> None:
    """Remove the lock file `sole_writer` made and the folders it made that a failed block left
    empty; anything else is kept as it is. Safe while the lock is held: a process that opened the
    file meanwhile finds it unlinked once it locks it (`_still_linked`) and starts over."""
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(folder, LOCK_NAME))
        for path in made:
            os.rmdir(path)  # one holding anything (a log of steps run) stops it here (OSError)


def _unwritable(folder: str, exc: OSError) -> FolderUnwritable:
    what = "a read-only filesystem" if exc.errno == errno.EROFS else exc.strerror or str(exc)
    return FolderUnwritable(f"--out {folder}: cannot write the run folder there ({what}): a fit writes its "
                            "checkpoints and log in it; give a folder you can write")


def _make_folder(folder: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise _unwritable(folder, exc) from None


def _open_lock(folder: str) -> tuple[int, bool]:
    """The lock file's descriptor and whether it is writable (FileNotFoundError where the folder has
    gone since it was made). Created 0o666 less the umask, so a
    group-shared run folder stays resumable by its group; a lock file another user made and we may
    not write is opened read-only (flock needs no write access), the pid then left unwritten."""
    path = os.path.join(folder, LOCK_NAME)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666), True
    except FileNotFoundError:  # the folder just made is gone: `sole_writer` starts over
        raise
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM):  # EROFS included: a fit could write nothing
            raise _unwritable(folder, exc) from None
        refused = exc
    try:
        return os.open(path, os.O_RDONLY), False
    except FileNotFoundError:  # not there, and we may not create it: the folder is not ours to write
        raise _unwritable(folder, refused) from None
    except OSError as exc:
        raise _unwritable(folder, exc) from None


def _lock(handle: int, writable: bool, folder: str, command: str) -> Hold:
    """Take the lock, or say why the folder runs unlocked; `FolderInUse` where another holds it.
    NFS refuses an exclusive lock on a read-only descriptor (EBADF): unlocked there too."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(handle, folder, command) from None
    except OSError as exc:
        if exc.errno == errno.EBADF and not writable:  # NFS: no exclusive lock through a read-only descriptor
            raise FolderUnwritable(f"--out {folder}: its {LOCK_NAME} is not ours to write, and this filesystem "
                                   "(NFS) locks only what one may write, so a fit writing it now could not be "
                                   "told apart: ask its owner to make it group-writable (chmod g+w), or give "
                                   "another --out") from None
        if exc.errno == errno.ENOLCK:
            raise FolderUnwritable(f"--out {folder}: its writer lock cannot be taken now ({exc.strerror}: an NFS "
                                   "lock daemon out of reach?); try again, or give another --out") from None
        if exc.errno not in _NO_FLOCK:
            raise _unwritable(folder, exc) from None
        return Hold(False, f"--out {folder}: this filesystem cannot lock files ({exc.strerror}), so two fits on "
                           "it are not kept apart (start one at a time) and temporaries that killed saves left "
                           "there are not removed (one could be a live fit's)")
    return Hold(True)


def _in_use(handle: int, folder: str, command: str) -> FolderInUse:
    holder = os.pread(handle, 64, 0).decode("ascii", "replace").strip()
    who = f"pid {holder}" if holder else "its pid unrecorded: it could not write the lock file"
    return FolderInUse(f"--out {folder}: another {command} ({who}) is writing this run; wait for it to "
                       "finish (rerunning then resumes), or give another --out")


@dataclass(frozen=True)
class Leftover:
    """A temporary of a killed writer: its path and the bytes it held."""

    path: str
    bytes: int


def _size(path: str) -> int:
    if not os.path.isdir(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(parent, name)) for parent, _, names in os.walk(path) for name in names)


def file_leftovers(folder: str, targets: Iterable[str]) -> list[Leftover]:
    """Files in `folder` that are `tokenizer.atomic` temporaries of one of the file names `targets`
    (`train_state.pt.tmp-1a2b3c4d`); nothing else, whatever its name."""
    wanted = set(targets)
    if not os.path.isdir(folder):
        return []
    found = [os.path.join(folder, name) for name in sorted(os.listdir(folder))
             if file_temporary_target(name) in wanted]
    return [Leftover(path, _size(path)) for path in found if os.path.isfile(path)]


def folder_leftovers(folder: str, is_target: Callable[[str], bool]) -> list[Leftover]:
    """Folders in `folder` that `tokenizer.atomic` made beside a target name `is_target` accepts:
    one being written (`.NAME.tmp-X`) or removed (`.NAME.del-X`), and an old one moved aside
    (`.NAME.old-X`) only where NAME exists again (killed between the two renames, the old one is
    still the only copy, and is left)."""
    if not os.path.isdir(folder):
        return []
    found = []
    for name in sorted(os.listdir(folder)):
        parsed = folder_temporary_target(name)
        path = os.path.join(folder, name)
        if parsed is None or not is_target(parsed[0]) or not os.path.isdir(path):
            continue
        if parsed[1] == "old" and not os.path.isdir(os.path.join(folder, parsed[0])):
            continue
        found.append(Leftover(path, _size(path)))
    return found


def remove_leftovers(leftovers: Iterable[Leftover]) -> list[Leftover]:
    """Remove each leftover (call only while holding the folder's `sole_writer` lock); returns
    those removed."""
    removed = []
    for leftover in leftovers:
        try:
            if os.path.isdir(leftover.path):
                shutil.rmtree(leftover.path)
            else:
                os.unlink(leftover.path)
        except FileNotFoundError:
            continue
        except OSError as exc:  # another user's (a group-shared folder): left, said, the fit goes on
            print(f"note: could not remove {leftover.path} ({exc.strerror or exc}): leave it to its owner",
                  file=sys.stderr)
            continue
        removed.append(leftover)
    return removed


def describe_leftovers(leftovers: list[Leftover]) -> str:
    """'N temporaries (X MB): path, path' for a log line."""
    total = sum(item.bytes for item in leftovers)
    return (f"{len(leftovers)} temporar{'y' if len(leftovers) == 1 else 'ies'} ({total / 1e6:.1f} MB): "
            + ", ".join(item.path for item in leftovers))


def log_records(path: str) -> tuple[list[tuple[str, dict]], int]:
    """`path`'s JSON-lines log as (line, record) pairs, and how many lines were dropped: a line
    that is no JSON object (a crash or a full disk cut the last append short, or left it NULs)
    would make a resume a traceback, and holds no step to keep. Blank lines are skipped, not
    counted; each kept line ends in a newline."""
    if not os.path.isfile(path):
        return [], 0
    with open(path, "rb") as handle:
        lines = [line for line in handle if line.strip()]
    records = [(line, _record(line)) for line in lines]
    kept = [(line.decode("utf-8").rstrip("\n") + "\n", record) for line, record in records if record is not None]
    return kept, len(lines) - len(kept)


def _record(line: bytes) -> dict | None:
    try:
        record = json.loads(line.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError included
        return None
    return record if isinstance(record, dict) else None


def dropped_note(path: str, dropped: int) -> str:
    """The note a resume prints for the lines `log_records` dropped."""
    return (f"note: {path}: dropped {dropped} line{'' if dropped == 1 else 's'} that {'is' if dropped == 1 else 'are'} "
            "no whole JSON record (an append cut short by a crash or a full disk)")
