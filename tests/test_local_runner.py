"""The local runner's data channels: Beam's timer-flushed buffer drops what a writer appends during a
flush (`uvd_pipeline.local_runner`); the runner the build uses must deliver every element.

The pipeline runs in a child process with its address space capped: the failure this guards
against decodes a misframed stream into a runaway allocation (24 GB on this machine)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import REPO

ELEMENTS_PER_INPUT, INPUTS = 40_000, 4

PIPELINE = textwrap.dedent(f"""
    import hashlib, sys
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import worker_handlers
    from uvd_pipeline.local_runner import local_runner

    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 1  # Beam's timer at 1 ms instead of 1 s: a drop each run

    class Emit(beam.DoFn):
        def process(self, i):
            for j in range({ELEMENTS_PER_INPUT}):
                yield f"k{{j % 97}}", (i, j, "payload-" * 4)

    def digest(values):
        return hashlib.sha256(repr(sorted(values)).encode()).hexdigest()

    options = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_threading"])
    with beam.Pipeline(runner=local_runner(options), options=options) as pipeline:
        (pipeline | beam.Create(range({INPUTS})) | beam.Reshuffle() | beam.ParDo(Emit()) | beam.GroupByKey()
         | beam.FlatMap(lambda kv: [(i, j) for i, j, _ in kv[1]]) | beam.combiners.ToList()
         | beam.Map(lambda values: print("RESULT", len(values), digest(values), flush=True)))
    """)


def _capped(gib: int):
    limit = gib << 30
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_local_runner_delivers_every_element_with_a_fast_flush_timer():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", PIPELINE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, preexec_fn=_capped(4))
    results = [line.split() for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert done.returncode == 0 and results, done.stderr[-3000:]
    import hashlib

    expected = sorted((i, j) for i in range(INPUTS) for j in range(ELEMENTS_PER_INPUT))
    assert results == [["RESULT", str(len(expected)), hashlib.sha256(repr(expected).encode()).hexdigest()]]


def test_beams_timer_flush_drops_concurrent_writes():
    """Why the runner is patched: Beam's own stream, flushed by its timer while this thread writes,
    hands on fewer bytes than were written. Beam's flush hands the buffer to its callback before it
    clears it; its real callback queues the bytes for gRPC and waits while that queue is full (or
    its lock taken), letting the writer append what the clear then drops. The callback here waits
    a millisecond the same way. (If this ever fails, the Beam in use has fixed the race and
    `local_runner.disable_timed_flushes` can go.)"""
    from apache_beam.coders import coders
    from apache_beam.runners.worker.data_plane import TimeBasedBufferingClosableOutputStream

    chunks: list[bytes] = []
    lock = threading.Lock()

    def take(data: bytes) -> None:
        with lock:
            chunks.append(data)
        time.sleep(0.001)  # a send queue with no room yet

    coder = coders.FastPrimitivesCoder().get_impl()
    element = ("k" * 20, (7, 11, "payload-" * 4))
    size = len(coder.encode_nested(element))
    stream = TimeBasedBufferingClosableOutputStream(take, flush_callback=take, time_flush_threshold_ms=1)
    written, started = 0, time.monotonic()
    while time.monotonic() - started < 1:
        for _ in range(100):
            coder.encode_to_stream(element, stream, True)
        written += 100
        stream.maybe_flush()
    stream.close()
    received = sum(len(chunk) for chunk in chunks)
    assert received < written * size, "no write was lost: Beam's timer flush no longer races its writers"


def test_disable_timed_flushes_makes_size_buffered_streams():
    from apache_beam.runners.portability.fn_api_runner import worker_handlers
    from apache_beam.runners.worker.data_plane import (ClosableOutputStream, SizeBasedBufferingClosableOutputStream,
                                                       TimeBasedBufferingClosableOutputStream)
    from uvd_pipeline.local_runner import disable_timed_flushes

    saved = worker_handlers.DATA_BUFFER_TIME_LIMIT_MS
    try:
        worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 1000
        disable_timed_flushes()
        stream = ClosableOutputStream.create(None, None, worker_handlers.DATA_BUFFER_TIME_LIMIT_MS)
        assert isinstance(stream, SizeBasedBufferingClosableOutputStream)
        assert not isinstance(stream, TimeBasedBufferingClosableOutputStream)
    finally:
        worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = saved


def test_the_builds_local_runner_is_made_safe(tmp_path):
    """The build's own path to the runner (`build.make_runner`) goes through `local_runner`."""
    from apache_beam.runners.portability.fn_api_runner import fn_runner, worker_handlers

    from uvd_pipeline.build import make_runner, pipeline_options
    from uvd_pipeline.config import parse_config

    (tmp_path / "web").mkdir()
    config = parse_config({"version": 1, "output": str(tmp_path / "out"),
                           "sources": [{"name": "web", "type": "laion", "path": str(tmp_path / "web")}],
                           "tokenizer": {"enabled": False},
                           "beam": {"direct_num_workers": 2, "direct_running_mode": "multi_threading"}})
    saved = worker_handlers.DATA_BUFFER_TIME_LIMIT_MS
    try:
        worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 1000
        runner = make_runner(config, pipeline_options(config))
        assert isinstance(runner, fn_runner.FnApiRunner)
        assert worker_handlers.DATA_BUFFER_TIME_LIMIT_MS == 0
    finally:
        worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = saved


