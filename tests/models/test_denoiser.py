"""Denoiser: E(3) equivariance (e3nn's checker, float64), permutations, zero CoM, symmetry, copies."""

import copy
import io

import pytest
import torch
from e3nn.util.test import equivariance_error

from moldiff.models.denoiser import Denoiser
from moldiff.utils.geometry import center_of_mass, random_rotation
from moldiff.utils.graph import reverse_edge_index

TOL = {torch.float64: 1e-9, torch.float32: 1e-4}


def make_net(cutoff=None, num_props=0, dtype=torch.float64):
    net = Denoiser(8, 4, 5, 3, 4, num_scalars=32, num_vectors=8, edge_dim=16, num_layers=3, num_rbf=8,
                   cutoff=cutoff, num_props=num_props)
    return net.to(dtype).eval()


def inputs(graph_factory, dtype=torch.float64):
    b = graph_factory(num_graphs=3, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    h = torch.randn(b.num_nodes, 8, generator=g, dtype=dtype)
    e = torch.nn.functional.one_hot(b.bond_types, 4).to(dtype)
    t = torch.rand(b.num_graphs, generator=g, dtype=dtype)
    return b, h, e, t


@pytest.mark.parametrize("cutoff", [None, 2.5])
def test_e3_equivariance_with_e3nn(graph_factory, cutoff):
    net = make_net(cutoff)
    b, h, e, t = inputs(graph_factory)

    def f(pos):
        return net(pos, h, b.edge_index, e, b.batch, t, b.num_graphs)

    errs = equivariance_error(
        f, [b.pos], irreps_in=["cartesian_points"], irreps_out=["1x1o", "5x0e", "3x0e", "4x0e"],
        ntrials=1, do_parity=True, do_translation=True,
    )
    worst = max(float(v.max()) for v in errs.values())
    # e3nn builds the l=1 Wigner matrix from Euler angles, which alone costs ~1e-7 even in float64;
    # the exact check below uses the rotation matrix itself.
    assert worst < 1e-5, errs


def test_exact_rotation_reflection_translation_float64(graph_factory):
    net = make_net()
    b, h, e, t = inputs(graph_factory)
    o = net(b.pos, h, b.edge_index, e, b.batch, t, b.num_graphs)
    for reflect in (False, True):
        R = random_rotation(torch.Generator().manual_seed(3), dtype=torch.float64, reflect=reflect)
        o_r = net(b.pos @ R.T + torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64), h, b.edge_index, e, b.batch, t, b.num_graphs)
        assert torch.allclose(o_r[0], o[0] @ R.T, atol=TOL[torch.float64])
        for k in (1, 2, 3):
            assert torch.allclose(o_r[k], o[k], atol=TOL[torch.float64])


def test_permutation_equivariance(graph_factory):
    net = make_net()
    b, h, e, t = inputs(graph_factory)
    out = net(b.pos, h, b.edge_index, e, b.batch, t, b.num_graphs)
    # permute atoms within each molecule (a global permutation that respects the batch vector)
    perm = torch.cat([torch.randperm(int(hi - lo)) + lo for lo, hi in zip(b.ptr[:-1], b.ptr[1:])])
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(len(perm))
    ei = inv[b.edge_index]  # edge (i,j) now joins inv[i], inv[j]
    out_p = net(b.pos[perm], h[perm], ei, e, b.batch, t, b.num_graphs)
    assert torch.allclose(out_p[0], out[0][perm], atol=1e-10)
    assert torch.allclose(out_p[1], out[1][perm], atol=1e-10)
    assert torch.allclose(out_p[2], out[2][perm], atol=1e-10)
    assert torch.allclose(out_p[3], out[3], atol=1e-10)  # same edge order, relabelled endpoints


def test_zero_com_and_symmetric_bonds(graph_factory):
    net = make_net()
    b, h, e, t = inputs(graph_factory)
    pos0, _, _, lb = net(b.pos + 5.0, h, b.edge_index, e, b.batch, t, b.num_graphs)
    assert center_of_mass(pos0, b.batch, b.num_graphs).abs().max() < 1e-10
    rev = reverse_edge_index(b.edge_index, b.num_nodes)
    assert torch.allclose(lb, lb[rev])


