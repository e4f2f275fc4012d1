"""Model configuration and size presets of the LVM transformer (`../shared/LVM_FACTS.md`).

The field names follow Hugging Face `LlamaConfig`, so a config moves to and from
`config.json` of a `LlamaForCausalLM` without a translation table.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from tokenizer.config import read_json

# Language-model vocabulary: 8192 VQ codes, then 100 special ids.
CODEBOOK_SIZE = 8192
VOCAB_SIZE = 8292
BOS_ID = 8192
EOS_ID = 8193
PAD_ID = 8194
TOKENS_PER_IMAGE = 256


class UsageError(ValueError):
    """A run refused for what its user gave it (a flag, or a file or folder a flag names: token
    shards, a mixture file, a prompt image): the command lines of `trainer.fit`, `trainer.evaluate`
    and `trainer.generate` print it, and a `CheckpointError` (`trainer.integrity`), as one `error:`
    line and exit 2. Any other exception, a `ValueError` from deep in training, evaluation or
    generation included, is a bug and keeps its traceback."""


# Sanity bounds, far beyond any LLaMA (Llama 3 405B: 126 layers, hidden 16384, MLP 53248, 128
# heads): a config.json of a few bytes must not drive minutes of work or gigabytes of memory.
LIMITS: dict[str, int] = {
    "vocab_size": 2**24,
    "hidden_size": 2**17,
    "intermediate_size": 2**19,
    "num_attention_heads": 2**12,
    "num_key_value_heads": 2**12,
    "num_hidden_layers": 1024,
    "max_position_embeddings": 2**24,
}


def _check_int(name: str, value: Any) -> None:
    """A positive integer within `LIMITS` (JSON's true/false and 128.0 or "128" are refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"field {name!r} = {value!r}: must be a positive integer, not {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"field {name!r} = {value}: must be a positive integer")
    if value > LIMITS[name]:
        raise ValueError(f"field {name!r} = {value}: more than {LIMITS[name]}, far beyond any LLaMA "
                         "(a sanity bound: trainer/config.py LIMITS)")


def _check_number(name: str, value: Any, positive: bool) -> None:
    """A finite real number, > 0 (`positive`) or >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"field {name!r} = {value!r}: must be a finite number")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"field {name!r} = {value}: must be {'positive' if positive else 'at least 0'}")


@dataclass(frozen=True)
class ModelConfig:
    """A LLaMA decoder: RMSNorm, RoPE, SwiGLU, untied embeddings, no biases."""

    vocab_size: int = VOCAB_SIZE
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_attention_heads: int = 32
    num_hidden_layers: int = 32
    num_key_value_heads: int | None = None
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        # Types and ranges first: the divisibility checks below would divide by zero or format a
        # string. Each message names the config.json field.
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers",
                     "max_position_embeddings"):
            _check_int(name, getattr(self, name))
        if self.num_key_value_heads is not None:
            _check_int("num_key_value_heads", self.num_key_value_heads)
        for name in ("rms_norm_eps", "rope_theta"):
            _check_number(name, getattr(self, name), positive=True)
        _check_number("initializer_range", self.initializer_range, positive=False)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"field 'hidden_size' = {self.hidden_size}: not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.head_dim % 2:
            raise ValueError(f"field 'num_attention_heads' = {self.num_attention_heads}: head_dim "
                             f"{self.head_dim} (hidden_size / num_attention_heads) must be even for RoPE")
        if self.num_attention_heads % self.kv_heads:
            raise ValueError(f"field 'num_key_value_heads' = {self.kv_heads}: num_attention_heads "
                             f"{self.num_attention_heads} is not a multiple of it")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    def num_parameters(self) -> int:
        """Exact parameter count (embeddings and output layer included)."""
        h, m, layers = self.hidden_size, self.intermediate_size, self.num_hidden_layers
        kv = self.kv_heads * self.head_dim
        attention = h * h * 2 + h * kv * 2
        per_layer = attention + 3 * h * m + 2 * h
        return 2 * self.vocab_size * h + layers * per_layer + h

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward), PaLM-style: 6N + 12 L h T."""
        return 6.0 * self.num_parameters() + 12.0 * self.num_hidden_layers * self.hidden_size * seq_len

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        """Accepts our own dict or an HF LlamaConfig dict (extra HF keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in values.items() if k in names}
        if kept.get("num_key_value_heads") == values.get("num_attention_heads"):
            kept["num_key_value_heads"] = None
        return cls(**kept)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "ModelConfig":
        file = os.path.join(path, "config.json") if os.path.isdir(path) else str(path)
        return cls.from_dict(read_json(file))  # judged from its size first


def _preset(hidden: int, mlp: int, heads: int, layers: int) -> ModelConfig:
    return ModelConfig(hidden_size=hidden, intermediate_size=mlp, num_attention_heads=heads,
                       num_hidden_layers=layers)


# Paper sizes (hidden / MLP / heads / layers), the released code's 100M, and small CPU presets.
PRESETS: dict[str, ModelConfig] = {
    "tiny": _preset(128, 352, 4, 2),
    "small": _preset(256, 688, 4, 4),
    "100m": _preset(640, 1664, 10, 22),
    "300m": _preset(1024, 2688, 8, 22),
    "600m": _preset(1536, 4096, 16, 22),
    "1b": _preset(2048, 5504, 16, 22),
    "3b": _preset(3200, 8640, 32, 26),
    "7b": _preset(4096, 11008, 32, 32),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A named size preset, optionally with fields replaced (e.g. max_position_embeddings)."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown model preset {name!r}; choose from {', '.join(PRESETS)}") from None
    return dataclasses.replace(base, **overrides) if overrides else base
