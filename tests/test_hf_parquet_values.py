"""What a parquet row group's values hold, judged before its rows are read (`hf_parquet.value_bytes`,
`row_batches`), on files pyarrow writes as `datasets` and users do."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractBufferedFile
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


@pytest.mark.parametrize("budget, built", [(1 << 20, False), (12 << 20, True)])
def test_a_datasets_parquet_of_a_fixed_size_binary_bomb_is_rejected_unread(tmp_path: Path, monkeypatch,
                                                                           budget: int, built: bool):
    """A `datasets` parquet beside its images a `fixed_size_binary` column of one 1 MiB value in 40
    rows (40 MiB held, 1 MiB declared; 8 MiB x 200 rows was built at 3.2 GB RSS). Within a 12 MiB
    budget a row read alone (its 1 MiB page and dictionary, its value as pyarrow and Python hold it) fits: the group is read a row at a
    time and built. Over a 1 MiB budget each row is its `row_group_too_large` reject, and the
    column is never read."""
    width = 1 << 20
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    metadata = {b"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}}).encode()}
    schema = pa.schema([("image", image), ("emb", pa.binary(width))], metadata=metadata)
    images = pa.array([{"bytes": _jpeg(), "path": None}] * ROWS, image)
    table = pa.Table.from_arrays([images, pa.chunked_array([pa.array([b"\1" * width], pa.binary(width))] * ROWS)],
                                 schema=schema)
    _written(table, tmp_path / "train.parquet")
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", budget)
    asked = []
    read_row_group, iter_batches = pq.ParquetFile.read_row_group, pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", lambda self, i, columns=None, **k:
                        asked.append(columns) or read_row_group(self, i, columns=columns, **k))
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", lambda self, *a, **k:
                        asked.append((k.get("columns"), k.get("batch_size"))) or iter_batches(self, *a, **k))
    items = list(_read(LaionSource("hf", str(tmp_path))))
    if built:
        assert [type(i) for i in items] == [ImageRecord] * ROWS, items[:1]
        assert [b for _, b in asked if b is not None] == [hf_parquet.STREAM_BATCH_BYTES // (1 << 20) - 1], asked
        return
    assert [getattr(i, "reason", None) for i in items] == ["row_group_too_large"] * ROWS, items[:1]
    assert "read even one row at a time" in items[0].detail, items[0].detail
    assert not [c for c in asked if c is None or any(name.startswith("emb") for name in c)], asked


LIST_KINDS = {  # 16 rows of 20,000 items each, values as a user's lists hold them
    "list<string>": (pa.list_(pa.string()), lambda i: f"t{i % 1000}"),
    "list<int64>": (pa.list_(pa.int64()), lambda i: 1_000_000 + i),
    "list<float32>": (pa.list_(pa.float32()), lambda i: i / 3),
    "list<bool>": (pa.list_(pa.bool_()), lambda i: i % 2 == 0),
    "large_list<large_binary>": (pa.large_list(pa.large_binary()), lambda i: b"ab"),
}


@pytest.mark.parametrize("kind", sorted(LIST_KINDS))
def test_a_row_group_is_judged_at_no_less_than_reading_it_costs(tmp_path: Path, kind: str):
    """Each value of a list costs its Arrow offset or width read, and the Python object it becomes
    handed over; the footer says neither (a run of one value is a few bytes). A 1,003-byte file of
    16 rows of 500,000 'ab' each was judged at 16 MB and read at 470 MB RSS; its int64 twin at
    64 KB, read at 295 MB. A group is judged on each chunk's `num_values` before it is read
    (`item_bytes`: no less than pyarrow allocates reading it), and a batch on its values before
    it is handed over (`python_bytes`: no less than Python holds of its rows)."""
    import tracemalloc

    kind_type, value = LIST_KINDS[kind]
    column = pa.array([[value(i) for i in range(row * 20_000, (row + 1) * 20_000)] for row in range(16)], kind_type)
    parquet = _written(pa.table({"n": list(range(16)), "col": column}), tmp_path / "x.parquet")
    with open(tmp_path / "x.parquet", "rb") as source:
        judged = hf_parquet.value_bytes(source, parquet, 0)
    del column
    before = pa.total_allocated_bytes()
    table = parquet.read_row_group(0, use_threads=False)
    arrow = pa.total_allocated_bytes() - before
    handed = sum(hf_parquet.python_bytes(c) for c in table.columns)
    tracemalloc.start()
    rows = table.to_pylist()
    python = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(rows) == 16 and judged >= arrow and handed >= python, (judged, arrow, handed, python)


def test_a_batch_of_rows_too_large_as_python_comes_a_row_at_a_time(tmp_path: Path, monkeypatch):
    """A `datasets` parquet of 16 rows of 200,000 'ab' tags and one of 2,000,000 (a 3 KB file): read
    into Arrow within a 64 MiB budget (47 MB), but as Python its batch was 330 MB at once. Now
    each row is handed over alone (13 MB), and the row of 2,000,000 (132 MB) is its
    `row_group_too_large` reject: the others are built (their tags left out of the lineage, marked).
    Scaled by 1/8 (25,000 and 250,000 tags, an 8 MiB budget: each size keeps its side of it)."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    metadata = {b"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}}).encode()}
    schema = pa.schema([("image", image), ("tags", pa.list_(pa.string()))], metadata=metadata)
    jpeg = _jpeg()
    rows = [{"image": {"bytes": jpeg, "path": None}, "tags": ["ab"] * (250_000 if i == 5 else 25_000)}
            for i in range(16)]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "train.parquet", row_group_size=16)
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 8 << 20)
    items = list(_read(LaionSource("hf", str(tmp_path))))
    assert [getattr(i, "reason", None) for i in items] == [None] * 5 + ["row_group_too_large"] + [None] * 10, items[5]
    assert "row 5 holds" in items[5].detail and "as Python values" in items[5].detail, items[5].detail
    assert all(i.lineage["huggingface"]["tags"]["truncated"].startswith("a list of 25000 items")
               for i in items if isinstance(i, ImageRecord))  # read whole; not held in the lineage


