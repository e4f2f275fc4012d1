"""The trainer: model masking, schedule, learning on real token shards, exact resume, checkpoints,
DDP and FSDP2 on CPU (gloo) against a single process, and the errors a user meets."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_shards import structured_sentences, write_shards

from trainer import checkpoint as ckpt
from trainer.checkpoint_io import load_pretrained
from trainer.config import VOCAB_SIZE, UsageError, preset
from trainer.fit import Dist, FitOptions, Trainer, fit, learning_rate, main
from trainer.integrity import write_manifest
from trainer.losses import fused_linear_cross_entropy
from trainer.model import LVMTransformer

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("trainer_shards")
    write_shards(folder / "a", "a", structured_sentences(24, seed=0), shards=2)
    write_shards(folder / "b", "b", structured_sentences(12, seed=1, images=2), shards=1)
    return str(folder)


def _options(shards: str, out: Path, **kwargs) -> FitOptions:
    base = {"data": [f"{shards}/a/*.arrow:2", f"{shards}/b/*.arrow:1"], "out": str(out), "preset": "tiny",
            "seq_len": 64, "batch_size": 2, "max_steps": 4, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2,
            "log_every": 1, "checkpoint_every": 1000, "quiet": True, "threads": 1}
    return FitOptions(**{**base, **kwargs})


def test_model_shapes_and_causal_mask():
    torch.manual_seed(0)
    model = LVMTransformer(preset("tiny")).eval()
    ids = torch.randint(0, 8192, (2, 12))
    with torch.no_grad():
        logits = model(ids)
        changed = ids.clone()
        changed[:, 7] = (changed[:, 7] + 1) % 8192
        after = model(changed)
    assert logits.shape == (2, 12, VOCAB_SIZE)
    assert torch.allclose(logits[:, :7], after[:, :7], atol=1e-6, rtol=0)
    assert not torch.allclose(logits[:, 7:], after[:, 7:], atol=1e-3)
    # the training loss is the mean next-token cross-entropy of the logits
    targets = torch.randint(0, 8192, (2, 12))
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert torch.allclose(model.loss(ids, targets, chunk_tokens=5), expected, atol=1e-5)


@pytest.mark.parametrize("kv_heads", [None, 2], ids=["mha", "gqa"])
def test_gpu_step_shortcuts_keep_the_loss_and_gradients(monkeypatch, kv_heads: int | None):
    """What a GPU training step does differently, forced on here: q/k/v and gate/up as one GEMM
    each over the concatenated weights (`fuse_projections`), and RoPE tables made once and passed
    in (`rope=`). Same loss and gradients as the plain modules (fp64: the CPU step's own attention
    steps aside) and the same HF parameters."""
    from trainer.model import MLP, Attention, rope_tables

    overrides = {"num_key_value_heads": kv_heads} if kv_heads else {}
    torch.manual_seed(0)
    model = LVMTransformer(preset("tiny", **overrides)).double()
    ids, targets = torch.randint(0, 8192, (2, 24)), torch.randint(0, 8192, (2, 24))

    def loss_and_grads(fused: bool, rope=None):
        monkeypatch.setattr(Attention, "fuse_projections", fused)
        monkeypatch.setattr(MLP, "fuse_projections", fused)
        model.zero_grad()
        loss = model.loss(ids, targets, rope=rope)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, plain_grads = loss_and_grads(False)
    tables = rope_tables(model.config, torch.arange(24), torch.float64)
    fused, fused_grads = loss_and_grads(True, tables)
    assert abs(float(fused - plain)) < 1e-12
    assert fused_grads.keys() == plain_grads.keys()
    for name, grad in plain_grads.items():
        assert torch.allclose(fused_grads[name], grad, rtol=1e-9, atol=1e-12), name
    assert float(plain_grads["model.layers.0.self_attn.k_proj.weight"].norm()) > 0
    with torch.no_grad():  # the passed tables are the ones used, and those the model makes itself
        assert abs(float(model.loss(ids, targets, rope=(tables[0].flip(0), tables[1])) - plain)) > 1e-6
        assert torch.equal(model.loss(ids, targets), model.loss(ids, targets, rope=tables))


@pytest.mark.parametrize("cpu_path", [True, False], ids=["cpu-loop", "general"])
@pytest.mark.parametrize("chunk", [5, 4096])
def test_fused_cross_entropy_matches_autograd(monkeypatch, chunk: int, cpu_path: bool):
    """Both paths of the fused loss: the CPU chunk loop, and the general one that CUDA fp32 and
    compiled steps take (forced here on CPU)."""
    import trainer.losses as losses

    monkeypatch.setattr(losses, "_cpu_path", lambda *args, real=losses._cpu_path: cpu_path and real(*args))
    torch.manual_seed(0)
    hidden = torch.randn(23, 16, requires_grad=True)
    weight = torch.randn(40, 16, requires_grad=True)
    targets = torch.randint(0, 40, (23,))
    targets[[2, 11]] = -100
    expected = torch.nn.functional.cross_entropy(hidden @ weight.T, targets)
    grad_h, grad_w = torch.autograd.grad(2.5 * expected, (hidden, weight))
    loss = fused_linear_cross_entropy(hidden, weight, targets, chunk_tokens=chunk)
    got_h, got_w = torch.autograd.grad(2.5 * loss, (hidden, weight))
    assert torch.allclose(loss, expected, atol=1e-6)
    assert torch.allclose(got_h, grad_h, atol=1e-6) and torch.allclose(got_w, grad_w, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(fused_linear_cross_entropy(hidden, weight, targets, chunk_tokens=chunk), expected,
                              atol=1e-6)
    # a plain `loss.backward()` (gradient 1: the made gradients are handed over as they are)
    grad_h, grad_w = torch.autograd.grad(torch.nn.functional.cross_entropy(hidden @ weight.T, targets),
                                         (hidden, weight))
    fused_linear_cross_entropy(hidden, weight, targets, chunk_tokens=chunk).backward()
    assert torch.allclose(hidden.grad, grad_h, atol=1e-6) and torch.allclose(weight.grad, grad_w, atol=1e-6)


@pytest.mark.parametrize(("length", "checkpointing"), [(200, False), (64, True), (1, False)])
def test_training_attention_matches_sdpa(monkeypatch, length: int, checkpointing: bool):
    """The CPU training step's attention (`model._TrainingAttention`: fused q/k/v GEMM, RoPE,
    blocked causal attention keeping its probabilities) gives SDPA's loss and gradients; a window
    that is not a multiple of the block, and under activation checkpointing."""
    from trainer import model as model_module

    torch.manual_seed(0)
    config = preset("tiny", num_hidden_layers=2)
    ids = torch.randint(0, 8192, (2, length))
    targets = torch.randint(0, 8192, (2, length))
    taken = []
    apply = model_module._TrainingAttention.apply
    monkeypatch.setattr(model_module._TrainingAttention, "apply", lambda *a: taken.append(1) or apply(*a))

    def loss_and_grads(budget: int) -> tuple[float, dict[str, torch.Tensor]]:
        monkeypatch.setattr(model_module, "ATTENTION_SAVED_BYTES", budget)
        torch.manual_seed(1)
        model = LVMTransformer(config)
        model.activation_checkpointing = checkpointing
        loss = model.loss(ids, targets)
        loss.backward()
        return loss.item(), {name: p.grad for name, p in model.named_parameters()}

    ours, ours_grads = loss_and_grads(256 * 2**20)
    assert taken, "the training attention was not used"
    taken.clear()
    sdpa, sdpa_grads = loss_and_grads(0)
    assert not taken
    assert abs(ours - sdpa) < 1e-5
    for name, grad in sdpa_grads.items():
        assert torch.allclose(ours_grads[name], grad, atol=1e-6, rtol=1e-4), name
    with torch.no_grad():  # inference (no autograd) keeps SDPA
        LVMTransformer(config).loss(ids, targets)
    assert not taken


def test_training_attention_budget_counts_every_layer(monkeypatch):
    """The probabilities kept for backward are bounded per step, not per layer: a budget that
    holds one layer's but not all layers' sends the step to SDPA."""
    from trainer import model as model_module

    config = preset("tiny", num_hidden_layers=3)
    n, t = 2, 64
    per_layer = n * config.num_attention_heads * t * (t + model_module.ATTENTION_BLOCK) // 2 * 4
    taken = []
    apply = model_module._TrainingAttention.apply
    monkeypatch.setattr(model_module._TrainingAttention, "apply", lambda *a: taken.append(1) or apply(*a))
    ids = torch.randint(0, 8192, (n, t))
    for budget, expected in ((3 * per_layer, 3), (3 * per_layer - 1, 0), (per_layer, 0)):
        monkeypatch.setattr(model_module, "ATTENTION_SAVED_BYTES", budget)
        taken.clear()
        LVMTransformer(config).loss(ids, ids).backward()
        assert len(taken) == expected, budget


def test_fused_cross_entropy_compiled_and_bf16():
    """Under torch.compile the gradients must still arrive (torch 2.11 zeroed them when the
    returned loss was accumulated in place), and bf16 autocast (the GPU default) must agree with
    autograd's bf16 logits."""
    torch.manual_seed(1)
    hidden = torch.randn(64, 32, requires_grad=True)
    weight = (0.2 * torch.randn(50, 32)).requires_grad_()
    targets = torch.randint(0, 50, (64,))
    expected = torch.nn.functional.cross_entropy(hidden @ weight.T, targets)
    grad_h, grad_w = torch.autograd.grad(expected, (hidden, weight))
    compiled = torch.compile(lambda h, w, t: fused_linear_cross_entropy(h, w, t, chunk_tokens=24))
    loss = compiled(hidden, weight, targets)
    got_h, got_w = torch.autograd.grad(loss, (hidden, weight))
    assert torch.allclose(loss, expected, atol=1e-5)
    assert torch.allclose(got_h, grad_h, atol=1e-5) and torch.allclose(got_w, grad_w, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fused_linear_cross_entropy(hidden, weight, targets, chunk_tokens=24)
        reference = torch.nn.functional.cross_entropy((hidden @ weight.T).float(), targets)
    got_h, got_w = torch.autograd.grad(loss, (hidden, weight))
    ref_h, ref_w = torch.autograd.grad(reference, (hidden, weight))
    assert loss.dtype == torch.float32 and abs(loss.item() - reference.item()) < 1e-3
    assert got_w.dtype == weight.dtype and got_h.dtype == hidden.dtype
    assert torch.allclose(got_h, ref_h, atol=2e-3, rtol=2e-2) and torch.allclose(got_w, ref_w, atol=2e-3, rtol=2e-2)
    assert float(got_w.norm()) > 0.1  # real gradients, not zeros


def test_learning_rate_schedule():
    o = FitOptions(data=[], out="", lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    rates = [learning_rate(s, o) for s in range(110)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:])), "cosine decays"
    assert rates[60] == pytest.approx(1e-4 + 0.5 * 9e-4, rel=1e-6)
    assert learning_rate(110, o) == pytest.approx(1e-4) and rates[-1] > 1e-4


