"""Ray is an optional extra: the embedded default never imports it.

In the source, only the two modules that are the Ray integration import ``ray`` (and the service
core imports the sharded store only when ``--ray`` is set); at run time, a local ``simclr index``,
a server start with a search, and the CLI leave ``ray`` out of ``sys.modules``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import make_library
from tests.test_layering import ROOT, _imported_names

RAY_MODULES = {"index/ray_shards.py", "serving/jobs/ray_index.py"}
BUNDLE = ROOT / "models" / "compact-cifar10"


def test_only_the_ray_modules_import_ray() -> None:
    importers = set()
    for folder in ("index", "serving", "bundle", "training", "simclr_search"):
        for path in (ROOT / folder).rglob("*.py"):
            if any(n == "ray" or n.startswith("ray.") for n in _imported_names(path)):
                importers.add(str(path.relative_to(ROOT)))
    assert importers == RAY_MODULES


def test_the_embedded_default_runs_without_importing_ray(tmp_path: Path) -> None:
    library = make_library(tmp_path / "library", per_class=3)
    code = f"""
import asyncio, sys
from pathlib import Path
from simclr_search.cli.main import main
assert main(["index", {str(library)!r}, "--bundle", {str(BUNDLE)!r}, "--store",
             {str(tmp_path / "store")!r}, "--no-progress"]) == 0
from simclr_search.serving.core.service import SearchService, ServiceConfig
import simclr_search.serving.server.app, simclr_search.serving.http.gateway

async def serve_once():
    service = SearchService(ServiceConfig(bundle=Path({str(BUNDLE)!r}), store=Path({str(tmp_path / "store")!r})))
    await service.start()
    hits = await service.search("", 3, image=Path({str(library / "circle" / "000.jpg")!r}).read_bytes())
    await service.stop()
    return hits

assert asyncio.run(serve_once())
print("ray" in sys.modules, "ray.data" in sys.modules)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "False False"
