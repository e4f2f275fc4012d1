"""The VQGAN config: open-muse `config.json` keys, so the released LVM tokenizer loads as-is.

The released "vqgan-f16-8192-laion" folder holds a `config.json` written by open-muse's
`ConfigMixin`: the constructor arguments of `VQGANModel` plus bookkeeping keys that start with
an underscore (`_class_name`, `_version`, ...). We read that file unchanged. Keys that would
change the architecture and that we do not model are refused by name rather than ignored, so a
different checkpoint can never load into the wrong network silently.

Two keys are ours: `codebook_l2_norm` (LlamaGen-style cosine lookup over l2-normalised codes, for
training new tokenizers) and `decoder_level` (the decoder carries each image's colour level past
its last GroupNorm). They are written only when set, so an LVM config round-trips unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from dataclasses import dataclass, field
from typing import Any, Mapping

# open-muse constructor arguments we accept only at their "off" value (None): they describe
# decoder variants the released tokenizer does not use.
_MUSE_OPTIONAL_NULL_KEYS = (
    "decoder_res_blocks",
    "extra_mid_res_blocks",
    "decoder_hidden_channels",
    "decoder_channel_mult",
)
# Keys that carry no structure (file bookkeeping written by diffusers/muse-style ConfigMixin).
_IGNORED_KEYS = ("name_or_path",)


# A config.json, ours or Hugging Face's, is a few KB (the largest, label maps of 21k classes, under
# 1 MB): 4 MiB is far above any real one and far below what could hurt when read whole.
CONFIG_MAX_BYTES = 4 << 20
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket"))


def not_a_file(mode: int) -> str | None:
    """What a path of `st_mode` `mode` is when it is no regular file ('a pipe', ...), else None: a
    pipe blocks its reader forever, a device reads without end."""
    return next((name for test, name in _KINDS if test(mode)), None)


class JSONFileRefused(ValueError):
    """A JSON file refused from what the file system says of it (kind, size), before it is read;
    `reason` is the message without the path, for a caller that names the file its own way."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.reason = reason
        super().__init__(f"{os.fspath(path)}: {reason}")


def read_json(path: str | os.PathLike[str], max_bytes: int = CONFIG_MAX_BYTES, what: str = "a config.json",
              usual: str = "real ones are a few KB") -> Any:
    """The JSON value of the file `path`, judged before it is read: a file other than a regular one
    (/dev/zero, a pipe: endless) or of more than `max_bytes` is refused in one line naming it; at most
    `max_bytes` are read (a file that grows meanwhile, a /proc file that says 0, stop there).
    OSError for a file that cannot be opened; json's ValueError for one that is no JSON."""
    info = os.stat(path)
    kind = not_a_file(info.st_mode)
    if kind:
        raise JSONFileRefused(path, f"{kind}, not a file; pass {what} file itself")
    data = b""
    if info.st_size <= max_bytes:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    if max(info.st_size, len(data)) > max_bytes:
        raise JSONFileRefused(path, f"{max(info.st_size, len(data))} bytes, more than the {max_bytes >> 20} MiB "
                                    f"{what} may have ({usual}): not {what}; pass the right file")
    return json.loads(data)


# codes a uint16 token can hold: token shards store uint16 codes (`uvd_pipeline.shards.TOKEN_DTYPE_CODES`)
TOKEN_CODES = 1 << 16


def codebook_problem(num_embeddings: int) -> str | None:
    """Why a tokenizer of this codebook cannot make tokens (None when it can): the build's words
    (`uvd_pipeline.build_checks.tokenizer_fits`) and `tokenizer.evaluate`'s."""
    if num_embeddings > TOKEN_CODES:
        return (f"its codebook holds {num_embeddings} codes; token shards store uint16 codes "
                f"(at most {TOKEN_CODES}): use a tokenizer with a smaller codebook")
    return None


class UsageError(ValueError):
    """A run refused for what its user gave it (a flag, or a file or folder a flag names): the
    command lines of `tokenizer.fit` and `tokenizer.evaluate` print it as one `error:` line and
    exit 2. Any other exception, a `ValueError` from deep in training included, is a bug and keeps
    its traceback."""


