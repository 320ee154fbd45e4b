#!/usr/bin/env python
"""Few-step distillation: teach one network call per step what two calls per step give.

On a coarse time grid a self-conditioning model is fed, at each step, the prediction it made at the
previous, noisier step. A second call at the same step, fed the first call's prediction, is much better
(25 steps with two calls each sample about as well as 50 steps), but costs twice the calls. This script
fine-tunes a copy of the model (the student) so that its single call matches the frozen model's
(the teacher's) second call, on the states the sampler actually visits:

1. ``--stage states``: sample ``--n-traj`` molecules on the ``--steps`` / ``--time-power`` grid with the
   model (one call a step, as ``moldiff-sample``) and keep every step's state (noisy molecule, time, fed-back
   prediction) with the teacher's answer there: a second call fed the first call's prediction. Written to
   ``OUT/states.pt``.
2. ``--stage train``: Lightning fine-tunes the student on those states: coordinates by the training
   loss's weighting of ``x0`` errors, classes by the cross-entropy against the teacher's probabilities.
   Writes ``OUT/model.pt`` (EMA weights, loadable by ``moldiff-sample ckpt=OUT/model.pt``).

``--stage rounds`` runs ``--rounds`` of both in one process with the states kept in memory: each round's student
samples and teaches the next round's states (``--grids``), beside anchor states of ``--anchor-ckpt`` on a fine grid
collected once (``--anchor``); round R's model is ``OUT/roundR/model.pt``.

A conditional model (one trained with property conditioning, e.g. the shipped ``qm9_conditional``) is
distilled the same way on the states of guided sampling (``--guidance``, default: the model's own scale): each
trajectory takes the atom count and the properties of a molecule of the half of the training split the model
was trained on, a random subset of them given (none with the model's unconditional probability), as in its
training, or exactly the properties named by ``--given`` (e.g. ``--given mu --guidance 4``: the states of sampling
with mu alone given, at the scale the model uses for it); at every step both of the guidance's calls are taught,
the conditional one (with the trajectory's targets) and the unconditional one, each its own second call.

Both stages run on a GPU when there is one (``--device``; ``--precision bf16-mixed`` for the training stage);
the states are kept on the host either way.

Score it with ``scripts/sampler_sweep.py --ckpt OUT/model.pt "steps=25,time_power=1.5,temperature=0.25" "steps=100"``.

    python scripts/distill_fewstep.py --out runs/distill --n-traj 2000 --minutes 60
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields
from pathlib import Path

import lightning as L
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from tqdm import tqdm

from moldiff.diffusion.joint import NoisyGraph
from moldiff.sampling.prior import sample_num_atoms
from moldiff.sampling.sampler import sample
from moldiff.training.checkpoint import SHIPPED, load_model, pretrained_path
from moldiff.training.module import property_mask
from moldiff.utils.graph import reverse_edge_index
from moldiff.utils.io import atomic_write, shown_path


def check_given(props: list[str], given: list[str] | None) -> None:
    """``--given`` must name properties the model conditions on."""
    unknown = [p for p in (given or []) if p not in props]
    if unknown:
        raise ValueError(f"--given {' '.join(unknown)}: not a property of this model (it takes {', '.join(props)})")


def conditional_targets(model, n: int, seed: int, data_root: str | None = None, dataset: str | None = None,
                        given: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Atom counts ``[n]`` and raw property targets ``[n, P]`` (NaN: not given) for the trajectories of a
    conditional model: molecules of the half of the training split it was trained on (``train_b``, EDM's
    protocol), each with a random subset of its properties given as in training (none with probability
    ``p_uncond``; ``subsets``: a subset whose size is uniform on 1..P), or, with ``given``, exactly those
    properties on every trajectory (e.g. ``["mu"]``: the states of sampling with mu alone given)."""
    from moldiff.data.cache import load_cache

    props = list(model.properties)
    check_given(props, given)
    cache = load_cache(dataset or model.dataset or "qm9", data_root)
    gen = torch.Generator().manual_seed(seed)
    half = torch.as_tensor(cache.indices("train_b"))
    pick = half[torch.randint(len(half), (n,), generator=gen)]
    values = cache.props[pick][:, cache.prop_columns(props)].float()
    if given:
        keep = torch.tensor([p in given for p in props]).expand(n, len(props))
    else:
        cond = model.hparams.get("conditioning", {})
        keep = property_mask(n, len(props), float(cond.get("p_uncond", 0.1)), bool(cond.get("subsets", False)),
                             generator=gen)
    counts = torch.as_tensor(cache.num_atoms()[pick.numpy()], dtype=torch.long)
    return counts, torch.where(keep, values, float("nan"))


