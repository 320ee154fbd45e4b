"""PoseBusters' molecule-level plausibility checks on a molecule set (optional: ``pip install 'moldiff[checks]'``).

The checks are PoseBusters' own (``PoseBusters(config="mol").bust(...)``, Buttenschoen et al. 2024);
nothing here re-implements them. Of its ``mol`` report, these columns are scored (:data:`CHECKS`):

* ``bond_lengths``, ``bond_angles``, ``internal_steric_clash``: within (widened) distance-geometry
  bounds of RDKit;
* ``aromatic_ring_flatness``, ``double_bond_flatness``: atoms of aromatic rings / C=C double bonds
  near a common plane (a molecule without such systems passes);
* ``internal_energy``: UFF energy of the pose over the mean energy of an ETKDG conformer ensemble
  of the same molecule below PoseBusters' threshold. This is the slow check (the ensemble is
  generated once per distinct molecule), hence the seeded subset of :func:`posebusters_checks`.
  Strained polycyclic molecules for which ETKDG finds no conformer are the slowest (up to a
  minute each) and PoseBusters cannot score them (see below). ``energy=False`` runs PoseBusters'
  ``mol_fast`` configuration instead: the same checks without this one.

Each molecule is checked on the bonds the strict metrics use (:func:`moldiff.metrics.evaluate.strict_bonds`:
its own, or inferred from the geometry when it has none). Only molecules that RDKit sanitizes are
passed to PoseBusters; the others (and malformed ones) fail every check. A check that PoseBusters
reports no result for (NaN: e.g. no ETKDG conformer ensemble for a strained ring system such as a
bicyclobutane, or no UFF parameters for an element) fails too and is counted under ``not_run``.
Every rate has the number of checked molecules as denominator, except ``all_pass_rate_scored``: the
molecules passing every check among those left when the ones with a check PoseBusters gave no result
for are left out (``n_scored``), its own reading of a missing result.
"""

from __future__ import annotations

import logging
import time
from types import ModuleType
from typing import Any, Sequence

import numpy as np
from rdkit import Chem, RDLogger

from moldiff.chem.molecule import Molecule
from moldiff.chem.rdkit_conv import to_rdkit
from moldiff.metrics.evaluate import BondInference, strict_bonds

#: PoseBusters report column -> label in the printed table (molecule-level checks, no protein, no reference pose).
CHECKS: dict[str, str] = {
    "bond_lengths": "bond lengths",
    "bond_angles": "bond angles",
    "internal_steric_clash": "internal steric clash",
    "aromatic_ring_flatness": "aromatic ring flatness",
    "double_bond_flatness": "double bond flatness",
    "internal_energy": "internal energy",
}
#: PoseBusters configurations: with the internal-energy check, and without it (same other checks).
CONFIG, CONFIG_FAST = "mol", "mol_fast"
ENERGY_CHECK = "internal_energy"
#: How to install the optional dependency.
INSTALL_HINT = "pip install 'moldiff[checks]'"


class MissingExtraError(ImportError):
    """An optional dependency (a ``moldiff[...]`` extra) is not installed."""


def require_posebusters() -> ModuleType:
    """Import the ``posebusters`` package.

    Raises:
        MissingExtraError: when it cannot be imported; the message names the extra to install.
    """
    try:
        import posebusters
    except ImportError as exc:
        raise MissingExtraError(
            f"posebusters=true needs the PoseBusters package, which is not installed: {INSTALL_HINT}"
        ) from exc
    return posebusters


def sample_indices(n: int, max_molecules: int | None, seed: int = 0) -> list[int]:
    """Sorted indices of the molecules to check: all ``n``, or a seeded sample of ``max_molecules``.

    Raises:
        ValueError: ``max_molecules`` below 1.
    """
    if max_molecules is not None and max_molecules < 1:
        raise ValueError(f"posebusters_max={max_molecules}: give a positive number of molecules, or null for all")
    if max_molecules is None or n <= max_molecules:
        return list(range(n))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, size=int(max_molecules), replace=False))


def sanitized_rdkit(mol: Molecule, bond_inference: BondInference = "edm") -> Chem.Mol | None:
    """The sanitized RDKit molecule (one conformer) PoseBusters checks, or None when there is none.

    None for a malformed molecule (no atoms, non-finite coordinates, unknown element) and for one
    that RDKit does not sanitize on the bonds the strict metrics use.
    """
    try:
        mol.check()
        work, _ = strict_bonds(mol, bond_inference)
        rd = to_rdkit(work)
        Chem.SanitizeMol(rd)
    except Exception:  # noqa: BLE001 - RDKit raises several types; any failure means "not sanitizable"
        return None
    return rd


