"""The VQGAN network, module for module and key for key as open-muse's `VQGANModel`.

State-dict names match the released "vqgan-f16-8192-laion" checkpoint exactly (taming layout:
`encoder.down.{i}.block.{j}.norm1`, `decoder.up.{i}.upsample.conv`, `quantize.embedding.weight`,
...), so its `pytorch_model.bin` loads without renaming. Pixels are in [0, 1] on both sides.

Differences from open-muse, all outside the inference path of the LVM preset:
- the training forward uses the textbook VQ-VAE losses (beta on the encoder-side commitment
  term; open-muse puts it on the codebook term) and returns them separately;
- an optional cosine lookup over l2-normalised codes (`codebook_l2_norm`, LlamaGen) and a
  dead-code restart for training new tokenizers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import VQGANConfig

# Rows of (tokens x codebook) distances computed at once: bounds lookup memory (~128 MB fp32).
_LOOKUP_CHUNK = 4096


def group_norm_by_channels(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor,
                           eps: float) -> torch.Tensor:
    """GroupNorm from per-channel statistics, in fp32; the same function as `F.group_norm`.

    `F.group_norm` views (N, C, H, W) as (N, groups, C/groups * H * W), which for a channels-last
    tensor is a strided gather: inductor then copies or reads the activation across its layout.
    Here the statistics are per (image, channel) first, a reduction over H and W that reads a
    channels-last tensor along its contiguous axis, and are combined into groups exactly (equal
    counts: the group mean is the mean of channel means, its variance the mean of channel
    variances plus the variance of the channel means). The normalisation is then one per-channel
    scale and shift, which inductor fuses with the SiLU and the cast that follow. Returns fp32,
    as `F.group_norm` does under autocast.
    """
    n, c = x.shape[:2]
    var_c, mean_c = torch.var_mean(x.float(), dim=(2, 3), correction=0)
    mean_c, var_c = mean_c.view(n, groups, -1), var_c.view(n, groups, -1)
    mean = mean_c.mean(-1, keepdim=True)
    var = var_c.mean(-1, keepdim=True) + (mean_c - mean).square().mean(-1, keepdim=True)
    scale = (torch.rsqrt(var + eps) * weight.float().view(1, groups, -1)).view(n, c)
    shift = bias.float() - (mean * scale.view(n, groups, -1)).view(n, c)
    return x.float() * scale[:, :, None, None] + shift[:, :, None, None]


class GroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` (same parameters, same state-dict keys) that can compute through
    `group_norm_by_channels` instead: the GPU tokenizer's compiled channels-last path turns it on
    (`use_channel_statistics`); everything else keeps torch's own kernel."""

    by_channels: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.by_channels:
            return group_norm_by_channels(x, self.num_groups, self.weight, self.bias, self.eps)
        return super().forward(x)


def group_norm(channels: int) -> GroupNorm:
    """taming's GroupNorm (32 groups, eps 1e-6); fewer groups when 32 does not divide `channels`."""
    return GroupNorm(num_groups=math.gcd(channels, 32), num_channels=channels, eps=1e-6, affine=True)


def use_channel_statistics(model: nn.Module, enabled: bool = True) -> None:
    """Switch every GroupNorm of `model` to (or back from) `group_norm_by_channels`."""
    for module in model.modules():
        if isinstance(module, GroupNorm):
            module.by_channels = enabled


class ResnetBlock(nn.Module):
    """norm-SiLU-conv twice plus a residual; 1x1 `nin_shortcut` when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.nin_shortcut = (nn.Conv2d(in_channels, out_channels, kernel_size=1)
                             if in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class Downsample(nn.Module):
    """Halve the grid: pad right/bottom by one, then a stride-2 3x3 conv (or 2x2 average pool)."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Double the grid: nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x if self.conv is None else self.conv(x)


