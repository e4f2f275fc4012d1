"""Run a decoding job in a child process that can be killed: a per-job time and memory budget.

Decoders hang or balloon inside C code (decord's `get_batch` on some MPEG-TS files never
returns), where no Python-level timeout reaches. So jobs run in a long-lived worker process
started with `subprocess` (it works inside daemonic runner workers, where `multiprocessing`
may not start children), talking length-prefixed pickles over its stdin/stdout (results travel
as pickle protocol 5 with their arrays' memory out of band: the raw bytes are written from the
array and read into the parent's buffer, one copy each way, no pickling copy; a sender thread
writes them, so a job runs ahead of a busy parent by up to `SEND_AHEAD_BYTES`). The parent waits
with `select`, sums only the time it spends waiting, watches the worker's resident memory, and
kills the worker when either budget is spent; the next job starts a fresh worker.

A budget may also count the worker's CPU seconds (`Budget.cpu_s`): the work a job does, nearly the
same on a busy machine as on an idle one, where the seconds waited grow with the load. The worker
reports its CPU time with every answer, so a job's count starts from the last one without asking
the system, and each item is judged by it (a job streaming its results, its parent never waiting
long, is held to its budget as one that answers once); it is read from /proc only while a job runs
long without answering (every `_POLL_S` of waiting). `time_s` alone counts the seconds the parent
waits, not the worker's work: it is the wall backstop of a CPU budget (`cpu_budget`), which is
what the config's `decode_time_s` and `time_budget_s` set. A fresh
worker imports the job's module before the job's clocks start, so its start-up is no job's cost.
Arguments that are bytes travel out of band too (one copy into the pipe, none into a pickle).

A job is a module-level function named "module:function"; if it returns a generator, its items
stream back one by one, so callers can use results before the job ends.
"""

from __future__ import annotations

import atexit
import collections
import importlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import GeneratorType
from typing import Any, Iterator

import numpy as np

_RESULT = struct.Struct("<QQ")  # a message's pickle length and how many out-of-band buffers follow it
_POLL_S = 0.2
OUT_OF_BAND_BYTES = 1 << 14  # bytes arguments from this size travel out of band
STARTUP_S = 120.0  # wall seconds a fresh worker may take to import a job's module


@dataclass(frozen=True)
class Budget:
    """Limits of one job: wall seconds spent waiting on the worker, its resident memory, and (when
    `cpu_s` is set) the CPU seconds the worker spends on it, `time_s` then being the backstop for a
    worker that waits without working. Where /proc is missing, only the wall seconds are judged."""

    time_s: float = 600.0
    memory_mb: int = 1536  # a video's decoding process; its declared cost is judged against it first
    cpu_s: float | None = None


WALL_FLOOR_S = 60.0  # a CPU budget's wall backstop is never shorter (a fresh process, a machine stalled a while)


def cpu_budget(cpu_s: float, memory_mb: int, wall_factor: float) -> Budget:
    """A budget judged on the CPU seconds the worker spends: the same work is refused, or not, on a
    busy machine and an idle one (a decode's wall time grew 1.5-2.3x its CPU time at a load of 4 on
    2 cores), so the output stays the same bytes. A worker waiting without working (a stalled read,
    a blocked decoder) is killed after `wall_factor` times the budget, not below `WALL_FLOOR_S`."""
    return Budget(time_s=max(wall_factor * cpu_s, WALL_FLOOR_S), memory_mb=memory_mb, cpu_s=cpu_s)


