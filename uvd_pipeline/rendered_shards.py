"""Rendered-sentence shards: webdataset tars of lossless images, a rejects file and a stats file.

One shard per (source, split, index). A shard is committed in three steps: the tar and the
rejects file (and, for web images when deduplication is on, the fingerprints file: see
`uvd_pipeline.dedup`) are written under temporary names and renamed, and only then is the stats
JSON written. A shard without its stats file does not exist: a rerun rewrites it (with the same
bytes, since members are sorted by key and tar headers carry no times or owners). The stats record
the size and sha256 of every file of the shard (`tar_bytes`/`tar_sha256`, and `files` for the
side files); resume, tokenize and the report check them (`uvd_pipeline.integrity`).

A local output's temporaries (the tar being written, the sentences being sorted) live in the
run's folder `OUT/_tmp/<run id>/` (`uvd_pipeline.output_lock`), which the next run removes if a
kill left it behind; the finished tar is renamed from there into place.

In a tar, a sentence is `{sentence_id}.json` (its header) then `{sentence_id}.NN.png` for each
image: webdataset cuts keys at the first dot, so the images share the sentence's key. Ids of one
shard that differ only in case or Unicode form (`web-Cat`, `web-cat`) get `-c` and a digest of
themselves (`uvd_pipeline.keys.apart_when_folded`), in the member names and in the headers: a Mac
or Windows extracting the tar would take them for one file. Members named beyond ASCII get pax
headers (`uvd_pipeline.tarfiles.member_format`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import tarfile
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from sources import fsio
from sources.records import Reject, nfc, unicode_form
from tokenizer.atomic import commit_file, is_temporary, write_bytes
from uvd_pipeline.dedup import FINGERPRINTS_SUFFIX, Fingerprint, fingerprint_lines
from uvd_pipeline.integrity import (REBUILD_HINT, HashingReader, Recorded, ShardDamaged, check_file, confirm, file_sizes,
                                    named_files, rendered_files)
from uvd_pipeline.keys import apart_when_folded
from uvd_pipeline.quality import ShardQuality
from uvd_pipeline.sentences import Sentence
from uvd_pipeline.state_files import read_state_json
from uvd_pipeline.tarfiles import TarWriter

log = logging.getLogger(__name__)
RENDERED_DIR = "rendered"
STATS_SUFFIX = ".stats.json"
REJECTS_SUFFIX = ".rejects.jsonl"
TAR_SUFFIX = ".tar"


def sentence_group(kind: str, task: str) -> str:
    """How reports group sentences: by kind, and by task where a kind has several."""
    return kind if task in ("none", kind) else f"{kind}/{task}"


class ShardAddress(NamedTuple):
    source: str
    split: str
    index: int

    @property
    def stem(self) -> str:
        return f"{self.source}-{self.split}-{self.index:05d}"

    def folder(self, output: str) -> str:
        return fsio.join(output, RENDERED_DIR, self.source, self.split)

    def path(self, output: str, suffix: str) -> str:
        return fsio.join(self.folder(output), self.stem + suffix)


def stats_files(output: str) -> list[str]:
    """Every committed shard's stats file under a build output (any source, any split)."""
    root = fsio.join(output, RENDERED_DIR)
    if not fsio.exists(root):
        return []
    return [f for f in fsio.list_files(root, (STATS_SUFFIX,), recursive=True) if not is_temporary(f)]


def read_json(uri: str) -> Any:
    """One of the build's own JSON files, judged before it is read (`state_files`)."""
    return read_state_json(uri)


def read_stats(uri: str) -> dict[str, Any]:
    """A stats file's record; ValueError when it is not JSON (truncated, overwritten) or not a
    JSON object."""
    stats = read_json(uri)
    if not isinstance(stats, dict):
        raise ValueError("not a JSON object")
    return stats


