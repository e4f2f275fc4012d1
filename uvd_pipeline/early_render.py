"""The local build's rendering, started before Beam is: while this process imports Beam, builds the
graph and starts the runner, a pool of threads already renders input units and commits them to the
unit store, and the Render step takes each unit's results from the pool (`claim`).

Why: on 2 cores a 900-image build spent 1.1-1.35 s before its first decode (imports, the graph,
the runner's start) with one core idle, and the runner then hands each worker a fixed share of
the units, so one slow share holds the stage up. The pool starts rendering at once and deals
units out one at a time.

Only with the local runner's workers as threads of this process (`multi_threading`): the Render
step must run in the process that holds the pool, and a build limited to one worker (`in_memory`)
keeps one rendering thread (a second one there only overlapped the imports, and its own malloc
arena added ~10 MiB to the 2,000-image build's peak: 1.21x -> 1.25x of the 20-image one). The
rules:
- The pool has as many threads as the build has workers. It renders the units a Render step is
  waiting for first, then the others in listing order, while fewer than `ahead` finished units
  wait to be claimed (memory: no more results than that are held beyond those being waited for).
- `claim`: the step waits for its unit (asked for first if it has not started) and gets its
  results, or its error, once, with the metrics it recorded (`step_metrics.recorded`), so the
  build's counters are those of a build without the pool. A unit asked for again (a retried
  bundle) is the step's own: it loads from the unit store.
- The rendering is the step's own (`unit_render.UnitRenderer`; each thread has its own, as each
  runner worker has its own copy of the step, so no reader's state is shared between threads),
  committed to the unit store the same way; a unit's results depend only on the unit and the
  config, so the bytes do not change.
- `close` stops the pool at each thread's next record; a unit it leaves is not committed (the
  next run renders it), so a build that fails or is interrupted waits at most one record. A step
  still waiting then (another bundle of a job that failed) gets `RenderCancelled`, never a hang.
- Handed-over results are not kept: the pool's memory is bounded whatever order steps ask in.
- Where the platform forks (Linux; `beam.early_render_in: auto`), each thread of the pool has a
  process forked before Beam is imported render for it (`_RenderProcess`): the thread hands it a
  unit and waits for its results, metrics and error through a pipe; the schedule, the rules above
  and the bytes are the same. Threads that render themselves lose their speed to Python's lock
  beside the build's main thread, which runs Python for the ~2 s of Beam's import, the graph and
  the runner's start (a 900-image build, 2 workers: 9.54 -> 8.69 s with dedup off, 12.38 ->
  10.24 s with dedup on, medians of 6 and 4 interleaved runs). A process that dies (a decoder's
  crash) fails the unit it had; its thread renders the rest itself.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from sources import budget
from uvd_pipeline import startup_gc
from uvd_pipeline.config import BuildConfig
from uvd_pipeline.step_metrics import MetricRecord, recorded
from uvd_pipeline.unit_render import RenderCancelled, UnitRenderer, unit_renderers

log = logging.getLogger(__name__)
QUEUED, RUNNING, DONE = "queued", "running", "done"
THREAD_MODES = ("multi_threading",)
Taken = tuple[Any, list[MetricRecord]]  # a unit's (results, recorded metrics)


@dataclass(eq=False)
class _Entry:
    source: str
    key: str
    unit: Any
    state: str = QUEUED
    result: Any = None
    error: BaseException | None = None
    metrics: list[MetricRecord] = field(default_factory=list)
    finished: threading.Event = field(default_factory=threading.Event)


class EarlyRender:
    """Every unit of a build rendered by `workers` threads and handed to the Render step (module doc)."""

    def __init__(self, make_renderers: Callable[[], dict[str, UnitRenderer]], units: dict[str, list],
                 workers: int, ahead: int | None = None, processes: bool = False) -> None:
        # one set of renderers per thread, made here: a source that cannot be opened fails the
        # build now, in the caller, not as some unit's error later
        per_thread = [make_renderers() for _ in range(workers)]
        self._entries: dict[tuple[str, str], _Entry] = {}
        for name, renderer in per_thread[0].items():
            for unit in units.get(name, ()):
                key = renderer.unit_key(unit)
                self._entries[(name, key)] = _Entry(name, key, unit)
        self._queue = deque(self._entries.values())  # listing order
        self._wanted: deque[_Entry] = deque()  # units a step waits for, not started yet
        self._ahead = ahead if ahead is not None else 2 * workers
        self._cond = threading.Condition()
        self._unclaimed = 0  # finished or running units no step has asked for yet
        self._stopped = False
        self.rendered = 0  # units the pool finished
        self._per_thread = per_thread
        self._processes = processes
        self.in_processes = False  # whether `start` forked the render processes
        self._threads = [threading.Thread(target=self._work, args=(i,), name=f"uvd-early-render-{i}",
                                          daemon=True) for i in range(workers)]
        self._children: list[_RenderProcess | None] = [None] * workers

    def start(self) -> "EarlyRender":
        """Start rendering. With `processes`, each thread first gets a forked process that renders
        for it (`_RenderProcess`), made here, before any thread of the pool exists; where the
        platform does not fork safely (`forking_is_safe`), the threads render themselves."""
        if self._processes and forking_is_safe():
            try:
                with _interrupts_held():
                    for index, renderers in enumerate(self._per_thread):
                        self._children[index] = _RenderProcess(renderers)
                self.in_processes = True
            except OSError as exc:  # no memory or process slots for a fork: the threads render
                log.warning("early render: cannot start render processes (%s); rendering in threads", exc)
                for child in self._children:
                    if child is not None:
                        child.close()
                self._children = [None] * len(self._children)
        for thread in self._threads:
            thread.start()
        return self

    def claim(self, source: str, key: str) -> Taken | None:
        """Wait for the unit and return its (results, recorded metrics); None where the pool does
        not have it (not listed, or handed over already): the caller renders it."""
        with self._cond:
            entry = self._entries.pop((source, key), None)
            if entry is None:
                return None
            if entry.state == QUEUED:  # asked for before it started: next in line
                if self._stopped:  # the build is ending: nothing renders it any more
                    raise RenderCancelled(key)
                self._wanted.append(entry)
            else:
                self._unclaimed -= 1
            self._cond.notify_all()
        entry.finished.wait()
        # handed over: the entry may wait in the listing queue a while yet, without the results
        taken, error = (entry.result, entry.metrics), entry.error
        entry.result = entry.error = None
        entry.metrics = []
        if error is not None:
            raise error
        return taken

    def close(self) -> None:
        """Stop taking units, stop the running ones at their next record, fail the ones a step
        still waits for (`RenderCancelled`), and wait for the threads."""
        with self._cond:
            self._stopped = True
            while self._wanted:
                entry = self._wanted.popleft()
                if entry.state == QUEUED:
                    entry.error, entry.state = RenderCancelled(entry.key), DONE
                    entry.finished.set()
            self._cond.notify_all()
        for child in self._children:
            if child is not None:
                child.stop()  # a unit rendering there stops at its next record
        for thread in self._threads:
            if thread.is_alive():
                thread.join()
        for child in self._children:
            if child is not None:
                child.close()

    def _next(self) -> _Entry | None:
        with self._cond:
            while True:
                if self._stopped:
                    return None
                while self._wanted:
                    entry = self._wanted.popleft()
                    if entry.state == QUEUED:
                        entry.state = RUNNING
                        return entry
                if self._unclaimed < self._ahead:
                    while self._queue:
                        entry = self._queue.popleft()
                        if entry.state == QUEUED:  # a claimed one left the wanted line above, started
                            entry.state = RUNNING
                            self._unclaimed += 1
                            return entry
                    if not self._wanted:
                        return None  # everything listed is rendered or being rendered
                self._cond.wait()

    def _stopping(self) -> bool:
        return self._stopped

    def _work(self, index: int) -> None:
        renderers, child = self._per_thread[index], self._children[index]
        while (entry := self._next()) is not None:
            if child is not None and not child.alive():  # it died (a crash in a decoder): go on without it
                child = None
            if child is not None:
                entry.result, entry.metrics, entry.error = child.render(entry.source, entry.unit, entry.key)
            else:
                entry.result, entry.metrics, entry.error = _render(renderers, entry.source, entry.unit,
                                                                   self._stopping)
            with self._cond:
                entry.state = DONE
                if entry.error is None:
                    self.rendered += 1
            entry.finished.set()


def _render(renderers: dict[str, UnitRenderer], source: str, unit: Any,
            cancelled: Callable[[], bool]) -> tuple[Any, list[MetricRecord], BaseException | None]:
    """One unit's (results, recorded metrics, error): in a pool thread, or in its render process."""
    with recorded() as metrics:
        try:
            return renderers[source].render(unit, cancelled=cancelled), metrics, None
        except BaseException as exc:  # handed to the step that claims the unit (or dropped by close)
            return None, metrics, exc


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Ctrl-C (and SIGTERM) held back while the render processes are forked, then delivered. A KeyboardInterrupt
    raised inside `os.fork` comes from a callback Python runs around it (logging's, which
    re-releases its lock in the parent), where Python only prints and drops exceptions: the build
    went on as if never interrupted, and with logging's lock left held its other threads hung at
    their next log line (a Ctrl-C test, 1 run in 3 at the wrong moment). Python's signal handlers
    run in the main thread only; elsewhere nothing is held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)  # SIGTERM too: the command raises it as an interrupt
    previous = {sig: signal.signal(sig, lambda signum, frame: arrived.append(signum)) for sig in held}
    # also blocked for this thread: one sent to it waits, pending, until the fork is over; one a
    # thread of Python's runs for it (another thread took it) finds the recorder above
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, set(held))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a pending one is recorded here
        for sig in held:
            signal.signal(sig, previous[sig])
        for sig in dict.fromkeys(arrived):
            signal.raise_signal(sig)  # now, to the build's own handler


