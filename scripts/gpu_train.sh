#!/usr/bin/env bash
# One training chunk on a bare (GPU) machine; options in scripts/gpu_train.py, set-up in docs/gpu_training.md.
# Installs hydra-core, omegaconf and antlr4-python3-runtime from a local wheel folder (default .whl/ in the
# repository, or $MOLDIFF_WHEELS) when they are missing, puts the repository on PYTHONPATH (no install
# needed) and runs the chunk with $PYTHON (default python3).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python3}"
if ! "$py" -c "import hydra, omegaconf" 2>/dev/null; then
  wheels="${MOLDIFF_WHEELS:-$root/.whl}"
  if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    echo "gpu_train.sh: hydra-core/omegaconf are not installed and $wheels holds no wheels (see docs/gpu_training.md)" >&2
    exit 2
  fi
  site="${TMPDIR:-/tmp}/moldiff-site"
  "$py" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" "$root/scripts/gpu_train.py" "$@"