def committed_shards(output: str, config_hash: str, verify: bool = False, claimed: set[str] | None = None,
                     each: Callable[[ShardAddress, str, dict[str, Any]], None] | None = None) -> set[ShardAddress]:
    """Shards already finished by an earlier run of the same config (skipped on resume).

    Each shard's files are checked against its stats: the sizes always, the sha256 with `verify`
    (it reads every tar), and the rejects file's always (it is small, and every build merges it
    into `rejects.jsonl`). A damaged shard is not committed any more: its stats file is removed
    (with a warning naming the file), so this run writes the shard again. An unreadable stats
    file is removed the same way. `claimed`: gets every file the stats files that stay name, the
    stats files included (`named_files`), for the stray check, which then reads none again.
    `each`: called with every committed shard's address, stats file and stats as read, for the
    steps after this one that need them (`relocate`, the summary): they read none again."""
    done = set()
    sizes = file_sizes(fsio.join(output, RENDERED_DIR))
    for uri in stats_files(output):
        try:
            stats = read_stats(uri)
        except ValueError as exc:
            log.warning("damaged: %s: unreadable stats (%s); the shard is rebuilt", uri, exc)
            uncommit(uri)
            continue
        if stats.get("config_hash") != config_hash:
            if claimed is not None:
                claimed.update(named_files(uri, stats, "rendered"))
            continue
        problems = [(f.uri, why) for f in rendered_files(uri, stats)
                    if (why := check_file(f, verify or f.uri.endswith(REJECTS_SUFFIX), sizes))]
        if problems:
            for path, why in problems:
                log.warning("damaged: %s: %s; shard %s is rebuilt", path, why, fsio.basename(uri)[: -len(STATS_SUFFIX)])
            uncommit(uri)
            continue
        if claimed is not None:
            claimed.update(named_files(uri, stats, "rendered"))
        address = ShardAddress(stats["source"], stats["split"], int(stats["shard"]))
        if each is not None:
            each(address, uri, stats)
        done.add(address)
    return done


def uncommit(stats_uri: str) -> None:
    """Remove a shard's commit mark (its stats file): the shard is not committed any more."""
    fs, path = fsio.filesystem(stats_uri)
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)


def remove_temporaries(output: str) -> int:
    """Delete leftovers of an interrupted run or of a retried bundle whose worker was lost: every
    file with the temporary mark anywhere in the output (rendered and token shards, the unit
    store, the shard input records, the output's own files such as `summary.json`): only while no
    writer runs. Returns how many went. One gone between the listing and its removal is gone: after
    Ctrl-C/SIGTERM a worker thread still inside a bundle may rename or drop its temporary under
    the sweep, whose FileNotFoundError made the interrupted build a crash (exit 1, a traceback; 1
    of 4 SIGTERM runs with thread workers)."""
    if not fsio.exists(output):
        return 0
    fs, _ = fsio.filesystem(output)
    leftovers = [f for f in fsio.list_files(output, recursive=True) if is_temporary(f)]
    removed = 0
    for uri in leftovers:
        with contextlib.suppress(FileNotFoundError):
            fs.rm(fsio.filesystem(uri)[1])
            removed += 1
    return removed


class _SpillSorter:
    """Keeps a shard's sentences on local disk and yields them sorted by id.

    A shard may hold more sentences than fit in memory; only (id, offset, length) stays in RAM.
    """

    def __init__(self, folder: str | None = None) -> None:
        self._file = tempfile.TemporaryFile(dir=folder)
        self._index: list[tuple[str, str, int, int]] = []
        self._end = 0  # appends only: no seek (each one flushed the write buffer) until `sorted`

    def add(self, sentence: Sentence) -> None:
        blob = pickle.dumps(sentence, protocol=pickle.HIGHEST_PROTOCOL)
        offset = self._end
        self._file.write(blob)
        self._end += len(blob)
        # the header digest orders sentences sharing an id the same way whatever the arrival order
        digest = hashlib.sha256(sentence.header_json()).hexdigest()
        self._index.append((sentence.sentence_id, digest, offset, len(blob)))

    def __len__(self) -> int:
        return len(self._index)

    def sorted(self) -> Iterator[Sentence]:
        """The sentences by id, an id that another of the shard equals but for case or Unicode form
        made distinct (`apart_when_folded`): extracted on a Mac or Windows, their members would
        overwrite each other."""
        renamed = apart_when_folded(key for key, _, _, _ in self._index)
        for key, _, offset, length in sorted((renamed.get(k, k), *rest) for k, *rest in self._index):
            self._file.seek(offset)
            sentence = pickle.loads(self._file.read(length))
            yield sentence if sentence.sentence_id == key else replace(sentence, sentence_id=key)

    def close(self) -> None:
        self._file.close()


