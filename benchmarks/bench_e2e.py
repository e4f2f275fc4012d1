"""End to end: a whole build against the simplest script that does the same job, in one run.

Input: 900 JPEGs of 1600-2600 px (crops and rescales of the real bundled photos, no two within
the dedup threshold of each other) in three img2dataset webdataset tars, written by the sample
corpus's img2dataset writer (`uvd_pipeline.sample.web.ShardWriter`) and kept between runs.

Contestants, each to 256x256 center_crop PNGs at the build's zlib level, two worker processes:
  - ours, dedup on (the default) and dedup off: `python -m uvd_pipeline build CONFIG --no-tokenize`,
    one `laion` source, the local runner in its default mode (`auto`: 2 workers as threads), and
    dedup on with the 2 workers as processes (`multi_processing`, the default before 2026-12-03);
  - plain: `benchmarks/plain_resize.py` (a multiprocessing.Pool, Pillow draft decode, centre crop,
    box resize, PNG, output tars);
  - img2dataset: the same script with img2dataset's `Resizer` as its kernel, run by the img2dataset
    venv's python where there is one (`.venv-img2dataset`, or $UVD_I2D_PYTHON).

Each round runs every contestant once, the order rotating between rounds; the table has medians of
wall time and CPU seconds (user + sys of the whole process tree: every process is a waited-for
descendant of the one we start, so `RUSAGE_CHILDREN` counts it), with the load average next to
each figure. The outputs are checked: the same number of images, and ours against plain's pixels.

    python benchmarks/bench_e2e.py            (BENCH_E2E_ROUNDS=3, BENCH_E2E_IMAGES=900)
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [HERE, REPO]  # this checkout's uvd_pipeline, whatever the venv has installed

import numpy as np  # noqa: E402

from common import OUT_DIR, emit  # noqa: E402

SIZE = 256
PNG_LEVEL = 1  # the build's default `image.png_compression`
SHARDS = 3
IMAGES = int(os.environ.get("BENCH_E2E_IMAGES", "900"))
ROUNDS = int(os.environ.get("BENCH_E2E_ROUNDS", "3"))
WORKERS = 2
DATA_VERSION = 1  # bump when the generated input changes
MIN_DISTANCE = 12  # pHash bits between any two inputs' renders (dedup drops <= 6)
TARGET_ON, TARGET_OFF, TARGET_DEDUP_CPU = 0.8, 0.9, 0.15


def i2d_python() -> str | None:
    path = os.environ.get("UVD_I2D_PYTHON") or os.path.join(REPO, ".venv-img2dataset", "bin", "python")
    return path if os.path.exists(path) else None


# -- input --------------------------------------------------------------------------------------
def _candidate(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """A crop of a photo (a fifth to two thirds of it, aspect 1:2 to 2:1, maybe mirrored) scaled to
    1600-2600 px on the long side."""
    import cv2

    h, w = base.shape[:2]
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    area = rng.uniform(0.2, 0.67) * h * w
    cw = int(min(w, max(64, round(np.sqrt(area * aspect)))))
    ch = int(min(h, max(64, round(np.sqrt(area / aspect)))))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    crop = base[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    scale = int(rng.integers(1600, 2601)) / max(ch, cw)
    return cv2.resize(np.ascontiguousarray(crop), (round(cw * scale), round(ch * scale)),
                      interpolation=cv2.INTER_LINEAR)


def _render_hash(pixels: np.ndarray) -> int:
    from transforms.phash import phash64
    from transforms.resize import plan_resize

    return phash64(plan_resize(pixels.shape[0], pixels.shape[1], SIZE, "center_crop").apply_image(pixels))


def write_input(root: str, images: int = IMAGES, seed: int = 0) -> list[str]:
    """The three input tars (written once per DATA_VERSION and size); returns their paths."""
    from PIL import Image

    from transforms.phash import hamming
    from uvd_pipeline.sample import media
    from uvd_pipeline.sample.web import ShardWriter

    marker = os.path.join(root, "done.json")
    stamp = {"version": DATA_VERSION, "images": images, "seed": seed}
    tars = [os.path.join(root, f"{s:05d}.tar") for s in range(SHARDS)]
    if os.path.exists(marker) and json.load(open(marker)) == stamp:
        return tars
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    photos = {name: media.photo(name) for name, _, _ in media.PHOTOS}
    names = sorted(photos)
    hashes: list[int] = []
    per_shard = -(-images // SHARDS)
    started = time.perf_counter()
    for shard in range(SHARDS):
        writer = ShardWriter(root, shard)
        for index in range(min(per_shard, images - shard * per_shard)):
            n = shard * per_shard + index
            name = names[n % len(names)]
            rng = np.random.default_rng([seed, 7, n])
            for _ in range(200):  # no near-duplicates: a candidate too close to an earlier one is redrawn
                pixels = _candidate(rng, photos[name])
                value = _render_hash(pixels)
                if all(hamming(value, other) >= MIN_DISTANCE for other in hashes):
                    break
            else:
                raise RuntimeError(f"no distinct crop of {name} for image {n}")
            hashes.append(value)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, "JPEG", quality=int(rng.integers(85, 96)))
            key = f"{shard:05d}{index:04d}"
            writer.add(key, buf.getvalue(), "jpg", f"a photo of {name.replace('_', ' ')} ({n})",
                       f"http://bench.invalid/{key}.jpg", (pixels.shape[1], pixels.shape[0]))
        writer.close()
    json.dump(stamp, open(marker, "w"))
    print(f"wrote {images} input JPEGs in {time.perf_counter() - started:.0f}s", flush=True)
    return tars


def write_config(path: str, data: str, output: str, dedup: bool, mode: str = "auto") -> None:
    import yaml

    config = {
        "version": 1, "output": output, "seed": 0,
        "image": {"size": SIZE, "resize": "center_crop", "png_compression": PNG_LEVEL},
        "dedup": {"enabled": dedup},
        "sources": [{"name": "web", "type": "laion", "path": data, "num_shards": SHARDS, "num_val_shards": 1}],
        "tokenizer": {"enabled": False},
        "beam": {"runner": "DirectRunner", "direct_num_workers": WORKERS, "direct_running_mode": mode},
    }
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)


# -- measuring ----------------------------------------------------------------------------------
def measure(command: list[str], env: dict[str, str] | None = None, cwd: str = REPO) -> dict:
    """Wall seconds and CPU seconds (user + sys of the whole waited-for process tree) of one command
    (run in `cwd`: `python -m` imports from there first)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "load": load}


