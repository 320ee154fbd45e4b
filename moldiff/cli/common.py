"""Shared bits of the Hydra entry points: clean one-line errors, number checks of option values."""

from __future__ import annotations

import functools
import logging
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


