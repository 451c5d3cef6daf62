"""The committed gRPC stubs are exactly what ``scripts/gen_protos.sh`` generates from the .proto."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ["search_pb2.py", "search_pb2.pyi", "search_pb2_grpc.py"]


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    (tmp_path / "protos" / "simclr" / "v1").mkdir(parents=True)
    shutil.copy(
        ROOT / "protos" / "simclr" / "v1" / "search.proto", tmp_path / "protos" / "simclr" / "v1"
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            "--python_out=.",
            "--pyi_out=.",
            "--grpc_python_out=.",
            "protos/simclr/v1/search.proto",
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "protos" / "simclr" / "v1" / name).read_text()
        committed = (ROOT / "protos" / "simclr" / "v1" / name).read_text()
        assert fresh == committed, f"protos/simclr/v1/{name} is stale: run scripts/gen_protos.sh"
