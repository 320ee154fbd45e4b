#!/usr/bin/env bash
# Few-step distillation of a conditional generator for 50 sampling steps, in three rounds (about 70 minutes on
# two CPU threads, most of it training; each round trains for a fixed time, so a faster machine trains more):
#   round 1  scripts/distill_fewstep.py --stage rounds: 400 guided trajectories of 50 steps (guidance 2, a random
#            subset of the properties given, as in training) and 100 of 100 steps as the anchor; 25 minutes
#   round 2  the round-1 model teaches itself on its own trajectories: 200 at guidance 4 and 200 at guidance 2;
#            12 minutes from the round-1 weights
#   round 3  the starting model teaches again, on the round-2 model's trajectories: 200 with mu alone given at
#            guidance 4 on every step (the model samples mu alone with 4, from t = 0.3 on) and 200 at guidance 2;
#            12 minutes from the round-2 weights
#   scripts/distill_conditional.sh START OUT [distill_fewstep.py options, e.g. --threads 2 or --device cuda]
# START is the undistilled conditional generator; OUT/model.pt the distilled one (OUT/round1, round2 and round3
# hold each round's model and record, OUT/round1.log, round2.log and round3.log the logs). SCALE=0.01 makes every
# size and time 100 times smaller (a dry run; add e.g. --data-root and --dataset for a small cache, and
# --max-steps).
set -euo pipefail
start="${1:?usage: distill_conditional.sh START OUT [distill_fewstep.py options]}"
out="${2:?usage: distill_conditional.sh START OUT [distill_fewstep.py options]}"
shift 2
root="$(cd "$(dirname "$0")/.." && pwd)"
[ -z "${PYTHON:-}" ] && [ -x "$root/.venv/bin/python" ] && export PYTHON="$root/.venv/bin/python"
source "$root/scripts/gpu_env.sh"  # $py; on a bare GPU machine, hydra from the wheel folder and the repo on the path
n() { scaled_count "$1"; }
m() { scaled "$1"; }
d() { "$py" "$root/scripts/distill_fewstep.py" "$@"; }
mkdir -p "$out"

d --stage rounds --ckpt "$start" --out "$out" --rounds 1 --grids "50:1:$(n 400)" --anchor "100:1:$(n 100)" \
  --minutes "$(m 25)" --seed 300 "$@" 2>&1 | tee "$out/round1.log"
r1="$out/round1/model.pt"

d --stage states --ckpt "$r1" --steps 50 --time-power 1 --n-traj "$(n 200)" --guidance 4 --seed 500 \
  --out "$out/round2/g4" "$@" 2>&1 | tee "$out/round2.log"
d --stage states --ckpt "$r1" --steps 50 --time-power 1 --n-traj "$(n 200)" --guidance 2 --seed 501 \
  --out "$out/round2/g2" "$@" 2>&1 | tee -a "$out/round2.log"
d --stage train --ckpt "$r1" --init "$r1" --states "$out/round2/g4/states.pt" "$out/round2/g2/states.pt" \
  --minutes "$(m 12)" --out "$out/round2" "$@" 2>&1 | tee -a "$out/round2.log"
r2="$out/round2/model.pt"

d --stage states --ckpt "$start" --driver "$r2" --steps 50 --time-power 1 --n-traj "$(n 200)" --given mu \
  --guidance 4 --seed 600 --out "$out/round3/mu" "$@" 2>&1 | tee "$out/round3.log"
d --stage states --ckpt "$start" --driver "$r2" --steps 50 --time-power 1 --n-traj "$(n 200)" --guidance 2 \
  --seed 601 --out "$out/round3/g2" "$@" 2>&1 | tee -a "$out/round3.log"
d --stage train --ckpt "$start" --init "$r2" --states "$out/round3/mu/states.pt" "$out/round3/g2/states.pt" \
  --minutes "$(m 12)" --out "$out/round3" "$@" 2>&1 | tee -a "$out/round3.log"
cp "$out/round3/model.pt" "$out/model.pt"
echo "-> $out/model.pt"
