"""Custom datasets from any multi-record SDF file (conformers allowed).

Recipe (``RECIPE_VERSION``; bump it when anything here changes and caches rebuild):
  * records are read with the package's SDF reader, :func:`moldiff.chem.io.iter_sdf_records`
    (``.gz`` files are read compressed): atoms (hydrogens included) exactly as the file gives them;
  * a record is *bad* when that reader rejects it (unreadable or truncated record, no atoms,
    unknown element, non-finite coordinates, text that is not UTF-8, ...) or when it has no 3D
    coordinates (a 2D record) or does not pass RDKit sanitization; a bad record is an error naming
    the file, the 1-based record number, its first line and what is wrong, or, with
    ``skip_invalid=True``, skipped and listed in the build report;
  * bonds are kekulized (bond classes none/single/double/triple; no aromatic class); RDKit's
    sanitization normalises a few groups (e.g. pentavalent nitro to the charge-separated form);
  * records with the same canonical SMILES (hydrogens and stereo removed) are conformers of one
    molecule: the train/val/test split (seeded, ``split_fractions``) is made over molecules, so
    no molecule has conformers in two splits; the train molecules are also cut into two halves;
  * the vocabularies are the elements (ordered by atomic number) and formal charges (0 always
    included) found in the kept records;
  * numeric SD tags named in ``properties`` become the cache's properties (a record without a
    finite numeric value for one of them is bad);
  * ``heavy_atoms_only=True`` drops hydrogens (after kekulization; bonds to them go too).

The cache is ``sdf_<file stem>`` (``_noH`` appended in heavy-atom mode). The build report holds the
file's path, size, modification time and SHA-256 plus the options: a changed file (or changed
options) rebuilds the cache; a touched but identical file does not.

RDKit is imported inside the functions that read files, so opening an existing cache (and the
staleness check) works without RDKit.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from moldiff.chem.molecule import ATOMIC_NUMBER, Molecule
from moldiff.data.cache import CacheWriter, MolCache
from moldiff.data.recipe import DatasetRecipe
from moldiff.data.source import source_fingerprint
from moldiff.data.splits import DEFAULT_SPLIT_FRACTIONS, check_fractions, split_by_group
from moldiff.data.vocab import Vocab

if TYPE_CHECKING:
    from moldiff.chem.io import SDFRecord

RECIPE_VERSION = 1
#: At most this many bad records are listed one by one in the build report (all are counted).
MAX_LISTED_INVALID = 1000


class FoundVocabWriter(CacheWriter):
    """A ``CacheWriter`` whose vocabularies are the elements and charges found in the molecules.

    Elements and charges are registered as molecules arrive; ``finish`` re-orders the vocabularies
    (elements by atomic number, charges ascending, 0 always present) and re-indexes the stored atoms.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        name: str,
        recipe_version: int,
        prop_names: list[str] | None = None,
        prop_units: dict[str, str] | None = None,
    ) -> None:
        super().__init__(path, name, recipe_version, Vocab((), (0,)), prop_names, prop_units)

    def add(self, mol: Molecule, smiles: str = "", props: np.ndarray | None = None, key: str = "") -> None:
        new_el = [e for e in dict.fromkeys(mol.elements) if e not in self.vocab.elements]
        new_q = [int(q) for q in dict.fromkeys(mol.charges.tolist()) if int(q) not in self.vocab.charges]
        for e in new_el:
            if e not in ATOMIC_NUMBER:
                raise ValueError(f"molecule {mol.name or len(self)}: unknown element {e!r}")
        if new_el or new_q:
            self.vocab = Vocab(self.vocab.elements + tuple(new_el), self.vocab.charges + tuple(new_q))
        super().add(mol, smiles, props, key)

    def finish(self, split: np.ndarray, half: np.ndarray | None = None, report: dict | None = None) -> MolCache:
        elements = sorted(self.vocab.elements, key=lambda e: ATOMIC_NUMBER[e])
        charges = sorted(self.vocab.charges)
        el_map = np.array([elements.index(e) for e in self.vocab.elements], dtype=np.int8)
        q_map = np.array([charges.index(q) for q in self.vocab.charges], dtype=np.int8)
        self._types = [el_map[t] for t in self._types]
        self._charges = [q_map[c] for c in self._charges]
        self.vocab = Vocab(tuple(elements), tuple(charges))
        return super().finish(split, half, report)


