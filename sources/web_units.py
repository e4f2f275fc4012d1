"""How a web source's input is cut into units of parallel work, and which part of a split tar
owns an item: the `Unit` the laion, video and derived sources hand the build, and the tar parts
the laion and ImageNet readers share (`tar_units`, `owns_key`)."""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

from sources import fsio


# A local tar of this size or more is read as several units (`Unit.part`), so that a few big tars
# spread over the workers (3 tars on 2 workers: one renders two while the other waits). Each part
# reads every member header of the tar and seeks over the data of samples another part owns (on a
# local disk 14 ms per 900-member tar against 40 ms for reading it through; decoding a part's 450
# images takes ~200 times that); it yields the items whose key hashes to it: together the parts
# yield exactly what one reading does. A remote tar is never split (each part would download all
# of it). Smaller parts did not pay: 16 MB (18 units of 50 images for a 900-image build of three
# 92 MB tars instead of 6 of 150) took 5.14 s against 4.91 s (medians of 4 interleaved runs, 8.0
# against 7.8 CPU-s).
TAR_PART_BYTES = 64 << 20
MAX_TAR_PARTS = 8
# webdataset shards: plain, or gzip-compressed as webdataset also reads them (streamed through
# zlib's 32 KiB window, so memory stays bounded; never split into parts: each would inflate it all)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
COMPRESSED_TAR_SUFFIXES = (".tar.gz", ".tgz")
# a tar starting with one of these (gzip, bzip2, xz: what tarfile's "r|*" streams) is compressed
# whatever its name (a gzipped shard named `.tar`); `tar_members` reads by them too
COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


@dataclass(frozen=True)
class Unit:
    """One parallel work item: a tar (or one of its `parts`), a files-layout shard folder, a
    parquet of images, or a slice of an image folder (an image's sidecars always in the same slice)."""

    # "tar" | "files" | "parquet" | a slice of an image folder (`web_folder.FOLDER_KINDS`) | "metadata" |
    # "metadata_card" (an ImageFolder metadata file; with a card's configs) | "card" (README.md) |
    # "hf_parquet" | "hf_other" (a `datasets` layout's parquet; its other files) | "stray" (a file
    # that is none of those: a reject); part of the unit's id (`unit_store.unit_id`): spelt as ever
    kind: str
    uris: tuple[str, ...]
    root: str
    part: int = 0
    parts: int = 1

    def __repr__(self) -> str:  # a whole unit keeps the name (`unit_store.unit_id`) it always had
        split = f", part={self.part}, parts={self.parts}" if self.parts > 1 else ""
        return f"Unit(kind={self.kind!r}, uris={self.uris!r}, root={self.root!r}{split})"

    def owns(self, key: str) -> bool:
        """Whether an item of this unit's input is this part's to yield."""
        return owns_key(key, self.part, self.parts)


def owns_key(key: str, part: int, parts: int) -> bool:
    """Whether the item keyed `key` of a tar read in `parts` parts is part `part`'s to yield (each
    key's in exactly one part, whatever the order of the members)."""
    return parts == 1 or zlib.crc32(key.encode("utf-8", "surrogateescape")) % parts == part


def tar_units(uri: str, root: str, part_bytes: int | None = None, max_parts: int | None = None) -> list[Unit]:
    """A tar's units: one, or `parts` of a big local plain tar (of `part_bytes`, by default
    `TAR_PART_BYTES`; at most `max_parts`, by default `MAX_TAR_PARTS`). A compressed one, by its
    suffix or its first bytes, is one unit: each part would inflate all of it."""
    path = fsio.local_path(uri)
    parts = 1
    if path is not None and not uri.lower().endswith(COMPRESSED_TAR_SUFFIXES):
        try:
            size = os.path.getsize(path)
            parts = min(max_parts or MAX_TAR_PARTS, max(1, -(-size // (part_bytes or TAR_PART_BYTES))))
            if parts > 1:
                with open(path, "rb") as handle:
                    parts = 1 if handle.read(6).startswith(COMPRESSED_MAGIC) else parts
        except OSError:  # a dangling link, an unreadable file: its one unit says what became of it
            parts = 1
    return [Unit("tar", (uri,), root, part, parts) for part in range(parts)]