DYING_WORKER = textwrap.dedent("""
    import os, signal, time
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from uvd_pipeline.local_runner import local_runner

    def write(x):  # a last stage: sends nothing back to the runner, as the shard writers do
        if x == 3:
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGKILL)  # the OOM killer's pick

    options = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    with beam.Pipeline(runner=local_runner(options), options=options) as pipeline:
        pipeline | beam.Create(list(range(6))) | beam.Reshuffle() | beam.Map(write)
    print("FINISHED", flush=True)
    """)


def test_a_worker_process_killed_in_a_stage_that_sends_nothing_back_fails_the_run():
    """`kill -9` of a worker process while it runs a bundle of a last stage (no output to the runner:
    the build's shard writers) hung the build for good (three of three kills in its write phase):
    the runner waited on the bundle's response, no data channel noticed, and Beam's own "Worker
    subprocess exited with return code 137" went to a thread nobody hears. Now the run fails at once
    with that error."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", DYING_WORKER], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "FINISHED" not in done.stdout
    assert "Worker subprocess exited with return code 137" in done.stderr, done.stderr[-2000:]
    assert time.monotonic() - started < 60


DYING_MID_STREAM = textwrap.dedent("""
    import os, signal, time
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from uvd_pipeline.local_runner import WorkerExited, local_runner

    def render(x):  # a stage that sends its output back to the runner, as the build's render does
        if x == 3:
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGKILL)  # the OOM killer's pick
        return x

    options = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    try:
        with beam.Pipeline(runner=local_runner(options), options=options) as pipeline:
            (pipeline | beam.Create(list(range(6))) | beam.Reshuffle() | beam.Map(render)
             | beam.combiners.Count.Globally() | beam.Map(print))
    except WorkerExited as exc:
        print("EXITED", exc, flush=True)
    """)


def test_a_worker_process_killed_in_a_stage_that_sends_data_back_fails_the_run_naming_its_death():
    """`kill -9` of a worker process inside a bundle whose output goes back to the runner: its data
    channel breaks before the worker's thread sees the exit, and the run failed with Beam's bare
    "RuntimeError: Channel closed prematurely." (rev56l: "return code 137" nowhere). The run now
    fails with the worker's recorded death, in its words."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", DYING_MID_STREAM], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert "EXITED Worker subprocess exited with return code 137 (killed by SIGKILL)" in done.stdout, \
        done.stdout[-1000:] + done.stderr[-3000:]


