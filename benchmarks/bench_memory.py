"""Peak memory of a build as its input grows a hundredfold.

A synthetic corpus of photo-like JPEGs (smooth random fields with noise, 600-1400 px a side) in
the img2dataset webdataset layout, at N and FACTOR x N images (default 20 and 100x: 2,000 images),
with the same number of sentences per shard (so FACTOR x the shards, as a real larger build would
have). Each build runs in a fresh process (the local runner in-process: `in_memory`, one worker)
and we read its peak RSS from the kernel: `ru_maxrss` of the build's process, or of its largest
waited-for child if that is larger (this configuration starts no worker processes: the runner,
its buffers and every DoFn live in the one process, so its own peak is the build's; the child
figure is there so a change that spawns workers cannot hide memory from the benchmark. A child
forked by the build, e.g. ctypes' `find_library` running `ldconfig`, reports the pages it shared
with the build at the fork, so its figure can equal the build's own but not exceed it unless a
child grew on its own). Flat
means the large build's peak stays within 1.25x of the small build's: everything streams,
nothing holds the dataset.

Rows: tokenizer off at FACTOR x N (the target) and at 10 x N; tokenizer on at
TOKENIZE_FACTOR x N (default 10: Tokenize encodes 3-8 images/s on the 2-core CPU machine, so
a tokenized 100x build alone takes 5-10 minutes; set UVD_BENCH_MEMORY_TOKENIZE_FACTOR=100 where
there is the time or a GPU). Each row also gives the slope, KiB of peak per extra image, which
says how far the ratio stays flat: at the slope s, the 1.25x bound is reached after
0.25 x (small peak) / s more images.

Environment: UVD_BENCH_MEMORY_IMAGES (N, default 20), UVD_BENCH_MEMORY_FACTOR (default 100),
UVD_BENCH_MEMORY_TOKENIZE (0: no tokenizer-on builds), UVD_BENCH_MEMORY_TOKENIZE_FACTOR (default 10),
UVD_BENCH_MEMORY_CORPUS (a folder that keeps the synthetic corpora between runs; default: made anew
in the run's temporary folder, about 0.1 s and 340 KB an image).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import emit  # noqa: E402
from synthetic_web import photo_jpeg, web_build_config, write_tars  # noqa: E402

BASE_IMAGES = int(os.environ.get("UVD_BENCH_MEMORY_IMAGES", "20"))
FACTOR = int(os.environ.get("UVD_BENCH_MEMORY_FACTOR", "100"))
TOKENIZE = os.environ.get("UVD_BENCH_MEMORY_TOKENIZE", "1") != "0"
TOKENIZE_FACTOR = int(os.environ.get("UVD_BENCH_MEMORY_TOKENIZE_FACTOR", "10"))
CORPUS_DIR = os.environ.get("UVD_BENCH_MEMORY_CORPUS")  # keeps the corpora between runs (default: made each run)
PER_SHARD = 40  # sentences per output shard, the same at every size
TARGET_RATIO = 1.25


def write_corpus(folder: str, images: int, seed: int = 0) -> None:
    write_tars(folder, images, lambda rng: photo_jpeg(rng, (600, 1400), cell=64, noise=12, quality=90),
               per_tar=100, seed=seed)


# a fresh interpreter per build: ru_maxrss of the child is that build's own peak; RUSAGE_CHILDREN
# is the largest of the processes it started and waited for (none in this configuration)
_CHILD = ("import resource, sys; from uvd_pipeline.cli import main; rc = main(['build', sys.argv[1]]); "
          "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
          "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


def peak_rss_of_build(work: str, images: int, tokenize: bool) -> dict:
    """Peak RSS (MiB: the build's process, its largest child), seconds and sentences written of
    `python -m uvd_pipeline build` over `images` synthetic images (the corpus is made once per size)."""
    corpus = os.path.join(CORPUS_DIR or work, f"corpus-{images}")
    if not os.path.exists(corpus + ".done"):  # beside the corpus: the source reads every file in it
        write_corpus(corpus, images)
        open(corpus + ".done", "w").close()
    name = f"{images}-{'tokens' if tokenize else 'rendered'}"
    config = os.path.join(work, f"build-{name}.yaml")
    output = os.path.join(work, f"out-{name}")
    with open(config, "w") as handle:
        json.dump(web_build_config(output, corpus, max(1, images // PER_SHARD), tokenize,
                                   {"runner": "DirectRunner", "direct_num_workers": 1,
                                    "direct_running_mode": "in_memory"}), handle)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHILD, config], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"build of {images} images failed:\n{done.stderr[-3000:]}")
    own_kb, child_kb = next(map(int, line.split()[1:]) for line in done.stdout.splitlines()
                            if line.startswith("PEAK_KB"))
    with open(os.path.join(output, "summary.json")) as handle:
        sentences = json.load(handle)["totals"]["sentences"]
    shutil.rmtree(output)  # the corpus stays for the other builds of its size
    result = {"images": images, "tokenize": tokenize, "peak": max(own_kb, child_kb) / 1024,
              "own": own_kb / 1024, "child": child_kb / 1024, "seconds": seconds, "sentences": sentences}
    print(f"{images} images, tokenizer {'on' if tokenize else 'off'}: peak RSS {result['peak']:.0f} MiB "
          f"(build process {result['own']:.0f}, largest child {result['child']:.0f}), {sentences} sentences, "
          f"{seconds:.0f} s", flush=True)
    return result


def row(small: dict, large: dict, target: bool) -> dict:
    factor = large["images"] // small["images"]
    ratio = large["peak"] / small["peak"]
    slope = (large["peak"] - small["peak"]) * 1024 / (large["images"] - small["images"])
    tokenizer = "tokenizer on" if small["tokenize"] else "tokenizer off"
    return {
        "metric": f"build peak RSS MiB, {large['images']:,} vs {small['images']:,} images ({factor}x input, {tokenizer})",
        "ours": round(large["peak"], 1), "baseline": round(small["peak"], 1), "speedup": f"{ratio:.2f}x growth",
        "target": f"<= {TARGET_RATIO}x" if target else "reported", "met": ratio <= TARGET_RATIO,
        "note": f"local in-process runner, {small['sentences']} / {large['sentences']} sentences, {PER_SHARD} per "
                f"shard, {small['seconds']:.0f} s / {large['seconds']:.0f} s; {slope:+.1f} KiB of peak per extra image",
    }


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="uvd-bench-memory-") as work:
        small = peak_rss_of_build(work, BASE_IMAGES, tokenize=False)
        if FACTOR != 10:
            rows.append(row(small, peak_rss_of_build(work, 10 * BASE_IMAGES, tokenize=False), target=False))
        rows.insert(0, row(small, peak_rss_of_build(work, FACTOR * BASE_IMAGES, tokenize=False), target=True))
        if TOKENIZE:
            small = peak_rss_of_build(work, BASE_IMAGES, tokenize=True)
            large = peak_rss_of_build(work, TOKENIZE_FACTOR * BASE_IMAGES, tokenize=True)
            rows.append(row(small, large, target=True))
    for r in rows:
        print(f"{r['metric']}: {r['baseline']:.0f} -> {r['ours']:.0f} MiB, {r['speedup']} ({r['note']})")
    emit("memory", rows)


if __name__ == "__main__":
    main()
