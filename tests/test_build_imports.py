"""A build without tokens imports neither torch nor pyarrow's compute functions, nor Beam's MongoDB and
BigQuery connectors: what a build never uses costs every build its import, before the first image
renders (issue 18's startup)."""

from __future__ import annotations

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
              "or m.startswith('apache_beam.io.gcp.'))}))\n")
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
