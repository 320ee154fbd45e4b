"""``moldiff-train``: compose the config, build data module, model and Lightning trainer, run ``fit``.

One run writes everything into one folder, ``run_dir`` (config, logs, checkpoints, summary): under
``moldiff-train`` that is Hydra's output folder, which ``hydra.run.dir`` sets and which defaults to
``run_dir``, so either setting names the same folder (a ``-m`` sweep: one subfolder per job). The
processes Lightning starts for DDP use the folder of the first process, the dataset cache is built by one
process per node, and the end-of-training checkpoint is decided once for all processes. When a launcher
such as torchrun or SLURM starts every process itself, give ``run_dir`` (each process would otherwise
take its own timestamp; checkpoints and logs still go to the first process's folder).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from moldiff.cli.common import friendly_errors, one_line
from moldiff.data.cache import MolCache, data_root
from moldiff.data.config import open_dataset, prepare_options
from moldiff.data.datamodule import MolDataModule
from moldiff.data.registry import get_recipe
from moldiff.training.module import DiffusionModule

log = logging.getLogger("moldiff.train")

#: Environment variable through which the first process hands its run folder to the processes that
#: Lightning starts for multi-process training (they inherit its environment).
RUN_DIR_ENV = "MOLDIFF_RUN_DIR"
#: Seconds a process waits for the first process of its node to build the dataset cache.
CACHE_WAIT_ENV = "MOLDIFF_CACHE_WAIT"

#: Config keys that must hold numbers: key -> (integer?, null allowed?).
NUMERIC_KEYS: dict[str, tuple[bool, bool]] = {
    "seed": (True, False),
    "trainer.max_steps": (True, False),
    "trainer.max_epochs": (True, True),
    "trainer.num_nodes": (True, False),
    "trainer.log_every_n_steps": (True, False),
    "trainer.gradient_clip_val": (False, True),
    "trainer.check_val_every_n_epoch": (True, True),
    "trainer.val_check_interval": (False, True),
    "trainer.limit_val_batches": (False, True),
    "trainer.num_sanity_val_steps": (True, True),
    "trainer.accumulate_grad_batches": (True, True),
    "data.batch_size": (True, False),
    "data.num_workers": (True, False),
    "data.subset": (True, True),
    "data.val_size": (True, True),
    "data.limit": (True, True),
    "optim.lr": (False, False),
    "optim.weight_decay": (False, False),
    "optim.warmup_steps": (True, False),
    "optim.min_lr_ratio": (False, False),
    "optim.total_steps": (True, True),
    "optim.total_minutes": (False, True),
    "optim.nan_check_every": (True, False),
    "ema.decay": (False, True),
    "ema.start_step": (True, True),
    "conditioning.p_uncond": (False, False),
    "validation.num_samples": (True, True),
    "validation.steps": (True, False),
    "checkpoint.every_n_train_steps": (True, False),
}


def check_numbers(cfg: DictConfig) -> None:
    """Raise a one-line ``ValueError`` naming the first numeric setting that holds something else.

    Raises:
        ValueError: e.g. ``trainer.max_steps must be an integer, got 'abc'``.
    """
    for key, (integer, nullable) in NUMERIC_KEYS.items():
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=True)
        except Exception as exc:  # an interpolation that does not resolve
            raise ValueError(f"{key}: {' '.join(str(exc).split())}") from None
        if value is None:
            if nullable or OmegaConf.select(cfg, key, default="absent") == "absent":
                continue
            raise ValueError(f"{key} must be {'an integer' if integer else 'a number'}, got null")
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)):
            raise ValueError(f"{key} must be {'an integer' if integer else 'a number'}, got {value!r}")


def build_module(cfg: DictConfig, cache) -> DiffusionModule:
    """The LightningModule from a composed config and the opened dataset cache."""
    props = list(cfg.conditioning.properties or [])
    ranges = {}
    if props:
        values = cache.props[cache.indices(cfg.data.train_split)][:, cache.prop_columns(props)].numpy()
        ranges = {p: [float(np.nanmin(values[:, k])), float(np.nanmax(values[:, k]))] for k, p in enumerate(props)}
    dataset = {"name": cache.name, "vocab": cache.vocab.to_dict(), "statistics": cache.statistics}
    return DiffusionModule(
        model=OmegaConf.to_container(cfg.model, resolve=True),
        diffusion=OmegaConf.to_container(cfg.diffusion, resolve=True),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        dataset=dataset,
        conditioning={"properties": props, "p_uncond": float(cfg.conditioning.p_uncond),
                      "subsets": bool(cfg.conditioning.get("subsets", False)), "range": ranges,
                      "units": {p: cache.meta.get("units", {}).get(p, "") for p in props}},
        validation=OmegaConf.to_container(cfg.validation, resolve=True),
    )


def build_property_module(cfg: DictConfig, cache):
    """The property predictor of the conditional evaluation (``task=property``)."""
    from moldiff.training.property_module import PropertyModule

    props = predictor_properties(cfg)
    cache.prop_columns(props)
    dataset = {"name": cache.name, "vocab": cache.vocab.to_dict(), "statistics": cache.statistics,
               "units": {p: cache.meta.get("units", {}).get(p, "") for p in props}}
    inputs = OmegaConf.to_container(cfg.predictor_inputs, resolve=True) if cfg.get("predictor_inputs") else None
    return PropertyModule(OmegaConf.to_container(cfg.model, resolve=True), OmegaConf.to_container(cfg.optim, resolve=True),
                          dataset, props, inputs=inputs if inputs and inputs.get("generator") else None)


def predictor_properties(cfg: DictConfig) -> list[str]:
    """``properties=[...]`` of ``task=property`` (a bare name is accepted as a one-element list)."""
    props = cfg.get("properties")
    props = [props] if isinstance(props, str) else list(props or [])
    if not props:
        raise ValueError("task=property needs properties=[NAME,...] (e.g. properties=[gap])")
    return [str(p) for p in props]


# ------------------------------------------------------------------------------------------ processes
def _env_int(*names: str) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                return None
    return None


def process_rank() -> int:
    """Rank of this process as its launcher set it (0 when launched on its own)."""
    return _env_int("RANK", "LOCAL_RANK", "SLURM_PROCID") or 0


def node_local_rank() -> int:
    """Rank of this process on its node (0 when launched on its own)."""
    return _env_int("LOCAL_RANK", "SLURM_LOCALID") or 0


def _raw(node: DictConfig, key: str) -> Any:
    """The value of ``node.key`` as written (interpolations unresolved)."""
    return OmegaConf.to_container(node, resolve=False).get(key)


def _hydra_output() -> tuple[Path, str] | None:
    """Hydra's output folder of this job and how it was written (None outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        written = f"{_raw(hc.sweep, 'dir')}/{_raw(hc.sweep, 'subdir')}"
    else:
        written = str(_raw(hc.run, "dir"))
    return Path(hc.runtime.output_dir), written


