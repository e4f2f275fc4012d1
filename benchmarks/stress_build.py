"""Run one build config again and again until a run fails: for failures that come once in tens of
runs (on 2026-12-04 a dedup-on build's process sometimes decoded a corrupted bundle output in Beam's
local runner and grew until the kernel killed it at 24 GB).

Each run is `python -m uvd_pipeline build CONFIG --overwrite` (plus `--no-tokenize` unless
`--tokenize`), its stderr read line by line through a pipe (the failures were seen that way, not
with output to a file), its address space capped (`--memory-gib`, default 6) so that a runaway
allocation fails with a traceback instead of taking the machine. Stops at the first failure and
keeps that run's log; prints one line per run.

    python benchmarks/stress_build.py CONFIG [--runs 40] [--memory-gib 6] [--log stress_failure.log]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_once(config: str, tokenize: bool, memory_gib: float) -> tuple[int, float, str]:
    """(exit code, seconds, the run's stderr) of one build."""
    limit = int(memory_gib * (1 << 30))
    command = [sys.executable, "-m", "uvd_pipeline", "build", config, "--overwrite"] + ([] if tokenize else ["--no-tokenize"])
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=os.getcwd(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    lines = [line for line in process.stderr]  # read as it comes, line by line
    code = process.wait()
    return code, time.perf_counter() - started, "".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--memory-gib", type=float, default=6.0)
    parser.add_argument("--tokenize", action="store_true")
    parser.add_argument("--log", default="stress_failure.log")
    args = parser.parse_args()
    for index in range(1, args.runs + 1):
        code, seconds, log = run_once(args.config, args.tokenize, args.memory_gib)
        failed = code != 0 or "Traceback" in log
        print(f"run {index}: exit {code}, {seconds:.1f} s{' FAILED' if failed else ''}", flush=True)
        if failed:
            with open(args.log, "w") as handle:
                handle.write(log)
            print(f"its log: {args.log}")
            raise SystemExit(1)
    print(f"{args.runs} runs, none failed")


if __name__ == "__main__":
    main()
