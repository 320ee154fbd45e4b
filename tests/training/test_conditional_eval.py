"""Multi-property conditional generation end to end on tiny data: the multi-task predictor (task=property),
a generator trained on property subsets, the conditional evaluation script, conditional sampling with any
subset of targets, and ``moldiff-evaluate predict=true``."""

import json
import shutil

import pytest
import torch

from tests.conftest import TINY_TRAIN, run_cli, run_script

pytestmark = pytest.mark.qm9

PRED_SIZES = ["model.num_layers=1", "model.num_scalars=16", "model.num_vectors=4", "model.edge_dim=8", "model.num_rbf=8"]


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cond")
    common = [o for o in TINY_TRAIN if not o.startswith("model=")] + [f"data.root={data_root}"]
    run_cli("train", *common, "experiment=qm9_property_predictor", "properties=[gap,mu]", "trainer=cpu",
            "optim.total_minutes=null", *PRED_SIZES, f"run_dir={tmp / 'pred'}")
    run_cli("train", *common, "model=tiny", "conditioning.properties=[gap,mu]", "conditioning.subsets=true",
            "data.train_split=train_b", f"run_dir={tmp / 'gen'}")
    return tmp, data_root, tmp / "pred" / "checkpoints" / "last.ckpt", tmp / "gen" / "checkpoints" / "last.ckpt"


def test_checkpoints_record_properties_units_and_ranges(trained):
    _, _, pred, gen = trained
    hp = torch.load(pred, weights_only=True)["hyper_parameters"]
    assert hp["properties"] == ["gap", "mu"] and hp["dataset"]["units"] == {"gap": "meV", "mu": "D"}
    cond = torch.load(gen, weights_only=True)["hyper_parameters"]["conditioning"]
    assert cond["subsets"] is True and cond["units"]["gap"] == "meV"
    lo, hi = cond["range"]["gap"]
    assert 0 < lo < hi


