"""How a web source's input is planned into units, before anything is read: which layout it is,
its shards (a big tar in parts) and the files beside them that are none, a `datasets` repo's
parquet files of the built config and the image files their rows claim, an image folder's
metadata files and its slices (`FOLDER_FILES_PER_UNIT` files on average, a sample's files
together); configuration the build cannot go on with is refused here, naming the field."""

from __future__ import annotations

from sources import fsio, hf_card, hf_parquet, hub_cache, imagefolder
from sources.hf_repo_reader import HfRepoReader
from sources.img2dataset_listing import (WORK_FOLDER, data_dirs as _data_dirs, is_shard_name as _is_shard_name, shard_of,
                                         stray_files, unfinished_detail, unfinished_shard_files, unfinished_shards)
from sources.parquet_columns import ParquetColumns, unread_parquet_detail
from sources.paths import (OutsideRoot, collapse_set_aside, path_problem, relative_to_root, set_aside,
                           set_aside_problem)
from sources.records import FOLDER_FILES_PER_UNIT, FOLDER_UNIT_MOST, nfc, raise_machine_error, units_cut_by_name
from sources.web_folder import FOLDER_KINDS
from sources.web_format import first_schema, refuse_saved_datasets, refuse_tfrecords, schemas_read_once
from sources.web_metadata import MetadataReader
from sources.web_samples import (IMAGE_EXTENSIONS, SIDECARS, TOOL_SIDECARS, ext_of as _ext_of, folder_groups,
                                 stem_of as _stem_of)
from sources.web_units import TAR_SUFFIXES, Unit, tar_units


