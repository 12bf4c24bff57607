#!/usr/bin/env bash
# Sets up, builds and runs the main demo: tessera-finetune, a QLoRA fine-tune
# of a small GPT on the CPU with the training steps generated at build time
# (about 15 s on 2 cores after the build).
# Its files (base model, adapter, loss curve) go to runs/demo; a second run
# reuses the base model and fine-tunes afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
./build/apps/tessera-finetune --out runs/demo --no-resume --prompt 'cat>' "$@"
