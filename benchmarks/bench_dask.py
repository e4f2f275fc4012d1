"""The same build on the local runner and on a 2-worker local Dask cluster: images per second.

A laion-only build (img2dataset layout, 100 images per tar) of large photo-like JPEGs, rendered to
256 px with deduplication on and no tokenize, run twice through `python -m uvd_pipeline build`,
each in a fresh process: once with the local runner (2 worker processes), once with
`beam.runner: dask` (a local cluster of 2 worker processes x 1 thread, started and stopped by the
build). Wall time of the whole command, so the Dask column pays for starting its cluster. Both
outputs must hold the same bytes, or the row is not written.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import emit  # noqa: E402
from synthetic_web import photo_jpeg, web_build_config, write_tars  # noqa: E402

IMAGES = int(os.environ.get("UVD_BENCH_DASK_IMAGES", "1000"))
PER_TAR = 100
PER_SHARD = 100  # sentences per output shard


def write_corpus(folder: str, images: int, seed: int = 0) -> None:
    write_tars(folder, images, lambda rng: photo_jpeg(rng, (1600, 2600), cell=96, noise=10, quality=88),
               per_tar=PER_TAR, seed=seed)


def build(work: str, corpus: str, name: str, beam: dict) -> tuple[float, dict]:
    """(wall seconds, summary) of one build in a fresh interpreter."""
    output = os.path.join(work, f"out-{name}")
    config = os.path.join(work, f"{name}.yaml")
    with open(config, "w") as handle:
        json.dump(web_build_config(output, corpus, max(1, IMAGES // PER_SHARD), False, beam), handle)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "uvd_pipeline", "build", config], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{name} build failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    with open(os.path.join(output, "summary.json")) as handle:
        return seconds, json.load(handle)


def digests(output: str) -> dict[str, str]:
    found = {}
    for root, _, files in os.walk(os.path.join(output, "rendered")):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                found[os.path.relpath(os.path.join(root, name), output)] = hashlib.sha256(handle.read()).hexdigest()
    return found


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="uvd-bench-dask-") as work:
        corpus = os.path.join(work, "laion")
        write_corpus(corpus, IMAGES)
        local_s, local = build(work, corpus, "local", {"runner": "DirectRunner", "direct_num_workers": 2,
                                                       "direct_running_mode": "multi_processing"})
        dask_s, dask = build(work, corpus, "dask", {"runner": "dask", "dask": {"workers": 2, "threads_per_worker": 1}})
        same = digests(os.path.join(work, "out-local")) == digests(os.path.join(work, "out-dask"))
        tar_bytes = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in
                        os.walk(os.path.join(work, "out-local", "rendered")) for f in files if f.endswith(".tar"))
    if not same:
        raise RuntimeError("the Dask build's rendered shards differ from the local runner's")
    images = local["totals"]["images"]
    inputs = images + local["totals"]["rejects"]
    print(f"{inputs} inputs -> {images} images: local runner {local_s:.1f} s ({inputs / local_s:.1f} images/s), "
          f"Dask 2 workers {dask_s:.1f} s ({inputs / dask_s:.1f} images/s); rendered tars {tar_bytes / images / 1024:.0f} KiB "
          "per 256 px image")
    emit("dask", [{
        "metric": f"laion-only build, {inputs} JPEGs 1600-2600 px -> 256, no tokenize (input images/s)",
        "ours": round(inputs / dask_s, 1), "baseline": round(inputs / local_s, 1),
        "baseline_name": "local runner, 2 worker processes",
        "speedup": round(local_s / dask_s, 2), "target": "side by side",
        "note": f"ours: local Dask cluster 2 workers x 1 thread (its start included); wall {dask_s:.0f} s vs "
                f"{local_s:.0f} s; same bytes; {images} images kept, {local['totals']['rejects']} rejects; "
                f"{tar_bytes / images / 1024:.0f} KiB of rendered tar per image",
    }])


if __name__ == "__main__":
    main()
