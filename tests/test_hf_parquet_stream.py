"""A parquet row group over the budget whose rows each fit is read a few rows at a time
(`hf_parquet.streamed_bytes`), never whole and never refused: `datasets` sizes its row groups from
the average row, so a last group of photos after many thumbnails passes the budget (a 292 MB
group of 130 photos of 2.9 MB each lost every row), and img2dataset writes 100 rows a group."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from sources import hf_parquet
from sources.laion import LaionSource
from sources.records import ImageRecord, Reject

HF_METADATA = {b"huggingface": json.dumps({"info": {"features": {
    "image": {"_type": "Image"}, "text": {"dtype": "string", "_type": "Value"}}}}).encode()}


def _photo(seed: int, size: int) -> bytes:
    """A JPEG of noise (incompressible, as a photo's bytes are to parquet's codec)."""
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
        out, "JPEG", quality=92)
    return out.getvalue()


def _datasets_parquet(path: Path, pictures: list[bytes], row_group_size: int) -> list[dict]:
    """A parquet as `datasets` writes one of an Image and a caption column (`huggingface` schema
    metadata, pyarrow's writer); its pages and dictionary limit scaled down with the pictures (a
    2.9 MB photo passes pyarrow's 1 MiB page and dictionary limits: one photo a plain page)."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image), ("text", pa.string())], metadata=HF_METADATA)
    rows = [{"image": {"bytes": b, "path": None}, "text": f"picture {i}"} for i, b in enumerate(pictures)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=row_group_size,
                   data_page_size=4 << 10, dictionary_pagesize_limit=4 << 10, write_batch_size=1)
    return rows


def _items(root: Path) -> list:
    source = LaionSource("hf", str(root))
    return [item for unit in source.units() for item in source.read(unit)]


def test_a_row_group_over_the_budget_whose_rows_fit_is_read_a_few_rows_at_a_time(tmp_path: Path, monkeypatch):
    """20 thumbnails and 16 photos of ~16 KB (the hunter's 300 thumbnails and 130 photos of 2.9 MB,
    scaled): the photos' group passes a budget of half its size, each photo well within it. Every
    row is built, its bytes and caption those written, and the big group is read in batches
    within the budget, not whole."""
    pictures = [_photo(i, 12) for i in range(20)] + [_photo(100 + i, 128) for i in range(16)]
    path = tmp_path / "data" / "train-00000-of-00001.parquet"
    rows = _datasets_parquet(path, pictures, row_group_size=20)
    parquet = pq.ParquetFile(path)
    declared = hf_parquet.declared_bytes(parquet.metadata.row_group(1))
    budget = declared // 2
    assert declared > budget > 4 * len(pictures[-1]) and hf_parquet.declared_bytes(parquet.metadata.row_group(0)) < budget
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", budget)
    monkeypatch.setattr(hf_parquet, "STREAM_BATCH_BYTES", 2 * len(pictures[-1]))  # a few rows a batch
    batches = []
    iter_batches = pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", lambda self, *a, **k:
                        batches.append((k.get("row_groups"), k.get("batch_size"))) or iter_batches(self, *a, **k))
    items = _items(tmp_path)
    assert [type(i) for i in items] == [ImageRecord] * len(pictures), [getattr(i, "detail", "") for i in items][-1]
    assert [i.data for i in items] == pictures
    assert [i.lineage["caption"] for i in items] == [r["text"] for r in rows]
    (streamed,) = [size for groups, size in batches if groups == [1]]
    assert 1 <= streamed < 16, batches  # a few rows a batch, not the group


def test_a_row_group_of_one_row_over_the_budget_is_refused_the_others_built(tmp_path: Path, monkeypatch):
    """A photo bigger than the whole budget, alone in its page: its group cannot be read even a row
    at a time, so its rows are `row_group_too_large` rejects saying so; the groups before and
    after it are built."""
    small = [_photo(i, 24) for i in range(4)]
    huge = _photo(50, 160)
    pictures = small[:2] + [huge, small[2]] + small[3:]
    _datasets_parquet(tmp_path / "train.parquet", pictures, row_group_size=2)
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", len(huge) // 2)
    items = _items(tmp_path)
    assert [type(i) for i in items] == [ImageRecord, ImageRecord, Reject, Reject, ImageRecord]
    assert [i.data for i in items if isinstance(i, ImageRecord)] == small[:2] + small[3:]
    assert {i.reason for i in items if isinstance(i, Reject)} == {"row_group_too_large"}
    assert "row group 1 holds" in items[2].detail and "read even one row at a time" in items[2].detail, items[2].detail
    assert "a row that large" in items[2].detail
    assert f"over the {len(huge) // 2} byte budget" in items[2].detail
