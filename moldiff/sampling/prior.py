"""Atom-count prior: the dataset histogram, a fixed count, or a range."""

from __future__ import annotations

from typing import Sequence

import torch


def sample_num_atoms(
    n: int,
    histogram: Sequence[float] | None = None,
    num_atoms: int | Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    min_atoms: int = 1,
) -> torch.Tensor:
    """Atom counts ``[n]``.

    Args:
        n: number of molecules.
        histogram: counts (or frequencies) of each atom count (index = atom count).
        num_atoms: ``None`` (use the histogram), an int (fixed), or ``[lo, hi]`` (uniform, inclusive).
    """
    if num_atoms is None:
        if histogram is None:
            raise ValueError("need an atom-count histogram or num_atoms")
        h = torch.as_tensor(histogram, dtype=torch.float64).clone()
        h[:min_atoms] = 0
        if h.sum() <= 0:
            raise ValueError("atom-count histogram is empty")
        return torch.multinomial(h / h.sum(), n, replacement=True, generator=generator)
    if isinstance(num_atoms, int):
        if num_atoms < min_atoms:
            raise ValueError(f"num_atoms={num_atoms} must be >= {min_atoms}")
        return torch.full((n,), num_atoms, dtype=torch.long)
    vals = list(num_atoms)
    if len(vals) != 2 or vals[0] > vals[1] or vals[0] < min_atoms:
        raise ValueError(f"num_atoms range must be [lo, hi] with {min_atoms} <= lo <= hi, got {vals}")
    return torch.randint(int(vals[0]), int(vals[1]) + 1, (n,), generator=generator)
