"""Run a build: check the output, run the Beam graph, then summarise what landed
(`uvd_pipeline.summary`).

The output folder records the config it was built with (`build.json`). A rerun with the same
config resumes (committed shards are kept, the rest is written); a rerun with a different config
is refused unless `overwrite` is given, because mixing shards of two configs would be silent
corruption.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from sources import fsio
from uvd_pipeline.build_checks import (check_before_build, check_output, check_runner,  # noqa: F401
                                       check_tokenizer, tokenizer_fits)
from uvd_pipeline.build_runner import (WORKER_ENVIRON, _dask_runner, heap_frozen, make_runner,  # noqa: F401
                                       new_pipeline, one_thread_numerics, open_runner, pipeline_options,
                                       run_pipeline, worker_numerics)
from uvd_pipeline.build_record import (BUILD_FILE, _build_record, _same_config, classified_moves,  # noqa: F401
                                       moved_inputs, prepare_output, recorded_roots, unfinish)
from uvd_pipeline.config import BuildConfig, ConfigError
from uvd_pipeline.rendered_shards import (
    REJECTS_SUFFIX,
    STATS_SUFFIX,
    ShardAddress,
    committed_shards,
    remove_temporaries,
    stats_files,
)
from uvd_pipeline.source_factory import source_notices
from uvd_pipeline import unit_store
from uvd_pipeline.summary import (SUMMARY_FILE, CommittedShards, finalize, metrics_reported,
                                  run_counters, run_distributions)
from uvd_pipeline.tokenize_stage import rendered_fields, summarize_tokens, token_stats_files
from uvd_pipeline.unit_relocation import drop_previous, placement_uri, relocate

log = logging.getLogger(__name__)


class _ShardProgress:
    """Reports committed rendered and token shards while the pipeline runs (stats files are the
    commit marks), against the most there can be (a shard no item hashes to is never written).
    Per-record progress of the other stages is in the Beam counters and distributions, which
    remote runners show live."""

    def __init__(self, output: str, interval: float = 2.0, most: int | None = None, tokens: bool = False) -> None:
        self.output = output
        self.interval = interval
        self.most = most
        self.tokens = tokens
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "_ShardProgress":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        seen = None
        started = time.perf_counter()
        of = f"/{self.most}" if self.most else ""
        while not self._stop.wait(self.interval):
            try:
                count = (len(stats_files(self.output)), len(token_stats_files(self.output)) if self.tokens else 0)
            except Exception:
                continue
            if count != seen:
                tokens = f", tokenize {count[1]}{of}" if self.tokens else ""
                log.info("progress: shards committed: write %d%s%s (%.0fs)", count[0], of, tokens,
                         time.perf_counter() - started)
                seen = count


@dataclass
class BuildResult:
    summary: dict[str, Any]
    summary_path: str


def run_build(config: BuildConfig, overwrite: bool = False, replace_changed: bool = False,
              retokenize: bool = False, verify: bool = False, force_unlock: bool = False) -> BuildResult:
    """Run a build. The output's lock is taken once the config and the inputs are checked, and
    held to the end (released on errors too): see `uvd_pipeline.output_lock`. `verify`: on resume,
    check every committed shard's sha256 too (the sizes are always checked); a damaged shard is
    rebuilt. `force_unlock`: take the output's lock whoever holds it."""
    with ExitStack() as held:
        return _run_build(config, overwrite, replace_changed, retokenize, verify,
                          lock=lambda: lock_output(held, config.output, force_unlock))


def lock_output(held: ExitStack, output: str, force: bool = False) -> str:
    """Take the output's lock (released when `held` closes), then remove what dead runs left: their
    folders in `OUT/_tmp/` and the `.tmp-` files of interrupted commits. Returns the run id."""
    from uvd_pipeline.output_lock import acquire, remove_dead_runs

    lock = held.enter_context(acquire(output, force=force))
    files, size = remove_dead_runs(output, keep=lock.run_id)
    if files:
        log.info("removed %d temporary files (%.1f MB) of dead runs from %s", files, size / 1e6,
                 fsio.join(output, "_tmp"))
    removed = remove_temporaries(output)
    if removed:
        log.info("removed %d temporary files left by an interrupted run", removed)
    return lock.run_id


