#!/usr/bin/env bash
# Reproduce models/compact-cifar10 (the bundle the quickstart uses) on this machine's 2 CPU cores:
# ~30 min of SimCLR training, ~6 min of decoder training, 2 x 35 min of denoiser training on thumbnails
# (single images, all noisy), fine-tunes of 25, 75 and 85 min on 2x2 mosaics, 10% shown noise-free
# (the last two with a running weight average), then the export: about 5 hours.
# The shipped bundle (version 7): encoder and decoder trained by this script at commit 66e9eb1, the
# denoiser by its stages at commits up to 8048c0b (models/compact-cifar10/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
shared="$(cd .. && pwd)/shared/datasets/cifar10-jpg"
out="${1:-runs/shipped}"
.venv/bin/python benchmarks/bench_quality.py --lr 0.12 --compile --blur-p 0.5 --rotation-degrees 15 \
    --noise-p 0.3 --proj-hidden-dim 1024 --view-size 24 --eval-every 0 --out-dir "$out/encoder"
.venv/bin/simclr train-decoder --checkpoint "$out/encoder/checkpoint.pt" --data "$shared/train.tar.gz" \
    --test "$shared/test.tar.gz" --epochs 3 --out-dir "$out/decoder"
kodak="$(cd .. && pwd)/shared/datasets/denoise-eval/Kodak24.tar"
.venv/bin/simclr train-denoiser --data "$shared/train.tar.gz" --minutes 35 --eval "$kodak" \
    --mosaic 1 --clean-p 0 --out-dir "$out/denoiser-stage1"
.venv/bin/simclr train-denoiser --data "$shared/train.tar.gz" --minutes 35 --lr 1e-3 --seed 1 \
    --mosaic 1 --clean-p 0 --weights "$out/denoiser-stage1/denoiser.pt" --eval "$kodak" --out-dir "$out/denoiser-stage2"
.venv/bin/simclr train-denoiser --data "$shared/train.tar.gz" --minutes 25 --lr 3e-4 --seed 4 \
    --mosaic 2 --clean-p 0.1 --weights "$out/denoiser-stage2/denoiser.pt" --eval "$kodak" --out-dir "$out/denoiser-mosaic"
.venv/bin/simclr train-denoiser --data "$shared/train.tar.gz" --minutes 75 --lr 3e-4 --seed 5 \
    --mosaic 2 --clean-p 0.1 --ema 0.999 --weights "$out/denoiser-mosaic/denoiser.pt" --eval "$kodak" \
    --out-dir "$out/denoiser-ft75"
.venv/bin/simclr train-denoiser --data "$shared/train.tar.gz" --minutes 85 --lr 1.5e-4 --seed 6 \
    --mosaic 2 --clean-p 0.1 --ema 0.999 --weights "$out/denoiser-ft75/denoiser.pt" --eval "$kodak" \
    --out-dir "$out/denoiser"
card="$(mktemp)"  # the model card is written by hand: kept across the export, which replaces the folder
cp models/compact-cifar10/README.md "$card"
rm -rf models/compact-cifar10
.venv/bin/simclr export --checkpoint "$out/encoder/checkpoint.pt" --decoder "$out/decoder/decoder.pt" \
    --denoiser "$out/denoiser/denoiser.pt" \
    --images "$shared/train.tar.gz" --int8 --name compact-cifar10 --version 7 --out models/compact-cifar10
cp "$card" models/compact-cifar10/README.md && rm "$card"  # cp: the usual file mode, not mktemp's 0600
