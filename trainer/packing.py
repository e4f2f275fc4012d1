"""The packing a model is scored and prompted in: `paper` (BOS before a sentence) or `stream` (no
BOS: the released code's), as `trainer.fit --mode` trained it.

A fit records its mode in each step's `state.json` (the data fingerprint), and `interop export`
keeps it in config.json's `uvd_provenance`. `trainer.evaluate` and `trainer.generate` took paper
mode unless told `--stream`, so a model fitted in stream mode was scored and prompted with a BOS
it never saw, silently (perplexity 4864 against 4491 in its own mode). They take the recorded
mode now; a `--mode` against it is done as asked, with a note; a model that records none (an HF
download: the released LVM 7B, trained without BOS/EOS) gets paper mode, with a note naming
`--stream`.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

MODES = ("paper", "stream")  # `trainer.data.MODES`, without importing the loader


def recorded_mode(folder: str | os.PathLike[str]) -> str | None:
    """The packing mode a model folder says it was trained in, or None where it records none (an
    HF download, an export made before the mode was kept). `state.json` is checked against the
    step folder's manifest before it is read."""
    from .checkpoint_io import CONFIG_NAME, PROVENANCE, json_file, resolve_folder
    from .run_layout import STATE_NAME, is_step_folder, verify_checkpoint

    root = resolve_folder(folder)
    if is_step_folder(root):
        verify_checkpoint(root, [STATE_NAME])
        state = json_file(root / STATE_NAME)
        data = state.get("data") if isinstance(state, dict) else None
        found: Any = ((data or {}).get("fingerprint") or {}).get("mode") if isinstance(data, dict) else None
    else:
        raw = json_file(root / CONFIG_NAME) if (root / CONFIG_NAME).is_file() else {}
        provenance = raw.get(PROVENANCE) if isinstance(raw, dict) else None
        found = provenance.get("mode") if isinstance(provenance, dict) else None
    return found if found in MODES else None


def add_mode_flags(parser: argparse.ArgumentParser, what: str) -> None:
    """`--mode paper|stream` and `--stream` (its older spelling), both defaulting to the checkpoint's."""
    parser.add_argument("--mode", choices=MODES, default=None,
                        help=f"paper: BOS first; stream: no BOS (the released code's, as the released LVM 7B was "
                             f"trained). Default: the mode the checkpoint records (trainer.fit --mode), else paper. "
                             f"A mode other than the recorded one is {what} as asked, with a note")
    parser.add_argument("--stream", dest="mode", action="store_const", const="stream", help="--mode stream")


def choose_mode(checkpoint: str, asked: str | None, recorded: str | None) -> tuple[str, str | None]:
    """(mode, note): the asked mode, else the recorded one, else paper; a note where the asked mode
    is not the recorded one, or where none is recorded and none asked."""
    if asked is None and recorded is not None:
        return recorded, None
    if asked is None:
        return "paper", (f"{checkpoint} records no packing mode (a model from elsewhere, or an export from before it "
                         "was kept): paper mode (BOS first) is used; a model trained without BOS/EOS, such as the "
                         "released LVM 7B, wants --stream")
    if recorded is not None and asked != recorded:
        return asked, (f"{checkpoint} was trained in {recorded} mode ({_describe(recorded)}), but --mode {asked} "
                       f"({_describe(asked)}) was asked: done as asked, though the model never saw its sequences "
                       f"so packed; leave --mode out for its own")
    return asked, None


def _describe(mode: str) -> str:
    return "BOS before each sentence" if mode == "paper" else "no BOS"
