"""The build's summary: every committed shard's stats merged into `summary.json` and their
rejects into `rejects.jsonl`, the trainer's `mixture.yaml` planned from the token shards, and the
end-of-build table a person reads.

Everything is read back from the committed files (stats are the commit marks), not carried out of
the pipeline, so a resumed run summarises exactly what is on disk, and a runner that reports no
Beam metrics (Dask) loses only the counters and timings, never a count.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import IO, Any, Iterable

from sources import fsio
from tokenizer.atomic import open_atomic, write_bytes
from uvd_pipeline.config import FORMAT_VERSION, BuildConfig
from uvd_pipeline.dedup import DEDUP_SOURCE_TYPES, duplicate_counts
from uvd_pipeline.integrity import REBUILD_HINT, Recorded, ShardDamaged, rendered_files
from uvd_pipeline.quality import INPUT_BINS, empty_inputs, merge_inputs, merge_lengths, sorted_lengths, stage_throughput
from uvd_pipeline.rendered_shards import REJECTS_SUFFIX, STATS_SUFFIX, read_json, stats_files
from uvd_pipeline.source_factory import source_notices
from uvd_pipeline.state_files import STATE_MAX_BYTES, read_state
from uvd_pipeline.tokenize_stage import arithmetic_label, summarize_tokens

SUMMARY_FILE = "summary.json"
REJECTS_FILE = "rejects.jsonl"


def workers_failed_to_start(result) -> list[str]:
    """Why each worker of the build's own local Dask cluster that failed to start failed (the
    build ran on the rest: `dask_cluster.WorkerStart`); none for other runners."""
    return list(getattr(result, "workers_failed_to_start", None) or [])


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


SHARD_FIELDS = ("source", "split", "shard", "tar", "sentences", "images", "rejects", "tar_sha256")
# rejects lines sorted in memory at once; past it, sorted runs wait in temporary files and are merged
REJECTS_SORT_BYTES = 64 << 20


@dataclass
class CommittedShards:
    """What the summary needs of the committed shards, gathered one stats file at a time (a build's
    stats files are never all in memory): per source, the shards' counts added up (still as
    counters); a small row per shard, by source, split and shard number; the rejects files."""

    per_source: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[Recorded | str] = field(default_factory=list)

    def add(self, stats_uri: str, stats: dict[str, Any]) -> None:
        """One committed shard's stats (read from `stats_uri`), taken in as read."""
        _add_stats(self.per_source, stats)
        self.rows.append({**{k: stats[k] for k in SHARD_FIELDS}, "by_kind_task": stats.get("by_kind_task", {})})
        if stats["rejects"]:
            self.rejects.append(_rejects_file(stats_uri, stats))

    def sorted_rows(self) -> list[dict[str, Any]]:
        """The shards' rows by source, split and shard number (whatever order they were read in)."""
        return sorted(self.rows, key=lambda row: (row["source"], row["split"], row["shard"]))


def committed_shards_of(output: str, config_hash: str) -> CommittedShards:
    """Every committed shard of this config, read once."""
    found = CommittedShards()
    for uri in stats_files(output):
        stats = read_json(uri)
        if stats.get("config_hash") == config_hash:
            found.add(uri, stats)
    return found


def _rejects_file(stats_uri: str, stats: dict[str, Any]) -> Recorded | str:
    """A shard's rejects file with the size and sha256 its stats record (only its name for stats
    of builds that recorded neither)."""
    name = stats_uri[: -len(STATS_SUFFIX)] + REJECTS_SUFFIX
    return next((f for f in rendered_files(stats_uri, stats) if f.uri == name), name)


def _add_stats(per_source: dict[str, dict[str, Any]], stats: dict[str, Any]) -> None:
    """Add one shard's counts to its source's (all sums: the order shards come in does not matter)."""
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


def _reject_order(line: str) -> tuple[str, str]:
    return json.loads(line)["source"], line


def _checked_text(file: Recorded | str) -> str:
    """A shard's rejects file, checked against its stats on use like every committed file: an
    altered one is a `ShardDamaged` naming it, never lines merged into `rejects.jsonl`."""
    if isinstance(file, str):
        return read_state(file).decode("utf-8")
    data = read_state(file.uri, STATE_MAX_BYTES if file.bytes is None else file.bytes)
    if file.bytes is not None and len(data) != file.bytes:
        raise ShardDamaged(file.uri, f"{len(data)} bytes, its stats file records {file.bytes}; {REBUILD_HINT}")
    if file.sha256 is not None and hashlib.sha256(data).hexdigest() != file.sha256:
        raise ShardDamaged(file.uri, f"sha256 differs from what its stats file records; {REBUILD_HINT}")
    return data.decode("utf-8")


