"""Reading and writing molecules: SDF (V2000/V3000), XYZ (single/multi-frame, folders), PNG grids.

Every reader returns :class:`~moldiff.chem.molecule.Molecule` records with all atoms kept
(hydrogens included, ``removeHs=False``, ``sanitize=False``: a file is read as written, and
chemistry is judged later by the metrics, not silently "fixed" on input).

Bad input raises :class:`MoleculeInputError` (a ``ValueError``) whose message names the file,
the record (1-based) and its first line, and what is wrong. With ``skip_invalid=True`` the bad
records are skipped and the same messages are appended to ``report`` instead. An empty file
always raises (there is no record to skip).

Decisions:
  * SDF records are split on ``$$$$`` lines here (so errors carry line numbers) and each record is
    parsed by RDKit. A last record without ``$$$$`` is accepted when it is complete (``M  END``).
  * SD data items are read back as ``int`` when they look like integers, ``float`` when they parse
    as floats, else ``str``; floats are written with ``repr`` so they round-trip exactly.
  * Coordinates are written with RDKit's precision (4 decimals in V2000): round trips agree to
    5e-5 Angstrom. V3000 is used for molecules with more than 999 atoms or bonds.
  * XYZ elements may be symbols (any case) or atomic numbers; extra columns are ignored.
"""

from __future__ import annotations

import gzip
import math
import os
import re
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Protocol, Sequence

import numpy as np
from rdkit import Chem, rdBase

from moldiff.chem.molecule import ATOMIC_NUMBER, PERIODIC, Molecule
from moldiff.chem.rdkit_conv import from_rdkit, to_rdkit
from moldiff.utils.io import atomic_write

SDF_SUFFIXES = (".sdf", ".sd", ".mol", ".sdf.gz", ".sd.gz")
XYZ_SUFFIXES = (".xyz", ".xyz.gz")


class MoleculeInputError(ValueError):
    """Unreadable or unusable molecule input; the message names the file, record/line and problem.

    Attributes:
        path: the file.
        record: 1-based record (SDF) or frame (XYZ) number, if known.
        line: 1-based line number in the file, if known.
        problem: what is wrong, without the location.
    """

    def __init__(self, path: str | os.PathLike, problem: str, record: int | None = None, line: int | None = None) -> None:
        self.path = str(path)
        self.problem = problem
        self.record = record
        self.line = line
        where = [self.path]
        if record is not None:
            where.append(f"record {record}")
        if line is not None:
            where.append(f"line {line}")
        super().__init__(f"{', '.join(where)}: {problem}")


