"""Recipe ablation: train each variant for the same budget from the same seed, sample and score it.

Each variant is a list of Hydra overrides on top of ``--experiment`` (default ``qm9_cpu``: the small
preset and the current recipe). For every variant: a training chunk through ``scripts/gpu_train.py``
for ``--minutes`` of training time or ``--train-steps`` steps (the learning rate decays over that
budget; EMA weights exported to ``OUT/<variant>/model.pt``), then ``moldiff-sample`` of ``--samples``
molecules at ``--steps`` steps (seed 0) and ``moldiff-evaluate``. Prints a markdown table and writes one
JSON per variant under ``--out``; finished stages are not run again (``--force`` reruns), so an
interrupted ablation resumes. ``--stage train`` runs only the training (a GPU machine without RDKit),
``--stage score`` only the sampling and scoring (copy ``OUT/*/model.pt`` and ``train.json`` back first).

  python scripts/ablation.py --minutes 15 --out runs/ablation                 # every variant
  python scripts/ablation.py --minutes 15 --only new,old --parallel 2 --threads 1
  python scripts/ablation.py --minutes 15 --out runs/ablation -- model=medium   # overrides for every variant
  python scripts/ablation.py --experiment qm9 --minutes 1 --stage train --out abl   # on a GPU, then here:
  python scripts/ablation.py --experiment qm9 --minutes 1 --stage score --out abl
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

#: name -> (description, overrides of the current recipe)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "old": ("previous default: mean aggregation, linear coordinate head, SNR-clipped coordinate loss, constant LR",
            ["model=legacy_small", "diffusion.pos_weighting=time", "optim.schedule=constant"]),
    "old+precond": ("previous default + the preconditioned coordinate head and its loss",
                    ["model=legacy_small", "model.coord_head=precond", "model.pos_update_layers=2", "optim.schedule=constant"]),
    "old+selfcond": ("previous default + self-conditioning",
                     ["model=legacy_small", "model.self_conditioning=true", "diffusion.pos_weighting=time", "optim.schedule=constant"]),
    "old+lr_decay": ("previous default + cosine learning-rate decay",
                     ["model=legacy_small", "diffusion.pos_weighting=time"]),
    "new": ("current recipe (all changes)", []),
    "new-selfcond": ("current recipe without self-conditioning", ["model.self_conditioning=false"]),
    "new-precond": ("current recipe with the linear coordinate head and SNR-clipped coordinate loss",
                    ["model.coord_head=linear", "diffusion.pos_weighting=time"]),
    "new-sum": ("current recipe with mean aggregation", ["model.aggregation=mean", "model.agg_norm=1.0"]),
    "new-features": ("current recipe without size embedding, valency and raw-distance features",
                     ["model.size_embedding=false", "model.valency_feature=false", "model.distance_feature=false"]),
    "new-lr_decay": ("current recipe with a constant learning rate", ["optim.schedule=constant"]),
    "new+beta_t": ("current recipe with t ~ Beta(1.8, 1.8) in training", ["diffusion.t_sampling=beta"]),
    "new+fp32": ("current recipe trained in float32 instead of bf16 autocast (the same on a CPU, whose recipe is "
                 "float32 already)", ["trainer.precision=32-true"]),
    "new+sc_lookahead": ("current recipe with the self-conditioning input predicted at t + U(0, 0.1), as sampling "
                         "feeds back the previous step's prediction", ["diffusion.self_cond_lookahead=0.1"]),
    "new+sc_rollout": ("current recipe trained on the state one sampler step from t + U(0, 0.1) reaches at t, "
                       "with the prediction that step used fed back", ["diffusion.self_cond_rollout=0.1"]),
}


def hms(minutes: float) -> str:
    s = int(round(minutes * 60))
    return f"00:{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def run(cmd: list[str], log: Path, env: dict) -> None:
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}); see {log}")


def last_val_loss(run_dir: Path) -> float | None:
    best = None
    for f in sorted((run_dir / "logs").rglob("metrics.csv")):
        for row in csv.DictReader(open(f)):
            if row.get("val/loss"):
                best = float(row["val/loss"])
    return best


def train_variant(name: str, a: argparse.Namespace, env: dict) -> None:
    """Train one variant and export its EMA weights to ``OUT/<name>/model.pt`` (plus ``train.json``)."""
    out = a.out / name
    if (out / "train.json").exists() and not a.force:
        return
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    budget = ([f"trainer.max_steps={a.train_steps}", f"optim.total_steps={a.train_steps}", "optim.total_minutes=null"]
              if a.train_steps else [f"trainer.max_time={hms(a.minutes)}", f"optim.total_minutes={a.minutes}"])
    t0 = time.time()
    run([sys.executable, str(REPO / "scripts" / "gpu_train.py"), "--out", str(out), "--run-dir", str(out / "run"),
         "--minutes", str(a.minutes), "--experiment", a.experiment,
         *(["--data-root", a.data_root] if a.data_root else []), "--",
         f"seed={a.seed}", *budget, "trainer.enable_progress_bar=false", f"data.val_size={a.val_size}",
         *a.extra, *VARIANTS[name][1]], log, env)  # a variant's own overrides win (old: model=legacy_small)
    for f in (out / "resume.ckpt",):  # the resume checkpoint is not needed for scoring
        f.unlink(missing_ok=True)
    for f in out.glob("resume.ckpt.part*"):
        f.unlink()
    rec = json.loads((out / "record.json").read_text())
    info = {"steps": rec["global_step"], "train_wall_s": round(time.time() - t0), "hardware": rec["hardware"],
            "molecules_per_second": rec.get("molecules_per_second"), "val_loss": last_val_loss(out / "run")}
    (out / "train.json").write_text(json.dumps(info, indent=1) + "\n")


def precision(model_file: Path, a: argparse.Namespace) -> dict:
    """x0 RMS error (Angstrom) at t = 0.001 and 0.01 on the first 200 test molecules of ``--precision-cache``
    (``scripts/precision_check.py``): how finely the variant corrects barely noisy coordinates."""
    if a.precision_cache in (None, "", "null", "none"):
        return {"x0_rms_t0001": None, "x0_rms_t001": None}
    rows = _precision_check().check(str(model_file), _precision_batch(a.precision_cache, a.data_root),
                                    times=(0.001, 0.01))
    return {"x0_rms_t0001": rows[0]["model_x0_rms"], "x0_rms_t001": rows[1]["model_x0_rms"]}


def _precision_check():
    if str(REPO / "scripts") not in sys.path:
        sys.path.insert(0, str(REPO / "scripts"))
    import precision_check

    return precision_check


@functools.lru_cache(maxsize=None)
def _precision_batch(cache_name: str, data_root: str | None):
    """One batch for every variant (the variants are scored in threads of one process)."""
    return _precision_check().first_test_molecules(cache_name, data_root)


def score_variant(name: str, a: argparse.Namespace, env: dict) -> dict:
    """Sample ``--samples`` molecules from ``OUT/<name>/model.pt`` and score them; ``OUT/<name>.json``."""
    out = a.out / name
    result_file = a.out / f"{name}.json"
    if result_file.exists() and not a.force:
        res = json.loads(result_file.read_text())
        if "atom_stability" not in res and (out / "metrics.json").exists():  # scored before these columns
            m = json.loads((out / "metrics.json").read_text())
            res.update(atom_stability=m.get("atom_stability"), validity=m.get("validity"))
            result_file.write_text(json.dumps(res, indent=1) + "\n")
        if "x0_rms_t0001" not in res and (out / "model.pt").exists():  # scored before the precision columns
            res.update(precision(out / "model.pt", a))
            result_file.write_text(json.dumps(res, indent=1) + "\n")
        return res
    log = out / "log.txt"
    sdf = out / "samples.sdf"
    run([str(BIN / "moldiff-sample"), f"ckpt={out / 'model.pt'}", f"n_samples={a.samples}", f"steps={a.steps}", "seed=0", "decode=argmax",
         f"out={sdf}", "progress=false", "resume=false"], log, env)
    run([str(BIN / "moldiff-evaluate"), f"input={sdf}", f"reference={a.reference}", f"json={out / 'metrics.json'}",
         *([f"data_root={a.data_root}"] if a.data_root else [])], log, env)
    m = json.loads((out / "metrics.json").read_text())
    tr = json.loads((out / "train.json").read_text())
    res = {
        "variant": name, "description": VARIANTS[name][0], "overrides": VARIANTS[name][1],
        "atom_stability": m.get("atom_stability"), "validity": m.get("validity"),
        "mol_stability": m.get("mol_stability"), "connected_validity": m.get("connected_validity"),
        "edm_mol_stability": m.get("edm_mol_stability"),
        "bond_length_w1": ((m.get("distribution") or {}).get("bond_length_w1") or {}).get("single"),
        **precision(out / "model.pt", a), **tr, "budget_min": None if a.train_steps else a.minutes, "budget_steps": a.train_steps,
        "samples": a.samples, "sampling_steps": a.steps, "threads": a.threads, "experiment": a.experiment,
    }
    result_file.write_text(json.dumps(res, indent=1) + "\n")
    return res


def one(name: str, a: argparse.Namespace) -> dict | None:
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    if a.stage in ("train", "all"):
        train_variant(name, a, env)
    if a.stage in ("score", "all"):
        return score_variant(name, a, env)
    return None


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def num(x, fmt: str = "{:.4f}") -> str:
    return "-" if x is None else fmt.format(x)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=15.0, help="training time per variant")
    ap.add_argument("--train-steps", type=int, default=None,
                    help="train each variant for this many steps instead of --minutes (fairer on a shared machine)")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-size", type=int, default=500)
    ap.add_argument("--only", default=None, help="comma list of variants (default: all)")
    ap.add_argument("--parallel", type=int, default=1, help="variants run at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per variant")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "ablation")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--reference", default="qm9", help="reference dataset of moldiff-evaluate (null: none)")
    ap.add_argument("--data-root", default=None, help="dataset cache root for training and the reference")
    ap.add_argument("--precision-cache", default="qm9",
                    help="cache whose first 200 test molecules give the x0 precision columns (null: skip them)")
    ap.add_argument("--experiment", default="qm9_cpu", help="base recipe (qm9 for the GPU recipe)")
    ap.add_argument("--stage", default="all", choices=["train", "score", "all"],
                    help="train only (e.g. on a GPU machine without RDKit), score only (here), or both")
    ap.add_argument("extra", nargs="*", help="overrides added to every variant (e.g. data.limit=300 for a smoke run)")
    a = ap.parse_args(argv)
    names = a.only.split(",") if a.only else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    a.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=a.parallel) as pool:
        rows = [r for r in pool.map(lambda n: one(n, a), names) if r is not None]
    if not rows:
        return
    budget = f"{a.train_steps} training steps" if a.train_steps else f"{a.minutes:g} training minutes"
    print(f"\n{budget} per variant, {a.threads} thread(s) each, {a.parallel} at once; "
          f"{a.samples} samples at {a.steps} steps (seed 0)\n")
    print("| variant | atom stab. | validity | strict mol. stab. | connected validity | EDM mol. stab. | single-bond length W1 (A) | "
          "x0 RMS t = 0.001 (A) | x0 RMS t = 0.01 (A) | val. loss | steps | train wall (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        w1, x1, x2 = (num(r.get(k)) for k in ("bond_length_w1", "x0_rms_t0001", "x0_rms_t001"))
        vl = num(r["val_loss"], "{:.3f}")
        print(f"| {r['variant']} | {pct(r.get('atom_stability'))} | {pct(r.get('validity'))} | {pct(r['mol_stability'])} | {pct(r['connected_validity'])} | {pct(r['edm_mol_stability'])} | "
              f"{w1} | {x1} | {x2} | {vl} | {r['steps']} | {r['train_wall_s']} |")


if __name__ == "__main__":
    main()
