"""Reading safetensors files by plain reads, judged whole from the header and the file size first.

The `safetensors` library maps the file: a file cut or rewritten in place while mapped kills the
process with SIGBUS at the first touch of a lost page, with no word of which file. Here the header
is checked against the file's size before any tensor is touched (header length, offsets inside the
data, spans that tile it without overlap, gap or tail, each span the size its dtype and shape
declare), and each tensor is read into its own memory with `readinto`: a file that shrinks under
the reader gives a short read, refused in words naming the file. Memory per tensor is its declared
span, which the size check bounds by the file itself.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from dataclasses import dataclass
from typing import Iterator

import torch

HEADER_LIMIT = 100_000_000  # bytes of JSON header; the safetensors library's own limit
_LENGTH = struct.Struct("<Q")
# the largest size of one dimension torch holds (int64): a tensor of 0 elements passed the span check
# with a dimension of 2**70, and its reshape failed in torch's C++ (a traceback, not a refusal)
MAX_DIM = 2**63 - 1

# safetensors' dtype names -> torch dtypes (little-endian on disk, as torch holds them on x86 and ARM)
TORCH_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


class SafetensorsFileError(ValueError):
    """A file that is no whole safetensors file; `path` names it, `reason` says why."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class TensorSpan:
    """One tensor as the header declares it: dtype (safetensors' name), shape and its bytes'
    place in the file (absolute offsets, end exclusive)."""
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def _opened(path: str | os.PathLike[str]) -> int:
    """A descriptor of `path`, refused unless a regular file (opened non-blocking: a fifo would
    block an open forever)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SafetensorsFileError(path, "not a regular file; pass the weights file itself")
    return fd


def _read_exactly(fd: int, offset: int, size: int) -> bytes:
    data = os.pread(fd, size, offset)
    while 0 < len(data) < size:  # a pread may return less than asked on a regular file only at its end
        more = os.pread(fd, size - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data


def _span(path: str | os.PathLike[str], name: str, entry: object, data_start: int) -> TensorSpan:
    """One header entry, checked: its dtype known, its shape whole numbers, its offsets ordered and
    as far apart as dtype and shape declare."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise SafetensorsFileError(path, f"header entry {name!r} lacks dtype, shape or data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in TORCH_DTYPES:
        raise SafetensorsFileError(path, f"tensor {name!r} has dtype {dtype!r}, which we do not read "
                                         f"(we read {', '.join(TORCH_DTYPES)})")
    if not isinstance(shape, list) or not all(type(n) is int and 0 <= n <= MAX_DIM for n in shape):
        raise SafetensorsFileError(path, f"tensor {name!r} has shape {str(shape)[:200]}, not a list of sizes "
                                         f"(each 0 to {MAX_DIM})")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(n) is int for n in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise SafetensorsFileError(path, f"tensor {name!r} has data_offsets {offsets!r}, not [begin, end]")
    declared = math.prod(shape) * TORCH_DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != declared:
        raise SafetensorsFileError(path, f"tensor {name!r}: dtype {dtype} and shape {tuple(shape)} make "
                                         f"{declared} bytes, but its data_offsets span {offsets[1] - offsets[0]}")
    return TensorSpan(name, dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])


def _parsed(path: str | os.PathLike[str], fd: int, size: int) -> list[TensorSpan]:
    if size < _LENGTH.size:
        raise SafetensorsFileError(path, f"{size} bytes, shorter than the 8-byte header length (cut short?)")
    (length,) = _LENGTH.unpack(_read_exactly(fd, 0, _LENGTH.size))
    if length > HEADER_LIMIT:
        raise SafetensorsFileError(path, f"header length {length} over the {HEADER_LIMIT}-byte limit (not a "
                                         "safetensors file?)")
    data_start = _LENGTH.size + length
    if data_start > size:
        raise SafetensorsFileError(path, f"header length {length} runs past the end of the file ({size} bytes): "
                                         "cut short")
    try:
        header = json.loads(_read_exactly(fd, _LENGTH.size, length).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SafetensorsFileError(path, f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SafetensorsFileError(path, "header is not a JSON object")
    spans = sorted((_span(path, name, entry, data_start) for name, entry in header.items()
                    if name != "__metadata__"), key=lambda s: (s.start, s.end))
    past = [span for span in spans if span.end > size]
    if past:
        raise SafetensorsFileError(path, f"tensor {past[0].name!r} ends at byte {past[0].end}, past the end of the "
                                         f"file ({size} bytes): cut short")
    at = data_start
    for span in spans:
        if span.start < at:
            raise SafetensorsFileError(path, f"tensor {span.name!r} overlaps the tensor before it")
        if span.start > at:
            raise SafetensorsFileError(path, f"{span.start - at} bytes before tensor {span.name!r} belong to "
                                             "no tensor")
        at = span.end
    if at != size:
        raise SafetensorsFileError(path, f"{size - at} bytes after the last tensor belong to no tensor "
                                         f"(the file is {size} bytes, its header accounts for {at})")
    return spans


def read_header(path: str | os.PathLike[str]) -> list[TensorSpan]:
    """Every tensor of `path` as its header declares it, in file order, checked against the file's
    size; no tensor byte is read."""
    fd = _opened(path)
    try:
        return _parsed(path, fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _tensor(path: str | os.PathLike[str], fd: int, span: TensorSpan, identity: tuple[int, int]) -> torch.Tensor:
    raw = torch.empty(span.end - span.start, dtype=torch.uint8)
    view = memoryview(raw.numpy())
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], span.start + done)
        if got == 0:
            raise SafetensorsFileError(path, f"ended inside tensor {span.name!r} (byte {span.start + done}): it "
                                             "shrank while being read; load again once it is complete")
        done += got
    now = os.fstat(fd)
    if (now.st_size, now.st_mtime_ns) != identity:
        raise SafetensorsFileError(path, "changed while being read (rewritten in place); load again once it is "
                                         "complete")
    return raw.view(TORCH_DTYPES[span.dtype]).reshape(span.shape)


def iter_tensors(path: str | os.PathLike[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every tensor of `path`, in file order, each in its own memory; the whole
    header is judged against the file's size before the first tensor is read."""
    fd = _opened(path)
    try:
        status = os.fstat(fd)
        identity = (status.st_size, status.st_mtime_ns)
        for span in _parsed(path, fd, status.st_size):
            yield span.name, _tensor(path, fd, span, identity)
    finally:
        os.close(fd)


def load_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Every tensor of `path` by name (`safetensors.torch.load_file` without the mapping)."""
    return dict(iter_tensors(path))
