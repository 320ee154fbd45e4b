"""Compose every entry point's real config and every group option; instantiate what can be."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from moldiff.data.vocab import QM9_VOCAB

STATS = {
    "num_atoms_hist": [0, 0, 1, 2, 3],
    "atom_type_marginal": [0.5, 0.3, 0.1, 0.08, 0.02],
    "charge_marginal": [0.01, 0.98, 0.01],
    "bond_marginal": [0.85, 0.1, 0.03, 0.02],
    "prop_mean": {"gap": 6800.0},
    "prop_std": {"gap": 1300.0},
}


def cfg(name: str, overrides: list[str] | None = None):
    with initialize_config_module("moldiff.conf", version_base="1.3"):
        return compose(name, overrides=overrides or [], return_hydra_config=False)


@pytest.mark.parametrize("model", ["tiny", "small", "large"])
@pytest.mark.parametrize("diffusion", ["cosine", "polynomial"])
def test_train_config_builds_module(model, diffusion):
    from omegaconf import OmegaConf

    from moldiff.training.module import DiffusionModule

    c = cfg("train", [f"model={model}", f"diffusion={diffusion}"])
    m = DiffusionModule(
        model=OmegaConf.to_container(c.model), diffusion=OmegaConf.to_container(c.diffusion),
        optim=OmegaConf.to_container(c.optim, resolve=True),
        dataset={"name": "qm9", "vocab": QM9_VOCAB.to_dict(), "statistics": STATS},
        conditioning={"properties": ["gap"], "p_uncond": 0.1},
    )
    assert m.num_parameters() > 0


@pytest.mark.parametrize("trainer", ["cpu", "ddp"])
def test_trainer_configs_instantiate(trainer, tmp_path):
    c = cfg("train", [f"trainer={trainer}", "trainer.devices=1"])
    t = instantiate(c.trainer, logger=False, default_root_dir=str(tmp_path))
    assert t.max_steps == c.trainer.max_steps


def test_gpu_trainer_config_holds_only_trainer_arguments(tmp_path):
    """Every key of trainer=gpu is a Lightning Trainer argument (instantiated here on the CPU)."""
    c = cfg("train", ["trainer=gpu", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true"])
    t = instantiate(c.trainer, logger=False, default_root_dir=str(tmp_path))
    assert t.max_steps == c.trainer.max_steps


STATS_ALL = {**STATS, "prop_mean": {p: 1.0 for p in ("alpha", "gap", "homo", "lumo", "mu", "Cv")},
             "prop_std": {p: 2.0 for p in ("alpha", "gap", "homo", "lumo", "mu", "Cv")}}


@pytest.mark.parametrize("experiment", ["debug", "qm9", "qm9_cpu", "qm9_property_predictor", "qm9_conditional"])
def test_experiments_build_their_module_and_trainer(experiment, tmp_path):
    """Each experiment composes into a LightningModule and a Trainer (CPU stand-in for the GPU ones)."""
    from omegaconf import OmegaConf

    from moldiff.cli.train import predictor_properties
    from moldiff.training.module import DiffusionModule
    from moldiff.training.property_module import PropertyModule

    c = cfg("train", [f"experiment={experiment}", "trainer.accelerator=cpu", "trainer.devices=1",
                      "trainer.precision=32-true", "trainer.strategy=auto"])
    dataset = {"name": "qm9", "vocab": QM9_VOCAB.to_dict(), "statistics": STATS_ALL}
    if c.task == "property":
        m = PropertyModule(OmegaConf.to_container(c.model, resolve=True), OmegaConf.to_container(c.optim, resolve=True),
                           dataset, predictor_properties(c))
        assert m.net.readout[-1].out_features == 6
    else:
        cond = OmegaConf.to_container(c.conditioning, resolve=True)
        m = DiffusionModule(model=OmegaConf.to_container(c.model, resolve=True),
                            diffusion=OmegaConf.to_container(c.diffusion, resolve=True),
                            optim=OmegaConf.to_container(c.optim, resolve=True), dataset=dataset, conditioning=cond)
        assert m.net.num_props == len(c.conditioning.properties)
    t = instantiate(c.trainer, logger=False, default_root_dir=str(tmp_path))
    assert t.max_steps == c.trainer.max_steps


@pytest.mark.parametrize("entry, modules", [("sample", ["moldiff/cli/sample.py", "moldiff/generate.py"]),
                                             ("evaluate", ["moldiff/cli/evaluate.py"]), ("prepare", ["moldiff/cli/prepare.py"])])
def test_every_option_of_an_entry_point_is_read(entry, modules):
    """No dead option: each top-level key of the entry point's config is read by its command."""
    from pathlib import Path

    from omegaconf import OmegaConf

    repo = Path(__file__).resolve().parents[1]
    source = "\n".join((repo / m).read_text() for m in modules)
    module = " / ".join(modules)
    raw = OmegaConf.load(repo / "conf" / f"{entry}.yaml")
    keys = [k for k in raw if k not in ("defaults", "hydra")]
    unread = [k for k in keys if f"cfg.{k}" not in source and f'"{k}"' not in source and f"'{k}'" not in source]
    assert not unread, f"{entry}.yaml options never read by {module}: {unread}"


