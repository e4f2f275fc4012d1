"""The user documentation holds to the code: every config field is in `docs/config.md` with its
type, default and allowed values, every YAML example in the README validates, and the README's
cross-references name sections that exist. Fast: no build, no model."""

from __future__ import annotations

import functools
import re
import sys
import typing
from pathlib import Path

import pytest
import yaml
from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from uvd_pipeline import config as C

REPO = Path(__file__).resolve().parent.parent
CONFIG_DOC = REPO / "docs" / "config.md"


def _models() -> dict[str, type[BaseModel]]:
    """The doc's section titles, as its `## ` headings write them, and the model each documents."""
    sections: dict[str, type[BaseModel]] = {
        "top level": C.BuildConfig, "`image`": C.ImageConfig, "`split`": C.SplitConfig,
        "`dedup`": C.DedupConfig, "`tokenizer`": C.TokenizerConfig, "`mixture`": C.MixtureConfig,
        "`beam`": C.BeamConfig, "`beam.dask`": C.DaskConfig, "every source": C.LaionSourceConfig,
    }
    sections.update({f"`type: {name}`": model for name, model in C.SOURCE_MODELS.items()})
    sections.update({f"`labeler: {{name: {name}}}`": model for name, model in C.LABELER_MODELS.items()})
    return sections


def common_source_fields() -> list[str]:
    """The fields every source type has: documented once, under "every source"."""
    names = [set(model.model_fields) for model in C.SOURCE_MODELS.values()]
    return [name for name in C.LaionSourceConfig.model_fields if all(name in n for n in names)]


def documented_fields(model: type[BaseModel], title: str) -> list[str]:
    """The fields the section `title` must list (a source type: those beyond every source's)."""
    if title == "every source":
        return common_source_fields()
    if title.startswith("`type: "):
        return [name for name in model.model_fields if name not in common_source_fields()]
    return list(model.model_fields)


def _number(value: float) -> str:
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return repr(value)


