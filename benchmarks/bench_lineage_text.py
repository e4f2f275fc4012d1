"""Peak memory of a build whose web samples carry long text (`sources/lineage_text.py`'s caps).

Four webdataset tars of 64x64 PNGs, each built in a fresh process (the local runner in-process,
one worker, tokenizer and dedup off), its peak RSS read from the kernel as `bench_memory` does:
- `short`: 1,000 samples with a 13-byte caption (the control);
- `caption`: 150 samples with a 2 MiB `.txt` caption (a document's text in the caption slot);
- `json`: 150 samples with a `.json` of 2,000 values of 1 KB each (each under the value cap);
- `capped`: 1,000 samples with an 8 KiB caption and a `.json` of 40 values of 1 KB: every record
  past both caps, the most lineage a record can carry.
Before the caps `caption` and `json` put ~2 MB in each sentence header and peaked at ~1.7 GB;
`capped` minus `short`, over 1,000, is the most peak a record's lineage adds. Run it against
another checkout with PYTHONPATH pointing there. Takes ~1 minute and ~1 GB of disk in TMPDIR.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
from PIL import Image

# a fresh interpreter per build: its own ru_maxrss is the build's peak (no worker processes here)
_CHILD = ("import resource, sys; from uvd_pipeline.cli import main; "
          "rc = main(['build', sys.argv[1], '--no-tokenize']); "
          "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
          "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


def _members(kind: str, index: int, png: bytes) -> list[tuple[str, bytes]]:
    """One sample's members (`kind` as in the module's list)."""
    key = f"{index:06d}"
    wide = {"json": 2000, "capped": 40}.get(kind)
    caption = {"caption": 2 << 20, "capped": 8 << 10}.get(kind)
    members = [(f"{key}.png", png), (f"{key}.txt", (b"w%05d " % index) * (caption // 7 + 1) if caption
                                      else b"short caption")]
    if wide:
        meta = {f"field_{j}": f"{index:05d}" + "v" * 995 for j in range(wide)}
        members.append((f"{key}.json", json.dumps(meta).encode()))
    return members


def write_tar(folder: str, kind: str, samples: int) -> None:
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    with tarfile.open(os.path.join(folder, "00000.tar"), "w") as tar:
        for index in range(samples):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
            for name, data in _members(kind, index, buffer.getvalue()):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def peak_of_build(work: str, kind: str, samples: int) -> dict:
    """Peak RSS (KB) and the largest sentence header (bytes) of building `samples` of `kind`."""
    corpus, output = os.path.join(work, kind), os.path.join(work, f"out-{kind}")
    write_tar(corpus, kind, samples)
    config = os.path.join(work, f"{kind}.yaml")
    with open(config, "w") as handle:
        json.dump({"version": 1, "output": output, "split": {"val_fraction": 0.0}, "dedup": {"enabled": False},
                   "beam": {"runner": "DirectRunner", "direct_num_workers": 1, "direct_running_mode": "in_memory"},
                   "sources": [{"name": "w", "type": "laion", "path": corpus, "num_shards": 1}]}, handle)
    done = subprocess.run([sys.executable, "-c", _CHILD, config], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"build of {kind} failed:\n{done.stderr[-3000:]}")
    own_kb, child_kb = next(map(int, line.split()[1:]) for line in done.stdout.splitlines()
                            if line.startswith("PEAK_KB"))
    header = 0
    for root, _, files in os.walk(os.path.join(output, "rendered")):
        for name in (f for f in files if f.endswith(".tar")):
            with tarfile.open(os.path.join(root, name)) as tar:
                header = max([header, *(m.size for m in tar.getmembers() if m.name.endswith(".json"))])
    return {"kind": kind, "samples": samples, "peak_kb": max(own_kb, child_kb), "largest_header": header}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="uvd-bench-lineage-") as work:
        for kind, samples in (("short", 1000), ("caption", 150), ("json", 150), ("capped", 1000)):
            result = peak_of_build(work, kind, samples)
            print(f"{kind} x {samples}: peak RSS {result['peak_kb']:,} KB, largest header "
                  f"{result['largest_header']:,} bytes", flush=True)


if __name__ == "__main__":
    main()
