"""DDP through Lightning on CPU with 2 processes (gloo): ranks see different data, all processes share one
run folder (the default timestamped one included), checkpoints are written once, the end-of-training
checkpoint is decided for all processes together, and the dataset cache is built by one process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.qm9

SCRIPT = Path(__file__).with_name("ddp_script.py")
REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


def _records(out: Path) -> tuple[dict, dict]:
    return json.loads((out / "rank0.json").read_text()), json.loads((out / "rank1.json").read_text())


def test_two_process_ddp_default_run_dir(data_root, tmp_path):
    """No run_dir given: the child process started by Lightning must use the first process's folder."""
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    proc = subprocess.run([sys.executable, str(SCRIPT), str(data_root), str(out)], env=_env(), cwd=work,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = _records(out)
    assert len(r0["seen"]) == len(r1["seen"]) == 4 * 8
    assert not set(r0["seen"]) & set(r1["seen"]), "both ranks saw the same molecules"
    runs = sorted((work / "runs" / "qm9").iterdir())
    assert len(runs) == 1, runs
    run = runs[0].resolve()
    assert r0["run_dir"] == r1["run_dir"] == str(run)
    assert r0["checkpoint_dir"] == r1["checkpoint_dir"] == str(run / "checkpoints")
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["last.ckpt", "step0000002.ckpt", "step0000004.ckpt"], ckpts
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert (run / "config.yaml").exists() and (run / "logs" / "metrics.csv").exists()
    assert json.loads((run / "summary.json").read_text())["global_step"] == 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_externally_started_processes_build_the_cache_once(tmp_path):
    """Two processes started together (as torchrun or SLURM start them) on a data root without the cache:
    one builds it, the other waits for it; the final checkpoint (step 5, not a periodic one) is written
    by both together."""
    root, run, out = tmp_path / "data", tmp_path / "run", tmp_path / "out"
    port = str(_free_port())
    overrides = [f"run_dir={run}", "data.limit=100", "data.subset=32", "trainer.max_steps=5"]
    procs = [
        subprocess.Popen([sys.executable, str(SCRIPT), str(root), str(out), *overrides], cwd=tmp_path,
                         env=_env(LOCAL_RANK=str(r), NODE_RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                  MASTER_PORT=port),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in range(2)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(log[-3000:] for log in logs)
    builds = [log.count("building the dataset cache") for log in logs]
    assert builds == [1, 0], builds
    r0, r1 = _records(out)
    assert len(r0["seen"]) == len(r1["seen"]) == 5 * 8
    assert not set(r0["seen"][:16]) & set(r1["seen"][:16]), "both ranks saw the same molecules in epoch 0"
    assert r0["checkpoint_dir"] == r1["checkpoint_dir"] == str((run / "checkpoints").resolve())
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["last.ckpt", "step0000002.ckpt", "step0000004.ckpt", "step0000005.ckpt"], ckpts
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5
    assert [p.name for p in root.iterdir()] == ["qm9_first100"]


def _max_difference(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point() and a[k].numel())


@pytest.mark.slow
def test_two_process_resume_matches_an_uninterrupted_run(data_root, tmp_path):
    """Each process restores its own random generators and its place in the epoch (3 of 6 steps is mid-epoch:
    40 molecules, 20 per process, 2 batches of 8)."""
    common = ["optim.total_steps=6", "checkpoint.every_n_train_steps=3", "data.subset=40"]

    def run(out: str, *extra: str) -> None:
        proc = subprocess.run([sys.executable, str(SCRIPT), str(data_root), str(tmp_path / out), *common, *extra],
                              env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]

    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run("o1", f"run_dir={whole}", "trainer.max_steps=6")
    run("o2", f"run_dir={parts}", "trainer.max_steps=3")
    run("o3", f"run_dir={parts}", "trainer.max_steps=6", "ckpt_path=auto")
    a = torch.load(whole / "checkpoints" / "step0000006.ckpt", weights_only=True)
    b = torch.load(parts / "checkpoints" / "step0000006.ckpt", weights_only=True)
    assert len(b["callbacks"]["RNGStateCheckpoint"]["states"]) == 2
    assert _max_difference(a["current_model_state"], b["current_model_state"]) < 1e-6
    assert _max_difference(a["state_dict"], b["state_dict"]) < 1e-6
