"""Stable hashing: splits, shards and per-item seeds derived from keys, never from run order."""

from __future__ import annotations

from sources.records import stable_hash

__all__ = ["stable_hash", "split_of", "shard_of", "seed_for", "unit_interval"]


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
    """The output shard of a sentence (or of a reject), from its key alone."""
    return stable_hash("shard", key) % num_shards


def seed_for(*parts: object) -> int:
    """A per-item RNG seed (for numpy's default_rng) derived from keys."""
    return stable_hash("seed", *parts)
