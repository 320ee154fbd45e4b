"""Load a trained model from a checkpoint (``weights_only=True``), checking format and dataset."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import moldiff
from moldiff.data.vocab import Vocab
from moldiff.diffusion.joint import JointDiffusion
from moldiff.models.denoiser import Denoiser
from moldiff.training.builders import build_denoiser, build_diffusion

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here; the message says what differs."""


@dataclass
class LoadedModel:
    """Everything the sampler needs, rebuilt from a checkpoint alone."""

    net: Denoiser
    diffusion: JointDiffusion
    vocab: Vocab
    statistics: dict[str, Any]
    hparams: dict[str, Any]
    path: str

    @property
    def properties(self) -> list[str]:
        return list((self.hparams.get("conditioning") or {}).get("properties", []) or [])

    @property
    def dataset(self) -> str:
        return self.hparams["dataset"]["name"]

    @property
    def property_ranges(self) -> dict[str, list[float]]:
        """Training range ``[min, max]`` of each conditioning property (dataset units)."""
        return dict((self.hparams.get("conditioning") or {}).get("range", {}) or {})

    @property
    def default_guidance_scale(self) -> float:
        """Classifier-free guidance weight this model samples with by default (``conditioning.guidance_scale``
        of its record; 1 = plain conditional)."""
        return float((self.hparams.get("conditioning") or {}).get("guidance_scale", 1.0))

    @property
    def property_guidance_scales(self) -> dict[str, float]:
        """Default guidance weights recorded for single properties (``conditioning.guidance_scales``), where
        they differ from :attr:`default_guidance_scale`."""
        given = (self.hparams.get("conditioning") or {}).get("guidance_scales") or {}
        return {str(p): float(w) for p, w in given.items()}

    def guidance_for(self, properties: list[str]) -> tuple[float, list[float]]:
        """The default guidance weight and interval of diffusion times when ``properties`` are given: those
        recorded for the property when it is the only one given (``conditioning.guidance_scales``,
        ``conditioning.guidance_intervals``), else :attr:`default_guidance_scale` on every step ``[0, 1]``
        (a weight tuned for one property alone need not suit a combination)."""
        cond = self.hparams.get("conditioning") or {}
        own = self.property_guidance_scales
        if len(properties) != 1 or properties[0] not in own:
            return self.default_guidance_scale, [0.0, 1.0]
        prop = properties[0]
        return own[prop], [float(v) for v in (cond.get("guidance_intervals") or {}).get(prop, [0.0, 1.0])]

    @property
    def recorded_predictor_guidance(self) -> dict[str, Any] | None:
        """The predictor guidance this model samples with by default when targets are given
        (``conditioning.predictor_guidance``: ``{"predictor", "scale", "interval"}``, written by
        ``scripts/export_pretrained.py --predictor-guidance``); None when it records none."""
        pg = (self.hparams.get("conditioning") or {}).get("predictor_guidance")
        return dict(pg) if pg else None

    @property
    def sampler_settings(self) -> list[dict[str, float]]:
        """Sampler settings the model file recommends for ranges of step counts (``sampling.settings`` of its
        hyper-parameters, written by ``scripts/export_pretrained.py --sampler-settings``): a list of
        ``{"min_steps", "max_steps", "time_power", "temperature"}``; empty when it records none."""
        return [dict(s) for s in (self.hparams.get("sampling") or {}).get("settings", []) or []]

    def recorded_sampler_settings(self, steps: int) -> dict[str, float] | None:
        """``time_power`` and ``temperature`` of the first recorded :attr:`sampler_settings` whose step range
        holds ``steps``; None when none does."""
        for s in self.sampler_settings:
            if int(s["min_steps"]) <= steps <= int(s["max_steps"]):
                return {"time_power": float(s["time_power"]), "temperature": float(s["temperature"])}
        return None

    def sampler_defaults(self, steps: int) -> dict[str, float]:
        """``time_power`` and ``temperature`` this model samples ``steps`` steps with when they are not given:
        :meth:`recorded_sampler_settings`, else the uniform grid at temperature 1."""
        return self.recorded_sampler_settings(steps) or {"time_power": 1.0, "temperature": 1.0}

    @property
    def property_units(self) -> dict[str, str]:
        return dict((self.hparams.get("conditioning") or {}).get("units", {}) or {})

    def normalize(self, values: torch.Tensor) -> torch.Tensor:
        """Raw property values ``[G,P]`` (dataset units; NaN = not given, and stays NaN) -> network inputs."""
        mean = torch.tensor([self.statistics["prop_mean"][p] for p in self.properties])
        std = torch.tensor([max(self.statistics["prop_std"][p], 1e-8) for p in self.properties])
        return (values - mean.to(values)) / std.to(values)

    def denoiser_fn(self, props: torch.Tensor | None = None):
        def fn(pos, h, edge_index, e, batch, t, num_graphs, **kw):
            return self.net(pos, h, edge_index, e, batch, t, num_graphs, props=props, **kw)

        return fn


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: the shipped models by the names ``ckpt=`` and :func:`moldiff.load_pretrained` take -> their files' stems:
#: the default ``qm9`` is the model distilled for few steps (``qm9_fast``), ``qm9_base`` the one it was distilled from
SHIPPED = {"qm9": "qm9_fast", "qm9_fast": "qm9_fast", "qm9_base": "qm9_default", "qm9_conditional": "qm9_conditional"}


