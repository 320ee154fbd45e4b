"""Callbacks: sample a few molecules at validation and log the section-9 metrics."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.trainer.states import RunningStage

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


class FinalCheckpoint(L.Callback):
    """Write ``step{N}.ckpt`` and ``last.ckpt`` when training ends normally (``max_steps``, ``max_time``,
    ``max_epochs``) at a step the periodic checkpoint did not cover.

    Lightning's ``ModelCheckpoint(save_last=True)`` skips its end-of-training save once it has written any
    ``last.ckpt`` during the run, so a time-limited chunk would lose the steps since the last periodic save.
    Place this callback *before* ``EMAWeightAveraging``: that callback copies the averaged weights into the
    model in its own ``on_train_end``, and the checkpoint must hold the raw weights for an exact resume.
    Not called when training fails (a non-finite loss leaves the last good checkpoint as it was)."""

    #: checkpoint name pattern shared with the periodic ``ModelCheckpoint`` (which adds ``.ckpt``)
    FILENAME = "step{step:07d}"

    def __init__(self, dirpath) -> None:
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        step = trainer.global_step
        path = self.dirpath / (self.FILENAME.format(step=step) + ".ckpt")
        if step == 0 or path.exists():
            return
        trainer.save_checkpoint(path)
        trainer.save_checkpoint(self.dirpath / "last.ckpt")
        if trainer.is_global_zero:
            log.info("final checkpoint at step %d: %s", step, path)


class ChunkTimer(Timer):
    """``trainer.max_time`` for one invocation: stop after ``duration`` of *this* run's training time.

    Lightning's own ``Timer`` restores the elapsed time from the checkpoint, so ``max_time`` would count
    the whole run across resumes, and a second ``ckpt_path=auto trainer.max_time=00:00:09:00`` chunk would
    stop after a single step. This timer gives each chunk its full budget. Its checkpoint state keeps
    Lightning's key and meaning (total training time of the run, all chunks), which
    ``scripts/export_pretrained.py`` reads for the training record."""

    _TRAIN = RunningStage.TRAINING.value

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._previous = 0.0

    @property
    def state_key(self) -> str:
        return "Timer"  # reads the state of runs started with Lightning's Timer too

    def total_train_seconds(self) -> float:
        return self._previous + self.time_elapsed(self._TRAIN)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["time_elapsed"][self._TRAIN] = self.total_train_seconds()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        # keep the total aside instead of Lightning's restore into the budget: this chunk's budget starts now
        self._previous = float(state_dict.get("time_elapsed", {}).get(self._TRAIN, 0.0))

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        if trainer.is_global_zero:
            log.info("training time: %.1f min this run, %.1f min in all", self.time_elapsed() / 60,
                     self.total_train_seconds() / 60)


class ThroughputLogger(L.Callback):
    """Log training molecules per second (``train/mols_per_sec``) over windows of ``every`` steps, and the
    chunk's average at the end. Reads only host-side counters (``batch.num_graphs`` and the clock), so it
    adds no device synchronisation; over a window the asynchronous queue evens out."""

    def __init__(self, every: int = 100, skip: int = 20) -> None:
        self.every, self.skip = max(int(every), 1), int(skip)
        self._steps = 0
        self._window = [0, time.perf_counter()]
        self._total = [0, None]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._steps += 1
        n = int(batch.num_graphs)
        if self._steps == self.skip:  # warm-up steps (allocator, kernels) excluded from the average
            self._total = [0, time.perf_counter()]
        elif self._steps > self.skip:
            self._total[0] += n
        self._window[0] += n
        if self._steps % self.every == 0:
            now = time.perf_counter()
            rate = self._window[0] / max(now - self._window[1], 1e-9)
            pl_module.log("train/mols_per_sec", rate, on_step=True, batch_size=n)
            self._window = [0, now]

    def average(self) -> float | None:
        """Molecules per second since the warm-up, or None before any step after it."""
        if self._total[1] is None or self._total[0] == 0:
            return None
        return self._total[0] / (time.perf_counter() - self._total[1])

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        rate = self.average()
        if rate is not None and trainer.is_global_zero:
            log.info("training throughput: %.0f molecules/s (%d steps this run)", rate, self._steps)