def resolve_run_dir(cfg: DictConfig) -> tuple[Path, bool]:
    """This run's output folder, the same in every process, and whether it is new with every invocation
    (the default ``runs/<dataset>/<date>_<time>``) rather than a fixed name that a later run can resume.

    Order: the folder handed down by the first process (``MOLDIFF_RUN_DIR``, in the processes Lightning
    starts for DDP); Hydra's output folder under ``moldiff-train`` (``hydra.run.dir``, which defaults to
    ``run_dir``); ``run_dir``.
    """
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited and process_rank() != 0:
        return Path(inherited), False
    written = str(_raw(cfg, "run_dir"))
    hydra_out = _hydra_output()
    if hydra_out is not None:
        out, hydra_written = hydra_out
        if "${run_dir}" not in hydra_written:
            given = Path(str(cfg.run_dir))
            if given.resolve() != out.resolve() and "${now:" not in written:
                log.warning("run_dir=%s differs from hydra.run.dir=%s: this run writes to %s", given, out, out)
            written = hydra_written
        return out, "${now:" in written
    return Path(str(cfg.run_dir)), "${now:" in written


# ------------------------------------------------------------------------------------------ dataset cache
def _data_options(data_cfg: DictConfig) -> dict[str, Any]:
    return dict(OmegaConf.to_container(data_cfg, resolve=True))


