"""The report's figures, gathered from what a build committed (summary, rejects, rendered tars,
token shards, the trainer demo): plain data, no drawing and no HTML, so every number the page
shows is also in report.json and testable without a browser."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any, Iterator

import numpy as np

from sources import fsio
from tokenizer.progress import Progress
from uvd_pipeline.quality import INPUT_BINS, STAGES, merge_lengths, sorted_lengths
from uvd_pipeline.render import decode_png
from uvd_pipeline.rendered_shards import (RENDERED_DIR, STATS_SUFFIX, TAR_SUFFIX, iter_shard, read_json, read_stats,
                                          sentence_group, verified_tar)
from uvd_pipeline.summary import REJECTS_FILE, SUMMARY_FILE

TRAINER_DIR = "trainer"  # written by `python -m trainer.demo` (the report only reads it)
EXAMPLES_PER_REASON = 3
# a line of `rejects.jsonl`: a key, a reason, a detail of at most 300 characters (~0.5 KB); one past
# this is no line the build wrote (a file replaced by one without line ends is never read whole)
MAX_REJECT_LINE_BYTES = 1 << 20
# reconstruction sample of each source: its token shards in path order (train before val), the
# first RECONSTRUCTION_PER_SENTENCE images of each sentence in order, RECONSTRUCTION_IMAGES in all
RECONSTRUCTION_IMAGES = 8
RECONSTRUCTION_PER_SENTENCE = 2
# torch threads of the report's decode, fixed: a convolution split across another number of threads
# rounds otherwise, and all cores (as before) gave other sheets on every machine; 2 decodes the uvd-tiny
# sample in 1.8 s a source here against 3.2 s on 1
RECONSTRUCTION_THREADS = 2
# the overall histogram's key among the per-source ones: a source name is lower_snake_case, so no
# source can take it ("all" could: a source named `all` replaced the overall line of the plot)
ALL_SOURCES = "all sources"


def output_problems(output: str, summary: dict[str, Any], progress: Progress | None = None) -> list[tuple[str, str]]:
    """(file, why) for everything that makes the summary's numbers untrue of the files now: a
    committed file missing or of another size (`verify --quick`: no file is read; the files the
    report reads are hashed as it reads them, and `rejects.jsonl`'s lines are held to the shards'
    rejects files, as a full verify does), a build holding the output, committed shards of
    this config that summary.json does not list (a build stopped before its summary). The unit
    store is left out: it is the build's cache, none of the report's numbers come from it.
    `progress` counts the shards checked."""
    from uvd_pipeline.output_lock import lock_uri
    from uvd_pipeline.verify import verify_output

    result = verify_output(output, quick=True, units=False, mixture=False, progress=progress, rejects=True)
    problems = list(result.damaged)
    if result.holder_gone:
        problems.append((lock_uri(output), f"the build that held this output ({result.holder}) is gone, killed or "
                                           "crashed before it finished: run the same build command again to finish it"))
    elif result.lock_starting:  # an empty lock file, as `build` reads it
        problems.append((lock_uri(output), f"a build may be starting on this output: {result.lock_unreadable}"))
    elif result.holder:
        problems.append((lock_uri(output), f"a build holds this output ({result.holder}): its summary is not final"))
    # compared by where they lie in the output: a listing names files by absolute paths, an output
    # given as `build/sample` would otherwise list none of them
    listed = {(s["source"], s["split"], s["tar"][: -len(TAR_SUFFIX)] + STATS_SUFFIX) for s in summary["shards"]}
    damaged = {_shard_place(uri) for uri, _ in problems}
    for uri in result.stats:  # verify's listing: a second one is a second round of requests on an object store
        place = _shard_place(uri)
        if place not in listed and place not in damaged and read_stats(uri).get("config_hash") == summary["config_hash"]:
            problems.append((uri, f"committed, but {SUMMARY_FILE} does not list it: a build stopped before "
                                  "its summary; run the build again to finish it"))
    return problems


def _shard_place(uri: str) -> tuple[str, ...]:
    """(source, split, file name) of a file in `rendered/<source>/<split>/`, however the output's
    own path is written (relative, absolute, a URL)."""
    return tuple(uri.rstrip("/").rsplit("/", 3)[-3:])


def pick_sentences(output: str, summary: dict[str, Any], per_group: int) -> dict[str, list]:
    """The first sentences (in shard order, train first) of every kind/task group.

    Shards are opened only while some group they hold still wants sentences.
    """
    picked: dict[str, list] = defaultdict(list)
    shards = sorted(summary["shards"], key=lambda s: (s["split"] != "train", s["source"], s["split"], s["shard"]))
    for shard in shards:
        wanted = [g for g in shard.get("by_kind_task", {}) if len(picked[g]) < per_group]
        if not wanted:
            continue
        uri = verified_tar(output, shard["source"], shard["split"], shard["tar"])  # size and sha256
        for sentence in iter_shard(uri):
            group = sentence_group(sentence.header["kind"], sentence.header["task"])
            if len(picked[group]) < per_group:
                picked[group].append(sentence)
            if all(len(picked[g]) >= per_group for g in wanted):
                break
    return dict(sorted(picked.items()))


def _reject_lines(uri: str) -> Iterator[bytes]:
    """The lines of the build's `rejects.jsonl`, each read within `MAX_REJECT_LINE_BYTES`: a fifo
    or device in its place (never opened) or a longer line is a `ShardDamaged` naming the file."""
    from uvd_pipeline.shards import ShardDamaged

    fix = "not the file the build wrote; the build writes it again"
    try:
        handle = fsio.open_file(uri)
    except fsio.NotAFile as exc:  # a fifo would block the report, /dev/zero never end
        raise ShardDamaged(uri, f"{exc.kind}, {fix}") from None
    with handle:
        while line := handle.readline(MAX_REJECT_LINE_BYTES + 1):
            if len(line) > MAX_REJECT_LINE_BYTES:
                raise ShardDamaged(uri, f"a line longer than {MAX_REJECT_LINE_BYTES >> 20} MiB, {fix}")
            yield line.rstrip(b"\n")


def _reject_row(line: bytes) -> dict[str, Any] | None:
    """A line of `rejects.jsonl` as the build writes it (a JSON object whose `reason`, `key` and
    `detail` are text, and `source` where it names an `input`: what the page shows), or None."""
    try:
        row = json.loads(line)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return None
    if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("reason", "key", "detail")):
        return None
    return row if not row.get("input") or isinstance(row.get("source"), str) else None


def _reject_examples(output: str, expected: int) -> dict[str, list[dict[str, str]]]:
    """The first rejects of each reason; `ShardDamaged` when the file does not hold the `expected`
    number of rejects the summary counts (cut short or replaced since the build)."""
    from uvd_pipeline.shards import ShardDamaged

    examples: dict[str, list[dict[str, str]]] = defaultdict(list)
    uri = fsio.join(output, REJECTS_FILE)
    found = 0
    if fsio.exists(uri):
        for number, line in enumerate(_reject_lines(uri), 1):
            if not line:
                continue
            found += 1
            row = _reject_row(line)
            if row is None:  # the shard's own file edited alike: no size or line digest tells
                raise ShardDamaged(uri, f"line {number} is no reject the build wrote (not a JSON object with a "
                                        "reason, key and detail); the build writes it again")
            if len(examples[row["reason"]]) < EXAMPLES_PER_REASON:
                examples[row["reason"]].append(row)
    if found != expected:
        raise ShardDamaged(uri, f"{found} rejects, {SUMMARY_FILE} counts {expected}; the build writes it again")
    return dict(sorted(examples.items()))


def report_data(output: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Counts by source, kind, task, split and reject reason, with examples, from the summary."""
    by_kind: dict[str, int] = defaultdict(int)
    by_kind_task: dict[str, int] = defaultdict(int)
    by_split: dict[str, int] = defaultdict(int)
    by_reason: dict[str, int] = defaultdict(int)
    for source in summary["sources"].values():
        for kind, n in source["by_kind"].items():
            by_kind[kind] += n
        for group, n in source.get("by_kind_task", {}).items():
            by_kind_task[group] += n
        for split, counts in source["by_split"].items():
            by_split[split] += counts["sentences"]
        for reason, n in source["rejects_by_reason"].items():
            by_reason[reason] += n
    return {
        "output": output,
        "config_hash": summary["config_hash"],
        "image_size": summary["image_size"],
        "totals": summary["totals"],
        "sources": summary["sources"],
        "sentences_by_kind": dict(sorted(by_kind.items())),
        "sentences_by_task": dict(sorted(by_kind_task.items())),
        "sentences_by_split": dict(sorted(by_split.items())),
        "rejects_by_reason": dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
        "reject_examples": _reject_examples(output, summary["totals"]["rejects"]),
        "duplicates": {name: s["duplicates"] for name, s in summary["sources"].items() if "duplicates" in s},
        "warnings": {name: s["warnings"] for name, s in summary["sources"].items() if s.get("warnings")},
        "mixture": summary.get("mixture"),
        **_quality_data(summary, by_kind_task),
    }


