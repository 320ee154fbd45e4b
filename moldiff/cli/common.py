"""Shared bits of the Hydra entry points: clean one-line errors, number checks of option values."""

from __future__ import annotations

import functools
import logging
import math
import sys
from typing import Callable

log = logging.getLogger("moldiff")

#: Errors that are the user's input, reported in one line with exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, ModuleNotFoundError, KeyError)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (line breaks and runs of spaces become single spaces)."""
    msg = str(exc)
    if isinstance(exc, KeyError):
        msg = msg.strip("'\"")
    return " ".join(msg.split()) or type(exc).__name__


def friendly_errors(fn: Callable) -> Callable:
    """Turn user errors into ``error: ...`` on stderr and exit code 2 (set MOLDIFF_DEBUG=1 for tracebacks)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import os

        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            if os.environ.get("MOLDIFF_DEBUG"):
                raise
            print(f"error: {one_line(exc)}", file=sys.stderr)
            sys.exit(2)

    return wrapper


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
