"""sources.mat_files: MAT files judged before scipy reads them."""

from __future__ import annotations

import io
import re
import struct
import zlib

import numpy as np
import pytest
from mat_forge import (EMPTY, MI_DOUBLE, MI_INT8, MI_MATRIX, MI_UINT8, MI_UINT32, MX_CELL, MX_CHAR, MX_DOUBLE, MX_STRUCT,
                       MX_UINT8, element, mat_file, matrix, struct_body)
from scipy import sparse
from scipy.io import loadmat, savemat

from sources.mat_files import SPARSE_EXTRA_OBJECTS, MatTooLarge, MatUnreadable, mat_objects, read_mat_variable


def _held(value) -> int:
    """The cells and fields a variable read by scipy holds (squeeze_me=False), counted on what it built
    (a sparse matrix weighs `SPARSE_EXTRA_OBJECTS` more)."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        first = value.flat[0] if value.size else None
        if hasattr(first, "_fieldnames"):
            return value.size * (len(first._fieldnames) + 1) + sum(
                _held(getattr(s, f)) for s in value.flat for f in s._fieldnames)
        return value.size + sum(_held(v) for v in value.flat)
    return SPARSE_EXTRA_OBJECTS if sparse.issparse(value) else 0


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


BOMB_CELLS = 200_000


def _bomb(name: bytes = b"bomb") -> bytes:
    """A cell of 200,000 empty matrices: a 2 KB file scipy builds 200,000 ndarrays of."""
    return matrix(MX_CELL, [BOMB_CELLS, 1], name, EMPTY * BOMB_CELLS)


@pytest.mark.parametrize("version", [b"\x01\x01IM", b"\xff\x01IM", b"\x00\x01XX"])
def test_a_header_scipy_reads_as_v5_is_judged_as_v5(version: bytes):
    """scipy reads as MAT v5 any file whose major version byte is 1, and as big-endian any whose
    bytes 126-128 are not `IM`: the old gate called such files no MAT v5 file (0 objects) while scipy
    read the 200,000 cells whole."""
    data = bytearray(mat_file(_bomb()))
    if version.endswith(b"XX"):  # as big-endian, scipy reads the version at byte 124
        data = bytearray(data[:128] + _big_endian_bomb())
        version = b"\x01\x00XX"
    data[124:128] = version
    assert loadmat(io.BytesIO(bytes(data)), variable_names=["bomb"])["bomb"].shape == (BOMB_CELLS, 1)
    with pytest.raises(MatTooLarge, match="bomb holds more than 1000"):
        read_mat_variable(bytes(data), "bomb", 64 << 20, 1000)


def _big_endian_bomb() -> bytes:
    """`_bomb` compressed, big-endian."""
    def element_be(mdtype: int, payload: bytes) -> bytes:
        return struct.pack(">II", mdtype, len(payload)) + payload + bytes(-len(payload) % 8)
    inner = (element_be(6, struct.pack(">II", MX_CELL, 0)) + element_be(5, struct.pack(">2i", BOMB_CELLS, 1))
             + element_be(1, b"bomb") + struct.pack(">II", 14, 0) * BOMB_CELLS)
    return element_be(15, zlib.compress(struct.pack(">II", 14, len(inner)) + inner, 9))


def _double(value: float) -> bytes:
    return matrix(MX_DOUBLE, [1, 1], b"", element(MI_DOUBLE, struct.pack("<d", value)))


def test_a_nested_byte_count_covering_a_sibling_cannot_hide_it():
    """scipy reads a nested matrix by its content, not its byte count: a double whose count also
    covers its sibling hid that sibling (a cell bomb) from the old walker, which jumped by the count.
    Such a matrix is refused; an honest one reads back."""
    honest = matrix(MX_CELL, [1, 2], b"v", _double(1.0) + _double(2.0))
    assert [float(x) for x in read_mat_variable(mat_file(honest), "v", 1 << 20, 100).ravel()] == [1.0, 2.0]
    double, bomb = _double(1.0), _bomb(b"")
    covering = struct.pack("<II", MI_MATRIX, len(double) - 8 + len(bomb)) + double[8:]
    data = mat_file(matrix(MX_CELL, [1, 2], b"v", covering + bomb))
    assert loadmat(io.BytesIO(data), variable_names=["v"])["v"][0, 1].shape == (BOMB_CELLS, 1)
    with pytest.raises(MatUnreadable, match="byte count is not what it holds"):
        read_mat_variable(data, "v", 64 << 20, 1000)


@pytest.mark.parametrize("flags_tag", [struct.pack("<II", 6, 0), struct.pack("<II", 0x00FF0006, 8), struct.pack("<II", 1, 8)])
def test_an_array_flags_tag_is_read_as_scipy_reads_it(flags_tag: bytes):
    """scipy reads the array flags as 8 bytes of tag it ignores and 8 of flags: a flags tag of another
    count or type moved the old walker (0 objects, the variable 'not found') while scipy read it."""
    bomb = _bomb()
    data = mat_file(bomb[:8] + flags_tag + bomb[16:])
    assert loadmat(io.BytesIO(data), variable_names=["bomb"])["bomb"].shape == (BOMB_CELLS, 1)
    assert mat_objects(data, "bomb", 1000, 1 << 30) > 1000
    with pytest.raises(MatTooLarge):
        read_mat_variable(data, "bomb", 64 << 20, 1000)
    small = matrix(MX_CELL, [2, 1], b"v", EMPTY * 2)
    assert read_mat_variable(mat_file(small[:8] + flags_tag + small[16:]), "v", 1 << 20, 100).shape == (2,)


def test_function_handles_and_opaque_objects_are_refused_not_counted_as_leaves():
    """scipy reads a matrix inside a function handle (class 16) and an opaque object (17): the old
    walker counted each as one leaf and scipy built the cell bomb inside."""
    function = matrix(16, [1, 1], b"v", _bomb(b""))
    opaque_body = element(MI_UINT32, struct.pack("<II", 17, 0)) + b"".join(
        element(MI_INT8, text) for text in (b"v", b"MCOS", b"handle")) + _bomb(b"")
    opaque = struct.pack("<II", MI_MATRIX, len(opaque_body)) + opaque_body
    for variable in (function, opaque):
        with pytest.raises(MatUnreadable, match="function handle or object"):
            read_mat_variable(mat_file(variable), "v", 64 << 20, 1000)


def test_a_nested_matrix_of_its_flags_tag_alone_is_unreadable_not_an_index_error():
    """A cell whose last element is a miMATRIX of 8 bytes (its flags tag, no flags) at the end of the
    variable: the old walker raised IndexError, past every caller's handler."""
    tail = struct.pack("<II", MI_MATRIX, 8) + struct.pack("<II", MI_UINT32, 8)
    with pytest.raises(MatUnreadable):
        read_mat_variable(mat_file(matrix(MX_CELL, [2, 1], b"v", EMPTY + tail)), "v", 1 << 20, 100)


