"""``moldiff-sample``: generate molecules from a checkpoint (default: the shipped QM9 model)."""

from __future__ import annotations

import csv
import inspect
import logging
import os
import sys
import tempfile
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch_geometric.data import Batch
from tqdm import tqdm

from moldiff.chem.molecule import Molecule
from moldiff.chem.relax import RELAX_METHODS
from moldiff.cli.common import as_number, friendly_errors
from moldiff.data.graph import data_to_molecules
from moldiff.sampling.prior import sample_num_atoms
from moldiff.sampling.sampler import SAMPLERS, Fragment, sample
from moldiff.sampling.writer import ResumableSDFWriter
from moldiff.training.checkpoint import CheckpointError, LoadedModel, load_model
from moldiff.training.checkpoint import sha256 as file_sha256

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


def given_targets(cfg: DictConfig) -> dict[str, object]:
    """The ``conditioning.<prop>=value`` entries that were set."""
    return {k: v for k, v in cfg.conditioning.items() if k != "targets_csv" and v is not None}


def wants_conditioning(cfg: DictConfig) -> bool:
    return bool(given_targets(cfg) or cfg.conditioning.targets_csv)


def default_ckpt(cfg: DictConfig) -> str | None:
    """``ckpt=`` as given; without one, the shipped conditional QM9 model when targets are given (else
    ``None``: the shipped unconditional model)."""
    if cfg.ckpt or not wants_conditioning(cfg):
        return cfg.ckpt
    from moldiff.training.checkpoint import pretrained_path

    try:
        return str(pretrained_path("qm9_conditional"))
    except CheckpointError as exc:
        raise ValueError(f"{exc} (targets need a conditional model)") from None


def read_targets(cfg: DictConfig, model: LoadedModel, n: int) -> torch.Tensor | None:
    """Raw target values ``[n, P]`` (dataset units) from ``conditioning.<prop>=value`` or
    ``conditioning.targets_csv``; NaN where a property is not given (a model trained on property subsets
    takes any subset). ``None``: no targets (unconditional sampling)."""
    given = given_targets(cfg)
    props = model.properties
    if not props:
        if given or cfg.conditioning.targets_csv:
            raise ValueError(f"model {model.path} is unconditional; it cannot take targets {sorted(given) or 'from CSV'}")
        return None
    subsets = bool((model.hparams.get("conditioning") or {}).get("subsets", False))
    if cfg.conditioning.targets_csv:
        if given:
            raise ValueError(f"give targets either as conditioning.targets_csv or as conditioning.<property>=, not both "
                             f"(got {sorted(given)} too)")
        t = read_targets_csv(Path(cfg.conditioning.targets_csv), props)
        t = t[torch.arange(n) % len(t)]
    else:
        extra = [k for k in given if k not in props]
        if extra:
            raise ValueError(f"model does not condition on {extra}; it conditions on {props}")
        if not given:
            log.warning("warning: no target given (conditioning.<property>=VALUE); sampling without conditioning")
            return None
        row = [as_number(given[p], f"conditioning.{p}") if p in given else float("nan") for p in props]
        t = torch.tensor([row] * n, dtype=torch.float32)
    missing = [p for k, p in enumerate(props) if torch.isnan(t[:, k]).any()]
    if missing and not subsets:
        raise ValueError(f"this model conditions on all of {props} together; give conditioning.{missing[0]}=VALUE "
                         f"({unit_text(model, missing[0])}) or a targets_csv column for it")
    warn_out_of_range(model, t)
    return t


