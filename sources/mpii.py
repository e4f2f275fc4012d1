"""MPII human pose in MMPose's JSON form (HRNet's conversion of the .mat original, which MMPose ships).

MPII lists one entry per person; an image's people become one pair, keyed by the image's stem.
Units are ranges of entries, and an image is read in the unit holding its first entry, with all
its people wherever they stand in the list: a unit boundary never splits an image into two pairs
with one key. A second image name with a stem already taken (`a.jpg`, `a.png`) is a
`duplicate_key` reject.

MMPose names its files by split: every pair and reject of `mpii_val.json` (HRNet's `valid.json`
of the same form: the validation images of Tompson et al., the split MPII results are reported
on) is in the `val` split, never hashed into `train`; the entries of any other file are hashed into
train/val like sources without a split. MPII's own release (`mpii_human_pose_v1_u12_1.mat`, told by
its first bytes) is read as HRNet's JSON encodes people (joints by id, every annotated joint
visible; `sources.mpii_release`);
its test images (`img_train` 0) are `unlabeled_split` rejects, its train images without an annotated
person `no_pose_annotations`, and its pairs are hashed (the release holds no validation split).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

from sources import fsio
from sources.annotation_files import BAD_ANNOTATION, AnnotationFileError, load_json, numbers
from sources.mpii_release import KEPT_ENTRY_BYTES, UNLABELED_SPLIT, ReleaseEntry, UnannotatedImage, read_release
from sources.paths import ConfiguredValueMismatch, OutsideRoot, check_inside, join_inside, missing_under
from sources.records import PairRecord, Reject, SourceItem, folder_input, raise_machine_error, safe_key

MPII_JOINTS = 16
MATLAB_OFFSET = 0.5
ENTRIES_PER_UNIT = 512
VAL_FILES = ("mpii_val.json", "valid.json")  # the validation split, as MMPose and HRNet name it
MAT_MAGIC = b"MATLAB"  # the first bytes of a MATLAB .mat file (v5 and v7.3 alike)


def split_of_file(annotation_file: str) -> str | None:
    """The split an annotation file's name declares: `val` for `VAL_FILES`, else None."""
    return "val" if fsio.basename(annotation_file) in VAL_FILES else None


def _starts_with(uri: str, magic: bytes) -> bool:
    """Whether a file's first bytes are `magic`; False where it cannot be read (a folder, no
    permission: the error already raised says so, with the field that names the file). Too many
    open files is this machine's `MachineError`: the .mat advice is never traded for the error of a
    file that was never opened."""
    try:
        with fsio.open_file(uri) as handle:
            return handle.read(len(magic)) == magic
    except OSError as exc:
        raise_machine_error(exc, uri)
        return False


# Entries kept parsed stand for at most this many bytes (one larger list alone): a release's
# entries, or a JSON's, take about `KEPT_ENTRY_BYTES` each, many times their file's bytes.
CACHED_ENTRIES_BYTES = 160 << 20


def _kept_weight(entries: list) -> int:
    """What a kept list of entries counts in the cache: its entries, not its file's bytes (a
    release's 12.5 MB file makes some 25k entries of about 75 MB)."""
    return len(entries) * KEPT_ENTRY_BYTES


@fsio.cached_input(maxsize=2, max_bytes=CACHED_ENTRIES_BYTES, weigh=_kept_weight)
def _load_entries(uri: str) -> list:
    """MMPose's JSON list of people, or the release's entries (`read_release`) where the file is a
    MATLAB .mat (it was refused as "not UTF-8 text (at byte 132)")."""
    if _starts_with(uri, MAT_MAGIC):
        return read_release(uri)
    entries = load_json(uri)
    if not isinstance(entries, list):
        raise AnnotationFileError(uri, "is not a list of people")
    return entries


@dataclass(frozen=True)
class ImageIndex:
    """Where each image's people stand in the list, and which image owns each key stem."""

    people: dict[str, tuple[int, ...]]  # image name -> indices of its entries, in list order
    stem_owner: dict[str, str]  # stem -> the first image name (in list order) with that stem


@fsio.cached_input(maxsize=2)
def _image_index(uri: str) -> ImageIndex:
    people: dict[str, list[int]] = {}
    for index, entry in enumerate(_load_entries(uri)):
        image = image_name(entry)
        if image is not None:
            people.setdefault(image, []).append(index)
    owners: dict[str, str] = {}
    for image in people:
        owners.setdefault(_stem(image), image)
    return ImageIndex({image: tuple(indices) for image, indices in people.items()}, owners)


def image_name(entry: object) -> str | None:
    """The entry's image name, when it has one."""
    if isinstance(entry, (ReleaseEntry, UnannotatedImage)):
        return entry.image
    if isinstance(entry, dict) and isinstance(entry.get("image"), str) and entry["image"]:
        return entry["image"]
    return None


def _entry(entry: object) -> dict:
    """An entry's MMPose dict (a release's entry holds one)."""
    return entry.entry if isinstance(entry, ReleaseEntry) and entry.entry is not None else entry


def _stem(image: str) -> str:
    return image.rsplit(".", 1)[0]


def entry_problem(entry: object) -> str | None:
    """What is wrong with one MPII person entry, or None."""
    if isinstance(entry, ReleaseEntry):
        return entry.problem or entry_problem(entry.entry)
    if not isinstance(entry, dict):
        return "is not an object"
    if not isinstance(entry.get("image"), str) or not entry["image"]:
        return "has no image name"
    joints, visible = entry.get("joints"), entry.get("joints_vis")
    if not isinstance(joints, list) or not all(numbers(j, length=2) for j in joints):
        return "joints are not [x, y] number pairs"
    if not numbers(visible):
        return "joints_vis are not numbers"
    return None


