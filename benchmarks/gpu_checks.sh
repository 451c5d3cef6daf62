#!/usr/bin/env bash
# The GPU checks, as one prepared script for a lent GPU machine (or any CUDA host):
#   1. environment: the GPU, torch, and which onnxruntime execution providers this build has;
#   2. SimCLR ResNet-18 (small-image stem, batch 512, bf16 autocast, channels-last) on CIFAR-10 train
#      for a wall-clock budget, then kNN top-1 on CIFAR-10 test (benchmarks/bench_quality.py);
#   3. the denoiser continued on the GPU from given weights (simclr train-denoiser), saved to OUT;
#   4. the bundle's encoder through onnxruntime with device "auto" (CUDA provider if present, else the
#      CPU provider), checked against the PyTorch encoder on the GPU.
# Each step runs on even if an earlier one failed; every figure lands in OUT.
#
#   SIMCLR_DATASETS=dir-with-cifar10-jpg OUT=out-dir bash benchmarks/gpu_checks.sh \
#       [SIMCLR_MINUTES] [DENOISER_MINUTES] [DENOISER_WEIGHTS]
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"
device="${DEVICE:-cuda}"  # DEVICE=cpu rehearses the script on a machine without a GPU
out="${OUT:?set OUT to a folder for the results}"
simclr_minutes="${1:-4.5}"
denoiser_minutes="${2:-2.5}"
denoiser_weights="${3:-}"
data="${SIMCLR_DATASETS:?set SIMCLR_DATASETS to the folder holding cifar10-jpg/}"
mkdir -p "$out"

echo "== environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/env.txt"
"$python" - <<'EOF' 2>&1 | tee -a "$out/env.txt"
import onnxruntime, torch, torchvision
print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.version.cuda)
print("gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
EOF

echo "== SimCLR ResNet-18 on the GPU, ${simclr_minutes} min"
timeout $((${simclr_minutes%.*} * 60 + 150)) "$python" benchmarks/bench_quality.py \
    --encoder resnet18 --device "$device" --batch-size 512 --lr 0.06 --eval-every 10 \
    --minutes "$simclr_minutes" --out-dir /tmp/gpu-simclr 2>&1 | tee "$out/simclr.txt"
cp /tmp/gpu-simclr/metrics.jsonl "$out/simclr-metrics.jsonl" 2>/dev/null
cp /tmp/gpu-simclr/curves.png "$out/simclr-curves.png" 2>/dev/null

if [ -n "$denoiser_weights" ]; then
    echo "== denoiser continued on the GPU, ${denoiser_minutes} min"
    timeout $((${denoiser_minutes%.*} * 60 + 120)) "$python" -m simclr_search.cli.main train-denoiser \
        --data "$data/cifar10-jpg/train.tar.gz" --weights "$denoiser_weights" \
        --minutes "$denoiser_minutes" --batch-size 256 --lr 5e-4 --seed 2 --device "$device" \
        --no-progress --out-dir /tmp/gpu-denoiser 2>&1 | tail -n 5 | tee "$out/denoiser.txt"
    cp /tmp/gpu-denoiser/denoiser.pt "$out/denoiser.pt" 2>/dev/null
fi

echo "== onnxruntime provider check"
timeout 120 "$python" benchmarks/gpu_onnx_check.py 2>&1 | tee "$out/onnx.txt"
echo "== done"
