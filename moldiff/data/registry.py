"""Dataset names -> recipes (:class:`~moldiff.data.recipe.DatasetRecipe`), and 'open the cache,
building it if missing or stale'."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Callable

from moldiff.data.cache import MolCache, data_root
from moldiff.data.recipe import DatasetRecipe

log = logging.getLogger(__name__)

#: Dataset name -> the module defining its ``RECIPE`` (imported on first use; none imports RDKit at import time).
RECIPE_MODULES: dict[str, str] = {
    "qm9": "moldiff.data.qm9",
    "geom": "moldiff.data.geom",
    "sdf": "moldiff.data.sdf_dataset",
    "nci": "moldiff.data.nci",
}
#: Recipes by dataset name: those loaded so far, and any registered directly (e.g. by a test).
RECIPES: dict[str, DatasetRecipe] = {}


def known_datasets() -> list[str]:
    """The dataset names, sorted."""
    return sorted(set(RECIPE_MODULES) | set(RECIPES))


def get_recipe(name: str) -> DatasetRecipe:
    """The recipe of dataset ``name``.

    Raises:
        ValueError: for an unknown dataset name (lists the known ones).
    """
    if name not in RECIPES:
        if name not in RECIPE_MODULES:
            raise ValueError(f"unknown dataset {name!r}; known datasets: {known_datasets()}")
        RECIPES[name] = importlib.import_module(RECIPE_MODULES[name]).RECIPE
    return RECIPES[name]


def cache_name(name: str, limit: int | None = None, **options: Any) -> str:
    """Folder name of a dataset's cache (a subset or a variant gets its own folder).

    ``sdf`` caches are named after the file (``sdf_<stem>``), ``geom``/``nci`` get suffixes for
    ``limit`` and non-default conformer counts; the others are ``name`` or ``name_first<limit>``.
    """
    return get_recipe(name).folder_name({"limit": limit, **options})


def cache_path(name: str, root: str | None = None, limit: int | None = None, **options: Any) -> Path:
    """Where the cache of dataset ``name`` with these options lives (see :func:`cache_name`)."""
    return data_root(root) / cache_name(name, limit=limit, **options)


def prepare_dataset(name: str, root: str | None = None, force: bool = False, **options: Any) -> MolCache:
    """Open the cache of dataset ``name``, (re)building it when missing, stale or forced.

    Stale: the recipe version changed, or the options or the source file recorded in the cache's
    build report differ from the current ones (see :meth:`DatasetRecipe.stale`).

    Raises:
        ValueError: for an unknown dataset name (lists the known ones), or an unknown option.
    """
    recipe = get_recipe(name)
    recipe.check_options(options)
    path = data_root(root) / recipe.folder_name(options)
    if path.exists() and not force:
        try:
            cache: MolCache | None = MolCache(path)
        except Exception as exc:  # unreadable cache: rebuild
            log.warning("cache %s unreadable (%s): rebuilding", path, exc)
            cache = None
        if cache is not None:
            if cache.meta.get("recipe_version") != recipe.version:
                log.warning("cache %s has recipe %s, current is %s: rebuilding",
                            path, cache.meta.get("recipe_version"), recipe.version)
            else:
                stale = recipe.stale(cache.meta, options)
                if stale is None:
                    return cache
                log.warning("cache %s is out of date (%s): rebuilding", path, stale)
    return recipe.build(path, options)


def open_reference(name: str, root: str | None = None, announce: Callable[[str], None] | None = None) -> MolCache:
    """A reference cache for novelty and distribution metrics: a cache folder, or a dataset name (its cache
    under ``root`` is built if missing).

    Args:
        name: a cache folder (with ``meta.json``) or a dataset name (``qm9``, ...).
        root: where dataset caches live (default ``$MOLDIFF_DATA`` or ``data/processed``).
        announce: called with one line before a build starts (for ``qm9``: where, and that it takes about
            two minutes, once); default: a log message.

    Raises:
        ModuleNotFoundError: the dataset's source package is missing (checked before anything is built);
            the message has the install command.
        ValueError: an unknown dataset name.
    """
    say = announce or log.info
    p = Path(name)
    if (p / "meta.json").exists():
        return MolCache(p)
    path = cache_path(name, root)
    if not (path / "meta.json").exists():
        if name == "qm9":
            from moldiff.data.qm9 import qm9pack_files

            qm9pack_files()  # raises ModuleNotFoundError (with the install command) before we announce a build
            say(f"building the QM9 reference cache in {path.parent} (about 2 minutes, once)")
        else:
            say(f"building the {name} reference cache in {path.parent} (once)")
    return prepare_dataset(name, root=root)
