"""The garbage collector held off while a command starts (`uvd_pipeline.startup_gc`)."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent

# Runs `python -m uvd_pipeline ARGS` as the command line does, and prints which collections ran
# before the build's run froze the heap (`build.heap_frozen`) and whether the collector was on
# when the run started and when the command ended; and, from each process forked to render units
# (`early_render`), whether its collector was on as it rendered each unit.
WATCH = """
import gc, os, runpy, sys
before = []
def watch(phase, info):
    if phase == "start" and not gc.get_freeze_count():
        before.append(info["generation"])
gc.callbacks.append(watch)
fork = os.fork
def noting_fork():
    pid = fork()
    early = sys.modules.get("uvd_pipeline.early_render") if pid == 0 else None
    if early is not None:  # a render process: its units go through early._render
        render = early._render
        def noted(*args):
            print(f"RENDER {os.getpid()} ENABLED {gc.isenabled()}", file=sys.stderr, flush=True)
            return render(*args)
        early._render = noted
    return pid
os.fork = noting_fork
def report():
    print(f"COLLECTIONS {len(before)} FULL {before.count(2)} ENABLED {gc.isenabled()}", file=sys.stderr)
import atexit
atexit.register(report)
sys.argv = ["uvd_pipeline", *sys.argv[1:]]
runpy.run_module("uvd_pipeline", run_name="__main__", alter_sys=True)
"""


def _command(tmp_path: Path, *args: str) -> str:
    return _watched(*args)[0]


def _watched(*args: str) -> tuple[str, list[str]]:
    """The command's COLLECTIONS line and its render processes' RENDER lines (one a unit)."""
    run = subprocess.run([sys.executable, "-c", WATCH, *args], cwd=REPO, capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    line, = [line for line in run.stderr.splitlines() if line.startswith("COLLECTIONS")]
    return line, [line for line in run.stderr.splitlines() if line.startswith("RENDER ")]


def test_a_build_runs_no_collection_before_its_run_and_collects_during_it(mini_corpus, tmp_path):
    """Importing Beam and making the graph ran ~400 collections, 2 of them full (0.14 s of a
    900-image build's 2.4 CPU-s in its main process), on objects that all live to the end. None
    runs now before the run freezes them; the collector is on from there to the end."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "version": 1, "output": str(tmp_path / "out"), "seed": 0, "image": {"size": 64},
        "sources": [{"name": "web", "type": "laion", "path": str(mini_corpus / "laion"), "num_shards": 2}],
        "tokenizer": {"enabled": False},
        "beam": {"runner": "DirectRunner", "direct_num_workers": 2, "direct_running_mode": "auto"},
    }))
    line, renders = _watched("build", str(config), "--no-tokenize")
    _, collections, _, full, _, enabled = line.split()
    assert int(collections) <= 2 and full == "0" and enabled == "True", line  # before: 100s, 2 full
    assert (tmp_path / "out" / "summary.json").exists()
    # the processes forked to render units while the build starts turn the collector back on too
    assert renders and all(render.endswith("ENABLED True") for render in renders), renders


def test_other_commands_collect_as_usual(mini_build):
    """A command other than build turns the collector back on before its work."""
    config, _ = mini_build
    line = _command(Path(config.output), "verify", str(config.output))
    assert line.endswith("ENABLED True"), line


def test_resume_turns_back_on_only_what_pause_turned_off():
    from uvd_pipeline import startup_gc

    assert gc.isenabled()
    startup_gc.pause()
    try:
        assert not gc.isenabled()
    finally:
        startup_gc.resume()
    assert gc.isenabled()
    gc.disable()  # someone else's
    try:
        startup_gc.pause()
        startup_gc.resume()
        assert not gc.isenabled()
    finally:
        gc.enable()
