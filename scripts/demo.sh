#!/usr/bin/env bash
# Sets up, builds and runs the main demo (the CPU MLP example).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
./build/examples/mlp
