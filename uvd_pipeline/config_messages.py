"""The messages of a config that fails validation: pydantic's errors phrased for the person who
wrote the YAML, each naming the field path (`sources[2].strides[0]`), what is allowed there and,
for a misspelling, what was likely meant. Reads the models (`config_build` and below); the
models never read it, so there is no import cycle."""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import BaseModel

from sources.records import name_text
from uvd_pipeline.config_base import _closest
from uvd_pipeline.config_build import BuildConfig
from uvd_pipeline.config_labelers import LABELER_MODELS
from uvd_pipeline.config_sources import SOURCE_MODELS, SOURCE_TYPES
from uvd_pipeline.mixture import NAME_PATTERN


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
        choices = re.findall(r"'([^']*)'", expected)
        guess = _meant(error.get("input"), choices) or _closest(error.get("input"), choices)
        return f"{where}: got {error.get('input')!r}; " + (f"did you mean {guess!r}? " if guess else "") + f"allowed: {expected}"
    if kind == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NAME_PATTERN:
        return f"{where}: got {error.get('input')!r}; use lower_snake_case (a-z, 0-9, _) starting with a letter"
    message = error["msg"].removeprefix("Value error, ")
    if where == "(top level)" and re.match(r"[\w.\[\]]+: ", message):
        return message  # a check of the whole config that names its field itself
    shown = repr(error.get("input"))
    return f"{where}: {message}" + (f" (got {shown})" if len(shown) <= 60 and shown not in message else "")


# What people call a choice elsewhere (torch's dtype names, the trainer's --dtype, plain speech),
# told before the nearest spelling: `gpu` is one letter off `cpu`, and `float32` near no choice.
OTHER_NAMES = {"gpu": "cuda", "float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16",
               "tensorfloat32": "tf32"}


def _meant(word: Any, choices: list[str]) -> str | None:
    """The choice `word` names by another common name, if it is among `choices`."""
    meant = OTHER_NAMES.get(word.lower()) if isinstance(word, str) else None
    return meant if meant in choices else None


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
    return yaml_float(number)


def yaml_float(number: float) -> str:
    """`number` spelt so that YAML 1.1 (PyYAML) reads it as a float: an exponent needs a dot before
    it and a sign (`1.0e-05`, `1.0e+20`); `repr`'s `1e-05`, hinted as the fix, was read as text again."""
    mantissa, exponent, power = repr(number).partition("e")
    if not exponent:
        return mantissa
    return f"{mantissa if '.' in mantissa else mantissa + '.0'}e{power if power[0] in '+-' else '+' + power}"


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


def not_utf8(where: str, value: str) -> str:
    """The message for a path whose name holds bytes that are not UTF-8 (`os` hands them over as
    lone surrogates), whether the config file, `--output` or `--set` gave it."""
    return (f"{where}: {name_text(value)} holds bytes that are not UTF-8 (a name written in another encoding, "
            "such as latin-1); the build writes its paths into JSON, YAML and Arrow, which hold UTF-8 text only: "
            "rename the folder to a UTF-8 name (convmv -f latin1 -t utf8 --notest PATH) or give another path")
