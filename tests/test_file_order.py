"""`make test` hands its workers whole test files, the longest first (`file_order`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from file_order import SECONDS, longest_first, measured_seconds, seconds_from_junit

REPO = Path(__file__).resolve().parent.parent


def test_files_come_longest_first_each_files_tests_together_in_their_order():
    paths = ["a.py", "b.py", "a.py", "c.py", "b.py", "d.py", "d.py", "d.py"]
    order = longest_first(paths, {"a.py": 5.0, "b.py": 90.0, "c.py": 5.0})
    # b measured longest; d not measured: a second a test (3 s); a and c tie: collection order
    assert [paths[index] for index in order] == ["b.py", "b.py", "a.py", "a.py", "c.py", "d.py", "d.py", "d.py"]
    assert order[:2] == [1, 4] and order[2:4] == [0, 2]


def test_the_measured_table_covers_the_suites_files_and_is_read_from_a_junit_report(tmp_path):
    table = measured_seconds()
    files = sorted(str(path.relative_to(REPO)) for path in (REPO / "tests").glob("test_*.py"))
    measured = [path for path in files if path in table]
    assert len(measured) >= 0.9 * len(files), sorted(set(files) - set(table))  # refresh: see file_order
    assert table["tests/test_dask.py"] > 10 * sorted(table.values())[len(table) // 2]  # a long file: many times the median
    report = tmp_path / "junit.xml"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                          f"--junitxml={report}", "tests/test_file_order.py::"
                          "test_files_come_longest_first_each_files_tests_together_in_their_order"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    seconds = seconds_from_junit(report)
    assert list(seconds) == ["tests/test_file_order.py"] and 0 <= seconds["tests/test_file_order.py"] < 30
    assert SECONDS.parent == REPO / "tests"
