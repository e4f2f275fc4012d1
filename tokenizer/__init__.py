"""The VQGAN tokenizer, compatible with the released LVM checkpoints (open-muse `VQGANModel`).

- `config`: `VQGANConfig` (muse `config.json` keys) and the `lvm` / `tiny` presets
- `model`: the network, state-dict names as released
- `checkpoint`: `load` / `save` in muse format, `weights_hash` for provenance
- `codec`: `Tokenizer`, batched uint8 images <-> uint16 codes
- `fit`, `evaluate`: `python -m tokenizer.fit` / `python -m tokenizer.evaluate`

Names below are imported lazily so `import tokenizer` stays cheap (no torch until used).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "VQGANConfig": "config", "preset": "config", "LVM": "config", "TINY": "config",
    "VQGAN": "model", "build": "model",
    "load": "checkpoint", "save": "checkpoint", "weights_hash": "checkpoint", "CheckpointError": "checkpoint",
    "Tokenizer": "codec", "code_agreement": "codec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
