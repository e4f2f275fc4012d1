"""The local Beam runner (FnApiRunner), made safe for batch builds.

Beam 2.77's local runner buffers the data it sends between the runner and its workers in
`data_plane.TimeBasedBufferingClosableOutputStream` (`fn_api_runner.worker_handlers.
DATA_BUFFER_TIME_LIMIT_MS = 1000`: the runner's data service always, the workers run as threads
with `direct_running_mode: multi_threading`). A timer thread flushes that buffer every second
while the bundle's thread goes on writing elements into it, and the flush (`get()`, then
`_clear()`) is not guarded against those writes: whatever a writer appends between the two calls
is dropped. A dropped whole element vanishes silently; a dropped part of one leaves the rest of the
stream misframed, and the reader fails ("Invalid PaneInfoEncoding", "Unknown type tag") or reads a
garbage length and allocates until the machine is out of memory. On 2026-12-04 this took about one
dedup-on build in 10-40 of 900 images (`benchmarks/stress_build.py`); with the timer at 1 ms a
small pipeline loses elements on every run (`tests/test_local_runner.py`).

A time-based flush only lowers latency for streaming; a batch build needs none, so the local
runner here runs with size-based buffering alone (flushed at a size threshold and on close, both
from the writing thread).

A worker process that dies (the OOM killer, `kill -9`) while the runner waits for a bundle of a
stage that sends nothing back (the shard writers: `expect_reads` is empty, so no data channel
notices the loss) hung the build for good: Beam's `SubprocessSdkWorker.run` raises "Worker
subprocess exited with return code 137" in its own thread, where nobody hears it, and the bundle's
`ControlFuture` waits forever. Here that exit aborts the worker's outstanding requests with that
error (`watch_worker_processes`), so the build fails at once, and its rerun finishes the job. In a
stage that sends data back the worker's data channel breaks first ("Channel closed prematurely."):
the run then fails with the worker's recorded exit all the same (`_naming_deaths`).

A run that fails or is interrupted while a worker process is inside a bundle (SIGTERM to the
build's own process, as `docker stop`, Kubernetes or `kill PID` send it; Ctrl-C reaches the
workers too) hung as well, in about half the tries: Beam's cleanup closes each worker's control
stream and then waits for its process, which waits for data the runner no longer sends. Here such
a run's workers are stopped first (`stop_worker`), and the shell Beam starts each one through
execs it, so that the process Beam waits on is the worker itself.

Ctrl-C in a terminal (SIGINT to the build's whole process group), or SIGTERM to the group, killed
each worker process too: it printed a `Traceback ... KeyboardInterrupt` and a multi-KB "CRITICAL
... Python sdk harness failed" line above the command's one "interrupted:" line (49-82 lines in
all, hunt56c). The workers now start with both ignored (the shell's `trap` before its `exec`, so
also while they import): the signal is the build's, which stops them as above.

A worker process killed inside a bundle breaks its gRPC streams, and the runner's stream readers
and cleanup printed Beam's tracebacks of the break (`grpc.RpcError`) above the build's one `error:`
line naming the death: 5-6 tracebacks, 133-142 lines, in 3 of 4 builds whose worker was killed.
The readers' uncaught errors (`quiet_broken_streams`) and Beam's logged ones
(`log_filters.BeamChannelNoise`) are left out; `--verbose` shows them."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable

from uvd_pipeline.worker_parent import BUILD_PID_ENV

__all__ = ["local_runner", "disable_timed_flushes", "watch_worker_processes", "quiet_broken_streams", "WorkerExited"]


class WorkerExited(RuntimeError):
    """A worker process of the local runner exited while the run needed it (killed, or its
    interpreter not found before it connected): the build fails with this one line."""


def disable_timed_flushes() -> None:
    """Make the local runner's data channels (its own and its thread workers') size-buffered only.
    Beam reads the constant when a run starts its data service and thread workers, so this holds
    for every local run made after it in this process."""
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    if not hasattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS"):
        raise RuntimeError("apache_beam.runners.portability.fn_api_runner.worker_handlers no longer has "
                           "DATA_BUFFER_TIME_LIMIT_MS: check whether this Beam version still flushes its data "
                           "channels from a timer thread (see uvd_pipeline/local_runner.py) before using it")
    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0


# each local worker process, by the ident of the thread that started it and waits on it
_WORKER_PROCESSES: dict[int, subprocess.Popen] = {}
# each unexpected worker exit seen in this process, in order (`_NamingDeaths` reads those of its run)
_DEATHS: list[WorkerExited] = []
_DIED = threading.Condition()  # notified as a death is recorded (`worker_died` waits on it)
# a killed worker's streams break as it dies, its exit is recorded a moment later (its thread's wait)
DEATH_GRACE_S = 2.0


# a killed worker's sockets close a moment before the kernel makes it a zombie: how long to look
EXIT_PEEK_S = 0.1


def worker_died(grace_s: float = DEATH_GRACE_S) -> bool:
    """Whether a local worker process of this process exited unexpectedly (`_DEATHS`), waiting up to
    `grace_s` for one where a worker process has exited (`_worker_exited`, looked for `EXIT_PEEK_S`):
    a broken gRPC stream is left off stderr only then (`quiet_broken_streams`,
    `log_filters.BeamChannelNoise`), where its death is the build's one `error:` line; any other
    (a message past gRPC's size limit, a portable job failed) is shown as it comes. Every such error
    waited the whole grace before (2 s each: a logged one and a thread's, 4 s late)."""
    deadline = time.monotonic() + EXIT_PEEK_S
    while not _worker_exited():
        if _DEATHS:  # recorded meanwhile (its process reaped and forgotten)
            return True
        if not _WORKER_PROCESSES or time.monotonic() >= deadline:
            return bool(_DEATHS)
        time.sleep(0.005)
    with _DIED:
        return _DIED.wait_for(lambda: bool(_DEATHS), timeout=grace_s)


def _worker_exited() -> bool:
    """Whether a local worker process has exited, reaped or not (`waitid` with `WNOWAIT` leaves the
    reaping to Beam's thread, whose exit code the death record names)."""
    for process in list(_WORKER_PROCESSES.values()):
        if process.returncode is not None:
            return True
        try:
            if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:  # reaped already
            return True
        except (OSError, AttributeError):  # no waitid here: taken as not exited
            continue
    return False


class _WorkerSubprocess:
    """`local_job_service`'s `subprocess`: its `Popen` (a worker's `sh -c COMMAND`) execs the
    command, so the process Beam waits on is the worker and stopping it stops the worker (the
    shell stayed behind as its parent before), with SIGINT and SIGTERM ignored, and records the
    process by its thread."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(command: Any, *args: Any, **kwargs: Any) -> subprocess.Popen:  # noqa: N802 (subprocess's name)
        if kwargs.get("shell") and isinstance(command, str):
            # SIGINT and SIGTERM ignored from the start (as the early render's processes do): a
            # signal to the build's process group (a terminal's Ctrl-C) is the build's, which
            # stops its workers (`stop_worker`); `die_with_parent` still ends them with a killed build
            command = f"trap '' INT TERM; exec {_logging_as_the_build(command)}"
        # the worker ends with this process (`worker_parent.die_with_parent`)
        kwargs["env"] = {**(kwargs.get("env") or os.environ), BUILD_PID_ENV: str(os.getpid())}
        process = subprocess.Popen(command, *args, **kwargs)
        _WORKER_PROCESSES[threading.get_ident()] = process
        return process


def _logging_as_the_build(command: str) -> str:
    """A worker's command line with Beam's harness started through `sdk_worker_main`, which logs
    in the build's format without Beam's start-up chatter, and the interpreter's path quoted for
    the shell (Beam writes it bare: from a venv under `my env/` the shell ran `my`, "not found");
    any other command as it is."""
    from uvd_pipeline.sdk_worker_main import HARNESS

    beams = f"{sys.executable} -m {HARNESS}"
    if command != beams and not command.startswith(beams + " "):
        return command
    return f"{shlex.quote(sys.executable)} -m uvd_pipeline.sdk_worker_main{command[len(beams):]}"


def watch_worker_processes() -> None:
    """Make a worker process's unexpected exit fail the requests its runner still waits on (the
    bundle it had), instead of leaving them waiting forever; and stop the worker processes of a run
    that is failing or interrupted, instead of waiting for them forever. Idempotent; holds for
    every local run made after it in this process."""
    from apache_beam.runners.portability import local_job_service
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    handler = worker_handlers.SubprocessSdkWorkerHandler
    if getattr(handler, "_uvd_watched", False):
        return
    local_job_service.subprocess = _WorkerSubprocess()

    def start_worker(self) -> None:
        self.worker = local_job_service.SubprocessSdkWorker(self._worker_command_line, self.control_address,
                                                            self.provision_info, self.worker_id)
        self._uvd_stopped = False

        def run() -> None:
            try:
                self.worker.run()
            except Exception as exc:  # exited with a return code other than 0: its requests fail
                if self._uvd_stopped:  # stopped by `stop_worker`: the run is already ending
                    return
                error = _death(_WORKER_PROCESSES.get(threading.get_ident()), exc, self.control_conn)
                with _DIED:
                    _DEATHS.append(error)  # the run's error where a broken data channel fails it first
                    _DIED.notify_all()
                # the run fails with it (no traceback from this thread above the build's one error line)
                _fail_requests(self.control_conn, error)
            finally:
                _WORKER_PROCESSES.pop(threading.get_ident(), None)

        self.worker_thread = threading.Thread(name="run_worker", target=run)
        self.worker_thread.start()

    def stop_worker(self) -> None:
        # called by Beam's cleanup, in a `finally`: an exception on its way out (an interrupt, a
        # failed bundle) means the runner sends its workers nothing more, and one inside a bundle
        # waits for that data for good
        process = _WORKER_PROCESSES.get(self.worker_thread.ident)
        if _run_failing(sys.exc_info()[1]) and process is not None and process.poll() is None:
            self._uvd_stopped = True
            process.kill()
        self.worker_thread.join()

    handler.start_worker = start_worker
    handler.stop_worker = stop_worker
    handler._uvd_watched = True


def _run_failing(exc: BaseException | None) -> bool:
    """Whether `exc`, seen in Beam's cleanup, is leaving this run: its traceback passes through
    the `run_stages` frame now running that cleanup. One a caller is handling as it runs a build
    from its own `except` block is there too (a successful run's workers were killed at its close,
    rev54b), and one from an earlier run that failed in its own `run_stages` (rev54e)."""
    if exc is None:
        return False
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_name != "run_stages":
        frame = frame.f_back
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame is frame:
            return True
        tb = tb.tb_next
    return False


def _death(process: subprocess.Popen | None, exc: Exception, connection: Any) -> WorkerExited:
    """Beam's error for a worker process that exited, in the shell's words it had when a shell was
    the worker's parent ("return code 137", not -9), naming the signal; and said to have exited
    before it connected where it never did (the shell's 127: the interpreter's path not found)."""
    code = process.returncode if process is not None else None
    if code is None:
        message = str(exc)
    elif code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        message = f"Worker subprocess exited with return code {128 - code} (killed by {name})"
    else:
        message = f"Worker subprocess exited with return code {code}"
    if connection._input is None:  # set by Beam's `ControlConnection.set_input`: the worker's first call
        message += " before it connected to the runner"
        if code == 127:
            message += (f" (the shell found no program to run: is {sys.executable}, the Python this build "
                        "started from, still there?)")
    return WorkerExited(message)


def _fail_requests(connection: Any, error: Exception) -> None:
    """Fail what a dead worker's control connection waits on, and whatever is sent to it later
    (another thread may be pushing a bundle as it dies)."""
    push = connection.push

    def push_to_the_dead(request: Any) -> Any:
        future = push(request)
        if future is not None:
            _fail(future, error)
        return future

    connection.push = push_to_the_dead
    # Beam's own `ControlConnection.abort` iterates the live dict, which a bundle thread pushing
    # at that moment changes ("dictionary changed size during iteration"): a copy of it here
    for future in list(connection._futures_by_id.values()):
        _fail(future, error)


def _fail(future: Any, error: Exception) -> None:
    """Abort a `ControlFuture` (its `get()` raises `error`) and mark it done: a bundle's runner
    thread waiting for the bundle's output data polls only `is_done()` (`BundleManager.process_bundle`'s
    `abort_callback`), and a worker that never connected has no data stream to break."""
    from apache_beam.portability.api import beam_fn_api_pb2

    future.abort(error)
    future._response = beam_fn_api_pb2.InstructionResponse(instruction_id=future.instruction_id, error=str(error))


def local_runner(options: Any) -> Any:
    """Beam's FnApiRunner directly: the DirectRunner would first try to download the Prism runner,
    which fails offline and only adds a delay before it falls back to the same FnApiRunner. As the
    DirectRunner does, the options travel in the provision info, so worker processes see them (log
    levels included)."""
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    from uvd_pipeline.log_filters import quiet_refused_bundles

    disable_timed_flushes()
    watch_worker_processes()
    quiet_refused_bundles()  # worker threads of this process: no traceback of a refusal above its error: line
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return _naming_deaths(fn_runner.FnApiRunner)(provision_info=provision)


# the threads in which Beam's runner reads a worker's gRPC streams; they end in the `RpcError` of a
# worker process gone, uncaught (`worker_handlers.ControlConnection._read`, `data_plane._read_inputs`)
STREAM_READERS = ("beam_control_read", "read_grpc_client_inputs")


def quiet_broken_streams() -> Callable[[], None]:
    """Keep the stream readers' uncaught `RpcError` of a killed worker process off stderr: Python
    printed "Exception in thread beam_control_read" and "... read_grpc_client_inputs" with their
    tracebacks above the build's one `error:` line (the run fails with the death: `WorkerExited`).
    Only once a worker's death is recorded (`worker_died`): any other `RpcError` (a message past
    gRPC's limit) was hidden as well. Shown where Beam logs at DEBUG (`--verbose`); any other
    thread's error as Python prints it. Returns what puts the previous hook back (a run's end:
    it stayed replaced after the build returned); nothing to put back where it is in place."""
    from uvd_pipeline.log_filters import broken_channel

    hook = threading.excepthook
    if getattr(hook, "_uvd_quiet", False):
        return lambda: None

    def quiet(args: Any) -> None:
        if (args.thread is not None and args.thread.name in STREAM_READERS and broken_channel(args.exc_value)
                and not logging.getLogger("apache_beam").isEnabledFor(logging.DEBUG) and worker_died()):
            return
        hook(args)

    def restore() -> None:
        if threading.excepthook is quiet:  # one set since is left as it is
            threading.excepthook = hook

    quiet._uvd_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = quiet
    return restore


def _naming_deaths(runner: type) -> type:
    """`runner` whose run, failing after one of its worker processes exited unexpectedly, fails with
    that exit (`WorkerExited`: "return code 137 (killed by SIGKILL)"): a worker killed inside a
    bundle that sends data back breaks its data channel first, and the run failed with Beam's bare
    "Channel closed prematurely." (rev56l). Its cleanup joins each worker's thread, so the exit is
    recorded by the time the failure leaves `run_pipeline`."""

    class NamingDeaths(runner):  # type: ignore[misc, valid-type]
        def run_pipeline(self, *args: Any, **kwargs: Any) -> Any:
            seen = len(_DEATHS)
            restore = quiet_broken_streams()  # for this run's stream readers only
            try:
                return super().run_pipeline(*args, **kwargs)
            except WorkerExited:
                raise
            except Exception as exc:
                if len(_DEATHS) == seen:
                    raise
                raise _DEATHS[seen] from exc
            finally:
                restore()

    NamingDeaths.__name__ = NamingDeaths.__qualname__ = runner.__name__
    return NamingDeaths
