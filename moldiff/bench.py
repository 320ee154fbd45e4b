"""Helpers shared by the benchmark scripts (``scripts/bench_*.py``): devices and threads, timing and
memory, dataset statistics, model construction from the packaged presets, and result output."""

from __future__ import annotations

import json
import platform
import resource
import sys
from pathlib import Path

import torch

from moldiff.config import diffusion_defaults, model_preset
from moldiff.data.vocab import QM9_VOCAB, Vocab
from moldiff.training.builders import build_denoiser, build_diffusion

# QM9 (explicit H) training-split statistics, used when no dataset cache is present.
QM9_LIKE_STATS = {
    "num_atoms_hist": [0, 0, 0, 1, 3, 4, 10, 15, 46, 123, 381, 789, 1664, 3006, 5201, 7755, 10536, 12991,
                       13370, 13886, 9566, 10059, 3325, 4922, 543, 1477, 42, 260, 0, 23],
    "atom_type_marginal": [0.5124, 0.3528, 0.0559, 0.0777, 0.0013],
    "charge_marginal": [0.0002, 0.9996, 0.0002],
    "bond_marginal": [0.8819, 0.1097, 0.0067, 0.0018],
    "prop_mean": {},
    "prop_std": {},
    "mean_num_atoms": 18.04,
}

# ------------------------------------------------------------------------------------------ helpers
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch.cuda.is_available() is False")
    return dev


def configure_threads(threads: int | None, device: torch.device) -> dict:
    """Apply ``--threads``; without it, drop to one intra-op thread when the CPU is already saturated.

    On a machine whose cores are busy (load average >= core count), every multi-threaded op waits for
    all its threads to be scheduled, which made small ops 10-40x slower in our measurements; one thread
    degrades gracefully. Returns what was done, for the JSON.
    """
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    cores = os.cpu_count() or 1
    auto = False
    if threads:
        torch.set_num_threads(threads)
    elif device.type == "cpu" and torch.get_num_threads() > 1 and load >= cores:
        torch.set_num_threads(1)
        auto = True
        print(f"# load average {load:.1f} >= {cores} cores: using 1 thread (pass --threads N to override)", flush=True)
    return {"threads": torch.get_num_threads(), "threads_auto_limited": auto, "load_avg_1min": round(load, 2), "cpu_count": cores}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mem_mb(device: torch.device) -> float:
    """GPU: peak allocated since the last reset. CPU: the process's max RSS so far (a high-water mark)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def load_statistics(dataset: str = "qm9", root: str | None = None) -> tuple[Vocab, dict, str]:
    """Vocabulary and statistics from the dataset cache, or the built-in QM9-like set."""
    try:
        from moldiff.data.cache import load_cache

        cache = load_cache(dataset, root)
        return cache.vocab, cache.statistics, f"{dataset} cache"
    except Exception:  # no cache (fresh clone): synthetic QM9-like statistics
        return QM9_VOCAB, dict(QM9_LIKE_STATS), "synthetic QM9-like"


def build_ours(preset: str, vocab: Vocab, stats: dict, device: torch.device, ckpt: str | None = None, cutoff=None):
    """``(diffusion, net, label)``: a random-weight preset, or the model stored in ``ckpt`` (whose statistics
    then replace the contents of ``stats``)."""
    if ckpt:
        from moldiff.training.checkpoint import load_model

        m = load_model(ckpt, device)
        stats.clear()
        stats.update(m.statistics)  # the model's own dataset statistics (atom-count histogram)
        return m.diffusion, m.net.eval(), f"ckpt:{Path(ckpt).name}"
    cfg = model_preset(preset)
    if cutoff is not None:
        cfg["cutoff"] = cutoff
    diffusion = build_diffusion(diffusion_defaults(), vocab, stats)
    net = build_denoiser(cfg, vocab, diffusion).to(device).eval()
    return diffusion, net, preset


def num_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def fmt_table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    """``cols``: (key, header, format)."""
    head = [h for _, h, _ in cols]
    body = []
    for r in rows:
        line = []
        for k, _, f in cols:
            v = r.get(k)
            line.append("-" if v is None else (format(v, f) if f else str(v)))
        body.append(line)
    w = [max(len(head[c]), *(len(b[c]) for b in body)) if body else len(head[c]) for c in range(len(cols))]
    out = ["  ".join(h.rjust(w[c]) for c, h in enumerate(head)), "  ".join("-" * x for x in w)]
    out += ["  ".join(b[c].rjust(w[c]) for c in range(len(cols))) for b in body]
    return "\n".join(out)


def emit_result(result: dict, json_out: str | None) -> dict:
    """Print the result as one JSON line (and write it to ``json_out`` when given)."""
    line = json.dumps(result)
    if json_out:
        Path(json_out).write_text(line + "\n")
    print(line, flush=True)
    return result


def ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]
