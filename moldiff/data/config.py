"""Open a dataset cache from its Hydra ``data`` config group (building it if needed)."""

from __future__ import annotations

from typing import Any, Mapping

from moldiff.data.cache import MolCache
from moldiff.data.registry import prepare_dataset

#: Keys of a ``data`` config that configure loading, not preparation.
LOADER_KEYS = {"name", "root", "batch_size", "num_workers", "train_split", "subset", "val_size"}


def prepare_options(data_cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dict(data_cfg).items() if k not in LOADER_KEYS}


def open_dataset(data_cfg: Mapping[str, Any], force: bool = False) -> MolCache:
    """Cache of ``data_cfg.name`` under ``data_cfg.root``, prepared with the non-loader keys as options."""
    d = dict(data_cfg)
    return prepare_dataset(d["name"], root=d.get("root"), force=force, **prepare_options(d))