@pytest.mark.parametrize("kind", ["list<string>", "list<int64>"])
def test_a_datasets_parquet_of_a_list_of_many_small_values_is_row_group_too_large(tmp_path: Path, monkeypatch,
                                                                                 kind: str):
    """The proof, scaled to a 4 MiB budget: a `datasets` parquet whose `tags` hold one short value
    50,000 times a row (16 rows: a few KB) was read, its rows handed over (55 MB as Python); each
    row is now its `row_group_too_large` reject saying what reading it holds, the next group's
    rows built."""
    tag_type = pa.list_(pa.string() if kind == "list<string>" else pa.int64())
    tag = "ab" if kind == "list<string>" else 7
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    metadata = {b"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}}).encode()}
    schema = pa.schema([("image", image), ("tags", tag_type)], metadata=metadata)
    jpeg = _jpeg()
    rows = [{"image": {"bytes": jpeg, "path": None}, "tags": [tag] * 50_000} for _ in range(16)]
    rows += [{"image": {"bytes": jpeg, "path": None}, "tags": [tag]} for _ in range(3)]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "train.parquet", row_group_size=16)
    assert (tmp_path / "train.parquet").stat().st_size < 8192
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 4 << 20)
    items = list(_read(LaionSource("hf", str(tmp_path))))
    assert [getattr(i, "reason", None) for i in items[:16]] == ["row_group_too_large"] * 16, items[:1]
    assert "holds" in items[0].detail and "once read" in items[0].detail, items[0].detail
    assert [type(i) for i in items[16:]] == [ImageRecord] * 3, items[16:]
    assert [i.lineage["huggingface"]["tags"] for i in items[16:]] == [[tag]] * 3


def test_an_honest_image_parquet_with_an_embedding_list_is_read_whole(tmp_path: Path):
    """An image dataset with a CLIP embedding (`Sequence(Value("float32"))` of 768) in one row group of
    1,000 rows (`datasets` writes 1,000 rows a group, 100 with images; 100,000 rows are 100 such
    groups): 768,000 values judged at ~28 MB, under the real budget; every row is built (its
    embedding left out of its lineage, marked: `LINEAGE_VALUE_BYTES`)."""
    import numpy as np

    embeddings = np.random.default_rng(0).random((1000, 768), dtype=np.float32)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    metadata = {b"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}}).encode()}
    schema = pa.schema([("image", image), ("emb", pa.list_(pa.float32()))], metadata=metadata)
    jpeg = _jpeg()
    table = pa.Table.from_arrays([pa.array([{"bytes": jpeg, "path": None}] * 1000, image),
                                  pa.array(list(embeddings), pa.list_(pa.float32()))], schema=schema)
    pq.write_table(table, tmp_path / "train.parquet", row_group_size=1000)
    items = list(_read(LaionSource("hf", str(tmp_path))))
    assert [type(i) for i in items] == [ImageRecord] * 1000, next(i for i in items if not isinstance(i, ImageRecord))
    assert items[999].lineage["huggingface"]["emb"]["truncated"].startswith("a list of 768 items")  # not held
    assert len(embeddings) == 1000


def test_the_paths_of_a_dictionary_encoded_path_column_are_judged_on_what_each_row_points_at(tmp_path: Path,
                                                                                              monkeypatch):
    """`named_paths` (which images a `datasets` parquet's rows name, read before its units) judged
    the `image.path` leaf by its footer: one 1 MiB path in 40 rows is stored once (1 MiB declared)
    and was read as 40 MiB of names. Judged as a read of rows is now: over a 4 MiB budget the group
    is passed over (its rows are their unit's rejects); under the real one, the 40 paths come."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    long_path = "d/" * (1 << 19) + "x.jpg"
    table = pa.table({"image": pa.array([{"bytes": None, "path": long_path}] * ROWS, image)})
    parquet = _written(table, tmp_path / "train.parquet")
    assert hf_parquet.declared_bytes(parquet.metadata.row_group(0), leaf="image.path") < 2 << 20
    with open(tmp_path / "train.parquet", "rb") as source:
        assert list(hf_parquet.named_paths(parquet, "image", source)) == [long_path] * ROWS
        monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 4 << 20)
        assert list(hf_parquet.named_paths(parquet, "image", source)) == []


def test_an_honest_parquet_of_ten_million_null_images_gives_a_bounded_count_of_rejects(tmp_path: Path):
    """pyarrow writes 10**7 rows of a null `Image` cell in one row group of 36 KB; read a row at a
    time it gave 10**7 `missing_image` rejects (98 CPU-s, every reject held by its unit; 10**9 rows:
    4 MB, hours). Its footer's statistics say every image is null: the group is not read, its
    first `MAX_LISTED_ROWS` rows a `missing_image` each and one more standing for the rest,
    naming how many."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    metadata = {b"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}}).encode()}
    table = pa.Table.from_arrays([pa.nulls(10**7, image)], schema=pa.schema([("image", image)], metadata=metadata))
    pq.write_table(table, tmp_path / "train.parquet", row_group_size=10**7)
    assert (tmp_path / "train.parquet").stat().st_size < 1 << 20
    items = list(_read(LaionSource("hf", str(tmp_path))))
    listed = hf_parquet.MAX_LISTED_ROWS
    assert len(items) == listed + 1 and {i.reason for i in items} == {"missing_image"}
    assert items[-1].input.endswith(f"row {listed}"), items[-1].input
    assert items[-1].detail.startswith(f"rows {listed} to 9999999 ({10**7 - listed} rows, this one reject for them "
                                       "all) of train.parquet: row group 0: the 'image' of each of its 10000000 "
                                       "rows is null"), items[-1].detail


