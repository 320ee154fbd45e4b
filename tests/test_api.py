"""The Python API: the example of docs/python_api.md runs as written; load_pretrained, sample and evaluate."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import moldiff

DOC = Path(__file__).resolve().parents[1] / "docs" / "python_api.md"


def doc_example() -> str:
    """The Python code blocks of docs/python_api.md, in order."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, f"no python example in {DOC}"
    return "\n".join(blocks)


def test_the_documented_example_runs(tmp_path, monkeypatch, capsys):
    from rdkit import Chem

    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__doc_example__"}
    exec(compile(doc_example(), str(DOC), "exec"), namespace)
    mols, decoded, metrics = namespace["mols"], namespace["decoded"], namespace["metrics"]
    assert 1 <= len(mols) <= 4 and 1 <= len(decoded) <= 4
    for mol in mols + decoded:
        assert isinstance(mol, Chem.Mol) and mol.GetNumConformers() == 1 and mol.GetConformer().Is3D()
        assert mol.GetNumAtoms() == mol.GetConformer().GetPositions().shape[0]
        assert any(a.GetSymbol() == "H" for a in mol.GetAtoms())  # explicit hydrogens
    assert [m.GetProp("moldiff_decoding") for m in decoded] == ["map"] * len(decoded)
    assert [m.GetProp("moldiff_decoding") for m in mols] == ["argmax"] * len(mols)
    assert len(Chem.SDMolSupplier(str(tmp_path / "samples.sdf"), sanitize=False, removeHs=False)) == len(decoded)
    assert 0.0 <= metrics["validity"] <= 1.0 and 0.0 <= metrics["atom_stability"] <= 1.0
    assert "MoleculeGenerator(" in capsys.readouterr().out


def test_import_moldiff_stays_light():
    code = (
        "import sys, moldiff\n"
        "heavy = [m for m in ('torch', 'rdkit', 'lightning', 'hydra') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert callable(moldiff.load_pretrained) and callable(moldiff.evaluate)\n"
        "heavy = [m for m in ('torch', 'rdkit', 'lightning', 'hydra') if m in sys.modules]\n"
        "assert not heavy, heavy  # imported when a function runs\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_unknown_name_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="qm9") as err:
        moldiff.load_pretrained("zinc")
    assert "\n" not in str(err.value)
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=str(bad)):
        moldiff.load_pretrained(bad, device="cpu")


@pytest.mark.qm9
def test_sample_from_a_training_checkpoint(tiny_ckpt):
    from rdkit import Chem

    from moldiff.chem.rdkit_conv import from_rdkit

    model = moldiff.load_pretrained(tiny_ckpt, device="cpu")
    assert model.path == str(tiny_ckpt) and model.dataset.startswith("qm9") and model.properties == []
    a = model.sample(5, steps=4, seed=3, batch_size=2)
    b = model.sample(5, steps=4, seed=3, batch_size=2)
    assert len(a) == 5 and [m.GetProp("_Name") for m in a] == [f"moldiff_{i:06d}" for i in range(5)]
    assert [Chem.MolToMolBlock(m) for m in a] == [Chem.MolToMolBlock(m) for m in b]  # same seed, same molecules
    assert [Chem.MolToMolBlock(m) for m in model.sample(5, steps=4, seed=4, batch_size=2)] != \
        [Chem.MolToMolBlock(m) for m in a]
    sized = model.sample(3, steps=4, seed=0, num_atoms=7)
    assert [m.GetNumAtoms() for m in sized] == [7, 7, 7]
    # RDKit molecules and moldiff Molecules score alike
    assert moldiff.evaluate(a)["validity"] == moldiff.evaluate([from_rdkit(m) for m in a])["validity"]
    with pytest.raises(ValueError, match="unconditional"):
        model.sample(2, steps=4, conditioning={"gap": 6800.0})
    with pytest.raises(ValueError, match="decode"):
        model.sample(2, steps=4, decode="best")
    with pytest.raises(ValueError, match="^n must be"):
        model.sample(0)
    with pytest.raises(ValueError, match="unknown options"):
        model.sample(2, steps=4, conditioning={"mu": 3.0}, predictor_guidance={"size": 1})
    # predictor guidance alone steers an unconditional model toward targets (the shipped guide predictor)
    steered = model.sample(2, steps=3, conditioning={"mu": 3.0}, predictor_guidance={"predictor": "qm9_guide"})
    assert [float(m.GetProp("target_mu")) for m in steered] == [3.0, 3.0]
    assert steered[0].GetProp("predictor_guidance") == "qm9_guide scale 1 at t 0.1 to 1"


def test_evaluate_needs_molecules():
    with pytest.raises(ValueError, match="no molecules"):
        moldiff.evaluate([])
