"""What a build's planning reads of a parquet's schema (`ParquetColumns`): its column names and
which hold images. Held for a planning stretch (`web_format.schemas_read_once`) instead of the
Arrow schema itself, which takes 4 to 6 times its serialized size in memory (a struct column's
every child a C++ field and type): 16 schemas of 0.76 MiB serialized held 94 MiB."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from sources import hf_parquet
from sources.web_samples import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class ParquetColumns:
    names: tuple[str, ...]  # every top-level column, in order
    image_columns: tuple[str, ...]  # the `datasets` `Image` columns (`hf_parquet.image_columns`)
    image_list_columns: tuple[str, ...]  # those of a list of `Image`s per row, refused by name
    stored_image: str | None  # img2dataset's `output_format=parquet` binary image column (`jpg`)

    @classmethod
    def of(cls, schema: Any) -> ParquetColumns:
        """The columns of an Arrow schema."""
        return cls(tuple(schema.names), tuple(hf_parquet.image_columns(schema)),
                   tuple(hf_parquet.image_list_columns(schema)), stored_image_column(schema))

    def held_bytes(self) -> int:
        """The memory these columns take (Python's own count of each string and tuple)."""
        strings = (*self.names, *self.image_columns, *self.image_list_columns)
        return sys.getsizeof(self) + sum(map(sys.getsizeof, strings)) + sum(
            sys.getsizeof(t) for t in (self.names, self.image_columns, self.image_list_columns))


def stored_image_column(schema: Any) -> str | None:
    """The binary image column of an `output_format=parquet` shard's Arrow schema, if it has one."""
    return next((f.name for f in schema if f.name in IMAGE_EXTENSIONS and hf_parquet.is_binary(f.type)), None)
