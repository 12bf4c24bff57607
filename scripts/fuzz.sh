#!/usr/bin/env bash
# Builds the safetensors reader's libFuzzer target (fuzz/safetensors_fuzzer.cpp)
# with clang's -fsanitize=fuzzer,address,undefined, outside the CMake build
# (which uses g++), writes a tiny seed corpus, and fuzzes for a bounded time.
# Usage: scripts/fuzz.sh [seconds, default 60]. Exits non-zero on any finding
# (the crashing input is left in build-fuzz/). Needs clang-14 and
# libclang-rt-14-dev (scripts/bootstrap.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
out=build-fuzz

cxx=""
for c in clang++-14 clang++; do
  if command -v "$c" >/dev/null; then cxx="$c"; break; fi
done
if [ -z "$cxx" ]; then
  echo "fuzz.sh: no clang++ (run scripts/bootstrap.sh)" >&2
  exit 1
fi

mkdir -p "$out/seeds" "$out/corpus"
echo "fuzz.sh: building $out/safetensors_fuzzer with $cxx"
"$cxx" -std=c++17 -O1 -g -fno-omit-frame-pointer \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Iinclude -Iruntime \
  fuzz/safetensors_fuzzer.cpp runtime/safetensors.cpp runtime/atomic_file.cpp runtime/buffer.cpp \
  src/frontend/dtype.cpp -o "$out/safetensors_fuzzer"

# Seeds: 8-byte little-endian header length, header, data.
seed() {  # name header data(printf format)
  local name=$1 header=$2 data=$3 n=${#2} len=""
  for i in 0 1 2 3 4 5 6 7; do len+=$(printf '\\x%02x' $(((n >> (8 * i)) & 255))); done
  { printf "$len"; printf '%s' "$header"; printf "$data"; } >"$out/seeds/$name"
}
seed empty '{}      ' ''
seed f32 '{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}' \
  '\x00\x00\x80\x3f\x00\x00\x00\xc0'
seed mixed '{"i":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"h":{"dtype":"BF16","shape":[1,2],"data_offsets":[8,12]},"b":{"dtype":"BOOL","shape":[],"data_offsets":[12,13]},"e":{"dtype":"U8","shape":[0,3],"data_offsets":[13,13]}}' \
  '\x05\x00\x00\x00\x00\x00\x00\x00\x80\x3f\x00\x40\x01'
seed unaligned '{"a":{"dtype":"I8","shape":[3],"data_offsets":[0,3]},"d":{"dtype":"F64","shape":[],"data_offsets":[3,11]},"f":{"dtype":"F16","shape":[1],"data_offsets":[11,13]},"i":{"dtype":"I32","shape":[1],"data_offsets":[13,17]}}' \
  '\x01\x02\x03\x00\x00\x00\x00\x00\x00\xf0\x3f\x00\x3c\x07\x00\x00\x00'

echo "fuzz.sh: fuzzing for ${seconds}s"
"$out/safetensors_fuzzer" -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 \
  -dict=fuzz/safetensors.dict -artifact_prefix="$out/" "$out/corpus" "$out/seeds"