# line ends to `str.splitlines` (and to JavaScript before ES2019) that JSON leaves unescaped
_LINE_ENDS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def jsonl_line(row: dict[str, Any]) -> str:
    """`row` as one JSON Lines line, readable text (`ensure_ascii` off) whose one line end is its
    last character: a U+2028 in a file name a reject names split the line for `splitlines` readers."""
    return json.dumps(row, sort_keys=True, ensure_ascii=False).translate(_LINE_ENDS) + "\n"


def _recorded(data: bytes) -> dict[str, Any]:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


class IncompleteShardError(RuntimeError):
    """A shard's items arrived incomplete; committing it would lose data silently."""


@dataclass
class ShardWriteResult:
    address: ShardAddress
    stats: dict[str, Any]
    skipped: bool
    placed: list[tuple[Any, int]] = field(default_factory=list)  # (image read by `read_image`, its offset in the tar)


def write_shard(
    output: str,
    address: ShardAddress,
    items: Iterable[Sentence | Reject | Fingerprint],
    *,
    config_hash: str,
    num_shards: int,
    image_size: int,
    format_version: int,
    expected_items: int | None = None,
    read_image: Callable[[Any], bytes] | None = None,
    run_id: str | None = None,
    before_commit: Callable[[str, list[tuple[Any, int]]], None] | None = None,
) -> ShardWriteResult:
    """Write one shard (tar, rejects, then stats) unless an earlier run already committed it.

    A sentence's images are bytes, or references that `read_image` reads as the tar is written
    (a shard's sentences wait in the sort spill as references, not pixels); the result lists where
    in the tar each referenced image landed (`placed`), so its other copy can be released.
    `run_id`: nothing is committed once that run no longer holds the output's lock (`LockLost`).
    `before_commit(tar_sha256, placed)`: called once the tar is in place, before the stats file
    commits the shard (the placement record: a kill between a commit and that record kept the
    store's copies of the shard's images for good, its rerun keeping the shard)."""
    stats_uri = address.path(output, STATS_SUFFIX)
    if fsio.exists(stats_uri):
        existing = read_json(stats_uri)
        if existing.get("config_hash") == config_hash:
            return ShardWriteResult(address, existing, skipped=True)
    from uvd_pipeline.output_lock import run_tmp

    scratch = run_tmp(output)  # None: the system's temporary folder
    spill = _SpillSorter(scratch)
    rejects: list[dict[str, str]] = []
    fingerprints: list[Fingerprint] = []
    try:
        for item in items:
            if isinstance(item, Sentence):
                spill.add(item)
            elif isinstance(item, Fingerprint):
                fingerprints.append(item)
            else:
                rejects.append(item.as_row())
        received = len(spill) + len(rejects) + len(fingerprints)
        if expected_items is not None and received != expected_items:
            raise IncompleteShardError(
                f"shard {address.stem}: received {received} of {expected_items} items; it is not committed "
                "(the runner lost data; run the build again to finish it)"
            )
        with tempfile.NamedTemporaryFile(suffix=TAR_SUFFIX, delete=False, dir=scratch) as local:
            local_tar = local.name
            # the wrapper's own file: each write through the wrapper looks the method up again
            tally, size, digest = _write_tar(local.file, spill.sorted(), rejects, image_size, read_image)
        try:
            from uvd_pipeline.output_lock import check_held

            check_held(output, run_id)  # the tar, the side files and the stats follow within moments
            commit_file(local_tar, address.path(output, TAR_SUFFIX))
        finally:
            with contextlib.suppress(FileNotFoundError):  # renamed into place
                os.unlink(local_tar)
        rejects.sort(key=lambda r: (r["key"], r["stage"], r["reason"], r["detail"], r["input"]))
        lines = "".join(jsonl_line(r) for r in rejects).encode()
        write_bytes(address.path(output, REJECTS_SUFFIX), lines)
        side_files = {address.stem + REJECTS_SUFFIX: _recorded(lines)}
        if fingerprints:
            data = fingerprint_lines(fingerprints)
            write_bytes(address.path(output, FINGERPRINTS_SUFFIX), data)
            side_files[address.stem + FINGERPRINTS_SUFFIX] = _recorded(data)
        stats = {
            "format_version": format_version,
            "config_hash": config_hash,
            "source": address.source,
            "split": address.split,
            "shard": address.index,
            "num_shards": num_shards,
            "tar": address.stem + TAR_SUFFIX,
            "tar_bytes": size,
            "tar_sha256": digest,
            "files": dict(sorted(side_files.items())),  # the side files' sizes and digests
            "image_size": image_size,
            **tally.stats(rejects),
        }
        if fingerprints:
            stats["fingerprints"] = len(fingerprints)
        if before_commit is not None:
            before_commit(digest, tally.placed)
        write_bytes(stats_uri, json.dumps(stats, indent=1, sort_keys=True).encode())
        return ShardWriteResult(address, stats, skipped=False, placed=tally.placed)
    finally:
        spill.close()


