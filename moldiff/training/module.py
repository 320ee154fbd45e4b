"""``DiffusionModule``: the LightningModule joining denoiser, diffusion, sampling and metrics."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

import moldiff
from moldiff.config import optim_defaults, with_defaults
from moldiff.data.vocab import Vocab
from moldiff.training.builders import build_denoiser, build_diffusion
from moldiff.utils.rng import forked_rng


def property_mask(G: int, P: int, p_uncond: float, subsets: bool, device=None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Which of ``P`` properties each of ``G`` molecules is conditioned on ``[G,P]``, as conditional training
    draws it: none with probability ``p_uncond`` (the guidance null); otherwise all (``subsets=False``), or a
    random subset whose size is uniform on 1..P (``subsets=True``), so that any combination a user gives at
    sampling time was seen in training."""
    keep = torch.rand(G, 1, device=device, generator=generator) >= p_uncond
    if not subsets or P == 1:
        return keep.expand(G, P)
    k = torch.randint(1, P + 1, (G, 1), device=device, generator=generator)
    rank = torch.rand(G, P, device=device, generator=generator).argsort(dim=1).argsort(dim=1)  # a permutation per row
    return keep & (rank < k)


class NonFiniteLossError(RuntimeError):
    """Raised when the loss becomes NaN/inf; the last good checkpoint is left as it was."""


class BudgetScheduleMixin:
    """The optimiser and learning-rate scheduler of ``optim_cfg`` (``train.yaml``'s ``optim``): the
    ``optimizer`` partial (AdamW by default) on the module's parameters, and the ``scheduler`` partial
    (``LambdaLR`` by default) given :meth:`lr_factor`, a linear warm-up, then constant or cosine decay over a
    step and/or training-time budget (``warmup_steps``, ``schedule``, ``min_lr_ratio``, ``total_steps``,
    ``total_minutes``). Shared by the denoiser and the property predictor."""

    @staticmethod
    def optim_settings(optim: dict[str, Any] | None) -> dict[str, Any]:
        """``optim`` completed from ``train.yaml``'s ``optim`` section (the one source of its defaults), its
        references to other ``optim`` keys (the optimizer's ``lr: ${optim.lr}``) resolved. A given
        ``optimizer`` or ``scheduler`` replaces the default one as a whole (its arguments depend on its class)."""
        from omegaconf import OmegaConf

        given = dict(optim or {})
        parts = {k: given.pop(k) for k in ("optimizer", "scheduler") if k in given}
        c = with_defaults(optim_defaults(), given, "optim")
        c.update(parts)
        if c["schedule"] not in ("constant", "cosine"):
            raise ValueError(f"unknown optim.schedule {c['schedule']!r}; choose from ['constant', 'cosine']")
        try:
            c = OmegaConf.to_container(OmegaConf.create({"optim": c}).optim, resolve=True)
        except Exception as exc:  # an interpolation outside optim
            raise ValueError(f"optim: {' '.join(str(exc).split())}") from None
        for key in ("optimizer", "scheduler"):
            part = c.get(key)
            if key == "optimizer" and not part or part and not (isinstance(part, dict) and part.get("_target_")):
                raise ValueError(f"optim.{key} must name a class with _target_ (and _partial_: true), got {part!r}")
        return c

    def configure_optimizers(self):
        from hydra.errors import InstantiationException
        from hydra.utils import instantiate

        c = self.optim_cfg
        try:
            opt = instantiate(c["optimizer"], _partial_=True)(self.parameters())
            if not c.get("scheduler"):
                return opt
            sched = instantiate(c["scheduler"], _partial_=True)(opt, lr_lambda=lambda step: self.lr_factor(step))
        except (InstantiationException, TypeError) as exc:
            cause = exc.__cause__ or exc
            raise ValueError(f"optim.optimizer / optim.scheduler rejected: {' '.join(str(cause).split())}") from None
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def budget_progress(self, step: int) -> float:
        """Fraction of the training budget used at ``step``: the larger of ``step / total_steps`` and the run's
        training time (all chunks, from ``ChunkTimer``) over ``total_minutes``. A resumed chunk therefore
        continues the same schedule."""
        c = self.optim_cfg
        frac = 0.0
        if c.get("total_steps"):
            frac = step / float(c["total_steps"])
        if c.get("total_minutes") and self._trainer is not None:
            from moldiff.training.callbacks import ChunkTimer

            timers = [cb for cb in self.trainer.callbacks if isinstance(cb, ChunkTimer)]
            if timers:
                frac = max(frac, timers[0].total_train_seconds() / (60.0 * float(c["total_minutes"])))
        return min(frac, 1.0)

    def lr_factor(self, step: int) -> float:
        """Linear warm-up over ``warmup_steps``, then constant or cosine decay to ``min_lr_ratio``."""
        c = self.optim_cfg
        warm = min(1.0, (step + 1) / max(int(c["warmup_steps"]), 1))
        if c["schedule"] == "constant":
            return warm
        lo = float(c["min_lr_ratio"])
        return warm * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * self.budget_progress(step))))


