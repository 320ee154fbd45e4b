"""Callbacks: sample a few molecules at validation and log the section-9 metrics."""

from __future__ import annotations

import logging

import lightning as L
import torch

from moldiff.data.graph import data_to_molecules
from moldiff.sampling.prior import sample_num_atoms
from moldiff.sampling.sampler import sample

log = logging.getLogger(__name__)


class SampleMetricsCallback(L.Callback):
    """After each validation (with the EMA weights swapped in), sample ``num_samples`` molecules with
    ``steps`` steps and log ``val/atom_stable``, ``val/mol_stable``, ``val/validity``, ... (rank 0 only).
    Needs RDKit; without it, the callback logs nothing and warns once."""

    def __init__(self, num_samples: int = 64, steps: int = 50, seed: int = 0) -> None:
        self.num_samples, self.steps, self.seed = num_samples, steps, seed
        self._warned = False

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        try:
            from moldiff.metrics.evaluate import evaluate_molecules
        except ImportError as exc:  # RDKit absent (e.g. a bare GPU image)
            if not self._warned:
                log.warning("validation sampling metrics skipped: %s", exc)
                self._warned = True
            return
        gen = torch.Generator().manual_seed(self.seed)
        counts = sample_num_atoms(self.num_samples, pl_module.statistics["num_atoms_hist"], generator=gen)
        props = None
        if pl_module.properties:
            props = torch.zeros(self.num_samples, len(pl_module.properties), device=pl_module.device)  # mean targets
        out = sample(pl_module.diffusion, pl_module.denoiser_fn(props), counts, steps=self.steps, device=pl_module.device,
                     generator=gen if pl_module.device.type == "cpu" else None)
        m = evaluate_molecules(data_to_molecules(out.cpu(), pl_module.vocab), None)
        keys = ["atom_stability", "mol_stability", "validity", "connected_validity", "uniqueness", "edm_mol_stability"]
        pl_module.log_dict({f"val/{k}": float(m[k]) for k in keys if m.get(k) is not None}, rank_zero_only=True)
