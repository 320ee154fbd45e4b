"""``moldiff-sample`` refuses bad input: one line on stderr naming what is wrong, exit code 2, and every
file already there left exactly as it was (output paths are checked before any model or sampling work).

Most cases call the entry point in-process (fast); the warnings are checked through a real subprocess.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import moldiff.generate as gen
from moldiff.training.checkpoint import default_checkpoint
from tests.conftest import interrupt_second_batch, run_sample_main

TINY = ["n_samples=4", "steps=2", "batch_size=2", "progress=false"]


run_main = run_sample_main


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A folder holding ``o.sdf``, the finished result of ``moldiff-sample`` with the tiny settings."""
    folder = tmp_path_factory.mktemp("finished")
    proc = subprocess.run([sys.executable, "-m", "moldiff.cli.sample", *TINY, f"out={folder / 'o.sdf'}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return folder


@pytest.fixture
def work(finished, tmp_path) -> Path:
    """A fresh copy of the finished result, plus a few input files for the bad cases."""
    d = tmp_path / "w"
    shutil.copytree(finished, d)
    torch.save(torch.zeros(3), d / "tensor.pt")
    (d / "random.ckpt").write_bytes(os.urandom(4096))
    shipped = default_checkpoint().read_bytes()
    (d / "truncated.ckpt").write_bytes(shipped[: len(shipped) // 2])
    (d / "file.txt").write_text("not a folder\n")
    (d / "folder").mkdir()
    from moldiff.chem.io import write_sdf
    from moldiff.chem.molecule import Molecule

    frag = Molecule(["C", "C", "O"], [[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [2.2, 1.2, 0.0]], [0, 0, 0],
                    [[0, 1, 1], [1, 2, 1]])
    write_sdf([frag], d / "frag.sdf")
    return d


BAD = [
    (["n_samples=0"], ["n_samples", "got 0"]),
    (["steps=0"], ["steps", "got 0"]),
    (["steps=2.5"], ["steps", "whole number", "2.5"]),
    (["batch_size=-1"], ["batch_size", "got -1"]),
    (["seed=abc"], ["seed", "'abc'"]),
    (["num_atoms=[20,5]"], ["num_atoms", "[20, 5]"]),
    (["num_atoms=0"], ["num_atoms", "got 0"]),
    (["sampler=euler"], ["sampler='euler'", "ancestral", "ddim"]),
    (["time_power=0"], ["time_power must be a number > 0", "got 0"]),
    (["temperature=-1"], ["temperature must be a number > 0", "got -1"]),
    (["conditioning.gap=abc"], ["conditioning.gap", "'abc'"]),
    (["resume=maybe"], ["resume must be true or false"]),
    (["out=folder"], ["out=folder is an existing folder"]),
    (["out=file.txt/o.sdf"], ["out=file.txt/o.sdf", "file.txt is not a folder"]),
    (["out="], ["out must be a file path"]),
    (["ckpt=tensor.pt"], ["tensor.pt is not a moldiff checkpoint"]),
    (["ckpt=random.ckpt"], ["ckpt=random.ckpt cannot be read", "truncated, corrupted or not a PyTorch checkpoint"]),
    (["ckpt=truncated.ckpt"], ["ckpt=truncated.ckpt cannot be read"]),
    (["ckpt=missing.ckpt"], ["missing.ckpt does not exist"]),
    (["inpaint.sdf=frag.sdf", "num_atoms=3"], ["num_atoms=3 leaves no atom to grow", "frag.sdf has 3 atoms", ">= 4"]),
    (["inpaint.sdf=frag.sdf", "num_atoms=[2,9]"], ["num_atoms=[2, 9] leaves no atom to grow"]),
    (["out=folder", "ckpt=missing.ckpt"], ["out=folder is an existing folder"]),  # outputs are checked first
    (["predictor_guidance.scale=-1"], ["predictor_guidance.scale must be >= 0", "-1"]),
    (["predictor_guidance.interval=[0.6,0.2]"], ["predictor_guidance.interval must be [lo, hi]", "[0.6, 0.2]"]),
    (["predictor_guidance.max_step=0"], ["predictor_guidance.max_step", "got 0"]),
    (["predictor_guidance.weights={alpha:-1}"], ["predictor_guidance.weights.alpha must be >= 0", "-1"]),
    (["predictor_guidance.type_scale=-2"], ["predictor_guidance.type_scale must be >= 0", "-2"]),
    (["predictor_guidance.max_logit_step=0"], ["predictor_guidance.max_logit_step", "got 0"]),
    (["conditioning.mu=2", "predictor_guidance.predictor=tensor.pt"], ["predictor_guidance.predictor=tensor.pt",
                                                                      "not a moldiff property-predictor checkpoint"]),
    (["conditioning.mu=2", "predictor_guidance.predictor=missing.pt"], ["predictor_guidance.predictor=missing.pt",
                                                                       "does not exist"]),
]


@pytest.mark.parametrize("bad,words", BAD, ids=[" ".join(b) for b, _ in BAD])
def test_bad_input_is_one_line_and_touches_nothing(bad, words, work, capsys, monkeypatch):
    monkeypatch.chdir(work)
    before = snapshot(work)
    code, _, err = run_main(capsys, *TINY, "out=o.sdf", *bad)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    for w in words:
        assert w in err, (w, err)
    assert snapshot(work) == before  # o.sdf whole, no partial file, no new folder


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc (a folder nobody can write in)")
def test_unwritable_output_folder(work, capsys, monkeypatch):
    monkeypatch.chdir(work)
    code, _, err = run_main(capsys, *TINY, "out=/proc/moldiff_out/o.sdf")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "out=/proc/moldiff_out/o.sdf: cannot write in folder /proc" in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="file permissions do not bind root")
def test_read_only_output_folder(work, capsys, monkeypatch):
    monkeypatch.chdir(work)
    ro = work / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, _, err = run_main(capsys, *TINY, "out=ro/sub/o.sdf")
    finally:
        ro.chmod(0o700)
    assert code == 2 and "cannot write in folder ro" in err and not (ro / "sub").exists()


def test_missing_output_folder_is_created(work, capsys, monkeypatch):
    """A folder that does not exist yet but can be made is created (``out=demo/mols.sdf`` in a fresh checkout)."""
    monkeypatch.chdir(work)
    code, out, err = run_main(capsys, "n_samples=2", "steps=1", "batch_size=2", "progress=false", "out=new/sub/m.sdf")
    assert code == 0, err
    assert "wrote 2 molecules to new/sub/m.sdf" in out


def test_resume_with_another_n_samples_is_a_settings_difference(work, capsys, monkeypatch):
    monkeypatch.chdir(work)
    real = interrupt_second_batch(gen, monkeypatch)
    code, _, err = run_main(capsys, *TINY, "out=part.sdf")
    assert code == 130 and "interrupted: 2 finished molecules kept in part.sdf" in err
    monkeypatch.setattr(gen, "sample", real)
    before = snapshot(work)
    code, _, err = run_main(capsys, *TINY, "out=part.sdf", "n_samples=6")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "part.sdf.partial holds 2 molecules" in err and "n_samples: 4 then, 6 now" in err
    assert snapshot(work) == before


def test_settings_the_model_cannot_honour_warn_in_one_line_each(tmp_path):
    """Outside the training histogram (QM9: at most 29 atoms) and guidance on an unconditional model."""
    proc = subprocess.run([sys.executable, "-m", "moldiff.cli.sample", "n_samples=1", "steps=1", "progress=false",
                           "num_atoms=40", "guidance_scale=2", f"out={tmp_path / 'w.sdf'}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith("warning: num_atoms=40 is outside the training histogram of this model (")
    assert lines[1] == "warning: guidance_scale=2 has no effect: this model is unconditional"
    assert "wrote 1 molecules" in proc.stdout


def test_load_model_rejects_a_saved_tensor(tmp_path):
    import torch

    from moldiff.training.checkpoint import CheckpointError, load_model

    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="not a moldiff checkpoint"):
        load_model(path)
