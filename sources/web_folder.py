"""Reading a slice of an image folder: its files paired into samples by stem (an image with its
caption and `.json`), each image a record (with its metadata row in an ImageFolder, its split
from the folders or the card) or a reject: a twin name, a photo tool's sidecar, a caption
without its image, a file linking out."""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator

from sources import hf_parquet, imagefolder
from sources.img2dataset_listing import parse_json
from sources.lineage_text import caption_lineage, metadata_lineage
from sources.lineage_text import lineage_value
from sources.imagefolder import EXTRA_IMAGE, UNLISTED_IMAGE
from sources.parquet_columns import unread_parquet_detail
from sources.paths import (PathProblem, folder_link_problem, path_problem, relative_to_root, shown_name, twin_problem,
                           twin_to_read)
from sources.records import ImageRecord, Reject, SourceItem, nfc, path_key, twin_detail
from sources.web_card import CardAnswer, CardSplits
from sources.web_samples import (METADATA_SIDECAR, SIDECARS, TOOL_SIDECARS, TAKEOUT_JSON as _TAKEOUT_JSON,
                                 caption_text as _caption_text, ext_of as _ext_of, folder_groups)
from sources.web_units import Unit

# the kind of a slice of an image folder by (whether its images take their metadata row, where
# their split comes from: "" `split.val_fraction`, "split" a split layout's folders, "card" the
# card's configs), spelt as the joined strings it was built of (a unit's kind is in its id)
FOLDER_KINDS = {(False, ""): "folder", (False, "split"): "folder_split", (False, "card"): "folder_card",
                (True, ""): "imagefolder", (True, "split"): "imagefolder_split", (True, "card"): "imagefolder_card"}
_FOLDER_KIND_PARTS = {kind: parts for parts, kind in FOLDER_KINDS.items()}


