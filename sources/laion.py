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
listing (a `.tar.xz`, a `.zip`, a folder not named in digits as img2dataset names a files shard) is
an `unexpected_file` reject; img2dataset's work folder `_tmp/` of a download killed or still running
is one `unfinished_download` reject naming the shards not ended (alone too: never images), whose
half-written files are left out (`unfinished_shard_files`). What operating systems, copies and
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
(validation, test) go to `val`; a Hub cache snapshot is read in place (`sources.hub_cache`: its
links to the cache's blobs are inside the root, its rows' `hf://` paths its files); a repo card's `configs:` (`sources.hf_card`) gives the splits and
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
images it stored) and `sources.web_samples` (what a sample is made of, its lineage); and of the
readers it derives from, each of one job: `sources.web_unit_plan` (its `units`),
`sources.img2dataset_reader` (img2dataset's shards), `sources.hf_repo_reader` (a `datasets`
repo's parquet rows), `sources.web_folder` (an image folder's slices), `sources.web_metadata` (an
ImageFolder's metadata files), `sources.web_card` (what a dataset card says of a file),
`sources.web_notices` (its warnings) and `sources.web_reader` (what they share). This module
picks the reader of each unit (`LaionSource.read`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from sources import fsio, hf_card
from sources.img2dataset_listing import (BAD_PARQUET, UNFINISHED_DOWNLOAD, WORK_FOLDER, parquet_problem, unfinished_detail,
                                         unfinished_shard_files, unfinished_shards)
from sources.img2dataset_reader import Img2datasetReader
from sources.paths import path_problem, relative_to_root
from sources.records import SourceItem, data_key, nfc, path_key, raise_machine_error
from sources.web_folder import FolderReader
from sources.web_format import LaionFormat
from sources.web_notices import Img2datasetNotices
from sources.web_unit_plan import UnitPlanner
from sources.web_units import TAR_SUFFIXES, Unit
# moved out of this module, still importable from here (unused here); the tar-part sizes and the
# folder unit sizes are not: patch them where they are read (`sources.web_units`, `sources.web_unit_plan`)
from sources.img2dataset_listing import HASH_COLUMNS, LISTING_SUFFIXES, PYTHON_FILE_READ, ShardListing  # noqa: F401
from sources.img2dataset_notices import LISTING_NOTICE_COLUMNS  # noqa: F401
from sources.web_folder import FOLDER_KINDS  # noqa: F401
from sources.web_format import detect_format  # noqa: F401
from sources.web_samples import LABEL_MEMBERS  # noqa: F401
from sources.web_units import COMPRESSED_TAR_SUFFIXES, owns_key, tar_units  # noqa: F401


@dataclass(frozen=True)
class LaionSource(UnitPlanner, FolderReader, Img2datasetReader, Img2datasetNotices):
    name: str
    path: str
    format: LaionFormat = "auto"
    follow_links: bool = False  # read shards, folders and files that are links leading out of `path`
    image_column: str | None = None  # a `datasets` parquet's Image column (None: its only one)
    caption_column: str | None = None  # a `datasets` parquet's caption (None: `hf_parquet.CAPTION_COLUMNS`)
    hf_config: str | None = None  # the config of a `datasets` repo's card to build (None: its default)

    def read(self, unit: Unit) -> Iterator[SourceItem]:
        if unit.kind == "stray":
            name = fsio.basename(unit.uris[0])
            key = data_key(self.name, name)
            aside = self._set_aside(lambda: key, self.path, unit.uris[0])
            if aside:
                yield aside
                return
            unfinished = unfinished_shards(self.path) if name == WORK_FOLDER else None
            if unfinished:  # a download killed, or still running: shards to come, theirs half-written left out
                folders = fsio.list_dirs(self.path, links=True)
                left = unfinished_shard_files(fsio.list_files(self.path, links=True) + folders, unfinished)
                shown = [self._at(f) + "/" * (f in folders) for f in left]
                yield self._reject(key, "read", UNFINISHED_DOWNLOAD, unfinished_detail(unfinished, shown),
                                   where=self._at(unit.uris[0]))
                return
            yield self._reject(key, "read", "unexpected_file",
                               f"{name} is neither an img2dataset shard (NNNNN{', NNNNN'.join(TAR_SUFFIXES)}; "
                               f"NNNNN/ or NNNNN.parquet of output_format files or parquet) nor the listing of "
                               f"one (NNNNN.parquet, NNNNN_stats.json beside it): not read", where=self._at(unit.uris[0]))
        elif unit.kind == "tar":
            items = self._read_tar(unit.uris[0], unit.owns if unit.parts > 1 else None)
            # by group: the images of one sample (`sample_pictures`) are its part's, keyed each their own
            yield from items if unit.parts == 1 else (item for item in items if unit.owns(item.group))
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