def _delta_parquet(path: Path, captions: list[str], row_group_size: int) -> None:
    """A `datasets` image parquet whose `text` column pyarrow writes DELTA_BYTE_ARRAY (parquet-mr's
    v2 writer falls back to it from a full dictionary): each caption its previous one's first
    bytes and a suffix."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    metadata = {b"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}}).encode()}
    jpeg = _jpeg()
    table = pa.Table.from_arrays([pa.array([{"bytes": jpeg, "path": None}] * len(captions), image), pa.array(captions)],
                                 schema=pa.schema([("image", image), ("text", pa.string())], metadata=metadata))
    pq.write_table(table, path, row_group_size=row_group_size, use_dictionary=["image.bytes", "image.path"],
                   column_encoding={"text": "DELTA_BYTE_ARRAY"}, compression="zstd")


def test_a_delta_encoded_caption_bomb_is_row_group_too_large(tmp_path: Path, monkeypatch):
    """DELTA_BYTE_ARRAY stores a value repeated as its previous one's prefix: 40 rows of one 1 MiB
    caption declare 1 MiB (the first value) and read as 40 MiB (200 of 8 MiB: a 1.3 KB file read at
    1.6 GB). Over a 4 MiB budget each row is its `row_group_too_large` reject now, judged by
    reading the column alone a few rows at a time; the next group's rows are built."""
    _delta_parquet(tmp_path / "train.parquet", [BIG] * ROWS + ["a red square"] * 3, ROWS)
    chunk = pq.ParquetFile(tmp_path / "train.parquet").metadata.row_group(0).column(2)
    assert "DELTA_BYTE_ARRAY" in chunk.encodings and chunk.total_uncompressed_size < 2 << 20
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 4 << 20)
    items = list(_read(LaionSource("hf", str(tmp_path))))
    assert [getattr(i, "reason", None) for i in items[:ROWS]] == ["row_group_too_large"] * ROWS, items[:1]
    assert "holds" in items[0].detail, items[0].detail
    assert [i.lineage["caption"] for i in items[ROWS:]] == ["a red square"] * 3, items[ROWS:]


def test_an_honest_delta_encoded_parquet_is_read_as_written(tmp_path: Path):
    """Distinct captions sharing prefixes (`a photo of a dog 17`), delta-encoded, in 100-row groups:
    judged on what they hold (a few KB), every row built with its caption."""
    captions = [f"a photo of a {('dog', 'cat', 'bird')[i % 3]} {i}" for i in range(250)]
    _delta_parquet(tmp_path / "train.parquet", captions, 100)
    items = list(_read(LaionSource("hf", str(tmp_path))))
    assert [i.lineage["caption"] for i in items] == captions, items[:1]


def test_a_row_groups_table_is_let_go_before_the_next_group_is_read(tmp_path: Path, monkeypatch):
    """The last batch handed over (a slice of its group's table) stayed alive in the generator
    while the next group was read: two groups' tables at once, +26% peak on an honest embedding
    parquet. When the next group is judged, Arrow holds nothing of the group before it."""
    import numpy as np

    rng = np.random.default_rng(0)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows = [{"image": {"bytes": rng.bytes(100_000), "path": None}} for _ in range(100)]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([("image", image)])), path, row_group_size=50)
    held = []
    judged = hf_parquet._judged_read

    def judging(source, parquet, index, *args, **kwargs):
        held.append(pa.total_allocated_bytes())
        return judged(source, parquet, index, *args, **kwargs)

    monkeypatch.setattr(hf_parquet, "_judged_read", judging)
    with open(path, "rb") as source:
        parquet = pq.ParquetFile(source, pre_buffer=False)
        count = sum(len(batch) for _, batch in hf_parquet.row_batches(parquet, "train.parquet", source=source))
    assert count == 100 and len(held) == 2
    assert held[1] - held[0] < 1 << 20, held  # a group's table: 5 MB (the module's REPEATED held before)


def _varint(value: int, length: int = 0) -> bytes:
    """`value` as a Thrift compact varint, padded to `length` bytes (a non-minimal varint reads the same)."""
    out = bytearray()
    while value >= 0x80 or len(out) < length - 1:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def _forge_footer(path: Path, column: str, num_values: int | None = None, uncompressed: int | None = None) -> None:
    """Rewrite the footer of the file pyarrow wrote at `path`: column chunk `column`'s `num_values`
    or `total_uncompressed_size` (ColumnMetaData fields 5 and 6, zigzag i64s) said lower, each in
    as many bytes as before, so that the file still opens; its pages are untouched."""
    data = bytearray(path.read_bytes())
    chunk = next(c for g in range(1) for c in (pq.ParquetFile(path).metadata.row_group(g).column(i)
                                               for i in range(pq.ParquetFile(path).metadata.num_columns))
                 if c.path_in_schema == column)
    fields = [_varint(2 * v) for v in (chunk.num_values, chunk.total_uncompressed_size, chunk.total_compressed_size)]
    at = data.rfind(b"\x16" + fields[0] + b"\x16" + fields[1] + b"\x16" + fields[2])
    assert at > 0
    new = [_varint(2 * v, len(f)) if v is not None else f for v, f in zip((num_values, uncompressed), fields)]
    data[at:at + 2 + len(fields[0]) + len(fields[1])] = b"\x16" + new[0] + b"\x16" + new[1]
    path.write_bytes(bytes(data))
    forged = next(c for c in (pq.ParquetFile(path).metadata.row_group(0).column(i)
                              for i in range(pq.ParquetFile(path).metadata.num_columns)) if c.path_in_schema == column)
    assert (num_values or forged.num_values, uncompressed or forged.total_uncompressed_size) == \
        (forged.num_values, forged.total_uncompressed_size)


