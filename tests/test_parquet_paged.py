"""A row group whose image column is a page (or dictionary page) of many rows is read with that
column's values taken one at a time from its pages (`parquet_values`, `parquet_paged`), never
decoded whole by pyarrow: pyarrow's and pandas' default writers put a group of up to 1,024 images
in one page, read whole at up to 6 times its size (80 photos of 3 MB: 1.3 GB RSS), and one row
over the budget made its whole group a reject. Files come from the real writers: pyarrow's
`write_table` with its defaults, pandas' `to_parquet` (img2dataset's venv holds pandas), and a
`datasets`-shaped Image struct written by pyarrow as `datasets` does."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sources import hf_parquet, parquet_values
from sources.laion import LaionSource
from sources.records import ImageRecord, Reject

PANDAS_PYTHON = Path(__file__).resolve().parent.parent / ".venv-img2dataset" / "bin" / "python"
HF_METADATA = {b"huggingface": json.dumps({"info": {"features": {
    "image": {"_type": "Image"}, "text": {"dtype": "string", "_type": "Value"}}}}).encode()}


def _photo(seed: int, size: int) -> bytes:
    """A JPEG of noise (incompressible, as a photo's bytes are to parquet's codec)."""
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
        out, "JPEG", quality=92)
    return out.getvalue()


def _pandas_parquet(path: Path, pictures: list[bytes]) -> None:
    """`pandas.DataFrame({"image": ..., "caption": ...}).to_parquet(path)`, by pandas itself."""
    if not PANDAS_PYTHON.exists():
        pytest.skip("img2dataset venv (which holds pandas) missing: `make img2dataset`")
    path.parent.mkdir(parents=True, exist_ok=True)
    script = ("import pandas, pickle, sys; pictures = pickle.load(sys.stdin.buffer); pandas.DataFrame({'image': "
              "pictures, 'caption': [f'p{i}' for i in range(len(pictures))]}).to_parquet(sys.argv[1])")
    done = subprocess.run([str(PANDAS_PYTHON), "-c", script, str(path)], input=pickle.dumps(pictures),
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


def _write(path: Path, writer: str, pictures: list[bytes | None]) -> None:
    """`pictures` in one row group as `writer` writes them with its defaults: pandas, pyarrow (a
    table of an `image` binary and a caption), or `datasets`' Image struct (a null image, and a
    row naming a file by its path, among them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if writer == "pandas":
        _pandas_parquet(path, pictures)
        return
    captions = [f"p{i}" for i in range(len(pictures))]
    if writer == "pyarrow":
        pq.write_table(pa.table({"image": pa.array(pictures, pa.binary()), "caption": captions}), path)
        return
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    cells = [{"bytes": b, "path": None} if b is not None else None for b in pictures]
    pq.write_table(pa.Table.from_pylist([{"image": c, "text": t} for c, t in zip(cells, captions)],
                                        schema=pa.schema([("image", image), ("text", pa.string())], metadata=HF_METADATA)),
                   path)


def _items(root: Path) -> list:
    source = LaionSource("p", str(root))
    return [item for unit in source.units() for item in source.read(unit)]


def _built(items: list) -> list:
    return [(type(i).__name__, i.key, getattr(i, "data", None), getattr(i, "lineage", None),
             getattr(i, "reason", None)) for i in items]


@pytest.mark.parametrize("writer", ["pyarrow", "pandas", "datasets"])
def test_one_row_over_the_budget_is_its_own_reject_the_rest_of_its_group_built(tmp_path: Path, monkeypatch, writer):
    """A photo bigger than the whole budget among four small ones, one row group (one dictionary
    page, as each writer's defaults write it): the whole group was `row_group_too_large`, four
    good rows lost. Now that row alone is the reject (its detail naming its bytes), and the others
    are built with the bytes and captions a file without it gives."""
    small = [_photo(i, 24) for i in range(4)]
    huge = _photo(50, 160)
    _write(tmp_path / "with" / "train.parquet", writer, small[:2] + [huge] + small[2:])
    _write(tmp_path / "without" / "train.parquet", writer, small)
    without = _items(tmp_path / "without")  # within the 256 MiB budget: read whole
    budget = len(huge) // 2
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", budget)
    items = _items(tmp_path / "with")
    assert [type(i) for i in items] == [ImageRecord, ImageRecord, Reject, ImageRecord, ImageRecord], \
        [getattr(i, "detail", "") for i in items]
    kept = [i for i in items if isinstance(i, ImageRecord)]
    assert [i.data for i in kept] == [i.data for i in without] == small
    assert [i.lineage["caption"] for i in kept] == ["p0", "p1", "p3", "p4"]
    assert items[2].reason == "row_group_too_large"
    assert f"row 2: its 'image' holds {len(huge)} bytes" in items[2].detail, items[2].detail
    assert "the group's other rows are" in items[2].detail


