"""What the build's own local Dask cluster sets up in each of its worker processes (a worker
plugin, `uvd_pipeline.dask_cluster.scheduler`): imported only where the dask extra is installed.

- Beam's "apitools not found" warning: each worker logs it when it first imports Beam (every
  local Dask build printed it once per worker among its progress lines); the command keeps it out
  of its own log (`log_filters.BeamImportNoise`), the workers now do too.
- A worker the cluster closes after the build ends its process without freeing every module and
  object first: with Beam and torch imported that took 3-4 s on a busy 2-core machine, and the
  nanny, which waits 4 s, killed the workers ("Worker process still alive after 4.0 seconds,
  killing") while the build waited. Everything of the build's was committed by then; the
  process's exit functions registered since the worker started still run (those of `atexit`,
  such as `sources.budget`'s, which stops its decode workers), and a worker that fails rather than
  being closed exits as before, with its exit status.
- A task failed by a refusal (disk full, too many open files): the worker logged its traceback
  ("Compute Failed") above the command's one `error:` line (`log_filters.DaskRefusalNoise`).
- The build's modules (Beam and the steps' code) are imported in the plugin's setup, which a
  worker process runs before it joins the scheduler, so no task reaches it before they are whole;
  the cluster's workers start in the background (`dask_cluster.scheduler`) while the build's
  process builds and submits its graph. Before, the first task on each worker imported them as it
  was unpickled, after the graph was submitted. (Not in a thread beside the worker: Beam's packages
  import each other in a circle, and a thread importing them while a task was being unpickled in
  another order left each a half-initialised module, `ImportError: cannot import name
  'PipelineRunner' from partially initialized module`.) A module that fails to import is left to
  the task, which fails with it as before.
- Ctrl-C in a terminal reaches every process of its group: the workers died of it mid-task, each
  printing its tracebacks above the command's "interrupted:" line. The build's process owns it and
  closes the cluster, which ends the workers; they ignore SIGINT, and start with it blocked (a
  Ctrl-C while they still import is not theirs either).
- Ctrl-C, again: the cluster's close cancels the tasks each worker is running, and each worker
  logged "Async instruction for <Task cancelled ...> ended with CancelledError" (a warning that
  distributed says happens only in `Worker.close`) around the command's "interrupted:" line. A
  worker of the build's cluster that is closing leaves it out (`CancelledAtClose`).
- A worker killed mid-build (the OOM killer, `kill -9`) that another worker was fetching a result
  from: that worker logged "Worker stream died during communication" at ERROR with its chained
  tracebacks (27-33 lines, hunt58b) though the cluster recovers as designed (the scheduler runs
  the lost tasks again, the nanny restarts the worker, the build finishes). Left out unless
  `--verbose` (`PeerLost`); the scheduler's one warning of the lost worker stays.
- A closed worker whose closing then fails (the process's target raising after the teardown, or
  an exit function raising) ends with status 1 and one line saying why: the fast exit's status 0
  hid such failures from the nanny.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import signal
import sys
import threading
from multiprocessing import util

from importlib import import_module

from distributed.diagnostics.plugin import WorkerPlugin

from uvd_pipeline import lazy_modules

# What a build's tasks import as they are unpickled: Beam (its DaskRunner's bag steps) and the
# build's graph, which imports every step's module.
WARM_MODULES = ("apache_beam", "apache_beam.runners.dask.transform_evaluator", "uvd_pipeline.graph",
                "uvd_pipeline.dask_cluster")
log = logging.getLogger(__name__)


def import_ahead(modules: tuple[str, ...] = WARM_MODULES) -> None:
    """Import `modules` before the worker takes tasks (a failure is left to the task that needs it),
    with Python's cyclic collector held off meanwhile and what they made frozen after (as the
    command's own start does: `startup_gc`): the collector scanned the ~1,900 modules' objects
    again and again as they piled up (371 young, 33 middle and 3 full collections per worker)."""
    import gc

    collecting = gc.isenabled()
    gc.disable()
    try:
        for name in modules:
            try:
                import_module(name)
            except Exception as exc:  # noqa: BLE001 - the task that needs it fails with it, naming it
                log.debug("importing %s ahead of the tasks failed: %s", name, exc)
                return
        lazy_modules.settle()  # before the worker's task threads (see lazy_modules)
    finally:
        gc.freeze()  # what the imports made (modules; ~1k objects already garbage, <1 MiB) is never scanned again
        if collecting:
            gc.enable()


class BuildWorker(WorkerPlugin):
    """The worker plugin of the build's local cluster (see the module's docstring)."""

    name = "uvd-build-worker"

    def __init__(self) -> None:
        self.closed = False
        self.failure: BaseException | None = None  # what failed in the process after the teardown

    def setup(self, worker) -> None:
        if multiprocessing.parent_process() is not None:  # a worker process of its own, never the build's
            if threading.current_thread() is threading.main_thread():  # Ctrl-C is the build's process's
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                # started with it blocked (`dask_cluster._interrupts_left_to_the_build`): ignored from
                # now on, one that came meanwhile dropped, and the worker's own children as before
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            atexit.register(self._exit_at_once)  # before any module of the build registers its own: run after them
            util.Finalize(None, self._note_target_end, exitpriority=0)
            sys.unraisablehook = self._noting_failed_exit_functions(sys.unraisablehook)
        from uvd_pipeline.log_filters import BeamImportNoise, quiet_refused_tasks

        logging.getLogger().addFilter(BeamImportNoise())  # the record is made on the root logger itself
        logging.getLogger("distributed.worker.state_machine").addFilter(CancelledAtClose(worker))
        logging.getLogger("distributed.worker").addFilter(PeerLost())
        quiet_refused_tasks()  # a refusal's "Compute Failed" traceback: the command says it in one line
        if multiprocessing.parent_process() is not None:  # after the filter: Beam's import warns
            import_ahead()  # before the worker joins: no task is unpickled meanwhile

    def teardown(self, worker) -> None:
        self.closed = True  # closed by the cluster (the build's end), not failed

    def _note_target_end(self) -> None:
        """Run as the process's target ends (multiprocessing's exit function, in the `finally` of its
        bootstrap): an exception then in flight is the target's failure, its exit status 1."""
        failure = sys.exc_info()[1]
        if failure is not None and not (isinstance(failure, SystemExit) and failure.code in (0, None)):
            self.failure = self.failure or failure

    def _noting_failed_exit_functions(self, hook):
        """`sys.unraisablehook` noting an exit function that raised (Python reports it, then exits 0)."""
        def noting(unraisable) -> None:
            if (unraisable.err_msg or "").startswith("Exception ignored in atexit callback"):
                self.failure = self.failure or unraisable.exc_value
            hook(unraisable)
        return noting

    def _exit_at_once(self) -> None:
        if not self.closed:
            return
        logging.shutdown()
        sys.stdout.flush()
        status = 0
        if self.failure is not None:
            status = 1
            what = f"{type(self.failure).__name__}: {self.failure}" if str(self.failure) else type(self.failure).__name__
            sys.stderr.write(f"uvd build worker {os.getpid()}: closing failed after the cluster closed it ({what}); "
                             f"exit status {status}\n")
        sys.stderr.flush()
        os._exit(status)