def test_property_conditioning_any_subset_and_nan_means_not_given(graph_factory):
    net = make_net(num_props=2)
    torch.nn.init.normal_(net.prop[2].weight)  # starts at zero (a warm start begins as the unconditional model)
    b, h, e, t = inputs(graph_factory)
    G = b.num_graphs

    def run(p):
        return net(b.pos, h, b.edge_index, e, b.batch, t, G, props=p)[1]

    nan = float("nan")
    p1 = torch.zeros(G, 2, dtype=torch.float64)
    p2 = torch.ones(G, 2, dtype=torch.float64)
    assert not torch.allclose(run(p1), run(p2))
    # all NaN is the unconditional (guidance null) input, the same as no properties at all
    assert torch.allclose(run(torch.full((G, 2), nan, dtype=torch.float64)), run(None))
    # a not-given property's value does not matter; a given one does
    first_only = torch.tensor([[0.5, nan]] * G, dtype=torch.float64)
    assert torch.equal(run(first_only), run(torch.tensor([[0.5, nan]] * G, dtype=torch.float64)))
    assert not torch.allclose(run(first_only), run(torch.tensor([[0.5, 0.0]] * G, dtype=torch.float64)))
    assert not torch.allclose(run(first_only), run(torch.tensor([[nan, 0.5]] * G, dtype=torch.float64)))
    assert torch.isfinite(run(first_only)).all()


def test_fresh_property_layers_leave_the_unconditional_output_unchanged(graph_factory):
    torch.manual_seed(0)
    base = make_net(num_props=0)
    torch.manual_seed(0)
    cond = make_net(num_props=3)
    state = {k: v for k, v in cond.state_dict().items() if k.startswith("prop.")}
    cond.load_state_dict({**base.state_dict(), **state})
    b, h, e, t = inputs(graph_factory)
    p = torch.randn(b.num_graphs, 3, dtype=torch.float64)
    for a, c in zip(base(b.pos, h, b.edge_index, e, b.batch, t, b.num_graphs),
                    cond(b.pos, h, b.edge_index, e, b.batch, t, b.num_graphs, props=p)):
        assert torch.allclose(a, c)


def test_float32_rotation_tolerance(graph_factory):
    net = make_net(dtype=torch.float32)
    b, h, e, t = inputs(graph_factory, torch.float32)
    R = random_rotation(dtype=torch.float32)
    o = net(b.pos, h, b.edge_index, e, b.batch, t, b.num_graphs)
    o_r = net(b.pos @ R.T, h, b.edge_index, e, b.batch, t, b.num_graphs)
    assert torch.allclose(o_r[0], o[0] @ R.T, atol=TOL[torch.float32] * 10)
    assert torch.allclose(o_r[1], o[1], atol=TOL[torch.float32] * 10)


def test_deepcopy_and_state_dict_round_trip(graph_factory):
    net = make_net()
    b, h, e, t = inputs(graph_factory)
    out = net(b.pos, h, b.edge_index, e, b.batch, t, b.num_graphs)
    twin = copy.deepcopy(net)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    fresh = make_net()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    for other in (twin, fresh):
        o = other(b.pos, h, b.edge_index, e, b.batch, t, b.num_graphs)
        assert all(torch.allclose(x, y) for x, y in zip(o, out))


# ------------------------------------------------------------------ the preconditioned, self-conditioned variant
V2 = dict(edge_hidden=12, aggregation="sum", agg_norm=4.0, size_embedding=True, valency_feature=True,
          distance_feature=True, coord_head="precond", sigma_data=1.3, pos_update_layers=2, self_conditioning=True)


def make_v2(dtype=torch.float64):
    net = Denoiser(8, 4, 5, 3, 4, num_scalars=32, num_vectors=8, edge_dim=16, num_layers=3, num_rbf=8, **V2)
    # the size embedding starts at zero; give it values so that the tests see it
    torch.nn.init.normal_(net.size.embed.weight)
    return net.to(dtype).eval()


def v2_inputs(b, dtype=torch.float64):
    g = torch.Generator().manual_seed(5)
    ab = torch.rand(b.num_graphs, generator=g, dtype=dtype)
    sc = (b.pos + 0.1 * torch.randn(b.pos.shape, generator=g, dtype=dtype),
          torch.rand(b.num_nodes, 5, generator=g, dtype=dtype).softmax(-1),
          torch.rand(b.num_nodes, 3, generator=g, dtype=dtype).softmax(-1),
          torch.rand(b.edge_index.shape[1], 4, generator=g, dtype=dtype))
    rev = reverse_edge_index(b.edge_index, b.num_nodes)
    sc = (*sc[:3], 0.5 * (sc[3] + sc[3][rev]))  # bond probabilities are symmetric
    return ab, sc