class VocabLike(Protocol):
    """Anything with ``elements`` (symbols) and optionally ``charges`` (ints), e.g. ``moldiff.data.vocab.Vocab``."""

    elements: Sequence[str]


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", newline=None)
    return open(path, "r", newline=None)


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise MoleculeInputError(path, "no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise MoleculeInputError(path, "file is empty (no molecule records)")


def check_vocab(mol: Molecule, vocab: VocabLike | None) -> None:
    """Raise ``ValueError`` if an element or formal charge of ``mol`` is outside ``vocab``."""
    if vocab is None:
        return
    elements = list(vocab.elements)
    for k, e in enumerate(mol.elements):
        if e not in elements:
            raise ValueError(f"atom {k + 1}: element {e!r} is not in the vocabulary {elements}")
    charges = getattr(vocab, "charges", None)
    if charges is not None:
        charges = [int(c) for c in charges]
        for k, q in enumerate(mol.charges):
            if int(q) not in charges:
                raise ValueError(f"atom {k + 1}: formal charge {int(q):+d} is not in the vocabulary {charges}")


def _finish(mol: Molecule, vocab: VocabLike | None) -> Molecule:
    """Common checks of every reader (no atoms, non-finite coordinates, unknown elements, vocabulary)."""
    mol.check()
    check_vocab(mol, vocab)
    return mol


def _strip_label(msg: str) -> str:
    """Drop the ``molecule <name>: `` prefix of ``Molecule.check`` messages (the location is added instead)."""
    return msg.split(": ", 1)[1] if msg.startswith("molecule ") and ": " in msg else msg


def _fail(err: MoleculeInputError, skip_invalid: bool, report: list[str] | None) -> None:
    if not skip_invalid:
        raise err
    if report is not None:
        report.append(str(err))


# ----------------------------------------------------------------------------------------- SDF


def _split_sdf(fh: IO[str]) -> Iterator[tuple[int, int, list[str]]]:
    """Yield ``(record_number, first_line_number, lines)`` per SDF record (1-based numbers)."""
    lines: list[str] = []
    start = 1
    record = 0
    lineno = 0
    for lineno, raw in enumerate(fh, start=1):
        line = raw.rstrip("\r\n")
        if line.rstrip() == "$$$$":
            record += 1
            yield record, start, lines
            lines = []
            start = lineno + 1
        else:
            lines.append(line)
    if any(s.strip() for s in lines):
        record += 1
        yield record, start, lines


def _precheck_v2000(lines: list[str]) -> tuple[str, int | None] | None:
    """Diagnose a V2000 record; return ``(problem, offset_of_line)`` for the first problem found, else None."""
    if len(lines) < 4:
        return f"truncated record: {len(lines)} lines, a molfile needs a 3-line header and a counts line", None
    counts = lines[3]
    if "V3000" in counts:
        return None
    try:
        n_atoms, n_bonds = int(counts[0:3]), int(counts[3:6])
    except ValueError:
        return f"cannot read the atom/bond counts from the counts line {counts!r}", 3
    if len(lines) < 4 + n_atoms + n_bonds:
        return (f"truncated record: the counts line announces {n_atoms} atoms and {n_bonds} bonds "
                f"but only {max(len(lines) - 4, 0)} atom/bond lines follow"), None
    for k in range(n_atoms):
        line = lines[4 + k]
        try:
            xyz = [float(line[0:10]), float(line[10:20]), float(line[20:30])]
        except ValueError:
            return f"atom {k + 1}: cannot read coordinates from {line[0:30]!r}", 4 + k
        if not all(math.isfinite(v) for v in xyz):
            return f"atom {k + 1}: non-finite (NaN/inf) coordinates {line[0:30].split()}", 4 + k
        symbol = line[31:34].strip()
        if symbol not in ATOMIC_NUMBER:
            return f"atom {k + 1}: unknown element {symbol!r}", 4 + k
    if not any(ln.startswith("M  END") for ln in lines[4 + n_atoms + n_bonds :]):
        return "truncated record: no 'M  END' line", None
    return None


_TAG = re.compile(r"^>.*<(.+)>")
_INT = re.compile(r"^[+-]?\d+$")


def _parse_value(text: str) -> float | int | str:
    s = text.strip()
    if _INT.match(s):
        return int(s)
    try:
        return float(s)
    except ValueError:
        return text


def _parse_sd_data(lines: list[str]) -> dict[str, Any]:
    """SD data items (``> <tag>`` then value lines until a blank line) after ``M  END``."""
    props: dict[str, Any] = {}
    try:
        k = next(i for i, ln in enumerate(lines) if ln.startswith("M  END")) + 1
    except StopIteration:
        return props
    while k < len(lines):
        m = _TAG.match(lines[k])
        k += 1
        if not m:
            continue
        value: list[str] = []
        while k < len(lines) and lines[k].strip() != "":
            value.append(lines[k])
            k += 1
        props[m.group(1)] = _parse_value("\n".join(value))
    return props


def _parse_sdf_record(path: Path, record: int, start: int, lines: list[str], vocab: VocabLike | None) -> Molecule:
    problem = _precheck_v2000(lines)
    if problem is not None:
        text, offset = problem
        raise MoleculeInputError(path, text, record, start if offset is None else start + offset)
    block = "\n".join(lines) + "\n"
    with rdBase.BlockLogs():
        rd = Chem.MolFromMolBlock(block, sanitize=False, removeHs=False, strictParsing=True)
    if rd is None:
        raise MoleculeInputError(path, "RDKit cannot parse this molfile record", record, start)
    try:
        mol = from_rdkit(rd, name=lines[0].strip())
        mol.props = _parse_sd_data(lines)
        return _finish(mol, vocab)
    except ValueError as exc:
        raise MoleculeInputError(path, _strip_label(str(exc)), record, start) from None


def iter_sdf(
    path: str | os.PathLike,
    skip_invalid: bool = False,
    report: list[str] | None = None,
    vocab: VocabLike | None = None,
) -> Iterator[Molecule]:
    """Stream the molecules of an SDF file (optionally gzip-compressed), one record at a time.

    Args:
        path: ``.sdf`` / ``.sd`` / ``.mol`` file (``.gz`` allowed).
        skip_invalid: skip bad records (listed in ``report``) instead of raising.
        report: list that receives one message per skipped record.
        vocab: if given, atoms with an element or charge outside it are bad input.

    Raises:
        MoleculeInputError: missing or empty file, or (unless ``skip_invalid``) a bad record.
    """
    path = Path(path)
    _check_exists(path)
    n = 0
    with _open_text(path) as fh:
        for record, start, lines in _split_sdf(fh):
            n += 1
            try:
                yield _parse_sdf_record(path, record, start, lines, vocab)
            except MoleculeInputError as err:
                _fail(err, skip_invalid, report)
    if n == 0:
        raise MoleculeInputError(path, "file is empty (no molecule records)")


def read_sdf(
    path: str | os.PathLike,
    skip_invalid: bool = False,
    report: list[str] | None = None,
    vocab: VocabLike | None = None,
) -> list[Molecule]:
    """Read all molecules of an SDF file; see :func:`iter_sdf`."""
    return list(iter_sdf(path, skip_invalid, report, vocab))


def _sd_value(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    text = str(value).replace("\r", "")
    return "\n".join(ln if ln.strip() else "." for ln in text.split("\n"))  # a blank line ends an item


def molecule_to_sdf_block(mol: Molecule) -> str:
    """One SDF record (molfile, SD data items from ``mol.props``, ``$$$$``)."""
    mol.check()
    rd = to_rdkit(mol)
    rd.SetProp("_Name", mol.name.replace("\n", " ").replace("\r", " "))
    v3000 = mol.num_atoms > 999 or len(mol.bonds) > 999
    block = Chem.MolToMolBlock(rd, includeStereo=False, kekulize=False, forceV3000=v3000)
    out = [block if block.endswith("\n") else block + "\n"]
    for key, value in mol.props.items():
        key = re.sub(r"[<>\n\r]", "_", str(key))
        out.append(f">  <{key}>\n{_sd_value(value)}\n\n")
    out.append("$$$$\n")
    return "".join(out)


def write_sdf(mols: Iterable[Molecule], path: str | os.PathLike) -> int:
    """Write molecules (3D coordinates, bonds incl. aromatic flags, formal charges, props as SD tags).

    The file is written to a temporary sibling and renamed, so a crash never leaves half a file.

    Returns:
        The number of molecules written.

    Raises:
        ValueError: a molecule without atoms, with non-finite coordinates or unknown elements.
    """
    path = Path(path)
    n = 0
    if path.name.endswith(".gz"):
        with atomic_write(path, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb") as gz:
            for mol in mols:
                gz.write(molecule_to_sdf_block(mol).encode())
                n += 1
        return n
    with atomic_write(path) as fh:
        for mol in mols:
            fh.write(molecule_to_sdf_block(mol))
            n += 1
    return n


# ----------------------------------------------------------------------------------------- XYZ


def _element_symbol(token: str) -> str | None:
    if token.isdigit():
        z = int(token)
        return PERIODIC[z - 1] if 1 <= z <= len(PERIODIC) else None
    sym = token[:1].upper() + token[1:].lower()
    return sym if sym in ATOMIC_NUMBER else None


def iter_xyz(
    path: str | os.PathLike,
    skip_invalid: bool = False,
    report: list[str] | None = None,
    vocab: VocabLike | None = None,
) -> Iterator[Molecule]:
    """Stream the frames of an XYZ file (atom count line, comment line, ``El x y z`` lines; repeated).

    Molecules have no bonds and zero charges; the comment becomes the name (or ``<stem>_<frame>``).
    If a count line itself is unreadable the rest of the file cannot be located: it raises, or,
    with ``skip_invalid``, the rest is skipped and reported.
    """
    path = Path(path)
    _check_exists(path)
    with _open_text(path) as fh:
        lines = [ln.rstrip("\r\n") for ln in fh]
    i, frame = 0, 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        frame += 1
        start = i + 1
        try:
            n = int(lines[i].split()[0])
            if n < 0:
                raise ValueError
        except (ValueError, IndexError):
            err = MoleculeInputError(path, f"expected an atom count, got {lines[i].strip()[:40]!r}", frame, start)
            _fail(err, skip_invalid, report)
            if report is not None:
                report.append(f"{path}: rest of the file after line {start} skipped")
            return
        i += 2 + n
        try:
            if n == 0:
                raise MoleculeInputError(path, "molecule has no atoms", frame, start)
            if start + 1 + n > len(lines):
                have = max(len(lines) - start - 1, 0)
                raise MoleculeInputError(path, f"truncated frame: {n} atoms announced, {have} atom lines found", frame, start)
            elements, pos = [], np.empty((n, 3))
            for k in range(n):
                lineno = start + 2 + k
                tok = lines[lineno - 1].split()
                if len(tok) < 4:
                    raise MoleculeInputError(path, f"atom {k + 1}: expected 'element x y z', got {lines[lineno - 1].strip()[:60]!r}", frame, lineno)
                sym = _element_symbol(tok[0])
                if sym is None:
                    raise MoleculeInputError(path, f"atom {k + 1}: unknown element {tok[0]!r}", frame, lineno)
                try:
                    pos[k] = [float(t) for t in tok[1:4]]
                except ValueError:
                    raise MoleculeInputError(path, f"atom {k + 1}: cannot read coordinates {tok[1:4]}", frame, lineno) from None
                if not np.isfinite(pos[k]).all():
                    raise MoleculeInputError(path, f"atom {k + 1}: non-finite (NaN/inf) coordinates {tok[1:4]}", frame, lineno)
                elements.append(sym)
            comment = lines[start].strip() if start < len(lines) else ""
            name = comment or f"{path.name.split('.')[0]}_{frame}"
            try:
                yield _finish(Molecule(elements, pos, name=name), vocab)
            except ValueError as exc:
                raise MoleculeInputError(path, _strip_label(str(exc)), frame, start) from None
        except MoleculeInputError as err:
            _fail(err, skip_invalid, report)


def read_xyz(
    path: str | os.PathLike,
    skip_invalid: bool = False,
    report: list[str] | None = None,
    vocab: VocabLike | None = None,
) -> list[Molecule]:
    """Read all frames of a single- or multi-frame XYZ file; see :func:`iter_xyz`."""
    mols = list(iter_xyz(path, skip_invalid, report, vocab))
    return mols


def _natural_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def read_xyz_dir(
    folder: str | os.PathLike,
    skip_invalid: bool = False,
    report: list[str] | None = None,
    vocab: VocabLike | None = None,
) -> list[Molecule]:
    """Read every ``*.xyz`` file of a folder (natural name order: ``mol_2`` before ``mol_10``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MoleculeInputError(folder, "no such folder")
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.name.endswith(XYZ_SUFFIXES)), key=_natural_key)
    if not files:
        raise MoleculeInputError(folder, "folder contains no .xyz files")
    out: list[Molecule] = []
    for f in files:
        try:
            out.extend(read_xyz(f, skip_invalid, report, vocab))
        except MoleculeInputError as err:  # empty file inside a folder
            _fail(err, skip_invalid, report)
    return out


def write_xyz(mol: Molecule | Iterable[Molecule], path: str | os.PathLike) -> None:
    """Write one molecule, or several as frames of one file (atomically)."""
    mols = [mol] if isinstance(mol, Molecule) else list(mol)
    with atomic_write(path) as fh:
        for m in mols:
            m.check()
            fh.write(f"{m.num_atoms}\n{m.name.replace(chr(10), ' ')}\n")
            for e, (x, y, z) in zip(m.elements, m.pos):
                fh.write(f"{e:<2s} {x:16.8f} {y:16.8f} {z:16.8f}\n")


# -------------------------------------------------------------------------------------- dispatch


def read_molecules(
    path: str | os.PathLike,
    skip_invalid: bool = False,
    report: list[str] | None = None,
    vocab: VocabLike | None = None,
) -> list[Molecule]:
    """Read an SDF file, an XYZ file or a folder of XYZ files, chosen by suffix.

    Raises:
        MoleculeInputError: missing path, unknown suffix, empty file, or a bad record (unless skipped).
    """
    path = Path(path)
    if path.is_dir():
        return read_xyz_dir(path, skip_invalid, report, vocab)
    name = path.name.lower()
    if name.endswith(SDF_SUFFIXES):
        return read_sdf(path, skip_invalid, report, vocab)
    if name.endswith(XYZ_SUFFIXES):
        return read_xyz(path, skip_invalid, report, vocab)
    if not path.exists():
        raise MoleculeInputError(path, "no such file or folder")
    raise MoleculeInputError(path, "unknown format: expected .sdf/.sd/.mol, .xyz (optionally .gz) or a folder of .xyz files")


# --------------------------------------------------------------------------------------- drawing


def _depiction(mol: Molecule, remove_hs: bool) -> Chem.Mol:
    """RDKit molecule with 2D coordinates; unsanitizable molecules are prepared without sanitization."""
    from rdkit.Chem import rdDepictor
    from rdkit.Chem.Draw import rdMolDraw2D

    rd = to_rdkit(mol)
    rd.RemoveAllConformers()
    try:
        m = Chem.Mol(rd)
        with rdBase.BlockLogs():  # an invalid molecule is expected here: it is drawn unsanitized below
            Chem.SanitizeMol(m)
        if remove_hs:
            m = Chem.RemoveHs(m)
        rdDepictor.Compute2DCoords(m)
        return rdMolDraw2D.PrepareMolForDrawing(m, kekulize=True, addChiralHs=False)
    except Exception:
        m = Chem.Mol(rd)
        m.UpdatePropertyCache(strict=False)
        if remove_hs:
            with rdBase.BlockLogs():
                m = Chem.RemoveHs(m, sanitize=False)
        Chem.FastFindRings(m)
        rdDepictor.Compute2DCoords(m)
        return rdMolDraw2D.PrepareMolForDrawing(m, kekulize=False, addChiralHs=False)


def draw_grid(
    mols: Sequence[Molecule],
    png_path: str | os.PathLike,
    mols_per_row: int = 5,
    sub_size: tuple[int, int] = (250, 220),
    legends: Sequence[str] | None = None,
    remove_hs: bool = True,
) -> None:
    """Draw 2D depictions of ``mols`` in a grid PNG (written atomically).

    Molecules that do not sanitize are drawn anyway, as their raw graph.

    Args:
        mols: molecules to draw (at least one).
        png_path: output ``.png``.
        mols_per_row: grid columns.
        sub_size: pixel size of each cell.
        legends: one caption per molecule (default: names).
        remove_hs: hide hydrogens (kept where RDKit needs them, e.g. on charged atoms).
    """
    from rdkit.Chem.Draw import rdMolDraw2D

    mols = list(mols)
    if not mols:
        raise ValueError("draw_grid: no molecules to draw")
    cols = max(1, min(int(mols_per_row), len(mols)))
    rows = (len(mols) + cols - 1) // cols
    w, h = sub_size
    drawer = rdMolDraw2D.MolDraw2DCairo(w * cols, h * rows, w, h)
    drawer.drawOptions().prepareMolsBeforeDrawing = False
    rdmols = [_depiction(m, remove_hs) for m in mols]
    labels = list(legends) if legends is not None else [m.name for m in mols]
    drawer.DrawMolecules(rdmols, legends=[str(s) for s in labels])
    drawer.FinishDrawing()
    with atomic_write(png_path, "wb") as fh:
        fh.write(drawer.GetDrawingText())