def collect_states(model, n_traj: int, steps: int, time_power: float, seed: int, batch_size: int = 100,
                   driver=None, device: torch.device | str = "cpu", temperature: float = 1.0,
                   guidance: float | None = None, data_root: str | None = None, dataset: str | None = None,
                   given: list[str] | None = None) -> list[Data]:
    """Every step's state of ``n_traj`` sampled molecules with the teacher's (``model``'s) two-call answer (see
    module doc). The trajectories are sampled by ``driver`` (one call a step; default: the teacher itself), e.g.
    a student, so that a second round trains on the states the student visits; ``temperature`` is the sampler's
    (of the intermediate classes; the targets are the teacher's probabilities either way). The models must be on
    ``device``; the states are kept on the CPU. A conditional model drives guided trajectories (``guidance``,
    default its own scale) towards :func:`conditional_targets` (``given``: exactly these properties) and both of its
    calls are taught (module doc)."""
    diffusion, net = model.diffusion, model.net
    drive = driver.net if driver is not None else net
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    targets = None
    if model.properties:
        counts, targets = conditional_targets(model, n_traj, seed, data_root, dataset, given)
        w = float(model.default_guidance_scale if guidance is None else guidance)
    else:
        counts = sample_num_atoms(n_traj, model.statistics["num_atoms_hist"], None, gen)
    dev_gen = gen if device.type == "cpu" else torch.Generator(device=device).manual_seed(seed)
    states: list[Data] = []
    props = None  # the current batch's normalised targets [B, P] (conditional models)

    def second_call(fn, g: NoisyGraph, fed: tuple | None, first: tuple | None = None) -> tuple:
        first = diffusion.denoise(fn, g, fed) if first is None else first
        return diffusion.self_cond_from(diffusion.denoise(fn, g, diffusion.self_cond_from(first)))

    def record(g: NoisyGraph, fed: tuple | None, own: tuple) -> None:
        first_step = fed is None
        if first_step:  # the first step: what the denoiser itself takes for "no previous prediction"
            fed_in = (g.pos, g.pos.new_zeros(g.pos.shape[0], diffusion.atom.num_states),
                      g.pos.new_zeros(g.pos.shape[0], diffusion.charge.num_states),
                      g.pos.new_zeros(g.edge_index.shape[1], diffusion.bond.num_states))
        else:
            fed_in = fed
        if props is None:
            _append(states, g, fed_in, second_call(net, g, fed, own if drive is net else None), first_step)
        else:
            for p in (props, torch.full_like(props, float("nan"))):  # the conditional call, then the unconditional one
                _append(states, g, fed_in, second_call(model.denoiser_fn(p), g, fed), first_step, p)
        bar.update(g.num_graphs)

    with torch.no_grad(), tqdm(total=n_traj * steps, desc="states", unit="state") as bar:
        for lo in range(0, n_traj, batch_size):
            if targets is None:
                sample(diffusion, drive, counts[lo:lo + batch_size], steps, time_power=time_power, generator=dev_gen,
                       device=device, step_hook=record, temperature=temperature)
                continue
            props = model.normalize(targets[lo:lo + batch_size]).to(device)
            lead = driver or model
            sample(diffusion, lead.denoiser_fn(None), counts[lo:lo + batch_size], steps, time_power=time_power,
                   guided_denoiser=lead.denoiser_fn(props), guidance_scale=w, generator=dev_gen, device=device,
                   step_hook=record, temperature=temperature)
    return states


def _host(x):
    return x.cpu() if torch.is_tensor(x) else x


