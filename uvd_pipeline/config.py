"""The build configuration: typed, validated YAML that fails before any work starts.

Every error names the field path (``sources[2].strides[0]``) and what is allowed, and unknown
fields are errors, not silently ignored typos. Relative paths are taken from the config file's
folder, so a config works from whatever directory it is run. The file itself (a regular UTF-8
file, safe YAML, no key given twice, aliases bounded) is read by `uvd_pipeline.config_file`.
"""

from __future__ import annotations

import os
import re
from typing import Any

import yaml
from pydantic import ValidationError

from uvd_pipeline.config_base import Strict, _closest  # noqa: F401
from uvd_pipeline.config_beam import (BEAM_RUNNERS, DASK_RUNNER, DOTTED_PATH, MAX_DEFAULT_GROUPINGS,  # noqa: F401
                                      MAX_THREAD_WORKERS, MAX_WORKERS, MEMORY_PATTERN, RUNNER_NAMES, BeamConfig,
                                      DaskConfig, runner_name)
from uvd_pipeline.config_build import FORMAT_VERSION, RENDER_REVISION, RUN_ONLY_FIELDS, BuildConfig  # noqa: F401
from uvd_pipeline.config_file import ConfigError, read_yaml
from uvd_pipeline.config_labelers import (LABELER_MODELS, CannyLabeler, LabelerParams, LabelerSpec,  # noqa: F401
                                          MmposeLabeler, SgbmLabeler)
from uvd_pipeline.config_messages import _describe, _relevant, _shape_got, not_utf8
from uvd_pipeline.config_paths import _check_output_apart, _resolve_paths
from uvd_pipeline.config_sections import (MAX_DEDUP_PROBES, MAX_PIXELS_LIMIT, MAX_TORCH_THREADS,  # noqa: F401
                                          DedupConfig, ImageConfig, MixtureConfig, SplitConfig, TokenizerConfig)
from uvd_pipeline.config_sources import (SOURCE_MODELS, SOURCE_TYPES, WINDOWS_DEVICE_NAMES,  # noqa: F401
                                         AnnotatedVideoSourceConfig, Co3dSourceConfig, CocoSourceConfig,
                                         GroupedOptions, ImageNetSourceConfig, LaionSourceConfig, LaterFields,
                                         LinkOptions, MpiiSourceConfig, MultiTaskSourceConfig,
                                         ObjaverseSourceConfig, PairSource, PseudoLabeledSourceConfig,
                                         SegmentationSourceConfig, SourceBase, SourceConfig, StereoSourceConfig,
                                         SyntheticSourceConfig, VideoSourceConfig)
# moved to config_file, still importable from here
from uvd_pipeline.config_file import MAX_CONFIG_BYTES, MAX_CONFIG_NODES, DuplicateKey, UniqueKeyLoader  # noqa: F401


def parse_config(data: Any, base_dir: str = ".", origin: str = "config") -> BuildConfig:
    """Validate a config mapping; relative paths are resolved against `base_dir`."""
    if not isinstance(data, dict):
        what = "the file is empty" if data is None else f"the top level is {_shape_got(data)}"
        raise ConfigError(f"{origin}: {what}; a config is a mapping of fields (version, output, sources, ...), "
                          "as in configs/sample.yaml")
    try:
        config = BuildConfig.model_validate(data)
    except ValidationError as exc:
        errors = _relevant(exc.errors(), data)
        problems = "\n  ".join(_describe(e, data) for e in errors)
        raise ConfigError(f"{origin}: {len(errors)} problem(s):\n  {problems}") from None
    try:
        config = _resolve_paths(config, base_dir)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    _check_output_apart(config, origin)
    return config


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


def load_config(path: str, overrides: dict[str, Any] | None = None) -> BuildConfig:
    """Read and validate a YAML config file. `overrides` (see `with_overrides`) are set before
    validation; errors then name the overridden field."""
    data = read_yaml(path)
    origin = path
    if overrides:
        data = with_overrides(data, overrides)
        origin = f"{path} with {', '.join(overrides)} from the command line"
    return parse_config(data, os.path.dirname(os.path.abspath(path)), origin=origin)


def config_summary(config: BuildConfig) -> str:
    lines = [f"output: {config.output}", f"image: {config.image.size}px {config.image.resize}"]
    for s in config.enabled_sources:
        lines.append(f"source {s.name} ({s.type}) <- {s.path} [{s.num_shards} shards/split]")
    beam = config.beam
    if beam.local:
        how = {"in_memory": "in this process", "multi_threading": "as threads of this process",
               "multi_processing": "as processes"}[beam.running_mode]
        lines.append(f"workers: {beam.direct_num_workers} {how} (beam.direct_running_mode: {beam.direct_running_mode})")
    return "\n".join(lines)
