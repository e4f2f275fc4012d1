"""What reading a parquet image column page by page may cost, a file at a time: the Python snappy
decoder's elements across all of a file's chunks (`parquet_values.FileCost`), which pages are
decompressed whole by pyarrow's C codecs (a page within the memory a row may take: snappy, and
gzip, zstd, lz4 and brotli pages, which have no decoder of their own here), and the counted
rejects past them. Files come from pyarrow's writer; the hostile one is pyarrow's, its pages'
snappy rewritten in place as a hostile writer may (pyarrow still reads it)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sources import hf_parquet, parquet_codecs, parquet_values
from sources.records import ImageRecord, Reject

from parquet_makers import hostile_copies_file, noise_photo as _photo
from test_parquet_paged import _dithered_bmps, _items, _tiff16


def test_a_file_of_many_hostile_chunks_is_stopped_by_its_file_budget(tmp_path: Path, monkeypatch):
    """Four row groups whose snappy pages are 4- and 5-byte copies in turn (an element a 4.5 bytes:
    within each chunk's bound of one a 3 bytes), each page over what a row may hold so decoded in
    Python: each chunk passed its own bound, so a file of many such groups decoded them all (~0.25
    CPU-s a MB, unbounded in the file). The file's elements are counted across its chunks: past
    `FILE_STEPS` its rows not yet read are `parquet_value_too_costly`, saying it is the file's
    budget; a later group whose page is decompressed whole (in C) is still built."""
    rows = hostile_copies_file(tmp_path / "train.parquet", 4, 6, 60_000, [_photo(900 + i, 24) for i in range(3)])
    assert pq.read_table(tmp_path / "train.parquet").column("image").to_pylist() == rows  # pyarrow reads it
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 800_000)  # a row's allowance ~150 KB: a 360 KB page over it
    per_group = 6 * 60_000 * 2 // 9  # its elements
    monkeypatch.setattr(parquet_values, "FILE_STEPS", int(1.5 * per_group))
    monkeypatch.setattr(parquet_values, "STORED_BYTES_PER_STEP", 1 << 40)  # the floor alone (a file so small)
    items = _items(tmp_path)
    assert len(items) == len(rows)
    reasons = [getattr(i, "reason", None) for i in items]
    assert reasons[:6] == [None] * 6 and reasons[12:24] == ["parquet_value_too_costly"] * 12, reasons
    assert reasons[24:] == [None] * 3 and [i.data for i in items[24:]] == rows[24:]
    assert all(i.data == rows[k] for k, i in enumerate(items) if isinstance(i, ImageRecord))
    costly = [i for i in items if isinstance(i, Reject)]
    assert "its file's snappy pages" in costly[-1].detail and "not read" in costly[-1].detail, costly[-1].detail


@pytest.mark.parametrize("place, share, dictionary", [(2, 1.3, False), (4, 1.01, False), (2, 1.3, True)])
def test_an_honest_raw_image_over_half_a_rows_allowance_is_decompressed_in_c(place: int, share: float,
                                                                            dictionary: bool):
    """pyarrow's snappy page (or dictionary page: its defaults) of a dithered BMP among photos,
    over half what a row's value may hold: it was decoded in Python (~0.13 s a MB). Held whole
    beside its values within a row's room (4 times the allowance: the BMP held 4 times over beside
    it, or as a data page's last value once, the page let go as it is read), it is decompressed by
    pyarrow, no Python element decoded, the values the same."""
    rows = [_photo(i, 24) for i in range(4)]
    rows.insert(place, _dithered_bmps(1, 200)[0])
    out = io.BytesIO()
    pq.write_table(pa.table({"image": pa.array(rows, pa.binary())}), out, use_dictionary=dictionary)
    chunk = pq.ParquetFile(io.BytesIO(out.getvalue())).metadata.row_group(0).column(0)
    assert chunk.has_dictionary_page == dictionary
    spent = parquet_values.FileCost()
    allowance = int(share * len(rows[place]))
    got = list(parquet_values.chunk_values(io.BytesIO(out.getvalue()), chunk, len(rows), 1, True, allowance,
                                           spent=spent))
    assert got == rows
    assert spent.steps == 0, spent.steps


@pytest.mark.parametrize("compression", ["gzip", "zstd", "lz4", "brotli"])
@pytest.mark.parametrize("options", [{"use_dictionary": False}, {"use_dictionary": False, "data_page_version": "2.0"},
                                     {}])
def test_pages_of_other_codecs_are_read_page_by_page(compression: str, options: dict):
    """A chunk of gzip, zstd, lz4 or brotli pages was read whole by pyarrow with its row group (up
    to the group's size, 6 times over): its pages (each compressed alone) are decompressed one at a
    time, the values pyarrow's own; gzip, zstd and brotli as they are read (a value over what a row
    may hold its own reject, the rest read); an lz4 page over what a row may take is each of its rows' reject
    (its size named; a v1 page's null rows too, their levels inside it), the group's other pages
    read; a dictionary page so is each non-null row's reject."""
    rng = np.random.default_rng(5)
    values = [None if i % 9 == 4 else bytes(rng.integers(0, 6, int(rng.integers(100, 3000)), dtype=np.uint8))
              for i in range(40)]
    values[30] = bytes(60_000)  # alone in its page, which is over what a row may take
    out = io.BytesIO()
    pq.write_table(pa.table({"image": pa.array(values, pa.binary())}), out, compression=compression,
                   write_batch_size=10, data_page_size=1, **options)
    parquet = pq.ParquetFile(io.BytesIO(out.getvalue()))
    chunk = parquet.metadata.row_group(0).column(0)
    want = parquet.read().column("image").to_pylist()
    assert want == values
    got = list(parquet_values.chunk_values(io.BytesIO(out.getvalue()), chunk, 40, 1, chunk.compression, 10 ** 6))
    assert got == want
    got = list(parquet_values.chunk_values(io.BytesIO(out.getvalue()), chunk, 40, 1, chunk.compression, 10_000))
    refused = [k for k, g in enumerate(got) if isinstance(g, parquet_values.Refused)]
    if compression != "lz4":  # decompressed as read (never whole): only the value over the allowance refused
        assert got == [parquet_values.Refused(60_000) if k == 30 else v for k, v in enumerate(values)]
        return
    if options.get("use_dictionary", True):  # all in one dictionary page, over the room
        assert refused == [k for k, v in enumerate(values) if v is not None], refused
    elif options.get("data_page_version") == "2.0":
        assert refused == [k for k in range(30, 40) if values[k] is not None], refused
    else:
        assert refused == list(range(30, 40)), refused
    assert all(g.why and "decompressed whole" in g.why and parquet_values.PAGE_REFUSED in g.why
               and "row_group_size" in g.why for g in got if isinstance(g, parquet_values.Refused))
    assert [g for k, g in enumerate(got) if k not in refused] == [v for k, v in enumerate(values) if k not in refused]


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_a_row_group_of_zstd_photos_is_built_read_page_by_page(tmp_path: Path, monkeypatch, compression: str):
    """pyarrow's zstd (or gzip) table of photos, one row group over what a whole read may hold: it
    was read whole by pyarrow; now its image column is read a page at a time (the other columns a
    few rows at a time), never the image column through pyarrow, every item as the whole read built
    it."""
    rows = [_photo(700 + i, 64) for i in range(24)]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"image": pa.array(rows, pa.binary()), "caption": [f"c{i}" for i in range(24)]}), path,
                   compression=compression, write_batch_size=4, data_page_size=1)
    whole = [(type(i).__name__, i.key, i.data) for i in _items(tmp_path)]
    assert [w[2] for w in whole] == rows
    with open(path, "rb") as handle:
        size = hf_parquet.value_bytes(handle, pq.ParquetFile(handle), 0)
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 3 * size)
    read = []
    for method in ("read_row_group", "iter_batches", "read"):
        original = getattr(pq.ParquetFile, method)
        monkeypatch.setattr(pq.ParquetFile, method, lambda self, *a, _o=original, **k:
                            read.append(k.get("columns")) or _o(self, *a, **k))
    assert [(type(i).__name__, i.key, i.data) for i in _items(tmp_path)] == whole
    assert read and not [c for c in read if c is None or "image" in c], read


