"""Hugging Face "ImageFolder" metadata: `metadata.jsonl`, `.csv` or `.parquet` beside the images.

`datasets`' ImageFolder (`load_dataset("imagefolder", data_dir=...)`, `folder_based_builder.py`)
reads one row per image from a metadata file; its `file_name` is relative to the metadata file's
folder (it may name a subfolder, never climb out of it with `..` or be absolute), its other
columns (`text`, `caption`...) are the image's. A `<name>_file_name` column (`file_names`,
`<name>_file_names`: a list) names more images of the row (a ControlNet dataset's
`conditioning_image_file_name`): `datasets` gives each its own Image column; here such an image
is the row's (it rides in the lineage of the row's `file_name` image, an `extra_image` reject of
its own, never an image built alone nor an `unlisted_image`); a file without `file_name` takes
the first `<name>_file_name` column as the row's image (`lead_column`). Once a folder or one above has
metadata, an image no row names is left out of the dataset (so here it is an `unlisted_image` reject, counted); one
with none there is a plain image, and a file without `file_name` (another tool's table) is no
ImageFolder metadata. A metadata file
is parsed once per process (`fsio.cached_input`), judged by its size before it is read; what one
image takes from it is recorded as a derived input (`fsio.derived_input`): editing one row renders
again only the unit of the image that row names.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import posixpath
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterator

from sources import fsio, hf_parquet
from sources.paths import path_problem, relative_to_root
from sources.records import FILE_TOO_LARGE, nfc, read_input_bytes
from transforms.errors import exception_detail

METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")  # `datasets`' names
# a `metadata.parquet` is read whole once judged: what its footer declares uncompressed, at most
MAX_METADATA_PARQUET_BYTES = 256 << 20
# a metadata file is text, a row per image: ~450k rows of a caption and a few numbers fit; parsed
# (each row's own line kept, `Metadata`), it takes about 2.5 times its size. An image's lookup may
# pass three (`metadata.csv` and `.jsonl` of its folder, one above): four are kept parsed, together
# standing for at most `CACHED_METADATA_BYTES` of files (one larger file alone), so a worker holds
# at most about two large ones (four of 64 MiB kept as dicts had grown a worker by 2 GiB)
MAX_METADATA_BYTES = 64 << 20
CACHED_METADATA_BYTES = 128 << 20
BAD_METADATA = "bad_metadata"
UNLISTED_IMAGE = "unlisted_image"
EXTRA_IMAGE = "extra_image"  # an image a row's `<name>_file_name` column names: the row's, not built alone
UNREADABLE_FILE = "unreadable_file"


@dataclass
class Metadata:
    """One metadata file parsed: rows by the image path they name (relative to the file's folder,
    in NFC), each (row index, line, its text: a JSON line, or a CSV record's fields), taken apart
    again only for the image asking (`values`): a dict per row took about 8 times the file's size
    (a 64 MiB file of 521k rows: 530 MiB); what is wrong with lines or the whole file."""

    rows: dict[str, tuple[int, int, str | tuple[str, ...]]] = field(default_factory=dict)
    extras: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # image -> (row, line, its column)
    columns: list[str] = field(default_factory=list)
    problems: list[tuple[int, str, str]] = field(default_factory=list)  # (line, reason, detail)
    unread: str = ""  # why no row of it is read ('' when read)
    reason: str = ""  # the reject reason of an unread file
    foreign: bool = False  # rows without a `file_name` column: not ImageFolder metadata (Kaggle's `isic_id`)
    kept: int = 0  # characters of row text kept: what the parse weighs in the cache (`_kept_weight`)
    lead: str = "file_name"  # the column naming each row's image (`lead_column`)

    def values(self, raw: str | tuple[str, ...]) -> dict[str, Any]:
        """A row's values from its kept text: a CSV's empty field is null, as pandas reads it."""
        if isinstance(raw, str):
            return json.loads(raw)
        return {k: (v if v != "" else None) for k, v in zip(self.columns, raw)}


def is_metadata(uri: str) -> bool:
    return fsio.basename(uri) in METADATA_FILES


def row_name(file_name: str) -> str:
    """A `file_name` as `datasets` takes it: Windows separators turned, `./` and inner `..` folded,
    in NFC (a name that climbs out keeps its leading `..`)."""
    return nfc(posixpath.normpath(file_name.replace("\\", "/")))


def _kept_weight(parsed: Metadata) -> int:
    """What a kept parse counts in the cache: its rows' text, which a parquet's repeated values
    (stored once in the file, dictionary-encoded) make many times the file's size."""
    return parsed.kept


@fsio.cached_input(maxsize=4, max_bytes=CACHED_METADATA_BYTES, weigh=_kept_weight)
def read_metadata(uri: str) -> Metadata:
    """Parse one metadata file; a file over `MAX_METADATA_BYTES` (judged by its declared size
    before it is read), unreadable, with a CSV header not UTF-8 or without a `file_name` column gives no rows and
    says why (cached as a good file is: not read again for each of its images)."""
    size = fsio.file_state(uri)[0]
    if isinstance(size, int) and size > MAX_METADATA_BYTES:
        return Metadata(unread=f"{size} bytes, over the {MAX_METADATA_BYTES} byte budget of a metadata file: not read",
                        reason=FILE_TOO_LARGE)
    try:
        data = read_input_bytes(uri, MAX_METADATA_BYTES)  # no memory: the machine's error
    except fsio.FileTooLarge:
        return Metadata(unread=f"over the {MAX_METADATA_BYTES} byte budget of a metadata file: not read",
                        reason=FILE_TOO_LARGE)
    except OSError as exc:  # no permission, a failing disk: its images go without their rows, counted
        return Metadata(unread=f"unreadable ({exception_detail(exc)})", reason=UNREADABLE_FILE)
    parsed = Metadata()
    count = 0
    try:
        for count, (line, values, raw) in enumerate(_rows(uri, data, parsed), 1):  # one row's values at a time
            _add_row(parsed, count - 1, line, values, raw)
    except UnicodeDecodeError as exc:
        return Metadata(unread=f"not UTF-8 text (byte {exc.start}): not read", reason=BAD_METADATA)
    except ParquetUnread as exc:
        return Metadata(unread=str(exc), reason=exc.reason)
    if count and lead_column(parsed.columns) is None:  # another tool's table (Kaggle's): its folder stays plain
        return Metadata(columns=parsed.columns, foreign=True, reason=BAD_METADATA,
                        unread=f"no file_name nor <name>_file_name column (its columns: "
                               f"{', '.join(parsed.columns)[:120]}): not Hugging Face ImageFolder metadata, not "
                               "read; the images beside it are read as a plain folder's")
    return parsed


def _rows(uri: str, data: bytes, parsed: Metadata) -> Iterator["Row"]:
    """The rows of a metadata file's bytes, by its kind (a row keeps its own text, never the file's)."""
    if uri.endswith(".parquet"):
        return _parquet_rows(data, parsed)
    # a line not UTF-8 (a CSV Excel saved in Windows-1252: `caf\xe9`) is its row's problem alone
    # (`_undecodable`); it left the whole file unread, every image beside it `unlisted_image`
    text = data.decode("utf-8-sig", errors="surrogateescape")
    if uri.endswith(".csv"):
        _utf8_header(text)
    return _csv_rows(text, parsed) if uri.endswith(".csv") else _jsonl_rows(text, parsed)


def _utf8_header(text: str) -> None:
    """Raise UnicodeDecodeError when a CSV's header, its first record (ended by "\r\n", "\n" or,
    as Excel for Mac saves, "\r" alone), is not UTF-8: its columns unknown, the file unread. The
    first "\n" line was judged, which in a CR-only file is the whole file: one row not UTF-8 left
    every row unread."""
    try:
        header = ",".join(next(csv.reader(io.StringIO(text, newline="")), []))
    except csv.Error:  # a NUL byte, a field past csv's limit: `_csv_rows` says so
        return
    if _undecodable(header):
        header.encode("utf-8", errors="surrogateescape").decode("utf-8")


NOT_UTF8_LINE = "not UTF-8 text (save the file as UTF-8): not read"


def _undecodable(text: str) -> bool:
    """Whether text decoded with `surrogateescape` holds bytes that were not UTF-8."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def lead_column(columns: list[str]) -> str | None:
    """The column naming a row's image: `file_name`; without one, the first `<name>_file_name` in
    the file's column order (an image pair's `input_file_name`, `output_file_name`, which `datasets`
    loads as two Image columns: the first is built, the others ride along, `extra_image`); None:
    no ImageFolder metadata (another tool's table)."""
    if "file_name" in columns:
        return "file_name"
    return next((c for c in columns if c.endswith("_file_name")), None)


def _add_row(parsed: Metadata, index: int, line: int, values: dict[str, Any], raw: str | tuple[str, ...]) -> None:
    lead = parsed.lead = _chosen_lead(parsed)
    _add_extras(parsed, index, line, values, lead)
    written = values.get(lead)
    if not isinstance(written, str) or not written:
        shown = json.dumps(written, ensure_ascii=False)[:40]
        parsed.problems.append((line, BAD_METADATA, f"line {line}: {lead} is {shown}, not a path"))
        return
    name = row_name(written)
    parsed.kept += len(raw) if isinstance(raw, str) else sum(map(len, raw))
    if parsed.kept > MAX_METADATA_BYTES:  # a parquet's rows as text: the budget a .jsonl has
        raise ParquetUnread(f"its rows as text pass the {MAX_METADATA_BYTES} byte budget of a metadata file at "
                            f"row {index + 1} (repeated values are stored once in the file): not read", FILE_TOO_LARGE)
    if name in parsed.rows:
        first = parsed.rows[name][1]
        parsed.problems.append((line, "duplicate_key", f"line {line}: {name[:120]!r} is named again (line {first} "
                                                       "is read)"))
        return
    parsed.rows[name] = (index, line, raw)


def _chosen_lead(parsed: Metadata) -> str:
    """The file's lead column, chosen once, at the first row whose columns give one: a JSONL's
    columns grow row by row, and a later row's `file_name` moving a lead of `input_file_name` left the
    rows kept before without it (a later row without the lead is that row's `bad_metadata`). Until
    then `file_name`, the default (a lead of `file_name`, once seen, stays the answer)."""
    return parsed.lead if parsed.lead != "file_name" else lead_column(parsed.columns) or "file_name"


def extra_images(values: dict[str, Any], lead: str = "file_name") -> Iterator[tuple[str, str]]:
    """(column, path) of each further image a row names, as `datasets` takes them: a text in a
    `<name>_file_name` column (not the `lead` one), each text of a list in `file_names` or
    `<name>_file_names`."""
    for column, value in values.items():
        if column != lead and column.endswith("_file_name") and isinstance(value, str) and value:
            yield column, value
        elif (column == "file_names" or column.endswith("_file_names")) and isinstance(value, list):
            yield from ((column, v) for v in value if isinstance(v, str) and v)


def _add_extras(parsed: Metadata, index: int, line: int, values: dict[str, Any], lead: str) -> None:
    for column, written in extra_images(values, lead):
        parsed.extras.setdefault(row_name(written), (index, line, column))


Row = tuple[int, dict[str, Any], "str | tuple[str, ...]"]  # (line, values, the text kept)


class ParquetUnread(ValueError):
    """A `metadata.parquet` that is not read: why, and its reject reason."""

    def __init__(self, detail: str, reason: str = BAD_METADATA):
        super().__init__(detail)
        self.reason = reason


def _parquet_rows(data: bytes, parsed: Metadata) -> Iterator[Row]:
    """Each row of a `metadata.parquet` (as `datasets` reads it with pyarrow), kept as its JSON
    text; its `line` is its row number from 1. A file whose footer declares more than
    `MAX_METADATA_PARQUET_BYTES` uncompressed, or that pyarrow cannot read, is `ParquetUnread`, as
    is one whose rows kept as text pass `MAX_METADATA_BYTES` (`_add_row`: a value repeated in every
    row is stored once in the file, so its footer's sizes do not bound the text)."""
    import pyarrow as pa

    try:
        parquet = hf_parquet.open_parquet(pa.BufferReader(data))
        meta = parquet.metadata
        declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if declared > MAX_METADATA_PARQUET_BYTES:
            raise ParquetUnread(f"declares {declared} bytes uncompressed, over the {MAX_METADATA_PARQUET_BYTES} "
                                "byte budget of a metadata file: not read", FILE_TOO_LARGE)
        for index in range(meta.num_row_groups):  # a value repeated (dictionary-encoded) or many: its footer says less
            held = hf_parquet.value_bytes(pa.BufferReader(data), parquet, index)
            if held > MAX_METADATA_PARQUET_BYTES:
                raise ParquetUnread(f"row group {index} holds {held} bytes once read (its values, each its "
                                    f"width; its footer declares {meta.row_group(index).total_byte_size}), over the "
                                    f"{MAX_METADATA_PARQUET_BYTES} byte budget of a metadata file: not read",
                                    FILE_TOO_LARGE)
        parsed.columns = list(parquet.schema_arrow.names)
        line = 0
        for batch in parquet.iter_batches(batch_size=1024, use_threads=False):
            for values in batch.to_pylist():
                line += 1
                yield line, values, json.dumps(values, ensure_ascii=False, default=_json_value)
    except (OSError, pa.ArrowException) as exc:
        raise ParquetUnread(f"not a parquet file pyarrow reads ({str(exc)[:100]}): not read") from None


def _json_value(value: Any) -> Any:
    """A parquet value JSON has no type for: bytes by their size (never the bytes), else as text."""
    return f"<{len(value)} bytes>" if isinstance(value, (bytes, bytearray)) else str(value)


def _jsonl_rows(text: str, parsed: Metadata) -> Iterator[Row]:
    """Each JSON Lines line that is a JSON object; another line is a problem. Lines end at "\n"
    alone (a "\r" before it dropped), as `datasets` and pyarrow read them: `str.splitlines` also cut
    at U+2028, U+2029 and U+0085, which `json.dumps(ensure_ascii=False)` writes raw in a string."""
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        if _undecodable(line):
            parsed.problems.append((number, BAD_METADATA, f"line {number}: {NOT_UTF8_LINE}"))
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested past Python's limit
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:80]
            parsed.problems.append((number, BAD_METADATA, f"line {number}: not JSON ({why})"))
            continue
        if not isinstance(value, dict):
            what = type(value).__name__
            parsed.problems.append((number, BAD_METADATA, f"line {number}: a JSON {what}, not an object"))
            continue
        parsed.columns += [k for k in value if k not in parsed.columns]
        yield number, value, line


