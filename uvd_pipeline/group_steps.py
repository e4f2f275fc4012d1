"""The global steps between Render and the shard writer: sentence assembly of grouped units and
deduplication across sources (see `uvd_pipeline.sentences` and `uvd_pipeline.dedup`)."""

from __future__ import annotations

import struct
import time
import zlib
from collections import Counter
from typing import Any, Iterable, Iterator

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from sources.records import Reject
from transforms.phash import band_probes, band_width
from uvd_pipeline.dedup import (
    DedupSettings,
    Fingerprint,
    ProbeRow,
    Twin,
    choose_twin,
    duplicate_reject,
    exact_group,
    from_probe_row,
    near_bucket,
    probe_row,
)
from uvd_pipeline.sentences import RenderedUnit, Slot, assemble, place_units, plan_group_sentences
from uvd_pipeline.unit_images import held_by_several
from uvd_pipeline.step_metrics import PROGRESS, count, distribution
from uvd_pipeline.tagged import REJECTS, of_type

class IncompleteGroupError(RuntimeError):
    """The runner delivered fewer elements than were produced; nothing incomplete is committed."""


def _carried(where: str) -> bytes:
    """A unit's input as the grouping carries it: bytes, since a file name that is not UTF-8 holds
    surrogates (a latin-1 `café.jpg`'s byte 0xE9) that Beam's text coder cannot encode (the whole build failed at
    GroupKeys with a UnicodeEncodeError)."""
    return where.encode("utf-8", "surrogateescape")


def _plan(item: tuple[tuple[str, str, str], Iterable[tuple[str, bytes]]], source: str, lengths: dict[str, int],
          remainder: str, seed: int) -> Iterator[Any]:
    """Plans one group from its units' (key, input) pairs: the input goes only to the rejects of
    units that fit no sentence. Units clashing on a key (`place_units`) give the key the least of
    their inputs, whatever order the runner delivers them in."""
    (kind, label, split), pairs = item
    inputs: dict[str, str] = {}
    for key, carried in pairs:
        where = carried.decode("utf-8", "surrogateescape")  # see `_carried`
        inputs[key] = min(inputs[key], where) if key in inputs else where
    for planned in plan_group_sentences(source, label, split, inputs, lengths[kind], remainder, seed, inputs):
        if isinstance(planned, Reject):
            count(source, f"rejects.{planned.reason}")
            yield TaggedOutput(REJECTS, planned)
        else:
            unit_key, slot = planned
            yield unit_key, (kind, slot)


def _place(item: tuple[str, Iterable[Any]]) -> Iterator[Any]:
    """Each slot of a key with its unit; units clashing on the key cost themselves only
    (`place_units`), never the sentences they were planned into. The key's group holds its units
    and its (kind, slot) pairs, told apart by type (a CoGroupByKey would add three steps)."""
    unit_key, grouped = item
    units: list[RenderedUnit] = []
    slots: list[tuple[str, Slot]] = []
    for value in grouped:
        (units if isinstance(value, RenderedUnit) else slots).append(value)
    placements, rejects = place_units(units, slots)
    if len(placements) < len(slots):  # slots are planned from rendered units: only a lost element gets here
        raise IncompleteGroupError(f"unit {unit_key} was planned into a sentence but never arrived")
    for reject in rejects:
        count(reject.source, f"rejects.{reject.reason}")
        yield TaggedOutput(REJECTS, reject)
    uses = Counter(id(unit) for _, _, unit in placements)
    for kind, slot, unit in placements:
        if uses[id(unit)] > 1:  # its images' store copies must outlive the first shard holding them
            unit = held_by_several(unit)
        yield slot.sentence_id, (kind, slot, unit)


def _assemble(item: tuple[str, Iterable[tuple[str, Slot, RenderedUnit]]], seed: int) -> Iterator[Any]:
    sentence_id, placed = item
    start = time.perf_counter()
    placed = list(placed)
    kind, slot, _ = placed[0]
    result = assemble(kind, sentence_id, slot.label, seed, [(s.position, unit) for _, s, unit in placed])
    distribution("stage.assemble_us", (time.perf_counter() - start) * 1e6)
    PROGRESS.add("assembled sentences")
    if isinstance(result, Reject):
        yield TaggedOutput(REJECTS, result)
    else:
        yield result