@dataclass
class JobUse:
    """What a job has used of its budget so far (`run`'s `use`, filled in with each answer): the
    seconds waited on the worker and the worker's CPU seconds on it."""

    wall_s: float = 0.0
    cpu_s: float = 0.0

    def spent(self, budget: Budget, spent_by: str) -> str:
        """`decord used 59.97 of the 60 CPU-second budget`: what a job that failed used of the
        budget another takes over, for the detail of a reject (`left`, and a retry that runs out)."""
        if budget.cpu_s is None:
            return f"{spent_by} used {self.wall_s:.3g} of the {budget.time_s:g} s budget"
        return f"{spent_by} used {self.cpu_s:.3g} of the {budget.cpu_s:g} CPU-second budget"

    def left(self, budget: Budget, spent_by: str) -> Budget:
        """What is left of `budget` for a job that takes over the same work (PyAV finishing what
        decord could not): one video's decode stays within one budget, as `decode_time_s` says,
        not one afresh per decoder. A CPU budget's wall backstop stays at least `WALL_FLOOR_S`.

        Raises `BudgetExceeded` (`decode_timeout`) when less than `RETRY_FLOOR_S` is left: the
        budget is spent, and a job given nothing (or a few ms) was killed at its first answer, a
        retry that could not succeed. `spent_by` names the job that spent it, for the detail."""
        whole, used = (budget.time_s, self.wall_s) if budget.cpu_s is None else (budget.cpu_s, self.cpu_s)
        if whole - used < RETRY_FLOOR_S:
            raise BudgetExceeded("decode_timeout", f"{self.spent(budget, spent_by)} "
                                                   f"before it failed: too little is left for another decoder")
        if budget.cpu_s is None:
            return replace(budget, time_s=whole - used)
        return replace(budget, time_s=max(budget.time_s - self.wall_s, WALL_FLOOR_S), cpu_s=whole - used)


# the least of a budget worth handing to a job taking over (`JobUse.left`): a PyAV decode of one
# frame of a 64x48 video, the least job there is, took 40 ms CPU in a fresh worker, 1-2 ms after
# (8 frames of a small WebM: 2.3 ms). A floor of 50 ms refused retries that finished in a warm
# worker; below 1 ms none can (nothing left at all: killed at its first answer)
RETRY_FLOOR_S = 0.001


class BudgetExceeded(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason  # decode_timeout | decode_memory | decoder_crashed
        self.detail = detail


class JobError(Exception):
    """The job raised; carries the exception's type name, message, (for VideoError) reason, and
    (for an OSError) its errno, by which the caller tells this machine's errors (too many open
    files) from the input's."""

    def __init__(self, kind: str, message: str, reason: str | None, detail: str | None,
                 errno: int | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.reason, self.detail = kind, message, reason, detail
        self.errno = errno


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, every thread) a process has used, from /proc; None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, ValueError, IndexError):
        return None


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0  # not Linux, or the process is gone: the time budget still applies


PIPE_BYTES = 1 << 20  # results travel through a pipe: a wide one moves a frame in one go


def _widen(fd: int) -> None:
    """Widen a pipe from Linux's 64 KiB (a 230 KB frame then takes four wake-ups of each side);
    at most what an unprivileged process may set (/proc/sys/fs/pipe-max-size), elsewhere a no-op."""
    try:
        import fcntl

        with open("/proc/sys/fs/pipe-max-size") as handle:
            limit = int(handle.read())
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, min(PIPE_BYTES, limit))
    except (OSError, ValueError, AttributeError, ImportError):
        pass


