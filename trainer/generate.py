"""Visual prompting: continue a sequence of prompt images with sampled images.

The LVM recipe: tokenize the prompt images, keep the last 15 images (3840 tokens) as context,
sample 256 tokens per new image with special ids (>= the codebook size) suppressed, and slide
the window for longer generations. Tokens are sampled one at a time through a `KVCache`; when
the window slides (a new image would push the context past the window), the cache is rebuilt
from the kept tokens, so positions never exceed max_position_embeddings. Sampling draws from
one `torch.Generator`, so a seed gives the same images every run on the same device.

    python -m trainer.generate --checkpoint runs/lvm --tokenizer tokenizer/weights/tiny1k \\
        --prompt f1.png f2.png f3.png --n 2 --out strip.png
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Callable, Sequence

import numpy as np
import torch

from tokenizer.image_files import MAX_IMAGE_FILE_BYTES, FileRefused
from tokenizer.image_files import read_image_file as read_file_capped
from tokenizer.out_paths import make_parent, output_problem
from tokenizer.progress import Progress

from .config import BOS_ID, CODEBOOK_SIZE, TOKENS_PER_IMAGE, UsageError
from .devices import CHOICES, resolve_device
from .model import KVCache, LVMTransformer
from .packing import add_mode_flags, choose_mode, recorded_mode

WINDOW_IMAGES = 15
PROMPT_FRAME = (190, 190, 190)
GENERATED_FRAME = (220, 40, 40)


def sample_token(logits: torch.Tensor, generator: torch.Generator, *, allowed: int, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0) -> int:
    """One id below `allowed` from logits (vocab,): temperature 0 is greedy; top-k, then top-p
    (the smallest set of ids whose probability reaches p) restrict the draw."""
    logits = logits.float()[:allowed].clone()
    if temperature <= 0:
        return int(logits.argmax())
    logits /= temperature
    if 0 < top_k < allowed:
        kth = torch.topk(logits, top_k).values[-1]
        logits[logits < kth] = float("-inf")
    if top_p < 1.0:
        ordered, index = torch.sort(logits, descending=True)
        probs = torch.softmax(ordered, dim=-1)
        drop = probs.cumsum(-1) - probs >= top_p  # mass before this id already reaches p
        logits[index[drop]] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def window_images(model: LVMTransformer, bos: bool, tokens_per_image: int, window: int = WINDOW_IMAGES) -> int:
    """Context images kept: at most `window`, and bos + W * tpi + (tpi - 1) <= max positions, so
    the last token fed while sampling an image still has a position."""
    if window < 1:
        raise UsageError(f"window must be at least 1 image, got {window}")
    fit = (model.config.max_position_embeddings - int(bos) - (tokens_per_image - 1)) // tokens_per_image
    if fit < 1:
        raise UsageError(f"max_position_embeddings {model.config.max_position_embeddings} leaves no room for "
                         f"one context image of {tokens_per_image} tokens plus one generated image")
    return min(window, fit)


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """Refuse sampling options that mean nothing, naming the flag: `--top-p 0` kept no id and
    sampled from NaN probabilities (a RuntimeError), a negative temperature was silently greedy,
    a negative top-k silently no top-k."""
    if not math.isfinite(temperature) or temperature < 0:
        raise UsageError(f"--temperature {temperature}: give 0 (greedy) or more")
    if top_k < 0:
        raise UsageError(f"--top-k {top_k}: give 0 (no top-k) or more")
    if not 0 < top_p <= 1:
        raise UsageError(f"--top-p {top_p}: give a mass above 0 and at most 1 (1: no top-p)")


@torch.inference_mode()
def generate_codes(model: LVMTransformer, prompt: np.ndarray, n: int = 1, *, temperature: float = 1.0,
                   top_k: int = 0, top_p: float = 1.0, seed: int = 0, bos: bool = True,
                   window: int = WINDOW_IMAGES, codebook_size: int = CODEBOOK_SIZE,
                   tokens_per_image: int = TOKENS_PER_IMAGE,
                   on_rebuild: Callable[[int, int], None] | None = None,
                   progress: Progress | None = None) -> np.ndarray:
    """Sample `n` images of codes after the prompt codes (P, tokens_per_image) -> (n, tokens_per_image) uint16.

    `on_rebuild(first_image, n_images)` is told each time the cache is (re)built from a window;
    `progress` counts the tokens sampled (a 7B model on a CPU takes minutes an image)."""
    check_sampling(temperature, top_k, top_p)
    prompt = np.asarray(prompt, dtype=np.int64).reshape(-1, tokens_per_image)
    if prompt.size and (prompt.min() < 0 or prompt.max() >= codebook_size):
        raise UsageError(f"prompt codes must lie in [0, {codebook_size}), got {prompt.min()}..{prompt.max()}")
    if not len(prompt) and not bos:
        raise UsageError("stream mode (no BOS) needs at least one prompt image")
    if codebook_size > model.config.vocab_size:
        raise UsageError(f"codebook_size {codebook_size} exceeds the model's vocab_size {model.config.vocab_size}")
    if bos and BOS_ID >= model.config.vocab_size:  # its embedding has no row for BOS: an IndexError in torch
        raise UsageError(f"the model's vocab_size {model.config.vocab_size} has no BOS id {BOS_ID} (a model trained "
                         f"without special ids, e.g. an HF Llama of the codebook alone): prompt it without BOS "
                         f"(--stream, bos=False)")
    keep = window_images(model, bos, tokens_per_image, window)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    images = [row for row in prompt]
    generated: list[np.ndarray] = []
    cache, first = None, -1

    def logits_of(ids: list[int] | np.ndarray) -> torch.Tensor:
        batch = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=device)[None]
        return model.lm_head(model.hidden_states(batch, cache)[0, -1])

    for _ in range(n):
        start = max(0, len(images) - keep)
        if cache is None or start != first:  # (re)build from the kept window
            cache, first = KVCache(), start
            window_ids = np.concatenate(([np.array([BOS_ID])] if bos else []) + images[start:]).astype(np.int64)
            logits = logits_of(window_ids)
            if on_rebuild is not None:
                on_rebuild(start, len(images) - start)
        else:  # the window still holds everything: feed the previous image's last token
            logits = logits_of([int(images[-1][-1])])
        codes = np.empty(tokens_per_image, dtype=np.int64)
        for t in range(tokens_per_image):
            codes[t] = sample_token(logits, generator, allowed=codebook_size, temperature=temperature,
                                    top_k=top_k, top_p=top_p)
            if progress is not None:
                progress.advance()
            if t < tokens_per_image - 1:
                logits = logits_of([int(codes[t])])
        images.append(codes)
        generated.append(codes)
    return np.stack(generated).astype(np.uint16) if generated else np.zeros((0, tokens_per_image), np.uint16)


# The build's cap on one input file read whole (`tokenizer.image_files`, which a test holds equal
# to `sources.records.MAX_INPUT_FILE_BYTES`). A prompt image is read whole before it is judged, so a
# 3 GB file of zeros held 3.4 GB before `not_an_image`.
PROMPT_MAX_BYTES = MAX_IMAGE_FILE_BYTES


def read_image_file(path: str | os.PathLike[str], max_bytes: int = PROMPT_MAX_BYTES) -> bytes:
    """The bytes of one image file, judged before it is read (`tokenizer.image_files.read_image_file`:
    a pipe, device or socket refused by its type unopened, a FIFO without a writer blocked forever
    and /dev/zero was read until the kernel killed the process at 22 GB; a file over `max_bytes` by
    its size): a `UsageError` naming it. OSError for one that cannot be read, a folder included."""
    try:
        return read_file_capped(path, max_bytes)
    except FileRefused as exc:
        raise UsageError(f"prompt image {os.fspath(path)!r}: {exc.detail}") from None


def read_prompt(paths: Sequence[str | os.PathLike[str]], max_bytes: int = PROMPT_MAX_BYTES) -> list[bytes]:
    """The bytes of each prompt image file (`read_image_file`); a `UsageError` naming the first
    that is missing, no regular file, too large or cannot be read."""
    out = []
    for path in paths:
        try:
            out.append(read_image_file(path, max_bytes))
        except OSError as exc:
            raise UsageError(f"prompt image {os.fspath(path)!r}: {exc.strerror or exc}") from None
    return out


def prepare_images(images: Sequence[np.ndarray | str | os.PathLike[str] | bytes], size: int,
                   policy: str = "center_crop", names: Sequence[str | os.PathLike[str]] | None = None) -> np.ndarray:
    """Any-size RGB arrays, image files or encoded bytes -> uint8 (N, size, size, 3), through the
    project's own decode and resize (the same policies the build uses). `names`: what an error
    calls each item given as bytes (the file it was read from), instead of its number."""
    from transforms.decode import load_image
    from transforms.errors import Rejected
    from transforms.resize import fit_image

    out = []
    for number, item in enumerate(images):
        if isinstance(item, np.ndarray):
            array = item if item.ndim == 3 else np.repeat(item[..., None], 3, axis=-1)
            if array.dtype != np.uint8 or array.shape[-1] != 3:
                raise ValueError(f"prompt arrays must be uint8 (H, W, 3), got {array.dtype} {array.shape}")
            out.append(fit_image(array, size, policy))  # type: ignore[arg-type]
            continue
        if isinstance(item, bytes):
            data = item
            name = f"{os.fspath(names[number])!r}" if names is not None else f"number {number + 1} (bytes)"
        else:
            data = read_prompt([item])[0]
            name = f"{os.fspath(item)!r}"
        try:
            out.append(load_image(data, size, policy).pixels)  # type: ignore[arg-type]
        except Rejected as exc:  # a user's file: say which one and why, never a traceback
            raise UsageError(f"prompt image {name}: {exc}") from None
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def generate(model: LVMTransformer, tokenizer, images: Sequence[np.ndarray | str | os.PathLike[str] | bytes],
             n: int = 1, *, resize: str = "center_crop", **options) -> tuple[np.ndarray, np.ndarray]:
    """Prompt `model` with images; returns (codes (n, tokens) uint16, images (n, H, W, 3) uint8).

    `tokenizer` is a `tokenizer.codec.Tokenizer`; `options` go to `generate_codes` (temperature,
    top_k, top_p, seed, bos, window)."""
    return generate_pixels(model, tokenizer, prepare_images(images, tokenizer.image_size, resize), n, **options)


def generate_pixels(model: LVMTransformer, tokenizer, pixels: np.ndarray, n: int = 1,
                    **options) -> tuple[np.ndarray, np.ndarray]:
    """`generate` for prompt images already at the tokenizer's size (uint8 NHWC)."""
    prompt = tokenizer.encode(pixels) if len(pixels) else np.zeros((0, tokenizer.tokens_per_image), np.uint16)
    codes = generate_codes(model, prompt, n, codebook_size=min(tokenizer.codebook_size, CODEBOOK_SIZE),
                           tokens_per_image=tokenizer.tokens_per_image, **options)
    return codes, tokenizer.decode(codes)


