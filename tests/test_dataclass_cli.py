"""The fit CLIs are generated from their options dataclasses: a flag per field, with its type,
default and help, so the command line and a stored run's options cannot disagree."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

import tokenizer.fit as tokenizer_fit
import trainer.fit as trainer_fit
from tokenizer.dataclass_cli import add_flags, flag, options_from


@pytest.mark.parametrize("module", [tokenizer_fit, trainer_fit], ids=["tokenizer", "trainer"])
def test_every_field_is_a_flag_with_the_fields_default(module):
    parser = module._parser()
    flags = {action.dest: action for action in parser._actions}
    for field in dataclasses.fields(module.FitOptions):
        if not field.metadata.get("cli", True):
            assert field.name not in flags
            continue
        assert "--" + field.name.replace("_", "-") in flags[field.name].option_strings
        if field.default is not dataclasses.MISSING:
            assert flags[field.name].default == field.default, field.name
    assert module.parse_args(["--data", "a", "--out", "o"]) == module.FitOptions(data=["a"], out="o")


def test_flags_parse_to_the_fields_types():
    options = trainer_fit.parse_args(["--data", "a", "--data", "b:2", "--out", "o", "--lr", "0.5", "--stop-at", "7",
                                      "--split", "all", "--compile", "--mode", "stream"])
    assert options.data == ["a", "b:2"] and options.lr == 0.5 and options.stop_at == 7
    assert options.split == "all" and options.compile is True and options.mode == "stream"
    options = tokenizer_fit.parse_args(["--data", "x", "--out", "o", "--crop", "128", "--disc-lr", "1e-5"])
    assert options.crop == 128 and options.disc_lr == 1e-5 and options.device is None


def test_required_fields_choices_and_defaults_in_help(capsys):
    with pytest.raises(SystemExit):
        trainer_fit.parse_args(["--out", "o"])
    assert "--data" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        trainer_fit.parse_args(["--data", "a", "--out", "o", "--dtype", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
    text = trainer_fit._parser().format_help()
    assert "(default: 4096)" in text and "(default: 0)" in text  # a zero default is shown too


def test_a_bool_flag_defaulting_to_true_is_refused():
    """`store_true` could never turn such a field off: say so when the CLI is made, not at use."""
    import argparse

    @dataclass
    class Options:
        fast: bool = flag(True, "go fast")

    with pytest.raises(TypeError, match="must default to False"):
        add_flags(argparse.ArgumentParser(), Options)


def test_fields_without_a_flag_keep_their_default():
    import argparse

    @dataclass
    class Options:
        name: str = flag(help="a name")
        extra: dict = flag(default_factory=dict, cli=False)

    parsed = add_flags(argparse.ArgumentParser(), Options).parse_args(["--name", "n"])
    assert options_from(parsed, Options) == Options(name="n", extra={})
