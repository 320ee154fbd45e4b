#!/usr/bin/env python
"""Training throughput: molecules/s and peak memory per model preset and batch size.

Each timed step is what the trainer does per batch, minus Lightning's bookkeeping: the real loss
``module.diffusion.loss(module.denoiser_fn(), batch)`` of a ``DiffusionModule``, ``backward``, gradient
clipping (norm 1.0, as ``conf/trainer``), the module's own optimizer (AdamW, amsgrad) step, and an EMA
update of the weights. On a GPU the forward runs under ``torch.autocast(dtype=bfloat16)`` (the
``bf16-mixed`` trainer precision) unless ``--no-bf16``.

Batches are QM9 training molecules from the dataset cache when present, else synthetic molecules (atom
counts from a QM9-like histogram, random positions and types, a chain of single bonds; fully connected
graphs via ``moldiff.data.graph.make_data``). They are built and moved to the device before timing (data
loading is not timed). ``edm`` is accepted as a preset: the EDM-configured ``EGNNBaseline`` trained with
the same loss.

Peak memory: GPU ``torch.cuda.max_memory_allocated`` per row; CPU the process's max RSS so far (a
high-water mark: rows run from the smallest model and batch up).

Usage::

    python scripts/bench_training.py --quick
    python scripts/bench_training.py --device cuda --presets small,large,edm --batch-sizes 64,256

The last line printed is a JSON object with every row.
"""

from __future__ import annotations

import argparse
import time

import torch

