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
from dataclasses import dataclass
from pathlib import Path
from types import GeneratorType
from typing import Any, Iterator

import numpy as np

_HEADER = struct.Struct("<Q")
_RESULT = struct.Struct("<QQ")  # a result's pickle length and how many out-of-band buffers follow it
_POLL_S = 0.2


@dataclass(frozen=True)
class Budget:
    """Limits of one job: wall seconds spent waiting on the worker, and its resident memory."""

    time_s: float = 600.0
    memory_mb: int = 1536  # a video's decoding process; its declared cost is judged against it first


class BudgetExceeded(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason  # decode_timeout | decode_memory | decoder_crashed
        self.detail = detail


class JobError(Exception):
    """The job raised; carries the exception's type name, message and (for VideoError) reason."""

    def __init__(self, kind: str, message: str, reason: str | None, detail: str | None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.reason, self.detail = kind, message, reason, detail


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
        self.process = subprocess.Popen([sys.executable, "-m", "sources.budget"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env, close_fds=True)
        self.out_fd = self.process.stdout.fileno()  # type: ignore[union-attr]
        self.owner = os.getpid()
        _widen(self.out_fd)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()

    def send(self, message: Any) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        assert self.process.stdin is not None
        self.process.stdin.write(_HEADER.pack(len(data)) + data)
        self.process.stdin.flush()

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
                    code = self.process.wait()
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
        return buffer


_LOCAL = threading.local()
_ALL: list[_Worker] = []


def _worker(pool: str) -> _Worker:
    """This thread's worker of `pool` (jobs that load conflicting native libraries use different
    pools), started when missing, dead, or inherited from another process by a fork."""
    workers = getattr(_LOCAL, "workers", None)
    if workers is None:
        workers = _LOCAL.workers = {}
    worker = workers.get(pool)
    if worker is None or worker.owner != os.getpid() or not worker.alive():
        worker = workers[pool] = _Worker()
        _ALL.append(worker)
    return worker


@atexit.register
def _stop_all() -> None:
    for worker in _ALL:
        if worker.owner != os.getpid():
            continue  # a forked child leaves its parent's workers alone
        try:
            worker.kill()
        except Exception:
            pass


def run(function: str, *args: Any, budget: Budget = Budget(), pool: str = "default", scratch: bool = False,
        **kwargs: Any) -> Iterator[Any]:
    """Call `function` ("module:name") in the worker; yield its result (or each item it generates).

    Raises BudgetExceeded (the worker is killed) or JobError (the job raised; the worker lives on).
    Stopping the iteration early kills the worker, whose job may still be running.
    `scratch`: an item's arrays are read into the previous item's buffers (no fresh memory per
    item), so they are only valid until the next item is asked for: copy what is kept.
    """
    worker = _worker(pool)
    spent = [0.0]
    finished = False
    buffers: list[np.ndarray] | None = [] if scratch else None
    try:
        worker.send((function, args, kwargs))
        while True:
            kind, value = worker.receive(budget, spent, buffers)
            if kind == "item":
                yield value
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


def call(function: str, *args: Any, budget: Budget = Budget(), pool: str = "default", **kwargs: Any) -> Any:
    """`run` for a job that returns one value."""
    (value,) = list(run(function, *args, budget=budget, pool=pool, **kwargs))
    return value


# -- the worker side ----------------------------------------------------------------------------
def _resolve(name: str):
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


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


def _serve() -> None:
    channel_in = os.fdopen(os.dup(0), "rb")
    channel_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything C code prints to stdout goes to stderr, not into the channel
    send = _Sender(channel_out).send

    while True:
        header = channel_in.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return  # the parent went away
        function, args, kwargs = pickle.loads(channel_in.read(_HEADER.unpack(header)[0]))
        try:
            result = _resolve(function)(*args, **kwargs)
            if isinstance(result, GeneratorType):
                for item in result:
                    send(("item", item))
            else:
                send(("item", result))
            send(("done", None))
        except Exception as exc:
            send(("error", (type(exc).__name__, str(exc)[:500], getattr(exc, "reason", None),
                            getattr(exc, "detail", None))))


if __name__ == "__main__":
    _serve()
