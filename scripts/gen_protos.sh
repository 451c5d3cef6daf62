#!/usr/bin/env bash
# Regenerate the Python gRPC code (with .pyi stubs) from protos/ — run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
"$py" -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. protos/simclr/v1/search.proto
