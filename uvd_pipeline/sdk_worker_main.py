"""A local worker process's entry (`python -m uvd_pipeline.sdk_worker_main`, which the local
runner starts instead of Beam's `apache_beam.runners.worker.sdk_worker_main`, then runs that; the
same last name, so `pgrep -f sdk_worker_main` still finds the workers).

Each worker process of a multi_processing build printed Beam's start-up lines ("apitools not
found", "Logging handler created.", "No semi_persistent_directory found", "Discarding unparseable
args": hunt56c, 8 lines for 2 workers) and our own lines in Python's bare format
(`INFO:uvd_pipeline.write_steps:committed ...`) among the build's `HH:MM:SS INFO ...` lines: the
first of them is logged as Beam is imported, before anything of the build's runs there (its plugin,
`beam_worker`, comes after the options are read), and Python's logging then made its default
handler. Here the process logs to its stderr in the build's format, through the filters the
command's own handlers have, before Beam's harness is imported."""

from __future__ import annotations

import logging
import runpy
import sys

from uvd_pipeline.log_filters import LOG_DATEFMT, LOG_FORMAT, BeamWorkerNoise, quiet_handlers

HARNESS = "apache_beam.runners.worker.sdk_worker_main"


def log_as_the_build() -> None:
    """The root logger's one handler: stderr, the build's format, Beam's chatter left out."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt=LOG_DATEFMT))
    quiet_handlers([handler])
    handler.addFilter(BeamWorkerNoise())
    logging.getLogger().addHandler(handler)


def settled_harness() -> None:
    """Import what Beam's harness runs on (Beam imports cryptography's cffi bindings) and build the
    lazy module attributes its worker threads would otherwise build at once (`lazy_modules`)."""
    from importlib import import_module

    from uvd_pipeline import lazy_modules

    import_module("apache_beam.runners.worker.sdk_worker")
    lazy_modules.settle()


if __name__ == "__main__":
    log_as_the_build()
    settled_harness()
    runpy.run_module(HARNESS, run_name="__main__", alter_sys=True)
