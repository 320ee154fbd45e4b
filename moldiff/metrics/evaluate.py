"""One entry point for the evaluation protocols of docs/metrics.md: :func:`evaluate_molecules`.

Protocols in one result (``protocol_version`` names this file's definitions; bump it whenever a
definition changes, so numbers from different versions are never put side by side):

* strict stability, validity, connectivity, uniqueness, novelty: on each molecule's *own* bonds
  and formal charges (see ``valence.py`` and ``validity.py``). A molecule with more than one atom
  and no bonds at all (e.g. read from XYZ) is scored on bonds inferred from its geometry instead
  -- EDM's distance tables by default (no charges), or RDKit's ``rdDetermineBonds`` (charge 0,
  which also assigns formal charges) -- and the result counts how many molecules used which bonds;
* EDM protocol (``edm.py``): distance-inferred bonds, no charges, for every molecule, so rows
  compare with EDM / GeoLDM tables;
* distribution distances (``distribution.py``) against the reference's test split.

A malformed molecule (no atoms, non-finite coordinates, unknown element) counts as unstable and
invalid in every protocol instead of stopping the evaluation (a diverged sampler must still be
scored); it is counted under ``counts.malformed``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np
from rdkit import Chem, RDLogger

from moldiff.chem.molecule import Molecule
from moldiff.chem.rdkit_conv import determine_bonds, from_rdkit, to_rdkit
from moldiff.metrics.distribution import GeometryStats, distribution_distances, reference_stats
from moldiff.metrics.edm import edm_stability, edm_validity, order_matrix_to_bonds
from moldiff.metrics.valence import graph_to_rdkit, strict_stability
from moldiff.metrics.validity import rdkit_validity, uniqueness_novelty

if TYPE_CHECKING:  # the cache reader imports torch; evaluating a file needs neither
    from moldiff.data.cache import MolCache

PROTOCOL_VERSION = "moldiff-metrics-1"
#: SD tags of ``moldiff-sample`` records: how the last step was decoded, and the force-field relaxation.
DECODING_TAG, DECODE_STATUS_TAG = "moldiff_decoding", "moldiff_decode_status"
RELAX_TAG, RELAX_STATUS_TAG = "moldiff_relax", "moldiff_relax_status"
BondInference = Literal["edm", "rdkit"]
BOND_INFERENCE = ("edm", "rdkit")
_VALENCE_TABLE = "strict (docs/metrics.md: aromatic bonds kekulized, else 1.5; charged valences)"
_COUNT_KEYS = ("atoms", "stable_atoms", "stable_molecules", "valid", "connected", "edm_stable_atoms",
               "edm_stable_molecules", "edm_valid", "malformed", "kekulized", "kekulize_failed")

_TRAIN_SMILES: dict[tuple, set[str]] = {}


def reference_smiles(cache: MolCache, split: str = "train") -> set[str]:
    """Canonical SMILES of ``split`` of a cache (memoised per cache folder and split)."""
    key = (str(cache.path), cache.meta.get("recipe_version"), len(cache), split)
    if key not in _TRAIN_SMILES:
        smiles = cache.smiles
        _TRAIN_SMILES[key] = {smiles[i] for i in cache.indices(split) if smiles[i]}
    return _TRAIN_SMILES[key]


def _malformed(mol: Molecule) -> bool:
    try:
        mol.check()
    except ValueError:
        return True
    return False


def infer_bonds_rdkit(mol: Molecule) -> tuple[Molecule, bool]:
    """Bonds and formal charges from RDKit's ``DetermineBonds`` (charge 0; Hueckel retry).

    Returns:
        ``(molecule with bonds, success)``; on failure the bonds are connectivity only (single).
    """
    from rdkit.Chem import rdDetermineBonds

    base = to_rdkit(Molecule(mol.elements, mol.pos, name=mol.name))
    found, _ = determine_bonds(base, charge=0)
    if found is not None:
        return from_rdkit(found, name=mol.name), True
    m = Chem.Mol(base)
    try:
        rdDetermineBonds.DetermineConnectivity(m)
    except Exception:
        return Molecule(mol.elements, mol.pos, name=mol.name), False
    return from_rdkit(m, name=mol.name), False


def strict_bonds(mol: Molecule, bond_inference: BondInference = "edm",
                 order: np.ndarray | None = None) -> tuple[Molecule, bool | None]:
    """The molecule the strict metrics score: ``mol`` itself, or, when it has more than one atom and
    no bonds at all, a copy with bonds inferred from its geometry.

    Args:
        mol: a well-formed molecule.
        bond_inference: ``edm`` (EDM distance tables, no charges) or ``rdkit`` (``DetermineBonds``).
        order: the EDM order matrix of ``mol`` if already computed (saves recomputing it).

    Returns:
        ``(molecule, success)``: ``success`` is None for a molecule scored on its own bonds, else
        whether the inference gave bond orders (EDM inference always does).
    """
    if mol.has_bonds or mol.num_atoms <= 1:
        return mol, None
    if bond_inference == "edm":
        if order is None:
            order = edm_stability(mol.elements, mol.pos)[1]
        return Molecule(mol.elements, mol.pos, None, order_matrix_to_bonds(order), name=mol.name), True
    return infer_bonds_rdkit(mol)


def tag_summary(mols: Sequence[Molecule], tag: str) -> str:
    """The value of SD tag ``tag`` shared by every molecule; ``mixed`` if values differ or only some
    molecules carry it, ``unknown`` if none does."""
    values = {str(m.props[tag]) if tag in m.props else None for m in mols}
    if values <= {None}:
        return "unknown"
    if len(values) > 1:
        return "mixed"
    return values.pop()


def tag_counts(mols: Sequence[Molecule], tag: str) -> dict[str, int]:
    """How many molecules carry each value of SD tag ``tag`` (sorted by value)."""
    counts: dict[str, int] = {}
    for m in mols:
        if tag in m.props:
            v = str(m.props[tag])
            counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items()))


def _frac(num: int, den: int) -> float:
    return num / den if den else 0.0


@dataclass
class _Tally:
    """Running totals of :func:`evaluate_molecules` over a molecule set."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNT_KEYS, 0))
    bonds_own: int = 0
    bonds_inferred: int = 0
    inference_failed: int = 0
    valid_smiles: list[str | None] = field(default_factory=list)
    edm_smiles: list[str | None] = field(default_factory=list)
    gen: GeometryStats = field(default_factory=GeometryStats)