def _run_build(config: BuildConfig, overwrite: bool, replace_changed: bool, retokenize: bool, verify: bool,
               lock) -> BuildResult:
    from uvd_pipeline.early_render import rendering_early
    from uvd_pipeline.early_tokenizer import tokenizer_early
    from uvd_pipeline.unit_render import list_units

    started = time.perf_counter()
    if retokenize:
        from uvd_pipeline.graph import build_retokenize_graph

        if not config.tokenizer.enabled:
            raise ConfigError("--retokenize needs tokenizer.enabled: true")
        check_before_build(config)
        check_tokenizer(config)
        if not fsio.exists(config.output):  # a mistyped output: refused before its folder and lock are made
            raise ConfigError(f"--retokenize: {config.output} does not exist; build it first (without --retokenize)")
        lock()
        config = moved_inputs(config, _build_record(config.output))  # shards named after the input's first root
        unfinish(config.output)
        with open_runner(config) as (runner, options):
            pipeline = new_pipeline(config, runner, options)
            build_retokenize_graph(pipeline, config)
            running = time.perf_counter()
            result = run_pipeline(pipeline)
        ran = time.perf_counter()
        summary = finalize(config, phases(started, running, ran, ran), run_counters(result),
                           distributions=run_distributions(result), metrics=metrics_reported(result))
        return BuildResult(summary, fsio.join(config.output, SUMMARY_FILE))
    check_before_build(config)
    units = list_units(config)  # source errors: they name the field the user wrote
    for warnings in source_notices(config).values():
        for warning in warnings:
            log.warning("%s", warning)
    check_tokenizer(config)
    lock()  # also removes what dead runs left
    config = prepare_output(config, overwrite, replace_changed)
    # what the steps after the shards' check need of the stats files it reads: they read none again
    read = StatsRead(rendered=[] if config.tokenizer.enabled else None)
    done = committed_inputs(config, verify=verify, each=read)
    if done:
        log.info("resuming: %d shards committed earlier (kept where their input is unchanged)", len(done))
    settle_store(config.output, done, read.tar_sha256)
    most = sum(s.num_shards + s.num_val_shards for s in config.enabled_sources)
    # local threads only: units render while Beam is imported and the graph is built (`early_render`)
    # and, on a GPU, the tokenizer loads and compiles meanwhile (`early_tokenizer`)
    with worker_numerics(config), rendering_early(config, units, verify) as early, \
            tokenizer_early(config) as early_tokenizer:
        from uvd_pipeline.graph import build_graph

        with open_runner(config) as (runner, options):
            pipeline = new_pipeline(config, runner, options)
            build_graph(pipeline, config, done, units, verify=verify, done_rendered=read.rendered)
            running = time.perf_counter()
            with _ShardProgress(config.output, most=most, tokens=config.tokenizer.enabled):
                result = run_pipeline(pipeline)
    ran = time.perf_counter()
    if early is not None:
        log.info("early render: %d of %d input units rendered by the pool (%s)", early.rendered,
                 sum(map(len, units.values())), "in processes" if early.in_processes else "in threads")
    if early_tokenizer is not None:
        log.info("early tokenizer: loaded%s in %.1f s while the build rendered",
                 " and compiled" if early_tokenizer.settings.compile else "", early_tokenizer.seconds)
    # a retried bundle (lost worker, engine retry) may have left an attempt's temporary files
    removed = remove_temporaries(config.output)
    if removed:
        log.info("removed %d temporary files of retried work", removed)
    # the stats files are read once for the steps after the run: the stray check takes the names
    # they claim from the shards' check and from the token summary, `relocate` and the summary
    # what they need of the committed shards from the shards' check
    claimed: set[str] = set()
    read = StatsRead(shards=CommittedShards())
    committed = committed_shards(config.output, config.content_hash(), claimed=claimed, each=read)
    dropped = drop_stale(config, units, committed)
    settle_store(config.output, committed - dropped, read.tar_sha256)
    tokens = summarize_tokens(config.output, config.content_hash(), claimed=claimed)  # after drop_stale's removals
    clear_strays(config.output, remove=verify, claimed=claimed)
    counters = run_counters(result)
    summary = finalize(config, phases(started, running, ran, time.perf_counter()), counters, resumed=len(done),
                       distributions=run_distributions(result), metrics=metrics_reported(result), tokens=tokens,
                       shards=None if dropped else read.shards)  # shards dropped: their sums are in it, read again
    return BuildResult(summary, fsio.join(config.output, SUMMARY_FILE))


def phases(started: float, running: float, ran: float, settled: float) -> dict[str, float]:
    """Seconds of a build's three phases, for the summary: listing the input, taking the output's
    lock, reading what is committed and building the graph; the runner's run (its start, every
    stage, its stop); and settling the output after it. The first and last, with the imports
    before them (about 0.7 s), are what a small build pays whatever its size."""
    return {"prepare": running - started, "pipeline": ran - running, "settle": settled - ran}


@dataclass
class StatsRead:
    """What the steps after `committed_shards` need of the stats files it reads, taken as it reads
    them (its `each`), so that none of them reads a stats file again (a request per shard on an
    object store): each committed shard's tar sha256 (`relocate`); given `rendered`, what the
    Tokenize step needs of each (`rendered_fields`, for `build_graph`); given `shards`, the
    summary's sums of them (`CommittedShards`). All small per shard."""

    tar_sha256: dict[ShardAddress, str | None] = field(default_factory=dict)
    rendered: list[dict[str, Any]] | None = None
    shards: CommittedShards | None = None

    def __call__(self, address: ShardAddress, uri: str, stats: dict[str, Any]) -> None:
        self.tar_sha256[address] = stats.get("tar_sha256")
        if self.rendered is not None:
            self.rendered.append(rendered_fields(stats))
        if self.shards is not None:
            self.shards.add(uri, stats)


