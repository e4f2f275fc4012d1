"""How a worker process of the build's local Dask cluster ends once the cluster has closed it
(`uvd_pipeline.dask_worker`): targets of spawned processes, as the nanny spawns its workers."""

from __future__ import annotations

import atexit


def _an_exit_function_that_fails() -> None:
    raise RuntimeError("the decode workers did not stop")


def closed_by_the_cluster(then: str) -> None:
    """A worker's process: the plugin set up, the worker closed (its teardown), and then `then`:
    "nothing" more, a "step" of the closing that fails, or an "exit function" that fails."""
    from uvd_pipeline.dask_worker import BuildWorker

    plugin = BuildWorker()
    plugin.setup(None)
    if then == "exit function":  # registered after the plugin's, as the build's modules register theirs
        atexit.register(_an_exit_function_that_fails)
    plugin.teardown(None)
    if then == "step":
        raise RuntimeError("closing the worker's connections failed")
