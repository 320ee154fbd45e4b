#!/usr/bin/env bash
# One training chunk on a bare (GPU) machine; options in scripts/gpu_train.py, set-up in docs/gpu_training.md.
# scripts/gpu_env.sh installs hydra-core, omegaconf and antlr4-python3-runtime from a local wheel folder
# (default .whl/ in the repository, or $MOLDIFF_WHEELS) when they are missing and puts the repository on
# PYTHONPATH; the chunk runs with $PYTHON (default python3).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/gpu_env.sh"
exec "$py" "$root/scripts/gpu_train.py" "$@"
