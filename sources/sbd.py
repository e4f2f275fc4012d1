"""SBD, the Semantic Boundaries Dataset, as benchmark.tgz unpacks (`layout: sbd` of `type: segmentation`).

    benchmark_RELEASE/dataset/img/<id>.jpg      11,355 VOC2011 images
    benchmark_RELEASE/dataset/cls/<id>.mat      GTcls: Segmentation (class indices 0..20, 0 background,
                                                no void border), Boundaries, CategoriesPresent
    benchmark_RELEASE/dataset/{train,val}.txt   8,498 and 2,857 ids (train_noval.txt, inst/: not read)

torchvision's SBDataset and mmseg's voc_aug.py read a map as `loadmat(f)["GTcls"][0]["Segmentation"][0]`;
here the same array is read, the file's size and what its variables inflate to judged before scipy
reads it. As in `sources.voc` the lists name the pairs (read by `read_voc_list`, with its budgets):
an id of train.txt is train, of val.txt val (in both: val); a class map no list names is counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from sources import fsio
from sources.mat_files import MatTooLarge, MatUnreadable, read_mat_variable
from sources.paths import ConfiguredPathMissing, missing_under, path_problem, set_aside_problem
from sources.records import PairRecord, Reject, SourceItem, relative_input, safe_key
from sources.voc import (MAX_VOC_LIST_IDS, read_voc_list, split_list_rejects, unlisted_files, unlisted_map_rejects,
                         units_of)

SBD_IMAGES, SBD_LABELS = "img", "cls"
SBD_SPLIT_LISTS = {"val.txt": "val", "train.txt": "train"}  # the order an id listed twice is taken: held out first
LIST_UNIT, UNLISTED_UNIT = "sbd:lists", "sbd:unlisted"
# a class map's budget, judged before scipy reads it: SBD's are 3-40 KB, inflating to under 1 MB
# (a 500x500 uint8 map and its boundary cells); 64 MiB inflated is an 8k x 8k map
MAX_SBD_MAT_BYTES = 16 << 20
MAX_SBD_MAT_INFLATED = 64 << 20
# the cells and fields scipy makes of GTcls: SBD's are under 30 (Boundaries, 20 x 1 at most, and
# three fields); 100k is about 17 MiB as scipy reads them
MAX_SBD_MAT_OBJECTS = 100_000


class SbdMapError(ValueError):
    """A class map file that cannot be read as SBD's, in words a user can act on."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def sbd_class_map(data: bytes) -> np.ndarray:
    """`GTcls.Segmentation` of an SBD cls/<id>.mat: a 2-D array of class indices. The file is judged
    first (`read_mat_variable`): past what its variables may inflate to or the cells and fields
    scipy would make of GTcls, `annotation_too_large`; a file that is no MAT file, or holds no such
    array, is `bad_annotation`. Read unsqueezed, as torchvision does (`GTcls[0, 0]`): a 1 x W map
    stays 2-D."""
    try:
        gtcls = read_mat_variable(data, "GTcls", MAX_SBD_MAT_INFLATED, MAX_SBD_MAT_OBJECTS, squeeze_me=False)
    except MatTooLarge as exc:
        raise SbdMapError("annotation_too_large", str(exc)) from None
    except MatUnreadable as exc:
        raise SbdMapError("bad_annotation", str(exc)) from None
    first = gtcls.flat[0] if isinstance(gtcls, np.ndarray) and gtcls.dtype == object and gtcls.size else None
    labels = getattr(first, "Segmentation", None)
    if not isinstance(labels, np.ndarray) or labels.ndim != 2 or labels.dtype.kind not in "iub" or 0 in labels.shape:
        raise SbdMapError("bad_annotation", "holds no GTcls.Segmentation map of class indices (SBD's cls/<id>.mat)")
    if labels.dtype.kind == "i" and labels.size and int(labels.min()) < 0:
        raise SbdMapError("bad_annotation", "GTcls.Segmentation holds negative class indices")
    return labels


