"""CPU of reading gzipped img2dataset shards (`.tar.gz`), for A/B runs of `sources.tar_members`.

    python benchmarks/bench_gzip_shards.py make DIR [SHARDS] [IMAGES]   # GNU tar -czf of JPEG samples
    PYTHONPATH=TREE python benchmarks/bench_gzip_shards.py read DIR      # prints CPU-s, items, digest

`read` reads every shard three times and prints the CPU seconds of the reads (imports left out),
the number of items and a digest of their reprs (the same digest: the same items, details and all).
Run old and new trees interleaved on the same DIR and compare medians.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile


def make(root: str, shards: int = 12, images: int = 40) -> None:
    import cv2
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    os.makedirs(root, exist_ok=True)
    for s in range(shards):
        with tempfile.TemporaryDirectory() as files:
            rows, names = [], []
            for i in range(images):
                key = f"{s:05d}{i:04d}"
                h, w = rng.integers(256, 512, 2)
                small = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
                img = cv2.add(cv2.resize(small, (int(w), int(h)), interpolation=cv2.INTER_CUBIC),
                              rng.integers(0, 40, (int(h), int(w), 3), dtype=np.uint8))
                data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
                row = {"key": key, "status": "success", "caption": f"c {i}", "sha256": hashlib.sha256(data).hexdigest()}
                for ext, payload in ((".jpg", data), (".txt", row["caption"].encode()), (".json", json.dumps(row).encode())):
                    with open(os.path.join(files, key + ext), "wb") as handle:
                        handle.write(payload)
                    names.append(key + ext)
                rows.append(row)
            subprocess.run(["tar", "-czf", os.path.join(root, f"{s:05d}.tar.gz"), "-C", files, *sorted(names)],
                           check=True)
        pq.write_table(pa.Table.from_pylist(rows), os.path.join(root, f"{s:05d}.parquet"))
        with open(os.path.join(root, f"{s:05d}_stats.json"), "w") as handle:
            json.dump({"count": images, "successes": images}, handle)


def read(root: str) -> None:
    from sources.laion import LaionSource

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    source = LaionSource("web", root, "webdataset")
    start, digest, count = cpu(), hashlib.sha256(), 0
    for _ in range(3):
        for unit in source.units():
            for item in source.read(unit):
                digest.update(repr(item).encode())
                count += 1
    print(f"{cpu() - start:.3f} {count} {digest.hexdigest()[:16]}")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], *(int(a) for a in sys.argv[3:5]))
    else:
        read(sys.argv[2])
