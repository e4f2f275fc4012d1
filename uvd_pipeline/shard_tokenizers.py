"""Which tokenizer made each of a set of token shards: an export of shards of several tokenizers
would mix codes that mean other images in one file (the trainer's `check_same_tokenizer`
refuses such a mix; `export-jsonl` wrote it without a word)."""

from __future__ import annotations

from collections import defaultdict

from uvd_pipeline.shards import JsonlError, TokenShardMeta, read_token_shard

IDENTITY = ("tokenizer_name", "tokenizer_hash", "codebook_size", "tokens_per_image")
SHOWN = 3  # paths named per tokenizer


def made_by(meta: TokenShardMeta) -> tuple:
    """What must agree across shards whose codes go into one file."""
    return tuple(getattr(meta, name) for name in IDENTITY)


def describe(identity: tuple) -> str:
    name, digest, codebook, per_image = identity
    return f"{name!r} (hash {str(digest)[:16]}, {codebook} codes, {per_image} tokens per image)"


def check_one_tokenizer(shard_paths: list[str]) -> None:
    """Raise `JsonlError` naming each tokenizer found and its shards where they are not all one's.
    Read from each shard's schema, the shard checked against its stats first (a damaged one is
    named as such here), before anything is written."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for path in shard_paths:
        groups[made_by(read_token_shard(path)[1])].append(path)
    if len(groups) < 2:
        return
    parts = []
    for identity, paths in sorted(groups.items(), key=lambda item: len(item[1])):
        shown = ", ".join(paths[:SHOWN]) + (f", ... ({len(paths)} in all)" if len(paths) > SHOWN else "")
        parts.append(f"{describe(identity)}: {len(paths)} shard{'s' if len(paths) > 1 else ''} ({shown})")
    raise JsonlError(f"the shards come from {len(groups)} tokenizers, whose codes mean other images: "
                     + "; ".join(parts) + "; export each tokenizer's shards to a file of their own")
