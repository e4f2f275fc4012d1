"""`verify` holds the records a build keeps beside its shards to the rest of the output.

Each committed shard's input digest (`_inputs/<source>/<shard>.txt`, `shard_inputs`) decides
whether a rerun keeps the shard: it is the digest of its source's digest group over the units'
input digests, which the unit store's commit marks hold. The summary's `sources.X.type` is the
build config's (`build.json`), and its `run` section (the report's throughput) holds itself
together: `seconds` the sum of `phases`, `stages` what `distributions` give, `metrics` what a
runner that did or did not report names. Edited ones passed `verify` as intact and the report
showed them (rev56: 'not held to anything'); what the rest of the output cannot say (the runner's
name, the worker count) is held to its kind and to the other run fields (`_runner_problems`), and
the counters of a run that resumed nothing to the shards it lists (`_counter_problems`)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Collection

from uvd_pipeline.config_build import FORMAT_VERSION, RENDER_REVISION
from uvd_pipeline.dedup import DEDUP_SOURCE_TYPES
from uvd_pipeline.quality import stage_throughput
from uvd_pipeline.shard_inputs import SHARD_INPUTS_MAX_BYTES, digest_group, group_digest, shard_inputs_uri
from uvd_pipeline.state_files import StateFileRefused, read_state
from uvd_pipeline.summary import SUMMARY_FILE, UNREPORTED
from uvd_pipeline.summary_checks import ABSENT, REWRITE_HINT, _short

DIGEST = re.compile(r"[0-9a-f]{64}")
INPUTS_HINT = ("a rerun builds the shard again from its input and records the digest anew: run the same build "
               "command again")
RUNNING_MODES = ("in_memory", "multi_threading", "multi_processing")


def source_groups(config: Any) -> dict[str, str]:
    """source -> its digest group (`graph.digest_groups`), from `build.json`'s saved config."""
    dedup = bool((config.get("dedup") or {}).get("enabled"))
    return {str(s["name"]): digest_group(str(s["name"]), dedup and s.get("type") in DEDUP_SOURCE_TYPES)
            for s in config["sources"] if s.get("enabled", True)}


def _read_digest(uri: str, stem: str) -> tuple[str | None, str | None]:
    """(the digest a shard's input record holds, what is wrong with it)."""
    from uvd_pipeline.verify import unreadable

    try:
        raw = read_state(uri, SHARD_INPUTS_MAX_BYTES)
    except FileNotFoundError:
        return None, (f"missing: {SUMMARY_FILE} lists shard {stem}, the input digest it was built from is gone; "
                      f"{INPUTS_HINT}")
    except StateFileRefused as exc:
        return None, exc.why
    except OSError as exc:
        return None, unreadable(exc)
    text = raw.decode(errors="replace").strip()
    if not DIGEST.fullmatch(text):
        return None, f"{_short(text[:80])} is no input digest (64 hex digits): edited since the build; {INPUTS_HINT}"
    return text, None


def earlier_output(build: dict[str, Any]) -> bool:
    """Whether `build` (`build.json`) is an earlier format's or render revision's record: its rerun is
    refused or renders anew, and its summary may lack fields added since (`run.workers_failed_to_start`
    before revision 20), so neither its digests nor its `run` section are held to today's rules."""
    return build.get("format_version") != FORMAT_VERSION or build.get("render_revision") != RENDER_REVISION


def input_digest_problems(output: str, build: dict[str, Any], listed: set[tuple[str, str, str]],
                          units: dict[str, list[tuple[str, str]]],
                          unread: Collection[str] = ()) -> list[tuple[str, str]]:
    """(input record, why) for each shard `summary.json` lists (`listed`: source, split, stem) whose
    input digest is missing, no digest, or not its digest group's: the group digest of the unit
    store's committed units (`units`: source -> (unit id, input digest), from their marks), or, where
    the store cannot give it, what the group's other shards record (`_disagreeing`). It cannot where
    a source of the group has no marks (its store folder deleted to reclaim space) or one not read
    (`unread`: a damaged or refused mark, named already): a digest over part of the group's units
    called every shard of the group edited."""
    if earlier_output(build):
        return []  # an earlier version's output: its rerun is refused or renders anew, whatever its digests
    try:
        groups = source_groups(build["config"])
    except (KeyError, TypeError, AttributeError):
        return []  # an unreadable record is reported as such (`build_record.record_problem`)
    problems: list[tuple[str, str]] = []
    recorded: dict[str, list[tuple[str, str]]] = {}  # group -> (input record, its digest)
    for source, _split, stem in sorted(listed):
        if source not in groups:
            continue
        uri = shard_inputs_uri(output, source, stem)
        digest, why = _read_digest(uri, stem)
        if why:
            problems.append((uri, why))
        else:
            recorded.setdefault(groups[source], []).append((uri, digest))
    for group, shards in sorted(recorded.items()):
        names = sorted(name for name, g in groups.items() if g == group)
        if any(name in unread or not units.get(name) for name in names):
            problems += _disagreeing(shards, names)
            continue
        wanted = group_digest([pair for name in names for pair in units[name]])
        said = f"the unit store's committed units of {', '.join(names)} give {wanted}"
        problems += [(uri, f"input digest {digest}, {said}: edited since the build; {INPUTS_HINT}")
                     for uri, digest in shards if digest != wanted]
    return problems


