"""Clean-input precision of a model's coordinate output: how well it recovers x0 from barely noisy input.

For ``--n`` QM9 test molecules, each time ``t`` noises the clean coordinates (the types, charges and
bonds kept clean) and reports the RMS error of the predicted x0 (Angstrom, over all atoms) and the mean
absolute error of its bond lengths (over the true bonds), beside the trivial estimate
``x_t / sqrt(alpha_bar(t))``. A model that cannot make small corrections does worse than the trivial
estimate at small ``t``. The "aligned" columns rotate each predicted molecule onto the clean one first
(Kabsch): the noise's share along the molecule's overall rotation is not recoverable by any denoiser.

  python scripts/precision_check.py                          # the shipped model
  python scripts/precision_check.py --ckpt old.pt --ckpt moldiff/pretrained/qm9_default.pt --json p.json
  python scripts/precision_check.py --autocast-bf16          # the network run under bf16 autocast (as GPU training)
  python scripts/precision_check.py --decompose               # where the error lies: bonds, angles, rotation, rest

``--decompose`` splits each error vector (per molecule, linearised at the clean geometry) into orthogonal
parts: along the bond lengths (the gradients of every bonded distance), along the angles (the gradients of
the distances between atoms two bonds apart, the bond part removed), along the molecule's overall rotation,
and the rest (torsions, out-of-plane bends). For the noise itself (the trivial estimate) it also gives
what a denoiser that knew every bond length exactly, or every bond length and angle, could reach: the
noise left outside those parts.

Prints one markdown table per model and, with ``--json``, writes all figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from moldiff.data.batching import FullGraphCollater  # noqa: E402
from moldiff.data.cache import load_cache  # noqa: E402
from moldiff.diffusion.joint import NoisyGraph  # noqa: E402
from moldiff.training.checkpoint import load_model  # noqa: E402
from moldiff.utils.geometry import superposed_rmsd, zero_com  # noqa: E402

TIMES = (0.001, 0.01, 0.05, 0.1)


def aligned_rms(est: torch.Tensor, ref: torch.Tensor, batch: torch.Tensor, G: int) -> float:
    """RMS error over all atoms after superposing each molecule of ``est`` onto ``ref`` (Kabsch, proper
    rotations only: ``superposed_rmsd``): the error left once the molecule's overall orientation, which no
    denoiser can recover from noise, is set aside."""
    sq = sum(int(m.sum()) * superposed_rmsd(est[m].numpy(), ref[m].numpy()) ** 2 for m in (batch == g for g in range(G)))
    return (sq / len(batch)) ** 0.5


def first_test_molecules(cache_name: str = "qm9", data_root: str | None = None, n: int = 200):
    """The first ``n`` test molecules of a prepared cache as one batch (clean types, charges and bonds)."""
    cache = load_cache(cache_name, data_root)
    return FullGraphCollater(cache)(cache.indices("test")[:n])


def internal_bases(x0: torch.Tensor, batch, G: int) -> list[dict[str, torch.Tensor]]:
    """Per molecule, orthonormal bases ``[3n, k]`` (float64, COM-free coordinates flattened atom-major) of
    the bond-length directions (``bonds``), the angle directions (distances between atoms two bonds apart,
    ``bonds`` projected out: ``angles``) and the overall rotation (``rotation``, orthogonal to both as every
    distance is rotation invariant), at the clean geometry."""
    i, j = batch.edge_index
    bonded = (batch.bond_types > 0) & (i < j)
    bi, bj = i[bonded], j[bonded]
    out = []
    for g in range(G):
        lo, hi = int(batch.ptr[g]), int(batch.ptr[g + 1])
        n = hi - lo
        x = x0[lo:hi].double()
        sel = (bi >= lo) & (bi < hi)
        pairs = torch.stack([bi[sel], bj[sel]], 1) - lo
        adj = torch.zeros(n, n, dtype=torch.bool)
        adj[pairs[:, 0], pairs[:, 1]] = adj[pairs[:, 1], pairs[:, 0]] = True
        two = (adj.double() @ adj.double() > 0) & ~adj & ~torch.eye(n, dtype=torch.bool)
        second = torch.triu(two, 1).nonzero()

        def rows(pp: torch.Tensor) -> torch.Tensor:
            r = torch.zeros(len(pp), n, 3, dtype=torch.float64)
            if len(pp):
                u = x[pp[:, 0]] - x[pp[:, 1]]
                u = u / u.norm(dim=-1, keepdim=True)
                k = torch.arange(len(pp))
                r[k, pp[:, 0]], r[k, pp[:, 1]] = u, -u
            return r.reshape(len(pp), 3 * n).T

        def basis(m: torch.Tensor) -> torch.Tensor:
            if m.shape[1] == 0:
                return m
            u, sv, _ = torch.linalg.svd(m, full_matrices=False)
            return u[:, sv > 1e-8 * sv.max()]

        xc = x - x.mean(0)
        rot = torch.stack([torch.cross(torch.eye(3, dtype=torch.float64)[a].expand(n, 3), xc, dim=-1).reshape(-1)
                           for a in range(3)], 1)
        b = basis(rows(pairs))
        a = rows(second)
        a = basis(a - b @ (b.T @ a))
        out.append({"bonds": b, "angles": a, "rotation": basis(rot)})
    return out


def decompose(err: torch.Tensor, bases: list[dict], batch) -> dict[str, float]:
    """RMS per atom (Angstrom) of the parts of ``err [N,3]`` in each basis of :func:`internal_bases`, and of
    the rest; the squares add up to the whole error's."""
    sq = {"bonds": 0.0, "angles": 0.0, "rotation": 0.0, "rest": 0.0}
    for g, bs in enumerate(bases):
        e = err[int(batch.ptr[g]):int(batch.ptr[g + 1])].double()
        e = (e - e.mean(0)).reshape(-1)
        total = float(e @ e)
        for k, b in bs.items():
            part = float(((b.T @ e) ** 2).sum())
            sq[k] += part
            total -= part
        sq["rest"] += max(total, 0.0)
    return {k: (v / len(batch.batch)) ** 0.5 for k, v in sq.items()}