class MidBlock(nn.Module):
    """Two resnet blocks at the lowest resolution (no attention: `no_attn_mid_block`)."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.block_1(x))


class DownLevel(nn.Module):
    """One encoder level: `num_res_blocks` resnet blocks, then a downsample unless last."""

    def __init__(self, config: VQGANConfig, level: int) -> None:
        super().__init__()
        in_mult = (1,) + tuple(config.channel_mult)
        block_in = config.hidden_channels * in_mult[level]
        block_out = config.hidden_channels * config.channel_mult[level]
        blocks = []
        for _ in range(config.num_res_blocks):
            blocks.append(ResnetBlock(block_in, block_out, config.dropout))
            block_in = block_out
        self.block = nn.ModuleList(blocks)
        last = level == config.num_resolutions - 1
        self.downsample = None if last else Downsample(block_out, config.resample_with_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class UpLevel(nn.Module):
    """One decoder level, mirror of encoder level `level`: resnet blocks, upsample unless level 0."""

    def __init__(self, config: VQGANConfig, level: int) -> None:
        super().__init__()
        mult = config.channel_mult
        block_in = config.hidden_channels * mult[min(level + 1, config.num_resolutions - 1)]
        block_out = config.hidden_channels * mult[level]
        blocks = []
        for _ in range(config.num_res_blocks + 1):
            blocks.append(ResnetBlock(block_in, block_out, config.dropout))
            block_in = block_out
        self.block = nn.ModuleList(blocks)
        self.upsample = None if level == 0 else Upsample(block_out, config.resample_with_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        return x if self.upsample is None else self.upsample(x)


class Encoder(nn.Module):
    """pixels (N, 3, H, W) -> features (N, z_channels, H/f, W/f)."""

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(config.num_channels, config.hidden_channels, kernel_size=3, padding=1)
        self.down = nn.ModuleList(DownLevel(config, i) for i in range(config.num_resolutions))
        mid = config.hidden_channels * config.channel_mult[-1]
        self.mid = MidBlock(mid, config.dropout)
        self.norm_out = group_norm(mid)
        self.conv_out = nn.Conv2d(mid, config.z_channels, kernel_size=3, padding=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The body (conv_in, levels, mid): nearly all the compute."""
        x = self.conv_in(x)
        for level in self.down:
            x = level(x)
        return self.mid(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """norm_out, SiLU, conv_out: cheap, and kept in fp32 by reduced-precision callers."""
        return self.conv_out(F.silu(self.norm_out(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Decoder(nn.Module):
    """features (N, z_channels, h, w) -> pixels (N, 3, h*f, w*f), unclamped."""

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        block_in = config.hidden_channels * config.channel_mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, block_in, kernel_size=3, padding=1)
        self.mid = MidBlock(block_in, config.dropout)
        # Indexed like the encoder (up.{i} mirrors down.{i}); run from the last level to 0.
        self.up = nn.ModuleList(UpLevel(config, i) for i in range(config.num_resolutions))
        block_out = config.hidden_channels * config.channel_mult[0]
        self.norm_out = group_norm(block_out)
        self.conv_out = nn.Conv2d(block_out, config.num_channels, kernel_size=3, padding=1)
        # `decoder_level`: norm_out removes each image's level per channel group, so the output's
        # mean colour could only come from texture; this maps the features' per-image means, taken
        # before the norm, to an output offset per channel. Zero at first: weights trained without
        # it decode exactly as before (`tokenizer.fit --decoder-level --init ...`).
        self.level_out = nn.Linear(block_out, config.num_channels) if config.decoder_level else None
        if self.level_out is not None:
            nn.init.zeros_(self.level_out.weight)
            nn.init.zeros_(self.level_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.conv_in(x))
        for level in reversed(self.up):
            x = level(x)
        out = self.conv_out(F.silu(self.norm_out(x)))
        if self.level_out is not None:
            out = out + self.level_out(x.mean(dim=(2, 3)))[:, :, None, None]
        return out


@dataclass
class QuantizerOutput:
    """Straight-through quantised features plus the two VQ loss terms (unweighted codebook term,
    beta-weighted commitment term)."""

    quantized: torch.Tensor
    codes: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor


class VectorQuantizer(nn.Module):
    """Nearest-neighbour lookup in `embedding` (K x D).

    Plain mode computes distances exactly as open-muse does (|z|^2 + |e|^2 - 2 z.e via addmm), so
    released weights give the released codes. l2 mode (LlamaGen) normalises both sides and takes
    the largest cosine; with a low D this keeps a trained codebook in use.
    """

    def __init__(self, num_embeddings: int, dim: int, beta: float, l2_norm: bool) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.dim = dim
        self.beta = beta
        self.l2_norm = l2_norm
        if torch.get_default_device().type == "meta":
            # built to be loaded (`checkpoint.load`): no init, whose normal_ on meta tensors imported
            # 822 modules (torch's Python meta kernels, sympy) for 1.1 CPU-s in an eager process
            self.embedding = nn.Embedding(num_embeddings, dim, _weight=torch.empty(num_embeddings, dim))
            return
        self.embedding = nn.Embedding(num_embeddings, dim)
        if l2_norm:
            nn.init.normal_(self.embedding.weight)
        else:
            nn.init.uniform_(self.embedding.weight, -1.0 / num_embeddings, 1.0 / num_embeddings)

    def codebook(self) -> torch.Tensor:
        weight = self.embedding.weight
        return F.normalize(weight, dim=1) if self.l2_norm else weight

    def lookup(self, flat: torch.Tensor) -> torch.Tensor:
        """Code index for every row of `flat` (M x D), in chunks to bound memory."""
        with torch.autocast(device_type=flat.device.type, enabled=False):  # always fp32 distances
            flat = flat.float()
            codebook = self.codebook().float()
            if self.l2_norm:
                flat = F.normalize(flat, dim=1)
            else:
                codebook_sq = codebook.pow(2.0).sum(dim=1)
            out = []
            for rows in flat.split(_LOOKUP_CHUNK):
                if self.l2_norm:
                    out.append(torch.argmax(rows @ codebook.t(), dim=1))
                else:
                    sq = rows.pow(2.0).sum(dim=1, keepdim=True) + codebook_sq
                    out.append(torch.argmin(torch.addmm(sq, rows, codebook.t(), alpha=-2.0), dim=1))
            return torch.cat(out)

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) features -> (N, h*w) codes in raster order."""
        n, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(n * h * w, d)
        return self.lookup(flat).view(n, h * w)

    def embed(self, codes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(N, h*w) codes -> (N, D, h, w) code vectors."""
        vectors = F.embedding(codes, self.codebook())
        return vectors.view(codes.shape[0], height, width, self.dim).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        n, d, h, w = z.shape
        codes = self.codes(z.detach())
        quantized = self.embed(codes, h, w)
        if self.l2_norm:
            z = F.normalize(z, dim=1)
        codebook_loss = F.mse_loss(quantized, z.detach())
        commitment_loss = self.beta * F.mse_loss(z, quantized.detach())
        quantized = z + (quantized - z).detach()  # straight-through estimator
        return QuantizerOutput(quantized, codes, codebook_loss, commitment_loss)

    @torch.no_grad()
    def restart_dead_codes(self, dead: torch.Tensor, z: torch.Tensor, generator: torch.Generator | None = None,
                           noise: float = 0.01) -> int:
        """Re-seed the codes flagged in `dead` (bool, K) from random encoder outputs `z` (N, D, h, w).

        Why: a code no input picks never gets a gradient and stays dead; moving it onto live data
        gives it a chance (the usual fix for codebook collapse). Returns how many were restarted.
        """
        index = torch.nonzero(dead, as_tuple=False).flatten()
        if index.numel() == 0:
            return 0
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float()
        if self.l2_norm:
            flat = F.normalize(flat, dim=1)
        pick = torch.randint(0, flat.shape[0], (index.numel(),), generator=generator, device=flat.device)
        jitter = torch.randn(index.numel(), flat.shape[1], generator=generator, device=flat.device)
        scale = flat.std() if flat.numel() > 1 else flat.new_tensor(1.0)
        fresh = flat[pick] + noise * scale * jitter
        self.embedding.weight[index] = fresh.to(self.embedding.weight.dtype)
        return int(index.numel())


@dataclass
class VQGANOutput:
    """The training forward: reconstruction (unclamped, so the loss has gradients everywhere),
    codes (N, h*w), and the VQ loss terms."""

    reconstruction: torch.Tensor
    codes: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    latent: torch.Tensor

    @property
    def vq_loss(self) -> torch.Tensor:
        return self.codebook_loss + self.commitment_loss


class VQGAN(nn.Module):
    """open-muse `VQGANModel`: encoder -> quant_conv -> quantize -> post_quant_conv -> decoder."""

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config.num_embeddings, config.quantized_embed_dim,
                                        config.commitment_cost, config.codebook_l2_norm)
        self.quant_conv = nn.Conv2d(config.z_channels, config.quantized_embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(config.quantized_embed_dim, config.z_channels, kernel_size=1)

    def last_layer(self) -> torch.Tensor:
        """The weight the adaptive GAN weight is measured on (taming)."""
        return self.decoder.conv_out.weight

    def encode_latent(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (N, 3, H, W) in [0, 1] -> pre-quantisation features (N, D, H/f, W/f)."""
        return self.quant_conv(self.encoder(pixels))

    def encode_codes(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (N, 3, H, W) float in [0, 1] -> codes LongTensor (N, H/f * W/f), raster order."""
        return self.quantize.codes(self.encode_latent(pixels))

    def decode_latent(self, quantized: torch.Tensor) -> torch.Tensor:
        """Quantised features -> pixels, unclamped."""
        return self.decoder(self.post_quant_conv(quantized))

    def decode_codes(self, codes: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """codes (N, h*w) -> pixels (N, 3, h*f, w*f) clamped to [0, 1]; square grid unless given."""
        if grid is None:
            side = math.isqrt(codes.shape[1])
            if side * side != codes.shape[1]:
                raise ValueError(f"{codes.shape[1]} codes per image is not a square grid; pass grid=(h, w)")
            grid = (side, side)
        quantized = self.quantize.embed(codes.long(), *grid)
        return self.decode_latent(quantized).clamp(0.0, 1.0)

    def forward(self, pixels: torch.Tensor) -> VQGANOutput:
        latent = self.encode_latent(pixels)
        q = self.quantize(latent)
        return VQGANOutput(self.decode_latent(q.quantized), q.codes, q.codebook_loss, q.commitment_loss, latent)


Shapes = dict[str, tuple[int, ...]]


def _conv_shapes(prefix: str, cin: int, cout: int, kernel: int) -> Shapes:
    return {f"{prefix}.weight": (cout, cin, kernel, kernel), f"{prefix}.bias": (cout,)}


def _norm_shapes(prefix: str, channels: int) -> Shapes:
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,)}


def _resnet_shapes(prefix: str, cin: int, cout: int) -> Shapes:
    shapes = {**_norm_shapes(f"{prefix}.norm1", cin), **_conv_shapes(f"{prefix}.conv1", cin, cout, 3),
              **_norm_shapes(f"{prefix}.norm2", cout), **_conv_shapes(f"{prefix}.conv2", cout, cout, 3)}
    if cin != cout:
        shapes.update(_conv_shapes(f"{prefix}.nin_shortcut", cin, cout, 1))
    return shapes


def _mid_shapes(prefix: str, channels: int) -> Shapes:
    return {**_resnet_shapes(f"{prefix}.block_1", channels, channels),
            **_resnet_shapes(f"{prefix}.block_2", channels, channels)}


def _encoder_shapes(config: VQGANConfig) -> Shapes:
    hidden, mult = config.hidden_channels, config.channel_mult
    shapes = _conv_shapes("encoder.conv_in", config.num_channels, hidden, 3)
    for level in range(config.num_resolutions):
        block_in, block_out = hidden * ((1,) + mult)[level], hidden * mult[level]
        for j in range(config.num_res_blocks):
            shapes.update(_resnet_shapes(f"encoder.down.{level}.block.{j}", block_in, block_out))
            block_in = block_out
        if level != config.num_resolutions - 1 and config.resample_with_conv:
            shapes.update(_conv_shapes(f"encoder.down.{level}.downsample.conv", block_out, block_out, 3))
    mid = hidden * mult[-1]
    return {**shapes, **_mid_shapes("encoder.mid", mid), **_norm_shapes("encoder.norm_out", mid),
            **_conv_shapes("encoder.conv_out", mid, config.z_channels, 3)}


def _decoder_shapes(config: VQGANConfig) -> Shapes:
    hidden, mult, levels = config.hidden_channels, config.channel_mult, config.num_resolutions
    shapes = {**_conv_shapes("decoder.conv_in", config.z_channels, hidden * mult[-1], 3),
              **_mid_shapes("decoder.mid", hidden * mult[-1])}
    for level in range(levels):
        block_in, block_out = hidden * mult[min(level + 1, levels - 1)], hidden * mult[level]
        for j in range(config.num_res_blocks + 1):
            shapes.update(_resnet_shapes(f"decoder.up.{level}.block.{j}", block_in, block_out))
            block_in = block_out
        if level != 0 and config.resample_with_conv:
            shapes.update(_conv_shapes(f"decoder.up.{level}.upsample.conv", block_out, block_out, 3))
    block_out = hidden * mult[0]
    shapes.update({**_norm_shapes("decoder.norm_out", block_out),
                   **_conv_shapes("decoder.conv_out", block_out, config.num_channels, 3)})
    if config.decoder_level:
        shapes.update({"decoder.level_out.weight": (config.num_channels, block_out),
                       "decoder.level_out.bias": (config.num_channels,)})
    return shapes


def state_shapes(config: VQGANConfig) -> Shapes:
    """Name -> shape of every tensor of `VQGAN(config).state_dict()`, in its order, by arithmetic.

    Why not build the model on the meta device: that costs a Python module per block, so a config
    of a few bytes declaring thousands of blocks (or absurd widths) would cost minutes before the
    checkpoint's tensors are even compared with it. A loader compares with these shapes first and
    builds only a model the file's tensors fill (tests/test_tokenizer.py keeps the two equal)."""
    z, d = config.z_channels, config.quantized_embed_dim
    return {**_encoder_shapes(config), **_decoder_shapes(config),
            "quantize.embedding.weight": (config.num_embeddings, d),
            **_conv_shapes("quant_conv", z, d, 1), **_conv_shapes("post_quant_conv", d, z, 1)}


def build(config: VQGANConfig, seed: int | None = None, device: str | torch.device | None = None) -> VQGAN:
    """A freshly initialised model; with `seed`, the same weights on every machine and process."""
    if seed is None:
        return VQGAN(config).to(device or "cpu")
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = VQGAN(config)
    finally:
        torch.random.set_rng_state(state)
    return model.to(device or "cpu")


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
