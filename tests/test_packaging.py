"""The distribution installs one top-level name, ``simclr_search``, holding every source folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _source_packages() -> set[str]:
    """Every folder with an ``__init__.py`` under a mapped folder, as its installed dotted name."""
    found = set()
    mapping = {"simclr_search": "simclr_search", **PYPROJECT["package-dir"]}
    for name, folder in mapping.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            relative = init.parent.relative_to(base).parts
            found.add(".".join((name, *relative)))
    return found


def test_every_source_package_is_listed() -> None:
    assert _source_packages() == set(PYPROJECT["packages"])


@pytest.mark.slow
def test_the_wheel_holds_only_simclr_search(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy: building in place would leave build/ in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in {"simclr_search", *PYPROJECT["package-dir"].values()}:
        shutil.copytree(
            ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    build = ["-w", str(tmp_path), str(source)]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", *build],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("simclr_search-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"simclr_search"}
    for needed in (
        "simclr_search/index/collection.py",
        "simclr_search/serving/server/app.py",
        "simclr_search/protos/simclr/v1/search.proto",
        "simclr_search/cli/main.py",
    ):
        assert needed in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "simclr = simclr_search.cli.main:main" in zipfile.ZipFile(wheel).read(entry).decode()