def type_text(annotation: typing.Any) -> str:
    """A field's type as the doc writes it."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = type(None) in typing.get_args(annotation)
    if optional:
        return type_text(args[0]) + " or null"
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{v}`" for v in args)
    if origin is tuple:
        return "list of " + type_text(args[0]).replace("one of ", "")
    if origin is dict:
        return "mapping of text to " + type_text(args[1])
    if origin is typing.Union:  # a tagged union: a source or a labeler spec
        return "source" if set(args) == set(C.SOURCE_MODELS.values()) else "labeler"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return {int: "integer", float: "number", bool: "true/false", str: "text"}[annotation]


def default_text(field: typing.Any) -> str:
    """A field's default as YAML writes it; `required` where there is none."""
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "its fields' defaults"
    text = yaml.safe_dump(_plain(value), default_flow_style=True, width=1000, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def _plain(value: typing.Any) -> typing.Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def bounds_text(field: typing.Any) -> str:
    """The numeric range or least length a field's metadata sets, as the doc writes it."""
    low = high = None
    for item in field.metadata:
        if isinstance(item, Ge):
            low = f">= {_number(item.ge)}"
        elif isinstance(item, Gt):
            low = f"> {_number(item.gt)}"
        elif isinstance(item, Le):
            high = f"<= {_number(item.le)}"
        elif isinstance(item, Lt):
            high = f"< {_number(item.lt)}"
        elif isinstance(item, MinLen) and type_text(field.annotation).startswith("list"):
            low = f"at least {item.min_length} entry"
    return ", ".join(part for part in (low, high) if part)


def doc_tables() -> dict[str, dict[str, list[str]]]:
    """`docs/config.md`'s tables: section title -> field -> its row's cells."""
    tables: dict[str, dict[str, list[str]]] = {}
    title = None
    for line in CONFIG_DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            tables[title] = {}
        elif title and line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            tables[title][cells[0].strip("`")] = cells
    return tables


def expected_row(model: type[BaseModel], name: str, title: str = "") -> tuple[str, str, str]:
    field = model.model_fields[name]
    kind = type_text(field.annotation)
    if title == "every source" and name == "type":  # each source model names its own
        kind = "one of " + ", ".join(f"`{t}`" for t in C.SOURCE_TYPES)
    return kind, default_text(field), bounds_text(field)


def test_every_config_field_is_documented_with_its_type_default_and_range():
    """A user reads `docs/config.md` for what a field takes (configs/sample.yaml points there).
    Each section lists exactly its model's fields; each row gives the type and the default the
    model has, and its text holds the range the model enforces."""
    tables = doc_tables()
    wrong = []
    for title, model in _models().items():
        if title not in tables:
            wrong.append(f"no section '## {title}'")
            continue
        rows = tables[title]
        want = documented_fields(model, title)
        wrong += [f"{title}: `{name}` missing" for name in want if name not in rows]
        wrong += [f"{title}: `{name}` is no field of {model.__name__}" for name in rows if name not in want]
        for name in want:
            if name not in rows:
                continue
            kind, default, bounds = expected_row(model, name, title)
            cells = rows[name]
            if len(cells) != 4:
                wrong.append(f"{title}: `{name}`: a row has 4 cells (field, type, default, meaning)")
                continue
            if cells[1] != kind:
                wrong.append(f"{title}: `{name}` type {cells[1]!r}, the model's is {kind!r}")
            if cells[2].strip("`") != default:
                wrong.append(f"{title}: `{name}` default {cells[2]!r}, the model's is {default!r}")
            if bounds and bounds not in cells[3]:
                wrong.append(f"{title}: `{name}` meaning lacks the range {bounds!r}")
    extra = set(tables) - set(_models())
    wrong += [f"section '## {title}' documents no config model" for title in extra if tables[title]]
    assert not wrong, "\n".join(wrong)


def test_the_doc_checker_sees_a_wrong_default_and_a_missing_field(monkeypatch, tmp_path):
    """The check above is not vacuous: a doc with one default changed and one row gone fails it."""
    text = CONFIG_DOC.read_text(encoding="utf-8")
    broken = text.replace("| `val_fraction` | number | `0.05` |", "| `val_fraction` | number | `0.01` |", 1)
    broken = re.sub(r"^\| `hamming_threshold` .*\n", "", broken, count=1, flags=re.M)
    assert broken != text
    (tmp_path / "config.md").write_text(broken, encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "CONFIG_DOC", tmp_path / "config.md")
    with pytest.raises(AssertionError) as info:
        test_every_config_field_is_documented_with_its_type_default_and_range()
    assert "`val_fraction` default '`0.01`'" in str(info.value)
    assert "`dedup`: `hamming_threshold` missing" in str(info.value)


def _yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.S)


def test_the_readmes_yaml_examples_validate():
    """Every ```yaml block of the README is a config or a part of one that the models accept."""
    base = {"output": "out", "sources": [{"name": "web", "type": "laion", "path": "x"}]}
    blocks = _yaml_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 3
    for block in blocks:
        data = {**base, **yaml.safe_load(block)}
        if "dask" in data.get("beam", {}):
            data["beam"] = {"runner": "dask", **data["beam"]}
        C.parse_config(data)