def forking_is_safe() -> bool:
    """Whether this process may fork its render processes: on Linux, where fork is the platform's
    own way (macOS's system libraries are not fork-safe). The build forks them before it imports
    Beam, so none of the runner's threads exist yet; Python re-makes its own locks in the child,
    and the child only renders and talks to its pipe."""
    return sys.platform.startswith("linux")


class _RenderProcess:
    """A forked process that renders the units its pool thread sends it, one at a time, with the
    renderers the thread would have used, and sends back each unit's results, recorded metrics
    and error (the results are what the Render step would get: sentences and units whose images
    are in the unit store, not pixels). Why processes: Python runs one thread at a time, and a
    render thread takes that lock back after every call into C (a decoder's block, a resize, a
    file read); beside a thread that runs Python, each take waits up to the interpreter's switch
    interval (5 ms). With a thread spinning in Python, one 150-image unit took 16.6 s instead of
    1.8 s, and while the build's main thread imports Beam and builds the graph (~2 s) the render
    threads ran at a third of their speed. Forked before Beam is imported, a render process
    shares the build's memory pages until it writes them."""

    def __init__(self, renderers: dict[str, UnitRenderer]) -> None:
        context = multiprocessing.get_context("fork")
        self._stopped = context.Event()
        self._conn, child_end = context.Pipe()
        self._process = context.Process(target=_serve, args=(child_end, renderers, self._stopped, os.getpid()),
                                        name="uvd-early-render", daemon=True)
        self._process.start()
        child_end.close()

    def render(self, source: str, unit: Any, key: str) -> tuple[Any, list[MetricRecord], BaseException | None]:
        try:
            self._conn.send((source, unit))
            return self._conn.recv()
        except (EOFError, OSError):  # the process died (killed, or a decoder crashed it)
            self._process.join(1)
            return None, [], RuntimeError(f"the render process ended (exit code {self._process.exitcode}) "
                                          f"while rendering unit {key} of {source}")

    def alive(self) -> bool:
        return self._process.is_alive()

    def stop(self) -> None:
        self._stopped.set()

    def close(self) -> None:
        """Tell the process to end and wait for it (killed if it does not end within seconds)."""
        try:
            self._conn.send(None)
        except (OSError, ValueError):
            pass
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


