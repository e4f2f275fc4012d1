"""A Dask worker preload (`distributed.worker.preload`, as a cluster's operator would set it):
Ctrl-C, that is SIGINT to the whole process group as a terminal sends it, right after the Nth
input unit any worker of the build commits. Sent by a committing worker itself, so it always
comes while the build has work left (a test watching the output from outside came too late on a
fast machine). UVD_TEST_SIGNAL_FLAGS: a folder counting commits across the workers; its `sent`
says the signal went. UVD_TEST_SIGNAL_AFTER: N. UVD_TEST_SIGNAL_WORKERS: M, sent only once M
workers have joined the scheduler (a worker still starting on a busy machine is another case)."""

from __future__ import annotations

import os
import signal

from signal_at_commit import signal_after_commits


def dask_setup(worker) -> None:
    after = int(os.environ.get("UVD_TEST_SIGNAL_AFTER", "2"))
    workers = int(os.environ.get("UVD_TEST_SIGNAL_WORKERS", "0"))

    def send() -> None:
        if workers:
            from distributed import get_client

            get_client().wait_for_workers(workers, timeout=240)
        os.killpg(os.getpgid(0), signal.SIGINT)

    signal_after_commits(after, os.environ["UVD_TEST_SIGNAL_FLAGS"], send)
