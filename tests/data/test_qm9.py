"""QM9 preparation on the first 200 molecules of qm9pack (skipped without qm9pack)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from moldiff.chem.rdkit_conv import canonical_smiles, to_rdkit

pytestmark = [
    pytest.mark.qm9,
    pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None, reason="qm9pack is not installed"),
]

N = 200


def _flat(smiles: str) -> str:
    """Canonical SMILES without stereo (the cache's may keep an [H] that only carried stereo)."""
    from rdkit import Chem

    m = Chem.MolFromSmiles(smiles)
    Chem.RemoveStereochemistry(m)
    return Chem.MolToSmiles(Chem.RemoveHs(m), isomericSmiles=False)


@pytest.fixture(scope="module")
def qm9_cache(tmp_path_factory):
    from moldiff.data.qm9 import prepare_qm9

    return prepare_qm9(tmp_path_factory.mktemp("qm9") / "qm9_first200", limit=N, workers=1, progress=False)


def test_split_sizes_follow_edm_proportions(qm9_cache):
    from moldiff.data.qm9 import split_assignment

    sizes = qm9_cache.meta["split_sizes"]
    dropped = qm9_cache.meta["report"]["dropped"]
    assert sum(sizes.values()) == len(qm9_cache) == N - dropped
    split, half = split_assignment(N)
    assert np.bincount(split, minlength=3).tolist() == [153, 27, 20]
    assert abs(sizes["train"] - 153) <= dropped and abs(sizes["val"] - 27) <= dropped
    train = qm9_cache.indices("train")
    assert len(qm9_cache.indices("train_a")) + len(qm9_cache.indices("train_b")) == len(train)
    # deterministic
    again, _ = split_assignment(N)
    np.testing.assert_array_equal(split, again)


def test_report_keys(qm9_cache):
    rep = qm9_cache.meta["report"]
    for key in ("input_molecules", "perceived_plain", "perceived_hueckel", "failed", "smiles_disagree",
                "dropped", "failed_keys", "policy"):
        assert key in rep, key
    assert rep["input_molecules"] == N
    assert rep["perceived_plain"] + rep["perceived_hueckel"] + rep["failed"] == N


def test_perceived_bonds_are_valid(qm9_cache):
    assert qm9_cache.vocab.elements == ("H", "C", "N", "O", "F")
    for i in range(len(qm9_cache)):
        mol = qm9_cache.molecule(i)
        assert mol.has_bonds and int(mol.bonds[:, 2].max()) <= 3
        rd = to_rdkit(mol, sanitize=True)  # raises if valences/charges are wrong
        assert _flat(canonical_smiles(rd)) == _flat(qm9_cache.smiles[i])


def test_property_units(qm9_cache):
    units = qm9_cache.meta["units"]
    assert units["mu"] == "D" and units["alpha"] == "bohr^3" and units["Cv"] == "cal/mol/K"
    assert units["homo"] == units["lumo"] == units["gap"] == "meV"
    props = qm9_cache.props.numpy()
    col = {p: k for k, p in enumerate(qm9_cache.prop_names)}
    gap = props[:, col["gap"]]
    assert 1000 < np.median(gap) < 20000  # meV, not Hartree
    # QM9 gives Hartree to 4 decimals (2.7 meV)
    np.testing.assert_allclose(gap, props[:, col["lumo"]] - props[:, col["homo"]], atol=6.0)


def test_hueckel_warnings_are_silenced(capfd):
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    from moldiff.utils.io import quiet_c_output

    mol = Chem.MolFromXYZBlock("3\n\nO 0 0 0\nH 0 0 0.3\nH 0.9 0 -0.2\n")  # makes YAeHMOP complain
    print("before")
    with quiet_c_output():
        try:
            rdDetermineBonds.DetermineBonds(mol, charge=0, useHueckel=True)
        except Exception:
            pass
    print("after")
    out, err = capfd.readouterr()
    assert "Warning" not in out + err and "before" in out and "after" in out
