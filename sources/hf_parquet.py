"""Hugging Face `datasets` image parquet: what its files declare, read before any row is.

`datasets` stores an `Image` feature as a struct column `{bytes: binary, path: string}` (`bytes`
null for a row that points at a file by `path`; the whole cell null for a row without an image),
names the features in the schema metadata under `huggingface`, and writes files named by their
split: `data/train-00000-of-00004.parquet` (`push_to_hub`), `<config>/<split>/0000.parquet` (the
Hub's parquet conversion, `partial-<split>/` when cut), or any name a user gives `to_parquet`
(`cifar10-test.parquet`). `hf_split` resolves a file's split as `datasets` does, and
`pattern_set`/`loaded_split` which files of a repo it loads at all (without a card's `data_files`).
Row groups are judged by the size their footer declares (`ROW_GROUP_BYTES`) before they are read,
or where its page headers say more (`checked_group`: pyarrow reads by those), and where a chunk of
byte strings is dictionary-encoded by what its rows hold (`value_bytes`). A group over the budget
whose pages say a row read alone fits is read a few rows at a time (`streamed_bytes`), never whole,
and so is one within it that, read whole, would hold more than the budget (`WHOLE_READ_COPIES`).
Where its image column's pages hold many rows each (pyarrow decodes a page whole), or a row of it
passes the budget, that column is read a value at a time from its pages (`parquet_paged`), a
value too large its row's reject alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from sources import parquet_pages
from sources.records import MAX_INPUT_FILE_BYTES

HF_METADATA_KEY = b"huggingface"
# the caption's column when the config names none, the first found (`txt`: a webdataset's, converted)
CAPTION_COLUMNS = ("text", "caption", "txt")
ROW_GROUP_TOO_LARGE = "row_group_too_large"
MISSING_IMAGE = "missing_image"
# a paged read's row whose value reading would cost past a bound (`parquet_values.Refused.why`):
# nothing in it is too large
VALUE_TOO_COSTLY = "parquet_value_too_costly"
IMAGE_LIST_COLUMN = "image_list_column"  # a `Sequence(Image())` column: refused by name, once per file
# one row group within it is read whole: the cap one input file has. `datasets` aims at row groups
# of 100 MB (`config.MAX_ROW_GROUP_SIZE`, from the average row: a last group of photos after
# thumbnails passes it; before 3.x 100 rows for images), img2dataset writes 100 rows: a group over
# it is read a few rows at a time (`streamed_bytes`), refused only where one row passes it.
ROW_GROUP_BYTES = MAX_INPUT_FILE_BYTES
BATCH_ROWS = 64
# How `datasets` 5.2 gives a data file its split, written out from `datasets/data_files.py`
# (`_get_data_files_patterns`, fsspec >= 2023.12 patterns), tried in this order: the sharded name
# `data/{split}-NNNNN-of-NNNNN*.*` (SPLIT_PATTERN_SHARDED, at the root's `data/`: any split name);
# then a folder named by a keyword (KEYWORDS_IN_DIR_NAME_BASE_PATTERNS: `**/{keyword}/**`,
# `**/{keyword}[sep]*/**`, `**/*[sep]{keyword}/**`, `**/*[sep]{keyword}[sep]*/**`); then the file's
# name (KEYWORDS_IN_FILENAME_BASE_PATTERNS: `**/{keyword}[sep]*`, `**/*[sep]{keyword}[sep]*`);
# else train. `[sep]` is NON_WORDS_CHARS; keywords are SPLIT_KEYWORDS, matched case-sensitively
# (`Test.parquet` is train there too). A file two splits' patterns match (`train-test.parquet`:
# datasets loads it in both) is held out here: a held-out split is never trained on.
SPLIT_KEYWORDS = {"train": ("train", "training"), "validation": ("validation", "valid", "dev", "val"),
                  "test": ("test", "testing", "eval", "evaluation")}
HELD_OUT_SPLITS = ("validation", "test")
_SEP = "[-._ 0-9]"  # NON_WORDS_CHARS
# any name before `-NNNNN-of-NNNNN` is the split there (`data/my-train-...`: `my-train`), and one
# that is no SPLIT_NAME makes `datasets` refuse the repo ("Split name should match ..."): the
# build stops naming it (`LaionSource._in_config`), never trains on it as another split
_SHARDED = re.compile(r"data/(?P<split>[^/]+)-\d{5}-of-\d{5}[^/]*\.[^/]*")
SPLIT_NAME = re.compile(r"\w+(?:\.\w+)*")  # the split names `datasets` takes (`naming._split_re`)
_IN_FOLDER = {split: re.compile(rf"(?:.*{_SEP})?(?:{'|'.join(words)})(?:{_SEP}.*)?")
              for split, words in SPLIT_KEYWORDS.items()}
_IN_NAME = {split: re.compile(rf"(?:.*{_SEP})?(?:{'|'.join(words)}){_SEP}.*")
            for split, words in SPLIT_KEYWORDS.items()}


def open_parquet(source: Any, **options: Any):
    """`pyarrow.parquet.ParquetFile(source, **options)` of a file pyarrow can be trusted to open:
    an encrypted one (`parquet_pages.encryption_problem`) is ArrowInvalid, as a damaged one is
    (its `bad_parquet`), never opened: pyarrow aborts the whole process on a column of one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    problem = parquet_pages.encryption_problem(source)
    if problem:
        raise pa.ArrowInvalid(f"the file {problem}")
    return pq.ParquetFile(source, **options)


def read_schema(source: Any):
    """`pyarrow.parquet.read_schema(source)` of a file `open_parquet` opens (a layout is judged by
    a file's schema before its unit reads it: its footer is checked first there too)."""
    return open_parquet(source).schema_arrow


def image_columns(schema) -> list[str]:
    """The columns holding a `datasets` `Image` feature: a struct of `bytes` (binary) and `path`
    (string). A struct column the `huggingface` metadata calls something else (`Audio` has the
    same struct) is none."""
    declared = features(schema)
    return [c.name for c in schema if _is_image_struct(c.type)
            and declared.get(c.name, {}).get("_type", "Image") == "Image"]


def image_list_columns(schema) -> list[str]:
    """The columns holding a list of `Image`s per row (`Sequence(Image())`, `List(Image())`: a list
    of the Image struct; `datasets` 5.2 declares `{"feature": {"_type": "Image"}, "_type": "List"}`).
    This source builds one image per row: such a column is refused by name, never read."""
    import pyarrow as pa

    declared = features(schema)
    found = []
    for column in schema:
        kind = column.type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
            continue
        feature = declared.get(column.name, {}).get("feature", {})
        declared_image = not isinstance(feature, dict) or feature.get("_type", "Image") == "Image"
        if _is_image_struct(kind.value_type) and declared_image:
            found.append(column.name)
    return found


NESTED_IMAGE_COLUMN = "nested_image_column"  # an `Image` inside a struct column: refused by name, once per file
MAX_NESTED_DEPTH = 32  # struct levels walked for an `Image` (real features nest a few)


def nested_image_columns(schema) -> list[tuple[str, ...]]:
    """The `Image` features inside a struct column (`{"aux": {"mask": Image()}}`, a stereo pair's
    `{"pair": {"left": Image(), "right": Image()}}`), each as its fields' names (`("aux", "mask")`:
    `datasets` names them as the dict's keys, dots and all, so a dotted string would not say which
    is which): this source builds one top-level image a row, so such a column is refused by name,
    its images never read (they were left out unsaid, their cells riding in the lineage as nulls)."""
    declared = features(schema)
    found: list[tuple[str, ...]] = []
    for column in schema:
        if not _is_image_struct(column.type):
            _nested_images(column.type, declared.get(column.name), (column.name,), found, 0)
    return found


def shown_path(path: tuple[str, ...]) -> str:
    """A nested field's names for a message, joined by dots, a name holding a dot quoted
    (`meta.'mask.v1'`, `'meta.v2'.mask`)."""
    return ".".join(repr(name) if "." in name else name for name in path)


def beside_nested_images(parquet, column: str, images: tuple[tuple[str, ...], ...]) -> list[str]:
    """The leaves of struct column `column` of `parquet` read beside the `Image`s nested in it
    (`images`: `nested_image_columns`), as the dotted paths pyarrow reads them by: every one but
    each image's `bytes` (`meta.label`, `meta.mask.path`). Its other fields ride in the lineage
    (the whole column was left out, its `label` and `score` with it); the images' bytes are never
    read, so never judged nor held. A path is walked in the Arrow schema by its fields' names (a
    field `mask.v1`, a column `meta.v2`); one whose dotted form would select an image's bytes too
    (pyarrow selects every leaf under a dotted prefix: `a.b` beside an `a` struct with a `b`) is
    left out."""
    unread = {(*image, "bytes") for image in images if image[0] == column}
    kind = parquet.schema_arrow.field(column).type
    leaves = [".".join(path) for path in _struct_leaves(kind, (column,), unread)]
    return [leaf for leaf in leaves if not any(_selected(".".join(path), [leaf]) for path in unread)]


