"""Custom SDF datasets: vocabularies found, splits by molecule, bad records, caching and rebuilds."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from moldiff.chem.io import MoleculeInputError
from moldiff.chem.rdkit_conv import canonical_smiles, to_rdkit
from moldiff.data.registry import prepare_dataset
from moldiff.data.sdf_dataset import prepare_sdf
from moldiff.data.splits import split_by_group


def _records(path) -> list[str]:
    """The records of an SDF file as text, each ending in ``$$$$``."""
    text = open(path).read()
    return [r + "$$$$\n" for r in text.split("$$$$\n") if r.strip()]


def _write(path, records: list[str]):
    path.write_text("".join(records))
    return path


def _replace_atom_line(record: str, atom: int, fn) -> str:
    lines = record.split("\n")
    lines[3 + atom] = fn(lines[3 + atom])
    return "\n".join(lines)


@pytest.fixture(scope="module")
def built(conformer_sdf, tmp_path_factory):
    return prepare_sdf(tmp_path_factory.mktemp("sdf") / "c", conformer_sdf, properties=["energy"],
                       prop_units={"energy": "kcal/mol"}, progress=False)


def test_builds_with_found_vocabularies(built, conformer_sdf):
    assert len(built) == 14
    report = built.meta["report"]
    assert report["input_records"] == 14 and report["kept_records"] == 14 and report["molecules"] == 7
    assert report["invalid_records"] == 0
    assert built.vocab.elements == ("H", "C", "N", "O", "F", "S", "Cl")  # found, by atomic number
    assert built.vocab.charges == (-1, 0, 1)
    assert built.vocab.bonds == ("none", "single", "double", "triple")
    assert built.meta["units"] == {"energy": "kcal/mol"}
    suppl = Chem.SDMolSupplier(str(conformer_sdf), removeHs=False)
    energies = [float(m.GetProp("energy")) for m in suppl]
    np.testing.assert_allclose(built.props[:, 0].numpy(), energies, rtol=1e-6)
    st = built.statistics
    for key in ("atom_type_marginal", "charge_marginal", "bond_marginal"):
        assert sum(st[key]) == pytest.approx(1.0)


def test_molecules_match_the_file(built, conformer_sdf):
    suppl = Chem.SDMolSupplier(str(conformer_sdf), removeHs=False)
    for i, ref in enumerate(suppl):
        got = built.molecule(i)
        assert got.elements == [a.GetSymbol() for a in ref.GetAtoms()]
        assert got.charges.tolist() == [a.GetFormalCharge() for a in ref.GetAtoms()]
        pos = ref.GetConformer().GetPositions()
        np.testing.assert_allclose(got.pos, pos - pos.mean(0), atol=1e-4)
        assert got.has_bonds and int(got.bonds[:, 2].max()) <= 3  # kekulized
        rd = to_rdkit(got, sanitize=True)  # chemically valid
        assert canonical_smiles(rd) == canonical_smiles(ref)
        assert built.smiles[i] == canonical_smiles(ref)


def test_conformers_share_a_split(built):
    by_smiles: dict[str, set[int]] = {}
    for smi, s in zip(built.smiles, built.split):
        by_smiles.setdefault(smi, set()).add(int(s))
    assert len(by_smiles) == 7
    assert all(len(s) == 1 for s in by_smiles.values())
    assert {int(s) for s in built.split} == {0, 1, 2}  # val and test are not empty with 7 molecules


def test_split_by_group_is_deterministic_and_order_free():
    groups = [f"m{i % 10}" for i in range(40)]
    s1, h1 = split_by_group(groups, [0.8, 0.1, 0.1], seed=3)
    s2, _ = split_by_group(groups, [0.8, 0.1, 0.1], seed=3)
    np.testing.assert_array_equal(s1, s2)
    rev_s, _ = split_by_group(groups[::-1], [0.8, 0.1, 0.1], seed=3)
    np.testing.assert_array_equal(rev_s[::-1], s1)  # record order does not matter
    assert np.bincount(s1, minlength=3).tolist() == [32, 4, 4]
    assert set(h1[s1 == 0].tolist()) == {0, 1} and set(h1[s1 != 0].tolist()) == {-1}
    for bad in ([0.5, 0.5], [0.9, 0.2, 0.1], [0.0, 0.5, 0.5], [1.2, -0.1, -0.1]):
        with pytest.raises(ValueError, match="split_fractions"):
            split_by_group(groups, bad)


BAD_CASES = {
    "no atoms": lambda r: "empty\n     RDKit          3D\n\n  0  0  0  0  0  0  0  0  0  0999 V2000\nM  END\n$$$$\n",
    "atom 1: unknown element 'Xx'": lambda r: _replace_atom_line(r, 1, lambda ln: ln[:31] + "Xx " + ln[34:]),
    "atom 2: non-finite (NaN/inf) coordinates": lambda r: _replace_atom_line(r, 2, lambda ln: "       nan" + ln[10:]),
    "no 3D coordinates": lambda r: Chem.MolToMolBlock(Chem.MolFromSmiles("CCO")) + "$$$$\n",
    "cannot read the atom/bond counts": lambda r: "garbage\nnot a\nmol block\nat all\nM  END\n$$$$\n",
    "SD tag <energy> = 'high' is not a number": lambda r: re.sub(r"(<energy>[^\n]*\n)[^\n]*", r"\1high", r),
    "RDKit sanitization failed": lambda r: _replace_atom_line(r, 1, lambda ln: ln[:31] + "N  " + ln[34:]),
}


@pytest.mark.parametrize("problem", list(BAD_CASES))
def test_bad_record_is_named(tmp_path, conformer_sdf, problem):
    recs = _records(conformer_sdf)[:3]
    recs[1] = BAD_CASES[problem](recs[1])
    path = _write(tmp_path / "bad.sdf", recs)
    with pytest.raises(MoleculeInputError) as exc:
        prepare_sdf(tmp_path / "c", path, properties=["energy"], progress=False)
    msg = str(exc.value)
    assert str(path) in msg and "record 2" in msg and problem in msg, msg
    assert exc.value.record == 2 and len(msg.splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_skip_invalid_lists_bad_records(tmp_path, conformer_sdf):
    recs = _records(conformer_sdf)
    recs[2] = BAD_CASES["atom 1: unknown element 'Xx'"](recs[2])
    recs[5] = BAD_CASES["no atoms"](recs[5])
    path = _write(tmp_path / "mixed.sdf", recs)
    cache = prepare_sdf(tmp_path / "c", path, skip_invalid=True, progress=False)
    rep = cache.meta["report"]
    assert len(cache) == 12 and rep["invalid_records"] == 2 and rep["input_records"] == 14
    assert [(e["record"], e["error"]) for e in rep["invalid"]] == [
        (3, "atom 1: unknown element 'Xx'"), (6, "has no atoms")]


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.sdf"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        prepare_sdf(tmp_path / "c", empty, progress=False)
    with pytest.raises(MoleculeInputError, match="nope.sdf: no such file"):
        prepare_sdf(tmp_path / "c", tmp_path / "nope.sdf", progress=False)
    only_bad = _write(tmp_path / "bad.sdf", [BAD_CASES["no atoms"]("")])
    with pytest.raises(ValueError, match="no valid records"):
        prepare_sdf(tmp_path / "c", only_bad, skip_invalid=True, progress=False)


def test_missing_property_tag(tmp_path, conformer_sdf):
    with pytest.raises(MoleculeInputError, match=r"record 1, line 1: SD tag <logp> missing"):
        prepare_sdf(tmp_path / "c", conformer_sdf, properties=["logp"], progress=False)


def test_aromatic_input_is_kekulized(tmp_path):
    mol = Chem.AddHs(Chem.MolFromSmiles("c1ccncc1"))
    AllChem.EmbedMolecule(mol, randomSeed=7)
    block = Chem.MolToMolBlock(mol, kekulize=False)
    assert "  1  2  4  0" in block or " 4  0\n" in block  # aromatic bond code in the file
    path = _write(tmp_path / "arom.sdf", [block + "$$$$\n"])
    cache = prepare_sdf(tmp_path / "c", path, progress=False)
    got = cache.molecule(0)
    assert sorted(np.bincount(got.bonds[:, 2], minlength=4)[1:].tolist()) == [0, 3, 8]  # 3 double, 8 single
    assert canonical_smiles(to_rdkit(got, sanitize=True)) == "c1ccncc1"


def test_implicit_hydrogens_are_reported(tmp_path):
    mol = Chem.MolFromSmiles("CCO")
    AllChem.EmbedMolecule(Chem.AddHs(mol), randomSeed=1)
    molh = Chem.AddHs(mol)
    AllChem.EmbedMolecule(molh, randomSeed=1)
    heavy = Chem.RemoveHs(molh)
    path = _write(tmp_path / "noh.sdf", [Chem.MolToMolBlock(heavy) + "$$$$\n"])
    cache = prepare_sdf(tmp_path / "c", path, progress=False)
    assert cache.meta["report"]["records_with_implicit_h"] == 1
    assert "implicit hydrogens" in cache.meta["report"]["warning"]


def test_heavy_atoms_only(tmp_path, conformer_sdf):
    cache = prepare_dataset("sdf", root=str(tmp_path), path=str(conformer_sdf), heavy_atoms_only=True, progress=False)
    assert cache.path.name == "sdf_data_conformers_noH"
    assert "H" not in cache.vocab.elements
    suppl = Chem.SDMolSupplier(str(conformer_sdf), removeHs=False)
    for i, ref in enumerate(suppl):
        got = cache.molecule(i)
        assert got.num_atoms == ref.GetNumHeavyAtoms()
        rd = to_rdkit(got)
        for atom in rd.GetAtoms():
            atom.SetNoImplicit(False)  # hydrogens are implicit in heavy-atom mode
        assert canonical_smiles(rd) == canonical_smiles(ref)


def test_cache_per_file_and_rebuild_on_change(tmp_path, conformer_sdf):
    root = str(tmp_path / "root")
    a = _write(tmp_path / "a.sdf", _records(conformer_sdf)[:4])
    b = _write(tmp_path / "b.sdf", _records(conformer_sdf)[4:10])
    ca = prepare_dataset("sdf", root=root, path=str(a), progress=False)
    cb = prepare_dataset("sdf", root=root, path=str(b), progress=False)
    assert (ca.path.name, len(ca)) == ("sdf_a", 4) and (cb.path.name, len(cb)) == ("sdf_b", 6)
    built_at = (ca.path / "meta.json").stat().st_mtime_ns
    # unchanged: reused; touched but identical: reused (hash matches)
    assert prepare_dataset("sdf", root=root, path=str(a), progress=False).meta == ca.meta
    st = os.stat(a)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    touched = prepare_dataset("sdf", root=root, path=str(a), progress=False)
    assert (touched.path / "meta.json").stat().st_mtime_ns == built_at
    # changed content: rebuilt
    _write(a, _records(conformer_sdf)[:6])
    assert len(prepare_dataset("sdf", root=root, path=str(a), progress=False)) == 6
    # changed options: rebuilt
    c = prepare_dataset("sdf", root=root, path=str(a), properties=["energy"], progress=False)
    assert c.prop_names == ["energy"]
    # the source gone: the cache is still usable
    a.unlink()
    assert len(prepare_dataset("sdf", root=root, path=str(a), properties=["energy"], progress=False)) == 6


def test_unknown_option_is_named(tmp_path, conformer_sdf):
    with pytest.raises(ValueError, match=r"has no option\(s\) \['limit'\]"):
        prepare_dataset("sdf", root=str(tmp_path), path=str(conformer_sdf), limit=3)
    with pytest.raises(ValueError, match="needs a path"):
        prepare_dataset("sdf", root=str(tmp_path))


# ------------------------------------------------- one reader: moldiff.chem.io and the dataset agree

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.parametrize("name", ["truncated.sdf", "unknown_element.sdf", "nan_coords.sdf", "no_atoms.sdf"])
def test_dataset_and_reader_reject_a_record_with_the_same_error(tmp_path, name):
    from moldiff.chem.io import read_sdf

    with pytest.raises(MoleculeInputError) as by_reader:
        read_sdf(FIXTURES / name)
    with pytest.raises(MoleculeInputError) as by_dataset:
        prepare_sdf(tmp_path / "c", FIXTURES / name, progress=False)
    assert str(by_dataset.value) == str(by_reader.value)


def test_gz_file_builds_the_same_cache(tmp_path, conformer_sdf):
    import gzip

    gz = tmp_path / "data_conformers.sdf.gz"
    with gzip.open(gz, "wb") as fh:
        fh.write(conformer_sdf.read_bytes())
    plain = prepare_sdf(tmp_path / "plain", conformer_sdf, properties=["energy"], progress=False)
    packed = prepare_dataset("sdf", root=str(tmp_path), path=str(gz), properties=["energy"], progress=False)
    assert packed.path.name == "sdf_data_conformers" and len(packed) == len(plain) == 14
    assert packed.smiles == plain.smiles
    np.testing.assert_array_equal(packed.pos.numpy(), plain.pos.numpy())
    np.testing.assert_array_equal(packed.props.numpy(), plain.props.numpy())
    np.testing.assert_array_equal(packed.split, plain.split)


def test_non_utf8_record_is_named(tmp_path, conformer_sdf):
    recs = [r.encode() for r in _records(conformer_sdf)[:3]]
    recs[1] = b"\xe9thanol" + recs[1][recs[1].index(b"\n"):]
    path = tmp_path / "latin1.sdf"
    path.write_bytes(b"".join(recs))
    with pytest.raises(MoleculeInputError) as exc:
        prepare_sdf(tmp_path / "c", path, progress=False)
    msg = str(exc.value)
    assert str(path) in msg and "record 2" in msg and "not UTF-8" in msg and len(msg.splitlines()) == 1
    cache = prepare_sdf(tmp_path / "c", path, skip_invalid=True, progress=False)
    assert len(cache) == 2 and cache.meta["report"]["invalid"][0]["record"] == 2
