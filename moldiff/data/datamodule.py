"""``LightningDataModule`` serving PyG batches from a dataset cache (no RDKit import)."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch_geometric.loader import DataLoader

from moldiff.data.cache import MolCache


class CacheDataset(torch.utils.data.Dataset):
    """Molecules ``indices`` of a cache; ``y`` holds the chosen properties, raw units."""

    def __init__(self, cache: MolCache, indices: np.ndarray, props: list[str] | None = None) -> None:
        self.cache = cache
        self.indices = np.asarray(indices)
        self.props = list(props or [])
        if self.props:
            cache.prop_columns(self.props)  # validates names

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        return self.cache.data(int(self.indices[k]), self.props or None)


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
        self.train_set = CacheDataset(self.cache, train, self.props)
        self.val_set = CacheDataset(self.cache, val, self.props)
        self.test_set = CacheDataset(self.cache, self._idx("test", None), self.props)

    def _loader(self, ds, shuffle: bool) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=min(self.batch_size, len(ds)),
            shuffle=shuffle,
            drop_last=shuffle and len(ds) >= self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False)
