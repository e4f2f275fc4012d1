"""COCO-format annotations: detection boxes, instance segmentation (polygons and RLE), keypoints;
COCO panoptic files (their PNGs' segments, `coco_panoptic`).

One `PairRecord` per (image, task). The annotation files are parsed once per worker process
(COCO train's instances JSON is large) and every unit is a slice of image ids. What a parse
takes is judged from what the files hold before any (`CocoSource.check_index_memory`, `coco_memory`), and the
parses a worker keeps are bounded by the same judgment (`CACHED_INDEX_BYTES`).
"""

from __future__ import annotations

import functools
from array import array
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterator
from urllib.parse import urlsplit

from sources import fsio
from sources import coco_memory
from sources import coco_panoptic as panoptic
from sources.annotation_files import (BAD_ANNOTATION, MAX_ANNOTATION_BYTES, AnnotationFileError, as_int, is_number,
                                      load_json, numbers, where)
from sources.paths import (ConfiguredValueMismatch, OutsideRoot, check_inside, join_inside, links_unchanged,
                           missing_under, recording_links, relative_to_root, resolving, shown_name)
from sources.records import PairRecord, Reject, SourceItem, folder_input, nfc, safe_key
from transforms.annotations import COCO17, MAX_BOXES, MAX_CLASS_ID, MAX_POSE_STEPS

COCO_TASKS = ("detection", "segmentation", "pose")
IMAGES_PER_UNIT = 256
# memory of a parsed index per byte of its annotation files: a COCO-like file of 102 MB (40k
# images, 280k polygons of 12 points) peaked at 740 MB in `load_index` (7.2x, polygons held as lists) and held 645 MB;
# files of many small objects take more a byte: 30 MB of boxes written by `json.dump` without
# spaces peaked at 8.4x (11.3x while each annotation was copied and the file's bytes kept beside
# its text; 7.8x since each annotation id's first index is held without a tuple). Held as lists,
# a CVAT export of tall brush masks (uncompressed RLE counts of 3 digits) peaked at 10.2x (peak
# RSS), polygons of short numbers (`12.5`) at 8.1x, keypoints at 8.2x; kept as arrays
# (`compact_lists`) they peak at 2.4x, 5.4x and 4.2x. A detection file of 300k float boxes (two
# decimals, no spaces) peaked at 8.1x with boxes as lists, 7.1x as arrays. Nothing goes by one ratio
# now: a file of empty objects took 25.1x, so what files take is judged from what they hold (`coco_memory`)
# what one source's index may take, judged from what its files hold before any parse (`CocoSource.units`)
INDEX_MEMORY_MB = 6144
# a worker keeps parses standing for at most this many bytes, as `coco_memory` judges their files
# (one larger index alone): four kept without a bound held 1.2 GB for two 102 MB files, and up to 4
# budgets; bounded by 9x their files' bytes, four sources of 16 MiB files of empty objects held 1541 MiB
CACHED_INDEX_BYTES = 1 << 30


# an image's or annotation's id as pycocotools keys it: an integer (1.0 read as 1), or a text, as
# converters from Pascal VOC or VisDrone write an image's file stem ("2008_000008")
Id = int | str


@dataclass(frozen=True)
class CocoIndex:
    images: dict[Id, dict[str, Any]]
    annotations: dict[Id, list[dict[str, Any]]]  # by image id, also ids that no `images` entry has
    categories: dict[int, dict[str, Any]]
    problems: dict[Id, str]  # image id -> why all its pairs are rejected (an id used twice in one file)
    # added to every category id: 1 where category 0 is a class (Label Studio numbers them from 0),
    # since class 0 is the targets' background black; else 0 (`category_shift`)
    category_shift: int = 0
    # an id whose key another id already makes (`"1"` beside `1`) -> that id; each of them is
    # rejected, naming both (`key_twins`), the twin under a key of its own (`CocoSource.group`)
    twin_of: dict[Id, Id] = field(default_factory=dict)
    image_at: dict[Id, str] = field(default_factory=dict)  # image id -> "file images[i]" of its entry kept
    panoptic_files: tuple[str, ...] = ()  # the COCO panoptic files among the annotation files (`coco_panoptic`)
    # folder -> its real path, of each folder whose links judged a name (`paths.recording_links`):
    # the merge of two names of one file holds only while they resolve the same
    links: dict[str, str] = field(default_factory=dict)

    @functools.cached_property
    def limbs_of(self) -> "Limbs":
        """Each keypoints category's limbs, checked once per index (per annotation file in each
        worker): made per image, a 20,000-pair skeleton was checked and copied again for every
        image, 16 s and 504 MiB for one unit of 256 images (`limbs_by_category`)."""
        return limbs_by_category(self.categories)


AT = "_at"  # where an annotation came from ("instances.json annotations[12]"), for reject details


def _entry_input(image_id: Id, index: "CocoIndex", anns: list[dict[str, Any]]) -> str:
    """An image's pairs' reject `input`: the entry listing it (`instances.json images[3]`), else the
    first annotation naming it, and its id."""
    listed = index.image_at.get(image_id) or (anns[0][AT] if anns else "")
    return f"{listed} (image id {image_id!r})" if isinstance(image_id, str) else f"{listed} (image id {image_id})"


def _compact(values: list) -> array | list:
    """A list of numbers all of one type as an array of machine numbers (4-8 bytes a number for
    an int's 28-32 and its list slot's 8); any other list (ints beside floats, a bool, a text, an
    int past 64 bits, none) as it was, so that `expanded` gives back the very values parsed."""
    kinds = set(map(type, values))
    if kinds == {float}:
        return array("d", values)
    if kinds == {int}:
        for code in ("i", "q"):
            try:
                return array(code, values)
            except OverflowError:
                pass
    return values


def compact_lists(entry: dict[str, Any]) -> dict[str, Any]:
    """`load_json`'s object hook: an object's segmentation (RLE counts, polygons) and keypoints
    kept as arrays, as each object is parsed. A CVAT brush mask's uncompressed counts (3-digit runs:
    a 32-byte int and an 8-byte list slot for 4 characters of JSON) took 10.2x its file's size, past
    the 9x it was judged by then, had the index held them as lists; `expanded` makes them lists again."""
    seg = entry.get("segmentation")
    if isinstance(seg, dict) and isinstance(seg.get("counts"), list):
        seg["counts"] = _compact(seg["counts"])
    elif isinstance(seg, list):
        entry["segmentation"] = [_compact(p) if isinstance(p, list) else p for p in seg]
    if isinstance(entry.get("keypoints"), list):
        entry["keypoints"] = _compact(entry["keypoints"])
    if isinstance(entry.get("bbox"), list):  # a box as a list: 184 bytes for 4 floats, as an array 96
        entry["bbox"] = _compact(entry["bbox"])
    return entry


def expanded(ann: dict[str, Any]) -> dict[str, Any]:
    """An indexed annotation as its file wrote it: `compact_lists`'s arrays as lists again (a new
    dict: the index's stays compact), so that checks and payloads see the values as parsed."""
    seg, points, box, changes = ann.get("segmentation"), ann.get("keypoints"), ann.get("bbox"), {}
    if isinstance(seg, dict) and isinstance(seg.get("counts"), array):
        changes["segmentation"] = {**seg, "counts": seg["counts"].tolist()}
    elif isinstance(seg, list) and any(isinstance(p, array) for p in seg):
        changes["segmentation"] = [p.tolist() if isinstance(p, array) else p for p in seg]
    if isinstance(points, array):
        changes["keypoints"] = points.tolist()
    if isinstance(box, array):
        changes["bbox"] = box.tolist()
    return {**ann, **changes} if changes else ann


