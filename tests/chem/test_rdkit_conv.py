"""RDKit conversion helpers: the one bond-code map and bond perception with the Hueckel retry."""

from __future__ import annotations

import numpy as np
from rdkit import Chem

from moldiff.chem.molecule import AROMATIC, DOUBLE, SINGLE, TRIPLE, Molecule
from moldiff.chem.rdkit_conv import BOND_CODE, RDKIT_BOND_TYPE, canonical_smiles, determine_bonds, from_rdkit, to_rdkit

#: QM9 dsgdb9nsd_000105 (bicyclo[1.1.1]pentane, C1C2CC1C2): plain DetermineBonds fails on it.
BICYCLOPENTANE = """13
dsgdb9nsd_000105
C -0.0445774324 1.5704237601 0.0110417803
C 1.4740896832 1.2298426501 -0.0067263896
C 1.1682993117 0.1443109379 1.0663744852
C 0.0391253719 0.0162093398 0.0024263012
C 1.1462118991 0.1542190803 -1.0826776727
H -0.432979399 2.0365230932 0.9212539305
H -0.4522920887 2.0457291576 -0.8859162855
H 2.3071156075 1.9344078755 -0.0121404539
H 1.8734729739 -0.6889311545 1.1373305611
H 0.8720963351 0.5020028465 2.0568232459
H -0.79393529 -0.6883164323 0.0076413099
H 0.8299890169 0.5207143173 -2.063620376
H 1.8497119208 -0.6782799316 -1.1756418065
"""


def test_bond_code_map_is_one_inverse_pair():
    assert {c: RDKIT_BOND_TYPE[c] for c in (SINGLE, DOUBLE, TRIPLE, AROMATIC)} == {
        SINGLE: Chem.BondType.SINGLE, DOUBLE: Chem.BondType.DOUBLE,
        TRIPLE: Chem.BondType.TRIPLE, AROMATIC: Chem.BondType.AROMATIC,
    }
    assert all(BOND_CODE[t] == c for c, t in RDKIT_BOND_TYPE.items())
    hcn = Molecule(["H", "C", "N"], [[0, 0, -1.07], [0, 0, 0], [0, 0, 1.16]], bonds=[[0, 1, 1], [1, 2, 3]])
    rd = to_rdkit(hcn)
    assert [b.GetBondType() for b in rd.GetBonds()] == [Chem.BondType.SINGLE, Chem.BondType.TRIPLE]
    np.testing.assert_array_equal(from_rdkit(rd).bonds, hcn.bonds)


def test_determine_bonds_plain():
    water = Chem.MolFromXYZBlock("3\n\nO 0 0 0\nH 0.9572 0 0\nH -0.24 0.9266 0\n")
    mol, hueckel = determine_bonds(water, sanitize=True)
    assert mol is not None and not hueckel and mol.GetNumBonds() == 2
    assert water.GetNumBonds() == 0  # the input is not modified


def test_determine_bonds_hueckel_retry_is_silent(capfd):
    mol, hueckel = determine_bonds(Chem.MolFromXYZBlock(BICYCLOPENTANE), charge=0, sanitize=True)
    assert mol is not None and hueckel
    assert canonical_smiles(mol) == "C1C2CC1C2"
    out, err = capfd.readouterr()
    assert "Warning" not in out + err


def test_determine_bonds_failure():
    apart = Chem.MolFromXYZBlock("2\n\nH 0 0 0\nH 0 0 5\n")  # two H atoms 5 A apart, total charge 0
    assert determine_bonds(apart) == (None, False)
