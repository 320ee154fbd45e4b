"""Property predictor (task=property) and the conditional evaluation script, end to end on tiny data."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, TINY_TRAIN, run_cli

pytestmark = pytest.mark.qm9


def test_predictor_and_eval_conditional(data_root, tmp_path):
    common = [o for o in TINY_TRAIN if not o.startswith("model=")] + [f"data.root={data_root}"]
    run_cli("train", *common, "experiment=qm9_property_predictor", "property=gap", "trainer=cpu",
            "model.num_layers=1", "model.num_scalars=16", "model.num_vectors=4", "model.edge_dim=8", "model.num_rbf=8",
            f"run_dir={tmp_path / 'pred'}")
    run_cli("train", *common, "model=tiny", "conditioning.properties=[gap]", "data.train_split=train_b",
            f"run_dir={tmp_path / 'gen'}")
    pred = tmp_path / "pred" / "checkpoints" / "last.ckpt"
    gen = tmp_path / "gen" / "checkpoints" / "last.ckpt"
    assert torch.load(pred, weights_only=True)["hyper_parameters"]["prop"] == "gap"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "eval_conditional.py"), "--generator", str(gen), "--predictor", str(pred),
         "--n", "6", "--steps", "2", "--batch-size", "3", "--guidance", "2", "--data-root", str(data_root),
         "--dataset", "qm9_first300"],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for k in ("mae_moldiff", "mae_shuffled", "mae_n_atoms", "mae_data"):
        assert res[k] >= 0
    assert res["unit"] == "meV"
    # conditional sampling through the CLI with a target in dataset units
    out = tmp_path / "gap.sdf"
    run_cli("sample", f"ckpt={gen}", "n_samples=2", "steps=2", "conditioning.gap=6000", "guidance_scale=2.0",
            f"out={out}", "progress=false")
    text = out.read_text()
    assert "target_gap" in text and "6000.0" in text
    csv = tmp_path / "t.csv"
    csv.write_text("gap\n5000\n7000\n")
    run_cli("sample", f"ckpt={gen}", "n_samples=2", "steps=2", f"conditioning.targets_csv={csv}", f"out={out}",
            "progress=false", "resume=false")
    assert "7000.0" in out.read_text()
