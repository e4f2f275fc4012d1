"""The LVM transformer: a LLaMA decoder over visual tokens.

Parameter names are those of Hugging Face `LlamaForCausalLM` (`model.layers.0.self_attn.q_proj`,
`lm_head`, ...) so that interop is a file-format question, not a renaming one. RoPE uses the HF
"rotate half" layout for the same reason. Attention is `scaled_dot_product_attention`; a
`KVCache` makes sampling 256 tokens per image cost one token per step instead of a full window.
A CPU training step takes `_TrainingAttention` instead (one GEMM for q, k and v, RoPE, blocked
causal attention that keeps its probabilities); the parameters stay HF's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import cpu_gemm
from .config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype == self.weight.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)  # same arithmetic, fewer autograd nodes
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_tables(config: ModelConfig, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (T, head_dim) for the given absolute positions (HF layout: halves repeated)."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, device=positions.device,
                                                         dtype=torch.float32) / dim))
    angles = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (N, heads, T, head_dim)."""
    return x * cos + _rotate_half(x) * sin


def _rope_into(x: torch.Tensor, c: torch.Tensor, s: torch.Tensor, sign: float, out: torch.Tensor) -> torch.Tensor:
    """`apply_rope` of x (..., T, heads, head_dim) written into `out` (any strides), with the
    tables' halves c, s (T, 1, head_dim / 2): the complex product (x1 + i x2)(c + i s) half by
    half; sign -1 multiplies by the conjugate (RoPE's backward)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    o1, o2 = out[..., :half], out[..., half:]
    torch.mul(x1, c, out=o1)
    o1.addcmul_(x2, s, value=-sign)
    torch.mul(x2, c, out=o2)
    o2.addcmul_(x1, s, value=sign)
    return out


# `_TrainingAttention`: query rows per block, and the most bytes of softmax probabilities all
# layers of a step together may keep for backward (beyond that a step takes SDPA). Counted for
# every layer even under activation checkpointing, where only one layer's are alive at a time:
# conservative, and a step that checkpoints is one that is short of memory anyway.
ATTENTION_BLOCK = 128
ATTENTION_SAVED_BYTES = 1024 * 2**20


class _TrainingAttention(torch.autograd.Function):
    """Causal self-attention of a CPU training step, from the fused projection
    `qkv (N, T, 3 * heads, head_dim)` to the rows `(N, T, heads * head_dim)` that `o_proj` takes.

    SDPA on CPU (its flash kernel) recomputes the scores in backward and works in small tiles; at
    the tiny preset's head_dim of 32 it ran at about half the GEMM rate. Here query rows go in
    blocks of ATTENTION_BLOCK through batched GEMMs against the keys up to the block's end (the
    causal half of the work plus the diagonal blocks), and each block's softmax probabilities are
    kept (N * heads * T * (T + block) / 2 floats: `Attention` checks ATTENTION_SAVED_BYTES), so
    backward is four GEMMs per block and recomputes nothing. RoPE is applied on the way into the
    head-major q and k, with 1/sqrt(head_dim) folded into the queries' tables; the gradient comes
    back in `qkv`'s layout, so the projection's backward is one GEMM. Same arithmetic as SDPA's
    math up to float rounding (tests/test_trainer_fit.py compares them)."""

    @staticmethod
    def forward(ctx: Any, qkv: torch.Tensor, c: torch.Tensor, s: torch.Tensor, block: int) -> torch.Tensor:
        n, t, three_heads, d = qkv.shape
        heads = three_heads // 3
        scale = d ** -0.5
        q = qkv.new_empty(n, heads, t, d)
        k = qkv.new_empty(n, heads, t, d)
        _rope_into(qkv[:, :, :heads], c * scale, s * scale, 1.0, q.transpose(1, 2))
        _rope_into(qkv[:, :, heads:2 * heads], c, s, 1.0, k.transpose(1, 2))
        q, k = q.view(n * heads, t, d), k.view(n * heads, t, d)
        v = qkv[:, :, 2 * heads:].transpose(1, 2).reshape(n * heads, t, d)
        out = qkv.new_empty(n * heads, t, d)
        above = torch.full((block, block), float("-inf"), dtype=qkv.dtype, device=qkv.device).triu_(1)
        probs = []
        for start in range(0, t, block):
            end = min(start + block, t)
            scores = torch.bmm(q[:, start:end], k[:, :end].transpose(1, 2))
            scores[:, :, start:end].add_(above[:end - start, :end - start])  # causal: -inf above the diagonal
            p = torch.softmax(scores, -1, out=scores)  # in place: the scores are still in cache
            torch.bmm(p, v[:, :end], out=out[:, start:end])
            probs.append(p)
        ctx.save_for_backward(q, k, v, out, c, s, *probs)
        ctx.block = block
        return out.view(n, heads, t, d).transpose(1, 2).reshape(n, t, heads * d)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, v, out, c, s, *probs = ctx.saved_tensors
        nh, t, d = q.shape
        n = grad.shape[0]
        heads = nh // n
        go = grad.reshape(n, t, heads, d).transpose(1, 2).reshape(nh, t, d)
        delta = (go * out).sum(-1, keepdim=True)  # rowsum(dO * O): the softmax backward's correction
        dq = torch.empty_like(q)
        dk = torch.zeros_like(k)
        dv = torch.zeros_like(v)
        for p, start in zip(probs, range(0, t, ctx.block)):
            end = start + p.shape[1]
            g = go[:, start:end]
            dv[:, :end].baddbmm_(p.transpose(1, 2), g)
            dp = torch.bmm(g, v[:, :end].transpose(1, 2))
            dp.sub_(delta[:, start:end]).mul_(p)  # d scores
            torch.bmm(dp, k[:, :end], out=dq[:, start:end])
            dk[:, :end].baddbmm_(dp.transpose(1, 2), q[:, start:end])
        scale = d ** -0.5
        grad_qkv = grad.new_empty(n, t, 3 * heads, d)
        _rope_into(dq.view(n, heads, t, d).transpose(1, 2), c * scale, s * scale, -1.0, grad_qkv[:, :, :heads])
        _rope_into(dk.view(n, heads, t, d).transpose(1, 2), c, s, -1.0, grad_qkv[:, :, heads:2 * heads])
        grad_qkv[:, :, 2 * heads:] = dv.view(n, heads, t, d).transpose(1, 2)
        return grad_qkv, None, None, None


@dataclass
class KVCache:
    """Keys and values of the tokens seen so far, one entry per layer.

    Stored in buffers that grow by doubling, so sampling a token writes one position instead of
    copying the whole cache (a `torch.cat` per token and layer made a 3,840-token window cost
    O(T^2) copies); `append` returns views of the filled part."""

    keys: list[torch.Tensor | None] = field(default_factory=list)
    values: list[torch.Tensor | None] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.lengths[0] if self.lengths else 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        while len(self.keys) <= layer:
            self.keys.append(None)
            self.values.append(None)
            self.lengths.append(0)
        used, need = self.lengths[layer], self.lengths[layer] + k.shape[2]
        held = self.keys[layer]
        if held is None or held.shape[2] < need:
            capacity = max(need, 2 * (held.shape[2] if held is not None else 0), 256)
            grown_k = k.new_empty(k.shape[0], k.shape[1], capacity, k.shape[3])
            grown_v = v.new_empty(v.shape[0], v.shape[1], capacity, v.shape[3])
            if held is not None:
                grown_k[:, :, :used] = held[:, :, :used]
                grown_v[:, :, :used] = self.values[layer][:, :, :used]
            self.keys[layer], self.values[layer] = grown_k, grown_v
        self.keys[layer][:, :, used:need] = k
        self.values[layer][:, :, used:need] = v
        self.lengths[layer] = need
        return self.keys[layer][:, :, :need], self.values[layer][:, :, :need]


def _fused_projections(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether a training step computes the projections that read the same input as one GEMM over
    the concatenated weights (q, k, v; gate, up): wider GEMMs, one input-gradient GEMM instead of
    several plus their sum. `fuse_projections` None: on GPUs (the CPU step has its own paths);
    True/False force it. The parameters stay HF's."""
    asked = module.fuse_projections
    return torch.is_grad_enabled() and (x.device.type != "cpu" if asked is None else asked)


