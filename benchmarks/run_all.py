"""`make bench`: run every benchmarks/bench_*.py in its own process and print one table."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.environ.get("UVD_BENCH_OUT", "bench_out")


def main() -> int:
    scripts = sorted(glob.glob(os.path.join(HERE, "bench_*.py")))
    only = sys.argv[1:]
    rows = []
    failed = []
    for script in scripts:
        name = os.path.basename(script)[len("bench_"):-3]
        if only and name not in only:
            continue
        print(f"== {name}", flush=True)
        proc = subprocess.run([sys.executable, script], env={**os.environ, "UVD_BENCH_OUT": OUT_DIR})
        result_path = os.path.join(OUT_DIR, f"{name}.json")
        if proc.returncode != 0 or not os.path.exists(result_path):
            failed.append(name)
            continue
        with open(result_path) as handle:
            rows += json.load(handle)["rows"]
    header = ("metric", "ours", "baseline", "speedup", "target", "met", "note")
    table = [header] + [tuple(str(r.get(k, "")) for k in header) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print()
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
