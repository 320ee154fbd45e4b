"""scripts/sampler_sweep.py: one row per variant, in the JSON, and a rerun skips finished rows."""

import json
import subprocess
import sys

from tests.conftest import REPO, run_script


def test_sampler_sweep_rows_and_rerun(tmp_path):
    out = tmp_path / "sweep.json"
    args = ["--n", "2", "--threads", "1", "--json", str(out), "steps=2", "steps=2,time_power=2,temperature=0.5"]
    run_script("sampler_sweep.py", *args)
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["steps=2", "steps=2,time_power=2,temperature=0.5"]
    assert rows[1]["settings"] == {"ckpt": "qm9", "n": 2, "seed": 0, "steps": 2, "time_power": 2.0, "temperature": 0.5}
    for r in rows:
        assert 0.0 <= r["mol_stability"] <= 1.0 and 0.0 <= r["edm_mol_stability"] <= 1.0
    again = run_script("sampler_sweep.py", *args)
    assert again.stdout.count("already in") == 2
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "sampler_sweep.py"), "--n", "2", "steps=2,bogus=1"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "bogus=1" in bad.stderr
