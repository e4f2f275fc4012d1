"""Model checkpoints on disk: one format, the Hugging Face `LlamaForCausalLM` folder.

Our parameter names are HF's (see `model.py`), so our checkpoint *is* an HF folder: `config.json`
(an HF LlamaConfig dict) + `model.safetensors`, or shards `model-0000i-of-0000N.safetensors` with
`model.safetensors.index.json`. Reading also accepts `pytorch_model.bin` (sharded or not) and the
fit loop's `model.pt`, both loaded with `weights_only=True` (never unpickling code), and a run's
output folder (its newest `checkpoints/step-*`). `save_pretrained` / `load_pretrained` are the
public pair the fit loop and the CLIs use; `interop.py` streams whole folders through the same
readers and writer without building a model.

Why streaming and meta-device construction: the released 7B is 13.5 GB of fp16 shards. Loading
builds the model on the meta device (no random init), allocates it once in the asked dtype, and
copies tensors in one at a time; a mismatch is found from the file headers before any copy.
Writes go to a temporary folder that is sealed with a manifest of sizes and digests and renamed
into place (`integrity.py`), so a reader never sees half a checkpoint; reads check the config,
index and weight files against that manifest first, and every read error names its file.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from tokenizer.atomic import new_file_mode
from tokenizer.config import JSONFileRefused, read_json
from tokenizer.finite import non_finite_count, non_finite_phrase, not_dense

from .config import BOS_ID, EOS_ID, PAD_ID, ModelConfig, UsageError
from .integrity import (
    CheckpointDamaged,
    CheckpointError,
    reading,
    sealed_folder,
    verify_folder,
)
from .model import LVMTransformer, state_shapes
from .run_layout import CHECKPOINTS, STATE_NAME, is_step_folder, latest_checkpoint, verify_checkpoint

CONFIG_NAME = "config.json"
SAFE_NAME = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_NAME = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
FIT_NAME = "model.pt"  # the fit loop's step folders (`trainer.checkpoint`): a plain fp32 state dict
DEFAULT_SHARD_SIZE = "5GB"
# Buffers older transformers versions saved; RoPE tables are computed, never loaded.
IGNORED_KEYS = re.compile(r"(^|\.)rotary_emb\.inv_freq$")
_SHOW = 5

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}
LOADED_DTYPES = ("float64", "float32", "float16", "bfloat16")  # tensor dtypes a weight file may store
# safetensors' dtype names -> torch's, so a message names a dtype one way whatever the file
SAFE_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
               "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
               "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def parse_dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    """'float16' / 'bf16' / torch.float32 -> torch.dtype; None or 'auto' -> None (keep the file's)."""
    if value is None or isinstance(value, torch.dtype):
        return value
    if value == "auto":
        return None
    try:
        return DTYPES[value]
    except KeyError:
        raise UsageError(f"unknown dtype {value!r}; choose from auto, {', '.join(sorted(set(DTYPES)))}") from None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def parse_size(value: int | str) -> int:
    """Bytes from 123, '500MB' (powers of 1000, as HF) or '2GiB' (powers of 1024)."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*", value, re.IGNORECASE)
    if not match:
        raise UsageError(f"max shard size {value!r}: cannot read it; write e.g. 5GB, 500MB or 2GiB")
    unit = (match.group(2) or "B").upper()
    base = 1024 if "I" in unit else 1000
    power = "BKMGT".index(unit[0]) if unit != "B" else 0
    return int(float(match.group(1)) * base ** power)


# A shard index lists each tensor once, 90-97 bytes an entry as HF writes them: DeepSeek-V3's 91.8k
# tensors take 8.5 MiB, a GPTQ Kimi-K2's 279k 24.1 MiB. 32 MiB allows ~350k, and parses into a few
# hundred MB at most.
INDEX_MAX_BYTES = 32 << 20
INDEX_USUAL = "the largest real ones, ~280k tensors, take about 24 MiB"


def json_file(path: Path, **bounds: Any) -> Any:
    """`tokenizer.config.read_json(path, **bounds)` in the checkpoint's errors: a file refused from
    its kind or size is a `CheckpointError` naming it, one that cannot be read or parsed `CheckpointDamaged`."""
    with reading(path):
        try:
            return read_json(path, **bounds)
        except JSONFileRefused as exc:
            raise CheckpointError(str(exc)) from None


# -- config ----------------------------------------------------------------------------------
def resolve_folder(folder: str | os.PathLike[str]) -> Path:
    """A model folder itself, or for a fit run's output folder its newest complete step folder."""
    root = Path(folder)
    if not root.is_dir():  # a typo or a weights file: said as such, not as a folder without weights
        what = "is a file; give the folder that holds it" if root.exists() else "does not exist; give a model folder"
        raise CheckpointError(f"{folder} {what} (ours, a fit run's --out, or a Hugging Face Llama folder)")
    if not (root / CONFIG_NAME).is_file() and (root / CHECKPOINTS).is_dir():
        newest = latest_checkpoint(str(root))
        if newest is None:
            raise CheckpointError(f"{folder}: a run folder without a complete checkpoint under {CHECKPOINTS}/")
        return Path(newest)
    return root


def read_config(folder: str | os.PathLike[str]) -> tuple[ModelConfig, dict[str, Any]]:
    """Our config from `config.json` (ours or HF's), refusing what our LLaMA cannot represent.

    Returns the config and the raw dict (for `tie_word_embeddings` and `torch_dtype`)."""
    path = Path(folder) / CONFIG_NAME
    if not path.exists():
        raise CheckpointError(f"{folder}: no {CONFIG_NAME}; expected a model folder with {CONFIG_NAME} "
                              f"and {SAFE_NAME} (or {SAFE_INDEX}, {BIN_NAME})")
    raw = json_file(path)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    return config_from_dict(raw, str(path)), raw


PROVENANCE = "uvd_provenance"  # config.json key of an export's origin (`interop.convert`)


def recorded_tokenizer(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The tokenizer a model folder says it was trained on (name, hash, codebook_size,
    tokens_per_image), or None where it records none: a fit step folder's `state.json` holds it
    in its data fingerprint (fits from before it was recorded lack it), an `interop export` of one
    keeps it in config.json's `uvd_provenance`; an HF download (the released LVM 7B) has neither.
    `state.json` is checked against the folder's manifest before it is read."""
    root = resolve_folder(folder)
    if is_step_folder(root):
        verify_checkpoint(root, [STATE_NAME])
        state = json_file(root / STATE_NAME)
        fingerprint = ((state.get("data") or {}).get("fingerprint") or {}) if isinstance(state, dict) else {}
        found = fingerprint.get("tokenizer")
    else:
        raw = json_file(root / CONFIG_NAME) if (root / CONFIG_NAME).is_file() else {}
        found = (raw.get(PROVENANCE) or {}).get("tokenizer") if isinstance(raw, dict) else None
    return dict(found) if isinstance(found, Mapping) else None


def config_from_dict(raw: Mapping[str, Any], source: str = "config") -> ModelConfig:
    """Validate an HF LlamaConfig dict field by field and turn it into a `ModelConfig`."""
    def refuse(field: str, why: str) -> CheckpointError:
        return CheckpointError(f"{source}: field {field!r} = {raw.get(field)!r}: {why}")

    if raw.get("model_type", "llama") != "llama":
        raise refuse("model_type", "only llama checkpoints are supported")
    if raw.get("hidden_act", "silu") != "silu":
        raise refuse("hidden_act", "our MLP is SwiGLU (silu)")
    for field in ("attention_bias", "mlp_bias"):
        if raw.get(field, False):
            raise refuse(field, "our projections have no biases")
    if not isinstance(raw.get("tie_word_embeddings", False), bool):
        raise refuse("tie_word_embeddings", "must be true or false")
    if raw.get("pretraining_tp", 1) not in (1, None):
        raise refuse("pretraining_tp", "tensor-parallel slicing of the forward is not supported")
    values = dict(raw)
    rope = raw.get("rope_parameters") or {}
    scaling = raw.get("rope_scaling") or {}
    for field, spec in (("rope_parameters", rope), ("rope_scaling", scaling)):
        kind = spec.get("rope_type", spec.get("type", "default")) if isinstance(spec, Mapping) else spec
        if kind not in ("default", None):
            raise refuse(field, "only plain RoPE (rope_type default) is supported")
    if "rope_theta" not in values and isinstance(rope, Mapping) and "rope_theta" in rope:
        values["rope_theta"] = rope["rope_theta"]
    try:
        config = ModelConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    head_dim = raw.get("head_dim")
    if head_dim not in (None, config.head_dim):
        raise refuse("head_dim", f"must be hidden_size / num_attention_heads = {config.head_dim}")
    return config


def hf_config_dict(config: ModelConfig, dtype: torch.dtype) -> dict[str, Any]:
    """The `config.json` of a `LlamaForCausalLM` equal to our model (new and old transformers keys)."""
    values = config.to_dict()
    values["num_key_value_heads"] = config.kv_heads
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **values,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "tie_word_embeddings": False,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "use_cache": True,
        "torch_dtype": dtype_name(dtype),
    }


# -- reading tensors -------------------------------------------------------------------------
def read_index(index: Path) -> dict[str, str]:
    """Tensor name -> shard file name, from a shard index (bounded, each name a file in its folder)."""
    raw = json_file(index, max_bytes=INDEX_MAX_BYTES, what="a shard index", usual=INDEX_USUAL)
    if not isinstance(raw, Mapping) or not isinstance(raw.get("weight_map"), Mapping):
        raise CheckpointError(f"{index}: not a shard index with a 'weight_map'")
    _shard_names(index, raw["weight_map"])
    return dict(raw["weight_map"])


@dataclass(frozen=True)
class WeightFiles:
    """A folder's weight files in read order and, for a sharded folder, its index (path, tensor
    name -> file name): found and parsed once per load, then handed to each step that needs them."""
    files: list[Path]
    index: Path | None = None
    weight_map: dict[str, str] | None = None


# transformers' order (modeling_utils): a download of one format from a repo shipping both
# (`--include "*.safetensors" "*.json"`) holds the other's index without its shards, never read
WEIGHT_NAMES = (SAFE_NAME, SAFE_INDEX, BIN_NAME, BIN_INDEX, FIT_NAME)


def weight_files(folder: str | os.PathLike[str]) -> WeightFiles:
    """The weight files of a checkpoint folder: the first of `WEIGHT_NAMES` there."""
    root = Path(folder)
    for name in WEIGHT_NAMES:
        path = root / name
        if name in (SAFE_INDEX, BIN_INDEX):
            if path.exists():  # not is_file(): a folder or pipe in its place is refused by its kind
                return _sharded(path)
        elif path.is_file():
            return WeightFiles([path])
    raise CheckpointError(f"{folder}: no weights; expected {SAFE_NAME}, {SAFE_INDEX}, {BIN_NAME}, {BIN_INDEX} "
                          f"or {FIT_NAME}")


def _sharded(index: Path) -> WeightFiles:
    """The shards an index names, each there, with its weight map."""
    weight_map = read_index(index)
    files = [index.parent / name for name in dict.fromkeys(weight_map.values())]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"{index} names shard files that are not there: {_preview(missing)}")
    return WeightFiles(files, index, weight_map)