def _list(uri: str, data: dict, field: str) -> list:
    value = data.get(field, [])
    if not isinstance(value, list):
        raise AnnotationFileError(uri, f"'{field}' is not a list")
    return value


def _int_field(uri: str, name: str, index: int, entry: Any, field: str) -> int:
    """A category's id (its colour): without it the entry names no class, so the file is refused."""
    value = as_int(entry.get(field)) if isinstance(entry, dict) else None
    if value is None:
        raise AnnotationFileError(uri, f"{name}[{index}] has no integer '{field}'")
    return value


def _id_field(uri: str, name: str, index: int, entry: Any, field: str) -> Id:
    """An id the index is keyed by, an integer or a text: without it the entry belongs to no
    image, so the file is refused."""
    value = entry.get(field) if isinstance(entry, dict) else None
    if isinstance(value, str) and value:
        return value
    number = as_int(value)
    if number is None:
        raise AnnotationFileError(uri, f"{name}[{index}] has no '{field}' (an integer or a text)")
    return number


def id_order(value: Id) -> tuple[bool, int, str]:
    """Integers first, by value, then texts: one order for ids of both kinds (which `sorted` refuses)."""
    return (True, 0, value) if isinstance(value, str) else (False, value, "")


class PanopticFile(AnnotationFileError):
    """A COCO panoptic file given beside instance annotation files: it is read alone."""


def _links_unchanged(index: CocoIndex) -> bool:
    """Whether a kept index still holds: the folders its names were judged by (an absolute name
    through a linked parent) lead where they did. Kept for the process by the files' state alone,
    a parent relinked between two builds in one process (a Dask worker, a test session) kept the
    first build's merge: an alias leading out now still made its name one file with a relative
    name of the root (both `bad_annotation`), one leading in now kept them two images."""
    return links_unchanged(index.links)


def _judged_bytes(annotation_uris: tuple[str, ...], states: tuple) -> tuple[int, int]:
    """What a parse of the files will take at its peak and hold once made, as `check_index_memory`
    judged them (the same pass, kept by their state: `coco_memory.judged`). A file that cannot be
    read counts its bytes: its parse meets the error and reports it (`load_json`)."""
    peak = held = 0
    for uri, state in zip(annotation_uris, states):
        try:
            counts = coco_memory.judged(uri, MAX_ANNOTATION_BYTES, state)
            peak, held = peak + counts.parsed_bytes(), held + counts.held_bytes()
        except OSError:
            size = state[0] if isinstance(state[0], int) else 0
            peak, held = peak + size, held + size
    return peak, held


@fsio.cached_input(maxsize=4, max_bytes=CACHED_INDEX_BYTES, fresh=_links_unchanged, weigh_files=_judged_bytes)
def load_index(annotation_uris: tuple[str, ...], images_uri: str) -> CocoIndex:
    """Merge COCO JSON files (instances, person_keypoints...) by image id and annotation id.

    Entries without the ids that place them (an image's `id`, an annotation's `id` and
    `image_id`) refuse the file, naming it and the entry's index; every other value is checked
    when its pair is made, so that a bad one rejects that pair only. The same id in two files
    merges (person_keypoints repeats instances' images and people); an id used twice within one
    file is ambiguous (which entry is the image, which the object?), so every pair of the images
    involved is rejected, naming the file and both entries, and the rest of the file is used.
    File names are compared as the files `CocoSource.read` opens under `images_uri` (`_file_key`),
    each folder's links resolved once for this index (`paths.resolving`).
    """
    with resolving(), recording_links() as links:
        index = _merged_index(annotation_uris, images_uri)
    index.links.update(links)
    return index


def _merged_index(annotation_uris: tuple[str, ...], images_uri: str) -> CocoIndex:
    """`load_index`'s merge, uncached."""
    images: dict[Id, dict[str, Any]] = {}
    image_at: dict[Id, str] = {}  # id -> "file images[i]" of the entry kept
    named_at: dict[Id, str] = {}  # image id -> "file annotations[i]" of the first annotation naming it
    named_by: dict[str, tuple[Id, str, Any]] = {}  # a file read -> the first id naming it, where, its name
    file_of: dict[Id, tuple[tuple[bool, Any], Any]] = {}  # image id -> its kept entry's `_file_key`, name
    key_of = functools.partial(_file_key, join_inside(images_uri, "."), images_uri)
    same = functools.partial(_same_file, images_uri)
    annotations: dict[Id, dict[Id, dict[str, Any]]] = defaultdict(dict)
    categories: dict[int, dict[str, Any]] = {}
    problems: dict[Id, str] = {}
    label_studio = False
    panoptic_files: list[str] = []
    for uri in annotation_uris:
        data = load_json(uri, object_hook=compact_lists)
        if not isinstance(data, dict):
            raise AnnotationFileError(uri, "is not a COCO JSON object")
        label_studio = label_studio or is_label_studio(data)
        short = fsio.basename(uri)
        seen_images: dict[Id, int] = {}  # id -> index of its first entry in this file
        for index, image in enumerate(_list(uri, data, "images")):
            image_id = _id_field(uri, "images", index, image, "id")
            name = file_name_of(image)
            file_key = key_of(name)
            if image_id in seen_images:
                problems.setdefault(image_id, f"{short} images[{seen_images[image_id]}] and images[{index}] "
                                              f"both have id {image_id}")
            elif image_id in images and not same(file_of[image_id], (file_key, name)):
                # instances and person_keypoints list the same images; another file is another image
                problems.setdefault(image_id, f"{image_at[image_id]} and {short} images[{index}] give id {image_id} "
                                              f"different file_names")
            seen_images.setdefault(image_id, index)
            _one_id_a_file(named_by, (file_key, name), image_id, f"{short} images[{index}]", problems, same)
            images[image_id] = image
            file_of[image_id] = (file_key, name)
            image_at[image_id] = f"{short} images[{index}]"
        for index, category in enumerate(_list(uri, data, "categories")):
            category_id = _int_field(uri, "categories", index, category, "id")
            categories[category_id] = {**categories.get(category_id, {}), **category}
        # id -> index of its first entry in this file (not with its image id: a tuple an annotation
        # took 8% of a file of small boxes at the peak)
        seen_anns: dict[Id, int] = {}
        entries = _list(uri, data, "annotations")
        if panoptic.is_panoptic_file(entries):
            panoptic_files.append(uri)
            _index_panoptic(uri, entries, annotations, named_at, problems)
            continue
        for index, ann in enumerate(entries):
            image_id = _id_field(uri, "annotations", index, ann, "image_id")
            ann_id = _id_field(uri, "annotations", index, ann, "id")
            named_at.setdefault(image_id, f"{short} annotations[{index}]")
            if ann_id in seen_anns:
                first = seen_anns[ann_id]
                first_image = _id_field(uri, "annotations", first, entries[first], "image_id")
                problem = f"{short} annotations[{first}] and annotations[{index}] both have id {ann_id}"
                problems.setdefault(first_image, problem)  # the first problem found is the one reported
                problems.setdefault(image_id, problem)
            seen_anns.setdefault(ann_id, index)
            # the entry itself is kept (another file's of the same id merged into the first): a copy
            # held beside the parsed file doubled what a file of many small objects took
            kept = annotations[image_id].setdefault(ann_id, ann)
            if kept is not ann:
                kept.update(ann)
            kept[AT] = f"{short} {where('annotations', index, ann)}"
    if panoptic_files and len(panoptic_files) != len(annotation_uris):
        others = ", ".join(fsio.basename(u) for u in annotation_uris if u not in panoptic_files)
        raise PanopticFile(panoptic_files[0], f"is a COCO panoptic file, given beside {others}: its PNGs draw the "
                                              "segmentation and detection pairs, so it is read alone; give the "
                                              "others to a source of their own")
    shift = category_shift(categories, annotations, label_studio)
    twin_of = key_twins([*images, *annotations])
    for other, first in twin_of.items():  # the first problem found is the one reported
        problems.setdefault(first, _twin_problem(first, other, image_at, named_at))
        problems.setdefault(other, _twin_problem(first, other, image_at, named_at))
    return CocoIndex(images, {k: [v[i] for i in sorted(v, key=id_order)] for k, v in annotations.items()}, categories,
                     problems, shift, twin_of, image_at, tuple(panoptic_files))