def cache_folder(data_cfg: DictConfig) -> Path:
    """Where the cache of this ``data`` config lives."""
    d = _data_options(data_cfg)
    recipe = get_recipe(d["name"])
    options = prepare_options(d)
    recipe.check_options(options)
    return data_root(d.get("root")) / recipe.folder_name(options)


def cache_is_current(data_cfg: DictConfig) -> bool:
    """Whether the cache exists and matches the recipe version, options and source (reads ``meta.json`` only)."""
    d = _data_options(data_cfg)
    recipe = get_recipe(d["name"])
    meta_file = cache_folder(data_cfg) / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return False
    return meta.get("recipe_version") == recipe.version and recipe.stale(meta, prepare_options(d)) is None


def ensure_cache(data_cfg: DictConfig) -> None:
    """Build the cache if it is missing or out of date (``MolDataModule.prepare_data``)."""
    if not cache_is_current(data_cfg):
        log.info("building the dataset cache %s", cache_folder(data_cfg))
        open_dataset(_data_options(data_cfg))


def wait_for_cache(data_cfg: DictConfig, timeout: float | None = None, poll: float = 2.0) -> MolCache:
    """Open the cache once the first process of this node has built it.

    Raises:
        ValueError: the cache is not ready after ``timeout`` seconds (default ``$MOLDIFF_CACHE_WAIT`` or 3 h).
    """
    timeout = float(os.environ.get(CACHE_WAIT_ENV, 3 * 3600)) if timeout is None else timeout
    start = time.monotonic()
    told = False
    while not cache_is_current(data_cfg):
        if time.monotonic() - start > timeout:
            raise ValueError(f"the dataset cache {cache_folder(data_cfg)} was not ready after {timeout:.0f} s "
                             f"(it is built by the first process of each node; ${CACHE_WAIT_ENV} sets the wait)")
        if not told:
            log.info("waiting for the first process to build the dataset cache %s", cache_folder(data_cfg))
            told = True
        time.sleep(poll)
    return MolCache(cache_folder(data_cfg))


def open_cache(data_cfg: DictConfig) -> MolCache:
    """The opened cache: built (if needed) by the first process of each node, opened by every process."""
    if node_local_rank() == 0:
        ensure_cache(data_cfg)
        return MolCache(cache_folder(data_cfg))
    return wait_for_cache(data_cfg)


# ------------------------------------------------------------------------------------------ checkpoints
def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable training checkpoint (one line), or None if it is."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        return f"{type(exc).__name__}: {lines[0] if lines else 'unreadable'}"
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        return "not a Lightning training checkpoint"
    return None


def newest_intact_checkpoint(folder: Path, exclude: Path | None = None) -> Path | None:
    """The most recently written readable ``*.ckpt`` in ``folder`` (other than ``exclude``)."""
    candidates = [p for p in folder.glob("*.ckpt") if exclude is None or p.resolve() != exclude.resolve()]
    for p in sorted(candidates, key=lambda q: q.stat().st_mtime, reverse=True):
        if checkpoint_problem(p) is None:
            return p
    return None


def check_checkpoint(path: Path) -> None:
    """Raise a one-line ``ValueError`` naming ``path`` and the newest intact checkpoint beside it if ``path``
    cannot be read (e.g. a file cut short when a job was killed while writing it)."""
    problem = checkpoint_problem(path)
    if problem is None:
        return
    other = newest_intact_checkpoint(path.parent, exclude=path)
    hint = (f"the newest intact checkpoint in {path.parent} is {other.name}: resume with ckpt_path={other}"
            if other is not None else f"{path.parent} holds no other intact checkpoint")
    raise ValueError(f"checkpoint {path} cannot be read ({problem}); {hint}")


