"""A task commits into the output only while its run holds the output's lock (`output_lock.check_held`).

hunt54e H2: after Ctrl-C on a build on a given Dask scheduler, its tasks still running on the
workers committed into the output once its lock was released, even into a fresh `--overwrite`
build of it (2 token shards of the stopped build in a --no-tokenize build, called intact). The
build now waits for them (`dask_settle`); where it cannot (the build's process killed, the wait
cut short), each commit checks the lock names its run first."""

from __future__ import annotations

from pathlib import Path

import pytest

from sources import fsio
from sources.records import Reject
from uvd_pipeline.output_lock import LockLost, acquire, check_held, current_run


def test_check_held_passes_the_holder_and_refuses_another_run_or_a_released_lock(tmp_path):
    out = str(tmp_path / "out")
    lock = acquire(out)
    assert current_run(out) == lock.run_id
    check_held(out, lock.run_id)
    check_held(out, None)  # no run named: no check (a caller outside a build)
    with pytest.raises(LockLost, match=f"held by run {lock.run_id}"):
        check_held(out, "20260101T000000Z-deadbeef")
    lock.release()
    with pytest.raises(LockLost, match="no build holds it"):
        check_held(out, lock.run_id)


def test_a_unit_of_a_run_that_lost_the_lock_commits_nothing(tmp_path):
    from uvd_pipeline.unit_store import UnitStore

    out = tmp_path / "out"
    lock = acquire(str(out))
    stopped = UnitStore(str(out), "web", "h", run_id="20260101T000000Z-deadbeef")  # a stopped build's task
    writer = stopped.writer("a.tar")
    with pytest.raises(LockLost):
        writer.commit([], fsio.InputsRead())
    writer.abandon()
    assert not _files(out / "_units")
    ours = UnitStore(str(out), "web", "h", run_id=lock.run_id).writer("a.tar")
    ours.commit([], fsio.InputsRead())
    assert list((out / "_units" / "web").glob("*.json"))
    lock.release()


def test_a_shard_of_a_run_that_lost_the_lock_is_not_written(tmp_path):
    from uvd_pipeline.rendered_shards import ShardAddress, write_shard

    out = tmp_path / "out"
    lock = acquire(str(out))
    address = ShardAddress("web", "train", 0)
    items = [Reject(f"k{i}", "web", f"k{i}", "decode", "truncated") for i in range(3)]
    args = dict(config_hash="h", num_shards=1, image_size=64, format_version=1, expected_items=3)
    with pytest.raises(LockLost):
        write_shard(str(out), address, items, run_id="20260101T000000Z-deadbeef", **args)
    assert not _files(out / "rendered")
    result = write_shard(str(out), address, items, run_id=lock.run_id, **args)
    assert not result.skipped and Path(address.path(str(out), ".stats.json")).exists()
    lock.release()


def test_a_token_shard_of_a_run_that_lost_the_lock_is_not_written(mini_build, tmp_path):
    import shutil

    from tokenizer import Tokenizer
    from uvd_pipeline.tokenize_stage import committed_rendered, tokenize_shard

    config, _ = mini_build
    out = tmp_path / "out"
    shutil.copytree(config.output, out)
    shutil.rmtree(out / "tokens")
    stats = min(committed_rendered(str(out), config.content_hash()), key=lambda s: s["sentences"])
    tok = Tokenizer.from_pretrained(config.tokenizer.checkpoint, batch_size=8, threads=1, device="cpu")
    lock = acquire(str(out))
    with pytest.raises(LockLost):
        tokenize_shard(str(out), stats, tok, config.content_hash(), run_id="20260101T000000Z-deadbeef")
    assert not _files(out / "tokens")
    assert not tokenize_shard(str(out), stats, tok, config.content_hash(), run_id=lock.run_id)["skipped"]
    assert _files(out / "tokens")
    lock.release()


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_the_graph_is_given_the_run_of_the_lock_this_build_took(tmp_path, monkeypatch):
    """The graph read its run id back from `_lock.json` after the build had prepared its output
    (minutes with --verify): a build that took the lock in between (--force-unlock) gave the first
    build's tasks its own id, and they committed beside it (rev54d M1). The id of the lock the
    build took is passed in now."""
    import uvd_pipeline.graph
    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.output_lock import read_holder

    from PIL import Image

    (tmp_path / "web").mkdir()
    Image.new("RGB", (32, 24), (200, 80, 20)).save(tmp_path / "web" / "a.jpg")
    config = parse_config({"version": 1, "output": str(tmp_path / "out"),
                           "sources": [{"name": "web", "type": "laion", "path": str(tmp_path / "web")}],
                           "tokenizer": {"enabled": False}, "beam": {"direct_num_workers": 1}})
    given = {}

    class Stop(Exception):
        pass

    def build_graph(*args, **kwargs):
        given.update(kwargs, holder=read_holder(config.output).run_id)
        raise Stop

    monkeypatch.setattr(uvd_pipeline.graph, "build_graph", build_graph)
    monkeypatch.setattr(uvd_pipeline.graph, "current_run", lambda output: "20260101T000000Z-another")
    with pytest.raises(Stop):
        run_build(config)
    assert given["run_id"] == given["holder"] and given["run_id"] is not None


def test_a_build_whose_lock_was_taken_says_so_in_one_line():
    """It ended in Beam's 70-line traceback (rev54d L1); the task's LockLost, raised or retold as a
    worker's traceback text, is one `error:` line saying what happened and what to run."""
    from uvd_pipeline.refusals import refusal

    message = "/data/out: run 20260101T000000Z-a no longer holds the output's lock (it is held by run 20260101T000000Z-b)"
    told = RuntimeError(f"Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                        f"uvd_pipeline.output_lock.LockLost: {message} [while running 'Write shards']")
    for error in (LockLost(message), told):
        line = refusal(error, "/data/out")
        assert line is not None and line.startswith(f"{message}; another build took this output's lock"), line


def test_a_lock_moved_aside_for_a_moment_is_read_again(tmp_path, monkeypatch):
    """A takeover of a stale lock renames the live one aside for a moment (`_remove_lock`): a
    check then raised LockLost in 2,913 of 3,000 tries while the run still held it (rev54d L3)."""
    import uvd_pipeline.output_lock as output_lock

    out = str(tmp_path / "out")
    lock = acquire(out)
    real = output_lock.read_holder
    reads = []

    def aside_once(output):
        reads.append(output)
        return None if len(reads) == 1 else real(output)

    monkeypatch.setattr(output_lock, "read_holder", aside_once)
    check_held(out, lock.run_id)
    assert len(reads) == 2
    lock.release()
