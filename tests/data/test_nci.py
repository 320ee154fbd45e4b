"""The NCI drug-like dataset built from RDKit's shipped SMILES through the SDF path (tiny ``limit``)."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem

from moldiff.chem.rdkit_conv import canonical_smiles, to_rdkit
from moldiff.data.nci import (
    DRUG_LIKE_ELEMENTS,
    DROP_REASONS,
    MAX_ATOMS,
    MIN_ATOMS,
    nci_sdf_path,
    nci_smiles_file,
    select_candidates,
)
from moldiff.data.registry import prepare_dataset


@pytest.fixture(scope="module")
def nci_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("nci")
    return prepare_dataset("nci", root=str(root), limit=4, workers=1, progress=False)


def test_small_build(nci_cache):
    assert nci_cache.path.name == "nci_first4"
    assert len(nci_cache) == 4
    counts = nci_cache.num_atoms()
    assert counts.min() >= MIN_ATOMS and counts.max() <= MAX_ATOMS
    assert set(nci_cache.vocab.elements) <= set(DRUG_LIKE_ELEMENTS)
    assert nci_cache.prop_names == ["mmff_energy"] and nci_cache.meta["units"] == {"mmff_energy": "kcal/mol"}
    rep = nci_cache.meta["report"]["nci"]
    assert rep["kept_molecules"] == 4 and set(rep["dropped"]) == set(DROP_REASONS)
    assert rep["input_smiles"] == 4999
    for i in range(len(nci_cache)):
        mol = nci_cache.molecule(i)
        rd = to_rdkit(mol, sanitize=True)
        assert canonical_smiles(rd) == nci_cache.smiles[i]
        assert "H" in mol.elements


def test_sdf_written_and_readable(nci_cache):
    sdf = nci_sdf_path(nci_cache.path)
    assert sdf.exists() and sdf.name == "nci_first5k_first4.sdf"
    mols = [m for m in Chem.SDMolSupplier(str(sdf), removeHs=False)]
    assert len(mols) == 4 and all(m is not None for m in mols)
    assert all(m.GetProp("_Name").startswith("NCI") for m in mols)
    np.testing.assert_allclose(
        [float(m.GetProp("mmff_energy")) for m in mols], nci_cache.props[:, 0].numpy(), rtol=1e-5)
    # geometry is 3D with sensible bond lengths (MMFF-optimised)
    for m in mols:
        pos = m.GetConformer().GetPositions()
        lengths = [np.linalg.norm(pos[b.GetBeginAtomIdx()] - pos[b.GetEndAtomIdx()]) for b in m.GetBonds()]
        assert 0.9 < min(lengths) and max(lengths) < 2.2


def test_cached_and_deterministic(nci_cache, tmp_path):
    again = prepare_dataset("nci", root=str(nci_cache.path.parent), limit=4, workers=2, progress=False)
    assert again.meta == nci_cache.meta  # reused: workers do not change the content
    other = prepare_dataset("nci", root=str(tmp_path), limit=4, workers=2, progress=False)  # rebuilt in 2 processes
    assert other.smiles == nci_cache.smiles
    np.testing.assert_array_equal(other.pos.numpy(), nci_cache.pos.numpy())
    np.testing.assert_array_equal(other.split, nci_cache.split)


def test_select_candidates_filters():
    counts = {k: 0 for k in DROP_REASONS} | {"salts_stripped": 0}
    lines = [
        "CC(=O)Oc1ccccc1C(=O)O\t1",  # aspirin, 21 atoms with H: kept
        "CC(=O)Oc1ccccc1C(=O)O.[Na+]\t2",  # duplicate after stripping the salt
        "CCO\t3",  # too few atoms
        "C[Si](C)(C)OCCCCCCCCCC\t4",  # element
        "not_a_smiles\t5",
        "C" * 40 + "\t6",  # too many atoms (122)
        "[CH2]CCCCCCCCCC\t7",  # radical
    ]
    got = list(select_candidates(lines, counts))
    assert [g[:2] for g in got] == [(1, "1")]
    assert counts["duplicate"] == 1 and counts["salts_stripped"] == 1 and counts["too_few_atoms"] == 1
    assert counts["elements"] == 1 and counts["unparsable"] == 1 and counts["too_many_atoms"] == 1
    assert counts["radicals"] == 1


def test_smiles_file_ships_with_rdkit():
    assert nci_smiles_file().name == "first_5K.smi"
