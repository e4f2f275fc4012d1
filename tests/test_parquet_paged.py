"""A row group whose image column is a page (or dictionary page) of many rows is read with that
column's values taken one at a time from its pages (`parquet_values`, `parquet_paged`), never
decoded whole by pyarrow: pyarrow's and pandas' default writers put a group of up to 1,024 images
in one page, read whole at up to 6 times its size (80 photos of 3 MB: 1.3 GB RSS), and one row
over the budget made its whole group a reject. Files come from the real writers: pyarrow's
`write_table` with its defaults, pandas' `to_parquet` (img2dataset's venv holds pandas), and a
`datasets`-shaped Image struct written by pyarrow as `datasets` does."""

from __future__ import annotations

import io
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sources import hf_parquet, parquet_codecs, parquet_values
from sources.laion import LaionSource
from sources.records import ImageRecord, Reject

from parquet_makers import HF_METADATA, noise_photo as _photo, snappy_length

PANDAS_PYTHON = Path(__file__).resolve().parent.parent / ".venv-img2dataset" / "bin" / "python"


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


class _Counted(io.BytesIO):
    """A file that counts the bytes read from it, and its largest read."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.total = self.largest = 0

    def read(self, size=-1):
        data = super().read(size)
        self.total, self.largest = self.total + len(data), max(self.largest, len(data))
        return data


@pytest.mark.parametrize("options, whole", [({}, 0), ({}, None), ({"compression": "none"}, None)])
def test_rows_pointing_back_far_in_a_dictionary_are_read_without_reading_the_page_again(options, whole):
    """pyarrow's defaults, 40 distinct photos in one dictionary page and 10 later rows repeating
    early ones (a re-uploaded photo): writers number values as they first meet them, later rows
    may point anywhere back. With the kept values evicted, each such row read the page again from
    its start, and past 4 times the rows were refused (an honest 118 MB page: 4 rows lost as
    `row_group_too_large`). Each value's place is noted on the first pass; a row pointing back
    reads from there: every row is pyarrow's value, the file read once and 192 KiB more a row
    pointing back (the 64 KiB block it lies in, 64 KiB from the nearest note, its bytes)."""
    rng = np.random.default_rng(1)
    values = [rng.bytes(9000) for _ in range(40)] + [None] * 10
    for k in range(10):
        values[40 + k] = values[(7 * k) % 12]
    values[20] = values[35]  # and one pointing forward again after
    out = io.BytesIO()
    pq.write_table(pa.table({"image": pa.array(values, pa.binary())}), out, **options)
    counted = _Counted(out.getvalue())
    chunk = pq.ParquetFile(io.BytesIO(out.getvalue())).metadata.row_group(0).column(0)
    assert chunk.encodings[0] in ("PLAIN", "PLAIN_DICTIONARY", "RLE_DICTIONARY") and chunk.dictionary_page_offset
    got = list(parquet_values.chunk_values(counted, chunk, 50, 1, chunk.compression == "SNAPPY", 10 ** 6,
                                           kept=20000, whole=whole))
    assert got == values
    assert counted.total < len(out.getvalue()) + 11 * 3 * parquet_values.SNAPPY_WINDOW, counted.total


@pytest.mark.parametrize("compression", ["none", "snappy"])
def test_a_pages_levels_length_past_what_its_rows_can_hold_is_refused_unread(compression):
    """A v1 page's definition levels are its 4-byte length, then the levels: a length patched to
    the page's size (a 29 MB file, 600 MB page) was read at once (1879 MiB peak against a 256 MiB
    budget). Levels of `count` values of width w hold at most count * (6 + w) bytes: a length past
    that is `PagedValuesError` (the file's bad_parquet), nothing of it read."""
    values = [None if i % 5 == 0 else bytes([i]) * 3000 for i in range(30)]
    out = io.BytesIO()
    pq.write_table(pa.table({"image": pa.array(values, pa.binary())}), out, use_dictionary=False, compression="none")
    data = bytearray(out.getvalue())
    chunk = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(0).column(0)
    assert list(parquet_values.chunk_values(io.BytesIO(bytes(data)), chunk, 30, 1, False, 10 ** 6)) == values
    from sources import parquet_pages
    header = parquet_pages.page_layout(io.BytesIO(bytes(data)), chunk.data_page_offset).header
    body = chunk.data_page_offset + header.size
    assert int.from_bytes(data[body: body + 4], "little") < 30
    data[body: body + 4] = (header.uncompressed_page_size - 8).to_bytes(4, "little")
    if compression == "snappy":  # the same page stored as snappy (pyarrow's default codec)
        values_out = io.BytesIO()
        pq.write_table(pa.table({"image": pa.array(values, pa.binary())}), values_out, use_dictionary=False)
        page = bytes(data[body: body + header.uncompressed_page_size])
        import pyarrow as _pa
        packed = _pa.compress(page, codec="snappy", asbytes=True)
        chunk_s = pq.ParquetFile(io.BytesIO(values_out.getvalue())).metadata.row_group(0).column(0)
        layout = parquet_pages.page_layout(io.BytesIO(values_out.getvalue()), chunk_s.data_page_offset)
        assert layout.header.uncompressed_page_size == header.uncompressed_page_size
        raw = bytearray(values_out.getvalue())
        start = chunk_s.data_page_offset + layout.header.size
        stored = layout.header.compressed_page_size
        if len(packed) != stored:
            pytest.skip("the patched page compresses to another size")
        raw[start: start + stored] = packed
        data, chunk = raw, chunk_s
    counted = _Counted(bytes(data))
    with pytest.raises(parquet_values.PagedValuesError, match="levels"):
        list(parquet_values.chunk_values(counted, chunk, 30, 1, compression == "snappy", 10 ** 6, whole=0))
    assert counted.largest < 1 << 20 and counted.total < 4 * len(data)


def _snappy_far(data: bytes, period: int, literal: int, target: int) -> bytes:
    """`data` (each `period` bytes its `literal` first bytes new, the rest as `period` bytes before)
    as raw snappy whose copies reach `period` bytes back, across 64 KiB blocks as no writer's do,
    padded (copies split, some with 4-byte offsets) to `target` bytes."""
    def literal_of(piece: bytes) -> bytes:
        n = len(piece) - 1
        return (bytes([n << 2]) if n < 60 else bytes([62 << 2]) + n.to_bytes(3, "little")) + piece

    copies = []  # (position, length) of each copy
    out = [literal_of(data[:period])]
    for start in range(period, len(data), period):
        out.append(literal_of(data[start: start + literal]))
        at = start + literal
        while at < min(start + period, len(data)):
            n = min(64, start + period - at, len(data) - at)
            copies.append(len(out))
            out.append((n, at))
            at += n
    varint = snappy_length(len(data))
    size = len(varint) + sum(len(o) if isinstance(o, bytes) else 3 for o in out)
    extra = target - size
    assert extra >= 4, (size, target)
    wide = {0: 0, 1: 2, 2: 1}[extra % 3]  # 4-byte offsets (2 bytes more each) to set the rest
    splits = (extra - 2 * wide) // 3
    encoded = bytearray(varint)
    for piece in out:
        if isinstance(piece, bytes):
            encoded += piece
            continue
        n, at = piece
        parts = [n]
        while splits and parts[-1] > 1:
            parts[-1:] = [1, parts[-1] - 1]
            splits -= 1
        for part in parts:
            if wide:
                encoded += bytes([((part - 1) << 2) | 3]) + period.to_bytes(4, "little")
                wide -= 1
            else:
                encoded += bytes([((part - 1) << 2) | 2]) + period.to_bytes(2, "little")
    assert len(encoded) == target and not splits and not wide, (len(encoded), target, splits, wide)
    return bytes(encoded)


def test_a_dictionary_whose_snappy_copies_reach_across_blocks_costs_a_bounded_decoding(tmp_path: Path, monkeypatch):
    """A hostile writer's snappy dictionary page whose copies reach back across its 64 KiB blocks:
    a row pointing back cannot start decoding at the value's block, so the page is decoded again
    from its start. Each value is still the file's, until 4 times the page's size is decoded so:
    the rows past it are `parquet_value_too_costly` (reading them costs past a bound; nothing in them
    is too large, and their reject no longer says so), the group's other rows built."""
    common = np.random.default_rng(2).bytes(8996)
    values = [i.to_bytes(4, "little") + common for i in range(40)]  # 9,000 bytes each
    rows = values + [values[0], values[39]] * 10
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"image": pa.array(rows, pa.binary()), "caption": [f"c{i}" for i in range(60)]}), path)
    data = bytearray(path.read_bytes())
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(0)
    from sources import parquet_pages
    header = parquet_pages.page_layout(io.BytesIO(bytes(data)), chunk.dictionary_page_offset).header
    body = chunk.dictionary_page_offset + header.size
    page = pa.decompress(bytes(data[body: body + header.compressed_page_size]), header.uncompressed_page_size,
                         codec="snappy", asbytes=True)
    data[body: body + header.compressed_page_size] = _snappy_far(page, 9004, 8, header.compressed_page_size)
    path.write_bytes(bytes(data))
    assert pq.read_table(path).column("image").to_pylist() == rows  # a file pyarrow reads
    got = list(parquet_values.chunk_values(io.BytesIO(bytes(data)), chunk, 60, 1, True, 10 ** 6, kept=0, whole=0))
    refused = [g for g in got if isinstance(g, parquet_values.Refused)]
    assert got[:40 + 4] == rows[:44] and 4 < len(refused) < 20, got[40:]
    assert all(g == r for g, r in zip(got, rows) if not isinstance(g, parquet_values.Refused))
    assert all(r.why and "too large" not in r.why for r in refused)
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 64000)  # paged, 8,000 bytes of values kept: none
    items = _items(tmp_path)
    assert len(items) == 60
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [i.reason for i in rejects] == ["parquet_value_too_costly"] * len(refused), [i.detail for i in rejects]
    assert "out of order" in rejects[0].detail and "too large" not in rejects[0].detail and "not read" in rejects[0].detail
    assert [i.data for i in items if isinstance(i, ImageRecord)] == [g for g in got if isinstance(g, bytes)]