class _Worker:
    def __init__(self) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)  # the child imports what this process can
        env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in sys.path if p]])
        # its own session and process group: a kill takes the group, so whatever a decoder starts (a
        # helper program, its children) dies with it instead of running on, adopted by init
        # told this process's pid: one that ends while the worker still starts leaves it no parent to read
        self.process = subprocess.Popen([sys.executable, "-m", "sources.budget", str(os.getpid())],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
                                        start_new_session=True)
        self.out_fd = self.process.stdout.fileno()  # type: ignore[union-attr]
        self.owner = os.getpid()
        self.modules = {__name__}  # job modules the worker has imported (its own, to begin with)
        self.cpu_s = 0.0  # the worker's CPU seconds at its last answer
        self.job_cpu_s = 0.0  # ... when the running job was sent
        _widen(self.out_fd)
        _widen(self.process.stdin.fileno())  # type: ignore[union-attr]  # an image's bytes in one write

    def alive(self) -> bool:
        """Whether the worker runs; an ended one is left unreaped (`kill` reaps it), so that its pid
        still names its process group for `kill` to end what it started."""
        if self.process.returncode is not None:
            return False
        try:
            return os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except (AttributeError, ChildProcessError):  # no waitid (not POSIX)
            return self.process.poll() is None

    def kill(self) -> None:
        """End the worker and everything in its process group (what its job started), and reap it.
        The group is signalled while the worker is unreaped: its pid, the group's id, cannot have
        been given to another process yet."""
        if self.process.returncode is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError, AttributeError):
                self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()

    def send(self, function: str, args: tuple, kwargs: dict) -> None:
        """A job: large bytes arguments out of band (written from where they lie)."""
        args = tuple(_out_of_band(a) for a in args)
        kwargs = {k: _out_of_band(v) for k, v in kwargs.items()}
        buffers: list[pickle.PickleBuffer] = []
        data = pickle.dumps((function, args, kwargs), protocol=5, buffer_callback=buffers.append)
        raw = [buffer.raw() for buffer in buffers]
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(_RESULT.pack(len(data), len(raw)) + struct.pack(f"<{len(raw)}Q", *(r.nbytes for r in raw)) + data)
        for view in raw:
            stdin.write(view)
        stdin.flush()
        self.job_cpu_s = self.cpu_s

    def receive(self, budget: Budget, spent: list[float], scratch: list[np.ndarray] | None = None) -> Any:
        """One message; `spent[0]` accumulates the seconds waited. Kills the worker past a budget.
        `scratch`: the previous message's buffers, reused where the sizes match (then replaced)."""
        size, count = _RESULT.unpack(self._read(_RESULT.size, budget, spent))
        lengths = struct.unpack(f"<{count}Q", self._read(8 * count, budget, spent)) if count else ()
        data = self._read(size, budget, spent)
        buffers = []
        for k, length in enumerate(lengths):
            reuse = scratch is not None and k < len(scratch) and scratch[k].size == length
            buffers.append(self._read_into(scratch[k] if reuse else np.empty(length, np.uint8), budget, spent))
        if scratch is not None:
            scratch[:] = buffers
        return pickle.loads(data, buffers=buffers)

    def _read(self, n: int, budget: Budget, spent: list[float]) -> bytearray:
        return self._read_into(bytearray(n), budget, spent)

    def _read_into(self, buffer, budget: Budget, spent: list[float]):
        """Fill `buffer` from the worker's pipe and return it."""
        view = memoryview(buffer).cast("B")
        done, n = 0, len(view)
        while done < n:
            start = time.monotonic()
            ready, _, _ = select.select([self.out_fd], [], [], _POLL_S)
            spent[0] += time.monotonic() - start
            if spent[0] > budget.time_s:
                self.kill()
                raise BudgetExceeded("decode_timeout", f"no result within the budget of {budget.time_s:g} s")
            if ready:
                got = os.readv(self.out_fd, [view[done:]])
                if not got:
                    self.kill()  # what it started goes with it
                    code = self.process.returncode
                    name = signal.Signals(-code).name if code < 0 else f"exit code {code}"
                    raise BudgetExceeded("decoder_crashed", f"the decoding process died ({name})")
                done += got
                continue
            rss = _rss_mb(self.process.pid)
            if rss > budget.memory_mb:
                self.kill()
                raise BudgetExceeded("decode_memory", f"decoder used {rss:.0f} MB > budget {budget.memory_mb} MB")
            if spent[0] > budget.time_s:
                self.kill()
                raise BudgetExceeded("decode_timeout", f"no result within the budget of {budget.time_s:g} s")
            if budget.cpu_s is not None:
                used = _cpu_s(self.process.pid)
                if used is not None and used - self.job_cpu_s > budget.cpu_s:
                    self.kill()
                    raise BudgetExceeded("decode_timeout", f"over the budget of {budget.cpu_s:g} CPU-seconds")
        return buffer


_LOCAL = threading.local()
_ALL: list[_Worker] = []
_ALL_LOCK = threading.Lock()  # threads start workers (their own) and forget ended ones at once


def _new_lock_in_child() -> None:  # a fork while another thread held it must not leave it held
    global _ALL_LOCK
    _ALL_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)


def _worker(pool: str) -> _Worker:
    """This thread's worker of `pool` (jobs that load conflicting native libraries use different
    pools), started when missing, dead, or inherited from another process by a fork."""
    workers = getattr(_LOCAL, "workers", None)
    if workers is None:
        workers = _LOCAL.workers = {}
    worker = workers.get(pool)
    if worker is None or worker.owner != os.getpid() or not worker.alive():
        if worker is not None and worker.owner == os.getpid():
            worker.kill()  # waited for: its pipes closed, and forgotten below
        worker = workers[pool] = _Worker()
        with _ALL_LOCK:
            _ALL[:] = [w for w in _ALL if w.owner != os.getpid() or w.process.returncode is None]
            _ALL.append(worker)
    return worker


