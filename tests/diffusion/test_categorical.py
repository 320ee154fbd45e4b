"""Categorical diffusion: transition rows, marginals and the posterior against brute-force Bayes."""

import pytest
import torch

from moldiff.diffusion.categorical import CategoricalDiffusion, symmetrize_edges
from moldiff.diffusion.schedules import NoiseSchedule
from moldiff.utils.graph import full_edge_index, reverse_edge_index

MARG = [0.5, 0.3, 0.15, 0.05]


def make(transition):
    return CategoricalDiffusion(4, NoiseSchedule("cosine"), transition, MARG if transition == "marginal" else None)


def Qbar(d, t):
    ab = d.schedule.alpha_bar(torch.tensor(t, dtype=torch.float64)).item()
    S = d.num_states
    m = d.m.double()
    Q = ab * torch.eye(S, dtype=torch.float64) + (1 - ab) * m.expand(S, S)
    return Q


@pytest.mark.parametrize("transition", ["marginal", "uniform", "absorbing"])
def test_rows_sum_to_one_and_q_probs_match_matrix(transition):
    d = make(transition)
    for t in (0.1, 0.5, 0.9):
        Q = Qbar(d, t)
        assert torch.allclose(Q.sum(1), torch.ones(d.num_states, dtype=torch.float64))
        x0 = torch.arange(4)
        probs = d.q_probs(x0, torch.full((4,), t))
        assert torch.allclose(probs.double(), Q[:4], atol=1e-6)


@pytest.mark.parametrize("transition", ["marginal", "uniform", "absorbing"])
def test_posterior_is_bayes_rule(transition):
    """q(x_s|x_t,x0) = Q_{t|s}[x_s, x_t] Qbar_s[x0, x_s] / Qbar_t[x0, x_t], enumerated by brute force."""
    d = make(transition)
    s, t = 0.35, 0.8
    Qs, Qt = Qbar(d, s), Qbar(d, t)
    ab_s = d.schedule.alpha_bar(torch.tensor(s, dtype=torch.float64))
    ab_t = d.schedule.alpha_bar(torch.tensor(t, dtype=torch.float64))
    a = (ab_t / ab_s).item()
    S = d.num_states
    Qts = a * torch.eye(S, dtype=torch.float64) + (1 - a) * d.m.double().expand(S, S)
    # consistency of the chain: Qbar_t = Qbar_s Q_{t|s}
    assert torch.allclose(Qs @ Qts, Qt, atol=1e-6)
    for x0 in range(4):
        for xt in range(S):
            if Qt[x0, xt] < 1e-9:
                continue
            brute = Qts[:, xt] * Qs[x0, :] / Qt[x0, xt]
            got = d.posterior_probs(torch.tensor([xt]), torch.nn.functional.one_hot(torch.tensor([x0]), 4).float(),
                                    torch.tensor([s]), torch.tensor([t]))[0]
            assert torch.allclose(got.double(), brute, atol=1e-5), (x0, xt)


def test_posterior_with_soft_x0_is_mixture():
    d = make("marginal")
    p0 = torch.tensor([[0.2, 0.5, 0.1, 0.2]])
    xt, s, t = torch.tensor([1]), torch.tensor([0.4]), torch.tensor([0.6])
    got = d.posterior_probs(xt, p0, s, t)[0].double()
    # p(x_s|x_t) ∝ sum_k q(x_s|x_t,k) q(x_t|k) p0[k] / sum_k q(x_t|k) p0[k]  ... with the O(K) formula the
    # weights are p0[k] (x0-prediction already conditions on x_t), i.e. sum_k q(x_s|x_t,x0=k) p0[k].
    mix = sum(p0[0, k] * d.posterior_probs(xt, torch.eye(4)[k : k + 1], s, t)[0] for k in range(4)).double()
    assert torch.allclose(got, mix / mix.sum(), atol=1e-5)
    assert torch.isclose(got.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_forward_sample_frequencies():
    d = make("marginal")
    n = 40000
    x0 = torch.zeros(n, dtype=torch.long)
    xt = d.q_sample(x0, torch.full((n,), 0.7))
    freq = torch.bincount(xt, minlength=4).float() / n
    assert torch.allclose(freq, d.q_probs(x0[:1], torch.tensor([0.7]))[0], atol=0.01)


def test_marginal_required_and_unknown_transition():
    with pytest.raises(ValueError, match="marginal"):
        CategoricalDiffusion(3, NoiseSchedule(), "marginal")
    with pytest.raises(ValueError, match="absorbing"):
        CategoricalDiffusion(3, NoiseSchedule(), "mask")


def test_bond_noise_is_symmetric():
    d = make("marginal")
    ei = full_edge_index(7)
    rev = reverse_edge_index(ei, 7)
    b = symmetrize_edges(d.q_sample(torch.zeros(ei.shape[1], dtype=torch.long), torch.full((ei.shape[1],), 0.9)), ei, rev)
    assert torch.equal(b, b[rev])


@pytest.mark.parametrize("transition", ["marginal", "uniform", "absorbing"])
def test_renoise_continues_the_forward_process(transition):
    """Noising on from t to t2 composes with q(x_t|x0) into q(x_t2|x0) (the Chapman-Kolmogorov equation)."""
    d = make(transition)
    S = d.num_states
    for t, t2 in [(0.1, 0.3), (0.4, 0.45), (0.5, 1.0), (0.7, 0.7)]:
        step = d.renoise_probs(torch.arange(S), torch.full((S,), t), torch.full((S,), t2)).double()  # [S,S]
        assert torch.allclose(step.sum(1), torch.ones(S, dtype=torch.float64))
        assert torch.allclose(Qbar(d, t)[:4] @ step, Qbar(d, t2)[:4], atol=1e-5)
