"""A row group whose image column pyarrow would decode a page of many rows at once, read instead
with that column's values taken one at a time from its pages (`parquet_values`), the other
columns a few rows at a time through pyarrow (`hf_parquet.streamed_bytes`), the two put together
into the record batches pyarrow's whole read gives.

Why: pyarrow's and pandas' writers put up to 1,024 values in a page, so a group of 80 photos of
3 MB is one 240 MB (dictionary) page, read whole at up to 6 times its size (1.3 GB RSS); and one
row over the budget in a group made the whole group a reject. Read so, a row holds its value a
few times over (`VALUE_COPIES`) whatever its page holds, and a value over what a row may hold is
one row's reject, read around.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from sources import hf_parquet, parquet_values

VALUE_COPIES = parquet_values.VALUE_COPIES  # what one value read so is held at its peak, times over
LEVEL_BYTES = 9  # a value's definition level or dictionary index decoded (an int64) and whether it is there
KEPT_SHARE = 8  # of the budget, at most this share holds a dictionary's values kept for rows asking again


@dataclass(frozen=True)
class PagedRead:
    """How a row group is read paged: its image column `column` (a top-level binary column, or the
    `bytes` of a top-level `Image` struct: `struct`), the leaf's index `leaf` in the parquet schema,
    what pyarrow reads beside it (`others`, judged `beside`: None, nothing), the most bytes one
    value may hold (`allowance`), each past it that row's reject, and of its dictionary's values
    kept for rows asking again (`kept`)."""

    column: str
    leaf: int
    struct: bool
    others: list[str]
    beside: hf_parquet.Streamed | None
    allowance: int
    kept: int


@dataclass(frozen=True)
class RefusedRow:
    """Row `offset` of the group (from its first), its value not read (`refused`), its other
    columns `row` (a one-row batch: its keys)."""

    offset: int
    refused: parquet_values.Refused
    row: Any


def refused_detail(refused: RefusedRow, plan: PagedRead, budget: int) -> str:
    """Why a row's value was not read: too large (the group's other rows are read), or reading it
    would cost past a bound (`Refused.why`: a later row's may too)."""
    if refused.refused.why and refused.refused.too_large and parquet_values.PAGE_REFUSED in refused.refused.why:
        return f"{refused.refused.why}: not read"  # its page refused whole: its other rows too
    if refused.refused.why and refused.refused.too_large:  # past the room beside the page it lies in
        return f"{refused.refused.why}: not read; the group's other rows are"
    if refused.refused.why:
        return f"{refused.refused.why}: not read (refused for the cost of reading it, not its size)"
    return (f"its {plan.column!r} holds {refused.refused.length} bytes, over the {plan.allowance} bytes one row's value "
            f"may hold (held {VALUE_COPIES} times over, beside the rest of its row group, within the {budget} byte "
            "budget): not read; the group's other rows are")


def paged_read(parquet, group, columns: list[str] | None, budget: int) -> PagedRead | None:
    """How row group `group` (a `hf_parquet.CheckedGroup`) of `parquet` is read paged within
    `budget` (`PagedRead`), or None where it is not: no flat column of byte strings at the top
    (or an `Image`'s bytes) whose pages this reads (`parquet_values.ENCODINGS`, `CODECS`), or
    the rest of the group not within the budget a few rows at a time."""
    if not isinstance(group, hf_parquet.CheckedGroup):
        return None
    schema = parquet.schema_arrow
    best = None
    for position in range(group.num_columns):
        chunk = group.column(position)
        path = chunk.path_in_schema
        if not hf_parquet._selected(path, columns) or chunk.physical_type != "BYTE_ARRAY":
            continue
        name, _, inner = path.partition(".")
        if name not in schema.names or "." in inner or parquet.schema.column(position).max_repetition_level:
            continue
        kind = schema.field(name).type
        struct = inner == "bytes" and hf_parquet._is_image_struct(kind)
        if not (struct or (not inner and hf_parquet.is_binary(kind))):
            continue
        if chunk.compression not in parquet_values.CODECS or not set(chunk.encodings) <= parquet_values.ENCODINGS:
            continue
        pages = chunk.pages()
        weight = max(pages.largest_uncompressed, pages.dictionary_uncompressed)
        if best is None or weight > best[0]:
            best = (weight, name, position, struct)
    if best is None:
        return None
    _, name, position, struct = best
    wanted = list(schema.names) if columns is None else list(columns)
    if name not in wanted:
        return None
    others = [f"{name}.path" if c == name else c for c in wanted if c != name or struct]
    beside = hf_parquet.streamed_bytes(parquet, group, others) if others else None
    if others and beside is None:
        return None
    kept = min(parquet_values.DICTIONARY_CACHE_BYTES, budget // KEPT_SHARE)
    levels = group.column(position).num_values * LEVEL_BYTES  # a page's levels, decoded at once
    allowance = (budget - kept - levels - (beside.cost() if beside is not None else 0)) // VALUE_COPIES
    if allowance <= 0:
        return None
    return PagedRead(name, position, struct, others, beside, allowance, kept)


def paged_batches(source: Any, parquet, index: int, plan: PagedRead, columns: list[str] | None,
                  spent: parquet_values.FileCost | None = None) -> Iterator[Any]:
    """Row group `index` as record batches of `columns` (as pyarrow reads them: the same schema,
    the same values) and, for each row whose value passes `plan.allowance`, a `RefusedRow`. A
    batch holds at most `hf_parquet.STREAM_BATCH_BYTES` of values (or one). `spent`: what the
    Python snappy decoder has spent on the file's groups before it (`parquet_values.FileCost`)."""
    import pyarrow as pa

    group = parquet.metadata.row_group(index)
    chunk = group.column(plan.leaf)
    shape = parquet.read_row_groups([], columns=columns, use_threads=False).schema  # what a whole read gives
    values = parquet_values.chunk_values(source, chunk, group.num_rows, parquet.schema.column(plan.leaf).max_definition_level,
                                         chunk.compression, plan.allowance, plan.kept, spent=spent)
    rows = plan.beside.batch_rows() if plan.beside is not None else hf_parquet.BATCH_ROWS
    beside = hf_parquet._stream(source, parquet).iter_batches(batch_size=rows, row_groups=[index], columns=plan.others,
                                                              use_threads=False)
    offset = 0
    for others in beside:
        run: list[bytes | None] = []
        start = held = 0
        for row in range(others.num_rows):
            value = next(values)
            if isinstance(value, parquet_values.Refused):
                if run:
                    yield _assembled(plan, shape, others.slice(start, len(run)), run)
                yield RefusedRow(offset + row, value, others.slice(row, 1))
                run, start, held = [], row + 1, 0
                continue
            run.append(value)
            held += len(value or b"")
            if held >= hf_parquet.STREAM_BATCH_BYTES:
                yield _assembled(plan, shape, others.slice(start, len(run)), run)
                run, start, held = [], row + 1, 0
        if run:
            yield _assembled(plan, shape, others.slice(start, len(run)), run)
        run = None
        offset += others.num_rows
    if next(values, None) is not None:
        raise pa.ArrowInvalid(f"column {chunk.path_in_schema}: more values than the group's {group.num_rows} rows")


def _assembled(plan: PagedRead, shape, others, run: list[bytes | None]):
    """One record batch of `shape`: the rows of `others` (pyarrow's read of the other columns) and
    the image column's values `run` put in its place."""
    import pyarrow as pa

    kind = shape.field(plan.column).type
    if plan.struct:
        holder = others.column(plan.column)
        fields = [kind.field(i) for i in range(kind.num_fields)]
        children = {"path": holder.flatten()[0], "bytes": pa.array(run, kind.field("bytes").type)}
        column = pa.StructArray.from_arrays([children[f.name] for f in fields], fields=fields, mask=holder.is_null())
    else:
        column = pa.array(run, kind)
    arrays = [column if field.name == plan.column else others.column(field.name) for field in shape]
    return pa.RecordBatch.from_arrays(arrays, schema=shape)

