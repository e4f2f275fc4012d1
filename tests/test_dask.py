"""The build on a Dask cluster (Beam's DaskRunner): separate worker processes, no shared memory, a
runner without metrics. The bytes must equal the local runner's, also after a worker is lost
mid-build and Dask re-runs its work."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import distributed  # the dask extra, which `make test` installs
import pytest

from conftest import shard_digests, write_config
from uvd_pipeline.config import ConfigError, load_config


@pytest.mark.parametrize("beam, message", [
    ({"runner": "dask", "dask": {"memory_limit": "lots"}}, "beam.dask.memory_limit"),
    ({"runner": "dask", "dask": {"address": "scheduler"}}, "beam.dask.address"),
    ({"runner": "dask", "dask": {"workers": 0}}, "beam.dask.workers"),
    ({"dask": {"workers": 2}}, "read only with runner: dask"),
    ({"runner": "DaskRunner"}, "write runner: dask"),
    # Beam's own flag: the build started a local cluster beside it, never checked it, and died in
    # distributed's traceback where nothing answered there
    ({"runner": "dask", "options": ["--dask_client_address=tcp://127.0.0.1:1"]}, r"beam\.options.*beam\.dask\.address"),
])
def test_dask_config_fails_early_naming_the_field(beam, message, tmp_path):
    path = write_config(tmp_path / "c.yaml", tmp_path, tmp_path / "out", "embedded", **beam)  # nothing is read
    with pytest.raises(ConfigError, match=message):
        load_config(str(path))


def _with_flags(path: Path, *flags: str):
    """The config `uvd build PATH FLAGS` runs (the CLI's own parsing and overrides)."""
    from uvd_pipeline.cli import build_overrides, parser

    return load_config(str(path), build_overrides(parser().parse_args(["build", str(path), *flags])))


def test_dask_options_and_cli_runner_override(tmp_path):
    from uvd_pipeline.build import pipeline_options

    path = write_config(tmp_path / "c.yaml", tmp_path, tmp_path / "out", "embedded")
    config = load_config(str(path))
    dask = _with_flags(path, "--runner", "dask")
    assert dask.beam.is_dask and not dask.beam.local
    assert dask.beam.dask_settings.workers == 2 and dask.beam.dask_settings.memory_limit == "auto"
    from apache_beam.runners.dask.dask_runner import DaskOptions

    options = pipeline_options(dask, dask_address="tcp://127.0.0.1:8786").view_as(DaskOptions)
    assert options.address == "tcp://127.0.0.1:8786" and options.partition_size == 1
    assert dask.content_hash() == config.content_hash()  # the runner never changes what is built


def test_cli_runner_is_set_before_the_set_options_are_judged(tmp_path):
    """`--runner` was applied after the file and its --set options were validated: `--runner dask
    --set beam.dask.workers=1` was refused as if the runner were DirectRunner. Now the runner comes
    first; a file's beam.dask section is dropped for another runner, a --set of one refused."""
    path = write_config(tmp_path / "c.yaml", tmp_path, tmp_path / "out", "embedded")
    one = _with_flags(path, "--runner", "dask", "--set", "beam.dask.workers=1")
    assert one.beam.is_dask and one.beam.dask_settings.workers == 1
    on_dask = write_config(tmp_path / "d.yaml", tmp_path, tmp_path / "out", "embedded", runner="dask",
                           dask={"workers": 3})
    assert _with_flags(on_dask, "--runner", "DirectRunner").beam.dask is None
    assert _with_flags(on_dask, "--runner", "dask").beam.dask_settings.workers == 3
    with pytest.raises(ConfigError, match="dask: is read only with runner: dask"):
        _with_flags(path, "--runner", "DirectRunner", "--set", "beam.dask.workers=1")
    with pytest.raises(ConfigError, match="--set beam.runner and a flag both set beam.runner"):
        _with_flags(path, "--runner", "dask", "--set", "beam.runner=dask")


@pytest.mark.parametrize("dask, groupings", [
    ({"workers": 2, "threads_per_worker": 1}, 2),
    ({"workers": 3, "threads_per_worker": 2}, 6),
    ({"address": "tcp://10.0.0.5:8786"}, 8),
    ({"workers": 2, "shuffle_partitions": 5}, 5),
    ({"workers": 8, "threads_per_worker": 8}, 64),
    ({"workers": 256, "threads_per_worker": 64}, 64),  # was 16,384: past the field's own le=4096
    ({"workers": 256, "threads_per_worker": 64, "shuffle_partitions": 4096}, 4096),
])
def test_dask_groupings_default_to_the_local_clusters_threads(dask, groupings, tmp_path):
    """Every grouping of a 2-thread local cluster shuffled 8 partitions: n x n split tasks each, 272
    of a 300-image build's 583 tasks, each a scheduler round trip while both workers waited. Left
    out, `shuffle_partitions` is now the local cluster's threads (8 on a given scheduler, whose
    threads are not known before it runs), at most 64 (256 workers x 64 threads made 16,384, past
    the field's own limit of 4096: 16,384^2 split tasks a grouping); set, it is as set."""
    from uvd_pipeline.build import make_runner

    config = load_config(str(write_config(tmp_path / "c.yaml", tmp_path, tmp_path / "out", "embedded",
                                          runner="dask", dask=dask)))
    assert make_runner(config, None).shuffle_partitions == groupings


def _check_summary_without_metrics(summary: dict, reference: dict) -> None:
    assert summary["totals"] == reference["totals"]
    assert summary["tokens"]["sources"] == reference["tokens"]["sources"]
    run = summary["run"]
    assert run["runner"] == "dask" and run["counters"] == {} and run["stages"] == {}
    assert run["metrics"]["reported"] is False
    assert any(item.startswith("distributions") for item in run["metrics"]["not_reported"])


class _KillOneWorker(threading.Thread):
    """Once the build commits a rendered shard (one more than the output held when the killer was
    made: a rerun starts with those of the run it resumes), SIGKILLs the process of a worker that
    is busy."""

    def __init__(self, address: str, output: Path, wait_s: float = 240) -> None:
        super().__init__(daemon=True)
        self.address, self.output, self.wait_s = address, output, wait_s
        self.killed: str | None = None
        self.lost_tasks = 0  # tasks the scheduler had given the killed worker: they must run again
        self.committed_at_start = self.committed()
        self.committed_at_kill: tuple[int, int] | None = None
        self.error: BaseException | None = None

    def committed(self) -> tuple[int, int]:
        return (len(list((self.output / "rendered").rglob("*.stats.json"))),
                len(list((self.output / "tokens").rglob("*.stats.json"))))

    def run(self) -> None:
        try:
            with distributed.Client(self.address) as client:
                deadline = time.time() + self.wait_s
                while time.time() < deadline and self.committed()[0] <= self.committed_at_start[0]:
                    time.sleep(0.02)
                busy: dict = {}
                while time.time() < deadline and not busy:
                    busy = {w: tasks for w, tasks in client.processing().items() if tasks}
                    time.sleep(0.01)
                pids = client.run(os.getpid)
                self.committed_at_kill = self.committed()
                self.killed = sorted(busy)[0]
                self.lost_tasks = len(busy[self.killed])
                os.kill(pids[self.killed], signal.SIGKILL)
        except BaseException as exc:  # surfaced by the test
            self.error = exc


def _silent_listener():
    """A TCP port that accepts connections and never answers (a scheduler host's firewall that
    swallows packets looks the same to a client: nothing comes back)."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


@pytest.mark.parametrize("listening", [False, True], ids=["refused", "silent"])
def test_dask_address_that_does_not_answer_fails_early_naming_the_field(listening, tmp_path, monkeypatch):
    """A scheduler address where no scheduler answers is refused in seconds, before the output is
    touched, by a message naming `beam.dask.address` (Beam's runner retried for 30 s once the
    graph was built and the output prepared, then died in a chained OSError traceback)."""
    from uvd_pipeline import dask_cluster
    from uvd_pipeline.build import run_build

    monkeypatch.setattr(dask_cluster, "ANSWER_TIMEOUT_S", 1.0)  # the same path, a shorter wait
    sock = _silent_listener()
    port = sock.getsockname()[1]
    if not listening:
        sock.close()  # nothing listens there now: connections are refused
    out = tmp_path / "out"
    path = write_config(tmp_path / "c.yaml", tmp_path, out, "embedded", runner="dask",  # nothing is read
                        dask={"address": f"tcp://127.0.0.1:{port}"})
    path.write_text(path.read_text().replace("compile: false", "compile: false\n  enabled: false"))
    config = load_config(str(path))
    assert not config.tokenizer.enabled
    started = time.perf_counter()
    try:
        with pytest.raises(ConfigError, match=r"beam\.dask\.address.*127\.0\.0\.1:%d.*dask scheduler" % port):
            run_build(config)
    finally:
        sock.close()
    assert time.perf_counter() - started < 5
    assert not out.exists()  # refused before the output was prepared


@pytest.mark.parametrize("address, why", [("tcp://127.0.0.1:{port}", "ConnectionRefusedError"),
                                          ("tcp://no-such-host.invalid:8786", "gaierror")], ids=["refused", "unknown host"])
def test_a_refused_or_unknown_scheduler_address_fails_at_once_saying_why(address, why):
    """A port where nothing listens, or a host name no resolver knows, took the whole 5 s wait and
    was said as "TimeoutError" (distributed's connect retries both until its timeout); both are
    known at once, and the message now says which."""
    from uvd_pipeline.dask_cluster import check_address

    sock = _silent_listener()
    address = address.format(port=sock.getsockname()[1])
    sock.close()  # nothing listens there now
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"beam\.dask\.address: no Dask scheduler answers at .*\(%s" % why):
        check_address(address)
    assert time.perf_counter() - started < 2.5  # not the 5 s wait


def _noted(item: tuple[int, int], folder: str) -> tuple[int, int]:
    """The item, leaving a file per run of this step."""
    import uuid

    (Path(folder) / f"{item[0]}-{uuid.uuid4().hex}").touch()
    return item


def _looked_up(x: int, table: dict[int, int]) -> str:
    return f"{x}={table[x % 4]}"


class _GraphsSubmitted:
    """Counts graphs submitted to the scheduler (`update_graph`): the build's one, plus one per
    compute that a task starts from inside a worker."""

    name = "graphs-submitted"

    def __init__(self) -> None:
        self.graphs = 0

    def update_graph(self, scheduler, **kwargs) -> None:
        self.graphs += 1


def test_dask_side_input_is_part_of_the_graph_and_computed_once(tmp_path, monkeypatch):
    """Beam's DaskRunner hands a side input to its consumer as the producing bag itself, which each
    consumer task computed again from inside the task: a graph submitted from a worker per task (14
    in a 13-shard build, with 133 scheduler warnings of conflicting specs for the same keys, which
    "can cause failures and deadlocks"), and every step above the side input ran again. The bounded
    runner makes each side input one value of the build's graph that the consumer's tasks depend
    on: one graph, each step above it runs once, and the looked-up values are right. The build runs
    the graph as built, without Beam's test of its round trip through protos (0.22 CPU-s of the
    build's process), which had also turned each side input argument into a placeholder: the DoFn
    was given the AsDict object itself ("'AsDict' object is not subscriptable")."""
    import apache_beam as beam
    from distributed.diagnostics.plugin import SchedulerPlugin

    from uvd_pipeline.beam_options import ViewCachingOptions
    from uvd_pipeline.build import run_pipeline
    from uvd_pipeline.dask_cluster import bounded_dask_runner

    def no_round_trip(*args, **kwargs):
        raise AssertionError("the graph was rebuilt from its protos")

    monkeypatch.setattr(beam.Pipeline, "from_runner_api", no_round_trip)

    runs, looked_up = tmp_path / "runs", tmp_path / "looked_up"
    runs.mkdir()
    looked_up.mkdir()
    counter = type("Counter", (_GraphsSubmitted, SchedulerPlugin), {})()
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster:
        cluster.scheduler.add_plugin(counter)
        options = ViewCachingOptions([f"--dask_client_address={cluster.scheduler_address}", "--dask_partition_size=1"])
        pipeline = beam.Pipeline(runner=bounded_dask_runner(2), options=options)
        table = (pipeline | "Table" >> beam.Create([(i, i * i) for i in range(4)])
                 | "Noted" >> beam.Map(_noted, str(runs)))
        # the table is also a main input of the step (as the build's items reach their writer)
        ((pipeline | "Main" >> beam.Create(range(12)), table | "Keys" >> beam.Keys()) | beam.Flatten()
         | "Look up" >> beam.Map(_looked_up, beam.pvalue.AsDict(table))
         | "Write" >> beam.Map(lambda name, folder: (Path(folder) / name).touch(), str(looked_up)))
        run_pipeline(pipeline)  # as the build runs it
    assert sorted(p.name for p in looked_up.iterdir()) == sorted(f"{x}={(x % 4) ** 2}" for x in range(12))
    assert counter.graphs == 1
    assert sorted(p.name.split("-")[0] for p in runs.iterdir()) == ["0", "1", "2", "3"]


def test_local_cluster_leaves_the_dashboard_port_alone(caplog):
    """The build's own cluster serves its HTTP pages (dashboard, health) on a free loopback port:
    with `dashboard_address=None` distributed still bound 8787, the port a person's own Dask
    dashboard uses (a build beside it warned "Port 8787 is already in use. Perhaps you already have
    a cluster running?", and a build that took it first pushed theirs aside)."""
    import logging
    import socket
    import warnings

    from uvd_pipeline.config import DaskConfig
    from uvd_pipeline.dask_cluster import scheduler

    held = socket.socket()
    try:
        held.bind(("127.0.0.1", 8787))  # as a dashboard of the person's own would
        held.listen(1)
    except OSError:
        pass  # taken already: the same case
    caplog.set_level(logging.INFO, logger="uvd_pipeline.dask_cluster")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with scheduler(DaskConfig(workers=1)) as address:
                with distributed.Client(address) as client:
                    port = client.scheduler_info()["services"]["dashboard"]
    finally:
        held.close()
    assert port != 8787
    assert not [w for w in caught if "already in use" in str(w.message)]
    assert f"127.0.0.1:{port}" in caplog.text  # the log names where its pages are


def _monitoring(server) -> dict:
    """What a worker or scheduler samples and how often (ms): stack profiler, host monitor, tick."""
    callbacks = server.periodic_callbacks
    return {name: callbacks[name].callback_time if name in callbacks else None for name in ("profile", "monitor", "tick")}


def test_the_build_cluster_does_not_profile_its_tasks_or_poll_the_host_often():
    """distributed's defaults sample the stacks of the threads running tasks every 10 ms (for a
    dashboard page nobody opens during a build), measure the host every 0.5 s and tick the event
    loop every 20 ms, in the scheduler, each nanny and each worker: 2 of 13.6 CPU-s of a
    300-image build at load 12. The build's own cluster turns the profiler off and polls less;
    the memory limit is watched as often as before; Dask's config is as it was after the build."""
    import dask

    from uvd_pipeline.config import DaskConfig
    from uvd_pipeline.dask_cluster import scheduler

    before = dask.config.get("distributed")
    with scheduler(DaskConfig(workers=1)) as address:
        with distributed.Client(address) as client:
            client.wait_for_workers(1, timeout=120)
            (worker,) = client.run(lambda dask_worker: _monitoring(dask_worker)).values()
            memory = client.run(lambda dask_worker: dask_worker.periodic_callbacks["memory_monitor"].callback_time)
            on_scheduler = client.run_on_scheduler(lambda dask_scheduler: _monitoring(dask_scheduler))
    assert worker == {"profile": None, "monitor": 2000, "tick": 200}, worker
    assert on_scheduler["monitor"] == 2000 and on_scheduler["tick"] == 200, on_scheduler
    assert list(memory.values()) == [100]
    assert dask.config.get("distributed") == before


def test_the_build_cluster_keeps_the_users_own_dask_settings(monkeypatch):
    """A user who set how often Dask polls (in a config file, an environment variable or in code),
    or turned the profiler on by name, keeps that on the build's own cluster: only settings left
    at distributed's defaults are made quieter."""
    import dask

    from uvd_pipeline.config import DaskConfig
    from uvd_pipeline.dask_cluster import scheduler

    monkeypatch.setenv("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED", "True")  # distributed's default, but said
    with dask.config.set({"distributed.admin.tick.interval": "50ms", "distributed.admin.system-monitor.interval": "1s"}):
        with scheduler(DaskConfig(workers=1)) as address:
            with distributed.Client(address) as client:
                client.wait_for_workers(1, timeout=120)
                (worker,) = client.run(lambda dask_worker: _monitoring(dask_worker)).values()
    assert worker["profile"] is not None and (worker["monitor"], worker["tick"]) == (1000, 50), worker


# What distributed's nanny writes into its own process's environment as it starts a worker process
NANNY_WRITES = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "PYTHONHASHSEED", "__DASK_PARENT_PID")


def test_the_build_cluster_gives_back_the_callers_environment(monkeypatch):
    """distributed's nannies wrote MALLOC_TRIM_THRESHOLD_=65536, OMP/MKL/OPENBLAS_NUM_THREADS=1,
    PYTHONHASHSEED=6640 and __DASK_PARENT_PID into the build's process and left them there: a
    program that ran a Dask build had them afterwards, and so every process it started. The
    workers still get them, also one that the nanny starts again after its worker was killed;
    after the cluster the caller's environment is as it was, but for what the caller itself set
    meanwhile (MKL_NUM_THREADS here), and its own value (OMP_NUM_THREADS=3) reaches the workers."""
    from uvd_pipeline.config import DaskConfig
    from uvd_pipeline.dask_cluster import scheduler

    for name in NANNY_WRITES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    before = dict(os.environ)
    with scheduler(DaskConfig(workers=1)) as address:
        with distributed.Client(address) as client:
            client.wait_for_workers(1, timeout=120)
            (first,) = client.run(lambda: {name: os.environ.get(name) for name in NANNY_WRITES}).values()
            (killed, pid), = client.run(os.getpid).items()
            os.kill(pid, signal.SIGKILL)
            deadline = time.time() + 120
            answers: dict = {}
            # the restarted worker is listed before it answers: a run on it until it does (a worker
            # listed but not yet serving returned no answer once in the full suite, and reset the
            # connection once on a loaded machine: CommClosedError)
            while time.time() < deadline and len(answers) != 1:
                new = sorted(set(client.scheduler_info()["workers"]) - {killed})
                try:
                    answers = client.run(lambda: {name: os.environ.get(name) for name in NANNY_WRITES},
                                         workers=new) if new else {}
                except OSError:  # distributed.comm.core.CommClosedError is one
                    answers = {}
                time.sleep(0.1)
            (again,) = answers.values()
        monkeypatch.setenv("MKL_NUM_THREADS", "2")  # the caller's own, set while the cluster lives
    assert first["MALLOC_TRIM_THRESHOLD_"] == "65536" and first["PYTHONHASHSEED"] == "6640", first
    assert first["OMP_NUM_THREADS"] == "3" and first["MKL_NUM_THREADS"] == "1", first
    assert {k: v for k, v in again.items() if k != "__DASK_PARENT_PID"} == \
        {k: v for k, v in first.items() if k != "__DASK_PARENT_PID"}, again
    assert dict(os.environ) == dict(before, MKL_NUM_THREADS="2")


def test_two_local_clusters_side_by_side_give_the_environment_back_when_the_last_closes(monkeypatch):
    """Two builds in threads of one program, each with its own local cluster: the first to end
    must not take back what the other's nannies still need for a worker they start again; the
    last to end gives back the caller's environment, but not a variable the program set itself."""
    from uvd_pipeline.dask_environ import callers_environment_kept, note_nanny_writes

    for name in NANNY_WRITES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    before = dict(os.environ)
    first, second = callers_environment_kept(), callers_environment_kept()
    first.__enter__()
    note_nanny_writes({"MALLOC_TRIM_THRESHOLD_": "65536", "OMP_NUM_THREADS": "4", "PYTHONHASHSEED": "6640"})
    os.environ.update(MALLOC_TRIM_THRESHOLD_="65536", PYTHONHASHSEED="6640", __DASK_PARENT_PID=str(os.getpid()))
    second.__enter__()
    first.__exit__(None, None, None)
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536" and os.environ["PYTHONHASHSEED"] == "6640"
    monkeypatch.setenv("PYTHONHASHSEED", "1")  # the program's own, set while the second cluster lives
    second.__exit__(None, None, None)
    assert dict(os.environ) == dict(before, PYTHONHASHSEED="1")


def test_a_value_the_program_set_while_a_cluster_lived_stays_when_a_second_nanny_copies_it(monkeypatch):
    """A nanny reads its variables from the environment as it is made: the program set
    `OMP_NUM_THREADS=4` while cluster A lived, then cluster B's nanny copied that 4. It was noted as
    a nanny's write and deleted when the last cluster closed (the review's side-by-side proof):
    only a value the environment does not already hold is a write."""
    from uvd_pipeline.dask_environ import callers_environment_kept, note_nanny_writes

    for name in NANNY_WRITES:
        monkeypatch.delenv(name, raising=False)
    before = dict(os.environ)
    first, second = callers_environment_kept(), callers_environment_kept()
    first.__enter__()
    note_nanny_writes({"OMP_NUM_THREADS": "1"})
    os.environ.update(OMP_NUM_THREADS="1", __DASK_PARENT_PID=str(os.getpid()))
    os.environ["OMP_NUM_THREADS"] = "4"  # the program's own
    second.__enter__()
    note_nanny_writes({"OMP_NUM_THREADS": "4"})  # B's nanny read the program's value
    first.__exit__(None, None, None)
    second.__exit__(None, None, None)
    assert dict(os.environ) == dict(before, OMP_NUM_THREADS="4")


def test_a_build_workers_imports_run_without_the_cyclic_collector_and_stay_frozen():
    """A worker of the build's cluster imports Beam and the build's steps (~1,900 modules) before
    it joins; the cyclic collector scanned their objects again and again as they piled up (371
    young, 33 middle, 3 full collections a worker; 0.22 of its 1.35 CPU-s to join at load 15).
    Now none runs during those imports, what they made is frozen, and the collector is on after,
    as before, for the tasks' garbage. (A fresh interpreter, as a worker process is.)"""
    import subprocess
    import sys

    from conftest import REPO

    probe = ("import gc, json\n"
             "from uvd_pipeline.dask_worker import import_ahead\n"
             "before = [s['collections'] for s in gc.get_stats()]\n"
             "import_ahead(('apache_beam', 'uvd_pipeline.graph'))\n"
             "after = [s['collections'] for s in gc.get_stats()]\n"
             "import sys\n"
             "print(json.dumps({'collections': [a - b for a, b in zip(after, before)], 'frozen': gc.get_freeze_count(),\n"
             "                  'enabled': gc.isenabled(), 'graph': 'uvd_pipeline.graph' in sys.modules}))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["graph"] and seen["enabled"], seen
    assert seen["collections"] == [0, 0, 0] and seen["frozen"] > 100_000, seen


@pytest.mark.parametrize("verbose", [False, True])
def test_the_command_line_keeps_dasks_chatter_out_unless_verbose(verbose):
    """Importing distributed sets its loggers to INFO (whatever the command set before): a Dask
    build's log had 30 lines of the scheduler's and nannies' comings and goings among its progress
    lines. The command keeps distributed's warnings, and --verbose all of it."""
    import subprocess
    import sys

    from conftest import REPO

    code = ("import logging, sys; from uvd_pipeline.cli import _setup_logging; _setup_logging(sys.argv[1] == 'v'); "
            "import distributed; logging.getLogger('distributed.scheduler').info('chatter'); "
            "logging.getLogger('distributed.nanny').warning('a warning'); logging.getLogger('uvd').info('our line')")
    env = dict(os.environ)
    env.pop("DASK_LOGGING__DISTRIBUTED", None)
    done = subprocess.run([sys.executable, "-c", code, "v" if verbose else "q"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "our line" in done.stderr and "a warning" in done.stderr
    assert ("chatter" in done.stderr) == verbose


@pytest.mark.parametrize("error", [AttributeError("a bug of ours"), KeyboardInterrupt()], ids=["bug", "interrupt"])
def test_a_bug_or_an_interrupt_in_the_scheduler_probe_is_not_called_unreachable(error, monkeypatch):
    """The probe caught every Exception as 'no Dask scheduler answers': a programming error there
    (an AttributeError after an API change of distributed, say) sent the user to start a scheduler
    that is running. Only what an unreachable address raises (OSError, ValueError) is that; the
    rest keeps its traceback, and Ctrl-C stays an interrupt."""
    from uvd_pipeline import dask_cluster

    async def probe(*args) -> dict:
        raise error

    monkeypatch.setattr(dask_cluster, "_identity", probe)
    with pytest.raises(type(error)):
        dask_cluster.check_address("tcp://127.0.0.1:8786", timeout=1)


def _tls_settings(security, folder: Path) -> dict[str, str]:
    """Dask config settings of a client with `security`'s temporary certificates, written to files
    as a cluster's operator hands them out."""
    files = {"ca-file": security.tls_ca_file, "client.cert": security.tls_client_cert,
             "client.key": security.tls_client_key}
    settings = {}
    for name, pem in files.items():
        path = folder / f"{name}.pem"
        path.write_text(pem)
        settings[f"distributed.comm.tls.{name}"] = str(path)
    return settings


def test_a_tls_scheduler_is_probed_with_the_tls_settings_a_client_uses(tmp_path):
    """A scheduler on tls:// (certificates in Dask's config, the way any Dask client, and so Beam's
    runner's, finds them) was refused as 'no Dask scheduler answers ... TypeError: TLS expects a
    ssl_context': the probe connected without the config's security. Now it answers; without TLS
    settings the error names them."""
    import dask
    from distributed.security import Security

    from uvd_pipeline.dask_cluster import check_address

    security = Security.temporary()
    with distributed.LocalCluster(n_workers=0, processes=False, security=security, protocol="tls://",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://")
        with pytest.raises(ConfigError, match=r"beam\.dask\.address: .* TLS address .*distributed\.comm\.tls\.ca-file"):
            check_address(address, timeout=2)
        with dask.config.set(_tls_settings(security, tmp_path)):
            check_address(address, timeout=2)
            with distributed.Client(address) as client:  # the build's client reaches it with the same settings
                assert client.scheduler_info()["type"] == "Scheduler"


class _SlowToFree:
    """Stands in for what a worker of a build holds when it ends (Beam, torch, their objects):
    freeing it at the interpreter's teardown takes seconds."""

    def __del__(self) -> None:
        time.sleep(6)


def _work_of_a_build_worker() -> int:
    """A task: Beam's import warning on the root logger (as `import apache_beam` logs it where
    Google's apitools is missing), and something slow to free left in the process."""
    import logging
    import sys

    logging.warning("apitools not found, and bigquery client libraries are not available despite the import "
                    "not raising an ImportError.")
    sys.modules[__name__]._held = _SlowToFree()
    return os.getpid()


def test_the_build_cluster_workers_keep_beams_import_warning_out_and_end_at_once(capfd):
    """Each worker of a local Dask build printed Beam's "apitools not found" warning among the
    progress lines, and closing the cluster waited for the workers to free every module (3-4 s
    with Beam and torch on a busy 2-core machine), until the nanny killed them: "Worker process
    still alive after 4.0 seconds, killing". Now a worker closed by the cluster ends at once,
    after its exit functions; the warning is filtered as in the command's own log."""
    from uvd_pipeline.config import DaskConfig
    from uvd_pipeline.dask_cluster import scheduler

    with scheduler(DaskConfig(workers=1)) as address:
        with distributed.Client(address) as client:
            pid = client.submit(_work_of_a_build_worker, pure=False).result()
        started = time.perf_counter()
    closing = time.perf_counter() - started
    err = capfd.readouterr().err
    assert "apitools" not in err and "still alive" not in err, err
    assert closing < 3, f"closing the cluster took {closing:.1f} s"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the worker process is gone


def test_ctrl_c_leaves_the_build_clusters_workers_to_the_build(capfd):
    """Ctrl-C in a terminal reaches every process of its group: each worker of the build's local
    cluster died of the KeyboardInterrupt mid-task, printing 144 lines of tracebacks (theirs and
    their heartbeats') above the command's one "interrupted:" line. The build's process owns
    Ctrl-C and closes the cluster, which ends its workers: they now leave SIGINT alone."""
    from uvd_pipeline.config import DaskConfig
    from uvd_pipeline.dask_cluster import scheduler

    with scheduler(DaskConfig(workers=1)) as address:
        with distributed.Client(address) as client:
            client.wait_for_workers(1, timeout=60)
            (pid,) = client.run(os.getpid).values()
            os.kill(pid, signal.SIGINT)
            time.sleep(1)
            assert list(client.run(os.getpid).values()) == [pid]  # the same worker, alive and answering
    err = capfd.readouterr().err
    assert "KeyboardInterrupt" not in err, err


def test_a_worker_whose_closing_fails_after_the_cluster_closed_it_ends_non_zero(capfd):
    """A worker the cluster closed ended with `os._exit(0)` at its last exit function: a step of
    its closing that failed after that (the process's target raising: status 1), or an exit
    function that failed (the build's decode workers not stopping), still ended with status 0,
    so the nanny saw a clean end. Now such a worker ends with status 1 and one line saying why;
    a clean one still ends at once with 0. Real spawned processes, as the nanny starts them."""
    import multiprocessing

    from dask_worker_ends import closed_by_the_cluster

    context = multiprocessing.get_context("spawn")
    ends = {then: context.Process(target=closed_by_the_cluster, args=(then,))
            for then in ("nothing", "step", "exit function")}
    for process in ends.values():
        process.start()
    for process in ends.values():
        process.join(30)
    assert {then: p.exitcode for then, p in ends.items()} == {"nothing": 0, "step": 1, "exit function": 1}
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("uvd build worker")]
    assert sorted(lines) == sorted(
        [f"uvd build worker {ends['step'].pid}: closing failed after the cluster closed it (RuntimeError: "
         "closing the worker's connections failed); exit status 1",
         f"uvd build worker {ends['exit function'].pid}: closing failed after the cluster closed it (RuntimeError: "
         "the decode workers did not stop); exit status 1"]), lines


def test_a_given_scheduler_left_without_workers_is_named_while_the_build_waits(caplog):
    """A user's scheduler whose only worker died: Dask waits for workers to come back, and the
    build sat at its last progress line without a word. The watch says so, naming
    `beam.dask.address` and what to do, once, and says when workers are back."""
    import time

    import distributed

    from uvd_pipeline.dask_cluster import WorkerWatch

    def said(text: str) -> bool:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if text in caplog.text:
                return True
            time.sleep(0.05)
        return False

    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster:
        with caplog.at_level("INFO", logger="uvd_pipeline.dask_cluster"):
            with WorkerWatch(cluster.scheduler_address, interval=0.1):
                assert said("has no workers left"), caplog.text
                assert "beam.dask.address" in caplog.text and f"dask worker {cluster.scheduler_address}" in caplog.text
                cluster.scale(1)
                assert said("has workers again (1)"), caplog.text
    assert caplog.text.count("has no workers left") == 1


_GROUPING_IN_A_FRESH_CLIENT = """
import sys
import apache_beam as beam
import distributed
from uvd_pipeline.beam_options import ViewCachingOptions
from uvd_pipeline.dask_cluster import bounded_dask_runner

# a worker process, as the build's (Beam's ParDo collects a bundle's outputs in one object, which
# the tasks of an in-process worker share: their outputs piled up)
with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
    options = ViewCachingOptions([f"--dask_client_address={cluster.scheduler_address}", "--dask_partition_size=1"])
    pipeline = beam.Pipeline(runner=bounded_dask_runner(2), options=options)
    (pipeline | beam.Create([(i % 3, i) for i in range(9)]) | beam.GroupByKey()
     | beam.Map(lambda kv, folder: open(f"{folder}/{kv[0]}-{sum(kv[1])}", "w").close(), sys.argv[1]))
    result = pipeline.run()
    try:
        result.wait_until_finish()
    finally:
        result.client.close()
print(sorted(m for m in sys.modules if m.startswith(("dask.dataframe", "dask.array", "pandas"))))
"""


def test_dask_groupings_shuffle_in_tasks_without_importing_dask_dataframe(tmp_path):
    """Beam's GroupByKey asks Dask's bag for its default shuffle, which tried dask.dataframe (and
    imported dask.array: 0.4 CPU-s of the client, 2.7 s of wall time at load 12, 2.9 s of a
    300-image build's client at load 7 by cProfile, before the first task was submitted) only to
    answer "tasks" (bags have no p2p shuffle). Groupings now shuffle in tasks without asking; the
    groups are right and the client imports no dataframe or array code."""
    import subprocess
    import sys

    from conftest import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    done = subprocess.run([sys.executable, "-c", _GROUPING_IN_A_FRESH_CLIENT, str(tmp_path)],
                          env=dict(env, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0-9", "1-12", "2-15"]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def _slow_step(x: int, folder: str) -> int:
    """A step that takes a while per element, leaving a file when it starts."""
    (Path(folder) / f"{x}").touch()
    time.sleep(1)
    return x


def _slow_marked_step(x: int, folder: str) -> int:
    """A step of 2 s per element, leaving a file `<x>.start` when it starts and `<x>.end` when it
    ends: what a task that commits at its end leaves behind."""
    (Path(folder) / f"{x}.start").touch()
    time.sleep(2)
    (Path(folder) / f"{x}.end").touch()
    return x


def _cli_cluster(folder: Path, workers: int = 1, project: list[Path] | None = None,
                 threads: int = 1, nanny: bool = False) -> tuple[str, list]:
    """`dask scheduler` and `dask worker` processes, as a person starts them (each worker imports the
    project and this test module by its PYTHONPATH: `project[i]` for worker i, else this checkout;
    each runs `threads` threads, under a nanny that starts it again where it dies, with `nanny`);
    (scheduler address, [scheduler, workers...])."""
    import subprocess
    import sys

    from conftest import REPO

    bin_dir = Path(sys.executable).parent
    project = project or [REPO] * workers
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'tests'}")
    file = folder / "scheduler.json"
    log = open(folder / "cluster.log", "w")
    processes = [subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                   "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(file)],
                                  env=env, stdout=log, stderr=log)]
    processes += [subprocess.Popen([str(bin_dir / "dask"), "worker", "--scheduler-file", str(file), "--nthreads", str(threads),
                                    "--nanny" if nanny else "--no-nanny", "--name", f"w{i}"],
                                   env=dict(env, PYTHONPATH=f"{project[i]}{os.pathsep}{REPO / 'tests'}"),
                                   stdout=log, stderr=log) for i in range(workers)]
    deadline = time.monotonic() + 60
    while not file.exists() or not file.read_text().strip():
        assert time.monotonic() < deadline, (folder / "cluster.log").read_text()
        time.sleep(0.1)
    address = json.loads(file.read_text())["address"]
    with distributed.Client(address, timeout=60) as client:
        client.wait_for_workers(workers, timeout=60)
    return address, processes


def _slow_run_started(address: str, started: Path, count: int, step=_slow_step):
    """A run of `count` slow steps (`_slow_step`, each leaving a file in `started`) on the
    scheduler at `address`, one element a partition; its result, once its first step has begun."""
    import apache_beam as beam

    from uvd_pipeline.beam_options import ViewCachingOptions
    from uvd_pipeline.dask_cluster import bounded_dask_runner

    started.mkdir()
    options = ViewCachingOptions([f"--dask_client_address={address}", "--dask_partition_size=1"])
    pipeline = beam.Pipeline(runner=bounded_dask_runner(2), options=options)
    pipeline | beam.Create(range(count)) | beam.Map(step, str(started))
    result = pipeline.run()
    deadline = time.monotonic() + 60
    while not any(started.iterdir()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return result


def test_an_interrupted_run_on_a_given_scheduler_ends_its_running_tasks_before_it_returns(tmp_path, caplog):
    """Ctrl-C on a build on a given scheduler (hunt54e H2): the build closed its client and
    released the output's lock while the workers still ran its tasks, which then committed into
    the output, even into a fresh `--overwrite --no-tokenize` build of it (2 token shards of the
    stopped build, called intact). Now the interrupted run cancels its tasks and returns only once
    no worker runs one: every step that started has ended, and no other starts after."""

    address, processes = _cli_cluster(tmp_path)
    started = tmp_path / "started"
    try:
        result = _slow_run_started(address, started, 8, step=_slow_marked_step)

        def interrupt(*_) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, 0.3)  # inside the run's wait, a step running
        try:
            with caplog.at_level(logging.INFO, logger="uvd_pipeline.dask_settle"):
                with pytest.raises(KeyboardInterrupt):
                    result.wait_until_finish()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        at_return = sorted(p.name for p in started.iterdir())
        time.sleep(3)  # a step still running, or one started after the return, would show by now
        later = sorted(p.name for p in started.iterdir())
        result.client.close()
    finally:
        for process in processes:
            process.kill()
            process.wait()
    starts = {name.split(".")[0] for name in at_return if name.endswith(".start")}
    ends = {name.split(".")[0] for name in at_return if name.endswith(".end")}
    assert starts and starts == ends, at_return
    assert later == at_return, "the run's tasks went on after it returned"
    assert len(starts) < 8
    assert "waiting up to 30 s for its 1 task still running on the Dask workers" in caplog.text, caplog.text


def test_a_run_whose_tasks_outlast_the_wait_names_the_workers_still_running_them(tmp_path, caplog):
    """Where the build's tasks still run once the wait is over (`dask_settle.settle`, here 0.5 s
    against a 2-s step), a warning says they may still write into the output and names the
    workers, rather than the build letting go of the output in silence."""
    from uvd_pipeline.dask_settle import settle

    address, processes = _cli_cluster(tmp_path)
    try:
        result = _slow_run_started(address, tmp_path / "started", 4, step=_slow_marked_step)
        worker, = result.client.scheduler_info()["workers"]
        with caplog.at_level(logging.INFO, logger="uvd_pipeline.dask_settle"):
            settle(result.client, result.futures, address, timeout=0.5)
        result.client.close()
    finally:
        for process in processes:
            process.kill()
            process.wait()
    assert f"the build's 1 task still running on the Dask workers {worker} after 0.5 s" in caplog.text, caplog.text


def test_a_scheduler_that_goes_away_mid_build_fails_the_build_naming_it(tmp_path):
    """`dask scheduler` killed (SIGKILL) while a build ran on it: the client's futures were
    cancelled, Beam's DaskRunner took a cancelled future for a finished one, and the build ended
    with exit status 0, '0 shards' and a summary, as a build with nothing to do (a 300-image build
    on a CLI scheduler and 2 CLI workers). Now the run fails, naming the scheduler and what to do."""
    from uvd_pipeline.dask_cluster import SchedulerLost

    address, processes = _cli_cluster(tmp_path)
    started = tmp_path / "started"
    try:
        result = _slow_run_started(address, started, 8)
        outcome: list = []

        def wait() -> None:
            try:
                outcome.append(result.wait_until_finish())
            except BaseException as exc:  # judged below
                outcome.append(exc)

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        processes[0].kill()  # the scheduler
        waiter.join(120)
        result.client.close()
    finally:
        for process in processes:
            process.kill()
            process.wait()
    assert not waiter.is_alive(), "the run waited on after its scheduler went away"
    (error,) = outcome
    assert isinstance(error, SchedulerLost), error
    assert address in str(error) and "run the build again" in str(error)
    assert len(list(started.iterdir())) < 8  # it went away with work left


@pytest.mark.slow
@pytest.mark.parametrize("change", ["edited", "older"])
def test_a_given_schedulers_worker_with_other_project_code_is_refused_before_the_build(change, tmp_path):
    """A `dask worker` started from another copy of the project (a checkout with a local edit, or an
    older install) rendered its share of the build with its own code: bytes that differed from
    what the same config gives, without a word (a 300-image build on a CLI scheduler, one worker
    with PYTHONPATH elsewhere, ran to the end with status 0). Now the build is refused before
    it writes anything, naming that worker and the fix; workers with this checkout's code pass."""
    import shutil

    from conftest import REPO
    from uvd_pipeline.dask_cluster import check_address

    other = tmp_path / "other-checkout"
    for package in ("uvd_pipeline", "sources", "transforms", "tokenizer"):
        shutil.copytree(REPO / package, other / package, ignore=shutil.ignore_patterns("__pycache__", "weights"))
    if change == "edited":
        with open(other / "uvd_pipeline" / "render_step.py", "a") as handle:
            handle.write("# tried something on this machine\n")
    else:  # a version from before the workers were asked
        (other / "uvd_pipeline" / "code_identity.py").unlink()
    address, processes = _cli_cluster(tmp_path, 2, [REPO, other])
    try:
        with distributed.Client(address) as client:
            names = {info["name"]: worker for worker, info in client.scheduler_info()["workers"].items()}
        with pytest.raises(ConfigError, match=r"beam\.dask\.address: the Dask worker (\S+) of .*") as refused:
            check_address(address)
        message = str(refused.value)
        assert names["w1"] in message and names["w0"] not in message
        # an older copy lacks `code_identity`: refused as unable to run it, or (where an editable
        # install of this checkout lends the worker that module) as another version of the code
        assert ("another version" in message and str(other) in message) if change == "edited" else (
            "ModuleNotFoundError" in message or ("another version" in message and str(other) in message))
        assert "install this project's version there" in message
        processes[2].kill()  # the other copy's worker leaves
        processes[2].wait()
        with distributed.Client(address) as client:
            deadline = time.monotonic() + 60
            while len(client.scheduler_info()["workers"]) != 1:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        check_address(address)  # this checkout's worker passes
    finally:
        for process in processes:
            process.kill()
            process.wait()


def _other_copy(folder: Path) -> Path:
    """A copy of the project's build packages with a local edit, as another checkout holds it."""
    import shutil

    from conftest import REPO

    for package in ("uvd_pipeline", "sources", "transforms", "tokenizer"):
        shutil.copytree(REPO / package, folder / package, ignore=shutil.ignore_patterns("__pycache__"))
    with open(folder / "uvd_pipeline" / "render_step.py", "a") as handle:
        handle.write("# tried something on this machine\n")
    return folder


@pytest.mark.slow
def test_a_worker_with_other_code_that_joins_mid_build_stops_the_build_naming_it(tmp_path):
    """A `dask worker` from another copy of the project that joined the scheduler after the build
    started was never asked which code it runs: it took its share of the tasks and ran them with
    its own code, and the build ended with status 0. Now its first task of the build refuses it,
    naming the worker and the fix, and the build stops (a ConfigError: the command's one error line)."""
    import subprocess
    import sys

    from conftest import REPO

    other = _other_copy(tmp_path / "other-checkout")
    address, processes = _cli_cluster(tmp_path)
    started = tmp_path / "started"
    try:
        result = _slow_run_started(address, started, 16)
        with open(tmp_path / "late.log", "w") as log:  # joins mid-build, with the other copy on its path
            processes.append(subprocess.Popen(
                [str(Path(sys.executable).parent / "dask"), "worker", "--scheduler-file", str(tmp_path / "scheduler.json"),
                 "--nthreads", "1", "--no-nanny", "--name", "late"],
                env=dict(os.environ, PYTHONPATH=f"{other}{os.pathsep}{REPO / 'tests'}"), stdout=log, stderr=log))
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            (late,) = [w for w, info in client.scheduler_info()["workers"].items() if info["name"] == "late"]
        with pytest.raises(ConfigError, match=r"beam\.dask\.address: the Dask worker (\S+) runs another version") as refused:
            result.wait_until_finish()
        result.client.close()
    finally:
        for process in processes:
            process.kill()
            process.wait()
    message = str(refused.value)
    assert late in message and str(other) in message and "install this project's version there" in message
    assert len(list(started.iterdir())) < 16  # stopped with work left


def _keyed(x: int) -> tuple[int, int]:
    time.sleep(0.02)  # so that bundles of one step overlap in a worker's threads
    return x % 3, x


def _group_noted(group: tuple[int, list[int]], largest: list[int], folder: str) -> None:
    """A file per group that reached this step (a uuid apiece: a group given twice leaves two)."""
    import uuid

    key, values = group
    (Path(folder) / f"{key}-{uuid.uuid4().hex}").write_text(f"{key}={','.join(map(str, sorted(values)))};{max(largest)}")


def _groups_on(address: str, folder: Path) -> list[str]:
    """Run a grouping, a step with a side input and a plain step on the cluster at `address`: the
    groups the last step saw, with the side input's largest element."""
    import apache_beam as beam

    from uvd_pipeline.beam_options import ViewCachingOptions
    from uvd_pipeline.dask_cluster import bounded_dask_runner

    folder.mkdir()
    options = ViewCachingOptions([f"--dask_client_address={address}", "--dask_partition_size=1"])
    pipeline = beam.Pipeline(runner=bounded_dask_runner(4), options=options)
    numbers = pipeline | beam.Create(range(12))
    (numbers | beam.Map(_keyed) | beam.GroupByKey()
     | beam.Map(_group_noted, beam.pvalue.AsList(numbers | "Plus one" >> beam.Map(lambda x: x + 1)), str(folder)))
    result = pipeline.run()
    try:
        result.wait_until_finish()
    finally:
        result.client.close()
    return sorted(p.read_text() for p in folder.iterdir())


RIGHT_GROUPS = ["0=0,3,6,9;12", "1=1,4,7,10;12", "2=2,5,8,11;12"]


@pytest.mark.parametrize("threads", [1, 2])
def test_a_grouping_on_an_in_process_cluster_gives_each_group_once(threads, tmp_path):
    """Beam 2.77's DaskRunner collects every bundle's outputs of a step in one receiver made with the
    graph: where tasks share it (a cluster whose workers are threads of the client's process,
    `LocalCluster(processes=False)`, which passes the graph's objects as they are), each bundle
    returned every earlier bundle's outputs too: groups of 94, 120 and 150 elements from 12 numbers
    (with 1 thread; 122, 104, 138 with 2). Each bundle now collects its own."""
    with distributed.LocalCluster(n_workers=1, threads_per_worker=threads, processes=False,
                                  dashboard_address=":0") as cluster:
        assert _groups_on(cluster.scheduler_address, tmp_path / "groups") == RIGHT_GROUPS


def _summing_dofn():
    """A DoFn that sends each bundle's sum in `finish_bundle` (as `group_steps.BatchedProbes` sends
    its last batches)."""
    import apache_beam as beam
    from apache_beam.transforms.window import GlobalWindows

    class SumAtEnd(beam.DoFn):
        def start_bundle(self):
            self.total = 0

        def process(self, x):
            self.total += x
            if x == 0:
                yield "zero seen"

        def finish_bundle(self):
            yield GlobalWindows.windowed_value(("sum", self.total))

    return SumAtEnd()


def test_what_a_dofn_sends_when_its_bundle_ends_reaches_the_next_step(tmp_path):
    """Beam 2.77's `apply_dofn_to_bundle` returns its outputs as they were before `finish_bundle`:
    what a DoFn sends there was lost on Dask (the dedup's batched probes: no near duplicate
    found). Each bundle's outputs are read after it ends now."""
    import apache_beam as beam

    from uvd_pipeline.beam_options import ViewCachingOptions
    from uvd_pipeline.dask_cluster import bounded_dask_runner

    folder = tmp_path / "seen"
    folder.mkdir()
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        options = ViewCachingOptions([f"--dask_client_address={cluster.scheduler_address}", "--dask_partition_size=4"])
        pipeline = beam.Pipeline(runner=bounded_dask_runner(2), options=options)
        (pipeline | beam.Create(range(12)) | beam.ParDo(_summing_dofn())
         | beam.Map(lambda x, f: (Path(f) / repr(x).replace("/", "_")).write_text("") if x != "zero seen"
                    else (Path(f) / "zero").write_text(""), str(folder)))
        result = pipeline.run()
        try:
            result.wait_until_finish()
        finally:
            result.client.close()
    sums = sorted(int(p.name.split(", ")[1].rstrip(")")) for p in folder.iterdir() if p.name.startswith("("))
    assert (folder / "zero").exists() and sums and sum(sums) == sum(range(12)), sorted(os.listdir(folder))


@pytest.mark.parametrize("workers", ["dask worker --nthreads 2", "the build's cluster, threads_per_worker: 2"])
def test_a_grouping_on_worker_processes_of_two_threads_gives_each_group_once(workers, tmp_path):
    """Worker processes of two threads (`dask worker --nthreads 2`; the build's own local cluster):
    two bundles of one step run at once in one process, each with the receiver it unpickled from its
    own task (right before the fix too; kept as the check that it stays so)."""
    if workers.startswith("dask worker"):
        address, processes = _cli_cluster(tmp_path, 1, threads=2)
        try:
            assert _groups_on(address, tmp_path / "groups") == RIGHT_GROUPS
        finally:
            for process in processes:
                process.kill()
                process.wait()
        return
    from uvd_pipeline.config import DaskConfig
    from uvd_pipeline.dask_cluster import scheduler

    with scheduler(DaskConfig(workers=1, threads_per_worker=2)) as address:
        assert _groups_on(address, tmp_path / "groups") == RIGHT_GROUPS


def test_a_beam_whose_dask_internals_changed_is_refused_naming_the_fix(monkeypatch, caplog):
    """The bounded runner makes each bundle's receiver with Beam 2.77's DaskRunner internals: a Beam
    whose internals take other arguments is refused before the build (naming beam.runner, what
    differs and the fix); another version with the same shape runs, with a warning."""
    import apache_beam
    from apache_beam.runners.dask import transform_evaluator

    from uvd_pipeline.dask_cluster import bounded_dask_runner, check_beam_shape

    monkeypatch.setattr(apache_beam, "__version__", "2.78.0")
    with caplog.at_level("WARNING"):
        check_beam_shape()
    assert "checked with Beam 2.77.x; this is Beam 2.78.0" in caplog.text

    def changed(items, invoker_args, invoker_kwargs, receivers, batch):  # a parameter renamed, one added
        raise AssertionError("not called")

    monkeypatch.setattr(transform_evaluator, "apply_dofn_to_bundle", changed)
    with pytest.raises(ConfigError, match=r"beam\.runner: dask: .*Beam 2\.78\.0 changed \(.*apply_dofn_to_bundle "
                                          r"takes no do_fn_invoker_args, do_fn_invoker_kwargs, tagged_receivers\).*"
                                          r"pip install -e '\.\[dask\]'"):
        bounded_dask_runner(2)
    monkeypatch.setattr(transform_evaluator, "OneReceiver", dict)  # no `values`
    with pytest.raises(ConfigError, match=r"a bundle's receiver and output handler cannot be made \(KeyError"):
        check_beam_shape()


def _holding_memory(x: int, megabytes: int) -> int:
    """A step that holds `megabytes` of touched memory for a while."""
    held = b"x" * (megabytes << 20)
    time.sleep(3)
    return x + len(held) * 0


@pytest.mark.slow
def test_workers_dying_of_their_memory_limit_fail_the_build_naming_the_setting(tmp_path):
    """A local cluster with too little memory for the work (`beam.dask.memory_limit: 200MB` on a
    300-image build): Dask's nanny ended each worker running the same task until the scheduler
    gave it up, and the command died in distributed's KilledWorker traceback, which names neither
    the setting nor the fix. Now the run fails with one message naming `beam.dask.memory_limit`
    (one death allowed here, where Dask allows 3, to keep the test short)."""
    import apache_beam as beam
    import dask

    from uvd_pipeline.beam_options import ViewCachingOptions
    from uvd_pipeline.config import DaskConfig
    from uvd_pipeline.dask_cluster import WorkersKilled, bounded_dask_runner, scheduler

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with scheduler(DaskConfig(workers=1, memory_limit="400MB")) as address:
            options = ViewCachingOptions([f"--dask_client_address={address}", "--dask_partition_size=1"])
            pipeline = beam.Pipeline(runner=bounded_dask_runner(1, "400MB"), options=options)
            pipeline | beam.Create([1]) | beam.Map(_holding_memory, 600)
            result = pipeline.run()
            try:
                with pytest.raises(WorkersKilled) as killed:
                    result.wait_until_finish()
            finally:
                result.client.close()
    message = str(killed.value)
    assert "died once running the same task" in message and "beam.dask.memory_limit: 400MB" in message
    assert "run the build again" in message


# In every process `multiprocessing` spawns (the local Dask cluster's worker processes, and only
# they), exit at once, as a worker does that a site hook, a process limit or a broken install stops.
_DYING_WORKERS = '''import os, sys
if "--multiprocessing-fork" in sys.argv:
    os._exit(3)
'''


def test_a_local_cluster_whose_workers_cannot_start_fails_the_build_saying_so(tmp_path):
    """The build's local cluster starts its workers in the background (`scale`, while the graph is
    built): a worker process that died as it started was only a tornado traceback ("Nanny failed
    to start") and the build waited at "write 0/4" for ever. Now it fails with exit status 2 and
    one `error:` line saying the workers did not start and what to check (a 4-image build whose
    spawned processes exit at once, by a `sitecustomize`)."""
    import subprocess
    import sys

    import yaml

    from conftest import REPO

    images = tmp_path / "img"
    images.mkdir()
    for i, colour in enumerate(("red", "green", "blue", "gray")):
        subprocess.run(["convert", "-size", "48x40", f"gradient:{colour}-white", str(images / f"{i}.png")], check=True)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_DYING_WORKERS)
    config = {"version": 1, "output": str(tmp_path / "out"), "seed": 0, "image": {"size": 32},
              "tokenizer": {"enabled": False},
              "beam": {"runner": "dask", "dask": {"workers": 2, "memory_limit": "1GiB"}},
              "sources": [{"name": "web", "type": "laion", "path": str(images), "format": "folder", "num_shards": 2}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]))
    done = subprocess.run([sys.executable, "-m", "uvd_pipeline", "build", str(tmp_path / "c.yaml")], cwd=REPO,
                          capture_output=True, text=True, timeout=150, env=env)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert "worker processes" in errors[0] and "started" in errors[0] and "beam.dask" in errors[0], errors[0]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


# Spawned processes (a local cluster's workers) exit at once, but only the first of them: a flag
# file made with O_EXCL picks it.
_ONE_DYING_WORKER = '''import os, sys
if "--multiprocessing-fork" in sys.argv:
    try:
        os.close(os.open(os.environ["UVD_TEST_ONE_DIES"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        pass
    else:
        os._exit(3)
'''


@pytest.mark.slow
def test_a_local_cluster_of_which_one_worker_cannot_start_says_so_and_builds_on_the_rest(tmp_path):
    """One of the local cluster's 2 worker processes dies as it starts (exit status 3, by a
    `sitecustomize`): the build went on with the other, its only sign tornado's "Nanny failed to
    start" traceback. Now one warning says 1 of 2 started and why the other did not, the
    summary says it too (printed and in summary.json), no traceback, and the shards are those of
    the same build on the local runner."""
    import json
    import subprocess
    import sys

    import yaml

    from conftest import REPO, shard_digests
    from uvd_pipeline.build import run_build

    images = tmp_path / "img"
    images.mkdir()
    for i, colour in enumerate(("red", "green", "blue", "gray", "orange", "purple")):
        subprocess.run(["convert", "-size", "48x40", f"gradient:{colour}-white", str(images / f"{i}.png")], check=True)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_ONE_DYING_WORKER)

    def config(name: str, beam: dict) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "version": 1, "output": str(tmp_path / name), "seed": 0, "image": {"size": 32},
            "tokenizer": {"enabled": False}, "beam": beam,
            "sources": [{"name": "web", "type": "laion", "path": str(images), "format": "folder", "num_shards": 2}]}))
        return path

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]), UVD_TEST_ONE_DIES=str(tmp_path / "flag"))
    dask = config("dask", {"runner": "dask", "dask": {"workers": 2, "memory_limit": "1GiB"}})
    done = subprocess.run([sys.executable, "-m", "uvd_pipeline", "build", str(dask)], cwd=REPO, capture_output=True,
                          text=True, timeout=150, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "flag").exists()  # a worker process did die
    warned = [line for line in done.stderr.splitlines() if "worker processes started" in line]
    assert len(warned) == 1 and "WARNING" in warned[0], done.stderr[-3000:]
    assert "1 of 2" in warned[0] and "exited with status 3" in warned[0], warned[0]
    assert "Traceback" not in done.stderr and "Nanny failed" not in done.stderr, done.stderr[-3000:]
    said = [line for line in done.stdout.splitlines() if line.startswith("warning:") and "Dask" in line]
    assert said == ["warning: 1 of 2 workers of the local Dask cluster started, the build ran on them (its process "
                    "exited with status 3)"], done.stdout
    summary = json.loads((tmp_path / "dask" / "summary.json").read_text())
    assert summary["run"]["workers_failed_to_start"] == ["its process exited with status 3"]
    assert summary["totals"]["sentences"] > 0
    local = config("local", {"runner": "DirectRunner", "direct_num_workers": 1, "direct_running_mode": "in_memory"})
    run_build(load_config(str(local)))  # the reference in this process: no interpreter's imports to pay
    assert shard_digests(tmp_path / "dask") == shard_digests(tmp_path / "local")


