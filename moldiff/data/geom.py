"""GEOM-Drugs from the user's own local copy of GEOM's ``rdkit_folder``.

GEOM (Axelrod & Gomez-Bombarelli, Sci. Data 2022) cannot be downloaded by this package; point
``path`` at the extracted ``rdkit_folder`` (or at its ``summary_drugs.json``). Layout used:
  * ``summary_drugs.json``: SMILES -> ``{"pickle_path": "drugs/<name>.pickle", "uniqueconfs": ..., ...}``,
    ``pickle_path`` relative to the ``rdkit_folder``;
  * each pickle: a dict with ``conformers``, a list of dicts holding ``rd_mol`` (an RDKit ``Mol`` with
    explicit hydrogens and one conformer), ``totalenergy`` (Hartree, GFN2-xTB), ``relativeenergy``
    (kcal/mol), ``boltzmannweight``, ...

Recipe (``RECIPE_VERSION``; bump it when anything here changes and caches rebuild):
  * molecules in ``summary_drugs.json`` order (``limit``: the first N entries);
  * the ``n_conformers`` lowest-``totalenergy`` conformers of each molecule (default 5; missing
    energies sort last, by decreasing Boltzmann weight);
  * atoms, charges and bonds taken from ``rd_mol`` as GEOM gives it, kekulized; a conformer whose
    graph differs from the summary SMILES is kept (the geometry is the data) and counted;
  * conformers that cannot be kekulized or have non-finite coordinates are dropped and counted; an
    entry without ``pickle_path``, a missing or unreadable pickle, or a pickle without conformers is
    counted and skipped (``strict=True``: raise, naming the file);
  * vocabularies: the elements (by atomic number; on the full set H B C N O F Al Si P S Cl As Br I
    Hg Bi) and formal charges found;
  * seeded split by molecule (all conformers of a molecule in one split), default 80/10/10;
  * properties per conformer: ``totalenergy`` (Hartree), ``relativeenergy`` (kcal/mol),
    ``boltzmannweight`` (NaN where GEOM has none).

The pickles are Python pickles: only point this at a GEOM copy you trust.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from moldiff.data.cache import MolCache
from moldiff.data.recipe import DatasetRecipe
from moldiff.data.sdf_dataset import FoundVocabWriter, drop_hydrogens, flat_smiles
from moldiff.data.source import source_fingerprint
from moldiff.data.splits import DEFAULT_SPLIT_FRACTIONS, check_fractions, split_by_group
from moldiff.utils.parallel import worker_map

RECIPE_VERSION = 2  # 2: the build report records the summary file like every recipe (path, size, mtime, SHA-256)
DEFAULT_N_CONFORMERS = 5
SUMMARY_FILE = "summary_drugs.json"
#: name -> (key in a GEOM conformer dict, unit)
PROPERTIES = {
    "totalenergy": ("totalenergy", "Hartree"),
    "relativeenergy": ("relativeenergy", "kcal/mol"),
    "boltzmannweight": ("boltzmannweight", ""),
}


def summary_path(path: str | os.PathLike) -> Path:
    """``summary_drugs.json`` from a ``rdkit_folder`` or from the path of the JSON itself.

    Raises:
        FileNotFoundError: naming what was looked for.
    """
    p = Path(str(path)).expanduser()
    if p.is_dir():
        s = p / SUMMARY_FILE
        if not s.exists():
            raise FileNotFoundError(
                f"GEOM: {p} has no {SUMMARY_FILE}; data.path must be GEOM's rdkit_folder or its {SUMMARY_FILE}"
            )
        return s
    if not p.exists():
        raise FileNotFoundError(f"GEOM: {p} not found; data.path must be GEOM's rdkit_folder or its {SUMMARY_FILE}")
    return p


def geom_cache_name(
    limit: int | None = None, n_conformers: int = DEFAULT_N_CONFORMERS, heavy_atoms_only: bool = False
) -> str:
    """``geom`` with ``_first<limit>``, ``_c<n>`` (n != 5) and ``_noH`` suffixes as applicable."""
    name = "geom"
    if limit:
        name += f"_first{int(limit)}"
    if int(n_conformers) != DEFAULT_N_CONFORMERS:
        name += f"_c{int(n_conformers)}"
    return name + ("_noH" if heavy_atoms_only else "")


def geom_options(
    n_conformers: int = DEFAULT_N_CONFORMERS,
    limit: int | None = None,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    seed: int = 0,
    heavy_atoms_only: bool = False,
    strict: bool = False,
) -> dict[str, Any]:
    """The options that shape a GEOM cache's content (recorded in its report)."""
    return {
        "n_conformers": int(n_conformers),
        "limit": int(limit) if limit else None,
        "split_fractions": [float(x) for x in split_fractions],
        "seed": int(seed),
        "heavy_atoms_only": bool(heavy_atoms_only),
        "strict": bool(strict),
    }


