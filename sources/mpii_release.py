"""MPII's own release, `mpii_human_pose_v1_u12_1.mat`, read as HRNet's JSON encodes people (joints
by id, every annotated joint visible): the JSON MMPose ships as `mpii_train.json`, whose entries the
MPII reader already takes.

The file is one MATLAB struct `RELEASE`: `annolist(i).image.name`, `annolist(i).annorect(k)` (one
person: `annopoints.point(j)` with `x`, `y` (MATLAB's 1-based pixel centres), `id` 0..15 and
`is_visible`), and `img_train(i)` (1 train, 0 test). As in HRNet's JSON, an entry is one annotated
person of a train image: joints by `id`, `[-1, -1]` and joints_vis 0 where MPII left a joint out,
joints_vis 1 for every annotated joint. `is_visible` is not used: MPII leaves it empty on the head's
two points, writes it as the text '1' on some, and its evaluation counts every annotated joint.
A person without `annopoints` (not annotated, or a test image's person: `scale` and `objpos` only)
is no entry. An image none of whose people is an entry is one `UnannotatedImage` (a test image,
whose joints MPII withholds: `unlabeled_split`; a train image: `no_pose_annotations`), never
dropped without a word.

Memory: scipy builds Python objects for the release's 25k images and 40k people. The file's size
and what its compressed variables inflate to are judged before scipy reads it: a synthetic release
of the real counts (4.7 MB compressed, 135 MB inflated) peaks at 355 MB read this way, 2.6 times
its inflated bytes (one of the real compressed size, 12.6 MB, with random coordinates inflates
to about 150 MiB, 1.28 times under the budget). That is not the worst: scipy builds nested 1 x 1 structs (one person of one
point per image) at 4.0 times their inflated bytes, and the entries made of them take as much
again (a 314 KB file of 100k such images, 53 MiB inflated: +422 MiB, 7.9 times; by that ratio, at the old 512 MiB
budget, 3.7 GiB). So the inflated bytes are held to `MAX_RELEASE_INFLATED_BYTES`, the cells and
fields scipy would make of them to `MAX_RELEASE_OBJECTS` (counted from the headers), and images and
people are counted before entries are made (`MAX_RELEASE_IMAGES`, `MAX_RELEASE_PEOPLE`; entries
`KEPT_ENTRY_BYTES` each): a 1.8 MB file of that shape at the edge (190 MiB inflated, 50k entries)
peaks at +785 MiB, its entries made after scipy's own peak has passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sources.annotation_files import AnnotationFileError
from sources.fsio import FileTooLarge
from sources.mat_files import MatTooLarge, MatUnreadable, read_mat_variable
from sources.records import read_input_bytes

MPII_JOINTS = 16
MAX_RELEASE_FILE_BYTES = 64 << 20  # the release is 12.5 MB
MAX_RELEASE_INFLATED_BYTES = 192 << 20  # its variables inflated (a synthetic one of its counts and size: ~150 MiB)
# the cells and fields scipy makes of RELEASE, counted from its headers before it reads them
# (`read_mat_variable`): a synthetic release of 24,987 images and 33,555 people holds 3.42M (scipy
# read it in +312 MiB), the real one's 40k people about 4.1M; 6M cost at most about 1 GiB (176 B
# each, a cell of empty matrices, where a 93 KB file of 8M such cells took 1.3 GB; a sparse matrix,
# ~939 B measured, counts as 1 + SPARSE_EXTRA_OBJECTS)
MAX_RELEASE_OBJECTS = 6_000_000
MAX_RELEASE_IMAGES = 50_000  # about twice the release's 24,987 images, counted before entries are made
MAX_RELEASE_PEOPLE = 80_000  # about twice its 40k people (`annorect`s)
KEPT_ENTRY_BYTES = 3072  # what one entry kept takes (a dict of 16 joints: 2.8 KiB measured, read or parsed from JSON)
UNLABELED_SPLIT = "unlabeled_split"
NO_POSE_ANNOTATIONS = "no_pose_annotations"


@dataclass(frozen=True)
class UnannotatedImage:
    """An image of the release with no annotated person: its reject's reason and detail."""

    image: str
    where: str  # MATLAB's 1-based `annolist(i)`
    reason: str
    detail: str


@dataclass(frozen=True)
class ReleaseEntry:
    """One entry read from the release: an MMPose entry (`entry`), or the `problem` that kept one
    of its people from being one, at `where` (MATLAB's 1-based `annolist(i).annorect(k)`)."""

    image: str | None
    where: str
    entry: dict | None = None
    problem: str | None = None