@dataclass
class _Tally:
    """What a shard's tar received, for its stats; and where each referenced image landed."""

    quality: ShardQuality
    kinds: Counter = field(default_factory=Counter)
    tasks: Counter = field(default_factory=Counter)
    kind_tasks: Counter = field(default_factory=Counter)
    images: int = 0
    sentences: int = 0
    first: str | None = None
    last: str | None = None
    placed: list[tuple[Any, int]] = field(default_factory=list)

    def stats(self, rejects: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "sentences": self.sentences,
            "images": self.images,
            "by_kind": dict(sorted(self.kinds.items())),
            "by_task": dict(sorted(self.tasks.items())),
            "by_kind_task": dict(sorted(self.kind_tasks.items())),
            "rejects": len(rejects),
            "rejects_by_reason": dict(sorted(Counter(r["reason"] for r in rejects).items())),
            "rejects_by_stage": dict(sorted(Counter(r["stage"] for r in rejects).items())),
            "first_sentence": self.first,
            "last_sentence": self.last,
            **self.quality.stats(),  # input sizes, sentence lengths, images per kind/task (for the report)
        }


def _write_tar(fileobj, sentences: Iterable[Sentence], rejects: list[dict[str, str]], image_size: int,
               read_image: Callable[[Any], bytes] | None) -> tuple[_Tally, int, str]:
    """Sorted sentences into a tar; a repeated id becomes a reject (a tar must not hold a key twice).
    Returns the tally, and the tar's size and sha256."""
    tally = _Tally(ShardQuality(image_size))
    with TarWriter(fileobj) as tar:
        for sentence in sentences:
            if sentence.sentence_id == tally.last:
                rejects.append(duplicate_sentence(sentence).as_row())
                continue
            tar.add(f"{sentence.sentence_id}.json", sentence.header_json())
            for position, image in enumerate(sentence.images):
                png = image if isinstance(image, bytes) or read_image is None else read_image(image)
                offset = tar.add(f"{sentence.sentence_id}.{position:02d}.png", png)
                if png is not image:
                    tally.placed.append((image, offset))
            group = sentence_group(sentence.kind, sentence.task)
            tally.kinds[sentence.kind] += 1
            tally.tasks[sentence.task] += 1
            tally.kind_tasks[group] += 1
            tally.quality.add(sentence.kind, group, sentence.members, sentence.meta, sentence.n_images)
            tally.images += sentence.n_images
            tally.sentences += 1
            tally.first = tally.first or sentence.sentence_id
            tally.last = sentence.sentence_id
    return tally, tar.size, tar.sha256()


def duplicate_sentence(sentence: Sentence) -> Reject:
    """A second sentence with an id already written to this shard: keys are unique by
    construction, so this means two inputs map to one key; the one whose header sorts first is
    kept, this one is counted instead of writing a tar webdataset would refuse."""
    return Reject(sentence.sentence_id, sentence.source, sentence.sentence_id, "write", "duplicate_key",
                  f"another sentence of this shard has id {sentence.sentence_id}; this one from "
                  f"{sentence_origin(sentence)}"[:300])


