"""The joint noise process over a molecule graph and its x0-parameterised training loss.

The denoiser is passed in as a callable (``diffusion`` never imports ``models``)::

    denoiser(pos [N,3], atom_feat [N,Sa+Sc], edge_index [2,E], edge_feat [E,Sb], batch [N], t [G], num_graphs,
             rev=[E], alpha_bar=[G], self_cond=None | (pos0, atom_probs, charge_probs, bond_probs))
        -> (pos0 [N,3], atom_logits [N,Ka], charge_logits [N,Kc], bond_logits [E,Kb])

Inputs are the noisy coordinates and one-hot noisy states; outputs predict the clean molecule.
``alpha_bar`` is the coordinate signal level at ``t`` (for noise-scaled coordinate outputs); ``self_cond``
(only with ``self_conditioning``) is the previous prediction, coordinates and class probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch_geometric.utils import scatter

from moldiff.diffusion.categorical import CategoricalDiffusion, symmetrize_edges
from moldiff.diffusion.gaussian import GaussianDiffusion
from moldiff.diffusion.schedules import NoiseSchedule
from moldiff.utils.geometry import zero_com
from moldiff.utils.graph import reverse_edge_index

Denoiser = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass
class NoisyGraph:
    """A noisy molecule batch: coordinates and categorical *states* (indices)."""

    pos: torch.Tensor  # [N,3]
    atom_types: torch.Tensor  # [N]
    charges: torch.Tensor  # [N]
    bond_types: torch.Tensor  # [E]
    edge_index: torch.Tensor  # [2,E]
    batch: torch.Tensor  # [N]
    t: torch.Tensor  # [G]
    num_graphs: int
    rev: torch.Tensor | None = None  # [E] reverse-edge positions


class JointDiffusion:
    """Gaussian coordinates + categorical types, charges and bonds, one time per molecule.

    Args:
        pos_schedule: schedule for coordinates.
        cat_schedule: schedule for the categorical variables.
        num_atom_types, num_charges, num_bond_types: class counts.
        marginals: ``{"atom_types": [...], "charges": [...], "bonds": [...]}`` data marginals.
        transition: categorical transition (``marginal``, ``uniform``, ``absorbing``).
        loss_weights: weights of the ``pos``, ``atom_types``, ``charges`` and ``bonds`` terms.
        time_weighting: ``snr_clip`` (weight ``clip(SNR(t), lo, hi)`` per molecule) or ``none``.
        pos_weighting: ``time`` (the coordinate term weighted like the others) or ``precond``: the
            coordinate error divided by :math:`c_{out}(t)^2` (the preconditioned denoiser's output-space loss,
            Karras et al. 2022), capped at ``pos_weight_max``, so that small corrections at low noise are
            learned as carefully as large ones at high noise. Needs ``sigma_data``.
        self_conditioning: train with the previous prediction as input half of the time (Chen et al.
            2022): the denoiser is first run without it (no gradient), its output fed back.
        self_cond_lookahead: with self-conditioning, make that first prediction at a later time
            ``t + d``, ``d ~ U(0, self_cond_lookahead)`` per molecule, on the molecule noised on from ``t``: as
            in sampling, where the fed-back prediction comes from the previous, noisier step (0: at ``t``).
        self_cond_rollout: with self-conditioning, reach the training state at ``t`` as sampling does: noise the
            molecule to ``t + d``, ``d ~ U(0, self_cond_rollout)``, predict there (no gradient), take one
            ancestral sampler step to ``t`` with that prediction and feed it back, so that the state and the
            fed-back prediction agree as they do in sampling (0: off; not together with the lookahead).
        t_sampling: ``uniform`` ``t ~ U(0,1)``, or ``beta`` ``t ~ Beta(a, b)`` (``t_beta``), e.g. (1.8, 1.8)
            for more training near the middle of the schedule where discrete decisions are made.
        t_low_fraction, t_low_max: this fraction of the training molecules draws ``t ~ U(0, t_low_max)``
            instead (uniform sampling alone gives ``t < 0.01`` one step in a hundred, where the last
            sampling steps set coordinates to the last hundredth of an Angstrom); 0: off.
    """

    def __init__(
        self,
        pos_schedule: NoiseSchedule,
        cat_schedule: NoiseSchedule,
        num_atom_types: int,
        num_charges: int,
        num_bond_types: int,
        marginals: dict,
        transition: Literal["marginal", "uniform", "absorbing"] = "marginal",
        loss_weights: dict | None = None,
        time_weighting: Literal["snr_clip", "none"] = "snr_clip",
        snr_clip: tuple[float, float] = (0.05, 1.5),
        pos_weighting: Literal["time", "precond"] = "time",
        sigma_data: float = 1.0,
        pos_weight_max: float = 100.0,
        self_conditioning: bool = False,
        self_cond_lookahead: float = 0.0,
        self_cond_rollout: float = 0.0,
        t_sampling: Literal["uniform", "beta"] = "uniform",
        t_beta: tuple[float, float] = (1.8, 1.8),
        t_low_fraction: float = 0.0,
        t_low_max: float = 0.02,
    ) -> None:
        if time_weighting not in ("snr_clip", "none"):
            raise ValueError(f"unknown time_weighting {time_weighting!r}; choose from ['snr_clip', 'none']")
        if pos_weighting not in ("time", "precond"):
            raise ValueError(f"unknown pos_weighting {pos_weighting!r}; choose from ['time', 'precond']")
        if t_sampling not in ("uniform", "beta"):
            raise ValueError(f"unknown t_sampling {t_sampling!r}; choose from ['uniform', 'beta']")
        self.pos = GaussianDiffusion(pos_schedule)
        self.atom = CategoricalDiffusion(num_atom_types, cat_schedule, transition, marginals.get("atom_types"))
        self.charge = CategoricalDiffusion(num_charges, cat_schedule, transition, marginals.get("charges"))
        self.bond = CategoricalDiffusion(num_bond_types, cat_schedule, transition, marginals.get("bonds"))
        self.loss_weights = {"pos": 1.0, "atom_types": 0.4, "charges": 0.4, "bonds": 2.0, **(loss_weights or {})}
        self.time_weighting = time_weighting
        self.snr_clip = snr_clip
        self.pos_weighting = pos_weighting
        self.sigma_data = float(sigma_data)
        self.pos_weight_max = float(pos_weight_max)
        self.self_conditioning = bool(self_conditioning)
        if not 0.0 <= float(self_cond_lookahead) <= 1.0:
            raise ValueError(f"self_cond_lookahead must be in [0, 1], got {self_cond_lookahead}")
        self.self_cond_lookahead = float(self_cond_lookahead)
        if not 0.0 <= float(self_cond_rollout) <= 1.0:
            raise ValueError(f"self_cond_rollout must be in [0, 1], got {self_cond_rollout}")
        if self_cond_rollout and self_cond_lookahead:
            raise ValueError("self_cond_rollout and self_cond_lookahead are alternatives: set one of them to 0")
        self.self_cond_rollout = float(self_cond_rollout)
        self.t_sampling = t_sampling
        self.t_beta = tuple(float(x) for x in t_beta)
        if not 0.0 <= float(t_low_fraction) <= 1.0:
            raise ValueError(f"t_low_fraction must be in [0, 1], got {t_low_fraction}")
        if not 0.0 < float(t_low_max) <= 1.0:
            raise ValueError(f"t_low_max must be in (0, 1], got {t_low_max}")
        self.t_low_fraction, self.t_low_max = float(t_low_fraction), float(t_low_max)

    # ----------------------------------------------------------------------------------- features
    @property
    def atom_feat_dim(self) -> int:
        return self.atom.num_states + self.charge.num_states

    @property
    def edge_feat_dim(self) -> int:
        return self.bond.num_states

    def features(self, g: NoisyGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """One-hot network inputs: ``atom_feat [N, Sa+Sc]``, ``edge_feat [E, Sb]``."""
        h = torch.cat(
            [F.one_hot(g.atom_types, self.atom.num_states), F.one_hot(g.charges, self.charge.num_states)], dim=-1
        ).float()
        e = F.one_hot(g.bond_types, self.bond.num_states).float()
        return h, e

    def denoise(self, denoiser: Denoiser, g: NoisyGraph, self_cond: tuple | None = None):
        """Run ``denoiser`` on ``g`` (with ``self_cond`` = the previous prediction, when self-conditioning)."""
        h, e = self.features(g)
        kw = {"rev": g.rev, "alpha_bar": self.pos.schedule.alpha_bar(g.t)}
        if self.self_conditioning:
            kw["self_cond"] = self_cond
        return denoiser(g.pos, h, g.edge_index, e, g.batch, g.t, g.num_graphs, **kw)

    @staticmethod
    def self_cond_from(out: tuple) -> tuple:
        """A prediction ``(pos0, logits...)`` -> the self-conditioning input ``(pos0, probs...)``, detached."""
        pos0, la, lc, lb = out
        return pos0.detach(), la.detach().softmax(-1), lc.detach().softmax(-1), lb.detach().softmax(-1)

    def sample_t(self, num_graphs: int, device) -> torch.Tensor:
        """Training times ``[G]``: uniform, or Beta(a, b) (``t_sampling``); a ``t_low_fraction`` of them
        replaced by ``U(0, t_low_max)`` draws."""
        if self.t_sampling == "beta":
            a, b = self.t_beta
            beta = torch.distributions.Beta(torch.tensor(a, device=device), torch.tensor(b, device=device))
            t = beta.sample((num_graphs,)).clamp(1e-4, 1.0)
        else:
            t = torch.rand(num_graphs, device=device)
        if self.t_low_fraction > 0:
            low = torch.rand(num_graphs, device=device) < self.t_low_fraction
            t = torch.where(low, torch.rand(num_graphs, device=device) * self.t_low_max, t)
        return t

    # ----------------------------------------------------------------------------------- forward
    def noise(self, batch, t: torch.Tensor | None = None) -> tuple[NoisyGraph, torch.Tensor]:
        """Noise a clean PyG batch at per-molecule times ``t [G]`` (drawn U(0,1) if None).

        Returns the noisy graph and the zero-CoM clean coordinates.
        """
        G = batch.num_graphs
        device = batch.pos.device
        if t is None:
            t = self.sample_t(G, device)
        x0 = zero_com(batch.pos, batch.batch, G)
        xt, _ = self.pos.q_sample(x0, t, batch.batch, G)
        tn = t[batch.batch]
        a = self.atom.q_sample(batch.atom_types, tn)
        c = self.charge.q_sample(batch.charges, tn)
        rev = getattr(batch, "rev", None)
        if rev is None:
            rev = reverse_edge_index(batch.edge_index, batch.num_nodes)
        te = t[batch.batch[batch.edge_index[0]]]
        b = symmetrize_edges(self.bond.q_sample(batch.bond_types, te), batch.edge_index, rev)
        return NoisyGraph(xt, a, c, b, batch.edge_index, batch.batch, t, G, rev), x0

    def lookahead(self, g: NoisyGraph) -> NoisyGraph:
        """``g`` noised on to ``t + d`` per molecule, ``d ~ U(0, self_cond_lookahead)`` (capped at 1)."""
        G, device = g.num_graphs, g.t.device
        t2 = (g.t + self.self_cond_lookahead * torch.rand(G, device=device)).clamp(max=1.0)
        pos = self.pos.renoise(g.pos, g.t, t2, g.batch, G)
        tn, t2n = g.t[g.batch], t2[g.batch]
        a = torch.multinomial(self.atom.renoise_probs(g.atom_types, tn, t2n), 1).squeeze(-1)
        c = torch.multinomial(self.charge.renoise_probs(g.charges, tn, t2n), 1).squeeze(-1)
        src = g.batch[g.edge_index[0]]
        b = torch.multinomial(self.bond.renoise_probs(g.bond_types, g.t[src], t2[src]), 1).squeeze(-1)
        b = symmetrize_edges(b, g.edge_index, g.rev)
        return NoisyGraph(pos, a, c, b, g.edge_index, g.batch, t2, G, g.rev)

    def reverse_step(self, g: NoisyGraph, pred: tuple, s: torch.Tensor, temperature: float = 1.0,
                     deterministic: bool = False, generator: torch.Generator | None = None) -> NoisyGraph:
        """One reverse step of every variable from ``g`` (at ``g.t``) to the earlier times ``s [G]``, given the
        prediction ``pred = (pos0, atom, charge, bond logits)``: ancestral (or DDIM) coordinates, and classes drawn
        from the posteriors under ``softmax(logits / temperature)``; bonds drawn once per unordered pair."""
        pos0, la, lc, lb = pred
        G, T = g.num_graphs, temperature
        sn, tn = s[g.batch], g.t[g.batch]
        src = g.batch[g.edge_index[0]]
        se, te = s[src], g.t[src]
        pos = self.pos.step(g.pos, pos0, sn, tn, g.batch, G, deterministic, generator)
        a = self.atom.step(g.atom_types, (la / T).softmax(-1), sn, tn, generator)
        c = self.charge.step(g.charges, (lc / T).softmax(-1), sn, tn, generator)
        b = symmetrize_edges(self.bond.step(g.bond_types, (lb / T).softmax(-1), se, te, generator), g.edge_index, g.rev)
        return NoisyGraph(pos, a, c, b, g.edge_index, g.batch, s, G, g.rev)

    def rollout(self, denoiser: Denoiser, batch, t: torch.Tensor) -> tuple[NoisyGraph, tuple, torch.Tensor]:
        """The state at ``t [G]`` reached by one ancestral sampler step (:meth:`reverse_step`) from ``t + d``
        (``d ~ U(0, self_cond_rollout)``, capped at 1), with the prediction made there (no self-conditioning
        input); returns that state, the prediction as the self-conditioning input and the zero-CoM clean
        coordinates (as :meth:`noise`). Call under ``no_grad``."""
        t2 = (t + self.self_cond_rollout * torch.rand(t.shape[0], device=t.device)).clamp(max=1.0)
        g2, x0 = self.noise(batch, t2)
        out = self.denoise(denoiser, g2)
        return self.reverse_step(g2, out, t), self.self_cond_from(out), x0

    def time_weight(self, t: torch.Tensor) -> torch.Tensor:
        if self.time_weighting == "none":
            return torch.ones_like(t)
        lo, hi = self.snr_clip
        return self.pos.schedule.snr(t).clamp(lo, hi)

    def pos_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Weight of the coordinate term ``[G]``: ``time_weight``, or ``min(1/c_out^2, pos_weight_max)``."""
        if self.pos_weighting == "time":
            return self.time_weight(t)
        ab = self.pos.schedule.alpha_bar(t)
        sd2 = self.sigma_data**2
        inv_c_out2 = ((1 - ab) + sd2 * ab) / (sd2 * (1 - ab))
        return inv_c_out2.clamp(max=self.pos_weight_max)

    def loss(self, denoiser: Denoiser, batch, t: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """x0-parameterised loss: time-weighted coordinate MSE plus cross-entropies on clean classes.

        Each term is averaged per molecule first, then over molecules (so large molecules do not dominate);
        bonds count each unordered pair once.
        """
        if t is None:
            t = self.sample_t(batch.num_graphs, batch.pos.device)
        rollout = self.self_conditioning and self.self_cond_rollout > 0
        self_cond = None
        if rollout and torch.rand(()).item() < 0.5:  # the state at t comes from the roll-out, not from noise()
            with torch.no_grad():
                g, self_cond, x0 = self.rollout(denoiser, batch, t)
        else:
            g, x0 = self.noise(batch, t)
            if self.self_conditioning and not rollout and torch.rand(()).item() < 0.5:  # a CPU draw: no device sync
                with torch.no_grad():
                    first = self.lookahead(g) if self.self_cond_lookahead > 0 else g
                    self_cond = self.self_cond_from(self.denoise(denoiser, first))
        pred = self.denoise(denoiser, g, self_cond)
        return self.loss_terms(g, pred, (x0, batch.atom_types, batch.charges, batch.bond_types))

    def loss_terms(self, g: NoisyGraph, pred: tuple, target: tuple) -> dict[str, torch.Tensor]:
        """The weighted loss of a prediction ``pred = (pos0, atom, charge, bond logits)`` on ``g`` against
        ``target = (x0, atom, charge, bond classes)``: classes as indices, or as probabilities ``[.., K]`` (a
        teacher's soft answer; ``F.cross_entropy`` takes both). Each term is averaged per molecule first, then
        over molecules; bonds count each unordered pair once."""
        pos0, la, lc, lb = pred
        x0, ta, tc, tb = target
        G = g.num_graphs
        w = self.time_weight(g.t)  # [G]
        mse = scatter(((pos0 - x0) ** 2).sum(-1), g.batch, 0, dim_size=G, reduce="mean")
        ce_a = scatter(F.cross_entropy(la, ta, reduction="none"), g.batch, 0, dim_size=G, reduce="mean")
        ce_c = scatter(F.cross_entropy(lc, tc, reduction="none"), g.batch, 0, dim_size=G, reduce="mean")
        upper = g.edge_index[0] < g.edge_index[1]
        eb = g.batch[g.edge_index[0, upper]]
        ce_b = F.cross_entropy(lb[upper], tb[upper], reduction="none")
        ce_b = scatter(ce_b, eb, 0, dim_size=G, reduce="mean")
        terms = {"pos": mse, "atom_types": ce_a, "charges": ce_c, "bonds": ce_b}
        out = {k: (w * v).mean() for k, v in terms.items()}
        out["pos"] = (self.pos_weight(g.t) * mse).mean()
        out["loss"] = sum(self.loss_weights[k] * out[k] for k in terms)
        return out