def contestants(work: str, tars: list[str], data: str) -> dict[str, tuple[list[str], str, dict | None]]:
    """name -> (command, output folder, env)."""
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    runs = {}
    for name, dedup, mode in (("ours_dedup_on", True, "auto"), ("ours_dedup_off", False, "auto"),
                              ("ours_processes", True, "multi_processing")):
        config, output = os.path.join(work, f"{name}.yaml"), os.path.join(work, name)
        write_config(config, data, output, dedup, mode)
        runs[name] = ([sys.executable, "-m", "uvd_pipeline", "build", config, "--no-tokenize"], output, env)
    plain = os.path.join(HERE, "plain_resize.py")
    args = ["--workers", str(WORKERS), "--size", str(SIZE), "--png-level", str(PNG_LEVEL)]
    runs["plain"] = ([sys.executable, plain, os.path.join(work, "plain"), *tars, *args],
                     os.path.join(work, "plain"), None)
    i2d = i2d_python()
    if i2d:
        quiet = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
        runs["img2dataset"] = ([i2d, plain, os.path.join(work, "img2dataset"), *tars, "--kernel", "img2dataset",
                                *args], os.path.join(work, "img2dataset"), quiet)
    return runs


# -- checking -----------------------------------------------------------------------------------
def read_pngs(folder: str) -> dict[str, bytes]:
    """sample key -> PNG bytes of every image in the tars under `folder` (ours: the sentence
    header names the img2dataset key; plain: the member name is the key)."""
    found = {}
    for dirpath, _, files in os.walk(folder):
        for file in sorted(files):
            if not file.endswith(".tar") or "_tmp" in dirpath:
                continue
            header = None
            with tarfile.open(os.path.join(dirpath, file)) as tar:
                for info in tar:
                    data = tar.extractfile(info).read()
                    stem, _, ext = info.name.partition(".")
                    if ext == "json":
                        header = json.loads(data)
                    elif ext.endswith("png"):
                        key = header["members"][0]["sample_key"] if header else stem
                        found[key] = data
                        header = None
    return found


