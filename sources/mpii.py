"""MPII human pose in MMPose's JSON form (the .mat original converted by MMPose's tools)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterator

from sources import fsio
from sources.annotation_files import BAD_ANNOTATION, AnnotationFileError, load_json, numbers
from sources.paths import OutsideRoot, check_inside, join_inside, missing_under
from sources.records import PairRecord, Reject, SourceItem, safe_key

MPII_JOINTS = 16
MATLAB_OFFSET = 0.5
ENTRIES_PER_UNIT = 512


@functools.lru_cache(maxsize=2)
def _load_entries(uri: str) -> list:
    entries = load_json(uri)
    if not isinstance(entries, list):
        raise AnnotationFileError(uri, "is not a list of people")
    return entries


def entry_problem(entry: object) -> str | None:
    """What is wrong with one MPII person entry, or None."""
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

    def _annotations(self) -> list:
        return _load_entries(fsio.join(self.path, self.annotation_file))

    def units(self) -> list[tuple[int, int]]:
        if not fsio.exists(fsio.join(self.path, self.annotation_file)):
            raise missing_under("annotation_file", self.path, self.annotation_file, "MPII: ")
        if not fsio.isdir(fsio.join(self.path, self.images_dir)):  # else every pose pair is a missing image
            raise missing_under("images_dir", self.path, self.images_dir, "MPII: ")
        n = len(self._annotations())
        return [(i, min(i + ENTRIES_PER_UNIT, n)) for i in range(0, n, ENTRIES_PER_UNIT)]

    def read(self, unit: tuple[int, int]) -> Iterator[SourceItem]:
        entries = self._annotations()[unit[0] : unit[1]]
        # MPII lists one entry per person; group the people of an image into one pair
        by_image: dict[str, list[dict]] = {}
        bad: dict[str, str] = {}  # image -> the first bad entry of its people
        for index, entry in enumerate(entries, start=unit[0]):
            problem = entry_problem(entry)
            if problem and isinstance(entry, dict) and isinstance(entry.get("image"), str) and entry["image"]:
                bad.setdefault(entry["image"], f"{self.annotation_file}[{index}] {problem}")
                by_image.setdefault(entry["image"], [])
            elif problem:  # belongs to no image: the entry itself is the rejected item
                key = safe_key(self.name, "entry", str(index))
                yield Reject(key, self.name, key, "read", BAD_ANNOTATION, f"{self.annotation_file}[{index}] {problem}")
            else:
                by_image.setdefault(entry["image"], []).append(entry)
        for image, people in by_image.items():
            group = safe_key(self.name, image.rsplit(".", 1)[0])
            key = f"{group}-pose"
            if image in bad:  # one bad person spoils the image's pose target, not the unit
                yield Reject(key, self.name, group, "read", BAD_ANNOTATION, bad[image])
                continue
            images_root = fsio.join(self.path, self.images_dir)
            try:  # the name comes from the JSON: it must stay inside the images folder
                image_uri = join_inside(images_root, image)
                check_inside(images_root, image_uri, self.follow_links)
            except OutsideRoot as exc:
                yield Reject(key, self.name, group, "read", exc.reason, exc.detail)
                continue
            points = []
            for person in people:
                joints, visible = person.get("joints", []), person.get("joints_vis", [])
                if len(joints) != MPII_JOINTS or len(visible) != MPII_JOINTS:
                    yield Reject(key, self.name, group, "read", "bad_keypoints",
                                 f"{image}: expected {MPII_JOINTS} joints, got {len(joints)}")
                    break
                # MPII coordinates are MATLAB's (1-based pixel centres): pixel-edge = value - 0.5
                points.append([v for (x, y), vis in zip(joints, visible)
                               for v in (x - MATLAB_OFFSET, y - MATLAB_OFFSET, 2.0 if vis else 0.0)])
            else:
                yield PairRecord(key=key, source=self.name, group=group, task="pose",
                                 image_uri=image_uri,
                                 annotation={"skeleton": "mpii16", "people": points},
                                 lineage={"file": image, "people": len(points)})
