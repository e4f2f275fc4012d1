"""ImageNet in the ILSVRC (CLS-LOC) layout, for class-grouped sentences.

Layout read (the Kaggle/LOC release; `val/<wnid>/` folders are accepted too):

    root/LOC_synset_mapping.txt         "n01440764 tench, Tinca tinca"
    root/LOC_val_solution.csv           "ImageId,PredictionString" ("n01440764 x0 y0 x1 y1 ...")
    root/train/<wnid>/<wnid>_<n>.JPEG
    root/val/ILSVRC2012_val_<8 digits>.JPEG

Kaggle's download keeps train/ and val/ three folders down, `root/ILSVRC/Data/CLS-LOC/`, with the
index files at its top: a root without the splits' folders but with that one is read as it lies.

Class archives are read in place, never extracted (ImageNet-21k is 1.1-1.3 TB of them): in
train/, a `<wnid>.tar` beside or instead of the `<wnid>/` folders (ILSVRC2012_img_train.tar's
outer tar extracted: `mkdir train && tar -xf ILSVRC2012_img_train.tar -C train`), or, in a root
holding no splits' folders, the `<wnid>.tar` at its top, as ImageNet-21k's winter21_whole/ lies,
read as the train split. Each archive is a unit (a big local one split into parts, as a web
shard: `sources.web_units.tar_units`), each member `<wnid>_<n>.JPEG` an image of class `<wnid>` with
the key and lineage it has extracted into `train/<wnid>/`, so that both build the same bytes.
A member is judged on its header before it is read: a folder or a member in one (`unexpected_file`:
read flat, as class folders are; `tar -C n0 .`'s leading `./` excepted), an OS's or tool's file,
a link or device (`not_a_file`), a non-image (`unexpected_file`; a `.tar` one says to extract
the outer tar only), a member named for another class (`wrong_class`: `n02_5.JPEG` in n01.tar,
a mixed-up archive), a stem already taken (`duplicate_key`; the first in the archive is read; by a
file of the `train/<wnid>/` folder beside it, that file is read), a copy of a name that
`tar -r`/`tar -u` appended again replaces (`duplicate_member`: the last copy is read, as
extracting keeps it),
more than 256 MiB (`member_too_large`, never read). A cut tar is a `truncated_sample` for the
member it cuts and one `corrupt_archive`, as is a file named `.tar` that is none, or one with a
header no tar tool writes (`sources.tar_members.CappedTarInfo`, the walk all three tar readers
share); the images before the cut are built. ILSVRC's own outer archives (`ILSVRC2012_img_*.tar`) are never read:
the refusal or their reject says how to extract them.

Each image becomes an `ImageRecord` carrying its wnid; grouping 16 images of a class into a
sentence happens later, after decoding, so that a broken file costs one image, not a sentence.
The official split of the layout (train/ vs val/) is kept as the record's split.

A key is the image's split, class and stem, joined one-to-one (`records.data_key`: a part holding
'-', `t-shirt/1.jpg` beside `t/shirt-1.jpg`, adds a digest; ILSVRC's names hold none): a second
image with a stem already taken (`x.JPEG` beside `x.png`) is a `duplicate_key` reject, and the unit
cut keeps same-stem files together so the clash is seen; a labelled flat val image whose stem its
class's `val/<wnid>/` folder holds too is one, that folder's file read. Keys are distinct up to
hostile names: `train/a b/1.jpg` and `train/a_b/1_9ccafe8f.jpg` share one (`records.data_key`), and
those units meet in dedup (each decided by its own pixels) and assembly. The lineage's `file` is the image's path
under the splits' folder (`train/<wnid>/<name>`, as an archive's member extracts). An image lying
directly in train/ beside class folders is a `missing_label` reject: LOC_val_solution.csv labels
val images alone; a train/ of images and no class folder or archive is refused (sort it first).
Class folders are read flat: a folder inside one (or a link to a folder) is an `unexpected_file`
reject, never descended into and never skipped silently. What an operating system leaves in the
folders it touches (`.DS_Store`, `Thumbs.db`, a Mac's AppleDouble `._x.JPEG` beside every image,
a zip's `__MACOSX/`) is an `os_metadata` reject, and any other hidden file or folder (an editor's
`.~lock.x#`, `.git/`) a `hidden_file` one (`sources.paths.set_aside`), unread: not a broken image,
nor a val image without a label, and no reason to need LOC_val_solution.csv.

When val/ holds flat images, LOC_val_solution.csv is the val set's index: an image it lists
that val/ lacks (a cut download or extraction) is a `missing_image` reject (a unit of its own,
the CSV's), as a row of any other index would be. Without the CSV, the official devkit
(ILSVRC2012_devkit_t12.tar.gz unpacked beside val/) is that index, read as torchvision reads it:
line n of data/ILSVRC2012_validation_ground_truth.txt is ILSVRC2012_val_<n>'s ILSVRC2012_ID, which
data/meta.mat's leaf `synsets` (num_children 0, the 1,000 classes) map to a wnid (the .mat's size,
inflation and struct elements judged before scipy reads it).

Names are compared and keyed in Unicode NFC: a folder copied off a Mac names its files in NFD,
while the index files (and the same set stored elsewhere) say NFC.
"""

from __future__ import annotations

