#!/usr/bin/env python
"""Average the weights of models of one architecture (a "model soup"), e.g. a fine-tuned model and its start.

    python scripts/average_weights.py moldiff/pretrained/qm9_fast.pt runs/gpu27/round2.pt --out runs/soup.pt

Writes a model file loadable with ``moldiff-sample ckpt=OUT`` (``.pt`` exports or Lightning ``.ckpt`` files as
inputs; the first one's hyper-parameters are kept). ``--weights`` gives the mixing weights (default: equal).
Floating-point tensors are averaged; integer buffers (counters) are taken from the first model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from moldiff.utils.io import atomic_write


def _net_state(ckpt: dict, path: str) -> dict[str, torch.Tensor]:
    sd = ckpt.get("state_dict")
    if sd is None:
        raise SystemExit(f"average_weights.py: {path} holds no state_dict (not a moldiff model file)")
    return {k: v for k, v in sd.items() if k.startswith("net.")}


def average(paths: list[str], weights: list[float] | None = None) -> dict:
    """The weighted mean of the models' network weights, with the first model's hyper-parameters."""
    weights = weights or [1.0] * len(paths)
    if len(weights) != len(paths) or sum(weights) <= 0 or min(weights) < 0:
        raise SystemExit("average_weights.py: give one non-negative weight per model, not all zero")
    ckpts = [torch.load(p, map_location="cpu", weights_only=False) for p in paths]
    states = [_net_state(c, p) for c, p in zip(ckpts, paths)]
    for p, s in zip(paths[1:], states[1:]):
        if s.keys() != states[0].keys() or any(s[k].shape != states[0][k].shape for k in s):
            raise SystemExit(f"average_weights.py: {p} is not the same architecture as {paths[0]}")
    total = sum(weights)
    out = {}
    for k, v in states[0].items():
        if v.is_floating_point():
            out[k] = sum(w * s[k].double() for w, s in zip(weights, states)).div(total).to(v.dtype)
        else:
            out[k] = v.clone()
    record = {"averaged": [{"file": str(p), "weight": w, "training_record": c.get("training_record")}
                           for p, w, c in zip(paths, weights, ckpts)]}
    return {"state_dict": out, "hyper_parameters": ckpts[0]["hyper_parameters"], "training_record": record}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="two or more model files of one architecture")
    ap.add_argument("--out", required=True)
    ap.add_argument("--weights", type=float, nargs="+", default=None)
    a = ap.parse_args(argv)
    if len(a.models) < 2:
        ap.error("give at least two models")
    for p in a.models:
        if not Path(p).is_file():
            raise SystemExit(f"average_weights.py: {p}: no such file")
    soup = average(a.models, a.weights)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(a.out, "wb") as fh:
        torch.save(soup, fh)
    print(f"{len(a.models)} models averaged -> {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
