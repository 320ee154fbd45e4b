"""File helpers: atomic writes (a temporary sibling renamed into place, also of a JSON document), SHA-256 of a file, a
path as records show it, and silencing C libraries that print on the process's own stdout/stderr."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing and rename it over ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj, indent: int = 1) -> None:
    """Write ``obj`` as indented JSON (with a final newline) through :func:`atomic_write`."""
    with atomic_write(path) as fh:
        json.dump(obj, fh, indent=indent)
        fh.write("\n")


def shown_path(path: str | os.PathLike) -> str:
    """``path`` as result files record it: relative to the working folder when under it (no machine's layout), else as
    given."""
    p = Path(path).resolve()
    cwd = Path.cwd().resolve()
    return str(p.relative_to(cwd)) if p.is_relative_to(cwd) else str(path)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in ``chunk``-byte blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def quiet_c_output() -> Iterator[None]:
    """Point file descriptors 1 and 2 at /dev/null for the duration (restored afterwards).

    For C code that prints directly (e.g. YAeHMOP behind RDKit's Hueckel bond perception prints
    "!!! Warning !!! Distance between atoms ..."); Python-level redirection cannot catch it.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in saved:
            os.dup2(devnull, fd)
        yield
    finally:
        with contextlib.suppress(Exception):
            ctypes.CDLL(None).fflush(None)  # drop what C stdio buffered while redirected
        for fd, dup in saved.items():
            os.dup2(dup, fd)
            os.close(dup)
        os.close(devnull)
