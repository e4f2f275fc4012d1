"""Which layout a web source's folder is (`detect_format`): img2dataset's webdataset tars, its
`files` folders or its parquet with the images, a Hugging Face `datasets` parquet layout, or a
plain image folder; and the layouts refused by name before a build starts (img2dataset's
tfrecords, a `datasets` `save_to_disk` folder)."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Literal

from sources import fsio, hf_parquet
from sources.imagefolder import METADATA_FILES
from sources.img2dataset_listing import (data_dirs, is_shard_listing_name, is_shard_name, unfinished_shard_files,
                                         unfinished_shards)
from sources.parquet_columns import ParquetColumns
from sources.paths import path_problem, relative_to_root, set_aside, set_aside_problem
from sources.records import raise_machine_error

LaionFormat = Literal["auto", "webdataset", "files", "parquet", "huggingface", "folder"]


# each parquet's columns (`ParquetColumns`, or why its schema did not read) as read inside
# `schemas_read_once`, at most `MAX_SCHEMAS_HELD` of them, each taking at most
# `MAX_SCHEMA_HELD_BYTES` of memory (`ParquetColumns.held_bytes`: a schema of more columns is read
# again, never held): the layout's detection, the units' and the notices' planning read
_SCHEMAS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("uvd_parquet_schemas",
                                                                                 default=None)
MAX_SCHEMAS_HELD = 16
MAX_SCHEMA_HELD_BYTES = 1 << 20


@contextlib.contextmanager
def schemas_read_once() -> Iterator[None]:
    """Inside the block (one planning stretch: the input as it is now) each parquet's footer is
    read once (`parquet_columns`). A build's planning opened an `output_format=parquet` shard 12
    times (its layout detected three times, twice a detection, and its notices taken twice, three
    reads a time): a footer fetch each time from a remote store."""
    token = _SCHEMAS.set({}) if _SCHEMAS.get() is None else None
    try:
        yield
    finally:
        if token is not None:
            _SCHEMAS.reset(token)


def parquet_columns(uri: str) -> ParquetColumns:
    """A parquet's columns, from its Arrow schema (`hf_parquet.read_schema`: one that cannot be
    trusted raises), read once inside `schemas_read_once` (a later ask is recorded as an open,
    `fsio.opening`)."""
    import pyarrow as pa

    memo = _SCHEMAS.get()
    if memo is not None and uri in memo:
        fsio.opening(uri)
        if isinstance(memo[uri], BaseException):
            raise memo[uri]
        return memo[uri]
    try:
        with fsio.open_file(uri, read_ahead=False) as handle:
            found: Any = ParquetColumns.of(hf_parquet.read_schema(handle))
    except (OSError, ValueError, pa.ArrowException) as exc:  # raised again at each ask, as read
        found = exc.with_traceback(None)  # its frames (the open file's) not held
    if memo is not None and len(memo) < MAX_SCHEMAS_HELD and (
            isinstance(found, BaseException) or found.held_bytes() <= MAX_SCHEMA_HELD_BYTES):
        memo[uri] = found
    if isinstance(found, BaseException):
        raise found
    return found


def image_column(parquet_uri: str) -> str | None:
    """The binary image column of an `output_format=parquet` shard, if it has one."""
    return parquet_columns(parquet_uri).stored_image


def refuse_tfrecords(name: str, root: str, files: list[str]) -> None:
    """Raise for img2dataset's `output_format=tfrecord` (`NNNNN.tfrecord` beside its listings)
    among a folder's `files`, which this source does not read: taken for a plain folder, each
    shard and listing would be an image the decoder fails."""
    records = sorted(fsio.basename(f) for f in files
                     if f.lower().endswith(".tfrecord") and not set_aside(fsio.basename(f)))
    if records:
        raise FileNotFoundError(
            f"{name}: {records[0]}{f' and {len(records) - 1} more' if len(records) > 1 else ''} in {root} is "
            "img2dataset's output_format=tfrecord, which this source does not read: download again with "
            "--output_format webdataset (or files, or parquet)")


def detect_format(root: str, follow_links: bool = False) -> LaionFormat:
    with schemas_read_once():  # a parquet's footer read once, whether it holds images and whose they are
        return _detected_format(root, follow_links)


def _detected_format(root: str, follow_links: bool) -> LaionFormat:
    # `links`: a shard that is a fifo or a link still names the layout (its unit rejects it,
    # `not_a_file`), never taken for a plain folder whose listings are images without their file
    files = [f for f in fsio.list_files(root, links=True) if not set_aside(fsio.basename(f))]
    if any(is_shard_name(f) for f in files):
        return "webdataset"
    parquets = [f for f in files if f.endswith(".parquet")]
    if parquets and _is_hf_parquet(root, parquets, follow_links):  # a `to_parquet` file, maybe beside images
        return "huggingface"
    # img2dataset's `files` shards pair `NNNNN.parquet` with `NNNNN/`; an ImageFolder's own
    # `metadata.parquet` beside its image folders (`images/0.png`) is none of them
    if [p for p in parquets if fsio.basename(p) not in METADATA_FILES] and data_dirs(root):
        return "files"
    # img2dataset's `output_format=parquet` holds the images in its parquets: judged on a finished
    # shard's (one img2dataset is still writing is 0 bytes: its `_tmp/` names it, never built); a
    # killed download whose every parquet is such a shard is its layout too (one reject, no images)
    writing = set(unfinished_shard_files(parquets, unfinished_shards(root))) if parquets else set()
    finished = [p for p in parquets if p not in writing]
    holds = _holds_images(root, finished, follow_links)
    if holds or parquets and not finished or holds is None and finished and all(map(is_shard_listing_name, finished)):
        return "parquet"  # (none of img2dataset's named parquets reads: each its unit's `bad_parquet`)
    nested = [f for f in fsio.list_files(root, (".parquet",), recursive=True) if not set_aside_problem(root, f, False)]
    if nested and _is_hf_parquet(root, nested, follow_links):  # the Hub's `data/train-00000-of-00001.parquet`
        return "huggingface"
    return "folder"


def _holds_images(root: str, uris: list[str], follow_links: bool, tries: int = 8) -> bool | None:
    """Whether the first readable of these parquets (of the first `tries`) has an image column
    (`image_column`); None when none reads (damaged, empty, linking out of `root`: each its unit's
    reject, never a crash of the format's detection)."""
    import pyarrow as pa

    for uri in uris[:tries]:
        if path_problem(root, uri, follow_links):
            continue
        try:
            return image_column(uri) is not None
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise_machine_error(exc, uri)
    return None


def _is_hf_parquet(root: str, uris: list[str], follow_links: bool) -> bool:
    """Whether the first readable of these parquets holds a `datasets` `Image` column (one linking
    out of `root` without `follow_links`, other than a Hub cache snapshot's to its blobs, is never opened)."""
    found = first_schema(root, uris, follow_links)
    return found is not None and bool(found[1].image_columns or found[1].image_list_columns or found[1].nested_images)


def first_schema(root: str, uris: list[str], follow_links: bool, tries: int = 8
                 ) -> tuple[str, ParquetColumns] | None:
    """(file, its columns) of the first of `uris` whose footer reads (of the first `tries`; a
    damaged, empty or encrypted one, or one whose footer is over its budget, is its unit's
    `bad_parquet` reject, a link out of `root` its `outside_root` one, never opened here), or None."""
    import pyarrow as pa

    for uri in uris[:tries]:
        if path_problem(root, uri, follow_links):
            continue
        try:
            return uri, parquet_columns(uri)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise_machine_error(exc, uri)
    return None


def refuse_saved_datasets(name: str, root: str, files: list[str]) -> None:
    """Raise for a `datasets` `save_to_disk` folder (`state.json` beside `data-00000-of-00001.arrow`),
    or the `datasets` library's cache (`dataset_info.json` beside `parquet-train.arrow`: what
    `load_dataset` prepares), Arrow files this source does not read: taken for a plain folder, each
    would be an image the decoder fails (a build of 0 sentences)."""
    states = [f for f in files if fsio.basename(f) == "state.json"
              and any(g.endswith(".arrow") and g.startswith(f[: -len("state.json")]) for g in files)]
    if states:
        shown = relative_to_root(root, states[0])
        raise FileNotFoundError(
            f"{name}: {shown} in {root} is a Hugging Face datasets save_to_disk folder (Arrow files), which this "
            "source does not read: write it as parquet (datasets.load_from_disk(path).to_parquet('train.parquet'); "
            "of a DatasetDict each split to its own '<split>.parquet'), read as format: huggingface")
    infos = [f for f in files if fsio.basename(f) == "dataset_info.json"
             and any(g.endswith(".arrow") and g.startswith(f[: -len("dataset_info.json")]) for g in files)]
    if infos:  # `load_dataset(..., cache_dir=...)`: <builder>/<config>/<version>/<hash>/ and its .lock files
        shown = relative_to_root(root, infos[0])
        raise FileNotFoundError(
            f"{name}: {shown} in {root} is the Hugging Face datasets library's own cache (the Arrow files "
            "load_dataset prepared), which this source does not read: set path to the files load_dataset read "
            "(its parquet, or a Hub cache's snapshots/<commit>), or write them as parquet "
            "(load_dataset(...)['train'].to_parquet('train.parquet'))")