@pytest.mark.parametrize("compression", ["zstd", "gzip", "brotli"])
def test_a_dictionary_page_over_the_room_is_read_as_its_values_are_asked_for(compression: str):
    """pyarrow's zstd (gzip, brotli) table of photos in one dictionary page over a row's room (a
    126.5 MB one of 130 photos was refused whole, each row): its page decompressed as read, each
    value pyarrow's."""
    rows = [_photo(900 + i, 64) for i in range(12)]
    out = io.BytesIO()
    pq.write_table(pa.table({"image": pa.array(rows, pa.binary())}), out, compression=compression)
    chunk = pq.ParquetFile(io.BytesIO(out.getvalue())).metadata.row_group(0).column(0)
    assert chunk.has_dictionary_page
    allowance = max(len(r) for r in rows) + 10  # a row's room: 4 values, the page 12
    got = list(parquet_values.chunk_values(io.BytesIO(out.getvalue()), chunk, len(rows), 1, chunk.compression,
                                           allowance))
    assert got == rows


def _zeros_file(compression: str, value: int, tail: bytes | None = None) -> bytes:
    """A bomb as pyarrow writes it: 4 row groups of 3 pages of one value of `value` zeros each
    (each then `tail`, in the same page, where given)."""
    rows = [bytes(value)] * 3 if tail is None else [v for _ in range(3) for v in (bytes(value), tail)]
    table = pa.table({"image": pa.array(rows, pa.binary())})
    out = io.BytesIO()
    with pq.ParquetWriter(out, table.schema, compression=compression, use_dictionary=False,
                          write_batch_size=1 if tail is None else 2, data_page_size=1) as writer:
        for _ in range(4):
            writer.write_table(table)
    return out.getvalue()


