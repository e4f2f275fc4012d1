"""Reading a Hugging Face `datasets` repo's parquet files (`format: huggingface`): the Image and
caption columns built, each row an image record (its bytes, or the file under the root its `path`
names) or a reject, and the repo's other files each a reject of its own."""

from __future__ import annotations

from typing import Any, Iterator

from sources import fsio, hf_card, hf_parquet, hub_cache
from sources.hf_parquet import IMAGE_LIST_COLUMN, NESTED_IMAGE_COLUMN
from sources.hub_cache import HF_URI
from sources.imagefolder import BAD_METADATA
from sources.parquet_columns import ParquetColumns
from sources.paths import (ConfiguredValueMismatch, OutsideRoot, PathProblem, join_inside, path_problem,
                           relative_to_root, shown_name)
from sources.records import ImageRecord, Reject, SourceItem, data_key, nfc, path_key
from sources.web_card import OTHER_HF_CONFIG, CardSplits
from sources.web_reader import row_lists as _row_lists
from sources.lineage_text import caption_lineage, lineage_value, metadata_lineage
from sources.web_samples import IMAGE_EXTENSIONS, caption_text as _caption_text, ext_of as _ext_of


class HfRepoReader(CardSplits):
    """The items of a `datasets` repo's parquet file, or of its other files (`LaionSource.read`
    picks the reader)."""

    def _hf_columns(self, columns: ParquetColumns, name: str, config_error: bool = False) -> tuple[str, str | None]:
        """(image column, caption column) of a `datasets` parquet: the configured ones, or its one
        `Image` column and the first of `CAPTION_COLUMNS` it has. A file without them raises
        `hf_parquet.MissingColumns` (its unit's reject); the first file (`config_error`) a
        `ConfiguredValueMismatch` naming the config field (`image_column`, `caption_column`), before
        the build starts (a ValueError was a traceback out of `check`)."""
        images = list(columns.image_columns)
        image = self.image_column or (images[0] if len(images) == 1 else None)
        caption = self.caption_column or next((c for c in hf_parquet.CAPTION_COLUMNS if c in columns.names), None)
        problem = field = None
        if image not in images:
            lists, nested = columns.image_list_columns, columns.nested_images
            field = "image_column"
            problem = (f"{name} has no Image column {self.image_column!r} (its Image columns: "
                       f"{', '.join(images) or 'none'})"
                       if self.image_column else f"{name} has {len(images) or 'no'} Image columns"
                       + (f" ({', '.join(images)}): set image_column to the one to build" if images else "")) + (
                f"; {', '.join(lists)} holds a list of images per row (Sequence(Image())), which this source "
                "does not read (one image per row)" if lists else "") + (
                f"; {', '.join(map(hf_parquet.shown_path, nested))} {'is an Image' if len(nested) == 1 else 'are Images'} inside a struct "
                "column, which this source does not read (one top-level image column a row)" if nested else "")
        elif caption is not None and caption not in columns.names:
            field = "caption_column"
            problem = f"{name} has no caption column {caption!r} (its columns: {', '.join(columns.names)})"
        if problem and config_error:
            raise ConfiguredValueMismatch(field, f"{problem} (format: huggingface)")
        if problem:
            raise hf_parquet.MissingColumns(problem)
        return image, caption  # type: ignore[return-value]

    def _hf_items(self, uri: str, shard: str) -> Iterator[SourceItem]:
        """The rows of a `datasets` parquet: each an image record (its bytes, or the file its
        `path` names inside the root) or a reject keyed by the file and the row's index."""
        name = f"{shard}.parquet"
        try:
            split = hf_card.file_split(self.path, relative_to_root(self.path, uri), self.hf_config, self.follow_links)
        except hf_card.CardError as exc:  # the card was changed since the build started
            yield self._reject(self._shard_key(shard), "read", BAD_METADATA, f"{name}: {exc}", where=self._at(uri))
            return
        if split is None:
            yield self._reject(self._shard_key(shard), "read", OTHER_HF_CONFIG, self._other_config(name),
                               where=self._at(uri))
            return
        hint = hf_parquet.split_hint(split)
        with fsio.open_file(uri, read_ahead=False) as handle:
            parquet = hf_parquet.open_parquet(handle, pre_buffer=False)
            found = ParquetColumns.of(parquet.schema_arrow)
            try:
                image, caption = self._hf_columns(found, name)
            except hf_parquet.MissingColumns as exc:
                yield Reject(self._shard_key(shard), self.name, self._shard_key(shard), "read", "unexpected_file",
                             f"{exc}: its {parquet.metadata.num_rows} rows are not read"[:300], split_hint=hint,
                             input=self._at(uri))
                return
            names = hf_card.card_class_labels(self.path, self.hf_config, self.follow_links)  # datasets casts to the card's
            names = hf_parquet.class_names(parquet.schema_arrow) if names is None else names
            context = {"file": name, "hf_split": split}
            at = self._at(uri)
            lists = found.image_list_columns
            for column in lists:  # never read: its images would ride in the lineage as nulls
                key = data_key(self.name, shard, "column", column)
                yield Reject(key, self.name, key, "read", IMAGE_LIST_COLUMN,
                             f"{name}: column {column!r} holds a list of images per row (Sequence(Image())), not "
                             f"read: the images of its {parquet.metadata.num_rows} rows are not built"[:300],
                             split_hint=hint, input=f"{at} column {column}")
            nested = found.nested_image_columns
            for column in nested:  # its images' bytes never read; its other fields ride in the lineage
                key = data_key(self.name, shard, "column", column)
                inside = [hf_parquet.shown_path(p) for p in found.nested_images if p[0] == column]
                yield Reject(key, self.name, key, "read", NESTED_IMAGE_COLUMN,
                             f"{name}: column {column!r} holds images inside a struct ({', '.join(inside)}), their "
                             f"bytes not read: those images of its {parquet.metadata.num_rows} rows are not built "
                             "(one top-level image column a row); its other fields ride in each row's lineage"[:300],
                             split_hint=hint, input=f"{at} column {column}")
            others = {*found.image_columns, *lists} - {image}  # never read
            columns = [leaf for c in found.names if c not in others
                       for leaf in (hf_parquet.beside_nested_images(parquet, c, found.nested_images)
                                    if c in nested else [c])]
            # a caption cell that is not UTF-8 comes as its bytes, read as a `binary` column's (`caption_text`)
            batches = hf_parquet.row_batches(parquet, name, columns=columns, source=handle, image=image,
                                             captions=(caption,) if caption else ())
            for first, rows in _row_lists(batches):
                for offset, row in enumerate(rows):
                    index = (first.first_row if isinstance(first, hf_parquet.TooLarge) else first) + offset
                    key = data_key(self.name, shard, str(index))
                    if isinstance(first, hf_parquet.TooLarge):
                        yield Reject(key, self.name, key, "read", first.reason, first.detail[:300],
                                     split_hint=hint, input=f"{at} row {index}")
                        continue
                    row = hf_parquet.unread_image_bytes(row, found.nested_images)
                    yield self._hf_row(key, row, image, caption, names, {**context, "row": index}, hint,
                                       f"{at} row {index}")

    def _hf_row(self, key: str, row: dict[str, Any], image: str, caption: str | None, names: dict[str, dict],
                context: dict[str, Any], hint: str | None, at: str = "") -> SourceItem:
        """One `datasets` row: its image's bytes, or a file its `path` names inside the root (a
        null image, a path leading out or to nothing: a reject)."""
        cell = row.pop(image) or {}
        text = _caption_text(row.pop(caption, None)) if caption else None
        where = f"row {context['row']} of {context['file']}"
        data, named = cell.get("bytes"), cell.get("path")
        uri = None
        if data is None:
            problem = self._hf_path_problem(named, where)
            if isinstance(problem, PathProblem):
                return Reject(key, self.name, key, "read", problem.reason, problem.detail[:300], split_hint=hint,
                              input=at)
            uri = problem
        lineage: dict[str, Any] = {**(caption_lineage(str(text)) if text else {}), **context}
        if named:  # a path-only row's file as it lies under the root (`datasets` writes it absolute)
            lineage["image_path"] = nfc(relative_to_root(self.path, uri)) if uri else named
        labels = {c: hf_parquet.label_names(names[c], v) for c, v in row.items() if c in names}
        labels = {c: named for c, named in labels.items() if named is not None}
        if labels:
            lineage["class_names"] = labels
        lineage.update(metadata_lineage("huggingface", {k: v for k, v in row.items() if not isinstance(v, bytes)},
                                        lineage_value))
        return ImageRecord(key=key, source=self.name, group=key, split_hint=hint, lineage=lineage,
                           input=at if uri is None else f"{at}: {self._at(uri)}",
                           **({"data": data} if uri is None else {"uri": uri}))

    def _hf_path_problem(self, named: Any, where: str) -> PathProblem | str:
        """The file a row without image bytes points at (inside the root, taken from there), or
        the reject's reason and detail: no image at all, a path leading out, a file not there."""
        if not named:
            return PathProblem("missing_image", f"{where}: its image is null (no bytes, no path)")
        try:
            uri = self._named_file(str(named))
        except OutsideRoot as exc:
            return PathProblem(exc.reason, f"{where}: {exc.detail}")
        problem = path_problem(self.path, uri, self.follow_links)
        if problem:
            return PathProblem(problem.reason, f"{where}: {problem.detail}")
        if not fsio.exists(uri):
            return PathProblem("missing_image", f"{where}: no image bytes, and its path "
                                                f"{shown_name(nfc(relative_to_root(self.path, uri)))} is not there")
        return uri

    def _named_file(self, named: str) -> str:
        """The file a row's path names under the root; raises `OutsideRoot` for one out of it. In a
        Hub cache snapshot a `hf://datasets/...` path (as `datasets` writes a Hub file's) is the
        snapshot's file when it is of the snapshot's repo and revision and downloaded there."""
        if HF_URI.match(named) and hub_cache.snapshot_of(self.path):
            local = hub_cache.hf_file(self.path, named)
            if local is None:
                raise OutsideRoot(f"{shown_name(named)} is a Hub file this cache snapshot does not hold under the "
                                  "root (another repo or revision, or not downloaded)")
            return local
        return join_inside(self.path, named)

    def _hf_other(self, uri: str) -> Reject:
        """The reject of a file in a `datasets` layout that is no parquet of it (never read)."""
        relative = nfc(relative_to_root(self.path, uri))
        key = path_key(self.name, relative)
        aside = self._set_aside(lambda: key, self.path, uri)
        if aside is None and _ext_of(relative) == "parquet":  # a file of another config of the card
            return self._reject(key, "read", OTHER_HF_CONFIG, self._other_config(relative), where=self._at(uri))
        what = ("an image file no row's path names, never a sample of its own (built where a row names it)"
                if _ext_of(relative) in IMAGE_EXTENSIONS else "no parquet file of the Hugging Face dataset: not read")
        return aside or self._reject(key, "read", "unexpected_file", f"{shown_name(relative)} is {what}",
                                     where=self._at(uri))
