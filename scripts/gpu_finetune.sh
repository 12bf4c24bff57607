#!/usr/bin/env bash
# tessera-finetune on a GPU machine: the GPU test, the gpu preset run and
# the PyTorch baseline, with their logs in one folder. Two halves:
#
#   bash scripts/gpu_finetune.sh pack [BUILD]        # here, where it was built (default BUILD: build-opt)
#   bash scripts/gpu_finetune.sh run [--out DIR] [--tf32] [test|app|torch|all]...   # on the GPU machine
#
# pack puts into BUILD/gpu-carry (ignored by git, carried as one path):
# tessera-finetune and test_finetune_gpu (xz-compressed: the CUDA kernels in
# them compress ~5x) and the Debian packages of the libraries the app's CPU
# JIT links (libHalide, LLVM and theirs; the GPU machines have no Halide),
# about 50 MB in all. run unpacks them into /tmp, points LD_LIBRARY_PATH at
# them for the Tessera programs only, and runs (default: all):
#   test   test_finetune_gpu (GPU vs CPU losses, accuracy, adapter, resume)
#   app    tessera-finetune --device cuda --preset gpu (pretrain + QLoRA),
#          its loss curve and tokens/s + peak device memory lines
#   torch  bench/pytorch_finetune.py (the same GPT + LoRA in PyTorch, eager
#          and torch.compile)
# writing at most 8 files into --out (default: $OUT, else gpu-out). --tf32
# runs app and torch with TF32 matrix products (default: f32). It does
# not build anything and never touches the GPU's settings.
set -euo pipefail
cd "$(dirname "$0")/.."

HALIDE_DEBS="libhalide14-0 libllvm14 libz3-4 libedit2 libffi8 libxml2 libicu72 libbsd0 libmd0"

pack() {
  local build=${1:-build-opt}
  local carry="$build/gpu-carry"
  for f in "$build/apps/tessera-finetune" "$build/tests/test_finetune_gpu"; do
    [[ -x $f ]] || { echo "gpu_finetune.sh pack: no $f (build tessera-finetune and test_finetune_gpu in $build)" >&2; exit 1; }
  done
  rm -rf "$carry"
  mkdir -p "$carry/debs"
  for f in "$build/apps/tessera-finetune" "$build/tests/test_finetune_gpu"; do
    strip -o "$carry/$(basename "$f")" "$f"
    xz -T0 -6 "$carry/$(basename "$f")"
  done
  (cd "$carry/debs" && for p in $HALIDE_DEBS; do
     if ls /var/cache/apt/archives/${p}_*.deb >/dev/null 2>&1; then cp /var/cache/apt/archives/${p}_*.deb .; else apt-get download "$p"; fi
   done)
  du -sh "$carry"
  echo "carry '$carry' and run: bash scripts/gpu_finetune.sh run --carry-dir $carry"
}

