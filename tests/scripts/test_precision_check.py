"""scripts/precision_check.py: the rotation-aligned RMS error of its "aligned" columns."""

import pytest
import torch

from tests.conftest import REPO, load_script
from moldiff.utils.geometry import zero_com


def load():
    return load_script("precision_check.py")


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


def chain_batch(n: int = 6, seed: int = 0):
    """One zig-zag chain molecule of ``n`` atoms, bonds ``k-(k+1)``, fully connected edges as in training."""
    from torch_geometric.data import Batch, Data

    from moldiff.utils.graph import full_edge_index

    gen = torch.Generator().manual_seed(seed)
    pos = torch.stack([torch.tensor([1.3 * k, 0.8 * (k % 2), 0.0]) for k in range(n)]) + 0.1 * torch.randn(n, 3, generator=gen)
    ei = full_edge_index(n)
    bonds = ((ei[0] - ei[1]).abs() == 1).long()
    return Batch.from_data_list([Data(pos=pos, edge_index=ei, bond_types=bonds, num_nodes=n)])


def test_decompose_parts_are_orthogonal_and_add_up():
    pc = load()
    batch = chain_batch()
    x0 = zero_com(batch.pos, batch.batch, 1)
    (bases,) = pc.internal_bases(x0, batch, 1)
    assert bases["bonds"].shape[1] == 5 and bases["angles"].shape[1] == 4 and bases["rotation"].shape[1] == 3
    stacked = torch.cat([bases["bonds"], bases["angles"], bases["rotation"]], 1)
    assert torch.allclose(stacked.T @ stacked, torch.eye(12, dtype=torch.float64), atol=1e-10)
    err = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    parts = pc.decompose(err, [bases], batch)
    whole = float(((err - err.mean(0)) ** 2).sum(-1).mean())
    assert abs(sum(v ** 2 for v in parts.values()) - whole) < 1e-10


def test_decompose_puts_rotations_and_torsions_outside_bonds_and_angles():
    pc = load()
    batch = chain_batch()
    x0 = zero_com(batch.pos, batch.batch, 1).double()
    (bases,) = pc.internal_bases(x0.float(), batch, 1)
    spin = torch.cross(torch.tensor([0.3, -0.2, 0.9], dtype=torch.float64).expand(6, 3), x0, dim=-1)
    parts = pc.decompose(spin, [bases], batch)
    assert parts["rotation"] > 0.1 and max(parts["bonds"], parts["angles"], parts["rest"]) < 1e-6 * parts["rotation"]
    # a small twist of atoms 3..5 about the bond 2-3 keeps every bond length and angle: torsion (and rotation) only
    axis = (x0[3] - x0[2]) / (x0[3] - x0[2]).norm()
    twist = torch.zeros_like(x0)
    twist[3:] = torch.cross(axis.expand(3, 3), x0[3:] - x0[2], dim=-1)
    parts = pc.decompose(twist, [bases], batch)
    assert parts["rest"] > 0.05 and max(parts["bonds"], parts["angles"]) < 1e-6
    # lengthening the last bond alone (atoms 4 and 5 pulled apart along it) is a bond-length change
    stretch = torch.zeros_like(x0)
    stretch[5] = (x0[5] - x0[4]) / (x0[5] - x0[4]).norm()
    stretch[4] = -stretch[5]
    parts = pc.decompose(stretch, [bases], batch)
    assert abs(parts["bonds"] - float((stretch ** 2).sum(-1).mean().sqrt())) < 1e-10


@pytest.mark.qm9
def test_check_with_parts(data_root):
    """--decompose adds each estimate's parts, whose squares add up to its x0 RMS error."""
    pc = load()
    batch = pc.first_test_molecules("qm9_first300", str(data_root), 6)
    (row,) = pc.check(str(REPO / "moldiff/pretrained/qm9_default.pt"), batch, times=(0.01,), parts=True)
    for name in ("model", "trivial"):
        p = row[f"{name}_parts"]
        assert abs(sum(v ** 2 for v in p.values()) ** 0.5 - row[f"{name}_x0_rms"]) < 1e-4
    assert row["model_parts"]["bonds"] < 0.5 * row["trivial_parts"]["bonds"]
