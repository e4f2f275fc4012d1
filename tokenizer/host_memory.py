"""glibc malloc settings for processes that run the CPU tokenizer (Linux only): a build whose
workers encode as threads or in process (`freed_memory_kept` around its pipeline), a build's worker
processes (`keep_for_good`, as the tokenizer loads in them), `tokenizer.evaluate` and the report's
reconstructions on CPU (around their loops). Not `tokenizer.fit`: a short fit (the tests') ran no
faster with it (9.0-9.2 s -> 9.7-10.4 s, two runs each).

A CPU encode allocates and frees the same few large activation buffers every batch (uvd-tiny at
batch 16: tensors of 32-130 MB). glibc hands each one back to the kernel when it is freed (an
mmap'd block is unmapped; a worker thread's own arena cannot hold a block over 64 MB at all), and
the kernel zero-fills it again at the next batch's first touch: 828,000 page faults and 28% of the
encode's CPU (1.29 of 4.61 CPU-s for 64 images, all of it system time) in the sample build's
Tokenize. Kept in a heap instead, the buffers are reused: 24,000 faults, 0.06 s.

So while such a build's pipeline runs: blocks come from a heap (`M_MMAP_MAX` 0) and freed memory
is kept (`M_TRIM_THRESHOLD`); after it, glibc's default values of both and of the mmap threshold
(128 KiB) are set again and the kept memory handed back (`malloc_trim`). Not as before, though:
setting any of them turns glibc's dynamic mmap threshold (raised to the size of the largest mmap'd
block freed, up to 32 MiB) off for the rest of the process. Nothing can give the caller that
back: glibc's `mallopt` of any of these settings sets its internal `no_dyn_threshold` flag, which
only a new process clears, and no call reads the threshold the dynamic rule had reached (probing by
allocation cannot tell either: a block over the threshold still comes from the heap's top when the
top is large enough). A library caller that needs it runs `run_build` in a child process or opts
out (below). A worker thread's own arena cannot hold a block over 64 MB: glibc still maps and
unmaps those, so the CPU codec keeps its activations under 32 MiB
(`tokenizer.codec.cpu_forward_images`). The number of arenas is left alone: glibc fixes its
limit the first time a thread needs a new arena, so one arena (`M_ARENA_MAX` 1, which kept those
blocks too) inside the block was one for the rest of the process; in builds it bought nothing
measurable. Measured (`uvd build`, 200 web images, tokenizer on, system CPU-s,
medians of 3 interleaved runs at load 4-11): 1 worker in process 6.09 -> 1.19 (1.31 with one
arena); 2 worker threads 6.84 -> 5.96 (6.76/6.84 -> 5.97/6.02 with one arena, 2 pairs).
RSS stays near the run's peak meanwhile, and the peak rises (the same builds, medians): +16% with
1 worker (1,035 -> 1,196 MiB), +13% with 2 threads (1,512 -> 1,704 MiB); the worst pair measured
+22% (1,030 -> 1,259 MiB, +229 MiB; 1 worker). Processes forked before the run (the early
render pool) keep the defaults: settings change in the process that makes them. The codes are the
same: only where freed memory goes changes.

A build's worker processes (`direct_running_mode: multi_processing`, and any runner's workers
that are not the process that made the graph) keep freed memory for good from when the CPU
tokenizer loads in them (`keep_for_good`): a worker process is the build's for its whole life, so
nothing needs giving back, and the decoder processes it starts keep glibc's defaults. 900 web
images, 2 worker processes, the tokenizer compiled (`uvd build`, two runs each): 78.3/79.8 ->
60.3/60.8 s, 126/129 -> 95/97 CPU-s, of it system time 29-30 -> 4.5; each worker's peak RSS
1,036-1,050 -> 1,094-1,395 MiB. `tokenizer.evaluate` of 64 photos at batch 16: 34.9 -> 20.0 s
(system time 16.8 -> 3.6 s), peak RSS 1.36 -> 2.09 GB: its decoder's activations (over 500 MB a
tensor at batch 16) stay in the heap between batches.

Blocks nest: only the outermost sets the settings and gives them back (a report's reconstructions
inside a build's block). Nothing is changed where the user tunes malloc (any `MALLOC_*`
environment variable, or `GLIBC_TUNABLES` with `glibc.malloc.*`: those settings stay as given) or
opts out (`UVD_KEEP_FREED_MEMORY=0`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, Mapping

log = logging.getLogger(__name__)

# <malloc.h>
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
KEEP = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**30))
# glibc's defaults (a fixed mmap threshold at its default: the dynamic one is not restorable)
DEFAULTS = ((M_MMAP_MAX, 65536), (M_TRIM_THRESHOLD, 128 * 1024), (M_MMAP_THRESHOLD, 128 * 1024))
OPT_OUT = "UVD_KEEP_FREED_MEMORY"  # "0": leave glibc's malloc as it is


def users_malloc_setting(environ: Mapping[str, str]) -> str | None:
    """The environment variable by which the user tunes glibc's malloc (or opts out), if any:
    the block would overwrite what it set, and could not give it back."""
    if environ.get(OPT_OUT, "").strip() == "0":
        return OPT_OUT
    tuned = sorted(name for name in environ if name.startswith("MALLOC_"))
    if tuned:
        return tuned[0]
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    return None


def _libc():
    """glibc, or None (another platform or C library: nothing to tune)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - glibc has both
    except (OSError, AttributeError):
        return None
    return libc


def _settable(enabled: bool = True):
    """glibc to set the settings through, or None: not asked, the user's own malloc settings (or
    opt-out), or no glibc."""
    users = users_malloc_setting(os.environ) if enabled else None
    if users is not None:
        log.debug("freed memory not kept for reuse: %s is set", users)
    return _libc() if enabled and users is None else None


_LOCK = threading.Lock()
_STATE = {"depth": 0, "took": False, "for_good": False}  # blocks open, what the outermost's settings did


@contextmanager
def freed_memory_kept(enabled: bool = True) -> Iterator[bool]:
    """Within the block, freed memory is kept for reuse (see the module docstring); yields whether
    the settings took (False: not asked, the user's own malloc settings, or no glibc; an inner
    block yields what the outermost's took). After `keep_for_good` nothing is given back."""
    libc = _settable(enabled)
    if libc is None:
        yield False
        return
    with _LOCK:
        if _STATE["depth"] == 0:
            _STATE["took"] = all(libc.mallopt(option, value) for option, value in KEEP)
        _STATE["depth"] += 1
        took = _STATE["took"]
    try:
        yield took
    finally:
        with _LOCK:
            _STATE["depth"] -= 1
            if _STATE["depth"] == 0 and not _STATE["for_good"]:
                for option, value in DEFAULTS:
                    libc.mallopt(option, value)
                libc.malloc_trim(0)


def keep_for_good() -> bool:
    """Keep freed memory for the rest of this process (a build's worker process, where the CPU
    tokenizer loads: the process is the build's for its whole life, so nothing is given back, not
    by a block ending either, and the processes it starts with exec, the decoders of
    `sources.budget`, keep glibc's defaults); whether the settings took (False: the user's own
    malloc settings, or no glibc)."""
    libc = _settable()
    if libc is None:
        return False
    with _LOCK:
        _STATE["for_good"] = all(libc.mallopt(option, value) for option, value in KEEP)
        return _STATE["for_good"]