import csv
import functools
import io
import re
import tarfile
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from sources import fsio
from sources.annotation_files import MAX_ANNOTATION_BYTES, AnnotationFileError
from sources.mat_files import MatTooLarge, MatUnreadable, read_mat_variable
from sources.paths import NOT_A_FILE, path_problem, relative_to_root, set_aside, set_aside_problem, shown_name
from sources.records import (MAX_INPUT_FILE_BYTES, ImageRecord, Reject, SourceItem, data_key, name_text, nfc,
                             read_input_bytes, units_cut_by_name)
from sources.tar_members import (DUPLICATE_MEMBER, MEMBER_TOO_LARGE, member_bytes, member_too_large, member_type,
                                 read_members)
from sources.web_units import owns_key, tar_units
from transforms.errors import exception_detail

SYNSET_FILE = "LOC_synset_mapping.txt"
VAL_LABELS_FILE = "LOC_val_solution.csv"
DEVKIT_DATA = "ILSVRC2012_devkit_t12/data"  # the official devkit, unpacked beside val/
DEVKIT_GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"  # line n: ILSVRC2012_val_<n>'s ILSVRC2012_ID
DEVKIT_META = "meta.mat"  # synsets: ILSVRC2012_ID -> WNID (the devkit's is 1,860 synsets, 0.4 MB)
MAX_DEVKIT_META_BYTES, MAX_DEVKIT_META_INFLATED = 16 << 20, 64 << 20
# the cells and fields scipy makes of `synsets` (1,860 x 1 of 8 fields: 16,741): 200k is about 34 MiB
MAX_DEVKIT_META_OBJECTS = 200_000
DEVKIT_FIX = "re-extract data/meta.mat from ILSVRC2012_devkit_t12.tar.gz"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
VAL_LABELS_HEADER = ("ImageId", "PredictionString")
KAGGLE_IMAGES = ("ILSVRC", "Data", "CLS-LOC")  # where Kaggle's download keeps train/, val/ and test/
ARCHIVE_SUFFIX = ".tar"  # a class archive, `<wnid>.tar`, read in place
WRONG_CLASS = "wrong_class"  # a class archive's member named for another class (`n02_5.JPEG` in n01.tar)
# a Hugging Face ImageFolder's held-out split folders (`datasets`' split keywords): each holding class
# folders is read as `val` (ILSVRC's flat `test/` holds none); without `val/`, the first is its folder
HELD_OUT_FOLDERS = ("validation", "valid", "dev", "test", "testing", "eval", "evaluation")
MAX_SHOWN_NAME = 300  # what a reject's detail (cut to 300 characters) can show of a name a key holds
_WNID_PREFIX = re.compile(r"(n\d{8})_")  # ImageNet's names: `<wnid>_<n>.JPEG`, a wnid `n` and 8 digits


def _is_outer_archive(name: str) -> bool:
    """ILSVRC's own downloads (`ILSVRC2012_img_train.tar`, `_val`, `_test`): a tar of class
    archives or of flat images, never one class's archive."""
    return name.upper().startswith("ILSVRC")


def _is_class_archive(uri: str) -> bool:
    """`<class>.tar`: one class's images, as ILSVRC2012_img_train.tar and ImageNet-21k hold them."""
    name = fsio.basename(uri)
    return name.lower().endswith(ARCHIVE_SUFFIX) and not set_aside(name) and not _is_outer_archive(name)


def _img2dataset_listing(archives: list[str], files: list[str]) -> str | None:
    """The `<shard>_stats.json` img2dataset writes beside one of `archives`, if any: that folder is
    a web-image download (`type: laion`), whose `00000.tar` shards would pass for `<wnid>.tar` class
    archives, each shard a "class" of unrelated images."""
    names = {fsio.basename(f) for f in files}
    for uri in archives:
        listing = fsio.basename(uri)[: -len(ARCHIVE_SUFFIX)] + "_stats.json"
        if listing in names:
            return listing
    return None


def _is_image_name(uri: str) -> bool:
    return uri.lower().endswith(IMAGE_SUFFIXES) and not set_aside(fsio.basename(uri))


def _needs_labels(unit: Unit) -> bool:
    """Whether the unit holds flat val images, labelled by LOC_val_solution.csv. The CSV labels no
    train image: one lying directly in train/ is a `missing_label` reject, with or without it."""
    return unit.split == "val" and unit.wnid is None and any(_is_image_name(uri) for uri in unit.uris)


def _stem(uri: str) -> str:
    return nfc(fsio.basename(uri).rsplit(".", 1)[0])


def _stem_groups(files: list[str]) -> list[list[str]]:
    """`files` (sorted) in groups of the files sharing a stem, in the order of the first of each:
    one file a group when every stem is unique."""
    by_stem: dict[str, list[str]] = {}
    for uri in files:
        by_stem.setdefault(_stem(uri), []).append(uri)
    return list(by_stem.values())


def _flat_chunks(files: list[str]) -> list[tuple[str, ...]]:
    """A flat folder's files in units of about `records.FOLDER_FILES_PER_UNIT`, ended by the names
    (`records.units_cut_by_name`: one file added moves no other file's unit), never between files
    that share a stem, so that a key clash falls inside one unit."""
    return units_cut_by_name(_stem_groups(files), lambda same: _stem(same[0]))


