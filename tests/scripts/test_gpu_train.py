"""scripts/gpu_train.sh end to end on CPU with a tiny budget: the same command a GPU window runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from moldiff.training.checkpoint import load_model
from tests.conftest import REPO

pytestmark = pytest.mark.qm9

TINY = ["model=tiny", "data.limit=300", "data.subset=64", "data.batch_size=16", "data.val_size=16",
        "trainer.log_every_n_steps=2", "checkpoint.every_n_train_steps=100", "optim.warmup_steps=2", "ema.decay=0.9"]


def chunk(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_train.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_chunks_resume_and_export(data_root, tmp_path):
    first, second = tmp_path / "c1", tmp_path / "c2"
    chunk("--out", str(first), "--minutes", "5", "--total-minutes", "10", "--data-root", str(data_root),
          "--", *TINY, "trainer.max_steps=6")
    rec = json.loads((first / "record.json").read_text())
    assert rec["global_step"] == 6 and rec["hardware"].endswith("no GPU")
    assert (first / "resume.ckpt").exists() and (first / "metrics.csv").exists()
    info = json.loads((first / "model.json").read_text())
    assert info["training_record"]["global_step"] == 6 and "gpu_train.sh" in info["training_record"]["recipe"]
    model = load_model(first / "model.pt")  # the exported EMA weights load as a shipped model does
    assert model.diffusion.self_conditioning
    # split the resume checkpoint into parts, as a size-limited copy would: --resume takes the parts
    data = (first / "resume.ckpt").read_bytes()
    (first / "resume.ckpt").unlink()
    half = len(data) // 2
    (first / "resume.ckpt.part0").write_bytes(data[:half])
    (first / "resume.ckpt.part1").write_bytes(data[half:])
    chunk("--out", str(second), "--minutes", "5", "--total-minutes", "10", "--data-root", str(data_root),
          "--resume", str(first / "resume.ckpt"), "--matmul-precision", "highest", "--", *TINY, "trainer.max_steps=10")
    rec2 = json.loads((second / "record.json").read_text())
    assert rec2["global_step"] == 10  # continued from step 6
    assert "--matmul-precision highest" in rec2["recipe"]
    ck = torch.load(second / "resume.ckpt", map_location="cpu", weights_only=True)
    assert ck["global_step"] == 10
    # the learning-rate schedule continued: the scheduler's step count is the run's, not the chunk's
    assert ck["lr_schedulers"][0]["last_epoch"] == 10


def test_missing_wheels_is_one_clear_line(tmp_path):
    """Without hydra and without a wheel folder the script stops with one line naming the folder."""
    bare = tmp_path / "bare_python"  # a Python without site-packages: hydra is not importable
    bare.write_text(f'#!/usr/bin/env bash\nexec "{sys.executable}" -S "$@"\n')
    bare.chmod(0o755)
    env = {**os.environ, "PYTHON": str(bare), "MOLDIFF_WHEELS": str(tmp_path / "none")}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_train.sh"), "--out", str(tmp_path / "o"), "--minutes", "1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "holds no wheels" in proc.stderr and str(tmp_path / "none") in proc.stderr
