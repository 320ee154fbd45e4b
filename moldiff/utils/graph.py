"""Edge-index helpers shared by data, models and diffusion."""

from __future__ import annotations

import torch

_FULL_CACHE: dict[int, torch.Tensor] = {}


def full_edge_index(n: int) -> torch.Tensor:
    """All ordered pairs ``(i, j)``, ``i != j``, of an ``n``-atom graph, row-major: ``[2, n*(n-1)]``."""
    if n not in _FULL_CACHE:
        idx = torch.arange(n)
        src = idx.repeat_interleave(n)
        dst = idx.repeat(n)
        keep = src != dst
        _FULL_CACHE[n] = torch.stack([src[keep], dst[keep]])
    return _FULL_CACHE[n]


def reverse_edge_index(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """For a symmetric edge set, the position of edge ``(j, i)`` for each edge ``(i, j)``: ``[E]``.

    Raises:
        ValueError: if some edge has no reverse.
    """
    src, dst = edge_index
    key = src * num_nodes + dst
    rkey = dst * num_nodes + src
    order = torch.argsort(key)
    pos = torch.searchsorted(key[order], rkey)
    pos = pos.clamp_max(key.numel() - 1)
    rev = order[pos]
    if key.numel() and not torch.equal(key[rev], rkey):
        raise ValueError("edge_index is not symmetric: some edge (i, j) has no (j, i)")
    return rev
