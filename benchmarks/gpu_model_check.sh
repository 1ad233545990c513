#!/usr/bin/env bash
# The model benchmarks on a GPU, in one run (issue 3's targets): inference end to end vs network
# forward, a training step vs the network's forward + backward (bench_model.py), and the kernel
# launches and host syncs CUDA sees outside the network (bench_launches.py). Writes the printed
# tables to $OUT (default /tmp/gpu_model_check) and the JSON lines to $OUT/results.jsonl.
#
#   bash benchmarks/gpu_model_check.sh                                   # on the GPU machine (~4 min)
#   DEVICE=cpu SIZE=256 REPEATS=1 bash benchmarks/gpu_model_check.sh      # dry run
set -euo pipefail
OUT=${OUT:-/tmp/gpu_model_check}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-1024}
REPEATS=${REPEATS:-5}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>/dev/null || true
python benchmarks/bench_launches.py --device "$DEVICE" --size "$SIZE" --out "$OUT/results.jsonl" \
    2>&1 | tee "$OUT/bench_launches.txt"
python benchmarks/bench_model.py --device "$DEVICE" --size "$SIZE" --repeats "$REPEATS" --candidates 2000 \
    --out "$OUT/results.jsonl" 2>&1 | tee "$OUT/bench_model.txt"
