"""Token shards: the contract between the build and the trainer.

An Arrow IPC file, one row per sentence: `sentence_id`, `source`, `kind`, `task`, `split`,
`n_images`, `tokens` (uint16, n_images * tokens_per_image) and `lineage` (JSON of the member
keys). Schema metadata names the tokenizer (name, weights hash), codebook size, tokens per image,
image size, config hash and format version, so a trainer can refuse shards of another tokenizer.

Like rendered shards, a token shard is written under a temporary name, renamed, and only then is
its stats JSON written; a shard without stats does not exist. The stats record the file's size and
sha256; readers check them before they use a shard (`verify_token_shard`: the size always, the
digest once per file and process), so flipped or missing bytes are a `ShardDamaged` error that
names the file, never wrong tokens. Readers memory-map the file.

Also here: the LVM/EasyLM JSONL interchange (`{"tokens": base64 of little-endian int32}`).
This module imports only pyarrow and numpy, so the trainer can use it without Beam.
"""

from __future__ import annotations

import base64
import glob as globlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from tokenizer.atomic import open_atomic, write_bytes
from tokenizer.config import read_json
from uvd_pipeline.arrow_body import NotArrowFile, decompressed_bytes
from uvd_pipeline.mixture import KIND_GROUPS, NAME_PATTERN

TOKEN_FORMAT_VERSION = 1
TOKENS_DIR = "tokens"
ARROW_SUFFIX = ".arrow"
STATS_SUFFIX = ".stats.json"
STATS_MAX_BYTES = 64 << 20  # judged before it is read (a fifo, /dev/zero or a huge file in its place)
META_PREFIX = "uvd."

SCHEMA = pa.schema([
    ("sentence_id", pa.string()),
    ("source", pa.string()),
    ("kind", pa.string()),
    ("task", pa.string()),
    ("split", pa.string()),
    ("n_images", pa.int32()),
    ("tokens", pa.large_list(pa.uint16())),
    ("lineage", pa.string()),
])


class NotFound(FileNotFoundError):
    """A path a command was given that is not there or is not what it should be (no committed token
    shard, no build output): the person's mistake, told in one line. Any other FileNotFoundError is
    the program's and keeps its traceback."""


class ShardDamaged(ValueError):
    """A committed shard file (rendered tar, token shard, their side files) that is missing, short,
    altered or unreadable; `path` names it."""

    def __init__(self, path: str, why: str = "") -> None:
        if not why:  # one argument: the whole message (how Beam re-raises an error with its step name)
            path, _, why = str(path).partition(": ")
        self.path = str(path)
        self.why = why
        super().__init__(f"{self.path}: {why}")


REBUILD_HINT = ("a resumed build with --verify rebuilds damaged shards (python -m uvd_pipeline build CONFIG "
                "--verify); python -m uvd_pipeline verify OUT lists them")


@dataclass(frozen=True)
class TokenShardMeta:
    """What every row of a shard shares; stored in the Arrow schema metadata."""

    tokenizer_name: str
    tokenizer_hash: str
    codebook_size: int
    tokens_per_image: int
    image_size: int
    config_hash: str
    format_version: int = TOKEN_FORMAT_VERSION

    def to_metadata(self) -> dict[bytes, bytes]:
        return {f"{META_PREFIX}{k}".encode(): str(v).encode() for k, v in self.__dict__.items()}

    @classmethod
    def from_metadata(cls, metadata: dict[bytes, bytes] | None) -> "TokenShardMeta":
        if not metadata:
            raise ValueError("not a UVD token shard: its Arrow schema has no metadata")
        values = {k.decode()[len(META_PREFIX):]: v.decode() for k, v in metadata.items()
                  if k.decode().startswith(META_PREFIX)}
        try:
            return cls(
                tokenizer_name=values["tokenizer_name"], tokenizer_hash=values["tokenizer_hash"],
                codebook_size=int(values["codebook_size"]), tokens_per_image=int(values["tokens_per_image"]),
                image_size=int(values["image_size"]), config_hash=values["config_hash"],
                format_version=int(values["format_version"]),
            )
        except KeyError as exc:
            raise ValueError(f"not a UVD token shard: metadata lacks {exc}") from None


