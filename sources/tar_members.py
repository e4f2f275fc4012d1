"""The one walk over a webdataset tar's members that the img2dataset reader (`sources.laion`) and
the video2dataset reader (`sources.video_shards`) share.

Both downloaders write the same layout (webdataset's TarWriter): a sample is the members whose
names share a key (the path up to the first dot of the file name: `split_member`), a run of them
or, as extracting gathers them, wherever they lie (held open within `MAX_HELD_BYTES`). The walk
counts what is no member of a sample (a folder is skipped; a Mac's `._x.jpg` is its `os_metadata`
reject; a symlink, device or fifo its `not_a_file` reject, never followed; a hard link the bytes of
the earlier member it names, as extracting gives it, within a budget of bytes read through links and,
in a compressed tar, of its targets' bytes held as they pass: `HardLinks`), a copy of a member that a
later copy of its name replaces (`duplicate_member`: `tar -r` appended it; GNU tar and bsdtar
extract the last, and so the walk builds it: `Layout`, from a first pass over the headers), an
extension given twice to a key (`duplicate_key`: `café.jpg` in NFC and NFD), and a cut tar
(`truncated_sample` for the sample it cuts, one `corrupt_archive` for the shard; a tar that stops
at a member boundary without its end-of-archive block is cut too: `check_end_marker`), and hands
each sample to its source. What a member is worth keeping, and what a member over
`MAX_INPUT_FILE_BYTES` costs (`member_too_large`), is the source's (`Keep`). Too many open files
or no memory reading a tar is the machine's `MachineError` (the unit fails uncommitted), never
the shard's reject.

Under the grouping lies `read_members`, the walk over member headers that ImageNet's class archives
(one image a member, no grouping) share too. It opens every tar with `CappedTarInfo`: a GNU
long-name or pax header declares its own block's size, which `tarfile` would read whole before any
check (a 150 MiB long name: 152 MB more memory); one declaring more than `MAX_TAR_HEADER_BYTES`, a
run of more than `MAX_HEADER_RUN` (each read within the last: a long run ran out of stack), or more
than `MAX_PAX_RECORDS` records for a member, or a GNU sparse map of more than
`MAX_SPARSE_FRAGMENTS` (or one that is no map: tarfile's ValueError), is refused from its header
block: the tar's `corrupt_archive`, read no further. Pax records are read in one pass
(`pax_records`), not by tarfile 3.11.7's backtracking search (CVE-2024-6232: hours for a record
of digits), and each header is let go once its member is visited. A plain tar's headers are read
once, by `scan`, which keeps what the read needs of each (`KeptHeaders`: name, type, offsets, size;
never the pax records) within `MAX_KEPT_HEADER_BYTES`, judged before each is kept; past it, and for
a compressed tar, the read reads the headers again. A gzipped tar that inflates clean within that
budget is inflated once, by `scan`, and read from its inflated copy (`small_gzip`); a larger one
into an unnamed temporary file within a disk budget (`spooled_gzip`), as a remote plain tar is
copied (`spooled_copy`: fetched once, not for the scan and again for the read); one past that, damaged or cut
is streamed through `GzipStream` (both read every gzip member and check each one's CRC; what
follows a tar's end is inflated only within `GZIP_TAIL_FLOOR` or the tar's size, streamed or not: `_drain`,
`check_end_marker`; damage there cuts no sample: `AfterTheEnd`; a CRC or length failing once the
tar ended whole says a byte read is wrong, member unknown: `ChecksumFails`). A member's declared size is held to the file
(`_bound_data`): a negative one is refused; one past the end of the file ends the walk there as on
any cut tar, and a stream's skip ends at its end (`_stream_seek`), never spinning there. A
compressed tar's skip over data no source reads inflates within `SkipBudget` (`SKIP_FLOOR` plus
`SKIP_RATIO` times the compressed bytes read; past it `InflationRefused`, the `inflation_budget`
reject); a bzip2 or xz one is unpacked a bounded step at a time (`UnpackedStream`), and one whose
read opens it plain is scanned plain (`_scan_mode`).
"""

from __future__ import annotations

import bz2
import contextlib
import functools
import gzip
import hashlib
import io
import lzma
import os
import posixpath
import re
import shutil
import sys
import tarfile
import tempfile
import zlib
from array import array
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterable, Iterator, TypeVar

import numpy as np

from sources import fsio
from sources.paths import NOT_A_FILE, set_aside_problem
from sources.records import MAX_INPUT_FILE_BYTES, Reject, bounded, data_key, nfc, raise_machine_error
from sources.web_units import COMPRESSED_MAGIC  # a compressed tar is always streamed ("r|*")
from transforms.errors import exception_detail

MEMBER_TOO_LARGE = "member_too_large"  # a tar member over MAX_INPUT_FILE_BYTES, judged on its header


@dataclass
class Sample:
    """One webdataset sample as the walk read it: its key and what its source kept of each member."""

    key: str
    members: dict[str, Any] = field(default_factory=dict)  # extension -> what `Keep` kept
    dropped: bool = False  # rejected whole by `Keep` (a member over the cap): its later members are not read
    cut: bool = False  # the tar ends inside it: its `truncated_sample` is said (unless dropped), never a record
    names: dict[str, str] = field(default_factory=dict)  # extension -> the member's name, where not `key.ext`
    kept_bytes: int = 0  # what its source kept so far, as the members' headers declare (its `Keep`'s count)
    # extension -> a member's size where its source kept only its head (a long `.txt` caption)
    sizes: dict[str, int] = field(default_factory=dict)

    def member_name(self, ext: str) -> str:
        """The name in the tar of this sample's member `ext` (`X.JPG`, `./x.jpg`: `members` keys its
        extension in lower case, and its key is in NFC), for a reject's `input` to name it as it is."""
        return self.names.get(ext, f"{self.key}.{ext}")


# A source's say on one member of `sample` with extension `ext`: keep something in
# `sample.members[ext]` (its bytes, its header, b"" for a sample another part reads) or set
# `sample.dropped`; the reject to count, if any.
Keep = Callable[[tarfile.TarFile, tarfile.TarInfo, Sample, str], "Reject | None"]


def shard_reject(name: str, key: str, stage: str, reason: str, detail: str, where: str = "") -> Reject:
    """A reject of source `name` about a web shard's sample or listing (its detail cut to 300
    characters), its input `where` (`shard.tar:member`, a parquet row)."""
    return Reject(key, name, key, stage, reason, detail[:300], input=where)


def split_member(name: str) -> tuple[str, str]:
    """webdataset convention: the key is the path up to the first dot of the file name; in NFC
    (`nfc`), as keys take names: a tar made on a Mac names its members in NFD. A leading `./`
    (GNU tar's `tar -C dir -cf x.tar .`) or `/` (`tar -P`, Python's `tarfile` given an absolute
    name) is no part of it, as extracting shows (`extracted_name`): `./1.jpg` and `/1.jpg` are
    `1.jpg` (webdataset 1.0.2 keeps both in `__key__`, `/1` another sample than `1`, though GNU
    tar and bsdtar extract them to one file, the later over the earlier)."""
    name = extracted_name(nfc(name))
    directory, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return posixpath.join(directory, stem) if directory else stem, ext.lower()


def member_type(info: tarfile.TarInfo) -> str:
    if info.islnk():
        why = getattr(info, "why", "")
        return f"hard link to {info.linkname[:100]}" + (f" ({why})" if why else "")
    for test, name in ((info.issym, "symlink"), (info.ischr, "character device"),
                       (info.isblk, "block device"), (info.isfifo, "fifo")):
        if test():
            return name
    return f"type {info.type!r}"


def member_too_large(info: tarfile.TarInfo, cap: int, name: str | None = None) -> str | None:
    """The detail of a member's `member_too_large` reject when it is over `cap` bytes (judged on
    its header: never read), else None; `name` shows the member (its name in the tar)."""
    if info.size <= cap:
        return None
    return f"{info.name if name is None else name}: {info.size} bytes, over the {cap} byte cap for one member"


# A GNU long-name or pax header declares the size of its own block, which `tarfile` reads whole
# before handing over the member it describes. Real ones are small: a long name is at most PATH_MAX
# (4096 bytes); GNU tar's and bsdtar's pax records (path, times, xattrs of at most 64 KiB each on
# Linux, a sparse file's map) a few KiB; a few MiB is more than any tool writes.
MAX_TAR_HEADER_BYTES = 4 << 20
# A name is at most PATH_MAX (4096 bytes) on Linux, 1024 on macOS; a GNU long name or link ('L',
# 'K') or a pax `path` or `linkpath` over this is refused: each name read is held (a sample's key,
# the detail of a later duplicate), and a 3 MiB one under the header cap held 3 MiB a member.
MAX_TAR_NAME_BYTES = 64 << 10
NAME_HEADERS = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
PAX_NAMES = (b"path", b"linkpath")
MAX_HEADER_RUN = 8  # extended headers in a row before one member: GNU tar writes 2 ('L', 'K'), pax 2 ('g', 'x')
MAX_PAX_RECORDS = 256  # pax keys one member carries, held with its header for the whole walk
MAX_SPARSE_FRAGMENTS = 1 << 16  # data fragments of a GNU sparse member's map (1.0: at its data's start)
EXTENDED_HEADERS = {tarfile.GNUTYPE_LONGNAME: "GNU long name", tarfile.GNUTYPE_LONGLINK: "GNU long link name",
                    tarfile.XHDTYPE: "pax extended header", tarfile.XGLTYPE: "pax global header",
                    tarfile.SOLARIS_XHDTYPE: "Solaris extended header"}


class HeaderRefused(tarfile.ReadError):
    """An extended header no tar tool writes, refused from its header block before its own block is
    read: the archive is read no further (a `corrupt_archive`, as any unreadable header)."""


