"""Variables a build writes into its own process's environment for the processes it starts,
taken back when the last user of them in the process ends.

Why: child processes inherit `os.environ` as it is when they start, so a build must write there
what its workers need (one-thread BLAS, distributed's nanny settings). A program that calls
`run_build` must find its own environment as it left it afterwards, or every process it starts
later inherits the build's settings. Builds may run side by side in threads and nest their blocks,
so the writes stay until the last block of a loan closes, and only a variable that still holds
what was written goes back: one the program itself set meanwhile to another value, in any thread,
is its own and stays. (One it set meanwhile to the very value written cannot be told from the
write, and is taken back too.)
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator, Mapping


class EnvironmentLoan:
    """One kind of write (the local runner's workers, Dask's nannies): `kept()` around the time its
    child processes start; `note(values)` before each write of `values` into `os.environ`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0  # blocks alive in this process
        self._before: dict[str, str] = {}  # the environment as the first of them found it
        self._written: dict[str, str] = {}  # what was written (or is about to be) into it

    @contextmanager
    def kept(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._before = dict(os.environ)
                self._written = {}
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    _give_back(self._before, self._written)

    def note(self, values: Mapping[str, str]) -> None:
        """Values about to be written: a value the environment already holds is not a write (the
        caller's own, or one noted earlier), so it is never taken back for this note."""
        with self._lock:
            for name, value in values.items():
                if os.environ.get(name) != value:
                    self._written[name] = value


def _give_back(before: Mapping[str, str], written: Mapping[str, str]) -> None:
    """Each variable that still holds what was written goes back to its value in `before`."""
    for name, value in written.items():
        if os.environ.get(name) != value or before.get(name) == value:
            continue  # changed since by the program, or the caller's own value all along
        if name in before:
            os.environ[name] = before[name]
        else:
            del os.environ[name]