def _score_edm(mol: Molecule, tally: _Tally) -> np.ndarray:
    """EDM protocol for one molecule (distance-inferred bonds, no charges); returns its order matrix."""
    c = tally.counts
    edm_stable, order = edm_stability(mol.elements, mol.pos)
    n_edm = int(edm_stable.sum())
    c["edm_stable_atoms"] += n_edm
    c["edm_stable_molecules"] += int(n_edm == mol.num_atoms)
    ok, smi = edm_validity(mol.elements, order)
    if ok:
        c["edm_valid"] += 1
        tally.edm_smiles.append(smi)
    return order


def _score_strict(mol: Molecule, tally: _Tally, bond_inference: BondInference, order: np.ndarray) -> None:
    """Strict protocol for one molecule: its own bonds, inferred when it has none."""
    c = tally.counts
    work, success = strict_bonds(mol, bond_inference, order)
    if success is None:
        tally.bonds_own += 1
    else:
        tally.bonds_inferred += 1
        tally.inference_failed += int(not success)
    rd = graph_to_rdkit(work.elements, work.charges, work.bonds)
    stable, used, kekulized = strict_stability(work, rd)
    if kekulized:
        c["kekulized"] += 1
    elif len(used) and (used[:, 2] == 4).any():
        c["kekulize_failed"] += 1
    n_stable = int(stable.sum())
    c["stable_atoms"] += n_stable
    c["stable_molecules"] += int(n_stable == mol.num_atoms)
    valid, n_frags, smiles = rdkit_validity(rd)
    if valid:
        c["valid"] += 1
        c["connected"] += int(n_frags == 1)
        tally.valid_smiles.append(smiles)
    tally.gen.add(work, used)


