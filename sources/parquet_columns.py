"""What a build's planning reads of a parquet's schema (`ParquetColumns`): its column names and
which hold images. Held for a planning stretch (`web_format.schemas_read_once`) instead of the
Arrow schema itself, which takes 4 to 6 times its serialized size in memory (a struct column's
every child a C++ field and type): 16 schemas of 0.76 MiB serialized held 94 MiB."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from sources import fsio, hf_parquet
from sources.records import raise_machine_error
from sources.web_samples import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class ParquetColumns:
    names: tuple[str, ...]  # every top-level column, in order
    image_columns: tuple[str, ...]  # the `datasets` `Image` columns (`hf_parquet.image_columns`)
    image_list_columns: tuple[str, ...]  # those of a list of `Image`s per row, refused by name
    stored_image: str | None  # the binary image column (`stored_image_column`: img2dataset's `jpg`, `image`)
    # the `Image`s inside struct columns, each its fields' names (`("aux", "mask")`: `hf_parquet.nested_image_columns`)
    nested_images: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def of(cls, schema: Any) -> ParquetColumns:
        """The columns of an Arrow schema."""
        return cls(tuple(schema.names), tuple(hf_parquet.image_columns(schema)),
                   tuple(hf_parquet.image_list_columns(schema)), stored_image_column(schema),
                   tuple(hf_parquet.nested_image_columns(schema)))

    @property
    def nested_image_columns(self) -> tuple[str, ...]:
        """The top-level struct columns holding `nested_images`, each once, in order."""
        return tuple(dict.fromkeys(path[0] for path in self.nested_images))

    def held_bytes(self) -> int:
        """The memory these columns take (Python's own count of each string and tuple)."""
        strings = (*self.names, *self.image_columns, *self.image_list_columns, *(n for p in self.nested_images for n in p))
        return sys.getsizeof(self) + sum(map(sys.getsizeof, strings)) + sum(map(sys.getsizeof, (
            self.names, self.image_columns, self.image_list_columns, self.nested_images, *self.nested_images)))


# the names of a binary column read as a parquet's images: img2dataset's `output_format=parquet`
# names its column for the format it encodes (`jpg`, `png`, `webp`); a pandas or pyarrow table of
# image bytes most often `image` (`img`, `image_bytes`). Without them such a parquet was taken for
# a plain folder's picture (`not_an_image`), its rows never read. A `datasets` `Image` column is
# a struct (`hf_parquet.image_columns`), never one of these.
STORED_IMAGE_NAMES = (*IMAGE_EXTENSIONS, "image", "img", "image_bytes")


def stored_image_column(schema: Any) -> str | None:
    """The binary image column of a parquet holding its images (`STORED_IMAGE_NAMES`: an
    `output_format=parquet` shard's, a pandas export's) in an Arrow schema, if it has one."""
    return next((f.name for f in schema if f.name in STORED_IMAGE_NAMES and hf_parquet.is_binary(f.type)), None)


def unread_parquet_detail(uri: str, relative: str) -> str:
    """Why a parquet among a folder's images (at `relative` under the source's root) is not read
    (`unexpected_file`), what it holds and how to have it read: it has no image column this source
    finds (`stored_image_column`, a `datasets` `Image` struct), or lies below the top, where such
    parquets are read, or its footer does not read. It was decoded as a picture (`not_an_image`),
    its rows never counted; a table of bytes under another name (`content`) says to rename it."""
    import pyarrow as pa

    try:
        with fsio.open_file(uri, read_ahead=False) as handle:
            parquet = hf_parquet.open_parquet(handle)
            schema, rows = parquet.schema_arrow, parquet.metadata.num_rows
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise_machine_error(exc, uri)  # too many open files, no memory: the machine's, never this file's
        return f"{relative}: a .parquet that cannot be read ({type(exc).__name__}), no image: not read"
    held = f"{relative}: a parquet of {rows} row{'s' * (rows != 1)}, not read: "
    stored = stored_image_column(schema)
    if stored:
        return held + (f"its column {stored} holds images, read from parquet files at the top of the source's "
                       f"path: set path to its folder, {relative.rpartition('/')[0] or '.'}/")
    binary = [f.name for f in schema if hf_parquet.is_binary(f.type)]
    if binary:
        return held + (f"its binary column {_listed(binary)} has no name an image column is found by (image, img, "
                       "image_bytes, or a format: jpg, png, webp, ...): rename it image to build its rows")
    nested = [hf_parquet.shown_path(path) for path in hf_parquet.nested_image_columns(schema)]
    if nested:
        return held + (f"its images sit inside a struct column ({_listed(nested)}), which this source does not read "
                       "(one top-level image column a row)")
    return held + f"no column of image bytes (its columns: {_listed(list(schema.names))})"


def _listed(names: list[str], most: int = 4) -> str:
    """Column names for a detail: the first `most`, then how many more."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
