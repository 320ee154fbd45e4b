"""Train/val/test splits with train halves: one seeded permutation rule for every dataset.

A split assigns each item (molecule) to train (0), val (1) or test (2), and each train item to a
half (0 or 1; -1 elsewhere) for the conditional protocol (``train_a``: property predictor,
``train_b``: generator). Items are permuted with ``numpy.random.default_rng(seed)``; the first
``n_train`` of the permutation are train (its first ``n_train // 2`` half 0), the next ``n_val``
val and the rest test.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

DEFAULT_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


def check_fractions(split_fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate ``[train, val, test]`` fractions (non-negative, train > 0, sum 1).

    Raises:
        ValueError: naming ``split_fractions`` and what is expected.
    """
    try:
        f = tuple(float(x) for x in split_fractions)
    except (TypeError, ValueError):
        raise ValueError(f"split_fractions must be three numbers [train, val, test], got {split_fractions!r}") from None
    if len(f) != 3 or min(f) < 0 or f[0] <= 0 or not math.isclose(sum(f), 1.0, abs_tol=1e-6):
        raise ValueError(
            f"split_fractions must be three non-negative numbers [train, val, test] with train > 0 "
            f"summing to 1, got {list(split_fractions)}"
        )
    return f  # type: ignore[return-value]


def assign_splits(n: int, n_train: int, n_val: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``(split, half)`` of ``n`` items: ``n_train`` train, ``n_val`` val, the rest test.

    Args:
        n: number of items.
        n_train: train items (``0 <= n_train <= n``).
        n_val: val items (``n_train + n_val <= n``).
        seed: permutation seed.

    Returns:
        ``split`` int8 ``[n]`` (0 train, 1 val, 2 test) and ``half`` int8 ``[n]`` (0/1 on train, -1 elsewhere).
    """
    if not (0 <= n_train and 0 <= n_val and n_train + n_val <= n):
        raise ValueError(f"cannot split {n} items into {n_train} train and {n_val} val")
    perm = np.random.default_rng(seed).permutation(n)
    split = np.empty(n, np.int8)
    half = np.full(n, -1, np.int8)
    split[perm[:n_train]] = 0
    split[perm[n_train : n_train + n_val]] = 1
    split[perm[n_train + n_val :]] = 2
    half[perm[: n_train // 2]] = 0
    half[perm[n_train // 2 : n_train]] = 1
    return split, half


def split_by_group(
    groups: Sequence[str], split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic ``(split, half)`` per record, with all records of a group in the same split.

    The distinct group keys are sorted (so record order in the file does not matter) and split by
    :func:`assign_splits`, cut by ``split_fractions``. With at least three groups, val and test get
    at least one group each when their fraction is positive; train always keeps one.

    Args:
        groups: one key per record (e.g. canonical SMILES).
        split_fractions: ``[train, val, test]``.
        seed: permutation seed.

    Returns:
        ``split`` int8 ``[M]`` (0 train, 1 val, 2 test) and ``half`` int8 ``[M]`` (0/1 on train, -1 elsewhere).
    """
    f = check_fractions(split_fractions)
    keys = sorted(set(groups))
    g = len(keys)
    n_val, n_test = int(round(g * f[1])), int(round(g * f[2]))
    if g >= 3:
        n_val = max(n_val, 1) if f[1] > 0 else 0
        n_test = max(n_test, 1) if f[2] > 0 else 0
    while n_val + n_test >= g and g > 0 and (n_val or n_test):  # keep at least one train group
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    gsplit, ghalf = assign_splits(g, g - n_val - n_test, n_val, seed)
    index = {k: i for i, k in enumerate(keys)}
    gi = np.array([index[k] for k in groups], dtype=np.int64)
    return gsplit[gi], ghalf[gi]
