"""One writer per training run folder, and the sweep of what a killed writer left half-written.

`trainer.fit` and `tokenizer.fit` resume when run again on the same `--out`. A process killed while
it saved (SIGKILL, a preempted node, OOM) leaves its temporaries behind (`tokenizer.atomic` names
them `NAME.tmp-XXXXXXXX`, and a folder `.NAME.tmp-XXXXXXXX`): a whole model and optimizer each,
never read and never removed, so a run requeued often fills its disk. Only a process that knows no
other writer is alive may remove them (a second fit on the same folder is mid-save in exactly such
a name), so the run first takes an exclusive `flock` on `OUT/.writer.lock`: the kernel drops it
when its holder dies, however it dies, so a stale lock never needs clearing by hand. A second fit
on a held folder is refused at once, naming the holder's pid.

Standard library and `tokenizer.atomic` only: `trainer/` imports this, `tokenizer/` imports
nothing of ours (tests/test_layering.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from .atomic import file_temporary_target, folder_temporary_target

LOCK_NAME = ".writer.lock"


class FolderInUse(RuntimeError):
    """Another live process holds the run folder's writer lock."""


@contextlib.contextmanager
def sole_writer(folder: str, command: str) -> Iterator[None]:
    """Hold `folder`'s writer lock for the block (the folder is created when missing); raises
    `FolderInUse` naming the holder when another process has it. The lock file stays: removing it
    would let a third process lock a new file while the second still holds the old one."""
    os.makedirs(folder, exist_ok=True)
    handle = os.open(os.path.join(folder, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise FolderInUse(f"--out {folder}: another {command} (pid {holder}) is writing this run; wait for it to "
                              "finish (rerunning then resumes), or give another --out") from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(handle)  # drops the lock


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
        with contextlib.suppress(FileNotFoundError):
            if os.path.isdir(leftover.path):
                shutil.rmtree(leftover.path)
            else:
                os.unlink(leftover.path)
            removed.append(leftover)
    return removed


def describe_leftovers(leftovers: list[Leftover]) -> str:
    """'N temporaries (X MB): path, path' for a log line."""
    total = sum(item.bytes for item in leftovers)
    return (f"{len(leftovers)} temporar{'y' if len(leftovers) == 1 else 'ies'} ({total / 1e6:.1f} MB): "
            + ", ".join(item.path for item in leftovers))
