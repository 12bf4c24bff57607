#!/usr/bin/env bash
# Sets up, builds and runs every test. GPU tests skip without a CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh "$@"
ctest --test-dir build --output-on-failure --parallel "$(nproc)"
