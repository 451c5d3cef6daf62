"""The committed gRPC stubs are exactly what ``scripts/gen_protos.sh`` generates from the .proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ["search_pb2.py", "search_pb2.pyi", "search_pb2_grpc.py"]


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)],
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "simclr" / "v1" / name).read_text()
        committed = (ROOT / "protos" / "simclr" / "v1" / name).read_text()
        assert fresh == committed, f"protos/simclr/v1/{name} is stale: run scripts/gen_protos.sh"