def _index_panoptic(uri: str, entries: list[Any], annotations: dict[Id, dict[Id, dict[str, Any]]],
                    named_at: dict[Id, str], problems: dict[Id, str]) -> None:
    """A panoptic file's entries, each under its image id (`panoptic.PANOPTIC_KEY`), its PNG folder
    beside it; two entries of one image (which PNG is it?) are a problem of that image."""
    short = fsio.basename(uri)
    for index, entry in enumerate(entries):
        image_id = _id_field(uri, "annotations", index, entry, "image_id")
        named_at.setdefault(image_id, f"{short} annotations[{index}]")
        kept = annotations[image_id].setdefault(panoptic.PANOPTIC_KEY, entry)
        if kept is not entry:
            problems.setdefault(image_id, f"{kept[AT]} and {short} annotations[{index}] both give image {image_id} "
                                          f"a panoptic PNG")
            continue
        entry[AT] = f"{short} annotations[{index}]"
        entry[panoptic.PNG_DIR] = panoptic.default_png_dir(uri)


# what a category 0 that no annotation uses is called where it names no class
BACKGROUND_NAMES = ("background", "__background__", "_background_")


def is_label_studio(data: dict[str, Any]) -> bool:
    """Label Studio's COCO export (label-studio-converter's `convert_to_coco`) signs its `info`
    with `contributor: "Label Studio"`."""
    info = data.get("info")
    return isinstance(info, dict) and info.get("contributor") == "Label Studio"


def category_shift(categories: dict[int, dict[str, Any]], annotations: dict[Id, dict[Id, dict[str, Any]]],
                   label_studio: bool = False) -> int:
    """1 where category 0 is a class (its colour would be the background's black), else 0. Label
    Studio declares every label of its project from 0, used or not: judged by use, an export
    without an object of class 0 (a val split) was read as it stands and one with them one up, so
    a class took another's colour. Its 0 is a class whatever its name (labels are numbered sorted,
    so a label "Background" is 0 beside Car and Person): its exports are always read one up. In
    other files Roboflow's 0 (the project, the others' `supercategory`) and a `background` 0 name
    no class, unless an annotation uses them."""
    if 0 not in categories:
        return 0
    if label_studio:
        return 1
    if any(as_int(ann.get("category_id")) == 0 for anns in annotations.values() for ann in anns.values()):
        return 1
    name = categories[0].get("name")
    if not isinstance(name, str):
        return 1
    placeholder = name.lower() in BACKGROUND_NAMES or any(c.get("supercategory") == name
                                                         for k, c in categories.items() if k != 0)
    return 0 if placeholder else 1


# a coco_url's schemes whose path's last folder and file name an image (LVIS's are http); no other
# names one (a `data:` URI's base64 is no file name, a `file:` URL's folder not images_dir's)
COCO_URL_SCHEMES = frozenset({"", "http", "https", "s3", "gs"})


def file_name_of(image: dict[str, Any]) -> Any:
    """An image entry's file under the images folder: its `file_name`; where it has none (LVIS v1
    writes only `coco_url`, `http://images.cocodataset.org/val2017/000000397133.jpg`), the URL's
    last folder and file (`val2017/000000397133.jpg`), as detectron2's and MMDetection's LVIS
    readers take it: `images_dir` is then the folder holding COCO's `train2017/` and `val2017/`
    (LVIS's val images come from both). None where neither names one (`no_file_named`)."""
    name = image.get("file_name")
    if name not in (None, "") or "coco_url" not in image:
        return name
    return _coco_url_file(image["coco_url"])[0]


def no_file_named(image: dict[str, Any]) -> str:
    """Why an entry names no file (`file_name_of` gave none), for its reject: a coco_url's scheme
    alone is named, never the URL (a `data:` URI holds a whole image)."""
    why = "file_name is not a text, nor does a coco_url end in <folder>/<file> (as LVIS's name COCO's)"
    if image.get("file_name") not in (None, "") or "coco_url" not in image:
        return why
    return _coco_url_file(image["coco_url"])[1] or why


def _coco_url_file(url: Any) -> tuple[str | None, str]:
    """A coco_url's last folder and file, or None and why it names none (empty where it has no folder)."""
    if not isinstance(url, str):
        return None, ""
    try:
        split = urlsplit(url)
    except ValueError:  # an IPv6 host left open, `http://[::1/x.jpg`
        return None, "file_name is not a text, and its coco_url is no URL"
    if split.scheme not in COCO_URL_SCHEMES:
        return None, (f"file_name is not a text, and its coco_url is a {ascii(split.scheme[:20])} URL: only http, "
                      "https, s3 and gs URLs (or a path) name a file under images_dir")
    parts = [part for part in split.path.split("/") if part]
    return ("/".join(parts[-2:]), "") if len(parts) >= 2 else (None, "")


# LVIS's per-image category lists: a class not exhaustively labelled there (its unlabelled pixels
# may be that class) and classes verified absent; they ride in the lineage for a trainer to use
LVIS_IMAGE_LISTS = ("not_exhaustive_category_ids", "neg_category_ids")
# ids of one list kept in the lineage, and their bytes as JSON (a lineage value's budget elsewhere;
# LVIS v1 lists a few dozen ids under 1,204 at most): each record's lineage is held until its unit ends
MAX_LINEAGE_IDS = 512
MAX_LINEAGE_BYTES = 4096


def lvis_lineage(image: dict[str, Any]) -> dict[str, Any]:
    """An LVIS image's category lists as written (a list past `MAX_LINEAGE_IDS` or
    `MAX_LINEAGE_BYTES`, or not of ids, marked)."""
    kept: dict[str, Any] = {}
    for name in LVIS_IMAGE_LISTS:
        if name not in image:
            continue
        ids = image[name]
        ids = [as_int(v) for v in ids] if isinstance(ids, list) and len(ids) <= MAX_LINEAGE_IDS else None
        kept[name] = ids if ids is not None and None not in ids and _json_bytes_within(ids) else \
            {"truncated": f"not a list of at most {MAX_LINEAGE_IDS} category ids ({MAX_LINEAGE_BYTES} bytes as JSON): "
                          "left out"}
    return kept


def _json_bytes_within(ids: list[int]) -> bool:
    """Whether `ids` take at most `MAX_LINEAGE_BYTES` as JSON (`[1, 2]`), counted until past it (an id
    may have thousands of digits: the first such ends the count)."""
    size = 0
    for value in ids:
        size += len(str(value)) + 2  # its ", " (the last one's, the brackets')
        if size > MAX_LINEAGE_BYTES:
            return False
    return True


# where Label Studio's COCO export without its images names each: the server's upload or local storage
LABEL_STUDIO_SERVER_PATHS = ("/data/upload/", "/data/local-files/")


def server_path_fix(name: str) -> str:
    """What to do about a `file_name` that is a Label Studio server's path, to add to its reject."""
    if not name.startswith(LABEL_STUDIO_SERVER_PATHS):
        return ""
    return ("; Label Studio's COCO export names an image by its server path where it leaves the images out: "
            "export it with its images (its result.json names images/<name>) and set annotation_files: "
            "[result.json], images_dir: .")


