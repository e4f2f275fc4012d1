"""Read and render: one input unit at a time, committed to the unit store before it is passed on."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from sources import fsio
from sources.records import (
    AnnotatedClipRecord,
    ImageRecord,
    MultiViewRecord,
    PairRecord,
    Reject,
    TupleRecord,
    VideoClipRecord,
    VideoRecord,
    safe_key,
)
from transforms.errors import exception_detail
from uvd_pipeline.keys import stable_hash
from uvd_pipeline.render import RenderSettings, render_clip, render_image, render_video
from uvd_pipeline.render_annotated import render_annotated_clip, render_multiview, render_pair, render_tuple
from uvd_pipeline.sentences import RenderedUnit, image_sentence
from uvd_pipeline.step_metrics import PROGRESS, count, distribution, timed
from uvd_pipeline.tagged import INPUTS, MAIN, REJECTS, UNITS, of_type
from uvd_pipeline.unit_store import UnitStore, UnitStoreError, UnitWriter, unit_id

RENDERERS = {
    VideoClipRecord: render_clip,
    VideoRecord: render_video,  # all clips of one video from one read: a list of results
    MultiViewRecord: render_multiview,
    AnnotatedClipRecord: render_annotated_clip,
    PairRecord: render_pair,
    TupleRecord: render_tuple,
    ImageRecord: render_image,
}


@dataclass(frozen=True)
class UnitInputs:
    """The input digest of one rendered unit (what the shards of its source were built from)."""

    source: str
    unit: str
    digest: str


class RenderUnit(beam.DoFn):
    """Read one input unit and render its records, then commit the unit's results to the unit store
    (`uvd_pipeline.unit_store`) before passing them on; a unit committed by an earlier run whose
    input is unchanged is passed on from the store without reading or decoding anything.

    Outputs: whole sentences (web images, clips, objects) on the main output, units that still
    need grouping (class images, pairs, tuples) on `units`, rejects on `rejects`, and the unit's
    input digest on `inputs`. A unit that fails part-way keeps what it rendered and adds a
    `unit_failed` reject: bad input never stops the build."""

    def __init__(self, source, settings: RenderSettings, web_images: bool, fingerprint: bool,
                 output: str, config_hash: str, verify: bool = False) -> None:
        self.source = source
        self.settings = settings
        self.web_images = web_images  # an ImageRecord is a whole one-image sentence
        self.fingerprint = fingerprint  # image units carry their dedup fingerprint
        self.output = output
        self.config_hash = config_hash
        self.verify = verify  # a stored unit's images are checked by sha256 too, not only by size

    def process(self, unit) -> Iterator[Any]:
        name = self.source.name
        store = UnitStore(self.output, name, self.config_hash)
        loaded = store.load(unit, verify_images=self.verify)
        if loaded is not None:
            outputs, digest = loaded
            count(name, "units_reused")
            count(name, "outputs_reused", len(outputs))
        else:
            outputs, digest = self._render_unit(store, unit)
            count(name, "units_rendered")
        yield TaggedOutput(INPUTS, UnitInputs(name, unit_id(name, unit), digest))
        for tag, item in outputs:
            yield TaggedOutput(tag, item) if tag != MAIN else item

    def _render_unit(self, store: UnitStore, unit) -> tuple[list[tuple[str, Any]], str]:
        name = self.source.name
        writer = store.writer(unit)
        outputs: list[tuple[str, Any]] = []
        clock, records = [0.0], 0
        try:
            with fsio.recording_inputs() as inputs_read:
                try:
                    for item in timed(self.source.read(unit), clock):
                        if isinstance(item, Reject):
                            count(name, f"rejects.{item.reason}")
                            outputs.append((REJECTS, item))
                            continue
                        records += 1
                        count(name, "records")
                        PROGRESS.add("read records")
                        outputs.extend(self._render(item, writer))
                except UnitStoreError:
                    raise
                except Exception as exc:  # a broken unit must not stop the build
                    label = str(getattr(unit, "uris", unit))
                    key = safe_key(name, "unit", f"{stable_hash(label):016x}")
                    count(name, "rejects.unit_failed")
                    outputs.append((REJECTS, Reject(key, name, key, "read", "unit_failed",
                                                    exception_detail(exc, f"{label[:120]}: ", limit=300))))
            digest = writer.commit(outputs, inputs_read)
        except BaseException:
            writer.abandon()
            raise
        distribution("stage.read_us", clock[0] * 1e6)
        distribution("stage.read_records", records)
        return outputs, digest

    def _render(self, record, writer: UnitWriter) -> Iterator[tuple[str, Any]]:
        start = time.perf_counter()
        try:
            result: Any
            if self.fingerprint and isinstance(record, ImageRecord):
                result = render_image(record, self.settings, fingerprint=True)
            else:
                result = RENDERERS[type(record)](record, self.settings)
            if self.web_images and isinstance(result, RenderedUnit):
                result = image_sentence(result)
        except Exception as exc:  # decoders can fail in ways no reason code foresaw
            result = Reject(record.key, record.source, record.group, "render", "internal_error",
                            exception_detail(exc, limit=300))
        distribution("stage.render_us", (time.perf_counter() - start) * 1e6)
        for one in result if isinstance(result, list) else [result]:
            if isinstance(one, Reject):
                count(record.source, f"rejects.{one.reason}")
                yield REJECTS, one
                continue
            PROGRESS.add("rendered")
            stored = writer.stored(one)
            if isinstance(one, RenderedUnit):
                count(record.source, "rendered_units")
                yield UNITS, stored
            else:
                count(record.source, "rendered_sentences")
                yield MAIN, stored


class RenderSource(beam.PTransform):
    """One source's stage: its units spread over workers, each read, rendered and committed.
    Returns (sentences, units to group, rejects, input digests)."""

    def __init__(self, units: list, render: RenderUnit) -> None:
        super().__init__()
        self.units, self.render = units, render

    def expand(self, pipeline):
        rendered = (
            pipeline
            | "Units" >> beam.Create(self.units, reshuffle=False)
            | "Spread" >> beam.Reshuffle()
            | "Render" >> beam.ParDo(self.render).with_outputs(REJECTS, UNITS, INPUTS, main=MAIN)
        )
        return (of_type(rendered[MAIN], "Sentences only", (Reject, RenderedUnit, UnitInputs), negate=True),
                of_type(rendered[UNITS], "Units only", RenderedUnit),
                of_type(rendered[REJECTS], "Rejects only", Reject),
                of_type(rendered[INPUTS], "Input digests only", UnitInputs))