def test_a_worker_process_killed_mid_stream_prints_no_beam_traceback():
    """The same death under the command's logging (`uvd build`'s handlers): the worker's broken gRPC
    streams made the runner's threads print Beam's tracebacks above the build's one `error:` line,
    in 3 of 4 real builds whose worker was killed (`Exception in thread beam_control_read`,
    `read_grpc_client_inputs`, "Failed to read inputs in the data plane.", "Error closing
    worker_handler": 5-6 tracebacks, 133-142 lines). The run fails with the worker's death and
    stderr holds none of them."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    script = "from uvd_pipeline.cli import _setup_logging\n_setup_logging(False)\n" + DYING_MID_STREAM
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert "EXITED Worker subprocess exited with return code 137 (killed by SIGKILL)" in done.stdout, \
        done.stdout[-1000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Exception in thread" not in done.stderr, done.stderr[-3000:]
    assert "RpcError" not in done.stderr, done.stderr[-3000:]


NO_DEATH = textwrap.dedent("""
    import logging, sys, threading
    import apache_beam as beam
    import grpc
    from apache_beam.options.pipeline_options import PipelineOptions
    from uvd_pipeline.cli import _setup_logging
    from uvd_pipeline.local_runner import local_runner, quiet_broken_streams

    _setup_logging(False)
    before = threading.excepthook
    options = PipelineOptions(["--direct_num_workers=1", "--direct_running_mode=in_memory"])
    with beam.Pipeline(runner=local_runner(options), options=options) as pipeline:
        pipeline | beam.Create([1, 2]) | beam.combiners.Count.Globally() | beam.Map(print)
    print("HOOK_AFTER_RUN", threading.excepthook is before, flush=True)

    class Exhausted(grpc.RpcError):  # a data-plane message past gRPC's size limit: no worker died
        def __str__(self):
            return "RESOURCE_EXHAUSTED: Received message larger than max (2147483700 vs. 2147483647)"

    restore = quiet_broken_streams()
    import time
    start = time.monotonic()
    try:
        raise Exhausted()
    except Exhausted:
        logging.getLogger("apache_beam.runners.worker.data_plane").exception("Failed to read inputs in the data plane.")
    def reader():
        raise Exhausted()
    thread = threading.Thread(target=reader, name="read_grpc_client_inputs")
    thread.start(); thread.join()
    print("SHOWN_IN", round(time.monotonic() - start, 2), flush=True)
    restore()
    print("HOOK_RESTORED", threading.excepthook is before, flush=True)
    """)


def test_a_grpc_error_with_no_worker_death_is_shown_and_the_hook_is_put_back():
    """The filters that leave a killed worker's broken streams off stderr hid every `grpc.RpcError`,
    with no worker dead (a message past gRPC's size limit, a portable job failed: the build's error
    line then said nothing of it), and the thread hook stayed replaced after the run returned. Both
    are shown now where no death is recorded; the run puts the hook back. Each is shown at once: they
    waited out the grace for a death record first (2 s each, 4 s for both)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", NO_DEATH], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert "HOOK_AFTER_RUN True" in done.stdout and "HOOK_RESTORED True" in done.stdout, \
        done.stdout[-1000:] + done.stderr[-3000:]
    assert "Failed to read inputs in the data plane." in done.stderr, done.stderr[-3000:]
    assert "Exception in thread read_grpc_client_inputs" in done.stderr, done.stderr[-3000:]
    assert done.stderr.count("Received message larger than max") == 2, done.stderr[-3000:]
    shown_in = float(done.stdout.split("SHOWN_IN ")[1].split()[0])
    assert shown_in < 1.0, shown_in


