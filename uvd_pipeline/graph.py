"""The Beam graph of one build: Read -> Render -> Assemble -> Write.

    units --Read--> records --Render--> images/sentences --Assemble--> sentences --+
                      |                    |                   |                   +--> shards
                      +------ rejects -----+------ rejects ----+--- rejects -------+

With deduplication on (`dedup` in the config), web and class images meet in one Dedup step
between Render and Assemble, across all such sources: duplicates leave as rejects
(`duplicate_exact`, `duplicate_near`) naming their kept twin, and class sentences are cut from
the images that survive (see `uvd_pipeline.dedup`).

Every stage sends what it cannot use to a tagged `rejects` output with a reason; rejects are
written next to the sentences of the shard their key hashes to, so a shard commits its
sentences and its rejects together and a resumed build neither loses nor repeats either.

Shards already committed by an earlier run of the same config are skipped: records whose
sentence id is known before rendering (web images, video clips) are dropped before any decoding,
and the writer leaves every committed shard untouched.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.utils.shared import Shared

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
from sources import fsio
from sources.annotation_files import AnnotationFileError
from transforms.errors import exception_detail
from transforms.phash import band_probes
from uvd_pipeline.config import FORMAT_VERSION, BuildConfig
from uvd_pipeline.dedup import (
    DEDUP_SOURCE_TYPES,
    FINGERPRINTS_SUFFIX,
    PERSISTED_TYPES,
    DedupSettings,
    Fingerprint,
    Twin,
    choose_twin,
    duplicate_reject,
    exact_group,
    near_bucket,
    parse_fingerprint_lines,
)
from uvd_pipeline.keys import shard_of, stable_hash
from uvd_pipeline.render import RenderSettings, render_clip, render_image, render_video
from uvd_pipeline.render_annotated import render_annotated_clip, render_multiview, render_pair, render_tuple
from uvd_pipeline.rendered_shards import STATS_SUFFIX, ShardAddress, write_bytes_atomic, write_shard
from uvd_pipeline.sentences import RenderedUnit, Sentence, Slot, assemble, image_sentence, plan_group_sentences
from uvd_pipeline.source_factory import labeler_specs, make_source, units_per_sentence
from uvd_pipeline.unit_store import (StoreReader, UnitStore, UnitStoreError, UnitWriter, group_digest,
                                     read_shard_inputs, shard_inputs_uri, unit_id)
from uvd_pipeline.tokenize_stage import (TokenizeSettings, _load_tokenizer, committed_rendered, rendered_fields,
                                         tokenize_shard)

log = logging.getLogger(__name__)
REJECTS = "rejects"
NAMESPACE = "uvd"


class ShardRouter:
    """Maps a sentence or reject to its shard address; the same rule for both."""

    def __init__(self, config: BuildConfig) -> None:
        self.settings = RenderSettings.from_config(config)
        self.counts = {s.name: {"train": s.num_shards, "val": s.num_val_shards} for s in config.enabled_sources}

    def address(self, source: str, split: str, key: str) -> tuple[str, str, int]:
        return (source, split, shard_of(key, self.counts[source][split]))

    def of_sentence(self, sentence: Sentence) -> tuple[str, str, int]:
        return self.address(sentence.source, sentence.split, sentence.sentence_id)

    def of_reject(self, reject: Reject) -> tuple[str, str, int]:
        split = self.settings.split(reject.group, reject.split_hint)
        return self.address(reject.source, split, reject.key)


RENDERERS = {
    VideoClipRecord: render_clip,
    VideoRecord: render_video,  # all clips of one video from one read: a list of results
    MultiViewRecord: render_multiview,
    AnnotatedClipRecord: render_annotated_clip,
    PairRecord: render_pair,
    TupleRecord: render_tuple,
    ImageRecord: render_image,
}


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
    return pcoll | label >> beam.Filter(OfType(kinds, negate))


def _count(source: str, name: str, n: int = 1) -> None:
    Metrics.counter(NAMESPACE, f"{source}.{name}").inc(n)


class StageProgress:
    """Per worker process: how many items each stage has done, logged at most every few seconds.
    The local runner returns Beam metrics only when the job ends, so this is what a person watching
    a local build sees move; remote runners show the counters and distributions live."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self.done: Counter[str] = Counter()
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def add(self, stage: str, n: int = 1) -> None:
        with self.lock:
            self.done[stage] += n
            now = time.monotonic()
            if now - self.last < self.every_s:
                return
            self.last = now
            counts = ", ".join(f"{name} {self.done[name]:,}" for name in STAGE_ORDER if self.done[name])
        log.info("worker %d progress: %s", os.getpid(), counts)


