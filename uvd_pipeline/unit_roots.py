"""A moved input's paths named under the root the output was first built from: a dataset moved
since (`mv`, a disk mounted elsewhere) keeps its units' ids, commit marks and manifests, while
each file is checked where it lies now (`unit_store.UnitStore`'s `named` and `here`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from sources import fsio


def rebase(value: Any, old: str, new: str) -> Any:
    """`value` (a unit, a path, a manifest's key or value) with every path under the source root
    `old` put under `new` instead, the rest as it is: a moved input's units keep the names and
    manifests they were committed with under the root the output was first built from."""
    old, new = old.rstrip("/"), new.rstrip("/")
    if old == new or not old or not new:
        return value
    if isinstance(value, str):
        return new + value[len(old):] if value == old or value.startswith(old + "/") else value
    if isinstance(value, list):
        return [rebase(v, old, new) for v in value]
    if isinstance(value, tuple):
        items = [rebase(v, old, new) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: rebase(getattr(value, f.name), old, new)
                                             for f in dataclasses.fields(value) if f.init})
    return value


def rebased(pairs: list[tuple[str, str]], value: Any) -> Any:
    """`value` `rebase`d by each (old, new) pair of `root_pairs` in turn."""
    for old, new in pairs:
        value = rebase(value, old, new)
    return value


def root_pairs(old: str, new: str) -> list[tuple[str, str]]:
    """The (old, new) prefixes `rebase` takes a moved input's paths by: its roots in the form
    listed names have (`fsio.listed_root`: `memory://src/web` lists `memory:///src/web/x`, so the
    roots as written matched no listed name and a moved remote input rendered everything again),
    then as written (paths a reader joined to its root). None when both name one place."""
    if not old or not new:
        return []
    listed = (fsio.listed_root(old), fsio.listed_root(new))
    if listed[0] == listed[1]:
        return []
    written = (old.rstrip("/"), new.rstrip("/"))
    return [listed] if written == listed else [listed, written]
