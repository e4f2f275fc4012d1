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
and only where a variable still holds what a nanny wrote (`environ_loan`): one that the program
itself set meanwhile to another value, in any thread, is its own and stays.
"""

from __future__ import annotations

import os
from typing import Mapping

from uvd_pipeline.environ_loan import EnvironmentLoan

PROCESS_TITLE_VARIABLE = "__DASK_PARENT_PID"  # distributed.proctitle.enable_proctitle_on_children

_NANNIES = EnvironmentLoan()
callers_environment_kept = _NANNIES.kept  # around the life of a local cluster


def note_nanny_writes(pre_spawn: Mapping[str, str]) -> None:
    """What a nanny of this process will write into `os.environ` as it starts a worker process
    (it read `pre_spawn` from the environment as it was made): its pre-spawn variables and the
    process-title one (the build's process id)."""
    _NANNIES.note({**pre_spawn, PROCESS_TITLE_VARIABLE: str(os.getpid())})
