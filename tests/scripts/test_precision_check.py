"""scripts/precision_check.py: the rotation-aligned RMS error of its "aligned" columns."""

import importlib.util

import pytest
import torch

from tests.conftest import REPO
from moldiff.utils.geometry import zero_com


def load():
    spec = importlib.util.spec_from_file_location("precision_check", REPO / "scripts" / "precision_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def random_rotation(gen):
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.linalg.det(q) > 0 else -q


def test_aligned_rms_sets_the_overall_rotation_aside():
    pc = load()
    gen = torch.Generator().manual_seed(0)
    batch = torch.tensor([0] * 6 + [1] * 9)
    ref = zero_com(torch.randn(15, 3, generator=gen, dtype=torch.float64), batch, 2)
    rotated = torch.cat([ref[batch == g] @ random_rotation(gen).T for g in range(2)])
    # the Kabsch RMSD comes from sum(a^2) + sum(b^2) - 2 sum(s): rounding of ~1e-16 leaves up to ~1e-8
    assert pc.aligned_rms(rotated, ref, batch, 2) < 1e-6
    assert float(((rotated - ref) ** 2).sum(-1).mean().sqrt()) > 0.1
    noisy = zero_com(ref + 0.01 * torch.randn(15, 3, generator=gen, dtype=torch.float64), batch, 2)
    plain = float(((noisy - ref) ** 2).sum(-1).mean().sqrt())
    assert 0 < pc.aligned_rms(noisy, ref, batch, 2) <= plain + 1e-12
    mirrored = ref * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)  # a reflection is not a rotation
    assert pc.aligned_rms(mirrored, ref, batch, 2) > 0.05


@pytest.mark.qm9
def test_check_runs_under_bf16_autocast(data_root):
    """--autocast-bf16: the same check with the network's matrix products in bf16; the trivial columns stay fp32."""
    pc = load()
    batch = pc.first_test_molecules("qm9_first300", str(data_root), 8)
    full = pc.check(str(REPO / "moldiff/pretrained/qm9_default.pt"), batch, times=(0.01,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = pc.check(str(REPO / "moldiff/pretrained/qm9_default.pt"), batch, times=(0.01,))
    assert half[0]["trivial_x0_rms"] == full[0]["trivial_x0_rms"]
    assert half[0]["model_x0_rms"] != full[0]["model_x0_rms"]  # bf16 arithmetic did run
    assert abs(half[0]["model_x0_rms"] - full[0]["model_x0_rms"]) < 0.2 * full[0]["model_x0_rms"]


def test_imports_without_rdkit():
    """The GPU machine has no RDKit: the check must run there on the exported weights."""
    import subprocess
    import sys

    code = ("import builtins, importlib.util\n"
            "real = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    if name.split('.')[0] == 'rdkit':\n"
            "        raise ImportError('no rdkit')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\n"
            f"spec = importlib.util.spec_from_file_location('pc', {str(REPO / 'scripts' / 'precision_check.py')!r})\n"
            "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
            "print('ok', callable(mod.check))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and "ok True" in proc.stdout, proc.stderr[-2000:]
