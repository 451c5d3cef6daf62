#!/usr/bin/env bash
# Set up (if needed), train a SimCLR encoder on an image library for a fixed time budget and print
# the kNN top-1 of its representation.
#   scripts/quickstart.sh                 # CIFAR-10 from ../shared/datasets if present
#   scripts/quickstart.sh TRAIN [TEST]    # your own folders/archives (class sub-folders give kNN labels)
# SIMCLR_MINUTES sets the budget (default 10); the run directory is runs/quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
SIMCLR_EXTRAS=train bash scripts/setup.sh
shared="$(cd .. && pwd)/shared/datasets/cifar10-jpg"
train="${1:-$shared/train.tar.gz}"
test="${2:-}"
if [ -z "$test" ] && [ "$train" = "$shared/train.tar.gz" ]; then test="$shared/test.tar.gz"; fi
if [ ! -e "$train" ]; then
  echo "quickstart: no image library at $train; run: scripts/quickstart.sh /path/to/images" >&2
  exit 2
fi
args=(train --data "$train" --out-dir runs/quickstart --time-budget-min "${SIMCLR_MINUTES:-10}")
if [ -n "$test" ]; then args+=(--knn-test "$test"); fi
.venv/bin/simclr "${args[@]}"
echo "quickstart: curves in runs/quickstart/curves.png, checkpoint in runs/quickstart/checkpoint.pt"
