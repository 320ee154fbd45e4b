"""``moldiff-sample``: generate molecules from a checkpoint (default: the shipped QM9 model)."""

from __future__ import annotations

import csv
import inspect
import json
import logging
import sys
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch_geometric.data import Batch
from tqdm import tqdm

from moldiff.chem.molecule import Molecule
from moldiff.chem.relax import RELAX_METHODS
from moldiff.cli.common import friendly_errors
from moldiff.data.graph import data_to_molecules
from moldiff.sampling.prior import sample_num_atoms
from moldiff.sampling.sampler import Fragment, sample
from moldiff.sampling.writer import ResumableSDFWriter
from moldiff.training.checkpoint import CheckpointError, LoadedModel, load_model

log = logging.getLogger("moldiff.sample")

#: Values of ``decode``: how the last step's class probabilities become a molecular graph.
DECODINGS = ("argmax", "map")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is available")
    return torch.device(name)


def read_targets(cfg: DictConfig, model: LoadedModel, n: int) -> torch.Tensor | None:
    """Raw target values ``[n, P]`` from ``conditioning.<prop>=value`` or ``conditioning.targets_csv``."""
    given = {k: v for k, v in cfg.conditioning.items() if k != "targets_csv" and v is not None}
    props = model.properties
    if not props:
        if given or cfg.conditioning.targets_csv:
            raise ValueError(f"model {model.path} is unconditional; it cannot take targets {sorted(given) or 'from CSV'}")
        return None
    if cfg.conditioning.targets_csv:
        path = Path(cfg.conditioning.targets_csv)
        if not path.exists():
            raise FileNotFoundError(f"targets_csv {path} does not exist")
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows:
            raise ValueError(f"{path}: no rows")
        missing = [p for p in props if p not in rows[0]]
        if missing:
            raise ValueError(f"{path}: missing columns {missing} (model conditions on {props})")
        vals = []
        for k, row in enumerate(rows, start=2):
            try:
                vals.append([float(row[p]) for p in props])
            except ValueError:
                raise ValueError(f"{path}, line {k}: non-numeric target in {row}") from None
        t = torch.tensor(vals, dtype=torch.float32)
        return t[torch.arange(n) % len(t)]
    missing = [p for p in props if p not in given]
    if missing:
        raise ValueError(f"model conditions on {props}; give conditioning.{missing[0]}=VALUE (units: dataset's) or conditioning.targets_csv=")
    extra = [k for k in given if k not in props]
    if extra:
        raise ValueError(f"model does not condition on {extra}; it conditions on {props}")
    return torch.tensor([[float(given[p]) for p in props]] * n, dtype=torch.float32)


def read_fragment(path: str, model: LoadedModel) -> Fragment:
    from moldiff.chem.io import read_sdf

    mols = read_sdf(path)
    if not mols:
        raise ValueError(f"{path}: no molecule to inpaint")
    from moldiff.chem.rdkit_conv import from_rdkit, to_rdkit
    from rdkit import Chem

    mol = mols[0]
    if mol.has_bonds and (mol.bonds[:, 2] == 4).any():
        rd = to_rdkit(mol)
        Chem.Kekulize(rd, clearAromaticFlags=True)
        mol = from_rdkit(rd, name=mol.name)
    v = model.vocab
    where = f"{path}, record 1: "
    types = torch.tensor([v.element_index(e, where) for e in mol.elements])
    charges = torch.tensor([v.charge_index(int(q), where) for q in mol.charges])
    return Fragment(torch.tensor(mol.pos, dtype=torch.float32), types, charges, torch.tensor(mol.bond_matrix()))


