"""EDM-protocol metrics: bonds inferred from interatomic distances, no charges (Hoogeboom et al. 2022).

Bond rule (``edm_bond_tables.json``, picometres), for every atom pair with distance ``d``:

* no bond unless ``d < single[a][b] + 10``;
* then double if the pair has a double entry and ``d < double[a][b] + 5``;
* then triple if the pair has a triple entry and ``d < triple[a][b] + 3`` (checked only once the
  double test has passed, as in EDM's ``get_bond_order``).

Pairs absent from the single table never bond. An atom is stable when its summed (integer) order
equals its allowed valence (one of them, where the table lists several); molecule stable if all
atoms are. Formal charges are ignored.

EDM validity (EDM's ``BasicMolecularMetrics.compute_validity``): an RDKit molecule is built from
the elements and the inferred bonds, with *implicit hydrogens allowed* (plain ``Chem.Atom``), and
sanitized; if sanitization succeeds the molecule counts as valid, and its largest fragment's SMILES
(RDKit's ``MolToSmiles`` of that fragment, as EDM writes it) is what EDM's uniqueness counts.

The distance rule is evaluated on all pairs of a molecule at once with numpy, in float64 on the
coordinates as given (EDM computed in float32; the two can differ only for a distance within ~1e-5
pm of a threshold).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
from rdkit import Chem

from moldiff.chem.rdkit_conv import RDKIT_BOND_TYPE

TABLES_FILE = Path(__file__).with_name("edm_bond_tables.json")


class EDMTables:
    """The EDM bond-length tables as dense ``[K, K]`` threshold matrices (pm, margins added; ``-inf`` = absent)."""

    def __init__(self, path: Path = TABLES_FILE) -> None:
        raw = json.loads(Path(path).read_text())
        elements: list[str] = []
        for key in ("single_pm", "double_pm", "triple_pm"):
            for a, row in raw[key].items():
                for e in [a, *row]:
                    if e not in elements:
                        elements.append(e)
        for e in raw["allowed_valence"]:
            if e not in elements:
                elements.append(e)
        self.elements = elements
        self.index = {e: k for k, e in enumerate(elements)}
        margins = raw["margins_pm"]
        k = len(elements)
        self.thresholds = np.full((3, k, k), -np.inf)  # [order-1, a, b]
        for o, (key, margin) in enumerate(
            (("single_pm", margins["single"]), ("double_pm", margins["double"]), ("triple_pm", margins["triple"]))
        ):
            for a, row in raw[key].items():
                for b, length in row.items():
                    self.thresholds[o, self.index[a], self.index[b]] = float(length) + float(margin)
        self.allowed_valence: dict[str, tuple[int, ...]] = {
            e: tuple(v) if isinstance(v, list) else (int(v),) for e, v in raw["allowed_valence"].items()
        }

    def bond_orders(self, elements: list[str], pos: np.ndarray) -> np.ndarray:
        """Inferred bond orders, symmetric ``[N, N]`` int (0 none, 1-3), zero diagonal.

        Args:
            elements: symbols ``[N]``.
            pos: coordinates in Angstrom ``[N, 3]``.
        """
        n = len(elements)
        idx = np.array([self.index.get(e, -1) for e in elements], dtype=np.int64)
        known = idx >= 0
        safe = np.where(known, idx, 0)
        diff = pos[:, None, :] - pos[None, :, :]
        d = np.sqrt((diff * diff).sum(-1)) * 100.0  # [N, N] pm
        thr = self.thresholds[:, safe[:, None], safe[None, :]]  # [3, N, N]
        single = d < thr[0]
        double = single & (d < thr[1])
        triple = double & (d < thr[2])
        order = single.astype(np.int64) + double + triple
        order[~known, :] = 0
        order[:, ~known] = 0
        order[np.arange(n), np.arange(n)] = 0
        return order

    def atom_stable(self, elements: list[str], order: np.ndarray) -> np.ndarray:
        """Per-atom EDM stability ``[N]`` bool from the order matrix."""
        sums = order.sum(1)
        return np.array([int(s) in self.allowed_valence.get(e, ()) for e, s in zip(elements, sums)], dtype=bool)


@lru_cache(maxsize=1)
def edm_tables() -> EDMTables:
    """The shipped tables (parsed once)."""
    return EDMTables()


def order_matrix_to_bonds(order: np.ndarray) -> np.ndarray:
    """Upper-triangle bond list ``[B, 3]`` rows ``(i, j, order)`` of an order matrix."""
    i, j = np.nonzero(np.triu(order, 1))
    return np.stack([i, j, order[i, j]], axis=1).astype(np.int64)


def edm_stability(elements: list[str], pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(atom stable [N] bool, order matrix [N, N])`` under the EDM protocol."""
    t = edm_tables()
    order = t.bond_orders(elements, pos)
    return t.atom_stable(elements, order), order


def edm_validity(elements: list[str], order: np.ndarray) -> tuple[bool, str | None]:
    """EDM-style validity: sanitize the charge-free molecule (implicit H allowed), keep the largest fragment.

    Returns:
        ``(valid, smiles of the largest fragment or None)``.
    """
    rw = Chem.RWMol()
    for e in elements:
        rw.AddAtom(Chem.Atom(e))
    for i, j, o in order_matrix_to_bonds(order).tolist():
        rw.AddBond(i, j, RDKIT_BOND_TYPE[o])  # orders 1-3 are the single/double/triple codes
    mol = rw.GetMol()
    try:
        Chem.SanitizeMol(mol)
    except Exception:
        return False, None
    if len(Chem.GetMolFrags(mol)) <= 1:
        return True, Chem.MolToSmiles(mol)
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    largest = max(frags, default=mol, key=lambda m: m.GetNumAtoms())
    try:
        Chem.SanitizeMol(largest)
        return True, Chem.MolToSmiles(largest)
    except Exception:
        return True, None
