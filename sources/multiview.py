"""Multi-view object sequences: Objaverse renders (Zero123 layout) and CO3D.

A sentence is one object's views ordered by the azimuth computed from the cameras (file names
and capture order are not trusted). When a sequence has more views than a sentence takes, the
views are picked evenly in azimuth order; fewer is a reject (`too_few_views`). A CO3D walk has
no azimuth origin of its own and need not close: its views run from the end of its widest gap
round the orbit, each the nearest to azimuths evenly spaced (not to evenly spaced indices,
which crowd where the walk lingered); its azimuths are counted from its first view.
In Objaverse's folders, what operating systems and tools leave (a Mac's `._x.png`, `__MACOSX/`, `@eaDir/`, `.git/`) is one
`os_metadata` or `hidden_file` reject each (`sources.paths.set_aside`), never a view, a camera or an object.
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from sources import fsio
from sources.annotation_files import (BAD_ANNOTATION, BAD_ANNOTATION_FILE, AnnotationFileError, as_int, is_number,
                                      iter_json_list, iter_json_object_lists, numbers)
from sources.paths import (ConfiguredPathMissing, ConfiguredValueMismatch, OutsideRoot, PathProblem, check_inside,
                           join_inside, names_found, path_problem, set_aside, set_aside_problem, twin_problem,
                           twin_to_read)
from sources.records import (MachineError, MultiViewRecord, PairRecord, Reject, SourceItem, nfc, read_input_bytes,
                             layout_twin_order, relative_input, safe_key, twin_detail, twin_order,
                             unicode_form)


# -- camera geometry (pure) ------------------------------------------------------------------
def blender_camera_centre(rt: np.ndarray) -> np.ndarray:
    """Zero123's 3x4 world-to-camera [R | t]: the camera centre C = -R^T t."""
    rt = np.asarray(rt, dtype=np.float64).reshape(3, 4)
    return -rt[:, :3].T @ rt[:, 3]


ROTATION_TOLERANCE = 1e-3  # float32 cameras are orthonormal to ~1e-7; a scaled or sheared one is far off
MIN_CAMERA_DISTANCE = 1e-6  # a centre closer to the object's origin has no azimuth
# a camera farther from the origin is no orbit of an object (CO3D's and Zero123's are a few units
# out), and its squares overflow in the orbit's SVD: inf there raised LinAlgError or scrambled
# the order of every view of its sequence
MAX_CAMERA_DISTANCE = 1e6


def is_orthonormal(rotation: np.ndarray) -> bool:
    """R R^T = I to float32 precision (no scale, no shear, nothing near overflow)."""
    rotation = np.asarray(rotation, dtype=np.float64)
    if not np.isfinite(rotation).all() or np.abs(rotation).max() > 1.0 + ROTATION_TOLERANCE:
        return False
    return bool(np.allclose(rotation @ rotation.T, np.eye(3), atol=ROTATION_TOLERANCE))


def camera_problem(rt: np.ndarray) -> str | None:
    """Why a Zero123 [R | t] cannot place its view, or None. NaN or inf would sort the view last
    and reach the sentence JSON; a 3x3 part that is not a rotation (orthonormal, determinant +1)
    or a centre at the origin (or past `MAX_CAMERA_DISTANCE`) gives an azimuth that means nothing."""
    if rt.dtype.kind not in "fiu" or rt.shape != (3, 4):
        return "is not a 3x4 matrix of numbers"
    rt = rt.astype(np.float64)
    if not np.isfinite(rt).all():
        return "holds NaN or inf"
    rotation = rt[:, :3]
    if not is_orthonormal(rotation) or np.linalg.det(rotation) < 0:
        return "its 3x3 part is not a rotation (orthonormal, determinant +1)"
    if np.abs(rt[:, 3]).max() > MAX_CAMERA_DISTANCE:  # |C| = |t| for a rotation
        return f"its camera centre is over {MAX_CAMERA_DISTANCE:.0f} from the origin"
    if np.linalg.norm(blender_camera_centre(rt)) < MIN_CAMERA_DISTANCE:
        return "its camera centre is the origin (no azimuth)"
    return None


