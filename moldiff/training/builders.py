"""Build the denoiser and the joint diffusion from plain (JSON-able) config dicts.

These dicts are stored in every checkpoint, so a checkpoint alone rebuilds its model.
"""

from __future__ import annotations

from typing import Any

from moldiff.data.vocab import Vocab
from moldiff.diffusion.joint import JointDiffusion
from moldiff.diffusion.schedules import NoiseSchedule
from moldiff.models.denoiser import Denoiser

MODEL_KEYS = {
    "num_scalars", "num_vectors", "edge_dim", "num_layers", "num_rbf", "rbf_cutoff", "cutoff", "edge_hidden",
    "aggregation", "agg_norm", "size_embedding", "valency_feature", "distance_feature", "coord_head",
    "pos_update_layers", "self_conditioning",
}
#: diffusion settings the denoiser shares (one source: the ``diffusion`` config)
SHARED_KEYS = {"sigma_data"}


def build_diffusion(
    cfg: dict[str, Any], vocab: Vocab, statistics: dict[str, Any], self_conditioning: bool = False
) -> JointDiffusion:
    """``cfg``: ``{pos: {schedule, s, power, nu}, cat: {...}, transition, loss_weights, time_weighting,
    pos_weighting, sigma_data, pos_weight_max, t_sampling, t_beta}``; ``self_conditioning`` comes from the
    model config (the denoiser must accept the previous prediction)."""
    pos = NoiseSchedule(**{"name": "cosine", **dict(cfg.get("pos", {}))})
    cat = NoiseSchedule(**{"name": "cosine", **dict(cfg.get("cat", {}))})
    marginals = {
        "atom_types": statistics["atom_type_marginal"],
        "charges": statistics["charge_marginal"],
        "bonds": statistics["bond_marginal"],
    }
    return JointDiffusion(
        pos,
        cat,
        vocab.num_atom_types,
        vocab.num_charges,
        vocab.num_bond_types,
        marginals,
        transition=cfg.get("transition", "marginal"),
        loss_weights=dict(cfg.get("loss_weights", {}) or {}),
        time_weighting=cfg.get("time_weighting", "snr_clip"),
        pos_weighting=cfg.get("pos_weighting", "time"),
        sigma_data=float(cfg.get("sigma_data", 1.0)),
        pos_weight_max=float(cfg.get("pos_weight_max", 100.0)),
        self_conditioning=self_conditioning,
        t_sampling=cfg.get("t_sampling", "uniform"),
        t_beta=tuple(cfg.get("t_beta", (1.8, 1.8))),
    )


def build_denoiser(cfg: dict[str, Any], vocab: Vocab, diffusion: JointDiffusion, num_props: int = 0) -> Denoiser:
    unknown = set(cfg) - MODEL_KEYS - {"name"}
    if unknown:
        raise ValueError(f"unknown model settings {sorted(unknown)}; allowed: {sorted(MODEL_KEYS)}")
    kwargs = {k: v for k, v in cfg.items() if k in MODEL_KEYS}
    return Denoiser(
        atom_in=diffusion.atom_feat_dim,
        edge_in=diffusion.edge_feat_dim,
        num_atom_types=vocab.num_atom_types,
        num_charges=vocab.num_charges,
        num_bond_types=vocab.num_bond_types,
        num_props=num_props,
        sigma_data=diffusion.sigma_data,
        **kwargs,
    )
