"""Stereo pairs in the KITTI layout: left -> right view, and left -> disparity (depth).

KITTI 2015 names its folders `image_2` / `image_3` / `disp_noc_0` (the defaults); KITTI 2012 names
them `colored_0` / `colored_1` / `disp_noc` (its `image_0` / `image_1` are grey): `left_folder`,
`right_folder` and `disparity_folder` say which.

Where a pair has no ground-truth disparity, the depth task can take its target from a labeler
(semi-global block matching on the rectified pair) instead of being rejected. A depth pair from a
disparity map reads no right view. The map is resampled nearest (an unmeasured 0 is never averaged
into a measured neighbour, and a sparse map stays as sparse), and its values are not rescaled with
the width: the target's colours are normalised per image, so a common factor changes nothing.

KITTI measures disparity on a scene's `NNNNNN_10` frame only: its `_11` frame (the second of a
scene flow pair; the multiview extension's `_00`..`_20` likewise) has a stereo pair but no depth
target, one `no_ground_truth_frame` reject each (a labeler gives them depth). A scene's frames share
one split group (`kitti-000000`): frames 0.1 s apart are never split between train and val. These
rules hold where the folders are KITTI's (`KITTI_LEFT_FOLDERS`, `KITTI_DISPARITY_FOLDERS`), judged
per frame (`kitti_frame`): a `NNNNNN_10` frame is KITTI's where its disparity map is there, a
`NNNNNN_NN` frame joins its scene where the scene's `_10` is KITTI's. Another stereo set whose files
happen to be named `NNNNNN_NN`, in folders of its own, or a frame with no measured `_10` beside it
(a rig's `123456_11.png`, 12:34:56 camera 11) keeps `missing_annotation` for a lost map; so does a
stray name among KITTI's (a browser's duplicate `000001_10 (1).png`, its own group), its lost map
saying so. Split groups are by scene wherever KITTI's folders hold a `NNNNNN_NN` name, measured or
not (a stereo-only download, a lost map): grouping more frames together only keeps them in one split. No file turns another frame's rules on or off (a vote of the folder's names
did: half a download's names duplicated turned KITTI's rules off for all of it).

What operating systems and tools leave (a Mac's `._x.png`, `__MACOSX/`, `@eaDir/`, `.git/`) is one
`os_metadata` or `hidden_file` reject each (`sources.paths.set_aside`), never a pair of the files beside each view.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator

from sources import fsio
from sources.paths import (PathProblem, missing_under, path_problem, relative_to_root, set_aside_problem,
                           shown_name, twin_problem, twin_to_read)
from sources.records import PairRecord, Reject, SourceItem, layout_twin_order, nfc, safe_key, twin_detail

STEREO_TASKS = ("stereo", "depth")
DISPARITY_SCALE = 1 / 256  # KITTI stores disparity * 256 in uint16, 0 = no measurement
KITTI_FRAME = re.compile(r"^(\d{6})_(\d{2})$")  # scene number, frame in the scene: 000000_10
GROUND_TRUTH_FRAME = "10"  # the one frame of a KITTI scene its disparity maps measure
KITTI_LEFT_FOLDERS = ("image_2", "colored_0", "image_0")  # 2015's colour, 2012's colour and grey left views
KITTI_DISPARITY_FOLDERS = ("disp_noc_0", "disp_occ_0", "disp_noc_1", "disp_occ_1",  # KITTI 2015
                           "disp_noc", "disp_occ", "disp_refl_noc", "disp_refl_occ")  # KITTI 2012


VIEW_SUFFIXES = (".png", ".jpg", ".jpeg")  # a view's, in any case (`.PNG`, `.JPEG`): the preferred first
MAP_SUFFIXES = (".png",)  # a disparity map is a 16-bit PNG, in any case
TWIN_UNIT = ""  # the first element of a unit of a left view's twins (no path is empty)


def file_of(folder: str, stem: str, suffixes: tuple[str, ...] = VIEW_SUFFIXES, first: str = "", root: str = "",
            follow_links: bool = False) -> str | None:
    """The file of frame `stem` in `folder` (`first` when it is there), its extension one of
    `suffixes` in any case, or None. The map's path was the stem + `.png` alone: a
    `000001_10.PNG` was "no disparity for" its frame. With `root`, a local file there that cannot
    be read (a fifo, a link leading out or to nothing, mode 000: `paths.twin_problem`) gives way to
    the first twin of its stem that can (`x.PNG` beside it, in `twin_rank`): the first name there
    was taken, and the frame's pair lost with it."""
    for name in (first,) * bool(first) + tuple(stem + suffix for suffix in suffixes):
        uri = fsio.join(folder, name)
        if fsio.exists(uri):  # (a link to nothing is not: its twins are listed)
            if not root or "://" in uri or twin_problem(root, uri, follow_links) is None:
                return uri
            break
    names = sorted(stem_names(folder, " ".join(suffixes), stem),
                   key=lambda name: (name != first, layout_twin_order(name, suffixes)))
    uris = [fsio.join(folder, name) for name in names]
    return (twin_to_read(root, uris, follow_links) if root and len(uris) > 1 else None) or (uris[0] if uris else None)