@pytest.mark.parametrize("data", ["qm9", "sdf", "geom", "nci"])
def test_data_groups_compose(data):
    c = cfg("train", [f"data={data}"])
    assert c.data.name == data


# ---------------------------------------------------------------- one source for every default


def test_partial_settings_are_completed_with_the_values_a_composed_run_gets():
    """Code that builds from a partial dict gets exactly the composed ``moldiff-train`` defaults (the YAML
    files are the only place a default is written)."""
    from omegaconf import OmegaConf

    from moldiff.training.builders import diffusion_settings, model_settings
    from moldiff.training.module import DiffusionModule

    c = cfg("train")
    composed_diffusion = OmegaConf.to_container(c.diffusion, resolve=True)
    assert diffusion_settings({}) == composed_diffusion
    assert model_settings({}) == OmegaConf.to_container(c.model, resolve=True)
    for preset in ("tiny", "medium", "legacy_small"):
        full = OmegaConf.to_container(cfg("train", [f"model={preset}"]).model, resolve=True)
        assert model_settings({"name": preset}) == full
        assert model_settings({"name": preset, "num_layers": 3}) == {**full, "num_layers": 3}
    optim = OmegaConf.to_container(cfg("train", ["trainer.max_steps=123"]).optim, resolve=True)
    m = DiffusionModule(model={"name": "tiny"}, diffusion={}, optim={"total_steps": 123},
                        dataset={"name": "qm9", "vocab": QM9_VOCAB.to_dict(), "statistics": STATS})
    assert m.optim_cfg == {**optim, "betas": list(optim["betas"])}
    d = m.diffusion
    assert d.loss_weights == composed_diffusion["loss_weights"]
    assert (d.pos_weighting, d.sigma_data, d.pos_weight_max) == (
        composed_diffusion["pos_weighting"], composed_diffusion["sigma_data"], composed_diffusion["pos_weight_max"])


def test_a_given_schedule_replaces_the_default_one_and_unknown_keys_are_refused():
    from moldiff.training.builders import diffusion_settings, model_settings
    from moldiff.training.module import DiffusionModule

    poly = {"name": "polynomial", "s": 1.0e-5, "power": 2.0}
    assert diffusion_settings({"pos": poly})["pos"] == poly
    with pytest.raises(ValueError, match="unknown diffusion key 'loss_weight'"):
        diffusion_settings({"loss_weight": {}})
    with pytest.raises(ValueError, match="unknown diffusion.loss_weights key 'bond'"):
        diffusion_settings({"loss_weights": {"bond": 1.0}})
    with pytest.raises(ValueError, match="unknown model key 'num_layer'"):
        model_settings({"name": "small", "num_layer": 2})
    with pytest.raises(ValueError, match="unknown optim key 'learning_rate'"):
        DiffusionModule(model={"name": "tiny"}, diffusion={}, optim={"learning_rate": 1.0},
                        dataset={"name": "qm9", "vocab": QM9_VOCAB.to_dict(), "statistics": STATS})


def test_a_source_checkout_on_pythonpath_finds_its_packaged_configs(tmp_path):
    """A bare training machine puts the repository on PYTHONPATH without installing it: ``moldiff.conf``
    (Hydra's ``pkg://`` config module and the defaults of :mod:`moldiff.config`) must still resolve."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    skip = shutil.ignore_patterns("__pycache__", "pretrained")
    shutil.copytree(repo / "moldiff", tmp_path / "moldiff", ignore=skip)
    shutil.copytree(repo / "conf", tmp_path / "conf", ignore=skip)
    code = f"""
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, {str(tmp_path)!r})
import moldiff
assert moldiff.__file__.startswith({str(tmp_path)!r}), moldiff.__file__
from hydra import compose, initialize_config_module
from moldiff.config import model_preset
with initialize_config_module("moldiff.conf", version_base="1.3"):
    c = compose("train", overrides=["experiment=qm9"])
print(c.model.name, model_preset("medium")["num_scalars"])
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["medium", "192"]


# ---------------------------------------------------------------- callbacks, loggers, paths and optimiser groups


