"""Sampling: reproducible seeds, SDF through RDKit, inpainting keeps the fragment, guidance direction,
checkpoint compatibility errors, interruption and resume."""

from __future__ import annotations

import torch
import pytest
from rdkit import Chem
from torch_geometric.data import Batch

from moldiff.data.graph import make_data
from moldiff.diffusion.joint import JointDiffusion
from moldiff.diffusion.schedules import NoiseSchedule
from moldiff.models.denoiser import Denoiser
from moldiff.sampling.prior import sample_num_atoms
from moldiff.sampling.sampler import Fragment, sample
from tests.conftest import interrupt_second_batch, run_cli, run_sample_main


def toy_model(num_props=0):
    marg = {"atom_types": [0.5, 0.3, 0.2], "charges": [0.1, 0.8, 0.1], "bonds": [0.7, 0.2, 0.05, 0.05]}
    diff = JointDiffusion(NoiseSchedule(), NoiseSchedule(), 3, 3, 4, marg)
    net = Denoiser(diff.atom_feat_dim, diff.edge_feat_dim, 3, 3, 4, num_scalars=16, num_vectors=4, edge_dim=8,
                   num_layers=2, num_rbf=8, num_props=num_props)
    return diff, net


def fn(net, props=None):
    return lambda pos, h, ei, e, batch, t, G, **kw: net(pos, h, ei, e, batch, t, G, props=props, **kw)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_same_seed_same_molecules(sampler):
    diff, net = toy_model()
    counts = torch.tensor([4, 6, 5])
    outs = [sample(diff, fn(net), counts, steps=5, sampler=sampler, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    for k in ("pos", "atom_types", "charges", "bond_types"):
        assert torch.equal(outs[0][k], outs[1][k])
    other = sample(diff, fn(net), counts, steps=5, sampler=sampler, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(outs[0].pos, other.pos)


def test_any_step_count_and_symmetric_bonds():
    from moldiff.utils.graph import reverse_edge_index

    diff, net = toy_model()
    for steps in (1, 3, 17):
        out = sample(diff, fn(net), torch.tensor([5, 3]), steps=steps, generator=torch.Generator().manual_seed(0))
        rev = reverse_edge_index(out.edge_index, out.num_nodes)
        assert torch.equal(out.bond_types, out.bond_types[rev])
        assert torch.isfinite(out.pos).all()
    with pytest.raises(ValueError, match="steps"):
        sample(diff, fn(net), torch.tensor([5]), steps=0)
    with pytest.raises(ValueError, match="ancestral"):
        sample(diff, fn(net), torch.tensor([5]), steps=2, sampler="euler")


def test_inpainting_keeps_fragment_exactly():
    diff, net = toy_model()
    frag = Fragment(
        pos=torch.tensor([[3.0, 1.0, -2.0], [4.2, 1.0, -2.0], [3.0, 2.3, -1.5]]),
        atom_types=torch.tensor([1, 2, 0]),
        charges=torch.tensor([1, 1, 1]),
        bond_types=torch.tensor([[0, 1, 2], [1, 0, 0], [2, 0, 0]]),
    )
    counts = torch.tensor([6, 8])
    out = sample(diff, fn(net), counts, steps=6, fragment=frag, generator=torch.Generator().manual_seed(0))
    for g in range(2):
        lo = int(out.ptr[g])
        assert torch.equal(out.pos[lo : lo + 3], frag.pos)
        assert torch.equal(out.atom_types[lo : lo + 3], frag.atom_types)
        assert torch.equal(out.charges[lo : lo + 3], frag.charges)
        i, j = out.edge_index
        m = (i >= lo) & (i < lo + 3) & (j >= lo) & (j < lo + 3)
        assert torch.equal(out.bond_types[m], frag.bond_types[i[m] - lo, j[m] - lo])
    with pytest.raises(ValueError, match="more atoms than the fragment"):
        sample(diff, fn(net), torch.tensor([3]), steps=2, fragment=frag)


def test_num_atoms_prior():
    g = torch.Generator().manual_seed(0)
    assert sample_num_atoms(5, [0, 0, 1, 3], generator=g).tolist().count(0) == 0
    assert sample_num_atoms(3, None, 19).tolist() == [19, 19, 19]
    r = sample_num_atoms(200, None, [15, 20], generator=g)
    assert r.min() >= 15 and r.max() <= 20
    with pytest.raises(ValueError, match="range"):
        sample_num_atoms(3, None, [20, 15])


def test_guidance_moves_distribution_toward_target():
    """Toy: property = fraction of atoms of type 2. A conditional model trained briefly puts more type-2
    atoms in molecules sampled at a high target than at a low one."""
    torch.manual_seed(0)
    diff, net = toy_model(num_props=1)
    g = torch.Generator().manual_seed(0)
    data = []
    for _ in range(64):
        n = 6
        frac = float(torch.rand(1, generator=g))
        types = (torch.rand(n, generator=g) < frac).long() * 2
        d = make_data(torch.randn(n, 3, generator=g), types, torch.ones(n, dtype=torch.long),
                      torch.tensor([0]), torch.tensor([1]), torch.tensor([1]), torch.tensor([(types == 2).float().mean() * 2 - 1]))
        data.append(d)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(150):
        batch = Batch.from_data_list([data[k] for k in torch.randint(0, 64, (16,), generator=g)])
        drop = torch.rand(batch.num_graphs, 1, generator=g) < 0.2
        props = torch.where(drop, float("nan"), batch.y)
        loss = diff.loss(lambda *a, **kw: net(*a, props=props, **kw), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    counts = torch.full((40,), 6)

    def frac_type2(target):
        props = torch.full((40, 1), target)
        out = sample(diff, fn(net), counts, steps=10, guided_denoiser=fn(net, props), guidance_scale=2.0,
                     generator=torch.Generator().manual_seed(1))
        return (out.atom_types == 2).float().mean().item()

    low, high = frac_type2(-1.0), frac_type2(1.0)
    assert high > low + 0.3, (low, high)


def test_guidance_interval_limits_the_unconditional_calls_to_its_steps():
    """Guidance applies only at the steps whose time lies in the interval: the unconditional network runs on
    those steps alone, and a wrong interval is refused."""
    diff, net = toy_model(num_props=1)
    counts = torch.full((3,), 5)
    props = torch.ones(3, 1)
    seen = []

    def uncond(*args, **kw):
        seen.append(float(args[5][0]))  # the step's time
        return fn(net)(*args, **kw)

    sample(diff, uncond, counts, steps=10, guided_denoiser=fn(net, props), guidance_scale=3.0,
           guidance_interval=(0.25, 0.65), generator=torch.Generator().manual_seed(0))
    assert seen == pytest.approx([0.6, 0.5, 0.4, 0.3])  # t = 1.0, 0.9, ..., 0.1 on the uniform grid
    for bad in [(0.5, 0.2), (-0.1, 1.0), (0.0, 1.5)]:
        with pytest.raises(ValueError, match="guidance_interval must be"):
            sample(diff, uncond, counts, steps=2, guided_denoiser=fn(net, props), guidance_interval=bad)


def test_cli_sample_reproducible_sdf(tiny_ckpt, tmp_path):
    a, b = tmp_path / "a.sdf", tmp_path / "b.sdf"
    for out in (a, b):
        run_cli("sample", f"ckpt={tiny_ckpt}", "n_samples=6", "steps=4", "batch_size=4", f"out={out}", "seed=0", "progress=false")
    assert a.read_bytes() == b.read_bytes()
    mols = [m for m in Chem.SDMolSupplier(str(a), removeHs=False, sanitize=False)]
    assert len(mols) == 6 and all(m is not None and m.GetNumAtoms() > 0 for m in mols)
    assert mols[0].GetProp("moldiff_steps") == "4"
    from moldiff.chem.io import read_sdf

    assert len(read_sdf(a)) == 6  # round trip through our reader too


def test_cli_sample_extras_and_fixed_atom_count(tiny_ckpt, tmp_path):
    out = tmp_path / "m.sdf"
    run_cli("sample", f"ckpt={tiny_ckpt}", "n_samples=3", "steps=2", f"out={out}", "num_atoms=7",
            f"xyz_dir={tmp_path / 'xyz'}", f"png={tmp_path / 'g.png'}", "evaluate=true", "reference=null", "progress=false")
    mols = [m for m in Chem.SDMolSupplier(str(out), removeHs=False, sanitize=False)]
    assert [m.GetNumAtoms() for m in mols] == [7, 7, 7]
    assert len(list((tmp_path / "xyz").glob("*.xyz"))) == 3
    assert (tmp_path / "g.png").stat().st_size > 0


def test_cli_inpaint_keeps_fragment(tiny_ckpt, tmp_path):
    from moldiff.chem.io import read_sdf, write_sdf
    from moldiff.chem.molecule import Molecule

    frag = Molecule(["C", "O"], [[0.1, 0.2, 0.3], [1.3, 0.2, 0.3]], [0, 0], [[0, 1, 2]])
    write_sdf([frag], tmp_path / "frag.sdf")
    out = tmp_path / "grown.sdf"
    run_cli("sample", f"ckpt={tiny_ckpt}", "n_samples=2", "steps=3", f"out={out}", f"inpaint.sdf={tmp_path / 'frag.sdf'}",
            "num_atoms=[6,8]", "progress=false")
    for m in read_sdf(out):
        assert m.elements[:2] == ["C", "O"]
        assert abs(m.pos[:2] - frag.pos).max() < 1e-3  # SDF precision
        assert [0, 1, 2] in m.bonds.tolist()


def test_cli_errors_are_clear(tiny_ckpt, tmp_path):
    p = run_cli("sample", "ckpt=/does/not/exist.ckpt", f"out={tmp_path / 'x.sdf'}", check=False)
    assert p.returncode == 2 and "/does/not/exist.ckpt" in p.stderr
    p = run_cli("sample", f"ckpt={tiny_ckpt}", "conditioning.gap=6000", f"out={tmp_path / 'x.sdf'}", check=False)
    assert p.returncode == 2 and "unconditional" in p.stderr


def test_incompatible_checkpoints_say_what_differs(tiny_ckpt, tmp_path):
    from moldiff.training.checkpoint import CheckpointError, load_model

    ck = torch.load(tiny_ckpt, weights_only=True)
    ck["hyper_parameters"]["format_version"] = 999
    torch.save(ck, tmp_path / "future.ckpt")
    with pytest.raises(CheckpointError, match="format 999"):
        load_model(tmp_path / "future.ckpt")
    with pytest.raises(CheckpointError, match="trained on dataset 'qm9_first300', but 'geom' was asked for"):
        load_model(tiny_ckpt, expect_dataset="geom")
    ck = torch.load(tiny_ckpt, weights_only=True)
    ck["hyper_parameters"]["model"]["num_layers"] = 5
    torch.save(ck, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(tmp_path / "bad.ckpt")


def test_interrupt_keeps_finished_molecules_and_resume_matches(tiny_ckpt, tmp_path, monkeypatch):
    from hydra import compose, initialize_config_module

    import moldiff.cli.sample as cli
    import moldiff.generate as gen

    def cfg_for(out):
        with initialize_config_module("moldiff.conf", version_base="1.3"):
            return compose("sample", overrides=[f"ckpt={tiny_ckpt}", "n_samples=6", "batch_size=2", "steps=3",
                                                 f"out={out}", "progress=false"])

    full = tmp_path / "full.sdf"
    cli.generate(cfg_for(full))
    real = interrupt_second_batch(gen, monkeypatch)
    part = tmp_path / "part.sdf"
    res = cli.generate(cfg_for(part))
    assert res["complete"] is False and res["n_molecules"] == 2
    assert len([m for m in Chem.SDMolSupplier(str(part), removeHs=False, sanitize=False)]) == 2
    monkeypatch.setattr(gen, "sample", real)
    res = cli.generate(cfg_for(part))  # resumes: same settings
    assert res["complete"] and res["n_molecules"] == 6
    assert part.read_bytes() == full.read_bytes()


def test_resume_with_other_settings_refuses_and_keeps_the_partial(tiny_ckpt, tmp_path, monkeypatch):
    from hydra import compose, initialize_config_module

    import moldiff.cli.sample as cli
    import moldiff.generate as gen

    out = tmp_path / "part.sdf"

    def cfg_for(*extra):
        with initialize_config_module("moldiff.conf", version_base="1.3"):
            return compose("sample", overrides=[f"ckpt={tiny_ckpt}", "n_samples=4", "batch_size=2", "steps=3",
                                                 f"out={out}", "progress=false", *extra])

    real = interrupt_second_batch(gen, monkeypatch)
    assert cli.generate(cfg_for())["n_molecules"] == 2
    monkeypatch.setattr(gen, "sample", real)
    partial = out.with_name(out.name + ".partial")
    before = partial.read_bytes()
    with pytest.raises(ValueError, match=r"part\.sdf\.partial holds 2 molecules.*steps: 3 then, 4 now"):
        cli.generate(cfg_for("steps=4"))
    assert partial.read_bytes() == before  # nothing lost
    res = cli.generate(cfg_for("steps=4", "resume=false"))  # explicit: start over
    assert res["complete"] and res["n_molecules"] == 4


# ------------------------------------------------------------------ the CLI never loses a result (shipped model)

TINY = ["n_samples=4", "steps=2", "batch_size=2", "progress=false"]


def _cfg(out, *extra):
    from hydra import compose, initialize_config_module

    with initialize_config_module("moldiff.conf", version_base="1.3"):
        return compose("sample", overrides=[*TINY, f"out={out}", *extra])


def _interrupt_at(module, monkeypatch, call):
    """Make ``module.sample`` raise KeyboardInterrupt on its ``call``-th call (1 = inside the first batch)."""
    real, calls = module.sample, {"n": 0}

    def interrupting(*a, **k):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(module, "sample", interrupting)
    return real


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("bad", [["num_atoms=0"], ["sampler=euler"], ["steps=2.5"], ["num_atoms=[20,5]"],
                                 ["inpaint.sdf=FRAG", "num_atoms=2"]])
def test_rejected_setting_keeps_an_existing_out(bad, tmp_path):
    from moldiff.chem.io import write_sdf
    from moldiff.chem.molecule import Molecule

    import moldiff.cli.sample as cli

    out = tmp_path / "o.sdf"
    cli.generate(_cfg(out))
    frag = tmp_path / "frag" / "frag.sdf"
    frag.parent.mkdir()
    write_sdf([Molecule(["C", "O"], [[0, 0, 0], [1.3, 0, 0]], [0, 0], [[0, 1, 2]])], frag)
    before = _files(tmp_path)
    with pytest.raises(ValueError):
        cli.generate(_cfg(out, *[b.replace("FRAG", str(frag)) for b in bad]))
    assert _files(tmp_path) == before and len(Chem.SDMolSupplier(str(out))) == 4


def test_rerun_of_a_finished_command_samples_nothing_and_an_interrupted_rerun_keeps_out(tmp_path, monkeypatch, capsys):
    import moldiff.cli.sample as cli
    import moldiff.generate as gen

    out = tmp_path / "o.sdf"
    assert cli.generate(_cfg(out))["n_molecules"] == 4
    done = out.read_bytes()
    real = gen.sample

    def must_not_sample(*a, **k):
        raise AssertionError("a finished output was sampled again")

    monkeypatch.setattr(gen, "sample", must_not_sample)
    res = cli.generate(_cfg(out))
    assert res["complete"] and res["n_molecules"] == 4 and out.read_bytes() == done
    assert "o.sdf is already complete (4 molecules with these settings)" in capsys.readouterr().out
    # sampling again on purpose (resume=false), interrupted after one batch: out stays complete
    monkeypatch.setattr(gen, "sample", real)
    _interrupt_at(gen, monkeypatch, 2)
    res = cli.generate(_cfg(out, "resume=false"))
    assert not res["complete"] and res["n_molecules"] == 2 and out.read_bytes() == done
    assert "2 finished molecules kept in" in capsys.readouterr().err
    # the same command again: out is complete, the leftover of the interrupted rerun is cleared
    monkeypatch.setattr(gen, "sample", must_not_sample)
    assert cli.generate(_cfg(out))["complete"] and out.read_bytes() == done
    assert sorted(_files(tmp_path)) == ["o.sdf", "o.sdf.run.json"]
    # other settings, interrupted: out untouched; resumed to the end: replaced by the new result
    monkeypatch.setattr(gen, "sample", real)
    _interrupt_at(gen, monkeypatch, 2)
    assert not cli.generate(_cfg(out, "steps=3"))["complete"] and out.read_bytes() == done
    monkeypatch.setattr(gen, "sample", real)
    res = cli.generate(_cfg(out, "steps=3"))
    assert res["complete"] and res["n_molecules"] == 4 and out.read_bytes() != done
    assert {m.GetProp("moldiff_steps") for m in Chem.SDMolSupplier(str(out), sanitize=False)} == {"3"}


def _main(capsys, *overrides):
    """``moldiff-sample overrides...`` in this process: ``(exit code, stderr)``."""
    code, _, err = run_sample_main(capsys, *overrides)
    return code, err


def test_ctrl_c_exits_130_and_never_leaves_an_empty_out(tmp_path, monkeypatch, capsys):
    import moldiff.generate as gen

    out = tmp_path / "o.sdf"
    real = _interrupt_at(gen, monkeypatch, 1)  # inside the first batch: nothing to keep
    code, err = _main(capsys, *TINY, f"out={out}")
    assert code == 130 and "interrupted: no molecule was finished" in err
    assert _files(tmp_path) == {}
    monkeypatch.setattr(gen, "sample", real)
    _interrupt_at(gen, monkeypatch, 2)
    code, err = _main(capsys, *TINY, f"out={out}")
    assert code == 130 and f"interrupted: 2 finished molecules kept in {out}" in err
    assert len(Chem.SDMolSupplier(str(out), sanitize=False)) == 2
    # an existing out of another run is left as it was by a run interrupted in its first batch
    monkeypatch.setattr(gen, "sample", real)
    assert _main(capsys, *TINY, f"out={out}")[0] == 0
    done = out.read_bytes()
    _interrupt_at(gen, monkeypatch, 1)
    code, err = _main(capsys, *TINY, f"out={out}", "seed=5")
    assert code == 130 and f"{out} is left as it was" in err
    assert out.read_bytes() == done and sorted(_files(tmp_path)) == ["o.sdf", "o.sdf.run.json"]


def _start_and_signal(args, state, sig):
    """Run ``moldiff-sample args`` and send it ``sig`` once ``state`` (the resume state) records a finished batch.

    Returns:
        ``(exit code, stderr, the resume state when signalled)``.
    """
    import json
    import signal
    import subprocess
    import sys
    import time

    # SIGINT back to its default in the child: a suite started in the background (nohup, `&`) ignores it, and
    # Python then never raises KeyboardInterrupt
    proc = subprocess.Popen([sys.executable, "-m", "moldiff.cli.sample", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline, saved = time.monotonic() + 600, {}
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                saved = json.loads(state.read_text())
            except (OSError, ValueError):
                saved = {}
            if saved.get("count", 0) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be signalled"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err, saved


def test_killed_run_resumes_without_repeating_a_molecule_and_ctrl_c_exits_130(tmp_path):
    """A real process: SIGKILL after the first batch is on disk, then a rerun continues from the partial file;
    SIGINT during a deliberate resampling of the finished result exits 130 and leaves the result whole."""
    import signal

    from moldiff.chem.io import read_sdf

    out = tmp_path / "k.sdf"
    state = tmp_path / "k.sdf.partial.json"
    # 20 batches: enough that the SIGINT below lands while batches are still being sampled, even on a loaded machine
    args = ["n_samples=40", "batch_size=2", "steps=10", "progress=false", f"out={out}"]
    code, _, saved = _start_and_signal(args, state, signal.SIGKILL)
    assert code == -signal.SIGKILL and not out.exists() and saved["batches_done"] >= 1
    kept = (tmp_path / "k.sdf.partial").read_bytes()[: saved["bytes"]]
    run_cli("sample", *args)
    mols = read_sdf(out)
    assert [m.name for m in mols] == [f"moldiff_{i:06d}" for i in range(40)]
    assert out.read_bytes().startswith(kept)  # the killed run's molecules were kept, not sampled again
    assert not state.exists()
    done = out.read_bytes()
    code, err, _ = _start_and_signal([*args, "resume=false"], state, signal.SIGINT)
    assert code == 130, err
    assert "finished molecules kept in" in err and f"({out} is left as it was)" in err
    assert out.read_bytes() == done
    p = run_cli("sample", *args)
    assert "is already complete (40 molecules" in p.stdout and out.read_bytes() == done


def test_writer_cuts_a_torn_batch_and_publishes_atomically(tmp_path):
    from moldiff.chem.molecule import Molecule
    from moldiff.sampling.writer import ResumableSDFWriter

    def mol(i):
        return Molecule(["C", "O"], [[0, 0, 0], [1.2 + i / 10, 0, 0]], [0, 0], [[0, 1, 2]], {}, f"m{i}")

    out, settings = tmp_path / "w.sdf", {"a": 1}
    w = ResumableSDFWriter(out, settings)
    w.check()
    w.open()
    w.append([mol(0), mol(1)])
    with open(w.partial, "a") as fh:  # a batch cut off by a kill: written, never recorded
        fh.write("garbage of a torn record\n")
    again = ResumableSDFWriter(out, settings)
    again.check()
    assert again.resumed and again.count == 2 and again.batches_done == 1
    again.open()
    again.append([mol(2)])
    assert again.finalize(True) == out and not again.partial.exists() and not again.state.exists()
    assert [m.GetProp("_Name") for m in Chem.SDMolSupplier(str(out), sanitize=False)] == ["m0", "m1", "m2"]
    assert ResumableSDFWriter(out, settings).already_complete
    assert not ResumableSDFWriter(out, {"a": 2}).already_complete
    assert not ResumableSDFWriter(out, settings, resume=False).already_complete
    out.write_text(out.read_text() + "\n")  # edited by hand: no longer the recorded result
    assert not ResumableSDFWriter(out, settings).already_complete


def test_writer_interrupted_twice_grows_its_own_copy_but_never_touches_another_file(tmp_path):
    from moldiff.chem.molecule import Molecule
    from moldiff.sampling.writer import ResumableSDFWriter

    def mol(i):
        return Molecule(["C", "O"], [[0, 0, 0], [1.2 + i / 10, 0, 0]], [0, 0], [[0, 1, 2]], {}, f"m{i}")

    def resumed(out):
        w = ResumableSDFWriter(out, {"a": 1})
        w.check()
        w.open()
        return w

    def names(path):
        return [m.GetProp("_Name") for m in Chem.SDMolSupplier(str(path), sanitize=False)]

    out = tmp_path / "w.sdf"
    w = resumed(out)
    w.append([mol(0)])
    assert w.finalize(False) == out and names(out) == ["m0"]
    w = resumed(out)
    w.append([mol(1)])
    assert w.finalize(False) == out and names(out) == ["m0", "m1"]  # its own earlier copy: replaced
    out.write_text(out.read_text().replace("m0", "x0"))  # now someone else's file
    w = resumed(out)
    w.append([mol(2)])
    assert w.finalize(False) == w.partial and names(out) == ["x0", "m1"]
    assert names(w.partial) == ["m0", "m1", "m2"]


def _oracle(target: Batch, num_types=3, num_charges=3, num_bonds=4, scale=50.0):
    """A denoiser that always predicts ``target`` exactly (its zero-CoM coordinates, one-hot classes)."""
    from moldiff.utils.geometry import zero_com

    def f(pos, h, ei, e, batch, t, G, **kw):
        x0 = zero_com(target.pos.to(pos), batch, G)
        la = torch.nn.functional.one_hot(target.atom_types, num_types).to(pos) * scale
        lc = torch.nn.functional.one_hot(target.charges, num_charges).to(pos) * scale
        lb = torch.nn.functional.one_hot(target.bond_types, num_bonds).to(pos) * scale
        return x0, la, lc, lb

    return f


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
@pytest.mark.parametrize("steps", [1, 2, 25])
def test_an_oracle_denoiser_is_reproduced_exactly(graph_factory, sampler, steps):
    """Whatever the noise and step count, a denoiser that knows the molecule ends exactly on it."""
    from moldiff.utils.geometry import zero_com

    diff, _ = toy_model()
    target = graph_factory(num_graphs=3, lo=4, hi=4, num_types=3, num_charges=3, seed=5)
    counts = torch.full((3,), 4)
    out = sample(diff, _oracle(target), counts, steps=steps, sampler=sampler, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.edge_index, target.edge_index)
    assert torch.allclose(out.pos, zero_com(target.pos, target.batch, 3), atol=1e-5)
    for k in ("atom_types", "charges", "bond_types"):
        assert torch.equal(out[k], target[k])


def test_time_grid_spacing():
    from moldiff.sampling.sampler import time_grid

    assert torch.equal(time_grid(4), torch.linspace(1.0, 0.0, 5))
    g = time_grid(4, power=2.0)
    assert torch.allclose(g, torch.tensor([1.0, 0.5625, 0.25, 0.0625, 0.0]))
    assert (g[1:] < g[:-1]).all()
    with pytest.raises(ValueError, match="power"):
        time_grid(4, power=0.0)


def test_temperature_sharpens_the_intermediate_categorical_draws():
    """The states fed to the second call were drawn with the first call's probabilities at temperature T:
    with T < 1 more of them take the most probable class; T = 1 is the default exactly."""
    diff, _ = toy_model()
    counts = torch.full((300,), 5)
    seen = []

    def fixed_logits(pos, h, ei, e, batch, t, G, **kw):
        seen.append(h[:, :3].argmax(-1).clone())  # noisy atom-type states given to the network
        la = torch.tensor([1.0, 0.5, 0.0]).expand(pos.shape[0], 3)
        return torch.zeros_like(pos), la, torch.zeros(pos.shape[0], 3), torch.zeros(ei.shape[1], 4)

    share = {}
    for T in (1.0, 0.1):
        seen.clear()
        sample(diff, fixed_logits, counts, steps=2, temperature=T, generator=torch.Generator().manual_seed(0))
        share[T] = (seen[1] == 0).float().mean().item()
    assert share[0.1] > share[1.0] + 0.05
    a = sample(diff, fixed_logits, counts[:4], steps=3, generator=torch.Generator().manual_seed(1))
    b = sample(diff, fixed_logits, counts[:4], steps=3, temperature=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.pos, b.pos) and torch.equal(a.atom_types, b.atom_types)
    with pytest.raises(ValueError, match="temperature"):
        sample(diff, fixed_logits, counts[:2], steps=2, temperature=0.0)


def test_cli_ckpt_takes_a_shipped_models_name(tmp_path):
    """``ckpt=qm9_fast`` is the shipped few-step model (sha256-checked), not a file name; the API agrees."""
    import moldiff.api
    from moldiff.training.checkpoint import SHIPPED

    assert moldiff.api.PRETRAINED == SHIPPED
    out = tmp_path / "f.sdf"
    run_cli("sample", "ckpt=qm9_fast", "n_samples=2", "steps=3", "decode=argmax", f"out={out}", "progress=false")
    mols = [m for m in Chem.SDMolSupplier(str(out), removeHs=False, sanitize=False)]
    assert len(mols) == 2 and mols[0].GetProp("moldiff_checkpoint") == "qm9_fast.pt"


def test_few_step_notes_name_the_distilled_model_and_its_settings(tiny_ckpt):
    """10 to 50 steps with the undistilled shipped model print a note naming the distilled one; 20 to 25 steps
    with the distilled model a note naming its recorded ``time_power=1.5 temperature=0.25`` when other values
    were given; other step counts and models without recorded settings get no note."""
    from omegaconf import OmegaConf

    from moldiff.generate import few_step_hint
    from moldiff.training.checkpoint import SHIPPED, load_model, pretrained_path

    base, fast = (load_model(pretrained_path(SHIPPED[n])) for n in ("qm9_base", "qm9"))
    other = load_model(tiny_ckpt)
    cfg = lambda steps, power=1.0, temp=1.0: OmegaConf.create({"steps": steps, "time_power": power, "temperature": temp})  # noqa: E731
    assert few_step_hint(cfg(25), base) == ("note: for steps=25, the default model (no ckpt=; the shipped model "
                                            "distilled for few steps) gives more stable molecules than this one")
    assert "the default model (no ckpt=;" in few_step_hint(cfg(50, 2.0), base)
    assert few_step_hint(cfg(100), base) is None and few_step_hint(cfg(5), base) is None
    assert few_step_hint(cfg(25, 2.0), fast) == ("note: for steps=25 this model records time_power=1.5 temperature=0.25 "
                                                 "(left out, or null, they are used), which give it more stable molecules")
    assert few_step_hint(cfg(20, 1.5, 0.25), fast) is None and few_step_hint(cfg(30), fast) is None
    assert few_step_hint(cfg(25), other) is None


def test_sampler_settings_left_out_are_the_models_own(tiny_ckpt):
    """time_power / temperature null (the default): the values the model file records for the step count
    (the default QM9 model: 1.5 and 0.25 at 20 to 25 steps), else 1 and 1; given values are kept."""
    from omegaconf import OmegaConf

    from moldiff.generate import resolve_sampler_settings
    from moldiff.training.checkpoint import SHIPPED, load_model, pretrained_path

    fast, base = (load_model(pretrained_path(SHIPPED[n])) for n in ("qm9", "qm9_base"))
    other = load_model(tiny_ckpt)
    assert fast.sampler_settings == [{"min_steps": 20, "max_steps": 25, "time_power": 1.5, "temperature": 0.25}]
    assert base.sampler_settings == [] and other.sampler_settings == []

    def resolved(model, steps, power=None, temp=None):
        cfg = OmegaConf.create({"steps": steps, "time_power": power, "temperature": temp})
        resolve_sampler_settings(cfg, model)
        return float(cfg.time_power), float(cfg.temperature)

    assert resolved(fast, 25) == resolved(fast, 20) == (1.5, 0.25)
    assert resolved(fast, 19) == resolved(fast, 26) == resolved(fast, 100) == (1.0, 1.0)
    assert resolved(fast, 25, power=2.0) == (2.0, 0.25) and resolved(fast, 25, temp=1.0) == (1.5, 1.0)
    assert resolved(base, 25) == resolved(other, 25) == (1.0, 1.0)


def test_cli_records_the_resolved_sampler_settings(tmp_path):
    """moldiff-sample steps=20 with the default model samples on its recorded settings and writes them to the SD
    tags and the run record; given ones win."""
    import json

    out, given = tmp_path / "a.sdf", tmp_path / "b.sdf"
    run_cli("sample", "n_samples=1", "steps=20", "decode=argmax", f"out={out}", "progress=false")
    run_cli("sample", "n_samples=1", "steps=20", "time_power=1", "decode=argmax", f"out={given}", "progress=false")
    for path, power, temp in ((out, 1.5, 0.25), (given, 1.0, 0.25)):
        mol = next(iter(Chem.SDMolSupplier(str(path), removeHs=False, sanitize=False)))
        assert (float(mol.GetProp("moldiff_time_power")), float(mol.GetProp("moldiff_temperature"))) == (power, temp)
        run = json.loads(path.with_name(path.name + ".run.json").read_text())
        settings = run.get("settings", run)
        assert (settings["time_power"], settings["temperature"]) == (power, temp)
