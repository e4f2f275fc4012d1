"""Run a build: check the output, run the Beam graph, then summarise what landed
(`uvd_pipeline.summary`).

The output folder records the config it was built with (`build.json`). A rerun with the same
config resumes (committed shards are kept, the rest is written); a rerun with a different config
is refused unless `overwrite` is given, because mixing shards of two configs would be silent
corruption.

This module runs a build's steps in order (`run_build`); each step's code lives in its own
module, its names importable from here: `build_checks` (refused before any work),
`build_record` (`build.json` and what a rerun does with it), `build_runner` (the runner, its
options, the run) and `build_settle` (the committed shards before and after the run).
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable

from sources import fsio
from sources.web_format import schemas_read_once
from uvd_pipeline.build_checks import (check_before_build, check_output, check_runner,  # noqa: F401
                                       check_tokenizer, tokenizer_fits)
from uvd_pipeline.build_record import (BUILD_FILE, _build_record, _same_config, classified_moves,  # noqa: F401
                                       moved_inputs, prepare_output, recorded_roots, unfinish)
from uvd_pipeline.build_runner import (WORKER_ENVIRON, _dask_runner, heap_frozen, make_runner,  # noqa: F401
                                       new_pipeline, one_thread_numerics, open_runner, pipeline_options,
                                       run_pipeline, tokenizes_in_process, worker_numerics)
from uvd_pipeline.build_settle import (StatsRead, clear_strays, committed_inputs, drop_stale, kept_shards,
                                       settle_store)
from uvd_pipeline.config import BuildConfig, ConfigError
from tokenizer.host_memory import freed_memory_kept
from uvd_pipeline.rendered_shards import committed_shards, remove_temporaries, stats_files
from uvd_pipeline.source_factory import source_notices
from uvd_pipeline.summary import (SUMMARY_FILE, CommittedShards, finalize, metrics_reported,
                                  run_counters, run_distributions, workers_failed_to_start)
from uvd_pipeline.tokenize_stage import summarize_tokens, token_stats_files

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
        of = f" of at most {self.most}" if self.most else ""  # a shard no input lands in is never written
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
    held.push(_sweep_if_interrupted(output, lock.run_id))  # left before the lock
    files, size = remove_dead_runs(output, keep=lock.run_id)
    if files:
        log.info("removed %d temporary files (%.1f MB) of dead runs from %s", files, size / 1e6,
                 fsio.join(output, "_tmp"))
    removed = remove_temporaries(output)
    if removed:
        log.info("removed %d temporary files left by an interrupted run", removed)
    return lock.run_id


def _sweep_if_interrupted(output: str, run_id: str) -> Callable[..., bool]:
    """An exit callback for the lock's holder: a run left by Ctrl-C or SIGTERM (a KeyboardInterrupt
    out of the runner, whose worker processes are stopped by then) removes the `.tmp-` files of
    the commits it interrupted while it still holds the lock, instead of leaving them to the next
    run's start (README: an interrupted build "removes the run's temporaries"). Only while
    `_lock.json` still names `run_id`: a build that took the lock with --force-unlock may be
    mid-commit, and its temporaries are not this run's (as `OutputLock.release` leaves its lock).
    A local output only: an interrupted command lists nothing over the network
    (`cli.committed_so_far`); a remote one's are swept by its next run. A worker thread of this
    process still inside a bundle may write one after the sweep, the next run removes that; or
    fail to commit one the sweep took (FileNotFoundError), kept off the log (`interrupts`)."""
    from tokenizer.atomic import _local
    from uvd_pipeline.interrupts import interruption
    from uvd_pipeline.output_lock import read_holder

    def sweep(kind: type[BaseException] | None, error: BaseException | None, *_: Any) -> bool:
        # the interrupt may come wrapped: Beam's RuntimeError of the step it stopped (`interrupts`)
        if interruption(error) is None or _local(output) is None:
            return False
        holder = read_holder(output)
        if holder is None or holder.run_id != run_id:
            log.info("left the temporary files in %s as they are: its lock is no longer this run's", output)
            return False
        removed = remove_temporaries(output)
        if removed:
            log.info("removed %d temporary files of this run's interrupted commits", removed)
        return False

    return sweep


def warn_of(notices: list[str]) -> None:
    """Log the notes `check` prints of the runner's options (a flag that looks like a typo of one
    Beam knows, given as written to a cluster runner): a build dropped them unsaid."""
    for notice in notices:
        log.warning("%s", notice)


def _run_build(config: BuildConfig, overwrite: bool, replace_changed: bool, retokenize: bool, verify: bool,
               lock) -> BuildResult:
    from uvd_pipeline.early_render import rendering_early
    from uvd_pipeline.early_tokenizer import tokenizer_early
    from uvd_pipeline.beam_import import import_beam
    from uvd_pipeline.unit_render import list_units

    started = time.perf_counter()
    import_beam()  # first, without the IO connectors no build uses; the graph's modules import it after
    if retokenize:
        from uvd_pipeline.graph import build_retokenize_graph

        if not config.tokenizer.enabled:
            raise ConfigError("--retokenize needs tokenizer.enabled: true")
        warn_of(check_before_build(config))
        check_tokenizer(config)
        if not fsio.exists(config.output):  # a mistyped output: refused before its folder and lock are made
            raise ConfigError(f"--retokenize: {config.output} does not exist; build it first (without --retokenize)")
        run_id = lock()
        config = moved_inputs(config, _build_record(config.output))  # shards named after the input's first root
        unfinish(config.output)
        with open_runner(config) as (runner, options):
            pipeline = new_pipeline(config, runner, options)
            build_retokenize_graph(pipeline, config, run_id)
            running = time.perf_counter()
            with freed_memory_kept(tokenizes_in_process(config)):
                result = run_pipeline(pipeline)
        ran = time.perf_counter()
        summary = finalize(config, phases(started, running, ran, ran), run_counters(result),
                           distributions=run_distributions(result), metrics=metrics_reported(result),
                           workers_failed=workers_failed_to_start(result))
        return BuildResult(summary, fsio.join(config.output, SUMMARY_FILE))
    warn_of(check_before_build(config))  # what `check` notes of the runner's options
    with schemas_read_once():  # a parquet's footer read once by the units' planning and the notices
        units = list_units(config)  # source errors: they name the field the user wrote
        notices = source_notices(config)  # said now, and in the summary (the input read once for them)
    for warnings in notices.values():
        for warning in warnings:
            log.warning("%s", warning)
    check_tokenizer(config)
    run_id = lock()  # also removes what dead runs left; each commit checks this run still holds the lock
    config = prepare_output(config, overwrite, replace_changed)
    # what the steps after the shards' check need of the stats files it reads: they read none again
    read = StatsRead(rendered=[] if config.tokenizer.enabled else None)
    done = committed_inputs(config, verify=verify, each=read)
    if done:
        log.info("resuming: %d shards committed earlier (kept where their input is unchanged, else written "
                 "again)", len(done))
    settle_store(config.output, done, read.tar_sha256)
    most = sum(s.num_shards + s.num_val_shards for s in config.enabled_sources)
    # local threads only: units render while Beam is imported and the graph is built (`early_render`)
    # and, on a GPU, the tokenizer loads and compiles meanwhile (`early_tokenizer`)
    with worker_numerics(config), rendering_early(config, units, verify, run_id) as early, \
            tokenizer_early(config) as early_tokenizer:
        from uvd_pipeline.graph import build_graph

        with open_runner(config) as (runner, options):
            pipeline = new_pipeline(config, runner, options)
            build_graph(pipeline, config, done, units, verify=verify, done_rendered=read.rendered, run_id=run_id)
            running = time.perf_counter()
            with _ShardProgress(config.output, most=most, tokens=config.tokenizer.enabled), \
                    freed_memory_kept(tokenizes_in_process(config)):
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
    resumed = kept_shards(config, done, committed - dropped) if done else 0
    if done:
        log.info("kept %d of the %d shards committed earlier (their input unchanged)", resumed, len(done))
    settle_store(config.output, committed - dropped, read.tar_sha256)
    tars = {(a.source, a.split, a.stem): sha for a, sha in read.tar_sha256.items() if a not in dropped}
    # after drop_stale's removals; a token shard of an earlier tar (a --no-tokenize rerun) warned of
    tokens = summarize_tokens(config.output, config.content_hash(), claimed=claimed, tars=tars)
    clear_strays(config.output, remove=verify, claimed=claimed)
    counters = run_counters(result)
    summary = finalize(config, phases(started, running, ran, time.perf_counter()), counters, resumed=resumed,
                       distributions=run_distributions(result), metrics=metrics_reported(result), tokens=tokens,
                       shards=None if dropped else read.shards,  # shards dropped: their sums are in it, read again
                       workers_failed=workers_failed_to_start(result), notices=notices)
    return BuildResult(summary, fsio.join(config.output, SUMMARY_FILE))


def phases(started: float, running: float, ran: float, settled: float) -> dict[str, float]:
    """Seconds of a build's three phases, for the summary: listing the input, taking the output's
    lock, reading what is committed and building the graph; the runner's run (its start, every
    stage, its stop); and settling the output after it. The first and last, with the imports
    before them (about 0.7 s), are what a small build pays whatever its size."""
    return {"prepare": running - started, "pipeline": ran - running, "settle": settled - ran}
