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