class UnitPlanner(MetadataReader, HfRepoReader):
    """A web source's `units` (it checks an ImageFolder's caption column and a `datasets` file's
    columns as the readers it derives from read them)."""

    def units(self) -> list[Unit]:
        with schemas_read_once():  # the layout's detection and a `datasets` file's columns: one footer read
            return self._planned_units()

    def _planned_units(self) -> list[Unit]:
        cache_repo = hub_cache.repo_folder_problem(self.path)
        if cache_repo:
            raise FileNotFoundError(f"{self.name}: {cache_repo}")
        fmt = self.resolved_format()
        if fmt in ("webdataset", "files", "parquet"):
            # the shards img2dataset is still writing (a killed or running download): left out,
            # named by the one `unfinished_download` reject of its `_tmp/`, never built half-written
            unfinished = unfinished_shards(self.path)
            listed = fsio.list_files(self.path, links=True)
            left = set(unfinished_shard_files(listed + fsio.list_dirs(self.path, links=True), unfinished))
            files = [f for f in listed if f not in left]
        if fmt == "webdataset":
            tars = [f for f in files if _is_shard_name(f)]
            if not tars and not left:
                raise FileNotFoundError(f"{self.name}: no {', '.join(TAR_SUFFIXES)} shards in {self.path}"
                                        f"{self._unfinished_hint()}")
            return [part for t in tars for part in tar_units(t, self.path)] + self._strays(
                files, tars, [shard_of(t)[1] for t in tars], left_out=left)
        if fmt == "files":
            folders = [d for d in _data_dirs(self.path) if d not in left]
            return [Unit("files", (d,), self.path) for d in folders] + self._strays(
                files, [], folders, read_folders=folders, left_out=left)
        if fmt == "parquet":
            shards = [f for f in files if f.endswith(".parquet") and not set_aside(fsio.basename(f))]
            if not shards and not left:
                raise FileNotFoundError(f"{self.name}: no .parquet shards in {self.path}{self._unfinished_hint()}")
            return [Unit("parquet", (p,), self.path) for p in shards] + self._strays(
                files, shards, [p.removesuffix(".parquet") for p in shards], left_out=left)
        # folder links walked with `follow_links` (else listed: `outside_root`), loops listed: `link_loop`
        files = collapse_set_aside(self.path, fsio.list_files(self.path, recursive=True, follow_links=self.follow_links,
                                                              links=True))
        if fmt == "huggingface":
            return self._hf_units(files)
        if self.format == "auto":
            refuse_tfrecords(self.name, self.path, files)
            refuse_saved_datasets(self.name, self.path, files)
        work = self._work_folder()  # a download killed before any shard ended: one reject, never images
        if work:
            files = [f for f in files if not f.startswith(work + "/")]
            if not files:
                return [Unit("stray", (work,), self.path)]
        metadata = [f for f in files if imagefolder.is_metadata(f) and not set_aside_problem(self.path, f)]
        # with a card's configs, each image's split from there; the card a unit of its own
        card = self._folder_card()
        cards = [f for f in files if card and relative_to_root(self.path, f) == hf_card.CARD]
        files = [f for f in files if f not in metadata and f not in cards]
        groups = folder_groups(files, self.path)
        tables = self._unread_parquets(files)  # no images: said before the build when all there is
        if not any(_ext_of(relative_to_root(self.path, u)) not in (*SIDECARS, *TOOL_SIDECARS)
                   and not set_aside_problem(self.path, u) and u not in tables
                   for g in groups for u in g):
            said = [unread_parquet_detail(t, nfc(relative_to_root(self.path, t))) for t in tables[:1]]
            raise FileNotFoundError(f"{self.name}: no images under {self.path}{''.join(f' ({d})' for d in said)}")
        if metadata:
            self._check_caption_column(metadata[0])
        splits = "card" if card else "split" if self._split_layout(files) else ""  # folders' split names read
        kind = FOLDER_KINDS[bool(metadata), splits]  # with metadata, each image takes its row
        units = [Unit("metadata_card" if card else "metadata", (m,), self.path) for m in metadata] + [
            Unit("card", (c,), self.path) for c in cards] + [Unit("stray", (work,), self.path) for work in [work] if work]
        # this module's constants passed, as read now (a test sets them on this module)
        chunks = units_cut_by_name(groups, lambda group: nfc(_stem_of(relative_to_root(self.path, group[0]))),
                                   FOLDER_FILES_PER_UNIT, FOLDER_UNIT_MOST)
        return units + [Unit(kind, chunk, self.path) for chunk in chunks]

    def _unread_parquets(self, files: list[str]) -> list[str]:
        """The parquet files of a plain folder the folder reader opens to say what they hold
        (`FolderReader._unread_parquet`): no images, so a folder of nothing else (a table of image
        bytes under a column name no layout reads) is refused before the build, naming what the
        first holds (`unread_parquet_detail`), not built as one reject and no sentence. One linking
        out of the root stays its unit's `outside_root`."""
        return [f for f in files if _ext_of(relative_to_root(self.path, f)) == "parquet"
                and not set_aside_problem(self.path, f) and not path_problem(self.path, f, self.follow_links)]

    def _work_folder(self) -> str | None:
        """img2dataset's work folder `_tmp/` at the root, with the URL shards it planned: its files are
        no images (`N.feather`); the folder is one reject (`LaionSource.read`)."""
        return fsio.join(self.path, WORK_FOLDER) if unfinished_shards(self.path) is not None else None

    def _unfinished_hint(self) -> str:
        """What a folder without shards holds when it is a download that finished none yet."""
        return f" ({unfinished_detail(found)})" if (found := unfinished_shards(self.path)) else ""

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
            splits = hf_card.file_splits(self.path, [relative_to_root(self.path, s) for s in shards], self.hf_config,
                                          self.follow_links)
            kept = [s for s, split in zip(shards, splits) if split]
        except hf_card.CardError as exc:
            raise ValueError(f"{self.name}: {exc} (format: huggingface; field {exc.field})") from None
        self._check_split_names(shards, splits)
        if not kept:
            config = hf_card.card_config(self.path, self.hf_config, self.follow_links)
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

        claimed: set[str] = set()
        for uri in shards:
            if path_problem(self.path, uri, self.follow_links):
                continue
            try:
                with fsio.open_file(uri, read_ahead=False) as handle:
                    parquet = hf_parquet.open_parquet(handle, pre_buffer=False)
                    image, _ = self._hf_columns(ParquetColumns.of(parquet.schema_arrow), fsio.basename(uri))
                    for named in hf_parquet.named_paths(parquet, image, handle):
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
            return nfc(relative_to_root(self.path, self._named_file(named)))
        except OutsideRoot:
            return None

    def _strays(self, files: list[str], shards: list[str], bases: list[str],
                read_folders: tuple[str, ...] | list[str] = (), left_out: set[str] | frozenset[str] = frozenset()
                ) -> list[Unit]:
        """A unit (one reject) for each file beside the shards that is none (`stray_files`), and
        for each folder there that is not read (`read_folders`: the files layout's shard folders):
        one an operating system or a tool left (`__MACOSX/`, `@eaDir/`, `.git/`), img2dataset's
        `_tmp/`, any other, `00000/` beside `00000.tar` too (never read; a folder named as a
        shard's listing is that shard's reject). A shard img2dataset has not finished (`left_out`)
        is none: its `_tmp/` reject names it."""
        folders = [d for d in stray_files(fsio.list_dirs(self.path, links=True), shards, bases)
                   if d not in read_folders and d not in left_out]
        return [Unit("stray", (f,), self.path) for f in stray_files(files, shards, bases) + folders]
