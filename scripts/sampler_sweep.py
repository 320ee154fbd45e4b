#!/usr/bin/env python
"""Sampling settings side by side: the same model, seed and molecule count under several settings of
``moldiff-sample`` (time grid, temperature, sampler, steps), scored with ``moldiff-evaluate``'s metrics.

Each variant is a comma-separated list of ``key=value`` sampling options; every variant samples through
the Python API, which runs the code of ``moldiff-sample`` (so a row is reproduced by
``moldiff-sample <options> n_samples=N seed=S decode=argmax out=x.sdf`` then ``moldiff-evaluate input=x.sdf``).
Rows are appended to ``--json`` as they finish; a rerun skips the rows already there.

    python scripts/sampler_sweep.py --n 1000 --json results/sampler_sweep_25.json \\
        "steps=25" "steps=25,time_power=2" "steps=25,time_power=2,temperature=0.5"

One more key probes what the fed-back prediction of a self-conditioning model is worth (a diagnostic of
this script, not a sampling option): ``self_cond=none`` drops it; ``self_cond=second`` runs the network a
second time at every step, fed the first call's prediction (two calls a step), and ``self_cond=second:LO:HI``
only at the steps with t in [LO, HI]. Rows report the network calls made (``network_calls``).
Another probes time grids: ``grid_mix=W:LO:HI`` places the steps by a density that mixes the
``time_power=2`` grid's (weight 1 - W) with a uniform density on t in [LO, HI] (weight W).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

import moldiff
from moldiff.utils.io import atomic_write

#: options a variant may set, with their types
OPTIONS = {"steps": int, "time_power": float, "temperature": float, "sampler": str, "guidance_scale": float,
           "self_cond": str, "sc_temperature": float, "grid_mix": str}
METRICS = ("mol_stability", "atom_stability", "validity", "connected_validity", "uniqueness",
           "edm_mol_stability", "edm_atom_stability", "edm_validity")


def parse_variant(text: str) -> dict:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in OPTIONS:
            raise SystemExit(f"variant {text!r}: {part!r} is not one of {sorted(OPTIONS)} as key=value")
        out[key] = OPTIONS[key](value)
    if "self_cond" in out:
        self_cond_window(out["self_cond"], text)
    if "grid_mix" in out:
        mixed_grid(out["grid_mix"], 2, text)
    return out


def mixed_grid(spec: str, steps: int, text: str = "", device=None) -> torch.Tensor:
    """``steps + 1`` times from 1 to 0 at equal steps of the CDF ``(1 - W) sqrt(t) + W clip((t - LO) / (HI - LO))``
    (``spec = "W:LO:HI"``): the ``time_power=2`` grid mixed with a grid uniform on [LO, HI]."""
    try:
        w, lo, hi = (float(x) for x in spec.split(":"))
        ok = 0 <= w <= 1 and 0 <= lo < hi <= 1
    except ValueError:
        ok = False
    if not ok:
        raise SystemExit(f"variant {text!r}: grid_mix must be W:LO:HI with 0 <= W <= 1 and 0 <= LO < HI <= 1, got {spec!r}")
    ts = np.linspace(0.0, 1.0, 200001)
    cdf = (1 - w) * np.sqrt(ts) + w * np.clip((ts - lo) / (hi - lo), 0.0, 1.0)
    t = np.interp(np.linspace(1.0, 0.0, steps + 1), cdf, ts)
    t[0], t[-1] = 1.0, 0.0
    return torch.tensor(t, dtype=torch.float32, device=device)


class MixedGrid:
    """Patch the sampler's time grid for one variant (``grid_mix``); no-op for None."""

    def __init__(self, spec: str | None) -> None:
        self.spec = spec

    def __enter__(self) -> "MixedGrid":
        import moldiff.sampling.sampler as sampler

        self._orig = sampler.time_grid
        if self.spec is not None:
            sampler.time_grid = lambda steps, device=None, power=1.0: mixed_grid(self.spec, steps, device=device)
        return self

    def __exit__(self, *exc) -> None:
        import moldiff.sampling.sampler as sampler

        sampler.time_grid = self._orig


