"""Checkpoint I/O in open-muse's format: a folder with `config.json` + `pytorch_model.bin`.

`load` reads the released LVM tokenizer folder exactly as published (or `model.safetensors`,
read by `safetensors_file` without mapping it; a folder with both is read from `pytorch_model.bin`,
with a `WeightsChoiceWarning` naming the file left unread) and refuses anything that does not fit the
architecture its config describes, naming the missing/unexpected keys and differing shapes; the
file is compared with shapes computed from the config before any module is built, so the cost of
a refusal follows the file, not the depth a config declares. Every failure is a `CheckpointError`
naming the file.
Pickles are never executed: every `torch.load` runs with `weights_only=True`.

`save` writes the same format atomically (temp file, then rename), so a reader never sees half
a checkpoint. `weights_hash` is the provenance id token shards record next to the tokenizer name.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import struct
import warnings
import zipfile
from typing import Iterator, Mapping

import torch

from .atomic import atomic_path
from .config import VQGANConfig, not_a_file
from .finite import WITHOUT_NON_FINITE, non_finite_count, non_finite_phrase, not_dense
from .model import VQGAN, state_shapes
from .safetensors_file import SafetensorsFileError, load_state

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "pytorch_model.bin"
SAFETENSORS_NAME = "model.safetensors"
_SHOW = 5  # how many offending keys a mismatch message names per kind


class CheckpointError(ValueError):
    """A checkpoint that does not match its config (or is not a checkpoint at all)."""


def _preview(items: list[str]) -> str:
    head = ", ".join(items[:_SHOW])
    return f"{head}, ... ({len(items)} in all)" if len(items) > _SHOW else head


def shape_problems(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Missing keys, unexpected keys and shape mismatches between two name -> shape maps, as
    readable phrases (empty when they agree). Shared with the trainer's checkpoints."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(found[k])} vs model {tuple(v)}"
              for k, v in expected.items() if k in found and tuple(found[k]) != tuple(v)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_preview(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {_preview(shapes)}")
    return problems


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_TORCH_DETAIL = "WeightsUnpickler error:"
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"
_ZIP_HEAD = b"PK\x03\x04"  # what torch reads a file as a zip by (`torch.serialization._is_zipfile`)
_RESAVE = ("from a copy you trust, save its state dict (name -> tensor; a Lightning .ckpt keeps it under "
           "'state_dict') alone with torch.save and pass that file")


def weights_only_refusal(exc: Exception) -> str:
    """torch's weights-only refusal in one line: what the pickle asked for (`posix.system`, a
    class), or that the file is no torch pickle at all (an HTML page). torch's own text is a page
    whose first advice is to load the file with code execution turned on."""
    text = str(exc)
    found = _GLOBAL.search(text)
    if found:
        return (f"its pickle calls or builds {found.group(1)}, which weights-only loading refuses (a weights "
                f"file holds only tensors; no code in a file is run to read it): {_RESAVE}")
    detail = text.split(_TORCH_DETAIL, 1)[1] if _TORCH_DETAIL in text else text
    detail = " ".join(detail.split("Check the documentation of torch.load")[0].split())[:200]
    return f"not a torch weights file ({detail})"


def training_checkpoint_problem(state: object) -> str | None:
    """Why `state`, a mapping a weights file held, is a training checkpoint rather than the state
    dict it wraps (None: it is not one): a PyTorch Lightning / taming-transformers `.ckpt` keeps the
    weights under 'state_dict', beside the epoch and optimizer states."""
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        return (f"a training checkpoint (keys {_preview([str(key) for key in state])}), not a state dict: "
                "save its 'state_dict' alone with torch.save and pass that file")
    return None


def weight_file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why `path` cannot be read as weights, from its first bytes and zip directory before any
    reader decodes it (None: let the reader judge): a Git LFS pointer (a hub clone without LFS:
    torch and safetensors named only a bad opcode or header), or, for a file torch reads as a zip
    (its first bytes), `torch_file_problem`."""
    return _problem(path, file_head(path))


