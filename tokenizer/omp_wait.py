"""Idle torch CPU threads spin briefly, then sleep, unless the user chose how they wait.

Why: torch's OpenMP pool (GNU libgomp in the pip wheel) spins by default for 300,000 rounds
(`GOMP_SPINCOUNT`) after each parallel region before it sleeps. A CPU training step of the tiny
preset runs its parallel regions with Python in between (passive, its threads slept ~1,700 times a
step), so on a busy machine (a laptop with a browser, an IDE, a second build) the waiting thread
burns the core the other thread needs, and each region then waits for a thread the kernel has
descheduled. Measured on the 2-core development machine at load ~4 (20 steps of the trainer
demo's fit, medians of 3 interleaved runs): 42.0 s wall and 37.1 CPU-s spinning against 11.4 s
and 10.3 CPU-s passive; with 4 busy Python loops alongside (10 steps, medians of 2): 218 s and
40.2 CPU-s against 61 s and 7.7 CPU-s. But on an idle machine sleeping at once cost 30% (40 steps,
medians of 2, load 1.5: 11.7 s passive, 9.0 s spinning), where a short spin (`GOMP_SPINCOUNT=10000`)
cost 2% (9.2 s) and kept most of the gain under load (load ~6.8, 20 steps: 23.6 s and 14.4 CPU-s
against 54.3 s and 31.2 spinning, 21.4 s and 10.7 passive). So the short spin. The losses are the
same bit for bit (the thread count, and so the order of additions, is unchanged).
`benchmarks/omp_wait_ab.py` measures it.

libgomp reads its environment once, when torch loads it, so this must run before `import torch`:
`trainer/__init__.py` calls it, which `python -m trainer.fit` / `trainer.demo` run first, and so
do `tokenizer/fit.py` (`make tokenizer`) and `uvd report` (its reconstructions decode on 2 threads).
It lives here, not in `trainer/`, because `uvd_pipeline` may import `tokenizer` but not the trainer.
"""

from __future__ import annotations

import os
import sys
from typing import MutableMapping

SHORT_SPIN = "10000"  # rounds an idle libgomp thread spins before it sleeps (libgomp's default: 300,000)
# a user who set any of these chose how OpenMP threads wait (libgomp, LLVM/Intel OpenMP): theirs wins
USER_WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def prefer_short_spin(environ: MutableMapping[str, str] = os.environ,
                        loaded: MutableMapping[str, object] = sys.modules) -> bool:
    """Set `GOMP_SPINCOUNT=SHORT_SPIN` for this process (and the processes it starts) when torch is
    not loaded yet and the user set none of `USER_WAIT_SETTINGS`. Returns whether it set it (once
    torch is loaded its pool has read the environment: setting it then would change nothing here)."""
    if "torch" in loaded or any(name in environ for name in USER_WAIT_SETTINGS):
        return False
    environ["GOMP_SPINCOUNT"] = SHORT_SPIN
    return True
