"""fp32 GEMMs of the CPU training step through oneDNN instead of MKL, where that is faster.

Why: torch's CPU `mm`/`linear` call MKL's sgemm, which on AMD processors runs its AVX2 code path:
on the 2-core AMD EPYC (Zen 5) development machine it made ~100 GFLOP/s per core, while oneDNN's
JIT kernels (shipped inside torch, reached through `torch.ops.mkldnn._linear_pointwise`, the op
inductor uses for CPU linears) made ~215 on the same shapes, also with transposed operands. On
Intel processors MKL is already at full speed; oneDNN matches it there.

The backend (`backend()`) follows `UVD_CPU_GEMM` as it is at each call: `mkl` or `onednn` forces
it, `auto` (the default) takes oneDNN when the op exists and a probe product agrees with torch's
(probed once per process). Only eager fp32 CPU tensors outside autocast and torch.compile take it
(`wanted`), and `matmul_t` only outside autograd (the op has no backward: `_Linear` supplies one)
and with a non-empty inner dimension (oneDNN refuses K = 0); everything else, and a torch
without the op, gets the plain torch call. Results are IEEE fp32 either way; only the order of
additions inside a dot product may differ.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "onednn", "mkl")


def _onednn_op() -> Any:
    return getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


@functools.lru_cache(maxsize=None)
def _onednn_works() -> bool:
    """The op exists, runs, and agrees with torch's own product on a probe."""
    op = _onednn_op()
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        a, b = torch.randn(33, 40, generator=generator), torch.randn(24, 40, generator=generator)
        got = op(a, b.t().contiguous().t(), None, "none", [], "")
        return bool(torch.allclose(got, a @ b.t(), rtol=1e-5, atol=1e-5))
    except (RuntimeError, TypeError):
        return False


def backend() -> str:
    """'onednn' or 'mkl': what the CPU training GEMMs use in this process."""
    wanted_backend = os.environ.get("UVD_CPU_GEMM", "auto").strip().lower() or "auto"
    if wanted_backend not in BACKENDS:
        raise ValueError(f"UVD_CPU_GEMM must be one of {', '.join(BACKENDS)}, not {wanted_backend!r}")
    if wanted_backend == "mkl":
        return "mkl"
    if _onednn_works():
        return "onednn"
    if wanted_backend == "onednn":
        raise RuntimeError("UVD_CPU_GEMM=onednn, but this torch has no working oneDNN linear "
                           "(torch.ops.mkldnn._linear_pointwise); unset it to use MKL")
    return "mkl"


def wanted(*tensors: torch.Tensor) -> bool:
    """Whether these operands take oneDNN: eager fp32 on CPU, outside autocast, backend oneDNN."""
    return (all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
            and not torch.compiler.is_compiling() and not torch.is_autocast_enabled("cpu")
            and backend() == "onednn")


def matmul_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`a (M, K) @ b (N, K).T` -> (M, N); either operand may be a transposed view."""
    tracked = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    if a.shape[1] and not tracked and wanted(a, b):
        return _onednn_op()(a, b, None, "none", [], "")
    return a @ b.t()


class _Linear(torch.autograd.Function):
    """`F.linear(x, weight)` without bias, each of its three GEMMs through `matmul_t`."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(rows, weight)
        ctx.shape = x.shape
        return matmul_t(rows, weight).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        rows, weight = ctx.saved_tensors
        g = grad.reshape(-1, weight.shape[0])
        grad_x = matmul_t(g, weight.t()).view(ctx.shape) if ctx.needs_input_grad[0] else None
        grad_w = matmul_t(g.t(), rows.t()) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`F.linear(x, weight)` (no bias) whose forward and backward GEMMs go through oneDNN when
    `wanted`; otherwise torch's own."""
    if wanted(x, weight):
        return _Linear.apply(x, weight)
    return F.linear(x, weight)