def _problem(path: str | os.PathLike[str], head: bytes | None) -> str | None:
    """`weight_file_problem` of `path`, whose first bytes are `head` (None: no regular file)."""
    if head is None:
        return f"{not_a_file(os.stat(path).st_mode)}, not a file; pass the weights file itself"
    if head == _LFS_POINTER:
        return (f"a Git LFS pointer ({os.path.getsize(path)} bytes), not the weights it stands for: the "
                "repository was cloned without Git LFS; fetch the files with `git lfs pull`")
    if head[:4] != _ZIP_HEAD:  # safetensors, a legacy torch pickle: their last 64 KiB hold no directory
        return None
    return torch_file_problem(path)


def file_head(path: str | os.PathLike[str], status: os.stat_result | None = None) -> bytes | None:
    """The first bytes of `path` that tell an LFS pointer and a zip apart (none if unreadable);
    None for a path that is there but no regular file, judged from its stat before any open (a
    pipe would block the open forever). `status`: the path's stat, where the caller took one."""
    try:
        if not_a_file((status or os.stat(path)).st_mode):
            return None
        with open(path, "rb") as handle:
            return handle.read(len(_LFS_POINTER))
    except OSError:
        return b""


def mappable(head: bytes | None) -> bool:
    """Whether `read_weights(path, mmap=True)` maps the tensors of a file whose `file_head` is
    `head` (a zip-format torch file, as torch.save writes since 1.6) rather than reading them all
    (a legacy pickle)."""
    return (head or b"")[:4] == _ZIP_HEAD


class WeightsFileError(CheckpointError):
    """A torch file refused by `read_weights` / `read_state_dict`: `path` names it, `reason` says
    why and the fix, so a caller can word the refusal its own way. `unreadable`: its bytes are no
    weights file (a pointer, a refused or broken pickle), rather than the wrong thing read whole."""

    def __init__(self, path: str | os.PathLike[str], reason: str, unreadable: bool = True) -> None:
        self.path, self.reason, self.unreadable = os.fspath(path), reason, unreadable
        super().__init__(f"{self.path}: {reason}")


def read_weights(path: str | os.PathLike[str], map_location: str | torch.device = "cpu", mmap: bool = False,
                 head: bytes | None = None) -> object:
    """What the torch file `path` holds, read once and weights-only (no code in it runs), after
    `weight_file_problem` judged it from its first bytes: the one torch reader of the tokenizer's
    and the trainer's weights, training states and resumes. `mmap` maps the tensors of a zip-format
    file instead of reading them (a legacy pickle cannot be mapped: it is read). `head`: the file's
    `file_head`, where the caller read it (None: read here)."""
    head = file_head(path) if head is None else head
    problem = _problem(path, head)
    if problem:
        raise WeightsFileError(path, problem)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap and mappable(head))
    except FileNotFoundError:
        raise WeightsFileError(path, "missing") from None
    except pickle.UnpicklingError as exc:  # a pickle that asks for more than tensors, or none at all
        raise WeightsFileError(path, weights_only_refusal(exc)) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise WeightsFileError(path, f"cannot be read as a torch weights file ({reason})") from None


def read_state_dict(path: str | os.PathLike[str], mmap: bool = False, head: bytes | None = None) -> dict[str, object]:
    """`read_weights` of a file that must hold a state dict (name -> tensor): a training checkpoint
    (a Lightning .ckpt) or anything but a mapping is refused, naming the file and the fix."""
    state = read_weights(path, mmap=mmap, head=head)
    wrapped = training_checkpoint_problem(state)
    if wrapped:
        raise WeightsFileError(path, wrapped, unreadable=False)
    if not isinstance(state, Mapping):
        raise WeightsFileError(path, f"expected a state dict (mapping of name -> tensor), got {type(state).__name__}",
                               unreadable=False)
    return dict(state)


