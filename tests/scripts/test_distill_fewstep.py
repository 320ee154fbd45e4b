"""scripts/distill_fewstep.py: the states hold the teacher's second call; a tiny run writes a loadable model."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch_geometric.data import Batch

import moldiff
from moldiff.diffusion.joint import NoisyGraph
from moldiff.training.checkpoint import load_model, pretrained_path
from moldiff.utils.graph import reverse_edge_index
from tests.conftest import REPO, load_script, run_script


def _script():
    return load_script("distill_fewstep.py")


def test_states_hold_the_second_call_on_the_fed_back_first():
    model = load_model(pretrained_path("qm9_default"))  # the undistilled model, the default teacher
    states = _script().collect_states(model, n_traj=2, steps=3, time_power=2.0, seed=0, batch_size=2)
    assert len(states) == 6
    assert [bool(s.no_sc) for s in states] == [True, True, False, False, False, False]
    assert [round(float(s.t), 4) for s in states[::2]] == [1.0, round((2 / 3) ** 2, 4), round((1 / 3) ** 2, 4)]
    d, net = model.diffusion, model.net
    for s in (states[1], states[4]):  # the first step (no fed-back prediction) and a later one
        b = Batch.from_data_list([s])
        g = NoisyGraph(b.pos, b.atom_types, b.charges, b.bond_types, b.edge_index, b.batch, b.t, 1,
                       reverse_edge_index(b.edge_index, b.num_nodes))
        with torch.no_grad():
            first = d.denoise(net, g, (b.sc_pos, b.sc_a, b.sc_c, b.sc_b.float()))
            second = d.self_cond_from(d.denoise(net, g, d.self_cond_from(first)))
        torch.testing.assert_close(second[0], b.tgt_pos, atol=1e-4, rtol=0)
        torch.testing.assert_close(second[1], b.tgt_a, atol=1e-4, rtol=0)
        torch.testing.assert_close(second[3], b.tgt_b.float(), atol=2e-3, rtol=0)
        assert not torch.allclose(first[0], b.tgt_pos, atol=1e-6)  # the target is not the first call's answer


@pytest.mark.qm9
def test_conditional_states_teach_both_guidance_calls(data_root):
    """A conditional model: guided trajectories towards targets of its training half; at every step one state for
    the conditional call (the trajectory's targets) and one for the unconditional call, each its second call."""
    mod = _script()
    model = load_model(pretrained_path("qm9_conditional"))
    counts, targets = mod.conditional_targets(model, 40, 0, str(data_root), "qm9_first300")
    assert counts.shape == (40,) and targets.shape == (40, len(model.properties))
    given = torch.isfinite(targets)
    assert given.any() and not given.all()  # random subsets, as in training
    states = mod.collect_states(model, n_traj=2, steps=2, time_power=1.0, seed=0, batch_size=2,
                                data_root=str(data_root), dataset="qm9_first300")
    assert len(states) == 2 * 2 * 2  # steps x (conditional, unconditional) x trajectories
    d = model.diffusion
    for s in states[:4]:  # the first step: the conditional pair, then the unconditional pair
        b = Batch.from_data_list([s])
        assert b.props.shape == (1, len(model.properties))
        g = NoisyGraph(b.pos, b.atom_types, b.charges, b.bond_types, b.edge_index, b.batch, b.t, 1,
                       reverse_edge_index(b.edge_index, b.num_nodes))
        fn = model.denoiser_fn(b.props)
        with torch.no_grad():
            second = d.self_cond_from(d.denoise(fn, g, d.self_cond_from(d.denoise(fn, g, None))))
        torch.testing.assert_close(second[0], b.tgt_pos, atol=1e-4, rtol=0)
    assert not torch.isfinite(states[2].props).any() and not torch.isfinite(states[3].props).any()
    assert torch.equal(states[0].pos, states[2].pos)  # the same state, taught for both calls


@pytest.mark.qm9
def test_given_properties_are_the_only_ones_on_every_trajectory(data_root):
    mod = _script()
    model = load_model(pretrained_path("qm9_conditional"))
    _, targets = mod.conditional_targets(model, 30, 0, str(data_root), "qm9_first300", given=["mu"])
    mu = list(model.properties).index("mu")
    assert torch.isfinite(targets[:, mu]).all()
    assert not torch.isfinite(torch.cat([targets[:, :mu], targets[:, mu + 1:]], 1)).any()
    with pytest.raises(ValueError, match="--given dipole: not a property of this model"):
        mod.conditional_targets(model, 3, 0, str(data_root), "qm9_first300", given=["dipole"])


def test_given_needs_a_conditional_model(tmp_path):
    proc = run_script("distill_fewstep.py", "--stage", "states", "--given", "mu", "--out", str(tmp_path / "x"),
                      check=False)
    assert proc.returncode != 0 and "is not a conditional model" in proc.stderr
    proc = run_script("distill_fewstep.py", "--stage", "states", "--ckpt", str(pretrained_path("qm9_conditional")),
                      "--given", "dipole", "--out", str(tmp_path / "y"), check=False)
    assert proc.returncode == 2 and "--given dipole: not a property of this model" in proc.stderr


@pytest.mark.qm9
def test_tiny_conditional_distillation_writes_a_conditional_model(data_root, tmp_path):
    out = tmp_path / "cd"
    run_script("distill_fewstep.py", "--stage", "rounds", "--ckpt", str(pretrained_path("qm9_conditional")),
               "--out", str(out), "--rounds", "1", "--grids", "2:1:2", "--anchor", "3:1:1", "--max-steps", "2",
               "--batch-size", "4", "--threads", "1", "--data-root", str(data_root), "--dataset", "qm9_first300")
    model = load_model(out / "round1" / "model.pt")
    assert model.properties == load_model(pretrained_path("qm9_conditional")).properties
    record = json.loads((out / "round1" / "record.json").read_text())
    assert record["states"] == 2 * 2 * 2 + 3 * 1 * 2 and record["states_meta"][0]["guidance"] == 2.0
    mols = moldiff.load_pretrained(str(out / "round1" / "model.pt")).sample(2, steps=3, conditioning={"gap": 6000.0})
    assert len(mols) == 2


@pytest.mark.qm9
def test_conditional_distillation_script_runs_its_three_rounds(data_root, tmp_path):
    """scripts/distill_conditional.sh, every size and time 100 times smaller, on the small cache."""
    out, start = tmp_path / "dc", pretrained_path("qm9_conditional")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "distill_conditional.sh"), str(start), str(out),
                           "--max-steps", "1", "--batch-size", "4", "--threads", "1", "--data-root", str(data_root),
                           "--dataset", "qm9_first300"], env={**os.environ, "SCALE": "0.01", "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert load_model(out / "model.pt").properties == load_model(start).properties
    r2 = json.loads((out / "round2" / "record.json").read_text())
    assert [m["guidance"] for m in r2["states_meta"]] == [4.0, 2.0] and r2["init"].endswith("round1/model.pt")
    assert r2["states_meta"][0]["driver"].endswith("round1/model.pt")
    r1 = json.loads((out / "round1" / "record.json").read_text())
    assert [(m["steps"], m["n_traj"]) for m in r1["states_meta"]] == [(50, 4), (100, 2)]
    r3 = json.loads((out / "round3" / "record.json").read_text())
    assert [m.get("given") for m in r3["states_meta"]] == [["mu"], None] and r3["teacher"] == r1["teacher"]
    assert r3["init"].endswith("round2/model.pt") and r3["states_meta"][0]["driver"].endswith("round2/model.pt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_states_are_collected_on_the_gpu_and_kept_on_the_host():
    model = load_model(None, device="cuda")
    states = _script().collect_states(model, n_traj=2, steps=2, time_power=2.0, seed=0, device="cuda")
    assert len(states) == 4 and all(s.pos.device.type == "cpu" and s.tgt_b.device.type == "cpu" for s in states)


def test_tiny_distillation_run_writes_a_model_that_samples(tmp_path):
    out = tmp_path / "d"
    run_script("distill_fewstep.py", "--out", str(out), "--n-traj", "3", "--steps", "3", "--max-steps", "2",
               "--batch-size", "2", "--threads", "1")
    record = json.loads((out / "record.json").read_text())
    assert record["states"] == 9 and record["optimizer_steps"] == 2 and record["states_meta"][0]["steps"] == 3
    assert record["device"] == ("cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(0))
    gen = moldiff.load_pretrained(out / "model.pt", device="cpu")
    mols = gen.sample(2, steps=3, seed=0, decode="argmax")
    assert len(mols) == 2


def test_rounds_stage_teaches_each_round_with_the_previous_student(tmp_path):
    out = tmp_path / "r"
    run_script("distill_fewstep.py", "--stage", "rounds", "--out", str(out), "--rounds", "2", "--grids", "3:2:2",
               "--anchor", "2:1:2", "--max-steps", "1", "--batch-size", "2", "--threads", "1", "--seed", "5")
    first = json.loads((out / "round1" / "record.json").read_text())
    second = json.loads((out / "round2" / "record.json").read_text())
    assert first["states"] == second["states"] == 6 + 4
    assert first["states_meta"][0]["teacher"].endswith("qm9_default.pt")
    assert second["states_meta"][0]["teacher"].endswith("round1/model.pt")
    assert second["states_meta"][0]["seed"] != first["states_meta"][0]["seed"]  # new trajectories each round
    assert second["states_meta"][1] == first["states_meta"][1]  # the anchor states are collected once
    assert moldiff.load_pretrained(out / "round2" / "model.pt", device="cpu").sample(1, steps=2, seed=0)


def test_grid_temperature_and_repeat(tmp_path):
    """A grid's fourth field is the sampler's temperature, its fifth how often each state is listed (a weight)."""
    out = tmp_path / "r"
    run_script("distill_fewstep.py", "--stage", "rounds", "--out", str(out), "--rounds", "1", "--grids", "3:1.5:2:0.25",
               "--anchor", "2:1:2:1:3", "--max-steps", "1", "--batch-size", "2", "--threads", "1")
    record = json.loads((out / "round1" / "record.json").read_text())
    grid, anchor = record["states_meta"]
    assert (grid["temperature"], grid["repeat"], grid["states"]) == (0.25, 1, 6)
    assert (anchor["temperature"], anchor["repeat"], anchor["states"]) == (1.0, 3, 4)
    assert record["states"] == 6 + 3 * 4


def test_temperature_changes_the_visited_states():
    mod, model = _script(), load_model(pretrained_path("qm9_default"))
    hot, cold = (mod.collect_states(model, n_traj=2, steps=4, time_power=1.5, seed=0, batch_size=2, temperature=T)
                 for T in (1.0, 0.05))
    assert torch.equal(hot[0].pos, cold[0].pos)  # the same prior draw
    assert any(not torch.equal(h.atom_types, c.atom_types) or not torch.equal(h.bond_types, c.bond_types)
               for h, c in zip(hot, cold))


@pytest.mark.parametrize("spec", ["25x2", "25:2", "25:2:100:0", "25:2:100:1:0", "25:2:100:1:2:3"])
def test_a_bad_grid_is_named(tmp_path, spec):
    proc = run_script("distill_fewstep.py", "--stage", "rounds", "--out", str(tmp_path), "--grids", spec, check=False)
    assert proc.returncode != 0 and f"{spec!r} is not STEPS:TIME_POWER:N_TRAJ[:TEMPERATURE[:REPEAT]]" in proc.stderr


def test_average_weights_mixes_two_models(tmp_path):
    a, b = REPO / "moldiff/pretrained/qm9_default.pt", REPO / "moldiff/pretrained/qm9_fast.pt"
    run_script("average_weights.py", str(a), str(b), "--out", str(tmp_path / "soup.pt"), "--weights", "3", "1")
    soup = torch.load(tmp_path / "soup.pt", weights_only=False)
    sa, sb = (torch.load(p, weights_only=False)["state_dict"] for p in (a, b))
    k = next(k for k, v in sa.items() if v.is_floating_point() and not torch.equal(v, sb[k]))
    torch.testing.assert_close(soup["state_dict"][k], 0.75 * sa[k] + 0.25 * sb[k])
    assert [r["weight"] for r in soup["training_record"]["averaged"]] == [3.0, 1.0]
    assert moldiff.load_pretrained(tmp_path / "soup.pt", device="cpu").sample(1, steps=2, seed=0)


def test_average_weights_refuses_other_architectures(tmp_path):
    proc = run_script("average_weights.py", str(REPO / "moldiff/pretrained/qm9_default.pt"),
                      str(REPO / "moldiff/pretrained/qm9_predictor.pt"), "--out", str(tmp_path / "x.pt"), check=False)
    assert proc.returncode != 0 and "qm9_predictor.pt is not the same architecture" in proc.stderr
    assert not (tmp_path / "x.pt").exists()
