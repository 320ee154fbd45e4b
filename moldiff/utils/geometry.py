"""Pure geometry helpers acting on node tensors and a ``batch`` index."""

from __future__ import annotations

import numpy as np
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


def superposed_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """RMSD of two ``[k, 3]`` coordinate sets after optimal rigid superposition (Kabsch, no reflection)."""
    a = np.asarray(a, dtype=np.float64) - np.mean(a, axis=0)
    b = np.asarray(b, dtype=np.float64) - np.mean(b, axis=0)
    u, s, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    s[-1] *= d if d != 0 else 1.0
    msd = max((np.sum(a * a) + np.sum(b * b) - 2.0 * np.sum(s)) / len(a), 0.0)
    return float(np.sqrt(msd))
