"""Shared fixtures: seeding, a seeded random-graph factory, a tiny QM9 cache, a tiny trained checkpoint."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch

from moldiff.data.graph import make_data

REPO = Path(__file__).resolve().parents[1]
HAS_QM9PACK = importlib.util.find_spec("qm9pack") is not None


def pytest_collection_modifyitems(config, items):
    gpu = torch.cuda.is_available()
    for item in items:
        if "gpu" in item.keywords and not gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        if "qm9" in item.keywords and not HAS_QM9PACK and not os.environ.get("MOLDIFF_TEST_DATA_ROOT"):
            item.add_marker(pytest.mark.skip(reason="needs qm9pack"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def random_graphs(num_graphs: int = 3, lo: int = 3, hi: int = 12, num_types: int = 5, num_charges: int = 3,
                  num_bonds: int = 4, seed: int = 0, dtype=torch.float32) -> Batch:
    """A seeded batch of random fully connected molecule graphs (random symmetric bond classes)."""
    g = torch.Generator().manual_seed(seed)
    data = []
    for _ in range(num_graphs):
        n = int(torch.randint(lo, hi + 1, (1,), generator=g))
        pos = torch.randn(n, 3, generator=g) * 1.5
        types = torch.randint(0, num_types, (n,), generator=g)
        charges = torch.randint(0, num_charges, (n,), generator=g)
        iu = torch.triu_indices(n, n, 1)
        cls = torch.randint(0, num_bonds, (iu.shape[1],), generator=g)
        keep = cls > 0
        d = make_data(pos, types, charges, iu[0][keep], iu[1][keep], cls[keep])
        d.pos = d.pos.to(dtype)
        data.append(d)
    return Batch.from_data_list(data)


@pytest.fixture
def graph_factory():
    return random_graphs


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data root holding the first 300 QM9 molecules as cache ``qm9_first300``.

    ``MOLDIFF_TEST_DATA_ROOT`` names an already prepared root instead (a GPU machine without RDKit)."""
    given = os.environ.get("MOLDIFF_TEST_DATA_ROOT")
    if given and (Path(given) / "qm9_first300").is_dir():
        return Path(given)
    if not HAS_QM9PACK:
        pytest.skip("needs qm9pack")
    from moldiff.data.registry import prepare_dataset

    root = tmp_path_factory.mktemp("data")
    prepare_dataset("qm9", root=str(root), limit=300, workers=1)
    return root


def run_cli(module: str, *overrides: str, cwd: Path | None = None, check: bool = True, env: dict | None = None,
            timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m moldiff.cli.<module> overrides...`` and return the finished process."""
    e = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", f"moldiff.cli.{module}", *overrides], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"moldiff.cli.{module} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def run_script(name: str, *args: str, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``scripts/<name> args...``; with ``check`` it must succeed."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], capture_output=True, text=True,
                          timeout=timeout)
    assert not check or proc.returncode == 0, f"scripts/{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def load_script(name: str):
    """``scripts/<name>`` imported as a module (its ``main`` not run), to test its functions."""
    spec = importlib.util.spec_from_file_location(Path(name).stem, REPO / "scripts" / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TINY_TRAIN = [
    "model=tiny", "data.limit=300", "data.subset=64", "data.batch_size=16", "data.val_size=16",
    "trainer.max_steps=8", "trainer.log_every_n_steps=2", "trainer.enable_progress_bar=false",
    "checkpoint.every_n_train_steps=4", "optim.warmup_steps=2", "ema.decay=0.9",
]


@pytest.fixture(scope="session")
def tiny_ckpt(data_root, tmp_path_factory) -> Path:
    """A checkpoint of the tiny model trained for a few steps (through the real CLI)."""
    run = tmp_path_factory.mktemp("run")
    run_cli("train", *TINY_TRAIN, f"data.root={data_root}", f"run_dir={run}")
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.exists()
    return ckpt


def interrupt_second_batch(module, monkeypatch):
    """Make ``module.sample`` (the sampler as ``moldiff.generate`` calls it) raise KeyboardInterrupt on its
    second call (as Ctrl-C would); returns the real one."""
    real = module.sample
    calls = {"n": 0}

    def interrupting(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(module, "sample", interrupting)
    return real


def run_sample_main(capsys, *overrides: str) -> tuple[int, str, str]:
    """``moldiff-sample overrides...`` in this process: ``(exit code, stdout, stderr)``."""
    import moldiff.cli.sample as cli

    argv, code = sys.argv, 0
    sys.argv = ["moldiff-sample", *overrides]
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err