def test_readme_references_name_sections_that_exist():
    """`see "X"` and `README "X"` (in the README, the docs and the sample config) name a heading."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    headings = {line.lstrip("#").strip() for line in readme.splitlines() if re.match(r"#{2,4} ", line)}
    texts = {path: path.read_text(encoding="utf-8") for path in
             [REPO / "README.md", REPO / "configs" / "sample.yaml", *sorted((REPO / "docs").glob("*.md"))]}
    missing = []
    for path, text in texts.items():
        flat = re.sub(r"\s*\n\s*#?\s*", " ", text)
        for name in re.findall(r"(?:see|README) \"([^\"]+)\"", flat):
            if name not in headings:
                missing.append(f"{path.name}: \"{name}\"")
    assert not missing, missing


def test_the_cli_description_names_every_subcommand():
    """`python -m uvd_pipeline --help` opens with the list of what it does; it named 4 of its 7
    subcommands (no check, export-jsonl, import-jsonl)."""
    import argparse

    from uvd_pipeline import cli

    p = cli.parser()
    [sub] = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [name for name in sub.choices if name not in p.description]
    assert not missing, missing


REJECTS_DOC = REPO / "docs" / "rejects.md"
# calls that make a reject, and the position of their reason argument
REASON_ARGUMENT = {"Reject": 4, "_reject": 2, "reject": 1, "Rejected": 0, "DecodeError": 0, "MapError": 0,
                   "VideoError": 0, "AnnotationError": 0, "BudgetExceeded": 0, "PathProblem": 0, "_twin": 2,
                   "shard_reject": 3, "TooLarge": 3, "too_large": 6}  # hf_parquet's, a reader's Reject's reason
# reasons made at run time, as docs/rejects.md writes them
DYNAMIC_REASONS = {"no_<task>_annotations", "unnumbered_frame", "unnumbered_annotation", "annotation_<reason>",
                   "failed_to_download", "failed_to_resize", "failed",  # img2dataset's statuses
                   "failed_to_subsample"}  # and video2dataset's


def emitted_reasons() -> dict[str, str]:
    """Every reject reason the build's code spells out (a literal or a module constant as the
    reason argument of a call that makes a reject), with a file that emits it."""
    return dict(_emitted_reasons())


@functools.lru_cache(maxsize=1)
def _emitted_reasons() -> dict[str, str]:
    """`emitted_reasons`, scanned once a session: the code does not change within one, and the
    scan (parsing every module) was seconds a call; the checker's own test changes only the doc."""
    import ast

    trees, constants = _build_code()
    found: dict[str, str] = {}
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):  # an exception class naming its reason: `reason = OUTSIDE_ROOT`
                for item in node.body:
                    if (isinstance(item, ast.Assign) and [getattr(t, "id", "") for t in item.targets] == ["reason"]
                            and isinstance(item.value, ast.Name) and item.value.id in constants):
                        found.setdefault(constants[item.value.id], path.relative_to(REPO).as_posix())
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            position = REASON_ARGUMENT.get(name)
            argument = node.args[position] if position is not None and len(node.args) > position else None
            argument = argument or {k.arg: k.value for k in node.keywords}.get("reason")
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                found.setdefault(argument.value, path.relative_to(REPO).as_posix())
            elif isinstance(argument, ast.Name) and argument.id in constants:
                found.setdefault(constants[argument.id], path.relative_to(REPO).as_posix())
    return found


@functools.lru_cache(maxsize=1)
def _build_code() -> tuple[dict, dict[str, str]]:
    """The build's modules parsed (path -> tree), and their upper-case string constants by name."""
    import ast

    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for folder in ("sources", "transforms", "uvd_pipeline")
             for path in sorted((REPO / folder).rglob("*.py")) if "sample" not in path.parts}
    constants = {target.id: node.value.value for tree in trees.values() for node in ast.walk(tree)
                 if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                 and isinstance(node.value.value, str) for target in node.targets
                 if isinstance(target, ast.Name) and target.id.isupper()}
    return trees, constants