@dataclass(frozen=True)
class SbdSegmentation:
    """The reader behind `SegmentationSource(layout="sbd")`: units are split lists' ids."""

    name: str
    path: str
    follow_links: bool = False

    def root(self) -> str:
        """The dataset/ folder: `path` itself, or below it, or below its benchmark_RELEASE/."""
        for root in (self.path, fsio.join(self.path, "dataset"), fsio.join(self.path, "benchmark_RELEASE", "dataset")):
            if fsio.isdir(fsio.join(root, SBD_LABELS)):
                return root
        return self.path

    def _check(self, root: str) -> None:
        for needed in (SBD_IMAGES, SBD_LABELS):
            if not fsio.isdir(fsio.join(root, needed)):
                raise missing_under("layout", self.path, relative_input(fsio.join(root, needed), self.path),
                                    "sbd layout: ", "; expected benchmark_RELEASE/dataset/{img,cls}/ as SBD's "
                                    "benchmark.tgz unpacks")
        if not any(fsio.exists(fsio.join(root, n)) for n in SBD_SPLIT_LISTS):
            raise ConfiguredPathMissing("layout", f"sbd layout: no train.txt nor val.txt in "
                                                  f"{relative_input(root, self.path) or root}: SBD's lists say which "
                                                  "images are its own")

    def units(self) -> list[tuple[str, tuple[str, ...]]]:
        root = self.root()
        self._check(root)
        units: list[tuple[str, tuple[str, ...]]] = []
        taken: set[str] = set()
        room, list_uris = MAX_VOC_LIST_IDS, []
        for list_name in SBD_SPLIT_LISTS:
            uri = fsio.join(root, list_name)
            if not fsio.exists(uri):
                continue
            list_uris.append(uri)
            if path_problem(self.path, uri, self.follow_links) or set_aside_problem(self.path, uri):
                continue  # its own unit's reject
            ids, _, used = read_voc_list(uri, room)
            room -= used
            ids = [i for i in dict.fromkeys(ids) if i not in taken]
            taken.update(ids)
            units += units_of(list_name, [fsio.join(root, SBD_IMAGES, i + ".jpg") for i in ids])
        units += units_of(UNLISTED_UNIT, unlisted_files(fsio.join(root, SBD_LABELS), ".mat", taken))
        return units + ([(LIST_UNIT, tuple(list_uris))] if list_uris else [])

    def read(self, unit: tuple[str, tuple[str, ...]]) -> Iterator[SourceItem]:
        folder, files = unit
        if folder == LIST_UNIT:
            yield from self._read_lists(files)
        elif folder == UNLISTED_UNIT:
            yield from self._read_unlisted(files)
        else:
            yield from self._read_listed(folder, files)

    def _read_lists(self, uris: tuple[str, ...]) -> Iterator[Reject]:
        """The lists' `bad_split_list` rejects (`split_list_rejects`), judged in `units`' order."""
        yield from split_list_rejects(self.name, self.path, self.follow_links, uris,
                                      lambda uri: safe_key(self.name, fsio.basename(uri)))

    def _read_unlisted(self, uris: tuple[str, ...]) -> Iterator[Reject]:
        yield from unlisted_map_rejects(self.name, self.path, fsio.join(self.root(), SBD_LABELS), SBD_LABELS, uris,
                                        "neither train.txt nor val.txt names it")

    def _read_listed(self, list_name: str, images: tuple[str, ...]) -> Iterator[SourceItem]:
        split = SBD_SPLIT_LISTS[list_name]
        for image in images:
            image_id = fsio.basename(image).rsplit(".", 1)[0]
            group = safe_key(self.name, image_id)
            key = f"{group}-segmentation"
            annotation = fsio.join(image.rsplit("/", 2)[0], SBD_LABELS, image_id + ".mat")
            at = relative_input(image, fsio.listed_root(self.path))
            outside = path_problem(self.path, image, self.follow_links) or \
                path_problem(self.path, annotation, self.follow_links)
            if outside:
                yield Reject(key, self.name, group, "read", outside.reason, outside.detail, split_hint=split, input=at)
            elif not fsio.exists(image):
                yield Reject(key, self.name, group, "read", "missing_image",
                             f"{list_name} lists {image_id}; no {SBD_IMAGES}/{image_id}.jpg", split_hint=split,
                             input=at)
            elif not fsio.exists(annotation):
                yield Reject(key, self.name, group, "read", "missing_annotation",
                             f"{list_name} lists {image_id}; no class map {SBD_LABELS}/{image_id}.mat",
                             split_hint=split, input=at)
            else:
                yield PairRecord(key=key, source=self.name, group=group, task="segmentation", image_uri=image,
                                 annotation={"label_mat_uri": annotation}, split_hint=split,
                                 lineage={"file": f"{SBD_IMAGES}/{image_id}.jpg", "sbd_list": list_name})