def _quality_data(summary: dict[str, Any], sentences_by_group: dict[str, int]) -> dict[str, Any]:
    """Counts per source and per kind/task, input sizes, sentence lengths, stage throughput."""
    tokens = (summary.get("tokens") or {}).get("sources", {})
    images_by_group: Counter[str] = Counter()
    lengths: dict[str, Counter[str]] = {}
    for source in summary["sources"].values():
        images_by_group.update(source.get("images_by_kind_task", {}))
        merge_lengths(lengths, source.get("sentence_lengths"))
    inputs = {}
    for name, source in summary["sources"].items():
        hist = source.get("inputs")
        if hist and hist["count"]:
            inputs[name] = {**hist, "mean_megapixels": round(hist["pixels"] / hist["count"] / 1e6, 4),
                            "below_canvas_share": round(hist["below_canvas"] / hist["count"], 4)}
    run = summary.get("run", {})
    return {
        "counts": {
            "by_source": {name: {"sentences": s["sentences"], "images": s["images"],
                                 "tokens": tokens.get(name, {}).get("tokens")}
                          for name, s in summary["sources"].items()},
            # tokens per kind/task: images x tokens per image of the token shards (tokenizer section)
            "by_kind_task": {group: {"sentences": n, "images": images_by_group.get(group), "tokens": None}
                             for group, n in sorted(sentences_by_group.items())},
        },
        "inputs": {"bins": summary.get("input_bins", {k: list(v) for k, v in INPUT_BINS.items()}),
                   "by_source": inputs},
        "sentence_lengths": sorted_lengths(lengths),
        "throughput": {"seconds": run.get("seconds"), "runner": run.get("runner"), "workers": run.get("workers"),
                       "metrics": run.get("metrics", {"reported": True, "not_reported": []}),
                       # pipeline order (summary.json sorts keys)
                       "stages": {k: run["stages"][k] for k in STAGES if k in run.get("stages", {})},
                       "distributions": run.get("distributions", {})},
    }


