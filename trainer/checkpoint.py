"""Trainer checkpoints: one folder per step, written atomically, loadable with `weights_only=True`.

Layout of `OUT/checkpoints/step-00001000/`:
  - `model.pt`      the model state dict, fp32, our parameter names (= HF LlamaForCausalLM names)
  - `optimizer.pt`  AdamW state keyed by parameter name (so it loads under 1 process, DDP or FSDP2)
  - `rng.pt`        torch CPU (and CUDA) generator states
  - `config.json`   the model config (HF LlamaConfig field names)
  - `state.json`    step, tokens seen, data-loader state, fit options, Python RNG: plain JSON
  - `manifest.json` size and sha256 of each file above, written last (the commit mark)
Files go into a temporary folder that is sealed and renamed into place only when complete, so a
folder named `step-*` is always whole; only the newest `keep` folders are kept. Loading verifies
every file against the manifest; on resume a damaged newest step is set aside (`step-*.damaged`)
with a warning naming the file, and the newest intact one is used. A resume refuses a step holding
a tensor in another dtype than the model and AdamW hold it in, or holding NaN or inf, naming it.
Folders written before manifests existed (format 1) load with a warning.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any, Mapping

import torch

from tokenizer.atomic import remove_folder
from tokenizer.finite import first_non_finite, non_finite_phrase

from .checkpoint_io import check_shapes, dtype_name, read_torch_file, write_config
from .config import ModelConfig
from .integrity import CheckpointDamaged, CheckpointError, reading, sealed_folder
from .run_layout import (  # noqa: F401 - checkpoint_dir, list_checkpoints: re-exported for the fit loop
    SEALED_FORMAT,
    STATE_NAME,
    checkpoint_dir,
    list_checkpoints,
    verify_checkpoint,
)

FORMAT_VERSION = SEALED_FORMAT  # 2: sealed with manifest.json; 1: the same files without it
FILES = ("model.pt", "optimizer.pt", "rng.pt", "config.json", STATE_NAME)


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
    final = checkpoint_dir(out, step)
    tensors, plain = rng_state()
    with sealed_folder(final) as temporary:  # a resumed run that stops where it began replaces it
        torch.save(dict(model_state), os.path.join(temporary, "model.pt"))
        torch.save(optimizer_state, os.path.join(temporary, "optimizer.pt"))
        torch.save(tensors, os.path.join(temporary, "rng.pt"))
        write_config(temporary, config, torch.float32)  # the HF config.json, as exports have it
        with open(os.path.join(temporary, STATE_NAME), "w", encoding="utf-8") as handle:
            json.dump({"format_version": FORMAT_VERSION, "step": step, **state, "rng": plain}, handle, indent=1)
    for _, old in list_checkpoints(out)[:-keep] if keep > 0 else []:
        remove_folder(old)  # renamed first: a kill midway leaves `.step-N.del-X`, which the next fit removes
    return final


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Everything of a checkpoint folder, every file verified against its manifest first; tensors
    through `torch.load(weights_only=True)`. A missing, damaged or unreadable file raises
    `CheckpointDamaged` naming it."""
    if not os.path.isdir(path):
        raise CheckpointDamaged(path, "not a checkpoint folder (it does not exist)")
    verify_checkpoint(path)
    for name in FILES:
        if not os.path.isfile(os.path.join(path, name)):
            raise CheckpointDamaged(os.path.join(path, name), "missing: not a complete trainer checkpoint")

    def tensors(name: str) -> Any:
        return read_torch_file(os.path.join(path, name), map_location=map_location)

    with reading(os.path.join(path, STATE_NAME)):
        with open(os.path.join(path, STATE_NAME), encoding="utf-8") as handle:
            state = json.load(handle)
    with reading(os.path.join(path, "config.json")):
        config = ModelConfig.load(path)
    return {"model": tensors("model.pt"), "optimizer": tensors("optimizer.pt"), "rng": tensors("rng.pt"),
            "config": config, "state": state}