def _shard_names(index: Path, weight_map: Mapping[str, Any]) -> list[str]:
    """The shard file names of an index, each a plain name inside the checkpoint folder (as HF
    writes them): a name with a folder part, absolute or `..`, would read a file elsewhere."""
    names = list(weight_map.values())
    odd = [repr(n) for n in names if not isinstance(n, str) or n in ("", ".", "..")
           or os.path.basename(n) != n or "\\" in n or os.path.isabs(n)]
    if odd:
        raise CheckpointError(f"{index}: 'weight_map' must name shard files inside the checkpoint folder "
                              f"(plain file names, as Hugging Face writes them), not {_preview(list(dict.fromkeys(odd)))}")
    return names


def check_weight_file(path: str | os.PathLike[str]) -> None:
    """Refuse, naming it, a weight file that is a Git LFS pointer or whose zip records would make
    `torch.load` allocate more than the file holds (`tokenizer.checkpoint.weight_file_problem`):
    judged from its first bytes and directory, before a reader decodes it."""
    from tokenizer.checkpoint import weight_file_problem

    problem = weight_file_problem(path)
    if problem:
        raise CheckpointDamaged(path, problem)


def read_torch_file(path: str | os.PathLike[str], mmap: bool = False, map_location: str | torch.device = "cpu",
                    state_dict: bool = False, head: bytes | None = None) -> Any:
    """`tokenizer.checkpoint.read_weights` (or `read_state_dict`) in the trainer's errors: a file
    whose bytes are no weights file is `CheckpointDamaged`, one that holds the wrong thing (a
    Lightning .ckpt in place of its state dict) a `CheckpointError`; both name the file and the fix.
    `head`: the file's `tokenizer.checkpoint.file_head`, where the caller read it."""
    from tokenizer.checkpoint import WeightsFileError, read_state_dict, read_weights

    try:
        return (read_state_dict(path, mmap=mmap, head=head) if state_dict
                else read_weights(path, map_location, mmap=mmap, head=head))
    except WeightsFileError as exc:
        raise (CheckpointDamaged(exc.path, exc.reason) if exc.unreadable else CheckpointError(str(exc))) from None


