"""MPII human pose in MMPose's JSON form (the .mat original converted by MMPose's tools)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator

from sources import fsio
from sources.records import PairRecord, Reject, SourceItem, safe_key

MPII_JOINTS = 16
MATLAB_OFFSET = 0.5
ENTRIES_PER_UNIT = 512


@dataclass(frozen=True)
class MpiiSource:
    name: str
    path: str
    annotation_file: str = "annotations/mpii_train.json"
    images_dir: str = "images"

    def _annotations(self) -> list[dict]:
        return json.loads(fsio.read_bytes(fsio.join(self.path, self.annotation_file)))

    def units(self) -> list[tuple[int, int]]:
        uri = fsio.join(self.path, self.annotation_file)
        if not fsio.exists(uri):
            raise FileNotFoundError(f"MPII annotation file {uri} does not exist")
        n = len(self._annotations())
        return [(i, min(i + ENTRIES_PER_UNIT, n)) for i in range(0, n, ENTRIES_PER_UNIT)]

    def read(self, unit: tuple[int, int]) -> Iterator[SourceItem]:
        entries = self._annotations()[unit[0] : unit[1]]
        # MPII lists one entry per person; group the people of an image into one pair
        by_image: dict[str, list[dict]] = {}
        for entry in entries:
            by_image.setdefault(entry["image"], []).append(entry)
        for image, people in by_image.items():
            group = safe_key(self.name, image.rsplit(".", 1)[0])
            key = f"{group}-pose"
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
                                 image_uri=fsio.join(self.path, self.images_dir, image),
                                 annotation={"skeleton": "mpii16", "people": points},
                                 lineage={"file": image, "people": len(points)})