def pretrained_path(name: str = "qm9_default") -> Path:
    """A shipped model file under ``moldiff/pretrained/`` (``<name>.pt``), verified against the sha256 its
    ``<name>.json`` records."""
    info_file = PRETRAINED_DIR / f"{name}.json"
    if not info_file.exists():
        raise CheckpointError(f"no shipped model {name!r} found ({info_file} missing); pass ckpt=PATH")
    info = json.loads(info_file.read_text())
    path = PRETRAINED_DIR / info["file"]
    if not path.exists():
        raise CheckpointError(f"shipped weights {path} are missing; reinstall moldiff or pass ckpt=PATH")
    digest = sha256(path)
    if digest != info["sha256"]:
        raise CheckpointError(f"shipped weights {path} fail their sha256 check (got {digest}, recorded {info['sha256']})")
    return path


def default_checkpoint() -> Path:
    """The shipped default unconditional QM9 model (``SHIPPED["qm9"]``)."""
    return pretrained_path(SHIPPED["qm9"])


def load_model(
    path: str | Path | None = None,
    device: str | torch.device = "cpu",
    expect_dataset: str | None = None,
) -> LoadedModel:
    """Rebuild the EMA denoiser and diffusion from a Lightning checkpoint or a shipped weights file.

    Raises:
        CheckpointError: missing file, unreadable, another checkpoint format/version, another dataset,
            or weights that do not fit the stored configuration.
    """
    path = Path(path) if path else default_checkpoint()
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a moldiff checkpoint (it holds a {type(ckpt).__name__}, not a checkpoint dict)")
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict) or "dataset" not in hp:
        raise CheckpointError(f"{path} is not a moldiff checkpoint (no moldiff hyper-parameters)")
    fmt = hp.get("format_version")
    if fmt != moldiff.CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {fmt} (moldiff {hp.get('moldiff_version')}); this moldiff "
            f"({moldiff.__version__}) reads format {moldiff.CHECKPOINT_FORMAT}"
        )
    name = hp["dataset"]["name"]
    if expect_dataset is not None and name != expect_dataset:
        raise CheckpointError(f"{path} was trained on dataset {name!r}, but {expect_dataset!r} was asked for")
    vocab = Vocab.from_dict(hp["dataset"]["vocab"])
    stats = hp["dataset"]["statistics"]
    diffusion = build_diffusion(hp["diffusion"], vocab, stats, bool(hp["model"].get("self_conditioning", False)))
    props = list((hp.get("conditioning") or {}).get("properties", []) or [])
    net = build_denoiser(hp["model"], vocab, diffusion, num_props=len(props))
    state = {k[len("net."):]: v.float() for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {path} do not fit its model configuration: {exc}") from None
    net.eval().to(device)
    return LoadedModel(net, diffusion, vocab, stats, hp, str(path))
