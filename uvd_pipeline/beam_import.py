"""Beam imported without the connectors no build uses: `import apache_beam` loads every IO
connector it ships, MongoDB's (pymongo and bson, 130 modules) and BigQuery's, Pub/Sub's and
GCS's (requests, the BigQuery clients) among them, about 0.25 CPU-s of every build's fixed cost
(issue 18's startup). Beam imports each of them in a `try` that lets it go when it is missing, so
they are held back while Beam's package loads, and let go again right after: a later explicit
import of one (a Dataflow run's) loads it as usual."""

from __future__ import annotations

import logging
import sys
from types import ModuleType

# each is imported by `apache_beam.io` in a `try ... except ImportError`: MongoDB's module falls
# back to None for what it names (and warns, quietened here); the first of BigQuery, Pub/Sub, GCS
# and the cross-language IOs missing skips all of them
HELD_BACK = ("bson", "pymongo", "apache_beam.io.gcp.bigquery")
_WARNS = "apache_beam.io.mongodbio"  # "Could not find a compatible bson package."


def import_beam() -> ModuleType:
    """`apache_beam`, imported the first time without the modules of `HELD_BACK`."""
    if "apache_beam" in sys.modules:
        return sys.modules["apache_beam"]
    held = [name for name in HELD_BACK if name not in sys.modules]
    logger = logging.getLogger(_WARNS)
    disabled = logger.disabled
    for name in held:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ModuleNotFoundError
    logger.disabled = True
    try:
        import apache_beam
    finally:
        logger.disabled = disabled
        for name in held:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
    return apache_beam
