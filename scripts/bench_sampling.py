#!/usr/bin/env python
"""Sampling throughput: molecules/s and ms per denoising step, and the ratio to an EDM-configured baseline.

Part 1 (sweep): our denoiser through ``moldiff.sampling.sampler.sample`` for every combination of step
count, batch size and (fixed) atoms per molecule; one batch per row. Rows whose estimated time exceeds
``--row-budget`` seconds are not run but extrapolated from the measured per-step cost (marked ``~``;
the per-step cost does not depend on the step count).

Part 2 (side by side): the same number of QM9-like molecules (atom counts drawn from the dataset
histogram) sampled by our default configuration (``--ours-preset``, ``--steps``, default 100) and by
``moldiff.models.egnn.EGNNBaseline`` (EDM's EGNN: 9 layers x 256 features) at 1000 steps, through the
same sampling loop. ``speedup = baseline_time / ours_time``. With ``--quick`` the baseline runs a few
steps and its time is extrapolated to 1000 (setup + first step + 999 x steady per-step cost, from
per-step timestamps); the JSON says ``baseline_extrapolated: true``.

Weights are random (speed does not depend on them) unless ``--ckpt`` is given. Statistics (atom-count
histogram, marginals) come from the QM9 cache when present, else a built-in QM9-like set.

Peak memory: CPU = the process's maximum resident set size (``ru_maxrss``, a high-water mark, so rows
run in increasing size order); GPU = ``torch.cuda.max_memory_allocated`` per row.

Usage::

    python scripts/bench_sampling.py --quick                 # < 2 min on a laptop CPU
    python scripts/bench_sampling.py --device cuda           # full sweep on a GPU (preset large)
    python scripts/bench_sampling.py --ckpt runs/x/last.ckpt --steps 50

The last line printed is a JSON object (``speedup_vs_edm_config``, ``mols_per_s``, ``steps``, ...).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import torch

from moldiff.models.egnn import EGNNBaseline
from moldiff.sampling.sampler import sample
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


def draw_num_atoms(stats: dict, n: int, seed: int = 0) -> torch.Tensor:
    hist = torch.tensor(stats["num_atoms_hist"], dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    return torch.multinomial(hist, n, replacement=True, generator=g)


class NullDenoiser(torch.nn.Module):
    """Returns the input coordinates and uniform logits: times the sampling loop without a network."""

    def __init__(self, diffusion) -> None:
        super().__init__()
        self.k = (diffusion.atom.num_classes, diffusion.charge.num_classes, diffusion.bond.num_classes)

    def forward(self, pos, h, edge_index, e, batch, t, num_graphs=None, rev=None, **_):
        ka, kc, kb = self.k
        return pos, pos.new_zeros(pos.shape[0], ka), pos.new_zeros(pos.shape[0], kc), pos.new_zeros(edge_index.shape[1], kb)


def time_sampling(diffusion, net, num_atoms: torch.Tensor, steps: int, batch_size: int, device: torch.device,
                  seed: int = 0, stamps: bool = False, sampler: str = "ancestral") -> dict:
    """Sample ``len(num_atoms)`` molecules in batches; wall time (synchronised), peak memory.

    With ``stamps`` the per-step times of the *first* batch are recorded through the sampler's callback
    (synchronising every step) and returned as ``setup_first_s``, ``per_step_s`` (steady state), ``tail_s``.
    """
    reset_peak(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    out = {"steps": steps, "n_molecules": int(len(num_atoms)), "batch_size": batch_size}
    ticks: list[float] = []
    cticks: list[float] = []

    def cb(k, total):
        sync(device)
        ticks.append(time.perf_counter())
        cticks.append(time.process_time())

    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    first_end = None
    for lo in range(0, len(num_atoms), batch_size):
        chunk = num_atoms[lo : lo + batch_size]
        use_cb = stamps and lo == 0
        sample(diffusion, net, chunk, steps=steps, sampler=sampler, generator=gen, device=device,
               callback=cb if use_cb else None)
        if use_cb:
            sync(device)
            first_end, cfirst_end = time.perf_counter(), time.process_time()
    sync(device)
    t1 = time.perf_counter()
    out["time_s"] = t1 - t0
    out["cpu_s"] = time.process_time() - c0  # process CPU time (all threads); useful on shared CPUs
    out["peak_mem_mb"] = round(peak_mem_mb(device), 1)
    if stamps and ticks:
        out["setup_first_s"] = ticks[0] - t0
        out["per_step_s"] = (ticks[-1] - ticks[0]) / (len(ticks) - 1) if len(ticks) > 1 else ticks[0] - t0
        out["tail_s"] = first_end - ticks[-1]
        out["cpu_setup_first_s"] = cticks[0] - c0
        out["cpu_per_step_s"] = (cticks[-1] - cticks[0]) / (len(cticks) - 1) if len(cticks) > 1 else cticks[0] - c0
        out["cpu_tail_s"] = cfirst_end - cticks[-1]
    return out


def extrapolate(stamped: dict, steps: int, n_batches_measured: int = 1, n_batches: int = 1, prefix: str = "") -> float:
    """Time for ``steps`` steps from a stamped run: (setup + first step) + (steps-1) x per-step + tail, per batch.

    ``prefix="cpu_"`` extrapolates process CPU time instead of wall time."""
    one = stamped[prefix + "setup_first_s"] + (steps - 1) * stamped[prefix + "per_step_s"] + stamped[prefix + "tail_s"]
    return one * n_batches / n_batches_measured



# ------------------------------------------------------------------------------------------ parts
def run_sweep(diffusion, net, device, steps_list, batch_sizes, atoms_list, budget, seed, log) -> list[dict]:
    rows = []
    configs = sorted(((a, b) for a in atoms_list for b in batch_sizes), key=lambda ab: ab[0] * ab[0] * ab[1])
    for atoms, bs in configs:
        num_atoms = torch.full((bs,), atoms, dtype=torch.long)
        try:
            time_sampling(diffusion, net, num_atoms, 2, bs, device, seed)  # warm-up
            cal = time_sampling(diffusion, net, num_atoms, 4, bs, device, seed, stamps=True)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            rows.append({"atoms": atoms, "batch_size": bs, "steps": None, "oom": True})
            log(f"  atoms={atoms} batch={bs}: out of memory")
            continue
        for steps in steps_list:
            est = extrapolate(cal, steps)
            if est <= budget:
                r = time_sampling(diffusion, net, num_atoms, steps, bs, device, seed)
                t, extrap, mem = r["time_s"], False, r["peak_mem_mb"]
            else:
                t, extrap, mem = est, True, cal["peak_mem_mb"]
            rows.append({
                "atoms": atoms, "batch_size": bs, "steps": steps, "time_s": round(t, 4),
                "mols_per_s": round(bs / t, 3), "ms_per_step": round(1000 * t / steps, 3),
                "peak_mem_mb": mem, "extrapolated": extrap,
            })
            log(f"  atoms={atoms:4d} batch={bs:5d} steps={steps:5d}: {bs / t:9.3f} mol/s  "
                f"{1000 * t / steps:9.3f} ms/step{'  (extrapolated)' if extrap else ''}")
    return rows


def log(*x) -> None:
    """Print and flush (progress lines of a long run)."""
    print(*x, flush=True)


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags of this script."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (default)")
    p.add_argument("--quick", action="store_true", help="small sweep, baseline extrapolated from a few steps (< 2 min on CPU)")
    p.add_argument("--smoke", action="store_true", help="with --quick: 2 molecules, 2 steps, everything tiny (for tests)")
    p.add_argument("--ckpt", default=None, help="time a trained checkpoint instead of a random-weight preset")
    p.add_argument("--ours-preset", default=None, help="model preset for our side (default: small on CPU, large on GPU)")
    p.add_argument("--steps", type=int, default=100, help="our sampler's steps in the side-by-side (package default 100)")
    p.add_argument("--sampler", default="ancestral", choices=["ancestral", "ddim"])
    p.add_argument("--sweep-steps", type=ints, default=None, help="comma list (default 25,50,100,500,1000)")
    p.add_argument("--batch-sizes", type=ints, default=None, help="comma list")
    p.add_argument("--num-atoms", type=ints, default=None, help="comma list of fixed atoms per molecule")
    p.add_argument("--row-budget", type=float, default=None, help="seconds; longer sweep rows are extrapolated")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--n-molecules", type=int, default=None, help="molecules in the side-by-side")
    p.add_argument("--batch-size", type=int, default=None, help="batch size in the side-by-side")
    p.add_argument("--baseline-steps", type=int, default=None, help="steps actually run by the baseline (< target: extrapolated)")
    p.add_argument("--baseline-target-steps", type=int, default=1000, help="EDM's step count (1000)")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--dataset", default="qm9", help="cache whose statistics to use if present")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--note", default="", help="free text copied into the JSON (e.g. 'cores shared with a training job')")
    p.add_argument("--json-out", default=None, help="also write the JSON object to this file")
    return p


@dataclass
class BenchSizes:
    """What one run measures: the sweep grid, the side-by-side size and the step counts."""

    sweep_steps: list[int]
    batch_sizes: list[int]
    atoms_list: list[int]
    budget: float
    n_mol: int
    bs_cmp: int
    steps: int
    base_steps: int
    target: int

    @property
    def n_batches(self) -> int:
        """Batches in the side-by-side."""
        return math.ceil(self.n_mol / self.bs_cmp)


def bench_sizes(a: argparse.Namespace, gpu: bool) -> BenchSizes:
    """The sizes of a ``--smoke``, ``--quick`` or full run on this device, explicit flags taking precedence."""
    if a.smoke:
        sweep_steps, batch_sizes, atoms_list, budget = [2], [2], [8], 5.0
        n_mol, bs_cmp, steps, base_steps, target = 2, 2, 2, 2, 2
    elif a.quick:
        sweep_steps, batch_sizes, atoms_list = [25, 50, 100, 500, 1000], [16], [18, 40]
        budget = 3.0 if not gpu else 10.0
        n_mol, bs_cmp, steps = (16 if not gpu else 256), (16 if not gpu else 256), a.steps
        base_steps, target = 5, a.baseline_target_steps
    else:
        sweep_steps = [25, 50, 100, 500, 1000]
        batch_sizes = [1, 16, 64] if not gpu else [1, 64, 256, 1024]
        atoms_list = [18, 40, 80] if not gpu else [18, 40, 80, 100]
        budget = 60.0 if not gpu else 120.0
        n_mol, bs_cmp, steps = (64 if not gpu else 1024), (64 if not gpu else 256), a.steps
        base_steps, target = a.baseline_target_steps, a.baseline_target_steps
    return BenchSizes(
        sweep_steps=a.sweep_steps or sweep_steps,
        batch_sizes=a.batch_sizes or batch_sizes,
        atoms_list=a.num_atoms or atoms_list,
        budget=a.row_budget if a.row_budget is not None else budget,
        n_mol=a.n_molecules or n_mol,
        bs_cmp=a.batch_size or bs_cmp,
        steps=steps,
        base_steps=min(a.baseline_steps or base_steps, target),
        target=target,
    )


def sweep_part(diffusion, net, label: str, device: torch.device, sizes: BenchSizes, sampler: str, seed: int) -> list[dict]:
    """Part 1: run the sweep and print its table."""
    log(f"## sweep: ours ({label}), {sampler}, fixed atoms per molecule, one batch per row "
        f"(rows over {sizes.budget:g}s extrapolated from per-step cost)")
    sweep = run_sweep(diffusion, net, device, sizes.sweep_steps, sizes.batch_sizes, sizes.atoms_list, sizes.budget,
                      seed, log)
    log(fmt_table(
        [{**r, "x": "~" if r.get("extrapolated") else ""} for r in sweep],
        [("atoms", "atoms", ""), ("batch_size", "batch", ""), ("steps", "steps", ""), ("mols_per_s", "mol/s", ".3f"),
         ("ms_per_step", "ms/step", ".2f"), ("time_s", "time s", ".2f"), ("peak_mem_mb", "peak MB", ".0f"), ("x", "", "")],
    ))
    return sweep


def time_ours(diffusion, net, label: str, num_atoms: torch.Tensor, sizes: BenchSizes, device: torch.device,
              sampler: str, seed: int, stats_src: str) -> tuple[dict, float]:
    """Part 2, our side: time our model on ``num_atoms``, then the sampling loop alone (``NullDenoiser``).

    Returns:
        ``(timing of ours, loop overhead in ms per step)``.
    """
    n_mol, bs_cmp, steps, n_batches = sizes.n_mol, sizes.bs_cmp, sizes.steps, sizes.n_batches
    log(f"## side by side: {n_mol} molecules (atoms drawn from the {stats_src} histogram, mean "
        f"{num_atoms.float().mean():.1f}), batch {bs_cmp}")
    time_sampling(diffusion, net, num_atoms[:bs_cmp], min(2, steps), bs_cmp, device, seed)  # warm-up
    ours = time_sampling(diffusion, net, num_atoms, steps, bs_cmp, device, seed, sampler=sampler)
    log(f"  ours ({label}, {steps} steps): {ours['time_s']:.3f} s, {n_mol / ours['time_s']:.3f} mol/s, "
        f"{1000 * ours['time_s'] / (steps * n_batches):.2f} ms/step/batch")
    null = time_sampling(diffusion, NullDenoiser(diffusion), num_atoms[:bs_cmp], min(steps, 20), bs_cmp, device, seed)
    return ours, 1000 * null["time_s"] / min(steps, 20)


def time_baseline(diffusion, num_atoms: torch.Tensor, sizes: BenchSizes, device: torch.device, seed: int,
                  ours: dict, gpu: bool) -> dict:
    """Part 2, the baseline side: time ``EGNNBaseline`` at the target step count (extrapolated when it runs
    fewer steps); returns its result entries, speedups included."""
    n_mol, bs_cmp, steps, n_batches = sizes.n_mol, sizes.bs_cmp, sizes.steps, sizes.n_batches
    base_steps, target = sizes.base_steps, sizes.target
    base = EGNNBaseline.for_diffusion(diffusion).to(device).eval()
    time_sampling(diffusion, base, num_atoms[:bs_cmp], min(2, base_steps), bs_cmp, device, seed)  # warm-up
    extrap = base_steps < target
    if extrap:
        # one stamped batch; per-step cost is constant, so time(target) = setup + target x step + tail
        r = time_sampling(diffusion, base, num_atoms[:bs_cmp], base_steps, bs_cmp, device, seed, stamps=True)
        scale = n_mol / min(bs_cmp, n_mol)
        btime = extrapolate(r, target, 1, 1) * scale
        bcpu = extrapolate(r, target, 1, 1, prefix="cpu_") * scale
    else:
        r = time_sampling(diffusion, base, num_atoms, target, bs_cmp, device, seed)
        btime, bcpu = r["time_s"], r["cpu_s"]
    result = {
        "baseline": "EGNNBaseline (EDM config: 9 layers x 256, attention, tanh coords)",
        "baseline_params": num_params(base), "baseline_steps": target, "baseline_steps_run": base_steps,
        "baseline_extrapolated": extrap, "baseline_time_s": round(btime, 4),
        "baseline_mols_per_s": round(n_mol / btime, 5),
        "baseline_ms_per_step": round(1000 * btime / (target * n_batches), 3),
        "baseline_peak_mem_mb": r["peak_mem_mb"],
        "speedup_vs_edm_config": round(btime / ours["time_s"], 2),
        # on a CPU shared with other jobs the process-CPU-time ratio is the steadier one
        "speedup_vs_edm_config_cpu_time": round(bcpu / ours["cpu_s"], 2) if not gpu else None,
        "per_step_speedup": round((btime / target) / (ours["time_s"] / steps), 2),
    }
    log(f"  baseline (EDM config, {target} steps{', extrapolated from ' + str(base_steps) if extrap else ''}): "
        f"{btime:.2f} s, {n_mol / btime:.4f} mol/s, {result['baseline_ms_per_step']:.2f} ms/step/batch")
    log(f"  speedup = baseline_time / ours_time = {result['speedup_vs_edm_config']:.2f}x "
        f"(per step: {result['per_step_speedup']:.2f}x; steps: {target}/{steps})"
        + (f"; in process CPU time: {result['speedup_vs_edm_config_cpu_time']:.2f}x" if not gpu else ""))
    return result


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark with the command-line flags ``argv``; prints and returns the JSON result."""
    a = build_parser().parse_args(argv)
    device = resolve_device(a.device)
    thread_info = configure_threads(a.threads, device)
    gpu = device.type == "cuda"
    preset = a.ours_preset or ("large" if gpu else "small")
    if a.smoke:
        a.quick = True
    sizes = bench_sizes(a, gpu)

    torch.manual_seed(a.seed)
    vocab, stats, stats_src = load_statistics(a.dataset)
    diffusion, net, label = build_ours(preset, vocab, stats, device, a.ckpt)
    if a.ckpt:
        stats_src = "checkpoint"
    log(f"# bench_sampling  device={device} ({device_name(device)})  torch={torch.__version__}  "
        f"ours={label} ({num_params(net):,} params)  statistics: {stats_src}")
    t_start = time.perf_counter()
    sweep = [] if a.no_sweep else sweep_part(diffusion, net, label, device, sizes, a.sampler, a.seed)

    num_atoms = draw_num_atoms(stats, sizes.n_mol, a.seed)
    n_mol, bs_cmp, steps, n_batches = sizes.n_mol, sizes.bs_cmp, sizes.steps, sizes.n_batches
    ours, loop_ms = time_ours(diffusion, net, label, num_atoms, sizes, device, a.sampler, a.seed, stats_src)
    result = {
        "device": str(device), "device_name": device_name(device), "torch": torch.__version__,
        **thread_info, "preset": label, "ours_params": num_params(net), "sampler": a.sampler,
        "statistics": stats_src, "n_molecules": n_mol, "batch_size": bs_cmp,
        "mean_atoms": round(float(num_atoms.float().mean()), 2), "steps": steps,
        "ours_time_s": round(ours["time_s"], 4), "ours_cpu_time_s": round(ours["cpu_s"], 4) if not gpu else None, "mols_per_s": round(n_mol / ours["time_s"], 4),
        "ms_per_step": round(1000 * ours["time_s"] / (steps * n_batches), 3),
        "ours_peak_mem_mb": ours["peak_mem_mb"], "loop_overhead_ms_per_step": round(loop_ms, 3),
    }
    if not a.no_baseline:
        result.update(time_baseline(diffusion, num_atoms, sizes, device, a.seed, ours, gpu))
    else:
        result["speedup_vs_edm_config"] = None
    result.update(sweep=sweep, smoke=bool(a.smoke), quick=bool(a.quick), note=a.note)
    result["wall_s"] = round(time.perf_counter() - t_start, 2)
    return emit_result(result, a.json_out)


if __name__ == "__main__":
    main()
