"""An EGNN configured like EDM's (Hoogeboom et al. 2022, arXiv 2203.17003): the in-project baseline.

The network follows EDM's ``egnn_new.EGNN`` (Satorras et al. 2021, as EDM uses it): an input embedding,
``num_layers`` equivariant blocks (each: ``inv_sublayers`` invariant GCLs with attention, then one
coordinate update), an output embedding. Inputs are the continuous one-hot atom *types* and the
diffusion time (EDM appends ``t`` as a node feature); no bonds and no charges. Edge features are the
squared distance at the block's input and at the network's input (``edge_feat_nf = 2``). Coordinate
updates are ``(x_i - x_j)/(|x_i - x_j| + 1) * tanh(mlp) * coords_range/num_layers``, summed over
neighbours and divided by ``normalization_factor``.

It exposes the same callable signature as :class:`moldiff.models.denoiser.Denoiser` so that it runs
through :func:`moldiff.sampling.sampler.sample` and ``JointDiffusion.loss``: it returns
``(pos0 [N,3], atom_logits [N,Ka], charge_logits [N,Kc], bond_logits [E,Kb])`` with the charge and
bond logits all zeros (uniform predictions; the baseline models neither).

Used for *speed* comparisons (the EDM configuration is 9 layers x 256 features and 1000 steps);
it is not trained in this project.

Implementation note: a ``Linear`` over ``cat([h_i, h_j, e_ij])`` is evaluated as
``W_i h (per node, then gathered) + W_j h (same) + W_e e_ij``. That is the same function with the same
parameters (one ``nn.Linear`` per layer, EDM's shapes), only cheaper than materialising the ``[E, 2F+2]``
concatenation; it makes the baseline faster than a literal port, so speed ratios against it are
conservative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moldiff.utils.geometry import zero_com


def _split_linear(lin: nn.Linear, h: torch.Tensor, i: torch.Tensor, j: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``lin(cat([h[i], h[j], e], -1))`` without building the concatenation."""
    f = h.shape[-1]
    w = lin.weight
    hi = F.linear(h, w[:, :f])
    hj = F.linear(h, w[:, f : 2 * f])
    return hi[i] + hj[j] + F.linear(e, w[:, 2 * f :], lin.bias)


def _sum_agg(x: torch.Tensor, index: torch.Tensor, n: int, norm: float) -> torch.Tensor:
    out = x.new_zeros((n, x.shape[-1]))
    out.index_add_(0, index, x)
    return out / norm


