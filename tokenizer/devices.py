"""The `--device` flag of the project's commands, judged before anything is loaded.

`trainer.evaluate`, `trainer.generate` and `tokenizer.evaluate` handed the flag to torch as given:
`--device cuda` on a machine without CUDA failed with torch's AssertionError after the prompt was
read, `--device tpu` with a RuntimeError listing torch's device types, both tracebacks (exit 1).
`trainer.fit` already said it in one line; they all share this judgement now. In `tokenizer/` so
`trainer/` may import it (tests/test_layering.py); each caller raises its own `UsageError`.
"""

from __future__ import annotations

import torch

CHOICES = "auto, cpu, cuda or cuda:N"


def device_problem(value: str, local_rank: int = 0) -> tuple[torch.device | None, str | None]:
    """(device, None) for `--device` auto | cpu | cuda | cuda:N that this process can use, else
    (None, why) naming the flag: a device torch does not know, one we do not run on, or a GPU this
    machine lacks. `local_rank`: the CUDA index of a plain `cuda` (a torchrun rank's own GPU)."""
    kind = ("cuda" if torch.cuda.is_available() else "cpu") if value == "auto" else value
    try:
        device = torch.device(kind)
    except (RuntimeError, ValueError):
        return None, f"--device {value!r} is no device; choose {CHOICES}"
    if device.type == "cpu":
        return torch.device("cpu"), None
    if device.type != "cuda":
        return None, f"--device {value}: only CPU and CUDA devices are supported; choose {CHOICES}"
    if not torch.cuda.is_available():
        return None, f"--device {value} asked for, but torch sees no CUDA device"
    index = local_rank if device.index is None else device.index
    if index >= torch.cuda.device_count():
        return None, f"--device {value}: torch sees {torch.cuda.device_count()} CUDA device(s), numbered from 0"
    return torch.device("cuda", index), None
