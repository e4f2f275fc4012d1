"""The learning-rate schedule both training loops use (tokenizer.fit, trainer.fit): linear warm-up,
then a cosine from `lr` down to `min_lr` at `max_steps`."""

from __future__ import annotations

import math


def warmup_cosine(step: int, lr: float, warmup_steps: int, max_steps: int, min_lr: float = 0.0) -> float:
    """LR of update `step` (0-based); `lr` itself when there are no steps after the warm-up."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max_steps - warmup_steps
    if span <= 0:
        return lr
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