def token_usage(output: str) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, list[str]]] | None:
    """Code statistics of the token shards (codebook usage, perplexity, entropy), overall and per
    source: (section, code histograms with `ALL_SOURCES` first, token shard paths per source); None
    without token shards or for a remote output (token shards are memory-mapped: local outputs
    only). Token shards of no rows (every input rejected) give zero counts and no histogram."""
    from tokenizer.metrics import codebook_usage, entropy_bits, perplexity
    from uvd_pipeline.shards import ShardDamaged, find_shards, read_token_shard

    local = fsio.local_path(output)
    if local is None:
        return None
    paths = find_shards(fsio.join(local, "tokens"))
    if not paths:
        return None
    histograms: dict[str, np.ndarray] = {}
    shards_of: dict[str, list[str]] = defaultdict(list)
    meta = first = None
    for path in paths:
        table, meta = read_token_shard(path)
        first = first or (path, meta)
        if meta.codebook_size != first[1].codebook_size:  # np.bincount's arrays would not add: a traceback
            raise ShardDamaged(path, f"a codebook of {meta.codebook_size} codes ({meta.tokenizer_name}), "
                                     f"{first[0]} has {first[1].codebook_size} ({first[1].tokenizer_name}): token "
                                     "shards of two tokenizers in one build's tokens/; move the foreign one out")
        source = table.column("source")[0].as_py() if table.num_rows else None
        if source is None:
            continue
        shards_of[source].append(path)
        values = np.concatenate([c.values.to_numpy() for c in table.column("tokens").chunks])
        histograms[source] = histograms.get(source, 0) + np.bincount(values, minlength=meta.codebook_size)
    assert meta is not None
    histograms = dict(sorted(histograms.items()))
    # started from zeros: with every shard empty there is no source histogram to add (an int 0)
    total = sum(histograms.values(), np.zeros(meta.codebook_size, dtype=np.int64))

    def stats(hist: np.ndarray) -> dict[str, float]:
        return {"tokens": int(hist.sum()), "codes_used": int((hist > 0).sum()),
                "usage": round(codebook_usage(hist), 4), "perplexity": round(perplexity(hist), 1),
                "entropy_bits": round(entropy_bits(hist), 4)}

    section: dict[str, Any] = {"tokenizer": meta.tokenizer_name, "weights_hash": meta.tokenizer_hash,
                               "codebook_size": meta.codebook_size, "all": stats(total),
                               "by_source": {k: stats(v) for k, v in histograms.items()},
                               "tokens_per_image": meta.tokens_per_image}
    return section, ({ALL_SOURCES: total, **histograms} if histograms else {}), dict(shards_of)


