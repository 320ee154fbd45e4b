"""scripts/gpu_ablation.sh as a CPU dry run: the benchmark, one ablation variant, the packed archive."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.qm9


def test_dry_run_packs_the_variants(data_root, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "SCALE": "0.002", "ABL_VARIANTS": "new", "WORK": str(tmp_path / "work"),
           "ABL_DATA_ROOT": str(data_root),
           "ABL_EXTRA": "model=tiny data.limit=300 data.subset=32 data.batch_size=8 data.val_size=8 data.num_workers=0"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_ablation.sh"), str(out)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    bench = (out / "bench.txt").read_text()
    assert "bench_training.py" in bench and "--compile" not in bench  # no compiled row in a dry run
    assert json.loads((out / "bench_eager.json").read_text())["rows"][0]["preset"] == "tiny"
    parts = sorted(out.glob("abl.tgz.part*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in parts)), mode="r:gz") as tar:
        names = tar.getnames()
        train = json.load(tar.extractfile("abl/new/train.json"))
    assert "abl/new/model.pt" in names and train["steps"] >= 1
    assert not any("checkpoints" in n or "resume.ckpt" in n for n in names)
