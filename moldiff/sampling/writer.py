"""Resumable SDF output that never loses a finished result.

Whole records are appended to ``<out>.partial`` batch by batch; ``<out>.partial.json`` holds the run's
settings and the byte count of its finished batches, so that a rerun with the same settings continues
where an interrupted (even killed) run stopped, without repeating a molecule.

``out`` itself is only ever replaced

* by the complete result (an atomic rename of the partial file), whose settings and checksum go to
  ``<out>.run.json``: rerunning the same command then finds ``out`` complete and samples nothing;
* on interruption, by a copy of the finished molecules, and only when ``out`` does not exist yet or
  holds an earlier copy of this same unfinished run. A complete or unrelated ``out`` is never shrunk,
  and a run that finished no molecule leaves no ``out`` behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from moldiff.chem.io import molecule_to_sdf_block
from moldiff.chem.molecule import Molecule


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object stored at ``path``, or ``None`` when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file renamed over it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def file_matches(path: Path, fingerprint: dict[str, Any] | None) -> bool:
    """Whether ``path`` is a file with the size and sha256 recorded in ``fingerprint``."""
    if not fingerprint or not path.is_file():
        return False
    return path.stat().st_size == fingerprint.get("bytes") and file_digest(path) == fingerprint.get("sha256")


def fingerprint(path: Path) -> dict[str, Any]:
    """Size and sha256 of a file, to recognise it later."""
    return {"bytes": path.stat().st_size, "sha256": file_digest(path)}


def settings_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``key: old then, new now`` for every setting that differs."""
    return ", ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now"
                     for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))


class ResumableSDFWriter:
    """Append-only SDF writer with a settings fingerprint for resuming.

    Creating it and :meth:`check` only read what an earlier run left; nothing is written before :meth:`open`.

    Attributes:
        out: the final SDF.
        partial: ``<out>.partial``, the records written so far.
        count: molecules in ``partial`` (after resuming, those of the earlier run).
        batches_done: finished batches in ``partial``.
        already_complete: ``out`` is the complete result of a run with these settings.
    """

    def __init__(self, out: str | os.PathLike, settings: dict[str, Any], resume: bool = True) -> None:
        self.out = Path(out)
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.state = self.out.with_name(self.out.name + ".partial.json")
        self.record = self.out.with_name(self.out.name + ".run.json")
        self.settings = settings
        self.resume = resume
        self.count = 0
        self.batches_done = 0
        self._resume_bytes: int | None = None
        self._snapshot: dict[str, Any] | None = None
        self.already_complete = resume and self._out_is_complete()

    def _out_is_complete(self) -> bool:
        record = read_json(self.record)
        return bool(record) and record.get("settings") == self.settings and file_matches(self.out, record)

    def _saved_state(self) -> dict[str, Any] | None:
        return read_json(self.state) if self.partial.is_file() else None

    def check(self) -> None:
        """Find an interrupted run to resume (when ``resume``).

        Raises:
            ValueError: ``partial`` holds molecules of a run with other settings (they would be lost).
        """
        saved = self._saved_state() if self.resume else None
        if saved is None:
            return
        if saved.get("settings") == self.settings:
            nbytes = int(saved.get("bytes", 0))
            if self.partial.stat().st_size >= nbytes:
                self.count = int(saved.get("count", 0))
                self.batches_done = int(saved.get("batches_done", 0))
                self._resume_bytes = nbytes
                self._snapshot = saved.get("snapshot")
        elif int(saved.get("count", 0)) > 0:
            raise ValueError(
                f"{self.partial} holds {saved['count']} molecules of an interrupted run with other settings "
                f"({settings_diff(saved.get('settings') or {}, self.settings)}); rerun with the same settings "
                f"to resume it, resume=false to discard it, or choose another out=")

    @property
    def resumed(self) -> bool:
        """Whether :meth:`open` continues an interrupted run."""
        return self._resume_bytes is not None

    def open(self) -> None:
        """Create the output folder and the partial file (cut back to its last finished batch when resuming)."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self._resume_bytes is not None:
            with open(self.partial, "r+b") as fh:
                fh.truncate(self._resume_bytes)
        else:
            self.partial.write_text("")
            self._save_state()

    def discard_partial(self) -> None:
        """Remove a leftover partial file of a run with these same settings (``out`` already holds it all)."""
        saved = self._saved_state()
        if saved is not None and saved.get("settings") == self.settings:
            self.partial.unlink(missing_ok=True)
            self.state.unlink(missing_ok=True)

    def _save_state(self) -> None:
        state = {"settings": self.settings, "count": self.count, "batches_done": self.batches_done,
                 "bytes": self.partial.stat().st_size}
        if self._snapshot:
            state["snapshot"] = self._snapshot
        write_json(self.state, state)

    def append(self, mols: list[Molecule]) -> None:
        """Append one finished batch of molecules (possibly empty) and record it as done."""
        blocks = "".join(molecule_to_sdf_block(m) for m in mols)
        with open(self.partial, "a") as fh:
            fh.write(blocks)
            fh.flush()
            os.fsync(fh.fileno())
        self.count += len(mols)
        self.batches_done += 1
        self._save_state()

    def finalize(self, complete: bool) -> Path | None:
        """Publish what was written.

        Args:
            complete: every batch is done.

        Returns:
            The file holding the finished molecules: ``out``, or ``partial`` when an existing ``out``
            was left untouched; ``None`` when the run finished no molecule (no file is left then).
        """
        if complete:
            return self._publish()
        if self.count == 0:
            self.partial.unlink(missing_ok=True)
            self.state.unlink(missing_ok=True)
            return None
        if self.out.exists() and not file_matches(self.out, self._snapshot):
            return self.partial
        tmp = self.out.with_name(self.out.name + ".tmp")
        shutil.copyfile(self.partial, tmp)
        self._snapshot = fingerprint(tmp)
        os.replace(tmp, self.out)
        self._save_state()
        return self.out

    def _publish(self) -> Path:
        write_json(self.record, {"settings": self.settings, "n_molecules": self.count, **fingerprint(self.partial)})
        os.replace(self.partial, self.out)
        self.state.unlink(missing_ok=True)
        return self.out

    @property
    def published_count(self) -> int:
        """Molecules in a complete ``out`` (from its run record)."""
        record = read_json(self.record) or {}
        return int(record.get("n_molecules", 0))
