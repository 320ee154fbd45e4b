"""Test-split MAE of a property predictor, per property, beside the predictor error EDM reported
(its "QM9 (lower bound)" row).

  python scripts/eval_predictor.py                       # the shipped QM9 predictor
  python scripts/eval_predictor.py --predictor runs/qm9_property_predictor/checkpoints/last.ckpt \
      --json results/predictor_test.json

``--denoised-by GENERATOR --times T...`` also scores the predictor as predictor guidance uses it: on the
generator's predictions of each molecule from its copy noised to diffusion time T (coordinates and atom-type /
charge probabilities; a random subset of the molecule's own properties given, as in the generator's
training), one MAE row per T, with the same noise for every predictor (``--seed``):

  python scripts/eval_predictor.py --predictor qm9_guide --denoised-by qm9_conditional --limit 1000 \
      --times 0.05 0.2 0.4 0.6 0.8 1 --json results/guide_denoised.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from moldiff.data.cache import load_cache
from moldiff.generate import SHIPPED_GUIDES
from moldiff.metrics.properties import predict_array
from moldiff.training.checkpoint import pretrained_path
from moldiff.training.property_module import load_property_module
from moldiff.utils.io import write_json

#: EDM's predictor MAE on QM9 (Hoogeboom et al. 2022, table 3, "QM9 (lower bound)").
EDM_PREDICTOR = {"alpha": 0.10, "gap": 64, "homo": 39, "lumo": 36, "mu": 0.043, "Cv": 0.040}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--predictor", default=None, help="predictor checkpoint (default: the shipped one)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None, help="at most this many molecules of the split")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--dataset", default="qm9")
    ap.add_argument("--denoised-by", default=None, metavar="GENERATOR",
                    help="also score on this generator's predictions of the noised molecules (a shipped name or a checkpoint)")
    ap.add_argument("--times", type=float, nargs="+", default=[0.05, 0.2, 0.4, 0.6, 0.8, 1.0],
                    help="diffusion times of --denoised-by, one row each")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    if not all(0.0 <= t <= 1.0 for t in a.times):
        ap.error(f"--times must lie in [0, 1], got {a.times}")
    pred = load_property_module(pretrained_path(a.predictor) if a.predictor in SHIPPED_GUIDES and not Path(a.predictor).exists()
                                else a.predictor)
    cache = load_cache(a.dataset, a.data_root)
    idx = cache.indices(a.split)[: a.limit]
    t0 = time.time()
    y = predict_array(pred, [cache.data(int(i)) for i in idx])
    truth = cache.props[idx][:, cache.prop_columns(pred.properties)].numpy()
    mae = {p: float(np.abs(y[:, k] - truth[:, k]).mean()) for k, p in enumerate(pred.properties)}
    res = {"split": a.split, "n": len(idx), "mae": mae, "units": pred.units, "edm_predictor_mae": EDM_PREDICTOR,
           "predictor": a.predictor or "shipped qm9_predictor", "seconds": round(time.time() - t0, 1)}
    print(f"{'property':<10}{'unit':<12}{'moldiff':>10}{'EDM':>10}")
    for p in pred.properties:
        print(f"{p:<10}{pred.units.get(p, ''):<12}{mae[p]:>10.4g}{EDM_PREDICTOR.get(p, float('nan')):>10.4g}")
    if a.denoised_by:
        res["denoised_by"] = a.denoised_by
        res["denoised_mae"] = denoised_mae(pred, [cache.data(int(i), pred.properties) for i in idx], a.denoised_by,
                                           a.times, a.seed)
        print(f"\non {a.denoised_by}'s predictions of the noised molecules:")
        print(f"{'t':<6}" + "".join(f"{p:>10}" for p in pred.properties))
        for t, row in res["denoised_mae"].items():
            print(f"{t:<6}" + "".join(f"{row[p]:>10.4g}" for p in pred.properties))
    if a.json is not None:
        write_json(a.json, res)
    return res


def denoised_mae(pred, data: list, generator: str, times: list[float], seed: int, batch_size: int = 64) -> dict:
    """MAE per property of ``pred`` on ``generator``'s predictions of ``data`` noised to each time in ``times``."""
    pred.set_inputs({"generator": generator, "t_range": [0.0, 1.0]})
    out = {}
    for t in times:
        torch.manual_seed(seed)
        err = []
        for b in DataLoader(data, batch_size=batch_size):
            pos, h = pred.denoised_inputs(b, t)
            with torch.no_grad():
                y = pred.net(pos, h, b.edge_index, b.batch, b.num_graphs) * pred.std + pred.mean
            err.append((y - b.y.float().view(b.num_graphs, -1)).abs())
        e = torch.cat(err).mean(0)
        out[f"{t:g}"] = {p: float(e[k]) for k, p in enumerate(pred.properties)}
    pred.set_inputs(None)
    return out


if __name__ == "__main__":
    main()
