#!/usr/bin/env python
"""Sampling settings side by side: the same model, seed and molecule count under several settings of
``moldiff-sample`` (time grid, temperature, sampler, steps), scored with ``moldiff-evaluate``'s metrics.

Each variant is a comma-separated list of ``key=value`` sampling options; every variant samples through
the Python API, which runs the code of ``moldiff-sample`` (so a row is reproduced by
``moldiff-sample <options> n_samples=N seed=S decode=argmax out=x.sdf`` then ``moldiff-evaluate input=x.sdf``).
Rows are appended to ``--json`` as they finish; a rerun skips the rows already there.

    python scripts/sampler_sweep.py --n 1000 --json results/sampler_sweep_25.json \\
        "steps=25" "steps=25,time_power=2" "steps=25,time_power=2,temperature=0.5"
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import moldiff
from moldiff.utils.io import atomic_write

#: options a variant may set, with their types
OPTIONS = {"steps": int, "time_power": float, "temperature": float, "sampler": str, "guidance_scale": float}
METRICS = ("mol_stability", "atom_stability", "validity", "connected_validity", "uniqueness",
           "edm_mol_stability", "edm_atom_stability", "edm_validity")


def parse_variant(text: str) -> dict:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in OPTIONS:
            raise SystemExit(f"variant {text!r}: {part!r} is not one of {sorted(OPTIONS)} as key=value")
        out[key] = OPTIONS[key](value)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="+", help="e.g. steps=25,time_power=2,temperature=0.5")
    ap.add_argument("--ckpt", default="qm9", help="shipped model name or checkpoint path (default: qm9)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="results file (rows are added as they finish)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = json.loads(Path(a.json).read_text())["rows"] if a.json and Path(a.json).exists() else []
    variants = [(text, parse_variant(text)) for text in a.variants]  # all checked before any sampling
    model = moldiff.load_pretrained(a.ckpt, device="cpu")
    for text, opts in variants:
        key = {"ckpt": a.ckpt, "n": a.n, "seed": a.seed, **opts}
        if any(r["settings"] == key for r in rows):
            print(f"{text}: already in {a.json}")
            continue
        t0 = time.perf_counter()
        steps = opts.pop("steps", 100)
        mols = model.sample(a.n, steps=steps, seed=a.seed, decode="argmax", **opts)
        seconds = time.perf_counter() - t0
        m = moldiff.evaluate(mols, steps=steps)
        row = {"settings": key, "variant": text, "sampling_seconds": round(seconds, 1),
               **{k: m[k] for k in METRICS}}
        rows.append(row)
        print(f"{text:45s} strict mol {100 * m['mol_stability']:5.1f} %  valid {100 * m['validity']:5.1f} %  "
              f"connected {100 * m['connected_validity']:5.1f} %  EDM mol {100 * m['edm_mol_stability']:5.1f} %  "
              f"({seconds:.0f} s)", flush=True)
        if a.json:
            with atomic_write(a.json) as fh:
                json.dump({"hardware": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
                           "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