def _costly_snappy(page: bytes, start: int, length: int, target: int) -> bytes:
    """Raw snappy of `page`, whose bytes `start` to `start + length` are all b"A", as a hostile
    writer may: those as a 4-byte copy and a 1-byte literal in turn (no element repeated, 2.5
    bytes an element), padded to `target` bytes by literal lengths written long."""
    def literal(piece: bytes, extra: int = 0) -> bytes:
        n = len(piece) - 1
        return (bytes([n << 2]) if not extra else bytes([(59 + extra) << 2]) + n.to_bytes(extra, "little")) + piece

    head = b"".join(literal(page[i: min(i + 60, start + 1)]) for i in range(0, start + 1, 60))
    tail = b"".join(literal(page[i: i + 60]) for i in range(start + length, len(page), 60))
    pairs, rest = divmod(length - 1, 5)
    varint = snappy_length(len(page))
    base = len(varint) + len(head) + 4 * pairs + 2 * rest + len(tail)
    deficit = target - base
    assert 0 <= deficit <= 4 * pairs, (base, target)
    body = bytearray()
    for i in range(pairs):
        extra = min(4, deficit)
        deficit -= extra
        body += bytes([0x01, 0x01]) + literal(b"A", extra)
    body += literal(b"A") * rest
    stream = bytes(varint) + head + bytes(body) + tail
    assert len(stream) == target
    return stream


