#!/usr/bin/env bash
# On a GPU machine, from binaries built elsewhere (they link no libHalide):
# the figures of issue 7 (rematerialization) in one run on one GPU.
# bench_remat_gpu runs the bf16 GPT-2-small-like training step without remat
# and at remat budgets 1.0, 0.5 and 0.25, each variant in a process of its own
# (so that each measured peak starts from a fresh device), and
# bench/pytorch_steps.py runs the same model in PyTorch eager, torch.compile
# and eager with torch.utils.checkpoint on every block. Logs and CSVs go to
# $OUT (default ./gpu-out): remat_gpu.csv (Tessera), pytorch_remat.csv
# (PyTorch), and the logs beside them.
# Usage: [STEPS=50] [WARMUP=20] scripts/gpu_remat.sh [build dir] (PyTorch's timed
# and warm-up steps per mode). Builds nothing; does not run the
# tests (scripts/gpu_steps.sh does) or profile single kernels.
set -u
BUILD=${1:-build}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
source "$(dirname "$0")/gpu_env.sh"
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"

: >"$OUT/bench_remat_gpu.txt"
for variant in none 1.0 0.5 0.25; do
  "$BUILD/bench/bench_remat_gpu" "$OUT" "$variant" >>"$OUT/bench_remat_gpu.txt" 2>&1 || status=1
done
# One CSV: the header once, then each variant's row.
first=1
for variant in none 1.0 0.5 0.25; do
  f="$OUT/remat_gpu_$variant.csv"
  [ -f "$f" ] || continue
  if [ $first = 1 ]; then cat "$f"; first=0; else tail -n +2 "$f"; fi
done >"$OUT/remat_gpu.csv"
grep -E "^(GPU|remat)" "$OUT/bench_remat_gpu.txt"
cat "$OUT/remat_gpu.csv"

python3 bench/pytorch_steps.py --models gpt2_small --dtype bf16 --modes eager,compile,checkpoint \
  --steps "${STEPS:-50}" --warmup "${WARMUP:-20}" \
  --csv "$OUT/pytorch_remat.csv" >"$OUT/pytorch_remat.txt" 2>&1 || status=1
tail -8 "$OUT/pytorch_remat.txt"
exit $status