def resolve_ckpt_path(cfg: DictConfig, run_dir: Path | None = None, timestamped: bool = False) -> str | None:
    """The checkpoint to resume from: ``ckpt_path``, or for ``auto`` the run's ``last.ckpt`` (in
    ``paths.checkpoint_dir``, by default ``<run_dir>/checkpoints``) if any.

    Raises:
        ValueError: ``auto`` with a run folder that is new for every invocation, or an unreadable checkpoint.
        FileNotFoundError: an explicit ``ckpt_path`` that does not exist.
    """
    if cfg.ckpt_path in (None, "", "null"):
        return None
    if cfg.ckpt_path == "auto":
        if timestamped:
            raise ValueError(
                f"ckpt_path=auto resumes the run in run_dir, but run_dir is a new timestamped folder for every "
                f"invocation ({run_dir}); name the run's folder, e.g. run_dir=runs/my_run ckpt_path=auto")
        last = Path(cfg.paths.checkpoint_dir) / "last.ckpt"
        if not last.exists():
            log.info("ckpt_path=auto: no %s yet, starting from step 0", last)
            return None
        check_checkpoint(last)
        return str(last)
    p = Path(cfg.ckpt_path)
    if not p.exists():
        raise FileNotFoundError(f"ckpt_path {p} does not exist")
    check_checkpoint(p)
    return str(p)


def init_weights(module: DiffusionModule, path: str) -> None:
    """Warm start: copy the denoiser weights of a checkpoint, a model file or a shipped model (by name, e.g.
    ``qm9_default``) into ``module``. Property-conditioning layers the source lacks keep their initial
    values (a conditional model warm-started from an unconditional one)."""
    p = Path(path)
    if not p.exists():
        from moldiff.training.checkpoint import PRETRAINED_DIR, pretrained_path

        if "/" in str(path) or not (PRETRAINED_DIR / f"{path}.json").exists():
            raise FileNotFoundError(f"init_from {p} does not exist (and is not a shipped model's name)")
        p = pretrained_path(str(path))
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as exc:
        raise ValueError(f"init_from {p}: not a moldiff checkpoint or model file ({exc})") from None
    net = {k[len("net."):]: v.float() for k, v in state.items() if k.startswith("net.")}
    own = module.net.state_dict()
    fresh = [k for k in own if k not in net and k.startswith("prop.")] if getattr(module.net, "num_props", 0) else []
    for k in fresh:
        net[k] = own[k]
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


# ------------------------------------------------------------------------------------------ training
#: callbacks of ``conf/callbacks`` that are skipped while the setting they read is off (null, 0 or false)
SWITCHED_BY = {"sample_metrics": "validation.num_samples", "ema": "ema.decay", "chunk_timer": "trainer.max_time"}