def psnr(a: bytes, b: bytes) -> float:
    import cv2

    x = cv2.imdecode(np.frombuffer(a, np.uint8), cv2.IMREAD_COLOR).astype(np.float64)
    y = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR).astype(np.float64)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def check_outputs(runs: dict, images: int) -> dict:
    counts, pngs = {}, {}
    for name, (_, output, _) in runs.items():
        pngs[name] = read_pngs(output)
        counts[name] = len(pngs[name])
    keys = sorted(pngs["plain"])[:: max(1, len(pngs["plain"]) // 12)]
    quality = {name: round(float(min(psnr(pngs[name][k], pngs["plain"][k]) for k in keys)), 1)
               for name in runs if name != "plain" and all(k in pngs[name] for k in keys)}
    same = len(set(counts.values())) == 1 and images in counts.values()
    return {"images": counts, "same_count": same, "min_psnr_vs_plain_db": quality, "psnr_images": len(keys)}


def main() -> None:
    work = os.path.join(os.path.abspath(OUT_DIR), "e2e")
    data = os.path.join(work, "input")
    tars = write_input(data)
    runs = contestants(work, tars, data)
    names = list(runs)
    results: dict[str, list[dict]] = {name: [] for name in names}
    for round_ in range(ROUNDS):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            command, output, env = runs[name]
            shutil.rmtree(output, ignore_errors=True)
            result = measure(command, env)
            results[name].append(result)
            print(f"round {round_ + 1} {name}: {result['wall']:.1f}s wall, {result['cpu']:.1f} CPU-s, "
                  f"load {result['load']:.1f}", flush=True)
    checks = check_outputs(runs, IMAGES)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("wall", "cpu", "load")}
           for name, rs in results.items()}
    plain = med["plain"]
    extra_cpu = med["ours_dedup_on"]["cpu"] / med["ours_dedup_off"]["cpu"] - 1

    def fig(m: dict) -> str:
        return f"{m['wall']:.1f} s, {m['cpu']:.1f} CPU-s, {IMAGES / m['wall']:.0f} img/s (load {m['load']:.1f})"

    rows = []
    for name, label, target in (("ours_dedup_on", "dedup on (default)", TARGET_ON),
                                ("ours_dedup_off", "dedup off", TARGET_OFF)):
        ratio = plain["wall"] / med[name]["wall"]
        rows.append({
            "metric": f"e2e build {IMAGES} JPEG 1600-2600px -> 256 PNG, 2 workers, {label}",
            "ours": fig(med[name]),
            "baseline": fig(plain),
            "baseline_name": "plain_resize.py (Pool(2), Pillow draft, crop, box resize, PNG)",
            "speedup": round(ratio, 2),
            "target": f">= {target}x",
            "met": ratio >= target and checks["same_count"],
            "note": f"CPU ratio {plain['cpu'] / med[name]['cpu']:.2f}x; medians of {ROUNDS} interleaved rounds",
        })
    def against_ours_on(metric: str, baseline: dict, baseline_name: str, note: str) -> dict:
        """A reported row: the default build (dedup on) against another way to do the same."""
        return {"metric": metric, "ours": fig(med["ours_dedup_on"]), "baseline": fig(baseline),
                "baseline_name": baseline_name, "speedup": round(baseline["wall"] / med["ours_dedup_on"]["wall"], 2),
                "target": "", "met": "", "note": note}

    processes = med["ours_processes"]
    rows.append(against_ours_on("e2e same, dedup on, the 2 workers as processes (multi_processing) vs threads (auto)",
                                processes, "this build with beam.direct_running_mode: multi_processing",
                                f"processes vs plain: {plain['wall'] / processes['wall']:.2f}x"))
    rows.append({
        "metric": "e2e dedup's extra CPU (on vs off)",
        "ours": f"{100 * extra_cpu:+.0f}%",
        "baseline": "",
        "speedup": "",
        "target": f"<= {100 * TARGET_DEDUP_CPU:.0f}%",
        "met": extra_cpu <= TARGET_DEDUP_CPU,
        "note": (f"CPU-s {med['ours_dedup_on']['cpu']:.1f} vs {med['ours_dedup_off']['cpu']:.1f}; images "
                 f"{checks['images']}; min PSNR vs plain over {checks['psnr_images']} images "
                 f"{checks['min_psnr_vs_plain_db']} dB"),
    })
    if "img2dataset" in med:
        i2d = med["img2dataset"]
        rows.append(against_ours_on("e2e same, img2dataset's Resizer as the script's kernel, vs ours dedup on", i2d,
                                    "img2dataset.resizer.Resizer in plain_resize.py",
                                    f"ours dedup off: {i2d['wall'] / med['ours_dedup_off']['wall']:.2f}x"))
    with open(os.path.join(work, "runs.json"), "w") as handle:
        json.dump({"runs": results, "medians": med, "checks": checks}, handle, indent=1)
    emit("e2e", rows)


if __name__ == "__main__":
    main()
