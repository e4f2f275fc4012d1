"""Shared bits for benchmarks: timing and the result format run_all.py prints as a table."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable

OUT_DIR = os.environ.get("UVD_BENCH_OUT", "bench_out")


def rate(fn: Callable[[], int], min_seconds: float = 2.0) -> float:
    """Items per second of `fn` (which returns how many items it processed), after one warm-up."""
    fn()
    done = 0
    started = time.perf_counter()
    while True:
        done += fn()
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return done / elapsed


def emit(name: str, rows: list[dict]) -> None:
    """Write rows {metric, ours, baseline, unit, target, note} for run_all.py and print them."""
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, f"{name}.json"), "w") as handle:
        json.dump({"benchmark": name, "rows": rows}, handle, indent=1)
    json.dump({"benchmark": name, "rows": rows}, sys.stdout, indent=1)
    print()
