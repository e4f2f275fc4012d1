"""ImageNet in the ILSVRC (CLS-LOC) layout, for class-grouped sentences.

Layout read (the Kaggle/LOC release; `val/<wnid>/` folders are accepted too):

    root/LOC_synset_mapping.txt         "n01440764 tench, Tinca tinca"
    root/LOC_val_solution.csv           "ImageId,PredictionString" ("n01440764 x0 y0 x1 y1 ...")
    root/train/<wnid>/<wnid>_<n>.JPEG
    root/val/ILSVRC2012_val_<8 digits>.JPEG

Kaggle's download keeps train/ and val/ three folders down, `root/ILSVRC/Data/CLS-LOC/`, with the
index files at its top: a root without the splits' folders but with that one is read as it lies.

Each image becomes an `ImageRecord` carrying its wnid; grouping 16 images of a class into a
sentence happens later, after decoding, so that a broken file costs one image, not a sentence.
The official split of the layout (train/ vs val/) is kept as the record's split.

A key is the image's stem: a second image with a stem already taken (`x.JPEG` beside `x.png`) is
a `duplicate_key` reject, and the unit cut keeps same-stem files together so the clash is seen.
Class folders are read flat: a folder inside one (or a link to a folder) is an `unexpected_file`
reject, never descended into and never skipped silently. What an operating system leaves in the
folders it touches (`.DS_Store`, `Thumbs.db`, a Mac's AppleDouble `._x.JPEG` beside every image,
a zip's `__MACOSX/`) is an `os_metadata` reject, and any other hidden file or folder (an editor's
`.~lock.x#`, `.git/`) a `hidden_file` one (`sources.paths.set_aside`), unread: not a broken image,
nor a val image without a label, and no reason to need LOC_val_solution.csv.

When val/ holds flat images, LOC_val_solution.csv is the val set's index: an image it lists
that val/ lacks (a cut download or extraction) is a `missing_image` reject (a unit of its own,
the CSV's), as a row of any other index would be.

Names are compared and keyed in Unicode NFC: a folder copied off a Mac names its files in NFD,
while the index files (and the same set stored elsewhere) say NFC.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Iterator

from sources import fsio
from sources.annotation_files import MAX_ANNOTATION_BYTES, AnnotationFileError
from sources.paths import path_problem, set_aside, shown_name
from sources.records import ImageRecord, Reject, SourceItem, name_text, nfc, safe_key

SYNSET_FILE = "LOC_synset_mapping.txt"
VAL_LABELS_FILE = "LOC_val_solution.csv"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
VAL_FILES_PER_UNIT = 256
VAL_LABELS_HEADER = ("ImageId", "PredictionString")
KAGGLE_IMAGES = ("ILSVRC", "Data", "CLS-LOC")  # where Kaggle's download keeps train/, val/ and test/


def _is_image_name(uri: str) -> bool:
    return uri.lower().endswith(IMAGE_SUFFIXES) and not set_aside(fsio.basename(uri))


def _needs_labels(unit: Unit) -> bool:
    """Whether the unit holds flat images, labelled by LOC_val_solution.csv."""
    return unit.wnid is None and any(_is_image_name(uri) for uri in unit.uris)


def _stem(uri: str) -> str:
    return nfc(fsio.basename(uri).rsplit(".", 1)[0])


def _stem_ordered(files: list[str]) -> list[str]:
    """`files` (sorted) with the files sharing a stem moved next to the first of them: the same
    order when every stem is unique."""
    by_stem: dict[str, list[str]] = {}
    for uri in files:
        by_stem.setdefault(_stem(uri), []).append(uri)
    return [uri for same in by_stem.values() for uri in same]


def _flat_chunks(files: list[str]) -> list[tuple[str, ...]]:
    """A flat folder's files in units of `VAL_FILES_PER_UNIT`, a unit running on past that while
    the next file shares the last one's stem, so that a key clash falls inside one unit."""
    ordered, chunks, start = _stem_ordered(files), [], 0
    while start < len(ordered):
        end = min(start + VAL_FILES_PER_UNIT, len(ordered))
        while end < len(ordered) and _stem(ordered[end]) == _stem(ordered[end - 1]):
            end += 1
        chunks.append(tuple(ordered[start:end]))
        start = end
    return chunks


@dataclass(frozen=True)
class Unit:
    split: str
    wnid: str | None  # set for class folders; None for the flat val folder
    uris: tuple[str, ...]


