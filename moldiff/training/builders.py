"""Build the denoiser and the joint diffusion from plain (JSON-able) config dicts.

These dicts are stored in every checkpoint, so a checkpoint alone rebuilds its model.
"""

from __future__ import annotations

from typing import Any

from moldiff.config import default_model_preset, diffusion_defaults, model_preset, with_defaults
from moldiff.data.vocab import Vocab
from moldiff.diffusion.joint import JointDiffusion
from moldiff.diffusion.schedules import NoiseSchedule
from moldiff.models.denoiser import Denoiser

#: diffusion settings the denoiser shares (one source: the ``diffusion`` config)
SHARED_KEYS = {"sigma_data"}
#: the noise schedules: a given schedule replaces the default one as a whole (its keys depend on its kind)
_SCHEDULE_KEYS = ("pos", "cat")


def diffusion_settings(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """``cfg`` completed from the packaged default (``conf/diffusion/cosine.yaml``); unknown keys raise."""
    given = dict(cfg or {})
    schedules = {k: dict(given.pop(k)) for k in _SCHEDULE_KEYS if k in given}
    out = with_defaults(diffusion_defaults(), given, "diffusion")
    out.update(schedules)
    return out


def model_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` completed from the packaged preset it names (``name``; else ``moldiff-train``'s default
    preset), as a composed run would be; unknown keys raise."""
    name = cfg.get("name")
    try:
        base = model_preset(name) if name else model_preset(default_model_preset())
    except ValueError:  # a custom name: the keys must all be given or come from the default preset
        base = {**model_preset(default_model_preset()), "name": name}
    return with_defaults(base, cfg, "model")


def build_diffusion(
    cfg: dict[str, Any], vocab: Vocab, statistics: dict[str, Any], self_conditioning: bool = False
) -> JointDiffusion:
    """``cfg``: ``{pos: {name, s, power, nu}, cat: {...}, transition, loss_weights, time_weighting,
    pos_weighting, sigma_data, pos_weight_max, t_sampling, t_beta, t_low_fraction, t_low_max}``, missing keys taken from the packaged
    default (:func:`diffusion_settings`); ``self_conditioning`` comes from the model config (the denoiser
    must accept the previous prediction)."""
    c = diffusion_settings(cfg)
    marginals = {
        "atom_types": statistics["atom_type_marginal"],
        "charges": statistics["charge_marginal"],
        "bonds": statistics["bond_marginal"],
    }
    return JointDiffusion(
        NoiseSchedule(**c["pos"]),
        NoiseSchedule(**c["cat"]),
        vocab.num_atom_types,
        vocab.num_charges,
        vocab.num_bond_types,
        marginals,
        transition=c["transition"],
        loss_weights=dict(c["loss_weights"]),
        time_weighting=c["time_weighting"],
        pos_weighting=c["pos_weighting"],
        sigma_data=float(c["sigma_data"]),
        pos_weight_max=float(c["pos_weight_max"]),
        self_conditioning=self_conditioning,
        self_cond_lookahead=float(c["self_cond_lookahead"]),
        self_cond_rollout=float(c["self_cond_rollout"]),
        t_sampling=c["t_sampling"],
        t_beta=tuple(c["t_beta"]),
        t_low_fraction=float(c["t_low_fraction"]),
        t_low_max=float(c["t_low_max"]),
    )


def build_denoiser(cfg: dict[str, Any], vocab: Vocab, diffusion: JointDiffusion, num_props: int = 0) -> Denoiser:
    """The denoiser of ``cfg`` (a preset's settings, missing keys from the preset it names:
    :func:`model_settings`)."""
    kwargs = {k: v for k, v in model_settings(cfg).items() if k != "name"}
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
