"""Byte-reproducible tar writing: fixed metadata so the same members give the same bytes."""

from __future__ import annotations

import hashlib
import io
import tarfile
from typing import IO

# pinned rather than the file system's encoding, which `tarfile` would use: the same names give
# the same bytes on every machine
NAME_ENCODING = "utf-8"


def fixed_info(name: str, size: int) -> tarfile.TarInfo:
    """A member's header fields with zeroed times and owners (tar headers would otherwise leak them)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


_TEMPLATE = fixed_info("", 0).tobuf(tarfile.GNU_FORMAT, NAME_ENCODING, "surrogateescape")
_CHECKSUM, _SIZE = slice(148, 156), slice(124, 136)


def member_format(name: str) -> int:
    """GNU for an ASCII name; pax for any other. A GNU header holds a name as bytes of no declared
    charset (a reader decodes them in its locale: Windows' `tar.exe` in the machine's code page,
    `cafÃ©`), and past 100 bytes cuts them inside a character, which `tarfile` in strict mode
    refuses (UnicodeDecodeError); a pax `path` record is UTF-8 for every reader, and its header's
    own name field falls back to ASCII."""
    return tarfile.GNU_FORMAT if name.isascii() else tarfile.PAX_FORMAT


def member_header(name: str, size: int) -> bytes:
    """`fixed_info(name, size)`'s header block(s) in `member_format(name)`, byte for byte, an ASCII
    name's made from a template: `tarfile` builds it from 15 formatted fields each time (21 us; a
    sixth of a shard tar's writing). Other names, names over 100 bytes (a GNU long-name block
    first) and sizes of 8 GiB and more go through `tarfile`."""
    encoded = name.encode(NAME_ENCODING, "surrogateescape")
    if len(encoded) > tarfile.LENGTH_NAME or not 0 <= size < 8**11 or not name.isascii():
        return fixed_info(name, size).tobuf(member_format(name), NAME_ENCODING, "surrogateescape")
    header = bytearray(_TEMPLATE)
    header[: len(encoded)] = encoded
    header[_SIZE] = b"%011o\0" % size
    header[_CHECKSUM] = b" " * 8  # summed as spaces, as tar defines the checksum
    header[148:155] = b"%06o\0" % sum(header)
    return bytes(header)


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add `data` as `name` to a `tarfile` archive, with `fixed_info`, in `member_format(name)`."""
    tar.format = member_format(name)  # `addfile` writes each header in the archive's current format
    tar.addfile(fixed_info(name, len(data)), io.BytesIO(data))


def open_writer(fileobj) -> tarfile.TarFile:
    return tarfile.open(fileobj=fileobj, mode="w", format=tarfile.GNU_FORMAT, encoding=NAME_ENCODING)


class TarWriter:
    """A tar of `fixed_info` members (GNU headers, pax ones for names beyond ASCII: `member_format`),
    byte for byte what `open_writer` + `add_member` write, with each member's header, data and
    padding written straight through (`tarfile` copies data in 16 KiB pieces) and the sha256 and size of the whole archive kept as it is written, so a
    committed shard's digest needs no second read of its tar."""

    def __init__(self, fileobj: IO[bytes]) -> None:
        self._out = fileobj
        self._digest = hashlib.sha256()
        self.size = 0
        self.closed = False

    def add(self, name: str, data: bytes) -> int:
        """Append a member; returns the offset of its data in the archive."""
        if self.closed:
            raise ValueError("the archive is closed")
        self._write(member_header(name, len(data)))
        offset = self.size
        self._write(data)
        self._write(tarfile.NUL * (-len(data) % tarfile.BLOCKSIZE))
        return offset

    def close(self) -> None:
        """The end-of-archive blocks, then zero blocks up to a whole record, as `tarfile` does."""
        if self.closed:
            return
        self.closed = True
        self._write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        self._write(tarfile.NUL * (-self.size % tarfile.RECORDSIZE))

    def sha256(self) -> str:
        return self._digest.hexdigest()

    def _write(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self._digest.update(data)
            self.size += len(data)

    def __enter__(self) -> "TarWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
