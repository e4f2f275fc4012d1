"""The shard writer and the tokenizer steps: committed per output shard, stats last."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Iterable, Iterator

import apache_beam as beam
from apache_beam.utils.shared import Shared

from sources import fsio
from sources.records import Reject
from tokenizer.atomic import write_bytes
from tokenizer.host_memory import keep_for_good
from uvd_pipeline import early_tokenizer
from uvd_pipeline.config import FORMAT_VERSION, BuildConfig
from uvd_pipeline.keys import shard_of
from uvd_pipeline.output_lock import check_held
from uvd_pipeline.render import RenderSettings
from uvd_pipeline.rendered_shards import STATS_SUFFIX, ShardAddress, write_shard
from uvd_pipeline.sentences import Sentence
from uvd_pipeline.step_metrics import PROGRESS, count, distribution
from uvd_pipeline.tokenize_stage import TokenizeSettings, load_tokenizer, tokenize_shard
from uvd_pipeline.unit_relocation import background_release, keep_previous, previous_lookup, record_placement
from uvd_pipeline.unit_store import StoreReader, read_shard_inputs, shard_inputs_uri

log = logging.getLogger(__name__)


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


class WriteShard(beam.DoFn):
    """Write one shard, unless an earlier run committed it from the same input (its source's input
    digest, `unit_store.shard_inputs_uri`). A shard whose source's input changed is uncommitted
    (stats removed first) and written again; the digest is recorded before the data, stats last."""

    def __init__(self, output: str, config_hash: str, router: ShardRouter, image_size: int,
                 run_id: str | None = None) -> None:
        self.output = output
        self.run_id = run_id  # the run whose lock each commit checks (`output_lock.check_held`)
        self.config_hash = config_hash
        self.router = router
        self.image_size = image_size

    def process(self, item: tuple[tuple[str, str, int], Iterable[Any]], digests: dict[str, str],
                counts: dict[tuple[str, str, int], int]) -> Iterator[dict]:
        (source, split, index), items = item
        address = ShardAddress(source, split, index)
        inputs_uri = shard_inputs_uri(self.output, source, address.stem)
        stats_uri = address.path(self.output, STATS_SUFFIX)
        if read_shard_inputs(inputs_uri) != digests[source]:
            check_held(self.output, self.run_id)  # uncommitting is a change too
            if fsio.exists(stats_uri):
                fs, target = fsio.filesystem(stats_uri)
                fs.rm(target)  # uncommitted before anything of it changes
                log.info("%s: its input changed since it was committed: writing it again", address.stem)
            keep_previous(self.output, address)  # other shards' images may still be read from the old tar
            write_bytes(inputs_uri, digests[source].encode())
        expected = counts.get((source, split, index), 0)
        start = time.perf_counter()
        reader = StoreReader(previous_lookup(self.output))
        try:
            result = write_shard(
                self.output, address, items,
                expected_items=expected,
                config_hash=self.config_hash,
                num_shards=self.router.counts[source][split],
                image_size=self.image_size,
                format_version=FORMAT_VERSION,
                read_image=reader.read,
                run_id=self.run_id,
                before_commit=lambda sha, placed: record_placement(self.output, address, sha, placed),
            )
        finally:
            reader.close()
        if not result.skipped:  # the store's copy of each image goes, now that the shard holds it
            count(source, "store_bytes_released", background_release().submit(result.placed))
        count(source, "shards_skipped" if result.skipped else "shards_written")
        if not result.skipped:
            distribution("stage.write_us", (time.perf_counter() - start) * 1e6)
            distribution("stage.write_sentences", result.stats["sentences"])
            count(source, "sentences_written", result.stats["sentences"])
            PROGRESS.add("written sentences", result.stats["sentences"])
            log.info("committed %s: %d sentences, %d rejects", address.stem,
                     result.stats["sentences"], result.stats["rejects"])
        yield {"shard": address.stem, "skipped": result.skipped, **result.stats}


def _not_committed(item: tuple[tuple[str, str, int], Any], done: dict[tuple, str | None],
                   digests: dict[str, str]) -> bool:
    """Whether an item's shard still has to be written: not committed, or from other input."""
    address = item[0]
    return address not in done or done[address] != digests[address[0]]


class TokenizeShard(beam.DoFn):
    """One model per worker process, shared by the DoFn instances of its threads. A worker process
    other than the one that made the graph keeps freed memory for good once its CPU tokenizer is
    loaded (`tokenizer.host_memory.keep_for_good`; workers in the build's own process get it around
    the pipeline instead)."""

    def __init__(self, output: str, settings: TokenizeSettings, config_hash: str, run_id: str | None = None) -> None:
        self.output = output
        self.run_id = run_id  # the run whose lock the commit checks (`output_lock.check_held`)
        self.settings = settings
        self.config_hash = config_hash
        self._shared = Shared()
        self._graph_pid = os.getpid()

    def setup(self) -> None:
        settings = self.settings
        # a tokenizer this process loaded and compiled while the build rendered (GPU), else a new one
        self.tokenizer = self._shared.acquire(lambda: early_tokenizer.take(settings) or load_tokenizer(settings))
        if os.getpid() != self._graph_pid and self.tokenizer.device.type == "cpu":
            keep_for_good()  # 900 web images on 2 worker processes: 78-80 -> 60-61 s

    def process(self, stats: dict[str, Any]) -> Iterator[dict]:
        start, clock = time.perf_counter(), time.time()
        timings: dict[str, float] = {}
        result = tokenize_shard(self.output, stats, self.tokenizer, self.config_hash, on_batch=_batch_timing,
                                timings=timings, run_id=self.run_id)
        source = stats["source"]
        count(source, "token_shards_skipped" if result["skipped"] else "token_shards_written")
        if not result["skipped"]:
            # wall-clock ends of each shard's work: min and max span the stage across workers
            distribution("stage.tokenize_clock_ms", int(clock * 1000))
            distribution("stage.tokenize_clock_ms", int(time.time() * 1000))
            distribution("stage.tokenize_us", (time.perf_counter() - start) * 1e6)
            for part, seconds in timings.items():  # read + decode, blocked on the codec, token shard write
                distribution(f"tokenize.{part}_us", seconds * 1e6)
            distribution("stage.tokenize_images", result["images"])
            count(source, "images_tokenized", result["images"])
            PROGRESS.add("tokenized images", result["images"])
            log.info("tokenized %s: %d images", stats["tar"], result["images"])
        yield result


def _batch_timing(seconds: float, images: int) -> None:
    distribution("tokenize.batch_us", seconds * 1e6)
    distribution("tokenize.batch_images", images)


def add_tokenize(rendered, config: BuildConfig, run_id: str | None = None):
    """Tokenize rendered shards; only this step carries the accelerator hint. `run_id`: the run
    whose lock each commit checks."""
    t = config.tokenizer
    settings = TokenizeSettings.of(t)
    step = beam.ParDo(TokenizeShard(config.output, settings, config.content_hash(), run_id))
    if t.accelerator:
        step = step.with_resource_hints(accelerator=t.accelerator)
    return rendered | "Spread shards" >> beam.Reshuffle() | "Tokenize" >> step
