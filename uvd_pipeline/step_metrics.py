"""Beam metrics and progress lines of the build's steps: what a person watching a build sees.

Counters are named `<source>.<what>` in one namespace; distributions carry stage timings in
microseconds and item counts (remote runners show both live; the summary keeps them).

Beam is imported on the first metric, not with this module: the render code that reports through
it also runs before Beam is imported (`uvd_pipeline.early_render`), and records its metrics
(`recorded`) for the step that takes its work over to report (`replay`)."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import threading
import time
from collections import Counter
from typing import Any, Iterable, Iterator

log = logging.getLogger(__name__)
NAMESPACE = "uvd"

MetricRecord = tuple[str, str, float]  # ("count" | "distribution", name, value)
_RECORDING: contextvars.ContextVar[list[MetricRecord] | None] = contextvars.ContextVar("uvd_metrics", default=None)


@contextlib.contextmanager
def recorded() -> Iterator[list[MetricRecord]]:
    """Inside the block (this thread only), metrics are kept in the yielded list instead of being
    reported: work done outside any Beam step reports them through the step that uses it."""
    records: list[MetricRecord] = []
    token = _RECORDING.set(records)
    try:
        yield records
    finally:
        _RECORDING.reset(token)


def replay(records: Iterable[MetricRecord]) -> None:
    """Report metrics kept by `recorded`, in the calling step."""
    for kind, name, value in records:
        if kind == "count":
            _metrics().counter(NAMESPACE, name).inc(int(value))
        else:
            _metrics().distribution(NAMESPACE, name).update(int(value))


@functools.cache
def _metrics() -> Any:
    from apache_beam.metrics import Metrics

    return Metrics


def count(source: str, name: str, n: int = 1) -> None:
    records = _RECORDING.get()
    if records is not None:
        records.append(("count", f"{source}.{name}", n))
        return
    _metrics().counter(NAMESPACE, f"{source}.{name}").inc(n)


class StageProgress:
    """Per worker process: how many items each stage has done, logged at most every few seconds.
    The local runner returns Beam metrics only when the job ends, so this is what a person watching
    a local build sees move; remote runners show the counters and distributions live."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self.done: Counter[str] = Counter()
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def add(self, stage: str, n: int = 1) -> None:
        with self.lock:
            self.done[stage] += n
            now = time.monotonic()
            if now - self.last < self.every_s:
                return
            self.last = now
            counts = ", ".join(f"{name} {self.done[name]:,}" for name in STAGE_ORDER if self.done[name])
        log.info("worker %d progress: %s", os.getpid(), counts)


STAGE_ORDER = ("read records", "rendered", "assembled sentences", "written sentences", "tokenized images")


PROGRESS = StageProgress()


def distribution(name: str, value: float) -> None:
    """A Beam Distribution (count, sum, min, max): stage timings in microseconds, item counts,
    input sizes; remote runners show them live, and the summary keeps them (`run.distributions`)."""
    records = _RECORDING.get()
    if records is not None:
        records.append(("distribution", name, value))
        return
    _metrics().distribution(NAMESPACE, name).update(int(value))


def timed(items: Iterable[Any], clock: list[float]) -> Iterator[Any]:
    """Yield from `items`, adding to clock[0] only the time spent producing them."""
    iterator = iter(items)
    while True:
        start = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            clock[0] += time.perf_counter() - start
            return
        clock[0] += time.perf_counter() - start
        yield item
