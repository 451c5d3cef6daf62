#!/usr/bin/env bash
# Regenerate the Python gRPC code (with .pyi stubs) of protos/ from anywhere. The .proto is compiled
# from a temporary simclr_search/protos/... tree so that the generated imports name the installed
# package (simclr_search.protos.simclr.v1). With an argument, writes there instead of protos/
# (tests/test_protos.py compares the two).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
case "$py" in /*) ;; */*) py="$PWD/$py" ;; esac
out="${1:-protos}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/simclr_search/protos/simclr/v1" "$out/simclr/v1"
cp protos/simclr/v1/search.proto "$work/simclr_search/protos/simclr/v1/"
(cd "$work" && "$py" -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
    simclr_search/protos/simclr/v1/search.proto)
cp "$work"/simclr_search/protos/simclr/v1/search_pb2{.py,.pyi,_grpc.py} "$out/simclr/v1/"
