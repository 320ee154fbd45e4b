"""moldiff: E(3)-equivariant joint diffusion over 3D molecules (coordinates, atom types, charges, bonds)."""

__version__ = "0.1.0"
#: Version of the checkpoint format; a checkpoint with another value fails to load with a message.
CHECKPOINT_FORMAT = 1


def _source_checkout_conf() -> None:
    """Make the packaged configs importable as ``moldiff.conf`` from a source checkout that is only on
    ``PYTHONPATH`` (a bare training machine); an installed package maps ``conf/`` there itself."""
    import importlib.util
    import sys
    from pathlib import Path

    if "moldiff.conf" in sys.modules or importlib.util.find_spec("moldiff.conf") is not None:
        return
    conf = Path(__file__).resolve().parent.parent / "conf"
    if (conf / "__init__.py").is_file():
        spec = importlib.util.spec_from_file_location("moldiff.conf", conf / "__init__.py",
                                                      submodule_search_locations=[str(conf)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["moldiff.conf"] = module
        spec.loader.exec_module(module)


_source_checkout_conf()

#: Names of the Python API (:mod:`moldiff.api`), imported on first use so that ``import moldiff`` stays light.
_API = ("load_pretrained", "evaluate", "predict_properties", "MoleculeGenerator")
__all__ = ["__version__", "CHECKPOINT_FORMAT", *_API]


def __getattr__(name: str):
    if name in _API:
        from moldiff import api

        return getattr(api, name)
    raise AttributeError(f"module 'moldiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