def test_loss_decreases_on_structured_shards(shards, tmp_path: Path):
    summary = fit(_options(shards, tmp_path / "run", max_steps=30, batch_size=4, log_every=10))
    losses = summary["losses"]
    assert len(losses) == 30 and math.log(VOCAB_SIZE) - 0.5 < losses[0] < math.log(VOCAB_SIZE) + 0.5
    assert np.mean(losses[-5:]) < losses[0] - 4.0, losses
    curve = json.loads((tmp_path / "run" / "losses.json").read_text())
    assert curve["step"] == list(range(1, 31)) and curve["loss"] == losses
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [10, 20, 30] and all(r["tokens_per_s"] > 0 for r in log)
    assert summary["tokens_seen"] == 30 * 4 * 64 and summary["mfu"] is None  # no MFU on CPU


def test_the_loop_makes_rope_tables_once_and_the_model_uses_them(shards, tmp_path: Path, monkeypatch):
    """`trainer.fit` makes the RoPE tables of its window length once per run and every step's
    model uses them (a mismatched length would make the model compute its own each step, the
    recomputation the passed tables exist to avoid), with the same losses as tables it makes."""
    import trainer.fit as fit_module
    import trainer.model as model_module

    plain = fit(_options(shards, tmp_path / "plain", max_steps=4))["losses"]
    made: list[int] = []
    real = model_module.rope_tables

    def counted(config, positions, dtype):
        made.append(len(positions))
        return real(config, positions, dtype)

    monkeypatch.setattr(fit_module, "rope_tables", counted)
    monkeypatch.setattr(model_module, "rope_tables", counted)
    assert fit(_options(shards, tmp_path / "counted", max_steps=4))["losses"] == plain
    assert made == [64]  # seq_len 64: one table for the run, none made inside the 4 steps


def test_cpu_gemm_backends_train_the_same_curve(shards, tmp_path: Path, monkeypatch):
    """The CPU step's GEMMs through oneDNN (the default where it works) or MKL: the same losses
    up to float rounding over 8 updates (same data, same initial weights)."""
    from trainer import cpu_gemm

    if not cpu_gemm._onednn_works():
        pytest.skip("this torch has no working oneDNN linear")
    monkeypatch.setenv("UVD_CPU_GEMM", "onednn")
    fast = fit(_options(shards, tmp_path / "onednn", max_steps=8))["losses"]
    monkeypatch.setenv("UVD_CPU_GEMM", "mkl")
    plain = fit(_options(shards, tmp_path / "mkl", max_steps=8))["losses"]
    assert np.allclose(fast, plain, rtol=0, atol=2e-4), (fast, plain)
    assert plain[-1] < plain[0] - 0.5


