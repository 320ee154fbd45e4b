"""Schedules and the Gaussian coordinate process against closed forms."""

import math

import pytest
import torch

from moldiff.diffusion.gaussian import GaussianDiffusion
from moldiff.diffusion.schedules import NoiseSchedule
from moldiff.utils.geometry import center_of_mass


@pytest.mark.parametrize("name", ["cosine", "polynomial"])
def test_alpha_bar_monotone_and_bounded(name):
    s = NoiseSchedule(name)
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    ab = s.alpha_bar(t)
    assert (ab[1:] <= ab[:-1]).all()
    assert ab[0] > 0.999 and ab[-1] < 1e-3
    assert (ab > 0).all() and (ab < 1).all()


def test_cosine_closed_form():
    s = NoiseSchedule("cosine", s=0.008)
    t = torch.tensor([0.25, 0.5], dtype=torch.float64)
    f = lambda x: math.cos((x + 0.008) / 1.008 * math.pi / 2) ** 2
    expected = torch.tensor([f(0.25) / f(0.0), f(0.5) / f(0.0)], dtype=torch.float64)
    assert torch.allclose(s.alpha_bar(t), expected)


def test_unknown_schedule_lists_choices():
    with pytest.raises(ValueError, match="cosine"):
        NoiseSchedule("linearr")


def copies_of_one_molecule(n_graphs: int = 4000, n: int = 5):
    """``n_graphs`` copies of one random zero-CoM ``n``-atom molecule: ``(x0 [n_graphs*n, 3], batch)``."""
    torch.manual_seed(0)
    batch = torch.arange(n_graphs).repeat_interleave(n)
    x0 = torch.randn(n, 3, dtype=torch.float64).repeat(n_graphs, 1)
    return x0 - x0[:n].mean(0), batch


def test_forward_moments_and_zero_com():
    diff = GaussianDiffusion(NoiseSchedule("cosine"))
    n_graphs, n = 4000, 5
    x0, batch = copies_of_one_molecule(n_graphs, n)
    t = torch.full((n_graphs,), 0.5, dtype=torch.float64)
    xt, eps = diff.q_sample(x0, t, batch, n_graphs)
    ab = diff.schedule.alpha_bar(torch.tensor(0.5, dtype=torch.float64))
    assert center_of_mass(xt, batch, n_graphs).abs().max() < 1e-10
    mean = xt.view(n_graphs, n, 3).mean(0)
    assert torch.allclose(mean, ab.sqrt() * x0[:n], atol=0.05)
    # zero-CoM noise on n atoms has per-coordinate variance (n-1)/n
    var = eps.view(n_graphs, n, 3).var(0)
    assert torch.allclose(var, torch.full_like(var, (n - 1) / n), atol=0.06)


def test_posterior_matches_gaussian_product():
    """q(x_s|x_t,x0) mean/var from the closed form equal the product of q(x_t|x_s) q(x_s|x0) (1-D check)."""
    diff = GaussianDiffusion(NoiseSchedule("cosine"))
    s, t = torch.tensor([0.3], dtype=torch.float64), torch.tensor([0.7], dtype=torch.float64)
    x0, xt = torch.tensor([[1.3, 0, 0]], dtype=torch.float64), torch.tensor([[-0.4, 0, 0]], dtype=torch.float64)
    mean, std = diff.posterior(xt, x0, s, t)
    ab_s, ab_t = diff.schedule.alpha_bar(s), diff.schedule.alpha_bar(t)
    a = ab_t / ab_s
    # prior q(x_s|x0) = N(sqrt(ab_s) x0, 1-ab_s); likelihood q(x_t|x_s) = N(sqrt(a) x_s, 1-a)
    prec = 1 / (1 - ab_s) + a / (1 - a)
    m = (ab_s.sqrt() * x0[0, 0] / (1 - ab_s) + a.sqrt() * xt[0, 0] / (1 - a)) / prec
    assert torch.allclose(mean[0, 0], m[0])
    assert torch.allclose(std[0, 0] ** 2, 1 / prec[0])


def test_ddim_step_recovers_x0_at_s0():
    diff = GaussianDiffusion(NoiseSchedule("cosine"))
    batch = torch.zeros(4, dtype=torch.long)
    x0 = torch.randn(4, 3, dtype=torch.float64)
    x0 -= x0.mean(0)
    xt = torch.randn(4, 3, dtype=torch.float64)
    xt -= xt.mean(0)
    out = diff.step(xt, x0, torch.zeros(4, dtype=torch.float64), torch.full((4,), 0.5, dtype=torch.float64), batch, 1, deterministic=True)
    assert torch.allclose(out, x0, atol=3e-2)  # alpha_bar(0) = 1 - 1e-5 after clamping


def test_renoise_continues_the_forward_process():
    """x_t2 drawn from x_t ~ q(x_t|x0) has the moments of q(x_t2|x0) and stays zero-CoM."""
    diff = GaussianDiffusion(NoiseSchedule("cosine"))
    n_graphs, n = 4000, 5
    x0, batch = copies_of_one_molecule(n_graphs, n)
    t = torch.full((n_graphs,), 0.3, dtype=torch.float64)
    t2 = torch.full((n_graphs,), 0.6, dtype=torch.float64)
    xt, _ = diff.q_sample(x0, t, batch, n_graphs)
    x2 = diff.renoise(xt, t, t2, batch, n_graphs)
    ab2 = diff.schedule.alpha_bar(torch.tensor(0.6, dtype=torch.float64))
    assert center_of_mass(x2, batch, n_graphs).abs().max() < 1e-10
    assert torch.allclose(x2.view(n_graphs, n, 3).mean(0), ab2.sqrt() * x0[:n], atol=0.05)
    var = x2.view(n_graphs, n, 3).var(0)
    assert torch.allclose(var, torch.full_like(var, (1 - ab2.item()) * (n - 1) / n), atol=0.06)
    assert torch.equal(diff.renoise(xt, t, t, batch, n_graphs), xt)  # no time to noise on: unchanged
