"""Web images: img2dataset outputs (webdataset tars, parquet + files, parquet with the images) and
plain image folders.

img2dataset writes, per shard NNNNN: `NNNNN.tar` holding `{key}.jpg`, `{key}.txt` (caption),
`{key}.json` (url, key, sizes...), or with `output_format=files` a folder `NNNNN/` with the same
files, or with `output_format=parquet` only `NNNNN.parquet` with the image bytes in a column; and
always `NNNNN.parquet` (one row per attempted URL with its status) and `NNNNN_stats.json`.

Nothing vanishes: failed downloads are rejects, every sample the parquet lists as a success but
the (possibly cut) archive lacks is a `missing_from_archive` reject, a key seen twice is a
`duplicate_key` reject (a member `tar -r` appended again replaces its first copy, as extracting
the tar does: that copy is a `duplicate_member` reject), non-regular tar members are rejects, a
member of a sample that is neither
its image nor its `.txt`/`.json` (a `000.npy`: img2dataset writes none) is an `unexpected_file`
reject, and in a plain folder every file
is an image record (the decoder decides: AVIF and HEIC decode, SVG and a camera raw such as
a DNG or CR2 are `unsupported_format`, never the raw's small preview) or,
for a caption without its image, a reject; what photo tools write beside each photo (an `.xmp`,
Apple Photos' `.AAE`, Google Takeout's `x.jpg.json`) is a `metadata_sidecar` reject, never read; a link leading out of the root, in any layout, is an
`outside_root` reject and is never opened; a file beside the shards that is neither a shard nor a
listing (a `.tar.xz`, a `.zip`) is an `unexpected_file` reject. What operating systems, copies and
tools leave (a Mac's `._x.jpg` beside every file or inside a tar it made, `.DS_Store`, `__MACOSX/`,
`Thumbs.db`, `@eaDir/`; an editor's `.~lock.x#`, `.git/`), in any layout, is one `os_metadata` or
`hidden_file` reject per file or folder (`sources.paths.set_aside`): never opened, never an image
the decoder fails, never a sample or a shard. Tars (`.tar`, or gzipped `.tar.gz`/`.tgz` as webdataset
reads them) are read as streams (never a whole shard in memory); too many open files or no memory
reading one is the machine's `MachineError` (the unit fails uncommitted), never the shard's
`corrupt_archive`. img2dataset's metadata (every
parquet column and `.json` field) rides along in the sentence header under `img2dataset`.
`output_format=tfrecord` is refused by name (`refuse_tfrecords`) before a build starts.

A Hugging Face `datasets` repo's parquet files (`format: huggingface`, `sources.hf_parquet`: an
`Image` struct column) are read row by row, one unit per file (an image file a row's path names is
that row's; the other files are rejects, `FOLDER_FILES_PER_UNIT` to a unit), each row group judged by the size
its footer declares before it is read (img2dataset's parquet likewise); a held-out split's rows
(validation, test) go to `val`; a repo card's `configs:` (`sources.hf_card`) gives the splits and
the files of the config built, another config's file is an `other_hf_config` reject (without one,
so is a file the default pattern set the repo loads by leaves out: `hf_parquet.pattern_set`). A `save_to_disk` folder is refused by name (`refuse_saved_datasets`).

A folder with a `metadata.jsonl` or `metadata.csv` is a Hugging Face ImageFolder
(`sources.imagefolder`): each image takes the row naming it (caption, other columns, the split its
folders or its own give), one unit per metadata file reports its bad rows, and an image no row of
a metadata file in its folder or above names is an `unlisted_image` reject, as `datasets` leaves it
out; one with no metadata file there is a plain image.

`LaionSource` is built of: `sources.web_format` (which layout a folder is), `sources.web_units` (the
units it is cut into, a big tar's parts), `sources.img2dataset_listing` (the shards and listings
img2dataset writes, what they say), `sources.img2dataset_notices` (what img2dataset did to the
images it stored) and `sources.web_samples` (what a sample is made of, its lineage).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from sources import fsio, hf_card, hf_parquet, imagefolder
from sources.paths import (OutsideRoot, collapse_set_aside, join_inside, path_problem, set_aside, set_aside_problem,
                           relative_to_root)
from sources.records import (FOLDER_FILES_PER_UNIT, FOLDER_UNIT_MOST, SourceItem, data_key, nfc, units_cut_by_name,
                             path_key, raise_machine_error)
from sources.img2dataset_listing import BAD_PARQUET, parquet_problem, shard_of, stray_files
from sources.web_format import LaionFormat, first_schema, refuse_saved_datasets, refuse_tfrecords
from sources.web_samples import IMAGE_EXTENSIONS, SIDECARS, TOOL_SIDECARS, folder_groups
from sources.web_units import TAR_SUFFIXES, Unit, tar_units
from sources.hf_repo_reader import HfRepoReader
from sources.web_folder import FOLDER_KINDS, FolderReader
from sources.web_metadata import MetadataReader
from sources.web_notices import Img2datasetNotices
from sources.img2dataset_reader import Img2datasetReader
# helpers moved out of this module under public names, called here by their old private ones
from sources.img2dataset_listing import data_dirs as _data_dirs, is_shard_name as _is_shard_name
from sources.web_samples import ext_of as _ext_of, stem_of as _stem_of
# moved out of this module, still importable from here (unused here); the tar-part sizes are not:
# patch them where tar_units reads them (`sources.web_units`)
from sources.img2dataset_listing import HASH_COLUMNS, LISTING_SUFFIXES, PYTHON_FILE_READ  # noqa: F401
from sources.img2dataset_notices import LISTING_NOTICE_COLUMNS  # noqa: F401
from sources.web_samples import LABEL_MEMBERS  # noqa: F401
from sources.web_units import COMPRESSED_TAR_SUFFIXES, owns_key  # noqa: F401
from sources.web_format import detect_format  # noqa: F401
from sources.img2dataset_listing import ShardListing  # noqa: F401


@dataclass(frozen=True)
class LaionSource(FolderReader, MetadataReader, HfRepoReader, Img2datasetReader, Img2datasetNotices):
    name: str
    path: str
    format: LaionFormat = "auto"
    follow_links: bool = False  # read shards, folders and files that are links leading out of `path`
    image_column: str | None = None  # a `datasets` parquet's Image column (None: its only one)
    caption_column: str | None = None  # a `datasets` parquet's caption (None: `hf_parquet.CAPTION_COLUMNS`)
    hf_config: str | None = None  # the config of a `datasets` repo's card to build (None: its default)

    def units(self) -> list[Unit]:
        fmt = self.resolved_format()
        if fmt == "webdataset":
            files = fsio.list_files(self.path, links=True)
            tars = [f for f in files if _is_shard_name(f)]
            if not tars:
                raise FileNotFoundError(f"{self.name}: no {', '.join(TAR_SUFFIXES)} shards in {self.path}")
            return [part for t in tars for part in tar_units(t, self.path)] + self._strays(
                files, tars, [shard_of(t)[1] for t in tars])
        if fmt == "files":
            folders = _data_dirs(self.path)
            return [Unit("files", (d,), self.path) for d in folders] + self._strays(
                fsio.list_files(self.path, links=True), [], folders)
        if fmt == "parquet":
            files = fsio.list_files(self.path, links=True)
            shards = [f for f in files if f.endswith(".parquet") and not set_aside(fsio.basename(f))]
            if not shards:
                raise FileNotFoundError(f"{self.name}: no .parquet shards in {self.path}")
            return [Unit("parquet", (p,), self.path) for p in shards] + self._strays(
                files, shards, [p.removesuffix(".parquet") for p in shards])
        # folder links walked with `follow_links` (else listed: `outside_root`), loops listed: `link_loop`
        files = collapse_set_aside(self.path, fsio.list_files(self.path, recursive=True, follow_links=self.follow_links,
                                                              links=True))
        if fmt == "huggingface":
            return self._hf_units(files)
        if self.format == "auto":
            refuse_tfrecords(self.name, self.path, files)
            refuse_saved_datasets(self.name, self.path, files)
        metadata = [f for f in files if imagefolder.is_metadata(f) and not set_aside_problem(self.path, f)]
        # with a card's configs, each image's split from there; the card a unit of its own
        card = self._folder_card()
        cards = [f for f in files if card and relative_to_root(self.path, f) == hf_card.CARD]
        files = [f for f in files if f not in metadata and f not in cards]
        groups = folder_groups(files, self.path)
        if not any(_ext_of(relative_to_root(self.path, u)) not in (*SIDECARS, *TOOL_SIDECARS)
                   and not set_aside_problem(self.path, u)
                   for g in groups for u in g):
            raise FileNotFoundError(f"{self.name}: no images under {self.path}")
        if metadata:
            self._check_caption_column(metadata[0])
        splits = "card" if card else "split" if self._split_layout(files) else ""  # folders' split names read
        kind = FOLDER_KINDS[bool(metadata), splits]  # with metadata, each image takes its row
        units = [Unit("metadata_card" if card else "metadata", (m,), self.path) for m in metadata] + [
            Unit("card", (c,), self.path) for c in cards]
        # this module's constants passed, as read now (a test sets them on this module)
        chunks = units_cut_by_name(groups, lambda group: nfc(_stem_of(relative_to_root(self.path, group[0]))),
                                   FOLDER_FILES_PER_UNIT, FOLDER_UNIT_MOST)
        return units + [Unit(kind, chunk, self.path) for chunk in chunks]

    def _split_layout(self, files: list[str]) -> bool:
        """Whether the folder's split names are a split layout as `datasets` splits one: an image in
        a train folder (`train/`, `data/training/`) beside the held-out ones, or every image in a
        split's folder (`validation/`, `test/`). A photo collection's `holidays/test shots/`,
        `projects/dev/` or `cameras/eval 2023/` among others is no split: `split.val_fraction` splits it."""
        named = [hf_parquet.folder_split(nfc(relative_to_root(self.path, f))) for f in files
                 if _ext_of(relative_to_root(self.path, f)) in IMAGE_EXTENSIONS]
        return "train" in named or bool(named) and None not in named

    def _hf_units(self, files: list[str]) -> list[Unit]:
        """One unit per parquet file of a `datasets` layout, found anywhere under the root, and the
        other files (the dataset card `README.md`, a `.gitattributes`, an image no row names: each
        a reject) in units of `FOLDER_FILES_PER_UNIT`. An image file a row's path names is that
        row's (`_hf_claimed`): built by the parquet's unit, in no other unit."""
        shards = [f for f in files if f.lower().endswith(".parquet") and not set_aside_problem(self.path, f, False)]
        if not shards:
            refuse_saved_datasets(self.name, self.path, files)
            raise FileNotFoundError(f"{self.name}: no .parquet files under {self.path}")
        shards = self._in_config(shards)
        first = first_schema(self.path, shards, self.follow_links)
        if first is not None:  # else each unit says why it is not read
            self._hf_columns(first[1], fsio.basename(first[0]), config_error=True)
        others = [f for f in files if f not in shards]
        images = {nfc(relative_to_root(self.path, f)) for f in others
                  if _ext_of(relative_to_root(self.path, f)) in IMAGE_EXTENSIONS}
        claimed = self._hf_claimed(shards, images) if images else set()
        others = [f for f in others if nfc(relative_to_root(self.path, f)) not in claimed]
        return [Unit("hf_parquet", (p,), self.path) for p in shards] + [
            Unit("hf_other", tuple(others[i:i + FOLDER_FILES_PER_UNIT]), self.path)
            for i in range(0, len(others), FOLDER_FILES_PER_UNIT)]

    def _in_config(self, shards: list[str]) -> list[str]:
        """The parquet files of the card's built config (`hf_card`: all without a card's configs);
        a card that cannot be read, or no config to build, stops the build naming the field."""
        try:
            splits = hf_card.file_splits(self.path, [relative_to_root(self.path, s) for s in shards], self.hf_config)
            kept = [s for s, split in zip(shards, splits) if split]
        except hf_card.CardError as exc:
            raise ValueError(f"{self.name}: {exc} (format: huggingface; field hf_config)") from None
        self._check_split_names(shards, splits)
        if not kept:
            config = hf_card.card_config(self.path, self.hf_config)
            if config is None:  # no card's configs: `datasets` loads every data file, so none is one
                example = relative_to_root(self.path, shards[0])
                raise FileNotFoundError(f"{self.name}: no .parquet file under {self.path} is loaded by default (as "
                                        f"datasets has it): each lies in a folder named __x or .x ({example!r}), "
                                        "never loaded without a card's data_files naming it; move the files out "
                                        "of that folder, or set path to the folder (format: huggingface)")
            raise FileNotFoundError(f"{self.name}: no .parquet file under {self.path} is a data file of config "
                                    f"{config.name!r} of its {hf_card.CARD} (format: huggingface; "
                                    "field hf_config): set hf_config to a config of the card whose data_files name "
                                    "parquet files there, or fix the card's data_files")
        return kept

    def _check_split_names(self, shards: list[str], splits: list[str | None]) -> None:
        """Stop the build at a file whose name gives a split `datasets` refuses (`data/my-train-00000-
        of-00001.parquet`: "Split name should match ..."); it was trained on as another split."""
        bad = next(((s, split) for s, split in zip(shards, splits)
                    if split and not hf_parquet.SPLIT_NAME.fullmatch(split)), None)
        if bad:
            raise ValueError(f"{self.name}: {relative_to_root(self.path, bad[0])} names split {bad[1]!r}, no split "
                             "name datasets takes (letters, digits and _, parts joined by dots: test_2017, "
                             "test.v2): datasets refuses the repo; rename the file (format: huggingface)")

    def _hf_claimed(self, shards: list[str], images: set[str]) -> set[str]:
        """Those of `images` (paths under the root, in NFC) a row of a parquet names: only each
        file's `path` leaf is read, and only the names among `images` are kept (memory stays that
        of the listing). A parquet not read here (a link out, damaged, without its Image column)
        claims nothing: its unit says why, and the images are rejects of their own."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        claimed: set[str] = set()
        for uri in shards:
            if path_problem(self.path, uri, self.follow_links):
                continue
            try:
                with fsio.open_file(uri) as handle:
                    parquet = pq.ParquetFile(handle, pre_buffer=False)
                    image, _ = self._hf_columns(parquet.schema_arrow, fsio.basename(uri))
                    for named in hf_parquet.named_paths(parquet, image):
                        relative = self._inside(named)
                        if relative in images:
                            claimed.add(relative)
            except hf_parquet.MissingColumns:
                continue
            except (OSError, ValueError, pa.ArrowException) as exc:
                raise_machine_error(exc, uri)
        return claimed

    def _inside(self, named: str) -> str | None:
        """The path under the root (in NFC) of a file a row names, None for one out of it."""
        try:
            return nfc(relative_to_root(self.path, join_inside(self.path, named)))
        except OutsideRoot:
            return None

    def _strays(self, files: list[str], shards: list[str], bases: list[str]) -> list[Unit]:
        """A unit (one reject) for each file beside the shards that is none (`stray_files`), and
        for each folder there an operating system or a tool left (`__MACOSX/`, `@eaDir/`, `.git/`)."""
        folders = [d for d in fsio.list_dirs(self.path, links=True) if set_aside(fsio.basename(d))]
        return [Unit("stray", (f,), self.path) for f in stray_files(files, shards, bases) + folders]

    def read(self, unit: Unit) -> Iterator[SourceItem]:
        if unit.kind == "stray":
            name = fsio.basename(unit.uris[0])
            key = data_key(self.name, name)
            aside = self._set_aside(lambda: key, self.path, unit.uris[0])
            if aside:
                yield aside
                return
            yield self._reject(key, "read", "unexpected_file",
                               f"{name} is neither an img2dataset shard (NNNNN{', NNNNN'.join(TAR_SUFFIXES)}; "
                               f"NNNNN/ or NNNNN.parquet of output_format files or parquet) nor the listing of "
                               f"one (NNNNN.parquet, NNNNN_stats.json beside it): not read", where=self._at(unit.uris[0]))
        elif unit.kind == "tar":
            items = self._read_tar(unit.uris[0], unit.owns if unit.parts > 1 else None)
            yield from items if unit.parts == 1 else (item for item in items if unit.owns(item.key))
        elif unit.kind == "files":
            yield from self._read_files(unit.uris[0])
        elif unit.kind in ("parquet", "hf_parquet"):
            yield from self._read_parquet(unit.uris[0], unit.kind == "hf_parquet")
        elif unit.kind == "hf_other":
            yield from (self._hf_other(uri) for uri in unit.uris)
        elif unit.kind == "card":
            yield self._reject(path_key(self.name, hf_card.CARD), "read", "unexpected_file",
                               f"{hf_card.CARD} is the dataset card: its configs give the splits, it is no image",
                               where=self._at(unit.uris[0]) if unit.uris else hf_card.CARD)
        elif unit.kind in ("metadata", "metadata_card"):
            yield from self._read_metadata(unit.uris[0], unit.kind == "metadata_card")
        else:
            yield from self._read_folder(unit)

    # -- img2dataset output_format=parquet, Hugging Face datasets parquet ---------------
    def _read_parquet(self, uri: str, hf: bool = False) -> Iterator[SourceItem]:
        """Images inside the parquet (img2dataset `output_format=parquet`, or a `datasets` Image
        column with `hf`), read a batch at a time, each row group judged by its declared size
        first; a damaged one is a `bad_parquet` reject after the rows read before the damage."""
        import pyarrow as pa

        shard = nfc(relative_to_root(self.path, uri)).removesuffix(".parquet") if hf else \
            fsio.basename(uri).removesuffix(".parquet")
        problem = path_problem(self.path, uri, self.follow_links)
        if problem:  # a link out of the root, or a fifo: never opened
            yield self._reject(self._shard_key(shard), "read", problem.reason, problem.detail, where=self._at(uri))
            return
        try:
            yield from self._hf_items(uri, shard) if hf else self._parquet_items(uri, shard)
        except (OSError, ValueError, pa.ArrowException) as exc:  # damaged, or cut by a killed download
            raise_machine_error(exc, uri)  # too many open files, no memory: the machine's
            yield self._reject(self._shard_key(shard), "read", BAD_PARQUET,
                               parquet_problem(uri, exc, "its rows after the last one read are unknown"),
                               where=self._at(uri))
