"""``moldiff-prepare`` as a user runs it: a subprocess, summary on stdout, one-line errors with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "data_conformers.sdf"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MOLDIFF_DEBUG", "HYDRA_FULL_ERROR", "MOLDIFF_DATA")}
    return subprocess.run([sys.executable, "-m", "moldiff.cli.prepare", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_prepare_sdf(tmp_path):
    root = tmp_path / "root"
    res = _run(["data=sdf", f"data.path={FIXTURE}", f"data.root={root}", "data.properties=[energy]"], tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "sdf_data_conformers" in out and "14 records" in out
    for text in ("train", "val", "test", "elements    H", "Cl", "energy", "build report", "on disk"):
        assert text in out, text
    assert (root / "sdf_data_conformers" / "meta.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]  # no Hydra outputs or logs left behind
    again = _run(["data=sdf", f"data.path={FIXTURE}", f"data.root={root}", "data.properties=[energy]"], tmp_path)
    assert again.returncode == 0 and again.stdout.replace("\r", "") == out.replace("\r", "")


def test_unknown_dataset(tmp_path):
    res = _run(["data=nope"], tmp_path)
    assert res.returncode == 2
    assert "unknown dataset 'nope'" in res.stderr
    for name in ("geom", "nci", "qm9", "sdf"):
        assert name in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_missing_path_value(tmp_path):
    res = _run(["data=sdf", f"data.root={tmp_path}"], tmp_path)
    assert res.returncode == 2 and "data.path is required" in res.stderr and "Traceback" not in res.stderr


def test_missing_file_and_bad_record(tmp_path):
    missing = tmp_path / "nowhere" / "mols.sdf"
    res = _run(["data=sdf", f"data.path={missing}", f"data.root={tmp_path}"], tmp_path)
    assert res.returncode == 2 and str(missing) in res.stderr and "Traceback" not in res.stderr
    bad = tmp_path / "bad.sdf"
    bad.write_text(
        "x\n  junk\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\n"
        "    0.0000    0.0000    0.0000 Qq  0  0  0  0  0  0  0  0  0  0  0  0\nM  END\n$$$$\n"
    )
    res = _run(["data=sdf", f"data.path={bad}", f"data.root={tmp_path}"], tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{bad}, record 1, line 5: atom 1: unknown element 'Qq'" in res.stderr


def test_non_utf8_file_is_one_line(tmp_path):
    bad = tmp_path / "latin1.sdf"
    bad.write_bytes(FIXTURE.read_bytes().replace(b"\n", "\n\u00e9".encode("latin-1"), 1))
    res = _run(["data=sdf", f"data.path={bad}", f"data.root={tmp_path}"], tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith(f"error: {bad}, record 1, line 2: not UTF-8 text (byte 0xe9")
