"""The Beam build's Tokenize stage on a GPU against the codec's own rate, in one run.

Input: `--images` (5,000) JPEGs of 320-720 px, crops of the bundled real photos, in img2dataset
tars written by the sample corpus's writer; one `laion` source, dedup off (every image reaches
Tokenize), the local runner with `--workers` worker processes. The tokenizer is an LVM-size VQGAN
(random weights, codebook spread like its features, as in `bench_tokenizer.py`) saved in muse
format and named by the build config: device cuda, fp16, compile, batch 64. The workers run in
the local runner's default mode unless `--mode` says otherwise (as threads, they share one model
and one compile; as processes, each loads and compiles its own).

- stage: images tokenized / the Tokenize stage's wall span across workers (first shard started
  to last shard finished, from the build's `stage.tokenize_clock_ms` distribution). The span
  includes the compile; "steady" takes the longest encode call (the compiling first batch) off it.
- codec: `Tokenizer.encode` with the same settings over the build's own rendered images, read
  back from its shards, after a warm-up call: the rate the stage is held to (target >= 70%). The
  token shards, read with pyarrow alone, are compared with the codec's codes for the same images.

    python benchmarks/bench_gpu_build.py [--images 5000] [--workers 8] [--shards 40] [--mode auto] [--device cuda]

Writes `gpu_build.json` (rows for `make bench`) in `$UVD_BENCH_OUT` (default bench_out/); without a
GPU it reports "not measured" (`--device cpu --model tiny` runs the same steps on a CPU).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from multiprocessing import Pool

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [HERE, REPO]

import numpy as np  # noqa: E402

TARGET = 0.70
SHARD_IMAGES = 250


def _write_shard(job: tuple[str, int, int]) -> int:
    """One img2dataset tar of `count` JPEG crops (320-720 px on the long side)."""
    import cv2
    from PIL import Image

    from uvd_pipeline.sample import media
    from uvd_pipeline.sample.web import ShardWriter

    root, shard, count = job
    names = sorted(name for name, _, _ in media.PHOTOS)
    photos = {name: media.photo(name) for name in names}
    writer = ShardWriter(root, shard)
    for index in range(count):
        rng = np.random.default_rng([shard, index])
        name = names[(shard * SHARD_IMAGES + index) % len(names)]
        base = photos[name]
        h, w = base.shape[:2]
        side = int(min(h, w) * rng.uniform(0.3, 1.0))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        long_side = int(rng.integers(320, 721))
        crop = cv2.resize(np.ascontiguousarray(base[y:y + side, x:x + side]), (long_side, long_side),
                          interpolation=cv2.INTER_AREA)
        buf = io.BytesIO()
        Image.fromarray(crop).save(buf, "JPEG", quality=90)
        key = f"{shard:05d}{index:04d}"
        writer.add(key, buf.getvalue(), "jpg", f"a photo of {name}", f"http://bench.invalid/{key}.jpg",
                   (long_side, long_side))
    writer.close()
    return count


def write_input(root: str, images: int) -> int:
    os.makedirs(root, exist_ok=True)
    jobs = [(root, s, min(SHARD_IMAGES, images - s * SHARD_IMAGES)) for s in range(-(-images // SHARD_IMAGES))]
    with Pool(min(len(jobs), os.cpu_count() or 1)) as pool:
        return sum(pool.map(_write_shard, jobs))


def write_checkpoint(folder: str, size: str) -> None:
    from bench_tokenizer import lvm_model, photos

    from tokenizer import checkpoint
    from tokenizer.config import TINY
    from tokenizer.model import build

    model = lvm_model(photos()) if size == "lvm" else build(TINY, seed=0)
    checkpoint.save(model, folder)


def write_config(path: str, data: str, output: str, checkpoint: str, device: str, workers: int, shards: int,
                 mode: str = "auto") -> None:
    import yaml

    config = {
        "version": 1, "output": output, "seed": 0,
        "image": {"size": 256, "resize": "center_crop"},
        "dedup": {"enabled": False},
        "sources": [{"name": "web", "type": "laion", "path": data, "num_shards": shards, "num_val_shards": 1}],
        "tokenizer": {"checkpoint": checkpoint, "device": device, "batch_size": 64, "compile": True,
                      "precision": "fp16" if device == "cuda" else "fp32"},
        "beam": {"runner": "DirectRunner", "direct_num_workers": workers, "direct_running_mode": mode},
    }
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)


def rendered_images_and_tokens(output: str) -> tuple[np.ndarray, np.ndarray]:
    """The build's rendered images (our shard reader, which checks each tar's digest) and the codes
    its token shards hold for them, read with pyarrow alone: (N, H, W, 3) uint8, (N, tokens) uint16."""
    import pyarrow.ipc as ipc

    from uvd_pipeline.render import decode_png
    from uvd_pipeline.rendered_shards import iter_shard

    images, codes = [], []
    for dirpath, _, files in sorted(os.walk(os.path.join(output, "rendered"))):
        for name in sorted(files):
            if not name.endswith(".tar") or ".tmp-" in name:
                continue
            images += [decode_png(png) for s in iter_shard(os.path.join(dirpath, name)) for png in s.images]
            arrow = os.path.join(dirpath.replace(os.path.join(output, "rendered"), os.path.join(output, "tokens"), 1),
                                 name[: -len(".tar")] + ".arrow")
            with ipc.open_file(arrow) as reader:
                column = reader.read_all().column("tokens")
            codes += [np.asarray(row, dtype=np.uint16) for row in column.to_pylist()]
    return np.stack(images), np.stack(codes)


def codec_rate(checkpoint: str, device: str, images: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Images/s of `Tokenizer.encode` with the build's settings (best of two passes), its first
    call's seconds, and the codes."""
    import torch

    from tokenizer.codec import Tokenizer

    tok = Tokenizer.from_pretrained(checkpoint, device=device, batch_size=64, compile=True,
                                    precision="fp16" if device == "cuda" else "fp32", threads=1 if device == "cpu" else None)
    started = time.perf_counter()
    tok.encode(images[:64])
    first = time.perf_counter() - started
    best, codes = float("inf"), None
    for _ in range(2):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        codes = tok.encode(images)
        best = min(best, time.perf_counter() - started)
    return len(images) / best, first, codes


