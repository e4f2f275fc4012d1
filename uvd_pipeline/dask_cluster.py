"""The Dask side of a `runner: dask` build: the scheduler it talks to, and Beam's DaskRunner with
bounded groupings.

A local cluster is separate worker processes (no memory shared with the build's process) behind a
scheduler on 127.0.0.1, started for one build and stopped after it, so a local Dask build meets
what a real cluster does: pickled work, shuffles between processes, lost workers. An existing
scheduler (`beam.dask.address`: one deployed with dask-kubernetes, dask-jobqueue or by hand) is
used as it is and left running; it must answer, as a scheduler, before the build touches its
output (`check_address`).

Beam's DaskRunner turns a GroupByKey into a Dask bag shuffle with as many partitions as its input,
and a Flatten into the sum of its inputs' partitions, so partitions multiply along the graph (the
mini build reached 399 partitions and 58,000 tasks for 10 shards, most of them empty). The runner
here is Beam's with one change: the input of every grouping is first cut to at most
`beam.dask.shuffle_partitions` partitions (by default the local cluster's threads). Which elements meet in a group does not change.

Its groupings shuffle in tasks, whatever Dask's config says (SHUFFLE): Beam's GroupByKey asks the
bag for Dask's default shuffle, which on a distributed client tries dask.dataframe (dask.array
with it, and pandas, which the project does not install) in the build's client: 0.4 CPU-s, 2.7 s
of wall time at load 12, before the first task is submitted, only to answer "tasks". A config
setting `dataframe.shuffle.method: disk` took the bag's disk shuffle, which Dask's docs give for
one machine only.

Beam's DaskRunner also hands a side input to its consumer as the producing bag itself: each of the
consumer's tasks computed that bag again from inside the task (a nested compute through the
worker's client), so every step above a side input ran again (the build's renders twice, about
twice the tasks in all), and the scheduler warned of conflicting task specs for the same keys
(133 multi-line warnings in a 13-shard build). Here a side input is one value of the graph (its
elements gathered in one task) that the consumer's tasks depend on.

Beam 2.77's DaskRunner also collects the outputs of every bundle of a step in one receiver, made
with the graph and never emptied: a task returns all the receiver holds. A task unpickled on a
worker process has its own copy, but where tasks share the object (a cluster whose workers are
threads of the build's process, `LocalCluster(processes=False)`, passes the graph as it is) each
bundle returned every earlier bundle's outputs too, or another thread's: 12 numbers grouped by 3
came back as groups of 94, 120 and 150. Here every ParDo's bundle makes its own receiver
(`_bundle`), with Beam's DoFn invoker, on any cluster.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Iterator

from uvd_pipeline.config import ConfigError, DaskConfig

log = logging.getLogger(__name__)
ANSWER_TIMEOUT_S = 5.0  # a scheduler that is up answers in milliseconds, also across a data centre
# What a probe of an address meets where no scheduler answers: OSError (refused, unresolvable, timed
# out, closed: distributed's CommClosedError is one), ValueError (an address scheme distributed does
# not know, or an answer that is no Dask message: msgpack's errors). Anything else is a bug of ours
# (or distributed's) and keeps its traceback; a KeyboardInterrupt stays one.
UNREACHABLE = (OSError, ValueError)
# How every grouping shuffles (`dataframe.shuffle.method`, set around Beam's GroupByKey): in tasks,
# what Dask's bag picked on any distributed client, without importing dask.dataframe to decide.
SHUFFLE = "tasks"


def check_address(address: str, timeout: float | None = None) -> None:
    """A given scheduler must answer, and be a scheduler, before anything is written: Beam's runner
    first connects once the graph is built and the output prepared, retries for 30 s, and dies in
    a chained OSError traceback that names neither the setting nor the fix."""
    import asyncio

    timeout = ANSWER_TIMEOUT_S if timeout is None else timeout
    connection = _connection_args(address)
    try:
        # bounded as a whole: distributed's handshake waits without end on a port that accepts
        # connections and never answers
        identity = asyncio.run(asyncio.wait_for(_identity(address, timeout, connection), timeout))
    except UNREACHABLE as exc:  # refused, unresolvable, silent (a firewall, a port that is no Dask's)
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise ConfigError(
            f"beam.dask.address: no Dask scheduler answers at {address} within {timeout:g} s ({detail}); "
            "start one there (`dask scheduler`, then `dask worker <address>`), correct the address (the "
            "scheduler's port, 8786 by default, not its dashboard's), or leave address out to run a local "
            "cluster") from None
    kind = identity.get("type") if isinstance(identity, dict) else None
    if kind != "Scheduler":
        raise ConfigError(f"beam.dask.address: {address} answers as a Dask {kind or 'service'}, not a scheduler; "
                          "give the scheduler's address (what `dask worker` was given)")
    if not identity.get("n_workers"):
        log.warning("Dask scheduler at %s has no workers yet: the build waits until some join", address)
    else:
        log.info("Dask scheduler at %s: %d workers, %d threads", address, identity["n_workers"],
                 identity.get("total_threads", 0))
        check_workers(address)


WORKERS_ANSWER_S = 30.0  # workers busy with other work answer between tasks


def check_workers(address: str, timeout: float = WORKERS_ANSWER_S) -> None:
    """Each worker of a given scheduler must run this project's code and libraries
    (`code_identity`): one that cannot import it failed the build's first task there, and one of
    another version (another checkout, an older install, other libraries) rendered its share with
    its own code, bytes that differed from what the same config gives, without a word. Workers that
    join later are checked by the build's tasks themselves (`checked_task`); workers that do not
    answer within `timeout` are named in a warning."""
    import distributed

    from uvd_pipeline.code_identity import FIX, code_identity, difference

    ours = code_identity()
    answers: dict = {}

    def ask() -> None:
        with distributed.Client(address, timeout=ANSWER_TIMEOUT_S, set_as_default=False) as client:
            answers.update(client.run(by_value(code_identity), on_error="return"))

    asking = threading.Thread(target=ask, name="dask-worker-code", daemon=True)
    asking.start()
    asking.join(timeout)
    if asking.is_alive() or not answers:
        log.warning("Dask workers at %s did not say within %g s which code of the project they run: the build goes "
                    "on, each worker checked by its first task of the build", address, timeout)
        return
    for worker, theirs in sorted(answers.items()):
        if isinstance(theirs, BaseException):
            raise ConfigError(f"beam.dask.address: the Dask worker {worker} of {address} cannot run this project's code "
                              f"({type(theirs).__name__}: {theirs}); {FIX}")
        differs = difference(ours, theirs)
        if differs is not None:
            raise ConfigError(f"beam.dask.address: the Dask worker {worker} of {address} {differs}: its renders could "
                              f"differ from this build's; {FIX}")


class ByValue:
    """A function of `uvd_pipeline.code_identity` that reaches Dask's workers as its code
    (cloudpickle, by value) rather than by its module's name, which a worker would resolve in its
    own copy of the project, maybe an older one without the check. It unpickles as the function."""

    def __init__(self, function, name: str) -> None:
        self.function = function
        self.__name__ = name  # what Dask names its tasks by

    def __dask_tokenize__(self):
        return type(self).__name__, pickle_digest(self.function)

    def __call__(self, *args):
        return self.function(*args)

    def __reduce__(self):
        import pickle

        import cloudpickle

        from uvd_pipeline import code_identity

        with _BY_VALUE:
            cloudpickle.register_pickle_by_value(code_identity)
            try:
                code = cloudpickle.dumps(self.function)
            finally:
                cloudpickle.unregister_pickle_by_value(code_identity)
        return pickle.loads, (code,)


_BY_VALUE = threading.Lock()  # cloudpickle's registry is one for the process


def pickle_digest(function) -> str:
    """A digest of `function` and what it is bound to (a partial's arguments), for Dask's keys."""
    import hashlib
    import pickle

    return hashlib.sha256(pickle.dumps(function)).hexdigest()


def by_value(function) -> ByValue:
    return ByValue(function, function.__name__)


def checked_task(ours: dict, target: str) -> ByValue:
    """The function a task of the build's own code calls on a worker: `target` ("module:name"),
    called once the worker is known to run `ours` (`code_identity.run_checked`, by value)."""
    from functools import partial

    from uvd_pipeline.code_identity import run_checked

    return ByValue(partial(run_checked, ours, target), target.rpartition(":")[2])


def _connection_args(address: str) -> dict:
    """The security a client of `address` connects with, as Beam's runner's `Client` takes it
    (Beam gives it none): the loader Dask's config names (`distributed.client.security-loader`),
    else the TLS settings of Dask's config (`distributed.comm.tls.*`). Without them the probe
    refused a tls:// scheduler that the build's client reaches. A TLS address without settings,
    or settings that name files that cannot be read, are the config's to fix."""
    from distributed import client
    from distributed.security import Security

    how = "Dask's TLS settings (distributed.comm.tls.ca-file, .client.cert, .client.key)"
    try:
        loader = getattr(client, "_maybe_call_security_loader", lambda address: None)
        args = (loader(address) or Security()).get_connection_args("client")
    except UNREACHABLE as exc:
        raise ConfigError(f"beam.dask.address: {address}: {how} cannot be used ({type(exc).__name__}: {exc}); "
                          "correct them, as for any Dask client") from None
    if address.startswith("tls://") and args.get("ssl_context") is None:
        raise ConfigError(f"beam.dask.address: {address} is a TLS address and Dask's config has no TLS settings for "
                          f"a client: set {how}, e.g. as DASK_DISTRIBUTED__COMM__TLS__CA_FILE, as for any Dask client")
    return args


async def _identity(address: str, timeout: float, connection: dict) -> dict:
    """What the scheduler says of itself (its `identity` handler), within `timeout` seconds."""
    from distributed.comm import connect

    await _tcp_open(address)
    comm = await connect(address, timeout=timeout, **connection)
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        await comm.close()


async def _tcp_open(address: str) -> None:
    """Raise at once where a TCP address refuses connections or names an unknown host (an OSError
    saying so): distributed's connect retries both until its timeout, then says only that it timed
    out. Other schemes (tls://, ucx://) are left to it."""
    import asyncio

    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme != "tcp":
        return
    host, port = parse_host_port(location)
    _, writer = await asyncio.open_connection(host, port)
    writer.close()


WATCH_INTERVAL_S = 10.0  # how often a given scheduler is asked how many workers it has


class WorkerWatch:
    """Asks a given scheduler every `interval` seconds how many workers it has, while a build
    runs on it, and says so when none is left: Dask waits for workers to come back (an autoscaled
    cluster may shrink to none), so a build whose only worker died sat at its last progress line
    without a word. A warning names the address and what to do; a line when workers return."""

    def __init__(self, address: str, interval: float = WATCH_INTERVAL_S) -> None:
        self.address, self.interval = address, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dask-worker-watch", daemon=True)

    def __enter__(self) -> "WorkerWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=ANSWER_TIMEOUT_S + 1)

    def _workers(self, connection: dict) -> int | None:
        """The scheduler's worker count, None where it does not answer."""
        import asyncio

        try:
            identity = asyncio.run(asyncio.wait_for(_identity(self.address, ANSWER_TIMEOUT_S, connection),
                                                    ANSWER_TIMEOUT_S))
        except UNREACHABLE:
            return None
        return int(identity.get("n_workers") or 0) if isinstance(identity, dict) else None

    def _run(self) -> None:
        connection = _connection_args(self.address)
        said = None  # what was last said: "none", "unreachable" or None (workers there)
        while not self._stop.wait(self.interval):
            workers = self._workers(connection)
            state = "unreachable" if workers is None else ("none" if workers == 0 else None)
            if state == said:
                continue
            if state == "none":
                log.warning("Dask scheduler at %s (beam.dask.address) has no workers left: the build waits until "
                            "some join (`dask worker %s`); or stop it (Ctrl-C) and run it again later: committed "
                            "units are kept", self.address, self.address)
            elif state == "unreachable":
                log.warning("Dask scheduler at %s (beam.dask.address) does not answer within %g s: the build "
                            "waits for it", self.address, ANSWER_TIMEOUT_S)
            else:
                log.info("Dask scheduler at %s has workers again (%d)", self.address, workers)
            said = state


def memory_limit(value: str) -> str | int:
    """The config's memory limit in the form LocalCluster takes ('auto', bytes text, or 0)."""
    return 0 if value == "0" else value


@contextmanager
def scheduler(settings: DaskConfig) -> Iterator[str]:
    """Yield the scheduler address; a local cluster started here is closed on exit (its workers
    keep Beam's import warning out and end at once when closed: `uvd_pipeline.dask_worker`)."""
    if settings.address:
        with WorkerWatch(settings.address):
            yield settings.address
        return
    import dask

    with dask.config.set(quiet_cluster()):  # the scheduler's, the nannies' and (through them) the workers' config
        with _local_cluster(settings) as address:
            yield address


# What the build's local cluster does not do (set while it lives, so that its scheduler, its
# nannies and their worker processes take it): sample the stacks of the threads running tasks
# every 10 ms for the dashboard's profile page (distributed.worker.profile), measure the host's
# CPU, memory and network every 0.5 s (system-monitor, 2 s here) and check the event loop every
# 20 ms (tick, 200 ms here; it still names a loop blocked for seconds). On a 300-image build at
# load 12 they took 2 of 13.6 CPU-s (A/B, median of 3; the workers' memory limit is watched as
# before, by `distributed.worker.memory.monitor-interval`). Only where the user left them alone
# (`quiet_cluster`).
QUIET_CLUSTER = {"distributed.worker.profile.enabled": False, "distributed.admin.system-monitor.interval": "2s",
                 "distributed.admin.tick.interval": "200ms"}


def quiet_cluster() -> dict:
    """The settings of QUIET_CLUSTER the user left at distributed's defaults: one set in code to
    another value, or named in a Dask config file or DASK_* variable (even to the default value),
    is the user's, kept as it is. One set in code to distributed's default cannot be told from it
    (`dask.config.set` keeps no record of what it set, only the values), so it is made quieter
    like the default: a user who wants distributed's default names it in a file or variable."""
    import dask

    defaults = dask.config.merge(*dask.config.defaults)
    named = dask.config.collect()  # the config files' and the environment's, without the defaults
    missing = object()
    return {key: value for key, value in QUIET_CLUSTER.items()
            if dask.config.get(key, missing) == dask.config.get(key, missing, config=defaults)
            and dask.config.get(key, missing, config=named) is missing}


@contextmanager
def _local_cluster(settings: DaskConfig) -> Iterator[str]:
    from uvd_pipeline.dask_environ import callers_environment_kept

    with callers_environment_kept():  # what its nannies write into this process's environment
        with _started_local_cluster(settings) as address:
            yield address


@contextmanager
def _started_local_cluster(settings: DaskConfig) -> Iterator[str]:
    from distributed import LocalCluster

    from uvd_pipeline.dask_worker import BuildWorker

    # its HTTP pages (the dashboard where bokeh is installed) on a free loopback port: with None,
    # distributed still binds 8787, the port of a person's own dashboard
    # no workers at first, then `scale`, which starts them in the background: each imports the
    # build's modules before it joins (`BuildWorker.setup`) while this process builds the graph
    cluster = LocalCluster(n_workers=0, threads_per_worker=settings.threads_per_worker,
                           memory_limit=memory_limit(settings.memory_limit), processes=True,
                           host="127.0.0.1", dashboard_address="127.0.0.1:0", silence_logs=logging.WARNING,
                           plugins=(BuildWorker(),), worker_class=_exit_noting_nanny())
    start = WorkerStart(cluster, settings.workers)
    cluster.sync(_interrupts_left_to_the_build)  # before its nannies start their worker processes
    cluster.scale(settings.workers)
    start.watch()
    log.info("local Dask cluster at %s: %d workers x %d threads (its pages: %s)", cluster.scheduler_address,
             settings.workers, settings.threads_per_worker, cluster.dashboard_link)
    _STARTING[cluster.scheduler_address] = start
    with start.told():  # also while it closes: a start it cuts short fails too
        try:
            yield cluster.scheduler_address
        finally:
            start.stop()
            _STARTING.pop(cluster.scheduler_address, None)
            cluster.close()


async def _interrupts_left_to_the_build() -> None:
    """Run on the cluster's event loop thread: SIGINT is blocked there, and so in the threads it
    starts, the ones that start the worker processes, and in those processes, which keep the
    mask (`BuildWorker.setup` then ignores it and unblocks it). Ctrl-C while a worker process was
    still starting killed it in its imports, each printing its traceback and its nanny's failed
    start another, above the build's one line; the build's process (whose main thread takes the
    signal) closes the cluster, which ends the workers. A thread's mask changes nothing else: a
    Python signal handler runs in the main thread only. multiprocessing's resource tracker is
    started first: starting it (with the first worker process) unblocks SIGINT in the thread that
    starts it."""
    import signal
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _exit_noting_nanny():
    """distributed's Nanny that keeps its worker process's exit status (`exit_status`): where a
    process dies as it starts, the nanny's own failure says only "Nanny failed to start worker
    process", and the status (or the signal that killed it) is the one clue to why. It also notes
    what it writes into this process's environment (`dask_environ`)."""
    from distributed import Nanny

    from uvd_pipeline.dask_environ import note_nanny_writes

    class ExitNotingNanny(Nanny):
        exit_status: int | None = None

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            note_nanny_writes(getattr(self, "pre_spawn_env", {}))  # given back after the cluster

        def _on_worker_exit_sync(self, exitcode):
            self.exit_status = exitcode
            return super()._on_worker_exit_sync(exitcode)

    return ExitNotingNanny


def start_failure(nanny) -> str:
    """Why a worker's start failed, in words: the exit status or signal of a process that died
    as it started, else the exception its start raised (a port that cannot be bound, a preload or
    plugin that failed, a start that timed out)."""
    status = getattr(nanny, "exit_status", None)
    if status is not None and status != 0:
        return f"its process exited with status {status}" if status > 0 else f"its process was killed by signal {-status}"
    reason = getattr(nanny, "_Server__startup_exc", None)  # distributed keeps why it failed, privately
    if reason is None:
        return "no reason given"
    return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__


START_WARN_S = 120.0  # a worker imports Beam and the build's steps before it joins: seconds, 20-30 at load 12


class WorkerStart:
    """The local cluster's workers as they start in the background (`scale`): a worker process that
    dies or fails as it starts (a site hook, a process or memory limit, a broken install) is not
    started again, and where none started the build waited for one without end, its only sign a
    tornado traceback of "Nanny failed to start". `wait` (before the build's wait for its results)
    returns once a worker has joined and fails the build once every start has failed."""

    def __init__(self, cluster, workers: int) -> None:
        self.cluster, self.workers = cluster, workers
        self.started: int | None = None  # how many started, once every start's outcome is known
        self._stop = threading.Event()
        self._watching: threading.Thread | None = None

    def settled(self) -> bool:
        """Whether every start of the batch has ended, started or failed."""
        return len(self.cluster.workers) >= self.workers

    def watch(self, poll: float = 0.2) -> None:
        """In the background, until every start has ended: where only some failed, say so in one
        warning (how many started, why the others did not), and keep the count (`started`) for the
        build's summary. Before, the build went on with fewer workers, its only sign a tornado
        traceback of "Nanny failed to start"."""
        def run() -> None:
            while not self._stop.wait(poll):
                if self.settled():
                    self.settle()
                    return

        self._watching = threading.Thread(target=run, name="dask-worker-start", daemon=True)
        self._watching.start()

    def settle(self) -> None:
        failed = self.failed()
        self.started = self.workers - len(failed)
        if failed and self.started:
            log.warning("%s", self.partial_message(failed))

    def failures(self) -> list[str]:
        """Why each worker that failed to start failed (known once `settle` ran; none before)."""
        return [start_failure(nanny) for nanny in self.failed()] if self.started is not None else []

    def stop(self) -> None:
        self._stop.set()
        if self._watching is not None:
            self._watching.join(timeout=1.0)

    def partial_message(self, failed: list) -> str:
        reasons = sorted(set(start_failure(nanny) for nanny in failed))
        return (f"local Dask cluster: {self.started} of {self.workers} worker processes started, {len(failed)} failed "
                f"as they started ({'; '.join(reasons)}): the build goes on with {self.started}, more slowly; "
                "a limit on processes or memory, or a site hook, is the usual cause (set beam.dask.workers to what "
                "the machine can start)")

    def failed(self) -> list:
        """The nannies whose start failed, once the cluster knows every start's outcome (none before)."""
        from distributed.core import Status

        nannies = list(self.cluster.workers.values())  # filled once every start of the batch ended
        return [nanny for nanny in nannies if nanny.status == Status.failed]

    def joined(self) -> int:
        return len(self.cluster.scheduler.workers)

    def wait(self, poll: float = 0.1, warn_after: float = START_WARN_S) -> None:
        """Return once a worker has joined the scheduler; raise ConfigError once none can."""
        import time

        warn_at = time.monotonic() + warn_after
        while not self.joined():
            failed = self.failed()
            if len(failed) >= self.workers:
                raise ConfigError(self.message(failed))
            if warn_at is not None and time.monotonic() > warn_at:
                log.warning("no worker of the local Dask cluster has joined within %g s: the build waits for them "
                            "(a busy machine starts them slowly)", warn_after)
                warn_at = None
            time.sleep(poll)

    def message(self, failed: list) -> str:
        why = f" ({'; '.join(sorted(set(start_failure(nanny) for nanny in failed)))})"
        return (f"beam.dask: none of the local Dask cluster's {self.workers} worker processes started{why}: a new "
                "Python process of this environment dies or fails as it starts (a sitecustomize or other site hook, "
                "a limit on processes or memory, a broken install of dask/distributed; any lines above are the "
                "workers' own); `python -c \"import distributed; distributed.LocalCluster(n_workers=1).close()\"` "
                "shows it outside the build. Mend that, give beam.dask.address of a running scheduler, or build "
                "with --runner DirectRunner")

    @contextmanager
    def told(self) -> Iterator[None]:
        """Leave out tornado's traceback of a failed start: the build says it (`wait`: every start
        failed; `watch`: some failed)."""
        said = _SaidByTheBuild(self)
        logger = logging.getLogger("tornado.application")
        logger.addFilter(said)
        try:
            yield
        finally:
            logger.removeFilter(said)


class _SaidByTheBuild(logging.Filter):
    """Drops the record of the cluster's failed scaling, which the build says in its own words."""

    def __init__(self, start: WorkerStart) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            scaling = "_correct_state_internal" in record.getMessage()
            return not (scaling and self.start.failed())
        except Exception:  # noqa: BLE001 - a filter's error escapes the logging call: show the record
            return True


# The local clusters' starts by scheduler address, while their builds run (`checked_result` waits on them).
_STARTING: dict[str, WorkerStart] = {}


def bounded_dask_runner(shuffle_partitions: int, memory_limit: str | None = None):
    """Beam's DaskRunner whose groupings shuffle at most `shuffle_partitions` partitions, whose
    side inputs are computed once, as part of the graph, and whose bundles collect their own
    outputs (a Beam whose DoFn invoker differs from 2.77's is refused: `check_beam_shape`).
    `memory_limit`: the local cluster's (`beam.dask.memory_limit`), named where workers die; None
    for a given scheduler's workers."""
    check_beam_shape()
    import apache_beam as beam
    import dask
    from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunner
    from apache_beam.runners.dask.overrides import _GroupByKeyOnly
    from apache_beam.runners.dask.transform_evaluator import GroupByKey

    from uvd_pipeline.code_identity import GIVEN, code_identity

    class BoundedDaskRunner(DaskRunner):
        # Beam's Pipeline.run first rebuilds the graph from its protos, as a test that a portable
        # runner could take it (0.22 CPU-s of the build's process), where a runner that is not of
        # the Fn API is given: this one takes the graph as built, as Beam's in-process runners do
        test_runner_api = False

        @staticmethod
        def to_dask_bag_visitor(bag_kwargs=None):
            visitor = DaskRunner.to_dask_bag_visitor(bag_kwargs)
            visit = visitor.visit_transform

            def visit_transform(node) -> None:
                if type(node.transform) is beam.ParDo:  # what Beam translates as ParDo
                    visitor.bags[node] = _pardo(node, visitor.bags, runner.code)
                    return
                if not isinstance(node.transform, _GroupByKeyOnly):
                    visit(node)
                    return
                (pcoll,) = node.inputs
                bag = visitor.bags[pcoll.producer]
                if bag.npartitions > shuffle_partitions:
                    bag = bag.repartition(npartitions=shuffle_partitions)
                with dask.config.set({"dataframe.shuffle.method": SHUFFLE}):
                    visitor.bags[node] = GroupByKey(node).apply(bag)

            visitor.visit_transform = visit_transform
            return visitor

        def run_pipeline(self, pipeline, options):
            result = super().run_pipeline(pipeline, options)
            return checked_result(result, getattr(options.view_as(DaskOptions), "address", None), memory_limit)

    runner = BoundedDaskRunner()
    runner.shuffle_partitions = shuffle_partitions
    # what every worker that runs the build's own code must run too; memory_limit None: a given scheduler's workers
    runner.code = {**code_identity(), GIVEN: memory_limit is None}
    return runner


class SchedulerLost(RuntimeError):
    """The build's Dask scheduler went away (or the client lost it) with work not done."""


class WorkersKilled(RuntimeError):
    """Dask gave up a task of the build after the workers running it died, one after another
    (`distributed.scheduler.allowed-failures`): most often each passed its memory limit."""


def checked_result(result, address: str | None, memory_limit: str | None = None):
    """Beam's DaskRunnerResult whose `wait_until_finish` fails where a future did not finish:
    a scheduler that goes away cancels the client's futures, which Beam's wait (`as_completed`
    with results) passes over as if done, and the build ended with status 0 and '0 shards'. A
    task whose workers died (Dask's KilledWorker, a traceback naming neither the memory limit nor
    the setting) and a worker that runs other code (`code_identity.run_checked`) fail it in one
    message saying what to do. On a given scheduler, a run that fails otherwise (or is interrupted)
    stops its tasks before it returns (`dask_settle`)."""
    from apache_beam.runners.runner import PipelineState
    from distributed.scheduler import KilledWorker

    wait = result.wait_until_finish

    def wait_until_finish(duration=None):
        try:
            return finish(duration)
        except SchedulerLost:
            raise  # nobody left to ask
        except BaseException as exc:
            if address and memory_limit is None:  # a given scheduler's workers outlive the build
                from uvd_pipeline.dask_settle import SETTLE_S, TERMINATED_SETTLE_S, settle

                # SIGTERM (`docker stop`) gives its grace period (10 s by default), then SIGKILL:
                # the wait ends within it, so the lock is released (every commit checks it anyway)
                terminated = type(exc).__name__ == "Terminated"
                settle(result.client, result.futures, address, TERMINATED_SETTLE_S if terminated else SETTLE_S)
            raise

    def finish(duration=None):
        start = _STARTING.get(address) if address else None
        try:
            if start is not None:  # a local cluster's workers start in the background: none may
                start.wait()
            state = wait(duration)
        except ConfigError:
            result._state = PipelineState.FAILED
            raise
        except Exception as exc:
            if type(exc).__name__ == "OtherProjectCode":  # made by value on the worker: not our class object
                result._state = PipelineState.FAILED
                raise ConfigError(str(exc)) from None
            if isinstance(exc, KilledWorker):
                result._state = PipelineState.FAILED
                raise WorkersKilled(_killed_message(exc, memory_limit)) from None
            raise
        if start is not None:  # how many of its workers started, for the build's summary
            start.stop()
            if start.started is None and start.settled():
                start.settle()
            result.workers_failed_to_start = start.failures()
        unfinished = [f for f in result.futures if f.status != "finished"]
        if unfinished:
            result._state = PipelineState.FAILED
            where = f"at {address} " if address else ""
            raise SchedulerLost(
                f"the Dask scheduler {where}went away, or the connection to it was lost, before the build's work was "
                f"done ({len(unfinished)} of {len(result.futures)} results {unfinished[0].status}): shards committed "
                "so far are kept; start the scheduler and its workers again (or check the network to it) and run "
                "the build again") from None
        return state

    result.wait_until_finish = wait_until_finish
    return result


def _killed_message(killed, memory_limit: str | None) -> str:
    last = getattr(getattr(killed, "last_worker", None), "address", "?")
    if memory_limit is not None:
        limit, fix = (f"beam.dask.memory_limit: {memory_limit}",
                      "raise beam.dask.memory_limit (auto shares the machine's memory out) or lower "
                      "beam.dask.threads_per_worker")
    else:
        limit, fix = ("each worker's --memory-limit", "give the workers more memory (dask worker --memory-limit) or "
                      "fewer threads (--nthreads)")
    deaths = killed.allowed_failures + 1
    return (f"Dask's workers died {'once' if deaths == 1 else f'{deaths} times'} running the same task of the build (the last "
            f"was {last}): most often a worker's memory passed its limit ({limit}; Dask's nanny ends a worker at "
            f"95% of it, as its log above says); {fix}. Shards committed so far are kept: run the build again")


def _pardo(node, bags: dict, code: dict):
    """The bag of a ParDo: Beam's translation (`transform_evaluator.ParDo.apply`, the same DoFn
    invoker), but each bundle collects its outputs in a receiver of its own (`_bundle`), and each
    side input's elements reach the tasks as one computed value of the graph, not as the bag that
    makes them. A bundle first checks that its worker runs the build's code (`checked_task`): a
    worker that joined the scheduler after the build started was never asked."""
    from apache_beam import DoFn
    from apache_beam.runners.common import DoFnContext, DoFnSignature
    from apache_beam.runners.dask.transform_evaluator import get_windowed_value

    transform = node.transform
    (pcoll,) = node.main_inputs.values()
    window_fn = pcoll.windowing.windowfn if hasattr(pcoll, "windowing") else None
    args, kwargs = transform.args, transform.kwargs  # side inputs as placeholders, with or without the round trip
    invoker_kwargs = dict(context=DoFnContext(transform.label, state=None), input_args=list(args),
                          input_kwargs=kwargs, user_state_context=None,
                          bundle_finalizer_param=DoFn.BundleFinalizerParam())
    specs = [(type(side), side._view_options(), side._window_mapping_fn) for side in node.side_inputs]
    values = [_elements(bags[side.pvalue.producer]) for side in node.side_inputs]
    return bags[pcoll.producer].map(get_windowed_value, window_fn).map_partitions(
        checked_task(code, f"{__name__}:_bundle"), DoFnSignature(transform.fn), window_fn, invoker_kwargs, specs,
        *values)


def _elements(bag):
    """A bag's elements as one value of the graph, depending on the bag's own tasks. (Not a bag
    reduction: an Item that also reaches a consumer of the bag made Dask fuse the bag's tasks into
    both, running every step above the side input twice.)"""
    import dask

    return dask.delayed(_concatenated, pure=True)(bag.to_delayed(optimize_graph=False))


def _concatenated(parts: list) -> list:
    """The side input's partitions (lists of its elements) as one list."""
    return [item for part in parts for item in part]


def _bundle(items, signature, window_fn, invoker_kwargs, specs, *values) -> list:
    """One partition through the DoFn (Beam's `apply_dofn_to_bundle`), its outputs collected in a
    receiver made here, its side inputs made of their computed elements. The outputs are read from
    the receiver after the bundle ends: Beam's function returns a copy of them taken before
    `finish_bundle`, which lost what a DoFn sends there (`group_steps.BatchedProbes`' batches)."""
    from apache_beam.runners.dask.transform_evaluator import apply_dofn_to_bundle, get_windowed_value
    from apache_beam.transforms.sideinputs import SideInputMap

    receivers, handler = _receiving(window_fn)
    side_inputs = [SideInputMap(kind, options, [get_windowed_value(v, side_window_fn) for v in elements])
                   for (kind, options, side_window_fn), elements in zip(specs, values)]
    apply_dofn_to_bundle(items, [signature, handler], dict(invoker_kwargs, side_inputs=side_inputs), receivers)
    return [output.value for output in receivers.values]


def _receiving(window_fn):
    """A bundle's own receiver (Beam's `OneReceiver`, all outputs in its `values`) and the output
    handler that fills it, as Beam's `ParDo.apply` makes them."""
    from apache_beam.runners.common import _OutputHandler
    from apache_beam.runners.dask.transform_evaluator import OneReceiver

    receivers = OneReceiver()
    handler = _OutputHandler(window_fn=window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
                             per_element_output_counter=None, output_batch_converter=None,
                             process_yields_batches=False, process_batch_yields_elements=False)
    return receivers, handler


# The parameters `_pardo` and `_bundle` give Beam's functions, as Beam 2.77 has them (its output
# handler, compiled, is checked by making one: `_receiving`).
BEAM_SIGNATURES = {
    "apache_beam.runners.common.DoFnInvoker.create_invoker": ("signature", "output_handler", "context",
                                                              "side_inputs", "input_args", "input_kwargs",
                                                              "user_state_context", "bundle_finalizer_param"),
    "apache_beam.runners.dask.transform_evaluator.apply_dofn_to_bundle": (
        "items", "do_fn_invoker_args", "do_fn_invoker_kwargs", "tagged_receivers"),
}
BEAM_CHECKED = "2.77."  # the Beam whose DaskRunner the above was read from


def check_beam_shape() -> None:
    """The Beam internals `_pardo` and `_bundle` call must take what they are given: a Beam whose
    DaskRunner or DoFn invoker changed is refused (`runner: dask`, naming what differs and the fix)
    before anything is written; another Beam of the same shape is run with a warning."""
    import inspect

    import apache_beam

    differs = []
    try:
        receivers, _ = _receiving(None)
        if not isinstance(receivers.values, list):
            differs.append("OneReceiver.values is no list")
    except (ImportError, AttributeError, TypeError, KeyError) as exc:
        differs.append(f"a bundle's receiver and output handler cannot be made ({type(exc).__name__}: {exc})")
    for where, names in BEAM_SIGNATURES.items():
        found = _resolved(where)
        if found is None:
            differs.append(f"{where} is missing")
            continue
        try:
            have = inspect.signature(found).parameters
        except (ValueError, TypeError):  # compiled without one: called as it is
            continue
        missing = [name for name in names if name not in have]
        if missing:
            differs.append(f"{where} takes no {', '.join(missing)}")
    version = apache_beam.__version__
    if differs:
        raise ConfigError(f"beam.runner: dask: this build's Dask steps call Beam {BEAM_CHECKED}x's DaskRunner internals, "
                          f"which Beam {version} changed ({'; '.join(differs)}); install the Beam the project pins "
                          "(pip install -e '.[dask]'), or use runner: local")
    if not version.startswith(BEAM_CHECKED):
        log.warning("beam.runner: dask: the build's Dask steps were checked with Beam %sx; this is Beam %s, whose "
                    "DaskRunner internals have the same shape: the build goes on", BEAM_CHECKED, version)


def _resolved(where: str):
    """The object a dotted name names (its longest importable module, then attributes), or None."""
    from importlib import import_module

    parts = where.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            found = import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            found = getattr(found, part, None)
        return found
    return None
