"""Stable hashing: splits, shards and per-item seeds derived from keys, never from run order."""

from __future__ import annotations

import hashlib
import unicodedata
from collections import defaultdict
from typing import Iterable

from sources.records import stable_hash

__all__ = ["stable_hash", "split_of", "shard_of", "seed_for", "unit_interval", "folded", "apart_when_folded"]


def unit_interval(*parts: object) -> float:
    return stable_hash(*parts) / 2.0**64


def split_of(group: str, seed: int, val_fraction: float, hint: str | None = None) -> str:
    """The split of a group: the dataset's own split when it has one, else a seeded hash.

    Everything sharing a group key (all clips of a video, say) gets the same answer, so no
    group spans two splits.
    """
    if hint is not None:
        return hint
    return "val" if unit_interval("split", seed, group) < val_fraction else "train"


def shard_of(key: str, num_shards: int) -> int:
    """The output shard of a sentence (or of a reject), from its key alone, as a case-insensitive
    file system sees it (`folded`): keys that differ only in case or Unicode form (`web-Cat`,
    `web-cat`) go to one shard, where the writer tells them apart (`apart_when_folded`). In two
    shards, extracting a split's shards into one folder on a Mac or Windows kept one of them."""
    return stable_hash("shard", folded(key)) % num_shards


def seed_for(*parts: object) -> int:
    """A per-item RNG seed (for numpy's default_rng) derived from keys."""
    return stable_hash("seed", *parts)


def folded(name: str) -> str:
    """`name` as a case-insensitive file system compares names (macOS, Windows): Unicode's canonical
    caseless match (NFD, case folded, NFC): `Cat`, `cat` and `CAT` are one, `\u212b` and `\u00c5` too."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", name).casefold())


def apart_when_folded(keys: Iterable[str]) -> dict[str, str]:
    """A new key for each of `keys` that another one equals once `folded` (`web-Cat`, `web-cat`:
    file names a Mac or Windows takes for one, so extracting their tar kept one of them): the key,
    `-c` and a 32-bit digest of it. Every key of such a group gets one (none is preferred, so the
    names do not depend on which inputs arrived); a key no other meets keeps its name."""
    groups: dict[str, set[str]] = defaultdict(set)
    for key in keys:
        groups[folded(key)].add(key)
    return {key: f"{key}-c{hashlib.blake2b(key.encode('utf-8', 'surrogateescape'), digest_size=4).hexdigest()}"
            for group in groups.values() if len(group) > 1 for key in group}