def _each(value: Any) -> list:
    """The elements of a MATLAB array as scipy reads it squeezed: a 1 x 1 struct (one person, one
    point) comes back as the struct itself, [] as an empty array; a field the struct lacks (None)
    holds nothing."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return list(value.flat)
    return [value]


def _number(value: Any) -> float | None:
    """A MATLAB scalar as a finite float, or None ([] or text or anything else)."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return None
        value = value.flat[0]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _release(uri: str) -> Any:
    """The file's `RELEASE`, its size and inflation judged first."""
    try:
        data = read_input_bytes(uri, MAX_RELEASE_FILE_BYTES)
    except FileTooLarge:
        raise AnnotationFileError(uri, f"is over {MAX_RELEASE_FILE_BYTES >> 20} MiB (MPII's release is 12.5 MB)") from None
    try:
        release = read_mat_variable(data, "RELEASE", MAX_RELEASE_INFLATED_BYTES, MAX_RELEASE_OBJECTS)
    except MatTooLarge as exc:
        raise AnnotationFileError(uri, f"is over the memory budget of one MPII release: {exc}") from None
    except MatUnreadable as exc:
        raise AnnotationFileError(uri, f"is {exc}") from None
    if release is None:
        raise AnnotationFileError(uri, "holds no RELEASE struct (MPII's mpii_human_pose_v1_u12_1.mat)")
    return release


def read_release(uri: str) -> list[ReleaseEntry | UnannotatedImage]:
    """The release's entries in `annolist` order: each annotated person of a train image, and one
    `UnannotatedImage` for each image without one."""
    release = _release(uri)
    annolist, img_train = getattr(release, "annolist", None), getattr(release, "img_train", None)
    if annolist is None or img_train is None:
        raise AnnotationFileError(uri, "RELEASE has no annolist or img_train")
    images, flags = _each(annolist), _each(img_train)
    if len(images) != len(flags):
        raise AnnotationFileError(uri, f"RELEASE.annolist lists {len(images)} images, img_train {len(flags)}")
    if len(images) > MAX_RELEASE_IMAGES:
        raise AnnotationFileError(uri, f"RELEASE.annolist lists {len(images)} images, over the {MAX_RELEASE_IMAGES} "
                                       "of one MPII release's memory budget (the release has 24,987)")
    people = sum(len(_each(getattr(image, "annorect", None))) for image in images)
    if people > MAX_RELEASE_PEOPLE:
        raise AnnotationFileError(uri, f"RELEASE.annolist holds {people} people, over the {MAX_RELEASE_PEOPLE} "
                                       "of one MPII release's memory budget (the release has about 40k)")
    entries: list[ReleaseEntry | UnannotatedImage] = []
    for index, (image, train) in enumerate(zip(images, flags), 1):
        entries.extend(_image_entries(image, _number(train), f"annolist({index})"))
    return entries


def _image_entries(image: Any, train: float | None, where: str) -> list[ReleaseEntry | UnannotatedImage]:
    name = getattr(getattr(image, "image", None), "name", None)
    if not isinstance(name, str) or not name:
        return [ReleaseEntry(None, where, problem="has no image.name")]
    if train not in (0.0, 1.0):
        return [ReleaseEntry(name, where, problem="its img_train is neither 1 nor 0")]
    people = [p for p in _each(getattr(image, "annorect", None)) if hasattr(p, "_fieldnames")]
    if train == 0.0:
        return [UnannotatedImage(name, where, UNLABELED_SPLIT, f"{name} is an MPII test image (img_train 0): "
                                                        "its joints are withheld")]
    entries = [_person_entry(name, person, f"{where}.annorect({k})") for k, person in enumerate(people, 1)
               if _each(getattr(person, "annopoints", None))]
    if not entries:
        return [UnannotatedImage(name, where, NO_POSE_ANNOTATIONS, f"none of the {len(people)} people of "
                                                             f"{name} has annopoints")]
    return entries


def _person_entry(name: str, person: Any, where: str) -> ReleaseEntry:
    """One annotated person as MMPose's entry, or the problem with its points."""
    joints, visible = [[-1.0, -1.0] for _ in range(MPII_JOINTS)], [0] * MPII_JOINTS
    points = [p for annopoints in _each(person.annopoints) for p in _each(getattr(annopoints, "point", None))]
    if not points:
        return ReleaseEntry(name, where, problem="annopoints has no point")
    for j, point in enumerate(points, 1):
        x, y, joint = (_number(getattr(point, f, None)) for f in ("x", "y", "id"))
        if x is None or y is None:
            return ReleaseEntry(name, where, problem=f"annopoints.point({j}) x, y are not numbers")
        if joint is None or joint != int(joint) or not 0 <= joint < MPII_JOINTS:
            return ReleaseEntry(name, where, problem=f"annopoints.point({j}).id is not a joint 0..{MPII_JOINTS - 1}")
        joints[int(joint)], visible[int(joint)] = [x, y], 1
    objpos = getattr(person, "objpos", None)
    centre = [_number(getattr(objpos, "x", None)), _number(getattr(objpos, "y", None))]
    return ReleaseEntry(name, where, entry={"joints_vis": visible, "joints": joints, "image": name,
                                            "scale": _number(getattr(person, "scale", None)), "center": centre})