@dataclass(frozen=True)
class MpiiSource:
    name: str
    path: str
    annotation_file: str = "annotations/mpii_train.json"
    images_dir: str = "images"
    follow_links: bool = False  # read image files that are links leading out of the images folder

    @property
    def split(self) -> str | None:
        """The split every item of this file is in (`split_of_file`), or None: hashed."""
        return split_of_file(self.annotation_file)

    def _annotations(self) -> list:
        return _load_entries(fsio.join(self.path, self.annotation_file))

    def _at(self, entries: list, index: int) -> str:
        """Where an entry lies: `annotations/mpii_train.json[4]`, or in the release MATLAB's own
        `mpii_human_pose_v1_u12_1.mat annolist(12).annorect(2)`."""
        entry = entries[index]
        if isinstance(entry, (ReleaseEntry, UnannotatedImage)):
            return f"{self.annotation_file} {entry.where}"
        return f"{self.annotation_file}[{index}]"

    def units(self) -> list[tuple[int, int]]:
        if not fsio.exists(fsio.join(self.path, self.annotation_file)):
            raise missing_under("annotation_file", self.path, self.annotation_file, "MPII: ")
        if not fsio.isdir(fsio.join(self.path, self.images_dir)):  # else every pose pair is a missing image
            raise missing_under("images_dir", self.path, self.images_dir, "MPII: ")
        try:
            n = len(self._annotations())
        except AnnotationFileError as exc:  # `check` blames the field naming the file, not `path`
            raise ConfiguredValueMismatch("annotation_file", str(exc)) from None
        return [(i, min(i + ENTRIES_PER_UNIT, n)) for i in range(0, n, ENTRIES_PER_UNIT)]

    def read(self, unit: tuple[int, int]) -> Iterator[SourceItem]:
        entries = self._annotations()
        index_of = _image_index(fsio.join(self.path, self.annotation_file))
        images: list[str] = []  # the images whose first person is in this unit
        for index in range(unit[0], min(unit[1], len(entries))):
            image = image_name(entries[index])
            if image is None:  # belongs to no image: the entry itself is the rejected item
                key = safe_key(self.name, "entry", str(index))
                at = self._at(entries, index)
                yield Reject(key, self.name, key, "read", BAD_ANNOTATION, f"{at} {entry_problem(entries[index])}",
                             split_hint=self.split, input=at)
            elif index_of.people[image][0] == index:
                images.append(image)
        for image in images:
            yield from self._image(image, entries, index_of)

    def _image(self, image: str, entries: list, index_of: ImageIndex) -> Iterator[SourceItem]:
        """One image's pose pair from all its people, or its reject."""
        for item in self._pair(image, entries, index_of):
            yield item if self.split is None else replace(item, split_hint=self.split)

    def _pair(self, image: str, entries: list, index_of: ImageIndex) -> Iterator[SourceItem]:
        group = safe_key(self.name, _stem(image))
        key = f"{group}-pose"
        owner = index_of.stem_owner[_stem(image)]
        indices = index_of.people[image]
        at = f"{self._at(entries, indices[0])}: {image}"  # its first person's entry, and the image it names
        if owner != image:
            yield Reject(key, self.name, group, "read", "duplicate_key",
                         f"{image}: key {key} already taken by {owner}", input=at)
            return
        unannotated = next((entries[i] for i in indices if isinstance(entries[i], UnannotatedImage)), None)
        if unannotated:  # the release's test image, or a train image without an annotated person
            yield Reject(key, self.name, group, "read", unannotated.reason, unannotated.detail, input=at,
                         split_hint="val" if unannotated.reason == UNLABELED_SPLIT else None)  # as Cityscapes' test
            return
        bad = next(((i, p) for i in indices if (p := entry_problem(entries[i]))), None)
        if bad:  # one bad person spoils the image's pose target, not the unit
            yield Reject(key, self.name, group, "read", BAD_ANNOTATION, f"{self._at(entries, bad[0])} {bad[1]}",
                         input=f"{self._at(entries, bad[0])}: {image}")
            return
        images_root = fsio.join(self.path, self.images_dir)
        try:  # the name comes from the JSON: it must stay inside the images folder
            image_uri = join_inside(images_root, image)
            check_inside(images_root, image_uri, self.follow_links)
        except OutsideRoot as exc:
            yield Reject(key, self.name, group, "read", exc.reason, exc.detail, input=at)
            return
        points = []
        for person in (_entry(entries[i]) for i in indices):
            joints, visible = person.get("joints", []), person.get("joints_vis", [])
            if len(joints) != MPII_JOINTS or len(visible) != MPII_JOINTS:
                yield Reject(key, self.name, group, "read", "bad_keypoints",
                             f"{image}: expected {MPII_JOINTS} joints and {MPII_JOINTS} joints_vis, "
                             f"got {len(joints)} and {len(visible)}", input=at)
                return
            # MPII coordinates are MATLAB's (1-based pixel centres): pixel-edge = value - 0.5
            points.append([v for (x, y), vis in zip(joints, visible)
                           for v in (x - MATLAB_OFFSET, y - MATLAB_OFFSET, 2.0 if vis else 0.0)])
        yield PairRecord(key=key, source=self.name, group=group, task="pose",
                         image_uri=image_uri, input=folder_input(image_uri, self.path, images_root),
                         annotation={"skeleton": "mpii16", "people": points},
                         lineage={"file": image, "people": len(points)})