def self_cond_window(mode: str, text: str = "") -> tuple[float, float] | None:
    """``none`` -> None; ``second`` -> (0, 1); ``second:LO:HI`` -> (LO, HI)."""
    if mode == "none":
        return None
    parts = mode.split(":")
    try:
        lo, hi = (0.0, 1.0) if parts == ["second"] else (float(parts[1]), float(parts[2]))
        ok = parts[0] == "second" and len(parts) in (1, 3)
    except (IndexError, ValueError):
        ok = False
    if not ok:
        raise SystemExit(f"variant {text!r}: self_cond must be none, second or second:LO:HI, got {mode!r}")
    return lo, hi


def retemper(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Class probabilities ``[..., K]`` re-tempered: ``p^(1/T)`` renormalised, or one-hot argmax for ``T = 0``."""
    if temperature == 0:
        return torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs.dtype)
    return torch.softmax(probs.clamp_min(1e-12).log() / temperature, -1)


class CountedSelfCond:
    """Patch ``JointDiffusion.denoise`` for one variant: drop the fed-back prediction (``none``) or add a second
    call fed the first call's (``second[:LO:HI]``); ``sc_temperature`` re-tempers the fed-back class probabilities
    (``p^(1/T)`` renormalised; 0: one-hot argmax). Counts the network calls of the first batch's run."""

    def __init__(self, mode: str | None, sc_temperature: float | None = None) -> None:
        self.mode, self.sc_temperature, self.calls = mode, sc_temperature, 0

    def __enter__(self) -> "CountedSelfCond":
        from moldiff.diffusion.joint import JointDiffusion

        self._orig = orig = JointDiffusion.denoise
        window = self_cond_window(self.mode) if self.mode else (2.0, 2.0)  # (2, 2): never a second call

        def denoise(diffusion, denoiser, g, self_cond=None):
            if self.mode == "none":
                self_cond = None
            elif self_cond is not None and self.sc_temperature is not None:
                self_cond = (self_cond[0], *(retemper(p, self.sc_temperature) for p in self_cond[1:]))
            out = orig(diffusion, denoiser, g, self_cond)
            self.calls += 1
            if window is not None and window[0] <= float(g.t[0]) <= window[1]:
                out = orig(diffusion, denoiser, g, diffusion.self_cond_from(out))
                self.calls += 1
            return out

        JointDiffusion.denoise = denoise
        return self

    def __exit__(self, *exc) -> None:
        from moldiff.diffusion.joint import JointDiffusion

        JointDiffusion.denoise = self._orig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="+", help="e.g. steps=25,time_power=2,temperature=0.5")
    ap.add_argument("--ckpt", default="qm9", help="shipped model name or checkpoint path (default: qm9)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="results file (rows are added as they finish)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = json.loads(Path(a.json).read_text())["rows"] if a.json and Path(a.json).exists() else []
    variants = [(text, parse_variant(text)) for text in a.variants]  # all checked before any sampling
    model = moldiff.load_pretrained(a.ckpt, device="cpu")
    for text, opts in variants:
        key = {"ckpt": a.ckpt, "n": a.n, "seed": a.seed, **opts}
        if any(r["settings"] == key for r in rows):
            print(f"{text}: already in {a.json}")
            continue
        t0 = time.perf_counter()
        steps = opts.pop("steps", 100)
        opts.setdefault("time_power", 1.0)  # a variant names what it changes from the uniform grid at temperature 1,
        opts.setdefault("temperature", 1.0)  # not the model's own settings for the step count
        with CountedSelfCond(opts.pop("self_cond", None), opts.pop("sc_temperature", None)) as counter, \
                MixedGrid(opts.pop("grid_mix", None)):
            mols = model.sample(a.n, steps=steps, seed=a.seed, decode="argmax", **opts)
        seconds = time.perf_counter() - t0
        m = moldiff.evaluate(mols, steps=steps)
        batches = (a.n + 99) // 100  # model.sample's default batch size
        row = {"settings": key, "variant": text, "sampling_seconds": round(seconds, 1),
               "network_calls": counter.calls // batches, **{k: m[k] for k in METRICS}}
        rows.append(row)
        print(f"{text:45s} strict mol {100 * m['mol_stability']:5.1f} %  valid {100 * m['validity']:5.1f} %  "
              f"connected {100 * m['connected_validity']:5.1f} %  EDM mol {100 * m['edm_mol_stability']:5.1f} %  "
              f"({seconds:.0f} s)", flush=True)
        if a.json:
            with atomic_write(a.json) as fh:
                json.dump({"hardware": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
                           "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
