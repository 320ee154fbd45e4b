"""Equivariant building blocks. Node state: scalars ``s [N,F]`` (``Fx0e``) and vectors ``v [N,C*3]``
(``Cx1o``, e3nn layout: channel-major, xyz within a channel). Edges carry invariant features ``e [E,Fe]``."""

from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.nn import Gate
from torch import nn


def edge_geometry(pos: torch.Tensor, edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances ``[E]`` and unit vectors ``[E,3]`` from ``j`` to ``i`` for edges ``(i, j)``."""
    i, j = edge_index
    diff = pos.index_select(0, i) - pos.index_select(0, j)  # [E,3]
    dist = diff.norm(dim=-1)
    return dist, diff / (dist.unsqueeze(-1) + 1e-6)


class GaussianRBFBlock(nn.Module):
    """Distances ``[E]`` -> Gaussian radial basis ``[E, num_rbf]`` on ``[0, cutoff]``."""

    def __init__(self, num_rbf: int = 16, cutoff: float = 10.0) -> None:
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, cutoff, num_rbf))
        self.gamma = (num_rbf / cutoff) ** 2 / 2

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.gamma * (d.unsqueeze(-1) - self.centers) ** 2)


class TimeEmbeddingBlock(nn.Module):
    """``t [G]`` in [0,1] -> sinusoidal features -> MLP ``[G, dim]``."""

    def __init__(self, dim: int, num_freq: int = 16) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(1000.0), num_freq)))
        self.mlp = nn.Sequential(nn.Linear(2 * num_freq + 1, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        x = t.unsqueeze(-1) * self.freqs
        return self.mlp(torch.cat([t.unsqueeze(-1), x.sin(), x.cos()], dim=-1))


class VectorNormBlock(nn.Module):
    """Scale vector channels by the inverse RMS of their norms (equivariant layer norm) ``[N, C*3]``."""

    def __init__(self, num_vectors: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.c = num_vectors
        self.eps = eps

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        vv = v.view(v.shape[0], self.c, 3)
        rms = (vv.pow(2).sum(-1).mean(-1, keepdim=True) + self.eps).sqrt()  # [N,1]
        return v / rms


def _aggregate(
    srcs: tuple[torch.Tensor, ...], index: torch.Tensor, n: int, mode: str = "mean", norm: float = 1.0
) -> tuple[torch.Tensor, ...]:
    """Scatter each ``src [E,...]`` onto ``n`` nodes along ``index``.

    ``mean`` divides by each node's in-degree (what ``scatter(reduce="mean")`` does, counted once for all
    sources); ``sum`` divides by the fixed ``norm`` instead, so a node's input still grows with its number
    of neighbours (an atom can count its bonds).
    """
    if mode == "mean":
        count = srcs[0].new_zeros(n).scatter_add_(0, index, srcs[0].new_ones(index.shape[0])).clamp(min=1)
    out = []
    for src in srcs:
        shape = (-1,) + (1,) * (src.dim() - 1)
        total = src.new_zeros((n,) + src.shape[1:]).scatter_add_(0, index.view(shape).expand_as(src), src)
        out.append(total / count.view(shape) if mode == "mean" else total / norm)
    return tuple(out)


AGGREGATIONS = ("mean", "sum")


class EquivariantMessageBlock(nn.Module):
    """One round of message passing over the given edges, then an e3nn gated node update.

    Messages (invariant MLP on node scalars, radial basis and edge features) produce scalar messages,
    two sets of vector gates and an edge update. Vector messages are
    ``g1 * u_ij + g2 * v_j`` (``u_ij`` the unit vector from j to i), so they rotate with the input.
    Node update: ``o3.Linear`` maps ``[s, |v|] + v`` to scalars, gates and gated vectors, followed by an
    e3nn ``Gate`` (SiLU on scalars, sigmoid gates on vectors), added residually.

    Args:
        num_scalars, num_vectors, edge_dim: ``F``, ``C`` and edge channels.
        num_rbf: width of the radial edge input.
        hidden: width ``H`` of the per-edge MLP (default ``F``); when given, scalar messages stay ``H`` wide
            and are projected to ``F`` per node after aggregation.
        aggregation: ``mean`` over neighbours, or ``sum`` divided by the constant ``agg_norm``.
    """

    def __init__(
        self,
        num_scalars: int,
        num_vectors: int,
        edge_dim: int,
        num_rbf: int,
        hidden: int | None = None,
        aggregation: str = "mean",
        agg_norm: float = 1.0,
    ) -> None:
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {aggregation!r}; choose from {list(AGGREGATIONS)}")
        F_, C = num_scalars, num_vectors
        H = hidden or F_
        self.F, self.C, self.Fe = F_, C, edge_dim
        self.aggregation, self.agg_norm = aggregation, float(agg_norm)
        # narrow edge stream (hidden < num_scalars): scalar messages stay H wide per edge and are projected to
        # F once per node after aggregation (exact, since aggregation is linear), which saves E*H*(F-H) MACs
        self.Fm = H if hidden else F_
        self.lin_src = nn.Linear(F_, H)
        self.lin_dst = nn.Linear(F_, H, bias=False)
        self.lin_rbf = nn.Linear(num_rbf, H, bias=False)
        self.lin_edge = nn.Linear(edge_dim, H, bias=False)
        self.msg = nn.Sequential(nn.SiLU(), nn.Linear(H, self.Fm + 2 * C + edge_dim))
        self.node_proj = nn.Linear(H, F_, bias=False) if hidden else None
        self.edge_norm = nn.LayerNorm(edge_dim)
        self.node_norm = nn.LayerNorm(F_)
        self.vec_norm = VectorNormBlock(C)
        irreps_in = o3.Irreps(f"{F_ + C}x0e + {C}x1o")
        irreps_mid = o3.Irreps(f"{F_}x0e + {C}x0e + {C}x1o")
        self.node_lin = o3.Linear(irreps_in, irreps_mid)
        self.gate = Gate(f"{F_}x0e", [nn.functional.silu], f"{C}x0e", [torch.sigmoid], f"{C}x1o")

    def forward(
        self,
        s: torch.Tensor,  # [N,F]
        v: torch.Tensor,  # [N,C*3]
        e: torch.Tensor,  # [E,Fe]
        edge_index: torch.Tensor,  # [2,E] messages flow j -> i along (i, j) = (edge_index[0], edge_index[1])
        unit: torch.Tensor,  # [E,3] (x_i - x_j)/|x_i - x_j|
        rbf: torch.Tensor,  # [E,R]
        rev: torch.Tensor,  # [E]
        msg_mask: torch.Tensor | None = None,  # [E] bool (or [E_msg] long indices): edges that carry messages
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        N = s.shape[0]
        i, j = edge_index
        # index_select rather than advanced indexing: the same rows, several times faster on CPU
        a = self.lin_src(s).index_select(0, i) + self.lin_dst(s).index_select(0, j) + self.lin_rbf(rbf) + self.lin_edge(e)
        m = self.msg(a)  # [E, F+2C+Fe]
        m_s, g1, g2, m_e = torch.split(m, [self.Fm, self.C, self.C, self.Fe], dim=-1)
        vj = v.view(N, self.C, 3).index_select(0, j)  # [E,C,3]
        m_v = g1.unsqueeze(-1) * unit.unsqueeze(1) + g2.unsqueeze(-1) * vj  # [E,C,3]
        if msg_mask is not None:
            # a bool mask, or (from Denoiser, computed once per forward) the indices of its True entries
            sel = msg_mask.nonzero().squeeze(-1) if msg_mask.dtype == torch.bool else msg_mask
            ii = i.index_select(0, sel)
            agg_s, agg_v = _aggregate((m_s.index_select(0, sel), m_v.index_select(0, sel)), ii, N, self.aggregation, self.agg_norm)
        else:
            agg_s, agg_v = _aggregate((m_s, m_v), i, N, self.aggregation, self.agg_norm)
        if self.node_proj is not None:
            agg_s = self.node_proj(agg_s)
        s = self.node_norm(s + agg_s)
        v = v + agg_v.reshape(N, self.C * 3)
        e = self.edge_norm(e + m_e + m_e.index_select(0, rev))  # symmetric update keeps e_ij = e_ji
        vnorm = v.view(N, self.C, 3).norm(dim=-1)  # [N,C]
        upd = self.gate(self.node_lin(torch.cat([s, vnorm, v], dim=-1)))
        s = s + upd[:, : self.F]
        v = self.vec_norm(v + upd[:, self.F :])
        return s, v, e
