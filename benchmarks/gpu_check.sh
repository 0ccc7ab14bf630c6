#!/usr/bin/env bash
# The torch backend's GPU checks as one prepared run, most important first, within ~10 minutes:
# FastResNet with the CPU recipes (the full-width 8-epoch one, the longer 93% one, the 10-minute
# CPU one), SimpleCNN (torch) through the CLI, then the torch tests with CUDA present. Each
# result is written as JSON to $OUT. Needs a Python with torch, numpy, numba, Pillow,
# safetensors, typer, rich and pytest; the package runs from src/.
# Usage: DATA=path/to/cifar10-jpeg.tar.gz OUT=results/ bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src PYTHONUNBUFFERED=1
PY=${PY:-python3}
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

bench() {  # name, time cap (s), then bench_resnet arguments
    local name=$1 cap=$2; shift 2
    echo "== resnet $name: $*"
    timeout "$cap" $PY benchmarks/bench_resnet.py --root "$DATA" --device cuda \
        --json "$OUT/resnet-$name.json" "$@"
}
bench full8 100 --epochs 8 --widths 64,256,256
bench long24 200 --epochs 24 --widths 128,384,384 --depth 3 --translate 4 --cutout 12 --head-lr 1.0
bench cpu10min 90 --epochs 20 --widths 64,128,128 --head-lr 0.335

echo "== SimpleCNN (torch) through the CLI"
timeout 100 $PY -m pix2pred train cnn --dataset folder --root "$DATA" --backend torch \
    --device cuda --epochs 30 --augment flip,crop --out /tmp/cnn-torch-30 \
    && cp /tmp/cnn-torch-30/metrics.json "$OUT/cnn-torch-30.json"

echo "== torch tests with CUDA present"
timeout 80 $PY -m pytest -q -x -p no:cacheprovider tests/test_torch_train.py tests/test_resnet.py \
    tests/test_torch_models.py tests/test_backends.py 2>&1 | tail -15