def _image_parquet(path: Path, other: pa.Array, **write) -> None:
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    metadata = {b"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}}).encode()}
    schema = pa.schema([("image", image), ("other", other.type)], metadata=metadata)
    table = pa.Table.from_arrays([pa.array([{"bytes": _jpeg(), "path": None}] * len(other), image), other], schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd", **write)


@pytest.mark.parametrize("forged", ["num_values", "total_uncompressed_size"])
def test_a_footer_that_says_less_than_its_page_headers_is_judged_by_the_headers(tmp_path: Path, monkeypatch,
                                                                                forged: str):
    """pyarrow reads each page by its own header; the footer is only a summary. A footer patched
    to say 16 values of a chunk whose one page holds 64 million (16 rows of a 4-million-item list),
    or 500 bytes of a 315 MB caption chunk, was judged by what it said and read (1.2 and 2.8 GB
    peaks). Scaled down here under a 4 MiB budget (16 rows, each within it as Python, together
    over it read into Arrow): the page headers are read before any data and the larger count
    taken, so the group is `row_group_too_large`, unread, as the same file unforged is."""
    path = tmp_path / "data" / "train-00000-of-00001.parquet"
    rows = 16
    if forged == "num_values":
        items = 60_000  # a row's list: 3.8 MB as Python; 16 rows 960,000 int64 values, 8.6 MB read
        other = pa.ListArray.from_arrays(pa.array(np.arange(0, (rows + 1) * items, items, dtype=np.int32)),
                                         pa.array(np.zeros(rows * items, dtype=np.int64)))
        _image_parquet(path, other, write_batch_size=1 << 30)
    else:
        other = pa.array([chr(97 + i) * (1 << 19) for i in range(rows)])  # 16 captions of 512 KiB
        _image_parquet(path, other, data_page_size=1 << 30, use_dictionary=False)
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 4 << 20)
    honest = list(_read(LaionSource("hf", str(tmp_path))))
    leaf = "other.list.element" if forged == "num_values" else "other"
    _forge_footer(path, leaf, **({"num_values": rows} if forged == "num_values" else {"uncompressed": 300}))
    items = list(_read(LaionSource("hf", str(tmp_path))))
    for read in (honest, items):
        assert [getattr(i, "reason", None) for i in read] == ["row_group_too_large"] * rows, read[:2]


DELTA_PEAK = r"""
import sys, pyarrow as pa, pyarrow.parquet as pq
from sources import hf_parquet
hf_parquet.ROW_GROUP_BYTES, hf_parquet.DELTA_BATCH_BYTES = 4 << 20, 1 << 20
with open(sys.argv[1], "rb") as source:
    read = list(hf_parquet.row_batches(pq.ParquetFile(source, pre_buffer=False), "x", source=source))
print(sum(len(r.rows) for r in read if isinstance(r, hf_parquet.TooLarge) and r.reason == "row_group_too_large"),
      pa.default_memory_pool().max_memory())
"""


def test_a_delta_chunk_whose_footer_says_less_is_judged_a_value_at_a_time(tmp_path: Path):
    """A DELTA_BYTE_ARRAY caption chunk is judged by reading it, as many values a batch as its
    declared size allows within `DELTA_BATCH_BYTES`: its footer patched to say 300 bytes of 8 MiB
    of captions made that every row at once (200 rows of an 8 MiB caption: 2.8 GB peak). Its page
    headers say 8 MiB: over the budget unread (within it, a value a batch). Scaled down
    (16 rows of 512 KiB, a 4 MiB budget, 1 MiB batches), in a child whose Arrow peak is its own."""
    path = tmp_path / "train.parquet"
    _image_parquet(path, pa.array([chr(97 + i) * (1 << 19) for i in range(16)]), data_page_size=1 << 30,
                   use_dictionary=["image.bytes"], column_encoding={"other": "DELTA_BYTE_ARRAY"})
    _forge_footer(path, "other", uncompressed=300)
    child = subprocess.run([sys.executable, "-c", DELTA_PEAK, str(path)], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    rejected, peak = map(int, child.stdout.split())
    assert rejected == 16 and peak < 3 << 20, child.stdout  # every row at once: 8 MiB


@pytest.mark.parametrize("written", ["no statistics", "one image"])
def test_null_images_past_the_cap_are_one_reject_when_statistics_cannot_say(tmp_path: Path, written: str):
    """The cap on `missing_image` rejects of a group held only where its footer's statistics say
    every image is null: pyarrow writing without statistics (`write_statistics=False`), or one
    image and 1,999,999 nulls, gave 2,000,000 rejects (23 CPU-s). Counted as the group is read:
    its first `MAX_LISTED_ROWS` null images one reject each, then one for all the rest, naming
    how many; its images are built wherever they lie (the first row, and the last)."""
    rows = 100_000
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    metadata = {b"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}}).encode()}
    jpeg = _jpeg()
    cells = pa.nulls(rows, image) if written == "no statistics" else \
        pa.array([{"bytes": jpeg, "path": None}] + [None] * (rows - 2) + [{"bytes": jpeg, "path": None}], image)
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_arrays([cells], schema=pa.schema([("image", image)], metadata=metadata)),
                   tmp_path / "data" / "train-00000-of-00001.parquet", row_group_size=rows,
                   write_statistics=written != "no statistics")
    items = list(_read(LaionSource("hf", str(tmp_path))))
    listed = hf_parquet.MAX_LISTED_ROWS
    images = 0 if written == "no statistics" else 2
    assert sum(isinstance(i, ImageRecord) for i in items) == images
    rejects = [i for i in items if isinstance(i, Reject)]
    assert len(rejects) == listed + 1 and {r.reason for r in rejects} == {"missing_image"}
    first = listed + (images > 0)  # the row after the first 10,000 null ones
    last = rows - 1 - (images > 0)
    assert rejects[-1].input.endswith(f"row {first}"), rejects[-1].input
    assert rejects[-1].detail.startswith(f"{rows - images - listed} rows from row {first} to {last} (this one reject "
                                         "for them all) of data/train-00000-of-00001.parquet: row group 0: their "
                                         "'image' is null"), rejects[-1].detail


def test_a_rows_large_values_are_left_out_of_its_lineage_marked(tmp_path: Path):
    """Each record carried every value of its row in its lineage, held by its unit until the unit
    ends: 100,000 rows of a 768-float CLIP embedding held 2.4 GB more, 16 rows of 500,000 tags
    470 MB. A value past `LINEAGE_VALUE_BYTES` as JSON is left out, marked `truncated` with what
    it was; small ones (a caption list, a label, a short tag list) ride as before."""
    from sources.lineage_text import LINEAGE_VALUE_BYTES

    rows = 20
    embeddings = np.random.default_rng(0).random((rows, 768), dtype=np.float32)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    metadata = {b"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}}).encode()}
    schema = pa.schema([("image", image), ("emb", pa.list_(pa.float32())), ("tags", pa.list_(pa.string())),
                        ("note", pa.string()), ("label", pa.int64())], metadata=metadata)
    jpeg = _jpeg()
    table = pa.Table.from_arrays([pa.array([{"bytes": jpeg, "path": None}] * rows, image),
                                  pa.array(list(embeddings), pa.list_(pa.float32())),
                                  pa.array([["ab"] * (500_000 if i == 3 else 3) for i in range(rows)],
                                           pa.list_(pa.string())),
                                  pa.array(["n" * (LINEAGE_VALUE_BYTES + 10) if i == 5 else "中" * 1000 if i == 6
                                            else "short" for i in range(rows)]),
                                  pa.array(list(range(rows)))], schema=schema)
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "train-00000-of-00001.parquet")
    items = list(_read(LaionSource("hf", str(tmp_path))))
    assert [type(i) for i in items] == [ImageRecord] * rows
    lineage = [i.lineage["huggingface"] for i in items]
    assert lineage[0]["emb"] == {"truncated": "a list of 768 items, over the 4096 byte budget of a lineage value: "
                                               "left out"}
    assert lineage[3]["tags"]["truncated"].startswith("a list of 500000 items")
    assert lineage[5]["note"]["truncated"].startswith(f"a text of {LINEAGE_VALUE_BYTES + 10} characters")
    # 1,000 CJK characters are 6,000 bytes as escaped JSON (3,000 as UTF-8): counted as bytes, not characters
    assert lineage[6]["note"]["truncated"].startswith("a text of 1000 characters")
    assert (lineage[4]["tags"], lineage[4]["note"], lineage[4]["label"]) == (["ab"] * 3, "short", 4)


class _RemoteFile(AbstractBufferedFile):
    """A file buffered as fsspec buffers a remote one (HTTP, S3: a read-ahead cache of `block_size`),
    whose fetches are counted."""

    fetched: list[int] = []
    ranges: list[tuple[str, int, int]] = []  # (file name, start, end) of each fetch

    def _fetch_range(self, start: int, end: int) -> bytes:
        with open(self.path, "rb") as handle:
            handle.seek(start)
            data = handle.read(end - start)
        self.fetched.append(len(data))
        self.ranges.append((os.path.basename(self.path), start, start + len(data)))
        return data


class _RemoteFileSystem(LocalFileSystem):
    """The local disk read as a remote store (`_RemoteFile`), its opens counted by file name."""

    protocol = "uvdremote"
    opened: list[str] = []

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        path = self._strip_protocol(path)
        self.opened.append(os.path.basename(path))
        return _RemoteFile(self, path, mode, block_size=block_size or "default", cache_options=cache_options,
                           size=os.path.getsize(path), **kwargs)


@pytest.mark.parametrize("footer", ["long", "over_the_held_tail"])
def test_a_remote_parquets_long_footer_is_fetched_as_one_range(tmp_path: Path, footer: str):
    """A parquet footer longer than the 64 KiB tail first fetched: an img2dataset listing of 1,000
    row groups (a 560 KB footer) is fetched in 2 ranges, the tail and the rest of its footer, then
    held (in 1 MiB blocks it took 3). One over `MAX_TAIL_BYTES` (17 MiB of key-value metadata,
    under the 64 MiB a footer may take) was fetched in 1 MiB blocks, 17 fetches each open, kept:
    now one range each time it is read, never kept."""
    from sources import fsio, web_format

    fsspec.register_implementation("uvdremote", _RemoteFileSystem, clobber=True)
    n = 2000 if footer == "long" else 2
    table = pa.table({"key": [f"{i:09d}" for i in range(n)], "status": ["success"] * n,
                      "caption": [f"cap {i}" for i in range(n)]})
    path = tmp_path / "00000.parquet"
    if footer == "long":
        pq.write_table(table, path, row_group_size=2)
    else:
        with pq.ParquetWriter(path, table.schema, store_schema=False) as writer:
            writer.write_table(table)
            writer.add_key_value_metadata({"x": "y" * (17 << 20)})
    data = path.read_bytes()
    size, length = len(data), int.from_bytes(data[-8:-4], "little") + 8
    assert ((64 << 10) < length <= fsio.MAX_TAIL_BYTES) if footer == "long" else (fsio.MAX_TAIL_BYTES < length)
    _RemoteFile.ranges = []
    assert web_format.image_column(f"uvdremote://{path}") is None
    tail = ("00000.parquet", size - (64 << 10), size)
    if footer == "long":
        assert _RemoteFile.ranges == [tail, ("00000.parquet", size - length, size - (64 << 10))]
    else:  # each read of the footer (the encryption check's walk, pyarrow's) one range
        assert _RemoteFile.ranges[0] == tail and len(_RemoteFile.ranges) <= 3, len(_RemoteFile.ranges)
        assert set(_RemoteFile.ranges[1:]) == {("00000.parquet", size - length, size - (64 << 10))}
    # planning reads a schema once and holds its columns, never its 17 MiB of metadata
    _RemoteFileSystem.opened = []
    with web_format.schemas_read_once():
        assert [web_format.image_column(f"uvdremote://{path}") for _ in range(2)] == [None, None]
        (held,) = web_format._SCHEMAS.get().values()
    assert _RemoteFileSystem.opened == ["00000.parquet"] and held.names == ("key", "status", "caption")


@pytest.mark.parametrize("layout", ["huggingface", "parquet"])
def test_a_remote_image_parquet_is_fetched_about_once(tmp_path: Path, layout: str):
    """A parquet of images on a remote store was fetched twice over (1.92x of a 40 MB `datasets`
    file): each column chunk's page-header walk read its 256 bytes through fsspec's 5 MiB read-ahead,
    and pyarrow's read of the chunk fetched 5 MiB more than it asked for. Its parquet is now opened
    without read-ahead: the headers' bytes and the chunks' bytes are fetched, and the rows are read."""
    fsspec.register_implementation("uvdremote", _RemoteFileSystem, clobber=True)
    rng = np.random.default_rng(0)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows = [{"image": {"bytes": _jpeg() + rng.bytes(60_000), "path": f"{i}.jpg"}, "text": f"c{i}"} for i in range(120)]
    table = pa.Table.from_pylist(rows, schema=pa.schema([("image", image), ("text", pa.string())]))
    if layout == "huggingface":
        path = tmp_path / "data" / "train-00000-of-00001.parquet"
        path.parent.mkdir()
    else:  # img2dataset output_format=parquet: its `jpg` column, `key`, `status`; and its stats
        table = pa.table({"key": [f"{i:09d}" for i in range(120)], "jpg": [r["image"]["bytes"] for r in rows],
                          "caption": table["text"], "status": ["success"] * 120})
        path = tmp_path / "00000.parquet"
        (tmp_path / "00000_stats.json").write_text(json.dumps({"count": 120, "successes": 120}))
    pq.write_table(table, path, row_group_size=30, use_dictionary=False)
    _RemoteFile.fetched = []
    items = list(_read(LaionSource("web", f"uvdremote://{tmp_path}", layout)))
    assert sum(isinstance(i, ImageRecord) for i in items) == 120, [i for i in items if isinstance(i, Reject)][:3]
    assert sum(_RemoteFile.fetched) < 1.2 * path.stat().st_size, (sum(_RemoteFile.fetched), path.stat().st_size)


def _img2dataset_parquet(folder: Path, rows: int, image: bytes) -> Path:
    """An img2dataset `output_format=parquet` shard laid out as its `BufferedParquetWriter` writes
    one: its schema (the `jpg` column appended last), a `write_table` of each 100 rows buffered
    (row groups of 100 rows), pyarrow's defaults otherwise; and its stats beside it."""
    schema = pa.schema([("key", pa.string()), ("txt", pa.string()), ("url", pa.string()), ("caption", pa.string()),
                        ("status", pa.string()), ("error_message", pa.string()), ("width", pa.int32()),
                        ("height", pa.int32()), ("original_width", pa.int32()), ("original_height", pa.int32()),
                        ("exif", pa.string()), ("sha256", pa.string()), ("jpg", pa.binary())])
    path = folder / "00000.parquet"
    rng = np.random.default_rng(1)
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 100):
            batch = [{"key": f"{i:09d}", "txt": f"caption {i}", "url": f"http://x/{i}.jpg", "caption": f"caption {i}",
                      "status": "success", "error_message": None, "width": 40, "height": 40, "original_width": 40,
                      "original_height": 40, "exif": "{}", "sha256": None, "jpg": image + rng.bytes(3000)}
                     for i in range(start, min(start + 100, rows))]
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    (folder / "00000_stats.json").write_text(json.dumps({"count": rows, "successes": rows}))
    return path


@pytest.mark.parametrize("layout", ["huggingface", "parquet"])
def test_a_remote_parquet_of_100_row_groups_is_fetched_in_few_fetches(tmp_path: Path, layout: str):
    """A remote parquet read without any cache was fetched in thousands of tiny fetches: each page
    header walked and each column chunk read its own (3,604 fetches of a 33 MB img2dataset shard
    of 100 row groups of 12 columns: 77 s at 20 ms a fetch, where 2.2 s with fsspec's read-ahead).
    Read in blocks of 1 MiB, its bytes are fetched about once, in about one fetch a MiB. Both
    layouts as their writers make them: img2dataset's (row groups of 100 rows, 13 columns) and
    `datasets`' for images (row groups of 100 rows)."""
    fsspec.register_implementation("uvdremote", _RemoteFileSystem, clobber=True)
    rows, image = 2000, _jpeg()
    if layout == "parquet":
        path = _img2dataset_parquet(tmp_path, rows, image)
    else:
        path = tmp_path / "data" / "train-00000-of-00001.parquet"
        path.parent.mkdir()
        rng = np.random.default_rng(0)
        kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        table = pa.Table.from_pylist([{"image": {"bytes": image + rng.bytes(3000), "path": None}, "text": f"c{i}"}
                                      for i in range(rows)],
                                     schema=pa.schema([("image", kind), ("text", pa.string())]))
        pq.write_table(table, path, row_group_size=100)
    assert pq.ParquetFile(path).metadata.num_row_groups == 20
    _RemoteFile.fetched = []
    items = list(_read(LaionSource("web", f"uvdremote://{tmp_path}", layout)))
    assert sum(isinstance(i, ImageRecord) for i in items) == rows, [i for i in items if isinstance(i, Reject)][:3]
    size = path.stat().st_size
    assert sum(_RemoteFile.fetched) <= 1.2 * size, (sum(_RemoteFile.fetched), size)
    assert len(_RemoteFile.fetched) <= size / (1 << 20) + 8, (len(_RemoteFile.fetched), size)


@pytest.mark.parametrize("parts", [("empty", "rows"), ("rows", "empty"), ("empty",)])
def test_a_row_group_of_no_rows_pyarrow_writes_is_read_past(tmp_path: Path, parts):
    """pyarrow writes a row group of 0 rows for an empty table (`ParquetWriter.write_table` of one,
    `pq.write_table` or pandas' `to_parquet` of an empty frame), its chunks' first data page at byte
    0 and `num_values` 0; pyarrow reads the file and never reads that group. The page walk read the
    file's `PAR1` as a page header: the file was one `bad_parquet`, its rows after the group lost
    (the final reader's proof). A chunk of no values has no page to walk: every row is read."""
    data = tmp_path / "data"
    data.mkdir()
    jpeg = subprocess.run(["convert", "-size", "8x8", "xc:red", "jpg:-"], capture_output=True, check=True).stdout
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image), ("text", pa.string())])
    rows = pa.Table.from_pylist([{"image": {"bytes": jpeg, "path": f"{i}.jpg"}, "text": f"t{i}"} for i in range(5)],
                                schema=schema)
    path = data / "train-00000-of-00001.parquet"
    with pq.ParquetWriter(path, schema) as writer:
        for part in parts:
            writer.write_table(rows if part == "rows" else rows.slice(0, 0))
    assert 0 in [pq.ParquetFile(path).metadata.row_group(g).num_rows for g in range(len(parts))]
    items = list(_read(LaionSource("s", str(data))))
    assert all(isinstance(item, ImageRecord) for item in items), items
    assert len(items) == pq.read_table(path).num_rows == (5 if "rows" in parts else 0)


