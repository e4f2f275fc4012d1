"""Config fields set from the command line (`--set KEY=VALUE`, and flags such as `--output` or
`--workers`): dotted keys set in the raw mapping read from the file before it is validated, so
an override can never make a config the file could not be."""

from __future__ import annotations

import re
from typing import Any

import yaml

from uvd_pipeline.config_base import _closest
from uvd_pipeline.config_file import ConfigError
from uvd_pipeline.config_messages import not_utf8


def with_overrides(data: Any, overrides: dict[str, Any]) -> Any:
    """The raw config mapping with `overrides` set: dotted keys name nested fields
    (`beam.direct_num_workers`; `sources.0.num_shards` or `sources.web.num_shards` for a list entry by
    index or name); a callable value gets the current value
    (None when unset) and returns the new one. The result is validated like the file itself, so an
    override can never make a config the file could not be. A key that cannot be set (its parent is
    a value, or a list index past the end) is refused here, since validation would never see it."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for dotted, value in overrides.items():
        *parents, name = dotted.split(".")
        node: Any = data
        for depth, part in enumerate(parents):
            node = _child_for_update(node, part, dotted, ".".join(parents[:depth + 1]))
        if isinstance(node, list):
            index = _list_index(node, name, dotted, ".".join(parents))
            node[index] = value(node[index]) if callable(value) else value
        else:
            node[name] = value(node.get(name)) if callable(value) else value
    return data


def _list_index(node: list, part: str, dotted: str, where: str) -> int:
    """The entry of a list that `part` names: its index, or the `name` of a mapping in it (a source)."""
    if part.isdigit() and int(part) < len(node):
        return int(part)
    names = [entry.get("name") if isinstance(entry, dict) else None for entry in node]
    if part in names:
        return names.index(part)
    known = ", ".join(str(n) for n in names if n is not None)
    guess = _closest(part, [n for n in names if n is not None])
    raise ConfigError(f"{dotted}: {where} is a list of {len(node)}; name an entry by its index "
                      f"0..{len(node) - 1}" + (f" or its name ({known})" if known else "")
                      + (f"; did you mean {guess}?" if guess else ""))


def _child_for_update(node: Any, part: str, dotted: str, where: str) -> Any:
    """A copy of `node[part]` put back in place (so the file's own data is never changed), to set a
    field under it: a missing or empty section becomes a new mapping."""
    if isinstance(node, list):
        index = _list_index(node, part, dotted, where.rpartition(".")[0])
        child = node[index]
        node[index] = dict(child) if isinstance(child, dict) else list(child) if isinstance(child, list) else child
        return node[index]
    child = node.get(part)
    if child is None:
        child = {}
    elif isinstance(child, (dict, list)):
        child = type(child)(child)
    else:
        raise ConfigError(f"{dotted}: {where} holds the value {child!r}, not a section with fields; "
                          f"set {where} itself")
    node[part] = child
    return child


def parse_set_options(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` options as overrides for `load_config`: KEY is a dotted field path
    (`tokenizer.batch_size`, `sources.0.enabled`, `sources.web.enabled`), VALUE a YAML scalar (`32`, `true`, `null`,
    `text`), so a value means what it would mean written in the file."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", key):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with KEY a dotted field path, "
                              "e.g. --set tokenizer.batch_size=32")
        if key in overrides:
            raise ConfigError(f"--set {key} is given twice; give it once")
        if any("\udc80" <= c <= "\udcff" for c in text):  # a shell word of non-UTF-8 bytes: YAML reads no such text
            raise ConfigError(not_utf8(f"--set {key}", text.strip().strip("'\"")))
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: {text!r} is not a YAML value; quote text in the shell, "
                              f"e.g. --set '{key}=\"...\"'") from None
        if isinstance(value, (dict, list)):
            raise ConfigError(f"--set {key}: give one scalar value (a number, true/false, null or "
                              "text); write lists and sections in the config file")
        overrides[key] = value
    return overrides
