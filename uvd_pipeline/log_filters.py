"""Log filters the command and the build's Dask workers share: a module of its own so that a
worker sets them up without importing the command (its config models and shard readers); and
what keeps Beam's workers from printing the traceback of an error the command says in one line."""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Any, Callable, Iterable

from uvd_pipeline.interrupts import aftermath, under_way
from uvd_pipeline.refusals import refusal


class BeamImportNoise(logging.Filter):
    """Beam's import warns, on the root logger, that its BigQuery client libraries are missing
    (every build printed "apitools not found, ..."): no step of ours uses BigQuery, so the line
    only alarms people. Shown with --verbose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and str(record.msg).startswith("apitools not found"))


# the command's log lines, and its local worker processes' (`sdk_worker_main`)
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
LOG_DATEFMT = "%H:%M:%S"


class BeamWorkerNoise(logging.Filter):
    """What Beam's SDK harness logs as a local worker process starts, about its own set-up: that it
    made its log handler, that it has no staging folder (a local worker needs none), and the runner's
    own flags its options do not know ("Discarding unparseable args": the build refuses a flag no
    Beam option knows before it starts, `config_beam`)."""

    CHATTER = (("__main__", "Logging handler created"), ("__main__", "No semi_persistent_directory found"),
               ("apache_beam.options.pipeline_options", "Discarding unparseable args"))

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(record.name == name and str(record.msg).startswith(start) for name, start in self.CHATTER)


def _refused(error: BaseException) -> bool:
    """Whether `error` is one the command says in one `error:` line (`refusals.refusal`: the
    operating system's refusal, this machine's error), not a bug whose traceback must be seen.
    Never raises: an error met judging (a worker out of memory, say) counts as a bug, so that
    Beam answers, prints and logs the bundle as it would without us."""
    try:
        return refusal(error, None) is not None
    except Exception:
        return False


class BeamRefusalNoise(logging.Filter):
    """Beam logs a failed bundle at ERROR with its whole traceback before the build fails with the
    same error: for a refusal of the operating system (`os_refusal`: disk full, read-only, size
    limit) or an error of this machine (`machine_error`: too many open files, a missing TMPDIR)
    the command's own `error:` line says what and where, so the traceback only buries it.
    Shown with --verbose. Never raises: a filter's exception escapes the logging call, and from
    Beam's `_execute` that left the bundle unanswered (the record is then shown)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("apache_beam") or record.levelno < logging.ERROR:
            return True
        try:
            error = record.exc_info[1] if record.exc_info and record.exc_info[1] else Exception(record.getMessage())
        except Exception:  # a message its arguments do not fit: logging reports it when it formats
            return True
        return not _refused(error)