def make_strip(prompt: np.ndarray, generated: np.ndarray, border: int = 6) -> np.ndarray:
    """One row: prompt images framed grey, then generated images framed red."""
    cells = [(img, PROMPT_FRAME) for img in prompt] + [(img, GENERATED_FRAME) for img in generated]
    if not cells:
        raise ValueError("nothing to draw: no prompt and no generated images")
    h, w = cells[0][0].shape[:2]
    strip = np.zeros((h + 2 * border, len(cells) * (w + 2 * border), 3), np.uint8)
    for i, (image, colour) in enumerate(cells):
        x = i * (w + 2 * border)
        strip[:, x:x + w + 2 * border] = colour
        strip[border:border + h, x + border:x + border + w] = image
    return strip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="model folder (ours or an HF Llama folder)")
    parser.add_argument("--tokenizer", required=True, help="VQGAN folder (muse format)")
    parser.add_argument("--prompt", nargs="*", default=[], help="prompt image files, in order")
    parser.add_argument("--n", type=int, default=1, help="images to generate (default: %(default)s)")
    parser.add_argument("--out", required=True, help="image strip of prompt (grey frames) + generated (red frames); "
                        "its extension names the format (.png, .jpg, .webp; missing folders are made)")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="sampling temperature; 0: greedy (default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=0,
                        help="sample among the k likeliest codes; 0: no top-k (default: %(default)s)")
    parser.add_argument("--top-p", type=float, default=1.0,
                        help="nucleus mass in (0, 1]; 1.0: no top-p (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    add_mode_flags(parser, "prompted")
    parser.add_argument("--window", type=int, default=WINDOW_IMAGES,
                        help="context images kept (default: %(default)s, as LVM)")
    parser.add_argument("--resize", default="center_crop", choices=("squash", "center_crop", "pad"),
                        help="how a prompt image becomes a square (default: %(default)s)")
    parser.add_argument("--device", default="auto", help=f"{CHOICES} (default: %(default)s)")
    parser.add_argument("--dtype", default="auto",
                        help="float32 | bfloat16 | float16 | auto: bf16 on CUDA, else fp32 (default: %(default)s)")
    parser.add_argument("--codes-out", default=None, help="also save the generated codes (.npy data, this very name)")
    return parser


def check_flags(args: argparse.Namespace) -> tuple[torch.device, str]:
    """Every flag judged before a file is read: the numbers, the device and dtype, and both output
    paths (a folder, a strip name Pillow has no format for, or a --codes-out under a file failed
    only after the model was loaded and every image sampled). Returns (device, dtype)."""
    from .checkpoint_io import parse_dtype

    if args.n < 1:
        raise UsageError(f"--n {args.n}: give at least 1")
    if args.window < 1:
        raise UsageError(f"--window {args.window}: give at least 1 image")
    check_sampling(args.temperature, args.top_k, args.top_p)
    device = resolve_device(args.device)
    dtype = ("bfloat16" if device.type == "cuda" else "float32") if args.dtype == "auto" else args.dtype
    parse_dtype(dtype)
    for flag, path, image in (("--out", args.out, True), ("--codes-out", args.codes_out, False)):
        problem = output_problem(path, image=image) if path is not None else None
        if problem:
            raise UsageError(f"{flag} {path}: {problem}")
    if args.codes_out is not None and os.path.abspath(args.codes_out) == os.path.abspath(args.out):
        raise UsageError(f"--codes-out {args.codes_out} is --out too; give each its own file")
    return device, dtype


def given_tokenizer(tokenizer) -> dict[str, object]:
    """A loaded `Tokenizer` as a checkpoint records the one its shards were made with."""
    return {"name": tokenizer.name, "hash": tokenizer.tokenizer_hash, "weights_hash": tokenizer.weights_hash,
            "codebook_size": tokenizer.codebook_size,
            "tokens_per_image": tokenizer.tokens_per_image}


def write_outputs(args: argparse.Namespace, strip: np.ndarray, codes: np.ndarray) -> None:
    """The strip and the codes, where `check_flags` judged they can go (missing folders made)."""
    from PIL import Image

    make_parent(args.out)
    Image.fromarray(strip).save(args.out)
    if args.codes_out:
        make_parent(args.codes_out)
        with open(args.codes_out, "wb") as handle:  # np.save on a name would add '.npy' to one without it
            np.save(handle, codes)


def main(argv: list[str] | None = None) -> int:
    """Exit 2 with one `error:` line for a run refused for its flags or the files they name
    (`UsageError`: a flag, an output path, a prompt image, --stream without one; a damaged or
    unfitting model or tokenizer checkpoint; a tokenizer other than the one the checkpoint records),
    each judged before the weights it needs are loaded; any other error, a `ValueError` from inside
    generation included, is a bug and keeps its traceback."""
    from tokenizer.checkpoint import CheckpointError as TokenizerCheckpointError
    from tokenizer.checkpoint import read_config
    from tokenizer.codec import Tokenizer

    from .checkpoint_io import CheckpointError, checked_tensors, model_from_checked, recorded_tokenizer
    from .data import check_trained_tokenizer, describe_tokenizer

    args = _parser().parse_args(argv)
    try:
        device, dtype = check_flags(args)
        # The prompt first, at the size the tokenizer's config.json names: a missing, unreadable or
        # broken file, or no image for --stream, fails in a second, before gigabytes are loaded.
        if args.mode == "stream" and not args.prompt:
            raise UsageError("--stream (no BOS) needs at least one --prompt image to start the sequence")
        files = read_prompt(args.prompt)
        size = read_config(args.tokenizer).resolution if files else 0  # no prompt: no size needed yet
        prompt = prepare_images(files, size, args.resize, names=args.prompt)
        # The model judged whole (manifest, config, headers) but not loaded; then the tokenizer it
        # records, if any: sizes from the tokenizer's config, then its weights' hash (the tokenizer
        # is loaded before the model: the smaller of the two). Its folder name is not compared: a
        # copy of the same weights may be named anything.
        checked = checked_tensors(args.checkpoint)
        recorded = recorded_tokenizer(args.checkpoint)
        mode, mode_note = choose_mode(args.checkpoint, args.mode, recorded_mode(args.checkpoint))
        if mode == "stream" and not prompt.shape[0]:
            raise UsageError(f"{args.checkpoint} was trained in stream mode (no BOS): give at least one --prompt "
                             "image to start the sequence (or --mode paper to start it with a BOS it never saw)")
        what = f"--tokenizer {args.tokenizer}"
        if recorded is not None:
            config = read_config(args.tokenizer)
            sizes = {"name": os.path.basename(os.path.normpath(args.tokenizer)),  # as `from_pretrained` names it
                     "codebook_size": config.num_embeddings, "tokens_per_image": config.tokens_per_image}
            check_trained_tokenizer(args.checkpoint, recorded, sizes, what, ["codebook_size", "tokens_per_image"])
        tokenizer = Tokenizer.from_pretrained(args.tokenizer, device=device)
        if recorded is not None:
            check_trained_tokenizer(args.checkpoint, recorded, given_tokenizer(tokenizer), what)
        model = model_from_checked(args.checkpoint, checked, device=device, dtype=dtype)
        progress = Progress("trainer generate", "tokens", args.n * tokenizer.tokens_per_image)
        codes, images = generate_pixels(model, tokenizer, prompt, args.n, temperature=args.temperature,
                                        top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                                        bos=mode == "paper", window=args.window, progress=progress)
    except (UsageError, CheckpointError, TokenizerCheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress.done(f"{len(images)} images")
    write_outputs(args, make_strip(prompt, images), codes)
    print(f"wrote {args.out}: {len(prompt)} prompt + {len(images)} generated images")
    if mode_note:  # after the result, as the tokenizer's: an error line stays the only line
        print(f"note: {mode_note}", file=sys.stderr)
    if recorded is None:
        print(f"note: {args.checkpoint} records no tokenizer (a model from elsewhere, or a fit from before it was "
              f"recorded): that it was trained on --tokenizer {describe_tokenizer(given_tokenizer(tokenizer))} "
              "was not checked", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
