"""Stereo pairs in the KITTI layout: left -> right view, and left -> disparity (depth).

KITTI 2015 names its folders `image_2` / `image_3` / `disp_noc_0` (the defaults); KITTI 2012 names
them `colored_0` / `colored_1` / `disp_noc` (its `image_0` / `image_1` are grey): `left_folder`,
`right_folder` and `disparity_folder` say which.

Where a pair has no ground-truth disparity, the depth task can take its target from a labeler
(semi-global block matching on the rectified pair) instead of being rejected.

What operating systems and tools leave (a Mac's `._x.png`, `__MACOSX/`, `@eaDir/`, `.git/`) is one
`os_metadata` or `hidden_file` reject each (`sources.paths.set_aside`), never a pair of the files beside each view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from sources import fsio
from sources.paths import missing_under, path_problem, set_aside_problem
from sources.records import PairRecord, Reject, SourceItem, safe_key

STEREO_TASKS = ("stereo", "depth")
DISPARITY_SCALE = 1 / 256  # KITTI stores disparity * 256 in uint16, 0 = no measurement


@dataclass(frozen=True)
class StereoSource:
    name: str
    path: str
    tasks: tuple[str, ...] = STEREO_TASKS
    split_folder: str = "training"
    disparity_folder: str = "disp_noc_0"
    left_folder: str = "image_2"  # KITTI 2012: colored_0
    right_folder: str = "image_3"  # KITTI 2012: colored_1
    labeler: tuple[tuple[str, Any], ...] | None = None  # a labeler spec for pairs without disparity
    follow_links: bool = False  # read views and disparity maps that are links leading out of `path`

    def units(self) -> list[tuple[str, ...]]:
        split = fsio.join(self.path, self.split_folder)
        left = fsio.join(split, self.left_folder)
        if not fsio.isdir(left):
            raise missing_under("left_folder", split, self.left_folder, "KITTI layout: ",
                                "; KITTI 2012 keeps its colour views in colored_0 and colored_1")
        self._check_disparity_folder()
        files = fsio.list_files(left, (".png", ".jpg"), links=True)
        return [tuple(files[i : i + 256]) for i in range(0, len(files), 256)]

    def _check_disparity_folder(self) -> None:
        """Without a labeler, depth targets come from `disparity_folder` alone: a misspelt one
        would reject every depth pair, so it stops `check` instead, naming the folders there."""
        if "depth" not in self.tasks or self.labeler is not None:
            return
        split = fsio.join(self.path, self.split_folder)
        if not fsio.isdir(fsio.join(split, self.disparity_folder)):
            raise missing_under("disparity_folder", split, self.disparity_folder, "KITTI layout: ",
                                "; name the folder of its disparity maps, or set a labeler for depth targets")

    def read(self, files: tuple[str, ...]) -> Iterator[SourceItem]:
        root = fsio.join(self.path, self.split_folder)
        for left in files:
            name = fsio.basename(left)
            group = safe_key(self.name, name.rsplit(".", 1)[0])
            aside = set_aside_problem(fsio.join(root, self.left_folder), left)
            if aside:  # a Mac's `._000000_10.png`: never paired with the `._` file beside the right view
                key = safe_key(self.name, self.left_folder, name)
                yield Reject(key, self.name, key, "read", aside.reason, aside.detail)
                continue
            right = fsio.join(root, self.right_folder, name)
            disparity = fsio.join(root, self.disparity_folder, name.rsplit(".", 1)[0] + ".png")
            outside = next(filter(None, (path_problem(self.path, u, self.follow_links)
                                         for u in (left, right, disparity))), None)
            if outside:
                yield Reject(f"{group}-pair", self.name, group, "read", outside.reason, outside.detail)
                continue
            if not fsio.exists(right):
                yield Reject(f"{group}-pair", self.name, group, "read", "missing_right_view", name)
                continue
            for task in self.tasks:
                key = f"{group}-{task}"
                lineage = {"file": name}
                if task == "stereo":
                    annotation: dict[str, Any] = {"right_uri": right}
                elif fsio.exists(disparity):
                    annotation = {"disparity_uri": disparity, "scale": DISPARITY_SCALE}
                elif self.labeler is not None:
                    annotation = {"right_uri": right, "labeler": dict(self.labeler)}
                    lineage["pseudo_label"] = dict(self.labeler)["name"]
                else:
                    yield Reject(key, self.name, group, "read", "missing_annotation", f"no disparity for {name}")
                    continue
                yield PairRecord(key=key, source=self.name, group=group, task=task, image_uri=left,
                                 annotation=annotation, lineage=lineage)