def _unit_marks(out: Path) -> dict[str, tuple[int, int]]:
    """Commit mark -> its inode and mtime (a unit rendered again gets a new mark)."""
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "_units").glob("*/*.json")}


@pytest.mark.slow
def test_ctrl_c_on_a_dask_build_is_one_line_and_the_rerun_survives_a_lost_worker_to_the_same_bytes(
        mini_corpus, mini_build, tmp_path, monkeypatch):
    """Ctrl-C (SIGINT to the process group) on a build on its own 2-worker local cluster, sent by a
    worker right after the 2nd unit commit: each worker logged distributed's "Async instruction
    ... ended with CancelledError" warning as the cluster's close cancelled its task. Now the
    command ends with 130 and one line saying it was interrupted, what is kept (the counts of
    committed units and shards) and how to finish; the rerun keeps the committed units and gives
    the bytes of a build never interrupted.

    The rerun (`run_build` of the same config, what the command runs) also loses a worker: one
    worker process dies with work in flight after the rerun has committed a rendered shard; Dask
    runs that work again (the nanny starts a new worker) and every side effect is idempotent: the
    bytes equal the local runner's, and the summary and report say which figures the runner did not
    report. (Its own test built the whole corpus on a third cluster of workers importing Beam and
    torch: the two tests cost 58.0-58.5 CPU-s, this one 40.8-44.6, with the session fixtures.)"""
    import subprocess
    import sys
    from contextlib import contextmanager

    from conftest import REPO
    from uvd_pipeline import dask_cluster
    from uvd_pipeline.build import run_build
    from uvd_pipeline.report import write_report
    from uvd_pipeline.summary import format_summary

    reference_config, reference = mini_build
    out = tmp_path / "out"
    path = write_config(tmp_path / "c.yaml", mini_corpus, out, reference_config.tokenizer.checkpoint,
                        runner="dask", dask={"workers": 2, "threads_per_worker": 1, "memory_limit": "2GiB"})
    flags = tmp_path / "flags"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]),
               DASK_DISTRIBUTED__WORKER__PRELOAD='["dask_sigint_at_commit"]', UVD_TEST_SIGNAL_FLAGS=str(flags),
               UVD_TEST_SIGNAL_AFTER="2", UVD_TEST_SIGNAL_WORKERS="2")  # both joined: a worker starting is another test
    proc = subprocess.Popen([sys.executable, "-m", "uvd_pipeline", "build", str(path)], cwd=REPO, env=env,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        log, _ = proc.communicate(timeout=200)  # ~10 s; with the rerun's wait and build, well under 600
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert (flags / "sent").exists(), log[-3000:]
    assert proc.returncode == 130, log[-3000:]
    marks = _unit_marks(out)
    assert len(marks) >= 2 and not (out / "summary.json").exists()
    shards = len([p for p in (out / "rendered").rglob("*.stats.json")]) if (out / "rendered").exists() else 0
    said = [line for line in log.splitlines() if line.startswith("interrupted")]
    assert said == [f"interrupted: the units and shards committed so far are kept ({len(marks)} input units, "
                    f"{shards} rendered shards); run the same command again to finish the build (it redoes only "
                    "the rest)"], log[-3000:]
    assert "CancelledError" not in log and "Traceback" not in log, log[-3000:]
    total = reference["totals"]["shards"]
    assert shards < total, "the interrupted run committed every rendered shard: the rerun has none to lose a worker in"

    killers: list[_KillOneWorker] = []
    started = dask_cluster.scheduler

    @contextmanager
    def watched(settings):
        with started(settings) as address:
            killers.append(_KillOneWorker(address, out, wait_s=150))
            killers[0].start()
            yield address

    monkeypatch.setattr(dask_cluster, "scheduler", watched)
    summary = run_build(load_config(str(path))).summary
    killer, = killers
    killer.join(timeout=30)
    assert killer.error is None, killer.error
    assert killer.killed is not None and killer.lost_tasks > 0
    rendered_at_kill, tokens_at_kill = killer.committed_at_kill
    assert killer.committed_at_start[0] == shards  # what the interrupted run committed: the kill came after more
    assert rendered_at_kill > shards and tokens_at_kill < total, "the worker was lost after the build's work was done"
    assert {k: _unit_marks(out).get(k) for k in marks} == marks  # committed units were not rendered again
    assert shard_digests(out) == shard_digests(Path(reference_config.output))
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]  # the lost attempt's temporaries are gone
    _check_summary_without_metrics(summary, reference)
    assert summary["run"]["workers"] == 2
    rejects = (out / "rejects.jsonl").read_text()
    assert rejects == (Path(reference_config.output) / "rejects.jsonl").read_text()
    assert json.loads(rejects.splitlines()[0])["reason"]
    assert "runner reported no Beam metrics" in format_summary(summary)
    page = Path(write_report(str(out))["html"]).read_text()
    assert "reports no Beam metrics" in page and "stage timings" in page