class GCL(nn.Module):
    """EDM's invariant graph convolution: edge MLP with attention, sum aggregation, residual node MLP."""

    def __init__(self, hidden: int, edge_feat: int, normalization_factor: float, attention: bool = True) -> None:
        super().__init__()
        self.norm = normalization_factor
        self.attention = attention
        self.edge_mlp = nn.Sequential(nn.Linear(2 * hidden + edge_feat, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        if attention:
            self.att_mlp = nn.Sequential(nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        i, j = edge_index
        x = _split_linear(self.edge_mlp[0], h, i, j, edge_attr)
        mij = self.edge_mlp[3](self.edge_mlp[2](self.edge_mlp[1](x)))
        if self.attention:
            mij = mij * self.att_mlp(mij)
        agg = _sum_agg(mij, i, h.shape[0], self.norm)
        return h + self.node_mlp(torch.cat([h, agg], dim=-1))


class EquivariantUpdate(nn.Module):
    """EDM's coordinate update: ``x_i += sum_j (x_i - x_j)/(d_ij + 1) * tanh(phi(h_i, h_j, e_ij)) * range``."""

    def __init__(self, hidden: int, edge_feat: int, normalization_factor: float, coords_range: float, tanh: bool = True) -> None:
        super().__init__()
        self.norm = normalization_factor
        self.coords_range = coords_range
        self.tanh = tanh
        last = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)
        self.coord_mlp = nn.Sequential(nn.Linear(2 * hidden + edge_feat, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), last)

    def forward(self, h, x, edge_index, coord_diff, edge_attr):
        i, j = edge_index
        z = _split_linear(self.coord_mlp[0], h, i, j, edge_attr)
        for k in range(1, len(self.coord_mlp)):
            z = self.coord_mlp[k](z)
        if self.tanh:
            trans = coord_diff * torch.tanh(z) * self.coords_range
        else:
            trans = coord_diff * z
        return x + _sum_agg(trans, i, x.shape[0], self.norm)


class EquivariantBlock(nn.Module):
    """``inv_sublayers`` GCLs on ``[|x_i - x_j|^2 (now), |x_i - x_j|^2 (network input)]``, then a coordinate update."""

    def __init__(self, hidden: int, inv_sublayers: int, normalization_factor: float, coords_range: float,
                 norm_constant: float = 1.0, attention: bool = True, tanh: bool = True) -> None:
        super().__init__()
        self.norm_constant = norm_constant
        self.gcl = nn.ModuleList([GCL(hidden, 2, normalization_factor, attention) for _ in range(inv_sublayers)])
        self.equiv = EquivariantUpdate(hidden, 2, normalization_factor, coords_range, tanh)

    def forward(self, h, x, edge_index, dist0):
        i, j = edge_index
        diff = x[i] - x[j]
        radial = (diff**2).sum(-1, keepdim=True)
        coord_diff = diff / ((radial + 1e-8).sqrt() + self.norm_constant)
        edge_attr = torch.cat([radial, dist0], dim=-1)
        for gcl in self.gcl:
            h = gcl(h, edge_index, edge_attr)
        x = self.equiv(h, x, edge_index, coord_diff, edge_attr)
        return h, x


class EGNNBaseline(nn.Module):
    """EDM's EGNN behind the moldiff denoiser signature.

    Args:
        type_in: number of leading columns of ``atom_feat`` holding the (noisy) atom-type one-hot; the
            remaining columns (charges) are ignored, as EDM's QM9 model without charges.
        num_atom_types, num_charges, num_bond_types: output class counts (charges and bonds: zeros).
        hidden: features per node (EDM: 256).
        num_layers: equivariant blocks (EDM: 9).
        inv_sublayers: GCLs per block (EDM: 1).
        normalization_factor: divisor of the sum aggregation (EDM's ``EGNN`` class default 100; EDM's
            QM9 command line passes 1. Either way the cost is the same).
        coords_range: total coordinate-update range, split evenly over the blocks (EDM: 15).
        attention, tanh: EDM's settings (both on).
    """

    def __init__(
        self,
        type_in: int,
        num_atom_types: int,
        num_charges: int,
        num_bond_types: int,
        hidden: int = 256,
        num_layers: int = 9,
        inv_sublayers: int = 1,
        normalization_factor: float = 100.0,
        coords_range: float = 15.0,
        norm_constant: float = 1.0,
        attention: bool = True,
        tanh: bool = True,
    ) -> None:
        super().__init__()
        self.type_in = type_in
        self.num_atom_types = num_atom_types
        self.num_charges = num_charges
        self.num_bond_types = num_bond_types
        in_nf = type_in + 1  # one-hot types + time
        self.embedding = nn.Linear(in_nf, hidden)
        self.blocks = nn.ModuleList(
            [
                EquivariantBlock(hidden, inv_sublayers, normalization_factor, coords_range / num_layers, norm_constant, attention, tanh)
                for _ in range(num_layers)
            ]
        )
        self.embedding_out = nn.Linear(hidden, in_nf)

    @classmethod
    def for_diffusion(cls, diffusion, **kwargs) -> "EGNNBaseline":
        """Sized for a :class:`moldiff.diffusion.joint.JointDiffusion` (its type-state width and class counts)."""
        return cls(
            diffusion.atom.num_states,
            diffusion.atom.num_classes,
            diffusion.charge.num_classes,
            diffusion.bond.num_classes,
            **kwargs,
        )

    def forward(
        self,
        pos: torch.Tensor,
        atom_feat: torch.Tensor,
        edge_index: torch.Tensor,
        edge_feat: torch.Tensor,
        batch: torch.Tensor,
        t: torch.Tensor,
        num_graphs: int | None = None,
        props: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
        rev: torch.Tensor | None = None,
        **_: object,  # alpha_bar / self_cond of the moldiff denoiser: not used by this baseline
    ):
        N = pos.shape[0]
        G = num_graphs if num_graphs is not None else int(batch.max()) + 1
        x = zero_com(pos, batch, G)
        h = torch.cat([atom_feat[:, : self.type_in], t[batch].unsqueeze(-1).to(atom_feat.dtype)], dim=-1)
        i, j = edge_index
        dist0 = ((x[i] - x[j]) ** 2).sum(-1, keepdim=True)
        h = self.embedding(h)
        for block in self.blocks:
            h, x = block(h, x, edge_index, dist0)
        h = self.embedding_out(h)
        pos0 = zero_com(x, batch, G)
        atom_logits = h[:, : self.num_atom_types]
        charge_logits = h.new_zeros(N, self.num_charges)
        bond_logits = h.new_zeros(edge_index.shape[1], self.num_bond_types)
        return pos0, atom_logits, charge_logits, bond_logits
