"""Perplexity of target images given visual context, as the LVM paper measures it.

Protocols, picked per sentence from its `kind` (see `uvd_pipeline/sentences.py`):
- k_shot (pairs; annotated_video in the interleaved layout; multitask): the sentence is tuples
  (x, y) or (x, a1..a4); the target is an annotation of tuple k+1 given the k tuples before it and
  the query's own earlier images: x1,y1,...,xk,yk,x_{k+1} -> y_{k+1}. Multitask groups by the
  annotation's name (its lineage `task_order`).
- next_frame (video, multiview, category; the frames half of a separated annotated_video):
  frame c+1 given frames 1..c, for c in `contexts` (paper: 1, 3, 7, 11, 15).
- unconditional (image): the image given only [BOS] (in stream mode the first token, having no
  context, is not scored). The mode is the one the checkpoint was fitted in (`trainer.packing`).

Every instance's context is a prefix of its sentence, so one causal forward over the longest
prefix that fits scores all of a sentence's instances exactly (a position never sees later
tokens). Perplexity = exp(mean NLL over the target's tokens); a group reports exp of the mean
over all its target tokens and the mean of the per-instance perplexities. An instance whose
prefix would exceed max_position_embeddings is skipped and counted, never truncated.

    python -m trainer.evaluate --checkpoint runs/lvm-300m --data 'out/tokens/**/*.arrow' --split val
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tokenizer.out_paths import make_parent, output_problem
from tokenizer.progress import Progress
from uvd_pipeline.shards import (ShardDamaged, TokenShardMeta, find_shards, read_token_shard, sentence_tokens,
                                 verify_token_shard)

from .config import BOS_ID, CODEBOOK_SIZE, PAD_ID, TOKENS_PER_IMAGE, UsageError
from .data import (check_same_tokenizer, check_token_layout, check_token_values, check_trained_tokenizer,
                   describe_tokenizer, tokenizer_record)
from .devices import CHOICES, resolve_device
from .checkpoint_io import recorded_tokenizer
from .model import LVMTransformer
from .packing import add_mode_flags, choose_mode, recorded_mode

DEFAULT_CONTEXTS = (1, 3, 7, 11, 15)
SEQUENCE_KINDS = ("video", "multiview", "category")


@dataclass(frozen=True)
class Instance:
    """One scored target: image `target` of its sentence, given every image before it."""

    protocol: str  # k_shot | next_frame | unconditional
    task: str
    context: int  # k (shots), c (context frames) or 0
    target: int  # index of the target image in the sentence

    def first_token(self, bos: bool) -> int:
        """Tokens of the target skipped: the very first token of a stream has nothing to condition on."""
        return 1 if (self.target == 0 and not bos) else 0

    def needed_positions(self, bos: bool, tokens_per_image: int) -> int:
        return int(bos) + (self.target + 1) * tokens_per_image

    def context_tokens(self, bos: bool, tokens_per_image: int) -> int:
        return int(bos) + self.target * tokens_per_image


def _tuple_instances(n_images: int, size: int, names: Sequence[str], shots: Sequence[int] | None) -> list[Instance]:
    n_tuples = n_images // size
    ks = range(1, n_tuples) if shots is None else [k for k in shots if 0 <= k < n_tuples]
    return [Instance("k_shot", names[j], k, size * k + j) for k in ks for j in range(1, size)]


def plan_instances(kind: str, task: str, n_images: int, lineage: dict[str, Any] | None,
                   shots: Sequence[int] | None = None,
                   contexts: Sequence[int] = DEFAULT_CONTEXTS) -> tuple[list[Instance], str | None]:
    """The instances a sentence offers, or ([], why not). `shots` None = 1 .. (tuples - 1)."""
    meta = (lineage or {}).get("meta", {}) or {}
    if kind == "pairs":
        return _tuple_instances(n_images, 2, ["", task], shots), None
    if kind == "multitask":
        order = meta.get("task_order")
        size = len(order) if order else 5
        names = list(order) if order else ["image"] + [f"element{j}" for j in range(1, size)]
        return _tuple_instances(n_images, size, names, shots), None
    if kind == "annotated_video":
        layout = meta.get("layout")
        if layout == "interleaved":
            return _tuple_instances(n_images, 2, ["", task], shots), None
        if layout == "separated":  # frames first: a plain frame sequence
            frames = n_images // 2
            return [Instance("next_frame", "frames", c, c) for c in contexts if 0 < c < frames], None
        return [], f"annotated_video without a known layout ({layout!r})"
    if kind in SEQUENCE_KINDS:
        return [Instance("next_frame", task, c, c) for c in contexts if 0 < c < n_images], None
    if kind == "image":
        return [Instance("unconditional", task, 0, 0)], None
    return [], f"no protocol for kind {kind!r}"


@dataclass
class Group:
    """Running sums for one (source, kind, task, protocol, context) cell."""

    instances: int = 0
    tokens: int = 0
    nll_sum: float = 0.0
    instance_ppl_sum: float = 0.0
    context_tokens: set[int] = field(default_factory=set)

    def add(self, nll: torch.Tensor, context_tokens: int) -> None:
        total = float(nll.sum())
        self.instances += 1
        self.tokens += nll.numel()
        self.nll_sum += total
        self.instance_ppl_sum += math.exp(total / nll.numel())
        self.context_tokens.add(context_tokens)

    def summary(self) -> dict[str, Any]:
        mean = self.nll_sum / max(self.tokens, 1)
        return {"instances": self.instances, "tokens": self.tokens, "nll": mean, "perplexity": math.exp(mean),
                "mean_instance_perplexity": self.instance_ppl_sum / max(self.instances, 1),
                "context_tokens": sorted(self.context_tokens)}


@dataclass
class _Item:
    ids: np.ndarray  # the scored prefix, BOS included
    scored: list[tuple[tuple[str, str, str, str, int], Instance]]


class Evaluator:
    """Accumulates perplexities over sentences; `run_batch` does the batched forward."""

    def __init__(self, model: LVMTransformer, *, bos: bool = True, shots: Sequence[int] | None = None,
                 contexts: Sequence[int] = DEFAULT_CONTEXTS, batch_size: int = 4,
                 tokens_per_image: int = TOKENS_PER_IMAGE) -> None:
        if model.config.vocab_size <= BOS_ID:
            raise UsageError(f"model vocab_size {model.config.vocab_size} has no room for the special ids (BOS {BOS_ID})")
        self.model, self.bos, self.shots, self.contexts = model, bos, shots, tuple(contexts)
        self.batch_size, self.tokens_per_image = max(1, batch_size), tokens_per_image
        self.max_positions = model.config.max_position_embeddings
        self.groups: dict[tuple[str, str, str, str, int], Group] = defaultdict(Group)
        self.skipped: dict[str, int] = defaultdict(int)
        self.sentences = 0
        self._pending: list[_Item] = []

    def add_sentence(self, source: str, kind: str, task: str, tokens: np.ndarray,
                     lineage: dict[str, Any] | None = None) -> None:
        tpi = self.tokens_per_image
        if tokens.size % tpi:
            raise ValueError(f"{source}/{kind}: {tokens.size} tokens is not whole images of {tpi}")
        instances, why = plan_instances(kind, task, tokens.size // tpi, lineage, self.shots, self.contexts)
        if why:
            self.skipped[why] += 1
            return
        fitting = []
        for inst in instances:
            needed = inst.needed_positions(self.bos, tpi)
            if needed > self.max_positions:
                self.skipped[f"{inst.protocol} context {inst.context}: needs {needed} positions "
                             f"> max_position_embeddings {self.max_positions}"] += 1
            else:
                fitting.append(inst)
        if not fitting:
            return
        self.sentences += 1
        length = max(inst.target + 1 for inst in fitting) * tpi
        body = np.asarray(tokens[:length], dtype=np.int64)
        ids = np.concatenate([[BOS_ID], body]) if self.bos else body
        self._pending.append(_Item(ids, [((source, kind, inst.task, inst.protocol, inst.context), inst)
                                         for inst in fitting]))
        if len(self._pending) >= self.batch_size:
            self.flush()

    @torch.inference_mode()
    def flush(self) -> None:
        """One forward over the pending prefixes (right-padded: causal attention never looks right)."""
        if not self._pending:
            return
        items, self._pending = self._pending, []
        device = next(self.model.parameters()).device
        width = max(item.ids.size for item in items)
        batch = torch.full((len(items), width), PAD_ID, dtype=torch.long)
        for row, item in enumerate(items):
            batch[row, :item.ids.size] = torch.from_numpy(item.ids)
        batch = batch.to(device)
        hidden = self.model.hidden_states(batch)
        offset, tpi = int(self.bos), self.tokens_per_image
        for row, item in enumerate(items):
            for key, inst in item.scored:
                start = offset + inst.target * tpi + inst.first_token(self.bos)
                end = offset + (inst.target + 1) * tpi
                logits = self.model.lm_head(hidden[row, start - 1:end - 1]).float()
                nll = F.cross_entropy(logits, batch[row, start:end], reduction="none")
                self.groups[key].add(nll.cpu(), inst.context_tokens(self.bos, tpi))

    def result(self) -> dict[str, Any]:
        self.flush()
        groups = [{"source": s, "kind": k, "task": t, "protocol": p, "context": c, **g.summary()}
                  for (s, k, t, p, c), g in sorted(self.groups.items())]
        totals: dict[tuple[str, str, int], Group] = defaultdict(Group)
        for (_, _, t, p, c), g in self.groups.items():
            total = totals[(p, t, c)]
            total.instances += g.instances
            total.tokens += g.tokens
            total.nll_sum += g.nll_sum
            total.instance_ppl_sum += g.instance_ppl_sum
            total.context_tokens |= g.context_tokens
        overall = [{"protocol": p, "task": t, "context": c, **g.summary()} for (p, t, c), g in sorted(totals.items())]
        return {"bos": self.bos, "tokens_per_image": self.tokens_per_image, "max_position_embeddings": self.max_positions,
                "sentences": self.sentences, "groups": groups, "overall": overall, "skipped": dict(sorted(self.skipped.items()))}


def iter_sentences(paths: Iterable[str], split: str | None = "val",
                   limit: int | None = None) -> Iterator[tuple[str, str, str, np.ndarray, dict[str, Any]]]:
    """(source, kind, task, tokens, lineage) of each sentence of `split` (None: all), at most
    `limit` per (source, kind, task), in shard order."""
    seen: dict[tuple[str, str, str], int] = defaultdict(int)
    first: tuple[str, TokenShardMeta] | None = None
    for path in paths:
        table, meta = read_token_shard(path)
        if meta.codebook_size > CODEBOOK_SIZE:
            raise UsageError(f"{path}: codebook_size {meta.codebook_size} does not fit the LM's {CODEBOOK_SIZE} codes")
        first = first or (path, meta)
        check_same_tokenizer(path, meta, *first)
        check_token_layout(path, table, meta)
        check_token_values(path, table, meta)
        columns = {name: table.column(name).to_pylist() for name in ("source", "kind", "task", "split", "lineage")}
        for i in range(table.num_rows):
            if split is not None and columns["split"][i] != split:
                continue
            key = (columns["source"][i], columns["kind"][i], columns["task"][i])
            if limit is not None and seen[key] >= limit:
                continue
            seen[key] += 1
            yield (*key, sentence_tokens(table, i), json.loads(columns["lineage"][i] or "{}"))


def shard_tokens_per_image(paths: Sequence[str]) -> int:
    return read_token_shard(paths[0])[1].tokens_per_image if paths else TOKENS_PER_IMAGE


def evaluate(model: LVMTransformer, shard_paths: Sequence[str], *, split: str | None = "val", bos: bool = True,
             shots: Sequence[int] | None = None, contexts: Sequence[int] = DEFAULT_CONTEXTS, batch_size: int = 4,
             limit: int | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Perplexities of every protocol instance in the shards, grouped (see the module docstring);
    `progress` counts the sentences read."""
    evaluator = Evaluator(model, bos=bos, shots=shots, contexts=contexts, batch_size=batch_size,
                          tokens_per_image=shard_tokens_per_image(shard_paths))
    model.eval()
    for source, kind, task, tokens, lineage in iter_sentences(shard_paths, split, limit):
        evaluator.add_sentence(source, kind, task, tokens, lineage)
        if progress is not None:
            progress.advance()
    return evaluator.result()


