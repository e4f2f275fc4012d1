"""Reading back the files a build keeps in its output folder (commit marks, `.moved` and
`.placed.json` records, stats, `summary.json`, `build.json`, the lock), judged before they are read.

A rerun, `verify` and `report` read these files whole. A damaged or replaced one (a 2 GB file, a
link to `/dev/zero`, a fifo) would take all memory or block forever: a fifo, socket or device is
refused unopened (`fsio.NotAFile`), and no more than a cap is read. Ours take a few KB (a commit
mark ~30 bytes per input file, a `.moved` record ~35 bytes per image); the cap allows millions.
"""

from __future__ import annotations

import json
from typing import Any

from sources import fsio

STATE_MAX_BYTES = 64 << 20
FIX = "not a file this build wrote: delete it and run the build again (it writes the file anew)"
FOLDER_FIX = ("a folder in place of the file the build wrote: move it away (or remove it), then run the same build "
              "command again (it writes the file anew)")


class StateFileRefused(ValueError):
    """A build's own file refused before it was read (not a regular file, or past its cap); the
    message names the file and the fix (`why`: the message less the file's name). A `ValueError`,
    as a file that is no JSON: every reader that treats a damaged file as damaged treats this one so."""

    def __init__(self, uri: str, why: str) -> None:
        self.why = why
        super().__init__(f"{uri} is {why}")


def read_state(uri: str, limit: int = STATE_MAX_BYTES) -> bytes:
    """The bytes of one of the build's own files: `StateFileRefused` for a fifo, socket or device
    (never opened), a folder in its place (said as a folder: "cannot be read (Is a directory);
    check the disk" sent the user to a disk that was fine) or a file of more than `limit` bytes
    (no more than that read)."""
    try:
        return fsio.read_bytes(uri, limit)
    except fsio.NotAFile as exc:
        raise StateFileRefused(uri, f"{exc.kind}, {FIX}") from None
    except IsADirectoryError:
        raise StateFileRefused(uri, FOLDER_FIX) from None
    except fsio.FileTooLarge:
        raise StateFileRefused(uri, f"larger than the {_shown(limit)} this file may have; {FIX}") from None


def read_state_json(uri: str, limit: int = STATE_MAX_BYTES) -> Any:
    """The JSON value of one of the build's own files (`read_state`; `ValueError` when no JSON)."""
    return json.loads(read_state(uri, limit))


def _shown(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"
