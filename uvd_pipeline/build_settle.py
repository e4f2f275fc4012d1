"""The output's committed shards before and after the run: what each was built from (resume),
the unit store pointed at the images they hold, shards whose input is gone removed, stray files
in the shard folders named or removed, and what the stats files said kept for the steps after."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sources import fsio
from uvd_pipeline import unit_store
from uvd_pipeline.config import BuildConfig
from uvd_pipeline.rendered_shards import REJECTS_SUFFIX, STATS_SUFFIX, ShardAddress, committed_shards
from uvd_pipeline.summary import CommittedShards
from uvd_pipeline.tokenize_stage import rendered_fields
from uvd_pipeline.unit_relocation import drop_previous, placement_uri, relocate

log = logging.getLogger(__name__)


@dataclass
class StatsRead:
    """What the steps after `committed_shards` need of the stats files it reads, taken as it reads
    them (its `each`), so that none of them reads a stats file again (a request per shard on an
    object store): each committed shard's tar sha256 (`relocate`); given `rendered`, what the
    Tokenize step needs of each (`rendered_fields`, for `build_graph`); given `shards`, the
    summary's sums of them (`CommittedShards`). All small per shard."""

    tar_sha256: dict[ShardAddress, str | None] = field(default_factory=dict)
    rendered: list[dict[str, Any]] | None = None
    shards: CommittedShards | None = None

    def __call__(self, address: ShardAddress, uri: str, stats: dict[str, Any]) -> None:
        self.tar_sha256[address] = stats.get("tar_sha256")
        if self.rendered is not None:
            self.rendered.append(rendered_fields(stats))
        if self.shards is not None:
            self.shards.add(uri, stats)


def settle_store(output: str, committed, tar_sha256: dict[ShardAddress, str | None] | None = None) -> None:
    """Point the unit store at the images the committed shards hold (`unit_relocation`), with no
    shard being written: before the pipeline and after it. `tar_sha256`: as `relocate` takes it."""
    drop_previous(output)
    moved = relocate(output, committed, tar_sha256=tar_sha256)
    if moved.files_removed:
        log.info("unit store: %d units' images are all in committed shards: their image files went",
                 moved.files_removed)


def clear_strays(output: str, remove: bool, claimed: set[str] | None = None) -> None:
    """Files in the shard folders that no committed shard names, once the run has written all it
    will (a stray tar beside the shards, a folder no build wrote: glob readers would take them):
    removed with `build --verify`, else named in a warning that says so. `claimed`: the files the
    stats files name, as the steps that read them gathered (`unclaimed_files`)."""
    from uvd_pipeline.verify import remove_unclaimed, unclaimed_files

    strays = remove_unclaimed(output, claimed) if remove else unclaimed_files(output, claimed)
    if strays:
        shown = ", ".join(strays[:5]) + (f" and {len(strays) - 5} more" if len(strays) > 5 else "")
        log.warning("%s %d files in the shard folders that no committed shard names: %s%s",
                    "removed" if remove else "found", len(strays), shown,
                    "" if remove else " (build --verify removes them; readers that glob the folders take them)")


def committed_inputs(config: BuildConfig, verify: bool = False, committed: set[ShardAddress] | None = None,
                     each=None) -> dict[ShardAddress, str | None]:
    """Committed (and intact) shards of this config and the input digest of their source each was
    built from; `verify` checks sha256 too, not only sizes. `committed`: the shards, when the
    caller has just listed them; else `each` is `committed_shards`' (`StatsRead`)."""
    if committed is None:
        committed = committed_shards(config.output, config.content_hash(), verify=verify, each=each)
    return {address: unit_store.read_shard_inputs(unit_store.shard_inputs_uri(config.output, address.source,
                                                                                  address.stem))
            for address in committed}


def kept_shards(config: BuildConfig, done: dict[ShardAddress, str | None], committed: set[ShardAddress]) -> int:
    """How many of `done` (the shards committed before the run, with the input digest each was
    built from) the run kept: still committed (in `committed`) from that same input. One whose
    input changed was written again, and counted as resumed as well (hunt58b: 5 shards rewritten,
    `shards_resumed` 5)."""
    now = committed_inputs(config, committed=committed & done.keys())
    return sum(1 for address, digest in now.items() if digest is not None and digest == done[address])


def drop_stale(config: BuildConfig, units: dict[str, list], committed: set[ShardAddress]) -> set[ShardAddress]:
    """After a finished run: forget units no longer in the input, and remove the shards (of
    `committed`, the shards committed now) still built from another input than their source's
    current one (no item of the current input reached them, so nothing rewrote them), with their
    token shards. Returns the shards removed."""
    from uvd_pipeline.dedup import FINGERPRINTS_SUFFIX
    from uvd_pipeline.graph import digest_groups
    from uvd_pipeline.rendered_shards import TAR_SUFFIX
    from uvd_pipeline.shards import ARROW_SUFFIX
    from uvd_pipeline.tokenize_stage import token_shard_path

    paths = {s.name: s.path for s in config.sources}
    stores = {name: unit_store.UnitStore(config.output, name, "", paths[name], config.output_root(name)) for name in units}
    ids = {name: [stores[name].uid(u) for u in source_units] for name, source_units in units.items()}
    gone = unit_store.prune(config.output, {name: set(uids) for name, uids in ids.items()})
    if gone:
        log.info("forgot %d rendered units whose input is gone", gone)
    by_group: dict[str, list[tuple[str, str]]] = {}
    complete = True
    for name, group in digest_groups(config).items():
        found = unit_store.committed_digests(config.output, name, ids[name])
        complete = complete and found is not None
        by_group.setdefault(group, []).extend(found or [])
    if not complete:
        return set()  # the run did not finish every unit: nothing can be judged stale yet
    current = {name: unit_store.group_digest(by_group[group]) for name, group in digest_groups(config).items()}
    fs, _ = fsio.filesystem(config.output)
    removed = set()
    for address, digest in committed_inputs(config, committed=committed).items():
        if digest == current.get(address.source):
            continue
        removed.add(address)
        stale = [address.path(config.output, STATS_SUFFIX)]  # the commit mark first
        stale += [address.path(config.output, suffix) for suffix in (TAR_SUFFIX, REJECTS_SUFFIX, FINGERPRINTS_SUFFIX)]
        token = token_shard_path(config.output, address.source, address.split, address.stem)
        stale += [token[: -len(ARROW_SUFFIX)] + STATS_SUFFIX, token,
                  unit_store.shard_inputs_uri(config.output, address.source, address.stem),
                  placement_uri(config.output, address.source, address.stem)]
        for uri in stale:
            if fsio.exists(uri):
                fs.rm(fsio.filesystem(uri)[1])
        log.info("removed %s: its input is gone", address.stem)
    return removed
