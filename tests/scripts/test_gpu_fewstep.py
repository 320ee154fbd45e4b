"""scripts/gpu_fewstep.sh as a CPU dry run: a distillation round and a conditional chunk side by side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest

import moldiff
from tests.conftest import REPO

pytestmark = pytest.mark.qm9


def test_dry_run_writes_a_round_and_the_conditional_chunk(data_root, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "SCALE": "0.005", "ROUNDS": "1", "ANCHOR_STEPS": "3",
           "COND_MIN": "200",  # a minute at this scale: trainer.max_steps=2 ends the chunk, not the clock
           "WORK": str(tmp_path / "work"), "COND_DATA_ROOT": str(data_root),
           "COND_EXTRA": "data.limit=300 data.batch_size=8 data.val_size=8 data.num_workers=0 trainer.max_steps=2"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_fewstep.sh"), str(out)], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    log = (out / "distill.log").read_text()
    assert "distillation: exit 0" in log and "conditional: exit 0" in log
    record = json.loads(next(line for line in log.splitlines() if line.startswith('{"teacher"')))
    assert record["states_meta"][0]["teacher"].endswith("qm9_fast.pt") and record["states_meta"][-1]["steps"] == 3
    assert moldiff.load_pretrained(out / "round1.pt", device="cpu").sample(1, steps=2, seed=0)
    with tarfile.open(out / "g.tar") as tar:
        names = tar.getnames()
        chunk = json.load(tar.extractfile("g/record.json"))
    assert "g/model.pt" in names and not any("resume.ckpt" in n for n in names)
    assert chunk["model_name"] == "qm9_conditional" and chunk["global_step"] == 2
    assert len(list(out.iterdir())) <= 8  # what a device window brings back