# Finds the app, the test and the libraries: a carried folder, else the build tree.
setup() {
  local carry=$1
  BIN=/tmp/tessera-gpu-bin
  mkdir -p "$BIN"
  if [[ -f $carry/tessera-finetune.xz ]]; then
    for f in tessera-finetune test_finetune_gpu; do xz -dc "$carry/$f.xz" > "$BIN/$f"; chmod +x "$BIN/$f"; done
  else
    cp build-opt/apps/tessera-finetune build-opt/tests/test_finetune_gpu "$BIN/"
  fi
  TESSERA_LIBS=""
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do  # cudart, cuBLASLt
    [[ -d $d ]] && TESSERA_LIBS="$TESSERA_LIBS${TESSERA_LIBS:+:}$d"
  done
  if LD_LIBRARY_PATH="$TESSERA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$BIN/tessera-finetune" | grep -q "not found"; then
    local prefix=/tmp/tessera-halide
    mkdir -p "$prefix"
    for deb in "$carry"/debs/*.deb; do
      [[ -f $deb ]] || continue
      if command -v dpkg >/dev/null; then dpkg -x "$deb" "$prefix"
      else (t=$(mktemp -d); cd "$t" && ar x "$deb" && tar -xf data.tar.* -C "$prefix"; rm -rf "$t"); fi
    done
    TESSERA_LIBS="$prefix/usr/lib/x86_64-linux-gnu:$prefix/lib/x86_64-linux-gnu${TESSERA_LIBS:+:$TESSERA_LIBS}"
  fi
  if LD_LIBRARY_PATH="$TESSERA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$BIN/tessera-finetune" | grep "not found"; then
    echo "gpu_finetune.sh: tessera-finetune still misses the libraries above (carry $carry from 'pack')" >&2
    exit 1
  fi
}

# A Tessera program with the carried libraries (not for python: its own libraries stay first).
tessera() { LD_LIBRARY_PATH="$TESSERA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"; }

run_test() {
  echo "== test_finetune_gpu"
  TESSERA_FINETUNE="$BIN/tessera-finetune" TESSERA_CORPUS_DIR="$PWD/data/corpus" \
    tessera "$BIN/test_finetune_gpu" 2>&1 | tee "$RESULTS/test_finetune_gpu.log"
}

run_app() {
  echo "== tessera-finetune --device cuda --preset gpu"
  local work=/tmp/tessera-finetune-gpu
  rm -rf "$work"
  { nvidia-smi -L 2>/dev/null || true
    tessera "$BIN/tessera-finetune" --device cuda --preset gpu --corpus data/corpus --out "$work" --log-every 100 \
      --checkpoint-every 1000 --prompt 'lamp>' $TF32
  } 2>&1 | tee "$RESULTS/tessera_finetune_gpu.log"
  cp "$work/loss.csv" "$RESULTS/tessera_finetune_gpu_loss.csv"
  cp "$work/loss.svg" "$RESULTS/tessera_finetune_gpu_loss.svg"
}

run_torch() {
  echo "== bench/pytorch_finetune.py"
  PYTHONUNBUFFERED=1 python3 bench/pytorch_finetune.py --json "$RESULTS/pytorch_finetune.json" $TF32 2>&1 |
    tee "$RESULTS/pytorch_finetune.log"
}

run() {
  RESULTS=${OUT:-gpu-out}
  TF32=""
  local carry=build-opt/gpu-carry
  local what=()
  while [[ $# -gt 0 ]]; do
    case $1 in
      --out) RESULTS=$2; shift 2 ;;
      --carry-dir) carry=$2; shift 2 ;;
      --tf32) TF32=--tf32; shift ;;
      test|app|torch) what+=("$1"); shift ;;
      all) what+=(test app torch); shift ;;
      *) echo "gpu_finetune.sh run: unknown argument '$1'" >&2; exit 2 ;;
    esac
  done
  [[ ${#what[@]} -gt 0 ]] || what=(test app torch)
  mkdir -p "$RESULTS"
  setup "$carry"
  local status=0
  for w in "${what[@]}"; do "run_$w" || status=1; done
  { echo "tessera-finetune (gpu preset):"
    grep -hE "tokens/s|device memory|held-out accuracy:|variant" "$RESULTS/tessera_finetune_gpu.log" 2>/dev/null || true
    echo "PyTorch:"
    grep -hE "tok/s|failed|^PyTorch" "$RESULTS/pytorch_finetune.log" 2>/dev/null || true
    echo "test_finetune_gpu:"
    grep -hE "PASSED|FAILED|SKIPPED" "$RESULTS/test_finetune_gpu.log" 2>/dev/null || true
  } | tee "$RESULTS/summary.txt"
  return $status
}

case ${1:-} in
  pack) shift; pack "$@" ;;
  run) shift; run "$@" ;;
  *) echo "usage: bash scripts/gpu_finetune.sh pack [BUILD] | run [--out DIR] [--carry-dir DIR] [--tf32] [test|app|torch|all]..." >&2; exit 2 ;;
esac
