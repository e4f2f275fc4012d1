"""A hostile operator: builds killed with SIGKILL at chosen moments, damaged and grown input between
a killed run and its rerun, outputs in unusual places. Each rerun must give the bytes of a build
never interrupted (`interrupt_harness`), and nothing may vanish unsaid."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import shard_digests, write_config


def test_an_output_below_a_folder_named_like_a_temporary_is_read_whole(mini_corpus, mini_build, tmp_path):
    """An output under `/scratch/nightly.tmp-3/` (a job folder; `.tmp-` is also the mark of the
    build's own temporaries): its stats files were taken for temporaries by their full path, so
    every committed shard was invisible. A rerun found no shard, rewrote all, summed 0 sentences
    and 0 rejects (an empty rejects.jsonl), called each shard file a stray, and `verify` called
    the intact output damaged (`build --verify` would have deleted every shard)."""
    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config
    from uvd_pipeline.verify import verify_output

    config, summary = mini_build
    out = tmp_path / "nightly.tmp-3" / "out"
    shutil.copytree(config.output, out)
    assert verify_output(str(out)).damaged == []
    copy = load_config(str(write_config(tmp_path / "c.yaml", mini_corpus, out, config.tokenizer.checkpoint)))
    again = run_build(copy).summary
    assert again["run"]["shards_resumed"] == summary["totals"]["shards"]
    assert again["totals"] == summary["totals"] and again["tokens"] == summary["tokens"]
    assert (out / "rejects.jsonl").read_bytes() == (Path(config.output) / "rejects.jsonl").read_bytes()
    assert shard_digests(out) == shard_digests(Path(config.output))


def test_verify_counts_images_a_killed_build_already_moved_into_committed_shards(mini_corpus, mini_build, tmp_path):
    """A build killed in its write phase: each committed shard's placement record is written and
    the store's copies of its images are punched out (or the unit's image file removed) at once,
    but the units' `.moved` records only at the end of the run (`unit_relocation`). The rerun
    folds the placements in and resumes without rendering anything; `verify` read only `.moved`,
    so it called every such unit DAMAGED (exit 1) and sent the user to rebuild an intact output.
    (State made exactly: the finished build without its `.moved` records, as a kill right after
    the store's copies went and before their records were written leaves it.)"""
    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config
    from uvd_pipeline.verify import verify_output

    config, _ = mini_build
    out = tmp_path / "out"
    shutil.copytree(config.output, out)
    moved = sorted(out.glob("_units/*/*.moved"))
    assert moved
    for record in moved:
        record.unlink()
    assert verify_output(str(out)).damaged == []
    copy = load_config(str(write_config(tmp_path / "c.yaml", mini_corpus, out, config.tokenizer.checkpoint)))
    counters = run_build(copy).summary["run"]["counters"]
    assert sum(v for k, v in counters.items() if k.endswith(".units_rendered")) == 0
    assert shard_digests(out) == shard_digests(Path(config.output))
    assert sorted(out.glob("_units/*/*.moved")) == moved