@functools.lru_cache(maxsize=1)
def emitted_stages() -> dict[str, str]:
    """Every reject stage the build's code spells out (a literal or a module constant as the
    `stage` argument of `Reject` or of a function making one from its `stage` parameter: its own
    module's def of that name first), with a file that writes it."""
    import ast
    import dataclasses

    from sources.records import Reject

    trees, constants = _build_code()

    def makes_reject(definition) -> bool:
        return any(isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Reject" for n in ast.walk(definition))

    def parameters(tree) -> dict[str, list[str]]:
        """The parameters of each function making a `Reject` (a step's metrics `add(stage)` makes none)."""
        defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and makes_reject(n)]
        return {d.name: [a.arg for a in d.args.args if a.arg != "self"] for d in defs}

    staged = {name: params for tree in trees.values() for name, params in parameters(tree).items() if "stage" in params}
    found: dict[str, str] = {}
    for path, tree in trees.items():
        local = parameters(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            params = [f.name for f in dataclasses.fields(Reject)] if name == "Reject" else \
                local.get(name, staged.get(name, []))
            if "stage" not in params:
                continue
            at = params.index("stage")
            argument = node.args[at] if len(node.args) > at else {k.arg: k.value for k in node.keywords}.get("stage")
            value = argument.value if isinstance(argument, ast.Constant) else \
                constants.get(argument.id) if isinstance(argument, ast.Name) else None
            if isinstance(value, str):
                found.setdefault(value, path.relative_to(REPO).as_posix())
    return found


def documented_stages() -> set[str]:
    """The stages docs/rejects.md lists in its sentence "The stage is where the item stopped: ..."."""
    text = " ".join(REJECTS_DOC.read_text(encoding="utf-8").split())
    listed = text.split("The stage is where the item stopped:", 1)[1].split(".", 1)[0]
    return set(re.findall(r"`([^`]+)`", re.sub(r"\([^)]*\)", "", listed)))  # not what a stage's note names


def test_every_reject_stage_the_code_writes_is_documented_and_no_other():
    """Videos' planning rejects were written at stage `plan`, which docs/rejects.md did not list."""
    emitted, documented = emitted_stages(), documented_stages()
    assert {"read", "decode", "dedup"} <= set(emitted)  # the scan finds stages, constants too
    undocumented = {stage: where for stage, where in emitted.items() if stage not in documented}
    assert not undocumented, f"written but not in docs/rejects.md: {undocumented}"
    assert not documented - set(emitted), f"in docs/rejects.md but written nowhere: {documented - set(emitted)}"


def test_the_stage_checker_sees_a_missing_stage(monkeypatch, tmp_path):
    text = REJECTS_DOC.read_text(encoding="utf-8")
    broken = re.sub(r"`plan` \([^)]*\), ", "", text, count=1)
    assert broken != text
    (tmp_path / "rejects.md").write_text(broken, encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "REJECTS_DOC", tmp_path / "rejects.md")
    with pytest.raises(AssertionError, match="'plan'"):
        test_every_reject_stage_the_code_writes_is_documented_and_no_other()


def documented_reasons() -> set[str]:
    """The reasons in the first cell of each table row of docs/rejects.md."""
    return {match for line in REJECTS_DOC.read_text(encoding="utf-8").splitlines() if line.startswith("| `")
            for match in re.findall(r"`([^`]+)`", line.split("|")[1])}


def test_every_reject_reason_the_code_emits_is_documented_and_no_other():
    """docs/rejects.md lists the reasons a build's rejects carry: every one the code spells out,
    and none it cannot emit (the README once named `class_remainder`, which no code wrote)."""
    emitted, documented = emitted_reasons(), documented_reasons()
    assert len(emitted) > 40  # the scan finds the reasons, not nothing
    undocumented = {reason: where for reason, where in emitted.items() if reason not in documented}
    assert not undocumented, f"emitted but not in docs/rejects.md: {undocumented}"
    unknown = documented - set(emitted) - DYNAMIC_REASONS
    assert not unknown, f"in docs/rejects.md but emitted nowhere: {sorted(unknown)}"


def test_the_reason_checker_sees_a_reason_no_code_emits_and_a_missing_one(monkeypatch, tmp_path):
    text = REJECTS_DOC.read_text(encoding="utf-8")
    broken = text.replace("| `remainder_dropped` |", "| `class_remainder` |", 1)
    assert broken != text
    (tmp_path / "rejects.md").write_text(broken, encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "REJECTS_DOC", tmp_path / "rejects.md")
    with pytest.raises(AssertionError) as info:
        test_every_reject_reason_the_code_emits_is_documented_and_no_other()
    assert "remainder_dropped" in str(info.value)  # emitted, now undocumented
