"""The early render pool (`uvd_pipeline.early_render`): its scheduling, told apart with renderers
whose units finish when the test says so, and a build with it against one without it on real
input (same bytes, same counters)."""

from __future__ import annotations

import gc
import json
import logging
import random
import threading
import time
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import busy_machine, early_rendered, shard_digests, write_config
from uvd_pipeline.early_render import EarlyRender
from uvd_pipeline.step_metrics import count, distribution
from uvd_pipeline.unit_render import RenderCancelled

WAIT = 10.0  # seconds any step of these tests may take before it counts as stuck


class GatedRenderer:
    """A renderer whose unit `u` renders when `release(u)` is called: records the order units
    start in, reports metrics the way the real one does, raises for units named 'bad*', and
    checks `cancelled` between its "records"."""

    def __init__(self, name: str = "src") -> None:
        self.source = SimpleNamespace(name=name)
        self.started: list[str] = []
        self.gates: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def unit_key(self, unit: str) -> str:
        return unit

    def gate(self, unit: str) -> threading.Event:
        with self.lock:
            return self.gates.setdefault(unit, threading.Event())

    def release(self, *units: str) -> None:
        for unit in units:
            self.gate(unit).set()

    def render(self, unit: str, cancelled=None):
        with self.lock:
            self.started.append(unit)
        while not self.gate(unit).wait(0.01):
            if cancelled is not None and cancelled():
                raise RenderCancelled(unit)
        if unit.startswith("bad"):
            raise ValueError(f"cannot read {unit}")
        count(self.source.name, "units_rendered")
        distribution("stage.read_records", 3)
        return [("sentences", f"{unit}-sentence")], f"{unit}-digest"


def _until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _pool(units: list[str], workers: int = 1, ahead: int | None = None) -> tuple[EarlyRender, GatedRenderer]:
    renderer = GatedRenderer()
    return EarlyRender(lambda: {"src": renderer}, {"src": units}, workers, ahead=ahead).start(), renderer


