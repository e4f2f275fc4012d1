"""OpenCV's own log silenced while it decodes a file the build judges itself.

OpenCV writes its codecs' complaints to stderr (`[ WARN:0@0.300] ... OpenJPEG2000: Image has
unknown or unspecified color space, SRGB is assumed` for every raw JPEG 2000 codestream, `[ERROR
...]` lines for a damaged one), between a build's log lines and once per file. The decode's result
says all the build needs: a file OpenCV does not decode goes to Pillow, whose reject names why.
The level is process-wide in OpenCV, so threads inside count in and the last one out restores
what was set before (a user's `OPENCV_LOG_LEVEL` included).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import cv2

_LOCK = threading.Lock()
_INSIDE = [0]  # threads inside a quiet block
_BEFORE: list[int] = []  # the level the first one in found


@contextlib.contextmanager
def opencv_quiet() -> Iterator[None]:
    """OpenCV logs nothing inside the block (any thread's)."""
    with _LOCK:
        if _INSIDE[0] == 0:
            _BEFORE[:] = [cv2.utils.logging.getLogLevel()]
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        _INSIDE[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            _INSIDE[0] -= 1
            if _INSIDE[0] == 0:
                cv2.utils.logging.setLogLevel(_BEFORE[0])
