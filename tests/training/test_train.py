"""Training: the CLI end to end (checkpoint readable with weights_only, resume), NaN stop, overfitting,
validation samples from the EMA weights, one output folder per run, one-line errors."""

from __future__ import annotations

import json
import os

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch_geometric.data import Batch

from moldiff.data.cache import load_cache
from moldiff.data.datamodule import MolDataModule
from moldiff.training.module import NonFiniteLossError
from tests.conftest import TINY_TRAIN, run_cli, run_script

pytestmark = pytest.mark.qm9


def compose_train(*overrides: str):
    from hydra import compose, initialize_config_module

    with initialize_config_module("moldiff.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))


def make_module(cache, model="tiny", props=None, lr=5e-3):
    cfg = compose_train(f"model={model}")
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
    # an exported model file re-exports under another name, keeping its weights and record
    # (into a folder that does not exist yet: it is created)
    run_script("export_pretrained.py", str(tmp_path / "m.pt"), "--name", "m2", "--recipe", "again", "--out-dir",
               str(tmp_path / "new"))
    for f in ("m2.pt", "m2.json"):
        (tmp_path / "new" / f).rename(tmp_path / f)
    again = json.loads((tmp_path / "m2.json").read_text())["training_record"]
    assert again["global_step"] == 10 and again["hardware"] == "test" and again["recipe"] == "again"
    a, b = (torch.load(tmp_path / f, map_location="cpu", weights_only=True)["state_dict"] for f in ("m.pt", "m2.pt"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the record is completed from the chunks' record.json files and the model the run started from
    chunks = []
    for k, (rate, minutes) in enumerate([(100, 5.5), (120, 2.3)]):
        chunks.append(tmp_path / f"record{k}.json")
        chunks[-1].write_text(json.dumps({"molecules_per_second": rate, "chunk_minutes": minutes}))
    run_script("export_pretrained.py", str(tmp_path / "m2.pt"), "--name", "m3", "--out-dir", str(tmp_path),
               "--chunk-records", *map(str, chunks), "--warm-started-from", str(tmp_path / "m.pt"))
    third = json.loads((tmp_path / "m3.json").read_text())["training_record"]
    assert third["molecules_per_second"] == {"chunk1": 100, "chunk2": 120} and third["chunk_minutes"] == [5.5, 2.3]
    first = json.loads((tmp_path / "m.json").read_text())
    assert third["warm_started_from"] == {"sha256": first["sha256"], **first["training_record"]}
    assert third["total_training_min"] == pytest.approx(2 * record["wall_time_min"])
    # a model distilled in rounds lists each round's record, and its wall time is all of theirs
    rounds = []
    for k, (secs, minutes) in enumerate([(120.0, 25.0), (60.0, 12.0)]):
        rounds.append(tmp_path / f"round{k}.json")
        rounds[-1].write_text(json.dumps({"teacher": "t.pt", "init": "t.pt", "states": 10, "optimizer_steps": 7,
                                          "wall_time_min": minutes, "states_meta": [{"seconds": secs}]}))
    run_script("export_pretrained.py", str(tmp_path / "m2.pt"), "--name", "m4", "--out-dir", str(tmp_path),
               "--round-records", *map(str, rounds), "--warm-started-from", str(tmp_path / "m.pt"))
    fourth = json.loads((tmp_path / "m4.json").read_text())["training_record"]
    assert [r["train_minutes"] for r in fourth["distillation_rounds"]] == [25.0, 12.0]
    assert [r["states_minutes"] for r in fourth["distillation_rounds"]] == [2.0, 1.0]
    assert fourth["wall_time_min"] == 40.0
    assert fourth["total_training_min"] == pytest.approx(40.0 + record["wall_time_min"])
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    proc = run_script("export_pretrained.py", str(tmp_path / "m2.pt"), "--name", "m5", "--out-dir", str(tmp_path),
                      "--round-records", str(bad), check=False)
    assert proc.returncode != 0 and f"--round-records {bad}: not a readable JSON file" in proc.stderr


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


def test_compiled_denoiser_matches_eager_and_keeps_its_checkpoint_keys(data_root):
    """``compile=true`` compiles the denoiser in place: the same loss and gradients as eager, the same
    state-dict keys (checkpoints and exports unchanged), and a deep copy (the EMA callback's) still works."""
    import copy

    cache = load_cache("qm9_first300", data_root)
    module = make_module(cache)
    keys = list(module.state_dict())
    batch = next(iter(_loader(cache)))

    def loss_and_grads():
        torch.manual_seed(0)
        module.zero_grad()
        loss = module.diffusion.loss(module.denoiser_fn(None), batch)["loss"]
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in module.net.parameters() if p.grad is not None]

    eager_loss, eager_grads = loss_and_grads()
    module.net.compile(dynamic=True)
    assert list(module.state_dict()) == keys
    copy.deepcopy(module)
    loss, grads = loss_and_grads()
    assert torch.allclose(loss, eager_loss, rtol=1e-4, atol=1e-5)
    assert len(grads) == len(eager_grads)
    assert all(torch.allclose(g, e, rtol=1e-3, atol=1e-5) for g, e in zip(grads, eager_grads))


def _loader(cache):
    dm = MolDataModule(cache, batch_size=8, subset=16, val_size=8)
    dm.setup("fit")
    return dm.train_dataloader()


def test_small_model_overfits_a_handful_of_molecules(data_root):
    """Loss at fixed noise draws falls by a large factor after a short training on 4 molecules.

    The categorical terms must fall 4x. The coordinate term is the preconditioned output's error (in
    units of c_out(t), so predicting the added noise itself at low t), which 150 steps only halve."""
    cache = load_cache("qm9_first300", data_root)
    module = make_module(cache, model="small")
    batch = Batch.from_data_list([cache.data(int(i)) for i in cache.indices("train")[20:24]])
    opt = torch.optim.Adam(module.parameters(), lr=5e-3)

    @torch.no_grad()
    def fixed_loss():
        with torch.random.fork_rng():
            torch.manual_seed(123)
            tot: dict[str, float] = {}
            for t in (0.05, 0.15, 0.25):
                tt = torch.full((batch.num_graphs,), t)
                for k, v in module.diffusion.loss(module.denoiser_fn(), batch, tt).items():
                    tot[k] = tot.get(k, 0.0) + float(v)
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
    categorical = ("atom_types", "charges", "bonds")
    assert sum(after[k] for k in categorical) < sum(before[k] for k in categorical) / 4, (before, after)
    assert after["pos"] < before["pos"] / 1.5, (before, after)


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


class _RawWeights(L.Callback):
    """The denoiser weights after each optimizer step (the raw, not averaged, weights)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.last = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}


def _probe_class():
    from moldiff.training.callbacks import SampleMetricsCallback

    class _Probe(SampleMetricsCallback):
        """Records the weights the validation samples are drawn from."""

        seen: list

        def sample_molecules(self, module):
            self.seen = getattr(self, "seen", []) + [{k: v.detach().clone() for k, v in module.net.state_dict().items()}]
            return super().sample_molecules(module)

    return _Probe


def test_validation_samples_use_the_ema_weights(data_root, tmp_path):
    """The sampling callback, at its place in the training callbacks, sees the averaged weights."""
    from lightning.pytorch.callbacks import EMAWeightAveraging
    from lightning.pytorch.loggers import CSVLogger

    from moldiff.cli.train import build_callbacks, build_module
    from moldiff.training.callbacks import SampleMetricsCallback

    cfg = compose_train("model=tiny", "validation.num_samples=2", "validation.steps=2", "ema.decay=0.5",
                        "optim.lr=5e-3", "optim.warmup_steps=1", f"run_dir={tmp_path}")
    cache = load_cache("qm9_first300", data_root)
    module = build_module(cfg, cache)
    callbacks = build_callbacks(cfg)
    k = next(i for i, cb in enumerate(callbacks) if isinstance(cb, SampleMetricsCallback))
    probe = callbacks[k] = _probe_class()(2, 2)
    ema = next(cb for cb in callbacks if isinstance(cb, EMAWeightAveraging))
    raw = _RawWeights()
    dm = MolDataModule(cache, batch_size=8, subset=16, val_size=8)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, callbacks=callbacks + [raw], logger=CSVLogger(tmp_path),
                        enable_progress_bar=False, num_sanity_val_steps=0, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    assert len(probe.seen) == 1  # one validation, after the last step
    seen, averaged = probe.seen[0], ema._average_model.module.net.state_dict()
    assert all(torch.equal(seen[key], averaged[key]) for key in averaged)
    assert any(not torch.equal(seen[key], raw.last[key]) for key in seen if seen[key].is_floating_point())
    assert "val/validity" in trainer.callback_metrics


def _max_difference(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point() and a[k].numel())


@pytest.mark.parametrize("subset", [64, pytest.param(48, marks=pytest.mark.slow)], ids=["mid_epoch", "epoch_end"])
def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(data_root, tmp_path, subset):
    """Stopped at step 6 and resumed to step 12, a run ends with the weights (raw and EMA) of a run that went
    to step 12 at once: the checkpoint carries the random generators and the position in the epoch (16
    molecules a batch: 64 molecules stop it mid-epoch, 48 at an epoch's end)."""
    common = [o for o in TINY_TRAIN if not o.startswith(("trainer.max_steps", "checkpoint.", "data.subset"))]
    common += [f"data.root={data_root}", f"data.subset={subset}", "checkpoint.every_n_train_steps=6",
               "optim.total_steps=12"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run_cli("train", *common, "trainer.max_steps=12", f"run_dir={whole}")
    run_cli("train", *common, "trainer.max_steps=6", f"run_dir={parts}")
    assert torch.load(parts / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    run_cli("train", *common, "trainer.max_steps=12", f"run_dir={parts}", "ckpt_path=auto")
    a = torch.load(whole / "checkpoints" / "step0000012.ckpt", weights_only=True)
    b = torch.load(parts / "checkpoints" / "step0000012.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 12
    assert _max_difference(a["current_model_state"], b["current_model_state"]) < 1e-6  # raw weights
    assert _max_difference(a["state_dict"], b["state_dict"]) < 1e-6  # EMA weights


def test_one_output_folder_when_hydra_run_dir_is_given(data_root, tmp_path):
    """hydra.run.dir and run_dir name the same folder: Hydra's files, the log, config, checkpoints, summary."""
    out = tmp_path / "out"
    run_cli("train", *TINY_TRAIN, "trainer.max_steps=2", f"data.root={data_root}", f"hydra.run.dir={out}", cwd=tmp_path)
    assert sorted(p.name for p in out.iterdir()) == [".hydra", "checkpoints", "config.yaml", "logs", "summary.json",
                                                     "train.log"]
    assert (out / "checkpoints" / "last.ckpt").exists() and (out / "logs" / "metrics.csv").exists()
    assert json.loads((out / "summary.json").read_text())["last_checkpoint"] == str(out / "checkpoints" / "last.ckpt")
    assert OmegaConf.load(out / "config.yaml").run_dir == str(out)
    assert not (tmp_path / "runs").exists(), "a second folder was made"


def test_ckpt_path_auto_refuses_the_timestamped_default(data_root, tmp_path):
    proc = run_cli("train", *TINY_TRAIN, f"data.root={data_root}", "ckpt_path=auto", cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(error) == 1 and "ckpt_path=auto" in error[0] and "run_dir=" in error[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "runs").rglob("*.ckpt")), "it trained anyway"


def test_truncated_checkpoint_is_one_line_naming_the_newest_intact_one(tiny_ckpt, data_root, tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    for k, name in enumerate(["step0000004.ckpt", "step0000008.ckpt"]):
        (ckpts / name).write_bytes((tiny_ckpt.parent / name).read_bytes())
        os.utime(ckpts / name, (1_000_000 + k, 1_000_000 + k))
    whole = tiny_ckpt.read_bytes()
    (ckpts / "last.ckpt").write_bytes(whole[: len(whole) // 2])  # cut off while being written
    proc = run_cli("train", *TINY_TRAIN, f"data.root={data_root}", f"run_dir={tmp_path / 'run'}", "ckpt_path=auto",
                   check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    error = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(error) == 1, proc.stderr[-3000:]
    assert str(ckpts / "last.ckpt") in error[0] and f"ckpt_path={ckpts / 'step0000008.ckpt'}" in error[0], error[0]


class _Trap:
    """Unpickling this creates a file: what an untrusted checkpoint could do with full unpickling."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_resume_loads_checkpoints_weights_only(tiny_ckpt, data_root, tmp_path):
    """Even where torch's default is full unpickling, a resume never runs code from the checkpoint."""
    state = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    marker = tmp_path / "code_ran"
    state["extra"] = _Trap(str(marker))
    bad = tmp_path / "bad.ckpt"
    torch.save(state, bad)
    proc = run_cli("train", *TINY_TRAIN, f"data.root={data_root}", f"run_dir={tmp_path / 'run'}", f"ckpt_path={bad}",
                   check=False, env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    assert not marker.exists()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    error = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(error) == 1 and str(bad) in error[0], proc.stderr[-3000:]


@pytest.mark.parametrize("override", ["trainer.max_steps=abc", "data.batch_size=1.5", "optim.lr=fast"])
def test_non_numeric_settings_are_one_line_errors(data_root, tmp_path, override):
    proc = run_cli("train", *TINY_TRAIN, f"data.root={data_root}", f"run_dir={tmp_path}", override, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    key = override.split("=")[0]
    error = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(error) == 1 and key in error[0] and "Error in call to target" not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("subsets", [False, True])
def test_conditioning_masks_in_training(data_root, subsets):
    """p_uncond of the molecules get no property; with subsets, the number given is uniform on 1..P."""
    module = make_module(load_cache("qm9_first300", data_root), props=["alpha", "gap", "mu"])
    module.p_uncond, module.subsets = 0.2, subsets
    torch.manual_seed(0)
    mask = module.given_mask(30_000, "cpu")
    k = mask.sum(1)
    assert (k == 0).float().mean().item() == pytest.approx(0.2, abs=0.01)
    if subsets:
        for n in (1, 2, 3):
            assert (k == n).float().mean().item() == pytest.approx(0.8 / 3, abs=0.015)
        # every property is given equally often
        assert torch.allclose(mask.float().mean(0), torch.full((3,), 0.8 * 2 / 3), atol=0.015)
    else:
        assert set(k.unique().tolist()) == {0, 3}
    # the ranges the sampler warns with are those of the training split
    lo, hi = module.hparams["conditioning"]["range"]["gap"]
    assert lo < module.statistics["prop_mean"]["gap"] < hi


def test_a_run_ending_between_periodic_checkpoints_leaves_one_last(data_root, tmp_path):
    """The end-of-training checkpoint is step<N>.ckpt + last.ckpt; no second "last-v1.ckpt" (with EMA weights)."""
    run = tmp_path / "run"
    overrides = [o for o in TINY_TRAIN if not o.startswith(("trainer.max_steps", "checkpoint."))]
    run_cli("train", *overrides, f"data.root={data_root}", f"run_dir={run}", "trainer.max_steps=3",
            "checkpoint.every_n_train_steps=100")
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step0000003.ckpt"], names
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    step = torch.load(run / "checkpoints" / "step0000003.ckpt", weights_only=True)
    for k, v in step["state_dict"].items():
        assert torch.equal(v, last["state_dict"][k])


def test_export_records_sampler_settings(tmp_path, tiny_ckpt):
    """--sampler-settings MIN-MAX:TIME_POWER:TEMPERATURE goes into the model file (the sampler's defaults for
    those step counts) and its record; the weights are unchanged; a malformed one is named."""
    from moldiff.training.checkpoint import load_model

    src = tmp_path / "src.pt"
    model = load_model(tiny_ckpt)
    torch.save({"state_dict": {f"net.{k}": v for k, v in model.net.state_dict().items()},
                "hyper_parameters": model.hparams, "training_record": {"hardware": "test"}}, src)
    run_script("export_pretrained.py", str(src), "--name", "s", "--out-dir", str(tmp_path),
               "--sampler-settings", "20-25:1.5:0.25", "--sampler-settings", "8-12:2:0.5")
    loaded = load_model(tmp_path / "s.pt")
    assert loaded.sampler_defaults(22) == {"time_power": 1.5, "temperature": 0.25}
    assert loaded.sampler_defaults(10) == {"time_power": 2.0, "temperature": 0.5}
    assert loaded.sampler_defaults(50) == {"time_power": 1.0, "temperature": 1.0}
    assert json.loads((tmp_path / "s.json").read_text())["training_record"]["sampler_settings"][1]["max_steps"] == 12
    for bad in ("25-20:1.5:0.25", "20:1.5:0.25", "20-25:1.5", "20-25:0:1"):
        proc = run_script("export_pretrained.py", str(src), "--name", "x", "--out-dir", str(tmp_path),
                          "--sampler-settings", bad, check=False)
        assert proc.returncode != 0 and f"--sampler-settings {bad!r}" in proc.stderr
    assert not (tmp_path / "x.pt").exists()
