"""The build configuration: typed, validated YAML that fails before any work starts.

Every error names the field path (``sources[2].strides[0]``) and what is allowed, and unknown
fields are errors, not silently ignored typos. Relative paths are taken from the config file's
folder, so a config works from whatever directory it is run. The file itself (a regular UTF-8
file, safe YAML, no key given twice, aliases bounded) is read by `uvd_pipeline.config_file`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, Field, PrivateAttr, StrictInt, ValidationError,
                      field_validator, model_validator)

from sources.records import name_text
from uvd_pipeline.config_base import Strict, _closest
from uvd_pipeline.config_beam import (BEAM_RUNNERS, DASK_RUNNER, DOTTED_PATH, MAX_DEFAULT_GROUPINGS,  # noqa: F401
                                      MAX_THREAD_WORKERS, MAX_WORKERS, MEMORY_PATTERN, RUNNER_NAMES, BeamConfig,
                                      DaskConfig, runner_name)
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

FORMAT_VERSION = 1
# source fields that say how a build runs, not what it outputs: a build resumed with another value
# (say a higher limit on a bigger machine) is the same configuration, so they stay out of the hash
RUN_ONLY_FIELDS: set[str] = {"index_memory_mb"}
# Bumped whenever the same input and config render to other bytes (a decoder, resize or ordering
# fix), and part of the config hash: a build resumed by a newer version must not mix the earlier
# version's stored units and committed shards with its own renders, so it is refused as changed
# (--replace-changed renders it again). 2 (2026-12-05): label maps resized at pixel centres, palette
# label PNGs read by index, Cityscapes void ids, Taskonomy edge threshold, 16-bit grey transparency,
# multi-view azimuths about the object, class-folder names in NFC, COCO boxes clipped to the image
# and masks layered by their pixels, COCO keypoints at their pixels' centres, joints outside the
# image not drawn on the padding, what operating systems and tools leave in a dataset read as
# os_metadata / hidden_file rejects (a Mac's `._x` files made frames, views, pairs and samples),
# keys over 200 characters and labels over 160 bytes cut with a digest (tar member names that
# GNU tar can create). 3 (2026-12-05, later): DCT-scaled JPEG decodes placed where the full decode
# puts their pixels (sizes not a multiple of 8 x the scale, turns that reverse an axis), TIFF
# orientations 5-8 turned once, MPO photos on the JPEG paths; a sentence's shard from its key as a
# case-insensitive file system sees it (twins in case or Unicode form share a shard and are told
# apart there), members named beyond ASCII in pax headers; video: cover art never read as the
# video, interlaced and size-changing streams decoded by PyAV. 4 (2026-12-05, evening): MPII's
# shoulders joined to the upper neck as MMPose draws them, CVAT's rotated boxes drawn turned, COCO
# crowd regions left out counted in the detection lineage, file names in keys and lineage taken in
# NFC (a Mac's NFD copy), KITTI depth pairs without the right view, Taskonomy labels under their
# real name, MMPose's mpii_val.json in the val split, Cityscapes JPEG images paired, COCO text ids
# and Windows-separated file names read, an unreadable caption its own reject, unit_failed
# rejects keyed by the unit's files inside the source root, drawing budgets for detection, pose
# and mask targets (annotation_too_large), video cropped off the left edge shown as declared and
# odd-height 4:2:0 video decoded by PyAV, Kaggle's ImageNet download and Omnidata's read as they lie,
# CO3D views ordered along the walk and picked evenly in azimuth (its set lists' evaluation
# sequences in val, cameras at one point a bad_camera), web images whose bytes differ from
# img2dataset's recorded hash a hash_mismatch reject. 5 (2026-12-05, night): 16-bit PGM/PPM and
# 32-bit TIFF samples scaled by the depth their file declares, CMYK images with their CMYK profile
# converted by it, PNG gAMA applied where no profile or sRGB chunk is (to the colour before
# alpha is composited on white, a 16-bit grey PNG's from its 16 bits), signed 16-bit and 32-bit
# TIFF samples offset by half their range (they were clipped at 0); VIPSeg's and JHMDB's official
# split lists honoured (their evaluation videos in val, VIPSeg's unlabelled test videos one reject each);
# camera raws (DNG, CR2, NEF, ARW, ...) an unsupported_format reject, never their preview rendered;
# Cityscapes images with only _labelTrainIds rendered; link loops, photo-library sidecars (a Takeout
# .jpg.json, .xmp, .AAE) and Android's .trashed-/.pending- files rejects of their own. 6 (2026-12-05,
# late): a GIF frame past its logical screen cut at the screen's edge, grey ICC profiles applied,
# a 16-bit colour PNG's gAMA applied from its 16 bits, a PNG's non-sRGB cHRM converted as Chromium
# does, members of multi-page and animated files recording their page count. 7 (2026-12-05,
# night): a tar member appended again (`tar -r`) built as extraction keeps it (the last copy), MPO
# and ICO page counts; of several video tracks the one the ffmpeg CLI picks, a stream growing
# mid-way keeping its frames before the growth; COCO: Label Studio's 0-based ids read one up
# whether class 0 is used or not, one file under two image ids rejected; web images: a Hub repo's
# card `configs:` giving splits and files, `metadata.parquet` and `*_file_name` columns read, a
# split layout's held-out folders (`test/`, `validation/`) in val; ImageNet-style class folders:
# every held-out folder of class folders read as val. 8 (2026-12-06): untagged HD video converted
# as BT.709 as players guess it (the sample's bigbuckbunny.mp4), VP9 that changes size on an inter
# frame decoded by PyAV at each frame's size; COCO brush masks without a box drawn from their runs,
# detectron2's rotated boxes drawn, 17 keypoints named otherwise than COCO's person drawn without
# its skeleton; a Hub repo without card configs building only the files `datasets` loads.
# 9 (2026-12-06): label maps' 255 (VOC's void border) drawn unlabelled, not as class 255; a label
# map or KITTI view without its image counted; a `memory://x` root read, not refused as outside.
# 10 (2026-12-06): every reject names its `input`; nested ADE20K and Cityscapes pairs keyed by
# their folders; the full ADE20K release (`ade20k_full`); label maps stored as a wholly grey palette
# read as their greys; a cut video's partial packet shown before whole frames is no frame unless
# its decoder shows one; PNGs whose text chunks pass Pillow's limits decoded without them, a bad CRC
# on a chunk that changes pixels refused; a gzip tail judged alike on every path.
# 11 (2026-12-06): KITTI pairs split by scene (`_10` and `_11` together), CO3D depth drawn only
# where its depth mask says (read as CO3D's loader reads it); MPEG-TS/PS files joined end to end
# read part by part (an open GOP's leading frames at a part's start hidden); Matroska frames
# before zero shown; PNG colour profiles past 1 MiB applied; Hugging Face ClassLabels inside lists
# and dicts, or declared by the card (the card's winning over the parquet's, as in `datasets`),
# named; an ImageFolder's top-level metadata.parquet read; tar members named `./x` keyed `x`;
# an MPEG-TS whose SEI follows the slice (split access units) read as the CLI shows it.
RENDER_REVISION = 11


class BuildConfig(Strict):
    version: Literal[1] = 1
    output: str = Field(min_length=1, description="local path or fsspec URL of the build")
    seed: StrictInt = Field(0, ge=0)
    image: ImageConfig = ImageConfig()
    split: SplitConfig = SplitConfig()
    sources: tuple[SourceConfig, ...] = Field(min_length=1)
    dedup: DedupConfig = DedupConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    mixture: MixtureConfig = MixtureConfig()
    beam: BeamConfig = BeamConfig()

    @field_validator("version", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):  # Literal[1] would take True for 1
            raise ValueError(f"expects 1, got {value}")
        return value

    @model_validator(mode="after")
    def _something_enabled(self) -> "BuildConfig":
        if not self.enabled_sources:
            names = ", ".join(s.name for s in self.sources)
            raise ValueError(f"sources: every source has enabled: false ({names}), so there is nothing to build; "
                             "set enabled: true on at least one (or --set "
                             f"sources.{self.sources[0].name}.enabled=true)")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> "BuildConfig":
        seen: set[str] = set()
        for index, source in enumerate(self.sources):
            if source.name in seen:
                raise ValueError(f"sources[{index}].name: {source.name!r} is used twice; names must be unique")
            seen.add(source.name)
        for name in self.mixture.sources:
            if name not in seen:
                raise ValueError(f"mixture.sources.{name}: no source is named {name!r}; sources are "
                                 f"{', '.join(sorted(seen))}")
        return self

    @property
    def enabled_sources(self) -> tuple[Any, ...]:
        return tuple(s for s in self.sources if s.enabled)

    # source name -> the root its output was first built from, where the input has moved since
    # (`with_output_roots`): the output keeps its config hash and its unit store's names
    _output_roots: dict[str, str] = PrivateAttr(default_factory=dict)

    def with_output_roots(self, roots: dict[str, str]) -> "BuildConfig":
        """This config, its hash (and its unit store's names) taken with each named source's input
        at its earlier root: a dataset moved since (`mv`, a disk mounted elsewhere) is the same input."""
        copy = self.model_copy()
        copy._output_roots = dict(roots)
        return copy

    def output_root(self, name: str) -> str:
        """The root a source's units are named under in the output (its `path` unless it moved)."""
        return self._output_roots.get(name) or next(s.path for s in self.sources if s.name == name)

    @property
    def output_roots(self) -> dict[str, str]:
        return dict(self._output_roots)

    def content_hash(self) -> str:
        """A digest of everything that shapes the output bytes (not how or where it runs)."""
        # the tokenizer is not part of it: retokenizing keeps the rendered shards valid; nor is
        # the mixture, which shapes only mixture.yaml (rewritten at the end of every build)
        content = self.model_dump(mode="json", exclude={"beam": True, "output": True, "tokenizer": True,
                                                        "mixture": True, "sources": {"__all__": RUN_ONLY_FIELDS}})
        for source in content["sources"]:
            source["path"] = self._output_roots.get(source["name"], source["path"])
        content["format_version"] = FORMAT_VERSION
        content["render_revision"] = RENDER_REVISION
        blob = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


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