# lineage that names a sentence's input where its members carry no path (a multi-view object's views)
ORIGIN_FIELDS = ("uid", "category", "sequence", "building", "stem", "file")


def sentence_origin(sentence: Sentence) -> str:
    """What a sentence was made from, for a reject: its first member's path or key, else the
    lineage naming its input (`uid café (NFD)`: twins' names differ in their Unicode form alone).
    A multi-view sentence's members carry none of the first, and the detail ended in nothing."""
    member = sentence.members[0] if sentence.members else {}
    origin = member.get("path") or member.get("sample_key") or member.get("key")
    if origin:
        return str(origin)
    named = [(name, sentence.meta[name]) for name in ORIGIN_FIELDS if isinstance(sentence.meta.get(name), str)]
    shown = [f"{name} {nfc(value)}" + ("" if unicode_form(value) == "NFC" else f" ({unicode_form(value)})")
             for name, value in named]
    return ", ".join(shown) or f"a {sentence.kind} sentence of {sentence.source}"


# -- reading back ----------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredSentence:
    header: dict[str, Any]
    images: tuple[bytes, ...]

    @property
    def sentence_id(self) -> str:
        return self.header["sentence_id"]


def tar_recorded(output: str, stats: dict[str, Any]) -> Recorded:
    """A rendered shard's tar as its stats (or the fields the Tokenize step carries) record it."""
    uri = fsio.join(output, RENDERED_DIR, stats["source"], stats["split"], stats["tar"])
    return Recorded(uri, stats.get("tar_bytes"), stats.get("tar_sha256"))


def verified_tar(output: str, source: str, split: str, tar: str) -> str:
    """The tar of a committed shard after checking it (size and sha256) against its stats file,
    for a reader that may not read it to the end (the report). Raises `ShardDamaged`."""
    stats_uri = fsio.join(output, RENDERED_DIR, source, split, tar[: -len(TAR_SUFFIX)] + STATS_SUFFIX)
    try:
        stats = read_json(stats_uri)
    except FileNotFoundError:
        raise ShardDamaged(stats_uri, "missing: the shard is not committed; run the build to finish it") from None
    except ValueError as exc:
        raise ShardDamaged(stats_uri, f"unreadable stats ({exc})"[:200] + f"; {REBUILD_HINT}") from None
    recorded = Recorded(fsio.join(output, RENDERED_DIR, source, split, tar), stats.get("tar_bytes"),
                        stats.get("tar_sha256"))
    why = check_file(recorded, full=True)
    if why:
        raise ShardDamaged(recorded.uri, f"{why}; {REBUILD_HINT}")
    return recorded.uri


def iter_shard(uri: str | Recorded) -> Iterator[StoredSentence]:
    """Stream the sentences of a rendered tar in order (never the whole tar in memory).

    Given a `Recorded` tar, its size is checked before the first sentence and its sha256 after the
    last (the bytes are hashed as they stream): a damaged tar raises `ShardDamaged` naming it, also
    when it breaks the tar format first. Stopping early skips the digest check."""
    recorded = uri if isinstance(uri, Recorded) else None
    path = recorded.uri if recorded else uri
    if recorded is not None:
        why = check_file(recorded)
        if why:
            raise ShardDamaged(path, f"{why}; {REBUILD_HINT}")
    header: dict[str, Any] | None = None
    images: list[bytes] = []
    with fsio.open_file(path) as handle:
        reader = HashingReader(handle)
        try:
            with tarfile.open(fileobj=reader.buffered(), mode="r|") as tar:
                for info in tar:
                    extracted = tar.extractfile(info)
                    data = extracted.read() if extracted is not None else b""
                    key, _, ext = info.name.partition(".")
                    if ext == "json":
                        if header is not None:
                            yield StoredSentence(header, tuple(images))
                        header, images = json.loads(data), []
                    else:
                        images.append(data)
        except (tarfile.TarError, ValueError, EOFError) as exc:
            if recorded is not None:
                confirm(recorded, reader)  # names the file if its bytes changed
            raise ShardDamaged(path, f"not a readable tar ({type(exc).__name__}: {exc})"[:300]) from None
        if recorded is not None:
            confirm(recorded, reader)
    if header is not None:
        yield StoredSentence(header, tuple(images))
