"""Random streams set aside around a block: validation draws its own fixed noise, training's streams go on as before."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def forked_rng(device: torch.device, seed: int | None = None) -> Iterator[None]:
    """The CPU random stream and, on a CUDA ``device``, that device's stream saved before the block and restored
    after it; with ``seed``, the block draws from ``torch.manual_seed(seed)``. (``torch.manual_seed`` reseeds
    CUDA too, which ``fork_rng(devices=[])`` would leave reseeded: every epoch's training noise would then
    restart from the same state.)"""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        yield