def read_targets_csv(path: Path, props: list[str]) -> torch.Tensor:
    """One row per molecule; a column per property (any subset of ``props``); an empty cell = not given."""
    if not path.exists():
        raise FileNotFoundError(f"targets_csv {path} does not exist")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except UnicodeDecodeError as exc:
        raise ValueError(f"targets_csv {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not rows:
        raise ValueError(f"{path}: no rows")
    cols = [c for c in rows[0] if c is not None]
    unknown = [c for c in cols if c not in props]
    if unknown:
        raise ValueError(f"{path}: unknown columns {unknown} (the model conditions on {props})")
    vals = []
    for k, row in enumerate(rows, start=2):
        vals.append([as_number(row[p], f"{path}, line {k}, column {p}") if (row.get(p) or "").strip() else float("nan")
                     for p in props])
    return torch.tensor(vals, dtype=torch.float32)


def unit_text(model: LoadedModel, prop: str) -> str:
    unit = model.property_units.get(prop, "")
    return f"in {unit}" if unit else "in the dataset's units"


def warn_out_of_range(model: LoadedModel, targets: torch.Tensor) -> None:
    """One warning per property whose targets leave the range of the model's training molecules."""
    for k, p in enumerate(model.properties):
        rng = model.property_ranges.get(p)
        col = targets[:, k]
        col = col[~torch.isnan(col)]
        if rng is None or not len(col):
            continue
        lo, hi = rng
        if col.min() < lo or col.max() > hi:
            unit = model.property_units.get(p, "")
            log.warning("warning: target %s=%s %s is outside the training range %.4g to %.4g %s; expect targets to "
                        "be missed", p, f"{col.min().item():.4g}" if col.min() < lo else f"{col.max().item():.4g}",
                        unit, lo, hi, unit)


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
        if cfg.get("decode_widen_bond_length") is not None:
            as_number(cfg.decode_widen_bond_length, "decode_widen_bond_length (Angstrom, or null)", positive=True)
        if not _sampler_gives_probabilities():
            raise ValueError("decode=map needs the last step's probabilities, which this sampler does not return")


def decode_settings(cfg: DictConfig) -> dict:
    """The decoding and relaxation settings that change the output (part of the resume fingerprint)."""
    out: dict = {"decode": cfg.decode}
    if cfg.decode == "map":
        out["decode_options"] = {"time_limit": float(cfg.decode_time_limit), "connected": bool(cfg.decode_connected),
                                 "min_bond_prob": float(cfg.decode_min_bond_prob),
                                 "max_bond_length": None if cfg.decode_max_bond_length is None
                                 else float(cfg.decode_max_bond_length),
                                 "widen_bond_length": None if cfg.get("decode_widen_bond_length") is None
                                 else float(cfg.decode_widen_bond_length)}
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
        max_bond_length=None if cfg.decode_max_bond_length is None else float(cfg.decode_max_bond_length),
        widen_bond_length=None if cfg.get("decode_widen_bond_length") is None else float(cfg.decode_widen_bond_length))
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


# ---------------------------------------------------------------- checking the command before any work


#: Options that must be ``true`` or ``false``.
SWITCHES = ("resume", "progress", "evaluate", "relax_keep_raw", "decode_connected")

#: Seeds are mixed with the batch index into a 64-bit generator seed; this keeps them in range.
MAX_SEED = 2**32 - 1


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def whole_number(cfg: DictConfig, key: str, lo: int = 1, hi: int | None = None) -> int:
    """``cfg[key]`` as an int in ``[lo, hi]``; a ``ValueError`` naming the option otherwise."""
    value = cfg[key]
    if not _is_whole(value) or value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"from {lo} to {hi}"
        raise ValueError(f"{key} must be a whole number {bound}, got {value!r}")
    return value