BLOCKED_WORKER = textwrap.dedent("""
    import os, signal, sys, threading, time
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from uvd_pipeline.cli import terminate_as_interrupt
    from uvd_pipeline.local_runner import local_runner

    flag = sys.argv[1]

    def work(x):  # a long bundle in a worker process (a video's decode): the signal comes meanwhile
        open(os.path.join(flag, f"busy-{os.getpid()}"), "w").close()
        # in a thread the worker's exit waits for (not a daemon), as it waits for a decoder pool's
        decoding = threading.Thread(target=time.sleep, args=(600,), daemon=False)
        decoding.start()
        decoding.join()

    options = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_processing",
                               "--beam_plugins=uvd_pipeline.beam_worker"])  # as `uvd build` sets them
    try:
        with terminate_as_interrupt():  # as `uvd build` runs it
            with beam.Pipeline(runner=local_runner(options), options=options) as pipeline:
                pipeline | beam.Create(list(range(4))) | beam.Reshuffle() | beam.Map(work)
    except KeyboardInterrupt as stop:
        print("STOPPED", type(stop).__name__, flush=True)
        sys.exit(143)
    """)


def _blocked_build(flags) -> tuple[subprocess.Popen, list[int]]:
    """`BLOCKED_WORKER` started in its own process group, once each of its worker processes is
    inside its bundle: the build and the workers' pids. SIGINT is the default's, as a terminal's
    command has it (a test runner's worker may ignore it)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    build = subprocess.Popen([sys.executable, "-c", BLOCKED_WORKER, str(flags)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(flags.glob("busy-*"))) < 2:
        assert build.poll() is None, build.communicate()
        time.sleep(0.05)
    return build, [int(p.name.split("-")[1]) for p in flags.glob("busy-*")]


def _gone(pid: int) -> bool:
    """No such process, or a zombie only (its parent has not reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_build_killed_alone_takes_its_worker_processes_along(tmp_path):
    """`kill -9` of a multi_processing build's own process (the OOM killer's pick) left its
    worker processes running (hunt54b L1: 30-60 s, until gRPC noticed; one inside a bundle that
    waits for a thread, as long as that took), decoding beside the rerun. They now end with it."""
    build, workers = _blocked_build(tmp_path)
    try:
        assert len(workers) == 2
        build.kill()
        build.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(map(_gone, workers)):
            time.sleep(0.05)
        assert all(map(_gone, workers)), workers
    finally:
        for pid in workers:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_sigterm_to_the_build_alone_stops_its_worker_processes_inside_a_bundle(tmp_path):
    """SIGTERM to the build's own process (`docker stop`, Kubernetes, `kill PID`; not its process
    group, as a terminal's Ctrl-C) while a worker process ran a bundle hung the build for good
    (hunt54b: 6 of 12 tries): Beam's cleanup waited for each worker process, which could not end
    while its bundle ran on. Now the workers are stopped and the build exits
    at once with its 143; no worker process is left (the shell that started each one had stayed
    behind as its parent)."""
    build, workers = _blocked_build(tmp_path)
    try:
        assert workers, "no worker started its bundle"
        build.send_signal(signal.SIGTERM)
        out, err = build.communicate(timeout=60)
    finally:
        if build.poll() is None:
            os.killpg(build.pid, signal.SIGKILL)
            build.wait()
    assert build.returncode == 143 and "STOPPED Terminated" in out, err[-2000:]
    assert all(map(_gone, workers)), workers  # killed, not left to finish their 600 s


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_builds_process_group_is_the_builds_alone(tmp_path, sig):
    """Ctrl-C in a terminal (SIGINT to the whole process group), or SIGTERM to the group, while
    worker processes ran a bundle: each worker died of it too, printing a `Traceback ...
    KeyboardInterrupt` and a multi-KB "CRITICAL ... Python sdk harness failed" line (hunt56c: 49-82
    lines above the command's one "interrupted:" line). The workers leave the signal to the build,
    which stops them: nothing of theirs is printed, and none is left."""
    build, workers = _blocked_build(tmp_path)
    try:
        assert len(workers) == 2, "no worker started its bundle"
        os.killpg(build.pid, sig)
        out, err = build.communicate(timeout=60)
    finally:
        if build.poll() is None:
            os.killpg(build.pid, signal.SIGKILL)
            build.wait()
    stopped = "Terminated" if sig == signal.SIGTERM else "KeyboardInterrupt"
    assert build.returncode == 143 and f"STOPPED {stopped}" in out, err[-3000:]
    assert "Traceback" not in err and "CRITICAL" not in err and "harness failed" not in err, err[-3000:]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(map(_gone, workers)):
        time.sleep(0.05)
    assert all(map(_gone, workers)), workers


IN_AN_EXCEPT = textwrap.dedent("""
    import os, sys
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from uvd_pipeline.local_runner import local_runner

    class Mark(beam.DoFn):
        def __init__(self, folder):
            self.folder = folder  # pickled to the worker, whose sys.argv is its own

        def process(self, x):
            yield x

        def teardown(self):  # a worker ended as a run's close ends it, not killed
            open(os.path.join(self.folder, f"teardown-{os.getpid()}"), "w").close()

    def fail(x):
        raise ValueError("a first try that fails")

    options = PipelineOptions(["--direct_num_workers=1", "--direct_running_mode=multi_processing"])
    try:  # a run that fails inside its own run_stages, and a caller that tries again from its handler
        with beam.Pipeline(runner=local_runner(options), options=options) as pipeline:
            pipeline | beam.Create([1]) | beam.Map(fail)
    except Exception:
        with beam.Pipeline(runner=local_runner(options), options=options) as pipeline:
            pipeline | beam.Create(range(4)) | beam.ParDo(Mark(sys.argv[1]))
    print("FINISHED", flush=True)
    """)


def test_a_run_started_inside_an_except_block_ends_its_workers_as_a_normal_run(tmp_path):
    """`stop_worker` took any exception being handled for a failing run: a successful run started
    from a caller's `except` block killed its workers at its close (rev54b), losing their DoFns'
    teardown, also where that exception came from an earlier run's own run_stages (rev54e). Only
    an exception leaving this run stops them now."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", IN_AN_EXCEPT, str(tmp_path)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "FINISHED" in done.stdout, done.stderr[-2000:]
    assert len(list(tmp_path.glob("teardown-*"))) == 1


@pytest.mark.slow  # a whole build with worker processes, in a fresh process: about 15 s
def _multi_processing_folder_build(tmp_path, images: int, shape: tuple[int, int], num_shards: int,
                                   **settings) -> "os.PathLike[str]":
    """`config.yaml`: a build of `images` noise PNGs of `shape` in a folder (laion source, 32 px, no
    tokenizer) by Beam's multi_processing direct runner on 2 worker processes; `settings` added."""
    import numpy as np
    import yaml
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(images):
        Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "version": 1, "output": str(tmp_path / "out"), **settings, "image": {"size": 32},
        "sources": [{"name": "web", "type": "laion", "path": str(folder), "format": "folder",
                     "num_shards": num_shards}],
        "tokenizer": {"enabled": False},
        "beam": {"direct_num_workers": 2, "direct_running_mode": "multi_processing"}}))
    return config