def test_a_remote_file_read_without_read_ahead_holds_at_most_its_block_budget(tmp_path: Path, monkeypatch):
    """`fsio.open_file(read_ahead=False)` reads a remote file in blocks of `SEEKING_BLOCK_BYTES`,
    holding the last `SEEKING_BLOCKS` of them: read whole, seeking back and forth, it holds no more
    (without the cap a 96 MiB parquet's 95 blocks were all held; the final reader's proof)."""
    from sources import fsio

    fsspec.register_implementation("uvdremote", _RemoteFileSystem, clobber=True)
    monkeypatch.setattr(fsio, "SEEKING_BLOCK_BYTES", 1 << 16)
    monkeypatch.setattr(fsio, "SEEKING_BLOCKS", 3)
    path = tmp_path / "blob.bin"
    path.write_bytes(np.random.default_rng(0).bytes(40 << 16))
    with fsio.open_file(f"uvdremote://{path}", read_ahead=False) as handle:
        for start in list(range(0, 40 << 16, 5 << 16)) + [0, 39 << 16]:
            handle.seek(start)
            assert handle.read(1000) == path.read_bytes()[start:start + 1000]
        held = handle.cache._fetch_block_cached.cache_info()
    assert 0 < held.currsize <= 3, held


def test_planning_holds_a_schemas_columns_in_the_memory_it_counts(tmp_path: Path, monkeypatch):
    """`schemas_read_once` held each Arrow schema, which takes 4 to 6 times its serialized size (16
    of 6,000 struct columns, 0.76 MiB serialized, held 94 MiB against a 16 MiB bound): it holds
    their columns (`ParquetColumns`), whose memory it counts as Python does, and reads again a
    schema whose columns take more than `MAX_SCHEMA_HELD_BYTES`."""
    import tracemalloc

    from sources import web_format
    from sources.parquet_columns import ParquetColumns

    schema = pa.schema([(f"c{i:06d}", pa.struct([("a", pa.int8()), ("b", pa.string())])) for i in range(2000)])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        columns = ParquetColumns.of(schema)
        taken = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert columns.names[-1] == "c001999" and not columns.image_columns and columns.stored_image is None
    assert 0.9 < taken / columns.held_bytes() < 1.1, (taken, columns.held_bytes())
    path = tmp_path / "00000.parquet"
    pq.write_table(pa.table({"key": ["0"], "jpg": [b"x"]}), path)
    opened = []
    real = web_format.hf_parquet.read_schema
    monkeypatch.setattr(web_format.hf_parquet, "read_schema", lambda handle: opened.append(1) or real(handle))
    for bound, reads in ((1 << 20, 1), (100, 2)):  # held; over the bound: read at each ask
        monkeypatch.setattr(web_format, "MAX_SCHEMA_HELD_BYTES", bound)
        opened.clear()
        with web_format.schemas_read_once():
            assert [web_format.image_column(str(path)) for _ in range(2)] == ["jpg", "jpg"]
            assert all(isinstance(v, ParquetColumns) for v in web_format._SCHEMAS.get().values())
        assert len(opened) == reads