def test_steps_are_read_back_per_interval_and_a_diverged_step_is_never_saved(shards, tmp_path: Path, monkeypatch):
    """The loop queues steps on the device and reads their losses back at log and checkpoint
    steps (and after the first): every step's loss still lands in the run's losses and curve, in
    order, the same values as one read-back per step gives; a non-finite loss stops the run at
    the next read-back, naming its step, before any checkpoint could hold it."""
    import trainer.fit as fit_module

    per_step = fit(_options(shards, tmp_path / "per_step", max_steps=7, log_every=1))
    drains: list[int] = []
    real_drain = fit_module.StepReadback.drain
    monkeypatch.setattr(fit_module.StepReadback, "drain",
                        lambda self: drains.append(len(self._queued)) or real_drain(self))
    batched = fit(_options(shards, tmp_path / "batched", max_steps=7, log_every=3))
    assert drains == [1, 2, 3, 1]  # after step 1, then at steps 3, 6 and the last, 7
    assert batched["losses"] == per_step["losses"] and len(batched["losses"]) == 7
    curve = json.loads((tmp_path / "batched" / "losses.json").read_text())
    assert curve == {"step": list(range(1, 8)), "loss": per_step["losses"]}
    assert batched["first_step_s"] > 0 and batched["tokens_per_s"] > 0

    real_step = fit_module.Trainer.train_step

    def diverging(self):
        values = real_step(self)
        return values.clone().fill_(float("nan")) if self.step >= 5 else values

    monkeypatch.setattr(fit_module.Trainer, "train_step", diverging)
    with pytest.raises(FloatingPointError, match="the loss is nan at step 5; lower --lr"):
        fit(_options(shards, tmp_path / "diverged", max_steps=12, log_every=4, checkpoint_every=2))
    saved = sorted(p.name for p in (tmp_path / "diverged" / "checkpoints").iterdir())
    assert saved == ["step-00000002", "step-00000004"]


@pytest.mark.parametrize("log_every", [1, 3])
def test_profile_steps_writes_where_the_time_goes(shards, tmp_path: Path, log_every: int):
    """`--profile-steps 2` profiles the two steps after the first and writes the busiest
    operators to OUT/profile.txt; the run's losses are those of a run without it, and its
    throughput is timed after the profiled steps."""
    plain = fit(_options(shards, tmp_path / "plain", max_steps=6, log_every=log_every))
    profiled = fit(_options(shards, tmp_path / "profiled", max_steps=6, log_every=log_every, profile_steps=2))
    table = (tmp_path / "profiled" / "profile.txt").read_text()
    from trainer import cpu_gemm

    gemm = "mkldnn::_linear_pointwise" if cpu_gemm.backend() == "onednn" else "aten::mm"
    assert table.startswith("2 steps profiled") and gemm in table and "Self CPU" in table
    assert not (tmp_path / "plain" / "profile.txt").exists()
    assert profiled["losses"] == plain["losses"] and profiled["tokens_per_s"] > 0
    with pytest.raises(ValueError, match="--profile-steps must be at least 0"):
        fit(_options(shards, tmp_path / "bad", profile_steps=-1))