def test_a_builds_worker_processes_log_in_the_builds_format_without_beams_start_up_chatter(tmp_path):
    """A multi_processing build printed, from each worker process, Beam's start-up lines ("apitools
    not found", "Logging handler created.", "No semi_persistent_directory found", "Discarding
    unparseable args") and our own commit lines in Python's bare `INFO:uvd_pipeline.write_steps:`
    format, among the build's `HH:MM:SS INFO ...` lines (hunt56c mp_noise.sh: 8 lines of chatter).
    A worker now logs as the build does, without the chatter."""
    import re

    config = _multi_processing_folder_build(tmp_path, images=6, shape=(80, 96), num_shards=2, seed=0)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "uvd_pipeline", "build", str(config)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stderr
    bare = [line for line in log.splitlines() if re.match(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL):", line)]
    assert not bare, "\n".join(bare)
    for chatter in ("apitools not found", "Logging handler created", "semi_persistent_directory",
                    "Discarding unparseable args"):
        assert chatter not in log, log
    committed = re.findall(r"^\d\d:\d\d:\d\d INFO committed web-train-0000[01]: \d+ sentences", log, re.M)
    assert len(committed) == 2, log  # the worker processes' own lines, in the build's format


AT_ANOTHER_PATH = textwrap.dedent("""
    import os, sys
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from uvd_pipeline.local_runner import local_runner

    if len(sys.argv) > 1:
        os.unlink(sys.argv[1])  # the interpreter this run started from is gone (a venv rebuilt meanwhile)
    options = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    with beam.Pipeline(runner=local_runner(options), options=options) as pipeline:
        (pipeline | beam.Create(range(6)) | beam.Reshuffle() | beam.Map(lambda x: x * 7) | beam.combiners.ToList()
         | beam.Map(lambda got: print("RESULT", sorted(got), flush=True)))
    print("FINISHED", flush=True)
    """)


def _python_at(folder) -> str:
    """This test's Python as a venv at `folder` (a path with a space): its own `bin/python`, a
    symlink to the interpreter, and the venv's `pyvenv.cfg` and `lib`, so it imports what this one does."""
    venv = os.path.realpath(sys.prefix)
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "python").symlink_to(os.path.realpath(sys.executable))
    (folder / "lib").symlink_to(os.path.join(venv, "lib"))
    (folder / "pyvenv.cfg").write_bytes(open(os.path.join(venv, "pyvenv.cfg"), "rb").read())
    return str(folder / "bin" / "python")


