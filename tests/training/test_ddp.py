"""DDP through Lightning on CPU with 2 processes (gloo): ranks see different data; checkpoints written once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.qm9


def test_two_process_ddp(data_root, tmp_path):
    script = Path(__file__).with_name("ddp_script.py")
    run = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(data_root), str(run)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0 = json.loads((run / "rank0.json").read_text())
    r1 = json.loads((run / "rank1.json").read_text())
    assert len(r0) == len(r1) == 4 * 8
    assert not set(r0) & set(r1), "both ranks saw the same molecules"
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["last.ckpt", "step0000002.ckpt", "step0000004.ckpt"], ckpts
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
