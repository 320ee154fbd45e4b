"""Property-predictor guidance: steer sampling toward target property values with the gradient of an
invariant property predictor, applied to each step's clean-molecule prediction.

At every step whose time lies in ``interval``, the denoiser's coordinate prediction ``x0`` is moved down
the gradient of the predictor's squared error (normalised units, summed over the given properties):

    x0 <- x0 - scale * d/dx0 sum_p w_p ((f_p(x0, types) - target_p) / std_p)^2

The predictor sees ``x0`` with the step's predicted atom-type and charge probabilities (soft one-hot
inputs), so it runs on a denoised molecule and needs no noisy training. With ``type_scale > 0`` the same
error's gradient also steps the predicted type and charge logits, so the guide can change which atoms the
molecule is likely to get, not only its shape. The reverse step then moves the
noisy state toward the corrected ``x0``. The predictor is E(3)-invariant, so the correction is
E(3)-equivariant and keeps every molecule's centre of mass. A per-atom cap (``max_step``) on each
correction keeps a badly predicted molecule from being torn apart.

Use a predictor trained on the generator's training molecules (QM9: ``train_b``), never the one that
scores the samples: guiding with the scorer would fit its errors, not the property.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch_geometric.utils import scatter


class PredictorGuidance:
    """A ``prediction_hook`` for :func:`moldiff.sampling.sampler.sample`.

    Args:
        predictor: a loaded ``PropertyModule`` (its ``net``, ``mean``, ``std``, ``properties``, ``vocab``).
        targets: ``[G, P]`` raw targets in the predictor's property order and units; NaN = not guided.
        scale: step size of the correction (squared Angstrom per normalised squared error).
        interval: ``(lo, hi)``: guide at the steps whose time ``t`` lies in it.
        max_step: largest correction of one atom in one step, Angstrom (``None``: no cap).
        weights: ``{property: w}``: that property's squared error counts ``w`` times (default 1 each), e.g.
            to guide an extensive property, whose gradient stretches the molecule, more gently.
        type_scale: step size on the predicted atom-type and charge logits (0: coordinates only). The same
            error's gradient with respect to the logits (through the softmax) moves them, each atom's change
            capped at ``max_logit_step``; the logits are invariant, so this keeps every symmetry.
        max_logit_step: largest change of one atom's logit vector in one step (L2; ``None``: no cap).
    """

    def __init__(self, predictor, targets: torch.Tensor, scale: float, interval: Sequence[float] = (0.0, 1.0),
                 max_step: float | None = 0.1, weights: dict[str, float] | None = None, type_scale: float = 0.0,
                 max_logit_step: float | None = 1.0) -> None:
        if not scale >= 0 or not type_scale >= 0:
            raise ValueError(f"the predictor-guidance scale and type_scale must be >= 0, got {scale}, {type_scale}")
        if max_logit_step is not None and not max_logit_step > 0:
            raise ValueError(f"the predictor-guidance max_logit_step must be > 0 or None, got {max_logit_step}")
        lo, hi = (float(v) for v in interval)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"the predictor-guidance interval must be [lo, hi] with 0 <= lo <= hi <= 1, got {list(interval)}")
        if max_step is not None and not max_step > 0:
            raise ValueError(f"the predictor-guidance max_step must be > 0 Angstrom or None, got {max_step}")
        if targets.dim() != 2 or targets.shape[1] != len(predictor.properties):
            raise ValueError(f"targets must be [molecules, {len(predictor.properties)}] (one column per predicted "
                             f"property: {predictor.properties}), got {list(targets.shape)}")
        unknown = sorted(set(weights or {}) - set(predictor.properties))
        if unknown or any(not float(w) >= 0 for w in (weights or {}).values()):
            raise ValueError(f"predictor-guidance weights must be >= 0 for properties of {predictor.properties}, "
                             f"got {dict(weights or {})}")
        self.predictor = predictor
        self.scale, self.lo, self.hi, self.max_step = float(scale), lo, hi, max_step
        self.type_scale, self.max_logit_step = float(type_scale), max_logit_step
        dev = predictor.mean.device
        targets = targets.to(dev, predictor.mean.dtype)
        self.mask = ~torch.isnan(targets)
        self.goal = torch.where(self.mask, (targets - predictor.mean) / predictor.std, torch.zeros((), device=dev))
        self.weight = torch.tensor([float((weights or {}).get(p, 1.0)) for p in predictor.properties],
                                   dtype=targets.dtype, device=dev)
        # decided once here, not at every step (no device sync in the sampling loop for it)
        self.guides_any = (self.scale > 0 or self.type_scale > 0) and bool((self.mask & (self.weight > 0)).any())

    def active(self, t: float) -> bool:
        return self.guides_any and self.lo <= t <= self.hi

    def error(self, pos: torch.Tensor, atom_probs: torch.Tensor, charge_probs: torch.Tensor, edge_index, batch,
              num_graphs: int, rev=None) -> torch.Tensor:
        """Per-molecule squared normalised error ``[G]`` of the predictor at ``pos`` (differentiable)."""
        feat = torch.cat([atom_probs, charge_probs], -1)
        y = self.predictor.net(pos, feat, edge_index, batch, num_graphs, rev=rev)
        err = torch.where(self.mask, y - self.goal, torch.zeros((), device=y.device))
        return (self.weight * err.pow(2)).sum(-1)

    def __call__(self, g, prediction: tuple) -> tuple:
        t = float(g.t[0])
        if not self.active(t):
            return prediction
        pos0, la, lc, lb = prediction
        if self.goal.shape[0] != g.num_graphs:
            raise ValueError(f"predictor guidance has targets for {self.goal.shape[0]} molecules, the batch has "
                             f"{g.num_graphs}")
        dt = self.goal.dtype  # the predictor's precision
        with torch.enable_grad():
            x = pos0.detach().to(dt).requires_grad_(True)
            a = la.detach().to(dt).requires_grad_(self.type_scale > 0)
            c = lc.detach().to(dt).requires_grad_(self.type_scale > 0)
            loss = self.error(x, a.softmax(-1), c.softmax(-1), g.edge_index, g.batch, g.num_graphs, g.rev).sum()
            grads = torch.autograd.grad(loss, (x, a, c) if self.type_scale > 0 else (x,))
        step = self.scale * grads[0]
        if self.max_step is not None:
            norm = step.norm(dim=-1, keepdim=True)
            step = step * (self.max_step / norm.clamp_min(self.max_step))
            # the cap acts per atom: put the centre of mass back where the predictor's gradient left it
            step = step - scatter(step, g.batch, 0, dim_size=g.num_graphs, reduce="mean")[g.batch]
        if self.type_scale > 0:
            la, lc = (logits - self._logit_step(d).to(logits.dtype) for logits, d in zip((la, lc), grads[1:]))
        return pos0 - step.to(pos0.dtype), la, lc, lb

    def _logit_step(self, grad: torch.Tensor) -> torch.Tensor:
        step = self.type_scale * grad
        if self.max_logit_step is not None:
            norm = step.norm(dim=-1, keepdim=True)
            step = step * (self.max_logit_step / norm.clamp_min(self.max_logit_step))
        return step
