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
        optim=OmegaConf.to_container(c.optim),
        dataset={"name": "qm9", "vocab": QM9_VOCAB.to_dict(), "statistics": STATS},
        conditioning={"properties": ["gap"], "p_uncond": 0.1},
    )
    assert m.num_parameters() > 0


@pytest.mark.parametrize("trainer", ["cpu", "ddp"])
def test_trainer_configs_instantiate(trainer, tmp_path):
    c = cfg("train", [f"trainer={trainer}", "trainer.devices=1"])
    t = instantiate(c.trainer, logger=False, default_root_dir=str(tmp_path))
    assert t.max_steps == c.trainer.max_steps


def test_gpu_trainer_config_is_bf16():
    c = cfg("train", ["trainer=gpu"])
    assert c.trainer.precision == "bf16-mixed" and c.trainer.accelerator == "gpu"


@pytest.mark.parametrize("experiment", ["debug", "qm9", "qm9_cpu", "qm9_property_predictor",
                                        "cond_alpha", "cond_gap", "cond_homo", "cond_lumo", "cond_mu", "cond_Cv"])
def test_experiments_compose(experiment):
    c = cfg("train", [f"experiment={experiment}"])
    assert c.run_dir


@pytest.mark.parametrize("data", ["qm9", "sdf", "geom", "nci"])
def test_data_groups_compose(data):
    c = cfg("train", [f"data={data}"])
    assert c.data.name == data


def test_other_entry_points_compose():
    assert cfg("sample").steps == 100
    assert cfg("evaluate", ["input=x.sdf"]).input == "x.sdf"
    assert cfg("prepare").data.name == "qm9"
