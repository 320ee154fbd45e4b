r"""Variance-preserving Gaussian diffusion of coordinates in the zero-centre-of-mass subspace.

Forward: :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon`, with :math:`\epsilon`
Gaussian projected to zero CoM per molecule (so :math:`x_t` keeps zero CoM when :math:`x_0` has it).

Posterior for any :math:`s < t` (Ho et al. 2020, eq. 7, generalised to a continuous grid):
:math:`\alpha_{t|s} = \bar\alpha_t/\bar\alpha_s`, :math:`\beta_{t|s} = 1 - \alpha_{t|s}`,

.. math::
    \mu = \frac{\sqrt{\bar\alpha_s}\,\beta_{t|s}}{1-\bar\alpha_t} x_0
        + \frac{\sqrt{\alpha_{t|s}}\,(1-\bar\alpha_s)}{1-\bar\alpha_t} x_t, \qquad
    \sigma^2 = \frac{(1-\bar\alpha_s)\,\beta_{t|s}}{1-\bar\alpha_t}.

The network predicts :math:`\hat x_0` (x0-parameterisation). DDIM (Song et al. 2021, eta = 0):
:math:`x_s = \sqrt{\bar\alpha_s}\hat x_0 + \sqrt{1-\bar\alpha_s}\hat\epsilon`,
:math:`\hat\epsilon = (x_t - \sqrt{\bar\alpha_t}\hat x_0)/\sqrt{1-\bar\alpha_t}`.
"""

from __future__ import annotations

import torch

from moldiff.diffusion.schedules import NoiseSchedule
from moldiff.utils.geometry import zero_com


class GaussianDiffusion:
    """Coordinate noise process; all tensors are per node with a ``batch`` index."""

    def __init__(self, schedule: NoiseSchedule) -> None:
        self.schedule = schedule

    def noise_like(self, pos: torch.Tensor, batch: torch.Tensor, num_graphs: int, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(pos.shape, generator=generator, device=pos.device, dtype=pos.dtype)
        return zero_com(eps, batch, num_graphs)

    def q_sample(
        self, x0: torch.Tensor, t: torch.Tensor, batch: torch.Tensor, num_graphs: int, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw :math:`x_t \\sim q(x_t|x_0)`. ``x0 [N,3]`` zero-CoM, ``t [G]``. Returns ``(x_t, eps)``."""
        if noise is None:
            noise = self.noise_like(x0, batch, num_graphs)
        ab = self.schedule.alpha_bar(t)[batch].unsqueeze(-1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise, noise

    def renoise(
        self, x_t: torch.Tensor, t: torch.Tensor, t2: torch.Tensor, batch: torch.Tensor, num_graphs: int
    ) -> torch.Tensor:
        r"""Draw :math:`x_{t_2} \sim q(x_{t_2}|x_t)` for ``t2 >= t`` (per molecule ``[G]``): the forward process
        continued, :math:`\sqrt{\bar\alpha_{t_2}/\bar\alpha_t}\,x_t + \sqrt{1-\bar\alpha_{t_2}/\bar\alpha_t}\,\epsilon`."""
        ratio = (self.schedule.alpha_bar(t2) / self.schedule.alpha_bar(t)).clamp(max=1.0)[batch].unsqueeze(-1)
        return ratio.sqrt() * x_t + (1 - ratio).sqrt() * self.noise_like(x_t, batch, num_graphs)

    def posterior(
        self, x_t: torch.Tensor, x0: torch.Tensor, s: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``[N,3]`` and std ``[N,1]`` of :math:`q(x_s|x_t,x_0)`; ``s``, ``t`` per node ``[N]``."""
        ab_t = self.schedule.alpha_bar(t).unsqueeze(-1)
        ab_s = self.schedule.alpha_bar(s).unsqueeze(-1)
        a_ts = ab_t / ab_s
        b_ts = 1 - a_ts
        mean = (ab_s.sqrt() * b_ts / (1 - ab_t)) * x0 + (a_ts.sqrt() * (1 - ab_s) / (1 - ab_t)) * x_t
        var = (1 - ab_s) * b_ts / (1 - ab_t)
        return mean, var.clamp_min(0).sqrt()

    def step(
        self,
        x_t: torch.Tensor,
        x0_hat: torch.Tensor,
        s: torch.Tensor,
        t: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One reverse step ``t -> s`` (per node times): ancestral (posterior sample) or DDIM."""
        if deterministic:
            ab_t = self.schedule.alpha_bar(t).unsqueeze(-1)
            ab_s = self.schedule.alpha_bar(s).unsqueeze(-1)
            eps = (x_t - ab_t.sqrt() * x0_hat) / (1 - ab_t).sqrt()
            return zero_com(ab_s.sqrt() * x0_hat + (1 - ab_s).sqrt() * eps, batch, num_graphs)
        mean, std = self.posterior(x_t, x0_hat, s, t)
        return zero_com(mean, batch, num_graphs) + std * self.noise_like(x_t, batch, num_graphs, generator)

    def prior(self, n: int, batch: torch.Tensor, num_graphs: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """:math:`x_1 \\sim N(0, I)` projected to zero CoM."""
        eps = torch.randn((n, 3), generator=generator, device=device)
        return zero_com(eps, batch, num_graphs)
