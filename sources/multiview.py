"""Multi-view object sequences: Objaverse renders (Zero123 layout) and CO3D.

A sentence is one object's views ordered by the azimuth computed from the cameras (file names
and capture order are not trusted). When a sequence has more views than a sentence takes, the
views are picked evenly in azimuth order; fewer is a reject (`too_few_views`).
"""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from sources import fsio
from sources.records import MultiViewRecord, PairRecord, Reject, SourceItem, safe_key


# -- camera geometry (pure) ------------------------------------------------------------------
def blender_camera_centre(rt: np.ndarray) -> np.ndarray:
    """Zero123's 3x4 world-to-camera [R | t]: the camera centre C = -R^T t."""
    rt = np.asarray(rt, dtype=np.float64).reshape(3, 4)
    return -rt[:, :3].T @ rt[:, 3]


def pytorch3d_camera_centre(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """CO3D/PyTorch3D row-vector convention X_view = X_world @ R + T: C = -T @ R^T."""
    return -np.asarray(t, dtype=np.float64) @ np.asarray(r, dtype=np.float64).T


def azimuths_about_axis(centres: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Azimuth in degrees [0, 360) of each camera centre around `up`, counter-clockwise seen from above."""
    up = np.asarray(up, dtype=np.float64)
    up = up / np.linalg.norm(up)
    reference = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = reference - up * (reference @ up)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    centred = np.asarray(centres, dtype=np.float64)
    return np.degrees(np.arctan2(centred @ e2, centred @ e1)) % 360.0


def orbit_axis(centres: np.ndarray, camera_ups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The axis a hand-held orbit turns about: the normal of the plane best fitting the camera
    centres, signed to agree with the cameras' own up vectors. Returns (axis, orbit centre)."""
    centres = np.asarray(centres, dtype=np.float64)
    middle = centres.mean(axis=0)
    _, _, vt = np.linalg.svd(centres - middle)
    normal = vt[-1]
    if normal @ np.asarray(camera_ups, dtype=np.float64).mean(axis=0) < 0:
        normal = -normal
    return normal, middle


def pick_evenly(count: int, wanted: int) -> list[int]:
    """`wanted` indices spread evenly over range(count) (all of them when count == wanted)."""
    return sorted({int(i) for i in np.floor(np.arange(wanted) * count / wanted)})


# -- Objaverse (Zero123 layout) ----------------------------------------------------------------
@dataclass(frozen=True)
class ObjaverseSource:
    name: str
    path: str
    views: int = 24

    def units(self) -> list[str]:
        objects = fsio.list_dirs(self.path)
        if not objects:
            raise FileNotFoundError(f"no object folders (<uid>/NNN.png + NNN.npy) under {self.path}")
        return objects

    def read(self, folder: str) -> Iterator[SourceItem]:
        uid = fsio.basename(folder)
        key = safe_key(self.name, uid)
        files = fsio.list_files(folder)
        pngs = {fsio.basename(f)[:-4]: f for f in files if f.endswith(".png")}
        npys = {fsio.basename(f)[:-4]: f for f in files if f.endswith(".npy")}
        views = []
        for stem in sorted(pngs):
            if stem not in npys:
                continue
            try:
                rt = np.load(io.BytesIO(fsio.read_bytes(npys[stem])), allow_pickle=False)
                centre = blender_camera_centre(rt)
            except Exception as exc:
                yield Reject(key, self.name, key, "read", "bad_camera", f"{stem}.npy: {exc}"[:200])
                return
            views.append((stem, pngs[stem], centre))
        missing = sorted(set(pngs) - set(npys))
        if len(views) < self.views:
            detail = f"{len(views)} views with cameras < {self.views}"
            if missing:
                detail += f"; no camera for {', '.join(missing[:5])}"
            yield Reject(key, self.name, key, "read", "too_few_views", detail)
            return
        centres = np.stack([v[2] for v in views])
        azimuths = azimuths_about_axis(centres, np.array([0.0, 0.0, 1.0]))  # Blender world: +Z up
        order = np.argsort(azimuths, kind="stable")
        chosen = [order[i] for i in pick_evenly(len(order), self.views)]
        radius = np.linalg.norm(centres, axis=1)
        elevation = np.degrees(np.arcsin(np.clip(centres[:, 2] / radius, -1, 1)))
        yield MultiViewRecord(
            key=key, source=self.name, group=key,
            view_uris=tuple(views[i][1] for i in chosen),
            azimuths_deg=tuple(round(float(azimuths[i]), 3) for i in chosen),
            lineage={"uid": uid, "views_available": len(views),
                     "elevation_deg": round(float(np.median(elevation)), 3),
                     "radius": round(float(np.median(radius)), 4),
                     "files": [views[i][0] for i in chosen]},
        )


# -- CO3D v2 ---------------------------------------------------------------------------------
CO3D_PAIR_TASKS = ("depth", "segmentation")


def read_jgz(uri: str) -> Any:
    return json.loads(gzip.decompress(fsio.read_bytes(uri)))


@dataclass(frozen=True)
class Co3dSource:
    name: str
    path: str
    views: int = 24
    categories: tuple[str, ...] = ()
    pair_tasks: tuple[str, ...] = ()  # also emit (frame, depth) / (frame, mask) pairs

    def units(self) -> list[str]:
        categories = [d for d in fsio.list_dirs(self.path) if fsio.exists(fsio.join(d, "frame_annotations.jgz"))]
        if self.categories:
            categories = [d for d in categories if fsio.basename(d) in self.categories]
        if not categories:
            raise FileNotFoundError(f"no <category>/frame_annotations.jgz under {self.path}")
        return categories

    def read(self, category_dir: str) -> Iterator[SourceItem]:
        category = fsio.basename(category_dir)
        frames = read_jgz(fsio.join(category_dir, "frame_annotations.jgz"))
        by_sequence: dict[str, list[dict]] = {}
        for frame in frames:
            by_sequence.setdefault(frame["sequence_name"], []).append(frame)
        for sequence in sorted(by_sequence):
            yield from self._sequence(category, sequence, by_sequence[sequence])

    def _sequence(self, category: str, sequence: str, frames: Sequence[dict]) -> Iterator[SourceItem]:
        key = safe_key(self.name, category, sequence)
        images_dir = fsio.join(self.path, category, sequence, "images")
        present = {fsio.basename(f) for f in fsio.list_files(images_dir)} if fsio.exists(images_dir) else set()
        usable = [f for f in frames if fsio.basename(f["image"]["path"]) in present]
        lost = len(frames) - len(usable)
        if lost:
            yield Reject(f"{key}-missing", self.name, key, "read", "missing_frames",
                         f"{lost} annotated frames have no image file")
        if len(usable) < self.views:
            yield Reject(key, self.name, key, "read", "too_few_views", f"{len(usable)} frames < {self.views}")
            return
        rotations = np.array([f["viewpoint"]["R"] for f in usable], dtype=np.float64)
        translations = np.array([f["viewpoint"]["T"] for f in usable], dtype=np.float64)
        centres = np.stack([pytorch3d_camera_centre(r, t) for r, t in zip(rotations, translations)])
        camera_ups = rotations[:, :, 1]  # PyTorch3D view +Y (up) expressed in world coordinates
        axis, middle = orbit_axis(centres, camera_ups)
        azimuths = azimuths_about_axis(centres - middle, axis)
        order = np.argsort(azimuths, kind="stable")
        chosen = [order[i] for i in pick_evenly(len(order), self.views)]
        yield MultiViewRecord(
            key=key, source=self.name, group=key,
            view_uris=tuple(fsio.join(self.path, usable[i]["image"]["path"]) for i in chosen),
            azimuths_deg=tuple(round(float(azimuths[i]), 3) for i in chosen),
            lineage={"category": category, "sequence": sequence, "frames_available": len(usable),
                     "frame_numbers": [int(usable[i]["frame_number"]) for i in chosen]},
        )
        for task in self.pair_tasks:
            for frame in usable:
                yield from self._pair(task, category, sequence, key, frame)

    def _pair(self, task: str, category: str, sequence: str, group: str, frame: dict) -> Iterator[SourceItem]:
        pair_key = f"{group}-f{int(frame['frame_number']):06d}-{task}"
        image_uri = fsio.join(self.path, frame["image"]["path"])
        if task == "depth":
            depth = frame.get("depth") or {}
            if not depth.get("path"):
                yield Reject(pair_key, self.name, group, "read", "missing_annotation", "no depth path")
                return
            annotation = {"depth_uri": fsio.join(self.path, depth["path"]), "format": "co3d",
                          "scale": float(depth.get("scale_adjustment") or 1.0)}
        else:
            mask = frame.get("mask") or {}
            if not mask.get("path"):
                yield Reject(pair_key, self.name, group, "read", "missing_annotation", "no mask path")
                return
            annotation = {"mask_uri": fsio.join(self.path, mask["path"]), "class_id": 1}
        yield PairRecord(key=pair_key, source=self.name, group=group, task=task, image_uri=image_uri,
                         annotation=annotation,
                         lineage={"category": category, "sequence": sequence, "frame": int(frame["frame_number"])})
