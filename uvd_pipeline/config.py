"""The build configuration: typed, validated YAML that fails before any work starts.

Every error names the field path (``sources[2].strides[0]``) and what is allowed, and unknown
fields are errors, not silently ignored typos. Relative paths are taken from the config file's
folder, so a config works from whatever directory it is run. The file itself (a regular UTF-8
file, safe YAML, no key given twice, aliases bounded) is read by `uvd_pipeline.config_file`.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sources.records import name_text
from uvd_pipeline.config_base import Strict, _closest  # noqa: F401
from uvd_pipeline.config_beam import (BEAM_RUNNERS, DASK_RUNNER, DOTTED_PATH, MAX_DEFAULT_GROUPINGS,  # noqa: F401
                                      MAX_THREAD_WORKERS, MAX_WORKERS, MEMORY_PATTERN, RUNNER_NAMES, BeamConfig,
                                      DaskConfig, runner_name)
from uvd_pipeline.config_build import FORMAT_VERSION, RENDER_REVISION, RUN_ONLY_FIELDS, BuildConfig  # noqa: F401
from uvd_pipeline.config_file import ConfigError, read_yaml
from uvd_pipeline.config_labelers import (LABELER_MODELS, CannyLabeler, LabelerParams, LabelerSpec,  # noqa: F401
                                          MmposeLabeler, SgbmLabeler)
from uvd_pipeline.config_sections import (MAX_DEDUP_PROBES, MAX_PIXELS_LIMIT, MAX_TORCH_THREADS,  # noqa: F401
                                          DedupConfig, ImageConfig, MixtureConfig, SplitConfig, TokenizerConfig)
from uvd_pipeline.config_sources import (SOURCE_MODELS, SOURCE_TYPES, WINDOWS_DEVICE_NAMES,  # noqa: F401
                                         AnnotatedVideoSourceConfig, Co3dSourceConfig, CocoSourceConfig,
                                         GroupedOptions, ImageNetSourceConfig, LaionSourceConfig, LaterFields,
                                         LinkOptions, MpiiSourceConfig, MultiTaskSourceConfig,
                                         ObjaverseSourceConfig, PairSource, PseudoLabeledSourceConfig,
                                         SegmentationSourceConfig, SourceBase, SourceConfig, StereoSourceConfig,
                                         SyntheticSourceConfig, VideoSourceConfig)
from uvd_pipeline.mixture import NAME_PATTERN
# moved to config_file, still importable from here
from uvd_pipeline.config_file import MAX_CONFIG_BYTES, MAX_CONFIG_NODES, DuplicateKey, UniqueKeyLoader  # noqa: F401


def _union_tag(loc: tuple[Any, ...], index: int) -> bool:
    """Whether `loc[index]` is the branch pydantic names inside a tagged union (a source's `type`,
    a labeler's `name`), which the user never wrote as a key."""
    part = loc[index]
    if part in LABELER_MODELS:
        return index > 0 and loc[index - 1] == "labeler"
    return part in SOURCE_TYPES and index > 0 and isinstance(loc[index - 1], int)


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif _union_tag(loc, index):
            continue  # pydantic names the union branch; the user never wrote it
        elif isinstance(part, str) and part.startswith(("function-", "tagged-union")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _model_at(loc: tuple[Any, ...], data: Any) -> type[BaseModel] | None:
    """The pydantic model that owns the field at `loc`, to list its allowed fields."""
    model: type[BaseModel] | None = BuildConfig
    node = data
    for index, part in enumerate(loc[:-1]):
        if isinstance(part, int):
            node = node[part] if isinstance(node, (list, tuple)) and part < len(node) else None
            continue
        if _union_tag(loc, index):
            model = SOURCE_MODELS.get(part) or LABELER_MODELS[part]
            continue
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        node = node.get(part) if isinstance(node, dict) else None
        if part == "sources":
            model = None
            continue
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def _describe(error: dict[str, Any], data: Any) -> str:
    loc = tuple(error["loc"])
    where = _location(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        model = _model_at(loc, data)
        allowed = ", ".join(model.model_fields) if model else "see configs/sample.yaml"
        guess = _closest(loc[-1], model.model_fields if model else ())
        return f"{where}: unknown field; allowed fields here: {allowed}" + (f"; did you mean {guess}?" if guess else "")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = error.get("ctx", {}).get("tag")
        if error.get("ctx", {}).get("discriminator") == "'name'":  # a labeler
            names = [repr(name) for name in LABELER_MODELS]
            got = f"got {tag!r}" if kind == "union_tag_invalid" else "required field is missing"
            guess = _closest(tag, LABELER_MODELS) if kind == "union_tag_invalid" else None
            got += f"; did you mean {guess!r}?" if guess else ""
            return f"{where}.name: {got}; allowed: {', '.join(names[:-1])} or {names[-1]}"
        guess = _closest(tag, SOURCE_TYPES) if kind == "union_tag_invalid" else None
        if guess:
            return f"{where}.type: got {tag!r}; did you mean {guess}? It must be one of {', '.join(SOURCE_TYPES)}"
        return f"{where}.type: must be one of {', '.join(SOURCE_TYPES)}"
    if kind in ("int_type", "float_type") and isinstance(error.get("input"), bool):
        number = "a whole number" if kind == "int_type" else "a number"
        return f"{where}: expects {number}, got {error['input']} (YAML reads true/false, yes/no, on/off as booleans)"
    if kind in ("int_type", "float_type") and (written := _number_as_text(error.get("input"), kind == "int_type")):
        number = "a whole number" if kind == "int_type" else "a number"
        return (f"{where}: expects {number}, got the text {error['input']!r}; write {written} without quotes (YAML "
                "reads a quoted value, and an exponent without a dot such as 1e9, as text)")
    if kind in SHAPES:
        return f"{where}: expects {_shape_wanted(kind, loc, data)}, got {_shape_got(error.get('input'))}"
    if kind == "bool_type":
        return f"{where}: expects true or false, got {error.get('input')!r}"
    if kind == "string_unicode":  # a path with a name in another encoding: `os` hands its bytes over as surrogates
        return not_utf8(where, str(error.get("input")))
    if kind == "too_short":
        return f"{where}: needs at least {error.get('ctx', {}).get('min_length', 1)} entry; got none"
    if kind == "missing":
        return f"{where}: required field is missing"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        guess = _closest(error.get("input"), re.findall(r"'([^']*)'", expected))
        return f"{where}: got {error.get('input')!r}; " + (f"did you mean {guess!r}? " if guess else "") + f"allowed: {expected}"
    if kind == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NAME_PATTERN:
        return f"{where}: got {error.get('input')!r}; use lower_snake_case (a-z, 0-9, _) starting with a letter"
    message = error["msg"].removeprefix("Value error, ")
    if where == "(top level)" and re.match(r"[\w.\[\]]+: ", message):
        return message  # a check of the whole config that names its field itself
    shown = repr(error.get("input"))
    return f"{where}: {message}" + (f" (got {shown})" if len(shown) <= 60 and shown not in message else "")


def _number_as_text(value: Any, whole: bool) -> str | None:
    """The number a text field value spells (`"256"`, an unquoted `1e9`), written as YAML reads it
    as a number; None if it spells none (or, for a whole number, a fraction)."""
    if not isinstance(value, str):
        return None
    try:
        number = float(value.strip().replace("_", ""))
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    if whole:
        return str(int(number)) if number.is_integer() else None
    return repr(number)


SHAPES = {"model_type": "a section of fields", "model_attributes_type": "a section of fields",
          "dict_type": "a mapping", "tuple_type": "a list",
          "list_type": "a list", "string_type": "text"}


# the first fields of a tagged union's entry (a source, a labeler), which `_model_at` cannot name
UNION_FIELDS = {"sources": ["name", "type", "path"], "labeler": ["name"]}


def _union_name(loc: tuple[Any, ...]) -> str | None:
    """`sources` for a source entry (`sources[2]`), `labeler` for a labeler, else None."""
    if len(loc) == 2 and loc[0] == "sources" and isinstance(loc[1], int):
        return "sources"
    return "labeler" if loc[-1] == "labeler" else None


def _shape_wanted(kind: str, loc: tuple[Any, ...], data: Any) -> str:
    """What a field of the wrong shape should hold, as the YAML would write it."""
    if kind in ("tuple_type", "list_type"):
        return "a list (entries starting with '- ')"
    if kind in ("model_type", "model_attributes_type"):
        model = _model_at((*loc, None), data)
        names = list(model.model_fields)[:2] if model else UNION_FIELDS.get(_union_name(loc), [])
        return SHAPES[kind] + (f" ({', '.join(names)}, ...)" if names else "")
    return SHAPES[kind]


def _shape_got(value: Any) -> str:
    """A value of the wrong shape, named as YAML wrote it."""
    if value is None:
        return "nothing (the key has no value)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _relevant(errors: list[dict[str, Any]], data: Any) -> list[dict[str, Any]]:
    """Drop a list's length complaint when its items already failed (pydantic reports both), and a
    required field's absence when an unknown field beside it is its misspelling (`pth` for `path`):
    the unknown field's message already says which one was meant."""
    item_error_parents = {tuple(e["loc"][:1]) for e in errors if len(e["loc"]) > 1}
    meant = set()
    for e in errors:
        if e["type"] == "extra_forbidden":
            model = _model_at(tuple(e["loc"]), data)
            guess = _closest(e["loc"][-1], model.model_fields if model else ())
            meant.add((*e["loc"][:-1], guess))
    return [e for e in errors if not (e["type"] == "too_short" and tuple(e["loc"]) in item_error_parents)
            and not (e["type"] == "missing" and tuple(e["loc"]) in meant)]


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


def _resolve(path: str, base_dir: str, field: str) -> str:
    """A local path with `~` and `$VAR` / `${VAR}` expanded, relative to `base_dir`; a URL as is.
    An unset variable is refused, naming `field`: left in place it named a folder `$HOME`."""
    if "://" in path or (os.path.isabs(path) and "$" not in path):
        return path  # as written: an absolute path is part of the config hash
    expanded = os.path.expandvars(os.path.expanduser(path))
    unset = re.search(r"\$(\w+|\{[^}]*\})", expanded)
    if unset:
        raise ConfigError(f"{field}: {unset.group(0)} in {path!r} is not set in the environment; set it, or "
                          "write the path out")
    return os.path.normpath(os.path.join(os.path.abspath(base_dir), expanded))  # absolute: fsio lists absolute paths


def _resolve_labeler(labeler: LabelerParams | None, base_dir: str, field: str) -> LabelerParams | None:
    """An mmpose labeler's config and checkpoint files, resolved like every other path of the config."""
    if not isinstance(labeler, MmposeLabeler):
        return labeler
    files = {name: _resolve(getattr(labeler, name), base_dir, f"{field}.{name}") for name in ("config", "checkpoint")
             if getattr(labeler, name) is not None}
    return labeler.model_copy(update=files)


def _resolve_source(source: Any, base_dir: str, field: str) -> Any:
    update = {"path": _resolve(source.path, base_dir, f"{field}.path")}
    if getattr(source, "labeler", None) is not None:
        update["labeler"] = _resolve_labeler(source.labeler, base_dir, f"{field}.labeler")
    return source.model_copy(update=update)


def _resolve_paths(config: BuildConfig, base_dir: str) -> BuildConfig:
    sources = tuple(_resolve_source(s, base_dir, f"sources[{i}]") for i, s in enumerate(config.sources))
    tokenizer = config.tokenizer
    if tokenizer.checkpoint != "embedded":
        tokenizer = tokenizer.model_copy(update={"checkpoint": _resolve(tokenizer.checkpoint, base_dir,
                                                                        "tokenizer.checkpoint")})
    return config.model_copy(update={"output": _resolve(config.output, base_dir, "output"), "sources": sources,
                                     "tokenizer": tokenizer})


def _comparable(path: str) -> str:
    """A path with links resolved (local) or a normalised URL, ending in a separator."""
    if "://" in path:
        return path.rstrip("/") + "/"
    return os.path.join(os.path.realpath(path), "")


def _check_output_apart(config: BuildConfig, origin: str) -> None:
    """Refuse an output inside a source (the next build would read this build's files) and a
    source inside the output (a rebuild with --overwrite would delete its own input)."""
    output = _comparable(config.output)
    for index, source in enumerate(config.sources):
        path = _comparable(source.path)
        if output.startswith(path):
            raise ConfigError(f"{origin}: output {config.output!r} lies inside sources[{index}].path "
                              f"{source.path!r}; put the output outside every source folder")
        if path.startswith(output):
            raise ConfigError(f"{origin}: sources[{index}].path {source.path!r} lies inside output "
                              f"{config.output!r}; put the output outside every source folder")


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


def not_utf8(where: str, value: str) -> str:
    """The message for a path whose name holds bytes that are not UTF-8 (`os` hands them over as
    lone surrogates), whether the config file, `--output` or `--set` gave it."""
    return (f"{where}: {name_text(value)} holds bytes that are not UTF-8 (a name written in another encoding, "
            "such as latin-1); the build writes its paths into JSON, YAML and Arrow, which hold UTF-8 text only: "
            "rename the folder to a UTF-8 name (convmv -f latin1 -t utf8 --notest PATH) or give another path")


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
