"""Run a build: check the output, run the Beam graph, then summarise what landed
(`uvd_pipeline.summary`).

The output folder records the config it was built with (`build.json`). A rerun with the same
config resumes (committed shards are kept, the rest is written); a rerun with a different config
is refused unless `overwrite` is given, because mixing shards of two configs would be silent
corruption.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator

from sources import fsio
from tokenizer.atomic import write_bytes
from uvd_pipeline.config import FORMAT_VERSION, RENDER_REVISION, BuildConfig, ConfigError
from uvd_pipeline.host_memory import freed_memory_kept
from uvd_pipeline.rendered_shards import (
    REJECTS_SUFFIX,
    RENDERED_DIR,
    STATS_SUFFIX,
    ShardAddress,
    committed_shards,
    read_json,
    remove_temporaries,
    stats_files,
)
from uvd_pipeline.source_factory import source_notices
from uvd_pipeline import unit_store
from uvd_pipeline.summary import (REJECTS_FILE, SUMMARY_FILE, CommittedShards, finalize, metrics_reported,
                                  run_counters, run_distributions)
from uvd_pipeline.tokenize_stage import rendered_fields, summarize_tokens, token_stats_files
from uvd_pipeline.unit_relocation import drop_previous, placement_uri, relocate

log = logging.getLogger(__name__)
BUILD_FILE = "build.json"


def pipeline_options(config: BuildConfig, dask_address: str | None = None):
    from uvd_pipeline.beam_options import ViewCachingOptions

    beam = config.beam
    flags = list(beam.options)
    if beam.local:
        flags += [f"--direct_num_workers={beam.direct_num_workers}",
                  f"--direct_running_mode={beam.running_mode}"]
        if not any(f.startswith("--sdk_harness_log_level_overrides") for f in flags):
            # Worker processes log their own start/stop at INFO; keep only our progress lines.
            flags.append('--sdk_harness_log_level_overrides={"apache_beam":"WARNING","__main__":"WARNING"}')
        flags.append("--beam_plugins=uvd_pipeline.beam_worker")  # worker processes: no traceback of a refusal
    elif beam.is_dask:
        # the runner object is made by `open_runner`; Beam would not find it by a short name
        if dask_address and not any(f.startswith("--dask_client_address") for f in flags):
            flags.append(f"--dask_client_address={dask_address}")
        if not any(f.startswith(("--dask_partition_size", "--dask_npartitions")) for f in flags):
            flags.append(f"--dask_partition_size={beam.dask_settings.partition_size}")
    elif not any(f.startswith("--runner") for f in flags):
        flags.append(f"--runner={beam.runner}")
    return ViewCachingOptions(flags)


def make_runner(config: BuildConfig, options):
    """The runner object of a build: locally `local_runner.local_runner` (Beam's FnApiRunner with
    its data channels made safe), a bounded DaskRunner for `runner: dask`, and None otherwise (Beam
    then finds the runner by the name in the options)."""
    if config.beam.is_dask:
        settings = config.beam.dask_settings
        return _dask_runner(settings.groupings, None if settings.address else settings.memory_limit)
    if not config.beam.local:
        return None
    from uvd_pipeline.local_runner import local_runner

    return local_runner(options)


def _dask_runner(shuffle_partitions: int, memory_limit: str | None = None):
    try:
        import apache_beam.runners.dask.dask_runner  # noqa: F401
        import distributed  # noqa: F401  (the runner imports it lazily and fails late without it)
    except ImportError as exc:
        raise ConfigError(f"beam.runner: dask needs the dask extra ({exc}); install it with "
                          "pip install -e '.[dask]'") from None
    from uvd_pipeline.dask_cluster import bounded_dask_runner

    return bounded_dask_runner(shuffle_partitions, memory_limit)


# Workers run one at a time per core: a numeric library's own thread pool in each of them only
# fights the other workers. OpenBLAS's (numpy's matmul, the dedup pHash) on a busy 2-core machine
# cost 20 ms an image instead of 0.3, as much as the rest of the rendering; its results are the
# same bits either way (it splits the output among threads, never a sum). Dask's workers get these
# from Dask itself.
WORKER_ENVIRON = {"OPENBLAS_NUM_THREADS": "1"}
# The user's choice for this process's own BLAS pool, if any: read before any build here sets the
# variable for its worker processes.
_USER_BLAS_THREADS = os.environ.get("OPENBLAS_NUM_THREADS")


@contextmanager
def one_thread_numerics(in_process: bool) -> Iterator[None]:
    """Worker processes are started from this process's environment: set what they inherit (a
    value the user set is kept). The in-process modes (`in_memory`, `multi_threading`) run the
    workers in this process, whose numpy has already read its environment: its BLAS pool is set to
    one thread for the run instead (with `multi_threading` on 2 cores, 900 images with dedup took
    12.4 s and 19.8 CPU-s with OpenBLAS's own 2 threads, 7.3 s and 10.2 CPU-s without)."""
    for name, value in WORKER_ENVIRON.items():
        os.environ.setdefault(name, value)
    if not in_process or _USER_BLAS_THREADS is not None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def worker_numerics(config: BuildConfig):
    """`one_thread_numerics` for the local runner's workers (nothing for other runners)."""
    beam = config.beam
    return one_thread_numerics(beam.running_mode != "multi_processing") if beam.local else nullcontext()


@contextmanager
def open_runner(config: BuildConfig) -> Iterator[tuple[Any, Any]]:
    """(runner, options) of a build. With `runner: dask` and no scheduler address, a local cluster
    of worker processes lives as long as this block (see `uvd_pipeline.dask_cluster`)."""
    if not config.beam.is_dask:
        with worker_numerics(config):
            options = pipeline_options(config)
            yield make_runner(config, options), options
        return
    from uvd_pipeline.dask_cluster import scheduler

    runner = make_runner(config, None)  # a missing extra fails before a cluster starts
    with scheduler(config.beam.dask_settings) as address:
        yield runner, pipeline_options(config, dask_address=address)


def tokenizes_in_process(config: BuildConfig) -> bool:
    """Whether the local runner's workers encode tokens in this process (as threads, or in it):
    then freed memory is kept for reuse while the pipeline runs (`host_memory`)."""
    beam = config.beam
    return config.tokenizer.enabled and beam.local and beam.running_mode != "multi_processing"


def run_pipeline(pipeline) -> Any:
    """Run to the end; a runner's client connection (Dask) is closed whatever happens. A runner
    may skip Beam's test of the graph's round trip through its protos (`test_runner_api`)."""
    with heap_frozen():
        result = pipeline.run(getattr(pipeline.runner, "test_runner_api", "AUTO"))
        try:
            result.wait_until_finish()
        finally:
            client = getattr(result, "client", None)
            if client is not None:
                client.close()
    return result


@contextmanager
def heap_frozen() -> Iterator[None]:
    """Python's cyclic garbage collector leaves the objects that exist now (Beam's and our modules,
    the graph, the options: ~135,000 after building a one-source graph) out of its collections for
    this block (`gc.freeze`), and takes them back after it (`gc.unfreeze`, so a process that runs
    many builds frees each one's graph). A full collection during the run scans them all, 45-120 ms
    each: a 900-image dedup-on build ran one more than dedup off (0.21 s of the main process's
    garbage collection against 0.09 s). Nearly all of them are alive through the run either way;
    with the collector paused while the command started (`startup_gc`), the start's cyclic garbage
    is frozen with them, freed by a full collection after the block: ~3,250 objects, 5,600-7,700
    memory blocks, 0.6 MB of a 300-image build's 180 MB peak, which a collection here would free
    for 33-80 ms of this thread's CPU (every object is still in the youngest generation, so even
    `collect(0)` scans them all): not worth it. A freeze someone else made is left as it is. The collector is turned
    back on here, after the freeze."""
    import gc

    from uvd_pipeline import startup_gc

    if gc.get_freeze_count():
        startup_gc.resume()
        yield
        return
    gc.freeze()
    startup_gc.resume()
    try:
        yield
    finally:
        gc.unfreeze()


def _same_config(recorded: Any, current: dict[str, Any]) -> bool:
    """Whether a build record's config is `current` but for the output's location (moved or copied)."""
    return isinstance(recorded, dict) and {k: v for k, v in recorded.items() if k != "output"} == {
        k: v for k, v in current.items() if k != "output"}


def recorded_roots(existing: dict[str, Any]) -> dict[str, str]:
    """Source name -> the root a build record names its units under: the one it was first built
    from (`source_roots`, written once an input moved), else its config's `path`."""
    config = existing.get("config")
    sources = config.get("sources") if isinstance(config, dict) else None
    roots = {s["name"]: s["path"] for s in sources or () if isinstance(s, dict)
             and isinstance(s.get("name"), str) and isinstance(s.get("path"), str)}
    moved = existing.get("source_roots")
    if isinstance(moved, dict):
        roots.update({k: v for k, v in moved.items() if isinstance(k, str) and isinstance(v, str)})
    return roots


def _build_record(output: str) -> dict[str, Any]:
    """The output's `build.json` ({} where there is none or it cannot be read)."""
    try:
        record = read_json(fsio.join(output, BUILD_FILE))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _nested(one: str, other: str) -> bool:
    """Whether one root lies inside the other (compared as listed names are: `fsio.listed_root`):
    a path beside the new root but under the old one would be taken for the input's own, so such
    a change stays another config (`_refuse_nested_moves` says why)."""
    one, other = (fsio.listed_root(root).rstrip("/") + "/" for root in (one, other))
    return one != other and (one.startswith(other) or other.startswith(one))  # equal: one place spelt two ways


def _paths_moved(config: BuildConfig, existing: dict[str, Any]) -> dict[str, str]:
    """Source name -> the root the output names it under, for each source whose path differs."""
    roots = recorded_roots(existing)
    return {s.name: roots[s.name] for s in config.sources if roots.get(s.name, s.path) != s.path}


def classified_moves(config: BuildConfig, existing: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(moves kept, moves refused) when only sources' paths differ from the build recorded in
    `existing`, each a source name -> the root the output names it under; ({}, {}) when anything
    else differs. A source whose new path lies inside (or around) its old root makes the whole
    change refused (`_nested`); else every move is kept (`moved_inputs`)."""
    moved = _paths_moved(config, existing)
    if not moved or config.with_output_roots(moved).content_hash() != existing.get("config_hash"):
        return {}, {}
    nested = {name: root for name, root in moved.items() if _nested(root, _path_of(config, name))}
    return ({}, nested) if nested else (moved, {})


def _path_of(config: BuildConfig, name: str) -> str:
    return next(s.path for s in config.sources if s.name == name)


def moved_inputs(config: BuildConfig, existing: dict[str, Any]) -> BuildConfig:
    """`config` named after the roots the output was first built from, when only sources' paths
    differ from the build recorded there (the dataset moved: `mv`, a disk mounted elsewhere): the
    output keeps its config hash, its shards and its units, and a unit whose files are unchanged
    where they lie now is not rendered again. Any other difference (or a refused move:
    `classified_moves`) leaves `config` as it is."""
    return _named_after_moves(config, classified_moves(config, existing)[0])


def _named_after_moves(config: BuildConfig, moved: dict[str, str]) -> BuildConfig:
    if not moved:
        return config
    for source in config.sources:
        if source.name in moved:
            log.info("source %s: input moved from %s to %s: units whose files are unchanged are kept",
                     source.name, moved[source.name], source.path)
    return config.with_output_roots(moved)


def prepare_output(config: BuildConfig, overwrite: bool, replace_changed: bool = False) -> BuildConfig:
    """Make the output ready for this build; returns the config the build goes on with
    (`moved_inputs`)."""
    output = config.output
    fs, root = fsio.filesystem(output)
    build_uri = fsio.join(output, BUILD_FILE)
    exists = fs.exists(fsio.filesystem(build_uri)[1])
    existing = read_json(build_uri) if exists else {}
    moved, refused_moves = classified_moves(config, existing) if exists and not overwrite else ({}, {})
    config = _named_after_moves(config, moved)
    record = {"format_version": FORMAT_VERSION, "render_revision": RENDER_REVISION,
              "config_hash": config.content_hash(), "config": config.model_dump(mode="json", exclude={"beam": True})}
    if config.output_roots:
        record["source_roots"] = config.output_roots
    if exists:
        changed = existing.get("config_hash") != record["config_hash"]
        if changed and replace_changed:
            log.info("output %s holds another configuration's build: replacing it", output)
            overwrite = True
        if changed and not overwrite:
            earlier = existing.get("render_revision", 1)
            if earlier != RENDER_REVISION and _same_config(existing.get("config"), record["config"]):
                raise ConfigError(
                    f"output {output} holds a build of this configuration by an earlier version of the "
                    f"pipeline (render revision {earlier}, now {RENDER_REVISION}), whose renders differ from "
                    "this version's; pass --replace-changed to render it again, or choose a new `output`"
                )
            _refuse_nested_moves(output, config, refused_moves)
            raise ConfigError(
                f"output {output} holds a build of a different configuration "
                f"(config hash {existing.get('config_hash')} vs {record['config_hash']}); "
                "choose a new `output`, or pass --overwrite (or --replace-changed) to replace it"
            )
    if overwrite:
        for name in (RENDERED_DIR, "tokens", unit_store.UNITS_DIR, unit_store.SHARD_INPUTS_DIR, SUMMARY_FILE,
                     REJECTS_FILE, BUILD_FILE, "report"):
            path = fsio.filesystem(fsio.join(output, name))[1]
            if fs.exists(path):
                fs.rm(path, recursive=True)
    fs.makedirs(root, exist_ok=True)
    write_bytes(build_uri, json.dumps(record, indent=1, sort_keys=True).encode())
    unfinish(output)
    return config


def _refuse_nested_moves(output: str, config: BuildConfig, nested: dict[str, str]) -> None:
    """Refuse, saying why, a config whose only change is a source moved inside (or around) its old
    root (`mkdir old/v1; mv old/* old/v1/`): the generic "another configuration" said nothing of it."""
    if not nested:
        return
    moves = "; ".join(f"source {name}: now {_path_of(config, name)}, built from {root}" for name, root in nested.items())
    raise ConfigError(
        f"output {output} holds this configuration's build with its input at another path, and the new "
        f"path lies inside the old one or around it ({moves}): a file beside the new folder but under "
        "the old one could not be told from the input's own by its name, so the output cannot be kept "
        "as a moved input's; pass --replace-changed to build it again from where the input lies now "
        "(every unit rendered again), or choose a new `output`"
    )


def unfinish(output: str) -> None:
    """Take the finished build's files away before this run changes a shard: `summary.json` (the
    mark of a finished build) first, then `rejects.jsonl` and `mixture.yaml`; the run writes them
    again when it finishes. A rerun over grown input that failed or was killed half-way left the
    earlier run's summary beside its rewritten shards: its totals, shard list and mixture described
    another output, and `verify`, seeing a finished build, called it intact. A folder in the place
    of one stops the build naming it (deleting a folder the build never wrote is not ours to do)."""
    from uvd_pipeline.mixture import MIXTURE_FILE

    places = [(uri, *fsio.filesystem(uri)) for uri in (fsio.join(output, name)
                                                        for name in (SUMMARY_FILE, REJECTS_FILE, MIXTURE_FILE))]
    for uri, fs, path in places:  # all judged before any is taken away: a refusal leaves a finished output finished
        if fs.isdir(path):  # never the build's: someone's folder, not ours to delete
            raise ConfigError(f"output: {uri} is a folder, not the file the build writes "
                              "there; remove it (or move it away), then run the same build command again")
    for uri, fs, path in places:
        if fs.exists(path):
            fs.rm(path)


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


def check_output(config: BuildConfig) -> None:
    """The output must be a folder the build can make: an existing file there (or a file where a
    folder above it would go) failed only when the lock was taken, in a traceback."""
    local = fsio.local_path(config.output)
    if local is None:
        return  # an object store makes "folders" under any key
    path = os.path.abspath(local)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    if os.path.isdir(path):
        return
    what = "is a file" if os.path.isfile(path) else "exists and is not a folder"
    if path == os.path.abspath(local):
        raise ConfigError(f"output: {config.output} {what}; name a folder (it is made when missing), e.g. "
                          f"{config.output}.build")
    raise ConfigError(f"output: {path} {what}, so no folder can be made at {config.output}; name a folder "
                      "elsewhere")


def check_runner(config: BuildConfig) -> None:
    """The runner class must load before anything is written: a runner given by its full dotted path,
    or a Beam runner whose extra is missing (DataflowRunner without apache-beam[gcp]), failed only
    when the pipeline started, with the output already prepared. So did a Dask scheduler address
    where none answers (`dask_cluster.check_address`)."""
    beam = config.beam
    if beam.is_dask:  # ours (`make_runner`): the dask extra is checked there, before any cluster starts
        if beam.dask_settings.address:
            _dask_runner(beam.dask_settings.groupings)  # the extra, before its scheduler is asked
            from uvd_pipeline.dask_cluster import check_address

            check_address(beam.dask_settings.address)
        return
    if beam.local:
        return  # ours (`make_runner`)
    from uvd_pipeline.config import RUNNER_NAMES

    path = RUNNER_NAMES.get(beam.runner, beam.runner)
    module_name, _, class_name = path.rpartition(".")
    try:
        import importlib

        runner = getattr(importlib.import_module(module_name), class_name)
    except AttributeError:
        raise ConfigError(f"beam.runner: {module_name} has no {class_name}; name a runner class by its full "
                          "dotted path (module.Class)") from None
    except Exception as exc:  # ImportError (a missing extra, a misspelt module), or the module's own failure
        raise ConfigError(f"beam.runner: {path} cannot be loaded ({type(exc).__name__}: {exc}); install what it "
                          "needs (DataflowRunner: apache-beam[gcp]) or correct the name") from None
    from apache_beam.runners.runner import PipelineRunner

    if not (isinstance(runner, type) and issubclass(runner, PipelineRunner)):
        raise ConfigError(f"beam.runner: {path} is not a Beam runner (a PipelineRunner subclass)")


def check_before_build(config: BuildConfig) -> None:
    """What `check` and `build` refuse before any work, besides the sources (`list_units`) and
    the tokenizer: where the output goes and which runner runs it."""
    check_output(config)
    check_runner(config)


def check_tokenizer(config: BuildConfig) -> None:
    """The tokenizer checkpoint must load before anything runs (it loads in every worker, after
    all rendering): a missing, damaged or unsafe checkpoint fails here in one line, and so does
    one that loads but cannot tokenize this build (`tokenizer_fits`)."""
    if not config.tokenizer.enabled:
        return
    from uvd_pipeline.tokenize_stage import TokenizeSettings

    path = TokenizeSettings(config.tokenizer.checkpoint).path
    for name in ("config.json",):
        if not fsio.exists(fsio.join(path, name)):
            hint = ("run `make tokenizer` to train the embedded one" if config.tokenizer.checkpoint == "embedded"
                    else "point it at a folder holding config.json and pytorch_model.bin")
            raise ConfigError(f"tokenizer.checkpoint: no {name} in {path}; {hint}, or set tokenizer.enabled: false")
    if "://" in path:
        return  # a remote checkpoint is loaded by the workers that can reach it
    from tokenizer.checkpoint import CheckpointError, load

    try:
        model = load(path)
    except CheckpointError as exc:
        raise ConfigError(f"tokenizer.checkpoint: {exc}") from None
    problem = tokenizer_fits(model.config, config)
    if problem:
        raise ConfigError(f"tokenizer.checkpoint: {path}: {problem}")


def tokenizer_fits(model_config: Any, config: BuildConfig) -> str | None:
    """Why a loaded tokenizer cannot tokenize this build (None when it can): the checks that
    `tokenizer.codec.Tokenizer` and its `encode` make, which otherwise failed in every worker after
    all the rendering. The build renders RGB images of `image.size`."""
    from uvd_pipeline.shards import TOKEN_DTYPE_CODES

    if model_config.num_channels != 3:
        return (f"it encodes images of {model_config.num_channels} channels; the build renders RGB images "
                "(3 channels): use a tokenizer trained on RGB")
    if model_config.num_embeddings > TOKEN_DTYPE_CODES:
        return (f"its codebook holds {model_config.num_embeddings} codes; token shards store uint16 codes "
                f"(at most {TOKEN_DTYPE_CODES}): use a tokenizer with a smaller codebook")
    factor = model_config.downsample_factor
    if config.image.size % factor:
        return (f"it downsamples by {factor}; image.size {config.image.size} is not a multiple of it: set "
                f"image.size to a multiple of {factor}")
    if config.tokenizer.device == "cuda" and config.beam.local:
        import torch

        if not torch.cuda.is_available():
            return "tokenizer.device is cuda, but this machine has no CUDA device: set tokenizer.device: auto or cpu"
    return None


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


def new_pipeline(config: BuildConfig, runner, options):
    """A Beam pipeline whose local temporary folder lies in the run's folder `OUT/_tmp/<run id>/`
    (local outputs): Beam makes one per pipeline and removes it when the run ends, but a kill leaves
    it behind, and the next run removes what is in `OUT/_tmp/`."""
    import tempfile

    import apache_beam as beam

    from uvd_pipeline import beam_signatures
    from uvd_pipeline.output_lock import run_tmp

    beam_signatures.install()  # before the graph: Beam inspects each DoFn's methods many times

    folder = run_tmp(config.output)
    saved = tempfile.tempdir
    if folder is not None:
        tempfile.tempdir = folder  # only while Beam makes its folder
    try:
        return beam.Pipeline(runner=runner, options=options)
    finally:
        tempfile.tempdir = saved


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
            with freed_memory_kept(tokenizes_in_process(config)):
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
