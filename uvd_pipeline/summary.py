"""The build's summary: every committed shard's stats merged into `summary.json` and their
rejects into `rejects.jsonl`, the trainer's `mixture.yaml` planned from the token shards, and the
end-of-build table a person reads.

Everything is read back from the committed files (stats are the commit marks), not carried out of
the pipeline, so a resumed run summarises exactly what is on disk, and a runner that reports no
Beam metrics (Dask) loses only the counters and timings, never a count.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

from sources import fsio
from tokenizer.atomic import write_bytes
from uvd_pipeline.config import FORMAT_VERSION, BuildConfig
from uvd_pipeline.dedup import DEDUP_SOURCE_TYPES, duplicate_counts
from uvd_pipeline.quality import INPUT_BINS, empty_inputs, merge_inputs, merge_lengths, sorted_lengths, stage_throughput
from uvd_pipeline.rendered_shards import REJECTS_SUFFIX, STATS_SUFFIX, read_json, stats_files
from uvd_pipeline.source_factory import source_notices
from uvd_pipeline.tokenize_stage import arithmetic_label, summarize_tokens

SUMMARY_FILE = "summary.json"
REJECTS_FILE = "rejects.jsonl"


def metrics_reported(result) -> bool:
    """Whether the runner reports Beam metrics at all (Beam's DaskRunner raises NotImplementedError)."""
    try:
        result.metrics()
    except NotImplementedError:
        return False
    return True


# what a runner without Beam metrics leaves out of the summary; every count (sentences, images,
# rejects, shards, tokens) comes from the committed stats files either way
UNREPORTED = ("counters: records read, rendered and skipped per source",
              "distributions: stage timings, so no stage throughput")


def run_counters(result) -> dict[str, int]:
    try:
        from apache_beam.metrics.metric import MetricsFilter

        query = result.metrics().query(MetricsFilter())
        totals: Counter[str] = Counter()
        for counter in query["counters"]:
            totals[counter.key.metric.name] += counter.committed or counter.attempted or 0
        return dict(sorted(totals.items()))
    except Exception:  # some runners report no metrics; the summary stands on the stats files
        return {}


def run_distributions(result) -> dict[str, dict[str, float]]:
    """Beam Distribution metrics summed over steps: count, sum, min, max per name."""
    try:
        from apache_beam.metrics.metric import MetricsFilter

        totals: dict[str, dict[str, float]] = {}
        for metric in result.metrics().query(MetricsFilter())["distributions"]:
            value = metric.committed if metric.committed is not None and metric.committed.count else metric.attempted
            if value is None or not value.count:
                continue
            entry = totals.setdefault(metric.key.metric.name,
                                      {"count": 0, "sum": 0, "min": value.min, "max": value.max})
            entry["count"] += value.count
            entry["sum"] += value.sum
            entry["min"] = min(entry["min"], value.min)
            entry["max"] = max(entry["max"], value.max)
        return dict(sorted(totals.items()))
    except Exception:  # some runners report no metrics
        return {}


def committed_stats(output: str, config_hash: str) -> list[tuple[str, dict[str, Any]]]:
    """(stats uri, stats) of every shard of this config, by source, split and shard number."""
    shards = [(uri, stats) for uri in stats_files(output)
              if (stats := read_json(uri)).get("config_hash") == config_hash]
    return sorted(shards, key=lambda pair: (pair[1]["source"], pair[1]["split"], pair[1]["shard"]))


def _merge_stats(shards: list[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per source: the shards' counts added up (still as counters)."""
    per_source: dict[str, dict[str, Any]] = {}
    for _, stats in shards:
        entry = per_source.setdefault(stats["source"], {
            "sentences": 0, "images": 0, "rejects": 0, "shards": 0,
            "by_split": defaultdict(lambda: {"sentences": 0, "images": 0}),
            "by_kind": Counter(), "by_kind_task": Counter(), "rejects_by_reason": Counter(),
            "rejects_by_stage": Counter(), "images_by_kind_task": Counter(), "sentence_lengths": {}, "inputs": empty_inputs(),
        })
        entry["sentences"] += stats["sentences"]
        entry["images"] += stats["images"]
        entry["rejects"] += stats["rejects"]
        entry["shards"] += 1
        entry["by_split"][stats["split"]]["sentences"] += stats["sentences"]
        entry["by_split"][stats["split"]]["images"] += stats["images"]
        entry["by_kind"].update(stats["by_kind"])
        entry["by_kind_task"].update(stats.get("by_kind_task", {}))
        entry["rejects_by_reason"].update(stats["rejects_by_reason"])
        entry["rejects_by_stage"].update(stats.get("rejects_by_stage", {}))
        entry["images_by_kind_task"].update(stats.get("images_by_kind_task", {}))
        merge_lengths(entry["sentence_lengths"], stats.get("sentence_lengths"))
        merge_inputs(entry["inputs"], stats.get("inputs"))
    return per_source


def write_rejects(output: str, shards: list[tuple[str, dict[str, Any]]]) -> None:
    """Every shard's rejects in one `rejects.jsonl`, by source, then line."""
    reject_lines: list[str] = []
    for uri, stats in shards:
        if stats["rejects"]:
            rejects_uri = uri[: -len(STATS_SUFFIX)] + REJECTS_SUFFIX
            reject_lines += [line for line in fsio.read_text(rejects_uri).splitlines() if line]
    reject_lines.sort(key=lambda line: (json.loads(line)["source"], line))
    write_bytes(fsio.join(output, REJECTS_FILE), "".join(l + "\n" for l in reject_lines).encode())


def source_summaries(config: BuildConfig, shards: list[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per source, sorted: counts, kinds, rejects, lengths and inputs, its type, its warnings, and
    the duplicates dropped where deduplication applies."""
    sources = {}
    for name, entry in sorted(_merge_stats(shards).items()):
        sources[name] = {
            **{k: entry[k] for k in ("sentences", "images", "rejects", "shards")},
            "by_split": {k: dict(v) for k, v in sorted(entry["by_split"].items())},
            "by_kind": dict(sorted(entry["by_kind"].items())),
            "by_kind_task": dict(sorted(entry["by_kind_task"].items())),
            "rejects_by_reason": dict(sorted(entry["rejects_by_reason"].items())),
            "rejects_by_stage": dict(sorted(entry["rejects_by_stage"].items())),
            "images_by_kind_task": dict(sorted(entry["images_by_kind_task"].items())),
            "sentence_lengths": sorted_lengths(entry["sentence_lengths"]),
            "inputs": entry["inputs"],
        }
    types = {s.name: s.type for s in config.sources}
    for name in sources:
        sources[name]["type"] = types.get(name, "?")
    for name, warnings in source_notices(config).items():
        if name in sources:
            sources[name]["warnings"] = warnings
    for entry in sources.values():
        if config.dedup.enabled and entry["type"] in DEDUP_SOURCE_TYPES:
            entry["duplicates"] = duplicate_counts(entry["rejects_by_reason"], entry["images"], entry["rejects"],
                                                   entry["rejects_by_stage"].get("download", 0))
    return sources


def finalize(config: BuildConfig, seconds: float, counters: dict[str, int], resumed: int = 0,
             distributions: dict[str, dict[str, float]] | None = None, metrics: bool = True) -> dict[str, Any]:
    """Merge every committed shard's stats and rejects into `summary.json` and `rejects.jsonl`, and
    write `mixture.yaml`. `metrics`: whether the runner reported Beam metrics (if not, the summary
    names what is missing)."""
    output = config.output
    config_hash = config.content_hash()
    shards = committed_stats(output, config_hash)
    write_rejects(output, shards)
    sources = source_summaries(config, shards)
    tokens = summarize_tokens(output, config_hash)
    mixture = write_mixture(config, tokens, {name: s["by_kind"] for name, s in sources.items()})
    summary = {
        "format_version": FORMAT_VERSION,
        "config_hash": config_hash,
        "output": output,
        "image_size": config.image.size,
        "resize": config.image.resize,
        "totals": {
            "sentences": sum(s["sentences"] for s in sources.values()),
            "images": sum(s["images"] for s in sources.values()),
            "rejects": sum(s["rejects"] for s in sources.values()),
            "shards": len(shards),
        },
        "sources": sources,
        "input_bins": {k: list(v) for k, v in INPUT_BINS.items()},
        "tokens": tokens,
        "mixture": mixture,
        "shards": [
            {**{k: stats[k] for k in ("source", "split", "shard", "tar", "sentences", "images", "rejects",
                                      "tar_sha256")}, "by_kind_task": stats.get("by_kind_task", {})}
            for _, stats in shards
        ],
        "run": {
            "seconds": round(seconds, 2),
            "runner": config.beam.runner,
            "workers": _workers(config),
            "metrics": {"reported": metrics, "not_reported": [] if metrics else list(UNREPORTED)},
            "shards_resumed": resumed,
            "counters": counters,
            "distributions": distributions or {},
            "stages": stage_throughput(distributions or {}),
        },
    }
    write_bytes(fsio.join(output, SUMMARY_FILE), json.dumps(summary, indent=1, sort_keys=True).encode())
    return summary


def _workers(config: BuildConfig) -> int | None:
    """Worker processes, where the build itself chose them (local runner, local Dask cluster)."""
    beam = config.beam
    if beam.local:
        return beam.direct_num_workers
    if beam.is_dask and not beam.dask_settings.address:
        return beam.dask_settings.workers
    return None


def write_mixture(config: BuildConfig, tokens: dict[str, Any], kinds: dict[str, dict[str, int]]) -> dict | None:
    """Plan the asked token mix over the train token shards and write the trainer's `mixture.yaml`."""
    import yaml

    from uvd_pipeline.mixture import MIXTURE_FILE, mixture_spec, plan_mixture, source_tokens

    available = source_tokens(tokens, kinds)
    if not available:
        return None
    m = config.mixture
    plan = plan_mixture(available, m.groups, m.sources, bos_eos=m.mode == "paper")
    spec = mixture_spec(plan)
    text = "# trainer mixture of this build: python -m trainer.fit --data <this file> --mode " + m.mode + "\n"
    write_bytes(fsio.join(config.output, MIXTURE_FILE), (text + yaml.safe_dump(spec, sort_keys=False)).encode())
    return plan


def format_summary(summary: dict[str, Any]) -> str:
    """The end-of-build table a person reads."""
    rows = [("source", "type", "sentences", "images", "rejects", "train/val sentences")]
    for name, s in summary["sources"].items():
        split = s["by_split"]
        rows.append((name, s["type"], str(s["sentences"]), str(s["images"]), str(s["rejects"]),
                     f"{split.get('train', {}).get('sentences', 0)}/{split.get('val', {}).get('sentences', 0)}"))
    t = summary["totals"]
    rows.append(("total", "", str(t["sentences"]), str(t["images"]), str(t["rejects"]), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    reasons: Counter[str] = Counter()
    for s in summary["sources"].values():
        reasons.update(s["rejects_by_reason"])
    if reasons:
        lines.append("rejects by reason: " + ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())))
    duplicates = [f"{name} {d['exact']} exact + {d['near']} near of {d['inputs']} ({100 * d['rate']:.1f}%)"
                  for name, s in summary["sources"].items() if (d := s.get("duplicates"))]
    if duplicates:
        lines.append("duplicates dropped: " + ", ".join(duplicates))
    for name, s in summary["sources"].items():
        lines += [f"warning: {w}" for w in s.get("warnings", ())]
    tokens = summary.get("tokens") or {}
    if tokens.get("sources"):
        total = sum(s["tokens"] for s in tokens["sources"].values())
        names = ", ".join(f"{t['name']} ({t['weights_hash'][:12]}, {arithmetic_label(t)})" for t in tokens["tokenizers"])
        lines.append(f"tokens: {total:,} in {sum(s['shards'] for s in tokens['sources'].values())} "
                     f"token shards, tokenizer {names}")
    stages = summary["run"].get("stages") or {}
    if stages:
        lines.append("stages (items per busy second of one worker): " + ", ".join(
            f"{name} {s['items']} {s['unit']} at {s['items_per_s'] or 0:,.1f}/s" for name, s in stages.items()))
    counters = summary["run"].get("counters") or {}
    rendered = sum(n for k, n in counters.items() if k.endswith(".units_rendered"))
    reused = sum(n for k, n in counters.items() if k.endswith(".units_reused"))
    if rendered or reused:
        lines.append(f"input units: {rendered} rendered, {reused} taken from the unit store (committed earlier, "
                     "input unchanged)")
    metrics = summary["run"].get("metrics") or {}
    if metrics.get("reported") is False:
        lines.append(f"the {summary['run']['runner']} runner reported no Beam metrics; the counts above come from "
                     "the committed shards' stats. Not reported: " + "; ".join(metrics["not_reported"]))
    lines.append(f"{t['shards']} shards in {summary['output']} ({summary['run']['seconds']:.1f}s)")
    return "\n".join(lines)