def parse_num_atoms(value: object) -> int | list[int] | None:
    """Check ``num_atoms``: ``null`` (training histogram), a count ``>= 1``, or a range ``[lo, hi]``."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if value is None:
        return None
    if _is_whole(value) and value >= 1:
        return value
    if isinstance(value, list) and len(value) == 2 and all(_is_whole(v) for v in value) and 1 <= value[0] <= value[1]:
        return list(value)
    raise ValueError(f"num_atoms must be null (the training histogram), a whole number >= 1 or a range [lo, hi] "
                     f"with 1 <= lo <= hi, got {value!r}")


def check_numbers(cfg: DictConfig) -> None:
    """Counts, seed, sampler, switches and guidance scale (one-line ``ValueError`` naming the option)."""
    for key in ("n_samples", "batch_size", "steps", "max_png"):
        whole_number(cfg, key)
    whole_number(cfg, "seed", 0, MAX_SEED)
    if cfg.sampler not in SAMPLERS:
        raise ValueError(f"sampler={cfg.sampler!r}; choose one of {list(SAMPLERS)}")
    for key in SWITCHES:
        if not isinstance(cfg[key], bool):
            raise ValueError(f"{key} must be true or false, got {cfg[key]!r}")
    if cfg.guidance_scale is not None:
        as_number(cfg.guidance_scale, "guidance_scale (or null: the model's own)")
    for key, value in given_targets(cfg).items():
        as_number(value, f"conditioning.{key}")
    as_number(cfg.time_power, "time_power", positive=True)
    as_number(cfg.temperature, "temperature", positive=True)
    parse_num_atoms(cfg.num_atoms)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_folder(path: Path, what: str) -> None:
    """``path`` is, or can be created as, a folder we can write in (tried with a throwaway file)."""
    base = _nearest_existing(path)
    if not base.is_dir():
        raise ValueError(f"{what}: {base} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".moldiff-write-test-")
    except OSError as exc:
        raise ValueError(f"{what}: cannot write in folder {base} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def check_file_target(value: object, what: str) -> Path:
    """An output file path that is not a folder and whose folder is writable."""
    if not isinstance(value, str) or not value.strip() or value.endswith(("/", os.sep)):
        raise ValueError(f"{what} must be a file path, got {value!r}")
    path = Path(value)
    if path.is_dir():
        raise ValueError(f"{what}={value} is an existing folder; give a file path such as {path / 'mols.sdf'}")
    check_writable_folder(path.parent, f"{what}={value}")
    return path


def check_outputs(cfg: DictConfig) -> None:
    """Every output path can be written, and none overwrites an input (before any sampling work)."""
    out = check_file_target(cfg.out, "out")
    for side in (Path(f"{out}.partial"), Path(f"{out}.partial.json"), Path(f"{out}.run.json")):
        if side.is_dir():
            raise ValueError(f"out={cfg.out}: {side} is a folder; choose another out=")
    if cfg.relax_keep_raw and raw_path(out).is_dir():
        raise ValueError(f"out={cfg.out}: the unrelaxed copy {raw_path(out)} would be a folder; choose another out=")
    inputs = {"ckpt": cfg.ckpt, "inpaint.sdf": cfg.inpaint.sdf,
              "conditioning.targets_csv": cfg.conditioning.targets_csv}
    for key, value in inputs.items():
        if value and Path(value).resolve() == out.resolve():
            raise ValueError(f"out={cfg.out} is also {key}; choose another out=")
    if cfg.png:
        check_file_target(cfg.png, "png")
    if cfg.xyz_dir:
        if not isinstance(cfg.xyz_dir, str) or Path(cfg.xyz_dir).is_file():
            raise ValueError(f"xyz_dir={cfg.xyz_dir} is not a folder")
        check_writable_folder(Path(cfg.xyz_dir), f"xyz_dir={cfg.xyz_dir}")


def check_options(cfg: DictConfig) -> None:
    """All checks that need no model: output paths first, then every option."""
    check_outputs(cfg)
    check_numbers(cfg)
    check_decode_relax(cfg)


def load_checkpoint(ckpt: str | None, device: torch.device) -> LoadedModel:
    """:func:`load_model` with every unusable file reported as a one-line ``ValueError``."""
    try:
        return load_model(ckpt, device=device)
    except CheckpointError as exc:
        msg = str(exc)
        unreadable = f"cannot read checkpoint {ckpt}: "
        if ckpt and msg.startswith(unreadable):
            reason = msg[len(unreadable):].split(". ")[0]
            msg = (f"ckpt={ckpt} cannot be read: the file is truncated, corrupted or not a PyTorch checkpoint "
                   f"(torch.load: {reason})")
        raise ValueError(msg) from None
    except (AttributeError, TypeError, KeyError, IndexError, RuntimeError) as exc:
        raise ValueError(f"ckpt={ckpt} is not a moldiff checkpoint ({type(exc).__name__}: {exc})") from None


def histogram_support(model: LoadedModel) -> tuple[int, int]:
    """Smallest and largest atom count of the model's training molecules."""
    hist = model.statistics["num_atoms_hist"]
    sizes = [k for k, c in enumerate(hist) if c > 0]
    return (sizes[0], sizes[-1]) if sizes else (0, 0)


