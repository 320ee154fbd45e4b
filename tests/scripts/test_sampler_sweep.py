"""scripts/sampler_sweep.py: one row per variant, in the JSON, and a rerun skips finished rows."""

import json
import subprocess
import sys

from tests.conftest import REPO, load_script, run_script


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
    assert all(r["network_calls"] == 2 for r in rows)


def test_sampler_sweep_self_conditioning_probe(tmp_path):
    """self_cond=none drops the fed-back prediction; second[:LO:HI] adds a call at the steps in the window."""
    out = tmp_path / "sc.json"
    run_script("sampler_sweep.py", "--n", "2", "--threads", "1", "--json", str(out), "steps=4,self_cond=none",
               "steps=4,self_cond=second", "steps=4,self_cond=second:0.3:0.6")
    rows = json.loads(out.read_text())["rows"]
    # 4 steps at t = 1, 0.75, 0.5, 0.25: a second call at each, or only at t = 0.5 in [0.3, 0.6]
    assert [r["network_calls"] for r in rows] == [4, 8, 5]
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "sampler_sweep.py"), "--n", "2", "steps=2,self_cond=twice"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "self_cond must be none, second or second:LO:HI" in bad.stderr


def test_sc_temperature_retempers_the_fed_back_probabilities():
    import torch

    sweep = load_script("sampler_sweep.py")
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], dtype=torch.float64)
    assert torch.allclose(sweep.retemper(p, 1.0), p)
    assert torch.allclose(sweep.retemper(p, 0.5), p**2 / (p**2).sum(-1, keepdim=True))
    assert torch.equal(sweep.retemper(p, 0.0), torch.tensor([[1.0, 0, 0], [0, 0, 1.0]], dtype=torch.float64))
    assert sweep.parse_variant("steps=3,sc_temperature=0.5") == {"steps": 3, "sc_temperature": 0.5}


def test_grid_mix_places_steps_by_the_mixed_density():
    import pytest
    import torch

    sweep = load_script("sampler_sweep.py")
    from moldiff.sampling.sampler import time_grid

    # W = 0 is the time_power=2 grid; W = 1 is uniform in [LO, HI] apart from the first and last jumps
    assert torch.allclose(sweep.mixed_grid("0:0.2:0.7", 25), time_grid(25, power=2.0), atol=1e-4)
    g = sweep.mixed_grid("1:0.2:0.7", 5)
    assert torch.allclose(g, torch.tensor([1.0, 0.6, 0.5, 0.4, 0.3, 0.0]), atol=1e-4)
    g = sweep.mixed_grid("0.3:0.2:0.7", 25)
    assert g[0] == 1 and g[-1] == 0 and bool((g[1:] < g[:-1]).all())
    with sweep.MixedGrid("0.5:0.2:0.7"):
        import moldiff.sampling.sampler as sampler

        assert torch.equal(sampler.time_grid(25), sweep.mixed_grid("0.5:0.2:0.7", 25))
    assert sampler.time_grid is time_grid  # restored
    with pytest.raises(SystemExit, match="grid_mix must be W:LO:HI"):
        sweep.parse_variant("steps=3,grid_mix=0.5:0.7:0.2")
