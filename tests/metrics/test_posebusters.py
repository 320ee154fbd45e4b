"""PoseBusters' molecule-level checks (moldiff.metrics.posebusters) on RDKit-embedded QM9-like molecules."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem, rdMolTransforms

from moldiff.chem.molecule import Molecule
from moldiff.chem.rdkit_conv import from_rdkit
from moldiff.metrics import evaluate_molecules, format_table
from moldiff.metrics.posebusters import CHECKS, posebusters_checks, sample_indices

needs_posebusters = pytest.mark.skipif(importlib.util.find_spec("posebusters") is None,
                                       reason="needs the PoseBusters package (pip install 'moldiff[checks]')")

#: QM9-like molecules: rings (aromatic, strained, saturated), C=C, C=O, nitrile, charges absent.
QM9_LIKE = ["CCO", "CC(=O)N", "C1CC1C#N", "OC1COC1", "c1cc[nH]c1", "c1ccncc1", "CC=CC", "N#CC(C)(O)C=O"]


def embedded(smiles: str, seed: int = 7) -> Chem.Mol:
    """Hydrogens added, one ETKDG conformer."""
    m = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(m, randomSeed=seed) == 0
    m.SetProp("_Name", smiles)
    return m


@pytest.fixture(scope="module")
def qm9_like() -> list[Molecule]:
    return [from_rdkit(embedded(s)) for s in QM9_LIKE]


@needs_posebusters
def test_qm9_like_molecules_pass_every_check(qm9_like):
    r = posebusters_checks(qm9_like, max_molecules=None)
    assert r["n_checked"] == len(QM9_LIKE) and r["sample"] == "all" and r["not_sanitizable"] == 0
    assert r["checks"] == list(CHECKS)
    assert r["pass_rate"] == dict.fromkeys(CHECKS, 1.0), r["passed"]
    assert r["all_pass_rate"] == 1.0 and r["all_passed"] == len(QM9_LIKE)
    assert r["seconds_per_molecule"] > 0


@needs_posebusters
def test_stretched_bond_fails_bond_lengths():
    m = embedded("CCO")
    rdMolTransforms.SetBondLength(m.GetConformer(), 0, 1, 2.1)  # C-C: 1.5 -> 2.1 Angstrom
    r = posebusters_checks([from_rdkit(m)], max_molecules=None)
    assert r["passed"]["bond_lengths"] == 0 and r["pass_rate"]["bond_lengths"] == 0.0
    assert r["all_pass_rate"] == 0.0 and r["not_sanitizable"] == 0
    assert r["passed"]["double_bond_flatness"] == 1  # checks are scored one by one


@needs_posebusters
def test_unsanitizable_and_malformed_molecules_fail_every_check(qm9_like):
    ethanol = qm9_like[0]  # atoms 0 C, 1 C, 2 O, then the hydrogens
    five_valent = Molecule(ethanol.elements, ethanol.pos, None, np.vstack([ethanol.bonds, [[0, 2, 1]]]))  # C5, O3
    nan_pos = Molecule(ethanol.elements, np.full_like(ethanol.pos, np.nan), None, ethanol.bonds)
    r = posebusters_checks([ethanol, five_valent, nan_pos], max_molecules=None)
    assert r["n_checked"] == 3 and r["not_sanitizable"] == 2
    assert r["passed"] == dict.fromkeys(CHECKS, 1) and r["all_passed"] == 1
    assert r["all_pass_rate"] == pytest.approx(1 / 3)


@needs_posebusters
def test_molecule_without_bonds_uses_inferred_bonds(qm9_like):
    bare = Molecule(qm9_like[1].elements, qm9_like[1].pos)  # acetamide read from XYZ
    r = posebusters_checks([bare], max_molecules=None)
    assert r["not_sanitizable"] == 0 and r["all_pass_rate"] == 1.0


@needs_posebusters
def test_without_energy_runs_mol_fast(qm9_like):
    r = posebusters_checks(qm9_like[:2], max_molecules=None, energy=False)
    assert r["config"] == "mol_fast" and r["checks"] == [c for c in CHECKS if c != "internal_energy"]
    assert r["all_pass_rate"] == 1.0 and "internal_energy" not in r["pass_rate"]
    metrics = evaluate_molecules(qm9_like[:2])
    metrics["posebusters"] = r
    table = format_table(metrics)
    assert "internal energy" not in table and "(no internal-energy check)" in table


@needs_posebusters
def test_seeded_subset_and_table(qm9_like):
    r = posebusters_checks(qm9_like, max_molecules=3, seed=5)
    assert r["n_checked"] == 3 and r["n_molecules"] == len(QM9_LIKE) and r["sample"] == "seeded"
    metrics = evaluate_molecules(qm9_like)
    metrics["posebusters"] = r
    table = format_table(metrics)
    assert f"PoseBusters checks (3 of {len(QM9_LIKE)} molecules, seeded sample, seed 5)" in table
    for label in [*CHECKS.values(), "all of the above"]:
        assert label in table


def test_sample_indices():
    a = sample_indices(1000, 200, seed=3)
    assert a == sample_indices(1000, 200, seed=3) and a == sorted(set(a)) and len(a) == 200
    assert a != sample_indices(1000, 200, seed=4)
    assert sample_indices(5, 200) == sample_indices(5, None) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="posebusters_max=0"):
        sample_indices(5, 0)


def test_tally_counts_missing_results_as_failing_and_reports_the_scored_rate():
    from moldiff.metrics.posebusters import tally

    checks = ["bond_lengths", "internal_energy"]
    rows = [{"bond_lengths": True, "internal_energy": True},
            {"bond_lengths": True, "internal_energy": None},    # no conformer ensemble: not scorable
            {"bond_lengths": False, "internal_energy": True},
            {"bond_lengths": True, "internal_energy": True}]
    r = tally(rows, checks, n_checked=5)                        # the fifth was not sanitizable
    assert r["not_sanitizable"] == 1 and r["not_run"] == {"bond_lengths": 0, "internal_energy": 1}
    assert r["passed"] == {"bond_lengths": 3, "internal_energy": 3}
    assert r["all_passed"] == 2 and r["all_pass_rate"] == pytest.approx(2 / 5)
    assert r["n_scored"] == 4 and r["all_pass_rate_scored"] == pytest.approx(2 / 4)
    assert tally([], checks, n_checked=0)["all_pass_rate_scored"] is None
    table = format_table({**evaluate_molecules([]), "posebusters": {
        **r, "checks": checks, "n_checked": 5, "n_molecules": 5, "sample": "all", "seed": 0}})
    assert "of the scored" in table and "2/4 (leaving out the 1 not scorable)" in table
