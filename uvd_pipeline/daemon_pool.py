"""A fixed pool of daemon threads: work a process shares for as long as it lives.

`concurrent.futures.ThreadPoolExecutor` threads are not daemons: a process that keeps one for its
whole life cannot leave without shutting it down, and `cli.leave` (which skips the interpreter's
slow teardown) waits the usual way while such a thread lives. These threads never hold a process
up: what they run is only ever waited for by the caller that submitted it.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class DaemonPool:
    """`workers` daemon threads taking (function, arguments) in submission order."""

    def __init__(self, workers: int, name: str) -> None:
        if workers < 1:
            raise ValueError(f"a pool needs at least one worker, not {workers}")
        self._tasks: queue.SimpleQueue[tuple[Future, Callable[..., Any], tuple]] = queue.SimpleQueue()
        self._pid = os.getpid()
        self.workers = workers
        for i in range(workers):
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True).start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        if os.getpid() != self._pid:
            raise RuntimeError("a DaemonPool does not survive a fork: make a new one in the child")
        future: Future = Future()
        self._tasks.put((future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            future, fn, args = self._tasks.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, who re-raises it
                future.set_exception(exc)
            else:
                future.set_result(result)


class PerProcess(Generic[T]):
    """A value made on first use, once per process: a forked child makes its own (a pool's threads,
    and the state they guard, do not cross a fork)."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._value: T | None = None
        os.register_at_fork(after_in_child=self._forget)

    def get(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._make()
            return self._value

    def _forget(self) -> None:
        self._value, self._lock = None, threading.Lock()


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