@pytest.mark.parametrize("with_sc", [False, True])
def test_v2_exact_rotation_reflection_translation_float64(graph_factory, with_sc):
    net = make_v2()
    b, h, e, t = inputs(graph_factory)
    ab, sc = v2_inputs(b)
    sc = sc if with_sc else None
    o = net(b.pos, h, b.edge_index, e, b.batch, t, b.num_graphs, alpha_bar=ab, self_cond=sc)
    for reflect in (False, True):
        R = random_rotation(torch.Generator().manual_seed(3), dtype=torch.float64, reflect=reflect)
        shift = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
        sc_r = None if sc is None else (sc[0] @ R.T + 0.7, *sc[1:])
        o_r = net(b.pos @ R.T + shift, h, b.edge_index, e, b.batch, t, b.num_graphs, alpha_bar=ab, self_cond=sc_r)
        assert torch.allclose(o_r[0], o[0] @ R.T, atol=TOL[torch.float64])
        for k in (1, 2, 3):
            assert torch.allclose(o_r[k], o[k], atol=TOL[torch.float64])


def test_v2_permutation_equivariance(graph_factory):
    net = make_v2()
    b, h, e, t = inputs(graph_factory)
    ab, sc = v2_inputs(b)
    out = net(b.pos, h, b.edge_index, e, b.batch, t, b.num_graphs, alpha_bar=ab, self_cond=sc)
    perm = torch.cat([torch.randperm(int(hi - lo)) + lo for lo, hi in zip(b.ptr[:-1], b.ptr[1:])])
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(len(perm))
    ei = inv[b.edge_index]
    sc_p = (sc[0][perm], sc[1][perm], sc[2][perm], sc[3])
    out_p = net(b.pos[perm], h[perm], ei, e, b.batch, t, b.num_graphs, alpha_bar=ab, self_cond=sc_p)
    for k in (0, 1, 2):
        assert torch.allclose(out_p[k], out[k][perm], atol=1e-10)
    assert torch.allclose(out_p[3], out[3], atol=1e-10)


def test_v2_self_conditioning_and_size_change_the_output(graph_factory):
    net = make_v2()
    b, h, e, t = inputs(graph_factory)
    ab, sc = v2_inputs(b)
    plain = net(b.pos, h, b.edge_index, e, b.batch, t, b.num_graphs, alpha_bar=ab)
    cond = net(b.pos, h, b.edge_index, e, b.batch, t, b.num_graphs, alpha_bar=ab, self_cond=sc)
    assert not torch.allclose(plain[1], cond[1]) and not torch.allclose(plain[0], cond[0])


def test_precond_correction_vanishes_at_low_noise(graph_factory):
    """x0 = c_skip x_t + c_out F: as alpha_bar -> 1 the output tends to x_t itself whatever F is."""
    net = make_v2()
    b, h, e, t = inputs(graph_factory)
    pos = b.pos - center_of_mass(b.pos, b.batch, b.num_graphs)[b.batch]
    errs = []
    for one_minus_ab in (1e-2, 1e-4, 1e-6):
        ab = torch.full((b.num_graphs,), 1 - one_minus_ab, dtype=torch.float64)
        pos0 = net(pos, h, b.edge_index, e, b.batch, t, b.num_graphs, alpha_bar=ab)[0]
        errs.append(float((pos0 - pos).norm(dim=-1).max().detach()))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-2
    c_skip, c_out = net.precond(torch.tensor([1e-5, 0.5, 1 - 1e-5], dtype=torch.float64))
    sd2 = net.sigma_data**2
    # closed form: c_skip + ... reduces to the trivial estimate's limits
    assert torch.allclose(c_skip[2], torch.tensor(1.0, dtype=torch.float64), atol=1e-4)
    assert c_out[2] < 5e-3 and torch.allclose(c_out[0], torch.tensor(net.sigma_data, dtype=torch.float64), rtol=1e-4)
    # Karras: c_skip = sd^2 / (sigma^2 + sd^2) in the variance-exploding frame x_t / sqrt(ab)
    ab = torch.tensor(0.5, dtype=torch.float64)
    sigma2 = (1 - ab) / ab
    assert torch.allclose(c_skip[1] * ab.sqrt(), sd2 / (sigma2 + sd2))


def test_sum_aggregation_counts_neighbours(graph_factory):
    """With sum aggregation the scalar input to a node grows with its neighbour count; mean does not."""
    from moldiff.models.blocks import _aggregate

    src = torch.ones(5, 2, dtype=torch.float64)
    index = torch.tensor([0, 0, 0, 1, 1])
    (mean,) = _aggregate((src,), index, 2, "mean")
    (total,) = _aggregate((src,), index, 2, "sum", 1.0)
    assert torch.equal(mean, torch.ones(2, 2, dtype=torch.float64))
    assert torch.equal(total[:, 0], torch.tensor([3.0, 2.0], dtype=torch.float64))
