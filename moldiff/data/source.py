"""What a cache was built from, and whether that still holds: one fingerprint and staleness rule.

A recipe records ``report["source"]`` when it builds a cache: the options that shape the cache's
content and, when it reads a file, that file's resolved path, size, modification time (ns) and
SHA-256 (:func:`source_fingerprint`). :func:`source_stale` compares the record with the current
file and options: a different file, changed options or changed content is a reason to rebuild; a
touched but identical file is not (its hash is compared when the time differs); a missing file is
not either: the cache may have been copied alone to another machine, and is used as it is.

No RDKit here: staleness is checked before anything is built.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from moldiff.utils.io import file_sha256


def normalise_options(obj: Any) -> Any:
    """JSON round trip (tuples -> lists, OmegaConf containers -> plain) so recorded options compare equal."""
    if hasattr(obj, "items"):
        return {str(k): normalise_options(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) or (hasattr(obj, "__iter__") and not isinstance(obj, (str, bytes))):
        return [normalise_options(v) for v in obj]
    return json.loads(json.dumps(obj))


def source_fingerprint(
    options: dict[str, Any], path: str | os.PathLike | None = None, with_hash: bool = True
) -> dict[str, Any]:
    """The ``source`` entry of a build report: the options and, with ``path``, that file's identity.

    Args:
        options: the options that shape the cache's content.
        path: the source file, if the recipe reads one.
        with_hash: include the file's SHA-256.

    Returns:
        ``{"options": ...}``, plus ``path`` (resolved), ``size``, ``mtime_ns`` and ``sha256`` with ``path``.
    """
    fp: dict[str, Any] = {}
    if path is not None:
        p = Path(path).expanduser().resolve()
        st = p.stat()
        fp = {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if with_hash:
            fp["sha256"] = file_sha256(p)
    fp["options"] = normalise_options(options)
    return fp


def source_stale(meta: dict, options: dict[str, Any], path: str | os.PathLike | None = None) -> str | None:
    """Why a cache no longer matches its source (see the module docstring), or None if it does.

    Args:
        meta: the cache's ``meta.json``.
        options: the current options that shape the content.
        path: the current source file, if the recipe reads one.
    """
    built = (meta.get("report") or {}).get("source")
    if not isinstance(built, dict):
        return "the cache does not record its source"
    p = None if path is None else Path(path).expanduser().resolve()
    if p is not None and not p.exists():
        return None
    if p is not None and built.get("path") != str(p):
        return f"it was built from {built.get('path')}, not {p}"
    if built.get("options") != normalise_options(options):
        return f"options changed ({built.get('options')} -> {normalise_options(options)})"
    if p is None:
        return None
    st = p.stat()
    if built.get("size") != st.st_size:
        return f"{p} changed (size {built.get('size')} -> {st.st_size} bytes)"
    if built.get("mtime_ns") != st.st_mtime_ns and built.get("sha256") != file_sha256(p):
        return f"{p} changed (content hash differs)"
    return None