def test_sparse_matrices_weigh_what_scipy_builds_for_them():
    """scipy builds a csc_matrix and its 3 arrays of each sparse cell (~939 B measured, not 176):
    each counts `SPARSE_EXTRA_OBJECTS` more than its slot."""
    buffer = io.BytesIO()
    cells = np.empty((100, 1), object)
    cells[:, 0] = [sparse.csc_matrix(np.eye(2)) for _ in range(100)]
    savemat(buffer, {"c": cells})
    assert mat_objects(buffer.getvalue(), "c", 10**6, 1 << 30) == 1 + 100 * (1 + SPARSE_EXTRA_OBJECTS)


def test_a_small_cap_is_named_in_kib():
    with pytest.raises(MatTooLarge, match=r"about 171 KiB as scipy reads them"):
        read_mat_variable(mat_file(_bomb()), "bomb", 64 << 20, 1000)


FLIPPED = """
import io, sys, numpy as np
from scipy.io import savemat
from sources.mat_files import MatUnreadable, read_mat_variable
buffer = io.BytesIO()
savemat(buffer, {"GTcls": {"Segmentation": np.array([[1, 2], [3, 4]], np.uint8), "Boundaries": np.zeros((1, 1))}})
data = bytearray(buffer.getvalue())
data[data.find(bytes([6, 0, 0, 0, 8, 0, 0, 0, 9, 0])) + 9] = 0xFF  # Segmentation: complex, one part, a sibling next
try:
    read_mat_variable(bytes(data), "GTcls", 1 << 20, 100, squeeze_me=False)
except MatUnreadable as exc:
    print("refused:", exc)
"""