STAGE_ORDER = ("read records", "rendered", "assembled sentences", "written sentences", "tokenized images")
PROGRESS = StageProgress()


def _distribution(name: str, value: float) -> None:
    """A Beam Distribution (count, sum, min, max): stage timings in microseconds, item counts,
    input sizes; remote runners show them live, and the summary keeps them (`run.distributions`)."""
    Metrics.distribution(NAMESPACE, name).update(int(value))


def _timed(items: Iterable[Any], clock: list[float]) -> Iterator[Any]:
    """Yield from `items`, adding to clock[0] only the time spent producing them."""
    iterator = iter(items)
    while True:
        start = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            clock[0] += time.perf_counter() - start
            return
        clock[0] += time.perf_counter() - start
        yield item


UNITS = "units"
INPUTS = "inputs"


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
                 output: str, config_hash: str) -> None:
        self.source = source
        self.settings = settings
        self.web_images = web_images  # an ImageRecord is a whole one-image sentence
        self.fingerprint = fingerprint  # image units carry their dedup fingerprint
        self.output = output
        self.config_hash = config_hash

    def process(self, unit) -> Iterator[Any]:
        name = self.source.name
        store = UnitStore(self.output, name, self.config_hash)
        loaded = store.load(unit)
        if loaded is not None:
            outputs, digest = loaded
            _count(name, "units_reused")
            _count(name, "outputs_reused", len(outputs))
        else:
            outputs, digest = self._render_unit(store, unit)
            _count(name, "units_rendered")
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
                    for item in _timed(self.source.read(unit), clock):
                        if isinstance(item, Reject):
                            _count(name, f"rejects.{item.reason}")
                            outputs.append((REJECTS, item))
                            continue
                        records += 1
                        _count(name, "records")
                        PROGRESS.add("read records")
                        outputs.extend(self._render(item, writer))
                except UnitStoreError:
                    raise
                except Exception as exc:  # a broken unit must not stop the build
                    label = str(getattr(unit, "uris", unit))
                    key = safe_key(name, "unit", f"{stable_hash(label):016x}")
                    _count(name, "rejects.unit_failed")
                    outputs.append((REJECTS, Reject(key, name, key, "read", "unit_failed",
                                                    exception_detail(exc, f"{label[:120]}: ", limit=300))))
            digest = writer.commit(outputs, inputs_read)
        except BaseException:
            writer.abandon()
            raise
        _distribution("stage.read_us", clock[0] * 1e6)
        _distribution("stage.read_records", records)
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
        _distribution("stage.render_us", (time.perf_counter() - start) * 1e6)
        for one in result if isinstance(result, list) else [result]:
            if isinstance(one, Reject):
                _count(record.source, f"rejects.{one.reason}")
                yield REJECTS, one
                continue
            PROGRESS.add("rendered")
            stored = writer.stored(one)
            if isinstance(one, RenderedUnit):
                _count(record.source, "rendered_units")
                yield UNITS, stored
            else:
                _count(record.source, "rendered_sentences")
                yield MAIN, stored


MAIN = "sentences"


class IncompleteGroupError(RuntimeError):
    """The runner delivered fewer elements than were produced; nothing incomplete is committed."""


def _plan(item: tuple[tuple[str, str, str], Iterable[str]], source: str, lengths: dict[str, int],
          remainder: str, seed: int) -> Iterator[Any]:
    (kind, label, split), keys = item
    for planned in plan_group_sentences(source, label, split, keys, lengths[kind], remainder, seed):
        if isinstance(planned, Reject):
            _count(source, f"rejects.{planned.reason}")
            yield TaggedOutput(REJECTS, planned)
        else:
            unit_key, slot = planned
            yield unit_key, (kind, slot)