class AssembleGroups(beam.PTransform):
    """Group units (class images, pairs, tuples) into sentences by a join on keys: only keys are
    gathered per group, and each sentence's images meet in a group of its own size.

    Outputs the sentences, then the rejects of planning, placing and assembling as three
    collections: the caller's one Flatten takes them (on the local runner every Flatten of
    several inputs is a stage of its own)."""

    def __init__(self, source: str, lengths: dict[str, int], remainder: str, seed: int) -> None:
        super().__init__()
        self.source, self.lengths, self.remainder, self.seed = source, lengths, remainder, seed

    def expand(self, units):
        slots = (
            units
            | "GroupKeys" >> beam.Map(lambda u: ((u.kind, u.label, u.split), (u.key, _carried(u.input))))
            | "ByGroup" >> beam.GroupByKey()
            | "Plan" >> beam.FlatMap(_plan, self.source, self.lengths, self.remainder, self.seed)
            .with_outputs(REJECTS, main="slots")
        )
        keyed_units = units | "ByKey" >> beam.Map(lambda u: (u.key, u))
        placed = (
            (keyed_units, of_type(slots.slots, "Slots only", Reject, negate=True))
            | "Join inputs" >> beam.Flatten()
            | "Join" >> beam.GroupByKey()
            | "Place" >> beam.FlatMap(_place).with_outputs(REJECTS, main="placed")
        )
        sentences = (
            of_type(placed.placed, "Placed only", Reject, negate=True)
            | "BySentence" >> beam.GroupByKey()
            | "Assemble" >> beam.FlatMap(_assemble, self.seed).with_outputs(REJECTS, main="sentences")
        )
        return (of_type(sentences.sentences, "Sentences only", Reject, negate=True),
                of_type(slots[REJECTS], "Plan rejects", Reject),
                of_type(placed[REJECTS], "Place rejects", Reject),
                of_type(sentences[REJECTS], "Assemble rejects", Reject))


EXACT_BAND = -1  # the band index under which exact twin records travel through the near grouping
EXACT_SPREAD = 256  # ... spread over this many keys by their unit key


PROBE_BATCH_UNITS = 2048  # fingerprints whose probes `BatchedProbes` holds before it sends them


class BatchedProbes(beam.DoFn):
    """One sha256 group's twin records and its best-ranked member's band probes (input: sha256
    groups), or each unit's probes (input: units, exact search off). The twin records take the
    near search's grouping too, under `EXACT_BAND` (`_near_twins` passes them on): one stream of
    twin records, where two needed a Flatten (a stage of its own on the local runner) and a filter
    each. The probes of a bundle's fingerprints are sent as one element per (band, super-bucket)
    key they touch, a list of `_probes` values, not one element per fingerprint and key: the
    ~21 elements an image (each encoded, held by the grouping, decoded and passed through the next
    step's operations) were most of the dedup's cost on the local runner. Each key's group holds
    the same values either way, so the same twin records follow. At most `PROBE_BATCH_UNITS`
    fingerprints' probes are held; the rest of a bundle is sent when it ends (`finish_bundle`)."""

    def __init__(self, settings: DedupSettings, exact: bool) -> None:
        self.settings = settings if settings.near else None
        self.exact = exact

    def start_bundle(self) -> None:
        self._batches: dict[tuple[int, int], list[tuple[bytes, ProbeRow]]] = {}
        self._held = 0

    def process(self, item: Any) -> Iterator[tuple[tuple[int, int], Any]]:
        if self.exact:
            best, twins = exact_group(item[1])
            for twin in twins:
                yield (EXACT_BAND, zlib.crc32(twin.key.encode()) % EXACT_SPREAD), twin
        else:
            best = item.fingerprint
        if self.settings is None:
            return
        batches = self._batches
        for key, value in _probes(best, self.settings):
            batch = batches.get(key)
            if batch is None:
                batches[key] = [value]
            else:
                batch.append(value)
        self._held += 1
        if self._held >= PROBE_BATCH_UNITS:
            yield from self._sent()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for element in self._sent():
            yield GlobalWindows.windowed_value(element)

    def _sent(self) -> Iterator[tuple[tuple[int, int], list[tuple[bytes, ProbeRow]]]]:
        batches, self._batches, self._held = self._batches, {}, 0
        yield from batches.items()


