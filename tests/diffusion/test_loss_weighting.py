"""The training loss against closed forms: per-molecule averaging, the coordinate weights
(signal-to-noise clip, or the preconditioned 1/c_out^2 with its cap), and the class terms."""

import math

import pytest
import torch

from moldiff.data.vocab import QM9_VOCAB
from moldiff.training.builders import build_diffusion
from moldiff.utils.geometry import zero_com

STATS = {"atom_type_marginal": [0.5, 0.3, 0.1, 0.08, 0.02], "charge_marginal": [0.01, 0.98, 0.01],
         "bond_marginal": [0.85, 0.1, 0.03, 0.02]}


def offset_denoiser(batch, shift: torch.Tensor, logits: str = "uniform"):
    """Predicts the clean coordinates moved by ``shift[g]`` (a per-molecule offset of length |shift|), and
    either uniform logits or (nearly) one-hot logits of the true classes."""

    def f(pos, h, ei, e, b, t, G, **kw):
        x0 = zero_com(batch.pos, batch.batch, G) + shift[batch.batch]
        def cls(target, k):
            if logits == "uniform":
                return torch.zeros(len(target), k)
            return torch.nn.functional.one_hot(target, k).float() * 60.0
        return (x0, cls(batch.atom_types, QM9_VOCAB.num_atom_types), cls(batch.charges, QM9_VOCAB.num_charges),
                cls(batch.bond_types, QM9_VOCAB.num_bond_types))

    return f


@pytest.mark.parametrize("pos_weighting", ["time", "precond"])
def test_coordinate_term_matches_the_closed_form(graph_factory, pos_weighting):
    cfg = {"pos_weighting": pos_weighting, "sigma_data": 1.4, "pos_weight_max": 50.0, "time_weighting": "snr_clip"}
    diff = build_diffusion(cfg, QM9_VOCAB, STATS)
    batch = graph_factory(num_graphs=3, lo=3, hi=9, num_types=5, num_charges=3, seed=2)
    shift = torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 0.3]])
    t = torch.tensor([0.02, 0.5, 0.97])
    out = diff.loss(offset_denoiser(batch, shift), batch, t)
    mse = (shift**2).sum(1)  # every atom of molecule g is off by shift[g]: its per-molecule mean
    ab = diff.pos.schedule.alpha_bar(t)
    if pos_weighting == "precond":
        sd2 = 1.4**2
        w = (((1 - ab) + sd2 * ab) / (sd2 * (1 - ab))).clamp(max=50.0)
        assert w[0] == 50.0 and w[2] < 50.0  # the cap binds near t = 0 only
    else:
        lo, hi = diff.snr_clip
        w = (ab / (1 - ab)).clamp(lo, hi)
    assert out["pos"].item() == pytest.approx((w * mse).mean().item(), rel=1e-5)


def test_class_terms_are_per_molecule_means_of_cross_entropy(graph_factory):
    diff = build_diffusion({"time_weighting": "none"}, QM9_VOCAB, STATS)
    batch = graph_factory(num_graphs=2, lo=3, hi=10, num_types=5, num_charges=3, seed=4)
    t = torch.tensor([0.3, 0.6])
    uniform = diff.loss(offset_denoiser(batch, torch.zeros(2, 3)), batch, t)
    # uniform logits: cross-entropy log K for every atom / pair, whatever the molecule sizes
    assert uniform["atom_types"].item() == pytest.approx(math.log(QM9_VOCAB.num_atom_types), rel=1e-6)
    assert uniform["charges"].item() == pytest.approx(math.log(QM9_VOCAB.num_charges), rel=1e-6)
    assert uniform["bonds"].item() == pytest.approx(math.log(QM9_VOCAB.num_bond_types), rel=1e-6)
    assert uniform["pos"].item() == pytest.approx(0.0, abs=1e-10)
    w = diff.loss_weights
    assert uniform["loss"].item() == pytest.approx(sum(w[k] * uniform[k].item() for k in ("atom_types", "charges", "bonds")))
    exact = diff.loss(offset_denoiser(batch, torch.zeros(2, 3), logits="onehot"), batch, t)
    assert exact["loss"].item() == pytest.approx(0.0, abs=1e-6)


def test_molecules_count_equally_whatever_their_size(graph_factory):
    """An error only in the small molecule weighs as much as the same error only in the large one."""
    diff = build_diffusion({"time_weighting": "none", "pos_weighting": "time"}, QM9_VOCAB, STATS)
    batch = graph_factory(num_graphs=2, lo=3, hi=12, num_types=5, num_charges=3, seed=1)
    sizes = batch.ptr.diff()
    assert sizes[0] != sizes[1]
    t = torch.tensor([0.5, 0.5])
    a = diff.loss(offset_denoiser(batch, torch.tensor([[0.3, 0, 0], [0, 0, 0]])), batch, t)["pos"]
    b = diff.loss(offset_denoiser(batch, torch.tensor([[0, 0, 0], [0.3, 0, 0]])), batch, t)["pos"]
    assert a.item() == pytest.approx(b.item(), rel=1e-6) and a.item() == pytest.approx(0.09 / 2, rel=1e-6)