def _score_molecules(mols: Sequence[Molecule], bond_inference: BondInference) -> _Tally:
    """Both per-molecule protocols over ``mols`` (RDKit logging silenced meanwhile)."""
    tally = _Tally()
    RDLogger.DisableLog("rdApp.*")
    try:
        for mol in mols:
            tally.counts["atoms"] += mol.num_atoms
            if mol.num_atoms == 0 or _malformed(mol):
                tally.counts["malformed"] += 1
                continue
            order = _score_edm(mol, tally)
            _score_strict(mol, tally, bond_inference, order)
    finally:
        RDLogger.EnableLog("rdApp.*")
    return tally


def _count_unique(smiles: Sequence[str | None]) -> int:
    """Distinct SMILES, each empty one counted on its own."""
    return len({s for s in smiles if s}) + sum(1 for s in smiles if not s)


def _rates(mols: Sequence[Molecule], tally: _Tally, un: dict, edm_unique: int, steps: int | None) -> dict:
    """The head of the result: protocol, sizes, the fractions and the ``moldiff-sample`` SD tags."""
    c, n_mols = tally.counts, len(mols)
    return {
        "protocol_version": PROTOCOL_VERSION,
        "n_molecules": n_mols,
        "steps": steps,
        "atom_stability": _frac(c["stable_atoms"], c["atoms"]),
        "mol_stability": _frac(c["stable_molecules"], n_mols),
        "validity": _frac(c["valid"], n_mols),
        "connected_validity": _frac(c["connected"], n_mols),
        "uniqueness": un["uniqueness"],
        "novelty": un["novelty"],
        "valid_unique": _frac(un["n_unique"], n_mols),
        "edm_atom_stability": _frac(c["edm_stable_atoms"], c["atoms"]),
        "edm_mol_stability": _frac(c["edm_stable_molecules"], n_mols),
        "edm_validity": _frac(c["edm_valid"], n_mols),
        "edm_uniqueness": _frac(edm_unique, c["edm_valid"]),
        "edm_valid_unique": _frac(edm_unique, n_mols),
        "decoding": tag_summary(mols, DECODING_TAG),
        "decode_status": tag_counts(mols, DECODE_STATUS_TAG),
        "relax": tag_summary(mols, RELAX_TAG),
        "relax_status": tag_counts(mols, RELAX_STATUS_TAG),
    }


def _counts(n_mols: int, tally: _Tally, un: dict, edm_unique: int) -> dict[str, int]:
    """The result's ``counts``."""
    c = tally.counts
    return {
        "molecules": n_mols,
        "atoms": c["atoms"],
        "stable_atoms": c["stable_atoms"],
        "stable_molecules": c["stable_molecules"],
        "valid": c["valid"],
        "connected": c["connected"],
        "unique": un["n_unique"],
        "novel": un["n_novel"],
        "edm_stable_atoms": c["edm_stable_atoms"],
        "edm_stable_molecules": c["edm_stable_molecules"],
        "edm_valid": c["edm_valid"],
        "edm_unique": edm_unique,
        "malformed": c["malformed"],
        "kekulized": c["kekulized"],
        "kekulize_failed": c["kekulize_failed"],
    }


def _bonds_used(tally: _Tally, bond_inference: BondInference) -> dict:
    """The result's ``bonds``: which bonds the strict and the EDM metrics used."""
    own, inferred = tally.bonds_own, tally.bonds_inferred
    return {
        "strict_metrics_use": "own" if not inferred else ("inferred" if not own else "mixed"),
        "own": own,
        "inferred": inferred,
        "inference": bond_inference if inferred else None,
        "inference_failed": tally.inference_failed if bond_inference == "rdkit" else None,
        "edm_metrics_use": "inferred from distances (EDM tables, no charges)",
    }


