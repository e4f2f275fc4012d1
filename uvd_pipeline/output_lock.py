"""One writer per build output: a lock file, and the run's temporary folder inside the output.

`OUT/_lock.json` names the build holding the output (host, pid, the process's start, the run's
start time and id). It is created exclusively, whole: on a local disk written beside and
hard-linked into place (`_link_exclusive`: no reader sees it empty); elsewhere
fsspec's write-if-absent mode (`"xb"`), which object stores implement with a conditional write
(s3fs and gcsfs: If-None-Match / ifGenerationMatch=0); a filesystem without it falls back to
"check, write, read back", which two builds starting within the same moment can both pass.

A second build on a locked output fails at once, naming the holder. A lock whose holder ran on this
host and is gone (its pid is dead, or now belongs to a process started later) is stale: the next
build takes it over with a warning. A holder on another host cannot be checked from here: if it
is dead, pass `--force-unlock` to `build` (or delete `OUT/_lock.json` by hand).

A task commits into the output only while the lock names its run (`check_held`): a task of a
build that is gone, still running on a worker that outlives it (a given Dask scheduler's), commits
nothing into an output that another build has taken since, or that nobody holds.

Temporaries of a run live under `OUT/_tmp/<run id>/` when the output is on a local (or shared)
disk; the run that takes the lock next removes every other run's folder there, since no other
writer can be alive. The folder needs room for one shard per worker writing at once.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import shutil
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from sources import fsio
from uvd_pipeline.config import ConfigError
from tokenizer.atomic import temporary_name
from uvd_pipeline.state_files import read_state_json

log = logging.getLogger(__name__)
LOCK_FILE = "_lock.json"
LOCK_MAX_BYTES = 64 << 10  # ours hold a host, a pid, a time and a run id: ~150 bytes
TMP_DIR = "_tmp"
UNREADABLE_GRACE_S = 60.0  # a lock file still empty this long after it was made is a crashed start


class OutputLocked(ConfigError):
    """Another build holds the output."""


@dataclass(frozen=True)
class LockHolder:
    host: str
    pid: int
    started: str  # when the run began (UTC, ISO 8601)
    run_id: str
    pid_start: int | None = None  # the process's start (Linux clock ticks since boot): catches pid reuse

    @classmethod
    def this_process(cls) -> "LockHolder":
        now = datetime.datetime.now(datetime.timezone.utc)
        run_id = f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
        return cls(socket.gethostname(), os.getpid(), now.isoformat(timespec="seconds"), run_id,
                   _process_start(os.getpid()))

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, started {self.started}, run {self.run_id}"

    def is_alive(self) -> bool | None:
        """Whether the holder still runs: None when that cannot be known here (another host)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, another user's
        if self.pid_start is not None:
            now = _process_start(self.pid)
            if now is not None and now != self.pid_start:
                return False  # the pid was reused by a later process
        return True


