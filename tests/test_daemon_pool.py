"""The daemon-thread pool a process shares (the GPU Tokenize stage's PNG decodes)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from conftest import REPO
from uvd_pipeline.daemon_pool import DaemonPool, PerProcess


def test_results_errors_and_parallel_work():
    pool = DaemonPool(3, "test-pool")
    assert [f.result() for f in [pool.submit(pow, i, 2) for i in range(20)]] == [i * i for i in range(20)]
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result()
    # three at once, not one after another: each waits for the other two (one after another, the
    # first would wait alone until the barrier's deadlock guard breaks it)
    together = threading.Barrier(3, timeout=30)
    for future in [pool.submit(together.wait) for _ in range(3)]:
        future.result()
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("test-pool"))
    with pytest.raises(ValueError, match="at least one worker"):
        DaemonPool(0, "none")


def test_a_forked_child_cannot_use_the_parents_pool():
    pool = DaemonPool(1, "test-fork")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            pool.submit(int)
            os.write(write, b"0")
        except RuntimeError:
            os.write(write, b"1")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"


def test_a_command_that_used_the_decode_pool_leaves_at_once():
    """`cli.leave` skips the interpreter's teardown unless a thread that is not a daemon lives: the
    decode pool (alive for the process's life) must not be one. The script ends with the pool's
    threads busy on a task that never ends: leaving must not wait for it (a process that waited
    would never exit, and the run's timeout fails the test)."""
    script = (
        "import threading\n"
        "from uvd_pipeline.tokenize_stage import decode_pool\n"
        "from uvd_pipeline.cli import leave\n"
        "pool = decode_pool()\n"
        "pool.submit(threading.Event().wait)\n"
        "leave(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 3, done.stderr


def test_per_process_value_is_made_once_and_again_in_a_forked_child():
    made = []
    value = PerProcess(lambda: made.append(1) or object())
    first = value.get()
    assert value.get() is first and len(made) == 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child makes its own (the parent's threads did not cross the fork)
        os.write(write, b"1" if value.get() is not first and len(made) == 2 else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1" and value.get() is first
