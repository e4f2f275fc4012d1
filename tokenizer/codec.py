"""Batched inference: uint8 images <-> uint16 codes, fast on the device at hand.

`Tokenizer.encode` is what the build's Tokenize stage calls: NHWC uint8 in, (N, tokens) uint16
out. The fast path changes how the arithmetic is laid out, never what is computed:

- CPU: fp32 always; channels_last activations for wide models (oneDNN's native layout, no
  reorders around every conv); optionally `torch.compile` with inductor weight freezing (pre-packed conv weights, the
  residual add fused into the conv). The codes equal a plain eager fp32 forward's.
- CUDA: bf16 autocast for the convolutions, channels_last, pinned host memory and non-blocking
  copies, optional `torch.compile`. The code lookup itself always runs in fp32.

Batches are cut to `batch_size`; with compile on, the last partial batch is zero-padded so the
compiled graph sees one static shape (no recompiles, same kernels for every image).
"""

from __future__ import annotations

import contextlib
import os
from copy import deepcopy as copy_module
from typing import Callable, Iterator

import numpy as np
import torch

from . import checkpoint
from .model import VQGAN


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def code_agreement(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Share (0..1) of positions where two code arrays of the same shape hold the same code."""
    a = a.cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"code arrays differ in shape: {a.shape} vs {b.shape}")
    return float(np.mean(a.astype(np.int64) == b.astype(np.int64))) if a.size else 1.0


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """NHWC uint8 -> NCHW float32 in [0, 1] (a channels_last view, no copy of the layout)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """NCHW float in [0, 1] -> NHWC uint8 (rounded)."""
    return pixels.float().clamp(0, 1).mul(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.inference_mode()
def eager_encode(model: VQGAN, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """The plain reference: contiguous NCHW, fp32, eager, on the model's device. What the fast
    path is measured against (speed in the benchmark, code equality in the tests)."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        x = to_pixels(images[start:start + batch_size]).contiguous().to(device)
        out.append(model.encode_codes(x).cpu())
    return torch.cat(out).numpy().astype(np.uint16)


class Tokenizer:
    """A VQGAN ready for batched encode/decode of uint8 images on one device.

    One per process (a Beam DoFn builds it in `setup`): it holds the model (fp32, ~585 MB for
    LVM) and, with compile, a frozen copy of the pre-packed weights. A model passed in is copied
    unless `copy=False` (then it is converted in place: eval, no grads, device, layout).
    """

    def __init__(self, model: VQGAN, name: str = "vqgan", *, device: str | torch.device | None = None,
                 batch_size: int = 8, compile: bool = False, channels_last: bool | None = None,
                 precision: str = "auto", threads: int | None = None, copy: bool = True) -> None:
        if model.config.num_embeddings > 65536:
            raise ValueError(f"codebook of {model.config.num_embeddings} codes does not fit uint16 tokens")
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
        if threads is not None:
            torch.set_num_threads(threads)  # process-wide: torch has one intra-op pool
        self.device = torch.device(device) if device is not None else default_device()
        self.name = name
        self.batch_size = int(batch_size)
        if channels_last is None:
            # oneDNN's channels_last kernels pay off for wide layers (LVM: 128..768 channels); on
            # narrow ones (tiny: 32) they are slower on CPU and their numerics drift further.
            channels_last = self.device.type == "cuda" or model.config.hidden_channels >= 64
        self.channels_last = channels_last
        self.compile = compile
        self.precision = ("bf16" if self.device.type == "cuda" else "fp32") if precision == "auto" else precision
        if copy:  # we change layout, device and grad flags: leave the caller's model alone
            model = copy_module(model)
        self.model = model.eval().requires_grad_(False).to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._hash: str | None = None
        self._encode_fn: Callable[[torch.Tensor], torch.Tensor] = self.model.encode_latent
        self._decode_fn: Callable[[torch.Tensor], torch.Tensor] = self.model.decode_latent
        if compile:
            self._encode_fn = torch.compile(self.model.encode_latent, dynamic=False)
            self._decode_fn = torch.compile(self.model.decode_latent, dynamic=False)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], name: str | None = None, **options) -> "Tokenizer":
        """Load a muse-format folder (the released LVM tokenizer or one `tokenizer.fit` wrote)."""
        folder = os.fspath(path)
        options.setdefault("copy", False)  # the loaded model is ours alone
        return cls(checkpoint.load(folder), name or os.path.basename(os.path.normpath(folder)), **options)

    # -- what token shards record ------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def weights_hash(self) -> str:
        if self._hash is None:
            self._hash = checkpoint.weights_hash(self.model)
        return self._hash

    @property
    def codebook_size(self) -> int:
        return self.config.num_embeddings

    @property
    def tokens_per_image(self) -> int:
        return self.config.tokens_per_image

    @property
    def image_size(self) -> int:
        return self.config.resolution

    # -- plumbing ----------------------------------------------------------------------------
    def _context(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.compile and self.device.type == "cpu":
            import torch._inductor.config as inductor_config

            # Freezing turns weights into constants so inductor can pre-pack them for oneDNN.
            stack.enter_context(inductor_config.patch(freezing=True))
        if self.precision == "bf16":
            stack.enter_context(torch.autocast(device_type=self.device.type, dtype=torch.bfloat16))
        return stack

    def _batches(self, array: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
        """Slices of `batch_size`; the last one zero-padded when compiled (static shapes)."""
        for start in range(0, len(array), self.batch_size):
            chunk = array[start:start + self.batch_size]
            real = len(chunk)
            if self.compile and real < self.batch_size:
                pad = np.zeros((self.batch_size - real,) + chunk.shape[1:], dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            yield chunk, real

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    # -- the API -----------------------------------------------------------------------------
    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, H, W, 3), H and W multiples of 16 -> codes (N, H/16 * W/16) uint16."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        factor = self.config.downsample_factor
        if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] != self.config.num_channels:
            raise ValueError(f"expected uint8 images (N, H, W, {self.config.num_channels}), "
                             f"got {images.dtype} {images.shape}")
        if images.shape[1] % factor or images.shape[2] % factor:
            raise ValueError(f"image size {images.shape[1]}x{images.shape[2]} is not a multiple of {factor}")
        tokens = (images.shape[1] // factor) * (images.shape[2] // factor)
        out = np.empty((len(images), tokens), dtype=np.uint16)
        done = 0
        with self._context():
            for chunk, real in self._batches(images):
                x = self._to_device(chunk).permute(0, 3, 1, 2).float().div_(255.0)
                x = x.contiguous(memory_format=torch.channels_last if self.channels_last
                                 else torch.contiguous_format)
                latent = self._encode_fn(x)
                codes = self.model.quantize.codes(latent[:real])  # fp32 lookup, autocast off inside
                out[done:done + real] = codes.to(torch.int32).cpu().numpy()
                done += real
        return out

    def decode(self, codes: np.ndarray, grid: tuple[int, int] | None = None) -> np.ndarray:
        """codes (N, h*w) -> uint8 images (N, h*16, w*16, 3); square grid unless `grid` given."""
        codes = np.asarray(codes)
        if codes.ndim == 1:
            codes = codes[None]
        if codes.ndim != 2:
            raise ValueError(f"expected codes (N, tokens), got shape {codes.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got {codes.min()}..{codes.max()}")
        if grid is None:
            side = int(round(codes.shape[1] ** 0.5))
            if side * side != codes.shape[1]:
                raise ValueError(f"{codes.shape[1]} codes per image is not a square grid; pass grid=(h, w)")
            grid = (side, side)
        out = []
        with self._context():
            for chunk, real in self._batches(codes.astype(np.int64)):
                c = self._to_device(chunk)
                quantized = self.model.quantize.embed(c, *grid)
                if self.channels_last:
                    quantized = quantized.contiguous(memory_format=torch.channels_last)
                pixels = self._decode_fn(quantized)[:real]
                out.append(to_uint8(pixels))
        if not out:
            f = self.config.downsample_factor
            return np.zeros((0, grid[0] * f, grid[1] * f, self.config.num_channels), dtype=np.uint8)
        return np.concatenate(out)
