"""Train a VQGAN tokenizer on rendered images: `python -m tokenizer.fit --data GLOB --out DIR`.

Loss: L1 + L2 reconstruction (with --colour-weight, also the error of each image's mean colour),
the VQ codebook and commitment terms, and after `--disc-start` steps a PatchGAN hinge loss weighted
adaptively (taming's last-layer gradient ratio). AdamW for both networks, a constant or cosine
learning rate. Random crops and flips; with --balance-data every --data pattern is drawn equally
often.

`--out` ends up holding the tokenizer in open-muse format (`config.json` + `pytorch_model.bin`,
loadable by `tokenizer.checkpoint.load` and `Tokenizer.from_pretrained`), `train_state.pt` (model,
discriminator, optimisers, step, RNG, usage counters: everything a resume needs) and `log.jsonl`.
Both checkpoint files are replaced atomically. Running the same command again resumes, with the
log trimmed to the resumed step; one fit writes an `--out` at a time, and it first removes the
temporaries of saves that were killed (`tokenizer.run_folder`).

Deterministic for a given seed on CPU as far as torch allows: batches and crops are functions of
(seed, step), torch's RNG is saved and restored, deterministic algorithms are requested.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Iterator, Sequence

from .omp_wait import prefer_short_spin

prefer_short_spin()  # before torch loads: libgomp reads its environment once (`tokenizer.omp_wait`)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from . import checkpoint
from .atomic import atomic_path, write_bytes
from .config import PRESETS, UsageError, VQGANConfig, preset
from .data import Skipped, TrainBatches, find_images, merge_refs, merge_skipped
from .dataclass_cli import add_flags, flag, options_from
from .devices import device_problem
from .finite import first_non_finite, non_finite_count, non_finite_phrase
from .losses import (NLayerDiscriminator, adaptive_weight, colour_loss, generator_loss, hinge_d_loss, psnr,
                     reconstruction_loss)
from .metrics import codebook_usage, perplexity
from .schedule import warmup_cosine
from .model import VQGAN, build
from .run_folder import (RunFolderError, describe_leftovers, dropped_note, file_leftovers, log_records,
                         remove_leftovers, sole_writer)

STATE_NAME = "train_state.pt"
LOG_NAME = "log.jsonl"
# the files a fit replaces atomically in --out (`tokenizer.atomic` temporaries beside each while written;
# the log when a resume trims it)
RUN_FILES = (STATE_NAME, checkpoint.WEIGHTS_NAME, checkpoint.CONFIG_NAME, LOG_NAME)


@dataclass
class FitOptions:
    """Every knob of a tokenizer training run; `python -m tokenizer.fit` has a flag for each."""

    data: list[str] = flag(help="glob of rendered-sentence tars, image files or folders (repeatable)")
    out: str = flag(help="output folder (resumed when it holds a train_state.pt)")
    preset: str = flag("tiny", "model preset", choices=tuple(PRESETS))
    config: str | None = flag(None, "a muse config.json to use instead of the preset")
    init: str | None = flag(None, "start from the weights (and config) of a muse-format folder, e.g. the "
                                  "released LVM tokenizer, to fine-tune it")
    decoder_level: bool = flag(False, "give the decoder a per-image colour level path (config key decoder_level); "
                                      "with --init it starts at zero, so the init weights decode unchanged")
    level_lr_scale: float = flag(1.0, "learning rate of the decoder's level path as a multiple of --lr")
    balance_data: bool = flag(False, "draw every --data pattern equally often, whatever its image count (each "
                                     "walks its own shuffled order), instead of every image equally often")
    export: str | None = flag(None, "at the end, also write just the tokenizer (config.json + "
                                    "pytorch_model.bin) to this folder, e.g. to ship it")
    max_steps: int = flag(1000)
    batch_size: int = flag(8)
    crop: int | None = flag(None, "training crop size (default: the config resolution)")
    seed: int = flag(0)
    lr: float = flag(2e-4)
    disc_lr: float | None = flag(None, "discriminator learning rate (default: --lr)")
    weight_decay: float = flag(1e-4)
    warmup_steps: int = flag(0)
    lr_decay: str = flag("constant", "learning-rate schedule after warm-up: constant, or cosine down to "
                                     "--min-lr-ratio x --lr at --max-steps")
    min_lr_ratio: float = flag(0.0, "with --lr-decay cosine: the last step's learning rate as a share of --lr")
    l1_weight: float = flag(1.0)
    l2_weight: float = flag(1.0)
    colour_weight: float = flag(0.0, "weight of the squared error of each image's mean colour (against a colour "
                                     "cast, which plain MSE barely sees)")
    disc_start: int = flag(2000, "step the GAN loss switches on")
    disc_weight: float = flag(0.5)
    disc_channels: int = flag(64)
    disc_layers: int = flag(3)
    restart_dead_every: int = flag(0, "every N steps move codes unused since the last restart onto encoder "
                                      "outputs (0: off)")
    ae_warmup_steps: int = flag(0, "train this many steps as a plain autoencoder (no quantisation), then seed "
                                   "the codebook from encoder outputs: a small model on a CPU otherwise learns "
                                   "to output the mean while its codes still mean nothing")
    log_every: int = flag(20)
    checkpoint_every: int = flag(500)
    threads: int | None = flag(None, "torch intra-op threads")
    device: str | None = flag(None, "auto, cpu, cuda or cuda:N (default: cuda when available)")


def _parser() -> argparse.ArgumentParser:
    """The flags of `FitOptions` (names, types, defaults and help are the dataclass's own)."""
    return add_flags(argparse.ArgumentParser(prog="python -m tokenizer.fit", description=__doc__.split("\n")[0]),
                     FitOptions)


def parse_args(argv: Sequence[str] | None = None) -> FitOptions:
    return options_from(_parser().parse_args(argv), FitOptions)


class Trainer:
    """Model, discriminator, optimisers and counters; `step()` runs one update."""

    def __init__(self, options: FitOptions, config: VQGANConfig, device: torch.device) -> None:
        self.options = options
        self.device = device
        self.model: VQGAN = build(config, seed=options.seed).to(device).train()
        torch.manual_seed(options.seed + 1)
        self.disc = NLayerDiscriminator(config.num_channels, options.disc_channels, options.disc_layers).to(device)
        self.opt_g = torch.optim.AdamW(generator_groups(self.model, options.level_lr_scale), lr=options.lr,
                                       betas=(0.5, 0.9), weight_decay=options.weight_decay)
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=options.disc_lr or options.lr, betas=(0.5, 0.9),
                                       weight_decay=options.weight_decay)
        self.step = 0
        # Codes used since the last dead-code restart (for restarts) and since the last log line.
        self.used_since_restart = torch.zeros(config.num_embeddings, dtype=torch.int64)
        self.used_since_log = torch.zeros(config.num_embeddings, dtype=torch.int64)

    # -- checkpointing -------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "step": self.step,
            "config": json.dumps(self.model.config.to_dict()),
            "model": self.model.state_dict(),
            "disc": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "used_since_restart": self.used_since_restart,
            "used_since_log": self.used_since_log,
        }

    def save(self, out: str) -> None:
        """Tokenizer files (muse format) and the full training state, each replaced atomically."""
        checkpoint.save(self.model, out)
        state = self.state()
        with atomic_path(os.path.join(out, STATE_NAME)) as temporary:
            torch.save(state, temporary)

    def resume(self, path: str) -> None:
        try:  # a Git LFS pointer, compressed zip records, a refused or broken pickle: one line
            state = checkpoint.read_weights(path)
        except checkpoint.WeightsFileError as exc:
            raise UsageError(f"--out: {path} cannot be resumed from ({exc.reason}); move it away to train afresh") from None
        saved = VQGANConfig.from_json(json.loads(state["config"]))
        if saved != self.model.config:
            raise UsageError(f"--out: {path} was trained with another model config: {saved} vs {self.model.config}")
        found = first_non_finite({key: state[key] for key in ("model", "disc", "opt_g", "opt_d")})
        if found:  # loaded as they were, the first step trained on NaN
            raise UsageError(f"--out: {path} cannot be resumed from ({non_finite_phrase(*found)}: a diverged step's "
                             "state); move it away to train afresh")
        self.model.load_state_dict(state["model"])
        self.disc.load_state_dict(state["disc"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        torch.set_rng_state(state["torch_rng"])
        self.used_since_restart = state["used_since_restart"]
        self.used_since_log = state["used_since_log"]
        self.step = int(state["step"])

    def non_finite_weights(self) -> str | None:
        """The name of the first model or discriminator weight holding NaN or inf (None: all finite)."""
        for prefix, module in (("", self.model), ("disc.", self.disc)):
            for name, tensor in module.state_dict().items():
                if non_finite_count(tensor):
                    return prefix + name
        return None

    # -- one update ----------------------------------------------------------------------------
    def _lr(self) -> float:
        return learning_rate(self.options, self.step)

    def train_step(self, images: np.ndarray) -> dict[str, float]:
        o = self.options
        for group in self.opt_g.param_groups:
            group["lr"] = self._lr() * group.get("lr_scale", 1.0)
        x = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float().div(255.0).contiguous()
        if self.step < o.ae_warmup_steps:
            return self._autoencoder_step(x)
        out = self.model(x)
        rec = self._reconstruction_loss(out.reconstruction, x)
        loss = rec + out.vq_loss
        gan_on = self.step >= o.disc_start
        g_loss = d_weight = torch.zeros((), device=self.device)
        if gan_on:
            self.disc.requires_grad_(False)
            g_loss = generator_loss(self.disc(out.reconstruction))
            d_weight = adaptive_weight(rec, g_loss, self.model.last_layer(), o.disc_weight)
            loss = loss + d_weight * g_loss
            self.disc.requires_grad_(True)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()

        d_loss = torch.zeros((), device=self.device)
        if gan_on:
            d_loss = hinge_d_loss(self.disc(x), self.disc(out.reconstruction.detach()))
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()

        counts = torch.bincount(out.codes.flatten().cpu(), minlength=self.model.config.num_embeddings)
        self.used_since_restart += counts
        self.used_since_log += counts
        self.step += 1
        restarted = 0
        if o.restart_dead_every and self.step % o.restart_dead_every == 0:
            generator = torch.Generator(device=self.device).manual_seed(o.seed * 1_000_003 + self.step)
            restarted = self.model.quantize.restart_dead_codes(self.used_since_restart == 0, out.latent, generator)
            self.used_since_restart.zero_()
        return {"loss": loss.item(), "rec": rec.item(), "codebook": out.codebook_loss.item(),
                "commit": out.commitment_loss.item(), "g": g_loss.item(), "d": d_loss.item(),
                "d_weight": float(d_weight), "psnr": psnr(out.reconstruction, x), "restarted": restarted}


    def _reconstruction_loss(self, reconstruction: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        o = self.options
        rec = reconstruction_loss(reconstruction, x, o.l1_weight, o.l2_weight)
        return rec + o.colour_weight * colour_loss(reconstruction, x) if o.colour_weight else rec

    def _latent(self, x: torch.Tensor) -> torch.Tensor:
        latent = self.model.encode_latent(x)
        return F.normalize(latent, dim=1) if self.model.config.codebook_l2_norm else latent

    def _autoencoder_step(self, x: torch.Tensor) -> dict[str, float]:
        """One update of encoder and decoder around an unquantised bottleneck."""
        reconstruction = self.model.decode_latent(self._latent(x))
        rec = self._reconstruction_loss(reconstruction, x)
        self.opt_g.zero_grad(set_to_none=True)
        rec.backward()
        self.opt_g.step()
        self.step += 1
        zero = 0.0
        return {"loss": rec.item(), "rec": rec.item(), "codebook": zero, "commit": zero, "g": zero, "d": zero,
                "d_weight": zero, "psnr": psnr(reconstruction, x), "restarted": 0}

    @torch.no_grad()
    def seed_codebook(self, batches: list[np.ndarray]) -> int:
        """Codebook := random encoder outputs (seeded), so every code starts on real data."""
        vectors = []
        for images in batches:
            x = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float().div(255.0)
            z = self._latent(x)
            vectors.append(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]))
        flat = torch.cat(vectors)
        generator = torch.Generator(device=flat.device).manual_seed(self.options.seed * 7919 + self.step)
        pick = torch.randperm(flat.shape[0], generator=generator, device=flat.device)
        count = self.model.config.num_embeddings
        pick = pick[torch.arange(count, device=flat.device) % flat.shape[0]]
        jitter = 0.01 * flat.std() * torch.randn(count, flat.shape[1], generator=generator, device=flat.device)
        self.model.quantize.embedding.weight.copy_((flat[pick] + jitter).to(self.model.quantize.embedding.weight.dtype))
        return count


class Diverged(FloatingPointError):
    """Training reached a non-finite loss or weight: the run stops there, saving nothing of it (a
    diverged fit went on to its last step, saved and exported NaN weights and exited 0)."""

    def __init__(self, options: FitOptions, step: int, what: str, saved_step: int | None) -> None:
        kept = (f"{options.out} keeps the checkpoint of step {saved_step}" if saved_step
                else f"no checkpoint was written to {options.out}")
        export = ", and nothing was exported" if options.export else ""
        super().__init__(f"{what} at step {step}: training diverged; nothing of step {step} was saved ({kept}"
                         f"{export}); lower --lr (now {options.lr:g}) or raise --warmup-steps, and run again")


def learning_rate(options: FitOptions, step: int) -> float:
    """Linear warm-up, then constant or a cosine from --lr down to --min-lr-ratio x --lr."""
    o = options
    floor = o.lr if o.lr_decay == "constant" else o.min_lr_ratio * o.lr  # a cosine to lr itself is flat
    return warmup_cosine(step, o.lr, o.warmup_steps, o.max_steps, floor)


def generator_groups(model: VQGAN, level_lr_scale: float) -> list[dict]:
    """The optimiser's parameter groups: the decoder's level path (when the model has one) on its
    own, at `level_lr_scale` x the learning rate: it starts at zero and is only a linear map, so at
    the network's rate it moves too little in a short fine-tune to set each image's colour."""
    level = model.decoder.level_out
    if level is None:
        return [{"params": list(model.parameters())}]
    ids = {id(p) for p in level.parameters()}
    return [{"params": [p for p in model.parameters() if id(p) not in ids]},
            {"params": list(level.parameters()), "lr_scale": level_lr_scale}]


def check_options(options: FitOptions) -> None:
    """Refuse a bad run before any data is read, naming the flag and the fix: torch refused some
    only with a traceback (--lr -1, --device tpu, --batch-size 0), some only when the GAN started
    (--disc-channels 0), and some ran in silence (--l1-weight -1 trained towards a worse image)."""
    if options.lr_decay not in ("constant", "cosine"):
        raise UsageError(f"--lr-decay {options.lr_decay!r}: choose constant or cosine")
    if options.level_lr_scale <= 0:
        raise UsageError(f"--level-lr-scale {options.level_lr_scale}: give a factor > 0")
    if not 0.0 <= options.min_lr_ratio <= 1.0:
        raise UsageError(f"--min-lr-ratio {options.min_lr_ratio}: give a share of --lr between 0 and 1")
    _check_counts(options)
    _check_rates(options)
    _check_device(options.device)
    if os.path.exists(options.out) and not os.path.isdir(options.out):
        raise UsageError(f"--out {options.out}: exists and is not a folder")
    if options.export and os.path.exists(options.export) and not os.path.isdir(options.export):
        raise UsageError(f"--export {options.export}: exists and is not a folder; give a folder for config.json + "
                         "pytorch_model.bin (it was found only after training)")


# (flag field, least value, what its least value means)
COUNTS = (("max_steps", 1, ""), ("batch_size", 1, ""), ("log_every", 1, ""), ("checkpoint_every", 1, ""),
          ("disc_channels", 1, ""), ("disc_layers", 1, ""), ("warmup_steps", 0, " (0: none)"),
          ("ae_warmup_steps", 0, " (0: none)"), ("restart_dead_every", 0, " (0: off)"),
          ("disc_start", 0, " (0: from the first step)"), ("threads", 0, " (0: torch's default)"))
WEIGHTS = ("l1_weight", "l2_weight", "colour_weight", "disc_weight", "weight_decay")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_counts(options: FitOptions) -> None:
    for name, least, meaning in COUNTS:
        value = getattr(options, name)
        if value is not None and value < least:
            raise UsageError(f"{_flag(name)} {value}: give a whole number >= {least}{meaning}")


def _check_rates(options: FitOptions) -> None:
    """Learning rates and loss weights >= 0, finite (NaN fails every comparison). A rate of 0 keeps
    the weights as they are (a fit that only checks an --init loads and runs), as trainer.fit's."""
    for name in ("lr", "disc_lr"):
        value = getattr(options, name)
        if value is not None and not (value >= 0 and math.isfinite(value)):
            raise UsageError(f"{_flag(name)} {value}: give a learning rate >= 0 (0: the weights stay as they are)")
    for name in WEIGHTS:
        value = getattr(options, name)
        if not (value >= 0 and math.isfinite(value)):
            raise UsageError(f"{_flag(name)} {value}: give a weight >= 0")


def _check_device(device: str | None) -> torch.device:
    """The device `--device` names (None: auto, cuda when available), judged as every command's
    is (`tokenizer.devices`): a device torch does not know, or a GPU this machine lacks, refused."""
    chosen, problem = device_problem(device or "auto")
    if chosen is None:
        raise UsageError(problem or f"--device {device}: not a device")
    return chosen


def model_config(options: FitOptions) -> VQGANConfig:
    """The architecture `--config` (a muse config.json) or `--preset` asks for; errors name the flag."""
    if not options.config:
        return preset(options.preset)
    try:
        return VQGANConfig.from_json(options.config)
    except OSError as exc:
        raise UsageError(f"--config {options.config}: cannot be read ({exc.strerror or exc})") from None
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--config {options.config}: {exc}") from None


def load_init(model: VQGAN, init: VQGAN, source: str = "--init") -> None:
    """`init`'s weights into `model`; only a level path `model` adds (zero, so it changes nothing
    at first) may be missing from them."""
    missing, unexpected = model.load_state_dict(init.state_dict(), strict=False)
    added = [k for k in missing if not k.startswith("decoder.level_out.")]
    if added or unexpected:
        raise UsageError(f"{source}: its weights do not fit the model (missing {added}, unexpected {unexpected})")


def _log(out: str, record: dict) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    with open(os.path.join(out, LOG_NAME), "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


@contextlib.contextmanager
def _sole_writer(out: str) -> Iterator[None]:
    """Hold `out`'s writer lock for the run (`tokenizer.run_folder`: a second fit on it is refused),
    then remove the temporaries killed fits left there, saying so: with the lock held no other
    writer can be mid-save in one of them."""
    try:
        with sole_writer(out, "tokenizer.fit") as hold:
            if not hold.locked:  # no sweep: a temporary may be a live fit's
                print(f"warning: {hold.warning}", file=sys.stderr, flush=True)
            elif removed := remove_leftovers(file_leftovers(out, RUN_FILES)):
                print(f"note: removed what an interrupted fit left half-written in {out}: "
                      f"{describe_leftovers(removed)}", file=sys.stderr, flush=True)
            yield
    except RunFolderError as exc:
        raise UsageError(str(exc)) from None


def trim_log(path: str, step: int) -> int:
    """Keep the log lines of steps up to `step` (the resumed state), as `trainer.fit` does: the steps
    a killed session made after its last save are made again, and logged again. Event lines
    (`start`, taken as step 0; `resume`, `codebook_seeded`) at `step` itself belong to the session
    that goes on from there, so a fresh start keeps none of a killed session's lines. Lines that are
    no JSON record (torn by a crash) are dropped; returns how many."""
    if not os.path.isfile(path):
        return 0
    records, dropped = log_records(path)
    kept = [line for line, record in records
            if record.get("step", 0) < step or (record.get("step", 0) == step and "event" not in record)]
    write_bytes(path, "".join(kept).encode("utf-8"))
    return dropped


def fit(options: FitOptions) -> dict:
    """Train (or resume) until `max_steps`; returns the last logged record."""
    check_options(options)  # before the flags are handed to torch
    if options.threads:
        torch.set_num_threads(options.threads)
    device = _check_device(options.device)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _fit(options, device)
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _fit(options: FitOptions, device: torch.device) -> dict:
    try:
        init = checkpoint.load(options.init) if options.init else None
    except checkpoint.CheckpointError as exc:
        raise UsageError(f"--init: {exc}") from None
    config = init.config if init is not None else model_config(options)
    if options.decoder_level:
        config = dataclasses.replace(config, decoder_level=True)
    crop = options.crop or config.resolution
    if crop % config.downsample_factor:
        raise UsageError(f"--crop {crop} is not a multiple of {config.downsample_factor}")
    groups = None
    left_out: list[Skipped] = []  # files found but never offered: a pipe, one over the cap, a non-image
    if options.balance_data:  # each pattern's images listed once (listing reads every tar's headers)
        groups = [find_images(pattern, left_out) for pattern in options.data]
        empty = [p for p, g in zip(options.data, groups) if not g]
        if empty:
            raise UsageError(f"--balance-data: no images behind --data {empty[0]!r}; drop it or fix the pattern")
    refs = merge_refs(groups) if groups is not None else find_images(options.data, left_out)
    left_out = merge_skipped(left_out)
    for ref, reason, detail in left_out:
        print(f"skipped {ref}: {reason}: {detail}", file=sys.stderr, flush=True)
    if not refs:
        raise UsageError(f"--data {' '.join(options.data)}: no images there (image files, folders of them, or tars)")
    batches = TrainBatches(refs, options.batch_size, crop, options.seed, groups=groups, on_skip=_skipped_note,
                           names=options.data)
    with _sole_writer(options.out):
        trainer = Trainer(options, config, device)
        if init is not None:
            load_init(trainer.model, init, f"--init {options.init}")
        state_path = os.path.join(options.out, STATE_NAME)
        resumed = os.path.exists(state_path)
        if resumed:
            trainer.resume(state_path)
        log_path = os.path.join(options.out, LOG_NAME)
        if dropped := trim_log(log_path, trainer.step):
            print(dropped_note(log_path, dropped), file=sys.stderr, flush=True)
        if resumed:
            _log(options.out, {"event": "resume", "step": trainer.step})
        else:
            _log(options.out, {"event": "start", "images": len(refs),
                               "skipped": dict(sorted(Counter(reason for _, reason, _ in left_out).items())),
                               "config": config.to_dict(),
                               "options": dataclasses.asdict(options)})
        window: list[dict[str, float]] = []
        last: dict = {"step": trainer.step}
        saved_step = trainer.step if resumed else None
        started = time.perf_counter()
        while trainer.step < options.max_steps:
            if options.ae_warmup_steps and trainer.step == options.ae_warmup_steps:
                per_batch = options.batch_size * (crop // config.downsample_factor) ** 2
                needed = -(-2 * config.num_embeddings // per_batch)
                seeded = trainer.seed_codebook([batches.batch(trainer.step + i) for i in range(needed)])
                _log(options.out, {"event": "codebook_seeded", "step": trainer.step, "codes": seeded})
            window.append(trainer.train_step(batches.batch(trainer.step)))
            if not math.isfinite(window[-1]["loss"]):
                raise Diverged(options, trainer.step, f"the loss is {window[-1]['loss']}", saved_step)
            done = trainer.step >= options.max_steps
            checkpoint_due = trainer.step % options.checkpoint_every == 0 or done
            # judged before the step's log record, so a diverged step leaves nothing of itself behind
            if checkpoint_due and (bad := trainer.non_finite_weights()):  # a finite loss, an update that overflowed
                raise Diverged(options, trainer.step, f"weight {bad} is not finite", saved_step)
            if trainer.step % options.log_every == 0 or done:
                hist = trainer.used_since_log.numpy()
                last = {"step": trainer.step, **{k: round(float(np.mean([w[k] for w in window])), 5) for k in window[0]},
                        "usage": round(codebook_usage(hist), 5), "perplexity": round(perplexity(hist), 2),
                        "seconds": round(time.perf_counter() - started, 2)}
                last["restarted"] = int(sum(w["restarted"] for w in window))
                if batches.unreadable:  # met while drawing, this run: skipped, drawn past
                    last["unreadable"] = batches.unreadable_counts()
                _log(options.out, last)
                trainer.used_since_log.zero_()
                window = []
            if checkpoint_due:
                trainer.save(options.out)
                saved_step = trainer.step
        batches.reader.close()
        if options.export:
            checkpoint.save(trainer.model, options.export)
        return last


def _skipped_note(ref, reason: str, detail: str) -> None:
    """An image found unreadable while drawing a batch: named on stderr as a left-out file is."""
    print(f"skipped {ref}: {reason}: {detail}", file=sys.stderr, flush=True)


def summary_line(options: FitOptions, last: dict) -> str:
    """The run's last words: how its last logged step went, the unreadable images it drew past,
    and where the tokenizer is. On stderr, since stdout carries the JSON log records."""
    how = f"done: step {last.get('step', 0)}/{options.max_steps}"
    if "loss" in last:
        how += f", loss {last['loss']:.4f}" + (f", PSNR {last['psnr']:.2f} dB" if "psnr" in last else "")
    if last.get("unreadable"):
        counts = last["unreadable"]
        how += (f", {sum(counts.values())} unreadable image(s) skipped ("
                + ", ".join(f"{n} {reason}" for reason, n in counts.items()) + ")")
    where = f"tokenizer (config.json + pytorch_model.bin) in {options.out}"
    return f"{how}; {where}" + (f", exported to {options.export}" if options.export else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 2 with one `error:` line naming the flag for a run refused for its flags or the files they
    name (`UsageError`), or stopped by a non-finite loss or weight (`Diverged`); any other error is a
    bug and keeps its traceback."""
    try:
        options = parse_args(argv)
        last = fit(options)
    except (UsageError, Diverged) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary_line(options, last), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
