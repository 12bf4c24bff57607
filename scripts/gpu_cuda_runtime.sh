#!/usr/bin/env bash
# Runs the tessera_cuda tests, the same tests under compute-sanitizer
# (memcheck with leak checking; the tests' deliberate API errors are checked
# by the tests themselves, so API errors are not reported), and bench_gemm_gpu
# (twice, for the run-to-run spread) on a GPU machine, from
# binaries built elsewhere (build-gpu: test_cuda_* and bench_gemm_gpu link no
# libHalide). Logs and the bench CSV go to $OUT (default ./gpu-out).
# Usage: [RUN_BENCH=0] scripts/gpu_cuda_runtime.sh [build dir]. Builds nothing.
set -u
BUILD=${1:-build-gpu}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
source "$(dirname "$0")/gpu_env.sh"
SAN=/usr/local/cuda/bin/compute-sanitizer
TESTS="test_cuda_errors test_cuda_arena test_cuda_gemm test_cuda_graph"
status=0

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv >"$OUT/nvidia-smi.txt" 2>&1
cat "$OUT/nvidia-smi.txt"

for t in $TESTS; do
  echo "=== $t" | tee -a "$OUT/tests.log"
  "$BUILD/tests/cuda/$t" >>"$OUT/tests.log" 2>&1 || { status=1; echo "FAILED: $t"; }
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests ran" "$OUT/tests.log" | tail -3
done

echo "=== bench"
if [ "${RUN_BENCH:-1}" = 1 ]; then  # RUN_BENCH=0: tests only
  for run in 1 2; do
    "$BUILD/bench/bench_gemm_gpu" "$OUT/bench_gemm_gpu_run$run.csv" 2>&1 | tee -a "$OUT/bench.log" || status=1
  done
fi

for t in $TESTS; do
  echo "=== compute-sanitizer memcheck --leak-check full: $t" | tee -a "$OUT/sanitizer.log"
  timeout "${SAN_TIMEOUT:-150}" "$SAN" --tool memcheck --leak-check full --report-api-errors no --error-exitcode 99 "$BUILD/tests/cuda/$t" \
    >>"$OUT/sanitizer.log" 2>&1
  rc=$?
  echo "exit code $rc" | tee -a "$OUT/sanitizer.log"
  grep -E "ERROR SUMMARY|LEAK SUMMARY|^\[  (PASSED|FAILED)" "$OUT/sanitizer.log" | tail -3
done
exit $status
