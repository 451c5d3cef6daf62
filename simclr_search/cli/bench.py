"""``simclr bench NAME [ARGS...]``: run one of the repository's benchmarks by name.

The benchmarks are scripts in ``benchmarks/`` of a source checkout (they read ``../shared`` data
and need the ``bench`` extra), not part of the installed package; this command finds them beside
the ``cli`` package, lists them with the first line of each docstring, and runs one as
``python benchmarks/bench_NAME.py ARGS...`` would, in a child process so that its exit status
and output are the script's own.

``--record`` also keeps the run: the benchmark's last line (one JSON object, every benchmark ends
with one) goes to ``benchmarks/results/NAME.json`` (``NAME--LABEL.json`` with ``--label``) with the
command, the commit, the date and the machine, and ``scripts/gen_docs.py`` writes
``docs/benchmarks.md`` and the README's figures from those files, so no figure is copied by hand.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import tokenize
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
RESULTS = BENCHMARKS / "results"


def available(folder: Path = BENCHMARKS) -> dict[str, str]:
    """``{name: first docstring line}`` of every ``bench_NAME.py`` in ``folder``."""
    found = {}
    for path in sorted(folder.glob("bench_*.py")):
        doc = module_docstring(path)
        found[path.stem.removeprefix("bench_")] = (doc.splitlines() or [""])[0]
    return found


def module_docstring(path: Path) -> str:
    """The docstring of the module at ``path`` ("" without one), read from its tokens.

    Not ``ast.parse``: CPython 3.11 keeps the AST builder's recursion depth in per-interpreter
    state that its threads share, and another thread building an AST meanwhile (one of Ray's
    threads left in the process, say) makes ``ast.parse`` raise a spurious ``SystemError``
    (python/cpython#106905).
    """
    with tokenize.open(path) as source:
        for token in tokenize.generate_tokens(source.readline):
            if token.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE):
                continue
            if token.type != tokenize.STRING:
                return ""
            text = token.string
            body = text.lstrip("rRuUbBfF")
            quote = body[:3] if body[:3] in ('"""', "'''") else body[:1]
            return inspect.cleandoc(body[len(quote) : -len(quote)])
    return ""


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run a benchmark from benchmarks/ (without NAME: list them). Every figure in "
        "the README comes from one of these.",
        add_help=add_help,
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="keep the run's JSON line in benchmarks/results/ (docs/benchmarks.md is made from it)",
    )
    parser.add_argument("--label", default="", help="with --record: a variant's name, NAME--LABEL")
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
    command = [sys.executable, str(script), *args.args]
    if not args.record:
        return subprocess.run(command, check=False).returncode
    return record(args.name, args.label, command, args.args)


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}


def _commit() -> str:
    root = BENCHMARKS.parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{rev}+changes" if dirty else rev


def record(name: str, label: str, command: list[str], bench_args: list[str]) -> int:
    """Run ``command``, echoing its output, and keep its last line as the benchmark's result."""
    last = ""
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            if line.strip():
                last = line
    if proc.returncode != 0:
        return proc.returncode
    try:
        result = json.loads(last)
    except ValueError as exc:
        raise ValueError(f"benchmark {name} did not end with a JSON line: {last[:200]!r}") from exc
    shown = " ".join(["simclr bench", name, *map(shlex.quote, bench_args)])
    entry = {
        "benchmark": name,
        "label": label,
        "command": shown,
        "commit": _commit(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": machine(),
        "result": result,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}{'--' + label if label else ''}.json"
    path.write_text(json.dumps(entry, indent=1, sort_keys=True) + "\n")
    print(f"recorded {path}", file=sys.stderr)
    return 0
