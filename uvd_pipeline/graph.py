"""The Beam graph of one build, stage by stage (DESIGN.md): Read/Render -> Group -> Write -> Tokenize.

    units --RenderSource--> sentences, units, rejects, input digests      (`render_step`: per input
      unit, committed to the unit store before anything global)
    units --Deduplicate / AssembleGroups--> sentences, rejects             (`group_steps`)
    sentences + rejects --WriteShards--> committed shards --Tokenize-->    (`write_steps`)

Every stage sends what it cannot use to a `rejects` output with a reason; rejects are written
next to the sentences of the shard their key hashes to, so a shard commits its sentences and its
rejects together and a resumed build neither loses nor repeats either.

A rerun renders only units that are not committed or whose input changed (the rest come from the
unit store), and writes only the shards of sources whose input digest changed; what each source
type does (a web image is a whole sentence; which sources are deduplicated together) is declared
in `uvd_pipeline.source_factory`, not decided here.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Iterator

import apache_beam as beam

from uvd_pipeline.config import BuildConfig
from uvd_pipeline.dedup import PERSISTED_TYPES, DedupSettings
from uvd_pipeline.group_steps import AssembleGroups, Deduplicate
from uvd_pipeline.output_lock import current_run
from uvd_pipeline.render_step import RenderSource, RenderUnit
from uvd_pipeline.rendered_shards import ShardAddress
from uvd_pipeline.sentences import image_sentence
from uvd_pipeline.source_factory import deduplicated, one_image_sentences, units_per_sentence
from uvd_pipeline.tokenize_stage import committed_rendered, rendered_fields
from uvd_pipeline.unit_render import UnitInputs, list_units, unit_renderers
from uvd_pipeline.shard_inputs import digest_group, group_digest
from uvd_pipeline.write_steps import ShardRouter, WriteShard, _not_committed, add_tokenize

log = logging.getLogger(__name__)


def sentences_of_units(units, source_config, seed: int, mixed: bool = False):
    """A source's rendered image units -> (sentences, [its reject collections]): a web image is a sentence
    of its own; other sources' units are grouped (`units_per_sentence`), with remainders counted.
    `mixed`: `units` holds several sources' units (after dedup), this source's are kept (a step per
    source, not a Partition: see `tagged.OfType`; a web image's selection and sentence are one step)."""
    name = source_config.name
    if one_image_sentences(source_config):
        if mixed:
            return units | f"{name}/Image sentences" >> beam.FlatMap(
                lambda u, n: [image_sentence(u)] if u.source == n else [], name), []
        return units | f"{name}/Image sentences" >> beam.Map(image_sentence), []
    if mixed:
        units = units | f"{name}/Its units" >> beam.Filter(lambda u, n: u.source == n, name)
    sentences, *rejects = units | f"{name}/Assemble" >> AssembleGroups(
        name, units_per_sentence(source_config), getattr(source_config, "remainder", "drop"), seed)
    return sentences, rejects


def digest_groups(config: BuildConfig) -> dict[str, str]:
    """source -> the group whose units its shards depend on (`shard_inputs.digest_group`)."""
    return {s.name: digest_group(s.name, deduplicated(config, s)) for s in config.enabled_sources}


def _source_digests(item: tuple[str, Iterable[UnitInputs]], members: dict[str, list[str]]) -> Iterator[tuple[str, str]]:
    """(source, input digest of its shards) for each source of one digest group."""
    group, units = item
    digest = group_digest((u.unit, u.digest) for u in units)
    for source in members[group]:
        yield source, digest


def source_digests(input_parts: list, config: BuildConfig):
    """A side input: source -> the input digest its shards are built from this run."""
    groups = digest_groups(config)
    members: dict[str, list[str]] = {}
    for name, group in sorted(groups.items()):
        members.setdefault(group, []).append(name)
    return beam.pvalue.AsDict(
        input_parts
        | "All input digests" >> beam.Flatten()
        | "By digest group" >> beam.Map(lambda u, g: (g[u.source], u), groups)
        | "Digest groups" >> beam.GroupByKey()
        | "Source digests" >> beam.FlatMap(_source_digests, members))


def _still_current(stats: dict, done: dict[tuple, str | None], digests: dict[str, str]) -> bool:
    """Whether a shard committed earlier was built from its source's input of this run."""
    return not _not_committed(((stats["source"], stats["split"], int(stats["shard"])), None), done, digests)


def build_graph(pipeline: beam.Pipeline, config: BuildConfig, done: dict[ShardAddress, str | None],
                units: dict[str, list] | None = None, verify: bool = False,
                done_rendered: list[dict[str, Any]] | None = None, run_id: str | None = None):
    """Add the whole build to `pipeline`; returns the PCollection of per-shard stats. `verify`:
    a stored unit's images are checked by sha256 before they are reused (always by size).
    `done_rendered`: what the Tokenize step needs of the shards in `done` (`rendered_fields` of their
    stats), from a caller that has just read them; their stats files are read again otherwise.

    `done`: shards an earlier run of this config committed, with the input digest each was built
    from. Every unit's results flow into the global steps (from the unit store when committed),
    so dedup and assembly decide exactly as a fresh build would; items of a shard committed from
    the same input are dropped just before the shard grouping."""
    units_by_source = units if units is not None else list_units(config)
    router = ShardRouter(config)
    # the run id of the lock this build took (`build.lock_output`): each commit checks it still
    # holds the output; read back from the lock file only where a caller has none to give
    run_id = run_id or current_run(config.output)
    renderers = unit_renderers(config, verify, run_id)
    output, config_hash = config.output, config.content_hash()
    sentence_parts, reject_parts, input_parts = [], [], []
    dedup_units = {}  # source -> its rendered image units, grouped after deduplication
    for source_config in config.enabled_sources:
        name = source_config.name
        source_units = units_by_source[name]
        log.info("%s: %d work units", name, len(source_units))
        together = deduplicated(config, source_config)
        render = RenderUnit(renderers[name])
        sentences, rendered_units, rejects, inputs = pipeline | name >> RenderSource(source_units, render)
        sentence_parts.append(sentences)
        reject_parts.append(rejects)
        input_parts.append(inputs)
        if together:
            dedup_units[name] = rendered_units
        elif units_per_sentence(source_config):
            sentences, rejects = sentences_of_units(rendered_units, source_config, config.seed)
            sentence_parts.append(sentences)
            reject_parts += rejects
    digests = source_digests(input_parts, config)

    shard_parts = []
    if dedup_units:
        sources = {s.name: s for s in config.enabled_sources}
        names = sorted(dedup_units)
        units = [dedup_units[n] for n in names] | "Dedup/Units" >> beam.Flatten()
        kept, rejects = units | "Dedup" >> Deduplicate(DedupSettings.from_config(config.dedup))
        reject_parts.append(rejects)
        persisted = {n for n in names if sources[n].type in PERSISTED_TYPES}
        if persisted:  # each web image's fingerprint is written beside its shard
            shard_parts.append(units | "Address fingerprints" >> beam.FlatMap(
                lambda u, keep: [(router.address(u.source, u.split, u.key), u.fingerprint)] if u.source in keep else [],
                persisted))
        for name in names:
            sentences, rejects = sentences_of_units(kept, sources[name], config.seed, mixed=True)
            sentence_parts.append(sentences)
            reject_parts += rejects

    done_inputs = {tuple(address): digest for address, digest in done.items()}
    # Each part is addressed where it is made, and all meet in one Flatten: the local runner gives
    # every Flatten of several inputs a stage of its own (a write and a read of every element)
    items = (
        [part | f"Address sentences {i}" >> beam.Map(lambda s: (router.of_sentence(s), s))
         for i, part in enumerate(sentence_parts)]
        + [part | f"Address rejects {i}" >> beam.Map(lambda r: (router.of_reject(r), r))
           for i, part in enumerate(reject_parts)]
        + shard_parts
    ) | "Shard items" >> beam.Flatten()
    if done_inputs:  # a resumed build: items of shards committed from this run's input go
        # (with nothing committed the filter drops nothing, and its side input would make the
        # step wait for every unit's digest)
        items = items | "Drop committed" >> beam.Filter(_not_committed, done_inputs, digests)
    # Every shard also gets its item count through a separate combine, so the writer can refuse
    # to commit a shard that arrives incomplete (we saw the local multi-process runner drop
    # grouped values under heavy load: Beam's timer-flushed data buffer, since disabled by
    # `local_runner`; the check stays for other runners and Beam versions); an incomplete shard
    # fails the job and stays uncommitted.
    # The counts reach the writer as a side input, not through a join with the items: a join
    # re-encodes every item once more in a stage of its own.
    counts = beam.pvalue.AsDict(items | "Count per shard" >> beam.combiners.Count.PerKey())
    written = items | "By shard" >> beam.GroupByKey() | "Write shards" >> beam.ParDo(
        WriteShard(output, config_hash, router, config.image.size, run_id), digests, counts)
    if not config.tokenizer.enabled:
        return written
    # Shards committed earlier from the same input get no element this run, so they join the
    # tokenize input from the listing.
    listed = done_rendered if done_rendered is not None else committed_rendered(output, config_hash)
    earlier = sorted((s for s in listed if (s["source"], s["split"], int(s["shard"])) in done_inputs),
                     key=lambda s: s["tar"])
    rendered = (
        (written | "Rendered stats" >> beam.Map(rendered_fields),
         pipeline | "Earlier shards" >> beam.Create(earlier, reshuffle=False)
         | "Still current" >> beam.Filter(_still_current, done_inputs, digests))
        | "All rendered" >> beam.Flatten()
        | "By tar" >> beam.Map(lambda s: (s["tar"], s))  # a retried write may report a shard twice
        | "Once per tar" >> beam.CombinePerKey(lambda values: next(iter(values)))
        | "Drop keys" >> beam.Values()
    )
    return add_tokenize(rendered, config, run_id)


def build_retokenize_graph(pipeline: beam.Pipeline, config: BuildConfig, run_id: str | None = None):
    """Tokenize the committed rendered shards again, without reading or rendering anything."""
    shards = committed_rendered(config.output, config.content_hash())
    if not shards:
        from uvd_pipeline.config import ConfigError

        raise ConfigError(f"{config.output} has no committed rendered shards of this config to retokenize")
    log.info("retokenizing %d rendered shards", len(shards))
    return add_tokenize(pipeline | "Rendered shards" >> beam.Create(shards, reshuffle=False), config,
                        run_id or current_run(config.output))
