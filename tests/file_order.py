"""Test files in the order that ends a parallel run soonest: the longest first.

`make test` hands whole files to its workers (`--dist loadfile`), in collection order
(`--no-loadscope-reorder`; pytest-xdist's own reorder sorts by test count, so a file of a few long
tests, test_dask.py's 37 cluster builds, started last and ran alone at the end). Each file's
seconds come from a measured run (`file_seconds.json`, written by `python tests/file_order.py
JUNIT.xml` from a `--junitxml` report); a file not measured yet counts a second a test. Within a
file the order is untouched."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

SECONDS = Path(__file__).resolve().parent / "file_seconds.json"
UNMEASURED_SECONDS_A_TEST = 1.0


def measured_seconds() -> dict[str, float]:
    """File (`tests/test_x.py`) -> seconds its tests took in the measured run."""
    try:
        return json.loads(SECONDS.read_text())
    except (OSError, ValueError):
        return {}


def longest_first(paths: list[str], seconds: dict[str, float]) -> list[int]:
    """Indexes of `paths` (one a test, its file's path) so that files come longest first, each
    file's tests together in their own order; ties keep the collection order."""
    counts: dict[str, int] = defaultdict(int)
    first: dict[str, int] = {}
    for index, path in enumerate(paths):
        counts[path] += 1
        first.setdefault(path, index)

    def cost(path: str) -> float:
        return seconds.get(path, counts[path] * UNMEASURED_SECONDS_A_TEST)

    order = sorted(first, key=lambda path: (-cost(path), first[path]))
    rank = {path: place for place, path in enumerate(order)}
    return sorted(range(len(paths)), key=lambda index: (rank[paths[index]], index))


def seconds_from_junit(report: Path) -> dict[str, float]:
    """Each test file's seconds (setup, call and teardown) in a pytest `--junitxml` report."""
    totals: dict[str, float] = defaultdict(float)
    for case in ElementTree.parse(report).iter("testcase"):
        module = case.get("classname", "").split(".")
        files = [".".join(module[:end]) for end in range(len(module), 0, -1)]
        name = next((f for f in files if (SECONDS.parent.parent / (f.replace(".", "/") + ".py")).exists()), None)
        if name is not None:
            totals[name.replace(".", "/") + ".py"] += float(case.get("time", 0))
    return {path: round(total, 1) for path, total in sorted(totals.items())}


if __name__ == "__main__":
    measured = seconds_from_junit(Path(sys.argv[1]))
    SECONDS.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
    print(f"{len(measured)} files, {sum(measured.values()):.0f} s in all -> {SECONDS}")
