"""Shards named by more than one `--data` entry ('data/[ab]/*.arrow' and 'data/a/*.arrow').

Each entry draws its sentences from every shard it names, so a shard two entries name is drawn
through both: at the sum of its share of each. That may be meant (upweighting a part of the
data), so it is not refused; but each entry's share alone (0.5 and 0.5 above) hid that a's shards
took 75% of the draws. `shared_shards` gives each such shard's effective share of the sentences
drawn, for the run's note and its summary.json.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

NAMED_IN_NOTE = 4  # shards a note names; the summary lists them all


@dataclass(frozen=True)
class EntryShards:
    """One mixture entry: its glob and weight, and the sentences (after the split filter) of each shard."""
    glob: str
    weight: float
    paths: tuple[str, ...]
    counts: tuple[int, ...]


def _key(path: str) -> str:
    """One spelling per file: 'data/a/x.arrow' and './data/a/x.arrow' (or a link) are one shard."""
    return path if "://" in path else os.path.realpath(path)


def shared_shards(entries: Sequence[EntryShards]) -> list[dict[str, Any]]:
    """Per shard named by two entries or more, in the order first named: its path, the globs naming
    it and its effective share of the sentences drawn (an entry's share, weight / sum of weights,
    spread over its shards by their sentences, summed over the entries naming the shard)."""
    total = sum(entry.weight for entry in entries)
    found: dict[str, dict[str, Any]] = {}
    for entry in entries:
        sentences = sum(entry.counts)
        for path, count in zip(entry.paths, entry.counts):
            shard = found.setdefault(_key(path), {"shard": path, "globs": [], "share": 0.0})
            shard["globs"].append(entry.glob)
            shard["share"] += (entry.weight / total) * count / sentences if sentences else 0.0
    return [shard for shard in found.values() if len(shard["globs"]) > 1]


def overlap_note(shared: Sequence[dict[str, Any]]) -> str | None:
    """The note naming the shared shards (the first few) and the draws they take together; None
    where no shard is shared."""
    if not shared:
        return None
    named = "; ".join(f"{s['shard']} ({' and '.join(repr(g) for g in s['globs'])}: {100 * s['share']:.1f}%)"
                      for s in shared[:NAMED_IN_NOTE])
    more = f"; and {len(shared) - NAMED_IN_NOTE} more" if len(shared) > NAMED_IN_NOTE else ""
    together = sum(s["share"] for s in shared)
    return (f"{len(shared)} shard(s) are named by more than one --data glob and are drawn through each, at the sum "
            f"of their shares ({100 * together:.1f}% of the sentences drawn together, not what each glob's share "
            f"says): {named}{more}; summary.json lists each under shared_shards. Name each shard once unless "
            "you mean to upweight it")