@pytest.mark.slow
def test_a_cli_build_on_a_given_scheduler_survives_a_worker_killed_mid_build(mini_corpus, mini_build, tmp_path):
    """`dask scheduler` and two `dask worker`s (with their nannies) started from the command line,
    as a person on a cluster starts them; `uvd build` with `beam.dask.address`: the workers' code
    is checked and passes; a worker process busy with the build's work is killed (SIGKILL) after
    the first shard is committed. The build neither hangs nor fails: the nanny starts a new
    worker, the lost tasks run again, and the shards equal the local runner's (nothing lost, no
    row twice); a rerun changes no byte."""
    import subprocess
    import sys

    from conftest import REPO, file_digests

    reference_config, reference = mini_build
    address, processes = _cli_cluster(tmp_path, 2, nanny=True)
    out = tmp_path / "out"
    path = write_config(tmp_path / "c.yaml", mini_corpus, out, reference_config.tokenizer.checkpoint,
                        runner="dask", dask={"address": address})
    killer = _KillOneWorker(address, out)
    try:
        killer.start()
        done = subprocess.run([sys.executable, "-m", "uvd_pipeline", "build", str(path)], cwd=REPO,
                              capture_output=True, text=True, timeout=400)
        killer.join(timeout=30)
        assert done.returncode == 0, done.stderr[-3000:]
        assert killer.error is None, killer.error
        assert killer.killed is not None and killer.lost_tasks > 0
        rendered_at_kill, tokens_at_kill = killer.committed_at_kill
        assert rendered_at_kill >= 1 and tokens_at_kill < reference["totals"]["shards"], "killed after the work was done"
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        assert shard_digests(out) == shard_digests(Path(reference_config.output))
        assert (out / "rejects.jsonl").read_text() == (Path(reference_config.output) / "rejects.jsonl").read_text()
        summary = json.loads((out / "summary.json").read_text())
        assert summary["totals"] == reference["totals"]
        first = {k: v for k, v in file_digests(out).items() if not k.startswith(("summary", "_lock", "_logs"))}
        again = subprocess.run([sys.executable, "-m", "uvd_pipeline", "build", str(path)], cwd=REPO,
                               capture_output=True, text=True, timeout=400)
        assert again.returncode == 0, again.stderr[-3000:]
        assert {k: v for k, v in file_digests(out).items() if k in first} == first
    finally:
        for process in processes:
            process.kill()
            process.wait()


