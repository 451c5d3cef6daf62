"""``simclr_search.settings``: one dataclass makes a command's flags, environment variables and
defaults; the commands' own settings all have help and parse back to what they were."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from simclr_search.settings import add_arguments, explicit_settings, from_args, setting


@dataclass
class Example:
    source: str = setting(help="required: no default")
    size: int = setting(32, "a number")
    ratio: float = setting(0.5, "a fraction", group="tuning")
    fast: bool = setting(False, "a switch")
    folder: Path = setting(Path("out"), "a path")
    mean: tuple[float, float, float] = setting((0.1, 0.2, 0.3), "three numbers")
    tags: list[str] = setting(["a"], "a list default, copied per instance", flag=False)
    collection: str = setting("images", "renamed flag", name="bucket")


def _parse(argv: list[str], environ: dict[str, str] | None = None, prefix: str | None = None):
    parser = argparse.ArgumentParser()
    add_arguments(parser, Example, prefix, environ or {})
    return from_args(Example, parser.parse_args(argv))


def test_flags_defaults_and_types() -> None:
    got = _parse(["--source", "x", "--size", "7", "--fast", "--mean", "1", "2", "3"])
    assert got == Example("x", 7, 0.5, True, Path("out"), (1.0, 2.0, 3.0), ["a"], "images")
    assert _parse(["--source", "x", "--no-fast", "--bucket", "b"]).collection == "b"
    with pytest.raises(SystemExit):
        _parse([])  # --source is required
    assert Example("s").tags is not Example("s").tags


def test_environment_replaces_defaults_and_flags_win() -> None:
    env = {"SIMCLR_SIZE": "9", "SIMCLR_FAST": "yes", "SIMCLR_BUCKET": "e", "SIMCLR_SOURCE": "s"}
    got = _parse([], env, "SIMCLR_")
    assert (got.size, got.fast, got.collection, got.source) == (9, True, "e", "s")
    assert _parse(["--size", "3"], env, "SIMCLR_").size == 3
    assert _parse(["--source", "x"], env).size == 32  # no prefix: the command takes no variables


def test_a_bad_environment_value_is_a_usage_error_naming_the_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        _parse(["--source", "x"], {"SIMCLR_SIZE": "many"}, "SIMCLR_")
    assert "SIMCLR_SIZE='many'" in capsys.readouterr().err


def test_explicit_settings_sees_flags_as_given() -> None:
    argv = ["--size=4", "--no-fast", "--bucket", "b", "positional", "--unknown"]
    assert explicit_settings(Example, argv) == {"size", "fast", "collection"}


COMMANDS = [
    "simclr_search.serving.server.settings:get_args_parser",
    "simclr_search.training.train_args:get_args_parser",
    "simclr_search.training.denoiser_train:get_args_parser",
    "simclr_search.training.decoder_train:get_args_parser",
    "simclr_search.training.export:get_args_parser",
    "simclr_search.training.knn_eval:get_args_parser",
    "simclr_search.training.linear_probe:get_args_parser",
    "simclr_search.serving.jobs.index_command:index_parser",
    "simclr_search.serving.client.commands:search_parser",
    "simclr_search.serving.client.commands:embed_parser",
    "simclr_search.serving.client.commands:denoise_parser",
]


@pytest.mark.parametrize("where", COMMANDS)
def test_every_flag_of_every_command_has_help(where: str) -> None:
    import importlib

    module, name = where.split(":")
    parser = getattr(importlib.import_module(module), name)()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help"


def test_settings_without_a_flag_keep_their_defaults() -> None:
    from simclr_search.serving.core.config import ServiceConfig
    from simclr_search.serving.server.settings import config_from_args, get_args_parser

    config, _ = config_from_args(get_args_parser().parse_args([]))
    defaults = ServiceConfig()
    for field in dataclasses.fields(ServiceConfig):
        assert getattr(config, field.name) == getattr(defaults, field.name), field.name
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(["--encoder-streams", "2"])  # retired: lanes do its job
