"""``simclr bench NAME [ARGS...]``: run one of the repository's benchmarks by name.

The benchmarks are scripts in ``benchmarks/`` of a source checkout (they read ``../shared`` data
and need the ``bench`` extra), not part of the installed package; this command finds them beside
the ``cli`` package, lists them with the first line of each docstring, and runs one as
``python benchmarks/bench_NAME.py ARGS...`` would, in a child process so that its exit status
and output are the script's own.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def available(folder: Path = BENCHMARKS) -> dict[str, str]:
    """``{name: first docstring line}`` of every ``bench_NAME.py`` in ``folder``."""
    found = {}
    for path in sorted(folder.glob("bench_*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        found[path.stem.removeprefix("bench_")] = (doc.splitlines() or [""])[0]
    return found


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run a benchmark from benchmarks/ (without NAME: list them). Every figure in "
        "the README comes from one of these.",
        add_help=add_help,
    )
    parser.add_argument("name", nargs="?", help="e.g. service, denoise, search_quality")
    parser.add_argument(
        "args", nargs=argparse.REMAINDER, help="passed to the benchmark (try --help, --quick)"
    )
    return parser


def cli_main(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    if not BENCHMARKS.is_dir():
        raise FileNotFoundError(
            f"no benchmarks folder at {BENCHMARKS}: the benchmarks ship with the source "
            "repository, so run this from a checkout (pip install -e .)"
        )
    names = available()
    if args.name is None:
        width = max(map(len, names), default=0)
        for name, summary in names.items():
            print(f"{name:<{width}}  {summary}")
        return 0
    if args.name not in names:
        raise ValueError(f"no benchmark {args.name!r}; choose one of {', '.join(names)}")
    script = BENCHMARKS / f"bench_{args.name}.py"
    return subprocess.run([sys.executable, str(script), *args.args], check=False).returncode
