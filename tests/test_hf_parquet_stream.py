"""A parquet row group over the budget whose rows each fit is read a few rows at a time
(`hf_parquet.streamed_bytes`), never whole and never refused: `datasets` sizes its row groups from
the average row, so a last group of photos after many thumbnails passes the budget (a 292 MB
group of 130 photos of 2.9 MB each lost every row), and img2dataset writes 100 rows a group."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import pyarrow as pa
import pyarrow.parquet as pq

from sources import hf_parquet
from sources.laion import LaionSource
from sources.records import ImageRecord, Reject

from parquet_makers import HF_METADATA, noise_photo as _photo



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
    """20 thumbnails and 24 photos of ~16 KB (the hunter's 300 thumbnails and 130 photos of 2.9 MB,
    scaled): the photos' group passes a budget of half its size, each photo well within it. Every
    row is built, its bytes and caption those written, and the big group is read in batches
    within the budget, not whole."""
    pictures = [_photo(i, 12) for i in range(20)] + [_photo(100 + i, 128) for i in range(24)]
    path = tmp_path / "data" / "train-00000-of-00001.parquet"
    rows = _datasets_parquet(path, pictures, row_group_size=20)
    parquet = pq.ParquetFile(path)
    declared = hf_parquet.declared_bytes(parquet.metadata.row_group(1))
    budget = declared // 2
    assert declared > budget > 8 * len(pictures[-1]) and hf_parquet.declared_bytes(parquet.metadata.row_group(0)) < budget
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
    assert 1 <= streamed < 24, batches  # a few rows a batch, not the group


def test_a_row_over_the_budget_is_refused_the_others_of_its_group_built(tmp_path: Path, monkeypatch):
    """A photo bigger than the whole budget, alone in its page: its group could not be read even a
    row at a time, so all its rows were `row_group_too_large` rejects (the small photo beside it
    too). Now its image column is read a value at a time from its pages (`parquet_paged`): that
    row alone is the reject, naming its bytes, and every other row is built."""
    small = [_photo(i, 24) for i in range(4)]
    huge = _photo(50, 160)
    pictures = small[:2] + [huge, small[2]] + small[3:]
    _datasets_parquet(tmp_path / "train.parquet", pictures, row_group_size=2)
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", len(huge) // 2)
    items = _items(tmp_path)
    assert [type(i) for i in items] == [ImageRecord, ImageRecord, Reject, ImageRecord, ImageRecord]
    assert [i.data for i in items if isinstance(i, ImageRecord)] == small
    assert items[2].reason == "row_group_too_large"
    assert f"row 2: its 'image' holds {len(huge)} bytes, over the" in items[2].detail, items[2].detail
    assert f"within the {len(huge) // 2} byte budget" in items[2].detail


def _long_field(number: int, kind: int) -> bytes:
    """A Thrift compact field header in its long form (type, then the zigzag id), which holds
    whatever field came before."""
    zigzag, out = (number << 1) ^ (number >> 15), bytearray([kind])
    while zigzag >= 0x80:
        out.append(zigzag & 0x7F | 0x80)
        zigzag >>= 7
    return bytes(out + bytes([zigzag]))


def _hide_dictionary_pages(path: Path) -> None:
    """Rewrite the footer of a parquet file so that no column chunk says it has a dictionary page:
    each `ColumnMetaData`'s `dictionary_page_offset` (field 11) dropped and its `data_page_offset`
    (field 9) pointed at the dictionary page, as a writer (or a hand) may leave it; the pages are
    untouched, and pyarrow reads the file the same."""
    from sources import parquet_pages as pp

    data = path.read_bytes()
    length = int.from_bytes(data[-8:-4], "little")
    footer = data[-8 - length:-8]
    reader = pp._Reader(io.BytesIO(footer), 0)
    reader.limit, reader.buffer = length, footer
    route = (4, 1, 3)  # FileMetaData.row_groups -> RowGroup.columns -> ColumnChunk.meta_data

    def struct(depth: int) -> bytes:
        fields, last = [], 0
        while True:
            number, kind = pp._field(reader, last)
            if kind == pp._STOP:
                break
            last, start = number, reader.position
            if depth < len(route) and number == route[depth] and kind == pp._LIST:
                head = reader.byte()
                size = head >> 4 if head >> 4 != 15 else reader.varint()
                value = footer[start:reader.position] + b"".join(struct(depth + 1) for _ in range(size))
            elif depth < len(route) and number == route[depth] and kind == pp._STRUCT:
                value = struct(depth + 1)
            else:
                pp._skip(reader, kind, 0)
                value = footer[start:reader.position]
            fields.append([number, kind, value])
        if depth == len(route):  # a ColumnMetaData
            dictionary = [f for f in fields if f[0] == 11]
            if dictionary:
                next(f for f in fields if f[0] == 9)[2] = dictionary[0][2]
                fields.remove(dictionary[0])
        return b"".join(_long_field(n, k) + v for n, k, v in fields) + b"\x00"

    rewritten = struct(0)
    path.write_bytes(data[:-8 - length] + rewritten + len(rewritten).to_bytes(4, "little") + b"PAR1")
    chunks = pq.ParquetFile(path).metadata.row_group(0)
    assert not any(chunks.column(i).has_dictionary_page for i in range(chunks.num_columns))


def _read_batches(root: Path, monkeypatch) -> tuple[list, list]:
    """Every item of the parquet under `root` and the batch size of each read of its groups."""
    batches = []
    iter_batches = pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", lambda self, *a, **k:
                        batches.append(k.get("batch_size")) or iter_batches(self, *a, **k))
    items = _items(root)
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", iter_batches)
    return items, batches


def test_a_dictionary_page_the_footer_does_not_name_is_counted_as_pyarrow_decodes_it(tmp_path: Path, monkeypatch):
    """16 photos of ~16 KB in one dictionary page (as img2dataset writes 100 photos of 2.9 MB),
    the group over the budget, and the same file with its footer naming no dictionary page:
    pyarrow reads both the same, decoding the dictionary page whole. The hidden one was read a
    few rows at a time as if it had none (img2dataset's 291 MB page: 1206 MB peak against 256
    MiB); then both were `row_group_too_large` naming the dictionary. Now both are read a value at
    a time from their pages (`parquet_paged`: the dictionary page found by its header, whatever
    the footer says), every row built alike."""
    pictures = [_photo(100 + i, 128) for i in range(16)]
    honest, hidden = tmp_path / "honest", tmp_path / "hidden"
    for root in (honest, hidden):
        path = root / "train.parquet"
        path.parent.mkdir()
        image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        schema = pa.schema([("image", image), ("text", pa.string())], metadata=HF_METADATA)
        pq.write_table(pa.Table.from_pylist([{"image": {"bytes": b, "path": None}, "text": f"p{i}"}
                                             for i, b in enumerate(pictures)], schema=schema), path)
    _hide_dictionary_pages(hidden / "train.parquet")
    assert pq.read_table(hidden / "train.parquet").equals(pq.read_table(honest / "train.parquet"))
    dictionary = sum(map(len, pictures))
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", dictionary)  # within it a row, not the dictionary
    got = {root.name: [(type(i).__name__, getattr(i, "data", None), getattr(i, "detail", None))
                       for i in _items(root)] for root in (honest, hidden)}
    assert got["hidden"] == got["honest"]
    assert [data for _, data, _ in got["hidden"]] == pictures, got["hidden"][0][2]


def test_a_repeated_image_in_a_dictionary_page_the_footer_does_not_name_is_judged_by_its_rows(
        tmp_path: Path, monkeypatch):
    """One photo in 200 rows, dictionary-encoded (stored once: the group declares ~its size), and
    the same file with its footer naming no dictionary page. The honest one is judged by the bytes
    its rows point at (200 photos, over the budget) and read two rows a batch; the hidden one was
    judged by its footer and read 64 rows a batch (each batch 64 photos decoded: one 8 MiB image
    so was 512 MB a batch). Now both are read alike and every row built."""
    photo = _photo(7, 128)
    roots = [tmp_path / "honest", tmp_path / "hidden"]
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image), ("text", pa.string())], metadata=HF_METADATA)
    for root in roots:  # pyarrow's defaults, as `datasets` writes
        root.mkdir()
        pq.write_table(pa.Table.from_pylist([{"image": {"bytes": photo, "path": None}, "text": f"p{i}"}
                                             for i in range(200)], schema=schema), root / "train.parquet")
    _hide_dictionary_pages(roots[1] / "train.parquet")
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 40 * len(photo))
    monkeypatch.setattr(hf_parquet, "STREAM_BATCH_BYTES", 2 * len(photo))
    (honest, honest_batches), (hidden, hidden_batches) = (_read_batches(root, monkeypatch) for root in roots)
    assert [i.data for i in hidden] == [i.data for i in honest] == [photo] * 200
    assert hidden_batches == honest_batches and max(honest_batches) <= 2, (honest_batches, hidden_batches)


def _writer_table(shape: str, pictures: list[bytes], masks: list[bytes] | None = None) -> pa.Table:
    """The table a writer holds: a pandas/pyarrow table of image bytes, img2dataset's shard (its
    `key`, `status`, `error_message` beside `jpg`), or a `datasets` Image struct and its metadata."""
    captions = [f"p{i}" for i in range(len(pictures))]
    if shape == "datasets":
        image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        return pa.Table.from_pylist([{"image": {"bytes": b, "path": None}, "text": c} for b, c in zip(pictures, captions)],
                                    schema=pa.schema([("image", image), ("text", pa.string())], metadata=HF_METADATA))
    if shape == "img2dataset":
        return pa.table({"key": [f"{i:09d}" for i in range(len(pictures))], "status": ["success"] * len(pictures),
                         "error_message": pa.nulls(len(pictures), pa.string()), "caption": captions, "jpg": pictures})
    return pa.table({"image": pictures, **({"mask": masks} if masks else {}), "caption": captions})


ADVICE = r"pyarrow or pandas: row_group_size=(\d+)"


@pytest.mark.parametrize("shape", ["pandas", "img2dataset", "datasets"])
def test_a_page_of_many_rows_is_read_a_value_at_a_time(tmp_path: Path, monkeypatch, shape):
    """20 photos of ~16 KB in one plain page (pyarrow's `use_dictionary=False`: its page limit is
    checked a write batch of 1024 rows at a time; DuckDB writes 35 photos of 3 MB a page), each
    row well within the budget, the page not: refused "a row that large ... is no input this
    source reads" though no row was, then refused naming the page and the writer's setting. Now
    the image column's values are read one at a time from the page (`parquet_paged`): built."""
    pictures = [_photo(200 + i, 128) for i in range(20)]
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 10 * len(pictures[0]))
    path = tmp_path / "one" / "train.parquet"
    path.parent.mkdir()
    pq.write_table(_writer_table(shape, pictures), path, use_dictionary=False)
    assert [i.data for i in _items(path.parent)] == pictures


