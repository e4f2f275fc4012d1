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

IMAGES = int(os.environ.get("UVD_BENCH_DASK_IMAGES", "1000"))
PER_TAR = 100
PER_SHARD = 100  # sentences per output shard


def _image(rng: np.random.Generator) -> bytes:
    """A large photo-like JPEG: a smooth random field with noise, 1600-2600 px a side."""
    h, w = int(rng.integers(1600, 2600)), int(rng.integers(1600, 2600))
    coarse = rng.integers(0, 256, (h // 96 + 2, w // 96 + 2, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.int16)
    noise = rng.integers(-10, 10, (h, w, 3), dtype=np.int16)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(field + noise, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


def write_corpus(folder: str, images: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for shard, start in enumerate(range(0, images, PER_TAR)):
        with tarfile.open(os.path.join(folder, f"{shard:05d}.tar"), "w") as tar:
            for index in range(start, min(images, start + PER_TAR)):
                key = f"{shard:05d}{index % PER_TAR:04d}"
                for suffix, payload in (("jpg", _image(rng)), ("txt", f"synthetic {index}".encode()),
                                        ("json", json.dumps({"key": key, "url": f"synthetic://{index}"}).encode())):
                    add_member(tar, f"{key}.{suffix}", payload)


def build(work: str, corpus: str, name: str, beam: dict) -> tuple[float, dict]:
    """(wall seconds, summary) of one build in a fresh interpreter."""
    output = os.path.join(work, f"out-{name}")
    config = os.path.join(work, f"{name}.yaml")
    with open(config, "w") as handle:
        json.dump({"version": 1, "output": output, "seed": 0,
                   "image": {"size": 256, "resize": "center_crop"}, "split": {"val_fraction": 0.05},
                   "sources": [{"name": "web", "type": "laion", "path": corpus,
                                "num_shards": max(1, IMAGES // PER_SHARD), "num_val_shards": 1}],
                   "tokenizer": {"enabled": False}, "beam": beam}, handle)
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
