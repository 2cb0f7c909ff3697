#!/bin/bash
# The checks that need the GPU machine (run there by a session that is lent one; see README,
# "Benchmarks"): the GPU test, and benchmarks/train_scaling.py with one GPU trainer fed by
# 8 CPU workers and with 1, 2 and 4 CPU trainers (8 workers) on a machine with more cores than workers.
# The machine has PyTorch but not our other dependencies: carry their wheels in .whl/.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
nvidia-smi -L; nproc
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
timeout 200 python3 benchmarks/train_scaling.py --events "${GPU_EVENTS:-2000000}" --workers 9 --trainers 1 \
    --batch-size 4096 --device cuda --epochs 3 --chunk-size 100000 --prefetch 8 --out /tmp/gpu 2>&1 \
    | grep -v -i "warn\|is_open" | tee "$OUT/gpu.txt" | tail -8
cp /tmp/gpu/train-scaling.json "$OUT/gpu.json"
timeout 190 python3 benchmarks/train_scaling.py --events "${CPU_EVENTS:-800000}" --workers 8 --trainers 1 2 4 \
    --batch-size 1024 --device cpu --epochs 2 --out /tmp/cpu 2>&1 \
    | grep -v -i "warn\|is_open" | tee "$OUT/cpu.txt" | tail -8
cp /tmp/cpu/train-scaling.json "$OUT/cpu.json"