def build_tokenizer(output: str):
    """The build's tokenizer, or None when its checkpoint cannot be loaded any more."""
    from uvd_pipeline.tokenize_stage import TokenizeSettings, load_tokenizer

    build = read_json(fsio.join(output, "build.json"))
    checkpoint = build.get("config", {}).get("tokenizer", {}).get("checkpoint", "embedded")
    try:
        # eager: the report decodes a few dozen images, and the build's default compile (10-30 s a
        # process) made `make build-uvd`'s report step 35 -> 44 s
        settings = TokenizeSettings(checkpoint, batch_size=8, threads=RECONSTRUCTION_THREADS, compile=False)
        return load_tokenizer(settings)
    except Exception:  # the checkpoint moved since the build: the usage numbers still stand
        return None


def reconstruction_sample(output: str, token_paths: list[str], count: int,
                          per_sentence: int = RECONSTRUCTION_PER_SENTENCE):
    """Rendered images of token shards' rendered twins (the first `per_sentence` of each sentence,
    shard after shard, `count` in all) and their stored codes:
    (originals NHWC, codes N x tokens, grid side, the token shards used)."""
    from uvd_pipeline.shards import read_token_shard, sentence_tokens

    originals, codes, used, side = [], [], [], 0
    for token_path in token_paths:
        if len(originals) >= count:
            break
        table, meta = read_token_shard(token_path)
        side = int(round(meta.tokens_per_image ** 0.5))
        parts = token_path.split("/")
        tar = verified_tar(output, parts[-3], parts[-2], parts[-1].replace(".arrow", ".tar"))
        used.append(token_path)
        for index, sentence in enumerate(iter_shard(tar)):
            tokens = sentence_tokens(table, index).reshape(-1, meta.tokens_per_image)
            for png, image_codes in list(zip(sentence.images, tokens))[:per_sentence]:
                originals.append(decode_png(png))
                codes.append(image_codes)
                if len(originals) >= count:
                    break
            if len(originals) >= count:
                break
    if not originals:
        return np.zeros((0,), np.uint8), np.zeros((0,), np.uint16), side, used
    return np.stack(originals), np.stack(codes), side, used


def reconstructions(output: str, tokenizer, shards_of: dict[str, list[str]],
                    sample_images: int) -> Iterator[dict[str, Any]]:
    """Per source (sorted): a sample of rendered images decoded from their stored tokens with
    `tokenizer`, with per-image PSNR and SSIM against the originals."""
    from tokenizer.metrics import psnr_per_image, ssim_per_image

    for source, source_paths in sorted(shards_of.items()):
        originals, codes, side, used = reconstruction_sample(output, source_paths, sample_images)
        if not originals.size:
            continue
        decoded = tokenizer.decode(codes.astype(np.int64), grid=(side, side))
        yield {"source": source, "originals": originals, "decoded": decoded, "used": used,
               "psnr": psnr_per_image(originals, decoded), "ssim": ssim_per_image(originals, decoded)}


def trainer_demo(output: str) -> dict[str, Any] | None:
    """What `python -m trainer.demo` recorded (`make build-uvd` ends with it), or None."""
    demo_uri = fsio.join(output, TRAINER_DIR, "demo.json")
    return read_json(demo_uri) if fsio.exists(demo_uri) else None


def trainer_figures(demo: dict[str, Any]) -> dict[str, Any]:
    """The demo's numbers the page shows (its plot and image are added by the caller)."""
    section = {k: demo[k] for k in ("preset", "parameters", "steps", "seq_len", "tokens_seen", "tokens_per_s",
                                    "final_loss", "prompts", "legend")}
    section["first_loss"] = demo["curve"]["loss"][0] if demo["curve"]["loss"] else None
    return section
