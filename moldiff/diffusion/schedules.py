r"""Continuous-time noise schedules :math:`\bar\alpha(t)`, :math:`t \in [0, 1]`.

Both are monotonically decreasing from :math:`\bar\alpha(0) \approx 1` to :math:`\bar\alpha(1) \approx 0`.
Any time grid can be used at sampling time; training draws ``t ~ U(t_min, 1)``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

ScheduleName = Literal["cosine", "polynomial"]
SCHEDULES = ("cosine", "polynomial")


class NoiseSchedule:
    r"""Signal level :math:`\bar\alpha(t)`.

    * ``cosine`` (Nichol & Dhariwal 2021): :math:`\bar\alpha(t) = f(t)/f(0)`,
      :math:`f(t) = \cos^2\big(\tfrac{t + s}{1 + s}\tfrac{\pi}{2}\big)`, scaled by ``nu`` in the exponent
      (:math:`\bar\alpha^{\nu}`; ``nu > 1`` destroys information earlier, useful for categorical features).
    * ``polynomial`` (EDM, Hoogeboom et al. 2022): :math:`\bar\alpha(t) = (1 - 2s)(1 - t^p)^2 + s`.

    Values are clamped to ``[eps, 1 - eps]`` so SNRs stay finite.

    Args:
        name: ``cosine`` or ``polynomial``.
        s: offset (cosine, default 0.008) or precision (polynomial, default 1e-5).
        power: polynomial exponent ``p``.
        nu: exponent on the cosine schedule.
    """

    def __init__(self, name: ScheduleName = "cosine", s: float | None = None, power: float = 2.0, nu: float = 1.0, eps: float = 1e-5):
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}; choose from {list(SCHEDULES)}")
        if s is None:
            s = 0.008 if name == "cosine" else 1e-5
        self.name, self.s, self.power, self.nu, self.eps = name, s, power, nu, eps

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        t = t.clamp(0.0, 1.0)
        if self.name == "cosine":
            f = torch.cos((t + self.s) / (1 + self.s) * math.pi / 2) ** 2
            f0 = math.cos(self.s / (1 + self.s) * math.pi / 2) ** 2
            ab = (f / f0) ** self.nu
        else:
            ab = (1 - 2 * self.s) * (1 - t**self.power) ** 2 + self.s
        return ab.clamp(self.eps, 1 - self.eps)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar(t)
        return ab / (1 - ab)

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.name!r}, s={self.s}, power={self.power}, nu={self.nu})"
