"""Beam's DoFn inspection, with each function's signature made once per process.

Beam 2.77 asks `inspect.signature` about every method of a DoFn each time it checks whether the
DoFn keeps state (`userstate.get_dofn_specs`: ~35 methods, most of them `DoFn`'s own), and it
checks each DoFn several times while it builds the graph, translates it for the runner and makes
each worker's bundle processor. A 900-image build asked 9,300 times (5,600 on the main thread
before the first bundle, 3,600 in bundle processors, mostly after the last image rendered, when
nothing else runs) for a few hundred distinct functions: ~19% of the main thread's CPU in a profile.

`install` puts a memo in front of Beam's `get_signature` (the one place its DoFn inspection calls
`inspect.signature`) for plain Python functions and the methods bound to them: their signature
depends on the function alone (a bound method's drops its first parameter whatever it is bound
to), and a `Signature` is immutable, so handing out the same one changes nothing Beam sees. A
function whose signature could change under the memo is not memoized: one with a `__signature__`
or `__wrapped__` (inspect reads those), and any whose code, defaults or annotations were replaced
or changed in place since (their items checked on each hit). Entries go with their function (weak keys)."""

from __future__ import annotations

import logging
import threading
import types
import weakref
from typing import Any, Callable

_INSTALLED = False
_LOCK = threading.Lock()


_BETWEEN = object()  # parts `_identity`'s flat tuple apart: no key or value of a dict is it


def _identity(func: types.FunctionType) -> tuple[Any, ...]:
    """What a function's signature is made of, compared item by item, by identity, on each hit:
    its code and defaults, and a snapshot of its keyword defaults' and annotations' items, so that
    a dict changed in place (`f.__annotations__["x"] = str`) misses as well as one replaced."""
    kwdefaults = func.__kwdefaults__ or {}
    return (func.__code__, func.__defaults__, _BETWEEN, *(part for item in kwdefaults.items() for part in item),
            _BETWEEN, *(part for item in func.__annotations__.items() for part in item))


def memoized(get_signature: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`get_signature`, answered from a per-function memo where that is safe (module doc)."""
    memo: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def cached(func: Any) -> Any:
        bound = type(func) is types.MethodType
        plain = func.__func__ if bound else func
        if type(plain) is not types.FunctionType or "__signature__" in plain.__dict__ or "__wrapped__" in plain.__dict__:
            return get_signature(func)
        key = (bound, _identity(plain))
        entry = memo.get(plain)
        if entry is not None:
            found = entry.get(bound)
            if found is not None and len(found[0]) == len(key[1]) and all(a is b for a, b in zip(found[0], key[1])):
                return found[1]
        signature = get_signature(func)
        with _LOCK:
            memo.setdefault(plain, {})[bound] = (key[1], signature)
        return signature

    cached.__wrapped_get_signature__ = get_signature  # type: ignore[attr-defined]
    return cached


def install() -> None:
    """Memoize Beam's `get_signature` in this process, where its DoFn inspection looks it up
    (idempotent). A Beam that no longer has it where it is expected (a worker image with another
    Beam) is left as it is, with a warning: the memo only saves time, and a build must not fail
    for want of it."""
    global _INSTALLED
    with _LOCK:
        if _INSTALLED:
            return
        from apache_beam.transforms import core
        from apache_beam.typehints import decorators

        original = getattr(decorators, "get_signature", None)
        if original is None or getattr(core, "get_signature", None) is not original:
            logging.getLogger(__name__).warning(
                "this Beam's DoFn inspection is not where uvd_pipeline.beam_signatures expects it "
                "(apache_beam.transforms.core.get_signature): left unmemoized")
            _INSTALLED = True
            return
        cached = memoized(original)
        core.get_signature = cached
        decorators.get_signature = cached
        _INSTALLED = True