def broken_channel(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from or while handling, is gRPC's `RpcError`: what
    the runner's stream readers raise when a worker process's end of the stream goes away (killed:
    `kill -9`, the OOM killer). The run fails with that death in one `error:` line
    (`local_runner.WorkerExited`); grpc is not imported to judge it."""
    seen = 0
    while error is not None and seen < 16:
        if any(cls.__name__ == "RpcError" and cls.__module__.split(".")[0] == "grpc" for cls in type(error).__mro__):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


class BeamChannelNoise(logging.Filter):
    """A worker process killed inside a bundle breaks its gRPC streams, and Beam logs the break at
    ERROR with its traceback: the runner's data-plane reader ("Failed to read inputs in the data
    plane.") and its cleanup ("Error closing worker_handler", the same `RpcError` raised again), each
    ~25 lines above the build's one `error:` line naming the death. Only once a local worker's death
    is recorded (`local_runner.worker_died`): any `RpcError` was left out, one with no death too (a
    message past gRPC's size limit, a portable job failed), for every runner. Shown with --verbose.
    Never raises."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("apache_beam") or record.levelno < logging.ERROR:
            return True
        try:
            if not broken_channel(record.exc_info[1] if record.exc_info else None):
                return True
            from uvd_pipeline.local_runner import worker_died

            return not worker_died()
        except Exception:  # noqa: BLE001 - a filter's error escapes the logging call: show the record
            return True


def _interrupted() -> bool:
    """Whether this process's run is being interrupted (`interrupts.under_way`) and Beam's errors
    are left out of its log: not with --verbose (Beam's logger at DEBUG)."""
    return under_way() and not logging.getLogger("apache_beam").isEnabledFor(logging.DEBUG)


class BeamInterruptNoise(logging.Filter):
    """Once Ctrl-C or SIGTERM is under way (`interrupts`), Beam's ERROR records are the interrupt's
    doing: the step it stopped in the build's own thread ("KeyboardInterrupt [while running 'Write
    shards']", with its traceback), a worker thread's bundle failing as the run is let go (its
    temporaries swept under its commit: FileNotFoundError). The command's one `interrupted:` or
    `terminated` line says what happened. A record carrying an error that is not the interrupt's
    (`interrupts.aftermath`: a bug met after the signal) is shown. Shown with --verbose. Never
    raises."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if not (record.name.startswith("apache_beam") and record.levelno >= logging.ERROR and _interrupted()):
                return True
            error = record.exc_info[1] if record.exc_info else None
            return error is not None and not aftermath(error)
        except Exception:  # noqa: BLE001 - a filter's error escapes the logging call: show the record
            return True


def quiet_refused_bundles() -> None:
    """Make Beam's SDK harness answer a bundle failed by a refusal (`_refused`) without printing it.
    `SdkHarness._execute` prints every failed bundle's traceback straight to stderr (no logger, so
    no filter reaches it; and logs it again at ERROR) before the runner fails the build with it:
    above the command's one `error:` line stood Beam's traceback of the same error, from each
    worker thread or process that met it. Such a bundle is answered as Beam answers it (its error
    the traceback's text), without the print and the log; every other error is left to Beam (a
    bug's traceback stays in sight). Idempotent; holds for every harness of this process."""
    from apache_beam.portability.api import beam_fn_api_pb2  # loaded now: at error time a worker may open no file
    from apache_beam.runners.worker import sdk_worker

    harness = sdk_worker.SdkHarness
    if getattr(harness, "_uvd_quiet", False):
        return
    execute = harness._execute

    def quiet_execute(self: Any, task: Callable[[], Any], request: Any) -> None:
        execute(self, lambda: _answered(task, request, beam_fn_api_pb2.InstructionResponse), request)

    harness._execute = quiet_execute
    harness._uvd_quiet = True


def _answered(task: Callable[[], Any], request: Any, response: Callable[..., Any]) -> Any:
    """`task`'s response, or for a refusal the error `response` Beam's `_execute` makes of it; so
    too for the interrupt's own aftermath once the run is being interrupted (`_interrupted`,
    `interrupts.aftermath`: Beam's cleanup dropped this bundle, `KeyError: 'bundle_42'`, printed
    twice, 47 lines, above the command's `terminated` line, hunt58b). Anything else (a bug, even
    one met after the signal: rev58f M1, or an error met judging) is raised on to Beam's
    `_execute` as it came, which prints it and answers the bundle: the runner always gets its
    answer."""
    try:
        return task()
    except Exception as exc:
        if not (_refused(exc) or (_interrupted() and aftermath(exc, request.instruction_id))):
            raise
        return response(instruction_id=request.instruction_id, error=traceback.format_exc())


class DaskRefusalNoise(logging.Filter):
    """A Dask worker logs a failed task ("Compute Failed", `distributed.worker`) with the error's
    repr and its traceback's text before the build fails with the same error: for a refusal
    (`_refused`) the command's `error:` line says it, so the record is left out, as
    `BeamRefusalNoise` leaves Beam's out. The record holds no exception object, so the task's error
    is judged when the worker makes its failure message (`noting`, wrapping `error_message`) and
    its repr noted; a bug's record (its repr never noted) is shown."""

    KEEP = 64  # reprs kept: a build stops at its first refusal, so a few are plenty

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[str] = []

    def noting(self, error_message: Callable[..., dict]) -> Callable[..., dict]:
        """`error_message` (distributed's) noting the repr of each error it is given that is a refusal."""
        def note(error: BaseException, *args: Any, **kwargs: Any) -> dict:
            message = error_message(error, *args, **kwargs)
            if _refused(error):
                self.refused = [*self.refused[-(self.KEEP - 1):], message.get("exception_text")]
            return message
        return note

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not str(record.msg).startswith("Compute Failed"):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        return not (len(args) > 3 and args[3] in self.refused)


RECONNECTING = "distributed/client.py"  # where `Client._reconnect` lives


class DaskReconnectNoise(logging.Filter):
    """A Dask client whose scheduler went away tries to reconnect; the build then fails in one
    `error:` line naming the scheduler (`dask_cluster.SchedulerLost`) and closes the client, which
    cancels the reconnection, and distributed logged that cancellation (`log_errors`, at ERROR, an
    empty message) with its chained tracebacks: ~30 lines above the `error:` line. A cancelled
    reconnection is never news: the record is left out. Shown with --verbose. Never raises."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        try:
            error = record.exc_info[1] if record.exc_info else None
            if not isinstance(error, asyncio.CancelledError):
                return True
            frames = traceback.extract_tb(error.__traceback__)
            return not any(frame.name == "_reconnect" and frame.filename.replace("\\", "/").endswith(RECONNECTING)
                           for frame in frames)
        except Exception:  # noqa: BLE001 - a filter's error escapes the logging call: show the record
            return True


def quiet_handlers(handlers: Iterable[logging.Handler]) -> None:
    """Give each of `handlers` the filters that keep Beam's import chatter and the tracebacks of an
    error the command says in one line (`BeamImportNoise`, `BeamRefusalNoise`, `BeamChannelNoise`,
    `DaskReconnectNoise`, `BeamInterruptNoise`) off the terminal: the command's own handlers and a
    Beam worker process's stderr alike."""
    for handler in handlers:
        handler.addFilter(BeamImportNoise())
        handler.addFilter(BeamRefusalNoise())
        handler.addFilter(BeamChannelNoise())
        handler.addFilter(DaskReconnectNoise())
        handler.addFilter(BeamInterruptNoise())


def quiet_refused_tasks() -> None:
    """In a Dask worker: leave a task failed by a refusal out of the worker's log (`DaskRefusalNoise`).
    Idempotent."""
    from distributed import worker

    if getattr(worker.error_message, "_uvd_noting", False):
        return
    noise = DaskRefusalNoise()
    worker.error_message = noise.noting(worker.error_message)
    worker.error_message._uvd_noting = True
    logging.getLogger("distributed.worker").addFilter(noise)
