"""PASCAL VOC as VOCdevkit unpacks it (`layout: voc` of `type: segmentation`).

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg               every image of every VOC task
    VOCdevkit/VOC2012/SegmentationClass/<id>.png        palette PNG: class index 0..20, 255 void
    VOCdevkit/VOC2012/ImageSets/Segmentation/<list>.txt train.txt, val.txt (trainval.txt: both), test.txt
    VOCdevkit/VOC2012/SegmentationClassAug/<id>.png     SBD's maps as its converters write them (grey, 0..20)
    VOCdevkit/VOC2012/ImageSets/Segmentation/<aug>.txt  train_aug.txt (DeepLab; or in ImageSets/SegmentationAug/,
                                                        or beside VOCdevkit/), trainaug.txt,
                                                        aug.txt (mmseg)
    VOCdevkit/VOC2012/Annotations/<id>.xml              detection: <object><name><bndbox> (`voc_xml`)
    VOCdevkit/VOC2012/ImageSets/Main/<list>.txt         detection's train.txt, val.txt, test.txt

The lists, not the folders, say which images are a task's: JPEGImages holds all 17,125 images of
VOC2012's tasks, of which 2,913 have a class map and 11,540 are detection's. So an image (or an
XML file) no list of an asked task names is none of its set, passed over without a word (not
counted: the folders are shared with the tasks and images this layout does not read). Each id a
list names is one pair or one counted reject (its JPEG, label map or XML gone or bad), and each
label map no segmentation list names is counted (`unlisted_label_map`): VOC's own
SegmentationClass holds exactly trainval's maps. An id in two lists of a task is read once, in the
first of val, train, test (held out wins); an id in one task's train list and another's val or
test list is val for both (one split per image). test.txt names images whose annotations are withheld
(VOC2012test.tar; VOC2007's test annotations were released): an id without its map or XML is one
`unlabeled_split` reject, one with it a val pair. SegmentationObject/ (instance ids) is not read.

SBD's augmented set (the 10,582 train images most VOC segmentation models train on): an id of an
aug list is train, its map VOC's own where SegmentationClass has one (its void border), else
SegmentationClassAug's. The aug list may lie in ImageSets/SegmentationAug/ or beside VOCdevkit/
(where DeepLab-style repos ship train_aug.txt), its lines DeepLab's pairs of paths. SegmentationClassAug also holds SBD's maps
of VOC's val images, which the aug lists leave out so val stays held out (val.txt names them); a map
there whose id no list names is counted (`unlisted_label_map`): without an aug list, every SBD map.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterator

from sources import fsio
from sources.paths import ConfiguredPathMissing, missing_under, path_problem, set_aside_problem, shown_name
from sources.records import FILE_TOO_LARGE, PairRecord, Reject, SourceItem, read_input_bytes, relative_input, safe_key
from sources.voc_classes import is_own, labelmap_colour_ids, own_class_id, shared_colour_notices
from sources.voc_xml import MAX_VOC_XML_BYTES, parse_voc_xml
from transforms.errors import Rejected

VOC_IMAGES = "JPEGImages"
VOC_LABELS = "SegmentationClass"
VOC_XML = "Annotations"
# each task's lists and the folder of its annotations, `<id><suffix>`
VOC_TASKS = {"segmentation": ("ImageSets/Segmentation", VOC_LABELS, ".png"),
             "detection": ("ImageSets/Main", VOC_XML, ".xml")}
VOC_LISTS_FOLDER = VOC_TASKS["segmentation"][0]
VOC_AUG_LABELS = "SegmentationClassAug"
# SBD's augmented train lists (segmentation only), as its converters name them: DeepLab-style repos'
# train_aug.txt, mmseg's voc_aug.py trainaug.txt (train.txt's ids and SBD's) and aug.txt (SBD's)
VOC_AUG_LISTS = ("train_aug.txt", "trainaug.txt", "aug.txt")
VOC_AUG_LISTS_FOLDER = "ImageSets/SegmentationAug"  # kazuto1011/deeplab-pytorch's, of DeepLab's two-column lists
VOC_TRAINVAL_LIST = "trainval.txt"
# the lists read, in the order an id listed twice is taken (held out first); trainval.txt is
# train.txt and val.txt together, so it is read only where neither is there (a set of one list, as
# converters write it): its ids have no split of their own (None: hashed by split.val_fraction)
VOC_SPLIT_LISTS: dict[str, str | None] = {"val.txt": "val", "train.txt": "train",
                                          **dict.fromkeys(VOC_AUG_LISTS, "train"), VOC_TRAINVAL_LIST: None,
                                          "test.txt": "val"}
VOC_TEST_LIST = "test.txt"
VOC_VOID = 255  # VOC's border round each object and its unlabelled pixels: drawn as unlabeled (0)
# the split lists' budget, judged before a list's ids are taken: VOC2012's train.txt is 1,464 ids
# (17 KB), a VOC-format COCO train2017 118,287 (1.5 MB), Open Images' 1.74M train ids 30 MB. The
# bytes cap is each list's; the id cap holds for every list a run reads together (both tasks'
# train, val and test), so the run's unit listing holds about 0.7 GB at most (4M ids: 1.0 GB peak
# RSS, 0.3 GB before; six lists of 4M each, capped apart, took 5.3 GB)
MAX_VOC_LIST_BYTES = 64 << 20
MAX_VOC_LIST_IDS = 4_000_000
VOC_ID = re.compile(r"[A-Za-z0-9_-]+")  # 2007_000032 (2012), 000032 (2007): a file's stem, never a path
# DeepLab's lists (train_aug.txt, its val.txt): the image and its map, a line
# `/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png`: the id is the line's
DEEPLAB_LINE = re.compile(r"/?JPEGImages/(?P<id>[A-Za-z0-9_-]+)\.jpg\s+/?(?:SegmentationClass|SegmentationClassAug)/"
                          r"(?P=id)\.png")
FILES_PER_UNIT = 256
LIST_UNIT = "voc:lists"
HELD_OUT = "val"  # the split of an id a val or test list of any task names
UNLISTED_UNIT = "voc:unlisted"
UNLISTED_AUG_UNIT = "voc:unlisted_aug"


def read_voc_list(uri: str, room: int | None = None) -> tuple[list[str], str, int]:
    """One VOC split list: its ids in order, what is wrong with it ('' when nothing), and how many
    of the run's ids it takes (its lines, 0 when refused). A line is one id (a file stem); a line
    of DeepLab's form, the image's path and its map's, is the image's id; a line of another form
    (two words, a path) is left out and named. `room`: the ids left of
    `MAX_VOC_LIST_IDS` after the lists read before it (None: all of them)."""
    room = MAX_VOC_LIST_IDS if room is None else room
    try:
        data = read_input_bytes(uri, MAX_VOC_LIST_BYTES)
        lines = data.count(b"\n") + (not data.endswith(b"\n") and bool(data))
        if lines > room and room == MAX_VOC_LIST_IDS:  # no list read before it: the cap alone
            return [], f"more than {MAX_VOC_LIST_IDS} lines (the ids a split list may hold)", 0
        if lines > room:
            return [], (f"{lines} lines, more than the {room} ids left of the {MAX_VOC_LIST_IDS} the split "
                        "lists read may hold together (the lists before it take the rest)"), 0
        text = data.decode("utf-8-sig")
    except fsio.FileTooLarge:
        return [], f"larger than {MAX_VOC_LIST_BYTES} bytes (the most a split list may take)", 0
    except UnicodeDecodeError:
        return [], "not UTF-8 text", 0
    except (OSError, ValueError) as exc:
        return [], f"unreadable ({type(exc).__name__})", 0
    ids: list[str] = []
    bad: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        word = line.strip()
        if not word:
            continue
        pair = DEEPLAB_LINE.fullmatch(word)
        if VOC_ID.fullmatch(word) or pair:
            ids.append(pair["id"] if pair else word)
        else:
            bad.append((number, word))
    problem = ""
    if bad:
        problem = (f"{len(bad)} line{'s are' if len(bad) > 1 else ' is'} not an image id "
                   f"(line {bad[0][0]}: {bad[0][1][:60]!r})")
    return ids, problem, lines


def split_list_rejects(source: str, path: str, follow_links: bool, uris: tuple[str, ...],
                       key_of: Callable[[str], str]) -> Iterator[Reject]:
    """Each split list of `uris` that cannot be read, or has lines of another form: one
    `bad_split_list` reject (the ids it gave are read all the same); a good list is nothing. The
    lists are judged in the order their reader took them, so the id cap they share refuses the same one."""
    room = MAX_VOC_LIST_IDS
    for uri in uris:
        key = key_of(uri)
        at = relative_input(uri, fsio.listed_root(path))
        problem = set_aside_problem(path, uri) or path_problem(path, uri, follow_links)
        if problem:
            yield Reject(key, source, key, "read", problem.reason, problem.detail, input=at)
            continue
        _, detail, taken = read_voc_list(uri, room)
        room -= taken
        if detail:
            yield Reject(key, source, key, "read", "bad_split_list", detail[:200], input=at)



def units_of(name: str, files: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """`files` as units named `name`, `FILES_PER_UNIT` to a unit, in their order."""
    return [(name, tuple(files[i: i + FILES_PER_UNIT])) for i in range(0, len(files), FILES_PER_UNIT)]


def unlisted_files(folder: str, suffix: str, taken: set[str]) -> list[str]:
    """The `suffix` files of `folder` (links listed, judged when read) whose id no list took."""
    return [u for u in fsio.list_files(folder, (suffix,), links=True) if fsio.basename(u).rsplit(".", 1)[0] not in taken]


def unlisted_map_rejects(name: str, path: str, labels: str, folder: str, uris: tuple[str, ...],
                         why: str) -> Iterator[Reject]:
    """A label map of the folder `labels` (`folder` below the dataset) that no list names:
    `unlisted_label_map` saying `why`, or the reject of what an operating system left there."""
    listed = fsio.listed_root(labels)
    for uri in uris:
        key = safe_key(name, folder, fsio.basename(uri))
        at = relative_input(uri, fsio.listed_root(path))
        aside = set_aside_problem(listed, uri)
        if aside:
            yield Reject(key, name, key, "read", aside.reason, aside.detail, input=at)
            continue
        yield Reject(key, name, key, "read", "unlisted_label_map", f"{shown_name(fsio.basename(uri))}: {why}", input=at)

@dataclass(frozen=True)
class VocSegmentation:
    """The reader behind `SegmentationSource(layout="voc")`: units are split lists' ids, not files."""

    name: str
    path: str
    follow_links: bool = False
    tasks: tuple[str, ...] = ("segmentation",)

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

    def notices(self) -> list[str]:
        """Warnings about the set as a whole: each colour its labelmap.txt gives two classes, whose
        maps' pixels are drawn as the first (`voc_classes.shared_colour_notices`)."""
        if "segmentation" not in self.tasks:
            return []
        return [f"{self.name}: {notice}" for notice in shared_colour_notices(self.root())]

    def _check(self, root: str) -> None:
        """The set's images, and for each task asked its annotation folder and a train or val list,
        are there; else `check` names `layout` (`tasks` for detection) and what the path holds
        (without the lists nothing says which image is whose)."""
        field = "layout" if self.tasks == ("segmentation",) else "tasks"
        for task in self.tasks:
            lists, folder, _ = VOC_TASKS[task]
            present = {n for n in ("train.txt", "val.txt", VOC_TRAINVAL_LIST, VOC_TEST_LIST)
                       if fsio.exists(fsio.join(root, lists, n))}
            if present == {VOC_TEST_LIST}:
                raise ConfiguredPathMissing(field, (
                    f"voc layout, {task}: of the split lists, {relative_input(fsio.join(root, lists), self.path)}/ "
                    "holds test.txt alone: VOC's test set, whose labels VOC2012test.tar withholds; unpack the "
                    "VOCtrainval tar into the same VOCdevkit/ for its train.txt and val.txt (or, where the test "
                    "labels are there, as VOC2007's, name its ids in val.txt)"))
            for needed in (VOC_IMAGES, folder):
                if not fsio.isdir(fsio.join(root, needed)):
                    raise missing_under(field, self.path, relative_input(fsio.join(root, needed), self.path),
                                        f"voc layout, {task}: ", "; expected VOCdevkit/VOC<year>/ as VOCtrainval "
                                        "tars unpack")
            if not present - {VOC_TEST_LIST}:
                raise missing_under(field, self.path, relative_input(fsio.join(root, lists, "train.txt"), self.path),
                                    f"voc layout, {task}: ", "; nor val.txt or trainval.txt: the split lists say which "
                                    f"images are {task}'s (a list of another name, as CVAT's export writes "
                                    "default.txt: rename it trainval.txt to split its ids by split.val_fraction)")

    def _list_uri(self, root: str, task: str, name: str) -> str:
        """Where list `name` of `task` is: ImageSets/<task's>/; an aug list not there may lie in
        ImageSets/SegmentationAug/ (kazuto1011/deeplab-pytorch) or beside VOCdevkit/ (DeepLab-v2,
        DrSleep's), within `path`."""
        uri = fsio.join(root, VOC_TASKS[task][0], name)
        if name not in VOC_AUG_LISTS or fsio.exists(uri):
            return uri
        elsewhere = [fsio.join(root, VOC_AUG_LISTS_FOLDER, name)]
        if fsio.join(self.path, "VOCdevkit") == root.rsplit("/", 1)[0]:
            elsewhere.append(fsio.join(self.path, name))
        return next((u for u in elsewhere if fsio.exists(u)), uri)

    def _lists_read(self, root: str, task: str) -> list[str]:
        """The split lists of `task` there that are read, in `VOC_SPLIT_LISTS`' order: the aug lists
        for segmentation alone, trainval.txt only where neither train.txt nor val.txt is there."""
        there = [n for n in VOC_SPLIT_LISTS if (n not in VOC_AUG_LISTS or task == "segmentation")
                 and fsio.exists(self._list_uri(root, task, n))]
        return [n for n in there if n != VOC_TRAINVAL_LIST or not {"train.txt", "val.txt"} & set(there)]

    def _listed(self, root: str) -> tuple[dict[tuple[str, str], list[str]], list[str]]:
        """Each readable split list's ids by (task, list name), and every list there (its own
        unit reads each again for its reject)."""
        listed: dict[tuple[str, str], list[str]] = {}
        list_uris = []
        room = MAX_VOC_LIST_IDS  # the ids the lists read may hold together, judged before each list's are taken
        for task in self.tasks:
            for list_name in self._lists_read(root, task):
                uri = self._list_uri(root, task, list_name)
                list_uris.append(uri)
                if path_problem(self.path, uri, self.follow_links) or set_aside_problem(self.path, uri):
                    continue  # its own unit's reject
                listed[task, list_name], _, taken = read_voc_list(uri, room)
                room -= taken
        return listed, list_uris

    def units(self) -> list[tuple[str, tuple[str, ...]]]:
        root = self.root()
        self._check(root)
        units: list[tuple[str, tuple[str, ...]]] = []
        listed, list_uris = self._listed(root)
        # one split per image across the tasks, held out winning: an id of Segmentation/train.txt in
        # Main/val.txt is val for both tasks (its `<task>:train.txt:val` units); an id of a trainval.txt
        # read alone takes the split another task's list gives it (`<task>:trainval.txt:train`)
        held_out = {i for (_, list_name), ids in listed.items() if VOC_SPLIT_LISTS[list_name] == "val" for i in ids}
        trained = {i for (_, list_name), ids in listed.items() if VOC_SPLIT_LISTS[list_name] == "train" for i in ids}
        for task in self.tasks:
            taken: set[str] = set()
            for list_name in VOC_SPLIT_LISTS:
                ids = [i for i in dict.fromkeys(listed.get((task, list_name), ())) if i not in taken]
                taken.update(ids)
                split = VOC_SPLIT_LISTS[list_name]
                moved = {i for i in ids if i in held_out} if split != "val" else set()
                to_train = {i for i in ids if i in trained and i not in moved} if split is None else set()
                for folder, members in ((f"{task}:{list_name}", [i for i in ids if i not in moved | to_train]),
                                        (f"{task}:{list_name}:{HELD_OUT}", [i for i in ids if i in moved]),
                                        (f"{task}:{list_name}:train", [i for i in ids if i in to_train])):
                    units += units_of(folder, [fsio.join(root, VOC_IMAGES, i + ".jpg") for i in members])
            for labels, unit in ((VOC_LABELS, UNLISTED_UNIT), (VOC_AUG_LABELS, UNLISTED_AUG_UNIT)):
                if task != "segmentation" or not fsio.isdir(fsio.join(root, labels)):
                    continue
                units += units_of(unit, unlisted_files(fsio.join(root, labels), ".png", taken))
        return units + ([(LIST_UNIT, tuple(list_uris))] if list_uris else [])

    def read(self, unit: tuple[str, tuple[str, ...]]) -> Iterator[SourceItem]:
        folder, files = unit
        if folder == LIST_UNIT:
            yield from self._read_lists(files)
        elif folder in (UNLISTED_UNIT, UNLISTED_AUG_UNIT):
            yield from self._read_unlisted(files, VOC_LABELS if folder == UNLISTED_UNIT else VOC_AUG_LABELS)
        else:
            task, list_name, *moved = folder.split(":")  # moved: the split another list gives its ids
            yield from self._read_listed(task, list_name, files, moved[0] if moved else VOC_SPLIT_LISTS[list_name])

    def _read_lists(self, uris: tuple[str, ...]) -> Iterator[Reject]:
        """The lists' `bad_split_list` rejects (`split_list_rejects`), judged in `_listed`'s order."""
        yield from split_list_rejects(self.name, self.path, self.follow_links, uris,
                                      lambda uri: safe_key(self.name, *self._under_path(uri).split("/")[-3:]))

    def _under_path(self, uri: str) -> str:
        """`uri` relative to the source's path: a key made of it stays the same when the dataset moves."""
        return relative_input(uri, fsio.listed_root(self.path))

    def _read_unlisted(self, uris: tuple[str, ...], folder: str) -> Iterator[Reject]:
        """A label map of `folder` no list names (`unlisted_label_map`), or what an operating system
        left there."""
        fix = "" if folder == VOC_LABELS else (" (SBD's map: an aug list, DeepLab's train_aug.txt or mmseg's trainaug.txt, "
                                               f"in {VOC_LISTS_FOLDER}/ or beside VOCdevkit/ trains on it)")
        yield from unlisted_map_rejects(self.name, self.path, fsio.join(self.root(), folder), folder, uris,
                                        f"no list of {VOC_LISTS_FOLDER}/ names it{fix}")

    def _read_listed(self, task: str, list_name: str, images: tuple[str, ...],
                     split: str | None) -> Iterator[SourceItem]:
        """Each id a list names: a pair of its JPEG and its annotation, or a counted reject, in
        `split` (its list's, or val where another task's list holds it out; None: hashed)."""
        lists, folder, suffix = VOC_TASKS[task]
        listed_as = f"{lists}/{list_name}"
        if list_name in VOC_AUG_LISTS and images:  # beside VOCdevkit/ (`_list_uri`): named where it is
            uri = self._list_uri(images[0].rsplit("/", 2)[0], task, list_name)
            listed_as = listed_as if uri.endswith("/" + listed_as) else relative_input(uri, fsio.listed_root(self.path))
        for image in images:
            image_id = fsio.basename(image).rsplit(".", 1)[0]
            group = safe_key(self.name, image_id)
            key = f"{group}-{task}"
            annotation = fsio.join(image.rsplit("/", 2)[0], folder, image_id + suffix)
            also = ""  # an aug list's id: VOC's own map, else SBD's
            if list_name in VOC_AUG_LISTS and not fsio.exists(annotation):
                annotation = fsio.join(image.rsplit("/", 2)[0], VOC_AUG_LABELS, image_id + suffix)
                also = f" nor {VOC_AUG_LABELS}/{image_id}{suffix}"
            at = relative_input(image, fsio.listed_root(self.path))
            outside = path_problem(self.path, image, self.follow_links) or \
                path_problem(self.path, annotation, self.follow_links)
            if outside:
                yield Reject(key, self.name, group, "read", outside.reason, outside.detail, split_hint=split, input=at)
                continue
            if list_name == VOC_TEST_LIST and not fsio.exists(annotation):
                yield Reject(key, self.name, group, "read", "unlabeled_split",
                             f"VOC's test annotations are withheld ({listed_as} lists {image_id}; no "
                             f"{folder}/{image_id}{suffix})", split_hint=split, input=at)
                continue
            if not fsio.exists(image):
                yield Reject(key, self.name, group, "read", "missing_image",
                             f"{listed_as} lists {image_id}; no {VOC_IMAGES}/{image_id}.jpg", split_hint=split, input=at)
                continue
            if not fsio.exists(annotation):
                what = "label map" if task == "segmentation" else "annotation"
                yield Reject(key, self.name, group, "read", "missing_annotation",
                             f"{listed_as} lists {image_id}; no {what} {folder}/{image_id}{suffix}{also}",
                             split_hint=split, input=at)
                continue
            lineage = {"file": f"{VOC_IMAGES}/{image_id}.jpg", "voc_list": listed_as}
            if task == "segmentation":
                # an export's RGB maps (CVAT's) painted in its labelmap.txt's colours: each colour its class
                colours = labelmap_colour_ids(image.rsplit("/", 2)[0])
                yield PairRecord(key=key, source=self.name, group=group, task=task, image_uri=image,
                                 annotation={"label_uri": annotation, "unlabeled_ids": (VOC_VOID,),
                                             **({"colour_ids": colours} if colours else {})},
                                 split_hint=split, lineage=lineage)
                continue
            try:
                boxes = parse_voc_xml(read_input_bytes(annotation, MAX_VOC_XML_BYTES))
            except fsio.FileTooLarge:
                boxes = Rejected(FILE_TOO_LARGE, f"over the {MAX_VOC_XML_BYTES} bytes a VOC annotation may take")
            except Rejected as exc:
                boxes = exc
            except (OSError, UnicodeError) as exc:
                boxes = Rejected("unreadable_file", type(exc).__name__)
            xml_at = relative_input(annotation, fsio.listed_root(self.path))
            if isinstance(boxes, Rejected):
                yield Reject(key, self.name, group, "read", boxes.reason, boxes.detail[:200], split_hint=split,
                             input=xml_at)
                continue
            # a class of the dataset's own draws the colour the whole dataset gives it (`voc_classes`)
            voc_root = image.rsplit("/", 2)[0]
            boxes["categories"] = [own_class_id(voc_root, name.strip()) if is_own(name) else category
                                   for name, category in zip(boxes["names"], boxes["categories"])]
            if not boxes["boxes"] and list_name == VOC_TEST_LIST:  # VOC2012test.tar: sizes only, objects withheld
                yield Reject(key, self.name, group, "read", "unlabeled_split",
                             f"VOC's test annotations are withheld ({folder}/{image_id}{suffix} holds no <object>)",
                             split_hint=split, input=xml_at)
                continue
            if not boxes["boxes"]:
                yield Reject(key, self.name, group, "read", f"no_{task}_annotations",
                             f"{folder}/{image_id}{suffix} holds no <object>", split_hint=split, input=xml_at)
                continue
            names = boxes.pop("names")
            yield PairRecord(key=key, source=self.name, group=group, task=task, image_uri=image, annotation=boxes,
                             split_hint=split, lineage={**lineage, "classes": sorted(set(names))})