def image_path(images_uri: str, name: str) -> str:
    """The file `CocoSource.read` opens for a `file_name`; `OutsideRoot` for one outside the folder."""
    return join_inside(images_uri, windows_name(images_uri, name))


def _file_key(root: str, images_uri: str, name: Any) -> tuple[bool, Any]:
    """What two entries of one id must share to be one image: (True, the file read as the images
    folder `root` sees it: Windows separators read as folders, `./`, an absolute name inside the
    folder resolved), or (False, the name as written) where no file is read for it (not a text, or
    outside the folder: its pairs are rejected for that). Once an entry in every worker: no
    filesystem call but, for an absolute name not written under the folder, its folder's links
    resolved once per folder (`paths._real`); no request on gs://: a file named with a backslash is
    told apart from the folders only where two keys meet (`_same_file`), or where read as folders
    it climbs out."""
    if not isinstance(name, str) or not name:
        return False, name
    try:
        return True, relative_to_root(root, join_inside(images_uri, name.replace("\\", "/")))
    except OutsideRoot:
        pass
    try:
        return (True, relative_to_root(root, image_path(images_uri, name))) if "\\" in name else (False, name)
    except OutsideRoot:
        return False, name


def _same_file(images_uri: str, entry: tuple[tuple[bool, Any], Any], other: tuple[tuple[bool, Any], Any]) -> bool:
    """Whether two entries (`_file_key`, name as written) name the one file `CocoSource.read` opens:
    one key is one file unless a name with a backslash is a file of that very name (`windows_name`),
    which only the filesystem can say, so it is asked here, where keys meet, not for every entry."""
    (key, name), (other_key, other_name) = entry, other
    if key != other_key:
        return False
    if name == other_name or "\\" not in name + other_name:
        return True
    return image_path(images_uri, name) == image_path(images_uri, other_name)


def _one_id_a_file(named_by: dict[str, tuple[Id, str, Any]], entry: tuple[tuple[bool, Any], Any], image_id: Id,
                   at: str, problems: dict[Id, str],
                   same: Callable[[tuple[tuple[bool, Any], Any], tuple[tuple[bool, Any], Any]], bool]) -> None:
    """Record which id names the file read for the entry (`_file_key`, name); a file another id
    names already makes a problem of both ids. Merged exports (or a picture uploaded twice) list
    one file under two ids, each with part of its objects: each pair drew only its own, and the
    two, hashed apart, put one picture in train and in val. Two spellings of one file (`sub\\1.png`
    beside `sub/1.png`, an absolute name inside the folder) are one file (`same`). The same id
    naming its file again (instances and person_keypoints) is one image."""
    (read, path), name = entry
    if not read:
        return  # its pairs are rejected for that (`CocoSource.read`)
    first_id, first_at, first_name = named_by.setdefault(path, (image_id, at, name))
    if first_id == image_id or not same(((True, path), first_name), entry):  # `1` never equals `"1"`
        return
    problem = (f"{first_at} (id {first_id}) and {at} (id {image_id}) both name "
               f"{shown_name(path)}: give a file one id")
    problems.setdefault(first_id, problem)  # the first problem found is the one reported
    problems.setdefault(image_id, problem)


def key_twins(ids: list[Id]) -> dict[Id, Id]:
    """Each id whose pairs' key another id makes too -> the first of them (by `id_order`). Ids are
    kept by their raw value, as pycocotools keys them, so `"1"` and `1` (or a text in NFC and in
    NFD) are two images, but a key is made of the id's text: left alone they met only at assembly,
    as a late `duplicate_key`."""
    by_text: dict[str, list[Id]] = defaultdict(list)
    for image_id in sorted(set(ids), key=id_order):
        by_text[nfc(str(image_id))].append(image_id)
    return {other: same[0] for same in by_text.values() for other in same[1:]}


def _twin_problem(first: Id, other: Id, image_at: dict[Id, str], named_at: dict[Id, str]) -> str:
    """Why the images of two ids that make one key are refused, naming where each is written."""
    def written(image_id: Id) -> str:
        if image_id in image_at:
            return f"{image_at[image_id]} has id {_shown_id(image_id)}"
        return f"{named_at[image_id]} has image_id {_shown_id(image_id)}"

    why = ("pycocotools keeps them apart, torchvision and Detectron2 cannot sort them; write every id as one type"
           if type(first) is not type(other) else "one text in two Unicode forms (NFC and NFD); write it in one")
    return f"{written(first)} and {written(other)}: {why}"


def _shown_id(image_id: Id) -> str:
    return f"{image_id!r} (a text)" if isinstance(image_id, str) else f"{image_id} (a number)"


def _has_area(ann: dict[str, Any]) -> bool:
    """A box that encloses something; a mask's box is measured when drawn (none: not drawn), a
    mask of points or lines (labelme's line shape, given with no box) has none."""
    if mask_only(ann):
        return not _short_polygons(ann["segmentation"])
    bbox = ann["bbox"]
    return bbox[2] > 0 and bbox[3] > 0


def _detection_payload(anns: list[dict[str, Any]], image: dict[str, Any], shift: int,
                       size_problem: str | None) -> dict | str:
    """The boxes of an image's objects (crowd regions left out), each turned where it was
    (`rotations`), or boxed by its mask where it has no box of its own (`box_masks`)."""
    boxes = [a for a in anns if is_object(a)]
    kept = [a for a in boxes if _has_area(a) and not a.get("iscrowd", 0)]
    if not kept:
        return _no_boxes(boxes)
    if size_problem:
        return f"image {image.get('id')}: {size_problem}"
    plain = [([0.0] * 4, 0.0) if mask_only(a) else plain_box(a) for a in kept]
    payload = {**declared_size(image), "boxes": [box for box, _ in plain],
               "categories": [int(as_int(a["category_id"])) + shift for a in kept]}
    if any(turn for _, turn in plain):  # CVAT's rotated rectangles, detectron2's rotated boxes
        payload["rotations"] = [turn for _, turn in plain]
    if any(mask_only(a) for a in kept):
        payload["box_masks"] = [a["segmentation"] if mask_only(a) else None for a in kept]
    return payload


def _panoptic_payload(task: str, entry: dict[str, Any], image: dict[str, Any], index: CocoIndex,
                      png_uri: str | None) -> dict | str:
    """A panoptic entry's pair: segmentation draws its PNG's segments by category; detection the
    boxes of its thing segments as an instances pair draws objects (each segment checked as an
    object is, crowd regions left out); it has no keypoints."""
    problem = panoptic.segments_problem(entry, index.categories)
    if problem or png_uri is None:
        return f"{entry[AT]}: {problem or 'file_name (its PNG) is not a text'}"
    if task == "pose":
        return Missing("has none (a panoptic file has no keypoints)")
    size_problem = declared_size_problem(image)
    if task == "segmentation":
        if size_problem:
            return f"image {image.get('id')}: {size_problem}"
        return {**declared_size(image), **panoptic.segmentation_payload(entry, png_uri)}
    things = [{**expanded(s), AT: f"{entry[AT]} segments_info[{i}]"}
              for i, s in panoptic.indexed_segments(entry) if panoptic.is_thing(s, index.categories)]
    for thing in things:
        problem = detection_problem(thing, 0) if is_object(thing) else "has no bbox"
        if problem:
            return f"{thing[AT]}: {problem}"
    return _detection_payload(things, image, 0, size_problem)


