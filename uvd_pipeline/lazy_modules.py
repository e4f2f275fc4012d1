"""Lazy module attributes built once, before a process starts worker threads.

Beam's state cache weighs each side input it holds (`statecache.get_deep_size`, through objsize),
and objsize first walks `vars()` of every entry of `sys.modules` to leave module globals out. One
entry is no module: `_openssl.lib`, the cffi library of cryptography's bindings, which Beam imports
(`apache_beam.transforms.util` imports `cryptography.fernet`). Its first `vars()` builds its 565
functions and their C types (587 new objects), and cffi 2.1 builds them without a lock where the
GIL is on: when two worker threads weigh side inputs at once and a garbage collection in one of
them hands the GIL to the other (a `gc.callbacks` entry, a finaliser), both build the same type
and the process aborts (`realize_c_type.c:735: realize_c_type_or_func_lock_held: Assertion`,
rc -6): 1 run in 10-30 of three threads walking `sys.modules` at once; CI's `test_startup_gc`
build (2 worker threads, a Python `gc.callbacks` watcher) aborted in 3 of 4 full-suite runs.

`settle` does that walk once, in one thread, where a process has imported Beam and before its
workers start: the build's process as its run starts (`build_runner.heap_frozen`), each local
worker process before Beam's harness starts (`sdk_worker_main`), each Dask worker after its
imports (`dask_worker.import_ahead`). Later walks only read what is built (0 new objects)."""

from __future__ import annotations

import sys


def settle() -> int:
    """Build every lazy `__dict__` that `sys.modules` holds; returns how many entries were walked."""
    walked = 0
    for entry in list(sys.modules.values()):
        try:
            vars(entry)
        except Exception:  # noqa: BLE001 - no __dict__ (None for a failed import): objsize skips it too
            continue
        walked += 1
    return walked
