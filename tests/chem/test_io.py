"""SDF / XYZ reading and writing, bad-input errors, PNG grids (moldiff.chem.io)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from moldiff.chem.io import (
    MoleculeInputError,
    draw_grid,
    iter_sdf,
    read_molecules,
    read_sdf,
    read_xyz,
    read_xyz_dir,
    write_sdf,
    write_xyz,
)
from moldiff.chem.molecule import AROMATIC, Molecule
from moldiff.data.vocab import QM9_VOCAB

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def assert_same(a: Molecule, b: Molecule, tol: float = 1e-4) -> None:
    assert a.elements == b.elements
    np.testing.assert_array_equal(a.charges, b.charges)
    np.testing.assert_array_equal(a.bonds, b.bonds)
    assert np.abs(a.pos - b.pos).max() <= tol


@pytest.fixture
def mols() -> list[Molecule]:
    """Water, the benzene fixture (aromatic flags), nitromethane (charges) with assorted props."""
    water = Molecule(["O", "H", "H"], [[0, 0, 0], [0.9572, 0, 0], [-0.2399872, 0.92662721, 0]],
                     bonds=[[0, 1, 1], [0, 2, 1]], name="water", props={"e": -76.4, "n": 3, "tag": "a b"})
    return [water, *read_sdf(FIX / "benzene_aromatic.sdf"), *read_sdf(FIX / "nitromethane.sdf")]


def test_fixtures_read_with_hydrogens_aromatic_and_charges():
    water = read_sdf(FIX / "water.sdf")[0]
    assert water.elements == ["O", "H", "H"] and water.name == "water"
    assert water.props == {"source": "hand-written fixture", "energy": -76.4}
    benzene = read_sdf(FIX / "benzene_aromatic.sdf")[0]
    assert benzene.num_atoms == 12 and (benzene.bonds[:, 2] == AROMATIC).sum() == 6
    nitro = read_sdf(FIX / "nitromethane.sdf")[0]
    assert sorted(nitro.charges.tolist()) == [-1] + [0] * 5 + [1]
    assert len(read_sdf(FIX / "four.sdf")) == 4


def test_sdf_round_trip_lossless(tmp_path, mols):
    path = tmp_path / "out.sdf"
    assert write_sdf(mols, path) == 3
    back = read_sdf(path)
    for a, b in zip(mols, back):
        assert_same(a, b)
        assert a.name == b.name
    assert back[0].props == {"e": -76.4, "n": 3, "tag": "a b"}
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temporary file


def test_sdf_gz_round_trip(tmp_path, mols):
    path = tmp_path / "out.sdf.gz"
    write_sdf(mols, path)
    with gzip.open(path, "rt") as fh:
        assert "$$$$" in fh.read()
    for a, b in zip(mols, read_molecules(path)):
        assert_same(a, b)


def test_sdf_v3000_for_large_molecules(tmp_path):
    n = 1002  # 501 H2 molecules on a grid
    pos = np.zeros((n, 3))
    pos[:, 0] = np.repeat(np.arange(n // 2) * 3.0, 2)
    pos[1::2, 1] = 0.74
    bonds = np.stack([np.arange(0, n, 2), np.arange(1, n, 2), np.ones(n // 2, int)], 1)
    big = Molecule(["H"] * n, pos, bonds=bonds, name="big")
    path = tmp_path / "big.sdf"
    write_sdf([big], path)
    assert "V3000" in path.read_text()
    assert_same(big, read_sdf(path)[0])


def test_write_refuses_nan(tmp_path):
    bad = Molecule(["C"], [[np.nan, 0, 0]])
    with pytest.raises(ValueError, match="non-finite"):
        write_sdf([bad], tmp_path / "x.sdf")
    assert not (tmp_path / "x.sdf").exists()


@pytest.mark.parametrize(
    "name, record, words",
    [
        ("empty.sdf", None, "empty"),
        ("truncated.sdf", 2, "truncated"),
        ("unknown_element.sdf", 2, "unknown element 'Xx'"),
        ("nan_coords.sdf", 1, "non-finite"),
        ("no_atoms.sdf", 1, "no atoms"),
    ],
)
def test_bad_sdf_errors_name_file_record_and_problem(name, record, words):
    with pytest.raises(MoleculeInputError) as info:
        read_sdf(FIX / name)
    msg = str(info.value)
    assert name in msg and words in msg
    assert isinstance(info.value, ValueError)
    if record is not None:
        assert f"record {record}" in msg and "line" in msg
        assert info.value.record == record


def test_unknown_element_line_number():
    with pytest.raises(MoleculeInputError) as info:
        read_sdf(FIX / "unknown_element.sdf")
    methane_lines = (FIX / "methane.sdf").read_text().count("\n")
    assert info.value.line == methane_lines + 5  # header (3) + counts line, then the first atom


def test_skip_invalid_reports(tmp_path):
    report: list[str] = []
    mols = read_sdf(FIX / "unknown_element.sdf", skip_invalid=True, report=report)
    assert [m.name for m in mols] == ["methane", "methane"]
    assert len(report) == 1 and "record 2" in report[0] and "Xx" in report[0]
    report = []
    assert len(read_sdf(FIX / "truncated.sdf", skip_invalid=True, report=report)) == 1
    assert "truncated" in report[0]
    with pytest.raises(MoleculeInputError, match="empty"):  # nothing to skip: still an error
        read_sdf(FIX / "empty.sdf", skip_invalid=True, report=[])


def test_iter_sdf_is_lazy():
    it = iter_sdf(FIX / "unknown_element.sdf")
    assert next(it).name == "methane"  # record 1 is served before record 2 fails
    with pytest.raises(MoleculeInputError):
        next(it)


def test_vocabulary_check():
    with pytest.raises(MoleculeInputError, match="not in the vocabulary"):
        read_sdf(FIX / "nitromethane.sdf", vocab=type("V", (), {"elements": ("C", "H", "O"), "charges": (0,)})())
    assert len(read_sdf(FIX / "nitromethane.sdf", vocab=QM9_VOCAB)) == 1
    report: list[str] = []
    big_vocab = type("V", (), {"elements": ("C", "H", "N", "O")})()
    assert read_sdf(FIX / "four.sdf", vocab=big_vocab, skip_invalid=True, report=report)
    assert not report


# ------------------------------------------------------------------------------------ XYZ


XYZ_TWO = """3
water frame
O 0.0 0.0 0.0
H 0.9572 0.0 0.0
H -0.24 0.9266 0.0