def _starting_workers(build) -> list:
    """The build's worker processes that are still starting: spawned by multiprocessing, not yet
    past the imports (a started worker's command line is the same: it is seen here first)."""
    import psutil

    try:
        children = build.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_ctrl_c_while_the_local_clusters_workers_start_is_one_line(mini_corpus, tiny_tokenizer, tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) right after `uvd build` on its
    own 2-worker local cluster has spawned the worker processes, before they joined: each worker
    process died of the KeyboardInterrupt in its imports, printing its traceback, and each nanny's
    failed start added tornado's "Nanny failed to start" traceback above the one "interrupted:"
    line. Now the workers start with SIGINT left to the build's process, which closes the cluster."""
    import subprocess
    import sys

    import psutil

    from conftest import REPO

    out = tmp_path / "out"
    path = write_config(tmp_path / "c.yaml", mini_corpus, out, tiny_tokenizer,
                        runner="dask", dask={"workers": 2, "threads_per_worker": 1, "memory_limit": "2GiB"})
    proc = subprocess.Popen([sys.executable, "-m", "uvd_pipeline", "build", str(path), "--no-tokenize"], cwd=REPO,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    build = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    while len(_starting_workers(build)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _starting_workers(build)
    os.killpg(proc.pid, signal.SIGINT)
    log, _ = proc.communicate(timeout=300)
    assert len(workers) == 2, log[-3000:]
    assert proc.returncode == 130, log[-3000:]
    said = [line for line in log.splitlines() if line.startswith("interrupted")]
    assert len(said) == 1, log[-3000:]
    assert "Traceback" not in log and "KeyboardInterrupt" not in log and "Nanny failed" not in log, log[-5000:]
    assert not [worker for worker in workers if worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE]


def test_a_fetch_from_a_killed_worker_is_left_out_of_a_workers_log_unless_verbose(monkeypatch):
    """A local cluster's worker killed mid-build (`kill -9`) while another fetched a result from it:
    the fetching worker logged "Worker stream died during communication" at ERROR with its chained
    tracebacks, 27-33 lines above a build that then finished (hunt58b), though distributed fetches
    or computes the data again. The build's workers (`BuildWorker.setup` adds `PeerLost` to this
    logger) leave it out where distributed logs at WARNING (the command without --verbose), keep
    it at INFO, and keep every other error."""
    from distributed.comm.core import CommClosedError

    from uvd_pipeline.dask_worker import PeerLost

    logger, shown = logging.getLogger("distributed.worker"), []
    handler = logging.Handler()
    handler.emit = shown.append
    monkeypatch.setattr(logger, "filters", [PeerLost()])
    monkeypatch.setattr(logger, "handlers", [handler])
    monkeypatch.setattr(logger, "propagate", False)
    top = logging.getLogger("distributed")
    level = top.level

    def gather_from_the_dead() -> None:  # as `Worker.gather_dep` meets and logs it
        try:
            try:
                raise ConnectionResetError(104, "Connection reset by peer")
            except OSError as exc:
                raise CommClosedError(f"in <TCP (closed) Ephemeral Worker->Worker>: {exc}") from exc
        except OSError:
            logger.exception("Worker stream died during communication: %s", "tcp://127.0.0.1:33775")
        logger.error("Compute Failed: a bug of ours")

    try:
        top.setLevel(logging.WARNING)  # DASK_LOGGING__DISTRIBUTED=warning: the command without --verbose
        gather_from_the_dead()
        assert [r.getMessage() for r in shown] == ["Compute Failed: a bug of ours"]
        shown.clear()
        top.setLevel(logging.INFO)  # distributed's own default: --verbose
        gather_from_the_dead()
        assert [r.getMessage().split(":")[0] for r in shown] == ["Worker stream died during communication",
                                                                  "Compute Failed"]
    finally:
        top.setLevel(level)
