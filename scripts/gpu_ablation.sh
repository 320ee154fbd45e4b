#!/usr/bin/env bash
# One ~10-minute GPU window for the recipe ablation and the training-speed benchmarks (docs/recipe.md,
# docs/performance.md). On a bare GPU machine without RDKit:
#   1. the GPU to itself: the training step of the shipped preset at batch 1,024 and 2,048, in eager mode
#      (scripts/bench_training.py), and with COMPILE_S=N under torch.compile, cut off after N seconds;
#   2. the training stage of scripts/ablation.py: every variant at once on the one GPU (the step is bound by
#      kernel launches, so a few runs side by side fill it), each for the same training time from the
#      same seed, the small preset at batch 512 on the full QM9 cache. The GPU's throughput is shared: eleven
#      variants for 5 minutes reached ~1,000 steps each, too few to rank them; the default, seven variants for
#      7.5 minutes (new+fp32: float32 instead of bf16, for the precision floor), should give each about 2,400
#      (the whole script then takes about 9.5 minutes).
# Then, on a machine with RDKit, score the variants:
#   cat OUT/abl.tgz.part* | tar xz -C runs && python scripts/ablation.py --experiment qm9 --minutes M --stage score \
#       --out runs/abl --only <the same variants>
#   scripts/gpu_ablation.sh OUT             OUT gets bench.txt, abl.tgz.part* (exported EMA weights, logs, records,
#                                           no checkpoints), cuda_test.txt and gpu_use.txt
#   SCALE=0.02 scripts/gpu_ablation.sh OUT  a dry run with every budget 50 times shorter (also on a CPU)
# Needs the prepared cache data/processed/qm9 and the wheel folder .whl/ (docs/gpu_training.md).
# ABL_MINUTES (default 7.5) is the training time per variant, ABL_VARIANTS the comma list of variants,
# ABL_EXTRA overrides added to every variant, ABL_DATA_ROOT another cache root, COMPILE_S the compile cut-off
# (default 0: no compiled row; 100 s were not enough on an H200).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:?usage: gpu_ablation.sh OUT}" && cd "$1" && pwd)"
scale="${SCALE:-1}"
work="${WORK:-${TMPDIR:-/tmp}/moldiff-ablation}"
minutes="${ABL_MINUTES:-7.5}"
variants="${ABL_VARIANTS:-old,new,new-selfcond,new-precond,new-sum,new-features,new+fp32}"
rm -rf "$work" && mkdir -p "$work"
cd "$root"
source scripts/gpu_env.sh
abl_min="$("$py" -c "print(round($minutes * $scale, 3))")"
nvar="$(echo "$variants" | tr ',' '\n' | wc -l)"

if command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu_use.txt" 2>&1
  nvidia-smi dmon -s um -d 10 >>"$out/gpu_use.txt" 2>&1 &
  dmon=$!
  device=cuda
else
  device=cpu
fi

# 1. benchmarks, alone on the device
if [ "$scale" = 1 ]; then
  bench=(--device "$device" --presets medium --batch-sizes 1024,2048 --steps 20)
  compile_s="${COMPILE_S:-0}"
else
  bench=(--device "$device" --presets tiny --batch-sizes 16 --steps 1 --warmup 1)
  compile_s="${COMPILE_S:-0}"
fi
{
  echo "\$ bench_training.py ${bench[*]}"
  "$py" scripts/bench_training.py "${bench[@]}" --json-out "$work/bench_eager.json" 2>&1 | grep -v Warning
  if [ "$compile_s" -gt 0 ]; then
    echo "\$ bench_training.py ${bench[*]} --compile (cut off after $compile_s s)"
    timeout "$compile_s" "$py" scripts/bench_training.py "${bench[@]}" --compile \
      --json-out "$work/bench_compile.json" 2>&1 | grep -v Warning
    echo "compile run: exit ${PIPESTATUS[0]}"
  fi
} >"$out/bench.txt" 2>&1
cp "$work"/bench_*.json "$out/" 2>/dev/null

# the CUDA test of the training RNG, beside the ablation
pt=
if [ "$device" = cuda ]; then
  MOLDIFF_TEST_DATA_ROOT=data/processed "$py" -m pytest -q -p no:cacheprovider tests/training/test_train.py \
    -k noise_differs >"$out/cuda_test.txt" 2>&1 &
  pt=$!
fi

# 2. every ablation variant at once
extra=(model=small data.num_workers=1 ${ABL_EXTRA:-})
"$py" scripts/ablation.py --experiment qm9 --minutes "$abl_min" --stage train --out "$work/abl" \
  ${ABL_DATA_ROOT:+--data-root "$ABL_DATA_ROOT"} \
  --only "$variants" --parallel "$nvar" --threads 1 -- "${extra[@]}" >"$work/ablation.log" 2>&1
echo "ablation: exit $?" | tee -a "$work/ablation.log"
cp "$work/ablation.log" "$work/abl/" 2>/dev/null
[ -n "$pt" ] && wait $pt
tar czf "$work/abl.tgz" -C "$work" --exclude=checkpoints --exclude='resume.ckpt*' abl
split -b 15m -d "$work/abl.tgz" "$out/abl.tgz.part"   # files of at most 16 MiB; cat abl.tgz.part* | tar xz
ls -l "$out"
[ -n "${dmon:-}" ] && kill "$dmon" 2>/dev/null
true
