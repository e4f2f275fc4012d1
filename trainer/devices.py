"""`--device` of `trainer.fit`, `trainer.evaluate` and `trainer.generate` (`tokenizer.devices`
judges it; here it becomes the trainer's `UsageError`: one `error:` line, exit 2)."""

from __future__ import annotations

import torch

from tokenizer.devices import CHOICES, device_problem

from .config import UsageError

__all__ = ["CHOICES", "device_problem", "resolve_device"]


def resolve_device(value: str, local_rank: int = 0) -> torch.device:
    """`--device` auto | cpu | cuda | cuda:N as a device this process can use, else a `UsageError`."""
    device, problem = device_problem(value, local_rank)
    if device is None:
        raise UsageError(problem)
    return device
