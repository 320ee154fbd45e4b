"""The library-neutral molecule record shared by I/O, datasets, sampling and metrics.

Bond orders are integer codes: 1 single, 2 double, 3 triple, 4 aromatic (valence 1.5).
Training data are kekulized (codes 1-3 only); code 4 appears only when reading files that
carry aromatic bond flags, and the metrics handle it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SINGLE, DOUBLE, TRIPLE, AROMATIC = 1, 2, 3, 4
#: Valence contribution of each bond code.
BOND_VALENCE = {SINGLE: 1.0, DOUBLE: 2.0, TRIPLE: 3.0, AROMATIC: 1.5}

PERIODIC = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
    "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm "
    "Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi"
).split()
ATOMIC_NUMBER = {s: i + 1 for i, s in enumerate(PERIODIC)}


@dataclass
class Molecule:
    """One molecule with 3D coordinates.

    Attributes:
        elements: element symbols, ``[N]``.
        pos: coordinates in Angstrom, ``[N, 3]`` float.
        charges: formal charges, ``[N]`` int.
        bonds: ``[B, 3]`` int rows ``(i, j, order_code)`` with ``i < j``.
        props: named scalar properties (SD tags when written to SDF).
        name: a title (SDF first line / XYZ comment).
    """

    elements: list[str]
    pos: np.ndarray
    charges: np.ndarray | None = None
    bonds: np.ndarray | None = None
    props: dict[str, float | str] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        self.elements = [str(e) for e in self.elements]
        self.pos = np.asarray(self.pos, dtype=np.float64).reshape(-1, 3)
        n = len(self.elements)
        if self.pos.shape[0] != n:
            raise ValueError(f"molecule {self.name!r}: {n} elements but {self.pos.shape[0]} positions")
        self.charges = np.zeros(n, dtype=np.int64) if self.charges is None else np.asarray(self.charges, dtype=np.int64)
        if self.charges.shape != (n,):
            raise ValueError(f"molecule {self.name!r}: charges shape {self.charges.shape}, expected ({n},)")
        if self.bonds is None or len(self.bonds) == 0:
            self.bonds = np.zeros((0, 3), dtype=np.int64)
        else:
            b = np.asarray(self.bonds, dtype=np.int64).reshape(-1, 3)
            lo, hi = np.minimum(b[:, 0], b[:, 1]), np.maximum(b[:, 0], b[:, 1])
            self.bonds = np.stack([lo, hi, b[:, 2]], axis=1)

    @property
    def num_atoms(self) -> int:
        return len(self.elements)

    @property
    def has_bonds(self) -> bool:
        return len(self.bonds) > 0

    def bond_matrix(self) -> np.ndarray:
        """Dense symmetric ``[N, N]`` matrix of bond codes (0 = no bond)."""
        m = np.zeros((self.num_atoms, self.num_atoms), dtype=np.int64)
        if self.has_bonds:
            m[self.bonds[:, 0], self.bonds[:, 1]] = self.bonds[:, 2]
            m[self.bonds[:, 1], self.bonds[:, 0]] = self.bonds[:, 2]
        return m

    def check(self) -> None:
        """Raise ``ValueError`` naming the molecule if it is empty, has non-finite coordinates or unknown elements."""
        label = self.name or "<unnamed>"
        if self.num_atoms == 0:
            raise ValueError(f"molecule {label}: has no atoms")
        if not np.isfinite(self.pos).all():
            bad = int(np.argwhere(~np.isfinite(self.pos))[0, 0])
            raise ValueError(f"molecule {label}: non-finite (NaN/inf) coordinates at atom {bad + 1}")
        for k, e in enumerate(self.elements):
            if e not in ATOMIC_NUMBER:
                raise ValueError(f"molecule {label}: unknown element {e!r} at atom {k + 1}")
        if self.has_bonds:
            if self.bonds[:, :2].max() >= self.num_atoms or self.bonds[:, :2].min() < 0:
                raise ValueError(f"molecule {label}: bond refers to an atom index out of range")
            bad = ~np.isin(self.bonds[:, 2], list(BOND_VALENCE))
            if bad.any():
                raise ValueError(f"molecule {label}: unknown bond order code {int(self.bonds[bad][0, 2])}")
