"""Measure a tokenizer: `python -m tokenizer.evaluate --checkpoint DIR --data GLOB`.

Reconstruction PSNR and SSIM (data range 1), the colour cast (`colour_shift`: per channel, the
mean of reconstruction minus original over all pixels of all images, in 0-255 units; `colour_error`
its largest channel; `colour_error_per_image`: the same per image, absolute, averaged over images,
largest channel), codebook usage (share of codes used) and code
perplexity over a set of images; prints a table and writes JSON. `comparison_sheet` feeds the
build report.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence, Sized

from .omp_wait import prefer_short_spin

prefer_short_spin()  # before torch loads: libgomp reads its environment once (`tokenizer.omp_wait`)

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from .checkpoint import CheckpointError  # noqa: E402
from .codec import Tokenizer  # noqa: E402
from .config import UsageError
from .host_memory import freed_memory_kept
from .devices import CHOICES, device_problem
from .data import IMAGE_SUFFIXES, ImageRef, find_images, iter_images
from .metrics import (codebook_usage, colour_shift_per_image, perplexity, psnr_per_image, ssim_per_image,
                      usage_histogram)
from .out_paths import make_parent, output_problem
from .progress import Progress


@dataclass
class Evaluation:
    """What `evaluate` measured; `histogram` and the sample images stay out of the JSON."""

    tokenizer: str
    weights_hash: str
    images: int
    psnr: float
    ssim: float
    colour_shift: list[float]
    colour_error_per_image: float
    codebook_usage: float
    perplexity: float
    codebook_size: int
    histogram: np.ndarray = field(repr=False)
    originals: np.ndarray = field(repr=False)
    reconstructions: np.ndarray = field(repr=False)
    # Images that could not be read, and files found but never offered (`find_images`'s `left_out`,
    # added by the command line): (image, reason code, detail); counted, not fatal.
    skipped: list[tuple[str, str, str]] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        out = asdict(self)
        for key in ("histogram", "originals", "reconstructions", "skipped"):
            out.pop(key)
        out["codes_used"] = int(np.count_nonzero(self.histogram))
        out["colour_error"] = max(abs(v) for v in self.colour_shift)
        out["skipped"] = dict(sorted(Counter(reason for _, reason, _ in self.skipped).items()))
        return out


def evaluate(tokenizer: Tokenizer, refs: Iterable[ImageRef], limit: int | None = None,
             batch_size: int = 16, keep: int = 8, progress: Progress | None = None) -> Evaluation:
    """Encode and decode every image (centre square at the tokenizer's resolution); one that
    cannot be read is skipped and counted with its reason (`Evaluation.skipped`). `progress`
    counts each image read, measured or skipped (so it reaches its total), as its batch is measured."""
    size = tokenizer.image_size
    hist = np.zeros(tokenizer.codebook_size, dtype=np.int64)
    psnrs: list[np.ndarray] = []
    ssims: list[np.ndarray] = []
    shifts: list[np.ndarray] = []
    kept_in: list[np.ndarray] = []
    kept_out: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        images = np.stack(batch)
        codes = tokenizer.encode(images)
        recon = tokenizer.decode(codes)
        hist[:] += usage_histogram(codes, tokenizer.codebook_size)
        psnrs.append(psnr_per_image(images, recon))
        ssims.append(ssim_per_image(images, recon))
        shifts.append(colour_shift_per_image(images, recon))
        room = keep - sum(len(k) for k in kept_in)
        if room > 0:
            kept_in.append(images[:room])
            kept_out.append(recon[:room])
        batch.clear()
        advance()

    def advance() -> None:
        nonlocal reported
        if progress is None or count + len(skipped) == reported:
            return
        if known is not None:  # with a limit, each unreadable image read on the way adds one to read
            progress.total = known if limit is None else min(known, limit + len(skipped))
        progress.advance(count + len(skipped) - reported, f"{len(skipped)} skipped")
        reported = count + len(skipped)

    known = len(refs) if isinstance(refs, Sized) else None
    reported = 0
    count = 0
    skipped: list[tuple[ImageRef, str, str]] = []
    with freed_memory_kept(tokenizer.device.type == "cpu"):  # each batch's activations reused, not faulted in again
        for _, image in iter_images(refs, size, skipped):
            batch.append(image)
            count += 1
            if len(batch) == batch_size:
                flush()
            if count == limit:  # stop before reading (and counting as skipped) files past the limit
                break
        if batch:
            flush()
    advance()  # unreadable images after the last batch
    if count == 0:
        why = f" ({len(skipped)} unreadable: {skipped[0][0]}: {skipped[0][1]}, ...)" if skipped else ""
        raise UsageError(f"no images to evaluate{why}")
    empty = np.zeros((0, size, size, 3), np.uint8)
    return Evaluation(
        tokenizer=tokenizer.name, weights_hash=tokenizer.weights_hash, images=count,
        psnr=float(np.mean(np.concatenate(psnrs))), ssim=float(np.mean(np.concatenate(ssims))),
        colour_shift=[round(float(v), 3) for v in np.concatenate(shifts).mean(axis=0)],
        colour_error_per_image=round(float(np.abs(np.concatenate(shifts)).mean(axis=0).max()), 3),
        codebook_usage=codebook_usage(hist), perplexity=perplexity(hist), codebook_size=tokenizer.codebook_size,
        histogram=hist, originals=np.concatenate(kept_in) if kept_in else empty,
        reconstructions=np.concatenate(kept_out) if kept_out else empty,
        skipped=[(str(ref), reason, detail) for ref, reason, detail in skipped])


def comparison_sheet(originals: np.ndarray, reconstructions: np.ndarray, columns: int = 4,
                     gap: int = 4) -> Image.Image:
    """A grid of (original | reconstruction) pairs, `columns` pairs per row, for the report."""
    if len(originals) != len(reconstructions):
        raise ValueError("originals and reconstructions differ in count")
    if len(originals) == 0:
        return Image.new("RGB", (1, 1), "white")
    h, w = originals.shape[1:3]
    columns = max(1, min(columns, len(originals)))
    rows = -(-len(originals) // columns)
    pair_w = 2 * w + gap
    sheet = Image.new("RGB", (columns * pair_w + (columns - 1) * gap * 2, rows * (h + gap) - gap), "white")
    for i, (a, b) in enumerate(zip(originals, reconstructions)):
        x, y = (i % columns) * (pair_w + 2 * gap), (i // columns) * (h + gap)
        sheet.paste(Image.fromarray(a), (x, y))
        sheet.paste(Image.fromarray(b), (x + w + gap, y))
    return sheet


def format_table(summary: dict) -> str:
    rows = [("tokenizer", summary["tokenizer"]), ("weights", summary["weights_hash"][:16]),
            ("images", str(summary["images"])), ("PSNR (dB)", f"{summary['psnr']:.2f}"),
            ("SSIM", f"{summary['ssim']:.4f}"),
            ("colour shift R/G/B (0-255)", " / ".join(f"{v:+.2f}" for v in summary["colour_shift"])),
            ("colour error per image", f"{summary['colour_error_per_image']:.2f}"),
            ("codebook usage", f"{100 * summary['codebook_usage']:.2f}% "
                               f"({summary['codes_used']}/{summary['codebook_size']})"),
            ("perplexity", f"{summary['perplexity']:.1f}")]
    if summary.get("skipped"):
        rows.append(("skipped", ", ".join(f"{n} {reason}" for reason, n in summary["skipped"].items())))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _fail(message: str) -> int:
    """A user mistake: one line naming the flag, exit 2 (argparse's convention), no traceback."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tokenizer.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="muse-format folder (config.json + pytorch_model.bin)")
    p.add_argument("--data", action="append", required=True, help="glob of tars, images or folders (repeatable)")
    p.add_argument("--limit", type=int, help="evaluate at most this many images")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: %(default)s)")
    p.add_argument("--out", default="tokenizer_eval.json", help="JSON summary path (default: %(default)s)")
    p.add_argument("--sheet", help="also write an original-vs-reconstruction sheet (PNG) here")
    p.add_argument("--device", help=f"{CHOICES} (default: cuda when available)")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder/decoder (on CUDA with "
                   "kernel tuning: a first batch of over a minute for the LVM size, faster after)")
    p.add_argument("--no-tune-kernels", action="store_true", help="with --compile on CUDA: skip kernel tuning")
    args = p.parse_args(argv)
    for name in ("batch_size", "limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: give at least 1")
    device, problem = device_problem(args.device) if args.device is not None else (None, None)
    if problem:
        return _fail(problem)
    for flag, path, image in (("--out", args.out, False), ("--sheet", args.sheet, True)):
        problem = output_problem(path, image=image) if path is not None else None
        if problem:  # judged before the work: a folder or a sheet without a format failed after it
            return _fail(f"{flag} {path}: {problem}")
    left_out: list[tuple[ImageRef, str, str]] = []
    refs = find_images(args.data, left_out)
    if not refs:
        why = f"; {len(left_out)} left out: {left_out[0][0]}: {left_out[0][1]}, ..." if left_out else ""
        return _fail(f"--data {' '.join(args.data)}: no images there (image files {', '.join(IMAGE_SUFFIXES)}, "
                     f"folders of them, or tars){why}")
    try:
        tokenizer = Tokenizer.from_pretrained(args.checkpoint, device=device, batch_size=args.batch_size,
                                              compile=args.compile, tune_kernels=not args.no_tune_kernels)
    except CheckpointError as exc:
        return _fail(f"--checkpoint: {exc}")
    try:
        progress = Progress("tokenizer evaluate", "images", min(len(refs), args.limit or len(refs)))
        result = evaluate(tokenizer, refs, limit=args.limit, batch_size=args.batch_size, progress=progress)
    except UsageError as exc:
        return _fail(f"--data {' '.join(args.data)}: {exc}")
    result.skipped[:0] = [(str(ref), reason, detail) for ref, reason, detail in left_out]  # never offered: counted too
    progress.done(f"{result.images} measured, {len(result.skipped)} skipped")
    for ref, reason, detail in result.skipped:
        print(f"skipped {ref}: {reason}: {detail}", file=sys.stderr)
    summary = result.summary()
    print(format_table(summary))
    make_parent(args.out)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    if args.sheet:
        make_parent(args.sheet)
        comparison_sheet(result.originals, result.reconstructions).save(args.sheet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
