"""Fit the LVM transformer on token shards: `python -m trainer.fit --data GLOB[:WEIGHT] --out DIR`.

The LVM recipe (`../shared/LVM_FACTS.md`): AdamW (0.9, 0.95), weight decay 0.1 on matrices and
embeddings (not on norms), clip 1.0, linear warmup then cosine from 1.5e-4 to 3e-5, bf16 autocast
on CUDA. Windows and mixture: `trainer.data`. Checkpoints: `trainer.checkpoint`.

Scale-out: launched by torchrun (RANK / WORLD_SIZE / LOCAL_RANK in the environment) it starts a
process group (nccl on CUDA, gloo on CPU) and wraps the model in DDP, or shards it with FSDP2
(`fully_shard` per decoder layer, then the root) with `--fsdp`. `--batch-size` is per rank; a step
is `--grad-accum` micro-batches, so a step trains on batch * grad_accum * world * seq_len tokens.

Running the same command again resumes from the newest intact checkpoint in `--out` (a damaged
newer one is set aside with a warning naming the file): model, optimizer, step, data-loader
position and RNG come back, and on CPU the losses continue bit for bit as if the run had not
stopped. One fit writes an `--out` at a time (`tokenizer.run_folder`: a second is refused), and
it first removes what fits killed mid-save left there (`run_layout.run_leftovers`).
`OUT/log.jsonl` (one line per log interval), `OUT/losses.json` (every step's
loss) and `OUT/summary.json` are what a report reads. Losses are read back from the device once
per log interval (`step_monitor.StepReadback`), not after every step.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.distributed as dist

from tokenizer.atomic import write_bytes
from tokenizer.dataclass_cli import add_flags, flag, options_from
from tokenizer.run_folder import (RunFolderError, describe_leftovers, dropped_note, log_records, made_folder,
                                  remove_leftovers, sole_writer)
from tokenizer.schedule import warmup_cosine
from uvd_pipeline.shards import ShardDamaged

from . import checkpoint as ckpt
from . import cpu_gemm, devices
from .config import ModelConfig, UsageError, preset
from .data import MODES, TokenWindows
from .integrity import CheckpointDamaged, CheckpointError, CheckpointWarning
from .mixture_spec import mixture_from_args
from .model import LVMTransformer, rope_tables
from .run_layout import run_leftovers, set_aside
from .step_monitor import PROFILE_NAME, SteadyTimer, StepProfile, StepReadback

LOG_NAME = "log.jsonl"
LOSSES_NAME = "losses.json"
SUMMARY_NAME = "summary.json"

# Dense bf16 tensor-core peaks (FLOP/s), longest name first when matched against the device name.
PEAK_BF16_FLOPS: dict[str, float] = {
    "H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "H800": 989e12, "GH200": 989e12,
    "B200": 2250e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12, "L40": 181e12, "L4": 121e12,
    "A10G": 70e12, "A10": 125e12, "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12,
}


SEED_LIMIT = 2**63  # torch.manual_seed takes a signed 64-bit seed; numpy's a non-negative one

# `--attention` values: torch's SDPA backends a training step may be pinned to (CUDA only).
ATTENTION_KERNELS = ("auto", "cudnn", "flash", "efficient")


def attention_kernel(name: str) -> contextlib.AbstractContextManager:
    """The SDPA backend `--attention` pins for a training step (a compiled step keeps the kernel
    it was traced with); "auto" leaves the pick to torch."""
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION}
    return sdpa_kernel(backends[name])


@dataclass
class FitOptions:
    """Every knob of a run; stored in each checkpoint."""

    data: list[str] = flag(help="GLOB[:WEIGHT] of committed token shards (several, or --data again, for a mixture), or a YAML/JSON "
                                "mixture file {split: train, data: [{glob, weight}]}")
    out: str = flag(help="run folder: checkpoints/, log.jsonl, losses.json, summary.json")
    preset: str = flag("tiny", "model size: tiny, small, 100m, 300m, 600m, 1b, 3b, 7b")
    split: str | None = flag("train", "train on sentences of this split ('all': no filter); a mixture file "
                                              "that names a split overrides it")
    seq_len: int = flag(4096, "tokens per window (16 images of 256)")
    batch_size: int = flag(8, "windows per micro-batch per rank")
    grad_accum: int = flag(1, "micro-batches per update")
    max_steps: int = flag(1000, "updates in the whole run (sets the LR schedule)")
    lr: float = flag(1.5e-4, "peak learning rate")
    min_lr: float = flag(3e-5, "learning rate at the end of the cosine decay")
    warmup_steps: int = flag(100, "linear warmup steps")
    weight_decay: float = flag(0.1)
    beta1: float = flag(0.9)
    beta2: float = flag(0.95)
    eps: float = flag(1e-8, cli=False)
    clip: float = flag(1.0, "gradient-norm clip (0: measure the norm, do not clip)")
    mode: str = flag("paper", "paper: BOS/EOS around each sentence; stream: plain concatenation (released code)",
                     choices=MODES)
    seed: int = flag(0)
    compile: bool = flag(False, "torch.compile the model (for GPUs: on CPU the eager step is the faster one)")
    attention: str = flag("auto", "attention kernel of training steps on CUDA: auto (torch's pick), cudnn, flash "
                                  "or efficient", choices=ATTENTION_KERNELS)
    activation_checkpointing: bool = flag(False, "recompute layers in backward")
    device: str = flag("auto", "auto, cpu, cuda or cuda:N")
    dtype: str = flag("auto", "auto: bf16 autocast on CUDA, fp32 on CPU", choices=("auto", "fp32", "bf16"))
    checkpoint_every: int = flag(500, "steps between checkpoints (and one at the end); 0 writes none "
                                      "(benchmarks, smoke runs)")
    keep_checkpoints: int = flag(3, "newest checkpoints kept (0: all)")
    log_every: int = flag(10)
    resume: str = flag("auto", "auto: the newest checkpoint in --out if any; none: start fresh; or a checkpoint "
                               "folder")
    fsdp: bool = flag(False, "under torchrun: FSDP2 (fully_shard) instead of DDP")
    stop_at: int | None = flag(None, "stop (with a checkpoint) after this step; rerun to continue")
    chunk_tokens: int | None = flag(None, "tokens per logits chunk of the loss (default: 256 on CPU, 4096 on GPU)")
    threads: int | None = flag(None, "torch intra-op threads (0 or unset: torch's default, one per core)")
    profile_steps: int = flag(0, "profile this many steps after the first (torch.profiler) and write the "
                                 "busiest kernels to OUT/profile.txt (0: off)")
    quiet: bool = flag(False)
    model_overrides: dict[str, Any] = flag(default_factory=dict, cli=False)

    def validate(self) -> None:
        if os.path.exists(self.out) and not os.path.isdir(self.out):
            raise UsageError(f"--out {self.out}: exists and is not a folder; give the run's output folder")
        if self.mode not in MODES:
            raise UsageError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.attention not in ATTENTION_KERNELS:
            raise UsageError(f"--attention must be one of {', '.join(ATTENTION_KERNELS)}, got {self.attention!r}")
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise UsageError(f"--dtype must be auto, fp32 or bf16, got {self.dtype!r}")
        if self.profile_steps < 0:
            raise UsageError(f"--profile-steps must be at least 0 (0: off), got {self.profile_steps}")
        if self.checkpoint_every < 0:
            raise UsageError(f"--checkpoint-every must be at least 0 (0: write no checkpoints), got "
                             f"{self.checkpoint_every}")
        for name in ("seq_len", "batch_size", "grad_accum", "max_steps", "log_every", "chunk_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or not 0 <= self.min_lr <= self.lr:
            raise UsageError(f"need warmup >= 0 and 0 <= min-lr <= lr (got {self.warmup_steps}, {self.min_lr}, "
                             f"{self.lr})")
        self._validate_ranges()

    def _validate_ranges(self) -> None:
        """The flags torch would refuse with a traceback mid-start (betas, threads, device, seed) or
        take in silence (a negative or NaN clip turned clipping off; a negative weight decay, keep
        or stop-at ran), each refused naming the flag and what it takes."""
        problem = devices.device_problem(self.device)[1]  # the rule evaluate and generate judge it by
        if problem:
            raise UsageError(problem)
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise UsageError(f"--{name} must be in [0, 1) (AdamW's decay rate), got {getattr(self, name)}")
        if not self.clip >= 0:  # NaN fails this too
            raise UsageError(f"--clip must be a gradient norm >= 0 (0: measure the norm, do not clip), got {self.clip}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise UsageError(f"--weight-decay must be a finite number >= 0, got {self.weight_decay}")
        if not 0 <= self.seed < SEED_LIMIT:
            raise UsageError(f"--seed must be an integer from 0 to 2**63-1, got {self.seed}")
        for name, least, meaning in (("keep_checkpoints", 0, " (0: keep all)"), ("threads", 0, " (0: torch's default)"),
                                     ("stop_at", 1, "")):
            value = getattr(self, name)
            if value is not None and value < least:
                raise UsageError(f"--{name.replace('_', '-')} must be at least {least}{meaning}, got {value}")


class TrainingModel(LVMTransformer):
    """The LVM transformer whose `forward(inputs, targets)` is the chunked loss: DDP and FSDP2 hook
    `forward`, so the loss must live there: `forward(inputs, targets)` is `LVMTransformer.loss`.
    Same parameter names as `LVMTransformer`."""

    chunk_tokens: int | None = None  # None: the loss's default (losses.CPU_CHUNK_TOKENS on CPU, CHUNK_TOKENS elsewhere)

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None, cache: Any = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if targets is None:
            return super().forward(input_ids, cache)
        return self.loss(input_ids, targets, chunk_tokens=self.chunk_tokens, rope=rope)


# the flags that set the updates (schedule, optimiser, tokens per step): a resume may change them,
# and says so (`Trainer.resume`); the data and the model are held to the checkpoint's
OPTIMISATION_FLAGS = ("max_steps", "lr", "min_lr", "warmup_steps", "batch_size", "grad_accum", "weight_decay",
                      "beta1", "beta2", "clip")


def learning_rate(step: int, options: FitOptions) -> float:
    """LR of update `step` (0-based): linear warmup to lr, then cosine down to min_lr at max_steps."""
    return warmup_cosine(step, options.lr, options.warmup_steps, options.max_steps, options.min_lr)


def peak_flops(device: torch.device, dtype: str) -> float | None:
    """Dense bf16 peak of this GPU by name; None on CPU, in fp32, or for a GPU not in the table."""
    if device.type != "cuda" or dtype != "bf16":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_BF16_FLOPS[key]
    return None


# -- distributed ------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    started: bool = False  # we made the process group, so we end it

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> Dist:
    """A process group when launched by torchrun (WORLD_SIZE > 1): nccl on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), local, False)
    if device_kind == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return Dist(rank, world, local, True)