def _append(states: list[Data], g: NoisyGraph, fed: tuple, tgt: tuple, first: bool,
            props: torch.Tensor | None = None) -> None:
    if g.pos.device.type != "cpu":  # one copy to the host per step, not one per molecule
        g = NoisyGraph(**{f.name: _host(getattr(g, f.name)) for f in fields(g)})
        fed, tgt = tuple(map(_host, fed)), tuple(map(_host, tgt))
        props = _host(props)
    ptr = [0, *torch.bincount(g.batch, minlength=g.num_graphs).cumsum(0).tolist()]
    eb = g.batch[g.edge_index[0]]
    grouped = bool((eb[1:] >= eb[:-1]).all())  # PyG batches keep each graph's edges together
    eptr = [0, *torch.bincount(eb, minlength=g.num_graphs).cumsum(0).tolist()]
    for m in range(g.num_graphs):
        n0, n1 = ptr[m], ptr[m + 1]
        em = slice(eptr[m], eptr[m + 1]) if grouped else eb == m
        extra = {} if props is None else {"props": props[m:m + 1].clone()}
        states.append(Data(
            pos=g.pos[n0:n1].clone(), atom_types=g.atom_types[n0:n1].clone(), charges=g.charges[n0:n1].clone(),
            edge_index=g.edge_index[:, em] - n0, bond_types=g.bond_types[em].clone(), t=g.t[m:m + 1].clone(),
            no_sc=torch.tensor([first]),
            sc_pos=fed[0][n0:n1].clone(), sc_a=fed[1][n0:n1].clone(), sc_c=fed[2][n0:n1].clone(),
            sc_b=fed[3][em].half(),
            tgt_pos=tgt[0][n0:n1].clone(), tgt_a=tgt[1][n0:n1].clone(), tgt_c=tgt[2][n0:n1].clone(),
            tgt_b=tgt[3][em].half(), num_nodes=n1 - n0, **extra,
        ))


class DistillModule(L.LightningModule):
    """The student: the teacher's network, trained to give its second call's answer in one call."""

    def __init__(self, model, lr: float, warmup: int = 50) -> None:
        super().__init__()
        self.net, self.diffusion, self.lr, self.warmup = model.net, model.diffusion, lr, warmup
        self.net.train()

    def training_step(self, batch, batch_idx):
        d = self.diffusion
        G = batch.num_graphs
        rev = reverse_edge_index(batch.edge_index, batch.num_nodes)
        g = NoisyGraph(batch.pos, batch.atom_types, batch.charges, batch.bond_types, batch.edge_index,
                       batch.batch, batch.t, G, rev)
        sc = (batch.sc_pos, batch.sc_a, batch.sc_c, batch.sc_b.float())
        props = getattr(batch, "props", None)  # a conditional model's targets [G, P] (NaN: not given)

        def net(*args, **kw):
            return self.net(*args, props=props, **kw)

        out = d.loss_terms(g, d.denoise(net if props is not None else self.net, g, sc),
                           (batch.tgt_pos, batch.tgt_a, batch.tgt_c, batch.tgt_b.float()))
        self.log_dict({k: out[k] for k in ("loss", "pos", "bonds")}, prog_bar=True, batch_size=G)
        return out["loss"]

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / self.warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def train_student(model, states: list[Data], a, out: Path, device: torch.device, sources: list,
                  init=None) -> dict:
    """Fine-tune ``init`` (default: ``model`` itself, in place) on ``states`` towards their targets; writes
    ``out/model.pt`` (EMA weights, ``model``'s hyper-parameters) and ``out/record.json``."""
    from lightning.pytorch.callbacks import EMAWeightAveraging

    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(0)
    loader = DataLoader(states, batch_size=a.batch_size, shuffle=True, drop_last=True, num_workers=a.workers,
                        persistent_workers=a.workers > 0)
    module = DistillModule(init or model, a.lr)
    minutes = int(a.minutes)
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=a.precision, max_epochs=-1,
        max_steps=a.max_steps, max_time={"minutes": minutes, "seconds": int(round((a.minutes - minutes) * 60))},
        callbacks=[EMAWeightAveraging(decay=a.ema)], logger=False, enable_checkpointing=False,
        default_root_dir=str(out), gradient_clip_val=1.0, log_every_n_steps=50,
    )
    t0 = time.perf_counter()
    trainer.fit(module, loader)
    seconds = time.perf_counter() - t0
    ckpt = torch.load(model.path, map_location="cpu", weights_only=True)
    state = {f"net.{k}": v.detach().cpu().clone() for k, v in module.net.state_dict().items()}
    record = {"teacher": shown_path(model.path), "init": shown_path(init.path) if init else shown_path(model.path),
              "states_meta": sources, "states": len(states), "optimizer_steps": trainer.global_step,
              "batch_size": a.batch_size, "lr": a.lr, "ema": a.ema, "workers": a.workers,
              "wall_time_min": round(seconds / 60, 2), "states_per_second": round(trainer.global_step * a.batch_size
                                                                                  / max(seconds, 1e-9)),
              "threads": torch.get_num_threads(),
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "precision": a.precision}
    with atomic_write(out / "model.pt", "wb") as fh:
        torch.save({"state_dict": state, "hyper_parameters": ckpt["hyper_parameters"], "training_record": record}, fh)
    with atomic_write(out / "record.json") as fh:
        json.dump(record, fh, indent=1)
    print(json.dumps(record), flush=True)
    return record