def _instantiate(node: Any, what: str, skip_missing: bool = False, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` of a config entry naming its class with ``_target_``; a malformed entry or a
    rejected setting is a one-line ``ValueError`` naming ``what``. With ``skip_missing``, an entry whose
    package is not installed is skipped (None) with a note."""
    from hydra.errors import InstantiationException

    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ValueError(f"{what} must name a class with _target_, got {node!r}")
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        if skip_missing and isinstance(cause, ModuleNotFoundError):
            log.info("%s skipped: %s", what, one_line(cause))
            return None
        raise ValueError(f"{what}: {one_line(cause)}") from None


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The callbacks of ``cfg.callbacks`` (``conf/callbacks/default.yaml``), in the order written there (the
    order their hooks run in), without those switched off (:data:`SWITCHED_BY`; the validation samples also
    need ``task=diffusion``)."""
    out: list[L.Callback] = []
    for name, node in (cfg.get("callbacks") or {}).items():
        switch = SWITCHED_BY.get(name)
        if node is None or switch is not None and not OmegaConf.select(cfg, switch):
            continue
        if name == "sample_metrics" and cfg.task != "diffusion":
            continue
        out.append(_instantiate(node, f"callbacks.{name}"))
    return out


def build_loggers(cfg: DictConfig, ckpt_path: str | None) -> list:
    """The loggers of ``cfg.logger`` (``conf/logger``). A CSV logger without a ``version`` writes a resumed
    chunk to its own ``from_step<N>`` folder (:func:`log_version`); a logger whose package is not installed
    (TensorBoard) is skipped with a note."""
    out = []
    for name, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        csv = isinstance(node, DictConfig) and str(node.get("_target_", "")).endswith("CSVLogger")
        kwargs = {"version": log_version(ckpt_path)} if csv and "version" not in node else {}
        logger = _instantiate(node, f"logger.{name}", skip_missing=True, **kwargs)
        if logger is not None:
            out.append(logger)
    return out


def build_trainer(cfg: DictConfig, **kwargs: Any) -> L.Trainer:
    """``cfg.trainer`` instantiated with ``kwargs``; a setting Lightning rejects is a one-line ``ValueError``."""
    return _instantiate(cfg.trainer, "trainer settings rejected by Lightning", **kwargs)


def train(cfg: DictConfig, extra_callbacks: list | None = None) -> dict[str, Any]:
    """Run training; returns the trainer, module, datamodule, final metrics and the run folder."""
    if cfg.task not in ("diffusion", "property"):
        raise ValueError(f"unknown task {cfg.task!r}; choose from ['diffusion', 'property']")
    check_numbers(cfg)
    if cfg.task != "property" and (cfg.get("predictor_inputs") or {}).get("generator"):
        raise ValueError("predictor_inputs.generator trains a property predictor: it needs task=property")
    if not isinstance(cfg.get("compile", False), bool):
        raise ValueError(f"compile must be true or false, got {cfg.compile!r}")
    run_dir, timestamped = resolve_run_dir(cfg)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)  # the folder actually used, in config.yaml too
    ckpt_path = resolve_ckpt_path(cfg, run_dir, timestamped)
    L.seed_everything(cfg.seed, workers=True)
    cache = open_cache(cfg.data)
    props = predictor_properties(cfg) if cfg.task == "property" else list(cfg.conditioning.properties or [])
    dm = MolDataModule(
        cache,
        batch_size=cfg.data.batch_size,
        train_split=cfg.data.train_split,
        subset=cfg.data.subset,
        props=props,
        num_workers=cfg.data.num_workers,
        val_size=cfg.data.val_size,
        seed=cfg.seed,
        prepare=lambda: ensure_cache(cfg.data),
    )
    module = build_module(cfg, cache) if cfg.task == "diffusion" else build_property_module(cfg, cache)
    ckpt_dir = Path(cfg.paths.checkpoint_dir)
    callbacks = build_callbacks(cfg) + list(extra_callbacks or [])
    if cfg.get("init_from") and ckpt_path is None:
        init_weights(module, cfg.init_from)
    if cfg.get("compile"):
        module.net.compile(dynamic=True)  # in place: the weights and their checkpoint keys stay as they are
        log.info("the denoiser is compiled with torch.compile (dynamic shapes) on its first step")
    loggers = build_loggers(cfg, ckpt_path)
    trainer = build_trainer(cfg, max_time=None, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir))
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        log.info("model: %d parameters; dataset %s (%d train molecules); run dir %s",
                 sum(p.numel() for p in module.parameters()), cache.name, len(cache.indices(cfg.data.train_split)), run_dir)
    with _handed_down(RUN_DIR_ENV, str(run_dir.resolve())):
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if trainer.is_global_zero:
        summary = {"global_step": trainer.global_step, "epoch": trainer.current_epoch, "metrics": metrics,
                   "last_checkpoint": str(ckpt_dir / "last.ckpt")}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return {"trainer": trainer, "module": module, "datamodule": dm, "metrics": metrics, "run_dir": run_dir}


class _handed_down:
    """Set an environment variable for the processes started inside the block, then restore it."""

    def __init__(self, name: str, value: str) -> None:
        self.name, self.value = name, value
        self._old: str | None = None

    def __enter__(self) -> None:
        self._old = os.environ.get(self.name)
        os.environ[self.name] = self.value

    def __exit__(self, *exc: Any) -> None:
        if self._old is None:
            os.environ.pop(self.name, None)
        else:
            os.environ[self.name] = self._old


@hydra.main(config_path="pkg://moldiff.conf", config_name="train", version_base="1.3")
@friendly_errors
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
