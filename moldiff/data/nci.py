"""A drug-like 3D dataset made from the NCI SMILES that RDKit ships, built through the SDF path.

Source: ``<rdkit.RDConfig.RDDataDir>/NCI/first_5K.smi`` (4,999 lines ``SMILES<TAB>id``; the first
5,000 entries of the NCI open database as RDKit distributes them). No download is needed.

Recipe (``RECIPE_VERSION``; bump it when anything here changes and caches rebuild):
  * parse each SMILES; keep its largest fragment (by heavy atoms; salts and solvents stripped);
  * drop it when it has an element outside ``DRUG_LIKE_ELEMENTS``, radicals, fewer than
    ``MIN_ATOMS`` or more than ``MAX_ATOMS`` atoms counting explicit hydrogens, or repeats an
    earlier molecule (same canonical isomeric SMILES);
  * add hydrogens, embed ``n_conformers`` conformers with ETKDGv3 (seed derived from ``seed`` and
    the line number, so the result does not depend on ``workers``; one retry from random
    coordinates), MMFF94-optimise them (up to 2,000 iterations); drop the molecule when embedding
    fails or MMFF has no parameters for it;
  * write them, in file order, to ``<data root>/nci_sdf/nci_first5k[_first<limit>][_c<n>].sdf``
    (title ``NCI<id>``; SD tags ``nci_id``, ``smiles``, ``conformer``, ``mmff_energy`` in kcal/mol,
    ``mmff_converged``) and build the cache from that file with :mod:`moldiff.data.sdf_dataset`
    (its vocabularies, seeded 80/10/10 split by molecule, ``mmff_energy`` as a property).

``limit`` stops after that many *kept* molecules (in file order). The build report's ``nci``
entry says how many SMILES were dropped at each step and why.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from tqdm import tqdm

from moldiff.data.cache import MolCache
from moldiff.data.recipe import DatasetRecipe
from moldiff.data.sdf_dataset import prepare_sdf
from moldiff.data.source import source_fingerprint
from moldiff.data.splits import DEFAULT_SPLIT_FRACTIONS, check_fractions
from moldiff.utils.io import atomic_write
from moldiff.utils.parallel import worker_map

RECIPE_VERSION = 1
DRUG_LIKE_ELEMENTS = ("H", "C", "N", "O", "F", "P", "S", "Cl", "Br", "I")
MIN_ATOMS, MAX_ATOMS = 20, 100
MMFF_MAX_ITERS = 2000
DROP_REASONS = (
    "unparsable", "elements", "radicals", "too_few_atoms", "too_many_atoms", "duplicate",
    "embedding_failed", "no_mmff_params",
)


def nci_smiles_file() -> Path:
    """RDKit's ``Data/NCI/first_5K.smi``.

    Raises:
        FileNotFoundError: if this RDKit build does not ship it.
    """
    from rdkit import RDConfig

    f = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
    if not f.exists():
        raise FileNotFoundError(f"NCI SMILES not found at {f} (this RDKit installation does not ship Data/NCI)")
    return f


def nci_cache_name(limit: int | None = None, n_conformers: int = 1) -> str:
    """``nci`` with ``_first<limit>`` and ``_c<n>`` (n != 1) suffixes as applicable."""
    name = "nci" + (f"_first{int(limit)}" if limit else "")
    return name + (f"_c{int(n_conformers)}" if int(n_conformers) != 1 else "")


def nci_options(
    limit: int | None = None,
    n_conformers: int = 1,
    seed: int = 0,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
) -> dict[str, Any]:
    """The options that shape an NCI cache's content (``workers`` does not)."""
    return {
        "limit": int(limit) if limit else None,
        "n_conformers": int(n_conformers),
        "seed": int(seed),
        "split_fractions": [float(x) for x in split_fractions],
    }


