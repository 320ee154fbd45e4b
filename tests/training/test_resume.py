"""Pieces of an exact resume: the seeded, resumable training order and the saved random generators."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from moldiff.data.cache import load_cache
from moldiff.data.datamodule import EpochSampler, MolDataModule, ResumableLoader
from moldiff.training.callbacks import RNGStateCheckpoint, capture_rng_state, restore_rng_state

pytestmark = pytest.mark.qm9


def _loader(data_root, seed: int = 0, batch_size: int = 8) -> ResumableLoader:
    dm = MolDataModule(load_cache("qm9_first300", data_root), batch_size=batch_size, subset=40, val_size=8, seed=seed)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, ResumableLoader) and isinstance(loader.sampler, EpochSampler)
    return loader


def _epoch(loader: ResumableLoader, epoch: int) -> list[list[int]]:
    loader.sampler.set_epoch(epoch)
    return [b.idx.tolist() for b in loader]


def test_training_order_is_fixed_by_seed_and_epoch(data_root):
    a, b = _loader(data_root), _loader(data_root)
    assert _epoch(a, 0) == _epoch(b, 0)
    assert _epoch(a, 1) == _epoch(b, 1) != _epoch(a, 0)
    assert _epoch(_loader(data_root, seed=1), 0) != _epoch(a, 0)
    before = torch.get_rng_state()
    _epoch(a, 2)
    assert torch.equal(torch.get_rng_state(), before), "starting an epoch drew from torch's global generator"


def test_loader_resumes_after_the_batches_already_trained_on(data_root):
    whole = _epoch(_loader(data_root), 3)
    assert len(whole) == 5
    first = _loader(data_root)
    first.sampler.set_epoch(3)
    it = iter(first)
    done = [next(it).idx.tolist() for _ in range(2)]
    state = first.state_dict()
    assert state["epoch"] == 3 and state["batches"] == 2
    second = _loader(data_root)
    second.load_state_dict(state)
    second.sampler.set_epoch(3)  # as Lightning does at the epoch's start
    rest = [b.idx.tolist() for b in second]
    assert done + rest == whole
    assert second.state_dict()["batches"] == 5
    assert _epoch(second, 4) == _epoch(_loader(data_root), 4)  # later epochs are whole


def test_loader_state_of_a_finished_epoch_starts_the_next(data_root):
    first = _loader(data_root)
    _epoch(first, 0)
    second = _loader(data_root)
    second.load_state_dict(first.state_dict())
    assert second.sampler.epoch == 1 and second.sampler.start == 0


def test_loader_state_from_another_batch_size_restarts_the_epoch(data_root, caplog):
    first = _loader(data_root, batch_size=4)
    first.sampler.set_epoch(2)
    next(iter(first))
    second = _loader(data_root, batch_size=8)
    second.load_state_dict(first.state_dict())
    assert second.sampler.start == 0 and second.sampler.epoch == 2
    assert "batch_size 4 -> 8" in caplog.text


def test_rng_states_survive_a_weights_only_checkpoint():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.normal()  # a cached Gaussian in NumPy's state
    cb = RNGStateCheckpoint()
    buf = io.BytesIO()
    torch.save({"callbacks": {"RNGStateCheckpoint": cb.state_dict()}}, buf)
    expected = (random.random(), np.random.normal(), float(torch.rand(1)))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    buf.seek(0)
    cb2 = RNGStateCheckpoint()
    cb2.load_state_dict(torch.load(buf, weights_only=True)["callbacks"]["RNGStateCheckpoint"])
    cb2.on_train_batch_start(None, None, None, 0)  # restored where the saving run would draw next
    assert (random.random(), np.random.normal(), float(torch.rand(1))) == expected
    state = capture_rng_state()
    restore_rng_state(state)
    assert torch.equal(torch.get_rng_state(), state["torch"])