@pytest.fixture(scope="module")
def spaced_python(tmp_path_factory) -> str:
    if sys.prefix == sys.base_prefix:
        pytest.skip("needs the project's venv (sys.prefix is the base interpreter's)")
    return _python_at(tmp_path_factory.mktemp("venv") / "my env")


def test_worker_processes_start_from_a_python_whose_path_has_a_space(spaced_python):
    """Beam starts each worker process as `sh -c "PYTHON -m ..."` with the interpreter's path
    unquoted: from a venv under a folder with a space the shell ran `/path/my` ("not found", return
    code 127) and a multi_processing build waited forever (rev56g spacepy.sh). The path is quoted now."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([spaced_python, "-c", AT_ANOTHER_PATH], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "RESULT [0, 7, 14, 21, 28, 35]" in done.stdout, done.stderr[-2000:]
    assert "return code 127" not in done.stderr and ": not found" not in done.stderr


def test_a_worker_process_that_exits_before_it_connects_fails_the_build_in_one_line(tmp_path):
    """A worker process that exited before it connected (its interpreter gone, the shell's return
    code 127) left the build waiting for its bundle's output for good: only a connected worker's
    data channel breaks when it dies. The build fails within seconds now, in one error line."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("needs the project's venv (sys.prefix is the base interpreter's)")
    python = _python_at(tmp_path / "gone env")
    config = _multi_processing_folder_build(tmp_path, images=3, shape=(40, 48), num_shards=1)
    # `uvd build`, whose interpreter is removed once it runs (a venv rebuilt meanwhile)
    gone = ("import os, runpy, sys; os.unlink(sys.argv[1]); sys.argv[:] = ['uvd', *sys.argv[2:]]; "
            "runpy.run_module('uvd_pipeline', run_name='__main__')")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = time.monotonic()
    try:
        done = subprocess.run([python, "-c", gone, python, "build", str(config)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the build waited for a worker process that had exited before it connected")
    assert done.returncode == 2, done.stderr[-3000:]
    assert time.monotonic() - started < 30
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: Worker subprocess exited with return code 127 before it connected to the runner (the "
                      f"shell found no program to run: is {python}, the Python this build started from, still "
                      "there?)"], done.stderr[-3000:]