def _disagreeing(shards: list[tuple[str, str]], names: list[str]) -> list[tuple[str, str]]:
    """(input record, why) for the shards of one digest group (`names`) held to one another: those
    whose digest is not the one most of them record; where no digest is recorded most (2 shards, one
    edited), no verdict: each is named, since which one was edited cannot be told."""
    counts = Counter(digest for _, digest in shards).most_common()
    if len(counts) < 2:
        return []
    if counts[0][1] > counts[1][1]:
        wanted = counts[0][0]
        said = f"the other shards of {', '.join(names)} record {wanted}: edited since the build"
        return [(uri, f"input digest {digest}, {said}; {INPUTS_HINT}") for uri, digest in shards if digest != wanted]
    said = (f"the shards of {', '.join(names)} record {len(counts)} input digests, none by most of them, where "
            f"all record one: one or more edited since the build, which cannot be told (the unit store gives none)")
    return [(uri, f"input digest {digest}; {said}; {INPUTS_HINT}") for uri, digest in shards]


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def summary_field_problem(summary: dict[str, Any], build: dict[str, Any] | None, counted: bool = False) -> str | None:
    """What `summary.json` says otherwise than the rest of the output, beside its counts
    (`summary_checks`): each source's `type` and `resize` against `build.json`'s config (`build`:
    None where that record is damaged, reported already), and the `run` section against itself (not
    an earlier revision's: `earlier_output`; a rerun of it is refused, so 'damaged' had no way out).
    `counted`: the summary's counts and shard list are found the committed shards' own
    (`SummaryTally`), so its counters are held to them (otherwise the edited count is named, not
    the counter that disagrees with it)."""
    problems: list[str] = []

    def held(field: str, recorded: Any, wanted: str) -> None:
        problems.append(f"{field} {_short(recorded)} ({wanted})")

    config = build.get("config") if isinstance(build, dict) else None
    if isinstance(config, dict):
        try:
            types = {str(s["name"]): s.get("type") for s in config["sources"]}
        except (KeyError, TypeError, AttributeError):
            types = {}
        sources = summary.get("sources") if isinstance(summary.get("sources"), dict) else {}
        for name, entry in sorted(sources.items()):
            found = entry.get("type", ABSENT) if isinstance(entry, dict) else ABSENT
            if name in types and found != types[name]:
                held(f"sources.{name}.type", found, f"build.json's config gives {_short(types[name])}")
        resize = (config.get("image") or {}).get("resize") if isinstance(config.get("image"), dict) else None
        if resize is not None and summary.get("resize", ABSENT) != resize:
            held("resize", summary.get("resize", ABSENT), f"build.json's config gives {_short(resize)}")
    run = summary.get("run", ABSENT)
    if isinstance(build, dict) and earlier_output(build):
        pass  # its run section was written by that revision's rules
    elif not isinstance(run, dict):
        held("run", run, "the build's run section: its time, runner and metrics")
    else:
        problems += _run_problems(run) + _runner_problems(run) + (_counter_problems(run, summary) if counted else [])
    if not problems:
        return None
    return f"fields other than the rest of the output says, edited since the build: {'; '.join(problems)}; {REWRITE_HINT}"


