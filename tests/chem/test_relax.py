"""Force-field relaxation: QM9-like molecules built with RDKit (ETKDG), distorted, then relaxed."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from moldiff.chem.io import read_sdf, write_sdf
from moldiff.chem.molecule import Molecule
from moldiff.chem.rdkit_conv import from_rdkit
from moldiff.chem.relax import RELAX_STATUSES, relax_molecule, superposed_rmsd
from tests.conftest import interrupt_second_batch


def embedded(smiles: str, seed: int = 7, noise: float = 0.15) -> Molecule:
    """Kekulized molecule with explicit hydrogens, ETKDG coordinates plus seeded noise (a rough geometry)."""
    rd = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(rd, randomSeed=seed) == 0
    mol = from_rdkit(rd, name=smiles, kekulize=True)
    mol.pos = mol.pos + np.random.default_rng(seed).normal(0.0, noise, mol.pos.shape)
    return mol


@pytest.mark.parametrize("smiles", ["CCO", "CC(=O)N", "c1ccoc1", "OCC#N"])
def test_mmff_lowers_the_energy_and_keeps_the_graph(smiles):
    mol = embedded(smiles)
    r = relax_molecule(mol, "mmff", max_iters=500)
    assert r.status == "relaxed" and r.forcefield == "MMFF94s" and r.moved
    assert r.energy_after < r.energy_before
    assert 0.0 < r.heavy_atom_rmsd < 1.0
    out = r.molecule
    assert out is not mol and out.elements == mol.elements
    assert np.array_equal(out.bonds, mol.bonds) and np.array_equal(out.charges, mol.charges)
    assert not np.allclose(out.pos, mol.pos)
    assert np.isfinite(out.pos).all()
    # relaxing again barely moves it
    again = relax_molecule(out, "mmff", max_iters=500)
    assert again.heavy_atom_rmsd < 0.05 and again.energy_before == pytest.approx(r.energy_after, rel=1e-4, abs=1e-3)


def test_uff_and_fallback_from_mmff():
    mol = embedded("CCO")
    r = relax_molecule(mol, "uff")
    assert r.status == "relaxed" and r.forcefield == "UFF" and r.energy_after < r.energy_before
    bf3 = embedded("B(F)(F)F")  # no MMFF parameters for boron: UFF instead
    r = relax_molecule(bf3, "mmff")
    assert r.forcefield == "UFF" and r.moved


def test_unsanitizable_molecules_are_returned_unchanged():
    # pentavalent carbon
    mol = Molecule(["C", "H", "H", "H", "H", "H"], np.random.default_rng(0).normal(size=(6, 3)),
                   bonds=[[0, k, 1] for k in range(1, 6)])
    r = relax_molecule(mol, "mmff")
    assert r.status == "not_sanitizable" and r.molecule is mol and not r.moved
    assert r.tags() == {"moldiff_relax_status": "not_sanitizable"}
    assert relax_molecule(mol, "none").status == "not_relaxed"


def test_fixed_atoms_do_not_move():
    mol = embedded("CC(=O)N")
    r = relax_molecule(mol, "mmff", fixed_atoms=[0, 1, 2])
    assert r.moved
    assert np.array_equal(r.molecule.pos[:3], mol.pos[:3])
    assert not np.allclose(r.molecule.pos[3:], mol.pos[3:])


def test_tags_round_trip_through_sdf(tmp_path):
    mol = embedded("OCC#N")
    r = relax_molecule(mol, "mmff")
    r.molecule.props.update(r.tags())
    write_sdf([r.molecule], tmp_path / "r.sdf")
    back = read_sdf(tmp_path / "r.sdf")[0]
    assert back.props["moldiff_relax_status"] in RELAX_STATUSES
    assert back.props["moldiff_relax_forcefield"] == "MMFF94s"
    assert back.props["moldiff_relax_energy_after"] == pytest.approx(r.energy_after)
    assert back.props["moldiff_relax_heavy_rmsd"] == pytest.approx(r.heavy_atom_rmsd)


def test_superposed_rmsd_ignores_rigid_motion():
    a = np.random.default_rng(1).normal(size=(7, 3))
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))  # a proper rotation
    assert superposed_rmsd(a, a @ q.T + [1.0, -2.0, 0.5]) == pytest.approx(0.0, abs=1e-6)
    assert superposed_rmsd(a, a + np.array([[0.1, 0, 0]] * 6 + [[0.8, 0, 0]])) > 0.1


def test_bad_options():
    mol = embedded("CCO")
    with pytest.raises(ValueError, match=r"relax='gaff'; choose one of \['none', 'mmff', 'uff'\]"):
        relax_molecule(mol, "gaff")
    with pytest.raises(ValueError, match="relax_max_iters"):
        relax_molecule(mol, "mmff", max_iters=0)


# ------------------------------------------------------------------ moldiff-sample relax=... (shipped model)


def test_cli_relax_writes_tags_and_raw_file(tmp_path):
    from moldiff.cli.evaluate import evaluate_file
    from tests.conftest import run_cli

    out = tmp_path / "mols.sdf"
    p = run_cli("sample", "n_samples=4", "steps=3", "batch_size=4", "relax=mmff", "relax_keep_raw=true",
                f"out={out}", "progress=false")
    assert "relax: mmff" in p.stdout
    relaxed, raw = read_sdf(out), read_sdf(tmp_path / "mols.raw.sdf")
    assert len(relaxed) == len(raw) == 4
    for m, r in zip(relaxed, raw):
        assert m.name == r.name and m.elements == r.elements and np.array_equal(m.bonds, r.bonds)
        assert m.props["moldiff_relax"] == "mmff" and r.props["moldiff_relax"] == "none"
        status = m.props["moldiff_relax_status"]
        assert status in RELAX_STATUSES and "moldiff_relax_status" not in r.props
        if status in ("relaxed", "not_converged"):
            assert m.props["moldiff_relax_forcefield"] in ("MMFF94s", "UFF")
            assert m.props["moldiff_relax_energy_after"] <= m.props["moldiff_relax_energy_before"]
            assert m.props["moldiff_relax_heavy_rmsd"] >= 0
        else:
            assert np.allclose(m.pos, r.pos)
    assert evaluate_file(out)["relax"] == "mmff" and evaluate_file(tmp_path / "mols.raw.sdf")["relax"] == "none"


def test_cli_relax_options_are_checked(tmp_path):
    from tests.conftest import run_cli

    for bad, words in ((["relax=gaff"], ["relax='gaff'", "'none', 'mmff', 'uff'"]),
                       (["relax_keep_raw=true"], ["relax_keep_raw=true needs relax=mmff or relax=uff"]),
                       (["relax=uff", "relax_max_iters=0"], ["relax_max_iters"])):
        p = run_cli("sample", *bad, "n_samples=1", "steps=1", f"out={tmp_path / 'x.sdf'}", check=False)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        for w in words:
            assert w in p.stderr


def test_interrupted_relaxed_run_resumes_both_files(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_module

    import moldiff.cli.sample as cli
    import moldiff.generate as gen

    def cfg_for(out):
        with initialize_config_module("moldiff.conf", version_base="1.3"):
            return compose("sample", overrides=["n_samples=4", "batch_size=2", "steps=2", "relax=uff",
                                                 "relax_keep_raw=true", f"out={out}", "progress=false"])

    full = tmp_path / "full.sdf"
    cli.generate(cfg_for(full))
    real = interrupt_second_batch(gen, monkeypatch)
    part = tmp_path / "part.sdf"
    assert cli.generate(cfg_for(part))["n_molecules"] == 2
    assert len(read_sdf(tmp_path / "part.raw.sdf")) == 2
    monkeypatch.setattr(gen, "sample", real)
    res = cli.generate(cfg_for(part))
    assert res["complete"] and res["n_molecules"] == 4
    assert part.read_bytes() == full.read_bytes()
    assert (tmp_path / "part.raw.sdf").read_bytes() == (tmp_path / "full.raw.sdf").read_bytes()