def _safe_stem(path: str | os.PathLike) -> str:
    stem = Path(str(path)).name
    for suffix in (".gz", ".sdf", ".sd", ".mol"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "file"


def sdf_cache_name(path: str | os.PathLike, heavy_atoms_only: bool = False) -> str:
    """``sdf_<file stem>`` (``_noH`` appended in heavy-atom mode)."""
    return f"sdf_{_safe_stem(path)}" + ("_noH" if heavy_atoms_only else "")


def sdf_options(
    skip_invalid: bool = False,
    properties: Iterable[str] | None = None,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    seed: int = 0,
    heavy_atoms_only: bool = False,
) -> dict[str, Any]:
    """The options that shape an SDF cache's content (recorded in its report)."""
    return {
        "skip_invalid": bool(skip_invalid),
        "properties": [str(p) for p in (properties or [])],
        "split_fractions": [float(x) for x in split_fractions],
        "seed": int(seed),
        "heavy_atoms_only": bool(heavy_atoms_only),
    }


# --------------------------------------------------------------------------- record checks


def drop_hydrogens(mol: Molecule) -> Molecule:
    """The molecule without its hydrogen atoms (and their bonds)."""
    keep = np.array([e != "H" for e in mol.elements], dtype=bool)
    new_index = np.cumsum(keep) - 1
    bonds = mol.bonds[keep[mol.bonds[:, 0]] & keep[mol.bonds[:, 1]]] if mol.has_bonds else mol.bonds
    bonds = np.stack([new_index[bonds[:, 0]], new_index[bonds[:, 1]], bonds[:, 2]], 1) if len(bonds) else None
    return Molecule(
        [e for e, k in zip(mol.elements, keep) if k], mol.pos[keep], mol.charges[keep], bonds, dict(mol.props), mol.name
    )


def flat_smiles(rdmol: Any) -> str:
    """Canonical SMILES without stereo and hydrogens ("" if RDKit cannot sanitize the molecule).

    Stereo is removed first so that no hydrogen survives ``RemoveHs`` for defining, e.g., the
    geometry of an imine ``[H]N=C``: conformers and generated molecules then get the same key.
    """
    from rdkit import Chem

    from moldiff.chem.rdkit_conv import canonical_smiles

    m = Chem.Mol(rdmol)
    Chem.RemoveStereochemistry(m)
    return canonical_smiles(m) or ""


def check_record(record: SDFRecord, properties: Sequence[str] = (), heavy_atoms_only: bool = False) -> tuple:
    """The training form of one SDF record: 3D, sanitized, kekulized, with numeric properties.

    Args:
        record: a record from :func:`moldiff.chem.io.iter_sdf_records` (already checked for atoms,
            elements and finite coordinates).
        properties: SD tags to read as numbers.
        heavy_atoms_only: drop hydrogens.

    Returns:
        ``(Molecule, canonical SMILES, props [P] float64, has_implicit_h)``.

    Raises:
        MoleculeInputError: naming the file, the record and the problem.
    """
    from rdkit import Chem

    from moldiff.chem.rdkit_conv import from_rdkit

    rdmol = record.rdmol
    if not rdmol.GetConformer().Is3D() and rdmol.GetNumAtoms() > 1:
        raise record.error("no 3D coordinates (2D record: all z = 0 or flagged 2D)")
    values = np.zeros(len(properties), dtype=np.float64)
    for k, p in enumerate(properties):
        if p not in record.data:
            raise record.error(f"SD tag <{p}> missing")
        raw = record.data[p].strip()
        try:
            values[k] = float(raw)
        except ValueError:
            raise record.error(f"SD tag <{p}> = {raw!r} is not a number") from None
        if not math.isfinite(values[k]):
            raise record.error(f"SD tag <{p}> = {raw!r} is not a finite number")
    m = Chem.Mol(rdmol)
    try:
        # keep the file's Kekule structure where it gives one: aromaticity is not re-perceived
        Chem.SanitizeMol(m, Chem.SanitizeFlags.SANITIZE_ALL ^ Chem.SanitizeFlags.SANITIZE_SETAROMATICITY)
        mol = from_rdkit(m, name=record.title or f"record {record.number}", kekulize=True)
    except Exception as exc:  # noqa: BLE001 - RDKit raises several types
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise record.error(f"RDKit sanitization failed: {msg}") from None
    implicit_h = any(a.GetNumImplicitHs() > 0 for a in m.GetAtoms())
    smiles = flat_smiles(m)
    mol.props = {}
    if heavy_atoms_only:
        mol = drop_hydrogens(mol)
        if mol.num_atoms == 0:
            raise record.error("no atoms left after dropping hydrogens")
    return mol, smiles, values, implicit_h


def iter_dataset_records(
    path: str | os.PathLike,
    properties: Sequence[str] = (),
    skip_invalid: bool = False,
    heavy_atoms_only: bool = False,
    invalid: list[dict] | None = None,
    progress: bool = True,
) -> Iterator[tuple[int, Molecule, str, np.ndarray, bool]]:
    """Stream the records of an SDF file as checked, kekulized molecules (see :func:`check_record`).

    Args:
        path: the SDF file (``.gz``: gzip-compressed).
        properties: SD tags to read as numbers.
        skip_invalid: skip bad records (appended to ``invalid`` as ``{"record", "error"}``) instead of raising.
        heavy_atoms_only: drop hydrogens.
        invalid: list receiving the skipped records.
        progress: show a progress bar.

    Yields:
        ``(record number (1-based), Molecule, canonical SMILES, props [P], has_implicit_h)``.

    Raises:
        MoleculeInputError: a missing, empty or unreadable file, or (unless ``skip_invalid``) a bad record.
    """
    from moldiff.chem.io import MoleculeInputError, iter_sdf_records

    def skip(err: MoleculeInputError) -> None:
        if invalid is not None:
            invalid.append({"record": err.record, "error": err.problem})

    on_invalid = skip if skip_invalid else None
    p = Path(path).expanduser()
    records = iter_sdf_records(p, on_invalid)
    for rec in tqdm(records, desc=f"reading {p.name}", disable=not progress, mininterval=2, unit="rec"):
        try:
            mol, smiles, values, implicit_h = check_record(rec, properties, heavy_atoms_only)
        except MoleculeInputError as err:
            if on_invalid is None:
                raise
            on_invalid(err)
            continue
        yield rec.number, mol, smiles, values, implicit_h


def _write_records(
    writer: FoundVocabWriter, records: Iterable[tuple[int, Molecule, str, np.ndarray, bool]]
) -> tuple[int, list[str], int]:
    """Add the records of :func:`iter_dataset_records` to ``writer``.

    Returns:
        ``(number of the last record, the molecule (SMILES) of each record, records with implicit H)``.
    """
    groups: list[str] = []
    implicit_h = 0
    last = 0
    for rec, mol, smiles, values, has_implicit in records:
        last = rec
        implicit_h += int(has_implicit)
        writer.add(mol, smiles, values, key=f"record{rec}")
        groups.append(smiles or f"record{rec}")
    return last, groups, implicit_h


def _sdf_report(
    fingerprint: dict[str, Any],
    records: int,
    kept: int,
    groups: Sequence[str],
    invalid: list[dict],
    implicit_h: int,
    skip_invalid: bool,
    heavy_atoms_only: bool,
) -> dict[str, Any]:
    """The build report: records read, kept and bad, molecules, and a warning about implicit hydrogens."""
    report: dict[str, Any] = {
        "source": fingerprint,
        "input_records": max(records, kept + len(invalid)),
        "kept_records": kept,
        "molecules": len(set(groups)),
        "invalid_records": len(invalid),
        "invalid": invalid[:MAX_LISTED_INVALID],
        "records_with_implicit_h": implicit_h,
        "heavy_atoms_only": bool(heavy_atoms_only),
        "policy": (
            "bad records " + ("are skipped and listed" if skip_invalid else "stop the build")
            + "; records with the same canonical SMILES are conformers of one molecule and share a split"
        ),
    }
    if len(invalid) > MAX_LISTED_INVALID:
        report["invalid_listed"] = MAX_LISTED_INVALID
    if implicit_h and not heavy_atoms_only:
        report["warning"] = (
            f"{implicit_h} records have atoms with implicit hydrogens (no coordinates for them in the file): "
            "add explicit hydrogens with 3D coordinates, or use heavy_atoms_only=true"
        )
    return report


def prepare_sdf(
    out: str | Path,
    path: str | os.PathLike,
    skip_invalid: bool = False,
    properties: Iterable[str] | None = None,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    seed: int = 0,
    heavy_atoms_only: bool = False,
    name: str | None = None,
    recipe_version: int = RECIPE_VERSION,
    prop_units: dict[str, str] | None = None,
    source: dict[str, Any] | None = None,
    extra_report: dict[str, Any] | None = None,
    progress: bool = True,
) -> MolCache:
    """Build the cache at ``out`` from the SDF file ``path`` (see the module docstring for the recipe).

    Args:
        out: cache folder.
        path: the SDF file.
        skip_invalid: skip bad records and list them in the report (default: raise on the first).
        properties: numeric SD tags kept as properties.
        split_fractions: ``[train, val, test]`` fractions of molecules (not records).
        seed: split seed.
        heavy_atoms_only: drop hydrogens.
        name: the cache's name (default ``sdf_<stem>``).
        recipe_version: version recorded in the cache (datasets built on this path pass theirs).
        prop_units: units of the properties (default ``""``: as in the file).
        source: what the cache was built from (default: this file's fingerprint and the options).
        extra_report: entries added to the build report.
        progress: show a progress bar.

    Raises:
        MoleculeInputError: a missing, empty or unreadable file, or a bad record (file and record named).
        ValueError: bad options, or no valid record.
    """
    props = [str(p) for p in (properties or [])]
    check_fractions(split_fractions)
    options = sdf_options(skip_invalid, props, split_fractions, seed, heavy_atoms_only)
    from moldiff.chem.io import check_input_file

    p = Path(path).expanduser()
    check_input_file(p)
    fingerprint = source if source is not None else source_fingerprint(options, p)
    units = {k: (prop_units or {}).get(k, "") for k in props}
    writer = FoundVocabWriter(out, name or sdf_cache_name(p, heavy_atoms_only), recipe_version, props, units)
    invalid: list[dict] = []
    records = iter_dataset_records(p, props, skip_invalid, heavy_atoms_only, invalid, progress)
    last, groups, implicit_h = _write_records(writer, records)
    if len(writer) == 0:
        raise ValueError(f"SDF file {p}: no valid records ({len(invalid)} bad; first: {invalid[0]['error']})")
    split, half = split_by_group(groups, split_fractions, seed)
    report = _sdf_report(fingerprint, last, len(writer), groups, invalid, implicit_h, skip_invalid, heavy_atoms_only)
    report.update(extra_report or {})
    return writer.finish(split, half, report)


#: The custom-SDF recipe: one cache per file, rebuilt when the options or the file's content change.
RECIPE = DatasetRecipe(
    name="sdf",
    version=RECIPE_VERSION,
    prepare=prepare_sdf,
    # the other parameters of prepare_sdf are for recipes built on it (nci), not for a data config
    option_names=("path", "skip_invalid", "properties", "split_fractions", "seed", "heavy_atoms_only", "progress"),
    cache_name=sdf_cache_name,
    content_options=sdf_options,
    source_file=lambda path: path,
    requires_path=True,
)