@pytest.mark.parametrize("lookahead", [0.0, 0.2])
def test_self_conditioning_input_is_predicted_at_a_later_time_with_lookahead(graph_factory, lookahead):
    """With ``self_cond_lookahead`` the fed-back prediction is made at t + U(0, lookahead) on the molecule noised
    on from t (as sampling feeds back the previous, noisier step); the trained prediction stays at t."""
    diff = build_diffusion({"self_cond_lookahead": lookahead}, QM9_VOCAB, STATS, self_conditioning=True)
    batch = graph_factory(num_graphs=6, lo=3, hi=8, num_types=5, num_charges=3, seed=5)
    t = torch.tensor([0.05, 0.2, 0.4, 0.6, 0.85, 0.95])
    calls = []
    inner = offset_denoiser(batch, torch.zeros(6, 3))

    def spy(pos, h, ei, e, b, tt, G, **kw):
        calls.append((tt.clone(), kw.get("self_cond") is not None))
        return inner(pos, h, ei, e, b, tt, G, **kw)

    torch.manual_seed(0)
    while not any(with_sc for _, with_sc in calls):  # the self-conditioning coin comes up heads half the time
        calls.clear()
        diff.loss(spy, batch, t)
    (first, _), (trained, with_sc) = calls
    assert with_sc and torch.equal(trained, t)
    assert (first >= t).all() and (first <= (t + lookahead).clamp(max=1.0) + 1e-6).all()
    assert torch.equal(first, t) == (lookahead == 0.0)
    with pytest.raises(ValueError, match="self_cond_lookahead must be in"):
        build_diffusion({"self_cond_lookahead": 1.5}, QM9_VOCAB, STATS, self_conditioning=True)


def test_self_conditioning_rollout_trains_on_one_sampler_step_from_a_later_time(graph_factory):
    """With ``self_cond_rollout`` the fed-back prediction is made at t + U(0, d) on the molecule noised from clean
    there, and the trained state at t is one ancestral step from it, taken with that prediction."""
    diff = build_diffusion({"self_cond_rollout": 0.2}, QM9_VOCAB, STATS, self_conditioning=True)
    batch = graph_factory(num_graphs=6, lo=3, hi=8, num_types=5, num_charges=3, seed=5)
    t = torch.tensor([0.05, 0.2, 0.4, 0.6, 0.85, 0.95])
    calls = []
    inner = offset_denoiser(batch, torch.zeros(6, 3))

    def spy(pos, h, ei, e, b, tt, G, **kw):
        calls.append((tt.clone(), pos.clone(), e.clone(), kw.get("self_cond")))
        return inner(pos, h, ei, e, b, tt, G, **kw)

    torch.manual_seed(0)
    while not any(sc is not None for *_, sc in calls):
        calls.clear()
        out = diff.loss(spy, batch, t)
    (first, pos_first, _, sc_first), (trained, pos_t, e_t, sc) = calls
    assert sc_first is None and torch.equal(trained, t) and torch.isfinite(out["loss"])
    assert (first >= t).all() and (first <= (t + 0.2).clamp(max=1.0) + 1e-6).all() and not torch.equal(first, t)
    # the fed-back coordinates are the first call's prediction (the clean molecule: a zero offset)
    assert torch.allclose(sc[0], inner(pos_first, None, batch.edge_index, None, batch.batch, first, 6)[0])
    # the trained state: zero centre of mass per molecule, bonds the same both ways
    from torch_geometric.utils import scatter

    from moldiff.utils.graph import reverse_edge_index
    assert scatter(pos_t, batch.batch, 0, reduce="mean").abs().max() < 1e-5
    rev = reverse_edge_index(batch.edge_index, batch.num_nodes)
    assert torch.equal(e_t, e_t[rev])
    with pytest.raises(ValueError, match="alternatives"):
        build_diffusion({"self_cond_rollout": 0.1, "self_cond_lookahead": 0.1}, QM9_VOCAB, STATS, self_conditioning=True)


def test_training_times_low_fraction():
    """t_low_fraction replaces that fraction of the U(0, 1) draws by U(0, t_low_max) draws; off by default,
    where the draws are exactly torch.rand's."""
    G = 40000
    torch.manual_seed(0)
    plain = build_diffusion({}, QM9_VOCAB, STATS).sample_t(G, "cpu")
    torch.manual_seed(0)
    assert torch.equal(plain, torch.rand(G))
    torch.manual_seed(0)
    t = build_diffusion({"t_low_fraction": 0.3, "t_low_max": 0.02}, QM9_VOCAB, STATS).sample_t(G, "cpu")
    assert bool(((t >= 0) & (t < 1)).all())
    # P(t < 0.02) = 0.3 + 0.7 * 0.02; P(t < 0.01) = 0.3 / 2 + 0.7 * 0.01
    assert float((t < 0.02).float().mean()) == pytest.approx(0.314, abs=0.01)
    assert float((t < 0.01).float().mean()) == pytest.approx(0.157, abs=0.01)
    assert float((t > 0.5).float().mean()) == pytest.approx(0.35, abs=0.01)
    t = build_diffusion({"t_sampling": "beta", "t_low_fraction": 0.5, "t_low_max": 0.1}, QM9_VOCAB, STATS).sample_t(G, "cpu")
    assert float((t < 0.1).float().mean()) > 0.5
    for bad in ({"t_low_fraction": 1.5}, {"t_low_max": 0.0}):
        with pytest.raises(ValueError, match="t_low"):
            build_diffusion(bad, QM9_VOCAB, STATS)
