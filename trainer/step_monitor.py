"""What the training loop watches of its steps, apart from the loop itself: a torch.profiler
over a few steps (`--profile-steps`), the timed stretch that throughput and MFU are measured over,
and the losses read back from the device once per log interval instead of once per step."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from tokenizer.atomic import write_bytes

PROFILE_NAME = "profile.txt"


class StepProfile:
    """`--profile-steps N`: torch.profiler over steps 2..N+1 (the first compiles), then the top
    operators and kernels by device time (CPU time on a CPU run) in OUT/profile.txt: where a
    step's time goes, for tuning MFU."""

    def __init__(self, steps: int, device: torch.device, path: str) -> None:
        self.steps, self.device, self.path = steps, device, path
        self._profiler: Any = None
        self._done = 0

    def step_finished(self, step_index: int) -> bool:
        """Called after each step of this run (1-based within the run; step 1 read back). True
        when the profile has just ended: the steps it covered ran slower, so `fit` times its
        throughput from there."""
        if not self.steps or self._done >= self.steps:
            return False
        if self._profiler is None:
            if step_index == 1:
                from torch.profiler import ProfilerActivity, profile

                activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
                self._profiler = profile(activities=activities)
                self._profiler.__enter__()
            return False
        self._done += 1
        if self._done == self.steps:
            self.finish()
            return True
        return False

    def finish(self) -> None:
        if self._profiler is None:
            return
        profiler, self._profiler = self._profiler, None
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        profiler.__exit__(None, None, None)
        events = profiler.key_averages()
        table = None
        keys = ("self_device_time_total", "self_cuda_time_total") if self.device.type == "cuda" else ()
        for key in keys + ("self_cpu_time_total",):
            try:
                table = events.table(sort_by=key, row_limit=50, max_name_column_width=100)
                break
            except Exception:  # noqa: BLE001 - the column's name differs across torch versions
                continue
        write_bytes(self.path, f"{self._done} steps profiled\n{table}\n".encode())


class SteadyTimer:
    """Seconds and steps of a run's timed stretch: from a read-back (the first step's, or the one
    after a profile) to the latest read-back, when the device has finished those steps; checkpoint
    writes in between are left out."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.base = self.steps = 0
        self.seconds = self._paused = 0.0

    def restart(self, steps: int) -> None:
        self.started, self.base, self.steps, self.seconds, self._paused = time.perf_counter(), steps, 0, 0.0, 0.0

    def read_back(self, steps: int) -> None:
        if self.started is None:
            self.restart(steps)
            return
        self.seconds = time.perf_counter() - self.started - self._paused
        self.steps = steps - self.base

    def pause(self, seconds: float) -> None:
        """`seconds` spent on something else (a checkpoint write) since the last read-back."""
        if self.started is not None:
            self._paused += seconds


class StepReadback:
    """Steps' [loss, grad norm] tensors queued on the device and read back together: one wait per
    log interval instead of one per step, so the host prepares the next step (loader, launches)
    while the device still computes. Reading back records every step's loss in order (the run's
    losses and its curve) and refuses a non-finite one, naming its step; `fit` reads back before
    logging, before each checkpoint (a checkpoint never holds a diverged step), after the first
    step and at least every `limit` steps."""

    def __init__(self, curve: dict[str, list], losses: list[float], limit: int = 64) -> None:
        self.curve, self.losses, self.limit = curve, losses, limit
        self._queued: list[tuple[int, torch.Tensor]] = []

    @property
    def full(self) -> bool:
        return len(self._queued) >= self.limit

    @property
    def queued(self) -> int:
        return len(self._queued)

    def add(self, step: int, values: torch.Tensor) -> None:
        self._queued.append((step, values))

    def drain(self) -> tuple[float, float]:
        """Wait for the queued steps; returns the last one's (loss, grad norm)."""
        queued, self._queued = self._queued, []
        rows = torch.stack([values for _, values in queued]).tolist()  # one device->host transfer
        for (step, _), (loss, _norm) in zip(queued, rows):
            if not math.isfinite(loss):
                raise FloatingPointError(f"the loss is {loss} at step {step}; lower --lr or check the data")
            self.losses.append(loss)
            self.curve["step"].append(step)
            self.curve["loss"].append(loss)
        return rows[-1][0], rows[-1][1]
