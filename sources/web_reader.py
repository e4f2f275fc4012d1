"""What each reader of a web source's layouts shares (`LaionSource` is made of such readers): its
configuration, how a reject is keyed and placed, the files set aside unread, a sample's caption
and metadata files read, a parquet's rows a batch at a time."""

from __future__ import annotations

from typing import Any, Callable, Iterator

from sources import fsio, hf_parquet
from sources.paths import relative_to_root, set_aside_problem
from sources.lineage_text import CAPTION_READ_BYTES
from sources.records import FILE_TOO_LARGE, Reject, data_key, read_input_bytes, read_input_head
from sources.web_format import LaionFormat, detect_format
from transforms.errors import exception_detail


class WebReader:
    """The configuration each reader of a web source reads (the fields `LaionSource` declares, with
    their defaults) and what each writes its rejects with: a reader of one layout derives from it."""

    name: str
    path: str
    format: LaionFormat
    follow_links: bool
    image_column: str | None
    caption_column: str | None
    hf_config: str | None

    def resolved_format(self) -> LaionFormat:
        return detect_format(self.path, self.follow_links) if self.format == "auto" else self.format

    def _key(self, shard: str, sample_key: str) -> str:
        """A sample's key: one-to-one over (shard, sample key), both of which may hold '-'."""
        return data_key(self.name, shard, sample_key)

    def _shard_key(self, shard: str) -> str:
        """The key of a reject about a whole shard (its archive or its listing)."""
        return data_key(self.name, shard)

    def _reject(self, key: str, stage: str, reason: str, detail: str, split_hint: str | None = None,
                where: str = "", group: str | None = None) -> Reject:
        """A reject grouped by its own key, or by `group` (an image of a multi-image sample's: the
        sample's, which a part of a big tar owns or not as a whole)."""
        return Reject(key, self.name, group or key, stage, reason, detail[:300], split_hint=split_hint, input=where)

    def _at(self, uri: str) -> str:
        """A reject's `input`: the file at `uri` as the source's root sees it, spelt as on disk."""
        return relative_to_root(self.path, uri)

    def _set_aside(self, key: Callable[[], str], walk_root: str, uri: str, folder: bool | None = None) -> Reject | None:
        """The reject of an OS metadata or hidden file or folder (`sources.paths.set_aside`), unread;
        `key` makes its key, only for such a file (every tar member is asked)."""
        problem = set_aside_problem(walk_root, uri, folder)
        return self._reject(key(), "read", problem.reason, problem.detail, where=self._at(uri)) if problem else None

    def _sidecar_texts(self, sidecars: dict[str, str],
                       key: Callable[[str], str]) -> tuple[dict[str, bytes], dict[str, int], list[Reject]]:
        """The bytes of each caption and metadata file (by extension), of a caption past
        `CAPTION_READ_BYTES` its head alone (its size then in the second dict: `lineage_text`), and
        the reject (keyed by `key`) of each the operating system refuses (no permission, a failing
        disk) or that is over the one file cap: its image goes on without it. The refusal used to
        end the unit's reading, one `unit_failed` reject naming the folder in place of its up to
        256 images."""
        texts: dict[str, bytes] = {}
        sizes: dict[str, int] = {}
        unread: list[Reject] = []
        for ext, uri in sidecars.items():
            try:  # too many open files: the machine's MachineError
                if ext == "txt":
                    texts[ext], size = read_input_head(uri, CAPTION_READ_BYTES)
                    if size > len(texts[ext]):
                        sizes[ext] = size
                else:
                    texts[ext] = read_input_bytes(uri)
            except fsio.FileTooLarge as exc:
                unread.append(self._reject(key(uri), "read", FILE_TOO_LARGE, str(exc), where=self._at(uri)))
            except OSError as exc:
                unread.append(self._reject(key(uri), "read", "unreadable_file", exception_detail(exc),
                                           where=self._at(uri)))
        return texts, sizes, unread


def row_lists(batches) -> Iterator[tuple[Any, list[dict[str, Any]]]]:
    """`hf_parquet.row_batches` as (first row index or its `TooLarge`, rows): a row group too
    large to read gives its rows' keys alone, each then a `row_group_too_large` reject."""
    for item in batches:
        yield (item, item.rows) if isinstance(item, hf_parquet.TooLarge) else item
