"""The versioned dataset cache: lossless round trip, statistics, rebuild on a recipe change."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from moldiff.chem.molecule import Molecule
from moldiff.data import registry
from moldiff.data.cache import CacheWriter, MolCache, load_cache
from moldiff.data.recipe import DatasetRecipe
from moldiff.data.vocab import Vocab

VOCAB = Vocab(("H", "C", "N", "O"), (-1, 0, 1))


def _write(path, mols: list[Molecule], version: int = 1, props: bool = True) -> MolCache:
    names = ["energy"] if props else []
    w = CacheWriter(path, "toy", version, VOCAB, names, {"energy": "kcal/mol"} if props else {})
    for k, m in enumerate(mols):
        w.add(m, smiles=f"smi{k}", props=np.array([float(k)]) if props else None, key=m.name)
    n = len(mols)
    split = np.array([0, 0, 0, 1, 2, 0][:n], dtype=np.int8)
    half = np.where(split == 0, np.arange(n) % 2, -1).astype(np.int8)
    return w.finish(split, half, {"note": "test"})


def test_round_trip_is_lossless(tmp_path, small_molecules):
    cache = _write(tmp_path / "toy", small_molecules)
    reopened = load_cache(str(tmp_path / "toy"))
    assert len(reopened) == len(small_molecules)
    for i, ref in enumerate(small_molecules):
        got = reopened.molecule(i)
        assert got.elements == ref.elements
        np.testing.assert_array_equal(got.charges, ref.charges)
        np.testing.assert_array_equal(got.bond_matrix(), ref.bond_matrix())
        # positions are stored centred, in float32
        np.testing.assert_allclose(got.pos, ref.pos - ref.pos.mean(0), atol=1e-6)
        assert got.props["energy"] == float(i)
    assert reopened.smiles[:len(small_molecules)] == [f"smi{k}" for k in range(len(small_molecules))]
    assert cache.meta["units"] == {"energy": "kcal/mol"}
    assert cache.meta["report"] == {"note": "test"}


def test_splits_and_halves(tmp_path, small_molecules):
    cache = _write(tmp_path / "toy", small_molecules)
    assert cache.meta["split_sizes"] == {"train": 4, "val": 1, "test": 1}
    assert set(cache.indices("train_a")) | set(cache.indices("train_b")) == set(cache.indices("train"))
    assert not set(cache.indices("train_a")) & set(cache.indices("train_b"))
    with pytest.raises(ValueError, match="unknown split"):
        cache.indices("bogus")


def test_statistics_sum_to_one(tmp_path, small_molecules):
    cache = _write(tmp_path / "toy", small_molecules)
    st = cache.statistics
    for key in ("atom_type_marginal", "charge_marginal", "bond_marginal"):
        assert sum(st[key]) == pytest.approx(1.0), key
        assert min(st[key]) >= 0
    train = cache.indices("train")
    assert sum(st["num_atoms_hist"]) == len(train)
    assert st["mean_num_atoms"] == pytest.approx(cache.num_atoms()[train].mean())
    # bond marginal over all atom pairs of the train molecules: 'none' fills the rest
    pairs = sum(n * (n - 1) // 2 for n in cache.num_atoms()[train])
    n_bonds = sum(len(small_molecules[i].bonds) for i in train)
    assert st["bond_marginal"][0] == pytest.approx(1 - n_bonds / pairs)
    assert set(st["prop_mean"]) == {"energy"}


def test_writer_rejects_out_of_vocabulary(tmp_path, small_molecules):
    w = CacheWriter(tmp_path / "x", "x", 1, Vocab(("H", "C")), [], {})
    with pytest.raises(ValueError, match="element 'O' is not in the vocabulary"):
        w.add(small_molecules[0])
    aromatic = Molecule(["C", "C"], [[0, 0, 0], [1.4, 0, 0]], bonds=[[0, 1, 4]], name="arom")
    with pytest.raises(ValueError, match="kekulize"):
        w.add(aromatic)


def test_missing_cache_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="moldiff-prepare"):
        MolCache(tmp_path / "nothing")


def test_recipe_version_change_rebuilds(tmp_path, monkeypatch, small_molecules):
    calls = []

    def prepare(out, limit=None):
        calls.append(out)
        return _write(out, small_molecules[: limit or None], version=registry.RECIPES["toyset"].version)

    monkeypatch.setitem(registry.RECIPES, "toyset", DatasetRecipe("toyset", 1, prepare))
    c1 = registry.prepare_dataset("toyset", root=str(tmp_path))
    assert len(calls) == 1 and c1.meta["recipe_version"] == 1
    registry.prepare_dataset("toyset", root=str(tmp_path))
    assert len(calls) == 1  # up to date: reused
    monkeypatch.setitem(registry.RECIPES, "toyset", dataclasses.replace(registry.RECIPES["toyset"], version=2))
    c2 = registry.prepare_dataset("toyset", root=str(tmp_path))
    assert len(calls) == 2 and c2.meta["recipe_version"] == 2
    registry.prepare_dataset("toyset", root=str(tmp_path), force=True)
    assert len(calls) == 3
    # a subset gets its own folder
    sub = registry.prepare_dataset("toyset", root=str(tmp_path), limit=3)
    assert sub.path.name == "toyset_first3" and len(sub) == 3
    # an unreadable cache is rebuilt
    (tmp_path / "toyset" / "meta.json").write_text("{broken")
    registry.prepare_dataset("toyset", root=str(tmp_path))
    assert len(calls) == 5
    assert json.loads((tmp_path / "toyset" / "meta.json").read_text())["recipe_version"] == 2


def test_unknown_dataset_lists_known(tmp_path):
    with pytest.raises(ValueError, match="known datasets") as exc:
        registry.prepare_dataset("nope", root=str(tmp_path))
    for name in ("qm9", "sdf", "geom", "nci"):
        assert name in str(exc.value)