def format_table(result: dict[str, Any]) -> str:
    """A fixed-width table of the groups, then the totals across sources, then what was skipped."""
    header = f"{'source':<16} {'kind':<16} {'task':<14} {'protocol':<13} {'ctx':>3} {'n':>6} {'ctx tokens':>10} {'ppl':>10}"
    lines = [header, "-" * len(header)]
    for g in result["groups"]:
        lines.append(f"{g['source'][:16]:<16} {g['kind'][:16]:<16} {g['task'][:14]:<14} {g['protocol']:<13} "
                     f"{g['context']:>3} {g['instances']:>6} {max(g['context_tokens']):>10} {g['perplexity']:>10.2f}")
    lines += ["", "all sources:"]
    for g in result["overall"]:
        lines.append(f"  {g['protocol']:<13} {g['task'][:14]:<14} ctx {g['context']:>3}  n {g['instances']:>6}  "
                     f"ppl {g['perplexity']:>10.2f}")
    for reason, count in result["skipped"].items():
        lines.append(f"skipped {count}: {reason}")
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def check_flags(args: argparse.Namespace) -> None:
    """The numbers and the output path, before any shard or weight is read: `--batch-size 0` was
    taken as 1 and `--limit 0` evaluated nothing and failed afterwards (exit 1); `--out` a folder
    failed with IsADirectoryError after the whole evaluation."""
    for name in ("batch_size", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} {value}: give at least 1")
    # values no instance can have were dropped without a word (plan_instances keeps 0 <= k, 0 < c)
    if any(k < 0 for k in args.shots or []):
        raise UsageError(f"--shots {','.join(map(str, args.shots))}: give k of 0 or more")
    if any(c < 1 for c in args.contexts):
        raise UsageError(f"--contexts {','.join(map(str, args.contexts))}: give context frames of 1 or more")
    if args.out is not None:
        problem = output_problem(args.out)
        if problem:
            raise UsageError(f"--out {args.out}: {problem}")