def check_fragment_fits(cfg: DictConfig, model: LoadedModel, num_atoms: int | list[int] | None,
                        fragment: Fragment) -> None:
    """Every molecule must have more atoms than the inpainted fragment (``ValueError`` otherwise)."""
    min_atoms = fragment.num_atoms + 1
    smallest = num_atoms if _is_whole(num_atoms) else num_atoms[0] if num_atoms else None
    if smallest is not None and smallest < min_atoms:
        raise ValueError(f"num_atoms={num_atoms} leaves no atom to grow: the fragment {cfg.inpaint.sdf} has "
                         f"{fragment.num_atoms} atoms, so num_atoms must be >= {min_atoms}")
    largest = histogram_support(model)[1]
    if num_atoms is None and largest < min_atoms:
        raise ValueError(f"the fragment {cfg.inpaint.sdf} has {fragment.num_atoms} atoms, but the model's "
                         f"training molecules have at most {largest}; give num_atoms= (>= {min_atoms})")


def resolve_guidance(cfg: DictConfig, model: LoadedModel) -> None:
    """``guidance_scale=null`` -> the scale the model records as its default (1 when it records none)."""
    if cfg.guidance_scale is None:
        with open_dict(cfg):
            cfg.guidance_scale = model.default_guidance_scale


def warn_untrained_settings(cfg: DictConfig, model: LoadedModel, num_atoms: int | list[int] | None) -> None:
    """One warning line for each setting the model was not trained for (the run goes on)."""
    lo, hi = histogram_support(model)
    if num_atoms is not None:
        want = (num_atoms, num_atoms) if _is_whole(num_atoms) else tuple(num_atoms)
        if want[0] < lo or want[1] > hi:
            log.warning("warning: num_atoms=%s is outside the training histogram of this model (%d to %d atoms); "
                        "expect poor molecules", num_atoms, lo, hi)
    if not model.properties and cfg.guidance_scale != 1:
        log.warning("warning: guidance_scale=%s has no effect: this model is unconditional", cfg.guidance_scale)


def run_settings(cfg: DictConfig, model: LoadedModel, targets: torch.Tensor | None, num_atoms: object,
                 device: torch.device) -> dict:
    """Everything that changes the molecules written: a rerun resumes only with identical settings."""
    return {
        "ckpt": model.path, "ckpt_sha256": file_sha256(model.path), "n_samples": cfg.n_samples, "steps": cfg.steps,
        "sampler": cfg.sampler, "time_power": float(cfg.time_power),
        "temperature": float(cfg.temperature), "seed": cfg.seed, "batch_size": cfg.batch_size,
        "num_atoms": num_atoms,
        "guidance_scale": cfg.guidance_scale, "inpaint": cfg.inpaint.sdf,
        "targets": None if targets is None else [[None if np.isnan(v) else v for v in targets[0].tolist()]]
        if not cfg.conditioning.targets_csv
        else cfg.conditioning.targets_csv,
        "device": device.type, **decode_settings(cfg),
    }


# ---------------------------------------------------------------- sampling


def tag_molecules(mols: list[Molecule], lo: int, cfg: DictConfig, model: LoadedModel, statuses: list[str] | None,
                  cond: torch.Tensor | None, fragment: Fragment | None) -> None:
    """Name the molecules of a batch starting at index ``lo`` and record the sampling settings as SD tags."""
    for k, m in enumerate(mols):
        idx = lo + k
        m.name = f"moldiff_{idx:06d}"
        m.props = {"moldiff_index": idx, "moldiff_steps": cfg.steps, "moldiff_sampler": cfg.sampler,
                   "moldiff_time_power": float(cfg.time_power), "moldiff_temperature": float(cfg.temperature),
                   "moldiff_seed": cfg.seed, "moldiff_checkpoint": Path(model.path).name,
                   "moldiff_decoding": cfg.decode}
        if statuses is not None:
            m.props["moldiff_decode_status"] = statuses[k]
        m.props["moldiff_relax"] = cfg.relax
        if cond is not None:
            for p, val in zip(model.properties, cond[k].tolist()):
                if not np.isnan(val):
                    m.props[f"target_{p}"] = float(val)
            m.props["guidance_scale"] = float(cfg.guidance_scale)
        if fragment is not None:
            m.props["inpaint_fixed_atoms"] = fragment.num_atoms


