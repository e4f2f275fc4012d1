"""Multi-annotation tuples in Taskonomy's layout, or Omnidata's download of it, matched by file stem.

Taskonomy: `<building>/<domain folder>/<stem>_domain_<domain id>.png`. Omnidata's downloader
(`omnitools.download`) moves each `<building>_<domain>.tar`'s folder to
`<domain folder>/<component>/<building>/` (component: taskonomy, replica, hypersim, ...): the same
files, domain first. The tree says which: the download has `rgb/<component>/<building>/`, while a
building-first building named `rgb` holds files in `rgb/rgb/`, never a folder below it. The domain
id is the folder's name, but semantic labels are `segment_semantic/<stem>_domain_segmentsemantic.png`
(Omnidata's task_configs.py). A tuple is the image and its normals, edges, depth and segmentation;
a stem missing any of them is rejected with the missing task.
A building is a unit in both layouts. Taskonomy's buildings key as `<source>-<building>-<stem>` in
both (a user who moves the files keeps the output); another component's as
`<source>-<component>-<building>-<stem>`, so a name two components share is two buildings, and no
key depends on which other components were downloaded.
What operating systems and tools leave (a Mac's `._x.png`, `__MACOSX/`, `@eaDir/`, `.git/`) is one
`os_metadata` or `hidden_file` reject each (`sources.paths.set_aside`), never a tuple or a building.
A folder that is a link to itself or to a folder above it (`rgb/replica -> .`) is one `link_loop`
reject: read, it was its parent again, buildings of no file, and nothing said.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from sources import fsio
from sources.paths import (names_below, path_problem, set_aside, set_aside_problem, shown_name, twin_problem,
                           twin_to_read)
from sources.records import (Reject, SourceItem, TupleRecord, layout_twin_order, nfc, relative_input, safe_key,
                             twin_detail)

# task -> (folder, domain id: the files' `_domain_<id>.png` ending)
TASKONOMY = {
    "image": ("rgb", "rgb"),
    "normals": ("normal", "normal"),
    "edges": ("edge_occlusion", "edge_occlusion"),
    "depth": ("depth_zbuffer", "depth_zbuffer"),
    "segmentation": ("segment_semantic", "segmentsemantic"),  # no underscore in its files' names
}
TUPLE_TASKS = tuple(TASKONOMY)
IMAGE_FOLDER = TASKONOMY["image"][0]
# the folders Omnidata's download has beside the ones read here (task_configs.py): one not yet
# filled (no <component>/<building>/ below it) is a domain of the download, not a stray building
OMNIDATA_DOMAINS = ("rgb", "normal", "depth_zbuffer", "depth_euclidean", "edge_occlusion", "edge_texture",
                    "keypoints2d", "keypoints3d", "principal_curvature", "reshading", "segment_semantic",
                    "segment_unsup2d", "segment_unsup25d", "mask_valid", "point_info", "class_object", "class_scene",
                    "fragments")
DOMAIN_FOLDERS = frozenset(folder for folder, _ in TASKONOMY.values()) | frozenset(OMNIDATA_DOMAINS)
DEPTH_SCALE = 1 / 512  # Taskonomy depth_zbuffer: 1/512 m per unit, 65535 = no depth
# Taskonomy's edge_occlusion is no binary map: its create_edge_images.py writes the Sobel magnitude
# of sqrt(depth) / 256 as uint16 (EDGE_3D_THRESH None), so every slanted surface holds some: a
# floor receding over a 512 x 512 view ~15, a far one at a grazing angle ~150, while a depth step
# of a quarter (z to 1.25 z) gives ~480 at 1 m and ~1100 at 5 m. An edge is a value above this.
EDGE_THRESHOLD = 256
TASKONOMY_COMPONENT = "taskonomy"  # the download's component whose keys are those of Taskonomy's own layout


@dataclass(frozen=True)
class _Building:
    """One building's domain folders, in either layout, and the names its keys and rejects use."""

    name: str
    component: str  # "" in Taskonomy's building-first layout
    folders: dict[str, str]  # task -> the folder holding its files
    shown_root: str  # set-aside files are named from here: the building, or the download's root

    @property
    def key_parts(self) -> tuple[str, ...]:
        keep = self.component and self.component != TASKONOMY_COMPONENT
        return (self.component, self.name) if keep else (self.name,)


