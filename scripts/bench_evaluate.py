#!/usr/bin/env python
"""Benchmark ``evaluate_molecules`` on QM9-sized molecules (target: 10,000 molecules < 60 s, one core).

Takes ``--n`` molecules from the QM9 test split (cycling through it if ``--n`` is larger), once
with their own bonds (SDF-like input) and, with ``--xyz``, once with bonds removed (XYZ-like input,
bonds inferred). Prints a table and a JSON line. Pin to one core with e.g. ``taskset -c 0``.

    python scripts/bench_evaluate.py --n 10000 [--xyz] [--no-reference]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from moldiff.chem.molecule import Molecule
from moldiff.data.registry import prepare_dataset
from moldiff.metrics import PROTOCOL_VERSION, evaluate_molecules


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--root", default=None)
    ap.add_argument("--xyz", action="store_true", help="also time bond-less (XYZ-like) input")
    ap.add_argument("--no-reference", action="store_true", help="skip novelty and distribution distances")
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")

    cache = prepare_dataset("qm9", root=args.root)
    idx = cache.indices("test")
    mols = [cache.molecule(int(idx[k % len(idx)])) for k in range(args.n)]
    reference = None if args.no_reference else cache
    rows = []
    if reference is not None:  # warm the reference statistics / SMILES set so they are timed apart
        t = time.perf_counter()
        evaluate_molecules(mols[:1], reference)
        rows.append(("reference setup (once per process)", 1, time.perf_counter() - t))
    t = time.perf_counter()
    evaluate_molecules(mols, reference)
    rows.append(("own bonds (SDF-like)", args.n, time.perf_counter() - t))
    if args.xyz:
        bare = [Molecule(m.elements, m.pos, name=m.name) for m in mols]
        t = time.perf_counter()
        evaluate_molecules(bare, reference)
        rows.append(("no bonds (XYZ-like, EDM-inferred)", args.n, time.perf_counter() - t))
    print(f"{'case':40s} {'molecules':>9s} {'seconds':>8s} {'ms/mol':>7s}")
    for name, n, s in rows:
        print(f"{name:40s} {n:9d} {s:8.2f} {1000 * s / n:7.3f}")
    print(json.dumps({"bench": "evaluate", "protocol_version": PROTOCOL_VERSION, "cpu": platform.processor() or platform.machine(),
                      "cpu_count_visible": len(os.sched_getaffinity(0)), "results": [
                          {"case": name, "n": n, "seconds": round(s, 3), "ms_per_mol": round(1000 * s / n, 3)} for name, n, s in rows]}))


if __name__ == "__main__":
    main()
