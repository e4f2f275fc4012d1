"""Token shards for trainer tests, written by the real shard writer (`write_token_shard`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

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


def write_foreign_shard(path: Path, token_lists: list[list[int] | None], value_type: Any = None,
                        n_images: list[int] | None = None, meta: TokenShardMeta = META,
                        batch_rows: int | None = None) -> str:
    """A token shard as another tool might write it with pyarrow alone: any tokens type, any ids,
    any lengths, record batches of `batch_rows`, with an honest stats file (size and sha256), so
    only its contents are wrong."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    n = len(token_lists)
    tokens = pa.array(token_lists, pa.large_list(value_type or pa.uint16()))
    images = n_images if n_images is not None else [len(t or []) // meta.tokens_per_image for t in token_lists]
    table = pa.table({"sentence_id": [f"s{i:05d}" for i in range(n)], "source": ["x"] * n, "kind": ["image"] * n,
                      "task": ["none"] * n, "split": ["train"] * n, "n_images": pa.array(images, pa.int32()),
                      "tokens": tokens, "lineage": ["{}"] * n}).replace_schema_metadata(meta.to_metadata())
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=batch_rows)
    data = sink.getvalue().to_pybytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    stats = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    path.with_name(path.name[: -len(".arrow")] + ".stats.json").write_text(json.dumps(stats))
    return str(path)