def _struct_leaves(kind, path: tuple[str, ...], unread: set[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """The paths of struct type `kind` (at `path`) to read, each a field that is no struct (read
    whole), walked down the structs holding a path of `unread`, that path left out."""
    import pyarrow as pa

    if not any(u[:len(path)] == path for u in unread):
        return [path]
    found: list[tuple[str, ...]] = []
    for index in range(kind.num_fields if pa.types.is_struct(kind) else 0):
        child = kind.field(index)
        if (*path, child.name) not in unread:
            found.extend(_struct_leaves(child.type, (*path, child.name), unread))
    return found


def unread_image_bytes(row: dict[str, Any], images: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """`row` with each nested `Image` cell at a path of `images` (read without its bytes,
    `beside_nested_images`) given `bytes: None` again: its lineage as it was when the whole
    struct was read (a null struct on the way, or a null cell, left as it is)."""
    for *parents, name in images:
        cell: Any = row
        for part in parents:
            cell = cell.get(part) if isinstance(cell, dict) else None
        if isinstance(cell, dict) and isinstance(cell.get(name), dict):
            cell[name] = {"bytes": None, **cell[name]}
    return row


def _nested_images(kind, feature: Any, path: tuple[str, ...], found: list[tuple[str, ...]], depth: int) -> None:
    """Append to `found` the path of each `Image` struct among the fields of struct type `kind`
    (`feature`: its declared features, a dict of them; another `_type` there is no image)."""
    import pyarrow as pa

    if not pa.types.is_struct(kind) or depth > MAX_NESTED_DEPTH:
        return
    if isinstance(feature, dict) and "_type" in feature:  # an Audio, a Value of a struct: declared otherwise
        return
    for index in range(kind.num_fields):
        child = kind.field(index)
        inner = feature.get(child.name) if isinstance(feature, dict) else None
        named = (*path, child.name)
        if _is_image_struct(child.type):
            if not isinstance(inner, dict) or inner.get("_type", "Image") == "Image":
                found.append(named)
        else:
            _nested_images(child.type, inner, named, found, depth + 1)


def _is_image_struct(kind) -> bool:
    """Whether an Arrow type is the `Image` struct: `bytes` (binary) and `path` (string)."""
    import pyarrow as pa

    if not pa.types.is_struct(kind) or {kind.field(i).name for i in range(kind.num_fields)} != {"bytes", "path"}:
        return False
    return is_binary(kind.field("bytes").type) and _is_text(kind.field("path").type)


def features(schema) -> dict[str, dict]:
    """The feature of each column, as the `huggingface` schema metadata declares it ({} without)."""
    raw = (schema.metadata or {}).get(HF_METADATA_KEY)
    try:
        declared = json.loads(raw)["info"]["features"] if raw else {}
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: nested past Python's limit
        return {}
    return {k: v for k, v in declared.items() if isinstance(v, dict)} if isinstance(declared, dict) else {}


def class_names(schema) -> dict[str, dict]:
    """The feature of each column holding a `ClassLabel` (itself, or inside lists and dicts: a
    multi-label `List(ClassLabel)`, a detection dataset's `objects.category`), for `label_names`."""
    return {column: feature for column, feature in features(schema).items() if holds_class_label(feature)}


_LIST_TYPES = ("List", "Sequence", "LargeList")  # `datasets` 4+ writes `List`, 2.x and 3.x `Sequence`
MAX_LABEL_DEPTH = 32  # lists and dicts around a `ClassLabel`; real features nest a few (detection: 3)


def holds_class_label(feature: Any, depth: int = 0) -> bool:
    """Whether a feature (`datasets`' JSON form) is a `ClassLabel` or holds one in lists or dicts,
    within `MAX_LABEL_DEPTH` levels (deeper: no label; `label_names` follows only what holds one,
    so it is bounded too, never past Python's recursion limit)."""
    if not isinstance(feature, dict) or depth > MAX_LABEL_DEPTH:
        return False
    if feature.get("_type") == "ClassLabel":
        return isinstance(feature.get("names"), list)
    inner = [feature.get("feature")] if feature.get("_type") in _LIST_TYPES else \
        [] if "_type" in feature else list(feature.values())  # a dict of features: a struct
    return any(holds_class_label(f, depth + 1) for f in inner)


def label_names(feature: dict, value: Any, depth: int = 0) -> Any:
    """`value` of a column whose feature (`class_names`) holds `ClassLabel`s, each label integer
    replaced by its name (None: an integer no name has, as `-1` for no label), in the value's
    shape; the parts of a dict holding no label left out. A `Sequence` of a dict (`datasets` 2.x)
    holds a dict of lists. Past `MAX_LABEL_DEPTH` levels (a struct of a label and a struct of...): None."""
    if depth > MAX_LABEL_DEPTH:
        return None
    kind = feature.get("_type")
    if kind == "ClassLabel":
        names = feature["names"]
        return str(names[value]) if isinstance(value, int) and not isinstance(value, bool) \
            and 0 <= value < len(names) else None
    if kind in _LIST_TYPES:
        inner = feature.get("feature")
        if isinstance(value, list):
            return [label_names(inner, v, depth + 1) for v in value]
        if isinstance(value, dict) and isinstance(inner, dict) and "_type" not in inner:  # 2.x: dict of lists
            return {k: [label_names(inner[k], v, depth + 1) for v in value[k]] if isinstance(value[k], list) else None
                    for k in inner if k in value and holds_class_label(inner[k])}
        return None
    if kind is None and isinstance(value, dict):  # a struct
        return {k: label_names(f, value[k], depth + 1) for k, f in feature.items()
                if k in value and holds_class_label(f)}
    return None


def hf_split(relative: str) -> str:
    """The split `datasets` gives a data file at `relative` (a path under the dataset's root, `/`
    between folders): `data/validation-00000-of-00001.parquet`, `test/data-00000-of-00001.parquet`
    and `cifar10-test.parquet` give `validation`, `test`, `test`; `train` where no pattern names
    one, as there. Also the split of an image folder's file (`val/cat/1.png`)."""
    sharded = _SHARDED.fullmatch(relative)
    if sharded:
        return sharded["split"]
    return folder_split(relative) or _named_split(_IN_NAME, [relative.rpartition("/")[2]]) or "train"


# What `datasets` 5.2 (`data_files.py` `_get_data_files_patterns`) loads of a repo without a card's
# `data_files`: the first of these pattern sets that names any of the repo's data files names all
# it loads; a file the winning set does not name is not loaded (`data/extra.parquet` beside
# `data/train-00000-of-00001.parquet`, `other/0.parquet` beside `train/` and `test/`). Its sets
# before `folder`, `logs` (`**/*.eval`) and `harbor` (`**/task.toml`, `**/instruction.md`), name
# no parquet file: left out.
PATTERN_SETS = ("sharded", "folder", "name", "all")


def pattern_set(relatives: list[str]) -> str:
    """The pattern set (`PATTERN_SETS`) `datasets` loads a repo by, from the paths of its data
    files under the root."""
    return next((name for name in PATTERN_SETS if any(loaded_split(r, name) for r in relatives)), "all")


def is_data_file(relative: str) -> bool:
    """Whether `datasets` resolves the file at `relative` by a default pattern: not a hidden one, nor
    one in a `__x/` folder (`_is_inside_unrequested_special_dir`)."""
    parts = relative.split("/")
    return not any(p.startswith(".") for p in parts) and not any(p.startswith("__") for p in parts[:-1])


def loaded_split(relative: str, patterns: str) -> str | None:
    """The split `datasets` loads the file at `relative` in when the repo loads by the pattern set
    `patterns`; None: that set does not name it (not loaded)."""
    base = relative.rpartition("/")[2]
    if not is_data_file(relative):
        return None
    if patterns == "sharded":
        sharded = _SHARDED.fullmatch(relative)
        return sharded["split"] if sharded else None
    if patterns == "folder":
        return folder_split(relative)
    return _named_split(_IN_NAME, [base]) if patterns == "name" else "train"


def folder_split(relative: str) -> str | None:
    """The split the folders of `relative` name as `datasets` reads them (`test/cat/1.jpg`: test),
    None when none does."""
    return _named_split(_IN_FOLDER, [p for p in relative.split("/")[:-1] if p])


def _named_split(patterns: dict[str, re.Pattern], parts: list[str]) -> str | None:
    """The split whose keyword one of `parts` is (of several, a held-out one), or None."""
    named = [split for split, pattern in patterns.items() if any(pattern.fullmatch(p) for p in parts)]
    return next((s for s in HELD_OUT_SPLITS if s in named), named[0]) if named else None


def split_hint(split: str | None) -> str | None:
    """Our split of a `datasets` split: `val` for a held-out one (validation, test, or a sharded
    file's own split name a held-out keyword names: `test_2017`; never trained on), None (the
    seeded hash, `split.val_fraction`) for train and any other."""
    return "val" if split is not None and any(_IN_FOLDER[s].fullmatch(split) for s in HELD_OUT_SPLITS) else None


class MissingColumns(ValueError):
    """A `datasets` parquet without the Image (or caption) column the source reads."""


@dataclass(frozen=True)
class TooLarge:
    """A row group whose declared size is over `ROW_GROUP_BYTES`: never read; its rows' `keys`
    (the key columns alone, read when asked) and why."""

    first_row: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    detail: str = ""
    reason: str = ROW_GROUP_TOO_LARGE  # `MISSING_IMAGE`: a group whose every image is null, unread


class CheckedChunk:
    """A column chunk's footer metadata whose `num_values` and sizes are, where its page headers
    (`parquet_pages.chunk_pages`, walked when first asked) say more, what they say: pyarrow
    decodes each page by its header, so a footer patched to say 16 values of a 64-million-value
    page, or 500 bytes of a 315 MB one, judged as that read at 1.2 and 2.8 GB."""

    def __init__(self, chunk, source: Any):
        self._chunk, self._source, self._pages = chunk, source, None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chunk, name)

    def pages(self) -> parquet_pages.ChunkPages:
        """Its page headers summed; one that cannot be read as pyarrow reads it is ArrowInvalid
        (as pyarrow's own read of the chunk would be: the file's `bad_parquet`)."""
        import pyarrow as pa

        if self._pages is None:
            try:
                self._pages = parquet_pages.chunk_pages(self._source, self._chunk)
            except (ValueError, TypeError, AttributeError, IndexError) as exc:  # PageHeaderError, or a bug:
                # never an AttributeError out of a property, which `__getattr__` would answer with the footer
                raise pa.ArrowInvalid(f"column {self._chunk.path_in_schema}: {exc}") from exc
        return self._pages

    @property
    def has_dictionary_page(self) -> bool:
        """Whether pyarrow meets a dictionary page reading it: the footer's flag (its
        `dictionary_page_offset` set) or a dictionary page among its pages. pyarrow decodes any
        dictionary page it meets: img2dataset's file of 100 photos (one 291 MB dictionary page)
        with that offset dropped and `data_page_offset` pointing at its dictionary page was read a
        few rows at a time at 1206 MB peak, judged without its dictionary."""
        return self._chunk.has_dictionary_page or self.pages().dictionary_uncompressed > 0

    @property
    def num_values(self) -> int:
        return max(self._chunk.num_values, self.pages().values)

    @property
    def total_uncompressed_size(self) -> int:
        return max(self._chunk.total_uncompressed_size, self.pages().uncompressed)

    @property
    def total_compressed_size(self) -> int:
        return max(self._chunk.total_compressed_size, self.pages().compressed)


class CheckedGroup:
    """A row group's footer metadata whose column chunks are `CheckedChunk`s."""

    def __init__(self, group, source: Any):
        self._group = group
        self._chunks = [CheckedChunk(group.column(i), source) for i in range(group.num_columns)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._group, name)

    def column(self, index: int) -> CheckedChunk:
        return self._chunks[index]


def checked_group(parquet, index: int, source: Any = None):
    """Row group `index` of `parquet` as its page headers in `source` (the opened file) say it
    is read (`CheckedGroup`); without `source`, its footer alone."""
    group = parquet.metadata.row_group(index)
    return group if source is None else CheckedGroup(group, source)


def _selected(path: str, columns: list[str] | None) -> bool:
    """Whether the column chunk at `path` (`meta.label`, `image.bytes`) is read when `columns` are
    (all when None): a top-level column's every leaf, or a leaf or struct inside one named by its
    dotted path, as pyarrow selects them (`meta.label` of a struct whose `meta.mask` is unread)."""
    if columns is None:
        return True
    parts = path.split(".")
    return any(".".join(parts[:depth]) in columns for depth in range(1, len(parts) + 1))


def declared_bytes(group, columns: list[str] | None = None, leaf: str | None = None) -> int:
    """What reading a row group's `columns` (all by default), or the one `leaf` of a struct
    (`image.path`), costs, from its footer: for each of their column chunks its uncompressed size
    or, if larger, its stored size."""
    chunks = [group.column(i) for i in range(group.num_columns)]
    return sum(max(c.total_uncompressed_size, c.total_compressed_size) for c in chunks
               if _selected(c.path_in_schema, columns)
               and (leaf is None or c.path_in_schema == leaf))


# What each value of a column chunk costs read into Arrow, beyond the bytes of strings its footer
# or dictionary says (`_judged_read`): a validity byte (nulls too) and, by its physical type, its
# width (a string its offset and, read as a dictionary, its index). The footer's `num_values` of a
# chunk counts each item of a list: 16 rows of 500,000 'ab' each (a 1 KB file) declared 16 MB.
# Its statistics' `null_count` is not taken off: a footer may say anything, the values are read.
VALUE_SLOT_BYTES = 1
VALUE_BYTES = {"BOOLEAN": 1, "INT32": 4, "INT64": 8, "INT96": 12, "FLOAT": 4, "DOUBLE": 8, "BYTE_ARRAY": 8,
               "FIXED_LEN_BYTE_ARRAY": 0}
# What a value costs handed over as Python (`to_pylist`): its slot in a list or dict and its object
# (an int 28 bytes, a float 24, a str 49 before its own bytes, a dict or list more; None, True and
# False are shared). Judged on each batch before it is handed over (`python_bytes`): those 16 rows
# were 470 MB as Python, in one batch.
PYTHON_VALUE_BYTES = 64


def item_bytes(group, columns: list[str] | None = None, leaf: str | None = None) -> int:
    """What a row group's `columns` (all by default), or the one `leaf`, cost a value at a time
    read into Arrow (`VALUE_BYTES`), from each column chunk's `num_values` in its footer, unread."""
    chunks = [group.column(i) for i in range(group.num_columns)]
    return sum(c.num_values * (VALUE_SLOT_BYTES + VALUE_BYTES.get(c.physical_type, 8)) for c in chunks
               if _selected(c.path_in_schema, columns)
               and (leaf is None or c.path_in_schema == leaf))


def _dictionary_chunks(group, columns: list[str] | None, leaf: str | None = None) -> list[Any]:
    """A row group's column chunks of byte strings (binary, text, fixed-size binary) that carry a
    dictionary page: each of their rows may repeat one value of the dictionary (`value_bytes`)."""
    chunks = [group.column(i) for i in range(group.num_columns)]
    return [c for c in chunks if c.has_dictionary_page and c.physical_type in ("BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY")
            and _selected(c.path_in_schema, columns)
            and (leaf is None or c.path_in_schema == leaf)]


def _chunk_bytes(chunk) -> int:
    """What a column chunk declares in its footer: its uncompressed size or, if larger, its stored size."""
    return max(chunk.total_uncompressed_size, chunk.total_compressed_size)


def _fixed_width_bytes(parquet, group, chunk) -> int:
    """What a FIXED_LEN_BYTE_ARRAY chunk holds read, without reading it: each of its values (rows of
    a list count each item) its width (pyarrow reads none of them as a dictionary)."""
    index = next(i for i in range(group.num_columns) if group.column(i).path_in_schema == chunk.path_in_schema)
    return chunk.num_values * parquet.schema.column(index).length


# a DELTA_BYTE_ARRAY chunk is judged by reading it (`_delta_bytes`) at most this many bytes a batch
DELTA_BATCH_BYTES = 16 << 20


def _delta_chunks(group, columns: list[str] | None, leaf: str | None = None) -> list[Any]:
    """A row group's column chunks of byte strings with DELTA_BYTE_ARRAY pages (parquet-mr's v2
    writer falls back to it; pyarrow writes it when asked): each value is its previous one's
    first bytes and a suffix, so a few bytes stand for a value as long as all the suffixes."""
    chunks = [group.column(i) for i in range(group.num_columns)]
    return [c for c in chunks if c.physical_type == "BYTE_ARRAY" and "DELTA_BYTE_ARRAY" in c.encodings
            and _selected(c.path_in_schema, columns)
            and (leaf is None or c.path_in_schema == leaf)]


def _delta_bytes(source: Any, parquet, index: int, chunk, stop: int) -> int:
    """What a DELTA_BYTE_ARRAY chunk's values hold read (at least its declared size). No value is
    longer than the chunk's declared size (its suffixes together): a flat column is read alone,
    so many rows a batch that a batch holds at most `DELTA_BATCH_BYTES` (or one value), its
    values' lengths summed until past `stop`. In a list a row may hold every value: there, its
    values times its declared size, unread (a pyarrow file of 200 rows of one 8 MiB caption so
    written is 1.3 KB, declares 8 MiB and read as 1.6 GB)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    declared = _chunk_bytes(chunk)
    group = parquet.metadata.row_group(index)
    position = next(i for i in range(group.num_columns) if group.column(i).path_in_schema == chunk.path_in_schema)
    if parquet.schema.column(position).max_repetition_level > 0:
        return max(declared, chunk.num_values * declared)
    reader = pq.ParquetFile(source, metadata=parquet.metadata, pre_buffer=False)
    held = 0
    for batch in reader.iter_batches(batch_size=max(1, DELTA_BATCH_BYTES // max(declared, 1)), row_groups=[index],
                                     columns=[chunk.path_in_schema], use_threads=False):
        values = batch.column(0)
        while pa.types.is_struct(values.type):  # `image.bytes`: the leaf inside its structs
            values = values.flatten()[0]
        held += pc.sum(pc.binary_length(values)).as_py() or 0
        if held > stop:
            break
    return max(declared, held)


def python_bytes(array) -> int:
    """What `array` (a column of a batch about to be handed over) costs as Python: each value, in
    structs, lists and maps too, `PYTHON_VALUE_BYTES`, and each byte string its bytes (of a
    dictionary-encoded one, the value each row points at)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(array, pa.ChunkedArray):
        return sum(python_bytes(a) for a in array.chunks)
    own = len(array) * PYTHON_VALUE_BYTES
    if pa.types.is_dictionary(array.type):
        return own + dictionary_held(array)
    if pa.types.is_struct(array.type):
        return own + sum(python_bytes(a) for a in array.flatten())
    if isinstance(array, pa.MapArray):
        return own + python_bytes(array.keys) + python_bytes(array.items)
    if isinstance(array, (pa.ListArray, pa.LargeListArray, pa.FixedSizeListArray)):
        return own + python_bytes(array.flatten())
    if is_binary(array.type) or _is_text(array.type) or pa.types.is_fixed_size_binary(array.type):
        return own + (pc.sum(pc.binary_length(array)).as_py() or 0)
    return own


def dictionary_held(array) -> int:
    """The bytes of the values each row of `array` points at in its dictionary-encoded leaves (in
    structs, lists and maps, at any depth: `captions: Sequence(Value("string"))`); other leaves
    count nothing (their footer's size bounds them)."""
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        return sum(dictionary_held(a) for a in array.chunks)
    if pa.types.is_dictionary(array.type):
        return _pointed_at_bytes(array)
    if pa.types.is_struct(array.type):  # flatten: the struct's own offset applied to each field
        return sum(dictionary_held(a) for a in array.flatten())
    if isinstance(array, pa.MapArray):  # its keys and items, each map's (offsets applied)
        return dictionary_held(array.keys) + dictionary_held(array.items)
    if isinstance(array, (pa.ListArray, pa.LargeListArray, pa.FixedSizeListArray)):
        return dictionary_held(array.flatten())  # the items the rows hold, offsets applied
    return 0


def _valid(array) -> np.ndarray | None:
    """Which slots of `array` hold a value (its validity bitmap, its offset applied); None when
    every one does."""
    if not array.null_count:
        return None
    bits = np.frombuffer(array.buffers()[0], np.uint8)
    return np.unpackbits(bits, bitorder="little")[array.offset: array.offset + len(array)].astype(bool)


def _pointed_at_bytes(array) -> int:
    """The bytes of the dictionary value each row of dictionary array `array` points at (a null row,
    or a null value, nothing), read from the arrays' buffers with numpy: pyarrow's compute module,
    which `pc.take(pc.binary_length(...))` would load, costs every build with an img2dataset
    listing 0.1 CPU-s to import (issue 18's startup). Values of another type than (large) binary
    or string (a view type) are left to pyarrow's compute."""
    import pyarrow as pa

    values, indices = array.dictionary, array.indices
    if not len(indices) or not len(values):
        return 0
    width = {pa.binary(): np.int32, pa.string(): np.int32, pa.large_binary(): np.int64,
             pa.large_string(): np.int64}.get(values.type)
    if width is None:
        import pyarrow.compute as pc

        return pc.sum(pc.take(pc.binary_length(values), indices)).as_py() or 0
    offsets = np.frombuffer(values.buffers()[1], width)[values.offset: values.offset + len(values) + 1]
    lengths = np.diff(offsets).astype(np.int64)
    present = _valid(values)
    if present is not None:
        lengths[~present] = 0
    kind = "u" if pa.types.is_unsigned_integer(indices.type) else "i"
    rows = np.frombuffer(indices.buffers()[1], f"<{kind}{indices.type.bit_width // 8}")
    rows = rows[indices.offset: indices.offset + len(indices)]
    taken = _valid(indices)
    return int(lengths[rows if taken is None else rows[taken]].sum())


def _judged_read(source: Any, parquet, index: int, columns: list[str] | None, budget: int | None = None,
                 leaf: str | None = None, group=None, read_within: int | None = None):
    """What row group `index`'s `columns` (all by default), or its one `leaf`, hold: the footer's
    size of each chunk, but of a dictionary-encoded one of byte strings the bytes its rows point
    at (`dictionary_held`, at least its declared size) and of fixed-size binary its rows times its
    width, and what each value costs read (`item_bytes`); and, when `budget` is given and that
    passes no more than it, the group read (once: its encoded chunks left as dictionaries, within
    their declared size). Without `budget` only the encoded chunks are read. Over `budget` before
    any value is read (fixed-size binary, the values' count, or a footer's sizes): nothing is.
    `group`: its `checked_group`, if already made. `read_within` (by default `budget`): the most
    it may pass before any value is read for the group to be read (`row_batches` reads a group
    whole only within `budget // WHOLE_READ_COPIES`; over it, unread, it is judged by `budget`)."""
    import pyarrow.parquet as pq

    group = group if group is not None else checked_group(parquet, index, source)
    encoded = _dictionary_chunks(group, columns, leaf)
    strings = sorted(c.path_in_schema for c in encoded if c.physical_type == "BYTE_ARRAY")
    fixed = sum(max(_chunk_bytes(c), _fixed_width_bytes(parquet, group, c)) for c in encoded
                if c.physical_type == "FIXED_LEN_BYTE_ARRAY")
    delta = [c for c in _delta_chunks(group, columns, leaf) if c.path_in_schema not in {e.path_in_schema for e in encoded}]
    plain = {c.path_in_schema for c in encoded + delta}
    size = fixed + item_bytes(group, columns, leaf) + sum(
        _chunk_bytes(c) for c in (group.column(i) for i in range(group.num_columns))
        if _selected(c.path_in_schema, columns)
        and (leaf is None or c.path_in_schema == leaf) and c.path_in_schema not in plain)
    for chunk in delta:  # read to be judged, each while the group is within `budget`
        limit = ROW_GROUP_BYTES if budget is None else budget
        size += _delta_bytes(source, parquet, index, chunk, limit - size) if size <= limit else _chunk_bytes(chunk)
    stated = sum(_chunk_bytes(c) for c in encoded if c.physical_type == "BYTE_ARRAY")
    within = budget if read_within is None else read_within
    if not strings or (budget is not None and size + stated > within):
        return size + stated, None
    reader = pq.ParquetFile(source, metadata=parquet.metadata, read_dictionary=strings, pre_buffer=False)
    read = strings if budget is None else [leaf] if leaf else columns
    table = reader.read_row_group(index, columns=read, use_threads=False)
    return size + max(stated, sum(dictionary_held(c) for c in table.columns)), table


def value_bytes(source: Any, parquet, index: int, columns: list[str] | None = None) -> int:
    """What row group `index`'s `columns` (all by default) hold once their values are byte strings
    of their own, as a read hands them over: `declared_bytes`, but for a dictionary-encoded chunk
    of byte strings the bytes of the value each row points at, in structs and lists too. Its
    footer says the size of the dictionary: a pyarrow file of one 8 MiB image in 200 rows
    (`dictionary_pagesize_limit` raised, or a small image repeated) declared 8 MiB and read as
    1.6 GB; a `Sequence(Value("string"))` of one 8 MiB caption the same. Those chunks are read here
    as dictionaries (the dictionary and a 4-byte index a row: within their declared size) from
    `source`, the opened file; fixed-size binary is its rows times its width, unread."""
    size, _ = _judged_read(source, parquet, index, columns)
    return size


# a row group over the budget is read a few rows at a time through a buffered stream of this many
# bytes (pyarrow then holds a page of each column at once, not the group's chunks): `datasets` sizes
# its groups from the average row (a 292 MB last group after many thumbnails), img2dataset writes
# 100 rows a group whatever their size (100 photos of 2.9 MB). So read, rows of at most
# `STREAM_BATCH_BYTES` a batch, that 292 MB group peaked at ~100 MB (64 rows a batch: 740 MB)
STREAM_BUFFER_BYTES = 1 << 20
STREAM_BATCH_BYTES = 8 << 20


# What reading a row a few rows at a time holds of one value beyond its page (stored and decoded,
# counted in `Streamed.held`): pyarrow's Arrow array of it (grown as it is built), its Python bytes
# and the record handed on. Measured (pyarrow 25, one value a page, a row a batch, each record let go
# before the next): rows of 30, 50 and 80 MB peaked at 262, 327 and 474 MiB RSS, 6.7, 5.4 and 5.3
# times a row over the process's 70 MiB before it read; counted 2 + 4 = 6 times (the bound was 3).
ROW_COPIES = 4
# What reading a row group whole holds at its peak, in times its size as judged (`declared_bytes`,
# `item_bytes`, dictionaries read out): its chunks read in as stored, its values decoded into
# Arrow arrays grown as they are built, a batch of rows as Python and the records handed on.
# Measured (pyarrow 25, one group of N rows read by `row_batches`, the rows handed on, peak RSS over
# the process's before the read): `datasets` 5.2's files (image PLAIN, uncompressed) 3.3 to 4.2 times
# (80 photos of 3 MB, 228 MiB: 841 MiB; 1,000 of 100 KB: 3.3), pyarrow's and pandas' defaults
# (dictionary pages falling back to plain, snappy) 4.7 to 6.6 (the 80 photos: 1315 MiB). A group
# judged over `budget // WHOLE_READ_COPIES` is read a few rows at a time where its pages say that
# stays within the budget (`streamed_bytes`): `datasets` 5.2's 238 MB group of 80 photos of 3 MB
# built at 898 MiB peak RSS, so read at 124 MiB. One whose image column's pages hold many rows
# each (pyarrow's defaults write a group of up to 1,024 images in one dictionary page) has that
# column read a value at a time from its pages (`parquet_paged`: pandas' 80 photos of 3 MB, read
# whole at 1366 MiB peak RSS, so at 168 MiB); a group whose other columns cannot be so is read whole.
WHOLE_READ_COPIES = 6


@dataclass(frozen=True)
class Streamed:
    """What reading a row group a few rows at a time holds (`streamed_bytes`): `held`, its columns'
    largest pages and dictionaries, whatever the rows; `row`, at most what each row's values are
    (each held `ROW_COPIES` times more); `shared`, for each flat column whose largest page or
    dictionary page holds more than one value (pyarrow decodes a page whole, whichever rows are
    asked for: img2dataset's image column is one dictionary page of all its group's images, DuckDB
    writes 35 photos of 3 MB a page), (column, "dictionary" or "page", its bytes, its values)."""

    held: int
    row: int
    lists: int = 0  # of `held`, its columns of lists, each whole
    shared: tuple[tuple[str, str, int, int], ...] = ()
    # each flat column's (path, largest data page, `fewest_values`, a row's own bytes: its slot and,
    # dictionary-encoded, the dictionary's largest value, at first its whole page): `batch_bytes`
    flat: tuple[tuple[str, int, int, int], ...] = ()

    def cost(self) -> int:
        """What one row read alone holds at most."""
        return self.held + ROW_COPIES * self.row

    def fits(self, budget: int) -> bool:
        """Whether one row read alone stays within `budget`."""
        return self.cost() <= budget

    def batch_bytes(self, rows: int) -> int:
        """What a batch of `rows` rows holds of its values at most: of each column of byte strings
        the pages they lie in (a run of rows spans at most `2 + (rows - 2) // fewest_values` pages,
        each at most its largest) and, dictionary-encoded, the dictionary's largest value a row;
        of the others their width a row. Each row was counted at its largest page or dictionary
        page: a 69 MB group of 240,000 captions (`datasets` writes 1 MiB pages and dictionary
        pages) came 5 rows a batch (6.9 s; 64 rows a batch, 0.9 s)."""
        held = 0
        for _, page, fewest, each in self.flat:
            spanned = 1 if rows < 2 or not fewest else 2 + (rows - 2) // fewest  # not fewest: one page
            held += min(rows, spanned) * page + rows * each
        return held

    def with_largest(self, largest: dict[str, int]) -> "Streamed":
        """The same, each dictionary-encoded column in `largest` counted at its dictionary's
        largest value a row (`largest_values`), not its whole dictionary page."""
        flat = tuple((path, page, fewest, each if path not in largest else VALUE_SLOT_BYTES + VALUE_BYTES["BYTE_ARRAY"]
                      + largest[path]) for path, page, fewest, each in self.flat)
        return Streamed(self.held, self.row, self.lists, self.shared, flat)

    def batch_rows(self) -> int:
        """Rows a batch: as many as hold `STREAM_BATCH_BYTES` (at least one, at most `BATCH_ROWS`)."""
        if not self.flat:
            return max(1, min(BATCH_ROWS, STREAM_BATCH_BYTES // max(self.row, 1)))
        rows = 1
        while rows < BATCH_ROWS and self.batch_bytes(rows + 1) <= STREAM_BATCH_BYTES:
            rows += 1
        return rows


def streamed_bytes(parquet, group, columns: list[str] | None = None) -> Streamed | None:
    """What a row group's `columns` (all by default) hold read a few rows at a time, from its page
    headers (`group`: a `CheckedGroup`), unread: for each flat column chunk its largest data page
    stored and decompressed and its dictionary (decoded, and its page), and a row's value at most
    its largest page or dictionary (a value lies in one page); a column of lists, whose row may
    span pages, its whole chunk (`declared_bytes`, `item_bytes`, each value a dictionary's size).
    None where it cannot be judged so: a footer alone (no page headers) or a DELTA_BYTE_ARRAY chunk
    (a page of shared prefixes decodes to more than it stores)."""
    if not isinstance(group, CheckedGroup):
        return None
    held = row = lists = 0
    shared, flat = [], []
    for position in range(group.num_columns):
        chunk = group.column(position)
        if not _selected(chunk.path_in_schema, columns):
            continue
        if chunk.physical_type == "BYTE_ARRAY" and "DELTA_BYTE_ARRAY" in chunk.encodings:
            return None
        pages = chunk.pages()
        dictionary = pages.dictionary_uncompressed  # whatever the footer's flag says (`CheckedChunk.has_dictionary_page`)
        slot = VALUE_SLOT_BYTES + VALUE_BYTES.get(chunk.physical_type, 8)
        if parquet.schema.column(position).max_repetition_level > 0:
            whole = _chunk_bytes(chunk) + chunk.num_values * (slot + dictionary)
            held, lists = held + whole, lists + whole
            continue
        held += pages.largest_compressed + pages.largest_uncompressed + 2 * dictionary
        row += max(pages.largest_uncompressed, dictionary) + slot
        if chunk.physical_type == "BYTE_ARRAY":  # a value of its dictionary at most its page (`with_largest`)
            flat.append((chunk.path_in_schema, pages.largest_uncompressed, pages.fewest_values, slot + dictionary))
        else:  # its width a value, read from a page or its dictionary
            width = parquet.schema.column(position).length if chunk.physical_type == "FIXED_LEN_BYTE_ARRAY" else 0
            flat.append((chunk.path_in_schema, 0, 0, slot + max(width or 0, 0)))
        if dictionary >= pages.largest_uncompressed and pages.dictionary_values > 1:
            shared.append((chunk.path_in_schema, "dictionary", dictionary, pages.dictionary_values))
        elif pages.largest_uncompressed > dictionary and pages.largest_values > 1:
            shared.append((chunk.path_in_schema, "page", pages.largest_uncompressed, pages.largest_values))
    return Streamed(held, row, lists, tuple(shared), tuple(flat))


def _inflation(source: Any) -> Any:
    """The file `source`'s `parquet_inflation.Inflation` (imported here: only a file read needs it)."""
    from sources import parquet_inflation, parquet_values

    return parquet_inflation.Inflation(parquet_values.file_size(source))


def row_batches(parquet, name: str, key_columns: tuple[str, ...] = (), columns: list[str] | None = None,
                source: Any = None, image: str | None = None, captions: tuple[str, ...] = (),
                budget: int | None = None) -> Iterator[tuple[int, list[dict]] | TooLarge]:
    """Each row group of `parquet` (a `pyarrow.parquet.ParquetFile` of file `name`, opened from
    `source`) as (index of the first row, rows of `columns`, by default all), `BATCH_ROWS` at a
    time, or as `TooLarge` when its footer declares more than `ROW_GROUP_BYTES`, or its values
    hold more read (`item_bytes`, `value_bytes`, judged where a dictionary-encoded chunk could:
    then only `key_columns` of it are read, if they hold no more; `too_large` says how its rows
    come). A batch whose rows hold more as Python (`python_bytes`) comes a row at a time, a row
    that does a `TooLarge` of its own. A group of over `MAX_LISTED_ROWS` rows whose `image` column
    its footer's statistics say is null in every row is not read: its rows come as `too_large`
    does, `MISSING_IMAGE`. A group so judged is read once: the rows come from the dictionaries
    read to judge it (`datasets` and pyarrow write every image column with a dictionary page, so
    an honest image parquet was read twice). A cell of a `captions` column (a string column) that
    is not UTF-8 comes as its bytes, as a `binary` column's cell does (its reader makes it text as
    `img2dataset_listing.caption_cell` does): its row is read, not a `TEXT_NOT_UTF8` reject.
    A group over `budget` (by default `ROW_GROUP_BYTES`) whose pages say a few of its rows fit
    (`streamed_bytes`) is read so many rows a batch through a buffered stream, never whole: only
    a group one row or page of which passes it is `TooLarge`. So is one within it judged over
    `budget // WHOLE_READ_COPIES` (read whole, it would hold over `budget`), where its pages say
    a few rows fit; else its image column is read a value at a time from its pages where the rest
    of the group fits (`parquet_paged`: a value over what a row may hold is its row's `TooLarge`
    alone), else it is read whole, as one within that is (the fast read)."""
    meta = parquet.metadata
    budget = ROW_GROUP_BYTES if budget is None else budget
    key_columns = tuple(c for c in key_columns if c in parquet.schema_arrow.names)
    first, listing = 0, ListedRows()
    spent = None  # what the Python snappy decoder has spent on the file's paged groups (`FileCost`)
    inflation = None if source is None else _inflation(source)
    for index in range(meta.num_row_groups):
        group = checked_group(parquet, index, source)
        if image is not None and group.num_rows > listing.left and _all_null(parquet, group, image):
            yield from too_large(parquet, index, first, key_columns, source,
                                 f"{name}: row group {index}: the {image!r} of each of its {group.num_rows} rows is "
                                 "null (no bytes, no path), as its footer's statistics say: not read", MISSING_IMAGE,
                                 listing)
            first += group.num_rows
            continue
        declared = declared_bytes(group, columns)
        if inflation is not None and not inflation.take(declared):
            keys = tuple(c for c in key_columns if inflation.spare(declared_bytes(group, [c])))
            yield from too_large(parquet, index, first, keys, source, f"{name}: row group {index}: "
                                 f"{inflation.detail(declared)}", VALUE_TOO_COSTLY, listing)
            first += group.num_rows
            continue
        size = declared + item_bytes(group, columns)
        table = streamed = None
        judged = size <= budget and source is not None and bool(_dictionary_chunks(group, columns)
                                                                or _delta_chunks(group, columns))
        whole = budget // WHOLE_READ_COPIES  # the most a group read whole may be judged to hold
        if judged:  # the read that judges it is the read, when it is read whole (within `whole`)
            size, table = _judged_read(source, parquet, index, columns, budget, group=group, read_within=whole)
            table = table if size <= budget else None
        if size > whole and source is not None:  # read whole, it would hold over the budget
            streamed = streamed_bytes(parquet, group, columns)
        paged = None
        if streamed is not None and streamed.fits(budget):  # a few rows at a time, within the budget
            table = None
            streamed = _batch_sized(streamed, source, parquet, index, group, columns)
        elif size <= budget:  # its pages of many rows pass the budget read a few at a time too: paged, or whole
            streamed = None
            if size > whole and source is not None:
                paged = _paged(parquet, group, columns, budget)
            if paged is None and table is None and judged \
                    and any(c.physical_type == "BYTE_ARRAY" for c in _dictionary_chunks(group, columns)):
                size, table = _judged_read(source, parquet, index, columns, budget, group=group)  # left unread above
                table = table if size <= budget else None
                streamed = streamed_bytes(parquet, group, columns) if size > budget else None
        if streamed is not None and not streamed.fits(budget) and streamed.cost() - streamed.lists <= budget:
            streamed = None  # its lists, read whole whatever the rows: as a group too large
        if streamed is not None and not streamed.fits(budget) and source is not None:
            paged = _paged(parquet, group, columns, budget)  # its image's pages of many rows, or a row too large
            streamed = None if paged is not None else streamed
        if paged is not None:
            table = None
        if streamed is not None and not streamed.fits(budget):
            yield from too_large(parquet, index, first, key_columns, source,
                                 f"{name}: row group {index} holds {streamed.cost()} bytes read even one row at a "
                                 f"time, over the {budget} byte budget: {_unstreamable(streamed, budget, parquet)}",
                                 ROW_GROUP_TOO_LARGE, listing)
        elif size > budget and streamed is None and paged is None:
            said = f"declares {declared} bytes" if declared > budget else \
                f"holds {size} bytes once read (its values, each its width; its footer declares {declared})"
            yield from too_large(parquet, index, first, key_columns, source,
                                 f"{name}: row group {index} {said} for its {group.num_rows} rows, over the "
                                 f"{budget} byte budget of one row group: not read; write it with "
                                 "smaller row groups (pyarrow.parquet.write_table(..., row_group_size=100))",
                                 ROW_GROUP_TOO_LARGE, listing)
        else:
            if paged is not None:  # its image column a value at a time, the rest a few rows at a time
                from sources import parquet_paged, parquet_values

                spent = parquet_values.FileCost(stored=parquet_values.file_size(source)) if spent is None else spent
                batches = parquet_paged.paged_batches(source, parquet, index, paged, columns, spent)
            elif table is not None:
                batches = (table.slice(start, BATCH_ROWS) for start in range(0, table.num_rows, BATCH_ROWS))
            elif streamed is not None:  # over the budget whole: a few rows at a time, a page held at once
                batches = _stream(source, parquet).iter_batches(
                    batch_size=streamed.batch_rows(), row_groups=[index], columns=columns, use_threads=False)
            else:
                batches = parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=[index], columns=columns,
                                               use_threads=False)
            start, nulls = first, _NullImages(image, first, listing)
            for batch in batches:
                if not hasattr(batch, "num_rows"):  # a `parquet_paged.RefusedRow`: its value over what a row may hold
                    yield _refused_row(batch, first, f"{name}: row group {index}", key_columns, paged, budget)
                    nulls.first += 1
                    start += 1
                    continue
                for offset, run in nulls.kept_runs(batch):
                    yield from _handed_over(run, start + offset, f"{name}: row group {index}", key_columns,
                                            captions, budget)
                start += batch.num_rows
            # the last batch, a slice of `table`, kept the group alive while the next one was read
            batch = run = table = None
            if nulls.dropped:
                yield TooLarge(nulls.first_dropped, [{}], f"{nulls.dropped} rows from row {nulls.first_dropped} to "
                               f"{nulls.last_dropped} (this one reject for them all) of {name}: row group {index}: "
                               f"their {image!r} is null (no bytes, no path), past the first {MAX_LISTED_ROWS} "
                               "rows of the file listed one reject each", MISSING_IMAGE)
        first += group.num_rows


def _paged(parquet, group, columns: list[str] | None, budget: int):
    """`parquet_paged.paged_read` of the group, or None."""
    from sources import parquet_paged

    return parquet_paged.paged_read(parquet, group, columns, budget)


def _refused_row(refused, first: int, where: str, key_columns: tuple[str, ...], paged, budget: int) -> TooLarge:
    """The `TooLarge` of one row of a paged read whose image value was not read (`RefusedRow`)."""
    from sources import parquet_paged

    row = first + refused.offset
    keys = [c for c in key_columns if c in refused.row.schema.names]
    named = refused.row.select(keys).to_pylist() if keys else [{}]
    detail = f"{where}: row {row}: {parquet_paged.refused_detail(refused, paged, budget)}"
    if refused.refused.why and not refused.refused.too_large:  # nothing in it too large: reading it costs past a bound
        return TooLarge(row, named, detail, VALUE_TOO_COSTLY)
    return TooLarge(row, named, detail, ROW_GROUP_TOO_LARGE)


class ListedRows:
    """How many more rows of one file may each be a reject of their own, its row groups together
    (`MAX_LISTED_ROWS` in all): capped a group at a time, 100 groups of 10,000 null images (a 43 KB
    file) gave 10**6 rejects (12.9 CPU-s). Past it, each group's rest is one reject."""

    def __init__(self) -> None:
        self.left = MAX_LISTED_ROWS

    def take(self, rows: int) -> int:
        """Of `rows` more, how many are listed one a reject."""
        taken = max(0, min(rows, self.left))
        self.left -= taken
        return taken


class _NullImages:
    """The rows of one row group whose `image` is null (the cell, or both its bytes and its path),
    counted as its batches are read: as many as `listing` still lists are handed over (each its
    own `missing_image`), the rest left out and counted (`dropped`: one reject for them all). A
    file without statistics, or of one image and 1,999,999 nulls, gave 2,000,000 rejects (23 CPU-s)."""

    def __init__(self, image: str | None, first: int, listing: ListedRows | None = None):
        self.image, self.first, self.dropped = image, first, 0
        self.listing = ListedRows() if listing is None else listing
        self.first_dropped = self.last_dropped = -1

    def kept_runs(self, batch) -> Iterator[tuple[int, Any]]:
        """(offset, slice) of each run of rows of `batch` (its first row `self.first` on) kept."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        start, self.first = self.first, self.first + batch.num_rows
        if self.image is None or self.image not in batch.schema.names:
            yield 0, batch
            return
        cell = batch.column(self.image)
        null = pc.is_null(cell)
        if pa.types.is_struct(cell.type) and cell.type.get_field_index("bytes") >= 0 \
                and cell.type.get_field_index("path") >= 0:
            null = pc.or_(null, pc.and_(pc.is_null(pc.struct_field(cell, "bytes")),
                                        pc.is_null(pc.struct_field(cell, "path"))))
        null = np.asarray(null.to_numpy(zero_copy_only=False), dtype=bool)
        room = self.listing.left
        if int(null.sum()) <= room:
            self.listing.take(int(null.sum()))
            yield 0, batch
            return
        drop = null & (np.cumsum(null) > room)
        self.listing.take(room)
        dropped = np.flatnonzero(drop)
        if not self.dropped:
            self.first_dropped = start + int(dropped[0])
        self.last_dropped = start + int(dropped[-1])
        self.dropped += len(dropped)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], ~drop, [0])).astype(np.int8)))  # kept runs' bounds
        for begin, end in zip(edges[::2], edges[1::2]):
            yield int(begin), batch.slice(int(begin), int(end - begin))


def _unstreamable(streamed: Streamed, budget: int, parquet) -> str:
    """Why a row group over `budget` cannot be read a few rows at a time either, and how its writer
    would write one that can: the pages (or dictionary pages) of many rows pyarrow decodes whole,
    the largest first, as many as a row read alone would fit without (each held, and a row's share
    of it, as one of its values: `(2 + ROW_COPIES)` times); none: a row that large. DuckDB's pages
    of 35 photos of 3 MB were called "a row that large" where each row was 3 MB."""
    over, named = streamed.cost() - budget, []
    for column, kind, size, values in sorted(streamed.shared, key=lambda s: -s[2]):
        if over <= 0:
            break
        named.append((column, kind, size, values))
        over -= (2 + ROW_COPIES) * (size - size // values)
    if over > 0:
        return "a row that large (its largest pages and values) is no input this source reads"
    said = ", ".join(f"the dictionary page of {column!r} ({values} values, {size} bytes)" if kind == "dictionary"
                     else f"the page of {column!r} ({values} rows, {size} bytes)" for column, kind, size, values in named)
    rows = max(1, budget // (2 * (2 + ROW_COPIES) * sum(size // values for _, _, size, values in named)))
    average = max(size // values for _, _, size, values in named)
    return f"write fewer rows a group ({_fewer_rows(parquet, rows, average)}): pyarrow decodes whole {said}"


IMG2DATASET_COLUMNS = {"key", "status", "error_message"}  # of each row img2dataset writes, whatever its output


def _fewer_rows(parquet, rows: int, average: int) -> str:
    """How the writer that made `parquet` (its footer's `created_by`; img2dataset, which writes with
    pyarrow, by its columns) writes groups of `rows` rows of `average` bytes."""
    made_by = parquet.metadata.created_by or ""
    if IMG2DATASET_COLUMNS <= set(parquet.schema_arrow.names):
        return f"img2dataset: --number_sample_per_shard {rows}"
    if made_by.startswith("DuckDB"):  # its ROW_GROUP_SIZE 10 still wrote 100 rows a group (2.0): a size
        return f"DuckDB: COPY ... (FORMAT parquet, ROW_GROUP_SIZE_BYTES '{max(1, rows * average // 10**6)}MB')"
    if made_by.startswith("Polars"):
        return f"polars: write_parquet(..., row_group_size={rows})"
    if HF_METADATA_KEY in (parquet.schema_arrow.metadata or {}):
        return f"datasets: to_parquet(..., batch_size={rows})"
    return f"pyarrow or pandas: row_group_size={rows}"  # pandas' to_parquet passes it to pyarrow's write_table


def _stream(source: Any, parquet, read_dictionary: list[str] | None = None):
    """`parquet` (opened from `source`) opened again to read through a buffered stream of
    `STREAM_BUFFER_BYTES`, nothing read ahead: a batch holds the pages its rows lie in, not
    the row group's column chunks."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(source, metadata=parquet.metadata, buffer_size=STREAM_BUFFER_BYTES, pre_buffer=False,
                          read_dictionary=read_dictionary)


def _batch_sized(streamed: Streamed, source: Any, parquet, index: int, group, columns: list[str] | None) -> Streamed:
    """`streamed`, its dictionary-encoded columns counted at their largest value (`largest_values`)
    where that would let a batch hold more rows; else as it is, nothing more read."""
    paths = [c.path_in_schema for c in _dictionary_chunks(group, columns) if c.physical_type == "BYTE_ARRAY"]
    if streamed.with_largest(dict.fromkeys(paths, 0)).batch_rows() <= streamed.batch_rows():
        return streamed
    return streamed.with_largest(largest_values(source, parquet, index, group, paths))


def largest_values(source: Any, parquet, index: int, group, paths: list[str]) -> dict[str, int]:
    """The largest value of the dictionary page of each flat column chunk of byte strings at
    `paths` of row group `index` (`group`, its `CheckedGroup`) that has one: its first row read
    alone as a dictionary (pyarrow decodes the dictionary page whole into it: within what
    `streamed_bytes` holds of it), as many entries as the page's header says or not counted.
    Streamed, each row of such a column was counted at its whole dictionary page (`datasets`
    writes captions in one of 1 MiB)."""
    largest = {}
    for chunk in _dictionary_chunks(group, None):
        position = next(i for i in range(group.num_columns) if group.column(i).path_in_schema == chunk.path_in_schema)
        if chunk.path_in_schema not in paths or chunk.physical_type != "BYTE_ARRAY" \
                or parquet.schema.column(position).max_repetition_level > 0:
            continue
        path = chunk.path_in_schema
        batch = next(_stream(source, parquet, [path]).iter_batches(batch_size=1, row_groups=[index], columns=[path],
                                                                   use_threads=False), None)
        values = batch.column(0) if batch is not None else None
        while values is not None and values.type.num_fields == 1 and not _is_dictionary(values.type):
            values = values.flatten()[0]  # `image.path`: the leaf inside its structs
        if values is not None and _is_dictionary(values.type) and len(values.dictionary) == chunk.pages().dictionary_values:
            largest[path] = _largest_length(values.dictionary)
        batch = values = None
    return largest


def _is_dictionary(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_dictionary(kind)


def _largest_length(values) -> int:
    """The length of the longest value of an array of byte strings (null: none)."""
    import pyarrow as pa

    width = {pa.binary(): np.int32, pa.string(): np.int32, pa.large_binary(): np.int64,
             pa.large_string(): np.int64}.get(values.type)
    if not len(values):
        return 0
    if width is None:
        import pyarrow.compute as pc

        return pc.max(pc.binary_length(values)).as_py() or 0
    offsets = np.frombuffer(values.buffers()[1], width)[values.offset: values.offset + len(values) + 1]
    return int(np.diff(offsets).max())


def _handed_over(batch, first: int, where: str, key_columns: tuple[str, ...],
                 captions: tuple[str, ...] = (), budget: int | None = None
                 ) -> Iterator[tuple[int, list[dict]] | TooLarge]:
    """A batch of rows (a table or record batch, its first row `first`) as Python, judged first
    (`python_bytes`): within `budget` whole; else a row at a time, a row over it a
    `TooLarge` of its `key_columns`. A `captions` cell that is not UTF-8 comes as its bytes."""
    budget = ROW_GROUP_BYTES if budget is None else budget
    if sum(python_bytes(c) for c in batch.columns) <= budget:
        try:
            rows = batch.to_pylist()
        except UnicodeDecodeError:  # a string not UTF-8 in some row: the others are read around it
            rows = None
        if rows is not None:
            yield first, rows
            return
        yield from _around_text_not_utf8(batch, first, where, [c for c in key_columns if c in batch.schema.names],
                                         captions)
        return
    keys = [c for c in key_columns if c in batch.schema.names]
    for offset in range(batch.num_rows):
        row = batch.slice(offset, 1)
        held = sum(python_bytes(c) for c in row.columns)
        if held <= budget:
            yield _row_or_reject(row, first + offset, where, keys, captions)
        else:
            yield TooLarge(first + offset, row.select(keys).to_pylist() if keys else [{}],
                           f"{where}: row {first + offset} holds {held} bytes as Python values (each an object), over "
                           f"the {budget} byte budget of one row group: not read", ROW_GROUP_TOO_LARGE)


TEXT_NOT_UTF8 = "text_not_utf8"


def _around_text_not_utf8(batch, first: int, where: str, keys: list[str],
                          captions: tuple[str, ...] = ()) -> Iterator[tuple[int, list[dict]] | TooLarge]:
    """A batch (its first row `first`) some string of which is not UTF-8, as `_row_or_reject` gives
    it a row at a time (each run of good rows as one batch, each bad row its `TEXT_NOT_UTF8`, a bad
    cell of a `captions` column its bytes), but each column read whole and a failing one halved
    down to its bad rows: a row at a time, a file with a bad caption in every batch (100,000 rows
    of 10 string columns) took 12x an honest one's."""
    columns, bad = [], set()
    names = batch.schema.names
    for name, column in zip(names, batch.columns):
        if name in captions and _is_text(_plain(column.type)):
            values = caption_values(column)
        else:
            values, failing = readable_values(column)
            bad.update(failing)
        columns.append(values)
    start = 0
    for row in sorted(bad) + [batch.num_rows]:
        if row > start:
            yield first + start, [{name: values[index] for name, values in zip(names, columns)}
                                  for index in range(start, row)]
        if row < batch.num_rows:
            yield _row_or_reject(batch.slice(row, 1), first + row, where, keys, captions)
        start = row + 1


def readable_values(column) -> tuple[list[Any], list[int]]:
    """A column's values as Python (None where a row's value cannot be) and the rows whose value
    holds text that is not UTF-8: halved until each failing part is one row."""
    try:
        return column.to_pylist(), []
    except UnicodeDecodeError:
        if len(column) == 1:
            return [None], [0]
    middle = len(column) // 2
    head, head_bad = readable_values(column.slice(0, middle))
    tail, tail_bad = readable_values(column.slice(middle))
    return head + tail, head_bad + [middle + row for row in tail_bad]


def caption_values(column) -> list[str | bytes | None]:
    """A string caption column's values as Python, a cell that is not UTF-8 as its bytes: the
    column's bytes taken once, not a failing cell at a time (halved down to it, then read again
    alone: 100,000 rows, every other one Latin-1, took 0.94 CPU-s, 3.02 dictionary-encoded)."""
    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        return [raw if raw is None else _utf8_or_bytes(raw) for raw in raw_text(column)]


def not_utf8_rows(column) -> set[int]:
    """The rows of a string column whose text is not UTF-8 (its bytes taken once)."""
    return {row for row, raw in enumerate(raw_text(column)) if raw is not None and isinstance(_utf8_or_bytes(raw), bytes)}


def _utf8_or_bytes(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def raw_text(column) -> list[bytes | None]:
    """A string column's values as the bytes they hold (UTF-8 or not: never decoded; a cell of
    one a writer filled unchecked, as pyarrow's `from_buffers`, Spark or DuckDB may)."""
    import pyarrow as pa

    if pa.types.is_dictionary(column.type):  # as `_judged_read` reads a dictionary-encoded chunk
        column = column.cast(column.type.value_type)
    large = pa.types.is_large_string(column.type)
    return column.cast(pa.large_binary() if large else pa.binary()).to_pylist()


def _plain(kind):
    """An Arrow type, a dictionary's its values' type."""
    import pyarrow as pa

    return kind.value_type if pa.types.is_dictionary(kind) else kind


def _row_or_reject(row, index: int, where: str, keys: list[str],
                   captions: tuple[str, ...] = ()) -> tuple[int, list[dict]] | TooLarge:
    """One row (a one-row table or batch) as Python, or, where a string of it is not UTF-8 (pyarrow
    writes what it is given, and reads it back unchecked: Python cannot), `TEXT_NOT_UTF8` naming
    the columns; the other rows of its file are read (the whole file was a `bad_parquet`). A
    `captions` cell that is not UTF-8 is its bytes, the row read."""
    try:
        return index, row.to_pylist()
    except UnicodeDecodeError:
        pass
    bad, cells = [], {}
    for name in row.schema.names:
        try:
            cells[name] = row.column(name).to_pylist()[0]
        except UnicodeDecodeError:
            if name in captions and _is_text(_plain(row.column(name).type)):
                cells[name] = raw_text(row.column(name))[0]
            else:
                bad.append(name)
    if not bad:
        return index, [cells]
    try:
        named = row.select([k for k in keys if k not in bad]).to_pylist() if keys else [{}]
    except UnicodeDecodeError:
        named = [{}]
    return TooLarge(index, named, f"{where}: row {index}: column {', '.join(map(repr, bad))[:120]} holds text "
                    "that is not UTF-8 (a string column must be): the row is not read", TEXT_NOT_UTF8)


def _all_null(parquet, group, image: str) -> bool:
    """Whether the footer's statistics say each leaf of column `image` of a row group is null in
    every row (a null `Image` cell, or one of neither bytes nor path). They may lie: then rows
    are rejects that had an image (no byte more is read). The leaves are the column's by the
    schema (those before it counted), never by the name before a dot in their path: an `Image`
    column `photo.v2` has leaves `photo.v2.bytes` and `photo.v2.path`."""
    schema = parquet.schema_arrow
    if image not in schema.names:
        return False
    position = schema.get_field_index(image)
    if position < 0:  # a name two columns have
        return False
    first = sum(_leaf_count(schema.field(i).type) for i in range(position))
    leaves = [group.column(i) for i in range(first, min(first + _leaf_count(schema.field(position).type),
                                                        group.num_columns))]
    if not all(c.path_in_schema.startswith(image + ".") for c in leaves):  # counted past MAX_NESTED_DEPTH
        return False
    stats = [c.statistics if c.is_stats_set else None for c in leaves]
    return bool(leaves) and all(s is not None and s.has_null_count and s.null_count == c.num_values == group.num_rows
                                for s, c in zip(stats, leaves))


def _leaf_count(kind, depth: int = 0) -> int:
    """How many parquet leaf columns an Arrow type takes (a struct its fields', a list its item's,
    a map its keys' and items'); past `MAX_NESTED_DEPTH` levels a field counts one (the caller
    checks the leaves' paths)."""
    import pyarrow as pa

    if depth > MAX_NESTED_DEPTH:
        return 1
    if pa.types.is_struct(kind):
        return sum(_leaf_count(kind.field(i).type, depth + 1) for i in range(kind.num_fields))
    if pa.types.is_map(kind):
        return _leaf_count(kind.key_type, depth + 1) + _leaf_count(kind.item_type, depth + 1)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _leaf_count(kind.value_type, depth + 1)
    return 1


# a row group too large to read, or of null images alone, gives one reject a row for its first rows,
# then one for all the rest: an honest file of 10**9 null images (4 MB, 15 row groups of 64 Mi rows)
# was read a row at a time, 10**9 `missing_image` rejects held by its unit (10**7: 98 CPU-s)
MAX_LISTED_ROWS = 10_000


def too_large(parquet, index: int, first: int, key_columns: tuple[str, ...], source: Any,
              detail: str, reason: str, listing: ListedRows | None = None) -> Iterator[TooLarge]:
    """Row group `index` (its first row `first`), not read: as `TooLarge` (`reason`) of its first
    rows, as many as `listing` (the file's, by default a fresh one) still lists, then, if it has
    more, one more standing for all the rest (the row after them, its detail naming them and how
    many). Each row's `key_columns` are read if they hold no more than `ROW_GROUP_BYTES`
    (`value_bytes`), else it is an empty row."""
    rows = parquet.metadata.row_group(index).num_rows
    listed = (ListedRows() if listing is None else listing).take(rows)
    keys = [{} for _ in range(min(rows, listed + 1))]
    if key_columns and (source is None or value_bytes(source, parquet, index, list(key_columns)) <= ROW_GROUP_BYTES):
        keys = parquet.read_row_group(index, columns=list(key_columns), use_threads=False) \
            .slice(0, len(keys)).to_pylist()
    if listed:
        yield TooLarge(first, keys[:listed], detail, reason)
    if rows > listed:
        yield TooLarge(first + listed, keys[listed:], f"rows {first + listed} to {first + rows - 1} "
                       f"({rows - listed} rows, this one reject for them all) of {detail}", reason)


def named_paths(parquet, image: str, source: Any = None) -> Iterator[str]:
    """The `path` of each row's `image` cell of `parquet` (a `pyarrow.parquet.ParquetFile` opened
    from `source`), that leaf alone read, a row group at a time; a group whose paths hold over
    `ROW_GROUP_BYTES` once read is passed over (its rows are then their unit's
    `row_group_too_large` rejects), judged as `row_batches` judges one: each value's cost
    (`item_bytes`) and, dictionary-encoded, the bytes each row points at (a path repeated in
    200 rows is stored once; without `source` that chunk is judged by its footer alone)."""
    leaf = f"{image}.path"
    for index in range(parquet.metadata.num_row_groups):
        group = checked_group(parquet, index, source)
        size = declared_bytes(group, leaf=leaf) + item_bytes(group, leaf=leaf)
        table = None
        if size <= ROW_GROUP_BYTES and source is not None and (_dictionary_chunks(group, None, leaf)
                                                              or _delta_chunks(group, None, leaf)):
            size, table = _judged_read(source, parquet, index, None, ROW_GROUP_BYTES, leaf, group)
        if size > ROW_GROUP_BYTES:
            continue
        batches = table.to_batches(BATCH_ROWS * 16) if table is not None else parquet.iter_batches(
            batch_size=BATCH_ROWS * 16, row_groups=[index], columns=[leaf], use_threads=False)
        for batch in batches:
            yield from (p for p in batch.column(0).flatten()[0].to_pylist() if p)  # null cells: null
        batch = table = None  # the group's paths let go before the next group is read


def is_binary(kind) -> bool:
    """Whether an Arrow type holds bytes (binary or large binary)."""
    import pyarrow as pa

    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


def _is_text(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def is_text(kind) -> bool:
    """Whether an Arrow type holds strings (a dictionary's values too)."""
    return _is_text(_plain(kind))
