"""Reverse-process sampling on any time grid: ancestral or DDIM-like, with classifier-free guidance
and inpainting. Operates on a ``JointDiffusion`` and a denoiser callable (see ``moldiff.diffusion.joint``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch_geometric.data import Batch, Data

from moldiff.diffusion.categorical import symmetrize_edges
from moldiff.diffusion.joint import JointDiffusion, NoisyGraph
from moldiff.utils.geometry import zero_com
from moldiff.utils.graph import full_edge_index, reverse_edge_index

SamplerName = Literal["ancestral", "ddim"]
SAMPLERS = ("ancestral", "ddim")


@dataclass
class Fragment:
    """Atoms kept fixed during sampling (inpainting); they become atoms ``0..k-1`` of each molecule.

    Attributes:
        pos: ``[k,3]`` coordinates (Angstrom, any frame; returned unchanged).
        atom_types, charges: ``[k]`` class indices.
        bond_types: ``[k,k]`` symmetric bond classes among the fixed atoms.
    """

    pos: torch.Tensor
    atom_types: torch.Tensor
    charges: torch.Tensor
    bond_types: torch.Tensor

    @property
    def num_atoms(self) -> int:
        return int(self.pos.shape[0])


def time_grid(steps: int, device=None, power: float = 1.0) -> torch.Tensor:
    """``steps + 1`` times from 1 down to 0: ``t_k = (1 - k / steps) ** power``. ``power=1`` is uniform in t;
    a larger power puts more of the steps near t = 0, where the last bond lengths and angles are set."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not power > 0:
        raise ValueError(f"the time-grid power must be > 0, got {power}")
    grid = torch.linspace(1.0, 0.0, steps + 1, device=device)
    return grid if power == 1 else grid.double().pow(power).float()


def empty_graphs(num_atoms: torch.Tensor, device=None) -> Batch:
    """Fully connected graph skeletons for the given atom counts."""
    data = []
    for n in num_atoms.tolist():
        ei = full_edge_index(int(n))
        z = torch.zeros(int(n), dtype=torch.long)
        # placeholders so that the batch knows how to split every field (``to_data_list`` works on the output)
        d = Data(edge_index=ei, pos=torch.zeros(int(n), 3), atom_types=z, charges=z,
                 bond_types=torch.zeros(ei.shape[1], dtype=torch.long), num_nodes=int(n))
        data.append(d)
    return Batch.from_data_list(data).to(device)


