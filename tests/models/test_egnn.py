"""EGNNBaseline (the EDM-configured EGNN): E(3) equivariance, EDM's layer maths, and that it runs through
the sampler and the training loss with the denoiser signature."""

import pytest
import torch
from e3nn.util.test import equivariance_error
from torch_geometric.data import Batch

from moldiff.data.graph import make_data
from moldiff.data.vocab import QM9_VOCAB
from moldiff.models.egnn import EGNNBaseline, _split_linear
from moldiff.sampling.sampler import sample
from moldiff.training.builders import build_diffusion
from moldiff.utils.geometry import center_of_mass, random_rotation

STATS = {
    "atom_type_marginal": [0.5, 0.35, 0.06, 0.08, 0.01],
    "charge_marginal": [0.01, 0.98, 0.01],
    "bond_marginal": [0.88, 0.10, 0.015, 0.005],
}


def graphs(sizes=(4, 6, 7), dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    datas = []
    for n in sizes:
        src = torch.arange(n - 1)
        datas.append(make_data(torch.randn(n, 3, generator=g) * 1.5, torch.randint(0, 5, (n,), generator=g),
                               torch.ones(n, dtype=torch.long), src, src + 1, torch.ones(n - 1, dtype=torch.long)))
    b = Batch.from_data_list(datas)
    b.pos = b.pos.to(dtype)
    h = torch.randn(b.num_nodes, 8, generator=g, dtype=dtype)  # 5 type states + 3 charge states
    e = torch.nn.functional.one_hot(b.bond_types, 4).to(dtype)
    t = torch.rand(b.num_graphs, generator=g, dtype=dtype)
    return b, h, e, t


def small_net(dtype=torch.float64):
    torch.manual_seed(0)
    net = EGNNBaseline(5, 5, 3, 4, hidden=32, num_layers=3)
    # EDM initialises the last coordinate layer with gain 0.001; enlarge it so the test sees real updates
    for blk in net.blocks:
        torch.nn.init.normal_(blk.equiv.coord_mlp[-1].weight, std=0.5)
    return net.to(dtype).eval()


def test_edm_configuration():
    net = EGNNBaseline(5, 5, 3, 4)
    assert len(net.blocks) == 9 and net.embedding.out_features == 256
    assert len(net.blocks[0].gcl) == 1 and net.blocks[0].gcl[0].attention
    assert net.blocks[0].equiv.coords_range == pytest.approx(15.0 / 9)
    assert net.embedding.in_features == 5 + 1  # one-hot types + time, no charges
    assert 5.0e6 < sum(p.numel() for p in net.parameters()) < 5.7e6


def test_split_linear_is_the_concatenated_linear():
    torch.manual_seed(1)
    lin = torch.nn.Linear(2 * 6 + 2, 5).double()
    h, e = torch.randn(4, 6, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64)
    i, j = torch.tensor([0, 1, 2, 3, 0, 2, 1]), torch.tensor([1, 0, 3, 2, 2, 0, 3])
    assert torch.allclose(_split_linear(lin, h, i, j, e), lin(torch.cat([h[i], h[j], e], -1)), atol=1e-12)


def test_e3_equivariance_with_e3nn():
    net = small_net()
    b, h, e, t = graphs()

    def f(pos):
        return net(pos, h, b.edge_index, e, b.batch, t, b.num_graphs)

    # coordinates out as "cartesian_points": transformed with the exact rotation matrix (e3nn's 1x1o Wigner D
    # from angles is only ~1e-7 accurate in float64). pos0 is zero-CoM, i.e. translation-invariant, so
    # translations are checked in the next test instead.
    errs = equivariance_error(
        f, [b.pos], irreps_in=["cartesian_points"], irreps_out=["cartesian_points", "5x0e", "3x0e", "4x0e"],
        ntrials=3, do_parity=True, do_translation=False,
    )
    assert max(float(v.max()) for v in errs.values()) < 1e-9, errs


def test_rotation_reflection_and_outputs():
    net = small_net()
    b, h, e, t = graphs()
    pos = b.pos - center_of_mass(b.pos, b.batch, b.num_graphs)[b.batch]
    pos0, la, lc, lb = net(pos, h, b.edge_index, e, b.batch, t, b.num_graphs)
    assert (pos0 - pos).abs().max() > 1e-3  # coordinates really are updated
    for reflect in (False, True):
        R = random_rotation(torch.Generator().manual_seed(3), dtype=torch.float64, reflect=reflect)
        r0, ra, _, _ = net(pos @ R.T + 2.0, h, b.edge_index, e, b.batch, t, b.num_graphs)
        assert torch.allclose(r0, pos0 @ R.T, atol=1e-9)
        assert torch.allclose(ra, la, atol=1e-9)
    assert la.shape == (b.num_nodes, 5)
    assert lc.shape == (b.num_nodes, 3) and not lc.any()
    assert lb.shape == (b.edge_index.shape[1], 4) and not lb.any()
    assert center_of_mass(pos0, b.batch, b.num_graphs).abs().max() < 1e-10


def test_runs_through_sampler_and_loss():
    diffusion = build_diffusion({}, QM9_VOCAB, STATS)
    torch.manual_seed(0)
    net = EGNNBaseline.for_diffusion(diffusion, hidden=16, num_layers=2)
    out = sample(diffusion, net.eval(), torch.tensor([5, 7]), steps=2, generator=torch.Generator().manual_seed(0))
    assert out.pos.shape == (12, 3) and torch.isfinite(out.pos).all()
    assert out.atom_types.max() < 5 and out.bond_types.shape == (5 * 4 + 7 * 6,)
    b, _, _, _ = graphs(dtype=torch.float32)
    loss = diffusion.loss(net.train(), b)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and net.embedding.weight.grad is not None


def test_property_predictor_is_e3_and_permutation_invariant(graph_factory):
    """Rotations, reflections, translations and atom permutations leave every predicted property unchanged."""
    from torch_geometric.data import Batch

    from moldiff.data.graph import make_data
    from moldiff.models.property import PropertyPredictor
    from moldiff.utils.geometry import random_rotation

    torch.manual_seed(0)
    net = PropertyPredictor(8, num_scalars=16, num_vectors=4, edge_dim=8, num_layers=2, num_rbf=8, num_outputs=3).double().eval()
    b = graph_factory(num_graphs=2, lo=4, hi=7, dtype=torch.float64, seed=3)
    feat = torch.randn(b.num_nodes, 8, dtype=torch.float64)

    def run(pos, feat, batch):
        return net(pos, feat, batch.edge_index, batch.batch, batch.num_graphs)

    y = run(b.pos, feat, b)
    assert y.shape == (2, 3)
    for reflect in (False, True):
        R = random_rotation(torch.Generator().manual_seed(11), dtype=torch.float64, reflect=reflect)
        moved = b.pos @ R.T + torch.tensor([3.0, -1.0, 0.5], dtype=torch.float64)
        assert torch.allclose(run(moved, feat, b), y, atol=1e-10)
    # permute the atoms inside each molecule (rebuilding the graphs in the new order)
    g = torch.Generator().manual_seed(2)
    datas, feats = [], []
    for k in range(b.num_graphs):
        idx = torch.arange(b.ptr[k], b.ptr[k + 1])
        perm = idx[torch.randperm(len(idx), generator=g)]
        empty = torch.zeros(0, dtype=torch.long)
        d = make_data(b.pos[perm], b.atom_types[perm], b.charges[perm], empty, empty, empty)
        d.pos = b.pos[perm]
        datas.append(d)
        feats.append(feat[perm])
    pb = Batch.from_data_list(datas)
    assert torch.allclose(run(pb.pos, torch.cat(feats), pb), y, atol=1e-10)