@pytest.mark.parametrize("allowance", ["read", "refused"])
def test_a_snappy_page_of_many_tiny_elements_costs_a_bounded_decoding(tmp_path: Path, monkeypatch, allowance: str):
    """A hostile writer's snappy page (valid: pyarrow reads it) whose 2 MiB value is a 4-byte copy
    and a 1-byte literal in turn: the Python decoder took an element every 2.5 bytes, unbounded (a
    56 MB value of 1-byte literals: 15.9 CPU-s). A chunk's snappy decoding stops past one element
    a 3 bytes decoded (read or passed over) and its slack (2**18, here 2**16 to keep the value
    small): the rows not yet read are `parquet_value_too_costly` (nothing in them too large), the
    row before built; honest pages of runs of one element (zeros, flat colour) are decoded a run
    at a time."""
    monkeypatch.setattr(parquet_values, "STEP_SLACK", 1 << 16)
    small = [_photo(i, 16) for i in range(3)]
    rows = [small[0], np.random.default_rng(3).bytes(2 << 20), small[1], small[2]]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"image": pa.array(rows, pa.binary()), "caption": ["a", "b", "c", "d"]}), path,
                   use_dictionary=False)
    data = bytearray(path.read_bytes())
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(0)
    from sources import parquet_pages
    header = parquet_pages.page_layout(io.BytesIO(bytes(data)), chunk.data_page_offset).header
    body = chunk.data_page_offset + header.size
    page = bytearray(pa.decompress(bytes(data[body: body + header.compressed_page_size]),
                                   header.uncompressed_page_size, codec="snappy", asbytes=True))
    start = page.index(rows[1][:64])
    page[start: start + len(rows[1])] = b"A" * len(rows[1])
    data[body: body + header.compressed_page_size] = _costly_snappy(bytes(page), start, len(rows[1]),
                                                                    header.compressed_page_size)
    path.write_bytes(bytes(data))
    assert pq.read_table(path).column("image").to_pylist()[1] == b"A" * len(rows[1])  # pyarrow reads it
    limit = 4 << 20 if allowance == "read" else 1 << 20
    got = list(parquet_values.chunk_values(io.BytesIO(bytes(data)), chunk, 4, 1, True, limit, whole=0))
    assert got[0] == small[0] and all(isinstance(g, parquet_values.Refused) for g in got[1:]), got
    assert all(g.why and "too large" not in g.why for g in got[2:])
    assert got[1] == (parquet_values.Refused(len(rows[1])) if allowance == "refused" else got[2])
    # paged, and its page (4 MB stored and decoded) over half a row's allowance: decoded as read
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 10 << 20 if allowance == "read" else 4 << 20)
    items = _items(tmp_path)
    assert [getattr(i, "reason", None) for i in items] == [
        None, "row_group_too_large" if allowance == "refused" else "parquet_value_too_costly",
        "parquet_value_too_costly", "parquet_value_too_costly"], [getattr(i, "detail", "") for i in items]
    assert items[0].data == small[0]


