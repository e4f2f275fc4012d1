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
(`log_filters`) to leave out those `aftermath` tells are the interrupt's; `--verbose` shows them.
Any other error of a worker thread (a bug met after the signal) is shown: hiding every error once
one was under way hid a ZeroDivisionError raised by every shard write after a SIGTERM (0 of its
10 tracebacks shown, rev58f M1).
"""

from __future__ import annotations

import os
import re
import threading

from tokenizer.atomic import TMP_MARK
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


_BUNDLE = re.compile(r"bundle_\d+")  # Beam's instruction ids (`FnApiRunner`'s `bundle_<n>`)
_RUN_TMP = "_tmp"  # `output_lock.TMP_DIR`: the run's temporary folder under the output


def aftermath(error: BaseException | None, bundle: str | None = None) -> bool:
    """Whether `error`, met in a worker thread while an interrupt is under way, is the interrupt's
    own doing: a KeyboardInterrupt in its chain; Beam's cleanup dropping the bundle (a KeyError
    naming `bundle`, or any `bundle_<n>` when it is not known); or a file of the run's temporaries
    (a `.tmp-` name, or under the output's `_tmp/`) swept under a commit (FileNotFoundError). Any
    other error (a bug, a disk full) is not: its traceback stays in sight."""
    if error is None:
        return False
    if interruption(error) is not None:
        return True
    for link in exception_chain(error):  # Beam's retelling of a step's error, then the error
        if isinstance(link, KeyError) and len(link.args) == 1 and isinstance(link.args[0], str):
            if link.args[0] == bundle if bundle is not None else _BUNDLE.fullmatch(link.args[0]):
                return True
        if isinstance(link, FileNotFoundError):  # a rename names the temporary first, its target second
            names = [str(name) for name in (link.filename, link.filename2) if name] or [str(link)]
            if any(TMP_MARK in name or f"{os.sep}{_RUN_TMP}{os.sep}" in name for name in names):
                return True
    return False
