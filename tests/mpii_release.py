"""MPII's own annotation release, `mpii_human_pose_v1_u12_1.mat`, written with scipy in the layout
MATLAB saved it in (a compressed v5 file holding one 1x1 struct `RELEASE`), and the same people as
HRNet's JSON (the one MMPose ships) encodes them: the MPII reader's tests compare the two.

The layout, as the release's README and the file give it: `RELEASE.annolist` (1 x images) with
`image.name`, `annorect` (1 x people: head box `x1 y1 x2 y2`, `scale`, `objpos.x/.y`,
`annopoints.point` (1 x points: `x`, `y`, `id` 0..15, `is_visible`: 1, 0, the text '1' / '0', or
[] for the head's points)), `frame_sec`, `vididx`; `RELEASE.img_train` (1 x images: 1 train,
0 test), `single_person` (images x 1 cell), `act` (images x 1 struct), `video_list`, `version`.
A test image's people have `scale` and `objpos` only (no `annopoints` field); a train person MPII
did not annotate has `annopoints = []`; MATLAB keeps a 1 x 1 struct array (one person, one point)
as the struct itself, which scipy then reads as 1 x 1 too."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EMPTY = np.zeros((0, 0))  # MATLAB's []
POINT_FIELDS = ("x", "y", "id", "is_visible")
TRAIN_PERSON_FIELDS = ("x1", "y1", "x2", "y2", "annopoints", "scale", "objpos")
TEST_PERSON_FIELDS = ("scale", "objpos")


@dataclass
class Person:
    points: list[tuple[int, float, float, object]] | None  # (id, x, y, is_visible); None: no annopoints
    objpos: tuple[float, float] = (100.0, 120.0)
    scale: float = 1.5


@dataclass
class Image:
    name: str
    train: bool
    people: list[Person] = field(default_factory=list)
    person_fields: tuple[str, ...] | None = None  # a train image's people with a test image's fields


def _struct_array(rows: list[dict], fields: tuple[str, ...]) -> np.ndarray:
    array = np.empty((1, len(rows)), dtype=[(name, object) for name in fields])
    for i, row in enumerate(rows):
        for name in fields:
            array[0, i][name] = row.get(name, EMPTY)
    return array


def _point(point_id: int, x: float, y: float, visible: object) -> dict:
    shown = EMPTY if visible is None else visible  # '1' stays text, as MATLAB kept it
    return {"x": float(x), "y": float(y), "id": float(point_id), "is_visible": shown}


def _person(person: Person, train: bool) -> dict:
    row = {"scale": person.scale, "objpos": {"x": person.objpos[0], "y": person.objpos[1]}}
    if train:
        row.update(x1=person.objpos[0] - 10, y1=person.objpos[1] - 40, x2=person.objpos[0] + 10, y2=person.objpos[1] - 20)
        row["annopoints"] = EMPTY if person.points is None else \
            {"point": _struct_array([_point(*p) for p in person.points], POINT_FIELDS)}
    return row


def write_release(path: Path, images: list[Image]) -> None:
    """The release of `images` as MATLAB's `save` (v7, compressed) lays it out."""
    from scipy.io import savemat

    annolist = np.empty((1, len(images)), dtype=[(n, object) for n in ("image", "annorect", "frame_sec", "vididx")])
    for i, image in enumerate(images):
        fields = image.person_fields or (TRAIN_PERSON_FIELDS if image.train else TEST_PERSON_FIELDS)
        annorect = _struct_array([_person(p, image.train) for p in image.people], fields) if image.people else EMPTY
        annolist[0, i] = ({"name": image.name}, annorect, EMPTY, EMPTY)
    single = np.empty((len(images), 1), dtype=object)
    for i, image in enumerate(images):
        single[i, 0] = np.arange(1, len(image.people) + 1, dtype=np.float64).reshape(-1, 1) if image.people else EMPTY
    act = _struct_array([{"cat_name": "sports", "act_name": "running", "act_id": 1.0} for _ in images],
                        ("cat_name", "act_name", "act_id")).T
    release = {"annolist": annolist, "img_train": np.array([[float(i.train) for i in images]]),
               "version": "12", "single_person": single, "act": act,
               "video_list": np.array([["aaaaaaaaaaa"]], dtype=object)}
    savemat(path, {"RELEASE": release}, do_compression=True, oned_as="row")


def mmpose_entries(images: list[Image]) -> list[dict]:
    """The release's people as HRNet's JSON encodes them: one entry per annotated person of a
    train image, joints in MATLAB's coordinates, [-1, -1] and joints_vis 0 for joints MPII left out,
    joints_vis 1 for every annotated one (MPII's `is_visible` is not what it says)."""
    entries = []
    for image in images:
        for person in image.people:
            if not image.train or not person.points:
                continue
            joints, visible = [[-1.0, -1.0]] * 16, [0] * 16
            for point_id, x, y, _ in person.points:
                joints[point_id], visible[point_id] = [float(x), float(y)], 1
            entries.append({"joints_vis": visible, "joints": joints, "image": image.name,
                            "scale": person.scale, "center": list(person.objpos)})
    return entries
