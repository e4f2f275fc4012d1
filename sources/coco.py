"""COCO-format annotations: detection boxes, instance segmentation (polygons and RLE), keypoints.

One `PairRecord` per (image, task). The annotation files are parsed once per worker process
(COCO train's instances JSON is large) and every unit is a slice of image ids.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterator

from sources import fsio
from sources.records import PairRecord, Reject, SourceItem, safe_key

COCO_TASKS = ("detection", "segmentation", "pose")
IMAGES_PER_UNIT = 256


@dataclass(frozen=True)
class CocoIndex:
    images: dict[int, dict[str, Any]]
    annotations: dict[int, list[dict[str, Any]]]
    categories: dict[int, dict[str, Any]]


@functools.lru_cache(maxsize=4)
def load_index(annotation_uris: tuple[str, ...]) -> CocoIndex:
    """Merge COCO JSON files (instances, person_keypoints...) by image id and annotation id."""
    images: dict[int, dict[str, Any]] = {}
    annotations: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
    categories: dict[int, dict[str, Any]] = {}
    for uri in annotation_uris:
        data = json.loads(fsio.read_bytes(uri))
        for image in data.get("images", []):
            images[int(image["id"])] = image
        for category in data.get("categories", []):
            categories[int(category["id"])] = {**categories.get(int(category["id"]), {}), **category}
        for ann in data.get("annotations", []):
            merged = annotations[int(ann["image_id"])].get(int(ann["id"]), {})
            annotations[int(ann["image_id"])][int(ann["id"])] = {**merged, **ann}
    return CocoIndex(images, {k: [v[i] for i in sorted(v)] for k, v in annotations.items()}, categories)


def _has_area(ann: dict[str, Any]) -> bool:
    bbox = ann.get("bbox") or [0, 0, 0, 0]
    return len(bbox) == 4 and bbox[2] > 0 and bbox[3] > 0


@dataclass(frozen=True)
class CocoSource:
    name: str
    path: str
    annotation_files: tuple[str, ...]  # relative to path (or URLs)
    images_dir: str  # relative to path (or a URL)
    tasks: tuple[str, ...] = COCO_TASKS

    def _uris(self) -> tuple[str, ...]:
        return tuple(f if "://" in f or f.startswith("/") else fsio.join(self.path, f) for f in self.annotation_files)

    def _images_uri(self) -> str:
        d = self.images_dir
        return d if "://" in d or d.startswith("/") else fsio.join(self.path, d)

    def units(self) -> list[tuple[int, ...]]:
        for uri in self._uris():
            if not fsio.exists(uri):
                raise FileNotFoundError(f"COCO annotation file {uri} does not exist")
        ids = sorted(load_index(self._uris()).images)
        return [tuple(ids[i : i + IMAGES_PER_UNIT]) for i in range(0, len(ids), IMAGES_PER_UNIT)]

    def read(self, image_ids: tuple[int, ...]) -> Iterator[SourceItem]:
        index = load_index(self._uris())
        images_uri = self._images_uri()
        for image_id in image_ids:
            image = index.images[image_id]
            group = safe_key(self.name, str(image_id))
            anns = [a for a in index.annotations.get(image_id, [])]
            lineage = {"image_id": image_id, "file": image["file_name"],
                       "width": image.get("width"), "height": image.get("height")}
            for task in self.tasks:
                key = f"{group}-{task}"
                payload = self._payload(task, anns, image, index)
                if payload is None:
                    yield Reject(key, self.name, group, "read", f"no_{task}_annotations",
                                 f"image {image_id} has none")
                    continue
                yield PairRecord(key=key, source=self.name, group=group, task=task,
                                 image_uri=fsio.join(images_uri, image["file_name"]),
                                 annotation=payload, lineage=dict(lineage))

    @staticmethod
    def _payload(task: str, anns: list[dict], image: dict, index: CocoIndex) -> dict | None:
        if task == "detection":
            kept = [a for a in anns if _has_area(a) and not a.get("iscrowd", 0)]
            if not kept:
                return None
            return {"boxes": [list(map(float, a["bbox"])) for a in kept],
                    "categories": [int(a["category_id"]) for a in kept]}
        if task == "segmentation":
            kept = [a for a in anns if a.get("segmentation")]
            if not kept:
                return None
            # larger first, so smaller objects stay visible on top
            kept.sort(key=lambda a: -float(a.get("area", 0)))
            return {"height": int(image["height"]), "width": int(image["width"]),
                    "segments": [{"segmentation": a["segmentation"], "category_id": int(a["category_id"])}
                                 for a in kept]}
        if task == "pose":
            people = [a for a in anns if a.get("num_keypoints", 0) > 0 and a.get("keypoints")]
            if not people:
                return None
            return {"skeleton": "coco17", "people": [[float(v) for v in a["keypoints"]] for a in people]}
        raise ValueError(f"unknown COCO task {task!r}; allowed: {', '.join(COCO_TASKS)}")
