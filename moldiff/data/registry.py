"""Dataset names -> preparation functions, and 'open the cache, building it if missing or stale'."""

from __future__ import annotations

import inspect
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


def _check_options(fn: Callable, name: str, options: dict[str, Any]) -> None:
    """Raise ``ValueError`` listing ``fn``'s options if ``options`` has a key it does not take."""
    known = [p for p in inspect.signature(fn).parameters if p != "out"]
    bad = sorted(set(options) - set(known))
    if bad:
        raise ValueError(f"dataset {name!r} has no option(s) {bad}; its options: {', '.join(known)}")


def _geom(out: Path, path: str | None = None, **options: Any) -> MolCache:
    from moldiff.data.geom import prepare_geom

    _check_options(prepare_geom, "geom", options)
    return prepare_geom(out, _required(path, "geom"), **options)


def _geom_version() -> int:
    from moldiff.data.geom import RECIPE_VERSION

    return RECIPE_VERSION


def _sdf(out: Path, path: str | None = None, **options: Any) -> MolCache:
    from moldiff.data.sdf_dataset import prepare_sdf

    _check_options(_sdf_public_options, "sdf", options)
    return prepare_sdf(out, _required(path, "sdf"), **options)


def _sdf_public_options(
    path: str | None = None,
    skip_invalid: bool = False,
    properties: Any = None,
    split_fractions: Any = None,
    seed: int = 0,
    heavy_atoms_only: bool = False,
    progress: bool = True,
) -> None:
    """The options of ``sdf`` a data config may set (the rest of ``prepare_sdf``'s are for other recipes)."""


def _sdf_version() -> int:
    from moldiff.data.sdf_dataset import RECIPE_VERSION

    return RECIPE_VERSION


def _nci(out: Path, **options: Any) -> MolCache:
    from moldiff.data.nci import prepare_nci

    _check_options(prepare_nci, "nci", options)
    return prepare_nci(out, **options)


def _nci_version() -> int:
    from moldiff.data.nci import RECIPE_VERSION

    return RECIPE_VERSION


def _required(path: str | None, name: str) -> str:
    if not path or str(path) == "???":
        raise ValueError(f"dataset {name!r} needs a path: set data.path=... (see conf/data/{name}.yaml)")
    return str(path)


#: name -> (prepare(out, **options) -> MolCache, recipe_version() -> int)
DATASETS: dict[str, tuple[Callable[..., MolCache], Callable[[], int]]] = {
    "qm9": (_qm9, _qm9_version),
    "geom": (_geom, _geom_version),
    "sdf": (_sdf, _sdf_version),
    "nci": (_nci, _nci_version),
}


def _sdf_name(path: str | None = None, heavy_atoms_only: bool = False, **_: Any) -> str:
    from moldiff.data.sdf_dataset import sdf_cache_name

    return sdf_cache_name(_required(path, "sdf"), heavy_atoms_only)


def _geom_name(limit: int | None = None, n_conformers: int = 5, heavy_atoms_only: bool = False, **_: Any) -> str:
    from moldiff.data.geom import geom_cache_name

    return geom_cache_name(limit, n_conformers, heavy_atoms_only)


def _nci_name(limit: int | None = None, n_conformers: int = 1, **_: Any) -> str:
    from moldiff.data.nci import nci_cache_name

    return nci_cache_name(limit, n_conformers)


#: name -> cache folder name from the preparation options (default: ``name`` or ``name_first<limit>``)
_CACHE_NAMES: dict[str, Callable[..., str]] = {"sdf": _sdf_name, "geom": _geom_name, "nci": _nci_name}


def _sdf_stale(meta: dict, path: str | None = None, progress: Any = None, **options: Any) -> str | None:
    from moldiff.data.sdf_dataset import file_source_stale, sdf_options

    _check_options(_sdf_public_options, "sdf", options)
    return file_source_stale(meta, _required(path, "sdf"), sdf_options(**options))


def _geom_stale(
    meta: dict, path: str | None = None, workers: Any = None, progress: Any = None, **options: Any
) -> str | None:
    from moldiff.data.geom import geom_options, geom_source_stale, prepare_geom

    _check_options(prepare_geom, "geom", {**options, "workers": workers})
    return geom_source_stale(meta, _required(path, "geom"), geom_options(**options))


def _nci_stale(meta: dict, workers: Any = None, progress: Any = None, **options: Any) -> str | None:
    from moldiff.data.nci import nci_options, nci_source_stale, prepare_nci

    _check_options(prepare_nci, "nci", {**options, "workers": workers})
    return nci_source_stale(meta, nci_options(**options))


#: name -> stale(meta, **options) -> why an existing cache no longer matches its source/options, or None.
#: (The recipe version is always checked.) These functions must not import RDKit.
_STALENESS: dict[str, Callable[..., str | None]] = {"sdf": _sdf_stale, "geom": _geom_stale, "nci": _nci_stale}


def cache_name(name: str, limit: int | None = None, **options: Any) -> str:
    """Folder name of a dataset's cache (a subset or a variant gets its own folder).

    ``sdf`` caches are named after the file (``sdf_<stem>``), ``geom``/``nci`` get suffixes for
    ``limit`` and non-default conformer counts; the others are ``name`` or ``name_first<limit>``.
    """
    if name in _CACHE_NAMES:
        return _CACHE_NAMES[name](limit=limit, **options)
    return name if not limit else f"{name}_first{limit}"


def cache_path(name: str, root: str | None = None, limit: int | None = None, **options: Any) -> Path:
    return data_root(root) / cache_name(name, limit=limit, **options)


def prepare_dataset(name: str, root: str | None = None, force: bool = False, **options: Any) -> MolCache:
    """Open the cache of dataset ``name``, (re)building it when missing, stale or forced.

    Stale: the recipe version changed, or (``sdf``/``geom``/``nci``) the source file or the options
    recorded in the cache's build report differ from the current ones.

    Raises:
        ValueError: for an unknown dataset name (lists the known ones).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {sorted(DATASETS)}")
    prepare, version = DATASETS[name]
    path = cache_path(name, root, **options)
    if path.exists() and not force:
        try:
            cache: MolCache | None = MolCache(path)
        except Exception as exc:  # unreadable cache: rebuild
            log.warning("cache %s unreadable (%s): rebuilding", path, exc)
            cache = None
        if cache is not None:
            if cache.meta.get("recipe_version") != version():
                log.warning("cache %s has recipe %s, current is %s: rebuilding",
                            path, cache.meta.get("recipe_version"), version())
            else:
                stale = _STALENESS[name](cache.meta, **options) if name in _STALENESS else None
                if stale is None:
                    return cache
                log.warning("cache %s is out of date (%s): rebuilding", path, stale)
    return prepare(path, **options)
