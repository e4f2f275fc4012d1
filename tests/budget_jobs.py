"""Jobs for the budget worker's tests: stuck in C code, hungry for memory, or well behaved."""

from __future__ import annotations

import ctypes
import os
import time
from contextlib import contextmanager
from typing import Iterator


def sleep_in_c() -> None:
    """Blocks in pause(2): no Python-level timeout or signal handler gets it out."""
    ctypes.CDLL(None).pause()


def tell_then_sleep_in_c(path: str) -> None:
    """`sleep_in_c`, once a file at `path` says the job has started."""
    with open(path, "w") as handle:
        handle.write("started")
    sleep_in_c()


def allocate(mb: int) -> int:
    block = bytearray(mb * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(30)
    return len(block)


def count(n: int):
    for i in range(n):
        yield i * i


def fail() -> None:
    raise ValueError("bad input")


def crash() -> None:
    os.abort()


def pid() -> int:
    return os.getpid()


def arrays(n: int):
    """Frames as a decoding job yields them: (index, a contiguous array, a non-contiguous view)."""
    import numpy as np

    for i in range(n):
        frame = np.full((48, 64, 3), i, np.uint8)
        yield i, frame, frame[:, ::2]


def stamped(n: int):
    """Items of 100 kB with the time each was made (the clock is shared across processes)."""
    import numpy as np

    for i in range(n):
        yield i, time.monotonic(), np.zeros(100_000, np.uint8)


def spin(seconds: float) -> float:
    """Works (CPU) for `seconds` of this process's CPU time, in Python."""
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass
    return time.process_time() - start


def digest(data: bytes) -> tuple[str, int]:
    import hashlib

    return type(data).__name__, int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


def exhaust_files() -> int:
    """Lower this worker's open-file limit (RLIMIT_NOFILE, as `ulimit -n` does) to the descriptors
    it holds: its next open meets a real EMFILE from the kernel. Returns the soft limit it had."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)  # a new descriptor takes the lowest number free
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    return soft


def restore_files(soft: int) -> None:
    """Give this worker back the open-file limit `exhaust_files` took."""
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


@contextmanager
def no_file_to_spare() -> Iterator[None]:
    """This process with no descriptor left to open (`exhaust_files`, as a low `ulimit -n` or a
    burst of open files leaves it): the kernel's own EMFILE inside the block, its limit back after."""
    soft = exhaust_files()
    try:
        yield
    finally:
        restore_files(soft)


def head_reads(job: str, *args) -> tuple[int, object]:
    """How many times `job` (a worker task, named as `budget.run` names it), run inside this task,
    read a file's first bytes (`fsio._head_bytes`: one ranged read each from a remote store), and
    what it returned."""
    from sources import budget, fsio

    reads = []
    real = fsio._head_bytes

    def counted(uri: str, size: int) -> bytes:
        reads.append(size)
        return real(uri, size)

    fsio._head_bytes = counted
    try:
        result = budget._resolve(job)(*args)
    finally:
        fsio._head_bytes = real
    return len(reads), result


def start_sleeper() -> int:
    """Starts a program that outlives the job (as Ghostscript, which Pillow's EPS reader runs), and
    returns its pid."""
    import subprocess

    return subprocess.Popen(["sleep", "60"]).pid


def spin_in_steps(steps: int, step_s: float):
    """Works `step_s` CPU seconds per item, `steps` items: a decode that streams its frames, each
    soon after the last, so its parent never waits long for one."""
    start = time.process_time()
    for i in range(steps):
        spin(step_s)
        yield i, time.process_time() - start