def _index_text(uri: str) -> str:
    """An index file's text, capped like any annotation file, decoding errors named not quoted."""
    try:
        data = fsio.read_bytes(uri, MAX_ANNOTATION_BYTES)
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


@fsio.cached_input(maxsize=8)
def read_val_labels(uri: str) -> dict[str, str]:
    """val image id -> wnid: the first wnid of each PredictionString in LOC_val_solution.csv."""
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
        return fsio.join(self.path, VAL_LABELS_FILE)

    @property
    def images_root(self) -> str:
        """The folder holding the splits' folders: `path`, or Kaggle's `path/ILSVRC/Data/CLS-LOC`
        when `path` holds none of them (the download's top, its index files beside `ILSVRC/`)."""
        kaggle = fsio.join(self.path, *KAGGLE_IMAGES)
        if not any(fsio.isdir(fsio.join(self.path, split)) for split in self.splits) and fsio.isdir(kaggle):
            return kaggle
        return self.path

    def units(self) -> list[Unit]:
        units: list[Unit] = []
        images_root = self.images_root
        for split in self.splits:
            split_dir = fsio.join(images_root, split)
            if not fsio.isdir(split_dir):
                raise FileNotFoundError(
                    f"{self.name}: ILSVRC layout has no {split}/ folder under {images_root}"
                    + (f" (nor under {fsio.join(self.path, *KAGGLE_IMAGES)}, as Kaggle's download has it)"
                       if images_root == self.path else "") + _archives_note(self.path))
            for class_dir in fsio.list_dirs(split_dir, links=True):
                if set_aside(fsio.basename(class_dir)):  # `__MACOSX/`, `.git/`: rejected as one item, unread
                    units.append(Unit(split, None, (class_dir,)))
                    continue
                if path_problem(self.path, class_dir, self.follow_links):
                    # not listed: its reader rejects the folder itself as one item
                    units.append(Unit(split, fsio.basename(class_dir), (class_dir,)))
                    continue
                # every entry, not only images: another file or a folder is a reject, not a skip
                units.append(Unit(split, fsio.basename(class_dir), tuple(_class_entries(class_dir))))
            flat = fsio.list_files(split_dir, links=True)
            if any(_is_image_name(f) for f in flat) and not fsio.exists(self.val_labels_uri):
                raise FileNotFoundError(
                    f"{self.name}: {split}/ holds images without class folders but {VAL_LABELS_FILE} "
                    f"is missing from {self.path}: put Kaggle's {VAL_LABELS_FILE} there, sort {split}/ into "
                    f"{split}/<wnid>/ folders (as the devkit's valprep.sh does), or leave {split} out of "
                    f"`splits`; the devkit's ILSVRC2012_validation_ground_truth.txt is not read (its class "
                    f"ids follow the devkit's meta.mat, not the sorted wnids)"
                )
            units.extend(Unit(split, None, chunk) for chunk in _flat_chunks(flat))
            if split == "val" and any(_is_image_name(f) for f in flat):
                units.append(Unit(split, None, (self.val_labels_uri,)))  # its listed images not on disk
        if not units:
            raise FileNotFoundError(f"{self.name}: no ImageNet images under {self.path}")
        # the index files are parsed here, up front: a broken one stops `check`, naming it
        if fsio.exists(self.synsets_uri):
            read_synsets(self.synsets_uri)
        if any(_needs_labels(unit) for unit in units):
            read_val_labels(self.val_labels_uri)
        return units

    def read(self, unit: Unit) -> Iterator[SourceItem]:
        if unit.uris == (self.val_labels_uri,):
            yield from self._listed_missing(unit.split)
            return
        synsets = read_synsets(self.synsets_uri) if fsio.exists(self.synsets_uri) else {}
        labels = read_val_labels(self.val_labels_uri) if _needs_labels(unit) else {}
        taken: dict[str, str] = {}  # key -> the file that has it
        for uri in unit.uris:
            stem = _stem(uri)
            wnid = name_text(nfc(unit.wnid)) if unit.wnid else labels.get(stem)  # Beam groups by it as UTF-8
            key = safe_key(self.name, unit.split, wnid or "unlabelled", stem)
            outside = path_problem(self.path, uri, self.follow_links)
            if outside:
                yield Reject(key, self.name, key, "read", outside.reason, outside.detail, split_hint=unit.split)
                continue
            if not _is_image_name(uri):
                yield self._not_an_image(unit, uri)
                continue
            if key in taken:  # keyed by the whole name, like an unexpected file
                other = safe_key(self.name, unit.split, wnid or "unlabelled", nfc(fsio.basename(uri)))
                yield Reject(other, self.name, other, "read", "duplicate_key",
                             f"{_where(unit, fsio.basename(uri))}: key {key} already taken by "
                             f"{_where(unit, taken[key])}", split_hint=unit.split)
                continue
            taken[key] = fsio.basename(uri)
            if wnid is None:
                yield Reject(key, self.name, key, "read", "missing_label", f"{stem} not in {VAL_LABELS_FILE}",
                             split_hint=unit.split)
                continue
            if synsets and wnid not in synsets:
                yield Reject(key, self.name, key, "read", "unknown_label", f"{wnid} not in {SYNSET_FILE}",
                             split_hint=unit.split)
                continue
            yield ImageRecord(
                key=key,
                source=self.name,
                group=key,
                uri=uri,
                split_hint=unit.split,
                label=wnid,
                lineage={"wnid": wnid, "class_name": synsets.get(wnid, wnid), "file": f"{unit.split}/{stem}"},
            )

    def _listed_missing(self, split: str) -> Iterator[Reject]:
        """A reject for each image LOC_val_solution.csv lists that the split's folder lacks, flat or
        in a class folder inside the root (a val set reorganised by hand in part)."""
        split_dir = fsio.join(self.images_root, split)
        present = {_stem(f) for f in fsio.list_files(split_dir, links=True) if _is_image_name(f)}
        for folder in fsio.list_dirs(split_dir, links=True):
            if not set_aside(fsio.basename(folder)) and not path_problem(self.path, folder, self.follow_links):
                present |= {_stem(f) for f in fsio.list_files(folder, links=True) if _is_image_name(f)}
        for image_id, wnid in sorted(read_val_labels(self.val_labels_uri).items()):
            if image_id not in present:
                key = safe_key(self.name, split, wnid, image_id)
                yield Reject(key, self.name, key, "read", "missing_image", f"{image_id} is listed in "
                             f"{VAL_LABELS_FILE}, but {split}/ holds no image of that name", split_hint=split)

    def _not_an_image(self, unit: Unit, uri: str) -> Reject:
        """An entry that is no image: an operating system's metadata (`os_metadata`), a hidden file
        (`hidden_file`), another file,
        or a folder (never descended into). Keyed by the whole name (a folder's with a trailing
        '/'): it may share its stem with an image."""
        folder = fsio.isdir(uri)
        name = fsio.basename(uri) + ("/" if folder else "")
        key = safe_key(self.name, unit.split, nfc(unit.wnid or "unlabelled"), nfc(name))
        aside = set_aside(fsio.basename(uri))
        if aside:
            detail = f"{_where(unit, name)}: {aside.detail}, {'not read' if folder else 'not an image'}"
            return Reject(key, self.name, key, "read", aside.reason, detail, split_hint=unit.split)
        detail = (f"{_where(unit, name)} is a folder: class folders are read flat" if folder
                  else f"{_where(unit, name)} is not one of {', '.join(IMAGE_SUFFIXES)}"
                  + (f"; {_ARCHIVE_ADVICE}" if name.lower().endswith(".tar") else ""))
        return Reject(key, self.name, key, "read", "unexpected_file", detail, split_hint=unit.split)


_ARCHIVE_ADVICE = ("class archives (ImageNet-21k's <wnid>.tar) are not read: extract each into "
                   "<split>/<wnid>/, e.g. tar -xf n00004475.tar -C train/n00004475")


def _archives_note(path: str) -> str:
    """What to do when `path` holds tars in place of the splits' folders (ImageNet-21k's download)."""
    tars = fsio.list_files(path, (".tar",))
    return f"; it holds {len(tars)} .tar files: {_ARCHIVE_ADVICE}" if tars else ""


def _where(unit: Unit, name: str) -> str:
    """A file's place for a reject detail: split/wnid/name in a class folder, split/name in a flat one."""
    return f"{unit.split}/{unit.wnid}/{name}" if unit.wnid else f"{unit.split}/{name}"


def _class_entries(class_dir: str) -> list[str]:
    """A class folder's files and links (`fsio.list_files`) and its folders and folder links,
    sorted: each becomes an image or a reject."""
    return sorted(fsio.list_files(class_dir, links=True) + fsio.list_dirs(class_dir, links=True))
