"""moldiff-evaluate end to end: config composition, in-process run, subprocess with exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from moldiff.cli.evaluate import evaluate_file, run

FIX = Path(__file__).resolve().parents[1] / "fixtures"
KEYS = {"n_molecules", "atom_stability", "mol_stability", "validity", "connected_validity", "uniqueness", "novelty",
        "edm_atom_stability", "edm_mol_stability", "edm_validity", "protocol_version", "counts", "bonds"}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "moldiff.cli.evaluate", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


def compose_cfg(*overrides: str):
    with initialize_config_module("moldiff.conf", version_base="1.3"):
        return compose("evaluate", overrides=list(overrides))


@pytest.fixture(scope="session")
def qm9_tiny(data_root):
    """The first 300 QM9 molecules (the shared ``data_root`` fixture of tests/conftest.py)."""
    from moldiff.data.cache import MolCache
    from moldiff.data.registry import cache_path

    return MolCache(cache_path("qm9", str(data_root), limit=300))


def test_config_defaults():
    cfg = compose_cfg("input=x.sdf")
    assert cfg.reference == "qm9" and cfg.json is None and cfg.skip_invalid is False
    assert cfg.bond_inference == "edm"


def test_run_in_process_writes_json(tmp_path, capsys):
    out = tmp_path / "m.json"
    cfg = compose_cfg(f"input={FIX / 'four.sdf'}", "reference=null", f"json={out}")
    metrics = run(cfg)
    data = json.loads(out.read_text())
    assert KEYS <= set(data) and data["n_molecules"] == 4 == metrics["n_molecules"]
    assert "molecule stability" in capsys.readouterr().out


def test_run_skip_invalid_lists_skipped(tmp_path):
    cfg = compose_cfg(f"input={FIX / 'unknown_element.sdf'}", "reference=null", "skip_invalid=true",
                      f"json={tmp_path / 'm.json'}", f"png={tmp_path / 'g.png'}")
    metrics = run(cfg)
    assert metrics["n_molecules"] == 2 and metrics["skipped_records"] == 1 and "Xx" in metrics["skipped"][0]
    assert (tmp_path / "g.png").stat().st_size > 0


@pytest.mark.qm9
def test_evaluate_file_with_reference_cache(qm9_tiny, tmp_path):
    from moldiff.chem.io import write_sdf

    sdf = tmp_path / "test.sdf"
    write_sdf([qm9_tiny.molecule(int(i)) for i in qm9_tiny.indices("test")], sdf)
    m = evaluate_file(sdf, qm9_tiny)
    assert m["mol_stability"] == 1.0 and m["novelty"] is not None and m["distribution"]["atom_type_tv"] == 0.0
    assert evaluate_file(FIX / "four.sdf", qm9_tiny, check_vocab=True)["n_molecules"] == 4  # H C N O, charges -1..1
    h2s = tmp_path / "h2s.xyz"
    h2s.write_text("3\nH2S\nS 0 0 0\nH 1.34 0 0\nH 0 1.34 0\n")
    with pytest.raises(ValueError, match="element 'S' is not in the vocabulary"):
        evaluate_file(h2s, qm9_tiny, check_vocab=True)


def test_cli_subprocess_end_to_end(tmp_path):
    out = tmp_path / "metrics.json"
    p = cli(f"input={FIX / 'four.sdf'}", "reference=null", f"json={out}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "EDM protocol" in p.stdout
    data = json.loads(out.read_text())
    assert KEYS <= set(data) and data["n_molecules"] == 4
    assert sorted(x.name for x in tmp_path.iterdir()) == ["metrics.json"]  # no outputs/ or .hydra litter


@pytest.mark.parametrize(
    "args, words",
    [
        ((f"input={FIX / 'truncated.sdf'}",), ["truncated.sdf", "record 2", "truncated"]),
        (("input=missing.sdf",), ["missing.sdf", "no such file"]),
        ((), ["input", "required"]),
    ],
)
def test_cli_bad_input_one_line_exit_2(tmp_path, args, words):
    p = cli(*args, "reference=null", cwd=tmp_path)
    assert p.returncode == 2
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for w in words:
        assert w in err


def test_steps_read_from_sampler_tags(tmp_path):
    from moldiff.chem.io import read_sdf, write_sdf

    mols = read_sdf(FIX / "four.sdf")
    for m in mols:
        m.props["moldiff_steps"] = 50
    write_sdf(mols, tmp_path / "s.sdf")
    assert evaluate_file(tmp_path / "s.sdf")["steps"] == 50
