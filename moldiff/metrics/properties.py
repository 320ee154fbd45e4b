"""Predicted properties of any molecule set, with the shipped (or a trained) property predictor.

``moldiff-evaluate input=x.sdf predict=true`` runs :func:`predict_properties`. The predictor is the
E(3)-invariant network of ``moldiff.models.property`` trained on the first half of the QM9 train split
(``experiment=qm9_property_predictor``), so it speaks for QM9-like molecules (H, C, N, O, F, up to 29
atoms); a molecule with an element outside its vocabulary is left out and counted. When the file's
records carry targets (``target_<property>`` tags, written by conditional ``moldiff-sample``), the
mean absolute error between prediction and target is reported too.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch_geometric.data import Batch

from moldiff.chem.molecule import Molecule
from moldiff.data.graph import make_data


def molecule_graphs(mols: Sequence[Molecule], vocab) -> tuple[list, list[int]]:
    """Fully connected graphs of the molecules the vocabulary covers, and their indices in ``mols``."""
    graphs, kept = [], []
    for i, m in enumerate(mols):
        if len(m.elements) == 0 or not np.isfinite(m.pos).all():
            continue
        if any(e not in vocab.elements for e in m.elements) or any(int(q) not in vocab.charges for q in m.charges):
            continue
        types = torch.tensor([vocab.elements.index(e) for e in m.elements])
        charges = torch.tensor([vocab.charges.index(int(q)) for q in m.charges])
        empty = torch.zeros(0, dtype=torch.long)
        graphs.append(make_data(torch.as_tensor(np.asarray(m.pos), dtype=torch.float32), types, charges, empty, empty, empty))
        kept.append(i)
    return graphs, kept


@torch.no_grad()
def predict_array(predictor, graphs: list, batch_size: int = 256) -> np.ndarray:
    """Predictions ``[len(graphs), P]`` in dataset units."""
    out = [predictor.predict_batch(Batch.from_data_list(graphs[k:k + batch_size])).cpu().numpy()
           for k in range(0, len(graphs), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, len(predictor.properties)))


def predict_properties(mols: Sequence[Molecule], predictor,
                       targets: dict[str, float] | None = None) -> dict[str, Any]:
    """Predict every molecule's properties; summarise them and their error against ``target_<p>`` tags.

    Args:
        mols: molecules with 3D coordinates.
        predictor: a loaded ``PropertyModule`` (``moldiff.training.property_module.load_property_module``).
        targets: one target per property for every molecule (e.g. to score unconditional samples
            against the value a conditional run aimed at); a molecule's own tag wins.

    Returns:
        ``{"predictor", "n_molecules", "n_predicted", "properties": {p: {"unit", "mean", "std",
        "n_targets", "mae_vs_target"}}, "values": [[...] per molecule, None where not predicted]}``.
    """
    graphs, kept = molecule_graphs(mols, predictor.vocab)
    pred = predict_array(predictor, graphs)
    props = predictor.properties
    units = predictor.units
    summary: dict[str, Any] = {}
    for k, p in enumerate(props):
        col = pred[:, k]
        default = float((targets or {}).get(p, float("nan")))
        goal = np.array([_tag(mols[i], f"target_{p}", default) for i in kept], dtype=float)
        has = np.isfinite(goal)
        summary[p] = {
            "unit": units.get(p, ""),
            "mean": float(col.mean()) if len(col) else None,
            "std": float(col.std()) if len(col) else None,
            "n_targets": int(has.sum()),
            "mae_vs_target": float(np.abs(col[has] - goal[has]).mean()) if has.any() else None,
        }
    values: list[list[float] | None] = [None] * len(mols)
    for row, i in zip(pred.tolist(), kept):
        values[i] = row
    return {"predictor": predictor.hparams.get("dataset", {}).get("name", "?"), "properties_order": props,
            "n_molecules": len(mols), "n_predicted": len(kept), "properties": summary, "values": values}


def _tag(m: Molecule, key: str, default: float = float("nan")) -> float:
    try:
        return float(m.props[key])
    except (KeyError, TypeError, ValueError):
        return default


def format_rows(result: dict) -> list[tuple[str, str, str]]:
    """Table rows ``(label, value, note)`` for ``format_table``."""
    rows = [(f"predicted properties ({result['n_predicted']}/{result['n_molecules']} molecules)", "", "")]
    for p, s in result["properties"].items():
        if s["mean"] is None:
            continue
        note = f"{s['unit']}, std {s['std']:.4g}"
        if s["mae_vs_target"] is not None:
            note += f"; MAE vs target {s['mae_vs_target']:.4g} ({s['n_targets']} targets)"
        rows.append((f"  {p} (mean)", f"{s['mean']:.4g}", note))
    return rows