def _place(item: tuple[str, dict[str, list]]) -> Iterator[tuple[str, tuple[str, Slot, RenderedUnit]]]:
    unit_key, grouped = item
    units, slots = list(grouped["unit"]), list(grouped["slot"])
    if slots and not units:  # slots are planned from rendered units: only a lost element gets here
        raise IncompleteGroupError(f"unit {unit_key} was planned into a sentence but never arrived")
    for unit in units:
        for kind, slot in slots:
            yield slot.sentence_id, (kind, slot, unit)


def _assemble(item: tuple[str, Iterable[tuple[str, Slot, RenderedUnit]]], seed: int) -> Iterator[Any]:
    sentence_id, placed = item
    start = time.perf_counter()
    placed = list(placed)
    kind, slot, _ = placed[0]
    result = assemble(kind, sentence_id, slot.label, seed, [(s.position, unit) for _, s, unit in placed])
    _distribution("stage.assemble_us", (time.perf_counter() - start) * 1e6)
    PROGRESS.add("assembled sentences")
    if isinstance(result, Reject):
        yield TaggedOutput(REJECTS, result)
    else:
        yield result


class AssembleGroups(beam.PTransform):
    """Group units (class images, pairs, tuples) into sentences by a join on keys: only keys are
    gathered per group, and each sentence's images meet in a group of its own size."""

    def __init__(self, source: str, lengths: dict[str, int], remainder: str, seed: int) -> None:
        super().__init__()
        self.source, self.lengths, self.remainder, self.seed = source, lengths, remainder, seed

    def expand(self, units):
        slots = (
            units
            | "GroupKeys" >> beam.Map(lambda u: ((u.kind, u.label, u.split), u.key))
            | "ByGroup" >> beam.GroupByKey()
            | "Plan" >> beam.FlatMap(_plan, self.source, self.lengths, self.remainder, self.seed)
            .with_outputs(REJECTS, main="slots")
        )
        keyed_units = units | "ByKey" >> beam.Map(lambda u: (u.key, u))
        sentences = (
            {"unit": keyed_units, "slot": of_type(slots.slots, "Slots only", Reject, negate=True)}
            | "Join" >> beam.CoGroupByKey()
            | "Place" >> beam.FlatMap(_place)
            | "BySentence" >> beam.GroupByKey()
            | "Assemble" >> beam.FlatMap(_assemble, self.seed).with_outputs(REJECTS, main="sentences")
        )
        rejects = (of_type(slots[REJECTS], "Plan rejects", Reject),
                   of_type(sentences[REJECTS], "Assemble rejects", Reject)) | "Rejects" >> beam.Flatten()
        return of_type(sentences.sentences, "Sentences only", Reject, negate=True), rejects


TWINS = "twins"


def _exact(item: tuple[str, Iterable[Fingerprint]]) -> Iterator[Any]:
    best, twins = exact_group(item[1])
    yield best
    for twin in twins:
        yield TaggedOutput(TWINS, twin)


def _probes(entry: Fingerprint, settings: DedupSettings) -> Iterator[tuple[tuple[int, int], tuple[bool, Fingerprint]]]:
    for band, value, stored in band_probes(entry.phash, settings.bands, settings.threshold):
        yield (band, value), (stored, entry)