@pytest.mark.parametrize("layout", ["webdataset", "parquet", "huggingface"])
def test_a_remote_parquets_footer_is_fetched_once_per_open(tmp_path: Path, layout: str):
    """Opening a remote parquet fetched its last bytes again and again: the encryption check's
    8-byte trailer, pyarrow's footer read, its schema, each through fsspec's read-ahead window,
    which a read before it misses (4 fetches reaching the end of a 13 KB img2dataset listing for one
    open; 3 of a 10 MB `output_format=parquet` shard over its 2 opens). Every parquet of a web
    source (its layout detected, its listing and notices read, its rows read) now fetches the
    footer once per open (and a unit's read opens it once: an `output_format=parquet` shard's
    opened it twice, once for its image column's name). A build's planning (its units and its
    notices, `schemas_read_once`) opens it once for its schema and once for the notices' rows: it
    opened an `output_format=parquet` shard 7 times (the layout detected twice, twice a detection;
    the notices' rows, schema and first decoded row each an open), a listing beside a tar 3 times."""
    from sources.web_format import schemas_read_once

    fsspec.register_implementation("uvdremote", _RemoteFileSystem, clobber=True)
    if layout == "huggingface":
        path = tmp_path / "data" / "train-00000-of-00001.parquet"
        path.parent.mkdir()
        kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        image = _jpeg()
        pq.write_table(pa.Table.from_pylist([{"image": {"bytes": image, "path": None}, "text": f"c{i}"}
                                             for i in range(300)],
                                            schema=pa.schema([("image", kind), ("text", pa.string())])), path,
                       row_group_size=100)
    else:
        path = _img2dataset_parquet(tmp_path, 300, _jpeg())
    if layout == "webdataset":  # the listing of a shard's tar: its rows without the images
        pq.write_table(pq.read_table(path).drop_columns(["jpg"]), path, row_group_size=100)
        members, image = [f"{i:09d}.jpg" for i in range(300)], _jpeg()
        for member in members:
            (tmp_path / member).write_bytes(image)
        subprocess.run(["tar", "-cf", str(tmp_path / "00000.tar"), "-C", str(tmp_path), *members], check=True)
        for member in members:
            (tmp_path / member).unlink()
    _RemoteFile.fetched, _RemoteFile.ranges, _RemoteFileSystem.opened = [], [], []
    source = LaionSource("web", f"uvdremote://{tmp_path}")
    with schemas_read_once():  # as a build plans
        units = source.units()
        notices = source.notices()
    # the notices' rows (a `datasets` file's captions, checked UTF-8), and the schema
    planned = {"webdataset": 1, "parquet": 2, "huggingface": 2}[layout]
    assert _RemoteFileSystem.opened.count(path.name) == planned, _RemoteFileSystem.opened
    assert (layout == "huggingface") == (notices == [])
    before = len(_RemoteFileSystem.opened)
    items = [item for unit in units for item in source.read(unit)]
    assert _RemoteFileSystem.opened[before:].count(path.name) == 1  # a unit opens its parquet once
    assert sum(isinstance(i, ImageRecord) for i in items) == 300, [i for i in items if isinstance(i, Reject)][:3]
    size, name = path.stat().st_size, path.name
    opens = _RemoteFileSystem.opened.count(name)
    # fetches of the footer: those from within the file's last 64 KiB (pyarrow's first footer read)
    tails = [r for r in _RemoteFile.ranges if r[0] == name and r[1] >= size - (64 << 10)]
    assert 0 < len(tails) <= opens, (tails, opens)


