"""Pure geometry helpers acting on node tensors and a ``batch`` index."""

from __future__ import annotations

import torch
from torch_geometric.utils import scatter


def center_of_mass(pos: torch.Tensor, batch: torch.Tensor, num_graphs: int | None = None) -> torch.Tensor:
    """Unweighted centre of each graph: ``[num_graphs, 3]``."""
    return scatter(pos, batch, dim=0, dim_size=num_graphs, reduce="mean")


def zero_com(pos: torch.Tensor, batch: torch.Tensor, num_graphs: int | None = None) -> torch.Tensor:
    """Subtract each graph's centre so every graph has zero centre of mass. ``pos [N, 3]``."""
    return pos - center_of_mass(pos, batch, num_graphs)[batch]


def random_rotation(generator: torch.Generator | None = None, dtype=torch.float32, reflect: bool = False) -> torch.Tensor:
    """A uniformly random rotation matrix ``[3, 3]`` (optionally times -1, an improper rotation)."""
    q = torch.randn(4, generator=generator, dtype=torch.float64)
    q = q / q.norm()
    a, b, c, d = q
    rot = torch.stack(
        [
            torch.stack([a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)]),
            torch.stack([2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)]),
            torch.stack([2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d]),
        ]
    )
    if reflect:
        rot = -rot
    return rot.to(dtype)
