"""Multi-annotation tuples in a Taskonomy-style layout, matched by file stem.

`<building>/<domain folder>/<stem>_domain_<domain id>.png`, as Taskonomy and Omnidata name them: the
domain id is the folder's name, but semantic labels are `segment_semantic/<stem>_domain_segmentsemantic.png`
(Omnidata's task_configs.py). A tuple is the image and its normals,
edges, depth and segmentation; a stem missing any of them is rejected with the missing task.
What operating systems and tools leave (a Mac's `._x.png`, `__MACOSX/`, `@eaDir/`, `.git/`) is one
`os_metadata` or `hidden_file` reject each (`sources.paths.set_aside`), never a tuple or a building.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from sources import fsio
from sources.paths import path_problem, set_aside, set_aside_problem, shown_name
from sources.records import Reject, SourceItem, TupleRecord, safe_key

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
DEPTH_SCALE = 1 / 512  # Taskonomy depth_zbuffer: 1/512 m per unit, 65535 = no depth
# Taskonomy's edge_occlusion is no binary map: its create_edge_images.py writes the Sobel magnitude
# of sqrt(depth) / 256 as uint16 (EDGE_3D_THRESH None), so every slanted surface holds some: a
# floor receding over a 512 x 512 view ~15, a far one at a grazing angle ~150, while a depth step
# of a quarter (z to 1.25 z) gives ~480 at 1 m and ~1100 at 5 m. An edge is a value above this.
EDGE_THRESHOLD = 256


@dataclass(frozen=True)
class MultiTaskSource:
    name: str
    path: str
    tasks: tuple[str, ...] = TUPLE_TASKS
    follow_links: bool = False  # read buildings and files that are links leading out of `path`

    def units(self) -> list[str]:
        dirs = fsio.list_dirs(self.path, links=True)
        aside = [d for d in dirs if set_aside(fsio.basename(d))]  # `__MACOSX/`, `@eaDir/`: one reject each
        kept = [d for d in dirs if d not in aside]
        buildings = [d for d in kept if fsio.exists(fsio.join(d, IMAGE_FOLDER))]
        if not buildings:
            raise FileNotFoundError(f"no <building>/{IMAGE_FOLDER}/ folders under {self.path}"
                                    + self._domain_first_hint())
        # a folder without rgb/ (a building whose rgb tar was never extracted) is a unit too: read, it
        # is one reject, so its other domains never vanish silently
        return buildings + [d for d in kept if d not in buildings] + aside

    def _domain_first_hint(self) -> str:
        """What to do with Omnidata's download (omnitools.download: <domain>/<component>/<building>/)."""
        image = fsio.join(self.path, IMAGE_FOLDER)
        components = fsio.list_dirs(image) if fsio.isdir(image) else []
        if not components:
            return ""
        example = f"{IMAGE_FOLDER}/{fsio.basename(components[0])}/<building>/"
        return (f"; it holds {example}, Omnidata's domain-first download, which is not read: "
                f"move each building's domains under <building>/ (<building>/{IMAGE_FOLDER}/, <building>/normal/, ...)")

    def read(self, building: str) -> Iterator[SourceItem]:
        name = fsio.basename(building)
        outside = set_aside_problem(self.path, building) or path_problem(self.path, building, self.follow_links)
        if outside:  # not listed: the linked building is one rejected item
            key = safe_key(self.name, name)
            yield Reject(key, self.name, key, "read", outside.reason, outside.detail)
            return
        if not fsio.exists(fsio.join(building, IMAGE_FOLDER)):
            key = safe_key(self.name, name)
            yield Reject(key, self.name, key, "read", "incomplete_tuple",
                         f"no {IMAGE_FOLDER}/ folder in {shown_name(name)}: none of its views has its image")
            return
        files: dict[str, dict[str, str]] = {}
        for task in self.tasks:
            folder, domain = TASKONOMY[task]
            directory = fsio.join(building, folder)
            if not fsio.exists(directory):
                continue
            suffix = f"_domain_{domain}.png"
            for uri in fsio.list_files(directory, (suffix,), links=True):
                aside = set_aside_problem(building, uri)
                if aside:  # a Mac's `._<stem>_domain_rgb.png`: never a tuple of its own
                    key = safe_key(self.name, name, folder, fsio.basename(uri))
                    yield Reject(key, self.name, key, "read", aside.reason, aside.detail)
                    continue
                files.setdefault(fsio.basename(uri)[: -len(suffix)], {})[task] = uri
        for stem in sorted(files):
            group = safe_key(self.name, name, stem)
            found = files[stem]
            missing = [t for t in self.tasks if t not in found]
            outside = next(filter(None, (path_problem(self.path, u, self.follow_links) for u in found.values())), None)
            if outside:
                yield Reject(group, self.name, group, "read", outside.reason, outside.detail)
                continue
            if missing:
                yield Reject(group, self.name, group, "read", "incomplete_tuple", f"missing {', '.join(missing)}")
                continue
            yield TupleRecord(key=group, source=self.name, group=group,
                              uris=tuple((t, found[t]) for t in self.tasks),
                              formats=(("depth", "png16"),), lineage={"building": name, "stem": stem})
