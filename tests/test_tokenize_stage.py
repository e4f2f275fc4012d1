"""The build's tokenize stage: token shards hold the codes of the rendered images, exactly."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, busy_machine, write_config
from uvd_pipeline.render import decode_png
from uvd_pipeline.rendered_shards import iter_shard
from uvd_pipeline.shards import decode_jsonl_line, find_shards, read_token_shard, sentence_tokens


def test_token_shards_hold_the_codes_of_the_rendered_images(mini_build):
    from tokenizer import Tokenizer

    config, summary = mini_build
    output = Path(config.output)
    tok = Tokenizer.from_pretrained(config.tokenizer.checkpoint, batch_size=8, threads=1)
    shards = find_shards(str(output / "tokens"))
    assert len(shards) == summary["totals"]["shards"]
    checked = 0
    for path in shards:
        table, meta = read_token_shard(path)
        assert meta.tokenizer_hash == tok.tokenizer_hash and meta.tokens_per_image == 16
        assert meta.image_size == 64 and meta.config_hash == config.content_hash()
        tar = str(Path(path.replace("/tokens/", "/rendered/")).with_suffix(".tar"))
        for index, sentence in enumerate(iter_shard(tar)):
            assert table.column("sentence_id")[index].as_py() == sentence.sentence_id
            images = np.stack([decode_png(p) for p in sentence.images])
            expected = tok.encode(images).reshape(-1)
            assert np.array_equal(sentence_tokens(table, index), expected)
            checked += 1
    assert checked == summary["totals"]["sentences"]
    assert summary["tokens"]["tokenizers"] == [{"name": "tiny-seed0", "weights_hash": tok.tokenizer_hash,
                                                  "precision": "fp32", "tuned_kernels": False,
                                                  "compiled": False, "channel_statistics": False, "threads": 1,
                                                  "batch_size": 8, "shards": len(shards)}]


def test_retokenize_with_another_tokenizer(mini_build, tmp_path):
    import shutil

    from tokenizer import TINY, build, save
    from uvd_pipeline.build import run_build

    config, summary = mini_build
    out = tmp_path / "out"
    shutil.copytree(config.output, out)
    other = tmp_path / "tiny-seed1"
    from tokenizer.checkpoint import read_config, tokenizer_hash

    new_hash = tokenizer_hash(save(build(TINY, seed=1), other), read_config(other))
    moved = config.model_copy(update={"output": str(out), "tokenizer": config.tokenizer.model_copy(
        update={"checkpoint": str(other)})})
    rendered_before = sorted(p.stat().st_mtime_ns for p in (out / "rendered").rglob("*.tar"))
    result = run_build(moved, retokenize=True).summary
    assert result["tokens"]["tokenizers"] == [{"name": "tiny-seed1", "weights_hash": new_hash, "precision": "fp32",
                                                   "tuned_kernels": False, "compiled": False,
                                                   "channel_statistics": False, "threads": 1, "batch_size": 8,
                                                   "shards": summary["totals"]["shards"]}]
    assert sorted(p.stat().st_mtime_ns for p in (out / "rendered").rglob("*.tar")) == rendered_before
    for path in find_shards(str(out / "tokens")):
        assert read_token_shard(path)[1].tokenizer_hash == new_hash
    assert result["run"]["counters"].get("web.token_shards_written", 0) >= 1


def test_retokenize_refuses_an_output_with_an_unreadable_rendered_stats_file(mini_build, tmp_path):
    """--retokenize reads no input: a rendered shard whose stats cannot be read is named with the
    repair before anything runs, never left without tokens while the others are retokenized."""
    import shutil

    from uvd_pipeline.build import run_build
    from uvd_pipeline.integrity import ShardDamaged

    config, _ = mini_build
    out = tmp_path / "out"
    shutil.copytree(config.output, out)
    damaged = sorted((out / "rendered").rglob("*.stats.json"))[0]
    damaged.write_text(damaged.read_text()[:40])
    tokens_before = {p: p.read_bytes() for p in sorted((out / "tokens").rglob("*")) if p.is_file()}
    with pytest.raises(ShardDamaged) as caught:
        run_build(config.model_copy(update={"output": str(out)}), retokenize=True)
    assert str(damaged) in str(caught.value) and "--verify" in str(caught.value)
    assert {p: p.read_bytes() for p in sorted((out / "tokens").rglob("*")) if p.is_file()} == tokens_before


@pytest.mark.slow
def test_a_compiled_tokenizer_is_recorded_and_agrees(mini_build, tmp_path):
    """The build compiles the encoder by default: its codes differ from the eager forward's by
    rounding at near ties only, token stats say `compiled`, a change re-encodes, a rerun skips.
    The compile is the build's own for a narrow model (NCHW, as `make build-uvd` compiles the
    embedded one; a wide one's CPU compile is channels-last): with a last batch padded to its shape
    (three photos in a batch of eight), the codec's codes agree with the eager forward's too, and
    the same compiled graph serves both (one compile: 35-40 CPU-s cold on this machine)."""
    import shutil

    from tokenizer import Tokenizer
    from tokenizer.checkpoint import load
    from tokenizer.codec import code_agreement, eager_encode
    from uvd_pipeline.sample.media import square_photos
    from uvd_pipeline.tokenize_stage import arithmetic_label, committed_rendered, summarize_tokens, tokenize_shard

    config, _ = mini_build
    out = tmp_path / "out"
    shutil.copytree(config.output, out)
    stats = max(committed_rendered(str(out), config.content_hash()), key=lambda s: s["sentences"])
    path = out / "tokens" / stats["source"] / stats["split"] / stats["tar"].replace(".tar", ".arrow")
    before = read_token_shard(str(path))[0]
    compiled = Tokenizer.from_pretrained(config.tokenizer.checkpoint, batch_size=8, threads=1, device="cpu",
                                         compile=True)
    assert not compiled.channels_last  # what the build makes of this checkpoint
    written = tokenize_shard(str(out), stats, compiled, config.content_hash())
    assert not written["skipped"] and written["compiled"] and arithmetic_label(written) == "fp32 compiled on 1 CPU thread"
    now = read_token_shard(str(path))[0]
    a = np.concatenate([sentence_tokens(before, i) for i in range(before.num_rows)])
    b = np.concatenate([sentence_tokens(now, i) for i in range(now.num_rows)])
    assert a.shape == b.shape and a.size >= 256 and np.mean(a == b) >= 0.99
    assert tokenize_shard(str(out), stats, compiled, config.content_hash())["skipped"]
    made_by = summarize_tokens(str(out), config.content_hash())["tokenizers"]
    assert sorted(t["compiled"] for t in made_by) == [False, True]
    photos = square_photos(("astronaut", "coffee", "chelsea"), config.image.size)
    codes = compiled.encode(photos)
    assert codes.shape == (3, (config.image.size // 16) ** 2) and compiled.pad_batches
    assert code_agreement(codes, eager_encode(load(config.tokenizer.checkpoint), photos)) >= 0.99  # its own NCHW copy


def test_overlapped_encode_writes_the_same_token_shard(mini_build, tmp_path):
    """Decoding the next batch while this one encodes (the GPU default, asked for here on CPU)
    gives the same token shard bytes, reports every batch in order on the caller's thread, and an
    encode error still reaches the caller."""
    import shutil
    import threading

    from tokenizer import Tokenizer
    from uvd_pipeline.tokenize_stage import EncodeFailed, committed_rendered, token_shard_path, tokenize_shard

    config, _ = mini_build
    stats = max(committed_rendered(config.output, config.content_hash()), key=lambda s: s["sentences"])
    tok = Tokenizer.from_pretrained(config.tokenizer.checkpoint, batch_size=3, threads=1)
    written: dict[bool, bytes] = {}
    batches: dict[bool, list[int]] = {}
    for overlap in (False, True):
        out = tmp_path / f"overlap-{overlap}"
        shutil.copytree(config.output, out)
        shutil.rmtree(out / "tokens")
        seen: list[int] = []

        def on_batch(seconds: float, images: int) -> None:
            assert threading.current_thread() is threading.main_thread() and seconds > 0
            seen.append(images)

        timings: dict[str, float] = {}
        started = time.perf_counter()
        with busy_machine() if overlap else contextlib.nullcontext():  # the encode thread's timing varies
            result = tokenize_shard(str(out), stats, tok, config.content_hash(), on_batch=on_batch, overlap=overlap,
                                    timings=timings)
        wall = time.perf_counter() - started
        assert not result["skipped"]
        # where the shard's time went: the parts are all there and add up to no more than its wall time
        assert sorted(timings) == ["read", "wait", "write"] and all(v > 0 for v in timings.values())
        assert sum(timings.values()) <= wall
        written[overlap] = Path(token_shard_path(str(out), stats["source"], stats["split"],
                                                 stats["tar"][:-4])).read_bytes()
        batches[overlap] = seen
    assert written[True] == written[False]
    images = sum(batches[False])
    assert images > 3 and batches[True] == batches[False] == [3] * (images // 3) + ([images % 3] if images % 3 else [])

    class Failing:  # a codec that breaks on its second batch, on the encode thread
        def __init__(self, error: Exception) -> None:
            self.calls, self.error = 0, error

        def __getattr__(self, name):
            return getattr(tok, name)

        def encode(self, batch):
            self.calls += 1
            if self.calls == 2:
                raise self.error
            return tok.encode(batch)

    out = tmp_path / "failing"
    shutil.copytree(config.output, out)
    shutil.rmtree(out / "tokens")
    with pytest.raises(RuntimeError, match="device lost"):
        tokenize_shard(str(out), stats, Failing(RuntimeError("device lost")), config.content_hash(), overlap=True)
    assert not Path(token_shard_path(str(out), stats["source"], stats["split"], stats["tar"][:-4])).exists()
    # a codec's ValueError is the codec's, not a damaged shard's (that one would re-hash the tar
    # and say a sentence does not decode)
    for overlap in (False, True):
        with pytest.raises(EncodeFailed, match="the tokenizer refused a batch of .*: image size 64x64"):
            tokenize_shard(str(out), stats, Failing(ValueError("image size 64x64 is not a multiple of 48")),
                           config.content_hash(), overlap=overlap)


def test_a_precision_change_re_encodes_and_is_recorded(mini_build, tmp_path):
    """fp16 codes may differ from fp32 ones, so a token shard made in another precision is redone,
    its stats say which precision made it, and a rerun with the same precision skips it. (One
    shard, directly: fp16 convolutions are ~45x slower than fp32 on this CPU.)"""
    import shutil

    from tokenizer import Tokenizer
    from uvd_pipeline.config import ConfigError, load_config
    from uvd_pipeline.tokenize_stage import committed_rendered, summarize_tokens, token_stats_files, tokenize_shard

    config, _ = mini_build
    out = tmp_path / "out"
    shutil.copytree(config.output, out)
    stats = min(committed_rendered(str(out), config.content_hash()), key=lambda s: s["sentences"])
    fp32 = Tokenizer.from_pretrained(config.tokenizer.checkpoint, batch_size=8, threads=1)
    assert tokenize_shard(str(out), stats, fp32, config.content_hash())["skipped"]  # the build's own
    half = Tokenizer.from_pretrained(config.tokenizer.checkpoint, batch_size=8, threads=1, device="cpu",
                                      precision="fp16")
    before = read_token_shard(str(out / "tokens" / stats["source"] / stats["split"] /
                                  stats["tar"].replace(".tar", ".arrow")))[0]
    written = tokenize_shard(str(out), stats, half, config.content_hash())
    assert not written["skipped"] and written["precision"] == "fp16"
    now = read_token_shard(str(out / "tokens" / stats["source"] / stats["split"] /
                               stats["tar"].replace(".tar", ".arrow")))[0]
    a = np.concatenate([sentence_tokens(before, i) for i in range(before.num_rows)])
    b = np.concatenate([sentence_tokens(now, i) for i in range(now.num_rows)])
    assert a.shape == b.shape and np.mean(a == b) >= 0.9  # rounding moves a few codes at most
    assert tokenize_shard(str(out), stats, half, config.content_hash())["skipped"]
    made_by = summarize_tokens(str(out), config.content_hash())["tokenizers"]
    assert sorted(t["precision"] for t in made_by) == ["fp16", "fp32"]  # the summary says which shards are which
    assert not tokenize_shard(str(out), stats, fp32, config.content_hash())["skipped"]  # and back
    # GPU kernel tuning may round differently too: recorded, and a change re-encodes (the flag is
    # set by hand here; a CPU Tokenizer never tunes)
    fp32.tune_kernels = True
    written = tokenize_shard(str(out), stats, fp32, config.content_hash())
    assert not written["skipped"] and written["tuned_kernels"] and written["precision"] == "fp32"
    assert tokenize_shard(str(out), stats, fp32, config.content_hash())["skipped"]
    # so may GroupNorm from per-channel statistics (the GPU compiled default): recorded, a change
    # re-encodes, and switching back re-encodes again
    fp32.channel_statistics = True
    written = tokenize_shard(str(out), stats, fp32, config.content_hash())
    assert not written["skipped"] and written["channel_statistics"]
    assert tokenize_shard(str(out), stats, fp32, config.content_hash())["skipped"]
    fp32.channel_statistics = False
    assert not tokenize_shard(str(out), stats, fp32, config.content_hash())["skipped"]
    made_by = summarize_tokens(str(out), config.content_hash())["tokenizers"]
    shards = len(token_stats_files(str(out)))
    assert [(t["precision"], t["tuned_kernels"], t["shards"]) for t in made_by] == [("fp32", False, shards - 1),
                                                                                    ("fp32", True, 1)]

    import yaml

    path = write_config(tmp_path / "c.yaml", Path(config.sources[0].path).parent, tmp_path / "never",
                        config.tokenizer.checkpoint)
    raw = yaml.safe_load(path.read_text())
    raw["tokenizer"].update(precision="tf32", device="cpu")
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="tokenizer.*precision tf32 is a GPU mode"):
        load_config(str(path))


def test_jsonl_export_import_cli(mini_build, tmp_path):
    config, summary = mini_build
    jsonl = tmp_path / "all.jsonl"
    run = subprocess.run([sys.executable, "-m", "uvd_pipeline", "export-jsonl", str(Path(config.output) / "tokens"),
                          "--out", str(jsonl)], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    lines = jsonl.read_text().splitlines()
    assert len(lines) == summary["totals"]["sentences"]
    assert all(decode_jsonl_line(line).size % 16 == 0 for line in lines)
    back = tmp_path / "back.arrow"
    run = subprocess.run([sys.executable, "-m", "uvd_pipeline", "import-jsonl", str(jsonl), "--out", str(back),
                          "--tokens-per-image", "16", "--image-size", "64"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    table, meta = read_token_shard(str(back))
    assert table.num_rows == len(lines)
    assert np.array_equal(sentence_tokens(table, 3), decode_jsonl_line(lines[3]))


def test_missing_tokenizer_fails_before_the_build(tmp_path, mini_corpus):
    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import ConfigError, load_config

    config = load_config(str(write_config(tmp_path / "c.yaml", mini_corpus, tmp_path / "out", "embedded")))
    missing = config.model_copy(update={"tokenizer": config.tokenizer.model_copy(update={"checkpoint": str(tmp_path)})})
    with pytest.raises(ConfigError, match="tokenizer.checkpoint: no config.json"):
        run_build(missing)
    assert not (tmp_path / "out").exists()


def test_tokenizer_settings_reach_the_codec(monkeypatch, tmp_path):
    """Every tokenizer field of the build config reaches `Tokenizer.from_pretrained`; kernel tuning
    (timing-dependent on a GPU) stays off unless the config asks for it."""
    from tokenizer.codec import Tokenizer
    from uvd_pipeline.config import TokenizerConfig
    from uvd_pipeline.tokenize_stage import TokenizeSettings, load_tokenizer

    seen = {}
    monkeypatch.setattr(Tokenizer, "from_pretrained", classmethod(lambda cls, path, **kw: seen.update(kw, path=path)))
    assert TokenizerConfig().tune_kernels is False
    t = TokenizerConfig(checkpoint=str(tmp_path), batch_size=64, device="cuda", compile=True, precision="fp16",
                        tune_kernels=True, threads=2)
    load_tokenizer(TokenizeSettings.of(t))
    assert seen == {"path": str(tmp_path), "batch_size": 64, "device": "cuda", "compile": True, "threads": 2,
                    "precision": "fp16", "tune_kernels": True}


def test_one_source_for_the_tokenizer_defaults():
    """The build config's `tokenizer` section, the stage's settings and the codec agree on every default
    they share (the codec cannot import the config: tokenizer/ sits below uvd_pipeline/)."""
    import dataclasses
    import inspect

    from tokenizer.codec import Tokenizer
    from uvd_pipeline.config import TokenizerConfig
    from uvd_pipeline.tokenize_stage import TokenizeSettings

    config = TokenizerConfig()
    settings = TokenizeSettings(config.checkpoint)
    assert TokenizeSettings.of(config) == settings
    assert {f.name for f in dataclasses.fields(settings)} <= set(TokenizerConfig.model_fields)
    codec = inspect.signature(Tokenizer).parameters
    for name in ("batch_size", "compile", "tune_kernels", "threads"):
        if name == "threads":  # the build pins one thread per worker process; the codec leaves torch's own
            assert codec[name].default is None and config.threads == 1
            continue
        if name == "compile":  # the codec's default is the plain forward; the build compiles (measured faster)
            assert codec[name].default is False and config.compile is True
            continue
        assert codec[name].default == getattr(config, name), name


def test_the_tokenizer_loads_while_the_build_renders(mini_build, tmp_path, monkeypatch, caplog):
    """On a GPU (faked here: the check is patched, the codec stays on this CPU) the build loads the
    tokenizer on a thread at its start and the Tokenize step takes that object: one load in all,
    the same token shards as the build that loaded it in the step, and a log line saying so."""
    import logging

    from conftest import shard_digests
    from uvd_pipeline import early_tokenizer, tokenize_stage
    from uvd_pipeline.build import run_build

    config, _ = mini_build
    loads: list[str] = []
    real_load = tokenize_stage.load_tokenizer

    def counted(settings):
        loads.append(threading.current_thread().name)
        return real_load(settings)

    from uvd_pipeline import write_steps

    monkeypatch.setattr(early_tokenizer, "load_tokenizer", counted)
    monkeypatch.setattr(write_steps, "load_tokenizer", counted)  # the step's own load, if it made one
    monkeypatch.setattr(early_tokenizer, "on_gpu", lambda config: True)
    moved = config.model_copy(update={"output": str(tmp_path / "out")})
    with caplog.at_level(logging.INFO, logger="uvd_pipeline.build"), busy_machine():
        run_build(moved)
    assert loads == ["uvd-early-tokenizer"]  # the step's setup took it: no second load
    assert any("early tokenizer: loaded in" in r.getMessage() for r in caplog.records)
    tokens = {k: v for k, v in shard_digests(tmp_path / "out").items() if k.startswith("tokens")}
    assert tokens and tokens == {k: v for k, v in shard_digests(Path(config.output)).items() if k.startswith("tokens")}
    assert not early_tokenizer._ACTIVE  # nothing left behind for another build
    # processes (the Tokenize step in other processes) and CPU builds keep the step's own load
    assert not early_tokenizer.wanted(config.model_copy(update={"beam": config.beam.model_copy(
        update={"direct_num_workers": 4, "direct_running_mode": "multi_processing"})}))
    monkeypatch.setattr(early_tokenizer, "on_gpu", lambda config: False)
    assert not early_tokenizer.wanted(config)


def test_a_failing_build_does_not_wait_for_the_early_tokenizer(mini_build, monkeypatch):
    """A build that fails (or is interrupted) while the tokenizer still compiles leaves at once:
    the error is not held up by a compile of up to minutes; a build that ends well waits for it.
    The load here blocks until the test releases it, so the failed block has left while the load
    was still running (a block that waited for it would hang until the 30 s guard, then fail)."""
    from uvd_pipeline import early_tokenizer

    config, _ = mini_build
    release = threading.Event()
    monkeypatch.setattr(early_tokenizer, "on_gpu", lambda config: True)
    monkeypatch.setattr(early_tokenizer, "load_tokenizer", lambda settings: release.wait(30) and None)
    with pytest.raises(RuntimeError, match="the build broke"):
        with early_tokenizer.tokenizer_early(config) as early:
            assert early is not None
            raise RuntimeError("the build broke")
    assert not early._done.is_set()  # left with the load still blocked: it did not wait for it
    assert not early_tokenizer._ACTIVE
    release.set()
    with early_tokenizer.tokenizer_early(config) as early:  # ends well: waits for the load
        pass
    assert early._done.is_set()



def test_a_batch_decodes_the_same_on_the_shared_pool_and_refuses_what_is_not_its_size(mini_build):
    """A GPU build's Tokenize threads decode a batch's PNGs on a pool a thread per core shares
    (`decode_pool`): the batch holds each rendered image's pixels (Pillow reads them too), in order,
    with or without the pool; bytes that are not a PNG, or a PNG of another size, raise ValueError
    (what the stage reports as a sentence that does not decode), also from a pool thread."""
    import io

    from PIL import Image

    from uvd_pipeline.tokenize_stage import decode_batch, decode_pool

    config, _ = mini_build
    pngs = [png for tar in sorted(Path(config.output, "rendered").rglob("*.tar")) if ".tmp-" not in tar.name
            for sentence in iter_shard(str(tar)) for png in sentence.images][:40]
    assert len(pngs) == 40
    expected = np.stack([np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in pngs])
    pool = decode_pool()
    assert decode_pool() is pool  # one per process
    for chunk in (1, 3, 8, 64):
        assert np.array_equal(decode_batch(pngs, pool, chunk=chunk), expected)
    assert np.array_equal(decode_batch(pngs), expected)
    assert np.array_equal(decode_batch(pngs[:1], pool), expected[:1])
    small = io.BytesIO()
    Image.fromarray(expected[0][:32, :32]).save(small, "PNG")
    for bad, why in ((b"not a png", "not a PNG"), (small.getvalue(), "a rendered image of 32x32")):
        for use in (None, pool):
            with pytest.raises(ValueError, match=why):
                decode_batch(pngs[:20] + [bad] + pngs[20:], use)


def test_an_edited_tokenizer_config_re_encodes_and_is_recorded(mini_build, tmp_path):
    """codebook_l2_norm changes the codes but no weight: a shard made before the edit was kept as
    current (the weights hash alone was compared and recorded). The recorded hash now covers
    config.json: the shard is redone, and says so; one an earlier version wrote (its hash the
    weights' alone) is still this tokenizer's to read, and is re-encoded once."""
    import json
    import shutil

    from tokenizer import Tokenizer
    from uvd_pipeline.tokenize_stage import committed_rendered, tokenize_shard

    config, _ = mini_build
    out, folder = tmp_path / "out", tmp_path / "tokA"
    shutil.copytree(config.output, out)
    shutil.copytree(config.tokenizer.checkpoint, folder)
    stats = min(committed_rendered(str(out), config.content_hash()), key=lambda s: s["sentences"])
    arrow = out / "tokens" / stats["source"] / stats["split"] / stats["tar"].replace(".tar", ".arrow")
    before = read_token_shard(str(arrow))
    tok = Tokenizer.from_pretrained(folder, batch_size=8, threads=1)
    assert tokenize_shard(str(out), stats, tok, config.content_hash())["skipped"]  # the same weights and config

    raw = json.loads((folder / "config.json").read_text())
    raw["codebook_l2_norm"] = False
    (folder / "config.json").write_text(json.dumps(raw))
    edited = Tokenizer.from_pretrained(folder, batch_size=8, threads=1)
    assert edited.weights_hash == tok.weights_hash and edited.tokenizer_hash != tok.tokenizer_hash
    written = tokenize_shard(str(out), stats, edited, config.content_hash())
    assert not written["skipped"] and written["tokenizer_hash"] == edited.tokenizer_hash
    assert written["tokenizer_weights_hash"] == tok.weights_hash
    table, meta = read_token_shard(str(arrow))
    assert meta.tokenizer_hash == edited.tokenizer_hash != before[1].tokenizer_hash
    tar = str(out / "rendered" / stats["source"] / stats["split"] / stats["tar"])
    fresh = np.concatenate([edited.encode(np.stack([decode_png(p) for p in s.images])).reshape(-1)
                            for s in iter_shard(tar)])
    now = np.concatenate([sentence_tokens(table, i) for i in range(table.num_rows)])
    old = np.concatenate([sentence_tokens(before[0], i) for i in range(before[0].num_rows)])
    assert np.array_equal(now, fresh) and not np.array_equal(old, fresh)

    # a shard of an earlier version recorded the weights hash alone: readable as this tokenizer's, redone on a rerun
    stats_file = arrow.with_suffix(".stats.json")
    recorded = json.loads(stats_file.read_text())
    recorded["tokenizer_hash"] = edited.weights_hash
    stats_file.write_text(json.dumps(recorded))
    assert edited.made(edited.weights_hash) and edited.made(edited.tokenizer_hash) and not edited.made(tok.tokenizer_hash)
    assert not tokenize_shard(str(out), stats, edited, config.content_hash())["skipped"]
    assert tokenize_shard(str(out), stats, edited, config.content_hash())["skipped"]


def test_cpu_threads_and_batch_size_are_recorded_and_a_change_re_encodes(mini_build, tmp_path):
    """On CPU the torch threads split a convolution's sums and, eager, the batch cuts the forwards:
    codes differ by rounding at near ties. Neither was recorded nor compared: `--retokenize --set
    tokenizer.threads=3` over a threads=1 build kept every shard. Now each is recorded, a change
    re-encodes (the codes then a fresh encode's) and the same settings skip."""
    import shutil

    import torch

    from tokenizer import Tokenizer
    from uvd_pipeline.tokenize_stage import arithmetic_label, committed_rendered, summarize_tokens, tokenize_shard

    config, _ = mini_build
    out = tmp_path / "out"
    shutil.copytree(config.output, out)
    stats = min(committed_rendered(str(out), config.content_hash()), key=lambda s: s["sentences"])
    arrow = out / "tokens" / stats["source"] / stats["split"] / stats["tar"].replace(".tar", ".arrow")
    tar = str(out / "rendered" / stats["source"] / stats["split"] / stats["tar"])
    kept = torch.get_num_threads()
    try:
        build = Tokenizer.from_pretrained(config.tokenizer.checkpoint, batch_size=8, threads=1)
        recorded = tokenize_shard(str(out), stats, build, config.content_hash())
        assert recorded["skipped"] and (recorded["threads"], recorded["batch_size"]) == (1, 8)
        for threads, batch_size in ((3, 8), (3, 2)):
            tok = Tokenizer.from_pretrained(config.tokenizer.checkpoint, batch_size=batch_size, threads=threads)
            written = tokenize_shard(str(out), stats, tok, config.content_hash())
            assert not written["skipped"] and (written["threads"], written["batch_size"]) == (threads, batch_size)
            assert arithmetic_label(written) == f"fp32 on {threads} CPU threads in batches of {batch_size}"
            table = read_token_shard(str(arrow))[0]
            images = [decode_png(p) for s in iter_shard(tar) for p in s.images]
            fresh = np.concatenate([tok.encode(np.stack(images[i:i + batch_size])).reshape(-1)
                                    for i in range(0, len(images), batch_size)])
            assert np.array_equal(np.concatenate([sentence_tokens(table, i) for i in range(table.num_rows)]), fresh)
            assert tokenize_shard(str(out), stats, tok, config.content_hash())["skipped"]
        made_by = summarize_tokens(str(out), config.content_hash())["tokenizers"]
        assert sorted((t["threads"], t["batch_size"], t["shards"]) for t in made_by)[-1] == (3, 2, 1)
    finally:
        torch.set_num_threads(kept)


def test_export_jsonl_refuses_shards_of_two_tokenizers_naming_them(mini_build, tmp_path, capsys):
    """A --retokenize with another tokenizer killed after its first shard leaves shards of two
    tokenizers: export-jsonl wrote them into one file without a word (the trainer refuses that
    mix). Now it names each tokenizer and its shards, and writes nothing."""
    import shutil

    from tokenizer import TINY, Tokenizer, build, save
    from uvd_pipeline.cli import main
    from uvd_pipeline.tokenize_stage import committed_rendered, tokenize_shard

    config, _ = mini_build
    out = tmp_path / "out"
    shutil.copytree(config.output, out)
    save(build(TINY, seed=1), tmp_path / "tiny-seed1")
    other = Tokenizer.from_pretrained(tmp_path / "tiny-seed1", batch_size=8, threads=1)
    stats = min(committed_rendered(str(out), config.content_hash()), key=lambda s: s["sentences"])
    tokenize_shard(str(out), stats, other, config.content_hash())
    odd = str(out / "tokens" / stats["source"] / stats["split"] / stats["tar"].replace(".tar", ".arrow"))
    shards = find_shards(str(out / "tokens"))
    first = read_token_shard(shards[0] if shards[0] != odd else shards[1])[1]
    target = tmp_path / "all.jsonl"
    assert main(["export-jsonl", str(out / "tokens"), "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the shards come from 2 tokenizers, whose codes mean other images: "
                          f"'tiny-seed1' (hash {other.tokenizer_hash[:16]}, 8192 codes, 16 tokens per image): "
                          f"1 shard ({odd}); 'tiny-seed0' (hash {first.tokenizer_hash[:16]}, "), err
    assert f": {len(shards) - 1} shards (" in err and not target.exists()
    rest = [p for p in shards if p != odd]
    assert main(["export-jsonl", *rest, "--out", str(target)]) == 0  # one tokenizer's shards: written
    assert len(target.read_text().splitlines()) == sum(read_token_shard(p)[0].num_rows for p in rest)