@dataclass(frozen=True)
class TokenRow:
    sentence_id: str
    source: str
    kind: str
    task: str
    split: str
    tokens: np.ndarray  # uint16, (n_images * tokens_per_image,)
    lineage: dict[str, Any]


def to_table(rows: Iterable[TokenRow], meta: TokenShardMeta) -> pa.Table:
    rows = sorted(rows, key=lambda r: r.sentence_id)
    for row in rows:
        if row.tokens.dtype != np.uint16 or row.tokens.size % meta.tokens_per_image:
            raise ValueError(f"{row.sentence_id}: tokens must be uint16 and a multiple of {meta.tokens_per_image}")
        if row.tokens.size and int(row.tokens.max()) >= meta.codebook_size:
            raise ValueError(f"{row.sentence_id}: token {int(row.tokens.max())} >= codebook size {meta.codebook_size}")
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum([r.tokens.size for r in rows], out=offsets[1:])
    flat = np.concatenate([r.tokens for r in rows]) if rows else np.zeros(0, np.uint16)
    tokens = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.uint16()))
    columns = [
        pa.array([r.sentence_id for r in rows], pa.string()),
        pa.array([r.source for r in rows], pa.string()),
        pa.array([r.kind for r in rows], pa.string()),
        pa.array([r.task for r in rows], pa.string()),
        pa.array([r.split for r in rows], pa.string()),
        pa.array([r.tokens.size // meta.tokens_per_image for r in rows], pa.int32()),
        tokens,
        pa.array([json.dumps(r.lineage, sort_keys=True, separators=(",", ":"), allow_nan=False) for r in rows], pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA.with_metadata(meta.to_metadata()))


def table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def write_token_shard(path: str, rows: Iterable[TokenRow], meta: TokenShardMeta,
                      extra_stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write `path` (.arrow) and then its stats file; returns the stats. Local paths or fsspec URLs."""
    if not path.endswith(ARROW_SUFFIX):  # readers find shards, and the stats beside them, by the suffix
        raise ValueError(f"{path}: a token shard's name ends in {ARROW_SUFFIX}")
    import pyarrow.compute as pc  # here: 0.1 s to import, and a build without tokens never needs it

    table = to_table(rows, meta)
    data = table_bytes(table)

    stats = {
        "format_version": TOKEN_FORMAT_VERSION,
        "file": os.path.basename(path),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "sentences": table.num_rows,
        "images": int(pc.sum(table.column("n_images")).as_py() or 0),
        "tokens": int(sum(len(chunk.values) for chunk in table.column("tokens").chunks)),
        **{k: v for k, v in meta.__dict__.items()},
        **(extra_stats or {}),
    }
    write_bytes(path, data)  # the shard, then its stats: the commit mark
    write_bytes(path[: -len(ARROW_SUFFIX)] + STATS_SUFFIX, json.dumps(stats, indent=1, sort_keys=True).encode())
    return stats


def committed(path: str) -> bool:
    return os.path.exists(path[: -len(ARROW_SUFFIX)] + STATS_SUFFIX) and os.path.exists(path)


def file_sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# files whose digest matched in this process: path -> (size, mtime_ns, inode) when it was checked
_VERIFIED: dict[str, tuple[int, int, int]] = {}


def verify_token_shard(path: str, full: bool = True) -> dict[str, Any]:
    """Check a committed token shard against its stats (returned): its size always, and with
    `full` its sha256 (once per file and process: a file rewritten since is checked again).
    Stats lacking either are refused. Raises `ShardDamaged` naming the damaged file."""
    stats_path = path[: -len(ARROW_SUFFIX)] + STATS_SUFFIX
    try:
        stats = read_json(stats_path, STATS_MAX_BYTES, "a token shard's stats", "ours take ~1 KB")
        if not isinstance(stats, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        raise NotFound(f"{path} is not a committed token shard (its {STATS_SUFFIX} file is missing)") from None
    except (OSError, ValueError) as exc:
        why = f"unreadable stats ({type(exc).__name__}: {exc})"[:200]
        raise ShardDamaged(stats_path, f"{why}; {REBUILD_HINT}") from None
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ShardDamaged(path, f"missing (its {STATS_SUFFIX} records it); {REBUILD_HINT}") from None
    missing = [k for k, kind in (("sha256", str), ("bytes", int)) if not isinstance(stats.get(k), kind)]
    if missing:  # without them nothing below is checked: refused, not read unchecked
        raise ShardDamaged(stats_path, f"records no {' and '.join(missing)} (every committed token shard's stats carry "
                                       f"its size and sha256); get a proper shard: {REBUILD_HINT}, or write it with "
                                       f"uvd_pipeline.shards.write_token_shard (or python -m uvd_pipeline import-jsonl "
                                       f"for LVM/EasyLM JSONL), which writes both")
    recorded = stats["bytes"]
    if info.st_size != recorded:
        raise ShardDamaged(path, f"{info.st_size} bytes, its stats record {recorded} (truncated or rewritten); "
                                 f"{REBUILD_HINT}")
    digest = stats["sha256"]
    if full:
        seen = (info.st_size, info.st_mtime_ns, info.st_ino)
        if _VERIFIED.get(path) != seen:
            if file_sha256(path) != digest:
                _VERIFIED.pop(path, None)
                raise ShardDamaged(path, "sha256 differs from its stats: the bytes changed after it was committed; "
                                         + REBUILD_HINT)
            _VERIFIED[path] = seen
    return stats


# a compressed shard cannot be memory-mapped: reading it holds it decompressed, at most this much
COMPRESSED_SHARD_BUDGET = 1 << 30
UNCOMPRESSED_HINT = "write it uncompressed (pyarrow.ipc.new_file without compression, as write_token_shard does)"


class ShardTooLarge(ShardDamaged):
    """A token shard refused before it is read: its compressed batches declare more than the budget
    once decompressed, or its Arrow headers do not parse, so that size cannot be judged."""


def check_compressed_size(path: str, budget: int | None = None) -> int:
    """The bytes the shard `path` will hold decompressed when read (0: not compressed, it is
    memory-mapped), refused past `budget` before it is read: reading a compressed (zstd/lz4) IPC
    file decompresses all of it, and a few kilobytes can declare gigabytes. A file whose footer or
    batch headers do not parse is refused too (the reader might decompress what could not be
    judged); one without the IPC file magic at its end is left to the reader, which refuses it unread and names
    what it is. Raises `ShardTooLarge`; an `OSError` reading it is raised as it is."""
    budget = COMPRESSED_SHARD_BUDGET if budget is None else budget
    try:
        size = decompressed_bytes(path)
    except NotArrowFile:
        return 0
    except ValueError as exc:
        raise ShardTooLarge(path, f"its Arrow headers do not parse, so its decompressed size cannot be judged before "
                                  f"it is read ({exc}); {UNCOMPRESSED_HINT}") from None
    if size > budget:
        raise ShardTooLarge(path, f"its record batches are compressed (Arrow IPC zstd/lz4) and declare {size} bytes "
                                  f"decompressed, more than the {budget} a compressed shard may take (it cannot be "
                                  f"memory-mapped, so it is held decompressed while open); {UNCOMPRESSED_HINT}")
    return size


def read_token_shard(path: str, verify: str = "full") -> tuple[pa.Table, TokenShardMeta]:
    """Memory-map a committed shard (no copy of the token data into Python memory), checked first
    against its stats: `verify` "full" (size and sha256) or "size" (for a caller that checks the
    digest before it reads any token, as the trainer's data loader does). A compressed shard is
    refused past `COMPRESSED_SHARD_BUDGET` before it is read (`check_compressed_size`)."""
    if verify not in ("full", "size"):
        raise ValueError(f"verify must be 'full' or 'size', not {verify!r}")
    if not committed(path):
        raise NotFound(f"{path} is not a committed token shard (its {STATS_SUFFIX} file is missing)")
    verify_token_shard(path, full=verify == "full")
    check_compressed_size(path)  # before any batch is decompressed
    try:
        source = pa.memory_map(path, "r")
        table = ipc.open_file(source).read_all()
        meta = TokenShardMeta.from_metadata(table.schema.metadata)
    except (pa.ArrowException, ValueError, OSError) as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise ShardDamaged(path, f"cannot be read as a token shard ({reason}){_other_format(path)}") from None
    return table, meta


def _other_format(path: str) -> str:
    """What a file that is not an Arrow IPC file is, told from its first bytes, with the rewrite:
    a Parquet copy or an Arrow IPC stream (what HF datasets' save_to_disk writes) holds the same
    columns in another container, and 'cannot be read' alone reads as damage."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return ""
    rewrite = ("; write it as an Arrow IPC file (pyarrow.ipc.new_file, as "
               "uvd_pipeline.shards.write_token_shard does) with its stats file")
    if head.startswith(b"PAR1"):
        return ": it is a Parquet file" + rewrite
    if head.startswith(b"\xff\xff\xff\xff"):
        return ": it is an Arrow IPC stream (as HF datasets save_to_disk writes), not an Arrow IPC file" + rewrite
    return ""


def below_folder(pattern: str) -> str:
    """A glob of every shard below `pattern` where it names a folder (its name escaped: a folder
    `br [v2]` read as a character class matched nothing, and the export wrote no line), else itself."""
    if os.path.isdir(pattern):
        return os.path.join(globlib.escape(pattern), "**", "*" + ARROW_SUFFIX)
    return pattern


def find_shards(pattern: str) -> list[str]:
    """Committed token shards matching a glob (a folder means every shard below it)."""
    pattern = below_folder(pattern)
    return sorted(p for p in globlib.glob(pattern, recursive=True) if p.endswith(ARROW_SUFFIX) and committed(p))


def export_shards(pattern: str) -> list[str]:
    """The token shards `export-jsonl` is given by a file, glob or folder, none left out: unlike
    `find_shards` (the trainer's, which may read a build still writing its shards), a `.arrow`
    without its stats file is a `ShardDamaged` naming it, never skipped; a JSONL that silently
    lacked 9 of 16 sentences (one stats file deleted) was written with exit 0. Only the atomic
    writer's temporaries (`.tmp-` names) are left out."""
    from tokenizer.atomic import is_temporary

    pattern = below_folder(pattern)
    paths = sorted(p for p in globlib.glob(pattern, recursive=True)
                   if p.endswith(ARROW_SUFFIX) and not is_temporary(p) and not os.path.isdir(p))
    for path in paths:
        if not committed(path):
            raise ShardDamaged(path, f"its {STATS_SUFFIX} file (the commit mark) is missing: not a committed token "
                                     "shard; the export stops rather than leave its sentences out; "
                                     + REBUILD_HINT)
    return paths


def sentence_tokens(table: pa.Table, index: int) -> np.ndarray:
    """One row's tokens as a zero-copy uint16 view."""
    column = table.column("tokens")
    chunk_index = 0
    while index >= len(column.chunk(chunk_index)):
        index -= len(column.chunk(chunk_index))
        chunk_index += 1
    chunk = column.chunk(chunk_index)
    start, end = chunk.offsets[index].as_py(), chunk.offsets[index + 1].as_py()
    return chunk.values.to_numpy(zero_copy_only=True)[start:end]


def iter_rows(path: str) -> Iterator[TokenRow]:
    table, _ = read_token_shard(path)
    for i in range(table.num_rows):
        yield TokenRow(
            sentence_id=table.column("sentence_id")[i].as_py(), source=table.column("source")[i].as_py(),
            kind=table.column("kind")[i].as_py(), task=table.column("task")[i].as_py(),
            split=table.column("split")[i].as_py(), tokens=sentence_tokens(table, i).copy(),
            lineage=json.loads(table.column("lineage")[i].as_py()),
        )


# -- LVM / EasyLM JSONL interchange ----------------------------------------------------------
TOKEN_DTYPE_CODES = 1 << 16  # codes a uint16 token can hold


class JsonlError(ValueError):
    """A JSONL file, or an import's settings or output, that cannot become a token shard (or an
    export that cannot be written); the message names the file and, for a bad line, its number."""


def encode_jsonl_line(tokens: np.ndarray) -> str:
    """{"tokens": base64 of little-endian int32}: the released LVM data format."""
    return json.dumps({"tokens": base64.b64encode(np.asarray(tokens, dtype="<i4").tobytes()).decode("ascii")})


def _one_tokens_field(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose 'tokens' field is given once: json kept the last of two without a word,
    and another reader may keep the first (two sentences in one line, one of them dropped)."""
    if sum(1 for key, _ in pairs if key == "tokens") > 1:
        raise ValueError("'tokens' given twice; a reader keeps one of them, so no one sentence is meant")
    return dict(pairs)


def decode_jsonl_line(line: str | bytes) -> np.ndarray:
    """The token ids of one LVM/EasyLM line; a `ValueError` saying what is wrong with it (never
    quoting the line: it may be megabytes of base64)."""
    try:
        record = json.loads(line, object_pairs_hook=_one_tokens_field)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:  # 100,000 nested brackets: Python's reader gives up, with a traceback
        raise ValueError("JSON nested deeper than Python's reader goes, no sentence of token JSONL") from None
    if not isinstance(record, dict):
        raise ValueError(f"a JSON {type(record).__name__}, not an object with a 'tokens' field")
    if "tokens" not in record:
        fields = ", ".join(repr(k[:40]) for k in list(record)[:8])
        raise ValueError(f"no 'tokens' field (it has {fields or 'none'})")
    data = record["tokens"]
    if not isinstance(data, str):
        raise ValueError(f"'tokens' is a JSON {type(data).__name__}, not a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:  # binascii.Error, or text that is not ASCII
        raise ValueError("'tokens' is not valid base64") from None
    if len(raw) % 4:
        raise ValueError(f"'tokens' decodes to {len(raw)} bytes, not whole int32 tokens (a multiple of 4 bytes)")
    return np.frombuffer(raw, dtype="<i4").astype(np.int64)


def check_tokens(tokens: np.ndarray, meta: TokenShardMeta) -> None:
    """A `ValueError` unless `tokens` are whole images of codes the shard's codebook holds."""
    if tokens.size == 0:
        raise ValueError("no tokens")
    if tokens.size % meta.tokens_per_image:
        raise ValueError(f"{tokens.size} tokens are not whole images of {meta.tokens_per_image} codes")
    outside = np.flatnonzero((tokens < 0) | (tokens >= meta.codebook_size))
    if outside.size:
        at = int(outside[0])
        raise ValueError(f"token id {int(tokens[at])} at position {at} is outside the codebook "
                         f"0..{meta.codebook_size - 1} ({outside.size} of the line's {tokens.size} ids are); give the "
                         "codebook size of the tokenizer that made them")


class ImportSettingError(JsonlError):
    """An import setting (a `TokenShardMeta` field) a token shard cannot hold. `field` names it,
    `value` is what was given and `rule` what it must be, so a caller can name its own flag."""

    def __init__(self, field: str, value: Any, rule: str) -> None:
        super().__init__(f"{field.replace('_', ' ')} {value}: {rule}")
        self.field, self.value, self.rule = field, value, rule


def check_import(meta: TokenShardMeta, out_path: str, source: str = "jsonl", kind: str = "image") -> None:
    """Settings and output an import can write: sizes the shard can hold, a sentence kind the
    mixtures know (another was counted as single images), a source name a key can start with, an
    `.arrow` file name. The one place an import's settings are checked (the CLI names its flag on
    an `ImportSettingError`)."""
    if kind not in KIND_GROUPS:
        raise ImportSettingError("kind", kind, f"must be one of {', '.join(KIND_GROUPS)}")
    if not re.fullmatch(NAME_PATTERN, source):
        raise ImportSettingError("source", source, "use lower_snake_case (a-z, 0-9, _) starting with a letter, "
                                                   "as a config's source names")
    if not 1 <= meta.codebook_size <= TOKEN_DTYPE_CODES:
        raise ImportSettingError("codebook_size", meta.codebook_size,
                                 f"token shards store uint16 codes, so it must be 1..{TOKEN_DTYPE_CODES}")
    for name in ("tokens_per_image", "image_size"):
        if getattr(meta, name) < 1:
            raise ImportSettingError(name, getattr(meta, name), "must be a positive integer")
    if os.path.isdir(out_path):
        raise JsonlError(f"{out_path} is a folder; name the token shard file to write, e.g. "
                         f"{os.path.join(out_path, 'tokens' + ARROW_SUFFIX)}")
    if not out_path.endswith(ARROW_SUFFIX):
        raise JsonlError(f"{out_path}: a token shard's name ends in {ARROW_SUFFIX} (readers find shards, and their "
                         f"{STATS_SUFFIX} beside them, by it), e.g. {os.path.splitext(out_path)[0] + ARROW_SUFFIX}")


# The longest sentence a build writes holds 64 images (the bound of every sentence_length, frames,
# views and pairs x 2 a config allows); an imported line holds at most as many images of its codes,
# as base64 of int32, with room for the JSON around it and a few other fields (EasyLM's)
MAX_SENTENCE_IMAGES = 64
JSON_BLANK = " \t\r\n"  # JSON's whitespace: a line of other characters is no blank line but a bad one
LINE_ROOM = 64 << 10
UTF8_BOM = b"\xef\xbb\xbf"  # dropped from the first line: json refused it ('Unexpected UTF-8 BOM')


def max_line_bytes(tokens_per_image: int) -> int:
    """The longest JSONL line an import of `tokens_per_image` codes an image reads (~150 KB for 256)."""
    return -(-MAX_SENTENCE_IMAGES * tokens_per_image * 4 // 3) * 4 + LINE_ROOM


def _pipe(path: str) -> bool:
    """Whether `path` (links followed) is a fifo or pipe: read as a stream, not refused as a device."""
    import stat

    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _numbered_lines(path: str, tokens_per_image: int) -> Iterator[tuple[int, str]]:
    """(line number from 0, text) of each line that is not blank, each read within `max_line_bytes`;
    a longer line (a 300 MB one took 690 MB to read), or one that is not UTF-8, is a `JsonlError` naming it. A device is
    refused by its type before it is opened (/dev/zero was read as one line until memory ran out); a fifo or
    pipe is read (`zcat x.jsonl.gz | import-jsonl /dev/stdin`): the line limit bounds what it holds."""
    from sources import fsio

    kind = fsio.special_at(path)
    if kind and not _pipe(path):
        raise JsonlError(f"{path} is {kind}, not a JSONL file; save what it gives to a file first")
    try:
        handle = open(path, "rb")
    except IsADirectoryError:
        raise JsonlError(f"{path} is a folder, not a JSONL file") from None
    except OSError as exc:
        raise JsonlError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    limit = max_line_bytes(tokens_per_image)
    with handle:
        for number, data in enumerate(iter(lambda: handle.readline(limit + 2), b"")):  # + its \r\n
            if len(data.rstrip(b"\r\n")) > limit:
                raise JsonlError(f"{path} line {number + 1}: longer than {limit} bytes, the longest a sentence of "
                                 f"{MAX_SENTENCE_IMAGES} images of {tokens_per_image} codes takes; no line of "
                                 "token JSONL")
            if number == 0 and data.startswith(UTF8_BOM):  # Notepad's and PowerShell's UTF-8 starts with one
                data = data[len(UTF8_BOM):]
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise JsonlError(f"{path} line {number + 1}: not UTF-8 text") from None
            if text.strip(JSON_BLANK):  # str.strip() took \x1c..\x1f, \x85, \u2028 for blank and skipped the line
                yield number, text


def _writable_file(out_path: str) -> None:
    """An output file name, not a folder: a rename onto a folder fails after the whole write."""
    if os.path.isdir(out_path):
        raise JsonlError(f"{out_path} is a folder; name the file to write, e.g. "
                         f"{os.path.join(out_path, 'tokens.jsonl')}")


def _not_an_input(out_path: str, shard_paths: list[str]) -> None:
    """An export's output that is none of its shards (nor their stats) and no shard's name: an
    `--out` naming an input replaced that committed shard with JSONL, its stats left behind."""
    if out_path.endswith(ARROW_SUFFIX):
        raise JsonlError(f"{out_path}: --out names a token shard (.arrow); name the JSONL file to write, e.g. "
                         f"{out_path[: -len(ARROW_SUFFIX)]}.jsonl")
    if not os.path.exists(out_path):
        return
    for path in shard_paths:
        for given in (path, path[: -len(ARROW_SUFFIX)] + STATS_SUFFIX):
            if os.path.exists(given) and os.path.samefile(out_path, given):
                raise JsonlError(f"{out_path} is {given}, one of the export's inputs; name another file to write")


def export_jsonl(shard_paths: Iterable[str], out_path: str) -> int:
    """Write every sentence of the shards as one JSONL line; returns the number of lines. Shards
    of more than one tokenizer are refused before anything is written (`shard_tokenizers`)."""
    from uvd_pipeline.shard_tokenizers import check_one_tokenizer

    _writable_file(out_path)
    shard_paths = list(shard_paths)
    _not_an_input(out_path, shard_paths)
    check_one_tokenizer(shard_paths)
    count = 0
    try:
        with open_atomic(out_path) as handle:
            for path in shard_paths:
                for row in iter_rows(path):
                    handle.write((encode_jsonl_line(row.tokens) + "\n").encode())
                    count += 1
    except FileNotFoundError:
        raise  # a shard that vanished after it was listed
    except OSError as exc:
        raise JsonlError(f"{out_path}: cannot be written ({exc.strerror or exc})") from None
    return count


ID_STEM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
SAFE_STEM_CHARS = 80  # of a name made safe, before its hash


def import_stem(jsonl_path: str) -> str:
    """The middle of an import's sentence ids (`SOURCE-STEM-LINE`): its file's name without its last
    suffix (its name up to the first dot gave part.a.jsonl and part.b.jsonl the same ids). A name
    of letters, digits, '.', '_' and '-' is kept as it is; in any other (`my data`, `café`, an
    escape sequence, HTML) each other character becomes '_' and a hash of the whole name is added,
    so two names made alike give other ids and an import's ids are the same on every run: such a
    name was refused, and most people's files have one."""
    stem = os.path.splitext(os.path.basename(jsonl_path))[0]
    if ID_STEM.fullmatch(stem):
        return stem
    safe = ID_UNSAFE.sub("_", stem)[:SAFE_STEM_CHARS]
    safe = "_" + safe[1:] if safe[:1] in ("", ".", "-") else safe  # no id of a hidden-file name, or '--'
    return f"{safe}-{hashlib.sha256(os.fsencode(stem)).hexdigest()[:8]}"


def import_jsonl(jsonl_path: str, meta: TokenShardMeta, out_path: str, source: str = "jsonl",
                 split: str = "train", kind: str = "image", task: str = "none") -> dict[str, Any]:
    """Read LVM/EasyLM JSONL back into a token shard (sentence ids from the line numbers). A line
    that is not a sentence of this codebook stops the import naming its number: a shard that left
    it out would be trained on as if it held the whole file."""
    check_import(meta, out_path, source, kind)
    rows = []
    stem = import_stem(jsonl_path)
    for number, line in _numbered_lines(jsonl_path, meta.tokens_per_image):
        try:
            tokens = decode_jsonl_line(line)
            check_tokens(tokens, meta)
        except ValueError as exc:
            raise JsonlError(f"{jsonl_path} line {number + 1}: {exc}") from None
        rows.append(TokenRow(f"{source}-{stem}-{number:09d}", source, kind, task, split,
                             tokens.astype(np.uint16), {"jsonl": os.path.basename(jsonl_path), "line": number}))
    if not rows:  # a committed shard of no sentence: a mixture took it as data, exit 0
        raise JsonlError(f"{jsonl_path}: no sentence in it (empty, or blank lines only); nothing was written")
    try:
        return write_token_shard(out_path, rows, meta)
    except OSError as exc:
        raise JsonlError(f"{out_path}: cannot be written ({exc.strerror or exc})") from None
