r"""Discrete (D3PM-style) diffusion for atom types, formal charges and bonds.

Transition towards a stationary distribution :math:`m` (``marginal``: the data marginal, ``uniform``,
or ``absorbing``: an extra [MASK] state). With :math:`\bar\alpha_t` from a schedule,

.. math::
    \bar Q_t = \bar\alpha_t I + (1-\bar\alpha_t)\,\mathbf 1 m^\top,\qquad
    q(x_t|x_0) = \bar\alpha_t\,x_0 + (1-\bar\alpha_t)\,m,

and for :math:`s<t`, :math:`Q_{t|s} = \alpha_{t|s} I + (1-\alpha_{t|s})\mathbf 1 m^\top` with
:math:`\alpha_{t|s} = \bar\alpha_t/\bar\alpha_s`. The posterior (Bayes' rule)

.. math::
    q(x_s|x_t,x_0) = \frac{q(x_t|x_s)\,q(x_s|x_0)}{q(x_t|x_0)}

is computed in closed form; with an x0-prediction :math:`p_\theta(x_0|x_t)` the reverse step is
:math:`p(x_s|x_t) = \sum_k q(x_s|x_t,x_0=k)\,p_\theta(x_0=k|x_t)`, evaluated in O(K).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from moldiff.diffusion.schedules import NoiseSchedule

Transition = Literal["marginal", "uniform", "absorbing"]
TRANSITIONS = ("marginal", "uniform", "absorbing")


class CategoricalDiffusion:
    """One categorical variable with ``num_classes`` clean classes.

    Args:
        num_classes: K clean classes (the model predicts logits over these).
        schedule: the noise schedule.
        transition: ``marginal`` (needs ``marginal``), ``uniform`` or ``absorbing`` (adds state K = [MASK]).
        marginal: data class frequencies ``[K]``.
    """

    def __init__(
        self,
        num_classes: int,
        schedule: NoiseSchedule,
        transition: Transition = "marginal",
        marginal: Sequence[float] | torch.Tensor | None = None,
        floor: float = 1e-4,
    ) -> None:
        if transition not in TRANSITIONS:
            raise ValueError(f"unknown transition {transition!r}; choose from {list(TRANSITIONS)}")
        self.num_classes = num_classes
        self.schedule = schedule
        self.transition = transition
        if transition == "marginal":
            if marginal is None:
                raise ValueError("transition='marginal' needs the data marginal")
            m = torch.as_tensor(marginal, dtype=torch.float64)
            if m.numel() != num_classes:
                raise ValueError(f"marginal has {m.numel()} entries, expected {num_classes}")
            m = m.clamp_min(floor)  # every class reachable
            self.m = (m / m.sum()).float()
        elif transition == "uniform":
            self.m = torch.full((num_classes,), 1.0 / num_classes)
        else:
            self.m = torch.zeros(num_classes + 1)
            self.m[-1] = 1.0

    @property
    def num_states(self) -> int:
        """Noisy-state count fed to the network (K, or K+1 with the absorbing [MASK])."""
        return self.m.numel()

    def _m(self, like: torch.Tensor) -> torch.Tensor:
        return self.m.to(device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float32)

    def _pad(self, p: torch.Tensor) -> torch.Tensor:
        """Clean-class probabilities ``[n,K]`` -> state space ``[n,S]``."""
        if p.shape[-1] == self.num_states:
            return p
        return torch.nn.functional.pad(p, (0, self.num_states - p.shape[-1]))

    def q_probs(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """:math:`q(x_t|x_0)` ``[n,S]`` for ``x0`` class indices ``[n]`` and per-item times ``t [n]``."""
        onehot = torch.nn.functional.one_hot(x0, self.num_states).float()
        ab = self.schedule.alpha_bar(t).unsqueeze(-1)
        return ab * onehot + (1 - ab) * self._m(onehot)

    def renoise_probs(self, x_t: torch.Tensor, t: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        r""":math:`q(x_{t_2}|x_t) = \alpha_{t_2|t}\,x_t + (1-\alpha_{t_2|t})\,m` ``[n,S]`` for ``t2 >= t``
        (per item ``[n]``): the forward process continued from the states ``x_t``."""
        onehot = torch.nn.functional.one_hot(x_t, self.num_states).float()
        ratio = (self.schedule.alpha_bar(t2) / self.schedule.alpha_bar(t)).clamp(max=1.0).unsqueeze(-1)
        return ratio * onehot + (1 - ratio) * self._m(onehot)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw :math:`x_t` state indices ``[n]``."""
        return torch.multinomial(self.q_probs(x0, t), 1, generator=generator).squeeze(-1)

    def posterior_probs(self, x_t: torch.Tensor, p0: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """:math:`p(x_s|x_t) = \\sum_k q(x_s|x_t,x_0=k)\\,p_0[k]` ``[n,S]``.

        Args:
            x_t: noisy states ``[n]``.
            p0: clean-class probabilities ``[n,K]`` (one-hot gives the exact posterior).
            s, t: times ``[n]`` with ``s < t``.
        """
        p0 = self._pad(p0.float())
        m = self._m(p0)
        ab_t = self.schedule.alpha_bar(t).unsqueeze(-1)
        ab_s = self.schedule.alpha_bar(s).unsqueeze(-1)
        a_ts = ab_t / ab_s
        xt = torch.nn.functional.one_hot(x_t, self.num_states).float()
        m_xt = (m * xt).sum(-1, keepdim=True)  # m[x_t]
        # A[x_s] = q(x_t | x_s) as a function of x_s
        A = a_ts * xt + (1 - a_ts) * m_xt
        # Z_k = q(x_t | x0 = k)
        Z = ab_t * xt + (1 - ab_t) * m_xt
        w = p0 / Z.clamp_min(1e-12)
        C = ab_s * w + (1 - ab_s) * m * w.sum(-1, keepdim=True)
        post = A * C
        return post / post.sum(-1, keepdim=True).clamp_min(1e-12)

    def step(self, x_t: torch.Tensor, p0: torch.Tensor, s: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample :math:`x_s \\sim p(x_s|x_t)`."""
        return torch.multinomial(self.posterior_probs(x_t, p0, s, t), 1, generator=generator).squeeze(-1)

    def prior(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` states from the stationary distribution ``m``."""
        m = self.m.to(device)
        return torch.multinomial(m.expand(n, -1), 1, replacement=True, generator=generator).squeeze(-1) if n else torch.zeros(0, dtype=torch.long, device=device)


def symmetrize_edges(values: torch.Tensor, edge_index: torch.Tensor, rev: torch.Tensor) -> torch.Tensor:
    """Keep the value drawn for ``(i, j)``, ``i < j``, on both directions: ``[E, ...]``."""
    upper = edge_index[0] < edge_index[1]
    return torch.where(upper.view(-1, *([1] * (values.dim() - 1))), values, values[rev])