class DiffusionModule(BudgetScheduleMixin, L.LightningModule):
    """Trains the joint denoiser with the x0-parameterised diffusion loss.

    All arguments are plain dicts/lists (stored as hyper-parameters in the checkpoint, which therefore
    loads with ``torch.load(weights_only=True)`` and rebuilds the model without the dataset).

    Args:
        model: denoiser settings (a preset of ``conf/model``; missing keys from the preset it names).
        diffusion: schedules, transition, loss weights.
        optim: ``lr``, ``weight_decay``, ``warmup_steps``, ``betas``, and the decay after warm-up:
            ``schedule`` (``constant`` or ``cosine``: to ``min_lr_ratio * lr`` at the end of the budget),
            with the budget ``total_steps`` and/or ``total_minutes`` (training time of the whole run, all
            resumed chunks; whichever is reached first ends the decay).
        dataset: ``name``, ``vocab`` (dict), ``statistics`` (dict, from the cache).
        conditioning: ``properties`` (names), ``p_uncond`` (probability of no conditioning in a training
            step), ``subsets`` (train on random subsets of the properties), ``range`` (training range per
            property, for the sampler's out-of-range warning).
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
        self.subsets = bool(cond.get("subsets", False))
        stats = self.statistics
        self.register_buffer(
            "prop_mean", torch.tensor([stats["prop_mean"][p] for p in self.properties], dtype=torch.float32), persistent=False
        )
        self.register_buffer(
            "prop_std", torch.tensor([max(stats["prop_std"][p], 1e-8) for p in self.properties], dtype=torch.float32), persistent=False
        )
        self.diffusion = build_diffusion(diffusion, self.vocab, self.statistics, bool(model.get("self_conditioning", False)))
        self.net = build_denoiser(model, self.vocab, self.diffusion, num_props=len(self.properties))
        self.optim_cfg = self.optim_settings(optim)
        self.validation_cfg = {"num_samples": 0, "steps": 50, **(validation or {})}

    # ------------------------------------------------------------------------------------ helpers
    def normalize_props(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.prop_mean) / self.prop_std

    def denoiser_fn(self, props: torch.Tensor | None = None):
        """The callable handed to ``diffusion``/``sampling``, with conditioning bound (NaN = not given)."""

        def fn(pos, h, edge_index, e, batch, t, num_graphs, **kw):
            return self.net(pos, h, edge_index, e, batch, t, num_graphs, props=props, **kw)

        return fn

    def _props_for(self, batch) -> torch.Tensor | None:
        """Normalised targets ``[G,P]``; in training, hidden (NaN) as the conditioning recipe says."""
        if not self.properties:
            return None
        props = self.normalize_props(batch.y.float().view(batch.num_graphs, -1))
        if self.training:
            props = torch.where(self.given_mask(props.shape[0], props.device), props, float("nan"))
        return props

    def given_mask(self, G: int, device) -> torch.Tensor:
        """Which properties each molecule is conditioned on in a training step ``[G,P]``
        (:func:`property_mask` with this model's ``p_uncond`` and ``subsets``)."""
        return property_mask(G, len(self.properties), self.p_uncond, self.subsets, device)

    def _step(self, batch, stage: str) -> torch.Tensor:
        props = self._props_for(batch)
        losses = self.diffusion.loss(self.denoiser_fn(props), batch)
        # the finiteness check reads the loss on the host: on a GPU that waits for the step, so in training it
        # runs every `nan_check_every` steps (a NaN poisons the weights for good, so it is still caught, and
        # `on_save_checkpoint` refuses to write non-finite weights in between)
        every = max(int(self.optim_cfg["nan_check_every"]), 1) if self.device.type != "cpu" else 1
        if (stage != "train" or self.global_step % every == 0) and not torch.isfinite(losses["loss"]):
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
        # same noise every validation (comparable curves); the training RNG streams are left as they were
        with forked_rng(self.device, 1000 + batch_idx):
            self._step(batch, "val")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        bad = [k for k, v in checkpoint["state_dict"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise NonFiniteLossError(
                f"non-finite weights at global step {self.global_step} ({bad[0]}, ...); no checkpoint written. "
                "Resume from the last checkpoint with a lower learning rate (optim.lr=...)."
            )
        checkpoint["moldiff"] = {
            "format_version": moldiff.CHECKPOINT_FORMAT,
            "moldiff_version": moldiff.__version__,
            "dataset": self.hparams["dataset"]["name"],
        }
