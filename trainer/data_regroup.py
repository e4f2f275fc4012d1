"""One glob against the shell's expansion of it on resume: `--data 'a/*.arrow'` quoted in one run
and unquoted in the next (the shell passes the shard files, each an entry of the one `--data`),
or the reverse.

Each is another grouping of the mixture (a source per entry, each weighted), so the saved
positions do not fit the new one. But where the same shards, with the same sha256 in the same
order, are named, the run can go on as it began: its entries, globs and weights, the shards now
named. `regroup` finds that correspondence, or None; `TokenWindows.load_state_dict` rebuilds its
sources with it and then holds the whole fingerprint to the saved one, as for any resume.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class Named:
    """What one entry of this run names: its shard files, their sha256 (in read order), its weight."""
    paths: tuple[str, ...]
    digests: tuple[str, ...]
    weight: float


def _digest(digests: Sequence[str]) -> str:
    """A source's sha256 as the fingerprint records it (`SentenceSource.digest`)."""
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def regroup(saved: Sequence[dict[str, Any]], weights: Sequence[float], now: Sequence[Named]
            ) -> list[tuple[str, float, tuple[str, ...]]] | None:
    """(glob, weight, paths) for each saved entry, the paths taken from `now`, where `now` differs
    from the saved entries only as a shell expansion does: several one-shard entries for one saved
    entry, or one entry for several saved one-shard entries, each shard's weight the one it had;
    None where anything else differs (other shards, another order, another weight)."""
    if len(saved) != len(weights) or not all("sha256" in s for s in saved):
        return None
    out: list[tuple[str, float, tuple[str, ...]]] = []
    i = j = 0
    while i < len(saved) and j < len(now):
        entry, weight = saved[i], weights[i]
        if len(now[j].paths) == entry["shards"] and now[j].weight == weight:  # one for one
            group, i, j = [now[j]], i + 1, j + 1
            out.append((entry["glob"], weight, group[0].paths))
        elif len(now[j].paths) == 1 and entry["shards"] > 1:  # the shell expanded the glob this run began with
            group = list(now[j:j + entry["shards"]])
            if len(group) < entry["shards"] or any(len(n.paths) != 1 or n.weight != weight for n in group):
                return None
            out.append((entry["glob"], weight, tuple(n.paths[0] for n in group)))
            i, j = i + 1, j + len(group)
        elif entry["shards"] == 1 and len(now[j].paths) > 1:  # the run began with the shell's expansion
            count = len(now[j].paths)
            if any(s["shards"] != 1 for s in saved[i:i + count]) or len(saved[i:i + count]) < count:
                return None
            if any(w != now[j].weight for w in weights[i:i + count]):
                return None
            out.extend((s["glob"], w, (path,)) for s, w, path in zip(saved[i:i + count], weights[i:i + count],
                                                                    now[j].paths))
            i, j = i + count, j + 1
        else:
            return None
    if i != len(saved) or j != len(now):
        return None
    digests = {path: digest for n in now for path, digest in zip(n.paths, n.digests)}
    if any(_digest([digests[p] for p in paths]) != entry["sha256"] for (_, _, paths), entry in zip(out, saved)):
        return None
    return out