def test_a_flipped_complex_flag_is_refused_before_scipy_can_crash():
    """One byte flipped in an SBD-like struct (Segmentation's flags: complex set, one part, then its
    sibling): scipy read the sibling's tag as numbers of type 14 and segfaulted the process (exit
    -11, 395 of 83k fuzzed mutants did). Each number element's type and count is checked first."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", FLIPPED], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": root})
    assert done.returncode == 0, done.stderr[-400:]
    assert "refused: not a readable MAT file: a variable's numbers: a wrong data type" in done.stdout


def test_cells_nested_past_the_limit_are_unreadable_not_a_recursion_error():
    """Cells inside cells, 200 deep (a 2 KB file): walked by content, each level is a call; past
    `MAX_NESTING` the file is refused by name instead of running into Python's recursion limit."""
    from sources.mat_files import MAX_NESTING

    inner = EMPTY
    for _ in range(200):
        inner = matrix(MX_CELL, [1, 1], b"", inner)
    variable = matrix(MX_CELL, [1, 1], b"v", inner)
    with pytest.raises(MatUnreadable, match=f"more than {MAX_NESTING} deep"):
        read_mat_variable(mat_file(variable), "v", 1 << 20, 1000)
    shallow = matrix(MX_CELL, [1, 1], b"v", matrix(MX_CELL, [1, 1], b"", EMPTY))
    assert read_mat_variable(mat_file(shallow), "v", 1 << 20, 1000, squeeze_me=False)[0, 0].shape == (1, 1)


def _leaf(kind: int, dims: list[int], name: tuple[int, bytes], value: tuple[int, bytes], flags: int = 0,
          tag: int = MI_MATRIX) -> bytes:
    """A number or text matrix of full-tag elements (the walk's inline path), its parts as given."""
    inner = (element(MI_UINT32, struct.pack("<II", kind | flags, 0)) + element(5, struct.pack("<2i", *dims))
             + element(*name) + element(*value))
    return struct.pack("<II", tag, len(inner)) + inner


@pytest.mark.parametrize("leaf, refusal", [
    (_leaf(MX_DOUBLE, [0, 0], (MI_INT8, b""), (8, b"")),  # no value, of a number type scipy does not know
     "a variable's numbers: a wrong data type"),
    (_leaf(MX_DOUBLE, [1, 2], (MI_INT8, b""), (MI_DOUBLE, struct.pack("<d", 1.0))),  # fewer values than dims
     "a variable's numbers do not match its dimensions"),
    (_leaf(MX_DOUBLE, [1, 1], (MI_DOUBLE, b"\0" * 8), (MI_DOUBLE, struct.pack("<d", 1.0))),  # a name of numbers
     "a variable's name: a wrong data type"),
    (_leaf(MX_DOUBLE, [1, 1], (MI_INT8, b""), (MI_DOUBLE, struct.pack("<d", 1.0)), flags=1 << 11),  # complex, 1 part
     "a variable's headers are cut short"),  # its imaginary part: none follows
    (_leaf(MX_CHAR, [1, 2], (MI_INT8, b""), (MI_DOUBLE, struct.pack("<d", 1.0))),  # characters of doubles
     "a variable's characters: a wrong data type"),
    (_leaf(MX_DOUBLE, [1, -1], (MI_INT8, b""), (MI_DOUBLE, b"")),  # a negative dimension
     "a variable's dimensions are malformed"),
    (_leaf(MX_DOUBLE, [1, 1], (MI_INT8, b""), (MI_DOUBLE, struct.pack("<d", 1.0)), tag=MI_DOUBLE),  # not a miMATRIX
     "a variable's element is not a matrix"),
    (_leaf(MX_CHAR, [-1, 1], (MI_INT8, b""), (4, b"ab")),  # text of a negative dimension (no count to check)
     "a variable's dimensions are malformed"),
    (_leaf(MX_CHAR, [1, -1], (MI_INT8, b""), (4, b"ab")),
     "a variable's dimensions are malformed"),
], ids=["unknown-type", "count", "name", "complex", "characters", "negative", "not-a-matrix", "negative-rows-text",
        "negative-columns-text"])