class Attention(nn.Module):
    fuse_projections: bool | None = None

    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.config = config
        self.layer = layer
        h, d = config.hidden_size, config.head_dim
        self.q_proj = nn.Linear(h, config.num_attention_heads * d, bias=False)
        self.k_proj = nn.Linear(h, config.kv_heads * d, bias=False)
        self.v_proj = nn.Linear(h, config.kv_heads * d, bias=False)
        self.o_proj = nn.Linear(config.num_attention_heads * d, h, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None) -> torch.Tensor:
        n, t, _ = x.shape
        c = self.config
        if cache is None and self._training_attention(x, t):
            qkv = cpu_gemm.linear(x, self._qkv_weight()).view(n, t, 3 * c.num_attention_heads, c.head_dim)
            half = c.head_dim // 2
            rows = _TrainingAttention.apply(qkv, cos[:, None, :half], sin[:, None, :half], ATTENTION_BLOCK)
            return cpu_gemm.linear(rows, self.o_proj.weight)
        if cache is None and _fused_projections(self, x):  # one GEMM for q, k and v
            q, k, v = F.linear(x, self._qkv_weight()).split(
                [c.num_attention_heads * c.head_dim, c.kv_heads * c.head_dim, c.kv_heads * c.head_dim], dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(n, t, c.num_attention_heads, c.head_dim).transpose(1, 2)
        k = k.view(n, t, c.kv_heads, c.head_dim).transpose(1, 2)
        v = v.view(n, t, c.kv_heads, c.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.append(self.layer, k, v)
        past = k.shape[2] - t
        if c.kv_heads != c.num_attention_heads:
            repeat = c.num_attention_heads // c.kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        if past == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif t == 1:
            out = F.scaled_dot_product_attention(q, k, v)
        else:  # a chunk after a cached prefix: causal within the chunk, full over the prefix
            mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(diagonal=past)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(n, t, -1))

    def _qkv_weight(self) -> torch.Tensor:
        """q, k and v's weights stacked: one GEMM for the three projections (HF's parameters kept)."""
        return torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])

    def _training_attention(self, x: torch.Tensor, t: int) -> bool:
        """Whether `_TrainingAttention` takes this call: an eager fp32 step on CPU under autograd,
        every head with its own keys, and the probabilities all layers keep within ATTENTION_SAVED_BYTES."""
        c = self.config
        if not (x.device.type == "cpu" and x.dtype == self.q_proj.weight.dtype == torch.float32
                and torch.is_grad_enabled() and (x.requires_grad or self.q_proj.weight.requires_grad)
                and c.kv_heads == c.num_attention_heads and not torch.is_autocast_enabled("cpu")
                and not torch.compiler.is_compiling()):
            return False
        per_layer = x.shape[0] * c.num_attention_heads * t * (t + ATTENTION_BLOCK) // 2 * 4
        return per_layer * c.num_hidden_layers <= ATTENTION_SAVED_BYTES