def _file_values(data: bytes, spent: parquet_values.FileCost, allowance: int) -> list:
    """Each value of the image column of every row group of the file `data`, read page by page,
    the file's cost `spent`."""
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    groups = [meta.row_group(g) for g in range(meta.num_row_groups)]
    return [v for g in groups for v in parquet_values.chunk_values(io.BytesIO(data), g.column(0), g.num_rows, 1,
                                                                    g.column(0).compression, allowance, spent=spent)]


@pytest.mark.parametrize("compression", ["brotli", "zstd", "gzip", "snappy", "lz4"])
def test_pages_of_zeros_over_the_allowance_are_never_decompressed(compression: str):
    """A bomb as pyarrow writes it (row groups of pages of one value of zeros each, within a row's
    room, over what a value may hold): each page was decompressed whole in C before its value's
    length was looked at (a 38 KB brotli file took 29 CPU-s; a snappy or lz4 page within the room
    still was, 9 MB of a 100 KB file); its length is read from the page's stream head (snappy and
    lz4: its head alone decoded, in Python), the page's last value never decompressed."""
    value = 3_000_000
    data = _zeros_file(compression, value)
    spent = parquet_values.FileCost(stored=len(data))
    assert _file_values(data, spent, 1_000_000) == [parquet_values.Refused(value)] * 12
    assert spent.c_bytes < 1000, spent.c_bytes


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
def test_the_file_budget_bounds_bytes_passed_over_not_values_handed_on(compression: str, monkeypatch):
    """Bytes decompressed in C are charged to the file (`FileCost.c_bytes`) where nothing is handed
    on from them: a value over what a row may hold passed over (its page's next value read), past
    `c_most` the rest `Refused`, costly. A value handed on is not: the whole read of a row group
    within the budget decompresses it alike (an honest zstd file of 200 flat-colour 2048x2048 BMPs
    in 10 row groups: 2.5 GB from 250 KB, 114 rows were refused)."""
    monkeypatch.setattr(parquet_values, "C_BYTES_FLOOR", 7_000_000)
    monkeypatch.setattr(parquet_values, "C_BYTES_PER_STORED", 0)
    value = 3_000_000
    data = _zeros_file(compression, value)
    assert _file_values(data, parquet_values.FileCost(stored=len(data)), 4_000_000) == [bytes(value)] * 12
    data = _zeros_file(compression, value, tail=b"tail")
    got = _file_values(data, parquet_values.FileCost(stored=len(data)), 1_000_000)
    assert got[:4] == [parquet_values.Refused(value), b"tail"] * 2, got[:4]
    assert all(isinstance(v, parquet_values.Refused) for v in got[4:]), got[4:]  # too large, or costly
    assert all("decompress" in v.why for v in got[5::2]), got[5::2]  # each tail: past the file's budget


