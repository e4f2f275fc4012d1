"""Token shards for trainer tests, written by the real shard writer (`write_token_shard`)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from uvd_pipeline.shards import TokenRow, TokenShardMeta, write_token_shard

META = TokenShardMeta("uvd-test", "hash0", 8192, 16, 64, "cfg0")


def write_shards(folder: Path, name: str, sentences: list[np.ndarray], shards: int = 2,
                 meta: TokenShardMeta = META, split: Callable[[int], str] = lambda i: "train") -> list[str]:
    """`sentences` spread round-robin over `shards` files `folder/name-0000i.arrow`."""
    paths = []
    for s in range(shards):
        rows = [TokenRow(f"{name}-{i:05d}", name, "image", "none", split(i), tokens.astype(np.uint16), {"i": i})
                for i, tokens in enumerate(sentences) if i % shards == s]
        path = str(folder / f"{name}-{s:05d}.arrow")
        write_token_shard(path, rows, meta)
        paths.append(path)
    return paths


def numbered_sentences(count: int, images: Callable[[int], int] = lambda i: 1 + i % 3, tokens_per_image: int = 16,
                       base: int = 0) -> list[np.ndarray]:
    """Sentence i holds the value base + i everywhere: a token says which sentence it came from."""
    return [np.full(images(i) * tokens_per_image, base + i, np.uint16) for i in range(count)]


def structured_sentences(count: int, seed: int = 0, tokens_per_image: int = 16, images: int = 4,
                         alphabet: int = 32) -> list[np.ndarray]:
    """Each sentence is one random image repeated: after the first image every token is predictable."""
    rng = np.random.default_rng(seed)
    return [np.tile(rng.integers(0, alphabet, tokens_per_image), images).astype(np.uint16) for _ in range(count)]
