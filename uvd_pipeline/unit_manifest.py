"""What a unit's reading touched (its input manifest: every file opened with its state, every
path found absent, every folder listed, every value derived from files many units share), whether
any of it changed since, and whether a recorded manifest or commit mark has the shape it must."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

from sources import fsio


def unit_paths(unit: Any) -> list[str]:
    """Paths a unit names itself (a video file, an object folder, a shard's files): their state
    belongs to its manifest even when a reader opens them outside `sources.fsio`."""
    if isinstance(unit, str):
        return [unit]
    uris = getattr(unit, "uris", None)
    if isinstance(uris, (tuple, list)):
        return [u for u in uris if isinstance(u, str)]
    return []


def _same(value: Any) -> Any:
    return value


def input_manifest(record: fsio.InputsRead, unit: Any, named: Callable[[Any], Any] = _same) -> dict[str, Any]:
    """Each file the reading opened with its state when first opened (`fsio.InputsRead.states`; a
    path the unit names, opened outside `fsio`, its state now), each path it found absent as "missing"
    (as it was when probed: one that appears before a rerun changes the unit), each listing.
    `named`: paths as the store names them (`UnitStore.named`; listings' names: `InputsRead.rename`)."""
    files = sorted(record.files | set(unit_paths(unit)))
    states = {named(uri): record.states[uri] if uri in record.states else fsio.file_state(uri) for uri in files}
    states.update({named(uri): ["missing"] for uri in sorted(record.absent) if named(uri) not in states})
    manifest = {"files": dict(sorted(states.items())),
                "listings": sorted([named(list(key)), digest] for key, digest in record.listings.items())}
    if record.derived:  # absent otherwise: the manifests (and digests) of other units stay as they were
        manifest["derived"] = sorted(([named(list(key)), named(value)] for key, value in record.derived.items()),
                                     key=lambda entry: json.dumps(entry[0]))
    return manifest


def changed_input(manifest: dict[str, Any], here: Callable[[Any], Any] = _same,
                  named: Callable[[Any], Any] = _same) -> str | None:
    """What differs between a recorded manifest and the filesystem now (None: nothing). `here`:
    a recorded path where the input lies now, `named` the way back (a moved input: `UnitStore`)."""
    for uri, state in manifest["files"].items():
        if fsio.file_state(here(uri)) != state:
            return f"{here(uri)} changed"
    for key, digest in manifest["listings"]:
        now = tuple(tuple(k) if isinstance(k, list) else k for k in here(key))
        if fsio.relist(now, rename=None if named is _same else named) != digest:
            return f"the listing of {now[1]} changed"
    for key, value in manifest.get("derived", ()):
        if named(fsio.rederive(tuple(here(key)))) != value:
            return f"{key[0]} of {key[-1]} changed"
    return None


def _is_listing_key(key: Any) -> bool:
    """A key `fsio.relist` takes: ("files", uri, suffixes, recursive, follow_links, links) or
    ("dirs", uri[, links[, loops]])."""
    if not isinstance(key, list) or len(key) < 2 or not isinstance(key[1], str):
        return False
    if key[0] == "files":
        return len(key) == 6 and (key[2] is None or isinstance(key[2], list) and all(isinstance(x, str) for x in key[2]))
    return key[0] == "dirs" and len(key) <= 4


def _pairs(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 for p in value)


def manifest_problem(manifest: Any) -> str | None:
    """What makes a recorded input manifest unreadable to `changed_input` (None: its shape is right)."""
    if not isinstance(manifest, dict):
        return "`inputs` is no object"
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(s, list) for s in files.values()):
        return "`inputs.files` is no object of lists"
    listings = manifest.get("listings")
    if not _pairs(listings) or not all(_is_listing_key(k) and isinstance(d, str) for k, d in listings):
        return "`inputs.listings` is no list of (listing, digest) pairs"
    derived = manifest.get("derived", [])
    if not _pairs(derived) or not all(isinstance(k, list) and k for k, _ in derived):
        return "`inputs.derived` is no list of (key, value) pairs"
    return None


def mark_problem(mark: dict[str, Any]) -> str | None:
    """What makes a commit mark of the wrong shape (a field missing, a list for an object), checked
    before it is used so that only a damaged mark is rendered again, never a bug of ours."""
    for name in ("version", "config_hash", "unit", "render", "inputs_digest"):
        if not isinstance(mark.get(name), (str, int)) or isinstance(mark.get(name), bool):
            return f"`{name}` missing or of the wrong type"
    for name in ("results", "images"):
        if not isinstance(mark.get(name), dict) or not _is_size(mark[name].get("bytes")):
            return f"`{name}.bytes` missing or no size"
    if not isinstance(mark["results"].get("sha256"), str):
        return "`results.sha256` missing"
    return manifest_problem(mark.get("inputs"))


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def digest_of(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