def test_malformed_leaves_of_the_inline_path_are_refused_as_the_element_walk_refuses_them(leaf: bytes, refusal: str):
    """Number and text matrices are read inline (most of a release's 2M matrices, 4.0 -> 1.8 CPU-s of
    walk): one of that shape with any part scipy would misread is refused all the same, inside a
    cell beside an honest leaf, which reads back. Refused by the walk, in its words: scipy refuses
    most of these too, but only once the inline path has let them through (its message names
    only the exception's kind, "not a readable MAT file (ValueError)")."""
    honest = _leaf(MX_DOUBLE, [1, 2], (MI_INT8, b""), (MI_DOUBLE, struct.pack("<2d", 1.0, 2.0)))
    assert read_mat_variable(mat_file(matrix(MX_CELL, [1, 1], b"v", honest)), "v", 1 << 20, 100).tolist() == [1.0, 2.0]
    variable = matrix(MX_CELL, [1, 2], b"v", honest + leaf)
    with pytest.raises(MatUnreadable, match=f"^not a readable MAT file: {re.escape(refusal)}"):
        read_mat_variable(mat_file(variable), "v", 1 << 20, 100)
    with pytest.raises(ValueError, match=f"^{re.escape(refusal)}"):
        mat_objects(mat_file(variable), "v", 100, 1 << 20)


def test_a_cut_compressed_variable_before_the_one_read_is_passed_by_its_whole_name():
    """A compressed variable cut short (its stream has no end: a write that stopped) whose name of
    4,072 characters ends past the 4 KiB first read, before the variable wanted: zlib took all the
    input and still held the name's last 24 bytes, so the peek stopped short of it and the file
    was refused ("data runs past its bounds"). scipy passes it by and reads the one wanted; so here."""
    wanted = matrix(MX_DOUBLE, [1, 1], b"wanted", element(MI_DOUBLE, struct.pack("<d", 7.0)))
    cut = zlib.compress(matrix(MX_DOUBLE, [1, 1], b"n" * 4072, b""), 9)[:-5]  # its checksum and last byte gone
    data = mat_file(wanted)[:128] + struct.pack("<II", 15, len(cut)) + cut + mat_file(wanted)[128:]
    assert loadmat(io.BytesIO(data), variable_names=["wanted"])["wanted"].tolist() == [[7.0]]
    assert read_mat_variable(data, "wanted", 1 << 20, 100) == 7.0


def test_a_compressed_variable_before_the_one_read_is_passed_by_its_name_not_held_inflated():
    """scipy's savemat of a 32 MiB array before the variable wanted (a release saved with its
    images' data first): to be passed by, it was inflated whole and held (a peak of 32 MiB more);
    now its name is read from its first bytes, its size counted a chunk at a time."""
    import tracemalloc

    buffer = io.BytesIO()
    savemat(buffer, {"pixels": np.zeros((4 << 20,)), "wanted": np.arange(3.0)}, do_compression=True)
    tracemalloc.start()
    try:
        read = read_mat_variable(buffer.getvalue(), "wanted", 64 << 20, 100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert read.tolist() == [0.0, 1.0, 2.0]
    assert peak < 8 << 20, peak >> 20