def check_split(paths: Sequence[str], split: str) -> None:
    """Refuse a `--split` no row of the shards has, before the model loads (a 7B checkpoint took
    minutes to load before 'nothing to evaluate'), naming the splits they do hold. Reads each
    shard's `split` column, memory-mapped, checked against its stats' size only."""
    if split == "all":
        return
    held: Counter[str | None] = Counter()
    for path in paths:
        held.update(read_token_shard(path, verify="size")[0].column("split").to_pylist())
        if held[split]:
            return
    found = ", ".join(f"{name if name is not None else 'no split'} ({count} sentences)"
                      for name, count in sorted(held.items(), key=lambda item: str(item[0]))) or "no sentence"
    raise UsageError(f"--split {split}: no sentence of {len(paths)} shard(s) is in split {split!r} (they hold: "
                     f"{found}); give one of those, or --split all")


def shards_tokenizer(paths: Sequence[str]) -> dict[str, Any]:
    """The tokenizer of the first shard, as a checkpoint records one (`iter_sentences` refuses any
    other shard that differs from it); checked whole first, so damage is named as damage. With
    the weights' own hash where its stats record it: a model fitted on shards of an earlier version
    recorded that hash alone, and the same tokenizer's shards now record one of weights and config."""
    record = tokenizer_record(read_token_shard(paths[0])[1])
    weights = verify_token_shard(paths[0], full=False).get("tokenizer_weights_hash")
    if isinstance(weights, str) and weights:
        record["weights_hash"] = weights
    return record


