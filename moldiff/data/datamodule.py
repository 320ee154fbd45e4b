"""``LightningDataModule`` serving PyG batches from a dataset cache (no RDKit import).

Batches are built by ``moldiff.data.batching.FullGraphCollater`` from molecule indices, in one vectorised
step per batch (see there). The training order is a permutation fixed by ``(seed, epoch)`` for each
process (:class:`EpochSampler`), and the training loader records how far into the epoch it is
(:class:`ResumableLoader`), so a run resumed from a mid-epoch checkpoint sees the same batches as one
that never stopped."""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from moldiff.data.batching import FullGraphCollater
from moldiff.data.cache import MolCache

log = logging.getLogger(__name__)


class IndexDataset(torch.utils.data.Dataset):
    """The molecule indices of one split; ``FullGraphCollater`` turns a list of them into a batch."""

    def __init__(self, indices: np.ndarray) -> None:
        self.indices = np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> int:
        return int(self.indices[k])


class EpochSampler(DistributedSampler):
    """Shuffled molecule order of one process: a permutation fixed by ``(seed, epoch)``, split between
    ``num_replicas`` processes as ``DistributedSampler`` does (so Lightning keeps it under DDP).

    ``start`` skips that many leading indices in the next pass only (a resumed, partly done epoch).
    """

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self.start = self.start, 0
        return iter(indices[start:])


class ResumableLoader(DataLoader):
    """Training ``DataLoader`` over an :class:`EpochSampler` whose position goes into Lightning checkpoints.

    Lightning saves the ``state_dict`` of a loader that has one with each checkpoint and hands it back
    through ``load_state_dict`` when a run resumes; the next pass then starts at the first batch not yet
    trained on. The loader's own generator (worker seeds) is reseeded from ``(seed, epoch)`` at each pass,
    so starting a pass draws nothing from torch's global generator (the training noise).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, EpochSampler):
            raise TypeError("ResumableLoader needs an EpochSampler")
        self._served = 0

    def __iter__(self) -> Iterator[Any]:
        # a generator: the body runs at the first batch, after Lightning's set_epoch
        sampler: EpochSampler = self.sampler
        self._served = sampler.start // self.batch_size
        if self.generator is not None:
            self.generator.manual_seed(sampler.seed * 1_000_003 + sampler.epoch)
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Epoch and batches of it handed out, with what must match for a resume to continue the pass."""
        s: EpochSampler = self.sampler
        return {"epoch": int(s.epoch), "batches": int(self._served), "batch_size": int(self.batch_size),
                "num_replicas": int(s.num_replicas), "seed": int(s.seed), "num_samples": int(s.num_samples)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the saved pass after its last batch (or start the next epoch if it was complete)."""
        s: EpochSampler = self.sampler
        mine = {"batch_size": int(self.batch_size), "num_replicas": int(s.num_replicas), "seed": int(s.seed),
                "num_samples": int(s.num_samples)}
        differ = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if differ:
            log.warning("the checkpoint's data order does not fit this run (%s): the epoch restarts from its "
                        "first batch", ", ".join(f"{k} {a} -> {b}" for k, (a, b) in differ.items()))
            s.set_epoch(epoch)
            return
        if batches >= len(self):
            s.set_epoch(epoch + 1)
        else:
            s.set_epoch(epoch)
            s.start = batches * self.batch_size


class MolDataModule(L.LightningDataModule):
    """Train/val/test loaders over a prepared cache.

    The cache is built at most once: ``prepare`` (if given) runs in ``prepare_data``, which Lightning calls
    in one process per node before any process runs ``setup``; ``setup`` only opens the cache.

    Args:
        cache: an opened cache, or a zero-argument callable that opens it (called in ``setup``).
        batch_size: molecules per batch (per process).
        train_split: ``train``, ``train_a`` or ``train_b``.
        subset: use only the first ``subset`` molecules of the train split (debugging, overfitting).
        props: property names put in ``y``.
        num_workers: loader processes.
        val_size: cap on validation molecules (validation loss is cheap but not free).
        seed: seed of the training order (see :class:`EpochSampler`).
        prepare: zero-argument callable that builds the cache if it is missing or out of date.
    """

    def __init__(
        self,
        cache: MolCache | Any,
        batch_size: int = 64,
        train_split: str = "train",
        subset: int | None = None,
        props: list[str] | None = None,
        num_workers: int = 0,
        val_size: int | None = 2000,
        seed: int = 0,
        prepare: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__()
        self._cache = cache
        self._prepare = prepare
        self.batch_size = batch_size
        self.train_split = train_split
        self.subset = subset
        self.props = list(props or [])
        self.num_workers = num_workers
        self.val_size = val_size
        self.seed = seed

    @property
    def cache(self) -> MolCache:
        if not isinstance(self._cache, MolCache):
            self._cache = self._cache()
        return self._cache

    def prepare_data(self) -> None:
        """Build the cache if needed (one process per node; no state is kept here)."""
        if self._prepare is not None:
            self._prepare()

    def _idx(self, split: str, cap: int | None) -> np.ndarray:
        idx = self.cache.indices(split)
        if cap is not None:
            idx = idx[:cap]
        return idx

    def setup(self, stage: str | None = None) -> None:
        train = self._idx(self.train_split, self.subset)
        if len(train) == 0:
            raise ValueError(f"dataset {self.cache.name!r} has no molecules in split {self.train_split!r}")
        val = self._idx("val", self.val_size)
        if len(val) == 0 or self.subset is not None:
            val = train[: min(len(train), self.val_size or len(train))]
        if self.props:
            self.cache.prop_columns(self.props)  # validates names
        self.collate = FullGraphCollater(self.cache, self.props)
        self.train_set = IndexDataset(train)
        self.val_set = IndexDataset(val)
        self.test_set = IndexDataset(self._idx("test", None))

    def _loader(self, ds, shuffle: bool) -> DataLoader:
        common = dict(
            batch_size=min(self.batch_size, len(ds)),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=self.collate,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed),  # not torch's global generator
        )
        if not shuffle:
            return DataLoader(ds, shuffle=False, **common)
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = EpochSampler(ds, num_replicas=replicas, rank=rank, seed=self.seed)
        return ResumableLoader(ds, sampler=sampler, drop_last=len(ds) >= self.batch_size, **common)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False)
