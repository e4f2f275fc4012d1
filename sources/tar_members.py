"""The one walk over a webdataset tar's members that the img2dataset reader (`sources.laion`) and
the video2dataset reader (`sources.video_shards`) share.

Both downloaders write the same layout (webdataset's TarWriter): a sample is the run of members
whose names share a key (the path up to the first dot of the file name: `split_member`). The walk
counts what is no member of a sample (a folder is skipped; a Mac's `._x.jpg` is its `os_metadata`
reject; a link, device or fifo its `not_a_file` reject, never followed), a key that comes back
after its run ended or an extension given twice (`duplicate_key`), and a cut tar (`truncated_sample`
for the sample it cuts, one `corrupt_archive` for the shard; a tar that stops at a member boundary
without its end-of-archive block is cut too: `check_end_marker`), and hands each sample to its
source. What a member is worth keeping, and what a member over `MAX_INPUT_FILE_BYTES` costs
(`member_too_large`), is the source's (`Keep`). Too many open files or no memory reading a tar is
the machine's `MachineError` (the unit fails uncommitted), never the shard's reject.
"""

from __future__ import annotations

import posixpath
import tarfile
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterator

from sources import fsio
from sources.paths import NOT_A_FILE, set_aside_problem
from sources.records import MachineError, Reject, data_key, is_machine_error, nfc
from transforms.errors import exception_detail

MEMBER_TOO_LARGE = "member_too_large"  # a tar member over MAX_INPUT_FILE_BYTES, judged on its header


@dataclass
class Sample:
    """One webdataset sample as the walk read it: its key and what its source kept of each member."""

    key: str
    members: dict[str, Any] = field(default_factory=dict)  # extension -> what `Keep` kept
    dropped: bool = False  # rejected whole by `Keep` (a member over the cap): its later members are not read
    cut: bool = False  # the tar ends inside it: its `truncated_sample` is said (unless dropped), never a record


# A source's say on one member of `sample` with extension `ext`: keep something in
# `sample.members[ext]` (its bytes, its header, b"" for a sample another part reads) or set
# `sample.dropped`; the reject to count, if any.
Keep = Callable[[tarfile.TarFile, tarfile.TarInfo, Sample, str], "Reject | None"]


def shard_reject(name: str, key: str, stage: str, reason: str, detail: str) -> Reject:
    """A reject of source `name` about a web shard's sample or listing (its detail cut to 300 characters)."""
    return Reject(key, name, key, stage, reason, detail[:300])


def split_member(name: str) -> tuple[str, str]:
    """webdataset convention: the key is the path up to the first dot of the file name; in NFC
    (`nfc`), as keys take names: a tar made on a Mac names its members in NFD."""
    directory, base = posixpath.split(nfc(name))
    stem, _, ext = base.partition(".")
    return posixpath.join(directory, stem) if directory else stem, ext.lower()


def member_type(info: tarfile.TarInfo) -> str:
    for test, name in ((info.issym, "symlink"), (info.islnk, "hard link"), (info.ischr, "character device"),
                       (info.isblk, "block device"), (info.isfifo, "fifo")):
        if test():
            return name
    return f"type {info.type!r}"


def member_too_large(info: tarfile.TarInfo, cap: int) -> str | None:
    """The detail of a member's `member_too_large` reject when it is over `cap` bytes (judged on
    its header: never read), else None."""
    if info.size <= cap:
        return None
    return f"{info.name}: {info.size} bytes, over the {cap} byte cap for one member"


def member_bytes(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    """A regular member's bytes (the caller has judged its size)."""
    extracted = tar.extractfile(info)
    return extracted.read() if extracted is not None else b""


def check_end_marker(tar: tarfile.TarFile, handle) -> None:
    """Raise when an uncompressed tar stops at a member boundary without its end-of-archive
    block: `tarfile` ends such a stream quietly, and a shard cut there would look whole."""
    if getattr(tar.fileobj, "comptype", "tar") != "tar":
        return
    try:
        handle.seek(tar.offset)
        tail = handle.read(tarfile.BLOCKSIZE)
    except (OSError, ValueError):  # a stream that cannot seek: nothing more to learn
        return
    if len(tail) < tarfile.BLOCKSIZE or tail.count(0) != tarfile.BLOCKSIZE:
        raise tarfile.ReadError(f"the archive ends after {tar.offset} bytes without its end-of-archive "
                                "block (cut short)")


def _plain(handle: IO[bytes]) -> str:
    return "r:"


def samples(uri: str, name: str, shard: str, keep: Keep,
            mode: Callable[[IO[bytes]], str] = _plain) -> Iterator[Reject | Sample]:
    """The rejects and the samples of the tar at `uri` (source `name`, shard `shard`), in archive
    order (see the module's docstring); `mode` gives tarfile's mode for the opened file. A sample
    is handed over once its run of members ends (a cut one with `cut` set, before the shard's
    `corrupt_archive`); a repeated key's members are rejects, never a second sample."""
    archive = fsio.basename(uri)
    done: set[str] = set()  # keys whose run of members ended: a later member with one is a duplicate
    sample: Sample | None = None
    repeated = False  # the current run of members repeats a key already done
    try:
        with fsio.open_file(uri) as handle, tarfile.open(fileobj=handle, mode=mode(handle)) as tar:
            for info in tar:
                if info.isdir():
                    continue
                aside = set_aside_problem("", info.name, folder=False)
                if aside:  # macOS tar's `._00000.jpg` before `00000.jpg`: never a sample of key ''
                    yield shard_reject(name, data_key(name, shard, info.name), "read", aside.reason, aside.detail)
                    continue
                key, ext = split_member(info.name)
                if not info.isfile():  # links, devices, fifos: counted, never followed
                    yield shard_reject(name, data_key(name, shard, key), "read", NOT_A_FILE,
                                       f"{info.name}: tar member of type {member_type(info)}")
                    continue
                if sample is None or key != sample.key:
                    if sample is not None and not repeated:
                        yield sample
                        done.add(sample.key)
                    sample, repeated = Sample(key), key in done
                if repeated or ext in sample.members:
                    yield shard_reject(name, data_key(name, shard, key), "read", "duplicate_key",
                                       f"{info.name}: key {key} already has a {ext} member in {archive}")
                    continue
                if not sample.dropped:
                    rejected = keep(tar, info, sample, ext)
                    if rejected is not None:
                        yield rejected
            check_end_marker(tar, handle)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if is_machine_error(exc):  # too many open files, no memory: the machine's, no shard's reject
            raise MachineError(f"reading {archive}: {exc}") from exc
        # the sample whose header was read last is cut, whether in its first member or a later one
        if sample is not None and not repeated:
            if not sample.dropped:
                yield shard_reject(name, data_key(name, shard, sample.key), "read", "truncated_sample",
                                   exception_detail(exc))
            sample.cut = True
            yield sample
        sample = None
        yield shard_reject(name, data_key(name, shard), "read", "corrupt_archive", exception_detail(exc))
    if sample is not None and not repeated:
        yield sample