def test_an_honest_file_of_flat_colour_bitmaps_is_read_whole_in_its_file_budget(monkeypatch):
    """pyarrow's zstd file of flat-colour BMPs (Pillow's; zstd shrinks each 5,700 times), row
    groups of several: the file's C budget (1 GiB, and 64 bytes a stored byte: here scaled down)
    counted every value handed on, refusing the rows past it; each value is pyarrow's."""
    from PIL import Image

    def bmp(i: int) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (512, 512), (i, 255 - i, 40)).save(out, "BMP")
        return out.getvalue()

    rows = [bmp(i) for i in range(20)]
    out = io.BytesIO()
    pq.write_table(pa.table({"image": pa.array(rows, pa.binary())}), out, compression="zstd", row_group_size=5)
    monkeypatch.setattr(parquet_values, "C_BYTES_FLOOR", 4 * len(rows[0]))
    assert pq.read_table(io.BytesIO(out.getvalue())).column("image").to_pylist() == rows
    assert _file_values(out.getvalue(), parquet_values.FileCost(stored=len(out.getvalue())), 1 << 20) == rows


@pytest.mark.parametrize("path", ["whole", "paged"])
def test_a_files_groups_decompress_within_its_budget_of_its_stored_bytes(tmp_path: Path, monkeypatch, path: str):
    """pyarrow's brotli file of 4 groups of a page of four 1 MB values of zeros (20,700 times its
    773 bytes), each group within the memory budget: every value was handed on whatever the file
    (an 18,793-byte one 3.58 GiB, 8.2 CPU-s), read whole or page by page. The file's groups may
    decompress `INFLATED_PER_STORED` a stored byte (here 10,000, no floor): its first group is
    read, the rest `parquet_value_too_costly`; an honest zstd file of flat-colour BMPs (4,500 times
    its bytes) is read whole."""
    from PIL import Image
    from sources import parquet_inflation, parquet_paged

    def bmp(i: int) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (512, 512), (i, 255 - i, 40)).save(out, "BMP")
        return out.getvalue()

    monkeypatch.setattr(parquet_inflation, "INFLATED_FLOOR", 0)
    monkeypatch.setattr(parquet_inflation, "INFLATED_PER_STORED", 10_000)
    paged = []
    if path == "paged":  # a group over a quarter of it read whole: its image column a value at a time
        monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 10_000_000)
        made = parquet_paged.paged_batches
        monkeypatch.setattr(parquet_paged, "paged_batches", lambda *a, **k: paged.append(1) or made(*a, **k))
    table = pa.table({"image": pa.array([bytes(1_000_000)] * 4, pa.binary())})
    with pq.ParquetWriter(tmp_path / "train.parquet", table.schema, compression="brotli", use_dictionary=False,
                          write_batch_size=4) as writer:
        for _ in range(4):
            writer.write_table(table)
    items = _items(tmp_path)
    assert [getattr(i, "data", None) for i in items[:4]] == [bytes(1_000_000)] * 4
    assert [getattr(i, "reason", None) for i in items[4:]] == ["parquet_value_too_costly"] * 12, items[4:]
    assert "not read, nor any later group" in items[-1].detail, items[-1].detail
    assert len(paged) == (path == "paged")
    rows = [bmp(i) for i in range(20)]
    pq.write_table(pa.table({"image": pa.array(rows, pa.binary())}), tmp_path / "train.parquet",
                   compression="zstd", row_group_size=5)
    assert [i.data for i in _items(tmp_path)] == rows