def test_two_dictionary_pages_of_many_rows_are_both_named(tmp_path: Path, monkeypatch):
    """An image and a mask column, each one dictionary page of its 10 photos (pyarrow's defaults):
    either dictionary alone kept the group over the budget, so only the largest was weighed and
    the detail said "a row that large". Now both are named, and the row count said builds."""
    import re

    pictures, masks = [_photo(300 + i, 96) for i in range(10)], [_photo(400 + i, 96) for i in range(10)]
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 15 * len(pictures[0]))
    path = tmp_path / "one" / "train.parquet"
    path.parent.mkdir()
    pq.write_table(_writer_table("pandas", pictures, masks), path)
    items = _items(path.parent)
    assert {type(i) for i in items} == {Reject}, [getattr(i, "detail", "") for i in items][:1]
    assert "the dictionary page of 'image' (10 values," in items[0].detail, items[0].detail
    assert "the dictionary page of 'mask' (10 values," in items[0].detail, items[0].detail
    rows = int(re.search(ADVICE, items[0].detail)[1])
    fixed = tmp_path / "fixed" / "train.parquet"
    fixed.parent.mkdir()
    pq.write_table(_writer_table("pandas", pictures, masks), fixed, row_group_size=rows)
    assert [i.data for i in _items(fixed.parent)] == pictures


