"""A Dask worker preload (`distributed.worker.preload`, as a cluster's operator would set it):
Ctrl-C, that is SIGINT to the whole process group as a terminal sends it, right after the Nth
input unit any worker of the build commits. Sent by a committing worker itself, so it always
comes while the build has work left (a test watching the output from outside came too late on a
fast machine). UVD_TEST_SIGNAL_FLAGS: a folder counting commits across the workers; its `sent`
says the signal went. UVD_TEST_SIGNAL_AFTER: N."""

from __future__ import annotations

import os
import signal

from signal_at_commit import signal_after_commits


def dask_setup(worker) -> None:
    after = int(os.environ.get("UVD_TEST_SIGNAL_AFTER", "2"))
    signal_after_commits(after, os.environ["UVD_TEST_SIGNAL_FLAGS"], lambda: os.killpg(os.getpgid(0), signal.SIGINT))
