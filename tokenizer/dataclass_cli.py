"""Command-line flags generated from an options dataclass, so a CLI's names, types, defaults and
help live in one place (the dataclass) and can never disagree with what a run stores.

`flag(default, help)` declares a field with its help text; `add_flags(parser, Options)` adds
`--field-name` for every field: required when the field has no default, `store_true` for a bool
that defaults to False, repeatable for a list and taking several values each time (so the
shell's expansion of an unquoted glob is taken whole), the field's type otherwise (`X | None` takes X).
A field with `flag(..., cli=False)` gets no flag.

In `tokenizer/` because both fit CLIs use it and `trainer/` may import `tokenizer/`, not the other
way round (tests/test_layering.py); standard library only.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Sequence


def flag(default: Any = dataclasses.MISSING, help: str = "", *, cli: bool = True,
         choices: Sequence[str] | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with what its command-line flag needs."""
    metadata = {"help": help, "cli": cli, "choices": tuple(choices) if choices else None}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _flag_type(annotation: Any) -> Any:
    """int for `int` and `int | None`; list for `list[str]`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(kinds) != 1:
            raise TypeError(f"no command-line type for {annotation}")
        return _flag_type(kinds[0])
    return origin or annotation


def add_flags(parser: argparse.ArgumentParser, options: type) -> argparse.ArgumentParser:
    """A `--name` flag for every field of the dataclass `options` (see the module docstring)."""
    hints = typing.get_type_hints(options)
    for field in dataclasses.fields(options):
        meta = field.metadata
        if not meta.get("cli", True):
            continue
        name = "--" + field.name.replace("_", "-")
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        kind = _flag_type(hints[field.name])
        help_text = meta.get("help", "")
        if not required and field.default is not None and field.default is not False and kind is not list:
            help_text = f"{help_text} (default: {field.default})".strip()
        kwargs: dict[str, Any] = {"dest": field.name, "help": help_text or None}
        if kind is bool:
            if field.default is not False:
                raise TypeError(f"{options.__name__}.{field.name}: a bool flag must default to False")
            kwargs["action"] = "store_true"
        elif kind is list:  # `--data a/*.arrow` unquoted: the shell passes every file after the one flag
            kwargs["action"], kwargs["nargs"] = "extend", "+"
        else:
            kwargs["type"] = kind
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if required:
            kwargs["required"] = True
        else:
            kwargs["default"] = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        parser.add_argument(name, **kwargs)
    return parser


def options_from(namespace: argparse.Namespace, options: type) -> Any:
    """The dataclass `options` built from a parsed namespace (fields without a flag keep their default)."""
    values = vars(namespace)
    return options(**{f.name: values[f.name] for f in dataclasses.fields(options) if f.name in values})
