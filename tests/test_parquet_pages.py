"""A parquet column chunk's page headers read as pyarrow reads them (`parquet_pages`), checked
against what pyarrow itself writes in each chunk's footer for honest files."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sources import parquet_pages

ROWS = 30_000


def _table() -> pa.Table:
    rng = np.random.default_rng(0)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return pa.table({
        "n": np.arange(ROWS),
        "label": [f"class {i % 300}" for i in range(ROWS)],  # dictionary-encoded
        "caption": [f"a photo number {i}" for i in range(ROWS)],
        "emb": pa.array([[0.5] * (i % 5) if i % 7 else None for i in range(ROWS)], pa.list_(pa.float32())),
        "image": pa.array([{"bytes": rng.bytes(16), "path": None} if i % 3 else None for i in range(ROWS)], image),
        "flag": [i % 2 == 0 for i in range(ROWS)],
    })


WRITES = {
    "v1 pages": {},
    "v2 pages": {"data_page_version": "2.0"},
    "zstd": {"compression": "zstd"},
    "gzip v2": {"compression": "gzip", "data_page_version": "2.0"},
    "snappy, small pages, no dictionary": {"compression": "snappy", "use_dictionary": False, "data_page_size": 4096},
    "brotli, no statistics": {"compression": "brotli", "write_statistics": False, "data_page_size": 1000},
    "delta encodings": {"use_dictionary": False, "column_encoding": {"caption": "DELTA_BYTE_ARRAY",
                                                                      "n": "DELTA_BINARY_PACKED"}},
    "page index and checksums": {"write_page_index": True, "write_page_checksum": True, "compression": "lz4"},
}


@pytest.mark.parametrize("kind", sorted(WRITES))
def test_page_headers_sum_to_what_pyarrows_footer_says(kind: str):
    """For every chunk pyarrow writes (v1 and v2 pages, dictionaries, each codec, page checksums,
    page statistics or none), its pages' values, and headers with pages uncompressed and stored,
    are its footer's `num_values`, `total_uncompressed_size` and `total_compressed_size`."""
    buffer = io.BytesIO()
    pq.write_table(_table(), buffer, row_group_size=12_000, **WRITES[kind])
    data = buffer.getvalue()
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    walked = 0
    for group in range(meta.num_row_groups):
        for column in range(meta.num_columns):
            chunk = meta.row_group(group).column(column)
            for source in (io.BytesIO(data), pa.BufferReader(data)):
                source.seek(5)
                pages = parquet_pages.chunk_pages(source, chunk)
                assert source.tell() == 5  # the file's position kept
                assert (pages.values, pages.uncompressed, pages.compressed) == (
                    chunk.num_values, chunk.total_uncompressed_size, chunk.total_compressed_size), chunk
                assert pages.dictionary_values == 0 or chunk.has_dictionary_page
                walked += pages.pages
    assert walked >= meta.num_row_groups * meta.num_columns


def test_a_dictionary_pages_entries_are_counted_apart():
    """A dictionary page's `num_values` is its entries, not the chunk's values."""
    buffer = io.BytesIO()
    pq.write_table(pa.table({"label": [f"class {i % 7}" for i in range(1000)]}), buffer)
    chunk = pq.ParquetFile(io.BytesIO(buffer.getvalue())).metadata.row_group(0).column(0)
    pages = parquet_pages.chunk_pages(io.BytesIO(buffer.getvalue()), chunk)
    assert chunk.has_dictionary_page and (pages.values, pages.dictionary_values) == (1000, 7)


def test_a_chunk_of_too_many_pages_or_no_header_is_refused(monkeypatch):
    """A chunk of more than `MAX_PAGES` pages is refused unwalked past them; bytes that are no page
    header (the chunk's offset moved into its data) are refused, never guessed at."""
    buffer = io.BytesIO()
    pq.write_table(pa.table({"n": np.arange(50_000)}), buffer, data_page_size=1024, use_dictionary=False)
    data = buffer.getvalue()
    chunk = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0).column(0)
    assert parquet_pages.chunk_pages(io.BytesIO(data), chunk).pages > 10
    monkeypatch.setattr(parquet_pages, "MAX_PAGES", 10)
    with pytest.raises(parquet_pages.PageHeaderError, match="over 10 pages"):
        parquet_pages.chunk_pages(io.BytesIO(data), chunk)
    # a file's chunks all told: row groups of one footer may all point at the same many pages
    monkeypatch.setattr(parquet_pages, "MAX_PAGES", 100_000)
    pages = parquet_pages.chunk_pages(io.BytesIO(data), chunk).pages
    monkeypatch.setattr(parquet_pages, "MAX_FILE_PAGES", 2 * pages)
    opened = io.BytesIO(data)
    for _ in range(2):
        parquet_pages.chunk_pages(opened, chunk)
    with pytest.raises(parquet_pages.PageHeaderError, match=f"over {2 * pages} pages in one file"):
        parquet_pages.chunk_pages(opened, chunk)
    assert parquet_pages.chunk_pages(io.BytesIO(data), chunk).pages > 10  # another file: its own count
    with pytest.raises(parquet_pages.PageHeaderError):
        parquet_pages.page_header(io.BytesIO(b"\x15" + b"\xff" * 20), 0)
    with pytest.raises(parquet_pages.PageHeaderError, match="cut"):
        parquet_pages.page_header(io.BytesIO(data[:6]), 4)


def _varint(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([low])
        out += bytes([low | 0x80])


def _zigzag(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


# PageHeader's type, uncompressed_page_size and compressed_page_size (i32 fields 1, 2, 3), as pyarrow writes them
_HEAD = bytes([0x15]) + _zigzag(0) + bytes([0x15]) + _zigzag(10) + bytes([0x15]) + _zigzag(10)


@pytest.mark.parametrize("element", [1, 3, 7, 12], ids=["bool", "byte", "double", "struct"])
def test_a_header_declaring_a_huge_list_is_refused_at_once(element: int):
    """A 26-byte header whose field 4 is a list of 2**40 bytes, bools or doubles (each costing the
    reader no read) or of structs over a run of zeros: walked element by element it ran for days
    (the final reader's hang.py); pyarrow's own Thrift reader caps containers. Refused before the
    loop, as no list may hold more elements than the header bytes left."""
    body = _HEAD + bytes([0x19, 0xF0 | element]) + _varint(1 << 40) + b"\x00" * 64
    with pytest.raises(parquet_pages.PageHeaderError, match="elements"):
        parquet_pages.page_header(io.BytesIO(body), 0)


def test_a_header_whose_wanted_struct_is_typed_otherwise_is_passed_over_as_thrift_does():
    """A data page header's field 5 (`data_page_header`, a struct) typed as an i32: read as an int
    and then asked for its fields it raised AttributeError, which `CheckedChunk`'s `__getattr__`
    took for a missing property and judged the chunk by its footer alone (the final reader's
    craft.py). A field of another type than wanted is passed over, as Thrift's readers do."""
    body = _HEAD + bytes([0x25]) + _zigzag(7) + b"\x00"  # field 5 as an i32, then STOP
    header = parquet_pages.page_header(io.BytesIO(body), 0)
    assert (header.type, header.uncompressed_page_size, header.num_values) == (0, 10, 0)