def _reference_results(
    reference: MolCache | None,
    gen: GeometryStats,
    train: set[str] | None,
    novelty_split: str,
    distribution_split: str,
    max_reference: int,
    seed: int,
    distribution: bool,
) -> tuple[dict | None, dict | None]:
    """The result's ``reference`` and ``distribution`` (both None without a reference)."""
    if reference is None:
        return None, None
    ref = reference_stats(reference, distribution_split, max_reference, seed) if distribution else None
    about = {
        "name": reference.name,
        "path": str(reference.path),
        "novelty_split": novelty_split,
        "novelty_smiles": len(train),
        "distribution_split": distribution_split if distribution else None,
        "distribution_molecules": ref.n_molecules if ref is not None else None,
    }
    return about, distribution_distances(gen, ref) if ref is not None else None


def evaluate_molecules(
    mols: Sequence[Molecule],
    reference: MolCache | None = None,
    *,
    bond_inference: BondInference = "edm",
    novelty_split: str = "train",
    distribution_split: str = "test",
    max_reference: int = 5000,
    seed: int = 0,
    distribution: bool = True,
    steps: int | None = None,
) -> dict:
    """Score a molecule set with every protocol of docs/metrics.md.

    Args:
        mols: the molecules (explicit hydrogens).
        reference: dataset cache for novelty (its ``novelty_split`` SMILES) and distribution
            distances (a sample of its ``distribution_split``); None skips both.
        bond_inference: how molecules without bonds get bonds for the strict metrics: ``edm``
            (distance tables, no charges) or ``rdkit`` (``rdDetermineBonds``, with charges).
        novelty_split: reference split whose SMILES count as "seen".
        distribution_split: reference split the distributions are compared with.
        max_reference: at most this many reference molecules for the distributions (seeded sample).
        seed: seed of that sample.
        distribution: compute the distribution distances (needs ``reference``).
        steps: sampling steps that produced the molecules, recorded in the result (not used).

    Returns:
        A JSON-able dict: fractions in [0, 1] (``atom_stability``, ``mol_stability``,
        ``validity``, ``connected_validity``, ``uniqueness``, ``novelty`` (None without a
        reference), ``valid_unique``, ``edm_*``), ``counts``, ``bonds`` (which bonds the strict
        metrics used), ``distribution`` (or None), ``protocol_version``, ``n_molecules``, and how
        ``moldiff-sample`` made the molecules, from their SD tags: ``decoding`` (``argmax``, ``map``,
        ``mixed`` or ``unknown``) with ``decode_status`` counts, ``relax`` (``none``, ``mmff``,
        ``uff``, ``mixed`` or ``unknown``) with ``relax_status`` counts.
    """
    if bond_inference not in BOND_INFERENCE:
        raise ValueError(f"bond_inference={bond_inference!r}; choose one of {list(BOND_INFERENCE)}")
    t0 = time.perf_counter()
    tally = _score_molecules(mols, bond_inference)
    train = reference_smiles(reference, novelty_split) if reference is not None else None
    un = uniqueness_novelty(tally.valid_smiles, train)
    edm_unique = _count_unique(tally.edm_smiles)
    out = _rates(mols, tally, un, edm_unique, steps)
    out["counts"] = _counts(len(mols), tally, un, edm_unique)
    out["bonds"] = _bonds_used(tally, bond_inference)
    out["valence_table"] = _VALENCE_TABLE
    out["reference"], out["distribution"] = _reference_results(
        reference, tally.gen, train, novelty_split, distribution_split, max_reference, seed, distribution
    )
    out["eval_seconds"] = round(time.perf_counter() - t0, 3)
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:6.2f} %"


