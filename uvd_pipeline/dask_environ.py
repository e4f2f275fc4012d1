"""The caller's process environment, given back after the build's local Dask cluster.

distributed's nanny writes into its own process's `os.environ` what its worker processes must
inherit as they start (`distributed.nanny.pre-spawn-environ`: MALLOC_TRIM_THRESHOLD_=65536,
OMP_NUM_THREADS, MKL_NUM_THREADS and OPENBLAS_NUM_THREADS =1; PYTHONHASHSEED=6640 where it was
unset or 0; and `__DASK_PARENT_PID`, for the workers' process titles), and never takes it back. The
nannies of the build's local cluster live in the build's process: a program that called `run_build`
with `runner: dask` found those six variables set afterwards, and every process it started later
inherited one-thread numeric libraries, glibc trimming at 64 KiB and a fixed string hash seed.

The values must stay while the cluster lives (a nanny whose worker died starts a new one, which
must inherit the same), so they are taken back when the last local cluster of the process closes,
and only where a variable still holds what a nanny wrote: one that the program itself set
meanwhile, in any thread, is its own and stays.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator, Mapping

PROCESS_TITLE_VARIABLE = "__DASK_PARENT_PID"  # distributed.proctitle.enable_proctitle_on_children

_LOCK = threading.Lock()
_clusters = 0  # local clusters alive in this process (builds may run in threads side by side)
_before: dict[str, str] = {}  # the environment as the first of them found it
_written: dict[str, str] = {}  # what their nannies wrote (or will write) into it


@contextmanager
def callers_environment_kept() -> Iterator[None]:
    """While a local cluster lives: its nannies' writes stay (`note_nanny_writes`); after the last
    one closes, each variable a nanny wrote is as the caller had it (unset, or its value)."""
    global _clusters
    with _LOCK:
        if _clusters == 0:
            _before.clear()
            _before.update(os.environ)
            _written.clear()
        _clusters += 1
    try:
        yield
    finally:
        with _LOCK:
            _clusters -= 1
            if _clusters == 0:
                _give_back(_before, _written)


def note_nanny_writes(pre_spawn: Mapping[str, str]) -> None:
    """What a nanny of this process writes into `os.environ` as it starts a worker process: its
    pre-spawn variables and the process-title one (the build's process id)."""
    with _LOCK:
        _written.update(pre_spawn)
        _written[PROCESS_TITLE_VARIABLE] = str(os.getpid())


def _give_back(before: Mapping[str, str], written: Mapping[str, str]) -> None:
    """Each variable that still holds what a nanny wrote goes back to its value in `before`."""
    for name, value in written.items():
        if os.environ.get(name) != value or before.get(name) == value:
            continue  # changed since by the program, or the caller's own value all along
        if name in before:
            os.environ[name] = before[name]
        else:
            del os.environ[name]
