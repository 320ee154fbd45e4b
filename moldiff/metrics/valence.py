"""Strict atom / molecule stability from a molecule's own bonds and formal charges (docs/metrics.md).

An atom is stable when its bond-order sum is an allowed valence for its (element, formal charge):

* bond orders: single 1, double 2, triple 3, aromatic 1.5 -- never counted as single;
* a molecule with aromatic bonds is first kekulized with RDKit and the integer Kekule orders
  are summed (pyrrole N: 1 + 1 + H = 3, not 1.5 + 1.5 + 1 = 4). If RDKit cannot kekulize it,
  the 1.5 sums are used, and a non-integer sum is never an allowed valence;
* explicit hydrogens are bonds like any other; implicit hydrogens do not exist in this package
  (every atom is written out), so an under-valent atom (a radical) is unstable;
* an (element, charge) pair missing from :data:`ALLOWED_VALENCES` is unstable.

Unlike the lenient table of the MiDi lineage, neutral C with 3 bonds and neutral N with 2 bonds
are *not* stable here (docs/metrics.md compares the two tables).
"""

from __future__ import annotations

import numpy as np
from rdkit import Chem

from moldiff.chem.molecule import AROMATIC, BOND_VALENCE, Molecule
from moldiff.chem.rdkit_conv import RDKIT_BOND_TYPE

#: (element, formal charge) -> allowed bond-order sums.
ALLOWED_VALENCES: dict[tuple[str, int], tuple[int, ...]] = {
    ("H", 0): (1,),
    ("B", 0): (3,), ("B", -1): (4,),
    ("C", 0): (4,), ("C", -1): (3,), ("C", 1): (3,),
    ("N", 0): (3,), ("N", 1): (4,), ("N", -1): (2,),
    ("O", 0): (2,), ("O", 1): (3,), ("O", -1): (1,),
    ("F", 0): (1,),
    ("Al", 0): (3,), ("Al", -1): (4,),
    ("Si", 0): (4,),
    ("P", 0): (3, 5), ("P", 1): (4,), ("P", -1): (2,),
    ("S", 0): (2, 4, 6), ("S", 1): (3,), ("S", -1): (1,),
    ("Cl", 0): (1,), ("Br", 0): (1,), ("I", 0): (1,),
    ("As", 0): (3, 5), ("As", 1): (4,),
    ("Se", 0): (2, 4, 6),
    ("Hg", 0): (2,),
    ("Bi", 0): (3,),
    # monatomic ions (salts, counter-ions): no bonds
    ("Li", 1): (0,), ("Na", 1): (0,), ("K", 1): (0,), ("Mg", 2): (0,), ("Ca", 2): (0,),
    ("F", -1): (0,), ("Cl", -1): (0,), ("Br", -1): (0,), ("I", -1): (0,),
}

_ORDER = np.zeros(5)
for _code, _v in BOND_VALENCE.items():
    _ORDER[_code] = _v


def valence_sums(num_atoms: int, bonds: np.ndarray) -> np.ndarray:
    """Bond-order sum of every atom, ``[N]`` float (aromatic = 1.5).

    Args:
        num_atoms: N.
        bonds: ``[B, 3]`` rows ``(i, j, code)``.
    """
    sums = np.zeros(num_atoms)
    if len(bonds):
        w = _ORDER[bonds[:, 2]]
        np.add.at(sums, bonds[:, 0], w)
        np.add.at(sums, bonds[:, 1], w)
    return sums


def graph_to_rdkit(elements: list[str], charges: np.ndarray, bonds: np.ndarray) -> Chem.Mol:
    """Unsanitized RDKit graph (no conformer) with the same conventions as ``chem.rdkit_conv.to_rdkit``.

    Explicit atoms only (``NoImplicit``), formal charges, aromatic bonds flagged; about twice as fast
    as ``to_rdkit`` because no coordinates are needed for sanitization, kekulization or SMILES.
    """
    rw = Chem.RWMol()
    for el, q in zip(elements, np.asarray(charges).tolist()):
        atom = Chem.Atom(el)
        if q:
            atom.SetFormalCharge(q)
        atom.SetNoImplicit(True)
        rw.AddAtom(atom)
    for i, j, code in np.asarray(bonds).tolist():
        rw.AddBond(i, j, RDKIT_BOND_TYPE[code])
        if code == AROMATIC:
            rw.GetBondBetweenAtoms(i, j).SetIsAromatic(True)
            rw.GetAtomWithIdx(i).SetIsAromatic(True)
            rw.GetAtomWithIdx(j).SetIsAromatic(True)
    mol = rw.GetMol()
    mol.UpdatePropertyCache(strict=False)
    return mol


def kekulized_bonds(rdmol: Chem.Mol) -> np.ndarray | None:
    """Kekule bond list ``[B, 3]`` of an (unsanitized) RDKit molecule, or None if RDKit cannot kekulize it."""
    m = Chem.Mol(rdmol)
    try:
        Chem.Kekulize(m, clearAromaticFlags=True)
    except Exception:
        return None
    out = np.empty((m.GetNumBonds(), 3), dtype=np.int64)
    for k, b in enumerate(m.GetBonds()):
        out[k] = (b.GetBeginAtomIdx(), b.GetEndAtomIdx(), int(b.GetBondTypeAsDouble()))
    lo, hi = np.minimum(out[:, 0], out[:, 1]), np.maximum(out[:, 0], out[:, 1])
    return np.stack([lo, hi, out[:, 2]], axis=1)


def allowed(element: str, charge: int, total: float) -> bool:
    """Whether ``total`` is an allowed valence of ``(element, charge)``."""
    options = ALLOWED_VALENCES.get((element, int(charge)))
    if options is None or abs(total - round(total)) > 1e-6:
        return False
    return int(round(total)) in options


def atom_stability(elements: list[str], charges: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """Per-atom stability ``[N]`` bool from bond-order sums."""
    return np.array([allowed(e, int(q), float(s)) for e, q, s in zip(elements, charges, sums)], dtype=bool)


def strict_stability(mol: Molecule, rdmol: Chem.Mol | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Strict per-atom stability of ``mol`` on its own bonds and charges.

    Args:
        mol: the molecule.
        rdmol: ``graph_to_rdkit`` of ``mol`` if already built (only needed for aromatic bonds).

    Returns:
        ``(stable [N] bool, bonds used [B,3] (Kekule form when kekulized), kekulized)``.
    """
    bonds = mol.bonds
    kekulized = False
    if len(bonds) and (bonds[:, 2] == AROMATIC).any():
        if rdmol is None:
            rdmol = graph_to_rdkit(mol.elements, mol.charges, bonds)
        kek = kekulized_bonds(rdmol)
        if kek is not None:
            bonds, kekulized = kek, True
    sums = valence_sums(mol.num_atoms, bonds)
    return atom_stability(mol.elements, mol.charges, sums), bonds, kekulized
