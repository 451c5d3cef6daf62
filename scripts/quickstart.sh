#!/usr/bin/env bash
# Set up (if needed) and run the product end to end on the embedded default (local files, FAISS on
# disk, SQLite, no other server): the shipped model bundle -> index a library -> start the gRPC
# server -> reverse image search with edited copies + a denoise call -> results and a PNG grid.
#   scripts/quickstart.sh                 # CIFAR-10 test images from ../shared if present
#   scripts/quickstart.sh /path/to/images # your own folder or .tar/.tar.gz
# Output: runs/quickstart/ (store/, grid.png). Re-running re-uses the index (resumable).
set -euo pipefail
cd "$(dirname "$0")/.."
SIMCLR_EXTRAS=dev bash scripts/setup.sh
args=(quickstart)
if [ $# -gt 0 ]; then args+=("$1"); fi
.venv/bin/simclr "${args[@]}"
