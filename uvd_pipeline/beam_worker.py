"""Imported by Beam in each local worker process as it starts (`--beam_plugins`, set by
`build.pipeline_options`), before it runs a bundle: such a process printed the traceback of an
error the command says in one `error:` line (a full disk, too many open files) three times to the
terminal, once from Beam's harness (`log_filters.quiet_refused_bundles`) and twice from its logs,
which go to its stderr through the handler Python's logging made for Beam's first warning. A bug's
traceback is left as it was. What judges an error (`refusals`) is loaded here, with the plugin: when
the error comes the process may have no file to spare for an import (too many open files)."""

from __future__ import annotations

import logging
import sys

from uvd_pipeline import beam_signatures
from uvd_pipeline.worker_parent import die_with_parent
from uvd_pipeline.log_filters import quiet_handlers, quiet_refused_bundles


def _quiet_worker() -> None:
    quiet_refused_bundles()
    quiet_handlers(h for h in logging.getLogger().handlers
                   if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is sys.stderr)


die_with_parent()  # first: a build killed while this process starts takes it along
_quiet_worker()
beam_signatures.install()  # each bundle processor inspects its DoFns' methods again
