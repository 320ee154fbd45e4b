"""``LightningDataModule`` serving PyG batches from a dataset cache (no RDKit import).

Batches are built by ``moldiff.data.batching.FullGraphCollater`` from molecule indices, in one vectorised
step per batch (see there)."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from moldiff.data.batching import FullGraphCollater
from moldiff.data.cache import MolCache


class IndexDataset(torch.utils.data.Dataset):
    """The molecule indices of one split; ``FullGraphCollater`` turns a list of them into a batch."""

    def __init__(self, indices: np.ndarray) -> None:
        self.indices = np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> int:
        return int(self.indices[k])


class MolDataModule(L.LightningDataModule):
    """Train/val/test loaders over a prepared cache.

    Args:
        cache: an opened cache, or a zero-argument callable that opens (and if needed builds) it.
        batch_size: molecules per batch.
        train_split: ``train``, ``train_a`` or ``train_b``.
        subset: use only the first ``subset`` molecules of the train split (debugging, overfitting).
        props: property names put in ``y``.
        num_workers: loader processes.
        val_size: cap on validation molecules (validation loss is cheap but not free).
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
    ) -> None:
        super().__init__()
        self._cache = cache
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
        _ = self.cache

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
        return DataLoader(
            ds,
            batch_size=min(self.batch_size, len(ds)),
            shuffle=shuffle,
            drop_last=shuffle and len(ds) >= self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=self.collate,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False)
