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
from moldiff.training.module import BudgetScheduleMixin, property_mask
from moldiff.utils.rng import forked_rng


def atom_features(atom_types: torch.Tensor, charges: torch.Tensor, vocab: Vocab) -> torch.Tensor:
    return torch.cat([F.one_hot(atom_types, vocab.num_atom_types), F.one_hot(charges, vocab.num_charges)], -1).float()


class PropertyModule(BudgetScheduleMixin, L.LightningModule):
    """Multi-task L1 regression of normalised properties (mean over properties); logs each MAE in dataset units.

    Args:
        model: ``PropertyPredictor`` sizes.
        optim: as for the denoiser (``BudgetScheduleMixin``).
        dataset: ``name``, ``vocab``, ``statistics`` (``prop_mean``/``prop_std``), ``units``.
        properties: the property names, in the order of the outputs.
        inputs: ``{"generator": name or path, "t_range": [lo, hi]}`` to train on what predictor guidance gives the
            predictor: each training molecule noised to ``t ~ U(lo, hi)`` and replaced by the generator's
            prediction of the clean molecule there (coordinates and atom-type / charge probabilities; a
            self-conditioning generator's second call, conditioned on a random subset of the molecule's own
            properties as in its training). Validation then scores those inputs too, with fixed noise.
            ``None`` (default): clean molecules.
    """

    def __init__(self, model: dict[str, Any], optim: dict[str, Any], dataset: dict[str, Any], properties: list[str],
                 format_version: int = moldiff.CHECKPOINT_FORMAT, inputs: dict[str, Any] | None = None) -> None:
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
        self.set_inputs(inputs)

    def set_inputs(self, inputs: dict[str, Any] | None) -> None:
        """Train (and validate) on a generator's predictions (``inputs``, see the class) or, with ``None``, on
        clean molecules."""
        self.inputs = dict(inputs) if inputs and inputs.get("generator") else None
        if self.inputs is not None:
            lo, hi = (float(v) for v in self.inputs.get("t_range", (0.0, 1.0)))
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"predictor_inputs.t_range must be [lo, hi] with 0 <= lo <= hi <= 1, got {[lo, hi]}")
            self.inputs["t_range"] = [lo, hi]
        self._generator = None  # loaded on first use, on the module's device (not a sub-module: not saved)

    @property
    def units(self) -> dict[str, str]:
        return dict(self.hparams["dataset"].get("units", {}))

    def predict_batch(self, batch) -> torch.Tensor:
        """Predicted properties in dataset units ``[G, P]``."""
        h = atom_features(batch.atom_types, batch.charges, self.vocab)
        return self.net(batch.pos, h, batch.edge_index, batch.batch, batch.num_graphs) * self.std + self.mean

    def generator(self):
        """The frozen generator of ``inputs`` (a ``LoadedModel``), loaded once on this module's device."""
        if self._generator is None:
            from moldiff.training.checkpoint import SHIPPED, CheckpointError, load_model, pretrained_path

            name = str(self.inputs["generator"])
            path = pretrained_path(SHIPPED[name]) if name in SHIPPED and not Path(name).exists() else name
            try:
                self._generator = load_model(path, self.device, expect_dataset=self.hparams["dataset"]["name"])
            except CheckpointError as exc:
                raise ValueError(f"predictor_inputs.generator={name}: {exc}") from None
            if self._generator.vocab.to_dict() != self.vocab.to_dict():
                raise ValueError(f"predictor_inputs.generator={name} has another atom vocabulary than the dataset")
            self._generator.net.eval().requires_grad_(False)
        return self._generator

    @torch.no_grad()
    def denoised_inputs(self, batch, t: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The generator's prediction of each clean molecule of ``batch`` from its noised copy at a random time
        in ``t_range`` (or at ``t``): coordinates ``[N,3]`` and atom-type + charge probabilities ``[N, A+C]``."""
        gen = self.generator()
        G, dev = batch.num_graphs, batch.pos.device
        lo, hi = self.inputs["t_range"] if t is None else (float(t), float(t))
        t = lo + (hi - lo) * torch.rand(G, device=dev)
        props = None
        if gen.properties:
            y = batch.y.float().view(G, -1)
            raw = torch.full((G, len(gen.properties)), float("nan"), device=dev)
            for k, p in enumerate(gen.properties):
                if p in self.properties:
                    raw[:, k] = y[:, self.properties.index(p)]
            props = gen.normalize(raw)
            given = property_mask(G, len(gen.properties), float(gen.hparams["conditioning"].get("p_uncond", 0.1)),
                                  bool(gen.hparams["conditioning"].get("subsets", False)), dev)
            props = torch.where(given, props, float("nan"))
        fn = gen.denoiser_fn(props)
        g, _ = gen.diffusion.noise(batch, t)
        out = gen.diffusion.denoise(fn, g)
        if gen.diffusion.self_conditioning:
            out = gen.diffusion.denoise(fn, g, gen.diffusion.self_cond_from(out))
        pos0, la, lc, _ = out
        return pos0.float(), torch.cat([la.float().softmax(-1), lc.float().softmax(-1)], -1)

    def _step(self, batch, stage: str) -> torch.Tensor:
        y = batch.y.float().view(batch.num_graphs, -1)
        if self.inputs is None:
            pred = self.predict_batch(batch)
        else:
            pos, h = self.denoised_inputs(batch)
            pred = self.net(pos, h, batch.edge_index, batch.batch, batch.num_graphs) * self.std + self.mean
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
        if self.inputs is None:
            self._step(batch, "val")
            return
        # the same noise at every validation (comparable curves), the training random streams left as they were
        with forked_rng(self.device, 1000 + batch_idx):
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
