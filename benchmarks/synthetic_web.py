"""Synthetic web photos in img2dataset's webdataset layout, for the benchmarks that need many
distinct large JPEGs (no two alike, so dedup keeps them all) and no real corpus of that size."""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
from typing import Callable

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from uvd_pipeline.tarfiles import add_member  # noqa: E402


def photo_jpeg(rng: np.random.Generator, sides: tuple[int, int], cell: int, noise: int,
               quality: int) -> bytes:
    """A photo-like JPEG: a smooth random field (one random colour per `cell` px, bicubic) plus
    uniform noise in [-noise, noise), each side drawn from [sides[0], sides[1])."""
    h, w = int(rng.integers(*sides)), int(rng.integers(*sides))
    coarse = rng.integers(0, 256, (h // cell + 2, w // cell + 2, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.int16)
    grain = rng.integers(-noise, noise, (h, w, 3), dtype=np.int16)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(field + grain, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_tars(folder: str, images: int, image: Callable[[np.random.Generator], bytes],
               per_tar: int = 100, seed: int = 0) -> None:
    """img2dataset layout: `NNNNN.tar` of `per_tar` samples, each `{key}.jpg`, `.txt`, `.json`."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for shard, start in enumerate(range(0, images, per_tar)):
        with tarfile.open(os.path.join(folder, f"{shard:05d}.tar"), "w") as tar:
            for index in range(start, min(images, start + per_tar)):
                key = f"{shard:05d}{index % per_tar:04d}"
                for suffix, payload in (("jpg", image(rng)), ("txt", f"synthetic {index}".encode()),
                                        ("json", json.dumps({"key": key, "url": f"synthetic://{index}"}).encode())):
                    add_member(tar, f"{key}.{suffix}", payload)


def web_build_config(output: str, corpus: str, shards: int, tokenize: bool, beam: dict) -> dict:
    """The benchmarks' build of such a corpus: one laion source, 256 px centre crops, 5% val."""
    return {"version": 1, "output": output, "seed": 0,
            "image": {"size": 256, "resize": "center_crop"}, "split": {"val_fraction": 0.05},
            "sources": [{"name": "web", "type": "laion", "path": corpus,
                         "num_shards": shards, "num_val_shards": 1}],
            "tokenizer": {"enabled": tokenize}, "beam": beam}