def _claim_in_thread(pool: EarlyRender, unit: str) -> tuple[threading.Thread, dict]:
    got: dict = {}

    def run() -> None:
        try:
            got["value"] = pool.claim("src", unit)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            got["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, got


def test_units_render_in_listing_order_and_come_back_once_with_their_metrics():
    pool, renderer = _pool(["u0", "u1", "u2"], workers=1, ahead=3)
    try:
        renderer.release("u0", "u1", "u2")
        _until(lambda: pool.rendered == 3, "three units")
        assert renderer.started == ["u0", "u1", "u2"]
        results, metrics = pool.claim("src", "u1")
        assert results == ([("sentences", "u1-sentence")], "u1-digest")
        # recorded, not reported: the Render step replays them as its own
        assert metrics == [("count", "src.units_rendered", 1), ("distribution", "stage.read_records", 3)]
        assert pool.claim("src", "u1") is None  # asked again (a retried bundle): the step's own
        assert pool.claim("src", "not-listed") is None
    finally:
        pool.close()


def test_a_unit_a_step_waits_for_is_rendered_next():
    pool, renderer = _pool([f"u{i}" for i in range(5)], workers=1)
    try:
        _until(lambda: renderer.started == ["u0"], "the first unit to start")
        waiter, got = _claim_in_thread(pool, "u3")
        time.sleep(0.05)
        assert waiter.is_alive() and "value" not in got  # u3 has not run yet
        renderer.release("u0", "u3")
        waiter.join(WAIT)
        assert got["value"][0][1] == "u3-digest"
        assert renderer.started[:2] == ["u0", "u3"]  # before u1 and u2
    finally:
        renderer.release(*[f"u{i}" for i in range(5)])
        pool.close()


def test_the_pool_holds_at_most_ahead_unclaimed_units():
    pool, renderer = _pool([f"u{i}" for i in range(6)], workers=1, ahead=2)
    try:
        renderer.release(*[f"u{i}" for i in range(6)])
        _until(lambda: pool.rendered == 2, "two units")
        time.sleep(0.1)
        assert renderer.started == ["u0", "u1"]  # held back: nobody took them
        pool.claim("src", "u0")
        _until(lambda: pool.rendered == 3, "a third unit once one is taken")
        time.sleep(0.1)
        assert renderer.started == ["u0", "u1", "u2"]
        waiter, got = _claim_in_thread(pool, "u5")  # a step's unit goes past the limit
        waiter.join(WAIT)
        assert got["value"][0][1] == "u5-digest" and renderer.started[-1] == "u5"
    finally:
        pool.close()


def test_a_units_error_reaches_the_step_that_takes_it_and_the_others_are_fine():
    pool, renderer = _pool(["u0", "bad1", "u2"], workers=2)
    try:
        renderer.release("u0", "bad1", "u2")
        with pytest.raises(ValueError, match="cannot read bad1"):
            pool.claim("src", "bad1")
        assert pool.claim("src", "u0")[0][1] == "u0-digest"
        assert pool.claim("src", "u2")[0][1] == "u2-digest"
        assert pool.rendered == 2
    finally:
        pool.close()


def test_each_thread_renders_with_renderers_of_its_own():
    """As each runner worker has its own copy of the step, each pool thread makes its own readers."""
    made: list[tuple[str, GatedRenderer]] = []

    def make():
        renderer = GatedRenderer()
        renderer.release(*[f"u{i}" for i in range(6)])
        made.append((threading.current_thread().name, renderer))
        return {"src": renderer}

    pool = EarlyRender(make, {"src": [f"u{i}" for i in range(6)]}, workers=2, ahead=6)
    assert len(made) == 2  # made by the caller, before any thread runs: a source that fails, fails here
    pool.start()
    try:
        _until(lambda: pool.rendered == 6, "six units")
        assert sorted(u for _, r in made for u in r.started) == [f"u{i}" for i in range(6)]
        assert made[0][1] is not made[1][1]
    finally:
        pool.close()


def test_close_stops_a_running_unit_at_its_next_record_and_renders_no_more():
    pool, renderer = _pool(["u0", "u1", "u2"], workers=2)
    _until(lambda: sorted(renderer.started) == ["u0", "u1"], "two running units")
    started = time.monotonic()
    pool.close()  # neither unit was released: both stop between records
    assert time.monotonic() - started < WAIT
    assert pool.rendered == 0 and sorted(renderer.started) == ["u0", "u1"]


def test_a_step_waiting_when_the_pool_closes_gets_cancelled_not_a_hang():
    pool, renderer = _pool(["u0", "u1", "u2"], workers=1)
    _until(lambda: renderer.started == ["u0"], "the first unit to start")
    waiter, got = _claim_in_thread(pool, "u2")  # not started: it waits in line
    time.sleep(0.05)
    pool.close()  # u0 stops at its next record
    waiter.join(WAIT)
    assert not waiter.is_alive() and isinstance(got.get("error"), RenderCancelled)
    with pytest.raises(RenderCancelled):  # a straggling step after the close
        pool.claim("src", "u1")
    assert renderer.started == ["u0"] and pool.rendered == 0


class Payload:
    """A result the test can watch being freed."""

    def __init__(self, unit: str) -> None:
        self.unit = unit


class PayloadRenderer(GatedRenderer):
    def render(self, unit: str, cancelled=None):
        outputs, digest = super().render(unit, cancelled)
        return [("sentences", Payload(unit))], digest


def test_results_handed_over_are_not_kept_whatever_order_steps_ask_in():
    """Steps ask in an order of their own (the runner reshuffles units): results handed over must
    not stay referenced by the pool, or its memory grows with the input, not with `ahead`."""
    units = [f"u{i}" for i in range(40)]
    renderer = PayloadRenderer()
    renderer.release(*units)
    pool = EarlyRender(lambda: {"src": renderer}, {"src": units}, workers=2, ahead=2).start()
    try:
        watched = []
        order = units[:]
        random.Random(0).shuffle(order)
        for unit in order[:20]:  # half: most of them still behind the pool's place in the listing
            (outputs, _), _ = pool.claim("src", unit)
            watched.append(weakref.ref(outputs[0][1]))
            del outputs
        gc.collect()
        alive = [ref().unit for ref in watched if ref() is not None]
        assert alive == [], f"the pool still holds results it handed over: {alive[:5]}"
    finally:
        pool.close()


def test_a_build_with_the_pool_writes_the_bytes_and_counts_of_one_without(
        mini_corpus, mini_build, tmp_path, caplog):
    """The mini corpus (web tars, class folders, videos) built by 2 thread workers with the pool
    on in threads and, as `beam` is by default (`direct_running_mode: auto`, `early_render` on in
    processes), with the pool's two processes, while every core is kept busy, tokenized: every shard
    and token file, every counter and distribution the same as the session's build without the pool
    (one in-process worker: no pool runs there, and `early_render: false` turns it off as
    `test_the_pool_is_on_only_where_the_workers_are_threads` shows), and the pool did render the
    units, where it said. (The no-pool reference was a third build, with 2 threads and the pool
    off: the same bytes and counts as the one-worker build, whatever the workers, is what the
    determinism contract says; `test_build.py` also held a fourth, the default one, now built here.)"""
    import sys

    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config
    from uvd_pipeline.unit_render import list_units

    off_config, off_summary = mini_build
    summaries, outputs = {"off": off_summary}, {"off": Path(off_config.output)}
    for early, beam in (("threads", {"direct_running_mode": "multi_threading", "early_render": True,
                                     "early_render_in": "threads"}),
                        ("auto", {"direct_running_mode": "auto"})):  # the defaults: the pool in processes
        out = tmp_path / f"early_{early}"
        config = load_config(str(write_config(tmp_path / f"{early}.yaml", mini_corpus, out,
                                              off_config.tokenizer.checkpoint, direct_num_workers=2, **beam)))
        assert config.beam.running_mode == "multi_threading"
        caplog.clear()
        caplog.set_level(logging.INFO, logger="uvd_pipeline.build")
        with busy_machine():
            summaries[early] = run_build(config).summary
        outputs[early] = out
        units = sum(map(len, list_units(config).values()))
        assert early_rendered(caplog) == (units, units)
        processes = early == "auto" and sys.platform.startswith("linux")
        assert any(r.getMessage().endswith("(in processes)" if processes else "(in threads)")
                   for r in caplog.records)
        assert (summaries[early]["run"]["worker_mode"], off_summary["run"]["worker_mode"]) == (
            "multi_threading", "in_memory")
    for early in ("threads", "auto"):
        assert shard_digests(outputs[early]) == shard_digests(outputs["off"])
        tokens = {e: sorted(p.read_bytes() for p in (outputs[e] / "tokens").rglob("*.arrow")) for e in (early, "off")}
        assert tokens[early] == tokens["off"] and tokens["off"]
        assert summaries[early]["run"]["counters"] == summaries["off"]["run"]["counters"]
        distributions = {e: {k: v["count"] for k, v in summaries[e]["run"]["distributions"].items()}
                         for e in (early, "off")}
        assert distributions[early] == distributions["off"]
        assert json.loads((outputs[early] / "summary.json").read_text())["totals"] == summaries["off"]["totals"]
    assert summaries["off"]["run"]["counters"]["web.units_rendered"] > 0
    assert summaries["off"]["run"]["counters"].get("clips.records", 0) > 0


def test_the_pool_is_on_only_where_the_workers_are_threads(tmp_path, mini_corpus, tiny_tokenizer):
    from uvd_pipeline.config import load_config
    from uvd_pipeline.early_render import wanted

    def config(**beam):
        return load_config(str(write_config(tmp_path / "c.yaml", mini_corpus, tmp_path / "o", tiny_tokenizer, **beam)))

    assert wanted(config(direct_num_workers=2, direct_running_mode="auto"))
    assert not wanted(config(direct_num_workers=1, direct_running_mode="in_memory"))  # one rendering thread
    assert not wanted(config(direct_num_workers=2, direct_running_mode="multi_processing"))
    assert not wanted(config(direct_num_workers=4, direct_running_mode="auto"))  # processes beyond 2
    assert not wanted(config(direct_num_workers=2, direct_running_mode="auto", early_render=False))
    with pytest.raises(ValueError, match="early_render_in"):
        config(direct_num_workers=2, early_render_in="fibres")


class PlainRenderer:
    """A renderer for the pool's render processes (inherited by the fork, so it needs no pickling):
    'bad*' units raise, 'odd*' units raise an error pickle cannot carry, 'slow*' units run until
    cancelled, 'die*' units end their process; the others return results and report metrics."""

    def __init__(self, name: str = "src") -> None:
        self.source = SimpleNamespace(name=name)

    def unit_key(self, unit: str) -> str:
        return unit

    def render(self, unit: str, cancelled=None):
        import os

        if unit.startswith("bad"):
            raise ValueError(f"cannot read {unit}")
        if unit.startswith("odd"):
            error = RuntimeError(f"odd {unit}")
            error.handle = threading.Lock()  # not picklable
            raise error
        if unit.startswith("die"):
            os._exit(3)
        while unit.startswith("slow"):
            if cancelled():
                raise RenderCancelled(unit)
            time.sleep(0.01)
        count(self.source.name, "units_rendered")
        distribution("stage.read_records", 3)
        return [("sentences", f"{unit}-sentence from pid {os.getpid()}")], f"{unit}-digest"


def test_in_processes_results_errors_and_metrics_come_back():
    """The pool's render processes (`early_render_in: auto` on Linux): results and recorded metrics
    cross the pipe; a unit's error reaches the step that takes it, one pickle cannot carry as a
    RuntimeError naming it, a process that dies as an error naming the unit; the others go on."""
    import os

    units = ["u0", "bad1", "odd2", "u3", "die4", "u5"]
    pool = EarlyRender(lambda: {"src": PlainRenderer()}, {"src": units}, workers=2, ahead=6, processes=True).start()
    try:
        assert pool.in_processes
        (outputs, digest), metrics = pool.claim("src", "u0")
        assert digest == "u0-digest" and outputs[0][1].startswith("u0-sentence from pid ")
        assert int(outputs[0][1].rsplit(" ", 1)[1]) != os.getpid()  # rendered in another process
        assert ("count", "src.units_rendered", 1) in metrics and ("distribution", "stage.read_records", 3) in metrics
        with pytest.raises(ValueError, match="cannot read bad1"):
            pool.claim("src", "bad1")
        with pytest.raises(RuntimeError, match="RuntimeError: odd odd2"):
            pool.claim("src", "odd2")
        assert pool.claim("src", "u3")[0][1] == "u3-digest"
        with pytest.raises(RuntimeError, match="render process ended .* unit die4"):
            pool.claim("src", "die4")
        assert pool.claim("src", "u5")[0][1] == "u5-digest"  # its thread renders on without the process
    finally:
        pool.close()


def test_in_processes_close_cancels_the_running_unit_and_ends_the_processes():
    pool = EarlyRender(lambda: {"src": PlainRenderer()}, {"src": ["slow0", "u1"]}, workers=1, ahead=2,
                       processes=True).start()
    children = [child._process for child in pool._children]
    thread, got = _claim_in_thread(pool, "slow0")
    time.sleep(0.2)
    pool.close()
    thread.join(WAIT)
    assert isinstance(got.get("error"), RenderCancelled)
    assert all(not process.is_alive() for process in children)


def test_in_processes_a_render_process_never_outlives_the_build():
    """A build process that ends abruptly (os._exit, as a kill would) while its render process is
    in the middle of a unit: the render process is gone within seconds, not left writing."""
    import os

    script = f"""
import os, time
from test_early_render import PlainRenderer
from uvd_pipeline.early_render import EarlyRender
pool = EarlyRender(lambda: {{"src": PlainRenderer()}}, {{"src": ["slow0"]}}, workers=1, ahead=1, processes=True).start()
print(pool._children[0]._process.pid, flush=True)
time.sleep(0.5)
os._exit(0)
"""
    done = _run_script(script)
    assert done.returncode == 0, done.stderr
    child = int(done.stdout.split()[0])
    deadline = time.monotonic() + WAIT
    while os.path.exists(f"/proc/{child}") and "zombie" not in open(f"/proc/{child}/status").read().lower():
        assert time.monotonic() < deadline, "the render process outlived the build"
        time.sleep(0.05)


def test_in_processes_a_failed_fork_falls_back_to_threads(monkeypatch, caplog):
    """No process can be forked (out of memory or process slots): the pool says so and renders in
    its threads, with the same results."""
    import uvd_pipeline.early_render as early_render

    made = []

    class Refused(early_render._RenderProcess):
        def __init__(self, renderers):
            if made:
                raise OSError(11, "Resource temporarily unavailable")
            super().__init__(renderers)
            made.append(self)

    monkeypatch.setattr(early_render, "_RenderProcess", Refused)
    caplog.set_level(logging.WARNING, logger="uvd_pipeline.early_render")
    pool = EarlyRender(lambda: {"src": PlainRenderer()}, {"src": ["u0", "u1"]}, workers=2, ahead=2,
                       processes=True).start()
    try:
        assert not pool.in_processes and "rendering in threads" in caplog.text
        assert not made[0]._process.is_alive()  # the one forked before the failure was ended
        assert [pool.claim("src", u)[0][1] for u in ("u0", "u1")] == ["u0-digest", "u1-digest"]
    finally:
        pool.close()


def test_in_processes_ctrl_c_while_forking_is_not_lost():
    """A Ctrl-C that arrives while the render processes are forked: Python drops exceptions raised
    in its fork callbacks, so a KeyboardInterrupt there was lost (the build went on; logging's lock,
    which a callback re-releases, stayed held and the build's other threads hung at their next log
    line). Here the signal is raised inside the fork on purpose: the pool's start raises the
    KeyboardInterrupt, and another thread can still log."""

    script = """
import logging, os, signal, sys, threading
signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever the test runner's shell left it as
from test_early_render import PlainRenderer
from uvd_pipeline.early_render import EarlyRender
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
os.register_at_fork(after_in_parent=lambda: signal.raise_signal(signal.SIGINT))
pool = EarlyRender(lambda: {"src": PlainRenderer()}, {"src": ["u0"]}, workers=1, ahead=1, processes=True)
try:
    pool.start()
    print("not interrupted", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
finally:
    pool.close()
logger = threading.Thread(target=lambda: logging.getLogger("t").info("a thread logs"))
logger.start()
logger.join(10)
print("logger hung" if logger.is_alive() else "logger done", flush=True)
os._exit(0)
"""
    done = _run_script(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["interrupted", "a thread logs", "logger done"], done.stdout + done.stderr


def _run_script(script: str) -> "subprocess.CompletedProcess":
    """`script` in a fresh interpreter that imports this test module and the repository."""
    import os
    import subprocess
    import sys

    tests = os.path.dirname(os.path.abspath(__file__))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.path.dirname(tests)])})
