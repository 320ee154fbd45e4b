#!/usr/bin/env python
"""Cost growth: ms per denoiser forward against atoms per molecule, fully connected vs radius graph.

For each molecule size a batch of ``--batch-size`` molecules with random positions at a molecule-like
density (uniform in a ball holding ``--density`` atoms per cubic Angstrom) goes through one denoiser
forward (``torch.no_grad``, as in sampling). ``full`` is the model as configured (``cutoff: null``:
messages along every pair); ``radius`` is the same weights with ``cutoff=--cutoff``: messages only along
pairs closer than the cutoff. The pair set stays all pairs in both (edge states and bond logits exist
for every pair), so the radius graph removes only the masked messages' aggregation, not the per-pair
MLPs: both grow as atoms^2. ``--edm`` adds the EDM-configured EGNN baseline (fully connected).

The table gives ms per forward, per molecule and per ordered pair, the fraction of pairs inside the
cutoff, and a fitted exponent ``k`` of time ~ atoms^k over the largest sizes. The last line is JSON.

Usage::

    python scripts/bench_scaling.py --quick
    python scripts/bench_scaling.py --device cuda --sizes 10,20,40,80,120,200 --edm
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics as st
import time

import torch

from moldiff.bench import (
    build_ours,
    configure_threads,
    device_name,
    emit_result,
    fmt_table,
    ints,
    load_statistics,
    num_params,
    peak_mem_mb,
    reset_peak,
    resolve_device,
    sync,
)

from moldiff.models.egnn import EGNNBaseline
from moldiff.utils.graph import full_edge_index, reverse_edge_index


def molecule_batch(n: int, batch_size: int, density: float, diffusion, device, seed: int = 0):
    """Positions uniform in a ball of molecule-like density, random noisy one-hot features, full pair set."""
    g = torch.Generator().manual_seed(seed + n)
    radius = (3 * n / (4 * math.pi * density)) ** (1 / 3)
    pos = []
    for _ in range(batch_size):
        d = torch.randn(n, 3, generator=g)
        d = d / d.norm(dim=-1, keepdim=True) * radius * torch.rand(n, 1, generator=g) ** (1 / 3)
        pos.append(d)
    pos = torch.cat(pos)
    ei = full_edge_index(n)
    edge_index = torch.cat([ei + k * n for k in range(batch_size)], dim=1)
    batch = torch.arange(batch_size).repeat_interleave(n)
    N, E = pos.shape[0], edge_index.shape[1]
    sa, sc, sb = diffusion.atom.num_states, diffusion.charge.num_states, diffusion.bond.num_states
    h = torch.cat([
        torch.nn.functional.one_hot(torch.randint(0, sa, (N,), generator=g), sa),
        torch.nn.functional.one_hot(torch.randint(0, sc, (N,), generator=g), sc),
    ], dim=-1).float()
    e = torch.nn.functional.one_hot(torch.randint(0, sb, (E,), generator=g), sb).float()
    t = torch.rand(batch_size, generator=g)
    rev = reverse_edge_index(edge_index, N)
    ab = diffusion.pos.schedule.alpha_bar(t)
    tens = [x.to(device) for x in (pos, h, edge_index, e, batch, t, rev, ab)]
    return tens, radius


def time_forward(net, inputs, batch_size, device, repeats: int) -> dict:
    pos, h, ei, e, batch, t, rev, ab = inputs
    with torch.no_grad():
        net(pos, h, ei, e, batch, t, batch_size, rev=rev, alpha_bar=ab)  # warm-up
        reset_peak(device)
        walls, cpus = [], []
        for _ in range(repeats):
            sync(device)
            w0, c0 = time.perf_counter(), time.process_time()
            net(pos, h, ei, e, batch, t, batch_size, rev=rev, alpha_bar=ab)
            sync(device)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    return {"ms_per_forward": 1000 * st.median(walls), "cpu_ms": 1000 * st.median(cpus), "peak_mem_mb": round(peak_mem_mb(device), 1)}


def fit_exponent(rows: list[dict], key: str = "ms_per_forward", last: int = 3) -> float | None:
    pts = [(r["atoms"], r[key]) for r in rows if r.get(key)][-last:]
    if len(pts) < 2:
        return None
    xs = [math.log(a) for a, _ in pts]
    ys = [math.log(y) for _, y in pts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs), 2)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="sizes 10,20,40,80; batch 2; 2 repeats")
    p.add_argument("--preset", default=None, help="model preset (default small on CPU, large on GPU)")
    p.add_argument("--sizes", type=ints, default=None, help="atoms per molecule (default 10,20,40,80,120)")
    p.add_argument("--batch-size", type=int, default=None, help="molecules per forward (default CPU 4, GPU 64)")
    p.add_argument("--cutoff", type=float, default=5.0, help="radius-graph cutoff in Angstrom")
    p.add_argument("--density", type=float, default=0.1, help="atoms per cubic Angstrom (organic molecules with H ~0.1)")
    p.add_argument("--repeats", type=int, default=None, help="timed forwards per row (median; default 3)")
    p.add_argument("--edm", action="store_true", help="also time the EDM-configured EGNN baseline")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--note", default="")
    p.add_argument("--json-out", default=None)
    a = p.parse_args(argv)

    device = resolve_device(a.device)
    thread_info = configure_threads(a.threads, device)
    gpu = device.type == "cuda"
    preset = a.preset or ("large" if gpu else "small")
    sizes = a.sizes or ([10, 20, 40, 80] if a.quick else [10, 20, 40, 80, 120])
    bs = a.batch_size or (2 if a.quick else (64 if gpu else 4))
    repeats = a.repeats or (2 if a.quick else 3)
    torch.manual_seed(a.seed)
    vocab, stats, _ = load_statistics()
    diffusion, full, label = build_ours(preset, vocab, stats, device)
    radius_net = copy.deepcopy(full)
    radius_net.cutoff = a.cutoff  # same weights; only the message mask differs
    models = [("full", full), (f"radius {a.cutoff:g}A", radius_net)]
    if a.edm:
        models.append(("edm egnn", EGNNBaseline.for_diffusion(diffusion).to(device).eval()))
    print(f"# bench_scaling  device={device} ({device_name(device)})  ours={label} ({num_params(full):,} params)  "
          f"batch={bs} molecules  density={a.density} atoms/A^3", flush=True)

    rows = []
    for n in sizes:
        inputs, radius = molecule_batch(n, bs, a.density, diffusion, device, a.seed)
        pos, ei = inputs[0], inputs[2]
        E = ei.shape[1]
        frac = float(((pos[ei[0]] - pos[ei[1]]).norm(dim=-1) < a.cutoff).float().mean())
        for name, net in models:
            try:
                r = time_forward(net, inputs, bs, device, repeats)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                r = {"oom": True}
            row = {"graph": name, "atoms": n, "batch_size": bs, "pairs": E, "ball_radius_A": round(radius, 2),
                   "msg_pair_frac": round(frac, 3) if name.startswith("radius") else 1.0, **r}
            if "ms_per_forward" in r:
                row["ms_per_mol"] = r["ms_per_forward"] / bs
                row["us_per_pair"] = 1000 * r["ms_per_forward"] / E
            rows.append(row)
            print(f"  {name:12s} atoms={n:4d}: {row.get('ms_per_forward', float('nan')):9.2f} ms/forward "
                  f"({row.get('us_per_pair', float('nan')):.3f} us/pair)", flush=True)
    print(fmt_table(rows, [("graph", "graph", ""), ("atoms", "atoms", ""), ("pairs", "pairs", ""),
                           ("msg_pair_frac", "msg pairs", ".2f"), ("ms_per_forward", "ms/fwd", ".2f"),
                           ("ms_per_mol", "ms/mol", ".2f"), ("us_per_pair", "us/pair", ".3f"),
                           ("cpu_ms", "cpu ms", ".2f"), ("peak_mem_mb", "peak MB", ".0f")]))
    exps = {name: fit_exponent([r for r in rows if r["graph"] == name]) for name, _ in models}
    print("fitted exponent k (time ~ atoms^k, largest sizes): " + ", ".join(f"{k}: {v}" for k, v in exps.items()))
    for r in rows:
        for k in ("ms_per_forward", "cpu_ms", "ms_per_mol", "us_per_pair"):
            if k in r:
                r[k] = round(r[k], 4)
    result = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
              **thread_info, "preset": label, "batch_size": bs, "cutoff": a.cutoff,
              "density": a.density, "exponents": exps, "rows": rows, "note": a.note}
    return emit_result(result, a.json_out)


if __name__ == "__main__":
    main()
