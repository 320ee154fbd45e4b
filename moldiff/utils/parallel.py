"""Ordered ``map`` over worker processes, the same way for every dataset builder."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@contextlib.contextmanager
def worker_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 1, chunksize: int = 1) -> Iterator[Iterator[R]]:
    """``fn`` over ``items`` in order, in ``workers`` processes (``workers <= 1``: in this process).

    Processes are forked where the platform can (workers inherit the parent's imports), else
    spawned (then ``fn`` must be importable at module level). Items are consumed lazily, so a
    stream of any length uses bounded memory; the pool is terminated when the block exits,
    also early (``break``) or on an error.

    Args:
        fn: a picklable function of one item.
        items: the inputs.
        workers: number of processes.
        chunksize: items sent to a worker at a time.

    Yields:
        An iterator over ``fn(item)`` in the order of ``items``.
    """
    workers = max(1, int(workers))
    if workers == 1:
        yield map(fn, items)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ctx.Pool(workers)
    try:
        yield pool.imap(fn, items, chunksize=chunksize)
    finally:
        pool.terminate()
        pool.join()
