"""Fixtures for the dataset tests: a conformer SDF, a tiny GEOM ``rdkit_folder``, hand-made molecules.

``tests/fixtures/data_conformers.sdf`` holds 7 small molecules x 2 ETKDG + MMFF conformers (RDKit,
``randomSeed=42+i``), SD tags ``smiles`` and ``energy`` (MMFF, kcal/mol): ethanol, phenol, acetate
(-1), methylammonium (+1), isonicotinamide, trifluorotoluene, 2-chlorothiophene.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from moldiff.chem.molecule import Molecule

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CONFORMER_SDF = FIXTURES / "data_conformers.sdf"

#: GEOM fixture molecules: SMILES -> number of conformers in its pickle.
GEOM_MOLECULES = {
    "CC(=O)Oc1ccccc1C(=O)O": 7,  # aspirin
    "CC(=O)Nc1ccc(O)cc1": 6,  # paracetamol
    "Cn1cnc2c1c(=O)n(C)c(=O)n2C": 3,  # caffeine
    "CC(C)Cc1ccc(C(C)C(=O)O)cc1": 6,  # ibuprofen
}
KCAL_PER_HARTREE = 627.509


@pytest.fixture(scope="session")
def geom_molecules() -> dict[str, int]:
    return dict(GEOM_MOLECULES)


@pytest.fixture(scope="session")
def conformer_sdf() -> Path:
    assert CONFORMER_SDF.exists(), CONFORMER_SDF
    return CONFORMER_SDF


def _geom_pickle(smiles: str, n_conf: int, seed: int) -> dict:
    """A GEOM-style record: ``conformers`` with one-conformer ``rd_mol`` and energies/weights."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    cids = list(AllChem.EmbedMultipleConfs(mol, n_conf, randomSeed=seed))
    energies = [e for _, e in AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=200)]
    e_min = min(energies)
    weights = np.exp(-(np.array(energies) - e_min) / 0.593)
    weights /= weights.sum()
    conformers = []
    for k, cid in enumerate(cids):
        rd = Chem.Mol(mol, confId=cid)  # one conformer, explicit H, aromatic flags as GEOM has them
        conformers.append({
            "geom_id": 1000 * seed + k,
            "rd_mol": rd,
            "totalenergy": -50.0 + energies[k] / KCAL_PER_HARTREE,  # Hartree
            "relativeenergy": energies[k] - e_min,  # kcal/mol
            "boltzmannweight": float(weights[k]),
            "degeneracy": 1,
        })
    # GEOM lists conformers in no particular energy order: shuffle deterministically
    order = np.random.default_rng(seed).permutation(len(conformers))
    return {
        "conformers": [conformers[i] for i in order],
        "smiles": smiles,
        "charge": 0,
        "uniqueconfs": len(conformers),
        "totalconfs": len(conformers),
        "lowestenergy": -50.0 + e_min / KCAL_PER_HARTREE,
        "temperature": 298.15,
    }


@pytest.fixture(scope="session")
def geom_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ``rdkit_folder``: 4 good molecules, one missing pickle, one corrupt pickle, one entry without a path."""
    root = tmp_path_factory.mktemp("geom") / "rdkit_folder"
    (root / "drugs").mkdir(parents=True)
    summary: dict = {}
    for seed, (smi, n) in enumerate(GEOM_MOLECULES.items()):
        rel = f"drugs/{smi.replace('/', '_')}.pickle"
        with open(root / rel, "wb") as fh:
            pickle.dump(_geom_pickle(smi, n, seed), fh)
        summary[smi] = {"charge": 0, "uniqueconfs": n, "totalconfs": n, "pickle_path": rel, "sars_cov_one_cl_pro": 0}
    summary["CCN(CC)CCOC(=O)c1ccc(N)cc1"] = {"charge": 0, "uniqueconfs": 4, "pickle_path": "drugs/missing.pickle"}
    (root / "drugs" / "corrupt.pickle").write_bytes(b"\x80\x04not a pickle at all")
    summary["OC(=O)c1ccccc1O"] = {"charge": 0, "uniqueconfs": 2, "pickle_path": "drugs/corrupt.pickle"}
    summary["CCCCCC"] = {"charge": 0, "uniqueconfs": 1}  # GEOM has entries without pickle_path
    (root / "summary_drugs.json").write_text(json.dumps(summary))
    return root


@pytest.fixture
def small_molecules() -> list[Molecule]:
    """Hand-made kekulized molecules with charges: water, methane, ethene, hydroxide, ammonium, HCN."""
    water = Molecule(
        ["O", "H", "H"], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], bonds=[[0, 1, 1], [0, 2, 1]], name="water"
    )
    methane = Molecule(
        ["C", "H", "H", "H", "H"],
        [[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]],
        bonds=[[0, k, 1] for k in range(1, 5)],
        name="methane",
    )
    ethene = Molecule(
        ["C", "C", "H", "H", "H", "H"],
        [[0, 0, 0.67], [0, 0, -0.67], [0, 0.92, 1.23], [0, -0.92, 1.23], [0, 0.92, -1.23], [0, -0.92, -1.23]],
        bonds=[[0, 1, 2], [0, 2, 1], [0, 3, 1], [1, 4, 1], [1, 5, 1]],
        name="ethene",
    )
    hydroxide = Molecule(["O", "H"], [[0, 0, 0], [0.97, 0, 0]], charges=[-1, 0], bonds=[[0, 1, 1]], name="hydroxide")
    ammonium = Molecule(
        ["N", "H", "H", "H", "H"],
        [[0, 0, 0], [0.59, 0.59, 0.59], [-0.59, -0.59, 0.59], [-0.59, 0.59, -0.59], [0.59, -0.59, -0.59]],
        charges=[1, 0, 0, 0, 0],
        bonds=[[0, k, 1] for k in range(1, 5)],
        name="ammonium",
    )
    hcn = Molecule(["H", "C", "N"], [[0, 0, -1.07], [0, 0, 0], [0, 0, 1.16]], bonds=[[0, 1, 1], [1, 2, 3]], name="hcn")
    return [water, methane, ethene, hydroxide, ammonium, hcn]
