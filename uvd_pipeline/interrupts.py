"""Ctrl-C and SIGTERM as a build meets them: where the interrupt hides in what a run raises, and
whether one is under way in this process.

Beam's DoFnRunner re-raises whatever leaves a step, a KeyboardInterrupt included, as a
`RuntimeError("KeyboardInterrupt [while running 'Write shards']")` raised while handling it: with
one in-process worker (`direct_running_mode: in_memory`, what `auto` picks for one worker) the
step runs in the build's own thread, so a Ctrl-C there reached the command as that RuntimeError,
which it did not know for an interrupt: exit 1 and three tracebacks (113-165 lines) instead of
130 and its one `interrupted:` line (hunt58b). `interruption` finds it in the chain.

Once the interrupt is under way the build abandons its run: a worker thread of this process still
inside a bundle then fails in ways that are the interrupt's doing (Beam's cleanup dropped its
bundle, `KeyError: 'bundle_42'`; the run's temporaries swept under a commit, FileNotFoundError), and
Beam printed those tracebacks above the command's last line. `under_way` tells the log filters
(`log_filters`) to leave them out; `--verbose` shows them.
"""

from __future__ import annotations

import threading

from uvd_pipeline.refusals import exception_chain

_UNDER_WAY = threading.Event()


def begin() -> None:
    """A command's run starts: no interrupt under way (an earlier run's, in this process, is over)."""
    _UNDER_WAY.clear()


def mark() -> None:
    """Called by the signal handler as it raises the interrupt in the main thread."""
    _UNDER_WAY.set()


def under_way() -> bool:
    return _UNDER_WAY.is_set()


def interruption(error: BaseException | None) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt (Ctrl-C, or `cli.Terminated` for SIGTERM) that `error` is, or was
    raised from, or that Beam's re-raise of a step's error retells (`refusals.exception_chain`);
    None for an error the interrupt had no part in, a bug met while one unwound included (its
    traceback is shown)."""
    for link in exception_chain(error):
        if isinstance(link, KeyboardInterrupt):
            return link
    return None
