"""COCO-format annotations: detection boxes, instance segmentation (polygons and RLE), keypoints.

One `PairRecord` per (image, task). The annotation files are parsed once per worker process
(COCO train's instances JSON is large) and every unit is a slice of image ids.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterator

from sources import fsio
from sources.annotation_files import (BAD_ANNOTATION, AnnotationFileError, as_int, is_number, load_json,
                                      numbers, where)
from sources.paths import OutsideRoot, check_inside, join_inside, missing_under
from sources.records import PairRecord, Reject, SourceItem, safe_key
from transforms.annotations import MAX_CLASS_ID

COCO_TASKS = ("detection", "segmentation", "pose")
IMAGES_PER_UNIT = 256


@dataclass(frozen=True)
class CocoIndex:
    images: dict[int, dict[str, Any]]
    annotations: dict[int, list[dict[str, Any]]]
    categories: dict[int, dict[str, Any]]
    problems: dict[int, str]  # image id -> why all its pairs are rejected (an id used twice in one file)


AT = "_at"  # where an annotation came from ("instances.json annotations[12]"), for reject details


def _list(uri: str, data: dict, field: str) -> list:
    value = data.get(field, [])
    if not isinstance(value, list):
        raise AnnotationFileError(uri, f"'{field}' is not a list")
    return value


def _int_field(uri: str, name: str, index: int, entry: Any, field: str) -> int:
    """An id the index is keyed by: without it the entry belongs to no image, so the file is refused."""
    value = as_int(entry.get(field)) if isinstance(entry, dict) else None
    if value is None:
        raise AnnotationFileError(uri, f"{name}[{index}] has no integer '{field}'")
    return value


@fsio.cached_input(maxsize=4)
def load_index(annotation_uris: tuple[str, ...]) -> CocoIndex:
    """Merge COCO JSON files (instances, person_keypoints...) by image id and annotation id.

    Entries without the ids that place them (an image's `id`, an annotation's `id` and
    `image_id`) refuse the file, naming it and the entry's index; every other value is checked
    when its pair is made, so that a bad one rejects that pair only. The same id in two files
    merges (person_keypoints repeats instances' images and people); an id used twice within one
    file is ambiguous (which entry is the image, which the object?), so every pair of the images
    involved is rejected, naming the file and both entries, and the rest of the file is used.
    """
    images: dict[int, dict[str, Any]] = {}
    annotations: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
    categories: dict[int, dict[str, Any]] = {}
    problems: dict[int, str] = {}
    for uri in annotation_uris:
        data = load_json(uri)
        if not isinstance(data, dict):
            raise AnnotationFileError(uri, "is not a COCO JSON object")
        short = fsio.basename(uri)
        seen_images: dict[int, int] = {}  # id -> index of its first entry in this file
        for index, image in enumerate(_list(uri, data, "images")):
            image_id = _int_field(uri, "images", index, image, "id")
            if image_id in seen_images:
                problems.setdefault(image_id, f"{short} images[{seen_images[image_id]}] and images[{index}] "
                                              f"both have id {image_id}")
            seen_images.setdefault(image_id, index)
            images[image_id] = image
        for index, category in enumerate(_list(uri, data, "categories")):
            category_id = _int_field(uri, "categories", index, category, "id")
            categories[category_id] = {**categories.get(category_id, {}), **category}
        seen_anns: dict[int, tuple[int, int]] = {}  # id -> (index, image id) of its first entry in this file
        for index, ann in enumerate(_list(uri, data, "annotations")):
            image_id = _int_field(uri, "annotations", index, ann, "image_id")
            ann_id = _int_field(uri, "annotations", index, ann, "id")
            if ann_id in seen_anns:
                first, first_image = seen_anns[ann_id]
                problem = f"{short} annotations[{first}] and annotations[{index}] both have id {ann_id}"
                problems.setdefault(first_image, problem)  # the first problem found is the one reported
                problems.setdefault(image_id, problem)
            seen_anns.setdefault(ann_id, (index, image_id))
            merged = annotations[image_id].get(ann_id, {})
            annotations[image_id][ann_id] = {**merged, **ann, AT: f"{short} {where('annotations', index, ann)}"}
    return CocoIndex(images, {k: [v[i] for i in sorted(v)] for k, v in annotations.items()}, categories, problems)


def _has_area(ann: dict[str, Any]) -> bool:
    bbox = ann["bbox"]
    return bbox[2] > 0 and bbox[3] > 0


def _polygon_problem(seg: Any) -> str | None:
    """Polygons: lists of x, y pairs, at least one with 3 points (1-2 points draw nothing)."""
    if not isinstance(seg, list) or not all(numbers(p, multiple_of=2) for p in seg):
        return "segmentation polygons are not lists of x, y numbers"
    if not any(len(p) >= 6 for p in seg):
        return "segmentation has no polygon of 3 or more points"
    return None


def _rle_problem(seg: dict) -> str | None:
    size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(as_int(v) is not None and as_int(v) > 0 for v in size)):
        return "RLE segmentation has no [height, width] size"
    if not (isinstance(counts, str) or (isinstance(counts, list) and all(as_int(c) is not None and as_int(c) >= 0
                                                                         for c in counts))):
        return "RLE segmentation counts are neither a string nor a list of run lengths"
    return None


def _category_problem(ann: dict[str, Any]) -> str | None:
    """The category is the target's colour: 1..MAX_CLASS_ID each have their own (0 is the
    background's black, and a larger id would wrap onto another class's colour or overflow)."""
    category_id = as_int(ann.get("category_id"))
    if category_id is None:
        return "category_id is not an integer"
    if not 1 <= category_id <= MAX_CLASS_ID:
        return f"category_id is outside 1..{MAX_CLASS_ID} (the ids the target palette colours)"
    return None


def segmentation_problem(ann: dict[str, Any]) -> str | None:
    seg = ann["segmentation"]
    problem = _rle_problem(seg) if isinstance(seg, dict) else _polygon_problem(seg)
    if problem is None:
        problem = _category_problem(ann)
    if problem is None and "area" in ann and not is_number(ann["area"]):
        problem = "area is not a number"
    return problem


def detection_problem(ann: dict[str, Any]) -> str | None:
    if not numbers(ann.get("bbox"), length=4):
        return "bbox is not 4 numbers"
    return _category_problem(ann)


def declared_size_problem(image: dict[str, Any]) -> str | None:
    """The image entry's `width`/`height`, where given, must be positive integers: the
    segmentation renderer compares them with the decoded image (its polygons' frame)."""
    for name in ("width", "height"):
        value = as_int(image.get(name)) if name in image else 1
        if value is None or value < 1:
            return f"{name} is not a positive integer"
    return None


def pose_problem(ann: dict[str, Any]) -> str | None:
    if as_int(ann.get("num_keypoints", 0)) is None:
        return "num_keypoints is not an integer"
    if "keypoints" in ann and not numbers(ann["keypoints"], multiple_of=3):
        return "keypoints are not x, y, visibility numbers"
    return None


@dataclass(frozen=True)
class CocoSource:
    name: str
    path: str
    annotation_files: tuple[str, ...]  # relative to path (or URLs)
    images_dir: str  # relative to path (or a URL)
    tasks: tuple[str, ...] = COCO_TASKS
    follow_links: bool = False  # read image files that are links leading out of the images folder

    def _uris(self) -> tuple[str, ...]:
        return tuple(f if "://" in f or f.startswith("/") else fsio.join(self.path, f) for f in self.annotation_files)

    def _images_uri(self) -> str:
        d = self.images_dir
        return d if "://" in d or d.startswith("/") else fsio.join(self.path, d)

    def units(self) -> list[tuple[int, ...]]:
        for name, uri in zip(self.annotation_files, self._uris()):
            if not fsio.exists(uri):
                raise missing_under("annotation_files", self.path, name, "COCO: ")
        ids = sorted(load_index(self._uris()).images)
        if not fsio.isdir(self._images_uri()):  # else every pair is a missing image
            raise missing_under("images_dir", self.path, self.images_dir, "COCO: ")
        return [tuple(ids[i : i + IMAGES_PER_UNIT]) for i in range(0, len(ids), IMAGES_PER_UNIT)]

    def read(self, image_ids: tuple[int, ...]) -> Iterator[SourceItem]:
        index = load_index(self._uris())
        images_uri = self._images_uri()
        for image_id in image_ids:
            image = index.images[image_id]
            group = safe_key(self.name, str(image_id))
            anns = [a for a in index.annotations.get(image_id, [])]
            # the pair's width/height are the decoded image's (render_pair), never the JSON's
            lineage = {"image_id": image_id, "file": image.get("file_name")}
            if image_id in index.problems:
                for task in self.tasks:
                    yield Reject(f"{group}-{task}", self.name, group, "read", BAD_ANNOTATION,
                                 f"image {image_id}: {index.problems[image_id]}")
                continue
            if not isinstance(image.get("file_name"), str) or not image["file_name"]:
                for task in self.tasks:
                    yield Reject(f"{group}-{task}", self.name, group, "read", BAD_ANNOTATION,
                                 f"image {image_id}: file_name is not a text")
                continue
            try:  # file_name comes from the JSON: it must name a file inside the images folder
                image_uri = join_inside(images_uri, image["file_name"])
                check_inside(images_uri, image_uri, self.follow_links)
            except OutsideRoot as exc:
                for task in self.tasks:
                    yield Reject(f"{group}-{task}", self.name, group, "read", exc.reason,
                                 f"image {image_id}: {exc.detail}")
                continue
            for task in self.tasks:
                key = f"{group}-{task}"
                payload = self._payload(task, anns, image, index)
                if payload is None:
                    yield Reject(key, self.name, group, "read", f"no_{task}_annotations",
                                 f"image {image_id} has none")
                    continue
                if isinstance(payload, str):
                    yield Reject(key, self.name, group, "read", BAD_ANNOTATION, payload)
                    continue
                yield PairRecord(key=key, source=self.name, group=group, task=task,
                                 image_uri=image_uri,
                                 annotation=payload, lineage=dict(lineage))

    @staticmethod
    def _payload(task: str, anns: list[dict], image: dict, index: CocoIndex) -> dict | str | None:
        """The pair's annotation; None when the image has none for `task`; a text naming the
        entry when one of them is malformed (that pair is rejected, nothing else)."""
        if task not in COCO_TASKS:
            raise ValueError(f"unknown COCO task {task!r}; allowed: {', '.join(COCO_TASKS)}")
        check = {"detection": detection_problem, "segmentation": segmentation_problem, "pose": pose_problem}[task]
        used = {"detection": lambda a: "bbox" in a, "segmentation": lambda a: bool(a.get("segmentation")),
                "pose": lambda a: "keypoints" in a or "num_keypoints" in a}[task]
        for ann in anns:
            if used(ann):
                problem = check(ann)
                if problem:
                    return f"{ann[AT]}: {problem}"
        if task == "detection":
            kept = [a for a in anns if "bbox" in a and _has_area(a) and not a.get("iscrowd", 0)]
            if not kept:
                return None
            return {"boxes": [list(map(float, a["bbox"])) for a in kept],
                    "categories": [int(as_int(a["category_id"])) for a in kept]}
        if task == "segmentation":
            kept = [a for a in anns if a.get("segmentation")]
            if not kept:
                return None
            size_problem = declared_size_problem(image)
            if size_problem:
                return f"image {image.get('id')}: {size_problem}"
            # larger first, so smaller objects stay visible on top
            kept.sort(key=lambda a: -float(a.get("area", 0)))
            # the declared size is what the polygons' coordinates refer to; the renderer takes
            # its mask size from the decoded image and rejects a pair whose declaration differs
            return {"height": as_int(image.get("height")), "width": as_int(image.get("width")),
                    "segments": [{"segmentation": a["segmentation"], "category_id": int(as_int(a["category_id"]))}
                                 for a in kept]}
        people = [a for a in anns if as_int(a.get("num_keypoints", 0)) > 0 and a.get("keypoints")]
        if not people:
            return None
        return {"skeleton": "coco17", "people": [[float(v) for v in a["keypoints"]] for a in people]}
