"""The laion source's warnings about its input as a whole (`notices`, once per build): that
img2dataset resized, or decoded and re-encoded, the images it stored, judged from the first
listings (`sources.img2dataset_notices`) and, for re-encoding, the stored bytes of one image
against the hash img2dataset recorded."""

from __future__ import annotations

import tarfile
from typing import Any

from sources import fsio, hf_parquet
from sources.img2dataset_listing import CAPTION_CELLS, MAX_LISTING_BYTES, hash_problem, recorded_hash
from sources.img2dataset_notices import (RESIZE_ADVICE, ListingNotes, captions_not_utf8, decoded_samples,
                                         listing_notes, resized_samples, rotation_clause as _rotation_clause,
                                         unlisted_images)
from sources.parquet_columns import STORED_IMAGE_NAMES
from sources.paths import path_problem, relative_to_root, set_aside, set_aside_problem
from sources.records import MAX_INPUT_FILE_BYTES, raise_machine_error
from sources.tar_members import open_tar, split_member
from sources.web_format import first_schema, schemas_read_once
from sources.web_reader import WebReader
from sources.web_samples import IMAGE_EXTENSIONS, image_members as _image_members
from sources.web_units import TAR_SUFFIXES


class Img2datasetNotices(WebReader):
    """What img2dataset did to the images of a source's shards, said once before its build."""

    def notices(self) -> list[str]:
        """Warnings about the input as a whole (once per source): img2dataset-resized images."""
        with schemas_read_once():  # the layout's detection reads a footer the units' planning read
            layout = self.resolved_format()
            if layout == "huggingface":
                return self._hf_caption_notices()
            if layout == "folder":
                return []
        import pyarrow as pa

        # the listing's captions are built in `output_format=parquet` alone (else a tar's `.txt` is)
        captions = CAPTION_CELLS if layout == "parquet" else ()

        listed = [p for p in fsio.list_files(self.path, (".parquet",), links=True)  # its unit rejects the others
                  if path_problem(self.path, p, self.follow_links) is None and not set_aside(fsio.basename(p))]
        said: list[str] = []  # of the caption bytes and the unlisted images, from the first listing that shows them
        for parquet in listed[:2]:
            try:
                notes = listing_notes(parquet, captions)
                rows = notes.rows
                resized, decoded = resized_samples(rows), decoded_samples(rows)
                said = said or self._caption_notices(parquet, notes, unlisted_images(parquet, rows))
            except (OSError, ValueError, pa.ArrowException) as exc:  # unreadable: its unit rejects it
                raise_machine_error(exc, parquet)  # too many open files: never a warning left out unsaid
                continue
            rotated = _rotation_clause(decoded[2]) if decoded else ""
            if resized:
                count, total, example = resized
                return [f"{self.name}: img2dataset resized {count} of {total} images in "
                        f"{fsio.basename(parquet)} (e.g. stored {example}); the build then sees its "
                        f"letterboxed or re-encoded pixels, not the originals{rotated}: {RESIZE_ADVICE}"] + said
            if decoded and not self._kept_as_downloaded(parquet, notes.decoded_row):
                count, total, _ = decoded
                return [f"{self.name}: img2dataset decoded and re-encoded {count} of {total} images in "
                        f"{fsio.basename(parquet)} itself (sizes kept; each it encoded again, all but what "
                        f"--skip_reencode True kept as downloaded, lost transparency (flattened on white), "
                        f"16-bit depth and EXIF){rotated}: {RESIZE_ADVICE}"] + said
        return said

    def _hf_caption_notices(self) -> list[str]:
        """That the first `datasets` parquet (whose columns the units' planning read) holds captions
        that are not UTF-8 in its string caption column: each built with U+FFFD (`caption_text`)."""
        import pyarrow as pa

        shards = [f for f in fsio.list_files(self.path, (".parquet",), recursive=True)
                  if not set_aside_problem(self.path, f, False)]
        with schemas_read_once():
            first = first_schema(self.path, shards, self.follow_links)
        caption = self.caption_column or next(
            (c for c in hf_parquet.CAPTION_COLUMNS if first and c in first[1].names), None)
        if first is None or caption not in first[1].names:
            return []
        try:
            with fsio.open_file(first[0], read_ahead=False) as handle:
                parquet = hf_parquet.open_parquet(handle, pre_buffer=False)
                if not hf_parquet.is_text(parquet.schema_arrow.field(caption).type):
                    return []
                held = sum(hf_parquet.value_bytes(handle, parquet, index, [caption])
                           for index in range(parquet.num_row_groups))
                if held > MAX_LISTING_BYTES:  # judged before it is read: no notice from it
                    return []
                bad = captions_not_utf8(parquet.read(columns=[caption], use_threads=False), [caption])
        except (OSError, ValueError, pa.ArrowException) as exc:  # unreadable: its unit rejects it
            raise_machine_error(exc, first[0])
            return []
        name = relative_to_root(self.path, first[0])
        return [self._not_utf8_notice(name, bad, f"its string column {caption!r}")] if bad else []

    def _not_utf8_notice(self, name: str, bad: int, where: str) -> str:
        return (f"{self.name}: {name} holds {bad} caption{'s that are' if bad > 1 else ' that is'} not UTF-8 in "
                f"{where}, which must be (the writer that made it did not check them, as Spark, DuckDB or "
                "pyarrow's from_buffers do not): each is read as UTF-8, a byte that is not as U+FFFD; write its "
                "captions as UTF-8 to keep every letter")

    def _caption_notices(self, parquet: str, notes: ListingNotes, unlisted: tuple[int, int] | None) -> list[str]:
        """That img2dataset stored a listing's captions as bytes, or a writer captions that are not
        UTF-8 in a string column, and that its files-layout folder holds images the listing does
        not list (`img2dataset_notices`)."""
        name = fsio.basename(parquet)
        said = [f"{self.name}: img2dataset stored the captions of {name} as bytes (its URL list is not all "
                "UTF-8, as a Latin-1 CSV): each is read as UTF-8, a byte that is not as U+FFFD; convert the "
                "list to UTF-8 and download again to keep every letter"] if notes.binary_captions else []
        bad = notes.captions_not_utf8
        if bad:
            said.append(self._not_utf8_notice(name, bad, "a string column (txt, caption)"))
        if unlisted:
            count, images = unlisted
            said.append(f"{self.name}: {count} of the {images} images in {name.removesuffix('.parquet')}/ "
                        f"are not hash-checked: {name} lists no row for them and no .json is beside them "
                        "(img2dataset wrote the image, then failed both, as it does on a caption of bytes)")
        return said

    def _kept_as_downloaded(self, parquet: str, row: dict[str, Any] | None) -> bool:
        """Whether the first image img2dataset decoded in this shard (`row`,
        `ListingNotes.decoded_row`) is stored as downloaded (its bytes have the recorded hash:
        `--skip_reencode True` kept a file already in its format, or a hand-made listing): then its
        decoding is no evidence of re-encoding and nothing is warned."""
        import pyarrow as pa

        try:
            recorded = {**row, "width": None} if row else None
            if recorded is None or recorded_hash(recorded) is None:
                return False
            data = self._stored_image(parquet, row)
        except (OSError, ValueError, EOFError, tarfile.TarError, fsio.FileTooLarge, pa.ArrowException) as exc:
            raise_machine_error(exc, parquet)  # too many open files: never a false 're-encoded' warning
            return False  # unreadable: its unit says why
        return data is not None and hash_problem(recorded, data, "") is None

    def _stored_image(self, parquet: str, row: dict[str, Any]) -> bytes | None:
        """The image bytes a shard stores for `row`: in the parquet itself, its `NNNNN/` folder, or
        its tar (read from the start: img2dataset writes the tar in the parquet's row order)."""
        column = next((c for c in row if c in STORED_IMAGE_NAMES and isinstance(row[c], bytes)), None)
        if column:
            return row[column]
        base, key = parquet.removesuffix(".parquet"), str(row.get("key"))
        folder = [f for f in fsio.list_files(base) if split_member(fsio.basename(f))[0] == key] \
            if fsio.isdir(base) else []
        images = _image_members({split_member(fsio.basename(f))[1]: f for f in folder})
        if images:
            return fsio.read_bytes(next(f for f in folder if split_member(fsio.basename(f))[1] == images[0]),
                                   MAX_INPUT_FILE_BYTES)
        tar_uri = next((base + suffix for suffix in TAR_SUFFIXES if fsio.exists(base + suffix)), None)
        if tar_uri is None:
            return None
        with fsio.open_file(tar_uri) as handle, open_tar(handle, "r|*") as tar:
            for count, info in enumerate(tar):
                stem, ext = split_member(info.name)
                if stem == key and ext in IMAGE_EXTENSIONS and info.isfile() and info.size <= MAX_INPUT_FILE_BYTES:
                    extracted = tar.extractfile(info)
                    return extracted.read() if extracted is not None else None
                if count > 64:
                    return None
        return None