@atexit.register
def _stop_all() -> None:
    """End this process's workers and wait for them (also for a process that leaves by `os._exit`,
    which skips atexit: its workers would outlive it, unwaited)."""
    with _ALL_LOCK:
        workers = list(_ALL)
    for worker in workers:
        if worker.owner != os.getpid():
            continue  # a forked child leaves its parent's workers alone
        try:
            worker.kill()
        except Exception:
            pass


def _out_of_band(value: Any) -> Any:
    """A large bytes argument as a buffer pickle writes out of band (it arrives as bytes)."""
    if type(value) is bytes and len(value) >= OUT_OF_BAND_BYTES:
        return pickle.PickleBuffer(value)
    return value


def run(function: str, *args: Any, budget: Budget = Budget(), pool: str = "default", scratch: bool = False,
        use: JobUse | None = None, **kwargs: Any) -> Iterator[Any]:
    """Call `function` ("module:name") in the worker; yield its result (or each item it generates).

    Raises BudgetExceeded (the worker is killed) or JobError (the job raised; the worker lives on).
    Stopping the iteration early kills the worker, whose job may still be running.
    `scratch`: an item's arrays are read into the previous item's buffers (no fresh memory per
    item), so they are only valid until the next item is asked for: copy what is kept.
    `use`: filled in with what the job has used of its budget at each answer (`JobUse.left`).
    """
    worker = _started(function, args, kwargs, pool)
    spent = [0.0]
    finished = False
    buffers: list[np.ndarray] | None = [] if scratch else None
    try:
        while True:
            kind, value, worker.cpu_s = worker.receive(budget, spent, buffers)
            if use is not None:
                use.wall_s, use.cpu_s = spent[0], worker.cpu_s - worker.job_cpu_s
            if (kind == "item" and budget.cpu_s is not None
                    and worker.cpu_s - worker.job_cpu_s > budget.cpu_s):
                # judged at every item: a job streaming its results is never waited on a whole
                # `_POLL_S`, where `_read_into` looks at /proc, and worked on past its budget. A
                # job's last answer (its value, or the end of its items) is taken: its work is done,
                # and a count a little over the budget, which varies with the machine's load, must
                # not turn a finished result into a reject
                finished = True
                worker.kill()
                raise BudgetExceeded("decode_timeout", f"over the budget of {budget.cpu_s:g} CPU-seconds")
            if kind == "item":
                yield value
            elif kind == "value":  # a function's one result: nothing follows it
                finished = True
                yield value
                return
            elif kind == "done":
                finished = True
                return
            else:
                finished = True
                raise JobError(*value)
    except BudgetExceeded:
        finished = True
        raise
    finally:
        if not finished:  # abandoned mid-job (or the pipe broke): the worker's state is unknown
            worker.kill()


def _started(function: str, args: tuple, kwargs: dict, pool: str) -> _Worker:
    """The pool's worker, given the job. A fresh worker imports the job's module first, before the
    job's clocks start; a worker found ended when the job is written to it (it died idle, after
    `_worker` saw it alive) is replaced once: the job never started."""
    for attempt in (0, 1):
        worker = _worker(pool)
        module = function.partition(":")[0]
        try:
            if module not in worker.modules:
                list(run("sources.budget:_import", module, budget=Budget(STARTUP_S), pool=pool))
                worker.modules.add(module)
            worker.send(function, args, kwargs)
            return worker
        except OSError:
            worker.kill()
            if attempt:
                raise
    raise AssertionError("unreachable")


def call(function: str, *args: Any, budget: Budget = Budget(), pool: str = "default", **kwargs: Any) -> Any:
    """`run` for a job that returns one value."""
    (value,) = list(run(function, *args, budget=budget, pool=pool, **kwargs))
    return value


# -- the worker side ----------------------------------------------------------------------------
def _resolve(name: str):
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _import(module: str) -> None:
    """A fresh worker's first job for a module: its import, timed apart from the jobs (`run`)."""
    if module != __name__:
        importlib.import_module(module)


SEND_AHEAD_BYTES = 16 << 20  # results a job may have waiting for the parent before it is held