# Sanity bounds on what a config may declare (the released LVM tokenizer: 256 px, 128 hidden
# channels, 768 at its widest level, 2 blocks per level, 5 levels, 8192 codes of 64 dims).
LIMITS: dict[str, int] = {
    "resolution": 16384,
    "num_channels": 64,
    "hidden_channels": 8192,
    "channels": 16384,  # hidden_channels * max(channel_mult)
    "channel_mult": 12,  # levels: a downsampling factor of up to 2 ** 11
    "num_res_blocks": 64,
    "z_channels": 16384,
    "quantized_embed_dim": 16384,
    "num_embeddings": 2**22,
}


@dataclass(frozen=True)
class VQGANConfig:
    """Architecture of an open-muse `VQGANModel` (taming VQGAN, pixels in [0, 1])."""

    resolution: int = 256
    num_channels: int = 3
    hidden_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 4, 6)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    no_attn_mid_block: bool = True
    z_channels: int = 64
    quantized_embed_dim: int = 64
    num_embeddings: int = 8192
    commitment_cost: float = 0.25
    dropout: float = 0.0
    resample_with_conv: bool = True
    # Ours, not open-muse: cosine lookup over l2-normalised codes (training new tokenizers).
    codebook_l2_norm: bool = field(default=False, metadata={"extension": True})
    # Ours: the decoder adds a per-image, per-channel level to its output (`model.Decoder`), because
    # its last GroupNorm removes each image's level; with one channel per group (`tiny`) nothing of
    # an image's mean colour would otherwise survive to `conv_out` but what texture carries.
    decoder_level: bool = field(default=False, metadata={"extension": True})

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        object.__setattr__(self, "attn_resolutions", tuple(self.attn_resolutions))
        self._validate()

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def num_resolutions(self) -> int:
        return len(self.channel_mult)

    @property
    def downsample_factor(self) -> int:
        """Pixels per token side: 2 ** (levels - 1), 16 for the LVM tokenizer."""
        return 2 ** (self.num_resolutions - 1)

    @property
    def latent_size(self) -> int:
        return self.resolution // self.downsample_factor

    @property
    def tokens_per_image(self) -> int:
        return self.latent_size**2

    # -- validation ----------------------------------------------------------------------------
    def _validate(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"config key {name!r} must be a positive integer, got {value!r}")

        for name in ("resolution", "num_channels", "hidden_channels", "num_res_blocks", "z_channels",
                     "quantized_embed_dim", "num_embeddings"):
            positive_int(name)
        if not self.channel_mult or any(isinstance(m, bool) or not isinstance(m, int) or m <= 0
                                        for m in self.channel_mult):
            raise ValueError(f"config key 'channel_mult' must be a non-empty list of positive integers, "
                             f"got {list(self.channel_mult)!r}")
        self._check_limits()
        if self.attn_resolutions:
            raise ValueError(f"config key 'attn_resolutions' is {list(self.attn_resolutions)}: attention "
                             "blocks are not implemented (the released LVM tokenizer has none); use []")
        if self.no_attn_mid_block is not True:
            raise ValueError("config key 'no_attn_mid_block' must be true: the mid-block attention is not "
                             "implemented (the released LVM tokenizer has none)")
        for name in ("resample_with_conv", "codebook_l2_norm", "decoder_level"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"config key {name!r} must be true or false, got {getattr(self, name)!r}")
        for name in ("commitment_cost", "dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"config key {name!r} must be a non-negative number, got {value!r}")
        if self.dropout >= 1:
            raise ValueError(f"config key 'dropout' must be below 1, got {self.dropout}")
        if self.resolution % self.downsample_factor:
            raise ValueError(f"resolution {self.resolution} is not a multiple of the downsampling factor "
                             f"{self.downsample_factor} (2 ** (len(channel_mult) - 1))")

    def _check_limits(self) -> None:
        """Refuse sizes far beyond any VQGAN: a few bytes of config must not cost minutes or
        gigabytes (a loader builds what the config declares once the file's tensors fit it)."""
        widest = self.hidden_channels * max(self.channel_mult)
        sizes = {name: (f"config key {name!r} = {getattr(self, name)}", getattr(self, name))
                 for name in LIMITS if name not in ("channel_mult", "channels")}
        sizes["channel_mult"] = (f"config key 'channel_mult' has {len(self.channel_mult)} levels, which",
                                 len(self.channel_mult))
        sizes["channels"] = (f"the widest level's channels, hidden_channels * max(channel_mult) = {widest},", widest)
        for name, (what, value) in sizes.items():
            if value > LIMITS[name]:
                raise ValueError(f"{what} is more than {LIMITS[name]}, far beyond any VQGAN "
                                 "(a sanity bound: tokenizer/config.py LIMITS)")

    # -- JSON ----------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "VQGANConfig":
        """Build from a muse-style mapping; `_*` bookkeeping keys are ignored, unknown keys refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        unknown: list[str] = []
        for key, value in values.items():
            if key.startswith("_") or key in _IGNORED_KEYS:
                continue
            if key in _MUSE_OPTIONAL_NULL_KEYS:
                if value is not None:
                    raise ValueError(f"config key {key!r} = {value!r} is an open-muse decoder variant this "
                                     "implementation does not support (only null)")
                continue
            if key in known:
                kwargs[key] = value
            else:
                unknown.append(key)
        if unknown:
            raise ValueError(f"unknown config key(s) {sorted(unknown)}: they may change the architecture, "
                             f"so they are refused rather than ignored (known keys: {sorted(known)})")
        for key in ("channel_mult", "attn_resolutions"):
            if key in kwargs and not isinstance(kwargs[key], (list, tuple)):
                raise ValueError(f"config key {key!r} must be a list, got {kwargs[key]!r}")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The muse `config.json` content; our extension keys only when they differ from default."""
        out: dict[str, Any] = {"_class_name": "VQGANModel"}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("extension") and value == f.default:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, source: str | os.PathLike[str] | Mapping[str, Any]) -> "VQGANConfig":
        """Read a config from a `config.json` path, a folder holding one, a JSON string or a dict."""
        if isinstance(source, Mapping):
            return cls.from_dict(source)
        text = str(source)
        if text.lstrip().startswith("{"):
            return cls.from_dict(json.loads(text))
        path = os.path.join(text, "config.json") if os.path.isdir(text) else text
        try:
            values = read_json(path)
        except JSONFileRefused:
            raise
        except ValueError as exc:  # not JSON, or not UTF-8/16/32 text
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(values).__name__}")
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from None

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """The config as muse JSON text; also written to `path` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"
        if path is not None:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
        return text


# The released LVM tokenizer ("vqgan-f16-8192-laion"): ~146M parameters.
LVM = VQGANConfig()

# A small f16 tokenizer for CPU: tests, the embedded sample build, quick experiments. Same
# token grid (16x16 at 256 px) and codebook size as LVM, so token streams stay LM-compatible;
# 8-dim l2-normalised codes (LlamaGen) because plain VQ collapses when trained from scratch.
TINY = VQGANConfig(
    hidden_channels=32,
    channel_mult=(1, 1, 2, 2, 4),
    num_res_blocks=1,
    z_channels=32,
    quantized_embed_dim=8,
    num_embeddings=8192,
    codebook_l2_norm=True,
)

# `tiny` with 1024 codes: for CPU runs whose batches are too small (a few hundred latent vectors a
# step) to keep an 8192-code book alive. The embedded tokenizer used it until its colours proved too
# coarse; it is `tiny` now, trained with dead-code restarts over 25,000+ vectors (`make tokenizer`).
TINY1K = dataclasses.replace(TINY, num_embeddings=1024)

PRESETS: dict[str, VQGANConfig] = {"lvm": LVM, "tiny": TINY, "tiny1k": TINY1K}


def preset(name: str) -> VQGANConfig:
    """A named preset (`lvm` or `tiny`)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
