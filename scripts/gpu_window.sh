#!/usr/bin/env bash
# One ~9-minute GPU window that trains all three shipped QM9 models at once on one GPU (a single run is
# bound by kernel launches and leaves most of the GPU idle), each warm-started from its shipped weights:
#   unconditional generator  two chunks (5.5 + 2.3 min) resumed on the same machine, batch 1024
#   conditional generator    two chunks (5.5 + 2.3 min) resumed on the same machine, batch 512
#   property predictor       one 7.3-minute chunk, batch 256
# and runs the CUDA test of the training RNG. Needs the prepared caches data/processed/qm9 and
# data/processed/qm9_first300 and the wheel folder .whl/ (docs/gpu_training.md).
#   scripts/gpu_window.sh OUT            OUT gets one tar per chunk (model.pt/json, metrics.csv, record.json,
#                                        log; no resume checkpoints), the CUDA test's output and GPU use.
#   SCALE=0.02 scripts/gpu_window.sh OUT a dry run with every chunk 50 times shorter (also on a CPU)
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:?usage: gpu_window.sh OUT}" && cd "$1" && pwd)"
work="${WORK:-${TMPDIR:-/tmp}/moldiff-window}"
rm -rf "$work" && mkdir -p "$work"
cd "$root"

# hydra-core/omegaconf and the repository on PYTHONPATH, for the tests and every chunk
source scripts/gpu_env.sh
start_gpu_monitor "$out/gpu_use.txt"

# chunk NAME ARGS...: run one gpu_train.sh chunk into $work/NAME, then pack it as $out/NAME.tar
chunk() {
  local name="$1"; shift
  mkdir -p "$work/$name"
  scripts/gpu_train.sh --out "$work/$name" "$@" >"$work/$name/train.log" 2>&1
  echo "$name: exit $?" | tee -a "$work/status.txt"
  tar cf "$out/$name.tar" -C "$work" --exclude='resume.ckpt*' --exclude=run "$name"
}

MOLDIFF_TEST_DATA_ROOT=data/processed "$py" -m pytest -q -p no:cacheprovider tests/training/test_train.py \
  -k noise_differs >"$out/cuda_test.txt" 2>&1 &

U=(--run-dir "$work/run_u" --total-minutes "$(scaled 7.8)" -- data.batch_size=1024 optim.lr=1.0e-3 optim.warmup_steps=200 data.num_workers=3)
G=(--experiment qm9_conditional --name qm9_conditional --run-dir "$work/run_g" --total-minutes "$(scaled 7.8)"
   -- data.batch_size=512 optim.lr=6.0e-4 data.num_workers=3)
P=(--experiment qm9_property_predictor --name qm9_predictor --run-dir "$work/run_p" --total-minutes "$(scaled 7.3)"
   -- data.batch_size=256 data.num_workers=2)

chunk u1 --minutes "$(scaled 5.5)" --init-from moldiff/pretrained/qm9_default.pt "${U[@]}" &
pu=$!
chunk g1 --minutes "$(scaled 5.5)" --init-from moldiff/pretrained/qm9_conditional.pt "${G[@]}" &
pg=$!
chunk p1 --minutes "$(scaled 7.3)" --init-from moldiff/pretrained/qm9_predictor.pt "${P[@]}" &
pp=$!
wait $pu
chunk u2 --minutes "$(scaled 2.3)" --resume "$work/run_u/checkpoints/last.ckpt" "${U[@]}" &
pu=$!
wait $pg
chunk g2 --minutes "$(scaled 2.3)" --resume "$work/run_g/checkpoints/last.ckpt" "${G[@]}" &
pg=$!
wait $pu $pg $pp
cat "$work/status.txt"
[ -n "${dmon:-}" ] && kill "$dmon" 2>/dev/null
true