class FolderReader(CardSplits):
    """The items of one slice of an image folder (`LaionSource.read` picks the reader)."""

    def _read_folder(self, unit: Unit) -> Iterator[SourceItem]:
        root = unit.root
        listed, splits = _FOLDER_KIND_PARTS[unit.kind]
        ask = functools.cache(self._card_answer)  # the unit's images share a few metadata files
        data = []
        for uri in unit.uris:
            aside = self._set_aside(lambda: path_key(self.name, relative_to_root(root, uri)), root, uri)
            if aside:  # never an image record the decoder would call `not_an_image`
                yield aside
            else:
                data.append(uri)
        for group in folder_groups(data, root):
            twins: dict[str, list[str]] = {}  # a sidecar's extension, or an image's key -> its files
            for uri in group:
                ext = _ext_of(relative_to_root(root, uri))
                name = ext if ext in SIDECARS else path_key(self.name, nfc(relative_to_root(root, uri)))
                twins.setdefault(name, []).append(uri)
            sidecars: dict[str, str] = {}
            entries: list[str] = []
            for name, uris in twins.items():
                # `x.txt` beside `x.TXT`, or in NFC beside NFD: one key, the first that is a file is read
                kept = twin_to_read(root, uris, self.follow_links) if len(uris) > 1 else uris[0]
                if kept is None:  # none is a file to read (dangling links, fifos): each its own reject
                    yield from (self._unread_twin(root, uri) for uri in uris)
                    continue
                yield from (self._twin(root, uri, kept) for uri in uris if uri != kept)
                if name in SIDECARS:
                    sidecars[name] = kept
                else:
                    entries.append(kept)
            for uri in [u for u in entries if _ext_of(relative_to_root(root, u)) in TOOL_SIDECARS]:
                entries.remove(uri)  # never an image the decoder calls `not_an_image`
                yield self._tool_sidecar(root, uri)
            for uri in [u for u in entries if _ext_of(relative_to_root(root, u)) == "parquet"]:
                entries.remove(uri)  # a table, never a picture: one reject saying what it holds
                yield self._unread_parquet(root, uri)
            for ext, uri in list(sidecars.items()):
                problem = path_problem(root, uri, self.follow_links)
                if problem:  # a caption linking out of the root: never read, its image goes without
                    del sidecars[ext]
                    yield self._reject(path_key(self.name, relative_to_root(root, uri)), "read", problem.reason,
                                       problem.detail, where=self._at(uri))
            if not entries:  # a caption or metadata file whose image is not there
                for uri in sidecars.values():
                    relative = relative_to_root(root, uri)
                    if _TAKEOUT_JSON.fullmatch(relative.rpartition("/")[2]):
                        yield self._tool_sidecar(root, uri)
                        continue
                    yield self._reject(path_key(self.name, relative), "read", "missing_image",
                                       f"{nfc(relative)}: no image file with this stem", where=self._at(uri))
                continue
            texts, sizes, unread = self._sidecar_texts(sidecars,
                                                       lambda uri: path_key(self.name, relative_to_root(root, uri)))
            yield from unread
            for uri in entries:  # one per key
                relative = nfc(relative_to_root(root, uri))
                key = path_key(self.name, relative)
                problem = path_problem(root, uri, self.follow_links) or folder_link_problem(root, uri,
                                                                                            self.follow_links)
                if problem:
                    yield self._reject(key, "read", problem.reason, problem.detail, where=self._at(uri))
                    continue
                lineage: dict[str, Any] = {"path": relative}  # in NFC, as the key
                lineage.update(caption_lineage(texts.get("txt", b"").decode("utf-8", errors="replace"),
                                               sizes.get("txt")))
                parsed = parse_json(texts.get("json"))
                if parsed:  # each value and the whole capped, as a sample's `.json` is (`lineage_text`)
                    lineage.update(metadata_lineage("metadata", parsed, lineage_value))
                if listed:
                    yield self._listed_image(key, uri, relative, lineage, splits, ask)
                    continue
                yield self._plain_image(key, uri, relative, lineage, splits, ask)

    def _plain_image(self, key: str, uri: str, relative: str, lineage: dict[str, Any], splits: str,
                     ask: Callable[[str], CardAnswer]) -> SourceItem:
        """An image of a folder without metadata: in a split layout (`splits` "split", `_split_layout`),
        in `val` whole when a folder of its path names a held-out split as `datasets` splits an
        ImageFolder (`test/cat/1.jpg`, `validation/`), never trained on; else split by
        `split.val_fraction`. The image's own name is not read as a split (`test-shot-01.jpg`,
        `dev_board.jpg` are photos' names). With a card's `configs` (`splits` "card"), the split its
        built config gives the image (`_card_split`, `ask`: `_card_answer`)."""
        card = splits == "card"
        split = (self._card_split(key, relative, ask(relative), self._at(uri)) if card
                 else hf_parquet.folder_split(relative) if splits == "split" else None)
        if isinstance(split, Reject):
            return split
        hint = hf_parquet.split_hint(split)
        return ImageRecord(key=key, source=self.name, group=key, uri=uri, split_hint=hint,
                           lineage={**lineage, "hf_split": split} if hint or card else lineage)

    def _listed_image(self, key: str, uri: str, relative: str, lineage: dict[str, Any], splits: str,
                      ask: Callable[[str], CardAnswer]) -> SourceItem:
        """An image of an ImageFolder with the metadata row that names it (its caption, its other
        columns under `huggingface`, its split: `split_of`), the `unlisted_image` reject when
        metadata files are there and no row names it, or a plain image when none is in its folder
        or above (`datasets` yields such an image of a split without metadata, unlabelled). With a
        card's configs (`card`), a metadata file that is no data file of the built config is unused,
        as `datasets` has it: the image is then a plain one, its split the card's for itself. `ask`:
        `_card_answer`, kept for the unit (its images share a few metadata files)."""
        row = imagefolder.image_row(self.path, relative_to_root(self.path, uri), self.follow_links)
        card = ask(_metadata_of(row)) if row is not None and splits == "card" else None
        if row is None or isinstance(card, tuple) and card[0] is None:  # the metadata file: no data file of it
            return self._plain_image(key, uri, relative, lineage, splits, ask)
        if "unread" in row:
            return self._reject(key, "read", UNLISTED_IMAGE, f"{shown_name(relative)}: {row['unread']} names the "
                                f"images here but is not read ({row['why']}): its row, if any, is unknown",
                                where=self._at(uri))
        if "extra" in row:
            return self._reject(key, "read", EXTRA_IMAGE,
                                f"{shown_name(relative)} is the {row['column']} of {row['extra']} line {row['line']}: "
                                f"it rides in the lineage of that row's {row['lead']} image, never built as an image of "
                                "its own (one image per row)", where=self._at(uri))
        if "unlisted" in row:
            return self._reject(key, "read", UNLISTED_IMAGE,
                                f"{shown_name(relative)}: no row of a metadata file (metadata.jsonl, .csv, .parquet) in "
                                "its folder or above names it; datasets' ImageFolder leaves it out too",
                                where=self._at(uri))
        values = {k: v for k, v in row["values"].items() if k != row["lead"]}
        column = self.caption_column or next((c for c in hf_parquet.CAPTION_COLUMNS if c in values), None)
        text = _caption_text(values.pop(column, None)) if column else None
        split = (self._card_split(key, relative, card, self._at(uri)) if card is not None
                 else split_of(relative, row["file"]))
        if isinstance(split, Reject):
            return split
        if text:  # the row's caption over a `.txt`'s: the `.txt`'s cut said of it no more
            lineage = {k: v for k, v in lineage.items() if k != "caption_truncated"}
        lineage = {**lineage, **(caption_lineage(text) if text else {}), "file": row["file"], "row": row["row"],
                   **({"hf_split": split} if split else {}),
                   **metadata_lineage("huggingface", values, lineage_value)}  # capped as a parquet row's
        return ImageRecord(key=key, source=self.name, group=key, uri=uri, lineage=lineage,
                           split_hint=hf_parquet.split_hint(split))

    def _tool_sidecar(self, root: str, uri: str) -> Reject:
        """The `metadata_sidecar` reject of a photo tool's file beside a photo (`TOOL_SIDECARS`, a
        Takeout `.json`): counted, never opened. Judged by its name alone: whether its photo is
        there is the photo's own record (or, for a Takeout `.json` without one, nothing)."""
        relative = nfc(relative_to_root(root, uri))
        base = relative.rpartition("/")[2]
        takeout = _TAKEOUT_JSON.fullmatch(base)
        what = (f"metadata of the photo {takeout['photo']}, as Google Takeout writes it" if takeout else TOOL_SIDECARS[_ext_of(relative)])
        return self._reject(path_key(self.name, relative), "read", METADATA_SIDECAR,
                            f"{base}: {what}, not read (no caption; its places and names are never published)",
                            where=self._at(uri))

    def _unread_parquet(self, root: str, uri: str) -> Reject:
        """The `unexpected_file` reject of a parquet among a folder's images (no ImageFolder
        `metadata.parquet`, no parquet of a layout this source reads: the folder would be that
        layout): what it holds and how to have its rows read (`unread_parquet_detail`). One
        linking out of the root, or no file, is never opened: its path's reject."""
        relative = relative_to_root(root, uri)
        problem = path_problem(root, uri, self.follow_links)
        reason, detail = (problem.reason, problem.detail) if problem else (
            "unexpected_file", unread_parquet_detail(uri, nfc(relative)))
        return self._reject(path_key(self.name, relative), "read", reason, detail, where=self._at(uri))

    def _unread_twin(self, root: str, uri: str) -> Reject:
        """The reject of a folder file of a key none of whose files is one to read (`twin_to_read`):
        why it is none (`paths.twin_problem`: a fifo, a link leading out or to nothing, a folder), as
        for any source's twins. A link to nothing was `unreadable_file` here, `not_a_file` elsewhere."""
        relative = relative_to_root(root, uri)
        problem = twin_problem(root, uri, self.follow_links) or PathProblem(
            "unreadable_file", f"{shown_name(nfc(relative))} cannot be read")
        return self._reject(path_key(self.name, relative), "read", problem.reason, problem.detail,
                            where=self._at(uri))

    def _twin(self, root: str, uri: str, kept: str) -> Reject:
        """The reject of a folder file whose name is the one `kept` has, once both are in NFC and
        extensions in lower case (the two would share a key; a sidecar, its one slot): `duplicate_key`
        for a file, its own reason for one that is none (`_unread_twin`: a link to nothing, a fifo),
        never opened. Such a twin was a `duplicate_key` saying "that file is read" of no file."""
        if twin_problem(root, uri, self.follow_links) is not None:
            return self._unread_twin(root, uri)
        relative = relative_to_root(root, uri)
        return self._reject(path_key(self.name, relative), "read", "duplicate_key",
                            twin_detail(relative, relative_to_root(root, kept), "in another Unicode form or case"),
                            where=self._at(uri))


def split_of(image: str, metadata: str) -> str:
    """The `datasets` split of an ImageFolder image: the held-out one of its own folders' and its
    metadata file's folders', else its metadata file's. A `metadata.jsonl` at the top naming
    `test/b.jpg` gave `train` (the top's): `datasets` puts `test/b.jpg` in its test split."""
    own = hf_parquet.hf_split(image)
    return own if hf_parquet.split_hint(own) else hf_parquet.hf_split(metadata)


def _metadata_of(row: dict[str, Any]) -> str:
    """The metadata file (relative to the root) an `imagefolder.image_row` answer comes from."""
    return next(row[k] for k in ("file", "extra", "unread", "unlisted") if k in row)
