"""QM9 from the ``qm9pack`` PyPI package: bonds and formal charges perceived from the DFT geometry.

Recipe (``RECIPE_VERSION``; bump it when anything here changes and caches rebuild):
  * coordinates/elements from ``XYZ_Ang``/``Elements``; 130,831 molecules;
  * bonds and formal charges from RDKit ``rdDetermineBonds.DetermineBonds(charge=0)``, retried
    with ``useHueckel=True`` when that fails; kekulized bond orders;
  * a molecule whose perception fails both ways is dropped (counted in the report); one whose
    perceived graph disagrees with the given SMILES (stereo removed) is *kept* (the geometry is
    the ground truth for 3D generation) and counted;
  * deterministic EDM-sized splits from a seeded permutation of all 130,831 molecules (before
    any drop): 100,000 train / 17,748 val / 13,083 test; train halves (50,000 each) for the
    conditional protocol (``train_a``: property predictor, ``train_b``: generator).
"""

from __future__ import annotations

import ast
import csv
import importlib.util
import itertools
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from moldiff.data.cache import CacheWriter, MolCache
from moldiff.data.recipe import DatasetRecipe
from moldiff.data.splits import assign_splits
from moldiff.data.vocab import QM9_VOCAB
from moldiff.utils.parallel import worker_map

RECIPE_VERSION = 2
NUM_MOLECULES = 130_831
SPLIT_SIZES = (100_000, 17_748, 13_083)
SPLIT_SEED = 0
HARTREE_TO_MEV = 27211.386246

#: name -> (csv column, factor, unit)
PROPERTIES = {
    "mu": ("Dipole_debye", 1.0, "D"),
    "alpha": ("Polarizability_bohr3", 1.0, "bohr^3"),
    "homo": ("HOMO_au", HARTREE_TO_MEV, "meV"),
    "lumo": ("LUMO_au", HARTREE_TO_MEV, "meV"),
    "gap": ("HOMO_LUMO_gap_au", HARTREE_TO_MEV, "meV"),
    "r2": ("R2_bohr2", 1.0, "bohr^2"),
    "zpve": ("ZPVE_au", HARTREE_TO_MEV, "meV"),
    "U0": ("InternalEnergy_0K_au", HARTREE_TO_MEV, "meV"),
    "U": ("InternalEnergy_298K_au", HARTREE_TO_MEV, "meV"),
    "H": ("Enthalphy_298K_au", HARTREE_TO_MEV, "meV"),
    "G": ("GibbsFreeEnergy_298K_au", HARTREE_TO_MEV, "meV"),
    "Cv": ("Heatcapacity_Cv_cal_mol_K", 1.0, "cal/mol/K"),
}


def qm9pack_files() -> list[Path]:
    """The three CSV parts shipped by ``qm9pack``.

    Raises:
        ModuleNotFoundError: with the install command, if ``qm9pack`` is missing.
    """
    spec = importlib.util.find_spec("qm9pack")  # located, not imported: qm9pack imports pkg_resources
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "QM9 comes from the PyPI package 'qm9pack', which is not installed: "
            "pip install 'qm9pack>=1.0.3' (or pip install 'moldiff[qm9]')"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    files = [folder / f"qm9_part{k}.csv" for k in (1, 2, 3)]
    for f in files:
        if not f.exists():
            raise FileNotFoundError(f"qm9pack is installed but {f} is missing; reinstall qm9pack")
    return files


def iter_rows(limit: int | None = None) -> Iterator[dict]:
    """The rows of the qm9pack CSV parts (column name -> text) in file order; only the first ``limit`` if given."""
    csv.field_size_limit(1 << 30)
    files = qm9pack_files()

    def rows() -> Iterator[dict]:
        for f in files:
            with open(f, newline="") as fh:
                yield from csv.DictReader(fh)

    return itertools.islice(rows(), limit) if limit else rows()