@dataclass(frozen=True)
class Unit:
    split: str
    wnid: str | None  # set for class folders and archives; None for the flat val folder
    uris: tuple[str, ...]
    archive: bool = False  # `uris` is one class archive, `<wnid>.tar`, read in place (or one of its `parts`)
    part: int = 0
    parts: int = 1
    folder: str = ""  # a further held-out folder read as `val` (`test/` beside `validation/`): its keys' place

    def __repr__(self) -> str:  # a folder's unit keeps the name (`unit_store.unit_id`) it always had
        split = f", archive=True, part={self.part}, parts={self.parts}" if self.archive else ""
        folder = f", folder={self.folder!r}" if self.folder else ""
        return f"Unit(split={self.split!r}, wnid={self.wnid!r}, uris={self.uris!r}{split}{folder})"

    @property
    def place(self) -> str:
        """The split's name in keys and details: the further held-out folder's own name (`test`),
        so that `validation/cat/1.png` and `test/cat/1.png` keep two keys."""
        return self.folder or self.split

    def owns(self, key: str) -> bool:
        """Whether an item of this unit's archive is this part's to yield (as `sources.web_units.Unit`)."""
        return owns_key(key, self.part, self.parts)


def _archive_units(split: str, uri: str, root: str) -> list[Unit]:
    """A class archive's units: one, or the parts of a big local tar, as a web shard's (`tar_units`)."""
    wnid = nfc(fsio.basename(uri)[: -len(ARCHIVE_SUFFIX)])
    return [Unit(split, wnid, (uri,), True, u.part, u.parts) for u in tar_units(uri, root)]


def _index_text(uri: str) -> str:
    """An index file's text, capped like any annotation file, decoding errors named not quoted. Too
    many open files reading it is this machine's `MachineError` (`read_input_bytes`): read in a
    unit, its OSError was the unit's `unit_failed` reject, every image of it lost for good."""
    try:
        data = read_input_bytes(uri, MAX_ANNOTATION_BYTES)
    except fsio.FileTooLarge:
        raise AnnotationFileError(uri, f"larger than {MAX_ANNOTATION_BYTES} bytes") from None
    try:  # utf-8-sig: Excel and many Windows tools start the file with a byte-order mark
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationFileError(uri, f"is not UTF-8 text (at byte {exc.start})") from None


@fsio.cached_input(maxsize=8)
def read_synsets(uri: str) -> dict[str, str]:
    """wnid -> human-readable class name, from LOC_synset_mapping.txt."""
    mapping: dict[str, str] = {}
    for line in _index_text(uri).splitlines():
        wnid, name = (line.split(None, 1) + ["", ""])[:2]  # a space, or words.txt's tab
        if wnid:
            mapping[nfc(wnid)] = name.strip()
    return mapping


def _devkit_ids(uri: str) -> dict[int, str]:
    """ILSVRC2012_ID -> WNID of the devkit's meta.mat `synsets`, its leaves alone (num_children 0:
    the 1,000 classes, as torchvision's parse_meta_mat keeps them), judged before scipy reads it."""
    try:
        data = read_input_bytes(uri, MAX_DEVKIT_META_BYTES)
    except fsio.FileTooLarge:
        raise AnnotationFileError(uri, f"is over {MAX_DEVKIT_META_BYTES >> 20} MiB (the devkit's is 0.4 MB)") from None
    except FileNotFoundError:
        raise AnnotationFileError(uri, "is not there: the devkit's ground truth names its synsets by ILSVRC2012_ID")
    try:
        synsets = read_mat_variable(data, "synsets", MAX_DEVKIT_META_INFLATED, MAX_DEVKIT_META_OBJECTS)
    except MatTooLarge as exc:
        raise AnnotationFileError(uri, f"is too large: {exc} (the devkit's: 1,860 synsets of 8 fields)") from None
    except MatUnreadable as exc:
        raise AnnotationFileError(uri, f"is {exc}; {DEVKIT_FIX}") from None
    try:
        return {int(s.ILSVRC2012_ID): nfc(str(s.WNID)) for s in np.atleast_1d(synsets) if int(s.num_children) == 0}
    except (AttributeError, TypeError, ValueError):
        raise AnnotationFileError(uri, "holds no synsets struct of ILSVRC2012_ID, WNID and num_children (the devkit's "
                                       f"data/meta.mat); {DEVKIT_FIX}") from None


def _devkit_val_labels(uri: str) -> dict[str, str]:
    """val image id -> wnid from the devkit: line n of its ground truth is ILSVRC2012_val_<n>'s id."""
    wnids = _devkit_ids(uri.rsplit("/", 1)[0] + "/" + DEVKIT_META)
    labels: dict[str, str] = {}
    for number, line in enumerate(_index_text(uri).splitlines(), 1):
        word = line.strip()
        if not word:
            continue
        wnid = wnids.get(int(word)) if word.isdigit() and len(word) < 10 else None
        if wnid is None:
            raise AnnotationFileError(uri, f"line {number}: {shown_name(word, 40)} is no ILSVRC2012_ID of {DEVKIT_META}")
        labels[f"ILSVRC2012_val_{number:08d}"] = wnid
    if not labels:
        raise AnnotationFileError(uri, "holds no line")
    return labels


@fsio.cached_input(maxsize=8)
def read_val_labels(uri: str) -> dict[str, str]:
    """val image id -> wnid: the first wnid of each PredictionString in LOC_val_solution.csv (or
    the devkit's, `_devkit_val_labels`, where `uri` is its ground truth)."""
    if fsio.basename(uri) == DEVKIT_GROUND_TRUTH:
        return _devkit_val_labels(uri)
    labels: dict[str, str] = {}
    reader = csv.DictReader(io.StringIO(_index_text(uri)))
    rows = 0
    try:
        _check_val_header(uri, reader.fieldnames)
        for rows, row in enumerate(reader, start=1):
            prediction = (row.get("PredictionString") or "").split()
            if row.get("ImageId") and prediction:
                labels[nfc(row["ImageId"])] = nfc(prediction[0])
    except csv.Error as exc:
        raise AnnotationFileError(uri, f"is not CSV (line {reader.line_num}: {type(exc).__name__})") from None
    if not labels:  # every val image would become a `missing_label` reject
        raise AnnotationFileError(uri, f"none of its {rows} rows has an ImageId and a PredictionString")
    return labels


