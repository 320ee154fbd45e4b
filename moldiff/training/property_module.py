"""``PropertyModule``: trains the equivariant property predictor used by the conditional evaluation."""

from __future__ import annotations

import inspect
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

import moldiff
from moldiff.data.vocab import Vocab
from moldiff.models.property import PropertyPredictor


def atom_features(atom_types: torch.Tensor, charges: torch.Tensor, vocab: Vocab) -> torch.Tensor:
    return torch.cat([F.one_hot(atom_types, vocab.num_atom_types), F.one_hot(charges, vocab.num_charges)], -1).float()


class PropertyModule(L.LightningModule):
    """L1 regression of one normalised property; logs MAE in dataset units.

    Args:
        model: ``PropertyPredictor`` sizes.
        optim: ``lr``, ``weight_decay``.
        dataset: ``name``, ``vocab``, ``statistics``.
        prop: the property name.
    """

    def __init__(self, model: dict[str, Any], optim: dict[str, Any], dataset: dict[str, Any], prop: str,
                 format_version: int = moldiff.CHECKPOINT_FORMAT) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.vocab = Vocab.from_dict(dataset["vocab"])
        st = dataset["statistics"]
        self.mean, self.std = float(st["prop_mean"][prop]), float(max(st["prop_std"][prop], 1e-8))
        # the model group also holds the denoiser's settings (the experiment overrides only the sizes): keep the
        # predictor's own arguments
        accepted = set(inspect.signature(PropertyPredictor.__init__).parameters) - {"self", "atom_in"}
        kw = {k: v for k, v in model.items() if k in accepted}
        self.net = PropertyPredictor(self.vocab.num_atom_types + self.vocab.num_charges, **kw)
        self.optim_cfg = {"lr": 5e-4, "weight_decay": 1e-12, **optim}

    def predict_batch(self, batch) -> torch.Tensor:
        """Predicted property in dataset units ``[G]``."""
        h = atom_features(batch.atom_types, batch.charges, self.vocab)
        return self.net(batch.pos, h, batch.edge_index, batch.batch, batch.num_graphs) * self.std + self.mean

    def _step(self, batch, stage: str) -> torch.Tensor:
        y = batch.y.view(-1).float()
        pred = self.predict_batch(batch)
        loss = F.l1_loss((pred - self.mean) / self.std, (y - self.mean) / self.std)
        self.log(f"{stage}/loss", loss, batch_size=batch.num_graphs, prog_bar=stage == "train", on_epoch=stage != "train")
        self.log(f"{stage}/mae", (pred - y).abs().mean(), batch_size=batch.num_graphs, on_epoch=stage != "train",
                 on_step=stage == "train", sync_dist=stage != "train")
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.optim_cfg["lr"], weight_decay=self.optim_cfg["weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.trainer.max_steps if self.trainer.max_steps > 0 else 100000))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def load_property_module(path, device="cpu") -> PropertyModule:
    """Load a predictor checkpoint with ``weights_only=True``."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    hp = ck.get("hyper_parameters", {})
    if "prop" not in hp:
        raise ValueError(f"{path} is not a property-predictor checkpoint")
    m = PropertyModule(**{k: hp[k] for k in ("model", "optim", "dataset", "prop")})
    m.load_state_dict(ck["state_dict"])
    return m.eval().to(device)
