"""Callbacks: validation sampling metrics (EMA weights), the end-of-training checkpoint, the chunk timer,
the throughput log and the RNG states that make a resumed run continue exactly."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.callbacks.weight_averaging import WeightAveraging
from lightning.pytorch.trainer.states import RunningStage

from moldiff.data.graph import data_to_molecules
from moldiff.sampling.prior import sample_num_atoms
from moldiff.sampling.sampler import sample
from moldiff.utils.rng import forked_rng

log = logging.getLogger(__name__)


def averaged_module(trainer: L.Trainer, pl_module: L.LightningModule, caller: L.Callback) -> L.LightningModule:
    """The module that holds the averaged (EMA) weights while validation ends, as seen from ``caller``.

    ``WeightAveraging`` swaps the averaged weights into ``pl_module`` in its ``on_validation_epoch_start`` and
    swaps them back in its ``on_validation_epoch_end``. Callbacks run in list order, so in
    ``on_validation_epoch_end`` a callback placed before the averaging callback still sees the averaged
    weights in ``pl_module``, and one placed after it finds them in the averaging callback's model again.
    Without an averaging callback (``ema.decay=0``) this is ``pl_module`` itself.
    """
    callbacks = list(trainer.callbacks)
    for k, cb in enumerate(callbacks):
        if isinstance(cb, WeightAveraging) and cb._average_model is not None:
            mine = next((i for i, c in enumerate(callbacks) if c is caller), len(callbacks))
            return pl_module if mine < k else cb._average_model.module
    return pl_module


class SampleMetricsCallback(L.Callback):
    """After each validation, sample ``num_samples`` molecules with ``steps`` steps from the EMA weights and
    log ``val/atom_stability``, ``val/mol_stability``, ``val/validity``, ... (rank 0 only).

    The weights are the averaged ones whichever side of the ``EMAWeightAveraging`` callback this one is
    placed (see :func:`averaged_module`). Sampling runs under a forked RNG, so validation does not change
    the training noise. Needs RDKit; without it, the callback logs nothing and warns once.
    """

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
        module = averaged_module(trainer, pl_module, self)
        with forked_rng(pl_module.device), torch.no_grad():
            mols = self.sample_molecules(module)
        m = evaluate_molecules(mols, None)
        keys = ["atom_stability", "mol_stability", "validity", "connected_validity", "uniqueness", "edm_mol_stability"]
        pl_module.log_dict({f"val/{k}": float(m[k]) for k in keys if m.get(k) is not None}, rank_zero_only=True)

    def sample_molecules(self, module) -> list:
        """``num_samples`` molecules (``moldiff.chem.molecule.Molecule``) sampled from ``module``'s weights."""
        gen = torch.Generator().manual_seed(self.seed)
        device = next(module.parameters()).device
        counts = sample_num_atoms(self.num_samples, module.statistics["num_atoms_hist"], generator=gen)
        props = None
        if module.properties:
            props = torch.zeros(self.num_samples, len(module.properties), device=device)  # mean targets
        out = sample(module.diffusion, module.denoiser_fn(props), counts, steps=self.steps, device=device,
                     generator=gen if device.type == "cpu" else None)
        return data_to_molecules(out.cpu(), module.vocab)


class FinalCheckpoint(L.Callback):
    """Write ``step{N}.ckpt`` and ``last.ckpt`` when training ends normally (``max_steps``, ``max_time``,
    ``max_epochs``) at a step the periodic checkpoint did not cover.

    Lightning's ``ModelCheckpoint(save_last=True)`` skips its end-of-training save once it has written any
    ``last.ckpt`` during the run, so a time-limited chunk would lose the steps since the last periodic save.
    Place this callback *before* ``EMAWeightAveraging``: that callback copies the averaged weights into the
    model in its own ``on_train_end``, and the checkpoint must hold the raw weights for an exact resume.
    Not called when training fails (a non-finite loss leaves the last good checkpoint as it was).

    Saving is collective (every process takes part), so the folder and the decision are rank 0's, sent to
    all processes: each one makes the same call whatever its own file system shows.

    Args:
        dirpath: checkpoint folder; the trainer's ``ModelCheckpoint`` folder takes precedence when there is one.
    """

    #: checkpoint name pattern shared with the periodic ``ModelCheckpoint`` (which adds ``.ckpt``)
    FILENAME = "step{step:07d}"

    def __init__(self, dirpath) -> None:
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        step = trainer.global_step
        periodic = trainer.checkpoint_callback
        dirpath = Path(getattr(periodic, "dirpath", None) or self.dirpath)
        path = dirpath / (self.FILENAME.format(step=step) + ".ckpt")
        decision = (str(dirpath), step > 0 and not path.exists())
        dirpath_str, save = trainer.strategy.broadcast(decision, src=0)
        if not save:
            return
        dirpath = Path(dirpath_str)
        path = dirpath / (self.FILENAME.format(step=step) + ".ckpt")
        trainer.save_checkpoint(path, weights_only=False)  # the full training state
        trainer.save_checkpoint(dirpath / "last.ckpt", weights_only=False)
        if periodic is not None and hasattr(periodic, "_last_checkpoint_saved"):
            # the periodic callback would otherwise write its own "last" after this one (as last-v1.ckpt, and
            # after EMAWeightAveraging has swapped the averaged weights in)
            periodic._last_checkpoint_saved = str(dirpath / "last.ckpt")
            periodic.last_model_path = str(dirpath / "last.ckpt")
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


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's ``random``, NumPy's global generator, torch's CPU generator and (once CUDA is
    in use) every CUDA device's generator, as plain values and tensors (loadable with ``weights_only=True``)."""
    _, key, pos, has_gauss, gauss = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np.asarray(key, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the generators from :func:`capture_rng_state`'s output (CUDA devices beyond those present are skipped)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


def _dist_rank_and_size() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class RNGStateCheckpoint(L.Callback):
    """Keep the random number generators in the checkpoint, so that a resumed run draws the same noise as
    one that was never interrupted.

    Saved with every checkpoint: the generators of every process (:func:`capture_rng_state`, gathered from
    all processes; saving is collective). Restored at the first training batch after the restore, which is
    exactly where the saving run drew next, so whatever runs in between (model construction, the
    data-loader start, a sanity check) leaves the stream alone. A checkpoint written by a different number
    of processes, or one without these states, resumes with the generators as seeded (with a warning).
    Together with the data module's resumable sampler (``moldiff.data.datamodule``), a resumed run repeats
    the uninterrupted run's updates on the same device.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        mine = capture_rng_state()
        rank, size = _dist_rank_and_size()
        states: list[Any] = [mine]
        if size > 1:
            states = [None] * size
            torch.distributed.all_gather_object(states, mine)
        return {"states": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict.get("states") or []
        rank, size = _dist_rank_and_size()
        if len(states) != size:
            log.warning("the checkpoint holds the random generators of %d processes, this run has %d: "
                        "training continues with freshly seeded generators", len(states), size)
            self._pending = None
            return
        self._pending = states[rank]

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if self._pending is not None:
            restore_rng_state(self._pending)
            self._pending = None
