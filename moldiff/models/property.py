"""Equivariant property predictor (EDM conditional-evaluation protocol): atoms + coordinates -> scalar."""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.utils import scatter

from moldiff.models.blocks import EquivariantMessageBlock, GaussianRBFBlock, edge_geometry
from moldiff.utils.geometry import zero_com
from moldiff.utils.graph import reverse_edge_index


class PropertyPredictor(nn.Module):
    """E(3)-invariant regressor on all atom pairs (bonds not used, as in EDM's EGNN predictor).

    Args:
        atom_in: width of the one-hot atom input (types + charges).
        num_scalars, num_vectors, edge_dim, num_layers, num_rbf, rbf_cutoff: as in ``Denoiser``.

        num_outputs: how many properties it predicts at once (a multi-task head on shared layers).

    Forward: ``(pos [N,3], atom_feat [N,atom_in], edge_index [2,E], batch [N], num_graphs) -> [G, num_outputs]``
    (normalised properties; sum pooling so extensive properties scale with size).
    """

    def __init__(self, atom_in: int, num_scalars: int = 128, num_vectors: int = 16, edge_dim: int = 32,
                 num_layers: int = 5, num_rbf: int = 24, rbf_cutoff: float = 10.0, num_outputs: int = 1) -> None:
        super().__init__()
        self.C = num_vectors
        self.atom_embed = nn.Linear(atom_in, num_scalars)
        self.edge0 = nn.Parameter(torch.zeros(edge_dim))
        self.rbf = GaussianRBFBlock(num_rbf, rbf_cutoff)
        self.layers = nn.ModuleList([EquivariantMessageBlock(num_scalars, num_vectors, edge_dim, num_rbf) for _ in range(num_layers)])
        self.readout = nn.Sequential(nn.Linear(num_scalars, num_scalars), nn.SiLU(), nn.Linear(num_scalars, num_outputs))

    def forward(self, pos, atom_feat, edge_index, batch, num_graphs: int, rev=None) -> torch.Tensor:
        N = pos.shape[0]
        pos = zero_com(pos, batch, num_graphs)
        rev = reverse_edge_index(edge_index, N) if rev is None else rev
        dist, unit = edge_geometry(pos, edge_index)
        rbf = self.rbf(dist)
        s = self.atom_embed(atom_feat)
        v = pos.new_zeros(N, self.C * 3)
        e = self.edge0.expand(edge_index.shape[1], -1)
        for layer in self.layers:
            s, v, e = layer(s, v, e, edge_index, unit, rbf, rev)
        return scatter(self.readout(s), batch, 0, dim_size=num_graphs, reduce="sum") / 10.0
