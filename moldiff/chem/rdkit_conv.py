"""Molecule <-> RDKit ``Mol`` (with one 3D conformer), lossless for elements, charges, bonds and
coordinates; the bond-code map; canonical SMILES; bond perception from coordinates."""

from __future__ import annotations

import contextlib

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Geometry import Point3D

from moldiff.chem.molecule import AROMATIC, DOUBLE, SINGLE, TRIPLE, Molecule
from moldiff.utils.io import quiet_c_output

#: Bond code of :class:`~moldiff.chem.molecule.Molecule` -> RDKit bond type.
RDKIT_BOND_TYPE = {
    SINGLE: Chem.BondType.SINGLE,
    DOUBLE: Chem.BondType.DOUBLE,
    TRIPLE: Chem.BondType.TRIPLE,
    AROMATIC: Chem.BondType.AROMATIC,
}
#: RDKit bond type -> bond code (the inverse of :data:`RDKIT_BOND_TYPE`).
BOND_CODE = {v: k for k, v in RDKIT_BOND_TYPE.items()}


def to_rdkit(mol: Molecule, sanitize: bool = False) -> Chem.Mol:
    """Build an RDKit molecule with explicit atoms, formal charges, bonds and one conformer.

    Args:
        mol: the molecule.
        sanitize: run ``Chem.SanitizeMol`` (raises on chemically invalid input).
    """
    rw = Chem.RWMol()
    for el, q in zip(mol.elements, mol.charges):
        atom = Chem.Atom(el)
        atom.SetFormalCharge(int(q))
        atom.SetNoImplicit(True)
        rw.AddAtom(atom)
    for i, j, code in mol.bonds:
        rw.AddBond(int(i), int(j), RDKIT_BOND_TYPE[int(code)])
        if int(code) == AROMATIC:
            rw.GetBondBetweenAtoms(int(i), int(j)).SetIsAromatic(True)
            rw.GetAtomWithIdx(int(i)).SetIsAromatic(True)
            rw.GetAtomWithIdx(int(j)).SetIsAromatic(True)
    conf = Chem.Conformer(mol.num_atoms)
    conf.Set3D(True)
    for k, (x, y, z) in enumerate(mol.pos):
        conf.SetAtomPosition(k, Point3D(float(x), float(y), float(z)))
    out = rw.GetMol()
    out.AddConformer(conf, assignId=True)
    if mol.name:
        out.SetProp("_Name", mol.name)
    for key, val in mol.props.items():
        if isinstance(val, float):
            out.SetDoubleProp(key, val)
        elif isinstance(val, (int, np.integer)):
            out.SetIntProp(key, int(val))
        else:
            out.SetProp(key, str(val))
    if sanitize:
        Chem.SanitizeMol(out)
    else:
        out.UpdatePropertyCache(strict=False)
    return out


def from_rdkit(rdmol: Chem.Mol, name: str | None = None, conf_id: int = -1, kekulize: bool = False) -> Molecule:
    """Read an RDKit molecule (all atoms it holds; add hydrogens beforehand if wanted).

    Args:
        rdmol: molecule with at least one conformer.
        name: title; defaults to the ``_Name`` property.
        conf_id: which conformer.
        kekulize: replace aromatic bonds by a Kekule structure (raises if RDKit cannot).
    """
    if kekulize:
        rdmol = Chem.Mol(rdmol)
        Chem.Kekulize(rdmol, clearAromaticFlags=True)
    if rdmol.GetNumConformers() == 0:
        raise ValueError(f"molecule {name or rdmol.GetPropsAsDict().get('_Name', '')!r} has no 3D conformer")
    pos = np.asarray(rdmol.GetConformer(conf_id).GetPositions(), dtype=np.float64)
    elements = [a.GetSymbol() for a in rdmol.GetAtoms()]
    charges = np.array([a.GetFormalCharge() for a in rdmol.GetAtoms()], dtype=np.int64)
    bonds = []
    for b in rdmol.GetBonds():
        bt = b.GetBondType()
        if bt not in BOND_CODE:
            raise ValueError(f"unsupported bond type {bt} between atoms {b.GetBeginAtomIdx() + 1} and {b.GetEndAtomIdx() + 1}")
        bonds.append((b.GetBeginAtomIdx(), b.GetEndAtomIdx(), BOND_CODE[bt]))
    props = {}
    for k, v in rdmol.GetPropsAsDict(includePrivate=False, includeComputed=False).items():
        props[k] = v
    if name is None:
        name = rdmol.GetProp("_Name") if rdmol.HasProp("_Name") else ""
    return Molecule(elements, pos, charges, np.array(bonds, dtype=np.int64).reshape(-1, 3), props, name)


def canonical_smiles(rdmol: Chem.Mol) -> str | None:
    """Canonical stereo-free SMILES of a sanitizable molecule (hydrogens removed), or None."""
    try:
        m = Chem.Mol(rdmol)
        with rdBase.BlockLogs():  # None is the answer for an invalid molecule; no log line
            Chem.SanitizeMol(m)
        Chem.RemoveStereochemistry(m)  # stereo-free: an H kept only for double-bond stereo must go too
        m = Chem.RemoveHs(m, sanitize=True)
        return Chem.MolToSmiles(m, isomericSmiles=False)
    except Exception:
        return None


def determine_bonds(rdmol: Chem.Mol, charge: int = 0, sanitize: bool = False) -> tuple[Chem.Mol | None, bool]:
    """Bonds and formal charges perceived from 3D coordinates by RDKit's ``DetermineBonds``.

    The plain (connectivity + bond order) perception is tried first; when it fails (or, with
    ``sanitize``, its result does not sanitize) it is retried with ``useHueckel=True`` (extended
    Hueckel connectivity; the C library's warnings are silenced).

    Args:
        rdmol: atoms with one 3D conformer (it is not modified).
        charge: total charge of the molecule.
        sanitize: also require ``Chem.SanitizeMol`` to succeed (the result is then sanitized).

    Returns:
        ``(molecule with bonds, whether the Hueckel retry gave it)``, or ``(None, False)`` when both fail.
    """
    from rdkit.Chem import rdDetermineBonds

    for hueckel in (False, True):
        m = Chem.Mol(rdmol)
        try:
            with quiet_c_output() if hueckel else contextlib.nullcontext():
                rdDetermineBonds.DetermineBonds(m, charge=charge, useHueckel=hueckel)
            if sanitize:
                Chem.SanitizeMol(m)
            return m, hueckel
        except Exception:  # noqa: BLE001 - RDKit raises several types
            continue
    return None, False
