"""PyG ``Data`` graphs in the package-wide convention: built from atoms and bonds, decoded into ``Molecule``.

``Data`` fields: ``pos [N,3]`` (float32, Angstrom), ``atom_types [N]``, ``charges [N]`` (class indices
into the vocabulary), ``edge_index [2,E]`` over *all* ordered atom pairs (i != j), ``bond_types [E]``
(0 = no bond, 1..3 = single/double/triple), optional ``y [1,P]`` (properties).
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from moldiff.chem.molecule import Molecule
from moldiff.data.vocab import Vocab
from moldiff.utils.graph import full_edge_index


def make_data(
    pos: torch.Tensor,
    atom_types: torch.Tensor,
    charges: torch.Tensor,
    bond_src: torch.Tensor,
    bond_dst: torch.Tensor,
    bond_cls: torch.Tensor,
    y: torch.Tensor | None = None,
) -> Data:
    """Assemble a fully connected ``Data`` from atoms and a sparse bond list (local indices)."""
    n = pos.shape[0]
    edge_index = full_edge_index(n)
    dense = torch.zeros(n, n, dtype=torch.long)
    if bond_src.numel():
        dense[bond_src, bond_dst] = bond_cls.long()
        dense[bond_dst, bond_src] = bond_cls.long()
    data = Data(
        pos=pos.float(),
        atom_types=atom_types.long(),
        charges=charges.long(),
        edge_index=edge_index,
        bond_types=dense[edge_index[0], edge_index[1]],
        num_nodes=n,
    )
    if y is not None:
        data.y = y.float().view(1, -1)
    return data


def data_to_molecules(batch: Batch | Data, vocab: Vocab) -> list[Molecule]:
    """Decode a (batched) graph into ``Molecule`` objects with their bonds (class > 0)."""
    if not isinstance(batch, Batch):
        batch = Batch.from_data_list([batch])
    pos = batch.pos.detach().double().cpu().numpy()
    types = batch.atom_types.cpu().numpy()
    charges = batch.charges.cpu().numpy()
    src, dst = batch.edge_index.cpu().numpy()
    bt = batch.bond_types.cpu().numpy()
    b = batch.batch.cpu().numpy()
    ptr = batch.ptr.cpu().numpy()
    keep = (src < dst) & (bt > 0)
    src, dst, bt = src[keep], dst[keep], bt[keep]
    ebatch = b[src]
    out = []
    for g in range(batch.num_graphs):
        lo, hi = ptr[g], ptr[g + 1]
        sel = ebatch == g
        bonds = np.stack([src[sel] - lo, dst[sel] - lo, bt[sel]], axis=1) if sel.any() else None
        out.append(
            Molecule(
                [vocab.elements[t] for t in types[lo:hi]],
                pos[lo:hi],
                np.array([vocab.charges[c] for c in charges[lo:hi]], dtype=np.int64),
                bonds,
            )
        )
    return out
