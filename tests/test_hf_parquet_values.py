"""What a parquet row group's values hold, judged before its rows are read (`hf_parquet.value_bytes`,
`row_batches`), on files pyarrow writes as `datasets` and users do."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sources import hf_parquet
from sources.laion import LaionSource
from sources.records import ImageRecord, Reject

BIG = "x" * (1 << 20)  # one 1 MiB value, repeated in every row: pyarrow stores it once
ROWS = 40


def _jpeg() -> bytes:
    return subprocess.run(["convert", "-size", "8x8", "xc:red", "jpg:-"], capture_output=True, check=True).stdout


def _written(table: pa.Table, path: Path) -> pq.ParquetFile:
    pq.write_table(table, path, row_group_size=len(table), dictionary_pagesize_limit=64 << 20)
    return pq.ParquetFile(path)


REPEATED = {
    "list<string>": pa.array([[BIG]] * ROWS, pa.list_(pa.string())),
    "large_list<large_string>": pa.array([[BIG]] * ROWS, pa.large_list(pa.large_string())),
    "list<struct<en: string>>": pa.array([[{"en": BIG}]] * ROWS, pa.list_(pa.struct([("en", pa.string())]))),
    "map<string, string>": pa.array([[("k", BIG)]] * ROWS, pa.map_(pa.string(), pa.string())),
    "struct<list<binary>>": pa.array([{"b": [BIG.encode()]}] * ROWS, pa.struct([("b", pa.list_(pa.binary()))])),
}


@pytest.mark.parametrize("kind", sorted(REPEATED))
def test_a_value_repeated_in_a_list_column_is_counted_in_each_row(tmp_path: Path, kind: str):
    """A `Sequence(Value("string"))` column (`captions`) of one 1 MiB string in 40 rows: pyarrow
    stores the string once (1 MiB declared) and a read hands over 40 MiB. Lists were not unwrapped
    (structs were): the chunk was measured at its declared size, so a 396 KB file of 200 rows of
    one 8 MiB string read as 1.68 GB."""
    parquet = _written(pa.table({"n": list(range(ROWS)), "col": REPEATED[kind]}), tmp_path / "x.parquet")
    assert hf_parquet.declared_bytes(parquet.metadata.row_group(0)) < 2 << 20
    with open(tmp_path / "x.parquet", "rb") as source:
        held = hf_parquet.value_bytes(source, parquet, 0)
    assert ROWS << 20 <= held < (ROWS + 1) << 20


def test_fixed_size_binary_is_judged_on_its_rows_times_its_width(tmp_path: Path):
    """pyarrow dictionary-encodes `fixed_size_binary` (parquet FIXED_LEN_BYTE_ARRAY) too: 40 rows of
    one 1 MiB value declare 1 MiB and read as 40 MiB. It was never judged (BYTE_ARRAY only); now
    it holds its rows times its width, without reading it."""
    width = 1 << 20
    column = pa.chunked_array([pa.array([b"\1" * width], pa.binary(width))] * ROWS)
    parquet = _written(pa.table({"n": list(range(ROWS)), "emb": column}), tmp_path / "x.parquet")
    chunk = parquet.metadata.row_group(0).column(1)
    assert chunk.physical_type == "FIXED_LEN_BYTE_ARRAY" and chunk.has_dictionary_page
    assert chunk.total_uncompressed_size < 2 << 20
    with open(tmp_path / "x.parquet", "rb") as source:
        assert hf_parquet.value_bytes(source, parquet, 0) >= ROWS * width


HF_CAPTIONS = {b"huggingface": json.dumps({"info": {"features": {
    "image": {"_type": "Image"},
    "captions": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"}}}}).encode()}


def test_a_datasets_parquet_of_a_caption_list_bomb_is_row_group_too_large(tmp_path: Path, monkeypatch):
    """A `datasets` parquet with `captions: Sequence(Value("string"))`, each of its rows one 1 MiB
    caption repeated (40 MiB held, 1 MiB declared), over a 4 MiB budget: each row is its
    `row_group_too_large` reject saying what its values hold; the next group's rows are built."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image), ("captions", pa.list_(pa.string()))], metadata=HF_CAPTIONS)
    jpeg = _jpeg()
    rows = [{"image": {"bytes": jpeg, "path": None}, "captions": [BIG]} for _ in range(ROWS)]
    rows += [{"image": {"bytes": jpeg, "path": None}, "captions": ["a red square"]} for _ in range(3)]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "train.parquet", row_group_size=ROWS,
                   dictionary_pagesize_limit=64 << 20)
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 4 << 20)
    items = list(_read(LaionSource("hf", str(tmp_path))))
    assert [getattr(i, "reason", None) for i in items[:ROWS]] == ["row_group_too_large"] * ROWS, items[:1]
    assert "holds" in items[0].detail
    assert [type(i) for i in items[ROWS:]] == [ImageRecord] * 3, items[ROWS:]


