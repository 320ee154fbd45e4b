"""Distribution distances between a molecule set and a reference split (docs/metrics.md).

* total variation ``TV(p, q) = 0.5 * sum_k |p_k - q_k|`` of the atom-type, formal-charge,
  bond-type (among existing bonds: single/double/triple/aromatic, Kekule forms where RDKit could
  kekulize) and atom-count distributions;
* Wasserstein-1 (``scipy.stats.wasserstein_distance``) of bond lengths (Angstrom) per bond type and
  of all bond angles (degrees; every pair of bonds sharing an atom).

The reference is a deterministic sample (seeded) of at most ``max_molecules`` molecules of one
split of a dataset cache, read with the cache's own (kekulized) bonds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import wasserstein_distance

from moldiff.chem.molecule import Molecule

BOND_NAMES = {1: "single", 2: "double", 3: "triple", 4: "aromatic"}


@dataclass
class GeometryStats:
    """Accumulated per-molecule counts and geometry samples of a molecule set."""

    elements: Counter = field(default_factory=Counter)
    charges: Counter = field(default_factory=Counter)
    num_atoms: Counter = field(default_factory=Counter)
    bond_types: Counter = field(default_factory=Counter)
    bond_lengths: dict[str, list[np.ndarray]] = field(default_factory=dict)
    angles: list[np.ndarray] = field(default_factory=list)
    n_molecules: int = 0

    def add(self, mol: Molecule, bonds: np.ndarray | None = None) -> None:
        """Add one molecule, using ``bonds`` ``[B,3]`` (default: its own) for bond statistics."""
        bonds = mol.bonds if bonds is None else bonds
        self.n_molecules += 1
        self.elements.update(mol.elements)
        self.charges.update(int(q) for q in mol.charges)
        self.num_atoms[mol.num_atoms] += 1
        if not len(bonds):
            return
        pos = mol.pos
        lengths = np.linalg.norm(pos[bonds[:, 0]] - pos[bonds[:, 1]], axis=1)
        for code in np.unique(bonds[:, 2]):
            sel = bonds[:, 2] == code
            name = BOND_NAMES.get(int(code), str(int(code)))
            self.bond_types[name] += int(sel.sum())
            self.bond_lengths.setdefault(name, []).append(lengths[sel])
        self.angles.append(bond_angles(pos, bonds))

    def lengths(self, name: str) -> np.ndarray:
        parts = self.bond_lengths.get(name, [])
        return np.concatenate(parts) if parts else np.zeros(0)

    def all_angles(self) -> np.ndarray:
        return np.concatenate(self.angles) if self.angles else np.zeros(0)


def bond_angles(pos: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    """All bond angles (degrees) at every atom with two or more bonds, vectorised.

    Args:
        pos: ``[N, 3]``.
        bonds: ``[B, 3]`` rows ``(i, j, code)``.
    """
    src = np.concatenate([bonds[:, 0], bonds[:, 1]])  # [2B] centre of each directed bond
    dst = np.concatenate([bonds[:, 1], bonds[:, 0]])  # [2B] neighbour
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    vec = pos[dst] - pos[src]
    vec /= np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
    # pair every directed bond with the later ones of the same centre
    group_end = np.searchsorted(src, src, side="right")  # [2B]
    counts = group_end - np.arange(len(src)) - 1
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0)
    first = np.repeat(np.arange(len(src)), counts)  # [P]
    offset = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    second = first + 1 + offset
    cos = np.einsum("pk,pk->p", vec[first], vec[second])
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def total_variation(p: Counter, q: Counter) -> float | None:
    """TV distance of two count distributions over the union of their keys (None if either is empty)."""
    sp, sq = sum(p.values()), sum(q.values())
    if not sp or not sq:
        return None
    keys = set(p) | set(q)
    return 0.5 * float(sum(abs(p.get(k, 0) / sp - q.get(k, 0) / sq) for k in keys))


def _w1(a: np.ndarray, b: np.ndarray) -> float | None:
    return float(wasserstein_distance(a, b)) if len(a) and len(b) else None


def distribution_distances(gen: GeometryStats, ref: GeometryStats) -> dict:
    """TV and W1 distances of ``gen`` against ``ref`` (None where either side has no samples)."""
    names = sorted(set(gen.bond_lengths) | set(ref.bond_lengths), key=lambda s: list(BOND_NAMES.values()).index(s)
                   if s in BOND_NAMES.values() else 99)
    return {
        "atom_type_tv": total_variation(gen.elements, ref.elements),
        "charge_tv": total_variation(gen.charges, ref.charges),
        "bond_type_tv": total_variation(gen.bond_types, ref.bond_types),
        "num_atoms_tv": total_variation(gen.num_atoms, ref.num_atoms),
        "bond_length_w1": {n: _w1(gen.lengths(n), ref.lengths(n)) for n in names},
        "bond_angle_w1": _w1(gen.all_angles(), ref.all_angles()),
    }


_REFERENCE_CACHE: dict[tuple, GeometryStats] = {}


def reference_stats(cache, split: str = "test", max_molecules: int = 5000, seed: int = 0) -> GeometryStats:
    """Statistics of a deterministic sample of ``split`` of a ``MolCache`` (memoised per cache folder).

    Args:
        cache: a ``moldiff.data.cache.MolCache``.
        split: which split.
        max_molecules: at most this many molecules (a seeded sample, sorted).
        seed: sampling seed.
    """
    meta = getattr(cache, "meta", {})
    key = (str(getattr(cache, "path", id(cache))), meta.get("recipe_version"), len(cache), split, int(max_molecules), int(seed))
    if key not in _REFERENCE_CACHE:
        idx = cache.indices(split)
        if len(idx) == 0:
            idx = cache.indices("all")
        if len(idx) > max_molecules:
            idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_molecules, replace=False))
        stats = GeometryStats()
        for i in idx:
            stats.add(cache.molecule(int(i)))
        _REFERENCE_CACHE[key] = stats
    return _REFERENCE_CACHE[key]
