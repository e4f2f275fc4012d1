"""`python -m trainer.demo BUILD_OUT`: the last step of `make build-uvd`.

Fits a small preset on the build's own token shards for a few hundred steps, then prompts it with
held-out sentences (frames of a clip, or analogy pairs) and decodes what it samples with the
build's tokenizer. Everything lands in `BUILD_OUT/trainer/`: the run folder (checkpoints,
`losses.json`), `generation.png` (one row per prompt: prompt images framed grey, the sample
framed red, the true next image framed green) and `demo.json`, which the report reads.

It shows the whole loop works on a laptop; a few hundred CPU steps make a model that has learnt
the token statistics, not one that draws well.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from tokenizer.atomic import write_bytes
from tokenizer.checkpoint import CheckpointError as TokenizerCheckpointError
from tokenizer.config import UsageError as TokenizerUsageError
from uvd_pipeline.shards import TOKENS_DIR, ShardDamaged, find_shards, read_token_shard, sentence_tokens

from .config import UsageError
from .fit import FitOptions, fit
from .generate import make_strip
from .integrity import CheckpointError

DEMO_DIR = "trainer"
DEMO_JSON = "demo.json"
STRIP_PNG = "generation.png"
TRUTH_FRAME = (40, 160, 60)
# next-frame prompts first, then analogies: the kinds a demo can show without a task label
PROMPT_KINDS = ("video", "multiview", "pairs", "category")


@dataclass(frozen=True)
class Prompt:
    sentence_id: str
    source: str
    kind: str
    task: str
    context: np.ndarray  # (k, tokens_per_image)
    truth: np.ndarray  # (tokens_per_image,)


def pick_prompts(shards: Sequence[str], context_images: int, per_kind: int = 1) -> list[Prompt]:
    """The first held-out sentence of each demo kind (val first, then train), cut into
    `context_images` prompt images and the true next image."""
    found: dict[str, list[Prompt]] = {k: [] for k in PROMPT_KINDS}
    ordered = sorted(shards, key=lambda p: ("/val/" not in p, p))
    for path in ordered:
        table, meta = read_token_shard(path)
        kinds = table.column("kind").to_pylist()
        for index, kind in enumerate(kinds):
            if kind not in found or len(found[kind]) >= per_kind:
                continue
            images = sentence_tokens(table, index).reshape(-1, meta.tokens_per_image)
            # pairs: (x, y) * k then a query x, so the truth is the query's annotation
            take = 2 * (context_images // 2) + 1 if kind == "pairs" else context_images
            if len(images) < take + 1:
                continue
            found[kind].append(Prompt(
                sentence_id=table.column("sentence_id")[index].as_py(), source=table.column("source")[index].as_py(),
                kind=kind, task=table.column("task")[index].as_py(), context=images[:take].astype(np.int64),
                truth=images[take].astype(np.int64)))
        if all(len(v) >= per_kind for v in found.values()):
            break
    return [p for kind in PROMPT_KINDS for p in found[kind]]


def _framed(image: np.ndarray, colour: tuple[int, int, int], border: int = 6) -> np.ndarray:
    out = np.empty((image.shape[0] + 2 * border, image.shape[1] + 2 * border, 3), np.uint8)
    out[:] = colour
    out[border:-border, border:-border] = image
    return out


def run_demo(build_output: str, tokenizer_path: str, *, steps: int = 300, seq_len: int = 1024,
             batch_size: int = 4, context_images: int = 3, seed: int = 0, threads: int | None = None,
             preset: str = "tiny") -> dict[str, Any]:
    """Fit, prompt, decode; returns (and writes) the demo summary."""
    import io

    import torch
    from PIL import Image

    from tokenizer.codec import Tokenizer

    from .checkpoint_io import load_pretrained
    from .generate import generate_codes

    shards = find_shards(os.path.join(build_output, TOKENS_DIR))
    if not shards:
        raise FileNotFoundError(f"{build_output} has no committed token shards under {TOKENS_DIR}/; "
                                "build with the tokenizer enabled first")
    _, meta = read_token_shard(shards[0])
    tok = Tokenizer.from_pretrained(tokenizer_path, device="cpu")
    if not tok.made(meta.tokenizer_hash):
        raise UsageError(f"{tokenizer_path} (weights and config {tok.tokenizer_hash}) is not the tokenizer of these shards "
                         f"({meta.tokenizer_name}, weights {meta.tokenizer_hash}); pass the build's --tokenizer")
    folder = os.path.join(build_output, DEMO_DIR)
    run = os.path.join(folder, "run")
    options = FitOptions(data=[os.path.join(build_output, TOKENS_DIR, "**", "*.arrow")], out=run, preset=preset,
                         split="train", seq_len=seq_len, batch_size=batch_size, max_steps=steps, lr=3e-3,
                         min_lr=3e-4, warmup_steps=max(1, steps // 10), seed=seed,
                         checkpoint_every=max(1, steps // 3), log_every=max(1, steps // 10), threads=threads,
                         model_overrides={"max_position_embeddings": seq_len})
    summary = fit(options)
    with open(os.path.join(run, "losses.json"), encoding="utf-8") as handle:
        curve = json.load(handle)

    model = load_pretrained(summary["checkpoint"], device="cpu")
    prompts = pick_prompts(shards, context_images)
    rows, described = [], []
    side = int(round(meta.tokens_per_image ** 0.5))
    for number, prompt in enumerate(prompts):
        codes = generate_codes(model, prompt.context, 1, seed=seed + number, temperature=1.0, top_k=100,
                               codebook_size=meta.codebook_size, tokens_per_image=meta.tokens_per_image)
        with torch.inference_mode():
            images = tok.decode(np.concatenate([prompt.context, codes.astype(np.int64), prompt.truth[None]]),
                                grid=(side, side))
        k = len(prompt.context)
        row = make_strip(images[:k], images[k:k + 1])
        row = np.concatenate([row, _framed(images[k + 1], TRUTH_FRAME)], axis=1)
        rows.append(row)
        agreement = float((codes[0].astype(np.int64) == prompt.truth).mean())
        described.append({"sentence_id": prompt.sentence_id, "source": prompt.source, "kind": prompt.kind,
                          "task": prompt.task, "context_images": k, "codes_equal_to_truth": agreement})
    strip_name = None
    if rows:
        width = max(r.shape[1] for r in rows)
        canvas = np.full((sum(r.shape[0] for r in rows), width, 3), 255, np.uint8)
        y = 0
        for r in rows:
            canvas[y:y + r.shape[0], :r.shape[1]] = r
            y += r.shape[0]
        buffer = io.BytesIO()
        Image.fromarray(canvas).save(buffer, format="PNG")
        write_bytes(os.path.join(folder, STRIP_PNG), buffer.getvalue())
        strip_name = STRIP_PNG
    result = {
        "preset": preset, "parameters": summary["parameters"], "steps": summary["step"], "seq_len": seq_len,
        "batch_size": batch_size, "tokens_seen": summary["tokens_seen"], "tokens_per_s": summary["tokens_per_s"],
        "final_loss": curve["loss"][-1] if curve["loss"] else None, "curve": curve,
        "checkpoint": os.path.relpath(summary["checkpoint"], build_output) if summary["checkpoint"] else None,
        "tokenizer": meta.tokenizer_name, "generation_png": strip_name, "prompts": described,
        "legend": "grey: prompt, red: sampled (seeded, top-k 100), green: the true next image",
    }
    write_bytes(os.path.join(folder, DEMO_JSON), (json.dumps(result, indent=1) + "\n").encode())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="a finished build's output folder (with tokens/)")
    parser.add_argument("--tokenizer", help="the build's tokenizer folder (default: the embedded one)")
    parser.add_argument("--steps", type=int, default=300, help="fit steps (default: %(default)s)")
    parser.add_argument("--seq-len", type=int, default=1024, help="tokens per window (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per step (default: %(default)s)")
    parser.add_argument("--context-images", type=int, default=3,
                        help="prompt images before each generated one (default: %(default)s)")
    parser.add_argument("--preset", default="tiny", help="model size, as trainer.fit's (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own count)")
    args = parser.parse_args(argv)
    from tokenizer.checkpoint import embedded_checkpoint

    try:
        result = run_demo(args.output, args.tokenizer or embedded_checkpoint(), steps=args.steps,
                          seq_len=args.seq_len, batch_size=args.batch_size, context_images=args.context_images,
                          seed=args.seed, threads=args.threads, preset=args.preset)
    # a flag or the files it names (the build, its tokenizer, the fit they feed); a bug keeps its traceback
    except (UsageError, CheckpointError, TokenizerUsageError, TokenizerCheckpointError, ShardDamaged,
            FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    strip = (f"{len(result['prompts'])} prompts -> {os.path.join(args.output, DEMO_DIR, result['generation_png'])}"
             if result["generation_png"] else
             f"no prompt (no sentence holds {args.context_images} context images and a next one): no {STRIP_PNG}")
    print(f"trainer demo: {result['steps']} steps of {result['preset']}, final loss {result['final_loss']:.3f}, {strip}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