def test_an_imagefolder_metadata_parquet_of_a_list_bomb_is_not_read(tmp_path: Path, monkeypatch):
    """An ImageFolder's `metadata.parquet` whose `tags` list column repeats one 1 MiB string in 40
    rows (1 MiB declared, 40 MiB held) over an 8 MiB metadata budget: the file is not read (its
    reject says what it holds), never handed over as 40 MiB of text."""
    from sources import imagefolder

    for index in range(2):
        (tmp_path / f"{index}.jpg").write_bytes(_jpeg())
    names = [f"{i % 2}.jpg" for i in range(ROWS)]
    pq.write_table(pa.table({"file_name": names, "tags": [[BIG]] * ROWS}), tmp_path / "metadata.parquet",
                   dictionary_pagesize_limit=64 << 20)
    monkeypatch.setattr(imagefolder, "MAX_METADATA_PARQUET_BYTES", 8 << 20)
    items = list(_read(LaionSource("imgs", str(tmp_path))))
    rejects = [i for i in items if isinstance(i, Reject)]
    assert any("holds" in r.detail and "metadata" in r.detail for r in rejects), items


def _read(source: LaionSource):
    for unit in source.units():
        yield from source.read(unit)


class _CountingFile(io.FileIO):
    """A file that counts the bytes read from it."""

    read_bytes = 0

    def read(self, size=-1):
        data = super().read(size)
        self.read_bytes += len(data)
        return data

    def readinto(self, buffer):
        count = super().readinto(buffer) or 0
        self.read_bytes += count
        return count


def test_an_honest_image_parquet_is_read_once_and_its_rows_are_as_written(tmp_path: Path):
    """`datasets` and pyarrow write an image column with a dictionary page (100 distinct 200 KB
    images: all in it), so each image chunk was read whole to judge it and then again to hand its
    rows over: 200 MB read of a 200 MB file of 1000 such rows was 400 MB. Judged and handed over
    from one read now; the rows are those pyarrow reads, every type as it reads it."""
    import numpy as np

    rng = np.random.default_rng(0)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image), ("text", pa.string()), ("tags", pa.list_(pa.string())),
                        ("meta", pa.map_(pa.string(), pa.string())), ("label", pa.int64())])
    rows = [{"image": {"bytes": rng.bytes(50_000), "path": None}, "text": f"c{i}", "tags": ["a", f"t{i}"] if i % 3 else None,
             "meta": [("k", "v")] if i % 2 else [], "label": i % 5} for i in range(150)]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=50)
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).has_dictionary_page
    with _CountingFile(path, "rb") as source:
        parquet = pq.ParquetFile(source, pre_buffer=False)
        got = [(first, batch) for first, batch in hf_parquet.row_batches(parquet, "train.parquet", source=source)]
        read = source.read_bytes
    assert read < 1.1 * path.stat().st_size, (read, path.stat().st_size)
    assert [first for first, _ in got] == [0, 50, 100]  # BATCH_ROWS (64) over groups of 50 rows
    assert [row for _, batch in got for row in batch] == pq.read_table(path).to_pylist()


def test_a_datasets_parquet_of_a_fixed_size_binary_bomb_is_rejected_unread(tmp_path: Path, monkeypatch):
    """A `datasets` parquet beside its images a `fixed_size_binary` column of one 1 MiB value in 40
    rows (40 MiB held, 1 MiB declared; 8 MiB x 200 rows was built at 3.2 GB RSS): over a 4 MiB
    budget each row is its `row_group_too_large` reject, and the column is never read."""
    width = 1 << 20
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    metadata = {b"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}}).encode()}
    schema = pa.schema([("image", image), ("emb", pa.binary(width))], metadata=metadata)
    images = pa.array([{"bytes": _jpeg(), "path": None}] * ROWS, image)
    table = pa.Table.from_arrays([images, pa.chunked_array([pa.array([b"\1" * width], pa.binary(width))] * ROWS)],
                                 schema=schema)
    _written(table, tmp_path / "train.parquet")
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 4 << 20)
    asked = []
    read_row_group, iter_batches = pq.ParquetFile.read_row_group, pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", lambda self, i, columns=None, **k:
                        asked.append(columns) or read_row_group(self, i, columns=columns, **k))
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", lambda self, *a, **k:
                        asked.append(k.get("columns")) or iter_batches(self, *a, **k))
    items = list(_read(LaionSource("hf", str(tmp_path))))
    assert [getattr(i, "reason", None) for i in items] == ["row_group_too_large"] * ROWS, items[:1]
    assert "holds" in items[0].detail, items[0].detail
    assert not [c for c in asked if c is None or any(name.startswith("emb") for name in c)], asked