def _load_bin(path: Path, head: bytes | None = None) -> dict[str, torch.Tensor]:
    state = read_torch_file(path, mmap=True, state_dict=True, head=head)
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: values that are not tensors: {_preview(bad)}")
    return state


FileIdentity = tuple[int, int, int]  # (st_ino, st_size, st_mtime_ns)
REWRITTEN = "changed while being read (rewritten in place); load again once it is complete"


def _identity(status: os.stat_result) -> FileIdentity:
    return status.st_ino, status.st_size, status.st_mtime_ns


@dataclass
class BinShard:
    """A .bin file's state dict and, when its tensors map the file (a zip-format torch file), the
    identity of the file mapped: one truncated in place while mapped kills the process (SIGBUS) at
    the first touch of a page past its new end, one rewritten in place gives other bytes."""
    state: dict[str, torch.Tensor]
    identity: FileIdentity | None  # None: read into memory (a legacy pickle), nothing mapped


def _read_bin(path: Path) -> BinShard:
    """`_load_bin(path)` with the identity of the file mapped: the path is stat'ed before and after
    (its first bytes read only when that stat says it is a regular file: a named pipe there would
    block the open before the weights-file check refuses it), and a file changed or replaced
    meanwhile is refused, since which one was mapped cannot be told. The first bytes, read once,
    tell the reader what the file is and this whether its tensors map it."""
    from tokenizer.checkpoint import file_head, mappable

    with reading(path):
        status = os.stat(path)
        head = file_head(path, status)
        state = _load_bin(path, head)
        if _identity(os.stat(path)) != _identity(status):
            raise CheckpointDamaged(path, REWRITTEN)
    return BinShard(state, _identity(status) if mappable(head) else None)