def torch_file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why `torch.load` of the zip-format file `path` could allocate more than the file holds
    (None: it cannot). torch writes every record stored, uncompressed; for a deflated record it
    allocates the declared size before inflating (950 KiB asked for 1 GB). A stored record's size
    is bytes the file holds (torch's zip reader checks that on opening). Judged from the zip's
    directory alone, one record at a time (zipfile's objects took 220 MB for a 35 MB directory); a
    legacy (non-zip) file, or one whose directory cannot be walked, is left to torch."""
    packed: list[str] = []  # the first few names
    count = declared = 0
    try:
        with open(path, "rb") as handle:
            for name, method, size in _zip_directory(handle):
                if method != zipfile.ZIP_STORED:
                    count, declared = count + 1, declared + size
                    packed += [name][:_SHOW - len(packed)]
    except (OSError, ValueError, struct.error):
        return None
    if count:
        shown = ", ".join(packed) + (f", ... ({count} in all)" if count > _SHOW else "")
        return (f"records compressed ({shown}; {declared} bytes declared in a file of "
                f"{os.path.getsize(path)}): torch.save stores them uncompressed, and torch would allocate the "
                "declared size before checking it; re-save the state dict with torch.save")
    return None


_EOCD, _EOCD64, _LOCATOR64, _ENTRY = b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07", b"PK\x01\x02"


def _zip_directory(handle) -> Iterator[tuple[str, int, int]]:
    """(name, compression method, declared uncompressed size) of each record of the zip `handle`,
    read from its central directory in chunks: memory stays flat however many records it lists.
    Nothing for a file that is no zip (no end record); ValueError for a directory that breaks off."""
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - (22 + 0xFFFF)))  # the end record, after at most a 64 KiB comment
    tail = handle.read()
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        return
    count, length, offset = struct.unpack_from("<HII", tail, at + 10)
    if 0xFFFF == count or 0xFFFFFFFF in (length, offset):  # zip64: the locator before it says where
        if at < 20 or tail[at - 20:at - 16] != _LOCATOR64:
            raise ValueError("zip64 locator missing")
        handle.seek(struct.unpack_from("<Q", tail, at - 12)[0])
        record = handle.read(56)
        if len(record) < 56 or record[:4] != _EOCD64:
            raise ValueError("zip64 end record missing")
        count, length, offset = struct.unpack_from("<QQQ", record, 32)
    if offset + length > size:
        raise ValueError("central directory beyond the file")
    handle.seek(offset)
    buffer, pos = b"", 0
    for _ in range(count):
        if len(buffer) - pos < 46:
            buffer, pos = buffer[pos:] + handle.read(1 << 16), 0
        if len(buffer) - pos < 46 or buffer[pos:pos + 4] != _ENTRY:
            raise ValueError("not a central directory entry")
        method = struct.unpack_from("<H", buffer, pos + 10)[0]
        declared, name_len, extra_len, comment_len = struct.unpack_from("<IHHH", buffer, pos + 24)
        whole = 46 + name_len + extra_len + comment_len
        if len(buffer) - pos < whole:
            buffer, pos = buffer[pos:] + handle.read(max(1 << 16, whole)), 0
        if len(buffer) - pos < whole:
            raise ValueError("central directory cut short")
        name = buffer[pos + 46:pos + 46 + name_len].decode("utf-8", "replace")
        extra = buffer[pos + 46 + name_len:pos + 46 + name_len + extra_len]
        while declared == 0xFFFFFFFF and len(extra) >= 4:  # zip64: the size is in the extra field
            kind, data_len = struct.unpack_from("<HH", extra)
            if kind == 1 and data_len >= 8:
                declared = struct.unpack_from("<Q", extra, 4)[0]
            extra = extra[4 + data_len:]
        yield name, method, declared
        pos += whole


def check_state(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, object], source: str = "checkpoint") -> None:
    """Raise `CheckpointError` naming missing keys, unexpected keys, shape mismatches and values
    that are not floating-point tensors (every VQGAN tensor is one), against name -> shape
    (`model.state_shapes`): judged before any model is built."""
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    found = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else expected.get(k, ()) for k, v in state.items()}
    problems = shape_problems(expected, found)
    if not_tensors:
        problems.append(f"values that are not tensors: {_preview(not_tensors)}")
    not_float = [f"{k} ({str(v.dtype).removeprefix('torch.')})" for k, v in state.items()
                 if isinstance(v, torch.Tensor) and not v.is_floating_point()]
    if not_float:
        problems.append(f"tensors that are not floating point: {_preview(not_float)}")
    unloadable = [f"{k} ({str(v.dtype).removeprefix('torch.')})" for k, v in state.items()
                  if isinstance(v, torch.Tensor) and v.dtype in WITHOUT_NON_FINITE]
    sparse = not_dense(state)
    if sparse:
        problems.append(f"tensors not stored dense: {_preview(sparse)} (store them with .to_dense())")
    if unloadable:  # packed float4: torch widens it to float32 on no kernel, and its shape counts bytes
        problems.append(f"tensors in a dtype we do not load: {_preview(unloadable)} (store float32, bfloat16, "
                        "float16 or float8)")
    if problems:
        raise CheckpointError(f"{source} does not match its config: " + "; ".join(problems))


def check_finite(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise `CheckpointError` naming the first tensor of `state` holding NaN or inf (and how many
    more do): a diverged `tokenizer.fit` saved such weights, and they loaded, encoding every image
    to code 0 and decoding it to black; a build tokenized with them wrote shards that looked valid.
    Per tensor (`tokenizer.finite`): 2-7 ms of the embedded tokenizer's ~100 ms load."""
    bad = [(name, tensor, count) for name, tensor in state.items() if (count := non_finite_count(tensor))]
    if bad:
        name, tensor, count = bad[0]
        more = f" ({len(bad)} tensors in all hold such values)" if len(bad) > 1 else ""
        raise CheckpointError(f"{source}: {non_finite_phrase(name, tensor, count)}{more}: weights of a diverged "
                              "training run; use an earlier checkpoint, or train again with a lower --lr")


class WeightsChoiceWarning(UserWarning):
    """A tokenizer folder holds both weight files: which one was read (`_read_state_dict`)."""


def _read_state_dict(folder: str) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict of a muse folder and the file it came from: `pytorch_model.bin`, the
    released tokenizer's own file, where there is one, else `model.safetensors`. A folder with
    both (a conversion left beside its source) was read from the .bin without a word, though the
    two may differ: a `WeightsChoiceWarning` now names the file read and the one left unread. They
    are not compared: that would read the weights twice, and neither file carries a digest."""
    bin_path = os.path.join(folder, WEIGHTS_NAME)
    st_path = os.path.join(folder, SAFETENSORS_NAME)
    if os.path.exists(bin_path):  # preferred: the released tokenizer's file
        if os.path.exists(st_path):
            warnings.warn(f"{folder}: holds both {WEIGHTS_NAME} and {SAFETENSORS_NAME}; reading {WEIGHTS_NAME}, "
                          f"{SAFETENSORS_NAME} is not read (remove the one you do not mean)", WeightsChoiceWarning,
                          stacklevel=3)
        return read_state_dict(bin_path), bin_path
    if os.path.exists(st_path):
        problem = weight_file_problem(st_path)
        if problem:
            raise CheckpointError(f"{st_path}: {problem}")
        try:  # read, not mapped: judged from its header and size first, a file cut meanwhile refused
            return load_state(st_path), st_path
        except SafetensorsFileError as exc:
            raise CheckpointError(f"{st_path}: cannot be read as safetensors ({exc.reason})") from None
        except OSError as exc:
            raise CheckpointError(f"{st_path}: cannot be read as safetensors ({type(exc).__name__}: {exc})") from None
    raise CheckpointError(f"{folder}: no {WEIGHTS_NAME} or {SAFETENSORS_NAME} found")


def read_config(path: str | os.PathLike[str]) -> VQGANConfig:
    """The config of the muse-format folder `path`, without its weights (a caller that needs only
    the image size, say, before paying for the model)."""
    folder = os.fspath(path)
    config_path = os.path.join(folder, CONFIG_NAME)
    if not os.path.exists(config_path):  # one that is there but no file (/dev/zero) is refused by its reader
        raise CheckpointError(f"{folder}: no {CONFIG_NAME}")
    try:
        return VQGANConfig.from_json(config_path)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"bad config: {exc}") from None


def load(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> VQGAN:
    """The model in folder `path` (muse format), fp32, in eval mode."""
    folder = os.fspath(path)
    config = read_config(folder)
    state, source = _read_state_dict(folder)
    check_state(state_shapes(config), state, source)  # before building: the file bounds the model
    check_finite(state, source)
    try:
        with torch.device("meta"):  # no random init of 146M parameters that are overwritten anyway
            model = VQGAN(config)
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    except (RuntimeError, ValueError, OverflowError) as exc:  # what the checks above did not foresee
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise CheckpointError(f"{source}: does not load into the model its config describes ({reason})") from None
    return model.to(device).eval()


def save(model: VQGAN, path: str | os.PathLike[str]) -> str:
    """Write `config.json` + `pytorch_model.bin` (open-muse format) into folder `path`, atomically
    per file; returns the weights hash. Weights go first, so a folder whose config exists and
    whose weights are half-written never occurs."""
    folder = os.fspath(path)
    os.makedirs(folder, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(os.path.join(folder, WEIGHTS_NAME)) as temporary:
        torch.save(state, temporary)
    with atomic_path(os.path.join(folder, CONFIG_NAME)) as temporary:
        model.config.to_json(temporary)
    return weights_hash(state)


def weights_hash(source: VQGAN | Mapping[str, torch.Tensor]) -> str:
    """sha256 (hex) over the state dict in key order: each key, dtype, shape and raw bytes.

    Independent of device and of how the file was serialised, so the same weights always give
    the same id; token shards record it to tie tokens to the tokenizer that made them.
    """
    state = source.state_dict() if isinstance(source, torch.nn.Module) else source
    digest = hashlib.sha256()
    for key, tensor in state.items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{str(t.dtype).removeprefix('torch.')}|{list(t.shape)}\n".encode())
        if t.numel():  # the bytes as a buffer, not a copy (a copy would hold Python's lock throughout)
            digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


# config.json fields that change no code a tokenizer gives (training losses only): left out of its id
TRAINING_ONLY = ("commitment_cost", "dropout")


def tokenizer_hash(weights: str, config: VQGANConfig) -> str:
    """A tokenizer's id as token shards record it: sha256 over its `weights_hash` and its canonical
    config.json (keys sorted, training-only fields left out). The weights alone were recorded: an
    edited config.json that changes the encoding but no weight's shape (`codebook_l2_norm`) left
    shards of the old encoding taken as current, under the same name and hash as new ones."""
    fields = {k: v for k, v in config.to_dict().items() if k not in TRAINING_ONLY}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"uvd-tokenizer/1\n{weights}\n{canonical}".encode()).hexdigest()


def made_by(recorded: str | None, weights: str, tokenizer: str) -> bool:
    """Whether a shard's recorded hash is this tokenizer's: its `tokenizer_hash`, or its weights
    hash alone (what shards recorded before; they stay readable, and are re-encoded on a rerun)."""
    return recorded is not None and recorded in (tokenizer, weights)


def embedded_checkpoint() -> str:
    """The small tokenizer trained by `make tokenizer` on the sample corpus, shipped in the repo:
    the build's default (`tokenizer.checkpoint: embedded`)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "uvd-tiny")