def _process_start(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode(errors="replace")
        return int(text.rsplit(")", 1)[1].split()[19])  # field 22 (starttime), after "pid (comm)"
    except (OSError, ValueError, IndexError):
        return None


def lock_uri(output: str) -> str:
    return fsio.join(output, LOCK_FILE)


def read_holder(output: str) -> LockHolder | None:
    """Who holds the output's lock (None: nobody, or a lock file that cannot be read)."""
    try:
        raw = read_state_json(lock_uri(output), LOCK_MAX_BYTES)
        return LockHolder(str(raw["host"]), int(raw["pid"]), str(raw["started"]), str(raw["run_id"]),
                          raw.get("pid_start"))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def _create_exclusive(uri: str, data: bytes) -> bool:
    """Write `data` to `uri` unless it exists; True if this call made the file."""
    local = fsio.local_path(uri)
    if local is not None:
        return _link_exclusive(local, data)
    fs, path = fsio.filesystem(uri)
    try:
        with fs.open(path, "xb") as handle:
            handle.write(data)
        return True
    except FileExistsError:
        return False
    except (ValueError, NotImplementedError, TypeError):
        pass  # no write-if-absent here: check, write, read back (a race of simultaneous starts remains)
    if fs.exists(path):
        return False
    fs.pipe_file(path, data)
    return fs.cat_file(path) == data


def _link_exclusive(local: str, data: bytes) -> bool:
    """`_create_exclusive` on a local disk: the lock is written whole to a temporary beside it, then
    hard-linked into place (which fails if a lock is there, as `O_EXCL` does), so it is never seen
    empty or half-written: an `O_EXCL` file was there empty until its write, and a reader of that
    moment (`verify`, another build) took it for a lock that names nobody. A disk without hard links
    gets `O_EXCL` and a write, as before."""
    temporary = temporary_name(local)
    try:  # a full disk fails the write: nothing is left behind (an O_EXCL lock stayed there empty)
        # 0o644 whatever the umask, as the O_EXCL lock was (open()'s 0o666 made it writable by all)
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, local)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network and FUSE disks)
            pass
    finally:
        with contextlib.suppress(FileNotFoundError):  # swept by the holder's start (its `.tmp-` sweep)
            os.unlink(temporary)
    try:
        fd = os.open(local, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def _age_seconds(uri: str) -> float | None:
    fs, path = fsio.filesystem(uri)
    try:
        modified = fs.modified(path)
    except (FileNotFoundError, NotImplementedError, OSError):
        return None
    if modified.tzinfo is None:
        return time.time() - modified.timestamp()
    return (datetime.datetime.now(datetime.timezone.utc) - modified).total_seconds()


def _remove_lock(output: str, expected: LockHolder | None) -> None:
    """Remove the lock file if it still is `expected`'s (None: an unreadable one). Locally the file is
    first renamed aside, so two builds taking over the same stale lock cannot both remove it: the
    second finds a new lock, moves it back and retries."""
    uri = lock_uri(output)
    local = fsio.local_path(uri)
    if local is None:
        if read_holder(output) == expected:
            fs, path = fsio.filesystem(uri)
            fs.rm_file(path)
        return
    aside = f"{local}.taken-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(local, aside)
    except FileNotFoundError:
        return
    try:
        raw = read_state_json(aside, LOCK_MAX_BYTES)
        moved = LockHolder(str(raw["host"]), int(raw["pid"]), str(raw["started"]), str(raw["run_id"]),
                           raw.get("pid_start"))
    except (OSError, ValueError, KeyError, TypeError):
        moved = None
    if moved != expected:
        try:
            os.link(aside, local)  # put the newer lock back, unless yet another one is there
        except FileExistsError:
            pass
    os.unlink(aside)


class OutputLock:
    """The output's lock, held by this process; `release()` (or leaving the `with`) gives it back."""

    def __init__(self, output: str, holder: LockHolder) -> None:
        self.output = output
        self.holder = holder

    @property
    def run_id(self) -> str:
        return self.holder.run_id

    def __enter__(self) -> "OutputLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def release(self) -> None:
        """Remove this run's temporary folder and the lock (only if it is still this run's)."""
        remove_run_temporaries(self.output, self.run_id)
        if read_holder(self.output) == self.holder:
            fs, path = fsio.filesystem(lock_uri(self.output))
            try:
                fs.rm_file(path)
            except FileNotFoundError:
                pass


def acquire(output: str, force: bool = False) -> OutputLock:
    """Take the output's lock or raise `OutputLocked` naming the build that holds it. A stale lock
    (holder on this host and gone) is taken over with a warning; `force` takes any lock."""
    fs, root = fsio.filesystem(output)
    try:
        fs.makedirs(root, exist_ok=True)
    except (FileExistsError, NotADirectoryError, PermissionError) as exc:  # `build.check_output` says more
        raise ConfigError(f"output: cannot make the folder {output} ({exc.strerror or exc}); name a folder "
                          "the build can make") from None
    uri = lock_uri(output)
    mine = LockHolder.this_process()
    data = (json.dumps(asdict(mine), indent=1, sort_keys=True) + "\n").encode()
    starting: UnreadableLock | None = None  # an unreadable lock a build may be writing, seen last
    seen: dict[tuple[int, ...], list[str]] = {}  # the processes found writing it: asked again alone
    for _ in range(5):
        starting = None
        if _create_exclusive(uri, data):
            return OutputLock(output, mine)
        holder = read_holder(output)
        if holder is None:
            unreadable = unreadable_lock(output, seen)
            if unreadable is None:
                continue  # gone, or written, between the two calls: try again
            if force or not unreadable.starting:
                log.warning("removing the unreadable lock file %s (%.0f s old%s)", uri, unreadable.age,
                            ", open in no process of this user" if unreadable.open_now is False else "")
                _remove_lock(output, None)
                continue
            starting = unreadable
            time.sleep(0.5)  # a build may be writing it right now
            continue
        alive = holder.is_alive()
        if force:
            log.warning("--force-unlock: removing the lock of %s on %s", holder.describe(), output)
        elif alive is False:
            log.warning("taking over the stale lock of %s on %s: that process is gone", holder.describe(), output)
        else:
            if alive:
                hint = "its process runs on this host: wait for it to end, or stop it"
            else:
                hint = (f"wait for it to end; if it is dead (host {holder.host} cannot be checked from here), "
                        f"run again with --force-unlock, or delete {uri}")
            raise OutputLocked(f"output {output} is locked by another build ({holder.describe()}); {hint}")
        _remove_lock(output, holder)
    if starting is not None:
        raise OutputLocked(_unreadable_lock_message(starting))
    raise OutputLocked(f"could not take the lock {uri}: other builds keep taking it")


def _unreadable_what(uri: str) -> str:
    """What is wrong with a lock file `read_holder` could not read: empty, or no lock in it."""
    fs, path = fsio.filesystem(uri)
    try:
        return "empty" if fs.size(path) == 0 else "not readable as a lock (no host, pid and run id in it)"
    except (FileNotFoundError, OSError):
        return "unreadable"


# filesystems whose files processes of other hosts (or of another kernel) may hold open, unseen in
# this host's /proc: statfs's f_type (linux/magic.h; virtiofs and the FUSE ones share FUSE's)
REMOTE_FILESYSTEMS = {
    0x6969: "nfs", 0x517B: "smb", 0xFF534D42: "cifs", 0xFE534D42: "smb2", 0x65735546: "fuse",
    0x01021997: "9p", 0x00C36400: "ceph", 0x5346414F: "afs", 0x6B414653: "afs", 0x73757245: "coda",
    0x7461636F: "ocfs2", 0x01161970: "gfs2", 0x0BD00BD0: "lustre", 0x47504653: "gpfs", 0x786F4256: "vboxsf",
}


def _filesystem_type(local: str) -> int | None:
    """statfs's f_type of the filesystem holding `local` (None: not asked here)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buffer = ctypes.create_string_buffer(256)  # struct statfs: f_type (a long) first, < 128 bytes in all
        if libc.statfs(os.fsencode(local), buffer) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return ctypes.c_ulong.from_buffer(buffer).value & 0xFFFFFFFF


def _held_open(local: str, seen: dict[tuple[int, ...], list[str]] | None = None) -> bool | None:
    """Whether a process of this host has the file `local` open for writing (by device and inode,
    through `/proc/<pid>/fd`); None where that cannot be told, and the age rule judges the file: no
    `/proc`, a file of another user (whose build's descriptors this user cannot list), a process
    whose descriptors this user may not list, or a network or FUSE disk (a process of another host
    holds it unseen). Skipping what it could not list answered 'open in no process' for another
    user's build starting, and a build took its lock over at once (rev58d M1).

    Only the processes of the file's owner are looked at (the build that created it is one), and
    `seen` (device, inode and change times -> the pids found holding it) lets a caller asking again
    look at those alone: a scan of every process cost 1.08 s on a host of 6,150, and `acquire` asked up to 5 times
    (rev58d L3). No other process can come to write an existing lock: only its creator writes it."""
    try:
        target = os.stat(local)
    except OSError:
        return None
    if target.st_uid != os.geteuid() or _filesystem_type(local) in (None, *REMOTE_FILESYSTEMS):
        return None
    # with its change time: ext4 and tmpfs give a freed inode number to the next file at once, and a
    # new build's starting lock in the old one's place was taken for it (its writer never looked
    # for) and removed under it (rev58f L1, 4 of 4 on ext4)
    key = (target.st_dev, target.st_ino, target.st_ctime_ns, target.st_mtime_ns)
    if seen is not None and key in seen:
        pids = seen[key]
    else:
        try:
            pids = [name for name in os.listdir("/proc") if name.isdigit()]
        except OSError:
            return None
    holders = []
    for pid in pids:
        try:
            if os.stat(f"/proc/{pid}").st_uid != target.st_uid:
                continue  # another user's: it did not create this file
            fds = os.listdir(f"/proc/{pid}/fd")
        except PermissionError:
            return None
        except OSError:  # gone
            continue
        for fd in fds:
            try:
                found = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if (found.st_dev, found.st_ino) != key[:2]:
                continue
            try:
                writing = _open_for_writing(pid, fd)
            except PermissionError:
                return None
            except OSError:  # closed since
                continue
            if writing:
                holders.append(pid)
                break
    if seen is not None:
        seen[key] = holders
    return bool(holders)


def _open_for_writing(pid: str, fd: str) -> bool:
    """Whether descriptor `fd` of `pid` was opened for writing (`/proc/<pid>/fdinfo/<fd>`'s flags):
    a build writes its lock through such a one; a reader (`tail -f`, `less`) held an empty lock
    'open' and kept every build off the output for as long as it ran (rev58d L2)."""
    with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as handle:
        for line in handle.read(4096).decode(errors="replace").splitlines():
            if line.startswith("flags:"):
                return int(line.split()[1], 8) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
    return True  # no flags told: counted, as before


@dataclass(frozen=True)
class UnreadableLock:
    """A lock file that is there but names no holder: a build starting, or a start killed between
    creating it and writing it; `acquire` waits the first out and removes the second, and the
    commands that read an output judge it alike (`verify` and `report` took an empty one for
    'nobody holds it'). On a local disk a build of this version never shows its lock unwritten
    (`_link_exclusive`); an earlier version's writes it through the descriptor it created it with,
    so such a file is a start only while a process has it open for writing (`open_now`; where that
    cannot be told, its age judges it). Its age alone (the
    judge elsewhere) is what `cp -r` makes young again: a copied output's stale empty lock held it
    for `UNREADABLE_GRACE_S` more."""

    uri: str
    what: str  # "empty", "not readable as a lock (...)"
    age: float  # seconds since it was written
    open_now: bool | None = None  # whether a process of this host has it open (None: cannot be told here)

    @property
    def starting(self) -> bool:
        """Whether a build may still be writing it: `acquire` refuses to take it over yet."""
        if self.open_now is not None:
            return self.open_now
        return self.age <= UNREADABLE_GRACE_S

    def describe(self) -> str:
        if self.starting and self.open_now:
            return (f"its lock file {self.uri} is {self.what} and a process of this host has it open: a build is "
                    f"starting; a build takes it over once no process has it open")
        if self.open_now is False:
            return (f"its lock file {self.uri} is {self.what}, and no process of this user on this host has it "
                    f"open: a build "
                    f"was killed while writing it, or it was copied so; it holds nothing, and the next build "
                    f"removes it")
        if self.starting:
            return (f"its lock file {self.uri} is {self.what}, {self.age:.0f} s old: a build is starting, or one "
                    f"was killed while writing it; a build takes it over once it is {UNREADABLE_GRACE_S:.0f} s old")
        return (f"its lock file {self.uri} is {self.what}, {self.age:.0f} s old: most likely a build was killed "
                f"while writing it; it holds nothing, and the next build removes it")


def unreadable_lock(output: str, seen: dict[tuple[int, ...], list[str]] | None = None) -> UnreadableLock | None:
    """The output's lock file when it is there and `read_holder` names nobody from it (None: no
    lock file, or a readable one). A file whose age cannot be told counts as just written. `seen`:
    `_held_open`'s, kept by a caller that asks again."""
    uri = lock_uri(output)
    try:
        if read_holder(output) is not None:
            return None
        what = _unreadable_what(uri)
    except OSError as exc:  # the system refuses it (no permission, a failing disk)
        what = f"unreadable ({exc.strerror or type(exc).__name__})"
    age = _age_seconds(uri)
    if age is None and not fsio.exists(uri):
        return None
    local = fsio.local_path(uri)
    open_now = _held_open(local, seen) if local is not None else None
    return UnreadableLock(uri, what, 0.0 if age is None else max(0.0, age), open_now)


def _unreadable_lock_message(lock: UnreadableLock) -> str:
    """Why a lock file that stays empty or unreadable blocks the build, and what to do: open in a
    process of this host (an earlier version's build writing it), or, where that cannot be asked,
    young (a build writes its lock within a moment of creating it, so one still unreadable after
    the retries most likely belongs to a start killed in between)."""
    uri, what, age = lock.uri, lock.what, lock.age
    if lock.open_now:
        return (f"could not take the lock {uri}: the lock file is {what} and a process of this host has it open "
                f"(a build starting, or stopped while writing it); run again once it has closed it, or, if no "
                f"other build is starting on this output, run again with --force-unlock (or delete {uri})")
    wait = max(1, math.ceil(UNREADABLE_GRACE_S - age))
    return (f"could not take the lock {uri}: the lock file is {what}, {age:.0f} s old; most likely a build was "
            f"killed while writing it. A build takes such a file over once it is {UNREADABLE_GRACE_S:.0f} s old: "
            f"wait {wait} s and run again, or, if no other build is starting on this output, run again with "
            f"--force-unlock (or delete {uri})")


# -- a run's commits ---------------------------------------------------------------------------
LOCK_REREAD_S = 0.1  # how long a commit reads the lock again before it takes it for lost


class LockLost(RuntimeError):
    """A task of a run that no longer holds the output's lock was about to commit into it."""


def current_run(output: str) -> str | None:
    """The run id of the build holding `output`'s lock now (None: nobody): what the build's graph
    gives its committing steps, in the build's process, right after it took the lock."""
    holder = read_holder(output)
    return holder.run_id if holder is not None else None


def check_held(output: str, run_id: str | None) -> None:
    """Raise `LockLost` unless run `run_id` still holds `output`'s lock (None: no check). Called by a
    task right before it writes a commit into the output (a unit's files, a shard's tar, a token
    shard): a task of a build that was stopped, or failed, can run on where the workers outlive the
    build (a given Dask scheduler), and committed into the output after its lock was released, even
    into a fresh `--overwrite` build of it. One read of the lock file a commit; a commit that
    starts within the moment a new build takes the lock over can still land."""
    if run_id is None:
        return
    holder = read_holder(output)
    deadline = time.monotonic() + LOCK_REREAD_S
    while (holder is None or holder.run_id != run_id) and time.monotonic() < deadline:
        time.sleep(0.005)  # a takeover of a stale lock moves a live one aside for a moment: read again
        holder = read_holder(output)
    if holder is None or holder.run_id != run_id:
        now = f"it is held by run {holder.run_id}" if holder is not None else \
            "no build holds it, or this worker cannot read its lock file"
        raise LockLost(f"{output}: run {run_id} no longer holds the output's lock ({now}): a task of that run "
                       "commits nothing there")


# -- the run's temporaries ---------------------------------------------------------------------
def run_tmp(output: str) -> str | None:
    """This run's temporary folder (made if needed) when `output` is on a disk this process sees
    and a build holds its lock; None otherwise (callers then use the system's temporary folder)."""
    local = fsio.local_path(output)
    if local is None:
        return None
    holder = read_holder(output)
    if holder is None:
        return None
    folder = os.path.join(local, TMP_DIR, holder.run_id)
    os.makedirs(folder, exist_ok=True)
    return folder


def remove_run_temporaries(output: str, run_id: str) -> None:
    """Remove a run's temporary folder, and `OUT/_tmp/` once it is empty."""
    local = fsio.local_path(output)
    if local is not None:
        shutil.rmtree(os.path.join(local, TMP_DIR, run_id), ignore_errors=True)
        try:
            os.rmdir(os.path.join(local, TMP_DIR))
        except OSError:
            pass  # not there, or not empty


def remove_dead_runs(output: str, keep: str) -> tuple[int, int]:
    """Remove every run folder under `OUT/_tmp/` but `keep` (call only while holding the lock: no
    other run can be alive). Returns (files, bytes) removed."""
    local = fsio.local_path(output)
    root = os.path.join(local, TMP_DIR) if local is not None else None
    if root is None or not os.path.isdir(root):
        return 0, 0
    files = size = 0
    for name in sorted(os.listdir(root)):
        if name == keep:
            continue
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            for folder, _, names in os.walk(path):
                for file in names:
                    files += 1
                    try:
                        size += os.lstat(os.path.join(folder, file)).st_size
                    except OSError:
                        pass
            shutil.rmtree(path, ignore_errors=True)
        else:
            files += 1
            size += os.lstat(path).st_size
            os.unlink(path)
    return files, size
