"""A long command's progress on stderr, as the build prints its own: a line at most every
`every_s` seconds while it works (none for work shorter than that), then one summary line.

Here, in the package every command may import (DESIGN.md: `trainer/` and `uvd_pipeline/` import
`tokenizer/`), so `tokenizer.evaluate`, `trainer.evaluate`, `trainer.generate` and the report
share one form. stderr, so a command's table on stdout still pipes clean."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

EVERY_S = 10.0


class Progress:
    """Counts `unit`s of `what` (`advance`); `done` prints the summary. `total`, when known, adds
    the share done and the time left."""

    def __init__(self, what: str, unit: str, total: int | None = None, every_s: float = EVERY_S,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.what, self.unit, self.total, self.every_s = what, unit, total, every_s
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.count = 0
        self.started = self.last = clock()
        self.stopped: float | None = None

    def advance(self, n: int = 1, note: str = "") -> None:
        """`n` more done; a line when `every_s` passed since the last one (`note`: what else to say)."""
        self.count += n
        now = self.clock()
        if now - self.last >= self.every_s:
            self.last = now
            self._print(f"progress: {self.what}: {self._done_so_far(now)}" + (f", {note}" if note else ""))

    def stop(self) -> None:
        """The counted work ends here: `done`'s time and rate leave out what follows (the report's
        pages after its shard checks)."""
        self.stopped = self.clock()

    def done(self, note: str = "") -> None:
        """The summary: how many, in how long (up to `stop`, if called), how fast."""
        elapsed = (self.clock() if self.stopped is None else self.stopped) - self.started
        rate = f" ({self.count / elapsed:.1f} {self.unit}/s)" if elapsed > 0 else ""
        self._print(f"{self.what}: {self.count} {self.unit} in {elapsed:.1f}s{rate}" + (f", {note}" if note else ""))

    def _done_so_far(self, now: float) -> str:
        elapsed = now - self.started
        rate = self.count / elapsed if elapsed > 0 else 0.0
        text = f"{self.count}"
        if self.total:
            text += f" of {self.total} {self.unit} ({100 * self.count / self.total:.0f}%)"
        else:
            text += f" {self.unit}"
        text += f", {rate:.1f}/s, {elapsed:.0f}s"
        if self.total and rate > 0 and self.count < self.total:
            text += f", ~{(self.total - self.count) / rate:.0f}s left"
        return text

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)
