"""Semantic segmentation label maps: ADE20K (SceneParsing), Cityscapes and PASCAL VOC layouts.

PASCAL VOC (`layout: voc`) is read by `sources.voc`, whose split lists, not folders, name the pairs;
SBD (`layout: sbd`, class maps in .mat files) by `sources.sbd`.

A pair is an image and its label PNG, matched by name; a missing label is a counted reject.
What operating systems and tools leave (a Mac's `._x.png`, `__MACOSX/`, `@eaDir/`, `.git/`) is one
`os_metadata` or `hidden_file` reject each (`sources.paths.set_aside`), never an image without a label.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Literal

from sources import fsio
from sources.paths import (ConfiguredPathMissing, collapse_set_aside, missing_under, names_below, path_problem,
                           set_aside_problem, shown_name)
from sources.records import PairRecord, Reject, SourceItem, relative_input, safe_key
from sources.sbd import SbdSegmentation
from sources.voc import VocSegmentation
from sources.web_samples import IMAGE_EXTENSIONS
from transforms.maps import ADE_FULL_ENCODING

Layout = Literal["ade20k", "ade20k_full", "cityscapes", "voc", "sbd"]
ADE_SPLITS = {"training": "train", "validation": "val"}
CITYSCAPES_SPLITS = {"train": "train", "val": "val"}
# leftImg8bit folders without fine labels, and the split their rejects count in: each image one
# reject (`_unlabeled`), never left unlisted
CITYSCAPES_UNLABELED_SPLITS = {"test": "val", "demoVideo": "val", "train_extra": "train"}
# what the full ADE20K release (not the SceneParsing benchmark) holds at its top
ADE_FULL_RELEASE_MARKERS = ("index_ade20k.pkl", "index_ade20k.mat")
ADE_FULL_RELEASE_LABEL = "_seg.png"  # beside each of its images
# where the full release's split folders lie below `path`: its top (2021's images/ADE/, 2016's
# images/), 2021's images/ folder (ADE/), or `path` given as the split folders' own
ADE_FULL_IMAGE_FOLDERS = ("images/ADE", "images", "ADE", "")
FILES_PER_UNIT = 256
# Cityscapes' void ids that its labels.py colours black like 'unlabeled' (0): ego vehicle, rectification
# border, out of roi, static. They render as unlabeled (0), not as classes of their own (the hood in
# every frame would be one). A licence plate (id -1) is never drawn into _labelIds: it keeps the car's.
CITYSCAPES_UNLABELED_IDS = (1, 2, 3, 4)
# 255: the void mark of label maps (PASCAL VOC's border round each object and its unlabelled
# pixels, what mmseg and torchvision ignore), no class of ADE20K (0..150) nor of Cityscapes (0..33):
# drawn as unlabeled (0) in both layouts, never as a class 255 outlining every object
VOID_MARK = 255
# leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png (or .jpg) -> gtFine/<split>/<city>/<stem>_gtFine_labelIds.png
CITYSCAPES_IMAGE_SUFFIX = "_leftImg8bit"
CITYSCAPES_LABEL_SUFFIX = "_gtFine_labelIds.png"
# what cityscapesScripts' createTrainIdLabelImgs writes beside it: trainIds, read where no _labelIds is
CITYSCAPES_TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
# labels.py: the label id each trainId 0..18 stands for (road ... bicycle); 255 (ignore: the void
# classes) is drawn as unlabeled (0)
CITYSCAPES_ID_OF_TRAIN_ID = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


@dataclass(frozen=True)
class SegmentationSource:
    name: str
    path: str
    layout: Layout = "ade20k"
    follow_links: bool = False  # read images and label maps that are links leading out of `path`
    tasks: tuple[str, ...] = ("segmentation",)  # `voc` also reads detection (Annotations/*.xml)

    def _pairs_root(self) -> tuple[str, str, dict[str, str]]:
        if self.layout == "ade20k_full":  # each `_seg.png` beside its image
            images = self._full_release_images()
            return images, images, ADE_SPLITS
        if self.layout == "ade20k":
            base = fsio.join(self.path, "ADEChallengeData2016")
            if not fsio.exists(base):
                base = self.path
            return fsio.join(base, "images"), fsio.join(base, "annotations"), ADE_SPLITS
        return fsio.join(self.path, "leftImg8bit"), fsio.join(self.path, "gtFine"), CITYSCAPES_SPLITS

    def _full_release_images(self) -> str:
        """The folder of the full release's split folders (`ADE_FULL_IMAGE_FOLDERS`): the first
        holding one; 2021's images/ADE when none does (`check` names it)."""
        for below in ADE_FULL_IMAGE_FOLDERS:
            folder = fsio.join(self.path, below) if below else self.path
            if any(fsio.isdir(fsio.join(folder, split)) for split in ADE_SPLITS):
                return folder
        return fsio.join(self.path, ADE_FULL_IMAGE_FOLDERS[0])

    def _image_suffixes(self) -> tuple[str, ...]:
        """What the split folders' images end with: the full release's are JPEGs, and the PNGs
        beside them (`_seg.png`, `_parts_N.png`) its annotations; elsewhere any image the decoder
        is given (a web folder's extensions): a copy re-encoded as `.jpeg`, `.webp` or `.tif` was
        passed over, and each of its label maps said it had no image."""
        return (".jpg",) if self.layout == "ade20k_full" else tuple(f".{e}" for e in IMAGE_EXTENSIONS)

    def _is_label_file(self, uri: str, split_dir: str, labels_dir: str) -> bool:
        """Whether a listed file is a label map (one without its image, `_labels_without_image`),
        not an image: below the label folder, which in the full release is the image folder."""
        if labels_dir == split_dir:  # as the orphan listing finds them: `_seg.PNG` too
            return uri.lower().endswith(ADE_FULL_RELEASE_LABEL)
        return uri.startswith(labels_dir + "/")

    def _voc(self) -> VocSegmentation:
        return VocSegmentation(self.name, self.path, self.follow_links, self.tasks)

    def notices(self) -> list[str]:
        """Warnings about the input as a whole, once a build: a VOC export's (`VocSegmentation.notices`)."""
        return self._voc().notices() if self.layout == "voc" else []

    def units(self) -> list[tuple[str, tuple[str, ...]]]:
        if self.layout == "voc":
            return self._voc().units()
        if self.layout == "sbd":
            return SbdSegmentation(self.name, self.path, self.follow_links).units()
        images_root, labels_root, splits = self._pairs_root()
        if self.layout == "ade20k" and not fsio.isdir(labels_root) and self._full_ade_release_marked():
            raise self._full_ade_release()
        self._check_layout(images_root, labels_root, tuple(splits))
        units = []
        listed = {**splits, **CITYSCAPES_UNLABELED_SPLITS} if self.layout == "cityscapes" else splits
        for folder in listed:
            split_dir = fsio.join(images_root, folder)
            files = collapse_set_aside(split_dir, fsio.list_files(split_dir, self._image_suffixes(), recursive=True,
                                                                  follow_links=self.follow_links, links=True)) \
                if fsio.exists(split_dir) else []
            units += [(folder, tuple(files[i : i + FILES_PER_UNIT])) for i in range(0, len(files), FILES_PER_UNIT)]
            if folder in splits:  # labelled splits: a label map whose image is gone is a unit's reject too
                # roots as listed names spell them (`memory://x` lists `memory:///x/...`): compared by text
                orphans = self._labels_without_image(fsio.listed_root(split_dir),
                                                     fsio.listed_root(fsio.join(labels_root, folder)), files)
                units += [(folder, tuple(orphans[i : i + FILES_PER_UNIT])) for i in range(0, len(orphans), FILES_PER_UNIT)]
        return units

    def _labels_without_image(self, images_dir: str, labels_dir: str, images: list[str]) -> list[str]:
        """The label maps of a split no listed image pairs with (a download extracted in part):
        each is one `missing_image` reject, never read; it vanished without a word. Cityscapes'
        other gtFine files (`_color`, `_instanceIds`, `_polygons.json`) are no label map, and a
        `_labelTrainIds` beside its `_labelIds` no second one; what operating systems leave
        (`._x.png`, `__MACOSX/`) is passed over, as it always was in the label folders, and so is a
        folder that is a link leading out (the pairs reading it are its `outside_root` rejects)."""
        if not fsio.isdir(labels_dir):
            return []
        paired = {self._label_in(uri, images_dir, labels_dir) for uri in images}
        suffixes = {"ade20k": (".png",), "ade20k_full": (ADE_FULL_RELEASE_LABEL,)}.get(
            self.layout, (CITYSCAPES_LABEL_SUFFIX, CITYSCAPES_TRAIN_IDS_SUFFIX))
        lowered = tuple(suffix.lower() for suffix in suffixes)
        found: dict[str, str] = {}  # the label map an image would read -> the first file standing for it
        for uri in fsio.list_files(labels_dir, suffixes, recursive=True, follow_links=self.follow_links, links=True):
            if set_aside_problem(labels_dir, uri) or not uri.lower().endswith(lowered):
                continue  # a folder link or unlistable folder the listing names: its images' pairs say so
            read_as = uri
            if self.layout == "cityscapes" and uri.endswith(CITYSCAPES_TRAIN_IDS_SUFFIX):
                read_as = uri.removesuffix(CITYSCAPES_TRAIN_IDS_SUFFIX) + CITYSCAPES_LABEL_SUFFIX
            if read_as not in paired:
                found.setdefault(read_as, uri)
        return sorted(found.values())

    def _without_image(self, folder: str, labels_dir: str, uri: str, split: str) -> Reject:
        """A label map whose image is not there (`_labels_without_image`), under its pair's key."""
        *folders, name = names_below(labels_dir, uri)
        name = name.removesuffix(".png").removesuffix(".PNG")
        seg = ADE_FULL_RELEASE_LABEL.removesuffix(".png")
        if self.layout == "ade20k_full" and name.lower().endswith(seg):
            name = name[: -len(seg)]
        for suffix in (CITYSCAPES_LABEL_SUFFIX, CITYSCAPES_TRAIN_IDS_SUFFIX):
            name = name.removesuffix(suffix.removesuffix(".png"))
        group = safe_key(self.name, folder, "/".join([*self._folders_in_key(folders), name]))
        images = "/".join(filter(None, (self._pairs_root()[0][len(self.path):].strip("/"), folder)))
        return Reject(f"{group}-segmentation", self.name, group, "read", "missing_image",
                      f"label map {shown_name('/'.join(names_below(labels_dir, uri)))} has no image in "
                      f"{images}/"[:200], split_hint=split,
                      input=relative_input(uri, fsio.listed_root(self.path)))

    def _folders_in_key(self, folders: list[str]) -> list[str]:
        """The folders between a split folder and a file that its key carries: all but Cityscapes'
        city folder (its name begins every file's name), joined by '/' (which no file name holds, so
        `safe_key` adds a digest). A pair as a release lays them out (flat ADE20K, Cityscapes'
        `<city>/`) keeps its file name alone as its key; in folders deeper than that, a pair and a
        label map without its image keep their folders: `indoor/0001.jpg` and `outdoor/0001.jpg`
        took one key, and one pair was lost at assemble as a `duplicate_key`."""
        return folders[1:] if self.layout == "cityscapes" else folders

    def _full_ade_release_marked(self) -> bool:
        """`path` is the full ADE20K release's top (its index, its images/ADE) or that images/ADE."""
        path = self.path.rstrip("/")
        if fsio.basename(path) == "ADE" and fsio.isdir(fsio.join(path, "training")):
            return True
        return fsio.isdir(fsio.join(path, "images", "ADE")) or \
            any(fsio.exists(fsio.join(path, m)) for m in ADE_FULL_RELEASE_MARKERS)

    def _seg_png_beside_images(self, images_root: str, folders: tuple[str, ...]) -> bool:
        """Whether the image folders hold the full release's `_seg.png` (listed only to tell
        `check`'s refusals apart: under `ade20k` a tree without annotations/, under `ade20k_full`
        one with it)."""
        return any(f.lower().endswith(ADE_FULL_RELEASE_LABEL)
                   for folder in folders if fsio.isdir(fsio.join(images_root, folder))
                   for f in fsio.list_files(fsio.join(images_root, folder), (".png",), recursive=True))

    def _full_ade_release(self) -> ConfiguredPathMissing:
        """The full ADE20K release (3000+ classes coded in each `_seg.png`'s R and G, beside its
        image) is not the SceneParsing benchmark this layout reads: its files (the `_seg.png`
        among them) were each a `missing_annotation` reject, or `check` named only a missing folder."""
        return ConfiguredPathMissing("layout", (
            f"ade20k layout: {self.path} holds the full ADE20K release (images/ADE/<split>/<scene>/<name>.jpg "
            f"with <name>{ADE_FULL_RELEASE_LABEL}, 3000+ classes coded in R and G), which this layout does not "
            "read: set `layout: ade20k_full` to read it, or give `path` the SceneParsing benchmark, "
            "ADEChallengeData2016 (images/ and annotations/ of class indices 0..150, ADEChallengeData2016.zip)"))

    def _scene_parsing_benchmark(self, images_root: str, folders: tuple[str, ...]) -> bool:
        """Whether `ade20k_full` was given the SceneParsing benchmark: ADEChallengeData2016 below
        `path`, or an annotations/ folder beside the image folder and no `_seg.png` in its split
        folders (listed only where annotations/ is there: the release has none)."""
        if not fsio.isdir(images_root):
            return fsio.isdir(fsio.join(self.path, "ADEChallengeData2016"))
        root = images_root.rstrip("/")
        beside = fsio.join(root[: root.rfind("/")] if "://" in root else os.path.dirname(root), "annotations")
        return fsio.isdir(beside) and not self._seg_png_beside_images(images_root, folders)

    def _scene_parsing_refused(self) -> ConfiguredPathMissing:
        """The SceneParsing benchmark is not the full release `ade20k_full` reads: `check` passed it,
        and each of its images was a `missing_annotation` reject (no `_seg.png` beside it), 0 pairs."""
        return ConfiguredPathMissing("layout", (
            f"ade20k_full layout: {self.path} holds the SceneParsing benchmark, ADEChallengeData2016 "
            "(images/<split>/ and annotations/<split>/ of class indices 0..150, no <name>"
            f"{ADE_FULL_RELEASE_LABEL} beside the images), which this layout does not read: set `layout: "
            "ade20k` to read it, or give `path` the full ADE20K release (ADE20K_2021_17_01: "
            f"images/ADE/<split>/<scene>/<name>.jpg with <name>{ADE_FULL_RELEASE_LABEL})"))

    def _check_layout(self, images_root: str, labels_root: str, folders: tuple[str, ...]) -> None:
        """The path holds the layout's image folder, at least one split folder in it, and its label
        folder; else `check` names `layout` and what the path holds (a wrong layout would read
        nothing; without the label folder every image was a `missing_annotation` reject)."""
        if self.layout == "ade20k_full" and self._scene_parsing_benchmark(images_root, folders):
            raise self._scene_parsing_refused()
        relative = images_root[len(self.path):].strip("/")
        if not fsio.isdir(images_root):
            raise missing_under("layout", self.path, relative, f"{self.layout} layout: ")
        if not any(fsio.isdir(fsio.join(images_root, f)) for f in folders):
            raise missing_under("layout", self.path, f"{relative}/{folders[0]}", f"{self.layout} layout: ",
                                f"; nor {relative}/{folders[1]}")
        if not fsio.isdir(labels_root):
            if self.layout == "ade20k" and self._seg_png_beside_images(images_root, folders):
                raise self._full_ade_release()  # without its index: its `_seg.png` tell
            coarse = self.layout == "cityscapes" and fsio.isdir(fsio.join(self.path, "gtCoarse"))
            hint = "; gtCoarse is not read: the cityscapes layout reads gtFine (gtFine_trainvaltest.zip)" if coarse else ""
            raise missing_under("layout", self.path, labels_root[len(self.path):].strip("/"), f"{self.layout} layout: ",
                                hint)

    def label_uri(self, image_uri: str, folder: str) -> str:
        images_root, labels_root, _ = self._pairs_root()
        return self._label_in(image_uri, fsio.join(images_root, folder), fsio.join(labels_root, folder))

    def _label_in(self, image_uri: str, images_dir: str, labels_dir: str) -> str:
        """The label map an image of `images_dir` reads in `labels_dir` (names only: nothing asked)."""
        relative = image_uri[len(images_dir) :].lstrip("/")
        stem = relative.rsplit(".", 1)[0]
        if self.layout == "ade20k":
            relative = stem + ".png"
        elif self.layout == "ade20k_full":
            relative = stem + ADE_FULL_RELEASE_LABEL
        elif stem.endswith(CITYSCAPES_IMAGE_SUFFIX):  # .png as released, or .jpg as mirrors re-encode it
            relative = stem.removesuffix(CITYSCAPES_IMAGE_SUFFIX) + CITYSCAPES_LABEL_SUFFIX
        return fsio.join(labels_dir, relative)

    def _label_map(self, label: str) -> tuple[str, dict | None]:
        """The label map of an image and how to draw it (None when it is not there; each path asked
        once, a request on gs:// or s3://): ADE20K's (`VOID_MARK` as unlabeled), Cityscapes'
        `_labelIds` (its void ids and `VOID_MARK` as unlabeled), or
        where only `_labelTrainIds` is there, those as the label ids they stand for (a copy keeping
        only trainIds was one `missing_annotation` reject per image)."""
        if fsio.exists(label):
            if self.layout == "ade20k_full":  # 0 is unlabelled; 255 is a class of its own there
                return label, {"label_uri": label, "encoding": ADE_FULL_ENCODING}
            return label, {"label_uri": label, "unlabeled_ids": (VOID_MARK,)} if self.layout == "ade20k" else {
                "label_uri": label, "unlabeled_ids": CITYSCAPES_UNLABELED_IDS + (VOID_MARK,)}
        train_ids = label.removesuffix(CITYSCAPES_LABEL_SUFFIX) + CITYSCAPES_TRAIN_IDS_SUFFIX
        if self.layout == "cityscapes" and label.endswith(CITYSCAPES_LABEL_SUFFIX) and fsio.exists(train_ids):
            return train_ids, {"label_uri": train_ids, "value_ids": CITYSCAPES_ID_OF_TRAIN_ID}
        return label, None

    def _unlabeled(self, folder: str, key: str, group: str, split: str, at: str = "") -> Reject:
        """An image of a Cityscapes folder without fine labels: gtFine/test holds placeholders
        (cityscapesScripts #57: only the ego vehicle and the ROI marks), demoVideo
        (leftImg8bit_demoVideo.zip) has no labels, train_extra is labelled in gtCoarse only."""
        if folder == "test":
            return Reject(key, self.name, group, "read", "unlabeled_split",
                          "Cityscapes' test labels are withheld (gtFine/test holds placeholders)", split_hint=split,
                          input=at)
        if folder == "demoVideo":
            return Reject(key, self.name, group, "read", "unlabeled_split",
                          "demoVideo's frames have no labels", split_hint=split, input=at)
        return Reject(key, self.name, group, "read", "coarse_labels_only",
                      f"{folder} is labelled in gtCoarse only, which is not read", split_hint=split, input=at)

    def read(self, unit: tuple[str, tuple[str, ...]]) -> Iterator[SourceItem]:
        if self.layout == "voc":
            yield from self._voc().read(unit)
            return
        if self.layout == "sbd":
            yield from SbdSegmentation(self.name, self.path, self.follow_links).read(unit)
            return
        folder, files = unit
        unlabeled = self.layout == "cityscapes" and folder in CITYSCAPES_UNLABELED_SPLITS
        split = {**ADE_SPLITS, **CITYSCAPES_SPLITS, **CITYSCAPES_UNLABELED_SPLITS}[folder]
        images_root, labels_root, _ = self._pairs_root()  # asked once a unit, not once an image
        # as listed names spell them (`memory://x` lists `memory:///x/...`): the files are compared with them by text
        split_dir, labels_dir = (fsio.listed_root(fsio.join(root, folder)) for root in (images_root, labels_root))
        for uri in files:
            if self._is_label_file(uri, split_dir, labels_dir):  # a label map whose image is gone: never read
                yield self._without_image(folder, labels_dir, uri, split)
                continue
            at = relative_input(uri, fsio.listed_root(self.path))
            aside = set_aside_problem(split_dir, uri)
            if aside:  # a Mac's `._x.png`, `@eaDir/`: never an image without its label map
                key = safe_key(self.name, folder, *names_below(split_dir, uri))
                yield Reject(key, self.name, key, "read", aside.reason, aside.detail, split_hint=split, input=at)
                continue
            *folders, name = names_below(split_dir, uri)
            stem = name.rsplit(".", 1)[0].removesuffix(CITYSCAPES_IMAGE_SUFFIX)
            group = safe_key(self.name, folder, "/".join([*self._folders_in_key(folders), stem]))
            key = f"{group}-segmentation"
            if unlabeled:
                yield self._unlabeled(folder, key, group, split, at)
                continue
            label, annotation = self._label_map(self._label_in(uri, split_dir, labels_dir))
            outside = path_problem(self.path, uri, self.follow_links) or \
                path_problem(self.path, label, self.follow_links)
            if outside:
                yield Reject(key, self.name, group, "read", outside.reason, outside.detail, split_hint=split, input=at)
                continue
            if annotation is None:
                yield Reject(key, self.name, group, "read", "missing_annotation", f"no label map {fsio.basename(label)}",
                             split_hint=split, input=at)
                continue
            yield PairRecord(key=key, source=self.name, group=group, task="segmentation", image_uri=uri,
                             annotation=annotation, split_hint=split,
                             lineage={"file": "/".join([folder, *self._folders_in_key(folders), name])})