class _Sender:
    """Writes the worker's messages from a thread, so a job runs on while the parent is busy (with
    the clips it already has, or waiting for a core on a loaded machine) instead of stopping each
    time the pipe is full: up to `SEND_AHEAD_BYTES` of results wait (one result, however large,
    always may; the job is held before its next result until they drop under the limit). Items
    must not be changed after they are yielded: their arrays are written from where they lie."""

    def __init__(self, channel) -> None:
        self.channel = channel
        self.pending: collections.deque = collections.deque()
        self.bytes = 0
        self.error: BaseException | None = None
        self.ready = threading.Condition()
        threading.Thread(target=self._write, daemon=True, name="budget-sender").start()

    def send(self, message: Any) -> None:
        buffers: list[pickle.PickleBuffer] = []
        data = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
        raw = [buffer.raw() for buffer in buffers]  # contiguous arrays' memory, not copied
        head = _RESULT.pack(len(data), len(raw)) + struct.pack(f"<{len(raw)}Q", *(r.nbytes for r in raw))
        size = len(head) + len(data) + sum(r.nbytes for r in raw)
        with self.ready:
            self.pending.append((head + data, raw, size))
            self.bytes += size
            self.ready.notify_all()
            while self.bytes > SEND_AHEAD_BYTES and self.error is None:
                self.ready.wait()
            if self.error is not None:
                raise self.error

    def _write(self) -> None:
        while True:
            with self.ready:
                while not self.pending:
                    self.ready.wait()
                data, raw, size = self.pending[0]
            try:
                self.channel.write(data)
                for view in raw:
                    self.channel.write(view)
                self.channel.flush()
            except BaseException as exc:  # the parent went away
                with self.ready:
                    self.error = exc
                    self.ready.notify_all()
                return
            with self.ready:
                self.pending.popleft()
                self.bytes -= size
                self.ready.notify_all()


ORPHAN_CHECK_S = 0.5  # how often a decoding process looks whether the process it serves is still there


def _end_when_orphaned(parent: int) -> None:
    """End this process once `parent` is gone (at once if it already is). It notices at its next
    read of the channel otherwise, which a job inside a decode does not make: its limits are its
    parent's to enforce, so a worker killed mid-job (`kill -9`, a stopped build's
    `local_runner.stop_worker`) left it decoding on without any (rev54b: a hung decode forever,
    adopted by init). `parent` is the pid the worker was told (`_Worker`), not `os.getppid()` at
    its start: a parent ended before then made that init, watched for ever."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK_S)
        if os.getpgid(0) == os.getpid():  # its own group (`_Worker`): whatever its job started goes too
            os.killpg(0, signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def _serve(parent: int) -> None:
    from sources import fsio  # the tasks' own module: imported by the first of them anyway

    _end_when_orphaned(parent)

    channel_in = os.fdopen(os.dup(0), "rb")
    channel_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything C code prints to stdout goes to stderr, not into the channel
    sender = _Sender(channel_out)

    def send(kind: str, value: Any) -> None:  # with this process's CPU seconds so far (`Budget.cpu_s`)
        sender.send((kind, value, time.process_time()))

    while True:
        header = channel_in.read(_RESULT.size)
        if len(header) < _RESULT.size:
            return  # the parent went away
        size, count = _RESULT.unpack(header)
        lengths = struct.unpack(f"<{count}Q", channel_in.read(8 * count)) if count else ()
        data = channel_in.read(size)
        buffers = [channel_in.read(length) for length in lengths]
        if len(data) < size or any(len(b) < n for b, n in zip(buffers, lengths)):
            return
        function, args, kwargs = pickle.loads(data, buffers=buffers)
        try:
            with fsio.heads_read_once():  # a task's files sniffed once (a video's opens: its GIF bytes)
                result = _resolve(function)(*args, **kwargs)
                if isinstance(result, GeneratorType):
                    for item in result:
                        send("item", item)
                    send("done", None)
                else:
                    send("value", result)
        except Exception as exc:
            send("error", (type(exc).__name__, str(exc)[:500], getattr(exc, "reason", None),
                           getattr(exc, "detail", None), exc.errno if isinstance(exc, OSError) else None))


if __name__ == "__main__":
    _serve(int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid())
