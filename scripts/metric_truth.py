#!/usr/bin/env python
"""Ground truth for the metrics: score the QM9 test split itself through the moldiff-evaluate path.

Writes the 13,083 test molecules of the QM9 cache (bonds and charges perceived from the DFT
geometry, see ``moldiff/data/qm9.py``) to an SDF, reads it back and evaluates it with exactly the
code ``moldiff-evaluate`` runs (``moldiff.cli.evaluate.evaluate_file``), and prints the table, the
comparison with EDM's published figures for the QM9 data (EDM, arXiv 2203.17003: 99.0 / 95.2 / 97.7) and a
JSON line.

    python scripts/metric_truth.py [--out demo/qm9_test.sdf] [--root data/processed] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from moldiff.chem.io import write_sdf
from moldiff.cli.evaluate import evaluate_file
from moldiff.data.registry import prepare_dataset
from moldiff.metrics import format_table
from moldiff.utils.io import atomic_write

#: EDM's figures for the QM9 data itself (explicit H), and our acceptance margins (points).
EDM_DATA = {"edm_atom_stability": 0.990, "edm_mol_stability": 0.952, "edm_validity": 0.977}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="SDF to write (default: a temporary file)")
    ap.add_argument("--root", default=None, help="dataset cache root (default $MOLDIFF_DATA or data/processed)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--json", default=None, help="also write the metrics JSON here")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    cache = prepare_dataset("qm9", root=args.root)
    idx = cache.indices(args.split)
    tmp = None
    out = args.out
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="moldiff_truth_")
        out = str(Path(tmp.name) / f"qm9_{args.split}.sdf")
    n = write_sdf((cache.molecule(int(i)) for i in idx), out)
    t_write = time.perf_counter() - t0
    t1 = time.perf_counter()
    metrics = evaluate_file(out, cache)
    t_eval = time.perf_counter() - t1
    print(format_table(metrics))
    print()
    print(f"QM9 {args.split} split, {n} molecules: wrote SDF in {t_write:.1f} s, read + evaluated in {t_eval:.1f} s")
    print("EDM protocol vs EDM's published figures for the QM9 data:")
    checks = {}
    for key, target in EDM_DATA.items():
        diff = 100 * (metrics[key] - target)
        checks[key] = abs(diff) <= 1.0
        print(f"  {key:20s} {100 * metrics[key]:6.2f} %  (EDM {100 * target:.1f} %, diff {diff:+.2f} points)")
    checks["strict_mol_stability>=0.99"] = metrics["mol_stability"] >= 0.99
    print(f"  strict mol_stability {100 * metrics['mol_stability']:6.2f} %  (target >= 99 %)")
    ok = all(checks.values())
    line = {"script": "metric_truth", "split": args.split, "n": n, "write_s": round(t_write, 2),
            "evaluate_s": round(t_eval, 2), "checks_pass": ok, "checks": checks,
            **{k: metrics[k] for k in ("atom_stability", "mol_stability", "validity", "connected_validity",
                                       "uniqueness", "novelty", "edm_atom_stability", "edm_mol_stability",
                                       "edm_validity", "protocol_version")}}
    print(json.dumps(line))
    if args.json:
        with atomic_write(args.json) as fh:
            json.dump(metrics, fh, indent=1)
    if tmp is not None:
        tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
