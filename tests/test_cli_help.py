"""Every command's `--help` names the default of each option that has one, and says what the
command does: a newcomer reads `python -m trainer.generate --help`, not its source, to learn that
`--n` makes one image and `--temperature` is 1.0. Parsers built inside a `main()` are caught at
`parse_args`, so the test reads the parser the command really runs."""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys

import pytest

COMMANDS = ["uvd_pipeline.cli", "trainer.fit", "trainer.demo", "trainer.evaluate", "trainer.generate",
            "trainer.interop", "trainer.integrity", "tokenizer.fit", "tokenizer.evaluate"]


class _Caught(Exception):
    """Raised in place of parsing, carrying the parser a command's `main()` built."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__()
        self.parser = parser


def _parser_of(module_name: str, monkeypatch) -> argparse.ArgumentParser:
    module = importlib.import_module(module_name)

    def catch(self, *args, **kwargs):
        raise _Caught(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    try:
        module.main([])
    except _Caught as caught:
        return caught.parser
    finally:
        monkeypatch.undo()
    raise AssertionError(f"{module_name}.main() returned without parsing its arguments")


def _commands(parser: argparse.ArgumentParser, prog: str):
    """(prog, parser) of the command and of each of its subcommands."""
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prog} {name}")


def _has_default(action: argparse.Action) -> bool:
    default = action.default
    return not (default is None or default is False or default == argparse.SUPPRESS or default == []
                or isinstance(action, argparse._HelpAction))


def _shown(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The option's help as `--help` prints it (`%(default)s` filled in, a formatter's additions)."""
    return parser._get_formatter()._expand_help(action) if action.help else ""


def _names_default(text: str, default) -> bool:
    spellings = {str(default)}
    if isinstance(default, (list, tuple)):
        spellings.add(",".join(map(str, default)))
    return any(re.search(r"\bdefault:? " + re.escape(s) + r"(?![\w.])", text) for s in spellings)


@pytest.mark.parametrize("module_name", COMMANDS)
def test_every_option_with_a_default_names_it_in_its_help(module_name, monkeypatch):
    missing = []
    for prog, parser in _commands(_parser_of(module_name, monkeypatch), module_name):
        for action in parser._actions:
            if _has_default(action) and not _names_default(_shown(parser, action), action.default):
                missing.append(f"{prog} {'/'.join(action.option_strings) or action.dest}: default "
                               f"{action.default!r}, help {_shown(parser, action)!r}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("module_name", COMMANDS)
def test_every_command_says_what_it_does(module_name, monkeypatch):
    """`X --help` and `X SUB --help` open with a line of what the command does."""
    silent = [prog for prog, parser in _commands(_parser_of(module_name, monkeypatch), module_name)
              if not (parser.description or "").strip()]
    assert not silent, f"no description: {silent}"


def test_the_checker_sees_an_option_whose_default_goes_unnamed(monkeypatch):
    parser = argparse.ArgumentParser(description="d")
    named = parser.add_argument("--n", type=int, default=1, help="images (default: %(default)s)")
    unnamed = parser.add_argument("--top-p", type=float, default=1.0, help="nucleus mass, e.g. 0.9")
    near = parser.add_argument("--steps", type=int, default=30, help="steps (default 300)")
    assert _names_default(_shown(parser, named), named.default)
    assert not _names_default(_shown(parser, unnamed), unnamed.default)
    assert not _names_default(_shown(parser, near), near.default)


def test_help_prints_the_defaults_and_exits_0():
    """The real command line, in a fresh interpreter: what a user sees."""
    done = subprocess.run([sys.executable, "-m", "trainer.generate", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stderr == ""
    flat = " ".join(done.stdout.split())
    assert "images to generate (default: 1)" in flat and "(default: center_crop)" in flat
