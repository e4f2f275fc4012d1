"""The trainer's processes, `make tokenizer`'s (`tokenizer.fit`, `tokenizer.evaluate`) and
`uvd report` start torch's OpenMP pool with a short spin (threads sleep after 10,000 rounds instead
of 300,000), unless the user chose a wait setting: read back from libgomp itself
(`OMP_DISPLAY_ENV=VERBOSE` prints the values it took when torch loaded it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tokenizer.omp_wait import USER_WAIT_SETTINGS, prefer_short_spin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def libgomp_spincount(module: str, *args: str, **env: str) -> str:
    """GOMP_SPINCOUNT as libgomp took it in `python -m MODULE ARGS` (default `--help`: torch loads on import)."""
    clean = {k: v for k, v in os.environ.items() if k not in USER_WAIT_SETTINGS}
    clean.update(env, OMP_DISPLAY_ENV="VERBOSE", PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", module, *(args or ["--help"])], env=clean, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = re.search(r"GOMP_SPINCOUNT = '(\d+)'", done.stderr)
    assert found, f"libgomp printed no settings: {done.stderr[-2000:]}"
    return found.group(1)


@pytest.mark.parametrize("module", ["trainer.fit", "trainer.demo", "tokenizer.fit", "tokenizer.evaluate"])
def test_trainer_pool_sleeps_when_idle(module: str) -> None:
    assert libgomp_spincount(module) == "10000"  # libgomp's default, the old behaviour, is 300000


@pytest.mark.parametrize("setting, spincount", [({"OMP_WAIT_POLICY": "ACTIVE"}, "30000000000"),
                                                ({"GOMP_SPINCOUNT": "1234"}, "1234")])
def test_users_wait_setting_wins(setting: dict[str, str], spincount: str) -> None:
    assert libgomp_spincount("trainer.fit", **setting) == spincount


def test_nothing_set_once_torch_is_loaded() -> None:
    environ: dict[str, str] = {}
    assert not prefer_short_spin(environ, {"torch": object()})
    assert environ == {}
    assert not prefer_short_spin({"KMP_BLOCKTIME": "200"}, {})
    assert prefer_short_spin(environ, {}) and environ == {"GOMP_SPINCOUNT": "10000"}


def test_report_decodes_with_the_short_spin(mini_build_copy) -> None:
    """`uvd report` decodes each source's reconstructions with torch on 2 threads; it ran with
    libgomp's default spin (300,000), which on a busy machine burns the core the other thread needs."""
    config, _ = mini_build_copy
    assert libgomp_spincount("uvd_pipeline", "report", config.output) == "10000"
