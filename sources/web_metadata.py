"""Reading a Hugging Face ImageFolder's metadata files (`metadata.jsonl`, `metadata.csv`) as units
of their own: the file or line that is no row, a row naming an image another row names, a file
outside its folder or not there, a file the card's built config leaves unused; a caption column
the config names checked before the build starts. Each image's own row is read by its folder's
unit (`sources.web_folder`)."""

from __future__ import annotations

from typing import Iterator

from sources import fsio, hf_parquet, imagefolder
from sources.paths import ConfiguredValueMismatch, PathProblem, path_problem, relative_to_root, shown_name
from sources.records import Reject, data_key, nfc, path_key
from sources.web_card import OTHER_HF_CONFIG, CardSplits


class MetadataReader(CardSplits):
    """The rejects of one ImageFolder metadata file (`LaionSource.read` picks the reader)."""

    def _check_caption_column(self, uri: str) -> None:
        """Raise before the build when `caption_column` is set and the first metadata file of an
        ImageFolder (read when it is not a link out) has no such column: `check` names the field
        (a plain ValueError was a traceback)."""
        if self.caption_column is None or path_problem(self.path, uri, self.follow_links):
            return
        parsed = imagefolder.read_metadata(uri)
        if not parsed.foreign and parsed.columns and self.caption_column not in parsed.columns:
            raise ConfiguredValueMismatch("caption_column", f"{self.name}: {relative_to_root(self.path, uri)} has no "
                                          f"caption column {self.caption_column!r} (its columns: "
                                          f"{', '.join(parsed.columns)[:200]}) (format: folder)")

    def _metadata_unused(self, relative: str) -> str | None:
        """The built config's name when a card's built config names no split of the metadata file at
        `relative`: `datasets` then reads no row of it (a card naming its images alone, `train/*.png`);
        None otherwise. A card that cannot be read is not judged here: the image's `_card_split` rejects it."""
        answer = self._card_answer(relative)
        return answer[1] if isinstance(answer, tuple) and answer[0] is None else None

    def _read_metadata(self, uri: str, card: bool) -> Iterator[Reject]:
        """The rejects of one ImageFolder metadata file: the file when it cannot be read, each line
        that is no row, each row naming an image another row names, a file outside its folder or
        one not there. A row naming a file that is there is that file's unit's to build. A file
        the card's built config does not name is one `other_hf_config` reject: its rows unused."""
        relative = nfc(relative_to_root(self.path, uri))
        at = self._at(uri)
        built = self._metadata_unused(relative) if card else None
        if built:
            yield self._reject(path_key(self.name, relative), "read", OTHER_HF_CONFIG,
                               f"{self._other_config(relative, built)}; its rows are unused, the images it names take "
                               "their split from the card", where=at)
            return
        problem = path_problem(self.path, uri, self.follow_links)
        if problem:
            yield self._reject(path_key(self.name, relative), "read", problem.reason, problem.detail, where=at)
            return
        parsed = imagefolder.read_metadata(uri)
        hint = hf_parquet.split_hint(hf_parquet.hf_split(relative))  # a held-out split's rejects are counted there
        if parsed.unread:
            yield self._reject(path_key(self.name, relative), "read", parsed.reason, f"{relative}: {parsed.unread}",
                               hint, where=at)
        for line, reason, detail in parsed.problems:
            yield self._reject(data_key(self.name, relative, str(line)), "read", reason, f"{relative} {detail}", hint,
                               where=f"{at} line {line}")
        folder = relative.rpartition("/")[0]
        present = self._files_below(uri.rsplit("/", 1)[0]) if parsed.rows else {}
        for name, (_, line, raw) in parsed.rows.items():
            problem = self._row_problem(folder, relative, line, parsed.values(raw)[parsed.lead], name, present)
            if problem:
                yield self._reject(data_key(self.name, relative, str(line)), "read", problem.reason, problem.detail,
                                   hint, where=f"{at} line {line}")

    def _files_below(self, folder: str) -> dict[str, str]:
        """The files below `folder` (a metadata file's own parent, as the disk spells it: a Mac's
        copy keeps `Café/` in NFD), as `units` lists them: their paths relative to the root in NFC
        -> as the disk spells them."""
        uris = fsio.list_files(folder, recursive=True, follow_links=self.follow_links, links=True)
        return {nfc(relative): relative for relative in (relative_to_root(self.path, u) for u in uris)}

    def _row_problem(self, folder: str, relative: str, line: int, written: str, name: str,
                     present: dict[str, str]) -> PathProblem | None:
        """Why the image a metadata row names is not built from this row (None: it is, by the
        image file's own unit, or that file's own reject says why not); `present`: the files
        below the metadata file's folder (their names in NFC, as the row's: a Mac's copy in NFD
        is there)."""
        where = f"{relative} line {line}"
        if imagefolder.outside_folder(name, written):
            return PathProblem("outside_root", f"{where}: {shown_name(written)} leaves {folder or '.'}/, the "
                                               "metadata file's folder (absolute, a URL or climbing out with ..)")
        image = f"{folder}/{name}" if folder else name
        if image not in present:
            return PathProblem("missing_image", f"{where}: {shown_name(image)} is not a file there")
        nearer = self._nearer_row(relative, image, present)
        if nearer:
            return PathProblem("duplicate_key", f"{where}: {shown_name(image)} is named also by {nearer[0]} line "
                                                f"{nearer[1]}, which is read (the nearest metadata file)")
        return None

    def _nearer_row(self, relative: str, image: str, present: dict[str, str]) -> tuple[str, int] | None:
        """(file, line) of the row naming `image` in a metadata file nearer to it than `relative`
        (below its folder, or `metadata.csv` beside a `.jsonl`), as `imagefolder.image_row` takes
        the nearest: found in the unit's listing `present`, not asked of the disk again per row."""
        parts, folder = image.split("/"), relative.rpartition("/")[0]
        for depth in range(len(parts) - 1, len(folder.split("/")) - 1 if folder else -1, -1):
            for name in imagefolder.METADATA_FILES:
                candidate = "/".join([*parts[:depth], name])
                if candidate == relative:
                    return None
                uri = fsio.join(self.path, *present[candidate].split("/")) if candidate in present else None
                if uri is None or path_problem(self.path, uri, self.follow_links):
                    continue
                parsed = imagefolder.read_metadata(uri)
                row = None if parsed.unread else parsed.rows.get("/".join(parts[depth:]))
                if row:
                    return candidate, row[1]
        return None