def _mark_twins(item: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[tuple[str, tuple[Twin, bool]]]:
    """Each twin record, keyed by the unit it would drop, with whether its twin is dropped too."""
    _, grouped = item
    twin_dropped = any(True for _ in grouped["dropped"])
    for twin in grouped["as_twin"]:
        yield twin.key, (twin, twin_dropped)


def _decide(item: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[Any]:
    key, grouped = item
    units = list(grouped["unit"])
    candidates = list(grouped["twins"])
    if not candidates:
        yield from units
        return
    twin, twin_dropped = choose_twin(candidates)
    if not units:
        if twin.committed:  # decided in an earlier run; its reject is already in a committed shard
            return
        raise IncompleteGroupError(f"unit {key} was fingerprinted but never arrived at the dedup decision")
    for unit in units:
        _count(unit.source, f"rejects.{twin.reason}")
        yield TaggedOutput(REJECTS, duplicate_reject(unit.key, unit.group, twin, twin_dropped))


def _read_fingerprints(uri: str) -> Iterator[Fingerprint]:
    if fsio.exists(uri):  # a committed shard holding only rejects of unrendered records has none
        yield from parse_fingerprint_lines(fsio.read_text(uri))


class Deduplicate(beam.PTransform):
    """Drop duplicate image units across sources (see `uvd_pipeline.dedup`).

    Input: (rendered units carrying fingerprints, fingerprints read back from committed shards).
    Exact: a GroupByKey on the pixels' sha256; each group's best-ranked member goes on to the
    near search. Near: a GroupByKey on (band index, band value) of the pHash, every entry stored
    under its own band values and probing the values within `threshold // bands` bits, so every
    pair within the threshold shares a bucket and is compared in full there. Each twin record is
    then told whether its twin is itself dropped, and a final join on the unit key decides.
    Outputs the kept units (main) and the duplicates as rejects.
    """

    def __init__(self, settings: DedupSettings) -> None:
        super().__init__()
        self.settings = settings

    def expand(self, inputs):
        units, committed = inputs
        settings = self.settings
        entries = (units | "Fingerprints" >> beam.Map(lambda u: u.fingerprint),
                   committed) | "All fingerprints" >> beam.Flatten()
        twin_parts = []
        if settings.exact:
            exact = (
                entries
                | "By pixels" >> beam.Map(lambda e: (e.sha256, e))
                | "Exact groups" >> beam.GroupByKey()
                | "Exact twins" >> beam.FlatMap(_exact).with_outputs(TWINS, main="best")
            )
            twin_parts.append(of_type(exact[TWINS], "Exact twins only", Twin))
            entries = of_type(exact.best, "Exact best only", Twin, negate=True)
        if settings.near:
            twin_parts.append(
                entries
                | "Band probes" >> beam.FlatMap(_probes, settings)
                | "By band" >> beam.GroupByKey()
                | "Near twins" >> beam.FlatMap(lambda item, t: near_bucket(item[1], t), settings.threshold)
            )
        twins = twin_parts | "All twins" >> beam.Flatten()
        dropped = (twins | "Dropped keys" >> beam.Map(lambda t: t.key)
                   | "Count twins" >> beam.combiners.Count.PerElement())
        marked = (
            {"as_twin": twins | "By twin" >> beam.Map(lambda t: (t.twin, t)), "dropped": dropped}
            | "Twin kept?" >> beam.CoGroupByKey()
            | "Mark twins" >> beam.FlatMap(_mark_twins)
        )
        decided = (
            {"unit": units | "Units by key" >> beam.Map(lambda u: (u.key, u)), "twins": marked}
            | "Join decisions" >> beam.CoGroupByKey()
            | "Decide" >> beam.FlatMap(_decide).with_outputs(REJECTS, main="kept")
        )
        return (of_type(decided.kept, "Kept only", Reject, negate=True),
                of_type(decided[REJECTS], "Duplicate rejects", Reject))


class WriteShard(beam.DoFn):
    """Write one shard, unless an earlier run committed it from the same input (its source's input
    digest, `unit_store.shard_inputs_uri`). A shard whose source's input changed is uncommitted
    (stats removed first) and written again; the digest is recorded before the data, stats last."""

    def __init__(self, output: str, config_hash: str, router: ShardRouter, image_size: int) -> None:
        self.output = output
        self.config_hash = config_hash
        self.router = router
        self.image_size = image_size

    def process(self, item: tuple[tuple[str, str, int], dict[str, Iterable[Any]]],
                digests: dict[str, str]) -> Iterator[dict]:
        (source, split, index), grouped = item
        address = ShardAddress(source, split, index)
        inputs_uri = shard_inputs_uri(self.output, source, address.stem)
        stats_uri = address.path(self.output, STATS_SUFFIX)
        if read_shard_inputs(inputs_uri) != digests[source]:
            if fsio.exists(stats_uri):
                fs, target = fsio.filesystem(stats_uri)
                fs.rm(target)  # uncommitted before anything of it changes
                log.info("%s: its input changed since it was committed: writing it again", address.stem)
            write_bytes_atomic(inputs_uri, digests[source].encode())
        expected = sum(grouped["count"])
        start = time.perf_counter()
        reader = StoreReader()
        try:
            result = write_shard(
                self.output, address, reader.resolve_all(grouped["items"]),
                expected_items=expected,
                config_hash=self.config_hash,
                num_shards=self.router.counts[source][split],
                image_size=self.image_size,
                format_version=FORMAT_VERSION,
            )
        finally:
            reader.close()
        _count(source, "shards_skipped" if result.skipped else "shards_written")
        if not result.skipped:
            _distribution("stage.write_us", (time.perf_counter() - start) * 1e6)
            _distribution("stage.write_sentences", result.stats["sentences"])
            _count(source, "sentences_written", result.stats["sentences"])
            PROGRESS.add("written sentences", result.stats["sentences"])
            log.info("committed %s: %d sentences, %d rejects", address.stem,
                     result.stats["sentences"], result.stats["rejects"])
        yield {"shard": address.stem, "skipped": result.skipped, **result.stats}


def _source_digests(item: tuple[str, Iterable[UnitInputs]], members: dict[str, list[str]]) -> Iterator[tuple[str, str]]:
    """(source, input digest of its shards) for each source of one digest group."""
    group, units = item
    digest = group_digest((u.unit, u.digest) for u in units)
    for source in members[group]:
        yield source, digest


def digest_groups(config: BuildConfig) -> dict[str, str]:
    """source -> the group whose units its shards depend on: deduplicated sources decide together
    (a new image in one can make an image of another a duplicate), others alone."""
    dedup_types = DEDUP_SOURCE_TYPES if config.dedup.enabled else ()
    return {s.name: "dedup" if s.type in dedup_types else f"source:{s.name}" for s in config.enabled_sources}


def list_units(config: BuildConfig) -> dict[str, list]:
    """Every source's work units, listed before anything is written: a wrong path fails here,
    naming the config field."""
    from uvd_pipeline.config import ConfigError

    units = {}
    for index, source_config in enumerate(config.sources):
        if not source_config.enabled:
            continue
        for field, spec, task in labeler_specs(source_config):
            from uvd_pipeline.labelers import LabelerError, check_spec

            try:
                check_spec(spec, task)
            except LabelerError as exc:
                raise ConfigError(f"sources[{index}].{field} ({source_config.name}): {exc}") from None
        try:
            units[source_config.name] = make_source(source_config, config.seed).units()
        except (FileNotFoundError, NotADirectoryError, AnnotationFileError) as exc:
            raise ConfigError(f"sources[{index}].path ({source_config.name}): {exc}") from None
        if not units[source_config.name]:
            raise ConfigError(f"sources[{index}].path ({source_config.name}): nothing to read at "
                              f"{source_config.path}")
    return units


def sentences_of_units(units, source_config, seed: int):
    """A source's rendered image units -> (sentences, rejects or None): a web image is a sentence
    of its own; other sources' units are grouped (`units_per_sentence`), with remainders counted."""
    name = source_config.name
    if source_config.type == "laion":
        return units | f"{name}/Image sentences" >> beam.Map(image_sentence), None
    return units | f"{name}/Assemble" >> AssembleGroups(
        name, units_per_sentence(source_config), getattr(source_config, "remainder", "drop"), seed)


def build_graph(pipeline: beam.Pipeline, config: BuildConfig, done: dict[ShardAddress, str | None],
                units: dict[str, list] | None = None):
    """Add the whole build to `pipeline`; returns the PCollection of per-shard stats.

    `done`: shards an earlier run of this config committed, with the input digest each was built
    from. Every unit's results flow into the global steps (from the unit store when committed),
    so dedup and assembly decide exactly as a fresh build would; items of a shard committed from
    the same input are dropped just before the shard grouping."""
    units_by_source = units if units is not None else list_units(config)
    router = ShardRouter(config)
    settings = router.settings
    output, config_hash = config.output, config.content_hash()
    sentence_parts = []
    reject_parts = []
    input_parts = []
    dedup_units = {}  # source -> its rendered image units, before deduplication
    dedup_types = DEDUP_SOURCE_TYPES if config.dedup.enabled else ()
    for source_config in config.enabled_sources:
        name = source_config.name
        web_images = source_config.type == "laion"
        deduplicated = source_config.type in dedup_types
        source = make_source(source_config, config.seed)
        source_units = units_by_source[name]
        log.info("%s: %d work units", name, len(source_units))
        rendered = (
            pipeline
            | f"{name}/Units" >> beam.Create(source_units, reshuffle=False)
            | f"{name}/Spread" >> beam.Reshuffle()
            | f"{name}/Render" >> beam.ParDo(
                RenderUnit(source, settings, web_images and not deduplicated, deduplicated, output, config_hash))
            .with_outputs(REJECTS, UNITS, INPUTS, main=MAIN)
        )
        reject_parts.append(of_type(rendered[REJECTS], f"{name}/Rejects", Reject))
        input_parts.append(of_type(rendered[INPUTS], f"{name}/Input digests", UnitInputs))
        sentence_parts.append(of_type(rendered[MAIN], f"{name}/Rendered sentences",
                                      (Reject, RenderedUnit, UnitInputs), negate=True))
        lengths = units_per_sentence(source_config)
        rendered_units = of_type(rendered[UNITS], f"{name}/Rendered units", RenderedUnit)
        if deduplicated:
            dedup_units[name] = rendered_units  # assembled after deduplication, below
        elif lengths:
            sentences, rejects = sentences_of_units(rendered_units, source_config, config.seed)
            sentence_parts.append(sentences)
            reject_parts += [rejects] if rejects is not None else []

    groups = digest_groups(config)
    members: dict[str, list[str]] = {}
    for name, group in sorted(groups.items()):
        members.setdefault(group, []).append(name)
    digests = beam.pvalue.AsDict(
        input_parts
        | "All input digests" >> beam.Flatten()
        | "By digest group" >> beam.Map(lambda u, g: (g[u.source], u), groups)
        | "Digest groups" >> beam.GroupByKey()
        | "Source digests" >> beam.FlatMap(_source_digests, members))

    shard_parts = []
    if dedup_units:
        sources = {s.name: s for s in config.enabled_sources}
        names = sorted(dedup_units)
        persisted = {n for n in names if sources[n].type in PERSISTED_TYPES}
        units = [dedup_units[n] for n in names] | "Dedup/Units" >> beam.Flatten()
        nothing_committed = pipeline | "Dedup/No earlier fingerprints" >> beam.Create([])
        kept, rejects = (units, nothing_committed) | "Dedup" >> Deduplicate(DedupSettings.from_config(config.dedup))
        reject_parts.append(rejects)
        # each web image's fingerprint is committed with its shard (the shard's dedup record)
        shard_parts.append(
            units
            | "Dedup/Persisted" >> beam.Filter(lambda u, keep: u.source in keep, persisted)
            | "Address fingerprints" >> beam.Map(
                lambda u: (router.address(u.source, u.split, u.key), u.fingerprint)))
        for name in names:  # a Filter per source, not a Partition: see `OfType`
            of_source = kept | f"Dedup/{name} units" >> beam.Filter(lambda u, n: u.source == n, name)
            sentences, rejects = sentences_of_units(of_source, sources[name], config.seed)
            sentence_parts.append(sentences)
            reject_parts += [rejects] if rejects is not None else []

    sentences = sentence_parts | "All sentences" >> beam.Flatten()
    rejects = reject_parts | "All rejects" >> beam.Flatten()
    done_inputs = {tuple(address): digest for address, digest in done.items()}
    items = (
        (sentences | "Address sentences" >> beam.Map(lambda s: (router.of_sentence(s), s)),
         rejects | "Address rejects" >> beam.Map(lambda r: (router.of_reject(r), r)),
         *shard_parts)
        | "Shard items" >> beam.Flatten()
        | "Drop committed" >> beam.Filter(_not_committed, done_inputs, digests)
    )
    # Every shard also gets its item count through a separate combine, so the writer can refuse
    # to commit a shard that arrives incomplete (we saw the local multi-process runner drop
    # grouped values under heavy load); an incomplete shard fails the job and stays uncommitted.
    counts = items | "Count per shard" >> beam.combiners.Count.PerKey()
    keyed = {"items": items, "count": counts} | "By shard" >> beam.CoGroupByKey()
    written = keyed | "Write shards" >> beam.ParDo(
        WriteShard(output, config_hash, router, config.image.size), digests)
    if not config.tokenizer.enabled:
        return written
    # Shards committed earlier from the same input get no element this run, so they join the
    # tokenize input from the listing.
    earlier = [s for s in committed_rendered(output, config_hash)
               if (s["source"], s["split"], int(s["shard"])) in done_inputs]
    rendered = (
        (written | "Rendered stats" >> beam.Map(rendered_fields),
         pipeline | "Earlier shards" >> beam.Create(earlier, reshuffle=False)
         | "Still current" >> beam.Filter(
             lambda s, d, now: not _not_committed(((s["source"], s["split"], int(s["shard"])), None), d, now),
             done_inputs, digests))
        | "All rendered" >> beam.Flatten()
        | "By tar" >> beam.Map(lambda s: (s["tar"], s))  # a retried write may report a shard twice
        | "Once per tar" >> beam.CombinePerKey(lambda values: next(iter(values)))
        | "Drop keys" >> beam.Values()
    )
    return add_tokenize(rendered, config)


def _not_committed(item: tuple[tuple[str, str, int], Any], done: dict[tuple, str | None],
                   digests: dict[str, str]) -> bool:
    """Whether an item's shard still has to be written: not committed, or from other input."""
    address = item[0]
    return address not in done or done[address] != digests[address[0]]


class TokenizeShard(beam.DoFn):
    """One model per worker process, shared by the DoFn instances of its threads."""

    def __init__(self, output: str, settings: TokenizeSettings, config_hash: str) -> None:
        self.output = output
        self.settings = settings
        self.config_hash = config_hash
        self._shared = Shared()

    def setup(self) -> None:
        settings = self.settings
        self.tokenizer = self._shared.acquire(lambda: _load_tokenizer(settings))

    def process(self, stats: dict[str, Any]) -> Iterator[dict]:
        start = time.perf_counter()
        result = tokenize_shard(self.output, stats, self.tokenizer, self.config_hash, on_batch=_batch_timing)
        source = stats["source"]
        _count(source, "token_shards_skipped" if result["skipped"] else "token_shards_written")
        if not result["skipped"]:
            _distribution("stage.tokenize_us", (time.perf_counter() - start) * 1e6)
            _distribution("stage.tokenize_images", result["images"])
            _count(source, "images_tokenized", result["images"])
            PROGRESS.add("tokenized images", result["images"])
            log.info("tokenized %s: %d images", stats["tar"], result["images"])
        yield result


def _batch_timing(seconds: float, images: int) -> None:
    _distribution("tokenize.batch_us", seconds * 1e6)
    _distribution("tokenize.batch_images", images)


def add_tokenize(rendered, config: BuildConfig):
    """Tokenize rendered shards; only this step carries the accelerator hint."""
    t = config.tokenizer
    settings = TokenizeSettings.of(t)
    step = beam.ParDo(TokenizeShard(config.output, settings, config.content_hash()))
    if t.accelerator:
        step = step.with_resource_hints(accelerator=t.accelerator)
    return rendered | "Spread shards" >> beam.Reshuffle() | "Tokenize" >> step


def build_retokenize_graph(pipeline: beam.Pipeline, config: BuildConfig):
    """Tokenize the committed rendered shards again, without reading or rendering anything."""
    shards = committed_rendered(config.output, config.content_hash())
    if not shards:
        from uvd_pipeline.config import ConfigError

        raise ConfigError(f"{config.output} has no committed rendered shards of this config to retokenize")
    log.info("retokenizing %d rendered shards", len(shards))
    return add_tokenize(pipeline | "Rendered shards" >> beam.Create(shards, reshuffle=False), config)