class CpuTimeline:
    """Busy cores of the whole machine every `every` s (from /proc/stat; nothing elsewhere), to tell
    whether a stage that falls short was short of CPU or of something else (Python's lock)."""

    def __init__(self, every: float = 0.2) -> None:
        import threading

        self.samples: list[tuple[float, float]] = []  # (epoch s at the interval's end, busy cores)
        self._every, self._stop = every, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _times() -> tuple[float, float] | None:
        try:
            with open("/proc/stat") as handle:
                fields = [float(v) for v in handle.readline().split()[1:]]
        except OSError:
            return None
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait (clock ticks)

    def _run(self) -> None:
        last = self._times()
        while last is not None and not self._stop.wait(self._every):
            now = self._times()
            total, idle = now[0] - last[0], now[1] - last[1]
            if total > 0:
                self.samples.append((time.time(), (os.cpu_count() or 1) * (total - idle) / total))
            last = now

    def __enter__(self) -> "CpuTimeline":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def mean_busy(self, start: float, end: float) -> float | None:
        """Mean busy cores over the samples that ended within [start, end] (epoch s)."""
        inside = [busy for at, busy in self.samples if start <= at <= end]
        return sum(inside) / len(inside) if inside else None


def not_measured(why: str) -> list[dict]:
    return [{"metric": "Beam build Tokenize stage on a GPU vs the codec (images/s)", "ours": "not measured",
             "baseline": "", "speedup": "", "target": f">= {TARGET:.0%} of the codec's rate", "met": "", "note": why}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--shards", type=int, default=40, help="output shards (train; one more for val)")
    parser.add_argument("--mode", default="auto", choices=("auto", "multi_threading", "multi_processing"),
                        help="the local runner's workers: auto (the build's default: threads up to 2 workers, "
                             "processes beyond), threads of one process (one model and one compile for all), or "
                             "processes (one each)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="lvm", choices=("lvm", "tiny"))
    parser.add_argument("--work", default=os.path.join(REPO, "bench_out", "gpu_build"))
    args = parser.parse_args()
    import torch

    from common import emit

    if args.device == "cuda" and not torch.cuda.is_available():  # `make bench` on a machine without a GPU
        emit("gpu_build", not_measured("no CUDA device on this machine"))
        return
    os.makedirs(args.work, exist_ok=True)
    data, output = os.path.join(args.work, "input"), os.path.join(args.work, "build")
    checkpoint, config = os.path.join(args.work, "tokenizer"), os.path.join(args.work, "build.yaml")
    started = time.perf_counter()
    written = write_input(data, args.images)
    print(f"wrote {written} input JPEGs in {time.perf_counter() - started:.0f} s", flush=True)
    write_checkpoint(checkpoint, args.model)
    write_config(config, data, output, checkpoint, args.device, args.workers, args.shards, args.mode)
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.perf_counter()
    with CpuTimeline() as cpu:
        done = subprocess.run([sys.executable, "-m", "uvd_pipeline", "build", config, "--overwrite"],
                              cwd=REPO, env=env, capture_output=True, text=True)
    build_s = time.perf_counter() - started
    from common import OUT_DIR

    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "gpu_build_log.txt"), "w") as handle:  # the build's own log: its timeline
        handle.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"build failed ({done.returncode}):\n{done.stderr[-4000:]}")
    summary = json.load(open(os.path.join(output, "summary.json")))
    dists = summary["run"]["distributions"]
    clock, batches = dists["stage.tokenize_clock_ms"], dists["tokenize.batch_us"]
    tokenized = int(dists["stage.tokenize_images"]["sum"])
    span = (clock["max"] - clock["min"]) / 1000
    steady = span - batches["max"] / 1e6
    images, built = rendered_images_and_tokens(output)
    rate, first_call, codes = codec_rate(checkpoint, args.device, images)
    same = float(np.mean(built == codes)) if built.shape == codes.shape else 0.0
    where = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    setup = (f"{tokenized} images, {args.model} tokenizer, {args.workers} workers ({args.mode}), "
             f"{'fp16' if args.device == 'cuda' else 'fp32'} compile batch 64, {where}, torch {torch.__version__}")
    stage_rate, steady_rate = tokenized / span, tokenized / steady
    # where the workers' time went, summed over shards: read (tar, digest, PNG decode), wait (blocked
    # on the codec), write (token shards)
    parts = {part: dists.get(f"tokenize.{part}_us", {}).get("sum", 0) / 1e6 for part in ("read", "wait", "write")}
    breakdown = ", ".join(f"{part} {seconds:.1f} s" for part, seconds in parts.items())
    busy = cpu.mean_busy(clock["min"] / 1000, clock["max"] / 1000)
    if busy is not None:
        breakdown += f"; the machine's busy cores during the span: {busy:.1f} of {os.cpu_count()}"
    rows = [
        {"metric": f"Beam build Tokenize stage, {setup}: images/s over the stage's span",
         "ours": round(stage_rate, 1), "baseline": round(rate, 1),
         "baseline_name": "Tokenizer.encode, same settings, the build's own images", "speedup": round(stage_rate / rate, 3),
         "target": f">= {TARGET:.0%} of the codec's rate", "met": bool(stage_rate >= TARGET * rate),
         "note": (f"span {span:.1f} s (first shard started to last finished, compile included); build {build_s:.0f} s; "
                  f"codec first call {first_call:.1f} s; the token shards' codes (read with pyarrow) equal the "
                  f"codec's for {100 * same:.2f}% of {codes.size}")},
        {"metric": f"Beam build Tokenize stage, {setup}: images/s without the longest encode call (the compile)",
         "ours": round(steady_rate, 1), "baseline": round(rate, 1), "speedup": round(steady_rate / rate, 3),
         "target": "info", "met": "", "note": (f"longest encode call {batches['max'] / 1e6:.1f} s; the workers' "
                                               f"time summed over shards: {breakdown}")},
    ]
    emit("gpu_build", rows)


if __name__ == "__main__":
    main()
