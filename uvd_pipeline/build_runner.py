"""Which runner runs a build and how: Beam's options and runner object for the local runner, a
Dask cluster or a runner by name, the local workers' numeric libraries held to one thread, the
Beam pipeline with its temporary folder in the run's own, and the run itself to its end."""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from typing import Any, Iterator

from uvd_pipeline.config import BuildConfig, ConfigError
from uvd_pipeline.environ_loan import EnvironmentLoan


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
    else:  # beam.options hold no --runner (`config_beam.runner_flag`): beam.runner is the one name
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


def check_dask_extra() -> None:
    """Refuse `runner: dask` where the dask extra does not import, saying how to install it."""
    try:
        import apache_beam.runners.dask.dask_runner  # noqa: F401
        import distributed  # noqa: F401  (the runner imports it lazily and fails late without it)
    except ImportError as exc:
        raise ConfigError(f"beam.runner: dask needs the dask extra ({exc}); install it with "
                          "pip install -e '.[dask]'") from None


def _dask_runner(shuffle_partitions: int, memory_limit: str | None = None):
    check_dask_extra()
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
_WORKER_LOAN = EnvironmentLoan()  # WORKER_ENVIRON, taken back after the build (`environ_loan`)


@contextmanager
def one_thread_numerics(in_process: bool) -> Iterator[None]:
    """Worker processes are started from this process's environment: set what they inherit (a
    value the user set is kept), and take it back when the outermost block ends, so that a program
    calling `run_build` keeps its own environment (`environ_loan`). The in-process modes
    (`in_memory`, `multi_threading`) run the workers in this process, whose numpy has already read
    its environment: its BLAS pool is set to one thread for the run instead (with
    `multi_threading` on 2 cores, 900 images with dedup took 12.4 s and 19.8 CPU-s with OpenBLAS's
    own 2 threads, 7.3 s and 10.2 CPU-s without)."""
    with _WORKER_LOAN.kept():  # the caller's environment as it was after the last block ends
        _WORKER_LOAN.note({name: value for name, value in WORKER_ENVIRON.items() if name not in os.environ})
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

    from uvd_pipeline import lazy_modules, startup_gc

    lazy_modules.settle()  # before the run's worker threads weigh side inputs (see lazy_modules)
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