class Missing(str):
    """The detail of a pair that has nothing of its task (`no_<task>_annotations`)."""


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _no_boxes(boxes: list[dict[str, Any]]) -> Missing:
    """Why an image's boxes draw nothing: crowd regions are not objects, a box of no area
    encloses nothing."""
    crowds = sum(1 for a in boxes if a.get("iscrowd", 0))
    flat = len(boxes) - crowds
    if not boxes:
        return Missing("has none")
    parts = []
    if flat:
        parts.append("has no area" if len(boxes) == 1 else f"{flat} {'has' if flat == 1 else 'have'} no area")
    if crowds:
        parts.append("is a crowd region (iscrowd 1)" if len(boxes) == 1 else
                     f"{crowds} {'is a crowd region' if crowds == 1 else 'are crowd regions'} (iscrowd 1)")
    lead = "its 1 box" if len(boxes) == 1 else f"its {len(boxes)} boxes:"
    return Missing(f"{lead} {', '.join(parts)}")


def served(anns: list[dict[str, Any]]) -> set[str]:
    """The tasks an image's annotations could make a pair of: a panoptic entry's detection and
    segmentation, an object's detection, a mask's segmentation, a person's pose."""
    if anns and panoptic.PNG_DIR in anns[0]:
        return {"detection", "segmentation"}
    tasks = {"detection"} if any(is_object(a) for a in anns) else set()
    tasks |= {"segmentation"} if any(a.get("segmentation") for a in anns) else set()
    return tasks | ({"pose"} if any("keypoints" in a or "num_keypoints" in a for a in anns) else set())


def _no_segments(short: int) -> Missing:
    """Why an image's segmentation draws nothing: it has none, or only points and lines."""
    if not short:
        return Missing("has none")
    return Missing("its 1 segment has no polygon of 3 or more points" if short == 1 else
                   f"its {short} segments have no polygon of 3 or more points")


def _left_out(task: str, anns: list[dict[str, Any]]) -> dict[str, int]:
    """What a drawn pair leaves out, said in its lineage: a crowd region (iscrowd 1) covers many
    objects and is no box to draw (COCO's evaluation ignores it, detectron2 drops it from box
    targets, MMDetection makes it `gt_bboxes_ignore`), but it must not vanish unsaid; nor a box of
    no width or height (`boxes_without_area`), nor an object whose polygons are points or lines
    (`segments_without_polygon`: labelme2coco's point and line shapes, which detectron2 drops).
    What draws nothing once drawn (outside the image) the renderer counts."""
    if task == "detection":
        objects = [a for a in anns if is_object(a)]
        crowds = sum(1 for a in objects if a.get("iscrowd", 0))
        flat = sum(1 for a in objects if not a.get("iscrowd", 0) and not _has_area(a))
        counts = {"crowd_regions_left_out": crowds, "boxes_without_area": flat}
    elif task == "segmentation":
        counts = {"segments_without_polygon": sum(1 for a in anns if _short_polygons(a.get("segmentation")))}
    else:
        counts = {}
    return {name: count for name, count in counts.items() if count}


def _short_polygons(seg: Any) -> bool:
    """Polygons none of which has 3 points (a point or a line: it draws nothing)."""
    return isinstance(seg, list) and bool(seg) and not any(len(p) >= 6 for p in seg)


def _polygon_problem(seg: Any) -> str | None:
    """Polygons: lists of x, y pairs, at least one with 3 points (1-2 points draw nothing). A flat
    list (one polygon not wrapped) and an odd count are named as such: 'not lists of numbers'
    sent a user looking for a text among them."""
    if isinstance(seg, list) and seg and all(is_number(v) for v in seg):
        return "segmentation is one flat list of numbers, not a list of polygons ([[x1, y1, x2, y2, ...]])"
    if not isinstance(seg, list) or not all(numbers(p) for p in seg):
        return "segmentation polygons are not lists of x, y numbers"
    if not all(len(p) % 2 == 0 for p in seg):
        return "a segmentation polygon holds an odd count of coordinates"
    return None  # none of 3 points or more: the object is left out of the pair and counted (`_left_out`)


def _rle_problem(seg: dict) -> str | None:
    size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(as_int(v) is not None and as_int(v) > 0 for v in size)):
        return "RLE segmentation has no [height, width] size"
    if not (isinstance(counts, str) or (isinstance(counts, list) and all(as_int(c) is not None and as_int(c) >= 0
                                                                         for c in counts))):
        return "RLE segmentation counts are neither a string nor a list of run lengths"
    return None


def _category_problem(ann: dict[str, Any], shift: int = 0, declared: Collection[int] = ()) -> str | None:
    """The category is the target's colour: 1..MAX_CLASS_ID each have their own (0 is the
    background's black, and a larger id would wrap onto another class's colour or overflow).
    `shift` is the index's `category_shift` (0-based ids are read one up). Where the file declares
    categories (`declared`, their ids), one it does not declare names no class: a stale or badly
    merged export, drawn in some colour as if it were one (detectron2 and MMDetection fail on it
    with a KeyError; the panoptic reader rejects it too)."""
    category_id = as_int(ann.get("category_id"))
    if category_id is None:
        return "category_id is not an integer"
    if not 1 <= category_id + shift <= MAX_CLASS_ID:
        return f"category_id is outside {1 - shift}..{MAX_CLASS_ID - shift} (the ids the target palette colours)"
    if declared and category_id not in declared:
        return f"category_id {category_id} is not one that categories declares"
    return None


def segmentation_problem(ann: dict[str, Any], shift: int = 0, declared: Collection[int] = ()) -> str | None:
    seg = ann["segmentation"]
    problem = _rle_problem(seg) if isinstance(seg, dict) else _polygon_problem(seg)
    return problem if problem is not None else _category_problem(ann, shift, declared)


def windows_name(images_uri: str, name: str) -> str:
    """`name` with Windows' separators read as folders (`train2017\\139.jpg`, as converters and
    scripts run on Windows write `file_name`), where no file has the name as written (a Linux
    file name may hold a backslash). Climbing out that way (`..\\x.jpg`) is refused as `../x.jpg`
    is, by `join_inside`."""
    if "\\" not in name:
        return name
    try:
        if fsio.exists(join_inside(images_uri, name)):
            return name
    except OutsideRoot:
        pass
    return name.replace("\\", "/")


def box_rotation(ann: dict[str, Any]) -> Any:
    """CVAT's rotated rectangle: its COCO export writes the box before the turn as `bbox` and the
    turn (degrees about the box's centre, clockwise on the screen) as `attributes.rotation`."""
    attributes = ann.get("attributes")
    return attributes.get("rotation", 0) if isinstance(attributes, dict) else 0


def mask_only(ann: dict[str, Any]) -> bool:
    """An object given only as a mask (a brush mask exported with `bbox` left out, null or `[]`):
    its box is its mask's, measured when the pair is drawn (`render_annotated._mask_boxes`)."""
    return bool(ann.get("segmentation")) and ann.get("bbox") in (None, [])


def is_object(ann: dict[str, Any]) -> bool:
    """An annotation the detection pair draws (or counts as left out): one with a box or a mask."""
    return "bbox" in ann or mask_only(ann)


# detectron2's `BoxMode` numbers, as its dataset dicts carry them in `bbox_mode` (an IntEnum,
# which `json.dump` writes as its number): COCO's [x, y, w, h] is XYWH_ABS; a rotated box
# [cx, cy, w, h, angle] is XYWHA_ABS (angle in degrees, counter-clockwise on the screen)
XYWH_ABS, XYWHA_ABS = 0, 4
BOX_MODES = {0: "XYWH_ABS", 1: "XYXY_ABS", 2: "XYXY_REL", 3: "XYWH_REL", 4: "XYWHA_ABS"}