def geom_source_file(path: str | os.PathLike) -> Path:
    """The file a GEOM cache is checked against: ``summary_drugs.json`` (``path`` itself if there is none)."""
    try:
        return summary_path(path)
    except FileNotFoundError:
        return Path(str(path)).expanduser()


def _conformer_sort_key(conf: dict) -> tuple:
    e = conf.get("totalenergy")
    w = conf.get("boltzmannweight")
    e_ok = isinstance(e, (int, float)) and math.isfinite(e)
    w_ok = isinstance(w, (int, float)) and math.isfinite(w)
    return (0 if e_ok else 1, float(e) if e_ok else 0.0, -float(w) if w_ok else 0.0)


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v if math.isfinite(v) else float("nan")


def load_geom_molecule(task: tuple[str, str | None, int, bool]) -> dict[str, Any]:
    """Read one GEOM pickle and convert its lowest-energy conformers.

    Args:
        task: ``(smiles, absolute pickle path or None, n_conformers, heavy_atoms_only)``.

    Returns:
        dict with ``status`` (``ok``, ``no_pickle_path``, ``missing``, ``bad``, ``no_conformers``),
        ``smiles``, ``file``, ``error``, ``confs`` (list of ``(Molecule, canonical SMILES, props [3])``),
        ``conf_errors`` (dropped conformers) and ``disagree`` (kept conformers whose graph differs
        from the summary SMILES).
    """
    from rdkit import Chem, RDLogger

    from moldiff.chem.rdkit_conv import from_rdkit

    RDLogger.DisableLog("rdApp.*")
    smiles, file, n_conf, heavy = task
    res: dict[str, Any] = {"status": "ok", "smiles": smiles, "file": file, "error": "", "confs": [],
                           "conf_errors": 0, "disagree": 0}
    if file is None:
        res["status"] = "no_pickle_path"
        return res
    if not os.path.exists(file):
        res["status"] = "missing"
        return res
    try:
        with open(file, "rb") as fh:
            record = pickle.load(fh)
        conformers = list(record["conformers"])
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt pickles raise many types
        res["status"] = "bad"
        res["error"] = f"{type(exc).__name__}: {exc}"[:200]
        return res
    if not conformers:
        res["status"] = "no_conformers"
        return res
    ref = Chem.MolFromSmiles(smiles)
    ref_smi = flat_smiles(Chem.AddHs(ref)) if ref is not None else None
    for k, conf in enumerate(sorted(conformers, key=_conformer_sort_key)[:n_conf]):
        try:
            rd = conf["rd_mol"]
            mol = from_rdkit(rd, name=f"{smiles}#{k}", kekulize=True)
            mol.check()
            smi = flat_smiles(rd)
            mol.props = {}
            if heavy:
                mol = drop_hydrogens(mol)
        except Exception:  # noqa: BLE001 - kekulization or geometry failure: drop the conformer
            res["conf_errors"] += 1
            continue
        if ref_smi is not None and smi != ref_smi:
            res["disagree"] += 1
        props = np.array([_num(conf.get(key)) for key, _ in PROPERTIES.values()], dtype=np.float64)
        res["confs"].append((mol, smi, props))
    return res


def _read_summary(summary: Path, limit: int | None) -> list[tuple[str, str | None]]:
    with open(summary) as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"GEOM: {summary} is not a JSON object mapping SMILES to entries")
    root = summary.parent
    out = []
    for smiles, entry in data.items():
        rel = entry.get("pickle_path") if isinstance(entry, dict) else None
        out.append((smiles, str(root / rel) if rel else None))
        if limit and len(out) >= limit:
            break
    return out


def _new_report(source: dict[str, Any]) -> dict[str, Any]:
    """A GEOM build report with every count at zero."""
    return {
        "source": source, "input_molecules": 0, "kept_molecules": 0, "kept_conformers": 0,
        "no_pickle_path": 0, "missing_pickles": 0, "bad_pickles": 0, "no_conformers": 0,
        "dropped_conformers": 0, "smiles_disagree_conformers": 0, "problem_files": [],
    }


def _count_problem(res: dict[str, Any], report: dict[str, Any], strict: bool) -> None:
    """Count a molecule whose pickle gave nothing, and list its file (``strict``: raise, naming the file)."""
    status = res["status"]
    if status == "no_pickle_path":
        report["no_pickle_path"] += 1
        return
    if status == "missing":
        if strict:
            raise FileNotFoundError(f"GEOM: pickle not found: {res['file']} (molecule {res['smiles']})")
        report["missing_pickles"] += 1
    elif status == "bad":
        if strict:
            raise ValueError(f"GEOM: cannot read pickle {res['file']}: {res['error']}")
        report["bad_pickles"] += 1
    elif status == "no_conformers":
        if strict:
            raise ValueError(f"GEOM: pickle {res['file']} has no conformers")
        report["no_conformers"] += 1
    if len(report["problem_files"]) < 100:
        detail = f" ({res['error']})" if res["error"] else ""
        report["problem_files"].append(f"{status}: {res['file']}{detail}")