def _run_problems(run: dict[str, Any]) -> list[str]:
    """The `run` section held to itself (`summary.finalize` writes each field from the others) and
    each field to its kind."""
    problems: list[str] = []

    def held(field: str, wanted: str) -> None:
        problems.append(f"run.{field} {_short(run.get(field, ABSENT))} ({wanted})")

    seconds, phases = run.get("seconds", ABSENT), run.get("phases")
    if not _number(seconds) or seconds < 0:
        held("seconds", "the build's time in seconds")
    elif isinstance(phases, dict) and phases and all(_number(v) for v in phases.values()):
        total = sum(phases.values())  # each rounded to 0.01 s, as the whole is
        if abs(total - seconds) > 0.005 * (len(phases) + 1) + 1e-9:
            held("seconds", f"its run.phases add up to {round(total, 2)}")
    elif phases is not None:  # none in a summary written before phases were kept
        held("phases", "seconds of each phase of the build")
    distributions = run.get("distributions")
    if "stages" in run or distributions is not None:
        try:
            wanted = stage_throughput(distributions or {})
        except (KeyError, TypeError, AttributeError, ZeroDivisionError):
            held("distributions", "Beam's distributions: count, sum, min, max of each")
        else:
            if run.get("stages", ABSENT) != wanted:
                held("stages", f"its run.distributions give {_short(wanted)}")
    metrics = run.get("metrics", ABSENT)
    reported = metrics.get("reported") if isinstance(metrics, dict) else None
    if not isinstance(reported, bool):
        held("metrics", "whether the runner reported Beam metrics, and what it did not")
    elif metrics != {"reported": reported, "not_reported": [] if reported else list(UNREPORTED)}:
        said = "names nothing as not reported: []" if reported else f"names what was not reported: {list(UNREPORTED)}"
        held("metrics", f"reported {reported} {said}")
    if not _count(run.get("shards_resumed")):
        held("shards_resumed", "a count of shards")
    if not isinstance(run.get("runner"), str) or not run["runner"]:
        held("runner", "a runner's name")
    workers = run.get("workers", ABSENT)
    if workers is not None and not (_count(workers) and workers > 0):
        held("workers", "a count of workers, or null where the build did not choose them")
    if run.get("worker_mode", ABSENT) not in (None, *RUNNING_MODES):
        held("worker_mode", f"one of {', '.join(RUNNING_MODES)}, or null for a runner of its own workers")
    failed = run.get("workers_failed_to_start", ABSENT)
    if not isinstance(failed, list) or not all(isinstance(f, str) for f in failed) or (
            _count(workers) and len(failed) > workers):
        held("workers_failed_to_start", "why each worker that did not start failed, no more than run.workers")
    counters = run.get("counters", ABSENT)
    if not isinstance(counters, dict) or not all(isinstance(k, str) and _count(v) for k, v in counters.items()):
        held("counters", "Beam's counters by name, each a count")
    return problems


LOCAL_RUNNER, DASK = "DirectRunner", "dask"  # `config_beam`: the runners whose workers the build chooses


def _runner_problems(run: dict[str, Any]) -> list[str]:
    """The runner's fields held to one another, as `summary.finalize` writes them from one config:
    a worker mode is the local runner's alone, workers are counted where the build chose them (the
    local runner, a local Dask cluster) and none failed to start but a local Dask cluster's. Each
    was held to its kind only: runner 'DirectRunner' edited to 'FlinkRunner' beside its mode passed."""
    runner, mode, workers = run.get("runner"), run.get("worker_mode"), run.get("workers")
    failed = run.get("workers_failed_to_start")
    if not isinstance(runner, str) or mode not in (None, *RUNNING_MODES):
        return []  # named by its kind already
    problems: list[str] = []
    if runner == LOCAL_RUNNER and mode is None:
        problems.append(f"run.worker_mode None (run.runner {runner!r} runs its workers in one of "
                        f"{', '.join(RUNNING_MODES)})")
    elif runner != LOCAL_RUNNER and mode is not None:
        problems.append(f"run.runner {_short(runner)} (its run.worker_mode {mode!r} is the {LOCAL_RUNNER}'s alone)")
    elif runner == LOCAL_RUNNER and workers is None:
        problems.append(f"run.workers None (run.runner {runner!r} runs the count of workers the build gave it)")
    elif runner not in (LOCAL_RUNNER, DASK) and workers is not None:
        problems.append(f"run.workers {_short(workers)} (run.runner {_short(runner)} chooses its own workers: null)")
    if runner != DASK and isinstance(failed, list) and failed:
        problems.append(f"run.workers_failed_to_start {_short(failed)} (only a local Dask cluster's workers fail "
                        f"to start; run.runner is {_short(runner)})")
    return problems