class CancelledAtClose(logging.Filter):
    """Drops distributed's warning of a task cancelled by the worker's own close (Ctrl-C or the
    build's end closing the cluster): the build says it was interrupted. The same warning while
    the worker runs (a bug of distributed's, by its comment) is kept."""

    CANCELLED = "ended with CancelledError"

    def __init__(self, worker) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        from distributed.core import Status

        try:
            closing = self.worker.status in (Status.closing, Status.closing_gracefully, Status.closed)
            return not (closing and self.CANCELLED in record.getMessage())
        except Exception:  # noqa: BLE001 - a filter's error escapes the logging call: show the record
            return True


class PeerLost(logging.Filter):
    """Drops distributed's ERROR record of a fetch from a worker whose connection broke (it died):
    distributed handles it (the data is fetched elsewhere or computed again), and the scheduler's
    warning "Removing worker ... lose already computed task(s)" says it in one line. Kept where
    distributed logs at INFO, as with `--verbose` (the command sets `DASK_LOGGING__DISTRIBUTED` to
    warning otherwise, inherited by the local cluster's workers)."""

    DIED = "Worker stream died during communication"

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return logging.getLogger("distributed").isEnabledFor(logging.INFO) or not str(record.msg).startswith(self.DIED)
        except Exception:  # noqa: BLE001 - a filter's error escapes the logging call: show the record
            return True