def test_callbacks_come_from_their_config_group_in_order_and_follow_their_switches(tmp_path):
    from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint, Timer

    from moldiff.cli.train import build_callbacks
    from moldiff.training.callbacks import FinalCheckpoint, SampleMetricsCallback

    base = [f"run_dir={tmp_path}"]
    names = lambda cbs: [type(cb).__name__ for cb in cbs]  # noqa: E731
    default = build_callbacks(cfg("train", base))
    assert names(default) == ["ModelCheckpoint", "LearningRateMonitor", "RNGStateCheckpoint", "FinalCheckpoint",
                              "EMAWeightAveraging", "ThroughputLogger"]
    ck = default[0]
    assert isinstance(ck, ModelCheckpoint) and ck.dirpath == str(tmp_path / "checkpoints")
    assert ck.filename == FinalCheckpoint.FILENAME  # the final checkpoint continues the periodic names
    on = names(build_callbacks(cfg("train", base + ["validation.num_samples=4", "trainer.max_time=00:00:01:00"])))
    # validation samples before the averaging callback swaps the raw weights back; the chunk timer after it
    assert on.index("FinalCheckpoint") < on.index("SampleMetricsCallback") < on.index("EMAWeightAveraging") < on.index("ChunkTimer")
    assert not any(isinstance(cb, SampleMetricsCallback) for cb in build_callbacks(
        cfg("train", base + ["validation.num_samples=4", "task=property", "properties=[gap]"])))
    off = build_callbacks(cfg("train", base + ["ema.decay=null", "~callbacks.lr_monitor"]))
    assert not any(isinstance(cb, EMAWeightAveraging) for cb in off) and "LearningRateMonitor" not in names(off)
    added = build_callbacks(cfg("train", base + ["+callbacks.timer={_target_: lightning.pytorch.callbacks.Timer, duration: '00:00:05:00'}"]))
    assert isinstance(added[-1], Timer)
    moved = build_callbacks(cfg("train", base + [f"paths.checkpoint_dir={tmp_path / 'elsewhere'}"]))
    assert moved[0].dirpath == str(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match=r"^callbacks.model_checkpoint: .*every_n_train_steps"):
        build_callbacks(cfg("train", base + ["+callbacks.model_checkpoint.every_n_epochs=1"]))


def test_loggers_come_from_their_config_group(tmp_path):
    from pathlib import Path

    from lightning.pytorch.loggers import CSVLogger

    from moldiff.cli.train import build_loggers

    base = [f"run_dir={tmp_path}"]
    default = build_loggers(cfg("train", base), None)
    assert isinstance(default[0], CSVLogger) and Path(default[0].log_dir) == tmp_path / "logs"
    csv = build_loggers(cfg("train", base + ["logger=csv"]), None)
    assert [type(x).__name__ for x in csv] == ["CSVLogger"]
    assert build_loggers(cfg("train", base + ["logger=none"]), None) == []
    with pytest.raises(ValueError, match=r"^logger.csv: "):
        build_loggers(cfg("train", base + ["+logger.csv.no_such_argument=1"]), None)


def test_optimizer_and_scheduler_are_partials_of_the_config():
    from omegaconf import OmegaConf

    from moldiff.training.module import DiffusionModule

    def module(*overrides):
        c = cfg("train", ["model=tiny", *overrides])
        return DiffusionModule(model={"name": "tiny"}, diffusion={}, optim=OmegaConf.to_container(c.optim, resolve=True),
                               dataset={"name": "qm9", "vocab": QM9_VOCAB.to_dict(), "statistics": STATS})

    out = module("optim.lr=3e-4", "optim.warmup_steps=10").configure_optimizers()
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    assert type(opt).__name__ == "AdamW" and opt.defaults["amsgrad"] and opt.defaults["lr"] == 3e-4
    assert sched.get_last_lr()[0] == pytest.approx(3e-4 / 10)  # the warm-up's first step
    sgd = module("optim.optimizer._target_=torch.optim.SGD", "~optim.optimizer.betas", "~optim.optimizer.amsgrad",
                 "+optim.optimizer.momentum=0.9", "optim.scheduler=null").configure_optimizers()
    assert type(sgd).__name__ == "SGD" and sgd.defaults["momentum"] == 0.9 and sgd.defaults["lr"] == 5e-4
    with pytest.raises(ValueError, match="optim.optimizer / optim.scheduler rejected"):
        module("+optim.optimizer.no_such_argument=1").configure_optimizers()
    with pytest.raises(ValueError, match="optim.optimizer must name a class"):
        module("optim.optimizer=null")
    # settings saved before the optimizer was configurable (no optimizer/scheduler keys) get the defaults
    old = DiffusionModule(model={"name": "tiny"}, diffusion={}, optim={"lr": 2e-4, "total_steps": 50},
                          dataset={"name": "qm9", "vocab": QM9_VOCAB.to_dict(), "statistics": STATS})
    assert old.optim_cfg["optimizer"]["lr"] == 2e-4 and old.optim_cfg["scheduler"]["_target_"].endswith("LambdaLR")
