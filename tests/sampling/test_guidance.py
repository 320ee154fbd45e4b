"""Property-predictor guidance: an E(3)- and permutation-equivariant correction of the clean-coordinate
prediction that lowers the predictor's error, acts only in its time interval, caps each atom's move and
keeps the centre of mass; the sampler applies it at every step."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch_geometric.utils import scatter

from moldiff.diffusion.joint import NoisyGraph
from moldiff.models.property import PropertyPredictor
from moldiff.sampling.guidance import PredictorGuidance
from moldiff.sampling.sampler import sample
from moldiff.utils.geometry import random_rotation, zero_com
from moldiff.utils.graph import reverse_edge_index
from tests.sampling.test_sampling import fn, toy_model


def predictor(dtype=torch.float64, types=3, charges=3, props=2):
    torch.manual_seed(0)
    net = PropertyPredictor(types + charges, num_scalars=16, num_vectors=4, edge_dim=8, num_layers=2, num_rbf=8,
                            num_outputs=props).to(dtype).eval()
    return SimpleNamespace(net=net, properties=[f"p{k}" for k in range(props)],
                           mean=torch.zeros(props, dtype=dtype), std=torch.full((props,), 2.0, dtype=dtype))


def state(b, t=0.5):
    G = b.num_graphs
    return NoisyGraph(b.pos, b.atom_types, b.charges, torch.zeros(b.edge_index.shape[1], dtype=torch.long),
                      b.edge_index, b.batch, torch.full((G,), t, dtype=b.pos.dtype), G,
                      reverse_edge_index(b.edge_index, b.num_nodes))


def prediction(b, seed=1):
    g = torch.Generator().manual_seed(seed)
    pos0 = zero_com(b.pos, b.batch, b.num_graphs)
    la = torch.randn(b.num_nodes, 3, generator=g, dtype=b.pos.dtype)
    lc = torch.randn(b.num_nodes, 3, generator=g, dtype=b.pos.dtype)
    return pos0, la, lc, torch.zeros(b.edge_index.shape[1], 4, dtype=b.pos.dtype)


def targets(G, dtype=torch.float64):
    t = torch.tensor([[3.0, float("nan")]] * G, dtype=dtype)
    t[0, 1] = -1.0
    return t


def test_correction_is_e3_equivariant_and_translation_free(graph_factory):
    b = graph_factory(num_graphs=2, lo=4, hi=7, num_types=3, dtype=torch.float64, seed=5)
    guide = PredictorGuidance(predictor(), targets(2), scale=0.3, max_step=None)
    pred = prediction(b)
    moved = guide(state(b), pred)[0] - pred[0]
    assert moved.abs().max() > 1e-6
    for reflect in (False, True):
        R = random_rotation(torch.Generator().manual_seed(3), dtype=torch.float64, reflect=reflect)
        shift = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
        p2 = (pred[0] @ R.T + shift, *pred[1:])
        out = guide(state(b), p2)[0] - p2[0]
        assert torch.allclose(out, moved @ R.T, atol=1e-10)


def test_correction_is_permutation_equivariant(graph_factory):
    b = graph_factory(num_graphs=1, lo=6, hi=6, num_types=3, dtype=torch.float64, seed=2)
    guide = PredictorGuidance(predictor(), targets(1), scale=0.3, max_step=None)
    pred = prediction(b)
    moved = guide(state(b), pred)[0] - pred[0]
    perm = torch.randperm(b.num_nodes, generator=torch.Generator().manual_seed(4))
    # a single fully connected molecule keeps the same edge list under any atom order
    p2 = (pred[0][perm], pred[1][perm], pred[2][perm], pred[3])
    out = guide(state(b), p2)[0] - p2[0]
    assert torch.allclose(out, moved[perm], atol=1e-10)


def test_a_small_step_lowers_the_predictor_error_of_given_properties_only(graph_factory):
    b = graph_factory(num_graphs=3, lo=4, hi=8, num_types=3, dtype=torch.float64, seed=7)
    pred = prediction(b)
    tg = targets(3)
    guide = PredictorGuidance(predictor(), tg, scale=0.01, max_step=None)
    probs = pred[1].softmax(-1), pred[2].softmax(-1)

    def err(pos):
        return guide.error(pos, *probs, b.edge_index, b.batch, b.num_graphs)

    before, after = err(pred[0]), err(guide(state(b), pred)[0])
    assert (after < before).all()
    # no property given at all: nothing moves
    none = PredictorGuidance(predictor(), torch.full((3, 2), float("nan"), dtype=torch.float64), scale=1.0)
    assert torch.equal(none(state(b), pred)[0], pred[0])


def test_interval_scale_zero_and_the_per_atom_cap(graph_factory):
    b = graph_factory(num_graphs=2, lo=4, hi=7, num_types=3, dtype=torch.float64, seed=5)
    pred = prediction(b)
    p = predictor()
    assert PredictorGuidance(p, targets(2), scale=0.3, interval=(0.0, 0.4))(state(b, 0.5), pred) is pred
    assert PredictorGuidance(p, targets(2), scale=0.0)(state(b), pred) is pred
    capped = PredictorGuidance(p, targets(2), scale=100.0, max_step=0.05)(state(b), pred)[0]
    step = capped - pred[0]
    assert step.norm(dim=-1).max() <= 0.1 + 1e-12  # the cap, plus the shared centre-of-mass shift
    assert step.norm(dim=-1).max() > 0.04
    com = scatter(step, b.batch, 0, reduce="mean")
    assert com.abs().max() < 1e-12


def test_bad_settings_are_refused():
    p = predictor()
    with pytest.raises(ValueError, match="scale"):
        PredictorGuidance(p, targets(2), scale=-1)
    with pytest.raises(ValueError, match="interval"):
        PredictorGuidance(p, targets(2), scale=1, interval=(0.5, 0.2))
    with pytest.raises(ValueError, match="max_step"):
        PredictorGuidance(p, targets(2), scale=1, max_step=0)
    with pytest.raises(ValueError, match=r"p0', 'p1'"):
        PredictorGuidance(p, torch.zeros(2, 3), scale=1)


def test_sampler_applies_the_hook_before_each_reverse_step():
    diff, net = toy_model()
    seen = []

    def hook(g, pred):
        seen.append(float(g.t[0]))
        return (pred[0] * 0.0, *pred[1:])  # every clean prediction at the origin

    out = sample(diff, fn(net), torch.tensor([4, 5]), steps=4, generator=torch.Generator().manual_seed(0),
                 prediction_hook=hook)
    assert seen == [1.0, 0.75, 0.5, 0.25]
    assert out.pos.abs().max() == 0  # the last step returns the (hooked) prediction itself
    guide = PredictorGuidance(predictor(torch.float32), torch.tensor([[1.0, float("nan")]] * 2), scale=0.5)
    plain = sample(diff, fn(net), torch.tensor([4, 5]), steps=3, generator=torch.Generator().manual_seed(0))
    guided = sample(diff, fn(net), torch.tensor([4, 5]), steps=3, generator=torch.Generator().manual_seed(0),
                    prediction_hook=guide)
    assert torch.isfinite(guided.pos).all() and not torch.allclose(plain.pos, guided.pos)


def test_property_weights_scale_each_error(graph_factory):
    b = graph_factory(num_graphs=2, lo=4, hi=7, num_types=3, dtype=torch.float64, seed=5)
    pred = prediction(b)
    only_first = torch.tensor([[3.0, float("nan")]] * 2, dtype=torch.float64)
    full = PredictorGuidance(predictor(), only_first, scale=0.3, max_step=None)
    half = PredictorGuidance(predictor(), only_first, scale=0.3, max_step=None, weights={"p0": 0.5})
    assert torch.allclose(half(state(b), pred)[0] - pred[0], 0.5 * (full(state(b), pred)[0] - pred[0]), atol=1e-12)
    off = PredictorGuidance(predictor(), only_first, scale=0.3, weights={"p0": 0.0})
    assert off(state(b), pred) is pred  # nothing to guide: no predictor call
    with pytest.raises(ValueError, match="weights"):
        PredictorGuidance(predictor(), only_first, scale=0.3, weights={"dipole": 1.0})


def test_type_guidance_moves_logits_invariantly_and_lowers_the_error(graph_factory):
    b = graph_factory(num_graphs=2, lo=4, hi=7, num_types=3, dtype=torch.float64, seed=5)
    pred = prediction(b)
    tg = targets(2)
    off = PredictorGuidance(predictor(), tg, scale=0.3, max_step=None)
    on = PredictorGuidance(predictor(), tg, scale=0.3, max_step=None, type_scale=0.05, max_logit_step=None)
    a0, a1 = off(state(b), pred), on(state(b), pred)
    assert torch.equal(a0[1], pred[1]) and torch.equal(a0[2], pred[2])  # type_scale 0: logits untouched
    assert torch.allclose(a0[0], a1[0], atol=1e-12)  # the coordinate step is the same either way
    d_types, d_charges = a1[1] - pred[1], a1[2] - pred[2]
    assert d_types.abs().max() > 1e-8 and d_charges.abs().max() > 1e-8

    def err(p):
        return on.error(pred[0], p[1].softmax(-1), p[2].softmax(-1), b.edge_index, b.batch, b.num_graphs).sum()

    assert err(a1) < err(pred)
    # the logit step is invariant: rotated, reflected, translated molecules get the same change
    R = random_rotation(torch.Generator().manual_seed(3), dtype=torch.float64, reflect=True)
    p2 = (pred[0] @ R.T + torch.tensor([1.0, 0.0, -2.0], dtype=torch.float64), *pred[1:])
    out = on(state(b), p2)
    assert torch.allclose(out[1] - pred[1], d_types, atol=1e-10) and torch.allclose(out[2] - pred[2], d_charges, atol=1e-10)
    # the per-atom cap bounds each atom's logit change
    capped = PredictorGuidance(predictor(), tg, scale=0.0, max_step=None, type_scale=100.0, max_logit_step=0.2)
    out = capped(state(b), pred)
    assert (out[1] - pred[1]).norm(dim=-1).max() <= 0.2 + 1e-9 and torch.equal(out[0], pred[0])
    with pytest.raises(ValueError, match="type_scale"):
        PredictorGuidance(predictor(), tg, scale=0.3, type_scale=-1.0)
    with pytest.raises(ValueError, match="max_logit_step"):
        PredictorGuidance(predictor(), tg, scale=0.3, type_scale=1.0, max_logit_step=0.0)