class CappedTarInfo(tarfile.TarInfo):
    """`tarfile`'s member header with the extended headers before a member judged on what they
    declare (`MAX_TAR_HEADER_BYTES`, `MAX_HEADER_RUN`, `MAX_PAX_RECORDS`, `MAX_SPARSE_FRAGMENTS`),
    a malformed one a `tarfile.ReadError`, never a ValueError no reader catches: `tarfile.open(...,
    tarinfo=CappedTarInfo)`. `_proc_member` is tarfile's documented hook for a subclass."""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        kind = EXTENDED_HEADERS.get(self.type)
        member = super()._proc_member(tar) if kind is None else self._proc_extended(tar, kind)
        if not getattr(tar, "_extended_run", 0):  # the member itself, what its extended headers say applied
            _bound_data(tar, member)
            tar._walked = member  # type: ignore[attr-defined]  # whose data a skip passes over (`SkipBudget`)
        return member

    def _proc_extended(self, tar: tarfile.TarFile, kind: str) -> tarfile.TarInfo:
        """The member after this extended header, the header judged first (the class's docstring)."""
        if self.size > MAX_TAR_HEADER_BYTES:
            raise HeaderRefused(f"a {kind} at byte {self.offset} declares {self.size} bytes, over the "
                                f"{MAX_TAR_HEADER_BYTES} byte cap for a tar header: no tar tool writes one")
        if self.type in NAME_HEADERS and self.size > MAX_TAR_NAME_BYTES:
            raise HeaderRefused(_long_name(kind, self.offset, self.size))
        run = getattr(tar, "_extended_run", 0) + 1  # each extended header reads the next one within it
        if run > MAX_HEADER_RUN:
            raise HeaderRefused(f"{run} extended headers in a row at byte {self.offset}, over the "
                                f"{MAX_HEADER_RUN} a member may have: no tar tool writes them")
        tar._extended_run = run  # type: ignore[attr-defined]
        try:
            member = super()._proc_member(tar)
        except ValueError as exc:  # a number of a pax record or a sparse map that is none: no TarError of tarfile's
            raise HeaderRefused(f"a {kind} at byte {self.offset} is unreadable: {exc}") from None
        finally:
            tar._extended_run = run - 1  # type: ignore[attr-defined]
        records = max(len(tar.pax_headers), len(getattr(member, "pax_headers", {})))
        if records > MAX_PAX_RECORDS:
            raise HeaderRefused(f"a {kind} at byte {self.offset} gives {records} pax records, over the "
                                f"{MAX_PAX_RECORDS} a member may carry: no tar tool writes them")
        return member

    def _proc_sparse(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        """GNU's old sparse member ('S'), as tarfile reads it, its extension blocks of 21 fragments
        each counted (refused past `MAX_SPARSE_FRAGMENTS`: tarfile read as many as the archive held)
        and a cut one a `ReadError` (tarfile's IndexError, caught by no reader)."""
        structs, extended, original_size = self._sparse_structs
        del self._sparse_structs
        while extended:
            buf = tar.fileobj.read(tarfile.BLOCKSIZE)
            if len(buf) < tarfile.BLOCKSIZE:
                raise tarfile.ReadError(f"the GNU sparse member at byte {self.offset} is cut short in its map")
            for pos in range(0, 21 * 24, 24):
                try:
                    offset, numbytes = tarfile.nti(buf[pos:pos + 12]), tarfile.nti(buf[pos + 12:pos + 24])
                except ValueError:
                    break
                if offset and numbytes:
                    structs.append((offset, numbytes))
            if len(structs) > MAX_SPARSE_FRAGMENTS:
                raise HeaderRefused(f"a GNU sparse member at byte {self.offset} gives over {MAX_SPARSE_FRAGMENTS} "
                                    "fragments")
            extended = bool(buf[504])
        self.sparse = structs
        self.offset_data = tar.fileobj.tell()
        tar.offset = self.offset_data + self._block(self.size)
        self.size = original_size
        return self

    def _proc_pax(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        """tarfile's own (CPython 3.11), its records read by `pax_records` in one pass: tarfile
        searched the block for `\\d+ hdrcharset=`, quadratic in a run of digits (CVE-2024-6232,
        mended in CPython 3.11.10 and 3.12.6): a 64 KiB record of digits took 10 s, one of 4 MiB hours."""
        buf = tar.fileobj.read(self._block(self.size))
        pax_headers = tar.pax_headers if self.type == tarfile.XGLTYPE else tar.pax_headers.copy()
        records = pax_records(buf, self.offset)
        name = next((value for keyword, value in records if keyword in PAX_NAMES and len(value) > MAX_TAR_NAME_BYTES),
                    None)
        if name is not None:
            raise HeaderRefused(_long_name("pax name record", self.offset, len(name)))
        charset = next((value for keyword, value in records if keyword == b"hdrcharset"), None)
        if charset is not None:
            pax_headers["hdrcharset"] = charset.decode("utf-8", tar.errors)
        encoding = tar.encoding if pax_headers.get("hdrcharset") == "BINARY" else "utf-8"
        for raw_keyword, raw_value in records:
            keyword = self._decode_pax_field(raw_keyword, "utf-8", "utf-8", tar.errors)
            pax_headers[keyword] = (self._decode_pax_field(raw_value, encoding, tar.encoding, tar.errors)
                                    if keyword in tarfile.PAX_NAME_FIELDS
                                    else self._decode_pax_field(raw_value, "utf-8", "utf-8", tar.errors))
        try:
            member = self.fromtarfile(tar)
        except tarfile.HeaderError as exc:
            raise tarfile.SubsequentHeaderError(str(exc)) from None
        if "GNU.sparse.map" in pax_headers:
            self._proc_gnusparse_01(member, pax_headers)
        elif "GNU.sparse.size" in pax_headers:
            self._proc_gnusparse_00(member, records)
        elif pax_headers.get("GNU.sparse.major") == "1" and pax_headers.get("GNU.sparse.minor") == "0":
            self._proc_gnusparse_10(member, pax_headers, tar)
        if self.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
            member._apply_pax_info(pax_headers, tar.encoding, tar.errors)
            member.offset = self.offset
            if "size" in pax_headers:  # the record replaces the size field: the next header moves
                skipped = member.isreg() or member.type not in tarfile.SUPPORTED_TYPES
                tar.offset = member.offset_data + (member._block(member.size) if skipped else 0)
        return member

    def _proc_gnusparse_00(self, next: tarfile.TarInfo, records: list[tuple[bytes, bytes]]) -> None:
        """GNU sparse 0.0: the offset and numbytes records of the pax block (`records`) in order
        (tarfile searched the block again, quadratic too), counted before they are parsed."""
        fragments = sum(keyword == b"GNU.sparse.offset" for keyword, _ in records)
        if fragments > MAX_SPARSE_FRAGMENTS:
            raise HeaderRefused(f"a GNU sparse map at byte {self.offset} gives {fragments} fragments, over the "
                                f"{MAX_SPARSE_FRAGMENTS} a member may have")
        offsets = [int(value) for keyword, value in records if keyword == b"GNU.sparse.offset"]
        numbytes = [int(value) for keyword, value in records if keyword == b"GNU.sparse.numbytes"]
        next.sparse = list(zip(offsets, numbytes))

    def _proc_gnusparse_01(self, next: tarfile.TarInfo, pax_headers: dict) -> None:
        """GNU sparse 0.1: the map a record of comma-separated numbers, counted before it is parsed."""
        fragments = pax_headers["GNU.sparse.map"].count(",") // 2 + 1
        if fragments > MAX_SPARSE_FRAGMENTS:
            raise HeaderRefused(f"a GNU sparse map at byte {self.offset} gives {fragments} fragments, over the "
                                f"{MAX_SPARSE_FRAGMENTS} a member may have")
        super()._proc_gnusparse_01(next, pax_headers)

    def _proc_gnusparse_10(self, next: tarfile.TarInfo, pax_headers: dict, tar: tarfile.TarFile) -> None:
        """GNU sparse 1.0 (GNU tar's `--format=posix -S`): the map of the member's data fragments
        at its data's start, their count first, line by line; tarfile's own read as many lines as
        the count said, the rest of the archive if need be. Refused over `MAX_SPARSE_FRAGMENTS`, or
        at a line longer than a block or the end of the archive."""
        buf = tar.fileobj.read(tarfile.BLOCKSIZE)
        count, buf = buf.split(b"\n", 1)  # ValueError when there is no line: `_proc_member` says so
        fields = int(count)
        if fields > MAX_SPARSE_FRAGMENTS:
            raise HeaderRefused(f"a GNU sparse map at byte {self.offset} declares {fields} fragments, over the "
                                f"{MAX_SPARSE_FRAGMENTS} a member may have")
        sparse: list[int] = []
        while len(sparse) < fields * 2:
            if b"\n" not in buf:
                block = tar.fileobj.read(tarfile.BLOCKSIZE) if len(buf) < tarfile.BLOCKSIZE else b""
                if not block:
                    raise tarfile.ReadError(f"the GNU sparse map at byte {self.offset} is cut short or garbled")
                buf += block
                continue
            number, buf = buf.split(b"\n", 1)
            sparse.append(int(number))
        next.offset_data = tar.fileobj.tell()
        next.sparse = list(zip(sparse[::2], sparse[1::2]))


def _long_name(kind: str, offset: int, size: int) -> str:
    """The detail of a refused name over `MAX_TAR_NAME_BYTES`."""
    return (f"a {kind} at byte {offset} gives a name of {size} bytes, over the {MAX_TAR_NAME_BYTES} byte cap "
            "for a name: no file system has one")


_PAX_LENGTH = re.compile(rb"(\d{1,20}) ")


def pax_records(buf: bytes, offset: int = 0) -> list[tuple[bytes, bytes]]:
    """The (keyword, value) records of a pax header block, `<length> <keyword>=<value>\\n` each, the
    length counting the whole record, read in one pass (each record scanned within its length);
    the block's zero padding ends them. A record whose length does not end at its newline, or
    that holds no `=`, is a `HeaderRefused`."""
    records, pos = [], 0
    while True:
        match = _PAX_LENGTH.match(buf, pos)
        if not match:
            return records
        end = pos + int(match.group(1))
        equals = buf.find(b"=", match.end(), end)
        if end > len(buf) or equals < 0 or buf[end - 1:end] != b"\n":
            raise HeaderRefused(f"a pax record at byte {offset} + {pos} is malformed: its length "
                                f"{match.group(1).decode()} does not end at its newline")
        records.append((buf[match.end():equals], buf[equals + 1:end - 1]))
        pos = end


def _bound_data(tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    """A member's declared size held to the file: a negative one (base-256 or a pax record; no tar
    tool writes one) is refused; one whose data would end past the end of a plain tar's file (GNU
    tar's base-256 or a pax `size` of 2**66 in a 3 KiB file) moves the next header to just past
    that end, so that `tarfile` ends there as on any cut tar (its seek to 2**66 was a ValueError
    no reader caught, and a stream's skip of it a loop of empty reads: `_stream_seek`)."""
    if member.size < 0:
        raise HeaderRefused(f"the member at byte {member.offset} declares {member.size} bytes: no tar tool "
                            "writes a negative size")
    end = _archive_bytes(tar)
    if end is not None and tar.offset > end:
        tar.offset = end + tarfile.BLOCKSIZE


def _archive_bytes(tar: tarfile.TarFile) -> int | None:
    """The size of the file under a plain (uncompressed) tar, whose member offsets are the file's
    own; None for a compressed stream or a file that cannot tell its size. Asked once a tar."""
    if not hasattr(tar, "_archive_bytes"):
        tar._archive_bytes = _file_size(_plain_file(tar.fileobj))  # type: ignore[attr-defined]
    return tar._archive_bytes  # type: ignore[attr-defined]


def _plain_file(fileobj: Any) -> Any:
    """The opened file under tarfile's stream (`r|`, `r|*`) when it is uncompressed, else None."""
    if not isinstance(fileobj, tarfile._Stream):
        return fileobj
    if fileobj.comptype != "tar" or isinstance(fileobj.fileobj, GzipStream):
        return None
    inner = fileobj.fileobj
    return inner.fileobj if isinstance(inner, tarfile._StreamProxy) else inner


def _file_size(handle: Any) -> int | None:
    """An opened file's size in bytes, its position kept; None when it cannot seek."""
    try:
        here = handle.tell()
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(here)
    except (AttributeError, OSError, ValueError):
        return None
    return size


def _stream_seek(stream: Any, pos: int, budget: "SkipBudget | None" = None) -> int:
    """tarfile's `_Stream.seek` (a stream skips forward by reading), ending at the stream's end
    with tarfile's own `ReadError`: tarfile's read nothing there once per 10 KiB left to skip, so
    a compressed tar's member declaring 2**66 bytes spun forever. What it skips of a member's data
    is held to `budget` (`SkipBudget`: a compressed tar's data is skipped by inflating it)."""
    if pos < stream.pos:
        raise tarfile.StreamError("seeking backwards is not allowed")
    member = budget.counted() if budget is not None else None
    while stream.pos < pos:
        chunk = stream.read(min(pos - stream.pos, stream.bufsize))
        if not chunk:
            raise tarfile.ReadError("unexpected end of data")
        if member is not None:
            budget.spend(len(chunk), member)  # type: ignore[union-attr]
    return stream.pos


# A compressed tar is streamed, so passing over a member's data means inflating it: a member over
# the cap, never read, was inflated whole to reach the next header (an 8 MB GNU `tar -czf` shard
# hiding an 8 GiB `truncate -s 8G` member, 1027:1, cost 17.5 CPU-s; 1 GB of one ~35 CPU-minutes).
# The bytes inflated passing over data no source reads are held, per reading of the archive, to
# `SKIP_FLOOR` plus `SKIP_RATIO` times the compressed bytes read so far; past it the rest of the
# archive is not read (`InflationRefused`). Honest tars measured (gzip -6/-9, bzip2 -9, xz -6 of
# GNU tars of 24 frames each): JPEG 1.1:1, PNG 1.0, BMP/PPM/uncompressed TIFF of fractal renders
# 1.0-1.3, 1024x768 uncompressed TIFF renders of ImageMagick's `logo:` (a white ground) 14-22,
# flat-colour 256x256 PPM/BMP/TIFF frames 500-700 (gzip) and 2,000-4,400 (bzip2, xz): so no ratio
# tells a bomb (gzip of zeros: 1,030:1; bzip2 1.4M:1; xz 6,900:1) from flat frames, and only data
# that is never read is held to it: a member's over the cap, passed over by the scan (which reads
# every other member's data through), read data never is. A read spends no more than the scan did,
# and stops where the scan's verdict stands: counting in a read what its source leaves unread made
# each part of a shard read in parts (each passing over the samples other parts own) stop at its
# own place, and lose what followed with no reject of its own. The
# 8 GiB one now costs 1.7 CPU-s (one `inflation_budget` reject), a 9,761-byte `tar -cjf` of it 3.3.
SKIP_FLOOR = 1 << 30
SKIP_RATIO = 64
INFLATION_BUDGET = "inflation_budget"


class InflationRefused(tarfile.ReadError):
    """Passing over a compressed tar's unread data inflated past `SkipBudget`'s bound: the rest of
    the archive is not read (what was read before stands: no sample is cut by it but the one held
    open), one `inflation_budget` reject naming the member."""

    reason = INFLATION_BUDGET
    member_offset = -1  # the header of the member whose data was being skipped


@dataclass
class SkipBudget:
    """The inflated bytes a reading of a compressed tar spends passing over member data no source
    reads (see `SKIP_FLOOR`); `compressed` tells the compressed bytes read so far."""

    tar: tarfile.TarFile
    compressed: Callable[[], int]
    skipped: int = 0

    def counted(self) -> tarfile.TarInfo | None:
        """The member whose data a skip now passes over, when its bytes count; else None."""
        member = getattr(self.tar, "_walked", None)
        if member is None or member.size <= MAX_INPUT_FILE_BYTES:
            return None
        return member

    def spend(self, inflated: int, member: tarfile.TarInfo) -> None:
        self.skipped += inflated
        compressed = self.compressed()
        if self.skipped > SKIP_FLOOR + SKIP_RATIO * compressed:
            refused = InflationRefused(
                f"{member.name[:32]}: skipping unread data inflated {self.skipped} B from {compressed} compressed, "
                f"over {SKIP_FLOOR} + {SKIP_RATIO}x: rest not read; extract it or repack without the member")
            refused.member_offset = member.offset
            raise refused


def _position(handle: Any) -> Callable[[], int]:
    """How far `handle` (the compressed file) has been read; 0 where it cannot tell."""
    def told() -> int:
        try:
            return int(handle.tell())
        except (AttributeError, OSError, ValueError):
            return 0
    return told


class GzipStream:
    """A gzipped tar's inflated bytes, read forward only, for tarfile's `r|`: `gzip.GzipFile`
    reads every gzip member (`cat a.gz b.gz`, bgzip, pigz --independent; tarfile's own `r|gz`
    stopped at the end of the first, losing the rest of the shard), a header with FEXTRA (dictzip,
    bgzip: tarfile's `r|gz` refused it) and zero padding after the last member, and checks each
    member's CRC and length. Damage (a cut stream, bad data or CRC) ends the bytes where it lies,
    as tarfile's own `r|gz` ended them, so that what lies before it reads as before; `error` keeps
    it, for `check_end_marker` to raise where the tar itself ended whole. Memory: GzipFile's buffers."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._inflated = gzip.GzipFile(fileobj=handle, mode="rb")
        self.error: tarfile.ReadError | None = None

    def read(self, size: int = -1) -> bytes:
        if self.error is not None:
            return b""
        try:
            return self._inflated.read1(size)
        except gzip.BadGzipFile as exc:
            if str(exc).startswith("Not a gzipped file"):  # junk where a next member would start:
                return b""  # ignored, as gzip -d and GNU tar -z do ("trailing garbage ignored")
            if str(exc).startswith(("CRC check failed", "Incorrect length")):  # every byte read, some wrong
                self.error = ChecksumFails(_checksum_detail(exc))
                return b""
            self.error = tarfile.ReadError(f"the gzip stream is damaged or cut short: {exception_detail(exc)}")
            return b""
        except (EOFError, zlib.error) as exc:
            self.error = tarfile.ReadError(f"the gzip stream is damaged or cut short: {exception_detail(exc)}")
            return b""


def _head(handle: IO[bytes], size: int) -> bytes | None:
    """The first `size` bytes of a seekable `handle` (its position put back at the start), else None."""
    try:
        if not handle.seekable():
            return None
        head = handle.read(size)
        handle.seek(0)
    except (AttributeError, OSError, ValueError):
        return None
    return head


def _is_gzip(handle: IO[bytes]) -> bool:
    """Whether a seekable `handle` starts with gzip's magic."""
    return _head(handle, 2) == b"\x1f\x8b"


def open_tar(handle: IO[bytes], mode: str) -> tarfile.TarFile:
    """`tarfile.open` on an opened file, its extended headers judged before they are read and each
    member's size held to the file (`CappedTarInfo`); a stream's skip ends at its end and passes
    over a member's data over the cap within `SkipBudget` (`_stream_seek`). A gzipped tar streamed (`r|*`, `r|gz`) is inflated by
    `GzipStream` (every gzip member read), a bzip2 or xz one (`r|*`) by `UnpackedStream`."""
    raw = handle
    if mode in ("r|*", "r|gz") and _is_gzip(handle):
        handle, mode = GzipStream(handle), "r|"
    elif mode == "r|*" and (kind := _bz2_or_xz(handle)) is not None:
        handle, mode = UnpackedStream(handle, kind), "r|"
    tar = tarfile.open(fileobj=handle, mode=mode, tarinfo=CappedTarInfo)
    if isinstance(tar.fileobj, tarfile._Stream):
        budget = SkipBudget(tar, _position(raw))
        tar.fileobj.seek = functools.partial(_stream_seek, tar.fileobj, budget=budget)  # type: ignore[method-assign]
    return tar


class UnpackedStream(GzipStream):
    """A bzip2 or xz tar's unpacked bytes, read forward only, for tarfile's `r|`, a bounded step
    at a time (`BZ2File`, `LZMAFile`: every stream of a file read, as `bzip2 -d` and `xz -d` read
    them; an xz file's Stream Padding, zeros after its last stream, as `xz -d` allows it, which
    `LZMAFile` took for a cut stream). tarfile's own `r|*` unpacked each 10 KiB it read whole
    (bzip2 packs 1 GiB of zeros into 785 bytes: GiBs at once) and cut what it held by copying the
    rest each read (64 MiB of zeros took 63 s). Damage ends the bytes where it lies (`error`);
    junk after the last stream is passed over as the base reader did (`xz -t` calls it corrupt)."""

    def __init__(self, handle: IO[bytes], kind: str) -> None:  # pylint: disable=super-init-not-called
        if kind == "bz2":
            self._inflated = bz2.BZ2File(handle)  # type: ignore[assignment]
        else:
            try:
                end: int | None = _size(handle) - _xz_padding(handle)
            except (AttributeError, OSError, ValueError):
                end = None  # read whole: padding, if any, then reads as damage
            self._inflated = lzma.LZMAFile(handle if end is None else _Prefix(handle, end))  # type: ignore[assignment]
        self.error = None

    def read(self, size: int = -1) -> bytes:
        if self.error is not None:
            return b""
        try:
            return self._inflated.read1(size)
        except (OSError, EOFError, lzma.LZMAError) as exc:
            self.error = tarfile.ReadError(f"the compressed stream is damaged or cut short: {exception_detail(exc)}")
            return b""


MAX_XZ_PADDING = 1 << 20  # zeros looked for at an xz file's end: padding (a multiple of 4) is what
# concatenating to a block size leaves; past this, what is left reads as damage, as before


def _size(handle: IO[bytes]) -> int:
    """A seekable `handle`'s size (its position put back at the start)."""
    end = handle.seek(0, os.SEEK_END)
    handle.seek(0)
    return end


def _xz_padding(handle: IO[bytes]) -> int:
    """How many bytes at the end of a seekable xz `handle` are Stream Padding (zeros, a multiple of
    4: a stream itself ends in its footer's `YZ`), at most `MAX_XZ_PADDING` looked at."""
    end = _size(handle)
    handle.seek(max(0, end - MAX_XZ_PADDING))
    tail = handle.read(MAX_XZ_PADDING)
    handle.seek(0)
    zeros = len(tail) - len(tail.rstrip(b"\0"))
    return zeros - zeros % 4


class _Prefix:
    """The first `end` bytes of `handle`, read forward."""

    def __init__(self, handle: IO[bytes], end: int) -> None:
        self._handle, self._left = handle, end

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(self._left if size < 0 else min(size, self._left))
        self._left -= len(data)
        return data


def _bz2_or_xz(handle: IO[bytes]) -> str | None:
    """"bz2" or "xz" when a seekable `handle` starts with that magic, else None."""
    head = _head(handle, 6) or b""
    return "bz2" if head.startswith(b"BZh") else "xz" if head == b"\xfd7zXZ\x00" else None


def member_bytes(tar: tarfile.TarFile, info: tarfile.TarInfo, limit: int | None = None) -> bytes:
    """A regular member's bytes (the caller has judged its size), or with `limit` its first
    `limit` bytes alone (a caption's head: the rest is never held); a hard link resolved to its
    target's (`HardLinks.resolve`), read from the plain file under the tar and its place kept
    (a stream's file is read on from there)."""
    unreadable = getattr(info, "unreadable", None)
    if unreadable is not None:
        raise unreadable
    held = getattr(info, "held", None)
    if held is not None:  # a compressed tar's member read before its visit, or a link's target (`HardLinks.hold`)
        return held if limit is None else held[:limit]
    if getattr(info, "linked", False):
        handle = _plain_file(tar.fileobj)
        here = handle.tell()
        try:
            return tarfile._FileInFile(handle, info.offset_data, info.size, info.sparse).read(limit)
        finally:
            handle.seek(here)
    extracted = tar.extractfile(info)
    return extracted.read(limit) if extracted is not None else b""


# Inflated bytes a gzipped tar's stream may hold after its end-of-archive block, at least: the
# rest is inflated only for its CRC, so the tail is bounded by max(the tar's bytes, this), and a
# read costs at most about twice its tar (a 1 MB .tgz hiding 1 GB of zeros cost 0.82 CPU-s a read).
# A tar pads its end to a whole record: Python's tarfile and GNU tar's default to 10 KiB, bsdtar's
# `-b` to at most 4 MiB (8192 blocks), GNU tar's `-b` to any size (`-b 20000`: 10 MB; `-b 65536`:
# 32 MiB); 64 MiB of zeros inflates in ~0.05 CPU-s.
GZIP_TAIL_FLOOR = 64 << 20


class AfterTheEnd(tarfile.ReadError):
    """What is wrong with a gzipped tar's stream after its end-of-archive block (a cut trailer, a
    tail past `GZIP_TAIL_FLOOR`): every member lay before it and was read whole, so no sample is
    cut; the shard is still its counted `corrupt_archive`. A CRC or length that fails there is
    `ChecksumFails`: the bytes read may be wrong anywhere."""


class ChecksumFails(AfterTheEnd):
    """A gzip member's CRC or length fails once the tar has ended whole: every member was read,
    no sample is cut, but some inflated byte is wrong and which member holds it cannot be told
    (a byte flipped inside a JPEG fails the CRC as one in the tail does); the shard is its
    counted `corrupt_archive` saying so. Where the stream ends with it before the tar's end, it
    is a cut tar (`_drain`)."""


def _checksum_detail(exc: BaseException) -> str:
    """What a gzip CRC or length failure means, within a reject detail's 200 characters."""
    text = str(exc)
    crc = text.startswith("CRC")
    check, figures = ("CRC", f" ({text.removeprefix('CRC check failed ')})") if crc else ("length", "")
    return (f"the gzip {check} check fails{figures}: some byte of the shard is wrong, in which member cannot be "
            "told; its samples were built as read (download it again)")


def tail_bound(tar_bytes: int) -> int:
    """The inflated bytes a gzipped tar of `tar_bytes` (up to its end-of-archive block) may carry after them."""
    return max(tar_bytes, GZIP_TAIL_FLOOR)


def _tail_too_long(tar_bytes: int) -> AfterTheEnd:
    return AfterTheEnd(f"the gzip stream goes on for more than {tail_bound(tar_bytes)} inflated bytes after the "
                       f"tar's end-of-archive block (at byte {tar_bytes}): its CRC is not checked, so the shard "
                       "is not taken as whole")


def _drain(tar: tarfile.TarFile, inflated: GzipStream) -> None:
    """Inflate the rest of a gzipped tar's stream (each member's CRC checked), the bytes after its
    end-of-archive block at most `tail_bound`: past it the CRC is not checked, and that is said
    (`AfterTheEnd`, as `check_end_marker` says of an inflated copy's tail: the same verdict)."""
    if inflated.error is not None:  # tarfile met the damage before its end-of-archive block: a cut tar
        raise tarfile.ReadError(*inflated.error.args)  # a `ChecksumFails` too: what followed it is lost
    stream = tar.fileobj
    budget = tail_bound(tar.offset)
    tail = stream.pos + len(stream.buf) - tar.offset  # what tarfile's buffer holds past the block
    while chunk := inflated.read(1 << 16):
        tail += len(chunk)
        if tail > budget:
            raise _tail_too_long(tar.offset)
    if isinstance(inflated.error, ChecksumFails):
        raise inflated.error
    if inflated.error is not None:
        raise AfterTheEnd(str(inflated.error))


def check_end_marker(tar: tarfile.TarFile, handle, gzipped: bool = False) -> None:
    """Raise when an uncompressed tar stops at a member boundary without its end-of-archive
    block (a file's, an inflated copy's or a stream's: tarfile read no zero block where it stopped):
    `tarfile` ends such a stream quietly, and a shard cut there would look whole; or when
    a gzipped one's stream was damaged past where tarfile read (`GzipStream.error`), or goes on
    past `tail_bound` after its end, streamed (`_drain`) or inflated (`gzipped`: the handle is
    `small_gzip`'s or `spooled_gzip`'s copy) alike."""
    inflated = getattr(tar.fileobj, "fileobj", None)
    if isinstance(inflated, GzipStream):
        _drain(tar, inflated)
    if isinstance(tar.fileobj, tarfile._Stream) and tar.fileobj.pos < tar.offset + tarfile.BLOCKSIZE:
        raise _no_end_block(tar.offset)  # streamed: tarfile read no zero block there, only the stream's end
    if _plain_file(tar.fileobj) is None:
        return
    try:
        handle.seek(tar.offset)
        tail = handle.read(tarfile.BLOCKSIZE)
        size = _file_size(handle) if gzipped else None
    except (OSError, ValueError):  # a stream that cannot seek: nothing more to learn
        return
    if len(tail) < tarfile.BLOCKSIZE or tail.count(0) != tarfile.BLOCKSIZE:
        raise _no_end_block(tar.offset)
    if size is not None and size - tar.offset > tail_bound(tar.offset):
        raise _tail_too_long(tar.offset)


def _no_end_block(offset: int) -> tarfile.ReadError:
    """A tar that stops at a member boundary: read from its file, inflated or streamed, one verdict."""
    return tarfile.ReadError(f"the archive ends after {offset} bytes without its end-of-archive block (cut short)")


def _plain(handle: IO[bytes]) -> str:
    return "r:"


T = TypeVar("T")


def extracted_name(name: str) -> str:
    """Where GNU tar and bsdtar extract a member: its name without a leading `/` or `./` (`tar -C
    dir .` writes `./x.jpg`, which lands where `x.jpg` does) and without a folder's trailing `/`."""
    while name.startswith(("/", "./")):
        name = name[1:] if name.startswith("/") else name[2:]
    return name.rstrip("/")


def _digest(text: str) -> bytes:
    """16 bytes standing for a name or key in `Layout` (a name may be 64 KiB: never held whole)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=16).digest()


# Names hard link members of one tar link to, at most: each is kept (a 16-byte digest and, once its
# file is read, where its bytes lie: ~200 bytes), so a tar of more is read with the links past it
# rejected, not held. A deduplicated dataset links one file a duplicate; 65,536 hold ~13 MB (their
# link counts, `HardLinks.left`, 2.6 MB of it).
MAX_LINK_TARGETS = 1 << 16
# Bytes one tar's hard links may hand over to be read (each link its target's size, judged before
# it is read): `LINK_READ_FLOOR` plus `LINK_READ_RATIO` times the bytes of the tar read. A link
# costs a header block and reads its target again: 1000 GNU tar links to one 64 MiB member read
# 62.56 GiB (42 CPU-s), 65,536 to 256 MiB would read 16 TiB. A deduplicated dataset's links hand
# over a fraction of its bytes; past the budget a link is its `not_a_file` reject naming it.
LINK_READ_FLOOR = 1 << 30
LINK_READ_RATIO = 4
# Bytes a compressed tar's read holds of the members links link to, as they pass: its data is
# read forward only (streamed, or its inflated copy read as one), so a link's target is kept from
# where it lay, within this (one member at the cap), whatever the machine: a target past it is its
# links' `not_a_file` reject naming it. (Before, a spooled copy was read back and a stream's link
# was refused, so free disk or a tmpfs TMPDIR decided whether a link of a .tar.gz was read.)
MAX_LINK_HELD_BYTES = 256 << 20
_NOT_HELD = "not held"  # a target's place in `HardLinks.targets` when its bytes would pass `MAX_LINK_HELD_BYTES`


@dataclass
class HardLinks:
    """A tar's hard link members read as GNU tar and bsdtar extract them: a link (`ln a.jpg b.jpg;
    tar -cf x.tar .` stores `b.jpg` as one, of size 0) is the file its target name held when the
    link was met, the latest earlier member of that name (a copy `tar -r` appends later replaces
    the name, not what was linked). `scan` gathers the names links link to and how many links name
    each (`wanted`); the read notes where each such member's bytes lie as it passes (`seen`; a
    compressed tar's are held, `hold`, `MAX_LINK_HELD_BYTES`, until the last link naming it is read)
    and hands a link over as a regular member at its target's bytes
    (`resolve`), read within the same caps and within the tar's budget for bytes read through links
    (`LINK_READ_FLOOR`). A link to a name no earlier member holds (after it, `tar --delete`d,
    outside the archive: `/etc/passwd`), or to one that is no regular file, or past a budget, stays
    a link, with `why` it is no file: its source's `not_a_file` reject."""

    # digest -> where its bytes lie (a compressed tar: its bytes, or `_NOT_HELD`); None: no file there yet
    targets: dict[bytes, "tuple[int, int, Any] | bytes | str | None"] = field(default_factory=dict)
    kinds: dict[bytes, str] = field(default_factory=dict)  # digest -> what its member was, where no regular file
    full: bool = False  # a link past `MAX_LINK_TARGETS` names was met
    compressed: bool = False  # the tar read is compressed (`read_members`): targets' bytes are held as they pass
    held_bytes: int = 0  # what `targets` holds of a compressed tar's bytes
    handed: int = 0  # bytes links have handed over to be read (`LINK_READ_FLOOR`)
    left: dict[bytes, int] = field(default_factory=dict)  # digest -> links naming it still to come

    def wanted(self, info: tarfile.TarInfo) -> None:
        """`scan` meets hard link `info`: the name it links to is noted, and counted (`left`)."""
        digest = _digest(extracted_name(info.linkname))
        if digest in self.targets:
            self.left[digest] = self.left.get(digest, 0) + 1
            return
        if len(self.targets) >= MAX_LINK_TARGETS:
            self.full = True
            return
        self.targets[digest] = None
        self.left[digest] = 1

    def hold(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        """The read of a compressed tar meets regular member `info`, not yet visited: when links
        link to its name, its bytes are read now (`held`, which `member_bytes` hands over), within
        `MAX_LINK_HELD_BYTES`, while a later link still names it; else it is read as it would be."""
        if not self.compressed or not self.targets or not info.isreg() or getattr(info, "linked", False):
            return
        digest = _digest(extracted_name(info.name))
        if digest not in self.targets or not self.left.get(digest):
            return
        earlier = self.targets[digest]
        free = MAX_LINK_HELD_BYTES - self.held_bytes + (len(earlier) if isinstance(earlier, bytes) else 0)
        if info.size > free:
            return
        try:
            info.held = member_bytes(tar, info)  # type: ignore[attr-defined]
        except (tarfile.TarError, EOFError, OSError) as exc:  # said where its source reads it, as a cut member
            info.unreadable = exc  # type: ignore[attr-defined]

    def seen(self, info: tarfile.TarInfo) -> None:
        """The read has passed `info` (a link resolved): where a name links ask for now lies."""
        if not self.targets or info.isdir():
            return
        digest = _digest(extracted_name(info.name))
        if digest not in self.targets:
            return
        earlier = self.targets[digest]
        if isinstance(earlier, bytes):
            self.held_bytes -= len(earlier)
        self.kinds.pop(digest, None)
        if not info.isreg():
            self.targets[digest] = None
            self.kinds[digest] = "hard link that is itself no file" if info.islnk() else member_type(info)
        elif not self.compressed:
            self.targets[digest] = (info.offset_data, info.size, info.sparse)
        else:
            held = getattr(info, "held", None)
            self.targets[digest] = _NOT_HELD if held is None else held
            self.held_bytes += 0 if held is None else len(held)

    def resolve(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> tarfile.TarInfo:
        """Hard link `info` as the regular member it extracts to (`linked` set: `member_bytes` reads
        it where its target lies, or hands over its held bytes), else `info` itself with `why` it is
        none (`member_type` says it)."""
        digest = _digest(extracted_name(info.linkname))
        target = self.targets.get(digest)
        if digest in self.left:
            self.left[digest] -= 1
            if not self.left[digest] and isinstance(target, bytes):  # no later link names it: let go
                self.held_bytes -= len(target)
                self.targets[digest] = _NOT_HELD
        if target is None:
            kind = self.kinds.get(digest)
            info.why = (f"over the {MAX_LINK_TARGETS} names links of one archive may link to" if self.full
                        and digest not in self.targets else f"its target is a {kind}, no file" if kind
                        else "no earlier member is a file of that name: GNU tar cannot extract it "
                        "either")  # type: ignore[attr-defined]
            return info
        if target == _NOT_HELD:
            info.why = (f"its target's bytes would pass the {MAX_LINK_HELD_BYTES} B a compressed tar's read holds "
                        "for links: extract the tar, or repack it plain")  # type: ignore[attr-defined]
            return info
        size = len(target) if isinstance(target, bytes) else target[1]
        budget = LINK_READ_FLOOR + LINK_READ_RATIO * info.offset
        if self.handed + size > budget:
            info.why = (f"links have handed over {self.handed} B; its {size} B would pass the {budget} B budget for "
                        f"bytes read through links by its byte {info.offset} ({LINK_READ_FLOOR} + "
                        f"{LINK_READ_RATIO}x the tar's bytes before it): extract the tar")  # type: ignore[attr-defined]
            return info
        self.handed += size
        linked = tar.tarinfo(info.name)
        linked.offset, linked.linkname = info.offset, info.linkname
        if isinstance(target, bytes):
            linked.size, linked.held = size, target  # type: ignore[attr-defined]
        else:
            linked.offset_data, linked.size, linked.sparse = target
        linked.linked = True  # type: ignore[attr-defined]
        return linked


@dataclass
class Layout:
    """What a first pass over a tar's headers (`scan`) tells its read: which members a later copy
    of the same name shadows, and where each sample key's last member lies. `tar -rf shard.tar
    x.jpg` (img2dataset's resume, a user's fix-up, `tar -u`) appends a second copy of a member;
    GNU tar and bsdtar extract the last one, over the first: the read builds the last one too, and
    each earlier copy is its `duplicate_member` reject, so that an archive and its extracted copy
    build the same bytes. `position` is the ordinal of the member being visited."""

    copies: dict[bytes, list[int]] = field(default_factory=dict)  # name digest -> [copies to come, last's offset]
    # sample key digest -> ordinal of its last member, for a key whose members lie in more than one
    # run (`_Index`): one whose members all lie together has no member after its run's end
    key_ends: dict[bytes, int] = field(default_factory=dict)
    keys: int = 0  # the sample keys the scan indexed
    position: int = -1
    headers: "KeptHeaders | None" = None  # a plain tar's member headers as `scan` read them: the read walks them
    inflated: bytes | None = None  # a small gzipped tar as `scan` inflated it (`small_gzip`): the read reads it
    spool: IO[bytes] | None = None  # a larger one as `scan` inflated it (`spooled_gzip`): the read reads it
    copied: bool = False  # the spool is a remote plain tar's copy (`spooled_copy`), read as the file it copies
    damaged: bool = False  # the scan met a cut or unreadable header, or more than `MAX_TAR_MEMBERS`
    links: "HardLinks" = field(default_factory=lambda: HardLinks())  # the names hard link members link to
    # what stopped the scan skipping a member's data (`InflationRefused`): the read, which counts at
    # least as much, stops there too once that member is visited, without inflating its data again
    refused: "InflationRefused | None" = None

    @property
    def inflated_copy(self) -> bool:
        """Whether the tar read is a gzipped one's inflated copy (`check_end_marker`'s `gzipped`)."""
        return (self.inflated is not None or self.spool is not None) and not self.copied

    def let_go(self) -> None:
        """Close the spool (its file is unnamed: closing it frees its room)."""
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def visit(self, info: tarfile.TarInfo) -> str | None:
        """Advance to `info`; the detail of its `duplicate_member` reject when a later copy of its
        name shadows it, else None."""
        self.position += 1
        if info.isdir():  # folders merge on extraction: no copy of one shadows another
            return None
        name = extracted_name(info.name)
        copies = self.copies.get(_digest(name))
        if not copies or copies[0] == 0:
            return None
        copies[0] -= 1
        return (f"{info.name}: a later copy at byte {copies[1]} of the archive (appended by tar -r or tar -u) "
                "replaces this one, as extracting it with GNU tar or bsdtar does: the last copy is built")

    def more_of(self, key: str) -> bool:
        """Whether a member with sample key `key` lies after the one being visited."""
        return self.key_ends.get(_digest(key), -1) > self.position


def tar_mode(handle: IO[bytes]) -> str:
    """tarfile's mode for a tar read by headers (`scan`, a part of a shard): a plain tar is opened
    seekably (its data skipped, not read), a compressed one streamed."""
    head = handle.read(6)
    handle.seek(0)
    return "r|*" if head.startswith(COMPRESSED_MAGIC) else "r:"




# What `scan` keeps of a plain tar's headers for the read, in bytes: ~50 a member besides its name,
# ~110 with a short one (an img2dataset shard of 10,000 samples, 30,000 members: ~3.3 MB); past it
# none is kept and the read reads the headers again, in bounded memory, as a compressed tar's does.
MAX_KEPT_HEADER_BYTES = 8 << 20
# One member's share of it: a name past PATH_MAX (4096 bytes) no file system extracts; a tar of
# such names (96 of 60,000 bytes: 5.8 MB held) is read twice rather than held.
MAX_KEPT_MEMBER_BYTES = 4096 + 128
_KEPT_NUMBERS = 3  # offset, offset_data, size
_KEPT_FIXED_BYTES = 8 * _KEPT_NUMBERS + 1 + 8 + 15  # the numbers, the type byte, the name's slot, arrays' spare room
_KEPT_LINK_BYTES = 100  # a hard link's entry in `KeptHeaders.links` besides its target's name (int, dict slot)
_TYPE_BYTES = [bytes((value,)) for value in range(256)]  # a kept type byte as `TarInfo.type` holds it


@dataclass
class KeptHeaders:
    """What the read needs of a plain tar's member headers (`scan`), kept compact: each member's
    name, type, header and data offsets and size; not its pax records, owner or times (a `TarInfo`
    held them all: 32 members behind 2 MiB pax headers held 64 MiB), within `MAX_KEPT_HEADER_BYTES`.
    `error` is what ended the scan after them (a cut or unreadable header, a missing end-of-archive
    block), kept bare (`_bare`): the read says it after its last member, as reading the headers again would."""

    names: list[str] = field(default_factory=list)
    types: bytearray = field(default_factory=bytearray)
    numbers: array = field(default_factory=lambda: array("q"))
    links: dict[int, str] = field(default_factory=dict)  # a hard link member's index -> the name it links to
    held: int = 0  # bytes, as `cost` judged them
    error: BaseException | None = None

    @staticmethod
    def cost(info: tarfile.TarInfo) -> int | None:
        """What keeping `info` takes, judged from its own sizes before it is kept; None when it is
        not kept compactly (a sparse map, a size past 2**63, a name past `MAX_KEPT_MEMBER_BYTES`)."""
        if info.sparse is not None or len(info.type) != 1 or not 0 <= info.size < 1 << 63:
            return None
        cost = _KEPT_FIXED_BYTES + sys.getsizeof(info.name)
        if info.islnk():
            cost += _KEPT_LINK_BYTES + sys.getsizeof(info.linkname)
        return cost if cost <= MAX_KEPT_MEMBER_BYTES else None

    def keep(self, info: tarfile.TarInfo) -> bool:
        """Keep `info`; False (nothing kept) when it cannot be, or would pass the budget."""
        cost = self.cost(info)
        if cost is None or self.held + cost > MAX_KEPT_HEADER_BYTES:
            return False
        self.held += cost
        if info.islnk():
            self.links[len(self.names)] = info.linkname
        self.names.append(info.name)
        self.types += info.type
        self.numbers.extend((info.offset, info.offset_data, info.size))
        return True

    def members(self, tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        """The kept headers as `tar` would read them (what the walk looks at: name, type, offsets,
        size), one at a time, in archive order."""
        numbers = self.numbers
        for index, name in enumerate(self.names):
            info = tar.tarinfo(name)
            info.type = _TYPE_BYTES[self.types[index]]
            info.offset, info.offset_data, info.size = numbers[3 * index:3 * index + 3]
            info.linkname = self.links.get(index, "")
            yield info


def _declared_length(handle: IO[bytes]) -> int | None:
    """The last gzip trailer's ISIZE (the inflated length mod 2**32 of the last member: a hint,
    never trusted as a bound), None when `handle` is no gzip stream or cannot tell its size."""
    handle.seek(0)
    if handle.read(2) != b"\x1f\x8b":
        return None
    size = _file_size(handle)
    if size is None or size < 20:
        return None
    handle.seek(size - 4)
    return int.from_bytes(handle.read(4), "little")


_INFLATE_STEP = 1 << 20  # bytes one zlib call may give: a bomb's 64 KiB never becomes 64 MiB at once


def _inflate_members(handle: IO[bytes], sink: Callable[[bytes], Any], cap: int) -> bool:
    """Inflate every gzip member of `handle` (from its start) into `sink`, a step at a time, at
    most `cap` bytes; True when they inflate whole and clean (each one's CRC and length checked;
    zero padding after the last, as gzip skips it, and nothing else) within `cap`."""
    handle.seek(0)
    inflater, total, pending = zlib.decompressobj(16 + zlib.MAX_WBITS), 0, b""
    try:
        while pending or (pending := handle.read(1 << 16)):
            part = inflater.decompress(pending, min(cap + 1 - total, _INFLATE_STEP))
            total += len(part)
            if total > cap:
                return False
            sink(part)
            pending = inflater.unconsumed_tail
            if inflater.eof:  # a member ends (its CRC and length checked): another may follow
                pending = inflater.unused_data + handle.read(max(0, 18 - len(inflater.unused_data)))
                if not pending.strip(b"\0"):
                    break
                if not pending.startswith(b"\x1f\x8b"):
                    return False  # junk after a member: read as before
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    except zlib.error:
        return False
    if not inflater.eof:
        return False  # cut short: read as before
    while padding := handle.read(1 << 16):
        if padding.strip(b"\0"):
            return False  # junk after the last member: read as before
    return True


def small_gzip(handle: IO[bytes]) -> bytes | None:
    """The tar inside a gzipped one (`.tar.gz`, `.tgz`) when its gzip members (one, or several as
    `cat a.gz b.gz`, bgzip and pigz --independent write them) inflate whole and clean (each one's
    CRC and length checked; zero padding after the last, as gzip skips it, and nothing else) to at
    most `MAX_KEPT_HEADER_BYTES`; None otherwise, judged from the last trailer's declared length
    first (a shard past it is not inflated here), and never inflating past the cap whatever it
    declares. `handle` is left anywhere."""
    declared = _declared_length(handle)
    if declared is None or declared > MAX_KEPT_HEADER_BYTES:
        return None
    parts: list[bytes] = []
    return b"".join(parts) if _inflate_members(handle, parts.append, MAX_KEPT_HEADER_BYTES) else None


# A gzipped tar past `MAX_KEPT_HEADER_BYTES` inflated is inflated once into an unnamed temporary
# file (TMPDIR; gone with its process, whatever ends it) and read from there, rather than inflated
# twice (its scan and its read: 0.54 of 0.73 CPU-s for a 40 MB GNU tar -czf shard): at most this
# many bytes a shard, nor more than `MAX_SPOOL_RATIO` times its gzipped size (a 1 MB .tgz hiding
# 1 GB of zeros writes no 1 GB: it is streamed, its tail bounded by `_drain`), and never leaving
# less than `SPOOL_FREE_RESERVE` free, judged before.
MAX_SPOOL_BYTES = 4 << 30
MAX_SPOOL_RATIO = 8  # a tar of JPEGs deflates to ~1x, of text and JSON to 3-5x
SPOOL_FREE_RESERVE = 1 << 30


_MEMORY_FILESYSTEMS = ("tmpfs", "ramfs")


def in_memory(folder: str) -> bool:
    """Whether `folder` lies on a filesystem held in memory (a tmpfs /tmp, as Fedora and Arch mount
    it): a spool there would be the memory streaming saves. From the mount table; False where none
    can be read."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as table:
            mounts = [line.split()[1:3] for line in table if len(line.split()) > 2]
    except OSError:
        return False
    path = os.path.realpath(folder)
    best, kind = "", ""
    for point, fs_type in mounts:
        point = point.replace("\\040", " ")
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fs_type
    return kind in _MEMORY_FILESYSTEMS


def spool_budget(folder: str, gzipped_bytes: int) -> int:
    """The bytes a spool in `folder` of a `gzipped_bytes` shard may take: `MAX_SPOOL_BYTES` or
    `MAX_SPOOL_RATIO` times the shard, less where the disk has less free room than that plus
    `SPOOL_FREE_RESERVE` (0: no spool, and none on a filesystem held in memory)."""
    if in_memory(folder):
        return 0
    try:
        room = os.statvfs(folder)
    except (OSError, AttributeError):
        return 0
    free = room.f_bavail * room.f_frsize - SPOOL_FREE_RESERVE
    return max(0, min(MAX_SPOOL_BYTES, MAX_SPOOL_RATIO * gzipped_bytes, free))


def spooled_gzip(handle: IO[bytes]) -> IO[bytes] | None:
    """The tar inside a gzipped one, inflated whole and clean (`_inflate_members`) into an unnamed
    temporary file within `spool_budget`; None where it is no gzip stream, damaged, past the
    budget, or the file cannot be written (the tar is then streamed, inflated twice, as before)."""
    if _declared_length(handle) is None:
        return None
    folder = tempfile.gettempdir()
    budget = spool_budget(folder, _file_size(handle) or 0)
    if budget <= MAX_KEPT_HEADER_BYTES:
        return None
    return _spooled(folder, lambda spool: _inflate_members(handle, spool.write, budget))


def spooled_copy(handle: IO[bytes]) -> IO[bytes] | None:
    """A remote plain tar copied once into an unnamed temporary file within `spool_budget`: its scan
    and its read take the copy. Read from the remote file, each fetched it whole (the scan's header
    reads through fsspec's 5 MiB read-ahead, the read's data): 2.00x its bytes. None where its size
    is unknown, past the budget, or the copy fails (the file is then read twice, as before)."""
    size = _file_size(handle)
    folder = tempfile.gettempdir()
    if size is None or spool_budget(folder, size) < size:
        return None

    def copied(spool: IO[bytes]) -> bool:
        handle.seek(0)
        shutil.copyfileobj(handle, spool, 1 << 20)
        return True

    return _spooled(folder, copied)


def _spooled(folder: str, fill: Callable[[IO[bytes]], bool]) -> IO[bytes] | None:
    """An unnamed temporary file in `folder` that `fill` wrote whole (True), at its start; None
    where it cannot be made or `fill` fails (the disk filled meanwhile, a quota, the remote file
    failed: the tar is then read from the file, as before, and its error said there)."""
    try:
        spool = tempfile.TemporaryFile(dir=folder)
    except OSError:
        return None
    try:
        if fill(spool):
            spool.seek(0)
            return spool
    except OSError:
        pass
    spool.close()
    return None


GZIP_TAR_SUFFIXES = (".gz", ".tgz")  # the names whose tars `scan` tries to inflate once


def _opened(uri: str, layout: Layout) -> Any:
    """The tar to read: the scan's inflated copy of a small gzipped one, else the file."""
    if layout.inflated is not None:
        return contextlib.nullcontext(io.BytesIO(layout.inflated))
    if layout.spool is not None:
        layout.spool.seek(0)
        return contextlib.nullcontext(layout.spool)  # closed by `Layout.let_go`, not by each walk
    return fsio.open_file(uri)


def scan(uri: str, keyed: Callable[[str], str] | None = None,
         mode: Callable[[IO[bytes]], str] | None = None) -> Layout:
    """`_scan`, a small gzipped tar inflated once: its scan and its read take the inflated tar
    (`small_gzip`) where that scan keeps every header and meets no damage; any other is scanned
    (and read) from its file as before, so that its items, order and rejects stay the same.
    `mode` is the read's (`read_members`): a compressed tar it reads plain is scanned plain (`_scan_mode`)."""
    inflated, spool = None, None
    if uri.lower().endswith(GZIP_TAR_SUFFIXES):  # a plain tar is opened once, not also to look for gzip
        try:
            with fsio.open_file(uri) as handle:
                inflated = small_gzip(handle)
                spool = spooled_gzip(handle) if inflated is None else None
        except (OSError, ValueError) as exc:
            raise_machine_error(exc, uri)  # too many open files, no memory: the machine's, no archive's
            inflated = None  # the scan below meets it again and says it
    elif fsio.local_path(uri) is None:  # a remote plain tar: fetched once, not for the scan and again for the read
        try:
            with fsio.open_file(uri) as handle:
                spool = spooled_copy(handle)
        except (OSError, ValueError) as exc:
            raise_machine_error(exc, uri)
        if spool is not None:  # the same bytes as the file: the same verdicts, damaged or not
            return _scan(uri, keyed, Layout(spool=spool, copied=True), mode)
    if inflated is not None or spool is not None:
        layout = _scan(uri, keyed, Layout(inflated=inflated, spool=spool), mode)
        if layout.headers is not None and layout.headers.error is None:
            return layout
        if spool is not None and not layout.damaged:  # headers past the kept budget: read again, from the spool
            return layout
        layout.let_go()
    return _scan(uri, keyed, Layout(), mode)


def _scan_mode(handle: IO[bytes], mode: Callable[[IO[bytes]], str] | None) -> str:
    """tarfile's mode for `scan`: `tar_mode`, but plain (`r:`) for a compressed tar whose read opens
    it plain (an ImageNet class archive's `r|`, a video2dataset shard's `r:`): that read finds no
    header in it (its `corrupt_archive`), so inflating it whole in the scan (a `tar -czf` named
    `.tar`, its members of zeros under the cap: `SkipBudget` holds none of them) was all waste."""
    scanned = tar_mode(handle)
    if scanned == "r:" or mode is None:
        return scanned
    return scanned if mode(handle) in ("r|*", "r|gz") else "r:"


_DIGEST = 16  # bytes of `_digest`


@dataclass
class _Index:
    """What `_scan` gathers of a tar's members for its `Layout`, in flat arrays: a 16-byte name
    digest and a header offset a member, a key digest and a last ordinal a run of members of one
    sample key (`INDEX_BYTES_PER_MEMBER` at most a member). Dicts of them took ~240 bytes a member
    (+242 MiB at `MAX_TAR_MEMBERS`, counted by no budget); these 48 at most, sorted once at the end
    (`finish`) to find the names held twice and the keys whose members lie apart: few, kept in dicts."""

    names: bytearray = field(default_factory=bytearray)
    offsets: array = field(default_factory=lambda: array("q"))
    runs: bytearray = field(default_factory=bytearray)
    run_ends: array = field(default_factory=lambda: array("q"))
    last_key: bytes = b""

    def add(self, info: tarfile.TarInfo, ordinal: int, keyed: Callable[[str], str] | None) -> None:
        self.names += _digest(extracted_name(info.name))
        self.offsets.append(info.offset)
        if keyed is None:
            return
        key = _digest(keyed(info.name))
        if key == self.last_key:
            self.run_ends[-1] = ordinal
            return
        self.runs += key
        self.run_ends.append(ordinal)
        self.last_key = key

    def finish(self, layout: Layout) -> None:
        """Fill `layout` from the arrays, and let them go."""
        _, names = _repeated(self.names)
        for digest, members in names:  # the last copy is built: each earlier one is its `duplicate_member`
            layout.copies[digest] = [len(members) - 1, self.offsets[int(members[-1])]]
        layout.keys, keys = _repeated(self.runs)
        for digest, runs in keys:
            layout.key_ends[digest] = self.run_ends[int(runs[-1])]
        self.names, self.offsets, self.runs, self.run_ends = bytearray(), array("q"), bytearray(), array("q")


def _repeated(digests: bytearray) -> tuple[int, list[tuple[bytes, np.ndarray]]]:
    """How many distinct 16-byte digests `digests` holds, and each one it holds more than once
    with its positions there, ascending (a stable sort: the last is the latest)."""
    if not digests:
        return 0, []
    halves = np.frombuffer(digests, dtype=np.uint64).reshape(-1, 2)
    order = np.lexsort((halves[:, 1], halves[:, 0]))
    first, second = halves[order, 0], halves[order, 1]
    starts = np.flatnonzero(np.concatenate(([True], (first[1:] != first[:-1]) | (second[1:] != second[:-1]))))
    del first, second
    ends = np.append(starts[1:], len(order))
    repeated = []
    for group in np.flatnonzero(ends - starts > 1):
        positions = order[starts[group] : ends[group]]
        at = int(positions[0]) * _DIGEST
        repeated.append((bytes(digests[at : at + _DIGEST]), positions))
    return len(starts), repeated


def _scan(uri: str, keyed: Callable[[str], str] | None, layout: Layout,
          mode: Callable[[IO[bytes]], str] | None = None) -> Layout:
    """The `Layout` of the tar at `uri` from its member headers (data skipped; a compressed tar is
    read through); `keyed` gives a member name's sample key (webdataset shards), None for archives
    read member by member. A cut or unreadable tar gives what its headers before the damage say
    (the read that follows says what is wrong with it). A plain tar's headers are kept for the
    read (`KeptHeaders`, its end-of-archive block checked here), so that no header is read twice
    (three 300-image img2dataset shards: 0.54-0.60 CPU-s read twice, 0.35-0.39 once); none past
    `MAX_KEPT_HEADER_BYTES`. A tar appended to between scan and read ends where the scan saw it end
    (a rerun redoes the unit: the state of its inputs is recorded)."""
    index = _Index()
    try:
        with _opened(uri, layout) as handle, open_tar(handle, _scan_mode(handle, mode)) as tar:
            layout.headers = KeptHeaders() if tar.fileobj is handle else None  # a compressed tar is a stream
            for ordinal, info in enumerate(tar):
                tar.members.clear()
                if ordinal >= MAX_TAR_MEMBERS:  # the index stops here, and so will the read
                    layout.damaged = True
                    if layout.headers is not None:
                        layout.headers.error = too_many_members()
                    return layout
                if layout.headers is not None and not layout.headers.keep(info):
                    layout.headers = None  # let go at once: the read reads the headers again
                if not info.isdir():
                    index.add(info, ordinal, keyed)
                if info.islnk():
                    layout.links.wanted(info)
            if layout.headers is not None:
                check_end_marker(tar, handle, layout.inflated_copy)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise_machine_error(exc, uri)
        layout.damaged = True
        if isinstance(exc, InflationRefused):
            layout.refused = _bare(exc)  # type: ignore[assignment]
        if isinstance(exc, ValueError):  # no error the read catches: it reads the headers again, as before
            layout.headers = None
        elif layout.headers is not None:
            layout.headers.error = _bare(exc)  # the read says it after the kept members
    finally:
        index.finish(layout)
    return layout


# Members a tar may hold: `scan`'s index of names and sample keys grows with them (`_Index`: at most
# `INDEX_BYTES_PER_MEMBER` a member, a member's name digest and offset and, with one a sample, a
# run's key digest and ordinal), so past it the walk stops, as on a cut tar (the shard's
# `corrupt_archive`, the sample then held `truncated_sample`). webdataset's ShardWriter writes at
# most 100,000 samples a shard by default (its maxcount), 10 fields each at most in practice:
# 1,000,000 members pass (500,000 lost 667 samples of an 84,000-sample shard of 6 fields);
# img2dataset writes 10,000 samples. At the cap the index takes 48 MiB, and its sort at the end
# ~27 bytes a member more for a moment. (Its dicts, before, peaked at +242 MiB RSS scanning a
# tarfile-written tar of 2**20 empty members of one a sample, a tar of JPEGs alone.)
MAX_TAR_MEMBERS = 1 << 20
INDEX_BYTES_PER_MEMBER = 2 * (_DIGEST + 8)


def too_many_members() -> tarfile.ReadError:
    return tarfile.ReadError(f"the archive holds more than {MAX_TAR_MEMBERS} members: those after them are not "
                             "read (the index of their names would grow with them)")


def _bare(exc: BaseException) -> BaseException:
    """`exc` without its traceback and the errors it was raised from: kept for a whole (lazy) read
    (`KeptHeaders.error`), they held every frame they passed through, scan's dict of names and
    tarfile's pax block (up to `MAX_TAR_HEADER_BYTES`): 12.7 MB for 7.7 MB of headers. Its detail
    (`exception_detail`: its class and message) stays the same."""
    exc.__context__ = exc.__cause__ = None
    return exc.with_traceback(None)


def read_members(uri: str, mode: Callable[[IO[bytes]], str],
                 visit: Callable[[tarfile.TarFile, tarfile.TarInfo], Iterable[T]],
                 cut: Callable[[BaseException], Iterable[T]],
                 shadowed: Callable[[tarfile.TarInfo, str], Iterable[T]],
                 layout: Layout | None = None) -> Iterator[T]:
    """What `visit` makes of each member header of the tar at `uri`, in archive order (`mode` gives
    tarfile's mode for the opened file; extended headers judged by `CappedTarInfo`), its end-of-archive
    block checked; what `cut` makes of the error when the tar is cut short or unreadable, in a header
    or in the bytes `visit` reads; what `shadowed` makes of a copy a later one of its name replaces
    on extraction (`Layout`: `layout`, or `scan`'s), never read. Too many open files or no memory
    is the machine's `MachineError`. A plain tar's headers the scan kept are walked, not read again
    (`KeptHeaders`); else a member's header is let go once visited (kept, `tarfile` held every
    header to the end: with its pax records, as much memory as the archive's headers)."""
    layout = scan(uri, mode=mode) if layout is None else layout
    kept = layout.headers
    try:
        with _opened(uri, layout) as handle, open_tar(handle, "r:" if kept is not None else mode(handle)) as tar:
            layout.links.compressed = layout.inflated_copy or _plain_file(tar.fileobj) is None
            for ordinal, info in enumerate(tar if kept is None else kept.members(tar)):
                if ordinal >= MAX_TAR_MEMBERS:
                    raise too_many_members()
                if info.islnk():
                    info = layout.links.resolve(tar, info)
                layout.links.hold(tar, info)
                replaced = layout.visit(info)
                yield from visit(tar, info) if replaced is None else shadowed(info, replaced)
                layout.links.seen(info)
                if layout.refused is not None and info.offset == layout.refused.member_offset:
                    raise layout.refused  # the scan's verdict on skipping this member: not inflated twice
                tar.members.clear()  # tarfile keeps each header read (for `getmember`): none is wanted again
            if kept is None:
                check_end_marker(tar, handle, layout.inflated_copy)
            elif kept.error is not None:
                raise kept.error
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise_machine_error(exc, uri)  # too many open files, no memory: the machine's, no archive's reject
        yield from cut(exc)
    finally:
        layout.let_go()


def samples(uri: str, name: str, shard: str, keep: Keep,
            mode: Callable[[IO[bytes]], str] = _plain, where: str = "") -> Iterator[Reject | Sample]:
    """The rejects and the samples of the tar at `uri` (source `name`, shard `shard`), in archive
    order (see the module's docstring); `mode` gives tarfile's mode for the opened file. A sample
    is all the members of its key, wherever they lie, as extracting the tar gathers them (a copy
    `tar -r` appended is the last of its name: it replaces the first, `Layout`); it is handed over
    once its last member is read (a cut one with `cut` set, before the shard's `corrupt_archive`).
    Rejects name their input under `where`, the tar as its source's root sees it (default its name)."""
    layout = scan(uri, lambda member: split_member(member)[0], mode)
    runs = _Runs(name, shard, fsio.basename(uri), keep, layout, where or fsio.basename(uri))
    yield from read_members(uri, mode, runs.member, runs.cut, runs.shadowed, layout)
    yield from runs.end()


# What samples whose members lie apart (`a.jpg b.jpg a.txt`; `tar -r` appended `a.jpg` at the end)
# may hold while their last member is to come: one image at the member cap.
MAX_HELD_BYTES = 256 << 20
SCATTERED_SAMPLE = "scattered_sample"
DUPLICATE_MEMBER = "duplicate_member"


_NAME_BYTES = 120  # a member name's entry in `Sample.names` besides its characters (str, dict slot)
_SAMPLE_BYTES = 512  # a held sample's own memory: its object, its key, its dict of members (~450 bytes measured)


def _held_bytes(sample: Sample) -> int:
    """What a held sample takes in memory: itself (`_SAMPLE_BYTES` and its key) and its kept members
    (a header kept stands for a few hundred bytes). Counted with the sample: 80,000 samples of
    1-byte members spread over a tar held 35 MB counted as 80 KB, so the budget bounded nothing."""
    return (_SAMPLE_BYTES + len(sample.key) + sum(len(value) if isinstance(value, (bytes, str)) else 512
                                                  for value in sample.members.values())
            + sum(_NAME_BYTES + len(name) for name in sample.names.values()))


@dataclass
class _Runs:
    """The walk's grouping of members into samples by key (`samples`)."""

    name: str
    shard: str
    archive: str
    keep: Keep
    layout: Layout
    where: str  # the tar under its source's root: rejects' `input` is `where:member`
    done: set[str] = field(default_factory=set)  # keys whose sample was handed over (`bounded`)
    held: dict[str, Sample] = field(default_factory=dict)  # samples whose last member is to come, by key
    held_bytes: int = 0
    scattered: dict[str, None] = field(default_factory=dict)  # keys of dropped samples still to come (in order)
    sample: Sample | None = None
    repeated: bool = False  # the current run of members repeats a key already handed over

    def key(self, *parts: str) -> str:
        """A reject's key: the shard's and `parts` (a sample key, a member name; none: the shard itself)."""
        return data_key(self.name, self.shard, *parts)

    def at(self, member: str | None = None) -> str:
        """A reject's `input`: the tar's member (a sample's key: its members are `key.*`), or the tar."""
        return self.where if member is None else f"{self.where}:{member}"

    def shadowed(self, info: tarfile.TarInfo, detail: str) -> Iterator[Reject]:
        """A copy a later one of its name replaces (`Layout.visit`): its reject, never read."""
        yield shard_reject(self.name, self.key(split_member(info.name)[0]), "read", DUPLICATE_MEMBER, detail,
                           self.at(info.name))

    def member(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> Iterator[Reject | Sample]:
        if info.isdir():
            return
        aside = set_aside_problem("", info.name, folder=False)
        if aside:  # macOS tar's `._00000.jpg` before `00000.jpg`: never a sample of key ''
            yield shard_reject(self.name, self.key(info.name), "read", aside.reason, aside.detail,
                               self.at(info.name))
            return
        key, ext = split_member(info.name)
        if not info.isfile():  # links, devices, fifos: counted, never followed
            yield shard_reject(self.name, self.key(key), "read", NOT_A_FILE,
                               f"{info.name}: tar member of type {member_type(info)}", self.at(info.name))
            return
        if self.sample is None or key != self.sample.key:
            yield from self._run_ends()
            self.repeated = bounded(key) in self.done
            held = self.held.pop(bounded(key), None)
            if held is not None:
                self.held_bytes -= _held_bytes(held)
            dropped = key in self.scattered  # a sample dropped earlier: its later members are not read
            self.scattered.pop(key, None)
            self.sample = held or Sample(key, dropped=dropped)
        if self.repeated or ext in self.sample.members:
            yield shard_reject(self.name, self.key(key), "read", "duplicate_key",
                               f"{info.name}: key {key} already has a {ext} member in {self.archive}",
                               self.at(info.name))
            return
        if info.name != f"{key}.{ext}":  # kept only where it is not the key and extension (`X.JPG`, `./x.jpg`)
            self.sample.names[ext] = info.name
        if not self.sample.dropped:
            rejected = self.keep(tar, info, self.sample, ext)
            if rejected is not None:
                yield rejected

    def _run_ends(self) -> Iterator[Reject | Sample]:
        """The current run of members ends: its sample is handed over, or held when a member of its
        key lies further on (within `MAX_HELD_BYTES` for all held: past it, a `scattered_sample`)."""
        sample, self.sample = self.sample, None
        if sample is None or self.repeated:
            return
        if not self.layout.more_of(sample.key):
            yield sample
            self.done.add(bounded(sample.key))
            return
        size = _held_bytes(sample)
        if not sample.dropped and self.held_bytes + size > MAX_HELD_BYTES:
            yield shard_reject(self.name, self.key(sample.key), "read", SCATTERED_SAMPLE,
                               f"key {sample.key}: its members lie apart in {self.archive} and holding its "
                               f"{size} bytes until its last one would pass the {MAX_HELD_BYTES} byte budget "
                               "for samples held open", self.at(sample.key))
            sample.dropped = True
        if sample.dropped:  # its later members are not read: its key alone is kept, never its members
            self.scattered[sample.key] = None
            return
        self.held[bounded(sample.key)] = sample
        self.held_bytes += size

    def cut(self, exc: BaseException) -> Iterator[Reject | Sample]:
        """The sample whose header was read last is cut, whether in its first member or a later one,
        and so is each held one (its last member lay past the cut); damage after the tar's
        end-of-archive block (`AfterTheEnd`) cuts none: every member before it was read whole (a
        gzip CRC failing then, `ChecksumFails`, says some byte read is wrong, member unknown)."""
        if isinstance(exc, AfterTheEnd):
            yield from self._run_ends()
            yield from self.end()
            self.held.clear()
            self.scattered.clear()
            yield shard_reject(self.name, self.key(), "read", "corrupt_archive", exception_detail(exc), self.at())
            return
        reason = exc.reason if isinstance(exc, InflationRefused) else "corrupt_archive"
        current = [] if self.sample is None or self.repeated else [self.sample]
        self.sample = None
        for sample in current + list(self.held.values()) + [Sample(key, dropped=True) for key in self.scattered]:
            if not sample.dropped:
                yield shard_reject(self.name, self.key(sample.key), "read", "truncated_sample", exception_detail(exc),
                                   self.at(sample.key))
            sample.cut = True
            yield sample
        self.held.clear()
        self.scattered.clear()
        yield shard_reject(self.name, self.key(), "read", reason, exception_detail(exc), self.at())

    def end(self) -> Iterator[Sample]:
        if self.sample is not None and not self.repeated:
            yield self.sample
        yield from self.held.values()  # none, unless the headers changed between the scan and the read
        yield from (Sample(key, dropped=True) for key in self.scattered)
