"""Write the generated parts of the docs: ``docs/settings.md`` (every command's flags, variables and
defaults, from the parsers themselves), ``docs/benchmarks.md`` and the README's figures (from the
recorded benchmark runs in ``benchmarks/results/``, through ``benchmarks/figures.py``).

    .venv/bin/python scripts/gen_docs.py           # rewrite them
    .venv/bin/python scripts/gen_docs.py --check   # exit 1 if any is stale (tests/test_docs.py)
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.figures import FIGURES, Figure  # noqa: E402
from simclr_search.cli.main import COMMANDS  # noqa: E402

README = ROOT / "README.md"
BEGIN, END = "<!-- figures: begin (scripts/gen_docs.py) -->", "<!-- figures: end -->"
RESULTS = ROOT / "benchmarks" / "results"


def _checkout_of(module: str) -> Path:
    """The folder holding ``pyproject.toml`` above a command's module (the installed checkout)."""
    path = Path(importlib.import_module(module).__file__).resolve()
    return next((p for p in path.parents if (p / "pyproject.toml").exists()), ROOT)


def _portable(default: object, checkout: Path) -> object:
    """A default path inside or beside the checkout, written relative to the checkout's root, so the
    page reads the same in every clone (CI checks out elsewhere than a developer does)."""
    text = str(default)
    for base, prefix in ((checkout, ""), (checkout.parent, "../")):
        if text == str(base) or text.startswith(str(base) + os.sep):
            rel = os.path.relpath(text, base)
            return prefix + rel if rel != "." else prefix or "."
    return default


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _parser(name: str) -> argparse.ArgumentParser:
    command = COMMANDS[name]
    module = importlib.import_module(command.parser_module or command.module)
    parser = getattr(module, command.parser)(add_help=False)
    parser.prog = f"simclr {name}"
    return parser


def settings_markdown() -> str:
    """One table per command: flag, environment variable, default, what it does."""
    lines = [
        "# Settings",
        "",
        "Every flag of every command, made from the command's settings dataclass "
        "(`simclr_search/settings.py`); written by `scripts/gen_docs.py`, do not edit. Where a "
        "command takes environment variables, a set `SIMCLR_<NAME>` replaces the default and a "
        "flag on the command line wins over both. A `--x` switch also has `--no-x`.",
        "",
    ]
    for name, command in COMMANDS.items():
        lines += [f"## simclr {name}", "", command.summary + ".", ""]
        rows = []
        checkout = _checkout_of(command.parser_module or command.module)
        for action in _parser(name)._actions:
            if not action.option_strings and action.dest in {"help"}:
                continue
            flag = ", ".join(s for s in action.option_strings if not s.startswith("--no-"))
            flag = flag or action.dest.upper()
            help_text = (action.help or "").split(" [default: ")[0]
            env = ""
            if "(SIMCLR_" in help_text:
                help_text, _, rest = help_text.rpartition(" (SIMCLR_")
                env = "SIMCLR_" + rest.rstrip(")")
            default = action.default
            if default is None or default == "" or default is argparse.SUPPRESS:
                default = ""
            elif isinstance(default, list | tuple):
                default = " ".join(map(str, default))
            default = _portable(default, checkout)
            rows.append(
                f"| `{flag}` | {f'`{env}`' if env else ''} | {_cell(default)} | {_cell(help_text)} |"
            )
        if rows:
            lines += ["| flag | variable | default | what it does |", "| --- | --- | --- | --- |"]
            lines += rows
        lines.append("")
    return "\n".join(lines)


def load_results() -> dict[str, dict]:
    """``{file stem: recorded run}`` of every ``benchmarks/results/*.json``."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}


def _row(figure: Figure, runs: dict[str, dict]) -> str | None:
    run = runs.get(figure.run)
    if run is None:
        return None
    return (
        f"| {figure.label} | {figure.value(run['result'])} | `{run['command']}` | "
        f"{run['commit']}, {run['date']} |"
    )


def benchmarks_markdown(runs: dict[str, dict]) -> str:
    machines = sorted(
        {f"{r['machine']['cpu']}, {r['machine']['cores']} cores" for r in runs.values()}
    )
    lines = [
        "# Benchmarks",
        "",
        "One row per figure, each from the last recorded run of the benchmark that printed it "
        "(`simclr bench --record NAME ARGS` keeps a run in `benchmarks/results/`; "
        "`scripts/gen_docs.py` writes this page from those files, do not edit). "
        f"Measured on: {'; '.join(machines) or 'nothing recorded yet'}. What was tried on the way "
        "to the defaults, with older figures: [experiments.md](experiments.md).",
        "",
    ]
    for section in dict.fromkeys(f.section for f in FIGURES):
        rows = [_row(f, runs) for f in FIGURES if f.section == section]
        rows = [r for r in rows if r]
        if not rows:
            continue
        lines += [f"## {section}", "", "| figure | value | command | commit, date |"]
        lines += ["| --- | --- | --- | --- |", *rows, ""]
    missing = sorted({f.run for f in FIGURES} - set(runs))
    if missing:
        lines += ["Not recorded yet: " + ", ".join(f"`{m}`" for m in missing) + ".", ""]
    return "\n".join(lines)


def readme_block(runs: dict[str, dict]) -> str:
    lines = [BEGIN, "| figure | value |", "| --- | --- |"]
    for figure in FIGURES:
        if figure.readme and figure.run in runs:
            lines.append(f"| {figure.label} | {figure.value(runs[figure.run]['result'])} |")
    lines.append(END)
    return "\n".join(lines)


def readme_with_figures(text: str, runs: dict[str, dict]) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + readme_block(runs) + tail


def expected() -> dict[Path, str]:
    runs = load_results()
    return {
        ROOT / "docs" / "settings.md": settings_markdown(),
        ROOT / "docs" / "benchmarks.md": benchmarks_markdown(runs),
        README: readme_with_figures(README.read_text(), runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args()
    for key in [k for k in os.environ if k.startswith("SIMCLR_")]:
        del os.environ[key]  # defaults, not this shell's settings
    stale = []
    for path, text in expected().items():
        if not path.exists() or path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.write_text(text)
    if args.check and stale:
        print("stale: " + ", ".join(str(p.relative_to(ROOT)) for p in stale), file=sys.stderr)
        print("run: .venv/bin/python scripts/gen_docs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