def test_eval_conditional_rows_and_joint(trained):
    tmp, data_root, pred, gen = trained
    common = ["--generator", str(gen), "--predictor", str(pred), "--n", "6", "--steps", "2", "--batch-size", "3",
              "--data-root", str(data_root), "--dataset", "qm9_first300"]
    out = tmp / "cond.json"
    run_script("eval_conditional.py", *common, "--guidance", "0", "2", "--json", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [(r["properties"], r["guidance_scale"]) for r in rows] == [(["gap"], 0), (["gap"], 2), (["mu"], 0), (["mu"], 2)]
    r = rows[0]
    assert r["n"] == 6 and 0 <= r["strict_mol_stability"] <= 1
    b = r["baselines"]["gap"]
    # the predictor's error on real molecules is not the shuffled-label error
    assert b["data"] != pytest.approx(b["shuffled"])
    # a rerun with the same settings reuses the finished rows
    again = run_script("eval_conditional.py", *common, "--guidance", "0", "2", "--json", str(out))
    assert not any(line.startswith('{"key"') for line in again.stdout.splitlines())
    # another generator's row of the same setting is added beside it, not in its place
    other = tmp / "gen_copy.ckpt"
    shutil.copy(gen, other)
    run_script("eval_conditional.py", *common, "--generator", str(other), "--properties", "gap", "--guidance", "0",
               "--json", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 5 and [r["generator"] for r in rows if r["key"] == rows[0]["key"]] == [str(gen), str(other)]
    joint = tmp / "joint.json"
    run_script("eval_conditional.py", *common, "--joint", "gap", "mu", "--json", str(joint))
    (row,) = json.loads(joint.read_text())["rows"]
    assert set(row["mae"]) == {"gap", "mu"}


def test_sampling_with_a_subset_of_targets_and_predicting_them(trained):
    tmp, data_root, pred, gen = trained
    out = tmp / "gap.sdf"
    proc = run_cli("sample", f"ckpt={gen}", "n_samples=3", "steps=2", "conditioning.gap=6000", "guidance_scale=2.0",
                   f"out={out}", "progress=false")
    text = out.read_text()
    assert "target_gap" in text and "6000.0" in text and "target_mu" not in text
    # a target far outside the training range is sampled, with a warning naming the range and unit
    far = run_cli("sample", f"ckpt={gen}", "n_samples=1", "steps=2", "conditioning.gap=1", f"out={tmp / 'far.sdf'}",
                  "progress=false")
    assert "outside the training range" in far.stderr + far.stdout and "meV" in far.stderr + far.stdout
    assert "outside" not in proc.stderr + proc.stdout
    csv = tmp / "t.csv"
    csv.write_text("mu,gap\n2.5,\n,7000\n")
    run_cli("sample", f"ckpt={gen}", "n_samples=2", "steps=2", f"conditioning.targets_csv={csv}", f"out={out}",
            "progress=false", "resume=false")
    text = out.read_text()
    assert "7000.0" in text and "2.5" in text
    js = tmp / "m.json"
    run_cli("evaluate", f"input={out}", "reference=null", "predict=true", f"predictor={pred}", f"json={js}")
    res = json.loads(js.read_text())["predicted_properties"]
    assert res["n_predicted"] == 2 and res["properties_order"] == ["gap", "mu"]
    assert res["properties"]["gap"]["n_targets"] == 1 and res["properties"]["mu"]["n_targets"] == 1
    assert res["properties"]["gap"]["mae_vs_target"] == pytest.approx(abs(res["values"][1][0] - 7000), rel=1e-4)
    # molecules without a target tag are scored against predict_targets
    run_cli("evaluate", f"input={out}", "reference=null", "predict=true", f"predictor={pred}", "predict_targets.gap=5000",
            f"json={js}")
    res = json.loads(js.read_text())["predicted_properties"]["properties"]["gap"]
    assert res["n_targets"] == 2


def test_bad_targets_are_one_line_errors(trained):
    tmp, _, _, gen = trained
    bad = run_cli("sample", f"ckpt={gen}", "n_samples=1", "steps=2", "conditioning.homo=1", f"out={tmp / 'x.sdf'}",
                  check=False)
    assert bad.returncode == 2 and "does not condition on ['homo']" in bad.stderr
    csv = tmp / "bad.csv"
    csv.write_text("gap\n6000\nabc\n")
    bad = run_cli("sample", f"ckpt={gen}", "n_samples=1", "steps=2", f"conditioning.targets_csv={csv}",
                  f"out={tmp / 'x.sdf'}", check=False)
    assert bad.returncode == 2 and "line 3, column gap" in bad.stderr


def test_per_property_default_guidance_recorded_at_export(trained):
    """An exported model may record a default guidance weight per property, used when that property alone is
    given (the overall default otherwise), and an explicit setting wins."""
    tmp, _, _, gen = trained
    run_script("export_pretrained.py", str(gen), "--name", "g", "--hardware", "test", "--wall-time-min", "1", "--guidance-scale", "2",
               "--property-guidance", "mu=4,0.2,1", "--out-dir", str(tmp))
    model = tmp / "g.pt"
    record = json.loads((tmp / "g.json").read_text())["training_record"]
    assert record["default_guidance_scale"] == 2 and record["default_guidance_scales"] == {"mu": 4.0}
    assert record["default_guidance_intervals"] == {"mu": [0.2, 1.0]}

    def scale(*targets):
        out = tmp / "pg.sdf"
        run_cli("sample", f"ckpt={model}", "n_samples=1", "steps=2", *targets, f"out={out}", "progress=false",
                "resume=false", "decode=argmax")
        settings = json.loads((tmp / "pg.sdf.run.json").read_text())["settings"]
        assert f"guidance_interval>\n{' '.join(f'{v:g}' for v in settings['guidance_interval'])}" in out.read_text()
        return settings["guidance_scale"], settings["guidance_interval"]

    assert scale("conditioning.gap=6000") == (2, [0, 1])
    assert scale("conditioning.mu=2.5") == (4, [0.2, 1])
    assert scale("conditioning.mu=2.5", "conditioning.gap=6000") == (2, [0, 1])
    assert scale("conditioning.mu=2.5", "guidance_scale=1.5", "guidance_interval=[0,0.5]") == (1.5, [0, 0.5])
    bad = run_cli("sample", f"ckpt={model}", "n_samples=1", "steps=2", "conditioning.mu=2.5", "guidance_interval=[0.5,0.2]",
                  f"out={tmp / 'bad.sdf'}", check=False)
    assert bad.returncode == 2 and "guidance_interval must be [lo, hi] with 0 <= lo <= hi <= 1" in bad.stderr
    bad = run_script("export_pretrained.py", str(gen), "--name", "h", "--hardware", "test", "--wall-time-min", "1", "--property-guidance",
                     "homo=4", "--out-dir", str(tmp), check=False)
    assert bad.returncode != 0 and "with PROP one of ['gap', 'mu']" in bad.stderr


def test_eval_conditional_defaults_to_the_recorded_guidance(trained):
    """Without ``--guidance`` the evaluation samples each property set with the weight and interval the
    generator records for it, as ``moldiff-sample`` does."""
    tmp, data_root, pred, gen = trained
    run_script("export_pretrained.py", str(gen), "--name", "g3", "--hardware", "test", "--wall-time-min", "1",
               "--guidance-scale", "3", "--property-guidance", "mu=4,0.2,1", "--out-dir", str(tmp))
    out = tmp / "own.json"
    run_script("eval_conditional.py", "--generator", str(tmp / "g3.pt"), "--predictor", str(pred), "--n", "2", "--steps", "2",
               "--data-root", str(data_root), "--dataset", "qm9_first300", "--json", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [(r["properties"], r["guidance_scale"], r["guidance_interval"]) for r in rows] == [
        (["gap"], 3, [0, 1]), (["mu"], 4, [0.2, 1])]
    assert rows[1]["key"].startswith("mu|w=4|interval=0.2-1|")


def test_eval_conditional_refuses_a_bad_grid():
    for opt in ("--temperature", "--time-power"):
        proc = run_script("eval_conditional.py", opt, "0", check=False)
        assert proc.returncode != 0 and "must be > 0" in proc.stderr


def test_predictor_guidance_steers_a_conditional_or_an_unconditional_model(trained, tiny_ckpt):
    """Predictor guidance: the guide a model records is used by default (``predictor_guidance.predictor=none``
    turns it off), recorded in the tags and the resume settings; usable with an unconditional model (targets
    then name the predictor's properties); bad values refused."""
    tmp, data_root, pred, gen = trained
    run_script("export_pretrained.py", str(gen), "--name", "pg", "--hardware", "test", "--wall-time-min", "1",
               "--predictor-guidance", f"{pred},0.5,0.2,1,gap=0.5,types=5", "--out-dir", str(tmp))
    out = tmp / "pg.sdf"

    def run(*extra):
        run_cli("sample", f"ckpt={tmp / 'pg.pt'}", "n_samples=2", "steps=3", "conditioning.mu=3", *extra, f"out={out}",
                "progress=false", "decode=argmax", "resume=false")
        return out.read_text(), json.loads((tmp / "pg.sdf.run.json").read_text())["settings"]

    text, settings = run()
    assert "<predictor_guidance>\nlast.ckpt scale 0.5 at t 0.2 to 1" in text and "<guidance_scale>" in text
    assert settings["predictor_guidance"]["interval"] == [0.2, 1] and len(settings["predictor_guidance"]["sha256"]) == 64
    assert settings["predictor_guidance"]["weights"] == {"gap": 0.5}
    assert settings["predictor_guidance"]["type_scale"] == 5 and "weights gap=0.5, types 5\n" in text
    text, settings = run("predictor_guidance.predictor=none")
    assert "<predictor_guidance>" not in text and "predictor_guidance" not in settings
    # without targets the recorded guide is not loaded at all (here: a guide file that no longer exists)
    gone = tmp / "gone.ckpt"
    shutil.copy(pred, gone)
    run_script("export_pretrained.py", str(gen), "--name", "pg_gone", "--hardware", "test", "--wall-time-min", "1",
               "--predictor-guidance", f"{gone},0.5,0.2,1", "--out-dir", str(tmp))
    gone.unlink()
    run_cli("sample", f"ckpt={tmp / 'pg_gone.pt'}", "n_samples=1", "steps=2", f"out={tmp / 'plain.sdf'}", "progress=false")
    out2 = tmp / "pg_uncond.sdf"
    run_cli("sample", f"ckpt={tiny_ckpt}", "n_samples=2", "steps=3", "conditioning.gap=6000",
            f"predictor_guidance.predictor={pred}", f"out={out2}", "progress=false", "decode=argmax")
    text = out2.read_text()
    assert "<target_gap>\n6000.0" in text and "scale 1 at t 0.1 to 1" in text and "<guidance_scale>" not in text
    bad = run_cli("sample", f"ckpt={tiny_ckpt}", "n_samples=1", "steps=2", "conditioning.homo=1",
                  f"predictor_guidance.predictor={pred}", f"out={tmp / 'x.sdf'}", check=False)
    assert bad.returncode == 2 and "does not condition on ['homo']" in bad.stderr and "guide predictor" in bad.stderr
    js = tmp / "guided.json"
    run_script("eval_conditional.py", "--generator", str(tiny_ckpt), "--predictor", str(pred), "--guide", str(pred),
               "--properties", "mu", "--n", "3", "--steps", "2", "--data-root", str(data_root), "--dataset",
               "qm9_first300", "--json", str(js))
    (row,) = json.loads(js.read_text())["rows"]
    assert row["predictor_guidance"]["scale"] == 1 and "guide=" in row["key"] and "mu" in row["mae"]
    # the guide's file hash is part of the row key: a retrained guide under the same path is a new row
    assert f"#{row['predictor_guidance']['sha256'][:8]}:" in row["key"]


def test_a_predictor_trained_on_a_generators_predictions(trained, tmp_path):
    """``predictor_inputs.generator``: a predictor (warm-started from another) learns from a generator's
    predictions of noised molecules, the inputs predictor guidance gives it; the setting is recorded, the
    generator is not saved with it, and the result loads like any predictor."""
    from moldiff.training.property_module import load_property_module

    _, data_root, pred, gen = trained
    common = [o for o in TINY_TRAIN if not o.startswith("model=")] + [f"data.root={data_root}", "trainer=cpu",
                                                                      "optim.total_minutes=null", *PRED_SIZES]
    run = tmp_path / "guide"
    run_cli("train", *common, "experiment=qm9_property_predictor", "properties=[gap,mu]", f"init_from={pred}",
            f"predictor_inputs.generator={gen}", "predictor_inputs.t_range=[0.1,0.9]", f"run_dir={run}")
    ck = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ck["hyper_parameters"]["inputs"] == {"generator": str(gen), "t_range": [0.1, 0.9]}
    assert all(k.startswith("net.") for k in ck["state_dict"])
    guide = load_property_module(run / "checkpoints" / "last.ckpt")
    assert guide.inputs is None and guide.properties == ["gap", "mu"]
    # the inputs: the generator's coordinates, not the clean ones, and per-atom probabilities
    guide.inputs = {"generator": str(gen), "t_range": [0.5, 0.5]}
    from moldiff.data.cache import load_cache
    from torch_geometric.data import Batch

    cache = load_cache("qm9_first300", data_root)
    batch = Batch.from_data_list([cache.data(i, ["gap", "mu"]) for i in range(4)])
    pos, h = guide.denoised_inputs(batch)
    assert pos.shape == batch.pos.shape and not torch.allclose(pos, batch.pos, atol=1e-3)
    n_types = guide.vocab.num_atom_types
    assert torch.allclose(h[:, :n_types].sum(-1), torch.ones(len(h))) and torch.allclose(h[:, n_types:].sum(-1), torch.ones(len(h)))
    js = tmp_path / "denoised.json"
    run_script("eval_predictor.py", "--predictor", str(run / "checkpoints" / "last.ckpt"), "--denoised-by", str(gen),
               "--times", "0.5", "1", "--limit", "6", "--data-root", str(data_root), "--dataset", "qm9_first300",
               "--json", str(js))
    res = json.loads(js.read_text())
    assert list(res["denoised_mae"]) == ["0.5", "1"] and set(res["denoised_mae"]["1"]) == {"gap", "mu"}
    bad = run_cli("train", *common, f"predictor_inputs.generator={gen}", f"run_dir={tmp_path / 'bad'}", check=False)
    assert bad.returncode == 2 and "needs task=property" in bad.stderr
    with pytest.raises(ValueError, match=r"predictor_inputs.t_range must be \[lo, hi\]"):
        guide.set_inputs({"generator": str(gen), "t_range": [0.9, 0.1]})