def _box_mode_problem(ann: dict[str, Any]) -> str | None:
    """A box whose numbers are not what its `bbox_mode` says they are (4 numbers are [x, y, w, h],
    5 detectron2's rotated [cx, cy, w, h, degrees]): read as a plain box it would draw elsewhere."""
    bbox = ann["bbox"]
    if len(bbox) == 5 and is_number(box_rotation(ann)) and box_rotation(ann):
        return "bbox is a rotated box (5 numbers) and attributes.rotation turns it again"
    if "bbox_mode" not in ann:
        return None
    mode, wanted = as_int(ann["bbox_mode"]), (XYWHA_ABS if len(bbox) == 5 else XYWH_ABS)
    if mode == wanted:
        return None
    named = f"{ann['bbox_mode']} ({BOX_MODES[mode]})" if mode in BOX_MODES else repr(ann["bbox_mode"])[:40]
    return (f"bbox of {len(bbox)} numbers with bbox_mode {named}: read are [x, y, width, height] "
            f"(XYWH_ABS, 0) and detectron2's rotated [cx, cy, width, height, degrees] (XYWHA_ABS, 4)")


def detection_problem(ann: dict[str, Any], shift: int = 0, declared: Collection[int] = ()) -> str | None:
    if mask_only(ann):  # its mask is its box (points or a line: no area, `_has_area`)
        return segmentation_problem(ann, shift, declared)
    if not (numbers(ann.get("bbox"), length=4) or numbers(ann.get("bbox"), length=5)):
        return "bbox is not 4 numbers (nor 5: detectron2's rotated box)"
    if ann["bbox"][2] < 0 or ann["bbox"][3] < 0:
        return "bbox has a negative width or height"
    if not is_number(box_rotation(ann)):
        return "attributes.rotation is not a number of degrees"
    return _box_mode_problem(ann) or _category_problem(ann, shift, declared)


def plain_box(ann: dict[str, Any]) -> tuple[list[float], float]:
    """A checked box as [x, y, w, h] before its turn, and the turn (degrees clockwise on the
    screen, as CVAT's `attributes.rotation`). detectron2's XYWHA_ABS [cx, cy, w, h, a] turns
    counter-clockwise by a (its `draw_rotated_box_with_label`), so -a clockwise about its centre."""
    bbox = [float(v) for v in ann["bbox"]]
    if len(bbox) == 5:
        cx, cy, w, h, angle = bbox
        return [cx - w / 2, cy - h / 2, w, h], -angle % 360
    return bbox, float(box_rotation(ann)) % 360


def declared_size_problem(image: dict[str, Any]) -> str | None:
    """The image entry's `width`/`height`, where given, must be positive integers, or 0 (CVAT's
    exporter writes 0 for a size it did not know): the renderer compares them with the decoded
    image (its coordinates' frame)."""
    for name in ("width", "height"):
        value = as_int(image.get(name)) if name in image else 0
        if value is None or value < 0:
            return f"{name} is not a positive integer"
    return None


def declared_size(image: dict[str, Any]) -> dict[str, int | None]:
    """The frame the coordinates were drawn in, as far as the entry says (None: not said)."""
    return {name: (as_int(image.get(name)) or None) for name in ("height", "width")}


def _skeleton_problem(skeleton: Any, category_id: Any, points: int) -> str | None:
    if not (isinstance(skeleton, list) and all(isinstance(p, list) and len(p) == 2 and all(as_int(v) is not None
                                                                                          for v in p)
                                               for p in skeleton)):
        return f"category {category_id} skeleton is not a list of point pairs"
    for pair in skeleton:
        for v in pair:
            if not 1 <= as_int(v) <= points:
                return f"category {category_id} skeleton names point {as_int(v)} (its pairs are 1-based, 1..{points})"
    return None


def person_limbs(ann: dict[str, Any], categories: dict[int, dict[str, Any]]) -> list[list[int]] | str | None:
    """The 0-based limbs of a person from its category's 1-based `skeleton`; None for COCO's own
    17-point skeleton (the built-in `coco17`, in any order), a text when the category and the
    keypoints disagree. A category with no skeleton (or `skeleton: []`, as CVAT and Label Studio
    write when it has none) draws 17 points unnamed or named as COCO's as COCO's person, other
    points alone."""
    points = len(ann["keypoints"]) // 3
    category_id = ann.get("category_id")
    category = categories.get(as_int(category_id), {}) if as_int(category_id) is not None else {}
    names = category.get("keypoints")
    if isinstance(names, list) and names and len(names) != points:
        return f"keypoints hold {points} points, category {category_id} names {len(names)}"
    skeleton = category.get("skeleton")
    if not skeleton:  # COCO's person only where its points are COCO's (`coco_order`), else points alone
        unnamed = not (isinstance(names, list) and names)
        return None if points == len(COCO17.joints) and (unnamed or coco_order(names) is not None) else []
    problem = _skeleton_problem(skeleton, category_id, points)
    if problem:
        return problem
    limbs = [[as_int(a) - 1, as_int(b) - 1] for a, b in skeleton]
    order = coco_order(names) if isinstance(names, list) and names else None
    if order is not None:  # the points are drawn in COCO's order (`person_points`): the skeleton follows them
        moved_to = {at: i for i, at in enumerate(order)}
        limbs = [[moved_to[a], moved_to[b]] for a, b in limbs]
    if points == len(COCO17.joints) and {frozenset(limb) for limb in limbs} == {frozenset(l) for l in COCO17.limbs} \
            and len(limbs) == len(COCO17.limbs):
        return None
    return limbs


def coco_order(names: list[Any]) -> list[int] | None:
    """Where each of COCO's 17 points stands among a category's `keypoints` names, read whatever
    their case and separators ('Left Eye', 'left-eye'); None when they are not COCO's 17 (a car's
    17 points drew COCO's human limbs between them)."""
    read = ["_".join(str(name).lower().replace("-", " ").split()) for name in names]
    if sorted(read) != sorted(COCO17.joints):
        return None
    return [read.index(joint) for joint in COCO17.joints]


def person_points(ann: dict[str, Any], categories: dict[int, dict[str, Any]]) -> list[Any]:
    """A person's x, y, v triples in COCO's order where its category names COCO's points in another
    order (Label Studio writes them in its labels' `model_index` order, CVAT a template's): drawn as
    written, the person's joints took other joints' colours. With a skeleton too (`person_limbs`
    renumbers it alike): only without one were the points reordered, so one person took two sets
    of colours, with and without it."""
    category = categories.get(as_int(ann.get("category_id")), {}) if as_int(ann.get("category_id")) is not None else {}
    names, values = category.get("keypoints"), ann["keypoints"]
    if not isinstance(names, list) or len(names) * 3 != len(values):
        return values
    order = coco_order(names)
    return values if order is None else [v for i in order for v in values[3 * i : 3 * i + 3]]


# COCO keypoints are pixel indices (integers in 0..W-1, as its annotators clicked pixels), while
# its boxes and polygons are pixel-edge coordinates (0..W); the renderer takes edge coordinates,
# so a keypoint moves to its pixel's centre, as detectron2 reads them (+0.5)
KEYPOINT_TO_EDGE = 0.5


def edge_keypoints(values: list[Any]) -> list[float]:
    """A person's x, y, v triples with x and y moved from pixel indices to pixel-edge coordinates."""
    return [float(v) + (KEYPOINT_TO_EDGE if i % 3 < 2 else 0.0) for i, v in enumerate(values)]


def _labelled(ann: dict[str, Any]) -> bool:
    """A person with a labelled point (v > 0), whatever `num_keypoints` says (left out, or 0
    beside labelled points)."""
    return any(v > 0 for v in ann["keypoints"][2::3])


