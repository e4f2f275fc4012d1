"""The Beam graph of one build: Read -> Render -> Assemble -> Write.

    units --Read--> records --Render--> images/sentences --Assemble--> sentences --+
                      |                    |                   |                   +--> shards
                      +------ rejects -----+------ rejects ----+--- rejects -------+

Every stage sends what it cannot use to a tagged `rejects` output with a reason; rejects are
written next to the sentences of the shard their key hashes to, so a shard commits its
sentences and its rejects together and a resumed build neither loses nor repeats either.

Shards already committed by an earlier run of the same config are skipped: records whose
sentence id is known before rendering (web images, video clips) are dropped before any decoding,
and the writer leaves every committed shard untouched.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from sources.imagenet import ImageNetSource
from sources.laion import LaionSource
from sources.records import ImageRecord, Reject, VideoClipRecord, safe_key
from sources.video import VideoSource
from uvd_pipeline.config import FORMAT_VERSION, BuildConfig
from uvd_pipeline.keys import shard_of, stable_hash
from uvd_pipeline.render import RenderSettings, render_clip, render_image
from uvd_pipeline.rendered_shards import ShardAddress, write_shard
from uvd_pipeline.sentences import (
    RenderedImage,
    Sentence,
    Slot,
    category_sentence,
    image_sentence,
    plan_class_sentences,
)

log = logging.getLogger(__name__)
REJECTS = "rejects"
NAMESPACE = "uvd"


def make_source(source_config) -> LaionSource | ImageNetSource | VideoSource:
    """The reader for one configured source (plain values only, so it pickles to workers)."""
    c = source_config
    if c.type == "laion":
        return LaionSource(c.name, c.path, c.format)
    if c.type == "imagenet":
        return ImageNetSource(c.name, c.path, tuple(c.splits))
    if c.type == "video":
        return VideoSource(c.name, c.path, tuple(c.strides), c.frames, c.max_windows_per_stride, c.decoder)
    raise ValueError(f"unknown source type {c.type!r}")


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

    def of_planned(self, item: Any) -> tuple[str, str, int] | None:
        """The address of a record whose sentence id is already known, else None."""
        if isinstance(item, Reject):
            return self.of_reject(item)
        if isinstance(item, VideoClipRecord):
            return self.address(item.source, self.settings.split(item.group), item.key)
        return None


def _count(source: str, name: str, n: int = 1) -> None:
    Metrics.counter(NAMESPACE, f"{source}.{name}").inc(n)


class ReadUnit(beam.DoFn):
    """Yields a unit's records; a unit that fails part-way becomes a reject, not a crash."""

    def __init__(self, source, router: ShardRouter, done: frozenset, keyed_by_record: bool) -> None:
        self.source = source
        self.router = router
        self.done = done
        self.keyed_by_record = keyed_by_record  # the record key is the sentence id (web images)

    def process(self, unit) -> Iterator[Any]:
        name = self.source.name
        try:
            for item in self.source.read(unit):
                address = self.router.of_planned(item)
                if address is None and self.keyed_by_record and isinstance(item, ImageRecord):
                    address = self.router.address(name, self.router.settings.split(item.group, item.split_hint),
                                                  item.key)
                if address is not None and address in self.done:
                    _count(name, "skipped_committed")
                    continue
                if isinstance(item, Reject):
                    _count(name, f"rejects.{item.reason}")
                    yield TaggedOutput(REJECTS, item)
                else:
                    _count(name, "records")
                    yield item
        except Exception as exc:  # a broken unit must not stop the build
            label = str(getattr(unit, "uris", unit))
            key = safe_key(name, "unit", f"{stable_hash(label):016x}")
            _count(name, "rejects.unit_failed")
            yield TaggedOutput(REJECTS, Reject(key, name, key, "read", "unit_failed",
                                               f"{label[:120]}: {type(exc).__name__}: {exc}"[:300]))


class Render(beam.DoFn):
    """Decode and resize; web images come out as one-image sentences, videos as whole sentences."""

    def __init__(self, settings: RenderSettings, kind: str) -> None:
        self.settings = settings
        self.kind = kind

    def process(self, record) -> Iterator[Any]:
        try:
            if isinstance(record, VideoClipRecord):
                result: Any = render_clip(record, self.settings)
            else:
                result = render_image(record, self.settings)
                if self.kind == "image" and isinstance(result, RenderedImage):
                    result = image_sentence(result)
        except Exception as exc:  # decoders can fail in ways no reason code foresaw
            result = Reject(record.key, record.source, record.group, "render", "internal_error",
                            f"{type(exc).__name__}: {exc}"[:300])
        if isinstance(result, Reject):
            _count(record.source, f"rejects.{result.reason}")
            yield TaggedOutput(REJECTS, result)
        else:
            _count(record.source, "rendered")
            yield result


def _plan_class(item: tuple[tuple[str, str], Iterable[str]], source: str, length: int, remainder: str,
                seed: int) -> Iterator[Any]:
    (label, split), keys = item
    for planned in plan_class_sentences(source, label, split, keys, length, remainder, seed):
        if isinstance(planned, Reject):
            _count(source, f"rejects.{planned.reason}")
            yield TaggedOutput(REJECTS, planned)
        else:
            yield planned


def _place(item: tuple[str, dict[str, list]]) -> Iterator[tuple[str, tuple[Slot, RenderedImage]]]:
    _, grouped = item
    for image in grouped["image"]:
        for slot in grouped["slot"]:
            yield slot.sentence_id, (slot, image)


