"""Conditional evaluation, EDM protocol: sample molecules at target values, predict their property with
an equivariant predictor trained on the *other* train half, report the MAE next to the baselines.

  python scripts/eval_conditional.py --generator runs/cond_gap/checkpoints/last.ckpt \
      --predictor runs/predictor_gap/checkpoints/last.ckpt --n 1000 --steps 100 --guidance 2

Targets and atom counts are drawn jointly from the generator's half (``train_b``), as EDM does. Baselines:
  * shuffled: predictor MAE on ``train_b`` molecules against shuffled labels (no information);
  * #atoms:   MAE of the best predictor that sees only the atom count (mean property per count, fitted on
              ``train_a``), evaluated on ``train_b``;
  * data:     predictor MAE on real ``train_b`` molecules (the lower bound).
Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from torch_geometric.data import Batch

from moldiff.data.cache import load_cache
from moldiff.sampling.sampler import sample
from moldiff.training.checkpoint import load_model
from moldiff.training.property_module import load_property_module


@torch.no_grad()
def predict(pred, graphs: list, bs: int = 256) -> np.ndarray:
    out = []
    for k in range(0, len(graphs), bs):
        out.append(pred.predict_batch(Batch.from_data_list(graphs[k : k + bs])).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", required=True)
    ap.add_argument("--predictor", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--guidance", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--dataset", default="qm9")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    gen_model = load_model(a.generator)
    pred = load_property_module(a.predictor)
    prop = pred.hparams["prop"]
    if gen_model.properties != [prop]:
        sys.exit(f"error: generator conditions on {gen_model.properties}, predictor predicts {prop!r}")
    cache = load_cache(a.dataset, a.data_root)  # a dataset name or a cache folder name under the data root
    col = cache.prop_columns([prop])[0]
    rng = np.random.default_rng(a.seed)
    half_b, half_a = cache.indices("train_b"), cache.indices("train_a")
    pick = rng.choice(half_b, a.n, replace=len(half_b) < a.n)
    targets = cache.props[pick, col].float()
    counts = torch.as_tensor(cache.num_atoms()[pick], dtype=torch.long)

    t0 = time.time()
    y_gen = []
    for k in range(0, a.n, a.batch_size):
        sl = slice(k, min(a.n, k + a.batch_size))
        props = gen_model.normalize(targets[sl].view(-1, 1))
        g = torch.Generator().manual_seed(a.seed * 1_000_003 + k)
        out = sample(gen_model.diffusion, gen_model.denoiser_fn(None), counts[sl], steps=a.steps,
                     guided_denoiser=gen_model.denoiser_fn(props), guidance_scale=a.guidance, generator=g)
        with torch.no_grad():
            y_gen.append(pred.predict_batch(out).cpu().numpy())
    sample_s = time.time() - t0
    y_gen = np.concatenate(y_gen)
    mae_gen = float(np.abs(y_gen - targets.numpy()).mean())

    real = [cache.data(int(i)) for i in pick]
    y_real = predict(pred, real)
    mae_data = float(np.abs(y_real - targets.numpy()).mean())
    mae_shuffled = float(np.abs(y_real - rng.permutation(targets.numpy())).mean())
    na, ya = cache.num_atoms()[half_a], cache.props[half_a, col].numpy()
    per_count = {n: ya[na == n].mean() for n in np.unique(na)}
    guess = np.array([per_count.get(int(n), ya.mean()) for n in counts.numpy()])
    mae_atoms = float(np.abs(guess - targets.numpy()).mean())
    unit = cache.meta["units"].get(prop, "")
    res = {"property": prop, "unit": unit, "n": a.n, "steps": a.steps, "guidance_scale": a.guidance,
           "mae_moldiff": mae_gen, "mae_shuffled": mae_shuffled, "mae_n_atoms": mae_atoms, "mae_data": mae_data,
           "sampling_seconds": sample_s, "generator": a.generator, "predictor": a.predictor}
    print(f"{'row':<12}{prop} MAE ({unit})")
    for name, key in (("shuffled", "mae_shuffled"), ("#atoms", "mae_n_atoms"), ("moldiff", "mae_moldiff"), ("QM9 data", "mae_data")):
        print(f"{name:<12}{res[key]:.4g}")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
