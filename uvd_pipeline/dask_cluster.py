"""The Dask scheduler a `runner: dask` build talks to: the configured one, or a local cluster.

A local cluster is separate worker processes (no memory shared with the build's process) behind a
scheduler on 127.0.0.1, started for one build and stopped after it, so a local Dask build meets
what a real cluster does: pickled work, shuffles between processes, lost workers. An existing
scheduler (`beam.dask.address`: one deployed with dask-kubernetes, dask-jobqueue or by hand) is
used as it is and left running.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from uvd_pipeline.config import DaskConfig

log = logging.getLogger(__name__)


def memory_limit(value: str) -> str | int:
    """The config's memory limit in the form LocalCluster takes ('auto', bytes text, or 0)."""
    return 0 if value == "0" else value


@contextmanager
def scheduler(settings: DaskConfig) -> Iterator[str]:
    """Yield the scheduler address; a local cluster started here is closed on exit."""
    if settings.address:
        yield settings.address
        return
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=settings.workers, threads_per_worker=settings.threads_per_worker,
                           memory_limit=memory_limit(settings.memory_limit), processes=True,
                           host="127.0.0.1", dashboard_address=None, silence_logs=logging.WARNING)
    log.info("local Dask cluster at %s: %d workers x %d threads", cluster.scheduler_address,
             settings.workers, settings.threads_per_worker)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()
