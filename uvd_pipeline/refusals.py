"""Which errors a build says in one `error:` line (the operating system's refusal, this machine's
error) and which are bugs whose traceback must be seen; and that line. A module of its own (no
Beam, no config models), imported when the command or a Beam worker process starts (`log_filters`, `beam_worker`): a
worker judges an error when it meets one, and a worker at its open-file limit cannot import a
module then (EMFILE opening its file), which left a failed bundle unanswered and the build waiting.

What counts is the error raised and what it was raised from (`raise ... from`, `__cause__`), never
what it was raised while handling (`__context__`): a bug met while a full disk unwinds (a cleanup
that fails) is a bug, and keeps its traceback. The one implicit link followed is Beam's own re-raise
of a step's error with the step named (`DoFnRunner._reraise_augmented`: the same error, retold)."""

from __future__ import annotations

import builtins
import codecs
import errno
import os
import re
from typing import Iterator

from sources.records import MachineError

# What the user does when the operating system refuses a read or write; any other OSError is ours.
OS_REFUSALS: dict[int, str] = {
    errno.ENOSPC: "free space there (or name another folder) and run the same command again",
    errno.EDQUOT: "free space or raise the disk quota there, then run the same command again",
    errno.EFBIG: "a file reached the largest size allowed (ulimit -f, or the file system's limit): "
                 "raise it or name another folder, then run the same command again",
    errno.EROFS: "the file system is mounted read-only: remount it read-write, or use a folder on a writable one",
    errno.EACCES: "give this user access to it, or name another folder",
    errno.EPERM: "give this user access to it, or name another folder",
    errno.EIO: "the disk reported an input/output error: check it (dmesg), then run the same command again",
}
# Beam passes a worker's exception on as text: its traceback, whose raised line is
# "OSError: [Errno 28] No space left on device: 'f' [while running ...]": the message's number and words
_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\] ([^:\[\]]+?)(?:: '([^']*)')?(?: \[while running '[^']*'\])?$")
# the step Beam adds to an error's message when it re-raises it (`DoFnRunner._reraise_augmented`)
_STEP_TAG = re.compile(r" \[while running '[^']*'\]$")
# a traceback's text: its blocks start at this line, each block's raised line is "module.Type: message"
_HEADER = "Traceback (most recent call last):"
_RAISED_LINE = re.compile(r"([A-Za-z_][\w.]*)(?:: (.*))?")
# how Python's traceback text says a block was raised from (explicit) the one above it
_CAUSE_JOINT = "The above exception was the direct cause of the following exception:"
# the names a worker's text gives an OSError (a refusal's errno is judged only on these) and a MachineError
OS_ERROR_NAMES = frozenset(name for name, value in vars(builtins).items()
                           if isinstance(value, type) and issubclass(value, OSError))