def probe_batches(entries: Iterable[Fingerprint], settings: DedupSettings) -> dict[tuple[int, int], list]:
    """The probes of `entries` batched per key as one bundle of `BatchedProbes` sends them."""
    batches: dict[tuple[int, int], list] = {}
    for entry in entries:
        for key, value in _probes(entry, settings):
            batches.setdefault(key, []).append(value)
    return batches


def _probes(entry: Fingerprint, settings: DedupSettings) -> Iterator[tuple[tuple[int, int], tuple[bytes, ProbeRow]]]:
    """Every (band, value) bucket a hash is stored in or probes (`band_probes`), sent as one
    element per (band, super-bucket) it touches: a super-bucket is a range of band values sharing
    their upper bits (`super_shift`), and the element names the hash's values in it (about 20
    elements per image instead of 36 at 4 bands and threshold 6). The grouping then has a few
    hundred keys per band instead of one per probed value, nearly all of which held one element:
    the local runner keeps a key, a list and the decoded values of every key until the whole
    grouping is read, which made this grouping the largest thing a build held per image."""
    row = probe_row(entry)
    shift = super_shift(settings.bands)
    targets: dict[tuple[int, int], list[tuple[int, bool]]] = {}
    for band, value, stored in band_probes(entry.phash, settings.bands, settings.threshold):
        targets.setdefault((band, value >> shift), []).append((value, stored))
    for key, values in targets.items():
        yield key, (b"".join(_TARGET.pack(value, stored) for value, stored in values), row)


_TARGET = struct.Struct("<QB")  # a band value and whether the hash is stored there (else it probes it)


def super_shift(bands: int) -> int:
    """Band values are grouped into super-buckets by their upper half of bits: 256 per band of
    16 bits, each holding about 1/256 of the images (per band) and the probes that reach them."""
    return band_width(bands) // 2


def _near_twins(item: tuple[tuple[int, int], Iterable[Any]], threshold: int) -> Iterator[Twin]:
    """The (band, value) buckets of one super-bucket (its values: `BatchedProbes`' batches), each
    with exactly the members a grouping by (band, value) would give it; pairs within the threshold in each (`near_bucket`). Under
    `EXACT_BAND`, the exact twin records, passed on."""
    if item[0][0] == EXACT_BAND:
        yield from item[1]
        return
    buckets: dict[int, list[tuple[bool, ProbeRow]]] = {}
    for batch in item[1]:  # `BatchedProbes`' lists
        for targets, row in batch:
            for value, stored in _TARGET.iter_unpack(targets):
                buckets.setdefault(value, []).append((bool(stored), row))
    decoded: dict[ProbeRow, Any] = {}  # a row sits in several buckets of the group: decode it once
    for members in buckets.values():
        if len(members) < 2:  # most buckets: a probe that found nothing
            continue
        fingerprints = [(stored, decoded.get(row) or decoded.setdefault(row, from_probe_row(row)))
                        for stored, row in members]
        yield from near_bucket(fingerprints, threshold)


def _twin_records(twin: Twin) -> Iterator[tuple[str, Twin | None]]:
    """A twin record under its better twin's key, and a marker (None) under the key it drops."""
    yield twin.twin, twin
    yield twin.key, None


def _bucket_twin_records(item: tuple[tuple[int, int], Iterable[Any]], threshold: int) -> Iterator[tuple[str, Twin | None]]:
    """`_near_twins` and `_twin_records` in one step: every step costs the graph's construction a
    few ms (Beam inspects each DoFn's methods), and a step of its own gains nothing here."""
    for twin in _near_twins(item, threshold):
        yield from _twin_records(twin)


def _mark_twins(item: tuple[str, Iterable[Twin | None]]) -> Iterator[tuple[str, tuple[Twin, bool]]]:
    """Each twin record of which this key is the better twin, keyed by the unit it would drop, with
    whether this key is dropped too (it has a marker)."""
    values = list(item[1])
    twin_dropped = any(value is None for value in values)
    for twin in values:
        if twin is not None:
            yield twin.key, (twin, twin_dropped)


