"""Idle torch CPU threads sleep instead of spinning, unless the user chose how they wait.

Why: torch's OpenMP pool (GNU libgomp in the pip wheel) spins by default for 300,000 rounds
(`GOMP_SPINCOUNT`) after each parallel region before it sleeps. A CPU training step of the tiny
preset runs its parallel regions with Python in between (passive, its threads slept ~1,700 times a
step), so on a busy machine (a laptop with a browser, an IDE, a second build) the waiting thread
burns the core the other thread needs, and each region then waits for a thread the kernel has
descheduled. Measured on the 2-core development machine at load ~4 (20 steps of the trainer
demo's fit, medians of 3 interleaved runs): 42.0 s wall and 37.1 CPU-s spinning against 11.4 s
and 10.3 CPU-s passive; with 4 busy Python loops alongside (10 steps, medians of 2): 218 s and
40.2 CPU-s against 61 s and 7.7 CPU-s. The losses are the same bit for bit (the thread count,
and so the order of additions, is unchanged). `benchmarks/omp_wait_ab.py` measures it.

libgomp reads its environment once, when torch loads it, so this must run before `import torch`:
`trainer/__init__.py` calls it, which `python -m trainer.fit` / `trainer.demo` run first.
"""

from __future__ import annotations

import os
import sys
from typing import MutableMapping

# a user who set any of these chose how OpenMP threads wait (libgomp, LLVM/Intel OpenMP): theirs wins
USER_WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def prefer_passive_wait(environ: MutableMapping[str, str] = os.environ,
                        loaded: MutableMapping[str, object] = sys.modules) -> bool:
    """Set `OMP_WAIT_POLICY=PASSIVE` for this process (and the processes it starts) when torch is
    not loaded yet and the user set none of `USER_WAIT_SETTINGS`. Returns whether it set it (once
    torch is loaded its pool has read the environment: setting it then would change nothing here)."""
    if "torch" in loaded or any(name in environ for name in USER_WAIT_SETTINGS):
        return False
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True
