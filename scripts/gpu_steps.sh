#!/usr/bin/env bash
# On a GPU machine, from binaries built elsewhere (they link no libHalide):
# test_aot_gpu (the generated steps' CUDA variants against their CPU
# variant), the same under compute-sanitizer (memcheck, leak check),
# bench_steps_gpu (Tessera's steps on the PlanExecutor) and
# bench/pytorch_steps.py (the same models in PyTorch eager, torch.compile and
# reduce-overhead) on the same GPU. Logs and CSVs go to $OUT (default ./gpu-out).
# Usage: [DTYPE=f32|tf32] scripts/gpu_steps.sh [build dir]. Builds nothing.
set -u
BUILD=${1:-build}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
source "$(dirname "$0")/gpu_env.sh"
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"

"$BUILD/tests/test_aot_gpu" >"$OUT/test_aot_gpu.log" 2>&1 || status=1
grep -E "^\[  (PASSED|FAILED|SKIPPED) " "$OUT/test_aot_gpu.log"

timeout "${SAN_TIMEOUT:-200}" /usr/local/cuda/bin/compute-sanitizer --tool memcheck --leak-check full --error-exitcode 99 \
  "$BUILD/tests/test_aot_gpu" >"$OUT/sanitizer.log" 2>&1 || status=1
grep -E "ERROR SUMMARY|LEAK SUMMARY" "$OUT/sanitizer.log"

"$BUILD/bench/bench_steps_gpu" "$OUT" >"$OUT/bench_steps_gpu.txt" 2>&1 || status=1
grep -E "median|GPU:" "$OUT/bench_steps_gpu.txt"

python3 bench/pytorch_steps.py --models mlp,gpt_small_test,gpt2_small --dtype "${DTYPE:-f32}" \
  --csv "$OUT/pytorch_steps.csv" >"$OUT/pytorch_steps.txt" 2>&1 || status=1
tail -12 "$OUT/pytorch_steps.txt"
exit $status
