"""A job module whose import works a while (as decoders' imports do): its cost is not the first job's."""

from __future__ import annotations

import time

_start = time.process_time()
while time.process_time() - _start < 1.0:
    pass


def ready() -> bool:
    return True
