"""Reading one image file, or one tar member, judged before it is read: what the tokenizer's data
loader and `trainer.generate`'s prompts share.

A FIFO named `pipe.png` blocked `tokenizer.evaluate` and `tokenizer.fit` for good, a link to
/dev/zero named `zero.jpg` was read until MemoryError, and a GNU sparse tar member (`tar -S`)
declaring 4 GiB in a 10 KB tar was inflated whole: a pipe, socket or device is refused by its
type unopened, a file or member over the build's cap on one input file by its declared size
unread, and at most the cap plus one byte is ever read.
"""

from __future__ import annotations

import os
import tarfile
from typing import Mapping

from tokenizer.config import not_a_file

# The build's cap on one input file read whole (`sources.records.MAX_INPUT_FILE_BYTES`, which
# `tokenizer` may not import: tests/test_layering.py; a test keeps the two equal).
MAX_IMAGE_FILE_BYTES = 256 << 20

# the build's reject reasons for the same refusals (docs/rejects.md)
NOT_A_FILE = "not_a_file"
FILE_TOO_LARGE = "file_too_large"
MEMBER_TOO_LARGE = "member_too_large"


class FileRefused(OSError):
    """A file or tar member refused before it is read: `reason`, the build's reject code for it
    (`not_a_file`, `file_too_large`, `member_too_large`), and `detail`, which does not name it."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _over(size: int, max_bytes: int) -> FileRefused:
    return FileRefused(FILE_TOO_LARGE, f"{size} bytes, over the {max_bytes >> 20} MiB an input image file may "
                                       "have (the build's cap on one file)")


def refusal(info: os.stat_result, max_bytes: int = MAX_IMAGE_FILE_BYTES) -> FileRefused | None:
    """Why a path of this `os.stat` is never read (a pipe, socket or device; a file over
    `max_bytes`), else None. A folder is left to the open, which says so at once."""
    kind = not_a_file(info.st_mode)
    if kind and kind != "a folder":
        return FileRefused(NOT_A_FILE, f"{kind}, not an image file")
    return _over(info.st_size, max_bytes) if info.st_size > max_bytes else None


def read_image_file(path: str | os.PathLike[str], max_bytes: int = MAX_IMAGE_FILE_BYTES) -> bytes:
    """The bytes of one image file (`FileRefused` by `refusal`): the open does not wait
    (O_NONBLOCK) and its own stat is judged again, so a path swapped for a pipe after the first
    look is refused too, and at most `max_bytes` + 1 are read (a file that grows meanwhile, or a
    /proc file that says 0, stops there). OSError for one that cannot be read, a folder included."""
    refused = refusal(os.stat(path), max_bytes)
    if refused:
        raise refused
    with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as handle:
        refused = refusal(os.fstat(handle.fileno()), max_bytes)
        if refused:
            raise refused
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _over(len(data), max_bytes)
    return data


def member_refusal(info: tarfile.TarInfo, max_bytes: int = MAX_IMAGE_FILE_BYTES) -> FileRefused | None:
    """Why a tar member is never read, judged on its header: no regular file (a symlink, device or
    fifo member; a hard link), or declaring more than `max_bytes` (a GNU sparse member's size is
    the file it expands to)."""
    if not info.isfile():
        kind = next((name for test, name in ((info.issym, "a symlink"), (info.islnk, "a hard link"),
                                             (info.ischr, "a character device"), (info.isblk, "a block device"),
                                             (info.isfifo, "a fifo"), (info.isdir, "a folder"))
                     if test()), f"of type {info.type!r}")
        return FileRefused(NOT_A_FILE, f"a tar member that is {kind}, not a file")
    if info.size > max_bytes:
        return FileRefused(MEMBER_TOO_LARGE, f"{info.size} bytes, over the {max_bytes} byte cap for one member")
    return None


def linked_member(info: tarfile.TarInfo, earlier: Mapping[str, tarfile.TarInfo]) -> tarfile.TarInfo:
    """The member whose bytes `info` holds: a hard link (`tar` of files linked on disk) holds those
    of the earlier regular member it names, as the build reads it and as `extractfile` follows it;
    any other member, or a link to no earlier regular member, is itself."""
    if not info.islnk():
        return info
    target = earlier.get(info.linkname) or earlier.get(os.path.normpath(info.linkname))
    return target if target is not None and target.isfile() else info


def read_member(tar: tarfile.TarFile, name: str, max_bytes: int = MAX_IMAGE_FILE_BYTES) -> bytes:
    """The bytes of the tar member `name` (`FileRefused` by `member_refusal`, a hard link judged
    by the member it names; KeyError when there is none), at most `max_bytes` + 1 read."""
    info = tar.getmember(name)
    if info.islnk():
        members = tar.getmembers()
        earlier = {m.name: m for m in members[:members.index(info)] if m.isfile()}
        info = linked_member(info, earlier)
    refused = member_refusal(info, max_bytes)
    if refused:
        raise refused
    handle = tar.extractfile(info)
    if handle is None:
        raise FileNotFoundError(name)
    data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileRefused(MEMBER_TOO_LARGE, f"more than {max_bytes} bytes, over the cap for one member")
    return data
