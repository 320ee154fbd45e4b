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


@torch.no_grad()
def check(ckpt: str | None, batch, times=TIMES, seed: int = 0) -> list[dict]:
    model = load_model(ckpt)
    diff = model.diffusion
    G = batch.num_graphs
    x0 = zero_com(batch.pos, batch.batch, G)
    i, j = batch.edge_index
    bonded = (batch.bond_types > 0) & (i < j)
    true_len = (x0[i[bonded]] - x0[j[bonded]]).norm(dim=-1)
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
        rows.append(row)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", action="append", default=None, help="model file or checkpoint (repeatable; default: shipped)")
    ap.add_argument("--n", type=int, default=200, help="QM9 test molecules")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--autocast-bf16", action="store_true",
                    help="run the network under CPU bf16 autocast, the arithmetic of the GPU training recipe "
                         "(does the model use coordinate detail finer than bf16 resolves?)")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    batch = first_test_molecules("qm9", a.data_root, a.n)
    results = {}
    for ck in a.ckpt or [None]:
        name = ck or "shipped"
        with torch.autocast("cpu", dtype=torch.bfloat16) if a.autocast_bf16 else contextlib.nullcontext():
            rows = check(ck, batch)
        results[name] = rows
        print(f"\n{name}: {batch.num_graphs} QM9 test molecules (x0 RMS error and bond-length MAE, Angstrom)")
        print("| t | displacement to undo (RMS) | model x0 RMS | trivial x0 RMS | model x0 RMS, aligned | "
              "trivial x0 RMS, aligned | model bond MAE | trivial bond MAE |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['t']} | {r['needed_rms']:.4f} | {r['model_x0_rms']:.4f} | {r['trivial_x0_rms']:.4f} | "
                  f"{r['model_x0_rms_aligned']:.4f} | {r['trivial_x0_rms_aligned']:.4f} | "
                  f"{r['model_bond_mae']:.4f} | {r['trivial_bond_mae']:.4f} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"n_molecules": batch.num_graphs, "autocast_bf16": a.autocast_bf16,
                                            "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
