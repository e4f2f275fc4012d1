"""Peak memory of a build as its input grows tenfold.

A synthetic corpus of photo-like JPEGs (smooth random fields with noise, 600-1400 px a side) in
the img2dataset webdataset layout, at N and 10N images, with the same number of sentences per
shard (so 10x the shards, as a real larger build would have). Each build runs in a fresh process
(the local in-process runner, tokenizer on) and we read its peak RSS from the kernel
(`ru_maxrss` of the child). Flat means the 10x build's peak stays within 1.25x of the 1x
build's: everything streams, nothing holds the dataset.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from PIL import Image

from common import emit  # noqa: E402
from uvd_pipeline.tarfiles import add_member  # noqa: E402

BASE_IMAGES = int(os.environ.get("UVD_BENCH_MEMORY_IMAGES", "120"))
PER_SHARD = 40  # sentences per output shard, the same at both sizes
TARGET_RATIO = 1.25


def _image(rng: np.random.Generator) -> bytes:
    """A photo-sized JPEG: a smooth random field (no two alike), 600-1400 px on a side."""
    h, w = int(rng.integers(600, 1400)), int(rng.integers(600, 1400))
    coarse = rng.integers(0, 256, (h // 64 + 2, w // 64 + 2, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.int16)
    noise = rng.integers(-12, 12, (h, w, 3), dtype=np.int16)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(field + noise, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_corpus(folder: str, images: int, seed: int = 0) -> None:
    """img2dataset layout: tars of 100 samples with {key}.jpg/.txt/.json."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for shard, start in enumerate(range(0, images, 100)):
        with tarfile.open(os.path.join(folder, f"{shard:05d}.tar"), "w") as tar:
            for index in range(start, min(images, start + 100)):
                key = f"{shard:05d}{index % 100:04d}"
                for suffix, payload in (("jpg", _image(rng)), ("txt", f"synthetic {index}".encode()),
                                        ("json", json.dumps({"key": key, "url": f"synthetic://{index}"}).encode())):
                    add_member(tar, f"{key}.{suffix}", payload)


def peak_rss_of_build(work: str, images: int) -> tuple[float, float, int]:
    """(peak RSS MiB, seconds, sentences written) of `python -m uvd_pipeline build` over `images`
    synthetic images."""
    corpus = os.path.join(work, f"corpus-{images}")
    write_corpus(corpus, images)
    config = os.path.join(work, f"build-{images}.yaml")
    with open(config, "w") as handle:
        json.dump({"version": 1, "output": os.path.join(work, f"out-{images}"), "seed": 0,
                   "image": {"size": 256, "resize": "center_crop"}, "split": {"val_fraction": 0.05},
                   "sources": [{"name": "web", "type": "laion", "path": corpus,
                                "num_shards": max(1, images // PER_SHARD), "num_val_shards": 1}],
                   "tokenizer": {"enabled": os.environ.get("UVD_BENCH_MEMORY_TOKENIZE", "1") != "0"},
                   "beam": {"runner": "DirectRunner", "direct_num_workers": 1,
                            "direct_running_mode": "in_memory"}}, handle)
    started = time.perf_counter()
    # a fresh interpreter per build: ru_maxrss of the child is that build's own peak
    code = ("import resource, sys; from uvd_pipeline.cli import main; rc = main(['build', sys.argv[1]]); "
            "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, config], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"build of {images} images failed:\n{done.stderr[-3000:]}")
    peak_kb = next(int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("PEAK_KB"))
    with open(os.path.join(work, f"out-{images}", "summary.json")) as handle:
        sentences = json.load(handle)["totals"]["sentences"]
    return peak_kb / 1024, seconds, sentences


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="uvd-bench-memory-") as work:
        small, small_s, small_n = peak_rss_of_build(work, BASE_IMAGES)
        large, large_s, large_n = peak_rss_of_build(work, 10 * BASE_IMAGES)
    ratio = large / small
    print(f"peak RSS: {BASE_IMAGES} images -> {small_n} sentences {small:.0f} MiB ({small_s:.0f} s), "
          f"{10 * BASE_IMAGES} images -> {large_n} sentences {large:.0f} MiB ({large_s:.0f} s): {ratio:.2f}x")
    emit("memory", [{
        "metric": f"build peak RSS MiB, {10 * BASE_IMAGES} vs {BASE_IMAGES} images (10x input)",
        "ours": round(large, 1), "baseline": round(small, 1), "speedup": f"{ratio:.2f}x growth",
        "target": f"<= {TARGET_RATIO}x", "met": ratio <= TARGET_RATIO,
        "note": f"local in-process runner, {small_n} / {large_n} sentences, {PER_SHARD} per shard, "
                f"{small_s:.0f} s / {large_s:.0f} s",
    }])


if __name__ == "__main__":
    main()