def _check_unchanged(path: Path, shard: BinShard) -> None:
    """Refuse a mapped file truncated or rewritten in place (same inode, other size or mtime) before
    its pages are touched; one replaced by rename (a new inode at the path) or removed leaves the
    mapped file whole, and it is streamed as it was checked."""
    if shard.identity is None:
        return
    try:
        now = _identity(os.stat(path))
    except FileNotFoundError:
        return
    if now[0] == shard.identity[0] and now != shard.identity:
        raise CheckpointDamaged(path, REWRITTEN)


@dataclass(frozen=True)
class Stored:
    """What a weight file says of one tensor before it is read: shape, dtype (torch's name), file."""
    shape: tuple[int, ...]
    dtype: str
    path: Path


@contextmanager
def _reading_safetensors(path: Path) -> Iterator[None]:
    """`reading`, with the safetensors reader's own refusals kept in its words."""
    from tokenizer.safetensors_file import SafetensorsFileError

    with reading(path):
        try:
            yield
        except SafetensorsFileError as exc:
            raise CheckpointDamaged(path, exc.reason) from None


def _headers(path: Path) -> list[tuple[str, Stored]]:
    """(name, Stored) of every tensor in one safetensors file, from its header (judged against the
    file's size: `tokenizer.safetensors_file`)."""
    from tokenizer.safetensors_file import read_header

    check_weight_file(path)
    with _reading_safetensors(path):
        return [(s.name, Stored(s.shape, SAFE_DTYPES.get(s.dtype, s.dtype), path)) for s in read_header(path)]


