"""Dependencies point one way: serving -> index; training never imports serving; index knows no models."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "index": {"torch", "torchvision", "training", "serving", "onnxruntime", "grpc"},
    "serving": {"torch", "torchvision", "training"},
    "bundle": {"torch", "torchvision", "training", "serving", "index"},
    "training": {"serving"},
}


def _imports(package: str) -> set[tuple[str, str]]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            found.update((str(path.relative_to(ROOT)), name.split(".")[0]) for name in names)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_forbidden_imports_in_source(package: str) -> None:
    bad = sorted((path, name) for path, name in _imports(package) if name in FORBIDDEN[package])
    assert not bad, f"{package} must not import {FORBIDDEN[package]}: {bad}"


@pytest.mark.parametrize("package", ["index", "serving", "bundle"])
def test_importing_package_does_not_load_torch(package: str) -> None:
    code = (
        f"import sys, importlib, pkgutil, {package}\n"
        f"for m in pkgutil.walk_packages({package}.__path__, '{package}.'):\n"
        "    importlib.import_module(m.name)\n"
        "print('torch' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
