"""A build without tokens imports neither torch nor pyarrow's compute functions (an img2dataset listing
is judged with numpy), nor Beam's MongoDB and BigQuery connectors, nor the readers of source types
it does not read: what a build never uses costs every build its import, before the first image renders
(issue 18's startup)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def _tiny_laion(folder: Path) -> Path:
    """One webdataset tar of two ImageMagick JPEGs with captions, packed by GNU tar."""
    data = folder / "data"
    members = folder / "members"
    data.mkdir()
    members.mkdir()
    for index, pattern in enumerate(("plasma:fractal", "gradient:red-blue")):
        key = f"{index:09d}"
        subprocess.run(["convert", "-seed", "3", "-size", "96x64", pattern, str(members / f"{key}.jpg")], check=True)
        (members / f"{key}.txt").write_text(f"picture {index}")
    names = sorted(p.name for p in members.iterdir())
    subprocess.run(["tar", "--format=gnu", "-cf", str(data / "00000.tar"), "-C", str(members), *names], check=True)
    # img2dataset's listing of the shard, as its writer leaves it (pyarrow, dictionary-encoded
    # strings): the build's notices judge its row groups on what their rows point at
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = [f"{index:09d}" for index in range(2)]
    pq.write_table(pa.table({
        "url": [f"http://example.com/{k}.jpg" for k in keys], "key": keys, "status": ["success"] * 2,
        "error_message": pa.array([None, None], pa.string()), "caption": ["picture 0", "picture 1"],
        "width": [96, 96], "height": [64, 64], "original_width": [96, 96], "original_height": [64, 64],
        "exif": ["{}", "{}"], "sha256": [hashlib.sha256((members / f"{k}.jpg").read_bytes()).hexdigest() for k in keys],
    }), data / "00000.parquet")
    return data


def test_a_build_without_tokens_imports_no_torch_no_arrow_compute_and_no_beam_connectors(tmp_path):
    config = {"version": 1, "output": str(tmp_path / "out"), "seed": 0, "image": {"size": 32},
              "tokenizer": {"enabled": False},
              "sources": [{"name": "web", "type": "laion", "path": str(_tiny_laion(tmp_path)), "num_shards": 1}],
              "beam": {"runner": "DirectRunner", "direct_num_workers": 2}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    script = ("import json, sys\nfrom uvd_pipeline.cli import main\n"
              f"sys.argv = ['uvd', 'build', {str(tmp_path / 'c.yaml')!r}, '--no-tokenize']\n"
              "code = main()\n"
              "print(json.dumps({'code': code, 'modules': sorted(m for m in sys.modules "
              "if m.split('.')[0] in ('torch', 'pyarrow', 'pymongo', 'bson', 'requests') "
              "or m.startswith('apache_beam.io.gcp.') or m.startswith('sources.'))}))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert found["code"] == 0 and summary["totals"]["sentences"] == 2
    assert "torch" not in found["modules"]
    assert "pyarrow.compute" not in found["modules"]
    # `beam_import`: Beam's package loaded without its MongoDB, BigQuery, Pub/Sub and GCS connectors
    assert not [m for m in found["modules"] if m.split(".")[0] in ("pymongo", "bson", "requests")
                or m.startswith("apache_beam.io.gcp.")], found["modules"]
    # `source_factory`: the readers of the types a build reads, not every type's
    assert not {"sources.segmentation", "sources.multiview", "sources.annotated_video", "sources.imagenet",
                "sources.mpii", "sources.stereo", "sources.derived"} & set(found["modules"])
    assert "sources.laion" in found["modules"]