def resolve_device(options: FitOptions, local_rank: int) -> torch.device:
    """This rank's device from --device (`trainer.devices`, shared with evaluate and generate)."""
    return devices.resolve_device(options.device, local_rank)


# -- the run ----------------------------------------------------------------------------------
class Trainer:
    """Model, optimizer, data and bookkeeping of one run on one rank."""

    def __init__(self, options: FitOptions, env: Dist, device: torch.device) -> None:
        self.options, self.env, self.device = options, env, device
        self.dtype = options.dtype if options.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")
        if options.attention != "auto" and device.type != "cuda":
            raise UsageError(f"--attention {options.attention} picks a CUDA kernel, but this run is on {device.type}; "
                             f"leave it at auto")
        overrides = {**options.model_overrides}
        self.config: ModelConfig = preset(options.preset, **overrides)
        if options.seq_len > self.config.max_position_embeddings:
            raise UsageError(f"--seq-len {options.seq_len} exceeds max_position_embeddings "
                             f"{self.config.max_position_embeddings} of preset {options.preset!r}")
        mixture = mixture_from_args(options.data, options.split)
        self.data = TokenWindows(mixture, options.seq_len, options.batch_size, options.mode, options.seed,
                                 env.rank, env.world_size, vocab_size=self.config.vocab_size)
        torch.manual_seed(options.seed)  # the same initial weights on every rank and every device
        core = TrainingModel(self.config)
        core.chunk_tokens = options.chunk_tokens
        core.activation_checkpointing = options.activation_checkpointing
        self.shapes = {k: tuple(v.shape) for k, v in core.state_dict().items()}
        self.dtypes = {k: v.dtype for k, v in core.state_dict().items()}
        core.to(device)
        self.core = core
        self.runner: torch.nn.Module = core
        if env.world_size > 1 and options.fsdp:
            from torch.distributed.fsdp import fully_shard

            for layer in core.model.layers:
                fully_shard(layer)
            fully_shard(core)
        elif env.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.runner = DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None)
        elif options.fsdp and env.main and not options.quiet:
            print("note: --fsdp has no effect in a single process (launch with torchrun)", flush=True)
        if options.compile and device.type == "cpu" and env.main and not options.quiet:
            # the eager CPU step has its own GEMM routing, attention and loss loop, which a compiled
            # step leaves out (tiny preset: 10,485 eager vs 5,612 compiled tokens/s, bench_trainer)
            print("note: on CPU --compile runs slower than the eager step; leave it off there", flush=True)
        decay = [p for n, p in core.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in core.named_parameters() if p.ndim < 2]
        # group 0 decays, group 1 (norms, biases) never does: `_apply_optimiser_flags` relies on this order
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": options.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=options.lr, betas=(options.beta1, options.beta2), eps=options.eps,
            fused=None if options.fsdp and env.world_size > 1 else True)
        self.forward = torch.compile(self.runner) if options.compile else self.runner
        self.step = 0
        self.tokens_seen = 0
        self._rope_tables: tuple[torch.Tensor, torch.Tensor] | None = None
        self.curve: dict[str, list] = {"step": [], "loss": []}
        # the options of earlier sessions whose optimisation flags differ from this one's, oldest first
        self.options_history: list[dict[str, Any]] = []

    # state -----------------------------------------------------------------------------------
    def _full_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_state_dict(self.core, self.optimizer, options=opts)

    def save(self) -> str | None:
        """Collective under FSDP (gathers the shards); rank 0 writes."""
        model_state, optimizer_state = self._full_state()
        path = None
        if self.env.main:
            state = {"tokens_seen": self.tokens_seen, "data": self.data.state_dict(),
                     "options": dataclasses.asdict(self.options), "options_history": self.options_history,
                     "world_size": self.env.world_size}
            # the curve first: a resume keeps its steps up to the checkpoint's, so one written ahead of a
            # checkpoint that never commits is trimmed, while one behind a committed checkpoint (killed
            # between the two) lost that step's loss for good (hunt53a tmp_leak rerun: step 117)
            self._write_curve()
            path = ckpt.save_checkpoint(self.options.out, self.step, model_state, optimizer_state, self.config,
                                        state, keep=self.options.keep_checkpoints)
        if self.env.world_size > 1:
            dist.barrier()
        return path

    def resume(self, path: str, loaded: dict[str, Any] | None = None) -> None:
        """Continue from the checkpoint folder `path` (`loaded`: its contents, when already read)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        loaded = loaded if loaded is not None else ckpt.load_checkpoint(path)
        if loaded["config"] != self.config:
            differ = {k: (v, getattr(self.config, k)) for k, v in loaded["config"].to_dict().items()
                      if getattr(self.config, k) != v}
            detail = ", ".join(f"{k} {a} in the checkpoint vs {b} now" for k, (a, b) in differ.items())
            try:  # this run's flags (--preset) differ from the run in --out: a usage error
                ckpt.check_state_shapes(self.shapes, loaded["model"], path)
            except CheckpointError as exc:
                raise UsageError(f"{exc} (config: {detail})") from None
            raise UsageError(f"{path} was trained with another model config: {detail}")
        ckpt.check_state_shapes(self.shapes, loaded["model"], path)
        ckpt.check_state_dtypes(path, loaded, self.dtypes)
        ckpt.check_finite_state(path, loaded)
        set_state_dict(self.core, self.optimizer, model_state_dict=loaded["model"],
                       optim_state_dict=loaded["optimizer"], options=StateDictOptions(full_state_dict=True))
        self._apply_optimiser_flags()
        state = loaded["state"]
        self.data.load_state_dict(state["data"])
        ckpt.set_rng_state(loaded["rng"], state.get("rng", {}))
        self.step = int(state["step"])
        self.tokens_seen = int(state.get("tokens_seen", 0))
        self._read_curve()
        self._note_changed_flags(state)

    def _apply_optimiser_flags(self) -> None:
        """Give the optimizer this run's weight decay, betas and eps: `set_state_dict` restores the
        checkpoint's param_groups whole, so a resume with --weight-decay 0 --beta2 0.99 went on with
        0.1 and (0.9, 0.95) while the note said they had changed (the lr is set each step anyway).
        eps is no CLI flag (FitOptions only), so a resume the CLI's way always gave its default: a run
        begun with eps 1e-6 went on with 1e-8 and no note named it. The checkpoint's eps is kept
        instead, and these options take it, so the options saved say what the optimizer used; where
        the options gave another (FitOptions(eps=...) from Python), a note says it was not applied."""
        decay, no_decay = self.optimizer.param_groups
        decay["weight_decay"], no_decay["weight_decay"] = self.options.weight_decay, 0.0
        for group in (decay, no_decay):
            group["betas"] = (self.options.beta1, self.options.beta2)
        if decay["eps"] != self.options.eps:
            if self.env.main:
                print(f"note: resuming with eps {decay['eps']:g} kept from the checkpoint (the options' "
                      f"{self.options.eps:g} not applied)", file=sys.stderr, flush=True)
            self.options = dataclasses.replace(self.options, eps=decay["eps"])

    def _note_changed_flags(self, state: Mapping[str, Any]) -> None:
        """Say which optimisation flags differ from the checkpoint's (old -> new) and where the
        learning rate goes, and keep the checkpoint's options in `options_history`: a resume with
        another --max-steps was taken in silence, its schedule jumping (3.05e-5 at step 30, 5.26e-5
        at 31), and state.json kept only the new options."""
        self.options_history = list(state.get("options_history") or [])
        saved = state.get("options") or {}
        changed = {name: saved[name] for name in OPTIMISATION_FLAGS
                   if name in saved and saved[name] != getattr(self.options, name)}
        if not changed:
            return
        self.options_history.append({"until_step": self.step, "options": saved})
        if not self.env.main:
            return
        flags = ", ".join(f"--{name.replace('_', '-')} {old} -> {getattr(self.options, name)}"
                          for name, old in changed.items())
        before = learning_rate(self.step, dataclasses.replace(self.options, **changed))
        after = learning_rate(self.step, self.options)
        rate = (f"step {self.step + 1}'s learning rate is {after:.3e} (the checkpoint's flags gave {before:.3e})"
                if after != before else "the learning rate is unchanged")
        print(f"note: resuming step {self.step} with optimisation flags other than the checkpoint's: {flags}; "
              f"{rate}; state.json keeps the earlier options under options_history", file=sys.stderr, flush=True)

    def _curve_path(self) -> str:
        return os.path.join(self.options.out, LOSSES_NAME)

    def _read_curve(self) -> None:
        path = self._curve_path()
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                saved = json.load(handle)
            keep = [i for i, s in enumerate(saved["step"]) if s <= self.step]
            self.curve = {"step": [saved["step"][i] for i in keep], "loss": [saved["loss"][i] for i in keep]}

    def _write_curve(self) -> None:
        _write_json(self._curve_path(), self.curve)

    # training --------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _attention_kernel(self) -> contextlib.AbstractContextManager:
        return attention_kernel(self.options.attention)

    def _sync(self, last: bool) -> contextlib.AbstractContextManager:
        if self.env.world_size > 1 and self.options.fsdp:
            self.core.set_requires_gradient_sync(last)
            return contextlib.nullcontext()
        if self.env.world_size > 1 and not last:
            return self.runner.no_sync()
        return contextlib.nullcontext()

    def _rope(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE tables of a window of `t` tokens, made once and passed to every step."""
        if self._rope_tables is None or self._rope_tables[0].shape[0] != t:
            positions = torch.arange(t, device=self.device)
            self._rope_tables = rope_tables(self.config, positions, self.core.model.embed_tokens.weight.dtype)
        return self._rope_tables

    def train_step(self) -> torch.Tensor:
        """One optimizer update over grad_accum micro-batches; returns [mean loss over ranks, grad
        norm] as a float32 tensor on the device, without waiting for it (`StepReadback`)."""
        lr = learning_rate(self.step, self.options)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        accum = self.options.grad_accum
        total = torch.zeros((), device=self.device)
        for micro in range(accum):
            batch = torch.from_numpy(self.data.next_batch()).to(self.device, non_blocking=True)
            # the pinned attention kernel holds for backward too: activation checkpointing runs
            # each layer's forward again there, and it must pick the same kernel
            with self._sync(micro == accum - 1), self._attention_kernel():
                with self._autocast():
                    loss = self.forward(batch[:, :-1], batch[:, 1:], rope=self._rope(batch.shape[1] - 1))
                (loss / accum).backward()
            total += loss.detach().float()
        clip = self.options.clip if self.options.clip > 0 else math.inf  # 0: measure, do not clip
        norm = torch.nn.utils.clip_grad_norm_(self.core.parameters(), clip)
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        total /= accum
        if self.env.world_size > 1:
            dist.all_reduce(total)
            total /= self.env.world_size
        self.step += 1
        self.tokens_seen += self.tokens_per_step
        return torch.stack([total.float(), norm.detach().float().to(total.device)])

    @property
    def tokens_per_step(self) -> int:
        o = self.options
        return o.batch_size * o.grad_accum * self.env.world_size * o.seq_len


