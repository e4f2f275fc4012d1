"""What input each committed output shard was built from: its source's group digest (over the
units' input digests), recorded beside the output's shards (`OUT/_inputs/`), so a rerun keeps a
shard whose input is unchanged and removes one whose input is gone."""

from __future__ import annotations

import hashlib
from typing import Iterable

from sources import fsio
from uvd_pipeline.state_files import read_state


def group_digest(units: Iterable[tuple[str, str]]) -> str:
    """The input digest of a set of units, (unit id, input digest) pairs in any order: what a
    source's shards were built from (a shard of a source may hold any of its units' items)."""
    return hashlib.sha256("\n".join(sorted(f"{u} {d}" for u, d in units)).encode()).hexdigest()


def digest_group(source: str, deduplicated: bool) -> str:
    """The group whose units a source's shards depend on: deduplicated sources decide together (a
    new image in one can make an image of another a duplicate), others alone."""
    return "dedup" if deduplicated else f"source:{source}"


SHARD_INPUTS_DIR = "_inputs"
SHARD_INPUTS_MAX_BYTES = 4096  # a sha256 in hex, 64 bytes


def shard_inputs_uri(output: str, source: str, stem: str) -> str:
    """Where a committed output shard records the input digest of its source it was built from:
    outside `rendered/`, so the shard files stay the same bytes wherever the input lies, and
    outside the unit store, which a user may delete to reclaim its space."""
    return fsio.join(output, SHARD_INPUTS_DIR, source, stem + ".txt")


def read_shard_inputs(uri: str) -> str | None:
    try:
        return read_state(uri, SHARD_INPUTS_MAX_BYTES).decode().strip()
    except (FileNotFoundError, ValueError):  # not UTF-8, or refused (`state_files`): built again
        return None