def _check_val_header(uri: str, fieldnames: list[str] | None) -> None:
    """The CSV's header must name the layout's columns: any other header would read no label."""
    if fieldnames is None or not set(VAL_LABELS_HEADER) <= set(fieldnames):
        found = ",".join(fieldnames) if fieldnames else "nothing (empty file)"
        raise AnnotationFileError(uri, f"header is {shown_name(found)}, expected {','.join(VAL_LABELS_HEADER)}")


@dataclass(frozen=True)
class ImageNetSource:
    name: str
    path: str
    splits: tuple[str, ...] = ("train", "val")
    follow_links: bool = False  # read files and class folders that are links leading out of `path`

    @property
    def synsets_uri(self) -> str:
        return fsio.join(self.path, SYNSET_FILE)

    @property
    def val_labels_uri(self) -> str:
        """The flat val images' index: LOC_val_solution.csv, else the devkit's ground truth where it is there."""
        csv_uri = fsio.join(self.path, VAL_LABELS_FILE)
        devkit = fsio.join(self.path, *DEVKIT_DATA.split("/"), DEVKIT_GROUND_TRUTH)
        return devkit if not fsio.exists(csv_uri) and fsio.exists(devkit) else csv_uri

    @property
    def images_root(self) -> str:
        """The folder holding the splits' folders: `path`, or Kaggle's `path/ILSVRC/Data/CLS-LOC`
        when `path` holds none of them (the download's top, its index files beside `ILSVRC/`)."""
        kaggle = fsio.join(self.path, *KAGGLE_IMAGES)
        if not any(fsio.isdir(fsio.join(self.path, split)) for split in self.splits) and fsio.isdir(kaggle):
            return kaggle
        return self.path

    def split_dir(self, split: str) -> str:
        """The folder of a split: `train/`, `val/`; without `val/`, the first of a Hugging Face
        ImageFolder's held-out folders (`HELD_OUT_FOLDERS`: `validation/`, `test/`...) holding class
        folders, as `datasets` names an ImageFolder's splits (`train/cat/1.jpg`, `test/cat/2.jpg`)."""
        folder = fsio.join(self.images_root, split)
        if split != "val" or fsio.isdir(folder):
            return folder
        for name in HELD_OUT_FOLDERS:
            alias = fsio.join(self.images_root, name)
            if _holds_class_folders(alias):
                return alias
        return folder

    @property
    def archives_at_top(self) -> bool:
        """Whether `path` is ImageNet-21k's download as it lies (winter21_whole/, fall11's outer tar
        extracted): `<wnid>.tar` class archives at its top, no splits' folders and no Kaggle folder."""
        if self.images_root != self.path or any(fsio.isdir(fsio.join(self.path, s)) for s in self.splits):
            return False
        return any(_is_class_archive(f) for f in fsio.list_files(self.path, (ARCHIVE_SUFFIX,), links=True))

    def units(self) -> list[Unit]:
        units: list[Unit] = []
        images_root = self.images_root
        at_top = self.archives_at_top
        for split in self.splits:
            if at_top:
                units.extend(self._top_units(split))
                continue
            split_dir = self.split_dir(split)
            if not fsio.isdir(split_dir):
                raise FileNotFoundError(
                    f"{self.name}: ILSVRC layout has no {split}/ folder under {images_root}"
                    + (f" (nor under {fsio.join(self.path, *KAGGLE_IMAGES)}, as Kaggle's download has it)"
                       if images_root == self.path else "") + _archives_note(self.path))
            flat_images = False
            for folder, place in [(split_dir, "")] + [(d, fsio.basename(d)) for d in self.more_held_out(split)]:
                folder_units = self._folder_units(split, folder, place)
                flat_images = flat_images or any(_needs_labels(u) for u in folder_units)
                units.extend(folder_units)
            if split == "val" and flat_images:
                units.append(Unit(split, None, (self.val_labels_uri,)))  # its listed images not on disk
        if not units:
            raise FileNotFoundError(f"{self.name}: no ImageNet images under {self.path}")
        # the index files are parsed here, up front: a broken one stops `check`, naming it
        if fsio.exists(self.synsets_uri):
            read_synsets(self.synsets_uri)
        if any(_needs_labels(unit) for unit in units):
            read_val_labels(self.val_labels_uri)
        return units

    def _folder_units(self, split: str, split_dir: str, place: str) -> list[Unit]:
        """The units of one folder of a split: its class folders, class archives (train/) and flat files."""
        units = self._class_units(split, split_dir, place)
        flat = fsio.list_files(split_dir, links=True)
        archives = [f for f in flat if split == "train" and _is_class_archive(f)]
        units.extend(u for uri in archives for u in _archive_units(split, uri, self.path))
        flat = [f for f in flat if f not in archives]
        if split == "train" and any(_is_image_name(f) for f in flat) and not any(u.wnid for u in units):
            # no class at all: every image a `missing_label` reject, a build of nothing that exits 0
            raise FileNotFoundError(
                f"{self.name}: train/ holds images but no class folders or <wnid>{ARCHIVE_SUFFIX} archives "
                f"under {self.images_root}: sort train/ into train/<wnid>/ folders (the folder's name is "
                f"the class), or leave train out of `splits`; LOC_val_solution.csv labels val images alone")
        if split == "val" and any(_is_image_name(f) for f in flat) and not fsio.exists(self.val_labels_uri):
            shown = place or split
            raise FileNotFoundError(
                f"{self.name}: {shown}/ holds images without class folders but {VAL_LABELS_FILE} "
                f"is missing from {self.path}: put Kaggle's {VAL_LABELS_FILE} there, sort {shown}/ into "
                f"{shown}/<wnid>/ folders (as the devkit's valprep.sh does), or leave {split} out of "
                f"`splits`, or unpack the devkit (ILSVRC2012_devkit_t12.tar.gz) there: its "
                f"{DEVKIT_DATA}/{DEVKIT_GROUND_TRUTH} and {DEVKIT_META} are read"
            )
        units.extend(Unit(split, None, chunk, folder=place) for chunk in _flat_chunks(flat))
        return units

    def more_held_out(self, split: str) -> list[str]:
        """The held-out folders read as `val` beside its own folder (`split_dir`): every other one
        of `HELD_OUT_FOLDERS` holding class folders (Roboflow's `train/ valid/ test/` export; a
        class-folder `test/` beside ILSVRC's `val/`), so that none of their images is left unread."""
        if split != "val":
            return []
        own = self.split_dir(split)
        folders = [fsio.join(self.images_root, name) for name in HELD_OUT_FOLDERS]
        return [d for d in folders if d != own and _holds_class_folders(d)]

    def _class_units(self, split: str, split_dir: str, place: str = "") -> list[Unit]:
        """A unit for each class folder of a split (and one for each folder an OS or tool left there)."""
        units = []
        for class_dir in fsio.list_dirs(split_dir, links=True):
            if set_aside(fsio.basename(class_dir)):  # `__MACOSX/`, `.git/`: rejected as one item, unread
                units.append(Unit(split, None, (class_dir,), folder=place))
            elif path_problem(self.path, class_dir, self.follow_links):
                # not listed: its reader rejects the folder itself as one item
                units.append(Unit(split, fsio.basename(class_dir), (class_dir,), folder=place))
            else:  # every entry, not only images: another file or a folder is a reject, not a skip
                units.append(Unit(split, fsio.basename(class_dir), tuple(_class_entries(class_dir)), folder=place))
        return units

    def _top_units(self, split: str) -> list[Unit]:
        """The train split of class archives at the top of `path` (`archives_at_top`): a unit for
        each (or its parts), and one reject for each other tar there (a Mac's `._n0.tar`, ILSVRC's
        outer archive). Other files there (index files, a README) are no split's, as beside train/."""
        tars = fsio.list_files(self.path, (ARCHIVE_SUFFIX,), links=True)
        archives = [f for f in tars if _is_class_archive(f)]
        listing = _img2dataset_listing(archives, fsio.list_files(self.path, links=True))
        if listing:
            raise FileNotFoundError(
                f"{self.name}: {self.path} holds img2dataset output ({listing} beside its shard), web images "
                f"rather than <wnid>{ARCHIVE_SUFFIX} class archives: read it as `type: laion`")
        if split != "train":
            raise FileNotFoundError(
                f"{self.name}: {self.path} holds <wnid>{ARCHIVE_SUFFIX} class archives at its top, as ImageNet-21k's "
                f"download lies, read as the train split, and no {split}/ folder: set `splits: [train]`")
        others = [f for f in tars if f not in archives]
        return ([u for uri in archives for u in _archive_units(split, uri, self.path)]
                + [Unit(split, None, chunk) for chunk in _flat_chunks(others)])

    def read(self, unit: Unit) -> Iterator[SourceItem]:
        if unit.archive:
            items = self._read_archive(unit)
            yield from items if unit.parts == 1 else (item for item in items if unit.owns(item.key))
            return
        index = self.val_labels_uri  # looked for once: the CSV, else the devkit's ground truth
        if unit.uris == (index,):
            yield from self._listed_missing(unit.split, index)
            return
        synsets = read_synsets(self.synsets_uri) if fsio.exists(self.synsets_uri) else {}
        labels = read_val_labels(index) if _needs_labels(unit) else {}
        taken: dict[str, str] = {}  # key -> the file that has it
        in_folders: dict[str, dict[str, str]] = {}  # a flat image's class -> its class folder's keys
        for uri in unit.uris:
            stem = _stem(uri)
            wnid = name_text(nfc(unit.wnid)) if unit.wnid else labels.get(stem)  # Beam groups by it as UTF-8
            key = data_key(self.name, unit.place, wnid or "unlabelled", stem)
            at = relative_to_root(self.path, uri)
            outside = path_problem(self.path, uri, self.follow_links)
            if outside:
                yield Reject(key, self.name, key, "read", outside.reason, outside.detail, split_hint=unit.split,
                             input=at)
                continue
            if not _is_image_name(uri):
                yield self._not_an_image(unit, uri)
                continue
            if key in taken:  # keyed by the whole name, like an unexpected file
                other = data_key(self.name, unit.place, wnid or "unlabelled", nfc(fsio.basename(uri)))
                yield Reject(other, self.name, other, "read", "duplicate_key",
                             f"{_where(unit, fsio.basename(uri))}: key {key} already taken by "
                             f"{_where(unit, taken[key])}", split_hint=unit.split, input=at)
                continue
            kept = self._folder_keys(uri, unit.place, wnid, in_folders) if wnid and not unit.wnid else {}
            if key in kept:  # a labelled flat image whose class folder beside it holds its stem
                other = data_key(self.name, unit.place, wnid, nfc(fsio.basename(uri)))
                yield Reject(other, self.name, other, "read", "duplicate_key",
                             f"{_where(unit, fsio.basename(uri))}: key {key} already taken by "
                             f"{unit.place}/{wnid}/{kept[key]}, which is read", split_hint=unit.split, input=at)
                continue
            taken[key] = fsio.basename(uri)
            if wnid is None:  # a train image outside class folders: no index labels train images
                detail = (f"{stem} lies directly in {unit.place}/, in no class folder ({unit.place}/<wnid>/): its "
                          "class is unknown" if unit.split == "train" else f"{stem} not in {fsio.basename(index)}")
                yield Reject(key, self.name, key, "read", "missing_label", detail, split_hint=unit.split, input=at)
                continue
            if synsets and wnid not in synsets:
                yield Reject(key, self.name, key, "read", "unknown_label", f"{wnid} not in {SYNSET_FILE}",
                             split_hint=unit.split, input=at)
                continue
            yield ImageRecord(
                key=key,
                source=self.name,
                group=key,
                uri=uri,
                split_hint=unit.split,
                label=wnid,
                lineage={"wnid": wnid, "class_name": synsets.get(wnid, wnid),
                         "file": _file(unit.place, unit.wnid and wnid, fsio.basename(uri))},
            )

    def _folder_keys(self, uri: str, place: str, wnid: str, known: dict[str, dict[str, str]]) -> dict[str, str]:
        """The keys of the images in the class folder `wnid` beside `uri` (each to its file name, the
        first by name of a stem), none where there is no such folder (`known`: each class listed once).
        A flat val image or an archive member of one of them would share the key with a picture of
        its own, in another unit, and the key's two pictures meet in dedup and assembly: the class
        folder's file is read, the other a `duplicate_key` reject naming it."""
        if wnid not in known:
            folder = fsio.join(uri.rsplit("/", 1)[0], wnid)
            names: dict[str, str] = {}
            if fsio.isdir(folder) and not path_problem(self.path, folder, self.follow_links):
                for file in sorted(fsio.list_files(folder, links=True)):
                    if _is_image_name(file):
                        names.setdefault(data_key(self.name, place, wnid, _stem(file)), fsio.basename(file))
            known[wnid] = names
        return known[wnid]

    def _read_archive(self, unit: Unit) -> Iterator[SourceItem]:
        """Each member of a class archive, in archive order: an image of the class keyed as it would
        be extracted into `<split>/<wnid>/`, or a reject (`_member_problem`); a cut or unreadable tar
        is a `truncated_sample` for the member it cuts and one `corrupt_archive`. A part of a big
        tar reads every header and the bytes of its own images only (the caller drops the rest)."""
        uri = unit.uris[0]
        shown = shown_name(nfc(relative_to_root(self.path, uri)))[1:-1]
        problem = path_problem(self.path, uri, self.follow_links)
        if problem:  # a link out of the root, or a fifo: never opened; one reject for what it holds
            yield self._archive_reject(unit, problem.reason, problem.detail)
            return
        synsets = read_synsets(self.synsets_uri) if fsio.exists(self.synsets_uri) else {}
        reading: list[str] = []  # the member whose bytes are being read
        beside = uri.rsplit("/", 1)[0] == self.split_dir(unit.split).rstrip("/")  # not at the top: no folder read
        in_folder = self._folder_keys(uri, unit.split, name_text(nfc(unit.wnid or "")), {}) if beside else {}
        visit = functools.partial(self._archive_member, unit, shown, synsets, {}, in_folder, reading)
        cut = functools.partial(self._archive_cut, unit, shown, reading)
        mode = "r:" if unit.parts > 1 else "r|"
        shadowed = functools.partial(self._shadowed_member, unit, shown)
        yield from read_members(uri, lambda handle: mode, visit, cut, shadowed)

    def _shadowed_member(self, unit: Unit, shown: str, info: tarfile.TarInfo, detail: str) -> Iterator[Reject]:
        """A copy of a member that a later one of its name replaces (`tar -r`, `tar -u`), as on
        extraction (`tar_members.Layout`): its `duplicate_member` reject, keyed by its whole name."""
        key = data_key(self.name, unit.split, name_text(nfc(unit.wnid or "")), nfc(_member_name(info.name)))
        yield Reject(key, self.name, key, "read", DUPLICATE_MEMBER, f"{shown}: {detail}"[:300], split_hint=unit.split,
                     input=self._member_at(unit, info.name))

    def _archive_member(self, unit: Unit, shown: str, synsets: dict[str, str], taken: dict[str, str],
                        in_folder: dict[str, str], reading: list[str], tar: tarfile.TarFile,
                        info: tarfile.TarInfo) -> Iterator[SourceItem]:
        """A class archive's member (`tar_members.read_members`' visit): its image, or its reject
        (`_member_problem`, `taken` the keys seen, `in_folder` those of its class folder beside it); nothing for another part's image, whose bytes
        are that part's to read. `reading` names the member while its bytes are read."""
        split, wnid, name = unit.split, name_text(nfc(unit.wnid or "")), _member_name(info.name)
        if info.isdir() and name in ("", "."):  # `tar -C n0 .`'s `./`: the class folder itself
            return
        key = data_key(self.name, split, wnid, _stem(name))
        rejected = self._member_problem(unit, shown, info, name, key, taken, synsets, in_folder)
        if rejected is not None:
            yield rejected
            return
        if not unit.owns(key):
            return
        reading.append(name)
        data = member_bytes(tar, info)
        reading.pop()
        yield ImageRecord(key=key, source=self.name, group=key, data=data, split_hint=split, label=wnid,
                          lineage={"wnid": wnid, "class_name": synsets.get(wnid, wnid),
                                   "file": _file(split, wnid, name)}, input=self._member_at(unit, info.name))

    def _archive_cut(self, unit: Unit, shown: str, reading: list[str], exc: BaseException) -> Iterator[Reject]:
        """A cut or unreadable class archive (`read_members`' cut): a `truncated_sample` for the
        member whose bytes it ends in, if any, and one `corrupt_archive`."""
        wnid = name_text(nfc(unit.wnid or ""))
        for name in reading:
            key = data_key(self.name, unit.split, wnid, _stem(name))
            yield Reject(key, self.name, key, "read", "truncated_sample",
                         f"{shown}: {name}: {exception_detail(exc)}"[:300], split_hint=unit.split,
                         input=self._member_at(unit, name))
        yield self._archive_reject(unit, "corrupt_archive", f"{shown}: {exception_detail(exc)}")

    def _archive_reject(self, unit: Unit, reason: str, detail: str) -> Reject:
        """A reject of a whole class archive (what it holds is unknown), keyed by its file name."""
        key = data_key(self.name, unit.split, name_text(nfc(unit.wnid or "")), nfc(fsio.basename(unit.uris[0])))
        return Reject(key, self.name, key, "read", reason, detail[:300], split_hint=unit.split,
                      input=relative_to_root(self.path, unit.uris[0]))

    def _member_at(self, unit: Unit, member: str) -> str:
        """A class archive's member as a reject's `input`: `train/n01440764.tar:n01440764_10026.JPEG`."""
        return f"{relative_to_root(self.path, unit.uris[0])}:{member}"

    def _member_problem(self, unit: Unit, shown: str, info: tarfile.TarInfo, name: str, key: str,
                        taken: dict[str, str], synsets: dict[str, str], in_folder: dict[str, str]) -> Reject | None:
        """Why a class archive's member is no image of its class, judged on its header alone (never
        read): a folder, an OS's or tool's file, a member in a folder, a link or device, a
        non-image, one named for another class, a key already taken, an unknown class, too large."""
        split, wnid = unit.split, name_text(nfc(unit.wnid or ""))
        whole = data_key(self.name, split, wnid, nfc(name) + ("/" if info.isdir() else ""))  # keyed by the whole name

        def reject(item_key: str, reason: str, detail: str) -> Reject:
            return Reject(item_key, self.name, item_key, "read", reason, f"{shown}: {detail}"[:300], split_hint=split,
                          input=self._member_at(unit, info.name))

        aside = set_aside_problem("", name, folder=info.isdir())
        if aside:  # macOS tar's `._n0_1.JPEG` before `n0_1.JPEG`, a `.DS_Store`
            return reject(whole, aside.reason, aside.detail)
        if info.isdir() or "/" in name:
            return reject(whole, "unexpected_file", f"{name}{'/' if info.isdir() else ''} is "
                          f"{'a folder' if info.isdir() else 'in a folder'}: class archives are read flat")
        if not info.isfile():  # symlinks, devices, fifos, a hard link to nothing earlier: counted, never followed
            return reject(whole, NOT_A_FILE, f"{name}: tar member of type {member_type(info)}")
        if not _is_image_name(name):
            return reject(whole, "unexpected_file", f"{name} is not one of {', '.join(IMAGE_SUFFIXES)}"
                          + (f"; {shown} is {_outer_advice(fsio.basename(shown))}"
                             if name.lower().endswith(ARCHIVE_SUFFIX) else ""))
        named = _WNID_PREFIX.match(nfc(name))
        if named and named.group(1) != wnid:
            return reject(key, WRONG_CLASS, f"{name} is named for class {named.group(1)}, not {wnid}")
        if key in taken:
            return reject(whole, "duplicate_key", _taken_twice(name, key, taken[key]))
        if key in in_folder:  # `train/<wnid>/` beside the archive holds this key's file: that one is read
            return reject(whole, "duplicate_key", _taken_twice(name, key, f"{split}/{wnid}/{in_folder[key]}, which is read"))
        taken[key] = name[:MAX_SHOWN_NAME]  # taken whatever comes next, as an extracted file's name is
        if synsets and wnid not in synsets:
            return reject(key, "unknown_label", f"{wnid} not in {SYNSET_FILE}")
        too_large = member_too_large(info, MAX_INPUT_FILE_BYTES, name)  # judged on the header: never read
        if too_large:
            return reject(key, MEMBER_TOO_LARGE, too_large)
        return None

    def _listed_missing(self, split: str, index: str) -> Iterator[Reject]:
        """A reject for each image the val index (`index`: LOC_val_solution.csv or the devkit's ground
        truth) lists that the split's folder lacks, flat or in a class folder inside the root (a val
        set reorganised by hand in part), or in a further held-out folder read as val
        (`more_held_out`)."""
        present: set[str] = set()
        for split_dir in [self.split_dir(split)] + self.more_held_out(split):
            present |= {_stem(f) for f in fsio.list_files(split_dir, links=True) if _is_image_name(f)}
            for folder in fsio.list_dirs(split_dir, links=True):
                if not set_aside(fsio.basename(folder)) and not path_problem(self.path, folder, self.follow_links):
                    present |= {_stem(f) for f in fsio.list_files(folder, links=True) if _is_image_name(f)}
        at = relative_to_root(self.path, index)
        for image_id, wnid in sorted(read_val_labels(index).items()):
            if image_id not in present:
                key = data_key(self.name, split, wnid, image_id)
                yield Reject(key, self.name, key, "read", "missing_image", f"{image_id} is listed in "
                             f"{fsio.basename(index)}, but {split}/ holds no image of that name", split_hint=split,
                             input=f"{at} {image_id}")

    def _not_an_image(self, unit: Unit, uri: str) -> Reject:
        """An entry that is no image: an operating system's metadata (`os_metadata`), a hidden file
        (`hidden_file`), another file,
        or a folder (never descended into). Keyed by the whole name (a folder's with a trailing
        '/'): it may share its stem with an image."""
        folder = fsio.isdir(uri)
        name = fsio.basename(uri) + ("/" if folder else "")
        key = data_key(self.name, unit.place, nfc(unit.wnid or "unlabelled"), nfc(name))
        aside = set_aside(fsio.basename(uri))
        if aside:
            detail = f"{_where(unit, name)}: {aside.detail}, {'not read' if folder else 'not an image'}"
            return Reject(key, self.name, key, "read", aside.reason, detail, split_hint=unit.split,
                          input=relative_to_root(self.path, uri) + ("/" if folder else ""))
        detail = (f"{_where(unit, name)} is a folder: class folders are read flat" if folder
                  else f"{_where(unit, name)} is not one of {', '.join(IMAGE_SUFFIXES)}"
                  + (f"; {_tar_advice(unit, name)}" if name.lower().endswith(ARCHIVE_SUFFIX) else ""))
        return Reject(key, self.name, key, "read", "unexpected_file", detail, split_hint=unit.split,
                      input=relative_to_root(self.path, uri) + ("/" if folder else ""))


