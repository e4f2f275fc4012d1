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


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                ignore_index: int, chunk_tokens: int) -> torch.Tensor:
        valid = targets != ignore_index
        count = valid.sum().clamp(min=1)
        scale = valid.to(torch.float32) / count  # per-row weight of the mean; 0 for ignored rows
        safe = torch.where(valid, targets, torch.zeros_like(targets))
        # Accumulators are updated out of place: torch.compile (2.11) routed the gradient of a
        # returned tensor that was mutated in place (`total += ...`) to the wrong output, so every
        # gradient came out zero on GPU (pytorch/pytorch#180642). Out of place costs nothing here.
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
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
        if ctx.has[0]:
            made = saved.pop(0)
            grad_hidden = made * grad_output.to(made.dtype)
        if ctx.has[1]:
            grad_weight = (saved.pop(0) * grad_output).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                               ignore_index: int = -100, chunk_tokens: int = 4096) -> torch.Tensor:
    """Mean cross-entropy of `hidden (N, H) @ weight (V, H).T` against `targets (N,)`; rows whose
    target is `ignore_index` do not count. Outside autograd it is the plain chunked loss."""
    if not (torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)):
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk_tokens):
            logits = F.linear(hidden[start:start + chunk_tokens], weight).float()
            total = total + F.cross_entropy(logits, targets[start:start + chunk_tokens],
                                            ignore_index=ignore_index, reduction="sum")
        return total / (targets != ignore_index).sum().clamp(min=1)
    return _FusedLinearCrossEntropy.apply(hidden, weight, targets, ignore_index, chunk_tokens)
