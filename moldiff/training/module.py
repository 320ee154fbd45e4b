"""``DiffusionModule``: the LightningModule joining denoiser, diffusion, sampling and metrics."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

import moldiff
from moldiff.data.vocab import Vocab
from moldiff.training.builders import build_denoiser, build_diffusion


class NonFiniteLossError(RuntimeError):
    """Raised when the loss becomes NaN/inf; the last good checkpoint is left as it was."""


class DiffusionModule(L.LightningModule):
    """Trains the joint denoiser with the x0-parameterised diffusion loss.

    All arguments are plain dicts/lists (stored as hyper-parameters in the checkpoint, which therefore
    loads with ``torch.load(weights_only=True)`` and rebuilds the model without the dataset).

    Args:
        model: denoiser sizes (see ``moldiff.training.builders.MODEL_KEYS``).
        diffusion: schedules, transition, loss weights.
        optim: ``lr``, ``weight_decay``, ``warmup_steps``, ``betas``.
        dataset: ``name``, ``vocab`` (dict), ``statistics`` (dict, from the cache).
        conditioning: ``properties`` (names), ``p_uncond`` (drop probability in training).
        validation: ``num_samples`` molecules sampled at each validation (0 = none), ``steps``.
    """

    def __init__(
        self,
        model: dict[str, Any],
        diffusion: dict[str, Any],
        optim: dict[str, Any],
        dataset: dict[str, Any],
        conditioning: dict[str, Any] | None = None,
        validation: dict[str, Any] | None = None,
        format_version: int = moldiff.CHECKPOINT_FORMAT,
        moldiff_version: str = moldiff.__version__,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.vocab = Vocab.from_dict(dataset["vocab"])
        self.statistics = dataset["statistics"]
        cond = conditioning or {}
        self.properties: list[str] = list(cond.get("properties", []) or [])
        self.p_uncond = float(cond.get("p_uncond", 0.1))
        stats = self.statistics
        self.register_buffer(
            "prop_mean", torch.tensor([stats["prop_mean"][p] for p in self.properties], dtype=torch.float32), persistent=False
        )
        self.register_buffer(
            "prop_std", torch.tensor([max(stats["prop_std"][p], 1e-8) for p in self.properties], dtype=torch.float32), persistent=False
        )
        self.diffusion = build_diffusion(diffusion, self.vocab, self.statistics)
        self.net = build_denoiser(model, self.vocab, self.diffusion, num_props=len(self.properties))
        self.optim_cfg = {"lr": 5e-4, "weight_decay": 1e-12, "warmup_steps": 500, "betas": (0.9, 0.999), **optim}
        self.validation_cfg = {"num_samples": 0, "steps": 50, **(validation or {})}

    # ------------------------------------------------------------------------------------ helpers
    def normalize_props(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.prop_mean) / self.prop_std

    def denoiser_fn(self, props: torch.Tensor | None = None, drop: torch.Tensor | None = None):
        """The callable handed to ``diffusion``/``sampling``, with conditioning bound."""

        def fn(pos, h, edge_index, e, batch, t, num_graphs, rev=None):
            return self.net(pos, h, edge_index, e, batch, t, num_graphs, props=props, drop=drop, rev=rev)

        return fn

    def _props_for(self, batch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.properties:
            return None, None
        props = self.normalize_props(batch.y.float())
        drop = torch.rand(batch.num_graphs, device=props.device) < self.p_uncond if self.training else None
        return props, drop

    def _step(self, batch, stage: str) -> torch.Tensor:
        props, drop = self._props_for(batch)
        losses = self.diffusion.loss(self.denoiser_fn(props, drop), batch)
        if not torch.isfinite(losses["loss"]):
            detail = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            raise NonFiniteLossError(
                f"non-finite {stage} loss at global step {self.global_step} ({detail}); stopping. "
                "The last checkpoint written before this step is intact: resume from it with a lower "
                "learning rate (optim.lr=...) or stronger gradient clipping (trainer.gradient_clip_val=...)."
            )
        self.log_dict(
            {f"{stage}/{'loss' if k == 'loss' else 'loss_' + k}": v for k, v in losses.items()},
            batch_size=batch.num_graphs,
            prog_bar=(stage == "train"),
            on_step=(stage == "train"),
            on_epoch=(stage != "train"),
            sync_dist=(stage != "train"),
        )
        return losses["loss"]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        self.log("train/mols_per_batch", float(batch.num_graphs), on_step=True, batch_size=batch.num_graphs)
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1000 + batch_idx)  # same noise every validation: comparable curves
            self._step(batch, "val")

    def configure_optimizers(self):
        c = self.optim_cfg
        opt = torch.optim.AdamW(self.parameters(), lr=c["lr"], weight_decay=c["weight_decay"], betas=tuple(c["betas"]), amsgrad=True)
        warm = max(int(c["warmup_steps"]), 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["moldiff"] = {
            "format_version": moldiff.CHECKPOINT_FORMAT,
            "moldiff_version": moldiff.__version__,
            "dataset": self.hparams["dataset"]["name"],
        }

    @property
    def log_every(self) -> int:
        return max(1, int(math.sqrt(self.trainer.num_training_batches))) if self.trainer else 50