def _outer_advice(name: str) -> str:
    """What to do with ILSVRC's outer archives, or a tar of class archives (fall11_whole.tar):
    extract them once; the `<wnid>.tar` class archives they hold are then read in place."""
    if _is_outer_archive(name) and "_val" in name.lower():
        return f"ILSVRC's val images: extract them, mkdir -p val && tar -xf {name} -C val"
    if _is_outer_archive(name) and "_test" in name.lower():
        return "ILSVRC's test images, which have no labels: not read"
    return (f"an archive of class archives: extract the outer tar only, mkdir -p train && tar -xf {name} -C train "
            "(the <wnid>.tar class archives it holds are read in place)")


def _tar_advice(unit: Unit, name: str) -> str:
    """What to do with a tar where no class archive is read: in a class folder, beside the val
    images, or ILSVRC's outer archive in a split's folder."""
    if _is_outer_archive(name):
        return _outer_advice(name)
    if unit.wnid:
        return f"an archive in a class folder is not read: extract its images there, tar -xf {name} -C {_where(unit, '')}"
    folder = f"{unit.split}/{name.rsplit('.', 1)[0]}"
    return (f"class archives are read in place in train/ only: extract it into its class folder, "
            f"mkdir -p {folder} && tar -xf {unit.split}/{name} -C {folder}")