def _num(x: float | None, fmt: str = "{:.4f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def format_table(metrics: dict) -> str:
    """A readable plain-text table of an :func:`evaluate_molecules` result (percentages)."""
    m = metrics
    c = m.get("counts", {})
    b = m.get("bonds", {})
    rows: list[tuple[str, str, str]] = []

    def row(label: str, value: str, note: str = "") -> None:
        rows.append((label, value, note))

    used = b.get("strict_metrics_use", "own")
    src = "own bonds and charges" if used == "own" else f"{used} bonds ({b.get('inferred', 0)} inferred by {b.get('inference')})"
    head = [f"moldiff evaluation [{m.get('protocol_version')}]: {m.get('n_molecules')} molecules"
            + (f", {m['steps']} steps" if m.get("steps") is not None else "")
            + f", decoding: {m.get('decoding', 'unknown')}"
            + (f", relax: {m['relax']}" if m.get("relax", "unknown") != "unknown" else "")]
    row(f"strict protocol ({src})", "", "")
    row("  atom stability", _pct(m.get("atom_stability")), f"{c.get('stable_atoms')}/{c.get('atoms')}")
    row("  molecule stability", _pct(m.get("mol_stability")), f"{c.get('stable_molecules')}/{c.get('molecules')}")
    row("  validity (RDKit sanitize)", _pct(m.get("validity")), f"{c.get('valid')}")
    row("  connected validity", _pct(m.get("connected_validity")), f"{c.get('connected')}")
    row("  uniqueness (of valid)", _pct(m.get("uniqueness")), f"{c.get('unique')}")
    ref = m.get("reference")
    row("  novelty (of unique)", _pct(m.get("novelty")),
        f"{c.get('novel')} vs {ref['name']} {ref['novelty_split']}" if ref else "no reference")
    row("  valid and unique", _pct(m.get("valid_unique")), "")
    row("EDM protocol (distance bonds, no charges)", "", "")
    row("  atom stability", _pct(m.get("edm_atom_stability")), f"{c.get('edm_stable_atoms')}/{c.get('atoms')}")
    row("  molecule stability", _pct(m.get("edm_mol_stability")), f"{c.get('edm_stable_molecules')}/{c.get('molecules')}")
    row("  validity (largest fragment)", _pct(m.get("edm_validity")), f"{c.get('edm_valid')}")
    row("  valid and unique", _pct(m.get("edm_valid_unique")), f"{c.get('edm_unique')}")
    d = m.get("distribution")
    if d:
        row(f"distribution vs {ref['name']} {ref['distribution_split']} ({ref['distribution_molecules']} mols)", "", "")
        row("  atom type TV", _num(d.get("atom_type_tv")), "")
        row("  charge TV", _num(d.get("charge_tv")), "")
        row("  bond type TV", _num(d.get("bond_type_tv")), "")
        row("  atom count TV", _num(d.get("num_atoms_tv")), "")
        for name, v in (d.get("bond_length_w1") or {}).items():
            row(f"  {name} bond length W1", _num(v), "Angstrom")
        row("  bond angle W1", _num(d.get("bond_angle_w1"), "{:.3f}"), "degrees")
    if m.get("posebusters"):
        from moldiff.metrics.posebusters import format_rows  # imports this module

        rows.extend(format_rows(m["posebusters"]))
    if m.get("predicted_properties"):
        from moldiff.metrics.properties import format_rows as property_rows

        rows.extend(property_rows(m["predicted_properties"]))
    if c.get("malformed"):
        row("malformed molecules", str(c["malformed"]), "counted as unstable and invalid")
    for label, key in (("decoding statuses", "decode_status"), ("relaxation statuses", "relax_status")):
        if m.get(key):
            row(label, "", ", ".join(f"{v} {k}" for k, v in m[key].items()))
    w0 = max(len(r[0]) for r in rows if r[1])  # section headings (no value) may run past the column
    w1 = max(len(r[1]) for r in rows)
    lines = head + ["-" * (w0 + w1 + 16)]
    for label, value, note in rows:
        lines.append(f"{label:<{w0}}  {value:>{w1}}  {note}".rstrip())
    return "\n".join(lines)