@fsio.derived_input
def stem_names(folder: str, suffixes: str, stem: str) -> list[str]:
    """The names in `folder` of frame `stem` with an extension of `suffixes` (space-separated) in
    any case, sorted: recorded as the unit's input for that stem alone. A listing of the folder per
    frame without a map (every `_11`, KITTI's multi-view frames) was 3881 listings where 1 was
    (8.0 s, not 2.5 s), each recorded, so one map added for another scene rendered every unit again.
    The folder is listed once per run (`once_per_run`); the stem comes last, as a rerun names
    what changed by the last of the args."""
    index = fsio.once_per_run(("sources.stereo.stem_names", folder, suffixes),
                              lambda: _names_by_stem(folder, tuple(suffixes.split())))
    return index.get(stem, [])


def _names_by_stem(folder: str, suffixes: tuple[str, ...]) -> dict[str, list[str]]:
    """`folder`'s files with an extension of `suffixes` in any case, by stem; none where no folder is."""
    if not fsio.isdir(folder):
        return {}
    index: dict[str, list[str]] = {}
    for uri in fsio.list_files(folder, suffixes, links=True):
        index.setdefault(_stem(fsio.basename(uri)), []).append(fsio.basename(uri))
    return index


def twin_rank(name: str) -> tuple[bool, int, bool, str]:
    """Which of a frame's left views of one stem is read (the lowest): the one in NFC, then its
    extension's kind in any case, `.png`, `.jpg`, `.jpeg` (the views read before `.jpeg` was listed
    stay read: `x.PNG` before `x.jpg`), then that extension in lower case as KITTI ships it (a stray
    `x.PNG` beside `x.png` is the twin), then by name."""
    return layout_twin_order(name, VIEW_SUFFIXES)


def split_twins(files: list[str], root: str, follow_links: bool) -> tuple[list[str], list[tuple[str, str]]]:
    """Left views with one view a frame (in listing order), and (the one read, its twin) pairs. Of
    a frame's twins the first in `twin_rank` that can be read under `root` is read
    (`paths.twin_to_read`): by rank alone a `x.png` leading out of the root, or a fifo, was the
    frame's reject and the readable `x.PNG` beside it a `duplicate_key`, the frame lost."""
    by_stem: dict[str, list[str]] = {}
    for uri in files:
        by_stem.setdefault(nfc(_stem(fsio.basename(uri))), []).append(uri)
    twins = []
    for uris in by_stem.values():
        uris.sort(key=lambda uri: twin_rank(fsio.basename(uri)))
        kept = (twin_to_read(root, uris, follow_links) if len(uris) > 1 else None) or uris[0]
        twins += [(kept, twin) for twin in uris if twin != kept]
    dropped = {twin for _, twin in twins}
    return [uri for uri in files if uri not in dropped], twins