@pytest.mark.parametrize("writer", ["pyarrow", "pandas", "datasets"])
def test_a_page_of_many_rows_is_read_a_value_at_a_time_as_pyarrow_reads_it_whole(tmp_path: Path, monkeypatch, writer):
    """24 photos in one dictionary page (each writer's defaults), a null image and a repeated one
    among them: under a budget the group is within but its whole read (up to 6 times its size)
    is not, pyarrow read the group whole (80 photos of 3 MB: 1366 MiB peak RSS). Now the image
    column is never read by pyarrow: its values come from its pages, every item as the whole read
    built it (the same keys, bytes and lineage)."""
    pictures = [_photo(600 + i, 96) for i in range(24)]
    pictures[5] = pictures[3]  # a repeated image: one dictionary value, two rows
    if writer == "datasets":
        pictures[7] = None
    path = tmp_path / "train.parquet"
    _write(path, writer, pictures)
    whole = _built(_items(tmp_path))
    assert [i[2] for i in whole if i[0] == "ImageRecord"] == [p for p in pictures if p is not None]
    with open(path, "rb") as handle:
        size = hf_parquet.value_bytes(handle, pq.ParquetFile(handle), 0)
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 3 * size)  # within it as judged, not read whole
    monkeypatch.setattr(hf_parquet, "STREAM_BATCH_BYTES", 3 * len(pictures[0]))
    read = []
    for method in ("read_row_group", "iter_batches", "read"):
        original = getattr(pq.ParquetFile, method)
        monkeypatch.setattr(pq.ParquetFile, method, lambda self, *a, _o=original, **k:
                            read.append(k.get("columns")) or _o(self, *a, **k))
    assert _built(_items(tmp_path)) == whole
    assert read and not [c for c in read if c is None or "image" in c], read  # never the image column


@pytest.mark.parametrize("options", [{}, {"compression": "none"}, {"use_dictionary": False},
                                     {"data_page_version": "2.0"}, {"write_batch_size": 1, "data_page_size": 1000}])
def test_chunk_values_are_pyarrows_values(options: dict):
    """`parquet_values.chunk_values` gives each row's bytes (None for a null, at either level of
    an Image struct) as pyarrow reads them, for snappy pages with copies that reach back (values
    of few symbols), plain and dictionary pages, v1 and v2 pages; a value over its allowance is
    `Refused`, unread, the values after it still read."""
    rng = np.random.default_rng(0)
    values = [None if i % 7 == 3 else bytes(rng.integers(0, 4, int(rng.integers(0, 20000)), dtype=np.uint8))
              for i in range(60)]
    values[10] = values[2]
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    cells = pa.array([None if i % 11 == 5 else {"bytes": v, "path": None if i % 3 else "p"}
                      for i, v in enumerate(values)], image)
    out = io.BytesIO()
    pq.write_table(pa.table({"image": cells}), out, **options)
    out.seek(0)
    parquet = pq.ParquetFile(out)
    chunk = parquet.metadata.row_group(0).column(0)
    want = [c["bytes"] if c else None for c in cells.to_pylist()]
    snappy = chunk.compression == "SNAPPY"
    for whole in (None, 0):  # its pages decompressed whole (in C), or decoded as read (the Python decoder)
        assert list(parquet_values.chunk_values(out, chunk, 60, 2, snappy, 10 ** 9, whole=whole)) == want
    got = list(parquet_values.chunk_values(out, chunk, 60, 2, snappy, 15000))
    assert got == [parquet_values.Refused(len(v)) if v is not None and len(v) > 15000 else v for v in want]
    assert sum(isinstance(v, parquet_values.Refused) for v in got) > 3


def test_a_file_cut_inside_its_page_is_a_paged_values_error():
    """A file cut inside its (snappy) dictionary page is no crash and no hang: `PagedValuesError`,
    a ValueError, which its reader makes the file's `bad_parquet`, as pyarrow's own read would."""
    out = io.BytesIO()
    pq.write_table(pa.table({"image": pa.array([_photo(i, 64) for i in range(3)], pa.binary())}), out)
    data = bytearray(out.getvalue())
    parquet = pq.ParquetFile(io.BytesIO(bytes(data)))
    chunk = parquet.metadata.row_group(0).column(0)
    start = chunk.dictionary_page_offset
    damaged = io.BytesIO(bytes(data[:start + 4000]))  # its dictionary page's first 4,000 bytes
    with pytest.raises(parquet_values.PagedValuesError, match="cut"):
        list(parquet_values.chunk_values(damaged, chunk, 3, 1, True, 10 ** 9, whole=0))


def test_a_bit_packed_run_declaring_billions_of_values_decodes_only_those_wanted():
    """A level run's header is a varint the page's writer chose: one saying 2**34 groups of 8 made
    the decoder unpack them all (a memory error). Only the values the page still wants are decoded."""
    header = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x7F])  # bit-packed, 2**34 - 1 groups
    decoded = parquet_values._hybrid(header + bytes([0b1011]), 1, 4)
    assert decoded.tolist() == [1, 1, 0, 1]
