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


def _yaml(text: str) -> Any:
    """YAML text parsed; a `ValueError` for text that is not YAML."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def load_mixture_file(path: str) -> Mixture:
    """A YAML or JSON mixture: `{split: train, data: [{glob: ..., weight: ...}, ...]}` or just the list.
    Relative globs are taken relative to the file's folder, so a build's `mixture.yaml` works from
    anywhere (as relative paths in a build config do)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        spec = json.loads(text) if path.endswith(".json") else _yaml(text)
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, not JSON or YAML
        why = " ".join(str(getattr(exc, "strerror", None) or exc).split())[:200]
        raise UsageError(f"{path}: not a readable mixture file ({why})") from None
    split: str | None = "train"
    if isinstance(spec, dict):
        split = spec.get("split", "train")
        items = spec.get("data", spec.get("mixture"))
    else:
        items = spec
    if not isinstance(items, list):
        raise UsageError(f"{path}: a mixture file holds a list of {{glob, weight}} (or a mapping with 'data')")
    entries = []
    for item in items:
        if isinstance(item, str):
            entry = parse_data_arg(item)
        elif isinstance(item, dict) and "glob" in item:
            try:
                weight = float(item.get("weight", 1.0))
            except (TypeError, ValueError):
                raise UsageError(f"{path}: mixture entry {item!r}: its weight is not a number") from None
            entry = MixtureEntry(str(item["glob"]), weight)
        else:
            raise UsageError(f"{path}: mixture entry {item!r} has no 'glob'")
        if "://" not in entry.glob and not os.path.isabs(entry.glob):
            entry = MixtureEntry(os.path.join(os.path.dirname(os.path.abspath(path)), entry.glob), entry.weight)
        entries.append(entry)
    return Mixture(tuple(entries), _split_value(split))


def _split_value(split: str | None) -> str | None:
    return None if split in (None, "", "all", "*") else str(split)


def mixture_from_args(data: Sequence[str], split: str | None = "train") -> Mixture:
    """`--data` values: each is `GLOB[:WEIGHT]` or a .yaml/.yml/.json mixture file (whose own split
    wins when it names one)."""
    entries: list[MixtureEntry] = []
    for value in data:
        if value.endswith((".yaml", ".yml", ".json")) and os.path.isfile(value):
            loaded = load_mixture_file(value)
            entries.extend(loaded.entries)
            split = loaded.split
        else:
            entries.append(parse_data_arg(value))
    return Mixture(tuple(entries), _split_value(split))