def _stem(name: str) -> str:
    """A view's or disparity map's name without its extension: the frame it belongs to."""
    return name.rsplit(".", 1)[0]


def _scene(stem: str, kitti: bool) -> str:
    """The scene a KITTI frame belongs to (`000000` of `000000_11`), or the stem itself when the
    frame is not KITTI's (`StereoSource.kitti_frame`): the split group of the scene's frames."""
    found = KITTI_FRAME.match(stem) if kitti else None
    return found.group(1) if found else stem


@fsio.derived_input
def measured(disparity_map: str) -> bool:
    """Whether a scene's `_10` disparity map is there: recorded as its value, so a rerun renders
    again the units of the scene's other frames where the map came or went."""
    folder, name = disparity_map.rsplit("/", 1)
    return fsio.exists(disparity_map) or file_of(folder, _stem(name), MAP_SUFFIXES) is not None


def is_second_frame(stem: str, kitti: bool) -> bool:
    """Whether a frame of KITTI's layout is one other than the `_10` its scene's disparity measures."""
    found = KITTI_FRAME.match(stem) if kitti else None
    return bool(found) and found.group(2) != GROUND_TRUTH_FRAME


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

    def kitti_frame(self, stem: str) -> bool:
        """Whether KITTI's frame rules hold for the frame `stem`: in KITTI's folders, named
        `NNNNNN_NN`, and its scene's `NNNNNN_10` measured (its disparity map there). Judged per
        frame, never by the folder's other names: a file added or lost changes no other frame."""
        found = KITTI_FRAME.match(stem) if self.kitti_folders else None
        if not found:
            return False
        return measured(fsio.join(self.path, self.split_folder, self.disparity_folder,
                                  f"{found.group(1)}_{GROUND_TRUTH_FRAME}.png"))

    @property
    def kitti_folders(self) -> bool:
        """Whether the left view and disparity folders are named as KITTI's."""
        return (self.left_folder.rstrip("/").rsplit("/", 1)[-1] in KITTI_LEFT_FOLDERS
                and self.disparity_folder.rstrip("/").rsplit("/", 1)[-1] in KITTI_DISPARITY_FOLDERS)

    def units(self) -> list[tuple[str, ...]]:
        split = fsio.join(self.path, self.split_folder)
        left = fsio.join(split, self.left_folder)
        if not fsio.isdir(left):
            raise missing_under("left_folder", split, self.left_folder, "KITTI layout: ",
                                "; KITTI 2012 keeps its colour views in colored_0 and colored_1")
        self._check_right_folder()
        self._check_disparity_folder()
        files, twins = split_twins(fsio.list_files(left, VIEW_SUFFIXES, links=True), self.path, self.follow_links)
        orphans = self._files_without_left_view(files)
        return [tuple(files[i : i + 256]) for i in range(0, len(files), 256)] + \
            [tuple(orphans[i : i + 256]) for i in range(0, len(orphans), 256)] + \
            [(TWIN_UNIT, kept, twin) for kept, twin in twins]

    def _read_folders(self) -> tuple[str, ...]:
        """The folders beside the left views that the tasks read: the right views (stereo, or a
        labeler's depth) and the disparity maps (depth)."""
        right = "stereo" in self.tasks or ("depth" in self.tasks and self.labeler is not None)
        return (self.right_folder,) * right + (self.disparity_folder,) * ("depth" in self.tasks)

    def _files_without_left_view(self, left_files: list[str]) -> list[str]:
        """A file of each frame whose right view or disparity map is there but its left view is
        not (a download extracted in part): read, it is one `missing_image` reject; those files
        vanished without a word. What operating systems leave (`._x.png`) is passed over."""
        split = fsio.join(self.path, self.split_folder)
        have = {_stem(fsio.basename(f)) for f in left_files}
        found: dict[str, str] = {}
        for folder in self._read_folders():
            directory = fsio.join(split, folder)
            if not fsio.isdir(directory):
                continue
            for uri in fsio.list_files(directory, VIEW_SUFFIXES, links=True):
                stem = _stem(fsio.basename(uri))
                if stem not in have and not set_aside_problem(directory, uri):
                    found.setdefault(stem, uri)
        return sorted(found.values())

    def _without_left_view(self, uri: str) -> Reject:
        """One frame whose left view is gone (`_files_without_left_view`), naming what it leaves."""
        split = fsio.join(self.path, self.split_folder)
        stem = _stem(fsio.basename(uri))
        kitti = self.kitti_frame(stem)
        left = [folder for folder in self._read_folders()
                if file_of(fsio.join(split, folder), stem)]
        group = safe_key(self.name, _scene(stem, self.kitti_folders))
        return Reject(f"{safe_key(self.name, stem)}-pair", self.name, group, "read", "missing_image",
                      f"no left view of {shown_name(stem)} in {self.left_folder}/; its file in "
                      f"{', '.join(f'{folder}/' for folder in left)} left unread"[:200],
                      input=relative_to_root(self.path, uri))

    def _check_right_folder(self) -> None:
        """Stereo pairs read `right_folder`: a misspelt one (KITTI 2012 left at 2015's `image_3`)
        would reject every one of them, so it stops `check` instead, naming the folders there."""
        split = fsio.join(self.path, self.split_folder)
        if "stereo" in self.tasks and not fsio.isdir(fsio.join(split, self.right_folder)):
            raise missing_under("right_folder", split, self.right_folder, "KITTI layout: ",
                                "; KITTI 2012 keeps its right colour views in colored_1; a copy for depth alone: "
                                "set tasks: [depth]")

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
        if files and files[0] == TWIN_UNIT:  # `x.png` beside `x.PNG`: one frame, one key; the first is read
            kept, twin = files[1], files[2]
            name, first = fsio.basename(twin), fsio.basename(kept)
            how = "in another Unicode form" if nfc(name) == nfc(first) else \
                "with its extension in another case" if nfc(name).lower() == nfc(first).lower() else \
                "with another image extension"
            key = safe_key(self.name, self.left_folder, name)
            # a twin that cannot be read keeps its own reason, as a lone view would
            problem = twin_problem(self.path, twin, self.follow_links) or PathProblem(
                "duplicate_key", twin_detail(name, first, how))
            yield Reject(key, self.name, safe_key(self.name, _scene(_stem(nfc(first)), self.kitti_folders)), "read",
                         problem.reason, problem.detail, input=relative_to_root(self.path, twin))
            return
        memo = fsio.active_run_memo({})  # outside a run too, a folder is listed once for this unit's frames
        for left in files:
            name = fsio.basename(left)
            if not left.startswith(fsio.join(root, self.left_folder) + "/"):  # beside a left view that is gone
                with fsio.run_memo(memo):
                    gone = self._without_left_view(left)
                yield gone
                continue
            with fsio.run_memo(memo):
                kitti = self.kitti_frame(_stem(name))
            frame = safe_key(self.name, _stem(name))
            # a scene's frames share one split group wherever KITTI's folders name them as KITTI does,
            # measured or not (a stereo-only download, a lost map): frames 0.1 s apart never straddle
            # train and val; grouping is no rule about what a frame is
            group = safe_key(self.name, _scene(_stem(name), self.kitti_folders))
            at = relative_to_root(self.path, left)
            aside = set_aside_problem(fsio.join(root, self.left_folder), left)
            if aside:  # a Mac's `._000000_10.png`: never paired with the `._` file beside the right view
                key = safe_key(self.name, self.left_folder, name)
                yield Reject(key, self.name, key, "read", aside.reason, aside.detail, input=at)
                continue
            right_folder, disparity_folder = fsio.join(root, self.right_folder), fsio.join(root, self.disparity_folder)
            stem = _stem(name)
            with fsio.run_memo(memo):
                right = file_of(right_folder, stem, first=name, root=self.path, follow_links=self.follow_links) \
                    or fsio.join(right_folder, name)
                disparity = file_of(disparity_folder, stem, MAP_SUFFIXES, root=self.path, follow_links=self.follow_links) \
                    or fsio.join(disparity_folder, stem + ".png")
            planned = {task: self._annotation(task, right, disparity) for task in self.tasks}
            problems = {task: self._problem(left, annotation) for task, annotation in planned.items()}
            shared = set(problems.values())
            if len(shared) == 1 and (problem := shared.pop()) is not None:
                # one problem for every task (the left view outside the root, the right view gone
                # where every task reads it): one reject of the left view
                yield Reject(f"{frame}-pair", self.name, group, "read", problem.reason, problem.detail, input=at)
                continue
            for task, annotation in planned.items():
                key = f"{frame}-{task}"
                if (problem := problems[task]) is not None:
                    yield Reject(key, self.name, group, "read", problem.reason, problem.detail, input=at)
                    continue
                if annotation is None and is_second_frame(_stem(name), kitti):
                    yield Reject(key, self.name, group, "read", "no_ground_truth_frame",
                                 f"{shown_name(name)}: {self.disparity_folder}/ holds _{GROUND_TRUTH_FRAME} frames only "
                                 "(KITTI measures no disparity on the other frames); its stereo pair is built", input=at)
                    continue
                if annotation is None:
                    yield Reject(key, self.name, group, "read", "missing_annotation",
                                 f"no disparity for {name}{self._read_as_any_set(name, kitti)}"[:200], input=at)
                    continue
                lineage = {"file": name}
                if "labeler" in annotation:
                    lineage["pseudo_label"] = annotation["labeler"]["name"]
                yield PairRecord(key=key, source=self.name, group=group, task=task, image_uri=left,
                                 annotation=annotation, lineage=lineage)

    def _read_as_any_set(self, name: str, kitti: bool) -> str:
        """Why a frame in KITTI's folders is read as any stereo set's (its lost map no
        `no_ground_truth_frame`, its group its own): its name, or its scene's unmeasured `_10`; else ""."""
        if not self.kitti_folders or kitti:
            return ""
        found = KITTI_FRAME.match(_stem(name))
        if not found:
            return " (not named NNNNNN_NN as KITTI's frames: read as any stereo set's frame)"
        return (f" (nor for {found.group(1)}_{GROUND_TRUTH_FRAME}, the frame of its scene KITTI measures: "
                "read as any stereo set's frame)")

    def _annotation(self, task: str, right: str, disparity: str) -> dict[str, Any] | None:
        """What a task's target reads beside the left view: the right view (stereo, or a labeler's
        depth), else the disparity map; None for depth with neither a map nor a labeler. A depth
        target from its disparity map never needs the right view (KITTI copied for depth alone)."""
        if task == "stereo":
            return {"right_uri": right}
        if path_problem(self.path, disparity, self.follow_links) or fsio.exists(disparity):
            return {"disparity_uri": disparity, "scale": DISPARITY_SCALE}
        if self.labeler is not None:
            return {"right_uri": right, "labeler": dict(self.labeler)}
        return None

    def _problem(self, left: str, annotation: dict[str, Any] | None) -> PathProblem | None:
        """Why a pair cannot be read: a file it reads leads out of the root, or the right view it
        reads is missing; None when it can."""
        uris = [left] + [annotation[k] for k in ("right_uri", "disparity_uri") if k in (annotation or {})]
        outside = next(filter(None, (path_problem(self.path, u, self.follow_links) for u in uris)), None)
        if outside:
            return outside
        if annotation and "right_uri" in annotation and not fsio.exists(annotation["right_uri"]):
            return PathProblem("missing_right_view", fsio.basename(left))
        return None
