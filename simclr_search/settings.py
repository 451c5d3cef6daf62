"""One settings definition per command: a dataclass whose fields make the flags, the environment
variables and the defaults.

A field declared with :func:`setting` carries its flag's help (and, where needed, a parser, choices
or a group); :func:`add_arguments` turns the dataclass into argparse flags (``--max-batch`` for
``max_batch``), each defaulting to ``SIMCLR_<NAME>`` from the environment where the command takes
environment variables, else to the field's default; :func:`from_args` builds the dataclass back from
the parsed flags. So a default is written once, in the dataclass, and a library caller constructs
the same typed object the command line does.

    @dataclass
    class ServerOptions:
        address: str = setting("127.0.0.1:50051", "host:port to listen on")
        grace_seconds: float = setting(30.0, "seconds in-flight calls get on SIGTERM")

    add_arguments(parser, ServerOptions, env_prefix="SIMCLR_")
    options = from_args(ServerOptions, parser.parse_args())
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

_KEY = "simclr_setting"


@dataclasses.dataclass(frozen=True)
class _Meta:
    help: str
    parse: Callable[[str], Any] | None
    choices: tuple[Any, ...] | None
    group: str
    env: str | None  # a name instead of the field's, "" for none
    flag: bool
    metavar: str | None
    name: str | None  # the flag's name (without --) if not the field's


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    parse: Callable[[str], Any] | None = None,
    choices: tuple[Any, ...] | list[Any] | None = None,
    group: str = "",
    env: str | None = None,
    flag: bool = True,
    metavar: str | None = None,
    name: str | None = None,
) -> Any:
    """A dataclass field that is also a flag.

    Args:
        default: the default; a list, dict or set is copied per instance.
        help: what the flag does, for ``--help``.
        parse: turns the flag's (or the variable's) text into the value; default: the field's type.
        choices: the values allowed.
        group: the ``--help`` section it is listed under.
        env: the environment variable's name after the prefix, if not the field's name upper-cased;
            ``""``: this setting has none.
        flag: ``False`` for a field that only library callers set (no flag, no variable).
        metavar: the value's name in ``--help``.
        name: the flag (``collection`` for ``--collection``) if not the field's name; the
            environment variable follows it unless ``env`` names another.
    """
    meta = {
        _KEY: _Meta(
            help, parse, tuple(choices) if choices else None, group, env, flag, metavar, name
        )
    }
    if isinstance(default, list | dict | set):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def parse_bool(text: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off``, any case (environment variables, config files)."""
    lowered = str(text).strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parser_for(kind: Any) -> tuple[Callable[[str], Any], int | None]:
    """The text -> value function of a field type, and ``nargs`` for fixed-length tuples."""
    origin = typing.get_origin(kind)
    if origin is tuple:
        args = typing.get_args(kind)
        return (args[0] if args else str), len(args) if args and args[-1] is not ... else "+"
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(kind) if a is not type(None)]
        return _parser_for(members[0])
    if kind is bool:
        return parse_bool, None
    if kind in (int, float, str, Path):
        return kind, None
    return str, None


def _fields(cls: type) -> list[tuple[dataclasses.Field, _Meta, Any]]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_KEY)
        if meta is not None and meta.flag:
            out.append((f, meta, hints[f.name]))
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _flag_name(f: dataclasses.Field, meta: _Meta) -> str:
    return (meta.name or f.name).replace("_", "-")


def env_name(f: dataclasses.Field, meta: _Meta, prefix: str) -> str:
    return prefix + (meta.env or _flag_name(f, meta).replace("-", "_").upper())


def add_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    env_prefix: str | None = None,
    environ: Mapping[str, str] | None = None,
    skip: tuple[str, ...] = (),
) -> None:
    """Add a flag for every :func:`setting` of ``cls`` (but ``skip``).

    With ``env_prefix`` (``"SIMCLR_"``), a set ``SIMCLR_<NAME>`` replaces the default and is named in
    the help; a value that does not parse is a usage error naming the variable.
    A ``bool`` becomes ``--name`` / ``--no-name``. Fields without a default are required flags.
    """
    environ = os.environ if environ is None else environ
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f, meta, kind in _fields(cls):
        if f.name in skip:
            continue
        target = parser
        if meta.group:
            if meta.group not in groups:
                groups[meta.group] = parser.add_argument_group(meta.group)
            target = groups[meta.group]
        convert, nargs = _parser_for(kind)
        if meta.parse is not None:  # it parses the whole value, a tuple's included
            convert, nargs = meta.parse, None
        default = _default(f)
        help_text = meta.help
        variable = None
        if env_prefix is not None and meta.env != "":
            variable = env_name(f, meta, env_prefix)
            help_text = f"{help_text} ({variable})" if help_text else variable
            if variable in environ:
                try:
                    default = convert(environ[variable])
                except (ValueError, argparse.ArgumentTypeError) as exc:
                    parser.error(f"environment variable {variable}={environ[variable]!r}: {exc}")
        if default is not None and help_text and "%(default)" not in help_text:
            shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
            if shown != "":
                help_text += f" [default: {shown}]".replace("%", "%%")
        flag = "--" + _flag_name(f, meta)
        kwargs: dict[str, Any] = {"dest": f.name, "help": help_text}
        if meta.metavar or not meta.choices:
            kwargs["metavar"] = meta.metavar or _flag_name(f, meta).replace("-", "_").upper()
        if kind is bool and meta.parse is None:
            kwargs.pop("metavar")
            target.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, **kwargs
            )
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        target.add_argument(
            flag,
            type=convert,
            nargs=nargs,
            choices=meta.choices,
            default=default,
            required=required and default is None,
            **kwargs,
        )


def from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """``cls`` built from the flags :func:`add_arguments` made (and ``overrides``); fields without a
    flag keep their defaults."""
    values: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f, _, _ in _fields(cls):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            if typing.get_origin(hints[f.name]) is tuple and isinstance(value, list):
                value = tuple(value)
            values[f.name] = value
    values.update(overrides)
    return cls(**values)


def explicit_settings(cls: type, argv: list[str]) -> set[str]:
    """The settings of ``cls`` that ``argv`` gives explicitly (``--lr 1``, ``--lr=1``, ``--no-compile``):
    what a config file may not override."""
    by_flag = {}
    for f, meta, _ in _fields(cls):
        name = _flag_name(f, meta)
        by_flag[name] = by_flag[f"no-{name}"] = f.name
    return {by_flag[a[2:].split("=")[0]] for a in argv if a[2:].split("=")[0] in by_flag}


def field_names(cls: type) -> set[str]:
    """Names of the settings of ``cls`` that have flags."""
    return {f.name for f, _, _ in _fields(cls)}