def stored_tensors(weights: WeightFiles, folder: str | os.PathLike[str]
                   ) -> tuple[dict[str, Stored], dict[Path, BinShard]]:
    """Name -> `Stored` of every tensor of a folder, from the file headers (a .bin's pickle holds
    the same facts: its state dict is loaded, memory-mapped), refusing a tensor held by two files
    (which copy is the model's is not knowable) and an index that disagrees with them. Also the
    loaded .bin state dicts, so the stream reads each file once; a legacy (unmappable) .bin among
    several is let go and read again, so memory stays one shard, not the whole model."""
    stored: dict[str, Stored] = {}
    kept: dict[Path, BinShard] = {}
    for path in weights.files:
        if path.suffix == ".safetensors":
            entries = _headers(path)
        else:
            shard = _read_bin(path)
            sparse = not_dense(shard.state)
            if sparse:  # its finite check had no kernel for it: a traceback
                raise CheckpointError(f"{path}: tensors not stored dense: {_preview(sparse)} (store them with "
                                      ".to_dense())")
            entries = [(k, Stored(tuple(v.shape), dtype_name(v.dtype), path)) for k, v in shard.state.items()]
            if len(weights.files) == 1 or shard.identity is not None:
                kept[path] = shard
        for key, entry in entries:
            if key in stored:
                raise CheckpointError(f"{folder}: {key} is stored twice, in {stored[key].path.name} and {path.name}: "
                                      "which copy is the model's cannot be told")
            stored[key] = entry
    _check_index(weights, stored)
    return stored, kept


def _check_index(weights: WeightFiles, stored: Mapping[str, Stored]) -> None:
    """The index is the folder's table of contents: each tensor it names is in the file it names,
    and each stored tensor is named (a shard from another download breaks both)."""
    if weights.weight_map is None:
        return
    problems = []
    for key, name in weights.weight_map.items():
        entry = stored.get(key)
        if entry is None or entry.path.name != name:
            where = f" (it is in {entry.path.name})" if entry is not None else ""
            problems.append(f"it puts {key} in {name}, which does not hold it{where}")
    problems += [f"it does not name {key}, stored in {entry.path.name}"
                 for key, entry in stored.items() if key not in weights.weight_map]
    if problems:
        more = f"; ... ({len(problems)} in all)" if len(problems) > _SHOW else ""
        raise CheckpointError(f"{weights.index}: " + "; ".join(problems[:_SHOW]) + more)


def check_dtypes(stored: Mapping[str, Stored]) -> None:
    """Refuse tensors stored in a dtype other than those we load (integers, booleans, 8-bit
    floats whose scales we do not apply): a copy into the model would convert them silently."""
    bad = [(key, entry) for key, entry in stored.items()
           if entry.dtype not in LOADED_DTYPES and not IGNORED_KEYS.search(key)]
    if bad:
        path = bad[0][1].path
        names = [f"{key} ({entry.dtype})" for key, entry in bad if entry.path == path]
        raise CheckpointError(f"{path}: tensors in a dtype we do not load: {_preview(names)} "
                              f"(we load {', '.join(LOADED_DTYPES[:-1])} or {LOADED_DTYPES[-1]})")


