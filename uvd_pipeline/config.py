"""The build configuration: typed, validated YAML that fails before any work starts.

Every error names the field path (``sources[2].strides[0]``) and what is allowed, and unknown
fields are errors, not silently ignored typos. Relative paths are taken from the config file's
folder, so a config works from whatever directory it is run. The file itself (a regular UTF-8
file, safe YAML, no key given twice, aliases bounded) is read by `uvd_pipeline.config_file`.

This module loads and validates (`load_config`, `parse_config`); every name of the config is
importable from here. Its parts, each importing only those above it: `config_base` (the strict
model base, misspelling guesses), `config_labelers`, `config_sources`, `config_sections` (image,
split, dedup, tokenizer, mixture), `config_beam`, `config_build` (`BuildConfig`, its content hash,
`RENDER_REVISION`), then `config_messages` (validation errors phrased for a person),
`config_paths` and `config_overrides` (`--set`).
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import ValidationError

from uvd_pipeline.config_base import Strict, _closest  # noqa: F401
from uvd_pipeline.config_beam import (BEAM_RUNNERS, DASK_RUNNER, DOTTED_PATH, MAX_DEFAULT_GROUPINGS,  # noqa: F401
                                      MAX_THREAD_WORKERS, MAX_WORKERS, MEMORY_PATTERN, RUNNER_NAMES, BeamConfig,
                                      DaskConfig, runner_name)
from uvd_pipeline.config_build import FORMAT_VERSION, RENDER_REVISION, RUN_ONLY_FIELDS, BuildConfig  # noqa: F401
from uvd_pipeline.config_file import ConfigError, read_yaml
from uvd_pipeline.config_labelers import (LABELER_MODELS, CannyLabeler, LabelerParams, LabelerSpec,  # noqa: F401
                                          MmposeLabeler, SgbmLabeler)
from uvd_pipeline.config_messages import _describe, _relevant, _shape_got, not_utf8  # noqa: F401
from uvd_pipeline.config_overrides import parse_set_options, with_overrides  # noqa: F401
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
        lines.append(f"source {s.name} ({s.type}) <- {s.path} [{s.num_shards} train + {s.num_val_shards} val shards]")
    beam = config.beam
    if beam.local:
        how = {"in_memory": "in this process", "multi_threading": "as threads of this process",
               "multi_processing": "as processes"}[beam.running_mode]
        lines.append(f"workers: {beam.direct_num_workers} {how} (beam.direct_running_mode: {beam.direct_running_mode})")
    return "\n".join(lines)
