"""``MolDataModule`` serves PyG batches in the package convention, without RDKit."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from moldiff.data.cache import CacheWriter
from moldiff.data.datamodule import MolDataModule
from moldiff.data.vocab import Vocab

VOCAB = Vocab(("H", "C", "N", "O"), (-1, 0, 1))


@pytest.fixture
def cache(tmp_path, small_molecules):
    w = CacheWriter(tmp_path / "toy", "toy", 1, VOCAB, ["energy"], {"energy": "kcal/mol"})
    for k, m in enumerate(small_molecules):
        w.add(m, f"smi{k}", np.array([10.0 + k]), m.name)
    split = np.array([0, 0, 0, 0, 1, 2], dtype=np.int8)
    return w.finish(split, np.array([0, 1, 0, 1, -1, -1], dtype=np.int8))


def test_batches_have_documented_fields(cache, small_molecules):
    dm = MolDataModule(cache, batch_size=4, props=["energy"], val_size=None)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))  # not shuffled
    assert batch.num_graphs == 1
    train_batch = next(iter(dm.train_dataloader()))
    assert train_batch.num_graphs == 4
    for b in (batch, train_batch):
        n = b.pos.shape[0]
        assert b.pos.shape == (n, 3) and b.pos.dtype == torch.float32
        assert b.atom_types.shape == (n,) and b.atom_types.dtype == torch.long
        assert b.charges.shape == (n,) and b.charges.dtype == torch.long
        assert b.batch.shape == (n,)
        counts = torch.bincount(b.batch)
        # edge_index: all ordered pairs (i != j) inside each molecule
        assert b.edge_index.shape == (2, int((counts * (counts - 1)).sum()))
        src, dst = b.edge_index
        assert bool((src != dst).all()) and bool((b.batch[src] == b.batch[dst]).all())
        assert b.bond_types.shape == (b.edge_index.shape[1],)
        assert int(b.bond_types.min()) >= 0 and int(b.bond_types.max()) <= 3
        assert b.y.shape == (b.num_graphs, 1)
        # positions are centred per molecule
        centre = torch.zeros(b.num_graphs, 3).index_add_(0, b.batch, b.pos) / counts[:, None]
        assert torch.allclose(centre, torch.zeros_like(centre), atol=1e-5)


def test_bond_types_match_molecule(cache, small_molecules):
    for i, ref in enumerate(small_molecules):
        d = cache.data(i, ["energy"])
        src, dst = d.edge_index
        dense = torch.zeros(d.num_nodes, d.num_nodes, dtype=torch.long)
        dense[src, dst] = d.bond_types
        assert torch.equal(dense, dense.T)
        assert torch.equal(dense, torch.from_numpy(ref.bond_matrix()))  # 0 = no bond
        assert [VOCAB.elements[t] for t in d.atom_types] == ref.elements
        assert [VOCAB.charges[c] for c in d.charges] == ref.charges.tolist()
        assert float(d.y[0, 0]) == 10.0 + i


def test_train_halves_and_subset(cache):
    dm = MolDataModule(cache, batch_size=8, train_split="train_b")
    dm.setup("fit")
    assert sorted(dm.train_set.indices.tolist()) == [1, 3]
    dm = MolDataModule(cache, batch_size=8, subset=2)
    dm.setup("fit")
    assert len(dm.train_set) == 2


def test_unknown_property_is_named(cache):
    dm = MolDataModule(cache, props=["gap"])
    with pytest.raises(ValueError, match="gap"):
        dm.setup("fit")


def test_imports_do_not_pull_rdkit():
    code = (
        "import sys\n"
        "import moldiff.data.cache, moldiff.data.datamodule, moldiff.data.graph\n"
        "assert 'rdkit' not in sys.modules, sorted(m for m in sys.modules if m.startswith('rdkit'))\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_vectorised_collater_equals_pyg_batching(cache):
    """The collater lays out exactly what Batch.from_data_list of the per-molecule graphs gives, plus rev."""
    from torch_geometric.data import Batch

    from moldiff.data.batching import FullGraphCollater
    from moldiff.utils.graph import reverse_edge_index

    idx = [3, 0, 5, 2, 2]
    ours = FullGraphCollater(cache, ["energy"])(idx)
    ref = Batch.from_data_list([cache.data(i, ["energy"]) for i in idx])
    for key in ("pos", "atom_types", "charges", "edge_index", "bond_types", "batch", "ptr", "y"):
        assert torch.equal(getattr(ours, key), getattr(ref, key)), key
    assert ours.num_graphs == ref.num_graphs == len(idx)
    assert torch.equal(ours.idx, torch.tensor(idx))
    assert torch.equal(ours.rev, reverse_edge_index(ref.edge_index, ref.num_nodes))
