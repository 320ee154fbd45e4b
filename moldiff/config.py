"""The packaged configuration (``moldiff.conf``) as the one source of every default.

The training, sampling and model settings have their defaults in the YAML files under ``conf/`` and
nowhere else: code that builds a model, a noise process or an optimiser from a partial dict (a script, a
test, a notebook) fills the missing keys from those files with :func:`with_defaults`, the same values a
``moldiff-train`` run would compose. Checkpoints store the complete settings they were trained with, so
later changes to the defaults never change a trained model.

    from moldiff.config import packaged, with_defaults

    diffusion = with_defaults(packaged("diffusion/cosine.yaml"), {"time_weighting": "none"})
"""

from __future__ import annotations

import copy
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

#: Keys of a config file that are Hydra's, not settings.
_HYDRA_KEYS = ("defaults", "hydra")


def conf_root():
    """The packaged config folder (``moldiff.conf``; a source checkout maps ``conf/`` there on import)."""
    return resources.files("moldiff.conf")


@lru_cache(maxsize=None)
def _read(relpath: str) -> dict[str, Any]:
    """A packaged config file as it is written (with Hydra's keys), read once."""
    from omegaconf import OmegaConf

    res = conf_root().joinpath(relpath)
    if not res.is_file():
        raise FileNotFoundError(f"moldiff.conf has no {relpath}")
    return OmegaConf.to_container(OmegaConf.create(res.read_text()), resolve=False)


def _load(relpath: str) -> dict[str, Any]:
    return {k: v for k, v in _read(relpath).items() if k not in _HYDRA_KEYS}


def packaged(relpath: str, section: str | None = None) -> dict[str, Any]:
    """A packaged config file (e.g. ``diffusion/cosine.yaml``, ``model/medium.yaml``) as a plain dict, or one
    ``section`` of it (``packaged("train.yaml", "optim")``). Interpolations such as ``${trainer.max_steps}``
    are left unresolved: they only mean something inside a composed run, and :func:`optim_defaults` drops them."""
    cfg = _load(relpath)
    if section is not None:
        if section not in cfg:
            raise KeyError(f"moldiff.conf/{relpath} has no section {section!r}")
        cfg = cfg[section]
    return copy.deepcopy(cfg)


def with_defaults(defaults: Mapping[str, Any], given: Mapping[str, Any] | None, where: str = "settings") -> dict[str, Any]:
    """``given`` on top of ``defaults``, merged key by key into nested dicts.

    Raises:
        ValueError: a key of ``given`` that ``defaults`` does not have (a typo would otherwise be ignored).
    """
    out = copy.deepcopy(dict(defaults))
    for key, value in (given or {}).items():
        if key not in out:
            raise ValueError(f"unknown {where} key {key!r}; known: {sorted(out)}")
        if isinstance(out[key], dict) and isinstance(value, Mapping):
            out[key] = with_defaults(out[key], value, f"{where}.{key}")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("${")


def optim_defaults() -> dict[str, Any]:
    """``train.yaml``'s ``optim`` section, with run-dependent interpolations (the step budget) set to None."""
    return {k: (None if _is_interpolation(v) else v) for k, v in packaged("train.yaml", "optim").items()}


def diffusion_defaults() -> dict[str, Any]:
    """The default noise process and loss (``diffusion/cosine.yaml``, the ``diffusion`` group's default)."""
    return packaged("diffusion/cosine.yaml")


def model_preset(name: str) -> dict[str, Any]:
    """A packaged denoiser preset (``model/<name>.yaml``: tiny, small, medium, large, legacy_small)."""
    try:
        return packaged(f"model/{name}.yaml")
    except FileNotFoundError:
        presets = sorted(p.name[:-5] for p in conf_root().joinpath("model").iterdir()
                         if p.name.endswith(".yaml"))
        raise ValueError(f"unknown model preset {name!r}; packaged presets: {presets}") from None


def default_model_preset() -> str:
    """The preset ``moldiff-train`` uses when none is given (``train.yaml``'s ``model`` default)."""
    for entry in _read("train.yaml").get("defaults", []):
        if isinstance(entry, dict) and "model" in entry:
            return str(entry["model"])
    raise KeyError("train.yaml names no default model preset")
