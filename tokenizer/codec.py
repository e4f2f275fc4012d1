"""Batched inference: uint8 images <-> uint16 codes, fast on the device at hand.

`Tokenizer.encode` is what the build's Tokenize stage calls: NHWC uint8 in, (N, tokens) uint16
out. The fast path changes how the arithmetic is laid out, not what is computed:

- CPU: fp32 always. With `compile=True`: `torch.compile` with inductor weight freezing
  (pre-packed conv weights, residual adds fused into the convs) and, for wide models,
  channels_last activations (oneDNN's native layout, no reorders around every conv);
  optionally several single-threaded streams instead of one multi-threaded one. Features move
  by float rounding only (~1e-5), so codes equal the plain eager fp32 forward's except where two
  codes tie to within that rounding (none of 1536 codes in the benchmark).
- CUDA: channels_last, pinned host memory and non-blocking copies, optional `torch.compile`
  (with GroupNorm computed from per-channel statistics, which inductor reads along the
  channels-last activations' contiguous axis: +14% encode rate on an H200;
  optionally with inductor's coordinate-descent tuning of its generated GroupNorm/SiLU kernels,
  `tune_kernels`: faster once compiled, a much longer first call, and picks that depend on
  timings; figures in the README and `benchmarks/explore_tokenizer_cuda.py`), fixed cuDNN algorithms. fp32 by default; `precision="tf32"`, `"fp16"` or `"bf16"` (autocast
  for the encoder body and the decoder; encoder head, quant_conv and the code lookup stay fp32)
  trade exact codes for speed. fp16 and bf16 run at the same tensor-core rate, but fp16 keeps
  3 more mantissa bits, so it moves about 8x fewer codes (see `make bench`); a batch whose fp16
  features overflow is recomputed in fp32 (counted in `fp32_fallbacks`).

Batches are cut to `batch_size`; with compile on, the last partial batch is zero-padded so the
compiled graph sees one static shape (no recompiles, same kernels for every image).
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy as copy_module
from typing import Callable

import numpy as np
import torch

from . import checkpoint
from .config import codebook_problem
from .model import VQGAN, use_channel_statistics


PRECISIONS = ("auto", "fp32", "tf32", "fp16", "bf16")
LOW_PRECISION = {"fp16": torch.float16, "bf16": torch.bfloat16}


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


CPU_ACTIVATION_BYTES = 32 << 20  # glibc's largest mmap threshold; a thread's arena holds 64 MiB


def cpu_forward_images(config, pixels: int) -> int:
    """How many images of `pixels` pixels one CPU forward pass takes: as many as keep its largest
    activation (fp32; the widest level's, or the decoder's upsampled one, which keeps a deeper
    level's channels at the next level's size) within `CPU_ACTIVATION_BYTES`, at least one. A build's
    worker threads allocate from arenas of their own, which cannot hold a block over 64 MiB: glibc
    maps such a block anew and the kernel zero-fills it at every batch, whatever `host_memory`
    keeps. The embedded tokenizer at 256 px: 4 images (8 MiB each) of the build's batches of 16;
    two threads encoding together (compiled) ran 19.2 -> 27.4 images/s, minor page faults 1.52 M ->
    0.14-0.36 M for 128 images. The LVM tokenizer: one image (its decoder's 64 MiB still mapped
    anew). Eager codes differ by rounding at near ties from one forward size to another (1 code in
    4,096: 16 photos in one forward against four), as with the thread count; compiled ones did not."""
    levels = [config.hidden_channels * mult * pixels >> (2 * level) for level, mult in enumerate(config.channel_mult)]
    widest = max(levels + [deeper * 4 for deeper in levels[1:]])
    return max(1, CPU_ACTIVATION_BYTES // (4 * widest))


@torch.inference_mode()
def eager_encode(model: VQGAN, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """The plain reference: contiguous NCHW, fp32, eager, on the model's device. What the fast
    path is measured against (speed in the benchmark, code equality in the tests)."""
    device = next(model.parameters()).device
    out = []
    strict = torch.backends.cudnn.flags(enabled=True, allow_tf32=False) if device.type == "cuda" \
        else contextlib.nullcontext()
    with strict:
        for start in range(0, len(images), batch_size):
            x = to_pixels(images[start:start + batch_size]).contiguous().to(device)
            out.append(model.encode_codes(x).cpu())
    return torch.cat(out).numpy().astype(np.uint16)


def inductor_options(tune_kernels: bool) -> dict[str, bool] | None:
    """Inductor settings for a CUDA compile. Generated GroupNorm/SiLU kernels take a large share of
    the LVM encoder's GPU time, and their heuristic launch configs leave bandwidth unused;
    coordinate descent times neighbouring block sizes and warp counts per kernel. The arithmetic
    stays the same up to a reduction's rounding order, but the picks depend on timings, so they
    may differ between processes (and so may a few codes)."""
    return {"coordinate_descent_tuning": True} if tune_kernels else None


class Tokenizer:
    """A VQGAN ready for batched encode/decode of uint8 images on one device.

    One per process (a Beam DoFn builds it in `setup`, or shares it with `beam.utils.Shared`;
    `encode`/`decode` may be called from several threads at once): it holds the model (fp32,
    ~585 MB for LVM) and, with compile, a frozen copy of the pre-packed weights. A model passed in is copied
    unless `copy=False` (then it is converted in place: eval, no grads, device, layout).

    Defaults keep the codes of the plain eager fp32 forward: fp32, NCHW, no compile. Options:
    `compile` (+ channels_last on wide models; the CPU fast path), `streams` (CPU: that many
    batches at once, each on its own thread with `threads // streams` intra-op threads, since
    convolutions scale better across images than across the threads of one op),
    `pad_batches` (zero-pad the last batch: every image computed in the same shape; on CPU a batch
    is at most `cpu_forward_images`),
    `precision` (fp32; on CUDA also tf32, fp16 or bf16), `autotune` (CUDA: cuDNN times its convolution
    algorithms per shape and keeps the fastest; the choice can differ between processes, so codes
    may then differ by float rounding from run to run), `tune_kernels` (CUDA with compile, off by
    default as in the build config: inductor times launch configs of the kernels it generates while
    compiling; a longer first call, faster after, and codes that may differ between processes),
    `channel_statistics` (GroupNorm from per-channel statistics, `tokenizer.model.group_norm_by_channels`:
    the same function, arithmetic that inductor compiles into kernels reading the channels-last
    activations along their contiguous axis; default on for CUDA with compile and channels_last,
    the path whose time the GroupNorms dominated; off elsewhere, so CPU codes stay as they were).
    The defaults of `batch_size` and `tune_kernels` are those of the build's `tokenizer` config
    section (a test holds them equal).
    """

    def __init__(self, model: VQGAN, name: str = "vqgan", *, device: str | torch.device | None = None,
                 batch_size: int = 16, compile: bool = False, channels_last: bool | None = None,
                 precision: str = "auto", threads: int | None = None, streams: int = 1,
                 pad_batches: bool | None = None, autotune: bool = False, tune_kernels: bool = False,
                 channel_statistics: bool | None = None, copy: bool = True) -> None:
        problem = codebook_problem(model.config.num_embeddings)
        if problem:
            raise ValueError(problem)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        if threads is not None:
            torch.set_num_threads(threads)  # process-wide: torch has one intra-op pool
        self.device = torch.device(device) if device is not None else default_device()
        self.name = name
        self.batch_size = int(batch_size)
        if channels_last is None:
            # CPU: oneDNN's channels_last convs pay off for wide layers (LVM: 128..768 channels),
            # but torch's eager channels-last GroupNorm loses precision (~1e-4 vs ~1e-6) and
            # varies with the batch size; inductor's generated GroupNorm does not. So on CPU
            # channels_last comes with compile, and narrow models (tiny) stay NCHW.
            channels_last = self.device.type == "cuda" or (compile and model.config.hidden_channels >= 64)
        self.channels_last = channels_last
        self.compile = compile
        self.autotune = bool(autotune)
        self.tune_kernels = bool(tune_kernels) and compile and self.device.type == "cuda"
        self.pad_batches = compile if pad_batches is None else pad_batches
        # fp32 by default everywhere: bf16 and fp16 move some codes of an LVM-size model (bf16
        # several times more than fp16; see `make bench`); they are there for throughput.
        self.precision = "fp32" if precision == "auto" else precision
        if self.precision != "fp32" and self.device.type != "cuda":
            if device is None:
                # The device was left to us and there is no GPU: the reduced precisions are GPU
                # modes (fp16/bf16 convolutions ran ~45x slower than fp32 on a CPU without native
                # support), and fp32 gives the exact codes. An explicit device="cpu" keeps fp16/bf16.
                self.precision = "fp32"
            elif self.precision == "tf32":
                raise ValueError("precision tf32 needs a CUDA device")
        self.streams = max(1, int(streams)) if self.device.type == "cpu" else 1
        self.threads_per_stream = max(1, torch.get_num_threads() // self.streams)
        if copy:  # we change layout, device and grad flags: leave the caller's model alone
            model = copy_module(model)
        self.model = model.eval().requires_grad_(False).to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if channel_statistics is None:
            channel_statistics = self.device.type == "cuda" and compile and channels_last
        self.channel_statistics = bool(channel_statistics)
        use_channel_statistics(self.model, self.channel_statistics)
        self._hash: str | None = None
        self._hash_lock = threading.Lock()
        self.fp32_fallbacks = 0  # fp16 batches recomputed in fp32 after an overflow
        self._encode_fn: Callable[[torch.Tensor], torch.Tensor] = (
            self._latent_low if self.precision in LOW_PRECISION else self.model.encode_latent)
        self._decode_fn: Callable[[torch.Tensor], torch.Tensor] = self.model.decode_latent
        if compile:
            # the options are part of the compiled graphs' identity: two Tokenizers of one process
            # that differ in them get their own graphs (same options: the graphs are shared)
            options = inductor_options(self.tune_kernels)
            self._encode_fn = torch.compile(self._encode_fn, dynamic=False, options=options)
            self._decode_fn = torch.compile(self.model.decode_latent, dynamic=False, options=options)
        self._compiled_shapes: set[tuple] = set()
        self._warm_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        if self.streams > 1:
            self._pool = ThreadPoolExecutor(self.streams, thread_name_prefix="tokenizer",
                                            initializer=torch.set_num_threads,
                                            initargs=(self.threads_per_stream,))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], name: str | None = None, **options) -> "Tokenizer":
        """Load a muse-format folder (the released LVM tokenizer or one `tokenizer.fit` wrote)."""
        folder = os.fspath(path)
        options.setdefault("copy", False)  # the loaded model is ours alone
        problem = codebook_problem(checkpoint.read_config(folder).num_embeddings)
        if problem:  # judged on the config, before the weights: a traceback of the constructor's ValueError was
            raise checkpoint.CheckpointError(f"{folder}: {problem}")  # what tokenizer.evaluate said
        return cls(checkpoint.load(folder), name or os.path.basename(os.path.normpath(folder)), **options)

    def close(self) -> None:
        """Stop the stream threads (a DoFn's `teardown`)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    # -- what token shards record ------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def weights_hash(self) -> str:
        """The weights' id (`checkpoint.weights_hash`), computed once: the threads of a build's
        Tokenize stage that ask at the same time wait for one computation (eight threads each
        hashing an LVM-size model's weights held a GPU build's first shards for 1.7 s)."""
        if self._hash is None:
            with self._hash_lock:
                if self._hash is None:
                    self._hash = checkpoint.weights_hash(self.model)
        return self._hash

    @property
    def tokenizer_hash(self) -> str:
        """The id token shards record (`checkpoint.tokenizer_hash`): weights and config.json."""
        return checkpoint.tokenizer_hash(self.weights_hash, self.config)

    def made(self, recorded: str | None) -> bool:
        """Whether shards recording `recorded` were made by this tokenizer (`checkpoint.made_by`)."""
        return checkpoint.made_by(recorded, self.weights_hash, self.tokenizer_hash)

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
    def _context(self, autocast: bool = False) -> contextlib.ExitStack:
        """Per-call (and per-thread) modes: inference, and fp16/bf16 autocast where asked and chosen."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.device.type == "cuda":
            # fixed conv algorithms (no autotuning) so reruns give the same codes, unless asked;
            # TF32 only on request
            stack.enter_context(torch.backends.cudnn.flags(enabled=True, benchmark=self.autotune,
                                                           deterministic=not self.autotune,
                                                           allow_tf32=self.precision == "tf32"))
        if autocast and self.precision in LOW_PRECISION:
            stack.enter_context(torch.autocast(device_type=self.device.type, dtype=LOW_PRECISION[self.precision]))
        return stack

    def _batches(self, array: np.ndarray, pixels: int) -> list[tuple[np.ndarray, int]]:
        """Slices of `batch_size` (on CPU at most `cpu_forward_images` of images of `pixels`
        pixels); with `pad_batches` (default: when compiled) the last one is zero-padded, so every
        image is computed in the same shape (static shapes for compile; results independent of how
        callers cut their batches)."""
        size = self.batch_size
        if self.device.type == "cpu":
            size = min(size, cpu_forward_images(self.config, pixels))
        out = []
        for start in range(0, len(array), size):
            chunk = array[start:start + size]
            real = len(chunk)
            if self.pad_batches and real < size:
                pad = np.zeros((size - real,) + chunk.shape[1:], dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            out.append((chunk, real))
        return out

    def _run(self, work: Callable[[np.ndarray, int], np.ndarray], batches: list[tuple[np.ndarray, int]],
             key: tuple) -> list[np.ndarray]:
        """Apply `work` to every batch, in order, on the stream threads when there are several.

        With compile, the first batch of a new shape runs alone, under inductor freezing (weights
        become constants that oneDNN pre-packs), and on a stream thread, so the generated code
        is built for the stream's thread count.
        """
        if not batches:
            return []
        results: list[np.ndarray] = []
        if self.compile and key not in self._compiled_shapes:
            with self._warm_lock:  # callers on other threads wait for the one compile
                if key not in self._compiled_shapes:
                    results.append(self._submit(self._warm, work, *batches[0]))
                    self._compiled_shapes.add(key)
                    batches = batches[1:]
        if self._pool is None:
            return results + [work(*b) for b in batches]
        return results + list(self._pool.map(lambda b: work(*b), batches))

    def _submit(self, fn: Callable, *args):
        return fn(*args) if self._pool is None else self._pool.submit(fn, *args).result()

    def _warm(self, work: Callable[[np.ndarray, int], np.ndarray], chunk: np.ndarray, real: int) -> np.ndarray:
        if self.device.type != "cpu":
            return work(chunk, real)
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True):
            return work(chunk, real)

    def _latent_low(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder body in fp16/bf16; head and quant_conv in fp32, so the features the code
        lookup compares are not rounded to a short mantissa at the last step."""
        with torch.autocast(device_type=self.device.type, dtype=LOW_PRECISION[self.precision]):
            h = self.model.encoder.features(x)
        with torch.autocast(device_type=self.device.type, enabled=False):
            return self.model.quant_conv(self.model.encoder.head(h.float()))

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def _pixels(self, chunk: np.ndarray) -> torch.Tensor:
        """uint8 NHWC on the host -> float NCHW in [0, 1] on the device, in the model's layout
        (uploaded as uint8: a quarter of the bytes)."""
        return self._layout(self._to_device(chunk).permute(0, 3, 1, 2).float().div_(255.0))

    def _launch_encode(self, chunk: np.ndarray, real: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Queue one batch's encode; returns its codes (int32, on the device) and, for fp16, a
        device flag that the features stayed finite. Nothing here waits for the device."""
        with self._context():
            x = self._pixels(chunk)
            latent = self._encode_fn(x)
            finite = torch.isfinite(latent[:real]).all() if self.precision == "fp16" else None
            return self.model.quantize.codes(latent[:real]).to(torch.int32), finite  # an fp32 lookup

    def _encode_fp32(self, chunk: np.ndarray, real: int) -> np.ndarray:
        """A batch whose fp16 features overflowed, again in full precision."""
        self.fp32_fallbacks += 1
        with self._context():
            codes = self.model.quantize.codes(self.model.encode_latent(self._pixels(chunk))[:real])
            return codes.to(torch.int32).cpu().numpy().astype(np.uint16)

    def _encode_batch(self, chunk: np.ndarray, real: int) -> np.ndarray:
        codes, finite = self._launch_encode(chunk, real)
        if finite is not None and not bool(finite):
            return self._encode_fp32(chunk, real)
        return codes.cpu().numpy().astype(np.uint16)

    def _encode_queued(self, batches: list[tuple[np.ndarray, int]], key: tuple) -> list[np.ndarray]:
        """CUDA: every batch is queued before any result is read, so the host pins and uploads
        batch i+1 while the GPU computes batch i; one wait per call instead of one per batch."""
        first_compile = self.compile and key not in self._compiled_shapes
        results = self._run(self._encode_batch, batches[:1], key) if first_compile else []
        queued = [self._launch_encode(*b) for b in batches[len(results):]]
        if not queued:
            return results
        codes = torch.cat([c for c, _ in queued]).cpu().numpy().astype(np.uint16)
        finite = [True] * len(queued) if queued[0][1] is None else torch.stack([f for _, f in queued]).tolist()
        at = 0
        for (chunk, real), ok in zip(batches[len(results):], finite):
            results.append(codes[at:at + real] if ok else self._encode_fp32(chunk, real))
            at += real
        return results

    def _decode_batch(self, chunk: np.ndarray, real: int, grid: tuple[int, int]) -> np.ndarray:
        with self._context(autocast=True):
            quantized = self._layout(self.model.quantize.embed(self._to_device(chunk), *grid))
            pixels = self._decode_fn(quantized)[:real]
        if self.precision == "fp16" and not bool(torch.isfinite(pixels).all()):
            self.fp32_fallbacks += 1  # an fp16 overflow: this batch in full precision
            with self._context():
                pixels = self.model.decode_latent(quantized)[:real]
        return to_uint8(pixels)

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
        batches, key = self._batches(images, images.shape[1] * images.shape[2]), ("encode",) + images.shape[1:]
        parts = self._encode_queued(batches, key) if self.device.type == "cuda" else \
            self._run(self._encode_batch, batches, key)
        return np.concatenate(parts) if parts else np.zeros((0, tokens), dtype=np.uint16)

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
        if grid[0] * grid[1] != codes.shape[1]:
            raise ValueError(f"grid {grid} does not hold {codes.shape[1]} codes")
        parts = self._run(lambda chunk, real: self._decode_batch(chunk, real, grid),
                          self._batches(codes.astype(np.int64), codes.shape[1] * self.config.downsample_factor ** 2),
                          ("decode",) + tuple(grid))
        if not parts:
            f = self.config.downsample_factor
            return np.zeros((0, grid[0] * f, grid[1] * f, self.config.num_channels), dtype=np.uint8)
        return np.concatenate(parts)
