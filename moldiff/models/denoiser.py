"""The E(3)- and permutation-equivariant denoiser: predicts the clean molecule from a noisy one."""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from moldiff.models.blocks import edge_geometry, EquivariantMessageBlock, GaussianRBFBlock, TimeEmbeddingBlock
from moldiff.utils.geometry import zero_com
from moldiff.utils.graph import reverse_edge_index


class Denoiser(nn.Module):
    """Joint denoiser over coordinates, atom types, formal charges and bonds.

    Args:
        atom_in: width of the noisy atom one-hot input (types + charges states).
        edge_in: width of the noisy bond one-hot input.
        num_atom_types, num_charges, num_bond_types: output class counts.
        num_scalars: scalar channels ``F`` (``Fx0e``).
        num_vectors: vector channels ``C`` (``Cx1o``).
        edge_dim: invariant edge channels.
        num_layers: message-passing rounds.
        num_rbf: radial basis size; ``rbf_cutoff`` its range in Angstrom.
        cutoff: if set, messages only along edges shorter than this (a radius graph inside the full
            pair set); bond logits are still produced for every pair.
        num_props: width of the optional property conditioning vector (0 = unconditional).

    Forward returns ``(pos0 [N,3], atom_logits [N,Ka], charge_logits [N,Kc], bond_logits [E,Kb])``;
    ``pos0`` has zero CoM, the logits are invariant and ``bond_logits`` symmetric.
    """

    def __init__(
        self,
        atom_in: int,
        edge_in: int,
        num_atom_types: int,
        num_charges: int,
        num_bond_types: int,
        num_scalars: int = 128,
        num_vectors: int = 32,
        edge_dim: int = 64,
        num_layers: int = 6,
        num_rbf: int = 24,
        rbf_cutoff: float = 10.0,
        cutoff: float | None = None,
        num_props: int = 0,
    ) -> None:
        super().__init__()
        F_, C = num_scalars, num_vectors
        self.C = C
        self.cutoff = cutoff
        self.num_props = num_props
        self.time = TimeEmbeddingBlock(F_)
        if num_props:
            self.prop = nn.Sequential(nn.Linear(num_props, F_), nn.SiLU(), nn.Linear(F_, F_))
            self.null_prop = nn.Parameter(torch.zeros(F_))
        self.atom_embed = nn.Linear(atom_in, F_)
        self.edge_embed = nn.Linear(edge_in, edge_dim)
        self.rbf = GaussianRBFBlock(num_rbf, rbf_cutoff)
        self.layers = nn.ModuleList(
            [EquivariantMessageBlock(F_, C, edge_dim, num_rbf) for _ in range(num_layers)]
        )
        self.cond_proj = nn.ModuleList([nn.Linear(F_, F_) for _ in range(num_layers)])
        self.pos_out = o3.Linear(o3.Irreps(f"{C}x1o"), o3.Irreps("1x1o"))
        self.atom_out = nn.Sequential(nn.Linear(F_, F_), nn.SiLU(), nn.Linear(F_, num_atom_types))
        self.charge_out = nn.Sequential(nn.Linear(F_, F_), nn.SiLU(), nn.Linear(F_, num_charges))
        self.bond_rbf = GaussianRBFBlock(num_rbf, 4.0)
        self.bond_out = nn.Sequential(
            nn.Linear(edge_dim + F_ + num_rbf, F_), nn.SiLU(), nn.Linear(F_, num_bond_types)
        )

    def conditioning(self, t: torch.Tensor, props: torch.Tensor | None, drop: torch.Tensor | None) -> torch.Tensor:
        """Per-molecule embedding of time and (optionally dropped) properties ``[G,F]``."""
        c = self.time(t)
        if self.num_props:
            if props is None:
                emb = self.null_prop.expand(t.shape[0], -1)
            else:
                emb = self.prop(props)
                if drop is not None:
                    emb = torch.where(drop.view(-1, 1), self.null_prop.expand_as(emb), emb)
            c = c + emb
        return c

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
    ):
        N = pos.shape[0]
        G = num_graphs if num_graphs is not None else int(batch.max()) + 1
        pos = zero_com(pos, batch, G)
        if rev is None:
            rev = reverse_edge_index(edge_index, N)
        i, j = edge_index
        dist, unit = edge_geometry(pos, edge_index)
        rbf = self.rbf(dist)
        # radius graph: the indices of the message-carrying edges, found once for all layers
        msg_mask = (dist < self.cutoff).nonzero().squeeze(-1) if self.cutoff else None
        cond = self.conditioning(t, props, drop).index_select(0, batch)  # [N,F]
        s = self.atom_embed(atom_feat) + cond
        v = pos.new_zeros(N, self.C * 3)
        e = self.edge_embed(edge_feat)
        for layer, proj in zip(self.layers, self.cond_proj):
            s = s + proj(cond)
            s, v, e = layer(s, v, e, edge_index, unit, rbf, rev, msg_mask)
        pos0 = zero_com(pos + self.pos_out(v), batch, G)
        d0 = (pos0.index_select(0, i) - pos0.index_select(0, j)).norm(dim=-1)
        pair = s.index_select(0, i) * s.index_select(0, j)
        bond_logits = self.bond_out(torch.cat([e, pair, self.bond_rbf(d0)], dim=-1))
        bond_logits = 0.5 * (bond_logits + bond_logits.index_select(0, rev))
        return pos0, self.atom_out(s), self.charge_out(s), bond_logits
