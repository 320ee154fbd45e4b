"""Conditional generation on QM9, EDM protocol: sample at target property values, predict the property of
each sample with an invariant predictor trained on the *other* half of the train split, report the MAE
beside the baselines and published models, and the samples' molecule stability.

  python scripts/eval_conditional.py --n 1000 --steps 100 --json results/cond.json
  python scripts/eval_conditional.py --properties gap --guidance 0 1 2 4 --n 300 --json results/cond_sweep.json
  python scripts/eval_conditional.py --joint gap mu --n 300 --json results/cond_joint.json
  python scripts/eval_conditional.py --properties mu --guide none --n 1000     (classifier-free guidance alone)
  python scripts/eval_conditional.py --generator moldiff/pretrained/qm9_fast.pt --guide qm9_guide --properties mu

``--guide`` sets the property-predictor guidance (``moldiff.sampling.guidance``; a predictor trained on the
generator's half): by default the one the generator records (as ``moldiff-sample`` does), ``none`` for
none; with a guide, ``--generator`` may be an unconditional model (predictor guidance alone).

Defaults: the shipped conditional generator and predictor (``--generator``/``--predictor`` take
checkpoints). One row per property (conditioned on that property alone) and classifier-free guidance
weight (``--guidance``; by default the weight and interval the generator records for that property, the
ones ``moldiff-sample`` uses); ``--joint`` conditions on all the listed properties at once and reports each
one's MAE. Targets and atom counts are
drawn together from molecules of the generator's half (``train_b``), as EDM does. Baselines (per property):

* shuffled: predictor on those ``train_b`` molecules, scored against shuffled targets (no information);
* #atoms:   the mean property per atom count (fitted on ``train_a``) as the prediction;
* QM9 data: predictor on the ``train_b`` molecules themselves (its own error: the lower bound).

Stability is the strict molecule stability (and the EDM-protocol one) of the raw samples (argmax
decoding). Rows are written to ``--json`` as they finish; a rerun with the same settings skips them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from moldiff.data.cache import load_cache
from moldiff.data.graph import data_to_molecules
from moldiff.generate import PREDICTOR_GUIDANCE_DEFAULTS, SHIPPED_GUIDES
from moldiff.metrics.evaluate import evaluate_molecules
from moldiff.metrics.properties import molecule_graphs, predict_array
from moldiff.sampling.guidance import PredictorGuidance
from moldiff.sampling.sampler import sample
from moldiff.training.checkpoint import load_model, pretrained_path
from moldiff.training.property_module import load_property_module
from moldiff.utils.io import atomic_write, file_sha256, shown_path

#: Published MAE rows (EDM protocol; units as in the table): EDM (Hoogeboom et al. 2022, table 3),
#: GeoLDM (Xu et al. 2023), GeoBFN (Song et al. 2024); and the baselines EDM reported.
PUBLISHED = {
    "shuffled (EDM)": {"alpha": 9.01, "gap": 1470, "homo": 645, "lumo": 1457, "mu": 1.616, "Cv": 6.857},
    "#atoms (EDM)": {"alpha": 3.86, "gap": 866, "homo": 426, "lumo": 813, "mu": 1.053, "Cv": 1.971},
    "EDM": {"alpha": 2.76, "gap": 655, "homo": 356, "lumo": 584, "mu": 1.111, "Cv": 1.101},
    "GeoLDM": {"alpha": 2.37, "gap": 587, "homo": 340, "lumo": 522, "mu": 1.108, "Cv": 1.025},
    "GeoBFN": {"alpha": 2.34, "gap": 577, "homo": 328, "lumo": 516, "mu": 0.998, "Cv": 0.949},
    "QM9 data (EDM's predictor)": {"alpha": 0.10, "gap": 64, "homo": 39, "lumo": 36, "mu": 0.043, "Cv": 0.040},
}


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"


def baselines(cache, pred, prop: str, pick: np.ndarray, targets: np.ndarray, rng) -> dict:
    col = cache.prop_columns([prop])[0]
    k = pred.properties.index(prop)
    real = [cache.data(int(i)) for i in pick]
    y_real = predict_array(pred, real)[:, k]
    half_a = cache.indices("train_a")
    na, ya = cache.num_atoms()[half_a], cache.props[half_a, col].numpy()
    per_count = {n: ya[na == n].mean() for n in np.unique(na)}
    guess = np.array([per_count.get(int(n), ya.mean()) for n in cache.num_atoms()[pick]])
    return {"shuffled": float(np.abs(y_real - rng.permutation(targets)).mean()),
            "n_atoms": float(np.abs(guess - targets).mean()),
            "data": float(np.abs(y_real - targets).mean())}


def run_row(gen, pred, cache, props: list[str], guidance: float, interval: list[float], a) -> dict:
    """Sample ``a.n`` molecules conditioned on ``props`` (targets from ``train_b``) with classifier-free guidance
    ``guidance`` at the diffusion times in ``interval``, predict, score."""
    rng = np.random.default_rng(a.seed)
    half_b = cache.indices("train_b")
    pick = rng.choice(half_b, a.n, replace=len(half_b) < a.n)
    cols = cache.prop_columns(props)
    targets = cache.props[pick][:, cols].numpy().astype(np.float64)  # [n, len(props)]
    counts = torch.as_tensor(cache.num_atoms()[pick], dtype=torch.long)
    full = torch.full((a.n, len(gen.properties)), float("nan"))
    for j, p in enumerate(props):
        if p in gen.properties:
            full[:, gen.properties.index(p)] = torch.as_tensor(targets[:, j], dtype=torch.float32)
    guide_t = None
    if a.guide_module is not None:
        guide_t = torch.full((a.n, len(a.guide_module.properties)), float("nan"))
        for j, p in enumerate(props):
            guide_t[:, a.guide_module.properties.index(p)] = torch.as_tensor(targets[:, j], dtype=torch.float32)
    grid = {"time_power": a.time_power, "temperature": a.temperature}
    t0, cpu0 = time.time(), time.process_time()
    mols = []
    for k in range(0, a.n, a.batch_size):
        sl = slice(k, min(a.n, k + a.batch_size))
        g = torch.Generator().manual_seed(a.seed * 1_000_003 + k)
        hook = None if guide_t is None else PredictorGuidance(a.guide_module, guide_t[sl], a.guide_scale,
                                                             a.guide_interval, a.guide_max_step, a.guide_weights,
                                                             type_scale=a.guide_type_scale)
        if guidance == 0 or not gen.properties:  # the unconditional prediction alone
            out = sample(gen.diffusion, gen.denoiser_fn(None), counts[sl], steps=a.steps, generator=g,
                         prediction_hook=hook, **grid)
        else:
            cond = gen.denoiser_fn(gen.normalize(full[sl]))
            out = sample(gen.diffusion, gen.denoiser_fn(None), counts[sl], steps=a.steps, guided_denoiser=cond,
                         guidance_scale=guidance, generator=g, guidance_interval=tuple(interval),
                         prediction_hook=hook, **grid)
        mols += data_to_molecules(out.cpu(), gen.vocab)
    seconds = time.time() - t0
    graphs, kept = molecule_graphs(mols, pred.vocab)
    y = predict_array(pred, graphs)
    quality = evaluate_molecules(mols, None, distribution=False)
    row = {"properties": props, "guidance_scale": guidance, "guidance_interval": list(interval), **grid,
           "n": a.n, "steps": a.steps, "seed": a.seed, "n_predicted": len(kept), "strict_mol_stability": quality["mol_stability"],
           "edm_mol_stability": quality["edm_mol_stability"], "connected_validity": quality["connected_validity"],
           "sampling_seconds": round(seconds, 1), "sampling_cpu_seconds": round(time.process_time() - cpu0, 1),
           "hardware": hardware(), "mae": {}, "baselines": {}}
    if a.guide_module is not None:
        row["predictor_guidance"] = {"predictor": shown_path(a.guide), "sha256": a.guide_sha256, "scale": a.guide_scale,
                                     "interval": list(a.guide_interval), "max_step": a.guide_max_step,
                                     **({"weights": a.guide_weights} if a.guide_weights else {}),
                                     **({"type_scale": a.guide_type_scale} if a.guide_type_scale else {})}
    for j, p in enumerate(props):
        yk = y[:, pred.properties.index(p)]
        row["mae"][p] = float(np.abs(yk - targets[kept, j]).mean())
        row["baselines"][p] = baselines(cache, pred, p, pick, targets[:, j], np.random.default_rng(a.seed + 1))
    return row


def row_key(props: list[str], guidance: float, interval: list[float], a) -> str:
    interval = "" if list(interval) == [0.0, 1.0] else f"|interval={interval[0]:g}-{interval[1]:g}"
    grid = "" if (a.time_power, a.temperature) == (1.0, 1.0) else f"|time_power={a.time_power:g}|temperature={a.temperature:g}"
    # the guide's file hash is part of the key: a retrained guide under the same name is another setting
    guide = "" if a.guide is None else (f"|guide={shown_path(a.guide)}#{a.guide_sha256[:8]}:{a.guide_scale:g}@{a.guide_interval[0]:g}-"
                                        f"{a.guide_interval[1]:g},cap={a.guide_max_step}"
                                        + "".join(f",{p}={w:g}" for p, w in sorted(a.guide_weights.items()) if p in props and w != 1)
                                        + (f",types={a.guide_type_scale:g}" if a.guide_type_scale else ""))
    return f"{'+'.join(props)}|w={guidance:g}{interval}{grid}{guide}|n={a.n}|steps={a.steps}|seed={a.seed}"


def print_table(rows: list[dict], units: dict[str, str]) -> None:
    print(f"{'property':<10}{'unit':<12}{'w':>4}{'moldiff':>10}{'shuffled':>10}{'#atoms':>10}{'data':>10}"
          f"{'EDM':>8}{'GeoLDM':>8}{'GeoBFN':>8}{'strict stab':>13}{'EDM stab':>10}")
    for r in rows:
        for p in r["properties"]:
            b = r["baselines"][p]
            label = p if len(r["properties"]) == 1 else f"{p}*"
            print(f"{label:<10}{units.get(p, ''):<12}{r['guidance_scale']:>4g}{r['mae'][p]:>10.4g}{b['shuffled']:>10.4g}"
                  f"{b['n_atoms']:>10.4g}{b['data']:>10.4g}{PUBLISHED['EDM'].get(p, float('nan')):>8.4g}"
                  f"{PUBLISHED['GeoLDM'].get(p, float('nan')):>8.4g}{PUBLISHED['GeoBFN'].get(p, float('nan')):>8.4g}"
                  f"{100 * r['strict_mol_stability']:>12.1f}%{100 * r['edm_mol_stability']:>9.1f}%")
    if any(len(r["properties"]) > 1 for r in rows):
        print("* conditioned on several properties at once")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default=None, help="conditional generator checkpoint (default: the shipped one)")
    ap.add_argument("--predictor", default=None, help="property predictor checkpoint (default: the shipped one)")
    ap.add_argument("--properties", nargs="+", default=None, help="one row per property (default: all the generator's)")
    ap.add_argument("--joint", nargs="+", default=None, help="one row conditioned on all of these at once")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--guidance", type=float, nargs="+", default=None,
                    help="classifier-free guidance weights, one row each (default: the one the generator records for "
                         "the property set, as moldiff-sample uses)")
    ap.add_argument("--guidance-interval", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                    help="apply guidance only at diffusion times t in [LO, HI] (default: the generator's recorded "
                         "interval with its recorded weight, else every step)")
    ap.add_argument("--time-power", type=float, default=1.0, help="time grid (1: uniform in t; as moldiff-sample's time_power)")
    ap.add_argument("--temperature", type=float, default=1.0,
                    help="categorical sampling temperature of the intermediate steps (as moldiff-sample's temperature)")
    ap.add_argument("--guide", default=None,
                    help="property-predictor checkpoint for predictor guidance (trained on the generator's half)")
    ap.add_argument("--guide-scale", type=float, default=None,
                    help="predictor-guidance step size (default: the generator's own, else 1)")
    ap.add_argument("--guide-interval", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                    help="predictor guidance at diffusion times t in [LO, HI] (default: the generator's own, else 0.1 1)")
    ap.add_argument("--guide-type-scale", type=float, default=None,
                    help="predictor guidance on the atom-type and charge logits too, at this step size (default: the "
                         "generator's recorded one for its own guide, else 0: coordinates only)")
    ap.add_argument("--guide-max-step", type=float, default=0.1,
                    help="largest predictor-guidance move of one atom in one step, Angstrom (0: no cap)")
    ap.add_argument("--guide-weight", action="append", default=[], metavar="PROP=W",
                    help="weight of PROP's error in predictor guidance (default: the generator's own, else 1)")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--dataset", default="qm9")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="results file (rows are added as they finish)")
    a = ap.parse_args(argv)
    if a.n < 1 or a.steps < 1 or a.batch_size < 1:
        ap.error("--n, --steps and --batch-size must be >= 1")
    if not (a.time_power > 0 and a.temperature > 0):
        ap.error("--time-power and --temperature must be > 0")

    gen = load_model(a.generator or pretrained_path("qm9_conditional"))
    pred = load_property_module(a.predictor)
    own = gen.recorded_predictor_guidance or {}
    a.guide = own.get("predictor") if a.guide is None else a.guide
    a.guide = None if a.guide in (None, "none") else a.guide
    recorded = own if a.guide == own.get("predictor") else {}
    a.guide_scale = recorded.get("scale", PREDICTOR_GUIDANCE_DEFAULTS["scale"]) if a.guide_scale is None else a.guide_scale
    a.guide_interval = list(recorded.get("interval", PREDICTOR_GUIDANCE_DEFAULTS["interval"]) if a.guide_interval is None
                            else a.guide_interval)
    if a.guide in SHIPPED_GUIDES and not Path(a.guide).exists():
        a.guide = str(pretrained_path(a.guide))
    a.guide_type_scale = recorded.get("type_scale", 0.0) if a.guide_type_scale is None else a.guide_type_scale
    a.guide_weights = dict(recorded.get("weights") or {})
    for item in a.guide_weight:
        prop, sep, w = item.partition("=")
        try:
            a.guide_weights[prop] = float(w)
        except ValueError:
            ap.error(f"--guide-weight {item!r}: expected PROP=WEIGHT")
    a.guide_module = None if a.guide is None else load_property_module(a.guide)
    a.guide_sha256 = None if a.guide is None else file_sha256(a.guide)
    a.guide_max_step = a.guide_max_step or None
    if not gen.properties and a.guide is None:
        ap.error(f"{gen.path} is an unconditional model (give --guide for predictor guidance)")
    steer = gen.properties or a.guide_module.properties
    if a.guide_module is not None and a.guide_module.vocab.to_dict() != gen.vocab.to_dict():
        ap.error(f"the guide {a.guide} and the generator {gen.path} have different atom vocabularies")
    sets = [list(a.joint)] if a.joint else [[p] for p in (a.properties or steer)]
    for props in sets:
        bad = [p for p in props if p not in steer or p not in pred.properties
               or (a.guide_module is not None and p not in a.guide_module.properties)]
        if bad:
            ap.error(f"{bad}: the generator conditions on {steer}, the predictor predicts {pred.properties}"
                     + ("" if a.guide_module is None else f", the guide on {a.guide_module.properties}"))
    cache = load_cache(a.dataset, a.data_root)  # a dataset name or a cache folder name under the data root
    done: dict = {}
    if a.json is not None and a.json.exists():
        # a row is one setting of one generator: another generator's rows of the same setting are kept beside it
        # (generator paths shown relative to the working folder; rows of older files may name them absolute)
        for r in json.loads(a.json.read_text()).get("rows", []):
            if r.get("generator"):
                r["generator"] = shown_path(r["generator"])
            done[r["key"], r.get("generator")] = r
    generator = shown_path(gen.path)
    rows = []
    for props in sets:
        own_w, own_interval = gen.guidance_for(props) if gen.properties else (1.0, [0.0, 1.0])
        for w in a.guidance or [own_w]:
            interval = list(a.guidance_interval or (own_interval if a.guidance is None else [0.0, 1.0]))
            key = row_key(props, w, interval, a)
            if (key, generator) in done:
                rows.append(done[key, generator])
                continue
            row = {"key": key, **run_row(gen, pred, cache, props, w, interval, a), "generator": generator,
                   "predictor": a.predictor or "shipped qm9_predictor"}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if a.json is not None:
                done[key, generator] = row
                a.json.parent.mkdir(parents=True, exist_ok=True)
                with atomic_write(a.json) as fh:
                    json.dump({"rows": list(done.values()), "published": PUBLISHED,
                               "threads": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS")}, fh, indent=1)
                    fh.write("\n")
    print_table(rows, gen.property_units or pred.units)
    res = {"rows": rows}
    print(json.dumps({"rows": len(rows)}))
    return res


if __name__ == "__main__":
    main()