def _sampler_gives_probabilities() -> bool:
    """Whether ``sample`` can attach the last step's probabilities (``return_probs``)."""
    params = inspect.signature(sample).parameters
    return "return_probs" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def check_decode_relax(cfg: DictConfig) -> None:
    """Validate the ``decode*`` and ``relax*`` options (one-line ``ValueError`` naming the option)."""
    if cfg.decode not in DECODINGS:
        raise ValueError(f"decode={cfg.decode!r}; choose one of {list(DECODINGS)}")
    if cfg.relax not in RELAX_METHODS:
        raise ValueError(f"relax={cfg.relax!r}; choose one of {list(RELAX_METHODS)}")
    if cfg.relax_max_iters < 1:
        raise ValueError(f"relax_max_iters must be >= 1, got {cfg.relax_max_iters}")
    if cfg.relax_keep_raw and cfg.relax == "none":
        raise ValueError("relax_keep_raw=true needs relax=mmff or relax=uff")
    if cfg.decode == "map":
        if not cfg.decode_time_limit > 0:
            raise ValueError(f"decode_time_limit must be > 0 seconds, got {cfg.decode_time_limit}")
        if cfg.decode_max_bond_length is not None and not cfg.decode_max_bond_length > 0:
            raise ValueError(f"decode_max_bond_length must be > 0 Angstrom or null, got {cfg.decode_max_bond_length}")
        if not _sampler_gives_probabilities():
            raise ValueError("decode=map needs the last step's probabilities, which this sampler does not return")


def decode_settings(cfg: DictConfig) -> dict:
    """The decoding and relaxation settings that change the output (part of the resume fingerprint)."""
    out: dict = {"decode": cfg.decode}
    if cfg.decode == "map":
        out["decode_options"] = {"time_limit": float(cfg.decode_time_limit), "connected": bool(cfg.decode_connected),
                                 "min_bond_prob": float(cfg.decode_min_bond_prob),
                                 "max_bond_length": None if cfg.decode_max_bond_length is None
                                 else float(cfg.decode_max_bond_length)}
    out["relax"] = cfg.relax
    if cfg.relax != "none":
        out["relax_max_iters"] = int(cfg.relax_max_iters)
    return out


def pin_fragment(out: Batch, k: int) -> None:
    """Make the first ``k`` atoms of every molecule (an inpainted fragment) certain in ``out``'s probabilities."""
    import torch.nn.functional as F

    local = torch.arange(out.num_nodes, device=out.batch.device) - out.ptr[out.batch]
    fixed = local < k
    i, j = out.edge_index
    fixed_e = fixed[i] & fixed[j]
    for probs, classes, mask in (("atom_probs", "atom_types", fixed), ("charge_probs", "charges", fixed),
                                 ("bond_probs", "bond_types", fixed_e)):
        p = getattr(out, probs)
        one = F.one_hot(getattr(out, classes), p.shape[-1]).to(p.dtype)
        setattr(out, probs, torch.where(mask.unsqueeze(-1), one, p))


def map_decode_output(out: Batch, cfg: DictConfig, model: LoadedModel,
                      fragment: Fragment | None) -> tuple[Batch, list[str]]:
    """Replace the argmax classes of a sampled batch by the valence-constrained MAP assignment.

    Returns:
        ``(decoded batch, one status per molecule)``.
    """
    from moldiff.metrics.valence import ALLOWED_VALENCES
    from moldiff.sampling.decode import map_decode_batch

    out = out.cpu()
    if fragment is not None:
        pin_fragment(out, fragment.num_atoms)
    v = model.vocab
    out, results = map_decode_batch(
        out, v.elements, v.charges, ALLOWED_VALENCES, connected=bool(cfg.decode_connected),
        time_limit=float(cfg.decode_time_limit), min_bond_prob=float(cfg.decode_min_bond_prob),
        max_bond_length=None if cfg.decode_max_bond_length is None else float(cfg.decode_max_bond_length))
    return out, [r.status for r in results]


def relax_batch(mols: list[Molecule], cfg: DictConfig, fixed: int) -> tuple[list[Molecule], list[Molecule]]:
    """Relax molecules as configured; returns ``(relaxed, raw)`` where ``raw`` keeps the network coordinates."""
    from moldiff.chem.relax import relax_molecule

    relaxed, raw = [], []
    for m in mols:
        r = relax_molecule(m, cfg.relax, int(cfg.relax_max_iters), fixed_atoms=range(fixed))
        new = r.molecule if r.molecule is not m else Molecule(m.elements, m.pos, m.charges, m.bonds, dict(m.props), m.name)
        new.props.update(r.tags())
        relaxed.append(new)
        raw.append(Molecule(m.elements, m.pos, m.charges, m.bonds, {**m.props, "moldiff_relax": "none"}, m.name))
    return relaxed, raw


