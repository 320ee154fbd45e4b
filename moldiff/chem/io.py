"""Reading and writing molecules: SDF (V2000/V3000), XYZ (single/multi-frame, folders), PNG grids.

Every reader returns :class:`~moldiff.chem.molecule.Molecule` records with all atoms kept
(hydrogens included, ``removeHs=False``, ``sanitize=False``: a file is read as written, and
chemistry is judged later by the metrics, not silently "fixed" on input).

Bad input raises :class:`MoleculeInputError` (a ``ValueError``) whose message names the file,
the record (1-based) and its first line, and what is wrong. With ``skip_invalid=True`` the bad
records are skipped and the same messages are appended to ``report`` instead. A missing, empty,
unreadable or corrupt (gzip) file always raises (there is no record to skip).

This is the only SDF reader of the package: :func:`iter_sdf_records` splits, decodes, checks and
parses the records, and both :func:`iter_sdf` (molecules as written) and the dataset builders
(``moldiff.data.sdf_dataset``: sanitized, kekulized training records) start from it.

Decisions:
  * Files are UTF-8 text (a UTF-8 byte-order mark is ignored); a name ending in ``.gz`` is
    gzip-compressed, for every reader and writer. A line that is not UTF-8 makes its record bad.
  * SDF records are split on ``$$$$`` lines here (so errors carry line numbers) and each record is
    parsed by RDKit. A last record without ``$$$$`` is accepted when it is complete (``M  END``).
  * A record is bad when its V2000 blocks are unreadable or truncated, RDKit cannot parse it, or
    it has no atoms, an unknown element (``*``, ``R``, ...), non-finite coordinates or a bond type
    other than single/double/triple/aromatic.
  * SD data items are read back as ``int`` when they look like integers, ``float`` when they parse
    as floats, else ``str``; floats are written with ``repr`` so they round-trip exactly.
  * Coordinates are written with RDKit's precision (4 decimals in V2000): round trips agree to
    5e-5 Angstrom. V3000 is used for molecules with more than 999 atoms or bonds.
  * XYZ elements may be symbols (any case) or atomic numbers; extra columns are ignored.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np
from rdkit import Chem, rdBase

from moldiff.chem.molecule import ATOMIC_NUMBER, PERIODIC, Molecule
from moldiff.chem.rdkit_conv import from_rdkit, to_rdkit
from moldiff.utils.io import atomic_write

SDF_SUFFIXES = (".sdf", ".sd", ".mol", ".sdf.gz", ".sd.gz", ".mol.gz")
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


#: What a reader does with a bad record: ``None`` raises it; a handler receives it and the reader goes on.
InvalidHandler = Callable[[MoleculeInputError], None]


def skip_handler(skip_invalid: bool, report: list[str] | None = None) -> InvalidHandler | None:
    """The handler for the ``skip_invalid``/``report`` arguments of the readers.

    Returns:
        ``None`` (bad records raise) unless ``skip_invalid``; then a handler appending each message to
        ``report`` (if given).
    """
    if not skip_invalid:
        return None

    def handle(err: MoleculeInputError) -> None:
        if report is not None:
            report.append(str(err))

    return handle


def _fail(err: MoleculeInputError, on_invalid: InvalidHandler | None) -> None:
    if on_invalid is None:
        raise err
    on_invalid(err)


def check_input_file(path: str | os.PathLike) -> None:
    """Raise ``MoleculeInputError`` (naming the path) for a missing path, a folder or an empty file."""
    path = Path(path)
    if not path.exists():
        raise MoleculeInputError(path, "no such file or folder")
    if path.is_dir():
        raise MoleculeInputError(path, "is a folder, not a file")
    if path.stat().st_size == 0:
        raise MoleculeInputError(path, "file is empty (no molecule records)")


def _not_utf8(raw: bytes, exc: UnicodeDecodeError) -> str:
    return f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); convert the file to UTF-8"


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str, str | None]]:
    """Stream the lines of a UTF-8 text file, gzip-compressed if its name ends in ``.gz``.

    Args:
        path: the file.

    Yields:
        ``(line number (1-based), text without the line break, problem)``: ``problem`` is None, or
        says that the line is not UTF-8 (``text`` then has U+FFFD for the undecodable bytes).

    Raises:
        MoleculeInputError: missing, empty or unreadable file (e.g. a corrupt gzip stream).
    """
    path = Path(path)
    check_input_file(path)
    try:
        with gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                raw = raw.rstrip(b"\r\n")
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    text, problem = raw.decode("utf-8"), None
                except UnicodeDecodeError as exc:
                    text, problem = raw.decode("utf-8", errors="replace"), _not_utf8(raw, exc)
                yield lineno, text, problem
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile, a truncated gzip stream, a read error
        raise MoleculeInputError(path, f"cannot read the file: {exc}") from None


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


# ----------------------------------------------------------------------------------------- SDF


@dataclass
class SDFRecord:
    """One parsed SDF record, as the file gives it.

    Attributes:
        path: the file.
        number: 1-based record number.
        line: 1-based line number of its first line.
        lines: its lines (molfile and SD data items, without ``$$$$``).
        rdmol: the RDKit molecule (``sanitize=False``, ``removeHs=False``: all atoms, as written).
        molecule: the same as a checked :class:`Molecule` (props: the SD data items as numbers or text).
        data: the SD data items, tag -> raw text (value lines joined by newlines).
    """

    path: Path
    number: int
    line: int
    lines: list[str]
    rdmol: Chem.Mol
    molecule: Molecule
    data: dict[str, str] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """The first line of the record (its name)."""
        return self.lines[0].strip() if self.lines else ""

    def error(self, problem: str, line: int | None = None) -> MoleculeInputError:
        """A ``MoleculeInputError`` locating ``problem`` at this record (its first line by default)."""
        return MoleculeInputError(self.path, problem, self.number, self.line if line is None else line)


def _split_sdf(
    lines: Iterable[tuple[int, str, str | None]],
) -> Iterator[tuple[int, int, list[str], tuple[int, str] | None]]:
    """Yield ``(record number, first line number, lines, first undecodable (line number, problem) or None)``."""
    record_lines: list[str] = []
    undecodable: tuple[int, str] | None = None
    start = 1
    record = 0
    for lineno, line, problem in lines:
        if line.rstrip() == "$$$$":
            record += 1
            yield record, start, record_lines, undecodable
            record_lines, undecodable = [], None
            start = lineno + 1
        else:
            record_lines.append(line)
            if problem is not None and undecodable is None:
                undecodable = (lineno, problem)
    if any(s.strip() for s in record_lines) or undecodable is not None:
        record += 1
        yield record, start, record_lines, undecodable


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


def _parse_sd_data(lines: list[str]) -> dict[str, str]:
    """SD data items (``> <tag>`` then value lines until a blank line) after ``M  END``, as raw text."""
    items: dict[str, str] = {}
    try:
        k = next(i for i, ln in enumerate(lines) if ln.startswith("M  END")) + 1
    except StopIteration:
        return items
    while k < len(lines):
        m = _TAG.match(lines[k])
        k += 1
        if not m:
            continue
        value: list[str] = []
        while k < len(lines) and lines[k].strip() != "":
            value.append(lines[k])
            k += 1
        items[m.group(1)] = "\n".join(value)
    return items


def _parse_sdf_record(
    path: Path, record: int, start: int, lines: list[str], undecodable: tuple[int, str] | None
) -> SDFRecord:
    if undecodable is not None:
        raise MoleculeInputError(path, undecodable[1], record, undecodable[0])
    problem = _precheck_v2000(lines)
    if problem is not None:
        text, offset = problem
        raise MoleculeInputError(path, text, record, start if offset is None else start + offset)
    block = "\n".join(lines) + "\n"
    with rdBase.BlockLogs():
        rd = Chem.MolFromMolBlock(block, sanitize=False, removeHs=False, strictParsing=True)
    if rd is None:
        raise MoleculeInputError(path, "RDKit cannot parse this molfile record", record, start)
    data = _parse_sd_data(lines)
    try:
        mol = from_rdkit(rd, name=lines[0].strip())
        mol.props = {k: _parse_value(v) for k, v in data.items()}
        mol.check()
    except ValueError as exc:
        raise MoleculeInputError(path, _strip_label(str(exc)), record, start) from None
    return SDFRecord(path, record, start, lines, rd, mol, data)


def iter_sdf_records(path: str | os.PathLike, on_invalid: InvalidHandler | None = None) -> Iterator[SDFRecord]:
    """Stream the checked, parsed records of an SDF file (``.gz``: gzip-compressed), one at a time.

    Args:
        path: ``.sdf`` / ``.sd`` / ``.mol`` file (``.gz`` allowed).
        on_invalid: receives each bad record's error (default: raise it).

    Raises:
        MoleculeInputError: missing, empty or unreadable file, a file without records, or (without
            ``on_invalid``) a bad record.
    """
    path = Path(path)
    n = 0
    for record, start, lines, undecodable in _split_sdf(iter_lines(path)):
        n += 1
        try:
            parsed = _parse_sdf_record(path, record, start, lines, undecodable)
        except MoleculeInputError as err:
            _fail(err, on_invalid)
            continue
        yield parsed
    if n == 0:
        raise MoleculeInputError(path, "file is empty (no molecule records)")


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
    on_invalid = skip_handler(skip_invalid, report)
    for rec in iter_sdf_records(path, on_invalid):
        try:
            check_vocab(rec.molecule, vocab)
        except ValueError as exc:
            _fail(rec.error(str(exc)), on_invalid)
            continue
        yield rec.molecule


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


@contextlib.contextmanager
def _open_output(path: Path) -> Iterator[IO[str]]:
    """Atomically written UTF-8 text, gzip-compressed when the name ends in ``.gz``."""
    if path.name.lower().endswith(".gz"):
        with atomic_write(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as gz, \
                io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as fh:
            yield fh
    else:
        with atomic_write(path, "w", encoding="utf-8", newline="\n") as fh:
            yield fh


def write_sdf(mols: Iterable[Molecule], path: str | os.PathLike) -> int:
    """Write molecules (3D coordinates, bonds incl. aromatic flags, formal charges, props as SD tags).

    The file is written to a temporary sibling and renamed, so a crash never leaves half a file.
    A name ending in ``.gz`` is written gzip-compressed.

    Returns:
        The number of molecules written.

    Raises:
        ValueError: a molecule without atoms, with non-finite coordinates or unknown elements.
    """
    n = 0
    with _open_output(Path(path)) as fh:
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
    on_invalid = skip_handler(skip_invalid, report)
    lines, undecodable = [], {}
    for lineno, line, problem in iter_lines(path):
        lines.append(line)
        if problem is not None:
            undecodable[lineno] = problem
    i, frame = 0, 0
    while i < len(lines):
        if not lines[i].strip() and i + 1 not in undecodable:
            i += 1
            continue
        frame += 1
        start = i + 1
        try:
            n = int(lines[i].split()[0])
            if n < 0 or start in undecodable:
                raise ValueError
        except (ValueError, IndexError):
            problem = undecodable.get(start, f"expected an atom count, got {lines[i].strip()[:40]!r}")
            _fail(MoleculeInputError(path, problem, frame, start), on_invalid)
            _fail(MoleculeInputError(path, f"rest of the file after line {start} skipped"), on_invalid)
            return
        i += 2 + n
        try:
            bad_line = next((ln for ln in range(start + 1, start + 2 + n) if ln in undecodable), None)
            if bad_line is not None:
                raise MoleculeInputError(path, undecodable[bad_line], frame, bad_line)
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
            _fail(err, on_invalid)


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
    on_invalid = skip_handler(skip_invalid, report)
    out: list[Molecule] = []
    for f in files:
        try:
            out.extend(read_xyz(f, skip_invalid, report, vocab))
        except MoleculeInputError as err:  # empty file inside a folder
            _fail(err, on_invalid)
    return out


def write_xyz(mol: Molecule | Iterable[Molecule], path: str | os.PathLike) -> None:
    """Write one molecule, or several as frames of one file (atomically; ``.gz``: gzip-compressed)."""
    mols = [mol] if isinstance(mol, Molecule) else list(mol)
    with _open_output(Path(path)) as fh:
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