from moldiff.config import diffusion_defaults, model_preset
from moldiff.bench import (
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

from moldiff.data.graph import make_data
from moldiff.models.egnn import EGNNBaseline
from moldiff.training.module import DiffusionModule

PRESET_ORDER = {"tiny": 0, "small": 1, "large": 2, "edm": 3}


def synthetic_batches(stats: dict, vocab, n_batches: int, batch_size: int, seed: int = 0):
    from torch_geometric.data import Batch

    g = torch.Generator().manual_seed(seed)
    hist = torch.tensor(stats["num_atoms_hist"], dtype=torch.float)
    types_p = torch.tensor(stats["atom_type_marginal"], dtype=torch.float)
    neutral = vocab.charges.index(0) if 0 in vocab.charges else 0
    out = []
    for _ in range(n_batches):
        datas = []
        for n in torch.multinomial(hist, batch_size, replacement=True, generator=g).tolist():
            n = max(int(n), 2)
            pos = torch.randn(n, 3, generator=g) * (0.9 * n ** (1 / 3))
            types = torch.multinomial(types_p, n, replacement=True, generator=g)
            src = torch.arange(n - 1)
            datas.append(make_data(pos, types, torch.full((n,), neutral), src, src + 1, torch.ones(n - 1, dtype=torch.long)))
        out.append(Batch.from_data_list(datas))
    return out


def qm9_batches(cache, n_batches: int, batch_size: int, seed: int = 0):
    import numpy as np
    from torch_geometric.data import Batch

    rng = np.random.default_rng(seed)
    idx = cache.indices("train")
    return [Batch.from_data_list([cache.data(int(i)) for i in rng.choice(idx, batch_size, replace=False)]) for _ in range(n_batches)]


def make_module(preset: str, vocab, stats) -> DiffusionModule:
    cfg = model_preset("small" if preset == "edm" else preset)
    module = DiffusionModule(cfg, diffusion_defaults(), {}, {"name": "bench", "vocab": vocab.to_dict(), "statistics": stats})
    if preset == "edm":
        module.net = EGNNBaseline.for_diffusion(module.diffusion)
    return module


def bench_one(module: DiffusionModule, batches, steps: int, warmup: int, device, bf16: bool) -> dict:
    module.to(device).train()
    opt = module.configure_optimizers()["optimizer"]
    params = [p for p in module.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params]
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)

    def step(batch):
        with autocast:
            loss = module.diffusion.loss(module.denoiser_fn(), batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1e-3)
        return loss

    w0 = time.perf_counter()
    for k in range(warmup):
        step(batches[k % len(batches)])
    sync(device)
    warmup_s = time.perf_counter() - w0
    reset_peak(device)
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    n_mol = 0
    for k in range(steps):
        b = batches[(warmup + k) % len(batches)]
        step(b)
        n_mol += b.num_graphs
    sync(device)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "mols_per_s": round(n_mol / wall, 3), "ms_per_step": round(1000 * wall / steps, 2),
        "cpu_ms_per_step": round(1000 * cpu / steps, 2) if device.type == "cpu" else None,
        "peak_mem_mb": round(peak_mem_mb(device), 1), "steps_timed": steps, "warmup_s": round(warmup_s, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (default)")
    p.add_argument("--quick", action="store_true", help="tiny,small presets; batch 16,64; 3 timed steps")
    p.add_argument("--presets", default=None, help="comma list of conf/model presets (+ edm); default tiny,small,large")
    p.add_argument("--batch-sizes", type=ints, default=None, help="comma list (default CPU 16,64; GPU 64,256)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per row (default 10; quick 3)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-bf16", action="store_true", help="GPU: full fp32 instead of bf16 autocast")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the denoiser (dynamic shapes), as moldiff-train compile=true; the warm-up "
                        "steps (warmup_s) include the compilation")
    p.add_argument("--synthetic", action="store_true", help="synthetic molecules even if the cache exists")
    p.add_argument("--dataset", default="qm9")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--note", default="")
    p.add_argument("--json-out", default=None)
    a = p.parse_args(argv)

    device = resolve_device(a.device)
    thread_info = configure_threads(a.threads, device)
    gpu = device.type == "cuda"
    bf16 = gpu and not a.no_bf16
    presets = (a.presets or ("tiny,small" if a.quick else "tiny,small,large")).split(",")
    presets = sorted((x.strip() for x in presets if x.strip()), key=lambda x: PRESET_ORDER.get(x, 9))
    batch_sizes = sorted(a.batch_sizes or ([16, 64] if not gpu else [64, 256]))
    steps = a.steps or (3 if a.quick else 10)
    torch.manual_seed(a.seed)

    vocab, stats, src = load_statistics(a.dataset)
    cache = None
    if not a.synthetic and src.endswith("cache"):
        from moldiff.data.cache import load_cache

        cache = load_cache(a.dataset)
    data_src = f"{a.dataset} train molecules" if cache is not None else "synthetic QM9-like molecules"
    print(f"# bench_training  device={device} ({device_name(device)})  torch={torch.__version__}  "
          f"precision={'bf16 autocast' if bf16 else 'fp32'}  data: {data_src}", flush=True)

    rows = []
    n_batches = steps + a.warmup
    data = {}
    for bs in batch_sizes:
        batches = (qm9_batches(cache, n_batches, bs, a.seed) if cache is not None
                   else synthetic_batches(stats, vocab, n_batches, bs, a.seed))
        data[bs] = [b.to(device) for b in batches]
    for preset in presets:  # smallest first, so the CPU RSS high-water mark is (close to) each row's own peak
        for bs in batch_sizes:
            batches = data[bs]
            mean_atoms = sum(b.num_nodes for b in batches) / sum(b.num_graphs for b in batches)
            torch.manual_seed(a.seed)
            module = make_module(preset, vocab, stats)
            if a.compile:
                module.net.compile(dynamic=True)
            row = {"preset": preset, "params": num_params(module.net), "batch_size": bs, "mean_atoms": round(mean_atoms, 2),
                   "compiled": a.compile}
            try:
                row.update(bench_one(module, batches, steps, a.warmup, device, bf16))
            except torch.cuda.OutOfMemoryError:
                row["oom"] = True
                torch.cuda.empty_cache()
            rows.append(row)
            print(f"  {preset:6s} batch={bs:5d}: {row.get('mols_per_s', 'OOM')} mol/s, {row.get('ms_per_step', '-')} ms/step, "
                  f"peak {row.get('peak_mem_mb', '-')} MB", flush=True)
            del module
            if gpu:
                torch.cuda.empty_cache()
    rows.sort(key=lambda r: (PRESET_ORDER.get(r["preset"], 9), r["batch_size"]))
    cols = [("preset", "preset", ""), ("params", "params", ","), ("batch_size", "batch", ""), ("mols_per_s", "mol/s", ".2f"),
            ("ms_per_step", "ms/step", ".1f")]
    if not gpu:
        cols.append(("cpu_ms_per_step", "cpu ms/step", ".1f"))
    cols.append(("peak_mem_mb", "peak MB", ".0f"))
    print(fmt_table(rows, cols))
    result = {
        "device": str(device), "device_name": device_name(device), "torch": torch.__version__, **thread_info,
        "precision": "bf16-autocast" if bf16 else "fp32", "data": data_src, "rows": rows, "note": a.note,
    }
    return emit_result(result, a.json_out)


if __name__ == "__main__":
    main()