Limbs = Callable[[dict[str, Any]], "list[list[int]] | str | None"]


def limbs_by_category(categories: dict[int, dict[str, Any]]) -> Limbs:
    """`person_limbs` worked out once per category and point count, and that one result (its list
    too) shared by every person of them: checked and copied per person, a 20,000-pair skeleton
    over 300 people took 31 s and 565 MiB before any budget was judged."""
    return _LimbsMemo(categories)


class _LimbsMemo:
    """`limbs_by_category`'s memo: a class, not a closure, so an index keeping one still pickles."""

    def __init__(self, categories: dict[int, dict[str, Any]]) -> None:
        self.categories = categories
        self.memo: dict[tuple[type, int, int], list[list[int]] | str | None] = {}

    def __call__(self, ann: dict[str, Any]) -> list[list[int]] | str | None:
        category_id = ann.get("category_id")
        number = as_int(category_id)
        if number is None:  # no category: nothing to share (and the id may be no dict key)
            return person_limbs(ann, self.categories)
        key = (type(category_id), number, len(ann["keypoints"]) // 3)  # its type: `1.0` is named as written
        if key not in self.memo:
            self.memo[key] = person_limbs(ann, self.categories)
        return self.memo[key]


def pose_problem(ann: dict[str, Any], categories: dict[int, dict[str, Any]], limbs_of: Limbs | None = None) -> str | None:
    if "keypoints" not in ann:
        return None  # `num_keypoints` alone: a crowd or a person without points
    if not numbers(ann["keypoints"], multiple_of=3):
        return "keypoints are not x, y, visibility numbers"
    limbs = (limbs_of or functools.partial(person_limbs, categories=categories))(ann) if _labelled(ann) else None
    return limbs if isinstance(limbs, str) else None


class TooLarge(str):
    """The detail of a pair whose target is over the drawing budget (`annotation_too_large`)."""


def pose_work_problem(people: list[dict[str, Any]], limbs: list[Any]) -> TooLarge | None:
    """A pose target over the renderer's budget (`MAX_BOXES` people, `MAX_POSE_STEPS` joints and
    limbs), judged before its payload is built: one limb list per person of a long skeleton was
    the payload's bulk (693 MB for a 217 KB file), built only for the renderer to refuse it."""
    if len(people) > MAX_BOXES:
        return TooLarge(f"{len(people)} people, over the {MAX_BOXES} one target draws")
    joints = sum(len(a["keypoints"]) // 3 for a in people)
    drawn = sum(len(COCO17.limbs) if each is None else len(each) for each in limbs)
    if joints + drawn > MAX_POSE_STEPS:
        return TooLarge(f"{len(people)} people: {joints} joints and {drawn} limbs, over the {MAX_POSE_STEPS} "
                        "one target draws")
    return None


@dataclass(frozen=True)
class CocoSource:
    name: str
    path: str
    annotation_files: tuple[str, ...]  # relative to path (or URLs)
    images_dir: str  # relative to path (or a URL)
    tasks: tuple[str, ...] = COCO_TASKS
    follow_links: bool = False  # read image files that are links leading out of the images folder
    index_memory_mb: int = INDEX_MEMORY_MB  # what the parsed annotation files may take (`check_index_memory`)
    # a COCO panoptic file's PNG folder, relative to path (or a URL); None: beside each panoptic
    # JSON, named as it is without `.json` (`coco_panoptic.default_png_dir`)
    panoptic_dir: str | None = None

    def _under_path(self, name: str) -> str:
        """A configured file or folder: an absolute path or a URL as it is, else under `path`."""
        return name if "://" in name or name.startswith("/") else fsio.join(self.path, name)

    def _uris(self) -> tuple[str, ...]:
        return tuple(self._under_path(f) for f in self.annotation_files)

    def _images_uri(self) -> str:
        return self._under_path(self.images_dir)

    def units(self) -> list[tuple[Id, ...]]:
        for name, uri in zip(self.annotation_files, self._uris()):
            if not fsio.exists(uri):
                raise missing_under("annotation_files", self.path, name, "COCO: ")
        self.check_index_memory()
        try:
            index = load_index(self._uris(), self._images_uri())
        except PanopticFile as exc:  # the field naming the file is to blame, not `path`
            raise ConfiguredValueMismatch("annotation_files", str(exc)) from None
        # annotations of unlisted images are rejects, and so is each id of those that make one key (`key_twins`)
        ids = sorted(set(index.images) | set(index.annotations), key=id_order)
        if not fsio.isdir(self._images_uri()):  # else every pair is a missing image
            raise missing_under("images_dir", self.path, self.images_dir, "COCO: ")
        self._check_png_dirs(index)
        return [tuple(ids[i : i + IMAGES_PER_UNIT]) for i in range(0, len(ids), IMAGES_PER_UNIT)]

    def _png_dir(self, default: str) -> str:
        """The PNG folder of a panoptic file whose own is `default` (`panoptic_dir` where set)."""
        return default if self.panoptic_dir is None else self._under_path(self.panoptic_dir)

    def _check_png_dirs(self, index: CocoIndex) -> None:
        """A panoptic file's PNG folder must be there: else every pair would be a missing PNG; and
        `panoptic_dir` names one only beside a panoptic file (else it is read for nothing)."""
        if self.panoptic_dir is not None and not index.panoptic_files:
            raise ConfiguredValueMismatch(
                "panoptic_dir", f"COCO: {self.panoptic_dir!r} is set, but {', '.join(self.annotation_files)} "
                f"holds no COCO panoptic file (annotations with segments_info) whose PNGs it would hold: "
                f"remove panoptic_dir, or list the panoptic_<split>.json in annotation_files")
        for uri in index.panoptic_files:
            folder = self._png_dir(panoptic.default_png_dir(uri))
            if not fsio.isdir(folder):
                name = self.panoptic_dir or relative_to_root(self.path, folder)
                raise missing_under("panoptic_dir", self.path, name, "COCO: ",
                                    f"; {fsio.basename(uri)}'s PNGs (the official panoptic_<split>.zip unpacks to "
                                    f"annotations/panoptic_<split>/): unzip it there or set panoptic_dir")

    def _png_uri(self, entry: dict[str, Any]) -> str:
        """The file of a panoptic entry's PNG (`OutsideRoot` for one outside its folder)."""
        folder = self._png_dir(entry[panoptic.PNG_DIR])
        uri = join_inside(folder, panoptic.png_name(entry) or "")
        check_inside(folder, uri, self.follow_links)
        return uri

    def check_index_memory(self) -> None:
        """Refuse, before any process parses them, annotation files whose index would take more
        than `index_memory_mb`: every worker process holds one, and past its memory a worker is
        killed mid-build, not told why. Judged from what the files hold (`coco_memory.judged`: one
        pass counting their objects, strings and numbers, kept by the files' state for the parse
        cache's weight, `load_index`), not their sizes: 9x a file's size let one of empty objects
        (25.1x) through."""
        counts = [coco_memory.judged(uri, MAX_ANNOTATION_BYTES) for uri in self._uris()]
        total = sum(c.size for c in counts)
        estimate_mb = -(-sum(c.parsed_bytes() for c in counts) // (1 << 20))
        if estimate_mb > self.index_memory_mb:
            ratio = estimate_mb / max(total / (1 << 20), 1 / (1 << 20))
            raise ConfiguredValueMismatch(
                "index_memory_mb", f"COCO: {', '.join(self.annotation_files)} ({total >> 20} MiB) would take about "
                f"{estimate_mb} MiB parsed ({ratio:.1f}x their size: the objects, strings and numbers they hold) in "
                f"every worker process, over index_memory_mb: {self.index_memory_mb}; raise it where each worker has "
                f"that memory, or split the images over sources with smaller annotation files")

    def group(self, image_id: Id, index: CocoIndex) -> str:
        """The key of an image id's pairs: made of its text; for an id whose text another id has
        (`"1"` beside `1`, `key_twins`), a part made of its raw value too (`str '1'`), so that each
        is a reject of its own, under a key that no other id makes (that part is never clean, so
        the key carries a digest of the parts)."""
        if image_id in index.twin_of:
            return safe_key(self.name, str(image_id), f"{type(image_id).__name__} {ascii(image_id)}")
        return safe_key(self.name, str(image_id))

    def read(self, image_ids: tuple[Id, ...]) -> Iterator[SourceItem]:
        index = load_index(self._uris(), self._images_uri())
        images_uri = self._images_uri()
        for image_id in image_ids:
            group = self.group(image_id, index)
            anns = [expanded(a) for a in index.annotations.get(image_id, [])]
            at = _entry_input(image_id, index, anns)
            if image_id in index.problems:
                shown = repr(image_id) if image_id in index.twin_of else image_id
                yield from self._every_task(group, BAD_ANNOTATION, f"image {shown}: {index.problems[image_id]}", at)
                continue
            if image_id not in index.images:
                more = f" and {len(anns) - 1} more" if len(anns) > 1 else ""
                yield from self._every_task(group, BAD_ANNOTATION, f"image {image_id}: no images entry has this id; "
                                                                   f"{anns[0][AT]}{more} name it", at, served(anns))
                continue
            image = index.images[image_id]
            name = file_name_of(image)
            # the pair's width/height are the decoded image's (render_pair), never the JSON's
            lineage = {"image_id": image_id, "file": name, **lvis_lineage(image)}
            if not isinstance(name, str) or not name:
                yield from self._every_task(group, BAD_ANNOTATION, f"image {image_id}: {no_file_named(image)}", at)
                continue
            at += f": {name}"
            try:  # file_name comes from the JSON: it must name a file inside the images folder
                image_uri = image_path(images_uri, name)
                check_inside(images_uri, image_uri, self.follow_links)
            except OutsideRoot as exc:
                detail = f"image {image_id}: {exc.detail}{server_path_fix(name)}"
                yield from self._every_task(group, exc.reason, detail, at)
                continue
            png_uri = None
            if anns and panoptic.PNG_DIR in anns[0] and panoptic.png_name(anns[0]):
                try:  # the PNG's name comes from the JSON too
                    png_uri = self._png_uri(anns[0])
                except OutsideRoot as exc:
                    yield from self._every_task(group, exc.reason, f"image {image_id}: panoptic PNG {exc.detail}", at)
                    continue
            for task in self.tasks:
                key = f"{group}-{task}"
                payload = self._payload(task, anns, image, index, png_uri)
                if isinstance(payload, Missing):
                    detail = f"image {image_id} has none" if payload == "has none" else f"image {image_id}: {payload}"
                    yield Reject(key, self.name, group, "read", f"no_{task}_annotations", detail, input=at)
                    continue
                if isinstance(payload, TooLarge):
                    yield Reject(key, self.name, group, "read", "annotation_too_large",
                                 f"image {image_id}: {payload}", input=at)
                    continue
                if isinstance(payload, str):  # the entry it names, when it is an annotation's
                    entry = next((a[AT] for a in anns if payload.startswith(f"{a[AT]}: ")), None)
                    yield Reject(key, self.name, group, "read", BAD_ANNOTATION, payload,
                                 input=f"{entry} (image id {image_id})" if entry else at)
                    continue
                yield PairRecord(key=key, source=self.name, group=group, task=task,
                                 image_uri=image_uri, input=folder_input(image_uri, self.path, images_uri),
                                 annotation=payload, lineage={**lineage, **_left_out(task, self._objects(anns, index.categories))})

    @staticmethod
    def _objects(anns: list[dict[str, Any]], categories: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
        """An image's objects: its annotations, or its panoptic entry's thing segments (its
        detection pair's objects; stuff is no box)."""
        if anns and panoptic.PNG_DIR in anns[0]:
            return [s for s in panoptic.segments(anns[0]) if isinstance(s, dict) and panoptic.is_thing(s, categories)]
        return anns

    def _every_task(self, group: str, reason: str, detail: str, at: str,
                    serves: Collection[str] | None = None) -> Iterator[Reject]:
        """A reject for each task's pair of an image none of whose pairs can be made (every pair
        is counted, as a drawn one would be), its input `at`; where `serves` says which tasks its
        annotations could make a pair of (an image no `images` entry lists: a box was a reject
        under pose too), those of them configured, else one under the first configured task."""
        tasks = [t for t in self.tasks if serves is None or t in serves] or list(self.tasks[:1])
        for task in tasks:
            yield Reject(f"{group}-{task}", self.name, group, "read", reason, detail, input=at)

    @staticmethod
    def _payload(task: str, anns: list[dict], image: dict, index: CocoIndex, png_uri: str | None = None) -> dict | str:
        """The pair's annotation; a `Missing` when the image has nothing to draw for `task`; a
        text naming the entry when one of them is malformed (that pair is rejected, nothing else)."""
        if task not in COCO_TASKS:
            raise ValueError(f"unknown COCO task {task!r}; allowed: {', '.join(COCO_TASKS)}")
        if anns and panoptic.PNG_DIR in anns[0]:
            return _panoptic_payload(task, anns[0], image, index, png_uri)
        shift = index.category_shift
        declared = index.categories.keys()
        limbs_of = index.limbs_of
        check = {"detection": lambda a: detection_problem(a, shift, declared),
                 "segmentation": lambda a: segmentation_problem(a, shift, declared),
                 "pose": lambda a: pose_problem(a, index.categories, limbs_of)}[task]
        used = {"detection": is_object, "segmentation": lambda a: bool(a.get("segmentation")),
                "pose": lambda a: "keypoints" in a or "num_keypoints" in a}[task]
        for ann in anns:
            if used(ann):
                problem = check(ann)
                if problem:
                    return f"{ann[AT]}: {problem}"
        size_problem = declared_size_problem(image)
        if task == "detection":
            return _detection_payload(anns, image, shift, size_problem)
        if task == "segmentation":
            given = [a for a in anns if a.get("segmentation")]
            kept = [a for a in given if not _short_polygons(a["segmentation"])]
            if not kept:
                return _no_segments(len(given))
            if size_problem:
                return f"image {image.get('id')}: {size_problem}"
            # the declared size is what the coordinates refer to; the renderer takes its mask size
            # from the decoded image, rejects a pair whose declaration differs, and paints the
            # larger masks first (by their pixels: exporters write `area: 0` or none)
            return {**declared_size(image),
                    "segments": [{"segmentation": a["segmentation"],
                                  "category_id": int(as_int(a["category_id"])) + shift} for a in kept]}
        people = [a for a in anns if a.get("keypoints") and _labelled(a)]
        if not people:
            return Missing("no labelled keypoint (v > 0)" if any(a.get("keypoints") for a in anns) else "has none")
        if size_problem:
            return f"image {image.get('id')}: {size_problem}"
        limbs = [limbs_of(a) for a in people]
        too_large = pose_work_problem(people, limbs)
        if too_large:
            return too_large
        payload = {**declared_size(image), "skeleton": "coco17",
                   "people": [edge_keypoints(person_points(a, index.categories)) for a in people]}
        if any(person is not None for person in limbs):  # a category's own skeleton
            payload["skeleton"] = "custom"
            coco = [list(limb) for limb in COCO17.limbs]
            payload["limbs"] = [coco if person is None else person for person in limbs]
        return payload
