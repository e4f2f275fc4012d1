"""The build's tokenizer, loaded and compiled on a GPU while the build renders.

Why: the Tokenize step loads its model in the DoFn's `setup`, when its stage starts, after every
shard is written, and the first batch then compiles the encoder: 10-20 s for the LVM-size VQGAN on
an H200, 160 s with tuned kernels, with the GPU idle and nothing else left to overlap. Here a
thread loads the same tokenizer at the start of the build and encodes one zero batch of the
build's image size (the one static shape every later batch has), and the step's first `setup`
takes that object (`take`).

Only where the Tokenize step runs in this process (the local runner's `in_memory` and
`multi_threading` modes) and the codec will be on a GPU: on a CPU the compile would compete with
rendering for the same cores. The warmed tokenizer is the one the step would have built (same
settings, same loader), so token bytes do not change; a load that fails here is logged and left to
the step, which then fails with its own error.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from uvd_pipeline import startup_gc
from uvd_pipeline.config import BuildConfig
from uvd_pipeline.tokenize_stage import TokenizeSettings, load_tokenizer

log = logging.getLogger(__name__)
IN_PROCESS_MODES = ("in_memory", "multi_threading")


class EarlyTokenizer:
    """One tokenizer loaded and warmed on a thread; `take` waits for it (once)."""

    def __init__(self, settings: TokenizeSettings, image_size: int) -> None:
        self.settings, self.image_size = settings, image_size
        self._tokenizer: Any = None
        self._done = threading.Event()
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._load, name="uvd-early-tokenizer", daemon=True)

    def start(self) -> "EarlyTokenizer":
        self._thread.start()
        return self

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            tok = load_tokenizer(self.settings)
            if tok.compile:  # the compile happens now, on the batch shape every later batch has
                size = self.image_size
                tok.encode(np.zeros((tok.batch_size, size, size, tok.config.num_channels), np.uint8))
            tok.tokenizer_hash  # every token shard records it: hashed now, while the build renders
            self._tokenizer = tok
        except Exception as exc:  # noqa: BLE001 - the step loads it again and fails with its own error
            log.warning("early tokenizer: loading %s failed (%s); the Tokenize step loads it itself",
                        self.settings.checkpoint, exc)
        finally:
            self.seconds = time.perf_counter() - started
            self._done.set()

    def take(self) -> Any:
        """The warmed tokenizer (waiting for it), or None where loading it failed; once."""
        self._done.wait()
        tok, self._tokenizer = self._tokenizer, None
        return tok

    def close(self, wait: bool = True) -> None:
        """Drop the tokenizer; `wait` for a load still running (a finished build leaves no compile
        behind it), or not (a build that failed or was interrupted leaves at once: the daemon
        thread's compile ends with it or with the process)."""
        if wait:
            self._done.wait()
        self._tokenizer = None


_ACTIVE: dict[TokenizeSettings, EarlyTokenizer] = {}
_ACTIVE_LOCK = threading.Lock()


def take(settings: TokenizeSettings) -> Any:
    """For the Tokenize step's `setup`: this process's warmed tokenizer for these settings, if any."""
    with _ACTIVE_LOCK:
        early = _ACTIVE.get(settings)
    return early.take() if early is not None else None


def on_gpu(config: BuildConfig) -> bool:
    device = config.tokenizer.device
    if device != "auto":
        return device == "cuda"
    import torch

    return torch.cuda.is_available()


def wanted(config: BuildConfig) -> bool:
    """Whether the Tokenize step runs in this process, on a GPU."""
    beam = config.beam
    return (config.tokenizer.enabled and beam.local and beam.running_mode in IN_PROCESS_MODES
            and on_gpu(config))


@contextmanager
def tokenizer_early(config: BuildConfig) -> Iterator[EarlyTokenizer | None]:
    """The warming thread for this block (None where it is not `wanted`); joined when it ends."""
    if not wanted(config):
        yield None
        return
    startup_gc.resume()  # loading and compiling a model makes cyclic garbage: collect it as it comes
    settings = TokenizeSettings.of(config.tokenizer)
    early = EarlyTokenizer(settings, config.image.size)
    with _ACTIVE_LOCK:
        _ACTIVE[settings] = early
    failed = True
    try:
        yield early.start()
        failed = False
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.pop(settings, None)
        early.close(wait=not failed)
