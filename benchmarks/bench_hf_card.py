"""CPU and YAML parses of building several configs of a Hub repo with a big card (`sources.hf_card`).

    PYTHONPATH=TREE python benchmarks/bench_hf_card.py [CONFIGS_BUILT]

Writes a repo whose `README.md` (430 KB) declares 1,100 configs (`configs:` and `dataset_info:`
with ClassLabel features, as the Hub's multi-config cards have them) and 4 parquet files for each
of the first CONFIGS_BUILT (3) configs, then plans and reads each built config as its own source,
in one process. Prints the `yaml.load` calls and the CPU seconds of the builds (imports and the
repo's writing left out). Run old and new trees interleaved and compare medians.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path


def make(root: Path, built: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    lines = ["---", "configs:"]
    for c in range(1100):
        lines += [f"- config_name: c{c}", "  data_files:", "  - split: train", f"    path: c{c}/train-*.parquet"]
    lines += ["dataset_info:"]
    for c in range(1100):
        lines += [f"- config_name: c{c}", "  features:", "  - name: image", "    dtype: image",
                  "  - name: tokens", "    sequence: string", "  - name: ner_tags", "    sequence:",
                  "      class_label:", "        names:", "          '0': O", "          '1': B-PER",
                  "  - name: label", "    dtype:", "      class_label:", "        names:", "          '0': cat",
                  f"          '1': dog{c}"]
    root.mkdir(parents=True)
    (root / "README.md").write_text("\n".join([*lines, "---", "card"]))
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    for c in range(built):
        (root / f"c{c}").mkdir()
        for s in range(4):
            pq.write_table(pa.table({"image": pa.array([{"bytes": png.getvalue(), "path": None}] * 5, image),
                                     "label": [0, 1, 0, 1, 0]}), root / f"c{c}" / f"train-{s:05d}-of-00004.parquet")


def main(built: int = 3) -> None:
    import yaml

    from sources import fsio
    from sources.laion import LaionSource

    root = Path(tempfile.mkdtemp()) / "repo"
    make(root, built)
    calls, load = [0], yaml.load

    def counted(*args, **kwargs):
        calls[0] += 1
        return load(*args, **kwargs)

    yaml.load = counted
    start = time.process_time()
    for c in range(built):
        source = LaionSource(f"s{c}", str(root), "huggingface", hf_config=f"c{c}")
        for unit in source.units():
            with fsio.run_memo({}):
                sum(1 for _ in source.read(unit))
    print(f"yaml.load calls {calls[0]} cpu_s {time.process_time() - start:.3f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
