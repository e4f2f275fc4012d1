"""Log filters the command and the build's Dask workers share: a module of its own so that a
worker sets them up without importing the command (its config models and shard readers)."""

from __future__ import annotations

import logging


class BeamImportNoise(logging.Filter):
    """Beam's import warns, on the root logger, that its BigQuery client libraries are missing
    (every build printed "apitools not found, ..."): no step of ours uses BigQuery, so the line
    only alarms people. Shown with --verbose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and str(record.msg).startswith("apitools not found"))