def settle_store(output: str, committed, tar_sha256: dict[ShardAddress, str | None] | None = None) -> None:
    """Point the unit store at the images the committed shards hold (`unit_relocation`), with no
    shard being written: before the pipeline and after it. `tar_sha256`: as `relocate` takes it."""
    drop_previous(output)
    moved = relocate(output, committed, tar_sha256=tar_sha256)
    if moved.files_removed:
        log.info("unit store: %d units' images are all in committed shards: their image files went",
                 moved.files_removed)


def clear_strays(output: str, remove: bool, claimed: set[str] | None = None) -> None:
    """Files in the shard folders that no committed shard names, once the run has written all it
    will (a stray tar beside the shards, a folder no build wrote: glob readers would take them):
    removed with `build --verify`, else named in a warning that says so. `claimed`: the files the
    stats files name, as the steps that read them gathered (`unclaimed_files`)."""
    from uvd_pipeline.verify import remove_unclaimed, unclaimed_files

    strays = remove_unclaimed(output, claimed) if remove else unclaimed_files(output, claimed)
    if strays:
        shown = ", ".join(strays[:5]) + (f" and {len(strays) - 5} more" if len(strays) > 5 else "")
        log.warning("%s %d files in the shard folders that no committed shard names: %s%s",
                    "removed" if remove else "found", len(strays), shown,
                    "" if remove else " (build --verify removes them; readers that glob the folders take them)")


def committed_inputs(config: BuildConfig, verify: bool = False, committed: set[ShardAddress] | None = None,
                     each=None) -> dict[ShardAddress, str | None]:
    """Committed (and intact) shards of this config and the input digest of their source each was
    built from; `verify` checks sha256 too, not only sizes. `committed`: the shards, when the
    caller has just listed them; else `each` is `committed_shards`' (`StatsRead`)."""
    if committed is None:
        committed = committed_shards(config.output, config.content_hash(), verify=verify, each=each)
    return {address: unit_store.read_shard_inputs(unit_store.shard_inputs_uri(config.output, address.source,
                                                                                  address.stem))
            for address in committed}


def drop_stale(config: BuildConfig, units: dict[str, list], committed: set[ShardAddress]) -> set[ShardAddress]:
    """After a finished run: forget units no longer in the input, and remove the shards (of
    `committed`, the shards committed now) still built from another input than their source's
    current one (no item of the current input reached them, so nothing rewrote them), with their
    token shards. Returns the shards removed."""
    from uvd_pipeline.dedup import FINGERPRINTS_SUFFIX
    from uvd_pipeline.graph import digest_groups
    from uvd_pipeline.rendered_shards import TAR_SUFFIX
    from uvd_pipeline.shards import ARROW_SUFFIX
    from uvd_pipeline.tokenize_stage import token_shard_path

    paths = {s.name: s.path for s in config.sources}
    stores = {name: unit_store.UnitStore(config.output, name, "", paths[name], config.output_root(name)) for name in units}
    ids = {name: [stores[name].uid(u) for u in source_units] for name, source_units in units.items()}
    gone = unit_store.prune(config.output, {name: set(uids) for name, uids in ids.items()})
    if gone:
        log.info("forgot %d rendered units whose input is gone", gone)
    by_group: dict[str, list[tuple[str, str]]] = {}
    complete = True
    for name, group in digest_groups(config).items():
        found = unit_store.committed_digests(config.output, name, ids[name])
        complete = complete and found is not None
        by_group.setdefault(group, []).extend(found or [])
    if not complete:
        return set()  # the run did not finish every unit: nothing can be judged stale yet
    current = {name: unit_store.group_digest(by_group[group]) for name, group in digest_groups(config).items()}
    fs, _ = fsio.filesystem(config.output)
    removed = set()
    for address, digest in committed_inputs(config, committed=committed).items():
        if digest == current.get(address.source):
            continue
        removed.add(address)
        stale = [address.path(config.output, STATS_SUFFIX)]  # the commit mark first
        stale += [address.path(config.output, suffix) for suffix in (TAR_SUFFIX, REJECTS_SUFFIX, FINGERPRINTS_SUFFIX)]
        token = token_shard_path(config.output, address.source, address.split, address.stem)
        stale += [token[: -len(ARROW_SUFFIX)] + STATS_SUFFIX, token,
                  unit_store.shard_inputs_uri(config.output, address.source, address.stem),
                  placement_uri(config.output, address.source, address.stem)]
        for uri in stale:
            if fsio.exists(uri):
                fs.rm(fsio.filesystem(uri)[1])
        log.info("removed %s: its input is gone", address.stem)
    return removed
