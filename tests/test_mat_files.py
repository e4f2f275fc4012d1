"""sources.mat_files: MAT files judged before scipy reads them."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from mat_forge import EMPTY, MX_CELL, MX_STRUCT, MX_UINT8, MI_UINT8, element, mat_file, matrix, struct_body
from scipy import sparse
from scipy.io import loadmat, savemat

from sources.mat_files import MatTooLarge, MatUnreadable, mat_objects, read_mat_variable


def _held(value) -> int:
    """The cells and fields a variable read by scipy holds (squeeze_me=False), counted on what it built."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        first = value.flat[0] if value.size else None
        if hasattr(first, "_fieldnames"):
            return value.size * (len(first._fieldnames) + 1) + sum(
                _held(getattr(s, f)) for s in value.flat for f in s._fieldnames)
        return value.size + sum(_held(v) for v in value.flat)
    return 0


WRITTEN = {
    "numbers": np.arange(12.0).reshape(3, 4),
    "text": "a string",
    "cell": np.array([[np.zeros(3), "ab", sparse.csc_matrix(np.eye(3)), np.zeros((0, 0))]], dtype=object),
    "nested": {"a": 1, "cells": np.array([[np.zeros(2), np.ones(3)]], dtype=object), "inner": {"u": "v", "w": 2}},
    "struct_array": np.array([(1, "n1", np.arange(3)), (2, "n2", np.zeros(0)), (3, "n3", 7)],
                             dtype=[("ID", object), ("W", object), ("c", object)]).reshape(-1, 1),
    "empty_cell": np.empty((0, 0), object),
    "logical": np.array([True, False]),
}


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("name", sorted(WRITTEN))
def test_objects_counted_from_headers_match_what_scipy_builds(name: str, compressed: bool):
    """Written by scipy's savemat (MATLAB's v5 layout, compressed as -v7 is or not): the count made
    from the headers alone is what scipy's loadmat builds, and the variable reads back."""
    buffer = io.BytesIO()
    savemat(buffer, {"other": np.zeros(2), name: WRITTEN[name]}, do_compression=compressed)
    data = buffer.getvalue()
    built = loadmat(io.BytesIO(data), struct_as_record=False, squeeze_me=False)[name]
    assert mat_objects(data, name, 10**6, 1 << 30) == 1 + _held(built)
    assert mat_objects(data, "absent", 10**6, 1 << 30) == 0
    read = read_mat_variable(data, name, 1 << 30, 1000, squeeze_me=False)
    assert type(read) is type(built) and read.shape == built.shape


def test_a_small_file_declaring_millions_of_cells_is_refused_before_scipy_builds_them():
    """A 2 KB file whose cell holds 200,000 empty matrices inflates to 1.6 MB, within any inflation
    budget, but scipy made an ndarray of each (old code read it: ~35 MB and a second here; at 8M
    cells, a 93 KB file, 1.3 GB and 19 s). Counted from the headers, it is refused by name."""
    cell = matrix(MX_CELL, [200_000, 1], b"bomb", EMPTY * 200_000)
    data = mat_file(cell)
    assert len(data) < 4096
    assert mat_objects(data, "bomb", 1000, 1 << 30) > 1000
    with pytest.raises(MatTooLarge, match=r"bomb holds more than 1000 cells and fields"):
        read_mat_variable(data, "bomb", 64 << 20, 1000)
    # a cell that declares a billion elements and holds none: scipy would allocate 8 GB of slots
    declared = mat_file(matrix(MX_CELL, [1_000_000_000, 1], b"bomb", b""))
    with pytest.raises(MatTooLarge):
        read_mat_variable(declared, "bomb", 64 << 20, 1000)


def test_headers_cut_short_or_malformed_are_unreadable_not_a_crash():
    seg = matrix(MX_UINT8, [2, 2], b"", element(MI_UINT8, bytes(4)))
    variable = matrix(MX_STRUCT, [1, 1], b"s", struct_body([b"Segmentation"], seg))
    whole = mat_file(variable)
    assert read_mat_variable(whole, "s", 1 << 20, 100).Segmentation.shape == (2, 2)
    cut = variable[:-20]
    with pytest.raises(MatUnreadable):
        read_mat_variable(mat_file(cut), "s", 1 << 20, 100)
    negative = variable.replace(struct.pack("<2i", 1, 1), struct.pack("<2i", -1, 1), 1)
    with pytest.raises(MatUnreadable):
        read_mat_variable(mat_file(negative), "s", 1 << 20, 100)