def _process(row: dict) -> tuple:
    """One qm9pack row -> ``(status, Molecule or None, canonical SMILES, props, key, agrees with the SMILES)``.

    ``status``: ``ok`` (plain bond perception), ``hueckel`` (the Hueckel retry) or ``failed``.
    """
    from rdkit import Chem, RDLogger
    from rdkit.Geometry import Point3D

    from moldiff.chem.rdkit_conv import canonical_smiles, determine_bonds, from_rdkit

    RDLogger.DisableLog("rdApp.*")
    key = row["XYZ_file"].replace(".xyz", "")
    elements = ast.literal_eval(row["Elements"])
    xyz = np.array(ast.literal_eval(row["XYZ_Ang"]), dtype=np.float64)
    props = np.array([float(row[col]) * f for col, f, _ in PROPERTIES.values()], dtype=np.float64)
    rw = Chem.RWMol()
    for e in elements:
        rw.AddAtom(Chem.Atom(e))
    conf = Chem.Conformer(len(elements))
    for k, (x, y, z) in enumerate(xyz):
        conf.SetAtomPosition(k, Point3D(x, y, z))
    base = rw.GetMol()
    base.AddConformer(conf, assignId=True)
    mol, hueckel = determine_bonds(base, charge=0, sanitize=True)
    if mol is None:
        return "failed", None, "", props, key, False
    smi = canonical_smiles(mol) or ""
    ref = Chem.MolFromSmiles(row["SMILES"])
    ref_smi = Chem.MolToSmiles(ref, isomericSmiles=False) if ref is not None else ""
    out = from_rdkit(mol, name=key, kekulize=True)
    out.props = {}
    return "hueckel" if hueckel else "ok", out, smi, props, key, smi == ref_smi


def split_assignment(
    n: int = NUM_MOLECULES, sizes: tuple[int, int, int] = SPLIT_SIZES, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic ``(split, half)`` arrays over ``n`` molecules in file order.

    ``sizes`` (train, val, test) for the full set; a subset (tests, debugging) keeps their proportions.
    """
    n_train, n_val, _ = sizes
    if n != sum(sizes):
        n_train = int(round(n * sizes[0] / sum(sizes)))
        n_val = int(round(n * sizes[1] / sum(sizes)))
    return assign_splits(n, n_train, n_val, seed)


def prepare_qm9(out: str | Path, limit: int | None = None, workers: int = 2, progress: bool = True) -> MolCache:
    """Stream ``qm9pack`` through bond perception into the cache at ``out``.

    Args:
        out: cache folder.
        limit: only the first ``limit`` molecules (splits keep EDM proportions).
        workers: processes for bond perception.
    """
    total = min(limit or NUM_MOLECULES, NUM_MOLECULES)
    split_all, half_all = split_assignment(total)
    units = {k: u for k, (_, _, u) in PROPERTIES.items()}
    writer = CacheWriter(out, "qm9" if limit is None else f"qm9_first{limit}", RECIPE_VERSION, QM9_VOCAB, list(PROPERTIES), units)
    keep = []
    report = {"input_molecules": 0, "perceived_plain": 0, "perceived_hueckel": 0, "failed": 0,
              "smiles_disagree": 0, "dropped": 0, "failed_keys": []}
    with worker_map(_process, iter_rows(limit), workers, chunksize=64) as results:
        for k, res in enumerate(tqdm(results, total=total, desc="qm9: perceiving bonds", disable=not progress, mininterval=2)):
            report["input_molecules"] += 1
            status, mol, smi, props, key, agrees = res
            if status == "failed":
                report["failed"] += 1
                report["dropped"] += 1
                report["failed_keys"].append(key)
                continue
            report["perceived_plain" if status == "ok" else "perceived_hueckel"] += 1
            report["smiles_disagree"] += int(not agrees)
            writer.add(mol, smi, props, key)
            keep.append(k)
    keep = np.array(keep, dtype=np.int64)
    report["policy"] = ("molecules whose bonds cannot be perceived are dropped; those whose perceived "
                        "graph differs from the given SMILES are kept (geometry is ground truth)")
    return writer.finish(split_all[keep], half_all[keep], report)


#: QM9's recipe: the cache is ``qm9`` (``qm9_first<limit>``); only the version decides staleness.
RECIPE = DatasetRecipe(name="qm9", version=RECIPE_VERSION, prepare=prepare_qm9)
