"""Fused output-layer cross-entropy for training: logits chunk by chunk, gradients made in forward.

Why: with an 8292-word vocabulary and a small model the output layer and its softmax are a quarter
of a training step, and autograd's path (logits -> log_softmax -> nll; backward: zero-filled nll
gradient -> log_softmax backward) walks the (tokens x vocab) matrix about six times and keeps it
alive until backward. Here each chunk of logits is made, turned into softmax in place with one
exp pass, and immediately into the gradients of the hidden states and of the output weight
(softmax - onehot, two matmuls); backward only scales them. Peak memory is one chunk of logits,
not all of them (the idea of Liger's fused linear cross-entropy). Same value and gradients as
`F.cross_entropy(hidden @ weight.T, targets)` up to float rounding.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .cpu_gemm import matmul_t


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                ignore_index: int, chunk_tokens: int) -> torch.Tensor:
        valid = targets != ignore_index
        count = valid.sum().clamp(min=1)
        scale = valid.to(torch.float32) / count  # per-row weight of the mean; 0 for ignored rows
        safe = torch.where(valid, targets, torch.zeros_like(targets))
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if _cpu_path(hidden, weight):
            total, grad_hidden, grad_weight = _cpu_chunks(hidden, weight, safe, scale, chunk_tokens,
                                                          want_hidden, want_weight)
            ctx.save_for_backward(*(x for x in (grad_hidden, grad_weight) if x is not None))
            ctx.has = (grad_hidden is not None, grad_weight is not None)
            ctx.weight_dtype = weight.dtype
            return total
        # Accumulators are updated out of place: torch.compile (2.11) routed the gradient of a
        # returned tensor that was mutated in place (`total += ...`) to the wrong output, so every
        # gradient came out zero on GPU (pytorch/pytorch#180642). Out of place costs nothing here.
        hidden_parts: list[torch.Tensor] = []
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_weight else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_tokens):
            end = min(start + chunk_tokens, hidden.shape[0])
            h, t = hidden[start:end], safe[start:end, None]
            logits = F.linear(h, weight).float()
            picked = logits.gather(1, t)
            peak = logits.amax(dim=1, keepdim=True)
            logits.sub_(peak).exp_()
            sums = logits.sum(dim=1, keepdim=True)
            row_loss = (peak + sums.log() - picked).squeeze(1)
            total = total + (row_loss * scale[start:end]).sum()
            if not (want_hidden or want_weight):
                continue
            # softmax - onehot, weighted by 1/count (0 on ignored rows): d loss / d logits
            logits.mul_(scale[start:end, None] / sums)
            logits.scatter_add_(1, t, -scale[start:end, None])
            g = logits.to(h.dtype) if h.dtype != torch.float32 else logits
            if want_hidden:
                hidden_parts.append(torch.mm(g, weight.to(g.dtype)).to(hidden.dtype))
            if grad_weight is not None:
                grad_weight = grad_weight + torch.mm(g.t(), h.to(g.dtype)).float()
        grad_hidden = torch.cat(hidden_parts) if want_hidden else None
        ctx.save_for_backward(*(x for x in (grad_hidden, grad_weight) if x is not None))
        ctx.has = (grad_hidden is not None, grad_weight is not None)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = list(ctx.saved_tensors)
        grad_hidden = grad_weight = None
        if (grad_output.device.type == "cpu" and not torch.compiler.is_compiling()
                and float(grad_output) == 1.0):  # the usual `loss.backward()`: the made gradients as they are
            return (saved.pop(0) if ctx.has[0] else None,
                    saved.pop(0).to(ctx.weight_dtype) if ctx.has[1] else None, None, None, None)
        if ctx.has[0]:
            made = saved.pop(0)
            grad_hidden = made * grad_output.to(made.dtype)
        if ctx.has[1]:
            grad_weight = (saved.pop(0) * grad_output).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None


# Tokens per chunk when the caller passes none. On CPU a chunk's logits (chunk x vocab fp32) should
# stay in cache between the GEMM that makes them and the two that use them: 256 tokens x 8292 words
# is 8 MiB. On the tiny preset (2x1024 tokens, one thread, MKL) 4096 -> 128 took the loss's forward
# and backward from about 245 to 190 ms: the logits GEMM no longer writes a fresh 68 MB matrix (page
# faults, cache misses) and the softmax passes run in cache. With oneDNN and row-major logits, whole
# steps interleaved: 128 tokens 195 ms, 256 tokens 193 ms (the vocab-major layout: 213 ms).
CHUNK_TOKENS = 4096
CPU_CHUNK_TOKENS = 256


def _cpu_path(hidden: torch.Tensor, weight: torch.Tensor) -> bool:
    """Eager fp32 on CPU, outside autocast (whose matmuls do not take `out=` or work in place)."""
    return (hidden.device.type == "cpu" and hidden.dtype == weight.dtype == torch.float32
            and not torch.compiler.is_compiling() and not torch.is_autocast_enabled("cpu"))


def _cpu_chunks(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor,
                chunk_tokens: int, want_hidden: bool, want_weight: bool
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The chunk loop on CPU, its three GEMMs through `trainer.cpu_gemm` (oneDNN where faster).
    Logits are made row-major (chunk x vocab: softmax along contiguous rows) and no GEMM copies a
    chunk's logits (oneDNN takes them transposed as its second operand; it makes only the small
    `h.t()` contiguous): the weight gradient accumulates transposed (hidden x vocab) and is
    transposed once at the end. Each chunk's hidden-state gradient is written into its rows. With
    oneDNN on the development machine's AMD EPYC this ran the tiny preset's loss (2x1024 tokens)
    in 98 ms against 113 for the vocab-major layout MKL preferred."""
    grad_hidden = torch.empty_like(hidden, memory_format=torch.contiguous_format) if want_hidden else None
    grad_weight_t = hidden.new_zeros(weight.shape[1], weight.shape[0]) if want_weight else None
    total = torch.zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_tokens):
        end = min(start + chunk_tokens, hidden.shape[0])
        h, t, w = hidden[start:end], targets[start:end, None], scale[start:end, None]
        logits = matmul_t(h, weight)  # (chunk, vocab)
        picked = logits.gather(1, t)
        peak = logits.amax(dim=1, keepdim=True)
        logits.sub_(peak).exp_()
        sums = logits.sum(dim=1, keepdim=True)
        total = total + ((peak + sums.log() - picked) * w).sum()
        if grad_hidden is None and grad_weight_t is None:
            continue
        logits.mul_(w / sums)  # softmax - onehot, weighted by 1/count: d loss / d logits
        logits.scatter_add_(1, t, -w)
        if grad_hidden is not None:
            grad_hidden[start:end] = matmul_t(logits, weight.t())
        if grad_weight_t is not None:
            grad_weight_t.add_(matmul_t(h.t(), logits.t()))
    grad_weight = grad_weight_t.t().contiguous() if grad_weight_t is not None else None
    return total, grad_hidden, grad_weight


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                               ignore_index: int = -100, chunk_tokens: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of `hidden (N, H) @ weight (V, H).T` against `targets (N,)`; rows whose
    target is `ignore_index` do not count. Outside autograd it is the plain chunked loss.
    `chunk_tokens` None: CPU_CHUNK_TOKENS on the CPU training path, else CHUNK_TOKENS."""
    if not (torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)):
        chunk_tokens = chunk_tokens or CHUNK_TOKENS
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk_tokens):
            logits = F.linear(hidden[start:start + chunk_tokens], weight).float()
            total = total + F.cross_entropy(logits, targets[start:start + chunk_tokens],
                                            ignore_index=ignore_index, reduction="sum")
        return total / (targets != ignore_index).sum().clamp(min=1)
    if chunk_tokens is None:
        chunk_tokens = CPU_CHUNK_TOKENS if _cpu_path(hidden, weight) else CHUNK_TOKENS
    return _FusedLinearCrossEntropy.apply(hidden, weight, targets, ignore_index, chunk_tokens)
