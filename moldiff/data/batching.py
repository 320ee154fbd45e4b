"""Vectorised batching of fully connected molecule graphs straight from the cache arrays.

``Batch.from_data_list`` builds one ``Data`` per molecule (a dense bond matrix, a full edge index) and then
concatenates them, which costs tens of microseconds of Python per molecule. ``FullGraphCollater`` builds
the same PyG ``Batch`` with a handful of numpy operations over the whole batch: the edge index of every
molecule (all ordered pairs ``i != j``, row-major, molecules in batch order, exactly as
``moldiff.data.graph.make_data`` and ``Batch.from_data_list`` lay them out), the bond class of every
pair from a per-molecule dense bond table made once, and ``rev`` (the position of edge ``(j, i)`` for
each ``(i, j)``), so that the training step needs no sort to find reverse edges.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch_geometric.data import Batch

from moldiff.data.cache import MolCache


class FullGraphCollater:
    """``collate_fn`` turning a list of molecule indices of ``cache`` into a PyG ``Batch``.

    Fields: ``pos [N,3]``, ``atom_types [N]``, ``charges [N]``, ``edge_index [2,E]``, ``bond_types [E]``,
    ``batch [N]``, ``ptr [G+1]``, ``rev [E]``, ``idx [G]`` and, with ``props``, ``y [G,P]`` (raw units).
    """

    def __init__(self, cache: MolCache, props: Sequence[str] | None = None) -> None:
        self.cols = cache.prop_columns(list(props)) if props else None
        self.props = cache.props
        self.pos, self.atom_types, self.charges = cache.pos, cache.atom_types, cache.charges
        self.atom_ptr = np.asarray(cache.atom_ptr, dtype=np.int64)
        self.n = np.diff(self.atom_ptr)
        # dense bond classes of every molecule, flattened: molecule m owns adj[sq_ptr[m] : sq_ptr[m] + n_m^2]
        sq = self.n * self.n
        self.sq_ptr = np.concatenate([[0], np.cumsum(sq)])
        adj = np.zeros(int(self.sq_ptr[-1]), dtype=np.int8)
        bond_ptr = np.asarray(cache.bond_ptr, dtype=np.int64)
        mol = np.repeat(np.arange(len(self.n)), np.diff(bond_ptr))
        if len(mol):
            a = cache.bond_ij[:, 0].numpy().astype(np.int64)
            b = cache.bond_ij[:, 1].numpy().astype(np.int64)
            cls = cache.bond_cls.numpy().astype(np.int8)
            base, nm = self.sq_ptr[mol], self.n[mol]
            adj[base + a * nm + b] = cls
            adj[base + b * nm + a] = cls
        self.adj = adj

    def __call__(self, indices: Sequence[int]) -> Batch:
        idx = np.asarray(indices, dtype=np.int64)
        n = self.n[idx]
        G = len(idx)
        ptr = np.concatenate([[0], np.cumsum(n)])
        N = int(ptr[-1])
        node_graph = np.repeat(np.arange(G), n)
        atoms = self.atom_ptr[idx][node_graph] + (np.arange(N) - ptr[:-1][node_graph])
        # all n^2 (a, b) pairs of every molecule, row-major; the diagonal is dropped below
        sq = n * n
        sq_ptr = np.concatenate([[0], np.cumsum(sq)])
        pair_graph = np.repeat(np.arange(G), sq)
        k = np.arange(int(sq_ptr[-1])) - sq_ptr[:-1][pair_graph]
        ng = n[pair_graph]
        a, b = k // ng, k % ng
        keep = a != b
        # position of each kept pair among the kept ones, for the reverse lookup
        kept_pos = np.cumsum(keep) - 1
        rev_full = sq_ptr[:-1][pair_graph] + b * ng + a  # grid position of (b, a)
        rev = kept_pos[rev_full[keep]]
        src = (a + ptr[:-1][pair_graph])[keep]
        dst = (b + ptr[:-1][pair_graph])[keep]
        bond = self.adj[self.sq_ptr[idx][pair_graph] + k][keep]
        atoms_t = torch.from_numpy(atoms)
        out = Batch(
            pos=self.pos.index_select(0, atoms_t),
            atom_types=self.atom_types.index_select(0, atoms_t),
            charges=self.charges.index_select(0, atoms_t),
            edge_index=torch.from_numpy(np.stack([src, dst])),
            bond_types=torch.from_numpy(bond.astype(np.int64)),
            batch=torch.from_numpy(node_graph),
            ptr=torch.from_numpy(ptr),
            rev=torch.from_numpy(rev),
            idx=torch.from_numpy(idx),
        )
        if self.cols is not None:
            out.y = self.props[torch.from_numpy(idx)][:, self.cols].float()
        out._num_graphs = G
        return out