def check_tokenizer(checkpoint: str, paths: Sequence[str], shards: Mapping[str, Any]) -> dict[str, Any] | None:
    """The checkpoint's recorded tokenizer, after refusing shards of another one; None where the
    checkpoint records none (an HF download such as the released LVM 7B): nothing to compare."""
    recorded = recorded_tokenizer(checkpoint)
    if recorded is not None:
        check_trained_tokenizer(checkpoint, recorded, shards, f"--data {paths[0]}")
    return recorded


def main(argv: list[str] | None = None) -> int:
    """Exit 2 with one `error:` line for a run refused for its flags or the files they name
    (`UsageError`, a damaged or unfitting checkpoint or token shard, shards of another tokenizer
    than the checkpoint records), all judged before the model loads where they can be; any other
    error, a `ValueError` from inside the evaluation included, is a bug and keeps its traceback."""
    from .checkpoint_io import CheckpointError, load_pretrained, parse_dtype

    parser = argparse.ArgumentParser(prog="python -m trainer.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="model folder (ours or an HF Llama folder)")
    parser.add_argument("--data", required=True, nargs="+", help="token shard globs or folders")
    parser.add_argument("--split", default="val", help="split to evaluate; 'all' for every row (default: %(default)s)")
    parser.add_argument("--shots", type=_ints, default=None, help="k values for k_shot (default 1..tuples-1)")
    parser.add_argument("--contexts", type=_ints, default=list(DEFAULT_CONTEXTS),
                        help=f"context frames for next_frame (default: {','.join(map(str, DEFAULT_CONTEXTS))})")
    add_mode_flags(parser, "scored")
    parser.add_argument("--batch-size", type=int, default=4, help="sentences per forward (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many sentences per (source, kind, task)")
    parser.add_argument("--device", default="auto", help=f"{CHOICES} (default: %(default)s)")
    parser.add_argument("--dtype", default="auto",
                        help="float32 | bfloat16 | float16 | auto: bf16 on CUDA, else fp32 (default: %(default)s)")
    parser.add_argument("--out", default=None, help="write the JSON result here (missing folders are made)")
    args = parser.parse_args(argv)

    paths = sorted({p for pattern in args.data for p in find_shards(pattern)})
    if not paths:
        parser.error(f"--data {' '.join(args.data)}: no committed token shards (.arrow with .stats.json) found")
    try:
        check_flags(args)
        device = resolve_device(args.device)
        dtype = ("bfloat16" if device.type == "cuda" else "float32") if args.dtype == "auto" else args.dtype
        parse_dtype(dtype)
        shards = shards_tokenizer(paths)
        check_split(paths, args.split)
        recorded = check_tokenizer(args.checkpoint, paths, shards)
        trained_mode = recorded_mode(args.checkpoint)
        mode, mode_note = choose_mode(args.checkpoint, args.mode, trained_mode)
        model = load_pretrained(args.checkpoint, device=device, dtype=dtype)
        progress = Progress("trainer evaluate", "sentences")
        result = evaluate(model, paths, split=None if args.split == "all" else args.split, bos=mode == "paper",
                          shots=args.shots, contexts=args.contexts, batch_size=args.batch_size, limit=args.limit,
                          progress=progress)
    except (UsageError, CheckpointError, ShardDamaged) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress.done(f"{len(paths)} shard(s), {sum(g['instances'] for g in result['groups'])} instances scored")
    result.update(checkpoint=args.checkpoint, data=paths, split=args.split, dtype=dtype, mode=mode,
                  mode_recorded=trained_mode,
                  tokenizer=shards, tokenizer_checked=recorded is not None)
    if args.out:
        make_parent(args.out)
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
    print(format_table(result))
    if mode_note:  # after the result, as the tokenizer's: an error line stays the only line
        print(f"note: {mode_note}", file=sys.stderr)
    if recorded is None:
        print(f"note: {args.checkpoint} records no tokenizer (a model from elsewhere, or a fit from before it was "
              f"recorded): that it was trained on the shards' tokenizer {describe_tokenizer(result['tokenizer'])} "
              "was not checked", file=sys.stderr)
    if not result["groups"]:
        print(f"error: nothing to evaluate in split {args.split!r} of {len(paths)} shard(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
