"""A Dask worker preload (`distributed.worker.preload`, as a cluster's operator would set it):
Ctrl-C, that is SIGINT to the whole process group as a terminal sends it, right after the Nth
input unit any worker of the build commits. Sent by a committing worker itself, so it always
comes while the build has work left (a test watching the output from outside came too late on a
fast machine). UVD_TEST_SIGNAL_FLAGS: a folder counting commits across the workers; its `sent`
says the signal went. UVD_TEST_SIGNAL_AFTER: N."""

from __future__ import annotations

import os
import signal
import uuid


def dask_setup(worker) -> None:
    from uvd_pipeline import unit_store

    flags = os.environ["UVD_TEST_SIGNAL_FLAGS"]
    after = int(os.environ.get("UVD_TEST_SIGNAL_AFTER", "2"))
    commits = os.path.join(flags, "commits")
    os.makedirs(commits, exist_ok=True)
    commit = unit_store.UnitWriter.commit

    def commit_then_signal(self, outputs, record):
        digest = commit(self, outputs, record)
        open(os.path.join(commits, uuid.uuid4().hex), "wb").close()
        if len(os.listdir(commits)) >= after:
            try:
                os.close(os.open(os.path.join(flags, "sent"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return digest
            os.killpg(os.getpgid(0), signal.SIGINT)
        return digest

    unit_store.UnitWriter.commit = commit_then_signal
