"""Read and render: one input unit at a time, committed to the unit store before it is passed on."""

from __future__ import annotations

from typing import Any, Iterator

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from sources.records import Reject
from uvd_pipeline import early_render
from uvd_pipeline.sentences import RenderedUnit
from uvd_pipeline.step_metrics import replay
from uvd_pipeline.tagged import INPUTS, MAIN, REJECTS, UNITS, of_type
from uvd_pipeline.unit_render import UnitInputs, UnitRenderer

__all__ = ["RenderSource", "RenderUnit", "UnitInputs"]


class RenderUnit(beam.DoFn):
    """Read one input unit and render its records, then commit the unit's results to the unit store
    (`uvd_pipeline.unit_store`) before passing them on (`unit_render.UnitRenderer`). Where this
    process runs an early render pool (`uvd_pipeline.early_render`), the unit's results come from
    it, with the metrics it recorded.

    Outputs: whole sentences (web images, clips, objects) on the main output, units that still
    need grouping (class images, pairs, tuples) on `units`, rejects on `rejects`, and the unit's
    input digest on `inputs`."""

    def __init__(self, renderer: UnitRenderer) -> None:
        self.renderer = renderer

    def process(self, carried: "Carried") -> Iterator[Any]:
        unit = carried.unit
        taken = early_render.claim(self.renderer, unit)
        if taken is None:
            outputs, inputs = self.renderer.render(unit)
        else:
            (outputs, inputs), metrics = taken
            replay(metrics)
        yield TaggedOutput(INPUTS, inputs)
        for tag, item in outputs:
            yield TaggedOutput(tag, item) if tag != MAIN else item


class Carried:
    """A unit as Beam carries it between workers: pickled whole. Units that are paths (a video, an
    object folder) were Beam strings, which its coder writes as UTF-8: a file name that is not UTF-8
    (latin-1 bytes, held as lone surrogates) stopped the whole build at `Create`."""

    __slots__ = ("unit",)

    def __init__(self, unit: Any) -> None:
        self.unit = unit

    def __reduce__(self) -> tuple:
        return Carried, (self.unit,)


class RenderSource(beam.PTransform):
    """One source's stage: its units spread over workers, each read, rendered and committed.
    Returns (sentences, units to group, rejects, input digests)."""

    def __init__(self, units: list, render: RenderUnit) -> None:
        super().__init__()
        self.units, self.render = units, render

    def expand(self, pipeline):
        rendered = (
            pipeline
            | "Units" >> beam.Create([Carried(unit) for unit in self.units], reshuffle=False)
            | "Spread" >> beam.Reshuffle()
            | "Render" >> beam.ParDo(self.render).with_outputs(REJECTS, UNITS, INPUTS, main=MAIN)
        )
        return (of_type(rendered[MAIN], "Sentences only", (Reject, RenderedUnit, UnitInputs), negate=True),
                of_type(rendered[UNITS], "Units only", RenderedUnit),
                of_type(rendered[REJECTS], "Rejects only", Reject),
                of_type(rendered[INPUTS], "Input digests only", UnitInputs))