@pytest.mark.parametrize("times, built", [(3, False), (6, True)])
def test_a_row_read_alone_is_counted_as_many_times_as_it_is_held(tmp_path: Path, monkeypatch, times: int, built: bool):
    """Rows of one photo a page (`write_batch_size=1`), the group over the budget: read by pyarrow a
    row at a time, a row peaked at 5.3 times its bytes (80 MB rows: 474 MiB RSS), so within 6 rows'
    bytes such a group was refused. Now its image column is read a value at a time from its pages
    (`parquet_paged.VALUE_COPIES`: 4, a 58 MiB row peaked at 3.4 times): within 6 rows' bytes it is
    built; within 3 each row is its own reject, naming its bytes."""
    pictures = [_photo(500 + i, 128) for i in range(12)]
    _datasets_parquet(tmp_path / "train.parquet", pictures, row_group_size=12)
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", times * len(pictures[0]))
    items = _items(tmp_path)
    if built:
        assert [i.data for i in items] == pictures
    else:
        assert {getattr(i, "reason", None) for i in items} == {"row_group_too_large"} and len(items) == 12
        assert f"row 0: its 'image' holds {len(pictures[0])} bytes" in items[0].detail, items[0].detail


def _writer_file(path: Path, shape: str, pictures: list[bytes]) -> None:
    """`pictures` in one row group as each writer writes them, its page and dictionary limits scaled
    down with the pictures (a 3 MB photo passes pyarrow's 1 MiB ones: a photo a page): `datasets`
    5.2 (`to_parquet`: its Image columns PLAIN and uncompressed, the rest dictionary-encoded and
    snappy, a page index), pandas' `to_parquet` and img2dataset's shards (pyarrow's defaults)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scaled = {"data_page_size": 4 << 10, "dictionary_pagesize_limit": 4 << 10, "write_batch_size": 1}
    if shape == "datasets":
        scaled.update(compression={"image.bytes": "none", "image.path": "none", "text": "snappy"},
                      use_dictionary=["text"], column_encoding={"image.bytes": "PLAIN", "image.path": "PLAIN"},
                      write_page_index=True)
    pq.write_table(_writer_table("pandas" if shape == "pyarrow" else shape, pictures), path,
                   row_group_size=len(pictures), **scaled)


def _built(items: list) -> list:
    return [(type(i).__name__, i.key, getattr(i, "data", None), getattr(i, "lineage", None),
             getattr(i, "reason", None)) for i in items]


@pytest.mark.parametrize("shape", ["datasets", "pyarrow", "img2dataset"])
def test_a_row_group_whose_whole_read_passes_the_budget_is_read_a_few_rows_at_a_time(
        tmp_path: Path, monkeypatch, shape: str):
    """24 photos of ~16 KB in one group that the budget holds as judged (its size), but not read
    whole: reading a group whole held 3.3 to 6.6 times its size at its peak (its chunks as stored,
    its values decoded, a batch as Python: a `datasets` 5.2 group of 80 photos of 3 MB, 238 MB,
    built at 1018 MiB peak RSS against the 256 MiB budget). Now a group judged over the budget's
    `WHOLE_READ_COPIES`th is read a few rows a batch through the buffered stream where its pages
    say that stays within the budget, its rows built as the whole read built them; a group well
    within it is still read whole."""
    pictures = [_photo(600 + i, 128) for i in range(24)]
    path = tmp_path / {"datasets": "data/train-00000-of-00001.parquet", "pyarrow": "train.parquet",
                       "img2dataset": "00000.parquet"}[shape]
    _writer_file(path, shape, pictures)
    whole = _built(_items(tmp_path))  # within the 256 MiB budget: read whole
    assert [i[2] for i in whole] == pictures
    with open(path, "rb") as handle:
        size = hf_parquet.value_bytes(handle, pq.ParquetFile(handle), 0)
    budget = 2 * size  # judged within it, read whole beyond it (3.3 to 6.6 times its size)
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", budget)
    monkeypatch.setattr(hf_parquet, "STREAM_BATCH_BYTES", 3 * len(pictures[0]))
    read_whole = []
    read_row_group = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", lambda self, *a, **k:
                        read_whole.append(k.get("columns")) or read_row_group(self, *a, **k))
    batches = []
    iter_batches = pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", lambda self, *a, **k:
                        batches.append((k.get("batch_size"), k.get("columns"))) or iter_batches(self, *a, **k))
    items = _items(tmp_path)
    assert _built(items) == whole  # the same rows, in order, the same lineage
    # the group's rows through the buffered stream, a few rows a batch (a dictionary's first row
    # read alone weighs its values: `largest_values`)
    (streamed,) = [size for size, columns in batches if not (size == 1 and columns and len(columns) == 1)]
    assert 1 <= streamed <= 3, batches
    assert not [c for c in read_whole if c is None or "image" in c or "jpg" in c], read_whole  # never read whole


def test_a_row_group_well_within_the_budget_is_still_read_whole(tmp_path: Path, monkeypatch):
    """The fast read stays for groups whose whole read fits: a group of 24 photos under a budget
    of 8 times its size is read whole, in one batch, never streamed."""
    pictures = [_photo(700 + i, 64) for i in range(24)]
    path = tmp_path / "data" / "train-00000-of-00001.parquet"
    _writer_file(path, "datasets", pictures)
    with open(path, "rb") as handle:
        size = hf_parquet.value_bytes(handle, pq.ParquetFile(handle), 0)
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 8 * size)
    items, batches = _read_batches(tmp_path, monkeypatch)
    assert [i.data for i in items] == pictures and batches == [], batches


def test_a_group_of_small_rows_is_streamed_as_many_rows_a_batch_as_its_pages_hold(tmp_path: Path, monkeypatch):
    """4,000 rows of a small picture and a caption (`datasets` 5.2's writer: the captions in a
    dictionary page, then plain pages), the group over the budget: each row was counted at its
    columns' largest page and dictionary page, so a batch held 7 rows (a 69 MB group of 240,000
    captions: 5 rows a batch, 2.3 times slower than read whole). A run of rows lies in at most
    two pages of so many rows, and a caption is at most its dictionary's longest (its first row
    read alone): now `BATCH_ROWS` a batch, every row as read whole."""
    pictures = [_photo(i, 8) for i in range(4000)]
    captions = [f"a photo of a cat on the grass under a blue sky, number {i:05d} of many" for i in range(4000)]
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image), ("text", pa.string())], metadata=HF_METADATA)
    path = tmp_path / "data" / "train-00000-of-00001.parquet"
    path.parent.mkdir()
    pq.write_table(pa.Table.from_pylist([{"image": {"bytes": b, "path": None}, "text": c}
                                         for b, c in zip(pictures, captions)], schema=schema), path,
                   compression={"image.bytes": "none", "image.path": "none", "text": "snappy"},
                   use_dictionary=["text"], column_encoding={"image.bytes": "PLAIN", "image.path": "PLAIN"},
                   data_page_size=64 << 10, dictionary_pagesize_limit=64 << 10, write_batch_size=64,
                   row_group_size=4000)
    whole = _built(_items(tmp_path))
    assert [i[2] for i in whole] == pictures
    assert hf_parquet.declared_bytes(pq.ParquetFile(path).metadata.row_group(0)) > 2 << 20
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 2 << 20)
    monkeypatch.setattr(hf_parquet, "STREAM_BATCH_BYTES", 1 << 20)
    batches = []
    iter_batches = pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", lambda self, *a, **k:
                        batches.append((k.get("batch_size"), k.get("columns"))) or iter_batches(self, *a, **k))
    assert _built(_items(tmp_path)) == whole
    assert [size for size, columns in batches if columns != ["text"]] == [hf_parquet.BATCH_ROWS], batches
