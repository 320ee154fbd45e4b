"""Metrics (docs/metrics.md) on hand-written molecules and a tiny QM9 cache."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from moldiff.chem.io import read_sdf
from moldiff.chem.molecule import Molecule
from moldiff.metrics import PROTOCOL_VERSION, evaluate_molecules, format_table
from moldiff.metrics.distribution import GeometryStats, bond_angles, distribution_distances, total_variation
from moldiff.metrics.edm import edm_stability, edm_tables, edm_validity
from moldiff.metrics.valence import allowed, strict_stability
from moldiff.metrics.validity import uniqueness_novelty

FIX = Path(__file__).resolve().parents[1] / "fixtures"
REQUIRED_KEYS = {"n_molecules", "atom_stability", "mol_stability", "validity", "connected_validity", "uniqueness",
                 "novelty", "edm_atom_stability", "edm_mol_stability", "edm_validity", "protocol_version", "counts"}

TETRA = np.array([[1, 1, 1], [-1, -1, 1], [-1, 1, -1], [1, -1, -1]]) / np.sqrt(3)


def methane(d: float = 1.09) -> Molecule:
    return Molecule(["C", "H", "H", "H", "H"], np.vstack([[0, 0, 0], TETRA * d]),
                    bonds=[[0, k, 1] for k in range(1, 5)], name="methane")


def fixture(name: str) -> Molecule:
    return read_sdf(FIX / name)[0]


# ------------------------------------------------------------------------------- strict


def test_methane_stable_methyl_radical_unstable():
    stable, _, _ = strict_stability(methane())
    assert stable.all()
    m = methane()
    radical = Molecule(m.elements[:4], m.pos[:4], bonds=m.bonds[:3])
    stable, _, _ = strict_stability(radical)
    assert not stable[0] and stable[1:].all()


def test_nitro_group_needs_its_charges():
    nitro = fixture("nitromethane.sdf")
    assert strict_stability(nitro)[0].all()
    neutral = Molecule(nitro.elements, nitro.pos, None, nitro.bonds)
    stable = strict_stability(neutral)[0]
    n = nitro.elements.index("N")
    assert not stable[n] and not stable.all()


def test_benzene_aromatic_stable_via_kekulization():
    benzene = fixture("benzene_aromatic.sdf")
    stable, used, kekulized = strict_stability(benzene)
    assert kekulized and stable.all()
    assert sorted(Counter(used[:, 2].tolist()).items()) == [(1, 9), (2, 3)]


def test_pyrrole_nitrogen_counts_kekule_orders():
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from moldiff.chem.rdkit_conv import from_rdkit

    m = Chem.AddHs(Chem.MolFromSmiles("c1cc[nH]c1"))
    AllChem.EmbedMolecule(m, randomSeed=1)
    pyrrole = from_rdkit(m)
    assert (pyrrole.bonds[:, 2] == 4).sum() == 5
    stable, _, kekulized = strict_stability(pyrrole)
    assert kekulized and stable.all()  # 1.5 + 1.5 + 1 = 4 would make the N unstable


def test_unkekulizable_aromatic_uses_half_orders():
    eth = Molecule(["C", "C"] + ["H"] * 6, np.random.default_rng(0).normal(size=(8, 3)),
                   bonds=[[0, 1, 4], [0, 2, 1], [0, 3, 1], [0, 4, 1], [1, 5, 1], [1, 6, 1], [1, 7, 1]])
    stable, _, kekulized = strict_stability(eth)
    assert not kekulized and not stable[0] and not stable[1]  # 4.5 is never allowed


def test_valence_table():
    assert allowed("C", 0, 4) and not allowed("C", 0, 3) and allowed("C", -1, 3) and allowed("C", 1, 3)
    assert allowed("N", 1, 4) and allowed("N", -1, 2) and not allowed("N", 0, 2)
    assert allowed("O", 1, 3) and allowed("O", -1, 1)
    assert all(allowed("S", 0, v) for v in (2, 4, 6)) and not allowed("S", 0, 3)
    assert allowed("P", 0, 5) and allowed("P", 1, 4) and allowed("Br", 0, 1)
    assert not allowed("C", 2, 2) and not allowed("Xx", 0, 1) and not allowed("C", 0, 4.5)


# ---------------------------------------------------------------------------------- EDM


@pytest.mark.parametrize("d, order", [(1.18, 3), (1.30, 2), (1.50, 1), (1.63, 1), (1.65, 0)])
def test_edm_bond_rule_carbon_carbon(d, order):
    o = edm_tables().bond_orders(["C", "C"], np.array([[0, 0, 0], [d, 0, 0]]))
    assert o[0, 1] == o[1, 0] == order and o[0, 0] == 0


def test_edm_pairs_without_table_entry_never_bond():
    o = edm_tables().bond_orders(["Hg", "C", "Xx"], np.array([[0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]]))
    assert o.sum() == 0


def test_edm_stability_and_validity_hand_made():
    stable, order = edm_stability(methane().elements, methane().pos)
    assert stable.all() and order.sum() == 8
    # ammonium without charge: N with 4 bonds is EDM-unstable and invalid (over-valent)
    nh4 = Molecule(["N"] + ["H"] * 4, np.vstack([[0, 0, 0], TETRA * 1.01]))
    stable, order = edm_stability(nh4.elements, nh4.pos)
    assert not stable[0]
    assert edm_validity(nh4.elements, order) == (False, None)
    # under-valent carbon: EDM validity lets RDKit add implicit hydrogens
    ch2 = Molecule(["C", "H", "H"], [[0, 0, 0], [1.09, 0, 0], [0, 1.09, 0]])
    stable, order = edm_stability(ch2.elements, ch2.pos)
    assert not stable[0] and edm_validity(ch2.elements, order)[0]
    # two fragments: valid, the largest one is kept
    two = Molecule(methane().elements + ["O", "H", "H"], np.vstack([methane().pos, [[9, 0, 0], [9.96, 0, 0], [9, 0.96, 0]]]))
    ok, smiles = edm_validity(two.elements, edm_stability(two.elements, two.pos)[1])
    assert ok and smiles == "[H]C([H])([H])[H]"


# ------------------------------------------------------------------ uniqueness, novelty


def test_uniqueness_novelty_arithmetic():
    r = uniqueness_novelty(["C", "C", "O", "CC"], {"C"})
    assert r["n_valid"] == 4 and r["n_unique"] == 3 and r["uniqueness"] == pytest.approx(0.75)
    assert r["n_novel"] == 2 and r["novelty"] == pytest.approx(2 / 3)
    r = uniqueness_novelty(["C"], None)
    assert r["novelty"] is None and r["uniqueness"] == 1.0
    assert uniqueness_novelty([], set())["uniqueness"] == 0.0


# ---------------------------------------------------------------------------- distribution


def test_bond_angles_and_distances():
    water = fixture("water.sdf")
    (angle,) = bond_angles(water.pos, water.bonds)
    assert 100 < angle < 110
    assert len(bond_angles(methane().pos, methane().bonds)) == 6
    assert np.allclose(bond_angles(methane().pos, methane().bonds), np.degrees(np.arccos(-1 / 3)))
    assert total_variation(Counter("CCH"), Counter("CCH")) == 0.0
    assert total_variation(Counter("C"), Counter("H")) == 1.0
    a, b = GeometryStats(), GeometryStats()
    a.add(methane(1.09))
    b.add(methane(1.19))
    d = distribution_distances(a, b)
    assert d["bond_length_w1"]["single"] == pytest.approx(0.10)
    assert d["atom_type_tv"] == 0 and d["bond_angle_w1"] == pytest.approx(0, abs=1e-6)


# -------------------------------------------------------------------------- evaluate


def test_evaluate_molecules_hand_made_set():
    mols = read_sdf(FIX / "four.sdf")  # water, methane, benzene (aromatic), nitromethane
    m = methane()
    mols.append(Molecule(m.elements[:4], m.pos[:4], bonds=m.bonds[:3], name="CH3"))
    r = evaluate_molecules(mols)
    json.dumps(r)  # JSON-able
    assert REQUIRED_KEYS <= set(r) and r["protocol_version"] == PROTOCOL_VERSION
    assert r["n_molecules"] == 5
    assert r["mol_stability"] == pytest.approx(4 / 5) and r["validity"] == 1.0
    assert r["counts"]["kekulized"] == 1 and r["bonds"]["strict_metrics_use"] == "own"
    assert r["uniqueness"] == 1.0 and r["novelty"] is None and r["distribution"] is None
    for k in REQUIRED_KEYS - {"novelty", "n_molecules", "protocol_version", "counts"}:
        assert 0.0 <= r[k] <= 1.0
    table = format_table(r)
    assert "%" in table and "EDM" in table


def test_evaluate_bondless_and_malformed():
    m = methane()
    bare = Molecule(m.elements, m.pos, name="xyz-methane")
    nan = Molecule(["C", "H"], [[0, 0, 0], [np.nan, 0, 0]])
    r = evaluate_molecules([bare, nan, Molecule([], np.zeros((0, 3)))])
    assert r["bonds"] == {**r["bonds"], "strict_metrics_use": "inferred", "inferred": 1, "own": 0, "inference": "edm"}
    assert r["counts"]["malformed"] == 2 and r["counts"]["stable_molecules"] == 1
    assert r["mol_stability"] == pytest.approx(1 / 3)
    r = evaluate_molecules([bare], bond_inference="rdkit")
    assert r["mol_stability"] == 1.0 and r["bonds"]["inference"] == "rdkit"
    with pytest.raises(ValueError, match="edm"):
        evaluate_molecules([bare], bond_inference="guess")


# ------------------------------------------------------------------------ tiny QM9 cache


@pytest.fixture(scope="session")
def qm9_tiny(data_root):
    """The first 300 QM9 molecules (the shared ``data_root`` fixture of tests/conftest.py)."""
    from moldiff.data.cache import MolCache
    from moldiff.data.registry import cache_path

    return MolCache(cache_path("qm9", str(data_root), limit=300))


@pytest.mark.qm9
def test_edm_stability_real_qm9_molecules(qm9_tiny):
    acetylene = qm9_tiny.molecule(3)  # gdb_4: H-C#C-H
    assert sorted(acetylene.elements) == ["C", "C", "H", "H"]
    stable, order = edm_stability(acetylene.elements, acetylene.pos)
    assert stable.all() and order.max() == 3
    assert edm_validity(acetylene.elements, order) == (True, "[H]C#C[H]")


@pytest.mark.qm9
def test_evaluate_qm9_split_against_reference(qm9_tiny):
    idx = qm9_tiny.indices("test")
    mols = [qm9_tiny.molecule(int(i)) for i in idx]
    r = evaluate_molecules(mols, qm9_tiny)
    assert r["mol_stability"] == 1.0 and r["validity"] == 1.0
    assert r["edm_atom_stability"] > 0.97 and r["edm_mol_stability"] > 0.8
    assert r["novelty"] is not None and 0.0 <= r["novelty"] <= 1.0
    assert r["reference"]["distribution_molecules"] == len(idx)
    d = r["distribution"]
    assert d["atom_type_tv"] == 0.0 and d["num_atoms_tv"] == 0.0 and d["bond_angle_w1"] == pytest.approx(0, abs=1e-9)
    train = [qm9_tiny.molecule(int(i)) for i in qm9_tiny.indices("train")[:20]]
    assert evaluate_molecules(train, qm9_tiny)["novelty"] == 0.0
    json.dumps(r)
