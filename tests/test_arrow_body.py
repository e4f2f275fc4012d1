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