def _csv_rows(text: str, parsed: Metadata) -> Iterator[Row]:
    """Each CSV record under its header (from its first line; a quoted field may hold commas and
    newlines); a record with more or fewer fields than the header is a problem."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, [])
        parsed.columns = list(header)
        start = reader.line_num + 1
        for record in reader:
            if record and len(record) != len(header):
                parsed.problems.append((start, BAD_METADATA, f"line {start}: {len(record)} fields, the header has "
                                                             f"{len(header)}"))
            elif record and any(map(_undecodable, record)):
                parsed.problems.append((start, BAD_METADATA, f"line {start}: {NOT_UTF8_LINE}"))
            elif record:
                yield start, parsed.values(tuple(record)), tuple(record)
            start = reader.line_num + 1
    except csv.Error as exc:  # a NUL byte, an unclosed quote at the end
        parsed.problems.append((reader.line_num, BAD_METADATA, f"line {reader.line_num}: {str(exc)[:80]}; the rest "
                                                               "is not read"))


def governing(root: str, relative: str) -> list[tuple[str, str]]:
    """(folder, the image's name relative to it, in NFC) of each folder whose metadata files may
    name the image at `relative` (its path under `root` as the disk spells it: a Mac's copy keeps
    a folder `Café/` in NFD, which its NFC spelling does not open): its folder and each folder
    above it up to the root, the nearest first."""
    parts = relative.split("/")
    return [(fsio.join(root, *parts[:depth]) if depth else root, nfc("/".join(parts[depth:])))
            for depth in range(len(parts) - 1, -1, -1)]


_FOLDERS: OrderedDict[tuple, tuple[list, tuple[str, ...]]] = OrderedDict()  # see `metadata_files`
_FOLDERS_KEPT = 4096
_FOLDERS_LOCK = threading.Lock()


def metadata_files(root: str, folder: str, follow_links: bool) -> tuple[str, ...]:
    """The metadata files of `folder` to read (there, and no link leading out of the root), of one
    folder `metadata.csv` first. Remembered per process for a local folder while its state
    (`fsio.file_state`: a file added, removed or renamed there moves it) is the same: every image
    of a folder asked the disk for four files again (20k images with one metadata file: 20 s)."""
    state, key = _folder_state(root, folder), (root, folder, follow_links)
    with _FOLDERS_LOCK:
        known = _FOLDERS.get(key)
        if known is not None and known[0] == state:
            _FOLDERS.move_to_end(key)
            return known[1]
    files = tuple(uri for uri in (fsio.join(folder, name) for name in METADATA_FILES)
                  if fsio.exists(uri) and not path_problem(root, uri, follow_links))
    if state is not None:
        with _FOLDERS_LOCK:
            _FOLDERS[key] = (state, files)
            while len(_FOLDERS) > _FOLDERS_KEPT:
                _FOLDERS.popitem(last=False)
    return files


@functools.lru_cache(maxsize=64)
def _local_root(root: str) -> bool:
    return fsio.local_path(root) is not None


def _folder_state(root: str, folder: str) -> tuple[int, int, int] | None:
    """A local folder's (size, modification and change stamps), as `fsio.file_state` has them, or
    None (a remote folder, none there: not remembered)."""
    if not _local_root(root):
        return None
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


@fsio.derived_input
def image_row(root: str, relative: str, follow_links: bool) -> dict[str, Any] | None:
    """The metadata row that names the image at `relative` (under `root`, as the disk spells it):
    {"file", "row", "line", "values"} of the nearest metadata file naming it; {"extra": file, "row",
    "line", "column"} when a row names it in a `<name>_file_name` column only (the row's image's); {"unread": file, "why"}
    when the nearest metadata file there could not be read (its rows unknown); {"unlisted": file}
    when metadata files are there and none names it; None when no ImageFolder metadata file is in
    its folder or above (a file without `file_name` is none): a plain image, as `datasets` has it."""
    unread = unlisted = None
    for folder, name in governing(root, relative):
        for uri in metadata_files(root, folder, follow_links):
            parsed = read_metadata(uri)
            if parsed.foreign:
                continue
            shown = nfc(relative_to_root(root, uri))
            if parsed.unread:
                unread = unread or {"unread": shown, "why": parsed.unread}
            elif name in parsed.rows:
                index, line, raw = parsed.rows[name]
                return {"file": shown, "row": index, "line": line, "values": parsed.values(raw), "lead": parsed.lead}
            elif name in parsed.extras:
                index, line, column = parsed.extras[name]
                return {"extra": shown, "row": index, "line": line, "column": column, "lead": parsed.lead}
            unlisted = unlisted or {"unlisted": shown}
    return unread or unlisted


def outside_folder(name: str, written: str) -> bool:
    """Whether a row's `file_name` (`name`: as `row_name` folds it) leaves its metadata file's
    folder: absolute, a URL, or climbing out with `..` (`datasets` refuses each)."""
    return "://" in written or posixpath.isabs(name) or name == ".." or name.startswith("../") or (
        len(written) > 1 and written[1] == ":")
