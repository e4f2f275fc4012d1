"""How torch's OpenMP threads wait, A/B on the trainer demo's fit: `python benchmarks/omp_wait_ab.py BUILD_OUT`.

Runs `python -m trainer.fit` with the demo's settings (tiny, seq 1024, batch 2) for `--steps`
steps on BUILD_OUT's token shards, once per variant per round, the order reversed every other
round so machine load hits all alike, optionally next to `--load` busy Python loops (a busy
laptop). Prints each run and the medians of wall and CPU seconds (user + sys of the child) and
the last logged loss (equal across wait settings: they do not change the arithmetic).

Variants: `spin10k` (what `trainer.omp_wait` sets), `passive`, `spin` (libgomp's default,
300,000 rounds). Not a `bench_*` script: it needs a finished build, so `make bench` leaves it out.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {"spin10k": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "spin": {"GOMP_SPINCOUNT": "300000"}}


def fit_once(build: str, steps: int, env_extra: dict[str, str]) -> dict[str, float]:
    """One fit in a child process: wall, CPU seconds, last loss."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    env.update(env_extra, PYTHONPATH=ROOT)
    with tempfile.TemporaryDirectory(prefix="omp-wait-") as out:
        command = [sys.executable, "-m", "trainer.fit", "--data", os.path.join(build, "tokens", "**", "*.arrow"),
                   "--out", out, "--preset", "tiny", "--split", "train", "--seq-len", "1024", "--batch-size", "2",
                   "--max-steps", "300", "--stop-at", str(steps), "--lr", "3e-3", "--min-lr", "3e-4",
                   "--warmup-steps", "30", "--checkpoint-every", "0", "--log-every", str(steps), "--seed", "0",
                   "--quiet"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started, load = time.perf_counter(), os.getloadavg()[0]
        subprocess.run(command, env=env, check=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(os.path.join(out, "log.jsonl"), encoding="utf-8") as handle:
            last = [json.loads(line)["loss"] for line in handle][-1]
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"wall": wall, "cpu": cpu, "load": (load + os.getloadavg()[0]) / 2, "loss": last}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("build", help="a finished build's output folder (with tokens/)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load", type=int, default=0, help="busy Python loops running alongside")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    args = parser.parse_args()
    names = args.variants.split(",")
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    try:
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                runs[name].append(fit_once(args.build, args.steps, VARIANTS[name]))
                print(name, json.dumps(runs[name][-1]), flush=True)
    finally:
        for hog in hogs:
            hog.kill()
    print(f"{args.steps} steps, {args.load} busy loops alongside, medians of {args.rounds}:")
    for name, rows in runs.items():
        median = {key: statistics.median(row[key] for row in rows) for key in ("wall", "cpu", "load")}
        print(f"  {name:8s} wall {median['wall']:6.1f} s  CPU {median['cpu']:6.1f} s  load {median['load']:.1f}  "
              f"last loss {sorted({row['loss'] for row in rows})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
