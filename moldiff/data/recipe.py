"""The dataset-recipe interface: how one dataset's cache is built, named and checked for staleness.

Each dataset module (``moldiff.data.qm9``, ``geom``, ``sdf_dataset``, ``nci``) defines one
:class:`DatasetRecipe` as ``RECIPE``; :mod:`moldiff.data.registry` finds it by dataset name.
Options are the preparation keys of a ``data`` config (``conf/data/<name>.yaml``); every function
of a recipe receives only the options it has parameters for.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from moldiff.data.cache import MolCache
from moldiff.data.source import source_stale


def call_with_options(fn: Callable[..., Any], options: Mapping[str, Any], *args: Any) -> Any:
    """``fn(*args, **options)`` with only the options ``fn`` has parameters for (all, if it takes ``**kwargs``)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(*args, **options)
    return fn(*args, **{k: v for k, v in options.items() if k in params})


@dataclass(frozen=True)
class DatasetRecipe:
    """How one dataset is prepared into a cache, and when an existing cache is out of date.

    Attributes:
        name: the dataset name (``data.name``).
        version: the recipe version recorded in each cache; a cache with another version is rebuilt.
        prepare: ``prepare(out, **options) -> MolCache`` builds the cache folder ``out``.
        option_names: the options a data config may set (default: ``prepare``'s parameters after ``out``).
        cache_name: ``cache_name(**options) -> str``, the cache folder (default: ``name``, or
            ``name_first<limit>`` for a ``limit`` option).
        content_options: ``content_options(**options) -> dict``, the options that shape the cache's
            content as recorded in its build report (``report["source"]``); a change rebuilds the
            cache. None: only the version is checked.
        source_file: ``source_file(**options) -> path``, the file whose recorded fingerprint is
            compared with the current one (see :func:`moldiff.data.source.source_stale`); None: none.
        requires_path: the ``path`` option must be set.
    """

    name: str
    version: int
    prepare: Callable[..., MolCache]
    option_names: tuple[str, ...] | None = None
    cache_name: Callable[..., str] | None = None
    content_options: Callable[..., dict[str, Any]] | None = None
    source_file: Callable[..., str | os.PathLike] | None = None
    requires_path: bool = False

    def options(self) -> tuple[str, ...]:
        """The option names a data config may set."""
        if self.option_names is not None:
            return self.option_names
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return tuple(p.name for p in inspect.signature(self.prepare).parameters.values() if p.kind in named)[1:]

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming unknown options (and listing the known ones) or a missing ``path``."""
        known = self.options()
        bad = sorted(set(options) - set(known))
        if bad:
            raise ValueError(f"dataset {self.name!r} has no option(s) {bad}; its options: {', '.join(known)}")
        self._check_path(options)

    def _check_path(self, options: Mapping[str, Any]) -> None:
        path = options.get("path")
        if self.requires_path and (not path or str(path) == "???"):
            raise ValueError(f"dataset {self.name!r} needs a path: set data.path=... (see conf/data/{self.name}.yaml)")

    def folder_name(self, options: Mapping[str, Any]) -> str:
        """The cache folder name for ``options`` (a subset or a variant gets its own folder)."""
        self._check_path(options)
        if self.cache_name is not None:
            return call_with_options(self.cache_name, options)
        limit = options.get("limit")
        return self.name if not limit else f"{self.name}_first{limit}"

    def stale(self, meta: dict, options: Mapping[str, Any]) -> str | None:
        """Why the cache with ``meta`` no longer matches ``options`` and the source file, or None.

        The recipe version is not checked here (see :func:`moldiff.data.registry.prepare_dataset`).
        """
        if self.content_options is None:
            return None
        content = call_with_options(self.content_options, options)
        path = call_with_options(self.source_file, options) if self.source_file is not None else None
        return source_stale(meta, content, path)

    def build(self, out: str | Path, options: Mapping[str, Any]) -> MolCache:
        """Prepare the cache folder ``out`` with ``options``."""
        self.check_options(options)
        return self.prepare(Path(out), **options)
