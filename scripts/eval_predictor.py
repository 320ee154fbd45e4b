"""Test-split MAE of a property predictor, per property, beside the predictor error EDM reported
(its "QM9 (lower bound)" row).

  python scripts/eval_predictor.py                       # the shipped QM9 predictor
  python scripts/eval_predictor.py --predictor runs/qm9_property_predictor/checkpoints/last.ckpt \
      --json results/predictor_test.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from moldiff.data.cache import load_cache
from moldiff.metrics.properties import predict_array
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
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    pred = load_property_module(a.predictor)
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
    if a.json is not None:
        write_json(a.json, res)
    return res


if __name__ == "__main__":
    main()