def _die_with(parent: int) -> None:
    """Be killed when the build's process ends, however it ends (Linux's parent-death signal): a
    render process must not go on writing into an output another run may have locked since."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - Linux has it
        pass
    if os.getppid() != parent:  # it ended before the signal was asked for
        os._exit(0)


def _serve(conn, renderers: dict[str, UnitRenderer], stopped, parent: int) -> None:
    """The render process: units from the pipe until None or the pipe closes (the build ended)."""
    # What it inherited lives as long as it does: frozen, the collector never scans it (a scan writes
    # to every object's header, copying the build's pages into this process); then the collector,
    # held off while the build started (`startup_gc`), is turned back on (Python's recipe for fork)
    gc.freeze()
    startup_gc.resume()
    _die_with(parent)
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C and SIGTERM are the build's to handle: it closes the pool
        signal.signal(sig, signal.SIG_IGN)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            break
        if job is None:
            break
        source, unit = job
        result, metrics, error = _render(renderers, source, unit, stopped.is_set)
        try:
            try:
                conn.send((result, metrics, error))
            except (pickle.PicklingError, TypeError, AttributeError) as exc:  # what pickle cannot carry
                what = error if error is not None else exc
                conn.send((None, metrics, RuntimeError(f"{type(what).__name__}: {what}")))
        except OSError:  # the build is gone
            break
    conn.close()
    budget._stop_all()  # its decoding processes (`image_decode`) end with it, waited for
    os._exit(0)  # not the build's atexit functions, nor its interpreter teardown


_ACTIVE: dict[tuple[str, str], EarlyRender] = {}
_ACTIVE_LOCK = threading.Lock()


def claim(renderer: UnitRenderer, unit) -> Taken | None:
    """For the Render step: the unit's results if this process's early render of the same build
    (output and config) has it, else None."""
    with _ACTIVE_LOCK:
        early = _ACTIVE.get((renderer.output, renderer.config_hash))
    if early is None:
        return None
    return early.claim(renderer.source.name, renderer.unit_key(unit))


def wanted(config: BuildConfig) -> bool:
    """Whether the build's Render step runs in this process, where the pool can hand it work."""
    beam = config.beam
    return beam.local and beam.early_render and beam.running_mode in THREAD_MODES


@contextmanager
def rendering_early(config: BuildConfig, units: dict[str, list], verify: bool = False,
                    run_id: str | None = None) -> Iterator[EarlyRender | None]:
    """The pool for this block (None where it is not `wanted`); stopped when the block ends."""
    if not wanted(config):
        yield None
        return
    early = EarlyRender(lambda: unit_renderers(config, verify, run_id), units, config.beam.direct_num_workers,
                        processes=config.beam.early_render_in == "auto")
    build = (config.output, config.content_hash())
    with _ACTIVE_LOCK:
        if build in _ACTIVE:  # the output's lock forbids two builds of one output
            raise RuntimeError(f"an early render of {config.output} is already running in this process")
        _ACTIVE[build] = early
    try:
        yield early.start()
    finally:
        early.close()  # first: a step still running (a failed job's other bundle) gets RenderCancelled
        with _ACTIVE_LOCK:
            _ACTIVE.pop(build, None)
