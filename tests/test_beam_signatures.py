"""Beam's DoFn inspection memo (`uvd_pipeline.beam_signatures`) hands out Beam's own signatures,
asks `inspect` once per function, and notices a function changed under it."""

from __future__ import annotations

import inspect

import apache_beam as beam
from apache_beam.transforms import core, userstate
from apache_beam.typehints import decorators

from uvd_pipeline import beam_signatures


class _Step(beam.DoFn):
    def process(self, element, extra=3, window=beam.DoFn.WindowParam):
        yield element, extra


def _plain(a, b=1, *rest, c, **more):
    return a


def test_the_memo_gives_beams_own_signatures():
    original = decorators.get_signature.__dict__.get("__wrapped_get_signature__", decorators.get_signature)
    cached = beam_signatures.memoized(original)
    step = _Step()
    for func in (_plain, step.process, step.setup, lambda x, y=2: x, str.upper, len, _Step, beam.Map(len).fn.process):
        assert cached(func) == original(func), func
        assert cached(func) == original(func), func  # from the memo the second time
    assert core.get_function_args_defaults(step.process) == (["element", "extra", "window"],
                                                             [3, beam.DoFn.WindowParam])


def test_a_function_is_inspected_once_and_again_when_it_changes(monkeypatch):
    calls = []
    real = inspect.signature
    monkeypatch.setattr(inspect, "signature", lambda f, *a, **k: calls.append(f) or real(f, *a, **k))
    original = decorators.get_signature.__dict__.get("__wrapped_get_signature__", decorators.get_signature)
    cached = beam_signatures.memoized(original)

    def changing(a, b=1):
        return a

    first = cached(changing)
    assert cached(changing) is first and cached(_Step().process) is cached(_Step().process)
    assert len(calls) == 2  # one per function, whatever object the method is bound to
    changing.__defaults__ = (5,)
    assert cached(changing).parameters["b"].default == 5 and len(calls) == 3

    def wrapper(x):
        return x

    wrapper.__wrapped__ = _plain  # inspect follows it: never memoized
    assert cached(wrapper) == inspect.signature(_plain)
    assert cached(wrapper) == inspect.signature(_plain)
    assert len(calls) == 3 + 4


def test_installed_a_dofns_state_check_asks_inspect_nothing_the_second_time(monkeypatch):
    beam_signatures.install()
    beam_signatures.install()  # idempotent
    assert core.get_signature is decorators.get_signature
    userstate.get_dofn_specs(_Step())
    calls = []
    real = inspect.signature
    monkeypatch.setattr(inspect, "signature", lambda f, *a, **k: calls.append(f) or real(f, *a, **k))
    assert userstate.get_dofn_specs(_Step()) == (set(), set())
    assert userstate.is_stateful_dofn(_Step()) is False
    assert calls == []


def test_a_beam_without_the_expected_lookup_is_left_alone_with_a_warning(monkeypatch, caplog):
    """A worker whose Beam moved `get_signature` (another release) builds unmemoized, warned,
    rather than failing: the memo only saves time."""
    from apache_beam.transforms import core

    monkeypatch.setattr(beam_signatures, "_INSTALLED", False)
    monkeypatch.setattr(core, "get_signature", lambda func: None)  # no longer decorators' own
    with caplog.at_level("WARNING"):
        beam_signatures.install()
    assert core.get_signature(len) is None  # untouched
    assert "left unmemoized" in caplog.text


def test_annotations_or_keyword_defaults_changed_in_place_are_seen():
    """A function's `__annotations__` or `__kwdefaults__` dict changed in place (not replaced) gives
    its new signature, as Beam's own lookup does: the memo compared the dicts by identity and
    served the stale one (`x: int` after `x` was annotated `str`)."""
    original = decorators.get_signature.__dict__.get("__wrapped_get_signature__", decorators.get_signature)
    cached = beam_signatures.memoized(original)

    def typed(self, x: int, *, k=1):
        return x

    class Step(beam.DoFn):
        def process(self, element: int):
            yield element

    step = Step()
    assert cached(typed) == original(typed) and cached(step.process) == original(step.process)
    typed.__annotations__["x"] = str  # (this module's annotations are strings: `from __future__`)
    assert cached(typed) == original(typed) and cached(typed).parameters["x"].annotation is str
    typed.__kwdefaults__["k"] = 2
    assert cached(typed) == original(typed) and cached(typed).parameters["k"].default == 2
    del typed.__annotations__["x"]
    assert cached(typed) == original(typed) and cached(typed).parameters["x"].annotation is inspect.Parameter.empty
    Step.process.__annotations__["element"] = bytes
    assert cached(step.process) == original(step.process)
    assert cached(step.process).parameters["element"].annotation is bytes
