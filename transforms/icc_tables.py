"""An embedded ICC profile's tables judged before LittleCMS reads them (`table_problem`).

LittleCMS allocates and zeroes a tag's table by the sizes the tag declares, then reads the data,
and only then finds it short: a 400-byte profile whose A2B0 lut16 declares 255^3 grid points of 15
outputs cost every decode ~475 MB outside the memory budget (an mluc `desc` declaring 30 million
names, 343 MB), before the profile was ignored as unreadable anyway. So the header's tag table is
walked here in pure Python, and every tag whose type allocates by a declared count (lut8, lut16,
lutAtoB, lutBtoA and their curves and CLUT, multiProcessElements' CLUTs and sampled curves,
multiLocalizedUnicode, curv, v2 textDescription) must hold what it declares within its own length,
and no table may declare more than `MAX_TABLE_ENTRIES`. A profile that fails is unreadable: ignored,
as one LittleCMS refuses (the pixels are read as sRGB, as a browser reads them). The walk itself is
bounded (`MAX_WALK` mpet elements, curves and segments in all): positions may share one curve, so a
41 KB profile named 16 million segments, 14 s of Python on the decode path.

A table within the cap still costs LittleCMS several copies of it (`held_bytes`, which the decode's
memory judgement counts): a lut8 CLUT of 16.6 M entries, under the 16 MiB cap this was, took 159 MiB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_HEADER = 128
MAX_TAGS = 100  # LittleCMS's MAX_TABLE_TAG: it refuses a profile of more
# A table's declared entries, at most: a 4-ink printer profile's 33^4-point CLUT of 3 outputs is
# 3.6 M entries (7.2 MB as 16 bits), the largest real table kind (ghostscript's default_cmyk.icc:
# 144 K). LittleCMS holds each entry as 16 bits (a float's as 32) about four times over, and the
# profile three times (`held_bytes`: a 64x64 PNG whose lut8 CLUT was 16.6 M entries took 159 MiB;
# at 4.0 M entries, 39 MiB; measured as the peak RSS of a fresh process's decode)
MAX_TABLE_ENTRIES = 4 << 20
_TABLE_COPIES, _PROFILE_COPIES = 4, 3
_PARAMETERS = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}  # a `para` curve's parameters by its function type
_SEGMENT_PARAMETERS = {0: 4, 1: 5, 2: 5}  # an mpet `parf` segment's, by its function type
# mpet elements, curves and curve segments walked in one profile, all together: a real one has a
# few dozen; each is a few steps of Python, so a hostile one costs milliseconds, not minutes
MAX_WALK = 4096
_CURVES = 16  # LittleCMS's cmsMAXCHANNELS: the curves of a curve set element, at most


def _u16(icc: bytes, at: int) -> int:
    return int.from_bytes(icc[at : at + 2], "big")


def _u32(icc: bytes, at: int) -> int:
    return int.from_bytes(icc[at : at + 4], "big")


def _aligned(n: int) -> int:
    return n + (-n % 4)


def _curve_end(icc: bytes, at: int, end: int) -> int | None:
    """Where a `curv` or `para` curve starting at `at` ends (4-byte aligned, within `end`), None
    for another type or one that runs past `end`."""
    kind = icc[at : at + 4]
    if kind == b"curv" and at + 12 <= end:
        need = 12 + 2 * _u32(icc, at + 8)
    elif kind == b"para" and at + 12 <= end and _u16(icc, at + 8) in _PARAMETERS:
        need = 12 + 4 * _PARAMETERS[_u16(icc, at + 8)]
    else:
        return None
    return at + need if at + need <= end else None


def _curves_fit(icc: bytes, at: int, count: int, end: int) -> bool:
    """`count` curves, one after another (each 4-byte aligned), lie within `end`."""
    for _ in range(count):
        stop = _curve_end(icc, at, end)
        if stop is None:
            return False
        at = _aligned(stop)
    return True


def _lut_problem(icc: bytes, start: int, end: int, kind: bytes, walk: _Walk) -> str | None:
    """An lut8 (`mft1`) or lut16 (`mft2`) tag: its input and output tables and CLUT
    (grid^inputs x outputs entries) within the tag."""
    head = 48 if kind == b"mft1" else 52
    if end - start < head:
        return "shorter than its header"
    inputs, outputs, grid = icc[start + 8], icc[start + 9], icc[start + 10]
    if kind == b"mft1":
        width, entries_in, entries_out = 1, 256, 256
    else:
        width, entries_in, entries_out = 2, _u16(icc, start + 48), _u16(icc, start + 50)
    clut = grid ** inputs * outputs
    declared = head + width * (entries_in * inputs + entries_out * outputs + clut)
    return _declared_problem(walk, clut, 2, declared, end - start)


@dataclass
class _Walk:
    """One profile's walk: the mpet elements, curves and segments it may still visit, and the bytes
    its tables take as LittleCMS holds them (one copy)."""

    steps: int = MAX_WALK
    table_bytes: int = 0


def _declared_problem(walk: _Walk, entries: int, width: int, declared: int, length: int) -> str | None:
    """A table of `entries`, held `width` bytes each, in a tag of `declared` bytes of `length`."""
    walk.table_bytes += entries * width
    if entries > MAX_TABLE_ENTRIES:
        return f"declares a table of {entries:,} entries, over {MAX_TABLE_ENTRIES:,}"
    if declared > length:
        return f"declares {declared:,} bytes in a tag of {length:,}"
    return None


def _ab_problem(icc: bytes, start: int, end: int, kind: bytes, walk: _Walk) -> str | None:
    """An lutAtoB (`mAB `) or lutBtoA (`mBA `) tag: its curve sets and CLUT within the tag."""
    if end - start < 32:
        return "shorter than its header"
    inputs, outputs = icc[start + 8], icc[start + 9]
    b_curves, m_curves, clut, a_curves = (_u32(icc, start + at) for at in (12, 20, 24, 28))
    a2b = kind == b"mAB "
    for offset, count in ((b_curves, outputs if a2b else inputs), (m_curves, outputs if a2b else inputs),
                          (a_curves, inputs if a2b else outputs)):
        if offset and not _curves_fit(icc, start + offset, count, end):
            return "a curve set runs past the tag or is not a curve"
    if not clut:
        return None
    at = start + clut
    if at + 20 > end or not 1 <= inputs <= 16:
        return "its CLUT header runs past the tag"
    entries = math.prod(icc[at : at + inputs]) * outputs
    return _declared_problem(walk, entries, 2, clut + 20 + entries * icc[at + 16], end - start)


def _segments_fit(icc: bytes, at: int, end: int, walk: _Walk) -> bool:
    """An mpet segmented curve (`curf`): its break points and segments within `end`."""
    if icc[at : at + 4] != b"curf" or at + 12 > end:
        return False
    count = _u16(icc, at + 8)
    at += 12 + 4 * max(0, count - 1)
    walk.steps -= count
    if walk.steps < 0:
        return False
    for _ in range(count):
        kind = icc[at : at + 4]
        if at + 12 > end:
            return False
        if kind == b"samf":
            need = 12 + 4 * _u32(icc, at + 8)
        elif kind == b"parf" and _u16(icc, at + 8) in _SEGMENT_PARAMETERS:
            need = 12 + 4 * _SEGMENT_PARAMETERS[_u16(icc, at + 8)]
        else:
            return False
        walk.table_bytes += need
        if need > 4 * MAX_TABLE_ENTRIES or at + need > end:
            return False
        at += need
    return True


def _element_problem(icc: bytes, at: int, end: int, walk: _Walk) -> str | None:
    """One processing element of an mpet tag (`clut`, `cvst`; a matrix's size is fixed)."""
    kind, inputs, outputs = icc[at : at + 4], _u16(icc, at + 8), _u16(icc, at + 10)
    if kind == b"clut":
        if at + 28 > end or not 1 <= inputs <= 16:
            return "a CLUT element's header runs past it"
        entries = math.prod(icc[at + 12 : at + 12 + inputs]) * outputs
        return _declared_problem(walk, entries, 4, 28 + 4 * entries, end - at)
    if kind == b"cvst":
        if inputs > _CURVES or at + 12 + 8 * inputs > end:
            return f"a curve set element of {inputs} curves"
        for i in range(inputs):
            offset, size = _u32(icc, at + 12 + 8 * i), _u32(icc, at + 16 + 8 * i)
            if at + offset + size > end or not _segments_fit(icc, at + offset, at + offset + size, walk):
                return "a segmented curve runs past its element, or too many to walk"
    return None


def _mpet_problem(icc: bytes, start: int, end: int, walk: _Walk) -> str | None:
    """A multiProcessElements tag: its position table and each element within the tag."""
    if end - start < 16:
        return "shorter than its header"
    count = _u32(icc, start + 12)
    walk.steps -= count
    if walk.steps < 0 or start + 16 + 8 * count > end:
        return f"declares {count:,} elements in a tag of {end - start:,} bytes"
    for i in range(count):
        offset, size = _u32(icc, start + 16 + 8 * i), _u32(icc, start + 20 + 8 * i)
        if size < 12 or start + offset + size > end:
            return "an element lies outside the tag"
        problem = _element_problem(icc, start + offset, start + offset + size, walk)
        if problem:
            return problem
    return None


def _counted_problem(icc: bytes, start: int, end: int, kind: bytes) -> str | None:
    """A tag of a count then records (mluc names, curv entries, a v2 desc's ASCII)."""
    if end - start < 12 or (kind == b"mluc" and end - start < 16):
        return "shorter than its header"
    count = _u32(icc, start + 8)
    declared = {b"mluc": 16 + 12 * count, b"curv": 12 + 2 * count, b"desc": 12 + count}[kind]
    return None if declared <= end - start else f"declares {declared:,} bytes in a tag of {end - start:,}"


def _tag_problem(icc: bytes, start: int, end: int, walk: _Walk) -> str | None:
    kind = icc[start : start + 4]
    if kind in (b"mft1", b"mft2"):
        return _lut_problem(icc, start, end, kind, walk)
    if kind in (b"mAB ", b"mBA "):
        return _ab_problem(icc, start, end, kind, walk)
    if kind == b"mpet":
        return _mpet_problem(icc, start, end, walk)
    if kind in (b"mluc", b"curv", b"desc"):
        return _counted_problem(icc, start, end, kind)
    return None


def _walked(icc: bytes) -> tuple[str | None, _Walk]:
    """`table_problem`'s answer, and the walk that found it (its tables' bytes)."""
    walk = _Walk()
    if len(icc) < _HEADER + 4:
        return f"{len(icc)} bytes: no tag table", walk
    length = min(len(icc), _u32(icc, 0))  # LittleCMS reads within the header's size
    count = _u32(icc, _HEADER)
    if count > MAX_TAGS or _HEADER + 4 + 12 * count > length:
        return f"a tag table of {count:,} tags in {length:,} bytes", walk
    for i in range(count):
        entry = _HEADER + 4 + 12 * i
        signature, offset, size = icc[entry : entry + 4], _u32(icc, entry + 4), _u32(icc, entry + 8)
        if offset + size > length:
            continue  # LittleCMS skips such a tag (`_cmsReadHeader`): absent, as `tag_positions` has it
        if offset < _HEADER + 4:
            return f"tag {signature!r} lies in the profile's header (at {offset:,})", walk
        problem = _tag_problem(icc, offset, offset + size, walk)
        if problem:
            return f"tag {signature!r} ({icc[offset : offset + 4]!r}): {problem}", walk
    return None, walk


def table_problem(icc: bytes) -> str | None:
    """Why LittleCMS should not read this profile (its tag table out of bounds, a tag in its
    header, a tag declaring more than it holds or a table over `MAX_TABLE_ENTRIES`), None for a
    profile whose tags hold what they declare. A tag running past the profile's end is skipped, as
    LittleCMS skips it (one optional `cprt` so written cost a whole profile its conversion).
    Pure Python over the header and tag table: nothing is allocated by them."""
    return _walked(icc)[0]


def held_bytes(icc: object) -> int:
    """Bytes LittleCMS holds while it transforms with this profile: its tables about four times
    over and the profile three (measured, see `MAX_TABLE_ENTRIES`); 0 for none, or for one
    `table_problem` refuses (LittleCMS never reads it)."""
    if not isinstance(icc, bytes) or not icc:
        return 0
    problem, walk = _walked(icc)
    return 0 if problem else _TABLE_COPIES * walk.table_bytes + _PROFILE_COPIES * len(icc)


def tag_positions(icc: bytes) -> dict[bytes, tuple[int, int]] | None:
    """Each tag's (start, end) by its signature, the first of a signature named twice, less those
    running past the profile's end (LittleCMS skips them); None for a profile `table_problem`
    refuses (so every tag given lies within the profile and holds what it says)."""
    if table_problem(icc):
        return None
    length = min(len(icc), _u32(icc, 0))
    positions: dict[bytes, tuple[int, int]] = {}
    for i in range(_u32(icc, _HEADER)):
        entry = _HEADER + 4 + 12 * i
        offset, size = _u32(icc, entry + 4), _u32(icc, entry + 8)
        if offset + size <= length:
            positions.setdefault(icc[entry : entry + 4], (offset, offset + size))
    return positions
