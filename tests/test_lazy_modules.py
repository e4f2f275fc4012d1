"""Lazy module attributes are built before worker threads start (`uvd_pipeline.lazy_modules`).

Beam's state cache walks `vars()` of every `sys.modules` entry from its worker threads; the first
walk builds cryptography's cffi library (`_openssl.lib`), which cffi 2.1 does without a lock, and
two threads doing it at once aborted the build (`realize_c_type.c:735` assertion, rc -6; CI's
`test_startup_gc`). Each process of a build now does that walk once before its threads start; a
walk afterwards builds nothing (a fresh process's first walk builds ~587 objects)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Prints how many objects one more walk of sys.modules, as Beam's state cache walks it, builds
# after PREPARE ran (the collector off: only what the walk keeps is counted).
MEASURE = """
import gc, sys
{prepare}
assert "_openssl.lib" in sys.modules, sorted(m for m in sys.modules if m.endswith(".lib"))
gc.disable()
def walk():
    for entry in list(sys.modules.values()):
        try:
            vars(entry)
        except TypeError:
            pass
before = len(gc.get_objects())
walk()
print("BUILT", len(gc.get_objects()) - before)
"""


def _built_by_a_walk_after(prepare: str) -> int:
    script = MEASURE.format(prepare=textwrap.dedent(prepare))
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr[-3000:]
    line, = [line for line in run.stdout.splitlines() if line.startswith("BUILT ")]
    return int(line.split()[1])


def test_a_first_walk_builds_cryptographys_cffi_library_and_settle_leaves_none_to_build():
    assert _built_by_a_walk_after("import apache_beam") > 500  # what two worker threads raced to build
    assert _built_by_a_walk_after("""
        import apache_beam
        from uvd_pipeline import lazy_modules
        assert lazy_modules.settle() > 1000
        """) == 0


def test_the_build_settles_as_its_run_starts():
    assert _built_by_a_walk_after("""
        import apache_beam
        from uvd_pipeline.build_runner import heap_frozen
        with heap_frozen():
            pass
        """) == 0


def test_a_local_worker_process_settles_before_beams_harness_starts():
    assert _built_by_a_walk_after("""
        from uvd_pipeline import sdk_worker_main
        sdk_worker_main.settled_harness()
        """) == 0


def test_a_dask_worker_settles_after_its_imports():
    assert _built_by_a_walk_after("""
        from uvd_pipeline import dask_worker
        dask_worker.import_ahead(("apache_beam",))
        """) == 0

