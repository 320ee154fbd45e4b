#!/usr/bin/env bash
# One ~9-minute GPU window for the few-step model, with the conditional generator trained beside it on the
# same GPU (one run alone leaves most of the GPU idle):
#   few-step model   scripts/distill_fewstep.py --stage rounds from the shipped qm9_fast: each round samples
#                    4,000 trajectories of 25 steps (time_power=2) and 1,000 of 50 steps with the previous
#                    round's student, whose second call is the target, keeps 1,000 trajectories of 100 steps of
#                    qm9_default as the anchor for fine grids, and trains for ROUND_MIN minutes (ROUNDS rounds;
#                    batch 512, learning rate 3e-4, EMA 0.996)
#   conditional      one chunk of COND_MIN minutes warm-started from the shipped qm9_conditional, batch 512
# Needs the prepared cache data/processed/qm9 and the wheel folder .whl/ (docs/gpu_training.md).
#   scripts/gpu_fewstep.sh OUT             OUT gets each round's model (roundR.pt), the distillation log,
#                                          the conditional chunk as g.tar (no resume checkpoint), GPU use
#                                          and the CUDA test of the states' collection: at most 8 files
#   SCALE=0.01 scripts/gpu_fewstep.sh OUT  a dry run with every size and time 100 times smaller (also on a CPU;
#                                          ANCHOR_STEPS, COND_DATA_ROOT and COND_EXTRA shorten it further)
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:?usage: gpu_fewstep.sh OUT}" && cd "$1" && pwd)"
rounds="${ROUNDS:-2}"
work="${WORK:-${TMPDIR:-/tmp}/moldiff-fewstep}"
rm -rf "$work" && mkdir -p "$work"
cd "$root"
source scripts/gpu_env.sh
n() { scaled_count "$1"; }
start_gpu_monitor "$out/gpu_use.txt"

mkdir -p "$work/g"
scripts/gpu_train.sh --experiment qm9_conditional --name qm9_conditional --out "$work/g" --run-dir "$work/run_g" \
  ${COND_DATA_ROOT:+--data-root "$COND_DATA_ROOT"} \
  --minutes "$(scaled "${COND_MIN:-8}")" --total-minutes "$(scaled "${COND_MIN:-8}")" \
  --init-from moldiff/pretrained/qm9_conditional.pt -- data.batch_size=512 optim.lr=6.0e-4 optim.warmup_steps=200 \
  data.num_workers=3 ${COND_EXTRA:-} >"$work/g/train.log" 2>&1 &
pg=$!

"$py" -m pytest -q -p no:cacheprovider tests/scripts/test_distill_fewstep.py -k gpu >"$out/cuda_test.txt" 2>&1 &

# the rounds stop at DISTILL_LIMIT seconds at the latest; the rounds finished by then are kept
PYTHONUNBUFFERED=1 timeout "${DISTILL_LIMIT:-520}" "$py" scripts/distill_fewstep.py --stage rounds --ckpt moldiff/pretrained/qm9_fast.pt \
  --out "$work/d" --rounds "$rounds" --grids "25:2:$(n 4000)" "50:1:$(n 1000)" --anchor "${ANCHOR_STEPS:-100}:1:$(n 1000)" \
  --seed 20 --traj-batch 1000 --batch-size "$(n 512)" --workers 4 --lr 3e-4 --ema 0.996 \
  --minutes "$(scaled "${ROUND_MIN:-2.2}")" >"$out/distill.log" 2>&1
echo "distillation: exit $?" | tee -a "$out/distill.log"
for r in $(seq 1 "$rounds"); do
  [ -f "$work/d/round$r/model.pt" ] && cp "$work/d/round$r/model.pt" "$out/round$r.pt"
done

wait $pg
echo "conditional: exit $?" | tee -a "$out/distill.log"
tar cf "$out/g.tar" -C "$work" --exclude='resume.ckpt*' --exclude=run g
[ -n "${dmon:-}" ] && kill "$dmon" 2>/dev/null
true
