#!/usr/bin/env bash
# One ~9.5-minute GPU window, three runs side by side on one GPU:
#   scratch  the unconditional generator trained from scratch at batch 2,048 for 7.8 minutes (one window: does
#            the large batch give the quality of the shipped model's 15.8 minutes at 512/1,024?)
#   guide    the guide predictor (qm9_guide, trained on the generator's half train_b) continued for 7.3 minutes
#   fp32     the float32 test of the precision floor: the shipped undistilled model continued for 3.3 minutes
#            at batch 2,048 in float32, TF32 off (the bf16 run of the same length left it at 0.0082 A), then
#            scripts/precision_check.py --decompose on it and on the shipped model (no RDKit needed)
# and the CUDA test of the training RNG (skipped unless data/processed/qm9_first300 is carried too). Needs the
# prepared cache data/processed/qm9 and the wheel folder .whl/ (docs/gpu_training.md).
#   scripts/gpu_scratch.sh OUT             OUT gets scratch.tar, guide.tar, fp32.tar (model.pt/json, metrics.csv,
#                                          record.json, log; no resume checkpoints), cuda_test.txt, gpu_use.txt
#   SCALE=0.02 scripts/gpu_scratch.sh OUT  a dry run with every chunk 50 times shorter (also on a CPU)
# EXTRA adds Hydra overrides to every run (e.g. EXTRA="data.limit=300 model=tiny" for a quick dry run).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:?usage: gpu_scratch.sh OUT}" && cd "$1" && pwd)"
work="${WORK:-${TMPDIR:-/tmp}/moldiff-scratch}"
rm -rf "$work" && mkdir -p "$work"
cd "$root"
source scripts/gpu_env.sh
if command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu_use.txt" 2>&1
fi
start_gpu_monitor "$out/gpu_use.txt"
extra=(${EXTRA:-})

# chunk NAME ARGS...: one gpu_train.sh chunk into $work/NAME, packed as $out/NAME.tar
chunk() {
  local name="$1"; shift
  mkdir -p "$work/$name"
  scripts/gpu_train.sh --out "$work/$name" --run-dir "$work/run_$name" "$@" >"$work/$name/train.log" 2>&1
  echo "$name: exit $?" | tee -a "$work/status.txt"
}
pack() { tar cf "$out/$1.tar" -C "$work" --exclude='resume.ckpt*' "$1"; }

MOLDIFF_TEST_DATA_ROOT=data/processed "$py" -m pytest -q -p no:cacheprovider tests/training/test_train.py \
  -k noise_differs >"$out/cuda_test.txt" 2>&1 &
pt=$!

(chunk scratch --minutes "$(scaled 7.8)" --total-minutes "$(scaled 7.8)" -- \
   data.batch_size=2048 optim.lr=2.0e-3 optim.warmup_steps=200 data.num_workers=7 "${extra[@]}"
 pack scratch) &
ps=$!
(chunk guide --experiment qm9_property_predictor --name qm9_guide --minutes "$(scaled 7.3)" \
   --total-minutes "$(scaled 7.3)" --init-from moldiff/pretrained/qm9_guide.pt -- \
   data.train_split=train_b data.batch_size=256 data.num_workers=3 "${extra[@]}"
 pack guide) &
pg=$!
(chunk fp32 --matmul-precision highest --minutes "$(scaled 3.3)" --total-minutes "$(scaled 3.3)" --init-from moldiff/pretrained/qm9_default.pt -- \
   data.batch_size=2048 optim.lr=1.0e-3 optim.warmup_steps=100 data.num_workers=4 trainer.precision=32-true "${extra[@]}"
 OMP_NUM_THREADS=2 "$py" scripts/precision_check.py --decompose --ckpt "$work/fp32/model.pt" \
   --ckpt moldiff/pretrained/qm9_default.pt ${PRECISION_N:+--n $PRECISION_N} --json "$work/fp32/precision.json" \
   >"$work/fp32/precision.log" 2>&1
 echo "precision: exit $?" | tee -a "$work/status.txt"
 pack fp32) &
pf=$!
wait $ps $pg $pf $pt   # not a bare wait: the GPU monitor runs until killed
cat "$work/status.txt"
[ -n "${dmon:-}" ] && kill "$dmon" 2>/dev/null
true