def sample_batch(b: int, cfg: DictConfig, model: LoadedModel, targets: torch.Tensor | None,
                 fragment: Fragment | None, num_atoms: object,
                 device: torch.device) -> tuple[list[Molecule], list[Molecule], int]:
    """Sample batch ``b``; returns ``(molecules to write, unrelaxed molecules, molecules sampled)``."""
    n, bs = cfg.n_samples, cfg.batch_size
    lo, hi = b * bs, min(n, (b + 1) * bs)
    min_atoms = fragment.num_atoms + 1 if fragment else 1
    gen = torch.Generator(device="cpu").manual_seed(int(cfg.seed) * 1_000_003 + b)
    counts = sample_num_atoms(hi - lo, model.statistics["num_atoms_hist"], num_atoms, gen, min_atoms=min_atoms)
    dev_gen = gen if device.type == "cpu" else torch.Generator(device=device).manual_seed(int(cfg.seed) * 1_000_003 + b)
    cond = guided = None
    if targets is not None:
        props = model.normalize(targets[lo:hi]).to(device)
        guided = model.denoiser_fn(props)
        cond = targets[lo:hi]
    extra = {"return_probs": True} if cfg.decode == "map" else {}
    out = sample(
        model.diffusion, model.denoiser_fn(None), counts, steps=cfg.steps, sampler=cfg.sampler,
        time_power=float(cfg.time_power), temperature=float(cfg.temperature),
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
    tag_molecules(mols, lo, cfg, model, statuses, cond, fragment)
    kept = [m for m, ok in zip(mols, finite) if ok]
    raw = kept
    if cfg.relax != "none":
        kept, raw = relax_batch(kept, cfg, fragment.num_atoms if fragment is not None else 0)
    return kept, raw, len(mols)


def sample_into(writer: ResumableSDFWriter, raw_writer: ResumableSDFWriter | None, cfg: DictConfig,
                model: LoadedModel, targets: torch.Tensor | None, fragment: Fragment | None, num_atoms: object,
                device: torch.device) -> bool:
    """Sample the batches the writers still lack; ``False`` when Ctrl-C stopped it (finished batches are kept)."""
    writers = [w for w in (writer, raw_writer) if w is not None]
    n, bs = cfg.n_samples, cfg.batch_size
    bar = tqdm(total=n, initial=min(writer.batches_done * bs, n), desc="sampling", unit="mol",
               disable=not cfg.progress, file=sys.stderr)
    try:
        for b in range((n + bs - 1) // bs):
            if all(b < w.batches_done for w in writers):
                continue
            kept, raw, sampled = sample_batch(b, cfg, model, targets, fragment, num_atoms, device)
            if b >= writer.batches_done:
                writer.append(kept)
            if raw_writer is not None and b >= raw_writer.batches_done:
                raw_writer.append(raw)
            bar.update(sampled)
    except KeyboardInterrupt:
        return False
    finally:
        bar.close()
    return True


def report_interruption(writer: ResumableSDFWriter, path: Path | None) -> None:
    """Say on stderr how many molecules an interrupted run kept, and where."""
    if path is None:
        left = f"; {writer.out} is left as it was" if writer.out.exists() else ""
        print(f"\ninterrupted: no molecule was finished, nothing was written{left}", file=sys.stderr)
        return
    kept = f"{writer.count} finished molecules kept in {path}"
    if path == writer.partial:
        kept += f" ({writer.out} is left as it was)"
    print(f"\ninterrupted: {kept}; rerun the same command to resume", file=sys.stderr)


def generate(cfg: DictConfig) -> dict:
    """Run ``moldiff-sample``: check the command, sample (resuming), write and post-process.

    Returns:
        A summary: ``out``, ``n_molecules``, ``complete`` (``False`` after Ctrl-C), decoding and relax
        status counts, and ``metrics`` when ``evaluate=true``.
    """
    check_options(cfg)
    num_atoms = parse_num_atoms(cfg.num_atoms)
    device = pick_device(cfg.device)
    model = load_checkpoint(default_ckpt(cfg), device)
    resolve_guidance(cfg, model)
    targets = read_targets(cfg, model, cfg.n_samples)
    fragment = read_fragment(cfg.inpaint.sdf, model) if cfg.inpaint.sdf else None
    if fragment is not None:
        check_fragment_fits(cfg, model, num_atoms, fragment)
    warn_untrained_settings(cfg, model, num_atoms)
    settings = run_settings(cfg, model, targets, num_atoms, device)
    writer = ResumableSDFWriter(cfg.out, settings, resume=cfg.resume)
    raw_writer = ResumableSDFWriter(raw_path(cfg.out), settings, resume=cfg.resume) if cfg.relax_keep_raw else None
    writers = [w for w in (writer, raw_writer) if w is not None]
    if all(w.already_complete for w in writers):
        for w in writers:
            w.discard_partial()
        print(f"{writer.out} is already complete ({writer.published_count} molecules with these settings); "
              f"nothing to sample (resume=false samples it again)")
        return finish(cfg, writer.out, raw_writer, sampled=False)
    for w in writers:
        w.check()
    for w in writers:
        w.open()
    if writer.resumed and writer.count:
        log.info("resuming: %d molecules already in %s", writer.count, writer.partial)
    complete = False
    try:
        complete = sample_into(writer, raw_writer, cfg, model, targets, fragment, num_atoms, device)
    finally:
        path = writer.finalize(complete)
        if raw_writer is not None:
            raw_writer.finalize(complete)
    if not complete:
        report_interruption(writer, path)
        return {"out": None if path is None else str(path), "n_molecules": writer.count, "complete": False}
    return finish(cfg, path, raw_writer, sampled=True)


def finish(cfg: DictConfig, path: Path, raw_writer: ResumableSDFWriter | None, sampled: bool) -> dict:
    """Summarise a finished ``out`` (status counts), write the extras (xyz, png, metrics) and print the summary.

    Args:
        sampled: this run wrote ``path`` (``False``: it was already complete).
    """
    from moldiff.chem.io import read_sdf
    from moldiff.metrics.evaluate import DECODE_STATUS_TAG, RELAX_STATUS_TAG, tag_counts

    all_mols = read_sdf(path)
    result = {"out": str(path), "n_molecules": len(all_mols), "complete": True}
    result["decoding"] = {"mode": cfg.decode, "status": tag_counts(all_mols, DECODE_STATUS_TAG)}
    if cfg.decode == "map":
        result["decoding"]["fallbacks"] = result["decoding"]["status"].get("fallback_argmax", 0)
    result["relax"] = {"mode": cfg.relax, "status": tag_counts(all_mols, RELAX_STATUS_TAG)}
    if raw_writer is not None:
        result["raw_out"] = str(raw_writer.out)
    write_extras(cfg, all_mols)
    if cfg.evaluate and all_mols:
        result["metrics"] = evaluate_samples(cfg, all_mols)
    if sampled:
        print(f"wrote {len(all_mols)} molecules to {path}")
    print(summary_line("decoding", cfg.decode, result["decoding"]["status"], "fallback_argmax"))
    if cfg.relax != "none":
        print(summary_line("relax", cfg.relax, result["relax"]["status"]))
    if raw_writer is not None:
        print(f"unrelaxed coordinates: {raw_writer.out}")
    return result


def write_extras(cfg: DictConfig, mols: list[Molecule]) -> None:
    """One ``.xyz`` per molecule in ``xyz_dir`` and a picture grid in ``png``, when asked for."""
    if cfg.xyz_dir:
        from moldiff.chem.io import write_xyz

        d = Path(cfg.xyz_dir)
        d.mkdir(parents=True, exist_ok=True)
        for m in mols:
            write_xyz(m, d / f"{m.name}.xyz")
    if cfg.png:
        from moldiff.chem.io import draw_grid

        draw_grid(mols[: cfg.max_png], cfg.png)


def evaluate_samples(cfg: DictConfig, mols: list[Molecule]) -> dict:
    """Metrics of the samples (novelty and distributions against ``reference`` when its cache exists); printed."""
    from moldiff.metrics.evaluate import evaluate_molecules, format_table

    reference = None
    if cfg.reference:
        from moldiff.data.cache import MolCache
        from moldiff.data.registry import cache_path

        p = cache_path(cfg.reference, cfg.data_root)
        if (p / "meta.json").exists():
            reference = MolCache(p)
        else:
            log.warning("reference dataset cache %s not found: novelty/distribution skipped "
                        "(run moldiff-prepare data=%s to enable)", p, cfg.reference)
    metrics = evaluate_molecules(mols, reference, steps=cfg.steps)
    metrics["n_requested"] = cfg.n_samples
    print(format_table(metrics))
    return metrics


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
    """Entry point; exit code 2 for a bad command, 130 when interrupted (finished molecules are kept)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = generate(cfg)
    except KeyboardInterrupt:
        print("\ninterrupted: no finished molecule was lost; rerun the same command to continue", file=sys.stderr)
        sys.exit(130)
    if not result["complete"]:
        sys.exit(130)


if __name__ == "__main__":
    main()
