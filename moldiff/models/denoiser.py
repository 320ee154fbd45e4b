"""The E(3)- and permutation-equivariant denoiser: predicts the clean molecule from a noisy one."""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from moldiff.models.blocks import edge_geometry, EquivariantMessageBlock, GaussianRBFBlock, TimeEmbeddingBlock
from moldiff.utils.geometry import zero_com
from moldiff.utils.graph import reverse_edge_index


COORD_HEADS = ("linear", "precond")


class SizeEmbeddingBlock(nn.Module):
    """Atom count per molecule ``n [G]`` -> embedding ``[G, dim]`` (counts above ``max_atoms`` share the last row)."""

    def __init__(self, dim: int, max_atoms: int = 255) -> None:
        super().__init__()
        self.max_atoms = max_atoms
        self.embed = nn.Embedding(max_atoms + 1, dim)
        nn.init.zeros_(self.embed.weight)

    def forward(self, n: torch.Tensor) -> torch.Tensor:
        return self.embed(n.clamp(0, self.max_atoms))


class Denoiser(nn.Module):
    r"""Joint denoiser over coordinates, atom types, formal charges and bonds.

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
        edge_hidden: width of the per-edge message MLP (default ``num_scalars``); a narrow edge stream
            with wide atoms (messages projected per node after aggregation).
        aggregation: ``mean`` or ``sum`` (divided by the constant ``agg_norm``) over neighbours.
        size_embedding: add an embedding of the molecule's atom count to every atom.
        valency_feature: give every atom its bond-order sum and bond counts under the current noisy bonds
            (and, with self-conditioning, under the previous prediction's bond probabilities).
        distance_feature: the raw distance (in units of ``rbf_cutoff``) as an edge input beside the basis.
        coord_head: ``linear``: ``x0 = x_t + W v`` (a fixed map of the vector stream); ``precond``:
            :math:`x_0 = c_{skip}(t)\,x_t + c_{out}(t)\,F`, with :math:`\sigma^2 = (1-\bar\alpha)/\bar\alpha`,
            :math:`c_{skip} = \sigma_d^2\sqrt{\bar\alpha}/((1-\bar\alpha)+\sigma_d^2\bar\alpha)`,
            :math:`c_{out} = \sigma_d\sqrt{1-\bar\alpha}/\sqrt{(1-\bar\alpha)+\sigma_d^2\bar\alpha}`
            (Karras et al. 2022 in the VP frame), so the correction shrinks with the noise; ``F`` comes from
            per-atom scalar gates on the (unnormalised) vector channels. Needs ``alpha_bar`` in ``forward``.
        sigma_data: :math:`\sigma_d`, the per-axis spread of clean coordinates (Angstrom).
        pos_update_layers: with ``precond``, the last this many layers each add to ``F`` and the geometry
            (distances, directions) of later layers is recomputed from the updated estimate.
        self_conditioning: accept the previous x0 prediction (coordinates and class probabilities) as input.

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
        edge_hidden: int | None = None,
        aggregation: str = "mean",
        agg_norm: float = 1.0,
        size_embedding: bool = False,
        valency_feature: bool = False,
        distance_feature: bool = False,
        coord_head: str = "linear",
        sigma_data: float = 1.0,
        pos_update_layers: int = 1,
        self_conditioning: bool = False,
    ) -> None:
        super().__init__()
        if coord_head not in COORD_HEADS:
            raise ValueError(f"unknown coord_head {coord_head!r}; choose from {list(COORD_HEADS)}")
        if coord_head == "precond" and not 1 <= pos_update_layers <= num_layers:
            raise ValueError(f"pos_update_layers must be in [1, num_layers={num_layers}], got {pos_update_layers}")
        F_, C = num_scalars, num_vectors
        self.C = C
        self.cutoff = cutoff
        self.num_props = num_props
        self.num_atom_types, self.num_charges, self.num_bond_types = num_atom_types, num_charges, num_bond_types
        self.rbf_cutoff = rbf_cutoff
        self.coord_head = coord_head
        self.sigma_data = float(sigma_data)
        self.distance_feature = distance_feature
        self.valency_feature = valency_feature
        self.self_conditioning = self_conditioning
        self.time = TimeEmbeddingBlock(F_)
        if num_props:
            # input: the normalised values (0 where not given) and the given/not-given mask; the last layer
            # starts at zero so a warm start from an unconditional model begins as that model
            self.prop = nn.Sequential(nn.Linear(2 * num_props, F_), nn.SiLU(), nn.Linear(F_, F_))
            nn.init.zeros_(self.prop[2].weight)
            nn.init.zeros_(self.prop[2].bias)
        self.size = SizeEmbeddingBlock(F_) if size_embedding else None
        val_in = (4 + (4 if self_conditioning else 0)) if valency_feature else 0
        sc_atom = num_atom_types + num_charges if self_conditioning else 0
        self.atom_embed = nn.Linear(atom_in + val_in + sc_atom, F_)
        sc_edge = num_bond_types + num_rbf if self_conditioning else 0
        self.edge_embed = nn.Linear(edge_in + sc_edge, edge_dim)
        self.rbf = GaussianRBFBlock(num_rbf, rbf_cutoff)
        rbf_in = num_rbf + (1 if distance_feature else 0)
        self.layers = nn.ModuleList(
            [
                EquivariantMessageBlock(F_, C, edge_dim, rbf_in, hidden=edge_hidden, aggregation=aggregation, agg_norm=agg_norm)
                for _ in range(num_layers)
            ]
        )
        self.cond_proj = nn.ModuleList([nn.Linear(F_, F_) for _ in range(num_layers)])
        self.bond_rbf = GaussianRBFBlock(num_rbf, 4.0)
        if self_conditioning:
            self.sc_rbf = GaussianRBFBlock(num_rbf, 4.0)
        if coord_head == "linear":
            self.pos_out = o3.Linear(o3.Irreps(f"{C}x1o"), o3.Irreps("1x1o"))
            self.update_from = num_layers  # no intermediate updates
        else:
            self.update_from = num_layers - pos_update_layers
            # per update layer: per-atom scalar gates on the vector channels, then a linear map to one vector
            self.pos_gate = nn.ModuleList([nn.Linear(F_, C) for _ in range(pos_update_layers)])
            self.pos_out = nn.ModuleList([o3.Linear(o3.Irreps(f"{C}x1o"), o3.Irreps("1x1o")) for _ in range(pos_update_layers)])
        self.atom_out = nn.Sequential(nn.Linear(F_, F_), nn.SiLU(), nn.Linear(F_, num_atom_types))
        self.charge_out = nn.Sequential(nn.Linear(F_, F_), nn.SiLU(), nn.Linear(F_, num_charges))
        self.bond_out = nn.Sequential(
            nn.Linear(edge_dim + F_ + num_rbf, F_), nn.SiLU(), nn.Linear(F_, num_bond_types)
        )

    def conditioning(self, t: torch.Tensor, props: torch.Tensor | None) -> torch.Tensor:
        """Per-molecule embedding of time and properties ``[G,F]``. ``props [G,P]`` holds normalised values;
        NaN marks a property that is not given (any subset per molecule; all NaN or ``None`` = unconditional,
        the classifier-free-guidance null)."""
        c = self.time(t)
        if self.num_props:
            if props is None:
                props = c.new_full((t.shape[0], self.num_props), float("nan"))
            given = torch.isfinite(props)
            c = c + self.prop(torch.cat([torch.where(given, props, 0.0), given.to(props.dtype)], dim=-1))
        return c

    def precond(self, alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c_skip, c_out)`` for signal levels ``alpha_bar`` (any shape); see the class docstring."""
        sd2 = self.sigma_data**2
        denom = (1 - alpha_bar) + sd2 * alpha_bar
        return sd2 * alpha_bar.sqrt() / denom, self.sigma_data * (1 - alpha_bar).sqrt() / denom.sqrt()

    def _geometry(self, pos: torch.Tensor, edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dist, unit = edge_geometry(pos, edge_index)
        rbf = self.rbf(dist)
        if self.distance_feature:
            rbf = torch.cat([rbf, (dist / self.rbf_cutoff).unsqueeze(-1)], dim=-1)
        return dist, unit, rbf

    def _valency(self, bond_probs: torch.Tensor, src: torch.Tensor, n: int) -> torch.Tensor:
        """Per atom: expected bond-order sum and expected single/double/triple counts ``[n,4]`` (classes
        0-3 of ``bond_probs [E,>=4]``; an absorbing [MASK] column, if any, counts as no bond)."""
        p = bond_probs[:, 1:4]  # [E,3]
        orders = torch.arange(1, 4, device=p.device, dtype=p.dtype)
        per_edge = torch.cat([(p * orders).sum(-1, keepdim=True), p], dim=-1)  # [E,4]
        return per_edge.new_zeros(n, 4).index_add_(0, src, per_edge) / 4.0

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
        rev: torch.Tensor | None = None,
        alpha_bar: torch.Tensor | None = None,
        self_cond: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ):
        """Args beyond the class docstring: ``alpha_bar [G]`` (coordinate signal level at ``t``, needed by
        ``coord_head=precond``), ``self_cond`` = ``(pos0 [N,3], atom_probs [N,Ka], charge_probs [N,Kc],
        bond_probs [E,Kb])`` from the previous prediction (None: zeros)."""
        N = pos.shape[0]
        G = num_graphs if num_graphs is not None else int(batch.max()) + 1
        pos = zero_com(pos, batch, G)
        if rev is None:
            rev = reverse_edge_index(edge_index, N)
        i, j = edge_index
        dist, unit, rbf = self._geometry(pos, edge_index)
        # radius graph: the indices of the message-carrying edges, found once for all layers
        msg_mask = (dist < self.cutoff).nonzero().squeeze(-1) if self.cutoff else None
        cond = self.conditioning(t, props)
        if self.size is not None:
            counts = torch.zeros(G, dtype=torch.long, device=pos.device).index_add_(0, batch, torch.ones_like(batch))
            cond = cond + self.size(counts)
        cond = cond.index_select(0, batch)  # [N,F]
        atom_in, edge_in = [atom_feat], [edge_feat]
        if self.self_conditioning and self_cond is None:
            self_cond = (pos, pos.new_zeros(N, self.num_atom_types), pos.new_zeros(N, self.num_charges),
                         pos.new_zeros(edge_feat.shape[0], self.num_bond_types))
        if self.valency_feature:
            atom_in.append(self._valency(edge_feat, i, N))
            if self.self_conditioning:
                atom_in.append(self._valency(self_cond[3], i, N))
        v = pos.new_zeros(N, self.C * 3)
        if self.self_conditioning:
            sc_pos, sc_atom, sc_charge, sc_bond = self_cond
            sc_pos = zero_com(sc_pos, batch, G)
            atom_in += [sc_atom, sc_charge]
            d_sc = (sc_pos.index_select(0, i) - sc_pos.index_select(0, j)).norm(dim=-1)
            has_sc = (sc_bond.sum(-1, keepdim=True) > 0).to(pos.dtype)  # no distances from the zero placeholder
            edge_in += [sc_bond, self.sc_rbf(d_sc) * has_sc]
            v = v.view(N, self.C, 3)
            v = torch.cat([(sc_pos - pos).unsqueeze(1), v[:, 1:]], dim=1).reshape(N, self.C * 3)
        s = self.atom_embed(torch.cat(atom_in, dim=-1) if len(atom_in) > 1 else atom_feat) + cond
        e = self.edge_embed(torch.cat(edge_in, dim=-1) if len(edge_in) > 1 else edge_feat)
        if self.coord_head == "precond":
            if alpha_bar is None:
                raise ValueError("coord_head='precond' needs alpha_bar (the coordinate signal level at t)")
            c_skip, c_out = self.precond(alpha_bar.to(pos.dtype).index_select(0, batch).unsqueeze(-1))  # [N,1]
            out = pos.new_zeros(N, 3)  # F, accumulated over the update layers
        for k, (layer, proj) in enumerate(zip(self.layers, self.cond_proj)):
            s = s + proj(cond)
            s, v, e = layer(s, v, e, edge_index, unit, rbf, rev, msg_mask)
            if k >= self.update_from:
                u = k - self.update_from
                gate = self.pos_gate[u](s)  # [N,C] per-atom scalar gates (any sign, may close a channel)
                vg = (v.view(N, self.C, 3) * gate.unsqueeze(-1)).reshape(N, self.C * 3)
                out = out + self.pos_out[u](vg)
                pos0 = zero_com(c_skip * pos + c_out * out, batch, G)
                if k < len(self.layers) - 1:
                    dist, unit, rbf = self._geometry(pos0, edge_index)
        if self.coord_head == "linear":
            pos0 = zero_com(pos + self.pos_out(v), batch, G)
        d0 = (pos0.index_select(0, i) - pos0.index_select(0, j)).norm(dim=-1)
        pair = s.index_select(0, i) * s.index_select(0, j)
        bond_logits = self.bond_out(torch.cat([e, pair, self.bond_rbf(d0)], dim=-1))
        bond_logits = 0.5 * (bond_logits + bond_logits.index_select(0, rev))
        return pos0, self.atom_out(s), self.charge_out(s), bond_logits