def raw_path(out: str | Path) -> Path:
    """``<out stem>.raw.sdf`` next to ``out`` (``mols.sdf`` -> ``mols.raw.sdf``)."""
    out = Path(out)
    name = out.name[:-3] if out.name.endswith(".gz") else out.name
    return out.with_name(Path(name).stem + ".raw.sdf")


def generate(cfg: DictConfig) -> dict:
    if cfg.n_samples < 1 or cfg.batch_size < 1 or cfg.steps < 1:
        raise ValueError("n_samples, batch_size and steps must be positive")
    check_decode_relax(cfg)
    device = pick_device(cfg.device)
    try:
        model = load_model(cfg.ckpt, device=device)
    except CheckpointError as exc:
        raise ValueError(str(exc)) from None
    targets = read_targets(cfg, model, cfg.n_samples)
    fragment = read_fragment(cfg.inpaint.sdf, model) if cfg.inpaint.sdf else None
    num_atoms_cfg = OmegaConf.to_container(cfg.num_atoms) if OmegaConf.is_config(cfg.num_atoms) else cfg.num_atoms
    settings = {
        "ckpt": model.path, "steps": cfg.steps, "sampler": cfg.sampler, "seed": cfg.seed, "batch_size": cfg.batch_size,
        "num_atoms": num_atoms_cfg, "guidance_scale": cfg.guidance_scale, "inpaint": cfg.inpaint.sdf,
        "targets": None if targets is None else targets[:1].tolist() if not cfg.conditioning.targets_csv else cfg.conditioning.targets_csv,
        "device": device.type, **decode_settings(cfg),
    }
    writer = ResumableSDFWriter(cfg.out, settings, resume=cfg.resume)
    if writer.count:
        log.info("resuming: %d molecules already in %s", writer.count, writer.partial)
    raw_writer = ResumableSDFWriter(raw_path(cfg.out), settings, resume=cfg.resume) if cfg.relax_keep_raw else None
    writers = [w for w in (writer, raw_writer) if w is not None]
    n, bs = cfg.n_samples, cfg.batch_size
    num_batches = (n + bs - 1) // bs
    hist = model.statistics["num_atoms_hist"]
    min_atoms = fragment.num_atoms + 1 if fragment else 1
    all_mols = []
    complete = False
    bar = tqdm(total=n, initial=min(writer.batches_done * bs, n), desc="sampling", unit="mol", disable=not cfg.progress, file=sys.stderr)
    try:
        for b in range(num_batches):
            lo, hi = b * bs, min(n, (b + 1) * bs)
            if all(b < w.batches_done for w in writers):
                continue
            gen = torch.Generator(device="cpu").manual_seed(int(cfg.seed) * 1_000_003 + b)
            counts = sample_num_atoms(hi - lo, hist, num_atoms_cfg, gen, min_atoms=min_atoms)
            dev_gen = gen if device.type == "cpu" else torch.Generator(device=device).manual_seed(int(cfg.seed) * 1_000_003 + b)
            cond = None
            guided = None
            if targets is not None:
                props = model.normalize(targets[lo:hi]).to(device)
                guided = model.denoiser_fn(props)
                cond = targets[lo:hi]
            extra = {"return_probs": True} if cfg.decode == "map" else {}
            out = sample(
                model.diffusion, model.denoiser_fn(None), counts, steps=cfg.steps, sampler=cfg.sampler,
                guided_denoiser=guided, guidance_scale=cfg.guidance_scale, fragment=fragment,
                generator=dev_gen, device=device, **extra,
            )
            statuses = None
            if cfg.decode == "map":
                out, statuses = map_decode_output(out, cfg, model, fragment)
            mols = data_to_molecules(out.cpu(), model.vocab)
            finite = [bool(np.isfinite(m.pos).all()) for m in mols]
            if not all(finite):
                log.warning("batch %d: %d molecules with non-finite coordinates were dropped", b, finite.count(False))
            for k, m in enumerate(mols):
                idx = lo + k
                m.name = f"moldiff_{idx:06d}"
                m.props = {"moldiff_index": idx, "moldiff_steps": cfg.steps, "moldiff_sampler": cfg.sampler,
                           "moldiff_seed": cfg.seed, "moldiff_checkpoint": Path(model.path).name,
                           "moldiff_decoding": cfg.decode}
                if statuses is not None:
                    m.props["moldiff_decode_status"] = statuses[k]
                m.props["moldiff_relax"] = cfg.relax
                if cond is not None:
                    for p, val in zip(model.properties, cond[k].tolist()):
                        m.props[f"target_{p}"] = float(val)
                    m.props["guidance_scale"] = float(cfg.guidance_scale)
                if fragment is not None:
                    m.props["inpaint_fixed_atoms"] = fragment.num_atoms
            kept = [m for m, ok in zip(mols, finite) if ok]
            raw = kept
            if cfg.relax != "none":
                kept, raw = relax_batch(kept, cfg, fragment.num_atoms if fragment is not None else 0)
            if b >= writer.batches_done:
                writer.append(kept)
            if raw_writer is not None and b >= raw_writer.batches_done:
                raw_writer.append(raw)
            bar.update(len(mols))
        complete = True
    except KeyboardInterrupt:
        print(f"\ninterrupted: {writer.count} finished molecules kept in {cfg.out}; rerun the same command to resume",
              file=sys.stderr)
    finally:
        bar.close()
        path = writer.finalize(complete)
        if raw_writer is not None:
            raw_writer.finalize(complete)
    from moldiff.chem.io import read_sdf

    from moldiff.metrics.evaluate import DECODE_STATUS_TAG, RELAX_STATUS_TAG, tag_counts

    all_mols = read_sdf(path)
    result = {"out": str(path), "n_molecules": len(all_mols), "complete": complete}
    result["decoding"] = {"mode": cfg.decode, "status": tag_counts(all_mols, DECODE_STATUS_TAG)}
    if cfg.decode == "map":
        result["decoding"]["fallbacks"] = result["decoding"]["status"].get("fallback_argmax", 0)
    result["relax"] = {"mode": cfg.relax, "status": tag_counts(all_mols, RELAX_STATUS_TAG)}
    if raw_writer is not None:
        result["raw_out"] = str(raw_writer.out)
    if cfg.xyz_dir:
        from moldiff.chem.io import write_xyz

        d = Path(cfg.xyz_dir)
        d.mkdir(parents=True, exist_ok=True)
        for m in all_mols:
            write_xyz(m, d / f"{m.name}.xyz")
    if cfg.png:
        from moldiff.chem.io import draw_grid

        draw_grid(all_mols[: cfg.max_png], cfg.png)
    if cfg.evaluate and all_mols:
        from moldiff.metrics.evaluate import evaluate_molecules, format_table

        reference = None
        if cfg.reference:
            from moldiff.data.registry import cache_path
            from moldiff.data.cache import MolCache

            p = cache_path(cfg.reference, cfg.data_root)
            if (p / "meta.json").exists():
                reference = MolCache(p)
            else:
                log.warning("reference dataset cache %s not found: novelty/distribution skipped "
                            "(run moldiff-prepare data=%s to enable)", p, cfg.reference)
        metrics = evaluate_molecules(all_mols, reference, steps=cfg.steps)
        metrics["n_requested"] = cfg.n_samples
        print(format_table(metrics))
        result["metrics"] = metrics
    print(f"wrote {len(all_mols)} molecules to {path}")
    print(summary_line("decoding", cfg.decode, result["decoding"]["status"], "fallback_argmax"))
    if cfg.relax != "none":
        print(summary_line("relax", cfg.relax, result["relax"]["status"]))
    if raw_writer is not None:
        print(f"unrelaxed coordinates: {raw_writer.out}")
    return result


def summary_line(what: str, mode: str, counts: dict[str, int], stress: str | None = None) -> str:
    """``decoding: map (12 optimal, 1 disconnected; 0 fallback_argmax)`` style summary of per-molecule statuses."""
    if not counts:
        return f"{what}: {mode}"
    parts = ", ".join(f"{v} {k}" for k, v in counts.items() if k != stress)
    tail = f"; {counts.get(stress, 0)} {stress}" if stress else ""
    return f"{what}: {mode} ({parts}{tail})" if parts else f"{what}: {mode} ({tail[2:]})"


@hydra.main(config_path="pkg://moldiff.conf", config_name="sample", version_base="1.3")
@friendly_errors
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    generate(cfg)


if __name__ == "__main__":
    main()
