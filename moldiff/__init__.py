"""moldiff: E(3)-equivariant joint diffusion over 3D molecules (coordinates, atom types, charges, bonds)."""

__version__ = "0.1.0"
#: Version of the checkpoint format; a checkpoint with another value fails to load with a message.
CHECKPOINT_FORMAT = 1

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
