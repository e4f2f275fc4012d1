"""Where a fit run keeps its checkpoints: `OUT/checkpoints/step-00001000/`, one folder per step.

Names only, no tensors: the run-state module (`checkpoint.py`) writes these folders and the
HF-format module (`checkpoint_io.py`) reads a run folder as its newest step, so both import this
instead of each other.
"""

from __future__ import annotations

import json
import os
import re

from tokenizer.run_folder import Leftover, file_leftovers, folder_leftovers

from .integrity import MANIFEST, CheckpointDamaged, reading, verify_folder, warn_unverified

CHECKPOINTS = "checkpoints"
PREFIX = "step-"
STATE_NAME = "state.json"
DAMAGED_SUFFIX = ".damaged"
SEALED_FORMAT = 2  # state.json format_version from which every step folder carries a manifest
# the files `trainer.fit` replaces atomically in OUT (log, loss curve, summary, profile): their
# temporaries are what a fit killed mid-write leaves there
RUN_FILES = ("log.jsonl", "losses.json", "summary.json", "profile.txt")
_STEP_NAME = re.compile(re.escape(PREFIX) + r"\d+")


def checkpoint_dir(out: str, step: int) -> str:
    return os.path.join(out, CHECKPOINTS, f"{PREFIX}{step:08d}")


def is_step_folder(path: str | os.PathLike[str]) -> bool:
    """A fit loop's step folder (it has `state.json`), as opposed to an HF model folder."""
    return os.path.isfile(os.path.join(path, STATE_NAME))


def list_checkpoints(out: str) -> list[tuple[int, str]]:
    """(step, folder) of the committed checkpoints under `out`, oldest first (sealed ones, and
    older ones whose state.json marked them complete). Whether their bytes are intact is checked
    when they are read."""
    root = os.path.join(out, CHECKPOINTS)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        path = os.path.join(root, name)
        committed = os.path.isfile(os.path.join(path, MANIFEST)) or is_step_folder(path)
        if name.startswith(PREFIX) and name[len(PREFIX):].isdigit() and committed:
            found.append((int(name[len(PREFIX):]), path))
    return sorted(found)


def latest_checkpoint(out: str) -> str | None:
    found = list_checkpoints(out)
    return found[-1][1] if found else None


def run_leftovers(out: str) -> list[Leftover]:
    """What fits killed while writing left in `out`: step folders being written
    (`checkpoints/.step-N.tmp-X`, each a whole model and optimizer) or moved aside
    (`.step-N.old-X`, where step-N exists again), and temporaries of `RUN_FILES`. Names the atomic
    writer gives, nothing else; removed only by a fit holding the folder's writer lock."""
    steps = folder_leftovers(os.path.join(out, CHECKPOINTS), lambda name: bool(_STEP_NAME.fullmatch(name)))
    return steps + file_leftovers(out, RUN_FILES)


def set_aside(path: str) -> str:
    """Rename a damaged step folder to `step-N.damaged` (kept for inspection, no longer listed)."""
    target = path.rstrip(os.sep) + DAMAGED_SUFFIX
    index = 1
    while os.path.exists(target):
        index += 1
        target = f"{path.rstrip(os.sep)}{DAMAGED_SUFFIX}-{index}"
    os.replace(path, target)
    return target


def verify_checkpoint(folder: str | os.PathLike[str], names: list[str] | None = None) -> None:
    """Check `names` (None: every file) of a checkpoint folder against its manifest.

    Without a manifest: a step folder written before manifests existed is read with a warning;
    one whose state.json says it was sealed has lost its manifest (damaged); a model folder from
    elsewhere (an HF download) has nothing recorded to check."""
    if verify_folder(folder, names) or not is_step_folder(folder):
        return
    state = os.path.join(folder, STATE_NAME)
    with reading(state):
        with open(state, encoding="utf-8") as handle:
            version = int(json.load(handle).get("format_version", 1))
    if version >= SEALED_FORMAT:
        raise CheckpointDamaged(os.path.join(folder, MANIFEST), f"missing (a format {version} checkpoint is always "
                                                                "sealed with one)")
    warn_unverified(folder)