def test_the_worker_memory_plan_counts_a_remote_files_block_cache():
    """README "What a worker needs per shard" counts what a remote parquet's open file holds
    (`fsio.open_file(read_ahead=False)`: its blocks and its footer) and what a tar's read holds
    (`tar_members`), from the figures the code uses."""
    from sources import fsio, parquet_pages

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    plan = " ".join(readme.split("### What a worker needs per shard", 1)[1].split("\n## ", 1)[0].split())
    blocks = fsio.SEEKING_BLOCK_BYTES * fsio.SEEKING_BLOCKS
    assert (f"up to {blocks >> 20} MiB of fetched blocks ({fsio.SEEKING_BLOCKS} of "
            f"{fsio.SEEKING_BLOCK_BYTES >> 20} MiB) and its footer (up to {fsio.MAX_TAIL_BYTES >> 20} MiB; a longer "
            f"one, up to the {parquet_pages.MAX_FOOTER_BYTES >> 20} MiB a footer may take,") in plan
    assert f"row group it decodes (up to {hf_parquet.ROW_GROUP_BYTES >> 20} MiB" in plan
    from sources import tar_members
    assert (f"holds up to {tar_members.MAX_HELD_BYTES >> 20} MiB (`MAX_HELD_BYTES`) of samples whose members lie "
            "apart") in plan
    assert f"later hard links still name (up to {tar_members.MAX_LINK_HELD_BYTES >> 20} MiB, `MAX_LINK_HELD_BYTES`" in plan