def test_runs_of_one_element_are_decoded_at_once():
    """pyarrow's snappy of 600 KB of zeros and of a flat-colour bitmap's pixels: a few elements a
    64 KiB block (its copies of 64 bytes one run), decoded to the same bytes."""
    for data in (bytes(600_000), bytes([10, 200, 30]) * 200_000):
        raw = pa.compress(data, codec="snappy", asbytes=True)
        stream = parquet_values._Snappy(parquet_values._Region(io.BytesIO(raw), 0, len(raw)), len(data))
        assert stream.read(len(data)) == data
        assert stream.cost.steps < 10 * (len(data) // parquet_values.SNAPPY_WINDOW + 1), stream.cost.steps


def _dithered_bmps(count: int, size: int) -> list[bytes]:
    """Palette BMPs (256 colours, Floyd-Steinberg dithered) of a noisy gradient, as GIF-like
    renders and scans are: pyarrow's snappy codes them at ~6 bytes an element."""
    from PIL import Image
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for i in range(count):
        a = np.stack([(xx * 0.37 + i) % 256, (yy * 0.45 + 2 * i) % 256, ((xx + yy) * 0.2) % 256], -1)
        a = (a + rng.normal(0, 3, a.shape)).clip(0, 255).astype(np.uint8)
        b = io.BytesIO()
        Image.fromarray(a).convert("P", palette=Image.ADAPTIVE, dither=Image.FLOYDSTEINBERG).save(b, "BMP")
        out.append(b.getvalue())
    return out


def _tiff16(size: int) -> bytes:
    """An uncompressed 16-bit grayscale TIFF (a scanner's) of a noisy gradient."""
    from PIL import Image
    yy, xx = np.mgrid[0:size, 0:size]
    rng = np.random.default_rng(1)
    grey = (((xx + yy) * 0.3 + rng.normal(0, 3, (size, size))) % 256).astype(np.uint16)
    a = (grey * 257).astype(np.uint16)
    b = io.BytesIO()
    Image.fromarray(a).save(b, "TIFF")
    return b.getvalue()


@pytest.mark.parametrize("dictionary", [True, False])
def test_honest_raw_images_in_a_snappy_chunk_are_read_past_the_slack(monkeypatch, dictionary: bool):
    """pyarrow's snappy of dithered palette BMPs takes an element every ~6 bytes: the bound of one
    a 8 bytes refused the chunk's later rows once past its slack (300 such BMPs of 512x512: 286
    `parquet_value_too_costly`). Here the slack is made small to reach the bound in a tiny chunk."""
    monkeypatch.setattr(parquet_values, "STEP_SLACK", 1 << 10)
    rows = _dithered_bmps(4, 256)
    out = io.BytesIO()
    pq.write_table(pa.table({"image": pa.array(rows, pa.binary())}), out, use_dictionary=dictionary)
    chunk = pq.ParquetFile(io.BytesIO(out.getvalue())).metadata.row_group(0).column(0)
    got = list(parquet_values.chunk_values(io.BytesIO(out.getvalue()), chunk, len(rows), 1, True, 10 ** 7, whole=0))
    assert got == rows, [type(g).__name__ for g in got]


def test_a_files_honest_raw_images_are_read_past_the_floor_of_its_budget(monkeypatch):
    """A file's elements decoded in Python were bounded by an absolute 2**26 (`FILE_STEPS`): a
    372 MB file of 360 16-bit TIFFs (one element a 3.9 stored bytes) had 107 rows refused. The
    bound grows with the bytes the file stores (one element a `STORED_BYTES_PER_STEP`, as a
    snappy element takes at least 2): here the floor is made tiny to reach it in a small file."""
    monkeypatch.setattr(parquet_values, "FILE_STEPS", 1000)
    rows = [_tiff16(120 + i) for i in range(4)]
    out = io.BytesIO()
    pq.write_table(pa.table({"image": pa.array(rows, pa.binary())}), out, use_dictionary=False)
    chunk = pq.ParquetFile(io.BytesIO(out.getvalue())).metadata.row_group(0).column(0)
    spent = parquet_values.FileCost(stored=len(out.getvalue()))
    got = list(parquet_values.chunk_values(io.BytesIO(out.getvalue()), chunk, len(rows), 1, True, 10 ** 7, whole=0,
                                           spent=spent))
    assert got == rows, [type(g).__name__ for g in got]
    assert spent.steps > 1000


@pytest.mark.parametrize("dictionary", [True, False])
def test_one_oversized_raw_image_is_refused_by_its_length_and_the_rows_after_it_read(monkeypatch, dictionary: bool):
    """A 16-bit TIFF over what a row may hold among JPEGs: passing over it was charged one element
    a 256 bytes though a raw image is ~6, so every later row of its group was too costly (300
    JPEGs and a 72 MB TIFF: rows 100-299), and on a dictionary page the TIFF's own row came back
    with no length. Now it is `Refused(its length)` and the rows after it are read."""
    monkeypatch.setattr(parquet_values, "STEP_SLACK", 1 << 10)
    rows = [_photo(i, 24) for i in range(8)]
    rows[3] = _tiff16(200)
    out = io.BytesIO()
    pq.write_table(pa.table({"image": pa.array(rows, pa.binary())}), out, use_dictionary=dictionary)
    chunk = pq.ParquetFile(io.BytesIO(out.getvalue())).metadata.row_group(0).column(0)
    got = list(parquet_values.chunk_values(io.BytesIO(out.getvalue()), chunk, len(rows), 1, True, 40000, whole=0))
    assert got[3] == parquet_values.Refused(len(rows[3]))
    assert got[:3] + got[4:] == rows[:3] + rows[4:], [type(g).__name__ for g in got]


@pytest.mark.parametrize("version", ["1.0", "2.0"])  # v1 (pyarrow's default): levels inside the snappy stream
def test_null_rows_after_a_costly_stop_are_null(monkeypatch, version):
    """Rows whose definition levels say null are None (a missing image), not too costly, after a
    chunk's decoding is stopped as too costly (a v1 page's levels decoded all the same: they are
    bounded by `levels_bound`)."""
    monkeypatch.setattr(parquet_values, "STEP_SLACK", 0)
    monkeypatch.setattr(parquet_values, "STEP_BYTES", 1 << 30)
    pictures = _dithered_bmps(3, 64)
    rows = [pictures[0], None, pictures[1], None, pictures[2], None]
    out = io.BytesIO()
    pq.write_table(pa.table({"image": pa.array(rows, pa.binary())}), out, use_dictionary=False,
                   data_page_version=version)
    chunk = pq.ParquetFile(io.BytesIO(out.getvalue())).metadata.row_group(0).column(0)
    got = list(parquet_values.chunk_values(io.BytesIO(out.getvalue()), chunk, len(rows), 1, True, 10 ** 7, whole=0))
    assert [g is None for g in got] == [r is None for r in rows], got
    assert all(isinstance(g, parquet_values.Refused) and g.why for g in got[::2]), got


@pytest.mark.parametrize("compression", ["snappy", "gzip", "brotli", "lz4", "zstd"])
def test_a_page_decompressing_shorter_than_its_header_says_is_a_paged_values_error(compression):
    """A page whose header says 2,900 bytes more than its stream decompresses to (pyarrow refuses
    it: 'Page didn't decompress to expected size') is a `PageError` (its file's `bad_parquet`),
    never a value carrying the unwritten tail of pyarrow's buffer."""
    from sources import parquet_pages

    value = np.random.default_rng(1).bytes(1000)
    out = io.BytesIO()
    pq.write_table(pa.table({"image": pa.array([value], pa.binary())},
                            schema=pa.schema([pa.field("image", pa.binary(), nullable=False)])),
                   out, compression=compression, use_dictionary=False)
    data = bytearray(out.getvalue())
    chunk = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(0).column(0)
    header = parquet_pages.page_layout(io.BytesIO(bytes(data)), chunk.data_page_offset).header
    said, more = header.uncompressed_page_size * 2, (header.uncompressed_page_size + 2900) * 2  # zigzag i32 varints
    old, new = bytes([said & 0x7F | 0x80, said >> 7]), bytes([more & 0x7F | 0x80, more >> 7])
    at = chunk.data_page_offset + bytes(data[chunk.data_page_offset:]).index(b"\x15" + old) + 1
    data[at: at + 2] = new  # its uncompressed_page_size (field 2, after field 1)
    damaged = io.BytesIO(bytes(data))
    with pytest.raises(OSError):  # "Page didn't decompress to expected size" (zstd: "Corrupt ZSTD")
        pq.read_table(io.BytesIO(bytes(data)))
    with pytest.raises(parquet_codecs.PageError):
        list(parquet_values.chunk_values(damaged, chunk, 1, 0, chunk.compression, 10 ** 6))