def _write_json(path: str, value: Any) -> None:
    write_bytes(path, json.dumps(value).encode())


def _trim_log(path: str, step: int) -> None:
    """Keep the log lines up to `step` (the resumed checkpoint; none on a fresh start): lines of
    steps that a stopped run made after its last checkpoint are made again. Lines that are no JSON
    record (an append torn by a crash or a full disk) are dropped, with a note saying how many."""
    if not os.path.isfile(path):
        return
    records, dropped = log_records(path)
    write_bytes(path, "".join(line for line, record in records if record.get("step", 0) <= step).encode("utf-8"))
    if dropped:
        print(dropped_note(path, dropped), file=sys.stderr, flush=True)


def _log(trainer: Trainer, record: dict[str, Any]) -> None:
    if not trainer.env.main:
        return
    with open(os.path.join(trainer.options.out, LOG_NAME), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    if not trainer.options.quiet:
        line = (f"step {record['step']}/{trainer.options.max_steps} | loss {record['loss']:.4f} | "
                f"lr {record['lr']:.3e} | grad norm {record['grad_norm']:.3f} | "
                f"{record['tokens_per_s']:,.0f} tok/s")
        if record.get("mfu") is not None:
            line += f" | mfu {100 * record['mfu']:.1f}%"
        print(line, flush=True)


def _longer_note(described: dict[str, Any], options: FitOptions) -> str:
    """', N longer than a window' for a mixture entry that has such sentences (`TokenWindows.describe`)."""
    longer = described["longer_than_window"]
    if not longer:
        return ""
    packed = " with BOS/EOS" if options.mode == "paper" else ""
    return f" ({longer} longer{packed} than --seq-len {options.seq_len}: they go on in the next window)"


def _note_step_beyond_data(step_tokens: int, data_tokens: int) -> None:
    """A step larger than all the data is allowed (the loader starts the next epoch, and a tiny
    overfit run may mean it), but a default --batch-size over a few shards silently trained on
    each sentence thousands of times a step: say so, with the flags that size a step."""
    if 0 < data_tokens < step_tokens:
        times = step_tokens / data_tokens
        print(f"note: one step takes {step_tokens:,} tokens, {times:.1f}x all the data's {data_tokens:,}: each "
              f"sentence is seen about {math.ceil(times)} times a step; lower --batch-size, --grad-accum or "
              "--seq-len, or give more --data", file=sys.stderr, flush=True)


def fit(options: FitOptions | dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) and return the summary: losses of this run, tokens/s, MFU, last checkpoint.
    `options` may be a plain dict of `FitOptions` fields (e.g. from a build config)."""
    if isinstance(options, dict):
        options = FitOptions(**options)
    options.validate()
    kind = options.device if options.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    env = init_distributed(kind)
    try:
        return _fit(options, env, resolve_device(options, env.local_rank))
    finally:
        if env.started:
            dist.destroy_process_group()


def _set_aside_damaged(damaged: list[tuple[str, CheckpointDamaged]], resumed: str | None, env: Dist) -> list[str]:
    """Rename damaged step folders newer than the resumed one to `step-*.damaged` (rank 0, after
    every rank has read them), so they neither count as newer steps nor get pruned; warn naming
    the damaged file. Returns the new names."""
    if not damaged:
        return []
    if env.world_size > 1:
        dist.barrier()
    moved = []
    if env.main:
        for folder, damage in damaged:
            moved.append(set_aside(folder))
            warnings.warn(f"{damage}; this checkpoint is set aside as {moved[-1]}; resuming from "
                          f"{resumed or 'the start'}", CheckpointWarning, stacklevel=3)
    if env.world_size > 1:
        dist.barrier()
    return moved


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse (up to 32 MiB blocks from its heap, no trim)
    instead of handing it back to the kernel, which zero-fills it again at the next step's first
    touch. A CPU step allocates and frees the same few hundred MB of activations every step; on the
    tiny preset at 2x1024 tokens that was 5,000-14,000 page faults (20-55 MB) a step and 3-5% of
    its time. Process-wide; RSS then stays at the peak. False where there is no glibc `mallopt`."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>; 32 MiB is glibc's largest mmap threshold
    return bool(mallopt(m_mmap_threshold, 32 * 2**20)) and bool(mallopt(m_trim_threshold, 2**30))


@contextlib.contextmanager
def _sole_writer(out: str, env: Dist) -> Iterator[None]:
    """Hold `out`'s writer lock (rank 0; `tokenizer.run_folder`) for the run, refusing on every rank
    a run folder another fit is writing or cannot write, then remove the temporaries killed fits
    left there: with the lock held no other writer can be mid-save in one of them. On a filesystem
    that cannot lock, warn and remove nothing. A run refused inside the block leaves nothing any rank
    made: rank 0's lock takes back its folder, and each other rank the folder it made on its own host
    (`made_folder`: a rank on another host left an empty `--out` there)."""
    with contextlib.ExitStack() as stack:
        refusal, hold = None, None
        if env.main:
            try:
                hold = stack.enter_context(sole_writer(out, "trainer.fit"))
            except RunFolderError as exc:
                refusal = str(exc)
        if env.world_size > 1:  # every rank stops, not rank 0 alone while the others wait in a collective
            box = [refusal]
            dist.broadcast_object_list(box, src=0)
            refusal = box[0]
        if refusal:
            raise UsageError(refusal)
        try:  # rank 0 made it; a rank on another host may not see it, and a refusal there takes it back
            stack.enter_context(made_folder(out))
        except RunFolderError as exc:
            raise UsageError(str(exc)) from None
        if hold is not None and not hold.locked:  # no sweep: a temporary may be a live fit's
            print(f"warning: {hold.warning}", file=sys.stderr, flush=True)
        elif hold is not None:
            _remove_leftovers(out)
        yield


def _remove_leftovers(out: str) -> None:
    """Remove what killed fits left half-written in `out` (`run_layout.run_leftovers`), saying so."""
    removed = remove_leftovers(run_leftovers(out))
    if removed:
        print(f"note: removed what an interrupted fit left half-written in {out}: {describe_leftovers(removed)}",
              file=sys.stderr, flush=True)


def _fit(options: FitOptions, env: Dist, device: torch.device) -> dict[str, Any]:
    if options.threads:
        torch.set_num_threads(options.threads)
    if device.type == "cpu":
        keep_freed_memory()
    with _sole_writer(options.out, env):
        return _run(options, env, device)


def _run(options: FitOptions, env: Dist, device: torch.device) -> dict[str, Any]:
    """The run itself, on a folder this process writes alone."""
    trainer = Trainer(options, env, device)
    resume_from, damaged = None, []
    if options.resume == "auto":  # the newest intact step; damaged newer ones are set aside
        resume_from, loaded, damaged = ckpt.load_newest_intact(options.out)
        if damaged and resume_from is None:
            raise CheckpointError(f"{options.out}: no intact checkpoint to resume from: "
                                  + "; ".join(str(damage) for _, damage in damaged)
                                  + ". Move them away (they are kept, not deleted) to start fresh")
        if resume_from:
            trainer.resume(resume_from, loaded)
    elif options.resume not in ("none", "never", ""):
        resume_from = options.resume
        trainer.resume(resume_from)
    set_aside_as = _set_aside_damaged(damaged, resume_from, env)
    start_step = trainer.step
    newer = [path for step, path in ckpt.list_checkpoints(options.out) if step > start_step]
    if newer:
        raise UsageError(f"{options.out} holds checkpoints beyond the starting step {start_step} ({', '.join(newer)}); "
                         "they would mix with this run: use another --out, or remove them to roll back")
    if env.main:
        _trim_log(os.path.join(options.out, LOG_NAME), start_step)
    end = options.max_steps if options.stop_at is None else min(options.max_steps, options.stop_at)
    peak = peak_flops(device, trainer.dtype)
    flops_per_token = trainer.config.flops_per_token(options.seq_len)
    if env.main and not options.quiet:
        data = "; ".join(f"{d['glob']} x{d['weight']:g}: {d['shards']} shards, {d['sentences']} sentences, "
                         f"{d['tokens']:,} tokens" + _longer_note(d, options) for d in trainer.data.describe())
        gemm = f" ({cpu_gemm.backend()} GEMMs)" if device.type == "cpu" and not options.compile else ""
        print(f"fit {options.preset} ({trainer.config.num_parameters() / 1e6:.1f}M params) on {device}{gemm} "
              f"{trainer.dtype}, world {env.world_size}{' fsdp' if options.fsdp and env.world_size > 1 else ''}, "
              f"{trainer.tokens_per_step:,} tokens/step, steps {start_step}->{end}"
              f"{f' (resumed from {resume_from})' if resume_from else ''}\n  data: {data}", flush=True)
    if env.main:
        _note_step_beyond_data(trainer.tokens_per_step, sum(d["tokens"] for d in trainer.data.describe()))
        for note in trainer.data.notes():
            print(f"note: {note}", file=sys.stderr, flush=True)
    losses: list[float] = []
    last_path = resume_from
    interval_started, interval_tokens = time.perf_counter(), 0
    run_started = time.perf_counter()
    readback = StepReadback(trainer.curve, losses)
    profile = StepProfile(options.profile_steps if env.main else 0, device, os.path.join(options.out, PROFILE_NAME))
    timer = SteadyTimer()  # steady throughput: the first step (warm-up, compile) left out
    first_step_s: float | None = None
    while trainer.step < end:
        readback.add(trainer.step + 1, trainer.train_step())
        interval_tokens += trainer.tokens_per_step
        every = options.checkpoint_every
        log_now = trainer.step % options.log_every == 0 or trainer.step == end
        save_now = bool(every) and (trainer.step % every == 0 or trainer.step == end)
        if first_step_s is None or log_now or save_now or readback.full:
            loss, norm = readback.drain()  # waits for the device; raises on a non-finite loss
            first_step_s = first_step_s or time.perf_counter() - run_started
            timer.read_back(len(losses))
        if profile.step_finished(trainer.step - start_step):  # profiled steps ran slower: time from here
            if readback.queued:
                readback.drain()
            timer.restart(len(losses))
        if log_now:
            elapsed = time.perf_counter() - interval_started
            rate = interval_tokens / elapsed if elapsed > 0 else float("nan")
            _log(trainer, {"step": trainer.step, "loss": loss, "lr": learning_rate(trainer.step - 1, options),
                           "grad_norm": norm, "tokens_per_s": rate, "tokens_seen": trainer.tokens_seen,
                           "epochs": trainer.data.epochs, "time": time.time(),
                           "mfu": (flops_per_token * rate / (peak * env.world_size)) if peak else None})
            interval_started, interval_tokens = time.perf_counter(), 0
        if save_now:
            saving = time.perf_counter()
            last_path = trainer.save()
            timer.pause(time.perf_counter() - saving)
    profile.finish()  # a run shorter than the profile asked for
    elapsed = time.perf_counter() - run_started
    if timer.steps and timer.seconds > 0:
        tokens_per_s = trainer.tokens_per_step * timer.steps / timer.seconds
    elif first_step_s:
        tokens_per_s = trainer.tokens_per_step / first_step_s
    else:
        tokens_per_s = None
    summary = {
        "out": options.out, "preset": options.preset, "parameters": trainer.config.num_parameters(),
        "device": str(device), "dtype": trainer.dtype, "world_size": env.world_size,
        "fsdp": bool(options.fsdp and env.world_size > 1), "start_step": start_step, "step": trainer.step,
        "losses": losses, "final_loss": losses[-1] if losses else None,
        "tokens_per_step": trainer.tokens_per_step, "tokens_seen": trainer.tokens_seen,
        "tokens_per_s": tokens_per_s, "first_step_s": first_step_s,
        "mfu": flops_per_token * tokens_per_s / (peak * env.world_size) if peak and tokens_per_s else None,
        "elapsed_s": elapsed, "checkpoint": last_path, "resumed_from": resume_from, "set_aside": set_aside_as,
        "loss_curve": os.path.join(options.out, LOSSES_NAME), "data": trainer.data.describe(),
        "shared_shards": trainer.data.shared_shards(),
    }
    if env.main:
        _write_json(os.path.join(options.out, SUMMARY_NAME), summary)
        if not options.quiet:
            rate_text = f"{tokens_per_s:,.0f} tok/s" if tokens_per_s else "no steps run"
            mfu_text = f", mfu {100 * summary['mfu']:.1f}%" if summary["mfu"] else ""
            final = f"{summary['final_loss']:.4f}" if losses else "n/a"
            print(f"done: step {trainer.step}/{options.max_steps}, final loss {final}, {rate_text}{mfu_text}, "
                  f"{elapsed:.1f} s, checkpoint {last_path}", flush=True)
    return summary


# -- CLI --------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    """The flags of `FitOptions` (names, types, defaults and help are the dataclass's own)."""
    return add_flags(argparse.ArgumentParser(prog="python -m trainer.fit", description=__doc__.split("\n")[0]),
                     FitOptions)


def parse_args(argv: Sequence[str] | None = None) -> FitOptions:
    return options_from(_parser().parse_args(argv), FitOptions)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 2 with one `error:` line for a run refused for its flags or the files they name
    (`UsageError`, a damaged or unfitting checkpoint or token shard, a missing shard file) or
    stopped by a diverged loss; any other error, a `ValueError` from inside training included, is
    a bug and keeps its traceback."""
    try:
        fit(parse_args(argv))
    except (UsageError, CheckpointError, ShardDamaged, FileNotFoundError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def exit_process(code: int) -> None:
    """Leave with `code`; a rank started by torchrun leaves without Python's shutdown.

    gloo frees a collective's tensors on its own worker thread after `wait()` has returned (the
    checkpoint's final barrier holds the gathered state dict), and freeing a tensor Python once
    held takes the GIL. A rank with nothing left to do reaches interpreter shutdown first on a busy
    machine; the late worker thread is then killed taking the GIL, inside a C++ destructor:
    "terminate called without an active exception", SIGABRT, a failed run whose training had
    finished (seen about once in 30 two-rank runs beside one busy process; a core dump showed
    `ProcessGroupGloo::runLoop -> ~AsyncBarrierWork -> decref_pyobject -> take_gil ->
    PyThread_exit_thread`). `destroy_process_group` cannot stop it: gloo's threads end only
    when the group object is freed, and torch keeps references to it. Everything this process
    writes is committed and flushed by the time `fit` returns, so skipping the shutdown loses
    nothing."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _main_exit_code() -> int:
    """`main`'s code; any other failure printed and code 1, so a torchrun rank that fails also
    leaves through `exit_process`, not through the shutdown race it avoids."""
    try:
        return main()
    except BaseException as exc:  # noqa: BLE001 - the process ends here either way
        if isinstance(exc, SystemExit):
            return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        import traceback

        traceback.print_exc()
        return 1


if __name__ == "__main__":
    exit_process(_main_exit_code())
