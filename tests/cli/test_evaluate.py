"""moldiff-evaluate end to end: config composition, in-process run, subprocess with exit codes."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from moldiff.cli.evaluate import evaluate_file, run

FIX = Path(__file__).resolve().parents[1] / "fixtures"
KEYS = {"n_molecules", "atom_stability", "mol_stability", "validity", "connected_validity", "uniqueness", "novelty",
        "edm_atom_stability", "edm_mol_stability", "edm_validity", "protocol_version", "counts", "bonds"}


HAS_POSEBUSTERS = importlib.util.find_spec("posebusters") is not None
needs_posebusters = pytest.mark.skipif(not HAS_POSEBUSTERS, reason="needs the PoseBusters package")


def cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    e = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run([sys.executable, "-m", "moldiff.cli.evaluate", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=timeout)


def without(modules: list[str], folder: Path) -> dict:
    """Environment in which importing ``modules`` fails as if they were not installed.

    A ``sitecustomize`` on ``PYTHONPATH`` sets ``sys.modules[name] = None``: ``import name`` then
    raises ``ModuleNotFoundError`` and ``importlib.util.find_spec(name)`` returns None.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules))
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def one_line_error(p: subprocess.CompletedProcess) -> str:
    """The single stderr line of a run that ended with exit status 2."""
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


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
    assert cfg.posebusters is False and cfg.posebusters_max == 200 and cfg.posebusters_energy is True
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


LATIN1_SDF = b"caf\xe9\n  RDKit\n\n  0  0  0  0  0  0  0  0  0  0999 V2000\nM  END\n$$$$\n"
LATIN1_XYZ = b"3\n\xff\xfe\nO 0 0 0\nH 1 0 0\nH 0 1 0\n"


@pytest.mark.parametrize("suffix, text", [(".sdf", LATIN1_SDF), (".xyz", LATIN1_XYZ)])
def test_cli_non_utf8_input_one_line_exit_2(tmp_path, suffix, text):
    f = tmp_path / f"latin1{suffix}"
    f.write_bytes(text)
    err = one_line_error(cli(f"input={f}", "reference=null", cwd=tmp_path))
    assert f.name in err and "UTF-8" in err


@pytest.mark.parametrize("key", ["json", "png"])
@pytest.mark.parametrize("case", ["existing folder", "parent is a file", "unwritable folder"])
def test_cli_bad_output_path_fails_first(tmp_path, key, case):
    if case == "existing folder":
        target, words = tmp_path / "out", ["existing folder"]
        target.mkdir()
    elif case == "parent is a file":
        (tmp_path / "plain").write_text("x")
        target, words = tmp_path / "plain" / "m.out", ["is a file, not a folder"]
    elif os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target, words = locked / "m.out", ["cannot write in"]
    elif Path("/proc/self").is_dir():  # root ignores permission bits; no one creates files in procfs
        target, words = Path("/proc") / "m.out", ["cannot write in /proc"]
    else:
        pytest.skip("no folder here that root cannot write in")
    # an empty data root: were the reference opened first, this would build (or warn about) QM9
    data = tmp_path / "data"
    err = one_line_error(cli(f"input={FIX / 'four.sdf'}", f"data_root={data}", f"{key}={target}", cwd=tmp_path,
                             timeout=60))
    assert f"{key}={target}" in err and all(w in err for w in words), err
    assert "QM9" not in err and not data.exists()


def test_cli_without_qm9pack_scores_and_warns(tmp_path):
    out, data = tmp_path / "m.json", tmp_path / "empty_root"
    p = cli(f"input={FIX / 'four.sdf'}", f"data_root={data}", f"json={out}", cwd=tmp_path,
            env=without(["qm9pack"], tmp_path / "shim"))
    assert p.returncode == 0, p.stderr
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("moldiff-evaluate: warning: reference=qm9"), err
    assert "qm9pack" in err and "novelty" in err and "building" not in err
    assert "molecule stability" in p.stdout and "no reference" in p.stdout
    m = json.loads(out.read_text())
    assert m["n_molecules"] == 4 and m["novelty"] is None and m["reference"] is None
    assert "qm9pack" in m["reference_unavailable"]
    assert not data.exists()  # nothing was built


@pytest.mark.qm9
def test_cli_announces_the_qm9_build_first(tmp_path):
    data = tmp_path / "fresh_root"
    proc = subprocess.Popen([sys.executable, "-m", "moldiff.cli.evaluate", f"input={FIX / 'four.sdf'}",
                             f"data_root={data}"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        first = proc.stderr.readline().strip()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the build itself takes minutes; only its announcement is tested
        proc.wait(timeout=30)
        proc.stderr.close()
    assert first == f"moldiff-evaluate: building the QM9 reference cache in {data} (about 2 minutes, once)"


def test_cli_posebusters_missing_extra_one_line(tmp_path):
    out = tmp_path / "m.json"
    p = cli(f"input={FIX / 'four.sdf'}", "reference=null", "posebusters=true", f"json={out}", cwd=tmp_path,
            env=without(["posebusters"], tmp_path / "shim"))
    err = one_line_error(p)
    assert "posebusters=true" in err and "pip install 'moldiff[checks]'" in err
    assert p.stdout == "" and not out.exists()  # refused before any work


def test_cli_posebusters_bad_max(tmp_path):
    err = one_line_error(cli(f"input={FIX / 'four.sdf'}", "reference=null", "posebusters=true",
                             "posebusters_max=0", cwd=tmp_path))
    assert "posebusters_max=0" in err


@needs_posebusters
def test_cli_posebusters_table_and_json(tmp_path):
    out = tmp_path / "m.json"
    p = cli(f"input={FIX / 'four.sdf'}", "reference=null", "posebusters=true", "posebusters_max=3", "seed=1",
            f"json={out}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "PoseBusters checks (3 of 4 molecules, seeded sample, seed 1)" in p.stdout
    assert "internal energy" in p.stdout and "all of the above" in p.stdout
    pb = json.loads(out.read_text())["posebusters"]
    assert pb["n_checked"] == 3 and pb["config"] == "mol" and pb["not_sanitizable"] == 0
    assert set(pb["pass_rate"]) == {"bond_lengths", "bond_angles", "internal_steric_clash", "aromatic_ring_flatness",
                                    "double_bond_flatness", "internal_energy"}
    assert 0.0 <= pb["all_pass_rate"] <= min(pb["pass_rate"].values())
    assert "PoseBusters checks will run on at most 3 molecules" in p.stderr
    p = cli(f"input={FIX / 'four.sdf'}", "reference=null", "posebusters=true", "posebusters_energy=false",
            "posebusters_max=null", f"json={out}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "PoseBusters checks (all 4 molecules)" in p.stdout and "internal energy" not in p.stdout
    assert json.loads(out.read_text())["posebusters"]["config"] == "mol_fast"