def _grid(spec: str) -> tuple[int, float, int, float, int]:
    """``STEPS:TIME_POWER:N_TRAJ[:TEMPERATURE[:REPEAT]]``, e.g. ``25:2:4000`` or ``25:1.5:2000:0.25``; REPEAT
    (default 1) lists each of the grid's states that many times in the training set (a weight)."""
    try:
        steps, power, n, *rest = spec.split(":")
        if len(rest) > 2:
            raise ValueError
        temp = float(rest[0]) if rest else 1.0
        repeat = int(rest[1]) if len(rest) > 1 else 1
        if int(steps) < 1 or int(n) < 1 or temp <= 0 or repeat < 1:
            raise ValueError
        return int(steps), float(power), int(n), temp, repeat
    except ValueError:
        raise SystemExit(f"distill_fewstep.py: grid {spec!r} is not STEPS:TIME_POWER:N_TRAJ[:TEMPERATURE[:REPEAT]] "
                         "with positive steps, trajectories, temperature and repeat (e.g. 25:2:4000 or "
                         "25:1.5:2000:0.25)")


def _collect(model, grids: list[str], seed: int, a, device, driver=None) -> tuple[list[Data], list[dict]]:
    states, meta = [], []
    for k, spec in enumerate(grids):
        steps, power, n, temp, repeat = _grid(spec)
        t0 = time.perf_counter()
        got = collect_states(model, n, steps, power, seed + k, batch_size=a.traj_batch, driver=driver, device=device,
                             temperature=temp, guidance=a.guidance, data_root=a.data_root,
                             dataset=a.dataset, given=a.given)
        meta.append({"teacher": shown_path(model.path), "driver": shown_path((driver or model).path), "n_traj": n,
                     "steps": steps, "time_power": power, "temperature": temp, "repeat": repeat, "seed": seed + k,
                     **({"guidance": float(model.default_guidance_scale if a.guidance is None else a.guidance)}
                        if model.properties else {}),
                     **({"given": list(a.given)} if model.properties and a.given else {}),
                     "states": len(got), "seconds": round(time.perf_counter() - t0, 1)})
        print(f"{len(got)} states ({spec}) in {meta[-1]['seconds']} s", flush=True)
        states += got * repeat  # the same Data objects listed again: a weight, no copy
    return states, meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=None, help="teacher (default: the shipped undistilled QM9 model, qm9_base)")
    ap.add_argument("--driver", default=None, help="model that samples the trajectories (default: the teacher)")
    ap.add_argument("--init", default=None, help="student's starting weights (default: the teacher's)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--stage", choices=("states", "train", "all", "rounds"), default="all",
                    help="rounds: --rounds self-taught rounds in one process, states kept in memory (see --grids)")
    ap.add_argument("--states", nargs="+", default=None,
                    help="states file(s) to train on (default: OUT/states.pt), e.g. one per time grid")
    ap.add_argument("--n-traj", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--time-power", type=float, default=2.0)
    ap.add_argument("--temperature", type=float, default=1.0,
                    help="--stage states: the sampler's temperature of the intermediate classes")
    ap.add_argument("--seed", type=int, default=1, help="of the trajectories (the evaluation uses seed 0)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of --stage rounds")
    ap.add_argument("--grids", nargs="+", default=["25:2:2000", "50:1:600"],
                    help="--stage rounds: each round's states, STEPS:TIME_POWER:N_TRAJ[:TEMPERATURE[:REPEAT]] sampled "
                         "(at that temperature, default 1) and taught by the previous round's student (the first "
                         "round: --ckpt), each state listed REPEAT times (default 1) in the training set")
    ap.add_argument("--anchor", nargs="*", default=["100:1:400"],
                    help="--stage rounds: states of --anchor-ckpt collected once and kept in every round (the same "
                         "STEPS:TIME_POWER:N_TRAJ[:TEMPERATURE[:REPEAT]] specs as --grids)")
    ap.add_argument("--anchor-ckpt", default=None,
                    help="teacher of the anchor states (default: the shipped undistilled QM9 model, qm9_base; for a "
                         "conditional --ckpt, that model itself)")
    ap.add_argument("--guidance", type=float, default=None,
                    help="a conditional model's guidance scale on its trajectories (default: its own)")
    ap.add_argument("--given", nargs="+", default=None, metavar="PROP",
                    help="a conditional model's trajectories give exactly these properties (default: a random subset "
                         "per trajectory, as in training), e.g. --given mu --guidance 4: the states of mu alone")
    ap.add_argument("--data-root", default=None,
                    help="a conditional model's dataset cache folder (its targets and atom counts; default: data/processed)")
    ap.add_argument("--dataset", default=None, help="a conditional model's cache name (default: the model's dataset)")
    ap.add_argument("--traj-batch", type=int, default=100, help="trajectories sampled at once (larger on a GPU)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader processes of the training stage")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--minutes", type=float, default=60.0, help="training time (a round's, with --stage rounds)")
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto", help="auto (a GPU when there is one) | cpu | cuda")
    ap.add_argument("--precision", default="32-true", help="Lightning precision of the training stage, e.g. bf16-mixed")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          "cpu" if a.device == "auto" else a.device)
    base = str(pretrained_path(SHIPPED["qm9_base"]))  # the undistilled model: the default teacher and anchor
    model = load_model(a.ckpt or base, device=device)
    if a.given:  # a wrong --given stops the run here, before any sampling
        if not model.properties:
            ap.error(f"--given: {a.ckpt or base} is not a conditional model (it takes no properties)")
        try:
            check_given(list(model.properties), a.given)
        except ValueError as exc:
            ap.error(str(exc))
    if a.stage == "rounds":
        for spec in a.grids + a.anchor:  # a typo stops the run before any sampling
            _grid(spec)
        # a conditional model anchors on its own states (the undistilled unconditional model knows no properties)
        anchor_teacher = load_model(a.anchor_ckpt, device=device) if a.anchor_ckpt else model if model.properties else \
            load_model(base, device=device)
        anchor, anchor_meta = _collect(anchor_teacher, a.anchor, a.seed + 100, a, device)
        for r in range(1, a.rounds + 1):
            states, meta = _collect(model, a.grids, a.seed + 10 * r, a, device)
            train_student(model, states + anchor, a, out / f"round{r}", device, meta + anchor_meta)
            del states
            model = load_model(out / f"round{r}" / "model.pt", device=device)
        return 0
    states_file = out / "states.pt"
    if a.stage in ("states", "all"):
        driver = load_model(a.driver, device=device) if a.driver else None
        states, meta = _collect(model, [f"{a.steps}:{a.time_power}:{a.n_traj}:{a.temperature}"], a.seed, a, device,
                                driver=driver)
        with atomic_write(states_file, "wb") as fh:
            torch.save({"states": states, "meta": meta[0]}, fh)
        print(f"-> {states_file}")
    if a.stage in ("train", "all"):
        files = [Path(f) for f in a.states] if a.states else [states_file]
        states, meta = [], []
        for f in files:
            saved = torch.load(f, weights_only=False)
            states += saved["states"] if isinstance(saved, dict) else saved
            meta.append(saved["meta"] if isinstance(saved, dict) else {"file": str(f)})
        for m, f in zip(meta, files):
            m.setdefault("file", str(f))
        train_student(model, states, a, out, device, meta, init=load_model(a.init, device=device) if a.init else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
