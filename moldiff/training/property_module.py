"""``PropertyModule``: trains the E(3)-invariant property predictor used to score conditional generation."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

import moldiff
from moldiff.data.vocab import Vocab
from moldiff.models.property import PropertyPredictor
from moldiff.training.module import BudgetScheduleMixin


def atom_features(atom_types: torch.Tensor, charges: torch.Tensor, vocab: Vocab) -> torch.Tensor:
    return torch.cat([F.one_hot(atom_types, vocab.num_atom_types), F.one_hot(charges, vocab.num_charges)], -1).float()


class PropertyModule(BudgetScheduleMixin, L.LightningModule):
    """Multi-task L1 regression of normalised properties (mean over properties); logs each MAE in dataset units.

    Args:
        model: ``PropertyPredictor`` sizes.
        optim: as for the denoiser (``BudgetScheduleMixin``).
        dataset: ``name``, ``vocab``, ``statistics`` (``prop_mean``/``prop_std``), ``units``.
        properties: the property names, in the order of the outputs.
    """

    def __init__(self, model: dict[str, Any], optim: dict[str, Any], dataset: dict[str, Any], properties: list[str],
                 format_version: int = moldiff.CHECKPOINT_FORMAT) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.properties = list(properties)
        if not self.properties:
            raise ValueError("the property predictor needs at least one property")
        self.vocab = Vocab.from_dict(dataset["vocab"])
        st = dataset["statistics"]
        self.register_buffer("mean", torch.tensor([float(st["prop_mean"][p]) for p in self.properties]), persistent=False)
        self.register_buffer("std", torch.tensor([max(float(st["prop_std"][p]), 1e-8) for p in self.properties]),
                             persistent=False)
        # the model group also holds the denoiser's settings (the experiment overrides only the sizes): keep the
        # predictor's own arguments
        accepted = set(inspect.signature(PropertyPredictor.__init__).parameters) - {"self", "atom_in", "num_outputs"}
        kw = {k: v for k, v in model.items() if k in accepted}
        self.net = PropertyPredictor(self.vocab.num_atom_types + self.vocab.num_charges, num_outputs=len(self.properties), **kw)
        self.optim_cfg = self.optim_settings(optim)

    @property
    def units(self) -> dict[str, str]:
        return dict(self.hparams["dataset"].get("units", {}))

    def predict_batch(self, batch) -> torch.Tensor:
        """Predicted properties in dataset units ``[G, P]``."""
        h = atom_features(batch.atom_types, batch.charges, self.vocab)
        return self.net(batch.pos, h, batch.edge_index, batch.batch, batch.num_graphs) * self.std + self.mean

    def _step(self, batch, stage: str) -> torch.Tensor:
        y = batch.y.float().view(batch.num_graphs, -1)
        pred = self.predict_batch(batch)
        loss = F.l1_loss(pred / self.std, y / self.std)
        on_epoch = stage != "train"
        self.log(f"{stage}/loss", loss, batch_size=batch.num_graphs, prog_bar=stage == "train", on_epoch=on_epoch,
                 sync_dist=on_epoch)
        mae = (pred - y).abs().mean(0)
        for k, p in enumerate(self.properties):
            self.log(f"{stage}/mae_{p}", mae[k], batch_size=batch.num_graphs, on_epoch=on_epoch, on_step=not on_epoch,
                     sync_dist=on_epoch)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")


def load_property_module(path=None, device="cpu") -> PropertyModule:
    """Load a predictor checkpoint or shipped predictor file (``weights_only=True``); ``None`` = the shipped
    QM9 predictor."""
    from moldiff.training.checkpoint import CheckpointError, pretrained_path

    path = pretrained_path("qm9_predictor") if path is None else path
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"predictor checkpoint {path} does not exist") from None
    except Exception as exc:
        raise CheckpointError(f"cannot read predictor checkpoint {path}: {exc}") from None
    hp = ck.get("hyper_parameters", {}) if isinstance(ck, dict) else {}
    if "properties" not in hp:
        raise CheckpointError(f"{path} is not a moldiff property-predictor checkpoint")
    m = PropertyModule(**{k: hp[k] for k in ("model", "optim", "dataset", "properties")})
    state = ck["state_dict"]
    try:
        m.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {path} do not fit its predictor configuration: {exc}") from None
    m.source_path = Path(path)
    return m.eval().to(device)