@dataclass(frozen=True)
class MultiTaskSource:
    name: str
    path: str
    tasks: tuple[str, ...] = TUPLE_TASKS
    follow_links: bool = False  # read buildings and files that are links leading out of `path`

    def units(self) -> list[str]:
        """Building folders: `<building>` (Taskonomy) or `<domain folder>/<component>/<building>`
        (Omnidata's download), and each set-aside folder (`__MACOSX/`, `@eaDir/`: one reject each)."""
        dirs = fsio.list_dirs(self.path, links=True, loops=True)
        aside = [d for d in dirs if set_aside(fsio.basename(d))]
        kept = [d for d in dirs if d not in aside]
        buildings = [d for d in kept if fsio.exists(fsio.join(d, IMAGE_FOLDER))]
        if self._domain_first(kept):
            # the download's domain folders, those not read too (point_info/, mask_valid/), are no
            # buildings; a building moved under <building>/ by hand is read beside them, and any
            # other folder (a building without rgb/, a link leading out) is one reject
            others = [d for d in kept if d not in buildings and fsio.basename(d) not in DOMAIN_FOLDERS
                      and not (self._listed(d) and self._holds_download(d))]
            return self._download_units() + buildings + others + aside
        if not buildings:
            raise FileNotFoundError(f"no <building>/{IMAGE_FOLDER}/ folders (Taskonomy) or "
                                    f"{IMAGE_FOLDER}/<component>/<building>/ folders (omnitools.download) "
                                    f"under {self.path}")
        # a folder without rgb/ (a building whose rgb tar was never extracted) is a unit too: read, it
        # is one reject, so its other domains never vanish silently
        return buildings + [d for d in kept if d not in buildings] + aside

    def _listed(self, folder: str) -> bool:
        """Whether units() may list `folder`: no set-aside name, no link leading out of the root
        (such a folder is a unit of its own, one reject)."""
        return not set_aside(fsio.basename(folder)) and path_problem(self.path, folder, self.follow_links) is None

    def _domain_first(self, kept: list[str]) -> bool:
        """Whether the root holds Omnidata's download: `rgb/<component>/<building>/`. An rgb/ or
        component that is a link leading out is taken for the download's (never looked into: it
        is one reject naming `follow_links`); a building-first building named `rgb` holds files."""
        image = next((d for d in kept if fsio.basename(d) == IMAGE_FOLDER), None)
        if image is None:
            return False
        return not self._listed(image) or self._holds_download(image)

    def _holds_download(self, domain: str) -> bool:
        """Whether a listed folder holds `<component>/<building>/` (a component leading out counts)."""
        return any(not self._listed(c) or fsio.list_dirs(c, links=True, loops=True)
                   for c in fsio.list_dirs(domain, links=True, loops=True))

    def _download_units(self) -> list[str]:
        """Each `<component>/<building>` once, at its rgb folder where it has one (a building whose
        rgb tar never arrived: at its first domain holding it), then each folder not listed."""
        found: dict[tuple[str, str], str] = {}
        refused: list[str] = []
        for task in self.tasks:
            domain = fsio.join(self.path, TASKONOMY[task][0])
            if not fsio.isdir(domain):
                continue
            if not self._listed(domain):
                refused.append(domain)
                continue
            for component in fsio.list_dirs(domain, links=True, loops=True):
                if not self._listed(component):
                    refused.append(component)
                    continue
                for building in fsio.list_dirs(component, links=True, loops=True):
                    if set_aside(fsio.basename(building)):
                        refused.append(building)
                    else:  # a link leading out is a building: read, it is one reject under its key
                        found.setdefault((fsio.basename(component), fsio.basename(building)), building)
        return list(found.values()) + refused

    def _building(self, unit: str) -> _Building:
        """The building a unit names: `<building>` or `<domain folder>/<component>/<building>`."""
        parts = names_below(self.path, unit)
        if len(parts) != 3:
            return _Building(fsio.basename(unit), "", {t: fsio.join(unit, TASKONOMY[t][0]) for t in self.tasks}, unit)
        _, component, name = parts
        folders = {t: fsio.join(self.path, TASKONOMY[t][0], component, name) for t in self.tasks}
        return _Building(name, component, folders, self.path)

    def _unit_key(self, unit: str) -> str:
        parts = names_below(self.path, unit)
        if len(parts) == 3 and not set_aside(parts[-1]):  # a building of the download
            return safe_key(self.name, *self._building(unit).key_parts)
        return safe_key(self.name, *parts)  # a building, or a download's folder not listed: its path

    def read(self, unit: str) -> Iterator[SourceItem]:
        outside = set_aside_problem(self.path, unit) or path_problem(self.path, unit, self.follow_links)
        if outside:  # not listed: the linked building is one rejected item
            key = self._unit_key(unit)
            yield Reject(key, self.name, key, "read", outside.reason, outside.detail,
                         input=relative_input(unit, self.path) + "/")
            return
        building = self._building(unit)
        image = building.folders.get("image", "")
        if not fsio.exists(image):
            key = self._unit_key(unit)
            where = (f"{IMAGE_FOLDER}/ folder in {shown_name(building.name)}" if not building.component else
                     f"{shown_name(f'{IMAGE_FOLDER}/{building.component}/{building.name}/')} folder")
            yield Reject(key, self.name, key, "read", "incomplete_tuple", f"no {where}: none of its views has its image",
                         input=relative_input(image, self.path) + "/")
            return
        yield from self._tuples(building)

    def _twins(self, uris: list[str], suffix: str) -> tuple[str, list[str]]:
        """Of a domain's files of one stem (`x.png` beside `x.PNG`, `café` in NFC beside NFD), the one
        read, first in `layout_twin_order` (NFC, then `suffix` as Taskonomy spells it), and the
        others. The last listed overwrote the others without a word."""
        uris = sorted(uris, key=lambda uri: layout_twin_order(fsio.basename(uri), (suffix,)))
        kept = twin_to_read(self.path, uris, self.follow_links) if len(uris) > 1 else None
        kept = kept or uris[0]  # none a file to read: the first, its own problem its reject
        return kept, [uri for uri in uris if uri != kept]

    def _twin_reject(self, building: _Building, task: str, uri: str, kept: str) -> Reject:
        """The `duplicate_key` reject of a twin of `kept` (`_twins`), naming the file read; a twin that
        is no file to read (a fifo, a link to nothing, mode 000) keeps its own reason (`twin_problem`)."""
        name, first = fsio.basename(uri), fsio.basename(kept)
        how = "in another Unicode form" if nfc(name) == nfc(first) else "with its extension in another case"
        key = safe_key(self.name, *building.key_parts, TASKONOMY[task][0], name)
        reason, detail = twin_problem(self.path, uri, self.follow_links) or ("duplicate_key", twin_detail(name, first, how))
        return Reject(key, self.name, key, "read", reason, detail, input=relative_input(uri, self.path))

    def _tuples(self, building: _Building) -> Iterator[SourceItem]:
        listed: dict[str, dict[str, list[str]]] = {}  # the stem in NFC -> task -> its files
        for task in self.tasks:
            folder, domain = TASKONOMY[task]
            directory = building.folders[task]
            if not fsio.exists(directory):
                continue
            suffix = f"_domain_{domain}.png"
            for uri in fsio.list_files(directory, (suffix,), links=True):
                aside = set_aside_problem(building.shown_root, uri)
                if aside:  # a Mac's `._<stem>_domain_rgb.png`: never a tuple of its own
                    key = safe_key(self.name, *building.key_parts, folder, fsio.basename(uri))
                    yield Reject(key, self.name, key, "read", aside.reason, aside.detail,
                                 input=relative_input(uri, self.path))
                    continue
                listed.setdefault(nfc(fsio.basename(uri)[: -len(suffix)]), {}).setdefault(task, []).append(uri)
        files: dict[str, dict[str, str]] = {}
        spelt: dict[str, str] = {}  # the stem as its first file read spells it (lineage, as it always was)
        for stem, tasks in listed.items():
            for task, uris in tasks.items():
                kept, twins = self._twins(uris, f"_domain_{TASKONOMY[task][1]}.png")
                spelt.setdefault(stem, fsio.basename(kept)[: -len(f"_domain_{TASKONOMY[task][1]}.png")])
                files.setdefault(stem, {})[task] = kept
                yield from (self._twin_reject(building, task, uri, kept) for uri in twins)
        lineage = {"component": building.component} if len(building.key_parts) > 1 else {}
        for stem in sorted(files):
            group = safe_key(self.name, *building.key_parts, stem)
            found = files[stem]
            missing = [t for t in self.tasks if t not in found]
            outside = next(filter(None, (path_problem(self.path, u, self.follow_links) for u in found.values())), None)
            # its first file there, and its stem: `<building>/rgb/point_0_view_0_domain_rgb.png`
            at = relative_input(next(iter(found.values())), self.path) if found else stem
            if outside:
                yield Reject(group, self.name, group, "read", outside.reason, outside.detail, input=at)
                continue
            if missing:
                yield Reject(group, self.name, group, "read", "incomplete_tuple", f"missing {', '.join(missing)}",
                             input=at)
                continue
            yield TupleRecord(key=group, source=self.name, group=group,
                              uris=tuple((t, found[t]) for t in self.tasks), formats=(("depth", "png16"),),
                              lineage={**lineage, "building": building.name, "stem": spelt[stem]})