def _decide(item: tuple[str, Iterable[Any]]) -> Iterator[Any]:
    """One unit key's decision, its group split once into the unit and the twin records that drop
    it: a unit no twin record drops is kept (the main output); a dropped one is a reject naming its
    best twin (`choose_twin`), tagged `REJECTS`."""
    key = item[0]
    units: list[RenderedUnit] = []
    candidates: list[tuple[Twin, bool]] = []
    for value in item[1]:
        (units if isinstance(value, RenderedUnit) else candidates).append(value)
    if not candidates:
        yield from units
        return
    if not units:
        raise IncompleteGroupError(f"unit {key} was fingerprinted but never arrived at the dedup decision")
    if len({unit.fingerprint.sha256 for unit in units}) > 1:
        yield from _decide_clash(units, candidates)
        return
    twin, twin_dropped = choose_twin(candidates)
    for unit in units:
        count(unit.source, f"rejects.{twin.reason}")
        yield TaggedOutput(REJECTS, duplicate_reject(unit.key, unit.group, twin, twin_dropped).located(unit.input))


def _decide_clash(units: list[RenderedUnit], candidates: list[tuple[Twin, bool]]) -> Iterator[Any]:
    """The decision of a key that units of other pixels share (a source gave two pictures one
    key): decided as one, a copy of either dropped both (a unique picture lost as a false
    `duplicate_exact`). An exact twin record drops the unit of its own pixels alone, a near one
    the unit of the pHash it compared (`Twin.phash`); a unit no record is about is kept."""
    for unit in units:
        own = [pair for pair in candidates if _about(pair[0], unit)]
        if own:
            twin, twin_dropped = choose_twin(own)
            count(unit.source, f"rejects.{twin.reason}")
            yield TaggedOutput(REJECTS, duplicate_reject(unit.key, unit.group, twin, twin_dropped).located(unit.input))
        else:
            yield unit


def _about(twin: Twin, unit: RenderedUnit) -> bool:
    """Whether a twin record drops this unit of its key: an exact one names its pixels, a near one its pHash."""
    return twin.sha256 == unit.fingerprint.sha256 if twin.sha256 else twin.phash == unit.fingerprint.phash


class Deduplicate(beam.PTransform):
    """Drop duplicate image units across sources (see `uvd_pipeline.dedup`).

    Input: the rendered units of every deduplicated source, each carrying its fingerprint.
    Exact: a GroupByKey on the pixels' sha256; each group's best-ranked member goes on to the
    near search. Near: buckets of (band index, band value) of the pHash, every entry stored
    under its own band values and probing the values within `threshold // bands` bits, so every
    pair within the threshold shares a bucket and is compared in full there; the GroupByKey is on
    (band index, super-bucket) and each group splits into its buckets (`_probes`); the exact twin
    records ride along in that grouping (`EXACT_BAND`). Each twin record is then told whether its
    twin is itself dropped, and a final join on the unit key decides.
    Outputs the kept units and the duplicates as rejects.
    """

    def __init__(self, settings: DedupSettings) -> None:
        super().__init__()
        self.settings = settings

    def expand(self, units):
        settings = self.settings
        if settings.exact:
            keyed = (
                units
                | "By pixels" >> beam.Map(lambda u: (u.fingerprint.sha256, u.fingerprint))
                | "Exact groups" >> beam.GroupByKey()
                | "Exact twins and probes" >> beam.ParDo(BatchedProbes(settings, exact=True))
            )
        else:
            keyed = units | "Band probes" >> beam.ParDo(BatchedProbes(settings, exact=False))
        # a key with any twin record is dropped: the grouping that gathers each unit's records as
        # the better twin also gathers a marker per record that drops it (no counting stage). The
        # groupings' inputs are told apart by type, not tagged (a CoGroupByKey adds three steps)
        marked = (
            keyed
            | "By band" >> beam.GroupByKey()
            | "Twin records" >> beam.FlatMap(_bucket_twin_records, settings.threshold)
            | "Twin kept?" >> beam.GroupByKey()
            | "Mark twins" >> beam.FlatMap(_mark_twins)
        )
        decided = (
            (units | "Units by key" >> beam.Map(lambda u: (u.key, u)), marked)
            | "Decision inputs" >> beam.Flatten()
            | "Join decisions" >> beam.GroupByKey()
            | "Decide" >> beam.FlatMap(_decide).with_outputs(REJECTS, main="kept")
        )
        # each output kept by its type: the DaskRunner hands every consumer all of them (`of_type`)
        return (of_type(decided.kept, "Kept", RenderedUnit),
                of_type(decided[REJECTS], "Duplicates", Reject))
