"""GEOM-Drugs from a tiny ``rdkit_folder`` fixture built by the tests (see conftest.py)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from rdkit import Chem

from moldiff.chem.rdkit_conv import canonical_smiles, to_rdkit
from moldiff.data.geom import prepare_geom
from moldiff.data.registry import prepare_dataset


@pytest.fixture(scope="module")
def geom_cache(geom_folder, tmp_path_factory):
    return prepare_geom(tmp_path_factory.mktemp("gc") / "geom", geom_folder, progress=False)


def test_keeps_lowest_energy_conformers(geom_cache, geom_folder, geom_molecules):
    rep = geom_cache.meta["report"]
    expected = sum(min(n, 5) for n in geom_molecules.values())
    assert len(geom_cache) == expected == rep["kept_conformers"]
    assert rep["kept_molecules"] == 4 and rep["input_molecules"] == 7
    assert (rep["missing_pickles"], rep["bad_pickles"], rep["no_pickle_path"]) == (1, 1, 1)
    assert any("corrupt.pickle" in f for f in rep["problem_files"])
    assert any("missing.pickle" in f for f in rep["problem_files"])
    assert geom_cache.prop_names == ["totalenergy", "relativeenergy", "boltzmannweight"]
    assert geom_cache.meta["units"]["totalenergy"] == "Hartree"
    for smi in geom_molecules:
        with open(geom_folder / f"drugs/{smi}.pickle", "rb") as fh:
            confs = pickle.load(fh)["conformers"]
        lowest = sorted(c["totalenergy"] for c in confs)[:5]
        mine = [i for i, s in enumerate(geom_cache.smiles) if s == canonical_smiles(Chem.MolFromSmiles(smi))]
        got = sorted(float(geom_cache.props[i, 0]) for i in mine)
        np.testing.assert_allclose(got, lowest, rtol=0, atol=1e-5)


def test_vocabulary_kekulized_and_valid(geom_cache):
    assert geom_cache.vocab.elements == ("H", "C", "N", "O")
    assert geom_cache.vocab.charges == (0,)
    for i in range(len(geom_cache)):
        mol = geom_cache.molecule(i)
        assert int(mol.bonds[:, 2].max()) <= 3
        rd = to_rdkit(mol, sanitize=True)
        assert canonical_smiles(rd) == geom_cache.smiles[i]
    st = geom_cache.statistics
    assert sum(st["atom_type_marginal"]) == pytest.approx(1.0)


def test_split_by_molecule(geom_cache):
    splits: dict[str, set[int]] = {}
    for smi, s in zip(geom_cache.smiles, geom_cache.split):
        splits.setdefault(smi, set()).add(int(s))
    assert len(splits) == 4 and all(len(v) == 1 for v in splits.values())
    assert sorted(geom_cache.meta["split_sizes"].values()) != [0, 0, len(geom_cache)]


def test_strict_names_the_file(geom_folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pickle"):
        prepare_geom(tmp_path / "g", geom_folder, strict=True, progress=False)


def test_json_path_limit_and_conformer_count(geom_folder, tmp_path):
    c = prepare_geom(tmp_path / "g", geom_folder / "summary_drugs.json", n_conformers=2, limit=2, progress=False)
    assert len(c) == 4 and c.meta["report"]["input_molecules"] == 2


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="rdkit_folder"):
        prepare_geom(tmp_path / "g", tmp_path / "nowhere", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="summary_drugs.json"):
        prepare_geom(tmp_path / "g", tmp_path / "empty", progress=False)


def test_registry_names_and_rebuilds(geom_folder, tmp_path):
    root = str(tmp_path)
    c = prepare_dataset("geom", root=root, path=str(geom_folder), n_conformers=1, workers=1, progress=False)
    assert c.path.name == "geom_c1" and len(c) == 4
    stamp = (c.path / "meta.json").stat().st_mtime_ns
    again = prepare_dataset("geom", root=root, path=str(geom_folder), n_conformers=1, workers=2, progress=False)
    assert (again.path / "meta.json").stat().st_mtime_ns == stamp  # workers do not change the content
    summary = geom_folder / "summary_drugs.json"
    st = os.stat(summary)
    text = summary.read_text()
    try:
        os.utime(summary, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same content: reused
        touched = prepare_dataset("geom", root=root, path=str(geom_folder), n_conformers=1, progress=False)
        assert (touched.path / "meta.json").stat().st_mtime_ns == stamp
        summary.write_text(text + "\n")  # changed content: rebuilt
        rebuilt = prepare_dataset("geom", root=root, path=str(geom_folder), n_conformers=1, progress=False)
        assert (rebuilt.path / "meta.json").stat().st_mtime_ns != stamp
        assert rebuilt.meta["report"]["source"]["sha256"] != c.meta["report"]["source"]["sha256"]
    finally:
        summary.write_text(text)
        os.utime(summary, ns=(st.st_atime_ns, st.st_mtime_ns))