@pytest.mark.parametrize("value_type, index_type", [(pa.string(), pa.int32()), (pa.large_string(), pa.int8()),
                                                    (pa.binary(), pa.uint16()), (pa.large_binary(), pa.int64())])
def test_dictionary_held_counts_what_rows_point_at_as_pyarrow_compute_does(tmp_path, value_type, index_type):
    """`dictionary_held` reads a dictionary column's pointed-at bytes from its buffers with numpy
    (not `pyarrow.compute`, whose import every listing paid): on a column read back from a parquet
    file as pyarrow writes and reads it (dictionary pages), and on dictionary arrays of every index
    width, with null rows, a null dictionary value, repeats and slices (offsets in both buffers),
    it counts what `pc.take` of `pc.binary_length` sums."""
    import pyarrow.compute as pc

    rng = np.random.default_rng(5)
    binary = pa.types.is_binary(value_type) or pa.types.is_large_binary(value_type)
    words = [None if i % 7 == 3 else "x" * int(rng.integers(1, 300)) for i in range(40)]
    words = [w.encode() if binary and w is not None else w for w in words]
    rows = [None if i % 5 == 0 else words[int(rng.integers(0, len(words)))] for i in range(500)]
    pq.write_table(pa.table({"c": pa.array(rows, value_type)}), tmp_path / "d.parquet")
    read = pq.read_table(tmp_path / "d.parquet", read_dictionary=["c"]).column("c").combine_chunks()
    assert pa.types.is_dictionary(read.type)
    values = pa.array(words, value_type).slice(3, 30)  # a null value among them (word 3 + 7)
    indices = pa.array([None if i % 9 == 0 else int(rng.integers(0, 30)) for i in range(300)], index_type)
    built = pa.DictionaryArray.from_arrays(indices, values)
    # a value masked null over bytes it still spans (as a writer that nulls a slot in place leaves it)
    wide = pa.types.is_large_string(value_type) or pa.types.is_large_binary(value_type)
    offsets = np.array([0, 5, 9], np.int64 if wide else np.int32).tobytes()
    masked = pa.Array.from_buffers(value_type, 2, [pa.py_buffer(bytes([0b10])), pa.py_buffer(offsets),
                                                   pa.py_buffer(b"nulledkept")])
    assert masked.null_count == 1 and pc.binary_length(masked)[0].as_py() is None
    pointing = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0], index_type), masked)
    for array in (read, read.slice(17, 301), built, built.slice(5, 200), built.slice(290, 10), pointing):
        expected = pc.sum(pc.take(pc.binary_length(array.dictionary), array.indices)).as_py() or 0
        assert hf_parquet.dictionary_held(array) == expected
    assert hf_parquet.dictionary_held(read) > 10_000 and hf_parquet.dictionary_held(built) > 10_000


@pytest.mark.parametrize("column", ["image", "photo.v2"])
def test_an_image_column_named_with_a_dot_takes_the_all_null_shortcut_too(tmp_path: Path, monkeypatch, column: str):
    """A group of null images only, more rows than the file may list: its footer's statistics say
    so and it is not read. The column's leaves were found by the name before the first dot of
    their path, so an `Image` column named `photo.v2` (`datasets` takes any name) found none and
    its group was read, every row (10**7 rows: 98 CPU-s). Now its leaves are found by the schema,
    and both names come the same way: the first rows a reject each, one more for the rest."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    metadata = {b"huggingface": json.dumps({"info": {"features": {column: {"_type": "Image"}}}}).encode()}
    table = pa.Table.from_arrays([pa.nulls(1000, image)], schema=pa.schema([(column, image)], metadata=metadata))
    pq.write_table(table, tmp_path / "train.parquet")
    monkeypatch.setattr(hf_parquet, "MAX_LISTED_ROWS", 30)
    read = []
    iter_batches = pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", lambda self, *a, **k:
                        read.append(k.get("columns")) or iter_batches(self, *a, **k))
    items = list(_read(LaionSource("hf", str(tmp_path))))
    assert len(items) == 31 and {i.reason for i in items} == {"missing_image"}
    assert items[-1].detail.startswith(f"rows 30 to 999 (970 rows, this one reject for them all) of train.parquet: "
                                       f"row group 0: the {column!r} of each of its 1000 rows is null"), items[-1].detail
    assert read == [], read  # the group's rows never read