@torch.no_grad()
def sample(
    diffusion: JointDiffusion,
    denoiser: Callable,
    num_atoms: torch.Tensor,
    steps: int = 100,
    sampler: SamplerName = "ancestral",
    guided_denoiser: Callable | None = None,
    guidance_scale: float = 1.0,
    fragment: Fragment | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    callback: Callable[[int, int], None] | None = None,
    return_probs: bool = False,
    time_power: float = 1.0,
    temperature: float = 1.0,
    guidance_interval: tuple[float, float] = (0.0, 1.0),
    step_hook: Callable[[NoisyGraph, tuple | None, tuple], None] | None = None,
    prediction_hook: Callable[[NoisyGraph, tuple], tuple] | None = None,
) -> Batch:
    """Generate molecules.

    Args:
        diffusion: the trained noise process.
        denoiser: the network callable (unconditional, or conditional without guidance).
        num_atoms: atom counts ``[G]``.
        steps: number of reverse steps (any positive integer).
        sampler: ``ancestral`` (posterior sampling) or ``ddim`` (deterministic coordinates; categorical
            variables still follow the posterior).
        guided_denoiser: the conditional callable for classifier-free guidance, combined as
            ``uncond + w (cond - uncond)`` on coordinates and logits; ``denoiser`` is then the unconditional one.
        guidance_scale: ``w``; 1 uses ``guided_denoiser`` alone.
        guidance_interval: ``(lo, hi)``: guidance applies at the steps whose time ``t`` lies in this
            interval; elsewhere ``guided_denoiser`` alone is used (one network call a step instead of two).
        fragment: atoms to keep fixed (inpainting).
        generator: RNG for reproducible sampling.
        callback: called as ``callback(step, steps)`` after each step.
        time_power: spacing of the time grid (:func:`time_grid`): 1 uniform in t, 2 denser near t = 0.
        temperature: of the clean-class probabilities the intermediate categorical steps sample from,
            ``softmax(logits / temperature)``: 1 is the model's distribution, below 1 sharper (fewer
            unlikely atom, charge and bond classes drawn on coarse grids). The last step is an argmax either way.
        step_hook: called at every step as ``step_hook(state, fed_back, prediction)``: the noisy state, the
            self-conditioning input it was given (None at the first step) and the network's prediction
            ``(pos0, atom, charge, bond logits)`` (e.g. to record the states the sampler visits).
        prediction_hook: called at every step as ``prediction_hook(state, prediction)``; its return value
            replaces the network's prediction ``(pos0, atom, charge, bond logits)`` before the reverse step and
            self-conditioning (e.g. :class:`moldiff.sampling.guidance.PredictorGuidance`).
        return_probs: also attach the final step's clean-class probabilities ``atom_probs [N,Ka]``,
            ``charge_probs [N,Kc]`` and ``bond_probs [E,Kb]`` (symmetric), for decodings other than argmax.

    With a self-conditioning model every step after the first gets the previous step's prediction.

    Returns:
        A ``Batch`` with ``pos``, ``atom_types``, ``charges``, ``edge_index``, ``bond_types`` (class indices).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {list(SAMPLERS)}")
    if not temperature > 0:
        raise ValueError(f"the sampling temperature must be > 0, got {temperature}")
    g_lo, g_hi = (float(v) for v in guidance_interval)
    if not 0.0 <= g_lo <= g_hi <= 1.0:
        raise ValueError(f"guidance_interval must be [lo, hi] with 0 <= lo <= hi <= 1, got {list(guidance_interval)}")
    device = torch.device(device)
    skel = empty_graphs(num_atoms, device)
    G, N = skel.num_graphs, skel.num_nodes
    batch, ei = skel.batch, skel.edge_index
    rev = reverse_edge_index(ei, N)
    gen = generator

    pos = diffusion.pos.prior(N, batch, G, device=device, generator=gen)
    a = diffusion.atom.prior(N, device, gen)
    c = diffusion.charge.prior(N, device, gen)
    b = symmetrize_edges(diffusion.bond.prior(ei.shape[1], device, gen), ei, rev)

    fixed = None
    if fragment is not None:
        fixed, fixed_e, frag = _fragment_layout(fragment, skel, device)

    def net(g: NoisyGraph, sc, guided: bool):
        if guided_denoiser is None:
            return diffusion.denoise(denoiser, g, sc)
        cond = diffusion.denoise(guided_denoiser, g, sc)
        if guidance_scale == 1.0 or not guided:
            return cond
        unc = diffusion.denoise(denoiser, g, sc)
        w = guidance_scale
        return tuple(u + w * (k - u) for u, k in zip(unc, cond))

    grid = time_grid(steps, device, time_power)
    guided_steps = [g_lo <= t <= g_hi for t in grid.tolist()]  # on the host: no device sync in the loop
    deterministic = sampler == "ddim"
    shift = None
    sc = None  # previous prediction (self-conditioning)
    for k in range(steps):
        t_val, s_val = grid[k], grid[k + 1]
        tg = t_val.expand(G)
        g = NoisyGraph(pos, a, c, b, ei, batch, tg, G, rev)
        pos0, la, lc, lb = net(g, sc, guided_steps[k])
        if prediction_hook is not None:
            pos0, la, lc, lb = prediction_hook(g, (pos0, la, lc, lb))
        if step_hook is not None:
            step_hook(g, sc, (pos0, la, lc, lb))
        if diffusion.self_conditioning:
            sc = diffusion.self_cond_from((pos0, la, lc, lb))
        if fixed is not None:
            # put the fragment into the frame of the prediction (translation that best matches)
            shift = _frag_shift(pos0, frag["pos"], fixed, batch, G)
            pos0 = torch.where(fixed.unsqueeze(-1), frag["pos"] + shift[batch], pos0)
        if k == steps - 1:
            pos, a = pos0, la.argmax(-1)
            c, b = lc.argmax(-1), symmetrize_edges(lb.argmax(-1), ei, rev)
            if return_probs:
                probs = (la.softmax(-1), lc.softmax(-1), symmetrize_edges(lb.softmax(-1), ei, rev))
        else:
            nxt = diffusion.reverse_step(g, (pos0, la, lc, lb), s_val.expand(G), temperature, deterministic, gen)
            pos, a, c, b = nxt.pos, nxt.atom_types, nxt.charges, nxt.bond_types
            if fixed is not None:
                pos, a, c, b = _renoise_fragment(diffusion, pos, a, c, b, frag, fixed, fixed_e, shift, s_val, batch, G, ei, rev, gen)
        if callback is not None:
            callback(k + 1, steps)

    if fixed is not None:
        # return the fragment exactly where it was given
        pos = torch.where(fixed.unsqueeze(-1), frag["pos"], pos - shift[batch])
        a = torch.where(fixed, frag["atom_types"], a)
        c = torch.where(fixed, frag["charges"], c)
        b = torch.where(fixed_e, frag["bond_types"], b)
    out = skel.clone()
    out.pos, out.atom_types, out.charges, out.bond_types = pos, a, c, b
    if return_probs:
        out.atom_probs, out.charge_probs, out.bond_probs = probs
    return out


def _fragment_layout(fragment: Fragment, skel: Batch, device):
    k = fragment.num_atoms
    counts = skel.ptr[1:] - skel.ptr[:-1]
    if (counts <= k).any():
        raise ValueError(f"every molecule must have more atoms than the fragment ({k}); got counts {counts.tolist()}")
    local = torch.arange(skel.num_nodes, device=device) - skel.ptr[skel.batch]
    fixed = local < k
    lidx = local.clamp_max(k - 1)
    frag_pos = fragment.pos.to(device, torch.float32)[lidx]
    fa = fragment.atom_types.to(device)[lidx]
    fc = fragment.charges.to(device)[lidx]
    i, j = skel.edge_index
    fixed_e = fixed[i] & fixed[j]
    fb = fragment.bond_types.to(device)[lidx[i], lidx[j]]
    return fixed, fixed_e, {"pos": frag_pos, "atom_types": fa, "charges": fc, "bond_types": fb}


def _frag_shift(pos0, frag_pos, fixed, batch, G):
    from torch_geometric.utils import scatter

    w = fixed.float().unsqueeze(-1)
    num = scatter((pos0 - frag_pos) * w, batch, 0, dim_size=G, reduce="sum")
    den = scatter(w, batch, 0, dim_size=G, reduce="sum").clamp_min(1)
    return num / den  # [G,3]


def _renoise_fragment(diffusion, pos, a, c, b, frag, fixed, fixed_e, shift, s_val, batch, G, ei, rev, gen):
    """RePaint-style: replace the fixed atoms by a forward-noised copy at time ``s``."""
    N = pos.shape[0]
    ab = diffusion.pos.schedule.alpha_bar(s_val)
    centred = frag["pos"] + shift[batch]
    noise = torch.randn(pos.shape, generator=gen, device=pos.device)
    pos = torch.where(fixed.unsqueeze(-1), ab.sqrt() * centred + (1 - ab).sqrt() * noise, pos)
    pos = zero_com(pos, batch, G)
    sn = s_val.expand(N)
    a = torch.where(fixed, diffusion.atom.q_sample(frag["atom_types"], sn, gen), a)
    c = torch.where(fixed, diffusion.charge.q_sample(frag["charges"], sn, gen), c)
    be = symmetrize_edges(diffusion.bond.q_sample(frag["bond_types"], s_val.expand(ei.shape[1]), gen), ei, rev)
    b = torch.where(fixed_e, be, b)
    return pos, a, c, b