def pytorch3d_camera_centre(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """CO3D/PyTorch3D row-vector convention X_view = X_world @ R + T: C = -T @ R^T."""
    return -np.asarray(t, dtype=np.float64) @ np.asarray(r, dtype=np.float64).T


AZIMUTH_WRAP_DEG = 5e-4  # half the 0.001 degree the records round azimuths to


def azimuths_about_axis(centres: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Azimuth in degrees [0, 360) of each camera centre around `up`, counter-clockwise seen from above."""
    up = np.asarray(up, dtype=np.float64)
    up = up / np.linalg.norm(up)
    reference = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = reference - up * (reference @ up)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    centred = np.asarray(centres, dtype=np.float64)
    azimuths = np.degrees(np.arctan2(centred @ e2, centred @ e1)) % 360.0
    # float32 cameras put a view rendered at 0 a hair to either side: what prints as 360.000 is 0
    return np.where(azimuths >= 360.0 - AZIMUTH_WRAP_DEG, 0.0, azimuths)


AZIMUTH_TIE_DEG = 1e-3  # the records' precision: views closer in azimuth are at one azimuth


def azimuth_order(azimuths: np.ndarray, elevations: np.ndarray) -> np.ndarray:
    """View indices by azimuth; views at one azimuth (within `AZIMUTH_TIE_DEG`: float32 cameras
    put two renders at one azimuth a hair apart, either way round) from the lowest elevation up,
    so that noise and file names do not decide, then in file order."""
    order = np.argsort(azimuths, kind="stable")
    group = np.concatenate([[0], np.cumsum(np.diff(azimuths[order]) > AZIMUTH_TIE_DEG)])
    return order[np.lexsort((elevations[order], group))]


def orbit_axis(centres: np.ndarray, camera_ups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The axis a hand-held orbit turns about: the normal of the plane best fitting the camera
    centres, signed to agree with the cameras' own up vectors. Returns (axis, orbit centre)."""
    centres = np.asarray(centres, dtype=np.float64)
    middle = centres.mean(axis=0)
    # never the n x n U: 74.5 GiB for a sequence of 100k frames; the 3 x 3 V is the same, bit for
    # bit, from 3 centres up (below that the reduced V lacks the normal's row)
    _, _, vt = np.linalg.svd(centres - middle, full_matrices=len(centres) < 3)
    normal = vt[-1]
    if normal @ np.asarray(camera_ups, dtype=np.float64).mean(axis=0) < 0:
        normal = -normal
    return normal, middle


MAX_ORBIT_CONDITION = 1e6  # optical axes nearly parallel meet nowhere: measure about the centres' mean


def orbit_target(centres: np.ndarray, view_axes: np.ndarray) -> np.ndarray | None:
    """The point the cameras' optical axes pass closest to (least squares): the object a
    hand-held orbit circles. The mean of the camera centres is not it: an orbit that lingers on
    one side pulls the mean there, and azimuths about it were off by ten degrees. None when the
    axes meet nowhere (nearly parallel) or are not directions."""
    lengths = np.linalg.norm(view_axes, axis=1, keepdims=True)
    if not (lengths > 0).all():
        return None
    d = view_axes / lengths
    projectors = np.eye(3) - d[:, :, None] * d[:, None, :]  # each removes its axis's direction
    system, rhs = projectors.sum(axis=0), np.einsum("nij,nj->i", projectors, centres)
    if not np.isfinite(system).all() or np.linalg.cond(system) > MAX_ORBIT_CONDITION:
        return None
    return np.linalg.solve(system, rhs)


def arc_order(azimuths: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """View indices along a hand-held orbit, from the view after its widest azimuth gap; each
    one's turn from that first view (0 up to under 360); and the widest gap. A walk need not
    close, and the world's azimuth origin (COLMAP's) is an accident: sorted from it, a partial
    orbit's sentence jumped back across its gap in the middle."""
    order = np.argsort(azimuths, kind="stable")
    ordered = azimuths[order]
    gaps = np.diff(np.append(ordered, ordered[0] + 360.0))  # gap i: from view i to view i + 1
    order = np.roll(order, -((int(np.argmax(gaps)) + 1) % len(order)))
    return order, (azimuths[order] - azimuths[order[0]]) % 360.0, float(gaps.max())


def pick_along_arc(turned: np.ndarray, widest_gap: float, wanted: int) -> list[int]:
    """`wanted` indices of views sorted by their turn, each the nearest to azimuths evenly
    spaced: 360 / wanted apart round a closed orbit (no gap wider than that step), else from one
    end of the arc to the other. Picking evenly by index put most views where a walk lingered."""
    count = len(turned)
    if wanted >= count or wanted <= 1:
        return list(range(min(wanted, count)))
    step = 360.0 / wanted if widest_gap <= 360.0 / wanted else float(turned[-1]) / (wanted - 1)
    picked: list[int] = []
    for k in range(wanted):
        target = k * step
        i = int(np.searchsorted(turned, target))
        if i == count or (i > 0 and target - turned[i - 1] <= turned[i] - target):
            i -= 1
        low = picked[-1] + 1 if picked else 0  # distinct views, in order, leaving room for the rest
        picked.append(min(max(i, low), count - wanted + k))
    return picked


MAX_CAMERA_BYTES = 1 << 16  # a 3x4 camera matrix in .npy is 176 bytes
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def npy_header_problem(data: bytes) -> str | None:
    """What a camera's .npy header declares that is no 3x4 matrix of numbers, or None. Judged
    before numpy reads the data: np.load allocates the whole declared array first, so a 200-byte
    file whose header says (20000, 20000) float64 cost 3.2 GB before it was found short."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = _NPY_HEADER_READERS.get(version)
        if read_header is None:  # 3.0 is for utf-8 field names of structured arrays, never a camera
            return f"is a version {version[0]}.{version[1]} .npy file (a camera is 1.0 or 2.0)"
        shape, _, dtype = read_header(stream)
    except ValueError:
        return npy_cut_in_header(data) or "is not a .npy file"
    if dtype.hasobject or dtype.kind not in "fiu":
        return f"declares dtype {dtype}, not numbers"
    if shape != (3, 4):
        return f"declares shape {shape}, not (3, 4)"
    wanted = stream.tell() + 12 * dtype.itemsize
    if len(data) < wanted:  # numpy's own word was a bare ValueError
        return f"is cut short: {len(data)} of its {wanted} bytes"
    return None


def npy_cut_in_header(data: bytes) -> str | None:
    """Why a .npy whose header numpy cannot read is cut short within it, or None (not cut)."""
    magic = b"\x93NUMPY"
    if len(data) < len(magic) + 2:
        return f"is cut short: {len(data)} bytes, not even its header" if magic.startswith(data[:len(magic)]) else None
    if not data.startswith(magic) or data[6:8] not in (b"\x01\x00", b"\x02\x00"):
        return None
    size = 2 if data[6] == 1 else 4
    if len(data) < 8 + size:
        return f"is cut short in its header: {len(data)} bytes"
    header_end = 8 + size + int.from_bytes(data[8:8 + size], "little")
    return f"is cut short in its header: {len(data)} of its {header_end} header bytes" if len(data) < header_end else None


def read_camera(data: bytes) -> tuple[np.ndarray | None, str | None]:
    """A Zero123 camera from its .npy bytes, or why there is none (never runs a pickle)."""
    problem = npy_header_problem(data)
    if problem:
        return None, problem
    try:
        rt = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # numpy's messages quote the file's first bytes: name the problem, not the bytes
        return None, type(exc).__name__
    return rt, camera_problem(rt)


# -- Objaverse (Zero123 layout) ----------------------------------------------------------------
ZERO123_VIEWS = 12  # Zero123's views_release: 000.png..011.png and their .npy cameras per object
PEEK_OBJECTS = 3  # objects whose views are counted at planning: a layout's count, not one broken object's


VIEW_SUFFIXES = (".png", ".npy")  # in any case: `000.PNG` from a Windows or zip round trip is a render too


def view_suffix(uri: str) -> str | None:
    """`.png` or `.npy` when a file of an object folder is a render or a camera (its extension
    in any case), else None."""
    return next((suffix for suffix in VIEW_SUFFIXES if uri.lower().endswith(suffix)), None)


def paired_views(files: list[str]) -> int:
    """Renders with their camera (`NNN.png` beside `NNN.npy`, in any case) among a folder's files."""
    stems = {suffix: {nfc(fsio.basename(f)[:-4]) for f in files
                      if view_suffix(f) == suffix and not set_aside(fsio.basename(f))} for suffix in VIEW_SUFFIXES}
    return len(stems[".png"] & stems[".npy"])


def _view_twins(files: list[str], suffix: str) -> dict[str, list[str]]:
    """An object's renders (or cameras) by stem in NFC, each stem's files in `layout_twin_order`
    (NFC, then `.png` as Zero123 spells it): the first that can be read is read (`paths.twin_to_read`),
    each other (a stray `000.PNG` beside `000.png`, NFD beside NFC) is a `duplicate_key` reject, or
    its own where it cannot be read."""
    stems: dict[str, list[str]] = {}
    for uri in files:
        if view_suffix(uri) == suffix:
            stems.setdefault(nfc(fsio.basename(uri)[:-4]), []).append(uri)
    return {stem: sorted(uris, key=lambda uri: layout_twin_order(fsio.basename(uri), (suffix,)))
            for stem, uris in stems.items()}


def _twin_how(name: str, kept: str) -> str:
    """How a twin's name differs from the one read, for `twin_detail`."""
    same = nfc(fsio.basename(name)) == nfc(fsio.basename(kept))
    return "in another Unicode form" if same else "with its extension in another case"


def _folder_twins(root: str) -> dict[str, list[str]]:
    """Object folders by their name in NFC, in `twin_order`, where one of them is named in another
    form (`café` in NFD): taken from the listing alone, since a Mac's volume answers `isdir` of
    the NFC name for a lone NFD folder, which then was its own `duplicate_key` and never read."""
    names: dict[str, list[str]] = {}
    for folder in fsio.list_dirs(root, links=True):
        names.setdefault(nfc(fsio.basename(folder)), []).append(folder)
    return {name: sorted(folders, key=lambda f: twin_order(fsio.basename(f))) for name, folders in names.items()
            if any(unicode_form(fsio.basename(f)) != "NFC" for f in folders)}


@fsio.derived_input
def folder_twins(root: str, name: str) -> list[str]:
    """The object folders under `root` whose name is `name` in NFC, in `twin_order`, where one of
    them is named in another form (none otherwise): recorded as the unit's input for that name
    alone. The root's listing taken once per run and recorded by the first unit that asked left
    every later NFD unit without its twins (stale when an NFC twin appeared), and made the first
    render again when any unrelated object was added."""
    twins = fsio.once_per_run(("sources.multiview.folder_twins", root), lambda: _folder_twins(root))
    return twins.get(name, [])


@dataclass(frozen=True)
class ObjaverseSource:
    name: str
    path: str
    views: int = 24
    follow_links: bool = False  # read object folders and views that are links leading out of `path`

    def units(self) -> list[str]:
        objects = fsio.list_dirs(self.path, links=True)  # `__MACOSX/`, `@eaDir/` too: one reject each
        if not any(not set_aside(fsio.basename(o)) for o in objects):
            raise FileNotFoundError(f"no object folders (<uid>/NNN.png + NNN.npy) under {self.path}")
        self._check_views(objects)
        return objects

    def _twin_read(self, folder: str) -> str | None:
        """The object folder read in place of `folder` when their names are one in NFC (`café` in NFD
        beside `café` in NFC, a Mac's copy): the first in `twin_order` that can be read (as
        `paths.twin_to_read` takes a file); None when `folder` is it, or none can be. A name in NFC
        is first by that order, so only other names look for their twins; one that cannot be read
        is its own reject, and took the object with it (an NFC link leading out made the real NFD
        folder its `duplicate_key`)."""
        uid = fsio.basename(folder)
        if unicode_form(uid) == "NFC":
            return None
        readable = (f for f in folder_twins(self.path, nfc(uid)) or [folder] if not set_aside_problem(self.path, f)
                    and not path_problem(self.path, f, self.follow_links))
        first = next(readable, folder)
        return None if first == folder else first

    def _check_views(self, objects: list[str]) -> None:
        """Refuse `views` when the first objects all hold fewer: Zero123's renders have 12 views
        each, and under the default of 24 (the LVM's own renders) every object was a
        `too_few_views` reject, the build making nothing of the whole dataset."""
        readable = (o for o in sorted(objects) if not set_aside_problem(self.path, o)
                    and not path_problem(self.path, o, self.follow_links))
        first = list(itertools.islice(readable, PEEK_OBJECTS))  # not every object's checks: 800k in Zero123's
        counts = [paired_views(fsio.list_files(o, links=True)) for o in first]
        if counts and 2 <= max(counts) < self.views:
            raise ConfiguredValueMismatch("views", (
                f"the first {len(counts)} objects under {self.path} hold {', '.join(map(str, counts))} views "
                f"with cameras, fewer than views: {self.views} (Zero123's renders hold {ZERO123_VIEWS}); set views: "
                f"{max(counts)} or fewer, else every object is a too_few_views reject"))

    def read(self, folder: str) -> Iterator[SourceItem]:
        uid = fsio.basename(folder)
        key = safe_key(self.name, uid)
        at = relative_input(folder, self.path) + "/"
        outside = set_aside_problem(self.path, folder) or path_problem(self.path, folder, self.follow_links)
        if outside:  # not listed: the linked (or `__MACOSX/`) object folder is one rejected item
            yield Reject(key, self.name, key, "read", outside.reason, outside.detail, input=at)
            return
        kept = self._twin_read(folder)
        if kept is not None:  # `café` in NFD beside its NFC twin: one key, two sentences met only by the writer
            yield Reject(f"{key}-{unicode_form(uid).lower()}", self.name, key, "read", "duplicate_key",
                         f"{nfc(uid)}/ ({unicode_form(uid)}) is the name of {nfc(fsio.basename(kept))}/ "
                         f"({unicode_form(fsio.basename(kept))}) in another Unicode form: that folder is read", input=at)
            return
        files = []
        for uri in fsio.list_files(folder, links=True):
            if view_suffix(uri) is None:  # a LICENSE.txt, a thumbnail.jpg: no input of this layout, never read
                continue
            aside = set_aside_problem(self.path, uri)
            if aside:  # a Mac's `._000.npy`: never a view's camera, never a `bad_camera` for the object
                reject_key = safe_key(self.name, uid, fsio.basename(uri))
                yield Reject(reject_key, self.name, key, "read", aside.reason, aside.detail,
                             input=relative_input(uri, self.path))
            else:
                files.append(uri)
        pngs, npys = {}, {}
        left: list[tuple[str, str]] = []  # (a twin not read, the one read)
        for suffix, found in ((".png", pngs), (".npy", npys)):
            for stem, twins in _view_twins(files, suffix).items():
                # `000.PNG` beside `000.png`: `000.png` is read, unless it cannot be and `000.PNG` can
                kept = (twin_to_read(self.path, twins, self.follow_links) if len(twins) > 1 else None) or twins[0]
                found[stem] = kept
                left += [(twin, kept) for twin in twins if twin != kept]
        read_files = [*pngs.values(), *npys.values()]
        outside = next(filter(None, (path_problem(self.path, f, self.follow_links) for f in read_files)), None)
        if outside:
            yield Reject(key, self.name, key, "read", outside.reason, outside.detail, input=at)
            return
        for twin, kept in left:  # one that cannot be read keeps its own reason, as a lone one would
            problem = twin_problem(self.path, twin, self.follow_links) or PathProblem(
                "duplicate_key", twin_detail(fsio.basename(twin), fsio.basename(kept), _twin_how(twin, kept)))
            yield Reject(safe_key(self.name, uid, fsio.basename(twin)), self.name, key, "read", problem.reason,
                         problem.detail, input=relative_input(twin, self.path))
        yield from self._unpaired(key, pngs, npys, at)
        views = []
        bad: list[str] = []
        for stem in sorted(pngs):
            if stem not in npys:
                continue
            try:
                rt, problem = read_camera(read_input_bytes(npys[stem], MAX_CAMERA_BYTES))
            except MachineError:  # too many open files: the machine's, never the camera's
                raise
            except Exception as exc:
                problem = type(exc).__name__
            if problem or rt is None:  # as a missing camera: this view is lost, the others go on
                bad.append(stem)
                yield Reject(f"{safe_key(self.name, uid, stem)}-camera", self.name, key, "read", "bad_camera",
                             f"{fsio.basename(npys[stem])}: {problem}", input=relative_input(npys[stem], self.path))
                continue
            centre = blender_camera_centre(rt)
            views.append((stem, pngs[stem], centre))
        missing = sorted(set(pngs) - set(npys))
        if len(views) < self.views:
            detail = f"{len(views)} views with cameras < {self.views}"
            if missing:
                detail += f"; no camera for {', '.join(missing[:5])}"
            if bad:
                detail += f"; a bad camera for {', '.join(bad[:5])}"
            yield Reject(key, self.name, key, "read", "too_few_views", detail, input=at)
            return
        centres = np.stack([v[2] for v in views])
        azimuths = azimuths_about_axis(centres, np.array([0.0, 0.0, 1.0]))  # Blender world: +Z up
        radius = np.linalg.norm(centres, axis=1)
        elevation = np.degrees(np.arcsin(np.clip(centres[:, 2] / radius, -1, 1)))
        order = azimuth_order(azimuths, elevation)
        # evenly in azimuth (as CO3D's are), not by index: renders bunched on one side of the object
        # gave a sentence of that side and a 132-degree jump; regular renders pick as before. Picked
        # along the arc from the end of its widest gap (where 0 falls is the world's accident: a
        # bunch across it gave a 64-degree gap), shown from azimuth 0 as every object's sentence is
        ordered = azimuths[order]
        gaps = np.diff(np.append(ordered, ordered[0] + 360.0))
        start = (int(np.argmax(gaps)) + 1) % len(order)
        rolled = np.roll(np.arange(len(order)), -start)  # positions in `order`, from after the widest gap
        turned = (ordered[rolled] - ordered[rolled[0]]) % 360.0
        picked = sorted(int(rolled[i]) for i in pick_along_arc(turned, float(gaps.max()), self.views))
        chosen = [order[i] for i in picked]
        yield MultiViewRecord(
            key=key, source=self.name, group=key,
            view_uris=tuple(views[i][1] for i in chosen),
            azimuths_deg=tuple(round(float(azimuths[i]), 3) for i in chosen),
            lineage={"uid": uid, "views_available": len(views),
                     "elevation_deg": round(float(np.median(elevation)), 3),
                     "radius": round(float(np.median(radius)), 4),
                     "files": [views[i][0] for i in chosen]},
        )

    def _unpaired(self, key: str, pngs: dict[str, str], npys: dict[str, str], at: str) -> Iterator[Reject]:
        """A render without its camera and a camera without its render, each counted (they used
        to vanish whenever enough views were left). Other files are no input of this layout."""
        renders, cameras = sorted(set(pngs) - set(npys)), sorted(set(npys) - set(pngs))
        if renders:
            yield Reject(f"{key}-no_camera", self.name, key, "read", "missing_camera",
                         f"{len(renders)} renders have no .npy: {_some([fsio.basename(pngs[r]) for r in renders], '')}",
                         input=relative_input(pngs[renders[0]], self.path) if len(renders) == 1 else at)
        if cameras:
            yield Reject(f"{key}-no_view", self.name, key, "read", "missing_view",
                         f"{len(cameras)} cameras have no .png: {_some([fsio.basename(npys[c]) for c in cameras], '')}",
                         input=relative_input(npys[cameras[0]], self.path) if len(cameras) == 1 else at)


def _some(stems: list[str], suffix: str, shown: int = 5) -> str:
    """The first few file names of a list, for a reject's detail."""
    return ", ".join(stem + suffix for stem in stems[:shown]) + (", ..." if len(stems) > shown else "")


# -- CO3D v2 ---------------------------------------------------------------------------------
SET_LISTS_DIR = "set_lists"  # <category>/set_lists/set_lists_<subset>.json: {"train", "val", "test"}
HELD_OUT_SUBSETS = ("val", "test")  # a sequence CO3D evaluates on goes to our val split, never to train


def evaluates_held_out_sequences(list_name: str) -> bool:
    """Whether a set list's val/test parts are sequences held out of training: CO3Dv2's
    fewview_dev/test and manyview_dev/test lists. A `*_train` list (fewview_train, in releases
    and tools that have one) evaluates on unseen frames of the training sequences themselves:
    read, it would send nearly every sequence to val."""
    return not list_name.removesuffix(".json").endswith("train")
HELD_OUT_SPLIT = "val"
# items of one annotation file (frames, or set-list entries): CO3D's largest categories hold ~100k
# frames, and a 2 KB .jgz of `[0,0,...]` expands to a million items (8.6 s and 362 MB of rejects)
MAX_CO3D_ITEMS = 1_000_000
MAX_BAD_FRAMES = 100_000  # rejects of one category's frames held before the file is refused whole


def set_list_sequence(entry: Any) -> str | None:
    """The sequence of a set-list entry, [sequence_name, frame_number, image_path], or None."""
    if isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) and entry[0]:
        return entry[0]
    return None


def read_jgz_frames(uri: str) -> Iterator[Any]:
    """The frames of a gzipped JSON list, one at a time, its expansion capped (a small .jgz can
    inflate to gigabytes)."""
    return iter_json_list(uri, gzipped=True)


@dataclass(frozen=True, slots=True)
class Co3dFrame:
    """What this reader keeps of a frame annotation: about 0.7 KB, where its parsed JSON (focal
    length, principal point, sizes, meta...) took 5.5 KB, over 100k frames of a category."""

    number: int
    image_uri: str
    depth_uri: str | None
    mask_uri: str | None
    depth_scale: float
    camera: np.ndarray  # 3x4 [R | T], PyTorch3D's row-vector convention
    depth_mask_uri: str | None  # where the depth is trusted (CO3D's loader keeps depth only there)
    refused: tuple[tuple[str, str, str], ...] = ()  # (task, reason, detail) of a pair whose path leads out


def frame_problem(frame: Any) -> str | None:
    """What is wrong with one CO3D frame annotation, or None: the fields this reader uses."""
    if not isinstance(frame, dict):
        return "is not an object"
    if not isinstance(frame.get("sequence_name"), str) or not frame["sequence_name"]:
        return "has no sequence_name"
    if as_int(frame.get("frame_number")) is None:
        return "frame_number is not an integer"
    image = frame.get("image")
    if not isinstance(image, dict) or not isinstance(image.get("path"), str) or not image["path"]:
        return "has no image.path"  # an empty one named no file, and the category failed on it
    viewpoint = frame.get("viewpoint")
    if not isinstance(viewpoint, dict):
        return "has no viewpoint"
    rotation, translation = viewpoint.get("R"), viewpoint.get("T")
    if not (isinstance(rotation, list) and len(rotation) == 3 and all(numbers(row, length=3) for row in rotation)):
        return "viewpoint.R is not a 3x3 matrix"
    if not numbers(translation, length=3):
        return "viewpoint.T is not 3 numbers"
    if not is_orthonormal(np.array(rotation, dtype=np.float64)):  # handedness is not asked: only that it turns
        return "viewpoint.R is not orthonormal (a rotation)"
    if max(abs(value) for value in translation) > MAX_CAMERA_DISTANCE:  # |C| = |T| for a rotation
        return f"viewpoint.T is over {MAX_CAMERA_DISTANCE:.0f} from the origin"
    for field in ("depth", "mask"):
        value = frame.get(field)
        if value is not None and not (isinstance(value, dict) and isinstance(value.get("path", ""), (str, type(None)))):
            return f"{field} is not an object with a path"
    if not isinstance((frame.get("depth") or {}).get("mask_path", ""), (str, type(None))):
        return "depth.mask_path is not a path"
    scale = (frame.get("depth") or {}).get("scale_adjustment")
    if scale is not None and not is_number(scale):
        return "depth.scale_adjustment is not a number"
    return None


def _check_budget(uri: str, index: int, bad: int) -> None:
    """Refuse a file past `MAX_CO3D_ITEMS` items or `MAX_BAD_FRAMES` bad frames: a small gzip bomb of
    tiny items held a reject for each (time and memory without bound, up to the expansion cap)."""
    if index >= MAX_CO3D_ITEMS:
        raise AnnotationFileError(uri, f"holds over {MAX_CO3D_ITEMS} items (the limit of one CO3D file)")
    if bad >= MAX_BAD_FRAMES:
        raise AnnotationFileError(uri, f"holds over {MAX_BAD_FRAMES} frames that fail their checks "
                                       "(the limit of one CO3D file)")


FRAME_ANNOTATIONS = "frame_annotations.jgz"
SEQUENCE_ANNOTATIONS = "sequence_annotations.jgz"


def frame_annotations(category_dir: str) -> str | None:
    """A category's frame annotations, its name in any case (`frame_annotations.JGZ`, a Windows
    or zip round trip), or None."""
    exact = fsio.join(category_dir, FRAME_ANNOTATIONS)
    if fsio.exists(exact):
        return exact
    try:
        return next((f for f in fsio.list_files(category_dir, links=True)
                     if fsio.basename(f).lower() == FRAME_ANNOTATIONS), None)
    except OSError:  # a folder that cannot be listed holds none that can be read
        return None


def is_category(folder: str) -> bool:
    """Whether a folder at a CO3D root is a category: it holds frame or sequence annotations (any
    case) or a sequence folder (`<sequence>/images/`). A category without its frame annotations
    vanished unsaid; a folder that is none of these (notes, an OS's leftovers) is no input."""
    if set_aside(fsio.basename(folder)):
        return False
    if frame_annotations(folder):
        return True
    try:
        if any(fsio.basename(f).lower() == SEQUENCE_ANNOTATIONS for f in fsio.list_files(folder, links=True)):
            return True
        return any(fsio.exists(fsio.join(d, "images")) for d in fsio.list_dirs(folder, links=True))
    except OSError:
        return False


@dataclass(frozen=True)
class Co3dSource:
    name: str
    path: str
    views: int = 24
    categories: tuple[str, ...] = ()
    pair_tasks: tuple[str, ...] = ()  # also emit (frame, depth) / (frame, mask) pairs
    follow_links: bool = False  # read files that are links leading out of `path`

    def units(self) -> list[str]:
        categories = [d for d in fsio.list_dirs(self.path, links=True) if is_category(d)]
        annotated = [d for d in categories if frame_annotations(d)]
        if not annotated:
            raise FileNotFoundError(f"no <category>/{FRAME_ANNOTATIONS} under {self.path}")
        self._check_categories(categories, annotated)
        return [d for d in categories if not self.categories or fsio.basename(d) in self.categories]

    def _check_categories(self, categories: list[str], annotated: list[str]) -> None:
        """Refuse `categories` naming one that is not there, or is there without its frame
        annotations: the config's fault, and a build of it makes no sentence. A category folder
        without them (`banana/` of sequence folders alone) passed, where it was refused before."""
        unknown = sorted(set(self.categories) - {fsio.basename(d) for d in annotated})
        if not unknown:
            return
        folders = {fsio.basename(d) for d in categories}
        said = "; ".join(f"{name}/ holds no {FRAME_ANNOTATIONS}" if name in folders else f"no {name}/{FRAME_ANNOTATIONS}"
                         for name in unknown)
        raise ConfiguredPathMissing("categories", f"{said} under {self.path} (categories there: "
                                    f"{names_found(annotated)}); name those, or leave categories out")

    def read(self, category_dir: str) -> Iterator[SourceItem]:
        category = fsio.basename(category_dir)
        annotations = frame_annotations(category_dir)
        if annotations is None:  # a zip extracted in part: its sequences have no frames, no cameras
            key = safe_key(self.name, category)
            yield Reject(key, self.name, key, "read", "missing_annotation",
                         f"{category}/ has no {FRAME_ANNOTATIONS}: its sequences cannot be placed, none is read",
                         input=relative_input(category_dir, self.path) + "/")
            return
        # the file too: a link leading out was read, and a fifo blocked the build for good
        outside = path_problem(self.path, category_dir, self.follow_links) or \
            path_problem(self.path, annotations, self.follow_links)
        at = relative_input(annotations, self.path)
        if outside:
            key = safe_key(self.name, category)
            yield Reject(key, self.name, key, "read", outside.reason, outside.detail, input=at)
            return
        try:  # the whole file is read before anything is yielded: a bad file is one reject, as it always was
            by_sequence, rejects = self._frames(category, annotations)
        except AnnotationFileError as exc:
            key = safe_key(self.name, category)
            yield Reject(key, self.name, key, "read", BAD_ANNOTATION_FILE, exc.detail(self.path), input=at)
            return
        yield from rejects
        held_out, list_rejects = self._held_out(category, category_dir, frozenset(by_sequence))
        yield from list_rejects
        for sequence in sorted(by_sequence):
            split = HELD_OUT_SPLIT if sequence in held_out else None
            yield from self._sequence(category, sequence, by_sequence[sequence], split, fsio.basename(annotations))

    def _held_out(self, category: str, category_dir: str,
                  known: frozenset[str]) -> tuple[frozenset[str], list[Reject]]:
        """The sequences CO3D evaluates on: those any `set_lists/*.json` holds under val or test.
        A few-view list holds whole sequences there; a many-view list splits one sequence's
        frames, and that sequence is held out whole. Without these lists the split was a hash of
        the sequence, and 95% of CO3D's test sequences were trained on. A list that cannot be
        read is one reject; the sequences it named before the problem are still held out. Only
        the `known` sequences (those with frames) are kept: a list of a million made-up names
        held every one."""
        folder = fsio.join(category_dir, SET_LISTS_DIR)
        if not fsio.exists(folder):
            return frozenset(), []
        held: set[str] = set()
        rejects: list[Reject] = []
        for uri in fsio.list_files(folder, links=True):
            name = fsio.basename(uri)
            if not name.endswith(".json") or set_aside(name) or not evaluates_held_out_sequences(name):
                continue
            key = safe_key(self.name, category, SET_LISTS_DIR, name)
            at = relative_input(uri, self.path)
            problem = path_problem(self.path, uri, self.follow_links)
            if problem:
                rejects.append(Reject(key, self.name, key, "read", problem.reason, problem.detail, input=at))
                continue
            bad = 0
            try:
                for index, (subset, entry) in enumerate(iter_json_object_lists(uri)):
                    _check_budget(uri, index, 0)
                    sequence = set_list_sequence(entry)
                    bad += sequence is None
                    if sequence in known and subset in HELD_OUT_SUBSETS:
                        held.add(sequence)
            except AnnotationFileError as exc:
                rejects.append(Reject(key, self.name, key, "read", BAD_ANNOTATION_FILE, exc.detail(self.path), input=at))
                continue
            if bad:
                rejects.append(Reject(key, self.name, key, "read", BAD_ANNOTATION,
                                      f"{SET_LISTS_DIR}/{name}: {bad} entries are not [sequence_name, frame_number, image_path]",
                                      input=at))
        return frozenset(held), rejects

    def _frames(self, category: str, uri: str) -> tuple[dict[str, list[Co3dFrame]], list[Reject]]:
        """The usable frames of a category by sequence, and the rejects of the others. The file is
        parsed a frame at a time and each frame kept as a `Co3dFrame`: a real category (100k frames,
        104 MB of JSON) parsed whole held 555 MB, its dicts five times the text."""
        by_sequence: dict[str, list[Co3dFrame]] = {}
        rejects: list[Reject] = []
        first_index: dict[str, dict[int, int]] = {}  # sequence -> frame_number -> its first frame
        first_image: dict[str, dict[str, int]] = {}  # sequence -> image file -> the first frame naming it
        name = fsio.basename(uri)  # `frame_annotations.JGZ` as the disk spells it
        for index, frame in enumerate(read_jgz_frames(uri)):
            _check_budget(uri, index, len(rejects))
            problem = frame_problem(frame)
            if problem:
                rejects.append(self._frame_reject(category, index, BAD_ANNOTATION, f" {problem}", name))
                continue
            try:  # names from the annotation file must stay inside the dataset
                kept = self._keep(frame, f"{name}[{index}]")
            except OutsideRoot as exc:
                rejects.append(self._frame_reject(category, index, exc.reason, f": {exc.detail}", name))
                continue
            seen = first_index.setdefault(frame["sequence_name"], {})
            if kept.number in seen:  # its pairs' keys would clash with the first frame's
                rejects.append(self._frame_reject(category, index, "duplicate_key", (
                    f": frame_number {kept.number} of its sequence is already {name}[{seen[kept.number]}]"), name))
                continue
            pictures = first_image.setdefault(frame["sequence_name"], {})
            if kept.image_uri in pictures:  # one picture twice in the sentence, under two frame numbers
                rejects.append(self._frame_reject(category, index, "duplicate_key", (
                    f": image.path {frame['image']['path']} is already {name}[{pictures[kept.image_uri]}]'s"), name))
                continue
            seen[kept.number] = index
            pictures[kept.image_uri] = index
            by_sequence.setdefault(frame["sequence_name"], []).append(kept)
        return by_sequence, rejects

    def _frame_reject(self, category: str, index: int, reason: str, detail: str, name: str) -> Reject:
        key = safe_key(self.name, category, "frame", str(index))
        return Reject(key, self.name, key, "read", reason, f"{name}[{index}]{detail}",
                      input=f"{category}/{name}[{index}]")

    def _keep(self, frame: dict, where: str) -> Co3dFrame:
        """What this reader uses of a frame that passed `frame_problem`, its image path checked (an
        `OutsideRoot` refuses the frame) and the paths a configured pair task reads: one leading
        out refuses that pair alone. A depth path no task reads refused the frame, from the
        multi-view sentence too."""
        depth, mask = frame.get("depth") or {}, frame.get("mask") or {}
        viewpoint = frame["viewpoint"]
        camera = np.concatenate([np.array(viewpoint["R"], np.float64), np.array([viewpoint["T"]], np.float64).T], 1)
        image = self._inside(frame["image"]["path"])
        read: dict[str, str | None] = {}
        refused: list[tuple[str, str, str]] = []
        for task in self.pair_tasks:
            fields = {"depth.path": depth.get("path"), "depth.mask_path": depth.get("mask_path")} if task == "depth" \
                else {"mask.path": mask.get("path")}
            for name, value in fields.items():
                try:
                    read[name] = self._inside(value)
                except OutsideRoot as exc:
                    refused.append((task, exc.reason, f"{where} {name}: {exc.detail}"))
                    break
        return Co3dFrame(as_int(frame["frame_number"]), image, read.get("depth.path"), read.get("mask.path"),
                         float(depth.get("scale_adjustment") or 1.0), camera, read.get("depth.mask_path"),
                         tuple(refused))

    def _inside(self, name: str | None) -> str | None:
        if not name:
            return None
        uri = join_inside(self.path, name)
        check_inside(self.path, uri, self.follow_links)
        return uri

    def _sequence(self, category: str, sequence: str, frames: Sequence[Co3dFrame], split: str | None,
                  spelt: str = FRAME_ANNOTATIONS) -> Iterator[SourceItem]:
        """The sequence's sentence and pairs; its rejects name the frame annotations as `spelt`
        on disk (`frame_annotations.JGZ`: they named a `.jgz` that is not there)."""
        key = safe_key(self.name, category, sequence)
        try:  # the sequence name comes from the annotation file: its folder must stay inside the root
            images_dir = join_inside(self.path, f"{category}/{sequence}/images")
        except OutsideRoot as exc:
            yield Reject(key, self.name, key, "read", exc.reason, f"sequence_name: {exc.detail}", split_hint=split,
                         input=f"{category}/{spelt} sequence {sequence}")
            return
        present = {fsio.basename(f) for f in fsio.list_files(images_dir, links=True)} if fsio.exists(images_dir) else set()
        usable = [f for f in frames if fsio.basename(f.image_uri) in present]
        lost = [fsio.basename(f.image_uri) for f in frames if fsio.basename(f.image_uri) not in present]
        if lost:  # named, so that a user can tell a half-extracted download from a stray annotation
            yield Reject(f"{key}-missing", self.name, key, "read", "missing_frames",
                         f"{len(lost)} annotated frames have no image file: {_some(sorted(lost), '')}", split_hint=split,
                         input=relative_input(images_dir, self.path) + "/")
        if len(usable) < self.views:  # no sentence, but each frame's pairs are whole
            yield Reject(key, self.name, key, "read", "too_few_views", f"{len(usable)} frames < {self.views}",
                         split_hint=split, input=relative_input(images_dir, self.path) + "/")
        else:
            yield self._orbit(category, sequence, key, usable, split, spelt)
        for task in self.pair_tasks:
            for frame in usable:
                yield from self._pair(task, category, sequence, key, frame, split)

    def _orbit(self, category: str, sequence: str, key: str, usable: Sequence[Co3dFrame],
               split: str | None, spelt: str = FRAME_ANNOTATIONS) -> MultiViewRecord | Reject:
        """The sequence's multi-view sentence: `views` frames round its orbit; a `bad_camera`
        reject when every camera stands on the orbit's axis (all at one point: no azimuth, and
        the views went out in file order as an orbit of azimuth 0)."""
        rotations = np.stack([f.camera[:, :3] for f in usable])
        translations = np.stack([f.camera[:, 3] for f in usable])
        centres = np.stack([pytorch3d_camera_centre(r, t) for r, t in zip(rotations, translations)])
        camera_ups = rotations[:, :, 1]  # PyTorch3D view +Y (up) expressed in world coordinates
        axis, middle = orbit_axis(centres, camera_ups)
        target = orbit_target(centres, rotations[:, :, 2])  # view +Z: where the camera looks
        around = centres - (middle if target is None else target)
        if np.linalg.norm(around - np.outer(around @ axis, axis), axis=1).max() < MIN_CAMERA_DISTANCE:
            return Reject(key, self.name, key, "read", "bad_camera", f"its {len(usable)} cameras stand on one line "
                          "through the object (all at one point): no azimuth orders them", split_hint=split,
                          input=f"{category}/{spelt} sequence {sequence}")
        azimuths = azimuths_about_axis(around, axis)
        # on the records' grid: an SVD's last bits differ between BLAS builds, and at an exact tie
        # (views evenly spaced, a paused camera) they chose the first view and the picks
        azimuths = np.round(azimuths / AZIMUTH_TIE_DEG) * AZIMUTH_TIE_DEG
        order, turned, widest_gap = arc_order(azimuths)
        picked = pick_along_arc(turned, widest_gap, self.views)
        chosen = [order[i] for i in picked]
        return MultiViewRecord(
            key=key, source=self.name, group=key,
            view_uris=tuple(usable[i].image_uri for i in chosen),
            azimuths_deg=tuple(round(float(turned[i]), 3) for i in picked),  # from the first view: no world origin
            lineage={"category": category, "sequence": sequence, "frames_available": len(usable),
                     "frame_numbers": [usable[i].number for i in chosen]},
            split_hint=split,
        )

    def _pair(self, task: str, category: str, sequence: str, group: str, frame: Co3dFrame,
              split: str | None) -> Iterator[SourceItem]:
        pair_key = f"{group}-f{frame.number:06d}-{task}"
        refused = next((r for r in frame.refused if r[0] == task), None)
        if refused:  # its depth (mask) path leads out: this pair alone, the frame's other uses go on
            yield Reject(pair_key, self.name, group, "read", refused[1], refused[2], split_hint=split,
                         input=relative_input(frame.image_uri, self.path))
            return
        if task == "depth":
            if not frame.depth_uri:
                yield Reject(pair_key, self.name, group, "read", "missing_annotation", "no depth path", split_hint=split,
                             input=relative_input(frame.image_uri, self.path))
                return
            annotation = {"depth_uri": frame.depth_uri, "format": "co3d", "scale": frame.depth_scale}
            if frame.depth_mask_uri:  # CO3D's loader: depth is kept only where its depth mask is set
                annotation["valid_mask_uri"] = frame.depth_mask_uri
        else:
            if not frame.mask_uri:
                yield Reject(pair_key, self.name, group, "read", "missing_annotation", "no mask path", split_hint=split,
                             input=relative_input(frame.image_uri, self.path))
                return
            annotation = {"mask_uri": frame.mask_uri, "class_id": 1}
        yield PairRecord(key=pair_key, source=self.name, group=group, task=task, image_uri=frame.image_uri,
                         annotation=annotation, split_hint=split,
                         lineage={"category": category, "sequence": sequence, "frame": frame.number})
