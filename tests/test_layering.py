"""Dependencies point one way: serving -> index; training never imports serving; index knows no
models; inside serving, the transport-free core knows no gRPC and the client knows no server."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "simclr_search"
# folder -> what its modules must not import: a third-party top-level name, or one of our
# subpackages as a dotted path below simclr_search ("serving", "serving.server", ...).
FORBIDDEN = {
    "index": {"torch", "torchvision", "training", "serving", "onnxruntime", "grpc", "bundle"},
    "serving": {"torch", "torchvision", "training"},
    "serving/core": {
        "grpc",
        "aiohttp",
        "serving.server",
        "serving.http",
        "serving.client",
        "serving.jobs",
    },
    "serving/http": {"serving.jobs", "serving.client"},
    "serving/client": {"serving.core", "serving.server", "serving.jobs", "index", "onnxruntime"},
    "serving/server": {"serving.jobs", "aiohttp"},
    "bundle": {"torch", "torchvision", "training", "serving", "index"},
    "training": {"serving"},
}
TOP_FOLDERS = ("training", "serving", "index", "bundle", "protos", "cli")


def _parse(path: Path) -> ast.Module:
    # CPython 3.11's AST builder counts its recursion in state its threads share: a thread left
    # by an earlier test (Ray's) can make one parse raise a spurious SystemError
    # (python/cpython#106905), so a parse that does so is tried again.
    for attempt in range(3):
        try:
            return ast.parse(path.read_text(), filename=str(path))
        except SystemError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _imported_names(path: Path) -> set[str]:
    tree = _parse(path)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _forbidden_hit(name: str, banned: set[str]) -> str | None:
    if name.startswith(PACKAGE + "."):
        inner = name[len(PACKAGE) + 1 :]
        for ban in banned:
            if inner == ban or inner.startswith(ban + "."):
                return ban
        return None
    top = name.split(".")[0]
    return top if top in banned else None


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_forbidden_imports_in_source(folder: str) -> None:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in _imported_names(path):
            hit = _forbidden_hit(name, FORBIDDEN[folder])
            if hit:
                bad.append((str(path.relative_to(ROOT)), name))
    assert not bad, f"{folder} must not import {sorted(FORBIDDEN[folder])}: {sorted(set(bad))}"


def test_code_imports_our_folders_only_through_the_package_name() -> None:
    """``import index`` would work from a checkout and fail once installed (only ``simclr_search``
    is installed), so no file may import a top-level folder by its bare name."""
    bad = []
    for folder in (*TOP_FOLDERS, "simclr_search", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for name in _imported_names(path):
                if name.split(".")[0] in TOP_FOLDERS:
                    bad.append((str(path.relative_to(ROOT)), name))
    assert not bad, f"import these as simclr_search.<folder>: {sorted(set(bad))}"


@pytest.mark.parametrize("package", ["index", "serving", "bundle"])
def test_importing_package_does_not_load_torch(package: str) -> None:
    code = (
        f"import sys, importlib, pkgutil, {PACKAGE}.{package} as p\n"
        f"for m in pkgutil.walk_packages(p.__path__, '{PACKAGE}.{package}.'):\n"
        "    importlib.import_module(m.name)\n"
        "print('torch' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
