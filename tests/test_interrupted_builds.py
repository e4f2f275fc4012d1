"""A hostile operator: builds killed with SIGKILL at chosen moments, damaged and grown input between
a killed run and its rerun, outputs in unusual places. Each rerun must give the bytes of a build
never interrupted (`interrupt_harness`), and nothing may vanish unsaid."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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


def test_verify_says_when_the_build_holding_the_output_is_gone(mini_build, tmp_path, capsys):
    """After a `kill -9` the dead build's lock stays until the next build takes it over: `verify`
    said "a build holds this output; shards it is writing are not committed yet", so the user
    waited for a build that no longer ran. It names the holder as gone and says how to finish."""
    import json
    import socket
    import subprocess

    from uvd_pipeline.cli import main

    config, _ = mini_build
    out = tmp_path / "out"
    shutil.copytree(config.output, out)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / "_lock.json").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid,
                                                "started": "2026-01-01T00:00:00+00:00", "run_id": "killed-run"}))
    assert main(["verify", str(out)]) == 3  # unfinished: what is there is intact, but not all of it
    printed = capsys.readouterr().out
    assert f"note: the build that held this output (host {socket.gethostname()}, pid {dead.pid}" in printed
    assert "is gone: it was killed or crashed" in printed and "run the same build command again" in printed
    assert "a build holds this output" not in printed


@pytest.mark.slow
def test_a_worker_killed_alone_fails_the_build_and_the_rerun_finishes_it(tmp_path):
    """`kill -9` of one DirectRunner worker process only (the OOM killer's pick), not its driver:
    the build must end (no hang) with a failure, release its lock, and the rerun give the bytes of
    a build never interrupted."""
    import os
    import signal
    import subprocess
    import time

    import interrupt_harness as harness

    corpus = harness.make_corpus(tmp_path / "in")
    reference = tmp_path / "reference"
    harness.reference(harness.write_config(tmp_path / "ref.yaml", corpus, reference))
    out = tmp_path / "out"
    config = harness.write_config(tmp_path / "c.yaml", corpus, out)
    build = harness.start(config)
    reached = harness.appears(out, "_units/*/*.json")
    deadline = time.time() + 120
    while time.time() < deadline and build.poll() is None and not reached():
        time.sleep(0.002)
    workers = subprocess.run(["pgrep", "-f", "-g", str(build.pid), "sdk_worker_main"], capture_output=True,
                             text=True).stdout.split()
    workers = [int(w) for w in workers if not Path(f"/proc/{w}/cmdline").read_bytes().startswith(b"/bin/sh")]
    assert workers and build.poll() is None
    os.kill(workers[0], signal.SIGKILL)
    log, _ = build.communicate(timeout=120)  # no hang
    assert build.returncode != 0 and "137" in log
    assert not (out / "_lock.json").exists() and not (out / "summary.json").exists()
    harness.finish(config)
    harness.same_output(out, reference)


@pytest.mark.slow
def test_input_changed_between_a_killed_run_and_its_rerun(tmp_path):
    """Killed after a few units committed, then the input changes the ways the world changes it:
    a JPEG of a class folder cut in half (a partial copy), another replaced by other bytes of its
    size with its mtime set back (`cp -p`), one deleted, one added, and img2dataset's incremental
    mode adding a shard. The rerun equals a fresh build of the new input, and the cut JPEG is a
    counted reject, not a silent loss."""
    import json
    import os

    import interrupt_harness as harness

    corpus = harness.make_corpus(tmp_path / "in")
    out = tmp_path / "out"
    config = harness.write_config(tmp_path / "c.yaml", corpus, out)
    assert harness.kill_when(harness.start(config), harness.appears(out, "_units/*/*.json", 3))
    folder = corpus / "classes" / "train" / "n01440764"
    cut, same, gone = sorted(folder.glob("*.JPEG"))[:3]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    stamp, data = same.stat(), bytearray(same.read_bytes())
    data[len(data) // 2: len(data) // 2 + 40] = bytes(b ^ 0x55 for b in data[len(data) // 2: len(data) // 2 + 40])
    same.write_bytes(bytes(data))
    os.utime(same, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    gone.unlink()
    (folder / "n01440764_99.JPEG").write_bytes(harness.jpeg(4242, (70, 50)))
    harness.web_shard(corpus / "web", 2, 5, seed=3)
    harness.finish(config)
    fresh = tmp_path / "fresh"
    harness.reference(harness.write_config(tmp_path / "f.yaml", corpus, fresh))
    harness.same_output(out, fresh)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejects if cut.stem in r["key"]] == ["truncated"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sources"]["web"]["sentences"] == 8 + 8 + 5  # the added shard's 5 images too