def _archives_note(path: str) -> str:
    """What to do when `path` holds ILSVRC's outer archives in place of the splits' folders."""
    tars = [fsio.basename(f) for f in fsio.list_files(path, (ARCHIVE_SUFFIX,)) if _is_outer_archive(fsio.basename(f))]
    return "".join(f"; it holds {name}, {_outer_advice(name)}" for name in tars)


def _taken_twice(name: str, key: str, first: str) -> str:
    """A class archive's `duplicate_key` detail (a copy of the same name appended by `tar -r` is
    no such clash: the earlier copy is `duplicate_member`, `tar_members.Layout`)."""
    return f"{name}: key {key} already taken by {first}"


def _member_name(name: str) -> str:
    """A member's name as extracting it places it: without the `./` that `tar -C folder .` puts first."""
    while name.startswith("./"):
        name = name[2:]
    return name


def _file(place: str, wnid: str | None, name: str) -> str:
    """An image's lineage `file`: its path under the splits' folder, `train/<wnid>/<name>` (a class
    archive's member as extracting it places it), `val/<name>` flat. It was `train/<stem>`, the
    class and extension left out, so two classes' `1.jpg` read alike in a `duplicate_key` detail."""
    return "/".join([place] + ([wnid] if wnid else []) + [name_text(nfc(name))])


def _where(unit: Unit, name: str) -> str:
    """A file's place for a reject detail: split/wnid/name in a class folder, split/name in a flat one."""
    return f"{unit.place}/{unit.wnid}/{name}" if unit.wnid else f"{unit.place}/{name}"


def _holds_class_folders(folder: str) -> bool:
    """Whether `folder` is a split folder of class folders (an OS's or tool's folder is none)."""
    return fsio.isdir(folder) and any(not set_aside(fsio.basename(d)) for d in fsio.list_dirs(folder))


def _class_entries(class_dir: str) -> list[str]:
    """A class folder's files and links (`fsio.list_files`) and its folders and folder links,
    sorted: each becomes an image or a reject."""
    return sorted(fsio.list_files(class_dir, links=True) + fsio.list_dirs(class_dir, links=True))
