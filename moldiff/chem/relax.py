"""Force-field relaxation of generated molecules with RDKit (MMFF94s, else UFF).

Only molecules that RDKit can sanitize are relaxed; the others are returned unchanged with a
status that says why. Bonds, formal charges and atom order never change: only coordinates move.
Atoms listed in ``fixed_atoms`` (e.g. an inpainted fragment) keep their coordinates exactly.

Every result carries SD tags (:meth:`RelaxResult.tags`): the force field, the status, the energy
before and after (kcal/mol, that force field's) and the heavy-atom RMSD between the input and the
relaxed coordinates after optimal superposition (Angstrom).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdForceFieldHelpers

from moldiff.chem.molecule import Molecule
from moldiff.chem.rdkit_conv import to_rdkit
from moldiff.utils.geometry import superposed_rmsd

#: Accepted values of ``method`` (``none`` leaves molecules alone).
RELAX_METHODS = ("none", "mmff", "uff")
#: Statuses of :class:`RelaxResult`.
RELAX_STATUSES = ("relaxed", "not_converged", "not_relaxed", "not_sanitizable", "no_parameters", "failed")


@dataclass
class RelaxResult:
    """The outcome of relaxing one molecule.

    Attributes:
        molecule: the relaxed copy (the input itself when nothing was done).
        status: ``relaxed``; ``not_converged`` (moved, but ``max_iters`` ran out); ``not_relaxed``
            (``method="none"``); ``not_sanitizable`` (RDKit cannot sanitize it); ``no_parameters``
            (no force field covers every atom); ``failed`` (the force field could not be set up).
        forcefield: ``MMFF94s`` or ``UFF`` when one was used, else None.
        energy_before: energy of the input coordinates (kcal/mol), or None.
        energy_after: energy after minimisation (kcal/mol), or None.
        heavy_atom_rmsd: RMSD of the heavy atoms (all atoms if there is none) between input and
            output after optimal superposition (Angstrom), or None.
    """

    molecule: Molecule
    status: str
    forcefield: str | None = None
    energy_before: float | None = None
    energy_after: float | None = None
    heavy_atom_rmsd: float | None = None

    @property
    def moved(self) -> bool:
        """Whether the coordinates were relaxed (``relaxed`` or ``not_converged``)."""
        return self.status in ("relaxed", "not_converged")

    def tags(self) -> dict[str, float | str]:
        """SD tags of this result (``moldiff_relax_*``); numbers only where they exist."""
        out: dict[str, float | str] = {"moldiff_relax_status": self.status}
        if self.forcefield is not None:
            out["moldiff_relax_forcefield"] = self.forcefield
        for key, value in (("moldiff_relax_energy_before", self.energy_before),
                           ("moldiff_relax_energy_after", self.energy_after),
                           ("moldiff_relax_heavy_rmsd", self.heavy_atom_rmsd)):
            if value is not None:
                out[key] = float(value)
        return out


def _sanitized(mol: Molecule) -> Chem.Mol | None:
    rd = to_rdkit(Molecule(mol.elements, mol.pos, mol.charges, mol.bonds, name=mol.name))
    try:
        with rdBase.BlockLogs():
            Chem.SanitizeMol(rd)
    except Exception:
        return None
    return rd


def _forcefield(rd: Chem.Mol, method: str):
    """``(name, force field)`` for ``rd``: MMFF94s if asked and covered, else UFF if covered, else ``(None, None)``."""
    with rdBase.BlockLogs():
        if method == "mmff" and rdForceFieldHelpers.MMFFHasAllMoleculeParams(rd):
            props = rdForceFieldHelpers.MMFFGetMoleculeProperties(rd, mmffVariant="MMFF94s")
            ff = rdForceFieldHelpers.MMFFGetMoleculeForceField(rd, props, ignoreInterfragInteractions=False)
            return "MMFF94s", ff
        if rdForceFieldHelpers.UFFHasAllMoleculeParams(rd):
            ff = rdForceFieldHelpers.UFFGetMoleculeForceField(rd, ignoreInterfragInteractions=False)
            return "UFF", ff
    return None, None


def relax_molecule(mol: Molecule, method: str = "mmff", max_iters: int = 200,
                   fixed_atoms: tuple[int, ...] | list[int] = ()) -> RelaxResult:
    """Minimise the force-field energy of ``mol`` (coordinates only).

    Args:
        mol: the molecule (explicit hydrogens, kekulized or aromatic bonds, formal charges).
        method: ``mmff`` (MMFF94s where it has parameters for every atom, else UFF), ``uff``, or ``none``.
        max_iters: most minimiser iterations.
        fixed_atoms: atom indices whose coordinates must not move.

    Returns:
        A :class:`RelaxResult`; ``result.molecule`` is a new ``Molecule`` when coordinates moved.

    Raises:
        ValueError: unknown ``method`` or ``max_iters < 1``.
    """
    if method not in RELAX_METHODS:
        raise ValueError(f"relax={method!r}; choose one of {list(RELAX_METHODS)}")
    if max_iters < 1:
        raise ValueError(f"relax_max_iters must be >= 1, got {max_iters}")
    if method == "none":
        return RelaxResult(mol, "not_relaxed")
    rd = _sanitized(mol)
    if rd is None:
        return RelaxResult(mol, "not_sanitizable")
    name, ff = _forcefield(rd, method)
    if name is None:
        return RelaxResult(mol, "no_parameters")
    if ff is None:
        return RelaxResult(mol, "failed", name)
    try:
        for k in fixed_atoms:
            ff.AddFixedPoint(int(k))
        ff.Initialize()
        before = ff.CalcEnergy()
        code = ff.Minimize(maxIts=int(max_iters))
        after = ff.CalcEnergy()
        pos = np.asarray(ff.Positions(), dtype=np.float64).reshape(-1, 3)
    except Exception:
        return RelaxResult(mol, "failed", name)
    if not (np.isfinite(pos).all() and np.isfinite(before) and np.isfinite(after)):
        return RelaxResult(mol, "failed", name)
    for k in fixed_atoms:
        pos[int(k)] = mol.pos[int(k)]
    heavy = np.array([e != "H" for e in mol.elements])
    sel = heavy if heavy.any() else np.ones(mol.num_atoms, dtype=bool)
    rmsd = superposed_rmsd(mol.pos[sel], pos[sel])
    out = replace(mol, pos=pos, props=dict(mol.props))
    return RelaxResult(out, "relaxed" if code == 0 else "not_converged", name, float(before), float(after), rmsd)
