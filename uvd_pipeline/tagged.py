"""The tagged outputs of the build's multi-output steps, and how a consumer keeps its own."""

from __future__ import annotations

from typing import Any

MAIN = "sentences"  # whole sentences
UNITS = "units"  # rendered units that still need grouping into sentences
REJECTS = "rejects"
INPUTS = "inputs"  # the input digest of each rendered input unit


class OfType:
    """Keeps the elements of one output of a multi-output step by their type.

    Beam's DaskRunner keys collections by the step that produced them, not by output tag, so every
    consumer of a step with tagged outputs receives all of them (rejects, units and sentences
    mixed). Each consumer therefore keeps its tag's type (a tagged output) or drops the types of the
    step's tagged outputs (its main output); on other runners this keeps everything."""

    def __init__(self, kinds: type | tuple[type, ...], negate: bool = False) -> None:
        self.kinds, self.negate = kinds, negate

    def __call__(self, item: Any) -> bool:
        return isinstance(item, self.kinds) != self.negate


def of_type(pcoll, label: str, kinds: type | tuple[type, ...], negate: bool = False):
    """`pcoll` (a tagged output) narrowed to `kinds` (or to everything else, with `negate`)."""
    import apache_beam as beam  # not at import: the tags are read by Beam-free render code

    return pcoll | label >> beam.Filter(OfType(kinds, negate))
