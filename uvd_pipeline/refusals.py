"""Which errors a build says in one `error:` line (the operating system's refusal, this machine's
error) and which are bugs whose traceback must be seen; and that line. A module of its own, light
and imported when the command or a Beam worker process starts (`log_filters`, `beam_worker`): a
worker judges an error when it meets one, and a worker at its open-file limit cannot import a
module then (EMFILE opening its file), which left a failed bundle unanswered and the build waiting."""

from __future__ import annotations

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
# Beam passes a worker's exception on as text: "OSError: [Errno 28] No space left on device: 'f' [while ...]"
_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\] ([^:\[\]]+?)(?:: '([^']*)')?(?: \[while running|$)", re.M)
# a source's `MachineError` as a Beam worker's text: "sources.records.MachineError: planning x.mp4: ..."
_MACHINE_TEXT = re.compile(r"\bMachineError: (.+?)(?: \[while running '[^']*'\])?$", re.M)
# the step Beam adds to an error's message when it re-raises it (`DoFnRunner._reraise_augmented`)
_STEP_TAG = re.compile(r" \[while running '[^']*'\]$")
MACHINE_FIXES: dict[int, str] = {
    errno.EMFILE: "this process may open too few files: raise the limit (ulimit -n), then run the same command again",
    errno.ENFILE: "the system has too many files open: close some, then run the same command again",
    errno.ENOMEM: "the machine ran out of memory: free some (or run fewer workers), then run the same command again",
}


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc`, then what it was raised from or while handling (`__cause__`, else `__context__`),
    each once: a chain that comes back to an exception it passed (one raised again in its own
    handler) ends there."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def os_refusal(exc: BaseException, where: str | None) -> str | None:
    """The `error:` line for a disk full, a read-only or forbidden folder, a size limit or a
    failing disk met anywhere in `exc`'s chain (or in the text a Beam worker's error became): the
    user must fix those, and a traceback names neither the path nor the fix. None for anything
    else (our bugs keep their traceback). `where`: the folder named when the error names no file."""
    for link in exception_chain(exc):
        if isinstance(link, OSError) and link.errno in OS_REFUSALS:
            code, text, path = link.errno, link.strerror or os.strerror(link.errno), link.filename
        elif (found := _ERRNO_TEXT.search(str(link))) and int(found.group(1)) in OS_REFUSALS:
            code, text, path = int(found.group(1)), found.group(2), found.group(3)
        else:
            continue
        return f"{path or where or 'the output'}: {text} ({errno.errorcode[code]}); {OS_REFUSALS[code]}"
    return None


def machine_error(exc: BaseException) -> str | None:
    """The `error:` line for this machine's error met reading an input (`sources.records.MachineError`:
    too many open files, a missing temporary folder), anywhere in `exc`'s chain or in the text a
    Beam worker's error became: the input is not at fault and the build stopped uncommitted, so
    the same command once it is mended reads it again. None for anything else."""
    for link in exception_chain(exc):
        text = _STEP_TAG.sub("", str(link)) if isinstance(link, MachineError) else None
        if text is None and (found := _MACHINE_TEXT.search(str(link))):
            text = found.group(1)
        if text is not None:
            code = _ERRNO_TEXT.search(text)
            fix = MACHINE_FIXES.get(int(code.group(1)) if code else -1,
                                    "an error of this machine, not of the input: mend it, then run the same "
                                    "command again")
            return f"{text}; {fix}"
    return None


def refusal(exc: BaseException, where: str | None) -> str | None:
    """The `error:` line for an error the user must mend (`os_refusal`, `machine_error`), or None."""
    return os_refusal(exc, where) or machine_error(exc)
