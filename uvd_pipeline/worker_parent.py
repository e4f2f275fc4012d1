"""A local worker process ends with the build that started it.

Killed with `kill -9` (the OOM killer's pick, a scheduler's hard stop), a build left its local
worker processes running for 30-60 s, until gRPC noticed the lost runner, and one inside a bundle
that waits for a thread (a decoder pool's) ran on for as long as that took: decoding on, holding
memory, beside the rerun. The local runner (`local_runner`) names the build's process in each
worker's environment; the worker, as it starts (`beam_worker`), asks Linux to kill it when the
thread that started it ends (that thread waits on the worker for its whole life)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

BUILD_PID_ENV = "UVD_LOCAL_RUNNER_PID"  # set in a local worker's environment: the process that started it
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a local worker process (`BUILD_PID_ENV` set), SIGKILL on its parent's end (Linux); if the
    parent has already gone, end now. Elsewhere (Dataflow, Dask workers, macOS) nothing."""
    parent = os.environ.get(BUILD_PID_ENV, "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # it ended before the request: nobody would send the signal
        os._exit(1)
