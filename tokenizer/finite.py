"""Whether weights hold only finite numbers: the check every weight loader runs per tensor.

A diverged training run (a learning rate too high) leaves NaN in every weight; a conversion to a
narrower dtype (float32 -> float16) turns values beyond its range into inf. Both load and run
without an error: a NaN tokenizer gave code 0 for every image, a NaN model `ppl nan` or a crash
deep in sampling. So loaders refuse such a tensor, naming it.

The check is the tensor's smallest and largest value first (`aminmax`): NaN anywhere makes both
NaN, inf makes one of them inf, and finite values can never overflow it, as a sum of float16 did
(256M values of 0.01: 2 s and 213 MiB on the exact path a 46 ms check had become). It keeps no
copy of the tensor. Only a min or max that is not finite is followed by the exact count, walked in
chunks so its mask stays small (4 MiB) beside the tensor being loaded: loaders keep one tensor in
memory at a time. float8 tensors, which torch reduces on no CPU kernel, are judged by their bytes
where the format puts NaN and inf at the top of the magnitude bits (e4m3fn, e5m2: 256M values in
0.2 s), else a chunk at a time widened to float32 (16 MiB each, 4 s for 256M), never copied whole.
float4 e2m1 has no NaN or inf at all (and torch no kernel to widen it): finite by its dtype.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

CHUNK = 1 << 22  # elements per chunk of the exact count (a bool mask of 4 MiB) or of a float8 widening
# dtypes whose min/max and isfinite torch computes in place; any other float (float8) is widened chunk-wise
REDUCIBLE = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# float8 formats whose NaN and inf are the magnitudes (byte & 0x7F) from this one up: e4m3fn has NaN
# at 0x7F and no inf, e5m2 inf at 0x7C and NaN above it
FLOAT8_FIRST_NON_FINITE = {getattr(torch, name): first for name, first in (("float8_e4m3fn", 0x7F),
                                                                           ("float8_e5m2", 0x7C))
                           if hasattr(torch, name)}
# dtypes with no code for NaN or inf: torch.float4_e2m1fn_x2 (two e2m1 values a byte, each of its 16
# codes a finite number from -6 to 6), which torch cannot widen or reduce on any kernel
WITHOUT_NON_FINITE = tuple(getattr(torch, name) for name in ("float4_e2m1fn_x2",) if hasattr(torch, name))
BYTE_CHUNK = 1 << 20  # bytes per chunk of a float8 magnitude check (1 MiB masked at a time)


def not_dense(tensors: Mapping[str, object]) -> list[str]:
    """'name (sparse_coo)' of each tensor of `tensors` not stored dense (strided): a sparse one in a
    state dict reached the finite check, whose reshape torch has no kernel for, a traceback where a
    refusal belongs. Every weight of our models is dense."""
    return [f"{name} ({str(value.layout).removeprefix('torch.')})" for name, value in tensors.items()
            if isinstance(value, torch.Tensor) and value.layout != torch.strided]


def _reducible_chunks(flat: torch.Tensor) -> Iterator[torch.Tensor]:
    """`flat` in pieces torch's reductions take: itself when its dtype has kernels, else float32 chunks."""
    if flat.dtype in REDUCIBLE:
        yield flat
        return
    for chunk in flat.split(CHUNK):
        yield chunk.float()


def _all_finite(flat: torch.Tensor) -> bool:
    """True when no value is NaN or inf, judged by min and max (which NaN and inf reach, sums do not
    overflow into): nothing is allocated beyond a float8 chunk's widening."""
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)  # a view: NaN or inf in either part shows in min/max
    if flat.dtype in FLOAT8_FIRST_NON_FINITE:
        first = FLOAT8_FIRST_NON_FINITE[flat.dtype]
        return all(int((chunk & 0x7F).max()) < first for chunk in flat.view(torch.uint8).split(BYTE_CHUNK))
    for piece in _reducible_chunks(flat):
        low, high = piece.aminmax()
        if not (bool(torch.isfinite(low)) and bool(torch.isfinite(high))):
            return False
    return True


def _count(flat: torch.Tensor, test: str) -> int:
    """How many values of `flat` torch.`test` (isfinite or isnan) holds false for, chunk by chunk."""
    total = 0
    for chunk in flat.split(CHUNK):
        if not chunk.is_complex() and chunk.dtype not in REDUCIBLE:
            chunk = chunk.float()  # float8: isfinite has no kernel for some of its kinds
        mask = getattr(torch, test)(chunk)
        total += int(mask.numel() - mask.sum())
    return total


def non_finite_count(tensor: torch.Tensor) -> int:
    """How many values of `tensor` are NaN or +-inf (0 for an integer tensor, which holds none)."""
    if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.numel() == 0:
        return 0
    if tensor.dtype in WITHOUT_NON_FINITE:  # no byte of it is NaN or inf; its widening crashed
        return 0
    flat = tensor.detach().reshape(-1)
    if _all_finite(flat):
        return 0
    return _count(flat, "isfinite")


def non_finite_phrase(name: str, tensor: torch.Tensor, count: int) -> str:
    """'tensor X holds 3 of 512 values that are NaN or inf (2 NaN)': how a refusal names one."""
    flat = tensor.detach().reshape(-1)
    nan = flat.numel() - _count(flat, "isnan") if tensor.is_floating_point() or tensor.is_complex() else 0
    kinds = "all NaN" if nan == tensor.numel() else ", ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"),
                                                                                             (count - nan, "inf")) if n)
    return f"tensor {name} holds {count} of {tensor.numel()} values that are not finite ({kinds})"


def first_non_finite(tree: object, prefix: str = "") -> tuple[str, torch.Tensor, int] | None:
    """(dotted name, tensor, count) of the first tensor in a nested dict/list (a state dict, an
    optimizer's state) holding NaN or inf, or None: a resumed run must not train on such a step's
    weights or moments, which loaded as they were and trained on."""
    if isinstance(tree, torch.Tensor):
        count = non_finite_count(tree)
        return (prefix, tree, count) if count else None
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    for key, value in items:
        found = first_non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if found:
            return found
    return None