def _passed(value: Any) -> bool | None:
    """A report cell as True / False, or None when PoseBusters did not run the check (NaN / NA)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    return None


def posebusters_checks(
    mols: Sequence[Molecule],
    *,
    max_molecules: int | None = 200,
    seed: int = 0,
    bond_inference: BondInference = "edm",
    energy: bool = True,
) -> dict:
    """Run PoseBusters' molecule-level checks on (a seeded sample of) ``mols``.

    Args:
        mols: the molecules (explicit hydrogens).
        max_molecules: check at most this many (a seeded sample, in file order); None checks all.
        seed: seed of that sample.
        bond_inference: bonds for molecules that have none, as for the strict metrics.
        energy: include the (slow) internal-energy check; False runs PoseBusters' ``mol_fast``.

    Returns:
        A JSON-able dict: ``checks`` (report columns, in order), ``pass_rate`` and ``passed`` per
        check, ``all_pass_rate`` and ``all_passed`` (every check passed), ``not_run`` per check,
        ``n_scored`` and ``all_pass_rate_scored`` (see :func:`tally`),
        ``n_molecules`` (the whole set), ``n_checked`` (the sample: the denominator),
        ``sample`` (``all`` or ``seeded``), ``seed``, ``not_sanitizable`` (molecules that failed
        every check without being passed to PoseBusters), ``config``, ``posebusters_version``,
        ``seconds`` and ``seconds_per_molecule`` (of the molecules passed to PoseBusters).

    Raises:
        MissingExtraError: PoseBusters is not installed.
        ValueError: ``max_molecules`` below 1.
    """
    pb = require_posebusters()
    from posebusters import PoseBusters

    config = CONFIG if energy else CONFIG_FAST
    checks = [c for c in CHECKS if energy or c != ENERGY_CHECK]
    chosen = sample_indices(len(mols), max_molecules, seed)
    t0 = time.perf_counter()
    RDLogger.DisableLog("rdApp.*")
    pb_log = logging.getLogger("posebusters")
    level = pb_log.level
    pb_log.setLevel(logging.ERROR)  # per-molecule warnings ("Energy ratio module failed because ...")
    try:
        rdmols = [sanitized_rdkit(mols[i], bond_inference) for i in chosen]
        busted = [m for m in rdmols if m is not None]
        rows: list[dict[str, bool | None]] = []
        if busted:
            report = PoseBusters(config=config).bust(busted)
            missing = [c for c in checks if c not in report.columns]
            if missing:
                raise RuntimeError(f"PoseBusters {pb.__version__} reports no {missing} in config {config!r}; "
                                   f"{INSTALL_HINT} installs a supported version")
            rows = [dict(zip(checks, map(_passed, r))) for r in report[checks].itertuples(index=False)]
            if len(rows) != len(busted):
                raise RuntimeError(f"PoseBusters returned {len(rows)} rows for {len(busted)} molecules")
    finally:
        pb_log.setLevel(level)
        RDLogger.EnableLog("rdApp.*")
    seconds = time.perf_counter() - t0

    n = len(chosen)
    return {
        "config": config,
        "posebusters_version": getattr(pb, "__version__", None),
        "checks": checks,
        "n_molecules": len(mols),
        "n_checked": n,
        "sample": "all" if n == len(mols) else "seeded",
        "seed": seed,
        **tally(rows, checks, n),
        "seconds": round(seconds, 3),
        "seconds_per_molecule": round(seconds / len(rows), 4) if rows else None,
    }


def tally(rows: Sequence[dict[str, bool | None]], checks: Sequence[str], n_checked: int) -> dict[str, Any]:
    """Counts and rates of PoseBusters' per-molecule results.

    ``rows`` holds one dict per molecule passed to PoseBusters (check -> True / False / None for no result);
    the other ``n_checked - len(rows)`` checked molecules were not sanitizable. Every ``*_rate`` but the last
    has ``n_checked`` as denominator (a check without a result fails). ``n_scored`` leaves out the molecules
    with a check PoseBusters gave no result for (unsanitizable ones stay in: they fail, as PoseBusters'
    own sanitization check would), and ``all_pass_rate_scored`` = ``all_passed / n_scored``: the pass rate
    on PoseBusters' own terms, where a check without a result is missing, not failed.
    """
    n = n_checked
    passed = {c: sum(1 for r in rows if r[c]) for c in checks}
    not_run = {c: sum(1 for r in rows if r[c] is None) for c in checks}
    all_passed = sum(1 for r in rows if all(r[c] for c in checks))
    n_scored = n - sum(1 for r in rows if any(r[c] is None for c in checks))
    return {
        "not_sanitizable": n - len(rows),
        "passed": passed,
        "pass_rate": {c: (v / n if n else 0.0) for c, v in passed.items()},
        "not_run": not_run,
        "all_passed": all_passed,
        "all_pass_rate": all_passed / n if n else 0.0,
        "n_scored": n_scored,
        "all_pass_rate_scored": all_passed / n_scored if n_scored else None,
    }


def format_rows(result: dict) -> list[tuple[str, str, str]]:
    """Table rows ``(label, value, note)`` of a :func:`posebusters_checks` result (for ``format_table``)."""
    n = result["n_checked"]
    what = (f"all {n} molecules" if result["sample"] == "all"
            else f"{n} of {result['n_molecules']} molecules, seeded sample, seed {result['seed']}")
    rows = [(f"PoseBusters checks ({what})", "", "")]
    for col in result["checks"]:
        label = CHECKS.get(col, col)
        note = f"{result['passed'][col]}/{n}"
        if result["not_run"].get(col):
            note += f" ({result['not_run'][col]} not scorable by PoseBusters: failing)"
        rows.append((f"  {label}", _pct(result["pass_rate"][col]), note))
    rows.append(("  all of the above", _pct(result["all_pass_rate"]), f"{result['all_passed']}/{n}"
                 + ("" if ENERGY_CHECK in result["checks"] else " (no internal-energy check)")))
    scored = result.get("n_scored")
    if scored is not None and scored < n and result["all_pass_rate_scored"] is not None:
        rows.append(("  all of the above, of the scored", _pct(result["all_pass_rate_scored"]),
                     f"{result['all_passed']}/{scored} (leaving out the {n - scored} not scorable)"))
    if result["not_sanitizable"]:
        rows.append(("  not sanitizable (fail every check)", str(result["not_sanitizable"]),
                     "not passed to PoseBusters"))
    if result.get("seconds_per_molecule") is not None:
        rows.append(("  time", f"{result['seconds']:.1f} s", f"{result['seconds_per_molecule']:.3f} s per molecule"))
    return rows


def _pct(x: float) -> str:
    return f"{100 * x:6.2f} %"
