"""Training: the CLI end to end (checkpoint readable with weights_only, resume), NaN stop, overfitting."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch_geometric.data import Batch

from moldiff.data.cache import load_cache
from moldiff.data.datamodule import MolDataModule
from moldiff.training.module import DiffusionModule, NonFiniteLossError
from tests.conftest import TINY_TRAIN, run_cli, run_script

pytestmark = pytest.mark.qm9


def make_module(cache, model="tiny", props=None, lr=5e-3):
    from hydra import compose, initialize_config_module

    with initialize_config_module("moldiff.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}"])
    from moldiff.cli.train import build_module

    cfg.optim.lr = lr
    cfg.optim.warmup_steps = 1
    if props:
        cfg.conditioning.properties = props
    return build_module(cfg, cache)


def test_cli_checkpoint_weights_only_and_resume(tiny_ckpt, data_root, tmp_path):
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 8
    assert ckpt["hyper_parameters"]["dataset"]["name"].startswith("qm9")
    assert any(k.startswith("net.") for k in ckpt["state_dict"])
    run = tiny_ckpt.parent.parent
    logs = (run / "logs" / "metrics.csv").read_text()
    assert "train/loss" in logs
    assert json.loads((run / "summary.json").read_text())["global_step"] == 8
    # resume from the step-4 checkpoint into a fresh run dir and continue to 10 steps: 10 is not a
    # multiple of the periodic interval (4), so the end-of-training checkpoint must be written too
    # The step-4 checkpoint claims an hour of training already: `trainer.max_time` budgets each run
    # (chunk), so a 30-minute chunk must still train on, and the total is carried into the new state.
    step4 = tmp_path / "step0000004.ckpt"
    state = torch.load(run / "checkpoints" / step4.name, map_location="cpu", weights_only=True)
    state["callbacks"]["Timer"] = {"time_elapsed": {"train": 3600.0}}
    torch.save(state, step4)
    new = tmp_path / "resumed"
    overrides = [o for o in TINY_TRAIN if not o.startswith("trainer.max_steps")]
    run_cli("train", *overrides, "trainer.max_steps=10", "trainer.max_time=00:00:30:00", f"data.root={data_root}",
            f"run_dir={new}", f"ckpt_path={step4}")
    assert (new / "checkpoints" / "step0000010.ckpt").exists()
    assert "train/loss" in (new / "logs" / "from_step0000004" / "metrics.csv").read_text()  # a file per chunk
    resumed = torch.load(new / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 10
    # it holds the raw weights for resuming (saved before EMA copies its average into the model)
    raw, avg = resumed["current_model_state"], resumed["state_dict"]
    assert any(not torch.equal(raw[k], avg[k]) for k in avg if k.startswith("net.") and avg[k].is_floating_point())
    assert 3600 < resumed["callbacks"]["Timer"]["time_elapsed"]["train"] < 3600 + 1800
    # the export records that total as the wall time
    export = run_script("export_pretrained.py", str(new / "checkpoints" / "last.ckpt"), "--name", "m",
                        "--hardware", "test", "--out-dir", str(tmp_path))
    record = json.loads((tmp_path / "m.json").read_text())["training_record"]
    assert record["global_step"] == 10 and 60 <= record["wall_time_min"] < 90, export.stdout


def test_ckpt_path_missing_is_a_clear_error(data_root, tmp_path):
    proc = run_cli("train", *TINY_TRAIN, f"data.root={data_root}", f"run_dir={tmp_path}", "ckpt_path=/nope/last.ckpt", check=False)
    assert proc.returncode == 2
    assert "/nope/last.ckpt" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_dataset_is_a_clear_error(tmp_path):
    proc = run_cli("train", "model=tiny", "data.name=qm10", f"run_dir={tmp_path}", check=False)
    assert proc.returncode == 2
    assert "qm10" in proc.stderr and "qm9" in proc.stderr


class _Poison(L.Callback):
    """Turns one weight into NaN before step ``at`` (a stand-in for a diverging run)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at:
            with torch.no_grad():
                next(pl_module.net.parameters()).fill_(float("nan"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data_root, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    cache = load_cache("qm9_first300", data_root)
    module = make_module(cache)
    dm = MolDataModule(cache, batch_size=8, subset=32, val_size=8)
    ck = ModelCheckpoint(dirpath=tmp_path, filename="s{step}", every_n_train_steps=3, save_top_k=-1, save_last=True)
    trainer = L.Trainer(accelerator="cpu", max_steps=10, callbacks=[ck, _Poison(5)], logger=False,
                        enable_progress_bar=False, num_sanity_val_steps=0, enable_model_summary=False)
    with pytest.raises(NonFiniteLossError, match="non-finite train loss at global step 5"):
        trainer.fit(module, datamodule=dm)
    last = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_small_model_overfits_a_handful_of_molecules(data_root):
    """Loss at fixed noise draws falls by a large factor after a short training on 4 molecules."""
    cache = load_cache("qm9_first300", data_root)
    module = make_module(cache, model="small")
    batch = Batch.from_data_list([cache.data(int(i)) for i in cache.indices("train")[20:24]])
    opt = torch.optim.Adam(module.parameters(), lr=5e-3)

    @torch.no_grad()
    def fixed_loss():
        with torch.random.fork_rng():
            torch.manual_seed(123)
            tot = 0.0
            for t in (0.05, 0.15, 0.25):
                tt = torch.full((batch.num_graphs,), t)
                tot += float(module.diffusion.loss(module.denoiser_fn(), batch, tt)["loss"])
        return tot

    module.eval()
    before = fixed_loss()
    module.train()
    for _ in range(150):
        opt.zero_grad()
        t = torch.rand(batch.num_graphs) * 0.3
        loss = module.diffusion.loss(module.denoiser_fn(), batch, t)["loss"]
        loss.backward()
        opt.step()
    module.eval()
    after = fixed_loss()
    assert after < before / 4, (before, after)


class _FirstDraw(L.Callback):
    """Records a draw from the training device's generator at the first batch of every epoch."""

    def __init__(self) -> None:
        self.draws: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.draws.append(torch.rand(4, device=pl_module.device).cpu())


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_training_noise_differs_between_epochs_despite_seeded_validation(data_root, device):
    """Validation reseeds for comparable curves; the training streams (CPU and CUDA) must go on regardless."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    cache = load_cache("qm9_first300", data_root)
    module = make_module(cache)
    dm = MolDataModule(cache, batch_size=8, subset=16, val_size=8)
    rec = _FirstDraw()
    trainer = L.Trainer(accelerator=device, devices=1, max_epochs=3, callbacks=[rec], logger=False, enable_progress_bar=False,
                        num_sanity_val_steps=0, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(module, datamodule=dm)
    assert len(rec.draws) == 3
    assert not torch.equal(rec.draws[1], rec.draws[2]), "the RNG restarted from the same state after validation"


def test_cosine_schedule_follows_the_step_and_time_budget(data_root):
    cache = load_cache("qm9_first300", data_root)
    module = make_module(cache)
    module.optim_cfg.update(schedule="cosine", warmup_steps=10, total_steps=100, total_minutes=None, min_lr_ratio=0.1)
    assert module.lr_factor(4) == pytest.approx(0.5, rel=0.02)  # warm-up
    assert module.lr_factor(50) == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-6)  # half-way down the cosine
    assert module.lr_factor(100) == pytest.approx(0.1) and module.lr_factor(500) == pytest.approx(0.1)
    module.optim_cfg.update(schedule="constant")
    assert module.lr_factor(500) == 1.0
