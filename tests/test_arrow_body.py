"""The decompressed size of a compressed Arrow IPC file, judged from its headers before it is read,
against files pyarrow writes (zstd, dictionaries) and files reshaped the way a hostile or broken
writer reshapes them (the footer is what the file reader follows)."""

from __future__ import annotations

import struct
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from trainer.data import UsageError, check_compressed_size, decompressed_bytes

BUDGET = 1 << 20


def _allocated_on_read(path: Path) -> int:
    """What `ipc.open_file(...).read_all()` allocates: the figure the check must not under-count."""
    before = pa.total_allocated_bytes()
    with pa.memory_map(str(path)) as source:
        table = ipc.open_file(source).read_all()
        grown = pa.total_allocated_bytes() - before
        del table
    return grown


def _write_zstd(table: pa.Table, path: Path) -> Path:
    with ipc.new_file(str(path), table.schema, options=ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(table)
    return path


def test_a_compressed_dictionary_batch_is_counted_and_refused_past_the_budget(tmp_path: Path):
    """Old code summed only record batches: a 4 MiB dictionary value, zstd-compressed to a few
    hundred bytes, was judged 12 bytes and accepted, and reading it allocated 4 MiB."""
    big = "x" * (4 << 20)
    table = pa.table({"k": pa.DictionaryArray.from_arrays(pa.array([0, 0, 0], pa.int32()), pa.array([big]))})
    path = _write_zstd(table, tmp_path / "dict.arrow")
    assert path.stat().st_size < 64 * 1024
    declared = decompressed_bytes(str(path))
    assert declared >= 4 << 20 and declared >= _allocated_on_read(path) - 1024  # a few headers aside
    with pytest.raises(UsageError, match=rf"{path}: its record batches are compressed .* declare {declared} bytes"):
        check_compressed_size(str(path), BUDGET)


def _insert_after_schema(src: Path, dst: Path, insert: bytes) -> Path:
    """`src` with `insert` placed between its schema message and the next, the footer's block
    offsets shifted to match: a file `ipc.open_file` still reads whole, through its footer."""
    data = src.read_bytes()
    footer_len = struct.unpack_from("<i", data, len(data) - 10)[0]
    start = len(data) - 10 - footer_len
    footer = bytearray(data[start:len(data) - 10])
    assert data[8:12] == b"\xff\xff\xff\xff"
    schema_end = 16 + struct.unpack_from("<i", data, 12)[0]
    root = struct.unpack_from("<I", footer, 0)[0]
    vtable = root - struct.unpack_from("<i", footer, root)[0]
    for field in (2, 3):  # Footer.dictionaries, Footer.recordBatches: [Block {offset, metaDataLength, bodyLength}]
        at = struct.unpack_from("<H", footer, vtable + 4 + 2 * field)[0]
        if not at:
            continue
        vector = root + at + struct.unpack_from("<I", footer, root + at)[0]
        for i in range(struct.unpack_from("<I", footer, vector)[0]):
            block = vector + 4 + 24 * i
            struct.pack_into("<q", footer, block, struct.unpack_from("<q", footer, block)[0] + len(insert))
    dst.write_bytes(data[:schema_end] + insert + data[schema_end:start] + bytes(footer) + data[len(data) - 10:])
    return dst


@pytest.mark.parametrize("insert", [b"\xff\xff\xff\xff\x00\x00\x00\x00", b"\xff\xff\xff\xff\x07\x00\x00\x00"],
                         ids=["end_of_stream_before_the_batch", "junk_between_messages"])
def test_the_size_is_judged_from_the_blocks_the_footer_points_to(tmp_path: Path, insert: bytes):
    """Old code walked the file as a stream: an end-of-stream mark after the schema made it count 0,
    8 junk bytes made it raise and the check let the file through; the file reader follows the
    footer and decompressed the whole 4 MiB either way."""
    table = pa.table({"tokens": pa.array([pa.array([0] * (2 << 20), pa.uint16())], pa.large_list(pa.uint16()))})
    plain = _write_zstd(table, tmp_path / "plain.arrow")
    path = _insert_after_schema(plain, tmp_path / "shifted.arrow", insert)
    assert ipc.open_file(str(path)).read_all().equals(table)  # the reader reads it whole
    declared = decompressed_bytes(str(path))
    assert declared == decompressed_bytes(str(plain)) >= 4 << 20
    assert declared >= _allocated_on_read(path) - 1024  # a few headers aside
    with pytest.raises(UsageError, match=rf"{path}: its record batches are compressed .* declare {declared} bytes"):
        check_compressed_size(str(path), BUDGET)


def test_a_block_whose_header_does_not_parse_is_refused_naming_the_file(tmp_path: Path):
    """Fail closed: a header the check cannot read is not left to a reader that may decompress it."""
    table = pa.table({"tokens": pa.array([pa.array([0] * 1024, pa.uint16())], pa.large_list(pa.uint16()))})
    path = _write_zstd(table, tmp_path / "t.arrow")
    data = bytearray(path.read_bytes())
    schema_end = 16 + struct.unpack_from("<i", data, 12)[0]
    data[schema_end + 8:schema_end + 24] = b"\xee" * 16  # the record batch's flatbuffer root and vtable offset
    path.write_bytes(bytes(data))
    with pytest.raises(UsageError, match=rf"{path}: .*headers? .*(do|does) not parse"):
        check_compressed_size(str(path), BUDGET)
