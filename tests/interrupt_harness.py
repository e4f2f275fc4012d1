"""A hostile operator's harness: a tiny multi-source input made by the real tools, a build run as
its own process (`python -m uvd_pipeline build`), killed with SIGKILL at a chosen moment, and a
byte-for-byte comparison of two outputs.

The input is written the way its makers write it: web images as img2dataset stores them (a
webdataset tar of `{key}.jpg|txt|json` per sample, a parquet row per URL tried, a stats JSON),
an ImageNet class folder of Pillow JPEGs, a video encoded by ffmpeg. Nothing of the project
makes it, so a bug in the project cannot hide in its own test input.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def jpeg(seed: int, size: tuple[int, int]) -> bytes:
    """A photo-like JPEG (smooth gradients plus noise, as a camera's): Pillow, quality 90."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * (3 + seed % 5)) % 256, (y * (2 + seed % 7)) % 256, ((x + y) * 2 + seed * 37) % 256], -1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
    tar.addfile(info, io.BytesIO(data))


def web_shard(root: Path, shard: int, count: int, seed: int = 0) -> None:
    """One img2dataset output shard (`--output_format webdataset`): NNNNN.tar, NNNNN.parquet with a
    row per URL tried (one failed download), NNNNN_stats.json."""
    rows = []
    with tarfile.open(root / f"{shard:05d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(count):
            key = f"{shard:05d}{i:04d}"
            size = (48 + 7 * i, 40 + 5 * ((i + shard) % 4))
            data = jpeg(seed * 1000 + shard * 100 + i, size)
            meta = {"url": f"http://example.com/{key}.jpg", "caption": f"picture {key}", "key": key,
                    "status": "success", "error_message": None, "width": size[0], "height": size[1],
                    "original_width": size[0], "original_height": size[1], "exif": None,
                    "sha256": hashlib.sha256(data).hexdigest()}
            _tar_member(tar, f"{key}.jpg", data)
            _tar_member(tar, f"{key}.txt", meta["caption"].encode())
            _tar_member(tar, f"{key}.json", json.dumps(meta).encode())
            rows.append(meta)
    rows.append({"url": f"http://example.com/{shard:05d}lost.jpg", "caption": "lost", "key": f"{shard:05d}{count:04d}",
                 "status": "failed_to_download", "error_message": "HTTP Error 404: Not Found", "width": None,
                 "height": None, "original_width": None, "original_height": None, "exif": None, "sha256": None})
    pq.write_table(pa.Table.from_pylist(rows), root / f"{shard:05d}.parquet")
    (root / f"{shard:05d}_stats.json").write_text(json.dumps(
        {"count": len(rows), "successes": count, "failed_to_download": 1, "failed_to_resize": 0,
         "status_dict": {"success": count, "HTTP Error 404: Not Found": 1}}))


def class_folder(root: Path, classes: dict[str, int]) -> None:
    """ImageNet's LOC layout: root/train/<wnid>/<wnid>_<n>.JPEG, the synset mapping, and flat val
    images labelled by LOC_val_solution.csv."""
    for c, (wnid, count) in enumerate(sorted(classes.items())):
        folder = root / "train" / wnid
        folder.mkdir(parents=True)
        for n in range(count):
            (folder / f"{wnid}_{n}.JPEG").write_bytes(jpeg(5000 + 100 * c + n, (60 + n % 3 * 9, 52)))
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} thing {w}\n" for w in sorted(classes)))
    (root / "val").mkdir()
    rows = ["ImageId,PredictionString"]
    for n, wnid in enumerate(sorted(classes) * 2):
        image_id = f"ILSVRC2012_val_{n + 1:08d}"
        (root / "val" / f"{image_id}.JPEG").write_bytes(jpeg(7000 + n, (56, 64)))
        rows.append(f"{image_id},{wnid} 1 2 30 40 ")
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")


def video(path: Path, frames: int = 40) -> None:
    """A short H.264 clip made by ffmpeg's test source (its usual defaults: yuv420p, mp4)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size=64x48:rate=25",
                    "-frames:v", str(frames), "-pix_fmt", "yuv420p", "-c:v", "libx264", str(path)], check=True)


def make_corpus(root: Path, web_shards: int = 2, per_shard: int = 8) -> Path:
    for shard in range(web_shards):
        (root / "web").mkdir(parents=True, exist_ok=True)
        web_shard(root / "web", shard, per_shard)
    class_folder(root / "classes", {"n01440764": 9, "n01443537": 7})
    video(root / "video" / "clip.mp4")
    return root


def write_config(path: Path, corpus: Path, output: Path, tokenizer: str | None = None, workers: int = 2,
                 mode: str = "multi_processing") -> Path:
    config = {
        "version": 1, "output": str(output), "seed": 0,
        "image": {"size": 32, "resize": "center_crop"},
        "split": {"val_fraction": 0.2},
        "sources": [
            {"name": "web", "type": "laion", "path": str(corpus / "web"), "num_shards": 2},
            {"name": "cls", "type": "imagenet", "path": str(corpus / "classes"), "num_shards": 1,
             "sentence_length": 4, "remainder": "drop"},
            {"name": "clips", "type": "video", "path": str(corpus / "video"), "num_shards": 1, "strides": [2]},
        ],
        "tokenizer": ({"checkpoint": tokenizer, "batch_size": 8, "threads": 1, "compile": False}
                      if tokenizer else {"enabled": False}),
        "beam": {"runner": "DirectRunner", "direct_num_workers": workers, "direct_running_mode": mode},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def environ() -> dict[str, str]:
    """The environment of a build process: this checkout first on the import path."""
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def start(config: Path, *args: str) -> subprocess.Popen:
    """`python -m uvd_pipeline build CONFIG` in its own process group, its log to a pipe."""
    return subprocess.Popen([sys.executable, "-m", "uvd_pipeline", "build", str(config), *args], cwd=REPO,
                            env=environ(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(config: Path, *args: str, timeout: float = 240) -> str:
    """Run a build to its end; returns its log (fails the test on a non-zero exit)."""
    proc = start(config, *args)
    log, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, log[-4000:]
    return log


def reference(config: Path) -> None:
    """A build of `config` run to its end in this process by one in-memory worker: the bytes and
    summary facts of any runner and worker count (the determinism contract), without a build
    process and its worker processes to start."""
    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config

    settings = load_config(str(config))
    beam = settings.beam.model_copy(update={"direct_num_workers": 1, "direct_running_mode": "in_memory"})
    run_build(settings.model_copy(update={"beam": beam}))


def kill_when(proc: subprocess.Popen, reached: Callable[[], bool], timeout: float = 240,
              whole_group: bool = True) -> bool:
    """SIGKILL the build (its whole process group: the driver and its workers, as an OOM killer or
    a lost node does) as soon as `reached()`; False when it ended first."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not reached():
        time.sleep(0.002)
    if proc.poll() is not None:
        proc.communicate()
        return False
    if whole_group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.kill()
    proc.communicate()
    return True


def after(seconds: float) -> Callable[[], bool]:
    started = time.time()
    return lambda: time.time() - started >= seconds


def appears(output: Path, pattern: str, count: int = 1) -> Callable[[], bool]:
    """True once `count` files matching the glob `pattern` lie under `output`."""
    def reached() -> bool:
        try:
            return sum(1 for _ in output.glob(pattern)) >= count
        except OSError:
            return False
    return reached


def summary_facts(output: Path) -> dict:
    """The summary without its `run` section (times, counters: what differs between two runs by nature),
    with the output's own path replaced, so two folders compare."""
    text = (output / "summary.json").read_text().replace(str(output), "OUT")
    facts = json.loads(text)
    facts.pop("run")  # how this run went: a resumed one reads and renders less, at other speeds
    return facts


PRIVATE = ("_units", "_inputs", "_tmp", "_lock.json", "report")


def outputs(output: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file a reader of the output sees (rendered and token shards,
    their stats, rejects.jsonl, mixture, build record; not the store nor the summary, compared
    by `summary_facts`)."""
    found = {}
    for path in sorted(output.rglob("*")):
        relative = str(path.relative_to(output))
        if path.is_file() and not relative.startswith(PRIVATE) and relative != "summary.json":
            data = path.read_bytes().replace(str(output).encode(), b"OUT")
            found[relative] = hashlib.sha256(data).hexdigest()
    return found


def same_output(got: Path, want: Path) -> None:
    """Every byte a reader sees equal, and the summaries equal but for timings."""
    a, b = outputs(got), outputs(want)
    assert sorted(a) == sorted(b), (sorted(set(a) - set(b)), sorted(set(b) - set(a)))
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, differ
    assert summary_facts(got) == summary_facts(want)
