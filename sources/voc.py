"""PASCAL VOC's segmentation set as VOCdevkit unpacks it (`layout: voc` of `type: segmentation`).

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg               every image of every VOC task
    VOCdevkit/VOC2012/SegmentationClass/<id>.png        palette PNG: class index 0..20, 255 void
    VOCdevkit/VOC2012/ImageSets/Segmentation/<list>.txt train.txt, val.txt (trainval.txt: both), test.txt

The lists, not the folders, say which images are segmentation's: JPEGImages holds all 17,125
images of the detection, classification and action tasks, of which 2,913 have a class map. So an
image no list names is none of this set's, passed over without a word (not counted: the folder
is shared with the tasks this layout does not read). Each id a list names is one pair or one
counted reject (its JPEG or label map gone), and each label map no list names is counted
(`unlisted_label_map`): VOC's own SegmentationClass holds exactly trainval's maps. An id in two
lists is read once, in the first of val, train, test (held out wins). test.txt (VOC2012test.tar)
names images whose maps are withheld: each one `unlabeled_split` reject, counted in val.
SegmentationObject/ (instance ids) and Annotations/ are not read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

from sources import fsio
from sources.paths import ConfiguredPathMissing, missing_under, path_problem, set_aside_problem, shown_name
from sources.records import PairRecord, Reject, SourceItem, read_input_bytes, relative_input, safe_key

VOC_LISTS_FOLDER = "ImageSets/Segmentation"
VOC_IMAGES = "JPEGImages"
VOC_LABELS = "SegmentationClass"
# the lists read, in the order an id listed twice is taken (held out first); trainval.txt is
# train.txt and val.txt together, so it is not read
VOC_SPLIT_LISTS = {"val.txt": "val", "train.txt": "train", "test.txt": "val"}
VOC_TEST_LIST = "test.txt"
VOC_VOID = 255  # VOC's border round each object and its unlabelled pixels: drawn as unlabeled (0)
MAX_VOC_LIST_BYTES = 1 << 20  # VOC2012's train.txt: 1,464 ids, 17 KB
VOC_ID = re.compile(r"[A-Za-z0-9_-]+")  # 2007_000032 (2012), 000032 (2007): a file's stem, never a path
FILES_PER_UNIT = 256
LIST_UNIT = "voc:lists"
UNLISTED_UNIT = "voc:unlisted"


def read_voc_list(uri: str) -> tuple[list[str], str]:
    """One VOC split list: its ids in order, and what is wrong with it ('' when nothing). A line is
    one id (a file stem); a line of another form (two words, a path) is left out and named."""
    try:
        text = read_input_bytes(uri, MAX_VOC_LIST_BYTES).decode("utf-8-sig")
    except fsio.FileTooLarge:
        return [], f"larger than {MAX_VOC_LIST_BYTES} bytes (a split list is a page of ids)"
    except UnicodeDecodeError:
        return [], "not UTF-8 text"
    except (OSError, ValueError) as exc:
        return [], f"unreadable ({type(exc).__name__})"
    ids: list[str] = []
    bad: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        word = line.strip()
        if not word:
            continue
        if VOC_ID.fullmatch(word):
            ids.append(word)
        else:
            bad.append((number, word))
    problem = ""
    if bad:
        problem = (f"{len(bad)} line{'s are' if len(bad) > 1 else ' is'} not an image id "
                   f"(line {bad[0][0]}: {bad[0][1][:60]!r})")
    return ids, problem


@dataclass(frozen=True)
class VocSegmentation:
    """The reader behind `SegmentationSource(layout="voc")`: units are split lists' ids, not files."""

    name: str
    path: str
    follow_links: bool = False

    def root(self) -> str:
        """The VOC<year> folder: `path` itself, or the one VOC<year> folder below it or below its
        VOCdevkit/ (`check` names them when there are several)."""
        if fsio.isdir(fsio.join(self.path, VOC_IMAGES)):
            return self.path
        for top in (self.path, fsio.join(self.path, "VOCdevkit")):
            found = [d for d in (fsio.list_dirs(top) if fsio.isdir(top) else [])
                     if fsio.isdir(fsio.join(d, VOC_IMAGES))]
            if len(found) > 1:
                names = ", ".join(fsio.basename(d) for d in found)
                raise ConfiguredPathMissing("path", f"voc layout: {top} holds several VOC sets ({names}): "
                                                    "set `path` to one of them (one source each)")
            if found:
                return found[0]
        return self.path

    def _check(self, root: str) -> None:
        """The set's image and label folders and a train or val list are there; else `check` names
        `layout` and what the path holds (without the lists nothing says which image is whose)."""
        for folder in (VOC_IMAGES, VOC_LABELS):
            if not fsio.isdir(fsio.join(root, folder)):
                raise missing_under("layout", self.path, relative_input(fsio.join(root, folder), self.path),
                                    "voc layout: ", "; expected VOCdevkit/VOC<year>/ as VOCtrainval tars unpack")
        lists = fsio.join(root, VOC_LISTS_FOLDER)
        if not any(fsio.exists(fsio.join(lists, n)) for n in ("train.txt", "val.txt")):
            raise missing_under("layout", self.path, relative_input(fsio.join(lists, "train.txt"), self.path),
                                "voc layout: ", "; nor val.txt: the split lists say which images are "
                                "segmentation's")

    def units(self) -> list[tuple[str, tuple[str, ...]]]:
        root = self.root()
        self._check(root)
        lists = fsio.join(root, VOC_LISTS_FOLDER)
        taken: set[str] = set()
        units: list[tuple[str, tuple[str, ...]]] = []
        list_uris = []
        for list_name in VOC_SPLIT_LISTS:
            uri = fsio.join(lists, list_name)
            if not fsio.exists(uri):
                continue
            list_uris.append(uri)
            if path_problem(self.path, uri, self.follow_links) or set_aside_problem(self.path, uri):
                continue  # its own unit's reject
            ids = [i for i in dict.fromkeys(read_voc_list(uri)[0]) if i not in taken]
            taken.update(ids)
            images = [fsio.join(root, VOC_IMAGES, i + ".jpg") for i in ids]
            units += [(list_name, tuple(images[i: i + FILES_PER_UNIT])) for i in range(0, len(images), FILES_PER_UNIT)]
        units += [(LIST_UNIT, tuple(list_uris))] if list_uris else []
        labels = fsio.join(root, VOC_LABELS)
        unlisted = [u for u in fsio.list_files(labels, (".png",), links=True)
                    if fsio.basename(u).rsplit(".", 1)[0] not in taken]
        units += [(UNLISTED_UNIT, tuple(unlisted[i: i + FILES_PER_UNIT]))
                  for i in range(0, len(unlisted), FILES_PER_UNIT)]
        return units

    def read(self, unit: tuple[str, tuple[str, ...]]) -> Iterator[SourceItem]:
        folder, files = unit
        if folder == LIST_UNIT:
            yield from self._read_lists(files)
        elif folder == UNLISTED_UNIT:
            yield from self._read_unlisted(files)
        else:
            yield from self._read_listed(folder, files)

    def _read_lists(self, uris: tuple[str, ...]) -> Iterator[Reject]:
        """A list that cannot be read, or has lines of another form: one `bad_split_list` reject
        (the ids it gave are read all the same); a good list is nothing."""
        for uri in uris:
            key = safe_key(self.name, "ImageSets", "Segmentation", fsio.basename(uri))
            at = relative_input(uri, fsio.listed_root(self.path))
            problem = set_aside_problem(self.path, uri) or path_problem(self.path, uri, self.follow_links)
            if problem:
                yield Reject(key, self.name, key, "read", problem.reason, problem.detail, input=at)
                continue
            detail = read_voc_list(uri)[1]
            if detail:
                yield Reject(key, self.name, key, "read", "bad_split_list", detail[:200], input=at)

    def _read_unlisted(self, uris: tuple[str, ...]) -> Iterator[Reject]:
        """A label map no list names (`unlisted_label_map`), or what an operating system left there."""
        labels = fsio.listed_root(fsio.join(self.root(), VOC_LABELS))
        for uri in uris:
            key = safe_key(self.name, VOC_LABELS, fsio.basename(uri))
            at = relative_input(uri, fsio.listed_root(self.path))
            aside = set_aside_problem(labels, uri)
            if aside:
                yield Reject(key, self.name, key, "read", aside.reason, aside.detail, input=at)
                continue
            yield Reject(key, self.name, key, "read", "unlisted_label_map",
                         f"{shown_name(fsio.basename(uri))}: no list of {VOC_LISTS_FOLDER}/ names it", input=at)

    def _read_listed(self, list_name: str, images: tuple[str, ...]) -> Iterator[SourceItem]:
        """Each id a list names: a pair of its JPEG and its class map, or a counted reject."""
        split = VOC_SPLIT_LISTS[list_name]
        listed_as = f"{VOC_LISTS_FOLDER}/{list_name}"
        for image in images:
            image_id = fsio.basename(image).rsplit(".", 1)[0]
            group = safe_key(self.name, image_id)
            key = f"{group}-segmentation"
            label = fsio.join(image.rsplit("/", 2)[0], VOC_LABELS, image_id + ".png")
            at = relative_input(image, fsio.listed_root(self.path))
            if list_name == VOC_TEST_LIST:
                yield Reject(key, self.name, group, "read", "unlabeled_split",
                             f"VOC's test labels are withheld ({listed_as} lists {image_id})", split_hint=split, input=at)
                continue
            outside = path_problem(self.path, image, self.follow_links) or \
                path_problem(self.path, label, self.follow_links)
            if outside:
                yield Reject(key, self.name, group, "read", outside.reason, outside.detail, split_hint=split, input=at)
                continue
            if not fsio.exists(image):
                yield Reject(key, self.name, group, "read", "missing_image",
                             f"{listed_as} lists {image_id}; no {VOC_IMAGES}/{image_id}.jpg", split_hint=split, input=at)
                continue
            if not fsio.exists(label):
                yield Reject(key, self.name, group, "read", "missing_annotation",
                             f"{listed_as} lists {image_id}; no label map {VOC_LABELS}/{image_id}.png",
                             split_hint=split, input=at)
                continue
            yield PairRecord(key=key, source=self.name, group=group, task="segmentation", image_uri=image,
                             annotation={"label_uri": label, "unlabeled_ids": (VOC_VOID,)}, split_hint=split,
                             lineage={"file": f"{VOC_IMAGES}/{image_id}.jpg", "voc_list": list_name})