_MACHINE_NAME = re.compile(r"(?:sources\.\w+\.)?MachineError")
# the runner's log of a worker process's log entry (`local_job_service.BeamFnLoggingServicer`): the
# entry as proto text on one line, its message's line ends and quotes escaped
_WORKER_LOG = re.compile(r'Worker: .*?\bmessage: "((?:[^"\\]|\\.)*)"', re.S)
MACHINE_FIXES: dict[int, str] = {
    errno.EMFILE: "this process may open too few files: raise the limit (ulimit -n), then run the same command again",
    errno.ENFILE: "the system has too many files open: close some, then run the same command again",
    errno.ENOMEM: "the machine ran out of memory: free some (or run fewer workers), then run the same command again",
}


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc`, then what it was raised from (`__cause__`), each once: a chain that comes back to an
    exception it passed ends there. What it was raised while handling (`__context__`) is followed
    only from Beam's re-raise of a step's error (tagged `_tagged_with_step`)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        retold = getattr(exc, "_tagged_with_step", False) is True
        exc = exc.__cause__ if exc.__cause__ is not None else (exc.__context__ if retold else None)


def carries_text(exc: BaseException) -> bool:
    """Whether `exc` is the runner's retelling of a worker's error as its traceback's text (a
    RuntimeError), or a logged worker entry `log_filters` judges (an Exception): only there is an
    error judged by text; any other exception by its type and errno (a bug's message may hold a
    user's path that reads like an OS error)."""
    return type(exc) in (RuntimeError, Exception)


def raised_lines(text: str) -> Iterator[tuple[str, str]]:
    """(type name, message) of the errors a traceback's text tells were raised: its last block's,
    then the one before while that one was raised from it or is Beam's re-raise of it (its
    message ending in the step); never one it was raised while handling. Blocks start only at
    the exact header line: what a message holds (a line end, a chain joint) stays in it."""
    blocks = _blocks(text)
    at = len(blocks) - 1
    while at >= 0:
        name, message = _raised_line(blocks[at]) or ("", "")
        if name:
            yield name, message
        if at == 0 or not (blocks[at - 1].rstrip().endswith(_CAUSE_JOINT) or _STEP_TAG.search(message)):
            return
        at -= 1


def _blocks(text: str) -> list[str]:
    """A traceback's text cut at each header line (what stands before the first is no block);
    a text without one is one block."""
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if line == _HEADER]
    if not starts:
        return [text]
    return ["\n".join(lines[a:b]) for a, b in zip(starts, starts[1:] + [len(lines)])]


def _raised_line(block: str) -> tuple[str, str] | None:
    """A block's raised line as (type name, its message's first line): the first line past the
    header that is not indented (a frame) and reads `module.Type: message`."""
    for line in block.split("\n"):
        if line and line != _HEADER and not line[0].isspace() and (found := _RAISED_LINE.fullmatch(line)):
            return found.group(1), found.group(2) or ""
    return None


def _text_of(link: BaseException) -> Iterator[tuple[str, str]]:
    """The raised lines of a text-carrying error (`carries_text`); nothing for any other."""
    if carries_text(link):
        yield from raised_lines(_unescaped(str(link)))


def _unescaped(text: str) -> str:
    """The message of a worker process's log entry as the runner logs it (`_WORKER_LOG`), with
    its line ends and quotes back, so that its chain can be told apart; any other text as it is."""
    found = _WORKER_LOG.match(text)
    if found is None:
        return text
    try:
        return codecs.escape_decode(found.group(1).encode())[0].decode("utf-8", "replace")
    except ValueError:  # not proto text after all
        return text


def os_refusal(exc: BaseException, where: str | None) -> str | None:
    """The `error:` line for a disk full, a read-only or forbidden folder, a size limit or a
    failing disk that is `exc` or what it was raised from (or in the text a Beam worker's error
    became): the user must fix those, and a traceback names neither the path nor the fix. None for
    anything else (our bugs keep their traceback). `where`: the folder named when the error names
    no file."""
    return _errno_line(exc, where, OS_REFUSALS)


def _errno_line(exc: BaseException, where: str | None, fixes: dict[int, str]) -> str | None:
    """The `error:` line for the first OSError of `exc`'s chain (an object, or an OSError's raised
    line in a worker's text) whose number `fixes` has: the file (else `where`), the system's
    words, the number's name, the fix."""
    for link in exception_chain(exc):
        if isinstance(link, OSError) and link.errno in fixes:
            code, message, path = link.errno, link.strerror or os.strerror(link.errno), link.filename
            return _errno_text(code, message, path, where, fixes)
        for name, text in _text_of(link):
            found = _ERRNO_TEXT.match(text) if name in OS_ERROR_NAMES else None
            if found and int(found.group(1)) in fixes:
                return _errno_text(int(found.group(1)), found.group(2), found.group(3), where, fixes)
    return None


def _errno_text(code: int, message: str, path: str | None, where: str | None, fixes: dict[int, str]) -> str:
    return f"{path or where or 'the output'}: {message} ({errno.errorcode[code]}); {fixes[code]}"


def machine_error(exc: BaseException) -> str | None:
    """The `error:` line for this machine's error met reading an input (`sources.records.MachineError`:
    too many open files, a missing temporary folder) that is `exc` or what it was raised from (or
    a MachineError's raised line in the text a Beam worker's error became): the input is not at
    fault and the build stopped uncommitted, so the same command once it is mended reads it
    again. None for anything else."""
    for link in exception_chain(exc):
        if isinstance(link, MachineError):
            return _machine_line(_STEP_TAG.sub("", str(link)))
        for name, text in _text_of(link):
            if _MACHINE_NAME.fullmatch(name):
                return _machine_line(_STEP_TAG.sub("", text))
    return None


def _machine_line(message: str) -> str:
    code = re.search(r"\[Errno (\d+)\]", message)
    fix = MACHINE_FIXES.get(int(code.group(1)) if code else -1,
                            "an error of this machine, not of the input: mend it, then run the same "
                            "command again")
    return f"{message}; {fix}"


def output_machine_error(exc: BaseException, where: str | None) -> str | None:
    """The `error:` line for too many open files or no memory met on the build's own files (writing
    a shard, reading the unit store: an OSError, not a source's `MachineError`), or None. Said in one
    line with the fix, as on the input side: a low `ulimit -n` is what the user meets and mends. But
    a file our own code leaves open would end the same way, so the line says that `-v` shows the
    traceback (`cli.main` prints it then), which such a report needs."""
    line = _errno_line(exc, where, MACHINE_FIXES)
    return None if line is None else f"{line} (the traceback of where it was met: run the command with -v)"


_LOCK_LOST_NAME = re.compile(r"(?:uvd_pipeline\.output_lock\.)?LockLost")


def lock_lost(exc: BaseException) -> str | None:
    """The `error:` line for a build whose output's lock another build took while it ran
    (`output_lock.LockLost`: a `--force-unlock`, say), or None: one line, not Beam's traceback."""
    for link in exception_chain(exc):
        found = [_STEP_TAG.sub("", str(link))] if type(link).__name__ == "LockLost" else \
            [_STEP_TAG.sub("", text) for name, text in _text_of(link) if _LOCK_LOST_NAME.fullmatch(name)]
        if found:
            return (f"{found[0]}; another build took this output's lock while this one ran (--force-unlock, "
                    "or a takeover of a lock it took for stale): this build stopped, and the same command "
                    "run once the other is done finishes the job")
    return None


def refusal(exc: BaseException, where: str | None) -> str | None:
    """The `error:` line for an error the user must mend (`os_refusal`, `machine_error`,
    `output_machine_error`, `lock_lost`), or None."""
    return os_refusal(exc, where) or machine_error(exc) or output_machine_error(exc, where) or lock_lost(exc)