5
methane
6 0.0 0.0 0.0
1 0.63 0.63 0.63
1 -0.63 -0.63 0.63
1 -0.63 0.63 -0.63
1 0.63 -0.63 -0.63
"""


def test_read_xyz_multi_frame(tmp_path):
    p = tmp_path / "two.xyz"
    p.write_text(XYZ_TWO)
    mols = read_xyz(p)
    assert [m.name for m in mols] == ["water frame", "methane"]
    assert mols[1].elements == ["C", "H", "H", "H", "H"]  # atomic numbers accepted
    assert not mols[0].has_bonds


def test_xyz_round_trip_and_folder(tmp_path, mols):
    for k, m in enumerate(mols):
        write_xyz(m, tmp_path / f"mol_{10 - k * 5}.xyz")  # mol_10, mol_5, mol_0
    back = read_xyz_dir(tmp_path)
    assert [m.name for m in back] == [mols[2].name, mols[1].name, mols[0].name]  # natural order
    assert np.abs(back[2].pos - mols[0].pos).max() < 1e-7
    assert len(read_molecules(tmp_path)) == 3
    write_xyz(mols, tmp_path / "all.xyz")
    assert len(read_molecules(tmp_path / "all.xyz")) == 3


@pytest.mark.parametrize(
    "text, words, line",
    [
        ("", "empty", None),
        ("2\nc\nO 0 0 0\n", "truncated frame", 1),
        ("1\nc\nXx 0 0 0\n", "unknown element 'Xx'", 3),
        ("1\nc\nC nan 0 0\n", "non-finite", 3),
        ("0\nc\n", "no atoms", 1),
        ("abc\n", "expected an atom count", 1),
    ],
)
def test_bad_xyz(tmp_path, text, words, line):
    p = tmp_path / "bad.xyz"
    p.write_text(text)
    with pytest.raises(MoleculeInputError) as info:
        read_xyz(p)
    assert "bad.xyz" in str(info.value) and words in str(info.value)
    assert info.value.line == line


def test_bad_xyz_frame_skipped(tmp_path):
    p = tmp_path / "mixed.xyz"
    p.write_text("1\nbad\nQq 0 0 0\n" + XYZ_TWO)
    report: list[str] = []
    assert len(read_xyz(p, skip_invalid=True, report=report)) == 2
    assert "record 1" in report[0] and "Qq" in report[0]


def test_read_molecules_dispatch_errors(tmp_path):
    with pytest.raises(MoleculeInputError, match="no such file"):
        read_molecules(tmp_path / "missing.sdf")
    (tmp_path / "x.pdb").write_text("x")
    with pytest.raises(MoleculeInputError, match="unknown format"):
        read_molecules(tmp_path / "x.pdb")
    (tmp_path / "d").mkdir()
    with pytest.raises(MoleculeInputError, match="no .xyz files"):
        read_molecules(tmp_path / "d")


def test_draw_grid_including_unsanitizable(tmp_path, mols):
    pentavalent = Molecule(["C"] + ["H"] * 5, np.eye(6, 3) * 1.1, bonds=[[0, k, 1] for k in range(1, 6)], name="CH5")
    out = tmp_path / "grid.png"
    draw_grid([*mols, pentavalent], out, mols_per_row=2)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------- encodings and compression


def test_non_utf8_sdf_is_a_one_line_error_naming_file_and_record(tmp_path):
    records = (FIX / "four.sdf").read_bytes().split(b"$$$$\n")
    latin1 = records[1].replace(b"methane", "m\u00e9thane".encode("latin-1"), 1)
    path = tmp_path / "latin1.sdf"
    path.write_bytes(b"$$$$\n".join([records[0], latin1, *records[2:]]))
    with pytest.raises(MoleculeInputError) as info:
        read_sdf(path)
    msg = str(info.value)
    assert "latin1.sdf" in msg and "record 2" in msg and "not UTF-8" in msg and "0xe9" in msg
    assert len(msg.splitlines()) == 1 and info.value.record == 2
    report: list[str] = []
    assert len(read_sdf(path, skip_invalid=True, report=report)) == 3
    assert len(report) == 1 and "not UTF-8" in report[0]


def test_non_utf8_xyz_is_a_one_line_error(tmp_path):
    path = tmp_path / "latin1.xyz"
    path.write_bytes("1\ncaf\u00e9\nC 0 0 0\n".encode("latin-1"))
    with pytest.raises(MoleculeInputError) as info:
        read_xyz(path)
    assert "latin1.xyz" in str(info.value) and "not UTF-8" in str(info.value) and info.value.line == 2


def test_utf8_names_and_byte_order_mark(tmp_path):
    path = tmp_path / "bom.sdf"
    text = (FIX / "water.sdf").read_text().replace("water", "w\u00e4ter", 1)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert read_sdf(path)[0].name == "w\u00e4ter"


def test_gz_is_handled_by_every_reader_and_writer(tmp_path, mols):
    write_xyz(mols, tmp_path / "all.xyz.gz")
    with gzip.open(tmp_path / "all.xyz.gz", "rt") as fh:
        assert fh.readline().strip() == str(mols[0].num_atoms)
    assert [m.name for m in read_molecules(tmp_path / "all.xyz.gz")] == [m.name for m in mols]
    with gzip.open(tmp_path / "four.sdf.gz", "wb") as fh:
        fh.write((FIX / "four.sdf").read_bytes())
    for a, b in zip(read_sdf(FIX / "four.sdf"), read_sdf(tmp_path / "four.sdf.gz")):
        assert_same(a, b, tol=0.0)
        assert a.name == b.name and a.props == b.props


def test_corrupt_gz_is_a_one_line_error(tmp_path):
    path = tmp_path / "broken.sdf.gz"
    path.write_bytes((FIX / "water.sdf").read_bytes())  # not gzip-compressed
    with pytest.raises(MoleculeInputError, match="broken.sdf.gz: cannot read the file"):
        read_sdf(path)
    with gzip.open(path, "wb") as fh:
        fh.write((FIX / "four.sdf").read_bytes())
    path.write_bytes(path.read_bytes()[:-20])  # truncated stream
    with pytest.raises(MoleculeInputError, match="broken.sdf.gz: cannot read the file"):
        read_sdf(path)


def test_folder_given_as_sdf(tmp_path):
    (tmp_path / "d.sdf").mkdir()
    with pytest.raises(MoleculeInputError, match="is a folder"):
        read_sdf(tmp_path / "d.sdf")
