"""How precisely the local chemistry fixes the bond angles of a dataset: the spread of each angle i-j-k,
and of the distance between its two ends, among the angles of the same environment (elements of the three
atoms, the degree of the centre, the centre's neighbours with their bond orders, the two bonds' orders, and
whether i and k are also joined without going through j, i.e. the angle lies in a ring).

A denoiser can remove the noise along an angle only to the extent that it knows the clean angle; when the
same environment spans a range of angles wider than the noise, that knowledge must come from the rest of
the molecule.

  python scripts/angle_spread.py --n 20000 --top 8 --json results/angle_spread.json
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from moldiff.data.cache import load_cache
from moldiff.utils.io import write_json


def connected_without(adj: np.ndarray, a: int, b: int, skip: int) -> bool:
    """Whether ``a`` reaches ``b`` in the bond graph ``adj`` without visiting ``skip``."""
    seen, todo = {a, skip}, [a]
    while todo:
        for nxt in np.nonzero(adj[todo.pop()])[0].tolist():
            if nxt == b:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def environments(cache, indices) -> dict[tuple, list[tuple[float, float]]]:
    """``{environment: [(angle in degrees, end-to-end distance in Angstrom), ...]}``."""
    el = cache.vocab.elements
    order = {1: "-", 2: "=", 3: "#"}
    groups: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for m in indices:
        d = cache.data(int(m))
        n, x, z = d.num_nodes, d.pos.double().numpy(), d.atom_types.numpy()
        bond = np.zeros((n, n), dtype=int)
        i, j = d.edge_index.numpy()
        bond[i, j] = d.bond_types.numpy()
        adj = bond > 0
        for c in range(n):
            nb = np.nonzero(adj[c])[0].tolist()
            shell = ",".join(sorted(f"{order.get(int(bond[c, k]), '?')}{el[z[k]]}" for k in nb))
            for p in range(len(nb)):
                for q in range(p + 1, len(nb)):
                    a, b = sorted((nb[p], nb[q]), key=lambda k: (el[z[k]], bond[c, k]))
                    ring = connected_without(adj, a, b, c)
                    key = (f"{el[z[a]]}{order.get(int(bond[c, a]), '?')}{el[z[c]]}{order.get(int(bond[c, b]), '?')}{el[z[b]]}",
                           f"{el[z[c]]}({shell})", "ring" if ring else "chain")
                    u, v = x[a] - x[c], x[b] - x[c]
                    cos = float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))
                    groups[key].append((float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))), float(np.linalg.norm(x[a] - x[b]))))
    return groups


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="qm9", help="a prepared cache (default: qm9)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--n", type=int, default=20000, help="training molecules to scan (default 20,000)")
    ap.add_argument("--top", type=int, default=8, help="environments to list, most frequent first")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.n < 1 or a.top < 1:
        ap.error("--n and --top must be >= 1")
    cache = load_cache(a.dataset, a.data_root)
    groups = environments(cache, cache.indices("train")[: a.n])
    rows = []
    for key, vals in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        v = np.asarray(vals)
        rows.append({"angle": key[0], "centre": key[1], "where": key[2], "count": len(v),
                     "angle_mean_deg": float(v[:, 0].mean()), "angle_std_deg": float(v[:, 0].std()),
                     "end_distance_std": float(v[:, 1].std())})
    print(f"{len(groups)} environments, {sum(r['count'] for r in rows)} angles in {min(a.n, len(cache.indices('train')))} "
          f"{a.dataset} training molecules")
    print("| angle | centre (bonded neighbours) | ring/chain | angles | mean (deg) | std (deg) | end-to-end distance std (A) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows[: a.top]:
        print(f"| {r['angle']} | {r['centre']} | {r['where']} | {r['count']} | {r['angle_mean_deg']:.2f} | "
              f"{r['angle_std_deg']:.2f} | {r['end_distance_std']:.4f} |")
    res = {"dataset": a.dataset, "molecules": a.n, "rows": rows}
    if a.json is not None:
        write_json(a.json, res)
    return res


if __name__ == "__main__":
    main()
