"""Dataset names -> preparation functions, and 'open the cache, building it if missing or stale'."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from moldiff.data.cache import MolCache, data_root

log = logging.getLogger(__name__)


def _qm9(out: Path, limit: int | None = None, workers: int = 2, **_: Any) -> MolCache:
    from moldiff.data.qm9 import prepare_qm9

    return prepare_qm9(out, limit=limit, workers=workers)


def _qm9_version() -> int:
    from moldiff.data.qm9 import RECIPE_VERSION

    return RECIPE_VERSION


#: name -> (prepare(out, **options) -> MolCache, recipe_version() -> int)
DATASETS: dict[str, tuple[Callable[..., MolCache], Callable[[], int]]] = {
    "qm9": (_qm9, _qm9_version),
}


def cache_name(name: str, limit: int | None = None, **options: Any) -> str:
    """Folder name of a dataset's cache (a subset gets its own folder)."""
    return name if not limit else f"{name}_first{limit}"


def cache_path(name: str, root: str | None = None, limit: int | None = None, **options: Any) -> Path:
    return data_root(root) / cache_name(name, limit=limit, **options)


def prepare_dataset(name: str, root: str | None = None, force: bool = False, **options: Any) -> MolCache:
    """Open the cache of dataset ``name``, (re)building it when missing, stale (recipe changed) or forced.

    Raises:
        ValueError: for an unknown dataset name (lists the known ones).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {sorted(DATASETS)}")
    prepare, version = DATASETS[name]
    path = cache_path(name, root, **options)
    if path.exists() and not force:
        try:
            cache = MolCache(path)
            if cache.meta.get("recipe_version") == version():
                return cache
            log.warning("cache %s has recipe %s, current is %s: rebuilding", path, cache.meta.get("recipe_version"), version())
        except Exception as exc:  # unreadable cache: rebuild
            log.warning("cache %s unreadable (%s): rebuilding", path, exc)
    return prepare(path, **options)
