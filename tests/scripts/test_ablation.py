"""scripts/ablation.py end to end on a tiny budget: trains, samples and scores two variants, resumes."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_script

pytestmark = pytest.mark.qm9


def test_ablation_smoke_and_resume(data_root, tmp_path):
    args = ["--train-steps", "3", "--minutes", "10", "--samples", "3", "--steps", "2", "--only", "new,old", "--out", str(tmp_path),
            "--reference", "null", "--data-root", str(data_root), "--precision-cache", "qm9_first300", "--",
            "model=tiny", "data.limit=300", "data.subset=32", "data.batch_size=8"]
    proc = run_script("ablation.py", *args, timeout=900)
    assert "| new |" in proc.stdout and "| old |" in proc.stdout
    for name in ("new", "old"):
        res = json.loads((tmp_path / f"{name}.json").read_text())
        assert res["steps"] == 3 and res["samples"] == 3 and 0.0 <= res["mol_stability"] <= 1.0
        assert all(0.0 < res[k] < 100.0 for k in ("x0_rms_t0001", "x0_rms_t001"))  # precision_check.py columns
    # a variant's own overrides come after the shared ones, so old keeps its model=legacy_small over model=tiny
    cmd = next(line for line in (tmp_path / "old" / "log.txt").read_text().splitlines() if "gpu_train.py" in line)
    assert cmd.index("model=tiny") < cmd.index("model=legacy_small")
    first = (tmp_path / "new.json").stat().st_mtime
    run_script("ablation.py", *args, timeout=900)  # finished variants are not run again
    assert (tmp_path / "new.json").stat().st_mtime == first


def test_fp32_variant_sets_the_trainer_precision():
    from tests.conftest import load_script

    mod = load_script("ablation.py")
    assert mod.VARIANTS["new+fp32"][1] == ["trainer.precision=32-true"]