def _held_whole(monkeypatch) -> list[tuple[int, int]]:
    """(stored, size) of each page decompressed whole (`parquet_codecs.WholePage`) from here on."""
    held = []
    made = parquet_codecs.WholePage

    class Counted(made):
        def __init__(self, stored, size, *args, **kwargs):
            held.append((len(stored), size))
            super().__init__(stored, size, *args, **kwargs)

    monkeypatch.setattr(parquet_codecs, "WholePage", Counted)
    return held


def test_a_snappy_page_of_photos_is_decoded_as_read_not_held_whole(monkeypatch):
    """The photo rule: a snappy page over a MiB whose stored bytes are most of its size (photos:
    one element a 64 KiB, cheap to decode as read) is decoded as read though the row's room holds
    it whole: held whole it gains nothing and holds the page beside its values (img2dataset's
    shape, 100 photos of 1.15 MB: 300 MiB peak held whole, 144 so). pyarrow's page of 16 JPEGs;
    a page of gradient BMPs (Pillow's) as large is held whole."""
    from PIL import Image

    def gradient(i: int) -> bytes:
        out = io.BytesIO()
        Image.fromarray(np.tile((np.arange(300) * (i + 1)) % 256, (300, 1)).astype(np.uint8)).save(out, "BMP")
        return out.getvalue()

    held = _held_whole(monkeypatch)
    for rows, whole in [([_photo(40 + i, 300) for i in range(16)], False), ([gradient(i) for i in range(16)], True)]:
        out = io.BytesIO()
        pq.write_table(pa.table({"image": pa.array(rows, pa.binary())}), out, use_dictionary=False)
        chunk = pq.ParquetFile(io.BytesIO(out.getvalue())).metadata.row_group(0).column(0)
        size = chunk.total_uncompressed_size
        assert size > 1 << 20 and (chunk.total_compressed_size * 8 >= size * 7) != whole
        spent = parquet_values.FileCost()
        got = list(parquet_values.chunk_values(io.BytesIO(out.getvalue()), chunk, len(rows), 1, True, size,
                                               spent=spent))
        assert got == rows
        assert bool(held) == whole and (spent.steps == 0) == whole, (held, spent.steps, whole)
        held.clear()


def test_a_page_is_held_whole_only_within_the_room_its_held_dictionary_leaves(monkeypatch):
    """A snappy chunk of a dictionary page then pages of PLAIN values (pyarrow's fallback past its
    dictionary page limit; 2,000 values of 100 KB: 437 MiB peak against 256 MiB): its dictionary
    page, held whole while the chunk is read, was not counted when a data page was judged, both held
    whole at once. Now each page held whole fits the room with the dictionary page beside it; the
    values pyarrow's."""
    rng = np.random.default_rng(3)
    words = [rng.bytes(16) for _ in range(256)]
    rows = [b"".join(words[i] for i in rng.integers(0, 256, 3000)) for _ in range(40)]  # snappy: a third
    out = io.BytesIO()
    pq.write_table(pa.table({"image": pa.array(rows, pa.binary())}), out, write_batch_size=20,
                   dictionary_pagesize_limit=500_000)
    chunk = pq.ParquetFile(io.BytesIO(out.getvalue())).metadata.row_group(0).column(0)
    assert chunk.has_dictionary_page and "PLAIN" in chunk.encodings
    held = _held_whole(monkeypatch)
    allowance = 350_000
    got = list(parquet_values.chunk_values(io.BytesIO(out.getvalue()), chunk, 40, 1, True, allowance))
    assert got == rows
    assert held and held[0][1] > 900_000, held  # its dictionary page, held whole
    assert all(held[0][1] + stored + size <= 4 * allowance for stored, size in held[1:]), held