def iter_tensors(weights: WeightFiles, kept: dict[Path, BinShard] | None = None
                 ) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every stored tensor, one file open at a time (memory stays flat); a .bin
    in `kept` (from `stored_tensors`) is not read again, and is let go tensor by tensor. A mapped
    .bin is checked unchanged before each tensor (a stat), so one rewritten in place since it was
    read is refused in words rather than crashing the process at the first touch of its pages."""
    from tokenizer.safetensors_file import iter_tensors as safetensors_tensors

    kept = {} if kept is None else kept
    for path in weights.files:
        if path.suffix == ".safetensors":  # read, not mapped: a file cut meanwhile is refused, not a SIGBUS
            with _reading_safetensors(path):
                yield from safetensors_tensors(path)
        else:
            shard = kept.pop(path, None) or _read_bin(path)
            for key in list(shard.state):
                _check_unchanged(path, shard)
                yield key, shard.state.pop(key)


def _preview(items: list[str]) -> str:
    head = ", ".join(items[:_SHOW])
    return f"{head}, ... ({len(items)} in all)" if len(items) > _SHOW else head


def check_shapes(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]],
                 source: str, tied: bool = False) -> None:
    """Raise `CheckpointError` naming missing / unexpected keys and differing shapes."""
    from tokenizer.checkpoint import shape_problems

    found = {k: v for k, v in found.items() if not IGNORED_KEYS.search(k)}
    if tied and "lm_head.weight" not in found:
        expected = {k: v for k, v in expected.items() if k != "lm_head.weight"}
    problems = shape_problems(expected, found)
    if problems:
        raise CheckpointError(f"{source} does not match its config: " + "; ".join(problems))


def verify_model_files(folder: Path) -> WeightFiles:
    """Check the files a model load reads (config, shard index, weights) against the folder's
    manifest, by size and sha256; `CheckpointDamaged` names the first bad one. Returns the weight
    files (the index parsed once, after it was checked)."""
    head = [name for name in (CONFIG_NAME, SAFE_INDEX, BIN_INDEX) if (folder / name).is_file()]
    verify_checkpoint(folder, head)  # first: the index decides which weight files are read
    weights = weight_files(folder)
    verify_folder(folder, [path.relative_to(folder).as_posix() for path in weights.files])  # none without a manifest
    return weights


def checked_tensors(folder: str | os.PathLike[str]) -> tuple[ModelConfig, dict[str, Any], Iterator[tuple[str, torch.Tensor]]]:
    """Config, raw config and a stream of exactly the model's tensors, verified and validated up front.

    A tied-embedding checkpoint (no `lm_head.weight`) gets `lm_head.weight` = the embeddings."""
    folder = resolve_folder(folder)
    weights = verify_model_files(folder)
    config, raw = read_config(folder)
    tied = bool(raw.get("tie_word_embeddings", False))
    # shapes by arithmetic: no module is built before the file's headers are known to fill the model
    stored, kept = stored_tensors(weights, folder)
    check_shapes(state_shapes(config), {key: entry.shape for key, entry in stored.items()}, str(folder), tied=tied)
    check_dtypes(stored)

    def stream() -> Iterator[tuple[str, torch.Tensor]]:
        head_seen = False
        for key, tensor in iter_tensors(weights, kept):
            if IGNORED_KEYS.search(key):
                continue
            check_finite(key, tensor, stored[key].path)
            head_seen |= key == "lm_head.weight"
            yield key, tensor
            if tied and key == "model.embed_tokens.weight" and not head_seen:
                yield "lm_head.weight", tensor
                head_seen = True

    return config, raw, stream()


def check_finite(name: str, tensor: torch.Tensor, path: str | os.PathLike[str]) -> None:
    """Refuse a stored tensor holding NaN or inf, naming its file: such weights loaded without a
    word (one NaN in model.norm.weight: `trainer.evaluate` printed `ppl nan`, exit 0; `generate`
    crashed in sampling). Its min and max per tensor as it streams past (`tokenizer.finite`), no copy."""
    count = non_finite_count(tensor)
    if count:
        raise CheckpointError(f"{path}: {non_finite_phrase(name, tensor, count)}: weights of a diverged training "
                              "run or of a conversion that overflowed; use an earlier or another copy of the checkpoint")


def check_converted(name: str, converted: torch.Tensor, stored: torch.Tensor, folder: str | os.PathLike[str]) -> None:
    """Refuse a finite stored tensor that its conversion to a narrower dtype turned into inf
    (`interop import --dtype float16` of a bf16 weight of 1e5 stored inf, exit 0); nothing is
    checked where the dtype stays (`check_finite` judged the stored values)."""
    if converted.dtype == stored.dtype:
        return
    count = non_finite_count(converted)
    if count:
        largest = float(stored.detach().abs().max())
        dtype = dtype_name(converted.dtype)
        raise CheckpointError(f"{folder}: tensor {name} does not fit {dtype}: {count} of its {converted.numel()} values "
                              f"exceed its range (largest {largest:g}, {dtype} holds at most "
                              f"{torch.finfo(converted.dtype).max:g}); choose bfloat16 or float32")


# -- writing ---------------------------------------------------------------------------------
class ShardWriter:
    """Collects tensors into safetensors files of at most `max_bytes` (one tensor may exceed it),
    named as HF names them; one file means `model.safetensors` and no index."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder, self.max_bytes = folder, max_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.parts: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + size > self.max_bytes:
            self.flush()
        tensor = tensor.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if any(t.untyped_storage().data_ptr() == storage for t in self.pending.values()):
            tensor = tensor.clone()  # tied weights share memory, which safetensors refuses to store
        self.pending[name] = tensor
        self.pending_bytes += size
        self.total_bytes += size

    def flush(self) -> None:
        from safetensors.torch import save_file

        if not self.pending:
            return
        path = self.folder / f".part-{len(self.parts):05d}.safetensors"
        save_file(self.pending, str(path), metadata={"format": "pt"})
        # safetensors creates its file 0600 whatever the umask: colleagues could read a shared
        # folder's config.json but not its weights. The mode every other file gets, as they do.
        os.chmod(path, new_file_mode())
        self.parts.append((path, list(self.pending)))
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> list[str]:
        """Give the files their final names (and write the index); returns the file names."""
        self.flush()
        if len(self.parts) == 1:
            os.replace(self.parts[0][0], self.folder / SAFE_NAME)
            return [SAFE_NAME]
        names, weight_map = [], {}
        for i, (path, keys) in enumerate(self.parts):
            name = f"model-{i + 1:05d}-of-{len(self.parts):05d}.safetensors"
            os.replace(path, self.folder / name)
            names.append(name)
            weight_map.update({k: name for k in keys})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.folder / SAFE_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True), encoding="utf-8")
        return names


