"""What img2dataset writes beside each shard, and what it says: which files of its output folder
are shards and which their listings (`NNNNN.parquet`, `NNNNN_stats.json`), the listing read
(`ShardListing`), its failed downloads and the successes an archive lacks as rejects, and whether
stored bytes are the download it hashed. Shared by the laion and video2dataset readers."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Iterator

from sources import fsio, hf_parquet
from sources.paths import path_problem, relative_to_root, set_aside, shown_name
from sources.records import FILE_TOO_LARGE, Reject, data_key, nfc, raise_machine_error, read_input_bytes
from sources.tar_members import shard_reject
from sources.web_units import TAR_SUFFIXES

# Parquet through a Python (fsspec) file object: no pre-buffering and no reader threads. With
# them, Arrow's I/O threads call back into the Python file while the interpreter exits, and about
# one process in ten then aborts ("terminate called without an active exception").
PYTHON_FILE_READ = {"pre_buffer": False, "use_threads": False}
BAD_PARQUET = "bad_parquet"  # an img2dataset shard listing that exists but cannot be read
HASH_MISMATCH = "hash_mismatch"  # stored bytes that are not the download img2dataset hashed
HASH_COLUMNS = ("sha256", "md5", "sha512", "sha1")  # img2dataset --compute_hash (sha256 by default)
LISTING_SUFFIXES = (".parquet", "_stats.json")  # what img2dataset writes beside each shard
# samples a `_stats.json` counts that no file holds, counted one by one up to this many per shard
# (10 times img2dataset's default --number_sample_per_shard): a hand-edited or foreign stats file
# claiming 10**12 would otherwise never end
MAX_UNLISTED_REJECTS = 100_000


def stray_files(files: list[str], shards: list[str], bases: list[str]) -> list[str]:
    """The files of an img2dataset folder that are neither `shards` nor the listings of a shard
    there (`bases`: each shard's path without its suffix), e.g. a `.tar.xz` or `.zip` someone put
    there, a loose image, a parquet whose tar is gone: each becomes an `unexpected_file` reject,
    never a silent skip; an operating system's metadata or a hidden file (`.DS_Store`,
    `._00000.tar`, an editor's lock) an `os_metadata` or `hidden_file` one."""
    listings = {base + suffix for base in bases for suffix in LISTING_SUFFIXES}
    return [f for f in files if f not in shards and f not in listings]


def is_shard_name(uri: str) -> bool:
    """A webdataset archive's name (an AppleDouble `._00000.tar` is no shard)."""
    return uri.lower().endswith(TAR_SUFFIXES) and not set_aside(fsio.basename(uri))


# img2dataset's (and video2dataset's) work folder in its output: the URL list cut into `N.feather`
# shards, removed when the download ends; a running or killed download leaves it. Never a shard.
WORK_FOLDER = "_tmp"
UNFINISHED_DOWNLOAD = "unfinished_download"  # its work folder, planning shards not finished yet
_PLANNED = re.compile(r"([0-9]+)\.feather")  # img2dataset's reader: `{tmp_path}/{shard_id}.feather`
_FINISHED = re.compile(r"([0-9]+)_stats\.json")  # written when a shard ends (`--incremental_mode` reads them)
# `output_format=files`: a shard is the folder `{shard_id:0{oom_shard_count}d}` (writer.py), ASCII digits
# only (`\d` takes any Unicode digit: a folder `٠١` was a shard, `_tmp/٣.feather` shard 3)
_SHARD_FOLDER = re.compile(r"[0-9]+")


def data_dirs(root: str) -> list[str]:
    """A folder's sub-folders that may be img2dataset's `files` shards: named as its writer names
    them (`00000/`), none of `__MACOSX/`, `@eaDir/`, `.git/`, the downloader's `_tmp/`, nor a
    user's `notes/` (each of those a reject beside the shards, never read as one)."""
    return [d for d in fsio.list_dirs(root, links=True) if _SHARD_FOLDER.fullmatch(fsio.basename(d))]


def unfinished_shards(root: str) -> list[int] | None:
    """The shards img2dataset has still to finish when `root` holds its work folder `_tmp/` with the
    URL shards it planned (`N.feather`, each removed once its shard is written; its `N_stats.json`
    at the root, img2dataset's own test for `--incremental_mode incremental`, also marks it done).
    None without such a folder (a `_tmp/` of something else, or one linking out of the root: never
    listed); [] when each shard it planned has finished (on S3 img2dataset leaves `_tmp/` behind)."""
    work = fsio.join(root, WORK_FOLDER)
    if not fsio.isdir(work) or path_problem(root, work):
        return None
    planned = {int(m.group(1)) for f in fsio.list_files(work) if (m := _PLANNED.fullmatch(fsio.basename(f)))}
    if not planned:
        return None
    finished = {int(m.group(1)) for f in fsio.list_files(root) if (m := _FINISHED.fullmatch(fsio.basename(f)))}
    return sorted(planned - finished)


def unfinished_shard_files(uris: list[str], unfinished: list[int] | None) -> list[str]:
    """Those of `uris` (files and folders at the root) that a shard img2dataset has not finished
    is writing (`unfinished_shards`): its `NNNNN.tar`, `NNNNN/` or `NNNNN.parquet`, half-written.
    Never built: a killed download's shard would give what it held when killed (a cut tar, a
    0-byte parquet), and the rerun that finishes it the whole shard; left out, the one
    `unfinished_download` reject names them, and the rerun's build reads them whole."""
    if not unfinished:
        return []
    planned = set(unfinished)
    found = []
    for uri in uris:
        name = fsio.basename(uri)
        suffix = next((s for s in (*TAR_SUFFIXES[::-1], ".parquet") if name.lower().endswith(s)), "")
        stem = name[: len(name) - len(suffix)]
        if _SHARD_FOLDER.fullmatch(stem) and int(stem) in planned:
            found.append(uri)
    return found


def is_shard_listing_name(uri: str) -> bool:
    """A name img2dataset gives a shard's parquet (`00000.parquet`: its listing, or with
    `output_format=parquet` the shard)."""
    name = fsio.basename(uri)
    return name.endswith(".parquet") and _SHARD_FOLDER.fullmatch(name.removesuffix(".parquet")) is not None


def unfinished_detail(unfinished: list[int], left_out: list[str] = ()) -> str:
    """The `unfinished_download` reject's detail: what is missing, the half-written files of those
    shards left out (`unfinished_shard_files`, as the root names them), and what to do (within 300
    characters)."""
    shown = ", ".join(f"{n:05d}" for n in unfinished[:3]) + (f"... {unfinished[-1]:05d}" if len(unfinished) > 3 else "")
    names = [shown_name(n, 20)[1:-1] for n in sorted(left_out, key=lambda n: (n.endswith(".parquet"), n))]
    # the files named while they fit: two, one and how many more, else how many
    named = [f", partly written: {', '.join(names[:k])}{f' +{len(names) - k}' if len(names) > k else ''}"
             for k in (2, 1) if names] + [f", {len(names)} partly written" if names else ""]
    for partial in named:
        detail = (f"img2dataset's work folder: its download killed or still running, {len(unfinished)} shard"
                  f"{'s' * (len(unfinished) > 1)} it planned ({shown}) not finished (no _stats.json), not built"
                  f"{partial}: let it finish, or rerun the same img2dataset command (by default it downloads only "
                  "those)")
        if len(detail) <= 300:
            break
    return detail


def shard_of(uri: str) -> tuple[str, str]:
    """(the shard's name, its path without the archive suffix) of a webdataset archive:
    `00000.tar` and `00000.tar.gz` are shard `00000`, listed by `00000.parquet` beside them."""
    suffix = next(s for s in TAR_SUFFIXES[::-1] if uri.lower().endswith(s))
    base = uri[: -len(suffix)]
    return fsio.basename(base), base


@dataclass
class ShardListing:
    """What img2dataset says a shard holds: its parquet rows by key and its _stats.json count."""

    rows: dict[str, dict[str, Any]]
    stats_successes: int | None
    problems: tuple[tuple[str, str, str], ...] = ()  # (reason, detail, its file from the root): listing files unused
    parquet_read: bool = False  # its parquet was read (it may list no row: img2dataset's writer failed on each)
    keyless: bool = False  # its parquet was read but has no `key` column: no img2dataset listing, lists nothing

    @classmethod
    def read(cls, parquet_uri: str, stats_uri: str, root: str, follow_links: bool = False) -> "ShardListing":
        """The shard's listing; an unreadable parquet (a killed img2dataset leaves it empty) lists
        nothing and says why in `problems`, so the archive beside it is still read. A listing file
        that links out of `root` is never opened (`sources.paths`). Each problem names its own file."""
        import pyarrow as pa

        rows: dict[str, dict[str, Any]] = {}
        parquet_problems: list[tuple[str, str]] = []
        parquet_read = keyless = False
        if _listing_file(parquet_uri, root, follow_links, parquet_problems):
            try:
                keyed, unkeyed = _parquet_rows(parquet_uri)
            except (OSError, ValueError, pa.ArrowException) as exc:  # damaged, cut or empty
                raise_machine_error(exc, parquet_uri)  # too many open files, no memory: the machine's
                parquet_problems.append((BAD_PARQUET, parquet_problem(parquet_uri, exc,
                                                                      "the shard's failed downloads are unknown")))
            else:
                parquet_read, keyless, rows = keyed is not None, keyed is None, keyed or {}
                if unkeyed:
                    parquet_problems.append((hf_parquet.TEXT_NOT_UTF8, _unkeyed_detail(parquet_uri, unkeyed)))
        successes, stats_problems = None, []
        if _listing_file(stats_uri, root, follow_links, stats_problems):
            successes = _stats_successes(stats_uri, stats_problems)
        found = ((parquet_uri, parquet_problems), (stats_uri, stats_problems))
        return cls(rows, successes, tuple((reason, detail, relative_to_root(root, uri))
                                          for uri, problems in found for reason, detail in problems), parquet_read,
                   keyless)

    def successes(self) -> list[str]:
        return [k for k, row in self.rows.items() if download_status(row) == "success"]


def _stats_successes(stats_uri: str, problems: list[tuple[str, str]]) -> int | None:
    """The successes a shard's `_stats.json` counts (None: unknown). One too large, unreadable or
    a directory is its problem in `problems` (the shard's samples are still read); too many open
    files or no memory reading it stays the machine's `MachineError`."""
    try:
        parsed = parse_json(read_input_bytes(stats_uri))
    except (OSError, fsio.FileTooLarge) as exc:  # read_input_bytes raised any MachineError already
        reason = FILE_TOO_LARGE if isinstance(exc, fsio.FileTooLarge) else "unreadable_file"
        problems.append((reason, parquet_problem(stats_uri, exc, "the shard's successes are unknown")))
        return None
    return parsed["successes"] if isinstance(parsed.get("successes"), int) else None


def _listing_file(uri: str, root: str, follow_links: bool, problems: list[tuple[str, str]]) -> bool:
    """Whether a shard's listing file is there to read; one that links out of `root` (or is a
    fifo) is its problem in `problems`, never opened."""
    if not fsio.exists(uri):
        return False
    outside = path_problem(root, uri, follow_links)
    if outside:
        problems.append(outside)
    return outside is None


def listing_rejects(name: str, listing: ShardListing, shard: str, parquet: str = "") -> Iterator[Reject]:
    """A downloader's parquet (img2dataset's, video2dataset's) lists every URL it tried; failed
    ones become counted rejects of source `name` keyed `data_key(name, shard, key)` (an unreadable
    parquet is one `bad_parquet` reject: what it would have listed is unknown; a listing file that
    links out of the root an `outside_root` one, never read). Their `input`: the listing `parquet`
    (as the root sees it), the row's key and its URL; a listing file's problem names that file."""
    for reason, detail, at in listing.problems:
        yield shard_reject(name, data_key(name, shard), "read", reason, detail, at)
    for sample_key, row in listing.rows.items():
        state = download_status(row)
        if state != "success":
            yield shard_reject(name, data_key(name, shard, sample_key), "download", state,
                               str(row.get("error_message") or ""), _listed_input(parquet, sample_key, row))


def missing_rejects(name: str, listing: ShardListing, shard: str, seen: set[str], archive: str,
                    where: str = "") -> Iterator[Reject]:
    """Successes the downloader recorded that the archive (or folder) does not hold: a cut or lost
    shard. Their `input`: `where` (the archive as the root sees it, with `:` or `/`) and the key.
    Then one reject per success its `_stats.json` counts beyond those the parquet lists or the
    archive holds (`unlisted_successes`), keyed `missing-1`, `missing-2`... (their keys unknown)."""
    listed = listing.successes()
    for sample_key in listed:
        if sample_key not in seen:
            yield shard_reject(name, data_key(name, shard, sample_key), "read", "missing_from_archive",
                               f"{shard}.parquet lists {sample_key} as downloaded; {archive} lacks it",
                               f"{where}{sample_key}" if where else "")
    lost = unlisted_successes(listing, listed, seen)
    if lost:
        if listing.parquet_read:  # img2dataset counts a success before writing it: its writer raised on these
            why = (f"{shard}_stats.json counts {listing.stats_successes} successes, {shard}.parquet lists "
                   f"{len(listed)} and {archive} holds {len(seen)}: {lost} downloaded samples were written "
                   "nowhere (img2dataset's sample writer failed on them; see its log; e.g. a URL list whose "
                   "captions are not all UTF-8 fails every one)")
        elif listing.keyless:  # a table of another tool beside the archive: it names no sample
            why = (f"{shard}_stats.json counts {listing.stats_successes} successes, {archive} holds {len(seen)}; "
                   f"{shard}.parquet has no key column (no img2dataset listing): the missing keys are unknown")
        else:
            why = (f"{shard}_stats.json counts {listing.stats_successes} successes, {archive} holds {len(seen)}; "
                   f"without {shard}.parquet the missing keys are unknown")
        counted = min(lost, MAX_UNLISTED_REJECTS)
        for number in range(1, counted + 1):
            more = f" ({lost - counted} more claimed, not counted one by one)" \
                if number == counted < lost else ""
            yield shard_reject(name, data_key(name, shard, "missing", str(number)), "read", "missing_from_archive",
                               why[:300 - len(more)] + more, where.rstrip(":/"))


def unlisted_successes(listing: ShardListing, listed: list[str], seen: set[str]) -> int:
    """How many successes a shard's `_stats.json` counts beyond those its parquet lists (`listed`)
    or its archive holds (`seen`): samples no file names, each to be counted (0 when unknown)."""
    if listing.stats_successes is None:
        return 0
    return max(0, listing.stats_successes - len(set(listed) | seen))


def _listed_input(parquet: str, sample_key: str, row: dict[str, Any]) -> str:
    """A downloader's listed row as a reject's `input`: its parquet, its key and its URL."""
    url = row.get("url")
    return f"{parquet} key {sample_key}" + (f": {url}" if isinstance(url, str) and url else "") if parquet else ""


def parquet_problem(uri: str, exc: BaseException, unknown: str) -> str:
    """A `bad_parquet` detail: the file by name (not where it lies), the error, what is unknown."""
    name = fsio.basename(uri)
    return f"{name} cannot be read ({type(exc).__name__}: {str(exc).replace(uri, name)}); {unknown}"


# the values a listing's read columns (`LISTING_COLUMNS`) may hold, all its rows together (held
# whole, as dicts): img2dataset writes 10,000 rows a shard, ~3 MB of them; 100,000 rows of LAION
# captions and URLs ~40 MB
MAX_LISTING_BYTES = 64 << 20
CAPTION_CELLS = ("txt", "caption")  # an `output_format=parquet` shard's caption columns (built)
# the columns of a listing the build reads: the key, the download's outcome, what a reject's input
# and the lineage name (URL, caption, sizes) and the recorded hash. Others (`exif`: ~600 bytes a
# camera photo, img2dataset's `--save_additional_columns`) are never read: each sample's `.json`
# carries them into its lineage; 100,000 rows with camera EXIF hold 76 MB, over the budget
LISTING_COLUMNS = ("key", "status", "error_message", "url", "caption", "width", "height", "original_width",
                   "original_height", *HASH_COLUMNS)


def _parquet_rows(parquet_uri: str) -> tuple[dict[str, dict[str, Any]] | None, list[int]]:
    """An img2dataset listing's rows by key (None: a parquet without a `key` column, no listing),
    of its `LISTING_COLUMNS` alone (others never read),
    and the indexes of the rows left out for a key that is not UTF-8 (no sample can be matched to
    them). Judged before any row is read on the values those columns hold (`hf_parquet.value_bytes`:
    its footer's sizes, or for a dictionary-encoded column what each row points at): past
    `MAX_LISTING_BYTES` it is a ValueError (the shard's `bad_parquet`), never read whole (it was,
    binary columns and all). A value that is not UTF-8 in a string column (a Latin-1 URL that a
    writer handed pyarrow unchecked) is None in its row alone: it made the whole listing a
    `bad_parquet`, its failed downloads and recorded hashes lost; a caption is its text as
    `caption_cell` reads it (it was None)."""
    with fsio.open_file(parquet_uri, read_ahead=False) as handle:
        parquet = hf_parquet.open_parquet(handle, pre_buffer=False)
        schema = parquet.schema_arrow
        if "key" not in schema.names:
            return None, []
        keep = [c for c in LISTING_COLUMNS if c in schema.names and not hf_parquet.is_binary(schema.field(c).type)]
        held = sum(hf_parquet.value_bytes(handle, parquet, index, keep) for index in range(parquet.num_row_groups))
        if held > MAX_LISTING_BYTES:
            raise ValueError(f"its rows hold {held} bytes of values, over the {MAX_LISTING_BYTES} byte budget of a "
                             "listing: not read")
        table = parquet.read(columns=keep, use_threads=False)
    try:
        rows = table.to_pylist()
    except UnicodeDecodeError:  # a cell not UTF-8: each column read on its own, its bad cells None
        columns = {name: _caption_column(table.column(name)) if name == "caption"
                   else hf_parquet.readable_values(table.column(name)) for name in table.column_names}
        unkeyed = set(columns["key"][1])
        rows = [{name: values[index] for name, (values, _) in columns.items()}
                for index in range(table.num_rows) if index not in unkeyed]
        return {nfc(str(row["key"])): row for row in rows}, sorted(unkeyed)
    return {nfc(str(row["key"])): row for row in rows}, []


def _caption_column(column) -> tuple[list, list[int]]:
    """A listing's caption column, a cell that is not UTF-8 read as a `binary` caption's, not lost
    (the column's bytes taken once, `hf_parquet.caption_values`); no cell is bad."""
    values = hf_parquet.caption_values(column)
    return [caption_cell(value) if isinstance(value, bytes) else value for value in values], []


def caption_cell(raw: bytes | None) -> str | None:
    """Caption bytes as text, the one rule for them in every layout (a `.txt` member or file, a
    `binary` caption cell, a string one that is not UTF-8, a `.txt` img2dataset wrote as a bytes
    literal): UTF-8, each byte that is not as U+FFFD (`caf\\xe9 au lait` keeps all but one letter;
    `img2dataset_notices.ListingNotes` says so)."""
    return None if raw is None else raw.decode("utf-8", errors="replace")


def _unkeyed_detail(parquet_uri: str, rows: list[int]) -> str:
    """The `text_not_utf8` detail of a listing's rows whose key is not UTF-8 (never the bytes)."""
    shown = ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
    return (f"{fsio.basename(parquet_uri)}: row{'s' * (len(rows) > 1)} {shown}: column 'key' holds text that is not "
            "UTF-8 (a string column must be): not listed, their downloads' outcome unknown")


def download_status(row: dict[str, Any]) -> str:
    """img2dataset's status of one parquet row: a parquet without a `status` column (older
    img2dataset outputs, hand-made listings) lists what was downloaded, so its rows are successes;
    an empty status in a row that has the column is a failure of unknown kind."""
    if "status" not in row:
        return "success"
    return str(row["status"] or "failed")


def recorded_hash(recorded: dict[str, Any]) -> tuple[str, str] | None:
    """(algorithm, hex digest) img2dataset recorded for a sample whose stored bytes are the bytes it
    downloaded and hashed: only with `--disable_all_reencoding True`, whose rows carry a `width`
    of null. A re-encoded or resized image never has the download's hash, so none is checked."""
    if "width" not in recorded or recorded["width"] is not None:
        return None
    for algorithm in HASH_COLUMNS:
        if isinstance(recorded.get(algorithm), str) and recorded[algorithm]:
            return algorithm, recorded[algorithm].lower()
    return None


def hash_problem(recorded: dict[str, Any], data: bytes, name: str) -> str | None:
    """Why `data` is not the image img2dataset downloaded (a bad disk, a bad copy, a tool that
    rewrote it), or None: bytes that still decode would otherwise become a sentence unnoticed."""
    expected = recorded_hash(recorded)
    if expected is None:
        return None
    algorithm, digest = expected
    actual = hashlib.new(algorithm, data).hexdigest()
    if actual == digest:
        return None
    return (f"{name}: {algorithm} of its {len(data)} bytes is {actual[:16]}..., img2dataset recorded "
            f"{digest[:16]}... for the download (stored unchanged, --disable_all_reencoding): changed since")


def parse_json(data: bytes | None) -> dict:
    """A sample's `.json` as a dict; {} for one that is no JSON object, or nested past Python's
    recursion limit (a `[` * 200,000: json's RecursionError failed the whole shard's unit)."""
    if not data:
        return {}
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return parsed if isinstance(parsed, dict) else {}