@pytest.mark.parametrize("codec", ["SNAPPY", "LZ4"])
@pytest.mark.parametrize("off", [1, -1])
def test_a_page_whose_stream_says_another_length_is_refused_before_it_is_decompressed(codec: str, off: int,
                                                                                      monkeypatch):
    """A snappy or lz4 page (pyarrow's, of 8 MB of zeros) whose header says a byte more or less
    than its stream holds: it was decompressed (8 MB made; lz4 twice) before its length was
    checked. Its length is read first (snappy's head; an lz4 stream so compressed, its sequences
    walked, nothing made): a `PageError`, pyarrow's `decompress` never called."""
    size = 8 << 20
    stored = pa.compress(bytes(size), parquet_codecs.PYARROW_CODECS[codec], asbytes=True)
    assert parquet_codecs.WholePage(stored, size, codec).read(size) == bytes(size)
    called = []
    monkeypatch.setattr(pa, "decompress", lambda *a, **k: called.append(a[1]))
    with pytest.raises(parquet_codecs.PageError):
        parquet_codecs.WholePage(stored, size + off, codec)
    assert not called, called


def test_an_lz4_page_is_walked_to_pyarrows_length_and_head():
    """pyarrow's lz4 of a photo, a 16-bit TIFF (Pillow's) and zeros between them: its sequences
    walked (nothing made) give the length pyarrow decompresses it to, and its first bytes decoded
    alone are pyarrow's (a match overlapping what it makes too); a stream cut is a `PageError`."""
    data = _photo(5, 64) + bytes(100_000) + _tiff16(64)
    stored = pa.compress(data, "lz4_raw", asbytes=True)
    assert parquet_codecs.lz4_length(stored) == len(data)
    for count in (0, 1, 5, len(_photo(5, 64)) + 3, 60_000, len(data), len(data) + 9):
        assert parquet_codecs.lz4_head(stored, count) == data[:count]
    with pytest.raises(parquet_codecs.PageError):
        parquet_codecs.lz4_length(stored[:-1])


def test_an_lz4_heads_overlapping_match_is_copied_at_once_and_a_v1_pages_levels_read_to_their_length(monkeypatch):
    """An lz4 match overlapping what it makes (pyarrow's lz4 of zeros: offset 1) was copied a byte
    a Python turn (8 MiB of zeros' head 3.5 CPU-s); and a v1 page's head (its levels, then its one
    value's length) was decoded to what a million levels may take (7 MB) whatever its levels' own
    length said: pyarrow's lz4 page of a million rows, one a 3 MB value over the allowance, the rest
    null, took 1.6 CPU-s. Its levels' length is read first, then those bytes alone."""
    import time

    zeros = bytes(8 << 20)
    spent = time.process_time()
    assert parquet_codecs.lz4_head(pa.compress(zeros, "lz4_raw", asbytes=True), len(zeros)) == zeros
    assert time.process_time() - spent < 0.5  # was 3.5 CPU-s
    rows = 1_000_000
    values = [None] * rows
    values[rows // 2] = bytes(3_000_000)
    out = io.BytesIO()
    pq.write_table(pa.table({"image": pa.array(values, pa.binary())}), out, compression="lz4", use_dictionary=False,
                   write_batch_size=rows, data_page_size=1 << 30, data_page_version="1.0")
    asked, head = [], parquet_codecs.lz4_head
    monkeypatch.setattr(parquet_codecs, "lz4_head", lambda data, count: asked.append(count) or head(data, count))
    chunk = pq.ParquetFile(io.BytesIO(out.getvalue())).metadata.row_group(0).column(0)
    got = list(parquet_values.chunk_values(io.BytesIO(out.getvalue()), chunk, rows, 1, chunk.compression,
                                           1_000_000, spent=parquet_values.FileCost(stored=len(out.getvalue()))))
    assert got[rows // 2] == parquet_values.Refused(3_000_000) and got.count(None) == rows - 1
    assert asked and max(asked) < 100, asked  # the levels' length (4), then it and its bytes and the value's 4
