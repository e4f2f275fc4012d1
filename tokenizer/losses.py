"""Training losses for a VQGAN: pixel reconstruction, a PatchGAN discriminator with hinge loss,
and taming's adaptive GAN weight. No perceptual (LPIPS) term: it needs pretrained VGG weights,
and this package downloads nothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NLayerDiscriminator(nn.Module):
    """PatchGAN (pix2pix / taming): strided 4x4 convs, BatchNorm, LeakyReLU(0.2); one logit per patch."""

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < layers else 1
            seq += [nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=False),
                    nn.BatchNorm2d(channels * mult), nn.LeakyReLU(0.2, True)]
        seq.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*seq)
        self.apply(_init_weights)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # Pixels arrive in [0, 1]; the discriminator works on [-1, 1] like taming's.
        return self.main(pixels * 2.0 - 1.0)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()


def reconstruction_loss(x: torch.Tensor, y: torch.Tensor, l1: float = 1.0, l2: float = 1.0) -> torch.Tensor:
    return l1 * (x - y).abs().mean() + l2 * (x - y).pow(2).mean()


def colour_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared error of each image's per-channel mean: a colour cast of 3/255 costs only 1.4e-4 of
    plain MSE, too little to matter beside texture error, so a small model keeps one unless this
    term weighs it separately."""
    return (x.mean(dim=(2, 3)) - y.mean(dim=(2, 3))).pow(2).mean()


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    scale: float = 1.0, max_weight: float = 1e4) -> torch.Tensor:
    """taming: balance the GAN gradient against the reconstruction gradient at the last layer."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (g_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach() * scale


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1] (the whole batch as one signal)."""
    mse = (x.detach().float().clamp(0, 1) - y.detach().float().clamp(0, 1)).pow(2).mean().item()
    return float("inf") if mse == 0 else float(10.0 * torch.log10(torch.tensor(1.0 / mse)))
