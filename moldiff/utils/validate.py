"""Checks of option and file values that end in a one-line ``ValueError`` naming the value."""

from __future__ import annotations

import math


def as_number(value: object, where: str, positive: bool = False) -> float:
    """A finite number (``> 0`` with ``positive``) from an option or file value, else a one-line ``ValueError``
    naming ``where``."""
    out = None
    if not isinstance(value, bool):
        try:
            out = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            pass
    if out is None or not math.isfinite(out) or (positive and not out > 0):
        raise ValueError(f"{where} must be a {'number > 0' if positive else 'finite number'}, got {value!r}")
    return out