class MLP(nn.Module):
    fuse_projections: bool | None = None

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # training: the CPU step's GEMMs through oneDNN where it is faster (`cpu_gemm.linear` is
        # F.linear everywhere else); inference keeps torch's own
        linear = cpu_gemm.linear if torch.is_grad_enabled() else F.linear
        if _fused_projections(self, x):  # gate and up in one GEMM (and one in backward)
            gate, up = linear(x, torch.cat([self.gate_proj.weight, self.up_proj.weight])).chunk(2, dim=-1)
        else:
            gate, up = linear(x, self.gate_proj.weight), linear(x, self.up_proj.weight)
        return linear(F.silu(gate) * up, self.down_proj.weight)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.self_attn = Attention(config, layer)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaBody(nn.Module):
    """`model.*` of HF LlamaForCausalLM: embeddings, layers, final norm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


def state_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of `LVMTransformer(config).state_dict()`, in its order, by
    arithmetic: a loader compares a checkpoint's headers with these before building anything, so
    a config.json declaring thousands of layers costs a dict, not a module per layer
    (tests/test_trainer_interop.py keeps the two equal)."""
    h, m, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    q, kv = config.num_attention_heads * config.head_dim, config.kv_heads * config.head_dim
    layer = {"self_attn.q_proj.weight": (q, h), "self_attn.k_proj.weight": (kv, h), "self_attn.v_proj.weight": (kv, h),
             "self_attn.o_proj.weight": (h, q), "mlp.gate_proj.weight": (m, h), "mlp.up_proj.weight": (m, h),
             "mlp.down_proj.weight": (h, m), "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,)}
    shapes = {"model.embed_tokens.weight": (vocab, h)}
    for i in range(config.num_hidden_layers):
        shapes.update({f"model.layers.{i}.{name}": shape for name, shape in layer.items()})
    return {**shapes, "model.norm.weight": (h,), "lm_head.weight": (vocab, h)}


class LVMTransformer(nn.Module):
    """Token ids (N, T) -> logits (N, T, vocab). Untied input and output embeddings."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaBody(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.activation_checkpointing = False
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)

    def hidden_states(self, input_ids: torch.Tensor, cache: KVCache | None = None,
                      rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Final-norm hidden states (N, T, hidden); with a cache, positions continue after it.
        `rope`: the cos/sin tables of positions 0..T-1 made beforehand (`rope_tables`), which a
        compiled training step then reads instead of recomputing them inside every kernel that
        applies them (inductor inlined the cos/sin into each RoPE kernel: ~10% of an H200 step)."""
        n, t = input_ids.shape
        start = cache.length if cache is not None else 0
        if start + t > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {start + t} tokens exceeds max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        x = self.model.embed_tokens(input_ids)
        if rope is not None and start == 0 and rope[0].shape[0] == t:
            cos, sin = rope[0].to(x.dtype), rope[1].to(x.dtype)
        else:
            positions = torch.arange(start, start + t, device=input_ids.device)
            cos, sin = rope_tables(self.config, positions, x.dtype)
        for layer in self.model.layers:
            if self.activation_checkpointing and self.training and cache is None:
                x = checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x = layer(x, cos, sin, cache)
        return self.model.norm(x)

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        return self.lm_head(self.hidden_states(input_ids, cache))

    def loss(self, input_ids: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100,
             chunk_tokens: int | None = None, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Mean next-token cross-entropy through `trainer.losses`' fused output layer: logits are
        made chunk by chunk (the full (N*T, vocab) fp32 tensor never exists) and, under autograd,
        turned into gradients at once."""
        from .losses import fused_linear_cross_entropy

        hidden = self.hidden_states(input_ids, rope=rope).flatten(0, 1)
        return fused_linear_cross_entropy(hidden, self.lm_head.weight, targets.flatten(), ignore_index, chunk_tokens)