def _counter_problems(run: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """`run.counters` held to the committed shards the summary lists, where this run wrote them all:
    the local runner's committed counters (a bundle counts once), none resumed (`shards_resumed` 0:
    each listed shard is this run's) and shards written (a `--retokenize` run writes none). Each
    source's `shards_written` is its listed shards, `sentences_written` its sentences. An edited
    count passed `verify` and the report's summary line showed it."""
    counters, sources, rows = run.get("counters"), summary.get("sources"), summary.get("shards")
    local = run.get("runner") == LOCAL_RUNNER or run.get("worker_mode") in RUNNING_MODES  # either, if one edited
    if (not local or run.get("shards_resumed") != 0 or not isinstance(counters, dict)
            or not isinstance(sources, dict) or not isinstance(rows, list)
            or not any(str(k).endswith(".shards_written") for k in counters)):
        return []
    listed = Counter(str(row.get("source")) for row in rows if isinstance(row, dict))
    problems: list[str] = []
    for name, entry in sorted(sources.items()):
        wanted = {f"{name}.shards_written": listed.get(name, 0)}
        if isinstance(entry, dict) and _count(entry.get("sentences")):
            wanted[f"{name}.sentences_written"] = entry["sentences"]
        for key, count in wanted.items():
            if counters.get(key, 0) != count:
                what = "shards" if key.endswith(".shards_written") else "sentences"
                problems.append(f"run.counters[{key!r}] {_short(counters.get(key, ABSENT))} (the summary lists "
                                f"{count} {what} of {name}, all written by this run: run.shards_resumed 0)")
    return problems


MIXTURE_MAX_BYTES = 1 << 20  # one {glob, weight} a source: ~60 bytes each


def _entries(data: Any) -> tuple[dict[str, list[Any]], list[str]]:
    """(glob -> the weights its entries give, what is not an entry) of a mixture file's `data`."""
    weights: dict[str, list[Any]] = {}
    odd: list[str] = []
    for item in data:
        if isinstance(item, dict) and set(item) == {"glob", "weight"} and isinstance(item["glob"], str):
            weights.setdefault(item["glob"], []).append(item["weight"])
        else:
            odd.append(f"entry {_short(item)} is not {{glob, weight}}")
    return weights, odd


def _same_weight(found: Any, wanted: float) -> bool:
    if not isinstance(found, (int, float)) or isinstance(found, bool):
        return False
    return abs(found - wanted) <= 1e-12 * max(1.0, abs(wanted))  # the file's weights are rounded to 12 places


def mixture_problems(text: str, wanted: dict[str, Any]) -> list[str]:
    """What a mixture file's text (`mixture.yaml`) says otherwise than `wanted` (`mixture.mixture_spec`
    of the summary's mix): its split, and each glob with its weight."""
    import yaml

    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [f"not YAML ({' '.join(str(exc).split())[:120]})"]
    if spec is None:
        return ["empty"]
    if not isinstance(spec, dict) or not isinstance(spec.get("data"), list) or set(spec) != {"split", "data"}:
        return [f"not the build's {{split, data: [{{glob, weight}}]}} ({_short(spec)})"]
    problems = [] if spec["split"] == wanted["split"] else [f"split {_short(spec['split'])}, not {wanted['split']!r}"]
    found, odd = _entries(spec["data"])
    problems += odd
    want = {entry["glob"]: entry["weight"] for entry in wanted["data"]}
    for glob, weights in sorted(found.items()):
        if glob not in want:
            problems.append(f"{glob} weight {_short(weights[0])}: a glob the summary's mix has not")
        elif len(weights) > 1:
            problems.append(f"{glob} named {len(weights)} times (the trainer refuses that)")
        elif not _same_weight(weights[0], want[glob]):
            problems.append(f"{glob} weight {_short(weights[0])}, the summary's mix gives {want[glob]}")
    problems += [f"no entry for {glob} (weight {weight})" for glob, weight in sorted(want.items()) if glob not in found]
    return problems


def mixture_problem(uri: str, plan: Any) -> str | None:
    """What is wrong with the trainer's `mixture.yaml` (`python -m trainer.fit --data` reads it),
    held to the token mix `summary.json` records (`plan`, which the build wrote it from): an emptied
    one or one with other weights passed `verify` as intact, and trainer.fit then failed, or drew
    another mix than the summary and the report say. None: it holds that mix (a missing one is
    `verify`'s to name)."""
    from uvd_pipeline.mixture import mixture_spec
    from uvd_pipeline.verify import unreadable

    try:
        wanted = mixture_spec(plan)
    except (KeyError, TypeError, AttributeError, ValueError):
        return None  # a summary whose mix cannot be read: no mix to hold the file to
    try:
        raw = read_state(uri, MIXTURE_MAX_BYTES)
    except StateFileRefused as exc:
        return exc.why
    except OSError as exc:
        return unreadable(exc)
    problems = mixture_problems(raw.decode(errors="replace"), wanted)
    if not problems:
        return None
    return (f"{'; '.join(problems)}: not the token mix {SUMMARY_FILE} records (the trainer's --data file, edited "
            f"since the build); {REWRITE_HINT}")
