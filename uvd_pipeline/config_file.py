"""Reading a build config file before it is validated (`config.load_config` validates what this
reads): a regular file of UTF-8 text within a size limit, safe YAML with no key given twice, a
bound on what its aliases expand to, and a syntax error placed at its file, line and column."""

from __future__ import annotations

import os
import stat
from typing import Any

import yaml

MAX_CONFIG_BYTES = 1 << 20  # a build config is a page of YAML, not a data file
MAX_CONFIG_NODES = 100_000  # values after YAML aliases are expanded (an alias bomb expands exponentially)


class ConfigError(ValueError):
    """A configuration problem, already phrased for the person who wrote the config."""


class DuplicateKey(yaml.YAMLError):
    """A mapping that gives one key twice: YAML would keep the last silently."""


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (the YAML spec forbids it;
    PyYAML keeps the last, so a second `output:` further down would move the build silently).
    Keys a merge (`<<: *base`) brings in may be overridden, as the spec allows."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKey(f"line {line}: key {key!r} is given twice in one mapping (first on line "
                                       f"{seen[key]}); give it once")
                seen[key] = line
            except TypeError:
                continue  # an unhashable key: the base class reports it
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str, max_bytes: int = MAX_CONFIG_BYTES, max_nodes: int = MAX_CONFIG_NODES) -> Any:
    """Safe YAML (no object tags, no key given twice) from a UTF-8 file, with limits on file size
    and on the size after aliases expand."""
    text = _config_text(path, max_bytes)
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_syntax_error(path, text, exc)) from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    try:
        nodes = _expanded_size(data, max_nodes)
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    if nodes > max_nodes:
        raise ConfigError(f"{path}: expands to more than {max_nodes} values (YAML aliases repeat what they "
                          "name); write the config without deep alias chains")
    return data


def _yaml_syntax_error(path: str, text: str, exc: yaml.YAMLError) -> str:
    """PyYAML's error as `FILE line L, column C: problem`, the line itself and a caret under the
    column (PyYAML names the file `<unicode string>`, having read text, and splits it over lines).
    A key without its colon is placed where the key is, not on the line after, where PyYAML gave up."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f"{path}: not valid YAML: {exc}"
    problem = getattr(exc, "problem", None) or "syntax error"
    context, where = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context == "while scanning a simple key" and where is not None:
        mark, problem, context = where, f"{problem} after the key (write `key: value`)", None
    message = f"{path} line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {problem}"
    if context and where is not None:
        message += f" ({context} on line {where.line + 1}, column {where.column + 1})"
    if "'\\t'" in problem:
        message += "; indent with spaces, not tabs"
    lines = text.splitlines()
    if mark.line < len(lines):
        message += f"\n  {lines[mark.line]}\n  {' ' * mark.column}^"
    return message


def _config_text(path: str, max_bytes: int) -> str:
    """The config file's text: a regular file (a folder or a fifo is refused before it is opened: a
    fifo would block), at most `max_bytes`, UTF-8 (a byte-order mark is allowed)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{path}: is a folder; give the path of the YAML config file itself")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path}: not a regular file; give the path of a YAML config file")
    if info.st_size > max_bytes:
        raise ConfigError(f"{path}: {info.st_size} bytes; a config is at most {max_bytes} bytes")
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise ConfigError(f"{path}: more than {max_bytes} bytes; a config is at most {max_bytes} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save the "
                          "config as UTF-8") from None


def _expanded_size(value: Any, limit: int) -> int:
    """How many values `value` holds once YAML aliases are expanded, counted without expanding
    them (shared objects are sized once); stops counting past `limit`."""
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        if id(node) not in sizes:
            sizes[id(node)] = limit + 1  # a cycle (a recursive alias) counts as too big
            children = list(node.values()) + list(node.keys()) if isinstance(node, dict) else node
            sizes[id(node)] = min(limit + 1, 1 + sum(size(child) for child in children))
        return sizes[id(node)]

    return size(value)