def write_rejects(output: str, files: Iterable[Recorded | str], sort_bytes: int | None = None) -> None:
    """Every shard's rejects in one `rejects.jsonl`, by source, then line. Lines are sorted in
    memory up to `sort_bytes` (default `REJECTS_SORT_BYTES`) at a time; sorted runs beyond that
    wait in temporary files and are merged as the file is written, so memory does not grow with
    the rejects."""
    from uvd_pipeline.output_lock import run_tmp

    limit = sort_bytes or REJECTS_SORT_BYTES
    spill_dir: str | None = None  # the run's temporary folder, looked up at the first spill
    runs: list[IO[bytes]] = []
    lines: list[str] = []
    held = 0
    try:
        for file in files:
            # lines end at "\n" only: details keep U+2028, U+0085 and the like raw (ensure_ascii off),
            # and str.splitlines would cut a record there
            for line in _checked_text(file).split("\n"):
                if line:
                    lines.append(line)
                    held += len(line)
            if held > limit:
                spill_dir = spill_dir or run_tmp(output)
                run = tempfile.TemporaryFile(dir=spill_dir)
                run.write("".join(l + "\n" for l in sorted(lines, key=_reject_order)).encode())
                run.seek(0)
                runs.append(run)
                lines, held = [], 0
        lines.sort(key=_reject_order)
        spilled = [(raw.decode().rstrip("\n") for raw in run) for run in runs]
        with open_atomic(fsio.join(output, REJECTS_FILE)) as target:
            block: list[str] = []
            size = 0
            for line in heapq.merge(*spilled, lines, key=_reject_order):
                block.append(line + "\n")
                size += len(line) + 1
                if size >= 1 << 16:
                    target.write("".join(block).encode())
                    block, size = [], 0
            target.write("".join(block).encode())
    finally:
        for run in runs:
            run.close()


def source_summaries(config: BuildConfig, per_source: dict[str, dict[str, Any]],
                     notices: dict[str, list[str]] | None = None) -> dict[str, dict[str, Any]]:
    """Per source, sorted: counts, kinds, rejects, lengths and inputs, its type, its warnings, and
    the duplicates dropped where deduplication applies."""
    sources = {}
    for name, entry in sorted(per_source.items()):
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
    for name, warnings in (source_notices(config) if notices is None else notices).items():
        if name in sources:
            sources[name]["warnings"] = warnings
    for entry in sources.values():
        if config.dedup.enabled and entry["type"] in DEDUP_SOURCE_TYPES:
            entry["duplicates"] = duplicate_counts(entry["rejects_by_reason"], entry["images"], entry["rejects"],
                                                   entry["rejects_by_stage"].get("download", 0))
    return sources


def finalize(config: BuildConfig, phases: dict[str, float], counters: dict[str, int], resumed: int = 0,
             distributions: dict[str, dict[str, float]] | None = None, metrics: bool = True,
             tokens: dict[str, Any] | None = None, shards: CommittedShards | None = None,
             workers_failed: list[str] | None = None,
             notices: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Merge every committed shard's stats and rejects into `summary.json` and `rejects.jsonl`, and
    write `mixture.yaml`. `phases`: seconds of each phase of the run (`build.phases`), whose sum is
    its time. `metrics`: whether the runner reported Beam metrics (if not, the summary names what
    is missing). `tokens`: `summarize_tokens` of this config, and `shards`: `committed_shards_of`
    it (every committed shard of this config, and no other), where the caller has them already.
    `workers_failed`: why each worker of the build's local cluster that did not start failed.
    `notices`: `source_notices` of this config where the build took them (its input read again else)."""
    output = config.output
    config_hash = config.content_hash()
    if shards is None:
        shards = committed_shards_of(output, config_hash)
    write_rejects(output, shards.rejects)
    sources = source_summaries(config, shards.per_source, notices)
    if tokens is None:
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
            "shards": len(shards.rows),
        },
        "sources": sources,
        "input_bins": {k: list(v) for k, v in INPUT_BINS.items()},
        "tokens": tokens,
        "mixture": mixture,
        "shards": shards.sorted_rows(),
        "run": {
            "seconds": round(sum(phases.values()), 2),
            "phases": {name: round(seconds, 2) for name, seconds in phases.items()},
            "runner": config.beam.runner,
            "workers": _workers(config),
            "worker_mode": config.beam.running_mode if config.beam.local else None,  # threads or processes
            "workers_failed_to_start": list(workers_failed or []),
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
    """Workers, where the build itself chose them (local runner, local Dask cluster)."""
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
    failed = summary["run"].get("workers_failed_to_start") or []
    if failed:
        asked = summary["run"].get("workers") or len(failed)
        lines.append(f"warning: {asked - len(failed)} of {asked} workers of the local Dask cluster started, the build ran "
                     f"on them ({'; '.join(sorted(set(failed)))})")
    spent = summary["run"].get("phases") or {}  # none in a summary written before phases were kept
    split = ": " + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in spent.items()) if spent else ""
    lines.append(f"{t['shards']} shards in {summary['output']} ({summary['run']['seconds']:.1f}s{split})")
    return "\n".join(lines)
