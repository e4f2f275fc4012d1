"""What the trainer is told to read, before a shard is opened: `--data GLOB[:WEIGHT]` values and
YAML or JSON mixture files, as a `Mixture` of weighted shard globs and the split kept
(`trainer.data` reads the shards they name)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

from .config import UsageError


@dataclass(frozen=True)
class MixtureEntry:
    """Shards matching `glob` (a folder means every shard below it), drawn with `weight`."""

    glob: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise UsageError(f"mixture weight of {self.glob!r} must be a positive number, got {self.weight}")


@dataclass(frozen=True)
class Mixture:
    """What the trainer reads. `split` keeps only sentences of that split (None: every split)."""

    entries: tuple[MixtureEntry, ...]
    split: str | None = "train"

    def __post_init__(self) -> None:
        if not self.entries:
            raise UsageError("the mixture names no data: pass --data GLOB[:WEIGHT] or a mixture file")
        if not math.isfinite(sum(e.weight for e in self.entries)):  # two of 1e308: every share came out 0.0
            raise UsageError("--data: the mixture weights add up to more than a float holds ("
                             + ", ".join(f"{e.weight:g}" for e in self.entries) + "); only their ratios matter: "
                             "scale them down")
        seen: dict[str, str] = {}
        for entry in self.entries:  # the same shards twice were drawn at the sum of both weights, unsaid
            key = entry.glob if "://" in entry.glob else os.path.abspath(entry.glob)
            if key in seen:
                raise UsageError(f"--data: {entry.glob!r} is named twice (also as {seen[key]!r}); name each glob "
                                 "once, with the weight you mean")
            seen[key] = entry.glob

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "data": [{"glob": e.glob, "weight": e.weight} for e in self.entries]}


def parse_data_arg(value: str) -> MixtureEntry:
    """`GLOB[:WEIGHT]`; the weight is split off only when the text after the last ':' is a number,
    so URLs (gs://...) and paths with colons stay whole."""
    head, sep, tail = value.rpartition(":")
    if sep and head:
        try:
            weight = float(tail)
        except ValueError:
            pass
        else:
            return MixtureEntry(head, weight)
    return MixtureEntry(value, 1.0)


def meant_weight(glob: str) -> str | None:
    """The text after a glob's last ':' when it reads as a weight that is not a number (`g:abc`,
    `data/*.arrow:2x`): `parse_data_arg` keeps it in the glob, so that paths and URLs with colons
    stay whole, and a glob that then matches nothing is told as the weight it was meant to be."""
    head, sep, tail = glob.rpartition(":")
    return tail if sep and head and tail and "/" not in tail and "://" not in glob else None


def _yaml(text: str) -> Any:
    """YAML text parsed; a `ValueError` for text that is not YAML."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


TOP_KEYS = ("split", "data", "mixture")  # a mixture file's mapping form
ENTRY_KEYS = ("glob", "weight")


def load_mixture_file(path: str, split: str | None = "train") -> Mixture:
    """A YAML or JSON mixture: `{split: train, data: [{glob: ..., weight: ...}, ...]}` or just the list.
    Relative globs are taken relative to the file's folder, so a build's `mixture.yaml` works from
    anywhere (as relative paths in a build config do). `split`: the one kept when the file names none."""
    named, entries = read_mixture_file(path)
    return Mixture(entries, _split_value(split if named is _UNNAMED else named))


class _Unnamed:
    """The split of a mixture file that does not name one (None there means 'every split')."""


_UNNAMED = _Unnamed()


def read_mixture_file(path: str) -> tuple[str | None | _Unnamed, tuple[MixtureEntry, ...]]:
    """(the split the file names, or `_UNNAMED`; its entries), every key checked: a misspelt one
    (`wieght: 9`) was dropped in silence and its entry drawn at weight 1."""
    spec = _parse_file(path)
    split: str | None | _Unnamed = _UNNAMED
    if isinstance(spec, dict):
        _check_keys(path, "the mixture file", spec, TOP_KEYS)
        split = spec.get("split", _UNNAMED)
        items = spec.get("data", spec.get("mixture"))
    else:
        items = spec
    if not isinstance(items, list):
        raise UsageError(f"{path}: a mixture file holds a list of {{glob, weight}} (or a mapping with 'data')")
    return split, tuple(_file_entry(path, item) for item in items)


def _parse_file(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        return json.loads(text) if path.endswith(".json") else _yaml(text)
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, not JSON or YAML
        why = " ".join(str(getattr(exc, "strerror", None) or exc).split())[:200]
        raise UsageError(f"{path}: not a readable mixture file ({why})") from None


def _check_keys(path: str, what: str, mapping: dict, allowed: Sequence[str]) -> None:
    unknown = [key for key in mapping if key not in allowed]
    if unknown:
        raise UsageError(f"{path}: {what} has unknown key(s) {', '.join(repr(k) for k in unknown)}; the keys are "
                         f"{', '.join(allowed)} (a misspelt one would be ignored)")


def _file_entry(path: str, item: Any) -> MixtureEntry:
    """One entry of a mixture file, a relative glob made relative to the file's folder."""
    if isinstance(item, str):
        entry = parse_data_arg(item)
    elif isinstance(item, dict) and "glob" in item:
        _check_keys(path, f"mixture entry {item!r}", item, ENTRY_KEYS)
        entry = MixtureEntry(str(item["glob"]), _weight(path, item))
    else:
        raise UsageError(f"{path}: mixture entry {item!r} has no 'glob'")
    if "://" not in entry.glob and not os.path.isabs(entry.glob):
        entry = MixtureEntry(os.path.join(os.path.dirname(os.path.abspath(path)), entry.glob), entry.weight)
    return entry


def _weight(path: str, item: dict) -> float:
    """An entry's weight: a number (PyYAML reads `1e3`, without a dot, as text, so numeric text
    counts), never a boolean (`weight: true` was taken as 1.0)."""
    value = item.get("weight", 1.0)
    try:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{path}: mixture entry {item!r}: its weight is not a number") from None


def _split_value(split: str | None) -> str | None:
    return None if split in (None, "", "all", "*") else str(split)


def mixture_from_args(data: Sequence[str], split: str | None = "train") -> Mixture:
    """`--data` values: each is `GLOB[:WEIGHT]` or a .yaml/.yml/.json mixture file. A file's own split
    wins when it names one; otherwise `split` (`--split`) holds. Files naming different splits are
    refused: one run keeps one split."""
    entries: list[MixtureEntry] = []
    named: dict[str, str | None] = {}  # file -> the split it names
    for value in data:
        if value.endswith((".yaml", ".yml", ".json")) and os.path.isfile(value):
            file_split, file_entries = read_mixture_file(value)
            entries.extend(file_entries)
            if not isinstance(file_split, _Unnamed):
                named[value] = _split_value(file_split)
        else:
            entries.append(parse_data_arg(value))
    if len(set(named.values())) > 1:
        raise UsageError("--data: the mixture files name different splits (" + ", ".join(
            f"{path}: {split or 'all'}" for path, split in named.items()) + "); one run trains on one split")
    return Mixture(tuple(entries), next(iter(named.values())) if named else _split_value(split))
