"""Counting the torch work a call does, for tests that bound it without a clock (speed is measured
in benchmarks/, not in timed tests): every torch function, every dispatched tensor operation and
the bytes of the tensors they return, and every `nn.Module` built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


@dataclass
class TorchWork:
    functions: int = 0  # torch API calls (torch.*, Tensor methods)
    operations: int = 0  # tensor operations reaching the dispatcher (allocations, copies, maths)
    bytes: int = 0  # bytes of the tensors those operations return
    modules: int = 0  # nn.Module instances constructed


class _Functions(TorchFunctionMode):
    def __init__(self, work: TorchWork) -> None:
        super().__init__()
        self.work = work

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.work.functions += 1
        return func(*args, **(kwargs or {}))


class _Operations(TorchDispatchMode):
    def __init__(self, work: TorchWork) -> None:
        super().__init__()
        self.work = work

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.work.operations += 1
        out = func(*args, **(kwargs or {}))
        self.work.bytes += sum(leaf.nbytes for leaf in tree_leaves(out) if isinstance(leaf, torch.Tensor))
        return out


def torch_work(call: Callable[[], Any], monkeypatch) -> TorchWork:
    """The torch work `call()` does; an exception it raises is swallowed (the caller checks the
    outcome separately)."""
    work = TorchWork()
    init = torch.nn.Module.__init__

    def counted(module, *args, **kwargs):
        work.modules += 1
        init(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__init__", counted)
    try:
        with _Functions(work), _Operations(work):
            call()
    except Exception:  # noqa: BLE001 - what was done before the refusal is what is counted
        pass
    finally:
        monkeypatch.setattr(torch.nn.Module, "__init__", init)
    return work