@torch.no_grad()
def check(ckpt: str | None, batch, times=TIMES, seed: int = 0, parts: bool = False) -> list[dict]:
    model = load_model(ckpt)
    diff = model.diffusion
    G = batch.num_graphs
    x0 = zero_com(batch.pos, batch.batch, G)
    i, j = batch.edge_index
    bonded = (batch.bond_types > 0) & (i < j)
    true_len = (x0[i[bonded]] - x0[j[bonded]]).norm(dim=-1)
    bases = internal_bases(x0, batch, G) if parts else None
    rows = []
    for t in times:
        gen = torch.Generator().manual_seed(seed)
        tt = torch.full((G,), float(t))
        xt, _ = diff.pos.q_sample(x0, tt, batch.batch, G, noise=diff.pos.noise_like(x0, batch.batch, G, generator=gen))
        g = NoisyGraph(xt, batch.atom_types, batch.charges, batch.bond_types, batch.edge_index, batch.batch, tt, G, batch.rev)
        out = diff.denoise(model.denoiser_fn(), g)
        if diff.self_conditioning:  # as in sampling: a second pass fed with the first prediction
            out = diff.denoise(model.denoiser_fn(), g, diff.self_cond_from(out))
        ab = diff.pos.schedule.alpha_bar(tt[:1])
        trivial = zero_com(xt / ab.sqrt(), batch.batch, G)
        row = {"t": t, "needed_rms": float(((xt - x0) ** 2).sum(-1).mean().sqrt())}
        for name, est in (("model", out[0]), ("trivial", trivial)):
            row[f"{name}_x0_rms"] = float(((est - x0) ** 2).sum(-1).mean().sqrt())
            row[f"{name}_x0_rms_aligned"] = aligned_rms(zero_com(est, batch.batch, G), x0, batch.batch, G)
            est_len = (est[i[bonded]] - est[j[bonded]]).norm(dim=-1)
            row[f"{name}_bond_mae"] = float((est_len - true_len).abs().mean())
            if bases is not None:
                row[f"{name}_parts"] = decompose(est - x0, bases, batch)
        rows.append(row)
    return rows


def print_parts(rows: list[dict]) -> None:
    """The error split into bond-length, angle, rotation and remaining parts (RMS per atom, Angstrom), and the
    noise a denoiser knowing every bond length (and every angle) exactly would leave."""
    print("\n| t | estimate | bonds | angles | rotation | rest | knowing bond lengths | knowing bonds and angles |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        for name in ("model", "trivial"):
            p = r[f"{name}_parts"]
            left_b = (p["angles"] ** 2 + p["rotation"] ** 2 + p["rest"] ** 2) ** 0.5
            left_ba = (p["rotation"] ** 2 + p["rest"] ** 2) ** 0.5
            print(f"| {r['t']} | {name} | {p['bonds']:.4f} | {p['angles']:.4f} | {p['rotation']:.4f} | "
                  f"{p['rest']:.4f} | {left_b:.4f} | {left_ba:.4f} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", action="append", default=None, help="model file or checkpoint (repeatable; default: shipped)")
    ap.add_argument("--n", type=int, default=200, help="QM9 test molecules")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--autocast-bf16", action="store_true",
                    help="run the network under CPU bf16 autocast, the arithmetic of the GPU training recipe "
                         "(does the model use coordinate detail finer than bf16 resolves?)")
    ap.add_argument("--decompose", action="store_true",
                    help="also split each error into its bond-length, angle, rotation and remaining parts")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    batch = first_test_molecules("qm9", a.data_root, a.n)
    results = {}
    for ck in a.ckpt or [None]:
        name = ck or "shipped"
        with torch.autocast("cpu", dtype=torch.bfloat16) if a.autocast_bf16 else contextlib.nullcontext():
            rows = check(ck, batch, parts=a.decompose)
        results[name] = rows
        print(f"\n{name}: {batch.num_graphs} QM9 test molecules (x0 RMS error and bond-length MAE, Angstrom)")
        print("| t | displacement to undo (RMS) | model x0 RMS | trivial x0 RMS | model x0 RMS, aligned | "
              "trivial x0 RMS, aligned | model bond MAE | trivial bond MAE |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['t']} | {r['needed_rms']:.4f} | {r['model_x0_rms']:.4f} | {r['trivial_x0_rms']:.4f} | "
                  f"{r['model_x0_rms_aligned']:.4f} | {r['trivial_x0_rms_aligned']:.4f} | "
                  f"{r['model_bond_mae']:.4f} | {r['trivial_bond_mae']:.4f} |")
        if a.decompose:
            print_parts(rows)
    if a.json:
        Path(a.json).write_text(json.dumps({"n_molecules": batch.num_graphs, "autocast_bf16": a.autocast_bf16,
                                            "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