def _assemble_category(item: tuple[str, Iterable[tuple[Slot, RenderedImage]]]) -> Iterator[Any]:
    sentence_id, placed = item
    placed = list(placed)
    slot = placed[0][0]
    first = placed[0][1]
    result = category_sentence(sentence_id, first.source, first.split, slot.label,
                               [(s.position, image) for s, image in placed])
    if isinstance(result, Reject):
        yield TaggedOutput(REJECTS, result)
    else:
        yield result


class AssembleCategories(beam.PTransform):
    """Group a class's rendered images into sentences by a join on keys, so that only keys (not
    pixels) are gathered per class and every sentence's images meet in a group of 16."""

    def __init__(self, source: str, length: int, remainder: str, seed: int) -> None:
        super().__init__()
        self.source, self.length, self.remainder, self.seed = source, length, remainder, seed

    def expand(self, images):
        slots = (
            images
            | "ClassKeys" >> beam.Map(lambda r: ((r.label, r.split), r.key))
            | "ByClass" >> beam.GroupByKey()
            | "Plan" >> beam.FlatMap(_plan_class, self.source, self.length, self.remainder, self.seed)
            .with_outputs(REJECTS, main="slots")
        )
        keyed_images = images | "ByKey" >> beam.Map(lambda r: (r.key, r))
        sentences = (
            {"image": keyed_images, "slot": slots.slots}
            | "Join" >> beam.CoGroupByKey()
            | "Place" >> beam.FlatMap(_place)
            | "BySentence" >> beam.GroupByKey()
            | "Assemble" >> beam.FlatMap(_assemble_category).with_outputs(REJECTS, main="sentences")
        )
        rejects = (slots[REJECTS], sentences[REJECTS]) | "Rejects" >> beam.Flatten()
        return sentences.sentences, rejects


class WriteShard(beam.DoFn):
    def __init__(self, output: str, config_hash: str, router: ShardRouter, image_size: int) -> None:
        self.output = output
        self.config_hash = config_hash
        self.router = router
        self.image_size = image_size

    def process(self, item: tuple[tuple[str, str, int], Iterable[Any]]) -> Iterator[dict]:
        (source, split, index), items = item
        address = ShardAddress(source, split, index)
        result = write_shard(
            self.output, address, items,
            config_hash=self.config_hash,
            num_shards=self.router.counts[source][split],
            image_size=self.image_size,
            format_version=FORMAT_VERSION,
        )
        _count(source, "shards_skipped" if result.skipped else "shards_written")
        if not result.skipped:
            _count(source, "sentences_written", result.stats["sentences"])
            log.info("committed %s: %d sentences, %d rejects", address.stem,
                     result.stats["sentences"], result.stats["rejects"])
        yield {"shard": address.stem, "skipped": result.skipped, **result.stats}


KIND_OF = {"laion": "image", "imagenet": "category", "video": "video"}


def list_units(config: BuildConfig) -> dict[str, list]:
    """Every source's work units, listed before anything is written: a wrong path fails here,
    naming the config field."""
    from uvd_pipeline.config import ConfigError

    units = {}
    for index, source_config in enumerate(config.sources):
        if not source_config.enabled:
            continue
        try:
            units[source_config.name] = make_source(source_config).units()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ConfigError(f"sources[{index}].path ({source_config.name}): {exc}") from None
        if not units[source_config.name]:
            raise ConfigError(f"sources[{index}].path ({source_config.name}): nothing to read at "
                              f"{source_config.path}")
    return units


def build_graph(pipeline: beam.Pipeline, config: BuildConfig, done: set[ShardAddress],
                units: dict[str, list] | None = None):
    """Add the whole build to `pipeline`; returns the PCollection of per-shard stats."""
    units_by_source = units if units is not None else list_units(config)
    router = ShardRouter(config)
    settings = router.settings
    done_keys = frozenset(tuple(a) for a in done)
    sentence_parts = []
    reject_parts = []
    for source_config in config.enabled_sources:
        name = source_config.name
        kind = KIND_OF[source_config.type]
        source = make_source(source_config)
        source_units = units_by_source[name]
        log.info("%s: %d work units", name, len(source_units))
        read = (
            pipeline
            | f"{name}/Units" >> beam.Create(source_units, reshuffle=False)
            | f"{name}/Spread" >> beam.Reshuffle()
            | f"{name}/Read" >> beam.ParDo(ReadUnit(source, router, done_keys, kind == "image"))
            .with_outputs(REJECTS, main="records")
        )
        rendered = (
            read.records
            | f"{name}/Spread records" >> beam.Reshuffle()
            | f"{name}/Render" >> beam.ParDo(Render(settings, kind)).with_outputs(REJECTS, main="rendered")
        )
        reject_parts += [read[REJECTS], rendered[REJECTS]]
        if kind == "category":
            sentences, rejects = rendered.rendered | f"{name}/Assemble" >> AssembleCategories(
                name, source_config.sentence_length, source_config.remainder, config.seed
            )
            sentence_parts.append(sentences)
            reject_parts.append(rejects)
        else:
            sentence_parts.append(rendered.rendered)

    sentences = sentence_parts | "All sentences" >> beam.Flatten()
    rejects = reject_parts | "All rejects" >> beam.Flatten()
    keyed = (
        (
            sentences | "Address sentences" >> beam.Map(lambda s: (router.of_sentence(s), s)),
            rejects | "Address rejects" >> beam.Map(lambda r: (router.of_reject(r), r)),
        )
        | "Shard items" >> beam.Flatten()
        | "By shard" >> beam.GroupByKey()
    )
    return keyed | "Write shards" >> beam.ParDo(WriteShard(config.output, config.content_hash(), router,
                                                          config.image.size))