def select_candidates(lines: Sequence[str], counts: dict[str, int]) -> Iterator[tuple[int, str, str]]:
    """Filter NCI SMILES lines; yields ``(line number, nci id, canonical SMILES of the kept fragment)``.

    ``counts`` receives the drop reasons (keys of ``DROP_REASONS``) and ``salts_stripped``.
    """
    from rdkit import Chem, rdBase

    allowed = set(DRUG_LIKE_ELEMENTS)
    seen: set[str] = set()
    for line_no, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        smi, nci_id = parts[0], (parts[1] if len(parts) > 1 else str(line_no))
        with rdBase.BlockLogs():
            mol = Chem.MolFromSmiles(smi)
        if mol is None or mol.GetNumAtoms() == 0:
            counts["unparsable"] += 1
            continue
        frags = Chem.GetMolFrags(mol, asMols=True)
        if len(frags) > 1:
            counts["salts_stripped"] += 1
            mol = max(frags, key=lambda m: (m.GetNumHeavyAtoms(), Chem.MolToSmiles(m)))
        if any(a.GetSymbol() not in allowed for a in mol.GetAtoms()):
            counts["elements"] += 1
            continue
        if any(a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
            counts["radicals"] += 1
            continue
        n = mol.GetNumAtoms() + sum(a.GetTotalNumHs() for a in mol.GetAtoms())
        if n < MIN_ATOMS:
            counts["too_few_atoms"] += 1
            continue
        if n > MAX_ATOMS:
            counts["too_many_atoms"] += 1
            continue
        can = Chem.MolToSmiles(mol)
        if can in seen:
            counts["duplicate"] += 1
            continue
        seen.add(can)
        yield line_no, nci_id, can


def embed_molecule(task: tuple[int, str, str, int, int]) -> dict[str, Any]:
    """ETKDG-embed and MMFF-optimise one molecule; returns its SDF records as text.

    Args:
        task: ``(line number, nci id, SMILES, n_conformers, seed)``.

    Returns:
        dict with ``status`` (``ok``, ``embedding_failed``, ``no_mmff_params``), ``sdf`` (text),
        ``conformers``, ``not_converged``, ``num_atoms``.
    """
    import io

    from rdkit import Chem, rdBase
    from rdkit.Chem import AllChem, rdDistGeom

    line_no, nci_id, smi, n_conf, seed = task
    res: dict[str, Any] = {"status": "ok", "sdf": "", "conformers": 0, "not_converged": 0, "num_atoms": 0}
    with rdBase.BlockLogs():
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        res["num_atoms"] = mol.GetNumAtoms()
        conf_ids: list[int] = []
        for random_coords in (False, True):
            params = rdDistGeom.ETKDGv3()
            params.randomSeed = (int(seed) * 1_000_003 + line_no) % (2**31 - 1)
            params.numThreads = 1
            params.useRandomCoords = random_coords
            if n_conf > 1:
                params.pruneRmsThresh = 0.5
            conf_ids = list(rdDistGeom.EmbedMultipleConfs(mol, numConfs=n_conf, params=params))
            if conf_ids:
                break
        if not conf_ids:
            res["status"] = "embedding_failed"
            return res
        if not AllChem.MMFFHasAllMoleculeParams(mol):
            res["status"] = "no_mmff_params"
            return res
        results = AllChem.MMFFOptimizeMoleculeConfs(mol, numThreads=1, maxIters=MMFF_MAX_ITERS)
        buf = io.StringIO()
        writer = Chem.SDWriter(buf)
        writer.SetKekulize(True)
        for k, (cid, (not_converged, energy)) in enumerate(zip(conf_ids, results)):
            mol.SetProp("_Name", f"NCI{nci_id}")
            mol.SetProp("nci_id", str(nci_id))
            mol.SetProp("smiles", smi)
            mol.SetIntProp("conformer", k)
            mol.SetProp("mmff_energy", f"{energy:.4f}")
            mol.SetIntProp("mmff_converged", int(not_converged == 0))
            writer.write(mol, confId=cid)
            res["not_converged"] += int(not_converged != 0)
        writer.close()
    res["sdf"] = buf.getvalue()
    res["conformers"] = len(conf_ids)
    return res


def nci_sdf_path(out: str | Path) -> Path:
    """Where the SDF of the cache ``out`` is written: ``<data root>/nci_sdf/nci_first5k<suffix>.sdf``."""
    out = Path(out)
    suffix = out.name[len("nci"):] if out.name.startswith("nci") else f"_{out.name}"
    return out.parent / "nci_sdf" / f"nci_first5k{suffix}.sdf"


def _checked_options(
    n_conformers: int, limit: int | None, split_fractions: Sequence[float]
) -> tuple[int, int | None]:
    """``(n_conformers, limit)`` as integers (``limit`` None: no limit); raises ``ValueError`` on a bad option."""
    n_conformers = int(n_conformers)
    if n_conformers < 1:
        raise ValueError(f"NCI: n_conformers must be >= 1, got {n_conformers}")
    if limit is not None and int(limit) < 1:
        raise ValueError(f"NCI: limit must be a positive number of molecules or null, got {limit}")
    check_fractions(split_fractions)
    return n_conformers, int(limit) if limit else None


def _embed_to_sdf(
    candidates: Sequence[tuple[int, str, str]],
    src: Path,
    sdf_path: Path,
    counts: dict[str, int],
    limit: int | None,
    n_conformers: int,
    seed: int,
    workers: int,
    progress: bool,
) -> dict[str, Any]:
    """Embed ``candidates`` in ``workers`` processes and write the kept molecules, in order, to ``sdf_path``.

    Args:
        candidates: ``(line number, nci id, SMILES)`` from :func:`select_candidates`.
        src: the SMILES file they come from (named in the error).
        sdf_path: the SDF written.
        counts: receives the failures (``embedding_failed``, ``no_mmff_params``).
        limit: stop after this many kept molecules (None: all).
        n_conformers: conformers per molecule.
        seed: embedding seed.
        workers: embedding processes.
        progress: show a progress bar.

    Returns:
        ``tried``, ``kept``, ``conformers``, ``not_converged`` and ``atoms`` (atoms of each kept molecule).

    Raises:
        ValueError: if no molecule could be embedded.
    """
    tasks = ((ln, nid, smi, n_conformers, int(seed)) for ln, nid, smi in candidates)
    kept = conformers = not_converged = tried = 0
    atoms: list[int] = []
    bar = tqdm(total=limit or len(candidates), desc="nci: embedding", disable=not progress, mininterval=2,
               unit="mol")
    try:
        with worker_map(embed_molecule, tasks, workers, chunksize=4) as results, atomic_write(sdf_path) as fh:
            for res in results:
                tried += 1
                if res["status"] != "ok":
                    counts[res["status"]] += 1
                else:
                    fh.write(res["sdf"])
                    kept += 1
                    conformers += res["conformers"]
                    not_converged += res["not_converged"]
                    atoms.append(res["num_atoms"])
                if limit is None or res["status"] == "ok":
                    bar.update(1)
                if limit is not None and kept >= limit:
                    break
            if kept == 0:
                raise ValueError(f"NCI: no molecule could be embedded from {src}")
    finally:
        bar.close()
    return {"tried": tried, "kept": kept, "conformers": conformers, "not_converged": not_converged, "atoms": atoms}


def _nci_report(
    src: Path,
    lines: Sequence[str],
    candidates: Sequence[tuple[int, str, str]],
    counts: dict[str, int],
    embedded: dict[str, Any],
    sdf_path: Path,
    embed_s: float,
    workers: int,
) -> dict[str, Any]:
    """The build report's ``nci`` entry: what was read, dropped (and why), embedded and kept."""
    import rdkit

    return {
        "smiles_file": str(src),
        "input_smiles": sum(1 for ln in lines if ln.strip()),
        "candidates": len(candidates),
        "embedded_tried": embedded["tried"],
        "not_tried_beyond_limit": len(candidates) - embedded["tried"],
        "kept_molecules": embedded["kept"],
        "conformers": embedded["conformers"],
        "dropped": {k: counts[k] for k in DROP_REASONS},
        "salts_stripped": counts["salts_stripped"],
        "mmff_not_converged": embedded["not_converged"],
        "num_atoms_range": [min(embedded["atoms"]), max(embedded["atoms"])],
        "sdf": str(sdf_path.resolve()),
        "embed_seconds": round(embed_s, 1),
        "workers": workers,
        "policy": (
            f"largest fragment; elements {' '.join(DRUG_LIKE_ELEMENTS)}; {MIN_ATOMS}-{MAX_ATOMS} atoms with H; "
            "no radicals or duplicates; ETKDGv3 + MMFF94"
        ),
        "rdkit_version": rdkit.__version__,
    }


def prepare_nci(
    out: str | Path,
    limit: int | None = None,
    n_conformers: int = 1,
    workers: int = 2,
    seed: int = 0,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    progress: bool = True,
) -> MolCache:
    """Embed RDKit's NCI SMILES into an SDF and build the cache at ``out`` from it.

    Args:
        out: cache folder (the SDF goes to ``<out's parent>/nci_sdf/``).
        limit: stop after this many kept molecules (default: all usable).
        n_conformers: conformers per molecule.
        workers: embedding processes (the result does not depend on it).
        seed: embedding and split seed.
        split_fractions: ``[train, val, test]`` fractions of molecules.
        progress: show progress bars.
    """
    t0 = time.time()
    n_conformers, limit = _checked_options(n_conformers, limit, split_fractions)
    src = nci_smiles_file()
    lines = src.read_text().splitlines()
    counts = {k: 0 for k in DROP_REASONS} | {"salts_stripped": 0}
    candidates = list(select_candidates(lines, counts))
    workers = max(1, int(workers))
    sdf_path = nci_sdf_path(out)
    embedded = _embed_to_sdf(candidates, src, sdf_path, counts, limit, n_conformers, seed, workers, progress)
    report = _nci_report(src, lines, candidates, counts, embedded, sdf_path, time.time() - t0, workers)
    source = source_fingerprint(nci_options(limit, n_conformers, seed, split_fractions), src)
    return prepare_sdf(
        out,
        sdf_path,
        properties=["mmff_energy"],
        split_fractions=split_fractions,
        seed=seed,
        name=Path(out).name,
        recipe_version=RECIPE_VERSION,
        prop_units={"mmff_energy": "kcal/mol"},
        source=source,
        extra_report={"nci": report},
        progress=progress,
    )


#: The NCI recipe: rebuilt when the options change (the SMILES file is recorded, not checked:
#: finding it needs RDKit, and staleness is checked without RDKit).
RECIPE = DatasetRecipe(
    name="nci", version=RECIPE_VERSION, prepare=prepare_nci, cache_name=nci_cache_name, content_options=nci_options
)
