"""Trainer checkpoints: one folder per step, written atomically, loadable with `weights_only=True`.

Layout of `OUT/checkpoints/step-00001000/`:
  - `model.pt`      the model state dict, fp32, our parameter names (= HF LlamaForCausalLM names)
  - `optimizer.pt`  AdamW state keyed by parameter name (so it loads under 1 process, DDP or FSDP2)
  - `rng.pt`        torch CPU (and CUDA) generator states
  - `config.json`   the model config (HF LlamaConfig field names)
  - `state.json`    step, tokens seen, data-loader state, fit options, Python RNG: plain JSON
Files go into a temporary folder that is renamed into place only when complete, so a folder
named `step-*` is always whole; only the newest `keep` folders are kept.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from typing import Any, Mapping

import torch

from .config import ModelConfig

CHECKPOINTS = "checkpoints"
PREFIX = "step-"
FORMAT_VERSION = 1
FILES = ("model.pt", "optimizer.pt", "rng.pt", "config.json", "state.json")


def checkpoint_dir(out: str, step: int) -> str:
    return os.path.join(out, CHECKPOINTS, f"{PREFIX}{step:08d}")


def list_checkpoints(out: str) -> list[tuple[int, str]]:
    """(step, folder) of the complete checkpoints under `out`, oldest first."""
    root = os.path.join(out, CHECKPOINTS)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        path = os.path.join(root, name)
        complete = os.path.isfile(os.path.join(path, "state.json"))
        if name.startswith(PREFIX) and name[len(PREFIX):].isdigit() and complete:
            found.append((int(name[len(PREFIX):]), path))
    return sorted(found)


def latest_checkpoint(out: str) -> str | None:
    found = list_checkpoints(out)
    return found[-1][1] if found else None


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensor RNG states (for rng.pt) and the plain ones (for state.json)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["cuda"] = torch.cuda.get_rng_state()
    version, internal, gauss = random.getstate()
    return tensors, {"python": [version, list(internal), gauss]}


def set_rng_state(tensors: Mapping[str, torch.Tensor], plain: Mapping[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    if "python" in plain:
        version, internal, gauss = plain["python"]
        random.setstate((version, tuple(internal), gauss))


def save_checkpoint(out: str, step: int, model_state: Mapping[str, torch.Tensor],
                    optimizer_state: Mapping[str, Any], config: ModelConfig, state: dict[str, Any],
                    keep: int = 3) -> str:
    """Write the checkpoint of `step` atomically and prune to the newest `keep`; returns its folder."""
    from .checkpoint_io import atomic_folder, write_config

    final = checkpoint_dir(out, step)
    tensors, plain = rng_state()
    with atomic_folder(final) as temporary:  # a resumed run that stops where it began replaces it
        torch.save(dict(model_state), os.path.join(temporary, "model.pt"))
        torch.save(optimizer_state, os.path.join(temporary, "optimizer.pt"))
        torch.save(tensors, os.path.join(temporary, "rng.pt"))
        write_config(temporary, config, torch.float32)  # the HF config.json, as exports have it
        with open(os.path.join(temporary, "state.json"), "w", encoding="utf-8") as handle:
            json.dump({"format_version": FORMAT_VERSION, "step": step, **state, "rng": plain}, handle, indent=1)
    for _, old in list_checkpoints(out)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Everything of a checkpoint folder; tensors through `torch.load(weights_only=True)`."""
    missing = [name for name in FILES if not os.path.isfile(os.path.join(path, name))]
    if missing:
        raise FileNotFoundError(f"{path} is not a trainer checkpoint: {', '.join(missing)} missing")

    def tensors(name: str) -> Any:
        return torch.load(os.path.join(path, name), map_location=map_location, weights_only=True)

    with open(os.path.join(path, "state.json"), encoding="utf-8") as handle:
        state = json.load(handle)
    return {"model": tensors("model.pt"), "optimizer": tensors("optimizer.pt"), "rng": tensors("rng.pt"),
            "config": ModelConfig.load(path), "state": state}


def check_state_shapes(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, torch.Tensor],
                       where: str) -> None:
    """Raise naming every missing, unexpected and differently shaped tensor."""
    from .checkpoint_io import check_shapes

    check_shapes(expected, {k: tuple(v.shape) for k, v in found.items()}, where)