def _add_conformers(res: dict[str, Any], writer: FoundVocabWriter, groups: list[str], report: dict[str, Any]) -> None:
    """Write the kept conformers of one molecule (grouped under its SMILES) and count them."""
    report["dropped_conformers"] += res["conf_errors"]
    report["smiles_disagree_conformers"] += res["disagree"]
    if not res["confs"]:
        return
    report["kept_molecules"] += 1
    for k, (mol, smi, props) in enumerate(res["confs"]):
        writer.add(mol, smi, props, key=f"{res['smiles']}#{k}")
        groups.append(res["smiles"])
    report["kept_conformers"] += len(res["confs"])


def _write_molecules(
    entries: Sequence[tuple[str, str | None]],
    writer: FoundVocabWriter,
    report: dict[str, Any],
    n_conformers: int,
    heavy_atoms_only: bool,
    strict: bool,
    workers: int,
    progress: bool,
) -> list[str]:
    """Read the pickles of ``entries`` in ``workers`` processes into ``writer``, counting in ``report``.

    Returns:
        The molecule (summary SMILES) of each written conformer, for the split.
    """
    tasks: Iterable = ((smi, file, n_conformers, bool(heavy_atoms_only)) for smi, file in entries)
    groups: list[str] = []
    with worker_map(load_geom_molecule, tasks, workers, chunksize=8) as results:
        for res in tqdm(results, total=len(entries), desc="geom: reading pickles", disable=not progress, mininterval=2):
            report["input_molecules"] += 1
            if res["status"] != "ok":
                _count_problem(res, report, strict)
                continue
            _add_conformers(res, writer, groups, report)
    return groups


def prepare_geom(
    out: str | Path,
    path: str | os.PathLike,
    n_conformers: int = DEFAULT_N_CONFORMERS,
    limit: int | None = None,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    seed: int = 0,
    heavy_atoms_only: bool = False,
    strict: bool = False,
    workers: int = 1,
    progress: bool = True,
) -> MolCache:
    """Stream a local GEOM-Drugs ``rdkit_folder`` into the cache at ``out``.

    Args:
        out: cache folder.
        path: GEOM's ``rdkit_folder`` or its ``summary_drugs.json``.
        n_conformers: lowest-energy conformers kept per molecule.
        limit: only the first ``limit`` molecules of the summary.
        split_fractions: ``[train, val, test]`` fractions of molecules.
        seed: split seed.
        heavy_atoms_only: drop hydrogens.
        strict: raise on a missing/unreadable pickle instead of counting it.
        workers: processes reading pickles.
        progress: show a progress bar.

    Raises:
        FileNotFoundError: no summary; or, with ``strict``, a missing pickle (named).
        ValueError: bad options; nothing usable; or, with ``strict``, an unreadable pickle (named).
    """
    n_conformers = int(n_conformers)
    if n_conformers < 1:
        raise ValueError(f"GEOM: n_conformers must be >= 1, got {n_conformers}")
    check_fractions(split_fractions)
    summary = summary_path(path).resolve()
    options = geom_options(n_conformers, limit, split_fractions, seed, heavy_atoms_only, strict)
    source = source_fingerprint(options, summary)
    entries = _read_summary(summary, int(limit) if limit else None)
    units = {k: u for k, (_, u) in PROPERTIES.items()}
    writer = FoundVocabWriter(out, geom_cache_name(limit, n_conformers, heavy_atoms_only), RECIPE_VERSION,
                              list(PROPERTIES), units)
    report = _new_report(source)
    groups = _write_molecules(entries, writer, report, n_conformers, heavy_atoms_only, strict, workers, progress)
    if len(writer) == 0:
        raise ValueError(f"GEOM: no usable conformers from {summary} ({report['input_molecules']} molecules read; "
                         f"{report['missing_pickles']} missing and {report['bad_pickles']} unreadable pickles)")
    split, half = split_by_group(groups, split_fractions, seed)
    report["policy"] = (
        f"the {n_conformers} lowest-energy conformers per molecule; missing/unreadable pickles are counted and "
        "skipped; conformers whose graph differs from the summary SMILES are kept; split by molecule"
    )
    return writer.finish(split, half, report)


#: GEOM-Drugs' recipe: rebuilt when the options or the content of ``summary_drugs.json`` change.
RECIPE = DatasetRecipe(
    name="geom",
    version=RECIPE_VERSION,
    prepare=prepare_geom,
    cache_name=geom_cache_name,
    content_options=geom_options,
    source_file=geom_source_file,
    requires_path=True,
)
