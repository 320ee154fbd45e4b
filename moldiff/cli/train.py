"""``moldiff-train``: compose the config, build data module, model and Lightning trainer, run ``fit``."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

from moldiff.cli.common import friendly_errors
from moldiff.data.config import open_dataset
from moldiff.data.datamodule import MolDataModule
from moldiff.training.callbacks import ChunkTimer, FinalCheckpoint, ThroughputLogger
from moldiff.training.module import DiffusionModule

log = logging.getLogger("moldiff.train")


def build_module(cfg: DictConfig, cache) -> DiffusionModule:
    """The LightningModule from a composed config and the opened dataset cache."""
    props = list(cfg.conditioning.properties or [])
    if props:
        cache.prop_columns(props)
    dataset = {"name": cache.name, "vocab": cache.vocab.to_dict(), "statistics": cache.statistics}
    return DiffusionModule(
        model=OmegaConf.to_container(cfg.model, resolve=True),
        diffusion=OmegaConf.to_container(cfg.diffusion, resolve=True),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        dataset=dataset,
        conditioning={"properties": props, "p_uncond": float(cfg.conditioning.p_uncond)},
        validation=OmegaConf.to_container(cfg.validation, resolve=True),
    )


def build_property_module(cfg: DictConfig, cache):
    """The property predictor of the conditional evaluation (``task=property``)."""
    from moldiff.training.property_module import PropertyModule

    if not cfg.property:
        raise ValueError("task=property needs property=NAME (e.g. property=gap)")
    cache.prop_columns([cfg.property])
    dataset = {"name": cache.name, "vocab": cache.vocab.to_dict(), "statistics": cache.statistics}
    return PropertyModule(OmegaConf.to_container(cfg.model, resolve=True), OmegaConf.to_container(cfg.optim, resolve=True),
                          dataset, cfg.property)


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    if cfg.ckpt_path in (None, "", "null"):
        return None
    if cfg.ckpt_path == "auto":
        last = Path(cfg.run_dir) / "checkpoints" / "last.ckpt"
        return str(last) if last.exists() else None
    p = Path(cfg.ckpt_path)
    if not p.exists():
        raise FileNotFoundError(f"ckpt_path {p} does not exist")
    return str(p)


def init_weights(module: DiffusionModule, path: str) -> None:
    """Warm start: copy the denoiser weights of a checkpoint or shipped model file into ``module``."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"init_from {p} does not exist")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as exc:
        raise ValueError(f"init_from {p}: not a moldiff checkpoint or model file ({exc})") from None
    net = {k[len("net."):]: v.float() for k, v in state.items() if k.startswith("net.")}
    try:
        module.net.load_state_dict(net)
    except RuntimeError as exc:
        raise ValueError(f"init_from {p}: its weights do not fit this model configuration ({str(exc).splitlines()[0]})") from None
    log.info("initialised the denoiser from %s", p)


def log_version(ckpt_path: str | None) -> str:
    """CSV log folder under ``run_dir/logs``: the top level for a fresh run, ``from_step{N}`` for a run
    resumed at step N (Lightning's CSV logger deletes the ``metrics.csv`` it finds, so each chunk of a
    resumed run keeps its own file)."""
    if ckpt_path is None:
        return ""
    step = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)["global_step"]
    return f"from_step{int(step):07d}"


def train(cfg: DictConfig, extra_callbacks: list | None = None) -> dict[str, Any]:
    """Run training; returns the trainer, module, datamodule and final metrics."""
    L.seed_everything(cfg.seed, workers=True)
    if cfg.task not in ("diffusion", "property"):
        raise ValueError(f"unknown task {cfg.task!r}; choose from ['diffusion', 'property']")
    run_dir = Path(cfg.run_dir)
    cache = open_dataset(cfg.data)
    props = [cfg.property] if cfg.task == "property" else list(cfg.conditioning.properties or [])
    dm = MolDataModule(
        cache,
        batch_size=cfg.data.batch_size,
        train_split=cfg.data.train_split,
        subset=cfg.data.subset,
        props=props,
        num_workers=cfg.data.num_workers,
        val_size=cfg.data.val_size,
    )
    module = build_module(cfg, cache) if cfg.task == "diffusion" else build_property_module(cfg, cache)
    ckpt_dir = run_dir / "checkpoints"
    callbacks = [
        ModelCheckpoint(dirpath=ckpt_dir, filename=FinalCheckpoint.FILENAME, auto_insert_metric_name=False,
                        every_n_train_steps=cfg.checkpoint.every_n_train_steps, save_top_k=-1, save_last=True),
        LearningRateMonitor(logging_interval="step"),
        FinalCheckpoint(ckpt_dir),  # before EMA: it must save the raw weights at the end
    ]
    if cfg.ema.decay:
        callbacks.append(EMAWeightAveraging(decay=cfg.ema.decay, update_starting_at_step=cfg.ema.start_step))
    if cfg.validation.num_samples and cfg.task == "diffusion":
        from moldiff.training.callbacks import SampleMetricsCallback

        callbacks.append(SampleMetricsCallback(cfg.validation.num_samples, cfg.validation.steps))
    if cfg.trainer.get("max_time"):  # per invocation, so that `ckpt_path=auto` chunks each get their budget
        callbacks.append(ChunkTimer(duration=cfg.trainer.max_time, interval="step"))
    callbacks.append(ThroughputLogger(every=cfg.trainer.log_every_n_steps))
    callbacks += list(extra_callbacks or [])
    ckpt_path = resolve_ckpt_path(cfg)
    if cfg.get("init_from") and ckpt_path is None:
        init_weights(module, cfg.init_from)
    loggers: list = [CSVLogger(run_dir, name="logs", version=log_version(ckpt_path))] if cfg.logger.csv else []
    if cfg.logger.tensorboard is True or (cfg.logger.tensorboard == "auto" and importlib.util.find_spec("tensorboard")):
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(run_dir, name="tb", version=""))
    trainer = hydra.utils.instantiate(cfg.trainer, max_time=None, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir))
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        log.info("model: %d parameters; dataset %s (%d train molecules); run dir %s",
                 sum(p.numel() for p in module.parameters()), cache.name, len(cache.indices(cfg.data.train_split)), run_dir)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if trainer.is_global_zero:
        summary = {"global_step": trainer.global_step, "epoch": trainer.current_epoch, "metrics": metrics,
                   "last_checkpoint": str(ckpt_dir / "last.ckpt")}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return {"trainer": trainer, "module": module, "datamodule": dm, "metrics": metrics}


@hydra.main(config_path="pkg://moldiff.conf", config_name="train", version_base="1.3")
@friendly_errors
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
