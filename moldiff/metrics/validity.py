"""RDKit validity, connectivity, canonical SMILES, uniqueness and novelty.

* **validity**: ``Chem.SanitizeMol`` succeeds on the molecule exactly as given (its own bonds,
  formal charges and explicit atoms; no implicit hydrogens are added, see ``to_rdkit``).
* **connected validity**: valid and a single fragment.
* **uniqueness**: distinct canonical SMILES (``moldiff.chem.rdkit_conv.canonical_smiles``:
  hydrogens removed, no stereo -- the same function that wrote the dataset caches' SMILES) among
  the valid molecules, divided by the number of valid molecules.
* **novelty**: unique valid SMILES absent from the reference training split, divided by the number
  of unique valid SMILES.
"""

from __future__ import annotations

from typing import Iterable

from rdkit import Chem

from moldiff.chem.rdkit_conv import canonical_smiles


def rdkit_validity(rdmol: Chem.Mol) -> tuple[bool, int, str | None]:
    """Sanitize a copy of ``rdmol``.

    Returns:
        ``(valid, number of fragments, canonical SMILES or None)``; fragments are counted on the
        raw graph, so they are reported for invalid molecules too.
    """
    n_frags = len(Chem.GetMolFrags(rdmol, sanitizeFrags=False)) if rdmol.GetNumAtoms() else 0
    m = Chem.Mol(rdmol)
    try:
        Chem.SanitizeMol(m)
    except Exception:
        return False, n_frags, None
    return True, n_frags, canonical_smiles(m)


def uniqueness_novelty(valid_smiles: Iterable[str | None], reference: set[str] | None = None) -> dict:
    """Uniqueness and novelty from the SMILES of the valid molecules.

    Args:
        valid_smiles: one canonical SMILES per valid molecule (None/empty ones are counted as
            valid but never equal to anything -- RDKit could not write them).
        reference: training-split SMILES; None leaves novelty undefined (None).

    Returns:
        ``{"n_valid", "n_unique", "n_novel", "uniqueness", "novelty"}``; fractions are 0.0 when
        their denominator is zero.
    """
    smiles = list(valid_smiles)
    named = [s for s in smiles if s]
    unique = set(named)
    n_unique = len(unique) + (len(smiles) - len(named))
    out: dict = {"n_valid": len(smiles), "n_unique": n_unique}
    out["uniqueness"] = n_unique / len(smiles) if smiles else 0.0
    if reference is None:
        out["n_novel"] = None
        out["novelty"] = None
    else:
        n_novel = len(unique - reference) + (len(smiles) - len(named))
        out["n_novel"] = n_novel
        out["novelty"] = n_novel / n_unique if n_unique else 0.0
    return out