def write_config(folder: Path, config: ModelConfig, dtype: torch.dtype, extra: Mapping[str, Any] | None = None) -> None:
    values = hf_config_dict(config, dtype)
    values.update(extra or {})
    (folder / CONFIG_NAME).write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_pretrained(model: LVMTransformer, folder: str | os.PathLike[str], *, dtype: str | torch.dtype | None = None,
                    max_shard_size: int | str = DEFAULT_SHARD_SIZE,
                    write_extra: Callable[[Path], None] | None = None) -> Path:
    """Write `model` as an HF LlamaForCausalLM folder (config.json + safetensors), atomically.

    `dtype` converts on the way out (default: the model's). `write_extra(tmp_folder)` may add
    files (optimizer state, a training log) that commit together with the weights. The folder is
    replaced as a whole, sealed with its manifest."""
    target = parse_dtype(dtype) or next(model.parameters()).dtype
    with sealed_folder(folder) as temporary:
        writer = ShardWriter(temporary, parse_size(max_shard_size))
        for name, tensor in model.state_dict().items():
            writer.add(name, tensor.to(target))
        writer.close()
        write_config(temporary, model.config, target)
        if write_extra is not None:
            write_extra(temporary)
    return Path(folder)


def stored_dtype(raw: Mapping[str, Any], folder: str | os.PathLike[str]) -> torch.dtype:
    """The dtype a folder's weights are stored in (config's torch_dtype/dtype, else fp32)."""
    name = raw.get("torch_dtype") or raw.get("dtype") or "float32"
    if not isinstance(name, str) or name not in DTYPES:
        raise CheckpointError(f"{folder}/{CONFIG_NAME}: field 'torch_dtype' = {name!r} is not a dtype we load "
                              f"(one of {', '.join(sorted(DTYPES))})")
    return DTYPES[name]


def load_pretrained(folder: str | os.PathLike[str], device: str | torch.device = "cpu",
                    dtype: str | torch.dtype | None = "float32") -> LVMTransformer:
    """Our model from a checkpoint folder (ours or any HF Llama folder), in eval mode.

    `dtype`: the parameter dtype ('auto' or None keeps the stored one). Tensors are copied in one
    at a time into a model allocated once, so peak memory is the model plus one tensor."""
    return model_from_checked(folder, checked_tensors(folder), device, dtype)


def model_from_checked(folder: str | os.PathLike[str],
                       checked: tuple[ModelConfig, dict[str, Any], Iterator[tuple[str, torch.Tensor]]],
                       device: str | torch.device = "cpu",
                       dtype: str | torch.dtype | None = "float32") -> LVMTransformer:
    """`load_pretrained` in two steps: `checked` is `checked_tensors(folder)` (every file verified,
    config and headers judged, no weight loaded), so a caller can judge what else it was given
    (`trainer.generate`: the tokenizer) between finding the model sound and allocating it."""
    config, raw, tensors = checked
    target = parse_dtype(dtype) or stored_dtype(raw, folder)
    with torch.device("meta"):
        model = LVMTransformer(config)
    model = model.to(target).to_empty(device=device)
    parameters = model.state_dict()
    loaded: set[str] = set()
    with torch.no_grad():
        for name, tensor in tensors:
            parameters[name].copy_(tensor)
            check_converted(name, parameters[name], tensor, folder)
            loaded.add(name)
    if loaded != set(parameters):  # headers and contents disagree: never hand out uninitialised memory
        raise CheckpointError(f"{folder}: tensors never loaded: {_preview(sorted(set(parameters) - loaded))}")
    return model.eval()
