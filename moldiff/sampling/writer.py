"""Resumable SDF output: whole records are appended to ``<out>.partial`` and renamed at the end.

An interrupted run leaves only complete records; ``finalize`` (also on Ctrl-C) renames the partial file
to ``out``, and a rerun with the same settings continues where it stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from moldiff.chem.io import molecule_to_sdf_block
from moldiff.chem.molecule import Molecule


class ResumableSDFWriter:
    """Append-only SDF writer with a settings fingerprint for resuming."""

    def __init__(self, out: str | os.PathLike, settings: dict, resume: bool = True) -> None:
        self.out = Path(out)
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.state = self.out.with_name(self.out.name + ".partial.json")
        self.settings = settings
        self.count = 0
        self.batches_done = 0
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.partial.exists() and self.state.exists():
            saved = json.loads(self.state.read_text())
            if saved.get("settings") == settings:
                self.count = int(saved["count"])
                self.batches_done = int(saved.get("batches_done", 0))
                self._truncate_to(saved["bytes"])
            elif int(saved.get("count", 0)) > 0:
                old = saved.get("settings") or {}
                diff = ", ".join(f"{k}: {old.get(k)!r} then, {settings.get(k)!r} now"
                                 for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k))
                raise ValueError(
                    f"{self.partial} holds {saved['count']} molecules of an interrupted run with other settings "
                    f"({diff}); rerun with the same settings to resume it, resume=false to discard it, "
                    f"or choose another out=")
            else:
                self._reset()
        else:
            self._reset()

    def _reset(self) -> None:
        self.partial.write_text("")
        self._save_state()

    def _truncate_to(self, nbytes: int) -> None:
        with open(self.partial, "r+b") as fh:
            fh.truncate(nbytes)

    def _save_state(self) -> None:
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps({"settings": self.settings, "count": self.count, "batches_done": self.batches_done,
                                   "bytes": self.partial.stat().st_size}))
        os.replace(tmp, self.state)

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

    def finalize(self, complete: bool) -> Path:
        """Rename the finished records to ``out``; keep the resume state if the run is incomplete."""
        if complete:
            os.replace(self.partial, self.out)
            self.state.unlink(missing_ok=True)
        else:
            # a valid SDF of every finished molecule, while <out>.partial stays for resuming
            import shutil

            tmp = self.out.with_name(self.out.name + ".tmp")
            shutil.copyfile(self.partial, tmp)
            os.replace(tmp, self.out)
        return self.out