def load_newest_intact(out: str, map_location: str | torch.device = "cpu"
                       ) -> tuple[str | None, dict[str, Any] | None, list[tuple[str, CheckpointDamaged]]]:
    """The newest checkpoint under `out` that loads whole: (folder, contents, [(folder, damage)]
    of the newer ones, newest first). (None, None, damage) when there is no intact one."""
    damaged: list[tuple[str, CheckpointDamaged]] = []
    for _, path in reversed(list_checkpoints(out)):
        try:
            return path, load_checkpoint(path, map_location), damaged
        except CheckpointDamaged as exc:
            damaged.append((path, exc))
    return None, None, damaged


# the dtype torch's optimizers keep a parameter's `step` count in (`optimizer._get_scalar_dtype`)
STEP_DTYPE = torch.float32
_UNUSABLE = ("this step cannot be trained on; resume from an earlier step (--resume OUT/checkpoints/step-N), or "
             "train afresh in another --out")


def check_finite_state(path: str, loaded: Mapping[str, Any]) -> None:
    """Refuse a step whose weights or optimizer moments hold NaN or inf, naming file and tensor: a
    resume loaded them as they were and trained on (every loss NaN, or a crash later). The fit's own
    readback keeps a diverged step from being saved; such a step comes from elsewhere (an older
    version, a copy, an edit). Per tensor, min and max only (`tokenizer.finite`)."""
    for name in ("model.pt", "optimizer.pt"):
        found = first_non_finite(loaded[name.removesuffix(".pt")])
        if found:
            raise CheckpointError(f"{os.path.join(path, name)}: {non_finite_phrase(*found)}: {_UNUSABLE}")


def first_foreign_dtype(loaded: Mapping[str, Any], model_dtypes: Mapping[str, torch.dtype]
                        ) -> tuple[str, str, torch.dtype, torch.dtype] | None:
    """(file, tensor name, its dtype, the dtype the model or optimizer holds it in) of the first
    tensor of a step that another dtype holds, or None. The fit saves each exactly as the model and
    AdamW hold it (moments in their parameter's dtype, `step` in float32): anything else came from
    elsewhere, and loading cast it in silence (int8 weights truncated to integers) or crashed inside
    torch (float4, which has no copy kernel)."""
    for name, tensor in loaded["model"].items():
        if name in model_dtypes and isinstance(tensor, torch.Tensor) and tensor.dtype != model_dtypes[name]:
            return "model.pt", name, tensor.dtype, model_dtypes[name]
    for param, values in (loaded["optimizer"].get("state") or {}).items():
        for key, tensor in values.items() if isinstance(values, Mapping) else ():
            held = STEP_DTYPE if key == "step" else model_dtypes.get(param)
            if held is not None and isinstance(tensor, torch.Tensor) and tensor.dtype != held:
                return "optimizer.pt", f"state.{param}.{key}", tensor.dtype, held
    return None


def check_state_dtypes(path: str, loaded: Mapping[str, Any], model_dtypes: Mapping[str, torch.dtype]) -> None:
    """Refuse a step holding a tensor in a dtype the model (or its optimizer) does not, naming the
    file, the tensor and both dtypes (`first_foreign_dtype`)."""
    found = first_foreign_dtype(loaded, model_dtypes)
    if found:
        name, tensor, dtype, held = found
        owner = "model" if name == "model.pt" else "optimizer"
        raise CheckpointError(f"{os.path.join(path, name)}: tensor {tensor} is {dtype_name(dtype)}, the {owner} "
                              f"holds it in {dtype_name(held)}: {_UNUSABLE}")


def check_state_shapes(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, torch.Tensor],
                       where: str) -> None:
    """Raise naming every missing, unexpected and differently shaped tensor."""
    check_shapes(expected, {k: tuple(v.shape) for k, v in found.items()}, where)