def test_resume_replays_the_identical_losses(shards, tmp_path: Path):
    whole = fit(_options(shards, tmp_path / "whole", max_steps=6))
    first = fit(_options(shards, tmp_path / "split", max_steps=6, stop_at=3))
    assert first["step"] == 3 and first["checkpoint"].endswith("step-00000003")
    second = fit(_options(shards, tmp_path / "split", max_steps=6))
    assert second["resumed_from"] == first["checkpoint"] and second["start_step"] == 3
    assert first["losses"] + second["losses"] == whole["losses"]  # bit for bit
    a = ckpt.load_checkpoint(whole["checkpoint"])
    b = ckpt.load_checkpoint(second["checkpoint"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["state"]["data"] == b["state"]["data"]
    curve = json.loads((tmp_path / "split" / "losses.json").read_text())
    assert curve["loss"] == whole["losses"]
    # a finished run run again does nothing more
    again = fit(dataclasses.asdict(_options(shards, tmp_path / "split", max_steps=6)))
    assert again["losses"] == [] and again["step"] == 6
    # a fresh start must not mix with an earlier run's checkpoints
    with pytest.raises(ValueError, match="holds checkpoints beyond the starting step 0"):
        fit(_options(shards, tmp_path / "split", max_steps=6, resume="none"))


def test_checkpoint_contents_and_pruning(shards, tmp_path: Path):
    summary = fit(_options(shards, tmp_path / "run", max_steps=5, checkpoint_every=1, keep_checkpoints=2))
    found = ckpt.list_checkpoints(str(tmp_path / "run"))
    assert [step for step, _ in found] == [4, 5]
    assert not [n for n in os.listdir(tmp_path / "run" / "checkpoints") if n.startswith(".")]
    loaded = ckpt.load_checkpoint(summary["checkpoint"])  # weights_only=True inside
    assert loaded["config"] == preset("tiny") and loaded["state"]["step"] == 5
    assert "model.layers.1.self_attn.q_proj.weight" in loaded["model"] and "lm_head.weight" in loaded["model"]
    assert loaded["state"]["options"]["lr"] == 3e-3
    model = load_pretrained(summary["checkpoint"])
    assert torch.equal(model.lm_head.weight, loaded["model"]["lm_head.weight"])


def test_wrong_shape_checkpoint_names_the_keys(shards, tmp_path: Path):
    fit(_options(shards, tmp_path / "run", max_steps=1))
    with pytest.raises(ValueError, match=r"model.embed_tokens.weight: checkpoint \(8292, 128\) vs model "
                                         r"\(8292, 256\).*hidden_size 128 in the checkpoint vs 256 now"):
        fit(_options(shards, tmp_path / "run", preset="small", max_steps=2))
    torch.save({"lm_head.weight": torch.zeros(3, 3)}, tmp_path / "run" / "checkpoints" / "step-00000001" / "model.pt")
    write_manifest(tmp_path / "run" / "checkpoints" / "step-00000001")  # consistent, but the wrong shapes
    with pytest.raises(ValueError, match=r"missing keys: .*model.embed_tokens.weight.*shape mismatches: "
                                         r"lm_head.weight: checkpoint \(3, 3\) vs model \(8292, 128\)"):
        load_pretrained(str(tmp_path / "run" / "checkpoints" / "step-00000001"))


def test_cli_errors_name_the_glob(tmp_path: Path, capsys):
    code = main(["--data", "/nowhere/tokens/*.arrow:2", "--out", str(tmp_path / "run"), "--seq-len", "64"])
    assert code == 2
    assert "'/nowhere/tokens/*.arrow' matches no committed token shard" in capsys.readouterr().err


def test_a_value_error_from_inside_training_is_a_traceback_not_a_flag_error(shards, tmp_path: Path, monkeypatch,
                                                                           capsys):
    """`main` printed every ValueError as a one-line user mistake (exit 2, no traceback), so a bug
    deep in training looked like bad input: only usage errors are one line now."""
    import trainer.fit as fit_module

    def broken_step(self):
        raise ValueError("a bug inside train_step")

    monkeypatch.setattr(fit_module.Trainer, "train_step", broken_step)
    with pytest.raises(ValueError, match="a bug inside train_step") as raised:
        main(["--data", f"{shards}/a/*.arrow", "--out", str(tmp_path / "run"), "--seq-len", "64", "--batch-size", "2",
              "--max-steps", "1", "--threads", "1", "--quiet"])
    assert not isinstance(raised.value, UsageError)
    assert "error:" not in capsys.readouterr().err


def test_cli_usage_errors_from_the_files_the_flags_name_stay_one_line(shards, tmp_path: Path, capsys):
    """What `--data` names is the user's: a mixture file that does not parse (YAML used to escape as
    a traceback), a shard cut short (`ShardDamaged`), each one `error:` line naming the file, exit 2."""
    import shutil

    base = ["--out", str(tmp_path / "run"), "--seq-len", "64", "--batch-size", "2", "--max-steps", "1", "--quiet"]
    (tmp_path / "mix.yaml").write_text("data: [a/*.arrow\n")
    (tmp_path / "mix.json").write_text("[{\"glob\": ")
    for name in ("mix.yaml", "mix.json"):
        assert main(["--data", str(tmp_path / name), *base]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {tmp_path / name}: not a readable mixture file (") and err.count("\n") == 1
    shutil.copytree(f"{shards}/b", tmp_path / "b")
    cut = sorted((tmp_path / "b").glob("*.arrow"))[0]
    cut.write_bytes(cut.read_bytes()[:100])
    assert main(["--data", str(tmp_path / "b" / "*.arrow"), *base]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {cut}: 100 bytes, its stats record") and err.count("\n") == 1


def test_stream_mode_runs(shards, tmp_path: Path):
    summary = fit(_options(shards, tmp_path / "run", mode="stream", max_steps=2, grad_accum=2))
    assert len(summary["losses"]) == 2 and summary["tokens_per_step"] == 2 * 2 * 64


def _torchrun(shards: str, out: Path, extra: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "trainer.fit", "--data", f"{shards}/a/*.arrow:2", "--data", f"{shards}/b/*.arrow:1",
               "--out", str(out), "--seq-len", "64", "--batch-size", "1", "--grad-accum", "2", "--max-steps", "3",
               "--lr", "3e-3", "--min-lr", "3e-4", "--warmup-steps", "2", "--log-every", "1",
               "--checkpoint-every", "2", "--threads", "1", *extra]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("extra", [pytest.param([], id="ddp"), pytest.param(["--fsdp"], id="fsdp2",
                                                                             marks=pytest.mark.slow)])
def test_two_processes_match_one(shards, tmp_path: Path, extra: list[str]):
    """torchrun, 2 CPU processes on gloo, batch 1 each, against 1 process with batch 2: the same
    global batches, so the same losses up to float summation order."""
    single = fit(_options(shards, tmp_path / "single", batch_size=2, grad_accum=2, max_steps=3,
                          checkpoint_every=2))
    summary = _torchrun(shards, tmp_path / "ranks", extra)
    assert summary["world_size"] == 2 and summary["fsdp"] == bool(extra)
    assert np.allclose(summary["losses"], single["losses"], rtol=1e-4, atol=1e-5), (summary["losses"],
                                                                                    single["losses"])
    # the gathered checkpoint is an ordinary full one, with the same weights
    a = ckpt.load_checkpoint(summary["checkpoint"])["model"]
    b = ckpt.load_checkpoint(single["checkpoint"])["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in b)


def test_cli_defaults_are_the_options_defaults():
    """The command line takes its defaults from `FitOptions`: the two cannot disagree."""
    from trainer.fit import FitOptions, parse_args

    assert parse_args(["--data", "shards/*.arrow", "--out", "run"]) == FitOptions(data=["shards/*.arrow"], out="run")


def test_attention_kernel_pins_one_sdpa_backend(shards, tmp_path: Path):
    """`--attention` maps to torch's SDPA backend flags; a CUDA kernel asked for on CPU is refused
    up front, naming the flag, and a misspelt one by the parser."""
    from trainer.fit import ATTENTION_KERNELS, attention_kernel, parse_args

    flags = {"cudnn": torch.backends.cuda.cudnn_sdp_enabled, "flash": torch.backends.cuda.flash_sdp_enabled,
             "efficient": torch.backends.cuda.mem_efficient_sdp_enabled, "math": torch.backends.cuda.math_sdp_enabled}
    before = {name: enabled() for name, enabled in flags.items()}
    for name in ATTENTION_KERNELS[1:]:
        with attention_kernel(name):
            assert {k: enabled() for k, enabled in flags.items()} == {k: k == name for k in flags}
        assert {k: enabled() for k, enabled in flags.items()} == before
    with attention_kernel("auto"):
        assert {k: enabled() for k, enabled in flags.items()} == before
    assert parse_args(["--data", "d", "--out", "o", "--attention", "cudnn"]).attention == "cudnn"
    with pytest.raises(SystemExit):
        parse_args(["--data", "d", "--out", "o", "--attention", "fast"])
    with pytest.raises(ValueError, match="--attention cudnn picks a CUDA kernel, but this run is on cpu; leave it at auto"):
        fit(_options(shards, tmp_path / "run", device="cpu", attention="cudnn"))


def test_the_pinned_attention_kernel_holds_for_backward(shards, tmp_path: Path, monkeypatch):
    """Backward runs inside the step's attention-kernel context: under activation checkpointing
    it runs each layer's forward again, which must take the kernel the forward took."""
    import contextlib

    import trainer.fit as fit_module

    inside: list[bool] = []

    @contextlib.contextmanager
    def pinned():
        inside.append(True)
        try:
            yield
        finally:
            inside.pop()

    during_backward: list[bool] = []
    real_backward = torch.Tensor.backward

    def backward(tensor, *args, **kwargs):
        during_backward.append(bool(inside))
        return real_backward(tensor, *args, **kwargs)

    monkeypatch.setattr(fit_module.Trainer, "_attention_kernel", lambda self: pinned())
    monkeypatch.setattr(torch.Tensor, "backward", backward)
    fit(_options(shards, tmp_path / "run", max_steps=2, activation_checkpointing=True))
    assert during_backward and all(during_backward)


@pytest.mark.parametrize("world", ["1", "2"])
def test_exit_keeps_the_code_and_the_output(world: str):
    """A torchrun rank leaves through os._exit (gloo's late worker threads abort an interpreter
    shutdown): its exit code and everything it printed must still come out."""
    code = ("import logging, sys; from trainer.fit import exit_process; "
            "logging.basicConfig(stream=sys.stderr); print('printed', end=''); "
            "logging.getLogger('t').warning('logged'); exit_process(3)")
    env = {**os.environ, "WORLD_SIZE": world, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("PYTHONUNBUFFERED", None)  # block-buffered stdout: only a flush gets it out
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 3
    assert done.stdout == "printed"
    assert "logged" in done.stderr


def test_fused_cross_entropy_of_no_rows_has_zero_gradients():
    hidden = torch.randn(0, 16, requires_grad=True)
    weight = torch.randn(40, 16, requires_grad=True)
    loss = fused_linear_cross_entropy(hidden, weight, torch.zeros(0, dtype=torch.long), chunk_tokens=5)
    (grad_w,) = torch.autograd.grad(loss, (weight,), allow_unused=True)
    assert grad_w is None or torch.count_nonzero(grad_w) == 0


def test_cli_out_naming_an_existing_file_is_one_error_line(tmp_path: Path, capsys):
    """--out pointing at a file escaped as FileExistsError from makedirs (exit 1, a traceback). The
    command's `main` in this process (a `python -m` start with torch cost seconds; the process's
    own exit path has its tests above)."""
    (tmp_path / "afile").write_text("a note, not a run folder\n")
    assert main(["--data", str(tmp_path / "*.arrow"), "--out", str(tmp_path / "afile"), "--seq-len", "64"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip() == (f"error: --out {tmp_path / 'afile'}: exists and is not a folder; "
                                                      "give the run's output folder")
    assert (tmp_path / "afile").read_text() == "a note, not a run folder\n"


def test_a_step_larger_than_all_the_data_is_noted(shards, tmp_path: Path, capsys):
    """`--batch-size 64` over 1,536 tokens trained on every sentence ~3 times a step without a
    word (the preset's default batch over a few test shards: ~1,400 times); it still runs, as a
    deliberate overfit may, and says so once."""
    assert main(["--data", f"{shards}/a/*.arrow", "--out", str(tmp_path / "big"), "--seq-len", "64",
                 "--batch-size", "64", "--max-steps", "1", "--threads", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("note: one step takes 4,096 tokens, 2.7x all the data's 1,536: each sentence is seen about 3 "
                     "times a step; lower --batch-size, --grad-accum or --seq-len, or give more --data\n") == 1, err
    from trainer.fit import _note_step_beyond_data

    _note_step_beyond_data(1536, 1536)
    assert "note:" not in capsys.readouterr().err


def test_shards_two_globs_name_are_noted_and_their_share_is_in_the_summary(shards, tmp_path: Path, capsys):
    """hunt57 #4: '*/*.arrow' and 'a/*.arrow' drew a's shards through both globs (5/6 of the
    sentences here) while the summary showed each glob at share 0.5, unsaid. The run goes on (it
    may be meant), with a note and each shared shard's effective share in summary.json."""
    both, a = f"{shards}/*/*.arrow", f"{shards}/a/*.arrow"
    summary = fit(_options(shards, tmp_path / "run", data=[both, a], max_steps=1))
    assert [d["share"] for d in summary["data"]] == [0.5, 0.5]
    shares = {Path(s["shard"]).name: (s["globs"], round(s["share"], 6)) for s in summary["shared_shards"]}
    assert shares == {"a-00000.arrow": ([both, a], round(5 / 12, 6)), "a-00001.arrow": ([both, a], round(5 / 12, 6))}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["shared_shards"] == summary["shared_shards"]
    err = capsys.readouterr().err
    assert err.count("note: 2 shard(s) are named by more than one --data glob") == 1, err
    assert "83.3% of the sentences drawn together" in err, err


def test_the_start_line_counts_sentences_longer_than_a_window(shards, tmp_path: Path, capsys):
    """A 4-image sentence of 64 tokens is 66 with BOS/EOS: at --seq-len 64 it goes on in the next
    window. That is the design (never cut, never dropped), and the start line says how many do."""
    assert main(["--data", f"{shards}/a/*.arrow", "--data", f"{shards}/b/*.arrow", "--out", str(tmp_path / "run"),
                 "--seq-len", "64", "--batch-size", "1", "--max-steps", "1", "--threads", "1",
                 "--checkpoint-every", "0"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "data:" in x)
    first, second = line.split("; ")
    assert first.endswith("24 sentences, 1,536 tokens (24 longer with BOS/EOS than --seq-len 64: they go on in "
                          "the next window)"), line
    assert second.endswith("12 sentences, 384 tokens"), line  # 2 images: 34 tokens packed


@pytest.mark.parametrize("flags, message", [
    (["--beta1", "1.5"], "--beta1 must be in [0, 1) (AdamW's decay rate), got 1.5"),
    (["--beta2", "-0.1"], "--beta2 must be in [0, 1) (AdamW's decay rate), got -0.1"),
    (["--threads", "-2"], "--threads must be at least 0 (0: torch's default), got -2"),
    (["--seed", "-1"], "--seed must be an integer from 0 to 2**63-1, got -1"),
    (["--seed", "99999999999999999999"], "--seed must be an integer from 0 to 2**63-1, got 99999999999999999999"),
    (["--clip", "nan"], "--clip must be a gradient norm >= 0 (0: measure the norm, do not clip), got nan"),
    (["--clip", "-1"], "--clip must be a gradient norm >= 0 (0: measure the norm, do not clip), got -1.0"),
    (["--weight-decay", "-1"], "--weight-decay must be a finite number >= 0, got -1.0"),
    (["--keep-checkpoints", "-1"], "--keep-checkpoints must be at least 0 (0: keep all), got -1"),
    (["--stop-at", "-1"], "--stop-at must be at least 1, got -1"),
    (["--stop-at", "0"], "--stop-at must be at least 1, got 0"),
])
def test_flags_out_of_range_are_one_error_line_before_any_work(tmp_path: Path, capsys, flags, message):
    """hunt53a fit_flags/clip_nan/stop_at: betas, threads and seed left torch's tracebacks (exit 1)
    after the data was read; a NaN or negative clip turned clipping off; a negative weight decay,
    keep or stop-at ran. Each is one `error:` line, exit 2, and nothing is read or written."""
    code = main(["--data", str(tmp_path / "none" / "*.arrow"), "--out", str(tmp_path / "run"), *flags])
    assert code == 2 and capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "run").exists()


def test_device_must_be_one_the_trainer_knows(tmp_path: Path, capsys):
    """`--device gpu` was a traceback from torch.device; the flag takes auto, cpu, cuda or cuda:N
    (a fixed set of choices had refused `cuda:1`, which evaluate and generate take: a review)."""
    assert main(["--data", "x/*.arrow", "--out", str(tmp_path / "run"), "--device", "gpu"]) == 2
    assert capsys.readouterr().err == "error: --device 'gpu' is no device; choose auto, cpu, cuda or cuda:N\n"
    with pytest.raises(UsageError, match=r"--device 'gpu' is no device; choose auto, cpu, cuda or cuda:N"):
        fit({"data": ["x/*.arrow"], "out": str(tmp_path / "run"), "device": "gpu"})
    assert not (tmp_path / "run").exists()
    if not torch.cuda.is_available():  # a CUDA index is taken as a device, then judged against this machine
        assert main(["--data", "x/*.arrow", "--out", str(tmp_path / "run"), "--device", "cuda:1"]) == 2
        assert "torch sees no CUDA device" in capsys.readouterr().err


def test_a_resume_with_other_optimisation_flags_says_so_and_keeps_the_earlier_options(shards, tmp_path: Path,
                                                                                      capsys):
    """A finished run resumed with --max-steps 6 (was 4) and --lr 1e-3 (was 3e-3) was taken in silence:
    the schedule jumped and state.json kept the new options only. Now one `note:` line names each
    flag old -> new and the learning rate at the next step, and state.json keeps the earlier options."""
    fit(_options(shards, tmp_path / "run", max_steps=4))
    capsys.readouterr()
    resumed = fit(_options(shards, tmp_path / "run", max_steps=6, lr=1e-3))
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: resuming")]
    after = learning_rate(4, _options(shards, tmp_path / "run", max_steps=6, lr=1e-3))
    before = learning_rate(4, _options(shards, tmp_path / "run", max_steps=4))
    assert notes == [f"note: resuming step 4 with optimisation flags other than the checkpoint's: --max-steps 4 -> 6, "
                     f"--lr 0.003 -> 0.001; step 5's learning rate is {after:.3e} (the checkpoint's flags gave "
                     f"{before:.3e}); state.json keeps the earlier options under options_history"]
    state = ckpt.load_checkpoint(resumed["checkpoint"])["state"]
    assert state["options"]["max_steps"] == 6 and state["options"]["lr"] == 1e-3
    assert [(h["until_step"], h["options"]["max_steps"], h["options"]["lr"]) for h in state["options_history"]] == [
        (4, 4, 3e-3)]
    again = fit(_options(shards, tmp_path / "run", max_steps=6, lr=1e-3, log_every=2))  # no update's flag changed
    assert again["step"] == 6 and "note: resuming" not in capsys.readouterr().err


def test_a_resume_with_another_weight_decay_or_betas_trains_with_them(shards, tmp_path: Path, capsys):
    """rev55c H1: the note said --weight-decay 0.1 -> 0.0 and --beta2 0.95 -> 0.99, but set_state_dict
    restored the checkpoint's param_groups and only the lr was set again: the optimizer went on with
    0.1 and (0.9, 0.95). Now the resumed optimizer holds the new flags, and so does its optimizer.pt."""
    fit(_options(shards, tmp_path / "run", max_steps=4))
    first = ckpt.load_checkpoint(str(tmp_path / "run" / "checkpoints" / "step-00000004"))["optimizer"]
    assert [(g["weight_decay"], tuple(g["betas"])) for g in first["param_groups"]] == [(0.1, (0.9, 0.95)),
                                                                                      (0.0, (0.9, 0.95))]
    changed = _options(shards, tmp_path / "run", max_steps=6, weight_decay=0.0, beta1=0.8, beta2=0.99)
    trainer = Trainer(changed, Dist(), torch.device("cpu"))
    trainer.resume(str(tmp_path / "run" / "checkpoints" / "step-00000004"))
    assert [(g["weight_decay"], g["betas"], g["eps"]) for g in trainer.optimizer.param_groups] == [
        (0.0, (0.8, 0.99), 1e-8), (0.0, (0.8, 0.99), 1e-8)]
    assert "--weight-decay 0.1 -> 0.0, --beta1 0.9 -> 0.8, --beta2 0.95 -> 0.99" in capsys.readouterr().err
    resumed = fit(_options(shards, tmp_path / "run", max_steps=6, weight_decay=0.05, beta2=0.99))
    saved = ckpt.load_checkpoint(resumed["checkpoint"])["optimizer"]
    assert [(g["weight_decay"], tuple(g["betas"])) for g in saved["param_groups"]] == [(0.05, (0.9, 0.99)),
                                                                                      (0.0, (0.9, 0.99))]


def test_a_resume_keeps_the_eps_the_run_began_with(shards, tmp_path: Path, capsys):
    """rev55g LOW-1: eps is no CLI flag (FitOptions only), so a run begun with eps 1e-6 and resumed
    as the CLI resumes it (eps at its default 1e-8) went on with 1e-8, and no note said so. The
    checkpoint's eps is kept, in the optimizer and in the options state.json saves."""
    fit(_options(shards, tmp_path / "run", max_steps=2, eps=1e-6))
    trainer = Trainer(_options(shards, tmp_path / "run", max_steps=4), Dist(), torch.device("cpu"))
    trainer.resume(str(tmp_path / "run" / "checkpoints" / "step-00000002"))
    assert [g["eps"] for g in trainer.optimizer.param_groups] == [1e-6, 1e-6]
    resumed = fit(_options(shards, tmp_path / "run", max_steps=4))
    saved = ckpt.load_checkpoint(resumed["checkpoint"])
    assert resumed["step"] == 4 and [g["eps"] for g in saved["optimizer"]["param_groups"]] == [1e-6, 1e-6]
    err = capsys.readouterr().err
    assert saved["state"]["options"]["eps"] == 1e-6 and "--eps" not in err
    assert err.count("eps 1e-06 kept from the checkpoint (the options' 1e-08 not applied)") == 2


def test_a_resume_names_an_eps_of_the_options_it_did_not_apply(shards, tmp_path: Path, capsys):
    """rev55j LOW-5: a Python resume passing FitOptions(eps=1e-4) against a checkpoint of 1e-6 kept
    1e-6 in silence. The note names both; a resume of the same eps says nothing of it."""
    fit(_options(shards, tmp_path / "run", max_steps=2, eps=1e-6))
    capsys.readouterr()
    fit(_options(shards, tmp_path / "run", max_steps=3, eps=1e-6))
    assert "kept from the checkpoint" not in capsys.readouterr().err
    resumed = fit(_options(shards, tmp_path / "run", max_steps=4, eps=1e-4))
    assert "eps 1e-06 kept from the checkpoint (the options' 0.0001 not applied)" in capsys.readouterr().err
    assert ckpt.load_checkpoint(resumed["checkpoint"])["state"]["options"]["eps"] == 1e-6


def test_a_resume_naming_the_same_shards_by_another_path_is_taken(shards, tmp_path: Path, monkeypatch):
    """--data given relative on resume, absolute before: the same shards (counts and sha256), refused
    as "the data changed". Taken now, and the run goes on as an uninterrupted one; other shards under
    the same spelling are still refused."""
    whole = fit(_options(shards, tmp_path / "whole", max_steps=4))
    first = fit(_options(shards, tmp_path / "split", max_steps=4, stop_at=2))
    monkeypatch.chdir(shards)
    second = fit(_options(shards, tmp_path / "split", max_steps=4, data=["./a/*.arrow:2", "b/*.arrow:1"]))
    assert second["start_step"] == 2 and first["losses"] + second["losses"] == whole["losses"]
    with pytest.raises(UsageError, match="the data changed since this checkpoint"):  # a and b swapped
        fit(_options(shards, tmp_path / "split", max_steps=5, data=["b/*.arrow:2", "a/*.arrow:1"]))


def test_a_glob_against_the_shells_expansion_of_it_resumes_only_for_one_shard(shards, tmp_path: Path):
    """rev55c L2: b/*.arrow against the name of its one shard resumes; a/*.arrow:2 expanded into its
    two shards at :1 each, two --data entries of other weights, is another mixture and is refused
    (the same files at the glob's own weight resume since stop 56: `data_regroup`)."""
    fit(_options(shards, tmp_path / "run", max_steps=4, stop_at=2))
    (b_shard,) = sorted(Path(shards, "b").glob("*.arrow"))
    assert fit(_options(shards, tmp_path / "run", max_steps=3, data=[f"{shards}/a/*.arrow:2",
                                                                     f"{b_shard}:1"]))["start_step"] == 2
    expanded = [f"{p}:1" for p in sorted(Path(shards, "a").glob("*.arrow"))]
    assert len(expanded) == 2
    with pytest.raises(UsageError, match=r"the data changed since this checkpoint \(sources, weights differ"):
        fit(_options(shards, tmp_path / "run", max_steps=4, data=[*expanded, f"{shards}/b/*.arrow:1"]))


@pytest.mark.parametrize("file, edit, named", [
    ("model.pt", lambda s: s["model.norm.weight"].view(-1)[3:5].fill_(float("nan")),
     r"tensor model\.norm\.weight holds 2 of 128 values that are not finite \(2 NaN\)"),
    ("optimizer.pt", lambda s: s["state"]["lm_head.weight"]["exp_avg_sq"].view(-1)[7].fill_(float("inf")),
     r"tensor state\.lm_head\.weight\.exp_avg_sq holds 1 of \d+ values that are not finite \(1 inf\)"),
])
def test_a_resume_from_a_step_holding_nan_or_inf_is_refused_naming_file_and_tensor(
        shards, two_step_run: Path, tmp_path: Path, capsys, file, edit, named):
    """stop 56 #2: a step checkpoint whose weights or AdamW moments hold NaN/inf (a step saved by an
    older version, a copy, an edit: manifest consistent) was loaded on resume and trained on. Refused
    now before any step, in one `error:` line naming the file and the tensor."""
    _resume_of_an_edited_step_refused(shards, two_step_run, tmp_path / "run", file, edit, named, capsys)


def _resume_of_an_edited_step_refused(shards, two_step_run: Path, out: Path, file: str, edit, named: str,
                                      capsys) -> None:
    """A copy of `two_step_run` at `out` whose step 2 `file` is edited by `edit` (its manifest
    resealed): the resume exits 2 before any step, in one `error:` line naming the file and `named`."""
    import shutil

    shutil.copytree(two_step_run, out)
    step = out / "checkpoints" / "step-00000002"
    state = torch.load(step / file, weights_only=True)
    edit(state)
    torch.save(state, step / file)
    write_manifest(step)
    before = (out / "losses.json").read_bytes()
    argv = ["--data", f"{shards}/a/*.arrow:2", "--data", f"{shards}/b/*.arrow:1", "--out", str(out),
            "--preset", "tiny", "--seq-len", "64", "--batch-size", "2", "--max-steps", "4", "--lr", "3e-3",
            "--min-lr", "3e-4", "--warmup-steps", "2", "--quiet", "--threads", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and re.fullmatch(rf"error: {re.escape(str(step / file))}: {named}: this step "
                                                      r"cannot be trained on; resume from an earlier step .*", err), err
    assert [s for s, _ in ckpt.list_checkpoints(str(out))] == [2]
    assert (out / "losses.json").read_bytes() == before  # no step ran


def test_a_glob_and_the_shells_expansion_of_it_resume_each_other(shards, tmp_path: Path):
    """stop 56 #1: `--data 'a/*.arrow'` quoted in one run and unquoted in its resume (the shell passes
    the shard files, each an entry of the one --data), or the reverse, was refused as "the data changed" though the
    same files, with the same sha256 in the same order, were named. Taken now, going on as the run
    began (its grouping and weights), so the losses are those of an uninterrupted run; other files,
    or the same in another order, are still refused."""
    glob = [f"{shards}/a/*.arrow"]
    expanded = [str(p) for p in sorted(Path(shards, "a").glob("*.arrow"))]
    assert len(expanded) == 2
    for began, resumed, name in ((glob, expanded, "quoted"), (expanded, glob, "unquoted")):
        whole = fit(_options(shards, tmp_path / f"{name}-whole", data=began, max_steps=4))
        first = fit(_options(shards, tmp_path / name, data=began, max_steps=4, stop_at=2))
        second = fit(_options(shards, tmp_path / name, data=resumed, max_steps=4))
        assert second["start_step"] == 2 and first["losses"] + second["losses"] == whole["losses"]
    for other in (expanded[::-1], [expanded[0]], [*expanded, *map(str, Path(shards, "b").glob("*.arrow"))]):
        with pytest.raises(UsageError, match="the data changed since this checkpoint"):
            fit(_options(shards, tmp_path / "quoted", data=other, max_steps=5))


@pytest.mark.slow  # 16 s: a training run's subprocess imports torch
def test_an_unquoted_glob_on_the_command_line_trains_and_resumes_a_quoted_run(shards, tmp_path: Path):
    """rev56b LOW-3: the README said an unquoted `--data a/*.arrow` gives one --data per shard; the
    shell gives `--data a/0.arrow a/1.arrow`, and argparse failed "unrecognized arguments", exit 2.
    --data takes several values now, so the shell's expansion (run here by bash) resumes the run
    begun with the quoted glob, and a GLOB:WEIGHT item (which no file matches, so bash keeps it)
    still weighs its entry."""
    run = tmp_path / "run"
    whole = fit(_options(shards, tmp_path / "whole", data=[f"{shards}/a/*.arrow", f"{shards}/b/*.arrow:1"]))
    fit(_options(shards, run, data=[f"{shards}/a/*.arrow", f"{shards}/b/*.arrow:1"], stop_at=2))
    command = (f"{shlex.quote(sys.executable)} -m trainer.fit --data a/*.arrow b/*.arrow:1 --out {shlex.quote(str(run))} "
               "--preset tiny --seq-len 64 --batch-size 2 --max-steps 4 --lr 3e-3 --min-lr 3e-4 --warmup-steps 2 "
               "--log-every 1 --quiet --threads 1")
    done = subprocess.run(["bash", "-c", command], cwd=shards, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["start_step"] == 2 and summary["losses"] == whole["losses"][2:]


@pytest.fixture(scope="module")
def two_step_run(shards, tmp_path_factory) -> Path:
    """A real run folder stopped at step 2 (each dtype test edits a copy of it)."""
    out = tmp_path_factory.mktemp("two_step") / "run"
    fit(_options(shards, out, max_steps=2))
    return out


def _float4(like: torch.Tensor) -> torch.Tensor:
    """A float4 tensor of `like`'s shape (two e2m1 codes a byte): the shape check lets it through."""
    return torch.zeros(like.shape, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)


@pytest.mark.skipif(not hasattr(torch, "float4_e2m1fn_x2"), reason="this torch has no float4")
@pytest.mark.parametrize("file, edit, named", [
    ("model.pt", lambda s: s.__setitem__("model.norm.weight", _float4(s["model.norm.weight"])),
     r"tensor model\.norm\.weight is float4_e2m1fn_x2, the model holds it in float32"),
    ("model.pt", lambda s: s.__setitem__("model.norm.weight", s["model.norm.weight"].double()),
     r"tensor model\.norm\.weight is float64, the model holds it in float32"),
    ("model.pt", lambda s: s.__setitem__("lm_head.weight", s["lm_head.weight"].to(torch.int8)),
     r"tensor lm_head\.weight is int8, the model holds it in float32"),
    ("optimizer.pt", lambda s: s["state"]["lm_head.weight"].__setitem__(
        "exp_avg", _float4(s["state"]["lm_head.weight"]["exp_avg"])),
     r"tensor state\.lm_head\.weight\.exp_avg is float4_e2m1fn_x2, the optimizer holds it in float32"),
    ("optimizer.pt", lambda s: s["state"]["lm_head.weight"].__setitem__(
        "step", s["state"]["lm_head.weight"]["step"].to(torch.int8)),
     r"tensor state\.lm_head\.weight\.step is int8, the optimizer holds it in float32"),
])
def test_a_resume_from_a_step_holding_another_dtype_is_refused_naming_file_tensor_and_dtype(
        shards, two_step_run: Path, tmp_path: Path, capsys, file, edit, named):
    """stop 56: a step whose model.pt or optimizer.pt holds a tensor in a dtype the model does not
    (float4 passes the finite check: it has no NaN) crashed on resume with torch's '"copy_kernel" not
    implemented for Float4_e2m1fn_x2' traceback; float64 and int8 were cast in silence (an int8
    lm_head truncated every weight to an integer and trained on). Refused now before any step, in
    one `error:` line naming the file, the tensor and both dtypes."""
    _resume_of_an_edited_step_refused(shards, two_step_run, tmp_path / "run", file, edit, named, capsys)


def test_a_run_refused_before_any_step_leaves_no_run_folder_behind(shards, two_step_run: Path, tmp_path: Path,
                                                                  capsys):
    """stop 56: `--data` naming a shard without its .stats.json (or any refusal before a step) left
    the --out it had created holding only `.writer.lock`. A folder the refused run made is gone
    again (parents it made too); one that was there is left as it was, its lock released."""
    import fcntl
    import shutil

    (tmp_path / "tokens").mkdir()
    shard = sorted(Path(shards, "b").glob("*.arrow"))[0]
    shutil.copy(shard, tmp_path / "tokens" / shard.name)  # the shard without its stats: not committed
    base = ["--data", str(tmp_path / "tokens" / shard.name), "--seq-len", "64", "--batch-size", "2",
            "--max-steps", "1", "--quiet", "--threads", "1"]
    assert main([*base, "--out", str(tmp_path / "new" / "run")]) == 2
    assert "matches no committed token shard" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["tokens"]

    out = tmp_path / "old"
    shutil.copytree(two_step_run, out)
    listing = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert main([*base, "--out", str(out)]) == 2
    assert "matches no committed token shard" in capsys.readouterr().err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == listing
    with open(out / ".writer.lock", "rb") as handle:  # released: another fit may take it
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    (tmp_path / "empty").mkdir()
    assert main([*base, "--out", str(tmp_path / "empty")]) == 2
    assert "matches no committed token shard" in capsys.readouterr().err
    assert os.listdir(tmp_path / "empty") == []


def test_a_rank_refused_on_its_own_host_leaves_no_run_folder_behind(tmp_path: Path, monkeypatch):
    """A torchrun rank other than 0 made `--out` itself after rank 0 took the lock (on another host,
    its own disk, rank 0's folder is not there), and a refusal inside the run (a flag the model
    refuses, a damaged shard) left that folder behind empty, parents and all; rank 0 takes back only
    what it made. Each rank now takes back the folders it made, and keeps one that was there."""
    from trainer import fit as fit_module

    seen = []
    monkeypatch.setattr(fit_module.dist, "broadcast_object_list", lambda box, src: seen.append(list(box)))
    out = tmp_path / "host2" / "runs" / "a"
    with pytest.raises(UsageError, match="--seq-len"):
        with fit_module._sole_writer(str(out), Dist(rank=1, world_size=2)):
            assert out.is_dir() and os.listdir(out) == []  # no lock of its own: rank 0 holds it
            raise UsageError("--seq-len 99999 exceeds max_position_embeddings")
    assert seen == [[None]]  # rank 0's answer: no refusal
    assert os.listdir(tmp_path) == []
    out.mkdir(parents=True)
    with pytest.raises(UsageError):
        with fit_module._sole_writer(str(out), Dist(rank=1, world_size=2)):
            raise UsageError("refused")
    assert out.is_dir()  # there before the run: left
